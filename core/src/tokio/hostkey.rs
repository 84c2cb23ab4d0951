//! Host key trust: OpenSSH's `known_hosts` file, or the application's call.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::HostKeyAlgorithm;
use crate::known_hosts::{KnownHosts, Lookup, line_to_append};

/// What the application sees when asked about a host key.
#[derive(Clone, Debug)]
pub struct HostKeyQuery {
    /// The host as given to `connect`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The key the server proved it holds.
    pub key: ssh_key::PublicKey,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// What `~/.ssh/known_hosts` (if a file was configured) says about it.
    pub known: Lookup,
}

/// How a server's host key is trusted.
#[derive(Clone)]
#[non_exhaustive]
pub enum HostKeyPolicy {
    /// Only keys already in this known_hosts file (StrictHostKeyChecking=yes).
    Strict {
        /// The file.
        known_hosts: PathBuf,
    },
    /// Unknown hosts are added to the file and trusted; changed or revoked
    /// keys are refused (StrictHostKeyChecking=accept-new).
    AcceptNew {
        /// The file.
        known_hosts: PathBuf,
    },
    /// Every key is trusted. Only for tests and throwaway hosts: it gives
    /// up all protection against a man in the middle.
    AcceptAny,
    /// The application decides (called on a blocking thread, so it may ask
    /// a user). `known_hosts`, if given, fills [`HostKeyQuery::known`].
    Callback {
        /// Consulted for the query's verdict; never written.
        known_hosts: Option<PathBuf>,
        /// Returns whether to trust the key.
        decide: Arc<dyn Fn(&HostKeyQuery) -> bool + Send + Sync>,
    },
}

impl std::fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKeyPolicy::Strict { known_hosts } => write!(f, "Strict({})", known_hosts.display()),
            HostKeyPolicy::AcceptNew { known_hosts } => write!(f, "AcceptNew({})", known_hosts.display()),
            HostKeyPolicy::AcceptAny => f.write_str("AcceptAny"),
            HostKeyPolicy::Callback { .. } => f.write_str("Callback"),
        }
    }
}

impl HostKeyPolicy {
    /// What tells this policy from another, for pool keys: the kind and the
    /// known_hosts path, or for a callback its address (clones of one `Arc`
    /// are the same policy; a pool keeps the target, and so the callback,
    /// alive while the key is in use, so the address is not reused).
    pub(crate) fn identity(&self) -> String {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match self {
            HostKeyPolicy::Strict { known_hosts } => format!("strict:{}", path(known_hosts)),
            HostKeyPolicy::AcceptNew { known_hosts } => format!("accept-new:{}", path(known_hosts)),
            HostKeyPolicy::AcceptAny => "accept-any".into(),
            HostKeyPolicy::Callback { known_hosts, decide } => format!(
                "callback:{:p}:{}",
                Arc::as_ptr(decide).cast::<()>(),
                known_hosts.as_deref().map(path).unwrap_or_default()
            ),
        }
    }

    fn file(&self) -> Option<&Path> {
        match self {
            HostKeyPolicy::Strict { known_hosts } | HostKeyPolicy::AcceptNew { known_hosts } => {
                Some(known_hosts)
            }
            HostKeyPolicy::Callback { known_hosts, .. } => known_hosts.as_deref(),
            HostKeyPolicy::AcceptAny => None,
        }
    }

    fn load(&self) -> KnownHosts {
        // A missing file is an empty one, as for OpenSSH.
        let text = self.file().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        KnownHosts::parse(&text)
    }

    /// Host key algorithms ordered with those of keys already known for
    /// the host first, as OpenSSH does, so that a host known by one key type
    /// is not asked for another (which would look like a changed key).
    pub(crate) fn prefer_known(&self, host: &str, port: u16, algorithms: &mut [HostKeyAlgorithm]) {
        let known = self.load();
        let entries = known.known_keys(host, port);
        if entries.is_empty() {
            return;
        }
        let is_known = |a: &HostKeyAlgorithm| entries.iter().any(|e| a.fits_key(e.key.key_data()));
        algorithms.sort_by_key(|a| !is_known(a));
    }

    /// Decides on `key` for `host:port`: Ok(true) trusts it, Ok(false)
    /// refuses. May append to the known_hosts file (accept-new).
    pub(crate) fn decide(&self, host: &str, port: u16, key: &ssh_key::PublicKey) -> std::io::Result<bool> {
        let known = self.load().lookup(host, port, key);
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        match self {
            HostKeyPolicy::AcceptAny => Ok(true),
            HostKeyPolicy::Strict { known_hosts } => {
                if !matches!(known, Lookup::Match { .. }) {
                    tracing::warn!(
                        "host key {fingerprint} for {host}:{port} is not trusted by {} ({known:?})",
                        known_hosts.display()
                    );
                }
                Ok(matches!(known, Lookup::Match { .. }))
            }
            HostKeyPolicy::AcceptNew { known_hosts } => match known {
                Lookup::Match { .. } => Ok(true),
                Lookup::Unknown => {
                    append(known_hosts, &line_to_append(host, port, key, None))?;
                    tracing::info!("added {host}:{port} ({fingerprint}) to {}", known_hosts.display());
                    Ok(true)
                }
                Lookup::Mismatch { .. } | Lookup::Revoked { .. } => {
                    tracing::warn!("host key for {host}:{port} changed or revoked ({fingerprint}): refused");
                    Ok(false)
                }
            },
            HostKeyPolicy::Callback { decide, .. } => {
                let query = HostKeyQuery { host: host.into(), port, key: key.clone(), fingerprint, known };
                Ok(decide(&query))
            }
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // Start on a fresh line even if the file does not end with one.
    let needs_newline = std::fs::read(path).map(|b| b.last().is_some_and(|&c| c != b'\n')).unwrap_or(false);
    if needs_newline {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")
}
