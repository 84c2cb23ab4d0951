//! A real OpenSSH `ssh-agent -D -a SOCK` for the tests, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run;

/// A running agent listening on its socket.
#[derive(Debug)]
pub struct SshAgent {
    child: Child,
    /// The agent's socket (what SSH_AUTH_SOCK names).
    pub socket: PathBuf,
}

impl SshAgent {
    /// Starts an agent on `socket` and waits until the socket exists.
    pub fn start(socket: &Path) -> SshAgent {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start ssh-agent (openssh-client; tests/setup.sh installs it)");
        let mut agent = SshAgent { child, socket: socket.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("ssh-agent exited at once: {status}");
            }
            assert!(Instant::now() < deadline, "ssh-agent did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// Runs `ssh-add ARGS KEYS` against this agent; returns its stdout.
    pub fn ssh_add(&self, args: &[&str], keys: &[&Path]) -> String {
        run(Command::new("ssh-add").env("SSH_AUTH_SOCK", &self.socket).args(args).args(keys))
    }

    /// Adds one key file.
    pub fn add(&self, key: &Path) {
        self.ssh_add(&["-q"], &[key]);
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
