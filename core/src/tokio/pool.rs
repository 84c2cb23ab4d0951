//! `Pool`: multiplexed, keyed connection reuse over the pure [`crate::Pool`].
//!
//! The pure machine decides (which connection serves a lease, when to dial,
//! who waits, what idles out); this adapter dials with [`Client::connect`],
//! reports `connected` / `failed` / `lost`, runs the machine's timers in a
//! background task, and turns leases into session channels whose drop
//! returns the lease.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot};

use super::channel::ClosedWatch;
use super::{Channel, Client, ClientError, ClientOptions, ExecOutput};
use crate::pool::{
    Acquire, ConnectionId, Lease, LeaseId, PoolConfig, PoolEvent, PoolKey, PoolStats, WaiterId,
};
use crate::{Credential, Timestamp};

/// Where pooled sessions go, and as whom. Targets with the same host, port,
/// user, credentials and host key policy share connections; any difference
/// keeps them apart.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How to connect and authenticate.
    pub options: ClientOptions,
}

impl Target {
    /// A target; `options.config.user` is the user.
    pub fn new(host: impl Into<String>, port: u16, options: ClientOptions) -> Self {
        Target { host: host.into(), port, options }
    }

    /// The pool key: host, port, user, and a digest of every credential the
    /// options can authenticate with (key fingerprints, identity file paths,
    /// passwords, agent use) and of the host key policy (its kind and
    /// known_hosts file; for a callback, which callback), so no connection
    /// serves another credential or a stricter policy than it was checked by.
    pub fn key(&self) -> PoolKey {
        let o = &self.options;
        let mut h = Sha256::new();
        for c in &o.config.credentials {
            match c {
                Credential::PrivateKey(k) => {
                    h.update(b"key:");
                    h.update(k.public_key().fingerprint(ssh_key::HashAlg::Sha256).to_string());
                }
                Credential::ExternalKey(k) => {
                    h.update(b"external:");
                    h.update(k.fingerprint(ssh_key::HashAlg::Sha256).to_string());
                }
                Credential::Password(p) => {
                    h.update(b"password:");
                    h.update(Sha256::digest(p.expose().as_bytes()));
                }
                Credential::PasswordPrompt => h.update(b"password-prompt"),
                Credential::KeyboardInteractive => h.update(b"keyboard-interactive"),
            }
            h.update(b"\n");
        }
        for f in &o.identity_files {
            h.update(b"file:");
            h.update(f.to_string_lossy().as_bytes());
            h.update(b"\n");
        }
        if o.use_agent {
            h.update(b"agent:");
            h.update(std::env::var("SSH_AUTH_SOCK").unwrap_or_default());
        }
        h.update(b"\n");
        // A connection is only as trusted as the policy that accepted its
        // host key: one dialled under AcceptAny must not serve a Strict target.
        h.update(o.host_key_policy.identity().as_bytes());
        let digest = h.finalize();
        PoolKey {
            host: self.host.clone(),
            port: self.port,
            user: o.config.user.clone(),
            identity: digest.iter().take(16).map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Connection reuse for many tasks: [`Pool::get`] leases a session channel
/// on a connection of the target's key (up to
/// `max_channels_per_connection` at once), dialling new connections within
/// the limits and queueing callers beyond them. Cheap to clone.
///
/// ```no_run
/// # async fn demo(options: sansh::tokio::ClientOptions) -> Result<(), sansh::tokio::ClientError> {
/// use sansh::tokio::{Pool, Target};
/// let pool = Pool::new(sansh::PoolConfig::default());
/// let target = Target::new("server.example", 22, options);
/// let out = pool.exec(&target, "uptime").await?; // dials, runs, returns the lease
/// let again = pool.exec(&target, "uptime").await?; // same connection
/// println!("{}", pool.stats().reuse_ratio());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the timer task when the machine's next deadline may have moved.
    rearm: Arc<Notify>,
    origin: tokio::time::Instant,
    acquire_timeout: Duration,
}

#[derive(Debug)]
struct State {
    machine: crate::Pool,
    clients: HashMap<ConnectionId, Client>,
    /// How to dial each key (the first target seen for it).
    targets: HashMap<PoolKey, Target>,
    waiters: HashMap<WaiterId, (oneshot::Sender<Result<Lease, ClientError>>, PoolKey)>,
    /// The last dial error per key, for waiters the machine fails.
    dial_errors: HashMap<PoolKey, String>,
    /// Consecutive failed dials per key (the backoff before reporting one).
    dial_failures: HashMap<PoolKey, u32>,
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Carries out what the machine asks, until it asks nothing more.
    fn drive(self: &Arc<Self>, st: &mut State) {
        while let Some(event) = st.machine.poll_event() {
            self.handle(st, event);
        }
        self.rearm.notify_one();
    }

    fn handle(self: &Arc<Self>, st: &mut State, event: PoolEvent) {
        match event {
            PoolEvent::Dial { connection, key } => self.dial(st, connection, key),
            PoolEvent::LeaseGranted { waiter, lease } => {
                let id = lease.id;
                let delivered = st.waiters.remove(&waiter).is_some_and(|(tx, _)| tx.send(Ok(lease)).is_ok());
                if !delivered {
                    // The caller went away: the lease goes straight back.
                    let now = self.now();
                    st.machine.release(now, id);
                }
            }
            PoolEvent::WaiterTimedOut { waiter } => {
                if let Some((tx, _)) = st.waiters.remove(&waiter) {
                    let _ = tx.send(Err(ClientError::Timeout(self.acquire_timeout)));
                }
            }
            PoolEvent::WaiterFailed { waiter } => {
                if let Some((tx, key)) = st.waiters.remove(&waiter) {
                    let why = st.dial_errors.get(&key).map_or("every dial failed", String::as_str);
                    let _ = tx.send(Err(ClientError::Refused(format!(
                        "a pooled connection to {}:{}: {why}",
                        key.host, key.port
                    ))));
                }
            }
            PoolEvent::CloseIdle { connection } => {
                if let Some(client) = st.clients.remove(&connection) {
                    tracing::debug!("pool: closing idle connection {}", connection.0);
                    client.disconnect();
                }
            }
            PoolEvent::LeaseBroken { lease, connection } => {
                // The session's channel fails by itself; nothing to return.
                tracing::debug!("pool: lease {} broken with connection {}", lease.0, connection.0);
            }
        }
    }

    fn dial(self: &Arc<Self>, st: &mut State, id: ConnectionId, key: PoolKey) {
        let Some(target) = st.targets.get(&key).cloned() else {
            let now = self.now();
            st.machine.failed(now, id);
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            tracing::debug!("pool: dialling {}@{}:{} as connection {}", key.user, key.host, key.port, id.0);
            let result = Client::connect(&target.host, target.port, target.options.clone()).await;
            if result.is_err() {
                // Waiters still queued would have the machine dial again at
                // once: back off per key so a refusing server is not hammered.
                let failures = lock(&inner).dial_failures.get(&key).copied().unwrap_or(0);
                let backoff = Duration::from_millis(50)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
            }
            let mut st = lock(&inner);
            let now = inner.now();
            match result {
                Ok(client) => {
                    let watch = client.clone();
                    st.clients.insert(id, client);
                    st.dial_errors.remove(&key);
                    st.dial_failures.remove(&key);
                    st.machine.connected(now, id);
                    let weak = Arc::downgrade(&inner);
                    tokio::spawn(watch_connection(weak, id, watch));
                }
                Err(e) => {
                    tracing::info!("pool: dial {}:{} failed: {e}", key.host, key.port);
                    // Waiters the machine fails now learn why.
                    *st.dial_failures.entry(key.clone()).or_insert(0) += 1;
                    st.dial_errors.insert(key, e.to_string());
                    st.machine.failed(now, id);
                }
            }
            inner.drive(&mut st);
        });
    }

    fn release(self: &Arc<Self>, lease: LeaseId) {
        let mut st = lock(self);
        let now = self.now();
        st.machine.release(now, lease);
        self.drive(&mut st);
    }
}

/// Reports the connection lost when it closes (unless the pool closed it).
async fn watch_connection(inner: Weak<Inner>, id: ConnectionId, client: Client) {
    let reason = client.closed().await;
    drop(client);
    let Some(inner) = inner.upgrade() else { return };
    let mut st = lock(&inner);
    if st.clients.remove(&id).is_some() {
        tracing::info!("pool: connection {} lost: {reason}", id.0);
        let now = inner.now();
        st.machine.lost(now, id);
        inner.drive(&mut st);
    }
}

/// Runs the machine's timers (idle close, waiter timeouts). Holds the pool
/// only weakly between wake-ups: dropping the pool ends it.
async fn run_timers(inner: Weak<Inner>, rearm: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else { return };
            let st = lock(&inner);
            st.machine.poll_timeout().map(|t| inner.origin + Duration::from_micros(t.as_micros()))
        };
        let notified = rearm.notified();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                let Some(inner) = inner.upgrade() else { return };
                let mut st = lock(&inner);
                let now = inner.now();
                st.machine.handle_timeout(now);
                inner.drive(&mut st);
            }
            () = notified => {}
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the timer task so that it sees the pool is gone.
        self.rearm.notify_one();
    }
}

impl Pool {
    /// A pool with these limits. Call inside a tokio runtime (it starts the
    /// task that runs the idle and acquire timers).
    pub fn new(config: PoolConfig) -> Pool {
        let acquire_timeout = config.acquire_timeout;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                machine: crate::Pool::new(config),
                clients: HashMap::new(),
                targets: HashMap::new(),
                waiters: HashMap::new(),
                dial_errors: HashMap::new(),
                dial_failures: HashMap::new(),
            }),
            rearm: Arc::new(Notify::new()),
            origin: tokio::time::Instant::now(),
            acquire_timeout,
        });
        tokio::spawn(run_timers(Arc::downgrade(&inner), inner.rearm.clone()));
        Pool { inner }
    }

    /// A lease on a connection for `target`, waiting (FIFO, up to the
    /// acquire timeout) when every allowed connection is full.
    async fn acquire(&self, target: &Target) -> Result<(Lease, Client), ClientError> {
        let key = target.key();
        let (waiter, rx) = loop {
            let mut st = lock(&self.inner);
            st.targets.entry(key.clone()).or_insert_with(|| target.clone());
            let now = self.inner.now();
            match st.machine.acquire(now, &key) {
                Acquire::Leased(lease) => {
                    if let Some(c) = st.clients.get(&lease.connection).cloned() {
                        self.inner.drive(&mut st);
                        return Ok((lease, c));
                    }
                    // Closed under us and not yet reported: evict, try again.
                    st.machine.lost(now, lease.connection);
                    self.inner.drive(&mut st);
                }
                Acquire::Queued { waiter, .. } => {
                    let (tx, rx) = oneshot::channel();
                    st.waiters.insert(waiter, (tx, key.clone()));
                    self.inner.drive(&mut st);
                    break (waiter, rx);
                }
            }
        };
        let mut guard = WaiterGuard { inner: &self.inner, waiter, rx: Some(rx) };
        let result = guard.rx.as_mut().expect("set above").await;
        guard.rx = None;
        let lease = match result {
            Ok(r) => r?,
            Err(_) => return Err(ClientError::Refused("the pool was dropped".into())),
        };
        let client = lock(&self.inner).clients.get(&lease.connection).cloned();
        match client {
            Some(c) => Ok((lease, c)),
            None => {
                self.inner.release(lease.id);
                Err(ClientError::Refused("a pooled connection: it was lost".into()))
            }
        }
    }

    /// A new session channel for `target` on a pooled connection; dropping
    /// it closes the channel and returns the lease once the server has
    /// answered the close (so the slot is free on its side too).
    ///
    /// A connection that died under the lease is replaced once. When the
    /// server refuses the channel while others are open on that connection
    /// (its limit, such as OpenSSH's MaxSessions, is below
    /// `max_channels_per_connection`), that connection is capped at what it
    /// holds and the session is tried on another one; a refusal on an
    /// otherwise idle connection is the server's answer and is returned.
    pub async fn get(&self, target: &Target) -> Result<PooledSession, ClientError> {
        // Each capacity refusal lowers a connection's cap for good, so a few
        // tries suffice; the bound keeps a misbehaving server from looping us.
        const TRIES: u32 = 8;
        let (mut tries, mut lost) = (0, 0);
        loop {
            tries += 1;
            let (lease, client) = self.acquire(target).await?;
            let mut guard = LeaseGuard { inner: self.inner.clone(), lease: lease.id, channel: None };
            match client.open_session().await {
                Ok(channel) => {
                    guard.channel = Some(channel.closed_watch());
                    return Ok(PooledSession { channel, _lease: guard });
                }
                Err(e @ ClientError::Closed(_)) => {
                    lost += 1;
                    if lost >= 2 || tries >= TRIES {
                        return Err(e);
                    }
                }
                Err(e @ ClientError::OpenFailed { .. }) => {
                    let cap = guard.refused();
                    tracing::debug!(
                        "pool: connection {} refused a session ({e}); it now takes {cap}",
                        lease.connection.0
                    );
                    if cap == 0 || tries >= TRIES {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `command` on a pooled connection and collects its output.
    ///
    /// A session the server closes before answering the exec request never
    /// ran the command, so that is retried on a fresh session (dropbear
    /// before 2024.86 closes sessions whose command has not started when
    /// another session's command ends).
    pub async fn exec(&self, target: &Target, command: &str) -> Result<ExecOutput, ClientError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let PooledSession { channel, _lease: lease } = self.get(target).await?;
            let err = channel.stderr();
            match channel.exec(command).await {
                Ok(()) => {
                    // Consumes (and so closes) the channel before the lease goes back.
                    let out = super::client::collect_output(channel, err, &[]).await;
                    drop(lease);
                    return out;
                }
                Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionAborted && tries < 4 => {
                    tracing::debug!("pool: session closed before its command started ({e}); retrying");
                    drop(channel);
                    drop(lease);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The machine's counters: connections, leases, waiters, dials, reuse.
    pub fn stats(&self) -> PoolStats {
        lock(&self.inner).machine.stats()
    }

    /// Closes every pooled connection (leases in use break).
    pub fn close_all(&self) {
        let mut st = lock(&self.inner);
        let now = self.inner.now();
        for (id, c) in std::mem::take(&mut st.clients) {
            c.disconnect();
            st.machine.lost(now, id);
        }
        self.inner.drive(&mut st);
    }
}

/// Cancels a queued acquire whose future is dropped; a lease granted in the
/// meantime goes back.
struct WaiterGuard<'a> {
    inner: &'a Arc<Inner>,
    waiter: WaiterId,
    rx: Option<oneshot::Receiver<Result<Lease, ClientError>>>,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut st = lock(self.inner);
        st.waiters.remove(&self.waiter);
        if !st.machine.cancel(self.waiter)
            && let Ok(Ok(lease)) = rx.try_recv()
        {
            let now = self.inner.now();
            st.machine.release(now, lease.id);
        }
        self.inner.drive(&mut st);
    }
}

/// Returns a lease to the pool when dropped: at once, or, when it carries
/// a channel that is still closing, once that channel has closed.
#[derive(Debug)]
struct LeaseGuard {
    inner: Arc<Inner>,
    lease: LeaseId,
    channel: Option<ClosedWatch>,
}

/// How long a returned lease waits for its channel's close to be answered
/// before it is released anyway (a peer that never answers must not keep
/// the slot forever).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

impl LeaseGuard {
    /// Ends the lease as refused by the server (see [`crate::Pool::refused`]);
    /// returns the connection's new capacity. The release on drop that
    /// follows finds the lease gone and does nothing.
    fn refused(self) -> u32 {
        let mut st = lock(&self.inner);
        let now = self.inner.now();
        let cap = st.machine.refused(now, self.lease);
        self.inner.drive(&mut st);
        cap
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let closing = self.channel.take().filter(|c| !c.is_closed());
        match (closing, tokio::runtime::Handle::try_current()) {
            (Some(channel), Ok(runtime)) => {
                let (inner, lease) = (self.inner.clone(), self.lease);
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_WAIT, channel.wait()).await;
                    inner.release(lease);
                });
            }
            _ => self.inner.release(self.lease),
        }
    }
}

/// A session channel on a pooled connection: use it as a [`Channel`]
/// (exec, streams, wait); dropping it closes the channel and returns the
/// lease to the pool once the server has answered the close.
#[derive(Debug)]
pub struct PooledSession {
    channel: Channel,
    _lease: LeaseGuard,
}

impl Deref for PooledSession {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut Channel {
        &mut self.channel
    }
}
