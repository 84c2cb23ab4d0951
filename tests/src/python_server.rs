//! What the asyncssh and paramiko servers share: a script under
//! `tests/peers/` run by the virtualenv's Python, with host keys generated
//! for it, one authorized client key, and the port it reports once it
//! listens (it binds port 0: no race for a free port).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sshd::KeyKind;
use crate::{TEST_PASSWORD, TEST_USER, TempDir, run};

/// A running Python server, stopped on drop.
#[derive(Debug)]
pub(crate) struct PythonServer {
    /// The port on 127.0.0.1.
    pub(crate) port: u16,
    child: Child,
    dir: TempDir,
    name: &'static str,
    host_keys: Vec<(KeyKind, PathBuf)>,
}

/// How to start one.
pub(crate) struct Launch<'a> {
    /// `asyncssh` or `paramiko`: names the temp dir, the log and messages.
    pub(crate) name: &'static str,
    pub(crate) python: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) host_keys: &'a [KeyKind],
    pub(crate) client_public_key: &'a str,
    pub(crate) log_level: &'a str,
    /// Script-specific arguments.
    pub(crate) args: Vec<String>,
}

impl PythonServer {
    /// Generates host keys, authorizes the client key (and [`TEST_PASSWORD`](crate::TEST_PASSWORD))
    /// for [`TEST_USER`](crate::TEST_USER), starts the script and waits for its port. Panics
    /// (failing the test) when it cannot start.
    pub(crate) fn start(l: Launch<'_>) -> PythonServer {
        let name = l.name;
        assert!(
            l.python.exists(),
            "{} not found: run tests/setup.sh (it installs {name})",
            l.python.display()
        );
        let dir = TempDir::new(name);
        let mut host_keys = Vec::new();
        for kind in l.host_keys {
            let path = dir.path().join(format!("host_{kind:?}").to_lowercase());
            run(Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", &format!("sansh-test-{name}"), "-f"])
                .arg(&path)
                .args(kind.keygen_args()));
            host_keys.push((*kind, path));
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", l.client_public_key.trim()))
            .expect("write authorized_keys");
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(&l.python);
        cmd.arg(&l.script).arg("--authorized-keys").arg(&authorized);
        cmd.args(["--user", TEST_USER, "--password", TEST_PASSWORD, "--log-level", l.log_level]);
        for (_, path) in &host_keys {
            cmd.arg("--host-key").arg(path);
        }
        cmd.args(&l.args);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", l.python.display()));
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        match line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse::<u16>().ok()) {
            Some(port) => PythonServer { port, child, dir, name, host_keys },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the {name} server did not start (said {line:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// The public host key of `kind`.
    pub(crate) fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        let (_, path) = self
            .host_keys
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("the {} server has no {kind:?} host key", self.name));
        let text = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
        ssh_key::PublicKey::from_openssh(text.trim()).expect("parse host .pub")
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for PythonServer {
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
