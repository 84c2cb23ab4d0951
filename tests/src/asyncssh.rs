//! A throwaway asyncssh server on 127.0.0.1: `tests/peers/asyncssh_server.py`
//! run by the Python of the virtualenv `tests/setup.sh` makes. It logs in
//! [`TEST_USER`](crate::TEST_USER) but, being a library server and not a login daemon, runs
//! commands as the user running the tests.

use std::path::{Path, PathBuf};

use crate::python_server::{Launch, PythonServer};
use crate::sshd::KeyKind;

/// The virtualenv's Python (see tests/setup.sh); `SANSH_ASYNCSSH_PYTHON`
/// overrides it.
pub const VENV_PYTHON: &str = "/opt/sansh-interop/venv/bin/python";

/// The server script.
pub fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/asyncssh_server.py")
}

/// How to start the asyncssh server.
#[derive(Clone, Debug)]
pub struct AsyncSshOptions {
    /// Host keys to generate (with `ssh-keygen`) and serve.
    pub host_keys: Vec<KeyKind>,
    /// asyncssh's `keepalive_interval`: the server probes the client with
    /// keepalive@openssh.com after this many idle seconds ...
    pub keepalive_secs: Option<u32>,
    /// ... and closes after this many unanswered probes.
    pub keepalive_count_max: u32,
}

impl Default for AsyncSshOptions {
    fn default() -> Self {
        AsyncSshOptions { host_keys: vec![KeyKind::Ed25519], keepalive_secs: None, keepalive_count_max: 3 }
    }
}

/// A running asyncssh server, stopped on drop.
#[derive(Debug)]
pub struct AsyncSsh {
    /// The port on 127.0.0.1.
    pub port: u16,
    server: PythonServer,
}

impl AsyncSsh {
    /// Generates host keys, authorizes `client_public_key` (and
    /// [`TEST_PASSWORD`](crate::TEST_PASSWORD)) for [`TEST_USER`](crate::TEST_USER), starts the server and waits for
    /// it to report its port. Panics (failing the test) when it cannot start.
    pub fn start(opts: AsyncSshOptions, client_public_key: &str) -> AsyncSsh {
        let python = std::env::var_os("SANSH_ASYNCSSH_PYTHON")
            .map_or_else(|| PathBuf::from(VENV_PYTHON), PathBuf::from);
        let mut args = Vec::new();
        if let Some(k) = opts.keepalive_secs {
            args.extend(["--keepalive-interval".to_string(), k.to_string()]);
            args.extend(["--keepalive-count-max".to_string(), opts.keepalive_count_max.to_string()]);
        }
        let server = PythonServer::start(Launch {
            name: "asyncssh",
            python,
            script: server_script(),
            host_keys: &opts.host_keys,
            client_public_key,
            log_level: "INFO",
            args,
        });
        AsyncSsh { port: server.port, server }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The public host key of `kind`.
    pub fn host_public_key(&self, kind: KeyKind) -> ssh_key::PublicKey {
        self.server.host_public_key(kind)
    }

    /// The server's log so far (asyncssh at INFO).
    pub fn log(&self) -> String {
        self.server.log()
    }
}
