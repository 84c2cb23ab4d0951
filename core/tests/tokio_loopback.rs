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
