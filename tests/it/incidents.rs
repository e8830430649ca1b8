//! Durable incidents through real ledger processes: they survive `kill -9` with their
//! evidence, operators (and only operators, of their own tenant) acknowledge and resolve
//! them, every change is a log entry with a verifiable proof, and two replicas on one
//! PostgreSQL database raise exactly one incident for an ongoing drift, across a fail-over.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::agent::AgentFixture;
use crate::support::ledger::{enrol_tpm, LedgerProcess, LedgerSpec};
use attestor_agent::client::{ClientError, LedgerClient};
use attestor_verify::api::{AlertKind, EntryJson, Incident, IncidentState, Verdict};
use attestor_verify::audit;
use attestor_verify::record::{IncidentRecord, LogRecord, INCIDENT_RECORDER};

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn refused_with(e: &ClientError, status: u16, code: &str) -> bool {
    matches!(e, ClientError::Refused { status: s, error, .. } if *s == status && error == code)
}

/// The tenant's incident records in the log, each proven included under `vkey`.
async fn incident_records(client: &LedgerClient, vkey: &str) -> Vec<(EntryJson, IncidentRecord)> {
    let entries = client
        .entries(&format!("agent={INCIDENT_RECORDER}&limit=1000&proofs=true"))
        .await
        .unwrap()
        .entries;
    entries
        .into_iter()
        .map(|entry| {
            assert_eq!(entry.agent_id, INCIDENT_RECORDER);
            audit::verify_entry(&entry, vkey).unwrap();
            let record = LogRecord::from_leaf(&entry.leaf).unwrap();
            assert_eq!(record.verdict, Verdict::Accepted);
            let change: IncidentRecord = serde_json::from_slice(&record.submission).unwrap();
            (entry, change)
        })
        .collect()
}

async fn incidents(client: &LedgerClient, query: &str) -> Vec<Incident> {
    client.incidents(query).await.unwrap().incidents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_incidents_survive_kill_9_with_their_evidence() {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "t"), ("a2", "t")],
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let (a1, a2) = (ledger.client("a1"), ledger.client("a2"));
    let first = a1.submit(b"{\"not\": \"a bundle\"}").await.unwrap();
    let again = a1.submit(b"{\"still\": \"not a bundle\"}").await.unwrap();
    let other = a2.submit(b"[]").await.unwrap();
    for refused in [&first, &again, &other] {
        assert_eq!(refused.reason.as_deref(), Some("malformed"));
    }
    let before = incidents(&a1, "").await;
    assert_eq!(before.len(), 2, "{before:?}");
    let of_a1 = before.iter().find(|i| i.agent_id == "a1").unwrap();
    assert_eq!(of_a1.kind, AlertKind::InvalidAttestation);
    assert_eq!(of_a1.state, IncidentState::Open);
    assert_eq!(
        (of_a1.first_index, of_a1.last_index),
        (Some(first.receipt.index), Some(again.receipt.index))
    );
    let of_a2 = before.iter().find(|i| i.agent_id == "a2").unwrap();
    assert_eq!(of_a2.first_index, Some(other.receipt.index));
    assert_eq!(a1.alerts().await.unwrap().alerts.len(), 2);

    ledger.kill9();
    ledger.restart();
    let a1 = ledger.client("a1");
    assert_eq!(incidents(&a1, "").await, before);
    assert_eq!(incidents(&a1, "state=open").await, before);
    let alerts = a1.alerts().await.unwrap().alerts;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts
        .iter()
        .all(|a| a.kind == AlertKind::InvalidAttestation && a.ends_at_ms.is_none()));
    // The same drift after the restart extends the incident instead of opening another.
    let later = a1.submit(b"{}").await.unwrap();
    let after = incidents(&a1, "").await;
    assert_eq!(after.len(), 2);
    let of_a1 = after.iter().find(|i| i.agent_id == "a1").unwrap();
    assert_eq!(
        (of_a1.first_index, of_a1.last_index),
        (Some(first.receipt.index), Some(later.receipt.index))
    );
    // Each opening is in the log once, with a proof.
    let opened = incident_records(&a1, &ledger.verifier_key()).await;
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert!(opened.iter().all(|(_, r)| r.change == "opened"));
    assert!(opened
        .iter()
        .any(|(_, r)| r.incident.id == of_a1.id && r.incident.first_index == of_a1.first_index));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_of_the_tenant_alone_acknowledge_and_resolve_and_the_log_keeps_each_change() {
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "A"), ("b1", "B")],
        operators: &[("alice", "A"), ("bob", "B")],
        tenants: &[("A", ANY_HASH), ("B", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let (agent, alice, bob) = (
        ledger.client("a1"),
        ledger.operator_client("alice"),
        ledger.operator_client("bob"),
    );
    let refused = agent.submit(b"{\"forged\": true}").await.unwrap();
    let open = incidents(&alice, "").await;
    assert_eq!(open.len(), 1);
    let id = open[0].id;
    assert_eq!(open[0].first_index, Some(refused.receipt.index));
    assert_eq!(incidents(&alice, "since_ms=0&state=open").await, open);
    let e = alice.incidents("state=closed").await.unwrap_err();
    assert!(refused_with(&e, 400, "bad-request"), "{e}");
    // Operators read their tenant like agents do.
    assert_eq!(alice.alerts().await.unwrap().alerts.len(), 1);
    assert_eq!(alice.incident(id).await.unwrap(), open[0]);

    // An agent cannot acknowledge; an operator cannot attest.
    let e = agent.change_incident(id, false, "mine").await.unwrap_err();
    assert!(refused_with(&e, 403, "forbidden"), "{e}");
    let e = alice.nonce().await.unwrap_err();
    assert!(refused_with(&e, 403, "forbidden"), "{e}");
    let e = alice.submit(b"{}").await.unwrap_err();
    assert!(refused_with(&e, 403, "forbidden"), "{e}");
    // Another tenant's operator neither sees nor changes it.
    assert!(incidents(&bob, "").await.is_empty());
    assert!(bob.alerts().await.unwrap().alerts.is_empty());
    let e = bob.incident(id).await.unwrap_err();
    assert!(refused_with(&e, 404, "not-found"), "{e}");
    for resolve in [false, true] {
        let e = bob
            .change_incident(id, resolve, "not mine")
            .await
            .unwrap_err();
        assert!(refused_with(&e, 404, "not-found"), "{e}");
    }
    let e = alice.change_incident(id, false, " ").await.unwrap_err();
    assert!(refused_with(&e, 400, "bad-request"), "{e}");

    // Acknowledged through the CLI, with the operator's certificate.
    let pki = ledger.dir.path().join("pki");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_attestor"))
            .arg("incidents")
            .args(["--ledger", &ledger.endpoint()])
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .arg("--cert")
            .arg(pki.join("operators/alice.pem"))
            .arg("--key")
            .arg(pki.join("operators/alice.key"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let id_text = id.to_string();
    let (ok, table, err) = tokio::task::block_in_place(|| {
        cli(&["ack", &id_text, "--reason", "on it: re-imaging the host"])
    });
    assert!(ok, "{err}");
    assert!(table.contains("acknowledged by spiffe://attestor/tenant/A/operator/alice"));
    let (ok, json, err) =
        tokio::task::block_in_place(|| cli(&["--json", "list", "--state", "acknowledged"]));
    assert!(ok, "{err}");
    let listed: Vec<Incident> = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.len(), 1);
    let acked = &listed[0];
    assert_eq!(acked.state, IncidentState::Acknowledged);
    let by = acked.acknowledged.as_ref().unwrap();
    assert_eq!(by.by, "spiffe://attestor/tenant/A/operator/alice");
    assert_eq!(by.reason, "on it: re-imaging the host");
    let e = alice.change_incident(id, false, "again").await.unwrap_err();
    assert!(refused_with(&e, 409, "conflict"), "{e}");
    // An acknowledged security incident is still unresolved: the alert stays.
    assert_eq!(alice.alerts().await.unwrap().alerts.len(), 1);

    let resolved = alice
        .change_incident(id, true, "host re-imaged and re-enrolled")
        .await
        .unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.acknowledged.as_ref(), Some(by));
    assert!(alice.alerts().await.unwrap().alerts.is_empty());
    assert!(incidents(&alice, "state=unresolved").await.is_empty());
    let e = alice.change_incident(id, true, "again").await.unwrap_err();
    assert!(refused_with(&e, 409, "conflict"), "{e}");

    // The trail: opened, acknowledged, resolved, in order, each proven in the log, in
    // tenant A's view only.
    let trail = incident_records(&alice, &ledger.verifier_key()).await;
    let changes: Vec<&str> = trail.iter().map(|(_, r)| r.change.as_str()).collect();
    assert_eq!(changes, ["opened", "acknowledged", "resolved"]);
    assert!(trail
        .iter()
        .all(|(e, r)| e.tenant == "A" && r.incident.id == id));
    assert_eq!(trail[2].1.incident, resolved);
    assert!(trail[0].0.index > refused.receipt.index);
    assert!(incident_records(&bob, &ledger.verifier_key())
        .await
        .is_empty());
}

/// Submits a bundle made with a nonce of `client`'s ledger.
async fn attest(
    fixture: &AgentFixture,
    client: &LedgerClient,
) -> attestor_verify::api::SubmitResponse {
    let nonce = client.nonce().await.unwrap();
    client
        .submit(&fixture.attest_with_nonce(&nonce).to_json())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_raise_one_incident_and_run_one_rollback_for_an_ongoing_drift_across_a_fail_over()
{
    let url = crate::support::postgres::database();
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    // The tenant's rollback hook, on both replicas: each run appends the incident it got.
    let hooks = tempfile::tempdir().unwrap();
    let (rollback, runs) = (hooks.path().join("rollback.sh"), hooks.path().join("runs"));
    std::fs::write(
        &rollback,
        format!(
            "#!/bin/sh\ncat >> {}\necho >> {}\n",
            runs.display(),
            runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &rollback,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rollbacks = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let extra = format!(
        "[tenants.acme.actions]\non_drift = [\"{}\"]\n",
        rollback.display()
    );
    let spec = LedgerSpec {
        agents: &[("a1", "acme")],
        operators: &[("oncall", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&fixture.profile_path),
        extra: &extra,
        ..LedgerSpec::default()
    };
    let mut first = LedgerProcess::start_on_postgres(&spec, &url, 2);
    let second = first.replica();
    let (on_first, on_second) = (first.client("a1"), second.client("a1"));
    enrol_tpm(&mut fixture.agent(), &on_first).await.unwrap();
    assert_eq!(attest(&fixture, &on_first).await.verdict, Verdict::Accepted);

    // The agent drifts: every attestation now names an unapproved policy.
    let policy = std::fs::read_to_string(fixture.policy_file()).unwrap();
    fixture.reseal_with_policy(&policy.replace("max_epsilon = 3.0", "max_epsilon = 30.0"));
    let drifted = attest(&fixture, &on_first).await;
    assert_eq!(drifted.reason.as_deref(), Some("policy-hash"));
    let again = attest(&fixture, &on_first).await;
    for client in [&on_first, &on_second] {
        let seen = incidents(client, "").await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].kind, AlertKind::PolicyDrift);
        assert_eq!(
            (seen[0].first_index, seen[0].last_index),
            (Some(drifted.receipt.index), Some(again.receipt.index))
        );
        let alerts = client.alerts().await.unwrap().alerts;
        assert_eq!(alerts.len(), 1, "{alerts:?}");
    }
    let id = incidents(&on_first, "").await[0].id;
    // Changes go to the lease holder only, like every write.
    let e = second
        .operator_client("oncall")
        .change_incident(id, false, "from the follower")
        .await
        .unwrap_err();
    assert!(refused_with(&e, 503, "not-sequencer"), "{e}");

    crate::support::wait_until(Duration::from_secs(60), "the rollback hook to run", || {
        !rollbacks().is_empty()
    })
    .await;

    // Both replicas' enforcement points block the drifted agent, from the shared log.
    let a1 = crate::enforcement::identity("acme", "a1");
    let blocked = |ledger: &LedgerProcess| {
        let answer = crate::enforcement::envoy(ledger, "GET", Some(&a1));
        answer.status == 403 && answer.header("x-attestor-reason") == Some("drift")
    };
    crate::support::wait_for(Duration::from_secs(20), "both replicas to block", || {
        blocked(&first) && blocked(&second)
    });

    // The sequencer dies; the other replica takes over and sees the same drift. Its
    // enforcement point never depended on the sequencer: it answers block at once.
    first.kill9();
    let killed = Instant::now();
    crate::support::wait_for(
        Duration::from_secs(2),
        "the follower to block after the kill",
        || blocked(&second),
    );
    eprintln!(
        "follower answered block {:?} after the sequencer's kill",
        killed.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let nonce = loop {
        match on_second.nonce().await {
            Ok(nonce) => break nonce,
            Err(e) => {
                assert!(refused_with(&e, 503, "not-sequencer"), "{e}");
                assert!(Instant::now() < deadline, "the replica did not take over");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let still = on_second
        .submit(&fixture.attest_with_nonce(&nonce).to_json())
        .await
        .unwrap();
    assert_eq!(still.reason.as_deref(), Some("policy-hash"));
    first.restart();
    for client in [&on_second, &first.client("a1")] {
        let seen = incidents(client, "").await;
        assert_eq!(
            seen.len(),
            1,
            "a second incident for the same drift: {seen:?}"
        );
        assert_eq!(seen[0].id, id);
        assert_eq!(
            (seen[0].first_index, seen[0].last_index),
            (Some(drifted.receipt.index), Some(still.receipt.index))
        );
    }
    let opened = incident_records(&on_second, &second.verifier_key()).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    // One incident, one rollback: neither the second replica nor the fail-over ran it again.
    let ran = rollbacks();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0]["phase"], "fire");
    assert_eq!(ran[0]["incident"]["id"], id);
    assert_eq!(ran[0]["incident"]["kind"], "policy-drift");
    assert!(
        ran[0]["ear"].is_string(),
        "the rollback gets the refusal's EAR: {ran:?}"
    );
    let stored = incidents(&on_second, "").await;
    assert!(
        stored[0]
            .actions
            .iter()
            .any(|a| a.ok && a.hook.ends_with("on_drift")),
        "the rollback's outcome is kept in the incident: {stored:?}"
    );
}

/// Waits until `client` sees incidents for which `done` holds; returns them.
async fn incidents_until(
    client: &LedgerClient,
    what: &str,
    done: impl Fn(&[Incident]) -> bool,
) -> Vec<Incident> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = incidents(client, "").await;
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_watch_for_gaps_but_one_incident_is_raised_and_the_new_lease_holder_resolves_it(
) {
    let url = crate::support::postgres::database();
    let spec = LedgerSpec {
        agents: &[("a1", "t")],
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        max_gap_seconds: Some(2),
        ..LedgerSpec::default()
    };
    let mut first = LedgerProcess::start_on_postgres(&spec, &url, 2);
    let second = first.replica();
    let on_second = second.client("a1");
    let raised = incidents_until(&on_second, "a gap", |seen| !seen.is_empty()).await;
    assert_eq!(raised[0].kind, AlertKind::MissingHeartbeat);
    assert_eq!((raised[0].first_index, raised[0].last_index), (None, None));
    // Several more checks on both replicas, still one incident.
    let failures = |l: &LedgerProcess| l.log().matches("\"gap-check-failed\"").count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(incidents(&on_second, "").await, raised);
    assert_eq!(failures(&first) + failures(&second), 0);

    // The lease holder dies; the other takes over, and once the agent is no longer
    // expected (revoked), resolves the gap the first one raised.
    first.kill9();
    let revoked = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["revoke", "--config"])
        .arg(second.dir.path().join("ledger.toml"))
        .args(["--tenant", "t", "a1"])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    let resolved = incidents_until(&on_second, "the gap resolved", |seen| {
        seen.iter().all(|i| i.state == IncidentState::Resolved)
    })
    .await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, raised[0].id);
    let by = resolved[0].resolved.as_ref().unwrap();
    assert_eq!(by.by, "@ledger");
    // The log follows the store: the resolution is appended right after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let trail = incident_records(&on_second, &second.verifier_key()).await;
        let changes: Vec<&str> = trail.iter().map(|(_, r)| r.change.as_str()).collect();
        if changes == ["opened", "resolved"] {
            break;
        }
        assert!(
            changes == ["opened"] && Instant::now() < deadline,
            "{trail:?}\n{}\n{}",
            first.log(),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_raised_just_before_a_crash_is_recorded_in_the_log_after_the_restart() {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "t")],
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        extra: "[alerts]\nresend_seconds = 1\n",
        ..LedgerSpec::default()
    });
    ledger.kill9();
    ledger
        .env
        .push(("ATTESTOR_FAILPOINT".into(), "incident-raised".into()));
    ledger.restart();
    // The refusal is durable and its incident in the store, but the process dies before
    // the incident's opening reaches the log (and before answering).
    assert!(ledger.client("a1").submit(b"{}").await.is_err());
    assert!(!tokio::task::block_in_place(|| ledger.wait_exit(Duration::from_secs(20))).success());
    ledger.env.clear();
    ledger.restart();
    let client = ledger.client("a1");
    let raised = incidents(&client, "").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].first_index, Some(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let trail = loop {
        let trail = incident_records(&client, &ledger.verifier_key()).await;
        if !trail.is_empty() {
            break trail;
        }
        assert!(Instant::now() < deadline, "the opening was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].1.change, "opened");
    assert_eq!(trail[0].1.incident, raised[0]);
    // Recorded once: later rounds find nothing missing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        incident_records(&client, &ledger.verifier_key())
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_of_an_operators_own_ca_resolves_its_tenants_incident() {
    let pki = tempfile::tempdir().unwrap();
    crate::support::pki::create(pki.path(), &[("tenantA", "a1"), ("tenantB", "a1")]);
    crate::support::pki::add_operator(pki.path(), "tenantA", "a1");
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "tenantA"), ("a1", "tenantB")],
        tenants: &[("tenantA", ANY_HASH), ("tenantB", ANY_HASH)],
        pki: Some(pki.path()),
        enrolled: true,
        ..LedgerSpec::default()
    });
    for agent in ["tenantA.a1", "tenantB.a1"] {
        ledger.client(agent).submit(b"{}").await.unwrap();
    }
    // The operator shares agent a1's name: its certificate still only acts as an operator
    // of tenant A.
    let operator = ledger.operator_client("tenantA.a1");
    let seen = incidents(&operator, "").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].tenant, "tenantA");
    let e = operator.submit(b"{}").await.unwrap_err();
    assert!(refused_with(&e, 403, "forbidden"), "{e}");
    let resolved = operator
        .change_incident(seen[0].id, true, "checked")
        .await
        .unwrap();
    assert_eq!(
        resolved.resolved.unwrap().by,
        "spiffe://attestor/tenant/tenantA/operator/a1"
    );
    assert_eq!(
        incidents(&ledger.client("tenantB.a1"), "state=open")
            .await
            .len(),
        1
    );
}
