//! The ledger as a service, independent of transport: enrollment, nonces, submissions
//! (verify → append → receipt) and tenant-scoped audit queries. The caller's identity
//! always comes from its client certificate ([`AgentIdentity`]), never from a request body.
//!
//! Submissions of one agent are serialised: its continuity checks (zero-retention, TPM
//! clock) read the state its previous accepted entry left, so that entry must be durably
//! appended before the next one is judged. Different agents proceed in parallel and share
//! group commits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

use attestor_verify::fs::{write_atomically, WriteError};
use thiserror::Error;

use crate::alerts::{AlertKind, Alerter};
use crate::appraise::{AppraiseError, Appraiser, TenantAppraisal};
use crate::config::{LedgerConfig, Storage};
use crate::enroll::{EnrollError, Enrollment};
use crate::enrollment_ca::{EnrollmentCa, EnrollmentCaError};
use crate::incidents::{IncidentBook, IncidentError};
use crate::keyfiles::{self, KeyFileError};
use crate::limits::{RateLimiter, WriteLimit};
use crate::log::batcher::{BatchError, Batcher, DEFAULT_MAX_BATCH};
use crate::log::sequencer::{submission_hash, Receipt, Sequencer, SequencerError, Submission};
use crate::metrics::{LedgerMetrics, NonceVia};
use crate::store::embedded::EmbeddedStore;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::{
    AgentRecord, EntryQuery, Health, Incident, IncidentChange, IncidentQuery, IncidentStates,
    LedgerStore, StoreError, StoredEntry, Verdict, MAX_PAGE,
};
use crate::submission::{
    accepted_state, judge_submission, verify_drift_submission, NonceBook, PresentedNonce, Refusal,
    TenantPolicy, Timeliness, VOUCH_WINDOW,
};
use attestor_net::tls::AgentIdentity;
use attestor_verify::api::{
    AgentStatusJson, AgentsResponse, AlertsResponse, ConsistencyResponse, EnrollChallenge,
    EnrollProof, EnrollRequest, EnrolledResponse, EntriesResponse, EntryJson, IncidentsResponse,
    InclusionJson, NextNonce, NonceResponse, ReceiptJson, SubmitResponse, TenantResponse,
};
use attestor_verify::appraisal::{
    accepted_appraisal, appraise, refused_appraisal, Counters, Posture, Sample,
};
use attestor_verify::bundle::{Bundle, EvidenceKind};
use attestor_verify::claims::Claims;
use attestor_verify::drift::{is_drift_report, DriftReport};
use attestor_verify::ear::{Ear, EarError, Jwks, Reason, Subject, Tier, VerifierId};
use attestor_verify::identity::Role;
use attestor_verify::log::checkpoint::Checkpoint;
use attestor_verify::log::checkpoint::CheckpointSigner;
use attestor_verify::log::keys::KeyHistory;
use attestor_verify::log::merkle::{empty_root, verify_consistency, Hash};
use attestor_verify::log::tiled::TILE_HEIGHT;
use attestor_verify::log::tiles::{encode_entry_bundle, hash_tile, TileKind, TilePath};
use attestor_verify::profiles::{Profile, ProfileError};
use attestor_verify::record::{Discarded, LogRecord, POLICY_RECORDER, RECORD_VERSION};

/// Why a request was not served. Refused submissions are not errors: they are logged and
/// answered with a [`SubmitResponse`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("tenant {0:?} is not configured on this ledger")]
    UnknownTenant(String),
    #[error("agent {agent_id:?} of tenant {tenant:?} is not enrolled: enrol first")]
    UnknownAgent { tenant: String, agent_id: String },
    #[error("too many requests from this identity: retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("the ledger cannot write to its storage now: retry in {} s", retry_after.as_secs().max(1))]
    StorageUnavailable { retry_after: Duration },
    #[error("enrollment refused: {0}")]
    Enroll(#[from] EnrollError),
    #[error("the AK was enrolled, but its certificate could not be issued: {0}")]
    AkCertificate(#[from] EnrollmentCaError),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error("log failure: {0}")]
    Log(#[from] SequencerError),
    #[error("log failure: {0}")]
    Append(#[from] BatchError),
    #[error("internal failure: a worker task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("internal failure: no randomness for a nonce")]
    NoRandomness(#[source] aws_lc_rs::error::Unspecified),
    #[error("internal failure: leaf {index}: {source}")]
    BadLeaf {
        index: u64,
        source: attestor_verify::cbor::CborError,
    },
    #[error("internal failure: entry {index} vanished")]
    EntryVanished { index: u64 },
    #[error("internal failure: cannot sign the EAR: {0}")]
    Ear(#[source] EarError),
    #[error("this ledger replica is not the sequencer: it serves reads only; retry (another replica holds the lease)")]
    NotSequencer,
    #[error("{0}")]
    Conflict(String),
    #[error("a certificate of role {} cannot do this: {what}", role.segment())]
    WrongRole { role: Role, what: &'static str },
    #[error("not published: {0}")]
    NotPublished(String),
}

/// Which signed checkpoint [`Ledger::checkpoint`] answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointAt {
    Latest,
    /// The one of exactly this size.
    Size(u64),
    /// The smallest of at least this size: what an auditor who saw a log of this size
    /// (not necessarily a checkpoint's) can check the latest against.
    AtLeast(u64),
    /// The newest that at least this many witnesses cosigned, with the cosignatures
    /// appended (`Cosigned(0)` is the newest).
    Cosigned(usize),
}

impl ServiceError {
    /// Stable kebab-case code for response bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad-request",
            ServiceError::NotFound(_) => "not-found",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::WrongRole { .. } => "forbidden",
            ServiceError::NotPublished(_) => "not-published",
            ServiceError::UnknownTenant(_) => "unknown-tenant",
            ServiceError::UnknownAgent { .. } => "unknown-agent",
            ServiceError::RateLimited { .. } => "rate-limited",
            ServiceError::StorageUnavailable { .. } => "unavailable",
            ServiceError::Enroll(EnrollError::Store(_)) => "unavailable",
            ServiceError::Enroll(_) => "enrollment-refused",
            ServiceError::NotSequencer | ServiceError::Append(BatchError::NotSequencer) => {
                "not-sequencer"
            }
            ServiceError::Store(_)
            | ServiceError::Log(_)
            | ServiceError::Append(_)
            | ServiceError::Task(_)
            | ServiceError::AkCertificate(_)
            | ServiceError::NoRandomness(_)
            | ServiceError::BadLeaf { .. }
            | ServiceError::EntryVanished { .. }
            | ServiceError::Ear(_) => "unavailable",
        }
    }

    /// How long the caller should wait before trying again (`Retry-After`), when the
    /// refusal is about load or availability rather than the request.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::RateLimited { retry_after }
            | ServiceError::StorageUnavailable { retry_after } => {
                Some((*retry_after).max(Duration::from_secs(1)))
            }
            ServiceError::Append(BatchError::Append(_) | BatchError::Unpublished(_))
            | ServiceError::Store(_) => Some(STORAGE_PROBE_INTERVAL),
            _ => None,
        }
    }
}

/// Why a ledger could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] SequencerError),
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("enrollment CA: {0}")]
    EnrollmentCa(#[from] EnrollmentCaError),
    #[error(
        "the log does not extend the checkpoint of size {seen} this replica saw before \
         (the store now ends at a checkpoint of size {stored}): an older backup was restored \
         or the log was rewritten; move {file} away only if that was intended"
    )]
    RolledBack {
        seen: u64,
        stored: u64,
        file: std::path::PathBuf,
    },
    #[error("{file}: {reason}")]
    SeenCheckpoint {
        file: std::path::PathBuf,
        reason: String,
    },
    #[error("database TLS: {0}")]
    DatabaseTls(#[from] attestor_net::tls::TlsError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Appraisal(#[from] AppraiseError),
}

/// Filters of an entries query, as the caller gives them (the tenant is the caller's).
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub agent_id: Option<String>,
    pub attestation_id: Option<String>,
    pub verdict: Option<Verdict>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub after: Option<u64>,
    pub limit: Option<u32>,
    /// Attach an inclusion proof to each entry.
    pub proofs: bool,
    /// Prove inclusion in the signed checkpoint of exactly this size (implies `proofs`):
    /// every page of an export against one checkpoint.
    pub proofs_at: Option<u64>,
}

/// The latest checkpoint this state directory saw, checked at start-up.
pub const SEEN_CHECKPOINT: &str = "checkpoint.seen";

/// The embedded store's file in the ledger's state directory.
pub const LEDGER_DB: &str = "ledger.db";

const ALL_KINDS: [AlertKind; 6] = [
    AlertKind::MissingHeartbeat,
    AlertKind::InvalidAttestation,
    AlertKind::PolicyDrift,
    AlertKind::ZeroRetentionChange,
    AlertKind::PostureContraindicated,
    AlertKind::PostureWarning,
];

/// Page size when the caller names none.
pub const DEFAULT_PAGE: u32 = 100;

/// After an append failed, how long the ledger refuses to hand out nonces (agents attest
/// with offline nonces meanwhile) before it lets one through again to find out whether
/// the storage is back.
pub const STORAGE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the latest append reached the storage, and when it last did not.
#[derive(Default)]
struct WriteHealth {
    last_failure: Mutex<Option<Instant>>,
}

impl WriteHealth {
    fn failed(&self) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn succeeded(&self) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How long to keep refusing new work, if the latest append failed recently.
    fn refusing_for(&self) -> Option<Duration> {
        let last = *self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|at| at.elapsed())
            .filter(|since| *since < STORAGE_PROBE_INTERVAL)
            .map(|since| STORAGE_PROBE_INTERVAL - since)
    }
}

/// What judging a submission found.
enum Judged {
    /// A caller that is not an enrolled agent of a configured tenant: only a summary of
    /// what it sent may be recorded.
    Stranger {
        refusal: ServiceError,
        summary: Submission,
    },
    /// The exact bytes of an entry this agent already has in the log: a re-send whose
    /// answer was lost. It gets the original entry's receipt.
    Repeat(StoredEntry),
    /// A new entry, the ledger nonce to spend once it is appended, and for an accepted
    /// one what its appraisal found.
    New {
        submission: Submission,
        spend_nonce: Option<Vec<u8>>,
        posture: Option<Appraised>,
    },
}

/// What an accepted attestation's appraisal found.
struct Appraised {
    status: Tier,
    posture: Posture,
    /// Its counters, for the agent's next appraisals once it is durable.
    sample: Sample,
    window_seconds: u64,
}

fn ear_verifier() -> VerifierId {
    VerifierId::attestor("ledger")
}

/// Who was appraised and, once its signature held, what it claimed.
fn subject_of(who: &AgentIdentity, claims: Option<&Claims>) -> Subject {
    Subject {
        tenant: Some(who.tenant.clone()),
        agent_id: Some(who.agent_id.clone()),
        submission: "bundle".into(),
        evidence: None,
        attestation_id: claims.map(|c| c.attestation_id.clone()),
        policy_hash: claims.map(|c| c.policy_hash.clone()),
        kernel_config_hash: claims.map(|c| c.kernel_config_hash.clone()),
        version: claims.map(|c| c.version.clone()),
    }
}

/// One ledger: its log, its store and what it expects of each tenant.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    sequencer: Arc<Sequencer>,
    batcher: Batcher,
    nonces: NonceBook,
    enrollment: Enrollment,
    /// Certifies the AKs credential activation enrolled, for offline verifiers.
    enrollment_ca: EnrollmentCa,
    profile: Profile,
    tenants: BTreeMap<String, TenantPolicy>,
    /// Tenants whose entries public entry bundles may carry.
    published_tenants: BTreeSet<String>,
    /// Cosignatures the public checkpoint needs (0: no witnesses).
    witness_quorum: usize,
    max_gap: Duration,
    agent_turns: Mutex<HashMap<AgentIdentity, Arc<tokio::sync::Mutex<()>>>>,
    /// Agents whose latest append failed in a way that may have committed after all (a
    /// lost answer): their next submission is looked up in the store before it is judged
    /// new, so it is never accepted twice.
    doubtful: Mutex<HashSet<AgentIdentity>>,
    write_health: WriteHealth,
    rate_limits: RateLimiter,
    stranger_records: RateLimiter,
    metrics: LedgerMetrics,
    alerter: Arc<Alerter>,
    appraiser: Appraiser,
    /// Serialises recording appraisal policies in the log.
    policy_recording: tokio::sync::Mutex<()>,
    /// Dropping it stops the lease keeper (stores with a sequencer lease only).
    _lease_keeper: Option<mpsc::Sender<()>>,
}

/// Runs blocking work (verification, SQLite) off the async reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ServiceError::Task)?
}

/// Opens the store a config names: SQLite in the state directory, or PostgreSQL.
pub fn open_store(config: &LedgerConfig) -> Result<Arc<dyn LedgerStore>, StartError> {
    Ok(match &config.storage {
        Storage::Embedded => Arc::new(EmbeddedStore::open(&config.state_dir.join(LEDGER_DB))?),
        Storage::Postgres { url, lease, tls } => {
            let mut options = PostgresOptions::new(*lease);
            if let Some(files) = tls {
                let client = files.cert.as_deref().zip(files.key.as_deref());
                options.tls = Some(attestor_net::tls::database_client_config(
                    &files.ca, client,
                )?);
            }
            Arc::new(PostgresStore::open(url, options)?)
        }
    })
}

/// Renews the sequencer lease (or keeps trying to take it) every `period` until `stop`
/// is dropped, then gives it up.
fn keep_lease(sequencer: Arc<Sequencer>, period: Duration, stop: mpsc::Receiver<()>) {
    let mut leading = sequencer.is_sequencer();
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(period) {
        let now = match sequencer.claim() {
            Ok(now) => now,
            Err(e) => {
                attestor_net::limited_event!(
                    tracing::Level::ERROR,
                    "sequencer-lease-failed",
                    error = %e
                );
                false
            }
        };
        if now != leading {
            let name = if now {
                "sequencer-elected"
            } else {
                "sequencer-lost"
            };
            tracing::info!(event = name, log_size = sequencer.size());
            leading = now;
        }
    }
    if let Err(e) = sequencer.resign() {
        tracing::warn!(event = "sequencer-release-failed", error = %e);
    }
}

impl Ledger {
    /// Opens the ledger a config describes: its state directory (created if needed), the
    /// store (embedded, or PostgreSQL shared with other replicas) and the checkpoint key.
    /// Returns the log writer's thread too; it ends once the ledger is dropped. Must run
    /// inside a tokio runtime (alert delivery).
    pub fn open(config: &LedgerConfig) -> Result<(Arc<Ledger>, JoinHandle<()>), StartError> {
        let dir = &config.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = open_store(config)?;
        let signer = keyfiles::load_or_create(
            dir,
            &config.origin,
            config.log.checkpoint_key,
            store.as_ref(),
        )?;
        let enrollment_ca = EnrollmentCa::load_or_create(dir, &config.origin)?
            .with_validity(config.ak_certificate_validity);
        let profile = Profile::load(&config.profile)?;
        let appraiser = Appraiser::load(&config.tenants, keyfiles::load_or_create_ear_key(dir)?)?;
        let (ledger, writer) = Self::new(store, signer, enrollment_ca, config, profile, appraiser)?;
        ledger.check_not_rolled_back(dir)?;
        ledger.remember_checkpoint(dir)?;
        Ok((ledger, writer))
    }

    /// Refuses a store whose log does not extend the latest checkpoint this state
    /// directory remembers (`checkpoint.seen`): a database restored from an older backup
    /// (or rewritten) under a surviving state directory. Auditors catch the same with the
    /// checkpoints they keep; this catches it before serving.
    fn check_not_rolled_back(&self, dir: &Path) -> Result<(), StartError> {
        let file = dir.join(SEEN_CHECKPOINT);
        let bad = |reason: String| StartError::SeenCheckpoint {
            file: file.clone(),
            reason,
        };
        let seen = match std::fs::read_to_string(&file) {
            Ok(note) => note,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let keys = self.key_history();
        let seen = keys
            .open_checkpoint(&seen)
            .map_err(|e| bad(e.to_string()))?;
        let stored = match self.store.latest_checkpoint()? {
            Some(latest) => keys
                .open_checkpoint(&latest.note)
                .map_err(SequencerError::from)?,
            None => Checkpoint::new(seen.origin.clone(), 0, empty_root()),
        };
        let rolled_back = || StartError::RolledBack {
            seen: seen.size,
            stored: stored.size,
            file: file.clone(),
        };
        if stored.size < seen.size {
            return Err(rolled_back());
        }
        let proof = self.sequencer.consistency_proof(seen.size, stored.size)?;
        verify_consistency(seen.size, stored.size, &seen.root, &stored.root, &proof)
            .map_err(|_| rolled_back())
    }

    /// Records the latest checkpoint in the state directory, for the next start's
    /// roll-back check. Called at start-up and shutdown, not per append (a crash loses
    /// only what the check would have covered since the last start).
    pub fn remember_checkpoint(&self, dir: &Path) -> Result<(), StartError> {
        let Some(latest) = self.store.latest_checkpoint()? else {
            return Ok(());
        };
        // It guards against a roll-back, so it must survive a crash too: written durably.
        Ok(write_atomically(
            &dir.join(SEEN_CHECKPOINT),
            latest.note.as_bytes(),
        )?)
    }

    /// A ledger over any store. With a store that has a sequencer lease, a thread keeps
    /// (or keeps trying to take) the lease; the returned thread ends once the writer and
    /// that keeper have stopped, after the ledger is dropped, the lease given up. Must run inside a tokio runtime (alert delivery).
    pub fn new(
        store: Arc<dyn LedgerStore>,
        signer: CheckpointSigner,
        enrollment_ca: EnrollmentCa,
        config: &LedgerConfig,
        profile: Profile,
        appraiser: Appraiser,
    ) -> Result<(Arc<Ledger>, JoinHandle<()>), SequencerError> {
        // Nonces carry a tag keyed from the checkpoint key, which every replica of the log
        // and every restart of this one holds: they recognise each other's nonces.
        let nonces = NonceBook::with_secret(&signer.to_pkcs8()?)
            .with_lifetimes(config.nonce_ttl, VOUCH_WINDOW);
        let sequencer = Arc::new(Sequencer::open(store.clone(), signer, &config.origin)?);
        let (batcher, writer) = Batcher::start(sequencer.clone(), DEFAULT_MAX_BATCH);
        let (lease_keeper, writer) = match store.lease_renewal() {
            None => (None, writer),
            Some(period) => {
                let (stop, stopped) = mpsc::channel();
                let keeper_sequencer = sequencer.clone();
                let keeper =
                    std::thread::spawn(move || keep_lease(keeper_sequencer, period, stopped));
                let both = std::thread::spawn(move || {
                    let _ = writer.join();
                    let _ = keeper.join();
                });
                (Some(stop), both)
            }
        };
        let incidents = IncidentBook::new(store.clone(), sequencer.clone(), batcher.clone());
        let ledger = Ledger {
            store,
            sequencer,
            batcher,
            nonces,
            enrollment: Enrollment::default(),
            enrollment_ca,
            profile,
            tenants: config.tenants.clone(),
            published_tenants: config.log.published_tenants.clone(),
            witness_quorum: config.log.witness_quorum,
            max_gap: config.max_gap,
            agent_turns: Mutex::default(),
            doubtful: Mutex::default(),
            write_health: WriteHealth::default(),
            rate_limits: RateLimiter::default(),
            stranger_records: RateLimiter::default(),
            metrics: LedgerMetrics::new(config.ops.per_agent_metrics),
            alerter: Alerter::start(config.alerts.clone(), config.state_dir.clone(), incidents),
            appraiser,
            policy_recording: tokio::sync::Mutex::default(),
            _lease_keeper: lease_keeper,
        };
        Ok((Arc::new(ledger), writer))
    }

    /// What each tenant expects.
    pub fn tenants(&self) -> &BTreeMap<String, TenantPolicy> {
        &self.tenants
    }

    /// The ledger's alerts.
    pub fn alerter(&self) -> &Arc<Alerter> {
        &self.alerter
    }

    /// The key set that verifies this ledger's EARs.
    pub fn ear_jwks(&self) -> Jwks {
        self.appraiser.jwks()
    }

    /// Reads every tenant's appraisal policy again and swaps them in together, or keeps
    /// the loaded ones when one fails; open alerts stay. A changed policy is recorded in
    /// the log before it judges anything. Returns the tenants whose policy changed.
    pub async fn reload_appraisals(self: &Arc<Self>) -> Result<Vec<String>, AppraiseError> {
        let reloaded = self.appraiser.reload(&self.tenants);
        self.metrics.appraisal_reload(reloaded.is_ok());
        let changed = reloaded?;
        if self.is_sequencer() {
            for appraisal in changed.iter().filter_map(|t| self.appraiser.tenant(t)) {
                // A failure here is retried before the tenant's next submission.
                let _ = self.record_policy(&appraisal).await;
            }
        }
        Ok(changed)
    }

    /// Appends a tenant's appraisal policy to the log unless the log's latest record of
    /// it is the same policy: an auditor then finds, before any EAR naming a policy id,
    /// the entry holding that policy's document.
    async fn record_policy(
        self: &Arc<Self>,
        appraisal: &TenantAppraisal,
    ) -> Result<(), ServiceError> {
        let tenant = appraisal.tenant.as_str();
        if appraisal.is_recorded() {
            return Ok(());
        }
        let _one_at_a_time = self.policy_recording.lock().await;
        if appraisal.is_recorded() {
            return Ok(());
        }
        let id = appraisal.policy.id();
        let (this, name) = (self.clone(), tenant.to_string());
        let latest = blocking(move || {
            let Some(entry) = this.store.latest_accepted(&name, POLICY_RECORDER)? else {
                return Ok(None);
            };
            let record = LogRecord::from_leaf(&entry.entry.leaf).map_err(|source| {
                ServiceError::BadLeaf {
                    index: entry.index,
                    source,
                }
            })?;
            Ok(record.appraisal_policy)
        })
        .await?;
        if latest.as_deref() != Some(id.as_str()) {
            let record = LogRecord {
                version: RECORD_VERSION,
                received_at_ms: 0,
                tenant: tenant.to_string(),
                agent_id: POLICY_RECORDER.to_string(),
                verdict: Verdict::Accepted,
                reason: None,
                detail: Some(format!(
                    "appraisal policy {id} judges tenant {tenant} from here on"
                )),
                attestation_id: None,
                policy_hash: None,
                submission: appraisal.policy.document.clone().into_bytes(),
                discarded: None,
                ear: None,
                appraisal_policy: Some(id.clone()),
            };
            let submission = Submission {
                record,
                accepted_state: None,
            };
            self.batcher.submit(submission).await?;
            tracing::info!(event = "appraisal-policy-recorded", tenant = %tenant, policy = %id);
        }
        appraisal.mark_recorded();
        Ok(())
    }

    /// The Prometheus exposition of the ledger's metrics, gauges refreshed now.
    pub async fn metrics_text(self: &Arc<Self>) -> Result<String, ServiceError> {
        let this = self.clone();
        blocking(move || {
            let counts = this.alerter.open_counts()?;
            let policies = this
                .appraiser
                .tenants()
                .into_iter()
                .map(|(tenant, a)| (tenant, a.policy.id()))
                .collect();
            Ok(this.metrics.render(
                this.store.as_ref(),
                this.max_gap,
                attestor_verify::time::unix_ms(SystemTime::now()),
                &counts,
                &policies,
            )?)
        })
        .await
    }

    /// The checkpoint verifier key (C2SP vkey), for auditors.
    pub fn verifier_key(&self) -> String {
        self.sequencer.verifier_key()
    }

    /// The enrollment CA's certificate (PEM): what relying parties trust to verify the AK
    /// certificates this ledger issues.
    pub fn enrollment_ca_pem(&self) -> &str {
        self.enrollment_ca.certificate_pem()
    }

    /// Every checkpoint key of the log and the transitions between them.
    pub fn key_history(&self) -> KeyHistory {
        self.sequencer.key_history()
    }

    /// Takes the key `attestor ledger rotate-key` prepared in the state directory, if
    /// any, without stopping: records the transition (or, on a follower, installs the
    /// key the sequencer already introduced) and swaps the key files. Returns the new
    /// verifier key.
    pub fn rotate_checkpoint_key(
        &self,
        config: &LedgerConfig,
    ) -> Result<Option<String>, KeyFileError> {
        let dir = &config.state_dir;
        let Some(next) = keyfiles::pending(dir, &config.origin)? else {
            return Ok(None);
        };
        let vkey = next.verifier_key();
        let secret = next.to_pkcs8()?;
        self.sequencer.rotate(next)?;
        keyfiles::promote(dir, &config.origin, &vkey)?;
        // A restart derives the nonce tag key from the new checkpoint key alone: nonces
        // handed out from now on must carry its tag, or every one an agent carries
        // through that restart would be refused.
        self.nonces.rekey(&secret);
        Ok(Some(vkey))
    }

    /// Whether this replica holds the sequencer lease (always, on the embedded store).
    /// Followers serve reads only.
    pub fn is_sequencer(&self) -> bool {
        self.sequencer.is_sequencer()
    }

    fn require_sequencer(&self) -> Result<(), ServiceError> {
        if self.is_sequencer() {
            Ok(())
        } else {
            Err(ServiceError::NotSequencer)
        }
    }

    /// The storage the ledger writes to.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    /// Silence after which an agent counts as stale.
    pub fn max_gap(&self) -> Duration {
        self.max_gap
    }

    fn tenant_policy(&self, tenant: &str) -> Result<&TenantPolicy, ServiceError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| ServiceError::UnknownTenant(tenant.to_string()))
    }

    /// Takes one write from `who`'s allowance (its tenant's, or the small one of callers
    /// of unknown tenants). The transport calls it before reading a write request's body.
    pub fn admit_write(
        &self,
        who: &AgentIdentity,
        endpoint: &'static str,
    ) -> Result<(), ServiceError> {
        match (who.role, endpoint) {
            (Role::Agent, "incident") => {
                return Err(ServiceError::WrongRole {
                    role: who.role,
                    what: "only an operator acknowledges or resolves incidents",
                })
            }
            (Role::Operator, "incident") | (Role::Agent, _) => {}
            (Role::Operator, _) => {
                return Err(ServiceError::WrongRole {
                    role: who.role,
                    what: "an operator never enrols, asks nonces or submits",
                })
            }
        }
        let limit = self
            .tenants
            .get(&who.tenant)
            .map_or(WriteLimit::UNKNOWN_TENANT, |t| t.write_limit);
        self.rate_limits.admit(who, limit).map_err(|retry_after| {
            self.metrics.rate_limited(endpoint);
            ServiceError::RateLimited { retry_after }
        })
    }

    /// A single-use nonce for the caller's next attestation. None while the latest append
    /// failed: a nonce spent on a submission that cannot be logged helps nobody, and the
    /// agent's offline nonce serves as well meanwhile.
    pub fn issue_nonce(&self, who: &AgentIdentity) -> Result<NonceResponse, ServiceError> {
        self.hand_out_nonce(who, NonceVia::Endpoint)
    }

    /// The caller's next nonce, for the answer to its accepted submission: exactly when
    /// [`Ledger::issue_nonce`] would hand one out. Without one the agent asks the endpoint,
    /// whose answer then says why, so the reason is not repeated here.
    fn next_nonce(&self, who: &AgentIdentity) -> Option<NextNonce> {
        let issued = self.hand_out_nonce(who, NonceVia::Receipt).ok()?;
        Some(NextNonce {
            nonce: issued.nonce,
            valid_for_ms: u64::try_from(self.nonces.ttl().as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn hand_out_nonce(
        &self,
        who: &AgentIdentity,
        via: NonceVia,
    ) -> Result<NonceResponse, ServiceError> {
        self.tenant_policy(&who.tenant)?;
        // Nonces live in the sequencer's memory: only it can check them later.
        self.require_sequencer()?;
        if let Some(retry_after) = self.write_health.refusing_for() {
            return Err(ServiceError::StorageUnavailable { retry_after });
        }
        let nonce = self.nonces.issue(who).map_err(ServiceError::NoRandomness)?;
        self.metrics.nonce_issued(via);
        Ok(NonceResponse {
            nonce: nonce.to_vec(),
        })
    }

    /// First enrollment step: checks the EK chain and returns a credential challenge.
    pub async fn enroll_begin(
        self: &Arc<Self>,
        who: &AgentIdentity,
        request: EnrollRequest,
    ) -> Result<EnrollChallenge, ServiceError> {
        self.tenant_policy(&who.tenant)?;
        self.require_sequencer()?;
        let (this, who) = (self.clone(), who.clone());
        blocking(move || {
            Ok(this
                .enrollment
                .begin(&who, request, &this.profile, SystemTime::now())?)
        })
        .await
    }

    /// Second enrollment step: checks the recovered secret, pins the agent's AK and
    /// certifies it (the AK certificate the agent then carries in its bundles).
    pub async fn enroll_finish(
        self: &Arc<Self>,
        who: &AgentIdentity,
        proof: EnrollProof,
    ) -> Result<EnrolledResponse, ServiceError> {
        self.require_sequencer()?;
        let (this, who) = (self.clone(), who.clone());
        blocking(move || {
            let now = SystemTime::now();
            let record = this.enrollment.finish(
                &who,
                &proof,
                this.store.as_ref(),
                attestor_verify::time::unix_ms(now),
            )?;
            // An EK the profile trusts by its hash has no certificate for an AK certificate
            // to name; such an agent is verified offline by its AK's Name.
            let ak_certificate = if record.ek_certificate.is_empty() {
                Vec::new()
            } else {
                this.enrollment_ca.issue(
                    &record.ak_public,
                    &record.ek_certificate,
                    Some(&who),
                    now,
                )?
            };
            Ok(EnrolledResponse {
                tpm: crate::enroll::enrolled_tpm(&record),
                agent_id: record.agent_id,
                tenant: record.tenant,
                enrolled_at_ms: record.enrolled_at_ms,
                ak_certificate,
            })
        })
        .await
    }

    /// Enrols an SEV-SNP guest from a bundle made with a nonce of this ledger.
    pub async fn enroll_snp(
        self: &Arc<Self>,
        who: &AgentIdentity,
        bundle: Vec<u8>,
    ) -> Result<EnrolledResponse, ServiceError> {
        self.tenant_policy(&who.tenant)?;
        let (this, who) = (self.clone(), who.clone());
        blocking(move || {
            let record = crate::enroll::enroll_snp(
                &who,
                &bundle,
                &this.nonces,
                &this.profile,
                this.store.as_ref(),
                SystemTime::now(),
            )?;
            // An SEV-SNP guest has no AK to certify (a vTPM's got its certificate when
            // it enrolled).
            Ok(EnrolledResponse {
                tpm: crate::enroll::enrolled_tpm(&record),
                agent_id: record.agent_id,
                tenant: record.tenant,
                enrolled_at_ms: record.enrolled_at_ms,
                ak_certificate: Vec::new(),
            })
        })
        .await
    }

    fn agent_turn(&self, who: &AgentIdentity) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.agent_turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(who.clone()).or_default().clone()
    }

    fn doubtful(&self) -> std::sync::MutexGuard<'_, HashSet<AgentIdentity>> {
        self.doubtful.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies a submission and appends it with its verdict; returns once it is durable.
    /// A caller that is not an enrolled agent of a configured tenant is refused before
    /// anything it sent is kept; a re-sent submission gets its original receipt. With
    /// `next_nonce`, an accepted answer carries the agent's next nonce (see
    /// [`NextNonce`]).
    pub async fn submit(
        self: &Arc<Self>,
        who: &AgentIdentity,
        body: Vec<u8>,
        next_nonce: bool,
    ) -> Result<SubmitResponse, ServiceError> {
        let mut response = self.judge_and_append(who, body).await?;
        if next_nonce && response.verdict == Verdict::Accepted {
            response.next_nonce = self.next_nonce(who);
        }
        Ok(response)
    }

    async fn judge_and_append(
        self: &Arc<Self>,
        who: &AgentIdentity,
        body: Vec<u8>,
    ) -> Result<SubmitResponse, ServiceError> {
        // Checked before judging, so a follower logs nothing.
        self.require_sequencer()?;
        if who.role != Role::Agent {
            return Err(ServiceError::WrongRole {
                role: who.role,
                what: "only agents submit",
            });
        }
        let arrived = Instant::now();
        // The policy that judges is the one in the log, even if a reload swaps it meanwhile.
        let appraisal = self.appraiser.tenant(&who.tenant);
        if let Some(appraisal) = &appraisal {
            self.record_policy(appraisal).await?;
        }
        let turn = self.agent_turn(who);
        let _my_turn = turn.lock().await;
        let (this, caller) = (self.clone(), who.clone());
        let judged = blocking(move || this.judge(&caller, appraisal, body)).await;
        if let Err(ServiceError::Store(_)) = &judged {
            // Judging reads the agent's state: a store that cannot be read cannot be
            // written either.
            self.write_health.failed();
        }
        let (submission, spend_nonce, posture) = match judged? {
            Judged::New {
                submission,
                spend_nonce,
                posture,
            } => (submission, spend_nonce, posture),
            Judged::Repeat(original) => return self.answer_repeat(original).await,
            Judged::Stranger { refusal, summary } => {
                return Err(self.refuse_stranger(who, refusal, summary).await)
            }
        };
        let verified = arrived.elapsed();
        // The verdict's fields only: the record itself (with the submitted bytes) moves
        // into the log.
        let r = &submission.record;
        let (verdict, reason, detail, attestation_id, ear) = (
            r.verdict,
            r.reason.clone(),
            r.detail.clone(),
            r.attestation_id.clone(),
            r.ear.clone(),
        );
        // Includes the wait for the group commit that carries it.
        let appended = self
            .batcher
            .submit(submission)
            .instrument(tracing::info_span!("append"))
            .await;
        if let Err(e) = &appended {
            if matches!(e, BatchError::Append(_) | BatchError::Unpublished(_)) {
                self.write_health.failed();
            }
            // A failed append may still have committed (its answer was lost); a durable
            // but unpublished one certainly did: either way the nonce may not be used
            // again for another entry, and a re-send is looked up first.
            if matches!(e, BatchError::Unpublished(_)) {
                if let Some(nonce) = &spend_nonce {
                    self.nonces.spend(who, nonce);
                }
            } else {
                self.doubtful().insert(who.clone());
            }
        }
        let receipt = appended?;
        let index = receipt.index;
        self.write_health.succeeded();
        self.doubtful().remove(who);
        if let Some(nonce) = &spend_nonce {
            self.nonces.spend(who, nonce);
        }
        self.metrics
            .observe_submission(verdict, reason.as_deref(), verified, arrived.elapsed());
        match (&reason, posture) {
            // Genuine but past: nothing to alert on, and not a heartbeat that ends a gap.
            _ if verdict == Verdict::Late => self.metrics.late_attestation(&who.tenant),
            (Some(reason), _) => {
                self.metrics
                    .observe_appraisal(&who.tenant, Tier::Contraindicated, &[]);
                self.alerter
                    .fire(
                        crate::alerts::kind_for_refusal(reason),
                        &who.tenant,
                        &who.agent_id,
                        detail.clone().unwrap_or_else(|| reason.clone()),
                        Some(index),
                        ear.clone(),
                    )
                    .await
            }
            (None, Some(appraised)) => {
                self.after_appraisal(who, appraised, index, ear.clone())
                    .await
            }
            (None, None) => {
                self.alerter
                    .resolve(&who.tenant, &who.agent_id, &ALL_KINDS)
                    .await
            }
        }
        Ok(SubmitResponse {
            verdict,
            reason,
            detail,
            attestation_id,
            ear,
            receipt: receipt_json(receipt),
            next_nonce: None,
        })
    }

    /// Once an accepted attestation is durable: its counters join the agent's history,
    /// and its posture opens, keeps or resolves the posture alerts.
    async fn after_appraisal(
        &self,
        who: &AgentIdentity,
        appraised: Appraised,
        index: u64,
        ear: Option<String>,
    ) {
        let Appraised {
            status,
            posture,
            sample,
            window_seconds,
        } = appraised;
        self.appraiser.remember(who, sample, window_seconds);
        self.metrics
            .observe_appraisal(&who.tenant, status, &posture.reasons);
        if posture.runtime_restarted {
            self.metrics.runtime_restarted(&who.tenant);
        }
        let summary = || {
            posture
                .reasons
                .iter()
                .filter(|r| r.tier == status)
                .map(|r| format!("{}: {}", r.check, r.detail))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let kind = match status {
            Tier::Contraindicated => Some(AlertKind::PostureContraindicated),
            Tier::Warning => Some(AlertKind::PostureWarning),
            Tier::Affirming | Tier::None => None,
        };
        let healthy: Vec<AlertKind> = ALL_KINDS
            .iter()
            .copied()
            .filter(|k| Some(*k) != kind)
            .collect();
        let summary = summary();
        self.alerter
            .resolve(&who.tenant, &who.agent_id, &healthy)
            .await;
        if let Some(kind) = kind {
            self.alerter
                .fire(kind, &who.tenant, &who.agent_id, summary, Some(index), ear)
                .await;
        }
    }

    /// The answer the original submission got (its verdict and receipt), for a re-send.
    async fn answer_repeat(
        self: &Arc<Self>,
        original: StoredEntry,
    ) -> Result<SubmitResponse, ServiceError> {
        self.metrics.repeated_submission();
        let this = self.clone();
        blocking(move || {
            let record = LogRecord::from_leaf(&original.entry.leaf).map_err(|source| {
                ServiceError::BadLeaf {
                    index: original.index,
                    source,
                }
            })?;
            let receipt = this.sequencer.receipt_for(&original)?;
            Ok(SubmitResponse {
                verdict: record.verdict,
                reason: record.reason,
                detail: record.detail,
                attestation_id: record.attestation_id,
                ear: record.ear,
                receipt: receipt_json(receipt),
                next_nonce: None,
            })
        })
        .await
    }

    /// Records (at most now and then per caller) that a stranger tried to submit, and
    /// returns the refusal to answer with.
    async fn refuse_stranger(
        &self,
        who: &AgentIdentity,
        refusal: ServiceError,
        summary: Submission,
    ) -> ServiceError {
        let recorded = self
            .stranger_records
            .admit(who, WriteLimit::STRANGER_RECORDS)
            .is_ok();
        self.metrics.stranger_submission(refusal.code(), recorded);
        if recorded {
            if let Err(e) = self.batcher.submit(summary).await {
                return e.into();
            }
        }
        refusal
    }

    /// Judges a submission: a stranger's, a repeat of a logged one, or a new entry with
    /// its verdict (accepted, or refused with its reason).
    fn judge(
        &self,
        who: &AgentIdentity,
        appraisal: Option<Arc<TenantAppraisal>>,
        body: Vec<u8>,
    ) -> Result<Judged, ServiceError> {
        let hash = submission_hash(&body);
        let mut record = LogRecord {
            version: RECORD_VERSION,
            received_at_ms: 0,
            tenant: who.tenant.clone(),
            agent_id: who.agent_id.clone(),
            verdict: Verdict::Refused,
            reason: None,
            detail: None,
            attestation_id: None,
            policy_hash: None,
            submission: Vec::new(),
            discarded: None,
            ear: None,
            appraisal_policy: None,
        };
        let stranger = |refusal: ServiceError, mut record: LogRecord| {
            record.reason = Some(refusal.code().to_string());
            record.detail = Some(format!(
                "{refusal}; the {}-byte submission (SHA-256 {}) was not kept",
                body.len(),
                hex::encode(hash)
            ));
            record.discarded = Some(Discarded {
                sha256: hash.to_vec(),
                size: body.len() as u64,
            });
            Ok(Judged::Stranger {
                refusal,
                summary: Submission {
                    record,
                    accepted_state: None,
                },
            })
        };
        let Some(appraisal) = appraisal else {
            return stranger(ServiceError::UnknownTenant(who.tenant.clone()), record);
        };
        let Some(agent) = self.store.agent(&who.tenant, &who.agent_id)? else {
            let refusal = ServiceError::UnknownAgent {
                tenant: who.tenant.clone(),
                agent_id: who.agent_id.clone(),
            };
            return stranger(refusal, record);
        };
        let now = SystemTime::now();
        let mut presented = None;
        // Stage spans (timed on /metrics): parse, judge, appraise, one after the other.
        let parsed = (!is_drift_report(&body)).then(|| {
            let _parse = tracing::info_span!("parse").entered();
            Bundle::from_json(&body)
        });
        let judging = tracing::info_span!("judge").entered();
        let verdict = match parsed {
            None => Err(self.judge_drift(who, &agent, &body, now, &mut presented)?),
            Some(parsed) => parsed.map_err(Refusal::from).and_then(|bundle| {
                let nonce = self.nonces.presented(who, &bundle.nonce, now);
                presented = Some((nonce, bundle.nonce.clone()));
                judge_submission(
                    &bundle,
                    &agent,
                    nonce,
                    &self.profile,
                    &appraisal.approved,
                    now,
                )
            }),
        };
        let verdict = match verdict {
            Ok(Timeliness::Late { verified, .. })
                if self.logged_before(who, &verified.claims.attestation_id)? =>
            {
                // Late attestations leave the agent's TPM clock where it was, so a
                // re-encoded copy of one would pass continuity: its id gives it away.
                Err(Refusal::Nonce)
            }
            other => other,
        };
        // Exact bytes logged before cannot be accepted again (their nonce or TPM clock is
        // used up), so only a refusal, or an agent whose last append may have committed
        // unseen, needs the lookup.
        if !matches!(verdict, Ok(Timeliness::InTime(_))) || self.doubtful().contains(who) {
            if let Some(original) = self
                .store
                .find_submission(&who.tenant, &who.agent_id, &hash)?
            {
                return Ok(Judged::Repeat(original));
            }
        }
        drop(judging);
        let appraising = tracing::info_span!("appraise").entered();
        record.submission = body;
        let now_ms = attestor_verify::time::unix_ms(now);
        let nonce = presented.as_ref().map(|(_, n)| n.as_slice()).unwrap_or(&[]);
        let (accepted_state, ear, posture) = match verdict {
            Ok(Timeliness::Late { verified, missed }) => {
                record.verdict = Verdict::Late;
                record.attestation_id = Some(verified.claims.attestation_id.clone());
                record.policy_hash = Some(verified.claims.policy_hash.clone());
                let detail = format!("delivered after the freshness window: {}", missed.reason);
                record.detail = Some(detail.clone());
                let ear = self.late_ear(who, &verified, &appraisal, nonce, now_ms, detail);
                (None, ear, None)
            }
            Ok(Timeliness::InTime(verified)) => {
                record.verdict = Verdict::Accepted;
                record.attestation_id = Some(verified.claims.attestation_id.clone());
                record.policy_hash = Some(verified.claims.policy_hash.clone());
                let history = self.appraiser.history(who);
                let posture = appraise(&verified.claims, &appraisal.policy, &history, now_ms);
                let basis = verified.appraisal_basis(&self.profile);
                let mut subject = subject_of(who, Some(&verified.claims));
                subject.evidence = Some(basis.evidence.name().to_string());
                let judged = accepted_appraisal(&basis, &posture, appraisal.policy.id());
                let ear = Ear::new(ear_verifier(), now_ms / 1000, nonce, judged, subject);
                let appraised = Appraised {
                    status: ear.status(),
                    sample: Sample {
                        at_ms: now_ms,
                        counters: Counters::from(&verified.claims),
                    },
                    posture,
                    window_seconds: appraisal.policy.counters.window_seconds,
                };
                (Some(accepted_state(&verified)), ear, Some(appraised))
            }
            Err(refusal) => {
                let (reason, detail) = (refusal.reason(), refusal.to_string());
                let judged = refused_appraisal(reason, &detail, Some(appraisal.policy.id()));
                let mut subject = subject_of(who, None);
                if let Refusal::KernelConfigDrift { measured, .. } = &refusal {
                    subject.submission = "drift-report".into();
                    subject.evidence = Some(EvidenceKind::Tpm.name().into());
                    subject.kernel_config_hash = Some(measured.clone());
                }
                let ear = Ear::new(ear_verifier(), now_ms / 1000, nonce, judged, subject);
                record.reason = Some(reason.to_string());
                record.detail = Some(detail);
                (None, ear, None)
            }
        };
        record.ear = Some(self.appraiser.sign(&ear).map_err(ServiceError::Ear)?);
        drop(appraising);
        let spend_nonce = presented
            .filter(|(check, _)| check.to_spend())
            .map(|(_, nonce)| nonce);
        Ok(Judged::New {
            submission: Submission {
                record,
                accepted_state,
            },
            spend_nonce,
            posture,
        })
    }

    /// Whether the agent already has an entry for this attestation (accepted or late).
    fn logged_before(&self, who: &AgentIdentity, attestation_id: &str) -> Result<bool, StoreError> {
        let query = EntryQuery {
            tenant: Some(who.tenant.clone()),
            agent_id: Some(who.agent_id.clone()),
            attestation_id: Some(attestation_id.to_string()),
            limit: 1,
            ..EntryQuery::default()
        };
        Ok(!self.store.query(&query)?.is_empty())
    }

    /// The EAR of a late attestation: what the checks proved, appraised on its own (the
    /// agent's counter history is the present's, not its time's), and at best `warning`:
    /// it shows what the agent was, not what it is, so no gate may pass on it alone, while
    /// nothing in it calls for blocking.
    fn late_ear(
        &self,
        who: &AgentIdentity,
        verified: &attestor_verify::checks::Verified,
        appraisal: &TenantAppraisal,
        nonce: &[u8],
        now_ms: u64,
        detail: String,
    ) -> Ear {
        let posture = appraise(&verified.claims, &appraisal.policy, &[], now_ms);
        let basis = verified.appraisal_basis(&self.profile);
        let mut subject = subject_of(who, Some(&verified.claims));
        subject.evidence = Some(basis.evidence.name().to_string());
        let mut judged = accepted_appraisal(&basis, &posture, appraisal.policy.id());
        judged.ear_status = judged.ear_status.max(Tier::Warning);
        judged.attestor.reasons.push(Reason {
            check: "late".into(),
            tier: Tier::Warning,
            detail,
        });
        Ear::new(ear_verifier(), now_ms / 1000, nonce, judged, subject)
    }

    /// What a drift report proves, as the refusal it is: the verified drift (naming the
    /// approved and the new measurement), or why the report itself is refused.
    fn judge_drift(
        &self,
        who: &AgentIdentity,
        agent: &AgentRecord,
        body: &[u8],
        now: SystemTime,
        presented: &mut Option<(PresentedNonce, Vec<u8>)>,
    ) -> Result<Refusal, ServiceError> {
        let report = match DriftReport::from_json(body) {
            Ok(report) => report,
            Err(e) => return Ok(e.into()),
        };
        let nonce = self.nonces.presented(who, &report.nonce, now);
        *presented = Some((nonce, report.nonce.clone()));
        let verified = match verify_drift_submission(&report, agent, nonce, &self.profile, now) {
            Ok(verified) => verified,
            Err(refusal) => return Ok(refusal),
        };
        let approved = self
            .store
            .latest_accepted(&who.tenant, &who.agent_id)?
            .and_then(|entry| LogRecord::from_leaf(&entry.entry.leaf).ok())
            .and_then(|record| record.accepted_claims())
            .map(|claims| claims.kernel_config_hash);
        Ok(Refusal::KernelConfigDrift {
            measured: verified.claims.kernel_config_hash,
            approved,
        })
    }

    /// Entries of the caller's tenant matching `filter`, ascending by index.
    pub async fn entries(
        self: &Arc<Self>,
        who: &AgentIdentity,
        filter: EntryFilter,
    ) -> Result<EntriesResponse, ServiceError> {
        let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::BadRequest(format!(
                "limit must be 1..={MAX_PAGE}"
            )));
        }
        let query = EntryQuery {
            tenant: Some(who.tenant.clone()),
            agent_id: filter.agent_id,
            attestation_id: filter.attestation_id,
            verdict: filter.verdict,
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            after_index: filter.after,
            limit,
        };
        let this = self.clone();
        blocking(move || {
            let found = this.store.query(&query)?;
            let next_after = (found.len() == limit as usize)
                .then(|| found.last().map(|e| e.index))
                .flatten();
            let entries = this.with_proofs(found, filter.proofs, filter.proofs_at)?;
            Ok(EntriesResponse {
                entries,
                next_after,
            })
        })
        .await
    }

    /// One entry of the caller's tenant, with its inclusion proof.
    pub async fn entry(
        self: &Arc<Self>,
        who: &AgentIdentity,
        index: u64,
    ) -> Result<EntryJson, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            let entry = this
                .sequencer
                .entry(index)?
                .filter(|e| e.entry.tenant == tenant)
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("no entry {index} of this tenant"))
                })?;
            let mut entries = this.with_proofs(vec![entry], true, None)?;
            entries.pop().ok_or(ServiceError::EntryVanished { index })
        })
        .await
    }

    /// The latest accepted entry of each agent of the caller's tenant, with proofs.
    pub async fn latest_healthy(
        self: &Arc<Self>,
        who: &AgentIdentity,
    ) -> Result<EntriesResponse, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            let mut found = Vec::new();
            for agent in this.store.agents(Some(&tenant))? {
                if let Some(entry) = this.store.latest_accepted(&agent.tenant, &agent.agent_id)? {
                    found.push(entry);
                }
            }
            Ok(EntriesResponse {
                entries: this.with_proofs(found, true, None)?,
                next_after: None,
            })
        })
        .await
    }

    /// Agents of the caller's tenant with their health.
    pub async fn agents(
        self: &Arc<Self>,
        who: &AgentIdentity,
    ) -> Result<AgentsResponse, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            let now_ms = attestor_verify::time::unix_ms(SystemTime::now());
            let agents = this
                .store
                .agents(Some(&tenant))?
                .into_iter()
                .map(|a| AgentStatusJson {
                    stale: a.health(now_ms, this.max_gap) == Health::Stale,
                    zero_retention: a.last_accepted.as_ref().map(|s| s.zero_retention),
                    agent_id: a.agent_id,
                    tenant: a.tenant,
                    enrolled_at_ms: a.enrolled_at_ms,
                    revoked: a.revoked,
                    last_seen_at_ms: a.last_seen_at_ms,
                    last_accepted_at_ms: a.last_accepted_at_ms,
                })
                .collect();
            Ok(AgentsResponse { agents })
        })
        .await
    }

    /// The caller's tenant, its expected policy hash, those approved beside it now, and
    /// the appraisal policy judging it.
    pub fn tenant(&self, who: &AgentIdentity) -> Result<TenantResponse, ServiceError> {
        let policy_hash = self.tenant_policy(&who.tenant)?.policy_hash.clone();
        let appraisal = self.appraiser.tenant(&who.tenant);
        let now_secs = attestor_verify::time::unix_ms(SystemTime::now()) / 1000;
        Ok(TenantResponse {
            tenant: who.tenant.clone(),
            approved_policy_hashes: appraisal
                .as_ref()
                .map(|a| a.approved_now(now_secs))
                .unwrap_or_else(|| vec![policy_hash.clone()]),
            appraisal_policy: appraisal.map(|a| a.policy.id()),
            policy_hash,
        })
    }

    /// Unresolved alerts of the caller's tenant: the same on every replica.
    pub async fn alerts(
        self: &Arc<Self>,
        who: &AgentIdentity,
    ) -> Result<AlertsResponse, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            Ok(AlertsResponse {
                alerts: this.alerter.open_alerts(Some(&tenant))?,
            })
        })
        .await
    }

    /// A signed checkpoint's note.
    pub async fn checkpoint(self: &Arc<Self>, at: CheckpointAt) -> Result<String, ServiceError> {
        let this = self.clone();
        blocking(move || {
            let found = match at {
                CheckpointAt::Size(size) => this.store.checkpoint(size)?,
                CheckpointAt::AtLeast(size) => this.store.checkpoint_at_least(size)?,
                CheckpointAt::Latest | CheckpointAt::Cosigned(0) => {
                    this.store.latest_checkpoint()?
                }
                CheckpointAt::Cosigned(quorum) => {
                    return match this.store.cosigned_checkpoint(quorum)? {
                        Some((checkpoint, lines)) => Ok(checkpoint.note + &lines.concat()),
                        None => Err(ServiceError::NotFound(format!(
                            "no checkpoint is cosigned by {quorum} witnesses yet"
                        ))),
                    };
                }
            };
            found
                .map(|c| c.note)
                .ok_or_else(|| ServiceError::NotFound("no such checkpoint".into()))
        })
        .await
    }

    /// A C2SP tlog-tiles resource of the log as of its latest signed checkpoint: a tile
    /// of hashes, or an entry bundle when every tenant in it publishes its entries. A
    /// tile beyond that checkpoint is not found (it may still change).
    pub async fn tile(self: &Arc<Self>, tile: TilePath) -> Result<Vec<u8>, ServiceError> {
        let this = self.clone();
        blocking(move || {
            let signed = this.store.latest_checkpoint()?.map_or(0, |c| c.size);
            let (Some(needs), Some(first)) = (tile.needs_size(), tile.first_item()) else {
                return Err(ServiceError::NotFound("no such tile".into()));
            };
            if needs > signed {
                return Err(ServiceError::NotFound(format!(
                    "{} needs a tree of {needs} entries; the latest checkpoint has {signed}",
                    tile.to_path()
                )));
            }
            let width = u64::from(tile.width);
            let TileKind::Entries = tile.kind else {
                let level = u32::from(tile.level()) * TILE_HEIGHT;
                let hashes = this.sequencer.subtree_hashes(level, first, width, signed)?;
                return Ok(hash_tile(&hashes));
            };
            let entries = this.store.query(&EntryQuery {
                after_index: first.checked_sub(1),
                limit: u32::from(tile.width),
                ..EntryQuery::default()
            })?;
            if entries.len() as u64 != width {
                return Err(ServiceError::EntryVanished {
                    index: first + entries.len() as u64,
                });
            }
            for stored in &entries {
                this.sequencer.check(stored)?;
                if !this.published_tenants.contains(&stored.entry.tenant) {
                    return Err(ServiceError::NotPublished(format!(
                        "entry {} belongs to a tenant that does not publish its entries",
                        stored.index
                    )));
                }
            }
            encode_entry_bundle(entries.iter().map(|e| e.entry.leaf.as_slice()))
                .map_err(|e| ServiceError::NotPublished(e.to_string()))
        })
        .await
    }

    /// The checkpoint the public read path serves: the newest, or with witnesses
    /// configured the newest a quorum of them cosigned, carrying their cosignatures.
    pub async fn public_checkpoint(self: &Arc<Self>) -> Result<String, ServiceError> {
        self.checkpoint(CheckpointAt::Cosigned(self.witness_quorum))
            .await
    }

    /// The signed checkpoint of exactly `size` (the latest when `None`), as its note and
    /// opened under the log's keys, if the log signed one.
    pub async fn signed_checkpoint(
        self: &Arc<Self>,
        size: Option<u64>,
    ) -> Result<Option<(String, Checkpoint)>, ServiceError> {
        let this = self.clone();
        blocking(move || {
            let stored = match size {
                Some(size) => this.store.checkpoint(size)?,
                None => this.store.latest_checkpoint()?,
            };
            let Some(stored) = stored else {
                return Ok(None);
            };
            let opened = this
                .sequencer
                .key_history()
                .open_checkpoint(&stored.note)
                .map_err(SequencerError::from)?;
            Ok(Some((stored.note, opened)))
        })
        .await
    }

    /// The RFC 9162 consistency proof between two sizes of the log.
    pub async fn consistency_proof(
        self: &Arc<Self>,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, ServiceError> {
        if old == 0 {
            return Ok(Vec::new());
        }
        let this = self.clone();
        blocking(move || Ok(this.sequencer.consistency_proof(old, new)?)).await
    }

    /// Keeps a witness's verified cosignature line of the checkpoint of `size`.
    pub async fn keep_cosignature(
        self: &Arc<Self>,
        size: u64,
        witness: &str,
        line: &str,
    ) -> Result<(), ServiceError> {
        let (this, witness, line) = (self.clone(), witness.to_string(), line.to_string());
        blocking(move || Ok(this.store.put_cosignature(size, &witness, &line)?)).await
    }

    /// The ledger's metrics.
    pub fn metrics(&self) -> &LedgerMetrics {
        &self.metrics
    }

    /// A consistency proof between two signed tree sizes.
    pub async fn consistency(
        self: &Arc<Self>,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyResponse, ServiceError> {
        let this = self.clone();
        blocking(move || {
            let signed = this.store.latest_checkpoint()?.map_or(0, |c| c.size);
            if new_size > signed {
                return Err(ServiceError::BadRequest(format!(
                    "new size {new_size} is beyond the latest checkpoint ({signed})"
                )));
            }
            let proof = this
                .sequencer
                .consistency_proof(old_size, new_size)
                .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
            Ok(ConsistencyResponse {
                old_size,
                new_size,
                proof: proof.iter().map(|h| h.to_vec()).collect(),
            })
        })
        .await
    }

    /// Query results as JSON, each leaf checked against the tree and, if asked, proven
    /// included in the latest signed checkpoint (or the one of size `at`).
    fn with_proofs(
        &self,
        entries: Vec<StoredEntry>,
        proofs: bool,
        at: Option<u64>,
    ) -> Result<Vec<EntryJson>, ServiceError> {
        let checkpoint = match (proofs, at) {
            (_, Some(size)) => Some(self.store.checkpoint(size)?.ok_or_else(|| {
                ServiceError::NotFound(format!("no signed checkpoint of size {size}"))
            })?),
            (true, None) => self.store.latest_checkpoint()?,
            (false, None) => None,
        };
        entries
            .into_iter()
            .map(|stored| {
                // A leaf rewritten on disk is an error, never an answer.
                self.sequencer.check(&stored)?;
                let record = LogRecord::from_leaf(&stored.entry.leaf).map_err(|source| {
                    ServiceError::BadLeaf {
                        index: stored.index,
                        source,
                    }
                })?;
                let proof = match &checkpoint {
                    Some(c) if stored.index < c.size => Some(InclusionJson {
                        hashes: self
                            .sequencer
                            .inclusion_proof(stored.index, c.size)?
                            .iter()
                            .map(|h| h.to_vec())
                            .collect(),
                        checkpoint: c.note.clone(),
                    }),
                    _ => None,
                };
                Ok(EntryJson {
                    index: stored.index,
                    received_at_ms: record.received_at_ms,
                    tenant: record.tenant,
                    agent_id: record.agent_id,
                    verdict: record.verdict,
                    reason: record.reason,
                    detail: record.detail,
                    attestation_id: record.attestation_id,
                    policy_hash: record.policy_hash,
                    ear: record.ear,
                    appraisal_policy: record.appraisal_policy,
                    leaf: stored.entry.leaf,
                    proof,
                })
            })
            .collect()
    }
}

/// Incidents, as the caller's tenant sees them and its operators change them.
impl Ledger {
    /// Incidents of the caller's tenant, ascending by id (the latest page).
    pub async fn incidents(
        self: &Arc<Self>,
        who: &AgentIdentity,
        states: Option<IncidentStates>,
        since_ms: Option<u64>,
    ) -> Result<IncidentsResponse, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            Ok(IncidentsResponse {
                incidents: this.store.incidents(&IncidentQuery {
                    tenant: Some(tenant),
                    states,
                    since_ms,
                    limit: MAX_PAGE,
                })?,
            })
        })
        .await
    }

    /// One incident of the caller's tenant.
    pub async fn incident(
        self: &Arc<Self>,
        who: &AgentIdentity,
        id: u64,
    ) -> Result<Incident, ServiceError> {
        let (this, tenant) = (self.clone(), who.tenant.clone());
        blocking(move || {
            this.store
                .incident(&tenant, id)?
                .ok_or_else(|| ServiceError::NotFound(format!("no incident {id} of this tenant")))
        })
        .await
    }

    /// An operator acknowledges (`resolve` false) or resolves an incident of its tenant;
    /// the change is logged, and a resolve is notified like the ledger's own.
    pub async fn change_incident(
        &self,
        who: &AgentIdentity,
        id: u64,
        resolve: bool,
        reason: String,
    ) -> Result<Incident, ServiceError> {
        if who.role != Role::Operator {
            return Err(ServiceError::WrongRole {
                role: who.role,
                what: "only an operator acknowledges or resolves incidents",
            });
        }
        if reason.trim().is_empty() || reason.len() > MAX_REASON {
            return Err(ServiceError::BadRequest(format!(
                "the reason must be 1..={MAX_REASON} bytes of text"
            )));
        }
        self.require_sequencer()?;
        let change = IncidentChange {
            by: who.to_uri(),
            at_ms: attestor_verify::time::now_ms(),
            reason,
        };
        let book = self.alerter.incidents();
        let changed = if resolve {
            book.resolve(&who.tenant, id, change).await
        } else {
            book.acknowledge(&who.tenant, id, change).await
        };
        let incident = changed.map_err(|e| match e {
            IncidentError::Store(e @ StoreError::UnknownIncident { .. }) => {
                ServiceError::NotFound(e.to_string())
            }
            IncidentError::Store(e @ StoreError::IncidentState { .. }) => {
                ServiceError::Conflict(e.to_string())
            }
            IncidentError::Store(e) => ServiceError::Store(e),
            IncidentError::Journal(e) => ServiceError::Append(e),
            IncidentError::Task(e) => ServiceError::Task(e),
            IncidentError::NotSequencer => ServiceError::NotSequencer,
        })?;
        if resolve {
            self.alerter.notify(&incident, None);
        }
        Ok(incident)
    }
}

/// Longest reason an operator may give.
pub const MAX_REASON: usize = 1024;

fn receipt_json(r: Receipt) -> ReceiptJson {
    ReceiptJson {
        index: r.index,
        received_at_ms: r.received_at_ms,
        leaf_hash: r.leaf_hash.to_vec(),
        inclusion_proof: r.inclusion_proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint: r.checkpoint,
    }
}
