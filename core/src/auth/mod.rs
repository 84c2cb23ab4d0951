//! User authentication (RFC 4252, RFC 4256): the client tries its
//! credentials in order; the server turns every attempt into an event for
//! the application to answer.

pub(crate) mod client;
pub(crate) mod server;

use core::fmt;

use ssh_key::{HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::keys::SignatureAlgorithm;
use crate::wire::Writer;
use crate::wire::msg::{self, Message};

/// The service authentication unlocks.
pub(crate) const SERVICE_CONNECTION: &str = "ssh-connection";

/// Most prompts we accept in one keyboard-interactive request.
pub const MAX_PROMPTS: usize = 64;

/// A secret string (password, keyboard-interactive answer): never printed
/// by `Debug`, zeroed when dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// A way for the client to authenticate, tried in the configured order.
#[derive(Clone)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // configuration: a handful per connection
pub enum Credential {
    /// `publickey` with a decrypted private key (see [`crate::keys::load_private_key`]).
    /// The key is offered first without a signature, and signs only when the
    /// server says it would accept it (PK_OK).
    PrivateKey(PrivateKey),
    /// `publickey` with a key held elsewhere (an ssh-agent, a token): on PK_OK
    /// the connection emits `Event::SignRequest` and waits for the signature.
    ExternalKey(PublicKey),
    /// `password` with this password.
    Password(Secret),
    /// `password`, asking the application through `Event::PasswordRequest`
    /// only if the server offers the method.
    PasswordPrompt,
    /// `keyboard-interactive`: prompts arrive as `Event::KeyboardInteractive`.
    KeyboardInteractive,
}

impl Credential {
    /// The method name this credential uses.
    pub fn method(&self) -> &'static str {
        match self {
            Credential::PrivateKey(_) | Credential::ExternalKey(_) => "publickey",
            Credential::Password(_) | Credential::PasswordPrompt => "password",
            Credential::KeyboardInteractive => "keyboard-interactive",
        }
    }

    /// A short description for logs and errors (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Credential::PrivateKey(k) => describe_key(k.public_key()),
            Credential::ExternalKey(k) => describe_key(k),
            _ => String::new(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::PrivateKey(k) => write!(f, "PrivateKey({})", describe_key(k.public_key())),
            Credential::ExternalKey(k) => write!(f, "ExternalKey({})", describe_key(k)),
            Credential::Password(_) => f.write_str("Password(***)"),
            Credential::PasswordPrompt => f.write_str("PasswordPrompt"),
            Credential::KeyboardInteractive => f.write_str("KeyboardInteractive"),
        }
    }
}

/// `ssh-ed25519 SHA256:…`, as OpenSSH logs keys.
pub(crate) fn describe_key(k: &PublicKey) -> String {
    format!("{} {}", k.algorithm().as_str(), k.fingerprint(HashAlg::Sha256))
}

/// The outcome of one authentication attempt (client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated.
    Success,
    /// Accepted, but the server wants more (multi-factor); these methods can continue.
    PartialSuccess {
        /// Methods the server will accept next.
        remaining: Vec<String>,
    },
    /// Refused; these methods can continue.
    Rejected {
        /// Methods the server will still accept.
        remaining: Vec<String>,
    },
    /// Not tried, and why (method not offered, no acceptable signature
    /// algorithm, the application declined to answer).
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One authentication attempt, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `publickey`, `password` or `keyboard-interactive`.
    pub method: String,
    /// What was tried within the method (the key), never a secret.
    pub detail: String,
    /// How it went.
    pub outcome: AuthOutcome,
}

impl fmt::Display for AuthAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.method)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        match &self.outcome {
            AuthOutcome::Success => f.write_str(": accepted"),
            AuthOutcome::PartialSuccess { remaining } => {
                write!(f, ": partial success, continue with [{}]", remaining.join(","))
            }
            AuthOutcome::Rejected { .. } => f.write_str(": rejected"),
            AuthOutcome::Skipped { reason } => write!(f, ": skipped, {reason}"),
        }
    }
}

/// A keyboard-interactive prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Text to show.
    pub text: String,
    /// Whether the answer may be echoed (false for passwords and codes).
    pub echo: bool,
}

/// What a client asked for, as the server application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `none`: usually answered with reject, which tells the client the methods.
    None,
    /// `password`, possibly with a new password after a change request.
    Password {
        /// The password.
        password: Secret,
        /// The new password, when answering a change request.
        new_password: Option<Secret>,
    },
    /// `publickey`. With `verified` false this is the query "would you accept
    /// this key?": accepting it sends PK_OK, not success. With `verified`
    /// true the core has already checked the signature against the session id.
    PublicKey {
        /// The key.
        key: PublicKey,
        /// The signature algorithm the client uses.
        algorithm: SignatureAlgorithm,
        /// Whether a valid signature came with it.
        verified: bool,
    },
    /// `keyboard-interactive`: answer with `auth_info_request` to send prompts.
    KeyboardInteractive {
        /// The client's submethod hints (comma-separated, often empty).
        submethods: String,
    },
}

impl AuthMethod {
    /// The method name.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Password { .. } => "password",
            AuthMethod::PublicKey { .. } => "publickey",
            AuthMethod::KeyboardInteractive { .. } => "keyboard-interactive",
        }
    }
}

/// The data a publickey signature covers (RFC 4252 §7): the session id,
/// then the signed USERAUTH_REQUEST up to its signature.
pub(crate) fn publickey_signed_data(
    session_id: &[u8],
    user: &str,
    alg: SignatureAlgorithm,
    blob: &[u8],
) -> Vec<u8> {
    let method = msg::AuthRequestMethod::PublicKey { algorithm: alg.name(), key: blob, signature: Some(&[]) };
    let request = msg::UserauthRequest { user, service: SERVICE_CONNECTION, method };
    let mut d = Vec::with_capacity(session_id.len() + user.len() + blob.len() + 80);
    d.put_string(session_id);
    request.encode(&mut d);
    // Without the (empty) signature string that ends it.
    d.truncate(d.len() - 4);
    d
}
