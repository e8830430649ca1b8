//! Firmware profiles: reference values for one platform (TOML, in `firmware-profiles/`).
//!
//! A profile says which PCR bank is quoted, which PCR carries the policy kernel
//! measurement, what each firmware PCR must hold, which CAs may issue EK certificates,
//! and how old an attestation may be. Relative certificate paths resolve against the
//! profile's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::evidence::certchain;
use crate::evidence::tpm::HashAlg;

/// The spec's freshness window.
pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;

/// Why a profile is unusable.
#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileToml {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_max_age")]
    max_age_seconds: u64,
    tpm: TpmProfileToml,
}

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmProfileToml {
    pcr_bank: HashAlg,
    measured_pcr: u8,
    firmware_pcrs: BTreeMap<String, String>,
    ek_trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    ek_intermediates: Vec<PathBuf>,
}

/// Reference values for a TPM platform.
#[derive(Debug, Clone)]
pub struct TpmProfile {
    pub pcr_bank: HashAlg,
    pub measured_pcr: u8,
    /// Expected value of each quoted firmware PCR.
    pub firmware_pcrs: BTreeMap<u8, Vec<u8>>,
    /// DER certificates of the CAs trusted to issue EK certificates.
    pub ek_trust_anchors: Vec<Vec<u8>>,
    /// DER intermediates the verifier may use besides those in a bundle.
    pub ek_intermediates: Vec<Vec<u8>>,
}

/// A loaded firmware profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub max_age_seconds: u64,
    pub tpm: TpmProfile,
}

impl Profile {
    /// Reads a profile and the certificates it names.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses profile text as if it were read from `path`, then reads the certificates it
    /// names (relative to `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let read_err = |path: &Path, source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: ProfileToml = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let load_certs = |paths: &[PathBuf]| -> Result<Vec<Vec<u8>>, ProfileError> {
            let mut out = Vec::new();
            for p in paths {
                let p = base.join(p);
                let pem = std::fs::read_to_string(&p).map_err(|e| read_err(&p, e))?;
                let ders = certchain::pem_to_der_all(&pem)
                    .map_err(|e| invalid(format!("{}: {e}", p.display())))?;
                out.extend(ders);
            }
            Ok(out)
        };
        let tpm = raw.tpm;
        let mut firmware_pcrs = BTreeMap::new();
        for (index, value) in &tpm.firmware_pcrs {
            let pcr: u8 = index
                .parse()
                .ok()
                .filter(|p| *p <= 23)
                .ok_or_else(|| invalid(format!("firmware PCR index {index:?} is not 0-23")))?;
            let digest = hex::decode(value)
                .ok()
                .filter(|d| d.len() == tpm.pcr_bank.digest_len())
                .ok_or_else(|| {
                    invalid(format!(
                        "firmware PCR {pcr} must be {} hex bytes",
                        tpm.pcr_bank.digest_len()
                    ))
                })?;
            firmware_pcrs.insert(pcr, digest);
        }
        let firmware: Vec<u8> = firmware_pcrs.keys().copied().collect();
        crate::config::check_pcr_choice(tpm.measured_pcr, &firmware).map_err(invalid)?;
        let ek_trust_anchors = load_certs(&tpm.ek_trust_anchors)?;
        if ek_trust_anchors.is_empty() {
            return Err(invalid("tpm.ek_trust_anchors names no certificate".into()));
        }
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            max_age_seconds: raw.max_age_seconds,
            tpm: TpmProfile {
                pcr_bank: tpm.pcr_bank,
                measured_pcr: tpm.measured_pcr,
                firmware_pcrs,
                ek_trust_anchors,
                ek_intermediates: load_certs(&tpm.ek_intermediates)?,
            },
        })
    }
}
