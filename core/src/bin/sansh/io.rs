//! Local standard streams on threads of their own, moving owned buffers:
//! the remote's stdout chunks (from `Channel::read_chunk`) are written
//! without another copy and handed back for the connection to reuse, and
//! stdin arrives as owned buffers. Blocking writes to a slow pipe or
//! terminal never stall the connection's task.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

/// Bytes queued to a sink before the pump waits (and so stops reading the
/// channel, which holds the SSH window: flow control reaches the server).
const LIMIT: usize = 4 << 20;

/// Which local stream a sink writes.
#[derive(Copy, Clone, Debug)]
pub enum Target {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct Shared {
    in_flight: AtomicUsize,
    waker: Mutex<Option<Waker>>,
    error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }
}

/// A writer thread for stdout or stderr.
#[derive(Debug)]
pub struct Sink {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    spent: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the thread. With `recycle`, written buffers come back through
    /// [`Sink::spent`].
    pub fn new(target: Target, recycle: bool) -> Sink {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let (spent_tx, spent) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        // A duplicate of the descriptor as a plain File: unbuffered writes,
        // no line scanning (std's Stdout is a LineWriter).
        let file = match target {
            Target::Stdout => io::stdout().as_fd().try_clone_to_owned(),
            Target::Stderr => io::stderr().as_fd().try_clone_to_owned(),
        }
        .map(std::fs::File::from);
        let thread = std::thread::Builder::new()
            .name(format!("sansh-{target:?}").to_lowercase())
            .spawn(move || {
                let mut failed = false;
                let mut file = match file {
                    Ok(f) => Some(f),
                    Err(e) => {
                        failed = true;
                        *sh.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                };
                while let Ok(chunk) = rx.recv() {
                    if let Some(f) = file.as_mut().filter(|_| !failed) {
                        if let Err(e) = f.write_all(&chunk) {
                            failed = true;
                            *sh.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                    }
                    sh.in_flight.fetch_sub(chunk.len(), Ordering::AcqRel);
                    sh.wake();
                    if recycle {
                        let _ = spent_tx.send(chunk);
                    }
                }
            })
            .expect("spawn a writer thread");
        Sink { tx: Some(tx), spent, shared, thread: Some(thread) }
    }

    fn take_error(&self) -> Option<io::Error> {
        self.shared.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Ready when another chunk may be queued; an error if writing failed
    /// (a closed pipe).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.take_error() {
            return Poll::Ready(Err(e));
        }
        if self.shared.in_flight.load(Ordering::Acquire) < LIMIT {
            return Poll::Ready(Ok(()));
        }
        *self.shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        // The thread may have drained between the check and the registration.
        if self.shared.in_flight.load(Ordering::Acquire) < LIMIT {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Queues a chunk (after `poll_ready`).
    pub fn send(&self, chunk: Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        self.shared.in_flight.fetch_add(chunk.len(), Ordering::AcqRel);
        if let Some(tx) = &self.tx {
            let _ = tx.send(chunk);
        }
    }

    /// A written buffer to reuse.
    pub fn spent(&self) -> Option<Vec<u8>> {
        self.spent.try_recv().ok()
    }

    /// Waits until everything queued is written.
    pub fn finish(mut self) -> io::Result<()> {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Reads standard input on a thread of its own; the receiver ends (None)
/// at end of input. The thread may stay blocked in `read` after the session
/// ends: the process exits without waiting for it.
pub fn stdin_reader() -> tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::Builder::new()
        .name("sansh-stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            loop {
                let mut buf = vec![0u8; 64 * 1024];
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        })
        .expect("spawn the stdin thread");
    rx
}
