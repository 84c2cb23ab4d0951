//! The tokio client's ssh-agent path (`ClientOptions::use_agent`) against
//! OpenSSH's own `ssh-agent` and a throwaway sshd, both on this machine.
//!
//! The adapter finds the agent through `SSH_AUTH_SOCK` only, so this file
//! holds a single test: it sets the variable before any other thread of the
//! test binary exists (the tokio runtime is built afterwards), and every
//! case runs in turn against the same agent, whose keys `ssh-add` changes.

use std::path::Path;
use std::process::Command;

use sansh::CloseReason;
use sansh::tokio::{Client, ClientError, ClientOptions, HostKeyPolicy};
use sansh_interop::ssh_agent::SshAgent;
use sansh_interop::sshd::{Sshd, SshdOptions};
use sansh_interop::{TEST_USER, TempDir, ensure_test_user, keygen};

/// Replaces the agent's keys with `keys`.
fn hold(agent: &SshAgent, keys: &[&Path]) {
    agent.ssh_add(&["-q", "-D"], &[]);
    if !keys.is_empty() {
        agent.ssh_add(&["-q"], keys);
    }
    // What the agent now lists, as `ssh-add -l` prints it (one per key).
    let listed = Command::new("ssh-add").env("SSH_AUTH_SOCK", &agent.socket).arg("-l").output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).lines().filter(|l| l.contains("SHA256:")).count();
    assert_eq!(listed, keys.len(), "ssh-add did not load the keys");
}

fn fingerprint(public_line: &str) -> String {
    ssh_key::PublicKey::from_openssh(public_line.trim())
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

/// Options with no credential but the agent's keys.
fn agent_only(known_hosts: &Path) -> ClientOptions {
    let mut o = ClientOptions::new(TEST_USER);
    o.host_key_policy = HostKeyPolicy::AcceptNew { known_hosts: known_hosts.to_owned() };
    o.use_agent = true;
    o.prompt = None;
    o
}

/// The lines of sshd's log that accepted a public key.
fn accepted_lines(sshd: &Sshd) -> Vec<String> {
    sshd.log().lines().filter(|l| l.contains("Accepted publickey for")).map(str::to_owned).collect()
}

#[test]
fn agent_keys_authenticate_against_sshd() {
    ensure_test_user();
    let dir = TempDir::new("agent");
    let socket = dir.path().join("agent.sock");
    let agent = SshAgent::start(&socket);
    // SAFETY: the only test of this binary, before any thread of its own
    // (the runtime below) exists; nothing else in the process reads the
    // environment meanwhile.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &socket) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let sshd = Sshd::start(SshdOptions::default());
    let known_hosts = dir.path().join("known_hosts");
    let key = |name: &str, args: &[&str]| {
        let (_, public) = keygen(dir.path(), name, args, "");
        (dir.path().join(name), public)
    };
    let keys = [
        ("ed25519", key("id_ed25519", &["-t", "ed25519"]), "ssh-ed25519"),
        ("rsa", key("id_rsa", &["-t", "rsa", "-b", "3072"]), "rsa-sha2-512"),
        ("ecdsa-p256", key("id_ecdsa256", &["-t", "ecdsa", "-b", "256"]), "ecdsa-sha2-nistp256"),
        ("ecdsa-p384", key("id_ecdsa384", &["-t", "ecdsa", "-b", "384"]), "ecdsa-sha2-nistp384"),
        ("ecdsa-p521", key("id_ecdsa521", &["-t", "ecdsa", "-b", "521"]), "ecdsa-sha2-nistp521"),
    ];
    for (_, (_, public), _) in &keys {
        sshd.authorize(public);
    }
    let (unknown, unknown_public) = key("id_unknown", &["-t", "ed25519"]);
    let (unknown_rsa, unknown_rsa_public) = key("id_unknown_rsa", &["-t", "rsa", "-b", "2048"]);

    rt.block_on(async {
        // Each key type alone in the agent: it signs, sshd accepts that key.
        for (name, (path, public), alg) in &keys {
            hold(&agent, &[path]);
            let before = accepted_lines(&sshd).len();
            let client = Client::connect("127.0.0.1", sshd.port, agent_only(&known_hosts))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", sshd.log()));
            assert_eq!(client.exec("echo ok").await.unwrap().stdout, b"ok\n", "{name}");
            client.disconnect();
            let accepted = accepted_lines(&sshd);
            assert_eq!(accepted.len(), before + 1, "{name}: {accepted:?}");
            let fp = fingerprint(public);
            assert!(accepted[before].contains(&fp), "{name}: expected {fp} in {}", accepted[before]);
            // And with the signature algorithm we asked the agent for.
            let log = sshd.log();
            assert!(
                log.lines().any(|l| l.contains("userauth_pubkey") && l.contains(&format!("pkalg {alg}"))),
                "{name}: {alg} not in the log\n{log}"
            );
            eprintln!("ok: agent {name} ({alg}) accepted as {fp}");
        }

        // RSA restricted to rsa-sha2-256: the agent must be asked for SHA-256
        // (flag SSH_AGENT_RSA_SHA2_256), or sshd would refuse the signature.
        let (rsa_path, rsa_public) = &keys[1].1;
        hold(&agent, &[rsa_path]);
        let sshd_256 = Sshd::start(SshdOptions {
            config: vec!["PubkeyAcceptedAlgorithms rsa-sha2-256".into()],
            ..SshdOptions::default()
        });
        sshd_256.authorize(rsa_public);
        let mut o = agent_only(&known_hosts);
        o.config.user_key_algorithms = vec![sansh::SignatureAlgorithm::RsaSha256];
        let client = Client::connect("127.0.0.1", sshd_256.port, o)
            .await
            .unwrap_or_else(|e| panic!("rsa-sha2-256: {e}\n{}", sshd_256.log()));
        client.disconnect();
        let log = sshd_256.log();
        assert!(
            log.lines().any(|l| l.contains("Accepted publickey for") && l.contains(&fingerprint(rsa_public))),
            "{log}"
        );
        assert!(log.lines().any(|l| l.contains("userauth_pubkey") && l.contains("pkalg rsa-sha2-256")), "{log}");
        drop(sshd_256);
        eprintln!("ok: agent rsa with rsa-sha2-256");

        // A refused agent key first, then an accepted one: we fall through.
        let (ecdsa_path, ecdsa_public) = &keys[2].1;
        hold(&agent, &[&unknown, ecdsa_path]);
        let before = accepted_lines(&sshd).len();
        let client = Client::connect("127.0.0.1", sshd.port, agent_only(&known_hosts))
            .await
            .unwrap_or_else(|e| panic!("fall-through: {e}\n{}", sshd.log()));
        client.disconnect();
        let accepted = accepted_lines(&sshd);
        assert_eq!(accepted.len(), before + 1);
        assert!(accepted[before].contains(&fingerprint(ecdsa_public)), "{}", accepted[before]);

        // Only keys sshd does not know: authentication fails, naming each key.
        hold(&agent, &[&unknown, &unknown_rsa]);
        let err = Client::connect("127.0.0.1", sshd.port, agent_only(&known_hosts)).await.unwrap_err();
        let ClientError::Closed(CloseReason::AuthFailed { offered, attempts }) = &err else {
            panic!("expected an authentication failure, got {err}");
        };
        assert!(offered.iter().any(|m| m == "publickey"), "{offered:?}");
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        let text = err.to_string();
        for (alg, public) in [("ssh-ed25519", &unknown_public), ("ssh-rsa", &unknown_rsa_public)] {
            let tried = format!("publickey ({alg} {}): rejected", fingerprint(public));
            assert!(text.contains(&tried), "{tried:?} not in: {text}");
        }
        assert_eq!(accepted_lines(&sshd).len(), before + 1, "nothing more was accepted");
        eprintln!("ok: unknown agent keys: {text}");

        // An empty agent: nothing to try, and the error says what the server offers.
        hold(&agent, &[]);
        let err = Client::connect("127.0.0.1", sshd.port, agent_only(&known_hosts)).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Closed(CloseReason::AuthFailed { attempts, .. }) if attempts.is_empty()),
            "{err}"
        );
        assert!(err.to_string().contains("authentication failed (server offers publickey"), "{err}");
        eprintln!("ok: empty agent: {err}");
    });
}
