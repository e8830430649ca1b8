//! The storage contract, run against both backends (embedded SQLite and PostgreSQL):
//! dense durable appends, queries, agents' last-seen and accepted state, re-enrolment,
//! time order, all-or-nothing batches, checkpoints by size, checkpoint key transitions,
//! schema versions. Then what
//! only a shared database has: the sequencer lease, its fencing and its hand-over, and
//! concurrent migrations.

use std::sync::Arc;
use std::time::Duration;

use crate::support::stores::Backend;
use crate::support::wait_for;
use attestor_ledger::store::postgres::PostgresStore;
use attestor_ledger::store::{
    AcceptedState, AgentRecord, EntryQuery, LedgerStore, NewEntry, StoreError, StoredCheckpoint,
    Verdict,
};

fn entry(at: u64, tenant: &str, agent: &str, verdict: Verdict) -> NewEntry {
    NewEntry {
        received_at_ms: at,
        tenant: tenant.into(),
        agent_id: agent.into(),
        verdict,
        attestation_id: Some(format!("att-{at}")),
        leaf: at.to_be_bytes().to_vec(),
        leaf_hash: [at as u8; 32],
        accepted_state: None,
        submission_hash: None,
    }
}

fn agent(id: &str, tenant: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        tenant: tenant.into(),
        ek_certificate: vec![1],
        ak_public: vec![2],
        snp_chip_id: Some(vec![9; 64]),
        ek_public: Some(vec![3; 8]),
        enrolled_at_ms: 5,
        revoked: false,
        last_seen_at_ms: None,
        last_accepted_at_ms: None,
        last_accepted: None,
    }
}

crate::on_both_backends!(
    appends_are_dense_durable_and_queryable,
    time_order_is_enforced_and_failed_batches_leave_nothing,
    checkpoints_are_kept_by_size,
    key_transitions_are_kept_in_order_one_per_sequence_number,
    a_newer_schema_is_refused,
    a_version_1_database_gains_the_pinned_snp_chip_and_keeps_its_agents,
    agents_are_keyed_by_tenant_and_id,
    a_submission_is_found_by_its_hash_within_its_agent_only,
    agents_keyed_by_id_alone_are_upgraded_to_tenant_scoped_ones,
    a_version_2_database_gains_the_log_head_and_keeps_appending_densely,
    each_enrolled_agents_status_and_latest_entry_but_late_ones_are_found,
);

/// Turns today's SQLite layout back into version 3's: agents keyed by id alone, no
/// submission hashes.
const SQLITE_TO_VERSION_3: &str = "
    CREATE TABLE agents_v2 (agent_id TEXT PRIMARY KEY, tenant TEXT NOT NULL,
        ek_certificate BLOB NOT NULL, ak_public BLOB NOT NULL, enrolled_at_ms INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0, last_seen_at_ms INTEGER, last_accepted_at_ms INTEGER,
        last_zero_retention INTEGER, last_reset_count INTEGER, last_restart_count INTEGER,
        last_clock_ms INTEGER, snp_chip_id BLOB);
    INSERT INTO agents_v2 SELECT agent_id, tenant, ek_certificate, ak_public, enrolled_at_ms,
        revoked, last_seen_at_ms, last_accepted_at_ms, last_zero_retention, last_reset_count,
        last_restart_count, last_clock_ms, snp_chip_id FROM agents;
    DROP TABLE agents;
    ALTER TABLE agents_v2 RENAME TO agents;
    DROP INDEX entries_submission;
    ALTER TABLE entries DROP COLUMN submission_hash;
    DROP INDEX entries_agent;
    CREATE INDEX entries_agent ON entries (agent_id, idx);
    UPDATE meta SET value = '3' WHERE key = 'schema_version';";

/// The same for PostgreSQL (schema version 3).
const POSTGRES_TO_VERSION_3: &str = "
    ALTER TABLE agents DROP CONSTRAINT agents_pkey, ADD CONSTRAINT agents_pkey PRIMARY KEY (agent_id);
    ALTER TABLE entries DROP COLUMN submission_hash;
    DROP INDEX entries_tenant_agent;
    CREATE INDEX entries_agent ON entries (agent_id, idx);
    DELETE FROM schema_migrations WHERE version >= 4;";

fn appends_are_dense_durable_and_queryable(backend: &Backend) {
    {
        let store = backend.open();
        assert!(store.is_empty().unwrap());
        assert_eq!(store.last_received_at_ms().unwrap(), None);
        store.put_agent(&agent("a1", "t1")).unwrap();
        store.put_agent(&agent("b1", "t2")).unwrap();
        let mut accepted = entry(10, "t1", "a1", Verdict::Accepted);
        accepted.accepted_state = Some(AcceptedState {
            zero_retention: true,
            tpm_clock: Some((1, 0, 99)),
        });
        assert_eq!(
            store
                .append(&[accepted, entry(11, "t2", "b1", Verdict::Refused)])
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .append(&[entry(12, "t1", "a1", Verdict::Refused)])
                .unwrap(),
            2
        );
    }
    // Reopened: everything acknowledged is there.
    let store = backend.open();
    assert_eq!(store.len().unwrap(), 3);
    assert_eq!(store.last_received_at_ms().unwrap(), Some(12));
    assert_eq!(store.leaf_hashes(0, 3).unwrap()[2], [12; 32]);
    assert_eq!(store.leaf_hashes(1, 3).unwrap().len(), 2);
    let one = store.entry(1).unwrap().unwrap();
    assert_eq!(one.entry.tenant, "t2");
    assert_eq!(one.entry.leaf, 11u64.to_be_bytes());
    assert_eq!(one.entry.attestation_id.as_deref(), Some("att-11"));
    assert!(store.entry(3).unwrap().is_none());
    assert!(store.entry(u64::MAX).unwrap().is_none());

    let t1 = EntryQuery {
        tenant: Some("t1".into()),
        limit: 10,
        ..EntryQuery::default()
    };
    let got: Vec<u64> = store.query(&t1).unwrap().iter().map(|e| e.index).collect();
    assert_eq!(got, vec![0, 2]);
    let refused = EntryQuery {
        verdict: Some(Verdict::Refused),
        ..t1.clone()
    };
    assert_eq!(store.query(&refused).unwrap().len(), 1);
    let page = EntryQuery {
        after_index: Some(0),
        limit: 1,
        ..t1.clone()
    };
    assert_eq!(store.query(&page).unwrap()[0].index, 2);
    let window = EntryQuery {
        from_ms: Some(11),
        to_ms: Some(12),
        limit: 10,
        ..EntryQuery::default()
    };
    assert_eq!(store.query(&window).unwrap()[0].index, 1);
    // A filter beyond what the store can hold is the caller's mistake, not corruption.
    let beyond = EntryQuery {
        from_ms: Some(u64::MAX),
        ..window.clone()
    };
    assert!(matches!(
        store.query(&beyond),
        Err(StoreError::OutOfRange(u64::MAX))
    ));
    let by_id = EntryQuery {
        attestation_id: Some("att-12".into()),
        agent_id: Some("a1".into()),
        limit: 10,
        ..EntryQuery::default()
    };
    assert_eq!(store.query(&by_id).unwrap()[0].index, 2);
    let latest = store.latest_accepted("t1", "a1").unwrap().unwrap();
    assert_eq!(latest.index, 0);
    assert!(store.latest_accepted("t2", "b1").unwrap().is_none());
    assert_eq!(
        store.verdict_times("t1", "a1", 0).unwrap(),
        [(10, Verdict::Accepted), (12, Verdict::Refused)]
    );
    assert_eq!(
        store.verdict_times("t1", "a1", 11).unwrap(),
        [(12, Verdict::Refused)]
    );
    assert_eq!(store.verdict_times("t1", "b1", 0).unwrap(), []);

    let a1 = store.agent("t1", "a1").unwrap().unwrap();
    assert_eq!(a1.last_seen_at_ms, Some(12));
    assert_eq!(a1.last_accepted_at_ms, Some(10));
    assert_eq!(
        a1.last_accepted,
        Some(AcceptedState {
            zero_retention: true,
            tpm_clock: Some((1, 0, 99))
        })
    );
    assert_eq!(store.agents(Some("t2")).unwrap().len(), 1);
    assert_eq!(store.agents(None).unwrap().len(), 2);
    assert!(store.agent("t1", "nobody").unwrap().is_none());
    // Re-enrolled with the same AK: the TPM clock stays; with another AK (a new TPM)
    // it is forgotten, the zero-retention history is kept.
    store.put_agent(&agent("a1", "t1")).unwrap();
    let same = store
        .agent("t1", "a1")
        .unwrap()
        .unwrap()
        .last_accepted
        .unwrap();
    assert_eq!(same.tpm_clock, Some((1, 0, 99)));
    let mut replaced = agent("a1", "t1");
    replaced.ak_public = vec![3];
    store.put_agent(&replaced).unwrap();
    let new_tpm = store.agent("t1", "a1").unwrap().unwrap();
    assert_eq!(new_tpm.ak_public, vec![3]);
    let new_tpm = new_tpm.last_accepted.unwrap();
    assert_eq!(new_tpm.tpm_clock, None);
    assert!(new_tpm.zero_retention);
    store.revoke_agent("t2", "b1").unwrap();
    assert!(store.agent("t2", "b1").unwrap().unwrap().revoked);
    assert!(matches!(
        store.revoke_agent("t1", "nobody"),
        Err(StoreError::UnknownAgent { .. })
    ));
}

fn time_order_is_enforced_and_failed_batches_leave_nothing(backend: &Backend) {
    let store = backend.open();
    store.put_agent(&agent("a", "t")).unwrap();
    store
        .append(&[entry(10, "t", "a", Verdict::Refused)])
        .unwrap();
    let err = store
        .append(&[
            entry(11, "t", "a", Verdict::Refused),
            entry(9, "t", "a", Verdict::Refused),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::TimeOrder { .. }));
    assert_eq!(store.len().unwrap(), 1);
    let mut ghost = entry(12, "t", "ghost", Verdict::Accepted);
    ghost.accepted_state = Some(AcceptedState {
        zero_retention: false,
        tpm_clock: None,
    });
    assert!(matches!(
        store.append(&[entry(12, "t", "a", Verdict::Refused), ghost]),
        Err(StoreError::UnknownAgent { agent_id, .. }) if agent_id == "ghost"
    ));
    assert_eq!(store.len().unwrap(), 1);
    assert_eq!(store.last_received_at_ms().unwrap(), Some(10));
    // Nothing of the failed batches touched the agent either.
    assert_eq!(
        store.agent("t", "a").unwrap().unwrap().last_seen_at_ms,
        Some(10)
    );
}

fn checkpoints_are_kept_by_size(backend: &Backend) {
    let store = backend.open();
    assert!(store.latest_checkpoint().unwrap().is_none());
    for size in [1u64, 5, 3] {
        store
            .put_checkpoint(&StoredCheckpoint {
                size,
                note: format!("note {size}"),
                created_at_ms: size * 10,
            })
            .unwrap();
    }
    // The first checkpoint stored for a size stays.
    store
        .put_checkpoint(&StoredCheckpoint {
            size: 3,
            note: "another note 3".into(),
            created_at_ms: 99,
        })
        .unwrap();
    assert_eq!(store.latest_checkpoint().unwrap().unwrap().size, 5);
    let three = store.checkpoint(3).unwrap().unwrap();
    assert_eq!((three.note.as_str(), three.created_at_ms), ("note 3", 30));
    assert!(store.checkpoint(4).unwrap().is_none());
    // The earliest checkpoint covering a size, for auditors who saw a size in between.
    let at_least = |size| store.checkpoint_at_least(size).unwrap().map(|c| c.size);
    assert_eq!(
        [0, 1, 2, 3, 4, 5, 6].map(at_least),
        [Some(1), Some(1), Some(3), Some(3), Some(5), Some(5), None]
    );
    // Sizes no SQL integer holds name no checkpoint: not an error of the store.
    assert!(store.checkpoint(u64::MAX).unwrap().is_none());
    assert_eq!(at_least(1 << 63), None);
}

fn key_transitions_are_kept_in_order_one_per_sequence_number(backend: &Backend) {
    let store = backend.open();
    assert!(store.key_transitions().unwrap().is_empty());
    store.put_key_transition(0, "first").unwrap();
    store.put_key_transition(1, "second").unwrap();
    // Two replicas rotating at once: the second successor of one key is refused.
    assert!(matches!(
        store.put_key_transition(1, "rival"),
        Err(StoreError::KeyTransitionExists(1))
    ));
    drop(store);
    assert_eq!(
        backend.open().key_transitions().unwrap(),
        ["first", "second"]
    );
}

fn a_newer_schema_is_refused(backend: &Backend) {
    drop(backend.open());
    backend.tamper(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_from_the_future')",
    );
    assert!(matches!(
        backend.try_open(),
        Err(StoreError::SchemaVersion { .. })
    ));
}

fn a_version_1_database_gains_the_pinned_snp_chip_and_keeps_its_agents(backend: &Backend) {
    let mut tpm_only = agent("a1", "t1");
    tpm_only.snp_chip_id = None;
    // Version 1 had neither column; the upgrade leaves the new one empty.
    tpm_only.ek_public = None;
    backend.open().put_agent(&tpm_only).unwrap();
    backend.tamper(
        &format!(
            "{SQLITE_TO_VERSION_3} ALTER TABLE agents DROP COLUMN snp_chip_id; \
             DROP TABLE log_head; UPDATE meta SET value = '1' WHERE key = 'schema_version'"
        ),
        &format!(
            "{POSTGRES_TO_VERSION_3} ALTER TABLE agents DROP COLUMN snp_chip_id; \
             DROP TABLE key_transitions; DELETE FROM schema_migrations WHERE version >= 2"
        ),
    );
    let store = backend.open();
    assert_eq!(store.agent("t1", "a1").unwrap().unwrap(), tpm_only);
    let cvm = agent("c1", "t1");
    store.put_agent(&cvm).unwrap();
    assert_eq!(store.agent("t1", "c1").unwrap().unwrap(), cvm);
    drop(store);
    // Upgraded once: opening again finds the current version.
    assert_eq!(backend.open().agent("t1", "c1").unwrap().unwrap(), cvm);
}

fn a_version_2_database_gains_the_log_head_and_keeps_appending_densely(backend: &Backend) {
    {
        let store = backend.open();
        store.put_agent(&agent("a", "t")).unwrap();
        store
            .append(&[
                entry(10, "t", "a", Verdict::Refused),
                entry(11, "t", "a", Verdict::Refused),
            ])
            .unwrap();
        store
            .append(&[entry(12, "t", "a", Verdict::Refused)])
            .unwrap();
    }
    // Version 2 (SQLite) had no head: size and time came from the entries. PostgreSQL's
    // head is as old as its schema; its version before key transitions must keep it.
    backend.tamper(
        &format!(
            "{SQLITE_TO_VERSION_3} DROP TABLE log_head; \
             UPDATE meta SET value = '2' WHERE key = 'schema_version'"
        ),
        &format!(
            "{POSTGRES_TO_VERSION_3} DROP TABLE key_transitions; \
             DELETE FROM schema_migrations WHERE version >= 3"
        ),
    );
    let store = backend.open();
    assert_eq!(store.len().unwrap(), 3);
    assert_eq!(store.last_received_at_ms().unwrap(), Some(12));
    // The head took over: time order is checked against the last entry, indexes go on.
    assert!(matches!(
        store.append(&[entry(11, "t", "a", Verdict::Refused)]),
        Err(StoreError::TimeOrder {
            received_at_ms: 11,
            last_ms: 12
        })
    ));
    assert_eq!(
        store
            .append(&[
                entry(13, "t", "a", Verdict::Refused),
                entry(13, "t", "a", Verdict::Refused)
            ])
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .append(&[entry(14, "t", "a", Verdict::Refused)])
            .unwrap(),
        5
    );
    drop(store);
    // Upgraded once: opening again finds the head where the appends left it.
    let store = backend.open();
    assert_eq!(store.len().unwrap(), 6);
    assert_eq!(store.last_received_at_ms().unwrap(), Some(14));
    let hashes = store.leaf_hashes(0, 6).unwrap();
    assert_eq!(hashes.len(), 6);
    assert_eq!(hashes[5], [14; 32]);
    assert_eq!(store.key_transitions().unwrap(), Vec::<String>::new());
}

#[test]
fn an_empty_version_2_database_gets_an_empty_head() {
    let backend = Backend::embedded();
    drop(backend.open());
    backend.tamper(
        &format!(
            "{SQLITE_TO_VERSION_3} DROP TABLE log_head; \
             UPDATE meta SET value = '2' WHERE key = 'schema_version'"
        ),
        "",
    );
    let store = backend.open();
    assert_eq!(store.len().unwrap(), 0);
    assert_eq!(store.last_received_at_ms().unwrap(), None);
    assert_eq!(
        store
            .append(&[entry(1, "t", "a", Verdict::Refused)])
            .unwrap(),
        0
    );
}

#[test]
fn the_embedded_store_has_no_lease_and_always_appends() {
    let backend = Backend::embedded();
    let store = backend.try_open().unwrap();
    assert_eq!(store.lease_renewal(), None);
    assert_eq!(store.claim_sequencer().unwrap(), Some(0));
    store.release_sequencer().unwrap();
    assert_eq!(store.claim_sequencer().unwrap(), Some(0));
}

#[test]
fn only_the_lease_holder_appends_and_a_stale_holder_is_fenced_out() {
    let backend = Backend::postgres();
    let lease = Duration::from_secs(1);
    let a = backend.other_replica(lease);
    let b = backend.other_replica(lease);
    assert_eq!(a.lease_renewal(), Some(lease / 3));
    let term = a
        .claim_sequencer()
        .unwrap()
        .expect("a takes the free lease");
    assert_eq!(
        a.claim_sequencer().unwrap(),
        Some(term),
        "renewal keeps the term"
    );
    assert_eq!(b.claim_sequencer().unwrap(), None);
    assert!(matches!(
        b.append(&[entry(1, "t", "x", Verdict::Refused)]),
        Err(StoreError::NotSequencer)
    ));
    assert_eq!(
        a.append(&[entry(1, "t", "x", Verdict::Refused)]).unwrap(),
        0
    );

    // a stops renewing (a pause, a partition): once the lease expires on the database's
    // clock, b takes it over with a new term, and a can no longer append.
    wait_for(Duration::from_secs(30), "b to take the lease over", || {
        b.claim_sequencer().unwrap().is_some()
    });
    let b_term = b.claim_sequencer().unwrap().unwrap();
    assert!(b_term > term);
    assert!(matches!(
        a.append(&[entry(2, "t", "x", Verdict::Refused)]),
        Err(StoreError::NotSequencer)
    ));
    assert_eq!(a.claim_sequencer().unwrap(), None);
    assert_eq!(
        b.append(&[entry(2, "t", "x", Verdict::Refused)]).unwrap(),
        1
    );

    // A release hands over at once, without waiting for expiry.
    b.release_sequencer().unwrap();
    assert!(a.claim_sequencer().unwrap().unwrap() > b_term);
    assert_eq!(a.len().unwrap(), 2);
}

#[test]
fn replicas_opening_a_fresh_database_together_migrate_it_once() {
    let backend = Backend::postgres();
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!()
    };
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                PostgresStore::open(&url, Default::default()).map(|s| s.len().unwrap())
            })
        })
        .collect();
    for opener in openers {
        assert_eq!(opener.join().unwrap().unwrap(), 0);
    }
    let store: Arc<dyn LedgerStore> = backend.open();
    assert_eq!(store.len().unwrap(), 0);
    // The record of applied migrations holds each version once.
    backend.tamper(
        "",
        "DO $$ BEGIN IF (SELECT count(*) <> max(version) FROM schema_migrations) THEN \
         RAISE EXCEPTION 'migrations recorded more than once'; END IF; END $$",
    );
}

fn agents_are_keyed_by_tenant_and_id(backend: &Backend) {
    let store = backend.open();
    let a = agent("same-id", "tenant-a");
    let mut b = agent("same-id", "tenant-b");
    b.ak_public = vec![7];
    store.put_agent(&a).unwrap();
    store.put_agent(&b).unwrap();
    // Tenant B's enrolment created its own record; A's pinned key is untouched.
    assert_eq!(store.agent("tenant-a", "same-id").unwrap().unwrap(), a);
    assert_eq!(store.agent("tenant-b", "same-id").unwrap().unwrap(), b);
    assert_eq!(store.agents(Some("tenant-a")).unwrap(), vec![a.clone()]);
    let mut accepted = entry(10, "tenant-b", "same-id", Verdict::Accepted);
    accepted.accepted_state = Some(AcceptedState {
        zero_retention: false,
        tpm_clock: Some((1, 2, 3)),
    });
    store.append(&[accepted]).unwrap();
    let b_now = store.agent("tenant-b", "same-id").unwrap().unwrap();
    assert_eq!(b_now.last_accepted_at_ms, Some(10));
    assert_eq!(store.agent("tenant-a", "same-id").unwrap().unwrap(), a);
    assert!(store
        .latest_accepted("tenant-a", "same-id")
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .latest_accepted("tenant-b", "same-id")
            .unwrap()
            .unwrap()
            .entry
            .tenant,
        "tenant-b"
    );
    store.revoke_agent("tenant-b", "same-id").unwrap();
    assert!(!store.agent("tenant-a", "same-id").unwrap().unwrap().revoked);
}

fn a_submission_is_found_by_its_hash_within_its_agent_only(backend: &Backend) {
    let store = backend.open();
    let mut kept = entry(10, "t1", "a1", Verdict::Refused);
    kept.submission_hash = Some([0xab; 32]);
    let mut other_tenant = entry(11, "t2", "a1", Verdict::Refused);
    other_tenant.submission_hash = Some([0xcd; 32]);
    store.append(&[kept, other_tenant]).unwrap();
    let found = store.find_submission("t1", "a1", &[0xab; 32]).unwrap();
    assert_eq!(found.map(|e| e.index), Some(0));
    assert!(store
        .find_submission("t2", "a1", &[0xab; 32])
        .unwrap()
        .is_none());
    assert!(store
        .find_submission("t1", "a2", &[0xab; 32])
        .unwrap()
        .is_none());
    assert!(store
        .find_submission("t1", "a1", &[0xcd; 32])
        .unwrap()
        .is_none());
}

fn agents_keyed_by_id_alone_are_upgraded_to_tenant_scoped_ones(backend: &Backend) {
    let mut enrolled = agent("a1", "t1");
    // Version 3 had no EK public area column: the upgrade leaves it empty.
    enrolled.ek_public = None;
    {
        let store = backend.open();
        store.put_agent(&enrolled).unwrap();
        store
            .append(&[entry(10, "t1", "a1", Verdict::Refused)])
            .unwrap();
    }
    backend.tamper(SQLITE_TO_VERSION_3, POSTGRES_TO_VERSION_3);
    let store = backend.open();
    let enrolled = AgentRecord {
        last_seen_at_ms: Some(10),
        ..enrolled
    };
    assert_eq!(store.agent("t1", "a1").unwrap().unwrap(), enrolled);
    let mut same_id = agent("a1", "t2");
    same_id.ak_public = vec![8];
    store.put_agent(&same_id).unwrap();
    assert_eq!(store.agent("t1", "a1").unwrap().unwrap(), enrolled);
    assert_eq!(store.agent("t2", "a1").unwrap().unwrap(), same_id);
    let mut resent = entry(11, "t2", "a1", Verdict::Refused);
    resent.submission_hash = Some([1; 32]);
    store.append(&[resent]).unwrap();
    assert_eq!(
        store
            .find_submission("t2", "a1", &[1; 32])
            .unwrap()
            .map(|e| e.index),
        Some(1)
    );
    assert_eq!(store.len().unwrap(), 2);
}

fn each_enrolled_agents_status_and_latest_entry_but_late_ones_are_found(backend: &Backend) {
    let store = backend.open();
    for (id, tenant) in [("a1", "t1"), ("a1", "t2"), ("quiet", "t1")] {
        store.put_agent(&agent(id, tenant)).unwrap();
    }
    store
        .append(&[
            entry(10, "t1", "a1", Verdict::Accepted),
            entry(11, "t2", "a1", Verdict::Accepted),
            entry(12, "t1", "a1", Verdict::Refused),
            entry(13, "t2", "a1", Verdict::Late),
            entry(14, "t1", "stranger", Verdict::Refused),
            entry(15, "t1", "@ledger", Verdict::Accepted),
        ])
        .unwrap();
    let latest: Vec<(u64, String, String)> = store
        .latest_entries_of_agents()
        .unwrap()
        .into_iter()
        .map(|e| (e.index, e.entry.tenant, e.entry.agent_id))
        .collect();
    // Same id, two tenants: two agents. The late entry says nothing of the present; an
    // agent without entries and callers that are not enrolled agents have no row.
    assert_eq!(
        latest,
        [(1, "t2".into(), "a1".into()), (2, "t1".into(), "a1".into())]
    );
    store.revoke_agent("t1", "quiet").unwrap();
    let mut statuses: Vec<(String, String, bool)> = store
        .agent_statuses()
        .unwrap()
        .into_iter()
        .map(|s| (s.tenant, s.agent_id, s.revoked))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("t1".into(), "a1".into(), false),
            ("t1".into(), "quiet".into(), true),
            ("t2".into(), "a1".into(), false),
        ]
    );
}
