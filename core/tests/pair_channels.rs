//! In-memory channels over `testing::Pair`: sessions, flow control,
//! concurrency, rekeys mid-transfer, forwarding and hostile input.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use proptest::prelude::*;
use sansh::testing::{LinkConfig, Pair, accept_policy, host_key};
use sansh::{
    ChannelId, ChannelKind, ChannelOptions, ChannelRequest, ClientConfig, CloseReason, Connection,
    Credential, Duration, Error, Event, ExitStatus, GlobalRequest, HostKeyAlgorithm, OpenFailure, Role,
    ServerConfig,
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

/// An authenticated pair whose server application is `hook` (after the
/// password policy).
fn pair_with(
    client: ClientConfig,
    server: ServerConfig,
    seed: u64,
    mut hook: impl FnMut(&mut Connection, &Event) + 'static,
) -> Pair {
    let mut p = Pair::new(client, server, LinkConfig::fragmenting(1500), seed).unwrap();
    let mut auth = accept_policy("pw");
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        hook(conn, e);
    }));
    p.authenticate().unwrap();
    p
}

/// Opens a session from the client and runs until it is open.
fn open_session(p: &mut Pair, opts: ChannelOptions) -> ChannelId {
    let ch = p.client.open_session(opts).unwrap();
    assert!(p.run_until(limit(p, 5), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { channel } if *channel == ch))
    }));
    ch
}

/// Our replies as the client saw them: (request id, success), in arrival order.
fn replies(p: &Pair) -> Vec<(u64, bool)> {
    p.events(Role::Client)
        .iter()
        .filter_map(|e| match e {
            Event::GlobalReply { id, success, .. } | Event::ChannelRequestResult { id, success, .. } => {
                Some((*id, *success))
            }
            _ => None,
        })
        .collect()
}

fn closes(p: &Pair, role: Role) -> usize {
    p.events(role).iter().filter(|e| matches!(e, Event::Closed { .. })).count()
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

/// Who closes a channel, once it has written everything and seen the
/// other side's EOF (so no data can be lost to the CLOSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    Client,
    Server,
    /// Both, so that the CLOSEs may cross.
    Both,
    /// Nobody until the end.
    Nobody,
}

#[derive(Debug, Clone)]
struct ChannelPlan {
    up: usize,
    down: usize,
    closer: Closer,
}

#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    max_fragment: usize,
    channels: Vec<ChannelPlan>,
    max_write: usize,
}

fn sizes() -> impl Strategy<Value = usize> {
    // Mostly up to a window, sometimes many windows.
    prop_oneof![6 => 0usize..70_000, 1 => 256usize * 1024..640 * 1024]
}

fn plans() -> impl Strategy<Value = Plan> {
    let closer =
        prop_oneof![Just(Closer::Client), Just(Closer::Server), Just(Closer::Both), Just(Closer::Nobody)];
    let channel = (sizes(), sizes(), closer).prop_map(|(up, down, closer)| ChannelPlan { up, down, closer });
    (
        any::<u64>(),
        prop_oneof![1 => 1usize..64, 6 => 64usize..20_000],
        prop::collection::vec(channel, 1..=16),
        prop_oneof![1usize..2_000, 1usize..70_000],
    )
        .prop_map(|(seed, max_fragment, channels, max_write)| Plan {
            seed,
            max_fragment,
            channels,
            max_write,
        })
}

/// The `(channel index, is the client)` pairs that saw the other side's EOF.
type EofLog = Rc<RefCell<BTreeSet<(usize, bool)>>>;

/// Logs EOFs of the channels in `chans` (by index) seen by `role`.
fn log_eofs(log: &EofLog, role: Role, chans: &[ChannelId]) -> impl FnMut(&mut Connection, &Event) + 'static {
    let (log, chans) = (log.clone(), chans.to_vec());
    move |_, e| {
        if let Event::ChannelEof { channel } = e
            && let Some(i) = chans.iter().position(|c| c == channel)
        {
            log.borrow_mut().insert((i, role == Role::Client));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// Up to 16 channels, random sizes (some of many windows), random write
    /// sizes and interleavings in both directions, EOFs as each direction
    /// finishes and CLOSEs (crossing, too) as each channel finishes, over a
    /// fragmenting link: every byte arrives, in order, on its channel.
    /// A failure prints the plan; its seed replays the whole run.
    #[test]
    fn concurrent_channels_deliver_every_byte_in_order(plan in plans()) {
        let (c, s) = configs();
        let small = ChannelOptions { window: 64 * 1024, max_packet: 16 * 1024, manual_window: false };
        let mut p = pair(c, s, LinkConfig::fragmenting(plan.max_fragment), plan.seed, small);
        p.record_transcripts(false);
        let n = plan.channels.len();
        let chans: Vec<ChannelId> = (0..n).map(|_| p.client.open_session(small).unwrap()).collect();
        let opened = |p: &Pair| p.events(Role::Client).iter().filter(|e| matches!(e, Event::ChannelOpened { .. })).count() == n;
        prop_assert!(p.run_until(limit(&p, 10), opened), "{:?}", plan);
        let schans: Vec<ChannelId> = (0..n).map(|i| server_channel_for(&p, i)).collect();
        let eofs: EofLog = Rc::default();
        p.on_client_event = Some(Box::new(log_eofs(&eofs, Role::Client, &chans)));
        let mut accept = p.on_server_event.take().unwrap();
        let mut server_log = log_eofs(&eofs, Role::Server, &schans);
        p.on_server_event = Some(Box::new(move |conn, e| {
            accept(conn, e);
            server_log(conn, e);
        }));
        let up: Vec<Vec<u8>> = (0..n).map(|i| pattern(plan.seed ^ (i as u64 * 2), plan.channels[i].up)).collect();
        let down: Vec<Vec<u8>> = (0..n).map(|i| pattern(plan.seed ^ (i as u64 * 2 + 1), plan.channels[i].down)).collect();
        let mut sent: BTreeMap<(usize, bool), usize> = BTreeMap::new();
        let mut closed: BTreeSet<(usize, bool)> = BTreeSet::new();
        let mut rng = sansh::Rng::from_u64(plan.seed);
        // A side closes its channel once its EOF is out and the peer's is in.
        let close_finished = |p: &mut Pair, sent: &BTreeMap<(usize, bool), usize>, closed: &mut BTreeSet<(usize, bool)>| {
            for (i, cp) in plan.channels.iter().enumerate() {
                for (role, upward, id) in [(Role::Client, true, chans[i]), (Role::Server, false, schans[i])] {
                    let closes = matches!((cp.closer, role), (Closer::Both, _) | (Closer::Client, Role::Client) | (Closer::Server, Role::Server));
                    let total = if upward { cp.up } else { cp.down };
                    let done = sent.get(&(i, upward)).copied().unwrap_or(0) == total;
                    let key = (i, role == Role::Client);
                    if closes && done && eofs.borrow().contains(&key) && closed.insert(key) {
                        let conn = if role == Role::Client { &mut p.client } else { &mut p.server };
                        // The peer's CLOSE may have come first: nothing left to do then.
                        match conn.channel_close(id) {
                            Ok(()) | Err(Error::ChannelClosed { .. } | Error::UnknownChannel { .. }) => {}
                            Err(e) => panic!("close {i} {role:?}: {e}"),
                        }
                    }
                }
            }
        };
        // Directions with nothing to write send EOF at once.
        for i in 0..n {
            if up[i].is_empty() {
                p.client.channel_eof(chans[i]).unwrap();
            }
            if down[i].is_empty() {
                p.server.channel_eof(schans[i]).unwrap();
            }
        }
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
            let src = if upward { &up[i] } else { &down[i] };
            let done = sent.entry((i, upward)).or_default();
            let len = (rng.range_inclusive(1, plan.max_write as u64) as usize).min(src.len() - *done);
            let piece = &src[*done..*done + len];
            *done += len;
            let finished = *done == src.len();
            let (conn, id) = if upward { (&mut p.client, chans[i]) } else { (&mut p.server, schans[i]) };
            conn.channel_write(id, piece).unwrap();
            if finished {
                conn.channel_eof(id).unwrap();
            }
            if rng.below(3) == 0 {
                p.step();
                close_finished(&mut p, &sent, &mut closed);
            }
        }
        // Run until every channel the plan closes is closed on both sides.
        let deadline = limit(&p, 600);
        loop {
            close_finished(&mut p, &sent, &mut closed);
            let closing = plan.channels.iter().filter(|cp| cp.closer != Closer::Nobody).count();
            let closed_both = |p: &Pair| {
                p.events(Role::Client).iter().filter(|e| matches!(e, Event::ChannelClosed { .. })).count() == closing
                    && p.events(Role::Server).iter().filter(|e| matches!(e, Event::ChannelClosed { .. })).count() == closing
            };
            if closed_both(&p) || p.now > deadline || !p.step() {
                break;
            }
        }
        // Channels nobody closes may still be carrying data.
        p.run_idle(limit(&p, 600));
        for i in 0..n {
            prop_assert!(received(&p, Role::Server, schans[i], None) == up[i], "channel {} upward; {:?}", i, plan);
            prop_assert!(received(&p, Role::Client, chans[i], None) == down[i], "channel {} downward; {:?}", i, plan);
            prop_assert!(eofs.borrow().contains(&(i, true)), "no EOF on channel {}; {:?}", i, plan);
            prop_assert!(eofs.borrow().contains(&(i, false)), "no EOF upward on channel {}; {:?}", i, plan);
            let closed_here = |role: Role, id: ChannelId| p.events(role).contains(&&Event::ChannelClosed { channel: id, unsent: 0 });
            let closing = plan.channels[i].closer != Closer::Nobody;
            prop_assert!(closed_here(Role::Client, chans[i]) == closing, "channel {} client close; {:?}", i, plan);
            prop_assert!(closed_here(Role::Server, schans[i]) == closing, "channel {} server close; {:?}", i, plan);
        }
        prop_assert!(p.client_errors.is_empty() && p.server_errors.is_empty(), "{:?} {:?}; {:?}", p.client_errors, p.server_errors, plan);
        // The rest close cleanly too.
        for (cp, ch) in plan.channels.iter().zip(&chans) {
            if cp.closer == Closer::Nobody {
                p.client.channel_close(*ch).unwrap();
            }
        }
        p.run_idle(limit(&p, 60));
        prop_assert_eq!((p.client.channel_count(), p.server.channel_count()), (0, 0), "{:?}", plan);
    }
}

// ------------------------------------------------------------ bad input

/// Runs `attack` on the server side once the client's channel is open; the
/// client must close with a protocol error matching `expect`.
fn client_rejects(attack: impl Fn(&mut Connection, ChannelId, u32) + 'static, expect: &str) {
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

// ------------------------------------------------------------ ordering

/// A server that answers `exec` with more stdout than the client's window,
/// then exit-status, EOF and CLOSE, all at once.
fn bulk_exec_server(stdout: Vec<u8>) -> impl FnMut(&mut Connection, &Event) + 'static {
    move |conn, e| match e {
        Event::ChannelOpenRequest { channel, .. } => {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap()
        }
        Event::ChannelRequest { channel, id, request: ChannelRequest::Exec { .. }, .. } => {
            conn.accept_channel_request(*id).unwrap();
            let pending = conn.channel_write(*channel, &stdout).unwrap();
            assert!(pending > 0, "the test needs data waiting for window");
            conn.channel_write_extended(*channel, 1, b"done\n").unwrap();
            conn.channel_request(*channel, &ChannelRequest::ExitStatus { status: 7 }, false).unwrap();
            conn.channel_eof(*channel).unwrap();
            conn.channel_close(*channel).unwrap();
        }
        _ => {}
    }
}

#[test]
fn exit_status_comes_after_all_the_stdout_written_before_it() {
    let (c, s) = configs();
    let stdout = pattern(30, 300_000);
    let mut p = pair_with(c, s, 30, bulk_exec_server(stdout.clone()));
    let small = ChannelOptions { window: 64 * 1024, max_packet: 16 * 1024, manual_window: false };
    let ch = open_session(&mut p, small);
    p.client.exec(ch, "cat big").unwrap();
    assert!(p.run_until(limit(&p, 30), |p| {
        p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelClosed { .. }))
    }));
    let ev = p.events(Role::Client);
    let last_data = ev
        .iter()
        .rposition(|e| matches!(e, Event::ChannelData { .. } | Event::ChannelExtendedData { .. }))
        .unwrap();
    let exit = ev.iter().position(|e| matches!(e, Event::ChannelExit { .. })).expect("an exit status");
    let eof = ev.iter().position(|e| matches!(e, Event::ChannelEof { .. })).expect("an EOF");
    assert!(last_data < exit, "exit-status overtook stdout: data until event {last_data}, exit at {exit}");
    assert!(exit < eof, "EOF was written after exit-status");
    assert_eq!(received(&p, Role::Client, ch, None), stdout);
    assert_eq!(received(&p, Role::Client, ch, Some(1)), b"done\n");
    assert_eq!(ev[exit], &Event::ChannelExit { channel: ch, status: ExitStatus::Code(7) });
}

#[test]
fn client_requests_wait_behind_data_queued_for_window() {
    let (c, s) = configs();
    let small = ChannelOptions { window: 64 * 1024, max_packet: 16 * 1024, manual_window: false };
    let mut p = pair(c, s, LinkConfig::fragmenting(1500), 31, small);
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    let data = pattern(31, 200_000);
    p.client.channel_write(ch, &data).unwrap();
    assert!(p.client.channel_info(ch).unwrap().pending > 0, "the test needs data waiting for window");
    let wc = ChannelRequest::WindowChange { cols: 100, rows: 30, width_px: 0, height_px: 0 };
    p.client.channel_request(ch, &wc, false).unwrap();
    let sig = p.client.channel_request(ch, &ChannelRequest::Signal { name: "INT".into() }, true).unwrap();
    p.client.channel_eof(ch).unwrap();
    p.run_idle(limit(&p, 30));
    let ev = p.events(Role::Server);
    let last_data = ev.iter().rposition(|e| matches!(e, Event::ChannelData { .. })).unwrap();
    let at = |want: &ChannelRequest| {
        ev.iter()
            .position(|e| matches!(e, Event::ChannelRequest { request, .. } if request == want))
            .unwrap_or_else(|| panic!("{want:?} never arrived"))
    };
    let (wc_at, sig_at) = (at(&wc), at(&ChannelRequest::Signal { name: "INT".into() }));
    let eof = ev.iter().position(|e| matches!(e, Event::ChannelEof { .. })).unwrap();
    assert!(last_data < wc_at && wc_at < sig_at && sig_at < eof, "{last_data} {wc_at} {sig_at} {eof}");
    assert_eq!(received(&p, Role::Server, sch, None), data);
    assert!(p.events(Role::Client).contains(&&Event::ChannelRequestResult {
        channel: ch,
        id: sig,
        success: true
    }));
}

// ------------------------------------------------------------ after our CLOSE

#[test]
fn replies_the_application_owes_are_not_sent_after_our_close() {
    let (c, s) = configs();
    let held = Rc::new(RefCell::new(Vec::new()));
    let h = held.clone();
    let mut p = pair_with(c, s, 40, move |conn, e| match e {
        Event::ChannelOpenRequest { channel, .. } => {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap()
        }
        // The application takes its time over this one.
        Event::ChannelRequest { id, want_reply: true, .. } => h.borrow_mut().push(*id),
        _ => {}
    });
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    let env = ChannelRequest::Env { name: "LANG".into(), value: "C".into() };
    p.client.channel_request(ch, &env, true).unwrap();
    // The core's own FAILURE for this one waits behind the held reply.
    let unknown = ChannelRequest::Other { name: "x@example.com".into(), data: vec![] };
    p.client.channel_request(ch, &unknown, true).unwrap();
    p.run_idle(limit(&p, 5));
    assert_eq!(held.borrow().len(), 1);
    assert!(replies(&p).is_empty(), "the first reply is held, so both are");
    p.server.log_packets(true);
    p.server.channel_close(sch).unwrap();
    // Answering after our CLOSE is accepted, and nothing goes out.
    p.server.accept_channel_request(held.borrow()[0]).unwrap();
    p.run_idle(limit(&p, 5));
    let (sent, _) = p.server.take_packet_log();
    let numbers: Vec<u8> = sent.iter().map(|m| m[0]).collect();
    assert_eq!(numbers, [97], "only CHANNEL_CLOSE after our CLOSE, no reply");
    assert!(replies(&p).is_empty());
    assert!(p.events(Role::Client).contains(&&Event::ChannelClosed { channel: ch, unsent: 0 }));
    assert!(p.client_errors.is_empty() && p.server_errors.is_empty(), "{:?}", p.client_errors);
    assert_eq!((closes(&p, Role::Client), closes(&p, Role::Server)), (0, 0));
    assert_eq!(p.server.buffered().requests, 0, "no reply left pending");
}

#[test]
fn requests_crossing_our_close_are_dropped_but_the_exit_status_is_kept() {
    let mut p = default_pair(41);
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    let before = p.events(Role::Client).len();
    // Both at once: our CLOSE and the server's requests cross on the link.
    p.client.channel_close(ch).unwrap();
    let unknown = ChannelRequest::Other { name: "x@example.com".into(), data: vec![] };
    p.server.channel_request(sch, &unknown, true).unwrap();
    p.server.channel_request(sch, &ChannelRequest::XonXoff { client_can_do: true }, false).unwrap();
    p.server.channel_request(sch, &ChannelRequest::ExitStatus { status: 5 }, true).unwrap();
    p.client.log_packets(true);
    p.run_idle(limit(&p, 5));
    let late: Vec<&Event> = p.events(Role::Client)[before..].to_vec();
    assert!(
        !late.iter().any(|e| matches!(e, Event::ChannelRequest { .. })),
        "a request after our CLOSE reached the application: {late:?}"
    );
    assert!(late.contains(&&Event::ChannelExit { channel: ch, status: ExitStatus::Code(5) }));
    assert!(late.contains(&&Event::ChannelClosed { channel: ch, unsent: 0 }));
    let (sent, _) = p.client.take_packet_log();
    assert!(
        !sent.iter().any(|m| m[0] == 99 || m[0] == 100),
        "a reply went out after our CLOSE: {:?}",
        sent.iter().map(|m| m[0]).collect::<Vec<_>>()
    );
    assert!(p.client_errors.is_empty() && p.server_errors.is_empty(), "{:?}", p.server_errors);
    assert_eq!((closes(&p, Role::Client), closes(&p, Role::Server)), (0, 0));
}

// ------------------------------------------------------------ unknown kinds

fn x11_open() -> ChannelKind {
    let mut data = string(b"127.0.0.1");
    data.extend_from_slice(&6010u32.to_be_bytes());
    ChannelKind::Other { name: "x11".into(), data }
}

fn x11_req() -> ChannelRequest {
    let mut data = vec![0]; // single connection: false
    data.extend(string(b"MIT-MAGIC-COOKIE-1"));
    data.extend(string(b"0123456789abcdef"));
    data.extend_from_slice(&0u32.to_be_bytes());
    ChannelRequest::Other { name: "x11-req".into(), data }
}

fn break_req() -> ChannelRequest {
    ChannelRequest::Other { name: "break".into(), data: 500u32.to_be_bytes().to_vec() }
}

/// A server application that accepts every channel, channel request and
/// global request it is shown.
fn accept_everything(conn: &mut Connection, e: &Event) {
    match e {
        Event::ChannelOpenRequest { channel, .. } => {
            conn.accept_channel(*channel, ChannelOptions::default()).unwrap()
        }
        Event::ChannelRequest { id, want_reply: true, .. } => conn.accept_channel_request(*id).unwrap(),
        Event::GlobalRequest { id, want_reply: true, .. } => conn.accept_global_request(*id, None).unwrap(),
        _ => {}
    }
}

/// Sends one unknown channel open, channel request (two) and global
/// request, and keepalive probes both ways; returns the ids in order.
fn ask_unknown_things(p: &mut Pair) -> (ChannelId, ChannelId, [u64; 5]) {
    let x11 = p.client.open_channel(x11_open(), ChannelOptions::default()).unwrap();
    let ch = open_session(p, ChannelOptions::default());
    let keepalive = ChannelRequest::Other { name: "keepalive@openssh.com".into(), data: vec![] };
    let ids = [
        p.client.channel_request(ch, &x11_req(), true).unwrap(),
        p.client.channel_request(ch, &break_req(), true).unwrap(),
        p.client.channel_request(ch, &keepalive, true).unwrap(),
        p.client.global_request("x@example.com", true, b"\0\0\0\x01z").unwrap(),
        p.client.global_request("keepalive@openssh.com", true, &[]).unwrap(),
    ];
    p.run_idle(limit(p, 5));
    (x11, ch, ids)
}

#[test]
fn by_default_unknown_opens_and_requests_are_refused_without_an_event() {
    let (c, s) = configs();
    let mut p = pair_with(c, s, 42, accept_everything);
    let (x11, _, ids) = ask_unknown_things(&mut p);
    assert!(p.events(Role::Client).contains(&&Event::ChannelOpenFailed {
        channel: x11,
        reason: OpenFailure::UNKNOWN_CHANNEL_TYPE,
        description: "unknown channel type".into(),
        unsent: 0,
    }));
    assert_eq!(replies(&p), ids.iter().map(|id| (*id, false)).collect::<Vec<_>>());
    let shown: Vec<&Event> = p
        .events(Role::Server)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::ChannelOpenRequest { kind: ChannelKind::Other { .. }, .. }
                    | Event::ChannelRequest { .. }
                    | Event::GlobalRequest { .. }
            )
        })
        .collect();
    assert!(shown.is_empty(), "{shown:?}");
}

#[test]
fn with_pass_unknown_requests_the_application_answers_them() {
    let (c, mut s) = configs();
    s.pass_unknown_requests = true;
    let mut p = pair_with(c, s, 43, accept_everything);
    let (x11, _, [x11_id, break_id, keepalive_id, global_id, global_keepalive]) = ask_unknown_things(&mut p);
    assert!(p.events(Role::Client).contains(&&Event::ChannelOpened { channel: x11 }));
    // Keepalive probes are still answered by the core (with failure), in order.
    assert_eq!(
        replies(&p),
        [
            (x11_id, true),
            (break_id, true),
            (keepalive_id, false),
            (global_id, true),
            (global_keepalive, false)
        ]
    );
    let ev = p.events(Role::Server);
    assert!(ev.iter().any(|e| matches!(e, Event::ChannelOpenRequest { kind, .. } if *kind == x11_open())));
    let requests: Vec<&ChannelRequest> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ChannelRequest { request, want_reply: true, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(requests, [&x11_req(), &break_req()]);
    let globals: Vec<&GlobalRequest> = ev
        .iter()
        .filter_map(|e| match e {
            Event::GlobalRequest { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(
        globals,
        [&GlobalRequest::Other { name: "x@example.com".into(), data: b"\0\0\0\x01z".to_vec() }]
    );
}

#[test]
fn a_client_with_pass_unknown_requests_sees_the_servers_unknown_opens_and_requests() {
    for pass in [false, true] {
        let (mut c, s) = configs();
        c.pass_unknown_requests = pass;
        let mut p = pair_with(c, s, 44, |_, _| {});
        p.on_client_event = Some(Box::new(accept_everything));
        let agent = ChannelKind::Other { name: "auth-agent@openssh.com".into(), data: vec![] };
        let sch = p.server.open_channel(agent.clone(), ChannelOptions::default()).unwrap();
        let hostkeys =
            p.server.global_request("hostkeys-00@openssh.com", false, &string(b"key blob")).unwrap();
        let asked = p.server.global_request("x@example.com", true, &[]).unwrap();
        p.run_idle(limit(&p, 5));
        let client = p.events(Role::Client);
        let server = p.events(Role::Server);
        let opened = server.contains(&&Event::ChannelOpened { channel: sch });
        let open_shown =
            client.iter().any(|e| matches!(e, Event::ChannelOpenRequest { kind, .. } if *kind == agent));
        let hostkeys_shown = client.iter().any(|e| {
            matches!(e, Event::GlobalRequest { request: GlobalRequest::Other { name, data }, want_reply: false, .. }
                if name == "hostkeys-00@openssh.com" && *data == string(b"key blob"))
        });
        let reply = server.iter().find_map(|e| match e {
            Event::GlobalReply { id, success, .. } if *id == asked => Some(*success),
            _ => None,
        });
        assert_eq!(
            (opened, open_shown, hostkeys_shown, reply),
            (pass, pass, pass, Some(pass)),
            "pass={pass}"
        );
        let _ = hostkeys;
        if !pass {
            assert!(server.iter().any(|e| matches!(
                e,
                Event::ChannelOpenFailed { channel, reason: OpenFailure::UNKNOWN_CHANNEL_TYPE, .. } if *channel == sch
            )));
        }
    }
}

/// The application holds the first request of each kind; later ones (the
/// application's own and the core's automatic ones) wait behind it, and
/// the replies come out in request order once it answers.
#[test]
fn replies_keep_request_order_when_a_held_request_is_answered_late() {
    let (c, mut s) = configs();
    s.pass_unknown_requests = true;
    let held = Rc::new(RefCell::new(Vec::new()));
    let h = held.clone();
    let mut p = pair_with(c, s, 45, move |conn, e| match e {
        Event::ChannelRequest { id, request: ChannelRequest::Other { name, .. }, .. }
            if name == "x11-req" =>
        {
            h.borrow_mut().push(*id)
        }
        Event::GlobalRequest { id, request: GlobalRequest::Other { name, .. }, .. }
            if name == "x@example.com" =>
        {
            h.borrow_mut().push(*id)
        }
        _ => accept_everything(conn, e),
    });
    let ch = open_session(&mut p, ChannelOptions::default());
    let env = ChannelRequest::Env { name: "LANG".into(), value: "C".into() };
    let keepalive = ChannelRequest::Other { name: "keepalive@openssh.com".into(), data: vec![] };
    let c1 = p.client.channel_request(ch, &x11_req(), true).unwrap();
    let c2 = p.client.channel_request(ch, &env, true).unwrap();
    let c3 = p.client.channel_request(ch, &keepalive, true).unwrap();
    let g1 = p.client.global_request("x@example.com", true, &[]).unwrap();
    let g2 = p.client.request_remote_forward("localhost", 0).unwrap();
    let g3 = p.client.global_request("keepalive@openssh.com", true, &[]).unwrap();
    p.run_idle(limit(&p, 5));
    assert_eq!(held.borrow().len(), 2);
    // The server answered the env and tcpip-forward requests already, and
    // the core the keepalives: all held behind the first of each.
    assert!(replies(&p).is_empty(), "{:?}", replies(&p));
    assert_eq!(p.server.buffered().requests, 6);
    let (chan_held, global_held) = (held.borrow()[0], held.borrow()[1]);
    p.server.reject_channel_request(chan_held).unwrap();
    p.server.accept_global_request(global_held, None).unwrap();
    p.run_idle(limit(&p, 5));
    let got = replies(&p);
    let channel: Vec<_> = got.iter().filter(|(id, _)| [c1, c2, c3].contains(id)).copied().collect();
    let global: Vec<_> = got.iter().filter(|(id, _)| [g1, g2, g3].contains(id)).copied().collect();
    assert_eq!(channel, [(c1, false), (c2, true), (c3, false)]);
    assert_eq!(global, [(g1, true), (g2, true), (g3, false)]);
    assert_eq!(p.server.buffered().requests, 0);
}

#[test]
fn unanswered_unknown_requests_are_capped() {
    for global in [false, true] {
        let (c, mut s) = configs();
        s.pass_unknown_requests = true;
        // The application never answers unknown requests.
        let mut p = pair_with(c, s, 46, |conn, e| {
            if let Event::ChannelOpenRequest { channel, .. } = e {
                conn.accept_channel(*channel, ChannelOptions::default()).unwrap()
            }
        });
        let ch = open_session(&mut p, ChannelOptions::default());
        for _ in 0..65 {
            if global {
                p.client.global_request("x@example.com", true, &[]).unwrap();
            } else {
                p.client.channel_request(ch, &x11_req(), true).unwrap();
            }
        }
        p.run_idle(limit(&p, 5));
        let reason = p.events(Role::Server).into_iter().find_map(|e| match e {
            Event::Closed { reason } => Some(reason.clone()),
            _ => None,
        });
        assert_eq!(
            reason,
            Some(CloseReason::Error(Error::TooManyPendingRequests { limit: 64 })),
            "global={global}"
        );
        assert_eq!(closes(&p, Role::Server), 1);
    }
}

// ------------------------------------------------------------ windows

#[test]
fn a_one_byte_window_never_grants_zero_bytes() {
    let mut p = default_pair(47);
    let tiny = ChannelOptions { window: 1, max_packet: 32 * 1024, manual_window: true };
    let ch = open_session(&mut p, tiny);
    let sch = server_channel_for(&p, 0);
    p.client.log_packets(true);
    // Nothing received yet: nothing to grant, however much is said to be consumed.
    p.client.channel_consumed(ch, 0).unwrap();
    p.client.channel_consumed(ch, 10).unwrap();
    p.server.channel_write(sch, b"abc").unwrap();
    let mut consumed = 0;
    for _ in 0..10 {
        p.run_idle(limit(&p, 5));
        let got = received(&p, Role::Client, ch, None).len();
        p.client.channel_consumed(ch, got - consumed).unwrap();
        p.client.channel_consumed(ch, 0).unwrap();
        consumed = got;
    }
    assert_eq!(received(&p, Role::Client, ch, None), b"abc");
    let (sent, _) = p.client.take_packet_log();
    let adjusts: Vec<u32> =
        sent.iter().filter(|m| m[0] == 93).map(|m| u32::from_be_bytes(m[5..9].try_into().unwrap())).collect();
    assert_eq!(adjusts, [1, 1, 1], "one byte granted per byte consumed, never 0");
}

#[test]
fn a_reader_that_keeps_up_is_never_starved() {
    // Default (automatic) window mode over a 10 ms link: the window comes
    // back in half-window grants while data is still in flight, so the
    // sender moves a full window per round trip, never waiting longer.
    let (c, s) = configs();
    let window = 256 * 1024;
    let opts = ChannelOptions { window, max_packet: 32 * 1024, manual_window: false };
    let latency = Duration::from_millis(10);
    let link = LinkConfig { latency, jitter: Duration::ZERO, max_fragment: 16 * 1024 };
    let mut p = pair(c, s, link, 48, opts);
    p.record_transcripts(false);
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    let data = pattern(48, 16 * 1024 * 1024);
    let start = p.now;
    p.client.channel_write(ch, &data).unwrap();
    let len = data.len();
    assert!(p.run_until(limit(&p, 60), |p| received(p, Role::Server, sch, None).len() == len));
    let elapsed = p.now - start;
    let rtt = latency.as_micros() as u64 * 2;
    let round_trips = len as u64 / u64::from(window);
    // Data needs round_trips windows; one more RTT for the last window's
    // delivery, one of slack.
    let bound = (round_trips + 2) * rtt;
    assert!(
        elapsed.as_micros() as u64 <= bound,
        "{len} bytes with a {window}-byte window took {elapsed:?}, more than {round_trips}+2 round trips"
    );
    assert_eq!(received(&p, Role::Server, sch, None), data);
}

#[test]
fn a_reader_that_stops_polling_bounds_the_buffer_to_the_window_in_the_default_mode() {
    let (c, s) = configs();
    let window = 256 * 1024;
    let opts = ChannelOptions { window, max_packet: 32 * 1024, manual_window: false };
    let mut p = pair(c, s, LinkConfig::fragmenting(4000), 49, opts);
    p.record_transcripts(false);
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    let data = pattern(49, 4 * 1024 * 1024);
    p.client.channel_write(ch, &data).unwrap();
    // Moves bytes both ways by hand; the server's events are polled only
    // when `server_reads`.
    let mut got = Vec::new();
    let mut pump = |p: &mut Pair, server_reads: bool| loop {
        let mut moved = false;
        let now = p.now;
        let out = p.client.pending_transmit().to_vec();
        if !out.is_empty() {
            p.client.consume_transmit(out.len());
            p.server.handle_input(now, &out).unwrap();
            moved = true;
        }
        let out = p.server.pending_transmit().to_vec();
        if !out.is_empty() {
            p.server.consume_transmit(out.len());
            p.client.handle_input(now, &out).unwrap();
            moved = true;
        }
        while p.client.poll_event().is_some() {
            moved = true;
        }
        while server_reads && let Some(e) = p.server.poll_event() {
            if let Event::ChannelData { channel, data } = e
                && channel == sch
            {
                got.extend_from_slice(&data);
            }
            moved = true;
        }
        if !moved {
            break;
        }
    };
    pump(&mut p, false);
    // The server application read nothing: its core holds one window of
    // data events and granted nothing back; the rest waits at the writer.
    assert_eq!(p.server.channel_info(sch).unwrap().local_window, 0);
    assert_eq!(p.client.channel_info(ch).unwrap().pending, data.len() - window as usize);
    assert!(p.server.buffered().events >= (window / (32 * 1024)) as usize);
    // Reading reopens the flow, window by window.
    pump(&mut p, true);
    assert_eq!(got, data);
    assert_eq!(p.client.channel_info(ch).unwrap().pending, 0);
}

// ------------------------------------------------------------ maximum packet

#[test]
fn a_channel_open_announcing_a_maximum_packet_below_the_minimum_is_refused() {
    let mut p = default_pair(50);
    // Our options are what our CHANNEL_OPEN announces as its maximum packet.
    let tiny = |max_packet| ChannelOptions { window: 64 * 1024, max_packet, manual_window: false };
    let one = p.client.open_session(tiny(1)).unwrap();
    let below = p.client.open_session(tiny(255)).unwrap();
    let at = p.client.open_session(tiny(256)).unwrap();
    p.run_idle(limit(&p, 5));
    let ev = p.events(Role::Client);
    for ch in [one, below] {
        assert!(
            ev.contains(&&Event::ChannelOpenFailed {
                channel: ch,
                reason: OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                description: "maximum packet size too small".into(),
                unsent: 0,
            }),
            "{ch} not refused: {ev:?}"
        );
    }
    assert!(ev.contains(&&Event::ChannelOpened { channel: at }));
    // The application was asked only about the acceptable one, and the
    // connection goes on.
    let asked =
        p.events(Role::Server).iter().filter(|e| matches!(e, Event::ChannelOpenRequest { .. })).count();
    assert_eq!(asked, 1);
    assert_eq!((closes(&p, Role::Client), closes(&p, Role::Server)), (0, 0));
    p.client.channel_write(at, b"still fine").unwrap();
    p.run_idle(limit(&p, 5));
    assert_eq!(received(&p, Role::Server, server_channel_for(&p, 0), None), b"still fine");
}

#[test]
fn a_confirmation_announcing_a_maximum_packet_below_the_minimum_closes_the_connection() {
    for max_packet in [1, 255] {
        let (c, s) = configs();
        let tiny = ChannelOptions { window: 64 * 1024, max_packet, manual_window: false };
        let mut p = pair(c, s, LinkConfig::fragmenting(1500), 51, tiny);
        let ch = p.client.open_session(ChannelOptions::default()).unwrap();
        p.run_idle(limit(&p, 5));
        let expected = Error::ChannelProtocol {
            channel: ch.0,
            what: format!("maximum packet size {max_packet} is too small"),
        };
        let reasons: Vec<&CloseReason> = p
            .events(Role::Client)
            .into_iter()
            .filter_map(|e| match e {
                Event::Closed { reason } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [&CloseReason::Error(expected)], "max_packet={max_packet}");
        assert!(!p.events(Role::Client).iter().any(|e| matches!(e, Event::ChannelOpened { .. })));
        assert!(
            p.events(Role::Server)
                .iter()
                .any(|e| matches!(e, Event::Closed { reason: CloseReason::PeerDisconnect { .. } }))
        );
    }
}

#[test]
fn owned_and_borrowed_writes_interleave_in_order_across_the_window() {
    let (c, s) = configs();
    let small = ChannelOptions { window: 64 * 1024, max_packet: 16 * 1024, manual_window: false };
    let mut p = pair(c, s, LinkConfig::fragmenting(1500), 32, small);
    let ch = open_session(&mut p, ChannelOptions::default());
    let sch = server_channel_for(&p, 0);
    // Owned buffers bigger than the window wait whole in the queue, partly
    // sent; borrowed ones are copied; the peer sees one stream in order.
    let mut expected = Vec::new();
    for (i, len) in [100_000usize, 10, 70_000, 1, 200_000].into_iter().enumerate() {
        let chunk = pattern(40 + i as u64, len);
        expected.extend_from_slice(&chunk);
        let pending = if i % 2 == 0 {
            p.client.channel_write_owned(ch, chunk).unwrap()
        } else {
            p.client.channel_write(ch, &chunk).unwrap()
        };
        assert_eq!(pending, p.client.channel_info(ch).unwrap().pending, "write {i}: reported pending");
    }
    assert!(p.client.channel_info(ch).unwrap().pending > 0, "the test needs data waiting for window");
    p.client.channel_eof(ch).unwrap();
    p.run_idle(limit(&p, 30));
    assert_eq!(received(&p, Role::Server, sch, None), expected);
    assert_eq!(p.client.channel_info(ch).unwrap().pending, 0);
}

/// A server that answers a global request with UNIMPLEMENTED, as TinySSH
/// answers all of them: that answer resolves the request it names (a
/// refusal), and the replies after it still go to theirs. TinySSH names
/// the packet after the refused one (`tinyssh: true` plays that).
fn global_request_answered_with_unimplemented(tinyssh: bool) {
    use sansh::wire::msg;
    let (client, mut server) = configs();
    server.pass_unknown_requests = true;
    if tinyssh {
        server.transport.software_version = "tinyssh".into();
    }
    // The payloads the server received, oldest first: with strict kex the
    // sequence numbers restart at each NEWKEYS, so a request's number is
    // its position after the last one. The hostile server answers with raw
    // packets (its own queue of requests to answer stays pending).
    let log = Rc::new(RefCell::new(Vec::<Vec<u8>>::new()));
    let mut p = Pair::new(client, server, LinkConfig::fragmenting(1500), 11).unwrap();
    p.server.log_packets(true);
    let mut auth = accept_policy("pw");
    let mut nth = 0;
    p.on_server_event = Some(Box::new(move |conn, e| {
        auth(conn, e);
        log.borrow_mut().extend(conn.take_packet_log().1);
        if let Event::GlobalRequest { want_reply: true, .. } = e {
            nth += 1;
            let reply = match nth {
                1 => {
                    let log = log.borrow();
                    let newkeys = log.iter().rposition(|m| m[0] == msg::NEWKEYS).unwrap();
                    let after = log[newkeys + 1..].iter().position(|m| m[0] == msg::GLOBAL_REQUEST).unwrap();
                    let seq = after as u32 + u32::from(tinyssh);
                    let mut unimplemented = vec![msg::UNIMPLEMENTED];
                    unimplemented.extend_from_slice(&seq.to_be_bytes());
                    unimplemented
                }
                2 => vec![msg::REQUEST_FAILURE],
                _ => vec![msg::REQUEST_SUCCESS],
            };
            conn.inject_payload(&reply);
        }
    }));
    p.authenticate().unwrap();
    let a = p.client.global_request("first@example.com", true, &[]).unwrap();
    let b = p.client.global_request("second@example.com", true, b"x").unwrap();
    let c = p.client.global_request("third@example.com", true, &[]).unwrap();
    p.run_idle(limit(&p, 5));
    assert_eq!(replies(&p), vec![(a, false), (b, false), (c, true)]);
    assert!(!p.events(Role::Client).iter().any(|e| matches!(e, Event::Unimplemented { .. })));
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[test]
fn a_global_request_answered_with_unimplemented_is_refused() {
    global_request_answered_with_unimplemented(false);
}

#[test]
fn tinyssh_naming_the_next_packet_in_unimplemented_is_understood() {
    global_request_answered_with_unimplemented(true);
}
