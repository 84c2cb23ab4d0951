//! The binary packet protocol (RFC 4253 §6): padding, sequence numbers and the
//! inbound length cap, over a [`PacketCipher`].

use core::ops::Range;

use super::cipher::{PacketCipher, TagMismatch};
use crate::error::Error;
use crate::rng::Rng;
use rand_core::RngCore;

/// Bytes before the payload: packet length (4) and padding length (1).
pub(crate) const HEADER_LEN: usize = 5;
/// RFC 4253 §6: at least four bytes of padding.
const MIN_PADDING: usize = 4;

/// Frames and encrypts outbound packets straight into the transmit buffer.
#[derive(Debug)]
pub(crate) struct Sealer {
    pub(crate) cipher: PacketCipher,
    /// Sequence number of the next packet.
    pub(crate) seq: u32,
}

impl Sealer {
    pub(crate) fn new() -> Self {
        Sealer { cipher: PacketCipher::None, seq: 0 }
    }

    /// Reserves the header for a packet whose payload the caller appends to
    /// `tx` next; returns the offset to hand to [`Sealer::finish`].
    pub(crate) fn begin(tx: &mut Vec<u8>) -> usize {
        let start = tx.len();
        tx.extend_from_slice(&[0u8; HEADER_LEN]);
        start
    }

    /// Pads, encrypts and tags the packet that starts at `start` and runs to
    /// the end of `tx`. Returns the packet's size on the wire.
    pub(crate) fn finish(&mut self, tx: &mut Vec<u8>, start: usize, rng: &mut Rng) -> usize {
        let payload_len = tx.len() - start - HEADER_LEN;
        let block = self.cipher.block_size();
        let aligned = 1 + payload_len + if self.cipher.length_in_alignment() { 4 } else { 0 };
        let mut padding = block - aligned % block;
        if padding < MIN_PADDING {
            padding += block;
        }
        let pad_at = tx.len();
        tx.resize(pad_at + padding, 0);
        rng.fill_bytes(&mut tx[pad_at..]);
        let packet_len = (1 + payload_len + padding) as u32;
        tx[start..start + 4].copy_from_slice(&packet_len.to_be_bytes());
        tx[start + 4] = padding as u8;
        let tag_len = self.cipher.tag_len();
        let body_end = tx.len();
        tx.resize(body_end + tag_len, 0);
        let (packet, tag) = tx[start..].split_at_mut(body_end - start);
        self.cipher.seal(self.seq, packet, tag);
        self.seq = self.seq.wrapping_add(1);
        tx.len() - start
    }
}

/// A packet that [`Opener::poll`] authenticated and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Where the payload lies in the buffer that was polled.
    pub(crate) payload: Range<usize>,
    /// How many bytes of the buffer the packet took (length, body and tag).
    pub(crate) consumed: usize,
    /// The packet's sequence number.
    pub(crate) seq: u32,
}

/// Finds, authenticates and decrypts inbound packets in a receive buffer.
#[derive(Debug)]
pub(crate) struct Opener {
    pub(crate) cipher: PacketCipher,
    /// Sequence number of the next packet.
    pub(crate) seq: u32,
    /// Largest `packet_length` accepted; checked before waiting for the body.
    max_packet_len: u32,
    /// Length of a packet whose header has been read but whose body has not
    /// all arrived (chacha20 decrypts the length once, not on every poll;
    /// aes*-ctr with a plain MAC has decrypted the first block in place).
    pending_len: Option<u32>,
}

impl Opener {
    pub(crate) fn new(max_packet_len: u32) -> Self {
        Opener { cipher: PacketCipher::None, seq: 0, max_packet_len, pending_len: None }
    }

    /// Whether a packet has started arriving but is not complete.
    pub(crate) fn mid_packet(&self, buffered: usize) -> bool {
        buffered > 0 || self.pending_len.is_some()
    }

    /// The next complete packet at the front of `buf`, decrypted in place, or
    /// `None` when more bytes are needed. The length is validated before any
    /// wait, so a hostile length can neither allocate nor stall us for long.
    pub(crate) fn poll(&mut self, buf: &mut [u8]) -> Result<Option<Opened>, Error> {
        let len = match self.pending_len {
            Some(len) => len,
            None => {
                // 4 bytes, or the first cipher block when the length is
                // encrypted with the body (aes*-ctr, plain MAC). Checked
                // before waiting for the rest.
                let head = self.cipher.length_bytes();
                if buf.len() < head {
                    return Ok(None);
                }
                let len = self.cipher.read_length(self.seq, &mut buf[..head]);
                self.check_length(len)?;
                self.pending_len = Some(len);
                len
            }
        };
        let body_end = 4 + len as usize;
        let total = body_end + self.cipher.tag_len();
        if buf.len() < total {
            return Ok(None);
        }
        self.pending_len = None;
        let (packet, rest) = buf.split_at_mut(body_end);
        let tag = &rest[..self.cipher.tag_len()];
        self.cipher.open(self.seq, packet, tag).map_err(|TagMismatch| Error::BadMac { seq: self.seq })?;
        let padding = packet[4] as usize;
        if padding < MIN_PADDING || padding + 1 >= len as usize {
            return Err(Error::BadPaddingLength { padding: padding as u8, packet_len: len });
        }
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Ok(Some(Opened { payload: HEADER_LEN..body_end - padding, consumed: total, seq }))
    }

    fn check_length(&self, len: u32) -> Result<(), Error> {
        if len > self.max_packet_len {
            return Err(Error::PacketTooLarge { len, max: self.max_packet_len });
        }
        let block = self.cipher.block_size() as u32;
        let aligned = if self.cipher.length_in_alignment() { len.wrapping_add(4) } else { len };
        // The smallest legal packet: padding length, a message number, 4
        // bytes of padding; and at least the block a plain-MAC reader has
        // already decrypted (aligned, so that follows for a 16-byte block).
        if len < 1 + 1 + MIN_PADDING as u32 || aligned % block != 0 {
            return Err(Error::BadPacketLength { len, block });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::cipher::{CipherAlgorithm, MacAlgorithm};

    fn pair(alg: Option<CipherAlgorithm>) -> (Sealer, Opener) {
        pair_with_mac(alg, MacAlgorithm::HmacSha256)
    }

    /// `mac` is used only by the aes*-ctr ciphers.
    fn pair_with_mac(alg: Option<CipherAlgorithm>, mac: MacAlgorithm) -> (Sealer, Opener) {
        let mut s = Sealer::new();
        let mut o = Opener::new(256 * 1024);
        if let Some(alg) = alg {
            let key = vec![7u8; alg.key_len()];
            let iv = vec![9u8; alg.iv_len()];
            let mac_key = vec![3u8; mac.key_len()];
            s.cipher = PacketCipher::with_mac(alg, &key, &iv, Some((mac, &mac_key)));
            o.cipher = PacketCipher::with_mac(alg, &key, &iv, Some((mac, &mac_key)));
        }
        (s, o)
    }

    /// Every (cipher, MAC) pair worth framing: each AEAD once, each aes*-ctr
    /// with every MAC.
    fn suites() -> Vec<(Option<CipherAlgorithm>, MacAlgorithm)> {
        let mut v = vec![(None, MacAlgorithm::HmacSha256)];
        for alg in CipherAlgorithm::ALL {
            if alg.is_aead() {
                v.push((Some(alg), MacAlgorithm::HmacSha256));
            } else {
                v.extend(MacAlgorithm::ALL.map(|m| (Some(alg), m)));
            }
        }
        v
    }

    #[test]
    fn frames_round_trip_with_aligned_padding() {
        let mut rng = Rng::from_u64(1);
        for (alg, mac) in suites() {
            let (mut s, mut o) = pair_with_mac(alg, mac);
            let mut tx = Vec::new();
            for n in 1..70usize {
                let start = Sealer::begin(&mut tx);
                tx.extend((0..n).map(|i| i as u8));
                s.finish(&mut tx, start, &mut rng);
            }
            let mut off = 0;
            for n in 1..70usize {
                // Byte-by-byte arrival must give the same result.
                let mut got = None;
                for end in off + 1..=tx.len() {
                    if let Some(p) = o.poll(&mut tx[off..end]).unwrap() {
                        got = Some(p);
                        break;
                    }
                }
                let p = got.expect("complete packet");
                let payload = &tx[off + p.payload.start..off + p.payload.end];
                assert_eq!(payload, (0..n).map(|i| i as u8).collect::<Vec<_>>().as_slice());
                let padding = tx[off + 4] as usize;
                assert!(padding >= 4, "{alg:?}: padding {padding}");
                // RFC 4253 §6: the length field counts toward the block
                // alignment unless the cipher or MAC keeps it out.
                let packet_len = p.consumed - o.cipher.tag_len();
                let aligned = if o.cipher.length_in_alignment() { packet_len } else { packet_len - 4 };
                assert_eq!(aligned % o.cipher.block_size(), 0, "{alg:?} {mac:?}: {packet_len}");
                off += p.consumed;
            }
            assert_eq!(off, tx.len());
        }
    }

    #[test]
    fn rejects_oversized_length_before_the_body_arrives() {
        let (_, mut o) = pair(None);
        let mut buf = 0x7fff_fff8u32.to_be_bytes().to_vec();
        assert!(matches!(o.poll(&mut buf), Err(Error::PacketTooLarge { .. })));
    }

    #[test]
    fn rejects_misaligned_and_tiny_lengths() {
        let (_, mut o) = pair(None);
        let mut buf = 13u32.to_be_bytes().to_vec();
        assert!(matches!(o.poll(&mut buf), Err(Error::BadPacketLength { len: 13, block: 8 })));
        let (_, mut o) = pair(None);
        let mut buf = 4u32.to_be_bytes().to_vec();
        assert!(matches!(o.poll(&mut buf), Err(Error::BadPacketLength { .. })));
    }

    #[test]
    fn rejects_bad_padding_length() {
        let (_, mut o) = pair(None);
        // length 12, padding 200: more padding than packet.
        let mut buf = vec![0, 0, 0, 12, 200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(o.poll(&mut buf), Err(Error::BadPaddingLength { padding: 200, .. })));
        let (_, mut o) = pair(None);
        let mut buf = vec![0, 0, 0, 12, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(o.poll(&mut buf), Err(Error::BadPaddingLength { padding: 3, .. })));
    }

    #[test]
    fn rejects_corrupted_ciphertext() {
        let mut rng = Rng::from_u64(2);
        for (alg, mac) in suites().into_iter().skip(1) {
            let (mut s, mut o) = pair_with_mac(alg, mac);
            let mut tx = Vec::new();
            let start = Sealer::begin(&mut tx);
            tx.extend_from_slice(b"\x02hello");
            s.finish(&mut tx, start, &mut rng);
            let last = tx.len() - 1;
            tx[last] ^= 0x40;
            assert!(matches!(o.poll(&mut tx), Err(Error::BadMac { seq: 0 })), "{alg:?} {mac:?}");
        }
    }

    /// aes*-ctr with a plain MAC: the length is encrypted, so nothing is
    /// decided before the first 16-byte block is in; a decrypted length over
    /// the cap or off the 16-byte alignment is refused at once, before the
    /// body. With EtM the clear length is checked from its 4 bytes.
    #[test]
    fn ctr_lengths_are_checked_from_the_first_block() {
        let mut rng = Rng::from_u64(3);
        for mac in [MacAlgorithm::HmacSha256, MacAlgorithm::HmacSha256Etm] {
            for (mask, expect_too_large) in [(0x80u8, true), (0x01, false)] {
                let (mut s, mut o) = pair_with_mac(Some(CipherAlgorithm::Aes128Ctr), mac);
                let mut tx = Vec::new();
                let start = Sealer::begin(&mut tx);
                tx.extend_from_slice(b"\x02hello");
                s.finish(&mut tx, start, &mut rng);
                // Flip a bit of the (encrypted or clear) length: CTR is a
                // stream, so the decrypted length flips the same bit.
                tx[if expect_too_large { 0 } else { 3 }] ^= mask;
                let need = if mac.is_etm() { 4 } else { 16 };
                assert!(matches!(o.poll(&mut tx[..need - 1]), Ok(None)), "{mac:?}");
                let got = o.poll(&mut tx[..need]);
                if expect_too_large {
                    assert!(matches!(got, Err(Error::PacketTooLarge { .. })), "{mac:?}: {got:?}");
                } else {
                    assert!(matches!(got, Err(Error::BadPacketLength { block: 16, .. })), "{mac:?}: {got:?}");
                }
            }
        }
    }
}
