//! Poly1305 (RFC 8439 §2.5) for one short message, in 44-bit limbs with
//! 64x64->128-bit products (poly1305-donna's 64-bit layout): no set-up
//! beyond splitting the key, constant time (no secret-dependent branch or
//! index; u128 multiplication is constant time on the targets we build for).

const M44: u64 = (1 << 44) - 1;
const M42: u64 = (1 << 42) - 1;

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The Poly1305 tag of `msg` under the one-time `key` (r || s).
pub(super) fn poly1305(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    let (t0, t1) = (le64(&key[0..]), le64(&key[8..]));
    // r, clamped, in limbs of 44, 44 and 42 bits.
    let r0 = t0 & 0xffc_0fff_ffff;
    let r1 = ((t0 >> 44) | (t1 << 20)) & 0xfff_ffc0_ffff;
    let r2 = (t1 >> 24) & 0x00f_ffff_fc0f;
    // 2^130 = 5 (mod p), and limb 2 is 2 bits short: the wrap-around factor is 20.
    let (s1, s2) = (r1 * 20, r2 * 20);
    let (mut h0, mut h1, mut h2) = (0u64, 0u64, 0u64);
    let mut block = |m: &[u8; 16], hibit: u64| {
        let (t0, t1) = (le64(&m[0..]), le64(&m[8..]));
        h0 += t0 & M44;
        h1 += ((t0 >> 44) | (t1 << 20)) & M44;
        h2 += ((t1 >> 24) & M42) | hibit;
        let m = |a: u64, b: u64| u128::from(a) * u128::from(b);
        let d0 = m(h0, r0) + m(h1, s2) + m(h2, s1);
        let mut d1 = m(h0, r1) + m(h1, r0) + m(h2, s2);
        let mut d2 = m(h0, r2) + m(h1, r1) + m(h2, r0);
        d1 += d0 >> 44;
        h0 = d0 as u64 & M44;
        d2 += d1 >> 44;
        h1 = d1 as u64 & M44;
        let c = (d2 >> 42) as u64;
        h2 = d2 as u64 & M42;
        h0 += c * 5;
        h1 += h0 >> 44;
        h0 &= M44;
    };
    let mut chunks = msg.chunks_exact(16);
    for m in &mut chunks {
        block(m.try_into().expect("16 bytes"), 1 << 40);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut m = [0u8; 16];
        m[..rest.len()].copy_from_slice(rest);
        m[rest.len()] = 1;
        block(&m, 0);
    }
    // Fully carry h.
    let mut c = h1 >> 44;
    h1 &= M44;
    h2 += c;
    c = h2 >> 42;
    h2 &= M42;
    h0 += c * 5;
    c = h0 >> 44;
    h0 &= M44;
    h1 += c;
    c = h1 >> 44;
    h1 &= M44;
    h2 += c;
    c = h2 >> 42;
    h2 &= M42;
    h0 += c * 5;
    c = h0 >> 44;
    h0 &= M44;
    h1 += c;
    // g = h + 5 - 2^130; keep g if it did not go negative (h >= p).
    let mut g0 = h0 + 5;
    c = g0 >> 44;
    g0 &= M44;
    let mut g1 = h1 + c;
    c = g1 >> 44;
    g1 &= M44;
    let mut g2 = (h2 + c).wrapping_sub(1 << 42);
    let mask = (g2 >> 63).wrapping_sub(1);
    g0 &= mask;
    g1 &= mask;
    g2 &= mask;
    h0 = (h0 & !mask) | g0;
    h1 = (h1 & !mask) | g1;
    h2 = (h2 & !mask) | g2;
    // tag = (h + s) mod 2^128.
    let (s0, s1) = (le64(&key[16..]), le64(&key[24..]));
    h0 += s0 & M44;
    c = h0 >> 44;
    h0 &= M44;
    h1 += (((s0 >> 44) | (s1 << 20)) & M44) + c;
    c = h1 >> 44;
    h1 &= M44;
    h2 += (s1 >> 24) + c;
    let lo = h0 | (h1 << 44);
    let hi = (h1 >> 20) | (h2 << 24);
    let mut tag = [0u8; 16];
    tag[..8].copy_from_slice(&lo.to_le_bytes());
    tag[8..].copy_from_slice(&hi.to_le_bytes());
    tag
}

#[cfg(test)]
mod tests {
    use super::poly1305;
    use ::poly1305::universal_hash::KeyInit;

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    /// RFC 8439 §2.5.2 and the edge cases of its appendix A.3 (carries
    /// through 2^130 - 5).
    #[test]
    fn known_answers() {
        let key = hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b");
        assert_eq!(
            poly1305(&key, b"Cryptographic Forum Research Group"),
            hex("a8061dc1305136c6c22b8baf0c0127a9")
        );
        // A.3 #1: all-zero key and message.
        assert_eq!(poly1305(&[0; 32], &[0; 64]), [0; 16]);
        // A.3 #5: r = 2, s = 0, message 2^128 - 1: h wraps to 3.
        let mut key = [0u8; 32];
        key[0] = 2;
        let mut want = [0u8; 16];
        want[0] = 3;
        assert_eq!(poly1305(&key, &[0xff; 16]), want);
        // A.3 #6: r = 2, s = 2^128 - 1, message 2: tag 3 (s wraps).
        key[16..].fill(0xff);
        let mut msg = [0u8; 16];
        msg[0] = 2;
        assert_eq!(poly1305(&key, &msg), want);
        // A.3 #7: r = 1, message 2^128 - 1, 2^128 - 16 (0xf0ff..), 2^128 + 1 (0x11, 0..): h reaches p exactly.
        let mut key = [0u8; 32];
        key[0] = 1;
        let mut msg = [0xffu8; 48];
        msg[16] = 0xf0;
        msg[32..].fill(0);
        msg[32] = 0x11;
        let mut want = [0u8; 16];
        want[0] = 5;
        assert_eq!(poly1305(&key, &msg), want);
    }

    /// Agrees with RustCrypto's `poly1305` (the bulk path's MAC) for every
    /// length up to 300 bytes, random keys and messages and the all-ones
    /// extremes.
    #[test]
    fn agrees_with_rustcrypto() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for len in 0..300usize {
            for round in 0..8 {
                let mut key = [0u8; 32];
                key.iter_mut().for_each(|b| *b = rnd());
                if round == 0 {
                    key = [0xff; 32];
                }
                let msg: Vec<u8> = (0..len).map(|_| if round == 1 { 0xff } else { rnd() }).collect();
                let want: [u8; 16] = ::poly1305::Poly1305::new(&key.into()).compute_unpadded(&msg).into();
                assert_eq!(poly1305(&key, &msg), want, "len {len} round {round}");
            }
        }
    }
}
