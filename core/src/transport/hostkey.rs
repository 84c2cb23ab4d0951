//! Host key algorithms: signing (server role) and verification (client role)
//! of the exchange hash, on top of `ssh-key`.

use rsa::pkcs1v15;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::{Sha256, Sha512};
use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PrivateKey, PublicKey, Signature};

use crate::error::Error;
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
    /// `rsa-sha2-512` (RFC 8332).
    RsaSha512,
    /// `rsa-sha2-256` (RFC 8332).
    RsaSha256,
}

impl HostKeyAlgorithm {
    /// Every algorithm we implement, in default preference order (OpenSSH's).
    pub const ALL: [HostKeyAlgorithm; 5] = [
        HostKeyAlgorithm::Ed25519,
        HostKeyAlgorithm::EcdsaP256,
        HostKeyAlgorithm::EcdsaP384,
        HostKeyAlgorithm::RsaSha512,
        HostKeyAlgorithm::RsaSha256,
    ];

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            HostKeyAlgorithm::Ed25519 => "ssh-ed25519",
            HostKeyAlgorithm::EcdsaP256 => "ecdsa-sha2-nistp256",
            HostKeyAlgorithm::EcdsaP384 => "ecdsa-sha2-nistp384",
            HostKeyAlgorithm::RsaSha512 => "rsa-sha2-512",
            HostKeyAlgorithm::RsaSha256 => "rsa-sha2-256",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The signature algorithm as `ssh-key` names it.
    fn signature_algorithm(self) -> Algorithm {
        match self {
            HostKeyAlgorithm::Ed25519 => Algorithm::Ed25519,
            HostKeyAlgorithm::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            HostKeyAlgorithm::EcdsaP384 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            HostKeyAlgorithm::RsaSha512 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            HostKeyAlgorithm::RsaSha256 => Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        }
    }

    /// Whether a key of this type can make signatures of this algorithm.
    pub fn fits_key(self, key: &KeyData) -> bool {
        match (self, key.algorithm()) {
            (HostKeyAlgorithm::Ed25519, Algorithm::Ed25519) => true,
            (
                HostKeyAlgorithm::EcdsaP256,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            ) => true,
            (
                HostKeyAlgorithm::EcdsaP384,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP384,
                },
            ) => true,
            (HostKeyAlgorithm::RsaSha512 | HostKeyAlgorithm::RsaSha256, Algorithm::Rsa { .. }) => {
                true
            }
            _ => false,
        }
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
            .field(
                "fingerprint",
                &self.private.fingerprint(HashAlg::Sha256).to_string(),
            )
            .finish()
    }
}

impl HostKey {
    /// Wraps a decrypted private key. Fails for key types we cannot sign with.
    pub fn new(private: PrivateKey) -> Result<Self, Error> {
        if private.is_encrypted() {
            return Err(Error::UnsupportedHostKey {
                algorithm: "encrypted private key".into(),
            });
        }
        if HostKeyAlgorithm::for_key(private.public_key().key_data()).is_empty() {
            return Err(Error::UnsupportedHostKey {
                algorithm: private.algorithm().as_str().to_owned(),
            });
        }
        let blob = private
            .public_key()
            .to_bytes()
            .map_err(|e| Error::UnsupportedHostKey {
                algorithm: e.to_string(),
            })?;
        let ed25519 = match private.key_data() {
            KeypairData::Ed25519(kp) => Some(ed25519_dalek::SigningKey::from_bytes(
                &kp.private.to_bytes(),
            )),
            _ => None,
        };
        let rsa = match private.key_data() {
            KeypairData::Rsa(kp) => Some(rsa_private_key(kp)?),
            _ => None,
        };
        Ok(HostKey {
            private,
            blob,
            ed25519,
            rsa,
        })
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
    pub(crate) fn sign(
        &self,
        alg: HostKeyAlgorithm,
        data: &[u8],
        rng: &mut Rng,
    ) -> Result<Vec<u8>, Error> {
        let fail = |e: &dyn core::fmt::Display| Error::SigningFailed {
            reason: e.to_string(),
        };
        let sig = match (alg, self.private.key_data()) {
            (HostKeyAlgorithm::Ed25519, _) if self.ed25519.is_some() => {
                use ed25519_dalek::Signer;
                let key = self.ed25519.as_ref().expect("checked");
                Signature::new(Algorithm::Ed25519, key.sign(data).to_bytes().to_vec())
                    .map_err(|e| fail(&e))?
            }
            (HostKeyAlgorithm::RsaSha512 | HostKeyAlgorithm::RsaSha256, KeypairData::Rsa(_)) => {
                let key = self.rsa.clone().ok_or_else(|| Error::Internal {
                    what: "rsa key not prepared".into(),
                })?;
                let bytes = rsa_sign(key, alg == HostKeyAlgorithm::RsaSha512, data, rng)
                    .map_err(|e| fail(&e))?;
                Signature::new(alg.signature_algorithm(), bytes).map_err(|e| fail(&e))?
            }
            (HostKeyAlgorithm::EcdsaP256 | HostKeyAlgorithm::EcdsaP384, KeypairData::Ecdsa(_)) => {
                // RFC 6979 deterministic nonces: no RNG needed.
                signature::Signer::try_sign(&self.private, data).map_err(|e| fail(&e))?
            }
            _ => {
                return Err(Error::Internal {
                    what: format!("host key cannot sign {}", alg.name()),
                });
            }
        };
        let mut out = Vec::with_capacity(sig.as_bytes().len() + 32);
        ssh_encoding::Encode::encode(&sig, &mut out).map_err(|e| fail(&e))?;
        Ok(out)
    }
}

/// Converts an OpenSSH RSA keypair for the `rsa` crate.
///
/// Not `rsa::RsaPrivateKey::try_from(&RsaKeypair)`: ssh-key 0.6.7 passes
/// the prime `p` twice instead of `p` and `q`, so every key fails validation.
pub(crate) fn rsa_private_key(
    kp: &ssh_key::private::RsaKeypair,
) -> Result<rsa::RsaPrivateKey, Error> {
    let int = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| Error::UnsupportedHostKey {
                algorithm: "RSA key with a negative component".into(),
            })
    };
    let mut key = rsa::RsaPrivateKey::from_components(
        int(&kp.public.n)?,
        int(&kp.public.e)?,
        int(&kp.private.d)?,
        vec![int(&kp.private.p)?, int(&kp.private.q)?],
    )
    .map_err(|e| Error::UnsupportedHostKey {
        algorithm: format!("invalid RSA key: {e}"),
    })?;
    key.precompute().map_err(|e| Error::UnsupportedHostKey {
        algorithm: format!("invalid RSA key: {e}"),
    })?;
    Ok(key)
}

/// PKCS#1 v1.5 signature with SHA-512 or SHA-256 (RFC 8332). Blinded: the
/// RNG is ours, so it stays deterministic for a given seed.
pub(crate) fn rsa_sign(
    key: rsa::RsaPrivateKey,
    sha512: bool,
    data: &[u8],
    rng: &mut Rng,
) -> Result<Vec<u8>, rsa::signature::Error> {
    Ok(if sha512 {
        pkcs1v15::SigningKey::<Sha512>::new(key)
            .try_sign_with_rng(rng, data)?
            .to_vec()
    } else {
        pkcs1v15::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(rng, data)?
            .to_vec()
    })
}

/// Verifies an encoded signature over `data` with the host key `blob`, which
/// must be of the negotiated algorithm. Returns the parsed public key.
pub(crate) fn verify(
    alg: HostKeyAlgorithm,
    blob: &[u8],
    sig: &[u8],
    data: &[u8],
) -> Result<PublicKey, Error> {
    let key = PublicKey::from_bytes(blob).map_err(|e| Error::BadHostKey {
        reason: e.to_string(),
    })?;
    if !alg.fits_key(key.key_data()) {
        return Err(Error::BadHostKey {
            reason: format!(
                "{} key offered for algorithm {}",
                key.algorithm().as_str(),
                alg.name()
            ),
        });
    }
    let sig = <Signature as ssh_encoding::Decode>::decode(&mut &sig[..]).map_err(|e| {
        Error::BadHostKeySignature {
            reason: format!("undecodable signature: {e}"),
        }
    })?;
    if sig.algorithm() != alg.signature_algorithm() {
        return Err(Error::BadHostKeySignature {
            reason: format!(
                "signature is {}, negotiated {}",
                sig.algorithm().as_str(),
                alg.name()
            ),
        });
    }
    signature::Verifier::verify(key.key_data(), data, &sig).map_err(|_| {
        Error::BadHostKeySignature {
            reason: "signature does not verify".into(),
        }
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
            include_str!("../testing/keys/host_rsa"),
        ]
        .iter()
        .map(|pem| PrivateKey::from_openssh(pem).unwrap())
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
        let sig = rsa
            .sign(HostKeyAlgorithm::RsaSha256, b"h", &mut rng)
            .unwrap();
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
