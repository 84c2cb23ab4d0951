//! The tokio adapter against every real peer (OpenSSH sshd, dropbear,
//! asyncssh, tinysshd, Twisted Conch) on 127.0.0.1: each test is written once and run per
//! peer (the modules at the bottom) where the peer's capabilities
//! ([`PeerKind`]) allow. Exec and exit codes, exit signals, sessions side
//! by side, stdin, PTY size and resize, -L and -R, keepalive both ways,
//! ciphers, kex and host key algorithms, publickey and password
//! authentication. Where a peer lacks something or gets it wrong (dropbear
//! 2022.83: no AES-GCM, no rsa-sha2-512, no cancel-tcpip-forward, sessions
//! closed before their command starts; tinysshd: one session per
//! connection, ed25519 and chacha20-poly1305 only; conch: aes*-ctr only, no
//! probing of idle clients), the test checks what it does.

use std::future::Future;
use std::time::{Duration, Instant};

use sansh::tokio::{
    Client, ClientError, ClientOptions, FaultMode, FaultProxy, HostKeyPolicy, Pool, ReconnectEvent,
    ReconnectingClient, Target,
};
use sansh::{
    CipherAlgorithm, CloseReason, Credential, Error, ExitStatus, HostKeyAlgorithm, Jitter, KexAlgorithm,
    MacAlgorithm, PoolConfig, Pty, ReconnectConfig,
};
use sansh_interop::peer::{Peer, PeerKind, PeerOptions, echo_server, test_data};
use sansh_interop::sshd::KeyKind;
use sansh_interop::{TempDir, free_port};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fails the test instead of hanging when `fut` takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {secs} s"))
}

/// Options that log in with the password (with the client key where the
/// peer takes no password) and trust only the peer's host keys of `kinds`,
/// recorded for `port` (the peer's, or a proxy's).
fn options(peer: &Peer, port: u16, kinds: &[KeyKind], dir: &TempDir) -> ClientOptions {
    let known_hosts = dir.path().join("known_hosts");
    let lines: String = kinds
        .iter()
        .map(|k| {
            sansh::known_hosts::line_to_append("127.0.0.1", port, &peer.host_public_key(*k), None) + "\n"
        })
        .collect();
    std::fs::write(&known_hosts, lines).unwrap();
    let mut o = ClientOptions::new(peer.user());
    if peer.kind.password_auth() {
        o.config.credentials.push(Credential::Password(peer.password().into()));
    } else {
        o.identity_files.push(peer.client_key().to_path_buf());
    }
    o.host_key_policy = HostKeyPolicy::Strict { known_hosts };
    o.use_agent = false;
    o
}

async fn connect(peer: &Peer, dir: &TempDir) -> Client {
    let o = options(peer, peer.port(), &[KeyKind::Ed25519], dir);
    match within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await {
        Ok(c) => c,
        Err(e) => panic!("{:?}: connect: {e}\n{}", peer.kind, peer.log()),
    }
}

/// The client to run the next command on: `client` again, or a new
/// connection where the peer ends a connection with its one session.
async fn for_next_command(peer: &Peer, dir: &TempDir, client: Client) -> Client {
    if peer.kind.multiple_sessions() {
        return client;
    }
    within(10, "the peer ends the connection with its session", client.closed()).await;
    connect(peer, dir).await
}

/// Fails a test that needs `ok` (a capability of `kind`) when run against a
/// peer without it, rather than letting it pass or fail for another reason.
fn needs(kind: PeerKind, ok: bool, what: &str) {
    assert!(ok, "{kind:?} lacks {what}: leave this test out of its list");
}

async fn exec_exit_codes_and_signals(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let out = within(20, "exec", client.exec("echo hi; echo oops >&2; exit 3")).await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.code()),
        (&b"hi\n"[..], &b"oops\n"[..], Some(3)),
        "{}",
        peer.log()
    );
    let client = for_next_command(&peer, &dir, client).await;
    let out = within(20, "exec", client.exec("true")).await.unwrap();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    let client = for_next_command(&peer, &dir, client).await;
    // Every peer reports death by signal as exit-signal (RFC 4254 6.10).
    let out = within(20, "exec", client.exec("kill -TERM $$")).await.unwrap();
    assert!(
        matches!(out.exit, Some(ExitStatus::Signal { ref signal, .. }) if signal == "TERM"),
        "{:?}\n{}",
        out.exit,
        peer.log()
    );
    assert_eq!(out.code(), Some(128 + 15));
    client.disconnect();
}

/// `join_all` for a handful of futures, without a futures-crate dependency.
async fn join_all<F: Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn sessions_side_by_side(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    if !kind.multiple_sessions() {
        // tinysshd: a second session is refused with its reason, and the
        // first one carries on.
        let first = within(10, "open", client.open_session()).await.unwrap();
        within(10, "exec", first.exec("cat")).await.unwrap();
        let second = within(10, "second open", client.open_session()).await;
        let err = second.err().unwrap_or_else(|| panic!("a second session opened\n{}", peer.log()));
        assert!(err.to_string().contains("only one 'session' channel allowed"), "{err}");
        let data = test_data(300_000);
        let (mut reader, mut writer) = tokio::io::split(first);
        let send = async {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        within(30, "cat", async { tokio::join!(send, reader.read_to_end(&mut back)) }).await.1.unwrap();
        assert!(back == data, "cat changed the data");
        return;
    }
    // Every session starts its command before any command ends: see
    // `an_idle_session_outlives_other_commands` for why dropbear needs that.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let ch = within(10, "open", client.open_session()).await.unwrap();
        within(10, "exec", ch.exec("cat")).await.unwrap();
        sessions.push(ch);
    }
    let runs = sessions.into_iter().enumerate().map(|(i, ch)| async move {
        let data = test_data(200_000 * (i + 1));
        let (mut reader, mut writer) = tokio::io::split(ch);
        let expected = data.clone();
        let send = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        });
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        // Keep both halves (the channel) until both directions are done.
        let _writer = send.await.unwrap();
        back == expected
    });
    let same = within(60, "four cats at once", join_all(runs)).await;
    assert_eq!(same, [true; 4], "{}", peer.log());
}

async fn an_idle_session_outlives_other_commands(kind: PeerKind) {
    needs(kind, kind.multiple_sessions(), "several sessions per connection");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    // A session with no command yet, while another runs and ends.
    let mut idle = within(10, "open", client.open_session()).await.unwrap();
    assert_eq!(within(20, "exec", client.exec("true")).await.unwrap().code(), Some(0));
    if kind == PeerKind::Dropbear {
        // dropbear 2022.83 closes every session that has not started a
        // command when any command ends (its issue #321, fixed in 2024.86):
        // the idle session ends without an exit status, and a request on it
        // then fails rather than waiting for an answer that cannot come.
        assert_eq!(within(10, "idle session closed", idle.wait()).await.unwrap(), None);
        assert!(within(10, "exec on a closed session", idle.exec("true")).await.is_err());
    } else {
        within(10, "exec", idle.exec("echo later")).await.unwrap();
        let mut out = String::new();
        within(10, "read", idle.read_to_string(&mut out)).await.unwrap();
        assert_eq!(out, "later\n");
    }
}

async fn parallel_execs_finish_or_fail_but_never_hang(kind: PeerKind) {
    needs(kind, kind.multiple_sessions(), "several sessions per connection");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let mut client = connect(&peer, &dir).await;
    let mut failed = 0;
    for _round in 0..20 {
        let runs = (0..4).map(|i| {
            let client = client.clone();
            async move {
                let out =
                    tokio::time::timeout(Duration::from_secs(10), client.exec(&format!("echo {i}"))).await;
                (i, out)
            }
        });
        for (i, out) in within(30, "parallel execs", join_all(runs)).await {
            match out {
                Err(_) => panic!("exec {i} hung\n{}", peer.log()),
                Ok(Ok(out)) => assert_eq!(out.stdout, format!("{i}\n").as_bytes()),
                // dropbear 2022.83 may close a session between its open and
                // its exec (see above), or trip an assertion over it and
                // drop the connection: then the exec fails, promptly.
                Ok(Err(e)) if kind == PeerKind::Dropbear => {
                    eprintln!("dropbear: exec {i}: {e}");
                    failed += 1;
                }
                Ok(Err(e)) => panic!("exec {i}: {e}\n{}", peer.log()),
            }
        }
        if client.close_reason().is_some() {
            client = connect(&peer, &dir).await;
        }
    }
    eprintln!("{kind:?}: {failed} of 80 parallel execs failed");
}

async fn publickey_and_password_authentication(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    // The key alone.
    let mut o = options(&peer, peer.port(), &[KeyKind::Ed25519], &dir);
    o.config.credentials.clear();
    o.identity_files.push(peer.client_key().to_path_buf());
    let client = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await.unwrap();
    assert_eq!(within(20, "exec", client.exec("echo key")).await.unwrap().stdout, b"key\n");
    client.disconnect();
    // A wrong password: refused (by tinysshd, which takes none, without
    // asking it: publickey is all it offers).
    let mut o = options(&peer, peer.port(), &[KeyKind::Ed25519], &dir);
    o.config.credentials = vec![Credential::Password("not the password".into())];
    o.identity_files.clear();
    let err = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await.unwrap_err();
    assert!(matches!(err, ClientError::Closed(CloseReason::AuthFailed { .. })), "{err}\n{}", peer.log());
    // An unknown host key: refused before authentication.
    let mut o = options(&peer, peer.port(), &[], &dir);
    o.host_key_policy = HostKeyPolicy::Strict { known_hosts: dir.path().join("empty") };
    std::fs::write(dir.path().join("empty"), "").unwrap();
    let err = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await.unwrap_err();
    assert!(matches!(err, ClientError::Closed(CloseReason::HostKeyRejected)), "{err}");
}

async fn stdin_streams_through_cat_and_sha256sum(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let data = test_data(4_000_000);
    // `cat`: 4 MB out and back at once (windows in both directions).
    let ch = client.open_session().await.unwrap();
    ch.exec("cat").await.unwrap();
    let echoed = within(60, "cat round trip", async {
        let (mut reader, mut writer) = tokio::io::split(ch);
        let send = async {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        };
        let receive = async {
            let mut back = Vec::new();
            reader.read_to_end(&mut back).await.unwrap();
            back
        };
        let (writer, back) = tokio::join!(send, receive);
        (reader.unsplit(writer), back)
    })
    .await;
    let (ch, back) = echoed;
    assert_eq!(back.len(), data.len(), "{}", peer.log());
    assert!(back == data, "cat changed the data");
    assert_eq!(within(10, "exit", ch.wait()).await.unwrap(), Some(ExitStatus::Code(0)));
    let client = for_next_command(&peer, &dir, client).await;
    // `sha256sum`: stdin then EOF, a digest back.
    let out = within(60, "sha256sum", client.exec_with_input("sha256sum", &data)).await.unwrap();
    let expected = format!("{:x}", Sha256::digest(&data));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&expected), "{out:?}");
    assert_eq!(out.code(), Some(0));
}

/// Reads from `ch` until the output so far contains `needle`.
async fn read_until(ch: &mut sansh::tokio::Channel, out: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(out).contains(needle) {
        let n = ch.read(&mut buf).await.unwrap();
        assert!(n > 0, "EOF before {needle:?}; got {:?}", String::from_utf8_lossy(out));
        out.extend_from_slice(&buf[..n]);
    }
}

async fn pty_size_and_resize(kind: PeerKind) {
    needs(kind, kind.pty(), "a working PTY");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let mut ch = client.open_session().await.unwrap();
    let pty = Pty { term: "xterm-256color".into(), cols: 100, rows: 30, ..Pty::default() };
    within(10, "pty-req", ch.request_pty(pty)).await.unwrap();
    // The size, then (after our resize, which the line we send follows) again.
    ch.exec("tty; echo $TERM; stty size; read line; stty size").await.unwrap();
    let mut out = Vec::new();
    // conch applies the pty-req's size to a shell only (see
    // PeerKind::pty_size_on_exec): a command sees no size until a resize.
    let first = if kind.pty_size_on_exec() { "30 100\r\n" } else { "0 0\r\n" };
    within(20, "first stty size", read_until(&mut ch, &mut out, first)).await;
    ch.resize(120, 40).await.unwrap();
    ch.write_all(b"go\n").await.unwrap();
    within(20, "stty size after the resize", read_until(&mut ch, &mut out, "40 120\r\n")).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("xterm-256color\r\n"), "{text:?}");
    assert_eq!(within(10, "exit", ch.wait()).await.unwrap(), Some(ExitStatus::Code(0)), "{text:?}");
}

/// Sends `len` bytes through `port` to the echo server behind it and checks
/// they come back unchanged. With `half_close`, the sending side is shut
/// down once all is written (as the write half's drop does), before the
/// echo is read; else it stays open until then (for a remote forward of a
/// peer without [`PeerKind::remote_forward_half_close`]).
async fn echo_round_trip(port: u16, len: usize, half_close: bool) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = test_data(len);
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        // Dropped here, the write half sends FIN.
        if half_close { None } else { Some(w) }
    });
    let mut back = vec![0u8; len];
    within(30, "echo round trip", r.read_exact(&mut back)).await.unwrap();
    writer.await.unwrap();
    assert!(back == expected, "the echo through the forwarding differs");
}

async fn local_forward_carries_data_both_ways(kind: PeerKind) {
    needs(kind, kind.port_forwarding(), "port forwarding");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let echo = echo_server();
    let fwd = client.local_forward("127.0.0.1:0".parse().unwrap(), "127.0.0.1", echo).await.unwrap();
    let port = fwd.local_addr().port();
    // Two connections at once, each its own direct-tcpip channel.
    tokio::join!(echo_round_trip(port, 2_000_000, true), echo_round_trip(port, 300_000, true));
    echo_round_trip(port, 10, true).await;
}

/// Waits until nothing listens on 127.0.0.1:`port` any more.
async fn wait_not_listening(port: u16) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "still listening on {port} after the cancel");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remote_forward_carries_data_both_ways(kind: PeerKind) {
    needs(kind, kind.port_forwarding(), "port forwarding");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let echo = echo_server();
    let half_close = kind.remote_forward_half_close();
    // A port we choose.
    let chosen = free_port();
    let fixed =
        within(10, "tcpip-forward", client.remote_forward("127.0.0.1", u32::from(chosen), "127.0.0.1", echo))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    assert_eq!(fixed.bound_port(), u32::from(chosen));
    // The peer listens on this machine: connect to it directly.
    tokio::join!(
        echo_round_trip(chosen, 2_000_000, half_close),
        echo_round_trip(chosen, 300_000, half_close)
    );
    let mut forwards = vec![(fixed, chosen)];
    // Port 0: the peer picks one and says which (not asked of conch, which
    // drops the connection: see PeerKind::remote_forward_port_zero).
    if kind.remote_forward_port_zero() {
        let any = within(10, "tcpip-forward", client.remote_forward("127.0.0.1", 0, "127.0.0.1", echo))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
        let port = u16::try_from(any.bound_port()).unwrap();
        assert_ne!(port, 0);
        echo_round_trip(port, 300_000, half_close).await;
        forwards.push((any, port));
    }
    for (rf, port) in forwards {
        let cancelled = within(10, "cancel-tcpip-forward", rf.cancel()).await;
        if kind == PeerKind::Dropbear {
            // dropbear 2022.83 cannot cancel a remote forwarding: its
            // cancel-tcpip-forward compares against a field it leaves NULL
            // for loopback listeners (fixed upstream after 2022.83), so it
            // refuses, and the port stays open until the connection ends.
            assert!(matches!(cancelled, Err(ClientError::Refused(_))), "{cancelled:?}");
            echo_round_trip(port, 1000, half_close).await;
        } else {
            cancelled.unwrap_or_else(|e| panic!("cancel {port}: {e}\n{}", peer.log()));
            wait_not_listening(port).await;
        }
    }
    // The connection still works.
    assert_eq!(within(20, "exec", client.exec("echo still")).await.unwrap().stdout, b"still\n");
}

async fn keepalive_detects_a_black_holed_link(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let proxy = FaultProxy::start(peer.addr()).await.unwrap();
    let port = proxy.local_addr().port();
    let mut o = options(&peer, port, &[KeyKind::Ed25519], &dir);
    o.config.transport.keepalive.probe_interval = Some(Duration::from_secs(1));
    o.config.transport.keepalive.probe_count_max = 2;
    let client = within(30, "connect", Client::connect("127.0.0.1", port, o)).await.unwrap();
    // A healthy idle link: the peer answers keepalive@openssh.com (with
    // REQUEST_FAILURE, which counts), so nothing closes.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(client.close_reason(), None, "{}", peer.log());
    let stats = client.stats().await.unwrap();
    assert!(stats.probes_answered >= 2, "{stats:?}");
    // Black hole: no FIN, nothing delivered; only the probes can tell.
    proxy.set(FaultMode::BlackHole);
    let t = Instant::now();
    let reason = within(15, "keepalive timeout", client.closed()).await;
    let waited = t.elapsed();
    assert!(matches!(reason, CloseReason::KeepaliveTimeout { unanswered: 2 }), "{reason}");
    // interval × (count_max + 1) + 1 s.
    assert!(waited <= Duration::from_secs(4), "took {waited:?}");
}

async fn server_keepalive_probes_are_answered(kind: PeerKind) {
    needs(kind, kind.server_keepalive(), "probes of idle clients");
    // The peer probes every second and hangs up after 2 (OpenSSH, asyncssh)
    // or 3 (dropbear) unanswered probes: an idle client must answer them.
    let peer =
        Peer::start_with(kind, PeerOptions { server_keepalive_secs: Some(1), ..PeerOptions::default() });
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let before = client.stats().await.unwrap();
    // With an interval of 1 s, sshd's probes were seen to come up to 2 s apart
    // (its client-alive clock is coarse); 6.5 s covers three of them and is
    // twice the time after which a client that never answers is dropped.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let after = client.stats().await.unwrap();
    assert_eq!(client.close_reason(), None, "{}", peer.log());
    // The peer did probe (we sent nothing, so whatever arrived is its probes).
    assert!(after.packets_received >= before.packets_received + 3, "{before:?}\n{after:?}");
    assert_eq!(within(20, "exec", client.exec("echo alive")).await.unwrap().stdout, b"alive\n");
}

async fn ciphers_and_kex_methods(kind: PeerKind) {
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    for cipher in CipherAlgorithm::ALL {
        let mut o = options(&peer, peer.port(), &[KeyKind::Ed25519], &dir);
        o.config.transport.ciphers = vec![cipher];
        let result = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await;
        if kind.ciphers().contains(&cipher) {
            let client = result.unwrap_or_else(|e| panic!("{}: {e}\n{}", cipher.name(), peer.log()));
            let out =
                within(30, "exec", client.exec_with_input("sha256sum", &test_data(300_000))).await.unwrap();
            let expected = format!("{:x}", Sha256::digest(test_data(300_000)));
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(&expected), "{}", cipher.name());
            client.disconnect();
        } else {
            // dropbear has no AES-GCM, tinysshd nothing but chacha20-poly1305,
            // conch neither: negotiation fails, saying what it offers.
            match result {
                Err(ClientError::Closed(CloseReason::Error(Error::NoCommonAlgorithm { server, .. }))) => {
                    assert!(!server.contains(cipher.name()), "{server}");
                    assert!(server.contains(kind.ciphers()[0].name()), "{server}");
                }
                other => panic!("{}: expected no common cipher, got {other:?}", cipher.name()),
            }
        }
    }
    for kex in KexAlgorithm::ALL {
        let mut o = options(&peer, peer.port(), &[KeyKind::Ed25519], &dir);
        o.config.transport.kex_algorithms = vec![kex];
        let client = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", kex.name(), peer.log()));
        assert_eq!(within(20, "exec", client.exec("echo ok")).await.unwrap().stdout, b"ok\n");
        client.disconnect();
    }
}

/// Each of our MACs with an aes*-ctr cipher: those the peer offers carry a
/// command's input and output; the others find no common MAC.
async fn ctr_macs(kind: PeerKind) {
    let cipher = *kind
        .ciphers()
        .iter()
        .find(|c| c.name().ends_with("-ctr"))
        .unwrap_or_else(|| panic!("{kind:?} has no aes*-ctr cipher: leave this test out of its list"));
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    for mac in MacAlgorithm::ALL {
        let mut o = options(&peer, peer.port(), &[KeyKind::Ed25519], &dir);
        o.config.transport.ciphers = vec![cipher];
        o.config.transport.macs = vec![mac];
        let result = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await;
        if kind.macs().contains(&mac) {
            let client = result.unwrap_or_else(|e| panic!("{}: {e}\n{}", mac.name(), peer.log()));
            let data = test_data(300_000);
            let out = within(30, "exec", client.exec_with_input("sha256sum", &data)).await.unwrap();
            let expected = format!("{:x}", Sha256::digest(&data));
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(&expected), "{}", mac.name());
            client.disconnect();
        } else {
            match result {
                Err(ClientError::Closed(CloseReason::Error(Error::NoCommonAlgorithm { server, .. }))) => {
                    assert!(!server.contains(mac.name()), "{server}");
                }
                other => panic!("{}: expected no common MAC, got {other:?}", mac.name()),
            }
        }
    }
}

/// Which of our host key algorithms each peer signs with, given keys of
/// every kind it can serve.
fn host_key_algorithm_supported(kind: PeerKind, alg: HostKeyAlgorithm) -> bool {
    match (kind, alg) {
        // dropbear 2022.83 signs with RSA as rsa-sha2-256 or ssh-rsa only.
        (PeerKind::Dropbear, HostKeyAlgorithm::RsaSha512) => false,
        _ => kind.host_key_kinds().contains(&key_kind(alg)),
    }
}

fn key_kind(alg: HostKeyAlgorithm) -> KeyKind {
    match alg {
        HostKeyAlgorithm::Ed25519 => KeyKind::Ed25519,
        HostKeyAlgorithm::EcdsaP256 => KeyKind::EcdsaP256,
        HostKeyAlgorithm::EcdsaP384 => KeyKind::EcdsaP384,
        HostKeyAlgorithm::EcdsaP521 => KeyKind::EcdsaP521,
        HostKeyAlgorithm::RsaSha512 | HostKeyAlgorithm::RsaSha256 => KeyKind::Rsa,
    }
}

async fn host_key_algorithms(kind: PeerKind) {
    // dropbear serves at most four host keys: P-521 gets a server of its own.
    let key_sets = match kind {
        PeerKind::Dropbear => vec![
            KeyKind::ALL.into_iter().filter(|k| *k != KeyKind::EcdsaP521).collect(),
            vec![KeyKind::EcdsaP521],
        ],
        _ => vec![kind.host_key_kinds().to_vec()],
    };
    for host_keys in key_sets {
        host_key_algorithms_with(kind, host_keys).await;
    }
}

async fn host_key_algorithms_with(kind: PeerKind, host_keys: Vec<KeyKind>) {
    // The algorithms of these keys, and those of kinds the peer cannot serve
    // at all (tinysshd: all but ed25519), which must find no common algorithm.
    let cannot_serve = |a: &HostKeyAlgorithm| !kind.host_key_kinds().contains(&key_kind(*a));
    let algorithms: Vec<_> = HostKeyAlgorithm::ALL
        .into_iter()
        .filter(|a| {
            host_keys.contains(&key_kind(*a)) || (host_keys.contains(&KeyKind::Ed25519) && cannot_serve(a))
        })
        .collect();
    let peer = Peer::start_with(kind, PeerOptions { host_keys, ..PeerOptions::default() });
    let dir = TempDir::new("peer-kh");
    for alg in algorithms {
        // Only this algorithm, and only the key of its kind is trusted (the
        // ed25519 key where the peer has none of its kind): the connection
        // succeeds only if the peer signed with that key.
        let trusted = if cannot_serve(&alg) { KeyKind::Ed25519 } else { key_kind(alg) };
        let mut o = options(&peer, peer.port(), &[trusted], &dir);
        o.config.transport.host_key_algorithms = vec![alg];
        let result = within(30, "connect", Client::connect("127.0.0.1", peer.port(), o)).await;
        if host_key_algorithm_supported(kind, alg) {
            let client = result.unwrap_or_else(|e| panic!("{alg:?}: {e}\n{}", peer.log()));
            assert_eq!(within(20, "exec", client.exec("echo ok")).await.unwrap().stdout, b"ok\n");
            client.disconnect();
        } else {
            assert!(
                matches!(
                    result,
                    Err(ClientError::Closed(CloseReason::Error(Error::NoCommonAlgorithm { .. })))
                ),
                "{alg:?}: expected no common host key algorithm, got {result:?}"
            );
        }
    }
}

/// 50 concurrent commands through a `Pool` of at most 5 connections with
/// 10 channels each (sshd's default MaxSessions).
async fn pooled_concurrent_commands(kind: PeerKind) {
    needs(kind, kind.multiple_sessions(), "several sessions per connection");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let pool = Pool::new(PoolConfig {
        max_connections: 5,
        max_connections_per_key: 5,
        max_channels_per_connection: 10,
        ..PoolConfig::default()
    });
    let target =
        Target::new("127.0.0.1", peer.port(), options(&peer, peer.port(), &[KeyKind::Ed25519], &dir));
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let (pool, target) = (pool.clone(), target.clone());
            tokio::spawn(async move { pool.exec(&target, &format!("sleep 0.3; echo {i}")).await })
        })
        .collect();
    for (i, r) in within(60, "50 pooled commands", join_all(runs.into_iter())).await.into_iter().enumerate() {
        let out = r.unwrap().unwrap_or_else(|e| panic!("{kind:?}: command {i}: {e}\n{}", peer.log()));
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
    }
    let s = pool.stats();
    eprintln!("{kind:?}: {s:?}");
    assert!(s.leases == 0 && s.ready <= 5, "{s:?}");
    assert!(s.leases_reused >= 45, "connections were shared: {s:?}");
    // Every peer, dropbear too: 5 dials, none failed or lost. (dropbear
    // refuses a 6th unauthenticated connection from one address; the pool's
    // 5 concurrent dials fit only because the harness waits for its
    // readiness probe to be gone, see `wait_for_probe_child`.)
    assert!(s.dials <= 5 && s.evictions == 0, "{s:?}\n{}", peer.log());
}

/// A `ReconnectingClient` behind a proxy that cuts the TCP connection: it
/// reports the loss, dials again (re-authenticating), and its local forward
/// carries data again through the new connection.
async fn reconnecting_client_survives_a_cut(kind: PeerKind) {
    needs(kind, kind.port_forwarding(), "port forwarding");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let proxy = FaultProxy::start(peer.addr()).await.unwrap();
    let port = proxy.local_addr().port();
    let o = options(&peer, port, &[KeyKind::Ed25519], &dir);
    let config = ReconnectConfig {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        max_retries: Some(10),
        jitter: Jitter::Equal,
        ..ReconnectConfig::default()
    };
    let mut rc = ReconnectingClient::start("127.0.0.1", port, o, config);
    let mut events = rc.events();
    let echo = echo_server();
    let fwd = rc.local_forward("127.0.0.1:0".parse().unwrap(), "127.0.0.1", echo).await.unwrap();
    let connected = within(30, "connected", async {
        loop {
            if let ReconnectEvent::Connected { .. } = events.recv().await.unwrap() {
                break;
            }
        }
    });
    connected.await;
    echo_round_trip(fwd.port(), 100_000, true).await;
    proxy.set(FaultMode::Cut);
    proxy.set(FaultMode::Pass);
    let mut seen = Vec::new();
    within(30, "lost, then connected again", async {
        loop {
            let e = events.recv().await.unwrap();
            let done = matches!(e, ReconnectEvent::Connected { .. });
            seen.push(e);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(matches!(seen.first(), Some(ReconnectEvent::Lost { .. })), "{seen:?}");
    echo_round_trip(fwd.port(), 100_000, true).await;
    assert_eq!(within(20, "exec", rc.exec("echo back")).await.unwrap().stdout, b"back\n");
    assert!(proxy.connections() >= 2);
    rc.stop();
}

/// A remote forward on a fixed port comes back after a cut, even when the
/// port is taken at the moment the new connection asks for it: the refusal
/// is retried, and the forward is in place once the port is free again.
async fn reconnecting_client_restores_remote_forward(kind: PeerKind) {
    needs(kind, kind.port_forwarding(), "port forwarding");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let proxy = FaultProxy::start(peer.addr()).await.unwrap();
    let port = proxy.local_addr().port();
    let o = options(&peer, port, &[KeyKind::Ed25519], &dir);
    // At least 1.5 s before the redial: time for the blocker to take the port.
    let config = ReconnectConfig {
        initial_delay: Duration::from_secs(3),
        max_delay: Duration::from_secs(3),
        max_retries: Some(10),
        jitter: Jitter::Equal,
        ..ReconnectConfig::default()
    };
    let rc = ReconnectingClient::start("127.0.0.1", port, o, config);
    let mut events = rc.events();
    let echo = echo_server();
    let chosen = free_port();
    within(30, "connected", async {
        while !matches!(events.recv().await.unwrap(), ReconnectEvent::Connected { .. }) {}
    })
    .await;
    within(10, "tcpip-forward", rc.remote_forward("127.0.0.1", u32::from(chosen), "127.0.0.1", echo))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    echo_round_trip(chosen, 100_000, kind.remote_forward_half_close()).await;

    proxy.set(FaultMode::Cut);
    proxy.set(FaultMode::Pass);
    // Another client takes the port as soon as the old session let it go;
    // its forward leads to a closed port, so only ours echoes.
    let blocker_dir = TempDir::new("peer-kh-blocker");
    let blocker = connect(&peer, &blocker_dir).await;
    let dead_end = free_port();
    within(20, "the old session frees the port", async {
        while blocker.remote_forward("127.0.0.1", u32::from(chosen), "127.0.0.1", dead_end).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut seen = Vec::new();
    within(30, "reconnected, and the forward refused", async {
        loop {
            let e = events.recv().await.unwrap();
            eprintln!("event: {e:?}");
            let done = matches!(e, ReconnectEvent::ForwardRefused { .. });
            seen.push(e);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(seen.iter().any(|e| matches!(e, ReconnectEvent::Connected { .. })), "{seen:?}");
    // The port comes free: a retry gets it.
    blocker.disconnect();
    within(30, "the forward is established again", async {
        loop {
            let e = events.recv().await.unwrap();
            seen.push(e.clone());
            if let ReconnectEvent::ForwardEstablished { bind } = e {
                assert_eq!(bind, format!("127.0.0.1:{chosen}"));
                break;
            }
        }
    })
    .await;
    echo_round_trip(chosen, 100_000, kind.remote_forward_half_close()).await;
    eprintln!("events: {seen:?}");
    rc.stop();
}

/// One `#[tokio::test]` per (peer, test).
macro_rules! peer_tests {
    ($module:ident, $kind:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($kind).await
                }
            )*
        }
    };
}

macro_rules! every_full_peer {
    ($($test:ident),* $(,)?) => {
        peer_tests!(openssh, sansh_interop::peer::PeerKind::OpenSsh, [$($test),*]);
        peer_tests!(dropbear, sansh_interop::peer::PeerKind::Dropbear, [$($test),*]);
        peer_tests!(asyncssh, sansh_interop::peer::PeerKind::AsyncSsh, [$($test),*]);
    };
}

every_full_peer!(
    exec_exit_codes_and_signals,
    publickey_and_password_authentication,
    sessions_side_by_side,
    an_idle_session_outlives_other_commands,
    parallel_execs_finish_or_fail_but_never_hang,
    stdin_streams_through_cat_and_sha256sum,
    pty_size_and_resize,
    local_forward_carries_data_both_ways,
    remote_forward_carries_data_both_ways,
    keepalive_detects_a_black_holed_link,
    server_keepalive_probes_are_answered,
    ciphers_and_kex_methods,
    ctr_macs,
    host_key_algorithms,
    pooled_concurrent_commands,
    reconnecting_client_survives_a_cut,
    reconnecting_client_restores_remote_forward,
);

// Twisted Conch, where its capabilities (PeerKind::Conch) allow: everything
// but `server_keepalive_probes_are_answered` (conch cannot probe idle
// clients). `ciphers_and_kex_methods` checks chacha20-poly1305 and AES-GCM
// are refused, `ctr_macs` the -etm MACs; the PTY test expects no size
// before the resize, the -R test no port 0 and no half-close (see
// PeerKind::pty_size_on_exec, remote_forward_port_zero,
// remote_forward_half_close).
peer_tests!(
    conch,
    sansh_interop::peer::PeerKind::Conch,
    [
        exec_exit_codes_and_signals,
        publickey_and_password_authentication,
        sessions_side_by_side,
        an_idle_session_outlives_other_commands,
        parallel_execs_finish_or_fail_but_never_hang,
        stdin_streams_through_cat_and_sha256sum,
        pty_size_and_resize,
        local_forward_carries_data_both_ways,
        remote_forward_carries_data_both_ways,
        keepalive_detects_a_black_holed_link,
        ciphers_and_kex_methods,
        ctr_macs,
        host_key_algorithms,
        pooled_concurrent_commands,
        reconnecting_client_survives_a_cut,
        reconnecting_client_restores_remote_forward,
    ]
);

// tinysshd, where its capabilities (PeerKind::TinySsh) allow. Left out: the
// idle session, parallel execs and the pool (one session per connection,
// which ends with it), the PTY (tinysshd's pty race), -L and -R and the
// ReconnectingClient tests (which check the forwards come back: no port
// forwarding), server keepalive (it never probes), `ctr_macs` (no aes*-ctr). The keepalive test (tinysshd
// answers probes with UNIMPLEMENTED) and a -R refusal are in `tinyssh_only` below. `sessions_side_by_side`
// checks the second session is refused; the password in
// `publickey_and_password_authentication` is refused without being asked.
peer_tests!(
    tinyssh,
    sansh_interop::peer::PeerKind::TinySsh,
    [
        exec_exit_codes_and_signals,
        publickey_and_password_authentication,
        sessions_side_by_side,
        stdin_streams_through_cat_and_sha256sum,
        ciphers_and_kex_methods,
        host_key_algorithms,
    ]
);

/// A peer without port forwarding (tinysshd): the tcpip-forward request is
/// refused, promptly. tinysshd answers it with UNIMPLEMENTED (RFC 4253
/// §11.4) rather than REQUEST_FAILURE.
async fn remote_forward_is_refused(kind: PeerKind) {
    assert!(!kind.port_forwarding(), "{kind:?} forwards ports: see remote_forward_carries_data_both_ways");
    let peer = Peer::start(kind);
    let dir = TempDir::new("peer-kh");
    let client = connect(&peer, &dir).await;
    let result = within(10, "tcpip-forward", client.remote_forward("127.0.0.1", 0, "127.0.0.1", 9)).await;
    assert!(result.is_err(), "{:?}\n{}", result.map(|f| f.bound_port()), peer.log());
}

/// Against tinysshd only (see above).
mod tinyssh_only {
    /// tinysshd answers keepalive@openssh.com with UNIMPLEMENTED: that
    /// counts as the probe's answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keepalive_detects_a_black_holed_link() {
        super::keepalive_detects_a_black_holed_link(sansh_interop::peer::PeerKind::TinySsh).await
    }

    /// The tcpip-forward request, answered with UNIMPLEMENTED, is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_forward_is_refused() {
        super::remote_forward_is_refused(sansh_interop::peer::PeerKind::TinySsh).await
    }
}
