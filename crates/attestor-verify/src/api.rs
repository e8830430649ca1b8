//! Messages between agent and ledger (JSON over mTLS). The agent's identity (agent id,
//! tenant) comes from its client certificate, never from a message.

use serde::{Deserialize, Serialize};

use crate::encoding::{b64, b64_list};
use crate::evidence::tpm::keys::SigningAlgorithm;

/// First enrollment step: the agent shows its TPM's EK and its AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// EK certificate (DER) first, then intermediates.
    #[serde(with = "b64_list")]
    pub ek_certificates: Vec<Vec<u8>>,
    /// EK public area (marshalled TPMT_PUBLIC): the key the credential is encrypted to.
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// AK public area (marshalled TPMT_PUBLIC) to be pinned.
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
}

/// The ledger's credential challenge: only the TPM holding both the EK and the AK can
/// recover the secret (TPM2_ActivateCredential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollChallenge {
    /// TPM2B_ID_OBJECT contents.
    #[serde(with = "b64")]
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents.
    #[serde(with = "b64")]
    pub encrypted_secret: Vec<u8>,
}

/// Second enrollment step: the secret the TPM recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollProof {
    /// The secret TPM2_ActivateCredential recovered from the challenge; the ledger compares
    /// it with its own in constant time.
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
}

/// A single-use nonce for the agent's next attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceResponse {
    /// Opaque bytes the next bundle's evidence must commit to; valid once, for a limited
    /// time, and only for the agent it was issued to.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
}

/// The agent's next single-use nonce, handed out with the answer to an accepted
/// submission when the agent asked for it (`POST /v1/attestations?next_nonce=true`), so a
/// steady-state heartbeat is one request. It is a nonce like one from `POST /v1/nonce`:
/// valid once, for a limited time, only for this agent; across a ledger restart or
/// fail-over it counts exactly as such a nonce does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextNonce {
    /// Opaque bytes the next bundle's evidence must commit to.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// How long after this answer the ledger still counts the nonce as its own
    /// (`nonce_ttl_seconds`), relative so that the agent's clock need not agree with the
    /// ledger's.
    pub valid_for_ms: u64,
}

/// The agent the ledger enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolledResponse {
    /// The agent's id, from its client certificate.
    pub agent_id: String,
    /// The agent's tenant, from its client certificate.
    pub tenant: String,
    /// When the ledger enrolled it (Unix ms).
    pub enrolled_at_ms: u64,
    /// A TPM's AK certificate (DER) from the ledger's enrollment CA
    /// ([`crate::evidence::tpm::akcert`]), for the agent to carry in its bundles; absent
    /// for an SEV-SNP guest.
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub ak_certificate: Vec<u8>,
    /// For a TPM agent: what the ledger recorded of its keys (absent for SEV-SNP alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<EnrolledTpm>,
}

/// What the ledger recorded of an enrolled agent's TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolledTpm {
    /// The pinned AK's signing algorithm, e.g. `ecdsa-p256`.
    pub ak_algorithm: SigningAlgorithm,
    /// The EK's key type and size, e.g. `rsa-2048`, `ecc-p256`.
    pub ek_key: String,
    /// SHA-256 of the EK's DER SubjectPublicKeyInfo (hex), as EK allow-lists name it.
    pub ek_public_key_sha256: String,
    /// What vouched for the EK: `certificate` (a chain to the profile's EK CAs) or
    /// `allowlist` (its hash on the profile's EK allow-list).
    pub ek_trusted_by: String,
}

/// Proof that an entry is in the log: an inclusion proof up to a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    /// The entry's leaf index in the log (0-based).
    pub index: u64,
    /// Ledger time the submission was logged at (Unix ms), as the leaf records it.
    pub received_at_ms: u64,
    /// RFC 9162 leaf hash (SHA-256, 32 bytes) the proof starts from. The receipt does not
    /// show what the leaf holds: fetch the entry to check that.
    #[serde(with = "b64")]
    pub leaf_hash: Vec<u8>,
    /// Audit path in the tree of the checkpoint's size.
    #[serde(with = "b64_list")]
    pub inclusion_proof: Vec<Vec<u8>>,
    /// C2SP tlog-checkpoint signed note.
    pub checkpoint: String,
}

/// The ledger's answer to a submission. Refused submissions are logged too, so both
/// verdicts carry a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitResponse {
    /// Whether every check held.
    pub verdict: Verdict,
    /// Stable kebab-case refusal reason: the failed [`crate::checks::Check`]'s name or a
    /// ledger reason such as `nonce`; absent when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The refusal in words, for people; absent when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// From the verified claims (absent when the submission never got that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_id: Option<String>,
    /// The ledger's judgement as a signed EAR (the one the log entry keeps); its key is
    /// at `/v1/ear/jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ear: Option<String>,
    /// Where the submission, accepted or refused, is in the log.
    pub receipt: ReceiptJson,
    /// The agent's next nonce: only with an accepted verdict, only when the submission
    /// asked for it (so agents that predate it never see the field), and only while the
    /// ledger hands out nonces at all (not while its appends fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_nonce: Option<NextNonce>,
}

/// One log entry as returned by queries; `leaf` is the exact leaf (canonical CBOR of the
/// [`crate::record::LogRecord`]), so the proof can be checked against it. The other fields
/// are unsigned copies of the leaf's; [`crate::audit::verify_entry`] checks they match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    /// The entry's leaf index in the log (0-based).
    pub index: u64,
    /// Ledger time it was logged at (Unix ms).
    pub received_at_ms: u64,
    /// The submitter's tenant, from its client certificate.
    pub tenant: String,
    /// The submitter's agent id, from its client certificate.
    pub agent_id: String,
    /// The ledger's verdict.
    pub verdict: Verdict,
    /// Stable kebab-case refusal reason (e.g. `quote-binding`); absent when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The refusal in words, for people; absent when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// From the verified claims (absent when the submission never got that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_id: Option<String>,
    /// The verified claims' `policy_hash` (lowercase hex), like `attestation_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The ledger's judgement as a signed EAR (compact JWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ear: Option<String>,
    /// For an entry recording an appraisal policy: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal_policy: Option<String>,
    /// The leaf bytes: what the proof covers and what the fields above must agree with.
    #[serde(with = "b64")]
    pub leaf: Vec<u8>,
    /// Inclusion proof, when the query asked for proofs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<InclusionJson>,
}

/// An inclusion proof against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionJson {
    /// RFC 9162 audit path: SHA-256 node hashes (32 bytes each), from the leaf up.
    #[serde(with = "b64_list")]
    pub hashes: Vec<Vec<u8>>,
    /// Signed note of the tree the proof is for.
    pub checkpoint: String,
}

/// A page of entries; pass `next_after` as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesResponse {
    /// Entries of the caller's tenant; a query returns them in log order.
    pub entries: Vec<EntryJson>,
    /// Index of the page's last entry when the page is full (more may follow); absent on
    /// the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// An enrolled agent and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatusJson {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's tenant.
    pub tenant: String,
    /// When it enrolled (Unix ms).
    pub enrolled_at_ms: u64,
    /// Revoked: its submissions are refused (and still logged).
    pub revoked: bool,
    /// When the ledger last logged a submission of it, accepted or refused (Unix ms).
    pub last_seen_at_ms: Option<u64>,
    /// When its latest accepted attestation was logged (Unix ms).
    pub last_accepted_at_ms: Option<u64>,
    /// The `zero_retention` claim of its latest accepted attestation.
    pub zero_retention: Option<bool>,
    /// Silent for longer than the ledger's allowed gap.
    pub stale: bool,
}

/// Agents of the caller's tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsResponse {
    /// Every agent enrolled in the tenant, revoked ones included.
    pub agents: Vec<AgentStatusJson>,
}

/// RFC 9162 consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyResponse {
    /// Size of the earlier tree.
    pub old_size: u64,
    /// Size of the later tree, which must extend the earlier one.
    pub new_size: u64,
    /// SHA-256 node hashes (32 bytes each), in RFC 9162 §2.1.4 order.
    #[serde(with = "b64_list")]
    pub proof: Vec<Vec<u8>>,
}

/// The log's checkpoint keys: the current verifier key and the transitions (signed
/// notes, oldest first) leading to it from the first key, for auditors who pinned an
/// older key (`GET /v1/log/keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogKeysResponse {
    /// The verifier key signing checkpoints now (C2SP `<name>+<key ID>+<base64>`).
    pub current: String,
    /// Key transition notes, oldest first, each signed by its old and its new key
    /// ([`crate::log::keys::KeyHistory::follow`] checks them).
    pub transitions: Vec<String>,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable kebab-case code.
    pub error: String,
    /// What went wrong, for people; not stable.
    pub message: String,
}

/// The caller's tenant and what it expects of its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantResponse {
    /// The caller's tenant, from its client certificate.
    pub tenant: String,
    /// The policy hash (hex) every agent of the tenant must attest.
    pub policy_hash: String,
    /// Every policy hash approved now: `policy_hash` and those the tenant's appraisal
    /// policy approves until a deadline (a canary rollout).
    #[serde(default)]
    pub approved_policy_hashes: Vec<String>,
    /// The id of the appraisal policy that judges the tenant's attestations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal_policy: Option<String>,
}

/// Open alerts of the caller's tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsResponse {
    /// The alerts not yet resolved (no `ends_at_ms`).
    pub alerts: Vec<Alert>,
}

/// Outcome of verifying a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check held.
    Accepted,
    /// A check failed (the reason says which), or the submission was not a bundle.
    Refused,
    /// Genuine in every respect but freshness: a spooled attestation delivered after the
    /// freshness window because the ledger was unreachable, whose nonce this log issued or
    /// whose TPM clock orders it after the agent's last accepted quote. It proves the past,
    /// not the present: it never counts as a heartbeat and raises no alert.
    Late,
}

impl Verdict {
    /// Stable name stored and shown in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Refused => "refused",
            Verdict::Late => "late",
        }
    }

    /// The verdict of a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Verdict::Accepted),
            "refused" => Some(Verdict::Refused),
            "late" => Some(Verdict::Late),
            _ => None,
        }
    }
}

/// What went wrong with an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// No accepted attestation for longer than the allowed gap.
    MissingHeartbeat,
    /// A submission was refused.
    InvalidAttestation,
    /// A submission attested another policy than the tenant's.
    PolicyDrift,
    /// The zero-retention flag changed between attestations.
    ZeroRetentionChange,
    /// An accepted attestation's posture broke a rule whose tier is contraindicated.
    PostureContraindicated,
    /// An accepted attestation's posture broke a rule whose tier is warning.
    PostureWarning,
    /// The ledger itself was down for longer than the allowed gap: one incident per
    /// tenant (agent `@ledger`) instead of a gap for each of its agents.
    LedgerOutage,
}

impl AlertKind {
    /// Stable kebab-case name, used in labels and configs.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::MissingHeartbeat => "missing-heartbeat",
            AlertKind::InvalidAttestation => "invalid-attestation",
            AlertKind::PolicyDrift => "policy-drift",
            AlertKind::ZeroRetentionChange => "zero-retention-change",
            AlertKind::PostureContraindicated => "posture-contraindicated",
            AlertKind::PostureWarning => "posture-warning",
            AlertKind::LedgerOutage => "ledger-outage",
        }
    }
}

/// One alert, open or resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The agent's tenant.
    pub tenant: String,
    /// The agent.
    pub agent_id: String,
    /// What happened, for people.
    pub summary: String,
    /// When it opened (Unix ms).
    pub starts_at_ms: u64,
    /// When it resolved (Unix ms), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<u64>,
}

/// Where an incident stands. Only an operator resolves a security incident (an invalid
/// attestation, policy drift, a zero-retention change); the ledger itself resolves a gap or
/// a posture once the agent is healthy again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentState {
    /// Raised, nobody has taken it yet.
    Open,
    /// An operator took it; still unresolved.
    Acknowledged,
    /// Closed, with who closed it and why.
    Resolved,
}

impl IncidentState {
    /// Stable name stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    /// The state of a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(IncidentState::Open),
            "acknowledged" => Some(IncidentState::Acknowledged),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }
}

/// Who changed an incident's state, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentChange {
    /// The operator's identity URI, or `@ledger` for the ledger itself.
    pub by: String,
    /// When (Unix ms).
    pub at_ms: u64,
    /// Why, in the operator's words.
    pub reason: String,
}

/// When an action ran: as its incident opened, or as it resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionPhase {
    /// The incident opened.
    Fire,
    /// The incident resolved.
    Resolve,
}

/// What one automated action (a command or a webhook) did for an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionOutcome {
    /// The configured hook, e.g. `on_drift`.
    pub hook: String,
    /// When it ran.
    pub phase: ActionPhase,
    /// The command line or webhook URL.
    pub action: String,
    /// Whether an attempt succeeded (exit 0, or a 2xx answer).
    pub ok: bool,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// The last attempt's failure, if none succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the last attempt ended (Unix ms).
    pub at_ms: u64,
}

/// An alert kept durably: what happened to which agent, the log entries that show it, and
/// what people and actions did about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The ledger's number for it, unique across replicas.
    pub id: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// The agent's tenant.
    pub tenant: String,
    /// The agent.
    pub agent_id: String,
    /// What happened, for people.
    pub summary: String,
    /// When it opened (Unix ms).
    pub opened_at_ms: u64,
    /// The log index of the first and latest entry that showed it (none for a gap, which
    /// is shown by an absence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_index: Option<u64>,
    /// See `first_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_index: Option<u64>,
    /// Where it stands.
    pub state: IncidentState,
    /// Who acknowledged it, if anyone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<IncidentChange>,
    /// Who resolved it, if it is resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<IncidentChange>,
    /// What the automated actions did, in the order they ended.
    #[serde(default)]
    pub actions: Vec<ActionOutcome>,
}

/// Incidents of the caller's tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsResponse {
    /// Ascending by id.
    pub incidents: Vec<Incident>,
}

/// An operator's acknowledgement or resolution of an incident
/// (`POST /v1/incidents/<id>/ack` or `/resolve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentChangeRequest {
    /// Why, in the operator's words (1..=1024 bytes).
    pub reason: String,
}

/// Marks a nonce the agent made itself because the ledger was unreachable. Such a
/// spooled attestation proves no freshness beyond its own timestamp: the ledger accepts it
/// only within the freshness window and only if its TPM clock is past the agent's last
/// accepted quote, which is what refuses its replay.
pub const OFFLINE_NONCE_PREFIX: &[u8] = b"attestor-offline:";
