//! sansh: an SSH core as a pure state machine.
//!
//! A [`Connection`] never opens a socket, reads a clock or asks the OS for
//! randomness. Bytes, time ([`Timestamp`]) and a seed go in; bytes to send,
//! [`Event`]s and the next deadline come out. Adapters own the I/O.
//!
//! # The drive loop
//!
//! After every input or command, drain all three outputs:
//!
//! ```
//! use sansh::{ClientConfig, Connection, Event, Timestamp};
//!
//! let mut conn = Connection::client(ClientConfig::default(), Timestamp::ZERO, [7; 32])?;
//! // Our version line and KEXINIT are ready before the peer says anything.
//! let out = conn.pending_transmit().to_vec();
//! assert!(out.starts_with(b"SSH-2.0-sansh_"));
//! conn.consume_transmit(out.len());           // "written to the socket"
//!
//! // Bytes from the socket, in whatever pieces they arrive:
//! conn.handle_input(Timestamp::from_millis(5), b"SSH-2.0-OpenSSH_9.2\r\n")?;
//! while let Some(event) = conn.poll_event() {
//!     println!("{event:?}");
//! }
//! // Arm a timer for this deadline and call `handle_timeout` when it fires.
//! let _deadline = conn.poll_timeout();
//!
//! // The peer hangs up: exactly one Closed event says why.
//! conn.handle_eof(Timestamp::from_millis(9));
//! assert!(matches!(conn.poll_event(), Some(Event::StateChanged { .. })));
//! assert!(matches!(conn.poll_event(), Some(Event::Closed { .. })));
//! # Ok::<(), sansh::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
pub mod event;
pub mod keepalive;
pub mod keys;
pub mod known_hosts;
pub mod pool;
pub mod reconnect;
pub mod rng;
mod text;
pub mod time;
pub mod transport;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use auth::{AuthAttempt, AuthMethod, AuthOutcome, Credential, Prompt, Secret};
/// Channel data (`Event::ChannelData`): the `bytes` crate's shared buffer.
pub use bytes::Bytes;
pub use channel::{
    ChannelId, ChannelInfo, ChannelKind, ChannelOptions, ChannelRequest, ExitStatus, GlobalRequest,
    OpenFailure, Pty,
};
pub use config::{ClientConfig, RekeyLimits, ServerConfig, TransportConfig};
pub use connection::{Connection, Stats};
pub use error::{CloseReason, DisconnectCode, Error};
pub use event::{Event, HostKeyCheck, State};
pub use keepalive::{KeepaliveConfig, MAX_IGNORE_LEN, Rtt};
pub use keys::{KeyError, SignatureAlgorithm, load_private_key};
pub use pool::{
    Acquire, ConnectionId, Lease, LeaseId, Pool, PoolConfig, PoolEvent, PoolKey, PoolStats, WaiterId,
};
pub use reconnect::{GiveUpReason, Jitter, Reconnect, ReconnectAction, ReconnectConfig};
pub use rng::{Rng, Seed};
pub use text::terminal_safe;
pub use time::{Duration, Timestamp};
pub use transport::{
    CipherAlgorithm, HostKey, HostKeyAlgorithm, KexAlgorithm, MacAlgorithm, Negotiated, PeerExtensions, Role,
};
