//! Errors and close reasons.
//!
//! [`Error`] says exactly what went wrong; [`CloseReason`] says why a
//! connection ended and who ended it. Each protocol error maps to the
//! RFC 4253 disconnect code sent to the peer ([`Error::disconnect_code`]).

use core::fmt;

/// A disconnect reason code (RFC 4253 §11.1, RFC 4250 §4.2.2).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct DisconnectCode(pub u32);

#[allow(missing_docs)] // the RFC's names say it all
impl DisconnectCode {
    pub const HOST_NOT_ALLOWED_TO_CONNECT: Self = Self(1);
    pub const PROTOCOL_ERROR: Self = Self(2);
    pub const KEY_EXCHANGE_FAILED: Self = Self(3);
    pub const RESERVED: Self = Self(4);
    pub const MAC_ERROR: Self = Self(5);
    pub const COMPRESSION_ERROR: Self = Self(6);
    pub const SERVICE_NOT_AVAILABLE: Self = Self(7);
    pub const PROTOCOL_VERSION_NOT_SUPPORTED: Self = Self(8);
    pub const HOST_KEY_NOT_VERIFIABLE: Self = Self(9);
    pub const CONNECTION_LOST: Self = Self(10);
    pub const BY_APPLICATION: Self = Self(11);
    pub const TOO_MANY_CONNECTIONS: Self = Self(12);
    pub const AUTH_CANCELLED_BY_USER: Self = Self(13);
    pub const NO_MORE_AUTH_METHODS_AVAILABLE: Self = Self(14);
    pub const ILLEGAL_USER_NAME: Self = Self(15);

    /// The RFC's name for the code, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "HOST_NOT_ALLOWED_TO_CONNECT",
            2 => "PROTOCOL_ERROR",
            3 => "KEY_EXCHANGE_FAILED",
            4 => "RESERVED",
            5 => "MAC_ERROR",
            6 => "COMPRESSION_ERROR",
            7 => "SERVICE_NOT_AVAILABLE",
            8 => "PROTOCOL_VERSION_NOT_SUPPORTED",
            9 => "HOST_KEY_NOT_VERIFIABLE",
            10 => "CONNECTION_LOST",
            11 => "BY_APPLICATION",
            12 => "TOO_MANY_CONNECTIONS",
            13 => "AUTH_CANCELLED_BY_USER",
            14 => "NO_MORE_AUTH_METHODS_AVAILABLE",
            15 => "ILLEGAL_USER_NAME",
            _ => return None,
        })
    }
}

impl fmt::Debug for DisconnectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "DisconnectCode({})", self.0),
        }
    }
}

impl fmt::Display for DisconnectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which negotiated category had no algorithm in common.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Display gives each its name
pub enum AlgorithmKind {
    Kex,
    HostKey,
    CipherClientToServer,
    CipherServerToClient,
    MacClientToServer,
    MacServerToClient,
    CompressionClientToServer,
    CompressionServerToClient,
}

impl fmt::Display for AlgorithmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlgorithmKind::Kex => "kex",
            AlgorithmKind::HostKey => "host key",
            AlgorithmKind::CipherClientToServer => "cipher (client to server)",
            AlgorithmKind::CipherServerToClient => "cipher (server to client)",
            AlgorithmKind::MacClientToServer => "MAC (client to server)",
            AlgorithmKind::MacServerToClient => "MAC (server to client)",
            AlgorithmKind::CompressionClientToServer => "compression (client to server)",
            AlgorithmKind::CompressionServerToClient => "compression (server to client)",
        })
    }
}

/// Everything that can go wrong. Variants about peer input mean the peer
/// broke the protocol (see [`Error::is_peer_fault`]); the rest are ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are described by each variant's message
pub enum Error {
    // ---- version exchange ----
    /// The peer's `SSH-` line is longer than the RFC's 255 bytes.
    #[error("peer's version line exceeds {max} bytes")]
    VersionLineTooLong { max: usize },
    /// A line before the peer's version is absurdly long.
    #[error("peer sent a line over {max} bytes before its version")]
    PreVersionLineTooLong { max: usize },
    /// Too many lines before the peer's version.
    #[error("peer sent more than {max} lines before its version")]
    TooManyPreVersionLines { max: usize },
    /// The peer's identification line is malformed (or not SSH at all).
    #[error("peer's version line is invalid: {line:?}")]
    BadVersionLine { line: String },
    /// The peer speaks another protocol version.
    #[error("peer speaks SSH protocol version {version}, not 2.0")]
    UnsupportedProtocolVersion { version: String },

    // ---- binary packet protocol ----
    /// An inbound packet length over our cap (checked before buffering it).
    #[error("peer's packet length {len} exceeds the maximum of {max}")]
    PacketTooLarge { len: u32, max: u32 },
    /// A packet length that is too small or not a multiple of the block size.
    #[error("peer's packet length {len} is invalid for block size {block}")]
    BadPacketLength { len: u32, block: u32 },
    /// The padding length field is below 4 or leaves no payload.
    #[error("peer's padding length {padding} is invalid for packet length {packet_len}")]
    BadPaddingLength { padding: u8, packet_len: u32 },
    /// A packet failed authentication: corrupted or forged.
    #[error("packet {seq} from peer failed authentication (bad MAC/tag)")]
    BadMac { seq: u32 },
    /// The connection ended in the middle of a packet or the version line.
    #[error("connection ended in the middle of a packet ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// The peer sent more than we buffer while input processing waits: for
    /// the application's host key decision, or for the peer to read our
    /// output (`TransportConfig::max_queued_output`; the adapter kept
    /// reading although `Connection::wants_input` was false).
    #[error("peer sent over {limit} bytes that we could not process yet")]
    InputOverflow { limit: usize },
    /// The peer made us hold more replies than the output cap during a key
    /// exchange (nothing but kex messages may go out then).
    #[error("peer made us hold over {limit} bytes of replies during a key exchange")]
    HeldOverflow { limit: usize },
    /// The peer sent a want-reply request while `limit` of its requests
    /// (global, or on one channel) were still waiting for replies. Replies
    /// go out in order, so each waits for the application's answers.
    #[error("peer sent a request with {limit} of its requests still waiting for replies")]
    TooManyPendingRequests { limit: usize },

    // ---- messages ----
    /// A message's fields did not decode.
    #[error("malformed {message} message from peer: {reason}")]
    Malformed { message: &'static str, reason: crate::wire::DecodeError },
    /// A packet with an empty payload, or similar framing-level nonsense.
    #[error("peer sent an empty message")]
    EmptyMessage,
    /// A known message arrived where the protocol does not allow it.
    #[error("peer sent {message} (message {number}) {phase}")]
    UnexpectedMessage { number: u8, message: &'static str, phase: &'static str },
    /// A strict-kex rule was broken (OpenSSH's Terrapin countermeasure).
    #[error("strict kex violation: {what}")]
    StrictKex { what: String },

    // ---- key exchange ----
    /// The two KEXINITs share no algorithm in one category.
    #[error("no common {kind} algorithm: client offers [{client}], server offers [{server}]")]
    NoCommonAlgorithm { kind: AlgorithmKind, client: String, server: String },
    /// The peer's ephemeral public value is malformed or of low order.
    #[error("peer's key-exchange public value is invalid ({len} bytes or low order)")]
    BadKexPublicKey { len: usize },
    /// The server's host key could not be parsed or does not fit the algorithm.
    #[error("server host key is invalid: {reason}")]
    BadHostKey { reason: String },
    /// The server's signature over the exchange hash does not verify.
    #[error("server's host key signature is invalid: {reason}")]
    BadHostKeySignature { reason: String },
    /// A rekey presented a host key other than the one first accepted.
    #[error("server presented a different host key during rekey")]
    HostKeyChanged,
    /// A key exchange did not finish in time.
    #[error("key exchange did not complete within {secs} s")]
    KexTimeout { secs: u64 },
    /// The peer answered our KEXINIT with UNIMPLEMENTED (OpenSSH does so
    /// before authentication): the re-exchange can never finish.
    #[error("peer refused key re-exchange (UNIMPLEMENTED for our KEXINIT)")]
    RekeyRefused,
    /// The peer broke the authentication protocol (e.g. PK_OK for a key we
    /// never offered, too many keyboard-interactive prompts).
    #[error("authentication protocol violation: {what}")]
    AuthProtocol { what: String },
    /// The peer broke a channel rule (window, packet size, state, replies).
    #[error("channel {channel}: {what}")]
    ChannelProtocol { channel: u32, what: String },
    /// The peer asked for a service we do not offer.
    #[error("peer requested unavailable service {service:?}")]
    ServiceNotAvailable { service: String },

    // ---- our side ----
    /// A host key we were given cannot be used.
    #[error("unsupported host key: {algorithm}")]
    UnsupportedHostKey { algorithm: String },
    /// Signing with our host key failed.
    #[error("signing failed: {reason}")]
    SigningFailed { reason: String },
    /// The configuration cannot work (e.g. a server without host keys).
    #[error("invalid configuration: {what}")]
    Config { what: String },
    /// A command that the connection's current state does not allow.
    #[error("not allowed now: {what}")]
    InvalidState { what: &'static str },
    /// A command named a channel that does not exist (or is closed).
    #[error("no channel {channel}")]
    UnknownChannel { channel: u32 },
    /// A command named a channel that has already ended (the peer closed it
    /// or refused to open it); the `ChannelClosed` / `ChannelOpenFailed`
    /// event for it is still waiting to be polled.
    #[error("channel {channel} is closed")]
    ChannelClosed { channel: u32 },
    /// The channel table is full.
    #[error("too many channels (at most {max})")]
    TooManyChannels { max: usize },
    /// A command named an id that is not pending (already answered or unknown).
    #[error("no pending {what} with id {id}")]
    UnknownId { what: &'static str, id: u64 },
    /// The connection is closed; commands have no effect.
    #[error("connection is closed")]
    Closed,
    /// A bug in sansh: should never happen.
    #[error("internal error: {what}")]
    Internal { what: String },
}

impl Error {
    /// The disconnect code we send to the peer for this error.
    pub fn disconnect_code(&self) -> DisconnectCode {
        match self {
            Error::VersionLineTooLong { .. }
            | Error::PreVersionLineTooLong { .. }
            | Error::TooManyPreVersionLines { .. }
            | Error::BadVersionLine { .. }
            | Error::UnsupportedProtocolVersion { .. } => DisconnectCode::PROTOCOL_VERSION_NOT_SUPPORTED,
            Error::BadMac { .. } => DisconnectCode::MAC_ERROR,
            Error::NoCommonAlgorithm { .. }
            | Error::BadKexPublicKey { .. }
            | Error::BadHostKey { .. }
            | Error::BadHostKeySignature { .. }
            | Error::KexTimeout { .. }
            | Error::SigningFailed { .. } => DisconnectCode::KEY_EXCHANGE_FAILED,
            Error::HostKeyChanged => DisconnectCode::HOST_KEY_NOT_VERIFIABLE,
            Error::ServiceNotAvailable { .. } => DisconnectCode::SERVICE_NOT_AVAILABLE,
            Error::Config { .. }
            | Error::InvalidState { .. }
            | Error::UnknownId { .. }
            | Error::UnknownChannel { .. }
            | Error::ChannelClosed { .. }
            | Error::TooManyChannels { .. }
            | Error::Closed
            | Error::UnsupportedHostKey { .. }
            | Error::Internal { .. } => DisconnectCode::BY_APPLICATION,
            _ => DisconnectCode::PROTOCOL_ERROR,
        }
    }

    /// Whether the peer caused this error (bad bytes or protocol violations),
    /// as opposed to our configuration, our application or a timeout.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Error::KexTimeout { .. }
                | Error::UnsupportedHostKey { .. }
                | Error::SigningFailed { .. }
                | Error::Config { .. }
                | Error::InvalidState { .. }
                | Error::UnknownId { .. }
                | Error::UnknownChannel { .. }
                | Error::ChannelClosed { .. }
                | Error::TooManyChannels { .. }
                | Error::Closed
                | Error::Internal { .. }
        )
    }
}

/// Why a connection ended. Exactly one `Event::Closed` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are described by each variant
pub enum CloseReason {
    /// Our application closed the connection (we sent this DISCONNECT).
    Local { code: DisconnectCode, description: String },
    /// The peer sent SSH_MSG_DISCONNECT.
    PeerDisconnect { code: DisconnectCode, description: String },
    /// The byte stream ended (TCP FIN or an I/O error reported by the adapter)
    /// between packets, without a DISCONNECT.
    Eof,
    /// The application rejected the server's host key.
    HostKeyRejected,
    /// The key exchange (first or rekey) did not finish in time.
    KexTimeout,
    /// The peer stopped answering: `unanswered` liveness probes, then one
    /// more interval of silence.
    KeepaliveTimeout { unanswered: u32 },
    /// Client: every credential was refused or skipped.
    AuthFailed { offered: Vec<String>, attempts: Vec<crate::auth::AuthAttempt> },
    /// Server: the client failed authentication too many times.
    TooManyAuthFailures { failures: u32 },
    /// Server: the client did not authenticate in time (OpenSSH's LoginGraceTime).
    AuthTimeout,
    /// The peer broke the protocol, or the exchange failed; we sent a
    /// DISCONNECT with [`Error::disconnect_code`] where the protocol allowed.
    Error(Error),
}

impl CloseReason {
    /// Whether retrying the same connection can help. Host key, algorithm and
    /// protocol failures, and our own close, will fail again the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            CloseReason::Eof | CloseReason::KexTimeout | CloseReason::KeepaliveTimeout { .. } => true,
            CloseReason::PeerDisconnect { code, .. } => matches!(
                *code,
                DisconnectCode::CONNECTION_LOST
                    | DisconnectCode::TOO_MANY_CONNECTIONS
                    | DisconnectCode::BY_APPLICATION
                    | DisconnectCode::RESERVED
            ),
            CloseReason::Error(Error::Truncated { .. } | Error::BadMac { .. }) => true,
            CloseReason::Local { .. }
            | CloseReason::HostKeyRejected
            | CloseReason::AuthFailed { .. }
            | CloseReason::TooManyAuthFailures { .. }
            | CloseReason::AuthTimeout
            | CloseReason::Error(_) => false,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { code, description } => {
                write!(f, "closed by us ({code}): {description}")
            }
            CloseReason::PeerDisconnect { code, description } => {
                write!(f, "peer disconnected ({code}): {description}")
            }
            CloseReason::Eof => f.write_str("connection closed by peer without DISCONNECT"),
            CloseReason::HostKeyRejected => f.write_str("host key rejected"),
            CloseReason::KexTimeout => f.write_str("key exchange timed out"),
            CloseReason::KeepaliveTimeout { unanswered } => {
                write!(f, "peer not responding ({unanswered} keepalive probes unanswered)")
            }
            CloseReason::AuthFailed { offered, attempts } => {
                write!(f, "authentication failed (server offers {})", offered.join(","))?;
                for (i, a) in attempts.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{a}")?;
                }
                Ok(())
            }
            CloseReason::TooManyAuthFailures { failures } => {
                write!(f, "too many authentication failures ({failures})")
            }
            CloseReason::AuthTimeout => f.write_str("authentication timed out"),
            CloseReason::Error(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_with_names() {
        assert_eq!(DisconnectCode::MAC_ERROR.to_string(), "MAC_ERROR(5)");
        assert_eq!(DisconnectCode(99).to_string(), "DisconnectCode(99)");
    }

    #[test]
    fn errors_map_to_disconnect_codes() {
        assert_eq!(Error::BadMac { seq: 3 }.disconnect_code(), DisconnectCode::MAC_ERROR);
        assert_eq!(
            Error::PacketTooLarge { len: 1, max: 0 }.disconnect_code(),
            DisconnectCode::PROTOCOL_ERROR
        );
        assert!(!CloseReason::HostKeyRejected.is_retryable());
        assert!(CloseReason::Eof.is_retryable());
    }
}
