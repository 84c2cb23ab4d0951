//! A throwaway paramiko server on 127.0.0.1: `tests/peers/paramiko_server.py`
//! run by the Python of the virtualenv `tests/setup.sh` makes (the same one
//! as asyncssh's). Like the asyncssh server it logs in [`TEST_USER`] (with
//! [`TEST_PASSWORD`] or an authorized key) but runs commands as the user
//! running the tests. Sessions allow exec only.
//!
//! paramiko has no chacha20-poly1305: with it sansh speaks aes*-ctr + HMAC
//! or AES-GCM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::asyncssh::VENV_PYTHON;
use crate::sshd::KeyKind;
use crate::{TEST_PASSWORD, TEST_USER, TempDir, run};

/// The server script.
pub fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/paramiko_server.py")
}

/// How to start the paramiko server.
#[derive(Clone, Debug)]
pub struct ParamikoOptions {
    /// Host keys to generate (with `ssh-keygen`) and serve.
    pub host_keys: Vec<KeyKind>,
    /// paramiko starts a key re-exchange after this many bytes either way
    /// (its `Packetizer.REKEY_BYTES`; default 512 MiB).
    pub rekey_bytes: Option<u64>,
    /// Restricts the MACs paramiko offers (a comma-separated list).
    pub macs: Option<String>,
}

impl Default for ParamikoOptions {
    fn default() -> Self {
        ParamikoOptions { host_keys: vec![KeyKind::Ed25519], rekey_bytes: None, macs: None }
    }
}

/// A running paramiko server, stopped on drop.
#[derive(Debug)]
pub struct Paramiko {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: TempDir,
    host_keys: Vec<(KeyKind, PathBuf)>,
}

impl Paramiko {
    /// Generates host keys, authorizes `client_public_key` (and
    /// [`TEST_PASSWORD`]) for [`TEST_USER`], starts the server and waits for
    /// it to report its port. Panics (failing the test) when it cannot start.
    pub fn start(opts: ParamikoOptions, client_public_key: &str) -> Paramiko {
        let python = std::env::var_os("SANSH_PARAMIKO_PYTHON")
            .map_or_else(|| PathBuf::from(VENV_PYTHON), PathBuf::from);
        assert!(python.exists(), "{} not found: run tests/setup.sh (it installs paramiko)", python.display());
        let dir = TempDir::new("paramiko");
        let mut host_keys = Vec::new();
        for kind in &opts.host_keys {
            let path = dir.path().join(format!("host_{kind:?}").to_lowercase());
            run(Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", "sansh-test-paramiko", "-f"])
                .arg(&path)
                .args(kind.keygen_args()));
            host_keys.push((*kind, path));
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client_public_key.trim()))
            .expect("write authorized_keys");
        let log = dir.path().join("paramiko.log");
        let mut cmd = Command::new(&python);
        cmd.arg(server_script()).arg("--authorized-keys").arg(&authorized);
        cmd.args(["--user", TEST_USER, "--password", TEST_PASSWORD, "--log-level", "DEBUG"]);
        for (_, path) in &host_keys {
            cmd.arg("--host-key").arg(path);
        }
        if let Some(n) = opts.rekey_bytes {
            cmd.args(["--rekey-bytes", &n.to_string()]);
        }
        if let Some(macs) = &opts.macs {
            cmd.args(["--macs", macs]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create paramiko.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        // The script binds port 0 and says which port it got once it
        // listens: no race for a free port.
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let port = line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse::<u16>().ok());
        match port {
            Some(port) => Paramiko { port, child, dir, host_keys },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the paramiko server did not start (said {line:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind`.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        let (_, path) =
            self.host_keys.iter().find(|(k, _)| *k == kind).expect("paramiko has this host key kind");
        let text = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
        ssh_key::PublicKey::from_openssh(text.trim()).expect("parse host .pub")
    }

    /// The server's log so far (paramiko at DEBUG).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("paramiko.log")).unwrap_or_default()
    }
}

impl Drop for Paramiko {
    fn drop(&mut self) {
        // SIGTERM lets the script kill the commands it started (each in its
        // own session); SIGKILL if it does not go.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
