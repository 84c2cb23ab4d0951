//! Reconnect and Pool on simulated time: backoff curves over many seeds
//! and configs, and both machines' invariants checked after every step of
//! random operation sequences (the checkers `pool_ops`/`reconnect_ops` use,
//! `sansh::testing::fuzz::{PoolChecker, ReconnectChecker}`).

use std::collections::BTreeSet;

use proptest::prelude::*;
use sansh::testing::fuzz::{PoolChecker, ReconnectChecker, backoff_curve, delay_bounds};
use sansh::{
    Acquire, CloseReason, DisconnectCode, Duration, GiveUpReason, Jitter, Pool, PoolConfig, PoolEvent,
    PoolKey, Reconnect, ReconnectAction, ReconnectConfig, Timestamp,
};

// ------------------------------------------------------------ Reconnect

fn seed(n: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

/// Fails `n` times in a row (the first dial, then every retry, no time
/// connected) and returns the delays and the `GiveUp`, if any.
fn delays(config: ReconnectConfig, seed_n: u64, n: u32) -> (Vec<Duration>, Option<ReconnectAction>) {
    let mut r = Reconnect::new(config, seed(seed_n));
    let mut now = Timestamp::ZERO;
    let mut out = Vec::new();
    for _ in 0..n {
        r.dial_failed(now, true, "connection refused");
        let mut gave_up = None;
        while let Some(a) = r.poll_action() {
            if let ReconnectAction::GiveUp { .. } = a {
                gave_up = Some(a);
            }
        }
        if gave_up.is_some() {
            return (out, gave_up);
        }
        let t = r.poll_timeout().expect("scheduled");
        out.push(t - now);
        now = t;
        r.handle_timeout(now);
        assert!(matches!(r.poll_action(), Some(ReconnectAction::Dial { .. })));
    }
    (out, None)
}

/// Curves other than the default, one per jitter mode each.
fn curves() -> Vec<ReconnectConfig> {
    let mut v = Vec::new();
    for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
        v.push(ReconnectConfig {
            initial_delay: Duration::from_millis(250),
            multiplier: 3,
            max_delay: Duration::from_secs(20),
            max_retries: Some(6),
            jitter,
            stable_period: Duration::from_secs(5),
        });
        // Constant delay (multiplier 1), a cap below the initial delay, and
        // a multiplier of 0 (counts as 1), without a retry limit.
        v.push(ReconnectConfig { multiplier: 1, max_retries: None, ..v[v.len() - 1].clone() });
        v.push(ReconnectConfig {
            initial_delay: Duration::from_secs(3),
            max_delay: Duration::from_secs(2),
            multiplier: 0,
            max_retries: None,
            ..v[v.len() - 1].clone()
        });
    }
    v
}

#[test]
fn delays_follow_the_curve_within_jitter_bounds_over_many_seeds() {
    let base = |n: u32| Duration::from_secs((1u64 << (n - 1)).min(30));
    for jitter in [Jitter::Full, Jitter::Equal] {
        let config = ReconnectConfig { jitter, max_retries: None, ..ReconnectConfig::default() };
        let mut sums = [0f64; 8];
        for seed in 0..1000 {
            let (d, gave_up) = delays(config.clone(), seed, 8);
            assert!(gave_up.is_none());
            for (i, delay) in d.iter().enumerate() {
                let b = base(i as u32 + 1);
                let lo = if jitter == Jitter::Equal { b / 2 } else { Duration::ZERO };
                assert!(
                    *delay >= lo && *delay <= b,
                    "seed {seed} attempt {}: {delay:?} outside [{lo:?}, {b:?}]",
                    i + 1
                );
                sums[i] += delay.as_secs_f64() / b.as_secs_f64();
            }
        }
        // The jitter is spread, not stuck at an end: mean near the middle.
        let expected = if jitter == Jitter::Full { 0.5 } else { 0.75 };
        for (i, s) in sums.iter().enumerate() {
            let mean = s / 1000.0;
            assert!((mean - expected).abs() < 0.05, "{jitter:?} attempt {}: mean {mean}", i + 1);
        }
    }
}

#[test]
fn custom_curves_are_followed_within_jitter_bounds_over_many_seeds() {
    // The curve as written down here, to check `backoff_curve` itself.
    let expected_secs = |c: &ReconnectConfig, n: u32| -> f64 {
        let m = f64::from(c.multiplier.max(1));
        (c.initial_delay.as_secs_f64() * m.powi(n as i32 - 1)).min(c.max_delay.as_secs_f64())
    };
    for config in curves() {
        for n in 1..12 {
            let got = backoff_curve(&config, n).as_secs_f64();
            assert!((got - expected_secs(&config, n)).abs() < 1e-9, "{config:?} failure {n}: {got}");
        }
        let failures = config.max_retries.map_or(12, |m| m + 1);
        let mut sums = vec![0f64; failures as usize];
        for s in 0..500 {
            // The first dial fails, then every retry: the checker asserts
            // each delay's bounds and the give-up after max_retries.
            let mut p = ReconnectChecker::new(config.clone(), seed(s));
            for _ in 0..failures {
                p.dial_failed(true, "connection refused");
                if p.is_done() {
                    break;
                }
                let wait = p.machine().poll_timeout().expect("scheduled").saturating_duration_since(p.now());
                p.advance(wait);
            }
            assert_eq!(p.is_done(), config.max_retries.is_some(), "{config:?}");
            assert_eq!(p.delays().len() as u32, config.max_retries.unwrap_or(failures));
            for &(n, d) in p.delays() {
                sums[n as usize - 1] += d.as_secs_f64() / backoff_curve(&config, n).as_secs_f64();
            }
        }
        let expected = match config.jitter {
            Jitter::None => 1.0,
            Jitter::Full => 0.5,
            Jitter::Equal => 0.75,
        };
        for (i, s) in sums.iter().enumerate().take(config.max_retries.unwrap_or(failures) as usize) {
            let mean = s / 500.0;
            assert!((mean - expected).abs() < 0.06, "{config:?} failure {}: mean {mean}", i + 1);
        }
    }
}

#[test]
fn no_jitter_is_exact_and_unlimited_retries_cap_at_max_delay() {
    let config = ReconnectConfig { jitter: Jitter::None, max_retries: None, ..ReconnectConfig::default() };
    let (d, gave_up) = delays(config, 1, 12);
    assert!(gave_up.is_none());
    let secs: Vec<u64> = d.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30]);
}

#[test]
fn unlimited_retries_never_give_up() {
    let config = ReconnectConfig {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(3),
        max_retries: None,
        jitter: Jitter::Equal,
        ..ReconnectConfig::default()
    };
    let (d, gave_up) = delays(config.clone(), 9, 2000);
    assert!(gave_up.is_none());
    assert_eq!(d.len(), 2000);
    for (i, delay) in d.iter().enumerate() {
        let (lo, hi) = delay_bounds(&config, i as u32 + 1);
        assert!(*delay >= lo && *delay <= hi, "failure {}: {delay:?}", i + 1);
    }
    assert!(d[1999] >= Duration::from_millis(1500), "capped at 3 s, equal jitter");
}

#[test]
fn max_retries_gives_up_with_the_attempt_count() {
    // The first dial fails and three retries do: four dials made.
    let (d, gave_up) = delays(ReconnectConfig::default(), 7, 10);
    assert_eq!(d.len(), 3);
    match gave_up {
        Some(ReconnectAction::GiveUp { reason: GiveUpReason::RetriesExhausted(last), attempts: 4 }) => {
            assert_eq!(last, "connection refused")
        }
        other => panic!("{other:?}"),
    }
    // A stable connection is lost and three retries fail: three dials made.
    let mut r = Reconnect::new(ReconnectConfig::default(), seed(7));
    r.connected(Timestamp::ZERO);
    let mut now = Timestamp::from_secs(100);
    r.lost(now, &CloseReason::Eof);
    let mut dials = Vec::new();
    let gave_up = loop {
        match r.poll_action() {
            Some(ReconnectAction::Dial { attempt }) => {
                dials.push(attempt);
                r.dial_failed(now, true, "connection refused");
            }
            Some(ReconnectAction::GiveUp { reason, attempts }) => break (reason, attempts),
            Some(ReconnectAction::Scheduled { .. }) => {}
            None => {
                now = r.poll_timeout().expect("scheduled");
                r.handle_timeout(now);
            }
        }
    };
    assert_eq!(dials, [1, 2, 3]);
    assert_eq!(gave_up, (GiveUpReason::RetriesExhausted("connection refused".into()), 3));
}

#[test]
fn same_seed_same_delays() {
    let a = delays(ReconnectConfig { max_retries: None, ..ReconnectConfig::default() }, 42, 20).0;
    let b = delays(ReconnectConfig { max_retries: None, ..ReconnectConfig::default() }, 42, 20).0;
    let c = delays(ReconnectConfig { max_retries: None, ..ReconnectConfig::default() }, 43, 20).0;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_dial_that_cannot_succeed_gives_up_at_once() {
    let mut r = Reconnect::new(ReconnectConfig::default(), [0; 32]);
    r.dial_failed(Timestamp::ZERO, false, "no such host");
    assert_eq!(
        r.poll_action(),
        Some(ReconnectAction::GiveUp {
            reason: GiveUpReason::DialFailed("no such host".into()),
            attempts: 1
        })
    );
    // Lost with a retryable reason after giving up: nothing more.
    r.lost(Timestamp::from_secs(1), &CloseReason::Eof);
    assert_eq!(r.poll_action(), None);
}

// ----------------------------------------------------------------- Pool

fn key(i: u8) -> PoolKey {
    PoolKey {
        host: format!("host{}", i % 2),
        port: 22,
        user: format!("user{}", i / 2),
        identity: "SHA256:k".into(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(u8),
    Release(usize),
    Connected(usize),
    Failed(usize),
    Lost(usize),
    /// The server refused the channel of a live lease.
    Refused(usize),
    Cancel(usize),
    Advance(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Acquire),
            3 => any::<usize>().prop_map(Op::Release),
            2 => any::<usize>().prop_map(Op::Connected),
            1 => any::<usize>().prop_map(Op::Failed),
            1 => any::<usize>().prop_map(Op::Lost),
            1 => any::<usize>().prop_map(Op::Refused),
            1 => any::<usize>().prop_map(Op::Cancel),
            2 => (0u64..200_000).prop_map(Op::Advance),
        ],
        1..200,
    )
}

/// Small limits, so that the global limit, the per-key limit and the
/// channel limit all bind with four keys.
fn pool_config() -> impl Strategy<Value = PoolConfig> {
    (1usize..=4, 1usize..=3, 1u32..=3, prop::bool::weighted(0.1)).prop_map(
        |(max_connections, max_connections_per_key, max_channels_per_connection, instant_timeout)| {
            PoolConfig {
                max_connections,
                max_connections_per_key,
                max_channels_per_connection,
                idle_timeout: Duration::from_secs(60),
                acquire_timeout: Duration::from_secs(if instant_timeout { 0 } else { 20 }),
            }
        },
    )
}

fn run(cfg: PoolConfig, ops: Vec<Op>) {
    let mut p = PoolChecker::new(cfg);
    for op in ops {
        match op {
            Op::Acquire(k) => p.acquire(key(k)),
            Op::Release(i) => _ = p.release(i),
            Op::Connected(i) => _ = p.connected(i),
            Op::Failed(i) => _ = p.failed(i),
            Op::Lost(i) => _ = p.lost(i),
            Op::Refused(i) => _ = p.refused(i),
            Op::Cancel(i) => _ = p.cancel(i),
            Op::Advance(ms) => p.advance(ms),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Limits, no lease across keys, every lease ended once, waiters FIFO
    /// (per key, and across keys for the global limit), idle expiry on time
    /// and never early, liveness across keys, stats: see `PoolChecker`.
    #[test]
    fn pool_invariants_hold_after_every_step(cfg in pool_config(), ops in ops()) {
        run(cfg, ops);
    }
}

/// The review's starvation repro as an operation sequence: one connection
/// in all, key 1 holds it, key 0 queues, key 1 releases. The checker's
/// liveness invariant fails on a pool that never dials for key 0.
#[test]
fn a_waiter_of_another_key_gets_the_only_connection_once_it_is_free() {
    let cfg = PoolConfig { max_connections: 1, max_channels_per_connection: 1, ..PoolConfig::default() };
    run(
        cfg.clone(),
        vec![
            Op::Acquire(1),
            Op::Connected(0),
            Op::Acquire(0),
            Op::Release(0),
            Op::Connected(0),
            Op::Advance(1_000),
        ],
    );
    // The same with the holder lost instead of released, and idle-closed.
    run(cfg.clone(), vec![Op::Acquire(1), Op::Connected(0), Op::Acquire(0), Op::Lost(0), Op::Connected(0)]);
    run(cfg, vec![Op::Acquire(1), Op::Connected(0), Op::Release(0), Op::Advance(61_000), Op::Acquire(0)]);
}

#[test]
fn idle_connection_is_reused_then_closed_on_time() {
    let cfg = PoolConfig::default();
    let mut pool = Pool::new(cfg.clone());
    let k = key(0);
    let t0 = Timestamp::ZERO;
    let Acquire::Queued { waiter, .. } = pool.acquire(t0, &k) else { panic!() };
    let Some(PoolEvent::Dial { connection, .. }) = pool.poll_event() else { panic!() };
    pool.connected(t0, connection);
    let Some(PoolEvent::LeaseGranted { waiter: w, lease }) = pool.poll_event() else { panic!() };
    assert_eq!(w, waiter);
    pool.release(Timestamp::from_secs(1), lease.id);
    // Reused: no new dial.
    let Acquire::Leased(again) = pool.acquire(Timestamp::from_secs(2), &k) else { panic!() };
    assert_eq!(again.connection, connection);
    pool.release(Timestamp::from_secs(3), again.id);
    assert_eq!(pool.poll_timeout(), Some(Timestamp::from_secs(3) + cfg.idle_timeout));
    pool.handle_timeout(Timestamp::from_secs(302));
    assert_eq!(pool.poll_event(), None);
    pool.handle_timeout(Timestamp::from_secs(303));
    assert_eq!(pool.poll_event(), Some(PoolEvent::CloseIdle { connection }));
    let s = pool.stats();
    assert_eq!((s.dials, s.leases_granted, s.leases_reused, s.evictions), (1, 2, 1, 1));
    assert_eq!(s.reuse_ratio(), 0.5);
}

#[test]
fn lost_connection_breaks_its_leases() {
    let mut pool = Pool::new(PoolConfig::default());
    let k = key(1);
    let _ = pool.acquire(Timestamp::ZERO, &k);
    let Some(PoolEvent::Dial { connection, .. }) = pool.poll_event() else { panic!() };
    pool.connected(Timestamp::ZERO, connection);
    let _ = pool.poll_event();
    let Acquire::Leased(second) = pool.acquire(Timestamp::ZERO, &k) else { panic!() };
    pool.lost(Timestamp::from_secs(1), connection);
    let broken: BTreeSet<_> = std::iter::from_fn(|| pool.poll_event())
        .filter_map(|e| match e {
            PoolEvent::LeaseBroken { lease, .. } => Some(lease),
            _ => None,
        })
        .collect();
    assert_eq!(broken.len(), 2);
    assert!(broken.contains(&second.id));
}

#[test]
fn a_refused_channel_caps_its_connection_and_a_refused_only_channel_closes_it() {
    // The pool allows 4 channels a connection; the server takes only 2.
    let cfg = PoolConfig { max_channels_per_connection: 4, ..PoolConfig::default() };
    let mut pool = Pool::new(cfg);
    let k = key(2);
    let t0 = Timestamp::ZERO;
    let _ = pool.acquire(t0, &k);
    let Some(PoolEvent::Dial { connection: first, .. }) = pool.poll_event() else { panic!() };
    pool.connected(t0, first);
    let _ = pool.poll_event();
    // One lease went to the first caller; three more fill it to 4.
    let leases: Vec<_> = (0..3)
        .map(|_| match pool.acquire(t0, &k) {
            Acquire::Leased(l) => l,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(leases.iter().all(|l| l.connection == first));
    // The third and fourth channels are refused: the connection keeps two.
    assert_eq!(pool.refused(t0, leases[2].id), 3);
    assert_eq!(pool.refused(t0, leases[1].id), 2);
    assert_eq!(pool.leases_on(first), Some(2));
    // The next caller waits for a new connection instead of being refused again.
    let Acquire::Queued { .. } = pool.acquire(t0, &k) else { panic!("leased on a full connection") };
    let Some(PoolEvent::Dial { connection: second, .. }) = pool.poll_event() else { panic!() };
    assert_ne!(second, first);
    // A release makes room for one, within the new cap.
    pool.release(t0, leases[0].id);
    let Some(PoolEvent::LeaseGranted { lease, .. }) = pool.poll_event() else { panic!() };
    assert_eq!(lease.connection, first);
    let Acquire::Queued { .. } = pool.acquire(t0, &k) else { panic!("over the cap") };
    // A connection refusing its only channel is useless: it is closed.
    pool.connected(t0, second);
    let Some(PoolEvent::LeaseGranted { lease: only, .. }) = pool.poll_event() else { panic!() };
    assert_eq!((only.connection, pool.poll_event()), (second, None));
    assert_eq!(pool.refused(t0, only.id), 0);
    assert_eq!(pool.poll_event(), Some(PoolEvent::CloseIdle { connection: second }));
    assert_eq!(pool.leases_on(second), None);
}

#[test]
fn terminal_close_reasons_give_up_at_once_and_say_why() {
    use sansh::DisconnectCode;
    let terminal = [
        CloseReason::HostKeyRejected,
        CloseReason::AuthFailed { offered: vec!["publickey".into()], attempts: vec![] },
        CloseReason::TooManyAuthFailures { failures: 6 },
        CloseReason::Local { code: DisconnectCode::BY_APPLICATION, description: "bye".into() },
        CloseReason::PeerDisconnect {
            code: DisconnectCode::PROTOCOL_ERROR,
            description: "bad packet".into(),
        },
        CloseReason::Error(sansh::Error::UnexpectedMessage {
            number: 94,
            message: "CHANNEL_DATA",
            phase: "kex",
        }),
        CloseReason::Error(sansh::Error::NoCommonAlgorithm {
            kind: sansh::error::AlgorithmKind::Kex,
            client: "curve25519-sha256".into(),
            server: "diffie-hellman-group1-sha1".into(),
        }),
    ];
    for reason in terminal {
        let mut r =
            Reconnect::new(ReconnectConfig { max_retries: None, ..ReconnectConfig::default() }, [3; 32]);
        r.connected(Timestamp::ZERO);
        // Up 5 s, not yet stable: the first dial is the one attempt made.
        r.lost(Timestamp::from_secs(5), &reason);
        match r.poll_action() {
            Some(ReconnectAction::GiveUp { reason: GiveUpReason::NotRetryable(why), attempts: 1 }) => {
                assert_eq!(why, reason)
            }
            other => panic!("{reason:?}: {other:?}"),
        }
        assert!(r.is_done() && r.poll_timeout().is_none() && r.poll_action().is_none());
    }
    let retryable = [
        CloseReason::Eof,
        CloseReason::KeepaliveTimeout { unanswered: 3 },
        CloseReason::KexTimeout,
        CloseReason::PeerDisconnect { code: DisconnectCode::CONNECTION_LOST, description: String::new() },
    ];
    for reason in retryable {
        let mut r = Reconnect::new(ReconnectConfig::default(), [3; 32]);
        r.connected(Timestamp::ZERO);
        r.lost(Timestamp::from_secs(5), &reason);
        // Failure 1 after dial 1: dial 2 is scheduled after the first delay.
        match r.poll_action() {
            Some(ReconnectAction::Scheduled { attempt: 2, delay }) if delay <= Duration::from_secs(1) => {}
            other => panic!("{reason:?} should be retried: {other:?}"),
        }
    }
}

#[test]
fn a_stable_connection_resets_the_count_and_a_short_one_does_not() {
    // A stable period other than the default, checked by the checker at
    // every step (counts reset the moment it passes, not at the next loss).
    let config = ReconnectConfig {
        jitter: Jitter::None,
        max_retries: Some(2),
        stable_period: Duration::from_secs(7),
        ..ReconnectConfig::default()
    };
    let mut p = ReconnectChecker::new(config, [0; 32]);
    // Up for 5 s each time (< 7 s): the count keeps rising.
    for failure in 1..=2u32 {
        p.connected();
        p.advance(Duration::from_secs(5));
        assert_eq!(p.machine().failures(), failure - 1);
        p.lost(&CloseReason::Eof, true);
        assert_eq!(p.delays().last(), Some(&(failure, Duration::from_secs(1 << (failure - 1)))));
        let wait = p.machine().poll_timeout().unwrap().saturating_duration_since(p.now());
        p.advance(wait);
    }
    assert_eq!((p.machine().failures(), p.machine().attempts()), (2, 3));
    // Up 7 s: the counts reset then, while it is still up.
    p.connected();
    p.advance(Duration::from_millis(6999));
    assert_eq!(p.machine().failures(), 2);
    p.advance(Duration::from_millis(1));
    assert_eq!((p.machine().failures(), p.machine().attempts()), (0, 0));
    // So this loss is failure 1 again: the first delay, dial 1.
    p.advance(Duration::from_secs(60));
    p.lost(&CloseReason::KeepaliveTimeout { unanswered: 3 }, true);
    assert_eq!(p.delays().last(), Some(&(1, Duration::from_secs(1))));
    // And two more failures are allowed before giving up, not zero.
    for _ in 0..2 {
        let wait = p.machine().poll_timeout().unwrap().saturating_duration_since(p.now());
        p.advance(wait);
        p.dial_failed(true, "refused");
    }
    assert!(p.is_done());
}

/// Which close reasons a retry can fix, by the list (not by
/// `is_retryable`): host key, authentication, no common algorithm, a
/// protocol violation, our own close cannot be fixed.
fn reasons() -> Vec<(CloseReason, bool)> {
    vec![
        (CloseReason::Eof, true),
        (CloseReason::KeepaliveTimeout { unanswered: 2 }, true),
        (CloseReason::KexTimeout, true),
        (
            CloseReason::PeerDisconnect { code: DisconnectCode::CONNECTION_LOST, description: String::new() },
            true,
        ),
        (CloseReason::HostKeyRejected, false),
        (CloseReason::AuthFailed { offered: vec!["publickey".into()], attempts: vec![] }, false),
        (
            CloseReason::PeerDisconnect { code: DisconnectCode::PROTOCOL_ERROR, description: "bad".into() },
            false,
        ),
        (CloseReason::Local { code: DisconnectCode::BY_APPLICATION, description: "bye".into() }, false),
        (
            CloseReason::Error(sansh::Error::NoCommonAlgorithm {
                kind: sansh::error::AlgorithmKind::CipherClientToServer,
                client: "aes128-gcm@openssh.com".into(),
                server: "3des-cbc".into(),
            }),
            false,
        ),
    ]
}

#[derive(Debug, Clone)]
enum ReconnectOp {
    Connected,
    Lost(usize),
    DialFailed(bool),
    Stop,
    Advance(u64),
}

fn reconnect_config() -> impl Strategy<Value = ReconnectConfig> {
    (
        0u64..5_000,
        0u32..5,
        0u64..60_000,
        prop::option::of(0u32..8),
        prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)],
        0u64..20_000,
    )
        .prop_map(|(initial, multiplier, max, max_retries, jitter, stable)| ReconnectConfig {
            initial_delay: Duration::from_millis(initial),
            multiplier,
            max_delay: Duration::from_millis(max),
            max_retries,
            jitter,
            stable_period: Duration::from_millis(stable),
        })
}

fn reconnect_ops() -> impl Strategy<Value = Vec<ReconnectOp>> {
    prop::collection::vec(
        prop_oneof![
            2 => Just(ReconnectOp::Connected),
            2 => any::<usize>().prop_map(ReconnectOp::Lost),
            2 => prop::bool::weighted(0.9).prop_map(ReconnectOp::DialFailed),
            1 => Just(ReconnectOp::Stop),
            4 => (0u64..30_000).prop_map(ReconnectOp::Advance),
        ],
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random adapter reports on random curves: every delay on the curve
    /// within its jitter bounds, terminal reasons give up at once, max
    /// retries gives up with the dials made, the stable period resets.
    #[test]
    fn reconnect_invariants_hold_after_every_step(
        config in reconnect_config(),
        seed_n in any::<u64>(),
        ops in reconnect_ops(),
    ) {
        let reasons = reasons();
        let mut p = ReconnectChecker::new(config, seed(seed_n));
        for op in ops {
            match op {
                ReconnectOp::Connected => p.connected(),
                ReconnectOp::Lost(i) => {
                    let (reason, retryable) = &reasons[i % reasons.len()];
                    p.lost(reason, *retryable);
                }
                ReconnectOp::DialFailed(retryable) => p.dial_failed(retryable, "connection refused"),
                ReconnectOp::Stop => p.stop(),
                ReconnectOp::Advance(ms) => p.advance(Duration::from_millis(ms)),
            }
        }
    }
}
