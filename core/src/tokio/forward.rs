//! Port forwarding: local (`ssh -L`) and remote (`ssh -R`).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Client, ClientError};
use crate::wire::Writer;

/// A local forwarding: connections to `local_addr` are carried through the
/// server to the target. Stops listening when dropped or when its
/// connection ends (it does not keep the connection open: keep a
/// [`Client`] for as long as the forwarding should last).
#[derive(Debug)]
pub struct LocalForward {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl LocalForward {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A remote forwarding: the server listens and sends connections back to us.
#[derive(Debug)]
pub struct RemoteForward {
    client: Client,
    bind_host: String,
    bound_port: u32,
}

impl RemoteForward {
    /// The port the server bound (the one asked for, or its choice for 0).
    pub fn bound_port(&self) -> u32 {
        self.bound_port
    }

    /// Asks the server to stop listening. If the server refuses (dropbear
    /// 2022.83 refuses every cancel), it keeps listening and its connections
    /// keep being carried to the target until the connection ends.
    pub async fn cancel(self) -> Result<(), ClientError> {
        let mut data = Vec::new();
        data.put_str(&self.bind_host);
        data.put_u32(self.bound_port);
        self.client.global_request("cancel-tcpip-forward", &data).await?;
        // Only now: forgetting the target first would turn the connections a
        // still-listening server sends into refused channels.
        self.client.forwards.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.bound_port);
        Ok(())
    }
}

/// First pause after a failed accept (EMFILE, ENFILE, ENOBUFS, ...): the
/// error comes back at once until something frees up, so retrying at once
/// would spin.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between two accepts after repeated failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on `listener` and carries each TCP connection through the
/// channel `open(host, peer)` gives (`ssh -L`), until `stop` completes (the
/// listener is dropped then, releasing the port).
pub(crate) fn serve_local_forward<F, Fut, S>(
    listener: TcpListener,
    host: String,
    port: u16,
    open: F,
    stop: S,
) -> JoinHandle<()>
where
    F: Fn(String, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Result<super::Channel, ClientError>> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let local_addr = listener.local_addr().ok();
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut backoff = ACCEPT_BACKOFF_FIRST;
        loop {
            let accepted = tokio::select! {
                () = &mut stop => return,
                r = listener.accept() => r,
            };
            let (mut tcp, peer) = match accepted {
                Ok(x) => {
                    backoff = ACCEPT_BACKOFF_FIRST;
                    x
                }
                Err(e) => {
                    tracing::warn!("local forward {local_addr:?}: accept: {e}; pausing {backoff:?}");
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let opening = open(host.clone(), peer);
            let host = host.clone();
            tokio::spawn(async move {
                match opening.await {
                    Ok(mut ch) => {
                        if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut ch).await {
                            tracing::debug!("local forward {peer} -> {host}:{port}: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("local forward {peer} -> {host}:{port}: {e}"),
                }
            });
        }
    })
}

impl Client {
    /// `ssh -L listen:host:port`: listens on `listen` and carries each
    /// connection through the server to `host:port`.
    pub async fn local_forward(
        &self,
        listen: SocketAddr,
        host: &str,
        port: u16,
    ) -> Result<LocalForward, ClientError> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        // Weak: the forwarding does not keep the connection open by itself,
        // and it stops listening as soon as the connection ends.
        let weak = self.downgrade();
        let open = move |host: String, peer| {
            let client = weak.upgrade();
            async move {
                match client {
                    Some(client) => client.open_direct_tcpip(&host, port, peer).await,
                    None => Err(ClientError::Closed(crate::CloseReason::Eof)),
                }
            }
        };
        let stop = self.closed_signal();
        let accept = serve_local_forward(listener, host.to_owned(), port, open, stop);
        Ok(LocalForward { local_addr, accept })
    }

    /// `ssh -R bind_host:bind_port:host:port`: the server listens on
    /// `bind_host:bind_port` (0: its choice) and each connection there is
    /// carried back to `host:port` from here.
    pub async fn remote_forward(
        &self,
        bind_host: &str,
        bind_port: u32,
        host: &str,
        port: u16,
    ) -> Result<RemoteForward, ClientError> {
        let mut data = Vec::new();
        data.put_str(bind_host);
        data.put_u32(bind_port);
        // The target is registered by the connection's task as the reply is
        // handled: the server may send its first forwarded connection right
        // behind REQUEST_SUCCESS, before this future runs again.
        let (table, target) = (self.forwards.clone(), (host.to_owned(), port));
        let register = Box::new(move |reply: &[u8]| {
            let bound = if bind_port == 0 { crate::channel::bound_port(reply) } else { Some(bind_port) };
            if let Some(bound) = bound {
                table.lock().unwrap_or_else(|p| p.into_inner()).insert(bound, target);
            }
        });
        let reply = self.global_request_then("tcpip-forward", &data, Some(register)).await?;
        let bound_port = if bind_port == 0 {
            crate::channel::bound_port(&reply)
                .ok_or_else(|| ClientError::Refused("tcpip-forward (no port)".into()))?
        } else {
            bind_port
        };
        Ok(RemoteForward { client: self.clone(), bind_host: bind_host.to_owned(), bound_port })
    }
}

/// First wait before a refused remote forward is asked for again.
const FORWARD_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two requests.
const FORWARD_RETRY_MAX: Duration = Duration::from_secs(5);

impl Client {
    /// [`Client::remote_forward`], asked again after each refusal (waits
    /// from 250 ms doubling to 5 s) for as long as this connection lives.
    /// After a reconnect the server often still holds the port for the
    /// connection that died (sshd's old session until it notices), so the
    /// first request fails and a later one succeeds. `on_refused` hears
    /// each refusal and the wait before the next request. `None`: the
    /// connection closed first.
    pub async fn remote_forward_retrying(
        &self,
        bind_host: &str,
        bind_port: u32,
        host: &str,
        port: u16,
        mut on_refused: impl FnMut(&ClientError, Duration),
    ) -> Option<RemoteForward> {
        let mut wait = FORWARD_RETRY_FIRST;
        loop {
            match self.remote_forward(bind_host, bind_port, host, port).await {
                Ok(f) => return Some(f),
                Err(ClientError::Closed(_)) => return None,
                Err(e) => on_refused(&e, wait),
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = self.closed() => return None,
            }
            wait = (wait * 2).min(FORWARD_RETRY_MAX);
        }
    }
}
