//! The agent's durable outbox: every attestation it produces is written here (fsynced)
//! before any delivery attempt, and removed only once the ledger has acknowledged it, so
//! neither a ledger outage nor an agent crash loses one, and delivery keeps their order.
//!
//! One file per attestation, named by a zero-padded sequence number; a full spool refuses
//! new entries rather than dropping old ones.

use std::path::{Path, PathBuf};

use thiserror::Error;

use attestor_verify::fs::{sync_dir, write_atomically, WriteError};

/// Entries kept at most: at the 60 s default interval, about 70 days of outage.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Largest entry accepted (a bundle is about 8 KiB).
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

const SUFFIX: &str = "bundle";

/// Why the spool cannot take or give an entry.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "spool {0} is full ({DEFAULT_CAPACITY} entries); the ledger has been unreachable too long"
    )]
    Full(PathBuf),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("entry of {0} bytes exceeds the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("entry {0} is not the oldest in the spool")]
    NotOldest(u64),
}

/// A durable FIFO of attestation bundles.
pub struct Spool {
    dir: PathBuf,
    capacity: usize,
    /// Sequence numbers present, oldest first.
    entries: std::collections::VecDeque<u64>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering its entries in order and removing
    /// temporary files a crash left behind.
    pub fn open(dir: &Path, capacity: usize) -> Result<Self, SpoolError> {
        let io = |action, source| SpoolError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io("list", e))? {
            let path = item.map_err(|e| io("list", e))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => std::fs::remove_file(&path).map_err(|e| io("clean", e))?,
                Some(SUFFIX) => {
                    if let Some(seq) = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        entries.push(seq);
                    }
                }
                _ => {}
            }
        }
        entries.sort_unstable();
        Ok(Spool {
            dir: dir.to_path_buf(),
            capacity,
            entries: entries.into(),
        })
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{SUFFIX}"))
    }

    fn io(&self, action: &'static str, seq: u64, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            action,
            path: self.path_of(seq),
            source,
        }
    }

    /// Durably appends an entry; returns its sequence number.
    pub fn push(&mut self, bytes: &[u8]) -> Result<u64, SpoolError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(SpoolError::TooLarge(bytes.len()));
        }
        if self.entries.len() >= self.capacity {
            return Err(SpoolError::Full(self.dir.clone()));
        }
        let seq = self.entries.back().map_or(0, |last| last + 1);
        write_atomically(&self.path_of(seq), bytes)?;
        self.entries.push_back(seq);
        Ok(seq)
    }

    /// The oldest entry, to deliver next.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let Some(&seq) = self.entries.front() else {
            return Ok(None);
        };
        let bytes = std::fs::read(self.path_of(seq)).map_err(|e| self.io("read", seq, e))?;
        Ok(Some((seq, bytes)))
    }

    /// Removes the oldest entry once the ledger has acknowledged it.
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.entries.front() != Some(&seq) {
            return Err(SpoolError::NotOldest(seq));
        }
        let path = self.path_of(seq);
        std::fs::remove_file(&path).map_err(|e| self.io("remove", seq, e))?;
        sync_dir(&path)?;
        self.entries.pop_front();
        Ok(())
    }

    /// Entries waiting for delivery.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits for delivery.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_leave_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 10).unwrap();
            for n in 0..5u8 {
                assert_eq!(spool.push(&[n; 3]).unwrap(), u64::from(n));
            }
            let (seq, bytes) = spool.oldest().unwrap().unwrap();
            assert_eq!((seq, bytes), (0, vec![0; 3]));
            spool.acknowledge(0).unwrap();
            // Only the oldest may be acknowledged: delivery keeps the order.
            assert!(matches!(
                spool.acknowledge(3),
                Err(SpoolError::NotOldest(3))
            ));
        }
        // A crash mid-write leaves a temporary file: it is cleaned, never delivered.
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"torn").unwrap();
        let mut spool = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(spool.len(), 4);
        let mut delivered = Vec::new();
        while let Some((seq, bytes)) = spool.oldest().unwrap() {
            delivered.push(bytes[0]);
            spool.acknowledge(seq).unwrap();
        }
        assert_eq!(delivered, vec![1, 2, 3, 4]);
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        // An emptied spool numbers from 0 again: no entry is in flight to collide with.
        assert!(spool.is_empty());
        spool.push(b"x").unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().0, 0);
    }

    #[test]
    fn a_full_spool_refuses_instead_of_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 2).unwrap();
        spool.push(b"a").unwrap();
        spool.push(b"b").unwrap();
        assert!(matches!(spool.push(b"c"), Err(SpoolError::Full(_))));
        assert_eq!(spool.oldest().unwrap().unwrap().1, b"a");
        assert!(matches!(
            spool.push(&vec![0; MAX_ENTRY_BYTES + 1]),
            Err(SpoolError::TooLarge(_))
        ));
    }
}
