//! The interactive part: one session channel (a command or the shell, with
//! or without a PTY) joined to the local streams, window changes and
//! signals, until the remote side ends.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use sansh::tokio::{Channel, ChannelStderr, Client, ClientError};
use sansh::{Bytes, ExitStatus, Pty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::io::{Sink, Target, stdin_reader};
use crate::tty;

/// How the session is set up.
#[derive(Debug)]
pub struct SessionSpec {
    /// The command, or None for the shell.
    pub command: Option<String>,
    /// The command names a subsystem (`-s`).
    pub subsystem: bool,
    /// Environment to pass (SendEnv, SetEnv); the server may refuse some.
    pub env: Vec<(String, String)>,
    /// Request a PTY.
    pub pty: bool,
    /// Put the local terminal in raw mode (a PTY with a terminal on stdin).
    pub raw: bool,
    /// Read local stdin (not with -n).
    pub read_stdin: bool,
}

/// How a session ended.
#[derive(Debug)]
pub enum Ended {
    /// The remote side ended with this status (None: no status sent).
    Exit(Option<ExitStatus>),
    /// We got a terminating signal (number).
    Signal(i32),
    /// Writing our stdout failed (a closed pipe).
    LocalOutput(io::Error),
    /// The connection failed.
    Failed(ClientError),
}

/// What one pump step stopped for.
enum Step {
    Done,
    Resize,
    Signal(i32),
    /// Reading the channel failed: the connection ended.
    ChannelFailed,
    /// Writing our stdout failed.
    OutputFailed(io::Error),
}

/// Moves data between the channel and the local streams. Polled by hand so
/// that reading the channel (`read_chunk`), writing it (stdin) and the local
/// writers all progress together on the one `&mut Channel`.
struct Pump {
    ch: Channel,
    err: Option<ChannelStderr>,
    stdin: Option<StdinRx>,
    /// The reader, no longer polled once the channel refuses data.
    parked: Option<StdinRx>,
    /// Send EOF when stdin ends (not when a PTY's stdin is a terminal).
    eof_on_stdin_end: bool,
    pending_in: Option<(Vec<u8>, usize)>,
    out: Sink,
    err_out: Sink,
    out_pending: Option<Bytes>,
    err_pending: Option<Bytes>,
    /// Where remote stderr is read into (then copied out: it is small).
    err_buf: Box<[u8]>,
    stdout_done: bool,
    winch: Option<Signal>,
    signals: Vec<(Signal, i32)>,
}

impl Pump {
    fn flush_sinks(&self) {
        self.out.flush();
        self.err_out.flush();
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        for (sig, n) in &mut self.signals {
            if sig.poll_recv(cx).is_ready() {
                return Poll::Ready(Step::Signal(*n));
            }
        }
        if let Some(w) = &mut self.winch
            && w.poll_recv(cx).is_ready()
        {
            return Poll::Ready(Step::Resize);
        }
        loop {
            let mut progress = false;

            // Remote stdout → local stdout, chunk by chunk without copying.
            if !self.stdout_done && self.out_pending.is_none() {
                // read_chunk keeps its waker in the channel's state, so a fresh
                // future per poll loses no wake-up.
                match pin!(self.ch.read_chunk()).poll(cx) {
                    Poll::Ready(Ok(Some(chunk))) => {
                        self.out_pending = Some(chunk);
                        progress = true;
                    }
                    Poll::Ready(Ok(None)) => {
                        self.stdout_done = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("channel read: {e}");
                        return Poll::Ready(Step::ChannelFailed);
                    }
                    Poll::Pending => {}
                }
            }
            if self.out_pending.is_some() {
                match self.out.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        self.out.send(self.out_pending.take().unwrap_or_default());
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Step::OutputFailed(e)),
                    Poll::Pending => {}
                }
            }

            // Remote stderr → local stderr.
            if let Some(err) = &mut self.err
                && self.err_pending.is_none()
            {
                let mut rb = ReadBuf::new(&mut self.err_buf);
                match Pin::new(err).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        if rb.filled().is_empty() {
                            self.err = None;
                        } else {
                            self.err_pending = Some(Bytes::copy_from_slice(rb.filled()));
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => {
                        self.err = None;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if self.err_pending.is_some() {
                match self.err_out.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        self.err_out.send(self.err_pending.take().unwrap_or_default());
                        progress = true;
                    }
                    // Our stderr is gone: drop the remote's.
                    Poll::Ready(Err(_)) => {
                        self.err_pending = None;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }

            // Local stdin → remote stdin; EOF when it ends.
            if self.pending_in.is_none()
                && let Some(rx) = &mut self.stdin
            {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(buf))) => {
                        self.pending_in = Some((buf, 0));
                        progress = true;
                    }
                    Poll::Ready(other) => {
                        if let Some(Err(e)) = other {
                            tracing::warn!("reading stdin: {e}");
                        }
                        self.stdin = None;
                        if self.eof_on_stdin_end {
                            self.ch.eof();
                        }
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            // A whole chunk is handed over as it is (no copy).
            if let Some((buf, 0)) = &mut self.pending_in {
                let mut whole = Some(std::mem::take(buf));
                match self.ch.poll_write_owned(cx, &mut whole) {
                    Poll::Ready(Ok(())) => {
                        self.pending_in = None;
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => {
                        self.pending_in = None;
                        self.parked = self.stdin.take();
                        progress = true;
                    }
                    Poll::Pending => {
                        if let Some((buf, _)) = &mut self.pending_in {
                            *buf = whole.take().unwrap_or_default();
                        }
                    }
                }
            }
            if let Some((buf, off)) = &mut self.pending_in {
                match Pin::new(&mut self.ch).poll_write(cx, &buf[*off..]) {
                    Poll::Ready(Ok(n)) => {
                        *off += n;
                        if *off >= buf.len() {
                            self.pending_in = None;
                        }
                        progress = true;
                    }
                    // The remote side stopped reading (channel closing): stop
                    // sending, keeping the reader for a later session.
                    Poll::Ready(Err(_)) => {
                        self.pending_in = None;
                        self.parked = self.stdin.take();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }

            if self.stdout_done
                && self.err.is_none()
                && self.out_pending.is_none()
                && self.err_pending.is_none()
            {
                self.flush_sinks();
                return Poll::Ready(Step::Done);
            }
            if !progress {
                // Nothing more for now: what is queued goes out.
                self.flush_sinks();
                return Poll::Pending;
            }
        }
    }
}

type StdinRx = mpsc::Receiver<io::Result<Vec<u8>>>;

/// The one stdin reader, shared by the sessions of a `--reconnect` run:
/// (its receiver when no session holds it, whether stdin has ended).
static STDIN: std::sync::Mutex<(Option<StdinRx>, bool)> = std::sync::Mutex::new((None, false));

/// Takes the stdin reader (starting it the first time); None once stdin ended.
fn take_stdin() -> Option<StdinRx> {
    let mut slot = STDIN.lock().unwrap_or_else(|p| p.into_inner());
    if slot.1 {
        return None;
    }
    Some(slot.0.take().unwrap_or_else(stdin_reader))
}

/// Returns the reader for a later session (None: stdin ended).
fn put_back_stdin(rx: Option<StdinRx>) {
    let mut slot = STDIN.lock().unwrap_or_else(|p| p.into_inner());
    match rx {
        Some(rx) => slot.0 = Some(rx),
        None => slot.1 = true,
    }
}

/// Terminating signals handled like ssh (restore the terminal, exit 255).
fn terminating_signals() -> Vec<(Signal, i32)> {
    [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::quit(), 3),
    ]
    .into_iter()
    .filter_map(|(k, n)| signal(k).ok().map(|s| (s, n)))
    .collect()
}

/// Waits for a terminating signal (for `-N`); the signal number.
pub async fn any_terminating_signal() -> i32 {
    let mut sigs = terminating_signals();
    poll_fn(|cx| {
        for (s, n) in &mut sigs {
            if s.poll_recv(cx).is_ready() {
                return Poll::Ready(*n);
            }
        }
        Poll::Pending
    })
    .await
}

/// Runs the session to its end.
pub async fn run(client: &Client, spec: SessionSpec) -> Ended {
    let ch = match client.open_session().await {
        Ok(ch) => ch,
        Err(e) => return Ended::Failed(e),
    };
    // Before the command starts: stderr is discarded until a reader exists.
    let err = ch.stderr();
    if spec.pty {
        let (cols, rows) = tty::size().unwrap_or((80, 24));
        let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
        let pty = Pty { term, cols, rows, ..Pty::default() };
        if let Err(e) = ch.request_pty(pty).await {
            match e {
                ClientError::Refused(_) => eprintln!("PTY allocation request failed on channel {}", ch.id()),
                e => return Ended::Failed(e),
            }
        }
    }
    for (name, value) in &spec.env {
        tracing::debug!("Sending env {name} = {value}");
        match ch.env(name, value).await {
            Ok(()) => {}
            // sshd accepts only what AcceptEnv lists; ssh goes on regardless.
            Err(ClientError::Refused(_)) => tracing::debug!("the server refused env {name}"),
            Err(e) => return Ended::Failed(e),
        }
    }
    let started = match (&spec.command, spec.subsystem) {
        (Some(name), true) => {
            tracing::debug!("Sending subsystem: {name}");
            match ch.subsystem(name).await {
                Err(ClientError::Refused(_)) => {
                    eprintln!("Request for subsystem '{name}' failed on channel {}", ch.id());
                    return Ended::Exit(None);
                }
                other => other,
            }
        }
        (Some(cmd), false) => ch.exec(cmd).await,
        (None, _) => ch.shell().await,
    };
    if let Err(e) = started {
        return Ended::Failed(e);
    }
    if spec.raw
        && let Err(e) = tty::enable_raw()
    {
        tracing::warn!("cannot put the terminal in raw mode: {e}");
    }
    let mut pump = Pump {
        ch,
        err: Some(err),
        stdin: if spec.read_stdin { take_stdin() } else { None },
        parked: None,
        eof_on_stdin_end: !spec.raw,
        pending_in: None,
        out: Sink::new(Target::Stdout),
        err_out: Sink::new(Target::Stderr),
        out_pending: None,
        err_pending: None,
        err_buf: vec![0u8; 16 * 1024].into_boxed_slice(),
        stdout_done: false,
        winch: if spec.raw { signal(SignalKind::window_change()).ok() } else { None },
        signals: terminating_signals(),
    };
    if pump.stdin.is_none() {
        pump.ch.eof();
    }
    let outcome = loop {
        match poll_fn(|cx| pump.poll_step(cx)).await {
            // A failed channel read means the connection ended: `wait` says why.
            Step::Done | Step::ChannelFailed => break None,
            Step::Resize => {
                if let Some((cols, rows)) = tty::size() {
                    let _ = pump.ch.resize(cols, rows).await;
                }
            }
            Step::Signal(n) => break Some(Ended::Signal(n)),
            Step::OutputFailed(e) => break Some(Ended::LocalOutput(e)),
        }
    };
    let Pump { ch, out, err_out, stdin, parked, .. } = pump;
    if spec.read_stdin {
        put_back_stdin(stdin.or(parked));
    }
    let flushed = out.finish();
    let _ = err_out.finish();
    if let Some(ended) = outcome {
        return ended;
    }
    let status = ch.wait().await;
    if let Err(e) = flushed
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Ended::LocalOutput(e);
    }
    match status {
        Ok(s) => Ended::Exit(s),
        Err(e) => Ended::Failed(e),
    }
}
