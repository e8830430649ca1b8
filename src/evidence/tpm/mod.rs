//! TPM 2.0 evidence: the device layer (tss-esapi), the wire formats a verifier parses
//! without the TPM library, policy digests, and the measurement event log.

pub mod credential;
pub mod device;
pub mod eventlog;
pub mod policy;
pub mod wire;

use serde::{Deserialize, Serialize};

/// A PCR bank / digest algorithm that attestor supports. SHA-1 is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha256,
    Sha384,
}

impl HashAlg {
    /// TPM_ALG_ID as it appears on the wire.
    pub const fn tpm_alg_id(self) -> u16 {
        match self {
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
        }
    }

    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            0x000B => Some(HashAlg::Sha256),
            0x000C => Some(HashAlg::Sha384),
            _ => None,
        }
    }

    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
        }
    }

    /// Digest of the concatenation of `parts`.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        use sha2::Digest;
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            HashAlg::Sha256 => run::<sha2::Sha256>(parts),
            HashAlg::Sha384 => run::<sha2::Sha384>(parts),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
        }
    }
}
