//! A minimal ssh-agent client (draft-miller-ssh-agent): list identities and
//! sign, over the Unix socket in `SSH_AUTH_SOCK`.

use std::io;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::SignatureAlgorithm;
use crate::wire::{Reader, Writer};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const RSA_SHA2_256: u32 = 2;
const RSA_SHA2_512: u32 = 4;
/// Agent replies larger than this are refused (a key list is a few KiB).
const MAX_REPLY: usize = 256 * 1024;

/// An ssh-agent reachable over its socket.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    path: PathBuf,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ssh-agent: {what}"))
}

impl Agent {
    /// The agent named by `SSH_AUTH_SOCK`, if any.
    pub(crate) fn from_env() -> Option<Agent> {
        std::env::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()).map(|p| Agent { path: p.into() })
    }

    /// The agent listening at `path`.
    pub(crate) fn at(path: PathBuf) -> Agent {
        Agent { path }
    }

    async fn call(&self, request: &[u8]) -> io::Result<Vec<u8>> {
        let mut s = UnixStream::connect(&self.path).await?;
        let mut framed = Vec::with_capacity(request.len() + 4);
        framed.put_string(request);
        s.write_all(&framed).await?;
        let len = s.read_u32().await? as usize;
        if len == 0 || len > MAX_REPLY {
            return Err(bad("reply of impossible length"));
        }
        let mut reply = vec![0u8; len];
        s.read_exact(&mut reply).await?;
        Ok(reply)
    }

    /// The public keys the agent holds.
    pub(crate) async fn identities(&self) -> io::Result<Vec<ssh_key::PublicKey>> {
        let reply = self.call(&[REQUEST_IDENTITIES]).await?;
        let mut r = Reader::new(&reply);
        if r.u8("type").map_err(|_| bad("empty reply"))? != IDENTITIES_ANSWER {
            return Err(bad("identities refused"));
        }
        let n = r.u32("count").map_err(|_| bad("truncated list"))?;
        let mut keys = Vec::new();
        for _ in 0..n {
            let blob = r.string("key").map_err(|_| bad("truncated key"))?;
            r.string("comment").map_err(|_| bad("truncated comment"))?;
            // Keys we cannot use (certificates, sk keys) are skipped.
            if let Ok(k) = ssh_key::PublicKey::from_bytes(blob) {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    /// Signs `data` with `key`; returns the encoded signature.
    pub(crate) async fn sign(
        &self,
        key: &ssh_key::PublicKey,
        algorithm: SignatureAlgorithm,
        data: &[u8],
    ) -> io::Result<Vec<u8>> {
        let blob = key.to_bytes().map_err(|e| bad(&e.to_string()))?;
        let flags = match algorithm {
            SignatureAlgorithm::RsaSha256 => RSA_SHA2_256,
            SignatureAlgorithm::RsaSha512 => RSA_SHA2_512,
            _ => 0,
        };
        let mut req = Vec::with_capacity(blob.len() + data.len() + 16);
        req.put_u8(SIGN_REQUEST);
        req.put_string(&blob);
        req.put_string(data);
        req.put_u32(flags);
        let reply = self.call(&req).await?;
        let mut r = Reader::new(&reply);
        if r.u8("type").map_err(|_| bad("empty reply"))? != SIGN_RESPONSE {
            return Err(bad("signing refused"));
        }
        let signature = r.string("signature").map_err(|_| bad("truncated signature"))?;
        // An agent that ignores the RSA flags signs with another hash: the
        // server would refuse it (counting a failed attempt) without saying why.
        let signed_with =
            Reader::new(signature).utf8("signature algorithm").map_err(|_| bad("bad signature"))?;
        if signed_with != algorithm.name() {
            return Err(bad(&format!("signed with {signed_with}, asked for {}", algorithm.name())));
        }
        Ok(signature.to_vec())
    }
}
