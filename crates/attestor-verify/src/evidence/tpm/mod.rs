//! TPM 2.0 evidence: the device layer (tss-esapi), the wire formats a verifier parses
//! without the TPM library, policy digests, the measurement event log and the firmware
//! (UEFI) event log.

pub mod akcert;
pub mod certification;
pub mod credential;
pub mod eventlog;
pub mod keys;
pub mod policy;
pub mod uefi_log;
pub mod wire;

use serde::{Deserialize, Serialize};

/// A digest algorithm attestor supports: a PCR bank (SHA-256, SHA-384) or, for SHA-512,
/// only an object's nameAlg and policy hash (the P-521 EK's). SHA-1 is deliberately absent.
///
/// It deserializes only from a PCR bank's name, since every serialized `HashAlg` names a
/// bank (profiles, agent configs, bundles, event logs): `sha512` is refused by name there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// SHA-256 (TPM_ALG_SHA256).
    Sha256,
    /// SHA-384 (TPM_ALG_SHA384).
    Sha384,
    /// SHA-512 (TPM_ALG_SHA512): the nameAlg of the P-521 EK, never a PCR bank.
    Sha512,
}

/// A name that is not one of [`HashAlg::PCR_BANKS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a PCR bank attestor quotes: use sha384 or sha256")]
pub struct NotAPcrBank {
    /// The name given.
    pub name: String,
}

impl HashAlg {
    /// The PCR banks attestor reads and quotes, preferred first.
    pub const PCR_BANKS: [HashAlg; 2] = [HashAlg::Sha384, HashAlg::Sha256];

    /// TPM_ALG_ID as it appears on the wire.
    pub const fn tpm_alg_id(self) -> u16 {
        match self {
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    /// The algorithm a wire TPM_ALG_ID names; `None` for any other, SHA-1 included.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            0x000B => Some(HashAlg::Sha256),
            0x000C => Some(HashAlg::Sha384),
            0x000D => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Whether this is one of [`HashAlg::PCR_BANKS`].
    pub fn is_pcr_bank(self) -> bool {
        Self::PCR_BANKS.contains(&self)
    }

    /// The PCR bank named `name` (`sha384`, `sha256`); anything else, `sha512` included,
    /// is refused by name.
    pub fn pcr_bank(name: &str) -> Result<HashAlg, NotAPcrBank> {
        Self::PCR_BANKS
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| NotAPcrBank { name: name.into() })
    }

    /// Digest size in bytes: 32, 48 or 64.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts(&[data])
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
            HashAlg::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// Lowercase name, as in profiles and bundles: `sha256`, `sha384`, `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }
}

impl<'de> Deserialize<'de> for HashAlg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bank;
        impl serde::de::Visitor<'_> for Bank {
            type Value = HashAlg;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PCR bank name (sha384 or sha256)")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<HashAlg, E> {
                HashAlg::pcr_bank(name).map_err(E::custom)
            }
        }
        d.deserialize_str(Bank)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pcr_banks_deserialize_and_sha512_is_refused_by_name() {
        for bank in HashAlg::PCR_BANKS {
            let json = serde_json::to_string(&bank).unwrap();
            assert_eq!(serde_json::from_str::<HashAlg>(&json).unwrap(), bank);
            assert_eq!(HashAlg::pcr_bank(bank.name()), Ok(bank));
        }
        assert_eq!(
            serde_json::to_string(&HashAlg::Sha512).unwrap(),
            "\"sha512\""
        );
        assert!(!HashAlg::Sha512.is_pcr_bank());
        let err = serde_json::from_str::<HashAlg>("\"sha512\"").unwrap_err();
        assert!(
            err.to_string().contains("\"sha512\" is not a PCR bank"),
            "{err}"
        );
        // As a map key (event logs, firmware references) and in TOML alike.
        let err = serde_json::from_str::<std::collections::BTreeMap<HashAlg, u8>>(
            r#"{"sha256": 1, "sha512": 2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a PCR bank"), "{err}");
        #[derive(Debug, Deserialize)]
        struct Config {
            #[allow(dead_code)]
            bank: HashAlg,
        }
        let err = toml::from_str::<Config>("bank = \"sha512\"").unwrap_err();
        assert!(err.to_string().contains("use sha384 or sha256"), "{err}");
        assert!(toml::from_str::<Config>("bank = \"sha1\"").is_err());
        assert!(toml::from_str::<Config>("bank = 12").is_err());
    }

    #[test]
    fn sha512_digests_are_sha512() {
        assert_eq!(HashAlg::Sha512.digest_len(), 64);
        assert_eq!(HashAlg::from_tpm_alg_id(0x000D), Some(HashAlg::Sha512));
        // FIPS 180-2 "abc" test vector.
        assert_eq!(
            hex::encode(HashAlg::Sha512.digest_parts(&[b"a", b"bc"])),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
