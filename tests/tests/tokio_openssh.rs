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

fn pam_sshd() -> Sshd {
    ensure_test_user();
    Sshd::start(SshdOptions {
        config: ["UsePAM yes", "KbdInteractiveAuthentication yes", "PasswordAuthentication no"]
            .map(String::from)
            .to_vec(),
        ..SshdOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_through_pam_with_a_prompt_callback() {
    use sansh::tokio::PromptRequest;
    use std::sync::{Arc, Mutex};
    let sshd = pam_sshd();
    let dir = TempDir::new("kh");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let prompt = |answer: &'static str| {
        let asked = asked.clone();
        let f: sansh::tokio::PromptFn = Arc::new(move |req| match req {
            PromptRequest::KeyboardInteractive { prompts, .. } => {
                asked.lock().unwrap().extend(prompts.iter().map(|p| (p.text.clone(), p.echo)));
                Some(prompts.iter().map(|_| answer.to_owned()).collect())
            }
            // sshd offers no password method here; answering one would be a bug.
            other => panic!("unexpected prompt {other:?}"),
        });
        f
    };
    let mut o = options(&dir.path().join("kh"));
    o.config.credentials.clear();
    o.prompt = Some(prompt(TEST_PASSWORD));
    let client = Client::connect("127.0.0.1", sshd.port, o.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(client.exec("id -un").await.unwrap().stdout, format!("{TEST_USER}\n").into_bytes());
    let seen = asked.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(text, echo)| text.to_lowercase().contains("password") && !echo),
        "a hidden password prompt: {seen:?}"
    );
    assert!(sshd.log().contains(&format!("Accepted keyboard-interactive/pam for {TEST_USER}")));
    client.disconnect();
    // A wrong answer: authentication fails, with the method named.
    o.prompt = Some(prompt("not the password"));
    let err = Client::connect("127.0.0.1", sshd.port, o).await.unwrap_err();
    match err {
        sansh::tokio::ClientError::Closed(sansh::CloseReason::AuthFailed { ref offered, .. }) => {
            assert!(offered.iter().any(|m| m == "keyboard-interactive"), "{err}")
        }
        other => panic!("expected an authentication failure, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_on_a_pty_and_exit_status() {
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let client = Client::connect("127.0.0.1", sshd.port, options(&dir.path().join("kh"))).await.unwrap();
    let mut ch = client.open_session().await.unwrap();
    ch.request_pty(sansh::Pty {
        term: "dumb".into(),
        cols: 80,
        rows: 24,
        width_px: 0,
        height_px: 0,
        modes: Vec::new(),
    })
    .await
    .unwrap();
    ch.shell().await.unwrap();
    ch.write_all(b"echo h''i; exit 5\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), ch.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    // The PTY echoes the line as typed (`h''i`); only the command's output
    // has `hi`, ended by the PTY's CRLF.
    assert!(text.contains("hi\r\n"), "{text:?}");
    assert_eq!(ch.wait().await.unwrap(), Some(ExitStatus::Code(5)), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_request_reaches_the_command() {
    // OpenSSH 7.9+ delivers "signal" requests (killpg on the session's
    // process group) to sessions that are not forced commands or subsystems.
    let sshd = sshd();
    let dir = TempDir::new("kh");
    let client = Client::connect("127.0.0.1", sshd.port, options(&dir.path().join("kh"))).await.unwrap();
    let mut ch = client.open_session().await.unwrap();
    ch.exec("echo started; exec sleep 100").await.unwrap();
    let mut line = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), ch.read_exact(&mut line)).await.unwrap().unwrap();
    assert_eq!(&line, b"started\n");
    ch.signal("TERM").await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), ch.wait())
        .await
        .unwrap_or_else(|_| panic!("the signal did not end the command\n{}", sshd.log()))
        .unwrap();
    assert!(
        matches!(exit, Some(ExitStatus::Signal { ref signal, .. }) if signal == "TERM"),
        "{exit:?}\n{}",
        sshd.log()
    );
    assert!(sshd.log().contains("session_signal_req: signal TERM"), "{}", sshd.log());
}
