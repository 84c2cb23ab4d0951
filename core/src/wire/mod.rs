//! The SSH wire format: message numbers, a zero-copy reader and a writer.
//!
//! One table (`msg`) names every message number; [`MessageClass`] says which
//! layer each belongs to, which is what the phase checks in the transport use.

mod reader;
mod writer;

pub use reader::{DecodeError, Reader};
pub use writer::Writer;

/// Message numbers (RFC 4250 §4.1, RFC 8308, OpenSSH PROTOCOL).
#[allow(missing_docs)] // the RFC's names say it all
pub mod msg {
    pub const DISCONNECT: u8 = 1;
    pub const IGNORE: u8 = 2;
    pub const UNIMPLEMENTED: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const SERVICE_REQUEST: u8 = 5;
    pub const SERVICE_ACCEPT: u8 = 6;
    pub const EXT_INFO: u8 = 7;
    pub const NEWCOMPRESS: u8 = 8;
    pub const KEXINIT: u8 = 20;
    pub const NEWKEYS: u8 = 21;
    pub const KEX_ECDH_INIT: u8 = 30;
    pub const KEX_ECDH_REPLY: u8 = 31;
    pub const USERAUTH_REQUEST: u8 = 50;
    pub const USERAUTH_FAILURE: u8 = 51;
    pub const USERAUTH_SUCCESS: u8 = 52;
    pub const USERAUTH_BANNER: u8 = 53;
    /// PK_OK, PASSWD_CHANGEREQ and INFO_REQUEST share this number.
    pub const USERAUTH_60: u8 = 60;
    pub const USERAUTH_INFO_RESPONSE: u8 = 61;
    pub const GLOBAL_REQUEST: u8 = 80;
    pub const REQUEST_SUCCESS: u8 = 81;
    pub const REQUEST_FAILURE: u8 = 82;
    pub const CHANNEL_OPEN: u8 = 90;
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    pub const CHANNEL_DATA: u8 = 94;
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    pub const CHANNEL_EOF: u8 = 96;
    pub const CHANNEL_CLOSE: u8 = 97;
    pub const CHANNEL_REQUEST: u8 = 98;
    pub const CHANNEL_SUCCESS: u8 = 99;
    pub const CHANNEL_FAILURE: u8 = 100;
    /// OpenSSH transport-level ping (PROTOCOL §1.9), only after `ping@openssh.com`.
    pub const PING: u8 = 192;
    pub const PONG: u8 = 193;

    /// A short name for logs and errors.
    pub fn name(n: u8) -> &'static str {
        match n {
            DISCONNECT => "DISCONNECT",
            IGNORE => "IGNORE",
            UNIMPLEMENTED => "UNIMPLEMENTED",
            DEBUG => "DEBUG",
            SERVICE_REQUEST => "SERVICE_REQUEST",
            SERVICE_ACCEPT => "SERVICE_ACCEPT",
            EXT_INFO => "EXT_INFO",
            NEWCOMPRESS => "NEWCOMPRESS",
            KEXINIT => "KEXINIT",
            NEWKEYS => "NEWKEYS",
            KEX_ECDH_INIT => "KEX_ECDH_INIT",
            KEX_ECDH_REPLY => "KEX_ECDH_REPLY",
            USERAUTH_REQUEST => "USERAUTH_REQUEST",
            USERAUTH_FAILURE => "USERAUTH_FAILURE",
            USERAUTH_SUCCESS => "USERAUTH_SUCCESS",
            USERAUTH_BANNER => "USERAUTH_BANNER",
            USERAUTH_60 => "USERAUTH_60",
            USERAUTH_INFO_RESPONSE => "USERAUTH_INFO_RESPONSE",
            GLOBAL_REQUEST => "GLOBAL_REQUEST",
            REQUEST_SUCCESS => "REQUEST_SUCCESS",
            REQUEST_FAILURE => "REQUEST_FAILURE",
            CHANNEL_OPEN => "CHANNEL_OPEN",
            CHANNEL_OPEN_CONFIRMATION => "CHANNEL_OPEN_CONFIRMATION",
            CHANNEL_OPEN_FAILURE => "CHANNEL_OPEN_FAILURE",
            CHANNEL_WINDOW_ADJUST => "CHANNEL_WINDOW_ADJUST",
            CHANNEL_DATA => "CHANNEL_DATA",
            CHANNEL_EXTENDED_DATA => "CHANNEL_EXTENDED_DATA",
            CHANNEL_EOF => "CHANNEL_EOF",
            CHANNEL_CLOSE => "CHANNEL_CLOSE",
            CHANNEL_REQUEST => "CHANNEL_REQUEST",
            CHANNEL_SUCCESS => "CHANNEL_SUCCESS",
            CHANNEL_FAILURE => "CHANNEL_FAILURE",
            PING => "PING",
            PONG => "PONG",
            _ => "unknown",
        }
    }
}

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
