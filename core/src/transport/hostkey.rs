//! Host key algorithms: signing the exchange hash (server role) and
//! verifying it (client role), on top of [`crate::keys`].

use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PrivateKey, PublicKey, Signature};

use crate::error::Error;
use crate::keys::{self, SignatureAlgorithm, VerifyError};
use crate::rng::Rng;

/// A host key signature algorithm we can negotiate.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostKeyAlgorithm {
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
}

impl HostKeyAlgorithm {
    /// Every algorithm we implement, in default preference order (OpenSSH's).
    /// SHA-1 `ssh-rsa` host keys are not accepted.
    pub const ALL: [HostKeyAlgorithm; 6] = [
        HostKeyAlgorithm::Ed25519,
        HostKeyAlgorithm::EcdsaP256,
        HostKeyAlgorithm::EcdsaP384,
        HostKeyAlgorithm::EcdsaP521,
        HostKeyAlgorithm::RsaSha512,
        HostKeyAlgorithm::RsaSha256,
    ];

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        self.signature_algorithm().name()
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The signature algorithm behind this host key algorithm.
    pub fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            HostKeyAlgorithm::Ed25519 => SignatureAlgorithm::Ed25519,
            HostKeyAlgorithm::EcdsaP256 => SignatureAlgorithm::EcdsaP256,
            HostKeyAlgorithm::EcdsaP384 => SignatureAlgorithm::EcdsaP384,
            HostKeyAlgorithm::EcdsaP521 => SignatureAlgorithm::EcdsaP521,
            HostKeyAlgorithm::RsaSha512 => SignatureAlgorithm::RsaSha512,
            HostKeyAlgorithm::RsaSha256 => SignatureAlgorithm::RsaSha256,
        }
    }

    /// Whether a key of this type can make signatures of this algorithm.
    pub fn fits_key(self, key: &KeyData) -> bool {
        self.signature_algorithm().fits_key(key)
    }

    /// The algorithms a key can sign with, in preference order.
    pub fn for_key(key: &KeyData) -> Vec<HostKeyAlgorithm> {
        Self::ALL.into_iter().filter(|a| a.fits_key(key)).collect()
    }
}

/// A server's private host key, prepared for signing exchange hashes.
#[derive(Clone)]
pub struct HostKey {
    private: PrivateKey,
    /// The public key blob (K_S), encoded once.
    blob: Vec<u8>,
    /// ed25519 keys expanded once rather than on every signature.
    ed25519: Option<ed25519_dalek::SigningKey>,
    /// RSA keys converted once (with their CRT values precomputed).
    rsa: Option<rsa::RsaPrivateKey>,
}

impl core::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostKey")
            .field("algorithm", &self.private.algorithm().as_str())
            .field("fingerprint", &self.private.fingerprint(HashAlg::Sha256).to_string())
            .finish()
    }
}

impl HostKey {
    /// Wraps a decrypted private key. Fails for key types we cannot sign with.
    pub fn new(private: PrivateKey) -> Result<Self, Error> {
        let unsupported = |what: String| Error::UnsupportedHostKey { algorithm: what };
        if private.is_encrypted() {
            return Err(unsupported("encrypted private key (decrypt it first)".into()));
        }
        if HostKeyAlgorithm::for_key(private.public_key().key_data()).is_empty() {
            return Err(unsupported(private.algorithm().as_str().to_owned()));
        }
        let blob = private.public_key().to_bytes().map_err(|e| unsupported(e.to_string()))?;
        let ed25519 = match private.key_data() {
            KeypairData::Ed25519(kp) => Some(ed25519_dalek::SigningKey::from_bytes(&kp.private.to_bytes())),
            _ => None,
        };
        let rsa = match private.key_data() {
            KeypairData::Rsa(kp) => Some(keys::rsa_private_key(kp).map_err(|e| unsupported(e.to_string()))?),
            _ => None,
        };
        Ok(HostKey { private, blob, ed25519, rsa })
    }

    /// Loads an OpenSSH private key file's text (see [`keys::load_private_key`]).
    pub fn from_openssh(text: &str, passphrase: Option<&[u8]>) -> Result<Self, Error> {
        let key = keys::load_private_key(text, passphrase)
            .map_err(|e| Error::UnsupportedHostKey { algorithm: e.to_string() })?;
        Self::new(key)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        self.private.public_key()
    }

    /// The encoded public key blob.
    pub(crate) fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Signature algorithms this key supports.
    pub fn algorithms(&self) -> Vec<HostKeyAlgorithm> {
        HostKeyAlgorithm::for_key(self.public_key().key_data())
    }

    /// Signs `data` and returns the encoded signature (`string alg, string blob`).
    pub(crate) fn sign(&self, alg: HostKeyAlgorithm, data: &[u8], rng: &mut Rng) -> Result<Vec<u8>, Error> {
        let fail = |e: &dyn core::fmt::Display| Error::SigningFailed { reason: e.to_string() };
        let sig_alg = alg.signature_algorithm();
        if let (SignatureAlgorithm::Ed25519, Some(key)) = (sig_alg, &self.ed25519) {
            use ed25519_dalek::Signer;
            let sig = Signature::new(ssh_key::Algorithm::Ed25519, key.sign(data).to_bytes().to_vec())
                .map_err(|e| fail(&e))?;
            return Ok(keys::encode_signature(sig_alg, sig.as_bytes()));
        }
        if let Some(key) = &self.rsa {
            let blob = keys::rsa_sign(key, sig_alg, data, rng).map_err(|e| fail(&e))?;
            return Ok(keys::encode_signature(sig_alg, &blob));
        }
        keys::sign(&self.private, sig_alg, data, rng).map_err(|e| fail(&e))
    }
}

/// Verifies an encoded signature over `data` with the host key `blob`, which
/// must be of the negotiated algorithm. Returns the parsed public key.
pub(crate) fn verify(
    alg: HostKeyAlgorithm,
    blob: &[u8],
    sig: &[u8],
    data: &[u8],
) -> Result<PublicKey, Error> {
    let key = keys::parse_public_key(blob).map_err(|e| Error::BadHostKey { reason: e.to_string() })?;
    keys::verify(&key, alg.signature_algorithm(), sig, data).map_err(|e| match e {
        VerifyError::KeyMismatch { .. } | VerifyError::BadKey(_) => {
            Error::BadHostKey { reason: e.to_string() }
        }
        _ => Error::BadHostKeySignature { reason: e.to_string() },
    })?;
    Ok(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test host keys made with ssh-keygen (never used outside tests).
    pub(crate) fn test_keys() -> Vec<PrivateKey> {
        [
            include_str!("../testing/keys/host_ed25519"),
            include_str!("../testing/keys/host_ecdsa256"),
            include_str!("../testing/keys/host_ecdsa384"),
            include_str!("../testing/keys/host_ecdsa521"),
            include_str!("../testing/keys/host_rsa"),
        ]
        .iter()
        .map(|pem| keys::load_private_key(pem, None).unwrap())
        .collect()
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        let mut rng = Rng::from_u64(1);
        for private in test_keys() {
            let hk = HostKey::new(private).unwrap();
            for alg in hk.algorithms() {
                let sig = hk.sign(alg, b"exchange hash", &mut rng).unwrap();
                verify(alg, hk.blob(), &sig, b"exchange hash").unwrap();
                assert!(matches!(
                    verify(alg, hk.blob(), &sig, b"other hash"),
                    Err(Error::BadHostKeySignature { .. })
                ));
            }
        }
    }

    #[test]
    fn signature_algorithm_must_match_negotiated() {
        let mut rng = Rng::from_u64(1);
        let rsa = HostKey::new(test_keys().pop().unwrap()).unwrap();
        let sig = rsa.sign(HostKeyAlgorithm::RsaSha256, b"h", &mut rng).unwrap();
        assert!(matches!(
            verify(HostKeyAlgorithm::RsaSha512, rsa.blob(), &sig, b"h"),
            Err(Error::BadHostKeySignature { .. })
        ));
        let ed = HostKey::new(test_keys().remove(0)).unwrap();
        assert!(matches!(
            verify(HostKeyAlgorithm::RsaSha512, ed.blob(), &sig, b"h"),
            Err(Error::BadHostKey { .. })
        ));
    }
}
