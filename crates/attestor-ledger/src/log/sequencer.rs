//! The write path of the log, in the three stages of a transparency log: sequencing
//! (a batch is appended durably to the store, which assigns dense indexes), integration
//! (the Merkle tree is extended), publishing (a checkpoint is signed and stored). One
//! batch per call: many submissions share one fsync (group commit).
//!
//! At start-up the tree is rebuilt from the stored leaf hashes and checked against the
//! latest stored checkpoint, so a truncated or rewritten log is refused before serving.
//! The tree ([`TiledTree`]) then holds one hash per 256-entry tile and the right edge;
//! proofs for older entries read their tile's leaf hashes back from the store and check
//! them against the tile's hash, so a rewrite after start-up is an error, not a proof.
//!
//! When several ledger replicas share one store, only the holder of the store's sequencer
//! lease appends ([`Sequencer::claim`]); the store re-checks the lease inside each append,
//! so a replica that lost it cannot append. The others are followers: they extend their
//! tree from the store when a read needs entries they have not seen ([`Sequencer::sync`]),
//! so they serve entries and proofs. A follower that takes the lease over re-reads the
//! store, checks the latest checkpoint, publishes one for entries left unsigned, and
//! continues the log where the previous sequencer stopped.

use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use crate::store::{
    AcceptedState, LedgerStore, NewEntry, StoreError, StoredCheckpoint, StoredEntry,
};
use attestor_verify::cbor::CborError;
use attestor_verify::log::checkpoint::{Checkpoint, CheckpointError, CheckpointSigner};
use attestor_verify::log::keys::{KeyError, KeyHistory, KeyTransition};
use attestor_verify::log::merkle::{leaf_hash, Hash, LogError};
use attestor_verify::log::tiled::TiledTree;
use attestor_verify::record::LogRecord;

/// Leaf hashes read per query while rebuilding the tree.
const REBUILD_CHUNK: u64 = 65_536;

/// Why the log cannot serve.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SequencerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] LogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(
        "this replica's checkpoint key is {ours} but the log's newest key is {newest}: \
         install the rotated key (checkpoint.key.next) and reload"
    )]
    StaleKey { ours: String, newest: String },
    #[error("cannot encode a log record: {0}")]
    Record(#[from] CborError),
    #[error(
        "the store holds {stored} entries but checkpoint {checkpoint} was signed: the log was truncated"
    )]
    Truncated { stored: u64, checkpoint: u64 },
    #[error(
        "the stored entries do not hash to the root signed at size {size}: the log was rewritten"
    )]
    RootMismatch { size: u64 },
    #[error("entry {index}'s bytes do not match its leaf hash: the log was rewritten")]
    LeafMismatch { index: u64 },
    #[error("entries {first}..{end} are durable but no checkpoint covers them yet: {source}")]
    Unpublished {
        first: u64,
        end: u64,
        source: Box<SequencerError>,
    },
}

/// A record to append, with what it changes for its agent.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The record; its `received_at_ms` is assigned by the sequencer.
    pub record: LogRecord,
    pub accepted_state: Option<AcceptedState>,
}

impl Submission {
    /// Whether the record keeps the submitted bytes (a summary of a stranger's does not).
    fn keeps_submission(&self) -> bool {
        self.record.discarded.is_none()
    }
}

/// SHA-256 of submitted bytes: how a re-sent submission finds its entry.
pub fn submission_hash(submitted: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, submitted);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Proof that an entry is in the log, as returned to the submitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub received_at_ms: u64,
    pub leaf_hash: Hash,
    /// Inclusion proof in the tree of the checkpoint's size.
    pub inclusion_proof: Vec<Hash>,
    /// Signed checkpoint note (C2SP tlog-checkpoint).
    pub checkpoint: String,
}

struct State {
    /// Holds the tiles' hashes and the right edge; older subtrees are read back from the
    /// store and checked against those hashes.
    tree: TiledTree,
    signer: CheckpointSigner,
    /// Every key of the log with its transitions, as the store holds them.
    keys: KeyHistory,
    last_ms: u64,
    /// The lease term this replica appends under; `None` while it is a follower.
    term: Option<u64>,
}

/// The ledger's append-only log.
pub struct Sequencer {
    store: Arc<dyn LedgerStore>,
    origin: String,
    state: Mutex<State>,
}

impl Sequencer {
    /// Rebuilds the tree from `store`, checks it against the latest checkpoint, and tries
    /// to become the store's sequencer ([`Sequencer::claim`]).
    pub fn open(
        store: Arc<dyn LedgerStore>,
        signer: CheckpointSigner,
        origin: &str,
    ) -> Result<Self, SequencerError> {
        let keys = KeyHistory::follow(&signer.verifier_key(), &store.key_transitions()?)?;
        let sequencer = Sequencer {
            store,
            origin: origin.to_string(),
            state: Mutex::new(State {
                tree: TiledTree::new(),
                signer,
                keys,
                last_ms: 0,
                term: None,
            }),
        };
        sequencer.sync()?;
        sequencer.claim()?;
        Ok(sequencer)
    }

    /// Extends the tree with the entries the store holds beyond it and checks the result
    /// against the latest signed checkpoint; returns the new size.
    pub fn sync(&self) -> Result<u64, SequencerError> {
        let mut state = self.state();
        self.sync_locked(&mut state)?;
        Ok(state.tree.size())
    }

    fn sync_locked(&self, state: &mut State) -> Result<(), SequencerError> {
        // The checkpoint first: it is stored after its entries, so the size read next
        // covers it even while another replica appends.
        let latest = self.store.latest_checkpoint()?;
        let size = self.store.len()?;
        self.extend_from_store(state, size)?;
        if let Some(latest) = &latest {
            let checkpoint = match state.keys.open_checkpoint(&latest.note) {
                // Another replica may have rotated the key: read the history again.
                Err(KeyError::UnknownKey) => {
                    self.reload_keys(state)?;
                    state.keys.open_checkpoint(&latest.note)?
                }
                opened => opened?,
            };
            if checkpoint.size > size {
                return Err(SequencerError::Truncated {
                    stored: size,
                    checkpoint: checkpoint.size,
                });
            }
            if state.tree.root_at(checkpoint.size, &mut self.reader())? != checkpoint.root {
                return Err(SequencerError::RootMismatch {
                    size: checkpoint.size,
                });
            }
        }
        state.last_ms = state
            .last_ms
            .max(self.store.last_received_at_ms()?.unwrap_or(0));
        Ok(())
    }

    /// Pushes the stored leaf hashes `[tree size, size)` onto the tree.
    fn extend_from_store(&self, state: &mut State, size: u64) -> Result<(), SequencerError> {
        let have = state.tree.size();
        if size < have {
            return Err(SequencerError::Truncated {
                stored: size,
                checkpoint: have,
            });
        }
        let mut from = have;
        while from < size {
            let to = size.min(from + REBUILD_CHUNK);
            let hashes = self.store.leaf_hashes(from, to)?;
            if hashes.len() as u64 != to - from {
                return Err(
                    StoreError::Corrupt(format!("entries {from}..{to} are missing")).into(),
                );
            }
            for hash in hashes {
                state.tree.push_leaf_hash(hash);
            }
            from = to;
        }
        Ok(())
    }

    /// Takes or renews the store's sequencer lease; returns whether this replica may
    /// append. On taking it (over), the tree is brought up to date with the store and
    /// checked, and entries a crash left unsigned get their checkpoint.
    pub fn claim(&self) -> Result<bool, SequencerError> {
        let mut state = self.state();
        self.reload_keys(&mut state)?;
        let ours = state.signer.verifier_key();
        if state.keys.newest() != ours {
            // Signing with a superseded key would publish checkpoints auditors refuse.
            state.term = None;
            return Err(SequencerError::StaleKey {
                ours,
                newest: state.keys.newest().to_string(),
            });
        }
        let claimed = self.store.claim_sequencer();
        let term = match claimed {
            Ok(term) => term,
            Err(e) => {
                state.term = None;
                return Err(e.into());
            }
        };
        if term.is_some() && term != state.term {
            state.term = None;
            self.sync_locked(&mut state)?;
            let signed = self.store.latest_checkpoint()?.map_or(0, |c| c.size);
            if state.tree.size() > signed {
                // A crash came between appending a batch and publishing its checkpoint:
                // the entries are durable (though never acknowledged), so publish them.
                self.publish(&state, state.last_ms)?;
            }
        }
        state.term = term;
        Ok(term.is_some())
    }

    /// Whether this replica holds the lease (as of its last claim or append).
    pub fn is_sequencer(&self) -> bool {
        self.state().term.is_some()
    }

    /// The lease term this replica appends under, `None` while it is a follower: a new
    /// term means others may have written meanwhile.
    pub fn term(&self) -> Option<u64> {
        self.state().term
    }

    /// Stops appending and gives the lease up, for a prompt hand-over at shutdown.
    pub fn resign(&self) -> Result<(), SequencerError> {
        self.state().term = None;
        Ok(self.store.release_sequencer()?)
    }

    /// Makes sure the tree covers `size` entries, reading the store if it does not.
    fn ensure(&self, state: &mut State, size: u64) -> Result<(), SequencerError> {
        if state.tree.size() < size {
            self.sync_locked(state)?;
        }
        Ok(())
    }

    /// Signs and stores the checkpoint of the whole tree; returns its note.
    fn publish(&self, state: &State, now_ms: u64) -> Result<String, SequencerError> {
        let size = state.tree.size();
        let checkpoint = Checkpoint::new(self.origin.clone(), size, state.tree.root()?)
            .with_timestamp(now_ms / 1000);
        let note = state.signer.sign(&checkpoint)?;
        self.store.put_checkpoint(&StoredCheckpoint {
            size,
            note: note.clone(),
            created_at_ms: now_ms,
        })?;
        Ok(note)
    }

    /// The store's leaf hashes `[from, to)`, for the tree's reads of old tiles.
    fn reader(&self) -> impl FnMut(u64, u64) -> Result<Vec<Hash>, SequencerError> + '_ {
        |from, to| Ok(self.store.leaf_hashes(from, to)?)
    }

    /// Hashes the Merkle tree holds in memory (32 bytes each).
    pub fn tree_hashes_held(&self) -> usize {
        self.state().tree.held_hashes()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch durably, extends the tree, signs a checkpoint, and returns one
    /// receipt per submission, in order.
    pub fn append(&self, batch: Vec<Submission>) -> Result<Vec<Receipt>, SequencerError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state();
        if state.term.is_none() {
            return Err(StoreError::NotSequencer.into());
        }
        // Ledger time never runs backwards in log order, even if the clock does.
        let now = attestor_verify::time::now_ms().max(state.last_ms);
        let mut entries = Vec::with_capacity(batch.len());
        for mut s in batch {
            s.record.received_at_ms = now;
            let leaf = s.record.to_leaf()?;
            let submission_hash = s
                .keeps_submission()
                .then(|| submission_hash(&s.record.submission));
            entries.push(NewEntry {
                received_at_ms: now,
                tenant: s.record.tenant,
                agent_id: s.record.agent_id,
                verdict: s.record.verdict,
                attestation_id: s.record.attestation_id,
                leaf_hash: leaf_hash(&leaf),
                leaf,
                accepted_state: s.accepted_state,
                submission_hash,
            });
        }
        let first = match self.store.append(&entries) {
            Ok(first) => {
                // Durable, not yet answered: what a crash here leaves is what a re-sent
                // submission must find (tests/ledger_security.rs).
                crate::failpoint::crash_point("after-append");
                first
            }
            Err(StoreError::NotSequencer) => {
                // The lease expired or changed hands: a follower from now on.
                state.term = None;
                return Err(StoreError::NotSequencer.into());
            }
            Err(e) => return Err(e.into()),
        };
        if first != state.tree.size() {
            // The store holds entries the tree lacks: an earlier append whose answer was
            // lost (its commit happened after all). The store is the truth: take them in.
            self.extend_from_store(&mut state, first)?;
        }
        for e in &entries {
            state.tree.push_leaf_hash(e.leaf_hash);
        }
        state.last_ms = now;
        let size = state.tree.size();
        let note = tracing::info_span!("checkpoint")
            .in_scope(|| self.publish(&state, now))
            .map_err(|source| SequencerError::Unpublished {
                first,
                end: size,
                source: Box::new(source),
            })?;
        let mut receipts = Vec::with_capacity(entries.len());
        for (index, e) in (first..).zip(&entries) {
            receipts.push(Receipt {
                index,
                received_at_ms: now,
                leaf_hash: e.leaf_hash,
                inclusion_proof: state
                    .tree
                    .inclusion_proof(index, size, &mut self.reader())?,
                checkpoint: note.clone(),
            });
        }
        Ok(receipts)
    }

    /// Current log size.
    pub fn size(&self) -> u64 {
        self.state().tree.size()
    }

    /// The signer's public key in C2SP vkey form, for auditors.
    pub fn verifier_key(&self) -> String {
        self.state().signer.verifier_key()
    }

    /// The log's key history: every verifier key (oldest first) and the transitions.
    pub fn key_history(&self) -> KeyHistory {
        self.state().keys.clone()
    }

    /// Reads the key transitions from the store when it holds more than we know.
    fn reload_keys(&self, state: &mut State) -> Result<(), SequencerError> {
        let stored = self.store.key_transitions()?;
        for note in stored.iter().skip(state.keys.transitions().len()) {
            state.keys.extend(note)?;
        }
        Ok(())
    }

    /// Makes `new` the checkpoint signing key, without stopping the log. If the store's
    /// history already introduces it (another replica rotated), it is installed; else the
    /// sequencer records the transition from the current key at the current tree size,
    /// signed by both keys, and returns its note. Checkpoints from then on are signed by
    /// `new`; appends wait on the log's lock meanwhile, none is refused.
    pub fn rotate(&self, new: CheckpointSigner) -> Result<Option<String>, SequencerError> {
        let mut state = self.state();
        self.reload_keys(&mut state)?;
        let new_key = new.verifier_key();
        if state.keys.newest() == new_key {
            state.signer = new;
            return Ok(None);
        }
        if state.term.is_none() {
            return Err(StoreError::NotSequencer.into());
        }
        let size = state.tree.size();
        if self.store.latest_checkpoint()?.map_or(0, |c| c.size) < size {
            // The old key's period must end with its own checkpoint of `size`.
            self.publish(&state, state.last_ms)?;
        }
        let note = KeyTransition::sign(&self.origin, size, &state.signer, &new)?;
        let seq = state.keys.transitions().len() as u64;
        self.store.put_key_transition(seq, &note)?;
        state.keys.extend(&note)?;
        state.signer = new;
        Ok(Some(note))
    }

    /// An entry with its bytes checked against the tree's leaf hash.
    pub fn entry(&self, index: u64) -> Result<Option<StoredEntry>, SequencerError> {
        let Some(stored) = self.store.entry(index)? else {
            return Ok(None);
        };
        self.check(&stored)?;
        Ok(Some(stored))
    }

    /// Checks an entry read from the store against the tree's leaf hash.
    pub fn check(&self, stored: &StoredEntry) -> Result<(), SequencerError> {
        let index = stored.index;
        let mut state = self.state();
        self.ensure(&mut state, index.saturating_add(1))?;
        let expected = state.tree.leaf(index, &mut self.reader())?;
        if leaf_hash(&stored.entry.leaf) != expected || stored.entry.leaf_hash != expected {
            return Err(SequencerError::LeafMismatch { index });
        }
        Ok(())
    }

    /// The receipt of an entry appended earlier (a re-sent submission's original): its
    /// inclusion proof in the latest checkpoint, after publishing one that covers it if a
    /// failure left it unsigned.
    pub fn receipt_for(&self, stored: &StoredEntry) -> Result<Receipt, SequencerError> {
        self.check(stored)?;
        let mut state = self.state();
        let covering = self
            .store
            .latest_checkpoint()?
            .filter(|c| c.size > stored.index);
        let checkpoint = match covering {
            Some(c) => c,
            None => {
                if state.term.is_none() {
                    return Err(StoreError::NotSequencer.into());
                }
                self.ensure(&mut state, stored.index.saturating_add(1))?;
                let size = state.tree.size();
                let note = self.publish(&state, state.last_ms)?;
                StoredCheckpoint {
                    size,
                    note,
                    created_at_ms: state.last_ms,
                }
            }
        };
        self.ensure(&mut state, checkpoint.size)?;
        Ok(Receipt {
            index: stored.index,
            received_at_ms: stored.entry.received_at_ms,
            leaf_hash: stored.entry.leaf_hash,
            inclusion_proof: state.tree.inclusion_proof(
                stored.index,
                checkpoint.size,
                &mut self.reader(),
            )?,
            checkpoint: checkpoint.note,
        })
    }

    /// Inclusion proof of `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, SequencerError> {
        let mut state = self.state();
        self.ensure(&mut state, size)?;
        state.tree.inclusion_proof(index, size, &mut self.reader())
    }

    /// The complete subtrees `(level, first..first + count)` of a tree of at least
    /// `size` entries (a signed checkpoint's): a tlog-tiles tile's hashes.
    pub fn subtree_hashes(
        &self,
        level: u32,
        first: u64,
        count: u64,
        size: u64,
    ) -> Result<Vec<Hash>, SequencerError> {
        let mut state = self.state();
        self.ensure(&mut state, size)?;
        state
            .tree
            .subtree_hashes(level, first, count, &mut self.reader())
    }

    /// Consistency proof between two tree sizes.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, SequencerError> {
        let mut state = self.state();
        self.ensure(&mut state, new)?;
        state.tree.consistency_proof(old, new, &mut self.reader())
    }
}
