//! `sansh`: an OpenSSH-compatible SSH client on the sansh core and its tokio
//! adapter. `sansh --help` for the usage.
//!
//! Exit status as ssh: the remote command's, or 255 when sansh fails
//! (connection, host key, authentication, a lost connection) or the remote
//! command ended without an exit status (killed by a signal).
#![forbid(unsafe_code)]

mod args;
mod auth;
mod demo;
mod forward;
mod io;
mod reconnect;
mod repeat;
mod session;
mod tokens;
mod tty;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sansh::tokio::{AddressFamily, Client, ClientError, ClientOptions};
use sansh::{CloseReason, Credential, ExitStatus};

use crate::args::{Args, EscapeChar, LogLevel, Parsed, RequestTty, SessionType, Strict};
use crate::session::{Ended, SessionSpec};
use crate::tokens::Tokens;

/// Restores the terminal and exits (the one way out of the program).
pub fn exit_now(code: i32) -> ! {
    tty::restore();
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// An I/O error as the C library words it (no "(os error N)").
pub fn strerror_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A client error's I/O cause in C library words.
pub fn strerror(e: &ClientError) -> String {
    match e {
        ClientError::Io(io) | ClientError::Connect { source: io, .. } => strerror_io(io),
        other => other.to_string(),
    }
}

/// ssh's exit code for a remote exit: the status, or 255 (a signal, or none).
pub fn exit_code(status: Option<&ExitStatus>) -> i32 {
    match status {
        Some(ExitStatus::Code(c)) => (c & 0xff) as i32,
        Some(ExitStatus::Signal { signal, core_dumped, .. }) => {
            let core = if *core_dumped { " (core dumped)" } else { "" };
            tracing::info!("remote command killed by signal {signal}{core}");
            255
        }
        None => {
            tracing::info!("the remote side sent no exit status");
            255
        }
    }
}

/// Where we connect, for messages.
struct Target {
    user: String,
    host: String,
    port: u16,
}

/// OpenSSH's one-line message for a failure.
fn failure_message(e: &ClientError, t: &Target, in_session: bool) -> String {
    let (user, host, port) = (&t.user, &t.host, t.port);
    match e {
        ClientError::Connect { source, .. } => {
            let msg = strerror_io(source);
            match msg.strip_prefix("failed to lookup address information: ") {
                Some(why) => format!("sansh: Could not resolve hostname {host}: {why}"),
                None => format!("sansh: connect to host {host} port {port}: {msg}"),
            }
        }
        ClientError::Timeout(_) => format!("sansh: connect to host {host} port {port}: Connection timed out"),
        ClientError::Closed(reason) => match reason {
            CloseReason::HostKeyRejected => "Host key verification failed.".into(),
            CloseReason::AuthFailed { offered, .. } => {
                format!("{user}@{host}: Permission denied ({}).", offered.join(","))
            }
            CloseReason::PeerDisconnect { code, description } => format!(
                "Received disconnect from {host} port {port}:{}: {description}\nDisconnected from {host} port {port}",
                code.0
            ),
            CloseReason::Eof if in_session => format!("Connection to {host} closed by remote host."),
            CloseReason::Eof => format!("Connection closed by {host} port {port}"),
            CloseReason::KeepaliveTimeout { .. } => format!("Timeout, server {host} not responding."),
            CloseReason::Error(sansh::Error::NoCommonAlgorithm { kind, server, .. }) => {
                format!(
                    "Unable to negotiate with {host} port {port}: no matching {kind} algorithm found. Their offer: {server}"
                )
            }
            other => format!("sansh: {host} port {port}: {other}"),
        },
        other => format!("sansh: {other}"),
    }
}

/// Sets up the log at `level` (ssh's LogLevel mapped onto tracing: INFO,
/// ssh's default, shows warnings; DEBUG1 (`-v`) our info lines; DEBUG2 and
/// DEBUG3 more), on stderr or appended to `file` (`-E`).
fn init_logging(level: LogLevel, file: Option<&Path>) -> Result<(), String> {
    use tracing::Level;
    let max = match level {
        LogLevel::Quiet | LogLevel::Fatal | LogLevel::Error => Level::ERROR,
        LogLevel::Info => Level::WARN,
        LogLevel::Verbose | LogLevel::Debug1 => Level::INFO,
        LogLevel::Debug2 => Level::DEBUG,
        LogLevel::Debug3 => Level::TRACE,
    };
    let builder =
        tracing_subscriber::fmt().with_max_level(max).with_target(level >= LogLevel::Debug2).without_time();
    let _ = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("Couldn't open logfile {}: {}", path.display(), strerror_io(&e)))?;
            builder.with_writer(std::sync::Mutex::new(f)).with_ansi(false).try_init()
        }
        None => builder.with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    Ok(())
}

fn main() {
    tty::install_panic_hook();
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let parsed = match args::parse(&argv) {
        Ok(p) => p,
        Err(e) => {
            // ssh's form: its getopt message (if any), then the usage.
            if !e.message.is_empty() {
                eprintln!("{e}");
            }
            if e.show_usage() {
                eprintln!("{}", args::USAGE);
            }
            exit_now(255);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sansh: cannot start the runtime: {e}");
            exit_now(255);
        }
    };
    let code = match parsed {
        Parsed::Help => {
            println!("{}", args::HELP);
            0
        }
        Parsed::Version => {
            eprintln!("sansh {} (sans-IO SSH core, OpenSSH-compatible client)", env!("CARGO_PKG_VERSION"));
            0
        }
        Parsed::Demo => runtime.block_on(demo::run()),
        Parsed::Query(names) => {
            for name in names {
                println!("{name}");
            }
            0
        }
        Parsed::Run(a) => match init_logging(a.log_level(), a.log_file.as_deref()) {
            Ok(()) => {
                for note in &a.notes {
                    tracing::debug!("{note}");
                }
                runtime.block_on(run(*a))
            }
            Err(msg) => {
                eprintln!("{msg}");
                255
            }
        },
    };
    exit_now(code)
}

/// The local address to connect from (`-b`): an address, or a name
/// resolved to one of the address family in use.
fn bind_address(text: &str, family: AddressFamily) -> Result<IpAddr, String> {
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip);
    }
    use std::net::ToSocketAddrs;
    let addrs = (text, 0)
        .to_socket_addrs()
        .map_err(|e| format!("sansh: getaddrinfo: {text}: {}", strerror_io(&e)))?;
    addrs
        .map(|a| a.ip())
        .find(|ip| family.admits(&std::net::SocketAddr::new(*ip, 0)))
        .ok_or_else(|| format!("sansh: getaddrinfo: {text}: no address of the requested family"))
}

/// The environment to pass to the session: the local variables named by
/// SendEnv patterns, then SetEnv's.
fn session_env(o: &args::SshOptions) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if !o.send_env.is_empty() {
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else { continue };
            if o.send_env.iter().any(|p| args::glob(name, p)) {
                env.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    if let Some(set) = &o.set_env {
        env.extend(set.iter().cloned());
    }
    env
}

/// Expands each path of a file list option.
fn paths(files: &[String], tokens: &Tokens, what: &str) -> Result<Vec<PathBuf>, String> {
    files.iter().map(|f| tokens.expand_path(f, what)).collect()
}

/// Builds the client options from the command line (credentials loaded,
/// prompts wired). `Err` is a message for stderr.
fn client_options(a: &Args, target: &Target, tokens: &Tokens) -> Result<ClientOptions, String> {
    let o = &a.options;
    let (user, host, port) = (&target.user, &target.host, target.port);
    let batch = o.batch_mode.unwrap_or(false);
    let can_prompt = !batch && tty::can_prompt();
    let mut options = ClientOptions::new(user);
    let transport = &mut options.config.transport;
    if let Some(c) = &o.ciphers {
        transport.ciphers = c.clone();
    }
    if let Some(m) = &o.macs {
        transport.macs = m.clone();
    }
    if let Some(k) = &o.kex {
        transport.kex_algorithms = k.clone();
    }
    if let Some(h) = &o.host_key_algorithms {
        transport.host_key_algorithms = h.clone();
    }
    if let Some(r) = o.rekey_limit {
        transport.rekey.bytes = r.bytes;
        transport.rekey.time = r.time;
    }
    if let Some(interval) = args::secs(o.server_alive_interval) {
        transport.keepalive.probe_interval = Some(interval);
        transport.keepalive.probe_count_max = o.server_alive_count_max.unwrap_or(3);
    }
    if let Some(algs) = &o.pubkey_algorithms {
        options.config.user_key_algorithms = algs.clone();
    }
    options.connect_timeout = args::secs(o.connect_timeout);
    options.connection_attempts = o.connection_attempts.unwrap_or(1);
    options.address_family = a.address_family();
    options.bind_address = match a.bind_address() {
        Some(b) => Some(bind_address(b, options.address_family)?),
        None => None,
    };
    if let Some(EscapeChar::Char(c)) = a.escape.or(o.escape_char) {
        tracing::debug!("escape character {:?}: sansh has no escape sequences; passed through", c as char);
    }

    // Host keys: every user and global file is read; the first user file is written.
    let user_files = match &o.known_hosts {
        Some(files) => paths(files, tokens, "UserKnownHostsFile")?,
        None => vec![args::home().join(".ssh/known_hosts"), args::home().join(".ssh/known_hosts2")],
    };
    let global_files = match &o.global_known_hosts {
        Some(files) => paths(files, tokens, "GlobalKnownHostsFile")?,
        None => vec!["/etc/ssh/ssh_known_hosts".into(), "/etc/ssh/ssh_known_hosts2".into()],
    };
    let is_localhost = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let mut strict = o.strict.unwrap_or(Strict::Ask);
    if o.no_host_auth_for_localhost == Some(true) && is_localhost && o.host_key_alias.is_none() {
        tracing::debug!("NoHostAuthenticationForLocalhost: not checking the host key of {host}");
        strict = Strict::No;
    }
    options.host_key_policy = auth::host_key_policy(auth::HostKeySettings {
        strict,
        user_files,
        global_files,
        hash: o.hash_known_hosts.unwrap_or(false),
        alias: o.host_key_alias.clone(),
        can_prompt,
    });

    // The agent: IdentityAgent none, SSH_AUTH_SOCK (the default), $VAR or a path.
    let pubkey = o.pubkey_auth.unwrap_or(true);
    options.use_agent = pubkey;
    match o.identity_agent.as_deref() {
        None | Some("SSH_AUTH_SOCK") => {}
        Some(v) if v.eq_ignore_ascii_case("none") => options.use_agent = false,
        Some(v) => match v.strip_prefix('$') {
            Some(var) => match std::env::var_os(var).filter(|p| !p.is_empty()) {
                Some(path) => options.agent_socket = Some(path.into()),
                None => {
                    tracing::debug!("IdentityAgent {v}: {var} is not set; no agent");
                    options.use_agent = false;
                }
            },
            None => options.agent_socket = Some(tokens.expand_path(v, "IdentityAgent")?),
        },
    }
    if let Some(path) = &options.agent_socket {
        tracing::debug!("ssh-agent at {}", path.display());
    }
    let given = paths(&a.identities, tokens, "IdentityFile")?;
    let mut identity_keys = Vec::new();
    if pubkey {
        let (files, explicit) = auth::identity_files(&given);
        for path in files {
            let cred = auth::load_identity(&path, explicit, can_prompt);
            identity_keys.extend(auth::identity_public_key(&path, cred.as_ref()));
            if let Some(cred) = cred {
                tracing::debug!("identity {}: {}", path.display(), cred.describe());
                options.config.credentials.push(cred);
            }
        }
    }
    if o.identities_only == Some(true) {
        tracing::debug!(
            "IdentitiesOnly: the agent's keys only if among the {} identity files",
            identity_keys.len()
        );
        options.agent_keys_only = Some(identity_keys);
    }

    // Passwords: SANSH_PASSWORD once, or up to NumberOfPasswordPrompts
    // prompts on the terminal.
    let prompts = o.number_of_password_prompts.unwrap_or(3);
    let settings = auth::PromptSettings {
        env_password: std::env::var("SANSH_PASSWORD").ok(),
        can_prompt,
        password: o.password_auth.unwrap_or(true) && prompts > 0,
        keyboard_interactive: o.kbd_interactive_auth.unwrap_or(true) && prompts > 0,
    };
    if let Some(cred) = auth::env_password_credential(&settings) {
        options.config.credentials.push(cred);
    } else if settings.password && can_prompt {
        options.config.credentials.extend((0..prompts).map(|_| Credential::PasswordPrompt));
    }
    // ssh's order unless PreferredAuthentications says otherwise; methods
    // turned off are left out.
    let mut order = o
        .preferred_auth
        .clone()
        .unwrap_or_else(|| ["publickey", "keyboard-interactive", "password"].map(String::from).to_vec());
    order.retain(|m| match m.as_str() {
        "publickey" => pubkey,
        "password" => settings.password,
        "keyboard-interactive" => settings.keyboard_interactive,
        _ => true,
    });
    tracing::debug!("authentications that may be tried, in order: {}", order.join(","));
    options.preferred_auth = Some(order);
    if settings.env_password.is_some() || can_prompt {
        options.prompt = Some(auth::prompt_fn(settings));
    }
    if a.log_level() >= LogLevel::Info {
        // As they arrive, as ssh does: a banner shows even when the login
        // it precedes then fails. Sanitised by the core (terminal_safe).
        options.on_banner = Some(std::sync::Arc::new(|banner: &str| {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(banner.as_bytes());
            let _ = err.flush();
        }));
    }
    tracing::debug!("connecting to {host} port {port} as {user}");
    Ok(options)
}

/// The name of the user running us, from /etc/passwd (when USER is unset).
fn current_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// How the work on one connection ended.
enum Work {
    /// Done: exit with this code.
    Exit(i32),
    /// The connection failed under it.
    Lost(ClientError),
}

/// The work to do on a connection: forward only (-N), --repeat, or a session.
async fn work(client: &Client, a: &Args, target: &Target) -> Work {
    let quiet = a.log_level() < LogLevel::Info;
    if a.session_type() == SessionType::None {
        return tokio::select! {
            reason = client.closed() => Work::Lost(ClientError::Closed(reason)),
            n = session::any_terminating_signal() => {
                tracing::info!("Killed by signal {n}.");
                Work::Exit(255)
            }
        };
    }
    if let (Some(n), Some(cmd)) = (a.repeat, a.command.as_deref()) {
        return match repeat::run(client, cmd, n).await {
            Ok(code) => Work::Exit(code),
            Err(e) => Work::Lost(e),
        };
    }
    let stdin_tty = tty::stdin_is_tty();
    let request = if a.no_tty {
        RequestTty::No
    } else if a.tty > 0 {
        RequestTty::Yes
    } else {
        a.options.request_tty.unwrap_or(RequestTty::Auto)
    };
    let pty = match request {
        RequestTty::Yes => true,
        RequestTty::No => false,
        RequestTty::Auto => {
            if a.command.is_none() && !stdin_tty && !quiet {
                eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
            }
            a.command.is_none() && stdin_tty
        }
    };
    let raw = pty && stdin_tty;
    let spec = SessionSpec {
        command: a.command.clone(),
        subsystem: a.session_type() == SessionType::Subsystem,
        env: session_env(&a.options),
        pty,
        raw,
        read_stdin: !a.stdin_null(),
    };
    let ended = session::run(client, spec).await;
    tty::restore();
    match ended {
        Ended::Exit(status) => {
            if raw && !quiet {
                eprintln!("Connection to {} closed.", target.host);
            }
            Work::Exit(exit_code(status.as_ref()))
        }
        Ended::Signal(n) => {
            tracing::info!("Killed by signal {n}.");
            Work::Exit(255)
        }
        Ended::LocalOutput(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("sansh: writing output: {}", strerror_io(&e));
            }
            Work::Exit(255)
        }
        Ended::Failed(e) => Work::Lost(e),
    }
}

/// Sends DISCONNECT and gives it a moment to leave.
async fn hang_up(client: &Client) {
    client.disconnect();
    let _ = client.wait_closed(Duration::from_secs(1)).await;
}

async fn run(mut a: Args) -> i32 {
    if a.reconnect.is_some() && a.options.server_alive_interval.is_none() {
        // Without probes a black-holed link is noticed only by TCP, after minutes.
        a.options.server_alive_interval = Some(15);
    }
    let local_user =
        std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok()).or_else(current_user);
    let o = &a.options;
    let user =
        a.login.clone().or_else(|| o.user.clone()).or_else(|| a.host_user.clone()).or(local_user.clone());
    let Some(user) = user else {
        eprintln!("sansh: no user name: set USER or use -l");
        return 255;
    };
    let port = a.port.or(o.port).unwrap_or(22);
    let mut tokens = Tokens::local(local_user.unwrap_or_else(|| user.clone()), &a.host);
    tokens.port = port;
    tokens.remote_user = user.clone();
    tokens.host_key_alias = o.host_key_alias.clone();
    // Hostname may name the host given with %h.
    let host = match &o.hostname {
        Some(h) => match tokens.expand(h, "Hostname") {
            Ok(h) => h,
            Err(msg) => {
                eprintln!("{msg}");
                return 255;
            }
        },
        None => a.host.clone(),
    };
    tokens.host = host.clone();
    if a.command.is_none()
        && let Some(remote) = &o.remote_command
    {
        match tokens.expand(remote, "RemoteCommand") {
            Ok(cmd) => a.command = Some(cmd),
            Err(msg) => {
                eprintln!("{msg}");
                return 255;
            }
        }
    }
    let target = Target { user: user.clone(), host: host.clone(), port };
    let options = match client_options(&a, &target, &tokens) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return 255;
        }
    };
    let o = &a.options;
    if let Some(max) = a.reconnect {
        return reconnect::run(&a, &target, options, max).await;
    }
    let client = match Client::connect(&host, port, options).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("connect: {e}");
            eprintln!("{}", failure_message(&e, &target, false));
            return 255;
        }
    };
    let exit_on_failure = o.exit_on_forward_failure.unwrap_or(false);
    let forwards = match forward::setup(&client, &a, exit_on_failure, false).await {
        Ok(f) => f,
        Err(msg) => {
            eprintln!("{msg}");
            hang_up(&client).await;
            return 255;
        }
    };
    let code = match work(&client, &a, &target).await {
        Work::Exit(code) => code,
        Work::Lost(e) => {
            eprintln!("{}", failure_message(&e, &target, true));
            255
        }
    };
    drop(forwards);
    hang_up(&client).await;
    code
}
