//! Events: what a connection reports to its application. Events own their
//! data (no lifetimes), so they cross into C and Python unchanged.

use bytes::Bytes;

use crate::auth::{AuthAttempt, AuthMethod, Prompt, Secret};
use crate::channel::{ChannelId, ChannelKind, ChannelRequest, ExitStatus, GlobalRequest, OpenFailure};
use crate::error::CloseReason;
use crate::keys::SignatureAlgorithm;
use crate::transport::{HostKeyAlgorithm, Negotiated};

/// A connection's lifecycle, as monitoring sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Exchanging version lines.
    Connecting,
    /// The first key exchange (rekeys do not change the state).
    Kex,
    /// Keys are in place; service request and user authentication.
    Auth,
    /// Authenticated: the connection protocol runs.
    Active,
    /// Closed, with a DISCONNECT still waiting in `pending_transmit`.
    Closing,
    /// Closed; nothing more will be sent.
    Closed,
}

/// The server's host key, for the application to accept or reject
/// (`Connection::accept_host_key` / `reject_host_key` with `id`). The
/// signature over the exchange hash has already been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyCheck {
    /// Answer with this id.
    pub id: u64,
    /// The key.
    pub key: ssh_key::PublicKey,
    /// The negotiated signature algorithm.
    pub algorithm: HostKeyAlgorithm,
    /// `SHA256:…` fingerprint, as OpenSSH prints it.
    pub fingerprint: String,
}

/// Something the application should know or decide.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are described by each variant
pub enum Event {
    /// The connection entered a new state.
    StateChanged { state: State },
    /// Client: decide whether to trust the server's host key.
    HostKey(HostKeyCheck),
    /// A key exchange finished. `rekey` is false for the first one.
    KexCompleted { algorithms: Negotiated, rekey: bool },
    /// The service request succeeded (client: the server accepted it;
    /// server: we accepted the client's request).
    ServiceAccepted { service: String },
    /// Client: the server's extensions (RFC 8308 EXT_INFO).
    ExtInfo { server_sig_algs: Option<Vec<String>>, ping: bool },
    /// Client: the server's USERAUTH_BANNER. `message` is sanitised for a
    /// terminal by [`crate::terminal_safe`] (control characters and invalid
    /// UTF-8 escaped, as OpenSSH shows banners); `raw` is the bytes as sent,
    /// for an application that shows them another way (never print it to a
    /// terminal: a server can put escape sequences in it).
    AuthBanner { message: String, raw: Vec<u8>, language: String },
    /// Client: one authentication attempt's outcome.
    AuthProgress(AuthAttempt),
    /// Client: an external key was accepted in principle; sign `data` with
    /// `key` using `algorithm` and answer with `Connection::provide_signature`.
    SignRequest { id: u64, key: ssh_key::PublicKey, algorithm: SignatureAlgorithm, data: Vec<u8> },
    /// Client: the server offers `password`; answer with `provide_password`.
    PasswordRequest { id: u64, user: String },
    /// Client: the password expired; answer with `change_password`.
    PasswordChangeRequest { id: u64, prompt: String },
    /// Client: keyboard-interactive prompts; answer with `answer_keyboard_interactive`.
    KeyboardInteractive { id: u64, name: String, instruction: String, prompts: Vec<Prompt> },
    /// Server: a client's authentication attempt; answer with `auth_accept`,
    /// `auth_reject`, `auth_partial_success`, `auth_request_password_change`
    /// or (keyboard-interactive) `auth_info_request`.
    AuthRequest { id: u64, user: String, method: AuthMethod },
    /// Server: answers to our keyboard-interactive prompts for request `id`.
    AuthInfoResponse { id: u64, answers: Vec<Secret> },
    /// Authentication succeeded (both roles): the connection is active.
    Authenticated { user: String, method: String },
    /// The peer answered our global request `id` (`data`: request-specific reply data).
    /// A request the peer answered with SSH_MSG_UNIMPLEMENTED (TinySSH does
    /// so for all) comes back as refused, with no data.
    GlobalReply { id: u64, success: bool, data: Vec<u8> },
    /// A global request the application may answer (`accept_global_request` /
    /// `reject_global_request` when `want_reply`). Requests the core does not
    /// model are refused by the core, unless the config's
    /// `pass_unknown_requests` makes them `GlobalRequest::Other` events.
    /// `keepalive@openssh.com` is always the core's.
    GlobalRequest { id: u64, request: GlobalRequest, want_reply: bool },
    /// The peer opened a channel: answer with `accept_channel` or `reject_channel`.
    /// Unknown types (`ChannelKind::Other`) come only with `pass_unknown_requests`.
    ChannelOpenRequest { channel: ChannelId, kind: ChannelKind },
    /// Our channel open was confirmed.
    ChannelOpened { channel: ChannelId },
    /// Our channel open was refused; `unsent` bytes written meanwhile are dropped.
    ChannelOpenFailed { channel: ChannelId, reason: OpenFailure, description: String, unsent: usize },
    /// Data arrived on a channel. `data` is a slice of the connection's
    /// receive buffer, decrypted in place and not copied: holding it keeps
    /// that buffer's chunk (up to about one socket read, 256 KiB with the
    /// tokio adapter) allocated. Copy (`data.to_vec()`) what you keep long.
    ChannelData { channel: ChannelId, data: Bytes },
    /// Extended data arrived (code 1 is stderr); `data` as for `ChannelData`.
    ChannelExtendedData { channel: ChannelId, code: u32, data: Bytes },
    /// The peer will send no more data on the channel.
    ChannelEof { channel: ChannelId },
    /// Both sides closed the channel: its number may be reused. `unsent`
    /// bytes we had queued were dropped because the peer closed first.
    ChannelClosed { channel: ChannelId, unsent: usize },
    /// A channel request from the peer; if `want_reply`, answer with
    /// `accept_channel_request` / `reject_channel_request` (replies go out in
    /// request order, so an unanswered one holds back the later ones).
    /// Unknown ones (`ChannelRequest::Other`) come only with
    /// `pass_unknown_requests`. None come after we sent CHANNEL_CLOSE.
    ChannelRequest { channel: ChannelId, id: u64, request: ChannelRequest, want_reply: bool },
    /// The peer answered our channel request `id`.
    ChannelRequestResult { channel: ChannelId, id: u64, success: bool },
    /// The remote command ended (exit-status or exit-signal).
    ChannelExit { channel: ChannelId, status: ExitStatus },
    /// Everything written to the channel has been sent (after backpressure).
    ChannelWritable { channel: ChannelId },
    /// The peer sent SSH_MSG_DEBUG.
    Debug { always_display: bool, message: String },
    /// The peer answered our `ping` (OpenSSH's SSH_MSG_PONG).
    Pong { data: Vec<u8> },
    /// The peer did not understand our packet with this sequence number
    /// (except a want-reply global request: that one gets its `GlobalReply`).
    Unimplemented { seq: u32 },
    /// The connection ended. Emitted exactly once.
    Closed { reason: CloseReason },
}
