//! OpenSSH `known_hosts` files: parsing, host-key lookup and new entries.
//!
//! Pure: the caller reads and appends the file, and supplies the salt for
//! hashed entries, so this module needs no filesystem, clock or randomness.
//! Semantics follow OpenSSH's `hostfile.c`/`match.c` (see `sshd(8)`,
//! "SSH_KNOWN_HOSTS FILE FORMAT"); deliberate differences are documented on
//! the item concerned.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use ssh_key::{Algorithm, PublicKey};

/// OpenSSH's limit on one host pattern: a longer pattern makes its whole
/// line fail to match (`match_pattern_list`'s buffer).
const MAX_PATTERN_LEN: usize = 1023;

/// Length of the salt and of the HMAC-SHA1 in a hashed host name.
const HASH_LEN: usize = 20;

/// Prefix of a hashed host name; `1` is the only scheme OpenSSH defines.
const HASH_MAGIC: &str = "|1|";

/// The optional `@` marker that starts a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// An ordinary host key line.
    None,
    /// `@cert-authority`: the key signs host certificates for these hosts.
    CertAuthority,
    /// `@revoked`: the key must never be accepted for these hosts.
    Revoked,
}

/// The host-names field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPatterns {
    /// Comma-separated patterns as written: `*` and `?` are wildcards, a
    /// leading `!` negates, `[host]:port` names a non-standard port.
    Plain(Vec<String>),
    /// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`: hides the name.
    Hashed {
        /// The HMAC key; always 20 bytes when parsed (OpenSSH requires it).
        salt: Vec<u8>,
        /// HMAC-SHA1 of the lowercased host name (see [`host_name_for`]).
        hash: [u8; 20],
    },
}

impl HostPatterns {
    /// Whether this field selects `name`, a host name as produced by
    /// [`host_name_for`] (compared case-insensitively).
    ///
    /// Plain: some pattern matches and no negated pattern does. Hashed: the
    /// HMAC of the name equals the stored hash.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            HostPatterns::Plain(patterns) => match_pattern_list(&name, patterns),
            HostPatterns::Hashed { salt, hash } => hash_host_name(&name, salt) == *hash,
        }
    }
}

/// One parsed host key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the parsed text.
    pub line: usize,
    /// The line's marker, if any.
    pub marker: Marker,
    /// Which hosts the line applies to.
    pub hosts: HostPatterns,
    /// The key. Its own comment is left empty (the line's comment is in
    /// [`Entry::comment`]), so `==` between keys compares key material only.
    pub key: PublicKey,
    /// Free text after the key, trimmed; `None` when absent.
    pub comment: Option<String>,
}

impl Entry {
    /// Whether this line applies to `host` on `port`.
    pub fn matches_host(&self, host: &str, port: u16) -> bool {
        self.hosts.matches(&host_name_for(host, port))
    }
}

/// A line that could not be parsed; it was skipped, as OpenSSH does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("known_hosts line {line}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub message: String,
}

/// The outcome of checking a plain host key against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// An unmarked line for this host has exactly this key.
    Match {
        /// The first such line.
        line: usize,
    },
    /// The host is known, with other keys only (of any type): it changed,
    /// or someone is in the middle. OpenSSH refuses this too.
    Mismatch {
        /// Every such line, in file order.
        lines: Vec<usize>,
        /// Their keys, in the same order.
        known: Vec<PublicKey>,
    },
    /// A matching `@revoked` line lists this key. Beats [`Lookup::Match`].
    Revoked {
        /// The first such line.
        line: usize,
    },
    /// No unmarked line names this host (OpenSSH's `HOST_NEW`).
    Unknown,
}

/// A parsed `known_hosts` file: the usable entries and the skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    errors: Vec<LineError>,
}

impl KnownHosts {
    /// Parses the text of a `known_hosts` file.
    ///
    /// Lenient like OpenSSH: blank lines and `#` comments are skipped, and a
    /// malformed line is recorded in [`KnownHosts::errors`] and skipped, so
    /// one bad line never hides the others. Fields are separated by spaces
    /// or tabs; leading whitespace and CRLF line ends are accepted.
    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index.saturating_add(1);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            match parse_line(raw) {
                Ok(None) => {}
                Ok(Some((marker, hosts, key, comment))) => {
                    known.entries.push(Entry { line, marker, hosts, key, comment })
                }
                Err(message) => known.errors.push(LineError { line, message }),
            }
        }
        known
    }

    /// The successfully parsed lines, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The skipped lines, in file order.
    pub fn errors(&self) -> &[LineError] {
        &self.errors
    }

    /// Checks the plain (non-certificate) host key `key` presented by
    /// `host` on `port`.
    ///
    /// `@revoked` wins over everything; `@cert-authority` lines are ignored
    /// (see [`KnownHosts::cert_authorities`]). Key comments are ignored.
    ///
    /// As in OpenSSH, any unmarked key on record for the host that differs
    /// from `key`, whatever its algorithm, makes it a [`Lookup::Mismatch`]
    /// (clients avoid spurious ones by preferring the host key algorithms
    /// of [`KnownHosts::known_keys`]). OpenSSH also retries an `Unknown`
    /// non-standard port without the port (accepting a `Match` for the bare
    /// host name); that policy is left to the caller.
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Lookup {
        let name = host_name_for(host, port);
        let mut matched = None;
        let mut lines = Vec::new();
        let mut known = Vec::new();
        for entry in self.entries.iter().filter(|e| e.hosts.matches(&name)) {
            match entry.marker {
                Marker::Revoked if entry.key.key_data() == key.key_data() => {
                    return Lookup::Revoked { line: entry.line };
                }
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if entry.key.key_data() == key.key_data() => {
                    matched.get_or_insert(entry.line);
                }
                // Any other key on record for the host, whatever its type,
                // means the host changed: that is OpenSSH's verdict too
                // (checked against ssh 9.2), and it stops an attacker from
                // dodging the check by offering a different key type.
                Marker::None => {
                    lines.push(entry.line);
                    known.push(entry.key.clone());
                }
            }
        }
        match matched {
            Some(line) => Lookup::Match { line },
            None if !lines.is_empty() => Lookup::Mismatch { lines, known },
            None => Lookup::Unknown,
        }
    }

    /// The `@cert-authority` lines that apply to `host` on `port`: the CAs
    /// trusted to sign its host certificates.
    ///
    /// A CA whose key a matching `@revoked` line lists is left out, since
    /// OpenSSH refuses certificates signed by it (use
    /// [`KnownHosts::revoked`] to tell that case apart). The certificate's
    /// own key should also be checked with [`KnownHosts::revoked`].
    pub fn cert_authorities(&self, host: &str, port: u16) -> Vec<&Entry> {
        let name = host_name_for(host, port);
        let matching: Vec<&Entry> = self.entries.iter().filter(|e| e.hosts.matches(&name)).collect();
        matching
            .iter()
            .copied()
            .filter(|ca| ca.marker == Marker::CertAuthority)
            .filter(|ca| {
                !matching.iter().any(|r| r.marker == Marker::Revoked && r.key.key_data() == ca.key.key_data())
            })
            .collect()
    }

    /// The first `@revoked` line applying to `host` on `port` that lists
    /// `key` (a host key, a certificate's key or a CA key).
    pub fn revoked(&self, host: &str, port: u16, key: &PublicKey) -> Option<usize> {
        let name = host_name_for(host, port);
        self.entries
            .iter()
            .find(|e| {
                e.marker == Marker::Revoked && e.key.key_data() == key.key_data() && e.hosts.matches(&name)
            })
            .map(|e| e.line)
    }

    /// The unmarked lines applying to `host` on `port`, any algorithm.
    ///
    /// Useful to prefer the host-key algorithms already known for a host
    /// (as OpenSSH orders `HostKeyAlgorithms`), or to apply OpenSSH's rule
    /// that a different key of any algorithm means the host key changed.
    pub fn known_keys(&self, host: &str, port: u16) -> Vec<&Entry> {
        let name = host_name_for(host, port);
        self.entries.iter().filter(|e| e.marker == Marker::None && e.hosts.matches(&name)).collect()
    }
}

/// The name a host is stored and looked up under: `host` for port 22,
/// `[host]:port` otherwise, ASCII-lowercased as OpenSSH does.
///
/// Port 0 is treated like 22, as OpenSSH's `put_host_port` does.
pub fn host_name_for(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 || port == 0 { host } else { format!("[{host}]:{port}") }
}

/// HMAC-SHA1 keyed by `salt` over `name`: the hash of a hashed entry.
///
/// `name` is hashed as given; pass the output of [`host_name_for`].
pub fn hash_host_name(name: &str, salt: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(salt) {
        Ok(mac) => mac,
        Err(_) => return [0; HASH_LEN],
    };
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The line recording `key` for `host` on `port`, without a trailing newline.
///
/// With `hash_salt` the host name is hashed
/// (`|1|base64(salt)|base64(hash) type base64`), as `HashKnownHosts yes`
/// does; the caller supplies the random salt. The key's comment, if any, is
/// appended with line breaks replaced by spaces (OpenSSH writes none).
///
/// The plain form writes the name verbatim, so it is only meaningful for
/// real host names and addresses: a name containing whitespace or `,`, `*`,
/// `?`, or starting with `!`, `#`, `@` or `|`, would read back differently.
/// The hashed form has no such limit.
pub fn line_to_append(host: &str, port: u16, key: &PublicKey, hash_salt: Option<&[u8; 20]>) -> String {
    let name = host_name_for(host, port);
    let hosts = match hash_salt {
        Some(salt) => format!(
            "{HASH_MAGIC}{}|{}",
            Base64::encode_string(salt),
            Base64::encode_string(&hash_host_name(&name, salt))
        ),
        None => name,
    };
    // Encoding an in-memory key does not fail in practice; an empty blob
    // would only make the line unreadable, never panic.
    let blob = key.to_bytes().unwrap_or_default();
    let mut line = format!("{hosts} {} {}", key.algorithm().as_str(), Base64::encode_string(&blob));
    let comment: String =
        key.comment().chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    let comment = comment.trim_matches([' ', '\t']);
    if !comment.is_empty() {
        line.push(' ');
        line.push_str(comment);
    }
    line
}

/// The parts of a valid key line.
type ParsedLine = (Marker, HostPatterns, PublicKey, Option<String>);

/// Parses one line (without its line end). `Ok(None)` for blank and comment
/// lines.
fn parse_line(line: &str) -> Result<Option<ParsedLine>, String> {
    let mut rest = skip_ws(line);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }

    let mut marker = Marker::None;
    while rest.starts_with('@') {
        if marker != Marker::None {
            return Err("more than one marker".into());
        }
        let (token, after) = split_token(rest);
        marker = match token {
            "@cert-authority" => Marker::CertAuthority,
            "@revoked" => Marker::Revoked,
            _ => return Err(format!("unknown marker {}", snippet(token))),
        };
        rest = skip_ws(after);
    }

    let (hosts_field, after) = split_token(rest);
    if hosts_field.is_empty() {
        return Err("missing host names".into());
    }
    rest = skip_ws(after);
    if rest.is_empty() || rest.starts_with('#') {
        return Err("missing key type".into());
    }
    let (key_type, after) = split_token(rest);
    rest = skip_ws(after);
    if rest.is_empty() {
        return Err("missing key data".into());
    }
    let (key_b64, after) = split_token(rest);
    let comment = skip_ws(after).trim_end_matches([' ', '\t']);
    let comment = (!comment.is_empty()).then(|| comment.to_owned());

    let hosts = parse_hosts(hosts_field)?;
    let key = parse_key(key_type, key_b64)?;
    Ok(Some((marker, hosts, key, comment)))
}

/// Parses the host-names field, hashed or plain.
fn parse_hosts(field: &str) -> Result<HostPatterns, String> {
    if !field.starts_with('|') {
        let mut patterns: Vec<String> = field.split(',').map(str::to_owned).collect();
        // OpenSSH ignores a single trailing comma (but not empty patterns
        // elsewhere, which match only the empty name).
        if field.ends_with(',') {
            patterns.pop();
        }
        return Ok(HostPatterns::Plain(patterns));
    }
    let rest = field
        .strip_prefix(HASH_MAGIC)
        .ok_or_else(|| format!("unsupported hashed host name {}", snippet(field)))?;
    let (salt_b64, hash_b64) = rest.split_once('|').ok_or("hashed host name has no '|' after the salt")?;
    let salt = Base64::decode_vec(salt_b64).map_err(|_| "hashed host salt is not valid base64")?;
    if salt.len() != HASH_LEN {
        return Err(format!("hashed host salt is {} bytes, expected {HASH_LEN}", salt.len()));
    }
    let hash = Base64::decode_vec(hash_b64).map_err(|_| "hashed host hash is not valid base64")?;
    let hash: [u8; HASH_LEN] = hash
        .as_slice()
        .try_into()
        .map_err(|_| format!("hashed host hash is {} bytes, expected {HASH_LEN}", hash.len()))?;
    Ok(HostPatterns::Hashed { salt, hash })
}

/// Decodes the key blob and checks it against the declared key type.
fn parse_key(key_type: &str, key_b64: &str) -> Result<PublicKey, String> {
    let declared = match Algorithm::new(key_type) {
        Ok(Algorithm::Other(_)) | Err(_) => {
            return Err(format!("unknown key type {}", snippet(key_type)));
        }
        Ok(algorithm) => algorithm,
    };
    let blob = Base64::decode_vec(key_b64).map_err(|_| "key data is not valid base64")?;
    let key = PublicKey::from_bytes(&blob).map_err(|e| format!("invalid key data: {e}"))?;
    // Like OpenSSH, the name may be any signature name of the key's type
    // (`rsa-sha2-256` for an RSA key) but must agree with the blob.
    if normalize(&declared) != key_family(&key) {
        return Err(format!(
            "key type {key_type} does not match the key data ({})",
            key.algorithm().as_str()
        ));
    }
    Ok(key)
}

/// The algorithm a key is compared under: RSA signature variants merged.
fn key_family(key: &PublicKey) -> Algorithm {
    normalize(&key.key_data().algorithm())
}

fn normalize(algorithm: &Algorithm) -> Algorithm {
    match algorithm {
        Algorithm::Rsa { .. } => Algorithm::Rsa { hash: None },
        other => other.clone(),
    }
}

/// OpenSSH's `match_pattern_list` on an already-lowercased name: true when
/// some pattern matches and no negated one does.
fn match_pattern_list(name: &str, patterns: &[String]) -> bool {
    let mut positive = false;
    for pattern in patterns {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, pattern.as_str()),
        };
        if body.len() >= MAX_PATTERN_LEN {
            return false;
        }
        if glob_match(name.as_bytes(), body.to_ascii_lowercase().as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// Byte-wise glob with `*` (any run) and `?` (any one byte), in
/// O(name × pattern) time however many stars the pattern has.
fn glob_match(name: &[u8], pattern: &[u8]) -> bool {
    let (mut n, mut p) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index).
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&c) = name.get(n) {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                backtrack = Some((p, n));
            }
            Some(&pc) if pc == b'?' || pc == c => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((bp, bn)) => {
                    p = bp;
                    n = bn + 1;
                    backtrack = Some((bp, n));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|tail| tail.iter().all(|&c| c == b'*'))
}

fn skip_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Splits at the first space or tab: (token, rest starting at the separator).
fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    }
}

/// A bounded, quoted excerpt of input for error messages.
fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        format!("{:?}…", s.chars().take(MAX).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Real keys from `ssh-keygen -t … -N ''` (comments dropped).
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOjc3JaqrQBk/1E2SO07UtsLiPdEFcsh0Xr2BI6njKG7";
    const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICd6yzgZ3OQKb57IExmuxvFgTP+kd5XK/1SsuQeUrIpN";
    const CA_ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDLQJfAHPr5s+eVX6ekePxvC90NyHBz/U85S8CFCWj28";
    const ECDSA_P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBN3hebQXGk9m/N6byO+82fRpcr6yc/imOnefO6iH49IZQgjrF2Vh6oOFGwtEq4MeYYc8q2vWWN9AVhe8GbClVX0=";
    const ECDSA_P384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBLZw66uMqjY6w/8I2B2lctOU4xpZT4RC+y0mipeVB8eH4DOZTPao1+76uCZ3M572rhFkw/UPzwnoGzWum7JrtUUiq33ewAvXTJ8N/2UOZptcRmwuuH+RJwVhP5hSpp4T/Q==";
    const RSA_3072: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQClhsc3XYcM7Tk0y7hnBdwiQLdfm/kwHGlNYaxveiA2iAsnQOtJrJgRYGadWh0DqTnCh9grBmUxwrmxTPg9eZlYsi+/hTbJk6x7A2NSDkwekEh/YOc5Mjjd72MrvpZAFaYs5yLUBduQ3XhppBAh/kVAu1cvg55n+hyCxIz71/3Z/gnV6hbN91DZB01C/HVKzCpi1QxJcDun0BAKvtTgsDsq1Lt+xU9cE6621v3ADvCeK9BlZJkO5A8DvLBGRQMlIL7IHpBcxOVYumwyZCXIEAR6635SQrJOMaoy5IiaddXgOp3l7/ajYg08Gpe1tL2RAZayv9DRzta28JSnU4TK3z8FE9QV8MFdRadpAQG3WU+1766Lyqv77isk9FBuR9SNQwHjTt6r9B/ZS0ktivwoWiZm7Rpk5jGDXmKqIpi9hQ9BH7i2fwKSvdA0ajMqS5kZKrNkkVFC1ep0Nu50jUc1Tn2j0AkT5IfB6Dobhbk25KaDW2xKUCyYhymvyDlEV53HBPk=";
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCybzxyEeH2rJKfNBfnLOVhGDVmRyU0ePMS2R842eVheOKplnYNu/o9emWLgMYj+DaHg3nJSU8pBl2C6ZNUmOwEVbRWIx3dY6uV4dM6R3CqaUP62gVUambel1uPHmyQm9FAJ7Qzs/Thgnwp4bpeetJ9wrhidDziucTUL5r+feIsfQ==";

    // `ssh-keygen -H` output for `example.com` (ED25519) and
    // `[example.org]:2222` (ECDSA_P256).
    const HASHED_EXAMPLE_COM: &str = "|1|0bL9LQvtCpbQmzR4gLqesXXRzRI=|BShqhXLbXfyJFkFk/oXjgJ9jw3c= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOjc3JaqrQBk/1E2SO07UtsLiPdEFcsh0Xr2BI6njKG7";
    const HASHED_EXAMPLE_ORG_2222: &str = "|1|OxBiRvbhu4APJrJV39R1xcc6rUw=|Px5MP4CXt5+C2Hs7ev4O+lKiuLk= ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBN3hebQXGk9m/N6byO+82fRpcr6yc/imOnefO6iH49IZQgjrF2Vh6oOFGwtEq4MeYYc8q2vWWN9AVhe8GbClVX0=";

    // `line_to_append("Example.COM", 2222, ED25519, Some(&[7; 20]))`, which
    // `ssh-keygen -F '[example.com]:2222' -f file` finds.
    const APPENDED_HASHED: &str = "|1|BwcHBwcHBwcHBwcHBwcHBwcHBwc=|M8vbCXrAt3aQM/8IDhygaIF0rTA= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOjc3JaqrQBk/1E2SO07UtsLiPdEFcsh0Xr2BI6njKG7";

    fn key(openssh: &str) -> PublicKey {
        PublicKey::from_openssh(openssh).expect("test key parses")
    }

    fn parse_ok(text: &str) -> KnownHosts {
        let known = KnownHosts::parse(text);
        assert!(known.errors().is_empty(), "{:?}", known.errors());
        known
    }

    fn single_error(line: &str) -> String {
        let known = KnownHosts::parse(line);
        assert!(known.entries().is_empty(), "{line:?} parsed");
        assert_eq!(known.errors().len(), 1, "{line:?}");
        assert_eq!(known.errors()[0].line, 1);
        known.errors()[0].message.clone()
    }

    #[test]
    fn parses_a_plain_line() {
        let known = parse_ok(&format!("example.com,192.0.2.10 {ED25519} my host key\n"));
        let entry = &known.entries()[0];
        assert_eq!(entry.line, 1);
        assert_eq!(entry.marker, Marker::None);
        assert_eq!(entry.hosts, HostPatterns::Plain(vec!["example.com".into(), "192.0.2.10".into()]));
        assert_eq!(entry.key, key(ED25519));
        assert_eq!(entry.key.comment(), "");
        assert_eq!(entry.comment.as_deref(), Some("my host key"));
    }

    #[test]
    fn skips_blank_and_comment_lines_and_numbers_lines() {
        let text = format!(
            "# comment\n\n   \t\n\t# indented comment\r\n  \texample.com\t{ED25519}\t\r\nb.example {ECDSA_P256}\n"
        );
        let known = parse_ok(&text);
        let lines: Vec<usize> = known.entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 6]);
        assert_eq!(known.entries()[0].comment, None);
        assert_eq!(known.entries()[0].key, key(ED25519));
    }

    #[test]
    fn tabs_crlf_and_comment_whitespace() {
        let b64 = ED25519.split(' ').nth(1).unwrap();
        let text = format!("example.com\t \tssh-ed25519\t{b64}\t  a  comment \t\r\n");
        let known = parse_ok(&text);
        assert_eq!(known.entries()[0].comment.as_deref(), Some("a  comment"));
        assert_eq!(known.lookup("example.com", 22, &key(ED25519)), Lookup::Match { line: 1 });
    }

    #[test]
    fn empty_text_and_only_comments() {
        assert_eq!(KnownHosts::parse(""), KnownHosts::default());
        assert_eq!(KnownHosts::parse("\n\r\n# x\n"), KnownHosts::default());
    }

    #[test]
    fn host_name_for_formats_like_openssh() {
        assert_eq!(host_name_for("Example.COM", 22), "example.com");
        assert_eq!(host_name_for("Example.COM", 2222), "[example.com]:2222");
        assert_eq!(host_name_for("example.com", 0), "example.com");
        assert_eq!(host_name_for("2001:DB8::1", 22), "2001:db8::1");
        assert_eq!(host_name_for("2001:db8::1", 830), "[2001:db8::1]:830");
    }

    #[test]
    fn plain_lookup_is_case_insensitive() {
        let known = parse_ok(&format!("Example.COM {ED25519}"));
        for host in ["example.com", "EXAMPLE.com", "Example.COM"] {
            assert_eq!(known.lookup(host, 22, &key(ED25519)), Lookup::Match { line: 1 });
        }
        assert_eq!(known.lookup("example.org", 22, &key(ED25519)), Lookup::Unknown);
        assert_eq!(known.lookup("example.com.evil", 22, &key(ED25519)), Lookup::Unknown);
    }

    #[test]
    fn key_comment_is_ignored_when_comparing() {
        let known = parse_ok(&format!("example.com {ED25519} on file"));
        let presented = key(&format!("{ED25519} different comment"));
        assert_eq!(known.lookup("example.com", 22, &presented), Lookup::Match { line: 1 });
    }

    #[test]
    fn non_standard_port() {
        let known = parse_ok(&format!("[example.com]:2222 {ED25519}\nexample.net {ED25519}"));
        let k = key(ED25519);
        assert_eq!(known.lookup("example.com", 2222, &k), Lookup::Match { line: 1 });
        assert_eq!(known.lookup("example.com", 22, &k), Lookup::Unknown);
        assert_eq!(known.lookup("example.com", 2223, &k), Lookup::Unknown);
        // A bare name does not cover other ports (OpenSSH's fallback to the
        // bare name is the caller's policy).
        assert_eq!(known.lookup("example.net", 2222, &k), Lookup::Unknown);
        assert_eq!(known.lookup("example.net", 22, &k), Lookup::Match { line: 2 });
    }

    #[test]
    fn wildcards() {
        let known = parse_ok(&format!("*.example.com,host?.example.org {ED25519}"));
        let k = key(ED25519);
        let matches = |h: &str| known.lookup(h, 22, &k) == Lookup::Match { line: 1 };
        assert!(matches("a.example.com"));
        assert!(matches("a.b.example.com"));
        assert!(!matches("example.com"));
        assert!(matches("host1.example.org"));
        assert!(!matches("host.example.org"));
        assert!(!matches("host12.example.org"));
        // The `[host]:port` form is matched as a whole string.
        assert_eq!(known.lookup("a.example.com", 2222, &k), Lookup::Unknown);
        let star = parse_ok(&format!("* {ED25519}"));
        assert_eq!(star.lookup("anything", 2222, &k), Lookup::Match { line: 1 });
        let ported = parse_ok(&format!("[*.example.com]:* {ED25519}"));
        assert_eq!(ported.lookup("a.example.com", 2222, &k), Lookup::Match { line: 1 });
        assert_eq!(ported.lookup("a.example.com", 22, &k), Lookup::Unknown);
    }

    #[test]
    fn negation() {
        let k = key(ED25519);
        for patterns in ["*.example.com,!bad.example.com", "!bad.example.com,*.example.com"] {
            let known = parse_ok(&format!("{patterns} {ED25519}"));
            assert_eq!(known.lookup("good.example.com", 22, &k), Lookup::Match { line: 1 });
            assert_eq!(known.lookup("bad.example.com", 22, &k), Lookup::Unknown);
            assert_eq!(known.lookup("BAD.example.com", 22, &k), Lookup::Unknown);
        }
        // A negated pattern alone never selects anything.
        let only_negated = parse_ok(&format!("!bad.example.com {ED25519}"));
        assert_eq!(only_negated.lookup("good.example.com", 22, &k), Lookup::Unknown);
        // Only one `!` is special.
        let double = parse_ok(&format!("!!x {ED25519}"));
        assert_eq!(double.entries()[0].hosts, HostPatterns::Plain(vec!["!!x".into()]));
    }

    #[test]
    fn pattern_list_edge_cases() {
        let plain = |s: &str| parse_hosts(s).unwrap();
        assert_eq!(plain("a,"), HostPatterns::Plain(vec!["a".into()]));
        assert_eq!(plain(",a"), HostPatterns::Plain(vec!["".into(), "a".into()]));
        assert!(plain("a,,b").matches("b"));
        assert!(!plain("a,,b").matches("c"));
        // OpenSSH gives up on the whole list at an over-long pattern.
        let long = "x".repeat(MAX_PATTERN_LEN);
        assert!(!plain(&format!("a,{long}")).matches("a"));
        assert!(plain(&format!("a,{}", &long[1..])).matches("a"));
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"", b""));
        assert!(glob_match(b"", b"*"));
        assert!(!glob_match(b"", b"?"));
        assert!(!glob_match(b"a", b""));
        assert!(glob_match(b"abc", b"a*c"));
        assert!(glob_match(b"abc", b"*"));
        assert!(glob_match(b"abc", b"???"));
        assert!(!glob_match(b"abc", b"??"));
        assert!(glob_match(b"abcbc", b"a*bc"));
        assert!(glob_match(b"abc", b"a**c*"));
        assert!(!glob_match(b"abd", b"a*c"));
        assert!(glob_match(b"mississippi", b"m*iss*ppi"));
        assert!(!glob_match(b"mississippi", b"m*iss*ppx"));
        // Pathological for naive backtracking; linear-ish here.
        let name = vec![b'a'; 1000];
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        assert!(!glob_match(&name, &pattern));
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let known = parse_ok(&format!("{HASHED_EXAMPLE_COM}\n{HASHED_EXAMPLE_ORG_2222}\n"));
        match &known.entries()[0].hosts {
            HostPatterns::Hashed { salt, hash } => {
                assert_eq!(salt.len(), 20);
                assert_eq!(hash_host_name("example.com", salt), *hash);
            }
            other => panic!("not hashed: {other:?}"),
        }
        let ed = key(ED25519);
        let ec = key(ECDSA_P256);
        assert_eq!(known.lookup("example.com", 22, &ed), Lookup::Match { line: 1 });
        assert_eq!(known.lookup("EXAMPLE.COM", 22, &ed), Lookup::Match { line: 1 });
        assert_eq!(known.lookup("example.com", 2222, &ed), Lookup::Unknown);
        assert_eq!(known.lookup("example.net", 22, &ed), Lookup::Unknown);
        assert_eq!(known.lookup("example.org", 2222, &ec), Lookup::Match { line: 2 });
        assert_eq!(known.lookup("example.org", 22, &ec), Lookup::Unknown);
        assert_eq!(
            known.lookup("example.com", 22, &key(ED25519_B)),
            Lookup::Mismatch { lines: vec![1], known: vec![ed] }
        );
    }

    #[test]
    fn hashed_marker_lines() {
        let known = parse_ok(&format!("@revoked {HASHED_EXAMPLE_COM}"));
        assert_eq!(known.entries()[0].marker, Marker::Revoked);
        assert_eq!(known.lookup("example.com", 22, &key(ED25519)), Lookup::Revoked { line: 1 });
    }

    #[test]
    fn line_to_append_plain() {
        let k = key(&format!("{ED25519} laptop key"));
        assert_eq!(line_to_append("Example.COM", 22, &key(ED25519), None), format!("example.com {ED25519}"));
        assert_eq!(
            line_to_append("example.com", 2222, &key(RSA_3072), None),
            format!("[example.com]:2222 {RSA_3072}")
        );
        assert_eq!(line_to_append("h", 22, &k, None), format!("h {ED25519} laptop key"));
        let mut evil = key(ED25519);
        evil.set_comment("a\nb\r\nc ");
        let line = line_to_append("h", 22, &evil, None);
        assert_eq!(line, format!("h {ED25519} a b  c"));
        assert!(!line.contains(['\n', '\r']));
    }

    #[test]
    fn line_to_append_hashed_matches_ssh_keygen() {
        let line = line_to_append("Example.COM", 2222, &key(ED25519), Some(&[7; 20]));
        assert_eq!(line, APPENDED_HASHED);
        let known = parse_ok(&line);
        assert_eq!(known.lookup("example.com", 2222, &key(ED25519)), Lookup::Match { line: 1 });
        assert_eq!(
            known.entries()[0].hosts,
            HostPatterns::Hashed { salt: vec![7; 20], hash: hash_host_name("[example.com]:2222", &[7; 20]) }
        );
    }

    #[test]
    fn revoked_beats_match() {
        let text = format!("example.com {ED25519}\n@revoked * {ED25519}\n");
        let known = parse_ok(&text);
        assert_eq!(known.lookup("example.com", 22, &key(ED25519)), Lookup::Revoked { line: 2 });
        assert_eq!(known.revoked("example.com", 22, &key(ED25519)), Some(2));
        // A revoked line for another key has no effect on this one.
        assert_eq!(
            known.lookup("example.com", 22, &key(ED25519_B)),
            Lookup::Mismatch { lines: vec![1], known: vec![key(ED25519)] }
        );
        assert_eq!(known.revoked("example.com", 22, &key(ED25519_B)), None);
    }

    #[test]
    fn revoked_only_for_matching_hosts() {
        let text = format!("example.com {ED25519}\n@revoked other.example {ED25519}\n");
        let known = parse_ok(&text);
        assert_eq!(known.lookup("example.com", 22, &key(ED25519)), Lookup::Match { line: 1 });
        // Revoked even without any plain entry for the host.
        assert_eq!(known.lookup("other.example", 22, &key(ED25519)), Lookup::Revoked { line: 2 });
    }

    #[test]
    fn cert_authority_lines() {
        let text = format!(
            "@cert-authority *.example.com,!bad.example.com {CA_ED25519} the CA\n\
             @cert-authority\t*.example.org {ECDSA_P256}\n\
             @revoked *.example.org {ECDSA_P256}\n"
        );
        let known = parse_ok(&text);
        assert_eq!(known.entries()[0].marker, Marker::CertAuthority);
        assert_eq!(known.entries()[0].comment.as_deref(), Some("the CA"));
        let cas = known.cert_authorities("host.example.com", 22);
        assert_eq!(cas.len(), 1);
        assert_eq!(cas[0].key, key(CA_ED25519));
        assert!(known.cert_authorities("bad.example.com", 22).is_empty());
        assert!(known.cert_authorities("example.net", 22).is_empty());
        // The revoked CA is withheld, and reported by `revoked`.
        assert!(known.cert_authorities("host.example.org", 22).is_empty());
        assert_eq!(known.revoked("host.example.org", 22, &key(ECDSA_P256)), Some(3));
        // A CA line never vouches for, or conflicts with, a plain key.
        assert_eq!(known.lookup("host.example.com", 22, &key(CA_ED25519)), Lookup::Unknown);
        assert_eq!(known.lookup("host.example.com", 22, &key(ED25519)), Lookup::Unknown);
        assert!(known.known_keys("host.example.com", 22).is_empty());
    }

    #[test]
    fn mismatch_names_every_other_key_of_the_host() {
        let text = format!(
            "example.com {ED25519}\nexample.com {ECDSA_P256}\n*.com {ED25519}\nexample.com {RSA_3072}\n"
        );
        let known = parse_ok(&text);
        let all = vec![key(ED25519), key(ECDSA_P256), key(ED25519), key(RSA_3072)];
        assert_eq!(
            known.lookup("example.com", 22, &key(ED25519_B)),
            Lookup::Mismatch { lines: vec![1, 2, 3, 4], known: all.clone() }
        );
        assert_eq!(
            known.lookup("example.com", 22, &key(ECDSA_P384)),
            Lookup::Mismatch { lines: vec![1, 2, 3, 4], known: all.clone() }
        );
        assert_eq!(known.lookup("example.org", 22, &key(ECDSA_P384)), Lookup::Unknown);
        // A match anywhere wins over mismatching lines.
        assert_eq!(known.lookup("example.com", 22, &key(RSA_3072)), Lookup::Match { line: 4 });
        assert_eq!(known.known_keys("example.com", 22).len(), 4);
        assert_eq!(known.known_keys("example.org", 22).len(), 0);
    }

    #[test]
    fn ed25519_known_ecdsa_presented_is_a_mismatch_as_in_openssh() {
        // ssh 9.2 says "REMOTE HOST IDENTIFICATION HAS CHANGED" here too.
        let known = parse_ok(&format!("example.com {ED25519}"));
        assert_eq!(
            known.lookup("example.com", 22, &key(ECDSA_P256)),
            Lookup::Mismatch { lines: vec![1], known: vec![key(ED25519)] }
        );
        assert_eq!(known.known_keys("example.com", 22)[0].line, 1);
    }

    #[test]
    fn rsa_signature_names_are_one_family() {
        let rsa_b64 = RSA_3072.split(' ').nth(1).unwrap();
        let text = format!("a rsa-sha2-256 {rsa_b64}\nb rsa-sha2-512 {rsa_b64}\n");
        let known = parse_ok(&text);
        assert_eq!(known.entries()[0].key, key(RSA_3072));
        assert_eq!(known.lookup("b", 22, &key(RSA_3072)), Lookup::Match { line: 2 });
        assert_eq!(
            known.lookup("a", 22, &key(RSA_1024)),
            Lookup::Mismatch { lines: vec![1], known: vec![key(RSA_3072)] }
        );
    }

    #[test]
    fn bad_lines_are_recorded_and_skipped() {
        let text = format!("good1 {ED25519}\n@bogus host {ED25519}\ngood2 {ED25519}\nhost-only\n");
        let known = KnownHosts::parse(&text);
        let lines: Vec<usize> = known.entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 3]);
        let errors: Vec<usize> = known.errors().iter().map(|e| e.line).collect();
        assert_eq!(errors, [2, 4]);
        assert_eq!(known.errors()[0].to_string(), "known_hosts line 2: unknown marker \"@bogus\"");
    }

    #[test]
    fn malformed_markers() {
        assert!(single_error(&format!("@bogus host {ED25519}")).contains("unknown marker"));
        assert!(single_error(&format!("@Revoked host {ED25519}")).contains("unknown marker"));
        assert!(single_error(&format!("@revoked @revoked host {ED25519}")).contains("more than one"));
        assert!(single_error(&format!("@revoked @cert-authority host {ED25519}")).contains("more than one"));
        assert_eq!(single_error("@revoked"), "missing host names");
        assert_eq!(single_error("@revoked   "), "missing host names");
        assert!(single_error(&format!("@revokedhost {ED25519}")).contains("unknown marker"));
    }

    #[test]
    fn missing_fields() {
        assert_eq!(single_error("example.com"), "missing key type");
        assert_eq!(single_error("example.com  \t "), "missing key type");
        assert_eq!(single_error(&format!("example.com #{ED25519}")), "missing key type");
        assert_eq!(single_error("example.com ssh-ed25519"), "missing key data");
        assert_eq!(single_error("example.com ssh-ed25519 \t"), "missing key data");
        // A bare key (no host field) reads as host `ssh-ed25519`.
        assert_eq!(single_error(ED25519), "missing key data");
    }

    #[test]
    fn bad_keys() {
        let ed_b64 = ED25519.split(' ').nth(1).unwrap();
        assert!(single_error(&format!("h ssh-foo {ed_b64}")).contains("unknown key type"));
        assert!(single_error(&format!("h foo@example.com {ed_b64}")).contains("unknown key type"));
        assert!(
            single_error(&format!("h ssh-ed25519-cert-v01@openssh.com {ed_b64}"))
                .contains("unknown key type")
        );
        assert!(single_error("h ssh-ed25519 AAAA!!!!").contains("not valid base64"));
        assert!(
            single_error("h ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOjc3JaqrQBk/1E2SO07Ut")
                .contains("not valid base64")
        );
        // Valid base64, not a key.
        assert!(single_error("h ssh-ed25519 AAAA").contains("invalid key data"));
        assert!(single_error("h ssh-ed25519 aGVsbG8gd29ybGQ=").contains("invalid key data"));
        // Truncated blob.
        let short = Base64::encode_string(&Base64::decode_vec(ed_b64).unwrap()[..40]);
        assert!(single_error(&format!("h ssh-ed25519 {short}")).contains("invalid key data"));
        // Trailing garbage after the blob.
        let mut long = Base64::decode_vec(ed_b64).unwrap();
        long.push(0);
        let long = Base64::encode_string(&long);
        assert!(single_error(&format!("h ssh-ed25519 {long}")).contains("invalid key data"));
        // Declared type disagrees with the blob.
        assert!(single_error(&format!("h ssh-rsa {ed_b64}")).contains("does not match"));
        let p256_b64 = ECDSA_P256.split(' ').nth(1).unwrap();
        assert!(single_error(&format!("h ecdsa-sha2-nistp384 {p256_b64}")).contains("does not match"));
    }

    #[test]
    fn bad_hashed_hosts() {
        let salt = Base64::encode_string(&[1; 20]);
        let hash = Base64::encode_string(&[2; 20]);
        let with = |hosts: &str| single_error(&format!("{hosts} {ED25519}"));
        assert!(with(&format!("|2|{salt}|{hash}")).contains("unsupported hashed"));
        assert!(with(&format!("|{salt}|{hash}")).contains("unsupported hashed"));
        assert!(with("|1").contains("unsupported hashed"));
        assert!(with(&format!("|1|{salt}")).contains("no '|'"));
        assert!(with(&format!("|1||{hash}")).contains("salt is 0 bytes"));
        assert!(with(&format!("|1|!!!!|{hash}")).contains("salt is not valid base64"));
        let short_salt = Base64::encode_string(&[1; 16]);
        assert!(with(&format!("|1|{short_salt}|{hash}")).contains("salt is 16 bytes"));
        assert!(with(&format!("|1|{salt}|")).contains("hash is 0 bytes"));
        assert!(with(&format!("|1|{salt}|{hash},other")).contains("hash is not valid base64"));
        assert!(with(&format!("|1|{salt}|{hash}|")).contains("hash is not valid base64"));
        let long_hash = Base64::encode_string(&[2; 32]);
        assert!(with(&format!("|1|{salt}|{long_hash}")).contains("hash is 32 bytes"));
        // Non-canonical base64 (non-zero padding bits) is refused, as the
        // re-encoded form OpenSSH compares against could never equal it.
        let mut noncanonical = hash.clone();
        noncanonical.replace_range(26..27, "z");
        assert!(with(&format!("|1|{salt}|{noncanonical}")).contains("not valid base64"));
        // And a well-formed one parses.
        assert!(KnownHosts::parse(&format!("|1|{salt}|{hash} {ED25519}")).errors().is_empty());
    }

    #[test]
    fn error_messages_are_bounded() {
        let marker = format!("@{} host {ED25519}", "x".repeat(10_000));
        assert!(single_error(&marker).len() < 100);
        let key_type = format!("h {} AAAA", "y".repeat(10_000));
        assert!(single_error(&key_type).len() < 100);
    }

    #[test]
    fn non_ascii_input_does_not_break_parsing() {
        let known =
            KnownHosts::parse(&format!("ü.example,Ä* {ED25519} ¢omment\n@é x {ED25519}\nh ssh-ed25519 ✓\n"));
        assert_eq!(known.entries().len(), 1);
        assert_eq!(known.errors().len(), 2);
        assert_eq!(known.lookup("ü.example", 22, &key(ED25519)), Lookup::Match { line: 1 });
        // Only ASCII is case-folded, as in OpenSSH.
        assert_eq!(known.lookup("Ü.example", 22, &key(ED25519)), Lookup::Unknown);
        assert_eq!(known.lookup("Äbc", 22, &key(ED25519)), Lookup::Match { line: 1 });
    }

    fn test_keys() -> Vec<PublicKey> {
        [ED25519, ED25519_B, RSA_3072, RSA_1024, ECDSA_P256, ECDSA_P384].into_iter().map(key).collect()
    }

    /// Text built from the tokens a known_hosts line is made of, to reach
    /// deeper than uniformly random strings.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("@revoked".to_owned()),
            Just("@cert-authority".to_owned()),
            Just("@".to_owned()),
            Just("#".to_owned()),
            Just("|1|".to_owned()),
            Just("|".to_owned()),
            Just(",".to_owned()),
            Just("!".to_owned()),
            Just("*".to_owned()),
            Just("[example.com]:2222".to_owned()),
            Just("ssh-ed25519".to_owned()),
            Just("ssh-rsa".to_owned()),
            Just("rsa-sha2-512".to_owned()),
            Just("ecdsa-sha2-nistp256".to_owned()),
            Just("sk-ssh-ed25519@openssh.com".to_owned()),
            Just(ED25519.split(' ').nth(1).unwrap().to_owned()),
            Just(ECDSA_P256.split(' ').nth(1).unwrap().to_owned()),
            Just(RSA_1024.split(' ').nth(1).unwrap().to_owned()),
            prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| Base64::encode_string(&b)),
            "[ -~]{0,12}",
            "[ \t\r\n]{1,3}",
        ];
        prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    /// Base64 of a blob with a valid algorithm header and random body, to
    /// exercise the key decoders.
    fn fuzzed_key_line() -> impl Strategy<Value = String> {
        let names = prop_oneof![
            Just("ssh-ed25519"),
            Just("ssh-rsa"),
            Just("ssh-dss"),
            Just("ecdsa-sha2-nistp256"),
            Just("ecdsa-sha2-nistp384"),
            Just("ecdsa-sha2-nistp521"),
            Just("sk-ssh-ed25519@openssh.com"),
            Just("sk-ecdsa-sha2-nistp256@openssh.com"),
        ];
        (names, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(name, body)| {
            let mut blob = (name.len() as u32).to_be_bytes().to_vec();
            blob.extend_from_slice(name.as_bytes());
            blob.extend_from_slice(&body);
            format!("h {name} {}", Base64::encode_string(&blob))
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let known = KnownHosts::parse(&text);
            let _ = known.lookup("example.com", 2222, &key(ED25519));
            let _ = known.cert_authorities("example.com", 22);
        }

        #[test]
        fn parse_never_panics_on_token_soup(text in token_soup(), host in "[ -~]{0,20}", port in any::<u16>()) {
            let known = KnownHosts::parse(&text);
            let total = known.entries().len() + known.errors().len();
            prop_assert!(total <= text.split('\n').count());
            let _ = known.lookup(&host, port, &key(ED25519));
            let _ = known.cert_authorities(&host, port);
            let _ = known.known_keys(&host, port);
        }

        #[test]
        fn parse_never_panics_on_fuzzed_key_blobs(line in fuzzed_key_line()) {
            let known = KnownHosts::parse(&line);
            prop_assert_eq!(known.entries().len() + known.errors().len(), 1);
        }

        #[test]
        fn plain_line_round_trips(
            host in "[A-Za-z0-9][A-Za-z0-9.-]{0,30}|[0-9a-fA-F:]{2,20}",
            port in any::<u16>(),
            index in 0usize..6,
        ) {
            let keys = test_keys();
            let k = &keys[index];
            let line = line_to_append(&host, port, k, None);
            prop_assert!(!line.contains('\n'));
            let known = KnownHosts::parse(&line);
            prop_assert!(known.errors().is_empty(), "{:?}", known.errors());
            prop_assert_eq!(&known.entries()[0].key, k);
            prop_assert_eq!(known.lookup(&host, port, k), Lookup::Match { line: 1 });
            prop_assert_eq!(
                known.lookup(&host.to_ascii_uppercase(), port, k),
                Lookup::Match { line: 1 }
            );
        }

        #[test]
        fn hashed_line_round_trips(
            host in any::<String>(),
            port in any::<u16>(),
            index in 0usize..6,
            salt in any::<[u8; 20]>(),
        ) {
            let keys = test_keys();
            let k = &keys[index];
            let line = line_to_append(&host, port, k, Some(&salt));
            let known = KnownHosts::parse(&line);
            prop_assert!(known.errors().is_empty(), "{:?}", known.errors());
            prop_assert_eq!(known.entries().len(), 1);
            prop_assert_eq!(&known.entries()[0].key, k);
            prop_assert_eq!(
                &known.entries()[0].hosts,
                &HostPatterns::Hashed {
                    salt: salt.to_vec(),
                    hash: hash_host_name(&host_name_for(&host, port), &salt),
                }
            );
            prop_assert_eq!(known.lookup(&host, port, k), Lookup::Match { line: 1 });
            // Another key, of any type: a mismatch.
            let other = &keys[index ^ 1];
            prop_assert_eq!(
                known.lookup(&host, port, other),
                Lookup::Mismatch { lines: vec![1], known: vec![k.clone()] }
            );
        }
    }
}
