//! Who we are and whom we trust: identity files (passphrases from
//! SANSH_PASSPHRASE or the terminal), passwords (SANSH_PASSWORD or the
//! terminal), keyboard-interactive, and the host key policy with OpenSSH's
//! StrictHostKeyChecking semantics and messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sansh::known_hosts::{KnownHosts, Lookup, host_name_for, line_to_append};
use sansh::tokio::{HostKeyPolicy, HostKeyQuery, PromptFn, PromptRequest};
use sansh::{Credential, KeyError, Secret, load_private_key};

use crate::args::Strict;
use crate::tty;

/// The identity files to load: the ones given, or OpenSSH's defaults
/// that exist. The flag says whether they were given (missing ones warn).
pub fn identity_files(given: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    if !given.is_empty() {
        return (given.to_vec(), true);
    }
    let dir = crate::args::home().join(".ssh");
    let defaults =
        ["id_ed25519", "id_ecdsa", "id_rsa"].iter().map(|n| dir.join(n)).filter(|p| p.exists()).collect();
    (defaults, false)
}

/// Loads one identity file, asking for its passphrase if it is encrypted
/// (SANSH_PASSPHRASE, else the terminal, three tries). `None` skips it.
pub fn load_identity(path: &Path, explicit: bool, can_prompt: bool) -> Option<Credential> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            if explicit {
                eprintln!(
                    "Warning: Identity file {} not accessible: {}.",
                    path.display(),
                    crate::strerror_io(&e)
                );
            }
            return None;
        }
    };
    match load_private_key(&text, None) {
        Ok(key) => return Some(Credential::PrivateKey(key)),
        Err(KeyError::PassphraseRequired) => {}
        Err(e) => {
            eprintln!("Load key \"{}\": {e}", path.display());
            return None;
        }
    }
    if let Ok(pass) = std::env::var("SANSH_PASSPHRASE") {
        match load_private_key(&text, Some(pass.as_bytes())) {
            Ok(key) => return Some(Credential::PrivateKey(key)),
            Err(e) => {
                eprintln!("Load key \"{}\": {e} (from SANSH_PASSPHRASE)", path.display());
                if !can_prompt {
                    return None;
                }
            }
        }
    }
    if !can_prompt {
        tracing::info!("{}: encrypted and no passphrase available; skipped", path.display());
        return None;
    }
    for _ in 0..3 {
        let pass = tty::ask_hidden(&format!("Enter passphrase for key '{}': ", path.display()))?;
        if pass.is_empty() {
            return None;
        }
        match load_private_key(&text, Some(pass.as_bytes())) {
            Ok(key) => return Some(Credential::PrivateKey(key)),
            Err(KeyError::WrongPassphrase) => tty::say("Bad passphrase, try again.\n"),
            Err(e) => {
                eprintln!("Load key \"{}\": {e}", path.display());
                return None;
            }
        }
    }
    None
}

/// The public half of an identity file, for IdentitiesOnly: the loaded
/// key's, else `<file>.pub` (so that an agent may sign for an encrypted
/// file it holds, as with ssh).
pub fn identity_public_key(path: &Path, loaded: Option<&Credential>) -> Option<ssh_key::PublicKey> {
    if let Some(Credential::PrivateKey(key)) = loaded {
        return Some(key.public_key().clone());
    }
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let text = std::fs::read_to_string(PathBuf::from(pub_path)).ok()?;
    ssh_key::PublicKey::from_openssh(text.trim()).ok()
}

/// Which interactive methods may be answered.
#[derive(Clone, Debug)]
pub struct PromptSettings {
    /// From SANSH_PASSWORD.
    pub env_password: Option<String>,
    /// A terminal to ask on, and BatchMode is off.
    pub can_prompt: bool,
    /// PasswordAuthentication.
    pub password: bool,
    /// KbdInteractiveAuthentication.
    pub keyboard_interactive: bool,
}

/// The prompt callback: passwords and keyboard-interactive answers from
/// SANSH_PASSWORD or the terminal. Declining (None) skips the method.
pub fn prompt_fn(s: PromptSettings) -> PromptFn {
    let asked = std::sync::atomic::AtomicU32::new(0);
    Arc::new(move |req: PromptRequest| match req {
        PromptRequest::Password { user, host } => {
            if !s.password {
                return None;
            }
            if let Some(pw) = &s.env_password {
                return Some(vec![pw.clone()]);
            }
            if !s.can_prompt {
                return None;
            }
            // Asked again: the previous password was refused (ssh's words).
            if asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                eprintln!("Permission denied, please try again.");
            }
            tty::ask_hidden(&format!("{user}@{host}'s password: ")).map(|p| vec![p])
        }
        PromptRequest::KeyboardInteractive { name, instruction, prompts } => {
            if !s.keyboard_interactive {
                return None;
            }
            if prompts.is_empty() {
                return Some(Vec::new());
            }
            // A single hidden prompt is a password (PAM): SANSH_PASSWORD answers it.
            if let (Some(pw), [p]) = (&s.env_password, prompts.as_slice())
                && !p.echo
            {
                return Some(vec![pw.clone()]);
            }
            if !s.can_prompt {
                return None;
            }
            // The server's words, made inert for the terminal like a banner.
            let safe = |text: &str| sansh::terminal_safe(text.as_bytes());
            for text in [&name, &instruction] {
                if !text.is_empty() {
                    tty::say(&format!("{}\n", safe(text.trim_end())));
                }
            }
            prompts
                .iter()
                .map(|p| if p.echo { tty::ask(&safe(&p.text)) } else { tty::ask_hidden(&safe(&p.text)) })
                .collect::<Option<Vec<String>>>()
        }
        PromptRequest::NewPassword { prompt } => {
            if !s.can_prompt {
                return None;
            }
            tty::say(&format!("{}\n", sansh::terminal_safe(prompt.trim_end().as_bytes())));
            let new = tty::ask_hidden("Enter new password: ")?;
            let again = tty::ask_hidden("Retype new password: ")?;
            if new != again {
                tty::say("Mismatch; try again later.\n");
                return None;
            }
            Some(vec![new])
        }
    })
}

/// The password credential from SANSH_PASSWORD, if set and allowed.
pub fn env_password_credential(s: &PromptSettings) -> Option<Credential> {
    if !s.password {
        return None;
    }
    s.env_password.as_ref().map(|p| Credential::Password(Secret::new(p.clone())))
}

/// OpenSSH's name for a key type in messages (`ED25519`, `ECDSA`, `RSA`).
fn key_type(key: &ssh_key::PublicKey) -> &'static str {
    match key.algorithm() {
        ssh_key::Algorithm::Ed25519 => "ED25519",
        ssh_key::Algorithm::Ecdsa { .. } => "ECDSA",
        ssh_key::Algorithm::Rsa { .. } => "RSA",
        _ => "unknown",
    }
}

/// Appends `line` to the known_hosts file (creating its directory).
fn record(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let needs_newline = std::fs::read(path).map(|b| b.last().is_some_and(|&c| c != b'\n')).unwrap_or(false);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if needs_newline {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{line}")
}

/// How host keys are checked (StrictHostKeyChecking and the files).
#[derive(Clone, Debug)]
pub struct HostKeySettings {
    pub strict: Strict,
    /// UserKnownHostsFile: read, the first written.
    pub user_files: Vec<PathBuf>,
    /// GlobalKnownHostsFile: read only.
    pub global_files: Vec<PathBuf>,
    /// HashKnownHosts: hash the host name in lines we add.
    pub hash: bool,
    /// HostKeyAlias: the name to look up and record instead of the host.
    pub alias: Option<String>,
    /// A terminal to ask on (and BatchMode off).
    pub can_prompt: bool,
}

/// What the known_hosts files say about a key, and which file said it.
struct Verdict {
    lookup: Lookup,
    file: Option<PathBuf>,
}

/// Looks `key` up in every file, as ssh does with its user and global
/// files together: a revocation anywhere wins, then a match anywhere,
/// then the first file that knows other keys for the host.
fn look_up(files: &[PathBuf], host: &str, port: u16, key: &ssh_key::PublicKey) -> Verdict {
    let verdicts: Vec<(Lookup, &PathBuf)> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            Some((KnownHosts::parse(&text).lookup(host, port, key), f))
        })
        .collect();
    let pick = |want: fn(&Lookup) -> bool| verdicts.iter().find(|(l, _)| want(l));
    let found = pick(|l| matches!(l, Lookup::Revoked { .. }))
        .or_else(|| pick(|l| matches!(l, Lookup::Match { .. })))
        .or_else(|| pick(|l| matches!(l, Lookup::Mismatch { .. })));
    match found {
        Some((lookup, file)) => Verdict { lookup: lookup.clone(), file: Some((*file).clone()) },
        None => Verdict { lookup: Lookup::Unknown, file: None },
    }
}

/// The host key policy for these settings. `no` trusts every key and
/// records nothing; the others are decided here (on the adapter's blocking
/// thread) so that the messages are OpenSSH's.
pub fn host_key_policy(settings: HostKeySettings) -> HostKeyPolicy {
    if settings.strict == Strict::No {
        return HostKeyPolicy::AcceptAny;
    }
    // The adapter reads the first user file to prefer the key types it knows.
    let first = settings.user_files.first().cloned();
    let decide = move |q: &HostKeyQuery| -> bool {
        let s = &settings;
        // With HostKeyAlias the alias is the name, without a port (as ssh).
        let (host, port) = match &s.alias {
            Some(alias) => (alias.clone(), 22),
            None => (q.host.clone(), q.port),
        };
        let name = host_name_for(&host, port);
        let kind = key_type(&q.key);
        let files: Vec<PathBuf> = s.user_files.iter().chain(&s.global_files).cloned().collect();
        let verdict = look_up(&files, &host, port, &q.key);
        let shown = |f: &Option<PathBuf>| f.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        let written = s.user_files.first();
        match &verdict.lookup {
            Lookup::Match { line } => {
                tracing::debug!(
                    "Host '{name}' is known and matches the {kind} host key ({}:{line})",
                    shown(&verdict.file)
                );
                true
            }
            Lookup::Revoked { .. } => {
                eprintln!(
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     @       WARNING: REVOKED HOST KEY DETECTED!               @\n\
                     @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     The {kind} host key for {name} is marked as revoked.\n\
                     This could mean that a stolen key is being used to\n\
                     impersonate this host."
                );
                false
            }
            Lookup::Mismatch { lines, .. } => {
                eprintln!(
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                     @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
                     Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
                     It is also possible that a host key has just been changed.\n\
                     The fingerprint for the {kind} key sent by the remote host is\n{}.\n\
                     Please contact your system administrator.\n\
                     Add correct host key in {} to get rid of this message.\n\
                     Offending key in {}:{}\n\
                     Host key for {name} has changed and you have requested strict checking.",
                    q.fingerprint,
                    written.map(|p| p.display().to_string()).unwrap_or_default(),
                    shown(&verdict.file),
                    lines.first().copied().unwrap_or(0),
                );
                false
            }
            Lookup::Unknown => match s.strict {
                Strict::AcceptNew => accept(s, written, &host, port, &q.key, &name, kind),
                Strict::Ask if s.can_prompt => {
                    let question = format!(
                        "The authenticity of host '{name}' can't be established.\n\
                         {kind} key fingerprint is {}.\n\
                         This key is not known by any other names.\n\
                         Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
                        q.fingerprint
                    );
                    let mut prompt = question;
                    loop {
                        let Some(answer) = tty::ask(&prompt) else { return false };
                        let answer = answer.trim();
                        if answer.eq_ignore_ascii_case("yes") || answer == q.fingerprint {
                            return accept(s, written, &host, port, &q.key, &name, kind);
                        }
                        if answer.eq_ignore_ascii_case("no") {
                            return false;
                        }
                        prompt = "Please type 'yes', 'no' or the fingerprint: ".into();
                    }
                }
                Strict::Ask => {
                    eprintln!(
                        "No {kind} host key is known for {name} and there is no terminal to ask \
                         whether to trust {}.",
                        q.fingerprint
                    );
                    false
                }
                _ => {
                    eprintln!(
                        "No {kind} host key is known for {name} and you have requested strict checking."
                    );
                    false
                }
            },
        }
    };
    HostKeyPolicy::Callback { known_hosts: first, decide: Arc::new(decide) }
}

/// Trusts a new host key, recording it in the first user file (the host
/// name hashed with HashKnownHosts) when there is one.
fn accept(
    s: &HostKeySettings,
    file: Option<&PathBuf>,
    host: &str,
    port: u16,
    key: &ssh_key::PublicKey,
    name: &str,
    kind: &str,
) -> bool {
    let Some(file) = file else {
        tracing::debug!("UserKnownHostsFile none: {name} not recorded");
        return true;
    };
    let mut salt = [0u8; 20];
    let salt = (s.hash && getrandom::getrandom(&mut salt).is_ok()).then_some(&salt);
    match record(file, &line_to_append(host, port, key, salt)) {
        Ok(()) => {
            eprintln!("Warning: Permanently added '{name}' ({kind}) to the list of known hosts.");
        }
        Err(e) => {
            eprintln!("Failed to add the host to the list of known hosts ({}): {e}", file.display());
        }
    }
    true
}
