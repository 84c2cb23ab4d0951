//! Interop harness: real SSH peers started on 127.0.0.1 by the tests
//! themselves, and a small blocking driver for a sansh [`Connection`](sansh::Connection).
//!
//! A peer that cannot be started makes the test fail loudly: interop tests
//! never pass by skipping.

pub mod asyncssh;
pub mod authorized_keys;
pub mod cli;
pub mod conch;
pub mod driver;
pub mod dropbear;
pub mod paramiko;
pub mod peer;
mod python_server;
pub mod ssh_agent;
pub mod sshd;
pub mod tinyssh;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A free TCP port on 127.0.0.1 (bound, then released for the peer to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `sansh-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sansh-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SANSH_KEEP_TEMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The unprivileged account interop tests log in as.
pub const TEST_USER: &str = "sansh-test";
/// Its password.
pub const TEST_PASSWORD: &str = "sansh-Test-pw1";

/// Creates [`TEST_USER`] with [`TEST_PASSWORD`] if needed (tests run as root,
/// in CI and here). Panics when that is impossible.
pub fn ensure_test_user() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let exists = std::process::Command::new("id")
            .arg("-u")
            .arg(TEST_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            run(std::process::Command::new("useradd").args(["-m", "-s", "/bin/sh", TEST_USER]));
        }
        let mut child = std::process::Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run chpasswd (tests must run as root)");
        use std::io::Write;
        writeln!(child.stdin.take().expect("stdin"), "{TEST_USER}:{TEST_PASSWORD}").expect("write chpasswd");
        assert!(child.wait().expect("chpasswd").success(), "chpasswd failed");
    });
}

/// A fresh key pair made by `ssh-keygen`: (private key text, public key line).
pub fn keygen(dir: &Path, name: &str, args: &[&str], passphrase: &str) -> (String, String) {
    let path = dir.join(name);
    run(std::process::Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-N", passphrase, "-f"])
        .arg(&path)
        .args(args));
    let private = std::fs::read_to_string(&path).expect("read private key");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("read public key");
    (private, public)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ed25519 public key that no test server uses (for mismatch tests).
pub const OTHER_ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzsM3xNgov/2Mmq+N7djJoww0tFYHIPm64jjj7W9PPO other";
