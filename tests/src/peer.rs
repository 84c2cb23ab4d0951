//! One face for every real server the interop suites run against, so a test
//! is written once and run per peer: OpenSSH's sshd, dropbear, asyncssh.
//!
//! Each peer runs on 127.0.0.1 with fresh host keys, lets [`TEST_USER`] in
//! with [`TEST_PASSWORD`] or with the fresh key at [`Peer::client_key`], and
//! allows exec, PTYs, `-L` and `-R`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sansh::CipherAlgorithm;

use crate::asyncssh::{AsyncSsh, AsyncSshOptions};
use crate::dropbear::{Dropbear, DropbearOptions};
use crate::sshd::{KeyKind, Sshd, SshdOptions};
use crate::{TEST_PASSWORD, TEST_USER, TempDir, ensure_test_user, keygen};

/// Which server.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// OpenSSH's sshd.
    OpenSsh,
    /// dropbear.
    Dropbear,
    /// asyncssh (Python).
    AsyncSsh,
}

impl PeerKind {
    /// The ciphers among sansh's that this peer offers.
    pub fn ciphers(self) -> &'static [CipherAlgorithm] {
        match self {
            // dropbear 2022.83: chacha20-poly1305, aes128-ctr and aes256-ctr
            // (with hmac-sha2-256 or hmac-sha1); no GCM, no aes192-ctr.
            PeerKind::Dropbear => {
                &[CipherAlgorithm::ChaCha20Poly1305, CipherAlgorithm::Aes128Ctr, CipherAlgorithm::Aes256Ctr]
            }
            PeerKind::OpenSsh | PeerKind::AsyncSsh => &CipherAlgorithm::ALL,
        }
    }
}

/// How to start a peer (the parts every peer has).
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Host keys to generate and serve.
    pub host_keys: Vec<KeyKind>,
    /// The server probes an idle client every this many seconds
    /// (sshd ClientAliveInterval, dropbear -K, asyncssh keepalive_interval).
    pub server_keepalive_secs: Option<u32>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions { host_keys: vec![KeyKind::Ed25519], server_keepalive_secs: None }
    }
}

#[derive(Debug)]
enum Server {
    OpenSsh(Sshd),
    Dropbear(Dropbear),
    AsyncSsh(AsyncSsh),
}

/// A running peer, stopped on drop.
#[derive(Debug)]
pub struct Peer {
    /// Which server.
    pub kind: PeerKind,
    server: Server,
    client_key: PathBuf,
    // Declared last: dropped after the server is stopped.
    _dir: TempDir,
}

impl Peer {
    /// Starts `kind` with default options.
    pub fn start(kind: PeerKind) -> Peer {
        Peer::start_with(kind, PeerOptions::default())
    }

    /// Starts `kind`; panics (failing the test) when it cannot.
    pub fn start_with(kind: PeerKind, opts: PeerOptions) -> Peer {
        ensure_test_user();
        let dir = TempDir::new("peer-client");
        let (_, public) = keygen(dir.path(), "id_ed25519", &["-t", "ed25519"], "");
        let server = match kind {
            PeerKind::OpenSsh => {
                let mut config = Vec::new();
                if let Some(k) = opts.server_keepalive_secs {
                    config.push(format!("ClientAliveInterval {k}"));
                    config.push("ClientAliveCountMax 2".to_owned());
                }
                let sshd = Sshd::start(SshdOptions { host_keys: opts.host_keys, config });
                sshd.authorize(&public);
                Server::OpenSsh(sshd)
            }
            PeerKind::Dropbear => Server::Dropbear(Dropbear::start(
                DropbearOptions { host_keys: opts.host_keys, keepalive_secs: opts.server_keepalive_secs },
                &public,
            )),
            PeerKind::AsyncSsh => Server::AsyncSsh(AsyncSsh::start(
                AsyncSshOptions {
                    host_keys: opts.host_keys,
                    keepalive_secs: opts.server_keepalive_secs,
                    keepalive_count_max: 2,
                },
                &public,
            )),
        };
        Peer { kind, server, client_key: dir.path().join("id_ed25519"), _dir: dir }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.server {
            Server::OpenSsh(s) => s.port,
            Server::Dropbear(s) => s.port,
            Server::AsyncSsh(s) => s.port,
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The user to log in as.
    pub fn user(&self) -> &'static str {
        TEST_USER
    }

    /// Its password.
    pub fn password(&self) -> &'static str {
        TEST_PASSWORD
    }

    /// An unencrypted OpenSSH private key file the peer accepts.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The public host key of `kind` (it must be among the options' keys).
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        match &self.server {
            Server::OpenSsh(s) => s.host_public_key(kind),
            Server::Dropbear(s) => s.host_public_key(kind),
            Server::AsyncSsh(s) => s.host_public_key(kind),
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        match &self.server {
            Server::OpenSsh(s) => s.log(),
            Server::Dropbear(s) => s.log(),
            Server::AsyncSsh(s) => s.log(),
        }
    }
}

/// An echo server on 127.0.0.1 (a thread per connection; runs until the
/// test process ends). Returns its port.
pub fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let port = listener.local_addr().expect("echo server address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let Ok(mut r) = s.try_clone() else { return };
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// `len` bytes that are not all alike (so reordering or a wrong offset shows).
pub fn test_data(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
