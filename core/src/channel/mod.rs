//! The connection protocol (RFC 4254): global requests and channels, with
//! flow control in both directions.
//!
//! Outbound data waits in the channel (not in the transport) until the
//! peer's window and our key exchange allow it, so a large write straddles a
//! rekey without a copy, and requests, EOF and CLOSE always follow the data
//! written before them (a server's exit-status never overtakes its stdout).
//! Inbound data is bounded by the window we grant, which is only replenished
//! as the application consumes data.

mod types;

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

pub use types::{
    ChannelId, ChannelKind, ChannelOptions, ChannelRequest, ExitStatus, GlobalRequest, OpenFailure, Pty, tty,
};

// The machinery is crate-private; the types above are the public API.

use crate::auth::client::Ctx;
use crate::error::Error;
use crate::event::Event;
use crate::transport::Role;
use std::borrow::Cow;

use crate::wire::Reader;
use crate::wire::msg::{self, Message};

/// The port a `tcpip-forward` to port 0 was bound to, from the data of its
/// `Event::GlobalReply` (RFC 4254 §7.1).
pub fn bound_port(reply_data: &[u8]) -> Option<u32> {
    Reader::new(reply_data).u32("bound port").ok()
}

/// Largest data payload we put in one packet, whatever the peer allows:
/// OpenSSH's own size, and safe for every transport (RFC 4253 asks 35000).
const MAX_DATA_CHUNK: u32 = 32 * 1024;

/// Want-reply requests from the peer waiting for their replies, per
/// connection (global) and per channel. Replies go out in order, so one the
/// application has not answered holds back the rest; a peer that piles up
/// more is flooding.
const MAX_PENDING_REQUESTS: usize = 64;

/// Smallest maximum packet size we accept from a peer. Every data packet
/// costs ~40 bytes of framing, padding and tag: a peer announcing 1 made us
/// queue ~36 bytes of output per byte written (found by fuzzing). Real
/// peers announce 16–32 KiB.
const MIN_PEER_MAX_PACKET: u32 = 256;

/// OpenSSH's liveness probe, as a global request and (from sshd's
/// ClientAliveInterval) as a channel request. It only wants an answer, any
/// answer, so the core always gives one itself: an application that does
/// not know it can never make the peer time us out.
const KEEPALIVE_REQUEST: &str = "keepalive@openssh.com";

/// Who is waiting for the reply to a global request we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// The application, through `Event::GlobalReply`.
    App(u64),
    /// A keepalive probe with this sequence number: no event.
    Probe(u64),
}

/// A want-reply request from the peer, in arrival order: replies must go
/// out in that order (RFC 4254 §4, §6), whoever answers them.
#[derive(Debug)]
struct Incoming {
    id: u64,
    /// `Some((success, reply data))` once answered.
    reply: Option<(bool, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    /// We sent CHANNEL_OPEN and wait for the confirmation.
    Opening,
    /// The peer sent CHANNEL_OPEN and waits for the application's answer.
    Offered,
    /// Open.
    Open,
}

/// Data waiting for window: a run of bytes for the normal (None) or an
/// extended (Some(code)) stream.
/// Data the application writes to a channel.
#[derive(Debug)]
pub(crate) enum WriteData<'a> {
    Borrowed(&'a [u8]),
    /// Kept as it is when it has to wait for the window: no copy.
    Owned(Vec<u8>),
}

impl WriteData<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            WriteData::Borrowed(d) => d,
            WriteData::Owned(v) => v,
        }
    }
}

#[derive(Debug)]
struct Segment {
    code: Option<u32>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already sent.
    sent: usize,
}

/// What waits in a channel's outbound queue, in the order the application
/// asked for it: a request or EOF goes out only after the data written
/// before it, which may be waiting for the peer's window.
#[derive(Debug)]
enum Outbound {
    Data(Segment),
    /// A whole CHANNEL_REQUEST payload.
    Request(Vec<u8>),
    Eof,
}

#[derive(Debug)]
struct Channel {
    kind: ChannelKind,
    state: ChannelState,
    remote_id: u32,
    // Outbound.
    remote_window: u64,
    remote_max_packet: u32,
    queue: VecDeque<Outbound>,
    /// Data bytes in `queue` not sent yet.
    queued: usize,
    eof_wanted: bool,
    close_wanted: bool,
    close_sent: bool,
    /// Emit `ChannelWritable` once the queue drains.
    notify_writable: bool,
    // Inbound.
    window_size: u32,
    /// Window the peer may still use.
    local_window: u32,
    /// Consumed bytes not yet granted back.
    unacked: u32,
    max_packet: u32,
    manual_window: bool,
    eof_received: bool,
    close_received: bool,
    // Requests.
    ours: VecDeque<u64>,
    theirs: VecDeque<Incoming>,
}

impl Channel {
    fn new(kind: ChannelKind, state: ChannelState, opts: ChannelOptions) -> Self {
        Channel {
            kind,
            state,
            remote_id: 0,
            remote_window: 0,
            remote_max_packet: 0,
            queue: VecDeque::new(),
            queued: 0,
            eof_wanted: false,
            close_wanted: false,
            close_sent: false,
            notify_writable: false,
            window_size: opts.window,
            local_window: opts.window,
            unacked: 0,
            max_packet: opts.max_packet,
            manual_window: opts.manual_window,
            eof_received: false,
            close_received: false,
            ours: VecDeque::new(),
            theirs: VecDeque::new(),
        }
    }

    /// The application consumed `n` more bytes: the window to grant back
    /// now, if any. Never more than was received and not granted back yet,
    /// and never zero (a window of 1 byte has a half of 0). In batches of
    /// half a window while the peer has at least half a window left; below
    /// that (as OpenSSH does) everything consumed, at once. Waiting for a
    /// batch there left a reader that keeps up with consumed bytes stuck in
    /// `unacked` after each burst, and the sender short of a third of its
    /// window every other round trip.
    fn grant(&mut self, n: usize) -> Option<u32> {
        let outstanding = self.window_size - self.local_window - self.unacked;
        self.unacked += n.min(outstanding as usize) as u32;
        let half = self.window_size / 2;
        if self.unacked > 0 && (self.unacked >= half || self.local_window < half) {
            let add = self.unacked;
            self.unacked = 0;
            self.local_window += add;
            Some(add)
        } else {
            None
        }
    }
}

/// A channel-table slot. `Closed` remembers that a number was used, so that
/// a late or duplicate message for it gets a precise error. `Ended` is a
/// channel that has finished while the event saying so (`ChannelClosed` or
/// `ChannelOpenFailed`) still waits in the queue: its number is not reused
/// until the application has polled that event, so a late event can never be
/// read as news about a newer channel with the same number.
#[derive(Debug)]
enum Slot {
    Free,
    Closed,
    Ended,
    Live(Box<Channel>),
}

/// Snapshot of a channel's flow-control state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// What the channel carries.
    pub kind: ChannelKind,
    /// Whether it is open (false while the open is in flight).
    pub open: bool,
    /// Bytes accepted by `channel_write` and not yet sent (backpressure).
    pub pending: usize,
    /// Bytes the peer still lets us send.
    pub remote_window: u64,
    /// Bytes the peer may still send us before we grant more.
    pub local_window: u32,
    /// Whether the peer sent EOF.
    pub eof_received: bool,
}

/// State of the connection protocol for one connection.
#[derive(Debug)]
pub(crate) struct ConnectionProtocol {
    role: Role,
    slots: Vec<Slot>,
    live: usize,
    max_channels: usize,
    /// Our want-reply global requests, oldest first.
    pending_replies: VecDeque<ReplyTo>,
    /// Peer's want-reply global requests, oldest first.
    incoming: VecDeque<Incoming>,
    /// Keepalive probes whose reply arrived, for the keepalive machine.
    pub(crate) answered_probes: Vec<u64>,
    /// Channel opens and requests (channel and global) that the core does
    /// not model go to the application as events instead of being refused
    /// (`pass_unknown_requests` in the config).
    pass_unknown: bool,
}

fn violation(channel: u32, what: impl Into<String>) -> Error {
    Error::ChannelProtocol { channel, what: what.into() }
}

impl ConnectionProtocol {
    pub(crate) fn new(role: Role, max_channels: usize, pass_unknown: bool) -> Self {
        ConnectionProtocol {
            pass_unknown,
            role,
            slots: Vec::new(),
            live: 0,
            max_channels: max_channels.max(1),
            pending_replies: VecDeque::new(),
            incoming: VecDeque::new(),
            answered_probes: Vec::new(),
        }
    }

    fn next_id(ctx: &mut Ctx<'_>) -> u64 {
        ctx.shared.next_id += 1;
        ctx.shared.next_id
    }

    fn allocate(&mut self, ch: Channel) -> Option<ChannelId> {
        if self.live >= self.max_channels {
            return None;
        }
        let idx = match self.slots.iter().position(|s| matches!(s, Slot::Free | Slot::Closed)) {
            Some(i) => i,
            None => {
                self.slots.push(Slot::Free);
                self.slots.len() - 1
            }
        };
        self.slots[idx] = Slot::Live(Box::new(ch));
        self.live += 1;
        Some(ChannelId(idx as u32))
    }

    fn release(&mut self, id: u32) {
        if let Some(slot @ Slot::Live(_)) = self.slots.get_mut(id as usize) {
            *slot = Slot::Ended;
            self.live -= 1;
        }
    }

    /// The application has seen that channel `id` ended: its number may be
    /// reused from now on.
    pub(crate) fn retire(&mut self, id: ChannelId) {
        if let Some(slot @ Slot::Ended) = self.slots.get_mut(id.0 as usize) {
            *slot = Slot::Closed;
        }
    }

    /// The live channel a peer message names, or a precise error.
    fn peer_channel(&mut self, id: u32, what: &str) -> Result<&mut Channel, Error> {
        match self.slots.get_mut(id as usize) {
            Some(Slot::Live(ch)) => Ok(ch),
            Some(Slot::Closed | Slot::Ended) => {
                Err(violation(id, format!("{what} for a channel that is already closed")))
            }
            _ => Err(violation(id, format!("{what} for a channel that does not exist"))),
        }
    }

    fn channel(&mut self, id: ChannelId) -> Result<&mut Channel, Error> {
        match self.slots.get_mut(id.0 as usize) {
            Some(Slot::Live(ch)) => Ok(ch),
            // The peer closed it (or refused to open it) and the application
            // has not read that event yet: say so, not "no such channel".
            Some(Slot::Ended) => Err(Error::ChannelClosed { channel: id.0 }),
            _ => Err(Error::UnknownChannel { channel: id.0 }),
        }
    }

    pub(crate) fn info(&self, id: ChannelId) -> Option<ChannelInfo> {
        match self.slots.get(id.0 as usize) {
            Some(Slot::Live(ch)) => Some(ChannelInfo {
                kind: ch.kind.clone(),
                open: ch.state == ChannelState::Open,
                pending: ch.queued,
                remote_window: ch.remote_window,
                local_window: ch.local_window,
                eof_received: ch.eof_received,
            }),
            _ => None,
        }
    }

    /// Number of live channels (open or opening).
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The peer's want-reply requests (global and channel) not yet replied to.
    pub(crate) fn pending_requests(&self) -> usize {
        let channels: usize = self.live_channels().map(|ch| ch.theirs.len()).sum();
        self.incoming.len() + channels
    }

    /// Channel data the application wrote that is not sealed yet.
    pub(crate) fn queued_data(&self) -> usize {
        self.live_channels().map(|ch| ch.queued).sum()
    }

    fn live_channels(&self) -> impl Iterator<Item = &Channel> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Live(ch) => Some(&**ch),
            _ => None,
        })
    }

    // ------------------------------------------------------------ inbound

    /// Handles CHANNEL_DATA or CHANNEL_EXTENDED_DATA at `range` of
    /// `packet` (bytes taken from the receive buffer): the data goes out
    /// in the event as a slice of `packet`, without a copy.
    pub(crate) fn handle_data(
        &mut self,
        mut packet: BytesMut,
        range: std::ops::Range<usize>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        let payload = &packet[range];
        let n = payload[0];
        let name = msg::name(n);
        // Borrowed from the payload: parsed, then sliced out of `packet`.
        let (id, code, data) = if n == msg::CHANNEL_DATA {
            let d = msg::parse::<msg::ChannelData>(payload)?;
            (d.recipient, None, d.data)
        } else {
            let d = msg::parse::<msg::ChannelExtendedData>(payload)?;
            (d.recipient, Some(d.code), d.data)
        };
        let len = data.len();
        // Where the data sits in `packet` (it is a subslice of it).
        let offset = data.as_ptr() as usize - packet.as_ptr() as usize;
        let ch = self.open_channel(id, name)?;
        if ch.eof_received {
            return Err(violation(id, format!("{name} after the peer's EOF")));
        }
        if len > ch.max_packet as usize {
            return Err(violation(
                id,
                format!("{name} of {len} bytes exceeds the maximum packet of {}", ch.max_packet),
            ));
        }
        if len > ch.local_window as usize {
            return Err(violation(
                id,
                format!("{name} of {len} bytes exceeds the window of {}", ch.local_window),
            ));
        }
        ch.local_window -= len as u32;
        if ch.close_sent || len == 0 {
            // Data in flight when we closed: accepted and dropped (RFC 4254 §5.3).
            return Ok(());
        }
        let channel = ChannelId(id);
        packet.advance(offset);
        packet.truncate(len);
        let data = packet.freeze();
        ctx.shared.events.push_back(match code {
            None => Event::ChannelData { channel, data },
            Some(code) => Event::ChannelExtendedData { channel, code, data },
        });
        Ok(())
    }

    /// Handles a connection-protocol message.
    pub(crate) fn handle(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let n = payload[0];
        match n {
            msg::GLOBAL_REQUEST => self.on_global_request(msg::parse(payload)?, ctx),
            msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
                let Some(to) = self.pending_replies.pop_front() else {
                    return Err(Error::UnexpectedMessage {
                        number: n,
                        message: msg::name(n),
                        phase: "with no global request pending",
                    });
                };
                ctx.out.global_request_seqs.pop_front();
                let (success, data) = if n == msg::REQUEST_SUCCESS {
                    (true, msg::parse::<msg::RequestSuccess>(payload)?.data)
                } else {
                    (false, msg::parse::<msg::RequestFailure>(payload)?.data)
                };
                match to {
                    ReplyTo::App(id) => {
                        ctx.shared.events.push_back(Event::GlobalReply { id, success, data: data.to_vec() })
                    }
                    ReplyTo::Probe(seq) => self.answered_probes.push(seq),
                }
                Ok(())
            }
            msg::CHANNEL_OPEN => self.on_open(msg::parse(payload)?, ctx),
            msg::CHANNEL_OPEN_CONFIRMATION => {
                let msg::ChannelOpenConfirmation { recipient: id, sender: remote_id, window, max_packet } =
                    msg::parse(payload)?;
                let ch = self.peer_channel(id, "CHANNEL_OPEN_CONFIRMATION")?;
                if ch.state != ChannelState::Opening {
                    return Err(violation(id, "CHANNEL_OPEN_CONFIRMATION for a channel not being opened"));
                }
                if max_packet < MIN_PEER_MAX_PACKET {
                    return Err(violation(id, format!("maximum packet size {max_packet} is too small")));
                }
                ch.state = ChannelState::Open;
                ch.remote_id = remote_id;
                ch.remote_window = u64::from(window);
                ch.remote_max_packet = max_packet;
                ctx.shared.events.push_back(Event::ChannelOpened { channel: ChannelId(id) });
                self.flush(id, ctx);
                Ok(())
            }
            msg::CHANNEL_OPEN_FAILURE => {
                let failure = msg::parse::<msg::ChannelOpenFailure>(payload)?;
                let id = failure.recipient;
                let description = String::from_utf8_lossy(failure.description).into_owned();
                let ch = self.peer_channel(id, "CHANNEL_OPEN_FAILURE")?;
                if ch.state != ChannelState::Opening {
                    return Err(violation(id, "CHANNEL_OPEN_FAILURE for a channel not being opened"));
                }
                let unsent = ch.queued;
                self.release(id);
                ctx.shared.events.push_back(Event::ChannelOpenFailed {
                    channel: ChannelId(id),
                    reason: OpenFailure(failure.reason),
                    description,
                    unsent,
                });
                Ok(())
            }
            msg::CHANNEL_WINDOW_ADJUST => {
                let msg::ChannelWindowAdjust { recipient: id, bytes_to_add: add } = msg::parse(payload)?;
                let ch = self.open_channel(id, "CHANNEL_WINDOW_ADJUST")?;
                let window = ch.remote_window + u64::from(add);
                if window > u64::from(u32::MAX) {
                    return Err(violation(id, format!("window adjust to {window}, beyond 2^32-1")));
                }
                ch.remote_window = window;
                self.flush(id, ctx);
                Ok(())
            }
            msg::CHANNEL_DATA | msg::CHANNEL_EXTENDED_DATA => {
                // `Connection` routes data to `handle_data` with its packet;
                // anything else (tests) pays a copy.
                self.handle_data(BytesMut::from(payload), 0..payload.len(), ctx)
            }
            msg::CHANNEL_EOF => {
                let id = msg::parse::<msg::ChannelEof>(payload)?.recipient;
                let ch = self.open_channel(id, "CHANNEL_EOF")?;
                if !ch.eof_received {
                    ch.eof_received = true;
                    if !ch.close_sent {
                        ctx.shared.events.push_back(Event::ChannelEof { channel: ChannelId(id) });
                    }
                }
                Ok(())
            }
            msg::CHANNEL_CLOSE => {
                let id = msg::parse::<msg::ChannelClose>(payload)?.recipient;
                let ch = self.open_channel(id, "CHANNEL_CLOSE")?;
                ch.close_received = true;
                // The peer takes nothing more: data still queued is dropped and reported.
                let unsent = ch.queued;
                ch.queue.clear();
                ch.queued = 0;
                if !ch.close_sent {
                    ch.close_sent = true;
                    let remote = ch.remote_id;
                    send_close(remote, ctx);
                }
                self.release(id);
                ctx.shared.events.push_back(Event::ChannelClosed { channel: ChannelId(id), unsent });
                Ok(())
            }
            msg::CHANNEL_REQUEST => self.on_channel_request(msg::parse(payload)?, ctx),
            msg::CHANNEL_SUCCESS | msg::CHANNEL_FAILURE => {
                let name = msg::name(n);
                let id = if n == msg::CHANNEL_SUCCESS {
                    msg::parse::<msg::ChannelSuccess>(payload)?.recipient
                } else {
                    msg::parse::<msg::ChannelFailure>(payload)?.recipient
                };
                let ch = self.open_channel(id, name)?;
                let Some(request) = ch.ours.pop_front() else {
                    return Err(violation(id, format!("{name} with no request pending")));
                };
                ctx.shared.events.push_back(Event::ChannelRequestResult {
                    channel: ChannelId(id),
                    id: request,
                    success: n == msg::CHANNEL_SUCCESS,
                });
                Ok(())
            }
            _ => Err(Error::UnexpectedMessage {
                number: n,
                message: msg::name(n),
                phase: "(unknown connection-protocol message)",
            }),
        }
    }

    /// The channel, which must be open and not closed by the peer.
    fn open_channel(&mut self, id: u32, what: &str) -> Result<&mut Channel, Error> {
        let ch = self.peer_channel(id, what)?;
        if ch.state != ChannelState::Open {
            return Err(violation(id, format!("{what} for a channel that is not open yet")));
        }
        if ch.close_received {
            return Err(violation(id, format!("{what} after the peer's CLOSE")));
        }
        Ok(ch)
    }

    fn on_global_request(&mut self, m: msg::GlobalRequest<'_>, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let msg::GlobalRequest { name, want_reply, data } = m;
        let request = match (self.role, name) {
            (Role::Server, types::TCPIP_FORWARD | types::CANCEL_TCPIP_FORWARD) => {
                let malformed = |reason| Error::Malformed {
                    message: <msg::GlobalRequest<'_> as Message<'_>>::NAME,
                    reason,
                };
                Some(GlobalRequest::decode(name, data).map_err(malformed)?)
            }
            // OpenSSH servers probe clients with it (ClientAliveInterval)
            // and count unanswered probes: always answered by the core.
            (_, KEEPALIVE_REQUEST) => None,
            // Any other (hostkeys-00@openssh.com, no-more-sessions@openssh.com,
            // streamlocal-forward@openssh.com, a forward in the wrong direction):
            // the application's if it asked for them.
            (_, other) if self.pass_unknown => {
                Some(GlobalRequest::Other { name: other.to_owned(), data: data.to_vec() })
            }
            _ => None,
        };
        if want_reply && self.incoming.len() >= MAX_PENDING_REQUESTS {
            return Err(Error::TooManyPendingRequests { limit: MAX_PENDING_REQUESTS });
        }
        let id = Self::next_id(ctx);
        match request {
            Some(request) => {
                if want_reply {
                    self.incoming.push_back(Incoming { id, reply: None });
                }
                ctx.shared.events.push_back(Event::GlobalRequest { id, request, want_reply });
            }
            // Requests we do not understand get REQUEST_FAILURE, as OpenSSH
            // does; keepalive probes (keepalive@openssh.com) rely on that.
            // It waits behind replies the application still owes: replies
            // go out in request order.
            None if want_reply => {
                self.incoming.push_back(Incoming { id, reply: Some((false, Vec::new())) });
                self.flush_global_replies(ctx);
            }
            None => {}
        }
        Ok(())
    }

    fn flush_global_replies(&mut self, ctx: &mut Ctx<'_>) {
        while let Some(Incoming { reply: Some((ok, data)), .. }) = self.incoming.front() {
            let mut p = Vec::with_capacity(1 + data.len());
            if *ok {
                msg::RequestSuccess { data }.encode(&mut p);
            } else {
                msg::RequestFailure { data }.encode(&mut p);
            }
            ctx.out.send(&p, &mut ctx.shared.rng);
            self.incoming.pop_front();
        }
    }

    fn on_open(&mut self, m: msg::ChannelOpen<'_>, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let (remote_id, window, max_packet) = (m.sender, m.window, m.max_packet);
        let kind = m.kind.into_owned();
        let refuse = |reason: OpenFailure, text: &str, ctx: &mut Ctx<'_>| {
            send_open_failure(remote_id, reason, text, ctx)
        };
        let acceptable = match (&kind, self.role) {
            (ChannelKind::Session | ChannelKind::DirectTcpip { .. }, Role::Server) => true,
            (ChannelKind::ForwardedTcpip { .. }, Role::Client) => true,
            // x11, auth-agent@openssh.com, direct-streamlocal@openssh.com,
            // ...: the application's to accept if it asked for them. An open
            // nobody answers holds a channel slot, so `max_channels` bounds them.
            _ if self.pass_unknown => true,
            (ChannelKind::Other { .. }, _) => {
                refuse(OpenFailure::UNKNOWN_CHANNEL_TYPE, "unknown channel type", ctx);
                return Ok(());
            }
            _ => false,
        };
        if !acceptable {
            refuse(
                OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                "channel type not allowed in this direction",
                ctx,
            );
            return Ok(());
        }
        if max_packet < MIN_PEER_MAX_PACKET {
            refuse(OpenFailure::ADMINISTRATIVELY_PROHIBITED, "maximum packet size too small", ctx);
            return Ok(());
        }
        let mut ch = Channel::new(kind.clone(), ChannelState::Offered, ChannelOptions::default());
        ch.remote_id = remote_id;
        ch.remote_window = u64::from(window);
        ch.remote_max_packet = max_packet;
        match self.allocate(ch) {
            Some(channel) => {
                ctx.shared.events.push_back(Event::ChannelOpenRequest { channel, kind });
            }
            None => refuse(OpenFailure::RESOURCE_SHORTAGE, "too many channels", ctx),
        }
        Ok(())
    }

    fn on_channel_request(&mut self, m: msg::ChannelRequest<'_>, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let (id, want_reply, request) = (m.recipient, m.want_reply, m.request.into_owned());
        let role = self.role;
        let pass_unknown = self.pass_unknown;
        let request_id = Self::next_id(ctx);
        let ch = self.open_channel(id, "CHANNEL_REQUEST")?;
        if want_reply && ch.theirs.len() >= MAX_PENDING_REQUESTS {
            return Err(Error::TooManyPendingRequests { limit: MAX_PENDING_REQUESTS });
        }
        let channel = ChannelId(id);
        let exit = match (&request, role) {
            (ChannelRequest::ExitStatus { status }, Role::Client) => Some(ExitStatus::Code(*status)),
            (ChannelRequest::ExitSignal { signal, core_dumped, message }, Role::Client) => {
                Some(ExitStatus::Signal {
                    signal: signal.clone(),
                    core_dumped: *core_dumped,
                    message: message.clone(),
                })
            }
            _ => None,
        };
        if let Some(status) = exit {
            // Reported even after our CLOSE: it is news, not a question, and
            // OpenSSH sends it after its EOF, so an application that closes
            // on EOF would otherwise never learn how the command ended.
            ctx.shared.events.push_back(Event::ChannelExit { channel, status });
            if want_reply && !ch.close_sent {
                ch.theirs.push_back(Incoming { id: request_id, reply: Some((true, Vec::new())) });
                flush_channel_replies(ch, ctx);
            }
            return Ok(());
        }
        if ch.close_sent {
            // Crossed our CLOSE: we may send nothing more on the channel
            // (RFC 4254 §5.3), so nobody could answer it. Dropped.
            return Ok(());
        }
        let for_app = match (&request, role) {
            // OpenSSH's ClientAliveInterval probes a session channel with
            // this and only wants an answer, whatever it is: always the core's.
            (ChannelRequest::Other { name, .. }, _) if name == KEEPALIVE_REQUEST => false,
            (ChannelRequest::XonXoff { .. }, Role::Client) => true,
            (
                ChannelRequest::Pty(_)
                | ChannelRequest::Shell
                | ChannelRequest::Exec { .. }
                | ChannelRequest::Subsystem { .. }
                | ChannelRequest::Env { .. }
                | ChannelRequest::WindowChange { .. }
                | ChannelRequest::Signal { .. },
                Role::Server,
            ) => true,
            // Unknown ones (x11-req, auth-agent-req@openssh.com, break,
            // eow@openssh.com, ...) or known ones in the wrong direction:
            // the application's if it asked for them, else refused, as
            // OpenSSH does.
            _ => pass_unknown,
        };
        if for_app {
            if want_reply {
                ch.theirs.push_back(Incoming { id: request_id, reply: None });
            }
            ctx.shared.events.push_back(Event::ChannelRequest {
                channel,
                id: request_id,
                request,
                want_reply,
            });
        } else if want_reply {
            // Behind any request the application has not answered yet:
            // replies go out in request order.
            ch.theirs.push_back(Incoming { id: request_id, reply: Some((false, Vec::new())) });
            flush_channel_replies(ch, ctx);
        }
        Ok(())
    }

    // ------------------------------------------------------------ commands

    /// Opens a channel; `Event::ChannelOpened` or `ChannelOpenFailed` follows.
    pub(crate) fn open(
        &mut self,
        kind: ChannelKind,
        opts: ChannelOptions,
        ctx: &mut Ctx<'_>,
    ) -> Result<ChannelId, Error> {
        if opts.window == 0 || opts.max_packet == 0 {
            return Err(Error::InvalidState { what: "a channel needs a non-zero window and maximum packet" });
        }
        let ch = Channel::new(kind.clone(), ChannelState::Opening, opts);
        let id = self.allocate(ch).ok_or(Error::TooManyChannels { max: self.max_channels })?;
        let open = msg::ChannelOpen {
            kind: Cow::Owned(kind),
            sender: id.0,
            window: opts.window,
            max_packet: opts.max_packet,
        };
        let mut p = Vec::with_capacity(64);
        open.encode(&mut p);
        ctx.out.send(&p, &mut ctx.shared.rng);
        Ok(id)
    }

    /// Accepts a channel the peer opened.
    pub(crate) fn accept(
        &mut self,
        id: ChannelId,
        opts: ChannelOptions,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        if opts.window == 0 || opts.max_packet == 0 {
            return Err(Error::InvalidState { what: "a channel needs a non-zero window and maximum packet" });
        }
        let ch = self.channel(id)?;
        if ch.state != ChannelState::Offered {
            return Err(Error::InvalidState { what: "accept_channel answers ChannelOpenRequest" });
        }
        ch.state = ChannelState::Open;
        ch.window_size = opts.window;
        ch.local_window = opts.window;
        ch.max_packet = opts.max_packet;
        ch.manual_window = opts.manual_window;
        let confirm = msg::ChannelOpenConfirmation {
            recipient: ch.remote_id,
            sender: id.0,
            window: opts.window,
            max_packet: opts.max_packet,
        };
        let mut p = Vec::with_capacity(17);
        confirm.encode(&mut p);
        ctx.out.send(&p, &mut ctx.shared.rng);
        self.flush(id.0, ctx);
        Ok(())
    }

    /// Refuses a channel the peer opened.
    pub(crate) fn reject(
        &mut self,
        id: ChannelId,
        reason: OpenFailure,
        text: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        let ch = self.channel(id)?;
        if ch.state != ChannelState::Offered {
            return Err(Error::InvalidState { what: "reject_channel answers ChannelOpenRequest" });
        }
        send_open_failure(ch.remote_id, reason, text, ctx);
        // The peer never had the channel: the number is free again at once.
        if let Some(slot) = self.slots.get_mut(id.0 as usize) {
            *slot = Slot::Free;
            self.live -= 1;
        }
        Ok(())
    }

    /// Sends a channel request; with `want_reply` the answer comes as
    /// `Event::ChannelRequestResult` with the returned id.
    pub(crate) fn request(
        &mut self,
        id: ChannelId,
        request: &ChannelRequest,
        want_reply: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<u64, Error> {
        let request_id = Self::next_id(ctx);
        let ch = self.channel(id)?;
        if ch.state != ChannelState::Open || ch.close_sent || ch.close_wanted {
            return Err(Error::InvalidState { what: "channel requests need an open channel" });
        }
        let mut p = Vec::with_capacity(64);
        msg::ChannelRequest { recipient: ch.remote_id, want_reply, request: Cow::Borrowed(request) }
            .encode(&mut p);
        // Behind data still waiting for window, so that e.g. exit-status
        // reaches the peer after the output written before it. Replies
        // still match in order: queued requests go out in order.
        if ch.queue.is_empty() {
            ctx.out.send(&p, &mut ctx.shared.rng);
        } else {
            ch.queue.push_back(Outbound::Request(p));
        }
        if want_reply {
            ch.ours.push_back(request_id);
        }
        Ok(request_id)
    }

    /// Answers a channel request from the peer (replies go out in order).
    pub(crate) fn answer_request(
        &mut self,
        request_id: u64,
        ok: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        for slot in &mut self.slots {
            if let Slot::Live(ch) = slot
                && let Some(entry) = ch.theirs.iter_mut().find(|i| i.id == request_id && i.reply.is_none())
            {
                entry.reply = Some((ok, Vec::new()));
                flush_channel_replies(ch, ctx);
                return Ok(());
            }
        }
        Err(Error::UnknownId { what: "channel request awaiting a reply", id: request_id })
    }

    /// The peer answered the want-reply global request at `index` among
    /// those pending with UNIMPLEMENTED (TinySSH answers every global
    /// request so): it is refused. Replies come in order, so `index` is 0
    /// unless the peer skipped one; those before it stay pending.
    pub(crate) fn global_request_unimplemented(&mut self, index: usize, ctx: &mut Ctx<'_>) {
        match self.pending_replies.remove(index) {
            Some(ReplyTo::App(id)) => {
                ctx.shared.events.push_back(Event::GlobalReply { id, success: false, data: Vec::new() })
            }
            // The peer is there and answered: as good as a refusal.
            Some(ReplyTo::Probe(seq)) => self.answered_probes.push(seq),
            None => {}
        }
    }

    /// Sends a global request.
    pub(crate) fn global_request(
        &mut self,
        name: &str,
        want_reply: bool,
        data: &[u8],
        to: ReplyTo,
        ctx: &mut Ctx<'_>,
    ) {
        ctx.out
            .send_with(&mut ctx.shared.rng, |p, _| msg::GlobalRequest { name, want_reply, data }.encode(p));
        if want_reply {
            self.pending_replies.push_back(to);
        }
    }

    /// Answers a global request from the peer; `data` goes into
    /// REQUEST_SUCCESS (e.g. the bound port for `tcpip-forward` to port 0).
    pub(crate) fn answer_global(
        &mut self,
        id: u64,
        ok: bool,
        data: Vec<u8>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        let Some(entry) = self.incoming.iter_mut().find(|i| i.id == id && i.reply.is_none()) else {
            return Err(Error::UnknownId { what: "global request awaiting a reply", id });
        };
        entry.reply = Some((ok, if ok { data } else { Vec::new() }));
        self.flush_global_replies(ctx);
        Ok(())
    }

    /// Queues data (or extended data with `code`) and sends what the window
    /// allows. Returns the bytes still queued on the channel.
    pub(crate) fn write(
        &mut self,
        id: ChannelId,
        code: Option<u32>,
        data: WriteData<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<usize, Error> {
        let ch = self.channel(id)?;
        if ch.state == ChannelState::Offered {
            return Err(Error::InvalidState { what: "accept the channel before writing to it" });
        }
        if ch.eof_wanted || ch.close_wanted || ch.close_sent {
            return Err(Error::InvalidState { what: "write after EOF or close" });
        }
        let len = data.bytes().len();
        if len == 0 {
            return Ok(ch.queued);
        }
        // Fast path: nothing queued, so send straight from the caller's buffer.
        let mut sent = 0;
        if ch.queue.is_empty() && ch.state == ChannelState::Open && ctx.out.can_send_now() && !ch.close_sent {
            sent = send_data(ch, code, data.bytes(), ctx);
        }
        if sent < len {
            // What the window does not take yet waits; an owned buffer is
            // queued as it is, a borrowed one is copied.
            let segment = match data {
                WriteData::Borrowed(d) => Segment { code, bytes: d[sent..].to_vec(), sent: 0 },
                WriteData::Owned(bytes) => Segment { code, bytes, sent },
            };
            ch.queue.push_back(Outbound::Data(segment));
            ch.queued += len - sent;
        }
        Ok(ch.queued)
    }

    /// Half-closes our side once queued data is out.
    pub(crate) fn eof(&mut self, id: ChannelId, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let ch = self.channel(id)?;
        if ch.state == ChannelState::Offered {
            return Err(Error::InvalidState { what: "accept or reject the channel first" });
        }
        if !ch.eof_wanted {
            ch.eof_wanted = true;
            ch.queue.push_back(Outbound::Eof);
        }
        self.flush(id.0, ctx);
        Ok(())
    }

    /// Closes once queued data is out; `Event::ChannelClosed` follows when
    /// the peer's CLOSE arrives.
    pub(crate) fn close(&mut self, id: ChannelId, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let ch = self.channel(id)?;
        if ch.state == ChannelState::Offered {
            return Err(Error::InvalidState { what: "reject_channel refuses a channel that is not open" });
        }
        ch.close_wanted = true;
        self.flush(id.0, ctx);
        Ok(())
    }

    /// The application consumed `n` bytes of this channel's data: grant
    /// the window back (see `Channel::grant` for when).
    pub(crate) fn consumed(&mut self, id: ChannelId, n: usize, ctx: &mut Ctx<'_>) {
        let Some(Slot::Live(ch)) = self.slots.get_mut(id.0 as usize) else { return };
        if ch.close_sent || ch.close_received || ch.eof_received {
            return;
        }
        if let Some(add) = ch.grant(n) {
            let mut p = Vec::with_capacity(9);
            msg::ChannelWindowAdjust { recipient: ch.remote_id, bytes_to_add: add }.encode(&mut p);
            ctx.out.send(&p, &mut ctx.shared.rng);
        }
    }

    /// Whether data events of this channel are credited when polled.
    pub(crate) fn auto_window(&self, id: ChannelId) -> bool {
        matches!(self.slots.get(id.0 as usize), Some(Slot::Live(ch)) if !ch.manual_window)
    }

    /// Sends queued data, then a wanted EOF and CLOSE, as far as window and
    /// key exchange allow. Called after every input and command.
    pub(crate) fn flush_all(&mut self, ctx: &mut Ctx<'_>) {
        if !ctx.out.can_send_now() {
            return;
        }
        // Set again below if some channel still has to wait for room.
        ctx.out.data_blocked = false;
        for id in 0..self.slots.len() {
            self.flush(id as u32, ctx);
        }
    }

    fn flush(&mut self, id: u32, ctx: &mut Ctx<'_>) {
        if !ctx.out.can_send_now() {
            return;
        }
        let Some(Slot::Live(ch)) = self.slots.get_mut(id as usize) else { return };
        if ch.state != ChannelState::Open || ch.close_sent {
            return;
        }
        let had_queue = ch.queued > 0;
        // Items are moved out and back (not copied) around send_data.
        // Channel data fills at most half the output cap, so the replies
        // that stop input (the other half) are never crowded out by it.
        while let Some(item) = ch.queue.pop_front() {
            match item {
                Outbound::Data(mut seg) => {
                    if !ctx.out.data_room() {
                        ctx.out.data_blocked = true;
                        ch.queue.push_front(Outbound::Data(seg));
                        break;
                    }
                    let n = send_data(ch, seg.code, &seg.bytes[seg.sent..], ctx);
                    seg.sent += n;
                    ch.queued -= n;
                    if seg.sent < seg.bytes.len() {
                        ch.queue.push_front(Outbound::Data(seg));
                        break;
                    }
                }
                Outbound::Request(payload) => ctx.out.send(&payload, &mut ctx.shared.rng),
                Outbound::Eof => {
                    let mut p = Vec::with_capacity(5);
                    msg::ChannelEof { recipient: ch.remote_id }.encode(&mut p);
                    ctx.out.send(&p, &mut ctx.shared.rng);
                }
            }
        }
        if ch.queued == 0 && (had_queue || ch.notify_writable) {
            ch.notify_writable = false;
            ctx.shared.events.push_back(Event::ChannelWritable { channel: ChannelId(id) });
        }
        if ch.queue.is_empty() && ch.close_wanted && !ch.close_sent {
            ch.close_sent = true;
            send_close(ch.remote_id, ctx);
            // Nothing more goes out on this channel (RFC 4254 §5.3):
            // replies the application still owes are dropped.
            drop_replies_after_close(ch);
        }
    }
}

/// Sends as much of `data` as window and packet size allow, straight into
/// the transmit buffer. Returns the bytes sent.
fn send_data(ch: &mut Channel, code: Option<u32>, data: &[u8], ctx: &mut Ctx<'_>) -> usize {
    let mut sent = 0;
    let chunk_max = ch.remote_max_packet.min(MAX_DATA_CHUNK) as usize;
    while sent < data.len() && ch.remote_window > 0 && !ctx.out.over_limit() {
        if !ctx.out.data_room() {
            ctx.out.data_blocked = true;
            break;
        }
        let n = (data.len() - sent).min(chunk_max).min(ch.remote_window as usize);
        let chunk = &data[sent..sent + n];
        let remote = ch.remote_id;
        // Encoded straight into the transmit buffer: the only copy of the data.
        ctx.out.seal_with(&mut ctx.shared.rng, |buf| match code {
            None => msg::ChannelData { recipient: remote, data: chunk }.encode(buf),
            Some(code) => msg::ChannelExtendedData { recipient: remote, code, data: chunk }.encode(buf),
        });
        ch.remote_window -= n as u64;
        sent += n;
    }
    sent
}

fn send_close(remote: u32, ctx: &mut Ctx<'_>) {
    let mut p = Vec::with_capacity(5);
    msg::ChannelClose { recipient: remote }.encode(&mut p);
    ctx.out.send(&p, &mut ctx.shared.rng);
}

fn send_open_failure(remote: u32, reason: OpenFailure, text: &str, ctx: &mut Ctx<'_>) {
    let failure = msg::ChannelOpenFailure {
        recipient: remote,
        reason: reason.0,
        description: text.as_bytes(),
        language: b"",
    };
    let mut p = Vec::with_capacity(64);
    failure.encode(&mut p);
    ctx.out.send(&p, &mut ctx.shared.rng);
}

fn flush_channel_replies(ch: &mut Channel, ctx: &mut Ctx<'_>) {
    if ch.close_sent {
        drop_replies_after_close(ch);
        return;
    }
    while let Some(Incoming { reply: Some((ok, _)), .. }) = ch.theirs.front() {
        let mut p = Vec::with_capacity(5);
        if *ok {
            msg::ChannelSuccess { recipient: ch.remote_id }.encode(&mut p);
        } else {
            msg::ChannelFailure { recipient: ch.remote_id }.encode(&mut p);
        }
        ctx.out.send(&p, &mut ctx.shared.rng);
        ch.theirs.pop_front();
    }
}

/// After our CLOSE nothing more may go out on the channel (RFC 4254 §5.3):
/// replies are dropped as they are answered. Unanswered entries stay, so
/// that the application's late answer is still accepted (and dropped).
fn drop_replies_after_close(ch: &mut Channel) {
    ch.theirs.retain(|i| i.reply.is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(window: u32) -> Channel {
        let opts = ChannelOptions { window, max_packet: 32 * 1024, manual_window: true };
        Channel::new(ChannelKind::Session, ChannelState::Open, opts)
    }

    /// The peer sent `n` bytes.
    fn receive(ch: &mut Channel, n: u32) {
        ch.local_window -= n;
    }

    #[test]
    fn a_window_of_one_byte_never_grants_zero() {
        let mut ch = channel(1);
        // Nothing received: nothing to grant, however much is "consumed".
        assert_eq!(ch.grant(0), None);
        assert_eq!(ch.grant(5), None);
        receive(&mut ch, 1);
        assert_eq!(ch.grant(0), None);
        assert_eq!(ch.grant(1), Some(1));
        assert_eq!((ch.local_window, ch.unacked), (1, 0));
        assert_eq!(ch.grant(1), None, "granted back already");
    }

    #[test]
    fn grants_come_in_half_windows_while_the_peer_has_half_a_window() {
        let mut ch = channel(1000);
        receive(&mut ch, 400);
        assert_eq!(ch.grant(300), None);
        assert_eq!(ch.grant(99), None);
        receive(&mut ch, 100);
        assert_eq!(ch.grant(100), None, "499 consumed: under half a window");
        assert_eq!(ch.grant(1), Some(500));
        assert_eq!((ch.local_window, ch.unacked), (1000, 0));
    }

    #[test]
    fn below_half_a_window_everything_consumed_is_granted_at_once() {
        let mut ch = channel(1000);
        receive(&mut ch, 1000);
        assert_eq!(ch.grant(100), Some(100));
        assert_eq!(ch.grant(100), Some(100));
        assert_eq!(ch.local_window, 200);
        // Consuming more than was received grants only what was received.
        assert_eq!(ch.grant(10_000), Some(800));
        assert_eq!(ch.local_window, 1000);
        assert_eq!(ch.grant(10_000), None);
    }
}
