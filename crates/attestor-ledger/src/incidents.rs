//! Durable incidents: every alert is an incident in the store, so it survives restarts and
//! fail-over and any replica answers the same. Only the lease holder raises and resolves
//! (the store's one-unresolved-per-(tenant, agent, kind) index dedupes what a replica
//! raised before it lost the lease), and every state change is also a log entry of
//! [`INCIDENT_RECORDER`], so the trail is as tamper-evident as the attestations. The store
//! notes which change the log holds; one that a crash or a failed append kept out is
//! appended by the lease holder at its next round (at least once, never lost).
//!
//! Security incidents (an invalid attestation, policy drift, a zero-retention change)
//! stay until an operator resolves them; the ledger itself resolves a gap, a posture or
//! its own outage once the agent is healthy again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use crate::log::batcher::{BatchError, Batcher};
use crate::log::sequencer::{Sequencer, Submission};
use crate::store::{
    AlertKind, Incident, IncidentChange, IncidentQuery, IncidentState, IncidentStates, LedgerStore,
    NewIncident, StoreError, Verdict, MAX_PAGE,
};
use attestor_verify::record::{
    IncidentRecord, LogRecord, INCIDENT_RECORDER, POLICY_RECORDER, RECORD_VERSION,
};

/// Why an incident could not be raised, changed or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IncidentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change is in the store, but its log entry could not be appended.
    #[error("the incident changed, but its log entry was not appended: {0}")]
    Journal(#[from] BatchError),
    #[error("internal failure: a worker task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error(
        "this replica does not hold the sequencer lease: only the lease holder changes incidents"
    )]
    NotSequencer,
}

/// Whether the ledger resolves incidents of `kind` by itself once the agent is healthy
/// again; the others are security incidents only an operator resolves.
pub fn resolved_by_ledger(kind: AlertKind) -> bool {
    match kind {
        AlertKind::MissingHeartbeat
        | AlertKind::PostureContraindicated
        | AlertKind::PostureWarning
        | AlertKind::LedgerOutage => true,
        AlertKind::InvalidAttestation | AlertKind::PolicyDrift | AlertKind::ZeroRetentionChange => {
            false
        }
    }
}

/// An unresolved incident's key.
type Key = (String, String, AlertKind);

/// What this lease holder knows of the unresolved incidents.
enum Known {
    /// Nothing yet: read the store first.
    Unknown,
    /// Every unresolved incident's key, as of the lease term it was read in: while it
    /// holds the lease nobody else changes incidents.
    Keys { term: u64, keys: BTreeSet<Key> },
    /// More than it keeps: the store is asked every time (until the next refresh).
    TooMany,
}

/// The store's incidents as the lease holder changes them.
pub struct IncidentBook {
    store: Arc<dyn LedgerStore>,
    sequencer: Arc<Sequencer>,
    batcher: Batcher,
    /// Spares every healthy submission a store round trip when its agent has nothing to
    /// resolve; dropped when the lease term changes, and at each refresh.
    known: Mutex<Known>,
    /// Held from a change in the store until its log entry is appended, and while
    /// [`IncidentBook::record_missing`] catches up: that never sees a change whose entry
    /// is still on its way, so it never appends it a second time.
    changing: tokio::sync::Mutex<()>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, IncidentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(IncidentError::Task)?
        .map_err(IncidentError::Store)
}

impl IncidentBook {
    pub fn new(store: Arc<dyn LedgerStore>, sequencer: Arc<Sequencer>, batcher: Batcher) -> Self {
        IncidentBook {
            store,
            sequencer,
            batcher,
            known: Mutex::new(Known::Unknown),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// The store the incidents are kept in.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this replica raises and resolves (it holds the lease).
    pub fn leading(&self) -> bool {
        self.sequencer.is_sequencer()
    }

    /// Drops what this replica knows of unresolved incidents: read again on next use.
    pub fn forget(&self) {
        *self.known() = Known::Unknown;
    }

    /// Whether `key` is unresolved, for the lease holder of `term`: `None` when only the
    /// store can say.
    async fn is_unresolved(&self, term: u64, key: &Key) -> Result<Option<bool>, IncidentError> {
        let stale = match &*self.known() {
            Known::Keys { term: read_in, .. } => *read_in != term,
            Known::Unknown => true,
            Known::TooMany => false,
        };
        if stale {
            let store = self.store.clone();
            let page = blocking(move || store.incidents(&unresolved_query(None))).await?;
            *self.known() = if page.len() >= MAX_PAGE as usize {
                Known::TooMany
            } else {
                Known::Keys {
                    term,
                    keys: page
                        .into_iter()
                        .map(|i| (i.tenant, i.agent_id, i.kind))
                        .collect(),
                }
            };
        }
        Ok(match &*self.known() {
            Known::Keys {
                term: read_in,
                keys,
            } if *read_in == term => Some(keys.contains(key)),
            _ => None,
        })
    }

    fn remember(&self, key: Key, unresolved: bool) {
        if let Known::Keys { keys, .. } = &mut *self.known() {
            if unresolved {
                keys.insert(key);
            } else {
                keys.remove(&key);
            }
        }
    }

    /// Raises an incident (lease holder only): returns it if it is new, after recording
    /// its opening in the log (or deferring that). An unresolved one of the same key is
    /// extended instead (a gap, which has no evidence to add, is left as it is).
    pub async fn raise(&self, new: NewIncident) -> Result<Option<Incident>, IncidentError> {
        let Some(term) = self.sequencer.term() else {
            return Ok(None);
        };
        let key = (new.tenant.clone(), new.agent_id.clone(), new.kind);
        if new.index.is_none() && self.is_unresolved(term, &key).await? == Some(true) {
            return Ok(None);
        }
        let _one_at_a_time = self.changing.lock().await;
        let store = self.store.clone();
        let (incident, opened) = blocking(move || store.raise_incident(&new)).await?;
        self.remember(key, true);
        if !opened {
            return Ok(None);
        }
        crate::failpoint::crash_point("incident-raised");
        self.journal_or_defer(IncidentState::Open, &incident).await;
        Ok(Some(incident))
    }

    /// Resolves, as the ledger, the agent's unresolved incidents of those `kinds` the
    /// ledger resolves (lease holder only); returns them.
    pub async fn resolve_kinds(
        &self,
        tenant: &str,
        agent_id: &str,
        kinds: &[AlertKind],
        reason: &str,
    ) -> Result<Vec<Incident>, IncidentError> {
        let Some(term) = self.sequencer.term() else {
            return Ok(Vec::new());
        };
        let mut open = Vec::new();
        for kind in kinds.iter().copied().filter(|k| resolved_by_ledger(*k)) {
            let key = (tenant.to_string(), agent_id.to_string(), kind);
            if self.is_unresolved(term, &key).await? != Some(false) {
                open.push(kind);
            }
        }
        let kinds = open;
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let change = IncidentChange {
            by: POLICY_RECORDER.to_string(),
            at_ms: attestor_verify::time::now_ms(),
            reason: reason.to_string(),
        };
        let _one_at_a_time = self.changing.lock().await;
        let (store, t, a, k) = (
            self.store.clone(),
            tenant.to_string(),
            agent_id.to_string(),
            kinds.clone(),
        );
        let resolved = blocking(move || store.resolve_incidents_of(&t, &a, &k, &change)).await?;
        for kind in kinds {
            self.remember((tenant.to_string(), agent_id.to_string(), kind), false);
        }
        for incident in &resolved {
            self.journal_or_defer(IncidentState::Resolved, incident)
                .await;
        }
        Ok(resolved)
    }

    /// The agents with an unresolved incident of `kind`, as (tenant, agent id).
    pub async fn agents_with(
        &self,
        kind: AlertKind,
    ) -> Result<Vec<(String, String)>, IncidentError> {
        let store = self.store.clone();
        let found = blocking(move || store.incidents(&unresolved_query(None))).await?;
        Ok(found
            .into_iter()
            .filter(|i| i.kind == kind)
            .map(|i| (i.tenant, i.agent_id))
            .collect())
    }

    /// An operator acknowledges an open incident of its tenant.
    pub async fn acknowledge(
        &self,
        tenant: &str,
        id: u64,
        change: IncidentChange,
    ) -> Result<Incident, IncidentError> {
        if !self.leading() {
            return Err(IncidentError::NotSequencer);
        }
        let _one_at_a_time = self.changing.lock().await;
        let (store, t) = (self.store.clone(), tenant.to_string());
        let incident = blocking(move || store.acknowledge_incident(&t, id, &change)).await?;
        self.journal_or_defer(IncidentState::Acknowledged, &incident)
            .await;
        Ok(incident)
    }

    /// An operator resolves an unresolved incident of its tenant.
    pub async fn resolve(
        &self,
        tenant: &str,
        id: u64,
        change: IncidentChange,
    ) -> Result<Incident, IncidentError> {
        if !self.leading() {
            return Err(IncidentError::NotSequencer);
        }
        let _one_at_a_time = self.changing.lock().await;
        let (store, t) = (self.store.clone(), tenant.to_string());
        let incident = blocking(move || store.resolve_incident(&t, id, &change)).await?;
        self.remember(
            (
                incident.tenant.clone(),
                incident.agent_id.clone(),
                incident.kind,
            ),
            false,
        );
        self.journal_or_defer(IncidentState::Resolved, &incident)
            .await;
        Ok(incident)
    }

    /// Unresolved incidents, of one tenant or all, read from the store (blocking).
    pub fn unresolved(&self, tenant: Option<&str>) -> Result<Vec<Incident>, StoreError> {
        self.store.incidents(&unresolved_query(tenant))
    }

    /// Appends a change that is already in the store to the log; if that fails, it is
    /// appended by [`IncidentBook::record_missing`] later (by whichever replica then holds
    /// the lease), so the change stands either way.
    async fn journal_or_defer(&self, to: IncidentState, incident: &Incident) {
        if let Err(e) = self.journal(to, incident).await {
            attestor_net::limited_event!(
                tracing::Level::WARN,
                "incident-record-deferred",
                incident = incident.id,
                change = change_name(to),
                error = %e,
            );
        }
    }

    /// Appends an incident's change to `to` to the log, then notes it in the store.
    async fn journal(&self, to: IncidentState, incident: &Incident) -> Result<(), IncidentError> {
        let change = change_name(to);
        let by = match to {
            IncidentState::Acknowledged => incident.acknowledged.as_ref(),
            IncidentState::Resolved => incident.resolved.as_ref(),
            IncidentState::Open => None,
        };
        let detail = match by {
            Some(by) => format!(
                "incident {} ({} of agent {}) {change} by {}: {}",
                incident.id,
                incident.kind.name(),
                incident.agent_id,
                by.by,
                by.reason
            ),
            None => format!(
                "incident {} ({} of agent {}) {change}: {}",
                incident.id,
                incident.kind.name(),
                incident.agent_id,
                incident.summary
            ),
        };
        let record = IncidentRecord {
            change: change.to_string(),
            incident: incident.clone(),
        };
        let submission = Submission {
            record: LogRecord {
                version: RECORD_VERSION,
                received_at_ms: 0,
                tenant: incident.tenant.clone(),
                agent_id: INCIDENT_RECORDER.to_string(),
                verdict: Verdict::Accepted,
                reason: None,
                detail: Some(detail),
                attestation_id: None,
                policy_hash: None,
                // A struct of fixed field order: the same change gives the same bytes.
                submission: serde_json::to_vec(&record).unwrap_or_default(),
                discarded: None,
                ear: None,
                appraisal_policy: None,
            },
            accepted_state: None,
        };
        self.batcher.submit(submission).await?;
        let (store, tenant, id) = (self.store.clone(), incident.tenant.clone(), incident.id);
        blocking(move || store.mark_recorded(&tenant, id, to)).await
    }

    /// Appends the changes a crash (or a failed append) kept out of the log, oldest
    /// first (lease holder only). A change appended whose note was lost is appended
    /// again: the log may hold a change twice, never miss one. Returns how many.
    pub async fn record_missing(&self) -> Result<usize, IncidentError> {
        if !self.leading() {
            return Ok(0);
        }
        let _one_at_a_time = self.changing.lock().await;
        let store = self.store.clone();
        let behind = blocking(move || store.unrecorded_incidents(MISSING_PER_ROUND)).await?;
        let mut appended = 0;
        for (incident, recorded) in behind {
            let changes = [
                Some(IncidentState::Open),
                incident
                    .acknowledged
                    .as_ref()
                    .map(|_| IncidentState::Acknowledged),
                incident.resolved.as_ref().map(|_| IncidentState::Resolved),
            ];
            for to in changes.into_iter().flatten() {
                if recorded.is_none_or(|r| rank(to) > rank(r)) {
                    self.journal(to, &incident).await?;
                    appended += 1;
                }
            }
        }
        Ok(appended)
    }
}

/// Incidents brought up to date in the log per round.
const MISSING_PER_ROUND: u32 = 100;

/// The name of the change to `state`.
fn change_name(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Open => "opened",
        IncidentState::Acknowledged => "acknowledged",
        IncidentState::Resolved => "resolved",
    }
}

fn rank(state: IncidentState) -> u8 {
    match state {
        IncidentState::Open => 0,
        IncidentState::Acknowledged => 1,
        IncidentState::Resolved => 2,
    }
}

fn unresolved_query(tenant: Option<&str>) -> IncidentQuery {
    IncidentQuery {
        tenant: tenant.map(str::to_string),
        states: Some(IncidentStates::Unresolved),
        since_ms: None,
        limit: MAX_PAGE,
    }
}
