//! What one log leaf holds: the submission exactly as received and the ledger's verdict
//! on it, as deterministic CBOR. Keeping the submitted bytes in the leaf means an
//! inclusion proof covers the evidence itself, so an auditor can re-verify any entry.

use serde::{Deserialize, Serialize};

use crate::api::Verdict;
use crate::bundle::Bundle;
use crate::cbor::{self, CborError};
use crate::claims::{Claims, Statement};

/// Record format version written today.
pub const RECORD_VERSION: u8 = 2;

/// One log entry's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    /// Record format version: [`RECORD_VERSION`].
    pub version: u8,
    /// Ledger time (Unix ms), non-decreasing in log order.
    pub received_at_ms: u64,
    /// From the client certificate, never from the submission.
    pub tenant: String,
    /// From the client certificate, never from the submission.
    pub agent_id: String,
    /// The ledger's verdict on the submission.
    pub verdict: Verdict,
    /// Refusal reason name (e.g. `quote-binding`); absent when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable refusal detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// From the verified claims (absent when the submission never got that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_id: Option<String>,
    /// The verified claims' `policy_hash` (lowercase hex), like `attestation_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The submitted bytes, exactly as received; empty when they were not kept
    /// ([`LogRecord::discarded`]).
    #[serde(with = "serde_bytes_buf")]
    pub submission: Vec<u8>,
    /// For a caller that is not an enrolled agent of a configured tenant: what it sent,
    /// summarised instead of kept, so strangers cannot grow the log with their bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<Discarded>,
    /// The ledger's judgement as a signed EAR (draft-ietf-rats-ear, compact JWS), for a
    /// submission of an enrolled agent (version 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ear: Option<String>,
    /// For an entry recording the tenant's appraisal policy (agent id
    /// [`POLICY_RECORDER`]): its id, `name@revision#sha256:...`; the submission holds the
    /// policy document. Every later EAR of the tenant names the policy that judged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal_policy: Option<String>,
}

/// The agent id of entries the ledger itself writes (appraisal policy changes): not a
/// valid agent id, so no agent can have it.
pub const POLICY_RECORDER: &str = "@ledger";

/// The agent id of entries recording an incident's state changes (opened, acknowledged,
/// resolved): the submission holds the [`IncidentRecord`] as JSON, so the incident trail
/// is as tamper-evident as the attestations. Not a valid agent id either.
pub const INCIDENT_RECORDER: &str = "@incidents";

/// Whether an entry's agent id is one of the ledger's own recorders rather than an agent.
pub fn is_recorder(agent_id: &str) -> bool {
    agent_id.starts_with('@')
}

/// What an [`INCIDENT_RECORDER`] entry keeps: the change and the incident as it stood
/// after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRecord {
    /// `opened`, `acknowledged` or `resolved`.
    pub change: String,
    /// The incident after the change.
    pub incident: crate::api::Incident,
}

/// A submission that was summarised instead of kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discarded {
    /// SHA-256 of the submitted bytes.
    #[serde(with = "serde_bytes_buf")]
    pub sha256: Vec<u8>,
    /// Their length.
    pub size: u64,
}

impl LogRecord {
    /// The leaf bytes: deterministic CBOR, so equal records give equal leaves.
    pub fn to_leaf(&self) -> Result<Vec<u8>, CborError> {
        cbor::to_canonical_vec(self)
    }

    /// Parses a leaf, refusing any encoding but the canonical one.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, CborError> {
        cbor::from_canonical_slice(leaf)
    }

    /// The claims of an accepted attestation, read back from the kept bundle (the
    /// ledger verified them before accepting); `None` for any other entry.
    pub fn accepted_claims(&self) -> Option<Claims> {
        if self.verdict != Verdict::Accepted {
            return None;
        }
        let bundle = Bundle::from_json(&self.submission).ok()?;
        Some(
            Statement::from_json(&bundle.envelope.payload)
                .ok()?
                .predicate,
        )
    }
}

// Bytes as a CBOR byte string, not an array of integers.
mod serde_bytes_buf {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LogRecord {
        LogRecord {
            version: RECORD_VERSION,
            received_at_ms: 1_800_000_000_123,
            tenant: "t".into(),
            agent_id: "a".into(),
            verdict: Verdict::Refused,
            reason: Some("quote-binding".into()),
            detail: Some("quote qualifying data does not commit to this envelope".into()),
            attestation_id: None,
            policy_hash: None,
            submission: b"{\"type\":...}".to_vec(),
            discarded: None,
            ear: Some("eyJhbGciOiJFUzM4NCJ9.e30.c2ln".into()),
            appraisal_policy: None,
        }
    }

    #[test]
    fn leaves_round_trip_and_are_canonical() {
        let leaf = record().to_leaf().unwrap();
        assert_eq!(LogRecord::from_leaf(&leaf).unwrap(), record());
        assert!(cbor::is_canonical(&leaf));
        // The submission is a byte string (major type 2), not an array of integers.
        let value: ciborium::Value = cbor::from_slice(&leaf).unwrap();
        let map = value.as_map().unwrap();
        let submission = map
            .iter()
            .find(|(k, _)| k.as_text() == Some("submission"))
            .unwrap();
        assert!(submission.1.is_bytes());
    }

    #[test]
    fn malformed_leaves_are_refused() {
        let mut leaf = record().to_leaf().unwrap();
        assert!(LogRecord::from_leaf(&leaf[..leaf.len() - 1]).is_err());
        leaf.push(0);
        assert!(LogRecord::from_leaf(&leaf).is_err());
        assert!(LogRecord::from_leaf(b"\xa0").is_err());
    }
}
