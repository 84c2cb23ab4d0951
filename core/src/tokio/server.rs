//! A small SSH server on the server role: authentication by a callback,
//! `exec` run with `sh -c` (stdin, stdout, stderr, exit status or signal).
//! It powers `sansh --demo` and the tests; it is not a replacement for sshd
//! (no PTY, shell or subsystems, no remote forwarding, no privilege
//! separation).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::channel::Channel;
use super::os_seed;
use super::task::{HookCtx, Hooks, Task, TaskShared};
use crate::{
    AuthMethod, ChannelId, ChannelKind, ChannelRequest, CloseReason, Connection, Event, ExitStatus,
    OpenFailure, ServerConfig, Stats, Timestamp,
};

/// Decides an authentication attempt: `(user, method)` → accept?
pub type AuthFn = Arc<dyn Fn(&str, &AuthMethod) -> bool + Send + Sync>;

/// Told how each connection ended, with its final counters (monitoring,
/// and tests that check what the server saw).
pub type CloseFn = Arc<dyn Fn(&Stats, &CloseReason) + Send + Sync>;

/// How a [`Server`] behaves.
#[derive(Clone)]
pub struct ServerOptions {
    /// The core configuration (host keys, algorithms, limits, keepalive).
    pub config: ServerConfig,
    /// Accepts or refuses each attempt. Public keys are asked twice (the
    /// query, then with a signature the core has already verified).
    pub auth: AuthFn,
    /// Run `exec` requests with `sh -c` as the server's own user.
    pub run_commands: bool,
    /// Accept `direct-tcpip` channels (the client's `-L`) to loopback
    /// addresses only (127.0.0.0/8, ::1, localhost).
    pub allow_loopback_forwarding: bool,
    /// Called once per connection when it closes.
    pub on_close: Option<CloseFn>,
}

impl ServerOptions {
    /// A server accepting exactly these public keys (for any user name).
    pub fn with_authorized_keys(config: ServerConfig, keys: Vec<ssh_key::PublicKey>) -> Self {
        let keys: Vec<_> = keys.into_iter().map(|k| k.key_data().clone()).collect();
        ServerOptions {
            config,
            auth: Arc::new(
                move |_user, method| matches!(method, AuthMethod::PublicKey { key, .. } if keys.contains(key.key_data())),
            ),
            run_commands: true,
            allow_loopback_forwarding: false,
            on_close: None,
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions").field("run_commands", &self.run_commands).finish_non_exhaustive()
    }
}

/// A listening server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    options: ServerOptions,
}

struct ServerHooks {
    options: ServerOptions,
    sessions: HashMap<ChannelId, Channel>,
}

impl Hooks for ServerHooks {
    fn on_event(&mut self, ctx: &mut HookCtx<'_>, event: &Event) {
        match event {
            Event::AuthRequest { id, user, method } => {
                let ok = !matches!(method, AuthMethod::None) && (self.options.auth)(user, method);
                let r = if ok { ctx.conn.auth_accept(*id) } else { ctx.conn.auth_reject(*id, None) };
                if let Err(e) = r {
                    tracing::debug!("auth answer: {e}");
                }
            }
            Event::Authenticated { user, method } => tracing::info!("{user} authenticated with {method}"),
            Event::ChannelOpenRequest { channel, kind: ChannelKind::Session } => {
                match ctx.accept_channel(*channel) {
                    Ok(ch) => {
                        self.sessions.insert(*channel, ch);
                    }
                    Err(e) => tracing::debug!("{channel}: accept: {e}"),
                }
            }
            Event::ChannelOpenRequest { channel, kind: ChannelKind::DirectTcpip { host, port, .. } }
                if self.options.allow_loopback_forwarding =>
            {
                let loopback =
                    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                let port = u16::try_from(*port).ok();
                match (loopback, port) {
                    (true, Some(port)) => match ctx.accept_channel(*channel) {
                        Ok(ch) => {
                            tokio::spawn(forward_to(ch, host.clone(), port));
                        }
                        Err(e) => tracing::debug!("{channel}: accept: {e}"),
                    },
                    _ => {
                        let _ = ctx.conn.reject_channel(
                            *channel,
                            OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                            "only loopback destinations are forwarded",
                        );
                    }
                }
            }
            Event::ChannelOpenRequest { channel, .. } => {
                let _ = ctx.conn.reject_channel(
                    *channel,
                    OpenFailure::ADMINISTRATIVELY_PROHIBITED,
                    "not supported",
                );
            }
            Event::ChannelRequest { channel, id, request, want_reply } => {
                let ok = match request {
                    ChannelRequest::Exec { command } if self.options.run_commands => {
                        match self.sessions.remove(channel) {
                            Some(ch) => {
                                tokio::spawn(run_exec(ch, String::from_utf8_lossy(command).into_owned()));
                                true
                            }
                            None => false,
                        }
                    }
                    ChannelRequest::Env { .. } => true,
                    _ => false,
                };
                if *want_reply {
                    let _ = if ok {
                        ctx.conn.accept_channel_request(*id)
                    } else {
                        ctx.conn.reject_channel_request(*id)
                    };
                }
            }
            // No remote forwarding here. Refuse at once: an unanswered
            // tcpip-forward (ssh -R) would also hold back the replies to
            // every later global request, ssh's keepalives included.
            Event::GlobalRequest { id, want_reply: true, .. } => {
                let _ = ctx.conn.reject_global_request(*id);
            }
            Event::ChannelClosed { channel, .. } => {
                self.sessions.remove(channel);
            }
            Event::Closed { reason } => {
                if let Some(on_close) = &self.options.on_close {
                    on_close(&ctx.conn.stats(), reason);
                }
            }
            _ => {}
        }
    }
}

/// Name of a POSIX signal number, as RFC 4254 spells it (without `SIG`).
fn signal_name(n: i32) -> &'static str {
    match n {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        4 => "ILL",
        6 => "ABRT",
        8 => "FPE",
        9 => "KILL",
        11 => "SEGV",
        13 => "PIPE",
        14 => "ALRM",
        15 => "TERM",
        10 => "USR1",
        12 => "USR2",
        _ => "unknown",
    }
}

/// Carries a `direct-tcpip` channel to `host:port`.
async fn forward_to(mut channel: Channel, host: String, port: u16) {
    match TcpStream::connect((host.as_str(), port)).await {
        Ok(mut tcp) => {
            let _ = tcp.set_nodelay(true);
            if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut channel).await {
                tracing::debug!("forward to {host}:{port}: {e}");
            }
        }
        Err(e) => tracing::debug!("forward to {host}:{port}: {e}"),
    }
    channel.eof();
    channel.close();
}

/// Runs `command` with `sh -c`, wiring the channel to its stdio.
async fn run_exec(channel: Channel, command: String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut err_out = channel.stderr();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = err_out.write_all(format!("sh: {e}\n").as_bytes()).await;
            let _ = channel.send_exit(ExitStatus::Code(127)).await;
            channel.eof();
            channel.close();
            return;
        }
    };
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut rd, mut wr) = tokio::io::split(channel);
    // Like sshd, the exit status goes out once the command has exited and
    // its output is drained, whether or not the client ever sends EOF on
    // stdin (asyncssh's `run()` does not).
    let feed = async {
        let _ = tokio::io::copy(&mut rd, &mut stdin).await;
        drop(stdin);
        std::future::pending::<()>().await
    };
    let out = async {
        let _ = tokio::io::copy(&mut stdout, &mut wr).await;
        let _ = wr.flush().await;
    };
    let errs = async {
        let _ = tokio::io::copy(&mut stderr, &mut err_out).await;
        let _ = err_out.flush().await;
    };
    let done = async {
        tokio::join!(errs, out);
        child.wait().await
    };
    let status = tokio::select! {
        status = done => status,
        () = feed => unreachable!("feed never finishes"),
    };
    let channel = rd.unsplit(wr);
    let status = match status {
        Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => ExitStatus::Code(code as u32),
            (None, Some(sig)) => ExitStatus::Signal {
                signal: signal_name(sig).into(),
                core_dumped: false,
                message: String::new(),
            },
            _ => ExitStatus::Code(255),
        },
        Err(_) => ExitStatus::Code(255),
    };
    let _ = channel.send_exit(status).await;
    channel.eof();
    channel.close();
}

impl Server {
    /// Listens on `addr` (use port 0 for any).
    pub async fn bind(addr: SocketAddr, options: ServerOptions) -> std::io::Result<Server> {
        Ok(Server { listener: TcpListener::bind(addr).await?, options })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections forever, each in its own task.
    pub async fn run(self) -> std::io::Result<()> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            tracing::debug!("connection from {peer}");
            let options = self.options.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, options).await {
                    tracing::warn!("{peer}: {e}");
                }
            });
        }
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, options: ServerOptions) -> Result<(), crate::Error> {
    let _ = stream.set_nodelay(true);
    let conn = Connection::server(options.config.clone(), Timestamp::ZERO, os_seed())?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (closed_tx, _closed_rx) = watch::channel(None);
    let shared = Arc::new(TaskShared { notify: Notify::new(), closed: closed_tx });
    let task = Task {
        conn,
        stream,
        origin: Instant::now(),
        cmds: cmd_rx,
        cmd_tx: cmd_tx.downgrade(),
        keep_alive: Some(cmd_tx),
        shared,
        hooks: ServerHooks { options, sessions: HashMap::new() },
        channels: HashMap::new(),
        opening: HashMap::new(),
        requests: HashMap::new(),
        globals: HashMap::new(),
        read_size: super::task::MIN_READ,
        low_water: super::low_water::LowWater::new(),
    };
    task.run().await;
    Ok(())
}
