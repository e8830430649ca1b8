//! What a hostile certificate holder or a failure on the ledger's side cannot do, on a real
//! ledger process with real swtpm agents and certificates from an operator's own CA (not
//! the quick-start one): take over another tenant's agent of the same id, lose or refuse an
//! honest agent's attestation after a crash or a storage outage, or grow the log with
//! bodies nobody enrolled.

use std::time::{Duration, Instant};

use crate::support::agent::AgentFixture;
use crate::support::ledger::{all_entries, attestor_config, LedgerProcess, LedgerSpec};
use crate::support::postgres::PrivateCluster;
use crate::support::wait_until;
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::{EntryQuery, LedgerStore, Verdict};
use attestor_verify::api::EntryJson;
use attestor_verify::bundle::{Bundle, Evidence};
use attestor_verify::record::LogRecord;

/// The (tenant, agent id) pairs of the operator's CA; two tenants share the id `a1`.
const IDENTITIES: &[(&str, &str)] = &[
    ("tenantA", "a1"),
    ("tenantB", "a1"),
    ("tenantA", "ghost"),
    ("nobody", "x"),
];

fn operator_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::support::pki::create(dir.path(), IDENTITIES);
    dir
}

/// A ledger expecting `fixture`'s policy of tenants A and B, on the operator's PKI.
fn ledger_for(
    fixture: &AgentFixture,
    pki: &std::path::Path,
    top_level: &str,
    storage: Option<&str>,
) -> LedgerProcess {
    let hash = hex::encode(fixture.kernel().policy_hash);
    let spec = LedgerSpec {
        tenants: &[("tenantA", &hash), ("tenantB", &hash)],
        profile: Some(&fixture.profile_path),
        pki: Some(pki),
        top_level,
        ..LedgerSpec::default()
    };
    match storage {
        Some(url) => LedgerProcess::start_on_postgres(&spec, url, 30),
        None => LedgerProcess::start(&spec),
    }
}

/// An agent daemon of `fixture` as `name` (`<tenant>.<id>`), heartbeating every second,
/// not waiting for anything.
fn spawn_agent(
    fixture: &AgentFixture,
    ledger: &LedgerProcess,
    name: &str,
) -> (
    std::sync::Arc<attestor_agent::metrics::AgentMetrics>,
    attestor_agent::heartbeat::Stopper,
    tokio::task::JoinHandle<Result<(), attestor_agent::heartbeat::HeartbeatError>>,
) {
    let mut attestor = attestor_agent::Attestor::new(attestor_config(fixture, ledger, name));
    let (metrics, stopper) = (attestor.metrics(), attestor.stopper());
    let running = tokio::spawn(async move { attestor.start_heartbeat().await });
    (metrics, stopper, running)
}

fn open_store(ledger: &LedgerProcess) -> EmbeddedStore {
    EmbeddedStore::open(&ledger.state_dir().join("ledger.db")).unwrap()
}

/// The AK a logged TPM bundle was quoted with.
fn ak_of(entry: &EntryJson) -> Vec<u8> {
    let record = LogRecord::from_leaf(&entry.leaf).unwrap();
    let bundle = Bundle::from_json(&record.submission).unwrap();
    match bundle.evidence {
        Evidence::Tpm(tpm) => tpm.ak_public,
        other => panic!("not TPM evidence: {other:?}"),
    }
}

/// A metric's value in the exposition, by its full series name (`name{labels}`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_id_of_another_tenant_gets_its_own_record_and_sees_nothing_of_the_first() {
    let pki = operator_pki();
    let (fixture_a, fixture_b) = (AgentFixture::new(), AgentFixture::new());
    let ledger = ledger_for(&fixture_a, pki.path(), "", None);
    let (metrics_a, stop_a, running_a) = spawn_agent(&fixture_a, &ledger, "tenantA.a1");
    let watched = metrics_a.clone();
    wait_until(Duration::from_secs(60), "A's first attestations", || {
        watched.delivered_count(Verdict::Accepted) >= 2
    })
    .await;
    let a_before = open_store(&ledger).agent("tenantA", "a1").unwrap().unwrap();

    // Tenant B's agent with the same id enrols its own TPM while A keeps attesting.
    let (metrics_b, stop_b, running_b) = spawn_agent(&fixture_b, &ledger, "tenantB.a1");
    let (wa, wb) = (metrics_a.clone(), metrics_b.clone());
    let a_so_far = wa.delivered_count(Verdict::Accepted);
    wait_until(Duration::from_secs(60), "both agents attesting", || {
        wb.delivered_count(Verdict::Accepted) >= 3
            && wa.delivered_count(Verdict::Accepted) >= a_so_far + 3
    })
    .await;
    stop_a.stop();
    stop_b.stop();
    running_a.await.unwrap().unwrap();
    running_b.await.unwrap().unwrap();
    assert_eq!(metrics_a.delivered_count(Verdict::Refused), 0);
    assert_eq!(metrics_b.delivered_count(Verdict::Refused), 0);

    // A's record and pinned AK are untouched; B has a record of its own.
    let store = open_store(&ledger);
    let a_after = store.agent("tenantA", "a1").unwrap().unwrap();
    assert_eq!(a_after.ak_public, a_before.ak_public);
    assert_eq!(a_after.enrolled_at_ms, a_before.enrolled_at_ms);
    let b = store.agent("tenantB", "a1").unwrap().unwrap();
    assert_ne!(b.ak_public, a_before.ak_public);

    // Each tenant sees its own agent, entries and latest-healthy bundle only.
    let (client_a, client_b) = (ledger.client("tenantA.a1"), ledger.client("tenantB.a1"));
    for (client, tenant, ak) in [
        (&client_a, "tenantA", &a_before.ak_public),
        (&client_b, "tenantB", &b.ak_public),
    ] {
        let agents = client.agents().await.unwrap().agents;
        assert_eq!(agents.len(), 1, "{agents:?}");
        assert_eq!(
            (agents[0].tenant.as_str(), agents[0].agent_id.as_str()),
            (tenant, "a1")
        );
        let healthy = client.latest_healthy().await.unwrap().entries;
        assert_eq!(healthy.len(), 1);
        assert_eq!(healthy[0].tenant, tenant);
        assert_eq!(&ak_of(&healthy[0]), ak, "{tenant}'s latest-healthy bundle");
        let entries = all_entries(client).await;
        assert!(entries.len() >= 3);
        for entry in &entries {
            assert_eq!(entry.tenant, tenant);
            assert_eq!(entry.verdict, Verdict::Accepted, "{entry:?}");
            assert_eq!(&ak_of(entry), ak);
        }
    }

    // B's refusal raises B's alert, not A's.
    let garbage = client_b.submit(b"{\"not\": \"a bundle\"}").await.unwrap();
    assert_eq!(garbage.reason.as_deref(), Some("malformed"));
    assert!(client_a.alerts().await.unwrap().alerts.is_empty());
    let b_alerts = client_b.alerts().await.unwrap().alerts;
    assert_eq!(b_alerts.len(), 1);
    assert_eq!(b_alerts[0].tenant, "tenantB");

    // A nonce issued to tenantB/a1 is worth nothing to tenantA/a1.
    let nonce = client_b.nonce().await.unwrap();
    let bundle = fixture_a.attest_with_nonce(&nonce);
    let answer = client_a.submit(&bundle.to_json()).await.unwrap();
    assert_eq!(answer.reason.as_deref(), Some("nonce"), "{answer:?}");

    // Both series are exported, told apart by tenant.
    let (_, metrics) = ledger.ops_get("/metrics");
    for tenant in ["tenantA", "tenantB"] {
        let series = format!(
            "attestor_ledger_agent_last_attestation_age_seconds{{tenant=\"{tenant}\",agent=\"a1\"}}"
        );
        assert!(
            metric(&metrics, &series).is_some(),
            "{series} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_resent_after_a_crash_between_commit_and_answer_gets_its_original_receipt() {
    let pki = operator_pki();
    let fixture = AgentFixture::new();
    let mut ledger = ledger_for(&fixture, pki.path(), "", None);
    // The first append aborts the ledger once durable, before anything is answered.
    ledger.stop();
    ledger.env = vec![("ATTESTOR_FAILPOINT".into(), "after-append".into())];
    ledger.restart();
    let (metrics, stopper, running) = spawn_agent(&fixture, &ledger, "tenantA.a1");
    let status = tokio::task::block_in_place(|| ledger.wait_exit(Duration::from_secs(60)));
    assert!(
        !status.success(),
        "the ledger should have aborted: {status}"
    );
    assert_eq!(
        open_store(&ledger).len().unwrap(),
        1,
        "the entry is durable"
    );
    assert_eq!(
        metrics.delivered_count(Verdict::Accepted),
        0,
        "never answered"
    );

    ledger.env.clear();
    ledger.restart();
    let watched = metrics.clone();
    wait_until(
        Duration::from_secs(60),
        "attestations after the restart",
        || watched.delivered_count(Verdict::Accepted) >= 3,
    )
    .await;
    stopper.stop();
    running.await.unwrap().unwrap();

    // The re-send got entry 0's receipt: nothing was refused, nothing logged twice.
    assert_eq!(metrics.delivered_count(Verdict::Refused), 0);
    let client = ledger.client("tenantA.a1");
    let entries = all_entries(&client).await;
    assert!(
        entries.iter().all(|e| e.verdict == Verdict::Accepted),
        "{entries:?}"
    );
    let ids: std::collections::HashSet<_> = entries.iter().map(|e| &e.attestation_id).collect();
    assert_eq!(ids.len(), entries.len(), "an attestation logged twice");
    let receipts = std::fs::read_dir(fixture.config().state_dir)
        .unwrap()
        .map(|d| d.unwrap().path().join("receipts.jsonl"))
        .find(|p| p.exists())
        .expect("the agent keeps its receipts");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(receipts)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["receipt"]["index"], 0, "{first}");
    assert_eq!(first["verdict"], "accepted");
    assert!(client.alerts().await.unwrap().alerts.is_empty());
    let (_, text) = ledger.ops_get("/metrics");
    assert_eq!(
        metric(&text, "attestor_ledger_repeated_submissions_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spooled_bundle_is_accepted_after_a_storage_outage_longer_than_a_nonce_lives() {
    let pki = operator_pki();
    let fixture = AgentFixture::new();
    let database = PrivateCluster::start();
    let ledger = ledger_for(
        &fixture,
        pki.path(),
        "nonce_ttl_seconds = 2\n",
        Some(&database.url),
    );
    let (metrics, stopper, running) = spawn_agent(&fixture, &ledger, "tenantA.a1");
    let watched = metrics.clone();
    wait_until(
        Duration::from_secs(60),
        "attestations before the outage",
        || watched.delivered_count(Verdict::Accepted) >= 2,
    )
    .await;

    database.pause();
    let outage = Instant::now();
    // Attestations go on into the spool; the ledger hands out no nonces it could not log.
    let client = ledger.client("tenantA.a1");
    let mut refused_nonce = false;
    while outage.elapsed() < Duration::from_secs(8) {
        match client.nonce().await {
            Err(e) if e.code().is_some() && e.is_transient() => refused_nonce = true,
            Err(e) => panic!("unexpected answer for a nonce during the outage: {e}"),
            // The first request may come before any append found the storage down.
            Ok(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(refused_nonce, "nonces were issued throughout the outage");
    let produced = metrics.produced_count();
    assert!(
        metrics.spool_depth() >= 3,
        "the agent spooled during the outage"
    );
    database.resume();

    let watched = metrics.clone();
    wait_until(Duration::from_secs(90), "the spool delivered", || {
        watched.spool_depth() == 0 && watched.delivered_count(Verdict::Accepted) >= produced
    })
    .await;
    stopper.stop();
    running.await.unwrap().unwrap();
    assert_eq!(metrics.delivered_count(Verdict::Refused), 0);
    let entries = all_entries(&client).await;
    assert!(
        entries.iter().all(|e| e.verdict == Verdict::Accepted),
        "{entries:?}"
    );
    assert!(client.alerts().await.unwrap().alerts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_grow_the_log_and_every_writer_is_rate_limited() {
    let pki = operator_pki();
    let fixture = AgentFixture::new();
    let hash = hex::encode(fixture.kernel().policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        profile: Some(&fixture.profile_path),
        pki: Some(pki.path()),
        extra: &format!(
            "[tenants.tenantA]\npolicy_hash = \"{hash}\"\nwrites_per_second = 0.01\n\
             write_burst = 10\n"
        ),
        ..LedgerSpec::default()
    });
    let db_size = || -> u64 {
        ["ledger.db", "ledger.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(ledger.state_dir().join(f)).map_or(0, |m| m.len()))
            .sum()
    };
    let before = db_size();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sha256 = attestor_ledger::log::sequencer::submission_hash(&body);
    // An agent never enrolled, of a configured tenant; a tenant nobody configured.
    for (name, refusal, allowed) in [
        ("tenantA.ghost", "unknown-agent", 10),
        ("nobody.x", "unknown-tenant", 5),
    ] {
        let client = ledger.client(name);
        let mut codes = Vec::new();
        for _ in 0..20 {
            let e = client.submit(&body).await.unwrap_err();
            codes.push(e.code().unwrap().to_string());
        }
        let expected: Vec<&str> = std::iter::repeat_n(refusal, allowed)
            .chain(std::iter::repeat_n("rate-limited", 20 - allowed))
            .collect();
        assert_eq!(codes, expected, "{name}");
    }
    // 40 MiB were sent; what was kept is a summary or two per caller.
    let grown = db_size().saturating_sub(before);
    assert!(grown < 256 * 1024, "the database grew by {grown} bytes");
    let store = open_store(&ledger);
    let logged = store
        .query(&EntryQuery {
            limit: 1000,
            ..EntryQuery::default()
        })
        .unwrap();
    assert_eq!(logged.len(), 4, "two summaries per caller");
    for stored in &logged {
        let record = LogRecord::from_leaf(&stored.entry.leaf).unwrap();
        assert!(record.submission.is_empty());
        let discarded = record.discarded.expect("a summary");
        assert_eq!(
            (discarded.sha256.as_slice(), discarded.size),
            (&sha256[..], 1 << 20)
        );
        assert_eq!(record.verdict, Verdict::Refused);
    }
    let (_, text) = ledger.ops_get("/metrics");
    for (series, count) in [
        ("attestor_ledger_unauthorised_submissions_total{reason=\"unknown-agent\",recorded=\"true\"}", 2.0),
        ("attestor_ledger_unauthorised_submissions_total{reason=\"unknown-agent\",recorded=\"false\"}", 8.0),
        ("attestor_ledger_unauthorised_submissions_total{reason=\"unknown-tenant\",recorded=\"false\"}", 3.0),
        ("attestor_ledger_rate_limited_total{endpoint=\"submit\"}", 25.0),
    ] {
        assert_eq!(metric(&text, series), Some(count), "{series} in\n{text}");
    }

    // A 429 says when to come back, in a header any HTTP client reads.
    let files = ledger.tls_files("tenantA.ghost");
    let out = std::process::Command::new(crate::support::require_tool("curl"))
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "POST",
            "--cacert",
        ])
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .arg(format!("{}/v1/nonce", ledger.endpoint()))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    // The bucket is empty and refills at 0.01/s.
    assert!((1..=100).contains(&retry_after), "{retry_after}");
}
