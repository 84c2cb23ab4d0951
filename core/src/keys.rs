//! Keys and signatures: loading OpenSSH private keys (passphrase-protected
//! ones included), and signing/verifying with every algorithm sansh speaks.
//!
//! Pure: key files come in as text, the passphrase as bytes; nothing here
//! touches the filesystem or the OS RNG.

use rsa::pkcs1v15;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::{Sha256, Sha512};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PrivateKey, PublicKey, Signature};

use crate::rng::Rng;

/// A public-key signature algorithm (host keys and user keys).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`.
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`.
    EcdsaP521,
    /// `rsa-sha2-512` (RFC 8332).
    RsaSha512,
    /// `rsa-sha2-256` (RFC 8332).
    RsaSha256,
    /// `ssh-rsa`: RSA with SHA-1. Only when explicitly allowed.
    RsaSha1,
}

impl SignatureAlgorithm {
    /// Every algorithm, strongest first within a key type.
    pub const ALL: [SignatureAlgorithm; 7] = [
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256,
        SignatureAlgorithm::EcdsaP384,
        SignatureAlgorithm::EcdsaP521,
        SignatureAlgorithm::RsaSha512,
        SignatureAlgorithm::RsaSha256,
        SignatureAlgorithm::RsaSha1,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "ssh-ed25519",
            SignatureAlgorithm::EcdsaP256 => "ecdsa-sha2-nistp256",
            SignatureAlgorithm::EcdsaP384 => "ecdsa-sha2-nistp384",
            SignatureAlgorithm::EcdsaP521 => "ecdsa-sha2-nistp521",
            SignatureAlgorithm::RsaSha512 => "rsa-sha2-512",
            SignatureAlgorithm::RsaSha256 => "rsa-sha2-256",
            SignatureAlgorithm::RsaSha1 => "ssh-rsa",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether a key of this type makes signatures of this algorithm.
    pub fn fits_key(self, key: &KeyData) -> bool {
        matches!(
            (self, key.algorithm()),
            (SignatureAlgorithm::Ed25519, Algorithm::Ed25519)
                | (SignatureAlgorithm::EcdsaP256, Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 })
                | (SignatureAlgorithm::EcdsaP384, Algorithm::Ecdsa { curve: EcdsaCurve::NistP384 })
                | (SignatureAlgorithm::EcdsaP521, Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 })
                | (
                    SignatureAlgorithm::RsaSha512
                        | SignatureAlgorithm::RsaSha256
                        | SignatureAlgorithm::RsaSha1,
                    Algorithm::Rsa { .. }
                )
        )
    }

    /// The algorithms a key can sign with, strongest first.
    pub fn for_key(key: &KeyData) -> Vec<SignatureAlgorithm> {
        Self::ALL.into_iter().filter(|a| a.fits_key(key)).collect()
    }

    fn ssh_key_algorithm(self) -> Algorithm {
        match self {
            SignatureAlgorithm::Ed25519 => Algorithm::Ed25519,
            SignatureAlgorithm::EcdsaP256 => Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 },
            SignatureAlgorithm::EcdsaP384 => Algorithm::Ecdsa { curve: EcdsaCurve::NistP384 },
            SignatureAlgorithm::EcdsaP521 => Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 },
            SignatureAlgorithm::RsaSha512 => Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
            SignatureAlgorithm::RsaSha256 => Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
            SignatureAlgorithm::RsaSha1 => Algorithm::Rsa { hash: None },
        }
    }
}

/// Why a key could not be loaded or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not an OpenSSH private key.
    #[error("not an OpenSSH private key: {0}")]
    Parse(String),
    /// The key is encrypted and no passphrase was given.
    #[error("the private key is encrypted: a passphrase is needed")]
    PassphraseRequired,
    /// The passphrase does not decrypt the key.
    #[error("wrong passphrase for the private key")]
    WrongPassphrase,
    /// The key type is not one we can sign with.
    #[error("unsupported key type {0}")]
    Unsupported(String),
    /// The key's numbers are inconsistent.
    #[error("invalid key: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Why a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // described by each variant's message
pub enum VerifyError {
    /// The key blob does not parse.
    #[error("invalid public key: {0}")]
    BadKey(String),
    /// The key cannot make signatures of the claimed algorithm.
    #[error("{key} key cannot make {algorithm} signatures")]
    KeyMismatch { key: String, algorithm: &'static str },
    /// The signature blob does not parse.
    #[error("undecodable signature: {0}")]
    BadEncoding(String),
    /// The signature names another algorithm than expected.
    #[error("signature is {got}, expected {expected}")]
    AlgorithmMismatch { got: String, expected: &'static str },
    /// The signature is well-formed but wrong.
    #[error("signature does not verify")]
    Invalid,
}

/// Loads an OpenSSH-format private key (`-----BEGIN OPENSSH PRIVATE KEY-----`),
/// decrypting it with `passphrase` when it is encrypted.
pub fn load_private_key(text: &str, passphrase: Option<&[u8]>) -> Result<PrivateKey, KeyError> {
    let text = text.trim();
    let key = match PrivateKey::from_openssh(text) {
        Ok(key) => key,
        Err(e) => match short_ecdsa_scalar::load_unencrypted(text) {
            Some(result) => result?,
            None => return Err(KeyError::Parse(e.to_string())),
        },
    };
    let key = if key.is_encrypted() {
        let pass = passphrase.ok_or(KeyError::PassphraseRequired)?;
        match key.decrypt(pass) {
            Ok(key) => key,
            // Checkints that differ: the wrong passphrase, whatever the key.
            Err(ssh_key::Error::Crypto) => return Err(KeyError::WrongPassphrase),
            Err(_) if matches!(key.algorithm(), Algorithm::Ecdsa { .. }) => {
                short_ecdsa_scalar::decrypt(&key, pass)?
            }
            Err(e) => {
                return Err(match e {
                    ssh_key::Error::Crypto | ssh_key::Error::Decrypted => KeyError::WrongPassphrase,
                    // A wrong passphrase garbles the plaintext, which then fails its checkint or parse.
                    ssh_key::Error::Encoding(_) | ssh_key::Error::FormatEncoding => KeyError::WrongPassphrase,
                    other => KeyError::Parse(other.to_string()),
                });
            }
        }
    } else {
        key
    };
    if SignatureAlgorithm::for_key(key.public_key().key_data()).is_empty() {
        return Err(KeyError::Unsupported(key.algorithm().as_str().to_owned()));
    }
    if let KeypairData::Rsa(kp) = key.key_data() {
        rsa_private_key(kp)?;
    }
    // A private half that does not match the public half would be offered,
    // accepted (PK_OK) and then sign something the server rejects: refuse
    // the file here, clearly (found by fuzzing private_key_parse).
    let alg = SignatureAlgorithm::for_key(key.public_key().key_data())[0];
    let mut rng = Rng::from_u64(0);
    let sig = sign(&key, alg, KEY_CHECK, &mut rng)
        .map_err(|e| KeyError::Invalid(format!("the key cannot sign: {e}")))?;
    if verify(key.public_key(), alg, &sig, KEY_CHECK).is_err() {
        return Err(KeyError::Invalid("the private key does not match its public key".into()));
    }
    Ok(key)
}

/// What `load_private_key` signs to check a key pair.
const KEY_CHECK: &[u8] = b"sansh: does this private key match its public key?";

/// ssh-key 0.6.7 reads an ECDSA private scalar only at the full field width
/// (32/48/66 bytes, or one more with a leading zero), but OpenSSH writes it
/// as an mpint, without leading zero bytes: about half of all P-521 keys
/// (whose first byte is 0 or 1) and one P-256/P-384 key in 256 then fail to
/// load. For those, the private section is decoded here, the scalar padded
/// to its width, and the key handed back to ssh-key as an unencrypted one.
mod short_ecdsa_scalar {
    use base64ct::{Base64, Encoding};
    use ssh_key::private::KeypairData;
    use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
    use zeroize::Zeroizing;

    use super::KeyError;
    use crate::wire::{Reader, Writer};

    const MAGIC: &[u8] = b"openssh-key-v1\0";
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &str = "-----END OPENSSH PRIVATE KEY-----";

    fn parse(e: impl core::fmt::Display) -> KeyError {
        KeyError::Parse(e.to_string())
    }

    /// The container's public key blob and (possibly encrypted) private section.
    struct Container<'a> {
        cipher: &'a [u8],
        public: &'a [u8],
        private: &'a [u8],
    }

    fn container(bin: &[u8]) -> Option<Container<'_>> {
        let rest = bin.strip_prefix(MAGIC)?;
        let mut r = Reader::new(rest);
        let cipher = r.string("cipher").ok()?;
        r.string("kdf").ok()?;
        r.string("kdf options").ok()?;
        if r.u32("key count").ok()? != 1 {
            return None;
        }
        let public = r.string("public key").ok()?;
        let private = r.string("private section").ok()?;
        Some(Container { cipher, public, private })
    }

    fn is_ecdsa(public_blob: &[u8]) -> bool {
        Reader::new(public_blob).utf8("key type").is_ok_and(|t| t.starts_with("ecdsa-sha2-"))
    }

    /// An unencrypted ECDSA key that ssh-key refused; `None` for anything else
    /// (ssh-key's own error is then the one to report).
    pub(super) fn load_unencrypted(text: &str) -> Option<Result<PrivateKey, KeyError>> {
        let body = text.strip_prefix(BEGIN)?.trim_end().strip_suffix(END)?;
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bin = Zeroizing::new(Base64::decode_vec(&b64).ok()?);
        let c = container(&bin)?;
        if c.cipher != b"none" || !is_ecdsa(c.public) {
            return None;
        }
        Some(rebuild(c.public, c.private, false))
    }

    /// Decrypts an encrypted ECDSA key's private section (ssh-key's
    /// `decrypt` refused the plaintext) and rebuilds it.
    pub(super) fn decrypt(key: &PrivateKey, passphrase: &[u8]) -> Result<PrivateKey, KeyError> {
        let ciphertext = key.key_data().encrypted().ok_or_else(|| parse("the key is not encrypted"))?;
        let (k, iv) = key.kdf().derive_key_and_iv(key.cipher(), passphrase).map_err(parse)?;
        let mut plain = Zeroizing::new(ciphertext.to_vec());
        // AEAD-encrypted key files carry a tag that ssh-key 0.6 keeps to
        // itself: those fail here, as they do in ssh-key.
        key.cipher().decrypt(&k, &iv, &mut plain, None).map_err(|_| KeyError::WrongPassphrase)?;
        let public = key.public_key().to_bytes().map_err(parse)?;
        rebuild(&public, &plain, true)
    }

    /// Re-encodes a plaintext private section with the scalar at full width,
    /// as an unencrypted key file for ssh-key.
    fn rebuild(public: &[u8], section: &[u8], was_encrypted: bool) -> Result<PrivateKey, KeyError> {
        let bad = |what: &str| KeyError::Parse(format!("ECDSA private key: {what}"));
        let mut r = Reader::new(section);
        let check1 = r.u32("checkint").map_err(parse)?;
        let check2 = r.u32("checkint").map_err(parse)?;
        if check1 != check2 {
            return Err(if was_encrypted { KeyError::WrongPassphrase } else { bad("checkints differ") });
        }
        let key_type = r.utf8("key type").map_err(parse)?;
        let curve = r.utf8("curve").map_err(parse)?;
        let point = r.string("public point").map_err(parse)?;
        let scalar = r.string("private scalar").map_err(parse)?;
        let comment = r.string("comment").map_err(parse)?;
        // What is left is padding 1, 2, 3, ... (checked by ssh-key below).
        let width = match Algorithm::new(key_type).map_err(parse)? {
            Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 } => 32,
            Algorithm::Ecdsa { curve: EcdsaCurve::NistP384 } => 48,
            Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 } => 66,
            other => return Err(KeyError::Unsupported(other.as_str().to_owned())),
        };
        let digits = &scalar[scalar.iter().take_while(|b| **b == 0).count()..];
        // (Its range and its match with the public point are checked by
        // `load_private_key`, which signs with the key.)
        if digits.len() > width {
            return Err(bad("scalar longer than the curve's field"));
        }
        let mut padded = Zeroizing::new(vec![0u8; width]);
        padded[width - digits.len()..].copy_from_slice(digits);

        let mut plain = Zeroizing::new(Vec::with_capacity(section.len() + 8));
        plain.put_u32(check1);
        plain.put_u32(check2);
        plain.put_str(key_type);
        plain.put_str(curve);
        plain.put_string(point);
        plain.put_string(&padded);
        plain.put_string(comment);
        // Unencrypted sections are padded to 8 bytes.
        for i in 1..=((8 - plain.len() % 8) % 8) as u8 {
            plain.put_u8(i);
        }
        let mut bin = Zeroizing::new(Vec::with_capacity(plain.len() + public.len() + 64));
        bin.extend_from_slice(MAGIC);
        bin.put_str("none");
        bin.put_str("none");
        bin.put_string(b"");
        bin.put_u32(1);
        bin.put_string(public);
        bin.put_string(&plain);
        let key = PrivateKey::from_bytes(&bin).map_err(parse)?;
        if !matches!(key.key_data(), KeypairData::Ecdsa(_)) {
            return Err(bad("not an ECDSA key"));
        }
        Ok(key)
    }
}

/// Converts an OpenSSH RSA keypair for the `rsa` crate.
///
/// Not `rsa::RsaPrivateKey::try_from(&RsaKeypair)`: ssh-key 0.6.7 passes
/// the prime `p` twice instead of `p` and `q`, so every key fails validation.
pub(crate) fn rsa_private_key(kp: &RsaKeypair) -> Result<rsa::RsaPrivateKey, KeyError> {
    let int = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| KeyError::Invalid("RSA key with a non-positive component".into()))
    };
    let mut key = rsa::RsaPrivateKey::from_components(
        int(&kp.public.n)?,
        int(&kp.public.e)?,
        int(&kp.private.d)?,
        vec![int(&kp.private.p)?, int(&kp.private.q)?],
    )
    .map_err(|e| KeyError::Invalid(format!("RSA: {e}")))?;
    key.precompute().map_err(|e| KeyError::Invalid(format!("RSA: {e}")))?;
    Ok(key)
}

/// PKCS#1 v1.5 RSA signature. Blinded: the RNG is ours, so output stays
/// deterministic for a given seed.
pub(crate) fn rsa_sign(
    key: &rsa::RsaPrivateKey,
    alg: SignatureAlgorithm,
    data: &[u8],
    rng: &mut Rng,
) -> Result<Vec<u8>, KeyError> {
    let err = |e: signature::Error| KeyError::Signing(e.to_string());
    let key = key.clone();
    Ok(match alg {
        SignatureAlgorithm::RsaSha512 => {
            pkcs1v15::SigningKey::<Sha512>::new(key).try_sign_with_rng(rng, data).map_err(err)?.to_vec()
        }
        SignatureAlgorithm::RsaSha256 => {
            pkcs1v15::SigningKey::<Sha256>::new(key).try_sign_with_rng(rng, data).map_err(err)?.to_vec()
        }
        SignatureAlgorithm::RsaSha1 => {
            pkcs1v15::SigningKey::<sha1::Sha1>::new(key).try_sign_with_rng(rng, data).map_err(err)?.to_vec()
        }
        _ => return Err(KeyError::Signing(format!("{} is not an RSA algorithm", alg.name()))),
    })
}

/// Encodes a signature as SSH sends it: `string algorithm, string blob`.
pub(crate) fn encode_signature(alg: SignatureAlgorithm, blob: &[u8]) -> Vec<u8> {
    use crate::wire::Writer;
    let mut out = Vec::with_capacity(blob.len() + 32);
    out.put_str(alg.name());
    out.put_string(blob);
    out
}

/// Signs `data` with `key` and returns the encoded signature.
pub fn sign(
    key: &PrivateKey,
    alg: SignatureAlgorithm,
    data: &[u8],
    rng: &mut Rng,
) -> Result<Vec<u8>, KeyError> {
    if !alg.fits_key(key.public_key().key_data()) {
        return Err(KeyError::Signing(format!(
            "{} key cannot sign {}",
            key.algorithm().as_str(),
            alg.name()
        )));
    }
    match key.key_data() {
        KeypairData::Rsa(kp) => {
            let blob = rsa_sign(&rsa_private_key(kp)?, alg, data, rng)?;
            Ok(encode_signature(alg, &blob))
        }
        // p521 0.13 has no RFC 6979 signer: its `Signer` draws the nonce
        // from the OS. Sign with our seeded RNG instead, so the core stays
        // pure and the same seed gives the same bytes.
        KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP521 { private, .. }) => {
            let fail = |e: signature::Error| KeyError::Signing(e.to_string());
            let key = p521::ecdsa::SigningKey::from_slice(private.as_slice()).map_err(fail)?;
            let sig: p521::ecdsa::Signature =
                RandomizedSigner::try_sign_with_rng(&key, rng, data).map_err(fail)?;
            let sig = Signature::try_from(sig).map_err(|e| KeyError::Signing(e.to_string()))?;
            let mut out = Vec::with_capacity(sig.as_bytes().len() + 32);
            ssh_encoding::Encode::encode(&sig, &mut out).map_err(|e| KeyError::Signing(e.to_string()))?;
            Ok(out)
        }
        // Ed25519 and ECDSA P-256/P-384 (RFC 6979) are deterministic: no RNG involved.
        _ => {
            let sig: Signature =
                signature::Signer::try_sign(key, data).map_err(|e| KeyError::Signing(e.to_string()))?;
            let mut out = Vec::with_capacity(sig.as_bytes().len() + 32);
            ssh_encoding::Encode::encode(&sig, &mut out).map_err(|e| KeyError::Signing(e.to_string()))?;
            Ok(out)
        }
    }
}

/// Parses a public key blob.
pub fn parse_public_key(blob: &[u8]) -> Result<PublicKey, VerifyError> {
    PublicKey::from_bytes(blob).map_err(|e| VerifyError::BadKey(e.to_string()))
}

/// Verifies an encoded signature (`string alg, string blob`) over `data`.
pub fn verify(
    key: &PublicKey,
    alg: SignatureAlgorithm,
    signature: &[u8],
    data: &[u8],
) -> Result<(), VerifyError> {
    if !alg.fits_key(key.key_data()) {
        return Err(VerifyError::KeyMismatch {
            key: key.algorithm().as_str().to_owned(),
            algorithm: alg.name(),
        });
    }
    // Decoded by hand: ssh-key refuses SHA-1 `ssh-rsa` signature blobs.
    let mut r = crate::wire::Reader::new(signature);
    let bad = |e: crate::wire::DecodeError| VerifyError::BadEncoding(e.to_string());
    let name = r.utf8("signature algorithm").map_err(bad)?;
    let blob = r.string("signature blob").map_err(bad)?;
    r.finish().map_err(bad)?;
    if name != alg.name() {
        return Err(VerifyError::AlgorithmMismatch { got: name.to_owned(), expected: alg.name() });
    }
    if alg == SignatureAlgorithm::RsaSha1 {
        let KeyData::Rsa(rsa_key) = key.key_data() else {
            return Err(VerifyError::Invalid);
        };
        let int = |m: &ssh_key::Mpint| m.as_positive_bytes().map(rsa::BigUint::from_bytes_be);
        let (Some(n), Some(e)) = (int(&rsa_key.n), int(&rsa_key.e)) else {
            return Err(VerifyError::BadKey("RSA key with a non-positive component".into()));
        };
        let public = rsa::RsaPublicKey::new(n, e).map_err(|e| VerifyError::BadKey(e.to_string()))?;
        let vk = pkcs1v15::VerifyingKey::<sha1::Sha1>::new(public);
        let s = pkcs1v15::Signature::try_from(blob).map_err(|_| VerifyError::Invalid)?;
        return signature::Verifier::verify(&vk, data, &s).map_err(|_| VerifyError::Invalid);
    }
    let sig =
        Signature::new(alg.ssh_key_algorithm(), blob).map_err(|e| VerifyError::BadEncoding(e.to_string()))?;
    signature::Verifier::verify(key.key_data(), data, &sig).map_err(|_| VerifyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCRYPTED_ED25519: &str = include_str!("testing/keys/user_ed25519_encrypted");

    fn test_keys() -> Vec<PrivateKey> {
        [
            include_str!("testing/keys/host_ed25519"),
            include_str!("testing/keys/host_ecdsa256"),
            include_str!("testing/keys/host_ecdsa384"),
            include_str!("testing/keys/host_ecdsa521"),
            include_str!("testing/keys/host_rsa"),
        ]
        .iter()
        .map(|pem| load_private_key(pem, None).unwrap())
        .collect()
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        let mut rng = Rng::from_u64(1);
        for key in test_keys() {
            for alg in SignatureAlgorithm::for_key(key.public_key().key_data()) {
                let sig = sign(&key, alg, b"data", &mut rng).unwrap();
                verify(key.public_key(), alg, &sig, b"data").unwrap();
                assert_eq!(
                    verify(key.public_key(), alg, &sig, b"other"),
                    Err(VerifyError::Invalid),
                    "{alg:?}"
                );
            }
        }
    }

    #[test]
    fn algorithm_must_match() {
        let mut rng = Rng::from_u64(1);
        let rsa = test_keys().pop().unwrap();
        let sig = sign(&rsa, SignatureAlgorithm::RsaSha256, b"d", &mut rng).unwrap();
        assert!(matches!(
            verify(rsa.public_key(), SignatureAlgorithm::RsaSha512, &sig, b"d"),
            Err(VerifyError::AlgorithmMismatch { .. })
        ));
        let ed = test_keys().remove(0);
        assert!(matches!(
            verify(ed.public_key(), SignatureAlgorithm::RsaSha512, &sig, b"d"),
            Err(VerifyError::KeyMismatch { .. })
        ));
        assert!(sign(&ed, SignatureAlgorithm::RsaSha512, b"d", &mut rng).is_err());
    }

    #[test]
    fn encrypted_keys_need_the_right_passphrase() {
        assert_eq!(load_private_key(ENCRYPTED_ED25519, None).unwrap_err(), KeyError::PassphraseRequired);
        assert_eq!(
            load_private_key(ENCRYPTED_ED25519, Some(b"wrong")).unwrap_err(),
            KeyError::WrongPassphrase
        );
        let key = load_private_key(ENCRYPTED_ED25519, Some(b"sansh test passphrase")).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        assert!(matches!(load_private_key("garbage", None), Err(KeyError::Parse(_))));
    }

    const P521: &str = include_str!("testing/keys/host_ecdsa521");
    const ENCRYPTED_P521: &str = include_str!("testing/keys/user_ecdsa521_encrypted");

    #[test]
    fn p521_keys_whose_scalar_has_a_leading_zero_byte_load() {
        // ssh-keygen wrote this key's scalar in 65 bytes: ssh-key alone refuses it.
        assert!(PrivateKey::from_openssh(P521.trim()).is_err());
        let plain = load_private_key(P521, None).unwrap();
        assert_eq!(plain.algorithm(), Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 });
        let public = plain.public_key().clone();
        let pass = b"sansh test passphrase";
        assert!(PrivateKey::from_openssh(ENCRYPTED_P521.trim()).unwrap().decrypt(pass).is_err());
        assert_eq!(load_private_key(ENCRYPTED_P521, None).unwrap_err(), KeyError::PassphraseRequired);
        assert_eq!(load_private_key(ENCRYPTED_P521, Some(b"wrong")).unwrap_err(), KeyError::WrongPassphrase);
        let decrypted = load_private_key(ENCRYPTED_P521, Some(pass)).unwrap();
        assert_eq!(decrypted.public_key().key_data(), public.key_data());
        assert_eq!(decrypted.comment(), "sansh-test-host");
        // And it signs what the public key verifies (SHA-512, RFC 5656).
        let mut rng = Rng::from_u64(1);
        let sig = sign(&decrypted, SignatureAlgorithm::EcdsaP521, b"data", &mut rng).unwrap();
        verify(&public, SignatureAlgorithm::EcdsaP521, &sig, b"data").unwrap();
    }
}
