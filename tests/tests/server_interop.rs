//! The sansh SERVER role (the tokio adapter's `Server`, as `sansh --demo`
//! runs it) against real clients: OpenSSH's `ssh`, asyncssh and dropbear's
//! `dbclient`. Each test starts its own sansh server on 127.0.0.1 with a
//! free port and the host key under test, writes a known_hosts line from
//! that key (so the client verifies our signature over the exchange hash),
//! and checks what the client and the server saw.
//!
//! The sansh server runs `exec` only: PTYs, shells and subsystems are
//! refused, and `pty_shell_and_subsystem_requests_are_refused_cleanly` pins
//! that gap down. Password authentication goes through SSH_ASKPASS with
//! SSH_ASKPASS_REQUIRE=force (no sshpass needed). Server-side counters come
//! from `ServerOptions::on_close`.

use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use sansh::testing::host_key;
use sansh::tokio::{Server, ServerOptions};
use sansh::{AuthMethod, CloseReason, HostKeyAlgorithm, KeepaliveConfig, ServerConfig, Stats};
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, keygen};
use sha2::{Digest, Sha256};

const SSH: &str = "/usr/bin/ssh";
const DBCLIENT: &str = "/usr/bin/dbclient";
const DROPBEARCONVERT: &str = "/usr/bin/dropbearconvert";

/// Every host key algorithm the server signs with, as OpenSSH names it.
const HOST_KEY_ALGORITHMS: [HostKeyAlgorithm; 6] = [
    HostKeyAlgorithm::Ed25519,
    HostKeyAlgorithm::RsaSha512,
    HostKeyAlgorithm::RsaSha256,
    HostKeyAlgorithm::EcdsaP256,
    HostKeyAlgorithm::EcdsaP384,
    HostKeyAlgorithm::EcdsaP521,
];
const CIPHERS: [&str; 3] =
    ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"];

/// Longest any one client run may take before the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn require(binary: &str, package: &str) {
    assert!(Path::new(binary).exists(), "{binary} is missing: install {package} (tests/setup.sh does)");
}

/// How the sansh server under test is set up.
#[derive(Clone)]
struct Setup {
    host_key: HostKeyAlgorithm,
    /// Accept this password (for any user) besides the client's key.
    password: Option<&'static str>,
    /// Our server's liveness probes (ClientAliveInterval), CountMax 2.
    probe_interval: Option<Duration>,
    /// Our server's own rekey limit in bytes (default: the cipher's).
    rekey_bytes: Option<u64>,
    /// `direct-tcpip` to loopback (ssh -L / -W).
    forwarding: bool,
    /// `ssh-keygen` arguments of the client's key.
    user_key: &'static [&'static str],
    /// USERAUTH_BANNER text.
    banner: Option<&'static str>,
}

impl Setup {
    fn new(host_key: HostKeyAlgorithm) -> Setup {
        Setup {
            host_key,
            password: None,
            probe_interval: None,
            rekey_bytes: None,
            forwarding: false,
            user_key: &["-t", "ed25519"],
            banner: None,
        }
    }
}

/// A sansh server on its own tokio runtime, stopped on drop, with a user
/// key the server accepts and a known_hosts file that trusts its host key.
struct SanshServer {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    closed: mpsc::Receiver<(Stats, CloseReason)>,
    host_public: ssh_key::PublicKey,
    dir: TempDir,
}

impl SanshServer {
    fn start(setup: Setup) -> SanshServer {
        let dir = TempDir::new("server-interop");
        let (_, user_public) = keygen(dir.path(), "id_user", setup.user_key, "");
        let user_public = ssh_key::PublicKey::from_openssh(user_public.trim()).expect("parse user key");
        let key = host_key(setup.host_key);
        let host_public = key.public_key().clone();
        let mut config = ServerConfig { host_keys: vec![key], ..ServerConfig::default() };
        if let Some(interval) = setup.probe_interval {
            config.transport.keepalive = KeepaliveConfig {
                probe_interval: Some(interval),
                probe_count_max: 2,
                // NAT keepalive too: IGNOREs whenever we were quiet 200 ms
                // (none may go out during the first kex: strict kex).
                ignore_interval: Some(Duration::from_millis(200)),
                ..KeepaliveConfig::default()
            };
        }
        config.transport.rekey.bytes = setup.rekey_bytes;
        config.banner = setup.banner.map(str::to_owned);
        let mut options = ServerOptions::with_authorized_keys(config, vec![user_public.clone()]);
        options.allow_loopback_forwarding = setup.forwarding;
        let password = setup.password;
        options.auth = Arc::new(move |_user, method| match method {
            AuthMethod::PublicKey { key, .. } => key.key_data() == user_public.key_data(),
            AuthMethod::Password { password: given, new_password: None } => {
                password.is_some_and(|p| given.expose() == p)
            }
            _ => false,
        });
        let (closed_tx, closed) = mpsc::channel();
        let closed_tx = std::sync::Mutex::new(closed_tx);
        options.on_close = Some(Arc::new(move |stats: &Stats, reason: &CloseReason| {
            let _ = closed_tx.lock().expect("lock").send((stats.clone(), reason.clone()));
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = runtime
            .block_on(Server::bind("127.0.0.1:0".parse().expect("address"), options))
            .expect("bind the sansh server on 127.0.0.1");
        let port = server.local_addr().expect("local addr").port();
        runtime.spawn(server.run());
        let known_hosts = dir.path().join("known_hosts");
        let line = format!("[127.0.0.1]:{port} {}\n", host_public.to_openssh().expect("encode host key"));
        std::fs::write(&known_hosts, line).expect("write known_hosts");
        SanshServer { port, runtime: Some(runtime), closed, host_public, dir }
    }

    fn user_key(&self) -> PathBuf {
        self.dir.path().join("id_user")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The final counters and close reason of the next connection to end.
    fn next_close(&self) -> (Stats, CloseReason) {
        self.closed
            .recv_timeout(Duration::from_secs(20))
            .expect("the server reported no closed connection within 20 s")
    }
}

impl Drop for SanshServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A client run's output, with its debug log when it wrote one.
struct Run {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    log: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout ({} bytes)\n{}\n--- stderr\n{}\n--- log\n{}",
            self.status,
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(4096)]),
            self.stderr,
            self.log
        )
    }
}

/// Runs a client with `stdin`, killing it (and failing) after `CLIENT_TIMEOUT`.
fn run_client(mut cmd: Command, stdin: Vec<u8>, log: Option<&Path>) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin pipe");
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(CLIENT_TIMEOUT) {
        Ok(out) => out.expect("wait for the client"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            let log = log.map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default();
            panic!("{cmd:?} did not finish within {CLIENT_TIMEOUT:?}; its log:\n{log}");
        }
    };
    let _ = feeder.join();
    Run {
        status: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: log.map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default(),
    }
}

/// `ssh` against `server` with strict host key checking, one host key
/// algorithm and one cipher, logging at -vvv into a file (so the remote
/// stderr stays apart).
fn ssh(
    server: &SanshServer,
    host_key: HostKeyAlgorithm,
    cipher: &str,
    extra: &[&str],
    command: &str,
) -> (Command, PathBuf) {
    require(SSH, "openssh-client");
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = server.dir.path().join(format!("ssh-{n}.log"));
    let mut cmd = Command::new(SSH);
    cmd.args(["-F", "/dev/null", "-vvv", "-E"]).arg(&log);
    cmd.arg("-o").arg(format!("UserKnownHostsFile={}", server.known_hosts().display()));
    cmd.args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]);
    cmd.arg("-o").arg(format!("HostKeyAlgorithms={}", host_key.name()));
    cmd.arg("-o").arg(format!("Ciphers={cipher}"));
    cmd.args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=20", "-i"]);
    cmd.arg(server.user_key());
    cmd.args(extra);
    cmd.args(["-p", &server.port.to_string(), &format!("{TEST_USER}@127.0.0.1"), command]);
    (cmd, log)
}

fn run_ssh(
    server: &SanshServer,
    host_key: HostKeyAlgorithm,
    cipher: &str,
    extra: &[&str],
    command: &str,
    stdin: Vec<u8>,
) -> Run {
    let (cmd, log) = ssh(server, host_key, cipher, extra, command);
    run_client(cmd, stdin, Some(&log))
}

/// What OpenSSH's -vvv log must say about a good handshake with us.
fn assert_openssh_handshake(run: &Run, server: &SanshServer, host_key: HostKeyAlgorithm, cipher: &str) {
    let log = &run.log;
    let key_type = match host_key {
        HostKeyAlgorithm::Ed25519 => "ED25519",
        HostKeyAlgorithm::RsaSha256 | HostKeyAlgorithm::RsaSha512 => "RSA",
        HostKeyAlgorithm::EcdsaP256 | HostKeyAlgorithm::EcdsaP384 | HostKeyAlgorithm::EcdsaP521 => "ECDSA",
    };
    let expect = [
        format!("kex: host key algorithm: {}", host_key.name()),
        format!("kex: server->client cipher: {cipher} MAC: <implicit> compression: none"),
        format!("kex: client->server cipher: {cipher} MAC: <implicit> compression: none"),
        // Our KEXINIT's kex-strict-s was seen: Terrapin-safe ordering, and
        // both directions restart their sequence numbers at NEWKEYS (the
        // read side only works if our server restarted its own).
        "will use strict KEX ordering".to_string(),
        "ssh_packet_send2_wrapped: resetting send seqnr".to_string(),
        "ssh_packet_read_poll2: resetting read seqnr".to_string(),
        // Our signature over H verified with the key known_hosts holds.
        format!("Host '[127.0.0.1]:{}' is known and matches the {key_type} host key.", server.port),
        // Our EXT_INFO parsed (RFC 8308).
        "SSH2_MSG_EXT_INFO received".to_string(),
        "kex_input_ext_info: server-sig-algs=<ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256>"
            .to_string(),
        "Authenticated to 127.0.0.1".to_string(),
    ];
    for line in expect {
        assert!(log.contains(&line), "ssh's log lacks {line:?}:\n{run:?}");
    }
    let fingerprint = server.host_public.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    assert!(log.contains(&fingerprint), "ssh's log lacks our host key fingerprint {fingerprint}:\n{run:?}");
}

#[test]
fn openssh_exec_with_every_host_key_and_cipher() {
    for alg in HOST_KEY_ALGORITHMS {
        let server = SanshServer::start(Setup::new(alg));
        for cipher in CIPHERS {
            let run = run_ssh(
                &server,
                alg,
                cipher,
                &["-o", "BatchMode=yes"],
                "echo out; echo err >&2; exit 7",
                Vec::new(),
            );
            assert_eq!(run.status, Some(7), "{alg:?} {cipher}:\n{run:?}");
            assert_eq!(run.stdout(), "out\n", "{alg:?} {cipher}:\n{run:?}");
            assert_eq!(run.stderr, "err\n", "{alg:?} {cipher}:\n{run:?}");
            assert_openssh_handshake(&run, &server, alg, cipher);
            let (stats, reason) = server.next_close();
            assert!(
                matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof),
                "{alg:?} {cipher}: {reason:?}"
            );
            assert_eq!(stats.rekeys, 0, "{stats:?}");
        }
    }
}

#[test]
fn openssh_refuses_a_host_key_that_known_hosts_does_not_hold() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    std::fs::write(
        server.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", server.port, sansh_interop::OTHER_ED25519),
    )
    .unwrap();
    let run =
        run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &["-o", "BatchMode=yes"], "true", Vec::new());
    assert_eq!(run.status, Some(255), "{run:?}");
    // With -E, ssh's own messages go to the log too.
    assert!(run.log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{run:?}");
    assert!(run.log.contains("Host key verification failed."), "{run:?}");
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize, salt: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ salt;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn openssh_stdin_through_sha256sum_and_cat_with_every_cipher() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    for (i, cipher) in CIPHERS.into_iter().enumerate() {
        let input = data(8 << 20, i as u32);
        let run = run_ssh(
            &server,
            HostKeyAlgorithm::Ed25519,
            cipher,
            &["-o", "BatchMode=yes"],
            "sha256sum",
            input.clone(),
        );
        assert_eq!(run.status, Some(0), "{cipher}:\n{run:?}");
        assert_eq!(run.stdout(), format!("{}  -\n", sha256_hex(&input)), "{cipher}:\n{run:?}");
        let (stats, _) = server.next_close();
        assert!(stats.bytes_received > 8 << 20, "{stats:?}");
        // And back: what goes in comes out byte for byte.
        let input = data(2 << 20, 100 + i as u32);
        let run = run_ssh(
            &server,
            HostKeyAlgorithm::Ed25519,
            cipher,
            &["-o", "BatchMode=yes"],
            "cat",
            input.clone(),
        );
        assert_eq!(run.status, Some(0), "{cipher}:\n{run:?}");
        assert!(
            run.stdout == input,
            "{cipher}: cat returned {} bytes, not the {} sent",
            run.stdout.len(),
            input.len()
        );
        let (stats, _) = server.next_close();
        assert!(stats.bytes_sent > 2 << 20 && stats.bytes_received > 2 << 20, "{stats:?}");
    }
}

/// A script that prints the password: ssh reads it through SSH_ASKPASS
/// (SSH_ASKPASS_REQUIRE=force needs no terminal and no sshpass).
fn askpass(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join("askpass.sh");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{password}'\n")).expect("write askpass");
    let mut perms = std::fs::metadata(&path).expect("askpass metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod askpass");
    path
}

/// `ssh` with password authentication; `only_password` narrows
/// PreferredAuthentications, else ssh goes through its default order
/// (keyboard-interactive, which our server refuses, before password).
fn password_ssh(server: &SanshServer, password: &str, only_password: bool) -> Run {
    let mut extra = vec!["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"];
    if only_password {
        extra.extend(["-o", "PreferredAuthentications=password"]);
    }
    let (mut cmd, log) = ssh(server, HostKeyAlgorithm::Ed25519, CIPHERS[1], &extra, "echo via-password");
    cmd.env("SSH_ASKPASS", askpass(server.dir.path(), password))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    // No controlling terminal: ssh must not try to read /dev/tty.
    cmd.process_group(0);
    run_client(cmd, Vec::new(), Some(&log))
}

#[test]
fn openssh_password_authentication() {
    let server =
        SanshServer::start(Setup { password: Some(TEST_PASSWORD), ..Setup::new(HostKeyAlgorithm::Ed25519) });
    for only_password in [true, false] {
        let run = password_ssh(&server, TEST_PASSWORD, only_password);
        assert_eq!((run.status, run.stdout().as_str()), (Some(0), "via-password\n"), "{run:?}");
        assert!(run.log.contains("using \"password\""), "{run:?}");
        let tried_ki = run.log.contains("Next authentication method: keyboard-interactive");
        assert_eq!(tried_ki, !only_password, "{run:?}");
        server.next_close();
    }
    let run = password_ssh(&server, "wrong password", true);
    assert_eq!(run.status, Some(255), "{run:?}");
    assert!(run.log.contains("Permission denied"), "{run:?}");
}

#[test]
fn pty_shell_and_subsystem_requests_are_refused_cleanly() {
    // GAP: the sansh server runs `exec` only: no PTY (pty-req,
    // window-change), no shell, no subsystems (sftp). OpenSSH treats a
    // refused pty-req under -tt, or a refused shell or subsystem, as fatal
    // for that session; this pins down that each refusal is clean and the
    // server keeps serving.
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let batch = "BatchMode=yes";
    let cases: [(&[&str], &str, &str); 3] = [
        (&["-o", batch, "-tt"], "stty size", "PTY allocation request failed on channel 0"),
        (&["-o", batch, "-T"], "", "shell request failed on channel 0"),
        (&["-o", batch, "-s"], "sftp", "subsystem request failed on channel 0"),
    ];
    for (extra, command, complaint) in cases {
        let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], extra, command, Vec::new());
        assert!(run.log.contains(complaint), "{extra:?} {command:?}:\n{run:?}");
        assert_eq!(run.stdout(), "", "the server has grown support: test it instead:\n{run:?}");
        let (_, reason) = server.next_close();
        assert!(matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof), "{reason:?}");
    }
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[0],
        &["-o", "BatchMode=yes"],
        "echo still here",
        Vec::new(),
    );
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "still here\n"), "{run:?}");
}

#[test]
fn our_server_detects_a_client_that_stopped_answering() {
    // ClientAliveInterval 1 s, CountMax 2 against an ssh we freeze with
    // SIGSTOP: the server gives up with KeepaliveTimeout, on its own.
    let server = SanshServer::start(Setup {
        probe_interval: Some(Duration::from_secs(1)),
        ..Setup::new(HostKeyAlgorithm::Ed25519)
    });
    let (mut cmd, log) =
        ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &["-o", "BatchMode=yes"], "echo up; sleep 60");
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn ssh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 3];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("the session started");
    assert_eq!(&first, b"up\n");
    let pid = child.id().to_string();
    sansh_interop::run(Command::new("kill").args(["-STOP", &pid]));
    let closed = server.closed.recv_timeout(Duration::from_secs(20));
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = child.wait();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let (stats, reason) =
        closed.unwrap_or_else(|_| panic!("the server never gave up on the frozen client:\n{log}"));
    assert_eq!(reason, CloseReason::KeepaliveTimeout { unanswered: 2 }, "{stats:?}");
    assert!(stats.probes_sent >= stats.probes_answered + 2, "{stats:?}");
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn openssh_rekeys_mid_transfer_both_ways() {
    // The client rekeys every MiB (RekeyLimit) while 8 MiB stream in...
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let input = data(8 << 20, 7);
    let extra = ["-o", "BatchMode=yes", "-o", "RekeyLimit=1M"];
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &extra, "sha256sum", input.clone());
    assert_eq!(run.status, Some(0), "{run:?}");
    assert_eq!(run.stdout(), format!("{}  -\n", sha256_hex(&input)), "{run:?}");
    let newkeys = count(&run.log, "SSH2_MSG_NEWKEYS received");
    assert!(newkeys >= 5, "ssh finished only {newkeys} key exchanges:\n{run:?}");
    // Strict kex holds through every rekey: sequence numbers restart each time.
    assert_eq!(count(&run.log, "resetting read seqnr"), newkeys, "{run:?}");
    let (stats, reason) = server.next_close();
    assert_eq!(stats.rekeys, newkeys as u64 - 1, "{stats:?} {reason:?}");
    assert!(matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof), "{reason:?}");

    // ...and our server rekeys every MiB while 8 MiB stream out through cat.
    let server =
        SanshServer::start(Setup { rekey_bytes: Some(1 << 20), ..Setup::new(HostKeyAlgorithm::Ed25519) });
    let input = data(8 << 20, 8);
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[1],
        &["-o", "BatchMode=yes"],
        "cat",
        input.clone(),
    );
    assert_eq!(run.status, Some(0), "{run:?}");
    assert!(
        run.stdout == input,
        "cat returned {} bytes, not the {} sent:\n{run:?}",
        run.stdout.len(),
        input.len()
    );
    let newkeys = count(&run.log, "SSH2_MSG_NEWKEYS received");
    let (stats, reason) = server.next_close();
    // At least one per 2 MiB however the data and the KEXINITs cross.
    assert!(stats.rekeys >= 4, "{stats:?}");
    assert_eq!(stats.rekeys, newkeys as u64 - 1, "{stats:?} {reason:?}");
    assert!(matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof), "{reason:?}");
}

#[test]
fn openssh_answers_our_server_keepalive_probes() {
    // ClientAliveInterval 1 s, CountMax 2: a session idle for 4 s survives
    // only if ssh answers the probes (it sends REQUEST_FAILURE to
    // keepalive@openssh.com, which counts as an answer, as with sshd).
    let interval = Duration::from_secs(1);
    let server =
        SanshServer::start(Setup { probe_interval: Some(interval), ..Setup::new(HostKeyAlgorithm::Ed25519) });
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[0],
        &["-o", "BatchMode=yes"],
        "sleep 4; echo awake",
        Vec::new(),
    );
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "awake\n"), "{run:?}");
    let seen = count(&run.log, "client_input_global_request: rtype keepalive@openssh.com want_reply 1");
    assert!(seen >= 3, "ssh saw {seen} probes:\n{run:?}");
    let (stats, reason) = server.next_close();
    assert!(matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof), "{reason:?}");
    assert!(stats.probes_sent >= seen as u64, "{stats:?}");
    // The last probe may still have been in flight when the session ended.
    assert!(stats.probes_answered + 1 >= stats.probes_sent && stats.probes_answered >= 3, "{stats:?}");
    assert!(stats.rtt.last.is_some(), "no RTT sample: {stats:?}");
    let ignores = count(&run.log, "receive packet: type 2\n") + count(&run.log, "receive packet: type 2\r\n");
    assert!(ignores >= 5, "{ignores} IGNOREs received:\n{run:?}");
}

/// What `tests/peers/asyncssh_client.py` reported.
#[derive(Debug, Default)]
struct AsyncSshResult {
    exit_status: Option<i64>,
    exit_signal: Option<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cipher: String,
    host_key: String,
    error: Option<String>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Runs the asyncssh client script against `server`.
fn asyncssh(
    server: &SanshServer,
    args: &[&str],
    command: &str,
    stdin: Option<&[u8]>,
) -> (AsyncSshResult, Run) {
    let python = std::env::var_os("SANSH_ASYNCSSH_PYTHON")
        .map_or_else(|| PathBuf::from(sansh_interop::asyncssh::VENV_PYTHON), PathBuf::from);
    assert!(python.exists(), "{} not found: run tests/setup.sh (it installs asyncssh)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/asyncssh_client.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).args(["--port", &server.port.to_string(), "--user", TEST_USER, "--known-hosts"]);
    cmd.arg(server.known_hosts()).args(["--command", command]).args(args);
    if let Some(stdin) = stdin {
        let path = server.dir.path().join("asyncssh-stdin");
        std::fs::write(&path, stdin).expect("write stdin file");
        cmd.arg("--stdin-file").arg(path);
    }
    let run = run_client(cmd, Vec::new(), None);
    let mut result = AsyncSshResult::default();
    for line in run.stdout().lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "EXIT_STATUS" => result.exit_status = value.parse().ok(),
            "EXIT_SIGNAL" => result.exit_signal = (value != "-").then(|| value.to_owned()),
            "STDOUT_HEX" => result.stdout = unhex(value),
            "STDERR_HEX" => result.stderr = unhex(value),
            "CIPHER" => result.cipher = value.to_owned(),
            "HOST_KEY" => result.host_key = value.to_owned(),
            "ERROR" => result.error = Some(value.to_owned()),
            _ => panic!("unexpected line from the asyncssh client: {line:?}\n{run:?}"),
        }
    }
    (result, run)
}

fn host_key_line(key: &ssh_key::PublicKey) -> String {
    let text = key.to_openssh().expect("encode key");
    let mut words = text.split(' ');
    format!("{} {}", words.next().unwrap_or_default(), words.next().unwrap_or_default())
}

#[test]
fn asyncssh_client_exec_with_every_host_key_and_cipher() {
    for alg in HOST_KEY_ALGORITHMS {
        let server = SanshServer::start(Setup::new(alg));
        let ciphers: &[&str] = if alg == HostKeyAlgorithm::Ed25519 { &CIPHERS } else { &CIPHERS[..1] };
        for cipher in ciphers {
            let key = server.user_key();
            let args = [
                "--key",
                key.to_str().expect("utf-8 path"),
                "--host-key-alg",
                alg.name(),
                "--cipher",
                cipher,
            ];
            let (r, run) = asyncssh(&server, &args, "echo out; echo err >&2; exit 3", None);
            assert_eq!(r.error, None, "{alg:?} {cipher}:\n{run:?}");
            assert_eq!(
                (r.exit_status, r.stdout.as_slice(), r.stderr.as_slice()),
                (Some(3), &b"out\n"[..], &b"err\n"[..]),
                "{alg:?} {cipher}:\n{run:?}"
            );
            assert_eq!(r.cipher, *cipher);
            assert_eq!(r.host_key, host_key_line(&server.host_public));
            server.next_close();
        }
    }
}

#[test]
fn asyncssh_client_stdin_signals_and_password() {
    let server = SanshServer::start(Setup {
        password: Some(TEST_PASSWORD),
        ..Setup::new(HostKeyAlgorithm::EcdsaP256)
    });
    let key = server.user_key();
    let key_args = ["--key", key.to_str().expect("utf-8 path")];
    // asyncssh rekeys every 256 KiB while 3 MiB stream in.
    let input = data(3 << 20, 11);
    let rekeying = [key_args[0], key_args[1], "--rekey-bytes", "262144"];
    let (r, run) = asyncssh(&server, &rekeying, "sha256sum", Some(&input));
    assert_eq!((r.error.as_deref(), r.exit_status), (None, Some(0)), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&r.stdout), format!("{}  -\n", sha256_hex(&input)));
    let (stats, _) = server.next_close();
    assert!(stats.rekeys >= 2, "{stats:?}");
    let (r, run) = asyncssh(&server, &key_args, "kill -TERM $$", None);
    assert_eq!((r.error.as_deref(), r.exit_signal.as_deref()), (None, Some("TERM")), "{run:?}");
    server.next_close();
    let (r, run) = asyncssh(&server, &["--password", TEST_PASSWORD], "echo via-password", None);
    assert_eq!((r.error.as_deref(), r.stdout.as_slice()), (None, &b"via-password\n"[..]), "{run:?}");
    server.next_close();
    let (r, run) = asyncssh(&server, &["--password", "wrong"], "true", None);
    assert!(r.error.as_deref().is_some_and(|e| e.contains("PermissionDenied")), "{run:?}");
}

/// `dbclient` against `server` with publickey auth (the user key converted
/// to dropbear's format) and `HOME` in the test's directory, whose
/// `.ssh/known_hosts` trusts `known` (dropbear's format: host, no port).
fn dbclient(server: &SanshServer, known: &str, command: &str, stdin: Vec<u8>) -> Run {
    require(DBCLIENT, "dropbear-bin");
    require(DROPBEARCONVERT, "dropbear-bin");
    let home = server.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("create ~/.ssh");
    std::fs::write(home.join(".ssh/known_hosts"), format!("127.0.0.1 {known}\n")).expect("write known_hosts");
    let key = server.dir.path().join("id_dropbear");
    if !key.exists() {
        sansh_interop::run(
            Command::new(DROPBEARCONVERT).args(["openssh", "dropbear"]).arg(server.user_key()).arg(&key),
        );
    }
    // setsid: no controlling terminal, so an unknown host key is refused
    // instead of asked about on /dev/tty.
    let mut cmd = Command::new("setsid");
    cmd.args(["-w", DBCLIENT]).env("HOME", &home).arg("-i").arg(&key);
    cmd.args(["-p", &server.port.to_string(), &format!("{TEST_USER}@127.0.0.1"), command]);
    run_client(cmd, stdin, None)
}

#[test]
fn dropbear_client_exec_and_stdin() {
    for alg in [HostKeyAlgorithm::Ed25519, HostKeyAlgorithm::RsaSha256, HostKeyAlgorithm::EcdsaP256] {
        // Our server rekeys every 512 KiB: dbclient follows.
        let server = SanshServer::start(Setup { rekey_bytes: Some(512 << 10), ..Setup::new(alg) });
        let known = host_key_line(&server.host_public);
        let run = dbclient(&server, &known, "echo out; echo err >&2; exit 5", Vec::new());
        assert_eq!((run.status, run.stdout().as_str()), (Some(5), "out\n"), "{alg:?}:\n{run:?}");
        assert!(run.stderr.ends_with("err\n"), "{alg:?}:\n{run:?}");
        server.next_close();
        let input = data(2 << 20, 21);
        let run = dbclient(&server, &known, "sha256sum", input.clone());
        assert_eq!(run.status, Some(0), "{alg:?}:\n{run:?}");
        assert_eq!(run.stdout(), format!("{}  -\n", sha256_hex(&input)), "{alg:?}:\n{run:?}");
        // How many depends on timing: data the client wrote before it saw
        // our KEXINIT arrives under the old keys and counts for them.
        let (stats, _) = server.next_close();
        assert!(stats.rekeys >= 1, "{alg:?}: {stats:?}");
    }
    // The host key is checked against known_hosts: another key is refused.
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let other = sansh_interop::OTHER_ED25519.rsplit_once(' ').expect("comment").0;
    let run = dbclient(&server, other, "echo should not run", Vec::new());
    assert_ne!(run.status, Some(0), "{run:?}");
    assert!(run.stderr.contains("host key mismatch"), "{run:?}");
    assert_eq!(run.stdout(), "", "{run:?}");
}

#[test]
fn openssh_exit_signal_unread_stdin_and_client_keepalive() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let batch = ["-o", "BatchMode=yes"];
    // exit-signal: ssh reports death by signal with status 255.
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &batch, "kill -TERM $$", Vec::new());
    assert_eq!(run.status, Some(255), "{run:?}");
    assert!(run.log.contains("exit-signal"), "{run:?}");
    server.next_close();
    // A command that reads one byte of 8 MiB: the session still ends.
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[0],
        &batch,
        "head -c 1; echo; exit 4",
        data(8 << 20, 3),
    );
    assert_eq!((run.status, run.stdout.len()), (Some(4), 2), "{run:?}");
    server.next_close();
    // ssh's own probes (ServerAliveInterval): our server must answer them,
    // or ssh gives up after one unanswered probe and an idle second.
    let alive = ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"];
    let run =
        run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &alive, "sleep 4; echo awake", Vec::new());
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "awake\n"), "{run:?}");
    assert!(!run.log.contains("Timeout, server"), "{run:?}");
    // GLOBAL_REQUEST keepalive@openssh.com out, REQUEST_FAILURE back.
    let lines: Vec<&str> = run.log.lines().map(str::trim_end).collect();
    let answered = lines
        .windows(2)
        .filter(|w| w[0].ends_with("send packet: type 80") && w[1].ends_with("receive packet: type 82"))
        .count();
    assert!(answered >= 3, "{answered} probes answered:\n{run:?}");
    server.next_close();
}

#[test]
fn openssh_control_master_multiplexes_sessions() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let socket = server.dir.path().join("mux");
    let socket_opt = format!("ControlPath={}", socket.display());
    // The master: authenticated, no command, in the background (-f -N).
    let master = ["-o", "BatchMode=yes", "-o", "ControlMaster=yes", "-o", &socket_opt, "-f", "-N"];
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &master, "", Vec::new());
    assert_eq!(run.status, Some(0), "{run:?}");
    let client = ["-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", &socket_opt];
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let (cmd, log) = ssh(
                &server,
                HostKeyAlgorithm::Ed25519,
                CIPHERS[0],
                &client,
                &format!("echo session {i}; exit {i}"),
            );
            std::thread::spawn(move || run_client(cmd, Vec::new(), Some(&log)))
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let run = run.join().expect("client thread");
        assert_eq!((run.status, run.stdout()), (Some(i as i32), format!("session {i}\n")), "{run:?}");
    }
    let stop = ["-o", &socket_opt, "-O", "exit"];
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &stop, "", Vec::new());
    assert_eq!(run.status, Some(0), "{run:?}");
    // One connection carried all six sessions.
    let (stats, reason) = server.next_close();
    assert!(matches!(reason, CloseReason::PeerDisconnect { .. } | CloseReason::Eof), "{reason:?} {stats:?}");
    assert!(server.closed.try_recv().is_err(), "more than one connection");
}

#[test]
fn openssh_remote_forward_request_is_answered() {
    // The sansh server does not do remote forwarding: `ssh -R` must hear
    // a refusal (REQUEST_FAILURE), and replies to later global requests
    // (ssh's keepalives) must not queue behind an unanswered one.
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let extra = [
        "-o",
        "BatchMode=yes",
        "-R",
        "0:127.0.0.1:9",
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=1",
    ];
    let run =
        run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &extra, "sleep 3; echo awake", Vec::new());
    assert!(run.log.contains("remote port forwarding failed for listen port 0"), "{run:?}");
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "awake\n"), "{run:?}");
    server.next_close();
    let strict = ["-o", "BatchMode=yes", "-R", "0:127.0.0.1:9", "-o", "ExitOnForwardFailure=yes"];
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &strict, "sleep 30", Vec::new());
    assert_eq!(run.status, Some(255), "{run:?}");
    assert!(run.log.contains("remote port forwarding failed for listen port 0"), "{run:?}");
}

#[test]
fn openssh_bulk_stdout_and_stderr_at_once() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::EcdsaP384));
    let command = "head -c 4194304 /dev/zero | tr '\\0' x | tee /dev/stderr | wc -c";
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::EcdsaP384,
        CIPHERS[2],
        &["-o", "BatchMode=yes"],
        command,
        Vec::new(),
    );
    assert_eq!((run.status, run.stdout().trim()), (Some(0), "4194304"), "{run:?}");
    assert!(
        run.stderr.len() == 4 << 20 && run.stderr.bytes().all(|b| b == b'x'),
        "stderr: {} bytes",
        run.stderr.len()
    );
}

/// A TCP echo server on 127.0.0.1 for one connection.
fn echo_once() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut r = s.try_clone().expect("clone");
            let _ = std::io::copy(&mut r, &mut s);
        }
    });
    port
}

#[test]
fn openssh_stdio_forwarding_through_direct_tcpip() {
    // ssh -W opens a direct-tcpip channel and pipes stdin/stdout through it.
    let server = SanshServer::start(Setup { forwarding: true, ..Setup::new(HostKeyAlgorithm::Ed25519) });
    let echo = echo_once();
    let target = format!("127.0.0.1:{echo}");
    let input = data(1 << 20, 31);
    let (mut cmd, log) =
        ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &["-o", "BatchMode=yes", "-W", &target], "");
    // The echo side never closes first: stop reading once it all came back.
    cmd.stdout(Stdio::piped());
    let mut child = cmd.stdin(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn ssh -W");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(&input))
    };
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let len = input.len();
    std::thread::spawn(move || {
        let mut got = vec![0u8; len];
        let _ = tx.send(std::io::Read::read_exact(&mut stdout, &mut got).map(|()| got));
    });
    let got = rx.recv_timeout(CLIENT_TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    let _ = writer.join();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let got = got.unwrap_or_else(|_| panic!("the echo did not come back through ssh -W:\n{log}"));
    assert!(got.expect("read echo") == input, "the echo came back different");

    // Without forwarding allowed, the open is refused and ssh says so.
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    let target = format!("127.0.0.1:{}", echo_once());
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[0],
        &["-o", "BatchMode=yes", "-W", &target],
        "",
        Vec::new(),
    );
    assert_eq!(run.status, Some(255), "{run:?}");
    assert!(run.log.contains("administratively prohibited"), "{run:?}");
}

#[test]
fn openssh_user_keys_of_every_type() {
    // Our server verifies the client's signature over the session id.
    let cases: [(&[&str], &str); 5] = [
        (&["-t", "rsa", "-b", "2048"], "rsa-sha2-512"),
        (&["-t", "rsa", "-b", "2048"], "rsa-sha2-256"),
        (&["-t", "ecdsa", "-b", "256"], "ecdsa-sha2-nistp256"),
        (&["-t", "ecdsa", "-b", "384"], "ecdsa-sha2-nistp384"),
        (&["-t", "ecdsa", "-b", "521"], "ecdsa-sha2-nistp521"),
    ];
    for (keygen_args, algorithm) in cases {
        let server =
            SanshServer::start(Setup { user_key: keygen_args, ..Setup::new(HostKeyAlgorithm::Ed25519) });
        let accepted = format!("PubkeyAcceptedAlgorithms={algorithm}");
        let run = run_ssh(
            &server,
            HostKeyAlgorithm::Ed25519,
            CIPHERS[0],
            &["-o", "BatchMode=yes", "-o", &accepted],
            "echo in",
            Vec::new(),
        );
        assert_eq!((run.status, run.stdout().as_str()), (Some(0), "in\n"), "{algorithm}:\n{run:?}");
        assert!(
            run.log.contains(&format!("Server accepts key: {}", server.user_key().display())),
            "{algorithm}:\n{run:?}"
        );
        let offered =
            run.log.lines().find(|l| l.contains("kex_input_ext_info: server-sig-algs=")).unwrap_or_default();
        assert!(offered.contains(algorithm), "{algorithm} is not in our server-sig-algs: {offered}");
    }
}

#[test]
fn openssh_kex_names_and_a_compression_offer() {
    let server = SanshServer::start(Setup::new(HostKeyAlgorithm::Ed25519));
    for kex in ["curve25519-sha256", "curve25519-sha256@libssh.org"] {
        let extra = ["-o", "BatchMode=yes", "-o", &format!("KexAlgorithms={kex}"), "-o", "Compression=yes"];
        let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &extra, "echo ok", Vec::new());
        assert_eq!((run.status, run.stdout().as_str()), (Some(0), "ok\n"), "{kex}:\n{run:?}");
        assert!(run.log.contains(&format!("kex: algorithm: {kex}")), "{kex}:\n{run:?}");
        // We offer no compression: ssh falls back to none.
        assert!(run.log.contains("MAC: <implicit> compression: none"), "{kex}:\n{run:?}");
        server.next_close();
    }
    // Nothing in common: ssh says so and the server stays up.
    let extra = ["-o", "BatchMode=yes", "-o", "KexAlgorithms=diffie-hellman-group14-sha256"];
    let run = run_ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &extra, "true", Vec::new());
    assert_eq!(run.status, Some(255), "{run:?}");
    assert!(run.log.contains("no matching key exchange method found"), "{run:?}");
    let (_, reason) = server.next_close();
    assert!(!matches!(reason, CloseReason::Local { .. }), "{reason:?}");
    let run = run_ssh(
        &server,
        HostKeyAlgorithm::Ed25519,
        CIPHERS[0],
        &["-o", "BatchMode=yes"],
        "echo up",
        Vec::new(),
    );
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "up\n"), "{run:?}");
}

#[test]
fn openssh_banner_and_refused_keys_before_the_right_one() {
    let banner = "Welcome to the sansh test server\n";
    let server = SanshServer::start(Setup { banner: Some(banner), ..Setup::new(HostKeyAlgorithm::Ed25519) });
    // Three keys the server does not know, offered before the one it does
    // (ssh tries -i keys in order; `ssh()` adds ours last): fewer refusals
    // than MaxAuthTries (6), so the fourth key gets in.
    let mut extra = vec!["-o".to_string(), "BatchMode=yes".to_string()];
    for i in 0..3 {
        keygen(server.dir.path(), &format!("stranger{i}"), &["-t", "ed25519"], "");
        extra
            .extend(["-i".to_string(), server.dir.path().join(format!("stranger{i}")).display().to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (cmd, log) = ssh(&server, HostKeyAlgorithm::Ed25519, CIPHERS[0], &[], "echo in");
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let ours = args.iter().position(|a| a == "-i").expect("-i");
    let mut cmd = Command::new(SSH);
    cmd.args(&args[..ours]).args(&extra).args(&args[ours..]);
    let run = run_client(cmd, Vec::new(), Some(&log));
    assert_eq!((run.status, run.stdout().as_str()), (Some(0), "in\n"), "{run:?}");
    assert_eq!(count(&run.log, "Authentications that can continue: publickey"), 4, "{run:?}");
    // The banner is shown once, before authentication.
    assert_eq!(run.stderr, banner, "{run:?}");
}
