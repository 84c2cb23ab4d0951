//! User authentication interop against OpenSSH sshd on 127.0.0.1, and a
//! server-initiated rekey once authenticated.

use std::time::Duration;

use sansh::{ClientConfig, CloseReason, Connection, Credential, Event, Secret, Timestamp, load_private_key};
use sansh_interop::driver::{Driver, Flow};
use sansh_interop::sshd::{Sshd, SshdOptions};
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, ensure_test_user, keygen};

fn sshd(extra: &[&str]) -> Sshd {
    ensure_test_user();
    Sshd::start(SshdOptions {
        config: extra.iter().map(|s| s.to_string()).collect(),
        ..SshdOptions::default()
    })
}

/// Connects, trusting sshd's host key, and runs until authenticated (Ok) or closed (Err).
fn login(
    sshd: &Sshd,
    cfg: ClientConfig,
    on_event: impl FnMut(&mut Connection, &Event),
) -> Result<Driver, String> {
    let conn = Connection::client(cfg, Timestamp::ZERO, [9; 32]).unwrap();
    let mut d = Driver::connect(sshd.addr(), conn).map_err(|e| e.to_string())?;
    let mut on_event = on_event;
    d.run_until(Duration::from_secs(20), |conn, e| {
        on_event(conn, e);
        match e {
            Event::HostKey(check) => {
                conn.accept_host_key(check.id).unwrap();
                Flow::Continue
            }
            Event::Authenticated { .. } => Flow::Done,
            _ => Flow::Continue,
        }
    })?;
    Ok(d)
}

fn key_cred(private: &str, passphrase: Option<&str>) -> Credential {
    Credential::PrivateKey(load_private_key(private, passphrase.map(str::as_bytes)).unwrap())
}

#[test]
fn publickey_ed25519_ecdsa_and_encrypted_ed25519() {
    let sshd = sshd(&[]);
    let dir = TempDir::new("keys");
    for (name, args, pass) in [
        ("id_ed25519", &["-t", "ed25519"][..], ""),
        ("id_ecdsa", &["-t", "ecdsa", "-b", "256"][..], ""),
        ("id_ecdsa384", &["-t", "ecdsa", "-b", "384"][..], ""),
        ("id_ed25519_enc", &["-t", "ed25519"][..], "correct horse"),
    ] {
        let (private, public) = keygen(dir.path(), name, args, pass);
        sshd.authorize(&public);
        let cred = key_cred(&private, (!pass.is_empty()).then_some(pass));
        let d = login(&sshd, ClientConfig::new(TEST_USER, vec![cred]), |_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", sshd.log()));
        assert_eq!(d.conn.state(), sansh::State::Active);
        let fp = public.split_whitespace().nth(1).unwrap().to_owned();
        let _ = fp;
        eprintln!("ok: {name}");
    }
    assert_eq!(sshd.log().matches(&format!("Accepted publickey for {TEST_USER}")).count(), 4);
}

#[test]
fn publickey_rsa_with_sha2_512_and_sha2_256() {
    let dir = TempDir::new("keys");
    let (private, public) = keygen(dir.path(), "id_rsa", &["-t", "rsa", "-b", "3072"], "");
    // sshd 9.2 announces both in server-sig-algs whatever it accepts, so the
    // client's own preference (OpenSSH's PubkeyAcceptedAlgorithms) picks.
    use sansh::SignatureAlgorithm::{RsaSha256, RsaSha512};
    for (accepted, ours, expected) in [
        ("rsa-sha2-512,rsa-sha2-256", vec![RsaSha512, RsaSha256], "rsa-sha2-512"),
        ("rsa-sha2-256", vec![RsaSha256], "rsa-sha2-256"),
    ] {
        let sshd = sshd(&[&format!("PubkeyAcceptedAlgorithms {accepted}")]);
        sshd.authorize(&public);
        let mut chosen = None;
        let mut cfg = ClientConfig::new(TEST_USER, vec![key_cred(&private, None)]);
        cfg.user_key_algorithms = ours;
        login(&sshd, cfg, |_, e| {
            if let Event::ExtInfo { server_sig_algs, .. } = e {
                chosen = server_sig_algs.clone();
            }
        })
        .unwrap_or_else(|e| panic!("{accepted}: {e}\n{}", sshd.log()));
        let log = sshd.log();
        assert!(log.contains(&format!("Accepted publickey for {TEST_USER}")), "{log}");
        // sshd logs the signature algorithm of the accepted key.
        assert!(
            log.lines().any(|l| l.contains("userauth_pubkey") && l.contains(expected)),
            "{expected} not in log\n{log}"
        );
        eprintln!("ok: server-sig-algs {chosen:?} -> {expected}");
    }
}

#[test]
fn password_and_wrong_credentials() {
    let sshd = sshd(&["PasswordAuthentication yes"]);
    let d = login(
        &sshd,
        ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]),
        |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(d.conn.user(), Some(TEST_USER));

    // A wrong password, then a key sshd does not know: refused, and the error
    // names both attempts and the methods that remain.
    let dir = TempDir::new("keys");
    let (unknown, _) = keygen(dir.path(), "unknown", &["-t", "ed25519"], "");
    let cfg = ClientConfig::new(
        TEST_USER,
        vec![Credential::Password("not the password".into()), key_cred(&unknown, None)],
    );
    let mut d =
        Driver::connect(sshd.addr(), Connection::client(cfg, Timestamp::ZERO, [3; 32]).unwrap()).unwrap();
    let err = d
        .run_until(Duration::from_secs(20), |conn, e| {
            if let Event::HostKey(c) = e {
                conn.accept_host_key(c.id).unwrap();
            }
            Flow::Continue
        })
        .unwrap_err();
    let reason = d
        .events
        .iter()
        .find_map(|e| match e {
            Event::Closed { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    let CloseReason::AuthFailed { offered, attempts } = &reason else { panic!("{reason:?}") };
    assert!(
        offered.contains(&"publickey".to_string()) && offered.contains(&"password".to_string()),
        "{offered:?}"
    );
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(err.contains("password: rejected"), "{err}");
    assert!(err.contains("publickey (ssh-ed25519 SHA256:"), "{err}");
    assert!(err.contains("server offers publickey,password"), "{err}");
}

#[test]
fn keyboard_interactive_through_pam() {
    // keyboard-interactive needs PAM in OpenSSH; this sshd enables it.
    let sshd = sshd(&["UsePAM yes", "KbdInteractiveAuthentication yes", "PasswordAuthentication no"]);
    let mut prompts_seen = Vec::new();
    let cfg = ClientConfig::new(TEST_USER, vec![Credential::KeyboardInteractive]);
    let d = login(&sshd, cfg, |conn, e| {
        if let Event::KeyboardInteractive { id, prompts, .. } = e {
            prompts_seen.extend(prompts.iter().map(|p| p.text.clone()));
            let answers = prompts.iter().map(|_| Secret::new(TEST_PASSWORD)).collect();
            conn.answer_keyboard_interactive(*id, Some(answers)).unwrap();
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(d.conn.state(), sansh::State::Active);
    assert!(prompts_seen.iter().any(|p| p.to_lowercase().contains("password")), "{prompts_seen:?}");
}

#[test]
fn survives_server_initiated_rekeys_once_authenticated() {
    // sshd rekeys after 256 KiB each way (only after authentication: it
    // never rekeys before). IGNORE traffic pushes the bytes.
    let sshd = sshd(&["RekeyLimit 256K"]);
    for cipher in sansh::CipherAlgorithm::ALL {
        let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]);
        cfg.transport.ciphers = vec![cipher];
        let mut d = login(&sshd, cfg, |_, _| {}).unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        let payload = vec![0x5a; 16 * 1024];
        let mut rekeys = 0;
        for _ in 0..200 {
            d.conn.send_ignore(&payload).unwrap();
            let _ = d.run_until(Duration::from_millis(2), |_, e| {
                if matches!(e, Event::KexCompleted { rekey: true, .. }) {
                    rekeys += 1;
                }
                Flow::Continue
            });
            assert!(!d.conn.is_closed(), "closed: {:?}\n{}", d.events, sshd.log());
        }
        let _ = d.run_until(Duration::from_millis(300), |_, e| {
            if matches!(e, Event::KexCompleted { rekey: true, .. }) {
                rekeys += 1;
            }
            Flow::Continue
        });
        // Our own limit is 1 GiB (chacha) / 64 GiB (AES): these were sshd's.
        assert!(rekeys >= 5, "{cipher:?}: sshd should have rekeyed every 256 KiB of 3.2 MiB, saw {rekeys}");
        assert_eq!(d.conn.stats().rekeys, rekeys);
        // And one of ours, accepted post-auth.
        d.conn.rekey().unwrap();
        d.run_until(Duration::from_secs(10), |_, e| {
            if matches!(e, Event::KexCompleted { rekey: true, .. }) { Flow::Done } else { Flow::Continue }
        })
        .unwrap_or_else(|e| panic!("client rekey: {e}\n{}", sshd.log()));
        assert!(!d.conn.is_closed());
        eprintln!("ok: {} survived {rekeys} server rekeys and one of ours", cipher.name());
    }
}
