//! A throwaway OpenSSH `sshd` on 127.0.0.1 with its own config and keys.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port, run};

/// Host key types sshd can be given.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ssh-ed25519
    Ed25519,
    /// ecdsa-sha2-nistp256
    EcdsaP256,
    /// ecdsa-sha2-nistp384
    EcdsaP384,
    /// ecdsa-sha2-nistp521
    EcdsaP521,
    /// ssh-rsa (3072 bits, signs rsa-sha2-256/512)
    Rsa,
}

impl KeyKind {
    /// Every kind.
    pub const ALL: [KeyKind; 5] =
        [KeyKind::Ed25519, KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::EcdsaP521, KeyKind::Rsa];

    /// `ssh-keygen` arguments for this kind.
    pub fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::EcdsaP256 => &["-t", "ecdsa", "-b", "256"],
            KeyKind::EcdsaP384 => &["-t", "ecdsa", "-b", "384"],
            KeyKind::EcdsaP521 => &["-t", "ecdsa", "-b", "521"],
            KeyKind::Rsa => &["-t", "rsa", "-b", "3072"],
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::EcdsaP256 => "ecdsa256",
            KeyKind::EcdsaP384 => "ecdsa384",
            KeyKind::EcdsaP521 => "ecdsa521",
            KeyKind::Rsa => "rsa",
        }
    }
}

/// How to configure the sshd.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// Host keys to generate and serve.
    pub host_keys: Vec<KeyKind>,
    /// Extra `sshd_config` lines (e.g. `RekeyLimit 1M`, `Ciphers ...`).
    pub config: Vec<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions { host_keys: KeyKind::ALL.to_vec(), config: Vec::new() }
    }
}

/// A running sshd, killed on drop.
#[derive(Debug)]
pub struct Sshd {
    /// The port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: TempDir,
    host_keys: Vec<(KeyKind, PathBuf)>,
}

/// Where Debian puts sshd.
pub const SSHD: &str = "/usr/sbin/sshd";

impl Sshd {
    /// Generates keys and a config, starts `sshd -D` and waits until it accepts
    /// connections. Panics (failing the test) when sshd is missing or dies.
    pub fn start(opts: SshdOptions) -> Sshd {
        assert!(
            std::path::Path::new(SSHD).exists(),
            "{SSHD} not found: install openssh-server (tests/setup.sh does)"
        );
        // Privilege separation directory, needed even for a test sshd.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (tests run as root)");
        let dir = TempDir::new("sshd");
        let mut host_keys = Vec::new();
        for kind in &opts.host_keys {
            let path = dir.path().join(format!("host_{}", kind.file_stem()));
            run(Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", "sansh-test-sshd", "-f"])
                .arg(&path)
                .args(kind.keygen_args()));
            host_keys.push((*kind, path));
        }
        let mut last_log = String::new();
        // A port picked free can be taken before sshd binds it: retry then.
        for _attempt in 0..5 {
            let port = free_port();
            // sshd keeps the first value of a keyword: the test's lines go first.
            let mut cfg = String::new();
            for line in &opts.config {
                writeln!(cfg, "{line}").unwrap();
            }
            writeln!(cfg, "Port {port}\nListenAddress 127.0.0.1").unwrap();
            for (_, path) in &host_keys {
                writeln!(cfg, "HostKey {}", path.display()).unwrap();
            }
            let d = dir.path().display();
            writeln!(
                cfg,
                "PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nAuthorizedKeysFile {d}/authorized_keys\n\
                 LogLevel DEBUG3\nSetEnv SHLVL=1"
            )
            .unwrap();
            let cfg_path = dir.path().join("sshd_config");
            std::fs::write(&cfg_path, &cfg).expect("write sshd_config");
            run(Command::new(SSHD).arg("-t").arg("-f").arg(&cfg_path));
            let log = dir.path().join("sshd.log");
            let _ = std::fs::remove_file(&log);
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&cfg_path)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd { port, child, dir, host_keys };
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
        panic!("sshd did not start:\n{last_log}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind` in OpenSSH format.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        let (_, path) = self.host_keys.iter().find(|(k, _)| *k == kind).expect("sshd has this host key kind");
        let text = std::fs::read_to_string(path.with_extension("pub")).expect("read .pub");
        ssh_key::PublicKey::from_openssh(text.trim()).expect("parse host .pub")
    }

    /// sshd's log so far (LogLevel DEBUG3).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Adds a public key line to the `authorized_keys` every user shares.
    pub fn authorize(&self, public_key_line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(f, "{}", public_key_line.trim()).expect("write authorized_keys");
    }

    /// The directory holding config, keys and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
