//! The log's write path on both stores (embedded and PostgreSQL): receipts verify,
//! checkpoints are consistent, time is monotonic, and a truncated or rewritten database
//! is refused. On PostgreSQL, two sequencers share one database: the follower serves
//! proofs, takes over when the holder stops renewing, and the log goes on consistently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::stores::Backend;
use attestor_ledger::log::sequencer::{Receipt, Sequencer, SequencerError, Submission};
use attestor_ledger::store::{LedgerStore, StoreError, Verdict};
use attestor_verify::log::checkpoint::{open_checkpoint, CheckpointSigner};
use attestor_verify::log::keys::KeyError;
use attestor_verify::log::merkle::{verify_consistency, verify_inclusion, LogError};
use attestor_verify::record::{LogRecord, RECORD_VERSION};

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
            discarded: None,
            ear: None,
            appraisal_policy: None,
        },
        accepted_state: None,
    }
}

fn copy_of(signer: &CheckpointSigner) -> CheckpointSigner {
    CheckpointSigner::from_pkcs8(ORIGIN, &signer.to_pkcs8().unwrap()).unwrap()
}

fn open(backend: &Backend, signer: &CheckpointSigner) -> Result<Sequencer, SequencerError> {
    let store = backend.try_open().unwrap();
    Sequencer::open(store, copy_of(signer), ORIGIN)
}

crate::on_both_backends!(
    receipts_and_checkpoints_verify_across_restarts,
    a_checkpoint_from_another_key_does_not_verify,
    truncation_and_rewrites_on_disk_are_detected,
    concurrent_submissions_share_commits_and_each_gets_a_valid_receipt,
    entries_appended_without_their_checkpoint_are_published_at_start,
    a_tile_rewritten_after_start_up_is_refused_never_proved,
);

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

fn receipts_and_checkpoints_verify_across_restarts(db: &Backend) {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();

    let log = open(db, &signer).unwrap();
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
    let log = open(db, &signer).unwrap();
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

fn a_checkpoint_from_another_key_does_not_verify(db: &Backend) {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let log = open(db, &signer).unwrap();
    let receipt = &log.append(vec![submission("a", 1)]).unwrap()[0];
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    assert!(open_checkpoint(&receipt.checkpoint, &other.verifier_key()).is_err());
}

fn truncation_and_rewrites_on_disk_are_detected(backend: &Backend) {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let fresh = || {
        let db = match backend {
            Backend::Embedded(_) => Backend::embedded(),
            Backend::Postgres { .. } => Backend::postgres(),
        };
        let log = open(&db, &signer).unwrap();
        log.append((0..5).map(|n| submission("a", n)).collect())
            .unwrap();
        db
    };

    let db = fresh();
    db.tamper(
        "DELETE FROM entries WHERE idx = 4; UPDATE log_head SET size = 4",
        "DELETE FROM entries WHERE idx = 4; UPDATE log_head SET size = 4",
    );
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::Truncated {
            stored: 4,
            checkpoint: 5
        })
    ));
    // Entries gone but the head left alone: a hole, refused as corrupt.
    for idx in [2, 4] {
        let db = fresh();
        let gone = format!("DELETE FROM entries WHERE idx = {idx}");
        db.tamper(&gone, &gone);
        assert!(matches!(
            open(&db, &signer),
            Err(SequencerError::Store(StoreError::Corrupt(_)))
        ));
    }

    let db = fresh();
    db.tamper(
        "UPDATE entries SET leaf_hash = zeroblob(32) WHERE idx = 2",
        "UPDATE entries SET leaf_hash = decode(repeat('00', 32), 'hex') WHERE idx = 2",
    );
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::RootMismatch { size: 5 })
    ));

    // The bytes rewritten but the stored hash left alone: caught when the entry is read.
    let db = fresh();
    db.tamper(
        "UPDATE entries SET leaf = x'00' WHERE idx = 3",
        "UPDATE entries SET leaf = '\\x00'::bytea WHERE idx = 3",
    );
    let log = open(&db, &signer).unwrap();
    assert!(matches!(
        log.entry(3),
        Err(SequencerError::LeafMismatch { index: 3 })
    ));
    assert!(log.entry(2).is_ok());

    // A forged checkpoint (signed by a key outside the log's key history) stored as the
    // latest is refused.
    let db = fresh();
    let forger = CheckpointSigner::generate(ORIGIN).unwrap();
    let forged = forger
        .sign(&attestor_verify::log::checkpoint::Checkpoint::new(
            ORIGIN, 9, [0; 32],
        ))
        .unwrap();
    db.try_open()
        .unwrap()
        .put_checkpoint(&attestor_ledger::store::StoredCheckpoint {
            size: 9,
            note: forged,
            created_at_ms: 0,
        })
        .unwrap();
    assert!(matches!(
        open(&db, &signer),
        Err(SequencerError::Keys(KeyError::UnknownKey))
    ));
}

fn concurrent_submissions_share_commits_and_each_gets_a_valid_receipt(db: &Backend) {
    use attestor_ledger::log::batcher::{Batcher, DEFAULT_MAX_BATCH};
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let log = Arc::new(open(db, &signer).unwrap());
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

fn entries_appended_without_their_checkpoint_are_published_at_start(db: &Backend) {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let log = open(db, &signer).unwrap();
    log.append(vec![submission("a", 0)]).unwrap();
    drop(log);
    // A crash between the store's commit and the checkpoint: the batch is durable, unsigned.
    let store = db.open();
    let mut stray = store.entry(0).unwrap().unwrap().entry;
    stray.leaf = vec![7; 8];
    stray.leaf_hash = attestor_verify::log::merkle::leaf_hash(&stray.leaf);
    store.append(&[stray]).unwrap();
    assert_eq!(store.latest_checkpoint().unwrap().unwrap().size, 1);
    drop(store);

    let log = open(db, &signer).unwrap();
    let store = db.try_open().unwrap();
    let latest = store.latest_checkpoint().unwrap().unwrap();
    let checkpoint = open_checkpoint(&latest.note, &signer.verifier_key()).unwrap();
    assert_eq!((checkpoint.size, log.size()), (2, 2));
    let proof = log.inclusion_proof(1, 2).unwrap();
    let leaf = attestor_verify::log::merkle::leaf_hash(&[7; 8]);
    verify_inclusion(&leaf, 1, 2, &proof, &checkpoint.root).unwrap();
}

fn a_tile_rewritten_after_start_up_is_refused_never_proved(db: &Backend) {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let log = open(db, &signer).unwrap();
    // Eleven tiles and a bit: the first ones are long out of the tree's cache of tiles.
    let mut receipts = Vec::new();
    for batch in 0..6u8 {
        receipts.extend(
            log.append((0..500).map(|n| submission("a", batch ^ n as u8)).collect())
                .unwrap(),
        );
    }
    let size = log.size();
    assert_eq!(size, 3000);
    let latest = open_checkpoint(&receipts[2999].checkpoint, &vkey).unwrap();
    // Before any rewrite, old entries prove against the signed root (tile 1 read from the
    // store; tile 0 stays out of the cache for what follows).
    for index in [300, 2999] {
        let proof = log.inclusion_proof(index, size).unwrap();
        verify_inclusion(
            &receipts[index as usize].leaf_hash,
            index,
            size,
            &proof,
            &latest.root,
        )
        .unwrap();
    }
    // Entry 3's bytes and leaf hash rewritten consistently behind the running ledger.
    let forged = attestor_verify::log::merkle::leaf_hash(&[0]);
    db.tamper(
        &format!(
            "UPDATE entries SET leaf = x'00', leaf_hash = x'{}' WHERE idx = 3",
            hex::encode(forged)
        ),
        &format!(
            "UPDATE entries SET leaf = '\\x00'::bytea, leaf_hash = '\\x{}'::bytea WHERE idx = 3",
            hex::encode(forged)
        ),
    );
    let rewritten = |r: Result<_, SequencerError>| {
        matches!(
            r,
            Err(SequencerError::Tree(LogError::TileMismatch {
                from: 0,
                to: 256
            }))
        )
    };
    // Reading the tile again (evicted by newer ones) finds it no longer hashes to what the
    // tree holds: every answer that needs it is an error, none a proof.
    assert!(rewritten(log.entry(3).map(drop)));
    assert!(rewritten(log.inclusion_proof(3, size).map(drop)));
    assert!(rewritten(log.inclusion_proof(100, 200).map(drop)));
    assert!(rewritten(log.consistency_proof(100, size).map(drop)));
    // Answers not built from that tile are unaffected.
    let proof = log.inclusion_proof(300, size).unwrap();
    verify_inclusion(&receipts[300].leaf_hash, 300, size, &proof, &latest.root).unwrap();
    assert!(log.entry(2999).is_ok());
    drop(log);
    // And a restart refuses the log outright.
    assert!(matches!(
        open(db, &signer),
        Err(SequencerError::RootMismatch { size: 3000 })
    ));
}

#[test]
fn a_follower_proves_entries_and_takes_over_when_the_sequencer_stops_renewing() {
    let backend = Backend::postgres();
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let replica = || {
        let store: Arc<dyn LedgerStore> = Arc::new(backend.other_replica(Duration::from_secs(1)));
        Sequencer::open(store, copy_of(&signer), ORIGIN).unwrap()
    };
    let (leader, follower) = (replica(), replica());
    assert!(leader.is_sequencer());
    assert!(!follower.is_sequencer());
    let first = leader
        .append((0..4).map(|n| submission("a", n)).collect())
        .unwrap();
    let before = open_checkpoint(&first[3].checkpoint, &vkey).unwrap();
    assert!(matches!(
        follower.append(vec![submission("b", 9)]),
        Err(SequencerError::Store(StoreError::NotSequencer))
    ));

    // The follower reads what the leader appended, checked against its tree, and proves it.
    let entry = follower.entry(2).unwrap().unwrap();
    assert_eq!(
        LogRecord::from_leaf(&entry.entry.leaf).unwrap().submission,
        vec![2; 64]
    );
    let proof = follower.inclusion_proof(1, 4).unwrap();
    verify_inclusion(&first[1].leaf_hash, 1, 4, &proof, &before.root).unwrap();

    // The leader stops renewing (hung, partitioned or dead): once its lease expires the
    // follower takes over, and the old leader is fenced out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !follower.claim().unwrap() {
        assert!(Instant::now() < deadline, "the follower never took over");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        leader.append(vec![submission("a", 9)]),
        Err(SequencerError::Store(StoreError::NotSequencer))
    ));
    assert!(!leader.is_sequencer());
    assert!(!leader.claim().unwrap());

    // The log goes on where it was: dense, monotonic, consistent with the old checkpoint.
    let next = follower
        .append((4..7).map(|n| submission("b", n)).collect())
        .unwrap();
    assert_eq!(
        next.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    next.iter().for_each(|r| check_receipt(r, &vkey));
    assert!(next[0].received_at_ms >= first[3].received_at_ms);
    let after = open_checkpoint(&next[2].checkpoint, &vkey).unwrap();
    assert_eq!(after.size, 7);
    for log in [&follower, &leader] {
        let proof = log.consistency_proof(4, 7).unwrap();
        verify_consistency(4, 7, &before.root, &after.root, &proof).unwrap();
    }
}
