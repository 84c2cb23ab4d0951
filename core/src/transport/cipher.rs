//! Packet ciphers: `none` (the first key exchange), chacha20-poly1305@openssh.com
//! and aes{128,256}-gcm@openssh.com, and (in [`ctr_hmac`]) aes{128,192,256}-ctr
//! with an HMAC. Each seals and opens one whole packet in place, so framing
//! never copies a payload twice.
//!
//! AES-GCM uses `ring`'s assembly (AES-NI/CLMUL): 7× the `aes-gcm` crate's
//! throughput on this machine (11 GB/s vs 1.6 GB/s sealing 32 KiB packets).
//!
//! chacha20-poly1305 (PROTOCOL.chacha20poly1305) has three implementations
//! of the same construction, chosen per packet by size (the keepalive budget
//! is per small packet, bulk downloads are per byte):
//!
//! - bodies up to `SMALL_BODY` bytes (keepalives, interactive traffic):
//!   RustCrypto's `chacha20` block function, asked for whole blocks (at least
//!   two: its SIMD backends compute two or four blocks in about the time of
//!   one, and a single block takes a slow path) — the K_1 block for the
//!   length, and K_2's Poly1305-key block and payload blocks in one call —
//!   and the short-message Poly1305 in [`poly1305_short`]. A 36-byte packet's
//!   seal + length + open costs ~0.6 µs here against ~1.0 µs with ring, whose
//!   ChaCha20 is scalar below 129 bytes (three scalar blocks per packet);
//! - up to `BULK_PACKET`: ring's OpenSSH construction (AVX2 ChaCha20);
//! - from `BULK_PACKET` on: RustCrypto's `chacha20` (AVX-512 with
//!   `--cfg chacha20_avx512`) + `poly1305` (AVX2): 17.7 µs to seal 32 KiB
//!   against ring's 25.3 µs, which is most of a bulk download's CPU. Its
//!   Poly1305 set-up (~1.3 µs) is why it is not used for small packets.

use chacha20::cipher::array::Array;
use chacha20::cipher::{Block, KeyIvInit, StreamCipher, StreamCipherCore, StreamCipherSeek};
use chacha20::{ChaCha20Legacy, ChaCha20LegacyCore};
use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use ring::aead::chacha20_poly1305_openssh::{OpeningKey, SealingKey};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

mod ctr_hmac;
mod poly1305_short;
use ctr_hmac::CtrHmac;
pub use ctr_hmac::MacAlgorithm;

/// Packets (length field, body) at least this long take the RustCrypto
/// chacha20-poly1305 path; measured crossover ~7 KiB (4 KiB: ring 3.4 µs,
/// RustCrypto 4.1 µs; 8 KiB: 6.5 µs vs 6.2 µs).
const BULK_PACKET: usize = 8 * 1024;

/// chacha20-poly1305 bodies (after the length field) up to this long take
/// the small-packet path: ring's own ChaCha20 is scalar up to 128 bytes, and
/// at 144 bytes the small path still costs ~0.6x ring's.
const SMALL_BODY: usize = 256;

/// K_2 keystream blocks of the small path: the Poly1305 key, then the body.
const SMALL_BLOCKS: usize = 1 + SMALL_BODY / 64;

/// A cipher the transport can negotiate.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CipherAlgorithm {
    /// `chacha20-poly1305@openssh.com` (PROTOCOL.chacha20poly1305).
    ChaCha20Poly1305,
    /// `aes128-gcm@openssh.com` (RFC 5647 with OpenSSH's naming and MAC rule).
    Aes128Gcm,
    /// `aes256-gcm@openssh.com`.
    Aes256Gcm,
    /// `aes128-ctr` (RFC 4344), with a negotiated MAC.
    Aes128Ctr,
    /// `aes192-ctr`.
    Aes192Ctr,
    /// `aes256-ctr`.
    Aes256Ctr,
}

impl CipherAlgorithm {
    /// Every cipher we implement, in our default preference order (OpenSSH's).
    /// The AEADs first; aes*-ctr need a MAC and come after them.
    pub const ALL: [CipherAlgorithm; 6] = [
        CipherAlgorithm::ChaCha20Poly1305,
        CipherAlgorithm::Aes128Gcm,
        CipherAlgorithm::Aes256Gcm,
        CipherAlgorithm::Aes128Ctr,
        CipherAlgorithm::Aes192Ctr,
        CipherAlgorithm::Aes256Ctr,
    ];

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            CipherAlgorithm::ChaCha20Poly1305 => "chacha20-poly1305@openssh.com",
            CipherAlgorithm::Aes128Gcm => "aes128-gcm@openssh.com",
            CipherAlgorithm::Aes256Gcm => "aes256-gcm@openssh.com",
            CipherAlgorithm::Aes128Ctr => "aes128-ctr",
            CipherAlgorithm::Aes192Ctr => "aes192-ctr",
            CipherAlgorithm::Aes256Ctr => "aes256-ctr",
        }
    }

    /// Whether the cipher authenticates packets itself, so that no MAC is
    /// negotiated for it (RFC 5647 as OpenSSH applies it).
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            CipherAlgorithm::ChaCha20Poly1305 | CipherAlgorithm::Aes128Gcm | CipherAlgorithm::Aes256Gcm
        )
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Bytes of key material per direction.
    pub(crate) fn key_len(self) -> usize {
        match self {
            CipherAlgorithm::ChaCha20Poly1305 => 64,
            CipherAlgorithm::Aes128Gcm | CipherAlgorithm::Aes128Ctr => 16,
            CipherAlgorithm::Aes192Ctr => 24,
            CipherAlgorithm::Aes256Gcm | CipherAlgorithm::Aes256Ctr => 32,
        }
    }

    /// Bytes of IV per direction.
    pub(crate) fn iv_len(self) -> usize {
        match self {
            CipherAlgorithm::ChaCha20Poly1305 => 0,
            CipherAlgorithm::Aes128Gcm | CipherAlgorithm::Aes256Gcm => 12,
            // The initial counter block.
            CipherAlgorithm::Aes128Ctr | CipherAlgorithm::Aes192Ctr | CipherAlgorithm::Aes256Ctr => 16,
        }
    }

    /// Bytes after which OpenSSH rekeys with this cipher (PROTOCOL-NOTES):
    /// 2^32 blocks for AES, GCM or CTR (64 GiB), and 1 GiB for chacha20-poly1305.
    pub fn default_rekey_bytes(self) -> u64 {
        match self {
            CipherAlgorithm::ChaCha20Poly1305 => 1 << 30,
            _ => 1 << 36,
        }
    }
}

/// A packet failed authentication (corrupted or forged on the wire).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TagMismatch;

/// The cipher state for one direction.
pub(crate) enum PacketCipher {
    /// No encryption: before the first NEWKEYS.
    None,
    /// chacha20-poly1305@openssh.com: both halves from the same 64 bytes
    /// (K_2 for payload and Poly1305 key, then K_1 for the length); a
    /// direction uses one of them.
    ChaCha(Box<ChaChaKeys>),
    /// aes128-gcm or aes256-gcm.
    AesGcm { aead: Box<LessSafeKey>, iv: [u8; 12], bits: u16 },
    /// aes*-ctr with an HMAC, plain or encrypt-then-MAC.
    CtrHmac(Box<CtrHmac>),
}

impl core::fmt::Debug for PacketCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            PacketCipher::None => "none",
            PacketCipher::ChaCha(_) => "chacha20-poly1305",
            PacketCipher::AesGcm { bits: 128, .. } => "aes128-gcm",
            PacketCipher::AesGcm { .. } => "aes256-gcm",
            PacketCipher::CtrHmac(c) => c.describe(),
        })
    }
}

impl Drop for PacketCipher {
    fn drop(&mut self) {
        // ring zeroes its own key schedules.
        match self {
            PacketCipher::ChaCha(_) => {}
            PacketCipher::AesGcm { iv, .. } => iv.zeroize(),
            // aes, ctr and hmac zero their own state.
            PacketCipher::None | PacketCipher::CtrHmac(_) => {}
        }
    }
}

/// One direction's chacha20-poly1305 keys, for the three implementations.
/// The two raw keys come first, in one cache line: a keepalive's packet
/// touches only them.
#[repr(C, align(64))]
pub(crate) struct ChaChaKeys {
    /// K_2: the payload and the Poly1305 key (RustCrypto paths).
    main: Zeroizing<[u8; 32]>,
    /// K_1: the length field (RustCrypto paths).
    header: Zeroizing<[u8; 32]>,
    seal: SealingKey,
    open: OpeningKey,
}

impl ChaChaKeys {
    fn new(key: &[u8]) -> Self {
        let mut bytes: [u8; 64] = key.try_into().expect("64-byte key");
        let mut main = Zeroizing::new([0u8; 32]);
        let mut header = Zeroizing::new([0u8; 32]);
        main.copy_from_slice(&bytes[..32]);
        header.copy_from_slice(&bytes[32..]);
        let keys = ChaChaKeys { main, header, seal: SealingKey::new(&bytes), open: OpeningKey::new(&bytes) };
        bytes.zeroize();
        keys
    }

    /// The decrypted length field: block 0 of K_1 (two blocks are asked
    /// for, the fast path of the SIMD backends; the second is discarded).
    fn length(&self, seq: u32, first4: [u8; 4]) -> u32 {
        let nonce = u64::from(seq).to_be_bytes();
        let mut ks = [Block::<ChaCha20LegacyCore>::default(); 2];
        ChaCha20LegacyCore::new(&(*self.header).into(), &nonce.into()).write_keystream_blocks(&mut ks);
        u32::from_be_bytes(core::array::from_fn(|i| first4[i] ^ ks[0][i]))
    }

    /// K_2's keystream for a small packet with a `body`-byte body: block 0
    /// (its first 32 bytes are the Poly1305 key), then the body's blocks.
    fn small_keystream(&self, seq: u32, body: usize, ks: &mut [Block<ChaCha20LegacyCore>; SMALL_BLOCKS]) {
        let nonce = u64::from(seq).to_be_bytes();
        let blocks = (1 + body.div_ceil(64)).max(2);
        ChaCha20LegacyCore::new(&(*self.main).into(), &nonce.into())
            .write_keystream_blocks(&mut ks[..blocks]);
    }

    /// Small-packet path of `seal` (`packet.len() <= 4 + SMALL_BODY`).
    fn seal_small(&self, seq: u32, packet: &mut [u8], tag: &mut [u8; 16]) {
        let (len, body) = packet.split_at_mut(4);
        let clear = u32::from_be_bytes((*len).try_into().expect("4 bytes"));
        len.copy_from_slice(&self.length(seq, clear.to_be_bytes()).to_be_bytes());
        let mut ks = [Block::<ChaCha20LegacyCore>::default(); SMALL_BLOCKS];
        self.small_keystream(seq, body.len(), &mut ks);
        let flat = Array::slice_as_flattened_mut(&mut ks);
        body.iter_mut().zip(&flat[64..]).for_each(|(b, k)| *b ^= k);
        let poly_key: &mut [u8; 32] = (&mut flat[..32]).try_into().expect("32 bytes");
        *tag = poly1305_short::poly1305(poly_key, packet);
        poly_key.zeroize();
    }

    /// Small-packet path of `open`: the tag is checked (in constant time)
    /// before anything is decrypted; the length field stays as it came.
    fn open_small(&self, seq: u32, packet: &mut [u8], tag: &[u8; 16]) -> Result<(), TagMismatch> {
        let mut ks = [Block::<ChaCha20LegacyCore>::default(); SMALL_BLOCKS];
        self.small_keystream(seq, packet.len() - 4, &mut ks);
        let flat = Array::slice_as_flattened_mut(&mut ks);
        let poly_key: &mut [u8; 32] = (&mut flat[..32]).try_into().expect("32 bytes");
        let expected = poly1305_short::poly1305(poly_key, packet);
        poly_key.zeroize();
        if !bool::from(expected.ct_eq(tag)) {
            return Err(TagMismatch);
        }
        packet[4..].iter_mut().zip(&flat[64..]).for_each(|(b, k)| *b ^= k);
        Ok(())
    }

    /// The payload cipher for packet `seq`, positioned after the Poly1305
    /// key block, and that key.
    fn main_cipher(&self, seq: u32) -> (ChaCha20Legacy, Poly1305) {
        let nonce = u64::from(seq).to_be_bytes();
        let mut cipher = ChaCha20Legacy::new(&(*self.main).into(), &nonce.into());
        let mut poly_key = Zeroizing::new([0u8; 32]);
        cipher.apply_keystream(&mut poly_key[..]);
        cipher.seek(64u64);
        (cipher, Poly1305::new(&(*poly_key).into()))
    }

    /// RustCrypto path of `seal`: length with K_1, body with K_2 from block
    /// 1, Poly1305 over the whole encrypted packet.
    fn seal_bulk(&self, seq: u32, packet: &mut [u8], tag: &mut [u8; 16]) {
        let nonce = u64::from(seq).to_be_bytes();
        ChaCha20Legacy::new(&(*self.header).into(), &nonce.into()).apply_keystream(&mut packet[..4]);
        let (mut cipher, poly) = self.main_cipher(seq);
        cipher.apply_keystream(&mut packet[4..]);
        tag.copy_from_slice(&poly.compute_unpadded(packet));
    }

    /// RustCrypto path of `open`: the tag is checked (in constant time)
    /// before anything is decrypted; the length field stays as it came.
    fn open_bulk(&self, seq: u32, packet: &mut [u8], tag: &[u8; 16]) -> Result<(), TagMismatch> {
        let (mut cipher, poly) = self.main_cipher(seq);
        let expected = poly.compute_unpadded(packet);
        if !bool::from(expected.as_slice().ct_eq(tag)) {
            return Err(TagMismatch);
        }
        cipher.apply_keystream(&mut packet[4..]);
        Ok(())
    }
}

/// The AES-GCM nonce for this packet: a fixed 4-byte field and a 64-bit
/// invocation counter, incremented after every packet (RFC 5647 §7.1).
fn gcm_step(iv: &mut [u8; 12]) -> Nonce {
    let nonce = Nonce::assume_unique_for_key(*iv);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&iv[4..]);
    let next = u64::from_be_bytes(counter).wrapping_add(1);
    iv[4..].copy_from_slice(&next.to_be_bytes());
    nonce
}

impl PacketCipher {
    /// Builds the cipher from derived key material (`key.len() == alg.key_len()`).
    pub(crate) fn new(alg: CipherAlgorithm, key: &[u8], iv: &[u8]) -> Self {
        match alg {
            CipherAlgorithm::ChaCha20Poly1305 => PacketCipher::ChaCha(Box::new(ChaChaKeys::new(key))),
            CipherAlgorithm::Aes128Gcm | CipherAlgorithm::Aes256Gcm => {
                let (ring_alg, bits) =
                    if alg == CipherAlgorithm::Aes128Gcm { (&AES_128_GCM, 128) } else { (&AES_256_GCM, 256) };
                let key = UnboundKey::new(ring_alg, key).expect("key length matches the algorithm");
                PacketCipher::AesGcm {
                    aead: Box::new(LessSafeKey::new(key)),
                    iv: iv.try_into().expect("12-byte iv"),
                    bits,
                }
            }
            CipherAlgorithm::Aes128Ctr | CipherAlgorithm::Aes192Ctr | CipherAlgorithm::Aes256Ctr => {
                panic!("{alg:?} needs a MAC: use PacketCipher::with_mac")
            }
        }
    }

    /// Builds the cipher of one direction from derived key material, with
    /// the negotiated MAC and its key (ignored for the AEADs, which the MAC
    /// negotiation skips; required for aes*-ctr).
    pub(crate) fn with_mac(
        alg: CipherAlgorithm,
        key: &[u8],
        iv: &[u8],
        mac: Option<(MacAlgorithm, &[u8])>,
    ) -> Self {
        match (alg.is_aead(), mac) {
            (true, _) => PacketCipher::new(alg, key, iv),
            (false, Some((mac, mac_key))) => {
                PacketCipher::CtrHmac(Box::new(CtrHmac::new(alg, key, iv, mac, mac_key)))
            }
            (false, None) => panic!("{alg:?} negotiated without a MAC"),
        }
    }

    /// Block size that the padded packet must be a multiple of.
    pub(crate) fn block_size(&self) -> usize {
        match self {
            PacketCipher::None | PacketCipher::ChaCha(_) => 8,
            PacketCipher::AesGcm { .. } => 16,
            PacketCipher::CtrHmac(_) => ctr_hmac::AES_BLOCK,
        }
    }

    /// Whether the 4-byte length field counts toward block alignment
    /// (it does for unencrypted packets and a plain MAC, where it is
    /// encrypted with the rest; AEAD modes and EtM exclude it).
    pub(crate) fn length_in_alignment(&self) -> bool {
        match self {
            PacketCipher::None => true,
            PacketCipher::CtrHmac(c) => !c.etm(),
            _ => false,
        }
    }

    /// Authentication tag (or MAC) length.
    pub(crate) fn tag_len(&self) -> usize {
        match self {
            PacketCipher::None => 0,
            PacketCipher::CtrHmac(c) => c.mac_len(),
            _ => 16,
        }
    }

    /// Bytes needed at the front of a packet to learn its length: the first
    /// cipher block when the length is encrypted with CTR (plain MAC), else 4.
    pub(crate) fn length_bytes(&self) -> usize {
        match self {
            PacketCipher::CtrHmac(c) => c.length_bytes(),
            _ => 4,
        }
    }

    /// The packet length from the first `length_bytes()` bytes, once per
    /// packet. aes*-ctr with a plain MAC decrypts those bytes in place (its
    /// keystream cannot rewind); the others leave them as they came.
    pub(crate) fn read_length(&mut self, seq: u32, head: &mut [u8]) -> u32 {
        match self {
            PacketCipher::CtrHmac(c) => c.read_length(head),
            _ => self.peek_length(seq, head[..4].try_into().expect("4 bytes")),
        }
    }

    /// Encrypts `packet` (4-byte length, then padding length, payload and
    /// padding) in place and writes the tag into `tag` (`tag_len()` bytes).
    pub(crate) fn seal(&mut self, seq: u32, packet: &mut [u8], tag: &mut [u8]) {
        match self {
            PacketCipher::None => {}
            PacketCipher::ChaCha(keys) => {
                let tag: &mut [u8; 16] = tag.try_into().expect("16-byte tag");
                if packet.len() <= 4 + SMALL_BODY {
                    keys.seal_small(seq, packet, tag);
                } else if packet.len() >= BULK_PACKET {
                    keys.seal_bulk(seq, packet, tag);
                } else {
                    keys.seal.seal_in_place(seq, packet, tag);
                }
            }
            PacketCipher::AesGcm { aead, iv, .. } => {
                let nonce = gcm_step(iv);
                let (len, body) = packet.split_at_mut(4);
                let t = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&*len), body)
                    .expect("packet under GCM's size limit");
                tag.copy_from_slice(t.as_ref());
            }
            PacketCipher::CtrHmac(c) => c.seal(seq, packet, tag),
        }
    }

    /// The packet length from the first 4 bytes on the wire, without
    /// consuming them (chacha20-poly1305 encrypts it; the others do not).
    /// Not for aes*-ctr with a plain MAC: `read_length` decrypts its block.
    pub(crate) fn peek_length(&self, seq: u32, first4: &[u8; 4]) -> u32 {
        match self {
            PacketCipher::ChaCha(keys) => keys.length(seq, *first4),
            _ => u32::from_be_bytes(*first4),
        }
    }

    /// Verifies `tag` over `packet` and decrypts the body (`packet[4..]`) in place.
    /// The length field is left as `read_length` left it. Nothing decrypted is
    /// used when the tag is bad.
    pub(crate) fn open(&mut self, seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<(), TagMismatch> {
        match self {
            PacketCipher::None => Ok(()),
            PacketCipher::ChaCha(keys) => {
                // ring checks the tag over the whole packet before it
                // decrypts anything, and leaves the length field as it came.
                let tag: &[u8; 16] = tag.try_into().map_err(|_| TagMismatch)?;
                if packet.len() <= 4 + SMALL_BODY {
                    return keys.open_small(seq, packet, tag);
                }
                if packet.len() >= BULK_PACKET {
                    return keys.open_bulk(seq, packet, tag);
                }
                keys.open.open_in_place(seq, packet, tag).map(|_| ()).map_err(|_| TagMismatch)
            }
            PacketCipher::AesGcm { aead, iv, .. } => {
                let nonce = gcm_step(iv);
                let tag = Tag::try_from(tag).map_err(|_| TagMismatch)?;
                let (len, body) = packet.split_at_mut(4);
                aead.open_in_place_separate_tag(nonce, Aad::from(&*len), tag, body, 0..)
                    .map(|_| ())
                    .map_err(|_| TagMismatch)
            }
            PacketCipher::CtrHmac(c) => c.open(seq, packet, tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(alg: CipherAlgorithm) {
        let key: Vec<u8> = (0..alg.key_len() as u8).collect();
        let iv: Vec<u8> = (100..100 + alg.iv_len() as u8).collect();
        let mut tx = PacketCipher::new(alg, &key, &iv);
        let mut rx = PacketCipher::new(alg, &key, &iv);
        for seq in [0u32, 1, 7, u32::MAX] {
            let body_len = 32u32;
            let mut pkt = body_len.to_be_bytes().to_vec();
            pkt.extend((0..body_len).map(|i| i as u8));
            let plain = pkt.clone();
            let mut tag = [0u8; 16];
            tx.seal(seq, &mut pkt, &mut tag);
            assert_ne!(pkt[4..], plain[4..], "{alg:?} body must be encrypted");
            let first4: [u8; 4] = pkt[..4].try_into().unwrap();
            assert_eq!(rx.peek_length(seq, &first4), body_len);
            // A flipped bit anywhere is caught, and leaves the body untouched.
            let mut bad = pkt.clone();
            bad[10] ^= 1;
            let mut rx_bad = PacketCipher::new(alg, &key, &iv);
            assert_eq!(rx_bad.open(seq, &mut bad, &tag), Err(TagMismatch));
            rx.open(seq, &mut pkt, &tag).unwrap();
            assert_eq!(pkt[4..], plain[4..]);
        }
    }

    /// A packet sealed by the previous implementation (RustCrypto's
    /// `chacha20` + `poly1305`, per PROTOCOL.chacha20poly1305, interop-tested
    /// against OpenSSH): the construction and key order are unchanged.
    #[test]
    fn chacha_known_answer() {
        let key: Vec<u8> = (0u8..64).collect();
        let mut packet = vec![0, 0, 0, 28];
        packet.extend((0u8..28).map(|i| i.wrapping_mul(37)));
        let plain = packet.clone();
        let mut tx = PacketCipher::new(CipherAlgorithm::ChaCha20Poly1305, &key, &[]);
        let mut tag = [0u8; 16];
        tx.seal(7, &mut packet, &mut tag);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&packet), "a39afcb628635f2cda3af45d4420c9676b6ed50764c7aa899aea13d038f7d938");
        assert_eq!(hex(&tag), "94eeb5c5e5f70b38fdb83eeeed92a251");
        let mut rx = PacketCipher::new(CipherAlgorithm::ChaCha20Poly1305, &key, &[]);
        assert_eq!(rx.peek_length(7, &packet[..4].try_into().unwrap()), 28);
        rx.open(7, &mut packet, &tag).unwrap();
        assert_eq!(packet[4..], plain[4..]);
    }

    #[test]
    fn chacha_round_trip() {
        round_trip(CipherAlgorithm::ChaCha20Poly1305);
    }

    /// The three chacha20-poly1305 implementations produce the same bytes
    /// and open each other's packets, on both sides of each size switch;
    /// the length field decrypts as ring decrypts it.
    #[test]
    fn chacha_implementations_agree() {
        let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(91)).collect();
        let keys = ChaChaKeys::new(&key);
        let lens = [
            8usize,
            16,
            20,
            36,
            67,
            68,
            69,
            100,
            132,
            4 + SMALL_BODY - 1,
            4 + SMALL_BODY,
            4 + SMALL_BODY + 1,
            BULK_PACKET - 4,
            BULK_PACKET,
            BULK_PACKET + 13,
            32 * 1024 + 20,
        ];
        for len in lens {
            for seq in [0u32, 3, 0x0102_0304, u32::MAX] {
                let mut plain = ((len - 4) as u32).to_be_bytes().to_vec();
                plain.extend((0..len - 4).map(|i| (i * 7 + 1) as u8));
                let (mut a, mut b) = (plain.clone(), plain.clone());
                let (mut ta, mut tb) = ([0u8; 16], [0u8; 16]);
                keys.seal.seal_in_place(seq, &mut a, &mut ta);
                keys.seal_bulk(seq, &mut b, &mut tb);
                assert_eq!((&a, ta), (&b, tb), "len {len} seq {seq}");
                let first4: [u8; 4] = a[..4].try_into().unwrap();
                assert_eq!(
                    keys.length(seq, first4).to_be_bytes(),
                    keys.open.decrypt_packet_length(seq, first4)
                );
                assert_eq!(keys.length(seq, first4) as usize, len - 4);
                let mut c = a.clone();
                keys.open_bulk(seq, &mut a, &ta).unwrap();
                assert_eq!(a[4..], plain[4..]);
                keys.open.open_in_place(seq, &mut c, &tb).unwrap();
                assert_eq!(c[4..], plain[4..]);
                // A flipped bit is refused and nothing is decrypted.
                let mut bad = b.clone();
                bad[len / 2] ^= 0x10;
                let copy = bad.clone();
                assert_eq!(keys.open_bulk(seq, &mut bad, &tb), Err(TagMismatch));
                assert_eq!(bad, copy);
                if len - 4 <= SMALL_BODY {
                    let mut d = plain.clone();
                    let mut td = [0u8; 16];
                    keys.seal_small(seq, &mut d, &mut td);
                    assert_eq!((&d, td), (&b, tb), "small len {len} seq {seq}");
                    keys.open_small(seq, &mut d, &td).unwrap();
                    assert_eq!(d[4..], plain[4..]);
                    for at in [0, 4, len / 2, len - 1] {
                        let mut bad = b.clone();
                        bad[at] ^= 0x01;
                        let copy = bad.clone();
                        assert_eq!(keys.open_small(seq, &mut bad, &tb), Err(TagMismatch), "at {at}");
                        assert_eq!(bad, copy);
                    }
                    let mut bad_tag = tb;
                    bad_tag[15] ^= 0x80;
                    let mut e = b.clone();
                    assert_eq!(keys.open_small(seq, &mut e, &bad_tag), Err(TagMismatch));
                    assert_eq!(e, b);
                }
            }
        }
    }

    #[test]
    fn gcm_round_trip() {
        round_trip(CipherAlgorithm::Aes128Gcm);
        round_trip(CipherAlgorithm::Aes256Gcm);
    }

    #[test]
    fn gcm_counter_increments_big_endian() {
        let mut iv = [0u8; 12];
        iv[11] = 0xff;
        gcm_step(&mut iv);
        assert_eq!(&iv[4..], &[0, 0, 0, 0, 0, 0, 1, 0]);
        let mut iv = [1u8; 12];
        iv[4..].copy_from_slice(&u64::MAX.to_be_bytes());
        gcm_step(&mut iv);
        assert_eq!(&iv[..4], &[1, 1, 1, 1], "fixed field never changes");
        assert_eq!(&iv[4..], &[0; 8]);
    }
}
