//! A fault-injecting TCP proxy for tests and demos: pass bytes through,
//! black-hole them (the link silently stops delivering, no FIN: only a
//! keepalive probe can tell), or cut every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward everything.
    Pass,
    /// Swallow every byte in both directions and keep the sockets open.
    BlackHole,
    /// Close every open connection (new ones are accepted and forwarded).
    Cut,
}

/// A TCP proxy on 127.0.0.1 in front of `target`. Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    local_addr: SocketAddr,
    mode: watch::Sender<FaultMode>,
    /// Bumped by `cut` so every open connection closes.
    cut: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Listens on an ephemeral 127.0.0.1 port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local_addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(FaultMode::Pass);
        let (cut, cut_rx) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let (mode_rx, cut_rx) = (mode_rx.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let generation = *cut_rx.borrow();
                    tokio::join!(
                        pump(ri, wo, mode_rx.clone(), cut_rx.clone(), generation),
                        pump(ro, wi, mode_rx, cut_rx, generation),
                    );
                });
            }
        });
        Ok(FaultProxy { local_addr, mode, cut, accepted, accept })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Switches the mode. `Cut` closes what is open, then behaves as `Pass`.
    pub fn set(&self, mode: FaultMode) {
        if mode == FaultMode::Cut {
            self.cut.send_modify(|g| *g += 1);
            self.mode.send_replace(FaultMode::Pass);
        } else {
            self.mode.send_replace(mode);
        }
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.mode.borrow()
    }

    /// Connections accepted so far (reconnects show here).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Copies one direction, obeying the mode, until either side ends or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<FaultMode>,
    mut cut: watch::Receiver<u64>,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if *mode.borrow() == FaultMode::BlackHole {
                        continue;
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            r = cut.changed() => {
                if r.is_err() || *cut.borrow() != generation {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}
