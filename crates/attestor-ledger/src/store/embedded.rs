//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives power loss (with `NORMAL` the last commits may be lost). One
//! connection behind a mutex: SQLite serialises writers anyway, and batching many entries
//! into one transaction (group commit) is what buys throughput, not concurrency.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    from_sql, incident, recorded_state, state_rank, stored_entry, to_sql, unchanged, AcceptedState,
    ActionOutcome, AgentRecord, AgentStatus, AlertKind, EntryQuery, EntryRow, Incident,
    IncidentChange, IncidentQuery, IncidentRow, IncidentState, IncidentStates, LedgerStore,
    NewEntry, NewIncident, StoreError, StoredCheckpoint, StoredEntry, Verdict, INCIDENT_COLUMNS,
    MAX_PAGE,
};

/// The newest schema version: the one a fresh database gets and [`UPGRADES`] end at.
const SCHEMA_VERSION: &str = "8";

/// One upgrade step: the SQL taking a database of version `to - 1` to version `to`.
struct Upgrade {
    to: u32,
    sql: &'static str,
}

/// Every upgrade step, oldest first, each to the next version; a database is taken from
/// its version to [`SCHEMA_VERSION`] by the steps after it, in one transaction. Each step
/// creates what it needs: [`SCHEMA`] is only for a new database.
const UPGRADES: &[Upgrade] = &[
    // Pins the SEV-SNP chip of an agent enrolled with `tpm+snp` evidence.
    Upgrade {
        to: 2,
        sql: "ALTER TABLE agents ADD COLUMN snp_chip_id BLOB;",
    },
    // The log head, so an append neither counts the entries nor looks for the latest
    // time (both scan the whole log): computed once here, from the entries.
    Upgrade {
        to: 3,
        sql: "CREATE TABLE log_head (
                  id INTEGER PRIMARY KEY CHECK (id = 1),
                  size INTEGER NOT NULL CHECK (size >= 0),
                  last_received_at_ms INTEGER
              );
              INSERT INTO log_head (id, size, last_received_at_ms)
                  SELECT 1, count(*), max(received_at_ms) FROM entries;",
    },
    // Agents keyed by (tenant, agent id), so one id in two tenants names two agents; each
    // entry's submission hash, so a re-sent submission finds its entry.
    Upgrade {
        to: 4,
        sql: "CREATE TABLE agents_v4 (
                  tenant TEXT NOT NULL,
                  agent_id TEXT NOT NULL,
                  ek_certificate BLOB NOT NULL,
                  ak_public BLOB NOT NULL,
                  enrolled_at_ms INTEGER NOT NULL,
                  revoked INTEGER NOT NULL DEFAULT 0,
                  last_seen_at_ms INTEGER,
                  last_accepted_at_ms INTEGER,
                  last_zero_retention INTEGER,
                  last_reset_count INTEGER,
                  last_restart_count INTEGER,
                  last_clock_ms INTEGER,
                  snp_chip_id BLOB,
                  PRIMARY KEY (tenant, agent_id)
              );
              INSERT INTO agents_v4 SELECT tenant, agent_id, ek_certificate, ak_public,
                  enrolled_at_ms, revoked, last_seen_at_ms, last_accepted_at_ms,
                  last_zero_retention, last_reset_count, last_restart_count, last_clock_ms,
                  snp_chip_id FROM agents;
              DROP TABLE agents;
              ALTER TABLE agents_v4 RENAME TO agents;
              ALTER TABLE entries ADD COLUMN submission_hash BLOB;
              DROP INDEX IF EXISTS entries_agent;
              CREATE INDEX entries_agent ON entries (tenant, agent_id, idx);
              CREATE INDEX entries_submission ON entries (submission_hash)
                  WHERE submission_hash IS NOT NULL;",
    },
    // The EK public area each TPM agent enrolled with (its key type; its hash where an
    // allow-list, not a certificate, vouched for it).
    Upgrade {
        to: 5,
        sql: "ALTER TABLE agents ADD COLUMN ek_public BLOB;",
    },
    // The `late` verdict. SQLite cannot change a CHECK constraint in place: the entries
    // move to a table that allows it, unchanged.
    Upgrade {
        to: 6,
        sql: "CREATE TABLE entries_v6 (
                  idx INTEGER PRIMARY KEY,
                  received_at_ms INTEGER NOT NULL,
                  tenant TEXT NOT NULL,
                  agent_id TEXT NOT NULL,
                  verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'refused', 'late')),
                  attestation_id TEXT,
                  leaf BLOB NOT NULL,
                  leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
                  submission_hash BLOB
                      CHECK (submission_hash IS NULL OR length(submission_hash) = 32)
              );
              INSERT INTO entries_v6 SELECT idx, received_at_ms, tenant, agent_id, verdict,
                  attestation_id, leaf, leaf_hash, submission_hash FROM entries;
              DROP TABLE entries;
              ALTER TABLE entries_v6 RENAME TO entries;
              CREATE INDEX entries_tenant_time ON entries (tenant, received_at_ms);
              CREATE INDEX entries_agent ON entries (tenant, agent_id, idx);
              CREATE INDEX entries_attestation ON entries (attestation_id);
              CREATE INDEX entries_submission ON entries (submission_hash)
                  WHERE submission_hash IS NOT NULL;",
    },
    // Durable incidents.
    Upgrade {
        to: 7,
        sql: INCIDENTS,
    },
    // Witness cosignatures of checkpoints.
    Upgrade {
        to: 8,
        sql: COSIGNATURES,
    },
];

/// Witness cosignatures (schema 8): the first line each witness gave for a size.
const COSIGNATURES: &str = "
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL REFERENCES checkpoints (size),
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
";

/// Incidents (schema 7): at most one unresolved per (tenant, agent, kind), which is what
/// deduplicates raising. Written to be run again harmlessly.
const INCIDENTS: &str = "
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    opened_at_ms INTEGER NOT NULL,
    first_index INTEGER,
    last_index INTEGER,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    acknowledged_by TEXT,
    acknowledged_at_ms INTEGER,
    acknowledged_reason TEXT,
    resolved_by TEXT,
    resolved_at_ms INTEGER,
    resolved_reason TEXT,
    actions TEXT NOT NULL DEFAULT '[]',
    recorded TEXT CHECK (recorded IN ('open', 'acknowledged', 'resolved'))
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_unresolved ON incidents (tenant, agent_id, kind)
    WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_tenant ON incidents (tenant, id);
CREATE INDEX IF NOT EXISTS incidents_unrecorded ON incidents (id) WHERE recorded IS NOT state;
";

/// The current schema, for a new database.
const SCHEMA: &str = "
-- The log's head: one row, read and moved by every append in its transaction, so indexes
-- stay dense and ledger time monotonic without counting rows.
CREATE TABLE log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0),
    last_received_at_ms INTEGER
);
INSERT INTO log_head (id, size, last_received_at_ms) VALUES (1, 0, NULL);
CREATE TABLE entries (
    idx INTEGER PRIMARY KEY,
    received_at_ms INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'refused', 'late')),
    attestation_id TEXT,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
    submission_hash BLOB CHECK (submission_hash IS NULL OR length(submission_hash) = 32)
);
CREATE INDEX entries_tenant_time ON entries (tenant, received_at_ms);
CREATE INDEX entries_agent ON entries (tenant, agent_id, idx);
CREATE INDEX entries_attestation ON entries (attestation_id);
CREATE INDEX entries_submission ON entries (submission_hash)
    WHERE submission_hash IS NOT NULL;
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE key_transitions (
    seq INTEGER PRIMARY KEY CHECK (seq >= 0),
    note TEXT NOT NULL
);
CREATE TABLE agents (
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    ek_certificate BLOB NOT NULL,
    ak_public BLOB NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_seen_at_ms INTEGER,
    last_accepted_at_ms INTEGER,
    last_zero_retention INTEGER,
    last_reset_count INTEGER,
    last_restart_count INTEGER,
    last_clock_ms INTEGER,
    snp_chip_id BLOB,
    ek_public BLOB,
    PRIMARY KEY (tenant, agent_id)
);
";

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e)
}

/// The default ledger store: one SQLite database file.
pub struct EmbeddedStore {
    conn: Mutex<Connection>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(db)?;
        // WAL + FULL: every commit is fsynced before it returns.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "journal_mode is {mode}, WAL is required"
            )));
        }
        // Operator commands (`attestor revoke`) write while the ledger runs: wait for
        // the other writer instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(db)?;
        // One writer at a time creates or upgrades the schema: IMMEDIATE takes the write
        // lock before reading the version, so a concurrent opener (`attestor revoke` while
        // the ledger starts) waits and then finds the current version. The current schema
        // is created only in a new database: an older one is upgraded step by step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .map_err(db)?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        match version {
            None => {
                tx.execute_batch(SCHEMA).map_err(db)?;
                tx.execute_batch(INCIDENTS).map_err(db)?;
                tx.execute_batch(COSIGNATURES).map_err(db)?;
                set_version(&tx)?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => {
                let from: u32 = found.parse().map_err(|_| StoreError::SchemaVersion {
                    found: found.clone(),
                    expected: SCHEMA_VERSION,
                })?;
                if from == 0 || !UPGRADES.iter().any(|u| u.to == from + 1) {
                    return Err(StoreError::SchemaVersion {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                for upgrade in UPGRADES.iter().filter(|u| u.to > from) {
                    tx.execute_batch(upgrade.sql).map_err(db)?;
                }
                set_version(&tx)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(EmbeddedStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn set_version(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
        [SCHEMA_VERSION],
    )
    .map_err(db)?;
    Ok(())
}

/// The log's size and the time of its last entry.
fn head(conn: &Connection) -> Result<(u64, Option<u64>), StoreError> {
    let (size, last): (i64, Option<i64>) = conn
        .prepare_cached("SELECT size, last_received_at_ms FROM log_head WHERE id = 1")
        .map_err(db)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?
        .ok_or_else(|| StoreError::Corrupt("the log head row is missing".into()))?;
    Ok((from_sql(size)?, last.map(from_sql).transpose()?))
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

const ENTRY_COLUMNS: &str =
    "idx, received_at_ms, tenant, agent_id, verdict, attestation_id, leaf, leaf_hash";

const AGENT_COLUMNS: &str = "agent_id, tenant, ek_certificate, ak_public, enrolled_at_ms, \
     revoked, last_seen_at_ms, last_accepted_at_ms, last_zero_retention, last_reset_count, \
     last_restart_count, last_clock_ms, snp_chip_id, ek_public";

fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    let opt_u64 = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    let zero_retention: Option<bool> = row.get(8)?;
    let clock = match (
        row.get::<_, Option<u32>>(9)?,
        row.get::<_, Option<u32>>(10)?,
        opt_u64(row.get(11)?),
    ) {
        (Some(reset), Some(restart), Some(clock)) => Some((reset, restart, clock)),
        _ => None,
    };
    Ok(AgentRecord {
        agent_id: row.get(0)?,
        tenant: row.get(1)?,
        ek_certificate: row.get(2)?,
        ak_public: row.get(3)?,
        snp_chip_id: row.get(12)?,
        ek_public: row.get(13)?,
        enrolled_at_ms: opt_u64(row.get(4)?).unwrap_or(0),
        revoked: row.get(5)?,
        last_seen_at_ms: opt_u64(row.get(6)?),
        last_accepted_at_ms: opt_u64(row.get(7)?),
        last_accepted: zero_retention.map(|zero_retention| AcceptedState {
            zero_retention,
            tpm_clock: clock,
        }),
    })
}

fn incident_from_row(row: &Row<'_>) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        agent_id: row.get(2)?,
        kind: row.get(3)?,
        summary: row.get(4)?,
        opened_at_ms: row.get(5)?,
        first_index: row.get(6)?,
        last_index: row.get(7)?,
        state: row.get(8)?,
        acknowledged: (row.get(9)?, row.get(10)?, row.get(11)?),
        resolved: (row.get(12)?, row.get(13)?, row.get(14)?),
        actions: row.get(15)?,
    })
}

fn incident_by_id(
    conn: &Connection,
    tenant: &str,
    id: u64,
) -> Result<Option<Incident>, StoreError> {
    let Ok(id) = i64::try_from(id) else {
        return Ok(None);
    };
    conn.prepare_cached(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1 AND tenant = ?2"
    ))
    .map_err(db)?
    .query_row(params![id, tenant], incident_from_row)
    .optional()
    .map_err(db)?
    .map(incident)
    .transpose()
}

/// Moves one incident of `tenant` to `state` (`acknowledged` from open only, `resolved`
/// from any unresolved state), recording `change` in that state's columns.
fn change_incident(
    conn: &mut Connection,
    tenant: &str,
    id: u64,
    change: &IncidentChange,
    state: &'static str,
) -> Result<Incident, StoreError> {
    let from = if state == "resolved" {
        "state <> 'resolved'"
    } else {
        "state = 'open'"
    };
    let tx = conn.transaction().map_err(db)?;
    let changed = match i64::try_from(id) {
        Ok(sql_id) => tx
            .execute(
                &format!(
                    "UPDATE incidents SET state = '{state}', {state}_by = ?3, \
                     {state}_at_ms = ?4, {state}_reason = ?5 \
                     WHERE id = ?1 AND tenant = ?2 AND {from}"
                ),
                params![
                    sql_id,
                    tenant,
                    change.by,
                    to_sql(change.at_ms)?,
                    change.reason
                ],
            )
            .map_err(db)?,
        Err(_) => 0,
    };
    let found = incident_by_id(&tx, tenant, id)?;
    tx.commit().map_err(db)?;
    match found {
        Some(incident) if changed == 1 => Ok(incident),
        other => Err(unchanged(tenant, id, other, state)),
    }
}

impl LedgerStore for EmbeddedStore {
    fn raise_incident(&self, new: &NewIncident) -> Result<(Incident, bool), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let index = new.index.map(to_sql).transpose()?;
        let inserted = tx
            .execute(
                "INSERT INTO incidents (tenant, agent_id, kind, summary, opened_at_ms, \
                 first_index, last_index, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'open') \
                 ON CONFLICT (tenant, agent_id, kind) WHERE state <> 'resolved' DO NOTHING",
                params![
                    new.tenant,
                    new.agent_id,
                    new.kind.name(),
                    new.summary,
                    to_sql(new.at_ms)?,
                    index
                ],
            )
            .map_err(db)?
            == 1;
        if !inserted {
            tx.execute(
                "UPDATE incidents SET summary = ?4, last_index = coalesce(?5, last_index), \
                 first_index = coalesce(first_index, ?5) \
                 WHERE tenant = ?1 AND agent_id = ?2 AND kind = ?3 AND state <> 'resolved'",
                params![
                    new.tenant,
                    new.agent_id,
                    new.kind.name(),
                    new.summary,
                    index
                ],
            )
            .map_err(db)?;
        }
        let row = tx
            .query_row(
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant = ?1 \
                     AND agent_id = ?2 AND kind = ?3 AND state <> 'resolved'"
                ),
                params![new.tenant, new.agent_id, new.kind.name()],
                incident_from_row,
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok((incident(row)?, inserted))
    }

    fn incident(&self, tenant: &str, id: u64) -> Result<Option<Incident>, StoreError> {
        incident_by_id(&self.conn(), tenant, id)
    }

    fn incidents(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let state = match q.states {
            None => "1",
            Some(IncidentStates::Unresolved) => "state <> 'resolved'",
            Some(IncidentStates::Only(_)) => "state = ?2",
        };
        let since = if q.since_ms.is_some() {
            "(state <> 'resolved' OR resolved_at_ms >= ?3)"
        } else {
            "1"
        };
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE (?1 IS NULL OR tenant = ?1) \
             AND {state} AND {since} ORDER BY id DESC LIMIT ?4"
        );
        let only = match q.states {
            Some(IncidentStates::Only(s)) => Some(s.name()),
            _ => None,
        };
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    q.tenant,
                    only,
                    q.since_ms.map(to_sql).transpose()?,
                    q.limit.min(MAX_PAGE)
                ],
                incident_from_row,
            )
            .map_err(db)?;
        let mut found = rows
            .map(|r| incident(r.map_err(db)?))
            .collect::<Result<Vec<_>, _>>()?;
        found.reverse();
        Ok(found)
    }

    fn acknowledge_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError> {
        change_incident(&mut self.conn(), tenant, id, change, "acknowledged")
    }

    fn resolve_incident(
        &self,
        tenant: &str,
        id: u64,
        change: &IncidentChange,
    ) -> Result<Incident, StoreError> {
        change_incident(&mut self.conn(), tenant, id, change, "resolved")
    }

    fn resolve_incidents_of(
        &self,
        tenant: &str,
        agent_id: &str,
        kinds: &[AlertKind],
        change: &IncidentChange,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut resolved = Vec::new();
        for kind in kinds {
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM incidents WHERE tenant = ?1 AND agent_id = ?2 \
                     AND kind = ?3 AND state <> 'resolved'",
                    params![tenant, agent_id, kind.name()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(id) = id else { continue };
            tx.execute(
                "UPDATE incidents SET state = 'resolved', resolved_by = ?2, \
                 resolved_at_ms = ?3, resolved_reason = ?4 WHERE id = ?1",
                params![id, change.by, to_sql(change.at_ms)?, change.reason],
            )
            .map_err(db)?;
            resolved.extend(incident_by_id(&tx, tenant, from_sql(id)?)?);
        }
        tx.commit().map_err(db)?;
        Ok(resolved)
    }

    fn mark_recorded(&self, tenant: &str, id: u64, state: IncidentState) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE incidents SET recorded = ?3 WHERE id = ?1 AND tenant = ?2 \
             AND (recorded IS NULL OR {} < {})",
            state_rank("recorded"),
            state_rank("?3")
        );
        self.conn()
            .execute(&sql, params![to_sql(id)?, tenant, state.name()])
            .map_err(db)?;
        Ok(())
    }

    fn unrecorded_incidents(
        &self,
        limit: u32,
    ) -> Result<Vec<(Incident, Option<IncidentState>)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {INCIDENT_COLUMNS}, recorded FROM incidents \
                 WHERE recorded IS NOT state ORDER BY id LIMIT ?1"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map([limit.min(MAX_PAGE)], |row| {
                Ok((incident_from_row(row)?, row.get::<_, Option<String>>(16)?))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (row, recorded) = row.map_err(db)?;
            Ok((incident(row)?, recorded_state(recorded)?))
        })
        .collect()
    }

    fn record_action(
        &self,
        tenant: &str,
        id: u64,
        outcome: &ActionOutcome,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut found = incident_by_id(&tx, tenant, id)?.ok_or(StoreError::UnknownIncident {
            tenant: tenant.to_string(),
            id,
        })?;
        found.actions.push(outcome.clone());
        let actions = serde_json::to_string(&found.actions)
            .map_err(|e| StoreError::Corrupt(format!("incident {id} actions: {e}")))?;
        tx.execute(
            "UPDATE incidents SET actions = ?2 WHERE id = ?1",
            params![to_sql(id)?, actions],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn append(&self, entries: &[NewEntry]) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let (first, last) = head(&tx)?;
        if entries.is_empty() {
            return Ok(first);
        }
        let mut last_ms = last.unwrap_or(0);
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO entries (idx, received_at_ms, tenant, agent_id, verdict, \
                     attestation_id, leaf, leaf_hash, submission_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db)?;
            let mut seen = tx
                .prepare_cached(
                    "UPDATE agents SET last_seen_at_ms = ?3 WHERE tenant = ?1 AND agent_id = ?2",
                )
                .map_err(db)?;
            let mut accepted = tx
                .prepare_cached(
                    "UPDATE agents SET last_accepted_at_ms = ?3, last_zero_retention = ?4, \
                     last_reset_count = ?5, last_restart_count = ?6, last_clock_ms = ?7 \
                     WHERE tenant = ?1 AND agent_id = ?2",
                )
                .map_err(db)?;
            for (offset, e) in entries.iter().enumerate() {
                if e.received_at_ms < last_ms {
                    return Err(StoreError::TimeOrder {
                        received_at_ms: e.received_at_ms,
                        last_ms,
                    });
                }
                last_ms = e.received_at_ms;
                let at = to_sql(e.received_at_ms)?;
                insert
                    .execute(params![
                        to_sql(first + offset as u64)?,
                        at,
                        e.tenant,
                        e.agent_id,
                        e.verdict.as_str(),
                        e.attestation_id,
                        e.leaf,
                        e.leaf_hash.as_slice(),
                        e.submission_hash.as_ref().map(|h| h.as_slice()),
                    ])
                    .map_err(db)?;
                seen.execute(params![e.tenant, e.agent_id, at])
                    .map_err(db)?;
                if let Some(state) = &e.accepted_state {
                    let (reset, restart, clock) = match state.tpm_clock {
                        Some((a, b, c)) => (Some(a), Some(b), Some(to_sql(c)?)),
                        None => (None, None, None),
                    };
                    let updated = accepted
                        .execute(params![
                            e.tenant,
                            e.agent_id,
                            at,
                            state.zero_retention,
                            reset,
                            restart,
                            clock
                        ])
                        .map_err(db)?;
                    if updated == 0 {
                        return Err(StoreError::UnknownAgent {
                            tenant: e.tenant.clone(),
                            agent_id: e.agent_id.clone(),
                        });
                    }
                }
            }
            tx.prepare_cached(
                "UPDATE log_head SET size = ?1, last_received_at_ms = ?2 WHERE id = 1",
            )
            .map_err(db)?
            .execute(params![
                to_sql(first + entries.len() as u64)?,
                to_sql(last_ms)?
            ])
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(first)
    }

    fn len(&self) -> Result<u64, StoreError> {
        Ok(head(&self.conn())?.0)
    }

    fn last_received_at_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(head(&self.conn())?.1)
    }

    fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT idx, leaf_hash FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![to_sql(from)?, to_sql(to)?], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for (expected, row) in (from..).zip(rows) {
            let (idx, hash) = row.map_err(db)?;
            if from_sql(idx)? != expected {
                return Err(StoreError::Corrupt(format!("entry {expected} is missing")));
            }
            out.push(
                hash.try_into()
                    .map_err(|_| StoreError::Corrupt(format!("leaf hash of entry {idx}")))?,
            );
        }
        Ok(out)
    }

    fn entry(&self, index: u64) -> Result<Option<StoredEntry>, StoreError> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE idx = ?1"),
                [index],
                entry_from_row,
            )
            .optional()
            .map_err(db)?;
        row.map(stored_entry).transpose()
    }

    fn query(&self, q: &EntryQuery) -> Result<Vec<StoredEntry>, StoreError> {
        // Filters are bound parameters; only the present ones appear in the SQL, so the
        // planner can use an index (an `?n IS NULL OR ...` term defeats every index and
        // scans the whole log). Absent parameters are still bound: SQLite accepts binding a
        // numbered parameter the statement does not use, below its largest (?8). A unary
        // `+` keeps a column out of index choice: an agent's entries are read through
        // (tenant, agent_id, idx) in log order; a tenant's through (tenant,
        // received_at_ms) only for a time window; a plain tenant page walks the log in
        // index order and stops at the page's end.
        let by_agent = q.agent_id.is_some();
        let by_time = q.from_ms.is_some() || q.to_ms.is_some();
        let filters = [
            (
                q.tenant.is_some(),
                if by_agent || by_time {
                    "tenant = ?1"
                } else {
                    "+tenant = ?1"
                },
            ),
            (by_agent, "agent_id = ?2"),
            (q.attestation_id.is_some(), "attestation_id = ?3"),
            (q.verdict.is_some(), "verdict = ?4"),
            (
                q.from_ms.is_some(),
                if by_agent {
                    "+received_at_ms >= ?5"
                } else {
                    "received_at_ms >= ?5"
                },
            ),
            (
                q.to_ms.is_some(),
                if by_agent {
                    "+received_at_ms < ?6"
                } else {
                    "received_at_ms < ?6"
                },
            ),
            (q.after_index.is_some(), "idx > ?7"),
        ];
        let mut conditions: Vec<&str> = filters.iter().filter(|f| f.0).map(|f| f.1).collect();
        if conditions.is_empty() {
            conditions.push("1");
        }
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE {} ORDER BY idx LIMIT ?8",
            conditions.join(" AND ")
        );
        let opt = |v: Option<u64>| v.map(to_sql).transpose();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    q.tenant,
                    q.agent_id,
                    q.attestation_id,
                    q.verdict.map(Verdict::as_str),
                    opt(q.from_ms)?,
                    opt(q.to_ms)?,
                    opt(q.after_index)?,
                    q.limit.min(MAX_PAGE),
                ],
                entry_from_row,
            )
            .map_err(db)?;
        rows.map(|r| stored_entry(r.map_err(db)?)).collect()
    }

    fn verdict_times(
        &self,
        tenant: &str,
        agent_id: &str,
        from_ms: u64,
    ) -> Result<Vec<(u64, Verdict)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT received_at_ms, verdict FROM entries WHERE tenant = ?1 AND agent_id = ?2 \
                 AND received_at_ms >= ?3 ORDER BY idx",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![tenant, agent_id, to_sql(from_ms)?], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (at, verdict) = row.map_err(db)?;
            super::verdict_time(at, &verdict)
        })
        .collect()
    }

    fn latest_accepted(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<StoredEntry>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE tenant = ?1 AND agent_id = ?2 \
                     AND verdict = 'accepted' ORDER BY idx DESC LIMIT 1"
                ),
                [tenant, agent_id],
                entry_from_row,
            )
            .optional()
            .map_err(db)?;
        row.map(stored_entry).transpose()
    }

    fn latest_entries_of_agents(&self) -> Result<Vec<StoredEntry>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(super::LATEST_ENTRIES_OF_AGENTS)
            .map_err(db)?;
        let rows = statement.query_map([], entry_from_row).map_err(db)?;
        rows.map(|r| stored_entry(r.map_err(db)?)).collect()
    }

    fn find_submission(
        &self,
        tenant: &str,
        agent_id: &str,
        submission_hash: &[u8; 32],
    ) -> Result<Option<StoredEntry>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE submission_hash = ?1 \
                     AND tenant = ?2 AND agent_id = ?3 ORDER BY idx LIMIT 1"
                ),
                params![submission_hash.as_slice(), tenant, agent_id],
                entry_from_row,
            )
            .optional()
            .map_err(db)?;
        row.map(stored_entry).transpose()
    }

    fn put_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO checkpoints (size, note, created_at_ms) VALUES (?1, ?2, ?3)",
                params![to_sql(c.size)?, c.note, to_sql(c.created_at_ms)?],
            )
            .map_err(db)?;
        Ok(())
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.checkpoint_where("ORDER BY size DESC LIMIT 1", None)
    }

    fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.checkpoint_where("WHERE size = ?1", Some(size))
    }

    fn checkpoint_at_least(&self, size: u64) -> Result<Option<StoredCheckpoint>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        self.checkpoint_where("WHERE size >= ?1 ORDER BY size LIMIT 1", Some(size))
    }

    fn put_cosignature(&self, size: u64, witness: &str, line: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO cosignatures (size, witness, line) VALUES (?1, ?2, ?3)",
                params![to_sql(size)?, witness, line],
            )
            .map_err(db)?;
        Ok(())
    }

    fn cosigned_checkpoint(
        &self,
        quorum: usize,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        let quorum = i64::try_from(quorum).unwrap_or(i64::MAX);
        let Some(checkpoint) = self.checkpoint_where(super::COSIGNED, Some(quorum))? else {
            return Ok(None);
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT line FROM cosignatures WHERE size = ?1 ORDER BY witness")
            .map_err(db)?;
        let lines = statement
            .query_map([to_sql(checkpoint.size)?], |r| r.get(0))
            .map_err(db)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(db)?;
        Ok(Some((checkpoint, lines)))
    }

    fn put_key_transition(&self, seq: u64, note: &str) -> Result<(), StoreError> {
        let inserted = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO key_transitions (seq, note) VALUES (?1, ?2)",
                params![to_sql(seq)?, note],
            )
            .map_err(db)?;
        if inserted == 0 {
            return Err(StoreError::KeyTransitionExists(seq));
        }
        Ok(())
    }

    fn key_transitions(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT note FROM key_transitions ORDER BY seq")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn put_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO agents (agent_id, tenant, ek_certificate, ak_public, enrolled_at_ms, revoked, \
                 snp_chip_id, ek_public) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (tenant, agent_id) \
                 DO UPDATE SET ek_certificate = excluded.ek_certificate, \
                 snp_chip_id = excluded.snp_chip_id, ek_public = excluded.ek_public, \
                 enrolled_at_ms = excluded.enrolled_at_ms, revoked = excluded.revoked, \
                 last_reset_count = CASE WHEN ak_public = excluded.ak_public \
                     THEN last_reset_count END, \
                 last_restart_count = CASE WHEN ak_public = excluded.ak_public \
                     THEN last_restart_count END, \
                 last_clock_ms = CASE WHEN ak_public = excluded.ak_public \
                     THEN last_clock_ms END, \
                 ak_public = excluded.ak_public",
                params![
                    a.agent_id,
                    a.tenant,
                    a.ek_certificate,
                    a.ak_public,
                    to_sql(a.enrolled_at_ms)?,
                    a.revoked,
                    a.snp_chip_id,
                    a.ek_public
                ],
            )
            .map_err(db)?;
        Ok(())
    }

    fn agent(&self, tenant: &str, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant = ?1 AND agent_id = ?2"),
                [tenant, agent_id],
                agent_from_row,
            )
            .optional()
            .map_err(db)
    }

    fn agents(&self, tenant: Option<&str>) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE (?1 IS NULL OR tenant = ?1) \
                 ORDER BY tenant, agent_id"
            ))
            .map_err(db)?;
        let rows = stmt.query_map([tenant], agent_from_row).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn agent_statuses(&self) -> Result<Vec<AgentStatus>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(super::AGENT_STATUSES).map_err(db)?;
        let rows = statement
            .query_map([], |row| {
                Ok(AgentStatus {
                    tenant: row.get(0)?,
                    agent_id: row.get(1)?,
                    revoked: row.get(2)?,
                    last_accepted_at_ms: row
                        .get::<_, Option<i64>>(3)?
                        .and_then(|v| u64::try_from(v).ok()),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn revoke_agent(&self, tenant: &str, agent_id: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE agents SET revoked = 1 WHERE tenant = ?1 AND agent_id = ?2",
                [tenant, agent_id],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(StoreError::UnknownAgent {
                tenant: tenant.to_string(),
                agent_id: agent_id.to_string(),
            });
        }
        Ok(())
    }
}

impl EmbeddedStore {
    fn checkpoint_where(
        &self,
        clause: &str,
        size: Option<i64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let sql = format!("SELECT size, note, created_at_ms FROM checkpoints {clause}");
        let conn = self.conn();
        let read = |r: &Row<'_>| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get::<_, i64>(2)?));
        let row: Option<(i64, String, i64)> = match size {
            Some(s) => conn.query_row(&sql, [s], read),
            None => conn.query_row(&sql, [], read),
        }
        .optional()
        .map_err(db)?;
        row.map(|(size, note, at)| {
            Ok(StoredCheckpoint {
                size: from_sql(size)?,
                note,
                created_at_ms: from_sql(at)?,
            })
        })
        .transpose()
    }
}

// Tests: tests/ledger_store.rs runs the same suite on this store and on PostgreSQL.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_lead_one_version_at_a_time_to_the_schema_version() {
        for (i, upgrade) in UPGRADES.iter().enumerate() {
            assert_eq!(upgrade.to as usize, i + 2);
        }
        assert_eq!(
            UPGRADES.last().map(|u| u.to.to_string()).as_deref(),
            Some(SCHEMA_VERSION)
        );
    }
}
