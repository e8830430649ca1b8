//! The PostgreSQL store: several ledger replicas share one PostgreSQL-compatible database
//! (PostgreSQL, CockroachDB, YugabyteDB). Same semantics as the embedded store: dense
//! indexes from 0, ledger time checked against the last entry, agents' last-seen and
//! last-accepted state updated in the append's transaction, checkpoints insert-if-absent.
//!
//! Durability: every session sets `synchronous_commit = on`, and a server with `fsync`
//! off is refused, so a commit that returned is on disk (and on synchronous standbys).
//!
//! Who appends: a one-row `sequencer_lease` table (holder, expiry on the database's
//! clock, term). [`LedgerStore::claim_sequencer`] takes or renews it; every append first
//! re-checks and renews it *in its own transaction*, so a replica whose lease expired or
//! was taken over can never append (fencing), whatever its clock or its memory says.
//! The log head (size, last time) is a one-row table taken `FOR UPDATE`, so even two
//! appenders could not interleave indexes.
//!
//! The trait is synchronous; the driver is `tokio-postgres`, run by one dedicated I/O
//! thread (a current-thread runtime and a local task set) that owns a small connection
//! pool. A call hands its work to that thread and blocks on a channel for the answer, so
//! it is safe from any thread, async reactor threads included (the sync `postgres` crate
//! would panic there), and one thread multiplexes every connection.
//!
//! Transactions that fail with a serialization conflict (SQLSTATE 40001, the normal
//! outcome under CockroachDB's SERIALIZABLE) or a deadlock (40P01) are retried.
//! Idempotent operations are also retried on a fresh connection when theirs broke; an
//! append never is (its commit may have happened): the sequencer re-reads the store.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};

use super::postgres_tls::PostgresTls;

use super::{
    from_sql, incident, recorded_state, state_rank, stored_entry, to_sql, unchanged, AcceptedState,
    ActionOutcome, AgentRecord, AgentStatus, AlertKind, EntryQuery, EntryRow, Incident,
    IncidentChange, IncidentQuery, IncidentRow, IncidentState, IncidentStates, LedgerStore,
    NewEntry, NewIncident, StoreError, StoredCheckpoint, StoredEntry, Verdict, MAX_PAGE,
};

/// [`super::INCIDENT_COLUMNS`] with the actions as text.
const INCIDENT_COLUMNS: &str = "id, tenant, agent_id, kind, summary, opened_at_ms, \
     first_index, last_index, state, acknowledged_by, acknowledged_at_ms, acknowledged_reason, \
     resolved_by, resolved_at_ms, resolved_reason, actions::TEXT";

/// Lease length when the configuration names none: a dead sequencer is replaced after
/// at most this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shortest lease accepted: renewal runs every third of it.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Connections one store keeps open at most.
const POOL_SIZE: usize = 8;
/// Time to establish a connection when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Any one store operation, retries included, fails after this long.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a transaction that keeps meeting serialization conflicts.
const MAX_ATTEMPTS: u32 = 12;

/// One versioned migration, applied in order and recorded in `schema_migrations`.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration of the schema, oldest first; `migrations/postgres/` in the repository.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "0002_snp_chip_id",
        sql: include_str!("../../migrations/postgres/0002_snp_chip_id.sql"),
    },
    Migration {
        version: 3,
        name: "0003_key_transitions",
        sql: include_str!("../../migrations/postgres/0003_key_transitions.sql"),
    },
    Migration {
        version: 4,
        name: "0004_tenant_scoped_agents",
        sql: include_str!("../../migrations/postgres/0004_tenant_scoped_agents.sql"),
    },
    Migration {
        version: 5,
        name: "0005_agent_ek_public",
        sql: include_str!("../../migrations/postgres/0005_agent_ek_public.sql"),
    },
    Migration {
        version: 6,
        name: "0006_late_verdict",
        sql: include_str!("../../migrations/postgres/0006_late_verdict.sql"),
    },
    Migration {
        version: 7,
        name: "0007_incidents",
        sql: include_str!("../../migrations/postgres/0007_incidents.sql"),
    },
    Migration {
        version: 8,
        name: "0008_cosignatures",
        sql: include_str!("../../migrations/postgres/0008_cosignatures.sql"),
    },
];

/// The newest schema version this build knows (the last of [`MIGRATIONS`]).
const SCHEMA_VERSION: &str = "8";

const ENTRY_COLUMNS: &str =
    "idx, received_at_ms, tenant, agent_id, verdict, attestation_id, leaf, leaf_hash";

const AGENT_COLUMNS: &str = "agent_id, tenant, ek_certificate, ak_public, enrolled_at_ms, \
     revoked, last_seen_at_ms, last_accepted_at_ms, last_zero_retention, last_reset_count, \
     last_restart_count, last_clock_ms, snp_chip_id, ek_public";

/// How a store handle takes part in the sequencer lease.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// How long the lease lasts without renewal.
    pub lease: Duration,
    /// This handle's identity in the lease row; unique per process.
    pub holder: String,
    /// TLS to the server (required when set; see `postgres_tls`); none: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PostgresOptions {
    /// A fresh, unique holder identity (process id + random) with the given lease.
    pub fn new(lease: Duration) -> Self {
        PostgresOptions {
            lease,
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4()),
            tls: None,
        }
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self::new(DEFAULT_LEASE)
    }
}

/// Work for the I/O thread: builds its future there, so the future need not be `Send`.
type Job = Box<dyn FnOnce(Rc<Inner>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A ledger store in a PostgreSQL-compatible database.
pub struct PostgresStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    lease: Duration,
}

/// What failed inside an operation: the driver (maybe retryable) or our own checks.
enum Failure {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The driver's Display omits the server's message; include it when there is one.
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{} ({}): {}", db.message(), db.code().code(), e)),
        // Nor the cause of a transport failure (a refused certificate, a reset).
        None => {
            let mut message = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                message.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            StoreError::Database(message)
        }
    }
}

fn code_in(e: &tokio_postgres::Error, codes: &[SqlState]) -> bool {
    e.code().is_some_and(|c| codes.contains(c))
}

/// Serialization conflicts and deadlocks: the transaction did not happen; run it again.
fn conflict(e: &tokio_postgres::Error) -> bool {
    code_in(
        e,
        &[
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ],
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(5u64 << attempt.min(7))
}

fn lease_ms(lease: Duration) -> f64 {
    lease.as_secs_f64() * 1000.0
}

/// Reads one column, refusing a type mismatch as corruption instead of panicking.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, Failure> {
    row.try_get(i)
        .map_err(|e| Failure::Store(StoreError::Corrupt(format!("column {i}: {e}"))))
}

fn entry_row(row: &Row) -> Result<StoredEntry, Failure> {
    let raw: EntryRow = (
        col(row, 0)?,
        col(row, 1)?,
        col(row, 2)?,
        col(row, 3)?,
        col(row, 4)?,
        col(row, 5)?,
        col(row, 6)?,
        col(row, 7)?,
    );
    Ok(stored_entry(raw)?)
}

fn agent_row(row: &Row) -> Result<AgentRecord, Failure> {
    let opt = |v: Option<i64>| v.map(from_sql).transpose();
    let counter = |v: Option<i64>| {
        v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("TPM counter {v}"))))
            .transpose()
    };
    let zero_retention: Option<bool> = col(row, 8)?;
    let clock = match (
        counter(col(row, 9)?)?,
        counter(col(row, 10)?)?,
        opt(col(row, 11)?)?,
    ) {
        (Some(reset), Some(restart), Some(clock)) => Some((reset, restart, clock)),
        _ => None,
    };
    Ok(AgentRecord {
        agent_id: col(row, 0)?,
        tenant: col(row, 1)?,
        ek_certificate: col(row, 2)?,
        ak_public: col(row, 3)?,
        snp_chip_id: col(row, 12)?,
        ek_public: col(row, 13)?,
        enrolled_at_ms: from_sql(col(row, 4)?)?,
        revoked: col(row, 5)?,
        last_seen_at_ms: opt(col(row, 6)?)?,
        last_accepted_at_ms: opt(col(row, 7)?)?,
        last_accepted: zero_retention.map(|zero_retention| AcceptedState {
            zero_retention,
            tpm_clock: clock,
        }),
    })
}

fn incident_row(row: &Row) -> Result<Incident, Failure> {
    Ok(incident(IncidentRow {
        id: col(row, 0)?,
        tenant: col(row, 1)?,
        agent_id: col(row, 2)?,
        kind: col(row, 3)?,
        summary: col(row, 4)?,
        opened_at_ms: col(row, 5)?,
        first_index: col(row, 6)?,
        last_index: col(row, 7)?,
        state: col(row, 8)?,
        acknowledged: (col(row, 9)?, col(row, 10)?, col(row, 11)?),
        resolved: (col(row, 12)?, col(row, 13)?, col(row, 14)?),
        actions: col(row, 15)?,
    })?)
}

fn checkpoint_row(row: &Row) -> Result<StoredCheckpoint, Failure> {
    Ok(StoredCheckpoint {
        size: from_sql(col(row, 0)?)?,
        note: col(row, 1)?,
        created_at_ms: from_sql(col(row, 2)?)?,
    })
}

/// A pooled connection and the pool slot it occupies.
struct Pooled<'a> {
    client: Client,
    _slot: SemaphorePermit<'a>,
}

/// The I/O thread's state: connection settings, idle connections, lease identity.
struct Inner {
    config: Config,
    tls: Option<PostgresTls>,
    idle: RefCell<Vec<Client>>,
    slots: Semaphore,
    holder: String,
    lease_ms: f64,
}

impl Inner {
    async fn connect(&self) -> Result<Client, StoreError> {
        // The connection task ends when the client is dropped or the server goes away.
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(pg)?;
                tokio::task::spawn_local(connection);
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
                tokio::task::spawn_local(connection);
                client
            }
        };
        // Acknowledged means flushed to disk. Engines without the setting (CockroachDB
        // commits through consensus) refuse it as unknown or unsupported: fine.
        if let Err(e) = client.batch_execute("SET synchronous_commit = on").await {
            if !code_in(
                &e,
                &[
                    SqlState::UNDEFINED_OBJECT,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    SqlState::CANT_CHANGE_RUNTIME_PARAM,
                ],
            ) {
                return Err(pg(e));
            }
        }
        Ok(client)
    }

    async fn checkout(&self) -> Result<Pooled<'_>, StoreError> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Database("the connection pool is closed".into()))?;
        let idle = loop {
            let next = self.idle.borrow_mut().pop();
            match next {
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(Pooled {
            client,
            _slot: slot,
        })
    }

    fn checkin(&self, pooled: Pooled<'_>) {
        if !pooled.client.is_closed() {
            self.idle.borrow_mut().push(pooled.client);
        }
    }

    /// Runs `op` on a pooled connection, again after serialization conflicts, and, when
    /// `idempotent`, again on a fresh connection after the old one broke.
    async fn retry<T>(
        &self,
        idempotent: bool,
        mut op: impl AsyncFnMut(&mut Client) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut pooled = self.checkout().await?;
        let mut attempt = 0;
        loop {
            let result = op(&mut pooled.client).await;
            let broken = pooled.client.is_closed();
            match result {
                Ok(value) => {
                    self.checkin(pooled);
                    return Ok(value);
                }
                Err(Failure::Pg(e)) if attempt + 1 < MAX_ATTEMPTS && conflict(&e) => {}
                Err(Failure::Pg(_)) if attempt + 1 < MAX_ATTEMPTS && idempotent && broken => {}
                Err(Failure::Pg(e)) => return Err(pg(e)),
                Err(Failure::Store(e)) => {
                    self.checkin(pooled);
                    return Err(e);
                }
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
            if pooled.client.is_closed() {
                drop(pooled);
                pooled = self.checkout().await?;
            }
        }
    }

    /// Refuses a server that does not flush commits to disk.
    async fn check_durability(&self, client: &Client) -> Result<(), StoreError> {
        match client
            .query_opt("SELECT current_setting('fsync')", &[])
            .await
        {
            Ok(Some(row)) => {
                let fsync: String = col(&row, 0)?;
                if fsync.eq_ignore_ascii_case("off") {
                    return Err(StoreError::Database(
                        "the server runs with fsync = off: acknowledged entries could be lost"
                            .into(),
                    ));
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            // Engines without the setting (or the function) manage durability themselves.
            Err(e)
                if code_in(
                    &e,
                    &[
                        SqlState::UNDEFINED_OBJECT,
                        SqlState::UNDEFINED_FUNCTION,
                        SqlState::FEATURE_NOT_SUPPORTED,
                    ],
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(pg(e)),
        }
    }

    /// Applies the migrations this database lacks, each in the transaction that records
    /// it; a concurrent opener waits on the record's key and then skips it.
    async fn migrate(&self) -> Result<(), StoreError> {
        {
            let pooled = self.checkout().await?;
            self.check_durability(&pooled.client).await?;
            self.checkin(pooled);
        }
        self.retry(true, async |c: &mut Client| {
            // Two openers racing on CREATE TABLE IF NOT EXISTS: one may see the other's
            // half-created type; the retry finds the table.
            match c
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (\
                     version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
            {
                // The loser of the race meets the winner's table, or the row type
                // PostgreSQL creates with it (42710), or the catalog's unique index.
                Err(e)
                    if code_in(
                        &e,
                        &[
                            SqlState::UNIQUE_VIOLATION,
                            SqlState::DUPLICATE_TABLE,
                            SqlState::DUPLICATE_OBJECT,
                        ],
                    ) =>
                {
                    tokio::time::sleep(backoff(3)).await;
                    c.batch_execute("SELECT 1 FROM schema_migrations LIMIT 1")
                        .await?;
                    Ok(())
                }
                other => Ok(other?),
            }
        })
        .await?;
        let found: Option<i64> = self
            .retry(true, async |c: &mut Client| {
                let row = c
                    .query_one("SELECT max(version) FROM schema_migrations", &[])
                    .await?;
                col(&row, 0)
            })
            .await?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(found) = found.filter(|&v| v > latest) {
            return Err(StoreError::SchemaVersion {
                found: found.to_string(),
                expected: SCHEMA_VERSION,
            });
        }
        for m in MIGRATIONS {
            self.retry(true, async |c: &mut Client| {
                let tx = c.transaction().await?;
                let fresh = tx
                    .execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2) \
                         ON CONFLICT (version) DO NOTHING",
                        &[&m.version, &m.name],
                    )
                    .await?;
                if fresh == 1 {
                    tx.batch_execute(m.sql).await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn append(&self, entries: &[NewEntry]) -> Result<u64, StoreError> {
        // Never retried on a broken connection: the commit may have happened.
        self.retry(false, async |c: &mut Client| {
            let tx = c.transaction().await?;
            // Fencing: only the current holder, before expiry, appends; this renews it.
            let holds = tx
                .execute(
                    "UPDATE sequencer_lease SET \
                     expires_at = now() + $2::FLOAT8 * INTERVAL '1 millisecond' \
                     WHERE id = 1 AND holder = $1 AND expires_at > now()",
                    &[&self.holder, &self.lease_ms],
                )
                .await?;
            if holds != 1 {
                return Err(StoreError::NotSequencer.into());
            }
            let head = tx
                .query_one(
                    "SELECT size, last_received_at_ms FROM log_head WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await?;
            let first = from_sql(col(&head, 0)?)?;
            let last: Option<i64> = col(&head, 1)?;
            let mut last_ms = last.map(from_sql).transpose()?.unwrap_or(0);
            if entries.is_empty() {
                return Ok(first);
            }
            let n = entries.len();
            let (mut idx, mut at) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut seen: BTreeMap<(&str, &str), i64> = BTreeMap::new();
            let mut accepted: BTreeMap<(&str, &str), (i64, &AcceptedState)> = BTreeMap::new();
            for (offset, e) in entries.iter().enumerate() {
                if e.received_at_ms < last_ms {
                    return Err(StoreError::TimeOrder {
                        received_at_ms: e.received_at_ms,
                        last_ms,
                    }
                    .into());
                }
                last_ms = e.received_at_ms;
                let ms = to_sql(e.received_at_ms)?;
                idx.push(to_sql(first + offset as u64)?);
                at.push(ms);
                // Per agent, its last entry of the batch wins, as if applied in order.
                let key = (e.tenant.as_str(), e.agent_id.as_str());
                seen.insert(key, ms);
                if let Some(state) = &e.accepted_state {
                    accepted.insert(key, (ms, state));
                }
            }
            let tenant: Vec<&str> = entries.iter().map(|e| e.tenant.as_str()).collect();
            let agent: Vec<&str> = entries.iter().map(|e| e.agent_id.as_str()).collect();
            let verdict: Vec<&str> = entries.iter().map(|e| e.verdict.as_str()).collect();
            let attestation: Vec<Option<&str>> = entries
                .iter()
                .map(|e| e.attestation_id.as_deref())
                .collect();
            let leaf: Vec<&[u8]> = entries.iter().map(|e| e.leaf.as_slice()).collect();
            let hash: Vec<&[u8]> = entries.iter().map(|e| e.leaf_hash.as_slice()).collect();
            let submitted: Vec<Option<&[u8]>> = entries
                .iter()
                .map(|e| e.submission_hash.as_ref().map(|h| h.as_slice()))
                .collect();
            tx.execute(
                "INSERT INTO entries (idx, received_at_ms, tenant, agent_id, verdict, \
                 attestation_id, leaf, leaf_hash, submission_hash) SELECT * FROM \
                 unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
                 $6::TEXT[], $7::BYTEA[], $8::BYTEA[], $9::BYTEA[])",
                &[
                    &idx,
                    &at,
                    &tenant,
                    &agent,
                    &verdict,
                    &attestation,
                    &leaf,
                    &hash,
                    &submitted,
                ],
            )
            .await?;
            let mut seen_columns = (Vec::new(), Vec::new(), Vec::new());
            for ((tenant, agent), at) in seen {
                seen_columns.0.push(tenant);
                seen_columns.1.push(agent);
                seen_columns.2.push(at);
            }
            tx.execute(
                "UPDATE agents SET last_seen_at_ms = v.at \
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS v(tenant, agent_id, at) \
                 WHERE agents.tenant = v.tenant AND agents.agent_id = v.agent_id",
                &[&seen_columns.0, &seen_columns.1, &seen_columns.2],
            )
            .await?;
            if !accepted.is_empty() {
                let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut clocks = (Vec::new(), Vec::new(), Vec::new());
                for ((tenant, agent), (ms, state)) in &accepted {
                    columns.3.push(*tenant);
                    columns.0.push(*agent);
                    columns.1.push(*ms);
                    columns.2.push(state.zero_retention);
                    let (reset, restart, clock) = match state.tpm_clock {
                        Some((a, b, c)) => {
                            (Some(i64::from(a)), Some(i64::from(b)), Some(to_sql(c)?))
                        }
                        None => (None, None, None),
                    };
                    clocks.0.push(reset);
                    clocks.1.push(restart);
                    clocks.2.push(clock);
                }
                let updated = tx
                    .query(
                        "UPDATE agents SET last_accepted_at_ms = v.at, \
                         last_zero_retention = v.zr, last_reset_count = v.reset, \
                         last_restart_count = v.restart, last_clock_ms = v.clock \
                         FROM unnest($1::TEXT[], $2::BIGINT[], $3::BOOL[], $4::BIGINT[], \
                         $5::BIGINT[], $6::BIGINT[], $7::TEXT[]) \
                         AS v(agent_id, at, zr, reset, restart, clock, tenant) \
                         WHERE agents.tenant = v.tenant AND agents.agent_id = v.agent_id \
                         RETURNING agents.tenant, agents.agent_id",
                        &[
                            &columns.0, &columns.1, &columns.2, &clocks.0, &clocks.1, &clocks.2,
                            &columns.3,
                        ],
                    )
                    .await?;
                let known = updated
                    .iter()
                    .map(|r| Ok((col::<String>(r, 0)?, col::<String>(r, 1)?)))
                    .collect::<Result<BTreeSet<_>, Failure>>()?;
                let unknown = entries
                    .iter()
                    .filter(|e| e.accepted_state.is_some())
                    .find(|e| !known.contains(&(e.tenant.clone(), e.agent_id.clone())));
                if let Some(e) = unknown {
                    return Err(StoreError::UnknownAgent {
                        tenant: e.tenant.clone(),
                        agent_id: e.agent_id.clone(),
                    }
                    .into());
                }
            }
            tx.execute(
                "UPDATE log_head SET size = $1, last_received_at_ms = $2 WHERE id = 1",
                &[&to_sql(first + n as u64)?, &to_sql(last_ms)?],
            )
            .await?;
            tx.commit().await?;
            Ok(first)
        })
        .await
    }

    async fn head(&self) -> Result<(u64, Option<u64>), StoreError> {
        self.retry(true, async |c: &mut Client| {
            let row = c
                .query_one(
                    "SELECT size, last_received_at_ms FROM log_head WHERE id = 1",
                    &[],
                )
                .await?;
            let last: Option<i64> = col(&row, 1)?;
            Ok((from_sql(col(&row, 0)?)?, last.map(from_sql).transpose()?))
        })
        .await
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let (lo, hi) = (to_sql(from)?, to_sql(to)?);
        self.retry(true, async |c: &mut Client| {
            let rows = c
                .query(
                    "SELECT idx, leaf_hash FROM entries WHERE idx >= $1 AND idx < $2 \
                     ORDER BY idx",
                    &[&lo, &hi],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (expected, row) in (from..).zip(&rows) {
                let idx = from_sql(col(row, 0)?)?;
                if idx != expected {
                    return Err(StoreError::Corrupt(format!("entry {expected} is missing")).into());
                }
                let hash: Vec<u8> = col(row, 1)?;
                out.push(
                    hash.try_into()
                        .map_err(|_| StoreError::Corrupt(format!("leaf hash of entry {idx}")))?,
                );
            }
            Ok(out)
        })
        .await
    }

    /// Entries of a query built from the filters present only, so every filter can use
    /// its index.
    async fn query(&self, q: &EntryQuery) -> Result<Vec<StoredEntry>, StoreError> {
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE TRUE");
        let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut filter = |column: &str, op: &str, value: Box<dyn ToSql + Sync>| {
            params.push(value);
            sql.push_str(&format!(" AND {column} {op} ${}", params.len()));
        };
        if let Some(v) = &q.tenant {
            filter("tenant", "=", Box::new(v.clone()));
        }
        if let Some(v) = &q.agent_id {
            filter("agent_id", "=", Box::new(v.clone()));
        }
        if let Some(v) = &q.attestation_id {
            filter("attestation_id", "=", Box::new(v.clone()));
        }
        if let Some(v) = q.verdict {
            filter("verdict", "=", Box::new(v.as_str()));
        }
        if let Some(v) = q.from_ms {
            filter("received_at_ms", ">=", Box::new(to_sql(v)?));
        }
        if let Some(v) = q.to_ms {
            filter("received_at_ms", "<", Box::new(to_sql(v)?));
        }
        if let Some(v) = q.after_index {
            filter("idx", ">", Box::new(to_sql(v)?));
        }
        params.push(Box::new(i64::from(q.limit.min(MAX_PAGE))));
        sql.push_str(&format!(" ORDER BY idx LIMIT ${}", params.len()));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        self.retry(true, async |c: &mut Client| {
            let rows = c.query(&sql, &refs).await?;
            rows.iter().map(entry_row).collect()
        })
        .await
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.retry(true, async |c: &mut Client| {
            Ok(c.query(sql, params).await?)
        })
        .await
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.retry(true, async |c: &mut Client| {
            Ok(c.execute(sql, params).await?)
        })
        .await
    }
}

impl From<Failure> for StoreError {
    fn from(e: Failure) -> Self {
        match e {
            Failure::Store(e) => e,
            Failure::Pg(e) => pg(e),
        }
    }
}

/// Converts the first row (if any) with `convert`.
fn first<T>(
    rows: Vec<Row>,
    convert: impl Fn(&Row) -> Result<T, Failure>,
) -> Result<Option<T>, StoreError> {
    Ok(rows.first().map(convert).transpose()?)
}

/// Converts every row with `convert`.
fn all<T>(
    rows: Vec<Row>,
    convert: impl Fn(&Row) -> Result<T, Failure>,
) -> Result<Vec<T>, StoreError> {
    Ok(rows.iter().map(convert).collect::<Result<_, _>>()?)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// checks that it is durable and applies the missing migrations.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        match (&options.tls, config.get_ssl_mode()) {
            (Some(_), SslMode::Disable) => {
                return Err(StoreError::Database(
                    "the URL says sslmode=disable but TLS to the database is configured".into(),
                ))
            }
            // Never fall back to plaintext when TLS is configured (tokio-postgres's
            // default, `prefer`, would).
            (Some(_), _) => {
                config.ssl_mode(SslMode::Require);
            }
            (None, SslMode::Require) => {
                return Err(StoreError::Database(
                    "the URL says sslmode=require but no TLS to the database is configured \
                     (storage_tls)"
                        .into(),
                ))
            }
            (None, _) => {}
        }
        if options.lease < MIN_LEASE {
            return Err(StoreError::Database(format!(
                "the sequencer lease must last at least {} s",
                MIN_LEASE.as_secs()
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start the I/O runtime: {e}")))?;
        let inner = Inner {
            config,
            tls: options.tls.map(PostgresTls::new),
            idle: RefCell::new(Vec::new()),
            slots: Semaphore::new(POOL_SIZE),
            holder: options.holder,
            lease_ms: lease_ms(options.lease),
        };
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("postgres-io".into())
            .spawn(move || {
                let inner = Rc::new(inner);
                let local = tokio::task::LocalSet::new();
                // Ends once the store (the only sender) is dropped.
                local.block_on(&runtime, async move {
                    while let Some(job) = queue.recv().await {
                        tokio::task::spawn_local(job(inner.clone()));
                    }
                });
            })
            .map_err(|e| StoreError::Database(format!("cannot start the I/O thread: {e}")))?;
        let store = PostgresStore {
            jobs,
            lease: options.lease,
        };
        store.run(async |db: Rc<Inner>| db.migrate().await)?;
        Ok(store)
    }

    /// Runs `work` on the I/O thread and waits for its answer, bounded in time.
    fn run<T: Send + 'static>(
        &self,
        work: impl AsyncFnOnce(Rc<Inner>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Database("the PostgreSQL I/O thread has stopped".into());
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |inner| {
            Box::pin(async move {
                let result = tokio::time::timeout(OPERATION_TIMEOUT, work(inner))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Database(format!(
                            "no answer from PostgreSQL within {} s",
                            OPERATION_TIMEOUT.as_secs()
                        )))
                    });
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// The first checkpoint (by `clause`, with `size` as `$1`); none beyond the storable
    /// range.
    fn checkpoint_where(
        &self,
        clause: &'static str,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.run(async move |db: Rc<Inner>| {
            let sql = format!("SELECT size, note, created_at_ms FROM checkpoints {clause}");
            first(db.rows(&sql, &[&size]).await?, checkpoint_row)
        })
    }
}

impl PostgresStore {
    /// Moves one incident of `tenant` to `state` (`acknowledged` from open only,
    /// `resolved` from any unresolved state), recording `change` in that state's columns.
    fn change_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
        state: &'static str,
    ) -> Result<Incident, StoreError> {
        let Ok(sql_id) = i64::try_from(id) else {
            return Err(unchanged(tenant, id, None, state));
        };
        let from = if state == "resolved" {
            "state <> 'resolved'"
        } else {
            "state = 'open'"
        };
        let (tenant, by, at, reason) = (
            tenant.to_string(),
            change.by.clone(),
            to_sql(change.at_ms)?,
            change.reason.clone(),
        );
        let (changed, tenant) = self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "UPDATE incidents SET state = '{state}', {state}_by = $3, {state}_at_ms = $4, \
                 {state}_reason = $5 WHERE id = $1 AND tenant = $2 AND {from} \
                 RETURNING {INCIDENT_COLUMNS}"
            );
            let rows = db
                .rows(&sql, &[&sql_id, &tenant, &by, &at, &reason])
                .await?;
            Ok((first(rows, incident_row)?, tenant))
        })?;
        match changed {
            Some(incident) => Ok(incident),
            None => Err(unchanged(&tenant, id, self.incident(&tenant, id)?, state)),
        }
    }
}

impl LedgerStore for PostgresStore {
    fn raise_incident(&self, new: &NewIncident) -> Result<(Incident, bool), StoreError> {
        let new = new.clone();
        let at = to_sql(new.at_ms)?;
        let index = new.index.map(to_sql).transpose()?;
        self.run(async move |db: Rc<Inner>| {
            let kind = new.kind.name();
            // Insert, or extend the unresolved one; a racing replica's insert or an
            // operator's resolve in between sends it round again.
            for _ in 0..3 {
                let inserted = db
                    .rows(
                        &format!(
                            "INSERT INTO incidents (tenant, agent_id, kind, summary, \
                             opened_at_ms, first_index, last_index, state) \
                             VALUES ($1, $2, $3, $4, $5, $6, $6, 'open') \
                             ON CONFLICT (tenant, agent_id, kind) WHERE state <> 'resolved' \
                             DO NOTHING RETURNING {INCIDENT_COLUMNS}"
                        ),
                        &[&new.tenant, &new.agent_id, &kind, &new.summary, &at, &index],
                    )
                    .await?;
                if let Some(incident) = first(inserted, incident_row)? {
                    return Ok((incident, true));
                }
                let extended = db
                    .rows(
                        &format!(
                            "UPDATE incidents SET summary = $4, \
                             last_index = coalesce($5, last_index), \
                             first_index = coalesce(first_index, $5) \
                             WHERE tenant = $1 AND agent_id = $2 AND kind = $3 \
                             AND state <> 'resolved' RETURNING {INCIDENT_COLUMNS}"
                        ),
                        &[&new.tenant, &new.agent_id, &kind, &new.summary, &index],
                    )
                    .await?;
                if let Some(incident) = first(extended, incident_row)? {
                    return Ok((incident, false));
                }
            }
            Err(StoreError::Database(
                "the incident kept changing while it was raised".into(),
            ))
        })
    }

    fn incident(&self, tenant: &str, id: u64) -> Result<Option<Incident>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let tenant = tenant.to_string();
        self.run(async move |db: Rc<Inner>| {
            let sql =
                format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1 AND tenant = $2");
            first(db.rows(&sql, &[&id, &tenant]).await?, incident_row)
        })
    }

    fn incidents(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let state = match q.states {
            None => "TRUE",
            Some(IncidentStates::Unresolved) => "state <> 'resolved'",
            Some(IncidentStates::Only(_)) => "state = $2",
        };
        let since = if q.since_ms.is_some() {
            "(state <> 'resolved' OR resolved_at_ms >= $3)"
        } else {
            "TRUE"
        };
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE ($1::TEXT IS NULL OR tenant = $1) \
             AND ($2::TEXT IS NULL OR {state}) AND ($3::BIGINT IS NULL OR {since}) \
             ORDER BY id DESC LIMIT $4"
        );
        let only = match q.states {
            Some(IncidentStates::Only(s)) => Some(s.name().to_string()),
            Some(IncidentStates::Unresolved) => Some("unresolved".to_string()),
            None => None,
        };
        let (tenant, since_ms, limit) = (
            q.tenant.clone(),
            q.since_ms.map(to_sql).transpose()?,
            i64::from(q.limit.min(MAX_PAGE)),
        );
        self.run(async move |db: Rc<Inner>| {
            let rows = db.rows(&sql, &[&tenant, &only, &since_ms, &limit]).await?;
            let mut found = all(rows, incident_row)?;
            found.reverse();
            Ok(found)
        })
    }

    fn acknowledge_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError> {
        self.change_incident(tenant, id, change, "acknowledged")
    }

    fn resolve_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError> {
        self.change_incident(tenant, id, change, "resolved")
    }

    fn resolve_incidents_of(
        &self,
        tenant: &str,
        agent_id: &str,
        kinds: &[AlertKind],
        change: &IncidentChange,
    ) -> Result<Vec<Incident>, StoreError> {
        let kinds: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
        let (tenant, agent_id) = (tenant.to_string(), agent_id.to_string());
        let (by, at, reason) = (
            change.by.clone(),
            to_sql(change.at_ms)?,
            change.reason.clone(),
        );
        self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "UPDATE incidents SET state = 'resolved', resolved_by = $4, \
                 resolved_at_ms = $5, resolved_reason = $6 WHERE tenant = $1 \
                 AND agent_id = $2 AND kind = ANY($3) AND state <> 'resolved' \
                 RETURNING {INCIDENT_COLUMNS}"
            );
            let rows = db
                .rows(&sql, &[&tenant, &agent_id, &kinds, &by, &at, &reason])
                .await?;
            all(rows, incident_row)
        })
    }

    fn mark_recorded(&self, tenant: &str, id: u64, state: IncidentState) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE incidents SET recorded = $3 WHERE id = $1 AND tenant = $2 \
             AND (recorded IS NULL OR {} < {})",
            state_rank("recorded"),
            state_rank("$3::TEXT")
        );
        let (id, tenant) = (to_sql(id)?, tenant.to_string());
        self.run(async move |db: Rc<Inner>| {
            db.execute(&sql, &[&id, &tenant, &state.name()])
                .await
                .map(drop)
        })
    }

    fn unrecorded_incidents(
        &self,
        limit: u32,
    ) -> Result<Vec<(Incident, Option<IncidentState>)>, StoreError> {
        let limit = i64::from(limit.min(MAX_PAGE));
        self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "SELECT {INCIDENT_COLUMNS}, recorded FROM incidents \
                 WHERE recorded IS DISTINCT FROM state ORDER BY id LIMIT $1"
            );
            let rows = db.rows(&sql, &[&limit]).await?;
            all(rows, |row| {
                let recorded: Option<String> = col(row, 16)?;
                Ok((incident_row(row)?, recorded_state(recorded)?))
            })
        })
    }

    fn record_action(
        &self,
        tenant: &str,
        id: u64,
        outcome: &ActionOutcome,
    ) -> Result<(), StoreError> {
        let one = serde_json::to_string(&[outcome])
            .map_err(|e| StoreError::Corrupt(format!("incident {id} action: {e}")))?;
        let (tenant, sql_id) = (tenant.to_string(), to_sql(id)?);
        self.run(async move |db: Rc<Inner>| {
            let n = db
                .execute(
                    "UPDATE incidents SET actions = actions || $3::TEXT::JSONB \
                     WHERE id = $1 AND tenant = $2",
                    &[&sql_id, &tenant, &one],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::UnknownIncident { tenant, id });
            }
            Ok(())
        })
    }

    fn append(&self, entries: &[NewEntry]) -> Result<u64, StoreError> {
        let entries = entries.to_vec();
        self.run(async move |db: Rc<Inner>| db.append(&entries).await)
    }

    fn len(&self) -> Result<u64, StoreError> {
        Ok(self.run(async |db: Rc<Inner>| db.head().await)?.0)
    }

    fn last_received_at_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.run(async |db: Rc<Inner>| db.head().await)?.1)
    }

    fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        self.run(async move |db: Rc<Inner>| db.leaf_hashes(from, to).await)
    }

    fn entry(&self, index: u64) -> Result<Option<StoredEntry>, StoreError> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        self.run(async move |db: Rc<Inner>| {
            let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE idx = $1");
            first(db.rows(&sql, &[&index]).await?, entry_row)
        })
    }

    fn query(&self, query: &EntryQuery) -> Result<Vec<StoredEntry>, StoreError> {
        let query = query.clone();
        self.run(async move |db: Rc<Inner>| db.query(&query).await)
    }

    fn verdict_times(
        &self,
        tenant: &str,
        agent_id: &str,
        from_ms: u64,
    ) -> Result<Vec<(u64, Verdict)>, StoreError> {
        let (tenant, agent_id, from) = (tenant.to_string(), agent_id.to_string(), to_sql(from_ms)?);
        self.run(async move |db: Rc<Inner>| {
            let rows = db
                .rows(
                    "SELECT received_at_ms, verdict FROM entries WHERE tenant = $1 \
                     AND agent_id = $2 AND received_at_ms >= $3 ORDER BY idx",
                    &[&tenant, &agent_id, &from],
                )
                .await?;
            rows.iter()
                .map(|row| super::verdict_time(col(row, 0)?, col::<&str>(row, 1)?))
                .collect()
        })
    }

    fn latest_accepted(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<StoredEntry>, StoreError> {
        let (tenant, agent_id) = (tenant.to_string(), agent_id.to_string());
        self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE tenant = $1 AND agent_id = $2 \
                 AND verdict = 'accepted' ORDER BY idx DESC LIMIT 1"
            );
            first(db.rows(&sql, &[&tenant, &agent_id]).await?, entry_row)
        })
    }

    fn latest_entries_of_agents(&self) -> Result<Vec<StoredEntry>, StoreError> {
        self.run(async move |db: Rc<Inner>| {
            all(
                db.rows(super::LATEST_ENTRIES_OF_AGENTS, &[]).await?,
                entry_row,
            )
        })
    }

    fn find_submission(
        &self,
        tenant: &str,
        agent_id: &str,
        submission_hash: &[u8; 32],
    ) -> Result<Option<StoredEntry>, StoreError> {
        let (tenant, agent_id) = (tenant.to_string(), agent_id.to_string());
        let hash = submission_hash.to_vec();
        self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE submission_hash = $1 \
                 AND tenant = $2 AND agent_id = $3 ORDER BY idx LIMIT 1"
            );
            first(
                db.rows(&sql, &[&hash, &tenant, &agent_id]).await?,
                entry_row,
            )
        })
    }

    fn put_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), StoreError> {
        let (size, note, at) = (to_sql(c.size)?, c.note.clone(), to_sql(c.created_at_ms)?);
        self.run(async move |db: Rc<Inner>| {
            db.execute(
                "INSERT INTO checkpoints (size, note, created_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (size) DO NOTHING",
                &[&size, &note, &at],
            )
            .await
            .map(drop)
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.run(async |db: Rc<Inner>| {
            let rows = db
                .rows(
                    "SELECT size, note, created_at_ms FROM checkpoints ORDER BY size DESC LIMIT 1",
                    &[],
                )
                .await?;
            first(rows, checkpoint_row)
        })
    }

    fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.checkpoint_where("WHERE size = $1", size)
    }

    fn checkpoint_at_least(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.checkpoint_where("WHERE size >= $1 ORDER BY size LIMIT 1", size)
    }

    fn put_cosignature(&self, size: u64, witness: &str, line: &str) -> Result<(), StoreError> {
        let (size, witness, line) = (to_sql(size)?, witness.to_string(), line.to_string());
        self.run(async move |db: Rc<Inner>| {
            db.execute(
                "INSERT INTO cosignatures (size, witness, line) VALUES ($1, $2, $3) \
                 ON CONFLICT (size, witness) DO NOTHING",
                &[&size, &witness, &line],
            )
            .await
            .map(drop)
        })
    }

    fn cosigned_checkpoint(
        &self,
        quorum: usize,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        let Some(checkpoint) = self.checkpoint_where(super::COSIGNED, quorum as u64)? else {
            return Ok(None);
        };
        let size = to_sql(checkpoint.size)?;
        let lines = self.run(async move |db: Rc<Inner>| {
            let rows = db
                .rows(
                    "SELECT line FROM cosignatures WHERE size = $1 ORDER BY witness",
                    &[&size],
                )
                .await?;
            all(rows, |r| col(r, 0))
        })?;
        Ok(Some((checkpoint, lines)))
    }

    fn put_key_transition(&self, seq: u64, note: &str) -> Result<(), StoreError> {
        let (seq, note) = (to_sql(seq)?, note.to_string());
        let inserted = self.run(async move |db: Rc<Inner>| {
            db.execute(
                "INSERT INTO key_transitions (seq, note) VALUES ($1, $2) \
                 ON CONFLICT (seq) DO NOTHING",
                &[&seq, &note],
            )
            .await
        })?;
        if inserted == 0 {
            return Err(StoreError::KeyTransitionExists(from_sql(seq)?));
        }
        Ok(())
    }

    fn key_transitions(&self) -> Result<Vec<String>, StoreError> {
        self.run(async |db: Rc<Inner>| {
            let rows = db
                .rows("SELECT note FROM key_transitions ORDER BY seq", &[])
                .await?;
            all(rows, |r| col(r, 0))
        })
    }

    fn put_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        let a = a.clone();
        let enrolled = to_sql(a.enrolled_at_ms)?;
        self.run(async move |db: Rc<Inner>| {
            // Re-enrolled with another AK (a new TPM): its TPM clock history is forgotten;
            // the zero-retention history is kept.
            db.execute(
                "INSERT INTO agents (agent_id, tenant, ek_certificate, ak_public, \
                 enrolled_at_ms, revoked, snp_chip_id, ek_public) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant, agent_id) DO UPDATE SET \
                 ek_certificate = excluded.ek_certificate, \
                 snp_chip_id = excluded.snp_chip_id, ek_public = excluded.ek_public, \
                 enrolled_at_ms = excluded.enrolled_at_ms, revoked = excluded.revoked, \
                 last_reset_count = CASE WHEN agents.ak_public = excluded.ak_public \
                     THEN agents.last_reset_count END, \
                 last_restart_count = CASE WHEN agents.ak_public = excluded.ak_public \
                     THEN agents.last_restart_count END, \
                 last_clock_ms = CASE WHEN agents.ak_public = excluded.ak_public \
                     THEN agents.last_clock_ms END, \
                 ak_public = excluded.ak_public",
                &[
                    &a.agent_id,
                    &a.tenant,
                    &a.ek_certificate,
                    &a.ak_public,
                    &enrolled,
                    &a.revoked,
                    &a.snp_chip_id,
                    &a.ek_public,
                ],
            )
            .await
            .map(drop)
        })
    }

    fn agent(&self, tenant: &str, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let (tenant, agent_id) = (tenant.to_string(), agent_id.to_string());
        self.run(async move |db: Rc<Inner>| {
            let sql =
                format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant = $1 AND agent_id = $2");
            first(db.rows(&sql, &[&tenant, &agent_id]).await?, agent_row)
        })
    }

    fn agents(&self, tenant: Option<&str>) -> Result<Vec<AgentRecord>, StoreError> {
        let tenant = tenant.map(str::to_string);
        self.run(async move |db: Rc<Inner>| {
            let sql = format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE ($1::TEXT IS NULL OR tenant = $1) \
                 ORDER BY tenant, agent_id"
            );
            all(db.rows(&sql, &[&tenant]).await?, agent_row)
        })
    }

    fn agent_statuses(&self) -> Result<Vec<AgentStatus>, StoreError> {
        self.run(async move |db: Rc<Inner>| {
            let status = |row: &Row| -> Result<AgentStatus, Failure> {
                Ok(AgentStatus {
                    tenant: col(row, 0)?,
                    agent_id: col(row, 1)?,
                    revoked: col(row, 2)?,
                    last_accepted_at_ms: col::<Option<i64>>(row, 3)?.map(from_sql).transpose()?,
                })
            };
            all(db.rows(super::AGENT_STATUSES, &[]).await?, status)
        })
    }

    fn revoke_agent(&self, tenant: &str, agent_id: &str) -> Result<(), StoreError> {
        let (tenant, agent_id) = (tenant.to_string(), agent_id.to_string());
        self.run(async move |db: Rc<Inner>| {
            let n = db
                .execute(
                    "UPDATE agents SET revoked = TRUE WHERE tenant = $1 AND agent_id = $2",
                    &[&tenant, &agent_id],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::UnknownAgent { tenant, agent_id });
            }
            Ok(())
        })
    }

    fn claim_sequencer(&self) -> Result<Option<u64>, StoreError> {
        self.run(async |db: Rc<Inner>| {
            // Renewed by its holder, or taken over once expired (database clock); the
            // term moves on when the holder changes.
            let rows = db
                .rows(
                    "UPDATE sequencer_lease SET \
                     term = CASE WHEN holder = $1 THEN term ELSE term + 1 END, \
                     holder = $1, \
                     expires_at = now() + $2::FLOAT8 * INTERVAL '1 millisecond' \
                     WHERE id = 1 AND (holder = $1 OR expires_at <= now()) RETURNING term",
                    &[&db.holder, &db.lease_ms],
                )
                .await?;
            first(rows, |row| Ok(from_sql(col(row, 0)?)?))
        })
    }

    fn release_sequencer(&self) -> Result<(), StoreError> {
        self.run(async |db: Rc<Inner>| {
            db.execute(
                "UPDATE sequencer_lease SET expires_at = now() WHERE id = 1 AND holder = $1",
                &[&db.holder],
            )
            .await
            .map(drop)
        })
    }

    fn lease_renewal(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_the_schema_version_is_the_last() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
        assert_eq!(
            MIGRATIONS.last().map(|m| m.version.to_string()).as_deref(),
            Some(SCHEMA_VERSION)
        );
    }

    #[test]
    fn a_malformed_url_or_a_tiny_lease_is_an_error_not_a_panic() {
        assert!(matches!(
            PostgresStore::open("postgres://host:notaport/db", PostgresOptions::default()),
            Err(StoreError::Database(_))
        ));
        let short = PostgresOptions::new(Duration::from_millis(10));
        assert!(matches!(
            PostgresStore::open("postgres://127.0.0.1/db", short),
            Err(StoreError::Database(_))
        ));
    }
}
