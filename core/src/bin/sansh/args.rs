//! The command line, parsed as OpenSSH's `ssh` parses it: single-letter
//! options (clustered, values attached or separate), options also after the
//! host, the first other argument after the host starting the command; and
//! `-o Key=Value` options with OpenSSH's names (case-insensitive) and
//! precedence (a flag beats `-o`; among `-o`, the first value wins).
//!
//! Every ssh(1) flag and ssh_config(5) keyword of OpenSSH 9.2 is known: it
//! works, or is accepted with a debug line when it means nothing for sansh
//! (X11, compression, GSSAPI, ...), or is refused with a clear message when
//! it asks for something sansh lacks (`-J`, ProxyCommand, ...).

use std::path::PathBuf;
use std::time::Duration;

use sansh::tokio::AddressFamily;
use sansh::{CipherAlgorithm, HostKeyAlgorithm, KexAlgorithm, MacAlgorithm, SignatureAlgorithm};

use crate::forward::ForwardSpec;

/// The usage text, printed after a malformed command line (ssh's, with our
/// long options).
pub const USAGE: &str = "\
usage: sansh [-46AaCfGgKkMNnqsTtVvXxYy] [-B bind_interface]
           [-b bind_address] [-c cipher_spec] [-D [bind_address:]port]
           [-E log_file] [-e escape_char] [-F configfile] [-I pkcs11]
           [-i identity_file] [-J [user@]host[:port]] [-L address]
           [-l login_name] [-m mac_spec] [-O ctl_cmd] [-o option] [-p port]
           [-Q query_option] [-R address] [-S ctl_path] [-W host:port]
           [-w local_tun[:remote_tun]] [--repeat N] [--reconnect[=MAX]]
           destination [command [argument ...]]
       sansh --demo | --help";

/// `--help`.
pub const HELP: &str = "\
sansh: an SSH client on the sansh sans-IO core, used like OpenSSH's ssh.

usage: sansh [options] [user@]host [command [argument ...]]
       sansh --demo

Options:
  -p port            port to connect to (default 22)
  -l login_name      user to log in as (default: $USER)
  -i identity_file   private key (OpenSSH format) to authenticate with; repeatable;
                     ~ and %-tokens (%d %u %h %r %p %l %L %n %i %C %%) expanded.
                     Default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa when present
  -o Key=Value       an ssh_config option (see below); repeatable
  -L [bind_address:]port:host:hostport
                     forward local port to host:hostport through the server
  -R [bind_address:]port:host:hostport
                     forward the server's port to host:hostport from here
                     (port 0: the server picks, and the port is printed)
  -g                 let other hosts connect to local forwarded ports
  -N                 run no command: just forward ports until the connection ends
  -n                 read no standard input (as if from /dev/null)
  -s                 the command is a subsystem (e.g. sftp) to start
  -t                 request a pseudo-terminal (even for a command, even when
                     stdin is not a terminal)
  -T                 request no pseudo-terminal
  -4, -6             connect over IPv4 only, IPv6 only
  -b bind_address    connect from this local address
  -c cipher_spec, -m mac_spec   as -o Ciphers, -o MACs
  -E log_file        append the log to log_file instead of stderr
  -v                 log to stderr; repeat (-vv, -vvv) for more
  -q                 quiet: only errors
  -Q query           list supported algorithms: cipher, cipher-auth, mac, kex,
                     key, sig (and the ssh_config names of those lists)
  -V                 print the version and exit
  -A -a -C -e -F -K -k -P -X -x -Y -y   accepted; nothing to do in sansh
                     (no agent or X11 forwarding, no compression, no escape
                     sequences, no configuration files are read)
  -B -D -f -G -I -J -M -O -S -W -w      refused: not supported by sansh
  --repeat N         run the command N times over the one connection, then print
                     latency p50/p90/p99 and the mean to stderr
  --reconnect[=MAX]  when the connection is lost, reconnect with backoff (as
                     autossh does), re-establish -L/-R and start the command or
                     shell again. After a loss or a failed dial, sansh dials
                     again at most MAX times in a row without success, then
                     gives up (default: no limit); a connection that stays up
                     30 s resets the count. \"giving up after N attempts\"
                     counts the dials made since that reset, the first one
                     included. Liveness probes default to ServerAliveInterval=15
  --demo             run the self-contained demo (no server needed)
  --help             this text

-o options (case-insensitive names, Key=Value or \"Key Value\"; the first
value given wins, as in ssh_config):
  StrictHostKeyChecking yes|no|off|accept-new|ask   (default ask: prompt on
                     the terminal, or refuse unknown hosts when there is none;
                     no: accept any key and record nothing)
  UserKnownHostsFile files  (default ~/.ssh/known_hosts; the first is written)
  GlobalKnownHostsFile files (default /etc/ssh/ssh_known_hosts{,2}; read only)
  HashKnownHosts yes|no, HostKeyAlias, NoHostAuthenticationForLocalhost
  ServerAliveInterval seconds, ServerAliveCountMax n   (liveness probes)
  ConnectTimeout seconds    (each TCP connect; then kex and authentication)
  ConnectionAttempts n      (TCP connect rounds, 1 s apart)
  AddressFamily any|inet|inet6, BindAddress address
  Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms, PubkeyAcceptedAlgorithms
                     (comma lists; +list appends, -list removes, ^list prepends)
  RekeyLimit bytes[K|M|G]|default [time|none]
  PreferredAuthentications list   (default publickey,keyboard-interactive,password)
  PubkeyAuthentication, PasswordAuthentication, KbdInteractiveAuthentication,
  NumberOfPasswordPrompts n, BatchMode yes|no (no prompts),
  IdentityFile, IdentitiesOnly yes|no, IdentityAgent none|SSH_AUTH_SOCK|$VAR|path
  Port, User, Hostname (%h), RemoteCommand, SessionType none|subsystem|default,
  StdinNull, RequestTTY yes|no|force|auto, SendEnv patterns, SetEnv NAME=VALUE...,
  LocalForward, RemoteForward, GatewayPorts, ClearAllForwardings,
  ExitOnForwardFailure, LogLevel QUIET|FATAL|ERROR|INFO|VERBOSE|DEBUG1..3,
  IgnoreUnknown patterns; the other ssh_config keywords are accepted with a
  debug line or refused when they ask for what sansh lacks (ProxyCommand,
  ProxyJump, DynamicForward, Tunnel, CertificateFile, ...)

Environment:
  SANSH_PASSWORD     password (and single hidden keyboard-interactive answer)
  SANSH_PASSPHRASE   passphrase for encrypted identity files
  SSH_AUTH_SOCK      the ssh-agent to use (unless IdentityAgent says otherwise)
  TERM               terminal type sent with a pseudo-terminal request

Exit status: the remote command's; 255 when sansh itself fails (connection,
host key, authentication) or the remote command ended without a status
(killed by a signal), as OpenSSH's ssh does.";

/// StrictHostKeyChecking.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Strict {
    /// Only known keys.
    Yes,
    /// Any key, nothing recorded.
    No,
    /// Unknown hosts recorded and trusted; changed keys refused.
    AcceptNew,
    /// Ask on the terminal (refuse without one).
    Ask,
}

/// RequestTTY.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RequestTty {
    /// Never.
    No,
    /// Always (our `-t`).
    Yes,
    /// When there is no command and stdin is a terminal.
    Auto,
}

/// SessionType (`-N` is `None`, `-s` is `Subsystem`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SessionType {
    /// No session: forwardings only.
    None,
    /// The command names a subsystem.
    Subsystem,
    /// A command or the shell.
    Default,
}

/// LogLevel, ssh's names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    Debug1,
    Debug2,
    Debug3,
}

/// EscapeChar / `-e`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EscapeChar {
    None,
    Char(u8),
}

/// RekeyLimit: bytes (`None`: the cipher's default) and time (`None`: none).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RekeyLimit {
    pub bytes: Option<u64>,
    pub time: Option<Duration>,
}

/// Everything `-o` can say. Values that take %-tokens stay as written
/// until the destination is known (see `tokens`).
#[derive(Clone, Debug, Default)]
pub struct SshOptions {
    pub strict: Option<Strict>,
    /// UserKnownHostsFile (empty: `none`).
    pub known_hosts: Option<Vec<String>>,
    /// GlobalKnownHostsFile (empty: `none`).
    pub global_known_hosts: Option<Vec<String>>,
    pub hash_known_hosts: Option<bool>,
    pub host_key_alias: Option<String>,
    pub no_host_auth_for_localhost: Option<bool>,
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<u32>,
    pub connect_timeout: Option<u64>,
    pub connection_attempts: Option<u32>,
    pub address_family: Option<AddressFamily>,
    pub bind_address: Option<String>,
    pub ciphers: Option<Vec<CipherAlgorithm>>,
    pub macs: Option<Vec<MacAlgorithm>>,
    pub kex: Option<Vec<KexAlgorithm>>,
    pub host_key_algorithms: Option<Vec<HostKeyAlgorithm>>,
    pub pubkey_algorithms: Option<Vec<SignatureAlgorithm>>,
    pub rekey_limit: Option<RekeyLimit>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub batch_mode: Option<bool>,
    pub password_auth: Option<bool>,
    pub kbd_interactive_auth: Option<bool>,
    pub pubkey_auth: Option<bool>,
    pub preferred_auth: Option<Vec<String>>,
    pub number_of_password_prompts: Option<u32>,
    pub identities_only: Option<bool>,
    pub identity_agent: Option<String>,
    pub request_tty: Option<RequestTty>,
    pub exit_on_forward_failure: Option<bool>,
    pub gateway_ports: Option<bool>,
    pub clear_all_forwardings: Option<bool>,
    /// SendEnv patterns (after `-pattern` removals), in order.
    pub send_env: Vec<String>,
    /// SetEnv (the first SetEnv option wins whole, as in ssh).
    pub set_env: Option<Vec<(String, String)>>,
    pub log_level: Option<LogLevel>,
    pub remote_command: Option<String>,
    pub session_type: Option<SessionType>,
    pub stdin_null: Option<bool>,
    pub escape_char: Option<EscapeChar>,
    /// IgnoreUnknown patterns: unknown keywords matching them are skipped.
    pub ignore_unknown: Option<Vec<String>>,
}

/// A parsed command line.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// The host as given (after `user@`).
    pub host: String,
    /// `-l` (beats `-o User` and `user@host`).
    pub login: Option<String>,
    /// `user@host`.
    pub host_user: Option<String>,
    /// `-p` (beats `-o Port`).
    pub port: Option<u16>,
    /// `-i` and `-o IdentityFile`, in order, as written (`~` and %-tokens
    /// are expanded once the destination is known).
    pub identities: Vec<String>,
    pub options: SshOptions,
    pub local: Vec<ForwardSpec>,
    pub remote: Vec<ForwardSpec>,
    /// `-N`.
    pub no_command: bool,
    /// `-n`.
    pub stdin_null: bool,
    /// `-s`.
    pub subsystem: bool,
    /// `-t` count.
    pub tty: u32,
    /// `-T`.
    pub no_tty: bool,
    /// `-v` count.
    pub verbose: u32,
    /// `-q`.
    pub quiet: bool,
    /// `-4` / `-6`.
    pub family: Option<AddressFamily>,
    /// `-b`.
    pub bind: Option<String>,
    /// `-E`.
    pub log_file: Option<PathBuf>,
    /// `-e`.
    pub escape: Option<EscapeChar>,
    /// `-g`.
    pub gateway_ports: bool,
    /// The remote command from the command line, joined with spaces as ssh
    /// does (RemoteCommand is used when there is none).
    pub command: Option<String>,
    /// `--repeat N`.
    pub repeat: Option<u32>,
    /// `--reconnect[=MAX]`: Some(None) retries forever, Some(Some(n)): after
    /// a loss or failed dial, at most n more dials (see `sansh::Reconnect`).
    pub reconnect: Option<Option<u32>>,
    /// Debug lines about accepted options without effect, logged once the
    /// log is set up (parsing comes before it).
    pub notes: Vec<String>,
}

impl Args {
    /// What kind of session to run: `-N` and `-s` beat SessionType.
    pub fn session_type(&self) -> SessionType {
        if self.no_command {
            SessionType::None
        } else if self.subsystem {
            SessionType::Subsystem
        } else {
            self.options.session_type.unwrap_or(SessionType::Default)
        }
    }

    /// `-n` or StdinNull.
    pub fn stdin_null(&self) -> bool {
        self.stdin_null || self.options.stdin_null == Some(true)
    }

    /// `-q` and `-v` beat LogLevel; the default is INFO.
    pub fn log_level(&self) -> LogLevel {
        if self.quiet {
            return LogLevel::Quiet;
        }
        match self.verbose {
            0 => self.options.log_level.unwrap_or(LogLevel::Info),
            1 => LogLevel::Debug1,
            2 => LogLevel::Debug2,
            _ => LogLevel::Debug3,
        }
    }

    /// `-4`/`-6`, else AddressFamily.
    pub fn address_family(&self) -> AddressFamily {
        self.family.or(self.options.address_family).unwrap_or(AddressFamily::Any)
    }

    /// `-b`, else BindAddress.
    pub fn bind_address(&self) -> Option<&str> {
        self.bind.as_deref().or(self.options.bind_address.as_deref())
    }

    /// `-g` or GatewayPorts.
    pub fn gateway_ports(&self) -> bool {
        self.gateway_ports || self.options.gateway_ports == Some(true)
    }

    /// Whether a command will be run (the command line's or RemoteCommand).
    fn has_command(&self) -> bool {
        self.command.is_some() || self.options.remote_command.is_some()
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
    Demo,
    /// `-Q`: the supported names, one a line.
    Query(Vec<&'static str>),
}

/// A command-line error: its message (empty: none), and whether the usage
/// follows it (a malformed line, not a bad value).
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
    pub usage: bool,
}

impl UsageError {
    /// Whether the usage text helps (a malformed line, not a bad value).
    pub fn show_usage(&self) -> bool {
        self.usage
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A bad value or an unsupported request: `sansh: msg`, exit 255.
fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError { message: format!("sansh: {}", msg.into()), usage: false })
}

/// A malformed line: `msg` (ssh's own words) then the usage, exit 255.
fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError { message: msg.into(), usage: true })
}

/// Single-letter options that take a value (ssh's getopt string).
const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
/// Single-letter flags.
const FLAGS: &str = "46AaCfGgKkMNnqsTtVvXxYy";

/// Parses `argv[1..]`.
pub fn parse(argv: &[String]) -> Result<Parsed, UsageError> {
    let mut a = Args::default();
    let mut i = 0;
    let mut host: Option<String> = None;
    let mut demo = false;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            if host.is_none() {
                let Some(h) = argv.get(i) else { return usage("") };
                host = Some(h.clone());
                i += 1;
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            match name {
                "help" => return Ok(Parsed::Help),
                "version" => return Ok(Parsed::Version),
                "demo" => demo = true,
                "repeat" => {
                    let v = match value {
                        Some(v) => v,
                        None => {
                            let Some(v) = argv.get(i) else {
                                return usage("option requires an argument -- repeat");
                            };
                            i += 1;
                            v.clone()
                        }
                    };
                    match v.parse::<u32>() {
                        Ok(n) if n > 0 => a.repeat = Some(n),
                        _ => return err(format!("--repeat: bad count '{v}'")),
                    }
                }
                "reconnect" => {
                    a.reconnect = Some(match value {
                        None => None,
                        Some(v) => match v.parse::<u32>() {
                            Ok(n) => Some(n),
                            Err(_) => return err(format!("--reconnect: bad retry count '{v}'")),
                        },
                    });
                }
                _ => return usage(format!("unknown option -- -{name}")),
            }
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') {
            let letters: Vec<char> = arg[1..].chars().collect();
            let mut k = 0;
            while k < letters.len() {
                let c = letters[k];
                k += 1;
                if WITH_VALUE.contains(c) {
                    let rest: String = letters[k..].iter().collect();
                    let value = if !rest.is_empty() {
                        rest
                    } else {
                        let Some(v) = argv.get(i) else {
                            return usage(format!("option requires an argument -- {c}"));
                        };
                        i += 1;
                        v.clone()
                    };
                    if c == 'Q' {
                        return match query(&value) {
                            Some(list) => Ok(Parsed::Query(list)),
                            None => err(format!("Unsupported query \"{value}\"")),
                        };
                    }
                    option_with_value(&mut a, c, &value)?;
                    break;
                } else if FLAGS.contains(c) {
                    flag(&mut a, c)?;
                    if c == 'V' {
                        return Ok(Parsed::Version);
                    }
                } else {
                    return usage(format!("unknown option -- {c}"));
                }
            }
            continue;
        }
        if host.is_none() {
            host = Some(arg.clone());
            continue;
        }
        // The first non-option after the host starts the command.
        i -= 1;
        break;
    }
    if demo {
        return Ok(Parsed::Demo);
    }
    let Some(host) = host else { return usage("") };
    let rest = &argv[i..];
    if !rest.is_empty() {
        a.command = Some(rest.join(" "));
    }
    let (user, host, port) = split_destination(&host)?;
    a.host_user = user;
    a.host = host;
    if a.port.is_none() {
        a.port = port;
    }
    if a.host.is_empty() {
        return usage("");
    }
    if a.command.is_some() && a.options.remote_command.is_some() {
        return err("Cannot execute command-line and remote command.");
    }
    match a.session_type() {
        SessionType::None if a.command.is_some() => return err("-N takes no command"),
        SessionType::Subsystem if !a.has_command() => {
            return err("You must specify a subsystem to invoke.");
        }
        _ => {}
    }
    if a.repeat.is_some() && !a.has_command() {
        return usage("--repeat needs a command");
    }
    if a.options.clear_all_forwardings == Some(true) {
        a.local.clear();
        a.remote.clear();
    }
    Ok(Parsed::Run(Box::new(a)))
}

/// A flag without a value.
fn flag(a: &mut Args, c: char) -> Result<(), UsageError> {
    match c {
        'N' => a.no_command = true,
        'n' => a.stdin_null = true,
        's' => a.subsystem = true,
        'q' => a.quiet = true,
        't' => a.tty += 1,
        'T' => a.no_tty = true,
        'v' => a.verbose += 1,
        'g' => a.gateway_ports = true,
        '4' => a.family = Some(AddressFamily::Inet),
        '6' => a.family = Some(AddressFamily::Inet6),
        'V' => {}
        'f' => return err("-f is not supported (sansh does not go to the background)"),
        'M' => return err("-M is not supported (no connection sharing: use --repeat)"),
        'G' => return err("-G is not supported (sansh reads no configuration files)"),
        'A' => a.notes.push("-A: agent forwarding is not supported; ignored".into()),
        'X' | 'Y' => a.notes.push(format!("-{c}: X11 forwarding is not supported; ignored")),
        'C' => a.notes.push("-C: sansh negotiates no compression; ignored".into()),
        'a' | 'x' => a.notes.push(format!("-{c}: nothing is forwarded anyway")),
        'k' | 'K' => a.notes.push(format!("-{c}: no GSSAPI in sansh; ignored")),
        'y' => a.notes.push("-y: sansh logs to stderr (or -E), not syslog".into()),
        _ => return usage(format!("unknown option -- {c}")),
    }
    Ok(())
}

/// `user@host`, `host`, or `ssh://[user@]host[:port]`.
fn split_destination(dest: &str) -> Result<(Option<String>, String, Option<u16>), UsageError> {
    if let Some(uri) = dest.strip_prefix("ssh://") {
        let uri = uri.trim_end_matches('/');
        let (user, hostport) = match uri.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, uri),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else { return err(format!("bad URI {dest}")) };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p)?),
                None => None,
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(parse_port(p)?)),
                None => (hostport.to_owned(), None),
            }
        };
        return Ok((user, host, port));
    }
    match dest.rsplit_once('@') {
        Some(("", _)) => err(format!("bad destination {dest}")),
        Some((u, h)) => Ok((Some(u.to_owned()), h.to_owned(), None)),
        None => Ok((None, dest.to_owned(), None)),
    }
}

fn parse_port(s: &str) -> Result<u16, UsageError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => err(format!("Bad port '{s}'")),
    }
}

/// `none` for path-like options that can be turned off (ProxyJump, ...).
fn is_none(v: &str) -> bool {
    v.eq_ignore_ascii_case("none")
}

fn option_with_value(a: &mut Args, c: char, value: &str) -> Result<(), UsageError> {
    match c {
        'p' => a.port = Some(parse_port(value)?),
        'l' => a.login = Some(value.to_owned()),
        'i' => a.identities.push(value.to_owned()),
        'o' => apply_option(a, value)?,
        'L' => a.local.push(ForwardSpec::parse(value).map_err(|e| bad_value(format!("-L {value}: {e}")))?),
        'R' => a.remote.push(ForwardSpec::parse(value).map_err(|e| bad_value(format!("-R {value}: {e}")))?),
        'b' => a.bind = Some(value.to_owned()),
        'E' => a.log_file = Some(PathBuf::from(value)),
        'e' => a.escape = Some(escape_char(value)?),
        // -F: sansh reads no ssh_config, so there is nothing to replace.
        'F' => a.notes.push(format!("-F {value}: sansh reads no configuration file; ignored")),
        'P' => a.notes.push(format!("-P {value}: sansh reads no configuration file, so tags select nothing")),
        // -c and -m: the ciphers and MACs (same as -o Ciphers and -o MACs).
        'c' => {
            if a.options.ciphers.is_none() {
                a.options.ciphers =
                    Some(algorithm_list("cipher", value, &CipherAlgorithm::ALL, None, |x| x.name())?);
            }
        }
        'm' => {
            if a.options.macs.is_none() {
                a.options.macs = Some(algorithm_list("MAC", value, &MacAlgorithm::ALL, None, |x| x.name())?);
            }
        }
        'J' | 'S' if is_none(value) => {}
        'B' | 'D' | 'I' | 'J' | 'O' | 'S' | 'W' | 'w' => return err(format!("-{c} is not supported")),
        _ => return usage(format!("unknown option -- {c}")),
    }
    Ok(())
}

fn bad_value(message: String) -> UsageError {
    UsageError { message: format!("sansh: {message}"), usage: false }
}

/// `-e` / EscapeChar: a character, `^X`, or `none`.
fn escape_char(v: &str) -> Result<EscapeChar, UsageError> {
    let b = v.as_bytes();
    match b {
        _ if is_none(v) => Ok(EscapeChar::None),
        [c] => Ok(EscapeChar::Char(*c)),
        [b'^', c] => Ok(EscapeChar::Char(c & 31)),
        _ => err(format!("Bad escape character '{v}'.")),
    }
}

/// `~/x` → `$HOME/x`, `~user/x` → that user's home.
pub fn expand_tilde(path: &str) -> PathBuf {
    let Some(rest) = path.strip_prefix('~') else { return PathBuf::from(path) };
    let (user, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i + 1..].trim_start_matches('/')),
        None => (rest, ""),
    };
    let dir = if user.is_empty() { Some(home()) } else { crate::tokens::home_of(user) };
    match dir {
        Some(d) if tail.is_empty() => d,
        Some(d) => d.join(tail),
        None => PathBuf::from(path),
    }
}

/// `$HOME` (or `.`).
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

fn yes_no(key: &str, v: &str) -> Result<bool, UsageError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => err(format!("{key}: expected yes or no, got '{v}'")),
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, UsageError> {
    v.parse().map_err(|_| bad_value(format!("{key}: bad number '{v}'")))
}

/// Sets `opt` if unset (the first value wins, as in ssh_config).
fn first<T>(opt: &mut Option<T>, value: T) {
    if opt.is_none() {
        *opt = Some(value);
    }
}

/// Splits a value into words as ssh_config does: on whitespace, with
/// double quotes keeping a word together.
pub fn words(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in v.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `*` and `?` wildcards, as ssh's match_pattern (case-sensitive).
pub fn glob(text: &str, pattern: &str) -> bool {
    fn go(t: &[u8], p: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
            Some((b'?', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
        }
    }
    go(text.as_bytes(), pattern.as_bytes())
}

/// A byte count with an optional K/M/G suffix (powers of 1024), as ssh's
/// RekeyLimit takes it.
fn byte_count(key: &str, v: &str) -> Result<u64, UsageError> {
    let (digits, mult) = match v.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(n) => Ok(n),
        None => err(format!("{key}: Bad number '{v}'")),
    }
}

/// A time in ssh_config's format: seconds, or `1h30m` style (s m h d w).
pub fn time_spec(key: &str, v: &str) -> Result<Duration, UsageError> {
    let bad = || bad_value(format!("{key}: invalid time value '{v}'"));
    let mut total = 0u64;
    let mut digits = String::new();
    for ch in v.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total.checked_add(n.checked_mul(unit).ok_or_else(bad)?).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        total = total.checked_add(digits.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    }
    if v.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// `RekeyLimit bytes|default [time|none]`.
fn rekey_limit(key: &str, v: &str) -> Result<RekeyLimit, UsageError> {
    let w = words(v);
    let (size, time) = match w.as_slice() {
        [size] => (size.as_str(), None),
        [size, time] => (size.as_str(), Some(time.as_str())),
        _ => return err(format!("{key}: expected bytes [time], got '{v}'")),
    };
    let bytes = if size.eq_ignore_ascii_case("default") {
        None
    } else {
        match byte_count(key, size)? {
            0 => None,
            n if n < 16 => return err(format!("{key}: RekeyLimit too small")),
            n => Some(n),
        }
    };
    let time = match time {
        None => None,
        Some(t) if is_none(t) => None,
        Some(t) => Some(time_spec(key, t)?).filter(|d| !d.is_zero()),
    };
    Ok(RekeyLimit { bytes, time })
}

/// The names `-Q` lists.
fn query(what: &str) -> Option<Vec<&'static str>> {
    let names = |v: &[&'static str]| Some(v.to_vec());
    let ciphers: Vec<_> = CipherAlgorithm::ALL.iter().map(|c| c.name()).collect();
    let sigs: Vec<_> = SignatureAlgorithm::ALL.iter().map(|s| s.name()).collect();
    match what.to_ascii_lowercase().as_str() {
        "cipher" | "ciphers" => Some(ciphers),
        "cipher-auth" => {
            Some(CipherAlgorithm::ALL.iter().filter(|c| c.is_aead()).map(|c| c.name()).collect())
        }
        "mac" | "macs" => Some(MacAlgorithm::ALL.iter().map(|m| m.name()).collect()),
        "kex" | "kexalgorithms" => Some(KexAlgorithm::ALL.iter().map(|k| k.name()).collect()),
        "key" | "key-plain" | "hostkeyalgorithms" => {
            Some(HostKeyAlgorithm::ALL.iter().map(|k| k.name()).collect())
        }
        "sig" | "key-sig" | "pubkeyacceptedalgorithms" | "casignaturealgorithms" => Some(sigs),
        "key-cert" | "key-ca-sign" | "kex-gss" | "hostbasedacceptedalgorithms" => Some(Vec::new()),
        "compression" => names(&["none"]),
        "protocol-version" => names(&["2"]),
        "help" => names(&[
            "cipher",
            "cipher-auth",
            "compression",
            "kex",
            "key",
            "key-ca-sign",
            "key-cert",
            "key-plain",
            "key-sig",
            "mac",
            "protocol-version",
            "sig",
        ]),
        _ => None,
    }
}

/// One `-o` argument: `Key=Value`, `Key Value` or `Key = Value`.
pub fn apply_option(a: &mut Args, text: &str) -> Result<(), UsageError> {
    let text = text.trim();
    let split = text.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(text.len());
    let (key, rest) = text.split_at(split);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    let value = rest.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(rest);
    if key.is_empty() || value.is_empty() {
        return err(format!("-o {text}: expected Key=Value"));
    }
    let lower = key.to_ascii_lowercase();
    let o = &mut a.options;
    match lower.as_str() {
        "stricthostkeychecking" => {
            let s = match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => Strict::Yes,
                "no" | "false" | "off" => Strict::No,
                "accept-new" => Strict::AcceptNew,
                "ask" => Strict::Ask,
                _ => {
                    return err(format!(
                        "StrictHostKeyChecking: expected yes, no, accept-new or ask, got '{value}'"
                    ));
                }
            };
            first(&mut o.strict, s);
        }
        "userknownhostsfile" | "globalknownhostsfile" => {
            // Several files may be listed (the first user file is the one
            // written); `none` means no file.
            let files = if is_none(value) { Vec::new() } else { words(value) };
            let slot =
                if lower == "userknownhostsfile" { &mut o.known_hosts } else { &mut o.global_known_hosts };
            first(slot, files);
        }
        "hashknownhosts" => first(&mut o.hash_known_hosts, yes_no(key, value)?),
        "hostkeyalias" => first(&mut o.host_key_alias, value.to_owned()),
        "nohostauthenticationforlocalhost" => first(&mut o.no_host_auth_for_localhost, yes_no(key, value)?),
        "serveraliveinterval" => first(&mut o.server_alive_interval, time_spec(key, value)?.as_secs()),
        "serveralivecountmax" => first(&mut o.server_alive_count_max, number(key, value)?),
        "connecttimeout" => first(&mut o.connect_timeout, time_spec(key, value)?.as_secs()),
        "connectionattempts" => match number::<u32>(key, value)? {
            0 => return err("Invalid number of ConnectionAttempts"),
            n => first(&mut o.connection_attempts, n),
        },
        "addressfamily" => {
            let f = match value.to_ascii_lowercase().as_str() {
                "any" => AddressFamily::Any,
                "inet" => AddressFamily::Inet,
                "inet6" => AddressFamily::Inet6,
                _ => return err(format!("{key}: unsupported option \"{value}\".")),
            };
            first(&mut o.address_family, f);
        }
        "bindaddress" => first(&mut o.bind_address, value.to_owned()),
        "bindinterface" => return err("BindInterface is not supported (use BindAddress)"),
        "ciphers" => {
            let list = algorithm_list("cipher", value, &CipherAlgorithm::ALL, None, |x| x.name())?;
            first(&mut o.ciphers, list);
        }
        "macs" => {
            let list = algorithm_list("MAC", value, &MacAlgorithm::ALL, None, |x| x.name())?;
            first(&mut o.macs, list);
        }
        "kexalgorithms" => {
            let list = algorithm_list("key exchange", value, &KexAlgorithm::ALL, None, |x| x.name())?;
            first(&mut o.kex, list);
        }
        "hostkeyalgorithms" => {
            let list = algorithm_list("host key", value, &HostKeyAlgorithm::ALL, None, |x| x.name())?;
            first(&mut o.host_key_algorithms, list);
        }
        "pubkeyacceptedalgorithms" | "pubkeyacceptedkeytypes" => {
            // ssh-rsa (SHA-1) is supported but not a default, as in OpenSSH.
            let defaults = sansh::ClientConfig::default().user_key_algorithms;
            let list =
                algorithm_list("public key", value, &SignatureAlgorithm::ALL, Some(&defaults), |x| x.name())?;
            first(&mut o.pubkey_algorithms, list);
        }
        "rekeylimit" => first(&mut o.rekey_limit, rekey_limit(key, value)?),
        "port" => first(&mut o.port, parse_port(value)?),
        "user" => first(&mut o.user, value.to_owned()),
        "hostname" => first(&mut o.hostname, value.to_owned()),
        "identityfile" => a.identities.push(value.to_owned()),
        "batchmode" => first(&mut o.batch_mode, yes_no(key, value)?),
        "passwordauthentication" => first(&mut o.password_auth, yes_no(key, value)?),
        "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
            first(&mut o.kbd_interactive_auth, yes_no(key, value)?)
        }
        "pubkeyauthentication" => {
            // 9.2 also takes `unbound` and `host-bound` (both mean yes here).
            let on = match value.to_ascii_lowercase().as_str() {
                "unbound" | "host-bound" => true,
                _ => yes_no(key, value)?,
            };
            first(&mut o.pubkey_auth, on);
        }
        "preferredauthentications" => {
            let list: Vec<String> =
                value.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect();
            first(&mut o.preferred_auth, list);
        }
        "numberofpasswordprompts" => match value.parse::<u32>() {
            Ok(n) => first(&mut o.number_of_password_prompts, n),
            Err(_) => return err(format!("{key}: integer value invalid.")),
        },
        "identitiesonly" => first(&mut o.identities_only, yes_no(key, value)?),
        "identityagent" => first(&mut o.identity_agent, value.to_owned()),
        "requesttty" => {
            let r = match value.to_ascii_lowercase().as_str() {
                "no" => RequestTty::No,
                "yes" | "force" => RequestTty::Yes,
                "auto" => RequestTty::Auto,
                _ => return err(format!("RequestTTY: expected yes, no, force or auto, got '{value}'")),
            };
            first(&mut o.request_tty, r);
        }
        "exitonforwardfailure" => first(&mut o.exit_on_forward_failure, yes_no(key, value)?),
        "gatewayports" => first(&mut o.gateway_ports, yes_no(key, value)?),
        "clearallforwardings" => first(&mut o.clear_all_forwardings, yes_no(key, value)?),
        // ssh_config's `LocalForward [bind:]port host:hostport`.
        "localforward" | "remoteforward" => {
            let spec = value.split_whitespace().collect::<Vec<_>>().join(":");
            let parsed = ForwardSpec::parse(&spec).map_err(|e| bad_value(format!("{key} {value}: {e}")))?;
            if lower == "localforward" {
                a.local.push(parsed);
            } else {
                a.remote.push(parsed);
            }
        }
        "sendenv" => {
            for pattern in words(value) {
                if pattern.contains('=') {
                    return err(format!("{key}: Invalid environment name '{pattern}'."));
                }
                match pattern.strip_prefix('-') {
                    Some(removed) => o.send_env.retain(|p| !glob(p, removed)),
                    None => o.send_env.push(pattern),
                }
            }
        }
        "setenv" => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for w in words(value) {
                let Some((name, val)) = w.split_once('=') else {
                    return err(format!("{key}: Invalid SetEnv."));
                };
                if name.is_empty() {
                    return err(format!("{key}: Invalid SetEnv."));
                }
                // A name given twice: the first value counts, as in ssh.
                if !pairs.iter().any(|(n, _)| n == name) {
                    pairs.push((name.to_owned(), val.to_owned()));
                }
            }
            first(&mut o.set_env, pairs);
        }
        "loglevel" => {
            let level = match value.to_ascii_uppercase().as_str() {
                "QUIET" => LogLevel::Quiet,
                "FATAL" => LogLevel::Fatal,
                "ERROR" => LogLevel::Error,
                "INFO" => LogLevel::Info,
                "VERBOSE" => LogLevel::Verbose,
                "DEBUG" | "DEBUG1" => LogLevel::Debug1,
                "DEBUG2" => LogLevel::Debug2,
                "DEBUG3" => LogLevel::Debug3,
                _ => return err(format!("unsupported log level '{value}'")),
            };
            first(&mut o.log_level, level);
        }
        "remotecommand" => {
            if !is_none(value) {
                first(&mut o.remote_command, value.to_owned());
            }
        }
        "sessiontype" => {
            let t = match value.to_ascii_lowercase().as_str() {
                "none" => SessionType::None,
                "subsystem" => SessionType::Subsystem,
                "default" => SessionType::Default,
                _ => return err(format!("{key}: unsupported option \"{value}\".")),
            };
            first(&mut o.session_type, t);
        }
        "stdinnull" => first(&mut o.stdin_null, yes_no(key, value)?),
        "escapechar" => first(&mut o.escape_char, escape_char(value)?),
        "ignoreunknown" => {
            let patterns = value.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
            first(&mut o.ignore_unknown, patterns);
        }
        "forkafterauthentication" => {
            if yes_no(key, value)? {
                return err("ForkAfterAuthentication is not supported");
            }
        }
        "controlmaster" => {
            // Without a master, `auto` and `no` connect directly, as here.
            a.notes.push(format!("ControlMaster {value}: sansh shares no connections; connecting directly"));
        }
        "tunnel" => {
            if !value.eq_ignore_ascii_case("no") {
                return err("Tunnel is not supported");
            }
        }
        // Asks for something sansh lacks: refused rather than silently ignored.
        "proxycommand" | "proxyjump" | "dynamicforward" | "knownhostscommand" | "certificatefile"
        | "pkcs11provider" | "revokedhostkeys" => {
            if !is_none(value) {
                return err(format!("{key} is not supported"));
            }
        }
        "host" | "match" | "include" => {
            return err(format!("{key} directive not supported as a command-line option"));
        }
        // Accepted; nothing they say applies to sansh (no X11 or agent
        // forwarding, compression, GSSAPI, hostbased auth, escape sequences,
        // connection sharing, DNS host keys, configuration files or syslog).
        "addkeystoagent"
        | "canonicaldomains"
        | "canonicalizefallbacklocal"
        | "canonicalizehostname"
        | "canonicalizemaxdots"
        | "canonicalizepermittedcnames"
        | "casignaturealgorithms"
        | "checkhostip"
        | "compression"
        | "controlpath"
        | "controlpersist"
        | "enableescapecommandline"
        | "enablesshkeysign"
        | "fingerprinthash"
        | "forwardagent"
        | "forwardx11"
        | "forwardx11timeout"
        | "forwardx11trusted"
        | "gssapiauthentication"
        | "gssapiclientidentity"
        | "gssapidelegatecredentials"
        | "gssapikeyexchange"
        | "gssapirenewalforcesrekey"
        | "gssapiserveridentity"
        | "gssapitrustdns"
        | "gssapikexalgorithms"
        | "hostbasedacceptedalgorithms"
        | "hostbasedkeytypes"
        | "hostbasedauthentication"
        | "ipqos"
        | "kbdinteractivedevices"
        | "localcommand"
        | "logverbose"
        | "obscurekeystroketiming"
        | "permitlocalcommand"
        | "permitremoteopen"
        | "protocol"
        | "proxyusefdpass"
        | "requiredrsasize"
        | "securitykeyprovider"
        | "streamlocalbindmask"
        | "streamlocalbindunlink"
        | "syslogfacility"
        | "tag"
        | "tcpkeepalive"
        | "tunneldevice"
        | "updatehostkeys"
        | "usekeychain"
        | "useroaming"
        | "verifyhostkeydns"
        | "visualhostkey"
        | "xauthlocation" => {
            a.notes.push(format!("-o {key}={value}: accepted, no effect in sansh"));
        }
        _ => {
            let ignored = o
                .ignore_unknown
                .as_ref()
                .is_some_and(|ps| ps.iter().any(|p| glob(&lower, &p.to_ascii_lowercase())));
            if ignored {
                a.notes.push(format!("-o {key}: unknown, ignored (IgnoreUnknown)"));
            } else {
                return err(format!("Bad configuration option: {key}"));
            }
        }
    }
    Ok(())
}

/// An OpenSSH algorithm list over `supported` (all we implement, in our
/// default order), starting from `defaults` (None: all of them): `a,b`
/// replaces, `+a,b` appends, `-a,b` removes, `^a,b` puts first. Unknown
/// names are an error listing what we support (except in a removal, where
/// they are simply absent).
pub fn algorithm_list<T: Copy + PartialEq>(
    what: &str,
    value: &str,
    supported: &[T],
    defaults: Option<&[T]>,
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, UsageError> {
    let defaults = defaults.unwrap_or(supported);
    let (mode, names) = match value.as_bytes().first() {
        Some(b'+' | b'-' | b'^') => (value.as_bytes()[0], &value[1..]),
        _ => (b'=', value),
    };
    let lookup = |n: &str| supported.iter().copied().find(|a| name(*a) == n);
    let all = || supported.iter().map(|a| name(*a)).collect::<Vec<_>>().join(",");
    let mut listed = Vec::new();
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match lookup(n) {
            Some(a) => {
                if !listed.contains(&a) {
                    listed.push(a);
                }
            }
            None if mode == b'-' => {}
            None => return err(format!("Bad SSH2 {what} spec '{n}': sansh supports {}", all())),
        }
    }
    let mut result: Vec<T> = match mode {
        b'+' => {
            let mut v = defaults.to_vec();
            v.extend(listed.iter().copied().filter(|a| !defaults.contains(a)));
            v
        }
        b'-' => defaults.iter().copied().filter(|a| !listed.contains(a)).collect(),
        b'^' => {
            let mut v = listed.clone();
            v.extend(defaults.iter().copied().filter(|a| !listed.contains(a)));
            v
        }
        _ => listed,
    };
    result.dedup();
    if result.is_empty() {
        return err(format!("Bad SSH2 {what} spec '{value}': the list is empty; sansh supports {}", all()));
    }
    Ok(result)
}

/// ConnectTimeout and friends as a `Duration` (0 means none).
pub fn secs(v: Option<u64>) -> Option<Duration> {
    v.filter(|&s| s > 0).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn args(s: &[&str]) -> Args {
        match parse(&v(s)).unwrap() {
            Parsed::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    fn error(s: &[&str]) -> UsageError {
        match parse(&v(s)) {
            Err(e) => e,
            Ok(p) => panic!("{s:?} parsed: {p:?}"),
        }
    }

    #[test]
    fn ssh_like_command_lines() {
        let a = args(&["-p2222", "-tt", "-o", "StrictHostKeyChecking=no", "bob@h", "ls", "-l", "/"]);
        assert_eq!((a.port, a.tty, a.host.as_str()), (Some(2222), 2, "h"));
        assert_eq!(a.host_user.as_deref(), Some("bob"));
        assert_eq!(a.command.as_deref(), Some("ls -l /"));
        assert_eq!(a.options.strict, Some(Strict::No));
        // Options after the host, before the command.
        let a = args(&["h", "-p", "22", "-v", "echo", "-p"]);
        assert_eq!((a.port, a.verbose, a.command.as_deref()), (Some(22), 1, Some("echo -p")));
        let a = args(&["-oUserKnownHostsFile /dev/null", "-o", "serveraliveinterval 5", "h"]);
        assert_eq!(a.options.known_hosts, Some(vec!["/dev/null".to_owned()]));
        assert_eq!(a.options.server_alive_interval, Some(5));
        let a = args(&["ssh://u@[::1]:2200", "true"]);
        assert_eq!((a.host.as_str(), a.port, a.host_user.as_deref()), ("::1", Some(2200), Some("u")));
    }

    /// Every flag of ssh(1): what it sets, or that it is refused.
    #[test]
    fn every_flag() {
        let a = args(&["-46", "h"]);
        assert_eq!(a.address_family(), AddressFamily::Inet6, "the last of -4/-6 wins");
        assert_eq!(args(&["-4", "h"]).address_family(), AddressFamily::Inet);
        assert_eq!(args(&["-o", "AddressFamily=inet6", "-4", "h"]).address_family(), AddressFamily::Inet);
        assert_eq!(args(&["-b", "127.0.0.2", "h"]).bind_address(), Some("127.0.0.2"));
        assert_eq!(args(&["-b127.0.0.2", "-o", "BindAddress=::1", "h"]).bind_address(), Some("127.0.0.2"));
        assert_eq!(args(&["-E", "/tmp/log", "h"]).log_file, Some(PathBuf::from("/tmp/log")));
        assert_eq!(args(&["-e", "none", "h"]).escape, Some(EscapeChar::None));
        assert_eq!(args(&["-e", "^]", "h"]).escape, Some(EscapeChar::Char(0x1d)));
        assert_eq!(args(&["-e", "%", "h"]).escape, Some(EscapeChar::Char(b'%')));
        assert!(error(&["-e", "xx", "h"]).message.contains("Bad escape character 'xx'."));
        assert!(args(&["-g", "h"]).gateway_ports());
        let a = args(&["-s", "h", "sftp"]);
        assert_eq!((a.session_type(), a.command.as_deref()), (SessionType::Subsystem, Some("sftp")));
        assert!(error(&["-s", "h"]).message.contains("You must specify a subsystem"));
        assert_eq!(args(&["-N", "h"]).session_type(), SessionType::None);
        assert!(args(&["-n", "h"]).stdin_null());
        assert_eq!(args(&["-q", "h"]).log_level(), LogLevel::Quiet);
        assert_eq!(args(&["-vvv", "h"]).log_level(), LogLevel::Debug3);
        assert!(args(&["-T", "h"]).no_tty);
        // Accepted, no effect.
        for f in ["-A", "-a", "-C", "-K", "-k", "-X", "-x", "-Y", "-y", "-Fnone", "-P", "-S", "-J"] {
            let line: &[&str] = match f {
                "-P" | "-S" | "-J" => &[f, "none", "h", "true"],
                _ => &[f, "h", "true"],
            };
            assert_eq!(args(line).command.as_deref(), Some("true"), "{f}");
        }
        assert!(args(&["-Caxy", "h"]).host == "h");
        // Refused, clearly.
        for (line, words) in [
            (&["-J", "jump", "h"][..], "-J is not supported"),
            (&["-W", "a:1", "h"], "-W is not supported"),
            (&["-O", "check", "h"], "-O is not supported"),
            (&["-S", "/tmp/ctl", "h"], "-S is not supported"),
            (&["-w", "0", "h"], "-w is not supported"),
            (&["-D", "1080", "h"], "-D is not supported"),
            (&["-B", "eth0", "h"], "-B is not supported"),
            (&["-I", "lib.so", "h"], "-I is not supported"),
            (&["-f", "h"], "-f is not supported"),
            (&["-G", "h"], "-G is not supported"),
            (&["-M", "h"], "-M is not supported"),
        ] {
            let e = error(line);
            assert!(e.message.contains(words) && !e.usage, "{line:?}: {e:?}");
        }
        // A missing argument or an unknown letter: ssh's words, then the usage.
        let e = error(&["h", "-p"]);
        assert_eq!((e.message.as_str(), e.usage), ("option requires an argument -- p", true));
        let e = error(&["-Z", "h"]);
        assert_eq!((e.message.as_str(), e.usage), ("unknown option -- Z", true));
        assert!(error(&[]).usage);
        // -Q lists what we support.
        match parse(&v(&["-Q", "cipher"])).unwrap() {
            Parsed::Query(names) => assert!(names.contains(&"chacha20-poly1305@openssh.com"), "{names:?}"),
            other => panic!("{other:?}"),
        }
        match parse(&v(&["-Q", "cipher-auth"])).unwrap() {
            Parsed::Query(names) => assert!(!names.contains(&"aes128-ctr"), "{names:?}"),
            other => panic!("{other:?}"),
        }
        assert!(error(&["-Q", "nonsense"]).message.contains("Unsupported query"));
    }

    /// Every -o option with an effect, and how its value is read.
    #[test]
    fn every_option_with_an_effect() {
        let o = |s: &[&str]| {
            let mut line = Vec::new();
            for x in s {
                line.extend(["-o", x]);
            }
            line.push("h");
            args(&line)
        };
        let a = o(&["PreferredAuthentications=password,publickey"]);
        assert_eq!(a.options.preferred_auth, Some(vec!["password".to_owned(), "publickey".to_owned()]));
        assert_eq!(o(&["ConnectionAttempts=3"]).options.connection_attempts, Some(3));
        assert!(error(&["-o", "ConnectionAttempts=0", "h"]).message.contains("ConnectionAttempts"));
        let r = o(&["RekeyLimit=1G 1h"]).options.rekey_limit.unwrap();
        assert_eq!((r.bytes, r.time), (Some(1 << 30), Some(Duration::from_secs(3600))));
        let r = o(&["RekeyLimit 64K"]).options.rekey_limit.unwrap();
        assert_eq!((r.bytes, r.time), (Some(65536), None));
        let r = o(&["RekeyLimit=default 1h30m"]).options.rekey_limit.unwrap();
        assert_eq!((r.bytes, r.time), (None, Some(Duration::from_secs(5400))));
        assert!(error(&["-o", "RekeyLimit=1Q", "h"]).message.contains("Bad number '1Q'"));
        assert!(error(&["-o", "RekeyLimit=8", "h"]).message.contains("too small"));
        let a = o(&["SendEnv=LANG LC_*", "SendEnv=FOO -LC_*"]);
        assert_eq!(a.options.send_env, vec!["LANG".to_owned(), "FOO".to_owned()]);
        let a = o(&["SetEnv=A=1 B=\"two words\" A=3", "SetEnv=C=4"]);
        let want = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two words".to_owned())];
        assert_eq!(a.options.set_env, Some(want), "the first SetEnv wins, as in ssh");
        assert!(error(&["-o", "SetEnv=NOVALUE", "h"]).message.contains("Invalid SetEnv"));
        assert_eq!(o(&["IdentitiesOnly=yes"]).options.identities_only, Some(true));
        assert_eq!(o(&["IdentityAgent=none"]).options.identity_agent.as_deref(), Some("none"));
        assert_eq!(o(&["NumberOfPasswordPrompts=1"]).options.number_of_password_prompts, Some(1));
        assert!(error(&["-o", "NumberOfPasswordPrompts=x", "h"]).message.contains("integer value invalid"));
        let a = o(&["GlobalKnownHostsFile=/a /b", "UserKnownHostsFile=none"]);
        assert_eq!(a.options.global_known_hosts, Some(vec!["/a".to_owned(), "/b".to_owned()]));
        assert_eq!(a.options.known_hosts, Some(vec![]));
        assert_eq!(o(&["HashKnownHosts=yes"]).options.hash_known_hosts, Some(true));
        assert_eq!(o(&["HostKeyAlias=alias"]).options.host_key_alias.as_deref(), Some("alias"));
        assert_eq!(
            o(&["NoHostAuthenticationForLocalhost=yes"]).options.no_host_auth_for_localhost,
            Some(true)
        );
        for (level, want) in [
            ("QUIET", LogLevel::Quiet),
            ("FATAL", LogLevel::Fatal),
            ("error", LogLevel::Error),
            ("INFO", LogLevel::Info),
            ("VERBOSE", LogLevel::Verbose),
            ("DEBUG", LogLevel::Debug1),
            ("DEBUG1", LogLevel::Debug1),
            ("DEBUG2", LogLevel::Debug2),
            ("DEBUG3", LogLevel::Debug3),
        ] {
            assert_eq!(o(&[&format!("LogLevel={level}")]).log_level(), want, "{level}");
        }
        assert!(error(&["-o", "LogLevel=FOO", "h"]).message.contains("unsupported log level 'FOO'"));
        assert_eq!(args(&["-v", "-o", "LogLevel=QUIET", "h"]).log_level(), LogLevel::Debug1);
        assert_eq!(o(&["ServerAliveCountMax=5"]).options.server_alive_count_max, Some(5));
        assert_eq!(o(&["ServerAliveInterval=1m"]).options.server_alive_interval, Some(60));
        assert_eq!(o(&["ConnectTimeout=7"]).options.connect_timeout, Some(7));
        assert_eq!(o(&["ExitOnForwardFailure=yes"]).options.exit_on_forward_failure, Some(true));
        assert_eq!(o(&["RequestTTY=force"]).options.request_tty, Some(RequestTty::Yes));
        assert_eq!(o(&["EscapeChar=~"]).options.escape_char, Some(EscapeChar::Char(b'~')));
        assert_eq!(o(&["BatchMode=yes"]).options.batch_mode, Some(true));
        for (v, want) in [
            ("off", Strict::No),
            ("no", Strict::No),
            ("accept-new", Strict::AcceptNew),
            ("yes", Strict::Yes),
            ("ask", Strict::Ask),
        ] {
            assert_eq!(o(&[&format!("StrictHostKeyChecking={v}")]).options.strict, Some(want), "{v}");
        }
        let a = o(&["Hostname=%h.example", "Port=2200", "User=bob", "IdentityFile=~/.ssh/id_%h_%r"]);
        assert_eq!(a.options.hostname.as_deref(), Some("%h.example"));
        assert_eq!((a.options.port, a.options.user.as_deref()), (Some(2200), Some("bob")));
        assert_eq!(a.identities, vec!["~/.ssh/id_%h_%r".to_owned()]);
        // -p beats -o Port; the first -o wins.
        let a = args(&["-o", "Port=1", "-o", "Port=2", "-p", "3", "h"]);
        assert_eq!((a.port, a.options.port), (Some(3), Some(1)));
        assert_eq!(o(&["AddressFamily=inet"]).address_family(), AddressFamily::Inet);
        assert!(error(&["-o", "AddressFamily=foo", "h"]).message.contains("unsupported option \"foo\""));
        assert_eq!(o(&["BindAddress=127.0.0.2"]).bind_address(), Some("127.0.0.2"));
        assert!(o(&["GatewayPorts=yes"]).gateway_ports());
        let a = args(&["-L", "1:h:2", "-o", "ClearAllForwardings=yes", "-R", "3:h:4", "h"]);
        assert!(a.local.is_empty() && a.remote.is_empty());
        let a = o(&["RemoteCommand=uptime"]);
        assert_eq!(a.options.remote_command.as_deref(), Some("uptime"));
        assert!(error(&["-o", "RemoteCommand=uptime", "h", "ls"]).message.contains("Cannot execute"));
        assert_eq!(o(&["SessionType=none"]).session_type(), SessionType::None);
        assert!(o(&["StdinNull=yes"]).stdin_null());
        let a = o(&["PubkeyAcceptedAlgorithms=+ssh-rsa"]);
        assert!(a.options.pubkey_algorithms.unwrap().contains(&SignatureAlgorithm::RsaSha1));
        let a = o(&["PubkeyAcceptedAlgorithms=-ssh-ed25519"]);
        let algs = a.options.pubkey_algorithms.unwrap();
        assert!(!algs.contains(&SignatureAlgorithm::Ed25519) && !algs.contains(&SignatureAlgorithm::RsaSha1));
        assert_eq!(o(&["PubkeyAuthentication=host-bound"]).options.pubkey_auth, Some(true));
        assert_eq!(o(&["PasswordAuthentication=no"]).options.password_auth, Some(false));
        assert_eq!(o(&["KbdInteractiveAuthentication=no"]).options.kbd_interactive_auth, Some(false));
        assert_eq!(o(&["LocalForward=8080 localhost:80"]).local.len(), 1);
        assert_eq!(o(&["RemoteForward 9090 localhost:90"]).remote.len(), 1);
    }

    /// Options accepted without effect, refused ones, and IgnoreUnknown.
    #[test]
    fn options_without_effect_or_refused() {
        for opt in [
            "UpdateHostKeys=no",
            "UpdateHostKeys=yes",
            "Compression=yes",
            "ForwardAgent=yes",
            "ForwardX11=no",
            "TCPKeepAlive=yes",
            "CheckHostIP=no",
            "VisualHostKey=no",
            "ControlMaster=auto",
            "ControlPath=/tmp/%C",
            "ControlPersist=60",
            "GSSAPIAuthentication=no",
            "HostbasedAuthentication=no",
            "ProxyCommand=none",
            "ProxyJump=none",
            "ForkAfterAuthentication=no",
            "Tunnel=no",
            "LogVerbose=kex.c:*",
            "AddKeysToAgent=no",
            "IPQoS=lowdelay",
        ] {
            assert_eq!(args(&["-o", opt, "h", "true"]).command.as_deref(), Some("true"), "{opt}");
        }
        for (opt, words) in [
            ("ProxyCommand=nc %h %p", "ProxyCommand is not supported"),
            ("ProxyJump=jump", "ProxyJump is not supported"),
            ("DynamicForward=1080", "DynamicForward is not supported"),
            ("ForkAfterAuthentication=yes", "ForkAfterAuthentication is not supported"),
            ("Tunnel=yes", "Tunnel is not supported"),
            ("CertificateFile=~/.ssh/id-cert.pub", "CertificateFile is not supported"),
            ("Host=x", "Host directive not supported"),
            ("Nonsense=1", "Bad configuration option: Nonsense"),
        ] {
            let e = error(&["-o", opt, "h"]);
            assert!(e.message.contains(words) && !e.usage, "{opt}: {e:?}");
        }
        let a = args(&["-o", "IgnoreUnknown=Use*,Foo", "-o", "UseFancyThing=yes", "-o", "foo=1", "h"]);
        assert_eq!(a.host, "h");
        assert!(
            error(&["-o", "Bar=1", "-o", "IgnoreUnknown=Bar", "h"]).message.contains("Bad configuration")
        );
    }

    #[test]
    fn values_read_as_ssh_config_does() {
        assert_eq!(words(r#"A=1 B="x y"  C="#), vec!["A=1", "B=x y", "C="]);
        assert!(glob("LC_ALL", "LC_*") && glob("LANG", "L?NG") && !glob("XLANG", "LANG"));
        assert_eq!(time_spec("t", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(time_spec("t", "1w2d").unwrap(), Duration::from_secs(8 * 86_400 + 86_400));
        assert!(time_spec("t", "5x").is_err());
        assert_eq!(byte_count("k", "2M").unwrap(), 2 << 20);
        assert_eq!(expand_tilde("~/x"), home().join("x"));
        assert_eq!(expand_tilde("/abs"), PathBuf::from("/abs"));
        assert_eq!(expand_tilde("~root/k"), PathBuf::from("/root/k"));
    }

    #[test]
    fn algorithm_lists() {
        let all = CipherAlgorithm::ALL;
        let n = |c: CipherAlgorithm| c.name();
        assert_eq!(
            algorithm_list("cipher", "aes128-gcm@openssh.com", &all, None, n).unwrap(),
            vec![CipherAlgorithm::Aes128Gcm]
        );
        assert_eq!(
            algorithm_list("cipher", "-chacha20-poly1305@openssh.com,aes128-ctr", &all, None, n)
                .unwrap()
                .len(),
            all.len() - 2
        );
        assert_eq!(
            algorithm_list("cipher", "^aes256-gcm@openssh.com", &all, None, n).unwrap()[0],
            CipherAlgorithm::Aes256Gcm
        );
        let e = algorithm_list("cipher", "aes128-cbc", &all, None, n).unwrap_err().message;
        assert!(e.contains("aes128-cbc") && e.contains("aes128-ctr"), "{e}");
        let a = args(&["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256", "h"]);
        assert_eq!(a.options.ciphers, Some(vec![CipherAlgorithm::Aes128Ctr]));
        assert_eq!(a.options.macs, Some(vec![MacAlgorithm::HmacSha256]));
        let a = args(&["-c", "aes256-ctr", "-m", "hmac-sha1,hmac-sha2-512-etm@openssh.com", "h"]);
        assert_eq!(a.options.macs, Some(vec![MacAlgorithm::HmacSha1, MacAlgorithm::HmacSha512Etm]));
        assert!(parse(&v(&["-o", "MACs=umac-64@openssh.com", "h"])).is_err());
    }

    #[test]
    fn bad_lines() {
        for bad in [
            &["-o", "Nonsense=1", "h"][..],
            &["-p", "x", "h"],
            &[],
            &["-N", "h", "ls"],
            &["--repeat", "0", "h"],
            &["--repeat", "2", "h"],
        ] {
            assert!(parse(&v(bad)).is_err(), "{bad:?}");
        }
    }
}
