//! The ledger's storage interface: an append-only sequence of log entries with the
//! indexes audit queries need, enrolled agents with their last-seen state, and signed
//! checkpoints. `embedded` is the default (SQLite); `postgres` lets several ledger
//! replicas share one PostgreSQL-compatible database.
//!
//! Contract every implementation keeps: `append` returns only once the batch is durable
//! (fsynced), indexes are dense from 0 in append order, and an entry is never changed or
//! removed. A store shared by several processes also arbitrates who appends: only the
//! holder of its sequencer lease ([`LedgerStore::claim_sequencer`]), re-checked inside
//! every append.

pub mod embedded;
pub mod postgres;
pub mod postgres_tls;

use std::time::Duration;

pub use attestor_verify::api::Verdict;
pub use attestor_verify::api::{ActionOutcome, AlertKind, Incident, IncidentChange, IncidentState};
use thiserror::Error;

use attestor_net::tls::AgentIdentity;

/// Why the store could not serve a request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// PostgreSQL failures (and the store's own explanations). A message rather than the
    /// `tokio_postgres::Error`: the driver's Display omits the server's message and the
    /// transport cause chain, so `store::postgres::pg` spells them out here.
    #[error("database error: {0}")]
    Database(String),
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A number asked for (a filter, an index) beyond what SQL integers hold: the
    /// caller's mistake, not the store's.
    #[error("{0} is beyond the largest storable number ({max})", max = i64::MAX)]
    OutOfRange(u64),
    #[error("entries must be appended in time order: {received_at_ms} ms after {last_ms} ms")]
    TimeOrder { received_at_ms: u64, last_ms: u64 },
    #[error("unknown agent {agent_id:?} of tenant {tenant:?}")]
    UnknownAgent { tenant: String, agent_id: String },
    #[error("this replica does not hold the sequencer lease: it serves reads only")]
    NotSequencer,
    #[error("checkpoint key transition {0} is already recorded (another replica rotated)")]
    KeyTransitionExists(u64),
    #[error("no incident {id} of tenant {tenant:?}")]
    UnknownIncident { tenant: String, id: u64 },
    #[error("incident {id} is {}: it cannot be {wanted}", state.name())]
    IncidentState {
        id: u64,
        state: IncidentState,
        wanted: &'static str,
    },
    #[error("store schema version {found} is not the supported {expected}")]
    SchemaVersion {
        found: String,
        expected: &'static str,
    },
}

/// Agent state that changes with each accepted attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedState {
    pub zero_retention: bool,
    /// TPM clock of the quote: (reset count, restart count, clock ms).
    pub tpm_clock: Option<(u32, u32, u64)>,
}

/// An entry to append; the ledger has assigned its time and built its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Ledger time (Unix ms), non-decreasing in append order.
    pub received_at_ms: u64,
    pub tenant: String,
    pub agent_id: String,
    pub verdict: Verdict,
    pub attestation_id: Option<String>,
    /// The leaf bytes (canonical CBOR of the log record).
    pub leaf: Vec<u8>,
    /// RFC 9162 leaf hash of `leaf`.
    pub leaf_hash: [u8; 32],
    /// For an accepted entry of an enrolled agent: its new last-accepted state.
    pub accepted_state: Option<AcceptedState>,
    /// SHA-256 of the submitted bytes, for an entry that keeps them: a re-sent submission
    /// is found by it and answered with its original receipt.
    pub submission_hash: Option<[u8; 32]>,
}

/// An appended entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub entry: NewEntry,
}

/// Filters of an audit query; all present filters must hold. Results ascend by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryQuery {
    /// Mandatory scope for tenant users; `None` only for operators.
    pub tenant: Option<String>,
    pub agent_id: Option<String>,
    pub attestation_id: Option<String>,
    pub verdict: Option<Verdict>,
    /// Inclusive lower bound on `received_at_ms`.
    pub from_ms: Option<u64>,
    /// Exclusive upper bound on `received_at_ms`.
    pub to_ms: Option<u64>,
    /// Pagination cursor: only entries with a larger index.
    pub after_index: Option<u64>,
    /// At most this many entries (capped by [`MAX_PAGE`]).
    pub limit: u32,
}

/// Both SQL backends' query of [`LedgerStore::agent_statuses`].
const AGENT_STATUSES: &str = "SELECT tenant, agent_id, revoked, last_accepted_at_ms FROM agents";

/// Both SQL backends' query of [`LedgerStore::latest_entries_of_agents`].
const LATEST_ENTRIES_OF_AGENTS: &str = "SELECT idx, received_at_ms, tenant, agent_id, verdict, \
     attestation_id, leaf, leaf_hash FROM entries WHERE idx IN (SELECT (SELECT x.idx FROM \
     entries x WHERE x.tenant = a.tenant AND x.agent_id = a.agent_id AND x.verdict <> 'late' \
     ORDER BY x.idx DESC LIMIT 1) FROM agents a) ORDER BY idx";

/// Both SQL backends' choice of the newest checkpoint with a quorum of cosignatures.
const COSIGNED: &str = "WHERE size = (SELECT size FROM cosignatures GROUP BY size \
     HAVING count(*) >= $1 ORDER BY size DESC LIMIT 1)";

/// Largest page a query returns.
pub const MAX_PAGE: u32 = 1000;

/// An enrolled agent's state, as the gap monitor, the metrics and the dashboard see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// An accepted attestation within the allowed gap.
    Healthy,
    /// Silent for longer than the allowed gap.
    Stale,
    /// Revoked by an operator.
    Revoked,
}

impl Health {
    /// Every state, for gauges that show zeros too.
    pub const ALL: [Health; 3] = [Health::Healthy, Health::Stale, Health::Revoked];

    /// Stable name in metrics labels and pages.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Stale => "stale",
            Health::Revoked => "revoked",
        }
    }
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub agent_id: String,
    pub tenant: String,
    /// The platform identity the enrollment checked: a TPM's DER EK certificate, or an
    /// SEV-SNP guest's CHIP_ID.
    pub ek_certificate: Vec<u8>,
    /// The pinned key: a TPM's AK (TPMT_PUBLIC, after credential activation), or an
    /// SEV-SNP guest's envelope signing key (SEC1, committed to by its report).
    pub ak_public: Vec<u8>,
    /// The SEV-SNP CHIP_ID pinned besides the AK for an agent enrolled with `tpm+snp`
    /// evidence (a confidential VM with a vTPM): its every submission must carry a report
    /// from this chip.
    pub snp_chip_id: Option<Vec<u8>>,
    /// The EK public area (TPMT_PUBLIC) a TPM agent enrolled with: its key type, and (for
    /// an EK an allow-list vouched for, without certificate) its identity.
    pub ek_public: Option<Vec<u8>>,
    pub enrolled_at_ms: u64,
    pub revoked: bool,
    /// Last entry of any verdict.
    pub last_seen_at_ms: Option<u64>,
    /// Last accepted entry, and the state it established.
    pub last_accepted_at_ms: Option<u64>,
    pub last_accepted: Option<AcceptedState>,
}

impl AgentRecord {
    /// Milliseconds since the last accepted attestation (since enrollment if none).
    pub fn silent_for_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_accepted_at_ms.unwrap_or(self.enrolled_at_ms))
    }

    /// Revoked, stale (silent for longer than `max_gap`) or healthy, at `now_ms`.
    pub fn health(&self, now_ms: u64, max_gap: std::time::Duration) -> Health {
        let max_gap_ms = attestor_verify::time::duration_ms(max_gap);
        match (self.revoked, self.silent_for_ms(now_ms) > max_gap_ms) {
            (true, _) => Health::Revoked,
            (false, true) => Health::Stale,
            (false, false) => Health::Healthy,
        }
    }

    /// A newly enrolled agent with its platform identity and pinned key.
    pub fn enrolled(
        who: &AgentIdentity,
        platform_identity: Vec<u8>,
        pinned_key: Vec<u8>,
        now_ms: u64,
    ) -> AgentRecord {
        AgentRecord {
            agent_id: who.agent_id.clone(),
            tenant: who.tenant.clone(),
            ek_certificate: platform_identity,
            ak_public: pinned_key,
            snp_chip_id: None,
            ek_public: None,
            enrolled_at_ms: now_ms,
            revoked: false,
            last_seen_at_ms: None,
            last_accepted_at_ms: None,
            last_accepted: None,
        }
    }
}

/// What the enforcement point reads of every agent each second: no keys, no certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub tenant: String,
    pub agent_id: String,
    pub revoked: bool,
    pub last_accepted_at_ms: Option<u64>,
}

impl From<&AgentRecord> for AgentStatus {
    fn from(agent: &AgentRecord) -> Self {
        AgentStatus {
            tenant: agent.tenant.clone(),
            agent_id: agent.agent_id.clone(),
            revoked: agent.revoked,
            last_accepted_at_ms: agent.last_accepted_at_ms,
        }
    }
}

/// A signed checkpoint as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    /// The signed note text.
    pub note: String,
    pub created_at_ms: u64,
}

/// An incident to raise: a kind of trouble with one agent, and the log entry showing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    pub tenant: String,
    pub agent_id: String,
    pub kind: AlertKind,
    pub summary: String,
    pub at_ms: u64,
    /// The entry that showed it (none for a gap, shown by an absence).
    pub index: Option<u64>,
}

/// Which incidents a listing returns, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentStates {
    /// Exactly this state.
    Only(IncidentState),
    /// Open or acknowledged.
    Unresolved,
}

impl IncidentStates {
    /// `open`, `acknowledged`, `resolved` or `unresolved`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unresolved" => Some(IncidentStates::Unresolved),
            other => IncidentState::parse(other).map(IncidentStates::Only),
        }
    }
}

/// Filters of an incident listing; all present filters must hold. Results ascend by id:
/// the latest `limit` that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentQuery {
    /// Mandatory scope for callers; `None` only for the ledger itself.
    pub tenant: Option<String>,
    pub states: Option<IncidentStates>,
    /// Only incidents not resolved before this time (Unix ms): those that were unresolved
    /// at some moment since.
    pub since_ms: Option<u64>,
    pub limit: u32,
}

/// The columns of an incident row, in the order both SQL backends select them.
const INCIDENT_COLUMNS: &str = "id, tenant, agent_id, kind, summary, opened_at_ms, \
     first_index, last_index, state, acknowledged_by, acknowledged_at_ms, acknowledged_reason, \
     resolved_by, resolved_at_ms, resolved_reason, actions";

/// An incident row as both SQL backends read it (`actions` as JSON text).
#[derive(Debug)]
struct IncidentRow {
    id: i64,
    tenant: String,
    agent_id: String,
    kind: String,
    summary: String,
    opened_at_ms: i64,
    first_index: Option<i64>,
    last_index: Option<i64>,
    state: String,
    acknowledged: (Option<String>, Option<i64>, Option<String>),
    resolved: (Option<String>, Option<i64>, Option<String>),
    actions: String,
}

fn incident_change(
    (by, at, reason): (Option<String>, Option<i64>, Option<String>),
) -> Result<Option<IncidentChange>, StoreError> {
    Ok(match (by, at, reason) {
        (Some(by), Some(at), Some(reason)) => Some(IncidentChange {
            by,
            at_ms: from_sql(at)?,
            reason,
        }),
        (None, None, None) => None,
        _ => {
            return Err(StoreError::Corrupt(
                "a half-recorded incident change".into(),
            ))
        }
    })
}

/// The stored name of an alert kind, back to the kind.
fn alert_kind(name: &str) -> Result<AlertKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("incident kind {name:?}")))
}

fn incident(row: IncidentRow) -> Result<Incident, StoreError> {
    let state = IncidentState::parse(&row.state)
        .ok_or_else(|| StoreError::Corrupt(format!("incident state {:?}", row.state)))?;
    Ok(Incident {
        id: from_sql(row.id)?,
        kind: alert_kind(&row.kind)?,
        tenant: row.tenant,
        agent_id: row.agent_id,
        summary: row.summary,
        opened_at_ms: from_sql(row.opened_at_ms)?,
        first_index: row.first_index.map(from_sql).transpose()?,
        last_index: row.last_index.map(from_sql).transpose()?,
        state,
        acknowledged: incident_change(row.acknowledged)?,
        resolved: incident_change(row.resolved)?,
        actions: serde_json::from_str(&row.actions)
            .map_err(|e| StoreError::Corrupt(format!("incident {} actions: {e}", row.id)))?,
    })
}

/// SQL ranking a state column (or parameter) in the order an incident moves.
fn state_rank(expr: &str) -> String {
    format!("(CASE {expr} WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END)")
}

fn recorded_state(text: Option<String>) -> Result<Option<IncidentState>, StoreError> {
    text.map(|t| {
        IncidentState::parse(&t)
            .ok_or_else(|| StoreError::Corrupt(format!("recorded incident state {t:?}")))
    })
    .transpose()
}

/// Why acknowledging or resolving `id` changed nothing: it is not the tenant's, or its
/// state does not allow it.
fn unchanged(tenant: &str, id: u64, found: Option<Incident>, wanted: &'static str) -> StoreError {
    match found {
        None => StoreError::UnknownIncident {
            tenant: tenant.to_string(),
            id,
        },
        Some(incident) => StoreError::IncidentState {
            id,
            state: incident.state,
            wanted,
        },
    }
}

/// SQL engines store integers as i64; indexes and times beyond that are refused, not
/// wrapped.
fn to_sql(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(v))
}

fn from_sql(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v}")))
}

/// An entry row as both SQL backends read it: idx, received_at_ms, tenant, agent_id,
/// verdict, attestation_id, leaf, leaf_hash.
type EntryRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Vec<u8>,
    Vec<u8>,
);

/// Checks and converts a stored row; anything out of range is corruption, not a panic.
/// A (received_at_ms, verdict) row of [`LedgerStore::verdict_times`].
fn verdict_time(at: i64, verdict: &str) -> Result<(u64, Verdict), StoreError> {
    let verdict = Verdict::parse(verdict)
        .ok_or_else(|| StoreError::Corrupt(format!("verdict {verdict:?}")))?;
    Ok((from_sql(at)?, verdict))
}

fn stored_entry(row: EntryRow) -> Result<StoredEntry, StoreError> {
    let (idx, at, tenant, agent_id, verdict, attestation_id, leaf, hash) = row;
    Ok(StoredEntry {
        index: from_sql(idx)?,
        entry: NewEntry {
            received_at_ms: from_sql(at)?,
            tenant,
            agent_id,
            verdict: Verdict::parse(&verdict)
                .ok_or_else(|| StoreError::Corrupt(format!("verdict {verdict:?}")))?,
            attestation_id,
            leaf,
            leaf_hash: hash
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("leaf hash of entry {idx}")))?,
            accepted_state: None,
            submission_hash: None,
        },
    })
}

/// Storage for one ledger.
pub trait LedgerStore: Send + Sync {
    /// Appends a batch in one durable transaction; returns the first index.
    fn append(&self, entries: &[NewEntry]) -> Result<u64, StoreError>;
    /// Number of entries (the log size).
    fn len(&self) -> Result<u64, StoreError>;
    /// Whether the log is empty.
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
    /// Time of the last entry, to keep ledger time monotonic across restarts.
    fn last_received_at_ms(&self) -> Result<Option<u64>, StoreError>;
    /// Leaf hashes of entries `[from, to)`, to rebuild the Merkle tree at start-up.
    fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, StoreError>;
    /// One entry by index (none beyond the storable range).
    fn entry(&self, index: u64) -> Result<Option<StoredEntry>, StoreError>;
    /// Entries matching a query, ascending by index.
    fn query(&self, query: &EntryQuery) -> Result<Vec<StoredEntry>, StoreError>;
    /// When each of the agent's entries since `from_ms` was logged, and its verdict,
    /// oldest first: what a heartbeat timeline needs, without the leaves.
    fn verdict_times(
        &self,
        tenant: &str,
        agent_id: &str,
        from_ms: u64,
    ) -> Result<Vec<(u64, Verdict)>, StoreError>;
    /// The agent's most recent accepted entry.
    fn latest_accepted(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<StoredEntry>, StoreError>;
    /// Each enrolled agent's most recent entry that is not `late`, through the
    /// (tenant, agent id, index) index: what the enforcement point starts from without
    /// reading the whole log.
    fn latest_entries_of_agents(&self) -> Result<Vec<StoredEntry>, StoreError>;
    /// The agent's entry that kept exactly the submitted bytes hashing to
    /// `submission_hash`, if any.
    fn find_submission(
        &self,
        tenant: &str,
        agent_id: &str,
        submission_hash: &[u8; 32],
    ) -> Result<Option<StoredEntry>, StoreError>;
    /// Records a signed checkpoint.
    fn put_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;
    /// The largest signed checkpoint.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// The checkpoint of exactly `size`, if one was signed.
    fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// The smallest signed checkpoint of at least `size` entries.
    fn checkpoint_at_least(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// Keeps `witness`'s cosignature line of the checkpoint of `size` (its first only).
    fn put_cosignature(&self, size: u64, witness: &str, line: &str) -> Result<(), StoreError>;
    /// The newest checkpoint that at least `quorum` witnesses cosigned, with their lines.
    fn cosigned_checkpoint(
        &self,
        quorum: usize,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError>;
    /// Records checkpoint key transition number `seq` (from 0); refused if one exists.
    fn put_key_transition(&self, seq: u64, note: &str) -> Result<(), StoreError>;
    /// Every checkpoint key transition, oldest first.
    fn key_transitions(&self) -> Result<Vec<String>, StoreError>;
    /// Enrols (or re-enrols) an agent. Agents are keyed by (tenant, agent id): the same
    /// id in two tenants names two agents.
    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// One agent.
    fn agent(&self, tenant: &str, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;
    /// Agents, of one tenant or all.
    fn agents(&self, tenant: Option<&str>) -> Result<Vec<AgentRecord>, StoreError>;
    /// Every enrolled agent's revocation and last acceptance.
    fn agent_statuses(&self) -> Result<Vec<AgentStatus>, StoreError>;
    /// Revokes an agent: its submissions are refused from now on.
    fn revoke_agent(&self, tenant: &str, agent_id: &str) -> Result<(), StoreError>;

    /// Raises an incident: opens one, unless one of the same (tenant, agent, kind) is
    /// unresolved, which is then extended (its latest evidence and summary). At most one
    /// is unresolved per (tenant, agent, kind), whichever replica raises it. Returns the
    /// incident and whether it is new.
    fn raise_incident(&self, new: &NewIncident) -> Result<(Incident, bool), StoreError>;
    /// One incident of `tenant`.
    fn incident(&self, tenant: &str, id: u64) -> Result<Option<Incident>, StoreError>;
    /// Incidents matching a query, ascending by id.
    fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;
    /// Acknowledges an open incident of `tenant`.
    fn acknowledge_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError>;
    /// Resolves an unresolved incident of `tenant`.
    fn resolve_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError>;
    /// Resolves the agent's unresolved incidents of `kinds`; returns those it resolved.
    fn resolve_incidents_of(
        &self,
        tenant: &str,
        agent_id: &str,
        kinds: &[AlertKind],
        change: &IncidentChange,
    ) -> Result<Vec<Incident>, StoreError>;
    /// Notes that the log holds the change to `state` of an incident (never moving back).
    fn mark_recorded(&self, tenant: &str, id: u64, state: IncidentState) -> Result<(), StoreError>;
    /// Up to `limit` incidents whose latest change is not in the log yet, with the latest
    /// state that is (none: not even the opening).
    fn unrecorded_incidents(
        &self,
        limit: u32,
    ) -> Result<Vec<(Incident, Option<IncidentState>)>, StoreError>;
    /// Adds what an automated action did to an incident.
    fn record_action(
        &self,
        tenant: &str,
        id: u64,
        outcome: &ActionOutcome,
    ) -> Result<(), StoreError>;

    /// Takes or renews this handle's sequencer lease. `Some(term)` while this handle may
    /// append (the term changes whenever the lease changed hands, so a new term means
    /// others may have appended meanwhile); `None` while another holds it. A store with a
    /// single writer (the embedded one) has no lease and always answers `Some(0)`.
    fn claim_sequencer(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(0))
    }
    /// Gives the lease up (at shutdown) so another replica need not wait for it to expire.
    fn release_sequencer(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// How often the lease must be renewed (and a follower retries to take it); `None`
    /// for stores without a lease.
    fn lease_renewal(&self) -> Option<Duration> {
        None
    }
}
