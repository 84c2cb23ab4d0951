//! Protocol version exchange (RFC 4253 §4.2).

use crate::error::Error;

/// RFC 4253 §4.2: the version line is at most 255 bytes including CR LF.
pub(crate) const MAX_VERSION_LINE: usize = 255;
/// Lines a server may send before its version (OpenSSH allows 1024 too).
pub(crate) const MAX_PRE_VERSION_LINES: usize = 1024;
/// Longest pre-version line we keep looking through (OpenSSH's banner limit).
pub(crate) const MAX_PRE_VERSION_LINE: usize = 8192;

/// What the version reader found so far.
#[derive(Debug)]
pub(crate) struct VersionReader {
    /// Whether lines other than the version may come first (only from a server).
    allow_pre_lines: bool,
    lines_seen: usize,
    /// Pre-version lines (80 characters each at most), kept for the application.
    pub(crate) pre_lines: Vec<String>,
}

/// The peer's identification, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerVersion {
    /// The whole line without CR LF: it goes into the exchange hash.
    pub(crate) line: String,
}

impl VersionReader {
    pub(crate) fn new(allow_pre_lines: bool) -> Self {
        VersionReader { allow_pre_lines, lines_seen: 0, pre_lines: Vec::new() }
    }

    /// Reads complete lines from the start of `buf`. Returns how many bytes
    /// were consumed (pre-version lines, and the version line once found) and
    /// the version when it was found. A partial line is left for the next call.
    pub(crate) fn poll(&mut self, buf: &[u8]) -> Result<(usize, Option<PeerVersion>), Error> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let newline = rest.iter().position(|&b| b == b'\n');
            let is_version = rest.starts_with(b"SSH-") || (rest.len() < 4 && b"SSH-".starts_with(rest));
            // A server allows no lines before the version: any line is held to 255 bytes.
            let limit =
                if is_version || !self.allow_pre_lines { MAX_VERSION_LINE } else { MAX_PRE_VERSION_LINE };
            let Some(nl) = newline else {
                if rest.len() > limit {
                    return Err(self.too_long(is_version, limit));
                }
                return Ok((pos, None));
            };
            if nl + 1 > limit {
                return Err(self.too_long(is_version, limit));
            }
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            pos += nl + 1;
            if line.starts_with(b"SSH-") {
                let line = parse_version_line(line)?;
                return Ok((pos, Some(PeerVersion { line })));
            }
            if !self.allow_pre_lines {
                return Err(Error::BadVersionLine { line: printable(line) });
            }
            self.lines_seen += 1;
            if self.lines_seen > MAX_PRE_VERSION_LINES {
                return Err(Error::TooManyPreVersionLines { max: MAX_PRE_VERSION_LINES });
            }
            self.pre_lines.push(printable(line));
        }
    }

    fn too_long(&self, is_version: bool, limit: usize) -> Error {
        if is_version || !self.allow_pre_lines {
            Error::VersionLineTooLong { max: limit }
        } else {
            Error::PreVersionLineTooLong { max: limit }
        }
    }
}

/// Validates `SSH-protoversion-softwareversion [SP comments]`.
fn parse_version_line(line: &[u8]) -> Result<String, Error> {
    let bad = || Error::BadVersionLine { line: printable(line) };
    // Printable US-ASCII only (RFC 4253 §4.2), which also rules out NUL.
    if line.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err(bad());
    }
    let text = core::str::from_utf8(line).map_err(|_| bad())?;
    let rest = &text[4..];
    let (proto, software) = rest.split_once('-').ok_or_else(bad)?;
    let software = software.split(' ').next().unwrap_or("");
    if software.is_empty() {
        return Err(bad());
    }
    // 1.99 is a server that speaks both 1.x and 2.0 (RFC 4253 §5.1).
    if proto != "2.0" && proto != "1.99" {
        return Err(Error::UnsupportedProtocolVersion { version: proto.to_owned() });
    }
    Ok(text.to_owned())
}

/// A lossy, printable rendering of peer bytes for error messages.
fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(80)];
    let mut s: String =
        shown.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }).collect();
    if bytes.len() > shown.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_after_banner_lines() {
        let mut r = VersionReader::new(true);
        let input = b"hello\r\nworld\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\x00\x00";
        let (consumed, v) = r.poll(input).unwrap();
        assert_eq!(v.unwrap().line, "SSH-2.0-OpenSSH_9.2p1 Debian-2");
        assert_eq!(&input[consumed..], b"\x00\x00");
        assert_eq!(r.pre_lines, vec!["hello", "world"]);
    }

    #[test]
    fn waits_for_more_input() {
        let mut r = VersionReader::new(true);
        assert_eq!(r.poll(b"SSH-2.0-x").unwrap(), (0, None));
        assert_eq!(r.poll(b"SS").unwrap(), (0, None));
        assert_eq!(r.poll(b"").unwrap(), (0, None));
        assert_eq!(r.poll(b"junk\nSS").unwrap(), (5, None));
        assert!(r.poll(b"SSH-2.0-x\n").unwrap().1.is_some());
    }

    #[test]
    fn rejects_bad_lines() {
        let mut r = VersionReader::new(false);
        assert!(matches!(r.poll(b"GET / HTTP/1.1\r\n"), Err(Error::BadVersionLine { .. })));
        let mut r = VersionReader::new(true);
        assert!(matches!(r.poll(b"SSH-1.5-old\r\n"), Err(Error::UnsupportedProtocolVersion { .. })));
        assert!(matches!(r.poll(b"SSH-2.0-\r\n"), Err(Error::BadVersionLine { .. })));
        assert!(matches!(r.poll(b"SSH-2.0-a\x01b\r\n"), Err(Error::BadVersionLine { .. })));
        let long = [b"SSH-2.0-".as_slice(), &[b'a'; 300]].concat();
        assert!(matches!(r.poll(&long), Err(Error::VersionLineTooLong { max: 255 })));
        let junk = vec![b'x'; MAX_PRE_VERSION_LINE + 1];
        assert!(matches!(r.poll(&junk), Err(Error::PreVersionLineTooLong { .. })));
        let mut r = VersionReader::new(true);
        let many = b"x\n".repeat(MAX_PRE_VERSION_LINES + 1);
        assert!(matches!(r.poll(&many), Err(Error::TooManyPreVersionLines { .. })));
    }
}
