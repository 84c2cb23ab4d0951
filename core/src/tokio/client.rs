//! [`Client`]: connect, authenticate, run commands, open channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::agent::Agent;
use super::channel::Channel;
use super::task::{Cmd, HookCtx, Hooks, Task, TaskShared};
use super::{ClientError, ClientOptions, PromptFn, PromptRequest, os_seed};
use crate::{
    ChannelKind, CloseReason, Connection, Credential, Event, ExitStatus, OpenFailure, Secret, Stats,
    Timestamp,
};

/// What a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// How it ended, if the server said.
    pub exit: Option<ExitStatus>,
}

impl ExecOutput {
    /// The exit code, or 128 + signal number style codes like a shell for
    /// signals (`None` when the server sent no status).
    pub fn code(&self) -> Option<i32> {
        match &self.exit {
            Some(ExitStatus::Code(c)) => Some(*c as i32),
            Some(ExitStatus::Signal { signal, .. }) => Some(128 + signal_number(signal)),
            None => None,
        }
    }
}

/// POSIX numbers of the signals RFC 4254 names (for shell-like exit codes).
pub(crate) fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// Where remote-forwarded connections go: (bound host, bound port) → target.
pub(crate) type ForwardTable = Arc<Mutex<HashMap<u32, (String, u16)>>>;

/// A connected, authenticated SSH client. Cheap to clone: clones share the
/// connection, which closes when the last clone and channel are dropped.
#[derive(Clone, Debug)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<TaskShared>,
    closed: watch::Receiver<Option<CloseReason>>,
    pub(crate) forwards: ForwardTable,
    banners: Arc<Mutex<Vec<String>>>,
}

/// A [`Client`] that does not keep the connection open.
#[derive(Clone, Debug)]
pub(crate) struct WeakClient {
    cmds: mpsc::WeakUnboundedSender<Cmd>,
    shared: Arc<TaskShared>,
    closed: watch::Receiver<Option<CloseReason>>,
    forwards: ForwardTable,
    banners: Arc<Mutex<Vec<String>>>,
}

impl WeakClient {
    /// The client, while some handle still keeps the connection open.
    pub(crate) fn upgrade(&self) -> Option<Client> {
        Some(Client {
            cmds: self.cmds.upgrade()?,
            shared: self.shared.clone(),
            closed: self.closed.clone(),
            forwards: self.forwards.clone(),
            banners: self.banners.clone(),
        })
    }
}

struct ClientHooks {
    host: String,
    port: u16,
    policy: super::HostKeyPolicy,
    prompt: Option<PromptFn>,
    agent: Option<Agent>,
    authenticated: Option<oneshot::Sender<()>>,
    forwards: ForwardTable,
    banners: Arc<Mutex<Vec<String>>>,
    on_banner: Option<super::BannerFn>,
}

/// Runs `f` on a blocking thread, then `apply` with its result in the task.
fn blocking<T: Send + 'static>(
    cmds: &mpsc::WeakUnboundedSender<Cmd>,
    f: impl FnOnce() -> T + Send + 'static,
    apply: impl FnOnce(&mut Connection, T) + Send + 'static,
) {
    let cmds = cmds.clone();
    tokio::task::spawn_blocking(move || {
        let value = f();
        if let Some(cmds) = cmds.upgrade() {
            let _ = cmds.send(Cmd::With(Box::new(move |conn| apply(conn, value))));
        }
    });
}

impl Hooks for ClientHooks {
    fn on_event(&mut self, ctx: &mut HookCtx<'_>, event: &Event) {
        let (conn, cmds) = (&mut *ctx.conn, ctx.cmds);
        match event {
            Event::HostKey(check) => {
                let (id, key) = (check.id, check.key.clone());
                let (policy, host, port) = (self.policy.clone(), self.host.clone(), self.port);
                tracing::debug!("server host key {} {}", check.algorithm.name(), check.fingerprint);
                blocking(
                    cmds,
                    move || policy.decide(&host, port, &key),
                    move |conn, verdict| {
                        let r = match verdict {
                            Ok(true) => conn.accept_host_key(id),
                            Ok(false) => conn.reject_host_key(id),
                            Err(e) => {
                                tracing::warn!("known_hosts: {e}");
                                conn.reject_host_key(id)
                            }
                        };
                        if let Err(e) = r {
                            tracing::debug!("host key answer: {e}");
                        }
                    },
                );
            }
            Event::KexCompleted { algorithms: a, rekey } => {
                // As `ssh -v` words it, so logs can be compared.
                let what = if *rekey { "rekey" } else { "kex" };
                tracing::info!(
                    "{what}: algorithm: {}, host key algorithm: {}, cipher: {} / {}",
                    a.kex.name(),
                    a.host_key.name(),
                    a.cipher_c2s.name(),
                    a.cipher_s2c.name()
                );
            }
            Event::AuthBanner { message, .. } => {
                // Debug: a CLI shows it through `on_banner` already.
                tracing::debug!("server banner: {}", message.trim_end());
                if let Some(show) = &self.on_banner {
                    show(message);
                }
                self.banners.lock().unwrap_or_else(|p| p.into_inner()).push(message.clone());
            }
            Event::AuthProgress(a) => tracing::debug!("authentication: {a}"),
            Event::PasswordRequest { id, user } => {
                let id = *id;
                let req = PromptRequest::Password { user: user.clone(), host: self.host.clone() };
                self.ask(conn, cmds, req, move |conn, answer| {
                    let _ = conn.provide_password(id, answer.and_then(|mut a| a.pop()).map(Secret::from));
                });
            }
            Event::PasswordChangeRequest { id, prompt } => {
                let id = *id;
                let req = PromptRequest::NewPassword { prompt: prompt.clone() };
                self.ask(conn, cmds, req, move |conn, answer| {
                    let _ = conn.change_password(id, answer.and_then(|mut a| a.pop()).map(Secret::from));
                });
            }
            Event::KeyboardInteractive { id, name, instruction, prompts } => {
                let id = *id;
                let req = PromptRequest::KeyboardInteractive {
                    name: name.clone(),
                    instruction: instruction.clone(),
                    prompts: prompts.clone(),
                };
                self.ask(conn, cmds, req, move |conn, answer| {
                    let answers = answer.map(|a| a.into_iter().map(Secret::from).collect());
                    if let Err(e) = conn.answer_keyboard_interactive(id, answers) {
                        tracing::warn!("keyboard-interactive: {e}");
                        let _ = conn.answer_keyboard_interactive(id, None);
                    }
                });
            }
            Event::SignRequest { id, key, algorithm, data } => {
                let id = *id;
                let Some(agent) = self.agent.clone() else {
                    let _ = conn.provide_signature(id, None);
                    return;
                };
                let (key, algorithm, data, cmds) = (key.clone(), *algorithm, data.clone(), cmds.clone());
                tokio::spawn(async move {
                    let sig = agent.sign(&key, algorithm, &data).await;
                    if let Err(e) = &sig {
                        tracing::warn!("ssh-agent signing failed: {e}");
                    }
                    if let Some(cmds) = cmds.upgrade() {
                        let _ = cmds.send(Cmd::With(Box::new(move |conn| {
                            let _ = conn.provide_signature(id, sig.ok().as_deref());
                        })));
                    }
                });
            }
            Event::Authenticated { method, .. } => {
                tracing::info!("authenticated with {method}");
                if let Some(tx) = self.authenticated.take() {
                    let _ = tx.send(());
                }
            }
            Event::ChannelOpenRequest {
                channel,
                kind: ChannelKind::ForwardedTcpip { connected_port, originator_host, originator_port, .. },
            } => {
                let target =
                    self.forwards.lock().unwrap_or_else(|p| p.into_inner()).get(connected_port).cloned();
                let channel = *channel;
                let Some((host, port)) = target else {
                    let _ = conn.reject_channel(
                        channel,
                        OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                        "no such forwarding",
                    );
                    return;
                };
                tracing::debug!(
                    "forwarded connection from {originator_host}:{originator_port} to {host}:{port}"
                );
                let cmds = cmds.clone();
                tokio::spawn(async move {
                    let cmd = match TcpStream::connect((host.as_str(), port)).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            Cmd::AcceptForwarded { channel, stream }
                        }
                        Err(e) => {
                            tracing::warn!("remote forward to {host}:{port}: {e}");
                            Cmd::With(Box::new(move |conn| {
                                let _ =
                                    conn.reject_channel(channel, OpenFailure::CONNECT_FAILED, &e.to_string());
                            }))
                        }
                    };
                    if let Some(cmds) = cmds.upgrade() {
                        let _ = cmds.send(cmd);
                    }
                });
            }
            Event::ChannelOpenRequest { channel, .. } => {
                let _ = conn.reject_channel(
                    *channel,
                    OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                    "not accepted by this client",
                );
            }
            _ => {}
        }
    }
}

impl ClientHooks {
    /// Asks the prompt callback on a blocking thread (or answers `None`).
    fn ask(
        &self,
        conn: &mut Connection,
        cmds: &mpsc::WeakUnboundedSender<Cmd>,
        req: PromptRequest,
        apply: impl FnOnce(&mut Connection, Option<Vec<String>>) + Send + 'static,
    ) {
        match self.prompt.clone() {
            Some(prompt) => blocking(cmds, move || prompt(req), apply),
            None => apply(conn, None),
        }
    }
}

impl Client {
    /// Connects to `host:port`, checks the host key, authenticates. Returns
    /// once authenticated; fails with the close reason (host key refused,
    /// authentication failed, ...) or a timeout. `connect_timeout` bounds
    /// each TCP connect attempt, then the key exchange and authentication.
    pub async fn connect(host: &str, port: u16, options: ClientOptions) -> Result<Client, ClientError> {
        let timeout = options.connect_timeout;
        let stream = dial(host, port, &options).await?;
        let fut = Self::connect_inner(host, port, stream, options);
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| ClientError::Timeout(t))?,
            None => fut.await,
        }
    }

    async fn connect_inner(
        host: &str,
        port: u16,
        stream: TcpStream,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let mut config = options.config;
        for path in &options.identity_files {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ClientError::File { what: path.display().to_string(), source })?;
            let key = crate::load_private_key(&text, options.passphrase.as_deref().map(str::as_bytes))
                .map_err(|source| ClientError::Key { path: path.display().to_string(), source })?;
            config.credentials.push(Credential::PrivateKey(key));
        }
        let agent = match (&options.agent_socket, options.use_agent) {
            (_, false) => None,
            (Some(path), true) => Some(Agent::at(path.clone())),
            (None, true) => Agent::from_env(),
        };
        if let Some(agent) = &agent {
            match agent.identities().await {
                Ok(mut keys) => {
                    if let Some(allowed) = &options.agent_keys_only {
                        keys.retain(|k| allowed.iter().any(|a| a.key_data() == k.key_data()));
                    }
                    config.credentials.extend(keys.into_iter().map(Credential::ExternalKey));
                }
                Err(e) => tracing::debug!("ssh-agent unavailable: {e}"),
            }
        }
        if options.prompt.is_some() {
            let has = |creds: &[Credential], m: &str| creds.iter().any(|c| c.method() == m);
            if !has(&config.credentials, "password") {
                config.credentials.push(Credential::PasswordPrompt);
            }
            if !has(&config.credentials, "keyboard-interactive") {
                config.credentials.push(Credential::KeyboardInteractive);
            }
        }
        if let Some(order) = &options.preferred_auth {
            let rank = |c: &Credential| order.iter().position(|m| m == c.method());
            config.credentials.retain(|c| rank(c).is_some());
            // Stable: within a method the credentials keep their order.
            config.credentials.sort_by_key(rank);
        }
        options.host_key_policy.prefer_known(host, port, &mut config.transport.host_key_algorithms);

        let conn = Connection::client(config, Timestamp::ZERO, os_seed())?;

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(None);
        let shared = Arc::new(TaskShared { notify: Notify::new(), closed: closed_tx });
        let (auth_tx, auth_rx) = oneshot::channel();
        let forwards = ForwardTable::default();
        let banners = Arc::new(Mutex::new(Vec::new()));
        let hooks = ClientHooks {
            host: host.to_owned(),
            port,
            policy: options.host_key_policy,
            prompt: options.prompt,
            agent,
            authenticated: Some(auth_tx),
            forwards: forwards.clone(),
            banners: banners.clone(),
            on_banner: options.on_banner,
        };
        let task = Task {
            conn,
            stream,
            origin: Instant::now(),
            cmds: cmd_rx,
            cmd_tx: cmd_tx.downgrade(),
            keep_alive: None,
            shared: shared.clone(),
            hooks,
            channels: HashMap::new(),
            opening: HashMap::new(),
            requests: HashMap::new(),
            globals: HashMap::new(),
            read_size: super::task::MIN_READ,
            low_water: super::low_water::LowWater::new(),
        };
        tokio::spawn(task.run());
        let client = Client { cmds: cmd_tx, shared, closed: closed_rx, forwards, banners };
        let mut closed = client.closed.clone();
        tokio::select! {
            r = auth_rx => match r {
                Ok(()) => Ok(client),
                Err(_) => Err(ClientError::Closed(client.close_reason().unwrap_or(CloseReason::Eof))),
            },
            r = closed.wait_for(Option::is_some) => {
                let reason = r.ok().and_then(|r| r.clone()).unwrap_or(CloseReason::Eof);
                Err(ClientError::Closed(reason))
            }
        }
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient {
            cmds: self.cmds.downgrade(),
            shared: self.shared.clone(),
            closed: self.closed.clone(),
            forwards: self.forwards.clone(),
            banners: self.banners.clone(),
        }
    }

    /// Completes when the connection has ended, without keeping it open
    /// (unlike [`Client::closed`], which needs a handle).
    pub(crate) fn closed_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            // An error: the task is gone, so is the connection.
            let _ = closed.wait_for(Option::is_some).await;
        }
    }

    fn gone(&self) -> ClientError {
        ClientError::Closed(self.close_reason().unwrap_or(CloseReason::Eof))
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.borrow().clone()
    }

    /// Waits until the connection ends and says why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.closed.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(CloseReason::Eof),
            Err(_) => CloseReason::Eof,
        }
    }

    /// USERAUTH_BANNERs the server sent, sanitised for a terminal.
    pub fn banners(&self) -> Vec<String> {
        self.banners.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counters and RTT of the connection.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Stats(tx)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())
    }

    /// Sends DISCONNECT and closes.
    pub fn disconnect(&self) {
        let _ = self.cmds.send(Cmd::Disconnect("disconnected by user".into()));
    }

    /// Opens a channel of `kind`.
    pub async fn open_channel(&self, kind: ChannelKind) -> Result<Channel, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Open { kind: Box::new(kind), reply: tx }).map_err(|_| self.gone())?;
        let (id, state) = rx.await.map_err(|_| self.gone())??;
        Ok(Channel::new(id, state, self.cmds.clone(), self.shared.clone()))
    }

    /// Opens a session channel (for a command, a shell or a subsystem).
    pub async fn open_session(&self) -> Result<Channel, ClientError> {
        self.open_channel(ChannelKind::Session).await
    }

    /// Opens a `direct-tcpip` channel: the server connects to `host:port`.
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u16,
        originator: std::net::SocketAddr,
    ) -> Result<Channel, ClientError> {
        self.open_channel(ChannelKind::DirectTcpip {
            host: host.into(),
            port: u32::from(port),
            originator_host: originator.ip().to_string(),
            originator_port: u32::from(originator.port()),
        })
        .await
    }

    /// Runs `command` and collects its output and exit status.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, ClientError> {
        self.exec_with_input(command, &[]).await
    }

    /// Runs `command` with `stdin` as its input.
    pub async fn exec_with_input(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, ClientError> {
        collect_exec(self.open_session().await?, command, stdin).await
    }

    /// Sends a global request and returns the reply data on success.
    pub async fn global_request(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.global_request_then(name, data, None).await
    }

    /// `global_request`, with `on_success` run in the connection's task when
    /// the reply arrives, before any later message is handled.
    pub(crate) async fn global_request_then(
        &self,
        name: &str,
        data: &[u8],
        on_success: Option<super::task::OnGlobalSuccess>,
    ) -> Result<Vec<u8>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Global { request: Box::new((name.into(), data.to_vec())), reply: tx, on_success })
            .map_err(|_| self.gone())?;
        match rx.await.map_err(|_| self.gone())? {
            Err(ClientError::Refused(_)) => Err(ClientError::Refused(name.into())),
            other => other,
        }
    }

    /// Asks for a key re-exchange now.
    pub fn rekey(&self) {
        let _ = self.cmds.send(Cmd::With(Box::new(|conn| {
            let _ = conn.rekey();
        })));
    }

    /// Waits (up to `timeout`) for the connection to end, after `disconnect`.
    pub async fn wait_closed(&self, timeout: Duration) -> Option<CloseReason> {
        tokio::time::timeout(timeout, self.closed()).await.ok()
    }
}

/// The TCP connection to `host:port`: the addresses of `address_family`,
/// each tried in turn (from `bind_address` if set, each attempt limited by
/// `connect_timeout`), up to `connection_attempts` rounds one second apart,
/// as OpenSSH's ssh. The error is the last attempt's.
async fn dial(host: &str, port: u16, options: &ClientOptions) -> Result<TcpStream, ClientError> {
    let failed = |source| ClientError::Connect { addr: format!("{host}:{port}"), source };
    let family = options.address_family;
    let lookup = tokio::net::lookup_host((host, port));
    let resolved = match options.connect_timeout {
        Some(t) => tokio::time::timeout(t, lookup).await.map_err(|_| ClientError::Timeout(t))?,
        None => lookup.await,
    };
    let addrs: Vec<std::net::SocketAddr> = resolved.map_err(failed)?.filter(|a| family.admits(a)).collect();
    if addrs.is_empty() {
        return Err(failed(std::io::Error::other("Address family for hostname not supported")));
    }
    let attempts = options.connection_attempts.max(1);
    let mut last = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for addr in &addrs {
            tracing::debug!("connecting to {host} [{}] port {port} (attempt {})", addr.ip(), attempt + 1);
            let connect = connect_from(*addr, options.bind_address);
            let result = match options.connect_timeout {
                Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| ClientError::Timeout(t)),
                None => Ok(connect.await),
            };
            match result {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    tracing::debug!("connect to address {} port {port}: {e}", addr.ip());
                    last = Some(failed(e));
                }
                Err(timeout) => {
                    tracing::debug!("connect to address {} port {port}: timed out", addr.ip());
                    last = Some(timeout);
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| failed(std::io::Error::other("no address to connect to"))))
}

/// One TCP connect to `addr`, from `bind` (port chosen by the system) if given.
async fn connect_from(
    addr: std::net::SocketAddr,
    bind: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(ip) = bind else { return TcpStream::connect(addr).await };
    if ip.is_ipv4() != addr.is_ipv4() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("bind address {ip} is not of the family of {}", addr.ip()),
        ));
    }
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(std::net::SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// Runs `command` on a fresh session channel with `stdin` as its input, and
/// collects stdout, stderr and the exit status.
pub(crate) async fn collect_exec(
    ch: Channel,
    command: &str,
    stdin: &[u8],
) -> Result<ExecOutput, ClientError> {
    // The stderr reader exists before the command starts: stderr that
    // arrives with the exec reply is kept, not discarded as unread.
    let err = ch.stderr();
    ch.exec(command).await?;
    collect_output(ch, err, stdin).await
}

/// Feeds `stdin` to a channel whose command has started, and collects
/// stdout, stderr (from `err`, taken before the command started) and the
/// exit status. Input is written while output is read: a command that
/// echoes its input (`cat`) stops reading it once its output fills our
/// window, so writing everything first would deadlock.
pub(crate) async fn collect_output(
    ch: Channel,
    mut err: super::ChannelStderr,
    stdin: &[u8],
) -> Result<ExecOutput, ClientError> {
    use tokio::io::AsyncReadExt;
    let feed = async {
        // A command that exits without reading all its input closes the
        // channel under the writer: that is its business, not an error of
        // ours (its output and status still count).
        let written = if stdin.is_empty() { Ok(()) } else { ch.write_all_shared(stdin).await };
        ch.eof();
        if let Err(e) = written {
            tracing::debug!("stdin not fully written: {e}");
        }
    };
    let stdout = async {
        let mut buf = Vec::new();
        while let Some(chunk) = ch.next_chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok::<_, std::io::Error>(buf)
    };
    let mut stderr = Vec::new();
    let ((), stdout, read_err) = tokio::join!(feed, stdout, err.read_to_end(&mut stderr));
    read_err?;
    let exit = ch.wait().await?;
    Ok(ExecOutput { stdout: stdout?, stderr, exit })
}
