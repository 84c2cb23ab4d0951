//! Downloads a command's output through the tokio adapter, counting bytes:
//! the library's bulk-read path (`read_chunk`, slices of the receive
//! buffer without a copy) on its own, to
//! profile or time by hand. The side-by-side benchmarks
//! (`tests/bench/run.sh`, which builds and runs `tests/bench/compare.py`)
//! measure the `sansh` CLI's downloads instead, not this example.
//!
//! `download HOST PORT USER CIPHER COMMAND` (password in SANSH_PASSWORD),
//! e.g. `cargo run -p sansh --release --features tokio --example download --
//! 127.0.0.1 2222 me aes128-gcm@openssh.com 'head -c 1G /dev/zero'`.

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
    }
    println!("{total}");
}
