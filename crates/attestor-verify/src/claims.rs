//! The attestation claims of the runtime-attestation spec, and the in-toto Statement v1
//! that carries them as a DSSE payload.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// DSSE payloadType of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// predicateType naming attestor's runtime claims (version 2: `version` is the attested
/// policy kernel's, `attestor_version` the agent's).
pub const PREDICATE_TYPE: &str = "https://attestor.dev/runtime-attestation/v2";
/// in-toto subject name of the attested policy kernel.
pub const SUBJECT_NAME: &str = "policy-kernel";
/// Upper bound on a statement's size: a real one is about 2 KiB.
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// Differential-privacy budget: limits from the policy, usage from the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpsilonLimits {
    /// The ε (privacy loss) the policy allows between resets.
    pub max_epsilon: f64,
    /// The δ (failure probability) the policy allows between resets.
    pub max_delta: f64,
    /// The ε spent since the last reset, as the runtime reports it.
    pub current_usage: f64,
    /// Seconds between budget resets.
    pub reset_interval: u64,
}

/// An active capability signing key as the policy kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityKey {
    /// The kernel's name for the key.
    pub key_id: String,
    /// The key's signature algorithm, as the kernel names it.
    pub algorithm: String,
    /// Lowercase hex of the key's SubjectPublicKeyInfo SHA-256 (or the kernel's own fingerprint).
    pub fingerprint: String,
}

/// Every field the runtime-attestation spec lists, with the spec's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    // Core fields
    /// The agent's unique id for this attestation (a random UUID; the form is not checked).
    pub attestation_id: String,
    /// Unix seconds at generation.
    pub timestamp: u64,
    /// Lowercase hex SHA-256 of the canonical active policy document.
    pub policy_hash: String,
    /// The policy's zero-retention declaration; a ledger refuses a change of it between
    /// an agent's attestations.
    pub zero_retention: bool,
    // Privacy limits
    /// The differential-privacy budget and its use.
    pub epsilon_limits: EpsilonLimits,
    // System configuration
    /// Version of the attested software, the policy kernel, as its status reports it.
    pub version: String,
    /// Version of the attestor agent that made the attestation.
    pub attestor_version: String,
    /// Lowercase hex SHA-384 of the canonical policy kernel configuration; the PCR measurement.
    pub kernel_config_hash: String,
    /// The capability signing keys active now, as the runtime reports them.
    pub capability_keys: Vec<CapabilityKey>,
    /// Whether the runtime reports tenants isolated from each other.
    pub tenant_isolation: bool,
    /// Whether the runtime reports its egress firewall on.
    pub egress_firewall_enabled: bool,
    /// Whether the runtime reports PII detection on.
    pub pii_detection_enabled: bool,
    // Runtime metrics: the runtime's own report, signed with the rest but not measured
    /// Requests the runtime has handled.
    pub total_requests: u64,
    /// Of those, the requests it blocked.
    pub blocked_requests: u64,
    /// Capability verifications that failed.
    pub capability_failures: u64,
    /// Plans the runtime validated.
    pub plan_validations: u64,
    /// Seconds since the runtime started.
    pub uptime_seconds: u64,
}

/// An in-toto resource descriptor (only the fields attestor uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The resource's name; [`SUBJECT_NAME`] in an attestor statement.
    pub name: String,
    /// Lowercase hex digests by algorithm name; an attestor statement has exactly
    /// `sha256`, equal to `policy_hash`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// in-toto Statement v1 whose predicate is [`Claims`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// JSON `_type`: [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What the statement is about: the policy kernel at `policy_hash`.
    pub subject: Vec<Subject>,
    /// JSON `predicateType`: [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The claims.
    pub predicate: Claims,
}

/// Why a payload is not a valid attestor statement.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The payload (of this many bytes) is over [`MAX_STATEMENT_BYTES`]; it was not parsed.
    #[error("statement is {0} bytes, over the {MAX_STATEMENT_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the statement schema (unknown or missing claims included), or, when
    /// serialising, a number JSON cannot hold.
    #[error("statement is not valid JSON for an attestor statement: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The `_type` found is not [`STATEMENT_TYPE`].
    #[error("statement _type is {0:?}, expected {STATEMENT_TYPE:?}")]
    WrongStatementType(String),
    /// The `predicateType` found is not [`PREDICATE_TYPE`].
    #[error("predicateType is {0:?}, expected {PREDICATE_TYPE:?}")]
    WrongPredicateType(String),
    /// The subject is not the policy kernel at the claimed `policy_hash`.
    #[error("statement subject must be exactly one {SUBJECT_NAME:?} with a sha256 digest equal to policy_hash")]
    SubjectMismatch,
    /// A hash claim is not lowercase hex of its digest's length.
    #[error("{field} is not lowercase hex of {bytes} bytes")]
    BadDigest {
        /// The claim's name.
        field: &'static str,
        /// The digest length it must have, in bytes.
        bytes: usize,
    },
}

impl Statement {
    /// Wraps claims in a statement whose subject is the policy kernel at `policy_hash`.
    pub fn new(claims: Claims) -> Self {
        let digest = [("sha256".to_string(), claims.policy_hash.clone())].into();
        Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: SUBJECT_NAME.into(),
                digest,
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: claims,
        }
    }

    /// The JSON bytes that become the DSSE payload; fails on non-finite numbers.
    pub fn to_json(&self) -> Result<Vec<u8>, ClaimsError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses and checks the statement's shape; trust decisions stay with the verifier.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(ClaimsError::TooLarge(bytes.len()));
        }
        let statement: Statement = serde_json::from_slice(bytes)?;
        if statement.statement_type != STATEMENT_TYPE {
            return Err(ClaimsError::WrongStatementType(statement.statement_type));
        }
        if statement.predicate_type != PREDICATE_TYPE {
            return Err(ClaimsError::WrongPredicateType(statement.predicate_type));
        }
        let claims = &statement.predicate;
        check_hex("policy_hash", &claims.policy_hash, 32)?;
        check_hex("kernel_config_hash", &claims.kernel_config_hash, 48)?;
        match statement.subject.as_slice() {
            [s] if s.name == SUBJECT_NAME
                && s.digest.len() == 1
                && s.digest.get("sha256") == Some(&claims.policy_hash) => {}
            _ => return Err(ClaimsError::SubjectMismatch),
        }
        Ok(statement)
    }
}

fn check_hex(field: &'static str, value: &str, bytes: usize) -> Result<(), ClaimsError> {
    let ok = value.len() == bytes * 2
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ClaimsError::BadDigest { field, bytes })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_claims() -> Claims {
        Claims {
            attestation_id: "3f1c1f7e-0000-4000-8000-000000000001".into(),
            timestamp: 1_800_000_000,
            policy_hash: "ab".repeat(32),
            zero_retention: true,
            epsilon_limits: EpsilonLimits {
                max_epsilon: 3.0,
                max_delta: 1e-5,
                current_usage: 1.25,
                reset_interval: 86_400,
            },
            version: "1.4.2".into(),
            attestor_version: "0.1.0".into(),
            kernel_config_hash: "cd".repeat(48),
            capability_keys: vec![],
            tenant_isolation: true,
            egress_firewall_enabled: true,
            pii_detection_enabled: true,
            total_requests: 10,
            blocked_requests: 1,
            capability_failures: 0,
            plan_validations: 4,
            uptime_seconds: 99,
        }
    }

    #[test]
    fn statement_round_trips_and_names_policy_kernel() {
        let statement = Statement::new(sample_claims());
        let json = statement.to_json().unwrap();
        let parsed = Statement::from_json(&json).unwrap();
        assert_eq!(parsed, statement);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        assert_eq!(v["predicate"]["epsilon_limits"]["reset_interval"], 86_400);
    }

    #[test]
    fn subject_must_match_policy_hash() {
        let mut statement = Statement::new(sample_claims());
        statement.subject[0]
            .digest
            .insert("sha256".into(), "00".repeat(32));
        assert!(matches!(
            Statement::from_json(&statement.to_json().unwrap()),
            Err(ClaimsError::SubjectMismatch)
        ));
    }

    #[test]
    fn missing_or_unknown_fields_are_refused() {
        let mut v = serde_json::to_value(Statement::new(sample_claims())).unwrap();
        v["predicate"]
            .as_object_mut()
            .unwrap()
            .remove("uptime_seconds");
        assert!(Statement::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v = serde_json::to_value(Statement::new(sample_claims())).unwrap();
        v["predicate"]["surprise"] = true.into();
        assert!(Statement::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(Statement::from_json(b"\xff\x00garbage").is_err());
    }
}
