//! Downloads a command's output through the tokio adapter, counting bytes:
//! the client half of `tests/bench/run.py`'s throughput comparison.
//!
//! `download HOST PORT USER CIPHER COMMAND` (password in SANSH_PASSWORD).

use sansh::tokio::{Client, ClientOptions, HostKeyPolicy};
use sansh::{CipherAlgorithm, Credential};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, user, cipher, command] = &a[..] else {
        eprintln!("usage: download HOST PORT USER CIPHER COMMAND");
        std::process::exit(2);
    };
    let mut o = ClientOptions::new(user.as_str());
    o.config
        .credentials
        .push(Credential::Password(std::env::var("SANSH_PASSWORD").unwrap_or_default().into()));
    o.config.transport.ciphers = vec![CipherAlgorithm::from_name(cipher).expect("cipher name")];
    o.host_key_policy = HostKeyPolicy::AcceptAny;
    o.use_agent = false;
    let client = Client::connect(host, port.parse().expect("port"), o).await.expect("connect");
    let mut ch = client.open_session().await.expect("session");
    ch.exec(command).await.expect("exec");
    let mut total = 0u64;
    while let Some(chunk) = ch.read_chunk().await.expect("read") {
        total += chunk.len() as u64;
        ch.recycle(chunk);
    }
    println!("{total}");
}
