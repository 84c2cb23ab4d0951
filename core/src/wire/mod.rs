//! The SSH wire format: message numbers, a zero-copy reader and a writer,
//! and the typed codec of every message.
//!
//! One table ([`msg`]) names every message number and has a decoder and an
//! encoder for each message; [`MessageClass`] says which layer each number
//! belongs to, which is what the phase checks in the transport use.

pub mod msg;
mod reader;
mod writer;

pub use reader::{DecodeError, Reader};
pub use writer::Writer;

/// Which layer a message number belongs to; the transport allows each class
/// only in certain phases (see `transport::Transport::check_phase`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageClass {
    /// 1–4: DISCONNECT, IGNORE, UNIMPLEMENTED, DEBUG — allowed at any time
    /// (except during the first kex under strict kex).
    Generic,
    /// 5–6: SERVICE_REQUEST / SERVICE_ACCEPT.
    Service,
    /// 7: EXT_INFO (RFC 8308).
    ExtInfo,
    /// 20–49: algorithm negotiation and key-exchange method messages.
    Kex,
    /// 50–79: user authentication.
    Auth,
    /// 80–127: connection protocol (global requests and channels).
    Connection,
    /// 192–193: OpenSSH's transport-level PING/PONG.
    Ping,
    /// Any number we do not implement: answered with UNIMPLEMENTED.
    Unknown,
}

impl MessageClass {
    /// The class of message number `n`.
    pub fn of(n: u8) -> MessageClass {
        match n {
            1..=4 => MessageClass::Generic,
            5 | 6 => MessageClass::Service,
            7 => MessageClass::ExtInfo,
            20..=49 => MessageClass::Kex,
            50..=79 => MessageClass::Auth,
            80..=127 => MessageClass::Connection,
            msg::PING | msg::PONG => MessageClass::Ping,
            _ => MessageClass::Unknown,
        }
    }
}

/// Encodes `bytes` (big-endian, unsigned) as an SSH mpint (RFC 4251 §5).
pub fn put_mpint_unsigned(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[start..];
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_encoding_matches_rfc4251_examples() {
        let mut v = Vec::new();
        put_mpint_unsigned(&mut v, &[0, 0]);
        assert_eq!(v, [0, 0, 0, 0]);
        v.clear();
        put_mpint_unsigned(&mut v, &[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]);
        assert_eq!(v, [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]);
        v.clear();
        put_mpint_unsigned(&mut v, &[0x00, 0x80]);
        assert_eq!(v, [0, 0, 0, 2, 0x00, 0x80]);
    }

    #[test]
    fn classes() {
        assert_eq!(MessageClass::of(msg::IGNORE), MessageClass::Generic);
        assert_eq!(MessageClass::of(msg::KEX_ECDH_REPLY), MessageClass::Kex);
        assert_eq!(MessageClass::of(msg::CHANNEL_DATA), MessageClass::Connection);
        assert_eq!(MessageClass::of(0), MessageClass::Unknown);
        assert_eq!(MessageClass::of(200), MessageClass::Unknown);
    }
}
