//! Transport benchmark: `cargo bench -p sansh --bench transport`.
//!
//! Every sansh number is printed next to a reference measured in the same
//! run, so the ratios hold on any machine:
//!
//! 1. Seal+open throughput of 32 KiB SSH_MSG_IGNORE packets per cipher,
//!    through the public API of two connected `Connection`s, against the raw
//!    AEAD construction (same crates, same packet size) on one buffer. The
//!    server reads into `receive_buffer` as the tokio adapter does; the
//!    copy from the client's output into it stands in for the kernel's and
//!    is not timed. A second reference, raw+copy, adds to the raw loop the
//!    copy of the payload into the packet, which sansh's `send_ignore`
//!    (like any API that borrows the payload) must do because ring's
//!    AES-GCM seals only in place: the overhead is reported over both.
//! 2. CPU per in-memory key exchange (curve25519-sha256, both sides), against
//!    the crypto any implementation must do for it: X25519 keygen and DH,
//!    ed25519 sign/verify, the exchange hash and the key derivation hashes.
//! 3. Bulk throughput through one session channel, client to server:
//!    256 KiB and 1 MiB writes pumped between an authenticated pair (window
//!    adjustments fed back) until every byte came out as `ChannelData`, as
//!    MB/s of channel payload per core (both sides run on this thread),
//!    against the raw AEAD sealing and opening the same packets (32 KiB of
//!    data each) in the same run. Each write hands over a buffer the
//!    application owns (`channel_write_owned`), as the tokio adapter does
//!    with what its writers queued and the CLI with each stdin read: what
//!    waits for window or output room is queued without a copy. Filling
//!    that buffer is the application's work (its file or socket read) and
//!    is not timed. The server reads into `receive_bytes` as the tokio
//!    adapter does; that copy stands in for the kernel's and is charged to
//!    neither side. Delivered data (slices of the server's receive buffer)
//!    is dropped once checked, as a reader that wrote it out would.
//!
//! Timing: a warm-up that also sizes batches to ~`target` each, then `reps`
//! batches per subject, interleaved (and in rotating order) so that
//! frequency drift and noisy neighbours hit sansh and the reference alike.
//! Reported: the median batch; "spread" is (max - min) / median. Ratios
//! and overheads are the median of the per-round ratios (each round times
//! sansh and the reference back to back), which cancels slow drift.
//!
//! Without `--bench` (as `cargo test --benches` runs it) every measurement
//! runs once, as a smoke test. Words after `--` pick sections by name
//! (`seal-open`, `kex`, `bulk`).

use std::cell::Cell;

use chacha20::ChaCha20Legacy;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use ring::aead::chacha20_poly1305_openssh::{OpeningKey, SealingKey};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use sha2::{Digest, Sha256};
use ssh_key::private::KeypairData;
use x25519_dalek::{EphemeralSecret, PublicKey as X25519Public};

use sansh::testing::{LinkConfig, Pair, accept_policy, host_key, keys};
use sansh::{
    ChannelId, ChannelOptions, CipherAlgorithm, ClientConfig, Connection, Credential,
    Duration as SimDuration, Event, HostKey, HostKeyAlgorithm, Rng, ServerConfig, Timestamp,
};

/// SSH_MSG_IGNORE data per packet.
const PAYLOAD: usize = 32 * 1024;
/// Target overhead of sansh's seal+open over the raw AEAD.
const TARGET_OVERHEAD_PCT: f64 = 10.0;
/// Target ratio of sansh's kex CPU over the raw kex crypto.
const TARGET_KEX_RATIO: f64 = 1.3;

struct Settings {
    /// Timed batches per subject.
    reps: usize,
    /// Wall time of one batch.
    target: Duration,
    /// Warm-up per subject (also sizes the batches).
    warmup: Duration,
    /// Wall time of all timed batches, and how much of it this thread
    /// spent runnable but waiting for a CPU (subtracted from the results).
    wall: Cell<Duration>,
    waited: Cell<Duration>,
}

/// How long this thread has waited, runnable, for a CPU (Linux
/// `schedstat`, exact to the nanosecond at every reschedule): other
/// processes on a busy machine then cost the measurement nothing. Zero
/// where the kernel does not say.
fn run_delay() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Time spent in one batch, and in each side where that is known.
#[derive(Clone, Copy, Default)]
struct Split {
    total: Duration,
    client: Duration,
    server: Duration,
}

impl Split {
    fn total(total: Duration) -> Self {
        Split { total, ..Split::default() }
    }
}

/// Nanoseconds per operation in one batch.
#[derive(Clone, Copy)]
struct PerOp {
    total: f64,
    client: f64,
    server: f64,
}

/// Selects one number of a sample.
type Field = fn(&PerOp) -> f64;

/// A measured subject: runs `n` operations and says how long they took.
type Subject<'a> = &'a mut dyn FnMut(u64) -> Split;

/// Warms every subject up, sizes its batch to `s.target`, then times
/// `s.reps` batches of each, interleaved in rotating order.
fn measure(s: &Settings, subjects: &mut [Subject<'_>]) -> Vec<Vec<PerOp>> {
    let batch: Vec<u64> = subjects
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            let mut n = 0u64;
            loop {
                f(1);
                n += 1;
                if start.elapsed() >= s.warmup {
                    break;
                }
            }
            let per_op = start.elapsed().as_secs_f64() / n as f64;
            ((s.target.as_secs_f64() / per_op).ceil() as u64).max(1)
        })
        .collect();
    let mut out = vec![Vec::with_capacity(s.reps); subjects.len()];
    for rep in 0..s.reps {
        for k in 0..subjects.len() {
            let i = (rep + k) % subjects.len();
            let n = batch[i];
            let delay = run_delay();
            let start = Instant::now();
            let t = subjects[i](n);
            let wall = start.elapsed();
            let waited = run_delay().saturating_sub(delay).min(wall);
            s.wall.set(s.wall.get() + wall);
            s.waited.set(s.waited.get() + waited);
            // Time spent waiting for a CPU is spread over the batch: keep
            // only the share in which this thread actually ran.
            let ran = 1.0 - waited.as_secs_f64() / wall.as_secs_f64().max(1e-12);
            let per = |d: Duration| d.as_nanos() as f64 * ran / n as f64;
            out[i].push(PerOp { total: per(t.total), client: per(t.client), server: per(t.server) });
        }
    }
    out
}

/// Median and spread ((max - min) / median) of one field of the samples.
fn stats(samples: &[PerOp], field: impl Fn(&PerOp) -> f64) -> (f64, f64) {
    median_spread(samples.iter().map(field).collect())
}

/// Median of `b / a` over the rounds: each round timed both back to back,
/// so slow drifts of the machine's speed cancel out.
fn paired_ratio(a: &[PerOp], b: &[PerOp], field: Field) -> f64 {
    median_spread(a.iter().zip(b).map(|(a, b)| field(b) / field(a)).collect()).0
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (median, (v[n - 1] - v[0]) / median)
}

// ------------------------------------------------------------ seal + open

/// A client and a server after a completed handshake, driven directly.
struct SanshLink {
    client: Connection,
    server: Connection,
    now: Timestamp,
    payload: Vec<u8>,
}

impl SanshLink {
    fn new(cipher: CipherAlgorithm) -> Self {
        let alg = HostKeyAlgorithm::Ed25519;
        let mut client = ClientConfig::default();
        client.transport.ciphers = vec![cipher];
        client.transport.host_key_algorithms = vec![alg];
        client.transport.rekey.bytes = Some(u64::MAX);
        let mut server = ServerConfig { host_keys: vec![host_key(alg)], ..ServerConfig::default() };
        server.transport.ciphers = vec![cipher];
        server.transport.rekey.bytes = Some(u64::MAX);
        let mut pair = Pair::new(client, server, LinkConfig::default(), 7).expect("valid configuration");
        pair.handshake().expect("handshake completes");
        pair.run_idle(pair.now + SimDuration::from_secs(1));
        let Pair { client, server, now, .. } = pair;
        let neg = client.negotiated().expect("negotiated");
        assert_eq!((neg.cipher_c2s, neg.cipher_s2c), (cipher, cipher));
        assert!(client.pending_transmit().is_empty() && server.pending_transmit().is_empty());
        SanshLink { client, server, now, payload: (0..PAYLOAD).map(|i| i as u8).collect() }
    }

    /// One packet client -> server. Returns its size on the wire and the
    /// time spent in the link's copy (client buffer to server buffer: the
    /// kernel's work in a real adapter, charged to neither side).
    fn op(&mut self) -> (usize, Duration) {
        self.client.send_ignore(&self.payload).expect("open");
        let out = self.client.pending_transmit();
        let n = out.len();
        // The server reads into `receive_buffer`, as the tokio adapter reads
        // the socket straight into it.
        let copy = Instant::now();
        self.server.receive_buffer(n)[..n].copy_from_slice(out);
        let copy = copy.elapsed();
        self.server.commit_received(self.now, n).expect("server opens");
        self.client.consume_transmit(n);
        while let Some(e) = self.server.poll_event() {
            black_box(e);
        }
        (n, copy)
    }

    fn batch(&mut self, n: u64) -> Split {
        let start = Instant::now();
        let mut link = Duration::ZERO;
        for _ in 0..n {
            let (len, copy) = self.op();
            black_box(len);
            link += copy;
        }
        Split::total(start.elapsed().saturating_sub(link))
    }
}

/// Packets from this size take RustCrypto's chacha20 + poly1305, as in
/// sansh (`transport::cipher::BULK_PACKET`): the faster construction there.
const CHACHA_BULK_PACKET: usize = 8 * 1024;

/// One direction of the raw AEAD: PROTOCOL.chacha20poly1305 or RFC 5647.
enum RawCipher {
    // Boxed and from ring, as in sansh's PacketCipher.
    ChaCha(Box<(SealingKey, OpeningKey)>),
    Gcm(Box<LessSafeKey>),
}

impl RawCipher {
    fn new(cipher: CipherAlgorithm) -> Self {
        match cipher {
            CipherAlgorithm::ChaCha20Poly1305 => {
                RawCipher::ChaCha(Box::new((SealingKey::new(&[0x11; 64]), OpeningKey::new(&[0x11; 64]))))
            }
            CipherAlgorithm::Aes128Gcm => RawCipher::Gcm(Box::new(LessSafeKey::new(
                UnboundKey::new(&AES_128_GCM, &[0x33; 16]).expect("key"),
            ))),
            CipherAlgorithm::Aes256Gcm => RawCipher::Gcm(Box::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &[0x44; 32]).expect("key"),
            ))),
            other => unreachable!("{other:?}: these benches measure the AEADs"),
        }
    }

    /// K_2's cipher for packet `seq` after the Poly1305 key block, and that key
    /// (the RustCrypto construction sansh uses for packets of 8 KiB and more).
    fn chacha_main(seq: u32) -> (ChaCha20Legacy, Poly1305) {
        let nonce = u64::from(seq).to_be_bytes();
        let mut cipher = ChaCha20Legacy::new(&[0x11; 32].into(), &nonce.into());
        let mut poly_key = [0u8; 32];
        cipher.apply_keystream(&mut poly_key);
        cipher.seek(64u64);
        (cipher, Poly1305::new(&poly_key.into()))
    }

    fn gcm_nonce(seq: u32) -> Nonce {
        let mut n = [0x55u8; 12];
        n[4..].copy_from_slice(&u64::from(seq).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `packet` (4-byte length, then the body) in place; returns the tag.
    fn seal(&self, seq: u32, packet: &mut [u8]) -> [u8; 16] {
        match self {
            RawCipher::ChaCha(keys) if packet.len() >= CHACHA_BULK_PACKET => {
                let nonce = u64::from(seq).to_be_bytes();
                ChaCha20Legacy::new(&[0x11; 32].into(), &nonce.into()).apply_keystream(&mut packet[..4]);
                let (mut cipher, poly) = Self::chacha_main(seq);
                cipher.apply_keystream(&mut packet[4..]);
                black_box(keys);
                poly.compute_unpadded(packet).into()
            }
            RawCipher::ChaCha(keys) => {
                let mut tag = [0u8; 16];
                keys.0.seal_in_place(seq, packet, &mut tag);
                tag
            }
            RawCipher::Gcm(aead) => {
                let (len, body) = packet.split_at_mut(4);
                let tag = aead
                    .seal_in_place_separate_tag(Self::gcm_nonce(seq), Aad::from(&*len), body)
                    .expect("size");
                tag.as_ref().try_into().expect("16 bytes")
            }
        }
    }

    /// Reads the length, checks the tag and decrypts the body in place.
    fn open(&self, seq: u32, packet: &mut [u8], tag: &[u8; 16]) -> u32 {
        match self {
            RawCipher::ChaCha(keys) if packet.len() >= CHACHA_BULK_PACKET => {
                let len = keys.1.decrypt_packet_length(seq, packet[..4].try_into().expect("4 bytes"));
                let (mut cipher, poly) = Self::chacha_main(seq);
                assert_eq!(&poly.compute_unpadded(packet)[..], tag, "tag");
                cipher.apply_keystream(&mut packet[4..]);
                u32::from_be_bytes(len)
            }
            RawCipher::ChaCha(keys) => {
                let len = keys.1.decrypt_packet_length(seq, packet[..4].try_into().expect("4 bytes"));
                keys.1.open_in_place(seq, packet, tag).expect("tag");
                u32::from_be_bytes(len)
            }
            RawCipher::Gcm(aead) => {
                let (len, body) = packet.split_at_mut(4);
                let tag = Tag::try_from(&tag[..]).expect("16 bytes");
                aead.open_in_place_separate_tag(Self::gcm_nonce(seq), Aad::from(&*len), tag, body, 0..)
                    .expect("tag");
                u32::from_be_bytes(len.try_into().expect("4 bytes"))
            }
        }
    }
}

/// The raw construction on one buffer: seal with one key schedule, open with
/// another (the two ends), no framing, no copies.
struct RawLink {
    sealer: RawCipher,
    opener: RawCipher,
    packet: Vec<u8>,
    seq: u32,
    /// When set, copied into the packet (where an IGNORE's data lies)
    /// before each seal: the one copy an API that borrows the payload
    /// cannot avoid with an in-place AEAD (ring seals only in place). A
    /// second reference, to show how much of the overhead that copy is.
    source: Option<Vec<u8>>,
}

impl RawLink {
    /// `packet_len`: length field plus body, as sansh puts it on the wire.
    fn new(cipher: CipherAlgorithm, packet_len: usize) -> Self {
        let mut packet: Vec<u8> = (0..packet_len).map(|i| i as u8).collect();
        packet[..4].copy_from_slice(&((packet_len - 4) as u32).to_be_bytes());
        RawLink {
            sealer: RawCipher::new(cipher),
            opener: RawCipher::new(cipher),
            packet,
            seq: 0,
            source: None,
        }
    }

    /// The same with the payload copied in before each seal.
    fn with_copy(cipher: CipherAlgorithm, packet_len: usize) -> Self {
        let mut link = Self::new(cipher, packet_len);
        link.source = Some((0..PAYLOAD).map(|i| (i * 7) as u8).collect());
        link
    }

    fn op(&mut self) {
        let body_len = (self.packet.len() - 4) as u32;
        if let Some(source) = &self.source {
            // After the length, padding length, message number and data length.
            self.packet[10..10 + source.len()].copy_from_slice(black_box(source));
        }
        let tag = self.sealer.seal(self.seq, &mut self.packet);
        let len = self.opener.open(self.seq, &mut self.packet, &tag);
        assert_eq!(len, body_len);
        // chacha20-poly1305 leaves the length encrypted in the buffer.
        self.packet[..4].copy_from_slice(&body_len.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
    }

    fn batch(&mut self, n: u64) -> Split {
        let start = Instant::now();
        for _ in 0..n {
            self.op();
            black_box(&self.packet);
        }
        Split::total(start.elapsed())
    }
}

fn bench_seal_open(s: &Settings) {
    println!("seal+open of one {PAYLOAD}-byte SSH_MSG_IGNORE per packet, MB/s of payload (1 MB = 10^6 B)");
    println!(
        "{:<30} {:>10} {:>14} {:>11} {:>9} {:>15} {:>22}",
        "cipher",
        "raw MB/s",
        "raw+copy MB/s",
        "sansh MB/s",
        "overhead",
        "over raw+copy",
        "spread raw/+copy/sansh"
    );
    for cipher in CipherAlgorithm::ALL.into_iter().filter(|c| c.is_aead()) {
        let mut sansh = SanshLink::new(cipher);
        let (wire, _) = sansh.op();
        // Same packet size as sansh's: everything on the wire but the tag.
        let mut raw = RawLink::new(cipher, wire - 16);
        let mut copied = RawLink::with_copy(cipher, wire - 16);
        let samples =
            measure(s, &mut [&mut |n| raw.batch(n), &mut |n| copied.batch(n), &mut |n| sansh.batch(n)]);
        let (raw_ns, raw_spread) = stats(&samples[0], |p| p.total);
        let (copied_ns, copied_spread) = stats(&samples[1], |p| p.total);
        let (sansh_ns, sansh_spread) = stats(&samples[2], |p| p.total);
        let mbps = |ns: f64| PAYLOAD as f64 / ns * 1e3;
        // raw/sansh MB/s = sansh/raw time, taken per round.
        let overhead = (paired_ratio(&samples[0], &samples[2], |p| p.total) - 1.0) * 100.0;
        let over_copied = (paired_ratio(&samples[1], &samples[2], |p| p.total) - 1.0) * 100.0;
        println!(
            "{:<30} {:>10.1} {:>14.1} {:>11.1} {:>8.1}% {:>14.1}% {:>6.1}% /{:>5.1}% /{:>5.1}%{}",
            cipher.name(),
            mbps(raw_ns),
            mbps(copied_ns),
            mbps(sansh_ns),
            overhead,
            over_copied,
            raw_spread * 100.0,
            copied_spread * 100.0,
            sansh_spread * 100.0,
            if overhead > TARGET_OVERHEAD_PCT { "  OVER TARGET" } else { "" }
        );
        let stats = sansh.server.stats();
        assert!(stats.packets_received > 0 && !sansh.server.is_closed());
    }
    println!(
        "target: overhead <= {TARGET_OVERHEAD_PCT}% (over raw); raw+copy adds the payload copy into the packet, which \
         sansh needs for a borrowed payload because ring's AES-GCM seals only in place\n"
    );
}

// ------------------------------------------------------------------- kex

/// A 32-byte seed from a counter, so every kex uses fresh ephemeral keys.
fn seed(n: u64, side: u8) -> [u8; 32] {
    let mut s = [side; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

/// Fresh configurations for one kex (built outside the timed region).
fn kex_configs(alg: HostKeyAlgorithm, key: &HostKey) -> (ClientConfig, ServerConfig) {
    let mut client = ClientConfig::default();
    client.transport.host_key_algorithms = vec![alg];
    let server = ServerConfig { host_keys: vec![key.clone()], ..ServerConfig::default() };
    (client, server)
}

/// One complete first kex between fresh connections fed to each other
/// directly, until both emitted `KexCompleted`. `client` / `server`: time
/// inside each side's constructor, `handle_input` and `accept_host_key`.
fn sansh_kex(configs: (ClientConfig, ServerConfig), n: u64) -> Split {
    let now = Timestamp::ZERO;
    let start = Instant::now();
    let t = Instant::now();
    let mut client = Connection::client(configs.0, now, seed(n, 1)).expect("client");
    let mut tc = t.elapsed();
    let t = Instant::now();
    let mut server = Connection::server(configs.1, now, seed(n, 2)).expect("server");
    let mut ts = t.elapsed();
    let (mut client_done, mut server_done) = (false, false);
    while !(client_done && server_done) {
        let mut progressed = false;
        let out = client.pending_transmit();
        if !out.is_empty() {
            let len = out.len();
            let t = Instant::now();
            server.handle_input(now, out).expect("server input");
            ts += t.elapsed();
            client.consume_transmit(len);
            progressed = true;
        }
        while let Some(e) = server.poll_event() {
            server_done |= matches!(e, Event::KexCompleted { .. });
        }
        let out = server.pending_transmit();
        if !out.is_empty() {
            let len = out.len();
            let t = Instant::now();
            client.handle_input(now, out).expect("client input");
            tc += t.elapsed();
            server.consume_transmit(len);
            progressed = true;
        }
        while let Some(e) = client.poll_event() {
            match e {
                Event::HostKey(check) => {
                    let t = Instant::now();
                    client.accept_host_key(check.id).expect("pending check");
                    tc += t.elapsed();
                    progressed = true;
                }
                Event::KexCompleted { .. } => client_done = true,
                _ => {}
            }
        }
        assert!(progressed || (client_done && server_done), "kex stalled");
    }
    let total = start.elapsed();
    drop((client, server));
    Split { total, client: tc, server: ts }
}

/// Runs `n` sansh kexes; `counter` makes every seed fresh.
fn sansh_kex_batch(alg: HostKeyAlgorithm, key: &HostKey, counter: &mut u64, n: u64) -> Split {
    let configs: Vec<_> = (0..n).map(|_| kex_configs(alg, key)).collect();
    let mut sum = Split::default();
    for c in configs {
        *counter += 1;
        let t = sansh_kex(c, *counter);
        sum.total += t.total;
        sum.client += t.client;
        sum.server += t.server;
    }
    sum
}

/// The fixed inputs of the exchange hash, taken from real sansh KEXINITs.
struct KexTranscript {
    client_version: Vec<u8>,
    server_version: Vec<u8>,
    client_kexinit: Vec<u8>,
    server_kexinit: Vec<u8>,
    host_key_blob: Vec<u8>,
}

/// Splits a connection's first output into its version line and the
/// payload of its first (unencrypted) packet, the KEXINIT.
fn version_and_kexinit(out: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let eol = out.windows(2).position(|w| w == b"\r\n").expect("version line");
    let packet = &out[eol + 2..];
    let len = u32::from_be_bytes(packet[..4].try_into().expect("4 bytes")) as usize;
    let padding = packet[4] as usize;
    (out[..eol].to_vec(), packet[5..4 + len - padding].to_vec())
}

impl KexTranscript {
    fn new(alg: HostKeyAlgorithm, key: &HostKey) -> Self {
        let (c, s) = kex_configs(alg, key);
        let client = Connection::client(c, Timestamp::ZERO, [1; 32]).expect("client");
        let server = Connection::server(s, Timestamp::ZERO, [2; 32]).expect("server");
        let (client_version, client_kexinit) = version_and_kexinit(client.pending_transmit());
        let (server_version, server_kexinit) = version_and_kexinit(server.pending_transmit());
        KexTranscript {
            client_version,
            server_version,
            client_kexinit,
            server_kexinit,
            host_key_blob: key.public_key().to_bytes().expect("encodes"),
        }
    }

    /// H = SHA-256 of the seven strings and the mpint K (RFC 8731 §3).
    fn exchange_hash(&self, q_c: &[u8; 32], q_s: &[u8; 32], k_mpint: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            &self.client_version[..],
            &self.server_version,
            &self.client_kexinit,
            &self.server_kexinit,
            &self.host_key_blob,
            q_c,
            q_s,
        ] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(k_mpint);
        h.finalize().into()
    }

    fn hash_input_len(&self) -> usize {
        [
            &self.client_version,
            &self.server_version,
            &self.client_kexinit,
            &self.server_kexinit,
            &self.host_key_blob,
        ]
        .iter()
        .map(|p| 4 + p.len())
        .sum::<usize>()
            + 2 * (4 + 32)
            + 37
    }
}

/// K as an SSH mpint (RFC 4251 §5).
fn mpint(k: &[u8; 32]) -> Vec<u8> {
    let first = k.iter().position(|&b| b != 0).unwrap_or(32);
    let digits = &k[first..];
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let mut out = Vec::with_capacity(37);
    out.extend_from_slice(&((digits.len() + usize::from(pad)) as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// RFC 4253 §7.2 for chacha20-poly1305 both ways (the default cipher):
/// 64-byte keys (two hashes each), no IVs. Returns a byte of each, to keep it.
fn derive_keys(k_mpint: &[u8], h: &[u8; 32]) -> u8 {
    let mut acc = 0;
    for letter in [b'C', b'D'] {
        let mut first = Sha256::new();
        first.update(k_mpint);
        first.update(h);
        first.update([letter]);
        first.update(h); // session id = H on the first kex
        let k1 = first.finalize();
        let mut second = Sha256::new();
        second.update(k_mpint);
        second.update(h);
        second.update(k1);
        acc ^= k1[0] ^ second.finalize()[0];
    }
    acc
}

/// The crypto of one curve25519-sha256 + ssh-ed25519 kex, each side timed.
struct RawKex {
    transcript: KexTranscript,
    signing: SigningKey,
    host_public: [u8; 32],
    rng: Rng,
}

impl RawKex {
    fn new(key: &HostKey) -> Self {
        let private = ssh_key::PrivateKey::from_openssh(keys::ED25519).expect("test key");
        let KeypairData::Ed25519(kp) = private.key_data() else {
            panic!("ed25519 key expected");
        };
        let signing = SigningKey::from_bytes(&kp.private.to_bytes());
        RawKex {
            transcript: KexTranscript::new(HostKeyAlgorithm::Ed25519, key),
            host_public: signing.verifying_key().to_bytes(),
            signing,
            rng: Rng::from_u64(9),
        }
    }

    fn kex(&mut self) -> Split {
        // Client: ephemeral key pair.
        let t = Instant::now();
        let c_secret = EphemeralSecret::random_from_rng(&mut self.rng);
        let q_c = X25519Public::from(&c_secret).to_bytes();
        let mut tc = t.elapsed();

        // Server: key pair, K, H, signature, keys.
        let t = Instant::now();
        let s_secret = EphemeralSecret::random_from_rng(&mut self.rng);
        let q_s = X25519Public::from(&s_secret).to_bytes();
        let k = s_secret.diffie_hellman(&X25519Public::from(q_c));
        assert!(k.was_contributory());
        let k_mpint = mpint(k.as_bytes());
        let h_s = self.transcript.exchange_hash(&q_c, &q_s, &k_mpint);
        let sig = self.signing.sign(&h_s);
        black_box(derive_keys(&k_mpint, &h_s));
        let ts = t.elapsed();

        // Client: K, H, host key and signature check, keys.
        let t = Instant::now();
        let k = c_secret.diffie_hellman(&X25519Public::from(q_s));
        assert!(k.was_contributory());
        let k_mpint = mpint(k.as_bytes());
        let h_c = self.transcript.exchange_hash(&q_c, &q_s, &k_mpint);
        let vk = VerifyingKey::from_bytes(&self.host_public).expect("valid key");
        vk.verify(&h_c, &sig).expect("signature verifies");
        black_box(derive_keys(&k_mpint, &h_c));
        tc += t.elapsed();

        Split { total: tc + ts, client: tc, server: ts }
    }

    fn batch(&mut self, n: u64) -> Split {
        let mut sum = Split::default();
        for _ in 0..n {
            let t = self.kex();
            sum.total += t.total;
            sum.client += t.client;
            sum.server += t.server;
        }
        sum
    }
}

fn bench_kex(s: &Settings) {
    let ed = HostKeyAlgorithm::Ed25519;
    let ed_key = host_key(ed);
    let mut raw = RawKex::new(&ed_key);
    println!(
        "first kex, curve25519-sha256, in memory, CPU per kex in µs (exchange hash input: {} bytes)",
        raw.transcript.hash_input_len()
    );
    println!(
        "{:<22} {:<7} {:>10} {:>13} {:>7} {:>16}",
        "host key", "side", "sansh µs", "raw crypto µs", "ratio", "spread raw/sansh"
    );
    let mut counter = 0u64;
    let samples =
        measure(s, &mut [&mut |n| raw.batch(n), &mut |n| sansh_kex_batch(ed, &ed_key, &mut counter, n)]);
    let sides: [(&str, Field); 3] =
        [("both", |p| p.total), ("client", |p| p.client), ("server", |p| p.server)];
    for (side, field) in sides {
        let (raw_ns, raw_spread) = stats(&samples[0], field);
        let (sansh_ns, sansh_spread) = stats(&samples[1], field);
        let ratio = paired_ratio(&samples[0], &samples[1], field);
        println!(
            "{:<22} {:<7} {:>10.1} {:>13.1} {:>7.2} {:>7.1}% /{:>6.1}%{}",
            ed.name(),
            side,
            sansh_ns / 1e3,
            raw_ns / 1e3,
            ratio,
            raw_spread * 100.0,
            sansh_spread * 100.0,
            if side == "both" && ratio > TARGET_KEX_RATIO { "  OVER TARGET" } else { "" }
        );
    }
    for alg in [HostKeyAlgorithm::EcdsaP256, HostKeyAlgorithm::RsaSha512] {
        let key = host_key(alg);
        let samples = measure(s, &mut [&mut |n| sansh_kex_batch(alg, &key, &mut counter, n)]);
        for (side, field) in sides {
            let (ns, spread) = stats(&samples[0], field);
            println!(
                "{:<22} {:<7} {:>10.1} {:>13} {:>7} {:>7}  /{:>6.1}%",
                alg.name(),
                side,
                ns / 1e3,
                "-",
                "-",
                "",
                spread * 100.0
            );
        }
    }
    println!(
        "target: ratio (both sides) <= {TARGET_KEX_RATIO}; raw crypto = X25519 keygen + DH per side, \
         ed25519 sign (server) / key decode + verify (client), exchange hash and key derivation per side"
    );
}

// ------------------------------------------------------------------ bulk

/// Bytes per write in the bulk section: 256 KiB (what OpenSSH moves per
/// read of a file descriptor is 16-64 KiB) and 1 MiB, which the core can
/// only half seal at once (channel data fills at most half of the 1 MiB
/// output cap), so the rest waits in the channel's queue (the owned buffer
/// itself, not a copy), and whose working set (data, output, input)
/// outgrows a 2 MiB L2 cache.
const BULK_WRITES: [usize; 2] = [256 << 10, 1 << 20];
const BULK_WRITE_MAX: usize = 1 << 20;
/// Channel data per packet: sansh's largest chunk and the default maximum
/// packet of the receiving channel (OpenSSH's 32 KiB).
const BULK_CHUNK: usize = 32 * 1024;
/// Target: sansh's bulk throughput as a share of the raw construction's.
const TARGET_BULK_PCT: f64 = 80.0;

/// An authenticated pair with one open session channel, driven directly
/// (no link simulator): what the client writes is handed to the server's
/// `handle_input` whole, and the server's window adjustments come back the
/// same way.
struct BulkLink {
    client: Connection,
    server: Connection,
    /// The channel, as each side numbers it.
    client_channel: ChannelId,
    server_channel: ChannelId,
    now: Timestamp,
    data: Vec<u8>,
    /// Compare every delivered byte with what was written (smoke mode).
    verify: bool,
    /// Bytes per `channel_write` in `batch`.
    write: usize,
    /// Channel payload written and delivered (as `ChannelData`) so far.
    written: u64,
    delivered: u64,
    /// Bytes the client put on the wire so far.
    wire: u64,
}

impl BulkLink {
    fn new(cipher: CipherAlgorithm, verify: bool) -> Self {
        let alg = HostKeyAlgorithm::Ed25519;
        let mut client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
        client.transport.ciphers = vec![cipher];
        client.transport.host_key_algorithms = vec![alg];
        client.transport.rekey.bytes = Some(u64::MAX);
        let mut server = ServerConfig { host_keys: vec![host_key(alg)], ..ServerConfig::default() };
        server.transport.ciphers = vec![cipher];
        server.transport.rekey.bytes = Some(u64::MAX);
        let mut pair = Pair::new(client, server, LinkConfig::default(), 11).expect("valid configuration");
        let mut policy = accept_policy("pw");
        pair.on_server_event = Some(Box::new(move |conn, e| {
            policy(conn, e);
            if let Event::ChannelOpenRequest { channel, .. } = e {
                conn.accept_channel(*channel, ChannelOptions::default()).expect("accept the channel");
            }
        }));
        pair.authenticate().expect("authenticates");
        let client_channel = pair.client.open_session(ChannelOptions::default()).expect("open a session");
        let opened = |p: &Pair| {
            p.client_events
                .iter()
                .any(|(_, e)| matches!(e, Event::ChannelOpened { channel } if *channel == client_channel))
        };
        assert!(pair.run_until(pair.now + SimDuration::from_secs(10), opened), "channel opens");
        pair.run_idle(pair.now + SimDuration::from_secs(1));
        let server_channel = pair
            .server_events
            .iter()
            .find_map(|(_, e)| match e {
                Event::ChannelOpenRequest { channel, .. } => Some(*channel),
                _ => None,
            })
            .expect("the server saw the open");
        let Pair { client, server, now, .. } = pair;
        let neg = client.negotiated().expect("negotiated");
        assert_eq!((neg.cipher_c2s, neg.cipher_s2c), (cipher, cipher));
        assert!(client.pending_transmit().is_empty() && server.pending_transmit().is_empty());
        let info = client.channel_info(client_channel).expect("channel");
        assert!(info.open && info.remote_window == u64::from(ChannelOptions::default().window));
        BulkLink {
            client,
            server,
            client_channel,
            server_channel,
            now,
            data: (0..BULK_WRITE_MAX).map(|i| (i % 251) as u8).collect(),
            write: BULK_WRITE_MAX,
            verify,
            written: 0,
            delivered: 0,
            wire: 0,
        }
    }

    /// Writes `len` bytes to the channel and pumps both ways until all of
    /// them came out of the server as `ChannelData` and nothing is left to
    /// send (the window adjustments included). Splits the time between the
    /// sides: every call is charged to the side it ran on.
    fn transfer(&mut self, len: usize) -> Split {
        // The application's buffer, read from somewhere (not timed).
        let owned = self.data[..len].to_vec();
        let start = Instant::now();
        let lap = Cell::new(start);
        let (mut tc, mut ts) = (Duration::ZERO, Duration::ZERO);
        let charge = |side: &mut Duration| {
            let t = Instant::now();
            *side += t - lap.get();
            lap.set(t);
        };
        self.client.channel_write_owned(self.client_channel, owned).expect("write");
        charge(&mut tc);
        self.written += len as u64;
        let mut delivered = 0;
        loop {
            let mut progressed = false;
            let out = self.client.pending_transmit();
            if !out.is_empty() {
                // The link: the client's bytes land in the server's receive
                // buffer, as the tokio adapter reads the socket straight into
                // it. That copy stands in for the kernel's and is charged to
                // neither side.
                let n = out.len();
                charge(&mut tc);
                self.server.receive_bytes(n).extend_from_slice(out);
                lap.set(Instant::now());
                self.server.commit_received(self.now, n).expect("server input");
                charge(&mut ts);
                self.client.consume_transmit(n);
                charge(&mut tc);
                self.wire += n as u64;
                progressed = true;
            }
            while let Some(e) = self.server.poll_event() {
                match e {
                    Event::ChannelData { channel, data } => {
                        assert_eq!(channel, self.server_channel);
                        if self.verify {
                            assert_eq!(data, self.data[delivered..delivered + data.len()], "data intact");
                        }
                        delivered += data.len();
                        // Written out by the reader: dropped.
                        drop(data);
                    }
                    e => panic!("unexpected server event {e:?}"),
                }
                progressed = true;
            }
            charge(&mut ts);
            let out = self.server.pending_transmit();
            if !out.is_empty() {
                let n = out.len();
                self.client.handle_input(self.now, out).expect("client input");
                charge(&mut tc);
                self.server.consume_transmit(n);
                charge(&mut ts);
                progressed = true;
            }
            while let Some(e) = self.client.poll_event() {
                assert!(matches!(e, Event::ChannelWritable { .. }), "unexpected client event {e:?}");
                progressed = true;
            }
            charge(&mut tc);
            if delivered >= len
                && self.client.pending_transmit().is_empty()
                && self.server.pending_transmit().is_empty()
            {
                break;
            }
            assert!(progressed, "bulk transfer stalled at {delivered} of {len} bytes");
        }
        assert_eq!(delivered, len, "every byte written is delivered, once");
        self.delivered += delivered as u64;
        // Both sides' time; the link's copies are nobody's.
        Split { total: tc + ts, client: tc, server: ts }
    }

    fn batch(&mut self, n: u64) -> Split {
        let mut sum = Split::default();
        for _ in 0..n {
            let t = self.transfer(self.write);
            sum.client += t.client;
            sum.server += t.server;
        }
        sum.total = sum.client + sum.server;
        sum
    }
}

fn bench_bulk(s: &Settings, verify: bool) {
    println!(
        "bulk: one session channel client -> server, {BULK_CHUNK}-byte CHANNEL_DATA, window 2 MiB;\n\
         MB/s of channel payload per core (both sides on this thread); raw = seal+open of the same packets"
    );
    println!(
        "{:<30} {:>7} {:>9} {:>11} {:>9} {:>10} {:>10} {:>10} {:>16}",
        "cipher",
        "write",
        "raw MB/s",
        "sansh MB/s",
        "sansh/raw",
        "raw µs/MiB",
        "client µs",
        "server µs",
        "spread raw/sansh"
    );
    for write in BULK_WRITES {
        let packets = write / BULK_CHUNK;
        for cipher in CipherAlgorithm::ALL.into_iter().filter(|c| c.is_aead()) {
            let mut sansh = BulkLink::new(cipher, verify);
            sansh.write = write;
            // One packet's worth first: its size on the wire sizes the reference.
            let wire = sansh.wire;
            sansh.transfer(BULK_CHUNK);
            let packet = (sansh.wire - wire) as usize;
            let mut raw = RawLink::new(cipher, packet - 16);
            let samples = measure(s, &mut [&mut |n| raw.batch(n * packets as u64), &mut |n| sansh.batch(n)]);
            let (raw_ns, raw_spread) = stats(&samples[0], |p| p.total);
            let (sansh_ns, sansh_spread) = stats(&samples[1], |p| p.total);
            let (client_ns, _) = stats(&samples[1], |p| p.client);
            let (server_ns, _) = stats(&samples[1], |p| p.server);
            let mbps = |ns: f64| write as f64 / ns * 1e3;
            // Times per unit (one write) as µs per MiB of payload.
            let per_mib = |ns: f64| ns / 1e3 * (1 << 20) as f64 / write as f64;
            // sansh/raw MB/s = raw/sansh time, taken per round.
            let pct = paired_ratio(&samples[1], &samples[0], |p| p.total) * 100.0;
            println!(
                "{:<30} {:>6}K {:>9.1} {:>11.1} {:>8.1}% {:>10.1} {:>10.1} {:>10.1} {:>7.1}% /{:>6.1}%{}",
                cipher.name(),
                write >> 10,
                mbps(raw_ns),
                mbps(sansh_ns),
                pct,
                per_mib(raw_ns),
                per_mib(client_ns),
                per_mib(server_ns),
                raw_spread * 100.0,
                sansh_spread * 100.0,
                if pct < TARGET_BULK_PCT { "  UNDER TARGET" } else { "" }
            );
            assert_eq!(sansh.delivered, sansh.written, "bytes delivered = bytes written");
            let stats = sansh.server.stats();
            assert!(!sansh.server.is_closed() && !sansh.client.is_closed() && stats.rekeys == 0);
            assert_eq!(stats.bytes_received, sansh.client.stats().bytes_sent);
        }
    }
    println!(
        "target: sansh/raw >= {TARGET_BULK_PCT}%; µs per MiB of payload; client/server: time inside each \
         side's calls (the link's copy, client buffer to server buffer, is neither's)"
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let s = if full {
        Settings {
            reps: 15,
            target: Duration::from_millis(40),
            warmup: Duration::from_millis(300),
            wall: Cell::default(),
            waited: Cell::default(),
        }
    } else {
        Settings {
            reps: 1,
            target: Duration::ZERO,
            warmup: Duration::ZERO,
            wall: Cell::default(),
            waited: Cell::default(),
        }
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", load.trim());
    }
    println!(
        "{} rounds of ~{} ms batches per subject, interleaved; median batch shown;\n\
         ratio and overhead: median of the per-round ratios\n",
        s.reps,
        s.target.as_millis()
    );
    // `cargo bench --bench transport -- kex` runs only the sections whose
    // name contains one of the words given.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if wanted("seal-open") {
        bench_seal_open(&s);
    }
    if wanted("kex") {
        bench_kex(&s);
    }
    if wanted("bulk") {
        bench_bulk(&s, !full);
    }
    println!(
        "\nwaited for a CPU (other processes): {:.1}% of {:.1} s timed, subtracted",
        s.waited.get().as_secs_f64() / s.wall.get().as_secs_f64().max(1e-12) * 100.0,
        s.wall.get().as_secs_f64()
    );
}
