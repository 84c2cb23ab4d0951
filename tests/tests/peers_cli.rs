//! The `sansh` command-line program against dropbear, asyncssh, tinysshd
//! and Twisted Conch on 127.0.0.1 (cli_openssh.rs does the same against OpenSSH): exit codes
//! and signals, stdin, PTY, -L and -R, keepalive through a black hole,
//! --reconnect after a cut, ciphers, key files. Each test is written once
//! and run per peer (the modules at the bottom), where the peer's
//! capabilities ([`PeerKind`]) allow.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sansh::tokio::{FaultMode, FaultProxy};
use sansh_interop::cli::Sansh;
use sansh_interop::free_port;
use sansh_interop::peer::{Peer, PeerKind, echo_server, test_data};
use sha2::{Digest, Sha256};

/// `sansh` to `port` (the peer's, or a proxy's), trusting the host key: by
/// password, or with the client key where the peer takes no password.
fn sansh(peer: &Peer, port: u16) -> Sansh {
    if peer.kind.password_auth() {
        Sansh::to(port, peer.user(), Some(peer.password()))
    } else {
        let mut s = Sansh::to(port, peer.user(), None);
        s.args(["-i"]).arg_path(peer.client_key());
        s
    }
}

/// Fails a test that needs port forwarding when run against a peer without
/// it, rather than letting it pass or fail for another reason: such peers
/// run `forwarding_is_refused` instead.
fn needs_port_forwarding(kind: PeerKind) {
    assert!(kind.port_forwarding(), "{kind:?} has no port forwarding: leave this test out of its list");
}

/// Kills a background sansh when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` in the background with stderr captured.
fn spawn(cmd: &mut Sansh) -> Reap {
    Reap(cmd.command().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
}

/// What a background sansh wrote on stderr (after it ended or was killed).
fn stderr_of(child: &mut Reap) -> String {
    let _ = child.0.kill();
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Connects to 127.0.0.1:`port` once something listens there.
fn connect_when_up(port: u16, child: &mut Reap) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return s;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("sansh exited ({status}) before {port} was up: {}", stderr_of(child));
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `len` bytes through `s` to the echo server behind it and checks
/// they come back unchanged (writing and reading at once).
fn round_trip(mut s: TcpStream, len: usize) {
    let payload = test_data(len);
    let mut w = s.try_clone().unwrap();
    let p = payload.clone();
    let writer = std::thread::spawn(move || w.write_all(&p).unwrap());
    let mut back = vec![0u8; len];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == payload, "the echo through the forwarding differs");
}

fn exec_exit_codes_and_signals(kind: PeerKind) {
    let peer = Peer::start(kind);
    let r = sansh(&peer, peer.port()).args(["127.0.0.1", "echo out; echo err >&2; exit 3"]).run();
    assert_eq!(r.code, Some(3), "{r:?}\n{}", peer.log());
    assert_eq!(r.stdout_text(), "out\n");
    assert_eq!(r.stderr, "err\n");
    let r = sansh(&peer, peer.port()).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(0), "{r:?}");
    // Death by signal: 255 like ssh; -v shows the exit-signal arrived (a
    // missing status would say so instead).
    let r = sansh(&peer, peer.port()).args(["-v", "127.0.0.1", "kill -TERM $$"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains("remote command killed by signal TERM"), "{}", r.stderr);
}

fn stdin_streams_through_cat(kind: PeerKind) {
    let peer = Peer::start(kind);
    let data = test_data(4_000_000);
    let t = Instant::now();
    let r = sansh(&peer, peer.port()).stdin(data.clone()).args(["127.0.0.1", "cat"]).run();
    eprintln!("{kind:?}: 4 MB through cat and back in {:?}", t.elapsed());
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, peer.log());
    assert_eq!(r.stdout.len(), data.len());
    assert_eq!(Sha256::digest(&r.stdout), Sha256::digest(&data));
    let r = sansh(&peer, peer.port()).stdin(data.clone()).args(["127.0.0.1", "sha256sum"]).run();
    assert!(r.stdout_text().starts_with(&format!("{:x}", Sha256::digest(&data))), "{r:?}");
}

fn pty_with_t(kind: PeerKind) {
    assert!(kind.pty(), "{kind:?} has no working PTY: leave this test out of its list");
    let peer = Peer::start(kind);
    let r = sansh(&peer, peer.port())
        .env("TERM", "xterm-256color")
        .args(["-t", "127.0.0.1", "tty; stty size; echo $TERM"])
        .run();
    assert_eq!(r.code, Some(0), "{r:?}\n{}", peer.log());
    let out = r.stdout_text();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    // No terminal here, so no SIGWINCH either: the default 80x24 (resizes
    // are covered through the adapter in peers_tokio.rs). conch gives a
    // command no size at all (PeerKind::pty_size_on_exec).
    let size = if kind.pty_size_on_exec() { "24 80\r\n" } else { "0 0\r\n" };
    assert!(out.contains(size), "{out:?}");
    assert!(out.contains("xterm-256color"), "{out:?}");
    let r = sansh(&peer, peer.port()).args(["-T", "127.0.0.1", "tty"]).run();
    assert_eq!(r.stdout_text().trim(), "not a tty", "{r:?}");
}

fn local_forward_carries_data(kind: PeerKind) {
    needs_port_forwarding(kind);
    let peer = Peer::start(kind);
    let echo = echo_server();
    let port = free_port();
    let mut child =
        spawn(sansh(&peer, peer.port()).args(["-N", "-L", &format!("{port}:127.0.0.1:{echo}"), "127.0.0.1"]));
    round_trip(connect_when_up(port, &mut child), 2_000_000);
    // A second connection over the same forwarding.
    round_trip(TcpStream::connect(("127.0.0.1", port)).unwrap(), 1000);
}

fn remote_forward_carries_data(kind: PeerKind) {
    needs_port_forwarding(kind);
    let peer = Peer::start(kind);
    let echo = echo_server();
    let port = free_port();
    // No bind address: `localhost`, as ssh sends; and port 0, the peer's
    // choice (where the peer can: PeerKind::remote_forward_port_zero).
    let port_zero = kind.remote_forward_port_zero();
    let mut cmd = sansh(&peer, peer.port());
    cmd.args(["-N", "-R", &format!("{port}:127.0.0.1:{echo}")]);
    if port_zero {
        cmd.args(["-R", &format!("0:127.0.0.1:{echo}")]);
    }
    let mut child = spawn(cmd.args(["127.0.0.1"]));
    // The peer listens on this machine: connect to it directly.
    round_trip(connect_when_up(port, &mut child), 2_000_000);
    if !port_zero {
        return;
    }
    // sansh says which port the peer allocated, as ssh does.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let allocated: u16 = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("no \"Allocated port\" line from sansh");
        if let Some(rest) = line.strip_prefix("Allocated port ") {
            break rest.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a port number");
        }
    };
    assert_ne!(allocated, 0);
    round_trip(connect_when_up(allocated, &mut child), 300_000);
}

fn keepalive_detects_a_black_holed_link(kind: PeerKind) {
    let peer = Peer::start(kind);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(peer.addr())).unwrap();
    let mut cmd = sansh(&peer, proxy.local_addr().port());
    // `read` waits on stdin, a pipe kept open: the command lasts until the
    // connection is gone, then ends with it.
    cmd.args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2", "127.0.0.1", "echo up; read x"]);
    let child =
        cmd.command().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Reap(child);
    let mut line = [0u8; 3];
    child.0.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"up\n");
    // An idle, healthy link: the peer answers the probes, nothing closes.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "sansh ended on a healthy link: {}",
        stderr_of(&mut child)
    );
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
    let err = stderr_of(&mut child);
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

fn reconnect_reestablishes_local_forward_after_a_cut(kind: PeerKind) {
    needs_port_forwarding(kind);
    let peer = Peer::start(kind);
    let echo = echo_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(peer.addr())).unwrap();
    let port = free_port();
    let mut child = spawn(sansh(&peer, proxy.local_addr().port()).args([
        "--reconnect",
        "-N",
        "-L",
        &format!("{port}:127.0.0.1:{echo}"),
        "127.0.0.1",
    ]));
    round_trip(connect_when_up(port, &mut child), 100_000);
    assert_eq!(proxy.connections(), 1);
    // Cut the TCP connection under it: sansh notices, dials again (the
    // proxy forwards new connections) and binds -L again.
    proxy.set(FaultMode::Cut);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let mut last = String::new();
    while proxy.connections() < 2 || try_round_trip(port).map_err(|e| last = e).is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("sansh exited ({status}): {}", stderr_of(&mut child));
        }
        assert!(t.elapsed() < Duration::from_secs(20), "forwarding not back after the cut: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And carries bulk data again.
    round_trip(TcpStream::connect(("127.0.0.1", port)).unwrap(), 1_000_000);
    let err = stderr_of(&mut child);
    assert!(err.contains("reconnected to 127.0.0.1"), "{err}");
}

fn reconnect_reestablishes_remote_forward_after_a_cut(kind: PeerKind) {
    needs_port_forwarding(kind);
    let peer = Peer::start(kind);
    let echo = echo_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(peer.addr())).unwrap();
    // A fixed remote port: after the cut the same port must serve again.
    let port = free_port();
    let mut child = spawn(sansh(&peer, proxy.local_addr().port()).args([
        "--reconnect",
        "-N",
        "-R",
        &format!("{port}:127.0.0.1:{echo}"),
        "127.0.0.1",
    ]));
    round_trip(connect_when_up(port, &mut child), 100_000);
    proxy.set(FaultMode::Cut);
    // The peer's listener goes with the old connection; sansh dials again
    // and asks for the port again (again and again while it is refused).
    let t = Instant::now();
    let mut last = String::new();
    while proxy.connections() < 2 || try_round_trip(port).map_err(|e| last = e).is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("sansh exited ({status}): {}", stderr_of(&mut child));
        }
        assert!(t.elapsed() < Duration::from_secs(20), "remote forwarding not back after the cut: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    round_trip(TcpStream::connect(("127.0.0.1", port)).unwrap(), 1_000_000);
    let err = stderr_of(&mut child);
    assert!(err.contains("reconnected to 127.0.0.1"), "{err}");
}

fn ciphers(kind: PeerKind) {
    let peer = Peer::start(kind);
    for cipher in sansh::CipherAlgorithm::ALL {
        let r = sansh(&peer, peer.port())
            .args(["-o", &format!("Ciphers={}", cipher.name()), "127.0.0.1", "echo ok"])
            .run();
        if kind.ciphers().contains(&cipher) {
            assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "ok\n"), "{}: {r:?}", cipher.name());
        } else {
            // dropbear has no AES-GCM, tinysshd nothing but chacha20-poly1305,
            // conch neither: ssh's message, with the peer's offer.
            assert_eq!(r.code, Some(255), "{r:?}");
            let expected =
                format!("Unable to negotiate with 127.0.0.1 port {}: no matching cipher", peer.port());
            assert!(r.stderr.contains(&expected), "{}", r.stderr);
            let offered = kind.ciphers()[0].name();
            assert!(r.stderr.contains("Their offer: ") && r.stderr.contains(offered), "{}", r.stderr);
        }
    }
}

fn identity_file_with_i(kind: PeerKind) {
    let peer = Peer::start(kind);
    let r = Sansh::to(peer.port(), peer.user(), None)
        .args(["-o", "PasswordAuthentication=no", "-i"])
        .arg_path(peer.client_key())
        .args(["127.0.0.1", "echo key"])
        .run();
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "key\n"), "{r:?}\n{}", peer.log());
    // A wrong password and no key: refused, as ssh says it (the methods in
    // the parentheses: tinysshd's is publickey alone).
    let r = Sansh::to(peer.port(), peer.user(), Some("not the password")).args(["127.0.0.1", "true"]).run();
    assert_eq!(r.code, Some(255), "{r:?}");
    assert!(r.stderr.contains(&format!("{}@127.0.0.1: Permission denied (", peer.user())), "{}", r.stderr);
}

/// A peer without port forwarding (tinysshd): `-L` is set up locally, but
/// each connection to it is closed once the peer refuses its channel.
fn local_forward_is_refused(kind: PeerKind) {
    assert!(!kind.port_forwarding(), "{kind:?} forwards ports: see local_forward_carries_data");
    let peer = Peer::start(kind);
    let port = free_port();
    let mut child =
        spawn(sansh(&peer, peer.port()).args(["-N", "-L", &format!("{port}:127.0.0.1:9"), "127.0.0.1"]));
    let mut s = connect_when_up(port, &mut child);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).map_err(|e| e.to_string()), Ok(0), "the refused -L connection stays open");
    // The listener stays, as with ssh; so does the connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(s.read(&mut buf).map_err(|e| e.to_string()), Ok(0));
    assert!(child.0.try_wait().unwrap().is_none(), "sansh ended: {}", stderr_of(&mut child));
    let err = stderr_of(&mut child);
    assert!(err.contains("channel open refused: administratively prohibited"), "{err}\n{}", peer.log());
}

/// A peer without port forwarding (tinysshd): `-R` with
/// ExitOnForwardFailure=yes ends sansh promptly, as ssh says it.
fn remote_forward_is_refused(kind: PeerKind) {
    assert!(!kind.port_forwarding(), "{kind:?} forwards ports: see remote_forward_carries_data");
    let peer = Peer::start(kind);
    let mut child = spawn(sansh(&peer, peer.port()).args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("{}:127.0.0.1:9", free_port()),
        "127.0.0.1",
    ]));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        // tinysshd answers tcpip-forward with UNIMPLEMENTED (RFC 4253
        // §11.4), not REQUEST_FAILURE: sansh must take that as the refusal.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sansh -R still waits for the peer's answer after 10 s: {}\n{}",
            stderr_of(&mut child),
            peer.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(err.contains("Error: remote port forwarding failed for listen port"), "{err}");
}

/// One `#[test]` per (peer, test).
macro_rules! peer_tests {
    ($module:ident, $kind:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($kind)
                }
            )*
        }
    };
}

/// dropbear, asyncssh and conch: every test for a peer with port
/// forwarding and a PTY.
macro_rules! dropbear_asyncssh_and_conch {
    ($($test:ident),* $(,)?) => {
        peer_tests!(dropbear, sansh_interop::peer::PeerKind::Dropbear, [$($test),*]);
        peer_tests!(asyncssh, sansh_interop::peer::PeerKind::AsyncSsh, [$($test),*]);
        peer_tests!(conch, sansh_interop::peer::PeerKind::Conch, [$($test),*]);
    };
}

// conch (PeerKind::Conch) has all these tests need: its lack of server
// keepalive plays no part here, nor do its missing ciphers, which `ciphers`
// expects to be refused.
dropbear_asyncssh_and_conch!(
    exec_exit_codes_and_signals,
    stdin_streams_through_cat,
    pty_with_t,
    local_forward_carries_data,
    remote_forward_carries_data,
    keepalive_detects_a_black_holed_link,
    reconnect_reestablishes_local_forward_after_a_cut,
    reconnect_reestablishes_remote_forward_after_a_cut,
    ciphers,
    identity_file_with_i,
);

// tinysshd (see the capabilities of PeerKind::TinySsh): no port forwarding
// (so none of -L, -R and the --reconnect tests, which check the forwards
// come back; `local_forward_is_refused` instead), no working PTY
// (`pty_with_t` left out), no password (the tests log in with the client key).
peer_tests!(
    tinyssh,
    sansh_interop::peer::PeerKind::TinySsh,
    [
        exec_exit_codes_and_signals,
        stdin_streams_through_cat,
        keepalive_detects_a_black_holed_link,
        ciphers,
        identity_file_with_i,
        local_forward_is_refused,
    ]
);

/// Written for peers without port forwarding: tinysshd only.
mod tinyssh_only {
    /// tinysshd answers the tcpip-forward request with UNIMPLEMENTED, which
    /// sansh takes as the refusal.
    #[test]
    fn remote_forward_is_refused() {
        super::remote_forward_is_refused(sansh_interop::peer::PeerKind::TinySsh)
    }
}

// cli_openssh.rs covers the rest against sshd; this one is written once here.
peer_tests!(
    openssh,
    sansh_interop::peer::PeerKind::OpenSsh,
    [reconnect_reestablishes_remote_forward_after_a_cut]
);
