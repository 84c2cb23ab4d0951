//! Interop against a paramiko server on 127.0.0.1 (tests/peers/paramiko_server.py):
//! a peer with no chacha20-poly1305, where sansh speaks aes*-ctr + HMAC or
//! AES-GCM. Kex (strict), password and public-key authentication, exec with
//! stdin, stdout, stderr and exit status, and rekeys started by paramiko and
//! by us.

use std::time::Duration;

use sansh::{
    CipherAlgorithm, ClientConfig, CloseReason, Credential, Error, Event, ExitStatus, MacAlgorithm,
    load_private_key,
};
use sansh_interop::driver::{Driver, Flow};
use sansh_interop::paramiko::{Paramiko, ParamikoOptions};
use sansh_interop::peer::test_data;
use sansh_interop::sshd::KeyKind;
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, keygen};

/// The ciphers paramiko 5.1 shares with sansh (it has no chacha20-poly1305).
const SHARED_CIPHERS: [CipherAlgorithm; 5] = [
    CipherAlgorithm::Aes128Gcm,
    CipherAlgorithm::Aes256Gcm,
    CipherAlgorithm::Aes128Ctr,
    CipherAlgorithm::Aes192Ctr,
    CipherAlgorithm::Aes256Ctr,
];

struct Server {
    paramiko: Paramiko,
    /// The client key paramiko authorizes (an unencrypted OpenSSH file's text).
    client_key: String,
    _dir: TempDir,
}

fn start(opts: ParamikoOptions) -> Server {
    let dir = TempDir::new("paramiko-client");
    let (client_key, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "");
    Server { paramiko: Paramiko::start(opts, &public), client_key, _dir: dir }
}

fn password_config(cipher: CipherAlgorithm) -> ClientConfig {
    let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]);
    cfg.transport.ciphers = vec![cipher];
    cfg
}

/// Logs in, then checks that the host key offered was paramiko's.
fn login(server: &Server, cfg: ClientConfig, what: &str) -> Driver {
    let d = Driver::login(server.paramiko.addr(), cfg)
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", server.paramiko.log()));
    let expected = server.paramiko.host_public_key(KeyKind::Ed25519);
    let offered = d.events.iter().find_map(|e| match e {
        Event::HostKey(check) => Some(check.key.clone()),
        _ => None,
    });
    assert_eq!(offered.as_ref().map(|k| k.key_data()), Some(expected.key_data()), "{what}");
    assert!(d.conn.peer_version().unwrap().starts_with("SSH-2.0-paramiko_"), "{what}");
    d
}

/// A command that reads stdin and answers on both streams with an exit code.
fn check_exec(d: &mut Driver, what: &str, server: &Server) {
    let out = d
        .exec("wc -c; echo to-stderr >&2; exit 7", &test_data(50_000), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", server.paramiko.log()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50000", "{what}");
    assert_eq!(out.stderr, b"to-stderr\n", "{what}");
    assert_eq!(out.exit, Some(ExitStatus::Code(7)), "{what}");
}

#[test]
fn every_shared_cipher_kex_password_auth_and_exec() {
    let server = start(ParamikoOptions::default());
    for cipher in CipherAlgorithm::ALL {
        let what = cipher.name();
        if !SHARED_CIPHERS.contains(&cipher) {
            // chacha20-poly1305 only: paramiko cannot take it, and says what it offers.
            let err = Driver::login(server.paramiko.addr(), password_config(cipher)).unwrap_err();
            assert!(err.contains("no common cipher (client to server)"), "{what}: {err}");
            assert!(err.contains("aes128-ctr") && !err.contains("server offers [chacha20"), "{what}: {err}");
            continue;
        }
        let mut d = login(&server, password_config(cipher), what);
        let neg = d.conn.negotiated().unwrap().clone();
        assert_eq!((neg.cipher_c2s, neg.cipher_s2c), (cipher, cipher), "{what}");
        // Our first MAC; none with AES-GCM.
        let mac = (!cipher.is_aead()).then_some(MacAlgorithm::HmacSha256Etm);
        assert_eq!((neg.mac_c2s, neg.mac_s2c), (mac, mac), "{what}");
        assert!(neg.strict, "{what}: paramiko offers strict kex; it must be on");
        assert!(d.events.iter().any(|e| matches!(e, Event::ServiceAccepted { .. })), "{what}");
        check_exec(&mut d, what, &server);
        eprintln!("ok: {what}");
    }
}

#[test]
fn every_mac_with_aes128_ctr() {
    let server = start(ParamikoOptions::default());
    for mac in MacAlgorithm::ALL {
        let what = format!("aes128-ctr + {}", mac.name());
        let mut cfg = password_config(CipherAlgorithm::Aes128Ctr);
        cfg.transport.macs = vec![mac];
        let mut d = login(&server, cfg, &what);
        let neg = d.conn.negotiated().unwrap().clone();
        assert_eq!((neg.mac_c2s, neg.mac_s2c), (Some(mac), Some(mac)), "{what}");
        check_exec(&mut d, &what, &server);
    }
}

#[test]
fn public_key_auth_and_a_wrong_password() {
    let server = start(ParamikoOptions::default());
    let key = load_private_key(&server.client_key, None).unwrap();
    let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::PrivateKey(key)]);
    cfg.transport.ciphers = vec![CipherAlgorithm::Aes256Ctr];
    let mut d = login(&server, cfg, "publickey");
    check_exec(&mut d, "publickey", &server);

    let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::Password("not the password".into())]);
    cfg.transport.ciphers = vec![CipherAlgorithm::Aes256Ctr];
    let err = Driver::login(server.paramiko.addr(), cfg).unwrap_err();
    assert!(err.contains("connection closed"), "{err}");
}

#[test]
fn rekeys_started_by_paramiko_and_by_us() {
    // paramiko rekeys after 64 KiB either way.
    let server = start(ParamikoOptions { rekey_bytes: Some(64 * 1024), ..ParamikoOptions::default() });
    for (cipher, mac) in [
        (CipherAlgorithm::Aes128Ctr, MacAlgorithm::HmacSha256),
        (CipherAlgorithm::Aes256Ctr, MacAlgorithm::HmacSha512Etm),
        (CipherAlgorithm::Aes128Gcm, MacAlgorithm::HmacSha1),
    ] {
        let what = format!("{} + {}", cipher.name(), mac.name());
        let mut cfg = password_config(cipher);
        cfg.transport.macs = vec![mac];
        let mut d = login(&server, cfg, &what);
        let rekeys_before = d.conn.stats().rekeys;
        // Six commands, each with 100 KB in and 100 KB out. paramiko counts
        // what it receives as it reads, so each command's input starts a
        // rekey (what it sends only starts one at its next read).
        for round in 0..6 {
            let out = d
                .exec(
                    "wc -c; head -c 100000 /dev/zero | tr '\\0' x",
                    &test_data(100_000),
                    Duration::from_secs(30),
                )
                .unwrap_or_else(|e| panic!("{what} round {round}: {e}\n{}", server.paramiko.log()));
            assert_eq!(out.stdout.len(), "100000\n".len() + 100_000, "{what}");
            assert!(out.stdout.starts_with(b"100000\n"), "{what}");
            assert!(out.stdout[7..].iter().all(|&b| b == b'x'), "{what}");
            assert_eq!(out.exit, Some(ExitStatus::Code(0)), "{what}");
        }
        let server_rekeys = d.conn.stats().rekeys - rekeys_before;
        assert!(
            server_rekeys >= 5,
            "{what}: paramiko should rekey after each 100 KB input, saw {server_rekeys}\n{}",
            server.paramiko.log()
        );
        // Ours, accepted by paramiko; then the connection still works.
        d.conn.rekey().unwrap();
        d.run_until(Duration::from_secs(10), |_, e| {
            if matches!(e, Event::KexCompleted { rekey: true, .. }) { Flow::Done } else { Flow::Continue }
        })
        .unwrap_or_else(|e| panic!("{what}: our rekey: {e}\n{}", server.paramiko.log()));
        let neg = d.conn.negotiated().unwrap().clone();
        assert_eq!((neg.cipher_c2s, neg.mac_c2s), (cipher, (!cipher.is_aead()).then_some(mac)), "{what}");
        check_exec(&mut d, &what, &server);
        assert!(!d.conn.is_closed(), "{what}");
        eprintln!("ok: {what}: {server_rekeys} rekeys by paramiko, one of ours");
    }
}

#[test]
fn no_common_mac_is_refused_with_both_lists_named() {
    // paramiko restricted to hmac-md5, which sansh does not have.
    let server = start(ParamikoOptions { macs: Some("hmac-md5".into()), ..ParamikoOptions::default() });
    let err = Driver::login(server.paramiko.addr(), password_config(CipherAlgorithm::Aes128Ctr)).unwrap_err();
    let expected = Error::NoCommonAlgorithm {
        kind: sansh::error::AlgorithmKind::MacClientToServer,
        client: MacAlgorithm::ALL.map(|m| m.name()).join(","),
        server: "hmac-md5".into(),
    };
    assert_eq!(
        err,
        format!("connection closed: {}", CloseReason::Error(expected)),
        "{}",
        server.paramiko.log()
    );
    // Unlike OpenSSH (and sansh), paramiko wants a common MAC even for
    // AES-GCM, whose MAC is never used: it hangs up without DISCONNECT.
    // (Why sansh always sends its MAC list, whatever its ciphers.)
    let err = Driver::login(server.paramiko.addr(), password_config(CipherAlgorithm::Aes256Gcm)).unwrap_err();
    assert!(err.contains("closed by peer without DISCONNECT"), "{err}");
    assert!(server.paramiko.log().contains("no acceptable macs"), "{}", server.paramiko.log());
}
