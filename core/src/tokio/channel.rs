//! A channel as async streams: `AsyncRead` for its data (stdout),
//! `AsyncWrite` for ours (stdin), a separate stderr reader, requests and the
//! exit status.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::ClientError;
use super::task::{ChanRef, ChanState, Cmd, TaskShared, WRITE_LIMIT, lock};
use crate::{ChannelId, ChannelRequest, ExitStatus, Pty};

/// An open channel. Reading gives the peer's data (a command's stdout),
/// writing sends ours (its stdin); `shutdown` sends EOF; dropping closes it.
#[derive(Debug)]
pub struct Channel {
    id: ChannelId,
    state: ChanRef,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<TaskShared>,
}

/// The extended-data (stderr) side of a [`Channel`]: read it on a client,
/// write it on a server.
#[derive(Debug)]
pub struct ChannelStderr {
    state: ChanRef,
    shared: Arc<TaskShared>,
}

/// Data read from a channel is granted back to the peer by the task; a
/// reader wakes it for that once this much is consumed, or when it has
/// emptied the queue (so the peer is never kept waiting), not per chunk:
/// a bulk download otherwise woke the task for every 32 KiB packet.
const GRANT_BATCH: usize = 256 * 1024;

fn closed_error(s: &ChanState) -> io::Error {
    match &s.closed {
        Some(Some(reason)) => io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_string()),
        _ => io::Error::new(io::ErrorKind::BrokenPipe, "channel closed"),
    }
}

/// Copies from queued chunks into `buf`; returns the bytes taken. A chunk
/// read in part is advanced past what was taken.
fn take_chunks(chunks: &mut std::collections::VecDeque<Bytes>, buf: &mut ReadBuf<'_>) -> usize {
    let mut n = 0;
    while buf.remaining() > 0 {
        let Some(front) = chunks.front_mut() else { break };
        let k = front.len().min(buf.remaining());
        buf.put_slice(&front[..k]);
        n += k;
        if k == front.len() {
            chunks.pop_front();
        } else {
            front.advance(k);
        }
    }
    n
}

impl Channel {
    pub(crate) fn new(
        id: ChannelId,
        state: ChanRef,
        cmds: mpsc::UnboundedSender<Cmd>,
        shared: Arc<TaskShared>,
    ) -> Self {
        Channel { id, state, cmds, shared }
    }

    /// The channel's number on our side.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// A reader for the channel's stderr (extended data). Take it before
    /// starting the command: until a reader exists, stderr is discarded (so
    /// a program that only reads stdout never stalls on a full window); once
    /// it exists, unread stderr holds the window like unread stdout.
    pub fn stderr(&self) -> ChannelStderr {
        lock(&self.state).stderr_wanted = true;
        ChannelStderr { state: self.state.clone(), shared: self.shared.clone() }
    }

    async fn request(&self, request: ChannelRequest, want_reply: bool) -> Result<(), ClientError> {
        let what = request.name().to_owned();
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request { channel: self.id, request: Box::new(request), want_reply, reply: tx })
            .map_err(|_| self.gone())?;
        match rx.await.map_err(|_| self.gone())? {
            Err(ClientError::Refused(_)) => Err(ClientError::Refused(what)),
            other => other,
        }
    }

    fn gone(&self) -> ClientError {
        match self.shared.closed.borrow().clone() {
            Some(reason) => ClientError::Closed(reason),
            None => ClientError::Closed(crate::CloseReason::Eof),
        }
    }

    /// Runs `command` (an `exec` request).
    pub async fn exec(&self, command: &str) -> Result<(), ClientError> {
        self.request(ChannelRequest::exec(command), true).await
    }

    /// Starts the user's shell.
    pub async fn shell(&self) -> Result<(), ClientError> {
        self.request(ChannelRequest::Shell, true).await
    }

    /// Starts a subsystem (e.g. `sftp`).
    pub async fn subsystem(&self, name: &str) -> Result<(), ClientError> {
        self.request(ChannelRequest::Subsystem { name: name.into() }, true).await
    }

    /// Asks for a pseudo-terminal.
    pub async fn request_pty(&self, pty: Pty) -> Result<(), ClientError> {
        self.request(ChannelRequest::Pty(pty), true).await
    }

    /// Sets an environment variable (servers accept few: OpenSSH's AcceptEnv).
    pub async fn env(&self, name: &str, value: &str) -> Result<(), ClientError> {
        self.request(ChannelRequest::Env { name: name.into(), value: value.into() }, true).await
    }

    /// Tells the remote terminal its new size.
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), ClientError> {
        self.request(ChannelRequest::WindowChange { cols, rows, width_px: 0, height_px: 0 }, false).await
    }

    /// Sends a signal (name without `SIG`) to the remote process.
    pub async fn signal(&self, name: &str) -> Result<(), ClientError> {
        self.request(ChannelRequest::Signal { name: name.into() }, false).await
    }

    /// Sends an exit status (servers: before closing the channel). Requests
    /// go out at once, so `flush` the output first for the status to follow it.
    pub async fn send_exit(&self, status: ExitStatus) -> Result<(), ClientError> {
        let request = match status {
            ExitStatus::Code(status) => ChannelRequest::ExitStatus { status },
            ExitStatus::Signal { signal, core_dumped, message } => {
                ChannelRequest::ExitSignal { signal, core_dumped, message }
            }
        };
        self.request(request, false).await
    }

    /// Sends EOF once everything written is out (same as `shutdown`).
    pub fn eof(&self) {
        let mut s = lock(&self.state);
        s.want_eof = true;
        drop(s);
        self.shared.notify.notify_one();
    }

    /// Waits for the remote command to end: its exit status or signal, or
    /// `None` if the channel closed without one.
    pub async fn wait(&self) -> Result<Option<ExitStatus>, ClientError> {
        poll_fn(|cx| {
            let mut s = lock(&self.state);
            if let Some(exit) = &s.exit {
                return Poll::Ready(Ok(Some(exit.clone())));
            }
            match &s.closed {
                Some(None) => Poll::Ready(Ok(None)),
                Some(Some(reason)) => Poll::Ready(Err(ClientError::Closed(reason.clone()))),
                None => {
                    s.exit_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next chunk of data as the connection received it, without a copy
    /// (the fast path for bulk readers): a slice of the connection's receive
    /// buffer, which stays allocated while the chunk is held (see
    /// [`crate::Event::ChannelData`]). `None` at EOF.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.next_chunk().await
    }

    /// Writes all of `data` as channel data. Takes `&self` so that one task
    /// can write while it reads (`next_chunk`): only one of each at a time,
    /// as each has a single waker slot.
    pub(crate) async fn write_all_shared(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n =
                poll_fn(|cx| poll_write_stream(&self.state, &self.shared, Stream::Stdout, cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// `read_chunk` through `&self` (see `write_all_shared`).
    pub(crate) async fn next_chunk(&self) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| {
            let mut s = lock(&self.state);
            if let Some(chunk) = s.stdout.pop_front() {
                s.consumed += chunk.len();
                let grant = s.consumed >= GRANT_BATCH || s.stdout.is_empty();
                drop(s);
                if grant {
                    self.shared.notify.notify_one();
                }
                return Poll::Ready(Ok(Some(chunk)));
            }
            if s.eof {
                return Poll::Ready(if matches!(s.closed, Some(Some(_))) {
                    Err(closed_error(&s))
                } else {
                    Ok(None)
                });
            }
            s.read_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes the channel (after what was written).
    pub fn close(&self) {
        let mut s = lock(&self.state);
        s.want_close = true;
        drop(s);
        self.shared.notify.notify_one();
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Tells when a channel has closed on both sides (or its connection
/// ended), after its [`Channel`] handle is gone. The pool returns a lease
/// only then: until the peer has seen our CLOSE it still counts the
/// channel against its limit (OpenSSH's MaxSessions), and a session opened
/// in its place would be refused.
#[derive(Debug)]
pub(crate) struct ClosedWatch(ChanRef);

impl Channel {
    /// A [`ClosedWatch`] for this channel.
    pub(crate) fn closed_watch(&self) -> ClosedWatch {
        ClosedWatch(self.state.clone())
    }
}

impl ClosedWatch {
    /// Whether the channel has closed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.0).closed.is_some()
    }

    /// Waits until the channel has closed. Only once the handle is dropped:
    /// this uses the waker slot of [`Channel::wait`].
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            let mut s = lock(&self.0);
            if s.closed.is_some() {
                return Poll::Ready(());
            }
            s.exit_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl AsyncRead for Channel {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.state);
        let s = &mut *s;
        let n = take_chunks(&mut s.stdout, buf);
        if n > 0 {
            s.consumed += n;
            if s.consumed >= GRANT_BATCH || s.stdout.is_empty() {
                self.shared.notify.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.eof {
            return Poll::Ready(if matches!(s.closed, Some(Some(_))) {
                Err(closed_error(s))
            } else {
                Ok(())
            });
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Which outbound stream of a channel a writer fills.
#[derive(Copy, Clone)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn buf(self, s: &mut ChanState) -> &mut Vec<u8> {
        match self {
            Stream::Stdout => &mut s.out,
            Stream::Stderr => &mut s.out_stderr,
        }
    }
}

/// `poll_write` of both writers: queue what fits under `WRITE_LIMIT`.
fn poll_write_stream(
    state: &ChanRef,
    shared: &TaskShared,
    stream: Stream,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    let mut s = lock(state);
    if s.closed.is_some() || s.close_sent || s.want_close || s.want_eof {
        return Poll::Ready(Err(closed_error(&s)));
    }
    let in_flight = s.out.len() + s.out_stderr.len() + s.core_pending;
    if in_flight >= WRITE_LIMIT {
        s.write_waker = Some(cx.waker().clone());
        return Poll::Pending;
    }
    let n = data.len().min(WRITE_LIMIT - in_flight);
    stream.buf(&mut s).extend_from_slice(&data[..n]);
    drop(s);
    shared.notify.notify_one();
    Poll::Ready(Ok(n))
}

/// Like `poll_write_stream` for a buffer the caller hands over: taken whole
/// (no copy when nothing else waits) once the stream is under `WRITE_LIMIT`.
fn poll_write_stream_owned(
    state: &ChanRef,
    shared: &TaskShared,
    stream: Stream,
    cx: &mut Context<'_>,
    data: &mut Option<Vec<u8>>,
) -> Poll<io::Result<()>> {
    let mut s = lock(state);
    if s.closed.is_some() || s.close_sent || s.want_close || s.want_eof {
        return Poll::Ready(Err(closed_error(&s)));
    }
    if s.out.len() + s.out_stderr.len() + s.core_pending >= WRITE_LIMIT {
        s.write_waker = Some(cx.waker().clone());
        return Poll::Pending;
    }
    let Some(bytes) = data.take() else { return Poll::Ready(Ok(())) };
    let buf = stream.buf(&mut s);
    if buf.is_empty() {
        *buf = bytes;
    } else {
        buf.extend_from_slice(&bytes);
    }
    drop(s);
    shared.notify.notify_one();
    Poll::Ready(Ok(()))
}

/// `poll_flush` of both writers: ready once the stream is handed to the core.
fn poll_flush_stream(state: &ChanRef, stream: Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut s = lock(state);
    if stream.buf(&mut s).is_empty() && s.core_pending == 0 {
        return Poll::Ready(Ok(()));
    }
    if s.closed.is_some() {
        return Poll::Ready(Err(closed_error(&s)));
    }
    s.write_waker = Some(cx.waker().clone());
    Poll::Pending
}

impl Channel {
    /// Writes a buffer the caller owns to the channel's stdin/stdout stream,
    /// taking it whole (`*data` becomes `None`) when there is room: saves
    /// `poll_write`'s copy for callers that already hold owned chunks. The
    /// stream may then exceed its limit by that one buffer.
    pub fn poll_write_owned(&self, cx: &mut Context<'_>, data: &mut Option<Vec<u8>>) -> Poll<io::Result<()>> {
        poll_write_stream_owned(&self.state, &self.shared, Stream::Stdout, cx, data)
    }
}

impl AsyncWrite for Channel {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        poll_write_stream(&self.state, &self.shared, Stream::Stdout, cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush_stream(&self.state, Stream::Stdout, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.eof();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelStderr {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        poll_write_stream(&self.state, &self.shared, Stream::Stderr, cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush_stream(&self.state, Stream::Stderr, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncRead for ChannelStderr {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.state);
        let s = &mut *s;
        let n = take_chunks(&mut s.stderr, buf);
        if n > 0 {
            s.consumed += n;
            if s.consumed >= GRANT_BATCH || s.stderr.is_empty() {
                self.shared.notify.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.eof {
            return Poll::Ready(Ok(()));
        }
        s.stderr_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
