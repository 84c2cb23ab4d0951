//! A throwaway Twisted Conch server on 127.0.0.1: `twistd conch` (the
//! `twisted` package in the virtualenv `tests/setup.sh` makes) with host
//! keys of its own in a temp dir.
//!
//! conch logs users in through `twisted.conch.unix`, as the system user:
//! commands run as [`TEST_USER`](crate::TEST_USER) (so twistd runs as root,
//! as the tests do). With no `--auth` option it takes the user's password
//! from the shadow database and public keys from `~user/.ssh/authorized_keys`,
//! so the client key of each instance goes into the dedicated test account's
//! file, tagged and removed again on drop ([`crate::authorized_keys`]).
//! (`--auth=unix` cannot log anyone in with Twisted 26.10: that checker
//! returns the user name as a `str`, which conch's UNIX realm refuses as an
//! anonymous login.)
//!
//! What conch (Twisted 26.10) has and lacks is in the capabilities of
//! [`crate::peer::PeerKind::Conch`].

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::KeyKind;
use crate::{TempDir, authorized_keys, run};

/// The virtualenv's `twistd` (see tests/setup.sh); `SANSH_TWISTD` overrides it.
pub const VENV_TWISTD: &str = "/opt/sansh-interop/venv/bin/twistd";

/// How to start conch.
#[derive(Clone, Debug)]
pub struct ConchOptions {
    /// Host keys to generate (with `ssh-keygen`) and serve.
    pub host_keys: Vec<KeyKind>,
}

impl Default for ConchOptions {
    fn default() -> Self {
        ConchOptions { host_keys: vec![KeyKind::Ed25519] }
    }
}

/// A running `twistd conch`; its process group (twistd and the commands it
/// started without a PTY) is killed on drop and its authorized key line
/// removed.
#[derive(Debug)]
pub struct Conch {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: TempDir,
    host_keys: Vec<(KeyKind, PathBuf)>,
    /// The comment that marks our line in authorized_keys.
    key_tag: String,
}

impl KeyKind {
    /// The name part of conch's host key file, `ssh_host_<name>_key`.
    /// conch loads every such file in its data directory and serves each
    /// under its key type, so one file per kind.
    fn conch_file_name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::EcdsaP256 => "ecdsa256",
            KeyKind::EcdsaP384 => "ecdsa384",
            KeyKind::EcdsaP521 => "ecdsa521",
            KeyKind::Rsa => "rsa",
        }
    }
}

impl Conch {
    /// Generates host keys, authorizes `client_public_key` (conch also takes
    /// [`TEST_PASSWORD`](crate::TEST_PASSWORD)) for [`TEST_USER`](crate::TEST_USER), starts
    /// `twistd -n conch` on port 0 of 127.0.0.1, reads the port it got from
    /// its log and waits until a connection gets its version line. Panics
    /// (failing the test) when twistd is missing or the server does not
    /// start. The test user must exist ([`crate::ensure_test_user`]).
    pub fn start(opts: ConchOptions, client_public_key: &str) -> Conch {
        let twistd =
            std::env::var_os("SANSH_TWISTD").map_or_else(|| PathBuf::from(VENV_TWISTD), PathBuf::from);
        assert!(twistd.exists(), "{} not found: run tests/setup.sh (it installs twisted)", twistd.display());
        let dir = TempDir::new("conch");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("create the host key dir");
        let mut host_keys = Vec::new();
        for kind in &opts.host_keys {
            let path = keys.join(format!("ssh_host_{}_key", kind.conch_file_name()));
            run(Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", "sansh-test-conch", "-f"])
                .arg(&path)
                .args(kind.keygen_args()));
            host_keys.push((*kind, path));
        }
        let key_tag = authorized_keys::add("conch", client_public_key);
        let log = dir.path().join("conch.log");
        let mut cmd = Command::new(&twistd);
        // -n: no daemon; --pidfile=: none; -l: its log (debug level: the
        // negotiated algorithms, each auth attempt, tracebacks). Port 0: the
        // kernel picks a free one, which the log names, so no race for it.
        cmd.arg("-n").arg("--pidfile=").arg("-l").arg(&log);
        cmd.args(["conch", "-p", "tcp:0:interface=127.0.0.1", "-d"]).arg(&keys);
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("twistd.err")).expect("create twistd.err"))
            // A group of its own: the drop kills it with its commands.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", twistd.display()));
        let fail = |child: &mut Child, why: String| -> ! {
            kill_group(child);
            authorized_keys::remove(&key_tag);
            panic!(
                "twistd conch did not start: {why}\n{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("twistd.err")).unwrap_or_default()
            );
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            // "[-] OpenSSHFactory starting on 41471"
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text.lines().find_map(|l| {
                l.split_once("OpenSSHFactory starting on ").and_then(|(_, p)| p.trim().parse::<u16>().ok())
            });
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                fail(&mut child, format!("twistd exited ({status})"));
            }
            if Instant::now() > deadline {
                fail(&mut child, "no \"OpenSSHFactory starting on\" line within 20 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match TcpStream::connect(("127.0.0.1", port)).and_then(read_version_line) {
            Ok(line) if line.starts_with("SSH-2.0-Twisted") => Conch { port, child, dir, host_keys, key_tag },
            other => fail(&mut child, format!("no Twisted version line on port {port}: {other:?}")),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind`.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        let (_, path) = self
            .host_keys
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("conch has no {kind:?} host key"));
        let text = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
        ssh_key::PublicKey::from_openssh(text.trim()).expect("parse conch host key")
    }

    /// twistd's log so far (and what it wrote on stderr).
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.dir.path().join("conch.log")).unwrap_or_default();
        log += &std::fs::read_to_string(self.dir.path().join("twistd.err")).unwrap_or_default();
        log
    }
}

impl Drop for Conch {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        authorized_keys::remove(&self.key_tag);
    }
}

/// Kills the process group led by `child` (twistd, and the commands it ran
/// without a PTY; those with one are in sessions of their own and get a
/// SIGHUP when twistd's end of the PTY goes) and reaps `child`.
fn kill_group(child: &mut Child) {
    // Negative pid: the group. std has no killpg, and this crate no libc.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The server's version line (up to 5 s for it), then hangs up.
fn read_version_line(mut s: TcpStream) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") && got.len() < 256 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        got.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&got).trim_end().to_owned())
}
