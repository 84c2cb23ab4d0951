//! Channels against OpenSSH sshd on 127.0.0.1: exec, signals, exit-signal
//! and core dumps, a 1 GiB stream across rekeys, PTY (window size, terminal
//! modes), env, the sftp subsystem, 20 sessions running at once, forwarding.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use sansh::{ChannelKind, ChannelOptions, ChannelRequest, ClientConfig, Credential, Event, ExitStatus, Pty};
use sansh_interop::driver::{Driver, Flow};
use sansh_interop::sshd::{Sshd, SshdOptions};
use sansh_interop::{TEST_PASSWORD, TEST_USER, ensure_test_user};
use sha2::{Digest, Sha256};

fn sshd(extra: &[&str]) -> Sshd {
    ensure_test_user();
    Sshd::start(SshdOptions {
        config: extra.iter().map(|s| s.to_string()).collect(),
        ..SshdOptions::default()
    })
}

fn login(sshd: &Sshd) -> Driver {
    let cfg = ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]);
    Driver::login(sshd.addr(), cfg).unwrap_or_else(|e| panic!("login: {e}\n{}", sshd.log()))
}

#[test]
fn exec_stdout_stderr_exit_status_and_signal_death() {
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    let out = d.exec("echo out; echo err >&2; exit 7", b"", Duration::from_secs(20)).unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit, Some(ExitStatus::Code(7)));
    // stdin reaches the command.
    let out = d.exec("tr a-z A-Z", b"piped through\n", Duration::from_secs(20)).unwrap();
    assert_eq!(out.stdout, b"PIPED THROUGH\n");
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    // Killed by a signal: exit-signal TERM.
    let out = d.exec("kill -TERM $$", b"", Duration::from_secs(20)).unwrap();
    assert!(
        matches!(&out.exit, Some(ExitStatus::Signal { signal, .. }) if signal == "TERM"),
        "{:?}",
        out.exit
    );
}

#[test]
fn one_gib_stream_intact_across_sshd_rekeys() {
    // sshd rekeys every 64 MiB; the stream's own SHA-256 comes on stderr.
    let sshd = sshd(&["RekeyLimit 64M"]);
    for cipher in [sansh::CipherAlgorithm::ChaCha20Poly1305, sansh::CipherAlgorithm::Aes128Gcm] {
        let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]);
        cfg.transport.ciphers = vec![cipher];
        let mut d = Driver::login(sshd.addr(), cfg).unwrap();
        let ch = d.conn.open_session(ChannelOptions::default()).unwrap();
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut stderr = Vec::new();
        let mut rekeys = 0;
        let cmd = "head -c 1G /dev/urandom | tee >(sha256sum >&2)";
        let started = std::time::Instant::now();
        d.run_until(Duration::from_secs(600), |conn, e| {
            match e {
                Event::ChannelOpened { .. } => {
                    conn.exec(ch, &format!("bash -c '{cmd}'")).unwrap();
                }
                Event::ChannelData { data, .. } => {
                    hasher.update(data);
                    received += data.len() as u64;
                }
                Event::ChannelExtendedData { data, .. } => stderr.extend_from_slice(data),
                Event::KexCompleted { rekey: true, .. } => rekeys += 1,
                Event::ChannelClosed { .. } => return Flow::Done,
                _ => {}
            }
            Flow::Continue
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        let ours = format!("{:x}", hasher.finalize());
        let theirs = String::from_utf8_lossy(&stderr);
        assert_eq!(received, 1 << 30);
        assert!(theirs.starts_with(&ours), "sha256 mismatch: ours {ours}, sshd's {theirs}");
        // 1 GiB at 64 MiB per key: sshd rekeyed about 16 times.
        assert!(rekeys >= 15, "{rekeys} rekeys");
        eprintln!("ok: {} 1 GiB intact in {:?} across {rekeys} rekeys", cipher.name(), started.elapsed());
    }
}

#[test]
fn pty_shell_sees_window_change() {
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    let ch = d.conn.open_session(ChannelOptions::default()).unwrap();
    let mut output = Vec::new();
    let mut step = 0;
    d.run_until(Duration::from_secs(30), |conn, e| {
        match e {
            Event::ChannelOpened { .. } => {
                let pty = Pty { term: "xterm".into(), cols: 80, rows: 24, ..Pty::default() };
                conn.channel_request(ch, &ChannelRequest::Pty(pty), true).unwrap();
                conn.channel_request(ch, &ChannelRequest::Shell, true).unwrap();
            }
            Event::ChannelRequestResult { success, .. } => {
                assert!(success, "pty-req/shell refused");
                step += 1;
                if step == 2 {
                    conn.channel_write(ch, b"stty size; echo MARK1\n").unwrap();
                }
            }
            Event::ChannelData { data, .. } => {
                output.extend_from_slice(data);
                let text = String::from_utf8_lossy(&output);
                if step == 2 && text.matches("MARK1").count() >= 2 {
                    step = 3;
                    let wc = ChannelRequest::WindowChange { cols: 123, rows: 45, width_px: 0, height_px: 0 };
                    conn.channel_request(ch, &wc, false).unwrap();
                    conn.channel_write(ch, b"stty size; echo MARK2; exit\n").unwrap();
                }
            }
            Event::ChannelClosed { .. } => return Flow::Done,
            _ => {}
        }
        Flow::Continue
    })
    .unwrap();
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("24 80"), "{text}");
    assert!(text.contains("45 123"), "{text}");
}

#[test]
fn env_is_honoured_where_accept_env_allows() {
    let sshd = sshd(&["AcceptEnv SANSH_*"]);
    let mut d = login(&sshd);
    let ch = d.conn.open_session(ChannelOptions::default()).unwrap();
    let mut results = Vec::new();
    let mut out = Vec::new();
    d.run_until(Duration::from_secs(20), |conn, e| {
        match e {
            Event::ChannelOpened { .. } => {
                let env = |n: &str, v: &str| ChannelRequest::Env { name: n.into(), value: v.into() };
                conn.channel_request(ch, &env("SANSH_GREETING", "hello from env"), true).unwrap();
                conn.channel_request(ch, &env("NOT_ACCEPTED", "x"), true).unwrap();
                conn.exec(ch, "echo \"$SANSH_GREETING|$NOT_ACCEPTED\"").unwrap();
            }
            Event::ChannelRequestResult { success, .. } => results.push(*success),
            Event::ChannelData { data, .. } => out.extend_from_slice(data),
            Event::ChannelClosed { .. } => return Flow::Done,
            _ => {}
        }
        Flow::Continue
    })
    .unwrap();
    assert_eq!(results, [true, false, true]);
    assert_eq!(out, b"hello from env|\n");
}

/// A directory every user may write to (the test user's commands meet there).
fn shared_dir(label: &str) -> sansh_interop::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = sansh_interop::TempDir::new(label);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn twenty_exec_channels_at_once() {
    const N: usize = 20;
    let sshd = sshd(&["MaxSessions 20"]);
    let mut d = login(&sshd);
    // A barrier: each command marks its start and waits until all N have
    // started, so none can finish unless all N run at the same time. Then
    // each sleeps its own time, the first opened the longest.
    let barrier = shared_dir("barrier");
    let chans: Vec<_> = (0..N).map(|_| d.conn.open_session(ChannelOptions::default()).unwrap()).collect();
    let mut outputs = vec![Vec::new(); N];
    let mut exits = vec![None; N];
    let mut close_order = Vec::new();
    d.run_until(Duration::from_secs(90), |conn, e| {
        let idx = |c: &sansh::ChannelId| chans.iter().position(|x| x == c).unwrap();
        match e {
            Event::ChannelOpened { channel } => {
                let i = idx(channel);
                let dir = barrier.path().display();
                let sleep = format!("{}.{:02}", (N - 1 - i) / 10, (N - 1 - i) % 10 * 10);
                let cmd = format!(
                    "touch {dir}/{i}; n=0; while [ $(ls {dir} | wc -l) -lt {N} ]; do \
                     n=$((n+1)); [ $n -gt 600 ] && {{ echo channel {i} alone; exit 1; }}; sleep 0.05; done; \
                     sleep {sleep}; echo channel {i}"
                );
                conn.exec(*channel, &cmd).unwrap();
            }
            Event::ChannelOpenFailed { description, .. } => panic!("open failed: {description}"),
            Event::ChannelData { channel, data } => outputs[idx(channel)].extend_from_slice(data),
            Event::ChannelExit { channel, status } => exits[idx(channel)] = Some(status.clone()),
            Event::ChannelClosed { channel, .. } => {
                close_order.push(idx(channel));
                if close_order.len() == N {
                    return Flow::Done;
                }
            }
            _ => {}
        }
        Flow::Continue
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    for i in 0..N {
        assert_eq!(String::from_utf8_lossy(&outputs[i]), format!("channel {i}\n"));
        assert_eq!(exits[i], Some(ExitStatus::Code(0)));
    }
    // Channel 0 slept 1.9 s longer than channel 19 after the barrier.
    let at = |i| close_order.iter().position(|&c| c == i).unwrap();
    assert!(at(N - 1) < at(0), "close order {close_order:?}");
}

/// Runs `command` on a PTY with `modes`; returns what the PTY showed.
fn on_pty(d: &mut Driver, modes: Vec<(u8, u32)>, command: &str) -> String {
    let ch = d.conn.open_session(ChannelOptions::default()).unwrap();
    let mut output = Vec::new();
    d.run_until(Duration::from_secs(20), |conn, e| {
        match e {
            Event::ChannelOpened { channel } if *channel == ch => {
                let pty =
                    Pty { term: "xterm".into(), cols: 80, rows: 24, modes: modes.clone(), ..Pty::default() };
                conn.channel_request(ch, &ChannelRequest::Pty(pty), true).unwrap();
                conn.exec(ch, command).unwrap();
            }
            Event::ChannelRequestResult { channel, success, .. } if *channel == ch => {
                assert!(success, "pty-req/exec refused")
            }
            Event::ChannelData { channel, data } if *channel == ch => output.extend_from_slice(data),
            Event::ChannelClosed { channel, .. } if *channel == ch => return Flow::Done,
            _ => {}
        }
        Flow::Continue
    })
    .unwrap();
    String::from_utf8_lossy(&output).into_owned()
}

#[test]
fn pty_terminal_modes_reach_the_terminal() {
    use sansh::channel::tty;
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    // Without modes: the terminal's defaults.
    let plain = on_pty(&mut d, Vec::new(), "stty -a");
    assert!(plain.contains("intr = ^C;"), "{plain}");
    assert!(plain.contains(" echo "), "{plain}");
    // ECHO off, ^E to interrupt, ^D to erase, 9600 baud: as sshd applied them.
    let modes = vec![
        (tty::ECHO, 0),
        (tty::VINTR, 0x05),
        (tty::VERASE, 0x04),
        (tty::TTY_OP_ISPEED, 9600),
        (tty::TTY_OP_OSPEED, 9600),
    ];
    let set = on_pty(&mut d, modes, "stty -a");
    assert!(set.contains("intr = ^E;"), "{set}");
    assert!(set.contains("erase = ^D;"), "{set}");
    assert!(set.contains(" -echo "), "{set}");
    assert!(set.contains("speed 9600 baud;"), "{set}");
}

#[test]
fn sftp_subsystem_answers_init_with_version() {
    let sshd = sshd(&["Subsystem sftp internal-sftp"]);
    let mut d = login(&sshd);
    let sftp = d.conn.open_session(ChannelOptions::default()).unwrap();
    let unknown = d.conn.open_session(ChannelOptions::default()).unwrap();
    let mut results = Vec::new();
    let mut reply = Vec::new();
    d.run_until(Duration::from_secs(20), |conn, e| {
        match e {
            Event::ChannelOpened { channel } => {
                let name = if *channel == sftp { "sftp" } else { "no-such-subsystem" };
                conn.channel_request(*channel, &ChannelRequest::Subsystem { name: name.into() }, true)
                    .unwrap();
            }
            Event::ChannelRequestResult { channel, success, .. } => {
                results.push((*channel, *success));
                if *channel == sftp && *success {
                    // SSH_FXP_INIT, version 3: uint32 length, byte 1, uint32 3.
                    conn.channel_write(sftp, &[0, 0, 0, 5, 1, 0, 0, 0, 3]).unwrap();
                }
            }
            Event::ChannelData { channel, data } if *channel == sftp => {
                reply.extend_from_slice(data);
                let len = reply.get(..4).map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize);
                if len.is_some_and(|len| reply.len() >= 4 + len) {
                    return Flow::Done;
                }
            }
            _ => {}
        }
        Flow::Continue
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(results.contains(&(sftp, true)), "{results:?}");
    assert!(results.contains(&(unknown, false)), "{results:?}");
    // SSH_FXP_VERSION (2) with version 3, then extension pairs.
    assert_eq!(reply[4], 2, "{reply:?}");
    assert_eq!(u32::from_be_bytes(reply[5..9].try_into().unwrap()), 3);
    assert!(String::from_utf8_lossy(&reply).contains("@openssh.com"), "{reply:?}");
}

#[test]
fn signal_requests_reach_the_command_as_sshd_allows() {
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    // What sshd 9.2 does: it kills the session's process group with the
    // signals it knows (a trap sees USR1; TERM kills), replies success, and
    // refuses a name it does not know (WINCH).
    let cases = [
        ("USR1", "trap 'echo got USR1; exit 3' USR1; echo ready; while :; do sleep 1; done", true),
        ("TERM", "echo ready; sleep 30", true),
        ("WINCH", "trap 'echo got WINCH' WINCH; echo ready; sleep 2; echo done", false),
    ];
    let mut seen = Vec::new();
    for (signal, command, _) in cases {
        let ch = d.conn.open_session(ChannelOptions::default()).unwrap();
        let mut out = Vec::new();
        let mut signal_id = None;
        let mut answer = None;
        let mut exit = None;
        d.run_until(Duration::from_secs(20), |conn, e| {
            match e {
                Event::ChannelOpened { channel } if *channel == ch => {
                    conn.exec(ch, command).unwrap();
                }
                Event::ChannelData { channel, data } if *channel == ch => {
                    out.extend_from_slice(data);
                    if signal_id.is_none() && out.starts_with(b"ready\n") {
                        let req = ChannelRequest::Signal { name: signal.into() };
                        signal_id = Some(conn.channel_request(ch, &req, true).unwrap());
                    }
                }
                Event::ChannelRequestResult { id, success, .. } if Some(*id) == signal_id => {
                    answer = Some(*success)
                }
                Event::ChannelExit { channel, status } if *channel == ch => exit = Some(status.clone()),
                Event::ChannelClosed { channel, .. } if *channel == ch => return Flow::Done,
                _ => {}
            }
            Flow::Continue
        })
        .unwrap_or_else(|e| panic!("{signal}: {e}\n{}", sshd.log()));
        seen.push((signal, answer, String::from_utf8_lossy(&out).into_owned(), exit));
    }
    let signal_exit = |signal: &str| {
        Some(ExitStatus::Signal { signal: signal.into(), core_dumped: false, message: String::new() })
    };
    assert_eq!(
        seen,
        [
            ("USR1", Some(true), "ready\ngot USR1\n".to_string(), Some(ExitStatus::Code(3))),
            ("TERM", Some(true), "ready\n".to_string(), signal_exit("TERM")),
            ("WINCH", Some(false), "ready\ndone\n".to_string(), Some(ExitStatus::Code(0))),
        ]
    );
    assert!(sshd.log().contains("unsupported signal \"WINCH\""), "{}", sshd.log());
}

#[test]
fn exit_signal_reports_core_dumps_as_the_kernel_does() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    let dir = shared_dir("cores");
    let uid: u32 =
        sansh_interop::run(std::process::Command::new("id").args(["-u", TEST_USER])).trim().parse().unwrap();
    let gid: u32 =
        sansh_interop::run(std::process::Command::new("id").args(["-g", TEST_USER])).trim().parse().unwrap();
    for limit in ["0", "unlimited"] {
        let command = format!("cd {}; ulimit -c {limit}; kill -SEGV $$", dir.path().display());
        // The oracle: the same command run here as the same user.
        let local =
            std::process::Command::new("sh").arg("-c").arg(&command).uid(uid).gid(gid).status().unwrap();
        assert_eq!(local.signal(), Some(11));
        let out =
            d.exec(&command, b"", Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        // sshd sends the signal name, WCOREDUMP of the status, and never a message.
        let expected = ExitStatus::Signal {
            signal: "SEGV".into(),
            core_dumped: local.core_dumped(),
            message: String::new(),
        };
        assert_eq!(out.exit, Some(expected), "ulimit -c {limit}");
        if limit == "0" {
            assert!(!local.core_dumped());
        }
        eprintln!("ulimit -c {limit}: core dumped {}", local.core_dumped());
    }
}

#[test]
fn local_forwarding_to_an_echo_server() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    let ch = d
        .conn
        .open_direct_tcpip("127.0.0.1", u32::from(port), "127.0.0.1", 40000, ChannelOptions::default())
        .unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut back = Vec::new();
    d.run_until(Duration::from_secs(30), |conn, e| {
        match e {
            Event::ChannelOpened { .. } => {
                conn.channel_write(ch, &payload).unwrap();
            }
            Event::ChannelOpenFailed { description, .. } => panic!("{description}"),
            Event::ChannelData { data, .. } => {
                back.extend_from_slice(data);
                if back.len() == payload.len() {
                    conn.channel_eof(ch).unwrap();
                    conn.channel_close(ch).unwrap();
                }
            }
            Event::ChannelClosed { .. } => return Flow::Done,
            _ => {}
        }
        Flow::Continue
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(back, payload);
    server.join().unwrap();
}

#[test]
fn remote_forwarding_carries_data_both_ways() {
    let sshd = sshd(&[]);
    let mut d = login(&sshd);
    // Ask sshd to listen on a port of its choosing.
    let req = d.conn.request_remote_forward("127.0.0.1", 0).unwrap();
    let mut bound = None;
    d.run_until(Duration::from_secs(10), |_, e| match e {
        Event::GlobalReply { id, success, data } if *id == req => {
            assert!(success, "tcpip-forward refused");
            bound = sansh::channel::bound_port(data);
            Flow::Done
        }
        _ => Flow::Continue,
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let port = bound.expect("sshd reports the bound port");
    // A program on the server connects to that port, says hello and prints
    // what comes back; we play the forwarding target and answer in capitals.
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello over the tunnel >&3; head -n1 <&3");
    let session = d.conn.open_session(ChannelOptions::default()).unwrap();
    let mut fwd = None;
    let mut from_program = Vec::new();
    let mut stdout = Vec::new();
    d.run_until(Duration::from_secs(30), |conn, e| {
        match e {
            Event::ChannelOpened { channel } if *channel == session => {
                conn.exec(session, &format!("bash -c '{script}'")).unwrap();
            }
            Event::ChannelOpenRequest {
                channel,
                kind: ChannelKind::ForwardedTcpip { connected_port, .. },
            } => {
                assert_eq!(*connected_port, port);
                conn.accept_channel(*channel, ChannelOptions::default()).unwrap();
                fwd = Some(*channel);
            }
            Event::ChannelData { channel, data } if Some(*channel) == fwd => {
                from_program.extend_from_slice(data);
                if from_program.ends_with(b"\n") {
                    let reply = String::from_utf8_lossy(&from_program).to_uppercase();
                    conn.channel_write(*channel, reply.as_bytes()).unwrap();
                }
            }
            Event::ChannelData { channel, data } if *channel == session => stdout.extend_from_slice(data),
            Event::ChannelClosed { channel, .. } if *channel == session => return Flow::Done,
            _ => {}
        }
        Flow::Continue
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(from_program, b"hello over the tunnel\n");
    assert_eq!(stdout, b"HELLO OVER THE TUNNEL\n");
}
