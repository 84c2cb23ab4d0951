//! `sansh::tokio::ReconnectingClient` against the sansh server role behind a
//! fault-injecting proxy on 127.0.0.1: a cut link and a black hole are
//! noticed, reported and repaired (forwards included); refusals give up at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use sansh::testing::{host_key, keys};
use sansh::tokio::{
    ClientOptions, FaultMode, FaultProxy, HostKeyPolicy, ReconnectEvent, ReconnectingClient, Server,
    ServerOptions,
};
use sansh::{
    CloseReason, Credential, GiveUpReason, HostKeyAlgorithm, Jitter, ReconnectConfig, ServerConfig,
    load_private_key,
};

async fn server() -> SocketAddr {
    let key = load_private_key(keys::ECDSA_P256, None).unwrap().public_key().clone();
    let config =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let mut options = ServerOptions::with_authorized_keys(config, vec![key]);
    options.allow_loopback_forwarding = true;
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    addr
}

fn options(key: &str) -> ClientOptions {
    let mut o = ClientOptions::new("alice");
    o.config.credentials = vec![Credential::PrivateKey(load_private_key(key, None).unwrap())];
    o.host_key_policy = HostKeyPolicy::AcceptAny;
    o.use_agent = false;
    o.connect_timeout = Some(Duration::from_secs(2));
    // Probes every second, two unanswered: a dead link is lost within 3 s.
    o.config.transport.keepalive.probe_interval = Some(Duration::from_secs(1));
    o.config.transport.keepalive.probe_count_max = 2;
    o
}

fn fast_retries() -> ReconnectConfig {
    ReconnectConfig {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_retries: Some(20),
        jitter: Jitter::Equal,
        ..ReconnectConfig::default()
    }
}

/// A TCP echo server on loopback.
async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.unwrap().unwrap();
    back
}

/// The next event matching `want`, with the ones before it.
async fn until(
    events: &mut broadcast::Receiver<ReconnectEvent>,
    limit: Duration,
    want: impl Fn(&ReconnectEvent) -> bool,
) -> (ReconnectEvent, Vec<ReconnectEvent>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {limit:?}; saw {seen:?}"))
            .unwrap();
        if want(&e) {
            return (e, seen);
        }
        seen.push(e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_redialled_and_the_forward_works_again() {
    let proxy = FaultProxy::start(server().await).await.unwrap();
    let echo = echo_server().await;
    let mut rc = ReconnectingClient::start(
        "127.0.0.1",
        proxy.local_addr().port(),
        options(keys::ECDSA_P256),
        fast_retries(),
    );
    let mut events = rc.events();
    let fwd = rc.local_forward("127.0.0.1:0".parse().unwrap(), "127.0.0.1", echo.port()).await.unwrap();
    until(&mut events, Duration::from_secs(10), |e| matches!(e, ReconnectEvent::Connected { attempt: 1 }))
        .await;
    assert_eq!(echo_through(fwd, b"before").await, b"before");
    assert_eq!(rc.exec("echo up").await.unwrap().stdout, b"up\n");

    proxy.set(FaultMode::Cut);
    proxy.set(FaultMode::Pass);
    let (lost, _) =
        until(&mut events, Duration::from_secs(5), |e| matches!(e, ReconnectEvent::Lost { .. })).await;
    assert!(matches!(lost, ReconnectEvent::Lost { ref reason } if reason.is_retryable()), "{lost:?}");
    let (_, between) =
        until(&mut events, Duration::from_secs(10), |e| matches!(e, ReconnectEvent::Connected { .. })).await;
    assert!(
        matches!(between.first(), Some(ReconnectEvent::Retrying { attempt: 2, delay }) if *delay <= Duration::from_millis(100)),
        "{between:?}"
    );
    // The same listener now forwards through the new connection.
    assert_eq!(echo_through(fwd, b"after").await, b"after");
    assert_eq!(rc.exec("echo again").await.unwrap().stdout, b"again\n");
    assert!(proxy.connections() >= 2);

    rc.stop();
    let (gave_up, _) =
        until(&mut events, Duration::from_secs(5), |e| matches!(e, ReconnectEvent::GaveUp { .. })).await;
    assert!(matches!(gave_up, ReconnectEvent::GaveUp { reason: GiveUpReason::Stopped, .. }), "{gave_up:?}");
    rc.finished().await;
    assert!(rc.client().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_is_detected_by_keepalive_and_repaired() {
    let proxy = FaultProxy::start(server().await).await.unwrap();
    let rc = ReconnectingClient::start(
        "127.0.0.1",
        proxy.local_addr().port(),
        options(keys::ECDSA_P256),
        fast_retries(),
    );
    let mut events = rc.events();
    until(&mut events, Duration::from_secs(10), |e| matches!(e, ReconnectEvent::Connected { .. })).await;
    let started = tokio::time::Instant::now();
    proxy.set(FaultMode::BlackHole);
    // interval × (count_max + 1) + 1 s.
    let (lost, _) =
        until(&mut events, Duration::from_secs(4), |e| matches!(e, ReconnectEvent::Lost { .. })).await;
    assert!(
        matches!(lost, ReconnectEvent::Lost { reason: CloseReason::KeepaliveTimeout { .. } }),
        "{lost:?} after {:?}",
        started.elapsed()
    );
    proxy.set(FaultMode::Pass);
    until(&mut events, Duration::from_secs(15), |e| matches!(e, ReconnectEvent::Connected { .. })).await;
    assert_eq!(rc.exec("echo resumed").await.unwrap().stdout, b"resumed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_gives_up_at_once() {
    let addr = server().await;
    let rc = ReconnectingClient::start("127.0.0.1", addr.port(), options(keys::ED25519), fast_retries());
    let mut events = rc.events();
    let (e, before) =
        until(&mut events, Duration::from_secs(10), |e| matches!(e, ReconnectEvent::GaveUp { .. })).await;
    assert!(
        matches!(&before[..], [ReconnectEvent::DialFailed { attempt: 1, error }] if error.contains("authentication")),
        "one failed dial, no retries: {before:?}"
    );
    assert!(
        matches!(e, ReconnectEvent::GaveUp { reason: GiveUpReason::DialFailed(ref why), attempts: 1 } if why.contains("authentication")),
        "{e:?}"
    );
    let err = rc.client().await.unwrap_err();
    assert!(err.to_string().contains("gave up"), "{err}");
}
