//! Client-side checks of what the ledger answers, needing only its checkpoint verifier key:
//! an entry is in the signed log and says what the answer claims it says, and a later
//! checkpoint extends an earlier one. Nothing the ledger sends is trusted before this.

use thiserror::Error;

use crate::api::{ConsistencyResponse, EntryJson, ReceiptJson};
use crate::log::checkpoint::{Checkpoint, CheckpointError};
use crate::log::keys::{CheckpointKeys, KeyError};
use crate::log::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash, LogError};
use crate::record::LogRecord;

/// Why an answer of the ledger does not hold up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The entry (by index) came without the inclusion proof that would show it is logged.
    #[error("entry {0} carries no inclusion proof")]
    NoProof(u64),
    /// The checkpoint note, or the verifier key, does not check out (framing, signature,
    /// body).
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The key history refuses the checkpoint (no key of it signed, or out of its period).
    #[error("checkpoint key: {0}")]
    Keys(KeyError),
    /// The proof does not lead to the checkpoint's root: the answer is not the log's.
    #[error("proof: {0}")]
    Proof(#[from] LogError),
    /// A leaf or proof hash is not 32 bytes (SHA-256).
    #[error("a proof hash is not 32 bytes")]
    HashLength,
    /// The entry's (by index) leaf is not a canonical log record; why.
    #[error("entry {0}'s leaf does not decode: {1}")]
    Leaf(u64, String),
    /// An unsigned field of the entry misstates its signed leaf.
    #[error("entry {index}'s {field} differs from its signed leaf")]
    Mismatch {
        /// The entry's index.
        index: u64,
        /// The JSON field that differs.
        field: &'static str,
    },
    /// The consistency proof is for other tree sizes than those of the two checkpoints.
    #[error("the consistency proof is for sizes {old} to {new}, not those of the checkpoints")]
    ProofSizes {
        /// The old size the proof claims.
        old: u64,
        /// The new size the proof claims.
        new: u64,
    },
}

impl From<KeyError> for AuditError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Checkpoint(e) => AuditError::Checkpoint(e),
            other => AuditError::Keys(other),
        }
    }
}

fn hashes(list: &[Vec<u8>]) -> Result<Vec<Hash>, AuditError> {
    list.iter()
        .map(|h| Hash::try_from(h.as_slice()).map_err(|_| AuditError::HashLength))
        .collect()
}

/// Checks that `entry` is included in a checkpoint signed by one of `keys` (a pinned
/// verifier key or a followed key history) and that its unsigned JSON fields match the
/// signed leaf. Returns the checkpoint.
pub fn verify_entry(
    entry: &EntryJson,
    keys: &(impl CheckpointKeys + ?Sized),
) -> Result<Checkpoint, AuditError> {
    let proof = entry
        .proof
        .as_ref()
        .ok_or(AuditError::NoProof(entry.index))?;
    let checkpoint = keys.open_checkpoint(&proof.checkpoint)?;
    verify_inclusion(
        &leaf_hash(&entry.leaf),
        entry.index,
        checkpoint.size,
        &hashes(&proof.hashes)?,
        &checkpoint.root,
    )?;
    let record = LogRecord::from_leaf(&entry.leaf)
        .map_err(|e| AuditError::Leaf(entry.index, e.to_string()))?;
    let mismatch = |field| AuditError::Mismatch {
        index: entry.index,
        field,
    };
    let checks = [
        (
            record.received_at_ms == entry.received_at_ms,
            "received_at_ms",
        ),
        (record.tenant == entry.tenant, "tenant"),
        (record.agent_id == entry.agent_id, "agent_id"),
        (record.verdict == entry.verdict, "verdict"),
        (record.reason == entry.reason, "reason"),
        (record.detail == entry.detail, "detail"),
        (
            record.attestation_id == entry.attestation_id,
            "attestation_id",
        ),
        (record.policy_hash == entry.policy_hash, "policy_hash"),
        (record.ear == entry.ear, "ear"),
        (
            record.appraisal_policy == entry.appraisal_policy,
            "appraisal_policy",
        ),
    ];
    if let Some((_, field)) = checks.iter().find(|(same, _)| !same) {
        return Err(mismatch(field));
    }
    Ok(checkpoint)
}

/// Checks a submission receipt: its proof leads from its leaf hash to a signed checkpoint.
pub fn verify_receipt(
    receipt: &ReceiptJson,
    keys: &(impl CheckpointKeys + ?Sized),
) -> Result<Checkpoint, AuditError> {
    let checkpoint = keys.open_checkpoint(&receipt.checkpoint)?;
    let leaf = Hash::try_from(receipt.leaf_hash.as_slice()).map_err(|_| AuditError::HashLength)?;
    verify_inclusion(
        &leaf,
        receipt.index,
        checkpoint.size,
        &hashes(&receipt.inclusion_proof)?,
        &checkpoint.root,
    )?;
    Ok(checkpoint)
}

/// Checks that `new` (a signed note) extends `old` with the ledger's consistency proof.
pub fn verify_extends(
    old: &Checkpoint,
    new_note: &str,
    proof: &ConsistencyResponse,
    keys: &(impl CheckpointKeys + ?Sized),
) -> Result<Checkpoint, AuditError> {
    let new = keys.open_checkpoint(new_note)?;
    if proof.old_size != old.size || proof.new_size != new.size {
        return Err(AuditError::ProofSizes {
            old: proof.old_size,
            new: proof.new_size,
        });
    }
    verify_consistency(
        old.size,
        new.size,
        &old.root,
        &new.root,
        &hashes(&proof.proof)?,
    )?;
    Ok(new)
}
