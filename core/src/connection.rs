//! [`Connection`]: the sans-IO SSH connection, client or server.
//!
//! Inputs (`handle_*`), commands, then drain the outputs (`pending_transmit`,
//! `poll_event`, `poll_timeout`) after every input or command.

use crate::auth::client::{ClientAuth, Ctx, Step};
use crate::auth::server::ServerAuth;
use crate::auth::{Prompt, Secret};
use crate::channel::{
    ChannelId, ChannelInfo, ChannelKind, ChannelOptions, ChannelRequest, ConnectionProtocol, GlobalRequest,
    OpenFailure, ReplyTo, WriteData,
};
use crate::config::{ClientConfig, ServerConfig};
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::{Event, State};
use crate::keepalive::{Keepalive, KeepaliveAction, Rtt};
use crate::rng::{Rng, Seed};
use crate::time::Timestamp;
use crate::transport::{Inbound, Negotiated, PeerExtensions, Role, Shared, Transport, Upper};
use crate::wire::{MessageClass, msg};
use std::collections::VecDeque;

/// Counters for monitoring.
// `repr(C)`: what every packet updates comes first (see `Connection`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Stats {
    /// Bytes written to the socket (as consumed by the adapter).
    pub bytes_sent: u64,
    /// Bytes received from the socket.
    pub bytes_received: u64,
    /// Packets received.
    pub packets_received: u64,
    /// When the last packet was received.
    pub last_received: Option<Timestamp>,
    /// When the last packet was sent (queued for the socket), as of the
    /// last input or timer (commands carry no timestamp).
    pub last_sent: Option<Timestamp>,
    /// Packets sent.
    pub packets_sent: u64,
    /// Completed key re-exchanges (not counting the first).
    pub rekeys: u64,
    /// When the last key exchange completed.
    pub last_kex: Option<Timestamp>,
    /// Keepalive probes due. A probe due while our output is backed up (the
    /// peer reads nothing) is not written, but counts here and as
    /// unanswered, so that a peer which never reads times out.
    pub probes_sent: u64,
    /// Keepalive probes answered.
    pub probes_answered: u64,
    /// Round-trip times from answered probes.
    pub rtt: Rtt,
}

/// What a connection holds in memory, from [`Connection::buffered`].
///
/// Whatever the peer does, `output + held` stays under
/// `max_queued_output` + `max_packet_len` + 1 KiB, `input` under
/// `max_packet_len` + 64 KiB (or the one read that filled the output, for
/// an adapter that honours [`Connection::wants_input`]), `requests` under
/// 64 per connection and per channel, and `channels` under `max_channels`.
/// What the application writes (`channel_data`, and messages its commands
/// send) is its own to bound; `events` are drained by the application.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffered {
    /// Bytes of `pending_transmit()`.
    pub output: usize,
    /// Messages held while our key exchange runs (payload plus 64 bytes
    /// each for framing and bookkeeping).
    pub held: usize,
    /// Received bytes not processed yet.
    pub input: usize,
    /// The peer's want-reply requests waiting for a reply (global and
    /// channel requests).
    pub requests: usize,
    /// Channels open or opening.
    pub channels: usize,
    /// Bytes the application wrote to channels and the peer's window or
    /// our output cap has not let out yet.
    pub channel_data: usize,
    /// Events not yet polled.
    pub events: usize,
}

/// The authentication machine for our role.
#[derive(Debug)]
enum Auth {
    Client(ClientAuth),
    Server(ServerAuth),
}

/// One SSH connection's state machine. It never touches a socket or a
/// clock: bytes and time go in, bytes, events and deadlines come out.
//
// Layout (`repr(C)`, cache-line aligned): an idle connection wakes once a
// keepalive interval, long after its memory left the caches, so each
// cache line a keepalive touches is a miss. What every packet touches
// therefore comes first, in this order, and so does it inside `Shared`,
// `Stats`, `Keepalive` and `Transport`: about ten lines in all, instead of
// some thirty spread over the struct.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Connection {
    /// NAT keepalive and liveness probes.
    keepalive: Keepalive,
    /// Packet counters at the last activity check (to notice traffic).
    seen_sent: u64,
    seen_received: u64,
    /// Server: when authentication must have succeeded
    /// (`Timestamp::MAX`: no deadline; 8 bytes instead of 16, see above).
    auth_deadline: Timestamp,
    /// Set once `Event::Closed` has been queued.
    closed: bool,
    /// `shared.now` is the time of the current timed call (not a command).
    clock_is_current: bool,
    /// Whether a channel is live (`proto.live() > 0`), updated after each
    /// call that may open or close one: `after_output` reads it after every
    /// packet, and the connection protocol's own state is cold when idle.
    has_channels: bool,
    shared: Shared,
    transport: Transport,
    /// Global requests and channels, once authenticated.
    proto: ConnectionProtocol,
    auth: Auth,
    /// The authenticated user (server: as the client named it).
    user: Option<String>,
}

/// The earlier of two optional deadlines (straight-line: `poll_timeout` is
/// called after every wake).
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn new_shared(now: Timestamp, seed: Seed) -> Shared {
    Shared {
        now,
        rng: Rng::from_seed(seed),
        events: VecDeque::new(),
        state: State::Connecting,
        stats: Stats::default(),
        next_id: 0,
    }
}

impl Connection {
    /// A client connection. Its version line and KEXINIT are ready in
    /// `pending_transmit` at once.
    pub fn client(config: ClientConfig, now: Timestamp, seed: Seed) -> Result<Self, Error> {
        let mut shared = new_shared(now, seed);
        let keepalive = Keepalive::new(config.transport.keepalive.clone());
        let transport = Transport::new(Role::Client, config.transport, Vec::new(), Vec::new(), &mut shared)?;
        let auth = Auth::Client(ClientAuth::new(config.user, config.credentials, config.user_key_algorithms));
        Ok(Connection {
            shared,
            transport,
            auth,
            proto: ConnectionProtocol::new(Role::Client, config.max_channels, config.pass_unknown_requests),
            auth_deadline: Timestamp::MAX,
            user: None,
            keepalive,
            seen_sent: 0,
            clock_is_current: false,
            has_channels: false,
            seen_received: 0,
            closed: false,
        })
    }

    /// A server connection for one accepted client.
    pub fn server(config: ServerConfig, now: Timestamp, seed: Seed) -> Result<Self, Error> {
        let mut shared = new_shared(now, seed);
        let keepalive = Keepalive::new(config.transport.keepalive.clone());
        let max_channels = config.max_channels;
        let pass_unknown = config.pass_unknown_requests;
        let transport = Transport::new(
            Role::Server,
            config.transport,
            config.host_keys,
            config.user_key_algorithms.clone(),
            &mut shared,
        )?;
        let auth = Auth::Server(ServerAuth::new(
            config.auth_methods,
            config.user_key_algorithms,
            config.max_auth_failures,
            config.banner,
        ));
        let auth_deadline = config.auth_timeout.map_or(Timestamp::MAX, |d| now + d);
        Ok(Connection {
            shared,
            transport,
            auth,
            proto: ConnectionProtocol::new(Role::Server, max_channels, pass_unknown),
            auth_deadline,
            user: None,
            keepalive,
            seen_sent: 0,
            clock_is_current: false,
            has_channels: false,
            seen_received: 0,
            closed: false,
        })
    }

    // ------------------------------------------------------------- getters

    /// Client or server.
    pub fn role(&self) -> Role {
        self.transport.role()
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.shared.state
    }

    /// Whether `Event::Closed` has been emitted.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.shared.stats.clone();
        s.packets_sent = self.transport.output.packets_total;
        s.probes_sent = self.keepalive.probes_sent();
        s.probes_answered = self.keepalive.probes_answered;
        s.rtt = self.keepalive.rtt();
        s
    }

    /// The session identifier (H of the first key exchange), once known.
    pub fn session_id(&self) -> Option<&[u8; 32]> {
        self.transport.session_id()
    }

    /// The algorithms of the last completed key exchange.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.transport.negotiated()
    }

    /// The peer's version line (without CR LF), once received.
    pub fn peer_version(&self) -> Option<&str> {
        self.transport.peer_version()
    }

    /// Lines the server sent before its version line.
    pub fn banner_lines(&self) -> &[String] {
        self.transport.banner_lines()
    }

    /// What the peer's EXT_INFO announced (client role).
    pub fn peer_extensions(&self) -> &PeerExtensions {
        &self.transport.peer_ext
    }

    /// Whether a key re-exchange is running.
    pub fn is_rekeying(&self) -> bool {
        self.transport.is_rekeying()
    }

    // -------------------------------------------------------------- inputs

    /// Bytes received from the socket, in any fragmentation. On error the
    /// connection is closed (DISCONNECT queued, `Event::Closed` emitted) and
    /// the error is also returned. Input after closing is ignored.
    pub fn handle_input(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.set_now(now);
        self.shared.stats.bytes_received += bytes.len() as u64;
        let result = self.transport.receive(bytes).and_then(|()| self.process());
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        self.clock_is_current = false;
        result
    }

    /// Zero-copy input: a buffer of at least `min` bytes to read the socket
    /// into directly (saving the copy `handle_input` makes). Report what
    /// was read with `commit_received`. The slice is initialised memory,
    /// zeroed once each time the storage is (re)allocated; adapters that
    /// can fill uninitialised memory use [`Connection::receive_bytes`].
    pub fn receive_buffer(&mut self, min: usize) -> &mut [u8] {
        self.transport.receive_space(min)
    }

    /// Zero-copy input without zeroing: the receive buffer itself, with
    /// room for at least `min` more bytes. Append what the socket gives
    /// (for instance with tokio's `try_read_buf`, or `BufMut` methods),
    /// leave what it holds alone, then report the `n` bytes appended with
    /// `commit_received`. Channel data is later handed out as slices of
    /// this storage (`Event::ChannelData`), without a copy.
    pub fn receive_bytes(&mut self, min: usize) -> &mut bytes::BytesMut {
        self.transport.receive_bytes(min)
    }

    /// `n` bytes were read into the start of the `receive_buffer` slice
    /// (or appended to `receive_bytes`):
    /// process them, exactly as `handle_input` would.
    pub fn commit_received(&mut self, now: Timestamp, n: usize) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.set_now(now);
        self.shared.stats.bytes_received += n as u64;
        let result = self.transport.commit_received(n).and_then(|()| self.process());
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        self.clock_is_current = false;
        result
    }

    /// Processes buffered input, then sends what it unblocked.
    fn process(&mut self) -> Result<(), Error> {
        // What is sent meanwhile answers the peer (see `input_must_wait`).
        self.transport.output.replying = true;
        let result = self.process_packets();
        self.transport.output.replying = false;
        if result.is_ok() {
            self.after_output();
        }
        result
    }

    fn process_packets(&mut self) -> Result<(), Error> {
        loop {
            // Memory bound: a peer that sends and never reads stops being
            // read once our replies to it fill the output cap; the rest of
            // its input waits in the buffer until `consume_transmit` drains
            // the output.
            if self.transport.input_must_wait()? {
                break;
            }
            let Some(inbound) = self.transport.poll(&mut self.shared)? else { break };
            let step = match inbound {
                Inbound::Upper(range) => {
                    let t = &mut self.transport;
                    let n = t.input.buf[range.start];
                    if n == msg::CHANNEL_DATA || n == msg::CHANNEL_EXTENDED_DATA {
                        // Handed out as a slice of the receive buffer: the
                        // packet's bytes leave the buffer, nothing is copied.
                        let packet = t.input.take_processed();
                        let mut ctx = Ctx {
                            out: &mut t.output,
                            shared: &mut self.shared,
                            session_id: t.session_id.unwrap_or_default(),
                            server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
                        };
                        self.proto.handle_data(packet, range, &mut ctx)?;
                        continue;
                    }
                    let payload = &t.input.buf[range];
                    let mut ctx = Ctx {
                        out: &mut t.output,
                        shared: &mut self.shared,
                        session_id: t.session_id.unwrap_or_default(),
                        server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
                    };
                    match (MessageClass::of(payload[0]), &mut self.auth) {
                        (MessageClass::Auth, Auth::Client(a)) => a.handle(payload, &mut ctx)?,
                        (MessageClass::Auth, Auth::Server(a)) => a.handle(payload, &mut ctx)?,
                        (MessageClass::Connection, _) => {
                            let handled = self.proto.handle(payload, &mut ctx);
                            self.has_channels = self.proto.live() > 0;
                            handled?;
                            // Replies to keepalive@openssh.com probes.
                            let now = self.shared.now;
                            for seq in self.proto.answered_probes.drain(..) {
                                self.keepalive.on_probe_reply(seq, now);
                            }
                            Step::Continue
                        }
                        _ => {
                            return Err(Error::Internal {
                                what: format!("message {} routed to the upper layers", msg::name(payload[0])),
                            });
                        }
                    }
                }
                Inbound::ServiceAccepted => {
                    let t = &mut self.transport;
                    if let Auth::Client(a) = &mut self.auth {
                        a.start(&mut Ctx {
                            out: &mut t.output,
                            shared: &mut self.shared,
                            session_id: t.session_id.unwrap_or_default(),
                            server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
                        });
                    }
                    Step::Continue
                }
                Inbound::ProbeReply(seq) => {
                    self.keepalive.on_probe_reply(seq, self.shared.now);
                    Step::Continue
                }
                Inbound::GlobalRequestUnimplemented(index) => {
                    let t = &mut self.transport;
                    let mut ctx = Ctx {
                        out: &mut t.output,
                        shared: &mut self.shared,
                        session_id: t.session_id.unwrap_or_default(),
                        server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
                    };
                    self.proto.global_request_unimplemented(index, &mut ctx);
                    let now = self.shared.now;
                    for seq in self.proto.answered_probes.drain(..) {
                        self.keepalive.on_probe_reply(seq, now);
                    }
                    Step::Continue
                }
                Inbound::Disconnect { code, description } => {
                    self.close_with(CloseReason::PeerDisconnect { code, description }, None);
                    return Ok(());
                }
            };
            self.apply(step);
            if self.closed {
                return Ok(());
            }
        }
        Ok(())
    }

    /// After anything that may have opened windows or ended a key exchange:
    /// send queued channel data, then check the rekey limits.
    fn after_output(&mut self) {
        if self.closed {
            return;
        }
        debug_assert_eq!(self.has_channels, self.proto.live() > 0, "has_channels updated");
        let t = &mut self.transport;
        if self.has_channels {
            let mut ctx = Ctx {
                out: &mut t.output,
                shared: &mut self.shared,
                session_id: t.session_id.unwrap_or_default(),
                server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
            };
            self.proto.flush_all(&mut ctx);
        } else if t.output.can_send_now() {
            // What flush_all does without channels (this runs after every
            // packet; an idle connection often has none).
            t.output.data_blocked = false;
        }
        self.transport.check_rekey_limits(&mut self.shared);
        self.track_activity();
    }

    /// Tells the keepalive machine what moved since last time, and enables
    /// it once the connection can carry IGNOREs and answer probes.
    fn track_activity(&mut self) {
        let now = self.shared.now;
        let t = &mut self.transport;
        // Once both are on, the transport's state is not looked at again
        // (this runs after every packet).
        if !self.keepalive.fully_enabled() && t.first_kex_done() {
            self.keepalive.enable_ignore(now, &mut self.shared.rng);
            // Probes need an answerable request: PING once the peer offers
            // it, otherwise a global request once authenticated.
            if t.peer_ping || t.upper == Upper::Authenticated {
                self.keepalive.enable_probes(now);
            }
        }
        if self.shared.stats.packets_received != self.seen_received {
            self.seen_received = self.shared.stats.packets_received;
            self.keepalive.on_received(now);
        }
        if t.output.packets_total != self.seen_sent {
            self.seen_sent = t.output.packets_total;
            self.shared.stats.last_sent = Some(now);
            self.keepalive.on_sent(self.clock_is_current.then_some(now));
        }
    }

    /// Runs the keepalive timers.
    fn keepalive_timeout(&mut self) {
        let now = self.shared.now;
        // While the peer reads nothing (our output is backed up) IGNOREs
        // would only pile up behind the rest.
        let stopped = self.transport.output_stopped();
        let can_send = self.transport.output.can_send_now() && !stopped;
        let actions = self.keepalive.on_timeout(now, can_send, &mut self.shared.rng);
        for &action in actions.iter() {
            match action {
                KeepaliveAction::Ignore(len) => {
                    let before = self.transport.output.packets_total;
                    self.transport.random_ignore(len, &mut self.shared);
                    // The keepalive itself is not activity: the next one
                    // follows one interval later if nothing else is sent.
                    if self.seen_sent == before {
                        self.seen_sent = self.transport.output.packets_total;
                    }
                }
                // Backed up, the probe would not be read, nor its reply
                // processed before the output drains: it counts as sent
                // and unanswered, so a peer that never reads times out.
                KeepaliveAction::Probe(_) if stopped => {}
                KeepaliveAction::Probe(seq) => {
                    if self.transport.peer_ping {
                        self.transport.probe_ping(seq, &mut self.shared);
                    } else {
                        let t = &mut self.transport;
                        let mut ctx = Ctx {
                            out: &mut t.output,
                            shared: &mut self.shared,
                            session_id: t.session_id.unwrap_or_default(),
                            server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
                        };
                        self.proto.global_request(
                            "keepalive@openssh.com",
                            true,
                            &[],
                            ReplyTo::Probe(seq),
                            &mut ctx,
                        );
                    }
                }
                KeepaliveAction::Timeout { unanswered } => {
                    let text = format!("no reply to {unanswered} keepalive probes");
                    self.close_with(
                        CloseReason::KeepaliveTimeout { unanswered },
                        Some((DisconnectCode::CONNECTION_LOST, &text)),
                    );
                    return;
                }
            }
        }
    }

    /// Runs a connection-protocol command (authenticated connections only).
    fn proto_command<T>(
        &mut self,
        f: impl FnOnce(&mut ConnectionProtocol, &mut Ctx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.ensure_open()?;
        if self.transport.upper != Upper::Authenticated {
            return Err(Error::InvalidState {
                what: "the connection protocol needs an authenticated connection",
            });
        }
        let t = &mut self.transport;
        let mut ctx = Ctx {
            out: &mut t.output,
            shared: &mut self.shared,
            session_id: t.session_id.unwrap_or_default(),
            server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
        };
        let result = f(&mut self.proto, &mut ctx);
        self.has_channels = self.proto.live() > 0;
        self.after_output();
        result
    }

    /// Carries out what an authentication step decided.
    fn apply(&mut self, step: Step) {
        match step {
            Step::Continue => {}
            Step::Authenticated { user, method } => {
                self.transport.upper = Upper::Authenticated;
                self.auth_deadline = Timestamp::MAX;
                self.user = Some(user.clone());
                self.shared.set_state(State::Active);
                self.shared.events.push_back(Event::Authenticated { user, method });
            }
            Step::Close { reason, code, description } => self.close_with(reason, Some((code, &description))),
        }
    }

    /// Runs an auth command, then processes input it may have unblocked.
    fn auth_command(
        &mut self,
        f: impl FnOnce(&mut Auth, &mut Ctx<'_>) -> Result<Step, Error>,
    ) -> Result<(), Error> {
        self.ensure_open()?;
        let t = &mut self.transport;
        let mut ctx = Ctx {
            out: &mut t.output,
            shared: &mut self.shared,
            session_id: t.session_id.unwrap_or_default(),
            server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
        };
        let step = f(&mut self.auth, &mut ctx)?;
        // A server decision may release requests the client pipelined.
        let queued = match &mut self.auth {
            Auth::Server(a) if matches!(step, Step::Continue) => a.resume(&mut ctx),
            _ => Ok(Step::Continue),
        };
        self.apply(step);
        match queued {
            Ok(step) if !self.closed => self.apply(step),
            Ok(_) => {}
            Err(e) => self.fail(e),
        }
        self.after_output();
        Ok(())
    }

    /// The peer closed the TCP stream (or reading failed).
    pub fn handle_eof(&mut self, now: Timestamp) {
        if self.closed {
            return;
        }
        self.shared.now = now;
        let reason = if self.transport.mid_packet() {
            CloseReason::Error(Error::Truncated { buffered: self.transport.buffered() })
        } else {
            CloseReason::Eof
        };
        self.close_with(reason, None);
    }

    /// Time passed. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.closed {
            return;
        }
        self.set_now(now);
        self.handle_timeout_now();
        self.clock_is_current = false;
    }

    /// Sets the clock at a timed entry point. Commands carry no time, so
    /// what they sent is dated by the next timed call (never earlier than
    /// it happened: an IGNORE is never sent early for it).
    fn set_now(&mut self, now: Timestamp) {
        self.shared.now = now;
        self.clock_is_current = true;
        self.keepalive.observe_time(now);
    }

    fn handle_timeout_now(&mut self) {
        let now = self.shared.now;
        if let Some(reason) = self.transport.handle_timeout(&mut self.shared) {
            let desc = "key exchange timed out";
            self.close_with(reason, Some((DisconnectCode::KEY_EXCHANGE_FAILED, desc)));
            return;
        }
        if self.auth_deadline != Timestamp::MAX && self.auth_deadline <= now {
            let desc = "authentication timed out";
            self.close_with(CloseReason::AuthTimeout, Some((DisconnectCode::BY_APPLICATION, desc)));
            return;
        }
        if self.keepalive.poll_timeout().is_some_and(|d| d <= now) {
            self.keepalive_timeout();
        }
        self.after_output();
    }

    // ------------------------------------------------------------ commands

    /// Trust the host key of `Event::HostKey { id, .. }`; the exchange goes on.
    pub fn accept_host_key(&mut self, id: u64) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.answer_host_key(id, true, &mut self.shared)?;
        // Input buffered during the decision can be processed now; its
        // errors close the connection and are returned, as from handle_input.
        let result = self.process();
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    /// Refuse the host key: the connection closes with `HostKeyRejected`.
    pub fn reject_host_key(&mut self, id: u64) -> Result<(), Error> {
        self.ensure_open()?;
        if !self.transport.host_key_pending(id) {
            return Err(Error::UnknownId { what: "host key check", id });
        }
        self.close_with(
            CloseReason::HostKeyRejected,
            Some((DisconnectCode::HOST_KEY_NOT_VERIFIABLE, "host key not accepted")),
        );
        Ok(())
    }

    // ---------------------------------------------- client authentication

    /// Answer `Event::SignRequest`: the encoded signature (`string algorithm,
    /// string blob`, as an ssh-agent returns it), or `None` to skip the key.
    pub fn provide_signature(&mut self, id: u64, signature: Option<&[u8]>) -> Result<(), Error> {
        self.auth_command(|a, ctx| match a {
            Auth::Client(a) => a.provide_signature(id, signature, ctx),
            Auth::Server(_) => Err(Error::InvalidState { what: "provide_signature is a client command" }),
        })
    }

    /// Answer `Event::PasswordRequest` with a password, or `None` to skip.
    pub fn provide_password(&mut self, id: u64, password: Option<Secret>) -> Result<(), Error> {
        self.auth_command(|a, ctx| match a {
            Auth::Client(a) => a.provide_password(id, password, ctx),
            Auth::Server(_) => Err(Error::InvalidState { what: "provide_password is a client command" }),
        })
    }

    /// Answer `Event::PasswordChangeRequest` with a new password, or `None`.
    pub fn change_password(&mut self, id: u64, new_password: Option<Secret>) -> Result<(), Error> {
        self.auth_command(|a, ctx| match a {
            Auth::Client(a) => a.change_password(id, new_password, ctx),
            Auth::Server(_) => Err(Error::InvalidState { what: "change_password is a client command" }),
        })
    }

    /// Answer `Event::KeyboardInteractive`: one answer per prompt, or `None`
    /// to abandon the method.
    pub fn answer_keyboard_interactive(
        &mut self,
        id: u64,
        answers: Option<Vec<Secret>>,
    ) -> Result<(), Error> {
        self.auth_command(|a, ctx| match a {
            Auth::Client(a) => a.answer_keyboard_interactive(id, answers, ctx),
            Auth::Server(_) => {
                Err(Error::InvalidState { what: "answer_keyboard_interactive is a client command" })
            }
        })
    }

    // ---------------------------------------------- server authentication

    fn server_auth(
        &mut self,
        f: impl FnOnce(&mut ServerAuth, &mut Ctx<'_>) -> Result<Step, Error>,
    ) -> Result<(), Error> {
        self.auth_command(|a, ctx| match a {
            Auth::Server(a) => f(a, ctx),
            Auth::Client(_) => {
                Err(Error::InvalidState { what: "server authentication commands need a server" })
            }
        })
    }

    /// Accept `Event::AuthRequest { id, .. }`: success (or PK_OK for a key query).
    pub fn auth_accept(&mut self, id: u64) -> Result<(), Error> {
        self.server_auth(|a, ctx| a.accept(id, ctx))
    }

    /// Refuse it. `methods` (if given) replaces the methods that can continue.
    pub fn auth_reject(&mut self, id: u64, methods: Option<Vec<String>>) -> Result<(), Error> {
        self.server_auth(|a, ctx| a.reject(id, methods, ctx))
    }

    /// This factor passed, but the client must also pass one of `methods`.
    pub fn auth_partial_success(&mut self, id: u64, methods: Vec<String>) -> Result<(), Error> {
        self.server_auth(|a, ctx| a.partial_success(id, methods, ctx))
    }

    /// The password is right but expired: ask for a new one.
    pub fn auth_request_password_change(&mut self, id: u64, prompt: &str) -> Result<(), Error> {
        self.server_auth(|a, ctx| a.request_password_change(id, prompt, ctx))
    }

    /// keyboard-interactive: send prompts; answers arrive as `Event::AuthInfoResponse`.
    pub fn auth_info_request(
        &mut self,
        id: u64,
        name: &str,
        instruction: &str,
        prompts: &[Prompt],
    ) -> Result<(), Error> {
        self.server_auth(|a, ctx| a.info_request(id, name, instruction, prompts, ctx))
    }

    /// The authenticated user, once authentication succeeded.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    // ------------------------------------------------ connection protocol

    /// Sends a global request (RFC 4254 §4) once authenticated. With
    /// `want_reply`, the answer arrives as `Event::GlobalReply` with the
    /// returned id. `data` is the request-specific data, already encoded.
    pub fn global_request(&mut self, name: &str, want_reply: bool, data: &[u8]) -> Result<u64, Error> {
        self.proto_command(|p, ctx| {
            ctx.shared.next_id += 1;
            let id = ctx.shared.next_id;
            p.global_request(name, want_reply, data, ReplyTo::App(id), ctx);
            Ok(id)
        })
    }

    /// Asks the server to listen on `address:port` (0: any port) and forward
    /// connections back as `forwarded-tcpip` channels (ssh -R). The answer is
    /// `Event::GlobalReply` with the returned id; for port 0 its data holds
    /// the bound port (see [`crate::channel::bound_port`]).
    pub fn request_remote_forward(&mut self, address: &str, port: u32) -> Result<u64, Error> {
        self.send_global(GlobalRequest::TcpipForward { address: address.into(), port })
    }

    /// Stops a remote forwarding set up with `request_remote_forward`.
    pub fn cancel_remote_forward(&mut self, address: &str, port: u32) -> Result<u64, Error> {
        self.send_global(GlobalRequest::CancelTcpipForward { address: address.into(), port })
    }

    /// A typed global request with want-reply.
    fn send_global(&mut self, request: GlobalRequest) -> Result<u64, Error> {
        let mut data = Vec::new();
        request.encode_data(&mut data);
        self.global_request(request.name(), true, &data)
    }

    /// Server: grants `Event::GlobalRequest { id, .. }`. For `tcpip-forward`
    /// to port 0, pass the port actually bound.
    pub fn accept_global_request(&mut self, id: u64, bound_port: Option<u32>) -> Result<(), Error> {
        let data = bound_port.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default();
        self.proto_command(|p, ctx| p.answer_global(id, true, data, ctx))
    }

    /// Refuses `Event::GlobalRequest { id, .. }`.
    pub fn reject_global_request(&mut self, id: u64) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.answer_global(id, false, Vec::new(), ctx))
    }

    /// Opens a `session` channel (for exec, shell or a subsystem).
    pub fn open_session(&mut self, options: ChannelOptions) -> Result<ChannelId, Error> {
        self.open_channel(ChannelKind::Session, options)
    }

    /// Opens a `direct-tcpip` channel to `host:port` through the server
    /// (ssh -L: the adapter accepted a TCP connection from the originator).
    pub fn open_direct_tcpip(
        &mut self,
        host: &str,
        port: u32,
        originator_host: &str,
        originator_port: u32,
        options: ChannelOptions,
    ) -> Result<ChannelId, Error> {
        let kind = ChannelKind::DirectTcpip {
            host: host.to_owned(),
            port,
            originator_host: originator_host.to_owned(),
            originator_port,
        };
        self.open_channel(kind, options)
    }

    /// Opens a channel of any kind (server: `forwarded-tcpip` for a
    /// connection to a remote-forwarded port).
    pub fn open_channel(&mut self, kind: ChannelKind, options: ChannelOptions) -> Result<ChannelId, Error> {
        self.proto_command(|p, ctx| p.open(kind, options, ctx))
    }

    /// Accepts `Event::ChannelOpenRequest { channel, .. }`.
    pub fn accept_channel(&mut self, channel: ChannelId, options: ChannelOptions) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.accept(channel, options, ctx))
    }

    /// Refuses `Event::ChannelOpenRequest { channel, .. }`.
    pub fn reject_channel(
        &mut self,
        channel: ChannelId,
        reason: OpenFailure,
        description: &str,
    ) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.reject(channel, reason, description, ctx))
    }

    /// Sends a channel request; with `want_reply` the answer is
    /// `Event::ChannelRequestResult` with the returned id.
    pub fn channel_request(
        &mut self,
        channel: ChannelId,
        request: &ChannelRequest,
        want_reply: bool,
    ) -> Result<u64, Error> {
        self.proto_command(|p, ctx| p.request(channel, request, want_reply, ctx))
    }

    /// Runs `command` on a session channel (`exec`, want-reply).
    pub fn exec(&mut self, channel: ChannelId, command: &str) -> Result<u64, Error> {
        self.channel_request(channel, &ChannelRequest::exec(command), true)
    }

    /// Answers `Event::ChannelRequest { id, want_reply: true, .. }` with success.
    pub fn accept_channel_request(&mut self, id: u64) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.answer_request(id, true, ctx))
    }

    /// Answers `Event::ChannelRequest { id, want_reply: true, .. }` with failure.
    pub fn reject_channel_request(&mut self, id: u64) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.answer_request(id, false, ctx))
    }

    /// Writes data to a channel. Everything is accepted: what the peer's
    /// window does not allow yet stays queued in the channel and goes out as
    /// the window opens. Returns the bytes queued (apply backpressure while
    /// it is large; `Event::ChannelWritable` says when it drained).
    pub fn channel_write(&mut self, channel: ChannelId, data: &[u8]) -> Result<usize, Error> {
        self.proto_command(|p, ctx| p.write(channel, None, WriteData::Borrowed(data), ctx))
    }

    /// Writes extended data (`code` 1: stderr), queued like `channel_write`.
    pub fn channel_write_extended(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
    ) -> Result<usize, Error> {
        self.proto_command(|p, ctx| p.write(channel, Some(code), WriteData::Borrowed(data), ctx))
    }

    /// `channel_write` for data the caller owns: what has to wait for the
    /// peer's window is queued without a copy.
    pub fn channel_write_owned(&mut self, channel: ChannelId, data: Vec<u8>) -> Result<usize, Error> {
        self.proto_command(|p, ctx| p.write(channel, None, WriteData::Owned(data), ctx))
    }

    /// `channel_write_extended` for data the caller owns (no copy while it waits).
    pub fn channel_write_extended_owned(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: Vec<u8>,
    ) -> Result<usize, Error> {
        self.proto_command(|p, ctx| p.write(channel, Some(code), WriteData::Owned(data), ctx))
    }

    /// Sends EOF once the queued data is out.
    pub fn channel_eof(&mut self, channel: ChannelId) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.eof(channel, ctx))
    }

    /// Closes the channel once the queued data is out; `Event::ChannelClosed`
    /// follows the peer's CLOSE.
    pub fn channel_close(&mut self, channel: ChannelId) -> Result<(), Error> {
        self.proto_command(|p, ctx| p.close(channel, ctx))
    }

    /// For channels with `manual_window`: the application consumed `n`
    /// bytes of the channel's data, so the peer may send that much more.
    pub fn channel_consumed(&mut self, channel: ChannelId, n: usize) -> Result<(), Error> {
        self.proto_command(|p, ctx| {
            p.consumed(channel, n, ctx);
            Ok(())
        })
    }

    /// Flow-control state of a channel.
    pub fn channel_info(&self, channel: ChannelId) -> Option<ChannelInfo> {
        self.proto.info(channel)
    }

    /// Channels open or opening.
    pub fn channel_count(&self) -> usize {
        self.proto.live()
    }

    /// Start a key re-exchange now (no-op if one is running).
    pub fn rekey(&mut self) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.rekey(&mut self.shared)
    }

    /// Send SSH_MSG_PING (when the peer offers `ping@openssh.com`); the
    /// answer arrives as `Event::Pong`.
    pub fn ping(&mut self, data: &[u8]) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.ping(data, &mut self.shared)?;
        self.after_output();
        Ok(())
    }

    /// Send SSH_MSG_IGNORE carrying `data`.
    pub fn send_ignore(&mut self, data: &[u8]) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.ignore(data, &mut self.shared);
        self.after_output();
        Ok(())
    }

    /// Send SSH_MSG_DEBUG.
    pub fn send_debug(&mut self, always_display: bool, message: &str) -> Result<(), Error> {
        self.ensure_open()?;
        self.transport.debug(always_display, message, &mut self.shared);
        self.after_output();
        Ok(())
    }

    /// Sends an arbitrary payload as the next packet, bypassing every check:
    /// tests use it to play a hostile peer. Only with feature `testing`.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn inject_payload(&mut self, payload: &[u8]) {
        self.transport.output.send(payload, &mut self.shared.rng);
    }

    /// Starts (or stops) recording plaintext packet payloads, for tests that
    /// assert on what crossed the wire. Only with feature `testing`.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn log_packets(&mut self, on: bool) {
        self.transport.output.log = on.then(Vec::new);
        self.transport.log_in = on.then(Vec::new);
        self.transport.input.logging = on;
    }

    /// Takes the payloads logged since the last call: (sent, received).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn take_packet_log(&mut self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let sent = self.transport.output.log.as_mut().map(std::mem::take).unwrap_or_default();
        let received = self.transport.log_in.as_mut().map(std::mem::take).unwrap_or_default();
        (sent, received)
    }

    /// Close: queue DISCONNECT with `code` and `description`, emit `Closed`.
    pub fn disconnect(&mut self, code: DisconnectCode, description: &str) -> Result<(), Error> {
        self.ensure_open()?;
        let reason = CloseReason::Local { code, description: description.to_owned() };
        self.close_with(reason, Some((code, description)));
        Ok(())
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.closed { Err(Error::Closed) } else { Ok(()) }
    }

    /// Closes because of `err`, telling the peer why where possible.
    fn fail(&mut self, err: Error) {
        let code = err.disconnect_code();
        let text = err.to_string();
        self.close_with(CloseReason::Error(err), Some((code, &text)));
    }

    fn close_with(&mut self, reason: CloseReason, disconnect: Option<(DisconnectCode, &str)>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.transport.close(disconnect, &mut self.shared);
        let state = if self.transport.output.pending().is_empty() { State::Closed } else { State::Closing };
        self.shared.set_state(state);
        self.shared.events.push_back(Event::Closed { reason });
    }

    // ------------------------------------------------------------- outputs

    /// Bytes to write to the socket. Call `consume_transmit` with how many
    /// were written.
    pub fn pending_transmit(&self) -> &[u8] {
        self.transport.output.pending()
    }

    /// `n` bytes of `pending_transmit` were written. This is an input too:
    /// it lets out channel data that waited for room, and resumes input
    /// that waited for the output to drain (see [`Connection::wants_input`]),
    /// so drain the outputs (events included) after it as after any input.
    pub fn consume_transmit(&mut self, n: usize) {
        let n = n.min(self.transport.output.pending().len());
        self.shared.stats.bytes_sent += n as u64;
        self.transport.output.consume(n);
        if self.closed {
            if self.transport.output.pending().is_empty() {
                self.shared.set_state(State::Closed);
            }
            return;
        }
        let out = &self.transport.output;
        if self.transport.output_stopped() {
            if out.drained() {
                // Under the low-water mark: go on with the input left
                // unprocessed. Its errors close the connection as they
                // would from `handle_input` (the adapter sees `Closed`).
                if let Err(e) = self.process() {
                    self.fail(e);
                }
            }
        } else if out.data_blocked && out.data_room() {
            // Channel data waits for room in the output: there is some now.
            self.after_output();
        }
    }

    /// Whether the adapter should read the socket now. False while our
    /// output is backed up (`TransportConfig::max_queued_output`: the peer
    /// is not reading what we send) and once closed: leaving the peer's
    /// bytes in the socket makes TCP push back on it. It turns true again
    /// in `consume_transmit`, so an adapter that stops reading must keep
    /// writing. Reading anyway is allowed but bounded: past
    /// `max_packet_len` + 64 KiB of unprocessed input the connection closes
    /// with `Error::InputOverflow`.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        !self.closed && !self.transport.output_stopped()
    }

    /// What the connection holds in memory on the peer's behalf (see
    /// [`Buffered`]): for monitoring, and for tests of the memory bound.
    #[must_use]
    pub fn buffered(&self) -> Buffered {
        Buffered {
            output: self.transport.output.pending().len(),
            held: self.transport.output.held(),
            input: self.transport.buffered(),
            requests: self.proto.pending_requests(),
            channels: self.proto.live(),
            channel_data: self.proto.queued_data(),
            events: self.shared.events.len(),
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let Some(event) = self.shared.events.pop_front() else {
            // Drained after a burst (the handshake, a bulk read): an idle
            // connection should not keep the burst's capacity.
            if self.shared.events.capacity() > 4 {
                self.shared.events.shrink_to_fit();
            }
            return None;
        };
        // Data handed to the application counts as consumed, unless the
        // channel replenishes its window by hand (`channel_consumed`). The
        // grant may queue a WINDOW_ADJUST: drain pending_transmit after events.
        if let Event::ChannelData { channel, data } | Event::ChannelExtendedData { channel, data, .. } =
            &event
            && !self.closed
            && self.proto.auto_window(*channel)
        {
            let t = &mut self.transport;
            let mut ctx = Ctx {
                out: &mut t.output,
                shared: &mut self.shared,
                session_id: t.session_id.unwrap_or_default(),
                server_sig_algs: t.peer_ext.server_sig_algs.as_deref(),
            };
            self.proto.consumed(*channel, data.len(), &mut ctx);
        }
        if let Event::ChannelClosed { channel, .. } | Event::ChannelOpenFailed { channel, .. } = &event {
            self.proto.retire(*channel);
        }
        Some(event)
    }

    /// When `handle_timeout` should next be called. Cheap: adapters call
    /// it after every wake, and it reads only deadlines kept beside what
    /// every packet touches anyway.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.closed {
            return None;
        }
        let auth = (self.auth_deadline != Timestamp::MAX).then_some(self.auth_deadline);
        earliest(earliest(self.transport.poll_timeout(), auth), self.keepalive.poll_timeout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Each cache line an idle connection's keepalive touches is a likely
    /// miss (see the comment on `Connection`). If this fails, new state
    /// went among the hot fields: put it after them, or behind a Box.
    #[test]
    fn what_a_keepalive_touches_stays_in_ten_cache_lines() {
        assert_eq!(align_of::<Connection>(), 64);
        assert_eq!(offset_of!(Connection, keepalive), 0);
        assert!(
            size_of::<Keepalive>() <= 128,
            "the keepalive machine takes {} bytes",
            size_of::<Keepalive>()
        );
        // The keepalive machine, counters, deadline and flags, then the
        // clock, the event queue and the per-packet stats: four lines.
        let shared = offset_of!(Connection, shared);
        assert!(shared > offset_of!(Connection, has_channels));
        let head = shared
            + offset_of!(Shared, stats)
            + offset_of!(Stats, last_sent)
            + size_of::<Option<Timestamp>>();
        assert!(head <= 4 * 64, "the hot head ends at byte {head}");
        assert!(
            offset_of!(Shared, now) < offset_of!(Shared, stats)
                && offset_of!(Shared, events) < offset_of!(Shared, stats)
        );
        // The transport's deadlines, flags, input and output: five lines,
        // also in `testing` builds (their packet logs come after).
        assert_eq!(offset_of!(Connection, transport) % 64, 0);
        let hot = Transport::HOT_LEN;
        assert!(hot <= 5 * 64, "the transport's hot part takes {hot} bytes");
    }
}
