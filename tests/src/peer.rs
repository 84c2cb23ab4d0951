//! One face for every real server the interop suites run against, so a test
//! is written once and run per peer: OpenSSH's sshd, dropbear, asyncssh,
//! tinysshd, Twisted Conch.
//!
//! Each peer runs on 127.0.0.1 with fresh host keys and lets [`TEST_USER`]
//! in with the fresh key at [`Peer::client_key`] and, where
//! [`PeerKind::password_auth`], with [`TEST_PASSWORD`]. What else a peer
//! allows (several sessions per connection, `-L` and `-R`, host key kinds,
//! ciphers, probing idle clients) is in the capabilities of [`PeerKind`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sansh::{CipherAlgorithm, MacAlgorithm};

use crate::asyncssh::{AsyncSsh, AsyncSshOptions};
use crate::conch::{Conch, ConchOptions};
use crate::dropbear::{Dropbear, DropbearOptions};
use crate::sshd::{KeyKind, Sshd, SshdOptions};
use crate::tinyssh::TinySsh;
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
    /// TinySSH's tinysshd (Debian's 20230101) behind ucspi-tcp's tcpserver.
    /// It lacks most of what the others have, by design: see the
    /// capabilities below.
    TinySsh,
    /// Twisted Conch's `twistd conch` (Twisted 26.10, Python), which runs
    /// commands as the system user. No chacha20-poly1305, no AES-GCM, no
    /// probing of idle clients: see the capabilities below.
    Conch,
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
            // tinysshd 20230101 offers chacha20-poly1305@openssh.com only.
            PeerKind::TinySsh => &[CipherAlgorithm::ChaCha20Poly1305],
            // conch 26.10: aes128/192/256-ctr (and CBC and 3DES, which sansh
            // lacks), with hmac-sha2-256/512 or hmac-sha1 (no -etm MACs):
            // no chacha20-poly1305, no AES-GCM.
            PeerKind::Conch => {
                &[CipherAlgorithm::Aes128Ctr, CipherAlgorithm::Aes192Ctr, CipherAlgorithm::Aes256Ctr]
            }
            PeerKind::OpenSsh | PeerKind::AsyncSsh => &CipherAlgorithm::ALL,
        }
    }

    /// The MACs among sansh's that this peer offers with its aes*-ctr
    /// ciphers (tinysshd has none of those).
    pub fn macs(self) -> &'static [MacAlgorithm] {
        match self {
            // conch 26.10: hmac-sha2-512, hmac-sha2-256, hmac-sha1 (and
            // hmac-sha2-384, hmac-md5); no -etm@openssh.com variants.
            PeerKind::Conch => &[MacAlgorithm::HmacSha256, MacAlgorithm::HmacSha512, MacAlgorithm::HmacSha1],
            // dropbear 2022.83 (Debian's build): hmac-sha1, hmac-sha2-256.
            PeerKind::Dropbear => &[MacAlgorithm::HmacSha256, MacAlgorithm::HmacSha1],
            PeerKind::TinySsh => &[],
            PeerKind::OpenSsh | PeerKind::AsyncSsh => &MacAlgorithm::ALL,
        }
    }

    /// The host key kinds this peer can serve ([`PeerOptions::host_keys`]
    /// must be among them).
    pub fn host_key_kinds(self) -> &'static [KeyKind] {
        match self {
            // tinysshd signs with ssh-ed25519 only.
            PeerKind::TinySsh => &[KeyKind::Ed25519],
            // conch signs with each (RSA as rsa-sha2-512 or -256 too).
            PeerKind::OpenSsh | PeerKind::Dropbear | PeerKind::AsyncSsh | PeerKind::Conch => &KeyKind::ALL,
        }
    }

    /// Whether it offers password authentication (else publickey only).
    pub fn password_auth(self) -> bool {
        // tinysshd: publickey only, from ~/.ssh/authorized_keys. (conch
        // checks the password against the shadow database: see crate::conch.)
        self != PeerKind::TinySsh
    }

    /// Whether one connection can carry several session channels, one after
    /// the other and side by side. tinysshd accepts a single `session`
    /// channel per connection ("only one 'session' channel allowed") and
    /// ends the connection when that channel closes.
    pub fn multiple_sessions(self) -> bool {
        self != PeerKind::TinySsh
    }

    /// Whether it does port forwarding: direct-tcpip channels (`-L`) and
    /// tcpip-forward requests (`-R`). tinysshd does neither: it refuses the
    /// channel and answers the global request with UNIMPLEMENTED.
    pub fn port_forwarding(self) -> bool {
        self != PeerKind::TinySsh
    }

    /// Whether a PTY works (pty-req, window-change). tinysshd 20230101 has
    /// both, but its parent process closes the PTY's master right after the
    /// fork, racing the child's login_tty: the child mostly dies with 111
    /// (TIOCSCTTY: EIO) or SIGHUP before the command runs, with OpenSSH's
    /// `ssh -tt` too (the same trace is described in a comment on mosh
    /// issue #819).
    pub fn pty(self) -> bool {
        self != PeerKind::TinySsh
    }

    /// Whether a command run with a PTY (pty-req, then exec) sees the size
    /// the pty-req asked for. conch 26.10 sets it for a shell only: its
    /// `execCommand` never applies the pty-req's size, so `stty size` says
    /// `0 0` until a window-change (which it does apply).
    pub fn pty_size_on_exec(self) -> bool {
        self != PeerKind::Conch
    }

    /// Whether a connection to a remote forward's listener (`-R`) may be
    /// half-closed: the connecting side sends FIN and still reads the
    /// answer. conch 26.10 takes the FIN as the end of the connection
    /// (its forwarding protocol is not half-closeable): it closes the
    /// channel and drops what was still to come back. OpenSSH's ssh as the
    /// client sees the same.
    pub fn remote_forward_half_close(self) -> bool {
        self != PeerKind::Conch
    }

    /// Whether a tcpip-forward request may ask for port 0 (the peer picks
    /// one and says which). conch 26.10 fails on it with a TypeError
    /// (`listener.getHost()[2]` in `twisted.conch.unix`, after it has bound
    /// the port) and drops the connection without a DISCONNECT.
    pub fn remote_forward_port_zero(self) -> bool {
        self != PeerKind::Conch
    }

    /// Whether it can probe an idle client ([`PeerOptions::server_keepalive_secs`]).
    /// Neither tinysshd nor `twistd conch` has such an option (conch only
    /// answers a client's probes, with REQUEST_FAILURE).
    pub fn server_keepalive(self) -> bool {
        !matches!(self, PeerKind::TinySsh | PeerKind::Conch)
    }
}

/// How to start a peer (the parts every peer has).
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Host keys to generate and serve.
    pub host_keys: Vec<KeyKind>,
    /// The server probes an idle client every this many seconds
    /// (sshd ClientAliveInterval, dropbear -K, asyncssh keepalive_interval;
    /// tinysshd and conch cannot).
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
    TinySsh(TinySsh),
    Conch(Conch),
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

    /// Starts `kind`; panics (failing the test) when it cannot, or when the
    /// options ask for what it lacks.
    pub fn start_with(kind: PeerKind, opts: PeerOptions) -> Peer {
        for k in &opts.host_keys {
            assert!(kind.host_key_kinds().contains(k), "{kind:?} cannot serve a {k:?} host key");
        }
        assert!(
            opts.server_keepalive_secs.is_none() || kind.server_keepalive(),
            "{kind:?} cannot probe idle clients"
        );
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
            // Its only host key kind (checked above) and no keepalive.
            PeerKind::TinySsh => Server::TinySsh(TinySsh::start(&public)),
            // No keepalive (checked above).
            PeerKind::Conch => {
                Server::Conch(Conch::start(ConchOptions { host_keys: opts.host_keys }, &public))
            }
        };
        Peer { kind, server, client_key: dir.path().join("id_ed25519"), _dir: dir }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.server {
            Server::OpenSsh(s) => s.port,
            Server::Dropbear(s) => s.port,
            Server::AsyncSsh(s) => s.port,
            Server::TinySsh(s) => s.port,
            Server::Conch(s) => s.port,
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

    /// Its password (which only peers with [`PeerKind::password_auth`] take).
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
            Server::TinySsh(s) => s.host_public_key(kind),
            Server::Conch(s) => s.host_public_key(kind),
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        match &self.server {
            Server::OpenSsh(s) => s.log(),
            Server::Dropbear(s) => s.log(),
            Server::AsyncSsh(s) => s.log(),
            Server::TinySsh(s) => s.log(),
            Server::Conch(s) => s.log(),
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
