//! Keepalive and liveness on simulated time: idle links, black holes, slow
//! links, both roles, RTT samples, and what actually crosses the wire.

use proptest::prelude::*;
use sansh::testing::{Fault, LinkConfig, Pair, accept_policy, host_key};
use sansh::wire::msg;
use sansh::{
    ClientConfig, CloseReason, Credential, Duration, Event, HostKeyAlgorithm, KeepaliveConfig, Role,
    ServerConfig, Timestamp,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn pair(client_ka: KeepaliveConfig, server_ka: KeepaliveConfig, link: LinkConfig, seed: u64) -> Pair {
    let mut client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    client.transport.keepalive = client_ka;
    let mut server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    server.transport.keepalive = server_ka;
    let mut p = Pair::new(client, server, link, seed).unwrap();
    p.on_server_event = Some(accept_policy("pw"));
    p.authenticate().unwrap();
    p
}

fn probes(interval: u64, count: u32) -> KeepaliveConfig {
    KeepaliveConfig {
        probe_interval: Some(secs(interval)),
        probe_count_max: count,
        ..KeepaliveConfig::default()
    }
}

fn closed_at(p: &Pair, role: Role) -> Option<(Timestamp, CloseReason)> {
    let log = if role == Role::Client { &p.client_events } else { &p.server_events };
    log.iter().find_map(|(t, e)| match e {
        Event::Closed { reason } => Some((*t, reason.clone())),
        _ => None,
    })
}

/// Runs the pair for `d`, collecting each side's plaintext packets.
fn run_logged(p: &mut Pair, d: Duration) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    p.client.log_packets(true);
    p.server.log_packets(true);
    p.advance(d);
    let (client_sent, _) = p.client.take_packet_log();
    let (server_sent, _) = p.server.take_packet_log();
    (client_sent, server_sent)
}

#[test]
fn idle_for_twenty_intervals_exchanges_only_probes_and_replies() {
    let mut p = pair(probes(5, 3), KeepaliveConfig::default(), LinkConfig::fragmenting(50), 1);
    let (client_sent, server_sent) = run_logged(&mut p, secs(100));
    assert!(!p.client.is_closed() && !p.server.is_closed());
    // sansh servers offer ping@openssh.com, so probes are transport PINGs.
    assert!(client_sent.iter().all(|m| m[0] == msg::PING), "client sent {:?}", kinds(&client_sent));
    assert!(server_sent.iter().all(|m| m[0] == msg::PONG), "server sent {:?}", kinds(&server_sent));
    // One probe per interval of silence; each reply restarts the timer (as
    // in OpenSSH), so 100 s hold 19 probes 5.002 s apart.
    assert_eq!(client_sent.len(), 19, "one probe per interval");
    assert_eq!(server_sent.len(), 19);
    let s = p.client.stats();
    assert_eq!((s.probes_sent, s.probes_answered), (19, 19));
    // Round trip on this link: 1 ms each way.
    assert_eq!(s.rtt.min, Some(Duration::from_millis(2)));
    assert_eq!(s.rtt.smoothed, Some(Duration::from_millis(2)));
}

#[test]
fn probes_are_global_requests_without_ping_and_from_the_server() {
    // The server role probes toward the client (ClientAliveInterval); a
    // client sends no EXT_INFO, so the server uses keepalive@openssh.com,
    // which the client answers with REQUEST_FAILURE (as OpenSSH does).
    let mut p = pair(KeepaliveConfig::default(), probes(7, 2), LinkConfig::default(), 2);
    let (client_sent, server_sent) = run_logged(&mut p, secs(70));
    assert_eq!(server_sent.len(), 9);
    assert!(
        server_sent
            .iter()
            .all(|m| m[0] == msg::GLOBAL_REQUEST && m.windows(21).any(|w| w == b"keepalive@openssh.com"))
    );
    assert_eq!(client_sent, vec![vec![msg::REQUEST_FAILURE]; 9]);
    assert_eq!(p.server.stats().probes_answered, 9);
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[test]
fn black_hole_closes_with_keepalive_timeout_on_time() {
    for seed in 0..20u64 {
        let interval = 10;
        let count = 3;
        let mut p =
            pair(probes(interval, count), KeepaliveConfig::default(), LinkConfig::fragmenting(100), seed);
        // Some traffic, then the link silently dies (no FIN).
        p.run_until(p.now + secs(seed % 7), |_| false);
        let last_received = p.client.stats().last_received.unwrap();
        p.set_fault(Fault::BlackHole);
        p.run_idle(p.now + secs(600));
        let (t, reason) = closed_at(&p, Role::Client).expect("client closed");
        assert_eq!(reason, CloseReason::KeepaliveTimeout { unanswered: count });
        let earliest = last_received + secs(interval * u64::from(count + 1));
        assert!(
            t >= earliest && t <= earliest + secs(interval) / 10,
            "seed {seed}: closed at {t:?}, expected ~{earliest:?}"
        );
        // Exactly one Closed, and the reason is one a reconnect may retry.
        assert_eq!(p.client_events.iter().filter(|(_, e)| matches!(e, Event::Closed { .. })).count(), 1);
        assert!(reason.is_retryable());
    }
}

#[test]
fn slow_but_healthy_link_does_not_close() {
    // RTT 2 s, probes every second: replies always come, just late.
    let link = LinkConfig { latency: secs(1), ..LinkConfig::default() };
    let mut p = pair(probes(1, 3), probes(1, 3), link, 3);
    p.advance(secs(120));
    assert!(!p.client.is_closed() && !p.server.is_closed(), "{:?}", closed_at(&p, Role::Client));
    let s = p.client.stats();
    // Both sides probe, and each side's probes also reset the other's timer.
    assert!(s.probes_answered >= 30 && s.probes_answered + 1 >= s.probes_sent, "{s:?}");
    assert_eq!(s.rtt.min, Some(secs(2)));
}

#[test]
fn ignores_only_when_the_sender_is_idle_with_varying_lengths_and_contents() {
    let ka = KeepaliveConfig { ignore_interval: Some(secs(5)), ..KeepaliveConfig::default() };
    let mut p = pair(ka, KeepaliveConfig::default(), LinkConfig::default(), 4);
    p.client.log_packets(true);
    // 60 s busy: the client sends something every 2 s, so it is never idle for 5 s.
    let start = p.now;
    while p.now < start + secs(60) {
        p.client.send_debug(false, "busy").unwrap();
        p.advance(secs(2));
    }
    let (busy, _) = p.client.take_packet_log();
    assert_eq!(busy.len(), 30, "{:?}", kinds(&busy));
    assert!(busy.iter().all(|m| m[0] == msg::DEBUG), "no IGNORE while busy: {:?}", kinds(&busy));
    // Then 100 s idle: IGNOREs every 5 s ± 10%.
    p.advance(secs(100));
    let (idle, _) = p.client.take_packet_log();
    assert!(idle.iter().all(|m| m[0] == msg::IGNORE));
    assert!((18..=22).contains(&idle.len()), "{} IGNOREs in 100 s", idle.len());
    let lengths: std::collections::BTreeSet<usize> = idle.iter().map(Vec::len).collect();
    assert!(lengths.len() > 10, "lengths vary: {lengths:?}");
    let contents: std::collections::BTreeSet<&Vec<u8>> = idle.iter().collect();
    assert_eq!(contents.len(), idle.len(), "contents are random");
    // The server sent nothing: IGNORE needs no answer.
    assert!(!p.server.is_closed());
}

#[test]
fn no_ignore_before_the_first_newkeys() {
    let mut client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    client.transport.keepalive =
        KeepaliveConfig { ignore_interval: Some(Duration::from_millis(1)), ..KeepaliveConfig::default() };
    let server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let link = LinkConfig { latency: Duration::from_millis(50), ..LinkConfig::default() };
    let mut p = Pair::new(client, server, link, 5).unwrap();
    p.client.log_packets(true);
    p.on_server_event = Some(accept_policy("pw"));
    p.authenticate().unwrap();
    let (sent, _) = p.client.take_packet_log();
    let newkeys = sent.iter().position(|m| m[0] == msg::NEWKEYS).unwrap();
    assert!(sent[..newkeys].iter().all(|m| m[0] != msg::IGNORE && m[0] != msg::PING), "{:?}", kinds(&sent));
    assert!(sent[newkeys..].iter().any(|m| m[0] == msg::IGNORE));
}

fn kinds(msgs: &[Vec<u8>]) -> Vec<&'static str> {
    msgs.iter().map(|m| msg::name(m[0])).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Over many seeds and intervals: a black hole is detected between
    /// interval × (count_max + 1) and one jitter later, never earlier; a
    /// healthy link never closes.
    #[test]
    fn detection_time_is_bounded(seed in any::<u64>(), interval in 1u64..60, count in 1u32..6, healthy in any::<bool>()) {
        let mut p = pair(probes(interval, count), KeepaliveConfig::default(), LinkConfig::fragmenting(64), seed);
        let limit = p.now + secs(interval * u64::from(count + 3));
        if healthy {
            p.run_until(limit, |_| false);
            prop_assert!(!p.client.is_closed());
        } else {
            let last = p.client.stats().last_received.unwrap();
            p.set_fault(Fault::BlackHole);
            p.run_until(limit, |p| p.client.is_closed());
            let (t, reason) = closed_at(&p, Role::Client).expect("closed");
            prop_assert_eq!(reason, CloseReason::KeepaliveTimeout { unanswered: count });
            let earliest = last + secs(interval * u64::from(count + 1));
            prop_assert!(t >= earliest && t <= earliest + secs(interval) / 10);
        }
    }
}
