//! Local standard streams on threads of their own, moving owned buffers:
//! the remote's stdout chunks (from `Channel::read_chunk`: slices of the
//! connection's receive buffer) are written without another copy and
//! dropped once written, which frees that buffer; stdin arrives as owned
//! buffers. Blocking writes to a slow pipe or
//! terminal never stall the connection's task.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sansh::Bytes;
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

/// Queued bytes at which `send` wakes the writer without waiting for
/// `flush`: a bulk download is written in batches of this size.
const BATCH: usize = 256 << 10;

/// Chunks the writer thread has not taken yet.
#[derive(Debug, Default)]
struct Queue {
    chunks: Vec<Bytes>,
    bytes: usize,
    /// The sender is gone: write what is queued, then stop.
    closed: bool,
    /// The writer waits on the condition variable.
    sleeping: bool,
}

#[derive(Debug, Default)]
struct Shared {
    in_flight: AtomicUsize,
    queue: Mutex<Queue>,
    more: Condvar,
    waker: Mutex<Option<Waker>>,
    error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A writer thread for stdout or stderr. Chunks are queued and the thread
/// is woken once per batch (`BATCH` bytes, or `flush` when the producer has
/// nothing more for now), and writes them with one `writev`: waking it per
/// 32 KiB chunk cost a fifth of a download's CPU in context switches.
///
/// A regular file, or a character device that is not a terminal (such as
/// /dev/null), cannot stall on a reader: the batches are written inline,
/// without the thread.
#[derive(Debug)]
pub struct Sink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    inline: Option<Mutex<Inline>>,
}

/// The descriptor of an inline sink.
#[derive(Debug)]
struct Inline {
    /// None once a write failed (the rest is dropped; the error is kept).
    file: Option<std::fs::File>,
}

/// Whether writes to `f` complete without waiting for a reader.
fn never_stalls(f: &std::fs::File) -> bool {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    f.metadata()
        .is_ok_and(|m| m.file_type().is_file() || (m.file_type().is_char_device() && !f.is_terminal()))
}

/// Writes every chunk, in order, with as few `writev` calls as the
/// descriptor allows.
fn write_all_chunks(f: &mut std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < chunks.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[i][off..])
            .chain(chunks[i + 1..].iter().map(|c| &c[..]))
            .take(512)
            .map(IoSlice::new)
            .collect();
        let mut n = match f.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while i < chunks.len() && n >= chunks[i].len() - off {
            n -= chunks[i].len() - off;
            i += 1;
            off = 0;
        }
        off += n;
    }
    Ok(())
}

impl Sink {
    /// Starts the thread (or writes inline, see above).
    pub fn new(target: Target) -> Sink {
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        // A duplicate of the descriptor as a plain File: unbuffered writes,
        // no line scanning (std's Stdout is a LineWriter).
        let file = match target {
            Target::Stdout => io::stdout().as_fd().try_clone_to_owned(),
            Target::Stderr => io::stderr().as_fd().try_clone_to_owned(),
        }
        .map(std::fs::File::from);
        if let Ok(f) = &file
            && never_stalls(f)
        {
            let inline = Inline { file: file.ok() };
            return Sink { shared, thread: None, inline: Some(Mutex::new(inline)) };
        }
        let thread = std::thread::Builder::new()
            .name(format!("sansh-{target:?}").to_lowercase())
            .spawn(move || {
                let mut file = match file {
                    Ok(f) => Some(f),
                    Err(e) => {
                        *lock(&sh.error) = Some(e);
                        None
                    }
                };
                let mut batch = Vec::new();
                loop {
                    let closed = {
                        let mut q = lock(&sh.queue);
                        while q.chunks.is_empty() && !q.closed {
                            q.sleeping = true;
                            q = sh.more.wait(q).unwrap_or_else(|p| p.into_inner());
                            q.sleeping = false;
                        }
                        std::mem::swap(&mut batch, &mut q.chunks);
                        q.bytes = 0;
                        q.closed
                    };
                    if let Some(f) = file.as_mut()
                        && let Err(e) = write_all_chunks(f, &batch)
                    {
                        // Later chunks are dropped: the pump sees the error.
                        file = None;
                        *lock(&sh.error) = Some(e);
                    }
                    let written: usize = batch.iter().map(Bytes::len).sum();
                    // Written: the connection's buffers they pin go now.
                    batch.clear();
                    sh.in_flight.fetch_sub(written, Ordering::AcqRel);
                    sh.wake();
                    if closed && lock(&sh.queue).chunks.is_empty() {
                        break;
                    }
                }
            })
            .expect("spawn a writer thread");
        Sink { shared, thread: Some(thread), inline: None }
    }

    /// Inline sinks: writes what is queued now.
    fn write_inline(&self, inline: &Mutex<Inline>) {
        let mut inl = lock(inline);
        let batch = {
            let mut q = lock(&self.shared.queue);
            q.bytes = 0;
            std::mem::take(&mut q.chunks)
        };
        if batch.is_empty() {
            return;
        }
        if let Some(f) = inl.file.as_mut()
            && let Err(e) = write_all_chunks(f, &batch)
        {
            inl.file = None;
            *lock(&self.shared.error) = Some(e);
        }
        let written: usize = batch.iter().map(Bytes::len).sum();
        drop(batch);
        self.shared.in_flight.fetch_sub(written, Ordering::AcqRel);
    }

    fn take_error(&self) -> Option<io::Error> {
        lock(&self.shared.error).take()
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
        // Over the limit: make sure the writer is at it, then wait for it.
        self.flush();
        *lock(&self.shared.waker) = Some(cx.waker().clone());
        // The thread may have drained between the check and the registration.
        if self.shared.in_flight.load(Ordering::Acquire) < LIMIT {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Queues a chunk (after `poll_ready`); wakes the writer once a batch
    /// is queued.
    pub fn send(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.shared.in_flight.fetch_add(chunk.len(), Ordering::AcqRel);
        let mut q = lock(&self.shared.queue);
        q.bytes += chunk.len();
        q.chunks.push(chunk);
        if q.bytes >= BATCH {
            if let Some(inline) = &self.inline {
                drop(q);
                self.write_inline(inline);
            } else if q.sleeping {
                self.shared.more.notify_one();
            }
        }
    }

    /// Wakes the writer for whatever is queued: call it when there is
    /// nothing more to send for now, so output is never held back.
    pub fn flush(&self) {
        if let Some(inline) = &self.inline {
            return self.write_inline(inline);
        }
        let q = lock(&self.shared.queue);
        if q.sleeping && !q.chunks.is_empty() {
            self.shared.more.notify_one();
        }
    }

    /// Waits until everything queued is written.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some(inline) = &self.inline {
            self.write_inline(inline);
        }
        lock(&self.shared.queue).closed = true;
        self.shared.more.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Sink {
    /// Without `finish`: the thread writes what is queued and ends.
    fn drop(&mut self) {
        if let Some(inline) = &self.inline {
            self.write_inline(inline);
        }
        lock(&self.shared.queue).closed = true;
        self.shared.more.notify_one();
    }
}

/// Smallest and largest read from standard input.
const STDIN_MIN_READ: usize = 16 * 1024;
const STDIN_MAX_READ: usize = 256 * 1024;

/// Reads standard input on a thread of its own; the receiver ends (None)
/// at end of input. The thread may stay blocked in `read` after the session
/// ends: the process exits without waiting for it.
///
/// Each read goes into the spare capacity of a fresh `Vec` (rustix's
/// `read` with `spare_capacity`, which marks only the bytes read as
/// initialised): nothing is zeroed first. `vec![0u8; size]` cost a 256 KiB
/// memset per read, ~3.5% of an upload's client CPU.
pub fn stdin_reader() -> tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
    use rustix::io::Errno;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::Builder::new()
        .name("sansh-stdin".into())
        .spawn(move || {
            // Descriptor 0 read directly; holding std's lock keeps anything
            // else from reading it through std's buffer meanwhile.
            let stdin = io::stdin();
            let input = stdin.lock();
            // Reads grow while they fill the buffer (a file or a fast pipe:
            // fewer, larger chunks, fewer wake-ups of the session) and
            // shrink back for a terminal's keystrokes.
            let mut size = STDIN_MIN_READ;
            loop {
                let mut buf = Vec::with_capacity(size);
                // One read(2): it returns what is available (a keystroke
                // goes out at once); `buf.len()` becomes the count read.
                match rustix::io::read(&input, rustix::buffer::spare_capacity(&mut buf)) {
                    // A closed descriptor 0 is end of input, as for std's Stdin.
                    Ok(0) | Err(Errno::BADF) => break,
                    Ok(n) => {
                        size = if n >= size {
                            (size * 2).min(STDIN_MAX_READ)
                        } else {
                            (n * 2).max(STDIN_MIN_READ)
                        };
                        if tx.blocking_send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.into()));
                        break;
                    }
                }
            }
        })
        .expect("spawn the stdin thread");
    rx
}
