//! aes*-ctr with each HMAC (plain and -etm@openssh.com) against real
//! servers on 127.0.0.1: OpenSSH's sshd (every cipher × MAC, strict kex,
//! SERVICE_ACCEPT, server-initiated rekeys, exec) and dropbear
//! (aes128-ctr + hmac-sha2-256, exec).

use std::time::Duration;

use sansh::{CipherAlgorithm, ClientConfig, Credential, Event, ExitStatus, MacAlgorithm};
use sansh_interop::driver::{Driver, Flow};
use sansh_interop::dropbear::{Dropbear, DropbearOptions};
use sansh_interop::sshd::{KeyKind, Sshd, SshdOptions};
use sansh_interop::{TEST_PASSWORD, TEST_USER, TempDir, ensure_test_user, keygen};

const CTR: [CipherAlgorithm; 3] =
    [CipherAlgorithm::Aes128Ctr, CipherAlgorithm::Aes192Ctr, CipherAlgorithm::Aes256Ctr];

fn password_config(cipher: CipherAlgorithm, mac: MacAlgorithm) -> ClientConfig {
    let mut cfg = ClientConfig::new(TEST_USER, vec![Credential::Password(TEST_PASSWORD.into())]);
    cfg.transport.ciphers = vec![cipher];
    cfg.transport.macs = vec![mac];
    cfg
}

/// A command with output on both streams and a non-zero exit.
const COMMAND: &str = "echo out; echo err >&2; exit 3";

fn check_exec(d: &mut Driver, what: &str, log: impl Fn() -> String) {
    let out =
        d.exec(COMMAND, b"", Duration::from_secs(20)).unwrap_or_else(|e| panic!("{what}: {e}\n{}", log()));
    assert_eq!(out.stdout, b"out\n", "{what}");
    assert_eq!(out.stderr, b"err\n", "{what}");
    assert_eq!(out.exit, Some(ExitStatus::Code(3)), "{what}");
}

#[test]
fn openssh_every_ctr_cipher_with_every_mac_strict_kex_rekey_and_exec() {
    ensure_test_user();
    let ciphers = CTR.map(|c| c.name()).join(",");
    let macs = MacAlgorithm::ALL.map(|m| m.name()).join(",");
    // sshd rekeys after 64 KiB each way once authenticated.
    let sshd = Sshd::start(SshdOptions {
        host_keys: vec![KeyKind::Ed25519],
        config: vec![format!("Ciphers {ciphers}"), format!("MACs {macs}"), "RekeyLimit 64K".into()],
    });
    for cipher in CTR {
        for mac in MacAlgorithm::ALL {
            let what = format!("{} + {}", cipher.name(), mac.name());
            let mut d = Driver::login(sshd.addr(), password_config(cipher, mac))
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", sshd.log()));
            let neg = d.conn.negotiated().expect("negotiated").clone();
            assert_eq!((neg.cipher_c2s, neg.cipher_s2c), (cipher, cipher), "{what}");
            assert_eq!((neg.mac_c2s, neg.mac_s2c), (Some(mac), Some(mac)), "{what}");
            assert!(neg.strict, "{what}: OpenSSH offers strict kex; it must be on");
            assert!(d.events.iter().any(|e| matches!(e, Event::ServiceAccepted { .. })), "{what}");
            // sshd's log names what it chose: the peer agrees.
            let log = sshd.log();
            assert!(
                log.contains(&format!("cipher: {} MAC: {}", cipher.name(), mac.name())),
                "{what}:\n{log}"
            );

            // 320 KiB of IGNOREs: sshd starts about five rekeys.
            let payload = vec![0xa5u8; 16 * 1024];
            let mut rekeys = 0;
            for _ in 0..20 {
                d.conn.send_ignore(&payload).unwrap();
                let _ = d.run_until(Duration::from_millis(2), |_, e| {
                    if matches!(e, Event::KexCompleted { rekey: true, .. }) {
                        rekeys += 1;
                    }
                    Flow::Continue
                });
                assert!(!d.conn.is_closed(), "{what}: closed: {:?}\n{}", d.events, sshd.log());
            }
            let _ = d.run_until(Duration::from_millis(300), |_, e| {
                if matches!(e, Event::KexCompleted { rekey: true, .. }) {
                    rekeys += 1;
                }
                Flow::Continue
            });
            // Our own limit is 64 GiB for AES: these were sshd's.
            assert!(
                rekeys >= 2,
                "{what}: sshd should have rekeyed every 64 KiB, saw {rekeys}\n{}",
                sshd.log()
            );
            assert_eq!(d.conn.negotiated().unwrap().mac_c2s, Some(mac), "{what}: same MAC after rekey");
            check_exec(&mut d, &what, || sshd.log());
            eprintln!("ok: {what}, {rekeys} server rekeys");
        }
    }
}

#[test]
fn dropbear_aes128_ctr_with_hmac_sha2_256_runs_a_command() {
    ensure_test_user();
    let dir = TempDir::new("dropbear-ctr");
    let (_, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "");
    let dropbear = Dropbear::start(DropbearOptions::default(), &public);
    let what = "dropbear aes128-ctr + hmac-sha2-256";
    let mut d =
        Driver::login(dropbear.addr(), password_config(CipherAlgorithm::Aes128Ctr, MacAlgorithm::HmacSha256))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", dropbear.log()));
    let neg = d.conn.negotiated().unwrap().clone();
    assert_eq!((neg.cipher_c2s, neg.mac_c2s), (CipherAlgorithm::Aes128Ctr, Some(MacAlgorithm::HmacSha256)));
    assert_eq!((neg.cipher_s2c, neg.mac_s2c), (CipherAlgorithm::Aes128Ctr, Some(MacAlgorithm::HmacSha256)));
    check_exec(&mut d, what, || dropbear.log());
    // A larger transfer through the same keys: 200 KB in, its size out.
    let input = sansh_interop::peer::test_data(200_000);
    let out = d
        .exec("wc -c", &input, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", dropbear.log()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200000");
    // And one of our rekeys, accepted once authenticated.
    d.conn.rekey().unwrap();
    d.run_until(Duration::from_secs(10), |_, e| {
        if matches!(e, Event::KexCompleted { rekey: true, .. }) { Flow::Done } else { Flow::Continue }
    })
    .unwrap_or_else(|e| panic!("rekey: {e}\n{}", dropbear.log()));
    check_exec(&mut d, what, || dropbear.log());
}
