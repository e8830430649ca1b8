//! Drift reports: what a TPM agent sends when its sealed key refuses to sign because the
//! measured PCR no longer holds the measurement it was sealed to. Nothing can be signed
//! by the sealed key then, but the AK still quotes: the report is a quote over the
//! measured PCR whose qualifying data commits to the report's claims and the verifier's
//! nonce, with the measurement log that replays to it. A verifier learns, from the TPM's
//! word alone, which configuration runs now; the agent never falls silent on a drift.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bundle::{TpmEvidence, MAX_BUNDLE_BYTES};
use crate::encoding::{b64, hex_bytes};

/// JSON `type` of a drift report.
pub const DRIFT_REPORT_TYPE: &str = "https://attestor.dev/drift-report/v1";
/// DSSE-style payload type the quote's commitment covers (PAE of it and the claims).
pub const DRIFT_PAYLOAD_TYPE: &str = "application/vnd.attestor.drift-report+json";
/// Bytes of the claims a report may carry.
pub const MAX_DRIFT_CLAIMS_BYTES: usize = 4096;

/// Why a drift report cannot be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DriftError {
    /// The input (of this many bytes) is over [`MAX_BUNDLE_BYTES`]; it was not parsed.
    #[error("drift report is {0} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON of a drift report.
    #[error("drift report is malformed: {0}")]
    Json(#[from] serde_json::Error),
    /// Another `type`.
    #[error("not a drift report: type {0:?}")]
    WrongType(String),
    /// The claims are over [`MAX_DRIFT_CLAIMS_BYTES`].
    #[error("drift claims are {0} bytes, over the {MAX_DRIFT_CLAIMS_BYTES}-byte limit")]
    ClaimsTooLarge(usize),
}

/// What the agent says about the drift; the quote commits to these exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftClaims {
    /// The policy kernel configuration now measured (SHA-384, hex): the last event of the
    /// measurement log, which the verifier checks replays to the quoted PCR.
    pub kernel_config_hash: String,
    /// The measurement the sealed key is bound to, as the agent recorded it when sealing
    /// (informational: the verifier compares with what it last accepted).
    pub sealed_config_hash: String,
    /// When the agent found the drift (Unix seconds).
    pub detected_at: u64,
    /// The agent's version.
    pub attestor_version: String,
}

/// A drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftReport {
    /// [`DRIFT_REPORT_TYPE`].
    #[serde(rename = "type")]
    pub report_type: String,
    /// [`DriftClaims`] as JSON, exactly as the quote committed to them.
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    /// The verifier's nonce (hex; empty when made offline).
    #[serde(default, with = "hex_bytes", skip_serializing_if = "Vec::is_empty")]
    pub nonce: Vec<u8>,
    /// The quote over the firmware and measured PCRs, the measurement log, the AK and EK,
    /// and the sealed key that refused (certified by the AK).
    pub evidence: TpmEvidence,
}

impl DriftReport {
    /// Parses a report, refusing oversized or mistyped input.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DriftError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(DriftError::TooLarge(bytes.len()));
        }
        let report: DriftReport = serde_json::from_slice(bytes)?;
        if report.report_type != DRIFT_REPORT_TYPE {
            return Err(DriftError::WrongType(report.report_type));
        }
        Ok(report)
    }

    /// Pretty JSON for files and the wire.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings, numbers and maps with string-like keys: serialisation cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The claims, parsed (unverified until [`crate::checks::verify_drift_report`]).
    pub fn claims(&self) -> Result<DriftClaims, DriftError> {
        if self.payload.len() > MAX_DRIFT_CLAIMS_BYTES {
            return Err(DriftError::ClaimsTooLarge(self.payload.len()));
        }
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// Whether submitted bytes claim to be a drift report (by their `type`), so a receiver
/// knows which parser's error to report.
pub fn is_drift_report(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    bytes.len() <= MAX_BUNDLE_BYTES
        && serde_json::from_slice::<Typed>(bytes).is_ok_and(|t| t.kind == DRIFT_REPORT_TYPE)
}
