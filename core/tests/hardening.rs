//! Hostile-input hardening beyond the fuzz corpus:
//! - property tests of the codecs (decode→encode→decode equality) and of
//!   the connection under arbitrary fragmentation of recorded sessions;
//! - the memory a peer can make us spend by sending want-reply requests,
//!   channel opens or pings in a loop while never reading our output.

use proptest::prelude::*;
use sansh::connection::Buffered;
use sansh::testing::fuzz::Flags;
use sansh::testing::fuzz::{self, Script, payload, string, u32be};
use sansh::testing::{LinkConfig, Pair, accept_policy, host_key};
use sansh::wire::msg::{self, Message};
use sansh::wire::{DecodeError, Reader, Writer};
use sansh::{
    ChannelKind, ChannelOptions, ChannelRequest, ClientConfig, CloseReason, Connection, Credential,
    DisconnectCode, Error, Event, GlobalRequest, HostKeyAlgorithm, Pty, Role, ServerConfig, Timestamp,
};

// ------------------------------------------------------------ codecs

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9@._+-]{1,24}"
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn channel_request() -> impl Strategy<Value = ChannelRequest> {
    prop_oneof![
        (
            text(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec((1u8..160, any::<u32>()), 0..8)
        )
            .prop_map(|(term, cols, rows, width_px, height_px, modes)| ChannelRequest::Pty(Pty {
                term,
                cols,
                rows,
                width_px,
                height_px,
                modes
            })),
        Just(ChannelRequest::Shell),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|command| ChannelRequest::Exec { command }),
        text().prop_map(|name| ChannelRequest::Subsystem { name }),
        (text(), text()).prop_map(|(name, value)| ChannelRequest::Env { name, value }),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(cols, rows, width_px, height_px)| {
                ChannelRequest::WindowChange { cols, rows, width_px, height_px }
            }
        ),
        text().prop_map(|name| ChannelRequest::Signal { name }),
        any::<u32>().prop_map(|status| ChannelRequest::ExitStatus { status }),
        (text(), any::<bool>(), text()).prop_map(|(signal, core_dumped, message)| {
            ChannelRequest::ExitSignal { signal, core_dumped, message }
        }),
        any::<bool>().prop_map(|client_can_do| ChannelRequest::XonXoff { client_can_do }),
        (name().prop_map(|n| format!("{n}@x")), prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(name, data)| ChannelRequest::Other { name, data }),
    ]
}

fn channel_kind() -> impl Strategy<Value = ChannelKind> {
    prop_oneof![
        Just(ChannelKind::Session),
        (text(), any::<u32>(), text(), any::<u32>()).prop_map(
            |(host, port, originator_host, originator_port)| {
                ChannelKind::DirectTcpip { host, port, originator_host, originator_port }
            }
        ),
        (text(), any::<u32>(), text(), any::<u32>()).prop_map(
            |(connected_host, connected_port, originator_host, originator_port)| {
                ChannelKind::ForwardedTcpip {
                    connected_host,
                    connected_port,
                    originator_host,
                    originator_port,
                }
            }
        ),
        (name().prop_map(|n| format!("{n}@x")), prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(name, data)| ChannelKind::Other { name, data }),
    ]
}

fn name_list() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(name(), 0..6)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

/// A name none of the typed codecs knows.
fn other_name() -> impl Strategy<Value = String> {
    name().prop_map(|n| format!("{n}@x"))
}

/// What a message type does with a byte appended after its last field.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tail {
    /// Refused (`TrailingBytes`); every strict prefix fails too.
    Refused,
    /// Ignored: the same value decodes.
    Ignored,
    /// Taken into its last field (raw request-specific data).
    Raw,
}

/// `$value` (a `msg::$ty`) encodes to a payload that decodes to an equal
/// value and encodes the same again; the payload starts with the type's
/// number, another number is refused, and the tail rule holds.
macro_rules! assert_round_trip {
    ($ty:ident, $tail:expr, $value:expr) => {{
        let v = $value;
        let encoded = v.to_payload();
        let name = stringify!($ty);
        prop_assert_eq!(msg::$ty::decode(&encoded), Ok(v.clone()), "{} round trip", name);
        prop_assert_eq!(msg::$ty::decode(&encoded).unwrap().to_payload(), encoded.clone(), "{} stable", name);
        let mut wrong = encoded.clone();
        wrong[0] ^= 0x80;
        prop_assert_eq!(msg::$ty::decode(&wrong), Err(DecodeError::Invalid("message number")), "{}", name);
        let mut longer = encoded.clone();
        longer.push(0);
        match $tail {
            Tail::Refused => {
                prop_assert_eq!(msg::$ty::decode(&longer), Err(DecodeError::TrailingBytes(1)), "{}", name);
                for cut in 0..encoded.len() {
                    prop_assert!(msg::$ty::decode(&encoded[..cut]).is_err(), "{} cut at {}", name, cut);
                }
            }
            Tail::Ignored => prop_assert_eq!(msg::$ty::decode(&longer), Ok(v.clone()), "{} tail", name),
            Tail::Raw => {}
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn channel_requests_round_trip(req in channel_request()) {
        let data = fuzz::encode_channel_request(&req);
        prop_assert_eq!(fuzz::decode_channel_request(req.name(), &data), Ok(req.clone()));
        // Decoding what any bytes give and re-encoding is stable too.
        let again = fuzz::decode_channel_request(req.name(), &data).unwrap();
        prop_assert_eq!(fuzz::encode_channel_request(&again), data);
    }

    #[test]
    fn channel_kinds_round_trip(kind in channel_kind()) {
        let data = fuzz::encode_channel_kind(&kind);
        prop_assert_eq!(fuzz::decode_channel_kind(kind.name(), &data), Ok(kind));
    }

    #[test]
    fn kexinit_round_trips(
        cookie in any::<[u8; 16]>(),
        lists in prop::array::uniform8(name_list()),
        follows in any::<bool>(),
    ) {
        let fields = (cookie, lists, follows);
        let encoded = fuzz::encode_kexinit(&fields);
        prop_assert_eq!(fuzz::decode_kexinit(&encoded), Ok(fields));
        // One byte short never decodes.
        prop_assert!(fuzz::decode_kexinit(&encoded[..encoded.len() - 1]).is_err());
    }

    #[test]
    fn arbitrary_bytes_decode_and_reencode_stably(name_idx in 0usize..12, data in prop::collection::vec(any::<u8>(), 0..96)) {
        let names = ["pty-req", "shell", "exec", "subsystem", "env", "window-change", "signal",
                     "exit-status", "exit-signal", "xon-xoff", "x@y", "session"];
        if let Ok(req) = fuzz::decode_channel_request(names[name_idx], &data) {
            let enc = fuzz::encode_channel_request(&req);
            prop_assert_eq!(fuzz::decode_channel_request(names[name_idx], &enc), Ok(req));
        }
        if let Ok((cookie, lists, follows)) = fuzz::decode_kexinit(&data) {
            let enc = fuzz::encode_kexinit(&(cookie, lists.clone(), follows));
            prop_assert_eq!(fuzz::decode_kexinit(&enc), Ok((cookie, lists, follows)));
        }
    }

    #[test]
    fn transport_messages_round_trip(
        n in any::<u32>(), flag in any::<bool>(), a in bytes(), b in bytes(), c in bytes(), s in text(),
        sig_algs in name_list(), others in prop::collection::vec((other_name(), bytes()), 0..4),
    ) {
        assert_round_trip!(Disconnect, Tail::Ignored, msg::Disconnect { code: n, description: &a, language: &b });
        assert_round_trip!(Ignore, Tail::Ignored, msg::Ignore { data: &a });
        assert_round_trip!(Unimplemented, Tail::Ignored, msg::Unimplemented { seq: n });
        let debug = msg::DebugMessage { always_display: flag, message: &a, language: &b };
        assert_round_trip!(DebugMessage, Tail::Ignored, debug);
        assert_round_trip!(ServiceRequest, Tail::Ignored, msg::ServiceRequest { service: &s });
        assert_round_trip!(ServiceAccept, Tail::Ignored, msg::ServiceAccept { service: &s });
        let list = sig_algs.join(",");
        let mut extensions = vec![msg::Extension::ServerSigAlgs(&list)];
        extensions.extend(others.iter().map(|(name, value)| msg::Extension::Other { name: name.as_bytes(), value }));
        extensions.rotate_left(usize::from(flag));
        assert_round_trip!(ExtInfo, Tail::Ignored, msg::ExtInfo { extensions });
        assert_round_trip!(NewKeys, Tail::Ignored, msg::NewKeys);
        assert_round_trip!(KexEcdhInit, Tail::Refused, msg::KexEcdhInit { client_public: &a });
        let reply = msg::KexEcdhReply { host_key: &a, server_public: &b, signature: &c };
        assert_round_trip!(KexEcdhReply, Tail::Refused, reply);
        assert_round_trip!(Ping, Tail::Ignored, msg::Ping { data: &a });
        assert_round_trip!(Pong, Tail::Ignored, msg::Pong { data: &a });
        // The in-place IGNORE encoder writes the same bytes.
        let mut filled = Vec::new();
        msg::Ignore::encode_filled(&mut filled, a.len(), |d| d.copy_from_slice(&a));
        prop_assert_eq!(filled, msg::Ignore { data: &a }.to_payload());
    }

    #[test]
    fn auth_messages_round_trip(
        user in text(), service in text(), password in text(), new_password in prop::option::of(text()),
        alg in name(), key in bytes(), sig in prop::option::of(bytes()), a in bytes(), b in bytes(),
        method in other_name(), methods in name_list(), flag in any::<bool>(),
        prompts in prop::collection::vec((bytes(), any::<bool>()), 0..8),
        responses in prop::collection::vec(text(), 0..8),
    ) {
        let requests = [
            (msg::AuthRequestMethod::None, Tail::Refused),
            (msg::AuthRequestMethod::Password { password: &password, new_password: new_password.as_deref() }, Tail::Refused),
            (msg::AuthRequestMethod::PublicKey { algorithm: &alg, key: &key, signature: sig.as_deref() }, Tail::Refused),
            (msg::AuthRequestMethod::KeyboardInteractive { language: &a, submethods: &b }, Tail::Refused),
            (msg::AuthRequestMethod::Other { name: &method, fields: &a }, Tail::Raw),
        ];
        for (method, tail) in requests {
            let request = msg::UserauthRequest { user: &user, service: &service, method };
            // The server's two steps give the same request.
            let encoded = request.to_payload();
            let head = msg::UserauthRequest::decode_head(&encoded).unwrap();
            prop_assert_eq!((head.user, head.service, head.method), (user.as_str(), service.as_str(), request.method.name()));
            prop_assert_eq!(head.finish(), Ok(request.method.clone()));
            assert_round_trip!(UserauthRequest, tail, request);
        }
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        assert_round_trip!(UserauthFailure, Tail::Refused, msg::UserauthFailure { methods, partial_success: flag });
        assert_round_trip!(UserauthSuccess, Tail::Ignored, msg::UserauthSuccess);
        assert_round_trip!(UserauthBanner, Tail::Refused, msg::UserauthBanner { message: &a, language: &b });
        assert_round_trip!(UserauthPkOk, Tail::Refused, msg::UserauthPkOk { algorithm: &alg, key: &key });
        let change = msg::UserauthPasswdChangereq { prompt: &a, language: &b };
        assert_round_trip!(UserauthPasswdChangereq, Tail::Refused, change);
        let prompts: Vec<msg::InfoPrompt<'_>> =
            prompts.iter().map(|(p, echo)| msg::InfoPrompt { prompt: p, echo: *echo }).collect();
        let info = msg::UserauthInfoRequest { name: &a, instruction: &b, language: &key, prompts };
        let encoded = info.to_payload();
        prop_assert_eq!(msg::UserauthInfoRequest::decode_head(&encoded).unwrap().count as usize, info.prompts.len());
        assert_round_trip!(UserauthInfoRequest, Tail::Refused, info);
        let responses: Vec<&str> = responses.iter().map(String::as_str).collect();
        let response = msg::UserauthInfoResponse { responses };
        let encoded = response.to_payload();
        prop_assert_eq!(msg::UserauthInfoResponse::decode_head(&encoded).unwrap().count as usize, response.responses.len());
        assert_round_trip!(UserauthInfoResponse, Tail::Refused, response);
    }

    #[test]
    fn connection_messages_round_trip(
        ids in any::<[u32; 4]>(), flag in any::<bool>(), a in bytes(), s in text(),
        kind in channel_kind(), request in channel_request(), address in text(), name in other_name(),
    ) {
        let [x, y, z, w] = ids;
        assert_round_trip!(GlobalRequest, Tail::Raw, msg::GlobalRequest { name: &s, want_reply: flag, data: &a });
        assert_round_trip!(RequestSuccess, Tail::Raw, msg::RequestSuccess { data: &a });
        assert_round_trip!(RequestFailure, Tail::Raw, msg::RequestFailure { data: &a });
        let tail = if matches!(kind, ChannelKind::Other { .. }) { Tail::Raw } else { Tail::Ignored };
        let open = msg::ChannelOpen { kind: std::borrow::Cow::Borrowed(&kind), sender: x, window: y, max_packet: z };
        assert_round_trip!(ChannelOpen, tail, open);
        let confirm = msg::ChannelOpenConfirmation { recipient: x, sender: y, window: z, max_packet: w };
        assert_round_trip!(ChannelOpenConfirmation, Tail::Ignored, confirm);
        let failure = msg::ChannelOpenFailure { recipient: x, reason: y, description: s.as_bytes(), language: &a };
        assert_round_trip!(ChannelOpenFailure, Tail::Ignored, failure);
        assert_round_trip!(ChannelWindowAdjust, Tail::Ignored, msg::ChannelWindowAdjust { recipient: x, bytes_to_add: y });
        assert_round_trip!(ChannelData, Tail::Ignored, msg::ChannelData { recipient: x, data: &a });
        assert_round_trip!(ChannelExtendedData, Tail::Ignored, msg::ChannelExtendedData { recipient: x, code: y, data: &a });
        assert_round_trip!(ChannelEof, Tail::Ignored, msg::ChannelEof { recipient: x });
        assert_round_trip!(ChannelClose, Tail::Ignored, msg::ChannelClose { recipient: x });
        assert_round_trip!(ChannelSuccess, Tail::Ignored, msg::ChannelSuccess { recipient: x });
        assert_round_trip!(ChannelFailure, Tail::Ignored, msg::ChannelFailure { recipient: x });
        let tail = if matches!(request, ChannelRequest::Other { .. }) { Tail::Raw } else { Tail::Ignored };
        let req = msg::ChannelRequest { recipient: x, want_reply: flag, request: std::borrow::Cow::Borrowed(&request) };
        assert_round_trip!(ChannelRequest, tail, req);
        // The typed data of global requests, as a server reads it.
        for g in [
            GlobalRequest::TcpipForward { address: address.clone(), port: x },
            GlobalRequest::CancelTcpipForward { address: address.clone(), port: y },
            GlobalRequest::Other { name: name.clone(), data: a.clone() },
        ] {
            let data = fuzz::encode_global_request(&g);
            prop_assert_eq!(fuzz::decode_global_request(g.name(), &data), Ok(g.clone()));
        }
    }

    #[test]
    fn reader_writer_primitives_round_trip(
        a in any::<u8>(), b in any::<bool>(), c in any::<u32>(),
        s in prop::collection::vec(any::<u8>(), 0..64), t in text(), l in name_list(),
    ) {
        let mut out = Vec::new();
        out.put_u8(a);
        out.put_bool(b);
        out.put_u32(c);
        out.put_string(&s);
        out.put_str(&t);
        out.put_name_list(&l);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.u8("a").unwrap(), a);
        prop_assert_eq!(r.bool("b").unwrap(), b);
        prop_assert_eq!(r.u32("c").unwrap(), c);
        prop_assert_eq!(r.string("s").unwrap(), s.as_slice());
        prop_assert_eq!(r.utf8("t").unwrap(), t.as_str());
        prop_assert_eq!(r.name_list("l").unwrap(), l.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(r.finish().is_ok());
        // Every strict prefix fails somewhere, never panics.
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let ok = r.u8("a").is_ok() && r.bool("b").is_ok() && r.u32("c").is_ok() && r.string("s").is_ok()
                && r.utf8("t").is_ok() && r.name_list("l").is_ok();
            prop_assert!(!ok || r.finish().is_ok() && cut == out.len());
        }
    }
}

// ------------------------------------------- fragmentation of sessions

/// Re-cuts a recorded stream at `cuts` (sorted offsets, modulo its length).
fn refragment(chunks: &[Vec<u8>], cuts: &[usize], flags: Flags) -> Vec<u8> {
    let stream: Vec<u8> = chunks.concat();
    // Keep the recorded boundaries too: the application's answers (exec on
    // open, ...) must come before the bytes that depend on them.
    let mut points: Vec<usize> = Vec::new();
    let mut at = 0;
    for c in chunks {
        at += c.len();
        points.push(at);
    }
    points.extend(cuts.iter().map(|c| c % stream.len().max(1)));
    points.sort_unstable();
    points.dedup();
    let mut s = Script::new(flags);
    let mut start = 0;
    for p in points {
        if p > start {
            s.data(&stream[start..p]);
            start = p;
        }
    }
    s.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A whole recorded session (kex, login, exec, close) gives the same
    /// outcome however the bytes are cut, for both roles and every cipher
    /// (aes*-ctr with plain and encrypt-then-MAC HMACs included).
    #[test]
    fn sessions_survive_arbitrary_fragmentation(
        flags in prop::sample::select(vec![
            Flags::from(0), Flags::from(1), Flags::from(2), Flags::from(3), Flags::from(0x10),
            Flags::new(0, Flags::AES128_CTR | 1 << Flags::MAC_SHIFT),
            Flags::new(0, Flags::AES256_CTR | 4 << Flags::MAC_SHIFT | Flags::P521),
        ]),
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        let rec = fuzz::record_session(flags);
        let done = fuzz::Summary { authenticated: true, channels_closed: 1 };
        prop_assert_eq!(fuzz::single_connection(Role::Client, &refragment(&rec.to_client, &cuts, flags)), done);
        prop_assert_eq!(fuzz::single_connection(Role::Server, &refragment(&rec.to_server, &cuts, flags)), done);
    }
}

// ------------------------------------------------------- memory bound

/// `TransportConfig::max_queued_output` and `max_packet_len` (defaults).
const CAP: usize = 1 << 20;
const MAX_PACKET: usize = 256 * 1024;
/// The documented bound on the output a peer can make us queue
/// (`pending_transmit` plus messages held for a key exchange): the cap
/// plus the replies to one packet (at most a packet, plus framing).
const OUTPUT_LIMIT: usize = CAP + MAX_PACKET + 1024;
/// The documented bound on unprocessed input while processing waits.
const INPUT_LIMIT: usize = MAX_PACKET + 64 * 1024;
/// Want-reply requests awaiting replies, per connection and per channel.
const MAX_REQUESTS: usize = 64;
/// What the TCP socket holds before the attacker's writes block.
const SOCKET: usize = 256 * 1024;
/// What the victim's adapter reads at once.
const READ: usize = 64 * 1024;

/// An authenticated pair taken apart: the attacker's packets go through a
/// simulated socket to the victim, whose adapter reads only while
/// `wants_input()`; the victim's output is read only when the test says
/// so (`peer_reads`). Every step checks the victim's `buffered()` against
/// the documented bound.
struct Flood {
    victim: Connection,
    attacker: Connection,
    now: Timestamp,
    /// Sent by the attacker, not read by the victim's adapter yet.
    socket: Vec<u8>,
    /// The victim's events (not its channel data).
    events: Vec<Event>,
    /// Errors `handle_input` returned.
    errors: Vec<Error>,
    closed: Vec<CloseReason>,
    /// The largest value of each `buffered()` field.
    peak: Buffered,
    /// How often the victim stopped reading.
    stops: usize,
    stopped: bool,
    received_before: u64,
    sent_before: u64,
}

impl Flood {
    fn new(victim: Role) -> Flood {
        let client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
        let server =
            ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
        let mut p = Pair::new(client, server, LinkConfig::default(), 77).unwrap();
        p.on_server_event = Some(accept_policy("pw"));
        p.authenticate().unwrap();
        p.run_until(p.now + std::time::Duration::from_secs(1), |_| false);
        let Pair { client, server, now, .. } = p;
        let (victim, attacker) = match victim {
            Role::Client => (client, server),
            Role::Server => (server, client),
        };
        assert!(victim.pending_transmit().is_empty() && attacker.pending_transmit().is_empty());
        let stats = victim.stats();
        let mut f = Flood {
            victim,
            attacker,
            now,
            socket: Vec::new(),
            events: Vec::new(),
            errors: Vec::new(),
            closed: Vec::new(),
            peak: Buffered::default(),
            stops: 0,
            stopped: false,
            received_before: stats.packets_received,
            sent_before: stats.packets_sent,
        };
        f.settle();
        f
    }

    /// The attacker sends `p`, unless the socket is full (TCP blocks it).
    fn try_send(&mut self, p: &[u8]) -> bool {
        if self.socket.len() >= SOCKET {
            return false;
        }
        self.attacker.inject_payload(p);
        self.socket.extend_from_slice(self.attacker.pending_transmit());
        self.attacker.consume_transmit(usize::MAX);
        self.read();
        true
    }

    /// The victim's adapter: reads the socket while the connection wants input.
    fn read(&mut self) {
        while self.victim.wants_input() && !self.socket.is_empty() {
            let chunk: Vec<u8> = self.socket.drain(..self.socket.len().min(READ)).collect();
            if let Err(e) = self.victim.handle_input(self.now, &chunk) {
                self.errors.push(e);
            }
            self.settle();
        }
    }

    /// The attacker reads up to `n` bytes of the victim's output.
    fn peer_reads(&mut self, n: usize) {
        self.victim.consume_transmit(n);
        self.settle();
        self.read();
    }

    /// The attacker reads everything, until both directions are empty.
    fn peer_reads_all(&mut self) {
        while !self.victim.pending_transmit().is_empty()
            || (!self.socket.is_empty() && !self.victim.is_closed())
        {
            self.peer_reads(usize::MAX);
        }
    }

    /// Sends `n` messages (`make(i)` is the i-th); after each attempt the
    /// peer reads `rate` bytes of the victim's output. With `rate` 0 it
    /// stops once the socket is full. Returns how many were sent.
    fn flood(&mut self, n: usize, rate: usize, make: impl Fn(usize) -> Vec<u8>) -> usize {
        let mut sent = 0;
        while sent < n && !self.victim.is_closed() {
            if self.try_send(&make(sent)) {
                sent += 1;
            } else if rate == 0 {
                break;
            }
            if rate > 0 {
                self.peer_reads(rate);
            }
        }
        sent
    }

    /// The victim's application polls its events (and answers nothing);
    /// then the bound is checked.
    fn settle(&mut self) {
        while let Some(e) = self.victim.poll_event() {
            match e {
                Event::ChannelData { .. } => {}
                Event::Closed { reason } => self.closed.push(reason),
                e => self.events.push(e),
            }
        }
        let b = self.victim.buffered();
        assert!(b.output + b.held <= OUTPUT_LIMIT, "queued output over the bound: {b:?}");
        assert!(b.input <= INPUT_LIMIT, "unprocessed input over the bound: {b:?}");
        assert!(b.channels <= 256, "{b:?}");
        assert!(b.requests <= MAX_REQUESTS * (1 + b.channels), "{b:?}");
        assert!(self.closed.len() <= 1, "a second Closed");
        let p = &mut self.peak;
        p.output = p.output.max(b.output);
        p.held = p.held.max(b.held);
        p.input = p.input.max(b.input);
        p.requests = p.requests.max(b.requests);
        p.channels = p.channels.max(b.channels);
        let stopped = !self.victim.wants_input() && !self.victim.is_closed();
        self.stops += usize::from(stopped && !self.stopped);
        self.stopped = stopped;
    }

    /// Packets the victim processed, and sent, since the flood began.
    fn processed(&self) -> u64 {
        self.victim.stats().packets_received - self.received_before
    }

    fn replies(&self) -> u64 {
        self.victim.stats().packets_sent - self.sent_before
    }

    /// The last packet the victim sent, which must be a DISCONNECT with
    /// PROTOCOL_ERROR (needs `log_packets` on).
    fn assert_disconnected(&mut self) {
        let (sent, _) = self.victim.take_packet_log();
        let last = sent.last().expect("something was sent");
        assert_eq!(last[0], 1, "DISCONNECT");
        assert_eq!(&last[1..5], &DisconnectCode::PROTOCOL_ERROR.0.to_be_bytes());
    }
}

fn keepalive_request() -> Vec<u8> {
    payload(80, &[&string(b"keepalive@openssh.com"), &[1]])
}

/// 100,000 want-reply global requests (which the core answers itself,
/// REQUEST_FAILURE) from a peer that does not read: the victim stops
/// reading at the cap, so TCP blocks the peer long before the end. Once
/// the peer reads, the rest is answered too, one reply each.
#[test]
fn output_is_bounded_when_the_peer_never_reads() {
    let req = keepalive_request();
    let mut f = Flood::new(Role::Client);
    let sent = f.flood(100_000, 0, |_| req.clone());
    eprintln!("global requests: blocked after {sent}; peak {:?}", f.peak);
    assert!(sent < 100_000, "the peer is pushed back");
    assert!(!f.victim.wants_input() && f.stops == 1);
    let b = f.victim.buffered();
    assert!(b.output >= CAP, "stops at the cap, not before: {b:?}");
    assert_eq!(f.replies(), f.processed(), "one reply per request processed");
    assert!(f.socket.len() >= SOCKET, "the rest waits in the socket");
    // The peer reads now: the input left unprocessed goes on, and the rest
    // of the flood is answered as fast as the peer reads.
    f.peer_reads_all();
    assert!(f.victim.wants_input());
    assert_eq!(f.flood(100_000 - sent, usize::MAX, |_| req.clone()), 100_000 - sent);
    f.peer_reads_all();
    assert_eq!((f.processed(), f.replies()), (100_000, 100_000));
    assert!(f.errors.is_empty() && f.closed.is_empty());
}

/// A peer that reads, but slower than it makes us reply: the victim stops
/// and resumes at the peer's pace, and every request is answered.
#[test]
fn a_peer_that_reads_slowly_is_answered_at_its_pace() {
    let req = keepalive_request();
    let mut f = Flood::new(Role::Client);
    // Each REQUEST_FAILURE takes 28 bytes; the peer reads 10 per request.
    assert_eq!(f.flood(100_000, 10, |_| req.clone()), 100_000);
    f.peer_reads_all();
    eprintln!("slow reader: stopped {} times; peak {:?}", f.stops, f.peak);
    assert!(f.stops >= 2, "stopped and resumed");
    assert_eq!((f.processed(), f.replies()), (100_000, 100_000));
    assert!(f.errors.is_empty() && f.closed.is_empty());
}

/// PINGs: every PONG echoes the data, so the output grows as fast as the
/// input. The largest PINGs show the "+ one packet" of the bound.
#[test]
fn ping_floods_are_bounded() {
    let ping = payload(192, &[&string(&[0x55; 1000])]);
    let mut f = Flood::new(Role::Client);
    let sent = f.flood(100_000, 0, |_| ping.clone());
    eprintln!("1000-byte pings: blocked after {sent}; peak {:?}", f.peak);
    assert!(sent < 2000 && f.stops == 1);
    // Then a reader slower than the flood, to the end.
    assert_eq!(f.flood(100_000 - sent, 700, |_| ping.clone()), 100_000 - sent);
    f.peer_reads_all();
    assert_eq!((f.processed(), f.replies()), (100_000, 100_000));
    assert!(f.stops > 10, "stopped {} times", f.stops);
    assert!(f.errors.is_empty() && f.closed.is_empty());

    let big = payload(192, &[&string(&vec![0x55; MAX_PACKET - 100])]);
    let mut f = Flood::new(Role::Client);
    let sent = f.flood(100, 0, |_| big.clone());
    eprintln!("{}-byte pings: blocked after {sent}; peak {:?}", MAX_PACKET - 100, f.peak);
    assert!(f.peak.output > CAP, "one PONG past the cap");
    assert!(f.stops == 1 && f.errors.is_empty());
}

/// CHANNEL_OPEN of an unknown type (refused at once), and `session` opens
/// the application never answers: `max_channels` reach it, the rest are
/// refused with RESOURCE_SHORTAGE, and the refusals are bounded by the cap
/// like any reply.
#[test]
fn channel_open_floods_are_bounded() {
    let open = |kind: &'static [u8]| {
        move |i: usize| payload(90, &[&string(kind), &u32be(i as u32), &u32be(1 << 20), &u32be(32768)])
    };
    for kind in [&b"x11"[..], b"session"] {
        let mut f = Flood::new(Role::Server);
        let sent = f.flood(100_000, 0, open(kind));
        eprintln!("{} opens: blocked after {sent}; peak {:?}", String::from_utf8_lossy(kind), f.peak);
        assert!(sent < 100_000 && f.stops == 1);
        f.peer_reads_all();
        assert_eq!(f.flood(100_000 - sent, usize::MAX, open(kind)), 100_000 - sent);
        f.peer_reads_all();
        let offered = f.events.iter().filter(|e| matches!(e, Event::ChannelOpenRequest { .. })).count();
        let expected = if kind == b"x11" { 0 } else { 256 };
        assert_eq!(offered, expected, "only max_channels opens reach the application");
        assert_eq!(f.victim.channel_count(), expected);
        assert_eq!(f.processed(), 100_000);
        assert_eq!(f.replies(), 100_000 - expected as u64, "every other open is refused");
        assert!(f.errors.is_empty() && f.closed.is_empty());
    }
}

/// A `session` channel the attacker opened and the victim (server) accepted.
fn accepted_channel(f: &mut Flood) -> u32 {
    let open = payload(90, &[&string(b"session"), &u32be(7), &u32be(1 << 20), &u32be(32768)]);
    assert!(f.try_send(&open));
    let channel = f
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(*channel),
            _ => None,
        })
        .expect("the open reaches the application");
    f.victim.accept_channel(channel, ChannelOptions::default()).unwrap();
    f.settle();
    channel.0
}

/// Requests the application must answer (a server's `tcpip-forward`, a
/// channel's `exec`): replies go out in order, so a peer piling up
/// unanswered ones is cut off at 64, per connection and per channel, with
/// a DISCONNECT and one Closed.
#[test]
fn requests_the_application_never_answers_are_capped() {
    let fwd = payload(80, &[&string(b"tcpip-forward"), &[1], &string(b"127.0.0.1"), &u32be(0)]);
    let mut f = Flood::new(Role::Server);
    f.victim.log_packets(true);
    f.flood(100_000, usize::MAX, |_| fwd.clone());
    let expected = Error::TooManyPendingRequests { limit: 64 };
    assert_eq!(f.errors, std::slice::from_ref(&expected));
    assert_eq!(f.closed, [CloseReason::Error(expected.clone())]);
    assert_eq!(f.processed(), 65);
    assert_eq!(f.peak.requests, 64);
    f.assert_disconnected();

    let mut f = Flood::new(Role::Server);
    let channel = accepted_channel(&mut f);
    f.victim.log_packets(true);
    let exec = payload(98, &[&u32be(channel), &string(b"exec"), &[1], &string(b"true")]);
    f.flood(100_000, usize::MAX, |_| exec.clone());
    assert_eq!(f.errors, std::slice::from_ref(&expected));
    assert_eq!(f.closed, [CloseReason::Error(expected)]);
    assert_eq!(f.peak.requests, 64);
    f.assert_disconnected();
}

/// Channel requests the core refuses itself (an OpenSSH server's
/// `keepalive@openssh.com`, want-reply) are replies like any other: the
/// flood stops at the cap.
#[test]
fn channel_request_floods_are_bounded() {
    let mut f = Flood::new(Role::Client);
    let channel = f.victim.open_session(ChannelOptions::default()).unwrap().0;
    f.peer_reads_all();
    let confirm = payload(91, &[&u32be(channel), &u32be(7), &u32be(1 << 21), &u32be(32768)]);
    assert!(f.try_send(&confirm));
    let req = payload(98, &[&u32be(channel), &string(b"keepalive@openssh.com"), &[1]]);
    let sent = f.flood(100_000, 0, |_| req.clone());
    eprintln!("channel keepalives: blocked after {sent}; peak {:?}", f.peak);
    assert!(sent < 100_000 && f.stops == 1);
    f.peer_reads_all();
    assert_eq!(f.flood(100_000 - sent, usize::MAX, |_| req.clone()), 100_000 - sent);
    f.peer_reads_all();
    assert_eq!(f.processed(), 100_001);
    assert!(f.errors.is_empty() && f.closed.is_empty());
}

/// An adapter that ignores `wants_input` and reads on: past one packet
/// plus 64 KiB of unprocessed input the connection closes with
/// `InputOverflow`, a DISCONNECT and exactly one Closed.
#[test]
fn an_adapter_that_keeps_reading_is_cut_off() {
    let ping = payload(192, &[&string(&[0x55; 1000])]);
    let mut f = Flood::new(Role::Client);
    f.flood(100_000, 0, |_| ping.clone());
    assert!(!f.victim.wants_input());
    f.victim.log_packets(true);
    let err = loop {
        f.attacker.inject_payload(&ping);
        f.socket.extend_from_slice(f.attacker.pending_transmit());
        f.attacker.consume_transmit(usize::MAX);
        let chunk: Vec<u8> = f.socket.drain(..f.socket.len().min(READ)).collect();
        if let Err(e) = f.victim.handle_input(f.now, &chunk) {
            break e;
        }
        f.settle();
    };
    assert_eq!(err, Error::InputOverflow { limit: INPUT_LIMIT });
    f.settle();
    assert_eq!(f.closed, [CloseReason::Error(err)]);
    f.assert_disconnected();
    // Later input is ignored: no second Closed, no more output.
    let before = f.victim.pending_transmit().len();
    f.victim.handle_input(f.now, &f.socket.clone()).unwrap();
    f.settle();
    assert_eq!(f.victim.pending_transmit().len(), before);
    assert!(!f.victim.wants_input());
}

/// Replies held while our key exchange runs (only kex messages may go out)
/// count against the cap too. A peer that reads everything but floods us
/// instead of answering our KEXINIT fills it with held replies alone, which
/// only its kex messages could release: `HeldOverflow`. A peer that does
/// not read is stopped first, and cut off the same way once it reads.
#[test]
fn replies_held_during_our_key_exchange_are_bounded() {
    let req = keepalive_request();
    let expected = CloseReason::Error(Error::HeldOverflow { limit: CAP });

    let mut f = Flood::new(Role::Client);
    f.victim.log_packets(true);
    f.victim.rekey().unwrap();
    f.peer_reads_all();
    let sent = f.flood(100_000, usize::MAX, |_| req.clone());
    eprintln!("held replies: cut off after {sent}; peak {:?}", f.peak);
    assert!(f.peak.held >= CAP - 100, "{:?}", f.peak);
    assert_eq!(f.closed, std::slice::from_ref(&expected));
    f.assert_disconnected();

    let mut f = Flood::new(Role::Client);
    f.victim.log_packets(true);
    f.victim.rekey().unwrap();
    let sent = f.flood(100_000, 0, |_| req.clone());
    eprintln!("held replies, never read: blocked after {sent}; peak {:?}", f.peak);
    assert!(f.stops == 1 && f.closed.is_empty());
    f.peer_reads_all();
    assert_eq!(f.closed, [expected]);
    f.assert_disconnected();
}

/// Channel data to a peer that never reads: it fills at most half the cap
/// (one packet over); the rest waits in the channel, accepted, and the
/// victim keeps reading (data alone never stops input). A request flood on
/// top then stops it at the cap as usual.
#[test]
fn channel_data_to_a_peer_that_never_reads() {
    let mut f = Flood::new(Role::Client);
    let channel = f.victim.open_session(ChannelOptions::default()).unwrap();
    // A real peer accepts the channel and reads the data.
    let mut delivered = Vec::new();
    let exchange = |f: &mut Flood, delivered: &mut Vec<u8>| {
        let out = f.victim.pending_transmit().to_vec();
        f.victim.consume_transmit(out.len());
        f.settle();
        f.attacker.handle_input(f.now, &out).unwrap();
        while let Some(e) = f.attacker.poll_event() {
            match e {
                Event::ChannelOpenRequest { channel, .. } => {
                    f.attacker.accept_channel(channel, ChannelOptions::default()).unwrap()
                }
                Event::ChannelData { data, .. } => delivered.extend_from_slice(&data),
                _ => {}
            }
        }
        f.socket.extend_from_slice(f.attacker.pending_transmit());
        f.attacker.consume_transmit(usize::MAX);
        f.read();
        !out.is_empty()
    };
    while exchange(&mut f, &mut delivered) {}
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut written = 0;
    while delivered.len() < data.len() {
        if written < data.len() {
            let n = (data.len() - written).min(1 << 20);
            f.victim.channel_write(channel, &data[written..written + n]).unwrap();
            written += n;
        }
        let b = f.victim.buffered();
        assert!(b.output <= CAP / 2 + 33 * 1024, "channel data fills half the cap: {b:?}");
        assert!(f.victim.wants_input());
        assert!(exchange(&mut f, &mut delivered), "progress");
    }
    assert!(delivered == data, "every byte, in order");

    // Now the peer stops reading: the data waits (the app's bytes, not
    // the peer's), replies to a request flood fill the rest of the cap.
    f.victim.channel_write(channel, &data).unwrap();
    let b = f.victim.buffered();
    assert!(b.output <= CAP / 2 + 33 * 1024 && b.channel_data >= data.len() - CAP, "{b:?}");
    let req = keepalive_request();
    let sent = f.flood(100_000, 0, |_| req.clone());
    eprintln!("requests over channel data: blocked after {sent}; peak {:?}", f.peak);
    assert!(sent < 100_000 && f.stops == 1 && f.errors.is_empty());
}

/// A healthy transfer with the smallest cap (128 KiB: two data packets at
/// a time in the output): bulk both ways across rekeys, every byte intact.
#[test]
fn bulk_and_rekeys_work_with_the_smallest_cap() {
    let mut client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    let mut server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    for t in [&mut client.transport, &mut server.transport] {
        t.max_queued_output = 0;
        t.rekey.bytes = Some(300 * 1024);
    }
    let mut p = Pair::new(client, server, LinkConfig::fragmenting(9000), 5).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        if let Event::ChannelOpenRequest { channel, .. } = e {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap();
        }
    }));
    p.authenticate().unwrap();
    p.record_transcripts(false);
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    let limit = p.now + std::time::Duration::from_secs(5);
    p.run_until(limit, |p| p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. })));
    let sch = p
        .events(Role::Server)
        .into_iter()
        .find_map(|e| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(*channel),
            _ => None,
        })
        .unwrap();
    let up: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
    let down: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 241) as u8).collect();
    p.client.channel_write(ch, &up).unwrap();
    p.server.channel_write(sch, &down).unwrap();
    p.run_idle(p.now + std::time::Duration::from_secs(120));
    let received = |role: Role, channel| -> Vec<u8> {
        p.events(role)
            .into_iter()
            .filter_map(|e| match e {
                Event::ChannelData { channel: c, data } if *c == channel => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert!(received(Role::Server, sch) == up && received(Role::Client, ch) == down);
    assert!(p.client.stats().rekeys >= 8, "{} rekeys", p.client.stats().rekeys);
    assert!(p.client_errors.is_empty() && p.server_errors.is_empty());
}

// ------------------------------------------- the tokio adapter, over TCP

/// Writes all of `conn`'s output (blocking socket).
fn write_out(conn: &mut Connection, sock: &mut std::net::TcpStream) {
    use std::io::Write;
    while !conn.pending_transmit().is_empty() {
        let n = sock.write(conn.pending_transmit()).unwrap();
        conn.consume_transmit(n);
    }
}

/// A client driven by hand over a real socket: logs in to the tokio
/// server, then sends 1000-byte PINGs without reading. Returns how many
/// went out before TCP blocked it, and how many PONGs it read once it
/// read again.
fn ping_without_reading(addr: std::net::SocketAddr) -> (usize, usize) {
    use std::io::{ErrorKind, Read, Write};
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let now = || Timestamp::from_micros(start.elapsed().as_micros() as u64);
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let config = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    let mut conn = Connection::client(config, now(), [7; 32]).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut authenticated = false;
    while !authenticated {
        write_out(&mut conn, &mut sock);
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the server hung up");
        conn.handle_input(now(), &buf[..n]).unwrap();
        while let Some(e) = conn.poll_event() {
            match e {
                Event::HostKey(check) => conn.accept_host_key(check.id).unwrap(),
                Event::Authenticated { .. } => authenticated = true,
                Event::Closed { reason } => panic!("closed: {reason}"),
                _ => {}
            }
        }
    }
    write_out(&mut conn, &mut sock);
    // Flood, never reading, until writes make no progress for a while.
    sock.set_nonblocking(true).unwrap();
    let ping = payload(192, &[&string(&[0x55; 1000])]);
    let (mut sent, mut stalled_since) = (0, None::<Instant>);
    loop {
        if conn.pending_transmit().is_empty() {
            assert!(sent < 64 * 1024, "64 MiB sent and the server still reads: no push-back");
            conn.inject_payload(&ping);
            sent += 1;
        }
        match sock.write(conn.pending_transmit()) {
            Ok(n) => {
                conn.consume_transmit(n);
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let blocked_at = sent;
    // Now read everything: the server goes on, and answers every PING.
    let mut pongs = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pongs < sent {
        assert!(Instant::now() < deadline, "{pongs} of {sent} PONGs: stalled");
        let mut progressed = false;
        match sock.read(&mut buf) {
            Ok(0) => panic!("the server hung up"),
            Ok(n) => {
                conn.handle_input(now(), &buf[..n]).unwrap();
                progressed = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        while let Some(e) = conn.poll_event() {
            match e {
                Event::Pong { .. } => pongs += 1,
                Event::Closed { reason } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        match sock.write(conn.pending_transmit()) {
            Ok(n) => {
                conn.consume_transmit(n);
                progressed |= n > 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = sock.flush();
    (blocked_at, pongs)
}

/// The tokio server stops reading the socket of a client that floods
/// PINGs and never reads (TCP then blocks the client), keeps writing, and
/// answers every PING once the client reads: push-back without deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_server_pushes_back_on_a_peer_that_never_reads() {
    use sansh::tokio::{Server, ServerOptions};
    let config =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let mut options = ServerOptions::with_authorized_keys(config, Vec::new());
    options.auth = std::sync::Arc::new(
        |_, method| matches!(method, sansh::AuthMethod::Password { password, .. } if password.expose() == "pw"),
    );
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    let (blocked_at, pongs) = tokio::task::spawn_blocking(move || ping_without_reading(addr)).await.unwrap();
    eprintln!("tokio server: the client was blocked after {blocked_at} PINGs; {pongs} PONGs read after");
    assert_eq!(pongs, blocked_at);
}
