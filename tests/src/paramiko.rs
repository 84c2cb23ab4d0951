//! A throwaway paramiko server on 127.0.0.1: `tests/peers/paramiko_server.py`
//! run by the Python of the virtualenv `tests/setup.sh` makes (the same one
//! as asyncssh's). Like the asyncssh server it logs in [`TEST_USER`](crate::TEST_USER) (with
//! [`TEST_PASSWORD`](crate::TEST_PASSWORD) or an authorized key) but runs commands as the user
//! running the tests. Sessions allow exec only.
//!
//! paramiko has no chacha20-poly1305: with it sansh speaks aes*-ctr + HMAC
//! or AES-GCM.

use std::path::{Path, PathBuf};

use crate::asyncssh::VENV_PYTHON;
use crate::python_server::{Launch, PythonServer};
use crate::sshd::KeyKind;

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
    server: PythonServer,
}

impl Paramiko {
    /// Generates host keys, authorizes `client_public_key` (and
    /// [`TEST_PASSWORD`](crate::TEST_PASSWORD)) for [`TEST_USER`](crate::TEST_USER), starts the server and waits for
    /// it to report its port. Panics (failing the test) when it cannot start.
    pub fn start(opts: ParamikoOptions, client_public_key: &str) -> Paramiko {
        let python = std::env::var_os("SANSH_PARAMIKO_PYTHON")
            .map_or_else(|| PathBuf::from(VENV_PYTHON), PathBuf::from);
        let mut args = Vec::new();
        if let Some(n) = opts.rekey_bytes {
            args.extend(["--rekey-bytes".to_string(), n.to_string()]);
        }
        if let Some(macs) = &opts.macs {
            args.extend(["--macs".to_string(), macs.clone()]);
        }
        let server = PythonServer::start(Launch {
            name: "paramiko",
            python,
            script: server_script(),
            host_keys: &opts.host_keys,
            client_public_key,
            log_level: "DEBUG",
            args,
        });
        Paramiko { port: server.port, server }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind`.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        self.server.host_public_key(kind)
    }

    /// The server's log so far (paramiko at DEBUG).
    pub fn log(&self) -> String {
        self.server.log()
    }
}
