//! The test user's `~/.ssh/authorized_keys`, for the peers that read public
//! keys only from there (dropbear, tinysshd): the client key of each running
//! instance is a line of its own, tagged `sansh-<owner>-<pid>-<n>` (its
//! comment replaced by the tag) and removed again when the instance stops.
//! The file belongs to the dedicated test account ([`crate::TEST_USER`],
//! created by the tests, never a real user's) and is shared by the instances
//! of every test thread and every test process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::TEST_USER;

/// Serialises the read-modify-write of the file within this process.
static LOCK: Mutex<()> = Mutex::new(());

/// (home, uid, gid) of the test user, from /etc/passwd.
fn test_user_account() -> (PathBuf, u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 6 || f[0] != TEST_USER {
                return None;
            }
            Some((PathBuf::from(f[5]), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no {TEST_USER} in /etc/passwd: call ensure_test_user() first"))
}

/// The pid in a tag `sansh-<owner>-<pid>-<n>` (`owner` lowercase letters).
fn tag_pid(tag: &str) -> Option<&str> {
    let mut parts = tag.strip_prefix("sansh-")?.split('-');
    let (owner, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    let lowercase = !owner.is_empty() && owner.bytes().all(|b| b.is_ascii_lowercase());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (lowercase && digits(pid) && digits(n) && parts.next().is_none()).then_some(pid)
}

/// Whether the process that tagged a line is gone (its line is stale: it
/// died without running its destructors). Untagged lines are never stale.
fn stale(line: &str) -> bool {
    let Some(pid) = line.split_whitespace().last().and_then(tag_pid) else {
        return false;
    };
    !Path::new("/proc").join(pid).exists()
}

/// Rewrites the file with `edit` applied to its lines. The servers read it
/// as the user, so it belongs to the user (mode 600 in a 700 dir); the new
/// file is renamed into place so readers never see half of it.
fn rewrite(edit: impl FnOnce(&mut Vec<String>)) {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (home, uid, gid) = test_user_account();
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect("create ~/.ssh of the test user");
    std::os::unix::fs::chown(&ssh_dir, Some(uid), Some(gid)).expect("chown ~/.ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod ~/.ssh");
    let path = ssh_dir.join("authorized_keys");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().filter(|l| !stale(l)).map(str::to_owned).collect();
    edit(&mut lines);
    let tmp = ssh_dir.join(format!("authorized_keys.tmp-{}", std::process::id()));
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(&tmp, body).expect("write authorized_keys");
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).expect("chown authorized_keys");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod authorized_keys");
    std::fs::rename(&tmp, &path).expect("rename authorized_keys into place");
}

/// Adds `public_key_line` for [`TEST_USER`], its comment replaced by a tag
/// naming `owner` (lowercase letters: `dropbear`, `tinyssh`); returns the
/// tag, for [`remove`]. The test user must exist ([`crate::ensure_test_user`]).
pub fn add(owner: &str, public_key_line: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let tag = format!("sansh-{owner}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    assert!(tag_pid(&tag).is_some(), "owner {owner:?}: lowercase letters only");
    let mut fields = public_key_line.split_whitespace();
    let (algorithm, blob) = (fields.next().expect("key type"), fields.next().expect("key blob"));
    let line = format!("{algorithm} {blob} {tag}");
    rewrite(|lines| lines.push(line));
    tag
}

/// Removes the line tagged `tag`.
pub fn remove(tag: &str) {
    rewrite(|lines| lines.retain(|l| l.split_whitespace().last() != Some(tag)));
}

#[cfg(test)]
mod tests {
    use super::tag_pid;

    #[test]
    fn tags() {
        assert_eq!(tag_pid("sansh-dropbear-123-0"), Some("123"));
        assert_eq!(tag_pid("sansh-tinyssh-9-17"), Some("9"));
        for not_ours in ["alice@laptop", "sansh-dropbear-12", "sansh--1-2", "sansh-x-1-2-3", "sansh-X-1-2"] {
            assert_eq!(tag_pid(not_ours), None, "{not_ours}");
        }
    }
}
