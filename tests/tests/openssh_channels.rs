//! Channels against OpenSSH sshd on 127.0.0.1: exec, signals, a 1 GiB
//! stream across rekeys, PTY, env, 20 concurrent sessions, forwarding.

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

#[test]
fn twenty_exec_channels_at_once() {
    let sshd = sshd(&["MaxSessions 20"]);
    let mut d = login(&sshd);
    let chans: Vec<_> = (0..20).map(|_| d.conn.open_session(ChannelOptions::default()).unwrap()).collect();
    let mut outputs = vec![Vec::new(); 20];
    let mut exits = vec![None; 20];
    let mut closed = 0;
    d.run_until(Duration::from_secs(60), |conn, e| {
        let idx = |c: &sansh::ChannelId| chans.iter().position(|x| x == c).unwrap();
        match e {
            Event::ChannelOpened { channel } => {
                let i = idx(channel);
                conn.exec(*channel, &format!("sleep 0.$((RANDOM % 5)); echo channel {i}")).unwrap();
            }
            Event::ChannelOpenFailed { description, .. } => panic!("open failed: {description}"),
            Event::ChannelData { channel, data } => outputs[idx(channel)].extend_from_slice(data),
            Event::ChannelExit { channel, status } => exits[idx(channel)] = Some(status.clone()),
            Event::ChannelClosed { .. } => {
                closed += 1;
                if closed == 20 {
                    return Flow::Done;
                }
            }
            _ => {}
        }
        Flow::Continue
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    for i in 0..20 {
        assert_eq!(outputs[i], format!("channel {i}\n").into_bytes());
        assert_eq!(exits[i], Some(ExitStatus::Code(0)));
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
