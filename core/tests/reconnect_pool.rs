//! Reconnect and Pool on simulated time: backoff curves over many seeds,
//! and pool invariants checked after every step of random operation sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;
use sansh::{
    Acquire, CloseReason, ConnectionId, Duration, GiveUpReason, Jitter, LeaseId, Pool, PoolConfig, PoolEvent,
    PoolKey, Reconnect, ReconnectAction, ReconnectConfig, Timestamp, WaiterId,
};

// ------------------------------------------------------------ Reconnect

/// Fails `n` times in a row (no time connected) and returns the delays.
fn delays(config: ReconnectConfig, seed: u64, n: u32) -> (Vec<Duration>, Option<ReconnectAction>) {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    let mut r = Reconnect::new(config, s);
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
fn no_jitter_is_exact_and_unlimited_retries_cap_at_max_delay() {
    let config = ReconnectConfig { jitter: Jitter::None, max_retries: None, ..ReconnectConfig::default() };
    let (d, gave_up) = delays(config, 1, 12);
    assert!(gave_up.is_none());
    let secs: Vec<u64> = d.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30]);
}

#[test]
fn max_retries_gives_up_with_the_attempt_count() {
    let (d, gave_up) = delays(ReconnectConfig::default(), 7, 10);
    assert_eq!(d.len(), 3);
    match gave_up {
        Some(ReconnectAction::GiveUp { reason: GiveUpReason::RetriesExhausted(last), attempts: 4 }) => {
            assert_eq!(last, "connection refused")
        }
        other => panic!("{other:?}"),
    }
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
            attempts: 0
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

/// What the test believes; checked against the pool after every step.
#[derive(Default)]
struct Model {
    now_ms: u64,
    dialing: BTreeMap<ConnectionId, PoolKey>,
    ready: BTreeMap<ConnectionId, PoolKey>,
    /// Live leases: connection and the key asked for.
    leases: BTreeMap<LeaseId, (ConnectionId, PoolKey)>,
    ended: BTreeSet<LeaseId>,
    /// Waiters per key in queue order, with deadlines.
    waiters: HashMap<PoolKey, VecDeque<(WaiterId, u64)>>,
    /// When each ready connection last had no lease.
    idle_since: BTreeMap<ConnectionId, u64>,
    /// Connections whose server refused a channel: the leases they take now.
    caps: BTreeMap<ConnectionId, usize>,
    /// Connections that refused their only channel (the pool must close them).
    refusing: BTreeSet<ConnectionId>,
}

impl Model {
    fn leases_on(&self, c: ConnectionId) -> usize {
        self.leases.values().filter(|(conn, _)| *conn == c).count()
    }

    fn cap(&self, c: ConnectionId, cfg: &PoolConfig) -> usize {
        self.caps.get(&c).copied().unwrap_or(cfg.max_channels_per_connection as usize)
    }

    fn grant(&mut self, lease: sansh::Lease, key: PoolKey) -> Result<(), TestCaseError> {
        let conn_key = self.ready.get(&lease.connection);
        prop_assert!(conn_key == Some(&key), "lease for {:?} on a connection of {:?}", key, conn_key);
        prop_assert!(self.leases.insert(lease.id, (lease.connection, key)).is_none());
        self.idle_since.remove(&lease.connection);
        Ok(())
    }

    fn end(&mut self, lease: LeaseId) -> Result<(), TestCaseError> {
        prop_assert!(self.ended.insert(lease), "lease {:?} ended twice", lease);
        let (conn, _) = self.leases.remove(&lease).expect("live");
        if self.ready.contains_key(&conn) && self.leases_on(conn) == 0 {
            self.idle_since.insert(conn, self.now_ms);
        }
        Ok(())
    }
}

fn drain(pool: &mut Pool, m: &mut Model, cfg: &PoolConfig) -> Result<(), TestCaseError> {
    while let Some(e) = pool.poll_event() {
        match e {
            PoolEvent::Dial { connection, key } => {
                prop_assert!(m.dialing.insert(connection, key).is_none());
            }
            PoolEvent::LeaseGranted { waiter, lease } => {
                // FIFO: the first live waiter of the lease's key.
                let key = m.ready[&lease.connection].clone();
                let q = m.waiters.get_mut(&key).expect("waiters of key");
                let first = q.pop_front().map(|(w, _)| w);
                prop_assert_eq!(first, Some(waiter), "waiters of {:?} served out of order", key);
                m.grant(lease, key)?;
            }
            PoolEvent::WaiterTimedOut { waiter } => {
                let (key, deadline) = m
                    .waiters
                    .iter()
                    .find_map(|(k, q)| q.iter().find(|(w, _)| *w == waiter).map(|(_, d)| (k.clone(), *d)))
                    .expect("known waiter");
                prop_assert!(deadline <= m.now_ms, "waiter timed out early");
                m.waiters.get_mut(&key).unwrap().retain(|(w, _)| *w != waiter);
            }
            PoolEvent::WaiterFailed { waiter } => {
                for q in m.waiters.values_mut() {
                    q.retain(|(w, _)| *w != waiter);
                }
            }
            PoolEvent::CloseIdle { connection } => {
                prop_assert_eq!(m.leases_on(connection), 0, "closed a busy connection");
                if m.refusing.remove(&connection) {
                    prop_assert!(m.ready.remove(&connection).is_some());
                    continue;
                }
                // Either its idle time is up, or its slot went to another
                // key's dial (which `Dial` in the same drain shows).
                let since = m.idle_since.get(&connection).copied();
                prop_assert!(since.is_some(), "closed a connection that was not idle");
                let timed_out = since.unwrap() + cfg.idle_timeout.as_millis() as u64 <= m.now_ms;
                prop_assert!(
                    timed_out || pool.connections() + 1 >= cfg.max_connections,
                    "closed idle {:?} early without needing its slot",
                    connection
                );
                prop_assert!(m.ready.remove(&connection).is_some());
                m.idle_since.remove(&connection);
            }
            PoolEvent::LeaseBroken { lease, connection } => {
                prop_assert_eq!(m.leases.get(&lease).map(|l| l.0), Some(connection));
                m.end(lease)?;
            }
        }
    }
    // Limits.
    prop_assert!(pool.connections() <= cfg.max_connections);
    prop_assert_eq!(pool.connections(), m.dialing.len() + m.ready.len());
    let mut per_key: HashMap<&PoolKey, usize> = HashMap::new();
    for k in m.dialing.values().chain(m.ready.values()) {
        *per_key.entry(k).or_default() += 1;
    }
    prop_assert!(per_key.values().all(|&n| n <= cfg.max_connections_per_key));
    prop_assert!(m.refusing.is_empty(), "a connection refusing every channel was kept");
    for c in m.ready.keys() {
        let n = m.leases_on(*c);
        prop_assert!(n <= m.cap(*c, cfg), "{:?} holds {} leases over its cap", c, n);
        prop_assert_eq!(pool.leases_on(*c), Some(n as u32));
    }
    prop_assert_eq!(pool.stats().leases, m.leases.len());
    // Nobody waits beside a free slot of their own key.
    for (key, q) in &m.waiters {
        if q.is_empty() {
            continue;
        }
        for (c, k) in &m.ready {
            prop_assert!(
                k != key || m.leases_on(*c) >= m.cap(*c, cfg),
                "waiter of {:?} left waiting while {:?} has room",
                key,
                c
            );
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = PoolConfig {
        max_connections: 4,
        max_connections_per_key: 2,
        max_channels_per_connection: 3,
        idle_timeout: Duration::from_secs(60),
        acquire_timeout: Duration::from_secs(20),
    };
    let mut pool = Pool::new(cfg.clone());
    let mut m = Model::default();
    for op in ops {
        let now = Timestamp::from_millis(m.now_ms);
        match op {
            Op::Acquire(k) => {
                let key = key(k);
                match pool.acquire(now, &key) {
                    Acquire::Leased(lease) => m.grant(lease, key)?,
                    Acquire::Queued { waiter, deadline } => {
                        prop_assert_eq!(deadline, now + cfg.acquire_timeout);
                        m.waiters.entry(key).or_default().push_back((waiter, deadline.as_micros() / 1000));
                    }
                }
            }
            Op::Release(i) if !m.leases.is_empty() => {
                let lease = *m.leases.keys().nth(i % m.leases.len()).unwrap();
                m.end(lease)?;
                pool.release(now, lease);
            }
            Op::Connected(i) if !m.dialing.is_empty() => {
                let c = *m.dialing.keys().nth(i % m.dialing.len()).unwrap();
                let k = m.dialing.remove(&c).unwrap();
                m.ready.insert(c, k);
                m.idle_since.insert(c, m.now_ms);
                pool.connected(now, c);
            }
            Op::Failed(i) if !m.dialing.is_empty() => {
                let c = *m.dialing.keys().nth(i % m.dialing.len()).unwrap();
                m.dialing.remove(&c);
                pool.failed(now, c);
            }
            Op::Lost(i) if !m.ready.is_empty() => {
                let c = *m.ready.keys().nth(i % m.ready.len()).unwrap();
                m.ready.remove(&c);
                m.idle_since.remove(&c);
                pool.lost(now, c);
            }
            Op::Refused(i) if !m.leases.is_empty() => {
                let lease = *m.leases.keys().nth(i % m.leases.len()).unwrap();
                let (c, _) = m.leases[&lease].clone();
                prop_assert!(m.ended.insert(lease));
                m.leases.remove(&lease);
                let left = m.leases_on(c);
                let cap = m.cap(c, &cfg).min(left);
                m.caps.insert(c, cap);
                if cap == 0 {
                    m.refusing.insert(c);
                }
                prop_assert_eq!(pool.refused(now, lease) as usize, cap);
            }
            Op::Cancel(i) => {
                let all: Vec<(PoolKey, WaiterId)> =
                    m.waiters.iter().flat_map(|(k, q)| q.iter().map(|(w, _)| (k.clone(), *w))).collect();
                if !all.is_empty() {
                    let (k, w) = all[i % all.len()].clone();
                    prop_assert!(pool.cancel(w), "live waiter not cancellable");
                    prop_assert!(!pool.cancel(w), "cancelled twice");
                    m.waiters.get_mut(&k).unwrap().retain(|(x, _)| *x != w);
                }
            }
            Op::Advance(ms) => {
                m.now_ms += ms;
                let now = Timestamp::from_millis(m.now_ms);
                // Run every deadline up to now, in order, as an adapter would.
                while let Some(t) = pool.poll_timeout().filter(|t| *t <= now) {
                    pool.handle_timeout(t);
                    drain(&mut pool, &mut m, &cfg)?;
                }
                pool.handle_timeout(now);
                drain(&mut pool, &mut m, &cfg)?;
                // On time: nothing idle past its timeout, no waiter past its deadline.
                let idle_ms = cfg.idle_timeout.as_millis() as u64;
                for (c, since) in &m.idle_since {
                    prop_assert!(
                        since + idle_ms > m.now_ms,
                        "{:?} idle since {} still open at {}",
                        c,
                        since,
                        m.now_ms
                    );
                }
                for q in m.waiters.values() {
                    prop_assert!(q.iter().all(|(_, d)| *d > m.now_ms), "a waiter outlived its deadline");
                }
            }
            _ => {}
        }
        drain(&mut pool, &mut m, &cfg)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pool_invariants_hold_after_every_step(ops in ops()) {
        run(ops)?;
    }
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
        r.lost(Timestamp::from_secs(5), &reason);
        match r.poll_action() {
            Some(ReconnectAction::GiveUp { reason: GiveUpReason::NotRetryable(why), attempts: 0 }) => {
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
        assert!(
            matches!(r.poll_action(), Some(ReconnectAction::Scheduled { attempt: 1, .. })),
            "{reason:?} should be retried"
        );
    }
}

#[test]
fn a_stable_connection_resets_the_count_and_a_short_one_does_not() {
    let config = ReconnectConfig { jitter: Jitter::None, max_retries: Some(2), ..ReconnectConfig::default() };
    let mut r = Reconnect::new(config, [0; 32]);
    let mut now = Timestamp::ZERO;
    // Up for 5 s each time (< stable 30 s): the count keeps rising.
    for attempt in 1..=2 {
        r.connected(now);
        now = now + Duration::from_secs(5);
        r.lost(now, &CloseReason::Eof);
        match r.poll_action() {
            Some(ReconnectAction::Scheduled { attempt: a, delay }) => {
                assert_eq!((a, delay), (attempt, Duration::from_secs(1 << (attempt - 1))))
            }
            other => panic!("{other:?}"),
        }
        now = r.poll_timeout().unwrap();
        r.handle_timeout(now);
        assert_eq!(r.poll_action(), Some(ReconnectAction::Dial { attempt }));
    }
    // Up for 31 s: reset, so this loss is attempt 1 again.
    r.connected(now);
    now = now + Duration::from_secs(31);
    r.lost(now, &CloseReason::Eof);
    assert_eq!(
        r.poll_action(),
        Some(ReconnectAction::Scheduled { attempt: 1, delay: Duration::from_secs(1) })
    );
    assert_eq!(r.failures(), 1);
}
