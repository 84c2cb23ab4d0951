//! Transport interop against Debian's OpenSSH sshd on 127.0.0.1.

use std::time::Duration;

use sansh::{CipherAlgorithm, ClientConfig, CloseReason, Connection, Event, HostKeyAlgorithm, Timestamp};
use sansh_interop::driver::{Driver, Flow};
use sansh_interop::sshd::{KeyKind, Sshd, SshdOptions};

fn client(cipher: CipherAlgorithm, host_key: HostKeyAlgorithm) -> Connection {
    // A password prompt nobody answers keeps the client waiting in
    // authentication, where these transport tests do their work.
    let mut cfg = ClientConfig::new("nobody", vec![sansh::Credential::PasswordPrompt]);
    cfg.transport.ciphers = vec![cipher];
    cfg.transport.host_key_algorithms = vec![host_key];
    Connection::client(cfg, Timestamp::ZERO, [42; 32]).unwrap()
}

fn kind_of(alg: HostKeyAlgorithm) -> KeyKind {
    match alg {
        HostKeyAlgorithm::Ed25519 => KeyKind::Ed25519,
        HostKeyAlgorithm::EcdsaP256 => KeyKind::EcdsaP256,
        HostKeyAlgorithm::EcdsaP384 => KeyKind::EcdsaP384,
        HostKeyAlgorithm::EcdsaP521 => KeyKind::EcdsaP521,
        HostKeyAlgorithm::RsaSha256 | HostKeyAlgorithm::RsaSha512 => KeyKind::Rsa,
    }
}

/// Runs kex + service request, accepting the host key only if it is the
/// one sshd was given.
fn handshake(sshd: &Sshd, conn: Connection, expected: &ssh_key::PublicKey) -> Driver {
    let mut d = Driver::connect(sshd.addr(), conn).expect("connect to sshd");
    let expected = expected.key_data().clone();
    d.run_until(Duration::from_secs(20), |conn, e| match e {
        Event::HostKey(check) => {
            if check.key.key_data() == &expected {
                conn.accept_host_key(check.id).unwrap();
            } else {
                conn.reject_host_key(check.id).unwrap();
            }
            Flow::Continue
        }
        Event::ServiceAccepted { .. } => Flow::Done,
        _ => Flow::Continue,
    })
    .unwrap_or_else(|e| panic!("handshake failed: {e}\nsshd log:\n{}", sshd.log()));
    d
}

#[test]
fn kex_with_every_cipher_and_host_key_type_under_strict_kex() {
    let sshd = Sshd::start(SshdOptions {
        config: vec![
            "HostKeyAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
             rsa-sha2-512,rsa-sha2-256"
                .into(),
        ],
        ..SshdOptions::default()
    });
    for cipher in CipherAlgorithm::ALL {
        for alg in HostKeyAlgorithm::ALL {
            let d = handshake(&sshd, client(cipher, alg), &sshd.host_public_key(kind_of(alg)));
            let neg = d.conn.negotiated().expect("negotiated").clone();
            assert_eq!(neg.cipher_c2s, cipher);
            assert_eq!(neg.cipher_s2c, cipher);
            assert_eq!(neg.host_key, alg);
            assert!(neg.strict, "OpenSSH 9.2 offers strict kex; it must be on");
            assert!(d.conn.peer_version().unwrap().starts_with("SSH-2.0-OpenSSH_"));
            let ext = d.conn.peer_extensions();
            let sig_algs = ext.server_sig_algs.as_ref().expect("sshd sends server-sig-algs");
            assert!(sig_algs.iter().any(|a| a == "rsa-sha2-512"), "{sig_algs:?}");
            eprintln!("ok: {} + {}", cipher.name(), alg.name());
        }
    }
}

#[test]
fn rekey_before_authentication_is_refused_by_openssh_with_a_clear_error() {
    // OpenSSH does not rekey before authentication: it answers our KEXINIT
    // with UNIMPLEMENTED. We must close at once with a precise reason, not
    // hold queued data until the kex timeout.
    let sshd = Sshd::start(SshdOptions::default());
    let mut d = handshake(
        &sshd,
        client(CipherAlgorithm::ChaCha20Poly1305, HostKeyAlgorithm::Ed25519),
        &sshd.host_public_key(KeyKind::Ed25519),
    );
    d.conn.rekey().unwrap();
    let err = d.run_until(Duration::from_secs(10), |_, _| Flow::Continue).unwrap_err();
    assert!(err.contains("refused key re-exchange"), "{err}");
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, Event::Closed { reason: CloseReason::Error(sansh::Error::RekeyRefused) }))
    );
}

#[test]
fn both_curve25519_names() {
    let sshd = Sshd::start(SshdOptions { host_keys: vec![KeyKind::Ed25519], ..SshdOptions::default() });
    for kex in sansh::KexAlgorithm::ALL {
        let mut cfg = ClientConfig::new("nobody", vec![sansh::Credential::PasswordPrompt]);
        cfg.transport.kex_algorithms = vec![kex];
        let conn = Connection::client(cfg, Timestamp::ZERO, [5; 32]).unwrap();
        let d = handshake(&sshd, conn, &sshd.host_public_key(KeyKind::Ed25519));
        assert_eq!(d.conn.negotiated().unwrap().kex, kex);
    }
}

#[test]
fn mismatched_host_key_is_refused_before_authentication() {
    let sshd = Sshd::start(SshdOptions { host_keys: vec![KeyKind::Ed25519], ..SshdOptions::default() });
    // A known_hosts that names another key for this host.
    let other = ssh_key::PublicKey::from_openssh(sansh_interop::OTHER_ED25519).unwrap();
    let known = sansh::known_hosts::line_to_append("127.0.0.1", sshd.port, &other, None);
    let kh = sansh::known_hosts::KnownHosts::parse(&known);
    let port = sshd.port;
    let mut d =
        Driver::connect(sshd.addr(), client(CipherAlgorithm::ChaCha20Poly1305, HostKeyAlgorithm::Ed25519))
            .unwrap();
    let mut verdict = None;
    let err = d
        .run_until(Duration::from_secs(10), |conn, e| {
            if let Event::HostKey(check) = e {
                let v = kh.lookup("127.0.0.1", port, &check.key);
                let ok = matches!(v, sansh::known_hosts::Lookup::Match { .. });
                verdict = Some(v);
                if ok {
                    conn.accept_host_key(check.id).unwrap()
                } else {
                    conn.reject_host_key(check.id).unwrap()
                }
            }
            Flow::Continue
        })
        .unwrap_err();
    assert!(matches!(verdict, Some(sansh::known_hosts::Lookup::Mismatch { .. })), "{verdict:?}");
    assert!(err.contains("host key rejected"), "{err}");
    assert!(!d.events.iter().any(|e| matches!(e, Event::ServiceAccepted { .. })));
    let closes: Vec<_> = d.events.iter().filter(|e| matches!(e, Event::Closed { .. })).collect();
    assert_eq!(closes.len(), 1);
    assert!(matches!(closes[0], Event::Closed { reason: CloseReason::HostKeyRejected }));
}
