//! Key exchange: KEXINIT, algorithm negotiation (RFC 4253 §7.1), the
//! curve25519-sha256 method (RFC 8731), the exchange hash and key derivation
//! (RFC 4253 §7.2).

use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey as X25519Public};
use zeroize::Zeroizing;

use super::cipher::{CipherAlgorithm, MacAlgorithm};
use super::hostkey::HostKeyAlgorithm;
use crate::error::{AlgorithmKind, Error};
use crate::rng::Rng;
use crate::wire::msg::{self, Message};
use crate::wire::{DecodeError, Writer, put_mpint_unsigned};
use rand_core::RngCore;

/// A key-exchange method we implement.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KexAlgorithm {
    /// `curve25519-sha256` (RFC 8731).
    Curve25519Sha256,
    /// `curve25519-sha256@libssh.org`: the same method under its older name.
    Curve25519Sha256Libssh,
}

impl KexAlgorithm {
    /// Every method we implement, in default preference order.
    pub const ALL: [KexAlgorithm; 2] = [KexAlgorithm::Curve25519Sha256, KexAlgorithm::Curve25519Sha256Libssh];

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            KexAlgorithm::Curve25519Sha256 => "curve25519-sha256",
            KexAlgorithm::Curve25519Sha256Libssh => "curve25519-sha256@libssh.org",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Pseudo-algorithms that signal extensions; never chosen as a method.
pub(crate) const EXT_INFO_C: &str = "ext-info-c";
pub(crate) const EXT_INFO_S: &str = "ext-info-s";
pub(crate) const STRICT_KEX_C: &str = "kex-strict-c-v00@openssh.com";
pub(crate) const STRICT_KEX_S: &str = "kex-strict-s-v00@openssh.com";

fn is_pseudo(name: &str) -> bool {
    matches!(name, EXT_INFO_C | EXT_INFO_S | STRICT_KEX_C | STRICT_KEX_S)
        || name.starts_with("ext-info-in-auth")
}

/// SSH_MSG_KEXINIT (RFC 4253 §7.1), with the codec of [`crate::wire::msg`]
/// (kept here, next to the negotiation that reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KexInit {
    pub(crate) cookie: [u8; 16],
    pub(crate) kex: Vec<String>,
    pub(crate) host_key: Vec<String>,
    pub(crate) cipher_c2s: Vec<String>,
    pub(crate) cipher_s2c: Vec<String>,
    pub(crate) mac_c2s: Vec<String>,
    pub(crate) mac_s2c: Vec<String>,
    pub(crate) comp_c2s: Vec<String>,
    pub(crate) comp_s2c: Vec<String>,
    pub(crate) first_kex_follows: bool,
}

impl<'a> Message<'a> for KexInit {
    const NUMBER: u8 = msg::KEXINIT;
    const NAME: &'static str = "KEXINIT";

    fn decode(payload: &'a [u8]) -> Result<KexInit, DecodeError> {
        let mut r = msg::fields(payload, Self::NUMBER)?;
        let cookie: [u8; 16] = r.bytes(16, "cookie")?.try_into().expect("16 bytes");
        let mut list = |what| -> Result<Vec<String>, DecodeError> {
            Ok(r.name_list(what)?.into_iter().map(str::to_owned).collect())
        };
        let kex = list("kex algorithms")?;
        let host_key = list("host key algorithms")?;
        let cipher_c2s = list("ciphers client to server")?;
        let cipher_s2c = list("ciphers server to client")?;
        let mac_c2s = list("MACs client to server")?;
        let mac_s2c = list("MACs server to client")?;
        let comp_c2s = list("compression client to server")?;
        let comp_s2c = list("compression server to client")?;
        list("languages client to server")?;
        list("languages server to client")?;
        let first_kex_follows = r.bool("first_kex_packet_follows")?;
        r.u32("reserved")?;
        // Trailing bytes are tolerated, as OpenSSH does: the whole payload
        // still goes into the exchange hash, so they cannot be tampered with.
        Ok(KexInit {
            cookie,
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            comp_c2s,
            comp_s2c,
            first_kex_follows,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(512);
        out.put_u8(Self::NUMBER);
        out.extend_from_slice(&self.cookie);
        for list in [
            &self.kex,
            &self.host_key,
            &self.cipher_c2s,
            &self.cipher_s2c,
            &self.mac_c2s,
            &self.mac_s2c,
            &self.comp_c2s,
            &self.comp_s2c,
        ] {
            out.put_name_list(list);
        }
        out.put_name_list::<&str>(&[]);
        out.put_name_list::<&str>(&[]);
        out.put_bool(self.first_kex_follows);
        out.put_u32(0);
    }
}

/// What the two KEXINITs settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Key-exchange method.
    pub kex: KexAlgorithm,
    /// Server host key signature algorithm.
    pub host_key: HostKeyAlgorithm,
    /// Cipher client to server.
    pub cipher_c2s: CipherAlgorithm,
    /// Cipher server to client.
    pub cipher_s2c: CipherAlgorithm,
    /// MAC client to server: `None` when `cipher_c2s` is an AEAD (the MAC
    /// lists are then not negotiated, as OpenSSH does).
    pub mac_c2s: Option<MacAlgorithm>,
    /// MAC server to client (`None` with an AEAD).
    pub mac_s2c: Option<MacAlgorithm>,
    /// Whether both sides enabled strict kex (only meaningful on the first kex).
    pub strict: bool,
    /// Whether the client asked for EXT_INFO (`ext-info-c`).
    pub client_ext_info: bool,
}

fn choose<'a>(kind: AlgorithmKind, client: &'a [String], server: &[String]) -> Result<&'a str, Error> {
    client.iter().find(|c| !is_pseudo(c) && server.contains(c)).map(String::as_str).ok_or_else(|| {
        Error::NoCommonAlgorithm {
            kind,
            client: client.iter().filter(|n| !is_pseudo(n)).cloned().collect::<Vec<_>>().join(","),
            server: server.iter().filter(|n| !is_pseudo(n)).cloned().collect::<Vec<_>>().join(","),
        }
    })
}

/// RFC 4253 §7.1: for each category, the first client algorithm the server supports.
pub(crate) fn negotiate(client: &KexInit, server: &KexInit, first: bool) -> Result<Negotiated, Error> {
    let known = |name: &str| Error::Internal { what: format!("negotiated unknown algorithm {name}") };
    let kex = choose(AlgorithmKind::Kex, &client.kex, &server.kex)?;
    let host_key = choose(AlgorithmKind::HostKey, &client.host_key, &server.host_key)?;
    let c2s = choose(AlgorithmKind::CipherClientToServer, &client.cipher_c2s, &server.cipher_c2s)?;
    let s2c = choose(AlgorithmKind::CipherServerToClient, &client.cipher_s2c, &server.cipher_s2c)?;
    let cipher_c2s = CipherAlgorithm::from_name(c2s).ok_or_else(|| known(c2s))?;
    let cipher_s2c = CipherAlgorithm::from_name(s2c).ok_or_else(|| known(s2c))?;
    // Per direction, a MAC only for a cipher that does not authenticate
    // itself: with an AEAD the MAC lists are ignored, even when they have
    // nothing in common (OpenSSH's choose_enc/choose_mac).
    let mac = |cipher: CipherAlgorithm, kind, c: &[String], s: &[String]| -> Result<_, Error> {
        if cipher.is_aead() {
            return Ok(None);
        }
        let name = choose(kind, c, s)?;
        MacAlgorithm::from_name(name).map(Some).ok_or_else(|| known(name))
    };
    let mac_c2s = mac(cipher_c2s, AlgorithmKind::MacClientToServer, &client.mac_c2s, &server.mac_c2s)?;
    let mac_s2c = mac(cipher_s2c, AlgorithmKind::MacServerToClient, &client.mac_s2c, &server.mac_s2c)?;
    choose(AlgorithmKind::CompressionClientToServer, &client.comp_c2s, &server.comp_c2s)?;
    choose(AlgorithmKind::CompressionServerToClient, &client.comp_s2c, &server.comp_s2c)?;
    Ok(Negotiated {
        kex: KexAlgorithm::from_name(kex).ok_or_else(|| known(kex))?,
        host_key: HostKeyAlgorithm::from_name(host_key).ok_or_else(|| known(host_key))?,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
        strict: first
            && client.kex.iter().any(|n| n == STRICT_KEX_C)
            && server.kex.iter().any(|n| n == STRICT_KEX_S),
        client_ext_info: first && client.kex.iter().any(|n| n == EXT_INFO_C),
    })
}

/// Whether a peer's `first_kex_packet_follows` guess was wrong, so that its
/// next kex packet must be ignored (RFC 4253 §7).
pub(crate) fn guess_was_wrong(client: &KexInit, server: &KexInit) -> bool {
    let first = |l: &[String]| l.iter().find(|n| !is_pseudo(n)).cloned();
    first(&client.kex) != first(&server.kex) || first(&client.host_key) != first(&server.host_key)
}

/// Our half of an X25519 exchange.
pub(crate) struct Ephemeral {
    secret: EphemeralSecret,
    pub(crate) public: [u8; 32],
}

impl core::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ephemeral").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Ephemeral {
    pub(crate) fn generate(rng: &mut Rng) -> Self {
        let secret = EphemeralSecret::random_from_rng(&mut *rng);
        let public = X25519Public::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    /// The shared secret K, as the unsigned big-endian integer RFC 8731 §3.1
    /// defines. An all-zero result (a low-order peer point) is refused.
    pub(crate) fn agree(self, peer_public: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let peer: [u8; 32] =
            peer_public.try_into().map_err(|_| Error::BadKexPublicKey { len: peer_public.len() })?;
        let shared = self.secret.diffie_hellman(&X25519Public::from(peer));
        if !shared.was_contributory() {
            return Err(Error::BadKexPublicKey { len: 32 });
        }
        Ok(Zeroizing::new(*shared.as_bytes()))
    }
}

/// The fields hashed into H (RFC 4253 §8, RFC 8731 §3).
#[derive(Debug)]
pub(crate) struct ExchangeHashInput<'a> {
    pub(crate) client_version: &'a str,
    pub(crate) server_version: &'a str,
    pub(crate) client_kexinit: &'a [u8],
    pub(crate) server_kexinit: &'a [u8],
    pub(crate) host_key_blob: &'a [u8],
    pub(crate) client_public: &'a [u8],
    pub(crate) server_public: &'a [u8],
}

/// A hasher that writes SSH `string`s straight into SHA-256.
struct HashWriter(Sha256);

impl HashWriter {
    fn string(&mut self, b: &[u8]) {
        self.0.update((b.len() as u32).to_be_bytes());
        self.0.update(b);
    }
}

/// `K` encoded as an mpint, the form in which it is hashed.
pub(crate) fn shared_secret_mpint(k: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(k.len() + 5));
    put_mpint_unsigned(&mut out, k);
    out
}

/// H = SHA-256(V_C ‖ V_S ‖ I_C ‖ I_S ‖ K_S ‖ Q_C ‖ Q_S ‖ K).
pub(crate) fn exchange_hash(input: &ExchangeHashInput<'_>, k_mpint: &[u8]) -> [u8; 32] {
    let mut h = HashWriter(Sha256::new());
    h.string(input.client_version.as_bytes());
    h.string(input.server_version.as_bytes());
    h.string(input.client_kexinit);
    h.string(input.server_kexinit);
    h.string(input.host_key_blob);
    h.string(input.client_public);
    h.string(input.server_public);
    h.0.update(k_mpint);
    h.0.finalize().into()
}

/// Key material for both directions, derived per RFC 4253 §7.2.
#[derive(Debug)]
pub(crate) struct DerivedKeys {
    pub(crate) iv_c2s: Zeroizing<Vec<u8>>,
    pub(crate) iv_s2c: Zeroizing<Vec<u8>>,
    pub(crate) key_c2s: Zeroizing<Vec<u8>>,
    pub(crate) key_s2c: Zeroizing<Vec<u8>>,
    /// Integrity keys (empty with an AEAD).
    pub(crate) mac_key_c2s: Zeroizing<Vec<u8>>,
    pub(crate) mac_key_s2c: Zeroizing<Vec<u8>>,
}

/// HASH(K ‖ H ‖ letter ‖ session_id), extended with HASH(K ‖ H ‖ K1 ‖ …)
/// until `len` bytes.
fn derive(k_mpint: &[u8], h: &[u8], letter: u8, session_id: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    if len == 0 {
        return out;
    }
    let mut hasher = Sha256::new();
    hasher.update(k_mpint);
    hasher.update(h);
    hasher.update([letter]);
    hasher.update(session_id);
    out.extend_from_slice(&hasher.finalize());
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(k_mpint);
        hasher.update(h);
        hasher.update(&out[..]);
        let block = hasher.finalize();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

pub(crate) fn derive_keys(k_mpint: &[u8], h: &[u8], session_id: &[u8], neg: &Negotiated) -> DerivedKeys {
    DerivedKeys {
        iv_c2s: derive(k_mpint, h, b'A', session_id, neg.cipher_c2s.iv_len()),
        iv_s2c: derive(k_mpint, h, b'B', session_id, neg.cipher_s2c.iv_len()),
        key_c2s: derive(k_mpint, h, b'C', session_id, neg.cipher_c2s.key_len()),
        key_s2c: derive(k_mpint, h, b'D', session_id, neg.cipher_s2c.key_len()),
        mac_key_c2s: derive(k_mpint, h, b'E', session_id, neg.mac_c2s.map_or(0, MacAlgorithm::key_len)),
        mac_key_s2c: derive(k_mpint, h, b'F', session_id, neg.mac_s2c.map_or(0, MacAlgorithm::key_len)),
    }
}

/// A fresh random KEXINIT cookie.
pub(crate) fn cookie(rng: &mut Rng) -> [u8; 16] {
    let mut c = [0u8; 16];
    rng.fill_bytes(&mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()
    }

    fn init(kex: &str, hk: &str, ciphers: &str) -> KexInit {
        KexInit {
            cookie: [0; 16],
            kex: list(kex),
            host_key: list(hk),
            cipher_c2s: list(ciphers),
            cipher_s2c: list(ciphers),
            mac_c2s: vec![],
            mac_s2c: vec![],
            comp_c2s: list("none"),
            comp_s2c: list("none"),
            first_kex_follows: false,
        }
    }

    #[test]
    fn kexinit_round_trip() {
        let k = init("curve25519-sha256,ext-info-c", "ssh-ed25519", "aes128-gcm@openssh.com");
        assert_eq!(KexInit::decode(&k.to_payload()).unwrap(), k);
        let enc = k.to_payload();
        assert!(KexInit::decode(&enc[..enc.len() - 1]).is_err());
    }

    #[test]
    fn negotiation_prefers_client_order_and_skips_pseudo_names() {
        let c = init(
            "ext-info-c,curve25519-sha256@libssh.org,curve25519-sha256,kex-strict-c-v00@openssh.com",
            "rsa-sha2-512,ssh-ed25519",
            "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        );
        let s = init(
            "curve25519-sha256,curve25519-sha256@libssh.org,ext-info-c,kex-strict-s-v00@openssh.com",
            "ssh-ed25519,rsa-sha2-512",
            "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
        );
        let n = negotiate(&c, &s, true).unwrap();
        assert_eq!(n.kex, KexAlgorithm::Curve25519Sha256Libssh);
        assert_eq!(n.host_key, HostKeyAlgorithm::RsaSha512);
        assert_eq!(n.cipher_c2s, CipherAlgorithm::Aes256Gcm);
        assert!(n.strict && n.client_ext_info);
        assert!(!negotiate(&c, &s, false).unwrap().strict, "strict kex only on the first kex");
    }

    #[test]
    fn no_common_algorithm_names_both_lists() {
        let c = init("curve25519-sha256,ext-info-c", "ssh-ed25519", "aes128-gcm@openssh.com");
        let s = init("diffie-hellman-group14-sha256", "ssh-ed25519", "aes128-gcm@openssh.com");
        let e = negotiate(&c, &s, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no common kex algorithm: client offers [curve25519-sha256], server offers [diffie-hellman-group14-sha256]"
        );
    }

    #[test]
    fn macs_are_negotiated_per_direction_only_for_non_aead_ciphers() {
        let mut c = init("curve25519-sha256", "ssh-ed25519", "");
        c.cipher_c2s = list("aes128-ctr,chacha20-poly1305@openssh.com");
        c.cipher_s2c = list("chacha20-poly1305@openssh.com,aes256-ctr");
        c.mac_c2s = list("hmac-sha1,hmac-sha2-256");
        c.mac_s2c = list("hmac-sha1");
        let mut s = c.clone();
        s.cipher_c2s = list("aes256-ctr,aes128-ctr");
        s.mac_c2s = list("hmac-sha2-512,hmac-sha2-256");
        // Nothing in common server to client: irrelevant under chacha20-poly1305.
        s.mac_s2c = list("hmac-sha2-256-etm@openssh.com");
        let n = negotiate(&c, &s, true).unwrap();
        assert_eq!((n.cipher_c2s, n.mac_c2s), (CipherAlgorithm::Aes128Ctr, Some(MacAlgorithm::HmacSha256)));
        assert_eq!((n.cipher_s2c, n.mac_s2c), (CipherAlgorithm::ChaCha20Poly1305, None));
        // The same MAC lists with aes256-ctr server to client: no common MAC.
        s.cipher_s2c = list("aes256-ctr");
        let e = negotiate(&c, &s, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no common MAC (server to client) algorithm: client offers [hmac-sha1], \
             server offers [hmac-sha2-256-etm@openssh.com]"
        );
        s.mac_s2c = list("hmac-sha2-512-etm@openssh.com,hmac-sha1");
        let n = negotiate(&c, &s, true).unwrap();
        assert_eq!((n.cipher_s2c, n.mac_s2c), (CipherAlgorithm::Aes256Ctr, Some(MacAlgorithm::HmacSha1)));
    }

    #[test]
    fn mac_keys_use_letters_e_and_f() {
        let (k, h, sid) = (b"\0\0\0\x01\x05".as_slice(), [1u8; 32], [2u8; 32]);
        let mut c = init("curve25519-sha256", "ssh-ed25519", "aes192-ctr");
        c.mac_c2s = list("hmac-sha2-512");
        c.mac_s2c = list("hmac-sha2-512");
        let mut neg = negotiate(&c, &c, false).unwrap();
        neg.mac_s2c = Some(MacAlgorithm::HmacSha1);
        let keys = derive_keys(k, &h, &sid, &neg);
        assert_eq!((keys.key_c2s.len(), keys.iv_c2s.len()), (24, 16));
        assert_eq!(keys.mac_key_c2s, derive(k, &h, b'E', &sid, 64));
        assert_eq!(keys.mac_key_s2c, derive(k, &h, b'F', &sid, 20));
        assert_eq!(keys.iv_s2c, derive(k, &h, b'B', &sid, 16));
        // No MAC key with an AEAD.
        let a = init("curve25519-sha256", "ssh-ed25519", "aes128-gcm@openssh.com");
        let keys = derive_keys(k, &h, &sid, &negotiate(&a, &a, false).unwrap());
        assert!(keys.mac_key_c2s.is_empty() && keys.mac_key_s2c.is_empty());
    }

    #[test]
    fn derivation_extends_past_one_hash() {
        let k = derive(b"\0\0\0\x01\x05", &[1; 32], b'C', &[2; 32], 64);
        assert_eq!(k.len(), 64);
        let short = derive(b"\0\0\0\x01\x05", &[1; 32], b'C', &[2; 32], 32);
        assert_eq!(&k[..32], &short[..]);
    }

    #[test]
    fn x25519_agreement_matches_both_ways() {
        let mut rng = Rng::from_u64(3);
        let a = Ephemeral::generate(&mut rng);
        let b = Ephemeral::generate(&mut rng);
        let (pa, pb) = (a.public, b.public);
        assert_eq!(*a.agree(&pb).unwrap(), *b.agree(&pa).unwrap());
        let c = Ephemeral::generate(&mut rng);
        assert!(c.agree(&[0u8; 32]).is_err(), "low-order point must be refused");
        let d = Ephemeral::generate(&mut rng);
        assert!(d.agree(&[1u8; 31]).is_err());
    }
}
