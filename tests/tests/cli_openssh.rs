//! The `sansh` command-line program against OpenSSH sshd on 127.0.0.1:
//! exit codes, streams, stdin, a 50 MB round trip, PTY, -L and -R, failures
//! with OpenSSH's messages and exit 255, --repeat, key files, keepalive.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sansh_interop::cli::Sansh;
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
    let r = Sansh::new().args(["-o", "Ciphers=3des-cbc", "127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(
        r.stderr.contains("3des-cbc") && r.stderr.contains("chacha20-poly1305@openssh.com"),
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
