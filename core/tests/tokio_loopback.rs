//! The tokio client against the tokio server role, over real TCP on 127.0.0.1.

use std::time::Duration;

use sansh::testing::{host_key, keys};
use sansh::tokio::{Client, ClientOptions, HostKeyPolicy, Server, ServerOptions};
use sansh::{Credential, ExitStatus, HostKeyAlgorithm, ServerConfig, load_private_key};

async fn server() -> std::net::SocketAddr {
    let user_key = load_private_key(keys::ECDSA_P256, None).unwrap();
    let config =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let options = ServerOptions::with_authorized_keys(config, vec![user_key.public_key().clone()]);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    addr
}

fn options() -> ClientOptions {
    let mut o = ClientOptions::new("demo");
    o.config.credentials = vec![Credential::PrivateKey(load_private_key(keys::ECDSA_P256, None).unwrap())];
    o.host_key_policy = HostKeyPolicy::AcceptAny;
    o.use_agent = false;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_the_sansh_server() {
    let addr = server().await;
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let out = client.exec("echo out; echo err >&2; exit 5").await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    assert_eq!(out.exit, Some(ExitStatus::Code(5)));
    let out = client.exec_with_input("sha256sum | cut -c1-16", &vec![7u8; 4_000_000]).await.unwrap();
    assert_eq!(out.stdout.len(), 17);
    let out = client.exec("kill -KILL $$").await.unwrap();
    assert!(matches!(out.exit, Some(ExitStatus::Signal { ref signal, .. }) if signal == "KILL"), "{out:?}");
    // Many at once on one connection.
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.exec(&format!("echo {i}")).await.unwrap().stdout })
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        assert_eq!(r.await.unwrap(), format!("{i}\n").into_bytes());
    }
    let stats = client.stats().await.unwrap();
    assert!(stats.packets_received > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_dropping_the_client_disconnects() {
    let addr = server().await;
    let mut o = options();
    o.config.credentials = vec![Credential::PrivateKey(load_private_key(keys::ED25519, None).unwrap())];
    let err = Client::connect("127.0.0.1", addr.port(), o).await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    // The last handle going away closes the connection (DISCONNECT sent).
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let watcher = client.clone();
    drop(client);
    assert!(watcher.wait_closed(Duration::from_millis(300)).await.is_none(), "one handle is left");
    let c2 = watcher.clone();
    drop(watcher);
    c2.disconnect();
    assert!(c2.wait_closed(Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_detects_a_black_holed_link_and_cuts_are_eof() {
    use sansh::tokio::{FaultMode, FaultProxy};
    let addr = server().await;
    let proxy = FaultProxy::start(addr).await.unwrap();
    let mut o = options();
    o.config.transport.keepalive = sansh::KeepaliveConfig {
        probe_interval: Some(Duration::from_millis(300)),
        probe_count_max: 2,
        ..Default::default()
    };
    let client = Client::connect("127.0.0.1", proxy.local_addr().port(), o.clone()).await.unwrap();
    assert_eq!(client.exec("echo up").await.unwrap().stdout, b"up\n");
    // Healthy and idle: probes keep it up and measure the round trip.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = client.stats().await.unwrap();
    assert!(stats.probes_answered >= 3 && stats.rtt.min.is_some(), "{stats:?}");
    // The link silently stops: detected after 300 ms × (2 + 1), plus slack.
    proxy.set(FaultMode::BlackHole);
    let started = tokio::time::Instant::now();
    let reason = client.wait_closed(Duration::from_secs(5)).await.expect("closed");
    assert_eq!(reason, sansh::CloseReason::KeepaliveTimeout { unanswered: 2 });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(1500), "{took:?}");
    // A cut link is a plain EOF.
    proxy.set(FaultMode::Pass);
    let client = Client::connect("127.0.0.1", proxy.local_addr().port(), o).await.unwrap();
    proxy.set(FaultMode::Cut);
    let reason = client.wait_closed(Duration::from_secs(5)).await.expect("closed");
    assert_eq!(reason, sansh::CloseReason::Eof);
    assert_eq!(proxy.connections(), 2);
}

/// `count` bytes of a xorshift stream (incompressible, replayable).
fn pseudo_random(count: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_input_streams_64_mib_through_an_echoing_command() {
    // Writing all the input before reading any output deadlocks once the
    // command's output fills our window and it stops reading its input.
    use sha2::{Digest, Sha256};
    let addr = server().await;
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let data = pseudo_random(64 << 20);
    let out = tokio::time::timeout(Duration::from_secs(120), client.exec_with_input("cat", &data))
        .await
        .expect("64 MiB through cat finished")
        .unwrap();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "cat gave back different bytes");
    let out = tokio::time::timeout(Duration::from_secs(120), client.exec_with_input("sha256sum", &data))
        .await
        .expect("64 MiB through sha256sum finished")
        .unwrap();
    let expected = format!("{:x}  -\n", Sha256::digest(&data));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// A server that also carries `direct-tcpip` to loopback (`-L`).
async fn forwarding_server() -> std::net::SocketAddr {
    let user_key = load_private_key(keys::ECDSA_P256, None).unwrap();
    let config =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let mut options = ServerOptions::with_authorized_keys(config, vec![user_key.public_key().clone()]);
    options.allow_loopback_forwarding = true;
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    addr
}

/// An echo server on 127.0.0.1; its port.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// One echo exchange through the forwarding at `addr`.
async fn echo_through(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, b"ping");
}

/// Waits (bounded) until connecting to `addr` is refused; returns how long.
/// No connection attempt is made before: one would be accepted and so hide
/// a listener that only notices the closed client on its next accept.
async fn released_within(addr: std::net::SocketAddr, limit: Duration) -> Duration {
    let t = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{addr} still listening {limit:?} after its connection ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_forward_releases_its_port_when_its_connection_ends() {
    use sansh::tokio::{FaultMode, FaultProxy};
    let addr = forwarding_server().await;
    let echo = echo_server().await;
    let listen = "127.0.0.1:0".parse().unwrap();
    let limit = Duration::from_secs(3);
    // The last client handle dropped.
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let fwd = client.local_forward(listen, "127.0.0.1", echo).await.unwrap();
    echo_through(fwd.local_addr()).await;
    drop(client);
    released_within(fwd.local_addr(), limit).await;
    // Disconnected while a handle is still held.
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let fwd = client.local_forward(listen, "127.0.0.1", echo).await.unwrap();
    echo_through(fwd.local_addr()).await;
    client.disconnect();
    released_within(fwd.local_addr(), limit).await;
    // The link lost.
    let proxy = FaultProxy::start(addr).await.unwrap();
    let client = Client::connect("127.0.0.1", proxy.local_addr().port(), options()).await.unwrap();
    let fwd = client.local_forward(listen, "127.0.0.1", echo).await.unwrap();
    echo_through(fwd.local_addr()).await;
    proxy.set(FaultMode::Cut);
    released_within(fwd.local_addr(), limit).await;
    assert!(client.close_reason().is_some());
}

/// After a bulk transfer the adapter may hold reads until 128 KiB are
/// buffered (SO_RCVLOWAT, tokio/low_water.rs). A few bytes that follow a
/// pause must still arrive, and promptly: the fallback read takes them
/// within milliseconds. (The timeout only keeps a broken fallback from
/// hanging the suite; the pause is what would otherwise never end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_bulk_transfer_and_a_pause_arrive() {
    let addr = server().await;
    let client = Client::connect("127.0.0.1", addr.port(), options()).await.unwrap();
    let cmd = "head -c 67108864 /dev/zero; sleep 0.5; printf tail; sleep 0.5; head -c 100000 /dev/zero; sleep 0.5; printf end";
    let out =
        tokio::time::timeout(Duration::from_secs(60), client.exec(cmd)).await.expect("no hang").unwrap();
    assert_eq!(out.stdout.len(), 67_108_864 + 4 + 100_000 + 3);
    assert_eq!(&out.stdout[67_108_864..67_108_868], b"tail");
    assert!(out.stdout.ends_with(b"end"));
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    // Small exchanges right after it are not held back either.
    let start = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(client.exec("echo hi").await.unwrap().stdout, b"hi\n");
    }
    eprintln!("20 execs after the transfer: {:?}", start.elapsed());
}
