//! In-memory channels over `testing::Pair`: sessions, flow control,
//! concurrency, rekeys mid-transfer, forwarding and hostile input.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use proptest::prelude::*;
use sansh::testing::{LinkConfig, Pair, accept_policy, host_key};
use sansh::{
    ChannelId, ChannelKind, ChannelOptions, ChannelRequest, ClientConfig, CloseReason, Credential, Duration,
    Error, Event, ExitStatus, GlobalRequest, HostKeyAlgorithm, OpenFailure, Role, ServerConfig,
};

fn configs() -> (ClientConfig, ServerConfig) {
    let client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    let server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    (client, server)
}

/// An authenticated pair whose server accepts every channel and request
/// (with `server_opts` for accepted channels).
fn pair(
    client: ClientConfig,
    server: ServerConfig,
    link: LinkConfig,
    seed: u64,
    server_opts: ChannelOptions,
) -> Pair {
    let mut p = Pair::new(client, server, link, seed).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        match e {
            Event::ChannelOpenRequest { channel, .. } => conn.accept_channel(*channel, server_opts).unwrap(),
            Event::ChannelRequest { id, want_reply: true, .. } => conn.accept_channel_request(*id).unwrap(),
            _ => {}
        }
    }));
    p.authenticate().unwrap();
    p
}

fn default_pair(seed: u64) -> Pair {
    let (c, s) = configs();
    pair(c, s, LinkConfig::fragmenting(1500), seed, ChannelOptions::default())
}

fn received(p: &Pair, role: Role, channel: ChannelId, stream: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in p.events(role) {
        match e {
            Event::ChannelData { channel: c, data } if *c == channel && stream.is_none() => out.extend(data),
            Event::ChannelExtendedData { channel: c, code, data }
                if *c == channel && stream == Some(*code) =>
            {
                out.extend(data)
            }
            _ => {}
        }
    }
    out
}

fn pattern(tag: u64, len: usize) -> Vec<u8> {
    let mut rng = sansh::Rng::from_u64(tag);
    let mut v = vec![0u8; len];
    rand_core::RngCore::fill_bytes(&mut rng, &mut v);
    v
}

fn server_channel_for(p: &Pair, nth: usize) -> ChannelId {
    p.events(Role::Server)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(*channel),
            _ => None,
        })
        .nth(nth)
        .expect("server saw the open")
}

fn limit(p: &Pair, secs: u64) -> sansh::Timestamp {
    p.now + Duration::from_secs(secs)
}

#[test]
fn exec_session_with_stdout_stderr_and_exit() {
    let (c, s) = configs();
    let mut p = Pair::new(c, s, LinkConfig::fragmenting(100), 1).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        match e {
            Event::ChannelOpenRequest { channel, kind: ChannelKind::Session } => {
                conn.accept_channel(*channel, ChannelOptions::default()).unwrap()
            }
            Event::ChannelRequest { channel, id, request: ChannelRequest::Exec { command }, .. } => {
                assert_eq!(command, b"echo hello");
                conn.accept_channel_request(*id).unwrap();
                conn.channel_write(*channel, b"hello\n").unwrap();
                conn.channel_write_extended(*channel, 1, b"warning\n").unwrap();
                conn.channel_request(*channel, &ChannelRequest::ExitStatus { status: 3 }, false).unwrap();
                conn.channel_eof(*channel).unwrap();
                conn.channel_close(*channel).unwrap();
            }
            _ => {}
        }
    }));
    p.authenticate().unwrap();
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    let exec_id = Rc::new(RefCell::new(None));
    let exec_id2 = exec_id.clone();
    p.on_client_event = Some(Box::new(move |conn, e| match e {
        Event::ChannelOpened { channel } => {
            *exec_id2.borrow_mut() = Some(conn.exec(*channel, "echo hello").unwrap())
        }
        Event::ChannelClosed { .. } => {}
        // The server's CLOSE may already have closed it: then there is nothing to do.
        Event::ChannelEof { channel } => {
            let _ = conn.channel_close(*channel);
        }
        _ => {}
    }));
    assert!(p.run_until(limit(&p, 10), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelClosed { .. }))
    }));
    p.run_idle(limit(&p, 1));
    let ev = p.events(Role::Client);
    let id = exec_id.borrow().unwrap();
    assert!(ev.contains(&&Event::ChannelRequestResult { channel: ch, id, success: true }));
    assert_eq!(received(&p, Role::Client, ch, None), b"hello\n");
    assert_eq!(received(&p, Role::Client, ch, Some(1)), b"warning\n");
    assert!(ev.contains(&&Event::ChannelExit { channel: ch, status: ExitStatus::Code(3) }));
    assert!(ev.contains(&&Event::ChannelClosed { channel: ch, unsent: 0 }));
    assert_eq!(p.client.channel_count(), 0);
    assert_eq!(p.server.channel_count(), 0);
    // The number is free again.
    let again = p.client.open_session(ChannelOptions::default()).unwrap();
    assert_eq!(again, ch);
}

#[test]
fn a_channel_number_is_not_reused_before_the_application_saw_it_close() {
    let mut p = default_pair(12);
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    assert!(p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    }));
    let server_ch = server_channel_for(&p, 0);
    p.server.channel_close(server_ch).unwrap();
    // Deliver the server's CLOSE by hand, without polling the client's events
    // (an adapter that reads the exec reply and the close in one segment).
    let bytes = p.server.pending_transmit().to_vec();
    p.server.consume_transmit(bytes.len());
    p.client.handle_input(p.now, &bytes).unwrap();
    let err = p.client.channel_write(ch, b"late").unwrap_err();
    assert_eq!(err, Error::ChannelClosed { channel: ch.0 }, "{err}");
    assert_eq!(p.client.channel_eof(ch).unwrap_err(), Error::ChannelClosed { channel: ch.0 });
    // Its number stays taken while the ChannelClosed event is unread.
    let other = p.client.open_session(ChannelOptions::default()).unwrap();
    assert_ne!(other, ch);
    let mut closed = Vec::new();
    while let Some(e) = p.client.poll_event() {
        if let Event::ChannelClosed { channel, .. } = e {
            closed.push(channel);
        }
    }
    assert_eq!(closed, vec![ch]);
    // Once seen, the number is free again, and an unknown id is told apart.
    assert_eq!(p.client.open_session(ChannelOptions::default()).unwrap(), ch);
    assert_eq!(
        p.client.channel_write(ChannelId(99), b"x").unwrap_err(),
        Error::UnknownChannel { channel: 99 }
    );
}

#[test]
fn session_requests_reach_the_server_intact() {
    let mut p = default_pair(2);
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    });
    let pty = sansh::Pty {
        term: "xterm-256color".into(),
        cols: 132,
        rows: 43,
        width_px: 0,
        height_px: 0,
        modes: vec![(sansh::channel::tty::ECHO, 1), (sansh::channel::tty::TTY_OP_OSPEED, 38400)],
    };
    let reqs = vec![
        (ChannelRequest::Pty(pty), true),
        (ChannelRequest::Env { name: "LANG".into(), value: "C.UTF-8".into() }, true),
        (ChannelRequest::Shell, true),
        (ChannelRequest::WindowChange { cols: 100, rows: 30, width_px: 0, height_px: 0 }, false),
        (ChannelRequest::Signal { name: "INT".into() }, false),
        (ChannelRequest::Subsystem { name: "sftp".into() }, true),
    ];
    for (r, want) in &reqs {
        p.client.channel_request(ch, r, *want).unwrap();
    }
    p.run_idle(limit(&p, 5));
    let got: Vec<(ChannelRequest, bool)> = p
        .events(Role::Server)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelRequest { request, want_reply, .. } => Some((request.clone(), *want_reply)),
            _ => None,
        })
        .collect();
    assert_eq!(got, reqs);
    let results = p
        .events(Role::Client)
        .iter()
        .filter(|e| matches!(e, Event::ChannelRequestResult { success: true, .. }))
        .count();
    assert_eq!(results, 4, "one success per want-reply request");
}

#[test]
fn unknown_requests_get_failure_in_order() {
    let mut p = default_pair(3);
    // Global: unknown want-reply requests are refused, as OpenSSH does.
    let a = p.client.global_request("keepalive@openssh.com", true, &[]).unwrap();
    let b = p.client.global_request("no-such-request@example.com", true, &[]).unwrap();
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    });
    let c = p
        .client
        .channel_request(ch, &ChannelRequest::Other { name: "eow@openssh.com".into(), data: vec![] }, true)
        .unwrap();
    let d = p.client.exec(ch, "true").unwrap();
    p.run_idle(limit(&p, 5));
    let ev = p.events(Role::Client);
    let replies: Vec<(u64, bool)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::GlobalReply { id, success, .. } => Some((*id, *success)),
            Event::ChannelRequestResult { id, success, .. } => Some((*id, *success)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec![(a, false), (b, false), (c, false), (d, true)]);
}

#[test]
fn remote_forwarding_requests_and_forwarded_channels() {
    let (c, s) = configs();
    let mut p = Pair::new(c, s, LinkConfig::fragmenting(700), 4).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        match e {
            Event::GlobalRequest {
                id, request: GlobalRequest::TcpipForward { address, port: 0 }, ..
            } => {
                assert_eq!(address, "localhost");
                conn.accept_global_request(*id, Some(40123)).unwrap();
                // A connection arrives on the forwarded port.
                let kind = ChannelKind::ForwardedTcpip {
                    connected_host: "localhost".into(),
                    connected_port: 40123,
                    originator_host: "10.0.0.7".into(),
                    originator_port: 5555,
                };
                conn.open_channel(kind, ChannelOptions::default()).unwrap();
            }
            Event::GlobalRequest { id, request: GlobalRequest::CancelTcpipForward { .. }, .. } => {
                conn.reject_global_request(*id).unwrap()
            }
            Event::ChannelOpened { channel } => {
                conn.channel_write(*channel, b"from the far side").unwrap();
            }
            _ => {}
        }
    }));
    p.on_client_event = Some(Box::new(|conn, e| {
        if let Event::ChannelOpenRequest {
            channel,
            kind: ChannelKind::ForwardedTcpip { originator_port: 5555, .. },
        } = e
        {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap();
            conn.channel_write(*channel, b"hello back").unwrap();
        }
    }));
    p.authenticate().unwrap();
    let fwd = p.client.request_remote_forward("localhost", 0).unwrap();
    p.run_idle(limit(&p, 5));
    let cancel = p.client.cancel_remote_forward("localhost", 40123).unwrap();
    p.run_idle(limit(&p, 5));
    let ev = p.events(Role::Client);
    let reply = ev.iter().find_map(|e| match e {
        Event::GlobalReply { id, success: true, data } if *id == fwd => Some(data.clone()),
        _ => None,
    });
    assert_eq!(reply.as_deref().and_then(sansh::channel::bound_port), Some(40123));
    assert!(ev.iter().any(|e| matches!(e, Event::GlobalReply { id, success: false, .. } if *id == cancel)));
    let client_ch = ev
        .iter()
        .find_map(|e| match e {
            Event::ChannelOpenRequest { channel, .. } => Some(*channel),
            _ => None,
        })
        .unwrap();
    assert_eq!(received(&p, Role::Client, client_ch, None), b"from the far side");
    let server_ch = p
        .events(Role::Server)
        .iter()
        .find_map(|e| match e {
            Event::ChannelOpened { channel } => Some(*channel),
            _ => None,
        })
        .unwrap();
    assert_eq!(received(&p, Role::Server, server_ch, None), b"hello back");
}

#[test]
fn direct_tcpip_open_is_an_event_the_server_can_refuse() {
    let (c, s) = configs();
    let mut p = Pair::new(c, s, LinkConfig::default(), 5).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        if let Event::ChannelOpenRequest { channel, kind: ChannelKind::DirectTcpip { host, port, .. } } = e {
            if host == "db.internal" && *port == 5432 {
                conn.accept_channel(*channel, ChannelOptions::default()).unwrap();
            } else {
                conn.reject_channel(*channel, OpenFailure::ADMINISTRATIVELY_PROHIBITED, "not allowed")
                    .unwrap();
            }
        }
    }));
    p.authenticate().unwrap();
    let ok = p
        .client
        .open_direct_tcpip("db.internal", 5432, "127.0.0.1", 50000, ChannelOptions::default())
        .unwrap();
    let no = p
        .client
        .open_direct_tcpip("evil.example", 25, "127.0.0.1", 50001, ChannelOptions::default())
        .unwrap();
    p.run_idle(limit(&p, 5));
    let ev = p.events(Role::Client);
    assert!(ev.contains(&&Event::ChannelOpened { channel: ok }));
    assert!(ev.contains(&&Event::ChannelOpenFailed {
        channel: no,
        reason: OpenFailure::ADMINISTRATIVELY_PROHIBITED,
        description: "not allowed".into(),
        unsent: 0
    }));
}

#[test]
fn a_reader_that_stops_consuming_bounds_the_buffer_to_the_window() {
    let (c, s) = configs();
    let window = 256 * 1024;
    let opts = ChannelOptions { window, max_packet: 32 * 1024, manual_window: true };
    let mut p = pair(c, s, LinkConfig::fragmenting(4000), 6, opts);
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    });
    let data = pattern(6, 4 * 1024 * 1024);
    let pending = p.client.channel_write(ch, &data).unwrap();
    assert!(pending >= data.len() - window as usize, "the window caps what leaves at once");
    p.run_idle(limit(&p, 30));
    let sch = server_channel_for(&p, 0);
    // The server never consumed: exactly one window arrived, the rest waits at the writer.
    assert_eq!(received(&p, Role::Server, sch, None).len(), window as usize);
    assert_eq!(p.client.channel_info(ch).unwrap().pending, data.len() - window as usize);
    assert_eq!(p.server.channel_info(sch).unwrap().local_window, 0);
    // Consuming reopens the flow, window by window, until everything is there.
    let mut consumed = 0;
    while consumed < data.len() {
        let got = received(&p, Role::Server, sch, None).len();
        if got > consumed {
            p.server.channel_consumed(sch, got - consumed).unwrap();
            consumed = got;
        }
        if !p.step() {
            break;
        }
    }
    assert_eq!(received(&p, Role::Server, sch, None), data);
    assert!(p.events(Role::Client).contains(&&Event::ChannelWritable { channel: ch }));
}

#[test]
fn rekey_in_the_middle_of_bulk_transfer_both_ways() {
    let (mut c, mut s) = configs();
    c.transport.rekey.bytes = Some(300 * 1024);
    s.transport.rekey.bytes = Some(200 * 1024);
    let mut p = pair(c, s, LinkConfig::fragmenting(9000), 7, ChannelOptions::default());
    p.record_transcripts(false);
    let ch = p.client.open_session(ChannelOptions::default()).unwrap();
    p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    });
    let sch = server_channel_for(&p, 0);
    let up = pattern(71, 5 * 1024 * 1024 + 17);
    let down = pattern(72, 3 * 1024 * 1024 + 5);
    // Large writes on both sides, in pieces that straddle the rekeys.
    for (i, (u, d)) in up.chunks(700_001).zip(down.chunks(400_003)).enumerate() {
        p.client.channel_write(ch, u).unwrap();
        p.server.channel_write(sch, d).unwrap();
        if i % 2 == 0 {
            p.client.rekey().unwrap();
        }
        for _ in 0..5 {
            p.step();
        }
    }
    for u in up.chunks(700_001).skip(down.chunks(400_003).count()) {
        p.client.channel_write(ch, u).unwrap();
    }
    p.run_idle(limit(&p, 120));
    assert_eq!(received(&p, Role::Server, sch, None), up);
    assert_eq!(received(&p, Role::Client, ch, None), down);
    // 5 MiB up under a 300 KiB limit: the limit holds per packet (at most
    // one 32 KiB packet past it), so at least one exchange per ~332 KiB.
    let min = up.len() / ((300 + 33) * 1024);
    assert!(p.client.stats().rekeys as usize >= min, "{} rekeys, want >= {min}", p.client.stats().rekeys);
    assert!(p.client_errors.is_empty() && p.server_errors.is_empty());
}

// ------------------------------------------------------------ property

#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    max_fragment: usize,
    sizes: Vec<(usize, usize)>,
    max_write: usize,
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        1usize..3000,
        prop::collection::vec((0usize..60_000, 0usize..60_000), 1..8),
        1usize..20_000,
    )
        .prop_map(|(seed, max_fragment, sizes, max_write)| Plan { seed, max_fragment, sizes, max_write })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Many channels, random sizes and interleavings, both directions, over
    /// a fragmenting link: every byte arrives, in order, on its channel.
    #[test]
    fn concurrent_channels_deliver_every_byte_in_order(plan in plans()) {
        let (c, s) = configs();
        let small = ChannelOptions { window: 64 * 1024, max_packet: 16 * 1024, manual_window: false };
        let mut p = pair(c, s, LinkConfig::fragmenting(plan.max_fragment), plan.seed, small);
        p.record_transcripts(false);
        let n = plan.sizes.len();
        let chans: Vec<ChannelId> = (0..n).map(|_| p.client.open_session(small).unwrap()).collect();
        let opened = |p: &Pair| p.events(Role::Client).iter().filter(|e| matches!(e, Event::ChannelOpened { .. })).count() == n;
        prop_assert!(p.run_until(limit(&p, 10), opened));
        let schans: Vec<ChannelId> = (0..n).map(|i| server_channel_for(&p, i)).collect();
        let up: Vec<Vec<u8>> = plan.sizes.iter().enumerate().map(|(i, s)| pattern(plan.seed ^ (i as u64 * 2), s.0)).collect();
        let down: Vec<Vec<u8>> = plan.sizes.iter().enumerate().map(|(i, s)| pattern(plan.seed ^ (i as u64 * 2 + 1), s.1)).collect();
        let mut sent: BTreeMap<(usize, bool), usize> = BTreeMap::new();
        let mut rng = sansh::Rng::from_u64(plan.seed);
        loop {
            let todo: Vec<(usize, bool)> = (0..n)
                .flat_map(|i| [(i, true), (i, false)])
                .filter(|&(i, upward)| {
                    let total = if upward { up[i].len() } else { down[i].len() };
                    sent.get(&(i, upward)).copied().unwrap_or(0) < total
                })
                .collect();
            if todo.is_empty() {
                break;
            }
            let (i, upward) = todo[rng.below(todo.len() as u64) as usize];
            let done = sent.entry((i, upward)).or_default();
            let src = if upward { &up[i] } else { &down[i] };
            let len = (rng.range_inclusive(1, plan.max_write as u64) as usize).min(src.len() - *done);
            let piece = &src[*done..*done + len];
            *done += len;
            if upward { p.client.channel_write(chans[i], piece).unwrap(); } else { p.server.channel_write(schans[i], piece).unwrap(); }
            if rng.below(3) == 0 { p.step(); }
        }
        for i in 0..n {
            p.client.channel_eof(chans[i]).unwrap();
            p.server.channel_eof(schans[i]).unwrap();
        }
        p.run_idle(limit(&p, 600));
        for i in 0..n {
            prop_assert!(received(&p, Role::Server, schans[i], None) == up[i], "channel {} upward", i);
            prop_assert!(received(&p, Role::Client, chans[i], None) == down[i], "channel {} downward", i);
            let eof = Event::ChannelEof { channel: chans[i] };
            prop_assert!(p.events(Role::Client).contains(&&eof), "no EOF on channel {}", i);
        }
        prop_assert!(p.client_errors.is_empty() && p.server_errors.is_empty());
    }
}

// ------------------------------------------------------------ bad input

/// Runs `attack` on the server side once the client's channel is open; the
/// client must close with a protocol error matching `expect`.
fn client_rejects(attack: impl Fn(&mut sansh::Connection, ChannelId, u32) + 'static, expect: &str) {
    let (c, s) = configs();
    let opts = ChannelOptions { window: 1000, max_packet: 500, manual_window: true };
    let mut p = pair(c, s, LinkConfig::fragmenting(50), 8, ChannelOptions::default());
    let ch = p.client.open_session(opts).unwrap();
    p.run_until(limit(&p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. }))
    });
    let sch = server_channel_for(&p, 0);
    attack(&mut p.server, sch, ch.0);
    p.run_idle(limit(&p, 5));
    let reason = p.events(Role::Client).into_iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    });
    match reason {
        Some(CloseReason::Error(e @ Error::ChannelProtocol { .. })) => {
            assert!(e.to_string().contains(expect), "{e} does not say {expect:?}")
        }
        other => panic!("expected a channel protocol error ({expect}), got {other:?}"),
    }
    assert_eq!(p.events(Role::Client).iter().filter(|e| matches!(e, Event::Closed { .. })).count(), 1);
    // The server was told why.
    assert!(
        p.events(Role::Server)
            .iter()
            .any(|e| matches!(e, Event::Closed { reason: CloseReason::PeerDisconnect { .. } }))
    );
}

fn raw(n: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![n];
    for f in fields {
        v.extend_from_slice(f);
    }
    v
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

#[test]
fn data_beyond_the_window() {
    // The client advertised 1000 bytes of window; 2 × 500 fill it, the third overflows.
    client_rejects(
        |srv, _sch, cid| {
            for _ in 0..3 {
                srv.inject_payload(&raw(94, &[&cid.to_be_bytes(), &string(&[7; 500])]));
            }
        },
        "exceeds the window of 0",
    );
}

#[test]
fn packet_larger_than_the_channels_max_packet() {
    client_rejects(
        |srv, _sch, cid| srv.inject_payload(&raw(94, &[&cid.to_be_bytes(), &string(&[7; 501])])),
        "501 bytes exceeds the maximum packet of 500",
    );
}

#[test]
fn data_on_an_unknown_channel() {
    client_rejects(
        |srv, _sch, _cid| srv.inject_payload(&raw(94, &[&77u32.to_be_bytes(), &string(b"x")])),
        "channel 77: CHANNEL_DATA for a channel that does not exist",
    );
}

#[test]
fn data_on_a_closed_channel() {
    client_rejects(
        |srv, sch, cid| {
            srv.channel_close(sch).unwrap();
            srv.inject_payload(&raw(94, &[&cid.to_be_bytes(), &string(b"late")]));
        },
        "CHANNEL_DATA for a channel that is already closed",
    );
}

#[test]
fn duplicate_close() {
    client_rejects(
        |srv, sch, cid| {
            srv.channel_close(sch).unwrap();
            srv.inject_payload(&raw(97, &[&cid.to_be_bytes()]));
        },
        "CHANNEL_CLOSE for a channel that is already closed",
    );
}

#[test]
fn window_adjust_overflowing_2_pow_32() {
    client_rejects(
        |srv, _sch, cid| srv.inject_payload(&raw(93, &[&cid.to_be_bytes(), &u32::MAX.to_be_bytes()])),
        "beyond 2^32-1",
    );
}

#[test]
fn channel_success_with_no_request_pending() {
    client_rejects(
        |srv, _sch, cid| srv.inject_payload(&raw(99, &[&cid.to_be_bytes()])),
        "CHANNEL_SUCCESS with no request pending",
    );
}

#[test]
fn request_success_with_no_global_request_pending() {
    let mut p = default_pair(9);
    p.server.inject_payload(&[81]);
    p.run_idle(limit(&p, 5));
    assert!(p.events(Role::Client).iter().any(|e| matches!(
        e,
        Event::Closed { reason: CloseReason::Error(Error::UnexpectedMessage { number: 81, .. }) }
    )));
}

#[test]
fn a_peer_opening_channels_in_a_loop_is_capped() {
    let (c, mut s) = configs();
    s.max_channels = 5;
    let mut p = Pair::new(c, s, LinkConfig::default(), 10).unwrap();
    p.on_server_event = Some(accept_policy("pw"));
    p.authenticate().unwrap();
    // The server application never answers: every open stays pending.
    for _ in 0..50 {
        p.client.open_session(ChannelOptions::default()).unwrap();
    }
    p.run_idle(limit(&p, 5));
    let asked =
        p.events(Role::Server).iter().filter(|e| matches!(e, Event::ChannelOpenRequest { .. })).count();
    let refused = p
        .events(Role::Client)
        .iter()
        .filter(|e| matches!(e, Event::ChannelOpenFailed { reason: OpenFailure::RESOURCE_SHORTAGE, .. }))
        .count();
    assert_eq!((asked, refused), (5, 45));
    assert_eq!(p.server.channel_count(), 5);
}
