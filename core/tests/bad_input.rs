//! Bad input from the network: every case must end in a specific error,
//! exactly one `Event::Closed`, a DISCONNECT where the protocol allows one,
//! and never a panic.
//!
//! Raw cases drive one `Connection` directly, playing the peer by hand with
//! unencrypted packets framed here; post-handshake cases use `testing::Pair`
//! and corrupt bytes in flight.

use sansh::testing::{Fault, Pair, host_key};
use sansh::wire::DecodeError;
use sansh::{
    CipherAlgorithm, ClientConfig, CloseReason, Connection, DisconnectCode, Duration, Error, Event,
    HostKeyAlgorithm, MacAlgorithm, Role, ServerConfig, State, Timestamp,
};

// ------------------------------------------------------------------ helpers

/// The version line our hand-made peer sends.
const PEER_VERSION: &[u8] = b"SSH-2.0-RawPeer_1.0\r\n";

const KEXINIT: u8 = 20;
const DISCONNECT: u8 = 1;
const IGNORE: u8 = 2;
const UNIMPLEMENTED: u8 = 3;
const DEBUG: u8 = 4;
const SERVICE_REQUEST: u8 = 5;
const SERVICE_ACCEPT: u8 = 6;
const NEWKEYS: u8 = 21;
const KEX_ECDH_INIT: u8 = 30;
const KEX_ECDH_REPLY: u8 = 31;
const USERAUTH_SUCCESS: u8 = 52;
const CHANNEL_DATA: u8 = 94;

const STRICT_C: &str = "kex-strict-c-v00@openssh.com";
const STRICT_S: &str = "kex-strict-s-v00@openssh.com";

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

/// An unencrypted binary packet with explicit fields (which may be wrong on
/// purpose): uint32 packet_length, byte padding_length, payload, then
/// `padding_bytes` bytes of padding.
fn frame_raw(packet_len: u32, padding_len: u8, payload: &[u8], padding_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len() + padding_bytes);
    put_u32(&mut out, packet_len);
    out.push(padding_len);
    out.extend_from_slice(payload);
    out.extend((0..padding_bytes).map(|i| 0xa5 ^ i as u8));
    out
}

/// A well-formed unencrypted packet: (4 + packet_length) % 8 == 0, padding ≥ 4.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let packet = frame_raw((1 + payload.len() + pad) as u32, pad as u8, payload, pad);
    assert_eq!(packet.len() % 8, 0);
    packet
}

/// A KEXINIT payload, fields in RFC 4253 §7.1 order (as `KexInit::encode`).
fn kexinit(kex: &[&str], host_key: &[&str], ciphers: &[&str]) -> Vec<u8> {
    kexinit_with_compression(kex, host_key, ciphers, &["none"])
}

/// `kexinit` with the given compression list (both directions).
fn kexinit_with_compression(kex: &[&str], host_key: &[&str], ciphers: &[&str], comp: &[&str]) -> Vec<u8> {
    let mut p = vec![KEXINIT];
    p.extend_from_slice(&[0x42; 16]); // cookie
    let macs = ["hmac-sha2-256"];
    let none: [&str; 0] = [];
    for list in [kex, host_key, ciphers, ciphers, &macs, &macs, comp, comp, &none, &none] {
        put_string(&mut p, list.join(",").as_bytes());
    }
    p.push(0); // first_kex_packet_follows
    put_u32(&mut p, 0); // reserved
    p
}

const ALL_CIPHERS: [&str; 3] =
    ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"];

/// The KEXINIT our hand-made peer sends to a connection of role `to`,
/// with or without that peer's strict-kex marker.
fn peer_kexinit(to: Role, strict: bool) -> Vec<u8> {
    let mut kex = vec!["curve25519-sha256"];
    if strict {
        kex.push(match to {
            Role::Client => STRICT_S,
            Role::Server => STRICT_C,
        });
    }
    kexinit(&kex, &["ssh-ed25519"], &ALL_CIPHERS)
}

fn ignore_payload(data: &[u8]) -> Vec<u8> {
    let mut p = vec![IGNORE];
    put_string(&mut p, data);
    p
}

fn disconnect_payload(code: u32, text: &str) -> Vec<u8> {
    let mut p = vec![DISCONNECT];
    put_u32(&mut p, code);
    put_string(&mut p, text.as_bytes());
    put_string(&mut p, b"");
    p
}

/// Payloads of the unencrypted packets in `bytes`, after an optional
/// version line. Panics on anything else: callers only use it where nothing
/// is encrypted yet.
fn plain_packets(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.starts_with(b"SSH-") {
        let nl = bytes.iter().position(|&b| b == b'\n').expect("version line");
        bytes = &bytes[nl + 1..];
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "partial packet header: {bytes:?}");
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let pad = bytes[4] as usize;
        assert!(bytes.len() >= 4 + len, "partial packet");
        assert_eq!((4 + len) % 8, 0, "misaligned plaintext packet");
        assert!(pad >= 4 && pad + 1 < len, "bad padding {pad} for {len}");
        out.push(bytes[5..4 + len - pad].to_vec());
        bytes = &bytes[4 + len..];
    }
    out
}

/// Decodes a DISCONNECT payload: (code, description).
fn parse_disconnect(p: &[u8]) -> (DisconnectCode, String) {
    assert_eq!(p[0], DISCONNECT, "not a DISCONNECT: {p:?}");
    let code = u32::from_be_bytes(p[1..5].try_into().unwrap());
    let len = u32::from_be_bytes(p[5..9].try_into().unwrap()) as usize;
    let text = String::from_utf8(p[9..9 + len].to_vec()).unwrap();
    (DisconnectCode(code), text)
}

/// The one `Closed` reason among `events`; fails unless there is exactly one.
fn single_close(events: &[Event]) -> CloseReason {
    let closes: Vec<&CloseReason> = events
        .iter()
        .filter_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 1, "expected exactly one Closed: {events:?}");
    closes[0].clone()
}

fn client_config(strict: bool) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.transport.strict_kex = strict;
    c
}

fn server_config(strict: bool) -> ServerConfig {
    let mut s =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    s.transport.strict_kex = strict;
    s
}

/// One `Connection` driven by hand: the test plays the peer.
struct Raw {
    conn: Connection,
    now: u64,
}

impl Raw {
    /// A connection of `role` whose version line and KEXINIT have already
    /// been "written" (so `pending_transmit` only shows what comes next).
    fn new(role: Role, strict: bool) -> Raw {
        let conn = match role {
            Role::Client => Connection::client(client_config(strict), Timestamp::ZERO, [1; 32]),
            Role::Server => Connection::server(server_config(strict), Timestamp::ZERO, [2; 32]),
        }
        .expect("valid config");
        let mut raw = Raw { conn, now: 0 };
        let tx = raw.take_tx();
        let packets = plain_packets(&tx);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][0], KEXINIT);
        assert!(raw.events().is_empty());
        raw
    }

    /// Like `new`, with the peer's version line already received.
    fn after_version(role: Role, strict: bool) -> Raw {
        let mut raw = Raw::new(role, strict);
        raw.feed(PEER_VERSION).expect("good version line");
        assert_eq!(raw.events(), [Event::StateChanged { state: State::Kex }], "{role:?}");
        raw
    }

    /// A connection made by the caller, with its first output written and
    /// the peer's version line received.
    fn from_conn(conn: Connection) -> Raw {
        let mut raw = Raw { conn, now: 0 };
        raw.take_tx();
        raw.feed(PEER_VERSION).expect("good version line");
        raw.events();
        raw
    }

    /// Like `after_version`, with the peer's KEXINIT (strict or not) received
    /// and our reply (a client's KEX_ECDH_INIT) written.
    fn after_kexinit(role: Role, our_strict: bool, peer_strict: bool) -> Raw {
        let mut raw = Raw::after_version(role, our_strict);
        raw.feed(&frame(&peer_kexinit(role, peer_strict))).expect("good KEXINIT");
        let sent = plain_packets(&raw.take_tx());
        match role {
            Role::Client => assert_eq!(sent.iter().map(|p| p[0]).collect::<Vec<_>>(), [30]),
            Role::Server => assert!(sent.is_empty()),
        }
        assert!(raw.events().is_empty());
        raw
    }

    fn tick(&mut self) -> Timestamp {
        self.now += 1;
        Timestamp::from_millis(self.now)
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let now = self.tick();
        self.conn.handle_input(now, bytes)
    }

    fn eof(&mut self) {
        let now = self.tick();
        self.conn.handle_eof(now);
    }

    /// Everything pending, marked as written.
    fn take_tx(&mut self) -> Vec<u8> {
        let tx = self.conn.pending_transmit().to_vec();
        self.conn.consume_transmit(tx.len());
        tx
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// After an error `err` was returned: exactly one `Closed` with it,
    /// nothing else but state changes, and either the DISCONNECT it maps to
    /// (`disconnect`) as the last thing written, or nothing written at all.
    fn assert_failed(&mut self, err: &Error, disconnect: bool) {
        let events = self.events();
        assert_eq!(single_close(&events), CloseReason::Error(err.clone()));
        assert!(
            events.iter().all(|e| matches!(e, Event::Closed { .. } | Event::StateChanged { .. })),
            "{events:?}"
        );
        assert!(self.conn.is_closed());
        let tx = self.take_tx();
        if disconnect {
            assert!(events.contains(&Event::StateChanged { state: State::Closing }), "{events:?}");
            let packets = plain_packets(&tx);
            let last = packets.last().expect("a DISCONNECT was written");
            let (code, text) = parse_disconnect(last);
            assert_eq!(code, err.disconnect_code());
            assert_eq!(text, err.to_string());
            // Written: Closing becomes Closed.
            assert_eq!(self.conn.state(), State::Closed);
            assert_eq!(self.events(), [Event::StateChanged { state: State::Closed }]);
        } else {
            assert!(tx.is_empty(), "nothing may be sent: {tx:?}");
            assert_eq!(self.conn.state(), State::Closed);
        }
        self.assert_dead();
    }

    /// Closed for good: input ignored, commands refused, no second Closed.
    fn assert_dead(&mut self) {
        assert_eq!(self.feed(b"\0\0\0\x0cgarbage garbage"), Ok(()));
        self.eof();
        let now = self.tick();
        self.conn.handle_timeout(now);
        assert_eq!(self.conn.send_ignore(b"x"), Err(Error::Closed));
        assert_eq!(self.conn.send_debug(true, "x"), Err(Error::Closed));
        assert_eq!(self.conn.rekey(), Err(Error::Closed));
        assert_eq!(self.conn.ping(b"x"), Err(Error::Closed));
        assert_eq!(self.conn.accept_host_key(1), Err(Error::Closed));
        assert_eq!(self.conn.reject_host_key(1), Err(Error::Closed));
        assert_eq!(self.conn.disconnect(DisconnectCode::BY_APPLICATION, "bye"), Err(Error::Closed));
        assert!(self.events().is_empty(), "events after close");
        assert!(self.conn.pending_transmit().is_empty(), "output after close");
        assert_eq!(self.conn.poll_timeout(), None);
        assert_eq!(self.conn.state(), State::Closed);
    }
}

/// Feeds `input` to `raw` and checks it fails with `expected`, closing once
/// with a DISCONNECT when `disconnect`.
#[track_caller]
fn expect_failure(raw: &mut Raw, input: &[u8], expected: Error, disconnect: bool) {
    let err = raw.feed(input).expect_err("bad input must fail");
    assert_eq!(err, expected);
    raw.assert_failed(&expected, disconnect);
}

/// Like `expect_failure` when only the variant (and not every field) of the
/// error is stable; returns the error.
#[track_caller]
fn expect_failure_matching(
    raw: &mut Raw,
    input: &[u8],
    check: impl FnOnce(&Error) -> bool,
    disconnect: bool,
) -> Error {
    let err = raw.feed(input).expect_err("bad input must fail");
    assert!(check(&err), "unexpected error {err:?}");
    raw.assert_failed(&err, disconnect);
    err
}

const ROLES: [Role; 2] = [Role::Client, Role::Server];

// --------------------------------------------------- 1. oversized packets

#[test]
fn oversized_packet_length_fails_before_the_body_arrives() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        // Three bytes of the length: not yet decidable.
        assert_eq!(raw.feed(&[0x7f, 0xff, 0xff]), Ok(()));
        assert!(!raw.conn.is_closed());
        // The fourth byte completes the length: fails at once, no body sent.
        expect_failure(&mut raw, &[0xf0], Error::PacketTooLarge { len: 0x7fff_fff0, max: 256 * 1024 }, true);
    }
}

#[test]
fn oversized_packet_length_in_the_same_chunk_as_the_version_line() {
    for role in ROLES {
        let mut raw = Raw::new(role, true);
        let mut input = PEER_VERSION.to_vec();
        input.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
        expect_failure(&mut raw, &input, Error::PacketTooLarge { len: 0x7fff_fff0, max: 256 * 1024 }, true);
    }
}

#[test]
fn packet_length_cap_follows_the_config_with_a_35000_floor() {
    let client = |max| {
        let mut c = client_config(true);
        c.transport.max_packet_len = max;
        Raw::from_conn(Connection::client(c, Timestamp::ZERO, [3; 32]).unwrap())
    };
    // max_packet_len 40000: a length of 39996 is waited for, 40008 refused.
    let mut raw = client(40_000);
    // (4 + 39996 is a multiple of 8.)
    assert_eq!(raw.feed(&39_996u32.to_be_bytes()), Ok(()), "under the cap");
    assert!(!raw.conn.is_closed());
    let mut raw = client(40_000);
    expect_failure(
        &mut raw,
        &40_008u32.to_be_bytes(),
        Error::PacketTooLarge { len: 40_008, max: 40_000 },
        true,
    );

    // A smaller configured cap is raised to RFC 4253's 35000.
    let mut s = server_config(true);
    s.transport.max_packet_len = 100;
    let mut raw = Raw::from_conn(Connection::server(s, Timestamp::ZERO, [4; 32]).unwrap());
    assert_eq!(raw.feed(&34_996u32.to_be_bytes()), Ok(()));
    assert!(!raw.conn.is_closed());
    let mut s = server_config(true);
    s.transport.max_packet_len = 100;
    let mut raw = Raw::from_conn(Connection::server(s, Timestamp::ZERO, [4; 32]).unwrap());
    expect_failure(
        &mut raw,
        &35_008u32.to_be_bytes(),
        Error::PacketTooLarge { len: 35_008, max: 35_000 },
        true,
    );
}

#[test]
fn misaligned_or_tiny_packet_length_is_refused() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        expect_failure(&mut raw, &13u32.to_be_bytes(), Error::BadPacketLength { len: 13, block: 8 }, true);
        let mut raw = Raw::after_version(role, true);
        expect_failure(&mut raw, &4u32.to_be_bytes(), Error::BadPacketLength { len: 4, block: 8 }, true);
    }
}

// ------------------------------------------------------- 2. bad MAC / tag

/// A pair that finished its handshake with `cipher` in both directions.
fn handshaken_pair(cipher: CipherAlgorithm, strict: bool, seed: u64) -> Pair {
    handshaken_pair_with_mac(cipher, None, strict, seed)
}

/// `handshaken_pair`, with `mac` forced (for the aes*-ctr ciphers).
fn handshaken_pair_with_mac(
    cipher: CipherAlgorithm,
    mac: Option<MacAlgorithm>,
    strict: bool,
    seed: u64,
) -> Pair {
    let mut client = client_config(strict);
    client.transport.ciphers = vec![cipher];
    let mut server = server_config(strict);
    server.transport.ciphers = vec![cipher];
    if let Some(mac) = mac {
        client.transport.macs = vec![mac];
        server.transport.macs = vec![mac];
    }
    let mut pair = Pair::new(client, server, Default::default(), seed).unwrap();
    pair.handshake().unwrap();
    // Let what the handshake set off settle, so only the test's packet flies.
    let limit = pair.now + Duration::from_secs(1);
    pair.run_idle(limit);
    assert!(!pair.client.is_closed() && !pair.server.is_closed());
    let neg = pair.client.negotiated().unwrap();
    assert_eq!((neg.cipher_c2s, neg.cipher_s2c), (cipher, cipher));
    if mac.is_some() {
        assert_eq!((neg.mac_c2s, neg.mac_s2c), (mac, mac));
    }
    assert_eq!(neg.strict, strict);
    pair
}

/// Every cipher, the aes*-ctr ones once with each MAC.
fn cipher_suites() -> Vec<(CipherAlgorithm, Option<MacAlgorithm>)> {
    let mut v = Vec::new();
    for cipher in CipherAlgorithm::ALL {
        if cipher.is_aead() {
            v.push((cipher, None));
        } else {
            v.extend(MacAlgorithm::ALL.map(|m| (cipher, Some(m))));
        }
    }
    v
}

fn events_of(pair: &Pair, role: Role) -> Vec<Event> {
    pair.events(role).into_iter().cloned().collect()
}

/// A tamper hook that XORs `mask` into byte `at` (counted from the end when
/// negative) of the first chunk it sees, then lets everything through.
/// What `Pair::tamper_s2c` / `tamper_c2s` hold.
type Tamper = Option<Box<dyn FnMut(&mut Vec<u8>)>>;

fn flip_once(at: isize, mask: u8) -> Tamper {
    let mut armed = true;
    Some(Box::new(move |chunk: &mut Vec<u8>| {
        if armed {
            armed = false;
            let i = if at < 0 { chunk.len() - at.unsigned_abs() } else { at as usize };
            chunk[i] ^= mask;
        }
    }))
}

#[test]
fn corrupted_encrypted_packet_gives_bad_mac_for_every_cipher_and_direction() {
    for strict in [true, false] {
        for (cipher, mac) in cipher_suites() {
            // Byte 4 is the first encrypted byte after the length for every
            // cipher (the AES-GCM and EtM lengths are authenticated but in
            // the clear; chacha's and plain-MAC CTR's encrypted length is
            // left alone so the length stays right); -1 is the last tag or
            // MAC byte.
            for at in [4isize, 9, -1] {
                for sender in ROLES {
                    let seed = 100 + at.unsigned_abs() as u64;
                    let mut pair = handshaken_pair_with_mac(cipher, mac, strict, seed);
                    let receiver = match sender {
                        Role::Client => Role::Server,
                        Role::Server => Role::Client,
                    };
                    let before = events_of(&pair, receiver).len();
                    match sender {
                        Role::Server => pair.tamper_s2c = flip_once(at, 0x20),
                        Role::Client => pair.tamper_c2s = flip_once(at, 0x20),
                    }
                    let conn = match sender {
                        Role::Server => &mut pair.server,
                        Role::Client => &mut pair.client,
                    };
                    // The corrupted IGNORE's sequence number: strict kex resets
                    // it after NEWKEYS (the sender's 3rd packet, after KEXINIT
                    // and KEX_ECDH_*); without strict kex it counts from KEXINIT.
                    let sent = conn.stats().packets_sent as u32;
                    let seq = if strict { sent - 3 } else { sent };
                    conn.send_ignore(b"keepalive payload").unwrap();
                    let limit = pair.now + Duration::from_secs(10);
                    pair.run_idle(limit);

                    let ctx = format!("{cipher:?} {mac:?} strict={strict} at={at} from {sender:?}");
                    let expected = Error::BadMac { seq };
                    let (errors, sender_conn, receiver_conn) = match receiver {
                        Role::Client => (&pair.client_errors, &pair.server, &pair.client),
                        Role::Server => (&pair.server_errors, &pair.client, &pair.server),
                    };
                    assert_eq!(errors, &vec![expected.clone()], "{ctx}");
                    assert!(receiver_conn.is_closed() && sender_conn.is_closed(), "{ctx}");
                    let recv_events = events_of(&pair, receiver);
                    assert_eq!(
                        single_close(&recv_events[before..]),
                        CloseReason::Error(expected.clone()),
                        "{ctx}"
                    );
                    assert_eq!(single_close(&recv_events), CloseReason::Error(expected.clone()));
                    // The receiver's DISCONNECT (encrypted) reached the sender,
                    // which decrypted it.
                    assert_eq!(
                        single_close(&events_of(&pair, sender)),
                        CloseReason::PeerDisconnect {
                            code: DisconnectCode::MAC_ERROR,
                            description: expected.to_string(),
                        },
                        "{ctx}"
                    );
                    assert_eq!(pair.client_errors.len() + pair.server_errors.len(), 1);
                }
            }
        }
    }
}

/// aes*-ctr: a corrupted packet length (encrypted with a plain MAC, in
/// clear with EtM) is refused as soon as it is read, before the body and
/// the MAC are waited for: over the cap, or off the 16-byte alignment.
/// CTR is a stream cipher, so the decrypted length has the same bit flipped.
#[test]
fn corrupted_length_under_aes_ctr_is_refused_before_the_body() {
    for cipher in [CipherAlgorithm::Aes128Ctr, CipherAlgorithm::Aes192Ctr, CipherAlgorithm::Aes256Ctr] {
        for mac in MacAlgorithm::ALL {
            for (at, mask) in [(0usize, 0x80u8), (3, 0x01), (3, 0x04)] {
                for sender in ROLES {
                    let mut pair = handshaken_pair_with_mac(cipher, Some(mac), true, 200 + at as u64);
                    let receiver = match sender {
                        Role::Client => Role::Server,
                        Role::Server => Role::Client,
                    };
                    match sender {
                        Role::Server => pair.tamper_s2c = flip_once(at as isize, mask),
                        Role::Client => pair.tamper_c2s = flip_once(at as isize, mask),
                    }
                    let conn = match sender {
                        Role::Server => &mut pair.server,
                        Role::Client => &mut pair.client,
                    };
                    // IGNORE of 17 bytes: a 22-byte payload. RFC 4253 §6 with
                    // 16-byte blocks: 4 + 1 + 22 + 5 = 32 with a plain MAC
                    // (length aligned with the rest), 1 + 22 + 9 = 32 after
                    // the length with EtM.
                    conn.send_ignore(b"keepalive payload").unwrap();
                    let packet_len: u32 = if mac.is_etm() { 32 } else { 28 };
                    let flipped = packet_len ^ (u32::from(mask) << (8 * (3 - at)));
                    let expected = if at == 0 {
                        Error::PacketTooLarge { len: flipped, max: 256 * 1024 }
                    } else {
                        Error::BadPacketLength { len: flipped, block: 16 }
                    };
                    let limit = pair.now + Duration::from_secs(10);
                    pair.run_idle(limit);
                    let ctx = format!("{cipher:?} {mac:?} at={at} mask={mask:#x} from {sender:?}");
                    let errors = match receiver {
                        Role::Client => &pair.client_errors,
                        Role::Server => &pair.server_errors,
                    };
                    assert_eq!(errors, &vec![expected.clone()], "{ctx}");
                    assert_eq!(pair.client_errors.len() + pair.server_errors.len(), 1, "{ctx}");
                    assert_eq!(
                        single_close(&events_of(&pair, receiver)),
                        CloseReason::Error(expected.clone()),
                        "{ctx}"
                    );
                    assert_eq!(
                        single_close(&events_of(&pair, sender)),
                        CloseReason::PeerDisconnect {
                            code: DisconnectCode::PROTOCOL_ERROR,
                            description: expected.to_string(),
                        },
                        "{ctx}"
                    );
                }
            }
        }
    }
}

// -------------------------------------------------- 3. bad padding length

#[test]
fn padding_length_below_four_is_refused() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        // packet_length 12: padding_length 3, an 8-byte payload, 3 bytes of padding.
        let packet = frame_raw(12, 3, &ignore_payload(b"abc")[..8], 3);
        assert_eq!(packet.len(), 16);
        expect_failure(&mut raw, &packet, Error::BadPaddingLength { padding: 3, packet_len: 12 }, true);
    }
}

#[test]
fn padding_length_not_below_packet_length_is_refused() {
    for (padding, packet_len) in [(12u8, 12u32), (200, 12), (11, 12), (255, 28)] {
        for role in ROLES {
            let mut raw = Raw::after_version(role, true);
            let packet = frame_raw(packet_len, padding, &[], packet_len as usize - 1);
            expect_failure(&mut raw, &packet, Error::BadPaddingLength { padding, packet_len }, true);
        }
    }
}

// ---------------------------------------------------------- 4. truncation

#[test]
fn eof_in_the_middle_of_a_packet_is_truncated() {
    let packet = frame(&peer_kexinit(Role::Server, true));
    // Cut inside the length field, right after it, and inside the body.
    for cut in [2, 4, 7, packet.len() - 1] {
        for role in ROLES {
            let mut raw = Raw::after_version(role, true);
            raw.feed(&packet[..cut]).unwrap();
            assert!(!raw.conn.is_closed());
            raw.eof();
            let events = raw.events();
            assert_eq!(
                single_close(&events),
                CloseReason::Error(Error::Truncated { buffered: cut }),
                "{role:?} cut at {cut}"
            );
            // The peer is gone: nothing is sent.
            assert!(raw.take_tx().is_empty());
            assert_eq!(raw.conn.state(), State::Closed);
            raw.assert_dead();
        }
    }
}

#[test]
fn truncated_counts_only_the_unprocessed_bytes() {
    // Version line and 7 bytes of a packet in one read: 7 bytes are pending.
    for role in ROLES {
        let mut raw = Raw::new(role, true);
        let mut input = PEER_VERSION.to_vec();
        input.extend_from_slice(&frame(&ignore_payload(b"hello"))[..7]);
        raw.feed(&input).unwrap();
        raw.eof();
        let events = raw.events();
        assert_eq!(single_close(&events), CloseReason::Error(Error::Truncated { buffered: 7 }), "{role:?}");
    }
}

#[test]
fn eof_while_the_host_key_decision_is_pending_is_not_truncated() {
    // The server's NEWKEYS and EXT_INFO arrived whole while the application
    // looks at the host key; then the server hangs up (sshd's LoginGraceTime
    // closes without a DISCONNECT). No packet was cut.
    let mut pair = Pair::with_host_key(HostKeyAlgorithm::Ed25519, 0, 16);
    pair.auto_accept_host_key = false;
    let limit = pair.now + Duration::from_secs(10);
    assert!(
        pair.run_until(limit, |p| { p.client_events.iter().any(|(_, e)| matches!(e, Event::HostKey(_))) })
    );
    pair.run_idle(limit);
    assert!(!pair.client.is_closed());
    let now = pair.now;
    pair.client.handle_eof(now);
    let events: Vec<Event> = std::iter::from_fn(|| pair.client.poll_event()).collect();
    assert_eq!(single_close(&events), CloseReason::Eof);
}

#[test]
fn eof_in_the_middle_of_the_version_line_is_truncated() {
    for role in ROLES {
        let mut raw = Raw::new(role, true);
        raw.feed(b"SSH-2.0-Open").unwrap();
        raw.eof();
        assert_eq!(single_close(&raw.events()), CloseReason::Error(Error::Truncated { buffered: 12 }));
        assert!(raw.take_tx().is_empty());
        raw.assert_dead();
    }
}

#[test]
fn truncated_kexinit_inside_a_valid_packet_is_malformed() {
    for role in ROLES {
        let full = peer_kexinit(role, true);
        // 1 (number) + 16 (cookie) + 4 (list length) + 5 bytes of the list.
        let cases = [
            (10, "cookie"),
            (26, "kex algorithms"),
            (full.len() - 3, "reserved"),
            (full.len() - 5, "first_kex_packet_follows"),
        ];
        for (cut, field) in cases {
            let mut raw = Raw::after_version(role, true);
            expect_failure(
                &mut raw,
                &frame(&full[..cut]),
                Error::Malformed { message: "KEXINIT", reason: DecodeError::Truncated(field) },
                true,
            );
        }
    }
}

#[test]
fn truncated_kex_and_transport_messages_are_malformed() {
    // KEX_ECDH_INIT to a server with a public key string cut short.
    let mut raw = Raw::after_kexinit(Role::Server, true, true);
    let mut p = vec![KEX_ECDH_INIT];
    put_u32(&mut p, 32);
    p.extend_from_slice(&[9; 10]);
    expect_failure(
        &mut raw,
        &frame(&p),
        Error::Malformed { message: "KEX_ECDH_INIT", reason: DecodeError::Truncated("client public key") },
        true,
    );
    // KEX_ECDH_REPLY to a client missing its signature.
    let mut raw = Raw::after_kexinit(Role::Client, true, true);
    let mut p = vec![KEX_ECDH_REPLY];
    put_string(&mut p, b"host key blob");
    put_string(&mut p, &[7; 32]);
    expect_failure(
        &mut raw,
        &frame(&p),
        Error::Malformed { message: "KEX_ECDH_REPLY", reason: DecodeError::Truncated("signature") },
        true,
    );
    // DISCONNECT without its reason code; IGNORE without its string.
    for role in ROLES {
        let mut raw = Raw::after_version(role, false);
        expect_failure(
            &mut raw,
            &frame(&[DISCONNECT, 0, 0]),
            Error::Malformed { message: "DISCONNECT", reason: DecodeError::Truncated("reason code") },
            true,
        );
        let mut raw = Raw::after_version(role, false);
        expect_failure(
            &mut raw,
            &frame(&[IGNORE, 0, 0, 0, 9, 1]),
            Error::Malformed { message: "IGNORE", reason: DecodeError::Truncated("data") },
            true,
        );
    }
}

#[test]
fn kex_ecdh_init_with_trailing_bytes_is_malformed() {
    let mut raw = Raw::after_kexinit(Role::Server, true, true);
    let mut p = vec![KEX_ECDH_INIT];
    put_string(&mut p, &[9; 32]);
    p.extend_from_slice(b"xyz");
    expect_failure(
        &mut raw,
        &frame(&p),
        Error::Malformed { message: "KEX_ECDH_INIT", reason: DecodeError::TrailingBytes(3) },
        true,
    );
}

#[test]
fn bad_ephemeral_public_key_is_refused() {
    // 31 bytes, and the all-zero (low order) point.
    for (key, len) in [(vec![9u8; 31], 31), (vec![0u8; 32], 32)] {
        let mut raw = Raw::after_kexinit(Role::Server, true, true);
        let mut p = vec![KEX_ECDH_INIT];
        put_string(&mut p, &key);
        expect_failure(&mut raw, &frame(&p), Error::BadKexPublicKey { len }, true);
    }
}

// -------------------------------------------------------- 5. version line

#[test]
fn http_request_to_a_server_is_a_bad_version_line() {
    let mut raw = Raw::new(Role::Server, true);
    expect_failure(
        &mut raw,
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        Error::BadVersionLine { line: "GET / HTTP/1.1".into() },
        // No DISCONNECT before the peer's version: it would not parse it.
        false,
    );
}

#[test]
fn a_client_treats_non_ssh_lines_as_banner() {
    let mut raw = Raw::new(Role::Client, true);
    let mut input = b"GET / HTTP/1.1\r\n\x01\x02binary\xff\r\nlast\n".to_vec();
    input.extend_from_slice(PEER_VERSION);
    raw.feed(&input).unwrap();
    assert_eq!(raw.conn.banner_lines(), ["GET / HTTP/1.1", "??binary?", "last"]);
    assert_eq!(raw.conn.peer_version(), Some("SSH-2.0-RawPeer_1.0"));
    assert!(!raw.conn.is_closed());
}

#[test]
fn binary_garbage_is_refused() {
    // To a server: any first line that is not SSH- is fatal.
    let mut raw = Raw::new(Role::Server, true);
    expect_failure(
        &mut raw,
        b"\x00\xff\x16\x03\x01\x02\x00\x01\n",
        Error::BadVersionLine { line: "????????".into() },
        false,
    );
    // Garbage without a newline: a server allows no lines before the
    // version, so the line is held to the RFC's 255 bytes.
    let mut raw = Raw::new(Role::Server, true);
    let garbage: Vec<u8> = (0..255u32).map(|i| (i * 37 % 251) as u8 | 0x80).collect();
    assert_eq!(raw.feed(&garbage), Ok(()));
    assert!(!raw.conn.is_closed());
    expect_failure(&mut raw, b"\x80", Error::VersionLineTooLong { max: 255 }, false);
    // To a client: binary garbage is a pre-version line, refused past 8 KiB.
    let mut raw = Raw::new(Role::Client, true);
    let garbage = vec![0x80u8; 8193];
    expect_failure(&mut raw, &garbage, Error::PreVersionLineTooLong { max: 8192 }, false);
}

#[test]
fn ssh_1_is_unsupported() {
    for role in ROLES {
        let mut raw = Raw::new(role, true);
        expect_failure(
            &mut raw,
            b"SSH-1.5-old\r\n",
            Error::UnsupportedProtocolVersion { version: "1.5".into() },
            false,
        );
    }
    // 1.99 means "2.0 too".
    for role in ROLES {
        let mut raw = Raw::new(role, true);
        raw.feed(b"SSH-1.99-compat\r\n").unwrap();
        assert_eq!(raw.conn.peer_version(), Some("SSH-1.99-compat"));
    }
}

#[test]
fn malformed_ssh_lines_are_bad_version_lines() {
    for (line, shown) in [
        (&b"SSH-2.0-\r\n"[..], "SSH-2.0-"),
        (b"SSH-2.0\r\n", "SSH-2.0"),
        (b"SSH-2.0-a\x00b\r\n", "SSH-2.0-a?b"),
    ] {
        for role in ROLES {
            let mut raw = Raw::new(role, true);
            expect_failure(&mut raw, line, Error::BadVersionLine { line: shown.into() }, false);
        }
    }
}

#[test]
fn version_line_longer_than_255_bytes_is_refused() {
    for role in ROLES {
        // Exactly 255 bytes with CR LF: accepted.
        let mut raw = Raw::new(role, true);
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(253, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), 255);
        raw.feed(&line).unwrap();
        assert!(raw.conn.peer_version().is_some());

        // 256 bytes: refused.
        let mut raw = Raw::new(role, true);
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(254, b'a');
        line.extend_from_slice(b"\r\n");
        expect_failure(&mut raw, &line, Error::VersionLineTooLong { max: 255 }, false);

        // Without a newline: refused as soon as it cannot fit any more.
        let mut raw = Raw::new(role, true);
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(255, b'a');
        assert_eq!(raw.feed(&line), Ok(()), "255 bytes could still end");
        expect_failure(&mut raw, b"a", Error::VersionLineTooLong { max: 255 }, false);
    }
}

#[test]
fn client_accepts_1024_banner_lines_but_not_1025() {
    let mut raw = Raw::new(Role::Client, true);
    let mut input = b"banner\r\n".repeat(1024);
    input.extend_from_slice(PEER_VERSION);
    raw.feed(&input).unwrap();
    assert_eq!(raw.conn.banner_lines().len(), 1024);
    assert!(raw.conn.peer_version().is_some());
    assert!(!raw.conn.is_closed());

    let mut raw = Raw::new(Role::Client, true);
    let mut input = b"banner\r\n".repeat(1025);
    input.extend_from_slice(PEER_VERSION);
    expect_failure(&mut raw, &input, Error::TooManyPreVersionLines { max: 1024 }, false);

    // Line by line, the 1025th fails when it completes.
    let mut raw = Raw::new(Role::Client, true);
    for _ in 0..1024 {
        raw.feed(b"x\n").unwrap();
    }
    expect_failure(&mut raw, b"x\n", Error::TooManyPreVersionLines { max: 1024 }, false);
}

#[test]
fn a_server_allows_no_banner_lines() {
    let mut raw = Raw::new(Role::Server, true);
    let mut input = b"hello\r\n".to_vec();
    input.extend_from_slice(PEER_VERSION);
    expect_failure(&mut raw, &input, Error::BadVersionLine { line: "hello".into() }, false);
}

// --------------------------------------------------- 6. wrong-phase messages

fn unexpected(number: u8, message: &'static str, phase: &'static str) -> Error {
    Error::UnexpectedMessage { number, message, phase }
}

const BEFORE_KEX: &str = "before the first key exchange completed";

#[test]
fn upper_layer_messages_before_the_first_kex_are_unexpected() {
    let cases: [(u8, &str); 5] = [
        (USERAUTH_SUCCESS, "USERAUTH_SUCCESS"),
        (CHANNEL_DATA, "CHANNEL_DATA"),
        (SERVICE_ACCEPT, "SERVICE_ACCEPT"),
        (SERVICE_REQUEST, "SERVICE_REQUEST"),
        (7, "EXT_INFO"),
    ];
    for (n, name) in cases {
        let mut payload = vec![n];
        put_string(&mut payload, b"ssh-userauth");
        for role in ROLES {
            // Right after the version line, and after a non-strict KEXINIT.
            let mut raw = Raw::after_version(role, true);
            expect_failure(&mut raw, &frame(&payload), unexpected(n, name, BEFORE_KEX), true);
            let mut raw = Raw::after_kexinit(role, true, false);
            expect_failure(&mut raw, &frame(&payload), unexpected(n, name, BEFORE_KEX), true);
        }
    }
}

#[test]
fn kex_ecdh_reply_to_a_server_and_init_to_a_client_are_unexpected() {
    let mut reply = vec![KEX_ECDH_REPLY];
    put_string(&mut reply, b"k");
    put_string(&mut reply, &[1; 32]);
    put_string(&mut reply, b"s");
    let mut init = vec![KEX_ECDH_INIT];
    put_string(&mut init, &[1; 32]);
    for (role, payload, name) in
        [(Role::Server, &reply, "KEX_ECDH_REPLY"), (Role::Client, &init, "KEX_ECDH_INIT")]
    {
        let n = payload[0];
        let mut raw = Raw::after_kexinit(role, true, false);
        expect_failure(
            &mut raw,
            &frame(payload),
            unexpected(n, name, "at this point of the key exchange"),
            true,
        );
        // Before the peer's KEXINIT, too (strict or not on our side).
        let mut raw = Raw::after_version(role, false);
        expect_failure(&mut raw, &frame(payload), unexpected(n, name, "before the peer's KEXINIT"), true);
    }
}

#[test]
fn newkeys_before_the_exchange_reached_it_is_unexpected() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, false);
        expect_failure(
            &mut raw,
            &frame(&[NEWKEYS]),
            unexpected(NEWKEYS, "NEWKEYS", "before the peer's KEXINIT"),
            true,
        );
        // After KEXINIT, before KEX_ECDH_*: no keys to switch to.
        let mut raw = Raw::after_kexinit(role, true, false);
        expect_failure(
            &mut raw,
            &frame(&[NEWKEYS]),
            unexpected(NEWKEYS, "NEWKEYS", "at this point of the key exchange"),
            true,
        );
    }
}

#[test]
fn second_kexinit_in_one_exchange_is_unexpected() {
    for role in ROLES {
        let mut raw = Raw::after_kexinit(role, true, false);
        expect_failure(
            &mut raw,
            &frame(&peer_kexinit(role, false)),
            unexpected(KEXINIT, "KEXINIT", "twice in one key exchange"),
            true,
        );
    }
}

#[test]
fn kex_ecdh_init_twice_is_unexpected() {
    // The first KEX_ECDH_INIT is answered (REPLY + NEWKEYS); a second one
    // arrives in plaintext since the client has not sent NEWKEYS.
    let mut raw = Raw::after_kexinit(Role::Server, true, false);
    let mut init = vec![KEX_ECDH_INIT];
    put_string(&mut init, &[9; 32]);
    raw.feed(&frame(&init)).unwrap();
    let sent = plain_packets(&raw.take_tx());
    assert_eq!(sent.iter().map(|p| p[0]).collect::<Vec<_>>(), [KEX_ECDH_REPLY, NEWKEYS]);
    // From here our output is encrypted: only check what the error is.
    let err = raw.feed(&frame(&init)).unwrap_err();
    let expected = unexpected(KEX_ECDH_INIT, "KEX_ECDH_INIT", "at this point of the key exchange");
    assert_eq!(err, expected);
    assert_eq!(single_close(&raw.events()), CloseReason::Error(expected));
    assert!(!raw.take_tx().is_empty(), "an encrypted DISCONNECT");
    assert_eq!(raw.events(), [Event::StateChanged { state: State::Closed }]);
    raw.assert_dead();
}

// ------------------------------------------------- 7./8. strict kex rules

#[test]
fn generic_messages_during_the_first_strict_kex_are_fatal() {
    let mut debug = vec![DEBUG, 1];
    put_string(&mut debug, b"hi");
    put_string(&mut debug, b"");
    let cases: [(Vec<u8>, &str); 4] = [
        (ignore_payload(b"x"), "IGNORE received during the initial key exchange"),
        (debug, "DEBUG received during the initial key exchange"),
        (vec![UNIMPLEMENTED, 0, 0, 0, 0], "UNIMPLEMENTED received during the initial key exchange"),
        (vec![200, 1, 2], "message 200 received during the initial key exchange"),
    ];
    for (payload, what) in cases {
        for role in ROLES {
            let mut raw = Raw::after_kexinit(role, true, true);
            expect_failure(&mut raw, &frame(&payload), Error::StrictKex { what: what.into() }, true);
        }
    }
}

#[test]
fn generic_messages_during_a_non_strict_first_kex_are_allowed() {
    let mut debug = vec![DEBUG, 0];
    put_string(&mut debug, b"hi");
    put_string(&mut debug, b"");
    // Either side without the marker makes the exchange non-strict.
    for (ours, theirs) in [(true, false), (false, true), (false, false)] {
        for role in ROLES {
            let mut raw = Raw::after_kexinit(role, ours, theirs);
            raw.feed(&frame(&ignore_payload(b"padding"))).expect("IGNORE is allowed");
            raw.feed(&frame(&debug)).expect("DEBUG is allowed");
            raw.feed(&frame(&[200, 1, 2])).expect("unknown is allowed");
            assert_eq!(raw.events(), [Event::Debug { always_display: false, message: "hi".into() }]);
            assert!(!raw.conn.is_closed());
            // The UNIMPLEMENTED answer waits until our NEWKEYS.
            assert!(raw.take_tx().is_empty());
        }
    }
    // IGNORE before the peer's KEXINIT, when the peer does not ask for
    // strict kex, is fine too.
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        raw.feed(&frame(&ignore_payload(b"x"))).unwrap();
        raw.feed(&frame(&peer_kexinit(role, false))).unwrap();
        assert!(!raw.conn.is_closed());
        assert!(raw.events().is_empty());
    }
}

#[test]
fn kexinit_not_first_under_strict_kex_names_the_packet_number() {
    for (before, n) in [(1usize, 1u32), (3, 3)] {
        for role in ROLES {
            let mut raw = Raw::after_version(role, true);
            for _ in 0..before {
                raw.feed(&frame(&ignore_payload(b"x"))).unwrap();
            }
            expect_failure(
                &mut raw,
                &frame(&peer_kexinit(role, true)),
                Error::StrictKex { what: format!("KEXINIT was packet {n}, not the first") },
                true,
            );
        }
    }
}

#[test]
fn disconnect_is_allowed_during_strict_kex() {
    for role in ROLES {
        let mut raw = Raw::after_kexinit(role, true, true);
        raw.feed(&frame(&disconnect_payload(2, "go away"))).unwrap();
        assert_eq!(
            single_close(&raw.events()),
            CloseReason::PeerDisconnect {
                code: DisconnectCode::PROTOCOL_ERROR,
                description: "go away".into()
            }
        );
        assert!(raw.take_tx().is_empty(), "no DISCONNECT back");
        raw.assert_dead();
    }
}

// ---------------------------------------------- 9. no common algorithm

#[test]
fn no_common_cipher_names_both_lists_on_both_sides() {
    let mut client = client_config(true);
    client.transport.ciphers = vec![CipherAlgorithm::Aes128Gcm];
    let mut server = server_config(true);
    server.transport.ciphers = vec![CipherAlgorithm::ChaCha20Poly1305];
    let mut pair = Pair::new(client, server, Default::default(), 9).unwrap();
    let limit = pair.now + Duration::from_secs(10);
    pair.run_idle(limit);

    let expected = Error::NoCommonAlgorithm {
        kind: sansh::error::AlgorithmKind::CipherClientToServer,
        client: "aes128-gcm@openssh.com".into(),
        server: "chacha20-poly1305@openssh.com".into(),
    };
    assert_eq!(
        expected.to_string(),
        "no common cipher (client to server) algorithm: client offers \
         [aes128-gcm@openssh.com], server offers [chacha20-poly1305@openssh.com]"
    );
    assert_eq!(pair.client_errors, std::slice::from_ref(&expected));
    assert_eq!(pair.server_errors, std::slice::from_ref(&expected));
    for role in ROLES {
        assert_eq!(single_close(&events_of(&pair, role)), CloseReason::Error(expected.clone()), "{role:?}");
        assert!(
            !events_of(&pair, role)
                .iter()
                .any(|e| matches!(e, Event::KexCompleted { .. } | Event::HostKey(_)))
        );
    }
    // Both wrote a plaintext DISCONNECT after their KEXINIT.
    let (c2s, s2c) = pair.transcripts();
    for bytes in [c2s, s2c] {
        let packets = plain_packets(bytes);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0][0], KEXINIT);
        assert_eq!(
            parse_disconnect(&packets[1]),
            (DisconnectCode::KEY_EXCHANGE_FAILED, expected.to_string())
        );
    }
}

#[test]
fn no_common_algorithm_from_a_raw_peer() {
    // Kex methods: the peer's pseudo-algorithms are left out of the message.
    let mut raw = Raw::after_version(Role::Client, true);
    let init = kexinit(&["diffie-hellman-group14-sha256", STRICT_S], &["ssh-ed25519"], &ALL_CIPHERS);
    expect_failure(
        &mut raw,
        &frame(&init),
        Error::NoCommonAlgorithm {
            kind: sansh::error::AlgorithmKind::Kex,
            client: "curve25519-sha256,curve25519-sha256@libssh.org".into(),
            server: "diffie-hellman-group14-sha256".into(),
        },
        true,
    );
    // Host key algorithms, to a server holding only an ed25519 key.
    let mut raw = Raw::after_version(Role::Server, true);
    let init = kexinit(&["curve25519-sha256"], &["rsa-sha2-512"], &ALL_CIPHERS);
    expect_failure(
        &mut raw,
        &frame(&init),
        Error::NoCommonAlgorithm {
            kind: sansh::error::AlgorithmKind::HostKey,
            client: "rsa-sha2-512".into(),
            server: "ssh-ed25519".into(),
        },
        true,
    );
}

#[test]
fn no_common_compression_and_non_ascii_names() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        let init = kexinit_with_compression(
            &["curve25519-sha256"],
            &["ssh-ed25519"],
            &ALL_CIPHERS,
            &["zlib@openssh.com"],
        );
        let (client, server) = match role {
            Role::Client => ("none", "zlib@openssh.com"),
            Role::Server => ("zlib@openssh.com", "none"),
        };
        expect_failure(
            &mut raw,
            &frame(&init),
            Error::NoCommonAlgorithm {
                kind: sansh::error::AlgorithmKind::CompressionClientToServer,
                client: client.into(),
                server: server.into(),
            },
            true,
        );
        // A name-list must be US-ASCII.
        let mut raw = Raw::after_version(role, true);
        let init = kexinit(&["curve25519-sha256\u{e9}"], &["ssh-ed25519"], &ALL_CIPHERS);
        expect_failure(
            &mut raw,
            &frame(&init),
            Error::Malformed { message: "KEXINIT", reason: DecodeError::NotUtf8("kex algorithms") },
            true,
        );
    }
}

// ------------------------------------------ 10. bad host key signature

/// In a chunk the server wrote, the byte range of the signature blob of a
/// plaintext KEX_ECDH_REPLY, if there is one.
fn ecdh_reply_signature(chunk: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut pos = 0;
    if chunk.starts_with(b"SSH-") {
        pos = chunk.iter().position(|&b| b == b'\n')? + 1;
    }
    let u32_at = |at: usize| u32::from_be_bytes(chunk[at..at + 4].try_into().unwrap()) as usize;
    while pos + 6 <= chunk.len() {
        let len = u32_at(pos);
        if len > 256 * 1024 || pos + 4 + len > chunk.len() {
            return None; // encrypted from here on
        }
        if chunk[pos + 5] == KEX_ECDH_REPLY {
            let mut at = pos + 6;
            // Host key blob, server public value, then the signature.
            for _ in 0..2 {
                at += 4 + u32_at(at);
            }
            return Some(at + 4..at + 4 + u32_at(at));
        }
        pos += 4 + len;
    }
    None
}

/// XORs `mask` into the byte `from_end` bytes before the end of the
/// KEX_ECDH_REPLY signature blob in `chunk`. Returns whether it found one.
fn tamper_signature(chunk: &mut [u8], from_end: usize, mask: u8) -> bool {
    match ecdh_reply_signature(chunk) {
        Some(sig) => {
            chunk[sig.end - from_end] ^= mask;
            true
        }
        None => false,
    }
}

#[test]
fn bad_host_key_signature_closes_the_client_before_asking_the_app() {
    for alg in HostKeyAlgorithm::ALL {
        for strict in [true, false] {
            let mut client = client_config(strict);
            client.transport.host_key_algorithms = vec![alg];
            let server = ServerConfig { host_keys: vec![host_key(alg)], ..server_config(strict) };
            let mut pair = Pair::new(client, server, Default::default(), 10).unwrap();
            let hits = std::rc::Rc::new(std::cell::Cell::new(0));
            let counter = hits.clone();
            pair.tamper_s2c = Some(Box::new(move |chunk| {
                if tamper_signature(chunk, 10, 0x01) {
                    counter.set(counter.get() + 1);
                }
            }));
            let limit = pair.now + Duration::from_secs(10);
            pair.run_idle(limit);
            assert_eq!(hits.get(), 1, "{alg:?}: the reply was tampered with once");

            let expected = Error::BadHostKeySignature { reason: "signature does not verify".into() };
            assert_eq!(pair.client_errors, std::slice::from_ref(&expected), "{alg:?}");
            let client_events = events_of(&pair, Role::Client);
            assert_eq!(single_close(&client_events), CloseReason::Error(expected.clone()));
            assert!(
                !client_events.iter().any(|e| matches!(e, Event::HostKey(_) | Event::KexCompleted { .. })),
                "{alg:?}: {client_events:?}"
            );
            // The client's DISCONNECT is plaintext (it never sent NEWKEYS)
            // and the server understood it.
            assert_eq!(
                single_close(&events_of(&pair, Role::Server)),
                CloseReason::PeerDisconnect {
                    code: DisconnectCode::KEY_EXCHANGE_FAILED,
                    description: expected.to_string(),
                },
                "{alg:?}"
            );
            assert!(pair.server_errors.is_empty());
            let packets = plain_packets(pair.transcripts().0);
            assert_eq!(
                packets.iter().map(|p| p[0]).collect::<Vec<_>>(),
                [KEXINIT, KEX_ECDH_INIT, DISCONNECT]
            );
        }
    }
}

#[test]
fn undecodable_host_key_signature_is_refused() {
    // Corrupt the signature blob's algorithm name length: the blob no longer decodes.
    let mut pair = Pair::with_host_key(HostKeyAlgorithm::Ed25519, 0, 11);
    // ed25519 signature blob: string "ssh-ed25519" (4 + 11) + string sig (4 + 64)
    // = 83 bytes; from its end, 83 bytes back is the first length byte.
    pair.tamper_s2c = Some(Box::new(|chunk| {
        tamper_signature(chunk, 83, 0x10);
    }));
    let limit = pair.now + Duration::from_secs(10);
    pair.run_idle(limit);
    assert_eq!(pair.client_errors.len(), 1);
    assert!(
        matches!(
            &pair.client_errors[0],
            Error::BadHostKeySignature { reason } if reason.starts_with("undecodable signature")
        ),
        "{:?}",
        pair.client_errors
    );
    let client_events = events_of(&pair, Role::Client);
    assert!(!client_events.iter().any(|e| matches!(e, Event::HostKey(_))));
    assert!(matches!(
        single_close(&events_of(&pair, Role::Server)),
        CloseReason::PeerDisconnect { code: DisconnectCode::KEY_EXCHANGE_FAILED, .. }
    ));
}

/// A KEX_ECDH_REPLY from a hand-made server: host key blob, a valid X25519
/// point (the base point), and a signature blob.
fn ecdh_reply(host_key_blob: &[u8], sig_alg: &str, sig: &[u8]) -> Vec<u8> {
    let mut base_point = [0u8; 32];
    base_point[0] = 9;
    let mut sig_blob = Vec::new();
    put_string(&mut sig_blob, sig_alg.as_bytes());
    put_string(&mut sig_blob, sig);
    let mut p = vec![KEX_ECDH_REPLY];
    put_string(&mut p, host_key_blob);
    put_string(&mut p, &base_point);
    put_string(&mut p, &sig_blob);
    p
}

#[test]
fn bad_host_key_or_signature_from_a_raw_server() {
    let ed25519 = host_key(HostKeyAlgorithm::Ed25519).public_key().to_bytes().unwrap();
    let rsa = host_key(HostKeyAlgorithm::RsaSha256).public_key().to_bytes().unwrap();
    // (host key blob, signature algorithm, signature, expected)
    type Check = fn(&Error) -> bool;
    let cases: [(&[u8], &str, &[u8], Check); 5] = [
        // Not a key blob at all.
        (b"garbage", "ssh-ed25519", &[1; 64], |e| matches!(e, Error::BadHostKey { .. })),
        // An RSA key where ssh-ed25519 was negotiated.
        (&rsa, "rsa-sha2-256", &[1; 256], |e| matches!(e, Error::BadHostKey { .. })),
        // A signature that does not verify.
        (&ed25519, "ssh-ed25519", &[1; 64], |e| matches!(e, Error::BadHostKeySignature { .. })),
        // A signature of another algorithm.
        (
            &ed25519,
            "rsa-sha2-256",
            &[1; 256],
            |e| matches!(e, Error::BadHostKeySignature { reason } if reason.starts_with("signature is rsa-sha2-256")),
        ),
        // A signature of the wrong length.
        (&ed25519, "ssh-ed25519", &[1; 12], |e| matches!(e, Error::BadHostKeySignature { .. })),
    ];
    for (blob, sig_alg, sig, check) in cases {
        let mut raw = Raw::after_kexinit(Role::Client, true, true);
        let err = expect_failure_matching(&mut raw, &frame(&ecdh_reply(blob, sig_alg, sig)), check, true);
        assert_eq!(err.disconnect_code(), DisconnectCode::KEY_EXCHANGE_FAILED);
    }
}

#[test]
fn bad_input_buffered_during_the_host_key_decision_closes_on_accept() {
    // The server writes KEX_ECDH_REPLY, NEWKEYS and its encrypted EXT_INFO
    // in one chunk; corrupt EXT_INFO's tag. The client pauses at the reply,
    // so the corruption is only found when the application accepts the key.
    let mut pair = Pair::with_host_key(HostKeyAlgorithm::Ed25519, 0, 15);
    pair.auto_accept_host_key = false;
    pair.tamper_s2c = Some(Box::new(|chunk| {
        if ecdh_reply_signature(chunk).is_some() {
            let last = chunk.len() - 1;
            chunk[last] ^= 0x80;
        }
    }));
    let limit = pair.now + Duration::from_secs(10);
    pair.run_until(limit, |p| p.client_events.iter().any(|(_, e)| matches!(e, Event::HostKey(_))));
    let id = match &pair.client_events.last().unwrap().1 {
        Event::HostKey(check) => check.id,
        e => panic!("expected the host key check, got {e:?}"),
    };
    assert!(!pair.client.is_closed());
    // Whether the command itself reports the error is up to the API; the
    // connection must close with it either way.
    let r = pair.client.accept_host_key(id);
    assert!(matches!(r, Ok(()) | Err(Error::BadMac { seq: 0 })), "{r:?}");
    let expected = Error::BadMac { seq: 0 };
    let events: Vec<Event> = std::iter::from_fn(|| pair.client.poll_event()).collect();
    assert_eq!(single_close(&events), CloseReason::Error(expected.clone()));
    // The client had just sent NEWKEYS: its DISCONNECT is encrypted, and
    // the server reads it.
    pair.run_idle(limit);
    assert_eq!(
        single_close(&events_of(&pair, Role::Server)),
        CloseReason::PeerDisconnect { code: DisconnectCode::MAC_ERROR, description: expected.to_string() }
    );
}

// ------------------------------------------------ 11. orderly endings

#[test]
fn peer_disconnect_gives_its_code_and_text() {
    for role in ROLES {
        for (code, text) in [(11u32, "bye"), (2, "protocol error: é"), (99, "")] {
            let mut raw = Raw::after_version(role, true);
            // Before the KEXINIT: DISCONNECT is allowed at any time, even
            // under strict kex.
            raw.feed(&frame(&disconnect_payload(code, text))).unwrap();
            let events = raw.events();
            assert_eq!(
                single_close(&events),
                CloseReason::PeerDisconnect { code: DisconnectCode(code), description: text.into() }
            );
            assert!(raw.take_tx().is_empty(), "no DISCONNECT back");
            assert_eq!(raw.conn.state(), State::Closed);
            raw.assert_dead();
        }
    }
}

#[test]
fn disconnect_after_the_handshake_reaches_the_peer() {
    for (closer, cipher) in
        [(Role::Client, CipherAlgorithm::ChaCha20Poly1305), (Role::Server, CipherAlgorithm::Aes256Gcm)]
    {
        let mut pair = handshaken_pair(cipher, true, 12);
        let conn = match closer {
            Role::Client => &mut pair.client,
            Role::Server => &mut pair.server,
        };
        conn.disconnect(DisconnectCode::BY_APPLICATION, "done for today").unwrap();
        assert_eq!(conn.state(), State::Closing);
        let limit = pair.now + Duration::from_secs(10);
        pair.run_idle(limit);
        let other = match closer {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        assert_eq!(
            single_close(&events_of(&pair, closer)),
            CloseReason::Local { code: DisconnectCode::BY_APPLICATION, description: "done for today".into() }
        );
        assert_eq!(
            single_close(&events_of(&pair, other)),
            CloseReason::PeerDisconnect {
                code: DisconnectCode::BY_APPLICATION,
                description: "done for today".into()
            }
        );
        assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
    }
}

#[test]
fn eof_between_packets_is_eof() {
    for role in ROLES {
        // Before anything arrived.
        let mut raw = Raw::new(role, true);
        raw.eof();
        assert_eq!(single_close(&raw.events()), CloseReason::Eof);
        assert!(raw.take_tx().is_empty());
        raw.assert_dead();

        // After the version line and a complete KEXINIT.
        let mut raw = Raw::after_kexinit(role, true, true);
        raw.eof();
        let events = raw.events();
        assert_eq!(single_close(&events), CloseReason::Eof);
        assert!(raw.take_tx().is_empty(), "no DISCONNECT to a closed stream");
        raw.assert_dead();
    }
}

#[test]
fn link_cut_after_the_handshake_is_eof_on_both_sides() {
    let mut pair = handshaken_pair(CipherAlgorithm::Aes128Gcm, true, 13);
    pair.set_fault(Fault::Cut);
    let limit = pair.now + Duration::from_secs(10);
    pair.run_idle(limit);
    for role in ROLES {
        assert_eq!(single_close(&events_of(&pair, role)), CloseReason::Eof);
    }
    // A second EOF changes nothing.
    let now = pair.now + Duration::from_secs(1);
    pair.client.handle_eof(now);
    pair.server.handle_eof(now);
    assert_eq!(pair.client.poll_event(), None);
    assert_eq!(pair.server.poll_event(), None);
    assert_eq!(pair.client.send_ignore(b"x"), Err(Error::Closed));
    assert_eq!(pair.server.send_debug(false, "x"), Err(Error::Closed));
}

#[test]
fn input_after_close_is_ignored_and_commands_fail() {
    for role in ROLES {
        let mut raw = Raw::after_version(role, true);
        raw.conn.disconnect(DisconnectCode::BY_APPLICATION, "leaving").unwrap();
        let events = raw.events();
        assert_eq!(
            single_close(&events),
            CloseReason::Local { code: DisconnectCode::BY_APPLICATION, description: "leaving".into() }
        );
        let packets = plain_packets(&raw.take_tx());
        assert_eq!(
            packets.iter().map(|p| parse_disconnect(p)).collect::<Vec<_>>(),
            [(DisconnectCode::BY_APPLICATION, "leaving".to_string())]
        );
        assert_eq!(raw.events(), [Event::StateChanged { state: State::Closed }]);
        // A whole KEXINIT, garbage, a DISCONNECT: all ignored.
        assert_eq!(raw.feed(&frame(&peer_kexinit(role, true))), Ok(()));
        assert_eq!(raw.feed(&0x7fff_fff0u32.to_be_bytes()), Ok(()));
        assert_eq!(raw.feed(&frame(&disconnect_payload(2, "x"))), Ok(()));
        raw.assert_dead();
        raw.eof();
        assert!(raw.events().is_empty(), "a second EOF, no second Closed");
    }
}

// ------------------------------------------------------------- extras

#[test]
fn flood_while_the_host_key_decision_is_pending_overflows() {
    let mut pair = Pair::with_host_key(HostKeyAlgorithm::Ed25519, 0, 14);
    pair.auto_accept_host_key = false;
    let limit = pair.now + Duration::from_secs(10);
    assert!(
        pair.run_until(limit, |p| { p.client_events.iter().any(|(_, e)| matches!(e, Event::HostKey(_))) })
    );
    let now = pair.now;
    // A hostile server keeps sending while the application decides.
    let flood = vec![0u8; 64 * 1024];
    let mut result = Ok(());
    for _ in 0..16 {
        result = pair.client.handle_input(now, &flood);
        if result.is_err() {
            break;
        }
    }
    let expected = Error::InputOverflow { limit: 512 * 1024 };
    assert_eq!(result, Err(expected.clone()));
    let mut events = Vec::new();
    while let Some(e) = pair.client.poll_event() {
        events.push(e);
    }
    assert_eq!(single_close(&events), CloseReason::Error(expected.clone()));
    // The client never sent NEWKEYS: its DISCONNECT is plaintext.
    let tx = pair.client.pending_transmit().to_vec();
    let packets = plain_packets(&tx);
    assert_eq!(
        packets.iter().map(|p| parse_disconnect(p)).collect::<Vec<_>>(),
        [(DisconnectCode::PROTOCOL_ERROR, expected.to_string())]
    );
    // The pending host key id is gone with the connection.
    assert_eq!(pair.client.accept_host_key(1), Err(Error::Closed));
}

/// Every message number, with a few payload shapes, in the first kex of
/// both roles (strict or not): never a panic, and any error closes the
/// connection exactly once with that error.
#[test]
fn every_message_number_during_the_first_kex_is_handled() {
    let tails: [&[u8]; 4] = [b"", b"\0", b"\0\0\0\x01x", b"\xff\xff\xff\xff\0\0\0\0\0\0\0\0"];
    for role in ROLES {
        for strict in [false, true] {
            for n in 0..=255u8 {
                for tail in tails {
                    let mut raw = Raw::after_kexinit(role, true, strict);
                    let mut payload = vec![n];
                    payload.extend_from_slice(tail);
                    let ctx = format!("{role:?} strict={strict} n={n} tail={tail:?}");
                    match raw.feed(&frame(&payload)) {
                        Ok(()) => {
                            let events = raw.events();
                            let closes = events.iter().filter(|e| matches!(e, Event::Closed { .. })).count();
                            if n == DISCONNECT {
                                assert_eq!(closes, 1, "{ctx}");
                            } else {
                                assert_eq!(closes, 0, "{ctx}: {events:?}");
                                assert!(!raw.conn.is_closed(), "{ctx}");
                            }
                        }
                        Err(e) => {
                            assert!(e.is_peer_fault(), "{ctx}: {e:?}");
                            assert_eq!(single_close(&raw.events()), CloseReason::Error(e), "{ctx}");
                            assert!(raw.conn.is_closed());
                        }
                    }
                }
            }
        }
    }
}

/// Random bytes after the version line: never a panic; an error closes once.
#[test]
fn random_bytes_after_the_version_line_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000 {
        let role = ROLES[i % 2];
        let mut raw = Raw::after_version(role, i % 4 < 2);
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often a plausible length, so the body gets parsed.
        if i % 3 == 0 && len >= 20 {
            let total = len as u32 & !7;
            bytes[..4].copy_from_slice(&(total - 4).to_be_bytes());
        }
        match raw.feed(&bytes) {
            Ok(()) => {
                let events = raw.events();
                let closes = events.iter().filter(|e| matches!(e, Event::Closed { .. })).count();
                assert_eq!(closes, usize::from(raw.conn.is_closed()), "{bytes:?}");
            }
            Err(e) => {
                assert_eq!(single_close(&raw.events()), CloseReason::Error(e));
            }
        }
        raw.eof();
        let events = raw.events();
        assert!(events.iter().filter(|e| matches!(e, Event::Closed { .. })).count() <= 1, "{events:?}");
        assert!(raw.conn.is_closed());
    }
}
