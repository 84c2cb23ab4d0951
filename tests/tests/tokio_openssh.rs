//! The tokio adapter against OpenSSH sshd on 127.0.0.1.

use std::time::Duration;

use sansh::tokio::{Client, ClientOptions, HostKeyPolicy};
use sansh::{Credential, ExitStatus};
use sansh_interop::sshd::{Sshd, SshdOptions};
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, ensure_test_user, keygen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sshd() -> Sshd {
    ensure_test_user();
    Sshd::start(SshdOptions::default())
}

fn options(known_hosts: &std::path::Path) -> ClientOptions {
    let mut o = ClientOptions::new(TEST_USER);
    o.config.credentials.push(Credential::Password(TEST_PASSWORD.into()));
    o.host_key_policy = HostKeyPolicy::AcceptNew { known_hosts: known_hosts.to_path_buf() };
    o.use_agent = false;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdin_and_known_hosts() {
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let kh = dir.path().join("known_hosts");
    let client = Client::connect("127.0.0.1", sshd.port, options(&kh)).await.unwrap();
    // accept-new recorded the host...
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with(&format!("[127.0.0.1]:{} ", sshd.port)), "{text}");
    let out = client.exec("echo hi; echo oops >&2; exit 3").await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.code()),
        (&b"hi\n"[..], &b"oops\n"[..], Some(3))
    );
    let out = client.exec_with_input("wc -c", &vec![b'x'; 3_000_000]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000000");
    let out = client.exec("kill -TERM $$").await.unwrap();
    assert!(matches!(out.exit, Some(ExitStatus::Signal { ref signal, .. }) if signal == "TERM"));
    assert_eq!(out.code(), Some(128 + 15));
    client.disconnect();
    // ...and a strict second connection trusts it.
    let mut strict = options(&kh);
    strict.host_key_policy = HostKeyPolicy::Strict { known_hosts: kh.clone() };
    let c2 = Client::connect("127.0.0.1", sshd.port, strict).await.unwrap();
    assert_eq!(c2.exec("true").await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let kh = dir.path().join("known_hosts");
    let other = ssh_key::PublicKey::from_openssh(sansh_interop::OTHER_ED25519).unwrap();
    std::fs::write(&kh, sansh::known_hosts::line_to_append("127.0.0.1", sshd.port, &other, None) + "\n")
        .unwrap();
    let err = Client::connect("127.0.0.1", sshd.port, options(&kh)).await.unwrap_err();
    assert!(matches!(err, sansh::tokio::ClientError::Closed(sansh::CloseReason::HostKeyRejected)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_and_streams() {
    let sshd = sshd();
    let dir = TempDir::new("keys");
    let (_, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "pass phrase");
    sshd.authorize(&public);
    let mut o = options(&dir.path().join("kh"));
    o.config.credentials.clear();
    o.identity_files.push(dir.path().join("id_ed25519"));
    o.passphrase = Some("pass phrase".into());
    let client = Client::connect("127.0.0.1", sshd.port, o).await.unwrap();
    // A session as streams: write stdin, read stdout, EOF, exit status.
    let mut ch = client.open_session().await.unwrap();
    ch.exec("sha256sum").await.unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        async move {
            ch.write_all(&data).await.unwrap();
            ch.shutdown().await.unwrap();
            let mut out = String::new();
            ch.read_to_string(&mut out).await.unwrap();
            (out, ch.wait().await.unwrap())
        }
    };
    let (out, exit) = tokio::time::timeout(Duration::from_secs(60), writer).await.unwrap();
    let expected = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&data))
    };
    assert!(out.starts_with(&expected), "{out}");
    assert_eq!(exit, Some(ExitStatus::Code(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_forwarding() {
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let client = Client::connect("127.0.0.1", sshd.port, options(&dir.path().join("kh"))).await.unwrap();
    // An echo server here.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    // -L: local port -> sshd -> echo server.
    let fwd = client.local_forward("127.0.0.1:0".parse().unwrap(), "127.0.0.1", echo_port).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(fwd.local_addr()).await.unwrap();
    let payload = vec![42u8; 200_000];
    s.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload);
    // -R: sshd listens; a program there connects and talks to our echo server.
    let rf = client.remote_forward("127.0.0.1", 0, "127.0.0.1", echo_port).await.unwrap();
    let port = rf.bound_port();
    let out = client
        .exec(&format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo round trip >&3; head -n1 <&3'"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"round trip\n");
    rf.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_input_streams_64_mib_through_cat_and_sha256sum() {
    // The input is written while the output is read: a command that echoes
    // it (cat) stops reading once its output fills our window.
    use sha2::Digest;
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let client = Client::connect("127.0.0.1", sshd.port, options(&dir.path().join("kh"))).await.unwrap();
    let data = sansh_interop::peer::test_data(64 << 20);
    let out = tokio::time::timeout(Duration::from_secs(120), client.exec_with_input("cat", &data))
        .await
        .expect("64 MiB through cat finished")
        .unwrap();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "cat gave back different bytes");
    let out = tokio::time::timeout(Duration::from_secs(120), client.exec_with_input("sha256sum", &data))
        .await
        .expect("64 MiB through sha256sum finished")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{:x}  -\n", sha2::Sha256::digest(&data)));
}
