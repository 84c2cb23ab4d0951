//! Configuration of a connection. Plain data with OpenSSH-like defaults.

use crate::auth::Credential;
use crate::keepalive::KeepaliveConfig;
use crate::keys::SignatureAlgorithm;
use crate::time::Duration;
use crate::transport::{CipherAlgorithm, HostKey, HostKeyAlgorithm, KexAlgorithm, MacAlgorithm};

/// Settings shared by both roles.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Key-exchange methods in preference order.
    pub kex_algorithms: Vec<KexAlgorithm>,
    /// Host key algorithms in preference order. A client offers these; a
    /// server offers those among them that its host keys can sign with.
    pub host_key_algorithms: Vec<HostKeyAlgorithm>,
    /// Ciphers in preference order (both directions).
    pub ciphers: Vec<CipherAlgorithm>,
    /// MACs in preference order (both directions), used with the aes*-ctr
    /// ciphers; an AEAD cipher ignores them. Must not be empty.
    pub macs: Vec<MacAlgorithm>,
    /// Offer strict key exchange (OpenSSH's Terrapin countermeasure). It is
    /// used only when the peer offers it too.
    pub strict_kex: bool,
    /// When to start a new key exchange.
    pub rekey: RekeyLimits,
    /// Largest inbound `packet_length` accepted (OpenSSH: 256 KiB). Checked
    /// before the packet body is buffered.
    pub max_packet_len: u32,
    /// Give up on a key exchange (the first or a rekey) after this long.
    pub kex_timeout: Option<Duration>,
    /// The software part of our version line (`SSH-2.0-<this>`).
    pub software_version: String,
    /// NAT keepalive and liveness probes (off by default, like OpenSSH).
    pub keepalive: KeepaliveConfig,
    /// Memory bound against a peer that sends and never reads: once this
    /// many bytes of our output wait to be written (`pending_transmit`
    /// plus messages held during our key exchange), input is left
    /// unprocessed and `Connection::wants_input` turns false, so the
    /// adapter stops reading and TCP pushes back on the peer, until the
    /// output is under half of it again. Channel data is sealed only under
    /// half of it (the rest waits in its channel), so data alone never
    /// stops input. The peer can then make us queue at most this +
    /// `max_packet_len` + 1 KiB of output. Default 1 MiB; at least 128 KiB.
    pub max_queued_output: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kex_algorithms: KexAlgorithm::ALL.to_vec(),
            host_key_algorithms: HostKeyAlgorithm::ALL.to_vec(),
            ciphers: CipherAlgorithm::ALL.to_vec(),
            macs: MacAlgorithm::ALL.to_vec(),
            strict_kex: true,
            rekey: RekeyLimits::default(),
            max_packet_len: 256 * 1024,
            kex_timeout: Some(Duration::from_secs(120)),
            software_version: format!("sansh_{}", env!("CARGO_PKG_VERSION")),
            keepalive: KeepaliveConfig::default(),
            max_queued_output: 1 << 20,
        }
    }
}

/// When to rekey. Whichever limit is reached first starts a key exchange.
///
/// The limits apply once the connection is authenticated: OpenSSH's sshd
/// refuses a rekey before that, and the authentication timeout already
/// bounds what either side can send until then. An explicit
/// `Connection::rekey` works at any time after the first exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RekeyLimits {
    /// Bytes in either direction since the last kex. `None` uses the cipher's
    /// own limit: 1 GiB for chacha20-poly1305, 64 GiB for AES-GCM and
    /// AES-CTR (OpenSSH's).
    pub bytes: Option<u64>,
    /// Packets in either direction since the last kex (2^31, as OpenSSH).
    pub packets: u64,
    /// Time since the last kex (off by default, like OpenSSH's RekeyLimit).
    pub time: Option<Duration>,
}

impl Default for RekeyLimits {
    fn default() -> Self {
        RekeyLimits { bytes: None, packets: 1 << 31, time: None }
    }
}

/// A client connection's settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Transport settings.
    pub transport: TransportConfig,
    /// The user to log in as.
    pub user: String,
    /// Credentials, tried in this order among the methods the server offers.
    pub credentials: Vec<Credential>,
    /// Signature algorithms we may use with user keys, in preference order
    /// (OpenSSH's PubkeyAcceptedAlgorithms). The server's `server-sig-algs`
    /// narrows it further. SHA-1 `ssh-rsa` is left out by default, as
    /// OpenSSH does since 8.8: add it only for servers that know nothing else.
    pub user_key_algorithms: Vec<SignatureAlgorithm>,
    /// Most channels open at once (ours and the peer's); opens beyond it are
    /// refused, so a peer cannot grow our memory with channels.
    pub max_channels: usize,
    /// Pass the peer's channel opens, channel requests and global requests
    /// that the core would refuse itself (unknown types such as `x11`,
    /// `auth-agent-req@openssh.com`, `break`, `hostkeys-00@openssh.com`, or
    /// known ones in the wrong direction) to the application as events
    /// (`ChannelKind::Other`, `ChannelRequest::Other`, `GlobalRequest::Other`,
    /// ...), which it must then answer like the others. Off by default:
    /// replies go out in request order, so an application written for the
    /// modelled kinds that ignored one would hold back every later reply
    /// (on a channel or the connection). `keepalive@openssh.com` is answered
    /// by the core either way, and the caps on pending requests still hold.
    pub pass_unknown_requests: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            transport: TransportConfig::default(),
            user: String::new(),
            credentials: Vec::new(),
            max_channels: DEFAULT_MAX_CHANNELS,
            pass_unknown_requests: false,
            user_key_algorithms: SignatureAlgorithm::ALL
                .into_iter()
                .filter(|a| *a != SignatureAlgorithm::RsaSha1)
                .collect(),
        }
    }
}

impl ClientConfig {
    /// A config for `user` with these credentials and default transport settings.
    pub fn new(user: impl Into<String>, credentials: Vec<Credential>) -> Self {
        ClientConfig { user: user.into(), credentials, ..ClientConfig::default() }
    }
}

/// A server connection's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Transport settings.
    pub transport: TransportConfig,
    /// Host keys; at least one is required.
    pub host_keys: Vec<HostKey>,
    /// Methods listed to clients as able to continue.
    pub auth_methods: Vec<String>,
    /// Failed attempts before disconnecting (OpenSSH's MaxAuthTries, 6).
    pub max_auth_failures: u32,
    /// Time from connection start to successful authentication (OpenSSH's
    /// LoginGraceTime, 120 s).
    pub auth_timeout: Option<Duration>,
    /// Text sent as USERAUTH_BANNER before the first authentication reply.
    pub banner: Option<String>,
    /// Signature algorithms accepted for user keys, announced to clients as
    /// `server-sig-algs` (OpenSSH's PubkeyAcceptedAlgorithms).
    pub user_key_algorithms: Vec<SignatureAlgorithm>,
    /// Most channels open at once; the client's opens beyond it are refused
    /// with RESOURCE_SHORTAGE.
    pub max_channels: usize,
    /// Pass the peer's channel opens, channel requests and global requests
    /// that the core would refuse itself (unknown types such as `x11`,
    /// `auth-agent-req@openssh.com`, `break`, `hostkeys-00@openssh.com`, or
    /// known ones in the wrong direction) to the application as events
    /// (`ChannelKind::Other`, `ChannelRequest::Other`, `GlobalRequest::Other`,
    /// ...), which it must then answer like the others. Off by default:
    /// replies go out in request order, so an application written for the
    /// modelled kinds that ignored one would hold back every later reply
    /// (on a channel or the connection). `keepalive@openssh.com` is answered
    /// by the core either way, and the caps on pending requests still hold.
    pub pass_unknown_requests: bool,
}

/// Default channel limit per connection: far above OpenSSH's 10 sessions,
/// low enough to bound memory (each channel can hold a window of data).
pub const DEFAULT_MAX_CHANNELS: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            transport: TransportConfig::default(),
            host_keys: Vec::new(),
            auth_methods: vec!["publickey".into(), "password".into(), "keyboard-interactive".into()],
            max_auth_failures: 6,
            auth_timeout: Some(Duration::from_secs(120)),
            banner: None,
            max_channels: DEFAULT_MAX_CHANNELS,
            pass_unknown_requests: false,
            user_key_algorithms: SignatureAlgorithm::ALL
                .into_iter()
                .filter(|a| *a != SignatureAlgorithm::RsaSha1)
                .collect(),
        }
    }
}
