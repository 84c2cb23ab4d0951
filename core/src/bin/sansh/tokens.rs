//! ssh_config's TOKENS: `%h`, `%r`, `%d`, ... in IdentityFile,
//! UserKnownHostsFile, IdentityAgent, RemoteCommand and Hostname, and `~`
//! and `${VAR}` in the path-like ones, expanded once the destination is known.

use std::path::PathBuf;

use sha1::{Digest, Sha1};

/// What the tokens stand for.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// %u: the local user.
    pub local_user: String,
    /// %d: the local user's home directory.
    pub home: PathBuf,
    /// %i: the local user id.
    pub uid: u32,
    /// %l: the local host name; %L: its first component.
    pub local_host: String,
    /// %h: the remote host name (after Hostname).
    pub host: String,
    /// %n: the host as given on the command line.
    pub original_host: String,
    /// %k: HostKeyAlias, else the original host.
    pub host_key_alias: Option<String>,
    /// %p: the port.
    pub port: u16,
    /// %r: the remote user.
    pub remote_user: String,
}

impl Tokens {
    /// The local side of the tokens (%u %d %i %l), with the remote ones to fill.
    pub fn local(local_user: String, original_host: &str) -> Tokens {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
        let local_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Tokens {
            local_user,
            home: crate::args::home(),
            uid,
            local_host,
            host: original_host.to_owned(),
            original_host: original_host.to_owned(),
            host_key_alias: None,
            port: 22,
            remote_user: String::new(),
        }
    }

    /// `text` with its %-tokens replaced (`what` names the option in errors).
    /// An unknown token is an error, as in ssh.
    pub fn expand(&self, text: &str, what: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('C') => out.push_str(&self.connection_hash()),
                Some('d') => out.push_str(&self.home.to_string_lossy()),
                Some('h') => out.push_str(&self.host),
                Some('i') => out.push_str(&self.uid.to_string()),
                Some('j') => {} // ProxyJump: never set in sansh
                Some('k') => out.push_str(self.host_key_alias.as_deref().unwrap_or(&self.original_host)),
                Some('L') => out.push_str(self.local_host.split('.').next().unwrap_or_default()),
                Some('l') => out.push_str(&self.local_host),
                Some('n') => out.push_str(&self.original_host),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('r') => out.push_str(&self.remote_user),
                Some('u') => out.push_str(&self.local_user),
                Some(other) => return Err(format!("sansh: {what}: percent_expand: unknown key %{other}")),
                None => return Err(format!("sansh: {what}: percent_expand: trailing %")),
            }
        }
        Ok(out)
    }

    /// A path option: `~` first, then `${VAR}`, then %-tokens (ssh's order).
    pub fn expand_path(&self, text: &str, what: &str) -> Result<PathBuf, String> {
        let tilde = crate::args::expand_tilde(text);
        let env = expand_env(&tilde.to_string_lossy(), what)?;
        Ok(PathBuf::from(self.expand(&env, what)?))
    }

    /// %C: SHA-1 of %l%h%p%r%j in hex, as ssh computes it.
    fn connection_hash(&self) -> String {
        let input = format!("{}{}{}{}", self.local_host, self.host, self.port, self.remote_user);
        Sha1::digest(input.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `${VAR}` replaced by the environment's value (unset is an error, as in ssh).
pub fn expand_env(text: &str, what: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("sansh: {what}: unterminated ${{ in '{text}'"));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("sansh: {what}: environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The home directory of `user`, from /etc/passwd.
pub fn home_of(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| PathBuf::from(f[5]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            local_user: "alice".into(),
            home: "/home/alice".into(),
            uid: 1000,
            local_host: "box.example.org".into(),
            host: "server.example".into(),
            original_host: "srv".into(),
            host_key_alias: None,
            port: 2222,
            remote_user: "bob".into(),
        }
    }

    #[test]
    fn tokens_expand_as_ssh_does() {
        let t = tokens();
        assert_eq!(
            t.expand("%d/.ssh/id_%h_%r@%p", "IdentityFile").unwrap(),
            "/home/alice/.ssh/id_server.example_bob@2222"
        );
        assert_eq!(
            t.expand("%u %i %l %L %n %k 100%%", "x").unwrap(),
            "alice 1000 box.example.org box srv srv 100%"
        );
        // %C: sha1("box.example.org" "server.example" "2222" "bob").
        let c = t.expand("%C", "x").unwrap();
        assert_eq!(c.len(), 40);
        assert_eq!(c, format!("{:x}", Sha1::digest(b"box.example.orgserver.example2222bob")));
        assert!(t.expand("%z", "IdentityFile").unwrap_err().contains("unknown key %z"));
        // An unset variable is an error, as in ssh.
        let path = t.expand_path("${SANSH_TOKENS_TEST_UNSET}/x", "IdentityFile");
        assert!(path.unwrap_err().contains("SANSH_TOKENS_TEST_UNSET"));
        let home = crate::args::home();
        assert_eq!(t.expand_path("~/k_%r", "IdentityFile").unwrap(), home.join("k_bob"));
    }
}
