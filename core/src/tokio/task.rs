//! The task that owns one connection: socket, timers, command queue.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::ClientError;
use super::low_water::LowWater;
use crate::{
    ChannelId, ChannelKind, ChannelOptions, ChannelRequest, CloseReason, Connection, DisconnectCode, Event,
    ExitStatus, Stats, Timestamp,
};

/// Bytes a channel's writers may have in flight (ours plus the core's
/// queue) before `poll_write` waits: backpressure without a copy per byte.
pub(crate) const WRITE_LIMIT: usize = 1 << 20;

/// Receive window of the channels the adapter opens: OpenSSH's 2 MiB. The
/// adapter grants it back only as readers consume, so memory stays bounded.
pub(crate) fn channel_options() -> ChannelOptions {
    ChannelOptions { manual_window: true, ..ChannelOptions::default() }
}

/// A channel's state shared between the task and its [`super::Channel`] handle.
#[derive(Debug, Default)]
pub(crate) struct ChanState {
    // Inbound, filled by the task: the events' data as they came, slices
    // of the connection's receive buffer (a partly read chunk is advanced).
    pub(crate) stdout: VecDeque<Bytes>,
    pub(crate) stderr: VecDeque<Bytes>,
    /// A stderr reader exists; without one, stderr is granted back and
    /// dropped (so a stdout-only reader never stalls on an unread stderr).
    pub(crate) stderr_wanted: bool,
    pub(crate) eof: bool,
    pub(crate) closed: Option<Option<CloseReason>>,
    pub(crate) exit: Option<ExitStatus>,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) stderr_waker: Option<Waker>,
    pub(crate) exit_waker: Option<Waker>,
    /// Bytes readers took since the task last granted window.
    pub(crate) consumed: usize,
    // Outbound, filled by the handle.
    pub(crate) out: Vec<u8>,
    /// Extended data (stderr) to send, for servers.
    pub(crate) out_stderr: Vec<u8>,
    pub(crate) want_eof: bool,
    pub(crate) want_close: bool,
    /// What the core still queues for this channel (waiting for window).
    pub(crate) core_pending: usize,
    pub(crate) write_waker: Option<Waker>,
    // Bookkeeping of the task.
    pub(crate) eof_sent: bool,
    pub(crate) close_sent: bool,
}

impl ChanState {
    fn wake_all(&mut self) {
        for w in [
            self.read_waker.take(),
            self.stderr_waker.take(),
            self.exit_waker.take(),
            self.write_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }
}

pub(crate) type ChanRef = Arc<Mutex<ChanState>>;

/// Where the answer to an open goes.
pub(crate) type OpenReply = oneshot::Sender<Result<(ChannelId, ChanRef), ClientError>>;

/// Locks a channel state; a panic elsewhere must not wedge the connection.
pub(crate) fn lock(c: &ChanRef) -> std::sync::MutexGuard<'_, ChanState> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commands from handles to the task.
/// See `Cmd::Global::on_success`.
pub(crate) type OnGlobalSuccess = Box<dyn FnOnce(&[u8]) + Send>;
/// Where a global request's reply data (or refusal) goes.
pub(crate) type GlobalReplyTx = oneshot::Sender<Result<Vec<u8>, ClientError>>;

pub(crate) enum Cmd {
    // Large payloads are boxed: the command queue's blocks are sized by
    // the largest variant, and every connection has one.
    Open {
        kind: Box<ChannelKind>,
        reply: OpenReply,
    },
    /// A channel request; `reply` is answered when the peer replies (with
    /// `want_reply`) or as soon as the request is queued (without), so that
    /// what the caller does next follows it.
    Request {
        channel: ChannelId,
        request: Box<ChannelRequest>,
        want_reply: bool,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Global {
        request: Box<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<Vec<u8>, ClientError>>,
        /// Run in the task with the reply's data when it succeeds, before
        /// any later event is handled (a `tcpip-forward` registers its
        /// target before the server's first forwarded connection).
        on_success: Option<OnGlobalSuccess>,
    },
    /// Run against the connection in the task (hooks posting back results).
    With(Box<dyn FnOnce(&mut Connection) + Send>),
    /// A forwarded channel whose target is connected: accept and pump.
    AcceptForwarded {
        channel: ChannelId,
        stream: TcpStream,
    },
    Stats(oneshot::Sender<Stats>),
    Disconnect(String),
}

/// What role hooks may touch inside the task.
pub(crate) struct HookCtx<'a> {
    pub(crate) conn: &'a mut Connection,
    /// Channels with a handle; hooks that accept a channel register it here.
    pub(crate) channels: &'a mut HashMap<ChannelId, ChanRef>,
    /// Weak: work spawned by hooks must not keep the connection alive.
    pub(crate) cmds: &'a mpsc::WeakUnboundedSender<Cmd>,
    pub(crate) shared: &'a Arc<TaskShared>,
}

impl HookCtx<'_> {
    /// Accepts a channel the peer opened and returns its handle.
    pub(crate) fn accept_channel(&mut self, channel: ChannelId) -> Result<super::Channel, crate::Error> {
        let cmds = self.cmds.upgrade().ok_or(crate::Error::Closed)?;
        self.conn.accept_channel(channel, channel_options())?;
        let state = ChanRef::default();
        self.channels.insert(channel, state.clone());
        Ok(super::Channel::new(channel, state, cmds, self.shared.clone()))
    }
}

/// Per-role handling of the events the generic task does not own.
pub(crate) trait Hooks: Send + 'static {
    /// Called for every event before the task's own handling.
    fn on_event(&mut self, ctx: &mut HookCtx<'_>, event: &Event);
}

/// State shared by the task and every handle.
#[derive(Debug)]
pub(crate) struct TaskShared {
    /// Wakes the task (data written, data consumed).
    pub(crate) notify: Notify,
    /// The close reason once the connection has ended.
    pub(crate) closed: watch::Sender<Option<CloseReason>>,
}

pub(crate) struct Task<H: Hooks> {
    pub(crate) conn: Connection,
    pub(crate) stream: TcpStream,
    pub(crate) origin: Instant,
    pub(crate) cmds: mpsc::UnboundedReceiver<Cmd>,
    /// Weak, so that the queue closes when the last handle is dropped.
    pub(crate) cmd_tx: mpsc::WeakUnboundedSender<Cmd>,
    /// Servers keep the connection up without handles; clients do not.
    /// Held, never read: it only keeps the queue open.
    #[allow(dead_code)]
    pub(crate) keep_alive: Option<mpsc::UnboundedSender<Cmd>>,
    pub(crate) shared: Arc<TaskShared>,
    pub(crate) hooks: H,
    pub(crate) channels: HashMap<ChannelId, ChanRef>,
    pub(crate) opening: HashMap<ChannelId, OpenReply>,
    /// Channel requests awaiting the peer's reply, with their channel.
    pub(crate) requests: HashMap<u64, (ChannelId, oneshot::Sender<Result<(), ClientError>>)>,
    pub(crate) globals: HashMap<u64, (GlobalReplyTx, Option<OnGlobalSuccess>)>,
    /// How much to read at once (adapts between MIN_READ and MAX_READ).
    pub(crate) read_size: usize,
    /// The socket's receive low-water mark during bulk transfers.
    pub(crate) low_water: LowWater,
}

/// Socket read sizes: small while idle (little memory per connection),
/// large for bulk transfers (few system calls).
pub(crate) const MIN_READ: usize = 1024;
const MAX_READ: usize = 256 * 1024;
// A read under the low-water mark takes at least the mark at once.
const _: () = assert!(MAX_READ >= 2 * super::low_water::MARK);

/// Reads shorter than this are protocol chatter (kex, auth, requests,
/// replies), not bulk data: each is ACKed at once. A peer that has not set
/// TCP_NODELAY (sshd until a session starts) holds its next small segment
/// until our ACK, and a delayed ACK costs ~40 ms per exchange.
const QUICKACK_BELOW: usize = 16 * 1024;

/// Asks the kernel to ACK what it has received now (Linux: TCP_QUICKACK is
/// not sticky, so it is set again after each short read).
fn quickack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = stream.set_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

impl<H: Hooks> Task<H> {
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Runs the connection until it is closed and flushed.
    pub(crate) async fn run(mut self) {
        let mut closed_at: Option<Instant> = None;
        loop {
            self.events();
            self.pump_channels();
            self.events();
            let flushed = self.write_some();
            if self.conn.is_closed() {
                let since = *closed_at.get_or_insert_with(Instant::now);
                // Give the DISCONNECT a moment to leave, not forever.
                if flushed || since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
            let deadline =
                self.conn.poll_timeout().map(|t| self.origin + Duration::from_micros(t.as_micros()));
            let want_write = !self.conn.pending_transmit().is_empty();
            // While our output is backed up the peer's bytes stay in the
            // socket (TCP pushes back on it); writing goes on meanwhile.
            let want_read = self.conn.wants_input();
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Every handle is gone: nobody can use the connection.
                    None => { let _ = self.conn.disconnect(DisconnectCode::BY_APPLICATION, "client closed"); }
                },
                () = self.shared.notify.notified() => {}
                r = self.stream.readable(), if want_read => match r {
                    Ok(()) => {
                        let got = self.read_some();
                        self.low_water.after_read(&self.stream, got, false);
                    }
                    Err(e) => self.eof(&e),
                },
                // Under the low-water mark, bytes short of it never make the
                // socket readable: read them anyway once they are overdue.
                () = sleep_until(self.low_water.fallback_at()), if want_read => {
                    let got = self.read_some();
                    self.low_water.after_read(&self.stream, got, true);
                }
                r = self.stream.writable(), if want_write => if let Err(e) = r { self.eof(&e) },
                () = sleep_until(deadline), if deadline.is_some() && !self.conn.is_closed() => {
                    let now = self.now();
                    self.conn.handle_timeout(now);
                }
                () = tokio::time::sleep(Duration::from_millis(100)), if closed_at.is_some() => {}
            }
        }
        self.events();
        self.finish();
    }

    fn eof(&mut self, e: &std::io::Error) {
        tracing::debug!("socket error: {e}");
        let now = self.now();
        self.conn.handle_eof(now);
    }

    /// Reads what the socket has (up to 16 reads); returns the bytes read.
    fn read_some(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..16 {
            if !self.conn.wants_input() {
                return total;
            }
            // Straight into the connection's receive buffer, without
            // zeroing it first; channel data leaves it as slices.
            let buf = self.conn.receive_bytes(self.read_size);
            let offered = buf.capacity() - buf.len();
            match self.stream.try_read_buf(buf) {
                Ok(0) => {
                    let now = self.now();
                    self.conn.handle_eof(now);
                    return total;
                }
                Ok(n) => {
                    total += n;
                    if n < QUICKACK_BELOW {
                        quickack(&self.stream);
                    }
                    let now = self.now();
                    if let Err(e) = self.conn.commit_received(now, n) {
                        tracing::warn!("protocol error from peer: {e}");
                        return total;
                    }
                    // Hand data to readers between reads, so a fast link
                    // cannot pile up more than the window in events.
                    self.events();
                    // Size the next read from this one: bulk transfers keep
                    // reading big (short reads are normal there), idle and
                    // interactive connections read small, so their buffer
                    // shrinks back.
                    self.read_size = (n * 2).clamp(MIN_READ, MAX_READ);
                    if n < offered {
                        return total;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
                Err(e) => {
                    self.eof(&e);
                    return total;
                }
            }
        }
        total
    }

    /// Writes what the socket takes now. Returns true when nothing is left.
    fn write_some(&mut self) -> bool {
        while !self.conn.pending_transmit().is_empty() {
            match self.stream.try_write(self.conn.pending_transmit()) {
                Ok(n) => self.conn.consume_transmit(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => {
                    self.eof(&e);
                    // Nothing more can be written.
                    let n = self.conn.pending_transmit().len();
                    self.conn.consume_transmit(n);
                    return true;
                }
            }
        }
        true
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open { kind, reply } => match self.conn.open_channel(*kind, channel_options()) {
                Ok(id) => {
                    self.opening.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(self.error(e)));
                }
            },
            Cmd::Request { channel, request, want_reply, reply } => {
                match self.conn.channel_request(channel, &request, want_reply) {
                    Ok(id) if want_reply => {
                        self.requests.insert(id, (channel, reply));
                    }
                    Ok(_) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(self.error(e)));
                    }
                }
            }
            Cmd::Global { request, reply, on_success } => {
                match self.conn.global_request(&request.0, true, &request.1) {
                    Ok(id) => {
                        self.globals.insert(id, (reply, on_success));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(self.error(e)));
                    }
                }
            }
            Cmd::With(f) => f(&mut self.conn),
            Cmd::AcceptForwarded { channel, mut stream } => {
                let mut ctx = HookCtx {
                    conn: &mut self.conn,
                    channels: &mut self.channels,
                    cmds: &self.cmd_tx,
                    shared: &self.shared,
                };
                let ch = ctx.accept_channel(channel);
                let mut ch = match ch {
                    Ok(ch) => ch,
                    Err(e) => {
                        tracing::debug!("{channel}: accept: {e}");
                        return;
                    }
                };
                tokio::spawn(async move {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut ch).await {
                        tracing::debug!("{channel}: forward: {e}");
                    }
                });
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(self.conn.stats());
            }
            Cmd::Disconnect(text) => {
                let _ = self.conn.disconnect(DisconnectCode::BY_APPLICATION, &text);
            }
        }
    }

    /// A command error, or the close reason if the connection is gone.
    fn error(&self, e: crate::Error) -> ClientError {
        match (&e, self.shared.closed.borrow().clone()) {
            (crate::Error::Closed, Some(reason)) => ClientError::Closed(reason),
            _ => ClientError::Protocol(e),
        }
    }

    /// Moves what handles wrote (and read) into the connection.
    fn pump_channels(&mut self) {
        if self.conn.is_closed() {
            return;
        }
        for (&id, state) in &self.channels {
            let mut s = lock(state);
            if s.consumed > 0 {
                let n = std::mem::take(&mut s.consumed);
                let _ = self.conn.channel_consumed(id, n);
            }
            if !s.out.is_empty() && !s.close_sent {
                let data = std::mem::take(&mut s.out);
                match self.conn.channel_write_owned(id, data) {
                    Ok(pending) => s.core_pending = pending,
                    Err(e) => tracing::debug!("{id}: write dropped: {e}"),
                }
                // Space freed in `out`: writers may continue.
                if s.out.len() + s.core_pending < WRITE_LIMIT
                    && let Some(w) = s.write_waker.take()
                {
                    w.wake();
                }
            }
            if !s.out_stderr.is_empty() && !s.close_sent {
                let data = std::mem::take(&mut s.out_stderr);
                match self.conn.channel_write_extended_owned(id, 1, data) {
                    Ok(pending) => s.core_pending = pending,
                    Err(e) => tracing::debug!("{id}: stderr write dropped: {e}"),
                }
                if s.out.len() + s.core_pending < WRITE_LIMIT
                    && let Some(w) = s.write_waker.take()
                {
                    w.wake();
                }
            }
            if s.want_eof && !s.eof_sent && s.out.is_empty() && s.out_stderr.is_empty() {
                s.eof_sent = true;
                let _ = self.conn.channel_eof(id);
            }
            if s.want_close && !s.close_sent && s.out.is_empty() && s.out_stderr.is_empty() {
                s.close_sent = true;
                let _ = self.conn.channel_close(id);
            }
        }
    }

    fn events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            let mut ctx = HookCtx {
                conn: &mut self.conn,
                channels: &mut self.channels,
                cmds: &self.cmd_tx,
                shared: &self.shared,
            };
            self.hooks.on_event(&mut ctx, &event);
            self.event(event);
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::ChannelOpened { channel } => {
                let state = ChanRef::default();
                self.channels.insert(channel, state.clone());
                if let Some(reply) = self.opening.remove(&channel)
                    && reply.send(Ok((channel, state))).is_err()
                {
                    // Nobody waits for it any more.
                    let _ = self.conn.channel_close(channel);
                }
            }
            Event::ChannelOpenFailed { channel, reason, description, .. } => {
                if let Some(reply) = self.opening.remove(&channel) {
                    let _ = reply.send(Err(ClientError::OpenFailed { reason, description }));
                }
            }
            Event::ChannelData { channel, data } => {
                if let Some(state) = self.channels.get(&channel) {
                    let mut s = lock(state);
                    s.stdout.push_back(data);
                    if let Some(w) = s.read_waker.take() {
                        w.wake();
                    }
                } else {
                    // No reader (the handle is gone): keep the window open.
                    let _ = self.conn.channel_consumed(channel, data.len());
                }
            }
            Event::ChannelExtendedData { channel, data, .. } => {
                if let Some(state) = self.channels.get(&channel) {
                    let mut s = lock(state);
                    if !s.stderr_wanted {
                        tracing::debug!("{channel}: {} bytes of stderr with no reader", data.len());
                        drop(s);
                        let _ = self.conn.channel_consumed(channel, data.len());
                        return;
                    }
                    s.stderr.push_back(data);
                    for w in [s.stderr_waker.take(), s.read_waker.take()].into_iter().flatten() {
                        w.wake();
                    }
                } else {
                    let _ = self.conn.channel_consumed(channel, data.len());
                }
            }
            Event::ChannelEof { channel } => {
                if let Some(state) = self.channels.get(&channel) {
                    let mut s = lock(state);
                    s.eof = true;
                    s.wake_all();
                }
            }
            Event::ChannelExit { channel, status } => {
                if let Some(state) = self.channels.get(&channel) {
                    let mut s = lock(state);
                    s.exit = Some(status);
                    if let Some(w) = s.exit_waker.take() {
                        w.wake();
                    }
                }
            }
            Event::ChannelClosed { channel, .. } => {
                if let Some(state) = self.channels.remove(&channel) {
                    let mut s = lock(&state);
                    s.eof = true;
                    s.closed = Some(None);
                    s.wake_all();
                }
                // A peer may close a channel instead of answering (dropbear
                // 2022.83 closes sessions that have not started a command
                // when another one ends): no reply will come.
                let unanswered: Vec<u64> =
                    self.requests.iter().filter(|(_, (c, _))| *c == channel).map(|(id, _)| *id).collect();
                for id in unanswered {
                    if let Some((_, reply)) = self.requests.remove(&id) {
                        let _ = reply.send(Err(ClientError::Io(std::io::Error::new(
                            ErrorKind::ConnectionAborted,
                            "the channel was closed before the request was answered",
                        ))));
                    }
                }
            }
            Event::ChannelWritable { channel } => {
                if let Some(state) = self.channels.get(&channel) {
                    let mut s = lock(state);
                    s.core_pending = 0;
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
            }
            Event::ChannelRequestResult { id, success, .. } => {
                if let Some((_, reply)) = self.requests.remove(&id) {
                    let _ = reply.send(if success {
                        Ok(())
                    } else {
                        Err(ClientError::Refused("the request".into()))
                    });
                }
            }
            Event::GlobalReply { id, success, data } => {
                if let Some((reply, on_success)) = self.globals.remove(&id) {
                    if success && let Some(f) = on_success {
                        f(&data);
                    }
                    let _ = reply.send(if success {
                        Ok(data)
                    } else {
                        Err(ClientError::Refused("the global request".into()))
                    });
                }
            }
            Event::Closed { reason } => {
                tracing::info!("connection closed: {reason}");
                self.shared.closed.send_replace(Some(reason));
                self.finish();
            }
            _ => {}
        }
    }

    /// Fails everything still waiting: the connection is gone.
    fn finish(&mut self) {
        let reason = self.shared.closed.borrow().clone().unwrap_or(CloseReason::Eof);
        for (_, reply) in self.opening.drain() {
            let _ = reply.send(Err(ClientError::Closed(reason.clone())));
        }
        for (_, (_, reply)) in self.requests.drain() {
            let _ = reply.send(Err(ClientError::Closed(reason.clone())));
        }
        for (_, (reply, _)) in self.globals.drain() {
            let _ = reply.send(Err(ClientError::Closed(reason.clone())));
        }
        for (_, state) in self.channels.drain() {
            let mut s = lock(&state);
            s.eof = true;
            s.closed = Some(Some(reason.clone()));
            s.wake_all();
        }
        if self.shared.closed.borrow().is_none() {
            self.shared.closed.send_replace(Some(reason));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
