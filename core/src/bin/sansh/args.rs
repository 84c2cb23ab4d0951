//! The command line, parsed as OpenSSH's `ssh` parses it: single-letter
//! options (clustered, values attached or separate), options also after the
//! host, the first other argument after the host starting the command; and
//! `-o Key=Value` options with OpenSSH's names (case-insensitive) and
//! precedence (a `-p`/`-l` flag beats `-o`; among `-o`, the first wins).

use std::path::PathBuf;
use std::time::Duration;

use sansh::{CipherAlgorithm, HostKeyAlgorithm, KexAlgorithm, MacAlgorithm};

use crate::forward::ForwardSpec;

/// The usage line, printed with errors.
pub const USAGE: &str = "\
usage: sansh [-NnqTtVv] [-i identity_file] [-L [bind_address:]port:host:hostport]
             [-l login_name] [-o option] [-p port] [-R [bind_address:]port:host:hostport]
             [--repeat N] [--reconnect[=MAX]] [--demo] [--help]
             [user@]host [command [argument ...]]";

/// `--help`.
pub const HELP: &str = "\
sansh: an SSH client on the sansh sans-IO core, used like OpenSSH's ssh.

usage: sansh [options] [user@]host [command [argument ...]]
       sansh --demo

Options:
  -p port            port to connect to (default 22)
  -l login_name      user to log in as (default: $USER)
  -i identity_file   private key (OpenSSH format) to authenticate with; repeatable.
                     Default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa when present
  -o Key=Value       an ssh_config option (see below); repeatable
  -L [bind_address:]port:host:hostport
                     forward local port to host:hostport through the server
  -R [bind_address:]port:host:hostport
                     forward the server's port to host:hostport from here
                     (port 0: the server picks, and the port is printed)
  -N                 run no command: just forward ports until the connection ends
  -n                 read no standard input (as if from /dev/null)
  -t                 request a pseudo-terminal (even for a command, even when
                     stdin is not a terminal)
  -T                 request no pseudo-terminal
  -v                 log to stderr; repeat (-vv, -vvv) for more
  -q                 quiet: only errors
  -V                 print the version and exit
  --repeat N         run the command N times over the one connection, then print
                     latency p50/p90/p99 and the mean to stderr
  --reconnect[=MAX]  when the connection is lost, reconnect with backoff (as
                     autossh does), re-establish -L/-R and start the command or
                     shell again; at most MAX consecutive failed attempts
                     (default: no limit). Liveness probes default to
                     ServerAliveInterval=15 with it
  --demo             run the self-contained demo (no server needed)
  --help             this text

-o options (case-insensitive names, Key=Value or \"Key Value\"):
  StrictHostKeyChecking yes|no|accept-new|ask   (default ask: prompt on the
                     terminal, or refuse unknown hosts when there is none;
                     no: accept any key and record nothing)
  UserKnownHostsFile path   (default ~/.ssh/known_hosts; /dev/null works)
  ServerAliveInterval seconds, ServerAliveCountMax n   (liveness probes)
  ConnectTimeout seconds    (TCP connect, key exchange and authentication)
  Ciphers list, KexAlgorithms list, HostKeyAlgorithms list
                     (comma lists; +list appends, -list removes, ^list prepends)
  Port, User, HostName, IdentityFile, BatchMode yes|no (no prompts),
  PasswordAuthentication, KbdInteractiveAuthentication, PubkeyAuthentication,
  IdentityAgent none|path, RequestTTY yes|no|force|auto, ExitOnForwardFailure,
  LocalForward, RemoteForward

Environment:
  SANSH_PASSWORD     password (and single hidden keyboard-interactive answer)
  SANSH_PASSPHRASE   passphrase for encrypted identity files
  SSH_AUTH_SOCK      the ssh-agent to use
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

/// Everything `-o` (and the flags that set the same things) can say.
#[derive(Clone, Debug, Default)]
pub struct SshOptions {
    pub strict: Option<Strict>,
    pub known_hosts: Option<PathBuf>,
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<u32>,
    pub connect_timeout: Option<u64>,
    pub ciphers: Option<Vec<CipherAlgorithm>>,
    pub macs: Option<Vec<MacAlgorithm>>,
    pub kex: Option<Vec<KexAlgorithm>>,
    pub host_key_algorithms: Option<Vec<HostKeyAlgorithm>>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub batch_mode: Option<bool>,
    pub password_auth: Option<bool>,
    pub kbd_interactive_auth: Option<bool>,
    pub pubkey_auth: Option<bool>,
    pub identity_agent: Option<String>,
    pub request_tty: Option<RequestTty>,
    pub exit_on_forward_failure: Option<bool>,
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
    /// `-i` and `-o IdentityFile`, in order.
    pub identities: Vec<PathBuf>,
    pub options: SshOptions,
    pub local: Vec<ForwardSpec>,
    pub remote: Vec<ForwardSpec>,
    /// `-N`.
    pub no_command: bool,
    /// `-n`.
    pub stdin_null: bool,
    /// `-t` count.
    pub tty: u32,
    /// `-T`.
    pub no_tty: bool,
    /// `-v` count.
    pub verbose: u32,
    /// `-q`.
    pub quiet: bool,
    /// The remote command, joined with spaces as ssh does.
    pub command: Option<String>,
    /// `--repeat N`.
    pub repeat: Option<u32>,
    /// `--reconnect[=MAX]`: Some(None) retries forever, Some(Some(n)) at
    /// most n consecutive times.
    pub reconnect: Option<Option<u32>>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
    Demo,
}

/// A command-line error: the message (printed before the usage when the
/// line itself is malformed, alone for a bad option value).
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    /// Whether the usage line helps (a malformed line, not a bad value).
    pub fn show_usage(&self) -> bool {
        ["no host", "unknown option", "requires an argument", "missing host", "takes no command", "needs a"]
            .iter()
            .any(|m| self.0.contains(m))
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Single-letter options that take a value.
const WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWw";
/// Single-letter flags we accept (some only to ignore, as harmless).
const FLAGS: &str = "46ACfGgKkMNnqsTtVvXxYy";

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
                let Some(h) = argv.get(i) else { return err("missing host after --") };
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
                            let Some(v) = argv.get(i) else { return err("--repeat needs a count") };
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
                _ => return err(format!("unknown option --{name}")),
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
                            return err(format!("option requires an argument -- {c}"));
                        };
                        i += 1;
                        v.clone()
                    };
                    option_with_value(&mut a, c, &value)?;
                    break;
                } else if FLAGS.contains(c) {
                    match c {
                        'N' => a.no_command = true,
                        'n' => a.stdin_null = true,
                        'q' => a.quiet = true,
                        't' => a.tty += 1,
                        'T' => a.no_tty = true,
                        'v' => a.verbose += 1,
                        'V' => return Ok(Parsed::Version),
                        'f' | 'M' | 's' | 'G' => return err(format!("-{c} is not supported by sansh")),
                        'A' => tracing::debug!("-A: agent forwarding is not supported; ignored"),
                        'X' | 'Y' => tracing::debug!("-{c}: X11 forwarding is not supported; ignored"),
                        _ => {} // -4 -6 -C -a -g -k -K -x -y: nothing to do
                    }
                } else {
                    return err(format!("unknown option -- {c}"));
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
    let Some(host) = host else { return err("no host given") };
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
        return err("no host given");
    }
    if a.no_command && a.command.is_some() {
        return err("-N takes no command");
    }
    if a.repeat.is_some() && a.command.is_none() {
        return err("--repeat needs a command");
    }
    Ok(Parsed::Run(Box::new(a)))
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

fn option_with_value(a: &mut Args, c: char, value: &str) -> Result<(), UsageError> {
    match c {
        'p' => a.port = Some(parse_port(value)?),
        'l' => a.login = Some(value.to_owned()),
        'i' => a.identities.push(expand_tilde(value)),
        'o' => apply_option(a, value)?,
        'L' => a.local.push(ForwardSpec::parse(value).map_err(|e| UsageError(format!("-L {value}: {e}")))?),
        'R' => a.remote.push(ForwardSpec::parse(value).map_err(|e| UsageError(format!("-R {value}: {e}")))?),
        // -F: sansh reads no ssh_config, so there is nothing to replace.
        'F' => tracing::debug!("-F {value}: sansh reads no configuration file; ignored"),
        // -c and -m: the ciphers and MACs (same as -o Ciphers and -o MACs).
        'c' => {
            if a.options.ciphers.is_none() {
                a.options.ciphers =
                    Some(algorithm_list("cipher", value, &CipherAlgorithm::ALL, |x| x.name())?);
            }
        }
        'm' => {
            if a.options.macs.is_none() {
                a.options.macs = Some(algorithm_list("MAC", value, &MacAlgorithm::ALL, |x| x.name())?);
            }
        }
        _ => return err(format!("-{c} is not supported by sansh")),
    }
    Ok(())
}

/// `~/x` → `$HOME/x`.
pub fn expand_tilde(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if path == "~" => home(),
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
    v.parse().map_err(|_| UsageError(format!("{key}: bad number '{v}'")))
}

/// Sets `opt` if unset (the first value wins, as in ssh_config).
fn first<T>(opt: &mut Option<T>, value: T) {
    if opt.is_none() {
        *opt = Some(value);
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
    let o = &mut a.options;
    match key.to_ascii_lowercase().as_str() {
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
        "userknownhostsfile" => {
            // Several files may be listed; the first is the one written.
            let path = value.split_whitespace().next().unwrap_or(value);
            first(&mut o.known_hosts, expand_tilde(path));
        }
        "serveraliveinterval" => first(&mut o.server_alive_interval, number(key, value)?),
        "serveralivecountmax" => first(&mut o.server_alive_count_max, number(key, value)?),
        "connecttimeout" => first(&mut o.connect_timeout, number(key, value)?),
        "ciphers" => {
            let list = algorithm_list("cipher", value, &CipherAlgorithm::ALL, |x| x.name())?;
            first(&mut o.ciphers, list);
        }
        "macs" => {
            let list = algorithm_list("MAC", value, &MacAlgorithm::ALL, |x| x.name())?;
            first(&mut o.macs, list);
        }
        "kexalgorithms" => {
            let list = algorithm_list("key exchange", value, &KexAlgorithm::ALL, |x| x.name())?;
            first(&mut o.kex, list);
        }
        "hostkeyalgorithms" => {
            let list = algorithm_list("host key", value, &HostKeyAlgorithm::ALL, |x| x.name())?;
            first(&mut o.host_key_algorithms, list);
        }
        "port" => first(&mut o.port, parse_port(value)?),
        "user" => first(&mut o.user, value.to_owned()),
        "hostname" => first(&mut o.hostname, value.to_owned()),
        "identityfile" => a.identities.push(expand_tilde(value)),
        "batchmode" => first(&mut o.batch_mode, yes_no(key, value)?),
        "passwordauthentication" => first(&mut o.password_auth, yes_no(key, value)?),
        "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
            first(&mut o.kbd_interactive_auth, yes_no(key, value)?)
        }
        "pubkeyauthentication" => first(&mut o.pubkey_auth, yes_no(key, value)?),
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
        // ssh_config's `LocalForward [bind:]port host:hostport`.
        "localforward" | "remoteforward" => {
            let spec = value.split_whitespace().collect::<Vec<_>>().join(":");
            let parsed = ForwardSpec::parse(&spec).map_err(|e| UsageError(format!("{key} {value}: {e}")))?;
            if key.eq_ignore_ascii_case("localforward") {
                a.local.push(parsed);
            } else {
                a.remote.push(parsed);
            }
        }
        // Accepted and without effect here.
        "loglevel"
        | "compression"
        | "forwardagent"
        | "forwardx11"
        | "addressfamily"
        | "tcpkeepalive"
        | "identitiesonly"
        | "hashknownhosts"
        | "checkhostip"
        | "updatehostkeys"
        | "visualhostkey"
        | "globalknownhostsfile"
        | "numberofpasswordprompts"
        | "controlmaster"
        | "controlpath"
        | "controlpersist"
        | "serveralive"
        | "sendenv"
        | "setenv"
        | "escapechar" => {
            tracing::debug!("-o {key}: accepted, no effect in sansh");
        }
        _ => return err(format!("Bad configuration option: {key}")),
    }
    Ok(())
}

/// An OpenSSH algorithm list over `supported` (all we implement, in our
/// default order): `a,b` replaces, `+a,b` appends, `-a,b` removes, `^a,b`
/// puts first. Unknown names are an error listing what we support (except
/// in a removal, where they are simply absent).
pub fn algorithm_list<T: Copy + PartialEq>(
    what: &str,
    value: &str,
    supported: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, UsageError> {
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
        // Our defaults are everything we support: appending adds nothing.
        b'+' => supported.to_vec(),
        b'-' => supported.iter().copied().filter(|a| !listed.contains(a)).collect(),
        b'^' => {
            let mut v = listed.clone();
            v.extend(supported.iter().copied().filter(|a| !listed.contains(a)));
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

    fn args(s: &[&str]) -> Args {
        let v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        match parse(&v).unwrap() {
            Parsed::Run(a) => *a,
            other => panic!("{other:?}"),
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
        assert_eq!(a.options.known_hosts, Some(PathBuf::from("/dev/null")));
        assert_eq!(a.options.server_alive_interval, Some(5));
        let a = args(&["ssh://u@[::1]:2200", "true"]);
        assert_eq!((a.host.as_str(), a.port, a.host_user.as_deref()), ("::1", Some(2200), Some("u")));
    }

    #[test]
    fn algorithm_lists() {
        let all = CipherAlgorithm::ALL;
        let n = |c: CipherAlgorithm| c.name();
        assert_eq!(
            algorithm_list("cipher", "aes128-gcm@openssh.com", &all, n).unwrap(),
            vec![CipherAlgorithm::Aes128Gcm]
        );
        assert_eq!(
            algorithm_list("cipher", "-chacha20-poly1305@openssh.com,aes128-ctr", &all, n).unwrap().len(),
            all.len() - 2
        );
        assert_eq!(
            algorithm_list("cipher", "^aes256-gcm@openssh.com", &all, n).unwrap()[0],
            CipherAlgorithm::Aes256Gcm
        );
        let e = algorithm_list("cipher", "aes128-cbc", &all, n).unwrap_err().0;
        assert!(e.contains("aes128-cbc") && e.contains("aes128-ctr"), "{e}");
        let a = args(&["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256", "h"]);
        assert_eq!(a.options.ciphers, Some(vec![CipherAlgorithm::Aes128Ctr]));
        assert_eq!(a.options.macs, Some(vec![MacAlgorithm::HmacSha256]));
        let a = args(&["-c", "aes256-ctr", "-m", "hmac-sha1,hmac-sha2-512-etm@openssh.com", "h"]);
        assert_eq!(a.options.macs, Some(vec![MacAlgorithm::HmacSha1, MacAlgorithm::HmacSha512Etm]));
        assert!(parse(&["-o".into(), "MACs=umac-64@openssh.com".into(), "h".into()]).is_err());
    }

    #[test]
    fn bad_lines() {
        for bad in [
            &["-o", "Nonsense=1", "h"][..],
            &["-p", "x", "h"],
            &[],
            &["-N", "h", "ls"],
            &["--repeat", "0", "h"],
        ] {
            let v: Vec<String> = bad.iter().map(|x| x.to_string()).collect();
            assert!(parse(&v).is_err(), "{bad:?}");
        }
    }
}
