//! What monitoring sees, over `testing::Pair`: the `StateChanged` sequence
//! of both roles and when each is emitted, `Connection::stats()` against
//! what actually crossed the link, probe and RTT counters on a link of known
//! latency, the default rekey limits, and SSH_MSG_UNIMPLEMENTED both ways.

use std::cell::RefCell;
use std::rc::Rc;

use sansh::testing::{Fault, LinkConfig, Pair, accept_policy, host_key};
use sansh::wire::msg;
use sansh::{
    ChannelId, ChannelOptions, CipherAlgorithm, ClientConfig, CloseReason, Credential, DisconnectCode,
    Duration, Event, HostKeyAlgorithm, KeepaliveConfig, RekeyLimits, Role, ServerConfig, State, Timestamp,
    TransportConfig,
};

fn configs() -> (ClientConfig, ServerConfig) {
    let client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    let server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    (client, server)
}

/// A pair whose server accepts the password "pw" and every channel; not
/// yet run.
fn new_pair(client: ClientConfig, server: ServerConfig, link: LinkConfig, seed: u64) -> Pair {
    let mut p = Pair::new(client, server, link, seed).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        if let Event::ChannelOpenRequest { channel, .. } = e {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap();
        }
    }));
    p
}

fn log(p: &Pair, role: Role) -> &[(Timestamp, Event)] {
    match role {
        Role::Client => &p.client_events,
        Role::Server => &p.server_events,
    }
}

fn states(p: &Pair, role: Role) -> Vec<State> {
    log(p, role)
        .iter()
        .filter_map(|(_, e)| match e {
            Event::StateChanged { state } => Some(*state),
            _ => None,
        })
        .collect()
}

/// When `role` reported entering `state`.
fn entered(p: &Pair, role: Role, state: State) -> Timestamp {
    log(p, role)
        .iter()
        .find_map(|(t, e)| matches!(e, Event::StateChanged { state: s } if *s == state).then_some(*t))
        .unwrap_or_else(|| panic!("{role:?} never entered {state:?}: {:?}", log(p, role)))
}

/// When `role` first logged an event matching `f`.
fn first(p: &Pair, role: Role, f: impl Fn(&Event) -> bool) -> Timestamp {
    log(p, role)
        .iter()
        .find_map(|(t, e)| f(e).then_some(*t))
        .unwrap_or_else(|| panic!("{role:?}: no such event in {:?}", log(p, role)))
}

/// The state the events reported last agrees with the accessor: every
/// change has been reported once the outputs are drained, and no report
/// runs ahead of the change.
fn assert_states_current(p: &Pair) {
    for (role, conn) in [(Role::Client, &p.client), (Role::Server, &p.server)] {
        let reported = states(p, role).last().copied().unwrap_or(State::Connecting);
        assert_eq!(reported, conn.state(), "{role:?} at {:?}", p.now);
    }
}

/// Records, for every `StateChanged` polled, what `state()` said right then.
type Seen = Rc<RefCell<Vec<(State, State)>>>;

fn watch_states(p: &mut Pair) -> (Seen, Seen) {
    let (client_seen, server_seen): (Seen, Seen) = Default::default();
    let seen = client_seen.clone();
    p.on_client_event = Some(Box::new(move |conn, e| {
        if let Event::StateChanged { state } = e {
            seen.borrow_mut().push((*state, conn.state()));
        }
    }));
    let seen = server_seen.clone();
    let mut inner = p.on_server_event.take().expect("server policy");
    p.on_server_event = Some(Box::new(move |conn, e| {
        if let Event::StateChanged { state } = e {
            seen.borrow_mut().push((*state, conn.state()));
        }
        inner(conn, e);
    }));
    (client_seen, server_seen)
}

#[test]
fn state_sequence_of_both_roles_and_when_each_is_emitted() {
    let (c, s) = configs();
    let mut p = new_pair(c, s, LinkConfig::default(), 1);
    let (client_seen, server_seen) = watch_states(&mut p);
    // Nothing received yet: both are Connecting, which is not an event.
    assert_eq!((p.client.state(), p.server.state()), (State::Connecting, State::Connecting));
    assert_states_current(&p);
    let limit = p.now + Duration::from_secs(60);
    while !p.authenticated() {
        assert!(p.now < limit && p.step(), "authentication did not finish: {:?}", p.client_events);
        assert_states_current(&p);
    }
    for role in [Role::Client, Role::Server] {
        assert_eq!(states(&p, role), [State::Kex, State::Auth, State::Active], "{role:?}");
        // Each change is reported in the same step as what caused it: the
        // peer's version line (1 ms of link latency after the start), the
        // end of the first kex, and the authentication.
        assert_eq!(entered(&p, role, State::Kex), Timestamp::from_millis(1), "{role:?}");
        let kex_done = first(&p, role, |e| matches!(e, Event::KexCompleted { rekey: false, .. }));
        assert_eq!(entered(&p, role, State::Auth), kex_done, "{role:?}");
        let authenticated = first(&p, role, |e| matches!(e, Event::Authenticated { .. }));
        assert_eq!(entered(&p, role, State::Active), authenticated, "{role:?}");
    }
    // When each event was polled, `state()` already said the same.
    for seen in [&client_seen, &server_seen] {
        assert!(seen.borrow().iter().all(|(event, accessor)| event == accessor), "{:?}", seen.borrow());
    }

    // A rekey is not a state: Active throughout, no StateChanged.
    p.client.rekey().unwrap();
    let mut rekeying_seen = false;
    let limit = p.now + Duration::from_secs(60);
    while p.client.stats().rekeys == 0 || p.server.stats().rekeys == 0 {
        rekeying_seen |= p.client.is_rekeying() && p.server.is_rekeying();
        assert_eq!((p.client.state(), p.server.state()), (State::Active, State::Active));
        assert!(p.now < limit && p.step(), "the rekey did not finish");
        assert_states_current(&p);
    }
    assert!(rekeying_seen, "both sides were never seen rekeying");
    assert_eq!(states(&p, Role::Client).len(), 3);
    assert_eq!(states(&p, Role::Server).len(), 3);

    // Closing: our DISCONNECT waits in pending_transmit. The change and the
    // Closed event are there to poll at once, before anything is written.
    p.client.disconnect(DisconnectCode::BY_APPLICATION, "bye").unwrap();
    assert_eq!(p.client.state(), State::Closing);
    assert!(!p.client.pending_transmit().is_empty());
    let poll = |p: &mut Pair| {
        let e = p.client.poll_event();
        if let Some(e) = &e {
            p.client_events.push((p.now, e.clone()));
        }
        e
    };
    assert_eq!(poll(&mut p), Some(Event::StateChanged { state: State::Closing }));
    assert!(matches!(poll(&mut p), Some(Event::Closed { reason: CloseReason::Local { .. } })));
    assert_eq!(poll(&mut p), None);
    // Written out: Closed.
    let n = p.client.pending_transmit().len();
    p.client.consume_transmit(n);
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(poll(&mut p), Some(Event::StateChanged { state: State::Closed }));
    assert_eq!(poll(&mut p), None);
    assert_eq!(
        states(&p, Role::Client),
        [State::Kex, State::Auth, State::Active, State::Closing, State::Closed]
    );
    // (The DISCONNECT never reaches the link: the server sees EOF instead.)
    p.set_fault(Fault::Cut);
    p.run_idle(p.now + Duration::from_secs(5));
    assert_states_current(&p);
    assert_eq!(states(&p, Role::Server), [State::Kex, State::Auth, State::Active, State::Closed]);
    assert!(p.server_events.iter().any(|(_, e)| matches!(e, Event::Closed { reason: CloseReason::Eof })));
}

#[test]
fn closing_is_reported_by_the_side_that_disconnects_only() {
    // The server disconnects: it goes through Closing while its DISCONNECT
    // waits; the client, which has nothing left to send, goes straight to
    // Closed when the DISCONNECT arrives.
    let (c, s) = configs();
    let mut p = new_pair(c, s, LinkConfig::fragmenting(7), 2);
    p.authenticate().unwrap();
    p.server.disconnect(DisconnectCode::BY_APPLICATION, "maintenance").unwrap();
    p.run_idle(p.now + Duration::from_secs(5));
    assert_states_current(&p);
    let active = [State::Kex, State::Auth, State::Active];
    assert_eq!(states(&p, Role::Server), [&active[..], &[State::Closing, State::Closed]].concat());
    assert_eq!(states(&p, Role::Client), [&active[..], &[State::Closed]].concat());
    let closed = first(&p, Role::Client, |e| matches!(e, Event::Closed { .. }));
    assert_eq!(entered(&p, Role::Client, State::Closed), closed);
    assert!(p.client_events.iter().any(|(_, e)| matches!(
        e,
        Event::Closed { reason: CloseReason::PeerDisconnect { description, .. } } if description == "maintenance"
    )));

    // A cut link: both straight to Closed, at the same moment as `Closed`.
    let (c, s) = configs();
    let mut p = new_pair(c, s, LinkConfig::default(), 3);
    p.authenticate().unwrap();
    p.set_fault(Fault::Cut);
    p.run_idle(p.now + Duration::from_secs(5));
    assert_states_current(&p);
    for role in [Role::Client, Role::Server] {
        assert_eq!(states(&p, role), [&active[..], &[State::Closed]].concat(), "{role:?}");
        let closed = first(&p, role, |e| matches!(e, Event::Closed { reason: CloseReason::Eof }));
        assert_eq!(entered(&p, role, State::Closed), closed, "{role:?}");
    }
}

/// Opens a session from the client and returns (client id, server id).
fn open_session(p: &mut Pair) -> (ChannelId, ChannelId) {
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    let limit = p.now + Duration::from_secs(10);
    assert!(p.run_until(limit, |p| {
        p.client_events.iter().any(|(_, e)| matches!(e, Event::ChannelOpened { channel } if *channel == ch))
    }));
    let server_ch = p
        .server_events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(*channel),
            _ => None,
        })
        .expect("server saw the open");
    (ch, server_ch)
}

fn data_received(p: &Pair, role: Role, channel: ChannelId) -> usize {
    log(p, role)
        .iter()
        .map(|(_, e)| match e {
            Event::ChannelData { channel: c, data } if *c == channel => data.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn byte_and_packet_counters_match_what_crossed_the_link() {
    let (c, s) = configs();
    let mut p = new_pair(c, s, LinkConfig::fragmenting(1000), 4);
    // From here on each side logs the payloads it opens; what was sent
    // before (the version lines and KEXINITs) has not been received yet.
    p.client.log_packets(true);
    p.server.log_packets(true);
    p.authenticate().unwrap();
    let (ch, server_ch) = open_session(&mut p);
    p.client.channel_write(ch, &vec![1u8; 300_000]).unwrap();
    p.server.channel_write(server_ch, &vec![2u8; 200_000]).unwrap();
    p.client.send_ignore(b"padding").unwrap();
    let limit = p.now + Duration::from_secs(60);
    assert!(p.run_until(limit, |p| data_received(p, Role::Server, server_ch) == 300_000
        && data_received(p, Role::Client, ch) == 200_000));
    p.client.rekey().unwrap();
    p.run_idle(p.now + Duration::from_secs(5));
    p.server.rekey().unwrap();
    p.run_idle(p.now + Duration::from_secs(5));
    p.client.rekey().unwrap();
    p.run_idle(p.now + Duration::from_secs(5));

    let check = |p: &mut Pair, what: &str| {
        let (c2s, s2c) = p.transcripts();
        let (c2s, s2c) = (c2s.len() as u64, s2c.len() as u64);
        let (cs, ss) = (p.client.stats(), p.server.stats());
        assert_eq!((cs.bytes_sent, ss.bytes_received), (c2s, c2s), "{what}: client to server");
        assert_eq!((ss.bytes_sent, cs.bytes_received), (s2c, s2c), "{what}: server to client");
        let (_, server_opened) = p.server.take_packet_log();
        let (_, client_opened) = p.client.take_packet_log();
        assert_eq!(cs.packets_sent, ss.packets_received, "{what}: client to server");
        assert_eq!(ss.packets_sent, cs.packets_received, "{what}: server to client");
        (server_opened.len() as u64, client_opened.len() as u64)
    };
    let (server_opened, client_opened) = check(&mut p, "after data and rekeys");
    assert_eq!(p.server.stats().packets_received, server_opened);
    assert_eq!(p.client.stats().packets_received, client_opened);
    // 300 000 bytes in 32 KiB packets at least, window adjusts, kex packets.
    assert!(server_opened > 10 && client_opened > 7, "{server_opened} {client_opened}");
    for conn in [&p.client, &p.server] {
        let s = conn.stats();
        assert_eq!(s.rekeys, 3);
        assert!(s.last_received.is_some() && s.last_sent.is_some());
    }
    for role in [Role::Client, Role::Server] {
        let last_kex = log(&p, role)
            .iter()
            .filter_map(|(t, e)| matches!(e, Event::KexCompleted { rekey: true, .. }).then_some(*t))
            .next_back();
        let stats = if role == Role::Client { p.client.stats() } else { p.server.stats() };
        assert_eq!(stats.last_kex, last_kex, "{role:?}");
    }

    // Through the close too: the DISCONNECT is counted once, each way.
    p.client.disconnect(DisconnectCode::BY_APPLICATION, "done").unwrap();
    p.run_idle(p.now + Duration::from_secs(5));
    let before = (p.server.stats().packets_received, p.client.stats().packets_sent);
    check(&mut p, "after the close");
    assert_eq!(before.0, before.1);
    assert!(p.client.is_closed() && p.server.is_closed());
}

fn probes(interval: u64, count_max: u32) -> KeepaliveConfig {
    KeepaliveConfig {
        probe_interval: Some(Duration::from_secs(interval)),
        probe_count_max: count_max,
        ..KeepaliveConfig::default()
    }
}

#[test]
fn probe_counters_and_rtt_on_a_link_of_known_latency() {
    let one_way = Duration::from_millis(37);
    let link = LinkConfig { latency: one_way, ..LinkConfig::default() };
    // Each role probing alone (a probe from one side resets the other's
    // timer, as any packet received does).
    for prober in [Role::Client, Role::Server] {
        let (mut c, mut s) = configs();
        match prober {
            Role::Client => c.transport.keepalive = probes(5, 3),
            Role::Server => s.transport.keepalive = probes(7, 3),
        }
        let mut p = new_pair(c, s, link.clone(), 5);
        p.authenticate().unwrap();
        p.advance(Duration::from_secs(60));
        let conn = |p: &Pair| if prober == Role::Client { p.client.stats() } else { p.server.stats() };
        let s = conn(&p);
        assert!(s.probes_sent >= 7, "{prober:?}: {s:?}");
        assert_eq!(s.probes_answered, s.probes_sent, "{prober:?}: {s:?}");
        // Client: PING/PONG; server: keepalive@openssh.com/REQUEST_FAILURE.
        // Either way, exactly one round trip of the fake clock.
        let rtt = Some(one_way * 2);
        assert_eq!((s.rtt.last, s.rtt.min, s.rtt.smoothed), (rtt, rtt, rtt), "{prober:?}: {s:?}");
        let quiet = if prober == Role::Client { p.server.stats() } else { p.client.stats() };
        assert_eq!((quiet.probes_sent, quiet.probes_answered, quiet.rtt.last), (0, 0, None));

        // Nothing comes back any more: probes go out unanswered, then the
        // connection gives up after count_max of them (plus one interval).
        p.set_fault(Fault::BlackHole);
        p.advance(Duration::from_secs(60));
        let after = conn(&p);
        assert_eq!(after.probes_answered, s.probes_answered, "{prober:?}: {after:?}");
        assert_eq!(after.probes_sent, s.probes_sent + 3, "{prober:?}: {after:?}");
        assert_eq!(after.rtt, s.rtt);
        assert!(log(&p, prober).iter().any(|(_, e)| matches!(
            e,
            Event::Closed { reason: CloseReason::KeepaliveTimeout { unanswered: 3 } }
        )));
    }
}

#[test]
fn default_rekey_limits_are_openssh_s() {
    assert_eq!(CipherAlgorithm::ChaCha20Poly1305.default_rekey_bytes(), 1 << 30);
    assert_eq!(CipherAlgorithm::Aes128Gcm.default_rekey_bytes(), 1 << 36);
    assert_eq!(CipherAlgorithm::Aes256Gcm.default_rekey_bytes(), 1 << 36);
    assert_eq!(RekeyLimits::default(), RekeyLimits { bytes: None, packets: 1 << 31, time: None });
    assert_eq!(TransportConfig::default().rekey, RekeyLimits::default());
    assert_eq!(ClientConfig::default().transport.rekey, RekeyLimits::default());
    assert_eq!(ServerConfig::default().transport.rekey, RekeyLimits::default());
}

/// Streams `total` bytes client to server in 1 MiB writes; returns the
/// rekeys each side counted.
fn push(p: &mut Pair, total: usize) -> (u64, u64) {
    let (ch, server_ch) = open_session(p);
    p.record_transcripts(false);
    let chunk = vec![7u8; 1 << 20];
    let (mut written, mut received) = (0, 0);
    let limit = p.now + Duration::from_secs(600);
    while written < total {
        p.client.channel_write(ch, &chunk).unwrap();
        written += chunk.len();
        assert!(p.run_until(limit, |p| received + data_received(p, Role::Server, server_ch) == written));
        // Count the data and drop it from the log, which would hold it all.
        received += data_received(p, Role::Server, server_ch);
        p.server_events.retain(|(_, e)| !matches!(e, Event::ChannelData { .. }));
    }
    p.run_idle(p.now + Duration::from_secs(5));
    (p.client.stats().rekeys, p.server.stats().rekeys)
}

#[test]
fn default_limits_do_not_rekey_early_and_lowered_ones_do() {
    for cipher in CipherAlgorithm::ALL {
        let (mut c, mut s) = configs();
        c.transport.ciphers = vec![cipher];
        s.transport.ciphers = vec![cipher];
        let mut p = new_pair(c.clone(), s.clone(), LinkConfig::default(), 6);
        p.authenticate().unwrap();
        assert_eq!(push(&mut p, 12 << 20), (0, 0), "{cipher:?}: defaults rekeyed within 12 MiB");

        // 2 MiB on the client: 12 MiB need at least 5 rekeys, and both
        // sides count the same ones.
        c.transport.rekey.bytes = Some(2 << 20);
        let mut p = new_pair(c.clone(), s.clone(), LinkConfig::default(), 7);
        p.authenticate().unwrap();
        let (client, server) = push(&mut p, 12 << 20);
        assert!(client >= 5 && client == server, "{cipher:?}: {client} {server}");
    }
    // The packet limit, on the server this time: 64 packets.
    let (c, mut s) = configs();
    s.transport.rekey.packets = 64;
    let mut p = new_pair(c, s, LinkConfig::default(), 8);
    p.authenticate().unwrap();
    let (ch, _) = open_session(&mut p);
    for i in 0..300u32 {
        p.client.channel_write(ch, &i.to_be_bytes()).unwrap();
        p.advance(Duration::from_millis(10));
    }
    let rekeys = p.server.stats().rekeys;
    // 300 data packets (and the kex packets themselves): 4 limits at least.
    assert!(rekeys >= 4, "{rekeys} rekeys");
    assert_eq!(p.client.stats().rekeys, rekeys);
    // And the time limit.
    let (mut c, s) = configs();
    c.transport.rekey.time = Some(Duration::from_secs(3600));
    let mut p = new_pair(c, s, LinkConfig::default(), 9);
    p.authenticate().unwrap();
    p.advance(Duration::from_secs(3599));
    assert_eq!(p.client.stats().rekeys, 0);
    p.advance(Duration::from_secs(2));
    assert_eq!((p.client.stats().rekeys, p.server.stats().rekeys), (1, 1));
}

/// The sequence number the last packet `conn` sent went out with, from
/// its packet log (which holds every packet since the pair was made but
/// the first KEXINIT): under strict kex it restarts after each NEWKEYS.
fn last_seq(sent: &[Vec<u8>], strict: bool) -> u32 {
    if strict {
        let newkeys = sent.iter().rposition(|m| m[0] == msg::NEWKEYS).expect("a NEWKEYS was sent");
        (sent.len() - newkeys - 2) as u32
    } else {
        // Sequence numbers count from the KEXINIT (0), missing in the log.
        sent.len() as u32
    }
}

fn unimplemented_replies(sent: &[Vec<u8>]) -> Vec<u32> {
    sent.iter()
        .filter(|m| m[0] == msg::UNIMPLEMENTED)
        .map(|m| u32::from_be_bytes(m[1..5].try_into().expect("4 bytes")))
        .collect()
}

fn unimplemented_events(p: &Pair, role: Role) -> Vec<u32> {
    log(p, role)
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Unimplemented { seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn unimplemented_names_the_offending_packet_both_ways() {
    for strict in [true, false] {
        let (mut c, s) = configs();
        c.transport.strict_kex = strict;
        let mut p = new_pair(c, s, LinkConfig::fragmenting(9), 10);
        p.client.log_packets(true);
        p.server.log_packets(true);
        p.authenticate().unwrap();
        assert_eq!(p.client.negotiated().unwrap().strict, strict);
        let mut client_sent = Vec::new();
        let mut server_sent = Vec::new();
        let mut expected_at_client = Vec::new();
        let mut expected_at_server = Vec::new();
        for round in 0..3 {
            // Unknown message numbers (8..=19 and 128..=191 are unassigned).
            p.client.inject_payload(&[200, 1, 2, 3]);
            let (sent, _) = p.client.take_packet_log();
            client_sent.extend(sent);
            expected_at_client.push(last_seq(&client_sent, strict));
            p.run_idle(p.now + Duration::from_secs(1));
            p.server.inject_payload(&[15]);
            let (sent, _) = p.server.take_packet_log();
            server_sent.extend(sent);
            expected_at_server.push(last_seq(&server_sent, strict));
            p.run_idle(p.now + Duration::from_secs(1));
            // Numbering after a rekey (strict kex restarts it).
            if round == 1 {
                p.client.rekey().unwrap();
                p.run_idle(p.now + Duration::from_secs(1));
            }
            let (sent, _) = p.client.take_packet_log();
            client_sent.extend(sent);
            let (sent, _) = p.server.take_packet_log();
            server_sent.extend(sent);
        }
        // Each side answered with the offender's sequence number, and the
        // sender raised `Unimplemented` with it.
        assert_eq!(unimplemented_replies(&server_sent), expected_at_client, "strict {strict}");
        assert_eq!(unimplemented_events(&p, Role::Client), expected_at_client, "strict {strict}");
        assert_eq!(unimplemented_replies(&client_sent), expected_at_server, "strict {strict}");
        assert_eq!(unimplemented_events(&p, Role::Server), expected_at_server, "strict {strict}");
        assert!(!p.client.is_closed() && !p.server.is_closed());

        // An UNIMPLEMENTED from the peer becomes the event as it is, with
        // no reply of ours.
        p.server.inject_payload(&[msg::UNIMPLEMENTED, 0xde, 0xad, 0xbe, 0xef]);
        p.run_idle(p.now + Duration::from_secs(1));
        assert_eq!(unimplemented_events(&p, Role::Client).last(), Some(&0xdead_beef));
        let (sent, _) = p.client.take_packet_log();
        assert!(unimplemented_replies(&sent).is_empty());
        assert!(!p.client.is_closed() && !p.server.is_closed());
    }
}
