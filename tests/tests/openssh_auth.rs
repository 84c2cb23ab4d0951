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
    let (d, result) = login_recorded(sshd, cfg, on_event);
    result.map(|()| d)
}

/// Same, recording the payloads we send, and the driver whatever the result.
fn login_recorded(
    sshd: &Sshd,
    cfg: ClientConfig,
    on_event: impl FnMut(&mut Connection, &Event),
) -> (Driver, Result<(), String>) {
    let mut conn = Connection::client(cfg, Timestamp::ZERO, [9; 32]).unwrap();
    conn.log_packets(true);
    let mut d = Driver::connect(sshd.addr(), conn).expect("connect to sshd");
    let mut on_event = on_event;
    let result = d.run_until(Duration::from_secs(20), |conn, e| {
        on_event(conn, e);
        match e {
            Event::HostKey(check) => {
                conn.accept_host_key(check.id).unwrap();
                Flow::Continue
            }
            Event::Authenticated { .. } => Flow::Done,
            _ => Flow::Continue,
        }
    });
    (d, result)
}

/// The signature algorithm of every publickey request we sent, with
/// whether it carried a signature: what the client chose, from the wire.
fn publickey_requests_sent(d: &mut Driver) -> Vec<(String, bool)> {
    let (sent, _) = d.conn.take_packet_log();
    sent.iter()
        .filter(|p| p.first() == Some(&sansh::wire::msg::USERAUTH_REQUEST))
        .filter_map(|p| {
            let mut r = sansh::wire::Reader::new(&p[1..]);
            r.string("user").ok()?;
            r.string("service").ok()?;
            if r.utf8("method").ok()? != "publickey" {
                return None;
            }
            let signed = r.bool("signed").ok()?;
            Some((r.utf8("algorithm").ok()?.to_owned(), signed))
        })
        .collect()
}

fn key_cred(private: &str, passphrase: Option<&str>) -> Credential {
    Credential::PrivateKey(load_private_key(private, passphrase.map(str::as_bytes)).unwrap())
}

/// `SHA256:…` of an OpenSSH public key line, as sshd logs it.
fn fingerprint(public_line: &str) -> String {
    ssh_key::PublicKey::from_openssh(public_line.trim())
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

#[test]
fn publickey_every_key_type_plain_and_encrypted() {
    let sshd = sshd(&[]);
    let dir = TempDir::new("keys");
    let keys = [
        ("id_ed25519", &["-t", "ed25519"][..], "", "ssh-ed25519"),
        ("id_ecdsa", &["-t", "ecdsa", "-b", "256"][..], "", "ecdsa-sha2-nistp256"),
        ("id_ecdsa384", &["-t", "ecdsa", "-b", "384"][..], "", "ecdsa-sha2-nistp384"),
        ("id_ecdsa521", &["-t", "ecdsa", "-b", "521"][..], "", "ecdsa-sha2-nistp521"),
        ("id_ed25519_enc", &["-t", "ed25519"][..], "correct horse", "ssh-ed25519"),
        ("id_rsa_enc", &["-t", "rsa", "-b", "3072"][..], "battery staple", "rsa-sha2-512"),
        ("id_ecdsa_enc", &["-t", "ecdsa", "-b", "256"][..], "correct horse", "ecdsa-sha2-nistp256"),
        ("id_ecdsa521_enc", &["-t", "ecdsa", "-b", "521"][..], "battery staple", "ecdsa-sha2-nistp521"),
    ];
    for (name, args, pass, alg) in keys {
        let (mut private, mut public) = keygen(dir.path(), name, args, pass);
        // Half of all P-521 keys have a scalar that ssh-keygen writes in 65
        // bytes, which ssh-key alone cannot read: make sure one is tested.
        for _ in 0..30 {
            if name != "id_ecdsa521" || ssh_key::PrivateKey::from_openssh(private.trim()).is_err() {
                break;
            }
            std::fs::remove_file(dir.path().join(name)).unwrap();
            std::fs::remove_file(dir.path().join(format!("{name}.pub"))).unwrap();
            (private, public) = keygen(dir.path(), name, args, pass);
        }
        if !pass.is_empty() {
            assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"), "{name}");
            let err = load_private_key(&private, None).unwrap_err();
            assert_eq!(err, sansh::KeyError::PassphraseRequired, "{name}: is it encrypted?");
        }
        sshd.authorize(&public);
        let cred = key_cred(&private, (!pass.is_empty()).then_some(pass));
        let mut d = login(&sshd, ClientConfig::new(TEST_USER, vec![cred]), |_, _| {})
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", sshd.log()));
        assert_eq!(d.conn.state(), sansh::State::Active);
        // sshd accepted this very key, with the algorithm of its type.
        let fp = fingerprint(&public);
        let log = sshd.log();
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("Accepted publickey for {TEST_USER}")) && l.contains(&fp)),
            "{name}: {fp} not accepted\n{log}"
        );
        assert_eq!(
            publickey_requests_sent(&mut d),
            [(alg.to_owned(), false), (alg.to_owned(), true)],
            "{name}"
        );
        eprintln!("ok: {name} ({alg})");
    }
    assert_eq!(sshd.log().matches(&format!("Accepted publickey for {TEST_USER}")).count(), keys.len());
}

#[test]
fn rsa_signature_algorithm_from_server_sig_algs_and_preference() {
    let dir = TempDir::new("keys");
    let (private, public) = keygen(dir.path(), "id_rsa", &["-t", "rsa", "-b", "3072"], "");
    use sansh::SignatureAlgorithm::{RsaSha256, RsaSha512};
    let defaults = ClientConfig::default().user_key_algorithms;
    // (sshd's PubkeyAcceptedAlgorithms, ours, what we must send, accepted?)
    let cases = [
        ("rsa-sha2-512,rsa-sha2-256", defaults.clone(), "rsa-sha2-512", true),
        ("rsa-sha2-512,rsa-sha2-256", vec![RsaSha256, RsaSha512], "rsa-sha2-256", true),
        // sshd 9.2 still lists rsa-sha2-512 in server-sig-algs (it does not
        // filter the list by PubkeyAcceptedAlgorithms), so by default we
        // pick 512 and sshd refuses it: only our own list can fix that.
        ("rsa-sha2-256", defaults, "rsa-sha2-512", false),
        ("rsa-sha2-256", vec![RsaSha256], "rsa-sha2-256", true),
    ];
    for (accepted, ours, expected, ok) in cases {
        let sshd = sshd(&[&format!("PubkeyAcceptedAlgorithms {accepted}")]);
        sshd.authorize(&public);
        let mut sig_algs = None;
        let mut cfg = ClientConfig::new(TEST_USER, vec![key_cred(&private, None)]);
        cfg.user_key_algorithms = ours.clone();
        let (mut d, result) = login_recorded(&sshd, cfg, |_, e| {
            if let Event::ExtInfo { server_sig_algs, .. } = e {
                sig_algs = server_sig_algs.clone();
            }
        });
        let log = sshd.log();
        let sig_algs = sig_algs.unwrap_or_else(|| panic!("{accepted}: no server-sig-algs\n{log}"));
        assert!(
            ["rsa-sha2-512", "rsa-sha2-256"].iter().all(|a| sig_algs.iter().any(|s| s == a)),
            "{accepted}: {sig_algs:?}"
        );
        match (result, ok) {
            (Ok(()), true) => {}
            (Err(e), false) => {
                assert!(e.contains("publickey (ssh-rsa SHA256:") && e.contains("rejected"), "{e}");
                assert!(
                    log.contains(&format!("signature algorithm {expected} not in PubkeyAcceptedAlgorithms")),
                    "{log}"
                );
            }
            (Ok(()), false) => panic!("{accepted} / {ours:?}: sshd should have refused {expected}\n{log}"),
            (Err(e), true) => panic!("{accepted} / {ours:?}: {e}\n{log}"),
        }
        // What we put on the wire: the query, then (when sshd said PK_OK)
        // the signed request, both with the chosen algorithm.
        let sent = publickey_requests_sent(&mut d);
        let want: Vec<(String, bool)> = if ok {
            vec![(expected.into(), false), (expected.into(), true)]
        } else {
            vec![(expected.into(), false)]
        };
        assert_eq!(sent, want, "{accepted} / {ours:?}");
        if ok {
            // sshd logs the signature algorithm of the key it accepted.
            assert!(
                log.lines()
                    .any(|l| l.contains("userauth_pubkey") && l.contains(&format!("pkalg {expected}"))),
                "{expected} not in log\n{log}"
            );
            assert!(log.contains(&format!("Accepted publickey for {TEST_USER}")), "{log}");
        }
        eprintln!("ok: sshd accepts {accepted}, server-sig-algs {sig_algs:?}, ours {ours:?} -> {expected}");
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
