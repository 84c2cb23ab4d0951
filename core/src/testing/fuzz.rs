//! Fuzz target bodies (feature `testing`).
//!
//! Every libFuzzer target in `fuzz/fuzz_targets/` is a one-line call to a
//! function here, and `core/tests/fuzz_corpus.rs` runs the same functions
//! over the committed corpus on the stable toolchain, so CI replays every
//! input the fuzzers found interesting without nightly features.
//!
//! Each function takes raw bytes and decodes its structured input by hand
//! (a [`Bytes`] cursor: chunks, timer ticks, commands), so no input is ever
//! rejected and the encoding stays stable for the corpus. Every function
//! panics on a violated invariant; none panics on any input otherwise.
//!
//! The sans-IO invariants checked after every step of the stateful targets
//! (see [`Watch`]):
//! - at most one `Event::Closed`, and after it only `StateChanged { Closed }`;
//! - `is_closed()` agrees with the `Closed` event; an error returned by an
//!   input closes the connection with that error as the reason;
//! - after closing, `pending_transmit()` never grows (only the already
//!   queued DISCONNECT drains), the state is `Closing` while it is pending
//!   and `Closed` after, and `poll_timeout()` is `None`;
//! - every command on a closed connection returns `Error::Closed`;
//! - no `Error::Internal` ever;
//! - memory stays bounded (`Connection::buffered`): queued output
//!   (`pending_transmit()` plus messages held for a key exchange) stays
//!   under the smaller of a fixed base plus a small multiple of the input
//!   and the documented absolute bound (`max_queued_output` +
//!   `max_packet_len` + 1 KiB), plus a multiple of what the application
//!   sent; unprocessed input under 512 KiB; the peer's requests awaiting
//!   replies under 64 per connection and per channel; the channel table
//!   under `max_channels`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::auth::{AuthMethod, Credential, Prompt, Secret};
use crate::channel::{
    ChannelId, ChannelKind, ChannelOptions, ChannelRequest, GlobalRequest, OpenFailure, Pty,
};
use crate::config::{ClientConfig, ServerConfig};
use crate::connection::Connection;
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::{Event, State};
use crate::keepalive::KeepaliveConfig;
use crate::keys::SignatureAlgorithm;
use crate::known_hosts::{HostPatterns, KnownHosts, Lookup};
use crate::pool::{Acquire, ConnectionId, Lease, LeaseId, Pool, PoolConfig, PoolEvent, PoolKey, WaiterId};
use crate::reconnect::{GiveUpReason, Jitter, Reconnect, ReconnectAction, ReconnectConfig};
use crate::time::{Duration, Timestamp};
use crate::transport::kex::{self, KexAlgorithm, KexInit};
use crate::transport::packet::Opener;
use crate::transport::version::VersionReader;
use crate::transport::{CipherAlgorithm, HostKeyAlgorithm, MacAlgorithm, Role};
use crate::wire::msg::{self, Message};
use crate::wire::{Reader, Writer};

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the README lists them.
pub const TARGETS: &[Target] = &[
    ("wire_decode", wire_decode),
    ("client_input", client_input),
    ("server_input", server_input),
    ("post_auth_client", post_auth_client),
    ("post_auth_server", post_auth_server),
    ("known_hosts_parse", known_hosts_parse),
    ("private_key_parse", private_key_parse),
    ("pool_ops", pool_ops),
    ("reconnect_ops", reconnect_ops),
];

// ------------------------------------------------------------------ input

/// A cursor over fuzz input that never fails: past the end every read
/// gives zeros (and `take` an empty slice), so any byte string is a valid
/// input and the loops stop on [`Bytes::is_empty`].
#[derive(Clone, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    /// A bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }
}

/// Op codes of the stateful targets' scripts (the low three bits of the op
/// byte; the high bits pick variants).
pub mod op {
    /// Single connection: bytes from the socket (`handle_input`).
    pub const DATA: u8 = 0;
    /// Single connection: bytes through `receive_buffer`/`commit_received`.
    pub const DATA_ZERO_COPY: u8 = 2;
    /// Post-auth: the peer sends this payload (`inject_payload`), delivered at once.
    pub const INJECT: u8 = 0;
    /// Post-auth: the same, delivered in two pieces.
    pub const INJECT_SPLIT: u8 = 1;
    /// Time passes (u16 × 16 ms; 0: jump to the next deadline).
    pub const TICK: u8 = 3;
    /// Single connection: the adapter writes (u16: bytes, 0: everything).
    /// Post-auth: both sides exchange everything buffered (u8 rounds).
    pub const DRAIN: u8 = 4;
    /// The adapter stops (or resumes) writing our output: a peer that never reads.
    pub const HOLD: u8 = 5;
    /// A command on the connection under test.
    pub const COMMAND: u8 = 6;
    /// Single connection: EOF. Post-auth: a command on the peer.
    pub const EOF_OR_PEER_COMMAND: u8 = 7;
}

/// Second byte of a script that announces a second config byte
/// ([`Flags::ext`]) right after it. No committed input had it there when
/// it was introduced, so every older input keeps its meaning (and as an
/// op it would only toggle HOLD).
pub const EXTENDED_CONFIG: u8 = 0xcd;

/// The config of a stateful target: the script's first byte and, after
/// [`EXTENDED_CONFIG`], an extension byte that is 0 when absent (0 is the
/// behaviour from before it existed). See fuzz/README.md for the bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// Ciphers, strict kex, keepalive, host keys or post-auth modes, the
    /// application's behaviour (bits described in fuzz/README.md).
    pub base: u8,
    /// Extension: bit 0 `pass_unknown_requests`, bits 1–2 an aes*-ctr
    /// cipher instead of the base byte's, bits 3–5 the MACs, bit 6 the
    /// ecdsa-sha2-nistp521 host key.
    pub ext: u8,
}

impl From<u8> for Flags {
    fn from(base: u8) -> Self {
        Flags { base, ext: 0 }
    }
}

impl Flags {
    /// `pass_unknown_requests` on both sides.
    pub const PASS_UNKNOWN: u8 = 0x01;
    /// aes128-ctr (`ext` bits 1–2 = 1; 2: aes192-ctr, 3: aes256-ctr).
    pub const AES128_CTR: u8 = 0x02;
    /// aes192-ctr.
    pub const AES192_CTR: u8 = 0x04;
    /// aes256-ctr.
    pub const AES256_CTR: u8 = 0x06;
    /// Shift of the MAC choice (`ext` bits 3–5): 0 and 7 every MAC in our
    /// order, 1–5 the one MAC `MacAlgorithm::ALL[n - 1]`, 6 every MAC in
    /// reverse order.
    pub const MAC_SHIFT: u8 = 3;
    /// ecdsa-sha2-nistp521: the only host key algorithm of both sides (the
    /// server gets a P-521 key).
    pub const P521: u8 = 0x40;

    /// Both bytes.
    pub fn new(base: u8, ext: u8) -> Self {
        Flags { base, ext }
    }

    /// Reads the config at the start of a script.
    fn read(b: &mut Bytes<'_>) -> Self {
        let base = b.u8();
        let ext = if b.rest().first() == Some(&EXTENDED_CONFIG) {
            b.u8();
            b.u8()
        } else {
            0
        };
        Flags { base, ext }
    }

    fn cipher_override(self) -> Option<CipherAlgorithm> {
        match (self.ext >> 1) & 3 {
            0 => None,
            1 => Some(CipherAlgorithm::Aes128Ctr),
            2 => Some(CipherAlgorithm::Aes192Ctr),
            _ => Some(CipherAlgorithm::Aes256Ctr),
        }
    }

    fn macs(self) -> Vec<MacAlgorithm> {
        match usize::from((self.ext >> Self::MAC_SHIFT) & 7) {
            0 | 7 => MacAlgorithm::ALL.to_vec(),
            6 => MacAlgorithm::ALL.iter().rev().copied().collect(),
            n => vec![MacAlgorithm::ALL[n - 1]],
        }
    }

    fn pass_unknown(self) -> bool {
        self.ext & Self::PASS_UNKNOWN != 0
    }

    fn p521(self) -> bool {
        self.ext & Self::P521 != 0
    }
}

/// Builds inputs for the stateful targets (seed corpora and tests).
#[derive(Clone, Debug, Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// A script starting with the config (`flags`: the base byte, or
    /// [`Flags`] with an extension, written after [`EXTENDED_CONFIG`]).
    pub fn new(flags: impl Into<Flags>) -> Self {
        let flags = flags.into();
        let mut s = vec![flags.base];
        if flags.ext != 0 {
            s.extend_from_slice(&[EXTENDED_CONFIG, flags.ext]);
        }
        Script(s)
    }

    fn chunked(&mut self, code: u8, bytes: &[u8]) -> &mut Self {
        for chunk in bytes.chunks(u16::MAX as usize) {
            self.0.push(code);
            self.0.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            self.0.extend_from_slice(chunk);
        }
        self
    }

    /// Single connection: `bytes` arrive from the socket.
    pub fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.chunked(op::DATA, bytes)
    }

    /// Post-auth: the peer sends `payload` (must not be empty).
    pub fn inject(&mut self, payload: &[u8]) -> &mut Self {
        assert!(!payload.is_empty() && payload.len() <= u16::MAX as usize);
        self.chunked(op::INJECT, payload)
    }

    /// Time passes: `units` × 16 ms (0: to the next deadline).
    pub fn tick(&mut self, units: u16) -> &mut Self {
        self.0.push(op::TICK);
        self.0.extend_from_slice(&units.to_le_bytes());
        self
    }

    /// Single connection: write everything. Post-auth: exchange `rounds`.
    pub fn drain(&mut self, arg: u16) -> &mut Self {
        self.0.push(op::DRAIN);
        self.0.extend_from_slice(&arg.to_le_bytes());
        self
    }

    /// Toggle holding our output.
    pub fn hold(&mut self) -> &mut Self {
        self.0.push(op::HOLD);
        self
    }

    /// A command on the connection under test (`code` and its argument bytes).
    pub fn command(&mut self, code: u8, args: &[u8]) -> &mut Self {
        self.0.push(op::COMMAND);
        self.0.push(code);
        self.0.extend_from_slice(args);
        self
    }

    /// Single connection: EOF.
    pub fn eof(&mut self) -> &mut Self {
        self.0.push(op::EOF_OR_PEER_COMMAND);
        self
    }

    /// Post-auth: a command on the peer.
    pub fn peer_command(&mut self, code: u8, args: &[u8]) -> &mut Self {
        self.0.push(op::EOF_OR_PEER_COMMAND);
        self.0.push(code);
        self.0.extend_from_slice(args);
        self
    }

    /// The bytes.
    pub fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}

// ------------------------------------------------------------ wire_decode

/// Our own KEXINIT as a client or server would send it (first exchange).
fn our_kexinit(role: Role) -> KexInit {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut kex: Vec<String> = KexAlgorithm::ALL.iter().map(|k| k.name().to_owned()).collect();
    match role {
        Role::Client => kex.extend(names(&["ext-info-c", "kex-strict-c-v00@openssh.com"])),
        Role::Server => kex.extend(names(&["kex-strict-s-v00@openssh.com"])),
    }
    let ciphers: Vec<String> = CipherAlgorithm::ALL.iter().map(|c| c.name().to_owned()).collect();
    KexInit {
        cookie: [7; 16],
        kex,
        host_key: HostKeyAlgorithm::ALL.iter().map(|a| a.name().to_owned()).collect(),
        cipher_c2s: ciphers.clone(),
        cipher_s2c: ciphers,
        mac_c2s: names(&["hmac-sha2-256"]),
        mac_s2c: names(&["hmac-sha2-256"]),
        comp_c2s: names(&["none"]),
        comp_s2c: names(&["none"]),
        first_kex_follows: false,
    }
}

const CHANNEL_REQUEST_NAMES: [&str; 11] = [
    "pty-req",
    "shell",
    "exec",
    "subsystem",
    "env",
    "window-change",
    "signal",
    "exit-status",
    "exit-signal",
    "xon-xoff",
    "keepalive@openssh.com",
];

const CHANNEL_KIND_NAMES: [&str; 4] = ["session", "direct-tcpip", "forwarded-tcpip", "x11"];

/// Every message decoder on arbitrary bytes, with decode→encode→decode
/// equality wherever decoding succeeds. The first byte picks the decoder
/// (modulo 8); 7 runs all of them on the same bytes, every message type
/// included.
pub fn wire_decode(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    match selector % 8 {
        0 => kexinit_round_trip(payload),
        1 => channel_request_round_trip(payload),
        2 => channel_kind_round_trip(payload),
        3 => reader_writer_round_trip(payload),
        4 => version_lines(payload),
        5 => packet_framing(payload),
        6 => public_key_and_signature(payload),
        _ => {
            // Everything at once on the same bytes.
            kexinit_round_trip(payload);
            channel_request_round_trip(payload);
            channel_kind_round_trip(payload);
            reader_writer_round_trip(payload);
            let _ = crate::channel::bound_port(payload);
            messages_round_trip(payload);
        }
    }
}

/// `payload` with its first byte (the message number) set to `number`,
/// or None when empty: the fuzzer's first byte does not have to guess it.
fn numbered(payload: &[u8], number: u8) -> Option<Vec<u8>> {
    let mut p = payload.to_vec();
    *p.first_mut()? = number;
    Some(p)
}

fn kexinit_round_trip(payload: &[u8]) {
    // The decoder used to skip the number unchecked; it checks it now, so
    // the corpus keeps its meaning with the number set here.
    let Some(payload) = numbered(payload, msg::KEXINIT) else { return };
    let Ok(k) = KexInit::decode(&payload) else { return };
    let encoded = k.to_payload();
    let again = KexInit::decode(&encoded).expect("an encoded KEXINIT decodes");
    assert_eq!(again, k, "KEXINIT round trip");
    assert_eq!(again.to_payload(), encoded, "KEXINIT encoding is stable");
    // Negotiation against our own KEXINIT, as either side: errors are fine
    // (no common algorithm), an internal error or a panic is not.
    for (client, server) in [(&our_kexinit(Role::Client), &k), (&k, &our_kexinit(Role::Server))] {
        for first in [true, false] {
            if let Err(e) = kex::negotiate(client, server, first) {
                assert!(matches!(e, Error::NoCommonAlgorithm { .. }), "negotiation failed with {e:?}");
            }
        }
        let _ = kex::guess_was_wrong(client, server);
    }
}

fn channel_request_round_trip(payload: &[u8]) {
    let check = |name: &str, rest: &[u8]| {
        let Ok(req) = ChannelRequest::decode(name, &mut Reader::new(rest)) else { return };
        assert_eq!(req.name(), name, "request name");
        let mut out = Vec::new();
        req.encode_data(&mut out);
        let again =
            ChannelRequest::decode(req.name(), &mut Reader::new(&out)).expect("encoded request decodes");
        assert_eq!(again, req, "channel request round trip");
    };
    let mut r = Reader::new(payload);
    if let Ok(name) = r.utf8("name") {
        check(name, r.remaining());
    }
    for name in CHANNEL_REQUEST_NAMES {
        check(name, payload);
    }
}

fn channel_kind_round_trip(payload: &[u8]) {
    let check = |name: &str, rest: &[u8]| {
        let Ok(kind) = ChannelKind::decode(name, &mut Reader::new(rest)) else { return };
        assert_eq!(kind.name(), name, "channel type name");
        let mut out = Vec::new();
        kind.encode_data(&mut out);
        let again = ChannelKind::decode(kind.name(), &mut Reader::new(&out)).expect("encoded kind decodes");
        assert_eq!(again, kind, "channel kind round trip");
    };
    let mut r = Reader::new(payload);
    if let Ok(name) = r.utf8("name") {
        check(name, r.remaining());
    }
    for name in CHANNEL_KIND_NAMES {
        check(name, payload);
    }
}

/// Decodes `$payload` as message `msg::$ty`; when that succeeds, encoding
/// and decoding again gives the same value, and encoding that gives the
/// same bytes. Evaluates to the decoded value, if any.
macro_rules! round_trip {
    ($ty:ident, $payload:expr) => {{
        let decoded = msg::$ty::decode($payload).ok();
        if let Some(v) = &decoded {
            let encoded = v.to_payload();
            let again = msg::$ty::decode(&encoded)
                .unwrap_or_else(|e| panic!("{}: its own encoding does not decode: {e}", stringify!($ty)));
            assert_eq!(&again, v, "{} round trip", stringify!($ty));
            assert_eq!(again.to_payload(), encoded, "{} encoding is stable", stringify!($ty));
        }
        decoded
    }};
}

/// Method names whose USERAUTH_REQUEST fields have a decoder (and one without).
const AUTH_METHOD_NAMES: [&str; 5] = ["none", "password", "publickey", "keyboard-interactive", "hostbased"];

/// Every message type of `wire::msg` on the same bytes: `payload` taken as
/// a whole payload, its first byte replaced by each type's number.
fn messages_round_trip(payload: &[u8]) {
    let Some(mut p) = numbered(payload, 0) else { return };
    let body = &payload[1..];
    macro_rules! each {
        ($($ty:ident),* $(,)?) => {$({
            p[0] = <msg::$ty<'_> as Message<'_>>::NUMBER;
            round_trip!($ty, &p);
        })*};
    }
    // Those with a lifetime...
    each!(
        Disconnect,
        DebugMessage,
        ServiceRequest,
        ServiceAccept,
        ExtInfo,
        KexEcdhInit,
        KexEcdhReply,
        Pong,
        UserauthBanner,
        UserauthPkOk,
        UserauthPasswdChangereq,
        RequestSuccess,
        RequestFailure,
        ChannelOpen,
        ChannelOpenFailure,
        ChannelData,
        ChannelExtendedData,
        ChannelRequest,
    );
    // ... and those without.
    macro_rules! each_static {
        ($($ty:ident),* $(,)?) => {$({
            p[0] = <msg::$ty as Message<'_>>::NUMBER;
            round_trip!($ty, &p);
        })*};
    }
    each_static!(
        Unimplemented,
        NewKeys,
        UserauthSuccess,
        ChannelOpenConfirmation,
        ChannelWindowAdjust,
        ChannelEof,
        ChannelClose,
        ChannelSuccess,
        ChannelFailure,
    );

    // IGNORE: the in-place encoder (keepalive padding) writes what the plain one does.
    p[0] = msg::IGNORE;
    if let Some(ignore) = round_trip!(Ignore, &p) {
        let mut filled = Vec::new();
        msg::Ignore::encode_filled(&mut filled, ignore.data.len(), |d| d.copy_from_slice(ignore.data));
        assert_eq!(filled, ignore.to_payload(), "IGNORE encoded in place");
    }
    p[0] = msg::PING;
    round_trip!(Ping, &p);

    // USERAUTH_REQUEST, whole and in two steps (as the server decodes it),
    // and the fields of every method on the bytes after the number.
    p[0] = msg::USERAUTH_REQUEST;
    let whole = round_trip!(UserauthRequest, &p);
    if let Ok(head) = msg::UserauthRequest::decode_head(&p) {
        let stepwise = head.finish().ok().map(|method| msg::UserauthRequest {
            user: head.user,
            service: head.service,
            method,
        });
        assert_eq!(stepwise, whole, "USERAUTH_REQUEST decoded in two steps");
    }
    for name in AUTH_METHOD_NAMES {
        let Ok(method) = msg::AuthRequestMethod::decode(name, body) else { continue };
        assert_eq!(method.name(), name);
        let mut fields = Vec::new();
        method.encode_fields(&mut fields);
        let again = msg::AuthRequestMethod::decode(name, &fields).expect("encoded method fields decode");
        assert_eq!(again, method, "{name} fields round trip");
    }

    // The keyboard-interactive messages, whole and in two steps.
    p[0] = msg::USERAUTH_60;
    let whole = round_trip!(UserauthInfoRequest, &p);
    if let Ok(head) = msg::UserauthInfoRequest::decode_head(&p) {
        assert_eq!(head.finish().ok(), whole, "INFO_REQUEST decoded in two steps");
    }
    p[0] = msg::USERAUTH_INFO_RESPONSE;
    let whole = round_trip!(UserauthInfoResponse, &p);
    if let Ok(head) = msg::UserauthInfoResponse::decode_head(&p) {
        assert_eq!(head.finish().ok(), whole, "INFO_RESPONSE decoded in two steps");
    }

    // GLOBAL_REQUEST, and the typed data of the forwarding requests (as a
    // server reads them) for the name in the message and for each known one.
    p[0] = msg::GLOBAL_REQUEST;
    let request = round_trip!(GlobalRequest, &p);
    let named = request.iter().map(|r| (r.name, r.data));
    let known = [TCPIP_FORWARD_NAMES[0], TCPIP_FORWARD_NAMES[1]].into_iter().map(|n| (n, body));
    for (name, data) in named.chain(known) {
        let Ok(typed) = GlobalRequest::decode(name, data) else { continue };
        assert_eq!(typed.name(), name, "global request name");
        let mut out = Vec::new();
        typed.encode_data(&mut out);
        let again = GlobalRequest::decode(name, &out).expect("encoded global request data decodes");
        assert_eq!(again, typed, "global request data round trip");
    }
}

const TCPIP_FORWARD_NAMES: [&str; 2] = ["tcpip-forward", "cancel-tcpip-forward"];

/// A value read by one step of a reader script.
#[derive(Debug, PartialEq, Eq)]
enum Value<'a> {
    U8(u8),
    Bool(bool),
    U32(u32),
    U64(u64),
    String(&'a [u8]),
    Utf8(&'a str),
    NameList(Vec<&'a str>),
    Raw(&'a [u8]),
}

/// Runs `ops` against `buf`, stopping at the first failed read.
fn run_reader_script<'a>(ops: &[u8], buf: &'a [u8]) -> Vec<Value<'a>> {
    let mut r = Reader::new(buf);
    let mut values = Vec::new();
    for &o in ops {
        let v = match o % 9 {
            0 => r.u8("u8").map(Value::U8),
            1 => r.bool("bool").map(Value::Bool),
            2 => r.u32("u32").map(Value::U32),
            3 => r.u64("u64").map(Value::U64),
            4 => r.string("string").map(Value::String),
            5 => r.utf8("utf8").map(Value::Utf8),
            6 => r.name_list("name-list").map(Value::NameList),
            7 => r.bytes(usize::from(o >> 4), "raw").map(Value::Raw),
            _ => {
                let before = r.remaining().len();
                assert_eq!(r.finish().is_ok(), before == 0, "finish");
                assert_eq!(r.is_empty(), before == 0);
                continue;
            }
        };
        match v {
            Ok(v) => values.push(v),
            Err(_) => break,
        }
    }
    values
}

fn reader_writer_round_trip(payload: &[u8]) {
    let Some((&n, rest)) = payload.split_first() else { return };
    let n = usize::from(n % 32).min(rest.len());
    let (ops, buf) = rest.split_at(n);
    let values = run_reader_script(ops, buf);
    // Write back what was read; reading that again gives the same values.
    let mut out = Vec::new();
    for v in &values {
        match v {
            Value::U8(b) => out.put_u8(*b),
            Value::Bool(b) => out.put_bool(*b),
            Value::U32(x) => out.put_u32(*x),
            Value::U64(x) => out.extend_from_slice(&x.to_be_bytes()),
            Value::String(s) => out.put_string(s),
            Value::Utf8(s) => out.put_str(s),
            Value::NameList(l) => {
                assert!(l.iter().all(|n| !n.is_empty() && !n.contains(',') && n.is_ascii()));
                out.put_name_list(l);
            }
            Value::Raw(b) => out.extend_from_slice(b),
        }
    }
    let ops_done: Vec<u8> = ops.iter().copied().filter(|o| o % 9 != 8).take(values.len()).collect();
    let again = run_reader_script(&ops_done, &out);
    assert_eq!(again, values, "reader/writer round trip");
}

/// The version exchange: reading a buffer whole or in pieces (as the
/// transport does, resuming after what was consumed) gives the same result.
fn version_lines(payload: &[u8]) {
    let Some((&mode, buf)) = payload.split_first() else { return };
    let allow_pre_lines = mode & 1 == 1;
    let step = usize::from(mode >> 1) % 37 + 1;

    let mut whole = VersionReader::new(allow_pre_lines);
    let whole_result = whole.poll(buf).map(|(n, v)| (n, v.map(|v| v.line)));
    if let Ok((consumed, version)) = &whole_result {
        assert!(*consumed <= buf.len());
        if let Some(v) = version {
            assert!(v.starts_with("SSH-") && v.len() <= 253, "{v:?}");
        }
    }

    let mut pieces = VersionReader::new(allow_pre_lines);
    let mut start = 0;
    let mut end = 0;
    let piece_result = loop {
        end = (end + step).min(buf.len());
        match pieces.poll(&buf[start..end]) {
            Err(e) => break Err(e),
            Ok((n, Some(v))) => break Ok((start + n, Some(v.line))),
            Ok((n, None)) => {
                start += n;
                if end == buf.len() {
                    break Ok((start, None));
                }
            }
        }
    };
    assert_eq!(piece_result, whole_result, "version line read in pieces of {step}");
    if whole_result.is_ok() {
        assert_eq!(pieces.pre_lines, whole.pre_lines);
    }
}

/// Unencrypted binary packets: every packet found has a non-empty payload
/// inside the buffer, and arrival in pieces finds the same packets.
fn packet_framing(payload: &[u8]) {
    let Some((&mode, bytes)) = payload.split_first() else { return };
    let step = usize::from(mode) % 23 + 1;
    let parse = |step: usize| {
        let mut buf = bytes.to_vec();
        let mut opener = Opener::new(35_000);
        let mut found = Vec::new();
        let mut start = 0;
        let mut end = 0;
        loop {
            end = (end + step).min(buf.len());
            match opener.poll(&mut buf[start..end]) {
                Err(e) => return (found, Some(e)),
                Ok(Some(p)) => {
                    assert!(p.consumed <= end - start, "consumed past the buffer");
                    assert!(p.payload.start < p.payload.end, "empty payload handed up");
                    assert!(p.payload.end <= p.consumed);
                    assert_eq!(p.seq as usize, found.len());
                    found.push(buf[start + p.payload.start..start + p.payload.end].to_vec());
                    start += p.consumed;
                    end = start;
                }
                Ok(None) if end == buf.len() => return (found, None),
                Ok(None) => {}
            }
        }
    };
    assert_eq!(parse(step), parse(bytes.len().max(1)), "packets read in pieces of {step}");
}

/// Public key blobs (what a client offers a server before authentication)
/// and signatures over them: parsing is idempotent, verification never panics.
fn public_key_and_signature(payload: &[u8]) {
    let mut r = Reader::new(payload);
    let (blob, sig, signed) = match (r.string("blob"), r.string("signature")) {
        (Ok(b), Ok(s)) => (b, s, r.remaining()),
        _ => (payload, &[][..], &[][..]),
    };
    let Ok(key) = crate::keys::parse_public_key(blob) else { return };
    if let Ok(encoded) = key.to_bytes() {
        let again = crate::keys::parse_public_key(&encoded).expect("an encoded key parses");
        assert_eq!(again.key_data(), key.key_data(), "public key round trip");
    }
    for alg in SignatureAlgorithm::ALL {
        let fits = alg.fits_key(key.key_data());
        let r = crate::keys::verify(&key, alg, sig, signed);
        if !fits {
            assert!(r.is_err());
        }
    }
}

// --------------------------------------------------------- known_hosts_parse

/// Whether a plain host name is written verbatim by `line_to_append` and
/// reads back as itself (see its documentation).
fn plain_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' || b == b':')
}

/// `known_hosts` parsing, lookups, and the write→parse round trip of
/// `line_to_append` for every key found (hashed always; plain for ordinary
/// host names).
pub fn known_hosts_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let known = KnownHosts::parse(&text);
    let lines = text.split('\n').count();
    assert!(known.entries().len() + known.errors().len() <= lines);
    let mut numbers: Vec<usize> = known.entries().iter().map(|e| e.line).collect();
    numbers.extend(known.errors().iter().map(|e| e.line));
    numbers.sort_unstable();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "one outcome per line");
    assert!(numbers.iter().all(|&n| (1..=lines).contains(&n)));

    // Host names to try: fixed ones and those the file names plainly.
    let mut hosts: Vec<(String, u16)> = vec![("example.com".into(), 22), ("example.org".into(), 2222)];
    for entry in known.entries().iter().take(4) {
        if let HostPatterns::Plain(patterns) = &entry.hosts {
            for p in patterns.iter().take(2) {
                let p = p.trim_start_matches('!');
                let (host, port) = match p.strip_prefix('[').and_then(|r| r.split_once("]:")) {
                    Some((h, port)) => (h, port.parse().unwrap_or(22)),
                    None => (p, 22),
                };
                hosts.push((host.replace(['*', '?'], "x"), port));
            }
        }
    }
    for (host, port) in hosts.iter().take(8) {
        for entry in known.entries().iter().take(8) {
            let _ = entry.matches_host(host, *port);
            let outcome = known.lookup(host, *port, &entry.key);
            if let Lookup::Mismatch { lines, known: keys } = &outcome {
                assert_eq!(lines.len(), keys.len());
                assert!(!lines.is_empty());
            }
            let _ = known.revoked(host, *port, &entry.key);
        }
        for ca in known.cert_authorities(host, *port) {
            assert_eq!(ca.marker, crate::known_hosts::Marker::CertAuthority);
        }
        for e in known.known_keys(host, *port) {
            assert_eq!(e.marker, crate::known_hosts::Marker::None);
        }
    }
    // Writing a line for (host, key) and parsing it back finds that key for that host.
    let salt = [data.len() as u8; 20];
    for entry in known.entries().iter().take(2) {
        for (host, port) in hosts.iter().take(4) {
            let mut forms = vec![crate::known_hosts::line_to_append(host, *port, &entry.key, Some(&salt))];
            if plain_host_name(host) {
                forms.push(crate::known_hosts::line_to_append(host, *port, &entry.key, None));
            }
            for line in forms {
                let back = KnownHosts::parse(&line);
                assert!(back.errors().is_empty(), "{line:?}: {:?}", back.errors());
                assert_eq!(back.entries().len(), 1, "{line:?}");
                let e = &back.entries()[0];
                assert_eq!(e.key.key_data(), entry.key.key_data());
                assert!(e.matches_host(host, *port), "{line:?} does not match {host}:{port}");
                assert_eq!(back.lookup(host, *port, &entry.key), Lookup::Match { line: 1 }, "{line:?}");
            }
        }
    }
    // A comment survives the round trip (line breaks become spaces, ends trimmed).
    if let Some(entry) = known.entries().first() {
        let mut key = entry.key.clone();
        let comment: String = text.chars().take(40).collect();
        key.set_comment(comment.clone());
        let line = crate::known_hosts::line_to_append("example.com", 22, &key, None);
        let back = KnownHosts::parse(&line);
        assert_eq!(back.entries().len(), 1, "{line:?}: {:?}", back.errors());
        let expected: String =
            comment.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        let expected = expected.trim_matches([' ', '\t']);
        assert_eq!(back.entries()[0].comment.as_deref(), (!expected.is_empty()).then_some(expected));
    }
}

// --------------------------------------------------------- private_key_parse

/// The passphrase `private_key_parse` tries (the seed keys use it).
pub const FUZZ_PASSPHRASE: &[u8] = b"sansh-fuzz";

/// bcrypt rounds above which the target does not decrypt: each round costs
/// milliseconds, and the KDF's cost is the key file's author's choice (a
/// slow key file only slows down its own user), not a parser bug.
const MAX_FUZZ_KDF_ROUNDS: u32 = 4;

/// `load_private_key` on arbitrary text, without and with a passphrase
/// (first byte bit 0); a loaded key must sign and verify.
pub fn private_key_parse(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let cheap = match ssh_key::PrivateKey::from_openssh(text.trim()) {
        Ok(k) => match k.kdf() {
            ssh_key::Kdf::Bcrypt { rounds, .. } => *rounds <= MAX_FUZZ_KDF_ROUNDS,
            _ => true,
        },
        Err(_) => true,
    };
    let passphrase = (mode & 1 == 1 && cheap).then_some(FUZZ_PASSPHRASE);
    let Ok(key) = crate::keys::load_private_key(&text, passphrase) else { return };
    assert!(!key.is_encrypted());
    // Signing with it works for at least one algorithm, and verifies.
    let algs = SignatureAlgorithm::for_key(key.public_key().key_data());
    assert!(!algs.is_empty(), "loaded a key we cannot sign with");
    if mode & 2 == 2 {
        let alg = algs[usize::from(mode >> 2) % algs.len()];
        let mut rng = crate::rng::Rng::from_u64(1);
        let sig = crate::keys::sign(&key, alg, b"data", &mut rng).expect("a loaded key signs");
        crate::keys::verify(key.public_key(), alg, &sig, b"data").expect("its signature verifies");
    }
}

// ------------------------------------------------------ stateful harness

/// Seeds of the connections the stateful targets build: fixed, so a
/// transcript recorded with the same seed and config replays exactly (the
/// peer's signature over the exchange hash verifies, the keys match).
pub const CLIENT_SEED: [u8; 32] = [0x11; 32];
/// See [`CLIENT_SEED`].
pub const SERVER_SEED: [u8; 32] = [0x22; 32];

/// Fixed base of the output bound: the version line and KEXINIT with room
/// to spare.
const OUTPUT_BASE: u64 = 64 * 1024;
/// Output may be at most this many times the input (replies are small).
const OUTPUT_PER_INPUT: u64 = 4;
/// Output a timer tick may cause (IGNORE, probe, rekey KEXINIT).
const OUTPUT_PER_TICK: u64 = 4096;
/// Output a command may cause besides the data it writes.
const OUTPUT_PER_COMMAND: u64 = 4096;
/// Unprocessed input a connection may hold: the limit while a host key
/// decision pauses it (the largest), or a partial packet plus one read.
const INPUT_BOUND: usize = 512 * 1024 + 1024;
/// The peer's want-reply requests awaiting replies, per connection and per channel.
const REQUESTS_PER_QUEUE: usize = 64;

/// The documented bound on the output a peer can make us queue.
fn output_limit(t: &crate::config::TransportConfig) -> u64 {
    let cap = t.max_queued_output.max(crate::transport::MIN_QUEUED_OUTPUT);
    (cap + t.max_packet_len.max(35_000) as usize + 1024) as u64
}

fn base_client() -> &'static ClientConfig {
    static BASE: std::sync::OnceLock<ClientConfig> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let user_key = ssh_key::PrivateKey::from_openssh(super::keys::ECDSA_P256).expect("test key");
        let external = ssh_key::PrivateKey::from_openssh(super::keys::ED25519).expect("test key");
        ClientConfig::new(
            "root",
            vec![
                Credential::PrivateKey(user_key),
                Credential::Password("pw".into()),
                Credential::KeyboardInteractive,
                Credential::PasswordPrompt,
                Credential::ExternalKey(external.public_key().clone()),
            ],
        )
    })
}

fn base_server() -> &'static ServerConfig {
    static BASE: std::sync::OnceLock<ServerConfig> = std::sync::OnceLock::new();
    BASE.get_or_init(|| ServerConfig {
        host_keys: vec![
            super::host_key(HostKeyAlgorithm::Ed25519),
            super::host_key(HostKeyAlgorithm::EcdsaP256),
            super::host_key(HostKeyAlgorithm::EcdsaP384),
            super::host_key(HostKeyAlgorithm::RsaSha512),
        ],
        ..ServerConfig::default()
    })
}

/// Applies the transport bits of the config (shared by both roles): base
/// bits 0–1 ciphers, bit 2 strict kex off, bit 3 keepalive and tight rekey
/// limits, bits 4–5 host key algorithms (single-connection targets); the
/// extension's cipher, MACs and P-521 host key.
fn transport_flags(t: &mut crate::config::TransportConfig, all: Flags, host_key_bits: bool) {
    let flags = all.base;
    t.ciphers = match (all.cipher_override(), flags & 3) {
        (Some(ctr), _) => vec![ctr],
        (None, 0) => CipherAlgorithm::ALL.to_vec(),
        (None, 1) => vec![CipherAlgorithm::Aes128Gcm],
        (None, 2) => vec![CipherAlgorithm::Aes256Gcm],
        (None, _) => vec![CipherAlgorithm::ChaCha20Poly1305],
    };
    t.macs = all.macs();
    t.strict_kex = flags & 4 == 0;
    if flags & 8 != 0 {
        t.keepalive = KeepaliveConfig {
            ignore_interval: Some(Duration::from_secs(10)),
            probe_interval: Some(Duration::from_secs(15)),
            probe_count_max: 2,
            ..KeepaliveConfig::default()
        };
        t.rekey.time = Some(Duration::from_secs(60));
        t.rekey.bytes = Some(32 * 1024);
        t.rekey.packets = 64;
    }
    if all.p521() {
        t.host_key_algorithms = vec![HostKeyAlgorithm::EcdsaP521];
    } else if host_key_bits {
        t.host_key_algorithms = match (flags >> 4) & 3 {
            0 => HostKeyAlgorithm::ALL.to_vec(),
            1 => vec![HostKeyAlgorithm::EcdsaP256],
            2 => vec![HostKeyAlgorithm::RsaSha512, HostKeyAlgorithm::RsaSha256],
            _ => vec![HostKeyAlgorithm::EcdsaP384],
        };
    }
}

/// The client `client_input` drives (and the OpenSSH capture uses).
pub fn fuzz_client_config(flags: impl Into<Flags>) -> ClientConfig {
    let flags = flags.into();
    let mut c = base_client().clone();
    transport_flags(&mut c.transport, flags, true);
    c.pass_unknown_requests = flags.pass_unknown();
    c
}

/// The server `server_input` drives.
pub fn fuzz_server_config(flags: impl Into<Flags>) -> ServerConfig {
    let flags = flags.into();
    let mut s = base_server().clone();
    // Only then: the other servers' KEXINIT (and so their recordings) stay as they were.
    if flags.p521() {
        s.host_keys.push(super::host_key(HostKeyAlgorithm::EcdsaP521));
    }
    transport_flags(&mut s.transport, flags, true);
    s.pass_unknown_requests = flags.pass_unknown();
    s
}

/// The pair the post-authentication targets start from: ed25519 host key
/// (P-521 with the extension bit), password login, bit 5 of the base byte
/// a small channel limit.
fn post_auth_configs(all: Flags) -> (ClientConfig, ServerConfig) {
    let flags = all.base;
    let host_key = if all.p521() { HostKeyAlgorithm::EcdsaP521 } else { HostKeyAlgorithm::Ed25519 };
    // Password first (the setup logs in with it); the keys are there for
    // the fuzzer to reach PK_OK and signing before login.
    let mut c = base_client().clone();
    let keys = std::mem::take(&mut c.credentials);
    c.credentials = vec![Credential::Password("pw".into()), Credential::KeyboardInteractive];
    c.credentials.extend(keys.into_iter().filter(|k| k.method() == "publickey"));
    transport_flags(&mut c.transport, all, false);
    c.transport.host_key_algorithms = vec![host_key];
    c.pass_unknown_requests = all.pass_unknown();
    let mut s = ServerConfig {
        host_keys: vec![super::host_key(host_key)],
        pass_unknown_requests: all.pass_unknown(),
        ..ServerConfig::default()
    };
    transport_flags(&mut s.transport, all, false);
    if flags & 0x20 != 0 {
        c.max_channels = 4;
        s.max_channels = 4;
    }
    (c, s)
}

/// Checks the sans-IO invariants of one connection (see the module docs).
#[derive(Debug)]
pub struct Watch {
    closed_events: u32,
    /// Pending output when the connection was first seen closed, then its
    /// latest value: it may only shrink.
    pending_after_close: Option<usize>,
    /// The close reason an input error announced.
    expected_close: Option<CloseReason>,
    /// Bytes of input so far.
    input: u64,
    /// Output the application's commands and timers may cause.
    allowance: u64,
    max_channels: usize,
    /// `output_limit` of the connection's config.
    output_limit: u64,
}

impl Watch {
    fn new(max_channels: usize, transport: &crate::config::TransportConfig) -> Self {
        Watch {
            closed_events: 0,
            pending_after_close: None,
            expected_close: None,
            input: 0,
            allowance: 0,
            max_channels,
            output_limit: output_limit(transport),
        }
    }

    /// Every event polled goes through here.
    fn event(&mut self, e: &Event) {
        if self.closed_events > 0 {
            assert_eq!(e, &Event::StateChanged { state: State::Closed }, "event after Closed");
        }
        if let Event::Closed { reason } = e {
            self.closed_events += 1;
            assert_eq!(self.closed_events, 1, "a second Closed");
            if let Some(expected) = self.expected_close.take() {
                assert_eq!(reason, &expected, "Closed reason differs from the error returned");
            }
            assert!(
                !matches!(reason, CloseReason::Error(Error::Internal { .. })),
                "internal error: {reason:?}"
            );
        }
    }

    /// The result of an input (`handle_input`, `commit_received`, or a
    /// command that processes buffered input).
    fn input_result(&mut self, conn: &Connection, was_closed: bool, r: &Result<(), Error>) {
        match r {
            Ok(()) => {}
            Err(e) => {
                assert!(!was_closed, "input after close returned {e:?}");
                assert!(!matches!(e, Error::Internal { .. }), "internal error: {e:?}");
                assert!(conn.is_closed(), "an input error must close the connection: {e:?}");
                if self.closed_events == 0 {
                    self.expected_close = Some(CloseReason::Error(e.clone()));
                }
            }
        }
    }

    /// A command's result: `Error::Closed` once closed, never internal.
    fn command<T>(&mut self, was_closed: bool, r: &Result<T, Error>) {
        if was_closed {
            assert!(matches!(r, Err(Error::Closed)), "a command after close did not return Error::Closed");
        }
        if let Err(e) = r {
            assert!(!matches!(e, Error::Internal { .. }), "internal error: {e:?}");
        }
    }

    /// After every step, with all events drained.
    fn check(&mut self, conn: &Connection) {
        assert_eq!(conn.is_closed(), self.closed_events == 1, "is_closed disagrees with the Closed event");
        let pending = conn.pending_transmit().len();
        if conn.is_closed() {
            assert_eq!(conn.poll_timeout(), None, "a deadline after close");
            if let Some(before) = self.pending_after_close {
                assert!(pending <= before, "output grew after close: {before} -> {pending}");
            }
            self.pending_after_close = Some(pending);
            let state = if pending == 0 { State::Closed } else { State::Closing };
            assert_eq!(conn.state(), state, "state after close with {pending} bytes pending");
        }
        // Linear in the input for small inputs (no amplification), and
        // never past the absolute bound whatever the peer sends.
        let b = conn.buffered();
        let queued = (b.output + b.held) as u64;
        let peer = (OUTPUT_BASE + OUTPUT_PER_INPUT * self.input).min(self.output_limit);
        let bound = peer + 2 * self.allowance;
        assert!(
            queued <= bound,
            "output {queued} bytes over the bound {bound} (input {}, allowance {}): {b:?}",
            self.input,
            self.allowance
        );
        assert!(b.input <= INPUT_BOUND, "unprocessed input over the bound: {b:?}");
        assert!(b.requests <= REQUESTS_PER_QUEUE * (1 + b.channels), "requests over the bound: {b:?}");
        assert!(conn.channel_count() <= self.max_channels, "more channels than max_channels");
    }
}

/// Runs a command on `$conn`, checking its result with `$w`.
macro_rules! cmd {
    ($w:expr, $conn:expr, $call:expr) => {{
        let was_closed = $conn.is_closed();
        let r = $call;
        $w.command(was_closed, &r);
        r
    }};
}

/// Ids the application was asked to answer, for the manual mode's commands.
#[derive(Debug, Default)]
struct Asked {
    host_keys: Vec<u64>,
    auth: Vec<u64>,
    globals: Vec<u64>,
    opens: Vec<ChannelId>,
    requests: Vec<u64>,
    signs: Vec<u64>,
    passwords: Vec<u64>,
    changes: Vec<u64>,
    kbd: Vec<(u64, usize)>,
    /// Data events' buffers the application holds on to (each keeps a
    /// chunk of the receive buffer allocated), dropped by a command.
    buffers: Vec<crate::Bytes>,
}

/// The application: answers events like a simple client or server would.
/// Flags: bit 6 "strict" (reject the host key; refuse every login), bit 7
/// "manual" (only host key and authentication are answered at once, the
/// rest waits for commands).
#[derive(Debug)]
struct App {
    role: Role,
    strict: bool,
    manual: bool,
    /// Opens a session on login and runs a command in it (client), runs
    /// commands (server).
    active: bool,
    authenticated: bool,
    service_accepted: bool,
    /// Channels closed so far (recordings stop after the first).
    channels_closed: u32,
    asked: Asked,
}

impl App {
    fn new(role: Role, flags: u8) -> Self {
        App {
            role,
            strict: flags & 0x40 != 0,
            manual: flags & 0x80 != 0,
            active: true,
            authenticated: false,
            service_accepted: false,
            channels_closed: 0,
            asked: Asked::default(),
        }
    }

    /// Polls every event, answering each.
    fn drain(&mut self, conn: &mut Connection, w: &mut Watch) {
        while let Some(e) = conn.poll_event() {
            w.event(&e);
            self.on_event(conn, &e, w);
        }
    }

    fn on_event(&mut self, conn: &mut Connection, e: &Event, w: &mut Watch) {
        match e {
            Event::HostKey(check) => {
                if self.strict {
                    let _ = cmd!(w, conn, conn.reject_host_key(check.id));
                } else {
                    let was_closed = conn.is_closed();
                    let r = conn.accept_host_key(check.id);
                    w.command(was_closed, &r);
                    if r.is_err() && conn.is_closed() && !was_closed {
                        w.input_result(conn, was_closed, &r);
                    }
                }
            }
            Event::SignRequest { id, .. } => {
                let _ = cmd!(w, conn, conn.provide_signature(*id, None));
            }
            Event::PasswordRequest { id, .. } => {
                let _ = cmd!(w, conn, conn.provide_password(*id, Some("pw".into())));
            }
            Event::PasswordChangeRequest { id, .. } => {
                let _ = cmd!(w, conn, conn.change_password(*id, None));
            }
            Event::KeyboardInteractive { id, prompts, .. } => {
                let answers = prompts.iter().map(|_| Secret::new("pw")).collect();
                let _ = cmd!(w, conn, conn.answer_keyboard_interactive(*id, Some(answers)));
            }
            Event::AuthRequest { id, method, .. } => {
                let id = *id;
                let _ = match method {
                    _ if self.strict => cmd!(w, conn, conn.auth_reject(id, None)),
                    AuthMethod::None => cmd!(w, conn, conn.auth_reject(id, None)),
                    AuthMethod::Password { password, new_password: None }
                        if password.expose() == "change" =>
                    {
                        cmd!(w, conn, conn.auth_request_password_change(id, "expired"))
                    }
                    AuthMethod::Password { password, new_password } => {
                        if password.expose() == "pw" || new_password.is_some() {
                            cmd!(w, conn, conn.auth_accept(id))
                        } else {
                            cmd!(w, conn, conn.auth_reject(id, None))
                        }
                    }
                    AuthMethod::PublicKey { .. } => cmd!(w, conn, conn.auth_accept(id)),
                    AuthMethod::KeyboardInteractive { .. } => {
                        let prompts = [Prompt { text: "Password: ".into(), echo: false }];
                        cmd!(w, conn, conn.auth_info_request(id, "", "", &prompts))
                    }
                };
            }
            Event::AuthInfoResponse { id, answers } => {
                let ok = answers.len() == 1 && answers[0].expose() == "pw";
                let _ = if ok {
                    cmd!(w, conn, conn.auth_accept(*id))
                } else {
                    cmd!(w, conn, conn.auth_partial_success(*id, vec!["password".into()]))
                };
            }
            Event::Authenticated { .. } => {
                self.authenticated = true;
                if self.role == Role::Client && self.active && !self.manual {
                    let _ = cmd!(w, conn, conn.open_session(ChannelOptions::default()));
                }
            }
            Event::ServiceAccepted { .. } => self.service_accepted = true,
            Event::ChannelClosed { .. } => self.channels_closed += 1,
            Event::ChannelData { data, .. } | Event::ChannelExtendedData { data, .. }
                if self.asked.buffers.len() < 4 =>
            {
                self.asked.buffers.push(data.clone());
            }
            _ if self.manual => self.remember(e),
            Event::GlobalRequest { id, request, want_reply: true } => {
                let _ = match request {
                    GlobalRequest::TcpipForward { port: 0, .. } => {
                        cmd!(w, conn, conn.accept_global_request(*id, Some(4242)))
                    }
                    GlobalRequest::TcpipForward { .. } => {
                        cmd!(w, conn, conn.accept_global_request(*id, None))
                    }
                    _ => cmd!(w, conn, conn.reject_global_request(*id)),
                };
            }
            Event::ChannelOpenRequest { channel, .. } => {
                let _ = cmd!(w, conn, conn.accept_channel(*channel, ChannelOptions::default()));
            }
            Event::ChannelRequest { channel, id, request, want_reply } => {
                if *want_reply {
                    let _ = cmd!(w, conn, conn.accept_channel_request(*id));
                }
                if self.role == Role::Server && self.active && matches!(request, ChannelRequest::Exec { .. })
                {
                    let ch = *channel;
                    let _ = cmd!(w, conn, conn.channel_write(ch, b"hello\n"));
                    let exit = ChannelRequest::ExitStatus { status: 0 };
                    let _ = cmd!(w, conn, conn.channel_request(ch, &exit, false));
                    let _ = cmd!(w, conn, conn.channel_eof(ch));
                    let _ = cmd!(w, conn, conn.channel_close(ch));
                }
            }
            Event::ChannelOpened { channel } if self.role == Role::Client && self.active => {
                let _ = cmd!(w, conn, conn.exec(*channel, "echo hello"));
            }
            Event::ChannelEof { channel } => {
                let _ = cmd!(w, conn, conn.channel_close(*channel));
            }
            _ => {}
        }
    }

    fn remember(&mut self, e: &Event) {
        let a = &mut self.asked;
        match e {
            Event::GlobalRequest { id, want_reply: true, .. } => a.globals.push(*id),
            Event::ChannelOpenRequest { channel, .. } => a.opens.push(*channel),
            Event::ChannelRequest { id, want_reply: true, .. } => a.requests.push(*id),
            Event::HostKey(c) => a.host_keys.push(c.id),
            Event::AuthRequest { id, .. } => a.auth.push(*id),
            Event::SignRequest { id, .. } => a.signs.push(*id),
            Event::PasswordRequest { id, .. } => a.passwords.push(*id),
            Event::PasswordChangeRequest { id, .. } => a.changes.push(*id),
            Event::KeyboardInteractive { id, prompts, .. } => a.kbd.push((*id, prompts.len())),
            _ => {}
        }
    }
}

/// Picks (and removes) one of `ids` by `b`, or an arbitrary id.
fn pick<T: Copy>(ids: &mut Vec<T>, b: u8, arbitrary: T) -> T {
    if ids.is_empty() || b == 0xff { arbitrary } else { ids.swap_remove(usize::from(b) % ids.len()) }
}

fn channel_arg(b: &mut Bytes<'_>) -> ChannelId {
    let v = b.u8();
    ChannelId(if v < 240 { u32::from(v % 8) } else { u32::MAX - u32::from(v - 240) })
}

fn options_arg(b: &mut Bytes<'_>) -> ChannelOptions {
    let v = b.u8();
    let window = match v & 3 {
        0 => ChannelOptions::default().window,
        1 => 1,
        2 => 64 * 1024,
        _ => u32::MAX,
    };
    let max_packet = match (v >> 2) & 3 {
        0 => ChannelOptions::default().max_packet,
        1 => 1,
        2 => 0,
        _ => u32::MAX,
    };
    ChannelOptions { window, max_packet, manual_window: v & 0x10 != 0 }
}

fn request_arg(b: &mut Bytes<'_>) -> ChannelRequest {
    let v = b.u8();
    match v % 12 {
        0 => ChannelRequest::Pty(Pty { modes: vec![(53, 1), (128, 38400)], ..Pty::default() }),
        1 => ChannelRequest::Shell,
        2 => ChannelRequest::exec("echo hello"),
        3 => ChannelRequest::Subsystem { name: "sftp".into() },
        4 => ChannelRequest::Env { name: "LANG".into(), value: "C".into() },
        5 => ChannelRequest::WindowChange { cols: 100, rows: 40, width_px: 0, height_px: 0 },
        6 => ChannelRequest::Signal { name: "INT".into() },
        7 => ChannelRequest::ExitStatus { status: u32::from(b.u8()) },
        8 => ChannelRequest::ExitSignal { signal: "KILL".into(), core_dumped: true, message: "x".into() },
        9 => ChannelRequest::XonXoff { client_can_do: true },
        10 => ChannelRequest::Other { name: "keepalive@openssh.com".into(), data: vec![] },
        _ => ChannelRequest::Other { name: "x@y".into(), data: b.take(8).to_vec() },
    }
}

/// Length of data a command writes: small mostly, up to 256 KiB.
fn data_len(b: &mut Bytes<'_>) -> usize {
    let v = b.u16() as usize;
    if v & 0x8000 != 0 { (v & 0x7fff) * 8 } else { v & 0xfff }
}

/// One application command on `conn`, chosen and parameterised by `b`.
fn command(conn: &mut Connection, b: &mut Bytes<'_>, app: &mut App, w: &mut Watch) {
    w.allowance += OUTPUT_PER_COMMAND;
    let code = b.u8();
    let a = &mut app.asked;
    match code % 24 {
        0 => {
            let opts = options_arg(b);
            let _ = cmd!(w, conn, conn.open_session(opts));
        }
        1 => {
            let opts = options_arg(b);
            let _ = cmd!(w, conn, conn.open_direct_tcpip("localhost", 80, "127.0.0.1", 5555, opts));
        }
        2 => {
            let kind = ChannelKind::ForwardedTcpip {
                connected_host: "0.0.0.0".into(),
                connected_port: 4242,
                originator_host: "10.0.0.1".into(),
                originator_port: 5555,
            };
            let opts = options_arg(b);
            let _ = cmd!(w, conn, conn.open_channel(kind, opts));
        }
        3 | 4 => {
            let ch = channel_arg(b);
            let data = vec![0x61; data_len(b)];
            w.allowance += 2 * data.len() as u64;
            let _ = if code % 24 == 3 {
                cmd!(w, conn, conn.channel_write(ch, &data))
            } else {
                cmd!(w, conn, conn.channel_write_extended(ch, 1, &data))
            };
        }
        5 => {
            let ch = channel_arg(b);
            let _ = cmd!(w, conn, conn.channel_eof(ch));
        }
        6 => {
            let ch = channel_arg(b);
            let _ = cmd!(w, conn, conn.channel_close(ch));
        }
        7 => {
            let ch = channel_arg(b);
            let req = request_arg(b);
            let want = b.bool();
            let _ = cmd!(w, conn, conn.channel_request(ch, &req, want));
        }
        8 => {
            let v = b.u8();
            let name = ["keepalive@openssh.com", "no-more-sessions@openssh.com", "x"][usize::from(v % 3)];
            let _ = cmd!(w, conn, conn.global_request(name, v & 4 != 0, b.take(8)));
        }
        9 => {
            let port = u32::from(b.u16());
            let _ = if port & 1 == 0 {
                cmd!(w, conn, conn.request_remote_forward("", port))
            } else {
                cmd!(w, conn, conn.cancel_remote_forward("localhost", port))
            };
        }
        10 => {
            let _ = cmd!(w, conn, conn.rekey());
        }
        11 => {
            let data = b.take(16);
            let _ = cmd!(w, conn, conn.ping(data));
        }
        12 => {
            let data = vec![0; data_len(b) % 4096];
            w.allowance += data.len() as u64;
            let _ = cmd!(w, conn, conn.send_ignore(&data));
        }
        13 => {
            let _ = cmd!(w, conn, conn.send_debug(b.bool(), "debug message"));
        }
        14 => {
            let ch = channel_arg(b);
            let n = data_len(b);
            let _ = cmd!(w, conn, conn.channel_consumed(ch, n));
        }
        15 => {
            let v = b.u8();
            let _ = match v % 6 {
                0 => cmd!(w, conn, conn.accept_global_request(pick(&mut a.globals, b.u8(), 1), Some(1))),
                1 => cmd!(w, conn, conn.reject_global_request(pick(&mut a.globals, b.u8(), 1))),
                2 => cmd!(w, conn, conn.accept_channel_request(pick(&mut a.requests, b.u8(), 1))),
                3 => cmd!(w, conn, conn.reject_channel_request(pick(&mut a.requests, b.u8(), 1))),
                4 => {
                    let ch = pick(&mut a.opens, b.u8(), ChannelId(0));
                    let opts = options_arg(b);
                    cmd!(w, conn, conn.accept_channel(ch, opts))
                }
                _ => {
                    let ch = pick(&mut a.opens, b.u8(), ChannelId(0));
                    cmd!(w, conn, conn.reject_channel(ch, OpenFailure::CONNECT_FAILED, "no"))
                }
            };
        }
        16 => {
            let _ = cmd!(w, conn, conn.disconnect(DisconnectCode::BY_APPLICATION, "bye"));
        }
        17 => {
            // Done with a held data buffer (this once recycled it).
            let _ = b.u16();
            drop(a.buffers.pop());
        }
        18 => {
            let id = pick(&mut a.host_keys, b.u8(), 1);
            if b.bool() {
                let was_closed = conn.is_closed();
                let r = conn.accept_host_key(id);
                w.command(was_closed, &r);
                if r.is_err() && conn.is_closed() && !was_closed {
                    w.input_result(conn, was_closed, &r);
                }
            } else {
                let _ = cmd!(w, conn, conn.reject_host_key(id));
            }
        }
        19 => {
            let v = b.u8();
            let _ = match v % 4 {
                0 => cmd!(w, conn, conn.provide_signature(pick(&mut a.signs, b.u8(), 1), Some(b.take(16)))),
                1 => {
                    cmd!(w, conn, conn.provide_password(pick(&mut a.passwords, b.u8(), 1), Some("pw".into())))
                }
                2 => cmd!(w, conn, conn.change_password(pick(&mut a.changes, b.u8(), 1), Some("new".into()))),
                _ => {
                    let (id, n) = pick(&mut a.kbd, b.u8(), (1, 1));
                    let answers = (0..n + usize::from(v >> 7)).map(|_| Secret::new("pw")).collect();
                    cmd!(w, conn, conn.answer_keyboard_interactive(id, Some(answers)))
                }
            };
        }
        20 => {
            let v = b.u8();
            let id = pick(&mut a.auth, b.u8(), 1);
            let _ = match v % 5 {
                0 => cmd!(w, conn, conn.auth_accept(id)),
                1 => cmd!(w, conn, conn.auth_reject(id, None)),
                2 => cmd!(w, conn, conn.auth_partial_success(id, vec!["password".into()])),
                3 => cmd!(w, conn, conn.auth_request_password_change(id, "change it")),
                _ => {
                    let prompts: Vec<Prompt> =
                        (0..v >> 4).map(|i| Prompt { text: format!("p{i}"), echo: i % 2 == 0 }).collect();
                    cmd!(w, conn, conn.auth_info_request(id, "name", "instruction", &prompts))
                }
            };
        }
        21 => {
            let ch = channel_arg(b);
            let _ = conn.channel_info(ch);
            let _ = conn.stats();
            let _ = (conn.session_id(), conn.negotiated(), conn.peer_version(), conn.banner_lines());
            let _ = (conn.peer_extensions(), conn.is_rekeying(), conn.user(), conn.role());
        }
        22 => {
            let ch = channel_arg(b);
            let _ = cmd!(w, conn, conn.exec(ch, "true"));
        }
        _ => {
            let data = vec![0x62; data_len(b)];
            w.allowance += 2 * data.len() as u64;
            for ch in 0..4 {
                let _ = cmd!(w, conn, conn.channel_write(ChannelId(ch), &data));
            }
            w.allowance += 6 * data.len() as u64;
        }
    }
}

/// Once closed, for good: every command fails with `Error::Closed`, input
/// is ignored, nothing new is queued, no deadline, no new events.
fn assert_dead(conn: &mut Connection, w: &mut Watch, now: Timestamp) {
    assert!(conn.is_closed());
    let before = conn.pending_transmit().len();
    let ch = ChannelId(0);
    let closed = |r: Result<(), Error>| assert_eq!(r, Err(Error::Closed));
    closed(conn.send_ignore(b"x"));
    closed(conn.send_debug(true, "x"));
    closed(conn.rekey());
    closed(conn.ping(b"x"));
    closed(conn.disconnect(DisconnectCode::BY_APPLICATION, "x"));
    closed(conn.accept_host_key(1));
    closed(conn.reject_host_key(1));
    closed(conn.provide_signature(1, None));
    closed(conn.provide_password(1, None));
    closed(conn.change_password(1, None));
    closed(conn.answer_keyboard_interactive(1, None));
    closed(conn.auth_accept(1));
    closed(conn.auth_reject(1, None));
    closed(conn.auth_partial_success(1, vec![]));
    closed(conn.auth_request_password_change(1, "x"));
    closed(conn.auth_info_request(1, "", "", &[]));
    closed(conn.global_request("x", true, b"").map(drop));
    closed(conn.request_remote_forward("", 0).map(drop));
    closed(conn.cancel_remote_forward("", 0).map(drop));
    closed(conn.accept_global_request(1, None));
    closed(conn.reject_global_request(1));
    closed(conn.open_session(ChannelOptions::default()).map(drop));
    closed(conn.open_direct_tcpip("h", 1, "o", 2, ChannelOptions::default()).map(drop));
    closed(conn.open_channel(ChannelKind::Session, ChannelOptions::default()).map(drop));
    closed(conn.accept_channel(ch, ChannelOptions::default()));
    closed(conn.reject_channel(ch, OpenFailure::CONNECT_FAILED, "x"));
    closed(conn.channel_request(ch, &ChannelRequest::Shell, true).map(drop));
    closed(conn.exec(ch, "x").map(drop));
    closed(conn.accept_channel_request(1));
    closed(conn.reject_channel_request(1));
    closed(conn.channel_write(ch, b"x").map(drop));
    closed(conn.channel_write_extended(ch, 1, b"x").map(drop));
    closed(conn.channel_eof(ch));
    closed(conn.channel_close(ch));
    closed(conn.channel_consumed(ch, 1));
    assert_eq!(conn.handle_input(now, b"SSH-2.0-x\r\n\0\0\0\x0c\x04garbage!"), Ok(()));
    conn.receive_buffer(16)[..4].copy_from_slice(b"\0\0\0\x0c");
    assert_eq!(conn.commit_received(now, 4), Ok(()));
    conn.handle_timeout(now + Duration::from_secs(3600));
    conn.handle_eof(now);
    assert_eq!(conn.pending_transmit().len(), before, "output queued after close");
    assert_eq!(conn.poll_timeout(), None);
    conn.consume_transmit(usize::MAX);
    while let Some(e) = conn.poll_event() {
        w.event(&e);
    }
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.pending_transmit().is_empty());
}

/// Ends a run: EOF if still open (exactly one Closed follows), then the
/// closed-for-good checks.
fn finish(conn: &mut Connection, app: &mut App, w: &mut Watch, now: Timestamp) {
    if !conn.is_closed() {
        conn.handle_eof(now);
        app.drain(conn, w);
        assert!(conn.is_closed(), "EOF must close");
    }
    w.check(conn);
    assert_eq!(w.closed_events, 1);
    assert_dead(conn, w, now);
}

/// Advances the clock by a tick argument (0: to the next deadline).
fn tick_time(now: Timestamp, units: u16, deadline: Option<Timestamp>) -> Timestamp {
    if units == 0 {
        deadline.map_or(now, |d| d.max(now))
    } else {
        now + Duration::from_millis(u64::from(units) * 16)
    }
}

/// How far a single-connection run got (for tests of the seeds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The connection logged in.
    pub authenticated: bool,
    /// Channels that closed on both sides.
    pub channels_closed: u32,
}

/// A fresh connection fed a script: chunks (both input paths), timer ticks,
/// partial writes, a peer that stops reading, commands and EOF. Returns
/// how far it got.
pub fn single_connection(role: Role, data: &[u8]) -> Summary {
    let mut b = Bytes::new(data);
    let flags = Flags::read(&mut b);
    let (mut conn, mut w) = match role {
        Role::Client => {
            let c = fuzz_client_config(flags);
            let w = Watch::new(c.max_channels, &c.transport);
            (Connection::client(c, Timestamp::ZERO, CLIENT_SEED).expect("valid config"), w)
        }
        Role::Server => {
            let s = fuzz_server_config(flags);
            let w = Watch::new(s.max_channels, &s.transport);
            (Connection::server(s, Timestamp::ZERO, SERVER_SEED).expect("valid config"), w)
        }
    };
    let mut app = App::new(role, flags.base);
    let mut now = Timestamp::ZERO;
    let mut hold = false;
    app.drain(&mut conn, &mut w);
    w.check(&conn);
    while !b.is_empty() {
        let o = b.u8();
        match o & 7 {
            0..=2 => {
                let n = usize::from(b.u16());
                let bytes = b.take(n);
                w.input += bytes.len() as u64;
                let was_closed = conn.is_closed();
                let r = if o & 7 == op::DATA_ZERO_COPY {
                    conn.receive_buffer(bytes.len())[..bytes.len()].copy_from_slice(bytes);
                    conn.commit_received(now, bytes.len())
                } else {
                    conn.handle_input(now, bytes)
                };
                w.input_result(&conn, was_closed, &r);
            }
            op::TICK => {
                now = tick_time(now, b.u16(), conn.poll_timeout());
                w.allowance += OUTPUT_PER_TICK;
                conn.handle_timeout(now);
            }
            op::DRAIN => {
                let n = usize::from(b.u16());
                conn.consume_transmit(if n == 0 { usize::MAX } else { n });
            }
            op::HOLD => hold = !hold,
            op::COMMAND => command(&mut conn, &mut b, &mut app, &mut w),
            _ => conn.handle_eof(now),
        }
        app.drain(&mut conn, &mut w);
        w.check(&conn);
        if !hold {
            conn.consume_transmit(usize::MAX);
            app.drain(&mut conn, &mut w);
        }
    }
    finish(&mut conn, &mut app, &mut w, now);
    Summary { authenticated: app.authenticated, channels_closed: app.channels_closed }
}

/// A fresh client fed arbitrary bytes, ticks and commands (the config
/// first, see [`Flags`]; [`Script`] for the ops).
pub fn client_input(data: &[u8]) {
    let _ = single_connection(Role::Client, data);
}

/// A fresh server fed arbitrary bytes, ticks and commands.
pub fn server_input(data: &[u8]) {
    let _ = single_connection(Role::Server, data);
}

// ------------------------------------------------------ post-auth harness

/// One end of the in-process pair: the connection, its application and
/// its invariant checks.
#[derive(Debug)]
struct Side {
    conn: Connection,
    app: App,
    w: Watch,
}

impl Side {
    fn drain(&mut self) {
        self.app.drain(&mut self.conn, &mut self.w);
    }

    /// Feeds bytes from the other side; `how` 0: one chunk, 1: two, 2: zero-copy.
    fn feed(&mut self, now: Timestamp, bytes: &[u8], how: u8) {
        if bytes.is_empty() {
            return;
        }
        self.w.input += bytes.len() as u64;
        let was_closed = self.conn.is_closed();
        let r = match how {
            1 => {
                let (a, b) = bytes.split_at(bytes.len() / 2);
                self.conn.handle_input(now, a).and_then(|()| self.conn.handle_input(now, b))
            }
            2 => {
                self.conn.receive_buffer(bytes.len())[..bytes.len()].copy_from_slice(bytes);
                self.conn.commit_received(now, bytes.len())
            }
            _ => self.conn.handle_input(now, bytes),
        };
        self.w.input_result(&self.conn, was_closed, &r);
        self.drain();
    }

    /// Takes everything pending (what the adapter would write).
    fn take_output(&mut self) -> Vec<u8> {
        let out = self.conn.pending_transmit().to_vec();
        self.conn.consume_transmit(out.len());
        self.drain();
        out
    }
}

/// Most bytes buffered toward the peer; beyond it the stream is cut (the
/// peer then sees nothing more) so a flood costs the harness nothing.
const LINK_CAP: usize = 4 << 20;

/// The connection under test (`ut`) and a real peer that plays the
/// attacker: it encrypts the fuzzer's payloads with the session keys
/// (`inject_payload`), so they reach the dispatch after decryption.
#[derive(Debug)]
struct Duo {
    ut: Side,
    peer: Side,
    now: Timestamp,
    /// Our output not yet delivered to the peer.
    to_peer: Vec<u8>,
    /// The stream toward the peer was cut (over `LINK_CAP`).
    cut: bool,
    /// The adapter stopped writing our output (a peer that never reads).
    hold: bool,
}

impl Duo {
    /// Handshake (and, unless `preauth`, authentication) in process.
    fn new(role: Role, all: Flags) -> Duo {
        let flags = all.base;
        let preauth = flags & 0x10 != 0;
        let (cc, sc) = post_auth_configs(all);
        let mut client = Side {
            w: Watch::new(cc.max_channels, &cc.transport),
            conn: Connection::client(cc, Timestamp::ZERO, CLIENT_SEED).expect("valid config"),
            app: App::new(Role::Client, flags & 0x80),
        };
        let mut server = Side {
            w: Watch::new(sc.max_channels, &sc.transport),
            conn: Connection::server(sc, Timestamp::ZERO, SERVER_SEED).expect("valid config"),
            app: App::new(Role::Server, flags & 0x80),
        };
        // Sessions are the fuzzer's to open; the setup only logs in.
        client.app.active = false;
        server.app.active = false;
        let now = Timestamp::from_millis(1);
        for _ in 0..32 {
            let c2s = client.take_output();
            server.feed(now, &c2s, 0);
            if preauth && server.app.service_accepted {
                break;
            }
            let s2c = server.take_output();
            client.feed(now, &s2c, 0);
            let done = client.app.authenticated && server.app.authenticated;
            if done && client.conn.pending_transmit().is_empty() && server.conn.pending_transmit().is_empty()
            {
                break;
            }
        }
        assert!(!client.conn.is_closed() && !server.conn.is_closed(), "setup failed");
        if preauth {
            assert!(server.app.service_accepted, "setup did not reach authentication");
        } else {
            assert!(client.app.authenticated && server.app.authenticated, "setup did not log in");
        }
        // From here on the application under test follows the fuzzer's
        // flags (strict, manual); sessions stay the fuzzer's to drive.
        let strict = flags & 0x40 != 0;
        for side in [&mut client, &mut server] {
            side.app.strict = strict && side.app.role == role;
        }
        let (ut, peer) = match role {
            Role::Client => (client, server),
            Role::Server => (server, client),
        };
        Duo { ut, peer, now, to_peer: Vec::new(), cut: false, hold: false }
    }

    /// Moves the peer's output to the connection under test.
    fn deliver_to_ut(&mut self, how: u8) {
        let bytes = self.peer.take_output();
        self.ut.feed(self.now, &bytes, how);
    }

    /// Our output as far as the adapter writes it: into the link to the peer.
    fn write_ut(&mut self) {
        if self.hold {
            return;
        }
        let out = self.ut.take_output();
        if !self.cut {
            if self.to_peer.len() + out.len() > LINK_CAP {
                self.cut = true;
                self.to_peer = Vec::new();
            } else {
                self.to_peer.extend_from_slice(&out);
            }
        }
    }

    /// The peer reads what we wrote and answers; `rounds` times.
    fn sync(&mut self, rounds: u8) {
        for _ in 0..rounds {
            self.write_ut();
            let bytes = std::mem::take(&mut self.to_peer);
            if !self.cut {
                self.peer.feed(self.now, &bytes, 0);
            }
            self.deliver_to_ut(0);
        }
    }

    fn run(&mut self, b: &mut Bytes<'_>) {
        while !b.is_empty() {
            let o = b.u8();
            match o & 7 {
                0..=2 => {
                    let n = usize::from(b.u16());
                    let payload = b.take(n);
                    if !payload.is_empty() {
                        self.peer.w.allowance += payload.len() as u64 + 256;
                        self.peer.conn.inject_payload(payload);
                        self.deliver_to_ut(o & 7);
                    }
                }
                op::TICK => {
                    let deadline = [self.ut.conn.poll_timeout(), self.peer.conn.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .min();
                    self.now = tick_time(self.now, b.u16(), deadline);
                    for side in [&mut self.ut, &mut self.peer] {
                        side.w.allowance += OUTPUT_PER_TICK;
                        side.conn.handle_timeout(self.now);
                        side.drain();
                    }
                }
                op::DRAIN => {
                    let rounds = (b.u16() % 4) as u8 + 1;
                    self.sync(rounds);
                }
                op::HOLD => self.hold = !self.hold,
                op::COMMAND => {
                    command(&mut self.ut.conn, b, &mut self.ut.app, &mut self.ut.w);
                    self.ut.drain();
                }
                _ => {
                    command(&mut self.peer.conn, b, &mut self.peer.app, &mut self.peer.w);
                    self.peer.drain();
                }
            }
            self.ut.w.check(&self.ut.conn);
            self.peer.w.check(&self.peer.conn);
            self.write_ut();
        }
        self.ut.w.check(&self.ut.conn);
        let now = self.now;
        finish(&mut self.ut.conn, &mut self.ut.app, &mut self.ut.w, now);
        finish(&mut self.peer.conn, &mut self.peer.app, &mut self.peer.w, now);
    }
}

/// Runs a post-auth script with the connection of `role` under test;
/// returns how far that connection got.
pub fn post_auth(role: Role, data: &[u8]) -> Summary {
    let mut b = Bytes::new(data);
    let flags = Flags::read(&mut b);
    let mut duo = Duo::new(role, flags);
    duo.run(&mut b);
    Summary { authenticated: duo.ut.app.authenticated, channels_closed: duo.ut.app.channels_closed }
}

/// An authenticated client (or, with flag bit 4, one in user
/// authentication) receiving the fuzzer's payloads from its server,
/// encrypted with the session keys, interleaved with commands on either
/// side, ticks, exchanges with the real peer, and a peer that stops reading.
pub fn post_auth_client(data: &[u8]) {
    let _ = post_auth(Role::Client, data);
}

/// The same for a server (flag bit 4: before authentication, so every
/// USERAUTH_REQUEST shape reaches it).
pub fn post_auth_server(data: &[u8]) {
    let _ = post_auth(Role::Server, data);
}

// ------------------------------------------------------------- pool_ops

fn pool_key(i: u8) -> PoolKey {
    PoolKey {
        host: format!("host{}", i % 2),
        port: 22,
        user: format!("user{}", (i / 2) % 2),
        identity: "SHA256:k".into(),
    }
}

/// What [`PoolChecker`] believes the pool holds; built only from what the
/// checker did and the events the pool reported, never from the pool's
/// own state.
#[derive(Debug, Default)]
struct PoolModel {
    now_ms: u64,
    dialing: BTreeMap<ConnectionId, PoolKey>,
    ready: BTreeMap<ConnectionId, PoolKey>,
    /// Live leases: connection and the key asked for.
    leases: BTreeMap<LeaseId, (ConnectionId, PoolKey)>,
    ended: BTreeSet<LeaseId>,
    /// Live waiters per key in arrival order, with deadlines (ms).
    waiters: BTreeMap<PoolKey, VecDeque<(WaiterId, u64)>>,
    answered: BTreeSet<WaiterId>,
    /// When each ready connection without leases last had one (ms).
    idle_since: BTreeMap<ConnectionId, u64>,
    /// Connections whose server refused a channel: the leases they take now.
    caps: BTreeMap<ConnectionId, usize>,
    /// Connections that refused their only channel (the pool must close them).
    refusing: BTreeSet<ConnectionId>,
    /// Leases each connection has been granted (for the reuse count).
    served: BTreeMap<ConnectionId, u64>,
    /// Every connection id the pool has asked to dial.
    dialled: BTreeSet<ConnectionId>,
    dials: u64,
    dials_failed: u64,
    evictions: u64,
    granted: u64,
    reused: u64,
}

impl PoolModel {
    fn leases_on(&self, c: ConnectionId) -> usize {
        self.leases.values().filter(|(conn, _)| *conn == c).count()
    }

    fn cap(&self, c: ConnectionId, cfg: &PoolConfig) -> usize {
        self.caps.get(&c).copied().unwrap_or(cfg.max_channels_per_connection as usize)
    }

    fn live(&self) -> usize {
        self.dialing.len() + self.ready.len()
    }

    fn connections_of(&self, k: &PoolKey) -> usize {
        self.dialing.values().chain(self.ready.values()).filter(|ck| *ck == k).count()
    }

    fn dialing_of(&self, k: &PoolKey) -> usize {
        self.dialing.values().filter(|ck| *ck == k).count()
    }

    fn waiting(&self, k: &PoolKey) -> usize {
        self.waiters.get(k).map_or(0, VecDeque::len)
    }

    /// Whether `k` needs another connection: its waiters outnumber what its
    /// dials in flight will carry, and its own limit allows one.
    fn wants_dial(&self, k: &PoolKey, cfg: &PoolConfig) -> bool {
        let per_conn = cfg.max_channels_per_connection.max(1) as usize;
        self.waiting(k) > self.dialing_of(k) * per_conn
            && self.connections_of(k) < cfg.max_connections_per_key
    }

    /// The waiter of `k` a new connection would be for: the first its dials
    /// in flight do not cover.
    fn turn(&self, k: &PoolKey, cfg: &PoolConfig) -> Option<WaiterId> {
        if !self.wants_dial(k, cfg) {
            return None;
        }
        let per_conn = cfg.max_channels_per_connection.max(1) as usize;
        self.waiters.get(k)?.get(self.dialing_of(k) * per_conn).map(|(w, _)| *w)
    }

    fn idle_of_another_key(&self, k: &PoolKey) -> Option<ConnectionId> {
        self.ready.iter().find(|(c, ck)| *ck != k && self.leases_on(**c) == 0).map(|(c, _)| *c)
    }

    fn grant(&mut self, lease: Lease, key: PoolKey) {
        let conn_key = self.ready.get(&lease.connection);
        assert_eq!(conn_key, Some(&key), "lease for {key:?} on a connection of {conn_key:?}");
        assert!(self.leases.insert(lease.id, (lease.connection, key)).is_none(), "lease id reused");
        assert!(!self.ended.contains(&lease.id), "lease id reused");
        self.idle_since.remove(&lease.connection);
        let served = self.served.entry(lease.connection).or_default();
        if *served > 0 {
            self.reused += 1;
        }
        *served += 1;
        self.granted += 1;
    }

    fn end(&mut self, lease: LeaseId) {
        assert!(self.ended.insert(lease), "lease {lease:?} ended twice");
        let (conn, _) = self.leases.remove(&lease).expect("live lease");
        if self.ready.contains_key(&conn) && self.leases_on(conn) == 0 {
            self.idle_since.insert(conn, self.now_ms);
        }
    }

    fn answer(&mut self, waiter: WaiterId) {
        assert!(self.answered.insert(waiter), "waiter {waiter:?} answered twice");
    }
}

/// A [`Pool`] driven by operations on what it handed out (the `i`-th live
/// lease, dialling or ready connection, waiter), with the invariants of the
/// session-management issue checked against an independent model after
/// every step; any violation panics. `pool_ops` and the proptest in
/// `core/tests/reconnect_pool.rs` both drive it.
///
/// After every step:
/// - limits: connections in total and per key, leases per connection (a
///   connection that refused a channel takes no more than it held then);
/// - no lease across keys; every lease released or reported broken exactly
///   once, and no lease left on a connection that is gone;
/// - every waiter answered once; a key's waiters served in arrival order;
///   `WaiterFailed` only when its key has no connection left;
/// - liveness: no waiter waits while (a) a ready connection of its key has
///   a free channel, (b) the limits allow a dial its key needs (its
///   waiters outnumber what its dials in flight carry), or (c) the global
///   limit binds but an idle connection of another key could be closed for it;
/// - room at the global limit goes FIFO across keys: no key still waiting
///   for room has a waiter older than one a dial of this step was for;
/// - no needless dial: each `Dial` is for a key that needed one;
/// - idle connections close on time, never early: `CloseIdle` comes at the
///   idle timeout, or for a connection that refused its only channel, or
///   to make room (at the global limit, followed by a `Dial` for another
///   key); waiters time out at their deadline, never early; `poll_timeout`
///   is never after the next of either;
/// - `stats()` agrees with the model: dialing, ready, leases, waiters,
///   dials, failed dials, evictions, leases granted and reused.
#[derive(Debug)]
pub struct PoolChecker {
    pool: Pool,
    cfg: PoolConfig,
    m: PoolModel,
}

impl PoolChecker {
    /// An empty pool with `cfg`.
    pub fn new(cfg: PoolConfig) -> Self {
        PoolChecker { pool: Pool::new(cfg.clone()), cfg, m: PoolModel::default() }
    }

    /// The pool under test.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.m.now_ms)
    }

    /// `acquire` for `key`.
    pub fn acquire(&mut self, key: PoolKey) {
        let now = self.now();
        match self.pool.acquire(now, &key) {
            Acquire::Leased(lease) => {
                assert_eq!(self.m.waiting(&key), 0, "{key:?} leased past its waiters");
                self.m.grant(lease, key);
            }
            Acquire::Queued { waiter, deadline } => {
                assert_eq!(deadline, now + self.cfg.acquire_timeout);
                self.m.waiters.entry(key).or_default().push_back((waiter, deadline.as_micros() / 1000));
            }
        }
        self.drain();
    }

    /// Releases the `i`-th live lease (modulo); false if there is none.
    pub fn release(&mut self, i: usize) -> bool {
        let Some(lease) = nth(self.m.leases.keys(), i) else { return false };
        self.m.end(lease);
        self.pool.release(self.now(), lease);
        self.drain();
        true
    }

    /// Reports the `i`-th dialling connection up; false if there is none.
    pub fn connected(&mut self, i: usize) -> bool {
        let Some(c) = nth(self.m.dialing.keys(), i) else { return false };
        let k = self.m.dialing.remove(&c).expect("dialing");
        self.m.ready.insert(c, k);
        self.m.idle_since.insert(c, self.m.now_ms);
        self.pool.connected(self.now(), c);
        self.drain();
        true
    }

    /// Reports the `i`-th dialling connection failed; false if there is none.
    pub fn failed(&mut self, i: usize) -> bool {
        let Some(c) = nth(self.m.dialing.keys(), i) else { return false };
        self.m.dialing.remove(&c);
        self.m.dials_failed += 1;
        self.pool.failed(self.now(), c);
        self.drain();
        true
    }

    /// Reports the `i`-th ready connection lost; false if there is none.
    pub fn lost(&mut self, i: usize) -> bool {
        let Some(c) = nth(self.m.ready.keys(), i) else { return false };
        self.m.ready.remove(&c);
        self.m.idle_since.remove(&c);
        self.m.evictions += 1;
        self.pool.lost(self.now(), c);
        self.drain();
        true
    }

    /// The server refuses the channel of the `i`-th live lease; false if
    /// there is none.
    pub fn refused(&mut self, i: usize) -> bool {
        let Some(lease) = nth(self.m.leases.keys(), i) else { return false };
        let (c, _) = self.m.leases.remove(&lease).expect("live lease");
        assert!(self.m.ended.insert(lease));
        let cap = self.m.cap(c, &self.cfg).min(self.m.leases_on(c));
        self.m.caps.insert(c, cap);
        if cap == 0 {
            self.m.refusing.insert(c);
        }
        let got = self.pool.refused(self.now(), lease);
        assert_eq!(got as usize, cap, "capacity after a refusal");
        self.drain();
        true
    }

    /// Cancels the `i`-th live waiter (in key, then arrival order); false
    /// if there is none.
    pub fn cancel(&mut self, i: usize) -> bool {
        let all: Vec<(PoolKey, WaiterId)> =
            self.m.waiters.iter().flat_map(|(k, q)| q.iter().map(|(w, _)| (k.clone(), *w))).collect();
        if all.is_empty() {
            return false;
        }
        let (k, w) = all[i % all.len()].clone();
        assert!(self.pool.cancel(w), "a live waiter is not cancellable");
        assert!(!self.pool.cancel(w), "cancelled twice");
        self.m.waiters.get_mut(&k).expect("key").retain(|(x, _)| *x != w);
        self.drain();
        true
    }

    /// Time passes by `ms`: every deadline up to then runs, in order, as
    /// an adapter would run them.
    pub fn advance(&mut self, ms: u64) {
        self.m.now_ms += ms;
        let now = self.now();
        while let Some(t) = self.pool.poll_timeout().filter(|t| *t <= now) {
            self.pool.handle_timeout(t);
            self.drain();
        }
        self.pool.handle_timeout(now);
        self.drain();
        let idle = self.cfg.idle_timeout.as_millis() as u64;
        for (c, since) in &self.m.idle_since {
            assert!(since + idle > self.m.now_ms, "{c:?} idle since {since} still open at {}", self.m.now_ms);
        }
        for q in self.m.waiters.values() {
            assert!(q.iter().all(|(_, d)| *d > self.m.now_ms), "a waiter outlived its deadline");
        }
    }

    /// Reports on ids that are stale or were never issued (`arg` picks):
    /// the pool must ignore them.
    pub fn stale(&mut self, arg: u8) {
        let id = u64::from(arg) + 1_000_000;
        let now = self.now();
        match arg % 4 {
            0 => {
                let lease = self.m.ended.iter().next().copied().unwrap_or(LeaseId(id));
                self.pool.release(now, lease);
            }
            1 => self.pool.connected(now, ConnectionId(id)),
            2 => self.pool.failed(now, ConnectionId(id)),
            _ => self.pool.lost(now, ConnectionId(id)),
        }
        self.drain();
    }

    /// Applies the pool's events to the model, checking each, then the
    /// invariants of the state reached.
    fn drain(&mut self) {
        let events: Vec<PoolEvent> = std::iter::from_fn(|| self.pool.poll_event()).collect();
        let cfg = &self.cfg;
        let m = &mut self.m;
        // The waiters the dials of this step are for, to check FIFO across keys.
        let mut dialled_for = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                PoolEvent::Dial { connection, key } => {
                    assert!(m.dialled.insert(*connection), "connection id {connection:?} reused");
                    let turn = m.turn(key, cfg);
                    assert!(turn.is_some(), "dialled for {key:?}, which needs no connection");
                    dialled_for.extend(turn);
                    assert!(
                        m.dialing.insert(*connection, key.clone()).is_none(),
                        "dialled {connection:?} twice"
                    );
                    m.dials += 1;
                }
                PoolEvent::LeaseGranted { waiter, lease } => {
                    let key = m.ready.get(&lease.connection).expect("lease on a ready connection").clone();
                    let q = m.waiters.get_mut(&key).expect("waiters of the key");
                    let first = q.pop_front().map(|(w, _)| w);
                    assert_eq!(first, Some(*waiter), "waiters of {key:?} served out of order");
                    m.answer(*waiter);
                    m.grant(lease.clone(), key);
                }
                PoolEvent::WaiterTimedOut { waiter } => {
                    let (key, deadline) = m
                        .waiters
                        .iter()
                        .find_map(|(k, q)| q.iter().find(|(w, _)| w == waiter).map(|(_, d)| (k.clone(), *d)))
                        .expect("a waiting waiter timed out");
                    assert!(deadline <= m.now_ms, "waiter timed out early");
                    m.waiters.get_mut(&key).expect("key").retain(|(w, _)| w != waiter);
                    m.answer(*waiter);
                }
                PoolEvent::WaiterFailed { waiter } => {
                    let key = m
                        .waiters
                        .iter()
                        .find_map(|(k, q)| q.iter().any(|(w, _)| w == waiter).then(|| k.clone()))
                        .expect("an unknown waiter failed");
                    assert_eq!(
                        m.connections_of(&key),
                        0,
                        "a waiter of {key:?} failed while it has a connection"
                    );
                    m.waiters.get_mut(&key).expect("key").retain(|(w, _)| w != waiter);
                    m.answer(*waiter);
                }
                PoolEvent::CloseIdle { connection } => {
                    let c = *connection;
                    assert_eq!(m.leases_on(c), 0, "closed a busy connection");
                    let key = m.ready.get(&c).expect("closed a connection that is not ready").clone();
                    m.evictions += 1;
                    if m.refusing.remove(&c) {
                        m.ready.remove(&c);
                        continue;
                    }
                    let since = m.idle_since.get(&c).copied().expect("closed a connection that was not idle");
                    let on_time = since + cfg.idle_timeout.as_millis() as u64 <= m.now_ms;
                    if !on_time {
                        // Early only to make room: at the global limit, for
                        // another key's dial that comes right after.
                        assert_eq!(m.live(), cfg.max_connections, "closed idle {c:?} early below the limit");
                        let for_key = match events.get(i + 1) {
                            Some(PoolEvent::Dial { key, .. }) => key,
                            other => panic!("closed idle {c:?} early, then {other:?} instead of a dial"),
                        };
                        assert_ne!(for_key, &key, "closed idle {c:?} early for its own key");
                    }
                    m.ready.remove(&c);
                    m.idle_since.remove(&c);
                }
                PoolEvent::LeaseBroken { lease, connection } => {
                    assert!(!m.ready.contains_key(connection), "broke a lease on a live connection");
                    assert_eq!(
                        m.leases.get(lease).map(|l| l.0),
                        Some(*connection),
                        "broke a lease not on it"
                    );
                    m.end(*lease);
                }
            }
        }
        self.check(&dialled_for);
    }

    fn check(&self, dialled_for: &[WaiterId]) {
        let (pool, cfg, m) = (&self.pool, &self.cfg, &self.m);
        // Limits, and the pool agrees with the model.
        assert!(m.live() <= cfg.max_connections, "over max_connections");
        assert_eq!(pool.connections(), m.live());
        for k in m.dialing.values().chain(m.ready.values()) {
            assert!(m.connections_of(k) <= cfg.max_connections_per_key, "over max_connections_per_key");
        }
        assert!(m.refusing.is_empty(), "a connection refusing every channel was kept");
        for (c, k) in m.ready.iter().chain(m.dialing.iter()) {
            let n = m.leases_on(*c);
            assert!(n <= m.cap(*c, cfg), "{c:?} holds {n} leases over its cap");
            assert_eq!(pool.leases_on(*c), Some(n as u32));
            assert_eq!(pool.key_of(*c), Some(k));
        }
        for (l, (c, _)) in &m.leases {
            assert!(m.ready.contains_key(c), "lease {l:?} outlived its connection {c:?} unreported");
            assert_eq!(pool.lease_connection(*l), Some(*c));
        }
        let stats = pool.stats();
        let waiting: usize = m.waiters.values().map(VecDeque::len).sum();
        assert_eq!(
            (stats.dialing, stats.ready, stats.leases, stats.waiters),
            (m.dialing.len(), m.ready.len(), m.leases.len(), waiting),
            "stats: dialing, ready, leases, waiters"
        );
        assert_eq!(
            (stats.dials, stats.dials_failed, stats.evictions, stats.leases_granted, stats.leases_reused),
            (m.dials, m.dials_failed, m.evictions, m.granted, m.reused),
            "stats: dials, dials_failed, evictions, leases granted, reused"
        );
        // Liveness: nobody waits while something could be done for them.
        let mut waiting_for_room = Vec::new();
        for (k, q) in &m.waiters {
            let Some(&(first, _)) = q.front() else { continue };
            for (c, ck) in &m.ready {
                let room = m.leases_on(*c) < m.cap(*c, cfg);
                assert!(!(ck == k && room), "(a) waiter {first:?} of {k:?} waits while {c:?} has room");
            }
            if !m.wants_dial(k, cfg) {
                continue;
            }
            assert!(
                m.live() >= cfg.max_connections,
                "(b) {k:?} needs a connection ({} waiting, {} dialling) and the limits allow one",
                q.len(),
                m.dialing_of(k)
            );
            if let Some(c) = m.idle_of_another_key(k) {
                panic!("(c) {k:?} needs a connection at the global limit while {c:?} of another key is idle");
            }
            waiting_for_room.push(m.turn(k, cfg).expect("wants a dial"));
        }
        // FIFO across keys: room went to older turns than any still waiting.
        for turn in &waiting_for_room {
            for done in dialled_for {
                assert!(turn > done, "waiter {turn:?} still waits for room given to younger {done:?}");
            }
        }
        // Timers: the pool wakes for the first waiter deadline and idle expiry.
        let idle = cfg.idle_timeout.as_millis() as u64;
        let next_waiter = m.waiters.values().flat_map(|q| q.iter().map(|(_, d)| *d)).min();
        let next_idle = m.idle_since.values().map(|s| s + idle).min();
        if let Some(first) = next_waiter.into_iter().chain(next_idle).min() {
            let t = pool.poll_timeout().expect("a deadline while waiters wait or connections idle");
            assert!(
                t <= Timestamp::from_millis(first),
                "poll_timeout {t:?} after the next deadline at {first} ms"
            );
        }
    }
}

/// The `i`-th (modulo) of a non-empty sequence.
fn nth<'a, T: Copy + 'a>(items: impl ExactSizeIterator<Item = &'a T>, i: usize) -> Option<T> {
    let n = items.len();
    if n == 0 {
        return None;
    }
    let mut items = items;
    items.nth(i % n).copied()
}

/// Random operation sequences on a [`Pool`] ([`PoolChecker`] checks every
/// step): a config byte (bits 0–1 `max_connections` − 1, 2–3
/// `max_connections_per_key` − 1, 4–5 `max_channels_per_connection` − 1,
/// bit 6 acquire timeout 0 instead of 20 s), then (op, arg) pairs, op
/// modulo 9: 0–1 acquire for key `arg`, 2 release, 3 connected, 4 failed,
/// 5 lost (`arg` picks which), 6–7 time passes (`arg` s and one more byte
/// of ms), 8 (and 2–5 when there is nothing to pick) stale ids.
pub fn pool_ops(data: &[u8]) {
    let mut b = Bytes::new(data);
    let c = b.u8();
    let cfg = PoolConfig {
        max_connections: usize::from(c & 3) + 1,
        max_connections_per_key: usize::from((c >> 2) & 3) + 1,
        max_channels_per_connection: u32::from((c >> 4) & 3) + 1,
        idle_timeout: Duration::from_secs(60),
        acquire_timeout: Duration::from_secs(if c & 0x40 != 0 { 0 } else { 20 }),
    };
    let mut p = PoolChecker::new(cfg);
    while !b.is_empty() {
        let o = b.u8();
        let arg = b.u8();
        let i = usize::from(arg);
        let done = match o % 9 {
            0 | 1 => {
                p.acquire(pool_key(arg));
                true
            }
            2 => p.release(i),
            3 => p.connected(i),
            4 => p.failed(i),
            5 => p.lost(i),
            6 | 7 => {
                p.advance(u64::from(arg) * 1000 + u64::from(b.u8()));
                true
            }
            _ => false,
        };
        if !done {
            p.stale(arg);
        }
    }
}

// --------------------------------------------------------- reconnect_ops

/// The backoff curve computed from the config alone (not with
/// `Reconnect::base_delay`): `min(max_delay, initial_delay ×
/// multiplier^(n-1))` after failure `n`, a multiplier of 0 counting as 1.
pub fn backoff_curve(config: &ReconnectConfig, n: u32) -> Duration {
    let max = config.max_delay.as_nanos();
    let multiplier = u128::from(config.multiplier.max(1));
    let mut nanos = config.initial_delay.as_nanos();
    for _ in 1..n {
        if nanos >= max || multiplier == 1 {
            break;
        }
        nanos *= multiplier;
    }
    let nanos = nanos.min(max);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// The range a jittered delay after failure `n` must fall in (whole
/// microseconds, as the machine draws them).
pub fn delay_bounds(config: &ReconnectConfig, n: u32) -> (Duration, Duration) {
    let base = u64::try_from(backoff_curve(config, n).as_micros()).unwrap_or(u64::MAX);
    let lo = match config.jitter {
        Jitter::None => base,
        Jitter::Full => 0,
        Jitter::Equal => base / 2,
    };
    (Duration::from_micros(lo), Duration::from_micros(base))
}

/// What [`ReconnectChecker`] expects of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Dialing,
    Connected { since: Timestamp, stable: bool },
    Waiting { until: Timestamp },
    Done,
}

/// A [`Reconnect`] driven by adapter reports, each answer checked against
/// what the config alone says it must be; any difference panics.
/// `reconnect_ops` and the tests in `core/tests/reconnect_pool.rs` drive it.
///
/// After every step:
/// - every delay is within the jitter bounds of [`backoff_curve`] after the
///   failure it follows (exactly the curve without jitter);
/// - a reason the caller says a retry cannot fix, or a dial failure that
///   will repeat, gives up at once: `GiveUp` and nothing else;
/// - failure `max_retries + 1` gives up with `RetriesExhausted`, never earlier;
/// - `Dial` only when its wait is over, numbered one past the dials made;
///   `GiveUp { attempts }` is the dials made since the count last reset;
/// - a connection up for `stable_period` resets the counts at that moment
///   (`failures()` and `attempts()` are 0 from then), and the next failure
///   waits the first delay of the curve again;
/// - `poll_timeout` is the scheduled dial, or the moment the connection
///   becomes stable, or nothing; `is_done` ⇔ `GiveUp`; nothing after it.
#[derive(Debug)]
pub struct ReconnectChecker {
    r: Reconnect,
    config: ReconnectConfig,
    now: Timestamp,
    state: Expect,
    failures: u32,
    dials: u32,
    /// (failure number, delay) of every delay drawn.
    delays: Vec<(u32, Duration)>,
}

impl ReconnectChecker {
    /// A machine with `config` and `seed`, its first dial under way.
    pub fn new(config: ReconnectConfig, seed: crate::rng::Seed) -> Self {
        let r = Reconnect::new(config.clone(), seed);
        let p = ReconnectChecker {
            r,
            config,
            now: Timestamp::ZERO,
            state: Expect::Dialing,
            failures: 0,
            dials: 1,
            delays: Vec::new(),
        };
        // The curve, as the machine computes it, is the curve.
        for n in 1..40 {
            assert_eq!(p.r.base_delay(n), backoff_curve(&p.config, n), "base delay after failure {n}");
        }
        p.check(&[]);
        p
    }

    /// Every delay drawn so far, with the failure it followed.
    pub fn delays(&self) -> &[(u32, Duration)] {
        &self.delays
    }

    /// Whether it gave up.
    pub fn is_done(&self) -> bool {
        self.state == Expect::Done
    }

    /// The machine under test.
    pub fn machine(&self) -> &Reconnect {
        &self.r
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn actions(&mut self) -> Vec<ReconnectAction> {
        std::iter::from_fn(|| self.r.poll_action()).collect()
    }

    fn reset_if_stable(&mut self) {
        if let Expect::Connected { since, stable: false } = self.state
            && self.now.saturating_duration_since(since) >= self.config.stable_period
        {
            self.state = Expect::Connected { since, stable: true };
            self.failures = 0;
            self.dials = 0;
        }
    }

    /// The adapter reports the connection up.
    pub fn connected(&mut self) {
        self.r.connected(self.now);
        if self.state != Expect::Done {
            self.state = Expect::Connected { since: self.now, stable: false };
            self.reset_if_stable();
        }
        let actions = self.actions();
        self.check(&actions);
    }

    /// The adapter reports the connection lost for `reason`, which the
    /// caller knows a retry can (`retryable`) or cannot fix.
    pub fn lost(&mut self, reason: &CloseReason, retryable: bool) {
        self.r.lost(self.now, reason);
        let actions = self.actions();
        if self.state == Expect::Done {
            return self.check(&actions);
        }
        self.reset_if_stable();
        if !retryable {
            let want = ReconnectAction::GiveUp {
                reason: GiveUpReason::NotRetryable(reason.clone()),
                attempts: self.dials,
            };
            assert_eq!(actions, [want], "{reason:?} cannot be fixed by a retry: give up at once");
            self.state = Expect::Done;
            return self.check(&[]);
        }
        self.failure(&actions, &reason.to_string());
    }

    /// The adapter reports its dial failed; `retryable` false if it will repeat.
    pub fn dial_failed(&mut self, retryable: bool, error: &str) {
        self.r.dial_failed(self.now, retryable, error);
        let actions = self.actions();
        if self.state == Expect::Done {
            return self.check(&actions);
        }
        if !retryable {
            let want = ReconnectAction::GiveUp {
                reason: GiveUpReason::DialFailed(error.into()),
                attempts: self.dials,
            };
            assert_eq!(actions, [want], "a dial failure that will repeat: give up at once");
            self.state = Expect::Done;
            return self.check(&[]);
        }
        self.failure(&actions, error);
    }

    fn failure(&mut self, actions: &[ReconnectAction], what: &str) {
        self.failures += 1;
        let n = self.failures;
        if self.config.max_retries.is_some_and(|max| n > max) {
            let want = ReconnectAction::GiveUp {
                reason: GiveUpReason::RetriesExhausted(what.into()),
                attempts: self.dials,
            };
            assert_eq!(actions, [want], "failure {n} with max_retries {:?}", self.config.max_retries);
            self.state = Expect::Done;
            return self.check(&[]);
        }
        let Some(&ReconnectAction::Scheduled { attempt, delay }) = actions.first() else {
            panic!("failure {n}: no retry scheduled: {actions:?}")
        };
        assert_eq!(attempt, self.dials + 1, "the scheduled dial's number");
        let (lo, hi) = delay_bounds(&self.config, n);
        assert!(
            delay >= lo && delay <= hi,
            "delay after failure {n}: {delay:?} outside [{lo:?}, {hi:?}] ({:?})",
            self.config
        );
        self.delays.push((n, delay));
        if delay.is_zero() {
            // Due at once: the dial follows in the same breath.
            self.dials += 1;
            assert_eq!(actions[1..], [ReconnectAction::Dial { attempt: self.dials }]);
            self.state = Expect::Dialing;
        } else {
            assert_eq!(actions.len(), 1, "{actions:?}");
            self.state = Expect::Waiting { until: self.now + delay };
        }
        self.check(&[]);
    }

    /// The application stops it.
    pub fn stop(&mut self) {
        self.r.stop();
        let actions = self.actions();
        if self.state == Expect::Done {
            return self.check(&actions);
        }
        assert_eq!(
            actions,
            [ReconnectAction::GiveUp { reason: GiveUpReason::Stopped, attempts: self.dials }]
        );
        self.state = Expect::Done;
        self.check(&[]);
    }

    /// Time passes by `d`, then `handle_timeout` (as an adapter that slept
    /// past its deadline would call it).
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.r.handle_timeout(self.now);
        let actions = self.actions();
        match self.state {
            Expect::Waiting { until } if until <= self.now => {
                self.dials += 1;
                assert_eq!(actions, [ReconnectAction::Dial { attempt: self.dials }], "the due dial");
                self.state = Expect::Dialing;
                return self.check(&[]);
            }
            Expect::Connected { .. } => self.reset_if_stable(),
            _ => {}
        }
        self.check(&actions);
    }

    /// Actions left over were not expected (none at all after giving up);
    /// then the machine's counts and deadline must be the expected ones.
    fn check(&self, unexpected: &[ReconnectAction]) {
        assert!(unexpected.is_empty(), "unexpected actions in {:?}: {unexpected:?}", self.state);
        let r = &self.r;
        assert_eq!(r.is_done(), self.state == Expect::Done, "is_done");
        assert_eq!((r.failures(), r.attempts()), (self.failures, self.dials), "failures and attempts");
        let want = match self.state {
            Expect::Waiting { until } => Some(until),
            Expect::Connected { since, stable: false } => Some(since + self.config.stable_period),
            _ => None,
        };
        assert_eq!(r.poll_timeout(), want, "poll_timeout in {:?}", self.state);
    }
}

/// Random adapter reports to a [`Reconnect`] with a random config
/// ([`ReconnectChecker`] checks every step): a config byte (bit 0: no
/// retry limit, bits 1–7 modulo 3: no, full, equal jitter; the byte is the
/// seed too), initial delay (u16 ms), multiplier (byte modulo 5), max
/// delay (u16 × 16 ms), max retries (byte modulo 8, when limited), stable
/// period (u16 × 4 ms); then ops, modulo 6: connected, lost (bits 3–7 pick
/// the reason), dial failed (bit 7: will repeat), stop, time passes (u16 × 4 ms).
pub fn reconnect_ops(data: &[u8]) {
    let mut b = Bytes::new(data);
    let c = b.u8();
    let config = ReconnectConfig {
        initial_delay: Duration::from_millis(u64::from(b.u16())),
        multiplier: u32::from(b.u8() % 5),
        max_delay: Duration::from_millis(u64::from(b.u16()) * 16),
        max_retries: if c & 1 == 0 { Some(u32::from(b.u8() % 8)) } else { None },
        jitter: [Jitter::None, Jitter::Full, Jitter::Equal][usize::from((c >> 1) % 3)],
        stable_period: Duration::from_millis(u64::from(b.u16()) * 4),
    };
    let mut p = ReconnectChecker::new(config, [c; 32]);
    // Which a retry can fix, by our reading of the issue (peer and network
    // trouble yes; host key, our own close no), not by `is_retryable`.
    let reasons = [
        (CloseReason::Eof, true),
        (CloseReason::KeepaliveTimeout { unanswered: 3 }, true),
        (CloseReason::KexTimeout, true),
        (CloseReason::HostKeyRejected, false),
        (CloseReason::Error(Error::BadMac { seq: 1 }), true),
        (
            CloseReason::PeerDisconnect { code: DisconnectCode::BY_APPLICATION, description: String::new() },
            true,
        ),
        (CloseReason::Local { code: DisconnectCode::BY_APPLICATION, description: String::new() }, false),
    ];
    while !b.is_empty() {
        let o = b.u8();
        match o % 6 {
            0 => p.connected(),
            1 => {
                let (reason, retryable) = &reasons[usize::from(o >> 3) % reasons.len()];
                p.lost(reason, *retryable);
            }
            2 => p.dial_failed(o & 0x80 == 0, "connection refused"),
            3 => p.stop(),
            _ => p.advance(Duration::from_millis(u64::from(b.u16()) * 4)),
        }
    }
}

// ------------------------------------------------------------ recordings

/// A client exactly as `client_input` builds it (config `flags`,
/// [`CLIENT_SEED`], the same application), for recording what a real
/// server sends: replayed through `client_input`, the recording passes the
/// key exchange (the server's signature covers our deterministic KEXINIT
/// and ephemeral key) and decrypts.
#[derive(Debug)]
pub struct RecordingClient {
    side: Side,
    flags: Flags,
    /// Chunks received, in order.
    pub received: Vec<Vec<u8>>,
}

impl RecordingClient {
    /// A fresh client; its version line and KEXINIT are in `output()`.
    pub fn new(flags: impl Into<Flags>) -> Self {
        let flags = flags.into();
        let c = fuzz_client_config(flags);
        let w = Watch::new(c.max_channels, &c.transport);
        let mut conn = Connection::client(c, Timestamp::ZERO, CLIENT_SEED).expect("valid config");
        conn.log_packets(true);
        let mut side = Side { conn, app: App::new(Role::Client, flags.base), w };
        side.drain();
        RecordingClient { side, flags, received: Vec::new() }
    }

    /// Bytes from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.received.push(bytes.to_vec());
        self.side.feed(Timestamp::ZERO, bytes, 0);
        self.side.w.check(&self.side.conn);
    }

    /// What to write to the server.
    pub fn output(&mut self) -> Vec<u8> {
        self.side.take_output()
    }

    /// Whether the client closed.
    pub fn is_closed(&self) -> bool {
        self.side.conn.is_closed()
    }

    /// Whether the session the client ran has closed.
    pub fn session_done(&self) -> bool {
        self.side.app.channels_closed > 0
    }

    /// Whether the client logged in.
    pub fn authenticated(&self) -> bool {
        self.side.app.authenticated
    }

    /// Says goodbye (queues DISCONNECT).
    pub fn disconnect(&mut self) {
        let _ = self.side.conn.disconnect(DisconnectCode::BY_APPLICATION, "done");
        self.side.drain();
    }

    /// The recording as a `client_input` script.
    pub fn script(&self) -> Vec<u8> {
        let mut s = Script::new(self.flags);
        for chunk in &self.received {
            s.data(chunk);
        }
        s.build()
    }

    /// Plaintext payloads received so far (and sent, discarded).
    pub fn received_payloads(&mut self) -> Vec<Vec<u8>> {
        self.side.conn.take_packet_log().1
    }
}

/// What an in-memory session between the fuzz client and fuzz server
/// (config `flags`) exchanged.
#[derive(Debug, Default)]
pub struct Recording {
    /// Chunks the client received, in order: a `client_input` script.
    pub to_client: Vec<Vec<u8>>,
    /// Chunks the server received: a `server_input` script.
    pub to_server: Vec<Vec<u8>>,
    /// Plaintext payloads the client sent.
    pub client_sent: Vec<Vec<u8>>,
    /// Plaintext payloads the server sent.
    pub server_sent: Vec<Vec<u8>>,
    /// What the client's first key exchange settled on.
    pub negotiated: Option<crate::transport::Negotiated>,
}

/// Runs a whole session (kex, login, `echo hello`, close) between the
/// fuzz client and server, exactly as the single-connection targets build
/// them, checking the invariants on both sides as it goes.
pub fn record_session(flags: impl Into<Flags>) -> Recording {
    let flags = flags.into();
    let c = fuzz_client_config(flags);
    let s = fuzz_server_config(flags);
    let mut client = Side {
        w: Watch::new(c.max_channels, &c.transport),
        conn: Connection::client(c, Timestamp::ZERO, CLIENT_SEED).expect("valid config"),
        app: App::new(Role::Client, flags.base),
    };
    let mut server = Side {
        w: Watch::new(s.max_channels, &s.transport),
        conn: Connection::server(s, Timestamp::ZERO, SERVER_SEED).expect("valid config"),
        app: App::new(Role::Server, flags.base),
    };
    client.conn.log_packets(true);
    server.conn.log_packets(true);
    let mut rec = Recording::default();
    for _ in 0..64 {
        let c2s = client.take_output();
        if !c2s.is_empty() {
            rec.to_server.push(c2s.clone());
            server.feed(Timestamp::ZERO, &c2s, 0);
        }
        let s2c = server.take_output();
        if !s2c.is_empty() {
            rec.to_client.push(s2c.clone());
            client.feed(Timestamp::ZERO, &s2c, 0);
        }
        client.w.check(&client.conn);
        server.w.check(&server.conn);
        if c2s.is_empty() && s2c.is_empty() && client.conn.pending_transmit().is_empty() {
            break;
        }
        if client.app.channels_closed > 0
            && !client.conn.is_closed()
            && client.conn.pending_transmit().is_empty()
        {
            let _ = client.conn.disconnect(DisconnectCode::BY_APPLICATION, "done");
            client.drain();
        }
    }
    rec.client_sent = client.conn.take_packet_log().0;
    rec.server_sent = server.conn.take_packet_log().0;
    rec.negotiated = client.conn.negotiated().cloned();
    rec
}

/// A payload: message number and fields already encoded.
pub fn payload(n: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![n];
    for f in fields {
        p.extend_from_slice(f);
    }
    p
}

/// An SSH `string`.
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 4);
    v.put_string(s);
    v
}

/// A `uint32`.
pub fn u32be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

// ------------------------------------- codec access for property tests

/// Encodes a channel request's type-specific data (as CHANNEL_REQUEST carries it).
#[doc(hidden)]
pub fn encode_channel_request(req: &ChannelRequest) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode_data(&mut out);
    out
}

/// Decodes a channel request of type `name` from its data.
#[doc(hidden)]
pub fn decode_channel_request(name: &str, data: &[u8]) -> Result<ChannelRequest, crate::wire::DecodeError> {
    ChannelRequest::decode(name, &mut Reader::new(data))
}

/// Encodes a channel kind's type-specific data (as CHANNEL_OPEN carries it).
#[doc(hidden)]
pub fn encode_channel_kind(kind: &ChannelKind) -> Vec<u8> {
    let mut out = Vec::new();
    kind.encode_data(&mut out);
    out
}

/// Decodes a channel kind of type `name` from its data.
#[doc(hidden)]
pub fn decode_channel_kind(name: &str, data: &[u8]) -> Result<ChannelKind, crate::wire::DecodeError> {
    ChannelKind::decode(name, &mut Reader::new(data))
}

/// Encodes a global request's data (as GLOBAL_REQUEST carries it).
#[doc(hidden)]
pub fn encode_global_request(req: &GlobalRequest) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode_data(&mut out);
    out
}

/// Decodes the data of global request `name` as a server reads it.
#[doc(hidden)]
pub fn decode_global_request(name: &str, data: &[u8]) -> Result<GlobalRequest, crate::wire::DecodeError> {
    GlobalRequest::decode(name, data)
}

/// A KEXINIT's fields: cookie, the eight negotiated name-lists (kex, host
/// key, ciphers ×2, MACs ×2, compression ×2), first_kex_packet_follows.
pub type KexInitFields = ([u8; 16], [Vec<String>; 8], bool);

/// Encodes a KEXINIT payload from its fields.
#[doc(hidden)]
pub fn encode_kexinit(fields: &KexInitFields) -> Vec<u8> {
    let (cookie, l, follows) = fields;
    KexInit {
        cookie: *cookie,
        kex: l[0].clone(),
        host_key: l[1].clone(),
        cipher_c2s: l[2].clone(),
        cipher_s2c: l[3].clone(),
        mac_c2s: l[4].clone(),
        mac_s2c: l[5].clone(),
        comp_c2s: l[6].clone(),
        comp_s2c: l[7].clone(),
        first_kex_follows: *follows,
    }
    .to_payload()
}

/// Decodes a KEXINIT payload into its fields.
#[doc(hidden)]
pub fn decode_kexinit(payload: &[u8]) -> Result<KexInitFields, crate::wire::DecodeError> {
    let k = KexInit::decode(payload)?;
    Ok((
        k.cookie,
        [k.kex, k.host_key, k.cipher_c2s, k.cipher_s2c, k.mac_c2s, k.mac_s2c, k.comp_c2s, k.comp_s2c],
        k.first_kex_follows,
    ))
}
