//! Online backup and verified restore of the embedded store.
//!
//! A backup is one SQLite file made with `VACUUM INTO` on a connection of its own: a read
//! transaction, so it is a consistent snapshot of the log (entries, signed checkpoints, key
//! transitions, agents) while the ledger keeps appending in WAL mode. It holds no key:
//! the checkpoint key stays in the state directory and is kept separately.
//!
//! A restore refuses a state directory that already holds a log, checks the file
//! (SQLite integrity, then the log: every entry's bytes against its leaf hash, the Merkle
//! root of all leaves against the latest checkpoint, whose signature must verify under
//! the log's key history followed from the pinned key) and only then moves it in place.
//!
//! PostgreSQL stores are backed up with the database's own tools (`docs/operations.md`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use crate::config::{LedgerConfig, Storage};
use crate::enrollment_ca;
use crate::keyfiles::{self, KEY_FILE, VKEY_FILE};
use crate::service::LEDGER_DB;
use crate::store::embedded::EmbeddedStore;
use crate::store::{LedgerStore, StoreError};
use attestor_verify::log::keys::{KeyError, KeyHistory, KeyTransition};
use attestor_verify::log::merkle::{leaf_hash, LogError, MerkleTree};

/// Why a backup or restore failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backup and restore cover the embedded store; back a PostgreSQL store up with pg_dump (docs/operations.md)")]
    NotEmbedded,
    #[error("{0} exists; the backup is written to a new file")]
    OutputExists(PathBuf),
    #[error("state directory {0} already holds a log ({1}); restore into an empty one")]
    StateNotEmpty(PathBuf, String),
    #[error("{path} is not a usable ledger backup: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is not a usable ledger backup: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path} is not a usable ledger backup: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("{path} is not a usable ledger backup: {source}")]
    KeyTransition { path: PathBuf, source: KeyError },
    #[error("no key to verify the backup's checkpoints: put the ledger's checkpoint.key in the state directory or give --log-key")]
    NoKey,
    #[error("the backup's log does not verify: {0}")]
    Log(String),
    #[error("the backup's log does not verify: {0}")]
    LogKeys(#[source] KeyError),
    #[error("the backup's log does not verify: {0}")]
    LogTree(#[source] LogError),
    #[error(transparent)]
    KeyFile(#[from] keyfiles::KeyFileError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> BackupError {
    BackupError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn store_error(path: &Path) -> impl Fn(StoreError) -> BackupError + '_ {
    move |source| BackupError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup holds, as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// Number of entries.
    pub entries: u64,
    /// Size of the latest signed checkpoint (0 without one).
    pub checkpoint_size: u64,
    /// Key transitions recorded.
    pub key_transitions: usize,
}

fn embedded_db(config: &LedgerConfig) -> Result<PathBuf, BackupError> {
    match config.storage {
        Storage::Embedded => Ok(config.state_dir.join(LEDGER_DB)),
        _ => Err(BackupError::NotEmbedded),
    }
}

/// Writes a consistent snapshot of the ledger's store to `out` (a new file), while the
/// ledger may be running.
pub fn backup(config: &LedgerConfig, out: &Path) -> Result<LogSummary, BackupError> {
    let db = embedded_db(config)?;
    if out.exists() {
        return Err(BackupError::OutputExists(out.to_path_buf()));
    }
    let conn = Connection::open(&db).map_err(sqlite_error(&db))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sqlite_error(&db))?;
    let target = out
        .to_str()
        .ok_or_else(|| corrupt(out, "the path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite_error(&db))?;
    drop(conn);
    std::fs::File::open(out)
        .and_then(|f| f.sync_all())
        .map_err(io(out))?;
    let store = EmbeddedStore::open(out).map_err(store_error(out))?;
    // What the snapshot holds, checked against the keys it names itself.
    let transitions = store.key_transitions().map_err(store_error(out))?;
    let pinned = match transitions.first() {
        Some(first) => {
            KeyTransition::open(first, 0)
                .map_err(|source| BackupError::KeyTransition {
                    path: out.to_path_buf(),
                    source,
                })?
                .old_key
        }
        None => {
            keyfiles::current_vkey(&config.state_dir, &config.origin)?.ok_or(BackupError::NoKey)?
        }
    };
    verify_log(&store, &pinned, out)
}

/// Restores a backup into the config's (empty) state directory after verifying it.
pub fn restore(
    config: &LedgerConfig,
    from: &Path,
    log_key: Option<&str>,
) -> Result<LogSummary, BackupError> {
    let db = embedded_db(config)?;
    let dir = &config.state_dir;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Keys are kept apart from backups, so they may already be in place.
    let foreign = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| {
            !name.starts_with(KEY_FILE)
                && name != VKEY_FILE
                && name != enrollment_ca::KEY_FILE
                && name != enrollment_ca::CERT_FILE
                && name != keyfiles::EAR_KEY_FILE
        });
    if let Some(name) = foreign {
        return Err(BackupError::StateNotEmpty(dir.clone(), name));
    }
    let pinned = match log_key {
        Some(key) => key.to_string(),
        None => keyfiles::current_vkey(dir, &config.origin)?.ok_or(BackupError::NoKey)?,
    };
    check_sqlite(from)?;
    let staged = dir.join(format!("{LEDGER_DB}.restoring"));
    std::fs::copy(from, &staged).map_err(io(&staged))?;
    let summary = EmbeddedStore::open(&staged)
        .map_err(store_error(from))
        .and_then(|store| verify_log(&store, &pinned, from));
    if let Err(e) = summary {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", staged.display()));
        }
        return Err(e);
    }
    std::fs::rename(&staged, &db).map_err(io(&db))?;
    std::fs::File::open(&db)
        .and_then(|f| f.sync_all())
        .map_err(io(&db))?;
    attestor_verify::fs::sync_dir(&db).map_err(|e| io(&db)(e.source))?;
    summary
}

/// SQLite's own check of the file, before the store opens (and writes to) a copy.
fn check_sqlite(path: &Path) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_error(path))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite_error(path))?;
    if verdict != "ok" {
        return Err(corrupt(path, format!("SQLite integrity check: {verdict}")));
    }
    Ok(())
}

/// Every entry's bytes against its leaf hash, the root of all leaves against the latest
/// checkpoint, and that checkpoint's signature under the history followed from `pinned`.
fn verify_log(
    store: &dyn LedgerStore,
    pinned: &str,
    path: &Path,
) -> Result<LogSummary, BackupError> {
    let store_err = store_error(path);
    let keys = KeyHistory::follow(pinned, &store.key_transitions().map_err(&store_err)?)
        .map_err(BackupError::LogKeys)?;
    let entries = store.len().map_err(&store_err)?;
    let mut tree = MerkleTree::new();
    for index in 0..entries {
        let stored = store
            .entry(index)
            .map_err(&store_err)?
            .ok_or_else(|| BackupError::Log(format!("entry {index} is missing")))?;
        let hash = leaf_hash(&stored.entry.leaf);
        if hash != stored.entry.leaf_hash {
            return Err(BackupError::Log(format!(
                "entry {index}'s bytes do not match its leaf hash"
            )));
        }
        tree.push_leaf_hash(hash);
    }
    let checkpoint_size = match store.latest_checkpoint().map_err(&store_err)? {
        Some(latest) => {
            let checkpoint = keys
                .open_checkpoint(&latest.note)
                .map_err(BackupError::LogKeys)?;
            let root = tree
                .root_at(checkpoint.size)
                .map_err(BackupError::LogTree)?;
            if root != checkpoint.root {
                return Err(BackupError::Log(format!(
                    "the entries do not hash to the root signed at size {}",
                    checkpoint.size
                )));
            }
            checkpoint.size
        }
        None if entries > 0 => {
            return Err(BackupError::Log(
                "entries without a signed checkpoint".into(),
            ))
        }
        None => 0,
    };
    Ok(LogSummary {
        entries,
        checkpoint_size,
        key_transitions: keys.transitions().len(),
    })
}
