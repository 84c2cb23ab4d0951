//! `sansh::tokio::Pool` against the sansh server role over real TCP on
//! 127.0.0.1: multiplexing within the limits, keys kept apart, idle close,
//! lost connections replaced, dial failures and timeouts reported, and
//! cancelled waiters leaving no trace.

use std::net::SocketAddr;
use std::time::Duration;

use sansh::testing::{host_key, keys};
use sansh::tokio::{
    ClientError, ClientOptions, FaultMode, FaultProxy, HostKeyPolicy, Pool, Server, ServerOptions, Target,
};
use sansh::{Credential, ExitStatus, HostKeyAlgorithm, PoolConfig, ServerConfig, load_private_key};

/// A server that accepts the test ECDSA and ed25519 user keys.
async fn server() -> SocketAddr {
    server_with_max_channels(64).await
}

/// The same, taking at most `max_channels` channels per connection.
async fn server_with_max_channels(max_channels: usize) -> SocketAddr {
    let keys =
        [keys::ECDSA_P256, keys::ED25519].map(|k| load_private_key(k, None).unwrap().public_key().clone());
    let mut config =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    config.max_channels = max_channels;
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerOptions::with_authorized_keys(config, keys.to_vec()),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    addr
}

fn target(port: u16, user: &str, key: &str) -> Target {
    let mut o = ClientOptions::new(user);
    o.config.credentials = vec![Credential::PrivateKey(load_private_key(key, None).unwrap())];
    o.host_key_policy = HostKeyPolicy::AcceptAny;
    o.use_agent = false;
    o.connect_timeout = Some(Duration::from_secs(10));
    Target::new("127.0.0.1", port, o)
}

fn config(max_connections: usize, per_connection: u32) -> PoolConfig {
    PoolConfig {
        max_connections,
        max_connections_per_key: max_connections,
        max_channels_per_connection: per_connection,
        ..PoolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_commands_share_at_most_five_connections() {
    let addr = server().await;
    let pool = Pool::new(config(5, 10));
    let t = target(addr.port(), "alice", keys::ECDSA_P256);
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let (pool, t) = (pool.clone(), t.clone());
            tokio::spawn(async move { pool.exec(&t, &format!("sleep 0.2; echo {i}")).await })
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.await.unwrap().unwrap();
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
        assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    }
    let s = pool.stats();
    assert!(s.dials <= 5, "{s:?}");
    assert_eq!(s.leases_granted, 50, "{s:?}");
    assert!(s.leases_reused >= 45, "reuse is visible: {s:?}");
    assert_eq!(s.leases, 0, "every lease came back: {s:?}");
    // Sequential work reuses one connection.
    for _ in 0..5 {
        pool.exec(&t, "true").await.unwrap();
    }
    assert_eq!(pool.stats().dials, s.dials, "no new dial for sequential work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_users_and_keys_never_share_a_connection() {
    let addr = server().await;
    let pool = Pool::new(config(10, 10));
    let targets = [
        target(addr.port(), "alice", keys::ECDSA_P256),
        target(addr.port(), "alice", keys::ED25519),
        target(addr.port(), "bob", keys::ECDSA_P256),
    ];
    assert_ne!(targets[0].key(), targets[1].key());
    assert_ne!(targets[0].key(), targets[2].key());
    assert_eq!(targets[0].key(), target(addr.port(), "alice", keys::ECDSA_P256).key());
    for t in &targets {
        for _ in 0..3 {
            let out = pool.exec(t, "echo $USER-ok").await.unwrap();
            assert!(out.stdout.ends_with(b"-ok\n"));
        }
    }
    assert_eq!(pool.stats().dials, 3, "one connection per key: {:?}", pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_its_lease_until_dropped_and_waiters_queue_fifo() {
    let addr = server().await;
    let pool = Pool::new(config(1, 1));
    let t = target(addr.port(), "alice", keys::ECDSA_P256);
    let held = pool.get(&t).await.unwrap();
    assert_eq!(pool.stats().leases, 1);
    // A caller that gives up while queued leaves no waiter behind.
    let gave_up = tokio::time::timeout(Duration::from_millis(200), pool.get(&t)).await;
    assert!(gave_up.is_err(), "queued behind the held lease");
    assert_eq!(pool.stats().waiters, 0, "the dropped waiter was cancelled");
    // The next waiter gets the lease when the session is dropped.
    let next = tokio::spawn({
        let (pool, t) = (pool.clone(), t.clone());
        async move { pool.exec(&t, "echo next").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.stats().waiters, 1);
    drop(held);
    assert_eq!(next.await.unwrap().unwrap().stdout, b"next\n");
    assert_eq!(pool.stats().dials, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_times_out_and_idle_connections_close() {
    let addr = server().await;
    let pool = Pool::new(PoolConfig {
        acquire_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        ..config(1, 1)
    });
    let t = target(addr.port(), "alice", keys::ECDSA_P256);
    let held = pool.get(&t).await.unwrap();
    let err = pool.get(&t).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    drop(held);
    assert_eq!(pool.stats().ready, 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let s = pool.stats();
    assert_eq!((s.ready, s.dialing), (0, 0), "the idle connection was closed: {s:?}");
    pool.exec(&t, "true").await.unwrap();
    assert_eq!(pool.stats().dials, 2, "a new connection after the idle close");
    // Closing everything by hand: the next caller dials again.
    pool.close_all();
    assert_eq!(pool.stats().ready, 0);
    pool.exec(&t, "true").await.unwrap();
    assert_eq!(pool.stats().dials, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_replaced_and_dial_failures_reach_the_caller() {
    let addr = server().await;
    let proxy = FaultProxy::start(addr).await.unwrap();
    let pool = Pool::new(config(2, 4));
    let t = target(proxy.local_addr().port(), "alice", keys::ECDSA_P256);
    pool.exec(&t, "true").await.unwrap();
    proxy.set(FaultMode::Cut);
    proxy.set(FaultMode::Pass);
    // The loss is noticed (EOF) and the next caller gets a new connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().ready > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = pool.exec(&t, "echo again").await.unwrap();
    assert_eq!(out.stdout, b"again\n");
    let s = pool.stats();
    assert_eq!((s.dials, s.evictions), (2, 1), "{s:?}");
    // Nothing listens here: the caller learns why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = pool.exec(&target(port, "alice", keys::ECDSA_P256), "true").await.unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_channel_limit_below_the_pools_caps_connections_instead_of_failing() {
    // The pool would put 4 sessions on a connection; the server takes 2.
    let addr = server_with_max_channels(2).await;
    let pool = Pool::new(config(3, 4));
    let t = target(addr.port(), "alice", keys::ECDSA_P256);
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let (pool, t) = (pool.clone(), t.clone());
            tokio::spawn(async move { pool.exec(&t, &format!("sleep 0.2; echo {i}")).await })
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.await.unwrap().unwrap_or_else(|e| panic!("command {i}: {e}"));
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
    }
    let s = pool.stats();
    assert_eq!(s.leases, 0, "{s:?}");
    assert!(s.dials <= 3, "{s:?}");

    // One connection allowed, one session per connection on the server: a
    // second caller is refused, waits for the first session, then runs.
    let addr = server_with_max_channels(1).await;
    let pool = Pool::new(config(1, 4));
    let t = target(addr.port(), "alice", keys::ECDSA_P256);
    let held = pool.get(&t).await.unwrap();
    let second = tokio::spawn({
        let (pool, t) = (pool.clone(), t.clone());
        async move { pool.exec(&t, "echo second").await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().waiters == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never queued: {:?}", pool.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.stats().leases, 1, "the refused lease was ended");
    drop(held);
    assert_eq!(second.await.unwrap().unwrap().stdout, b"second\n");
    assert_eq!(pool.stats().dials, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_trusted_by_a_lax_policy_never_serves_a_strict_target() {
    let addr = server().await;
    let pool = Pool::new(config(4, 4));
    let lax = target(addr.port(), "alice", keys::ECDSA_P256);
    assert_eq!(pool.exec(&lax, "echo lax").await.unwrap().stdout, b"lax\n");
    // Same host, user and key, but only hosts in an empty known_hosts are
    // trusted: it must dial (and be refused), not borrow the lax connection.
    let dir = std::env::temp_dir().join(format!("sansh-pool-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let mut strict = lax.clone();
    strict.options.host_key_policy = HostKeyPolicy::Strict { known_hosts: known_hosts.clone() };
    let err = pool.exec(&strict, "echo strict").await.map(|o| o.stdout).unwrap_err();
    assert!(err.to_string().contains("host key"), "{err}");
    assert_eq!(pool.stats().dials, 2, "{:?}", pool.stats());
    assert_ne!(lax.key(), strict.key());
    // The path is part of the identity, and so is the kind.
    let mut other_file = strict.clone();
    other_file.options.host_key_policy = HostKeyPolicy::Strict { known_hosts: dir.join("other") };
    assert_ne!(strict.key(), other_file.key());
    let mut accept_new = strict.clone();
    accept_new.options.host_key_policy = HostKeyPolicy::AcceptNew { known_hosts: known_hosts.clone() };
    assert_ne!(strict.key(), accept_new.key());
    assert_eq!(strict.key(), strict.clone().key());
    // Callbacks: clones of one callback share, two callbacks do not.
    let decide: std::sync::Arc<dyn Fn(&sansh::tokio::HostKeyQuery) -> bool + Send + Sync> =
        std::sync::Arc::new(|_| true);
    let callback = |decide| HostKeyPolicy::Callback { known_hosts: None, decide };
    let mut first = lax.clone();
    first.options.host_key_policy = callback(decide.clone());
    let mut same = lax.clone();
    same.options.host_key_policy = callback(decide.clone());
    let mut another = lax.clone();
    another.options.host_key_policy = callback(std::sync::Arc::new(|_| true));
    assert_eq!(first.key(), same.key());
    assert_ne!(first.key(), another.key());
    assert_ne!(first.key(), lax.key());
    let _ = std::fs::remove_dir_all(&dir);
}
