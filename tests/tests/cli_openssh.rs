//! The `sansh` command-line program against OpenSSH sshd on 127.0.0.1:
//! exit codes, streams, stdin, a 50 MB round trip, PTY, -L and -R, failures
//! with OpenSSH's messages and exit 255, --repeat, key files, keepalive.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sansh_interop::cli::Sansh;
use sansh_interop::ssh_agent::SshAgent;
use sansh_interop::sshd::{Sshd, SshdOptions};
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, ensure_test_user, free_port, keygen};
use sha2::{Digest, Sha256};

fn sshd() -> Sshd {
    ensure_test_user();
    Sshd::start(SshdOptions::default())
}

/// `sansh` logged in by password, trusting the host key.
fn sansh(sshd: &Sshd) -> Sansh {
    Sansh::to(sshd.port, TEST_USER, Some(TEST_PASSWORD))
}

/// An echo server on 127.0.0.1 (threads; runs until the test ends).
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// Kills a background sansh when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to 127.0.0.1:`port` once something listens there.
fn connect_when_up(port: u16, child: &mut Child) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return s;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("sansh exited ({status}) before listening on {port}: {err}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn round_trip(mut s: TcpStream, len: usize) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let p = payload.clone();
    let writer = std::thread::spawn(move || w.write_all(&p).unwrap());
    let mut back = vec![0u8; len];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == payload, "echo through the forwarding differs");
}

#[test]
fn exec_exit_codes_and_separate_streams() {
    let sshd = sshd();
    let r = sansh(&sshd).args(["127.0.0.1", "echo out; echo err >&2; exit 7"]).run();
    assert_eq!(r.code, Some(7), "{r:?}\n{}", sshd.log());
    assert_eq!(r.stdout_text(), "out\n");
    assert_eq!(r.stderr, "err\n");
    // The arguments after the host are joined with spaces, as ssh does.
    let r = sansh(&sshd).args(["127.0.0.1", "echo", "a", "b;", "exit", "0"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "a b\n"), "{r:?}");
    // Death by signal: no exit status, so 255 like OpenSSH's ssh.
    let r = sansh(&sshd).args(["127.0.0.1", "kill -TERM $$"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    // A specific cipher and kex, as -o lists: not the defaults (those are
    // curve25519-sha256 and chacha20-poly1305), so the choice shows.
    let r = sansh(&sshd)
        .args([
            "-o",
            "Ciphers=aes128-gcm@openssh.com",
            "-o",
            "KexAlgorithms=curve25519-sha256@libssh.org",
            "-v",
        ])
        .args(["127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}");
    let negotiated = "kex: algorithm: curve25519-sha256@libssh.org";
    assert!(r.stderr.contains(negotiated), "{}", r.stderr);
    assert!(r.stderr.contains("cipher: aes128-gcm@openssh.com / aes128-gcm@openssh.com"), "{}", r.stderr);
    assert!(sshd.log().contains(negotiated), "{}", sshd.log());
}

#[test]
fn kex_algorithms_that_cannot_be_used_are_clear_errors() {
    // Not a method sansh has: refused before connecting.
    let r =
        Sansh::new().args(["-o", "KexAlgorithms=diffie-hellman-group14-sha256", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains("Bad SSH2 key exchange spec 'diffie-hellman-group14-sha256'")
            && r.stderr.contains("curve25519-sha256@libssh.org"),
        "{}",
        r.stderr
    );
    // One sansh has but the server does not offer: OpenSSH's message.
    ensure_test_user();
    let sshd = Sshd::start(SshdOptions {
        config: vec!["KexAlgorithms curve25519-sha256".into()],
        ..SshdOptions::default()
    });
    let r =
        sansh(&sshd).args(["-o", "KexAlgorithms=curve25519-sha256@libssh.org", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains(&format!("Unable to negotiate with 127.0.0.1 port {}", sshd.port))
            && r.stderr.contains("Their offer: curve25519-sha256"),
        "{}",
        r.stderr
    );
}

#[test]
fn port_and_user_from_o_options() {
    let sshd = sshd();
    let mut s = Sansh::new();
    s.env("SANSH_PASSWORD", TEST_PASSWORD).args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("Port={}", sshd.port),
        "-o",
        &format!("User={TEST_USER}"),
        "127.0.0.1",
        "id -un",
    ]);
    let r = s.run();
    assert_eq!((r.code, r.stdout_text().trim()), (Some(0), TEST_USER), "{r:?}\n{}", sshd.log());
    // As with ssh, -l beats -o User (the first value obtained wins).
    let r = Sansh::new()
        .env("SANSH_PASSWORD", TEST_PASSWORD)
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-l", "nobody-such", "-o", &format!("User={TEST_USER}"), "-o", &format!("Port={}", sshd.port)])
        .args(["127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("nobody-such@127.0.0.1: Permission denied"), "{}", r.stderr);
}

#[test]
fn connect_timeout_gives_up_on_a_silent_server() {
    // The kernel completes the handshake into the backlog, but nothing ever
    // accepts or answers: no SSH version line comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Built (if need be) before the clock starts.
    sansh_interop::cli::sansh_binary();
    let t = Instant::now();
    let r = Sansh::to(port, TEST_USER, None).args(["-o", "ConnectTimeout=2", "127.0.0.1", "true"]).run();
    let took = t.elapsed();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains(&format!("connect to host 127.0.0.1 port {port}: Connection timed out")),
        "{}",
        r.stderr
    );
    // Behaviour, not a benchmark: it waited for the timeout, and not forever.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "took {took:?}");
    drop(silent);
}

#[test]
fn keyboard_interactive_through_pam_answered_from_sansh_password() {
    ensure_test_user();
    let sshd = Sshd::start(SshdOptions {
        config: ["UsePAM yes", "KbdInteractiveAuthentication yes", "PasswordAuthentication no"]
            .map(String::from)
            .to_vec(),
        ..SshdOptions::default()
    });
    let r = sansh(&sshd).args(["127.0.0.1", "id -un"]).run();
    assert_eq!((r.code, r.stdout_text().trim()), (Some(0), TEST_USER), "{r:?}\n{}", sshd.log());
    assert!(
        sshd.log().contains(&format!("Accepted keyboard-interactive/pam for {TEST_USER}")),
        "{}",
        sshd.log()
    );
    // The wrong password in SANSH_PASSWORD: refused, 255.
    let r = Sansh::to(sshd.port, TEST_USER, Some("not the password")).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains("Permission denied (") && r.stderr.contains("keyboard-interactive"),
        "{}",
        r.stderr
    );
    // Turned off on our side: nothing else to try.
    let r = sansh(&sshd).args(["-o", "KbdInteractiveAuthentication=no", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
}

#[test]
fn stdin_is_piped_and_ends_with_eof() {
    let sshd = sshd();
    let r = sansh(&sshd).stdin("data").args(["127.0.0.1", "wc -c"]).run();
    assert_eq!((r.code, r.stdout_text().trim()), (Some(0), "4"), "{r:?}");
    // -n: no stdin at all.
    let r = sansh(&sshd).stdin("ignored").args(["-n", "127.0.0.1", "wc -c"]).run();
    assert_eq!(r.stdout_text().trim(), "0", "{r:?}");
}

#[test]
fn fifty_megabytes_round_trip_through_cat() {
    let sshd = sshd();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..50_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let t = Instant::now();
    let r = sansh(&sshd).stdin(data.clone()).args(["127.0.0.1", "cat"]).run();
    eprintln!("50 MB through cat and back in {:?}", t.elapsed());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.len(), data.len());
    assert_eq!(Sha256::digest(&r.stdout), Sha256::digest(&data));
}

#[test]
fn stdout_to_a_file_and_dev_null_is_complete() {
    // A regular file and /dev/null are written inline (no writer thread);
    // every byte must still arrive, in order, and the exit code come back.
    let sshd = sshd();
    let dir = TempDir::new("sansh-stdout-file");
    let path = dir.path().join("out");
    let cmd = "head -c 20000000 /dev/urandom | tee /tmp/sansh-stdout-test-$$ | sha256sum >&2; \
               cat /tmp/sansh-stdout-test-$$; rm /tmp/sansh-stdout-test-$$; exit 3";
    let mut s = sansh(&sshd);
    s.args(["127.0.0.1", cmd]);
    let c = s.command();
    c.stdout(std::fs::File::create(&path).unwrap()).stderr(Stdio::piped()).stdin(Stdio::null());
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let written = std::fs::read(&path).unwrap();
    assert_eq!(written.len(), 20_000_000);
    let remote_sum = stderr.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(format!("{:x}", Sha256::digest(&written)), remote_sum, "{stderr}");
    let mut s = sansh(&sshd);
    s.args(["127.0.0.1", "head -c 5000000 /dev/zero; exit 4"]);
    let c = s.command();
    c.stdout(Stdio::from(std::fs::File::create("/dev/null").unwrap()))
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    assert_eq!(c.output().unwrap().status.code(), Some(4));
}

#[test]
fn pty_with_t() {
    let sshd = sshd();
    let r = sansh(&sshd)
        .env("TERM", "xterm-256color")
        .args(["-t", "127.0.0.1", "tty; stty size; echo $TERM"])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}");
    let out = r.stdout_text();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    // No terminal here: the default 80x24. A PTY turns \n into \r\n.
    assert!(out.contains("24 80\r\n"), "{out:?}");
    assert!(out.contains("xterm-256color"), "{out:?}");
    // -T: no PTY.
    let r = sansh(&sshd).args(["-T", "127.0.0.1", "tty"]).run();
    assert_eq!(r.stdout_text().trim(), "not a tty", "{r:?}");
}

#[test]
fn local_forward_carries_data() {
    let sshd = sshd();
    let echo = echo_server();
    let port = free_port();
    let mut cmd = sansh(&sshd);
    cmd.args(["-N", "-L", &format!("{port}:127.0.0.1:{echo}"), "127.0.0.1"]);
    let child =
        cmd.command().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    let s = connect_when_up(port, &mut child.0);
    round_trip(s, 3_000_000);
    // A second connection over the same forwarding.
    round_trip(TcpStream::connect(("127.0.0.1", port)).unwrap(), 1000);
}

#[test]
fn remote_forward_carries_data() {
    let sshd = sshd();
    let echo = echo_server();
    let port = free_port();
    let script = format!(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo round trip >&3; head -n1 <&3; \
         head -c 1000000 /dev/zero >&3; head -c 1000000 <&3 | wc -c'"
    );
    let r = sansh(&sshd)
        .args(["-R", &format!("{port}:127.0.0.1:{echo}"), "-R", &format!("0:127.0.0.1:{echo}")])
        .args(["127.0.0.1", &script])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}\n{}", sshd.log());
    assert_eq!(r.stdout_text(), "round trip\n1000000\n", "{r:?}");
    // Port 0: the server's choice, printed as ssh does.
    assert!(r.stderr.contains("Allocated port "), "{}", r.stderr);
}

#[test]
fn wrong_password_is_permission_denied_255() {
    let sshd = sshd();
    let r = Sansh::to(sshd.port, TEST_USER, Some("not the password")).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains(&format!("{TEST_USER}@127.0.0.1: Permission denied (")), "{}", r.stderr);
    // The right password, but PasswordAuthentication=no.
    let r = sansh(&sshd).args(["-o", "PasswordAuthentication=no", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    // No credentials at all (BatchMode: nothing to ask).
    let r = Sansh::to(sshd.port, TEST_USER, None).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
}

#[test]
fn host_keys_strict_accept_new_and_failures() {
    let sshd = sshd();
    let dir = TempDir::new("cli-kh");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let base = |strict: &str| {
        let mut s = Sansh::new();
        s.env("SANSH_PASSWORD", TEST_PASSWORD);
        s.args(["-o", &format!("StrictHostKeyChecking={strict}"), "-o"])
            .arg_path_option("UserKnownHostsFile", &kh)
            .args(["-o", "BatchMode=yes", "-p", &sshd.port.to_string(), &format!("{TEST_USER}@127.0.0.1")]);
        s
    };
    // Unknown host, strict, empty known_hosts.
    let r = base("yes").args(["true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Host key verification failed."), "{}", r.stderr);
    // Without a terminal, 'ask' (the default) cannot ask: refused too.
    let r = base("ask").args(["true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Host key verification failed."), "{}", r.stderr);
    // accept-new records it...
    let r = base("accept-new").args(["echo ok"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "ok\n"), "{r:?}");
    assert!(r.stderr.contains("Permanently added"), "{}", r.stderr);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with(&format!("[127.0.0.1]:{} ", sshd.port)), "{text}");
    // ...and strict then trusts it.
    let r = base("yes").args(["echo ok"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "ok\n"), "{r:?}");
    // A changed key is refused even by accept-new.
    let other = sansh_interop::OTHER_ED25519.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {other}\n", sshd.port)).unwrap();
    let r = base("accept-new").args(["true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{}", r.stderr);
    assert!(r.stderr.contains("Host key verification failed."), "{}", r.stderr);
}

#[test]
fn connection_refused_and_bad_options_are_255() {
    let port = free_port();
    let r = Sansh::to(port, TEST_USER, None).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains(&format!("connect to host 127.0.0.1 port {port}: Connection refused")),
        "{}",
        r.stderr
    );
    let r = Sansh::new().args(["-o", "Ciphers=aes128-cbc", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains("aes128-cbc") && r.stderr.contains("chacha20-poly1305@openssh.com"),
        "{}",
        r.stderr
    );
    let r = Sansh::new().args(["--help"]).run();
    assert_eq!(r.code, Some(0));
    assert!(r.stdout_text().contains("usage: sansh"), "{r:?}");
}

#[test]
fn repeat_prints_percentiles() {
    let sshd = sshd();
    let r = sansh(&sshd).args(["--repeat", "20", "127.0.0.1", "echo x"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout_text(), "x\n".repeat(20));
    for word in ["20 runs", "p50", "p90", "p99", "mean"] {
        assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
    }
}

#[test]
fn identity_files_with_i() {
    let sshd = sshd();
    let dir = TempDir::new("cli-keys");
    let (_, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "");
    sshd.authorize(&public);
    let (_, public) = keygen(dir.path(), "id_ecdsa_enc", &["-t", "ecdsa", "-b", "256"], "secret words");
    sshd.authorize(&public);
    let key = dir.path().join("id_ed25519");
    let r = Sansh::to(sshd.port, TEST_USER, None)
        .args(["-i"])
        .arg_path(&key)
        .args(["127.0.0.1", "echo key"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "key\n"), "{r:?}\n{}", sshd.log());
    assert!(sshd.log().contains(&format!("Accepted publickey for {TEST_USER}")));
    // An encrypted key, its passphrase from SANSH_PASSPHRASE.
    let enc = dir.path().join("id_ecdsa_enc");
    let r = Sansh::to(sshd.port, TEST_USER, None)
        .env("SANSH_PASSPHRASE", "secret words")
        .args(["-o"])
        .arg_path_option("IdentityFile", &enc)
        .args(["127.0.0.1", "echo enc"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "enc\n"), "{r:?}");
    // A missing identity file warns, like ssh, and authentication goes on.
    let r = sansh(&sshd).args(["-i", "/nonexistent/id", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("Identity file /nonexistent/id not accessible"), "{}", r.stderr);
}

#[test]
fn keepalive_detects_a_black_holed_link() {
    use sansh::tokio::{FaultMode, FaultProxy};
    let sshd = sshd();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(sshd.addr())).unwrap();
    let mut cmd = Sansh::to(proxy.local_addr().port(), TEST_USER, Some(TEST_PASSWORD));
    cmd.args([
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=2",
        "127.0.0.1",
        "echo up; sleep 60",
    ]);
    let child =
        cmd.command().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    // Wait for the session to start, then black-hole the link.
    let mut line = [0u8; 3];
    child.0.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"up\n");
    proxy.set(FaultMode::BlackHole);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "sansh did not notice the dead link");
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = t.elapsed();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    // interval × (count_max + 1) + 1 s.
    assert!(waited <= Duration::from_secs(4), "took {waited:?}");
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(err.contains("Timeout, server 127.0.0.1 not responding."), "{err}");
}

/// One echo exchange through `port`, without panicking (the link may be
/// down while sansh reconnects).
fn try_round_trip(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"ping after the cut\n").map_err(|e| e.to_string())?;
    let mut back = [0u8; 19];
    s.read_exact(&mut back).map_err(|e| e.to_string())?;
    if &back == b"ping after the cut\n" { Ok(()) } else { Err(format!("echoed {back:?}")) }
}

#[test]
fn reconnect_reestablishes_forwarding_after_a_cut() {
    use sansh::tokio::{FaultMode, FaultProxy};
    let sshd = sshd();
    let echo = echo_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(sshd.addr())).unwrap();
    let port = free_port();
    let mut cmd = Sansh::to(proxy.local_addr().port(), TEST_USER, Some(TEST_PASSWORD));
    cmd.args(["--reconnect", "-N", "-L", &format!("{port}:127.0.0.1:{echo}"), "127.0.0.1"]);
    let child =
        cmd.command().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    round_trip(connect_when_up(port, &mut child.0), 100_000);
    assert_eq!(proxy.connections(), 1);
    // Cut the TCP connection under it: sansh notices, dials again (through
    // the proxy, which forwards new connections) and re-binds -L.
    proxy.set(FaultMode::Cut);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let mut last = String::new();
    while proxy.connections() < 2 || try_round_trip(port).map_err(|e| last = e).is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("sansh exited ({status})");
        }
        assert!(t.elapsed() < Duration::from_secs(20), "forwarding not back after the cut: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(proxy.connections() >= 2);
    let _ = child.0.kill();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("reconnected to 127.0.0.1"), "{err}");
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    let port = free_port();
    let mut cmd = Sansh::to(port, TEST_USER, None);
    let t = Instant::now();
    let r = cmd.args(["--reconnect=2", "-N", "127.0.0.1"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Connection refused"), "{}", r.stderr);
    assert!(r.stderr.contains("giving up after 3 attempts"), "{}", r.stderr);
    // Full jitter on 1 s then 2 s: at most 3 s of waiting.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn banner_is_shown_sanitised_even_when_authentication_fails() {
    ensure_test_user();
    let dir = TempDir::new("cli-banner");
    let banner = dir.path().join("banner");
    // Clears the screen, retitles the terminal, rings, overwrites a line
    // with a lone CR: all of it must reach the terminal as inert text.
    std::fs::write(&banner, "Welcome \u{1b}[2J\u{1b}]0;pwned\u{7} Grüße\r\nline two\rfake\n").unwrap();
    let sshd = Sshd::start(SshdOptions {
        config: vec![format!("Banner {}", banner.display())],
        ..SshdOptions::default()
    });
    let shown = "Welcome \\033[2J\\033]0;pwned\\007 Grüße\r\nline two\\015fake\n";
    let r = sansh(&sshd).args(["127.0.0.1", "echo in"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "in\n"), "{r:?}");
    assert!(r.stderr.contains(shown), "{:?}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}') && !r.stderr.contains('\u{7}'), "{:?}", r.stderr);
    // A failed login still shows what the server said before refusing.
    let r = Sansh::to(sshd.port, TEST_USER, Some("not the password")).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains(shown), "{:?}", r.stderr);
    assert!(r.stderr.contains("Permission denied"), "{:?}", r.stderr);
    // -q: no banner, as ssh.
    let r = sansh(&sshd).args(["-q", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!r.stderr.contains("Welcome"), "{:?}", r.stderr);
}

#[test]
fn local_forward_backs_off_when_accept_runs_out_of_descriptors() {
    // With few file descriptors, accept fails with EMFILE while connections
    // wait in the backlog: the listener stays readable, so retrying at once
    // would spin (and log) without end. sansh pauses, doubling the wait.
    let sshd = sshd();
    let echo = echo_server();
    let port = free_port();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=24:24").arg(sansh_interop::cli::sansh_binary());
    cmd.args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-p", &sshd.port.to_string(), "-l", TEST_USER, "-N"])
        .args(["-L", &format!("{port}:127.0.0.1:{echo}"), "127.0.0.1"])
        .env("SANSH_PASSWORD", TEST_PASSWORD)
        .env_remove("SSH_AUTH_SOCK");
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    let mut held = vec![connect_when_up(port, &mut child.0)];
    // More connections than descriptors left: the last ones stay unaccepted.
    for _ in 0..40 {
        held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.0.try_wait().unwrap().is_none(), "sansh exited");
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let failures = err.matches("accept: ").count();
    assert!(err.contains("Too many open files"), "EMFILE was reached: {err}");
    // 10 ms doubling to 1 s: a handful in 2 s (a spinning loop logs
    // thousands).
    assert!(failures <= 20, "{failures} accept failures logged:\n{}", &err[..err.len().min(3000)]);
    drop(held);
}

// ---- ssh(1) / ssh_config(5) options: each shown by its effect on sshd ----

/// How many lines of sshd's log contain `what`.
fn log_count(sshd: &Sshd, what: &str) -> usize {
    sshd.log().lines().filter(|l| l.contains(what)).count()
}

/// `sansh` trusting any host key, with no password and no prompts, and
/// HOME in `home` (so that no default identity of this machine's user is
/// offered).
fn bare(sshd: &Sshd, home: &std::path::Path) -> Sansh {
    let mut s = Sansh::to(sshd.port, TEST_USER, None);
    s.env("HOME", &home.to_string_lossy());
    s
}

#[test]
fn preferred_authentications_choose_the_method() {
    let sshd = sshd();
    let dir = TempDir::new("cli-preferred");
    let (_, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "");
    sshd.authorize(&public);
    let key = dir.path().join("id_ed25519");
    let with_both = || {
        let mut s = bare(&sshd, dir.path());
        s.env("SANSH_PASSWORD", TEST_PASSWORD).args(["-i"]).arg_path(&key);
        s
    };
    // ssh's default order: the key before the password.
    let r = with_both().args(["127.0.0.1", "echo default"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "default\n"), "{r:?}");
    let accepted_key = format!("Accepted publickey for {TEST_USER}");
    let accepted_password = format!("Accepted password for {TEST_USER}");
    assert_eq!(
        (log_count(&sshd, &accepted_key), log_count(&sshd, &accepted_password)),
        (1, 0),
        "{}",
        sshd.log()
    );
    // The password first, although the key would do.
    let r =
        with_both().args(["-o", "PreferredAuthentications=password,publickey", "127.0.0.1", "echo pw"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "pw\n"), "{r:?}");
    assert_eq!(
        (log_count(&sshd, &accepted_key), log_count(&sshd, &accepted_password)),
        (1, 1),
        "{}",
        sshd.log()
    );
    // Only keyboard-interactive, which this sshd cannot do without PAM:
    // neither the key nor the password is tried.
    let r =
        with_both().args(["-o", "PreferredAuthentications=keyboard-interactive", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert_eq!(
        (log_count(&sshd, &accepted_key), log_count(&sshd, &accepted_password)),
        (1, 1),
        "{}",
        sshd.log()
    );
}

#[test]
fn number_of_password_prompts_limits_the_prompts() {
    let sshd = sshd();
    let home = TempDir::new("cli-prompts");
    let failed = format!("Failed password for {TEST_USER}");
    // NumberOfPasswordPrompts=0: no password at all, not even SANSH_PASSWORD's.
    let r = bare(&sshd, home.path())
        .env("SANSH_PASSWORD", TEST_PASSWORD)
        .args(["-o", "NumberOfPasswordPrompts=0", "127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert_eq!(log_count(&sshd, "password for"), 0, "{}", sshd.log());
    // On a terminal: asked twice, refused twice, then it gives up.
    let mut s = Sansh::new();
    s.env("HOME", &home.path().to_string_lossy())
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "NumberOfPasswordPrompts=2", "-p", &sshd.port.to_string(), "-l", TEST_USER])
        .args(["127.0.0.1", "true"]);
    let r = s.run_with_terminal("wrong one\nwrong two\nwrong three\n");
    let transcript = r.stdout_text();
    assert_eq!(r.code, Some(255), "{transcript}");
    assert_eq!(transcript.matches(&format!("{TEST_USER}@127.0.0.1's password:")).count(), 2, "{transcript}");
    assert_eq!(transcript.matches("Permission denied, please try again.").count(), 1, "{transcript}");
    assert_eq!(log_count(&sshd, &failed), 2, "{}", sshd.log());
    // Then the right one, typed at the second prompt.
    let r = s.run_with_terminal(&format!("wrong\n{TEST_PASSWORD}\n"));
    assert_eq!(r.code, Some(0), "{}", r.stdout_text());
    assert_eq!(log_count(&sshd, &format!("Accepted password for {TEST_USER}")), 1, "{}", sshd.log());
}

#[test]
fn set_env_and_send_env_reach_the_command() {
    ensure_test_user();
    let sshd =
        Sshd::start(SshdOptions { config: vec!["AcceptEnv SANSH_T_*".into()], ..SshdOptions::default() });
    let r = sansh(&sshd)
        .env("SANSH_T_SENT", "from here")
        .env("SANSH_T_KEPT_LOCAL", "not sent")
        .env("SANSH_T_DROPPED", "dropped")
        .args(["-o", "SendEnv=SANSH_T_S* SANSH_T_D*", "-o", "SendEnv=-SANSH_T_D*"])
        .args(["-o", "SetEnv=SANSH_T_SET=\"two words\" NOT_ACCEPTED=1"])
        .args([
            "127.0.0.1",
            "echo \"$SANSH_T_SENT|$SANSH_T_SET|${SANSH_T_KEPT_LOCAL-unset}|${SANSH_T_DROPPED-unset}|${NOT_ACCEPTED-unset}\"",
        ])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}\n{}", sshd.log());
    assert_eq!(r.stdout_text(), "from here|two words|unset|unset|unset\n", "{}", sshd.log());
    // sshd saw the refused one and ignored it, as with ssh.
    assert!(sshd.log().contains("Ignoring env request NOT_ACCEPTED"), "{}", sshd.log());
}

/// Listens on 127.0.0.1:`port` from `after` on, relaying each connection to `target`.
fn late_relay(port: u16, after: Duration, target: std::net::SocketAddr) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the late port");
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let Ok(outbound) = TcpStream::connect(target) else { return };
            for (mut from, mut to) in
                [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)]
            {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn connection_attempts_retry_until_the_port_listens() {
    let sshd = sshd();
    sansh_interop::cli::sansh_binary();
    // One attempt: refused at once.
    let port = free_port();
    late_relay(port, Duration::from_millis(1500), sshd.addr());
    let r = sansh(&sshd).args(["-p", &port.to_string(), "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains(&format!("port {port}: Connection refused")), "{}", r.stderr);
    // Three, a second apart: the third finds the port listening (1.5 s).
    let port = free_port();
    late_relay(port, Duration::from_millis(1500), sshd.addr());
    let t = Instant::now();
    let r = sansh(&sshd)
        .args(["-p", &port.to_string(), "-o", "ConnectionAttempts=3", "-v", "127.0.0.1", "echo up"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "up\n"), "{r:?}");
    assert!(t.elapsed() >= Duration::from_secs(1), "it waited between attempts: {:?}", t.elapsed());
}

#[test]
fn bind_address_is_the_source_sshd_sees() {
    let sshd = sshd();
    let r = sansh(&sshd).args(["-b", "127.0.0.2", "127.0.0.1", "echo $SSH_CLIENT"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout_text().starts_with("127.0.0.2 "), "{r:?}");
    assert!(sshd.log().contains("Connection from 127.0.0.2 port"), "{}", sshd.log());
    let r = sansh(&sshd).args(["-o", "BindAddress=127.0.0.3", "127.0.0.1", "echo $SSH_CLIENT"]).run();
    assert!(r.stdout_text().starts_with("127.0.0.3 "), "{r:?}");
}

#[test]
fn address_family_4_and_6() {
    ensure_test_user();
    let sshd =
        Sshd::start(SshdOptions { config: vec!["ListenAddress ::1".into()], ..SshdOptions::default() });
    let r = sansh(&sshd).args(["-6", "::1", "echo $SSH_CLIENT"]).run();
    assert_eq!(r.code, Some(0), "{r:?}\n{}", sshd.log());
    assert!(r.stdout_text().starts_with("::1 "), "{r:?}");
    assert!(sshd.log().contains("Connection from ::1 port"), "{}", sshd.log());
    // An address of the other family cannot be used at all.
    for (flag, host) in [("-4", "::1"), ("-6", "127.0.0.1")] {
        let r = sansh(&sshd).args([flag, host, "true"]).run();
        assert_eq!(r.code, Some(255), "{flag} {host}: {r:?}");
        assert!(r.stderr.contains("Address family"), "{flag} {host}: {}", r.stderr);
    }
    let r = sansh(&sshd).args(["-o", "AddressFamily=inet", "127.0.0.1", "echo $SSH_CLIENT"]).run();
    assert!(r.stdout_text().starts_with("127.0.0.1 "), "{r:?}");
}

#[test]
fn rekey_limit_makes_sshd_rekey() {
    let sshd = sshd();
    let kexinits = || log_count(&sshd, "SSH2_MSG_KEXINIT received");
    let r = sansh(&sshd).args(["-v", "127.0.0.1", "head -c 10000000 /dev/zero"]).run();
    assert_eq!((r.code, r.stdout.len()), (Some(0), 10_000_000), "{}", r.stderr);
    let without = kexinits();
    assert!(!r.stderr.contains("rekey:"), "{}", r.stderr);
    // 64 KiB: 10 MB take several key exchanges. Not one per 64 KiB: what
    // sshd sent before our KEXINIT reached it (up to our 2 MiB window) still
    // arrives under the old keys, as with ssh.
    let r =
        sansh(&sshd).args(["-v", "-o", "RekeyLimit=64K", "127.0.0.1", "head -c 10000000 /dev/zero"]).run();
    assert_eq!((r.code, r.stdout.len()), (Some(0), 10_000_000), "{}", r.stderr);
    let rekeys = r.stderr.matches("rekey: algorithm").count();
    assert!(rekeys >= 3, "{rekeys} rekeys:\n{}", r.stderr);
    let seen = kexinits() - without;
    assert!(seen >= rekeys, "sshd logged {seen} KEXINITs for {rekeys} rekeys:\n{}", sshd.log());
    // By time: `RekeyLimit default 1` rekeys every second of a 3 s command.
    let r =
        sansh(&sshd).args(["-v", "-o", "RekeyLimit default 1", "127.0.0.1", "sleep 3.5; echo done"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "done\n"), "{}", r.stderr);
    let rekeys = r.stderr.matches("rekey: algorithm").count();
    assert!((2..=5).contains(&rekeys), "{rekeys} rekeys:\n{}", r.stderr);
}

/// known_hosts lines for every host key of `sshd`, under `name`.
fn known_lines(sshd: &Sshd, name: &str) -> String {
    use sansh_interop::sshd::KeyKind;
    KeyKind::ALL
        .iter()
        .map(|k| format!("{name} {}\n", sshd.host_public_key(*k).to_openssh().unwrap()))
        .collect()
}

#[test]
fn global_known_hosts_file_and_host_key_alias_verify_the_host() {
    let sshd = sshd();
    let dir = TempDir::new("cli-global-kh");
    let (user_kh, global_kh) = (dir.path().join("user_kh"), dir.path().join("global_kh"));
    std::fs::write(&user_kh, "").unwrap();
    let strict = |extra: &[&str]| {
        let mut s = Sansh::new();
        s.env("SANSH_PASSWORD", TEST_PASSWORD)
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o"])
            .arg_path_option("UserKnownHostsFile", &user_kh)
            .args(["-o"])
            .arg_path_option("GlobalKnownHostsFile", &global_kh)
            .args(["-p", &sshd.port.to_string(), "-l", TEST_USER])
            .args(extra);
        s
    };
    // Known nowhere: refused.
    std::fs::write(&global_kh, "").unwrap();
    let r = strict(&[]).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Host key verification failed."), "{}", r.stderr);
    // Known in the global file only: trusted, and nothing is written.
    std::fs::write(&global_kh, known_lines(&sshd, &format!("[127.0.0.1]:{}", sshd.port))).unwrap();
    let r = strict(&[]).args(["127.0.0.1", "echo trusted"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "trusted\n"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&user_kh).unwrap(), "");
    // Another key for the host in the global file: a changed key.
    let other = sansh_interop::OTHER_ED25519.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&global_kh, format!("[127.0.0.1]:{} {other}\n", sshd.port)).unwrap();
    let r = strict(&[]).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("Offending key in {}:1", global_kh.display())), "{}", r.stderr);
    // HostKeyAlias: the keys are looked up under the alias, without a port.
    std::fs::write(&global_kh, known_lines(&sshd, "test-alias")).unwrap();
    let r = strict(&["-o", "HostKeyAlias=test-alias"]).args(["127.0.0.1", "echo alias"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "alias\n"), "{r:?}");
    let r = strict(&[]).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "without the alias the host is unknown: {r:?}");
}

#[test]
fn hash_known_hosts_records_a_hashed_line_openssh_reads() {
    let sshd = sshd();
    let dir = TempDir::new("cli-hashed-kh");
    let kh = dir.path().join("known_hosts");
    let run = |strict: &str, cmd: &str| {
        let mut s = Sansh::new();
        s.env("SANSH_PASSWORD", TEST_PASSWORD)
            .args(["-o", &format!("StrictHostKeyChecking={strict}"), "-o", "HashKnownHosts=yes", "-o"])
            .arg_path_option("UserKnownHostsFile", &kh)
            .args(["-o", "GlobalKnownHostsFile=none", "-o", "BatchMode=yes"])
            .args(["-p", &sshd.port.to_string(), "-l", TEST_USER, "127.0.0.1", cmd]);
        s.run()
    };
    let r = run("accept-new", "echo new");
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "new\n"), "{r:?}");
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    // We read it back...
    let r = run("yes", "echo known");
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "known\n"), "{r:?}");
    // ...and so does OpenSSH.
    let found = sansh_interop::run(
        std::process::Command::new("ssh-keygen")
            .arg("-F")
            .arg(format!("[127.0.0.1]:{}", sshd.port))
            .arg("-f")
            .arg(&kh),
    );
    assert!(found.contains("|1|"), "{found}");
}

#[test]
fn log_file_e_and_log_level() {
    let sshd = sshd();
    let dir = TempDir::new("cli-log");
    let log = dir.path().join("sansh.log");
    let r = sansh(&sshd).args(["-v", "-E"]).arg_path(&log).args(["127.0.0.1", "echo logged"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "logged\n"), "{r:?}");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("kex: algorithm: "), "{written}");
    assert!(!r.stderr.contains("kex: algorithm"), "the log went to the file, not stderr: {}", r.stderr);
    // -E appends.
    let r =
        sansh(&sshd).args(["-o", "LogLevel=DEBUG3", "-E"]).arg_path(&log).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    let again = std::fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&written) && again.len() > written.len(), "{again}");
    // LogLevel on stderr: DEBUG1 is -v; QUIET hides even the banner-level lines.
    let r = sansh(&sshd).args(["-o", "LogLevel=DEBUG1", "127.0.0.1", "true"]).run();
    assert!(r.stderr.contains("kex: algorithm: "), "{}", r.stderr);
    let r = sansh(&sshd).args(["-o", "LogLevel=QUIET", "127.0.0.1", "true"]).run();
    assert_eq!((r.code, r.stderr.as_str()), (Some(0), ""), "{r:?}");
    // A log file that cannot be opened: ssh's message, 255.
    let r = sansh(&sshd).args(["-E", "/nonexistent/dir/log", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Couldn't open logfile /nonexistent/dir/log"), "{}", r.stderr);
}

/// Runs `sansh` with `args` as an sftp client would: writes SSH_FXP_INIT
/// (version 3), reads one reply packet, and only then closes stdin
/// (sftp-server quits at end of input without flushing its replies, with
/// ssh too). Returns the reply and the exit code.
fn sftp_init(sshd: &Sshd, args: &[&str]) -> (Vec<u8>, Option<i32>, String) {
    let mut s = sansh(sshd);
    s.args(args);
    let child =
        s.command().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    // uint32 length, byte SSH_FXP_INIT (1), uint32 version 3.
    child.0.stdin.as_mut().unwrap().write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).unwrap();
    let out = child.0.stdout.as_mut().unwrap();
    let mut reply = vec![0u8; 4];
    if out.read_exact(&mut reply).is_ok() {
        let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
        assert!(len < 1 << 20, "{reply:?}");
        reply.resize(4 + len, 0);
        out.read_exact(&mut reply[4..]).unwrap();
    } else {
        reply.clear();
    }
    drop(child.0.stdin.take());
    let status = child.0.wait().unwrap();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (reply, status.code(), err)
}

#[test]
fn subsystem_s_starts_sftp() {
    ensure_test_user();
    let sshd = Sshd::start(SshdOptions {
        config: vec!["Subsystem sftp internal-sftp".into()],
        ..SshdOptions::default()
    });
    let (reply, code, err) = sftp_init(&sshd, &["-s", "127.0.0.1", "sftp"]);
    assert_eq!(code, Some(0), "{err}\n{}", sshd.log());
    // SSH_FXP_VERSION (2) with version 3, then extension pairs.
    assert!(reply.len() > 9, "{reply:?} {err}");
    assert_eq!(reply[4], 2, "{reply:?}");
    assert_eq!(u32::from_be_bytes(reply[5..9].try_into().unwrap()), 3);
    assert!(String::from_utf8_lossy(&reply).contains("@openssh.com"), "{reply:?}");
    assert!(sshd.log().contains("subsystem request for sftp"), "{}", sshd.log());
    // SessionType=subsystem is the same.
    let (reply, code, err) = sftp_init(&sshd, &["-o", "SessionType=subsystem", "127.0.0.1", "sftp"]);
    assert_eq!((code, reply.get(4)), (Some(0), Some(&2)), "{reply:?} {err}");
    // A subsystem sshd lacks fails, as with ssh.
    let r = sansh(&sshd).args(["-s", "127.0.0.1", "no-such-subsystem"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Request for subsystem 'no-such-subsystem' failed"), "{}", r.stderr);
}

#[test]
fn identity_agent_and_identities_only() {
    let sshd = sshd();
    let dir = TempDir::new("cli-agent");
    let (_, public) = keygen(dir.path(), "agent_key", &["-t", "ed25519"], "");
    sshd.authorize(&public);
    keygen(dir.path(), "other_key", &["-t", "ed25519"], "");
    // The agent's key, also on disk encrypted (no passphrase available here),
    // with its .pub next to it.
    let agent_key = dir.path().join("agent_key");
    let encrypted = dir.path().join("agent_key_encrypted");
    std::fs::copy(&agent_key, &encrypted).unwrap();
    std::fs::copy(agent_key.with_extension("pub"), dir.path().join("agent_key_encrypted.pub")).unwrap();
    sansh_interop::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-p", "-N", "a passphrase", "-P", "", "-f"])
            .arg(&encrypted),
    );
    let socket = dir.path().join("agent.sock");
    let agent = SshAgent::start(&socket);
    agent.add(&agent_key);
    let sock = socket.to_string_lossy().into_owned();
    let accepted = || log_count(&sshd, &format!("Accepted publickey for {TEST_USER}"));
    // SSH_AUTH_SOCK: the agent's key logs in.
    let r = bare(&sshd, dir.path()).env("SSH_AUTH_SOCK", &sock).args(["127.0.0.1", "echo agent"]).run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "agent\n"), "{r:?}\n{}", sshd.log());
    assert_eq!(accepted(), 1);
    // IdentityAgent=none: no agent, nothing else to offer.
    let r = bare(&sshd, dir.path())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-o", "IdentityAgent=none", "127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    // IdentityAgent=path, without SSH_AUTH_SOCK; and IdentityAgent=$VAR.
    let r = bare(&sshd, dir.path())
        .args(["-o", &format!("IdentityAgent={sock}"), "127.0.0.1", "echo path"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "path\n"), "{r:?}");
    let r = bare(&sshd, dir.path())
        .env("MY_AGENT", &sock)
        .args(["-o", "IdentityAgent=$MY_AGENT", "127.0.0.1", "echo var"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "var\n"), "{r:?}");
    assert_eq!(accepted(), 3);
    // IdentitiesOnly with another key file: the agent's key is not used.
    let other = dir.path().join("other_key");
    let r = bare(&sshd, dir.path())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg_path(&other)
        .args(["127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert_eq!(accepted(), 3);
    // Without IdentitiesOnly the agent's key is tried after the file's.
    let r = bare(&sshd, dir.path())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-i"])
        .arg_path(&other)
        .args(["127.0.0.1", "true"])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}");
    // IdentitiesOnly naming the agent's key by its encrypted file: the agent signs.
    let r = bare(&sshd, dir.path())
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg_path(&encrypted)
        .args(["127.0.0.1", "echo only"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "only\n"), "{r:?}");
    assert_eq!(accepted(), 5);
}

#[test]
fn identity_file_tokens_hostname_port_and_user() {
    let sshd = sshd();
    let home = TempDir::new("cli-tokens");
    // A key named after the remote user and port, found through ~ and %-tokens.
    let name = format!("id_{TEST_USER}_{}", sshd.port);
    let (_, public) = keygen(home.path(), &name, &["-t", "ed25519"], "");
    sshd.authorize(&public);
    let r = Sansh::new()
        .env("HOME", &home.path().to_string_lossy())
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentityFile=~/id_%r_%p", "-o", "Hostname=127.0.0.%h"])
        .args(["-o", &format!("Port={}", sshd.port), "-o", &format!("User={TEST_USER}"), "1", "echo tokens"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "tokens\n"), "{r:?}\n{}", sshd.log());
    assert!(sshd.log().contains(&format!("Accepted publickey for {TEST_USER}")), "{}", sshd.log());
    // An unknown token is an error, as in ssh.
    let r = sansh(&sshd).args(["-o", "IdentityFile=~/id_%Z", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("unknown key %Z"), "{}", r.stderr);
}

#[test]
fn gateway_ports_g_listens_beyond_loopback() {
    let sshd = sshd();
    let echo = echo_server();
    for (flag, reachable_from_other_address) in [(None, false), (Some("-g"), true)] {
        let port = free_port();
        let mut cmd = sansh(&sshd);
        cmd.args(flag).args(["-N", "-L", &format!("{port}:127.0.0.1:{echo}"), "127.0.0.1"]);
        let child =
            cmd.command().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut child = Reap(child);
        round_trip(connect_when_up(port, &mut child.0), 1000);
        // 127.0.0.2 is another local address: only a wildcard bind answers there.
        let other = TcpStream::connect(("127.0.0.2", port));
        assert_eq!(other.is_ok(), reachable_from_other_address, "{flag:?}: {other:?}");
    }
}

#[test]
fn flags_without_effect_are_accepted_and_refused_ones_say_so() {
    let sshd = sshd();
    let r = sansh(&sshd)
        .args(["-C", "-x", "-a", "-k", "-y", "-e", "none", "-F", "/dev/null"])
        .args(["-o", "Compression=yes", "-o", "UpdateHostKeys=no", "-o", "ForwardAgent=no"])
        .args(["-o", "ServerAliveCountMax=2", "-o", "EscapeChar=~", "-o", "ControlMaster=no"])
        .args(["-vv", "127.0.0.1", "echo fine"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "fine\n"), "{r:?}");
    // One debug line each for what has no effect.
    assert!(r.stderr.contains("-C: sansh negotiates no compression"), "{}", r.stderr);
    assert!(r.stderr.contains("-o Compression=yes: accepted, no effect"), "{}", r.stderr);
    for (args, words) in [
        (&["-J", "jump", "127.0.0.1", "true"][..], "sansh: -J is not supported"),
        (&["-W", "a:1", "127.0.0.1"], "sansh: -W is not supported"),
        (&["-S", "/tmp/ctl", "127.0.0.1"], "sansh: -S is not supported"),
        (&["-O", "check", "127.0.0.1"], "sansh: -O is not supported"),
        (&["-w", "0", "127.0.0.1"], "sansh: -w is not supported"),
        (&["-f", "127.0.0.1", "true"], "sansh: -f is not supported"),
        (&["-o", "ProxyCommand=nc %h %p", "127.0.0.1"], "sansh: ProxyCommand is not supported"),
        (
            &["-o", "PreferredAuthentication=publickey", "127.0.0.1"],
            "Bad configuration option: PreferredAuthentication",
        ),
    ] {
        let r = Sansh::new().args(args).run();
        assert_eq!(r.code, Some(255), "{args:?}: {r:?}");
        assert!(r.stderr.contains(words), "{args:?}: {}", r.stderr);
    }
    // A missing argument: ssh's getopt line, then the usage.
    let r = Sansh::new().args(["127.0.0.1", "-p"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.starts_with("option requires an argument -- p\nusage: sansh [-46AaCfGgKkMNnqsTtVvXxYy]"),
        "{}",
        r.stderr
    );
    let r = Sansh::new().args(["-Q", "kex"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout_text().lines().any(|l| l == "curve25519-sha256"), "{r:?}");
}

#[test]
fn reconnect_max_counts_the_dials_after_a_loss() {
    use sansh::tokio::{FaultMode, FaultProxy};
    let sshd = sshd();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(sshd.addr())).unwrap();
    let mut cmd = Sansh::to(proxy.local_addr().port(), TEST_USER, Some(TEST_PASSWORD));
    cmd.args(["--reconnect=1", "127.0.0.1", "echo up; sleep 60"]);
    let child =
        cmd.command().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    let mut line = [0u8; 3];
    child.0.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"up\n");
    // The server goes away, then the link: the loss is failure 1, the one
    // redial MAX=1 allows fails too, and sansh gives up after 2 dials (the
    // first, which worked, and the redial) since nothing reset the count.
    drop(sshd);
    proxy.set(FaultMode::Cut);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "sansh did not give up");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(255), "{err}");
    assert_eq!(err.matches("reconnecting in").count(), 1, "{err}");
    assert!(err.contains("giving up after 2 attempts"), "{err}");
}
