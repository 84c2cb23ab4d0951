//! Memory per idle authenticated connection.
//!
//! `cargo run --release -p sansh --features tokio,testing --example idle_connections -- server [KEY.pub]`
//! prints the port of a sansh server (authorizing the test key, and KEY.pub if given); in another process,
//! `... --example idle_connections -- client PORT 1000` opens 1,000
//! authenticated connections to it, lets them settle, and prints the growth
//! of its resident memory per connection (from /proc/self/status).
//! `tests/bench/compare.py` runs both, beside asyncssh.

use std::time::Duration;

use sansh::testing::{host_key, keys};
use sansh::tokio::{Client, ClientOptions, HostKeyPolicy, Server, ServerOptions};
use sansh::{Credential, HostKeyAlgorithm, ServerConfig, load_private_key};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let user_key = load_private_key(keys::ECDSA_P256, None).expect("test key");
    match args.first().map(String::as_str) {
        Some("server") => {
            let mut config = ServerConfig {
                host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)],
                ..ServerConfig::default()
            };
            config.max_channels = 16;
            // An extra authorized key (OpenSSH .pub file), so that another
            // client (asyncssh in tests/bench/compare.py) can be measured too.
            let mut authorized = vec![user_key.public_key().clone()];
            if let Some(path) = args.get(1) {
                let text = std::fs::read_to_string(path).expect("read the authorized key file");
                authorized
                    .push(ssh_key::PublicKey::from_openssh(text.trim()).expect("an OpenSSH public key"));
            }
            let options = ServerOptions::with_authorized_keys(config, authorized);
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), options).await.expect("bind");
            println!("{}", server.local_addr().unwrap().port());
            server.run().await.expect("serve");
        }
        Some("client") => {
            let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect("port");
            let n: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1000);
            let mut options = ClientOptions::new("bench");
            options.config.credentials = vec![Credential::PrivateKey(user_key)];
            options.host_key_policy = HostKeyPolicy::AcceptAny;
            options.use_agent = false;
            // Warm up the allocator and the runtime with one connection.
            let first = Client::connect("127.0.0.1", port, options.clone()).await.expect("connect");
            first.exec("true").await.expect("exec");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = rss_kib();
            let mut clients = Vec::with_capacity(n);
            for _ in 0..n {
                clients.push(Client::connect("127.0.0.1", port, options.clone()).await.expect("connect"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = rss_kib();
            let per = (after.saturating_sub(before)) as f64 / n as f64;
            println!(
                "{n} idle authenticated connections: RSS {before} KiB -> {after} KiB, {per:.1} KiB per connection"
            );
            drop(first);
        }
        _ => eprintln!("usage: idle_connections server [KEY.pub] | client PORT [N]"),
    }
}
