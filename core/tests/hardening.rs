//! Hostile-input hardening beyond the fuzz corpus:
//! - property tests of the codecs (decode→encode→decode equality) and of
//!   the connection under arbitrary fragmentation of recorded sessions;
//! - the memory a peer can make us spend by sending want-reply requests,
//!   channel opens or pings in a loop while never reading our output.

use proptest::prelude::*;
use sansh::testing::fuzz::{self, Script, payload, string, u32be};
use sansh::testing::{LinkConfig, Pair, accept_policy, host_key};
use sansh::wire::{Reader, Writer};
use sansh::{
    ChannelKind, ChannelOptions, ChannelRequest, ClientConfig, Connection, Credential, Event,
    HostKeyAlgorithm, Pty, Role, ServerConfig, Timestamp,
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
fn refragment(chunks: &[Vec<u8>], cuts: &[usize], flags: u8) -> Vec<u8> {
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
    /// outcome however the bytes are cut, for both roles and every cipher.
    #[test]
    fn sessions_survive_arbitrary_fragmentation(
        flags in prop::sample::select(vec![0u8, 1, 2, 3, 0x10]),
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        let rec = fuzz::record_session(flags);
        let done = fuzz::Summary { authenticated: true, channels_closed: 1 };
        prop_assert_eq!(fuzz::single_connection(Role::Client, &refragment(&rec.to_client, &cuts, flags)), done);
        prop_assert_eq!(fuzz::single_connection(Role::Server, &refragment(&rec.to_server, &cuts, flags)), done);
    }
}

// ------------------------------------------------------- memory bound

/// An authenticated pair; the hostile side's payloads are moved to the
/// victim by hand and the victim's output is never written (a peer that
/// sends but never reads).
struct Flood {
    victim: Connection,
    attacker: Connection,
    now: Timestamp,
    /// Bytes the victim received.
    input: usize,
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
        let mut f = Flood { victim, attacker, now, input: 0 };
        f.victim.consume_transmit(usize::MAX);
        f.drain();
        f
    }

    /// The victim's application polls its events (it just never answers).
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.victim.poll_event().is_some() {
            n += 1;
        }
        n
    }

    /// The attacker sends `p` `n` times; returns the victim's pending output.
    fn send(&mut self, p: &[u8], n: usize) -> usize {
        for _ in 0..n {
            self.attacker.inject_payload(p);
            let bytes = self.attacker.pending_transmit().to_vec();
            self.attacker.consume_transmit(bytes.len());
            self.input += bytes.len();
            self.victim.handle_input(self.now, &bytes).expect("victim accepts the flood");
            self.drain();
        }
        self.victim.pending_transmit().len()
    }
}

/// What a flood of `n` copies of `p` does to a victim that nobody reads:
/// (output bytes queued, input bytes received).
fn flood(victim: Role, p: &[u8], n: usize) -> (usize, usize) {
    let mut f = Flood::new(victim);
    let pending = f.send(p, n);
    assert!(!f.victim.is_closed());
    (pending, f.input)
}

/// Today the core queues a reply to every want-reply GLOBAL_REQUEST and
/// never stops reading: a peer that floods requests and never reads grows
/// our output without bound, linearly in what it sends (about 0.54 bytes
/// queued per byte received with chacha20-poly1305). The growth is linear,
/// never worse: this test pins that, and prints the numbers.
#[test]
fn global_request_flood_grows_output_linearly() {
    let req = payload(80, &[&string(b"keepalive@openssh.com"), &[1]]);
    let (small, small_in) = flood(Role::Client, &req, 1000);
    let (big, big_in) = flood(Role::Client, &req, 4000);
    eprintln!("global requests: 1000 -> {small} B queued ({small_in} B in); 4000 -> {big} B ({big_in} B in)");
    assert!(big >= 3 * small, "the output grows with the flood (no limit yet)");
    assert!(big <= big_in, "at most one byte queued per byte received");
}

/// The same with PINGs (the reply echoes the data) and unknown channel
/// types (each gets CHANNEL_OPEN_FAILURE with a description).
#[test]
fn ping_and_channel_open_floods_grow_output_linearly() {
    let ping = payload(192, &[&string(&[0x55; 1000])]);
    let (out, input) = flood(Role::Client, &ping, 500);
    eprintln!("pings of 1000 B: 500 -> {out} B queued ({input} B in)");
    assert!(out <= input + 64 * 500);
    assert!(out >= 500 * 1000, "every PONG is queued");

    let open = payload(90, &[&string(b"x11"), &u32be(1), &u32be(1 << 20), &u32be(32768)]);
    let (out, input) = flood(Role::Server, &open, 2000);
    eprintln!("x11 opens: 2000 -> {out} B queued ({input} B in)");
    assert!(out <= 3 * input, "bounded amplification");
    assert!(out >= 2000 * 40, "every refusal is queued");
}

/// Channel opens the application never answers are bounded by
/// `max_channels`: past it the core refuses them itself (RESOURCE_SHORTAGE),
/// so the channel table stops growing; only the refusals queue up.
#[test]
fn channel_open_flood_is_bounded_by_max_channels() {
    let mut f = Flood::new(Role::Server);
    let mut requests = 0;
    for i in 0..1000u32 {
        let p = payload(90, &[&string(b"session"), &u32be(i), &u32be(1 << 20), &u32be(32768)]);
        f.attacker.inject_payload(&p);
        let bytes = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(bytes.len());
        f.victim.handle_input(f.now, &bytes).unwrap();
        while let Some(e) = f.victim.poll_event() {
            requests += usize::from(matches!(e, Event::ChannelOpenRequest { .. }));
        }
    }
    assert_eq!(requests, 256, "only max_channels opens reach the application");
    assert_eq!(f.victim.channel_count(), 256);
    assert!(f.victim.open_session(ChannelOptions::default()).is_err(), "the table is full");
}

/// The output cap (`TransportConfig::max_queued_output`, 1 MiB): once our
/// unwritten replies reach it the victim stops processing input and asks
/// not to be read (`wants_input`); an adapter that reads anyway may buffer
/// 512 KiB more, then the connection closes with `InputOverflow`. So a
/// flood of any length leaves at most the cap plus one packet's replies
/// queued and 512 KiB (+ one read) of input buffered.
const CAP: usize = 1 << 20;

/// Floods `p` at a victim that nobody reads, checking the bound after every
/// message; returns how many messages it took until the victim stopped.
fn flood_never_read(victim: Role, p: &[u8], max: usize) -> (Flood, usize) {
    let mut f = Flood::new(victim);
    for i in 0..max {
        f.attacker.inject_payload(p);
        let bytes = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(bytes.len());
        assert!(f.victim.wants_input(), "a well-behaved adapter would not have read this");
        f.victim.handle_input(f.now, &bytes).expect("victim accepts what it reads");
        f.drain();
        assert!(f.victim.pending_transmit().len() <= CAP + 64 * 1024, "bound kept after {i} messages");
        if !f.victim.wants_input() {
            return (f, i + 1);
        }
    }
    panic!("the victim never stopped reading after {max} messages");
}

#[test]
fn a_request_flood_stops_being_read_at_the_output_cap_and_resumes_when_drained() {
    let req = payload(80, &[&string(b"keepalive@openssh.com"), &[1]]);
    let (mut f, n) = flood_never_read(Role::Client, &req, 200_000);
    let queued = f.victim.pending_transmit().len();
    eprintln!("global requests: stopped reading after {n} ({queued} B queued)");
    assert!(queued >= CAP);
    // More input that an adapter reads anyway is buffered, not processed.
    for _ in 0..100 {
        f.attacker.inject_payload(&req);
    }
    let more = f.attacker.pending_transmit().to_vec();
    f.attacker.consume_transmit(more.len());
    f.victim.handle_input(f.now, &more).unwrap();
    assert_eq!(f.victim.pending_transmit().len(), queued, "nothing processed while stopped");
    // The peer reads everything: the buffered requests are answered too.
    let at_stop = f.victim.stats().packets_sent;
    while !f.victim.pending_transmit().is_empty() {
        let out = f.victim.pending_transmit().len();
        f.victim.consume_transmit(out);
    }
    assert_eq!(f.victim.stats().packets_sent - at_stop, 100, "one reply per buffered request");
    assert!(f.victim.wants_input());
    assert!(!f.victim.is_closed());
}

#[test]
fn an_adapter_that_keeps_reading_gets_an_input_overflow_and_one_closed() {
    let ping = payload(192, &[&string(&[0x55; 1000])]);
    let (mut f, n) = flood_never_read(Role::Client, &ping, 10_000);
    eprintln!("pings of 1000 B: stopped reading after {n}");
    let mut fed = 0;
    let err = loop {
        f.attacker.inject_payload(&ping);
        let bytes = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(bytes.len());
        fed += bytes.len();
        if let Err(e) = f.victim.handle_input(f.now, &bytes) {
            break e;
        }
        assert!(fed <= 600 * 1024, "input stays bounded");
    };
    assert!(matches!(err, sansh::Error::InputOverflow { .. }), "{err}");
    let closed: Vec<_> =
        std::iter::from_fn(|| f.victim.poll_event()).filter(|e| matches!(e, Event::Closed { .. })).collect();
    assert_eq!(closed.len(), 1);
    assert!(f.victim.pending_transmit().len() <= CAP + 64 * 1024 + 256, "only a DISCONNECT added");
}

#[test]
fn unknown_channel_open_flood_is_bounded_too() {
    let open = payload(90, &[&string(b"x11"), &u32be(1), &u32be(1 << 20), &u32be(32768)]);
    let (f, n) = flood_never_read(Role::Server, &open, 200_000);
    eprintln!("x11 opens: stopped reading after {n} ({} B queued)", f.victim.pending_transmit().len());
}

/// Requests the application must answer: replies go out in order, so a peer
/// piling up unanswered ones is cut off at 64, per connection and per channel.
#[test]
fn unanswered_requests_are_bounded() {
    let mut f = Flood::new(Role::Server);
    let fwd = payload(80, &[&string(b"tcpip-forward"), &[1], &string(b"127.0.0.1"), &u32be(0)]);
    let mut err = None;
    for _ in 0..100 {
        f.attacker.inject_payload(&fwd);
        let bytes = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(bytes.len());
        if let Err(e) = f.victim.handle_input(f.now, &bytes) {
            err = Some(e);
            break;
        }
        f.drain();
    }
    assert!(matches!(err, Some(sansh::Error::TooManyPendingRequests { limit: 64 })), "{err:?}");

    let mut f = Flood::new(Role::Server);
    let open = payload(90, &[&string(b"session"), &u32be(7), &u32be(1 << 20), &u32be(32768)]);
    f.attacker.inject_payload(&open);
    let bytes = f.attacker.pending_transmit().to_vec();
    f.attacker.consume_transmit(bytes.len());
    f.victim.handle_input(f.now, &bytes).unwrap();
    let channel = std::iter::from_fn(|| f.victim.poll_event())
        .find_map(|e| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(channel),
            _ => None,
        })
        .expect("the open reaches the application");
    f.victim.accept_channel(channel, ChannelOptions::default()).unwrap();
    let exec = payload(98, &[&u32be(channel.0), &string(b"exec"), &[1], &string(b"true")]);
    let mut err = None;
    for _ in 0..100 {
        f.attacker.inject_payload(&exec);
        let bytes = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(bytes.len());
        if let Err(e) = f.victim.handle_input(f.now, &bytes) {
            err = Some(e);
            break;
        }
        f.drain();
    }
    assert!(matches!(err, Some(sansh::Error::TooManyPendingRequests { limit: 64 })), "{err:?}");
}

/// Channel data the application writes to a peer that never reads fills
/// at most half the cap; the rest waits in the channel (accepted, pending),
/// and the connection keeps reading, so replies still flow.
#[test]
fn bulk_data_to_a_peer_that_never_reads_fills_half_the_cap() {
    let mut f = Flood::new(Role::Client);
    let channel = f.victim.open_session(ChannelOptions::default()).unwrap();
    for _ in 0..4 {
        let out = f.victim.pending_transmit().to_vec();
        f.victim.consume_transmit(out.len());
        f.attacker.handle_input(f.now, &out).unwrap();
        while let Some(e) = f.attacker.poll_event() {
            if let Event::ChannelOpenRequest { channel, .. } = e {
                f.attacker.accept_channel(channel, ChannelOptions::default()).unwrap();
            }
        }
        let back = f.attacker.pending_transmit().to_vec();
        f.attacker.consume_transmit(back.len());
        f.victim.handle_input(f.now, &back).unwrap();
        f.drain();
    }
    let data = vec![7u8; 1 << 20];
    let accepted = f.victim.channel_write(channel, &data).unwrap();
    assert!(accepted > 0);
    let queued = f.victim.pending_transmit().len();
    assert!(queued <= CAP / 2 + 64 * 1024, "{queued} B sealed");
    assert!(f.victim.wants_input(), "data alone never stops reading");
    // Writing the output lets the rest out (within the peer's 2 MiB window).
    let (mut written, mut total) = (accepted, 0);
    for _ in 0..1000 {
        let out = f.victim.pending_transmit().len();
        assert!(out <= CAP / 2 + 64 * 1024, "{out} B sealed");
        total += out;
        f.victim.consume_transmit(out);
        if written < data.len() {
            written += f.victim.channel_write(channel, &data[written..]).unwrap();
        } else if out == 0 {
            break;
        }
    }
    assert!(total >= 1 << 20, "all of it went out ({total} B)");
}
