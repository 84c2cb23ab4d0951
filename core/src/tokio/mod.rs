//! The tokio adapter (feature `tokio`): sockets, timers and streams around
//! the sans-IO core.
//!
//! One task per connection owns the TCP stream and the [`crate::Connection`]:
//! it selects on the socket, the connection's next deadline and a command
//! queue, then drains the outputs. Everything else is a handle that talks to
//! that task: [`Client`] (exec, sessions, forwarding) and [`Channel`]
//! (`AsyncRead`/`AsyncWrite` over a channel).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sansh::tokio::ClientError> {
//! use sansh::tokio::{Client, ClientOptions, HostKeyPolicy};
//! let mut options = ClientOptions::new("alice");
//! options.identity_files.push("/home/alice/.ssh/id_ed25519".into());
//! options.host_key_policy = HostKeyPolicy::AcceptNew { known_hosts: "/home/alice/.ssh/known_hosts".into() };
//! let client = Client::connect("server.example", 22, options).await?;
//! let out = client.exec("uname -a").await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```

mod agent;
mod channel;
mod client;
mod forward;
mod hostkey;
mod low_water;
mod pool;
mod proxy;
mod reconnect;
mod server;
mod task;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use channel::{Channel, ChannelStderr};
pub use client::{Client, ExecOutput};
pub use forward::{LocalForward, RemoteForward};
pub use hostkey::{HostKeyPolicy, HostKeyQuery};
pub use pool::{Pool, PooledSession, Target};
pub use proxy::{FaultMode, FaultProxy};
pub use reconnect::{ReconnectEvent, ReconnectingClient};
pub use server::{AuthFn, CloseFn, Server, ServerOptions, serve};

use crate::{ClientConfig, CloseReason, OpenFailure, Prompt};

/// What can go wrong in the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Connecting, key exchange and authentication took too long.
    #[error("connection timed out after {0:?}")]
    Timeout(Duration),
    /// Reading a key file, the known_hosts file or the agent failed.
    #[error("{what}: {source}")]
    File {
        /// Which file or socket.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A private key could not be loaded.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        source: crate::KeyError,
    },
    /// The connection ended (host key rejected, authentication failed,
    /// the peer left, keepalive timeout, ...): the reason says which.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The core refused a command.
    #[error(transparent)]
    Protocol(#[from] crate::Error),
    /// The server refused to open a channel.
    #[error("channel open refused: {reason}: {description}")]
    OpenFailed {
        /// RFC 4254 reason code.
        reason: OpenFailure,
        /// The server's text.
        description: String,
    },
    /// The server refused a request (exec, pty, forwarding, ...).
    #[error("the server refused {0}")]
    Refused(String),
    /// A socket or stream error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// Whether reconnecting might help (a lost link, a timeout), as opposed
    /// to a refusal that will happen again (host key, authentication).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Io(_) => true,
            ClientError::Closed(reason) => reason.is_retryable(),
            _ => false,
        }
    }
}

/// Answers prompts while authenticating (called on a blocking thread, so it
/// may read a terminal). `None` skips the method.
pub type PromptFn = Arc<dyn Fn(PromptRequest) -> Option<Vec<String>> + Send + Sync>;

/// Hears each USERAUTH_BANNER as it arrives, sanitised for a terminal
/// (see [`crate::terminal_safe`]), before authentication ends either way.
/// Called in the connection's task: keep it short (print it, log it).
pub type BannerFn = Arc<dyn Fn(&str) + Send + Sync>;

/// A question the server asks during authentication.
#[derive(Clone, Debug)]
pub enum PromptRequest {
    /// A password for `user@host`.
    Password {
        /// The user.
        user: String,
        /// The host (as given to connect).
        host: String,
    },
    /// keyboard-interactive prompts; answer one string per prompt.
    KeyboardInteractive {
        /// The request's name (often empty).
        name: String,
        /// Instructions to show (often empty).
        instruction: String,
        /// The prompts.
        prompts: Vec<Prompt>,
    },
    /// The password expired: answer with the new one.
    NewPassword {
        /// The server's message.
        prompt: String,
    },
}

/// How a [`Client`] connects and authenticates.
#[derive(Clone)]
pub struct ClientOptions {
    /// The core configuration: user, credentials, algorithms, keepalive.
    pub config: ClientConfig,
    /// How the server's host key is checked.
    pub host_key_policy: HostKeyPolicy,
    /// OpenSSH private key files to try (after `config.credentials`).
    pub identity_files: Vec<PathBuf>,
    /// Passphrase for encrypted identity files.
    pub passphrase: Option<String>,
    /// Use the keys of the ssh-agent at `agent_socket`, or else at
    /// `SSH_AUTH_SOCK` if set.
    pub use_agent: bool,
    /// The ssh-agent's socket (OpenSSH's IdentityAgent); `None` reads
    /// `SSH_AUTH_SOCK`.
    pub agent_socket: Option<PathBuf>,
    /// Use only these of the agent's keys (OpenSSH's IdentitiesOnly: the
    /// public halves of the identity files); `None` uses all of them.
    pub agent_keys_only: Option<Vec<ssh_key::PublicKey>>,
    /// Authentication methods to use, in this order (OpenSSH's
    /// PreferredAuthentications, e.g. `publickey`, `keyboard-interactive`,
    /// `password`): credentials are tried method by method in this order
    /// (keeping their order within a method), and those of methods not
    /// listed are dropped. `None` keeps the credentials' own order.
    pub preferred_auth: Option<Vec<String>>,
    /// Answers password and keyboard-interactive prompts. Without it,
    /// password and keyboard-interactive are tried only with
    /// `config.credentials`.
    pub prompt: Option<PromptFn>,
    /// Limit on each TCP connect attempt, and on the key exchange and
    /// authentication once connected (as OpenSSH's ConnectTimeout bounds
    /// each connect and the version exchange after it).
    pub connect_timeout: Option<Duration>,
    /// TCP connect attempts before giving up, one second apart, each over
    /// every resolved address (OpenSSH's ConnectionAttempts; 0 counts as 1).
    pub connection_attempts: u32,
    /// Which addresses of the host to connect to (`-4`, `-6`).
    pub address_family: AddressFamily,
    /// The local address to connect from (OpenSSH's `-b`/BindAddress).
    pub bind_address: Option<IpAddr>,
    /// Shows banners as they come (a CLI prints them to stderr, as ssh
    /// does, even when authentication then fails). They are also kept for
    /// [`Client::banners`].
    pub on_banner: Option<BannerFn>,
}

/// Which address family to connect over (OpenSSH's AddressFamily).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum AddressFamily {
    /// Any address of the host, in resolver order.
    #[default]
    Any,
    /// IPv4 only (`-4`).
    Inet,
    /// IPv6 only (`-6`).
    Inet6,
}

impl AddressFamily {
    /// Whether `addr` is of this family.
    pub fn admits(self, addr: &std::net::SocketAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::Inet => addr.is_ipv4(),
            AddressFamily::Inet6 => addr.is_ipv6(),
        }
    }
}

impl ClientOptions {
    /// Options for `user`, checking host keys against `~/.ssh/known_hosts`
    /// (accepting and recording new hosts, refusing changed ones), using the
    /// agent if there is one.
    pub fn new(user: impl Into<String>) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        ClientOptions {
            config: ClientConfig::new(user, Vec::new()),
            host_key_policy: HostKeyPolicy::AcceptNew { known_hosts: home.join(".ssh/known_hosts") },
            identity_files: Vec::new(),
            passphrase: None,
            use_agent: true,
            agent_socket: None,
            agent_keys_only: None,
            preferred_auth: None,
            prompt: None,
            connect_timeout: Some(Duration::from_secs(30)),
            connection_attempts: 1,
            address_family: AddressFamily::Any,
            bind_address: None,
            on_banner: None,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("user", &self.config.user)
            .field("host_key_policy", &self.host_key_policy)
            .field("identity_files", &self.identity_files)
            .field("use_agent", &self.use_agent)
            .field("agent_socket", &self.agent_socket)
            .field("preferred_auth", &self.preferred_auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_attempts", &self.connection_attempts)
            .field("address_family", &self.address_family)
            .field("bind_address", &self.bind_address)
            .finish_non_exhaustive()
    }
}

/// A fresh seed from the OS for a connection's RNG (adapters seed the core).
pub(crate) fn os_seed() -> crate::Seed {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the OS random number generator works");
    seed
}
