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
    /// `rsa-sha2-512` (RFC 8332).
    RsaSha512,
    /// `rsa-sha2-256` (RFC 8332).
    RsaSha256,
    /// `ssh-rsa`: RSA with SHA-1. Only when explicitly allowed.
    RsaSha1,
}

impl SignatureAlgorithm {
    /// Every algorithm, strongest first within a key type.
    pub const ALL: [SignatureAlgorithm; 6] = [
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256,
        SignatureAlgorithm::EcdsaP384,
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
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| KeyError::Parse(e.to_string()))?;
    let key = if key.is_encrypted() {
        let pass = passphrase.ok_or(KeyError::PassphraseRequired)?;
        key.decrypt(pass).map_err(|e| match e {
            ssh_key::Error::Crypto | ssh_key::Error::Decrypted => KeyError::WrongPassphrase,
            // A wrong passphrase garbles the plaintext, which then fails its checkint or parse.
            ssh_key::Error::Encoding(_) | ssh_key::Error::FormatEncoding => KeyError::WrongPassphrase,
            other => KeyError::Parse(other.to_string()),
        })?
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
        // Ed25519 and ECDSA (RFC 6979) are deterministic: no RNG involved.
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
}
