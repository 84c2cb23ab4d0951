//! Pool bookkeeping speed: `cargo bench -p sansh --bench pool`.
//!
//! 10,000 connections over 1,000 keys (10 each), 100,000 leases live, one
//! spare slot per connection. Each measured step acquires a lease for a
//! pseudo-random key (served at once from a free slot) and releases a
//! pseudo-random live lease, so the pool stays full and every free list is
//! exercised. Reports acquire+release pairs per second on one core (target
//! ≥ 1M/s). A second run adds waiters: one key is saturated so its acquires
//! queue and each release hands the freed slot to the first waiter.
//! `cargo test --bench pool` runs a small smoke version.

use std::time::Instant;

use sansh::{Acquire, LeaseId, Pool, PoolConfig, PoolEvent, PoolKey, Timestamp};

/// xorshift64*: cheap, reproducible indices without touching the pool's state.
struct Indices(u64);

impl Indices {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

fn key(i: usize) -> PoolKey {
    PoolKey {
        host: format!("host-{:04}.example.net", i % 250),
        port: 22,
        user: format!("user{}", i / 250),
        identity: "SHA256:Ctx6qV2HBgTjnJWGA7QjvVvmGNG4lZFTDE3ESTP4xPA".into(),
    }
}

/// A pool with `conns_per_key × keys` connections up and `leases_per_conn`
/// leases on each; the live leases, per key.
fn filled(keys: &[PoolKey], conns_per_key: usize, leases_per_conn: u32) -> (Pool, Vec<Vec<LeaseId>>) {
    let config = PoolConfig {
        max_connections: keys.len() * conns_per_key,
        max_connections_per_key: conns_per_key,
        max_channels_per_connection: leases_per_conn + 1,
        ..PoolConfig::default()
    };
    let mut pool = Pool::new(config);
    let now = Timestamp::ZERO;
    let mut per_key = Vec::new();
    for k in keys {
        // Queue enough waiters that the pool dials every connection of the key.
        let wanted = conns_per_key * (leases_per_conn as usize + 1);
        for _ in 0..wanted {
            let _ = pool.acquire(now, k);
        }
        let mut granted: Vec<(u64, LeaseId)> = Vec::new();
        while let Some(e) = pool.poll_event() {
            match e {
                PoolEvent::Dial { connection, .. } => pool.connected(now, connection),
                PoolEvent::LeaseGranted { lease, .. } => granted.push((lease.connection.0, lease.id)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Every waiter was served; release one lease per connection for room.
        granted.sort();
        let mut last = None;
        let mut leases = Vec::new();
        for (conn, lease) in granted {
            if last != Some(conn) {
                pool.release(now, lease);
                last = Some(conn);
            } else {
                leases.push(lease);
            }
        }
        per_key.push(leases);
    }
    (pool, per_key)
}

/// Acquire+release pairs per second with no waiters: a lease for a random
/// key, then a random live lease of that key goes back (the key stays at
/// one spare slot per connection, spread over its connections at random).
fn steady(keys: &[PoolKey], pool: &mut Pool, leases: &mut [Vec<LeaseId>], pairs: usize) -> f64 {
    let mut idx = Indices(0x9E37_79B9_7F4A_7C15);
    let now = Timestamp::from_secs(1);
    let start = Instant::now();
    for _ in 0..pairs {
        let k = idx.next(keys.len());
        let Acquire::Leased(lease) = pool.acquire(now, &keys[k]) else { panic!("no free slot for {k}") };
        let mine = &mut leases[k];
        let slot = idx.next(mine.len());
        pool.release(now, std::mem::replace(&mut mine[slot], lease.id));
    }
    pairs as f64 / start.elapsed().as_secs_f64()
}

/// One hot key with a queue: each release of one of its leases serves the
/// waiter, and a new acquire queues again.
fn contended(keys: &[PoolKey], pool: &mut Pool, leases: &mut [Vec<LeaseId>], pairs: usize) -> f64 {
    let now = Timestamp::from_secs(2);
    let hot = &keys[0];
    let mine = &mut leases[0];
    // Fill the hot key's spare slots; the first acquire that finds none queues.
    while let Acquire::Leased(l) = pool.acquire(now, hot) {
        mine.push(l.id);
    }
    assert_eq!(pool.poll_event(), None, "the hot key is at its connection limit: no dial");
    let mut idx = Indices(7);
    let start = Instant::now();
    for _ in 0..pairs {
        let slot = idx.next(mine.len());
        pool.release(now, mine[slot]);
        let Some(PoolEvent::LeaseGranted { lease, .. }) = pool.poll_event() else {
            panic!("waiter not served")
        };
        mine[slot] = lease.id;
        let Acquire::Queued { .. } = pool.acquire(now, hot) else { panic!("hot key had room") };
    }
    pairs as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (n_keys, pairs, rounds) = if smoke { (20, 20_000, 1) } else { (1_000, 2_000_000, 5) };
    let keys: Vec<PoolKey> = (0..n_keys).map(key).collect();
    let setup = Instant::now();
    let (mut pool, mut leases) = filled(&keys, 10, 10);
    let s = pool.stats();
    println!(
        "pool: {} keys, {} connections, {} leases live, {} spare slots (set up in {:.2?})",
        n_keys,
        s.ready,
        s.leases,
        s.ready,
        setup.elapsed()
    );
    assert_eq!(s.leases, n_keys * 100);
    assert_eq!(s.ready, n_keys * 10);
    let mut steady_rates: Vec<f64> =
        (0..rounds).map(|_| steady(&keys, &mut pool, &mut leases, pairs)).collect();
    assert_eq!(pool.stats().leases, n_keys * 100, "leases leaked");
    let mut hot_rates: Vec<f64> =
        (0..rounds).map(|_| contended(&keys, &mut pool, &mut leases, pairs / 4)).collect();
    steady_rates.sort_by(f64::total_cmp);
    hot_rates.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "acquire+release, free slot:        {:>6.2} M pairs/s per core (median of {rounds}; min {:.2}, max {:.2}); target >= 1 M/s",
        median(&steady_rates) / 1e6,
        steady_rates[0] / 1e6,
        steady_rates[rounds - 1] / 1e6
    );
    println!(
        "release to a waiter + queue again: {:>6.2} M pairs/s per core (median of {rounds}; min {:.2}, max {:.2})",
        median(&hot_rates) / 1e6,
        hot_rates[0] / 1e6,
        hot_rates[rounds - 1] / 1e6
    );
    let s = pool.stats();
    println!(
        "stats: dials {}, leases granted {}, reuse ratio {:.4}, waiters {}",
        s.dials,
        s.leases_granted,
        s.reuse_ratio(),
        s.waiters
    );
}
