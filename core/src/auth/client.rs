//! The client's authentication: `none` first to learn the methods, then each
//! configured credential the server allows, falling through on refusal.

use std::collections::VecDeque;

use ssh_key::PublicKey;

use super::{
    AuthAttempt, AuthOutcome, Credential, MAX_PROMPTS, Prompt, SERVICE_CONNECTION, Secret, describe_key,
    publickey_signed_data,
};
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::Event;
use crate::keys::{self, SignatureAlgorithm};
use crate::transport::{Output, Shared};
use crate::wire::msg::{self, AuthRequestMethod, Message};

/// What the layer below must do after an auth step.
#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    Authenticated { user: String, method: String },
    Close { reason: CloseReason, code: DisconnectCode, description: String },
}

/// Everything the auth machines need from the transport.
pub(crate) struct Ctx<'a> {
    pub(crate) out: &'a mut Output,
    pub(crate) shared: &'a mut Shared,
    pub(crate) session_id: [u8; 32],
    pub(crate) server_sig_algs: Option<&'a [String]>,
}

#[derive(Debug)]
enum KeyRef {
    Private(Box<ssh_key::PrivateKey>),
    External(PublicKey),
}

impl KeyRef {
    fn public(&self) -> &PublicKey {
        match self {
            KeyRef::Private(k) => k.public_key(),
            KeyRef::External(k) => k,
        }
    }
}

/// What we are waiting for.
#[derive(Debug)]
enum State {
    /// Service not accepted yet.
    Idle,
    NoneSent,
    KeyQuery {
        key: KeyRef,
        alg: SignatureAlgorithm,
        blob: Vec<u8>,
    },
    KeySigned {
        detail: String,
    },
    AwaitSignature {
        id: u64,
        alg: SignatureAlgorithm,
        blob: Vec<u8>,
        detail: String,
    },
    PasswordSent {
        password: Secret,
    },
    AwaitPassword {
        id: u64,
    },
    AwaitPasswordChange {
        id: u64,
        old: Secret,
    },
    /// The old password is kept: the server may refuse the new one with
    /// another change request (RFC 4252 §8), to be answered with it again.
    PasswordChangeSent {
        old: Secret,
    },
    KbdSent,
    AwaitKbdAnswers {
        id: u64,
        count: usize,
    },
    Done,
    Failed,
}

/// The client's authentication state machine.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    user: String,
    pending: VecDeque<Credential>,
    /// Credentials whose method the server did not offer yet: retried after
    /// a partial success changes the method list.
    deferred: Vec<Credential>,
    /// Signature algorithms allowed for user keys, in preference order.
    key_algorithms: Vec<SignatureAlgorithm>,
    offered: Option<Vec<String>>,
    attempts: Vec<AuthAttempt>,
    state: State,
}

impl ClientAuth {
    pub(crate) fn new(
        user: String,
        credentials: Vec<Credential>,
        key_algorithms: Vec<SignatureAlgorithm>,
    ) -> Self {
        ClientAuth {
            user,
            pending: credentials.into(),
            deferred: Vec::new(),
            key_algorithms,
            offered: None,
            attempts: Vec::new(),
            state: State::Idle,
        }
    }

    /// Sends a USERAUTH_REQUEST for `method`. The payload may hold a
    /// secret: it is zeroed once sent.
    fn send_request(&self, method: AuthRequestMethod<'_>, ctx: &mut Ctx<'_>) {
        let mut p = Vec::with_capacity(128);
        msg::UserauthRequest { user: &self.user, service: SERVICE_CONNECTION, method }.encode(&mut p);
        ctx.out.send(&p, &mut ctx.shared.rng);
        zeroize::Zeroize::zeroize(&mut p);
    }

    /// The service was accepted: probe with `none` to learn the methods.
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(self.state, State::Idle) {
            self.send_request(AuthRequestMethod::None, ctx);
            self.state = State::NoneSent;
        }
    }

    fn record(&mut self, method: &str, detail: String, outcome: AuthOutcome, ctx: &mut Ctx<'_>) {
        let a = AuthAttempt { method: method.to_owned(), detail, outcome };
        ctx.shared.events.push_back(Event::AuthProgress(a.clone()));
        self.attempts.push(a);
    }

    fn next_id(ctx: &mut Ctx<'_>) -> u64 {
        ctx.shared.next_id += 1;
        ctx.shared.next_id
    }

    /// Picks the signature algorithm for a user key (RFC 8332 §3.2): our
    /// first preference that fits the key and that the server lists in
    /// `server-sig-algs` (servers without it are assumed to take any).
    fn choose_alg(&self, key: &PublicKey, ctx: &Ctx<'_>) -> Result<SignatureAlgorithm, String> {
        let listed =
            |a: SignatureAlgorithm| ctx.server_sig_algs.is_none_or(|l| l.iter().any(|n| n == a.name()));
        let fitting: Vec<_> =
            self.key_algorithms.iter().copied().filter(|a| a.fits_key(key.key_data())).collect();
        if let Some(a) = fitting.iter().copied().find(|a| listed(*a)) {
            return Ok(a);
        }
        if fitting.is_empty() {
            return Err(format!("no allowed signature algorithm for {} keys", key.algorithm().as_str()));
        }
        let ours: Vec<&str> = fitting.iter().map(|a| a.name()).collect();
        Err(format!("the server accepts none of [{}] (server-sig-algs)", ours.join(",")))
    }

    /// Tries the next credential the server allows, or gives up.
    fn next(&mut self, ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        while let Some(cred) = self.pending.pop_front() {
            let method = cred.method();
            if let Some(offered) = &self.offered
                && !offered.iter().any(|m| m == method)
            {
                self.deferred.push(cred);
                continue;
            }
            match cred {
                Credential::PrivateKey(_) | Credential::ExternalKey(_) => {
                    let key = match cred {
                        Credential::PrivateKey(k) => KeyRef::Private(Box::new(k)),
                        Credential::ExternalKey(k) => KeyRef::External(k),
                        _ => unreachable!("matched above"),
                    };
                    let alg = match self.choose_alg(key.public(), ctx) {
                        Ok(a) => a,
                        Err(reason) => {
                            let detail = describe_key(key.public());
                            self.record(method, detail, AuthOutcome::Skipped { reason }, ctx);
                            continue;
                        }
                    };
                    let blob =
                        key.public().to_bytes().map_err(|e| Error::Internal { what: e.to_string() })?;
                    let query =
                        AuthRequestMethod::PublicKey { algorithm: alg.name(), key: &blob, signature: None };
                    self.send_request(query, ctx);
                    self.state = State::KeyQuery { key, alg, blob };
                }
                Credential::Password(password) => self.send_password(password, ctx),
                Credential::PasswordPrompt => {
                    let id = Self::next_id(ctx);
                    ctx.shared.events.push_back(Event::PasswordRequest { id, user: self.user.clone() });
                    self.state = State::AwaitPassword { id };
                }
                Credential::KeyboardInteractive => {
                    let kbd = AuthRequestMethod::KeyboardInteractive { language: b"", submethods: b"" };
                    self.send_request(kbd, ctx);
                    self.state = State::KbdSent;
                }
            }
            return Ok(Step::Continue);
        }
        // Nothing left: report what was offered and what each attempt did.
        for cred in std::mem::take(&mut self.deferred) {
            let reason = "the server does not offer this method".to_owned();
            self.record(cred.method(), cred.describe(), AuthOutcome::Skipped { reason }, ctx);
        }
        self.state = State::Failed;
        let offered = self.offered.clone().unwrap_or_default();
        let description =
            format!("no more authentication methods to try (server offers {})", offered.join(","));
        Ok(Step::Close {
            reason: CloseReason::AuthFailed { offered, attempts: self.attempts.clone() },
            code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE,
            description,
        })
    }

    fn send_password(&mut self, password: Secret, ctx: &mut Ctx<'_>) {
        let method = AuthRequestMethod::Password { password: password.expose(), new_password: None };
        self.send_request(method, ctx);
        self.state = State::PasswordSent { password };
    }

    /// Method and detail of the request in flight, for the attempt log.
    fn in_flight(&self) -> Option<(&'static str, String)> {
        match &self.state {
            State::NoneSent => Some(("none", String::new())),
            State::KeyQuery { key, .. } => Some(("publickey", describe_key(key.public()))),
            State::KeySigned { detail } => Some(("publickey", detail.clone())),
            State::PasswordSent { .. } | State::PasswordChangeSent { .. } => {
                Some(("password", String::new()))
            }
            State::KbdSent => Some(("keyboard-interactive", String::new())),
            _ => None,
        }
    }

    /// Handles an authentication message from the server.
    pub(crate) fn handle(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        let n = payload[0];
        let unexpected = |phase| Error::UnexpectedMessage { number: n, message: msg::name(n), phase };
        match n {
            msg::USERAUTH_BANNER => {
                let banner = msg::parse::<msg::UserauthBanner>(payload)?;
                if matches!(self.state, State::Done) {
                    return Err(unexpected("after authentication succeeded"));
                }
                ctx.shared.events.push_back(Event::AuthBanner {
                    message: crate::terminal_safe(banner.message),
                    raw: banner.message.to_vec(),
                    language: crate::terminal_safe(banner.language),
                });
                Ok(Step::Continue)
            }
            msg::USERAUTH_SUCCESS => {
                let Some((method, detail)) = self.in_flight() else {
                    return Err(unexpected("with no authentication request outstanding"));
                };
                msg::parse::<msg::UserauthSuccess>(payload)?;
                if method != "none" {
                    self.record(method, detail, AuthOutcome::Success, ctx);
                }
                self.state = State::Done;
                // Done with credentials: private keys and passwords should
                // not stay in memory for the life of the connection.
                self.pending = VecDeque::new();
                self.deferred = Vec::new();
                self.attempts = Vec::new();
                Ok(Step::Authenticated { user: self.user.clone(), method: method.to_owned() })
            }
            msg::USERAUTH_FAILURE => {
                let Some((method, detail)) = self.in_flight() else {
                    return Err(unexpected("with no authentication request outstanding"));
                };
                let failure = msg::parse::<msg::UserauthFailure>(payload)?;
                let remaining: Vec<String> = failure.methods.into_iter().map(str::to_owned).collect();
                let partial = failure.partial_success;
                if method != "none" {
                    let outcome = if partial {
                        AuthOutcome::PartialSuccess { remaining: remaining.clone() }
                    } else {
                        AuthOutcome::Rejected { remaining: remaining.clone() }
                    };
                    self.record(method, detail, outcome, ctx);
                }
                if partial {
                    // Another factor is needed: methods skipped so far may now apply.
                    for cred in self.deferred.drain(..).rev() {
                        self.pending.push_front(cred);
                    }
                }
                self.offered = Some(remaining);
                self.next(ctx)
            }
            msg::USERAUTH_60 => match std::mem::replace(&mut self.state, State::Failed) {
                State::KeyQuery { key, alg, blob } => {
                    let ok = msg::parse::<msg::UserauthPkOk>(payload)?;
                    if ok.algorithm != alg.name() || ok.key != blob.as_slice() {
                        return Err(Error::AuthProtocol {
                            what: format!("PK_OK for a key we did not offer ({})", ok.algorithm),
                        });
                    }
                    let data = publickey_signed_data(&ctx.session_id, &self.user, alg, &blob);
                    let detail = describe_key(key.public());
                    match key {
                        KeyRef::Private(private) => {
                            match keys::sign(&private, alg, &data, &mut ctx.shared.rng) {
                                Ok(sig) => {
                                    self.send_signed(alg, &blob, &sig, ctx);
                                    self.state = State::KeySigned { detail };
                                }
                                Err(e) => {
                                    self.record(
                                        "publickey",
                                        detail,
                                        AuthOutcome::Skipped { reason: e.to_string() },
                                        ctx,
                                    );
                                    return self.next(ctx);
                                }
                            }
                        }
                        KeyRef::External(public) => {
                            let id = Self::next_id(ctx);
                            ctx.shared.events.push_back(Event::SignRequest {
                                id,
                                key: public,
                                algorithm: alg,
                                data,
                            });
                            self.state = State::AwaitSignature { id, alg, blob, detail };
                        }
                    }
                    Ok(Step::Continue)
                }
                // A change request answers our password, or (RFC 4252 §8:
                // the new password was not acceptable) our change.
                State::PasswordSent { password } | State::PasswordChangeSent { old: password } => {
                    let req = msg::parse::<msg::UserauthPasswdChangereq>(payload)?;
                    let id = Self::next_id(ctx);
                    ctx.shared.events.push_back(Event::PasswordChangeRequest {
                        id,
                        prompt: String::from_utf8_lossy(req.prompt).into_owned(),
                    });
                    self.state = State::AwaitPasswordChange { id, old: password };
                    Ok(Step::Continue)
                }
                State::KbdSent => {
                    let malformed = |reason| Error::Malformed {
                        message: <msg::UserauthInfoRequest<'_> as Message<'_>>::NAME,
                        reason,
                    };
                    // The count is checked before the prompts are read.
                    let head = msg::UserauthInfoRequest::decode_head(payload).map_err(malformed)?;
                    let count = head.count as usize;
                    if count > MAX_PROMPTS {
                        return Err(Error::AuthProtocol {
                            what: format!(
                                "keyboard-interactive request with {count} prompts (at most {MAX_PROMPTS})"
                            ),
                        });
                    }
                    let req = head.finish().map_err(malformed)?;
                    if count == 0 {
                        // Nothing to ask (some servers send this as a last step).
                        self.send_info_response(&[], ctx);
                        self.state = State::KbdSent;
                    } else {
                        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        let prompts = req
                            .prompts
                            .iter()
                            .map(|p| Prompt { text: text(p.prompt), echo: p.echo })
                            .collect();
                        let id = Self::next_id(ctx);
                        ctx.shared.events.push_back(Event::KeyboardInteractive {
                            id,
                            name: text(req.name),
                            instruction: text(req.instruction),
                            prompts,
                        });
                        self.state = State::AwaitKbdAnswers { id, count };
                    }
                    Ok(Step::Continue)
                }
                _ => Err(unexpected("without a matching request")),
            },
            _ => Err(unexpected("to a client")),
        }
    }

    fn send_signed(&mut self, alg: SignatureAlgorithm, blob: &[u8], sig: &[u8], ctx: &mut Ctx<'_>) {
        let signed = AuthRequestMethod::PublicKey { algorithm: alg.name(), key: blob, signature: Some(sig) };
        self.send_request(signed, ctx);
    }

    fn send_info_response(&mut self, answers: &[Secret], ctx: &mut Ctx<'_>) {
        let responses = answers.iter().map(Secret::expose).collect();
        let mut p = Vec::with_capacity(64);
        msg::UserauthInfoResponse { responses }.encode(&mut p);
        ctx.out.send(&p, &mut ctx.shared.rng);
        zeroize::Zeroize::zeroize(&mut p);
    }

    // ------------------------------------------------------------ commands

    /// The external signer's answer: the encoded signature, or `None` if it
    /// cannot sign (the key is then skipped).
    pub(crate) fn provide_signature(
        &mut self,
        id: u64,
        sig: Option<&[u8]>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let State::AwaitSignature { id: want, .. } = &self.state else {
            return Err(Error::UnknownId { what: "sign request", id });
        };
        if *want != id {
            return Err(Error::UnknownId { what: "sign request", id });
        }
        let State::AwaitSignature { alg, blob, detail, .. } =
            std::mem::replace(&mut self.state, State::Failed)
        else {
            unreachable!("checked above");
        };
        match sig {
            Some(sig) => {
                self.send_signed(alg, &blob, sig, ctx);
                self.state = State::KeySigned { detail };
                Ok(Step::Continue)
            }
            None => {
                let reason = "the signer declined".to_owned();
                self.record("publickey", detail, AuthOutcome::Skipped { reason }, ctx);
                self.next(ctx)
            }
        }
    }

    /// The password for `Event::PasswordRequest`, or `None` to skip it.
    pub(crate) fn provide_password(
        &mut self,
        id: u64,
        password: Option<Secret>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        if !matches!(self.state, State::AwaitPassword { id: want } if want == id) {
            return Err(Error::UnknownId { what: "password request", id });
        }
        match password {
            Some(p) => {
                self.send_password(p, ctx);
                Ok(Step::Continue)
            }
            None => {
                self.record(
                    "password",
                    String::new(),
                    AuthOutcome::Skipped { reason: "no password given".into() },
                    ctx,
                );
                self.next(ctx)
            }
        }
    }

    /// The new password for `Event::PasswordChangeRequest`, or `None` to give up on it.
    pub(crate) fn change_password(
        &mut self,
        id: u64,
        new: Option<Secret>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        if !matches!(&self.state, State::AwaitPasswordChange { id: want, .. } if *want == id) {
            return Err(Error::UnknownId { what: "password change request", id });
        }
        let State::AwaitPasswordChange { old, .. } = std::mem::replace(&mut self.state, State::Failed) else {
            unreachable!("checked above");
        };
        match new {
            Some(new) => {
                let change =
                    AuthRequestMethod::Password { password: old.expose(), new_password: Some(new.expose()) };
                self.send_request(change, ctx);
                self.state = State::PasswordChangeSent { old };
                Ok(Step::Continue)
            }
            None => {
                let reason = "password change declined".to_owned();
                self.record("password", String::new(), AuthOutcome::Skipped { reason }, ctx);
                self.next(ctx)
            }
        }
    }

    /// Answers for `Event::KeyboardInteractive` (one per prompt), or `None`
    /// to abandon the method.
    pub(crate) fn answer_keyboard_interactive(
        &mut self,
        id: u64,
        answers: Option<Vec<Secret>>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let State::AwaitKbdAnswers { id: want, count } = self.state else {
            return Err(Error::UnknownId { what: "keyboard-interactive request", id });
        };
        if want != id {
            return Err(Error::UnknownId { what: "keyboard-interactive request", id });
        }
        match answers {
            Some(a) if a.len() != count => {
                Err(Error::InvalidState { what: "keyboard-interactive: one answer per prompt is required" })
            }
            Some(a) => {
                self.send_info_response(&a, ctx);
                self.state = State::KbdSent;
                Ok(Step::Continue)
            }
            None => {
                let reason = "prompts not answered".to_owned();
                self.record("keyboard-interactive", String::new(), AuthOutcome::Skipped { reason }, ctx);
                self.next(ctx)
            }
        }
    }
}
