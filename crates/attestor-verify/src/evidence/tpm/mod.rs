//! TPM 2.0 evidence: the device layer (tss-esapi), the wire formats a verifier parses
//! without the TPM library, policy digests, the measurement event log and the firmware
//! (UEFI) event log.

pub mod akcert;
pub mod credential;
pub mod eventlog;
pub mod keys;
pub mod policy;
pub mod uefi_log;
pub mod wire;

use serde::{Deserialize, Serialize};

/// A PCR bank / digest algorithm that attestor supports. SHA-1 is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// SHA-256 (TPM_ALG_SHA256).
    Sha256,
    /// SHA-384 (TPM_ALG_SHA384).
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

    /// The algorithm a wire TPM_ALG_ID names; `None` for any other, SHA-1 included.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            0x000B => Some(HashAlg::Sha256),
            0x000C => Some(HashAlg::Sha384),
            _ => None,
        }
    }

    /// Digest size in bytes: 32 or 48.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
        }
    }

    /// The digest of `data`.
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

    /// Lowercase name, as in profiles and bundles: `sha256`, `sha384`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
        }
    }
}

/// PCR that receives the policy kernel measurement unless configured otherwise: 13 is
/// non-resettable from locality 0 and unused by the PC Client boot chain.
pub const DEFAULT_MEASURED_PCR: u8 = 13;

/// PCRs that locality 0 can reset: a measurement there can be replayed.
pub const RESETTABLE_PCRS: [u8; 2] = [16, 23];

/// Refuses a measured PCR that can be reset or that collides with the quoted firmware PCRs.
pub fn check_pcr_choice(measured: u8, firmware: &[u8]) -> Result<(), String> {
    if RESETTABLE_PCRS.contains(&measured) {
        return Err(format!(
            "measured_pcr {measured} can be reset by any local process; choose a non-resettable PCR (default {DEFAULT_MEASURED_PCR})"
        ));
    }
    if measured > 23 {
        return Err(format!("measured_pcr {measured} does not exist (0-23)"));
    }
    if firmware.contains(&measured) || firmware.iter().any(|&p| p > 23) {
        return Err("firmware_pcrs must be PCRs 0-23 other than measured_pcr".into());
    }
    Ok(())
}
