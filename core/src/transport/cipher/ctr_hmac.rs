//! aes{128,192,256}-ctr (RFC 4344) with an HMAC (RFC 4253 §6.4, RFC 6668,
//! OpenSSH's `-etm@openssh.com` variants): the classic cipher + MAC framing
//! for peers without AEADs (paramiko before 3.3, older servers).
//!
//! Each direction is one CTR keystream that runs on across packets (the
//! counter starts at the derived IV and is never reset until the next
//! NEWKEYS). Two MAC layouts:
//! - plain: MAC = HMAC(key, seq ‖ whole unencrypted packet), and the length
//!   is encrypted, so a reader decrypts the first cipher block to learn it
//!   ([`CtrHmac::read_length`]) and checks the MAC after decrypting the rest;
//! - EtM: the length goes in clear, MAC = HMAC(key, seq ‖ length ‖
//!   ciphertext), checked before anything is decrypted.
//!
//! The HMAC is keyed once per key exchange and cloned per packet (a stack
//! copy of the inner/outer hash states): nothing allocates per packet.

use aes::{Aes128, Aes192, Aes256};
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{CipherAlgorithm, TagMismatch};

/// A MAC the transport can negotiate (used only with a non-AEAD cipher).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    /// `hmac-sha2-256-etm@openssh.com`: encrypt-then-MAC, length in clear.
    HmacSha256Etm,
    /// `hmac-sha2-512-etm@openssh.com`.
    HmacSha512Etm,
    /// `hmac-sha2-256` (RFC 6668): MAC over the unencrypted packet.
    HmacSha256,
    /// `hmac-sha2-512` (RFC 6668).
    HmacSha512,
    /// `hmac-sha1` (RFC 4253): for old servers; OpenSSH still allows it.
    HmacSha1,
}

impl MacAlgorithm {
    /// Every MAC we implement, in our default preference order (OpenSSH's,
    /// less the umac and SHA-1 EtM variants we do not have).
    pub const ALL: [MacAlgorithm; 5] = [
        MacAlgorithm::HmacSha256Etm,
        MacAlgorithm::HmacSha512Etm,
        MacAlgorithm::HmacSha256,
        MacAlgorithm::HmacSha512,
        MacAlgorithm::HmacSha1,
    ];

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            MacAlgorithm::HmacSha256Etm => "hmac-sha2-256-etm@openssh.com",
            MacAlgorithm::HmacSha512Etm => "hmac-sha2-512-etm@openssh.com",
            MacAlgorithm::HmacSha256 => "hmac-sha2-256",
            MacAlgorithm::HmacSha512 => "hmac-sha2-512",
            MacAlgorithm::HmacSha1 => "hmac-sha1",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the MAC covers the ciphertext, with the length in clear
    /// (OpenSSH's `-etm@openssh.com`).
    pub fn is_etm(self) -> bool {
        matches!(self, MacAlgorithm::HmacSha256Etm | MacAlgorithm::HmacSha512Etm)
    }

    /// Bytes of key material per direction (the hash's output size, as
    /// RFC 4253 §7.2 and RFC 6668 ask).
    pub(crate) fn key_len(self) -> usize {
        self.mac_len()
    }

    /// Bytes of MAC after each packet.
    pub fn mac_len(self) -> usize {
        match self {
            MacAlgorithm::HmacSha256Etm | MacAlgorithm::HmacSha256 => 32,
            MacAlgorithm::HmacSha512Etm | MacAlgorithm::HmacSha512 => 64,
            MacAlgorithm::HmacSha1 => 20,
        }
    }
}

/// The AES-CTR keystream of one direction.
enum Keystream {
    Aes128(Ctr128BE<Aes128>),
    Aes192(Ctr128BE<Aes192>),
    Aes256(Ctr128BE<Aes256>),
}

impl Keystream {
    fn apply(&mut self, data: &mut [u8]) {
        match self {
            Keystream::Aes128(c) => c.apply_keystream(data),
            Keystream::Aes192(c) => c.apply_keystream(data),
            Keystream::Aes256(c) => c.apply_keystream(data),
        }
    }
}

/// An HMAC keyed for one direction; cloned per packet.
#[derive(Clone)]
enum MacKey {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

/// Room for the longest MAC (HMAC-SHA-512).
const MAX_MAC: usize = 64;

impl MacKey {
    fn new(alg: MacAlgorithm, key: &[u8]) -> MacKey {
        // HMAC takes keys of any length: these cannot fail.
        match alg {
            MacAlgorithm::HmacSha1 => MacKey::Sha1(Hmac::new_from_slice(key).expect("any key length")),
            MacAlgorithm::HmacSha256 | MacAlgorithm::HmacSha256Etm => {
                MacKey::Sha256(Hmac::new_from_slice(key).expect("any key length"))
            }
            MacAlgorithm::HmacSha512 | MacAlgorithm::HmacSha512Etm => {
                MacKey::Sha512(Hmac::new_from_slice(key).expect("any key length"))
            }
        }
    }

    /// HMAC(key, seq ‖ data) into `out` (which is the MAC's length); returns
    /// how many bytes were written.
    fn compute(&self, seq: u32, data: &[u8], out: &mut [u8; MAX_MAC]) -> usize {
        fn run<M: Mac + Clone>(m: &M, seq: u32, data: &[u8], out: &mut [u8]) -> usize {
            let mut m = m.clone();
            m.update(&seq.to_be_bytes());
            m.update(data);
            let tag = m.finalize().into_bytes();
            out[..tag.len()].copy_from_slice(&tag);
            tag.len()
        }
        match self {
            MacKey::Sha1(m) => run(m, seq, data, out),
            MacKey::Sha256(m) => run(m, seq, data, out),
            MacKey::Sha512(m) => run(m, seq, data, out),
        }
    }

    /// Whether `tag` is HMAC(key, seq ‖ data), compared in constant time.
    fn verify(&self, seq: u32, data: &[u8], tag: &[u8]) -> bool {
        let mut expected = [0u8; MAX_MAC];
        let n = self.compute(seq, data, &mut expected);
        let ok = n == tag.len() && bool::from(expected[..n].ct_eq(tag));
        zeroize::Zeroize::zeroize(&mut expected);
        ok
    }
}

/// One direction of aes*-ctr with an HMAC.
pub(crate) struct CtrHmac {
    keystream: Keystream,
    mac: MacKey,
    mac_alg: MacAlgorithm,
    bits: u16,
}

/// The AES block: packets align to it, and a plain-MAC reader decrypts one
/// to learn the length.
pub(crate) const AES_BLOCK: usize = 16;

impl CtrHmac {
    /// Builds the direction from derived key material: `key` of
    /// `alg.key_len()` bytes, a 16-byte `iv` (the initial counter) and the
    /// MAC key of `mac.key_len()` bytes.
    pub(crate) fn new(
        alg: CipherAlgorithm,
        key: &[u8],
        iv: &[u8],
        mac: MacAlgorithm,
        mac_key: &[u8],
    ) -> Self {
        let bad = "key and iv lengths match the algorithm";
        let (keystream, bits) = match alg {
            CipherAlgorithm::Aes128Ctr => {
                (Keystream::Aes128(Ctr128BE::new_from_slices(key, iv).expect(bad)), 128)
            }
            CipherAlgorithm::Aes192Ctr => {
                (Keystream::Aes192(Ctr128BE::new_from_slices(key, iv).expect(bad)), 192)
            }
            CipherAlgorithm::Aes256Ctr => {
                (Keystream::Aes256(Ctr128BE::new_from_slices(key, iv).expect(bad)), 256)
            }
            other => panic!("{other:?} is not an AES-CTR cipher"),
        };
        CtrHmac { keystream, mac: MacKey::new(mac, mac_key), mac_alg: mac, bits }
    }

    /// What `Debug` prints (never key material).
    pub(crate) fn describe(&self) -> &'static str {
        match (self.bits, self.mac_alg.is_etm()) {
            (128, false) => "aes128-ctr+hmac",
            (128, true) => "aes128-ctr+hmac-etm",
            (192, false) => "aes192-ctr+hmac",
            (192, true) => "aes192-ctr+hmac-etm",
            (_, false) => "aes256-ctr+hmac",
            (_, true) => "aes256-ctr+hmac-etm",
        }
    }

    /// Whether the length field is in clear and outside the MAC'd plaintext.
    pub(crate) fn etm(&self) -> bool {
        self.mac_alg.is_etm()
    }

    pub(crate) fn mac_len(&self) -> usize {
        self.mac_alg.mac_len()
    }

    /// Bytes a reader needs before it knows the packet length: the first
    /// cipher block (plain MAC), or the clear 4-byte length (EtM).
    pub(crate) fn length_bytes(&self) -> usize {
        if self.etm() { 4 } else { AES_BLOCK }
    }

    /// The packet length from the first `length_bytes()` bytes. With a plain
    /// MAC this decrypts that first block in place (advancing the keystream),
    /// so it must be called exactly once per packet, before [`CtrHmac::open`].
    pub(crate) fn read_length(&mut self, head: &mut [u8]) -> u32 {
        if !self.etm() {
            self.keystream.apply(&mut head[..AES_BLOCK]);
        }
        u32::from_be_bytes(head[..4].try_into().expect("4 bytes"))
    }

    /// Encrypts `packet` (length, padding length, payload, padding; a
    /// multiple of 16 bytes, without the length when EtM) in place and
    /// writes the MAC into `tag` (`mac_len()` bytes).
    pub(crate) fn seal(&mut self, seq: u32, packet: &mut [u8], tag: &mut [u8]) {
        let mut out = [0u8; MAX_MAC];
        if self.etm() {
            self.keystream.apply(&mut packet[4..]);
            let n = self.mac.compute(seq, packet, &mut out);
            tag.copy_from_slice(&out[..n]);
        } else {
            let n = self.mac.compute(seq, packet, &mut out);
            tag.copy_from_slice(&out[..n]);
            self.keystream.apply(packet);
        }
    }

    /// Authenticates and decrypts `packet` in place. EtM: the MAC is
    /// checked over the ciphertext before anything is decrypted. Plain:
    /// `read_length` already decrypted the first block; the rest is
    /// decrypted, then the MAC is checked before the caller looks at any of
    /// it. The keystream advances either way (a bad MAC ends the connection).
    pub(crate) fn open(&mut self, seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<(), TagMismatch> {
        if self.etm() {
            if !self.mac.verify(seq, packet, tag) {
                return Err(TagMismatch);
            }
            self.keystream.apply(&mut packet[4..]);
            return Ok(());
        }
        self.keystream.apply(&mut packet[AES_BLOCK..]);
        if !self.mac.verify(seq, packet, tag) {
            return Err(TagMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PacketCipher;
    use super::*;
    use aes::cipher::{BlockEncrypt, KeyInit};

    const CTR_CIPHERS: [CipherAlgorithm; 3] =
        [CipherAlgorithm::Aes128Ctr, CipherAlgorithm::Aes192Ctr, CipherAlgorithm::Aes256Ctr];

    /// `len` bytes of AES-CTR keystream from block `from` on, computed block
    /// by block from the raw AES primitive and a big-endian 128-bit counter
    /// (RFC 4344 §4), independently of the `ctr` crate.
    fn keystream(alg: CipherAlgorithm, key: &[u8], iv: &[u8], from: u128, len: usize) -> Vec<u8> {
        let encrypt = |block: &mut [u8; 16]| match alg {
            CipherAlgorithm::Aes128Ctr => Aes128::new_from_slice(key).unwrap().encrypt_block(block.into()),
            CipherAlgorithm::Aes192Ctr => Aes192::new_from_slice(key).unwrap().encrypt_block(block.into()),
            _ => Aes256::new_from_slice(key).unwrap().encrypt_block(block.into()),
        };
        let start = u128::from_be_bytes(iv.try_into().unwrap());
        let mut out = Vec::new();
        let mut n = from;
        while out.len() < len {
            let mut block = start.wrapping_add(n).to_be_bytes();
            encrypt(&mut block);
            out.extend_from_slice(&block);
            n += 1;
        }
        out.truncate(len);
        out
    }

    /// HMAC(key, seq ‖ data) straight from the `hmac` crate.
    fn hmac(alg: MacAlgorithm, key: &[u8], seq: u32, data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], seq: u32, data: &[u8]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).unwrap();
            m.update(&seq.to_be_bytes());
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match alg {
            MacAlgorithm::HmacSha1 => run::<Hmac<Sha1>>(key, seq, data),
            MacAlgorithm::HmacSha256 | MacAlgorithm::HmacSha256Etm => run::<Hmac<Sha256>>(key, seq, data),
            _ => run::<Hmac<Sha512>>(key, seq, data),
        }
    }

    /// A plaintext packet framed as RFC 4253 §6 wants for this MAC: the
    /// length counts toward the 16-byte alignment unless EtM.
    fn plain_packet(mac: MacAlgorithm, payload_len: usize, fill: u8) -> Vec<u8> {
        let aligned = 1 + payload_len + if mac.is_etm() { 0 } else { 4 };
        let mut padding = 16 - aligned % 16;
        if padding < 4 {
            padding += 16;
        }
        let packet_len = 1 + payload_len + padding;
        let mut p = (packet_len as u32).to_be_bytes().to_vec();
        p.push(padding as u8);
        p.extend((0..payload_len + padding).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)));
        assert_eq!((p.len() - if mac.is_etm() { 4 } else { 0 }) % 16, 0);
        p
    }

    /// Every cipher × MAC: two consecutive packets sealed by sansh equal the
    /// ones computed here from the primitives (the keystream runs on across
    /// packets), open again, and a flipped bit in the ciphertext, the length
    /// or the MAC is refused.
    #[test]
    fn known_answers_for_every_cipher_and_mac() {
        for alg in CTR_CIPHERS {
            for mac in MacAlgorithm::ALL {
                let ctx = format!("{} + {}", alg.name(), mac.name());
                let key: Vec<u8> = (0..alg.key_len() as u8).map(|i| i.wrapping_mul(7) ^ 0x5c).collect();
                // A counter close to wrapping in its low 64 bits: the carry
                // must reach the upper half (a 128-bit counter).
                let mut iv = [0x42u8; 16];
                iv[8..].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
                let mac_key: Vec<u8> = (0..mac.key_len() as u8).map(|i| i ^ 0xa7).collect();
                let mut tx = PacketCipher::with_mac(alg, &key, &iv, Some((mac, &mac_key)));
                let mut rx = PacketCipher::with_mac(alg, &key, &iv, Some((mac, &mac_key)));
                assert_eq!(tx.tag_len(), mac.mac_len(), "{ctx}");
                assert_eq!(tx.block_size(), 16);
                assert_eq!(tx.length_in_alignment(), !mac.is_etm());
                let mut offset_blocks = 0u128;
                let mut sent: Vec<(u32, Vec<u8>, Vec<u8>)> = Vec::new();
                for (seq, payload_len) in [(3u32, 9usize), (4, 100)] {
                    let plain = plain_packet(mac, payload_len, seq as u8);
                    // Expected bytes on the wire, from the primitives.
                    let encrypted_from = if mac.is_etm() { 4 } else { 0 };
                    let ks = keystream(alg, &key, &iv, offset_blocks, plain.len() - encrypted_from);
                    offset_blocks += ((plain.len() - encrypted_from) / 16) as u128;
                    let mut expected = plain.clone();
                    for (b, k) in expected[encrypted_from..].iter_mut().zip(&ks) {
                        *b ^= k;
                    }
                    let expected_mac =
                        hmac(mac, &mac_key, seq, if mac.is_etm() { &expected } else { &plain });

                    let mut packet = plain.clone();
                    let mut tag = vec![0u8; tx.tag_len()];
                    tx.seal(seq, &mut packet, &mut tag);
                    assert_eq!(packet, expected, "{ctx}: ciphertext of packet {seq}");
                    assert_eq!(tag, expected_mac, "{ctx}: MAC of packet {seq}");

                    // A flipped bit in the ciphertext (padding length, or
                    // last byte) or in the MAC is refused, and so is the
                    // right MAC under another sequence number; each by a
                    // fresh receiver brought to this packet's keystream.
                    let fresh = |sent: &[(u32, Vec<u8>, Vec<u8>)]| {
                        let mut r = PacketCipher::with_mac(alg, &key, &iv, Some((mac, &mac_key)));
                        for (s, p, t) in sent {
                            let mut p = p.clone();
                            let head = r.length_bytes();
                            r.read_length(*s, &mut p[..head]);
                            r.open(*s, &mut p, t).unwrap();
                        }
                        r
                    };
                    let last = packet.len() - 1;
                    let cases = [
                        (4, None, seq),
                        (last, None, seq),
                        (0, Some(mac.mac_len() - 1), seq),
                        (0, None, seq + 1),
                    ];
                    for (at, tag_at, as_seq) in cases {
                        let mut r = fresh(&sent);
                        let (mut bad, mut bad_tag) = (packet.clone(), tag.clone());
                        match tag_at {
                            Some(i) => bad_tag[i] ^= 1,
                            None if as_seq == seq => bad[at] ^= 0x08,
                            None => {}
                        }
                        let head = r.length_bytes();
                        let len = r.read_length(as_seq, &mut bad[..head]);
                        assert_eq!(len as usize, plain.len() - 4, "{ctx}");
                        let got = r.open(as_seq, &mut bad, &bad_tag);
                        assert_eq!(got, Err(TagMismatch), "{ctx}: at {at} tag {tag_at:?} seq {as_seq}");
                    }
                    sent.push((seq, packet.clone(), tag.clone()));

                    let head = rx.length_bytes();
                    assert_eq!(head, if mac.is_etm() { 4 } else { 16 });
                    assert_eq!(rx.read_length(seq, &mut packet[..head]) as usize, plain.len() - 4);
                    rx.open(seq, &mut packet, &tag).unwrap();
                    assert_eq!(packet[4..], plain[4..], "{ctx}");
                }
            }
        }
    }

    #[test]
    fn names_and_sizes() {
        for mac in MacAlgorithm::ALL {
            assert_eq!(MacAlgorithm::from_name(mac.name()), Some(mac));
        }
        assert_eq!(MacAlgorithm::from_name("umac-64@openssh.com"), None);
        assert_eq!(MacAlgorithm::HmacSha1.mac_len(), 20);
        assert_eq!(MacAlgorithm::HmacSha512Etm.key_len(), 64);
        for alg in CTR_CIPHERS {
            assert!(!alg.is_aead());
            assert_eq!(CipherAlgorithm::from_name(alg.name()), Some(alg));
            assert_eq!(alg.default_rekey_bytes(), 1 << 36, "2^32 AES blocks");
        }
    }
}
