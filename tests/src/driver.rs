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
        let mut buf = vec![0u8; 64 * 1024];
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
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    let now = self.now();
                    self.conn.handle_eof(now);
                }
                Ok(n) => {
                    let now = self.now();
                    // Errors also close the connection and emit Closed.
                    let _ = self.conn.handle_input(now, &buf[..n]);
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
