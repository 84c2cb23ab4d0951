//! In-memory user authentication, both roles, over a fragmenting link.

use proptest::prelude::*;
use sansh::auth::AuthMethod;
use sansh::testing::{EventHook, LinkConfig, Pair, accept_policy, host_key, keys};
use sansh::wire::{DecodeError, Writer, msg};
use sansh::{
    AuthOutcome, ClientConfig, CloseReason, Credential, DisconnectCode, Duration, Error, Event,
    HostKeyAlgorithm, Prompt, Role, Secret, ServerConfig, SignatureAlgorithm, load_private_key,
};

const USER_KEY_ENCRYPTED: &str = include_str!("../src/testing/keys/user_ed25519_encrypted");
const PASSPHRASE: &[u8] = b"sansh test passphrase";

fn key(pem: &str) -> ssh_key::PrivateKey {
    load_private_key(pem, None).unwrap()
}

fn server_config() -> ServerConfig {
    ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() }
}

fn pair_with(client: ClientConfig, server: ServerConfig, max_fragment: usize, seed: u64) -> Pair {
    Pair::new(client, server, LinkConfig::fragmenting(max_fragment), seed).unwrap()
}

fn client_close(p: &Pair) -> Option<CloseReason> {
    p.events(Role::Client).into_iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn server_close(p: &Pair) -> Option<CloseReason> {
    p.events(Role::Server).into_iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn attempts(p: &Pair) -> Vec<sansh::AuthAttempt> {
    p.events(Role::Client)
        .into_iter()
        .filter_map(|e| match e {
            Event::AuthProgress(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// Records what the server saw (user, method, algorithm) and applies `decide`.
fn server_log_policy(
    decide: impl Fn(&AuthMethod) -> bool + 'static,
    seen: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
) -> EventHook {
    Box::new(move |conn, e| {
        if let Event::AuthRequest { id, user, method } = e {
            let desc = match method {
                AuthMethod::PublicKey { algorithm, verified, .. } => {
                    format!("{user} publickey {} verified={verified}", algorithm.name())
                }
                m => format!("{user} {}", m.name()),
            };
            seen.borrow_mut().push(desc);
            let r = if decide(method) { conn.auth_accept(*id) } else { conn.auth_reject(*id, None) };
            r.unwrap();
        }
    })
}

/// Authenticates with `cred` against a server accepting every key and the
/// password "hunter2", over the given link; returns the client's method.
fn authenticate_with(cred: Credential, max_fragment: usize, seed: u64) -> Result<String, String> {
    let client = ClientConfig::new("alice", vec![cred]);
    let mut p = pair_with(client, server_config(), max_fragment, seed);
    p.on_server_event = Some(accept_policy("hunter2"));
    p.authenticate()?;
    assert_eq!(p.client.state(), sansh::State::Active);
    assert_eq!(p.server.user(), Some("alice"));
    p.events(Role::Client)
        .into_iter()
        .find_map(|e| match e {
            Event::Authenticated { method, .. } => Some(method.clone()),
            _ => None,
        })
        .ok_or_else(|| "no Authenticated event".into())
}

#[test]
fn publickey_with_every_key_type() {
    for (pem, expected_alg) in [
        (keys::ED25519, "ssh-ed25519"),
        (keys::ECDSA_P256, "ecdsa-sha2-nistp256"),
        (keys::ECDSA_P384, "ecdsa-sha2-nistp384"),
        (keys::ECDSA_P521, "ecdsa-sha2-nistp521"),
        (keys::RSA, "rsa-sha2-512"),
    ] {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let client = ClientConfig::new("alice", vec![Credential::PrivateKey(key(pem))]);
        let mut p = pair_with(client, server_config(), 13, 1);
        p.on_server_event = Some(server_log_policy(|m| !matches!(m, AuthMethod::None), seen.clone()));
        p.authenticate().unwrap();
        // Query first (no signature), then the signed request, verified by the core.
        assert_eq!(
            *seen.borrow(),
            vec![
                "alice none".to_string(),
                format!("alice publickey {expected_alg} verified=false"),
                format!("alice publickey {expected_alg} verified=true"),
            ]
        );
    }
}

#[test]
fn rsa_signature_algorithm_follows_server_sig_algs() {
    use SignatureAlgorithm::{RsaSha1, RsaSha256, RsaSha512};
    let cases = [
        (vec![RsaSha256], false, Some("rsa-sha2-256")),
        (vec![RsaSha512, RsaSha256], false, Some("rsa-sha2-512")),
        // Only SHA-1 on offer: refused unless allowed.
        (vec![RsaSha1], false, None),
        (vec![RsaSha1], true, Some("ssh-rsa")),
    ];
    for (server_algs, allow_sha1, expected) in cases {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut client = ClientConfig::new("bob", vec![Credential::PrivateKey(key(keys::RSA))]);
        if allow_sha1 {
            client.user_key_algorithms.push(RsaSha1);
        }
        let server = ServerConfig { user_key_algorithms: server_algs.clone(), ..server_config() };
        let mut p = pair_with(client, server, 0, 2);
        p.on_server_event = Some(server_log_policy(|m| !matches!(m, AuthMethod::None), seen.clone()));
        match expected {
            Some(alg) => {
                p.authenticate().unwrap();
                assert!(seen.borrow().contains(&format!("bob publickey {alg} verified=true")), "{seen:?}");
            }
            None => {
                p.run_idle(p.now + Duration::from_secs(10));
                let Some(CloseReason::AuthFailed { attempts, .. }) = client_close(&p) else {
                    panic!("expected AuthFailed, got {:?}", client_close(&p));
                };
                assert!(
                    matches!(&attempts[0].outcome, AuthOutcome::Skipped { reason } if reason.contains("accepts none of [rsa-sha2-512,rsa-sha2-256]")),
                    "{attempts:?}"
                );
            }
        }
    }
}

#[test]
fn encrypted_key_with_passphrase() {
    let k = load_private_key(USER_KEY_ENCRYPTED, Some(PASSPHRASE)).unwrap();
    assert_eq!(authenticate_with(Credential::PrivateKey(k), 5, 3).unwrap(), "publickey");
}

#[test]
fn password_right_and_wrong() {
    assert_eq!(authenticate_with(Credential::Password("hunter2".into()), 3, 4).unwrap(), "password");

    let client = ClientConfig::new("alice", vec![Credential::Password("wrong".into())]);
    let mut p = pair_with(client, server_config(), 3, 4);
    p.on_server_event = Some(accept_policy("hunter2"));
    p.run_idle(p.now + Duration::from_secs(10));
    let reason = client_close(&p).expect("client closed");
    let CloseReason::AuthFailed { offered, attempts } = &reason else { panic!("{reason:?}") };
    assert_eq!(offered, &["publickey", "password", "keyboard-interactive"]);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].method, "password");
    assert!(matches!(attempts[0].outcome, AuthOutcome::Rejected { .. }));
    let text = reason.to_string();
    assert!(text.contains("server offers publickey,password,keyboard-interactive"), "{text}");
    assert!(text.contains("password: rejected"), "{text}");
    // The server was told why we left.
    assert!(matches!(
        server_close(&p),
        Some(CloseReason::PeerDisconnect { code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE, .. })
    ));
}

#[test]
fn password_prompt_and_change_request() {
    let client = ClientConfig::new("carol", vec![Credential::PasswordPrompt]);
    let mut p = pair_with(client, server_config(), 7, 5);
    p.on_client_event = Some(Box::new(|conn, e| match e {
        Event::PasswordRequest { id, user } => {
            assert_eq!(user, "carol");
            conn.provide_password(*id, Some("old-pw".into())).unwrap();
        }
        Event::PasswordChangeRequest { id, prompt } => {
            assert_eq!(prompt, "Your password has expired");
            conn.change_password(*id, Some("new-pw".into())).unwrap();
        }
        _ => {}
    }));
    p.on_server_event = Some(Box::new(|conn, e| {
        if let Event::AuthRequest { id, method, .. } = e {
            match method {
                AuthMethod::Password { password, new_password: None } if password.expose() == "old-pw" => {
                    conn.auth_request_password_change(*id, "Your password has expired").unwrap()
                }
                AuthMethod::Password { password, new_password: Some(n) } => {
                    assert_eq!(password.expose(), "old-pw");
                    assert_eq!(n.expose(), "new-pw");
                    conn.auth_accept(*id).unwrap()
                }
                _ => conn.auth_reject(*id, None).unwrap(),
            }
        }
    }));
    p.authenticate().unwrap();
}

#[test]
fn keyboard_interactive_prompts_and_answers() {
    let client = ClientConfig::new("dave", vec![Credential::KeyboardInteractive]);
    let mut p = pair_with(client, server_config(), 2, 6);
    p.on_client_event = Some(Box::new(|conn, e| {
        if let Event::KeyboardInteractive { id, name, instruction, prompts } = e {
            assert_eq!(name, "2FA");
            assert_eq!(instruction, "answer both");
            assert_eq!(prompts.len(), 2);
            assert!(!prompts[0].echo && prompts[1].echo);
            conn.answer_keyboard_interactive(*id, Some(vec!["pw".into(), "123456".into()])).unwrap();
        }
    }));
    p.on_server_event = Some(Box::new(|conn, e| match e {
        Event::AuthRequest { id, method: AuthMethod::KeyboardInteractive { .. }, .. } => {
            let prompts = [
                Prompt { text: "Password: ".into(), echo: false },
                Prompt { text: "Code: ".into(), echo: true },
            ];
            conn.auth_info_request(*id, "2FA", "answer both", &prompts).unwrap();
        }
        Event::AuthInfoResponse { id, answers } => {
            let ok = answers.iter().map(Secret::expose).collect::<Vec<_>>() == ["pw", "123456"];
            if ok { conn.auth_accept(*id).unwrap() } else { conn.auth_reject(*id, None).unwrap() }
        }
        Event::AuthRequest { id, .. } => conn.auth_reject(*id, None).unwrap(),
        _ => {}
    }));
    p.authenticate().unwrap();
}

#[test]
fn external_signer() {
    let private = key(keys::ECDSA_P256);
    let public = private.public_key().clone();
    let client = ClientConfig::new("erin", vec![Credential::ExternalKey(public.clone())]);
    let mut p = pair_with(client, server_config(), 11, 7);
    let mut rng = sansh::Rng::from_u64(9);
    p.on_client_event = Some(Box::new(move |conn, e| {
        if let Event::SignRequest { id, key, algorithm, data } = e {
            assert_eq!(key, &public);
            // What an agent does: sign the data with the key it holds.
            let sig = sansh::keys::sign(&private, *algorithm, data, &mut rng).unwrap();
            conn.provide_signature(*id, Some(&sig)).unwrap();
        }
    }));
    p.on_server_event = Some(accept_policy(""));
    p.authenticate().unwrap();
}

#[test]
fn first_key_refused_falls_through_to_second() {
    let refused = key(keys::ED25519);
    let accepted = key(keys::ECDSA_P384);
    let accepted_pub = accepted.public_key().clone();
    let client =
        ClientConfig::new("frank", vec![Credential::PrivateKey(refused), Credential::PrivateKey(accepted)]);
    let mut p = pair_with(client, server_config(), 9, 8);
    p.on_server_event = Some(Box::new(move |conn, e| {
        if let Event::AuthRequest { id, method, .. } = e {
            let ok = matches!(method, AuthMethod::PublicKey { key, .. } if key.key_data() == accepted_pub.key_data());
            if ok { conn.auth_accept(*id).unwrap() } else { conn.auth_reject(*id, None).unwrap() }
        }
    }));
    p.authenticate().unwrap();
    let a = attempts(&p);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(
        a[0].detail.starts_with("ssh-ed25519 SHA256:")
            && matches!(a[0].outcome, AuthOutcome::Rejected { .. })
    );
    assert!(a[1].detail.starts_with("ecdsa-sha2-nistp384") && a[1].outcome == AuthOutcome::Success);
}

#[test]
fn partial_success_then_second_factor() {
    // The server wants a key, then a password (OpenSSH AuthenticationMethods
    // "publickey,password"). The client lists the password first: it must
    // wait until the server offers password.
    let client = ClientConfig::new(
        "gina",
        vec![Credential::Password("hunter2".into()), Credential::PrivateKey(key(keys::ED25519))],
    );
    let server = ServerConfig { auth_methods: vec!["publickey".into()], ..server_config() };
    let mut p = pair_with(client, server, 6, 9);
    p.on_server_event = Some(Box::new(|conn, e| {
        if let Event::AuthRequest { id, method, .. } = e {
            match method {
                AuthMethod::PublicKey { verified: false, .. } => conn.auth_accept(*id).unwrap(),
                AuthMethod::PublicKey { verified: true, .. } => {
                    conn.auth_partial_success(*id, vec!["password".into()]).unwrap()
                }
                AuthMethod::Password { password, .. } if password.expose() == "hunter2" => {
                    conn.auth_accept(*id).unwrap()
                }
                _ => conn.auth_reject(*id, None).unwrap(),
            }
        }
    }));
    p.authenticate().unwrap();
    let a = attempts(&p);
    assert!(
        matches!(&a[0].outcome, AuthOutcome::PartialSuccess { remaining } if remaining == &["password"]),
        "{a:?}"
    );
    assert_eq!(a[1].method, "password");
    assert_eq!(a[1].outcome, AuthOutcome::Success);
}

#[test]
fn banner_reaches_the_client() {
    let client = ClientConfig::new("hal", vec![Credential::Password("hunter2".into())]);
    let server = ServerConfig { banner: Some("Authorised use only\n".into()), ..server_config() };
    let mut p = pair_with(client, server, 4, 10);
    p.on_server_event = Some(accept_policy("hunter2"));
    p.authenticate().unwrap();
    assert!(
        p.events(Role::Client)
            .iter()
            .any(|e| matches!(e, Event::AuthBanner { message, .. } if message == "Authorised use only\n"))
    );
}

#[test]
fn server_attempt_limit_closes_with_the_right_reason() {
    let creds = (0..10).map(|i| Credential::Password(format!("guess{i}").into())).collect();
    let client = ClientConfig::new("mallory", creds);
    let server = ServerConfig { max_auth_failures: 3, ..server_config() };
    let mut p = pair_with(client, server, 0, 11);
    p.on_server_event = Some(accept_policy("hunter2"));
    p.run_idle(p.now + Duration::from_secs(30));
    assert_eq!(server_close(&p), Some(CloseReason::TooManyAuthFailures { failures: 3 }));
    assert!(matches!(
        client_close(&p),
        Some(CloseReason::PeerDisconnect { code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE, ref description })
            if description.contains("too many authentication failures")
    ));
    assert_eq!(attempts(&p).len(), 3);
}

#[test]
fn server_auth_timeout_closes_with_the_right_reason() {
    // The client waits forever for a password nobody types.
    let client = ClientConfig::new("slow", vec![Credential::PasswordPrompt]);
    let server = ServerConfig { auth_timeout: Some(Duration::from_secs(30)), ..server_config() };
    let mut p = pair_with(client, server, 0, 12);
    p.on_server_event = Some(accept_policy("hunter2"));
    p.run_idle(p.now + Duration::from_secs(120));
    assert_eq!(server_close(&p), Some(CloseReason::AuthTimeout));
    let closed_at = p.server_events.iter().find(|(_, e)| matches!(e, Event::Closed { .. })).unwrap().0;
    assert_eq!(closed_at, sansh::Timestamp::from_secs(30));
    assert!(matches!(client_close(&p), Some(CloseReason::PeerDisconnect { .. })));
}

// ------------------------------------------------------------ bad input

/// A server that injects `payload` instead of answering the first request
/// matching `when`.
fn hostile_server(when: impl Fn(&Event) -> bool + 'static, payload: Vec<u8>) -> EventHook {
    hostile_server_then(when, payload, false)
}

/// Same, and with `answer_too` the request is also answered normally after the injection.
fn hostile_server_then(
    when: impl Fn(&Event) -> bool + 'static,
    payload: Vec<u8>,
    answer_too: bool,
) -> EventHook {
    let mut done = false;
    Box::new(move |conn, e| {
        if !done && when(e) {
            done = true;
            conn.inject_payload(&payload);
            if !answer_too {
                return;
            }
        }
        if let Event::AuthRequest { id, method, .. } = e {
            let _ = match method {
                AuthMethod::None => conn.auth_reject(*id, None),
                _ => conn.auth_accept(*id),
            };
        }
    })
}

fn client_error(p: &Pair) -> Error {
    match client_close(p) {
        Some(CloseReason::Error(e)) => e,
        other => panic!("expected a protocol error, got {other:?}; errors {:?}", p.client_errors),
    }
}

#[test]
fn userauth_success_before_any_attempt_is_a_protocol_error() {
    // Before the key exchange even finished.
    let client = ClientConfig::new("u", vec![Credential::Password("x".into())]);
    let mut p = pair_with(client, server_config(), 5, 13);
    p.on_server_event =
        Some(hostile_server(|e| matches!(e, Event::StateChanged { state: sansh::State::Kex }), vec![52]));
    p.run_idle(p.now + Duration::from_secs(10));
    let e = client_error(&p);
    assert!(matches!(e, Error::UnexpectedMessage { number: 52, .. }), "{e:?}");
    assert!(!p.events(Role::Client).iter().any(|e| matches!(e, Event::Authenticated { .. })));
}

#[test]
fn userauth_success_with_no_request_outstanding_is_a_protocol_error() {
    // The server refuses `none`, so the client asks its application for a
    // password and has no request in flight; a SUCCESS right behind the
    // FAILURE then answers nothing.
    let client = ClientConfig::new("u", vec![Credential::PasswordPrompt]);
    let mut p = pair_with(client, server_config(), 5, 13);
    let asked = std::rc::Rc::new(std::cell::Cell::new(false));
    let asked_in_hook = asked.clone();
    p.on_client_event = Some(Box::new(move |_, e| {
        if matches!(e, Event::PasswordRequest { .. }) {
            asked_in_hook.set(true); // and never answered
        }
    }));
    p.on_server_event = Some(Box::new(|conn, e| {
        if let Event::AuthRequest { id, method: AuthMethod::None, .. } = e {
            conn.auth_reject(*id, None).unwrap();
            conn.inject_payload(&[msg::USERAUTH_SUCCESS]);
        }
    }));
    p.run_idle(p.now + Duration::from_secs(10));
    assert!(asked.get(), "the client should have been waiting for its password");
    let e = client_error(&p);
    assert!(
        matches!(
            e,
            Error::UnexpectedMessage { number: 52, phase: "with no authentication request outstanding", .. }
        ),
        "{e:?}"
    );
    assert!(!p.events(Role::Client).iter().any(|e| matches!(e, Event::Authenticated { .. })));
}

#[test]
fn pk_ok_for_a_key_not_offered_is_refused() {
    let client = ClientConfig::new("u", vec![Credential::PrivateKey(key(keys::ED25519))]);
    let other = key(keys::ECDSA_P256).public_key().to_bytes().unwrap();
    let mut pk_ok = vec![60];
    pk_ok.extend_from_slice(&(19u32).to_be_bytes());
    pk_ok.extend_from_slice(b"ecdsa-sha2-nistp256");
    pk_ok.extend_from_slice(&(other.len() as u32).to_be_bytes());
    pk_ok.extend_from_slice(&other);
    let mut p = pair_with(client, server_config(), 5, 14);
    p.on_server_event = Some(hostile_server(
        |e| matches!(e, Event::AuthRequest { method: AuthMethod::PublicKey { verified: false, .. }, .. }),
        pk_ok,
    ));
    p.run_idle(p.now + Duration::from_secs(10));
    let e = client_error(&p);
    assert!(
        matches!(&e, Error::AuthProtocol { what } if what.contains("PK_OK for a key we did not offer")),
        "{e:?}"
    );
}

#[test]
fn info_request_with_too_many_prompts_is_refused() {
    let client = ClientConfig::new("u", vec![Credential::KeyboardInteractive]);
    let mut req = vec![60];
    for s in ["name", "instr", ""] {
        req.extend_from_slice(&(s.len() as u32).to_be_bytes());
        req.extend_from_slice(s.as_bytes());
    }
    req.extend_from_slice(&1_000_000u32.to_be_bytes());
    let mut p = pair_with(client, server_config(), 5, 15);
    p.on_server_event = Some(hostile_server(
        |e| matches!(e, Event::AuthRequest { method: AuthMethod::KeyboardInteractive { .. }, .. }),
        req,
    ));
    p.run_idle(p.now + Duration::from_secs(10));
    let e = client_error(&p);
    assert!(matches!(&e, Error::AuthProtocol { what } if what.contains("1000000 prompts")), "{e:?}");
}

#[test]
fn malformed_banner_is_refused() {
    let client = ClientConfig::new("u", vec![Credential::Password("x".into())]);
    // Claims 100 bytes of message, carries 3.
    let banner = vec![53, 0, 0, 0, 100, b'a', b'b', b'c'];
    let mut p = pair_with(client, server_config(), 5, 16);
    p.on_server_event = Some(hostile_server(|e| matches!(e, Event::AuthRequest { .. }), banner));
    p.run_idle(p.now + Duration::from_secs(10));
    let e = client_error(&p);
    assert!(matches!(e, Error::Malformed { message: "USERAUTH_BANNER", .. }), "{e:?}");
    // Exactly one Closed on each side, and the server heard why.
    let closes = p.events(Role::Client).iter().filter(|e| matches!(e, Event::Closed { .. })).count();
    assert_eq!(closes, 1);
    assert!(matches!(
        server_close(&p),
        Some(CloseReason::PeerDisconnect { code: DisconnectCode::PROTOCOL_ERROR, .. })
    ));
}

#[test]
fn server_refuses_bad_signatures_without_asking() {
    // A client whose signature is garbage: the core refuses it, the
    // application never sees a verified request.
    let private = key(keys::ED25519);
    let client = ClientConfig::new("u", vec![Credential::ExternalKey(private.public_key().clone())]);
    let mut p = pair_with(client, server_config(), 3, 17);
    p.on_client_event = Some(Box::new(|conn, e| {
        if let Event::SignRequest { id, .. } = e {
            let mut sig = Vec::new();
            sig.extend_from_slice(&11u32.to_be_bytes());
            sig.extend_from_slice(b"ssh-ed25519");
            sig.extend_from_slice(&64u32.to_be_bytes());
            sig.extend_from_slice(&[7u8; 64]);
            conn.provide_signature(*id, Some(&sig)).unwrap();
        }
    }));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    p.on_server_event = Some(server_log_policy(|m| !matches!(m, AuthMethod::None), seen.clone()));
    p.run_idle(p.now + Duration::from_secs(10));
    assert!(seen.borrow().iter().all(|s| !s.contains("verified=true")), "{seen:?}");
    assert!(matches!(client_close(&p), Some(CloseReason::AuthFailed { .. })));
}

// ------------------------------------------------------------ password changes

/// A server whose users must change "old-pw"; it refuses new passwords
/// shorter than 8 characters with another change request (RFC 4252 §8).
fn password_changing_server(prompts: std::rc::Rc<std::cell::RefCell<Vec<String>>>) -> EventHook {
    Box::new(move |conn, e| {
        if let Event::AuthRequest { id, method, .. } = e {
            match method {
                AuthMethod::Password { password, new_password: None } if password.expose() == "old-pw" => {
                    conn.auth_request_password_change(*id, "Your password has expired").unwrap()
                }
                AuthMethod::Password { password, new_password: Some(n) } if password.expose() == "old-pw" => {
                    prompts.borrow_mut().push(n.expose().to_owned());
                    if n.expose().len() < 8 {
                        conn.auth_request_password_change(*id, "New password not acceptable").unwrap()
                    } else {
                        conn.auth_accept(*id).unwrap()
                    }
                }
                _ => conn.auth_reject(*id, None).unwrap(),
            }
        }
    })
}

#[test]
fn refused_new_password_is_asked_for_again() {
    let client = ClientConfig::new("carol", vec![Credential::Password("old-pw".into())]);
    let mut p = pair_with(client, server_config(), 7, 21);
    let asked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let asked_in_hook = asked.clone();
    let mut answers = vec!["short", "long enough"].into_iter();
    p.on_client_event = Some(Box::new(move |conn, e| {
        if let Event::PasswordChangeRequest { id, prompt } = e {
            asked_in_hook.borrow_mut().push(prompt.clone());
            conn.change_password(*id, answers.next().map(Secret::from)).unwrap();
        }
    }));
    let offered = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    p.on_server_event = Some(password_changing_server(offered.clone()));
    p.authenticate().unwrap();
    assert_eq!(*asked.borrow(), ["Your password has expired", "New password not acceptable"]);
    // The second change carried the old password again (the server checks it).
    assert_eq!(*offered.borrow(), ["short", "long enough"]);
    assert!(
        p.events(Role::Client)
            .iter()
            .any(|e| matches!(e, Event::Authenticated { method, .. } if method == "password"))
    );
}

#[test]
fn giving_up_after_a_refused_new_password_closes_cleanly() {
    let client = ClientConfig::new("carol", vec![Credential::Password("old-pw".into())]);
    let mut p = pair_with(client, server_config(), 7, 22);
    let mut answers = vec![Some("short")].into_iter();
    p.on_client_event = Some(Box::new(move |conn, e| {
        if let Event::PasswordChangeRequest { id, .. } = e {
            // First a weak password, then nothing: give up.
            let answer = answers.next().flatten().map(Secret::from);
            conn.change_password(*id, answer).unwrap();
        }
    }));
    p.on_server_event = Some(password_changing_server(Default::default()));
    p.run_idle(p.now + Duration::from_secs(10));
    let Some(CloseReason::AuthFailed { attempts, .. }) = client_close(&p) else {
        panic!("expected AuthFailed, got {:?}; errors {:?}", client_close(&p), p.client_errors);
    };
    assert!(
        matches!(&attempts[..], [a] if a.method == "password"
            && matches!(&a.outcome, AuthOutcome::Skipped { reason } if reason == "password change declined")),
        "{attempts:?}"
    );
    assert!(matches!(
        server_close(&p),
        Some(CloseReason::PeerDisconnect { code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE, .. })
    ));
}

// ------------------------------------------------------------ the server's rules

#[test]
fn refused_key_queries_count_towards_the_attempt_limit() {
    // Twelve keys the server does not know: without the limit a client could
    // probe keys until the auth timeout.
    let creds = (0..12)
        .map(|i| {
            let k = ssh_key::PrivateKey::random(&mut sansh::Rng::from_u64(i), ssh_key::Algorithm::Ed25519);
            Credential::PrivateKey(k.unwrap())
        })
        .collect();
    let client = ClientConfig::new("mallory", creds);
    let server = ServerConfig { max_auth_failures: 3, ..server_config() };
    let mut p = pair_with(client, server, 0, 23);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    p.on_server_event = Some(server_log_policy(|_| false, seen.clone()));
    p.run_idle(p.now + Duration::from_secs(30));
    assert_eq!(server_close(&p), Some(CloseReason::TooManyAuthFailures { failures: 3 }));
    assert!(matches!(
        client_close(&p),
        Some(CloseReason::PeerDisconnect { code: DisconnectCode::NO_MORE_AUTH_METHODS_AVAILABLE, ref description })
            if description.contains("too many authentication failures")
    ));
    // The free `none`, then three refused queries: no fourth key was heard.
    let queries = seen.borrow().iter().filter(|s| s.contains("publickey")).count();
    assert_eq!(queries, 3, "{seen:?}");
    assert_eq!(attempts(&p).len(), 3);
}

#[test]
fn only_the_first_none_is_free() {
    // A client probing with `none` again and again (injected: ours sends it once).
    let client = ClientConfig::new("mallory", vec![Credential::PasswordPrompt]);
    let server = ServerConfig { max_auth_failures: 2, ..server_config() };
    let mut p = pair_with(client, server, 0, 24);
    let mut none = Vec::new();
    none.put_u8(msg::USERAUTH_REQUEST);
    none.put_str("mallory");
    none.put_str("ssh-connection");
    none.put_str("none");
    p.on_client_event = Some(Box::new(move |conn, e| {
        if matches!(e, Event::PasswordRequest { .. }) {
            for _ in 0..5 {
                conn.inject_payload(&none);
            }
        }
    }));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    p.on_server_event = Some(server_log_policy(|_| false, seen.clone()));
    p.run_idle(p.now + Duration::from_secs(30));
    assert_eq!(server_close(&p), Some(CloseReason::TooManyAuthFailures { failures: 2 }));
    // The first `none` and two more, the last of which reached the limit.
    assert_eq!(*seen.borrow(), ["mallory none"; 3]);
}

fn userauth_request(user: &str, method: &str, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_u8(msg::USERAUTH_REQUEST);
    p.put_str(user);
    p.put_str("ssh-connection");
    p.put_str(method);
    fields(&mut p);
    p
}

#[test]
fn methods_not_offered_are_refused_without_asking_the_application() {
    // The server offers only publickey; a client sending a password (and a
    // keyboard-interactive request) anyway gets FAILURE, and each counts.
    let client = ClientConfig::new("u", vec![Credential::PasswordPrompt]);
    let server =
        ServerConfig { auth_methods: vec!["publickey".into()], max_auth_failures: 2, ..server_config() };
    let mut p = pair_with(client, server, 3, 25);
    let password = userauth_request("u", "password", |p| {
        p.put_bool(false);
        p.put_str("hunter2");
    });
    let kbd = userauth_request("u", "keyboard-interactive", |p| {
        p.put_str("");
        p.put_str("");
    });
    p.on_client_event = Some(Box::new(move |conn, e| {
        // The client itself skips password (not offered): its credential
        // list runs out, so inject before that, right after the handshake.
        if matches!(e, Event::ServiceAccepted { .. }) {
            conn.inject_payload(&password);
            conn.inject_payload(&kbd);
        }
    }));
    // The application would accept anything but `none`: it must not be asked.
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    p.on_server_event = Some(server_log_policy(|m| !matches!(m, AuthMethod::None), seen.clone()));
    p.run_idle(p.now + Duration::from_secs(10));
    assert!(seen.borrow().iter().all(|s| s == "u none"), "{seen:?}");
    assert!(!p.events(Role::Server).iter().any(|e| matches!(e, Event::Authenticated { .. })));
    assert_eq!(server_close(&p), Some(CloseReason::TooManyAuthFailures { failures: 2 }));
}

#[test]
fn user_name_cannot_change_between_attempts() {
    for after_partial_success in [true, false] {
        // gina proves a key; with partial success the server wants a
        // password next, which the client sends for another user.
        let client = ClientConfig::new(
            "gina",
            vec![Credential::PrivateKey(key(keys::ED25519)), Credential::PasswordPrompt],
        );
        let mut p = pair_with(client, server_config(), 6, 26);
        let root_password = userauth_request("root", "password", |p| {
            p.put_bool(false);
            p.put_str("hunter2");
        });
        p.on_client_event = Some(Box::new(move |conn, e| {
            if matches!(e, Event::PasswordRequest { .. }) {
                conn.inject_payload(&root_password);
            }
        }));
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen_in_hook = seen.clone();
        p.on_server_event = Some(Box::new(move |conn, e| {
            if let Event::AuthRequest { id, user, method } = e {
                seen_in_hook.borrow_mut().push(format!("{user} {}", method.name()));
                match method {
                    AuthMethod::PublicKey { verified: false, .. } => conn.auth_accept(*id).unwrap(),
                    AuthMethod::PublicKey { verified: true, .. } if after_partial_success => {
                        conn.auth_partial_success(*id, vec!["password".into()]).unwrap()
                    }
                    // Root's password would be right: it must never be asked.
                    AuthMethod::Password { .. } if user == "root" => conn.auth_accept(*id).unwrap(),
                    _ => conn.auth_reject(*id, None).unwrap(),
                }
            }
        }));
        p.run_idle(p.now + Duration::from_secs(10));
        assert!(seen.borrow().iter().all(|s| s.starts_with("gina ")), "{seen:?}");
        let Some(CloseReason::Error(e)) = server_close(&p) else {
            panic!("expected a protocol error, got {:?}", server_close(&p));
        };
        assert!(
            matches!(&e, Error::AuthProtocol { what }
                if what == r#"change of user name or service not allowed: ("gina", "ssh-connection") -> ("root", "ssh-connection")"#),
            "{e:?}"
        );
        assert!(matches!(
            client_close(&p),
            Some(CloseReason::PeerDisconnect { code: DisconnectCode::PROTOCOL_ERROR, ref description })
                if description.contains("change of user name")
        ));
        assert!(!p.events(Role::Server).iter().any(|e| matches!(e, Event::Authenticated { .. })));
    }
}

// ------------------------------------------------------------ trailing bytes

/// The client's error when the hostile server sends `payload` in answer to
/// the first request matching `when`.
fn client_error_for(cred: Credential, when: impl Fn(&Event) -> bool + 'static, payload: Vec<u8>) -> Error {
    let client = ClientConfig::new("u", vec![cred]);
    let mut p = pair_with(client, server_config(), 5, 27);
    p.on_server_event = Some(hostile_server(when, payload));
    p.run_idle(p.now + Duration::from_secs(10));
    client_error(&p)
}

#[test]
fn trailing_bytes_after_pk_ok_are_refused() {
    let k = key(keys::ED25519);
    let blob = k.public_key().to_bytes().unwrap();
    let pk_ok = |extra: &[u8]| {
        let mut m = vec![msg::USERAUTH_60];
        m.put_str("ssh-ed25519");
        m.put_string(&blob);
        m.extend_from_slice(extra);
        m
    };
    let is_query = |e: &Event| {
        matches!(e, Event::AuthRequest { method: AuthMethod::PublicKey { verified: false, .. }, .. })
    };
    let e = client_error_for(Credential::PrivateKey(k.clone()), is_query, pk_ok(&[0, 0]));
    assert_eq!(e, Error::Malformed { message: "USERAUTH_PK_OK", reason: DecodeError::TrailingBytes(2) });
}

#[test]
fn trailing_bytes_after_passwd_changereq_are_refused() {
    let mut req = vec![msg::USERAUTH_60];
    req.put_str("Your password has expired");
    req.put_str("");
    req.put_u8(1);
    let is_password = |e: &Event| matches!(e, Event::AuthRequest { method: AuthMethod::Password { .. }, .. });
    let e = client_error_for(Credential::Password("x".into()), is_password, req);
    assert_eq!(
        e,
        Error::Malformed { message: "USERAUTH_PASSWD_CHANGEREQ", reason: DecodeError::TrailingBytes(1) }
    );
}

#[test]
fn trailing_bytes_after_info_request_are_refused() {
    let mut req = vec![msg::USERAUTH_60];
    req.put_str("name");
    req.put_str("instruction");
    req.put_str("");
    req.put_u32(1);
    req.put_str("Code: ");
    req.put_bool(false);
    req.put_str("surplus");
    let is_kbd =
        |e: &Event| matches!(e, Event::AuthRequest { method: AuthMethod::KeyboardInteractive { .. }, .. });
    let e = client_error_for(Credential::KeyboardInteractive, is_kbd, req);
    assert_eq!(
        e,
        Error::Malformed { message: "USERAUTH_INFO_REQUEST", reason: DecodeError::TrailingBytes(11) }
    );
}

#[test]
fn trailing_bytes_after_info_response_are_refused() {
    let client = ClientConfig::new("u", vec![Credential::KeyboardInteractive]);
    let mut p = pair_with(client, server_config(), 5, 28);
    p.on_client_event = Some(Box::new(|conn, e| {
        if let Event::KeyboardInteractive { .. } = e {
            let mut resp = vec![msg::USERAUTH_INFO_RESPONSE];
            resp.put_u32(1);
            resp.put_str("123456");
            resp.put_u32(0);
            conn.inject_payload(&resp);
        }
    }));
    let answered = std::rc::Rc::new(std::cell::Cell::new(false));
    let answered_in_hook = answered.clone();
    p.on_server_event = Some(Box::new(move |conn, e| match e {
        Event::AuthRequest { id, method: AuthMethod::KeyboardInteractive { .. }, .. } => {
            conn.auth_info_request(*id, "", "", &[Prompt { text: "Code: ".into(), echo: false }]).unwrap()
        }
        Event::AuthRequest { id, .. } => conn.auth_reject(*id, None).unwrap(),
        Event::AuthInfoResponse { .. } => answered_in_hook.set(true),
        _ => {}
    }));
    p.run_idle(p.now + Duration::from_secs(10));
    assert!(!answered.get(), "the malformed response reached the application");
    assert_eq!(
        server_close(&p),
        Some(CloseReason::Error(Error::Malformed {
            message: "USERAUTH_INFO_RESPONSE",
            reason: DecodeError::TrailingBytes(4)
        }))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Every client method, both roles, over random fragmentation.
    #[test]
    fn every_method_over_a_fragmenting_link(seed in any::<u64>(), max_fragment in 1usize..40, which in 0usize..6) {
        let signer = key(keys::ED25519);
        let cred = match which {
            0 => Credential::PrivateKey(key(keys::ED25519)),
            1 => Credential::PrivateKey(key(keys::RSA)),
            2 => Credential::PrivateKey(key(keys::ECDSA_P256)),
            3 => Credential::Password("hunter2".into()),
            4 => Credential::KeyboardInteractive,
            _ => Credential::ExternalKey(signer.public_key().clone()),
        };
        let mut p = pair_with(ClientConfig::new("zed", vec![cred]), server_config(), max_fragment, seed);
        let mut rng = sansh::Rng::from_u64(seed);
        p.on_client_event = Some(Box::new(move |conn, e| match e {
            Event::KeyboardInteractive { id, .. } => {
                conn.answer_keyboard_interactive(*id, Some(vec!["hunter2".into()])).unwrap()
            }
            Event::SignRequest { id, algorithm, data, .. } => {
                let sig = sansh::keys::sign(&signer, *algorithm, data, &mut rng).unwrap();
                conn.provide_signature(*id, Some(&sig)).unwrap();
            }
            _ => {}
        }));
        p.on_server_event = Some(Box::new(|conn, e| match e {
            Event::AuthRequest { id, method: AuthMethod::KeyboardInteractive { .. }, .. } => {
                conn.auth_info_request(*id, "", "", &[Prompt { text: "pw: ".into(), echo: false }]).unwrap()
            }
            Event::AuthInfoResponse { id, answers } if answers[0].expose() == "hunter2" => conn.auth_accept(*id).unwrap(),
            Event::AuthRequest { id, method: AuthMethod::PublicKey { .. }, .. } => conn.auth_accept(*id).unwrap(),
            Event::AuthRequest { id, method: AuthMethod::Password { password, .. }, .. } if password.expose() == "hunter2" => {
                conn.auth_accept(*id).unwrap()
            }
            Event::AuthRequest { id, .. } | Event::AuthInfoResponse { id, .. } => conn.auth_reject(*id, None).unwrap(),
            _ => {}
        }));
        p.authenticate().map_err(TestCaseError::fail)?;
        let expected = ["publickey", "publickey", "publickey", "password", "keyboard-interactive", "publickey"][which];
        let ok = p
            .events(Role::Server)
            .iter()
            .any(|e| matches!(e, Event::Authenticated { method, user } if method == expected && user == "zed"));
        prop_assert!(ok, "server did not authenticate zed with {}", expected);
    }
}
