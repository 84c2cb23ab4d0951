//! The transport layer (RFC 4253): version exchange, binary packets, key
//! exchange with strict kex, rekeying, service request, and the transport
//! messages (IGNORE, DEBUG, UNIMPLEMENTED, DISCONNECT, EXT_INFO, PING/PONG).
//!
//! `Transport::poll` decrypts inbound packets, handles transport messages
//! itself and hands every upper-layer payload (authentication, connection)
//! back to the caller as a range of the input buffer, so nothing is copied.

mod cipher;
mod hostkey;
pub(crate) mod kex;
pub(crate) mod packet;
pub(crate) mod version;

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Buf, BytesMut};

pub use cipher::{CipherAlgorithm, MacAlgorithm};
pub use hostkey::{HostKey, HostKeyAlgorithm};
pub use kex::{KexAlgorithm, Negotiated};

use kex::{Ephemeral, ExchangeHashInput, KexInit};
use packet::{Opener, Sealer};
use version::VersionReader;

use crate::config::TransportConfig;
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::{Event, HostKeyCheck, State};
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::wire::MessageClass;
use crate::wire::msg::{self, Message};

/// Which end of the connection we are.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// We dialled and verify the server's host key.
    Client,
    /// We accepted and prove our host key.
    Server,
}

/// The layer above the transport, which decides which upper-layer messages
/// may arrive.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Upper {
    /// First kex not finished, or the service not yet accepted.
    PreService,
    /// `ssh-userauth` accepted: authentication messages flow.
    Auth,
    /// Authenticated: connection-protocol messages flow.
    Authenticated,
}

/// State every layer reads and writes: clock, RNG, events, counters.
// `repr(C)`: what every packet touches first (see `Connection`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Shared {
    pub(crate) now: Timestamp,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: crate::connection::Stats,
    /// Last id handed out for an event that needs an answer.
    pub(crate) next_id: u64,
    pub(crate) state: State,
    pub(crate) rng: Rng,
}

impl Shared {
    pub(crate) fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::StateChanged { state });
        }
    }
}

/// Bytes buffered while the application decides on the host key. A
/// well-behaved server sends at most NEWKEYS and EXT_INFO in that time.
const PAUSED_INPUT_LIMIT: usize = 512 * 1024;
/// Input buffered past one whole packet while input waits for our output
/// to drain: what an adapter that stopped reading may still have had in
/// hand. Past `max_packet_len` + this, the peer is cut off.
const STOPPED_INPUT_SLACK: usize = 64 * 1024;
/// What a message held for a key exchange counts against the output cap
/// besides its payload: once sealed it gains framing, padding and tag (at
/// most 40 bytes with an AEAD, 88 with hmac-sha2-512), and while held it
/// costs its own allocation.
const HELD_OVERHEAD: usize = 96;
/// Smallest `max_queued_output` used. Channel data is sealed only under
/// half of it, a packet (32 KiB) at a time, so data alone stays under
/// 97 KiB: never at the cap, which would stop input (and two sansh peers
/// sending bulk to each other would then both stop reading).
pub(crate) const MIN_QUEUED_OUTPUT: usize = 128 * 1024;
/// Buffers larger than this are released when they empty (idle connections
/// should cost little memory; a bulk transfer regrows them in a few steps).
const SHRINK_ABOVE: usize = 16 * 1024;

/// Reads this small mean an idle or interactive connection.
const IDLE_READ: usize = 4096;

/// Compact the output buffer once this much written space sits at its front.
const COMPACT_THRESHOLD: usize = 64 * 1024;

/// Inbound bytes and the packet opener.
// `repr(C)`, in declaration order: all of it is touched by each packet
// received, the counters also after each packet sent (see `Connection`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Input {
    /// Storage the adapter reads the socket straight into (`space`, or
    /// `spare` without zeroing); `buf[start..end]` is received and not
    /// processed yet, `buf[..start]` processed (dropped at the next
    /// `make_room`), `buf[end..]` initialised room for more. Packets are
    /// decrypted in place, and channel data leaves as a frozen slice of
    /// it (`take_processed`): the allocation is shared with those slices
    /// and freed when the last one goes.
    pub(crate) buf: BytesMut,
    start: usize,
    end: usize,
    opener: Opener,
    /// Stop decrypting until the application answers (host key check).
    paused: bool,
    /// Whether `Spare` holds storages: `rewind` asks after every read, and
    /// `Spare` lies among the cold fields (mirrored here, in padding).
    spare_held: bool,
    /// Tests: whether `Transport::log_in` is on (read here, in padding,
    /// so that `testing` builds touch the lines release builds touch).
    #[cfg(feature = "testing")]
    pub(crate) logging: bool,
    bytes_since_kex: u64,
    packets_since_kex: u64,
}

/// Handles on the receive storages allocated lately (at most
/// `SPARE_STORAGES`, each an empty view of its storage's front): a
/// storage whose slices have all been dropped is taken again through its
/// handle (`try_reclaim` succeeds once the handle is the only reference),
/// so a bulk transfer cycles through a few allocations instead of
/// allocating (and page-faulting) one per read. Kept out of `Input`,
/// whose fields every packet touches.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    handles: Vec<BytesMut>,
    /// Small reads in a row: after `IDLE_READS` the connection is idle
    /// and the storages go (a bulk transfer's reads only dip that low now
    /// and then, and freeing would re-fault them).
    small_reads: u32,
}

/// See `Spare::small_reads`.
const IDLE_READS: u32 = 8;

/// Receive storages kept for reuse (see `Spare`): more than a 2 MiB
/// window's worth of the tokio adapter's (1 MiB) storages, so that a
/// reader holding a window of data does not force new allocations.
const SPARE_STORAGES: usize = 6;

/// Receive storages are allocated in multiples of this (so that storages
/// allocated for the same read size can stand in for each other).
const STORAGE_ROUND: usize = 64 * 1024;

impl Input {
    /// Makes room for `n` more bytes after `end`: drops the processed
    /// prefix (a pointer move); if the storage has no room left, goes on
    /// in another one, copying the unprocessed bytes (at most a packet)
    /// there (reads over `IDLE_READ`; small ones just `reserve`): a
    /// storage of `Spare` that nothing references any more, or a new one
    /// with room for four reads of `n` (which replaces the oldest handle
    /// in `Spare`; that storage is then freed with its last slice). So the
    /// storage in use stays within `max(4n, end + n)` rounded up
    /// (unprocessed input is bounded, see `check_paused_limit`; `n` is the
    /// adapter's read size), plus the `SPARE_STORAGES` kept for reuse.
    /// Leaves `buf.len() == end`.
    fn make_room(&mut self, n: usize, spare: &mut Spare) {
        self.rewind(n, spare);
        if self.start > 0 {
            self.buf.advance(self.start);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.truncate(self.end);
        if self.buf.capacity() - self.end >= n {
            return;
        }
        if n <= IDLE_READ {
            // Small reads (handshake, interactive, idle): in place when
            // nothing handed out holds the storage, else a small new one.
            self.buf.reserve(n);
            return;
        }
        // The same size for every storage of a transfer (the read size is
        // steady), so that any free one will do: four reads' worth, as
        // reads take whatever room is left (at least `n`).
        let size = (4 * n).max(self.end + n).next_multiple_of(STORAGE_ROUND);
        let handles = &mut spare.handles;
        let mut next = match handles.iter_mut().position(|s| s.try_reclaim(size)) {
            Some(i) => {
                let mut next = std::mem::take(&mut handles[i]);
                handles[i] = next.split_to(0);
                next
            }
            None => {
                let mut next = BytesMut::with_capacity(size);
                if handles.len() >= SPARE_STORAGES {
                    handles.remove(0);
                }
                handles.push(next.split_to(0));
                self.spare_held = true;
                next
            }
        };
        next.extend_from_slice(&self.buf);
        self.buf = next;
    }

    /// With everything processed, starts over at the front of the storage
    /// (it is all ours: what was handed out has been split off).
    fn rewind(&mut self, n: usize, spare: &mut Spare) {
        if self.start == self.end {
            // Idle after a burst (the adapter reads small again): give the
            // storage back, so idle connections stay small. Not during bulk
            // reads, where freeing would only re-fault the pages.
            if n <= IDLE_READ && self.buf.capacity() > SHRINK_ABOVE {
                self.buf = BytesMut::new();
            }
            // Start over at the front, from its first cache-line boundary
            // (the bytes before it go at the next `make_room`): a small
            // packet then lands in one line of the storage, not two.
            let skip = self.buf.as_ptr().align_offset(64);
            let skip = if skip <= self.buf.len() { skip } else { 0 };
            self.start = skip;
            self.end = skip;
            if n > IDLE_READ {
                spare.small_reads = 0;
            } else if self.spare_held {
                spare.small_reads += 1;
                if spare.small_reads >= IDLE_READS {
                    *spare = Spare::default();
                    self.spare_held = false;
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8], spare: &mut Spare) {
        self.rewind(bytes.len(), spare);
        if self.buf.len() - self.end < bytes.len() {
            self.make_room(bytes.len(), spare);
            self.buf.extend_from_slice(bytes);
        } else {
            self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        }
        self.end += bytes.len();
    }

    /// Space for at least `min` bytes, to be filled and then committed.
    /// Initialised (zeroed) once per allocation, then reused.
    fn space(&mut self, min: usize, spare: &mut Spare) -> &mut [u8] {
        let min = min.max(1);
        self.rewind(min, spare);
        if self.buf.len() - self.end < min {
            self.make_room(min, spare);
            let cap = self.buf.capacity();
            self.buf.resize(cap, 0);
        }
        let end = self.end;
        &mut self.buf[end..]
    }

    /// The storage itself, with room for at least `min` more bytes after
    /// what it holds, for the adapter to append to (`BufMut`: tokio's
    /// `try_read_buf` fills spare capacity without zeroing it).
    fn spare(&mut self, min: usize, spare: &mut Spare) -> &mut BytesMut {
        self.make_room(min.max(1), spare);
        &mut self.buf
    }

    fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Detaches the processed bytes (`buf[..start]`, which end with the
    /// packet just opened) from the storage, for its channel data to be
    /// handed out without a copy. Ranges into the storage stay valid in
    /// the returned chunk.
    pub(crate) fn take_processed(&mut self) -> BytesMut {
        let chunk = self.buf.split_to(self.start);
        self.end -= self.start;
        self.start = 0;
        chunk
    }
}

/// Outbound packets: sealed straight into the transmit buffer, or held while
/// our key exchange runs (RFC 4253 §7.1 allows only kex messages then).
// `repr(C)`: what each packet sent (and each rekey-limit check) touches
// first, right after `Input`'s counters (see `Connection`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Output {
    bytes_since_kex: u64,
    packets_since_kex: u64,
    /// Rekey limits of the current keys (set when a kex completes), so bulk
    /// senders stop at the limit instead of a window past it.
    limit_bytes: u64,
    limit_packets: u64,
    pub(crate) bytes_total: u64,
    pub(crate) packets_total: u64,
    buf: Vec<u8>,
    /// `buf[sent..]` is what the adapter still has to write.
    sent: usize,
    sealer: Sealer,
    /// What `held` counts against the cap: payloads plus `HELD_OVERHEAD` each.
    held_cost: usize,
    /// `TransportConfig::max_queued_output` (at least `MIN_QUEUED_OUTPUT`).
    pub(crate) max_queued: usize,
    /// Between our KEXINIT and our NEWKEYS: only kex messages and DISCONNECT go out.
    holding: bool,
    /// Set while inbound packets are processed: what is sent then is the
    /// peer's doing.
    pub(crate) replying: bool,
    /// Channel data waits because the output reached half of `max_queued`.
    pub(crate) data_blocked: bool,
    /// After DISCONNECT (or EOF) nothing more is sent.
    closed: bool,
    /// Tests: plaintext payloads sent, when logging is on.
    #[cfg(feature = "testing")]
    pub(crate) log: Option<Vec<Vec<u8>>>,
    /// The part of `held_cost` that answers the peer (sent while
    /// `replying`), as opposed to what our application sent meanwhile.
    held_replies: usize,
    held: VecDeque<Vec<u8>>,
    /// Sequence numbers our want-reply GLOBAL_REQUESTs went out with,
    /// oldest first (one per entry of the connection protocol's pending
    /// replies): a peer that answers one with UNIMPLEMENTED instead of
    /// REQUEST_FAILURE (TinySSH does, for every global request) names it
    /// by this number.
    pub(crate) global_request_seqs: VecDeque<u32>,
}

impl Output {
    /// Bytes waiting to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// Output queued and not yet written: sealed bytes plus what the held
    /// messages will cost. This is what `max_queued_output` caps.
    pub(crate) fn queued(&self) -> usize {
        self.pending().len() + self.held_cost
    }

    /// Bytes of messages held for our key exchange (see `held_cost`).
    pub(crate) fn held(&self) -> usize {
        self.held_cost
    }

    /// At or over the cap: input processing must wait.
    fn backed_up(&self) -> bool {
        self.queued() >= self.max_queued
    }

    /// Input that waited may go on: under half the cap (hysteresis, so the
    /// connection does not stop and start at every packet), or nothing left
    /// to write (only held replies, which only input can release).
    pub(crate) fn drained(&self) -> bool {
        self.queued() < self.max_queued / 2 || self.pending().is_empty()
    }

    /// Whether channel data may be sealed now: under half the cap, so data
    /// alone never stops input (two bulk senders cannot deadlock) and the
    /// other half is left for replies.
    pub(crate) fn data_room(&self) -> bool {
        self.queued() < self.max_queued / 2
    }

    /// Marks `n` pending bytes as written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.buf.len());
        if self.sent == self.buf.len() {
            let drained = self.buf.len();
            // Everything went out. A bulk sender keeps its buffer (freeing
            // it would re-grow and re-fault it on every flush); once flushes
            // are small again the burst is over: give the memory back.
            if self.buf.capacity() > SHRINK_ABOVE && drained < self.buf.capacity() / 8 {
                self.buf = Vec::new();
                self.sent = 0;
                return;
            }
            // The next packet starts on a cache-line boundary: the bytes
            // before it stay (already written, so not touched again) and
            // count as sent. An idle connection's keepalive packet then
            // takes one line of the buffer instead of two.
            let skip = self.buf.as_ptr().align_offset(64);
            let skip = if skip <= drained { skip } else { 0 };
            self.buf.truncate(skip);
            self.sent = skip;
        } else if self.sent >= COMPACT_THRESHOLD && self.sent * 2 >= self.buf.len() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Sends a message now or, during our key exchange, once it is done.
    pub(crate) fn send(&mut self, payload: &[u8], rng: &mut Rng) {
        if self.closed {
            return;
        }
        let n = payload[0];
        if self.holding && !(MessageClass::of(n) == MessageClass::Kex || n == msg::DISCONNECT) {
            let cost = payload.len() + HELD_OVERHEAD;
            self.held_cost += cost;
            if self.replying {
                self.held_replies += cost;
            }
            self.held.push_back(payload.to_vec());
        } else {
            self.seal(payload, rng);
        }
    }

    /// Whether a non-kex message would go out now (not held for a kex, not closed).
    pub(crate) fn can_send_now(&self) -> bool {
        !self.holding && !self.closed
    }

    /// Whether the outbound keys reached a rekey limit: bulk data should
    /// wait for the new keys.
    pub(crate) fn over_limit(&self) -> bool {
        self.bytes_since_kex >= self.limit_bytes || self.packets_since_kex >= self.limit_packets
    }

    /// Seals a message whose payload `build` appends straight to the
    /// transmit buffer: no intermediate copy. Only when `can_send_now`.
    pub(crate) fn seal_with(&mut self, rng: &mut Rng, build: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(self.can_send_now());
        let start = Sealer::begin(&mut self.buf);
        build(&mut self.buf);
        self.account_sealed(start, rng);
    }

    /// `send` for a payload that `build` writes: straight into the transmit
    /// buffer when it can go out now (no allocation: keepalives and probes
    /// go through here once a second per connection), else built apart.
    pub(crate) fn send_with(&mut self, rng: &mut Rng, build: impl FnOnce(&mut Vec<u8>, &mut Rng)) {
        if self.closed {
            return;
        }
        if self.can_send_now() {
            let start = Sealer::begin(&mut self.buf);
            build(&mut self.buf, rng);
            self.account_sealed(start, rng);
        } else {
            let mut p = Vec::new();
            build(&mut p, rng);
            self.send(&p, rng);
        }
    }

    fn seal(&mut self, payload: &[u8], rng: &mut Rng) {
        let start = Sealer::begin(&mut self.buf);
        self.buf.extend_from_slice(payload);
        self.account_sealed(start, rng);
    }

    fn account_sealed(&mut self, start: usize, rng: &mut Rng) {
        // One byte compared per packet; only global requests read further.
        let payload = &self.buf[start + packet::HEADER_LEN..];
        if payload[0] == msg::GLOBAL_REQUEST && global_request_wants_reply(payload) {
            self.global_request_seqs.push_back(self.sealer.seq);
        }
        #[cfg(feature = "testing")]
        if let Some(log) = self.log.as_mut() {
            log.push(self.buf[start + packet::HEADER_LEN..].to_vec());
        }
        let wire = self.sealer.finish(&mut self.buf, start, rng) as u64;
        self.bytes_since_kex += wire;
        self.packets_since_kex += 1;
        self.bytes_total += wire;
        self.packets_total += 1;
    }

    fn release_held(&mut self, rng: &mut Rng) {
        self.holding = false;
        self.held_replies = 0;
        while let Some(p) = self.held.pop_front() {
            self.held_cost -= p.len() + HELD_OVERHEAD;
            self.seal(&p, rng);
        }
    }
}

/// Whether a GLOBAL_REQUEST payload (we built it) asks for a reply: the
/// boolean after the request name.
fn global_request_wants_reply(payload: &[u8]) -> bool {
    let Some(len) = payload.get(1..5) else { return false };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    payload.get(5..).and_then(|rest| rest.get(len)).is_some_and(|&b| b != 0)
}

/// A key exchange in progress.
#[derive(Debug)]
struct KexRun {
    first: bool,
    /// Sequence number our KEXINIT went out with: an UNIMPLEMENTED naming it
    /// means the peer will never answer (OpenSSH before authentication).
    ours_seq: u32,
    /// Our KEXINIT payload, as sent (hashed into H).
    ours: Vec<u8>,
    /// The peer's KEXINIT payload.
    theirs: Option<Vec<u8>>,
    /// Sequence number the peer's KEXINIT arrived with (strict kex wants 0).
    theirs_seq: u32,
    neg: Option<Negotiated>,
    ephemeral: Option<Ephemeral>,
    /// The peer guessed the algorithms wrong and sent a kex packet early.
    skip_next_kex_packet: bool,
    /// Derived keys waiting for our NEWKEYS: the outbound cipher and MAC.
    keys_out: Option<(CipherAlgorithm, Option<MacAlgorithm>, kex::DerivedKeys)>,
    keys_in_ready: bool,
    newkeys_sent: bool,
    newkeys_received: bool,
    /// Client: the exchange is verified and waits for the host key decision.
    awaiting_host_key: Option<u64>,
    exchange_hash: Option<[u8; 32]>,
}

/// What the peer told us in EXT_INFO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerExtensions {
    /// `server-sig-algs`: the signature algorithms the server accepts for
    /// user authentication.
    pub server_sig_algs: Option<Vec<String>>,
    /// `ping@openssh.com`: SSH_MSG_PING is understood.
    pub ping: bool,
    /// `publickey-hostbound@openssh.com` is supported.
    pub publickey_hostbound: bool,
}

/// Where the service request stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Service {
    None,
    Requested,
    Accepted,
}

/// The transport layer of one connection.
// `repr(C)`: what every packet or keepalive touches comes first, in this
// order, up to `output` (see `Connection`): five cache lines, aligned (the
// log fields of `testing` builds add one); the rest is cold once connected.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Transport {
    kex_deadline: Option<Timestamp>,
    rekey_deadline: Option<Timestamp>,
    kex: Option<Box<KexRun>>,
    /// `peer_ext.ping`, here among the hot fields (each probe reads it;
    /// the rest of `peer_ext` is cold).
    pub(crate) peer_ping: bool,
    role: Role,
    /// Input is left unprocessed until our output drains (see
    /// `TransportConfig::max_queued_output` and `input_must_wait`).
    output_stopped: bool,
    first_kex_done: bool,
    strict: bool,
    pub(crate) upper: Upper,
    service: Service,
    pub(crate) input: Input,
    pub(crate) output: Output,
    config: TransportConfig,
    host_keys: Vec<HostKey>,
    /// Server: the user-key signature algorithms announced in EXT_INFO.
    server_sig_algs: Vec<crate::keys::SignatureAlgorithm>,
    our_version: String,
    peer_version: Option<String>,
    version_reader: VersionReader,
    pub(crate) session_id: Option<[u8; 32]>,
    /// Client: the server host key accepted in the first kex (blob).
    host_key_blob: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    /// The inbound cipher derived by the current kex, installed on the peer's NEWKEYS.
    pending_in: Option<cipher::PacketCipher>,
    rekey_bytes: u64,
    pub(crate) peer_ext: PeerExtensions,
    spare: Spare,
    /// Tests: plaintext payloads received, when logging is on (last, so
    /// that `testing` builds keep the hot fields where release builds do).
    #[cfg(feature = "testing")]
    pub(crate) log_in: Option<Vec<Vec<u8>>>,
}

impl Transport {
    /// Bytes from the start through `output.closed`, the last of the
    /// fields every packet touches (see the layout comment above).
    #[cfg(test)]
    pub(crate) const HOT_LEN: usize =
        std::mem::offset_of!(Transport, output) + std::mem::offset_of!(Output, closed) + 1;

    pub(crate) fn new(
        role: Role,
        config: TransportConfig,
        host_keys: Vec<HostKey>,
        server_sig_algs: Vec<crate::keys::SignatureAlgorithm>,
        shared: &mut Shared,
    ) -> Result<Self, Error> {
        if role == Role::Server && host_keys.is_empty() {
            return Err(Error::Config { what: "a server needs at least one host key".into() });
        }
        for (what, empty) in [
            ("kex_algorithms", config.kex_algorithms.is_empty()),
            ("host_key_algorithms", config.host_key_algorithms.is_empty()),
            ("ciphers", config.ciphers.is_empty()),
            ("macs", config.macs.is_empty()),
        ] {
            if empty {
                return Err(Error::Config { what: format!("{what} is empty") });
            }
        }
        let sv = &config.software_version;
        if sv.is_empty() || sv.len() > 200 || sv.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'-') {
            return Err(Error::Config {
                what: format!(
                    "software_version {sv:?} must be 1-200 printable characters without spaces or '-'"
                ),
            });
        }
        let our_version = format!("SSH-2.0-{sv}");
        let max_packet_len = config.max_packet_len.max(35_000);
        let max_queued = config.max_queued_output.max(MIN_QUEUED_OUTPUT);
        let mut t = Transport {
            role,
            output_stopped: false,
            our_version,
            peer_version: None,
            version_reader: VersionReader::new(role == Role::Client),
            input: Input {
                buf: BytesMut::new(),
                start: 0,
                end: 0,
                opener: Opener::new(max_packet_len),
                paused: false,
                spare_held: false,
                #[cfg(feature = "testing")]
                logging: false,
                bytes_since_kex: 0,
                packets_since_kex: 0,
            },
            output: Output {
                buf: Vec::new(),
                sent: 0,
                sealer: Sealer::new(),
                holding: false,
                held: VecDeque::new(),
                global_request_seqs: VecDeque::new(),
                held_cost: 0,
                held_replies: 0,
                replying: false,
                max_queued,
                data_blocked: false,
                closed: false,
                bytes_since_kex: 0,
                packets_since_kex: 0,
                limit_bytes: u64::MAX,
                limit_packets: u64::MAX,
                bytes_total: 0,
                packets_total: 0,
                #[cfg(feature = "testing")]
                log: None,
            },
            upper: Upper::PreService,
            kex: None,
            first_kex_done: false,
            strict: false,
            session_id: None,
            host_key_blob: None,
            negotiated: None,
            pending_in: None,
            service: Service::None,
            peer_ext: PeerExtensions::default(),
            peer_ping: false,
            #[cfg(feature = "testing")]
            log_in: None,
            kex_deadline: config.kex_timeout.map(|d| shared.now + d),
            rekey_deadline: None,
            rekey_bytes: u64::MAX,
            spare: Spare::default(),
            config,
            host_keys,
            server_sig_algs,
        };
        if t.role == Role::Server && t.offered_host_key_algorithms().is_empty() {
            return Err(Error::Config {
                what: "no configured host_key_algorithms fits the server's host keys".into(),
            });
        }
        // Our version line goes out at once; so does our KEXINIT (RFC 4253
        // §7.1 allows sending it without waiting for the peer's).
        t.output.buf.extend_from_slice(t.our_version.as_bytes());
        t.output.buf.extend_from_slice(b"\r\n");
        t.output.bytes_total += t.output.buf.len() as u64;
        t.start_kex(shared);
        Ok(t)
    }

    // ---------------------------------------------------------------- getters

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn session_id(&self) -> Option<&[u8; 32]> {
        self.session_id.as_ref()
    }

    pub(crate) fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub(crate) fn peer_version(&self) -> Option<&str> {
        self.peer_version.as_deref()
    }

    pub(crate) fn banner_lines(&self) -> &[String] {
        &self.version_reader.pre_lines
    }

    pub(crate) fn first_kex_done(&self) -> bool {
        self.first_kex_done
    }

    pub(crate) fn is_rekeying(&self) -> bool {
        self.first_kex_done && self.kex.is_some()
    }

    /// Whether a DISCONNECT could still be sent.
    fn can_send(&self) -> bool {
        self.peer_version.is_some() && !self.output.closed
    }

    /// The earliest transport deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.kex_deadline, self.rekey_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes in flight in the input (for EOF handling).
    pub(crate) fn mid_packet(&self) -> bool {
        let buffered = self.input.buffered();
        if self.peer_version.is_none() {
            return buffered > 0;
        }
        // While paused (or waiting for our output to drain) the buffer
        // holds whole packets we have not looked at yet; an EOF then is a
        // plain hang-up, not a cut packet.
        !self.input.paused && !self.output_stopped && self.input.opener.mid_packet(buffered)
    }

    /// Received bytes not processed yet.
    pub(crate) fn buffered(&self) -> usize {
        self.input.buffered()
    }

    /// Whether input processing waits for our output to drain (the memory
    /// bound, `TransportConfig::max_queued_output`).
    pub(crate) fn output_stopped(&self) -> bool {
        self.output_stopped
    }

    /// Checked before each inbound packet: whether processing must wait
    /// for our output to drain. It stops at the cap and goes on once
    /// `drained`. Stopping needs something to write, or the wait would
    /// never end. With nothing to write the cap is all held messages, which
    /// only the peer's kex messages can release: if the peer's own replies
    /// fill it, it flooded us instead of finishing the exchange (an
    /// error); if our application's messages do, processing goes on.
    pub(crate) fn input_must_wait(&mut self) -> Result<bool, Error> {
        if self.output_stopped && self.output.drained() {
            self.output_stopped = false;
        }
        if !self.output_stopped && self.output.backed_up() {
            if !self.output.pending().is_empty() {
                self.output_stopped = true;
            } else if self.output.held_replies >= self.output.max_queued {
                return Err(Error::HeldOverflow { limit: self.output.max_queued });
            }
        }
        Ok(self.output_stopped)
    }

    /// Unprocessed input allowed while processing waits for our output:
    /// one whole packet plus `STOPPED_INPUT_SLACK`.
    fn stopped_input_limit(&self) -> usize {
        self.config.max_packet_len.max(35_000) as usize + STOPPED_INPUT_SLACK
    }

    // ---------------------------------------------------------------- inputs

    /// Appends received bytes. They are processed by [`Transport::poll`].
    pub(crate) fn receive(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.input.append(bytes, &mut self.spare);
        self.check_paused_limit()
    }

    /// Room for at least `min` received bytes (see `Input::space`).
    pub(crate) fn receive_space(&mut self, min: usize) -> &mut [u8] {
        self.input.space(min, &mut self.spare)
    }

    /// The receive storage with room for `min` more bytes (see `Input::spare`).
    pub(crate) fn receive_bytes(&mut self, min: usize) -> &mut BytesMut {
        self.input.spare(min, &mut self.spare)
    }

    /// Counts `n` bytes the adapter wrote into `receive_space()` (or appended).
    pub(crate) fn commit_received(&mut self, n: usize) -> Result<(), Error> {
        self.input.commit(n);
        self.check_paused_limit()
    }

    fn check_paused_limit(&self) -> Result<(), Error> {
        // Also while input waits for our output to drain: an adapter that
        // keeps reading (ignoring `wants_input`) may buffer a packet and a
        // bit, then the peer is cut off.
        let limit = if self.input.paused {
            PAUSED_INPUT_LIMIT
        } else if self.output_stopped {
            self.stopped_input_limit()
        } else {
            return Ok(());
        };
        if self.input.buffered() > limit {
            return Err(Error::InputOverflow { limit });
        }
        Ok(())
    }

    /// Processes buffered input until an upper-layer payload is found
    /// (returned as a range of `self.input.buf`), the peer disconnects, or
    /// more input is needed.
    pub(crate) fn poll(&mut self, shared: &mut Shared) -> Result<Option<Inbound>, Error> {
        // Nothing buffered: nothing to find (each read ends this way).
        if self.input.start == self.input.end {
            return Ok(None);
        }
        // (first_kex_done first: it is beside the input, peer_version is not.)
        if !self.first_kex_done && self.peer_version.is_none() && !self.read_version(shared)? {
            return Ok(None);
        }
        loop {
            if self.input.paused || self.output.closed || self.input.start == self.input.end {
                return Ok(None);
            }
            let (start, end) = (self.input.start, self.input.end);
            let Some(opened) = self.input.opener.poll(&mut self.input.buf[start..end])? else {
                return Ok(None);
            };
            self.input.start += opened.consumed;
            self.input.bytes_since_kex += opened.consumed as u64;
            self.input.packets_since_kex += 1;
            shared.stats.packets_received += 1;
            shared.stats.last_received = Some(shared.now);
            let range = start + opened.payload.start..start + opened.payload.end;
            // Split borrows: the payload stays in `input.buf` while the
            // handlers write to `output`.
            let buf = std::mem::take(&mut self.input.buf);
            #[cfg(feature = "testing")]
            if self.input.logging
                && let Some(log) = self.log_in.as_mut()
            {
                log.push(buf[range.clone()].to_vec());
            }
            let result = self.handle_packet(&buf[range.clone()], opened.seq, shared);
            self.input.buf = buf;
            match result? {
                Handled::Done => {}
                Handled::ServiceAccepted => return Ok(Some(Inbound::ServiceAccepted)),
                Handled::ProbeReply(seq) => return Ok(Some(Inbound::ProbeReply(seq))),
                Handled::GlobalRequestUnimplemented(index) => {
                    return Ok(Some(Inbound::GlobalRequestUnimplemented(index)));
                }
                Handled::Upper => return Ok(Some(Inbound::Upper(range))),
                Handled::Disconnect { code, description } => {
                    return Ok(Some(Inbound::Disconnect { code, description }));
                }
            }
        }
    }

    fn read_version(&mut self, shared: &mut Shared) -> Result<bool, Error> {
        let (consumed, version) =
            self.version_reader.poll(&self.input.buf[self.input.start..self.input.end])?;
        self.input.start += consumed;
        let Some(v) = version else {
            return Ok(false);
        };
        self.peer_version = Some(v.line);
        shared.set_state(State::Kex);
        Ok(true)
    }

    /// Handles one packet.
    fn handle_packet(&mut self, payload: &[u8], seq: u32, shared: &mut Shared) -> Result<Handled, Error> {
        let n = payload[0];
        let class = MessageClass::of(n);
        self.check_allowed(n, class)?;
        match class {
            MessageClass::Generic => return self.handle_generic(payload, shared),
            MessageClass::Kex => self.handle_kex(payload, seq, shared)?,
            MessageClass::Service => return self.handle_service(payload, shared),
            MessageClass::ExtInfo => self.handle_ext_info(payload, shared)?,
            MessageClass::Ping => return self.handle_ping(payload, shared),
            MessageClass::Auth | MessageClass::Connection => return Ok(Handled::Upper),
            MessageClass::Unknown => {
                let mut p = Vec::with_capacity(5);
                msg::Unimplemented { seq }.encode(&mut p);
                if !self.output.holding {
                    self.output.send(&p, &mut shared.rng);
                } else if self.first_kex_done {
                    // Generic messages may cross a rekey (RFC 4253 §7.1):
                    // replying now keeps a flood from piling up in `held`.
                    self.output.seal(&p, &mut shared.rng);
                }
                // During the first kex (non-strict peers only get this far)
                // the reply is dropped, for the same reason.
            }
        }
        Ok(Handled::Done)
    }

    /// The message-phase table: which classes may arrive now.
    fn check_allowed(&self, n: u8, class: MessageClass) -> Result<(), Error> {
        let unexpected =
            |phase: &'static str| Error::UnexpectedMessage { number: n, message: msg::name(n), phase };
        let peer_in_kex = self.kex.as_ref().is_some_and(|k| k.theirs.is_some());
        if n == msg::DISCONNECT {
            return Ok(());
        }
        if !self.first_kex_done {
            let strict = self.kex.as_ref().and_then(|k| k.neg.as_ref()).is_some_and(|neg| neg.strict);
            return match class {
                MessageClass::Kex => Ok(()),
                // Strict kex forbids everything but kex messages until NEWKEYS.
                MessageClass::Generic if strict => Err(Error::StrictKex {
                    what: format!("{} received during the initial key exchange", msg::name(n)),
                }),
                MessageClass::Generic => Ok(()),
                MessageClass::Unknown if !strict => Ok(()),
                MessageClass::Unknown => Err(Error::StrictKex {
                    what: format!("message {n} received during the initial key exchange"),
                }),
                _ => Err(unexpected("before the first key exchange completed")),
            };
        }
        match class {
            MessageClass::Generic | MessageClass::Kex => Ok(()),
            // RFC 4253 §7.1 forbids them between a KEXINIT and its NEWKEYS,
            // but paramiko answers a CHANNEL_OPEN (and sends channel data)
            // after its own rekey KEXINIT. OpenSSH accepts connection-layer
            // messages during a rekey (its kex resets only the transport
            // range of its dispatch table); so do we: they are authenticated
            // with the old keys, and the first kex (handled above) stays strict.
            MessageClass::Auth if self.upper == Upper::Auth => Ok(()),
            MessageClass::Auth => Err(unexpected("outside user authentication")),
            MessageClass::Connection if self.upper == Upper::Authenticated => Ok(()),
            MessageClass::Connection => Err(unexpected("before authentication completed")),
            _ if peer_in_kex => Err(unexpected("during key exchange")),
            MessageClass::Service => match (n, self.role, self.service) {
                (msg::SERVICE_REQUEST, Role::Server, Service::None) => Ok(()),
                (msg::SERVICE_ACCEPT, Role::Client, Service::Requested) => Ok(()),
                _ => Err(unexpected("without a matching service request")),
            },
            MessageClass::ExtInfo => match (self.role, self.upper) {
                (Role::Client, Upper::PreService | Upper::Auth) => Ok(()),
                _ => Err(unexpected("outside the points RFC 8308 allows")),
            },
            MessageClass::Ping | MessageClass::Unknown => Ok(()),
        }
    }

    fn handle_generic(&mut self, payload: &[u8], shared: &mut Shared) -> Result<Handled, Error> {
        let n = payload[0];
        match n {
            msg::DISCONNECT => {
                let d = msg::parse::<msg::Disconnect>(payload)?;
                let description = String::from_utf8_lossy(d.description).into_owned();
                return Ok(Handled::Disconnect { code: DisconnectCode(d.code), description });
            }
            msg::IGNORE => {
                msg::parse::<msg::Ignore>(payload)?;
            }
            msg::UNIMPLEMENTED => {
                let seq = msg::parse::<msg::Unimplemented>(payload)?.seq;
                if self.kex.as_ref().is_some_and(|k| !k.first && k.theirs.is_none() && k.ours_seq == seq) {
                    return Err(Error::RekeyRefused);
                }
                // The answer to one of our global requests: a refusal.
                // TinySSH names the packet after the one it refuses (its
                // receive counter has moved on by then, in every release up
                // to 20260601 at least), so for it the number before counts.
                let tinyssh = self.peer_version.as_deref().is_some_and(|v| v.starts_with("SSH-2.0-tinyssh"));
                let named = |s: u32| s == seq || (tinyssh && s.wrapping_add(1) == seq);
                if let Some(index) = self.output.global_request_seqs.iter().position(|&s| named(s)) {
                    self.output.global_request_seqs.remove(index);
                    return Ok(Handled::GlobalRequestUnimplemented(index));
                }
                shared.events.push_back(Event::Unimplemented { seq });
            }
            msg::DEBUG => {
                let d = msg::parse::<msg::DebugMessage>(payload)?;
                shared.events.push_back(Event::Debug {
                    always_display: d.always_display,
                    message: String::from_utf8_lossy(d.message).into_owned(),
                });
            }
            _ => {
                return Err(Error::Internal { what: format!("generic message {n}") });
            }
        }
        Ok(Handled::Done)
    }

    fn handle_service(&mut self, payload: &[u8], shared: &mut Shared) -> Result<Handled, Error> {
        let n = payload[0];
        match n {
            msg::SERVICE_REQUEST => {
                let name = msg::parse::<msg::ServiceRequest>(payload)?.service;
                if name != SERVICE_USERAUTH {
                    return Err(Error::ServiceNotAvailable { service: name.to_owned() });
                }
                let mut p = Vec::new();
                msg::ServiceAccept { service: name }.encode(&mut p);
                self.output.send(&p, &mut shared.rng);
            }
            _ => {
                let name = msg::parse::<msg::ServiceAccept>(payload)?.service;
                if name != SERVICE_USERAUTH {
                    return Err(Error::UnexpectedMessage {
                        number: n,
                        message: msg::name(n),
                        phase: "for a service we did not request",
                    });
                }
            }
        }
        self.service = Service::Accepted;
        self.upper = Upper::Auth;
        shared.events.push_back(Event::ServiceAccepted { service: SERVICE_USERAUTH.to_owned() });
        Ok(Handled::ServiceAccepted)
    }

    fn handle_ext_info(&mut self, payload: &[u8], shared: &mut Shared) -> Result<(), Error> {
        let info = msg::parse::<msg::ExtInfo>(payload)?;
        let mut ext = PeerExtensions::default();
        for e in info.extensions {
            match e {
                msg::Extension::ServerSigAlgs(list) => {
                    ext.server_sig_algs =
                        Some(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect());
                }
                msg::Extension::Other { name, value } if name == EXT_PING.as_bytes() => {
                    ext.ping = value == b"0"
                }
                msg::Extension::Other { name, value } if name == EXT_HOSTBOUND.as_bytes() => {
                    ext.publickey_hostbound = value == b"0";
                }
                msg::Extension::Other { .. } => {}
            }
        }
        shared
            .events
            .push_back(Event::ExtInfo { server_sig_algs: ext.server_sig_algs.clone(), ping: ext.ping });
        self.peer_ping = ext.ping;
        self.peer_ext = ext;
        Ok(())
    }

    fn handle_ping(&mut self, payload: &[u8], shared: &mut Shared) -> Result<Handled, Error> {
        if payload[0] == msg::PING {
            let data = msg::parse::<msg::Ping>(payload)?.data;
            // Replies would pile up while our own rekey holds output (the
            // memory exhaustion OpenSSH fixed in 9.9p2): drop pings then.
            // Not holding, the PONG is built straight into the transmit
            // buffer: a server answers every client's probes.
            if !self.output.holding {
                self.output.send_with(&mut shared.rng, |p, _| msg::Pong { data }.encode(p));
            }
            return Ok(Handled::Done);
        }
        let data = msg::parse::<msg::Pong>(payload)?.data;
        if let Some(seq) = data.strip_prefix(PROBE_TAG).and_then(|d| d.try_into().ok()) {
            // The answer to one of our keepalive probes: no event.
            return Ok(Handled::ProbeReply(u64::from_be_bytes(seq)));
        } else {
            shared.events.push_back(Event::Pong { data: data.to_vec() });
        }
        Ok(Handled::Done)
    }

    /// Sends a keepalive probe as SSH_MSG_PING (only when the peer offers it).
    pub(crate) fn probe_ping(&mut self, seq: u64, shared: &mut Shared) {
        let mut data = [0u8; PROBE_TAG.len() + 8];
        data[..PROBE_TAG.len()].copy_from_slice(PROBE_TAG);
        data[PROBE_TAG.len()..].copy_from_slice(&seq.to_be_bytes());
        self.output.send_with(&mut shared.rng, |p, _| msg::Ping { data: &data }.encode(p));
    }

    // ------------------------------------------------------------ key exchange

    fn our_kexinit(&self, first: bool, shared: &mut Shared) -> KexInit {
        let names = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        let mut kex_list: Vec<&str> = self.config.kex_algorithms.iter().map(|k| k.name()).collect();
        // Pseudo-algorithms: only in the first KEXINIT (OpenSSH does the same).
        if first {
            match self.role {
                Role::Client => {
                    kex_list.push(kex::EXT_INFO_C);
                    if self.config.strict_kex {
                        kex_list.push(kex::STRICT_KEX_C);
                    }
                }
                Role::Server => {
                    if self.config.strict_kex {
                        kex_list.push(kex::STRICT_KEX_S);
                    }
                }
            }
        }
        let host_key: Vec<&str> = match self.role {
            Role::Client => self.config.host_key_algorithms.iter().map(|a| a.name()).collect(),
            Role::Server => self.offered_host_key_algorithms().iter().map(|a| a.name()).collect(),
        };
        let ciphers: Vec<&str> = self.config.ciphers.iter().map(|c| c.name()).collect();
        let macs: Vec<&str> = self.config.macs.iter().map(|m| m.name()).collect();
        KexInit {
            cookie: kex::cookie(&mut shared.rng),
            kex: names(kex_list),
            host_key: names(host_key),
            cipher_c2s: names(ciphers.clone()),
            cipher_s2c: names(ciphers),
            // Sent even when every cipher offered is an AEAD (which ignores
            // the MAC): some peers reject an empty list.
            mac_c2s: names(macs.clone()),
            mac_s2c: names(macs),
            comp_c2s: names(vec!["none"]),
            comp_s2c: names(vec!["none"]),
            first_kex_follows: false,
        }
    }

    fn offered_host_key_algorithms(&self) -> Vec<HostKeyAlgorithm> {
        self.config
            .host_key_algorithms
            .iter()
            .copied()
            .filter(|a| self.host_keys.iter().any(|k| a.fits_key(k.public_key().key_data())))
            .collect()
    }

    /// Sends our KEXINIT, starting an exchange (first, or a rekey we decided on).
    fn start_kex(&mut self, shared: &mut Shared) {
        if self.kex.is_some() || self.output.closed {
            return;
        }
        let first = !self.first_kex_done;
        let init = self.our_kexinit(first, shared);
        let ours = init.to_payload();
        let ours_seq = self.output.sealer.seq;
        self.output.send(&ours, &mut shared.rng);
        self.output.holding = true;
        if !first {
            self.kex_deadline = self.config.kex_timeout.map(|d| shared.now + d);
        }
        self.kex = Some(Box::new(KexRun {
            first,
            ours_seq,
            ours,
            theirs: None,
            theirs_seq: 0,
            neg: None,
            ephemeral: None,
            skip_next_kex_packet: false,
            keys_out: None,
            keys_in_ready: false,
            newkeys_sent: false,
            newkeys_received: false,
            awaiting_host_key: None,
            exchange_hash: None,
        }));
    }

    /// Starts a rekey now (application command). No-op while one runs.
    /// Before authentication OpenSSH answers UNIMPLEMENTED, which closes
    /// the connection with [`Error::RekeyRefused`].
    pub(crate) fn rekey(&mut self, shared: &mut Shared) -> Result<(), Error> {
        if !self.first_kex_done {
            return Err(Error::InvalidState { what: "rekey before the first key exchange completed" });
        }
        self.start_kex(shared);
        Ok(())
    }

    fn handle_kex(&mut self, payload: &[u8], seq: u32, shared: &mut Shared) -> Result<(), Error> {
        let n = payload[0];
        let unexpected = |phase| Error::UnexpectedMessage { number: n, message: msg::name(n), phase };
        if n == msg::KEXINIT {
            if self.kex.as_ref().is_some_and(|k| k.theirs.is_some()) {
                return Err(unexpected("twice in one key exchange"));
            }
            // The peer starts a rekey: answer with ours.
            self.start_kex(shared);
            return self.on_kexinit(payload, seq, shared);
        }
        let Some(run) = self.kex.as_mut() else {
            return Err(unexpected("outside key exchange"));
        };
        if run.theirs.is_none() {
            return Err(unexpected("before the peer's KEXINIT"));
        }
        if run.skip_next_kex_packet {
            run.skip_next_kex_packet = false;
            return Ok(());
        }
        match (n, self.role) {
            (msg::KEX_ECDH_INIT, Role::Server) if run.exchange_hash.is_none() => {
                self.on_ecdh_init(payload, shared)
            }
            (msg::KEX_ECDH_REPLY, Role::Client) if run.ephemeral.is_some() => {
                self.on_ecdh_reply(payload, shared)
            }
            (msg::NEWKEYS, _) if run.keys_in_ready && !run.newkeys_received => {
                self.on_newkeys(payload, shared)
            }
            _ => Err(unexpected("at this point of the key exchange")),
        }
    }

    fn on_kexinit(&mut self, payload: &[u8], seq: u32, shared: &mut Shared) -> Result<(), Error> {
        let theirs = msg::parse::<KexInit>(payload)?;
        let run = self.kex.as_mut().expect("start_kex ran");
        let ours = KexInit::decode(&run.ours).expect("our own KEXINIT decodes");
        let (client, server) = match self.role {
            Role::Client => (&ours, &theirs),
            Role::Server => (&theirs, &ours),
        };
        let neg = kex::negotiate(client, server, run.first)?;
        if neg.strict && seq != 0 {
            return Err(Error::StrictKex { what: format!("KEXINIT was packet {seq}, not the first") });
        }
        run.skip_next_kex_packet = theirs.first_kex_follows && kex::guess_was_wrong(client, server);
        run.theirs = Some(payload.to_vec());
        run.theirs_seq = seq;
        if self.role == Role::Client {
            let eph = Ephemeral::generate(&mut shared.rng);
            let mut p = Vec::with_capacity(40);
            msg::KexEcdhInit { client_public: &eph.public }.encode(&mut p);
            run.ephemeral = Some(eph);
            self.output.send(&p, &mut shared.rng);
        }
        run.neg = Some(neg);
        Ok(())
    }

    fn on_ecdh_init(&mut self, payload: &[u8], shared: &mut Shared) -> Result<(), Error> {
        let q_c = msg::parse::<msg::KexEcdhInit>(payload)?.client_public;
        let run = self.kex.as_mut().expect("checked");
        let neg = run.neg.clone().expect("negotiated with KEXINIT");
        let host_key = self
            .host_keys
            .iter()
            .find(|k| neg.host_key.fits_key(k.public_key().key_data()))
            .ok_or_else(|| Error::Internal { what: "negotiated a host key we lack".into() })?;
        let eph = Ephemeral::generate(&mut shared.rng);
        let q_s = eph.public;
        let k = eph.agree(q_c)?;
        let k_mpint = kex::shared_secret_mpint(&*k);
        let h = kex::exchange_hash(
            &ExchangeHashInput {
                client_version: self.peer_version.as_deref().unwrap_or_default(),
                server_version: &self.our_version,
                client_kexinit: run.theirs.as_deref().expect("checked"),
                server_kexinit: &run.ours,
                host_key_blob: host_key.blob(),
                client_public: q_c,
                server_public: &q_s,
            },
            &k_mpint,
        );
        let sig = host_key.sign(neg.host_key, &h, &mut shared.rng)?;
        let mut p = Vec::with_capacity(host_key.blob().len() + sig.len() + 64);
        msg::KexEcdhReply { host_key: host_key.blob(), server_public: &q_s, signature: &sig }.encode(&mut p);
        self.output.send(&p, &mut shared.rng);
        let session_id = *self.session_id.get_or_insert(h);
        let keys = kex::derive_keys(&k_mpint, &h, &session_id, &neg);
        run.exchange_hash = Some(h);
        self.install_keys(keys, &neg);
        self.send_newkeys(shared);
        Ok(())
    }

    fn on_ecdh_reply(&mut self, payload: &[u8], shared: &mut Shared) -> Result<(), Error> {
        let msg::KexEcdhReply { host_key: k_s, server_public: q_s, signature: sig } = msg::parse(payload)?;
        let run = self.kex.as_mut().expect("checked");
        let neg = run.neg.clone().expect("negotiated with KEXINIT");
        let eph = run.ephemeral.take().expect("checked");
        let q_c = eph.public;
        let k = eph.agree(q_s)?;
        let k_mpint = kex::shared_secret_mpint(&*k);
        let h = kex::exchange_hash(
            &ExchangeHashInput {
                client_version: &self.our_version,
                server_version: self.peer_version.as_deref().unwrap_or_default(),
                client_kexinit: &run.ours,
                server_kexinit: run.theirs.as_deref().expect("checked"),
                host_key_blob: k_s,
                client_public: &q_c,
                server_public: q_s,
            },
            &k_mpint,
        );
        let key = hostkey::verify(neg.host_key, k_s, sig, &h)?;
        run.exchange_hash = Some(h);
        let session_id = *self.session_id.get_or_insert(h);
        let keys = kex::derive_keys(&k_mpint, &h, &session_id, &neg);
        self.install_keys(keys, &neg);
        match &self.host_key_blob {
            // Rekey: the host key may not change (OpenSSH checks this too).
            Some(blob) if blob.as_slice() != k_s => Err(Error::HostKeyChanged),
            Some(_) => {
                self.send_newkeys(shared);
                Ok(())
            }
            None => {
                shared.next_id += 1;
                let id = shared.next_id;
                let run = self.kex.as_mut().expect("checked");
                run.awaiting_host_key = Some(id);
                self.host_key_blob = Some(k_s.to_vec());
                self.input.paused = true;
                shared.events.push_back(Event::HostKey(HostKeyCheck {
                    id,
                    fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
                    key,
                    algorithm: neg.host_key,
                }));
                Ok(())
            }
        }
    }

    /// Prepares the inbound cipher (installed on the peer's NEWKEYS) and
    /// keeps the outbound one for our NEWKEYS.
    fn install_keys(&mut self, keys: kex::DerivedKeys, neg: &Negotiated) {
        let run = self.kex.as_mut().expect("in kex");
        let (in_alg, in_mac, in_key, in_iv, in_mac_key) = match self.role {
            Role::Client => (neg.cipher_s2c, neg.mac_s2c, &keys.key_s2c, &keys.iv_s2c, &keys.mac_key_s2c),
            Role::Server => (neg.cipher_c2s, neg.mac_c2s, &keys.key_c2s, &keys.iv_c2s, &keys.mac_key_c2s),
        };
        // The inbound cipher is built now and swapped in by on_newkeys.
        let in_mac = in_mac.map(|m| (m, &in_mac_key[..]));
        self.pending_in = Some(cipher::PacketCipher::with_mac(in_alg, in_key, in_iv, in_mac));
        let (out_alg, out_mac) = match self.role {
            Role::Client => (neg.cipher_c2s, neg.mac_c2s),
            Role::Server => (neg.cipher_s2c, neg.mac_s2c),
        };
        run.keys_in_ready = true;
        run.keys_out = Some((out_alg, out_mac, keys));
    }

    fn send_newkeys(&mut self, shared: &mut Shared) {
        let run = self.kex.as_mut().expect("in kex");
        let (alg, mac, keys) = run.keys_out.take().expect("keys derived");
        self.output.send(&msg::NewKeys.to_payload(), &mut shared.rng);
        let (key, iv, mac_key) = match self.role {
            Role::Client => (&keys.key_c2s, &keys.iv_c2s, &keys.mac_key_c2s),
            Role::Server => (&keys.key_s2c, &keys.iv_s2c, &keys.mac_key_s2c),
        };
        let mac = mac.map(|m| (m, &mac_key[..]));
        self.output.sealer.cipher = cipher::PacketCipher::with_mac(alg, key, iv, mac);
        // Limits count what each key protects (as OpenSSH does), so the
        // counters restart with the key, before held packets go out.
        self.output.bytes_since_kex = 0;
        self.output.packets_since_kex = 0;
        let strict = self.strict || run.neg.as_ref().is_some_and(|n| n.strict);
        if strict {
            self.output.sealer.seq = 0;
        }
        run.newkeys_sent = true;
        let first = run.first;
        let client_ext_info = run.neg.as_ref().is_some_and(|n| n.client_ext_info);
        let done = run.newkeys_received;
        // RFC 8308: EXT_INFO goes right after the server's first NEWKEYS.
        if first && self.role == Role::Server && client_ext_info {
            self.send_ext_info(shared);
        }
        self.output.release_held(&mut shared.rng);
        if done {
            self.finish_kex(shared);
        }
    }

    fn send_ext_info(&mut self, shared: &mut Shared) {
        let algs: Vec<&str> = self.server_sig_algs.iter().map(|a| a.name()).collect();
        let algs = algs.join(",");
        let ext = msg::ExtInfo {
            extensions: vec![
                msg::Extension::ServerSigAlgs(&algs),
                msg::Extension::Other { name: EXT_PING.as_bytes(), value: b"0" },
            ],
        };
        let mut p = Vec::with_capacity(160);
        ext.encode(&mut p);
        self.output.seal(&p, &mut shared.rng);
    }

    fn on_newkeys(&mut self, payload: &[u8], shared: &mut Shared) -> Result<(), Error> {
        msg::parse::<msg::NewKeys>(payload)?;
        let run = self.kex.as_mut().expect("checked");
        let cipher = self.pending_in.take().expect("keys_in_ready");
        self.input.opener.cipher = cipher;
        self.input.bytes_since_kex = 0;
        self.input.packets_since_kex = 0;
        let strict = self.strict || run.neg.as_ref().is_some_and(|n| n.strict);
        if strict {
            self.input.opener.seq = 0;
        }
        run.newkeys_received = true;
        if run.newkeys_sent {
            self.finish_kex(shared);
        }
        Ok(())
    }

    fn finish_kex(&mut self, shared: &mut Shared) {
        let run = self.kex.take().expect("in kex");
        let neg = run.neg.expect("negotiated");
        let rekey = !run.first;
        if run.first {
            self.strict = neg.strict;
            self.first_kex_done = true;
            shared.set_state(State::Auth);
            if self.role == Role::Client {
                let mut p = Vec::with_capacity(20);
                msg::ServiceRequest { service: SERVICE_USERAUTH }.encode(&mut p);
                self.output.send(&p, &mut shared.rng);
                self.service = Service::Requested;
            }
        } else {
            shared.stats.rekeys += 1;
        }
        self.rekey_bytes = self.config.rekey.bytes.unwrap_or_else(|| {
            neg.cipher_c2s.default_rekey_bytes().min(neg.cipher_s2c.default_rekey_bytes())
        });
        self.output.limit_bytes = self.rekey_bytes;
        self.output.limit_packets = self.config.rekey.packets;
        self.kex_deadline = None;
        self.rekey_deadline = self.config.rekey.time.map(|d| shared.now + d);
        shared.stats.last_kex = Some(shared.now);
        self.negotiated = Some(neg.clone());
        shared.events.push_back(Event::KexCompleted { algorithms: neg, rekey });
    }

    /// Starts a rekey when a byte or packet limit is reached. Only after
    /// authentication: OpenSSH refuses KEXINIT before it, and the
    /// pre-authentication phase is short anyway.
    pub(crate) fn check_rekey_limits(&mut self, shared: &mut Shared) {
        if self.upper != Upper::Authenticated || self.kex.is_some() || self.output.closed {
            return;
        }
        // The output's copy of the limits (set with them in finish_kex):
        // this runs after every packet, and it sits beside the counters.
        let bytes = self.input.bytes_since_kex.max(self.output.bytes_since_kex);
        let packets = self.input.packets_since_kex.max(self.output.packets_since_kex);
        if bytes >= self.output.limit_bytes || packets >= self.output.limit_packets {
            self.start_kex(shared);
        }
    }

    /// Fires expired transport timers. Returns the close reason for a kex timeout.
    pub(crate) fn handle_timeout(&mut self, shared: &mut Shared) -> Option<CloseReason> {
        if self.kex_deadline.is_some_and(|d| d <= shared.now) {
            self.kex_deadline = None;
            return Some(CloseReason::KexTimeout);
        }
        if self.rekey_deadline.is_some_and(|d| d <= shared.now) {
            if self.upper == Upper::Authenticated {
                self.rekey_deadline = None;
                self.start_kex(shared);
            } else if let Some(d) = self.config.rekey.time {
                // Not yet authenticated: try again a period later.
                self.rekey_deadline = Some(shared.now + d);
            }
        }
        None
    }

    // -------------------------------------------------------------- commands

    /// The application's answer to a host key check.
    pub(crate) fn answer_host_key(
        &mut self,
        id: u64,
        accept: bool,
        shared: &mut Shared,
    ) -> Result<(), Error> {
        let pending = self.kex.as_ref().and_then(|k| k.awaiting_host_key);
        if pending != Some(id) {
            return Err(Error::UnknownId { what: "host key check", id });
        }
        if !accept {
            return Err(Error::Internal { what: "reject is handled by the caller".into() });
        }
        let run = self.kex.as_mut().expect("checked");
        run.awaiting_host_key = None;
        self.input.paused = false;
        self.send_newkeys(shared);
        Ok(())
    }

    /// Whether `id` is the pending host key check.
    pub(crate) fn host_key_pending(&self, id: u64) -> bool {
        self.kex.as_ref().and_then(|k| k.awaiting_host_key) == Some(id)
    }

    /// Sends SSH_MSG_PING (OpenSSH extension).
    pub(crate) fn ping(&mut self, data: &[u8], shared: &mut Shared) -> Result<(), Error> {
        if !self.first_kex_done {
            return Err(Error::InvalidState { what: "ping before the first key exchange completed" });
        }
        if !self.peer_ping {
            return Err(Error::InvalidState { what: "ping: the peer did not offer ping@openssh.com" });
        }
        let mut p = Vec::with_capacity(data.len() + 5);
        msg::Ping { data }.encode(&mut p);
        self.output.send(&p, &mut shared.rng);
        Ok(())
    }

    /// Sends SSH_MSG_IGNORE with `data`.
    /// Sends SSH_MSG_IGNORE with `len` random bytes (NAT keepalive).
    pub(crate) fn random_ignore(&mut self, len: usize, shared: &mut Shared) {
        self.output.send_with(&mut shared.rng, |buf, rng| {
            msg::Ignore::encode_filled(buf, len, |data| rand_core::RngCore::fill_bytes(rng, data));
        });
    }

    pub(crate) fn ignore(&mut self, data: &[u8], shared: &mut Shared) {
        if self.output.can_send_now() {
            // Straight into the transmit buffer: no intermediate copy.
            self.output.seal_with(&mut shared.rng, |buf| msg::Ignore { data }.encode(buf));
            return;
        }
        let mut p = Vec::with_capacity(data.len() + 5);
        msg::Ignore { data }.encode(&mut p);
        self.output.send(&p, &mut shared.rng);
    }

    /// Sends SSH_MSG_DEBUG.
    pub(crate) fn debug(&mut self, always_display: bool, message: &str, shared: &mut Shared) {
        let mut p = Vec::with_capacity(message.len() + 10);
        msg::DebugMessage { always_display, message: message.as_bytes(), language: b"" }.encode(&mut p);
        self.output.send(&p, &mut shared.rng);
    }

    /// Sends DISCONNECT if the protocol allows it, and stops all output.
    pub(crate) fn close(&mut self, disconnect: Option<(DisconnectCode, &str)>, shared: &mut Shared) {
        if let Some((code, description)) = disconnect
            && self.can_send()
        {
            let mut p = Vec::with_capacity(description.len() + 16);
            msg::Disconnect { code: code.0, description: description.as_bytes(), language: b"" }
                .encode(&mut p);
            self.output.seal(&p, &mut shared.rng);
        }
        self.output.closed = true;
        self.output.held.clear();
        self.output.held_cost = 0;
        self.output.held_replies = 0;
        // Nothing more is processed: what the peer sent is dropped with
        // the connection (an overflowing input must not stay allocated).
        self.input.buf = BytesMut::new();
        self.spare = Spare::default();
        self.input.spare_held = false;
        self.input.start = 0;
        self.input.end = 0;
        self.input.paused = true;
        self.kex_deadline = None;
        self.rekey_deadline = None;
    }
}

/// Marks the PING payloads of our keepalive probes.
const PROBE_TAG: &[u8] = b"sansh-probe:";

/// The only service this crate offers or requests.
pub(crate) const SERVICE_USERAUTH: &str = "ssh-userauth";

/// EXT_INFO extensions we read (besides `server-sig-algs`) or send.
const EXT_PING: &str = "ping@openssh.com";
const EXT_HOSTBOUND: &str = "publickey-hostbound@openssh.com";

/// What `poll` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// An authentication or connection message at this range of `input.buf`.
    Upper(Range<usize>),
    /// The peer sent DISCONNECT.
    Disconnect { code: DisconnectCode, description: String },
    /// `ssh-userauth` was accepted: authentication may start.
    ServiceAccepted,
    /// The PONG answering our keepalive probe with this sequence number.
    ProbeReply(u64),
    /// The peer answered our want-reply global request at this position
    /// among those pending (0: the oldest) with UNIMPLEMENTED.
    GlobalRequestUnimplemented(usize),
}

/// What `handle_packet` did.
enum Handled {
    Done,
    Upper,
    ServiceAccepted,
    ProbeReply(u64),
    GlobalRequestUnimplemented(usize),
    Disconnect { code: DisconnectCode, description: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn input() -> Input {
        Input {
            buf: BytesMut::new(),
            start: 0,
            end: 0,
            opener: Opener::new(256 * 1024),
            paused: false,
            spare_held: false,
            #[cfg(feature = "testing")]
            logging: false,
            bytes_since_kex: 0,
            packets_since_kex: 0,
        }
    }

    /// Plaintext packets of `len` payload bytes each (payload byte `i`
    /// of packet `k` is `k + i`).
    fn packets(count: usize, len: usize) -> Vec<u8> {
        let (mut sealer, mut rng, mut tx) = (Sealer::new(), Rng::from_u64(5), Vec::new());
        for k in 0..count {
            let start = Sealer::begin(&mut tx);
            tx.extend((0..len).map(|i| (k + i) as u8));
            sealer.finish(&mut tx, start, &mut rng);
        }
        tx
    }

    /// Reads `wire` in `read`-byte pieces through `spare` (or `space`) and
    /// takes every packet out as a chunk, as channel data is; `keep` says
    /// which chunks the application holds on to. Returns the chunks kept
    /// and the largest capacity the storage reached.
    fn stream(wire: &[u8], read: usize, zeroed: bool, keep: impl Fn(usize) -> bool) -> (Vec<Bytes>, usize) {
        let (mut input, mut spare) = (input(), Spare::default());
        let (mut kept, mut max_cap, mut k) = (Vec::new(), 0, 0);
        for piece in wire.chunks(read) {
            if zeroed {
                input.space(piece.len(), &mut spare)[..piece.len()].copy_from_slice(piece);
            } else {
                input.spare(piece.len(), &mut spare).extend_from_slice(piece);
            }
            input.commit(piece.len());
            max_cap = max_cap.max(input.buf.capacity());
            loop {
                let (start, end) = (input.start, input.end);
                let Some(opened) = input.opener.poll(&mut input.buf[start..end]).unwrap() else { break };
                input.start += opened.consumed;
                let range = start + opened.payload.start..start + opened.payload.end;
                let mut chunk = input.take_processed();
                chunk.advance(range.start);
                chunk.truncate(range.len());
                let chunk = chunk.freeze();
                assert!(chunk.iter().enumerate().all(|(i, &b)| b == (k + i) as u8), "packet {k} intact");
                if keep(k) {
                    kept.push(chunk);
                }
                k += 1;
            }
        }
        assert_eq!(input.buffered(), 0);
        (kept, max_cap)
    }

    /// Packets leave the receive buffer as slices (no copy), and the
    /// storage stays near one read plus a packet whatever the application
    /// holds: a held slice pins only its own chunk, later reads go to new
    /// storage. Both ways of reading, 4 MiB in reads that cut packets.
    #[test]
    fn receive_storage_stays_bounded_while_slices_are_held() {
        let len = 32 * 1024;
        let wire = packets(128, len);
        let read = 256 * 1024 + 777;
        let bound = 4 * (read + len + 64);
        for zeroed in [false, true] {
            // Nothing held: the storage is reused.
            let (kept, cap) = stream(&wire, read, zeroed, |_| false);
            assert!(kept.is_empty() && cap <= bound, "capacity {cap} over {bound}");
            // Every 7th held, then all of them.
            for keep_every in [7, 1] {
                let (kept, cap) = stream(&wire, read, zeroed, |k| k % keep_every == 0);
                assert_eq!(kept.len(), 128usize.div_ceil(keep_every));
                assert!(cap <= bound, "capacity {cap} over {bound} (zeroed {zeroed}, every {keep_every})");
            }
        }
    }
}
