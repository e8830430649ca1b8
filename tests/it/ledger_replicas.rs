//! Two `attestor ledger` processes on one PostgreSQL database, over mutual TLS as agents
//! see them: one sequencer (the lease holder) appends, the follower answers writes with
//! 503 `not-sequencer` and serves reads and proofs; concurrent writers fail over to
//! whichever replica takes submissions; the sequencer is killed with SIGKILL, the
//! follower takes over once the lease expires, and afterwards no acknowledged leaf is
//! lost or changed, no submission is in the log twice, and the checkpoints before and
//! after the fail-over are consistent. A nonce the dead sequencer handed out with an
//! accepted answer counts on its successor as one from its endpoint would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::agent::AgentFixture;
use crate::support::ledger::{all_entries, enrol_tpm, LedgerProcess, LedgerSpec};
use crate::support::wait_until;
use attestor_agent::client::{ClientError, LedgerClient};
use attestor_verify::api::{SubmitResponse, Verdict};
use attestor_verify::audit;
use attestor_verify::log::checkpoint::open_checkpoint;
use attestor_verify::log::merkle::leaf_hash;
use attestor_verify::record::LogRecord;

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const WRITERS: usize = 4;
/// Sequencer lease: the follower takes over at most this long after the holder dies.
const LEASE_SECONDS: u64 = 2;

/// An acknowledged submission: index, leaf hash, body.
type Ack = (u64, [u8; 32], Vec<u8>);

fn is_not_sequencer(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { status: 503, error, .. } if error == "not-sequencer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_log_and_fail_over_without_losing_or_duplicating_a_leaf() {
    let url = crate::support::postgres::database();
    let names: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    let agents: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "t")).collect();
    let spec = LedgerSpec {
        agents: &agents,
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    };
    // The first replica takes the free lease at start; the second finds it held.
    let mut first = LedgerProcess::start_on_postgres(&spec, &url, LEASE_SECONDS);
    let second = first.replica();
    let vkey = first.verifier_key();
    assert_eq!(second.verifier_key(), vkey);

    // Writers submit (malformed bundles: refused, but logged like any submission) to
    // both replicas in turn; a replica that is not the sequencer answers 503
    // not-sequencer and the writer tries the other. A body whose submission failed any
    // other way may or may not be in the log; it is never sent again.
    let acked = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let refused_by_follower = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, name) in names.iter().enumerate() {
        let clients = [first.client(name), second.client(name)];
        let (acked, refused_by_follower, stop) =
            (acked.clone(), refused_by_follower.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("{{\"writer\": {w}, \"n\": {n}}}").into_bytes();
                n += 1;
                let mut delivered = false;
                for turn in 0..2 {
                    let client = &clients[(w + n + turn) % 2];
                    match client.submit(&body).await {
                        Ok(response) => {
                            let hash: [u8; 32] = response.receipt.leaf_hash.try_into().unwrap();
                            acked.lock().unwrap().push((
                                response.receipt.index,
                                hash,
                                body.clone(),
                            ));
                            delivered = true;
                            break;
                        }
                        Err(e) if is_not_sequencer(&e) => {
                            refused_by_follower.fetch_add(1, Ordering::Relaxed);
                        }
                        // Dead replica, or a sequencer that lost its lease mid-batch.
                        Err(_) => {}
                    }
                }
                if !delivered {
                    // Nobody takes submissions right now (the fail-over window).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    wait_until(
        Duration::from_secs(60),
        "150 acknowledged submissions",
        || acked.lock().unwrap().len() >= 150,
    )
    .await;
    assert!(
        refused_by_follower.load(Ordering::Relaxed) > 0,
        "the follower should have refused submissions"
    );

    // The follower serves reads with proofs that verify against the shared key.
    let reader = second.client("w0");
    let served = reader.entries("limit=20&proofs=true").await.unwrap();
    assert_eq!(served.entries.len(), 20);
    for entry in &served.entries {
        audit::verify_entry(entry, &vkey).unwrap();
    }
    let before_note = reader.checkpoint(None).await.unwrap();
    let before = open_checkpoint(&before_note, &vkey).unwrap();
    assert!(before.size > 0);

    // The sequencer dies without a chance to release its lease.
    first.kill9();
    let at_kill = acked.lock().unwrap().len();
    wait_until(
        Duration::from_secs(60),
        "150 more acknowledged submissions after the fail-over",
        || acked.lock().unwrap().len() >= at_kill + 150,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        second.log().contains("sequencer-elected"),
        "{}",
        second.log()
    );

    // The killed replica comes back as a follower of the new sequencer.
    first.restart();
    let rejoined = first.client("w1");
    let refused = rejoined.submit(b"{}").await.unwrap_err();
    assert!(is_not_sequencer(&refused), "{refused}");

    let after_note = reader.checkpoint(None).await.unwrap();
    let after = open_checkpoint(&after_note, &vkey).unwrap();
    assert!(after.size > before.size);
    // Both replicas prove the log after the fail-over extends the one before it.
    for client in [&reader, &rejoined] {
        let proof = client.consistency(before.size, after.size).await.unwrap();
        audit::verify_extends(&before, &after_note, &proof, &vkey).unwrap();
    }

    // Every leaf once, dense; every acknowledged submission where its receipt said.
    let entries = all_entries(&reader).await;
    assert_eq!(entries.len() as u64, after.size);
    let mut by_body: HashMap<Vec<u8>, u64> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, i as u64);
        let record = LogRecord::from_leaf(&entry.leaf).unwrap();
        if let Some(earlier) = by_body.insert(record.submission, entry.index) {
            panic!(
                "entries {earlier} and {} hold the same submission",
                entry.index
            );
        }
    }
    let acked = acked.lock().unwrap().clone();
    for (index, hash, body) in &acked {
        assert_eq!(
            by_body.get(body),
            Some(index),
            "acknowledged entry {index} lost"
        );
        let entry = &entries[*index as usize];
        assert_eq!(leaf_hash(&entry.leaf), *hash, "entry {index} changed");
    }
    // Entries and proofs through the rejoined replica agree with the sequencer's.
    let last = acked.iter().map(|a| a.0).max().unwrap();
    let entry = rejoined.entry(last).await.unwrap();
    audit::verify_entry(&entry, &vkey).unwrap();
    assert_eq!(entry.leaf, entries[last as usize].leaf);

    // And the new sequencer appends where the log ends.
    let next = reader.submit(b"{}").await.unwrap();
    assert_eq!(next.receipt.index, after.size);

    // A sequencer stopped cleanly gives its lease up on the way out, and the follower
    // takes over and continues the log.
    // (Its idle keep-alive connections would hold a clean stop up to the request timeout.)
    drop(reader);
    let mut second = second;
    second.stop();
    crate::support::postgres::execute(
        &url,
        "DO $$ BEGIN IF (SELECT expires_at > now() FROM sequencer_lease) THEN \
         RAISE EXCEPTION 'the lease was not released at shutdown'; END IF; END $$",
    );
    let mut taken = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken.is_none() {
        match rejoined.submit(b"{\"after\": \"handover\"}").await {
            Ok(response) => taken = Some(response),
            Err(e) if is_not_sequencer(&e) => {
                assert!(Instant::now() < deadline, "the follower never took over");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(taken.unwrap().receipt.index, after.size + 1);
}

/// Submits `body` to `client`'s replica, asking for the next nonce, until it is the
/// sequencer.
async fn submit_once_sequencer(client: &LedgerClient, body: &[u8]) -> SubmitResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.submit_for_next_nonce(body).await {
            Ok(response) => return response,
            Err(e) if is_not_sequencer(&e) => {
                assert!(Instant::now() < deadline, "the follower never took over");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A nonce handed out with an accepted answer by a sequencer that then dies is
/// recognised by the replica that takes over exactly as one from the dead sequencer's
/// endpoint: its tag (keyed from the shared checkpoint key) vouches for it once, with a
/// TPM clock past the agent's last accepted quote; a second use is refused by the nonce
/// check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piggybacked_nonce_is_recognised_once_after_a_fail_over() {
    let url = crate::support::postgres::database();
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let spec = LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&fixture.profile_path),
        ..LedgerSpec::default()
    };
    let mut first = LedgerProcess::start_on_postgres(&spec, &url, LEASE_SECONDS);
    let second = first.replica();
    let client = first.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let bundle = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let answer = submit_once_sequencer(&client, &bundle.to_json()).await;
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
    let nonce = answer.next_nonce.expect("the next nonce").nonce;
    let made_before = fixture.attest_with_nonce(&nonce).to_json();
    let also_made_before = fixture.attest_with_nonce(&nonce).to_json();

    first.kill9();
    let client = second.client("a1");
    let accepted = submit_once_sequencer(&client, &made_before).await;
    assert_eq!(accepted.verdict, Verdict::Accepted, "{:?}", accepted.detail);
    assert!(
        accepted.next_nonce.is_some(),
        "the new sequencer hands out the next"
    );
    let refused = submit_once_sequencer(&client, &also_made_before).await;
    assert_eq!(refused.reason.as_deref(), Some("nonce"), "a second use");
}
