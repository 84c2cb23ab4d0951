//! Fewer wake-ups for bulk reads: the socket's receive low-water mark.
//!
//! A client that decrypts faster than the peer sends (sshd's chacha20 is
//! slower than ours) would otherwise wake for every segment or two that
//! arrives, ~20,000 times per GiB, and each wake-up (epoll, a context
//! switch, two reads) costs more than the bytes it brings. While a transfer
//! is visibly streaming, the task sets `SO_RCVLOWAT` so the kernel reports
//! readiness only once [`MARK`] bytes are buffered, and reads them in one
//! go. It never waits for bytes that are not coming: if the mark is not
//! reached within [`WAIT`] of the last read, the task reads what is there
//! anyway and drops the mark, and only a new streak of bulk wake-ups sets
//! it again. A stream that ends or pauses therefore costs at most one
//! `WAIT` once; request/response traffic that never streams never sees it.
//!
//! Linux only (where readiness honours the mark and the kernel sizes the
//! receive buffer for it); elsewhere this does nothing.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes the kernel buffers before it reports the socket readable.
pub(crate) const MARK: usize = 128 * 1024;
/// A wake-up that read at least this much was bulk data.
const BULK_READ: usize = 32 * 1024;
/// Bulk wake-ups in a row before the mark is set.
const STREAK: u32 = 8;
/// How long a read waits for the mark before it takes what is there.
/// tokio's timer ticks in milliseconds: this fires within 1-2 ms.
pub(crate) const WAIT: Duration = Duration::from_millis(1);

/// Whether the mark is set on the task's socket, and why.
#[derive(Debug)]
pub(crate) struct LowWater {
    on: bool,
    /// Consecutive readiness wake-ups that each read at least `BULK_READ`.
    streak: u32,
    /// The last read while the mark is set: the fallback read is `WAIT` after.
    last_read: Instant,
    /// Not on this system, or the kernel refused it once: never again.
    disabled: bool,
}

impl LowWater {
    pub(crate) fn new() -> Self {
        LowWater {
            on: false,
            streak: 0,
            last_read: Instant::now(),
            disabled: !cfg!(any(target_os = "linux", target_os = "android")),
        }
    }

    /// When the task should read without waiting for readiness, if the mark is set.
    pub(crate) fn fallback_at(&self) -> Option<Instant> {
        self.on.then(|| self.last_read + WAIT)
    }

    /// After a wake-up's reads: `got` bytes in all, `fallback` when the
    /// timer (not readiness) woke us. A readiness wake-up that read nothing
    /// (stale readiness) changes nothing.
    pub(crate) fn after_read(&mut self, stream: &TcpStream, got: usize, fallback: bool) {
        if (self.disabled && !self.on) || (got == 0 && !fallback) {
            return;
        }
        if fallback || got < BULK_READ {
            // The mark was not reached in time, or the data came in small
            // pieces: back to waking for every byte.
            self.streak = 0;
            if self.on {
                self.set(stream, false);
            }
        } else {
            self.streak = self.streak.saturating_add(1);
        }
        if !self.on && self.streak >= STREAK {
            if Self::buffer_holds_mark(stream) {
                self.set(stream, true);
            } else {
                // Ask the kernel again after another streak, not every read.
                self.streak = 0;
            }
        }
        if self.on {
            // The clock is read only while the fallback needs it (also if
            // clearing failed: the next fallback retries a WAIT later).
            self.last_read = Instant::now();
        }
    }

    /// Linux clamps the TCP window to the mark when the receive buffer is
    /// smaller than the mark needs; by the time a transfer has streamed for
    /// a while autotuning has grown the buffer well past it. Wait for that
    /// rather than shrink the peer's window.
    fn buffer_holds_mark(stream: &TcpStream) -> bool {
        socket2::SockRef::from(stream).recv_buffer_size().is_ok_and(|size| size >= 4 * MARK)
    }

    fn set(&mut self, stream: &TcpStream, on: bool) {
        match sansh_sys::set_recv_low_water(stream, if on { MARK } else { 1 }) {
            Ok(()) => self.on = on,
            // Never set it again. (Should clearing ever fail, the mark
            // stays and so does the fallback read, which retries.)
            Err(e) => {
                tracing::debug!("SO_RCVLOWAT: {e}; reading without it");
                self.disabled = true;
            }
        }
    }
}
