//! Encoding SSH data types (RFC 4251 §5) onto a byte vector.

/// Appends SSH fields to a `Vec<u8>`.
pub trait Writer {
    /// A `byte`.
    fn put_u8(&mut self, v: u8);
    /// A `boolean`.
    fn put_bool(&mut self, v: bool);
    /// A `uint32`.
    fn put_u32(&mut self, v: u32);
    /// A `string`.
    fn put_string(&mut self, v: &[u8]);
    /// A `string` from text.
    fn put_str(&mut self, v: &str);
    /// A `name-list`.
    fn put_name_list<S: AsRef<str>>(&mut self, names: &[S]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_string(&mut self, v: &[u8]) {
        // Callers never build strings near 4 GiB: packets are capped far below.
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
    fn put_str(&mut self, v: &str) {
        self.put_string(v.as_bytes());
    }
    fn put_name_list<S: AsRef<str>>(&mut self, names: &[S]) {
        let len_at = self.len();
        self.put_u32(0);
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            self.extend_from_slice(n.as_ref().as_bytes());
        }
        let len = (self.len() - len_at - 4) as u32;
        self[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Reader;

    #[test]
    fn round_trip() {
        let mut v = Vec::new();
        v.put_u8(20);
        v.put_bool(true);
        v.put_u32(0xdead_beef);
        v.put_str("hello");
        v.put_name_list(&["a", "b"]);
        v.put_name_list::<&str>(&[]);
        let mut r = Reader::new(&v);
        assert_eq!(r.u8("").unwrap(), 20);
        assert!(r.bool("").unwrap());
        assert_eq!(r.u32("").unwrap(), 0xdead_beef);
        assert_eq!(r.utf8("").unwrap(), "hello");
        assert_eq!(r.name_list("").unwrap(), vec!["a", "b"]);
        assert!(r.name_list("").unwrap().is_empty());
        r.finish().unwrap();
    }
}
