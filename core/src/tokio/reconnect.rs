//! `ReconnectingClient`: one logical connection that survives lost links.
//!
//! A task dials with [`Client::connect`] (so every connection authenticates
//! afresh), watches it close, and asks the pure [`crate::Reconnect`] when to
//! dial again or to give up. Local forwards keep one listener across
//! connections; remote forwards are requested again on each new connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::forward::serve_local_forward;
use super::{Client, ClientError, ClientOptions, ExecOutput, RemoteForward, os_seed};
use crate::{CloseReason, GiveUpReason, Reconnect, ReconnectAction, ReconnectConfig, Timestamp};

/// What happened to the connection, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// Connected and authenticated on dial number `attempt`, counted as
    /// [`crate::Reconnect`] counts: since the very first dial or the last
    /// connection that stayed up `stable_period` (1: at once).
    Connected {
        /// The dial's number.
        attempt: u32,
    },
    /// The connection closed.
    Lost {
        /// Why.
        reason: CloseReason,
    },
    /// Dialling (TCP, key exchange or authentication) failed; `Retrying`
    /// or `GaveUp` follows.
    DialFailed {
        /// The attempt that failed.
        attempt: u32,
        /// Why, as the dial's error says it.
        error: String,
    },
    /// A dial failed or the link was lost: attempt `attempt` follows after `delay`.
    Retrying {
        /// The attempt that will follow.
        attempt: u32,
        /// Backoff (with jitter) before it.
        delay: Duration,
    },
    /// The server refused a remote forward on the current connection (it
    /// may still hold the port for the lost one); it is asked again after
    /// `retry_in`, for as long as this connection lives.
    ForwardRefused {
        /// `bind_host:bind_port` as requested.
        bind: String,
        /// Why, as the request's error says it.
        error: String,
        /// Wait before the next request.
        retry_in: Duration,
    },
    /// A remote forward is in place on the current connection (after each
    /// connect, and after a refusal once a retry succeeded).
    ForwardEstablished {
        /// `bind_host:bind_port` as requested.
        bind: String,
    },
    /// No more attempts.
    GaveUp {
        /// Why (a reason a retry cannot fix, retries exhausted, or stopped).
        reason: GiveUpReason,
        /// Dials made since the count last reset (see `Connected`).
        attempts: u32,
    },
}

/// A remote forward to re-request on every connection.
#[derive(Clone, Debug)]
struct RemoteSpec {
    bind_host: String,
    bind_port: u32,
    host: String,
    port: u16,
}

#[derive(Debug)]
struct Shared {
    /// The client while connected; `Err` once given up.
    current: watch::Sender<Result<Option<Client>, String>>,
    events: broadcast::Sender<ReconnectEvent>,
    stop: watch::Sender<bool>,
    /// Held while requesting forwards (an async lock): a forward added
    /// while a new connection is being set up is requested exactly once,
    /// either by that set-up or by `remote_forward`.
    remotes: tokio::sync::Mutex<Vec<RemoteSpec>>,
    /// The remote forwards of the current connection (dropped with it).
    live: Mutex<Vec<RemoteForward>>,
}

/// A client that reconnects with backoff when its connection is lost, and
/// tells the application what happens ([`ReconnectEvent`]).
///
/// ```no_run
/// # async fn demo(options: sansh::tokio::ClientOptions) -> Result<(), sansh::tokio::ClientError> {
/// use sansh::tokio::{ReconnectEvent, ReconnectingClient};
/// let mut rc = ReconnectingClient::start("server.example", 22, options, sansh::ReconnectConfig::default());
/// let mut events = rc.events();
/// let fwd = rc.local_forward("127.0.0.1:0".parse().unwrap(), "localhost", 5432).await?;
/// tokio::spawn(async move {
///     while let Ok(e) = events.recv().await {
///         println!("{e:?}"); // Connected, Lost, DialFailed, Retrying, GaveUp
///     }
/// });
/// let out = rc.exec("uptime").await?; // waits while reconnecting
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReconnectingClient {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    forwards: Vec<JoinHandle<()>>,
    first_events: Mutex<Option<broadcast::Receiver<ReconnectEvent>>>,
}

impl ReconnectingClient {
    /// Starts connecting to `host:port` in the background. Without a
    /// liveness probe in `options`, probes every 15 s (3 unanswered: lost)
    /// are turned on, so a dead link is noticed.
    pub fn start(
        host: &str,
        port: u16,
        mut options: ClientOptions,
        config: ReconnectConfig,
    ) -> ReconnectingClient {
        let ka = &mut options.config.transport.keepalive;
        if ka.probe_interval.is_none() {
            ka.probe_interval = Some(Duration::from_secs(15));
            ka.probe_count_max = 3;
        }
        // The first `events()` gets this receiver, so it sees everything
        // from the start (a quick first Connected included).
        let (events, first) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            current: watch::channel(Ok(None)).0,
            events,
            stop: watch::channel(false).0,
            remotes: tokio::sync::Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(run(shared.clone(), host.to_owned(), port, options, config));
        ReconnectingClient { shared, task, forwards: Vec::new(), first_events: Mutex::new(Some(first)) }
    }

    /// Subscribes to the events: the first call gets every event since
    /// `start`, later calls those from then on.
    pub fn events(&self) -> broadcast::Receiver<ReconnectEvent> {
        let first = self.first_events.lock().unwrap_or_else(|p| p.into_inner()).take();
        first.unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// The connected client, waiting while (re)connecting; an error once
    /// the machine has given up.
    pub async fn client(&self) -> Result<Client, ClientError> {
        current(&self.shared).await
    }

    /// Runs `command` on the current connection (waiting for one).
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, ClientError> {
        self.client().await?.exec(command).await
    }

    /// Listens on `listen` and forwards each connection to `host:port`
    /// through whatever connection is current (`ssh -L`); the listener
    /// outlives reconnects. Returns the bound address.
    pub async fn local_forward(
        &mut self,
        listen: SocketAddr,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, ClientError> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = self.shared.clone();
        let open = move |host: String, peer| {
            let shared = shared.clone();
            async move { current(&shared).await?.open_direct_tcpip(&host, port, peer).await }
        };
        // The listener outlives connections: it stops only when dropped.
        self.forwards.push(serve_local_forward(
            listener,
            host.to_owned(),
            port,
            open,
            std::future::pending(),
        ));
        Ok(addr)
    }

    /// Asks the server to listen on `bind_host:bind_port` and forward to
    /// `host:port` here (`ssh -R`), now if connected and again after every
    /// reconnect. A fixed `bind_port` keeps the same port across reconnects.
    /// If the server refuses it now, it is not kept.
    pub async fn remote_forward(
        &self,
        bind_host: &str,
        bind_port: u32,
        host: &str,
        port: u16,
    ) -> Result<(), ClientError> {
        let spec = RemoteSpec { bind_host: bind_host.to_owned(), bind_port, host: host.to_owned(), port };
        let mut remotes = self.shared.remotes.lock().await;
        let client = self.shared.current.borrow().as_ref().ok().and_then(Clone::clone);
        if let Some(client) = client {
            let f = client.remote_forward(&spec.bind_host, spec.bind_port, &spec.host, spec.port).await?;
            self.shared.live.lock().unwrap_or_else(|p| p.into_inner()).push(f);
        }
        remotes.push(spec);
        Ok(())
    }

    /// Stops reconnecting and closes the connection (a `GaveUp` with
    /// reason `Stopped` follows).
    pub fn stop(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// Waits until the task has ended (after `stop`, or when it gave up).
    pub async fn finished(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        let _ = self.shared.stop.send(true);
        for f in &self.forwards {
            f.abort();
        }
    }
}

/// Aborts a task when dropped (the retries of a connection that ended).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Requests one remote forward on `client`, retrying refusals while the
/// connection lives, and keeps it with the connection's forwards.
async fn keep_remote_forward(shared: Arc<Shared>, client: Client, r: RemoteSpec) {
    let bind = format!("{}:{}", r.bind_host, r.bind_port);
    let events = shared.events.clone();
    let refused = |e: &ClientError, retry_in: Duration| {
        tracing::warn!("remote forward {bind}: {e}; asking again in {retry_in:?}");
        let _ = events.send(ReconnectEvent::ForwardRefused {
            bind: bind.clone(),
            error: e.to_string(),
            retry_in,
        });
    };
    if let Some(f) = client.remote_forward_retrying(&r.bind_host, r.bind_port, &r.host, r.port, refused).await
    {
        shared.live.lock().unwrap_or_else(|p| p.into_inner()).push(f);
        let _ = shared.events.send(ReconnectEvent::ForwardEstablished { bind });
    }
}

async fn current(shared: &Shared) -> Result<Client, ClientError> {
    let mut rx = shared.current.subscribe();
    loop {
        match &*rx.borrow_and_update() {
            Ok(Some(c)) => return Ok(c.clone()),
            Err(why) => return Err(ClientError::Refused(format!("a connection: gave up ({why})"))),
            Ok(None) => {}
        }
        if rx.changed().await.is_err() {
            return Err(ClientError::Refused("a connection: the reconnecting client is gone".into()));
        }
    }
}

/// The dial → watch → back off loop.
async fn run(shared: Arc<Shared>, host: String, port: u16, options: ClientOptions, config: ReconnectConfig) {
    let origin = tokio::time::Instant::now();
    let now = || Timestamp::from_micros(origin.elapsed().as_micros() as u64);
    let mut machine = Reconnect::new(config, os_seed());
    let mut stop = shared.stop.subscribe();
    let mut attempt = 1;
    loop {
        // Dial (the machine starts with a dial under way).
        let dialled = tokio::select! {
            r = Client::connect(&host, port, options.clone()) => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        };
        match dialled {
            None => machine.stop(),
            Some(Ok(client)) => {
                machine.connected(now());
                let remotes = shared.remotes.lock().await;
                // Each remote forward in a task of this connection: a refusal
                // is retried without holding up the others or the work.
                let retries: Vec<_> = remotes
                    .iter()
                    .map(|r| tokio::spawn(keep_remote_forward(shared.clone(), client.clone(), r.clone())))
                    .map(AbortOnDrop)
                    .collect();
                let _previous = shared.current.send_replace(Ok(Some(client.clone())));
                drop(remotes);
                let _ = shared.events.send(ReconnectEvent::Connected { attempt });
                let reason = tokio::select! {
                    r = client.closed() => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                };
                let _previous = shared.current.send_replace(Ok(None));
                drop(retries);
                shared.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
                match reason {
                    Some(reason) => {
                        tracing::info!("connection to {host}:{port} lost: {reason}");
                        let _ = shared.events.send(ReconnectEvent::Lost { reason: reason.clone() });
                        machine.lost(now(), &reason);
                    }
                    None => {
                        client.disconnect();
                        machine.stop();
                    }
                }
            }
            Some(Err(e)) => {
                tracing::info!("dial {host}:{port}: {e}");
                let _ = shared.events.send(ReconnectEvent::DialFailed { attempt, error: e.to_string() });
                machine.dial_failed(now(), e.is_retryable(), &e.to_string());
            }
        }
        // Wait as the machine says, then dial again or give up.
        loop {
            match machine.poll_action() {
                Some(ReconnectAction::Dial { attempt: n }) => {
                    attempt = n;
                    break;
                }
                Some(ReconnectAction::Scheduled { attempt: n, delay }) => {
                    let _ = shared.events.send(ReconnectEvent::Retrying { attempt: n, delay });
                }
                Some(ReconnectAction::GiveUp { reason, attempts }) => {
                    let _previous = shared.current.send_replace(Err(reason.to_string()));
                    let _ = shared.events.send(ReconnectEvent::GaveUp { reason, attempts });
                    return;
                }
                None => {
                    let Some(t) = machine.poll_timeout() else {
                        // Nothing scheduled and not done: cannot happen; stop cleanly.
                        machine.stop();
                        continue;
                    };
                    let wait = t.saturating_duration_since(now());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => machine.handle_timeout(now()),
                        _ = stop.wait_for(|s| *s) => machine.stop(),
                    }
                }
            }
        }
    }
}
