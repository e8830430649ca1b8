//! A profile's `[tpm.measured_boot]` section: the reference values a firmware event log is
//! appraised against. The section's presence alone requires bundles to carry the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use super::{CertLoader, ProfileError};
use crate::evidence::tpm::HashAlg;

/// Reference values for the firmware event log. Absent keys check nothing; the log must
/// still replay to the quoted PCRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeasuredBootProfile {
    /// Secure Boot must be on: PCR 7 measures the SecureBoot variable as 1.
    pub secure_boot: bool,
    /// Every entry of PK must be one of these (by fingerprint, see [`KeyAllowList`]).
    pub pk: Option<KeyAllowList>,
    /// Every entry of KEK must be one of these.
    pub kek: Option<KeyAllowList>,
    /// Every entry of db must be one of these.
    pub db: Option<KeyAllowList>,
    /// dbx must hold every one of these entries: the revocations of a published dbx
    /// update, so a dbx missing any is older than that update.
    pub dbx_required: Option<KeyAllowList>,
    /// Per bank, the digests an EV_EFI_BOOT_SERVICES_APPLICATION may have (the boot loaders
    /// and shims the firmware may start); empty: no such check.
    pub boot_applications: BTreeMap<HashAlg, BTreeSet<Vec<u8>>>,
}

/// Signature database entries by fingerprint: the SHA-256 of an X.509 certificate's DER, or
/// an EFI_CERT_SHA256 entry's digest itself
/// ([`crate::evidence::tpm::uefi_log::SignatureEntry::fingerprint`]).
pub type KeyAllowList = BTreeSet<[u8; 32]>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MeasuredBootToml {
    #[serde(default)]
    secure_boot: bool,
    pk: Option<KeysToml>,
    kek: Option<KeysToml>,
    db: Option<KeysToml>,
    dbx_required: Option<PathBuf>,
    #[serde(default)]
    boot_applications: BTreeMap<HashAlg, Vec<String>>,
}

/// Entries named by certificate file (PEM) or by fingerprint (hex SHA-256).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysToml {
    #[serde(default)]
    certificates: Vec<PathBuf>,
    #[serde(default)]
    sha256: Vec<String>,
}

fn sha256_hex(value: &str) -> Option<[u8; 32]> {
    hex::decode(value.trim()).ok()?.try_into().ok()
}

impl MeasuredBootToml {
    pub(super) fn load(
        self,
        base: &Path,
        invalid: &dyn Fn(String) -> ProfileError,
        load_certs: CertLoader,
    ) -> Result<MeasuredBootProfile, ProfileError> {
        let keys = |name: &str, toml: Option<KeysToml>| -> Result<_, ProfileError> {
            let Some(toml) = toml else { return Ok(None) };
            let mut set = KeyAllowList::new();
            for der in load_certs(&toml.certificates)? {
                set.insert(sha2::Sha256::digest(&der).into());
            }
            for value in &toml.sha256 {
                set.insert(sha256_hex(value).ok_or_else(|| {
                    invalid(format!(
                        "tpm.measured_boot.{name}.sha256: {value:?} is not 32 bytes of hex"
                    ))
                })?);
            }
            if set.is_empty() {
                return Err(invalid(format!(
                    "tpm.measured_boot.{name} allows nothing: name certificates or sha256 \
                     fingerprints, or remove the table"
                )));
            }
            Ok(Some(set))
        };
        let dbx_required = match &self.dbx_required {
            None => None,
            Some(path) => Some(read_hash_list(&base.join(path), invalid)?),
        };
        let mut boot_applications = BTreeMap::new();
        for (bank, digests) in self.boot_applications {
            let mut set = BTreeSet::new();
            for value in digests {
                let digest = hex::decode(value.trim())
                    .ok()
                    .filter(|d| d.len() == bank.digest_len())
                    .ok_or_else(|| {
                        invalid(format!(
                            "tpm.measured_boot.boot_applications.{}: {value:?} is not {} \
                             bytes of hex",
                            bank.name(),
                            bank.digest_len()
                        ))
                    })?;
                set.insert(digest);
            }
            boot_applications.insert(bank, set);
        }
        Ok(MeasuredBootProfile {
            secure_boot: self.secure_boot,
            pk: keys("pk", self.pk)?,
            kek: keys("kek", self.kek)?,
            db: keys("db", self.db)?,
            dbx_required,
            boot_applications,
        })
    }
}

/// A file of SHA-256 fingerprints, one hex value a line; `#` starts a comment.
fn read_hash_list(
    path: &Path,
    invalid: &dyn Fn(String) -> ProfileError,
) -> Result<KeyAllowList, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut set = KeyAllowList::new();
    for (n, line) in text.lines().enumerate() {
        let value = line.split('#').next().unwrap_or_default().trim();
        if value.is_empty() {
            continue;
        }
        set.insert(sha256_hex(value).ok_or_else(|| {
            invalid(format!(
                "{} line {}: {value:?} is not a hex SHA-256",
                path.display(),
                n + 1
            ))
        })?);
    }
    if set.is_empty() {
        return Err(invalid(format!(
            "{} (tpm.measured_boot.dbx_required) names no hash",
            path.display()
        )));
    }
    Ok(set)
}
