//! The server's authentication: every attempt becomes an `Event::AuthRequest`
//! that the application answers; publickey signatures are checked here first.

use super::client::{Ctx, Step};
use super::{AuthMethod, MAX_PROMPTS, Prompt, SERVICE_CONNECTION, Secret, publickey_signed_data};
use crate::error::{CloseReason, DisconnectCode, Error};
use crate::event::Event;
use crate::keys::{self, SignatureAlgorithm};
use crate::wire::DecodeError;
use crate::wire::msg::{self, AuthRequestMethod, Message};

/// A request waiting for the application.
#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    user: String,
    kind: Kind,
    /// Whether refusing it counts towards the attempt limit.
    counts: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    None,
    Password,
    PublicKeyQuery { alg: SignatureAlgorithm, blob: Vec<u8> },
    PublicKeySigned,
    KeyboardInteractive,
}

impl Kind {
    fn method(&self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Password => "password",
            Kind::PublicKeyQuery { .. } | Kind::PublicKeySigned => "publickey",
            Kind::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

/// The server's authentication state machine.
#[derive(Debug)]
pub(crate) struct ServerAuth {
    /// Methods that can continue, sent in every FAILURE.
    methods: Vec<String>,
    /// Signature algorithms accepted for user keys.
    key_algorithms: Vec<SignatureAlgorithm>,
    max_failures: u32,
    failures: u32,
    /// The user and service of the first request: neither may change
    /// afterwards (OpenSSH disconnects too; RFC 4252 §5 would otherwise
    /// require flushing every partial success).
    identity: Option<(String, String)>,
    banner: Option<String>,
    /// Waiting for the application's decision (input is paused meanwhile).
    decision: Option<Pending>,
    /// keyboard-interactive: INFO_REQUEST sent, waiting for INFO_RESPONSE.
    info: Option<(Pending, usize)>,
    /// Requests the client pipelined while we wait for a decision (RFC 4252
    /// §5 allows several in flight), handled in order once it comes.
    queued: std::collections::VecDeque<Vec<u8>>,
    done: bool,
}

/// Pipelined requests we hold at most; a client sending more is abusive.
const MAX_QUEUED_REQUESTS: usize = 16;

fn malformed(reason: DecodeError) -> Error {
    Error::Malformed { message: <msg::UserauthRequest<'_> as Message<'_>>::NAME, reason }
}

impl ServerAuth {
    pub(crate) fn new(
        methods: Vec<String>,
        key_algorithms: Vec<SignatureAlgorithm>,
        max_failures: u32,
        banner: Option<String>,
    ) -> Self {
        ServerAuth {
            methods,
            key_algorithms,
            max_failures: max_failures.max(1),
            failures: 0,
            identity: None,
            banner,
            decision: None,
            info: None,
            queued: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Handles requests queued while a decision was pending, until the next
    /// one needs the application again.
    pub(crate) fn resume(&mut self, ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        while self.decision.is_none() {
            let Some(payload) = self.queued.pop_front() else { break };
            let step = self.handle(&payload, ctx)?;
            if !matches!(step, Step::Continue) {
                return Ok(step);
            }
        }
        Ok(Step::Continue)
    }

    fn send_banner(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(banner) = self.banner.take() {
            let mut p = Vec::with_capacity(banner.len() + 16);
            msg::UserauthBanner { message: banner.as_bytes(), language: b"" }.encode(&mut p);
            ctx.out.send(&p, &mut ctx.shared.rng);
        }
    }

    fn send_failure(&mut self, partial: bool, ctx: &mut Ctx<'_>) {
        let methods = self.methods.iter().map(String::as_str).collect();
        let mut p = Vec::with_capacity(64);
        msg::UserauthFailure { methods, partial_success: partial }.encode(&mut p);
        ctx.out.send(&p, &mut ctx.shared.rng);
    }

    /// Refuses without asking the application (bad signature, unknown
    /// method, a method not offered).
    fn refuse(&mut self, counts: bool, ctx: &mut Ctx<'_>) -> Step {
        self.send_failure(false, ctx);
        self.count_failure(counts)
    }

    fn count_failure(&mut self, counts: bool) -> Step {
        if counts {
            self.failures += 1;
            if self.failures >= self.max_failures {
                return Step::Close {
                    reason: CloseReason::TooManyAuthFailures { failures: self.failures },
                    code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE,
                    description: "too many authentication failures".into(),
                };
            }
        }
        Step::Continue
    }

    fn ask(&mut self, user: &str, kind: Kind, counts: bool, method: AuthMethod, ctx: &mut Ctx<'_>) -> Step {
        ctx.shared.next_id += 1;
        let id = ctx.shared.next_id;
        ctx.shared.events.push_back(Event::AuthRequest { id, user: user.to_owned(), method });
        self.decision = Some(Pending { id, user: user.to_owned(), kind, counts });
        Step::Continue
    }

    /// Handles an authentication message from the client.
    pub(crate) fn handle(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        let n = payload[0];
        if self.decision.is_some() {
            if self.queued.len() >= MAX_QUEUED_REQUESTS {
                return Err(Error::AuthProtocol {
                    what: format!("more than {MAX_QUEUED_REQUESTS} authentication messages pipelined"),
                });
            }
            self.queued.push_back(payload.to_vec());
            return Ok(Step::Continue);
        }
        match n {
            msg::USERAUTH_REQUEST if !self.done => {}
            msg::USERAUTH_REQUEST => return Ok(Step::Continue), // RFC 4252 §5.1: ignore after success
            msg::USERAUTH_INFO_RESPONSE if self.info.is_some() => return self.info_response(payload, ctx),
            _ => {
                return Err(Error::UnexpectedMessage {
                    number: n,
                    message: msg::name(n),
                    phase: "to a server in authentication",
                });
            }
        }
        // A new request abandons a keyboard-interactive exchange (RFC 4256 §3.4).
        self.info = None;
        // The method's own fields are decoded only once the method is known
        // to be offered: others are refused whatever they carry.
        let head = msg::UserauthRequest::decode_head(payload).map_err(malformed)?;
        let (user, service, method) = (head.user.to_owned(), head.service, head.method);
        if service != SERVICE_CONNECTION {
            return Err(Error::ServiceNotAvailable { service: service.to_owned() });
        }
        let first_request = match &self.identity {
            None => {
                self.identity = Some((user.clone(), service.to_owned()));
                true
            }
            Some((first_user, first_service)) if *first_user == user && first_service == service => false,
            Some((first_user, first_service)) => {
                return Err(Error::AuthProtocol {
                    what: format!(
                        "change of user name or service not allowed: ({first_user:?}, {first_service:?}) -> ({user:?}, {service:?})"
                    ),
                });
            }
        };
        self.send_banner(ctx);
        // MaxAuthTries as OpenSSH counts it: every refused request, key
        // queries included, except a first `none` (the method list probe).
        let counts = !(first_request && method == "none");
        // Methods we do not offer (now) are refused without asking.
        if method != "none" && !self.methods.iter().any(|m| m == method) {
            return Ok(self.refuse(counts, ctx));
        }
        let step = match head.finish().map_err(malformed)? {
            AuthRequestMethod::None => self.ask(&user, Kind::None, counts, AuthMethod::None, ctx),
            AuthRequestMethod::Password { password, new_password } => {
                let password = Secret::new(password);
                let new_password = new_password.map(Secret::new);
                self.ask(&user, Kind::Password, counts, AuthMethod::Password { password, new_password }, ctx)
            }
            AuthRequestMethod::PublicKey { algorithm: alg_name, key: blob, signature: sig } => {
                let (Some(alg), Ok(key)) =
                    (SignatureAlgorithm::from_name(alg_name), keys::parse_public_key(blob))
                else {
                    return Ok(self.refuse(counts, ctx));
                };
                if !alg.fits_key(key.key_data()) || !self.key_algorithms.contains(&alg) {
                    return Ok(self.refuse(counts, ctx));
                }
                match sig {
                    None => {
                        let kind = Kind::PublicKeyQuery { alg, blob: blob.to_vec() };
                        self.ask(
                            &user,
                            kind,
                            counts,
                            AuthMethod::PublicKey { key, algorithm: alg, verified: false },
                            ctx,
                        )
                    }
                    Some(sig) => {
                        let data = publickey_signed_data(&ctx.session_id, &user, alg, blob);
                        if keys::verify(&key, alg, sig, &data).is_err() {
                            return Ok(self.refuse(counts, ctx));
                        }
                        self.ask(
                            &user,
                            Kind::PublicKeySigned,
                            counts,
                            AuthMethod::PublicKey { key, algorithm: alg, verified: true },
                            ctx,
                        )
                    }
                }
            }
            AuthRequestMethod::KeyboardInteractive { submethods, .. } => {
                let submethods = String::from_utf8_lossy(submethods).into_owned();
                self.ask(
                    &user,
                    Kind::KeyboardInteractive,
                    counts,
                    AuthMethod::KeyboardInteractive { submethods },
                    ctx,
                )
            }
            // hostbased, gssapi-*, anything else we do not implement (even
            // if the application listed it).
            AuthRequestMethod::Other { .. } => self.refuse(counts, ctx),
        };
        Ok(step)
    }

    fn info_response(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        let m = |reason| Error::Malformed {
            message: <msg::UserauthInfoResponse<'_> as Message<'_>>::NAME,
            reason,
        };
        let (pending, expected) = self.info.take().expect("checked by caller");
        // The count is checked before the responses are read.
        let head = msg::UserauthInfoResponse::decode_head(payload).map_err(m)?;
        let count = head.count as usize;
        if count != expected {
            return Err(Error::AuthProtocol {
                what: format!("keyboard-interactive: {count} answers to {expected} prompts"),
            });
        }
        let answers = head.finish().map_err(m)?.responses.into_iter().map(Secret::new).collect();
        ctx.shared.events.push_back(Event::AuthInfoResponse { id: pending.id, answers });
        self.decision = Some(pending);
        Ok(Step::Continue)
    }

    fn take(&mut self, id: u64) -> Result<Pending, Error> {
        match &self.decision {
            Some(p) if p.id == id => Ok(self.decision.take().expect("checked")),
            _ => Err(Error::UnknownId { what: "authentication request", id }),
        }
    }

    // ------------------------------------------------------------ commands

    /// Accepts: SUCCESS, or PK_OK for a publickey query.
    pub(crate) fn accept(&mut self, id: u64, ctx: &mut Ctx<'_>) -> Result<Step, Error> {
        let p = self.take(id)?;
        if let Kind::PublicKeyQuery { alg, blob } = &p.kind {
            let mut out = Vec::with_capacity(blob.len() + 32);
            msg::UserauthPkOk { algorithm: alg.name(), key: blob }.encode(&mut out);
            ctx.out.send(&out, &mut ctx.shared.rng);
            return Ok(Step::Continue);
        }
        ctx.out.send(&msg::UserauthSuccess.to_payload(), &mut ctx.shared.rng);
        self.done = true;
        Ok(Step::Authenticated { user: p.user, method: p.kind.method().to_owned() })
    }

    /// Refuses. `methods`, if given, replaces the list of methods that can continue.
    pub(crate) fn reject(
        &mut self,
        id: u64,
        methods: Option<Vec<String>>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let p = self.take(id)?;
        if let Some(m) = methods {
            self.methods = m;
        }
        self.send_failure(false, ctx);
        Ok(self.count_failure(p.counts))
    }

    /// This factor succeeded; the client must continue with `methods`.
    pub(crate) fn partial_success(
        &mut self,
        id: u64,
        methods: Vec<String>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let p = self.take(id)?;
        if matches!(p.kind, Kind::None | Kind::PublicKeyQuery { .. }) {
            self.decision = Some(p);
            return Err(Error::InvalidState {
                what: "partial success needs a completed attempt, not none or a key query",
            });
        }
        self.methods = methods;
        self.send_failure(true, ctx);
        Ok(Step::Continue)
    }

    /// Password expired: ask the client for a new one (SSH_MSG_USERAUTH_PASSWD_CHANGEREQ).
    pub(crate) fn request_password_change(
        &mut self,
        id: u64,
        prompt: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let p = self.take(id)?;
        if p.kind != Kind::Password {
            self.decision = Some(p);
            return Err(Error::InvalidState { what: "a password change answers a password request" });
        }
        let mut out = Vec::with_capacity(prompt.len() + 16);
        msg::UserauthPasswdChangereq { prompt: prompt.as_bytes(), language: b"" }.encode(&mut out);
        ctx.out.send(&out, &mut ctx.shared.rng);
        Ok(Step::Continue)
    }

    /// keyboard-interactive: send prompts; the answers come as `Event::AuthInfoResponse` with the same id.
    pub(crate) fn info_request(
        &mut self,
        id: u64,
        name: &str,
        instruction: &str,
        prompts: &[Prompt],
        ctx: &mut Ctx<'_>,
    ) -> Result<Step, Error> {
        let p = self.take(id)?;
        if p.kind != Kind::KeyboardInteractive || prompts.len() > MAX_PROMPTS {
            self.decision = Some(p);
            return Err(Error::InvalidState {
                what: "info requests answer keyboard-interactive, with at most 64 prompts",
            });
        }
        let request = msg::UserauthInfoRequest {
            name: name.as_bytes(),
            instruction: instruction.as_bytes(),
            language: b"",
            prompts: prompts
                .iter()
                .map(|p| msg::InfoPrompt { prompt: p.text.as_bytes(), echo: p.echo })
                .collect(),
        };
        let mut out = Vec::with_capacity(128);
        request.encode(&mut out);
        ctx.out.send(&out, &mut ctx.shared.rng);
        self.info = Some((p, prompts.len()));
        Ok(Step::Continue)
    }
}
