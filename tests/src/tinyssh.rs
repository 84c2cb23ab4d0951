//! A throwaway TinySSH server on 127.0.0.1 with its own host key:
//! `tcpserver` (ucspi-tcp) listens and runs a `tinysshd` per connection.
//!
//! tinysshd reads public keys only from `~user/.ssh/authorized_keys`, so the
//! client key of each instance goes into the dedicated test account's file,
//! tagged and removed again on drop ([`crate::authorized_keys`]).
//!
//! What tinysshd (Debian's 20230101) has and lacks is in the capabilities
//! of [`crate::peer::PeerKind::TinySsh`].

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sshd::KeyKind;
use crate::{TempDir, authorized_keys, free_port, run};

/// Where Debian's tinysshd package puts the server.
pub const TINYSSHD: &str = "/usr/sbin/tinysshd";
/// Its host key generator.
pub const TINYSSHD_MAKEKEY: &str = "/usr/sbin/tinysshd-makekey";
/// Prints a key directory's public key as an OpenSSH line.
pub const TINYSSHD_PRINTKEY: &str = "/usr/sbin/tinysshd-printkey";
/// ucspi-tcp's listener, which runs tinysshd on each connection.
pub const TCPSERVER: &str = "/usr/bin/tcpserver";

/// A running `tcpserver` + `tinysshd`; its process group is killed on drop
/// (the listener and any tinysshd still serving a connection) and its
/// authorized key line removed.
#[derive(Debug)]
pub struct TinySsh {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: TempDir,
    /// The ed25519 host key, as an OpenSSH public key line.
    host_key: String,
    /// The comment that marks our line in authorized_keys.
    key_tag: String,
}

impl TinySsh {
    /// Makes a fresh host key directory (`tinysshd-makekey`), authorizes
    /// `client_public_key` (an ssh-ed25519 line: tinysshd accepts no other
    /// kind) for [`crate::TEST_USER`], starts `tcpserver ... tinysshd -v`
    /// and waits until a connection gets tinysshd's version line. Panics
    /// (failing the test) when a binary is missing or the server does not
    /// start. The test user must exist ([`crate::ensure_test_user`]).
    pub fn start(client_public_key: &str) -> TinySsh {
        for (bin, package) in [
            (TINYSSHD, "tinysshd"),
            (TINYSSHD_MAKEKEY, "tinysshd"),
            (TINYSSHD_PRINTKEY, "tinysshd"),
            (TCPSERVER, "ucspi-tcp"),
        ] {
            assert!(Path::new(bin).exists(), "{bin} not found: install {package} (tests/setup.sh does)");
        }
        assert!(
            client_public_key.starts_with("ssh-ed25519 "),
            "tinysshd accepts ssh-ed25519 client keys only: {client_public_key}"
        );
        let dir = TempDir::new("tinyssh");
        let keys = dir.path().join("keys");
        // It creates the directory: ed25519.pk and the secret .ed25519.sk.
        run(Command::new(TINYSSHD_MAKEKEY).arg("-q").arg(&keys));
        let host_key = run(Command::new(TINYSSHD_PRINTKEY).arg(&keys))
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .unwrap_or_else(|| panic!("no ssh-ed25519 line from {TINYSSHD_PRINTKEY}"))
            .to_owned();
        let key_tag = authorized_keys::add("tinyssh", client_public_key);
        let log = dir.path().join("tinysshd.log");
        let mut last_log = String::new();
        // A port picked free can be taken before tcpserver binds it: retry then.
        for _attempt in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("create tinysshd.log");
            let mut cmd = Command::new(TCPSERVER);
            // -H -R: no DNS or ident lookups of the client; -D: TCP_NODELAY;
            // -l0: no lookup of the local name either. tinysshd inherits
            // stderr, so its -v lines land in the same log.
            cmd.args(["-HRDl0", "127.0.0.1", &port.to_string(), TINYSSHD, "-v"]).arg(&keys);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                // A group of its own: the drop kills it with every tinysshd.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {TCPSERVER}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(probe) = TcpStream::connect(("127.0.0.1", port)) {
                    // tcpserver accepts, then tinysshd must load the key and speak.
                    match read_version_line(probe) {
                        Ok(line) if line.starts_with("SSH-2.0-tinyssh") => {
                            return TinySsh { port, child, dir, host_key, key_tag };
                        }
                        other => {
                            kill_group(&mut child);
                            last_log = std::fs::read_to_string(&log).unwrap_or_default();
                            authorized_keys::remove(&key_tag);
                            panic!("tinysshd did not greet on port {port}: {other:?}\n{last_log}");
                        }
                    }
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    kill_group(&mut child);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            // tcpserver: fatal: unable to bind: address already used
            if !last_log.contains("unable to bind") {
                break;
            }
        }
        authorized_keys::remove(&key_tag);
        panic!("tcpserver + tinysshd did not start:\n{last_log}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind` (tinysshd has an ed25519 one only).
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        assert_eq!(kind, KeyKind::Ed25519, "tinysshd has an ed25519 host key only");
        ssh_key::PublicKey::from_openssh(&self.host_key).expect("parse tinysshd host key")
    }

    /// tcpserver's and tinysshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinysshd.log")).unwrap_or_default()
    }
}

impl Drop for TinySsh {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        authorized_keys::remove(&self.key_tag);
    }
}

/// Kills the process group led by `child` (tcpserver and the tinysshd
/// processes it started, which stay in its group) and reaps `child`.
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
