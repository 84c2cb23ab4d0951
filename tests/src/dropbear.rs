//! A throwaway dropbear server on 127.0.0.1 with its own host keys.
//!
//! dropbear reads public keys only from `~user/.ssh/authorized_keys`, so the
//! client keys of running instances go into the dedicated test account's
//! file, each line tagged and removed again on drop ([`crate::authorized_keys`]).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::KeyKind;
use crate::{TempDir, authorized_keys, free_port, run};

/// Where Debian's dropbear-bin puts the server.
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
/// And its key generator.
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";

/// How to start dropbear.
#[derive(Clone, Debug)]
pub struct DropbearOptions {
    /// Host keys to generate (with `dropbearkey`) and serve.
    pub host_keys: Vec<KeyKind>,
    /// `-K`: dropbear sends keepalive@openssh.com requests after this many
    /// idle seconds and gives up when they go unanswered.
    pub keepalive_secs: Option<u32>,
}

impl Default for DropbearOptions {
    fn default() -> Self {
        DropbearOptions { host_keys: vec![KeyKind::Ed25519], keepalive_secs: None }
    }
}

/// A running dropbear, killed on drop (its authorized key line removed).
#[derive(Debug)]
pub struct Dropbear {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: TempDir,
    host_keys: Vec<(KeyKind, String)>,
    /// The comment that marks our line in authorized_keys.
    key_tag: String,
}

impl KeyKind {
    /// `dropbearkey` arguments for this kind.
    fn dropbearkey_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::EcdsaP256 => &["-t", "ecdsa", "-s", "256"],
            KeyKind::EcdsaP384 => &["-t", "ecdsa", "-s", "384"],
            KeyKind::EcdsaP521 => &["-t", "ecdsa", "-s", "521"],
            // 2048 bits: dropbear generates RSA keys slowly.
            KeyKind::Rsa => &["-t", "rsa", "-s", "2048"],
        }
    }
}

impl Dropbear {
    /// Generates host keys, authorizes `client_public_key` for
    /// [`crate::TEST_USER`], starts `dropbear -F` and waits until it accepts
    /// connections. Panics (failing the test) when dropbear is missing or
    /// does not start. The test user must exist ([`crate::ensure_test_user`]).
    pub fn start(opts: DropbearOptions, client_public_key: &str) -> Dropbear {
        for bin in [DROPBEAR, DROPBEARKEY] {
            assert!(Path::new(bin).exists(), "{bin} not found: install dropbear-bin (tests/setup.sh does)");
        }
        let dir = TempDir::new("dropbear");
        let mut host_keys = Vec::new();
        for (i, kind) in opts.host_keys.iter().enumerate() {
            let path = dir.path().join(format!("host_key_{i}"));
            run(Command::new(DROPBEARKEY).args(kind.dropbearkey_args()).arg("-f").arg(&path));
            // `-y` prints "Public key portion is:", the OpenSSH line, a fingerprint.
            let out = run(Command::new(DROPBEARKEY).arg("-y").arg("-f").arg(&path));
            let line = out
                .lines()
                .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
                .unwrap_or_else(|| panic!("no public key in dropbearkey -y output:\n{out}"))
                .to_owned();
            host_keys.push((*kind, line));
        }
        let key_tag = authorized_keys::add("dropbear", client_public_key);
        let log = dir.path().join("dropbear.log");
        let mut last_log = String::new();
        // A port picked free can be taken before dropbear binds it: retry then.
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(DROPBEAR);
            // -F: foreground, -E: log to stderr, -m: no motd.
            cmd.args(["-F", "-E", "-m", "-p", &format!("127.0.0.1:{port}"), "-P"]);
            cmd.arg(dir.path().join("dropbear.pid"));
            for i in 0..host_keys.len() {
                cmd.arg("-r").arg(dir.path().join(format!("host_key_{i}")));
            }
            if let Some(k) = opts.keepalive_secs {
                cmd.args(["-K", &k.to_string()]);
            }
            let log_file = std::fs::File::create(&log).expect("create dropbear.log");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {DROPBEAR}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(probe) = TcpStream::connect(("127.0.0.1", port)) {
                    let probe_port = probe.local_addr().map(|a| a.port()).unwrap_or(0);
                    drop(probe);
                    wait_for_probe_child(&child, &log, probe_port);
                    return Dropbear { port, child, dir, host_keys, key_tag };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        authorized_keys::remove(&key_tag);
        panic!("dropbear did not start:\n{last_log}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind`.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        let (_, line) =
            self.host_keys.iter().find(|(k, _)| *k == kind).expect("dropbear has this host key kind");
        ssh_key::PublicKey::from_openssh(line).expect("parse dropbear host key")
    }

    /// dropbear's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dropbear.log")).unwrap_or_default()
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        // The listener only: each connection is a process of its own that
        // ends when its client goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
        authorized_keys::remove(&self.key_tag);
    }
}

/// Waits (up to 5 s) until dropbear is done with the readiness probe (from
/// `probe_port`): its child has logged the exit and been reaped. dropbear
/// 2022.83 counts a connection as unauthenticated until its child exits and
/// refuses any beyond MAX_UNAUTH_PER_IP (5) from one address: a probe still
/// counted would make the 5th of 5 concurrent logins a test makes fail with
/// a bare EOF.
fn wait_for_probe_child(dropbear: &Child, log: &Path, probe_port: u16) {
    let children = format!("/proc/{0}/task/{0}/children", dropbear.id());
    let exited = format!("from <127.0.0.1:{probe_port}>");
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = || {
        std::fs::read_to_string(log).is_ok_and(|l| l.contains(&exited))
            && std::fs::read_to_string(&children).is_ok_and(|c| c.trim().is_empty())
    };
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
