//! The log's write path on the embedded store: receipts verify, checkpoints are
//! consistent, time is monotonic, and a truncated or rewritten database is refused.

use std::path::Path;
use std::sync::Arc;

use attestor::ledger::log::checkpoint::{open_checkpoint, CheckpointSigner};
use attestor::ledger::log::merkle::{verify_consistency, verify_inclusion};
use attestor::ledger::log::sequencer::{Receipt, Sequencer, SequencerError, Submission};
use attestor::ledger::record::{LogRecord, RECORD_VERSION};
use attestor::ledger::store::embedded::EmbeddedStore;
use attestor::ledger::store::{LedgerStore, Verdict};

const ORIGIN: &str = "ledger.test/attestor";

fn submission(agent: &str, n: u8) -> Submission {
    Submission {
        record: LogRecord {
            version: RECORD_VERSION,
            received_at_ms: 0,
            tenant: "t".into(),
            agent_id: agent.into(),
            verdict: Verdict::Refused,
            reason: Some("nonce".into()),
            detail: None,
            attestation_id: None,
            policy_hash: None,
            submission: vec![n; 64],
        },
        accepted_state: None,
    }
}

fn open(path: &Path, signer: &CheckpointSigner) -> Result<Sequencer, SequencerError> {
    let store: Arc<dyn LedgerStore> = Arc::new(EmbeddedStore::open(path).unwrap());
    let key = CheckpointSigner::from_pkcs8(ORIGIN, &signer.to_pkcs8().unwrap()).unwrap();
    Sequencer::open(store, key, ORIGIN)
}

fn check_receipt(receipt: &Receipt, vkey: &str) {
    let checkpoint = open_checkpoint(&receipt.checkpoint, vkey).unwrap();
    verify_inclusion(
        &receipt.leaf_hash,
        receipt.index,
        checkpoint.size,
        &receipt.inclusion_proof,
        &checkpoint.root,
    )
    .unwrap();
}

#[test]
fn receipts_and_checkpoints_verify_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();

    let log = open(&db, &signer).unwrap();
    let first = log
        .append((0..3).map(|n| submission("a", n)).collect())
        .unwrap();
    assert_eq!(
        first.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    first.iter().for_each(|r| check_receipt(r, &vkey));
    let old = open_checkpoint(&first[0].checkpoint, &vkey).unwrap();
    drop(log);

    // Restart: the log continues where it was, with monotonic time.
    let log = open(&db, &signer).unwrap();
    assert_eq!(log.size(), 3);
    let second = log
        .append((3..10).map(|n| submission("b", n)).collect())
        .unwrap();
    second.iter().for_each(|r| check_receipt(r, &vkey));
    assert!(second[0].received_at_ms >= first[2].received_at_ms);
    let new = open_checkpoint(&second[0].checkpoint, &vkey).unwrap();
    let proof = log.consistency_proof(old.size, new.size).unwrap();
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof).unwrap();

    // Entries come back byte for byte, with the record the ledger wrote.
    let entry = log.entry(4).unwrap().unwrap();
    let record = LogRecord::from_leaf(&entry.entry.leaf).unwrap();
    assert_eq!(record.submission, vec![4; 64]);
    assert_eq!(record.received_at_ms, second[0].received_at_ms);
    assert!(log.entry(10).unwrap().is_none());
    assert!(log.append(Vec::new()).unwrap().is_empty());
}

#[test]
fn a_checkpoint_from_another_key_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let log = open(&dir.path().join("l.db"), &signer).unwrap();
    let receipt = &log.append(vec![submission("a", 1)]).unwrap()[0];
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    assert!(open_checkpoint(&receipt.checkpoint, &other.verifier_key()).is_err());
}

fn tamper(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    assert!(conn.execute(sql, []).unwrap() > 0, "{sql}");
}

#[test]
fn truncation_and_rewrites_on_disk_are_detected() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.db");
        let log = open(&db, &signer).unwrap();
        log.append((0..5).map(|n| submission("a", n)).collect())
            .unwrap();
        (dir, db)
    };

    let (_d1, db) = fresh();
    tamper(&db, "DELETE FROM entries WHERE idx = 4");
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::Truncated {
            stored: 4,
            checkpoint: 5
        })
    ));

    let (_d2, db) = fresh();
    tamper(
        &db,
        "UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 2",
    );
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::RootMismatch { size: 5 })
    ));

    // The bytes rewritten but the stored hash left alone: caught when the entry is read.
    let (_d3, db) = fresh();
    tamper(&db, "UPDATE entries SET leaf = x'00' WHERE idx = 3");
    let log = open(&db, &signer).unwrap();
    assert!(matches!(
        log.entry(3),
        Err(SequencerError::LeafMismatch { index: 3 })
    ));
    assert!(log.entry(2).is_ok());

    // A forged checkpoint (signed by another key) stored as the latest is refused.
    let (_d4, db) = fresh();
    let forger = CheckpointSigner::generate(ORIGIN).unwrap();
    let forged = forger
        .sign(&attestor::ledger::log::checkpoint::Checkpoint::new(
            ORIGIN, 9, [0; 32],
        ))
        .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO checkpoints (size, note, created_at_ms) VALUES (9, ?1, 0)",
        [forged],
    )
    .unwrap();
    drop(conn);
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::Checkpoint(_))
    ));
}

#[test]
fn concurrent_submissions_share_commits_and_each_gets_a_valid_receipt() {
    use attestor::ledger::log::batcher::{Batcher, DEFAULT_MAX_BATCH};
    let dir = tempfile::tempdir().unwrap();
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let log = Arc::new(open(&dir.path().join("l.db"), &signer).unwrap());
    let (batcher, writer) = Batcher::start(log.clone(), DEFAULT_MAX_BATCH);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let receipts = runtime.block_on(async {
        let tasks: Vec<_> = (0..200u8)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(submission("a", n)).await.unwrap() })
            })
            .collect();
        let mut receipts = Vec::new();
        for task in tasks {
            receipts.push(task.await.unwrap());
        }
        receipts
    });
    drop(batcher);
    writer.join().unwrap();

    let mut indexes: Vec<u64> = receipts.iter().map(|r| r.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..200).collect::<Vec<_>>());
    receipts.iter().for_each(|r| check_receipt(r, &vkey));
    // All 200 were queued before the writer ran: fewer commits than submissions.
    let checkpoints: std::collections::BTreeSet<&String> =
        receipts.iter().map(|r| &r.checkpoint).collect();
    assert!(checkpoints.len() < 200, "{} commits", checkpoints.len());
    assert_eq!(log.size(), 200);
}

#[test]
fn entries_appended_without_their_checkpoint_are_published_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let log = open(&db, &signer).unwrap();
    log.append(vec![submission("a", 0)]).unwrap();
    drop(log);
    // A crash between the store's commit and the checkpoint: the batch is durable, unsigned.
    let store = EmbeddedStore::open(&db).unwrap();
    let mut stray = store.entry(0).unwrap().unwrap().entry;
    stray.leaf = vec![7; 8];
    stray.leaf_hash = attestor::ledger::log::merkle::leaf_hash(&stray.leaf);
    store.append(&[stray]).unwrap();
    assert_eq!(store.latest_checkpoint().unwrap().unwrap().size, 1);
    drop(store);

    let log = open(&db, &signer).unwrap();
    let store = EmbeddedStore::open(&db).unwrap();
    let latest = store.latest_checkpoint().unwrap().unwrap();
    let checkpoint = open_checkpoint(&latest.note, &signer.verifier_key()).unwrap();
    assert_eq!((checkpoint.size, log.size()), (2, 2));
    let proof = log.inclusion_proof(1, 2).unwrap();
    let leaf = attestor::ledger::log::merkle::leaf_hash(&[7; 8]);
    verify_inclusion(&leaf, 1, 2, &proof, &checkpoint.root).unwrap();
}
