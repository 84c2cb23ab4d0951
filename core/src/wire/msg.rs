//! Message numbers (RFC 4250 §4.1, RFC 8308, OpenSSH PROTOCOL) and a typed
//! codec for every message of the transport, authentication and connection
//! layers.
//!
//! Conventions, the same for every message type:
//! - [`Message::decode`] takes the whole payload, message number included
//!   (and checked), and [`Message::encode`] appends the whole payload, so
//!   `decode(encode(m)) == m`.
//! - Fields borrow from the payload (`&[u8]`, `&str`): decoding copies
//!   nothing, which keeps `CHANNEL_DATA` on the bulk path copy-free. The
//!   request-specific data of channel opens and requests is decoded into
//!   the owned public types ([`ChannelKind`], [`ChannelRequest`](crate::channel::ChannelRequest)),
//!   which become events as they are.
//! - Every field is read in wire order and named in the [`DecodeError`]
//!   when it is cut short or invalid. A decoder never allocates more than
//!   the payload can hold, whatever a count in it says.
//! - What a message tolerates after its last field is what the layers
//!   always tolerated: the authentication messages, `KEX_ECDH_INIT` and
//!   `KEX_ECDH_REPLY` refuse trailing bytes ([`DecodeError::TrailingBytes`]);
//!   the generic transport messages, `KEXINIT` and the connection protocol
//!   ignore them (RFC 4251 §4: later versions may append fields). Where the
//!   last field is carried as raw bytes (request-specific data), it takes
//!   whatever follows.
//!
//! Where a layer must check one field before the rest is decoded (a server
//! refuses a method it does not offer whatever its fields say; counts of
//! prompts and responses are checked against a limit first), the message
//! also decodes in two steps: a `…Head` with the leading fields, then
//! `finish`.

use std::borrow::Cow;

use super::{DecodeError, Reader, Writer};
use crate::channel::{ChannelKind, ChannelRequest as RequestData};
use crate::error::Error;

#[allow(missing_docs)] // the RFC's names say it all
mod numbers {
    pub const DISCONNECT: u8 = 1;
    pub const IGNORE: u8 = 2;
    pub const UNIMPLEMENTED: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const SERVICE_REQUEST: u8 = 5;
    pub const SERVICE_ACCEPT: u8 = 6;
    pub const EXT_INFO: u8 = 7;
    pub const NEWCOMPRESS: u8 = 8;
    pub const KEXINIT: u8 = 20;
    pub const NEWKEYS: u8 = 21;
    pub const KEX_ECDH_INIT: u8 = 30;
    pub const KEX_ECDH_REPLY: u8 = 31;
    pub const USERAUTH_REQUEST: u8 = 50;
    pub const USERAUTH_FAILURE: u8 = 51;
    pub const USERAUTH_SUCCESS: u8 = 52;
    pub const USERAUTH_BANNER: u8 = 53;
    /// PK_OK, PASSWD_CHANGEREQ and INFO_REQUEST share this number.
    pub const USERAUTH_60: u8 = 60;
    pub const USERAUTH_INFO_RESPONSE: u8 = 61;
    pub const GLOBAL_REQUEST: u8 = 80;
    pub const REQUEST_SUCCESS: u8 = 81;
    pub const REQUEST_FAILURE: u8 = 82;
    pub const CHANNEL_OPEN: u8 = 90;
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    pub const CHANNEL_DATA: u8 = 94;
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    pub const CHANNEL_EOF: u8 = 96;
    pub const CHANNEL_CLOSE: u8 = 97;
    pub const CHANNEL_REQUEST: u8 = 98;
    pub const CHANNEL_SUCCESS: u8 = 99;
    pub const CHANNEL_FAILURE: u8 = 100;
    /// OpenSSH transport-level ping (PROTOCOL §1.9), only after `ping@openssh.com`.
    pub const PING: u8 = 192;
    pub const PONG: u8 = 193;
}

pub use numbers::*;

/// A short name for logs and errors.
pub fn name(n: u8) -> &'static str {
    match n {
        DISCONNECT => "DISCONNECT",
        IGNORE => "IGNORE",
        UNIMPLEMENTED => "UNIMPLEMENTED",
        DEBUG => "DEBUG",
        SERVICE_REQUEST => "SERVICE_REQUEST",
        SERVICE_ACCEPT => "SERVICE_ACCEPT",
        EXT_INFO => "EXT_INFO",
        NEWCOMPRESS => "NEWCOMPRESS",
        KEXINIT => "KEXINIT",
        NEWKEYS => "NEWKEYS",
        KEX_ECDH_INIT => "KEX_ECDH_INIT",
        KEX_ECDH_REPLY => "KEX_ECDH_REPLY",
        USERAUTH_REQUEST => "USERAUTH_REQUEST",
        USERAUTH_FAILURE => "USERAUTH_FAILURE",
        USERAUTH_SUCCESS => "USERAUTH_SUCCESS",
        USERAUTH_BANNER => "USERAUTH_BANNER",
        USERAUTH_60 => "USERAUTH_60",
        USERAUTH_INFO_RESPONSE => "USERAUTH_INFO_RESPONSE",
        GLOBAL_REQUEST => "GLOBAL_REQUEST",
        REQUEST_SUCCESS => "REQUEST_SUCCESS",
        REQUEST_FAILURE => "REQUEST_FAILURE",
        CHANNEL_OPEN => "CHANNEL_OPEN",
        CHANNEL_OPEN_CONFIRMATION => "CHANNEL_OPEN_CONFIRMATION",
        CHANNEL_OPEN_FAILURE => "CHANNEL_OPEN_FAILURE",
        CHANNEL_WINDOW_ADJUST => "CHANNEL_WINDOW_ADJUST",
        CHANNEL_DATA => "CHANNEL_DATA",
        CHANNEL_EXTENDED_DATA => "CHANNEL_EXTENDED_DATA",
        CHANNEL_EOF => "CHANNEL_EOF",
        CHANNEL_CLOSE => "CHANNEL_CLOSE",
        CHANNEL_REQUEST => "CHANNEL_REQUEST",
        CHANNEL_SUCCESS => "CHANNEL_SUCCESS",
        CHANNEL_FAILURE => "CHANNEL_FAILURE",
        PING => "PING",
        PONG => "PONG",
        _ => "unknown",
    }
}

/// A message with a typed codec (see the module docs for the conventions).
pub trait Message<'a>: Sized {
    /// The message number, the payload's first byte.
    const NUMBER: u8;
    /// The name errors give it ([`name`] of the number, except for the
    /// three messages that share number 60).
    const NAME: &'static str;

    /// Decodes a whole payload, message number included.
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError>;

    /// Appends the whole payload, message number included.
    fn encode(&self, out: &mut Vec<u8>);

    /// The payload in a new vector.
    fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Decodes `M` from a payload the dispatch routed by its number, as the
/// layers do: a decoding failure is [`Error::Malformed`] naming the message.
pub(crate) fn parse<'a, M: Message<'a>>(payload: &'a [u8]) -> Result<M, Error> {
    M::decode(payload).map_err(|reason| Error::Malformed { message: M::NAME, reason })
}

/// A reader over the fields after the message number, which must be `number`.
pub(crate) fn fields(payload: &[u8], number: u8) -> Result<Reader<'_>, DecodeError> {
    let mut r = Reader::new(payload);
    if r.u8("message number")? != number {
        return Err(DecodeError::Invalid("message number"));
    }
    Ok(r)
}

/// A trailing string that peers may omit: read when present and whole,
/// else empty (the message stands without it).
fn optional_string<'a>(r: &mut Reader<'a>, what: &'static str) -> &'a [u8] {
    r.string(what).unwrap_or_default()
}

/// At most `count` items of at least `min_len` bytes each fit in `r`: the
/// capacity to reserve for them, whatever `count` claims.
fn capacity(count: u32, r: &Reader<'_>, min_len: usize) -> usize {
    (count as usize).min(r.remaining().len() / min_len)
}

// ------------------------------------------------------------ transport

/// SSH_MSG_DISCONNECT (RFC 4253 §11.1). Only the reason code is required:
/// a peer that is leaving is not held to the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Reason code ([`crate::DisconnectCode`]).
    pub code: u32,
    /// Description (UTF-8 by the RFC; empty when missing or cut short).
    pub description: &'a [u8],
    /// Language tag (empty when missing or cut short).
    pub language: &'a [u8],
}

impl<'a> Message<'a> for Disconnect<'a> {
    const NUMBER: u8 = DISCONNECT;
    const NAME: &'static str = "DISCONNECT";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let code = r.u32("reason code")?;
        let (description, language) = match r.string("description") {
            Ok(d) => (d, optional_string(&mut r, "language tag")),
            Err(_) => (&[][..], &[][..]),
        };
        Ok(Disconnect { code, description, language })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.code);
        out.put_string(self.description);
        out.put_string(self.language);
    }
}

/// SSH_MSG_IGNORE (RFC 4253 §11.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignore<'a> {
    /// Arbitrary data (random padding for keepalives).
    pub data: &'a [u8],
}

impl Ignore<'_> {
    /// Appends an IGNORE with `len` bytes of data that `fill` writes in
    /// place (random keepalive padding drawn straight into the transmit
    /// buffer, without a copy).
    pub fn encode_filled(out: &mut Vec<u8>, len: usize, fill: impl FnOnce(&mut [u8])) {
        out.put_u8(IGNORE);
        out.put_u32(len as u32);
        let at = out.len();
        out.resize(at + len, 0);
        fill(&mut out[at..]);
    }
}

impl<'a> Message<'a> for Ignore<'a> {
    const NUMBER: u8 = IGNORE;
    const NAME: &'static str = "IGNORE";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(Ignore { data: r.string("data")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.data);
    }
}

/// SSH_MSG_UNIMPLEMENTED (RFC 4253 §11.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unimplemented {
    /// Sequence number of the packet that was not understood.
    pub seq: u32,
}

impl<'a> Message<'a> for Unimplemented {
    const NUMBER: u8 = UNIMPLEMENTED;
    const NAME: &'static str = "UNIMPLEMENTED";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(Unimplemented { seq: r.u32("sequence number")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.seq);
    }
}

/// SSH_MSG_DEBUG (RFC 4253 §11.3). The language tag may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugMessage<'a> {
    /// Whether the peer asks for the message to be shown.
    pub always_display: bool,
    /// The message (UTF-8 by the RFC).
    pub message: &'a [u8],
    /// Language tag (empty when missing or cut short).
    pub language: &'a [u8],
}

impl<'a> Message<'a> for DebugMessage<'a> {
    const NUMBER: u8 = DEBUG;
    const NAME: &'static str = "DEBUG";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let always_display = r.bool("always_display")?;
        let message = r.string("message")?;
        let language = optional_string(&mut r, "language tag");
        Ok(DebugMessage { always_display, message, language })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_bool(self.always_display);
        out.put_string(self.message);
        out.put_string(self.language);
    }
}

/// SSH_MSG_SERVICE_REQUEST (RFC 4253 §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest<'a> {
    /// The service, e.g. `ssh-userauth`.
    pub service: &'a str,
}

impl<'a> Message<'a> for ServiceRequest<'a> {
    const NUMBER: u8 = SERVICE_REQUEST;
    const NAME: &'static str = "SERVICE_REQUEST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ServiceRequest { service: r.utf8("service name")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.service);
    }
}

/// SSH_MSG_SERVICE_ACCEPT (RFC 4253 §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccept<'a> {
    /// The service accepted.
    pub service: &'a str,
}

impl<'a> Message<'a> for ServiceAccept<'a> {
    const NUMBER: u8 = SERVICE_ACCEPT;
    const NAME: &'static str = "SERVICE_ACCEPT";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ServiceAccept { service: r.utf8("service name")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.service);
    }
}

/// The name of the `server-sig-algs` extension (RFC 8308 §3.1).
pub const SERVER_SIG_ALGS: &str = "server-sig-algs";

/// One extension of SSH_MSG_EXT_INFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extension<'a> {
    /// `server-sig-algs`: the signature algorithms the server accepts for
    /// user keys, comma-separated (must be UTF-8).
    ServerSigAlgs(&'a str),
    /// Any other extension (`ping@openssh.com`,
    /// `publickey-hostbound@openssh.com`, ...) with its raw value. Never
    /// named `server-sig-algs`.
    Other {
        /// Extension name.
        name: &'a [u8],
        /// Its value.
        value: &'a [u8],
    },
}

/// SSH_MSG_EXT_INFO (RFC 8308 §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtInfo<'a> {
    /// The extensions, in the order sent.
    pub extensions: Vec<Extension<'a>>,
}

impl<'a> Message<'a> for ExtInfo<'a> {
    const NUMBER: u8 = EXT_INFO;
    const NAME: &'static str = "EXT_INFO";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let count = r.u32("extension count")?;
        // Each extension takes at least 8 bytes, so the payload bounds the
        // loop and the allocation.
        let mut extensions = Vec::with_capacity(capacity(count, &r, 8));
        for _ in 0..count {
            let name = r.string("extension name")?;
            let value = r.string("extension value")?;
            extensions.push(if name == SERVER_SIG_ALGS.as_bytes() {
                let list = core::str::from_utf8(value).map_err(|_| DecodeError::NotUtf8(SERVER_SIG_ALGS))?;
                Extension::ServerSigAlgs(list)
            } else {
                Extension::Other { name, value }
            });
        }
        Ok(ExtInfo { extensions })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.extensions.len() as u32);
        for e in &self.extensions {
            match e {
                Extension::ServerSigAlgs(list) => {
                    out.put_str(SERVER_SIG_ALGS);
                    out.put_str(list);
                }
                Extension::Other { name, value } => {
                    out.put_string(name);
                    out.put_string(value);
                }
            }
        }
    }
}

/// SSH_MSG_NEWKEYS (RFC 4253 §7.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKeys;

impl<'a> Message<'a> for NewKeys {
    const NUMBER: u8 = NEWKEYS;
    const NAME: &'static str = "NEWKEYS";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        fields(payload, Self::NUMBER)?;
        Ok(NewKeys)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
    }
}

/// SSH_MSG_KEX_ECDH_INIT (RFC 5656 §4, RFC 8731): the client's ephemeral key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexEcdhInit<'a> {
    /// Q_C.
    pub client_public: &'a [u8],
}

impl<'a> Message<'a> for KexEcdhInit<'a> {
    const NUMBER: u8 = KEX_ECDH_INIT;
    const NAME: &'static str = "KEX_ECDH_INIT";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let client_public = r.string("client public key")?;
        r.finish()?;
        Ok(KexEcdhInit { client_public })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.client_public);
    }
}

/// SSH_MSG_KEX_ECDH_REPLY (RFC 5656 §4, RFC 8731).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexEcdhReply<'a> {
    /// K_S: the server's host key blob.
    pub host_key: &'a [u8],
    /// Q_S: the server's ephemeral key.
    pub server_public: &'a [u8],
    /// The host key's signature over the exchange hash.
    pub signature: &'a [u8],
}

impl<'a> Message<'a> for KexEcdhReply<'a> {
    const NUMBER: u8 = KEX_ECDH_REPLY;
    const NAME: &'static str = "KEX_ECDH_REPLY";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let host_key = r.string("host key")?;
        let server_public = r.string("server public key")?;
        let signature = r.string("signature")?;
        r.finish()?;
        Ok(KexEcdhReply { host_key, server_public, signature })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.host_key);
        out.put_string(self.server_public);
        out.put_string(self.signature);
    }
}

/// SSH_MSG_PING (OpenSSH PROTOCOL §1.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping<'a> {
    /// Echoed in the PONG.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for Ping<'a> {
    const NUMBER: u8 = PING;
    const NAME: &'static str = "PING";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(Ping { data: r.string("data")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.data);
    }
}

/// SSH_MSG_PONG (OpenSSH PROTOCOL §1.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pong<'a> {
    /// The PING's data.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for Pong<'a> {
    const NUMBER: u8 = PONG;
    const NAME: &'static str = "PONG";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(Pong { data: r.string("data")? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.data);
    }
}

// ------------------------------------------------------- authentication

/// The method-specific part of SSH_MSG_USERAUTH_REQUEST (RFC 4252 §5–9, RFC 4256 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequestMethod<'a> {
    /// `none`.
    None,
    /// `password`, or a password change (RFC 4252 §8).
    Password {
        /// The (old) password.
        password: &'a str,
        /// The new password, with the change flag.
        new_password: Option<&'a str>,
    },
    /// `publickey`: a query without a signature, or a signed attempt.
    PublicKey {
        /// Signature algorithm name.
        algorithm: &'a str,
        /// Public key blob.
        key: &'a [u8],
        /// The signature, with the "has signature" flag.
        signature: Option<&'a [u8]>,
    },
    /// `keyboard-interactive`.
    KeyboardInteractive {
        /// Language tag (deprecated, usually empty).
        language: &'a [u8],
        /// Submethod hints, comma-separated.
        submethods: &'a [u8],
    },
    /// Any other method (`hostbased`, `gssapi-with-mic`, ...) with its raw
    /// fields. Never one of the names above.
    Other {
        /// The method name.
        name: &'a str,
        /// Its fields, encoded.
        fields: &'a [u8],
    },
}

impl<'a> AuthRequestMethod<'a> {
    /// The method name.
    pub fn name(&self) -> &'a str {
        match self {
            AuthRequestMethod::None => "none",
            AuthRequestMethod::Password { .. } => "password",
            AuthRequestMethod::PublicKey { .. } => "publickey",
            AuthRequestMethod::KeyboardInteractive { .. } => "keyboard-interactive",
            AuthRequestMethod::Other { name, .. } => name,
        }
    }

    /// Decodes the fields of method `name` (the rest of the payload after
    /// the method name). The known methods allow no trailing bytes.
    pub fn decode(name: &'a str, fields: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(fields);
        let method = match name {
            "none" => AuthRequestMethod::None,
            "password" => {
                let change = r.bool("change flag")?;
                let password = r.utf8("password")?;
                let new_password = if change { Some(r.utf8("new password")?) } else { None };
                AuthRequestMethod::Password { password, new_password }
            }
            "publickey" => {
                let signed = r.bool("has signature")?;
                let algorithm = r.utf8("algorithm")?;
                let key = r.string("public key")?;
                let signature = if signed { Some(r.string("signature")?) } else { None };
                AuthRequestMethod::PublicKey { algorithm, key, signature }
            }
            "keyboard-interactive" => {
                let language = r.string("language tag")?;
                let submethods = r.string("submethods")?;
                AuthRequestMethod::KeyboardInteractive { language, submethods }
            }
            _ => return Ok(AuthRequestMethod::Other { name, fields }),
        };
        r.finish()?;
        Ok(method)
    }

    /// Appends the method's fields (not its name).
    pub fn encode_fields(&self, out: &mut Vec<u8>) {
        match self {
            AuthRequestMethod::None => {}
            AuthRequestMethod::Password { password, new_password } => {
                out.put_bool(new_password.is_some());
                out.put_str(password);
                if let Some(new) = new_password {
                    out.put_str(new);
                }
            }
            AuthRequestMethod::PublicKey { algorithm, key, signature } => {
                out.put_bool(signature.is_some());
                out.put_str(algorithm);
                out.put_string(key);
                if let Some(sig) = signature {
                    out.put_string(sig);
                }
            }
            AuthRequestMethod::KeyboardInteractive { language, submethods } => {
                out.put_string(language);
                out.put_string(submethods);
            }
            AuthRequestMethod::Other { fields, .. } => out.extend_from_slice(fields),
        }
    }
}

/// SSH_MSG_USERAUTH_REQUEST (RFC 4252 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthRequest<'a> {
    /// User name.
    pub user: &'a str,
    /// Service to start, `ssh-connection`.
    pub service: &'a str,
    /// The method and its fields.
    pub method: AuthRequestMethod<'a>,
}

/// The fields every USERAUTH_REQUEST has: what a server checks before it
/// decodes the method's own fields ([`UserauthRequestHead::finish`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthRequestHead<'a> {
    /// User name.
    pub user: &'a str,
    /// Service name.
    pub service: &'a str,
    /// Method name.
    pub method: &'a str,
    /// The method's fields, not decoded yet.
    rest: &'a [u8],
}

impl<'a> UserauthRequestHead<'a> {
    /// Decodes the method's fields.
    pub fn finish(&self) -> Result<AuthRequestMethod<'a>, DecodeError> {
        AuthRequestMethod::decode(self.method, self.rest)
    }
}

impl<'a> UserauthRequest<'a> {
    /// Decodes user, service and method name only.
    pub fn decode_head(payload: &'a [u8]) -> Result<UserauthRequestHead<'a>, DecodeError> {
        let mut r = fields(payload, USERAUTH_REQUEST)?;
        let user = r.utf8("user name")?;
        let service = r.utf8("service name")?;
        let method = r.utf8("method name")?;
        Ok(UserauthRequestHead { user, service, method, rest: r.remaining() })
    }
}

impl<'a> Message<'a> for UserauthRequest<'a> {
    const NUMBER: u8 = USERAUTH_REQUEST;
    const NAME: &'static str = "USERAUTH_REQUEST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let head = Self::decode_head(payload)?;
        Ok(UserauthRequest { user: head.user, service: head.service, method: head.finish()? })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.user);
        out.put_str(self.service);
        out.put_str(self.method.name());
        self.method.encode_fields(out);
    }
}

/// SSH_MSG_USERAUTH_FAILURE (RFC 4252 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthFailure<'a> {
    /// Methods that can continue (empty names are dropped).
    pub methods: Vec<&'a str>,
    /// Whether the request succeeded as one factor of several.
    pub partial_success: bool,
}

impl<'a> Message<'a> for UserauthFailure<'a> {
    const NUMBER: u8 = USERAUTH_FAILURE;
    const NAME: &'static str = "USERAUTH_FAILURE";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let methods = r.name_list("methods")?;
        let partial_success = r.bool("partial success")?;
        r.finish()?;
        Ok(UserauthFailure { methods, partial_success })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_name_list(&self.methods);
        out.put_bool(self.partial_success);
    }
}

/// SSH_MSG_USERAUTH_SUCCESS (RFC 4252 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthSuccess;

impl<'a> Message<'a> for UserauthSuccess {
    const NUMBER: u8 = USERAUTH_SUCCESS;
    const NAME: &'static str = "USERAUTH_SUCCESS";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        fields(payload, Self::NUMBER)?;
        Ok(UserauthSuccess)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
    }
}

/// SSH_MSG_USERAUTH_BANNER (RFC 4252 §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthBanner<'a> {
    /// The text (UTF-8 by the RFC).
    pub message: &'a [u8],
    /// Language tag.
    pub language: &'a [u8],
}

impl<'a> Message<'a> for UserauthBanner<'a> {
    const NUMBER: u8 = USERAUTH_BANNER;
    const NAME: &'static str = "USERAUTH_BANNER";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let message = r.string("message")?;
        let language = r.string("language tag")?;
        r.finish()?;
        Ok(UserauthBanner { message, language })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.message);
        out.put_string(self.language);
    }
}

/// SSH_MSG_USERAUTH_PK_OK (RFC 4252 §7): the server would accept this key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthPkOk<'a> {
    /// Signature algorithm of the query.
    pub algorithm: &'a str,
    /// Public key blob of the query.
    pub key: &'a [u8],
}

impl<'a> Message<'a> for UserauthPkOk<'a> {
    const NUMBER: u8 = USERAUTH_60;
    const NAME: &'static str = "USERAUTH_PK_OK";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let algorithm = r.utf8("algorithm")?;
        let key = r.string("key")?;
        r.finish()?;
        Ok(UserauthPkOk { algorithm, key })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.algorithm);
        out.put_string(self.key);
    }
}

/// SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (RFC 4252 §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthPasswdChangereq<'a> {
    /// The server's prompt (UTF-8 by the RFC).
    pub prompt: &'a [u8],
    /// Language tag.
    pub language: &'a [u8],
}

impl<'a> Message<'a> for UserauthPasswdChangereq<'a> {
    const NUMBER: u8 = USERAUTH_60;
    const NAME: &'static str = "USERAUTH_PASSWD_CHANGEREQ";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let prompt = r.string("prompt")?;
        let language = r.string("language tag")?;
        r.finish()?;
        Ok(UserauthPasswdChangereq { prompt, language })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.prompt);
        out.put_string(self.language);
    }
}

/// One prompt of a keyboard-interactive INFO_REQUEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoPrompt<'a> {
    /// Text to show (UTF-8 by the RFC).
    pub prompt: &'a [u8],
    /// Whether the answer may be echoed.
    pub echo: bool,
}

/// SSH_MSG_USERAUTH_INFO_REQUEST (RFC 4256 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthInfoRequest<'a> {
    /// Name (for a window title).
    pub name: &'a [u8],
    /// Instruction.
    pub instruction: &'a [u8],
    /// Language tag (deprecated).
    pub language: &'a [u8],
    /// The prompts.
    pub prompts: Vec<InfoPrompt<'a>>,
}

/// An INFO_REQUEST up to its number of prompts, which the client checks
/// against its limit before the prompts are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthInfoRequestHead<'a> {
    /// Name.
    pub name: &'a [u8],
    /// Instruction.
    pub instruction: &'a [u8],
    /// Language tag.
    pub language: &'a [u8],
    /// How many prompts follow, as the peer says.
    pub count: u32,
    rest: &'a [u8],
}

impl<'a> UserauthInfoRequestHead<'a> {
    /// Decodes the prompts (no trailing bytes allowed).
    pub fn finish(self) -> Result<UserauthInfoRequest<'a>, DecodeError> {
        let r = &mut Reader::new(self.rest);
        let mut prompts = Vec::with_capacity(capacity(self.count, r, 5));
        for _ in 0..self.count {
            let prompt = r.string("prompt")?;
            let echo = r.bool("echo")?;
            prompts.push(InfoPrompt { prompt, echo });
        }
        r.finish()?;
        Ok(UserauthInfoRequest {
            name: self.name,
            instruction: self.instruction,
            language: self.language,
            prompts,
        })
    }
}

impl<'a> UserauthInfoRequest<'a> {
    /// Decodes up to the number of prompts.
    pub fn decode_head(payload: &'a [u8]) -> Result<UserauthInfoRequestHead<'a>, DecodeError> {
        let mut r = fields(payload, USERAUTH_60)?;
        let name = r.string("name")?;
        let instruction = r.string("instruction")?;
        let language = r.string("language tag")?;
        let count = r.u32("number of prompts")?;
        Ok(UserauthInfoRequestHead { name, instruction, language, count, rest: r.remaining() })
    }
}

impl<'a> Message<'a> for UserauthInfoRequest<'a> {
    const NUMBER: u8 = USERAUTH_60;
    const NAME: &'static str = "USERAUTH_INFO_REQUEST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_head(payload)?.finish()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_string(self.name);
        out.put_string(self.instruction);
        out.put_string(self.language);
        out.put_u32(self.prompts.len() as u32);
        for p in &self.prompts {
            out.put_string(p.prompt);
            out.put_bool(p.echo);
        }
    }
}

/// SSH_MSG_USERAUTH_INFO_RESPONSE (RFC 4256 §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthInfoResponse<'a> {
    /// One answer per prompt, in order.
    pub responses: Vec<&'a str>,
}

/// An INFO_RESPONSE up to its number of responses, which the server checks
/// against the prompts it sent before the responses are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserauthInfoResponseHead<'a> {
    /// How many responses follow, as the peer says.
    pub count: u32,
    rest: &'a [u8],
}

impl<'a> UserauthInfoResponseHead<'a> {
    /// Decodes the responses (UTF-8; no trailing bytes allowed).
    pub fn finish(self) -> Result<UserauthInfoResponse<'a>, DecodeError> {
        let r = &mut Reader::new(self.rest);
        let mut responses = Vec::with_capacity(capacity(self.count, r, 4));
        for _ in 0..self.count {
            responses.push(r.utf8("response")?);
        }
        r.finish()?;
        Ok(UserauthInfoResponse { responses })
    }
}

impl<'a> UserauthInfoResponse<'a> {
    /// Decodes up to the number of responses.
    pub fn decode_head(payload: &'a [u8]) -> Result<UserauthInfoResponseHead<'a>, DecodeError> {
        let mut r = fields(payload, USERAUTH_INFO_RESPONSE)?;
        let count = r.u32("number of responses")?;
        Ok(UserauthInfoResponseHead { count, rest: r.remaining() })
    }
}

impl<'a> Message<'a> for UserauthInfoResponse<'a> {
    const NUMBER: u8 = USERAUTH_INFO_RESPONSE;
    const NAME: &'static str = "USERAUTH_INFO_RESPONSE";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_head(payload)?.finish()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.responses.len() as u32);
        for r in &self.responses {
            out.put_str(r);
        }
    }
}

// ------------------------------------------------------------ connection

/// SSH_MSG_GLOBAL_REQUEST (RFC 4254 §4). The request-specific data is
/// left raw: what it means depends on the request and on who receives it
/// (see [`crate::channel::GlobalRequest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalRequest<'a> {
    /// Request name.
    pub name: &'a str,
    /// Whether a REQUEST_SUCCESS/FAILURE is wanted.
    pub want_reply: bool,
    /// Request-specific data, encoded.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for GlobalRequest<'a> {
    const NUMBER: u8 = GLOBAL_REQUEST;
    const NAME: &'static str = "GLOBAL_REQUEST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let name = r.utf8("request name")?;
        let want_reply = r.bool("want reply")?;
        Ok(GlobalRequest { name, want_reply, data: r.remaining() })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.name);
        out.put_bool(self.want_reply);
        out.extend_from_slice(self.data);
    }
}

/// SSH_MSG_REQUEST_SUCCESS (RFC 4254 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSuccess<'a> {
    /// Response-specific data (the bound port of a `tcpip-forward` to port 0).
    pub data: &'a [u8],
}

impl<'a> Message<'a> for RequestSuccess<'a> {
    const NUMBER: u8 = REQUEST_SUCCESS;
    const NAME: &'static str = "REQUEST_SUCCESS";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let r = fields(payload, Self::NUMBER)?;
        Ok(RequestSuccess { data: r.remaining() })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.extend_from_slice(self.data);
    }
}

/// SSH_MSG_REQUEST_FAILURE (RFC 4254 §4). It has no fields; bytes a peer
/// appends anyway are kept (and handed to the application).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFailure<'a> {
    /// Whatever followed the message number.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for RequestFailure<'a> {
    const NUMBER: u8 = REQUEST_FAILURE;
    const NAME: &'static str = "REQUEST_FAILURE";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let r = fields(payload, Self::NUMBER)?;
        Ok(RequestFailure { data: r.remaining() })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.extend_from_slice(self.data);
    }
}

/// SSH_MSG_CHANNEL_OPEN (RFC 4254 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOpen<'a> {
    /// The channel type and its data.
    pub kind: Cow<'a, ChannelKind>,
    /// The sender's channel number.
    pub sender: u32,
    /// Initial window.
    pub window: u32,
    /// Maximum packet.
    pub max_packet: u32,
}

impl<'a> Message<'a> for ChannelOpen<'a> {
    const NUMBER: u8 = CHANNEL_OPEN;
    const NAME: &'static str = "CHANNEL_OPEN";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let name = r.utf8("channel type")?;
        let sender = r.u32("sender channel")?;
        let window = r.u32("initial window")?;
        let max_packet = r.u32("maximum packet")?;
        let kind = Cow::Owned(ChannelKind::decode(name, &mut r)?);
        Ok(ChannelOpen { kind, sender, window, max_packet })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_str(self.kind.name());
        out.put_u32(self.sender);
        out.put_u32(self.window);
        out.put_u32(self.max_packet);
        self.kind.encode_data(out);
    }
}

/// SSH_MSG_CHANNEL_OPEN_CONFIRMATION (RFC 4254 §5.1). Channel-type-specific
/// data after the fields is ignored (no type we know has any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOpenConfirmation {
    /// Our channel number.
    pub recipient: u32,
    /// The peer's channel number.
    pub sender: u32,
    /// Initial window.
    pub window: u32,
    /// Maximum packet.
    pub max_packet: u32,
}

impl<'a> Message<'a> for ChannelOpenConfirmation {
    const NUMBER: u8 = CHANNEL_OPEN_CONFIRMATION;
    const NAME: &'static str = "CHANNEL_OPEN_CONFIRMATION";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ChannelOpenConfirmation {
            recipient: r.u32("recipient channel")?,
            sender: r.u32("sender channel")?,
            window: r.u32("initial window")?,
            max_packet: r.u32("maximum packet")?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_u32(self.sender);
        out.put_u32(self.window);
        out.put_u32(self.max_packet);
    }
}

/// SSH_MSG_CHANNEL_OPEN_FAILURE (RFC 4254 §5.1). The language tag may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOpenFailure<'a> {
    /// Our channel number.
    pub recipient: u32,
    /// Reason code ([`crate::channel::OpenFailure`]).
    pub reason: u32,
    /// Description (UTF-8 by the RFC).
    pub description: &'a [u8],
    /// Language tag (empty when missing or cut short).
    pub language: &'a [u8],
}

impl<'a> Message<'a> for ChannelOpenFailure<'a> {
    const NUMBER: u8 = CHANNEL_OPEN_FAILURE;
    const NAME: &'static str = "CHANNEL_OPEN_FAILURE";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let recipient = r.u32("recipient channel")?;
        let reason = r.u32("reason code")?;
        let description = r.string("description")?;
        let language = optional_string(&mut r, "language tag");
        Ok(ChannelOpenFailure { recipient, reason, description, language })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_u32(self.reason);
        out.put_string(self.description);
        out.put_string(self.language);
    }
}

/// SSH_MSG_CHANNEL_WINDOW_ADJUST (RFC 4254 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelWindowAdjust {
    /// The receiver's channel number.
    pub recipient: u32,
    /// Bytes to add to the window.
    pub bytes_to_add: u32,
}

impl<'a> Message<'a> for ChannelWindowAdjust {
    const NUMBER: u8 = CHANNEL_WINDOW_ADJUST;
    const NAME: &'static str = "CHANNEL_WINDOW_ADJUST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ChannelWindowAdjust {
            recipient: r.u32("recipient channel")?,
            bytes_to_add: r.u32("bytes to add")?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_u32(self.bytes_to_add);
    }
}

/// SSH_MSG_CHANNEL_DATA (RFC 4254 §5.2): the bulk path. The data borrows
/// from the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for ChannelData<'a> {
    const NUMBER: u8 = CHANNEL_DATA;
    const NAME: &'static str = "CHANNEL_DATA";

    #[inline]
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ChannelData { recipient: r.u32("recipient channel")?, data: r.string("data")? })
    }

    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_string(self.data);
    }
}

/// SSH_MSG_CHANNEL_EXTENDED_DATA (RFC 4254 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelExtendedData<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// Data type code (1: stderr).
    pub code: u32,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> Message<'a> for ChannelExtendedData<'a> {
    const NUMBER: u8 = CHANNEL_EXTENDED_DATA;
    const NAME: &'static str = "CHANNEL_EXTENDED_DATA";

    #[inline]
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        Ok(ChannelExtendedData {
            recipient: r.u32("recipient channel")?,
            code: r.u32("data type code")?,
            data: r.string("data")?,
        })
    }

    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_u32(self.code);
        out.put_string(self.data);
    }
}

/// Messages whose only field is the recipient channel.
macro_rules! recipient_only {
    ($(#[$doc:meta] $ty:ident = $number:ident;)*) => {$(
        #[$doc]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $ty {
            /// The receiver's channel number.
            pub recipient: u32,
        }

        impl<'a> Message<'a> for $ty {
            const NUMBER: u8 = $number;
            const NAME: &'static str = stringify!($number);

            fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
                let mut r = fields(payload, Self::NUMBER)?;
                Ok($ty { recipient: r.u32("recipient channel")? })
            }

            fn encode(&self, out: &mut Vec<u8>) {
                out.put_u8(Self::NUMBER);
                out.put_u32(self.recipient);
            }
        }
    )*};
}

recipient_only! {
    /// SSH_MSG_CHANNEL_EOF (RFC 4254 §5.3).
    ChannelEof = CHANNEL_EOF;
    /// SSH_MSG_CHANNEL_CLOSE (RFC 4254 §5.3).
    ChannelClose = CHANNEL_CLOSE;
    /// SSH_MSG_CHANNEL_SUCCESS (RFC 4254 §5.4).
    ChannelSuccess = CHANNEL_SUCCESS;
    /// SSH_MSG_CHANNEL_FAILURE (RFC 4254 §5.4).
    ChannelFailure = CHANNEL_FAILURE;
}

/// SSH_MSG_CHANNEL_REQUEST (RFC 4254 §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRequest<'a> {
    /// The receiver's channel number.
    pub recipient: u32,
    /// Whether a CHANNEL_SUCCESS/FAILURE is wanted.
    pub want_reply: bool,
    /// The request type and its data.
    pub request: Cow<'a, RequestData>,
}

impl<'a> Message<'a> for ChannelRequest<'a> {
    const NUMBER: u8 = CHANNEL_REQUEST;
    const NAME: &'static str = "CHANNEL_REQUEST";

    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = fields(payload, Self::NUMBER)?;
        let recipient = r.u32("recipient channel")?;
        let name = r.utf8("request type")?;
        let want_reply = r.bool("want reply")?;
        let request = Cow::Owned(RequestData::decode(name, &mut r)?);
        Ok(ChannelRequest { recipient, want_reply, request })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(Self::NUMBER);
        out.put_u32(self.recipient);
        out.put_str(self.request.name());
        out.put_bool(self.want_reply);
        self.request.encode_data(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_is_checked_and_names_match_the_table() {
        let p = ChannelEof { recipient: 7 }.to_payload();
        assert_eq!(p, [CHANNEL_EOF, 0, 0, 0, 7]);
        assert_eq!(ChannelClose::decode(&p), Err(DecodeError::Invalid("message number")));
        assert_eq!(ChannelEof::decode(&[]), Err(DecodeError::Truncated("message number")));
        assert_eq!(<ChannelEof as Message<'_>>::NAME, name(CHANNEL_EOF));
        assert_eq!(<ChannelData<'_> as Message<'_>>::NAME, name(CHANNEL_DATA));
        assert_eq!(<Disconnect<'_> as Message<'_>>::NAME, name(DISCONNECT));
    }

    #[test]
    fn counts_do_not_reserve_more_than_the_payload_holds() {
        let mut p = vec![USERAUTH_INFO_RESPONSE];
        p.put_u32(u32::MAX);
        let head = UserauthInfoResponse::decode_head(&p).unwrap();
        assert_eq!(head.count, u32::MAX);
        assert_eq!(head.finish(), Err(DecodeError::Truncated("response")));
        let mut p = vec![EXT_INFO];
        p.put_u32(u32::MAX);
        assert_eq!(ExtInfo::decode(&p), Err(DecodeError::Truncated("extension name")));
    }

    #[test]
    fn lenient_trailing_strings() {
        let d = Disconnect::decode(&[DISCONNECT, 0, 0, 0, 11, 0, 0, 0, 9, b'x']).unwrap();
        assert_eq!(d, Disconnect { code: 11, description: b"", language: b"" });
        let d = DebugMessage::decode(&[DEBUG, 1, 0, 0, 0, 1, b'm']).unwrap();
        assert_eq!(d, DebugMessage { always_display: true, message: b"m", language: b"" });
    }
}
