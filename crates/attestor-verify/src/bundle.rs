//! The attestation bundle: one JSON document holding the DSSE envelope and the hardware
//! evidence bound to it (schema in the README). Parsing checks shape only; trust is
//! decided by [`crate::checks`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dsse::Envelope;
use crate::encoding::{b64, b64_list, hex_bytes};
use crate::evidence::tpm::eventlog::EventLog;
use crate::evidence::tpm::HashAlg;

/// `type` of a version-1 bundle.
pub const BUNDLE_TYPE: &str = "https://attestor.dev/bundle/v1";
/// Bundles larger than this are refused before parsing (a real one is about 8 KiB).
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why bytes are not a bundle.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The input (of this many bytes) is over [`MAX_BUNDLE_BYTES`]; it was not parsed.
    #[error("bundle is {0} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the bundle schema (unknown fields are refused too).
    #[error("bundle is not valid JSON of the bundle schema: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The `type` found is not [`BUNDLE_TYPE`].
    #[error("bundle type is {0:?}, expected {BUNDLE_TYPE:?}")]
    WrongType(String),
}

/// An attestation and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// JSON `type`: [`BUNDLE_TYPE`], the only one [`Bundle::from_json`] accepts.
    #[serde(rename = "type")]
    pub bundle_type: String,
    /// Standard DSSE envelope whose payload is an in-toto Statement.
    pub envelope: Envelope,
    /// Verifier nonce folded into the evidence commitment (hex; empty when made offline).
    #[serde(default, with = "hex_bytes", skip_serializing_if = "Vec::is_empty")]
    pub nonce: Vec<u8>,
    /// The hardware's commitment to the envelope and nonce; unchecked until
    /// [`crate::checks::verify_bundle`].
    pub evidence: Evidence,
}

/// Hardware evidence, by root of trust: `{"tpm": {...}}`, `{"snp": {...}}`, or for a
/// confidential VM with a vTPM `{"tpm+snp": {"tpm": {...}, "snp": {...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// A TPM 2.0 quote and the keys and certificates to check it.
    Tpm(TpmEvidence),
    /// An SEV-SNP attestation report.
    Snp(SnpEvidence),
    /// A confidential VM's vTPM quote and its SEV-SNP report, bound to the same envelope.
    #[serde(rename = "tpm+snp")]
    TpmSnp(TpmSnpEvidence),
}

impl Evidence {
    /// Which roots of trust this evidence comes from.
    pub fn kind(&self) -> EvidenceKind {
        match self {
            Evidence::Tpm(_) => EvidenceKind::Tpm,
            Evidence::Snp(_) => EvidenceKind::Snp,
            Evidence::TpmSnp(_) => EvidenceKind::TpmSnp,
        }
    }
}

/// Which root of trust evidence comes from: the agent config's and a profile's
/// `evidence` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    /// A TPM 2.0: quotes over PCRs, PCR-sealed signing key.
    #[default]
    Tpm,
    /// An AMD SEV-SNP guest: attestation reports, derived-key-sealed signing key.
    Snp,
    /// An SEV-SNP guest with a vTPM: both, bound to the same envelope, which the vTPM's
    /// sealed key signs.
    #[serde(rename = "tpm+snp")]
    TpmSnp,
}

impl EvidenceKind {
    /// The name used in configs, profiles and messages.
    pub fn name(self) -> &'static str {
        match self {
            EvidenceKind::Tpm => "tpm",
            EvidenceKind::Snp => "snp",
            EvidenceKind::TpmSnp => "tpm+snp",
        }
    }
}

/// A vTPM's quote and an SEV-SNP report bound to the same envelope: the quote's
/// qualifying data and the report's REPORT_DATA each commit to it (and the nonce) as they
/// do alone; the report's `signing_key` is the vTPM's sealed key, which signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmSnpEvidence {
    /// The vTPM's evidence, as for a TPM alone.
    pub tpm: TpmEvidence,
    /// The report; its `signing_key` must be the vTPM's sealed key.
    pub snp: SnpEvidence,
}

/// An AMD SEV-SNP attestation report whose REPORT_DATA commits to the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The report exactly as the secure processor returned it (1184 bytes, base64).
    #[serde(with = "b64")]
    pub report: Vec<u8>,
    /// VCEK certificate (DER, base64) from the host's certificate table or the agent's
    /// cache; may be absent when the verifier has it cached.
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub vcek: Vec<u8>,
    /// The envelope's signing key, SEC1 uncompressed P-384 (base64); REPORT_DATA commits
    /// to it.
    #[serde(with = "b64")]
    pub signing_key: Vec<u8>,
}

/// A TPM2_Quote and everything needed to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// TPM2_Quote by the AK over the PCRs; its qualifying data commits to the envelope
    /// and the nonce ([`crate::evidence::tpm_commitment`]).
    pub quote: SignedAttest,
    /// Bank of the quoted PCR values.
    pub pcr_bank: HashAlg,
    /// Value of every quoted PCR (hex), keyed by index.
    pub pcrs: BTreeMap<u8, String>,
    /// Measurements of the measured PCR since TPM reset.
    pub event_log: EventLog,
    /// The firmware's UEFI event log (base64 of `binary_bios_measurements`), replayed
    /// against the other quoted PCRs; empty when the platform has none (swtpm).
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub firmware_event_log: Vec<u8>,
    /// Attestation key: marshalled TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
    /// The envelope's signing key, and the AK's certification that it lives in this TPM.
    pub sealed_key: SealedKeyEvidence,
    /// EK certificate (DER, base64) first, then any intermediates; empty for a TPM without
    /// an EK certificate, whose EK a profile can trust only by its public-key hash.
    #[serde(with = "b64_list")]
    pub ek_certificates: Vec<Vec<u8>>,
    /// The EK's marshalled TPMT_PUBLIC (base64): what the agent used, so a verifier can
    /// check it against the certificate or, without one, against an EK hash allow-list.
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub ek_public: Vec<u8>,
    /// AK certificate (DER, base64) first, then any intermediates: an enrollment CA's
    /// after credential activation, or the platform maker's IAK certificate
    /// ([`crate::evidence::tpm::akcert`]). Absent when the AK is certified by no one.
    #[serde(default, with = "b64_list", skip_serializing_if = "Vec::is_empty")]
    pub ak_certificates: Vec<Vec<u8>>,
}

/// A TPM-signed TPMS_ATTEST (quote or certify) in TPM wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttest {
    /// Marshalled TPMS_ATTEST (base64): the signed message.
    #[serde(with = "b64")]
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE (base64).
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

impl<'a> From<&'a SignedAttest> for crate::evidence::tpm::certification::Certification<'a> {
    fn from(signed: &'a SignedAttest) -> Self {
        Self {
            attest: &signed.attest,
            signature: &signed.signature,
        }
    }
}

/// The DSSE signing key and the AK's certification that it lives in the TPM under policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKeyEvidence {
    /// Marshalled TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub public: Vec<u8>,
    /// TPM2_Certify of `public` by the AK.
    pub certification: SignedAttest,
}

impl Bundle {
    /// Parses a bundle, refusing oversized or mistyped input.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let bundle: Bundle = serde_json::from_slice(bytes)?;
        if bundle.bundle_type != BUNDLE_TYPE {
            return Err(BundleError::WrongType(bundle.bundle_type));
        }
        Ok(bundle)
    }

    /// Pretty JSON for files and the wire.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings, numbers and maps with string-like keys: serialisation cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}
