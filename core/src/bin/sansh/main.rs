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
mod tty;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use sansh::tokio::{Client, ClientError, ClientOptions};
use sansh::{CloseReason, ExitStatus};

use crate::args::{Args, Parsed, RequestTty, Strict};
use crate::session::{Ended, SessionSpec};

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

fn init_logging(verbose: u32, quiet: bool) {
    use tracing::Level;
    let level = match (quiet, verbose) {
        (true, _) => Level::ERROR,
        (_, 0) => Level::WARN,
        (_, 1) => Level::INFO,
        (_, 2) => Level::DEBUG,
        _ => Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(verbose >= 2)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

fn main() {
    tty::install_panic_hook();
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let parsed = match args::parse(&argv) {
        Ok(p) => p,
        Err(e) => {
            if e.show_usage() {
                eprintln!("sansh: {e}\n{}", args::USAGE);
            } else {
                eprintln!("sansh: {e}");
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
        Parsed::Run(a) => {
            init_logging(a.verbose, a.quiet);
            runtime.block_on(run(*a))
        }
    };
    exit_now(code)
}

/// Builds the client options from the command line (credentials loaded,
/// prompts wired). `Err` is a message for stderr.
fn client_options(a: &Args, user: &str, host: &str, port: u16) -> Result<ClientOptions, String> {
    let o = &a.options;
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
    if let Some(interval) = args::secs(o.server_alive_interval) {
        transport.keepalive.probe_interval = Some(interval);
        transport.keepalive.probe_count_max = o.server_alive_count_max.unwrap_or(3);
    }
    options.connect_timeout = args::secs(o.connect_timeout);

    let strict = o.strict.unwrap_or(Strict::Ask);
    let known_hosts = o.known_hosts.clone().unwrap_or_else(|| args::home().join(".ssh/known_hosts"));
    options.host_key_policy = auth::host_key_policy(strict, known_hosts, can_prompt);

    let pubkey = o.pubkey_auth.unwrap_or(true);
    options.use_agent = pubkey;
    match o.identity_agent.as_deref() {
        None | Some("SSH_AUTH_SOCK") => {}
        Some("none") => options.use_agent = false,
        Some(other) => {
            let from_env = std::env::var("SSH_AUTH_SOCK").ok();
            if from_env.as_deref() != Some(other) {
                return Err(format!(
                    "sansh: IdentityAgent {other}: only SSH_AUTH_SOCK or none are supported (set SSH_AUTH_SOCK={other})"
                ));
            }
        }
    }
    if pubkey {
        let (files, explicit) = auth::identity_files(&a.identities);
        for path in files {
            if let Some(cred) = auth::load_identity(&path, explicit, can_prompt) {
                tracing::debug!("identity {}: {}", path.display(), cred.describe());
                options.config.credentials.push(cred);
            }
        }
    }
    let settings = auth::PromptSettings {
        env_password: std::env::var("SANSH_PASSWORD").ok(),
        can_prompt,
        password: o.password_auth.unwrap_or(true),
        keyboard_interactive: o.kbd_interactive_auth.unwrap_or(true),
    };
    if let Some(cred) = auth::env_password_credential(&settings) {
        options.config.credentials.push(cred);
    }
    if settings.env_password.is_some() || can_prompt {
        options.prompt = Some(auth::prompt_fn(settings));
    }
    if !a.quiet {
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
    if a.no_command {
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
            if a.command.is_none() && !stdin_tty && !a.quiet {
                eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
            }
            a.command.is_none() && stdin_tty
        }
    };
    let raw = pty && stdin_tty;
    let spec = SessionSpec { command: a.command.clone(), pty, raw, read_stdin: !a.stdin_null };
    let ended = session::run(client, spec).await;
    tty::restore();
    match ended {
        Ended::Exit(status) => {
            if raw && !a.quiet {
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
    let o = &a.options;
    let user = a
        .login
        .clone()
        .or_else(|| o.user.clone())
        .or_else(|| a.host_user.clone())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(current_user);
    let Some(user) = user else {
        eprintln!("sansh: no user name: set USER or use -l");
        return 255;
    };
    let host = o.hostname.clone().unwrap_or_else(|| a.host.clone());
    let port = a.port.or(o.port).unwrap_or(22);
    let target = Target { user: user.clone(), host: host.clone(), port };
    let options = match client_options(&a, &user, &host, port) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return 255;
        }
    };
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
    let forwards = match forward::setup(&client, &a.local, &a.remote, exit_on_failure, false).await {
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
