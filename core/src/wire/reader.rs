//! Zero-copy decoding of SSH data types (RFC 4251 §5) from a payload slice.

use core::str;

/// What was wrong with a message's encoding.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field did.
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    /// A string that must be UTF-8 (or a name-list that must be ASCII) was not.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A boolean or enum-like field had a value outside its range.
    #[error("invalid value for {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the last field.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Reads SSH fields from a borrowed payload without copying.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A `byte`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A `boolean` (any non-zero value is true, RFC 4251 §5).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        Ok(self.u8(what)? != 0)
    }

    /// A `uint32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `uint64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A `string` as raw bytes. The length is checked against what remains
    /// before anything is sliced, so a huge length cannot allocate or panic.
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.bytes(len, what)
    }

    /// A `string` that must be UTF-8.
    pub fn utf8(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.string(what)?;
        str::from_utf8(b).map_err(|_| DecodeError::NotUtf8(what))
    }

    /// A `name-list`: comma-separated US-ASCII names. Empty names are skipped.
    pub fn name_list(&mut self, what: &'static str) -> Result<Vec<&'a str>, DecodeError> {
        let b = self.string(what)?;
        if !b.is_ascii() {
            return Err(DecodeError::NotUtf8(what));
        }
        let s = str::from_utf8(b).map_err(|_| DecodeError::NotUtf8(what))?;
        Ok(s.split(',').filter(|n| !n.is_empty()).collect())
    }

    /// Fails when bytes are left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_rejects_short_input() {
        let data = [0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0, 0, 7];
        let mut r = Reader::new(&data);
        assert_eq!(r.string("s").unwrap(), b"abc");
        assert!(r.bool("b").unwrap());
        assert_eq!(r.u32("n").unwrap(), 7);
        r.finish().unwrap();
        assert_eq!(r.u8("x"), Err(DecodeError::Truncated("x")));

        let huge = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert_eq!(Reader::new(&huge).string("s"), Err(DecodeError::Truncated("s")));
    }

    #[test]
    fn name_lists() {
        let data = b"\0\0\0\x0aa,b,,c-d@x";
        let mut r = Reader::new(data);
        assert_eq!(r.name_list("l").unwrap(), vec!["a", "b", "c-d@x"]);
        let bad = b"\0\0\0\x02\xc3\xa9";
        assert!(Reader::new(bad).name_list("l").is_err());
    }
}
