//! A blocking driver for a sansh [`Connection`] over a std `TcpStream`:
//! the drive loop of the crate docs, for tests (the tokio adapter is the
//! real one).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sansh::{Connection, Event, Timestamp};

/// What the event callback wants next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop `run_until` successfully.
    Done,
}

/// A connection driven over a real socket.
#[derive(Debug)]
pub struct Driver {
    /// The state machine.
    pub conn: Connection,
    stream: TcpStream,
    origin: Instant,
    /// Every event seen so far.
    pub events: Vec<Event>,
    /// Whether the peer closed the stream.
    pub eof: bool,
}

impl Driver {
    /// Connects to `addr` (with TCP_NODELAY) and flushes the first output.
    pub fn connect(addr: SocketAddr, conn: Connection) -> std::io::Result<Driver> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(Driver { conn, stream, origin: Instant::now(), events: Vec::new(), eof: false })
    }

    /// The connection's clock: microseconds since the driver started.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The clock origin, so a caller can make timestamps before connecting.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while !self.conn.pending_transmit().is_empty() {
            let n = self.stream.write(self.conn.pending_transmit())?;
            self.conn.consume_transmit(n);
        }
        Ok(())
    }

    /// Drives the connection until `on_event` returns `Flow::Done` (Ok), the
    /// connection closes (Err with the close reason) or `timeout` passes.
    /// `on_event` may issue commands on the connection.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut on_event: impl FnMut(&mut Connection, &Event) -> Flow,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut done = false;
            let mut closed = None;
            while let Some(e) = self.conn.poll_event() {
                if on_event(&mut self.conn, &e) == Flow::Done {
                    done = true;
                }
                if let Event::Closed { reason } = &e {
                    closed = Some(reason.to_string());
                }
                self.events.push(e);
            }
            // Write even when closing: a DISCONNECT may be pending.
            let wrote = self.flush();
            if done {
                return Ok(());
            }
            if let Some(reason) = closed {
                return Err(format!("connection closed: {reason}"));
            }
            wrote.map_err(|e| format!("write: {e}"))?;
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("timed out; events so far: {:?}", self.events));
            }
            let mut wait = deadline - now;
            if let Some(t) = self.conn.poll_timeout() {
                let due = Duration::from_micros(t.as_micros().saturating_sub(self.now().as_micros()));
                wait = wait.min(due);
            }
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            // Zero-copy: the socket is read straight into the connection.
            match self.stream.read(self.conn.receive_buffer(64 * 1024)) {
                Ok(0) => {
                    self.eof = true;
                    let now = self.now();
                    self.conn.handle_eof(now);
                }
                Ok(n) => {
                    let now = self.now();
                    // Errors also close the connection and emit Closed.
                    let _ = self.conn.commit_received(now, n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => {
                    let now = self.now();
                    self.conn.handle_eof(now);
                    if !self.conn.is_closed() {
                        return Err(format!("read: {e}"));
                    }
                }
            }
            let now = self.now();
            if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                self.conn.handle_timeout(now);
            }
        }
    }
}

/// What an `exec` produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error (extended data 1).
    pub stderr: Vec<u8>,
    /// How it ended (None if the server sent neither exit-status nor exit-signal).
    pub exit: Option<sansh::ExitStatus>,
}

impl Driver {
    /// Connects, accepts the server's host key without checking (tests only),
    /// and runs until authenticated.
    pub fn login(addr: SocketAddr, config: sansh::ClientConfig) -> Result<Driver, String> {
        let conn = Connection::client(config, Timestamp::ZERO, rand_seed()).map_err(|e| e.to_string())?;
        let mut d = Driver::connect(addr, conn).map_err(|e| format!("connect: {e}"))?;
        d.run_until(Duration::from_secs(30), |conn, e| match e {
            Event::HostKey(check) => {
                conn.accept_host_key(check.id).expect("pending host key");
                Flow::Continue
            }
            Event::Authenticated { .. } => Flow::Done,
            _ => Flow::Continue,
        })?;
        Ok(d)
    }

    /// Runs `command` in a new session channel, feeding `stdin` then EOF, and
    /// collects its output until the channel closes.
    pub fn exec(&mut self, command: &str, stdin: &[u8], timeout: Duration) -> Result<ExecOutput, String> {
        let ch = self.conn.open_session(sansh::ChannelOptions::default()).map_err(|e| e.to_string())?;
        let mut out = ExecOutput::default();
        let mut failed = None;
        let command = command.to_owned();
        let stdin = stdin.to_vec();
        self.run_until(timeout, |conn, e| {
            match e {
                Event::ChannelOpened { channel } if *channel == ch => {
                    conn.exec(ch, &command).expect("exec");
                }
                Event::ChannelOpenFailed { channel, reason, description, .. } if *channel == ch => {
                    failed = Some(format!("open failed: {reason}: {description}"));
                    return Flow::Done;
                }
                Event::ChannelRequestResult { channel, success, .. } if *channel == ch => {
                    if !success {
                        failed = Some("exec refused".into());
                        return Flow::Done;
                    }
                    // A command that needs no stdin may have exited (and its
                    // channel closed) in the same read as the exec reply.
                    let sent = conn.channel_write(ch, &stdin).and_then(|_| conn.channel_eof(ch));
                    match sent {
                        Ok(()) | Err(sansh::Error::ChannelClosed { .. }) => {}
                        Err(e) => panic!("write stdin: {e}"),
                    }
                }
                Event::ChannelData { channel, data } if *channel == ch => out.stdout.extend_from_slice(data),
                Event::ChannelExtendedData { channel, data, .. } if *channel == ch => {
                    out.stderr.extend_from_slice(data)
                }
                Event::ChannelExit { channel, status } if *channel == ch => out.exit = Some(status.clone()),
                Event::ChannelClosed { channel, .. } if *channel == ch => return Flow::Done,
                _ => {}
            }
            Flow::Continue
        })?;
        match failed {
            Some(f) => Err(f),
            None => Ok(out),
        }
    }
}

/// A seed for a real connection: from the OS, as an adapter would do.
pub fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let f = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    f.expect("read /dev/urandom");
    seed
}
