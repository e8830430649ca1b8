//! Outages on our side are not attacks: a ledger that answers after the agent's heartbeat
//! timeout, and one that is down for longer than the freshness window. What the agent
//! spooled meanwhile is delivered afterwards, logged once, and a bundle past the window is
//! logged `late` (no critical alert); the outage is one ledger-outage alert per tenant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestor_agent::client::LedgerClient;
use attestor_verify::api::{AlertKind, EntryJson, OFFLINE_NONCE_PREFIX};
use attestor_verify::bundle::Bundle;
use attestor_verify::checks::{verify_bundle, verify_drift_report, AkTrust, Check, Expectations};
use attestor_verify::claims::Statement;
use attestor_verify::ear::Tier;
use attestor_verify::profiles::Profile;
use attestor_verify::record::LogRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::agent::{tpm_ev_mut, AgentFixture};
use crate::support::ledger::{
    all_entries, attestor_config, enrol_tpm, Heartbeating, LedgerProcess, LedgerSpec,
};
use crate::support::wait_until;
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::{IncidentQuery, LedgerStore, Verdict};

/// The freshness window of the test profile (the shipped one allows 300 s).
const WINDOW_SECONDS: u64 = 3;

/// A TCP relay in front of the ledger that, while `slow`, holds back everything the ledger
/// sends (TLS handshakes and answers alike) until it is fast again: a ledger that answers
/// after the agent's timeout. What the agent sends still reaches the ledger at once.
struct SlowRelay {
    port: u16,
    slow: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowRelay {
    async fn start(ledger_port: u16) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let slow = Arc::new(AtomicBool::new(false));
        let held = slow.clone();
        let task = tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(ledger) = TcpStream::connect(("127.0.0.1", ledger_port)).await else {
                        return;
                    };
                    let (mut from_agent, mut to_agent) = agent.into_split();
                    let (mut from_ledger, mut to_ledger) = ledger.into_split();
                    let upstream = tokio::io::copy(&mut from_agent, &mut to_ledger);
                    let downstream = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_ledger.read(&mut buffer).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            while held.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            to_agent.write_all(&buffer[..n]).await?;
                        }
                    };
                    let _ = tokio::join!(upstream, downstream);
                });
            }
        });
        SlowRelay { port, slow, task }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn set_slow(&self, slow: bool) {
        self.slow.store(slow, Ordering::SeqCst);
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_the_ledger_answers_too_late_fails_and_its_bundle_is_delivered_later() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let relay = SlowRelay::start(ledger.port).await;
    let mut config = attestor_config(&fixture, &ledger, "a1");
    config.ledger_endpoint = relay.endpoint();
    config.attestation_interval = Duration::from_secs(2);
    config.heartbeat_timeout = Duration::from_secs(1);
    let agent = Heartbeating::start(config, 2).await;
    let metrics = agent.metrics.clone();

    relay.set_slow(true);
    let (failed_before, produced_before) =
        (metrics.heartbeats_with(false), metrics.produced_count());
    // A slow ledger does not stop the agent attesting: each heartbeat still makes and
    // spools its attestation, then fails for want of an answer.
    wait_until(
        Duration::from_secs(60),
        "two heartbeats failed on their timeout, their bundles spooled",
        || {
            metrics.heartbeats_with(false) >= failed_before + 2
                && metrics.produced_count() >= produced_before + 2
                && metrics.spool_depth() >= 2
        },
    )
    .await;
    let accepted_while_slow = metrics.delivered_count(Verdict::Accepted);

    relay.set_slow(false);
    wait_until(Duration::from_secs(60), "the spool to drain", || {
        metrics.spool_depth() == 0
            && metrics.delivered_count(Verdict::Accepted) > accepted_while_slow
    })
    .await;
    agent.stop().await;

    // Every attestation is in the log once, accepted: those whose answers were held back
    // too (the re-send got the original receipt).
    let entries = agent_entries(&ledger.client("a1")).await;
    assert!(
        entries.len() as u64 >= metrics.produced_count(),
        "{entries:?}"
    );
    let mut ids: Vec<&str> = Vec::new();
    for entry in &entries {
        assert_eq!(entry.verdict, Verdict::Accepted, "{entry:?}");
        ids.push(entry.attestation_id.as_deref().unwrap());
    }
    let logged = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), logged, "an attestation was logged twice");
}

/// The log entries of agent `a1` (not those the ledger makes itself, e.g. policy records).
async fn agent_entries(client: &LedgerClient) -> Vec<EntryJson> {
    let mut entries = all_entries(client).await;
    entries.retain(|e| e.agent_id == "a1");
    entries
}

/// The fixture's profile with a freshness window of [`WINDOW_SECONDS`].
fn short_window_profile(fixture: &AgentFixture) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&fixture.profile_path).unwrap();
    let shortened = text.replace(
        "max_age_seconds = 300",
        &format!("max_age_seconds = {WINDOW_SECONDS}"),
    );
    assert_ne!(shortened, text, "the shipped profile sets max_age_seconds");
    let path = fixture.dir.path().join("short-window-profile.toml");
    std::fs::write(&path, shortened).unwrap();
    path
}

fn ledger_with_short_window(fixture: &AgentFixture, max_gap_seconds: u64) -> LedgerProcess {
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let profile = short_window_profile(fixture);
    LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash), ("globex", &policy_hash)],
        profile: Some(&profile),
        max_gap_seconds: Some(max_gap_seconds),
        ..LedgerSpec::default()
    })
}

/// Waits until a bundle made now is past the freshness window.
async fn outlast_the_window(made: Instant) {
    let past = Duration::from_secs(WINDOW_SECONDS + 2);
    tokio::time::sleep(past.saturating_sub(made.elapsed())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_longer_than_the_window_spooled_bundles_are_late_and_the_gap_is_one_alert()
{
    const MAX_GAP: u64 = 8;
    let fixture = AgentFixture::new();
    let mut ledger = ledger_with_short_window(&fixture, MAX_GAP);
    let config = attestor_config(&fixture, &ledger, "a1");
    let agent = Heartbeating::start(config.clone(), 2).await;
    let metrics = agent.metrics.clone();

    ledger.stop();
    let down = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "attestations spooled for longer than the allowed gap",
        || metrics.spool_depth() >= 3 && down.elapsed() > Duration::from_secs(MAX_GAP + 1),
    )
    .await;
    // The agent stops too, so that everything it spooled is past the window when the
    // ledger is back.
    agent.stop().await;
    let spooled = metrics.spool_depth();
    outlast_the_window(Instant::now()).await;

    ledger.restart();
    let agent = Heartbeating::start(config, 1).await;
    let metrics = agent.metrics.clone();
    wait_until(Duration::from_secs(60), "the spool to drain", || {
        metrics.spool_depth() == 0
    })
    .await;
    // Past the outage's grace, every gap the monitor still sees would be raised.
    tokio::time::sleep(Duration::from_secs(MAX_GAP + 2)).await;
    agent.stop().await;

    let client = ledger.client("a1");
    let entries = agent_entries(&client).await;
    let late: Vec<&EntryJson> = entries
        .iter()
        .filter(|e| e.verdict == Verdict::Late)
        .collect();
    // Every spooled bundle is late. A fresh heartbeat after the restart may be too, when
    // a loaded machine takes it past the 3 s window: genuinely late, and logged as such.
    assert!(
        late.len() as u64 >= spooled,
        "{spooled} spooled: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| matches!(e.verdict, Verdict::Accepted | Verdict::Late)),
        "{entries:#?}"
    );
    // Each late entry is the genuine attestation (claims, EAR), logged after the accepted
    // ones before the outage, and the agent is accepted again afterwards.
    let first_late = late[0].index;
    let before: Vec<&EntryJson> = entries.iter().filter(|e| e.index < first_late).collect();
    assert!(
        before.len() >= 2 && before.iter().all(|e| e.verdict == Verdict::Accepted),
        "{entries:#?}"
    );
    let last_late = late.last().unwrap().index;
    assert!(entries
        .iter()
        .any(|e| e.index > last_late && e.verdict == Verdict::Accepted));
    let jwks = client.ear_jwks().await.unwrap();
    for entry in &late {
        assert!(entry.attestation_id.is_some(), "{entry:?}");
        assert_eq!(entry.reason, None, "{entry:?}");
        let record = LogRecord::from_leaf(&entry.leaf).unwrap();
        let ear = attestor_verify::ear::verify(record.ear.as_deref().unwrap(), &jwks).unwrap();
        assert_eq!(ear.status(), Tier::Warning, "{ear:?}");
    }

    // No critical alert; the gap is the ledger's, once per tenant, not the agent's. The
    // lease holder resolves it once the agents have had one gap to be heard again, so it
    // may already be resolved: every incident, whatever its state, is counted.
    let store = EmbeddedStore::open(&ledger.state_dir().join("ledger.db")).unwrap();
    let incidents = store
        .incidents(&IncidentQuery {
            tenant: None,
            states: None,
            since_ms: None,
            limit: 1000,
        })
        .unwrap();
    assert!(
        incidents
            .iter()
            .all(|i| i.kind == AlertKind::LedgerOutage && i.agent_id == "@ledger"),
        "{incidents:#?}"
    );
    let tenants: Vec<&str> = incidents.iter().map(|i| i.tenant.as_str()).collect();
    assert_eq!(tenants.len(), 2, "one per tenant: {incidents:#?}");
    assert!(tenants.contains(&"acme"), "{incidents:#?}");
    let alerts = client.alerts().await.unwrap().alerts;
    assert!(
        alerts.iter().all(|a| a.kind == AlertKind::LedgerOutage),
        "{alerts:#?}"
    );
    let (status, metrics_page) = ledger.ops_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics_page.contains(&format!(
            "attestor_ledger_late_attestations_total{{tenant=\"acme\"}} {}",
            late.len()
        )),
        "{metrics_page}"
    );
    // Once the agents have had one allowed gap since the ledger came back, the outage is
    // over: the lease holder resolves its incident.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resolved = client.incidents("state=resolved").await.unwrap().incidents;
        if let Some(outage) = resolved.iter().find(|i| i.kind == AlertKind::LedgerOutage) {
            assert_eq!(
                outage.resolved.as_ref().unwrap().by,
                "@ledger",
                "{outage:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage incident was never resolved"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A bundle made now with `nonce`, and the same bundle with its quote's signature broken.
fn genuine_and_tampered(fixture: &AgentFixture, nonce: &[u8]) -> (Bundle, Bundle) {
    let genuine = fixture.attest_with_nonce(nonce);
    let mut tampered = fixture.attest_with_nonce(nonce);
    let signature = &mut tpm_ev_mut(&mut tampered).quote.signature;
    let last = signature.len() - 1;
    signature[last] ^= 1;
    (genuine, tampered)
}

/// The check a bundle fails when judged at the time it claims to be made (what the ledger
/// must report for a late bundle instead of its lateness).
fn failed_check_when_made(bundle: &Bundle, profile: &Profile, ak_name: Vec<u8>) -> String {
    let statement = Statement::from_json(&bundle.envelope.payload).unwrap();
    let made =
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(statement.predicate.timestamp);
    let expect = Expectations {
        nonce: bundle.nonce.clone(),
        now: Some(made),
        ak: AkTrust::Name(ak_name),
        ..Expectations::default()
    };
    let error = verify_bundle(bundle, profile, &expect).unwrap_err();
    error.check.name().to_string()
}

async fn submit(client: &LedgerClient, bundle: &Bundle) -> attestor_verify::api::SubmitResponse {
    client.submit(&bundle.to_json()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_bundle_is_refused_for_any_other_failure_and_logged_late_only_once() {
    let fixture = AgentFixture::new();
    let ledger = ledger_with_short_window(&fixture, 120);
    let client = ledger.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let first = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let first = submit(&client, &first).await;
    assert_eq!(first.verdict, Verdict::Accepted);

    // Made while the ledger "was down": with its nonces, and offline.
    let ledger_nonce = genuine_and_tampered(&fixture, &client.nonce().await.unwrap());
    let tampered_nonce = client.nonce().await.unwrap();
    let (_, tampered_with_ledger_nonce) = genuine_and_tampered(&fixture, &tampered_nonce);
    let offline = |fixture: &AgentFixture| {
        let mut nonce = OFFLINE_NONCE_PREFIX.to_vec();
        nonce.extend_from_slice(&attestor_verify::time::now_ms().to_be_bytes());
        genuine_and_tampered(fixture, &nonce)
    };
    let (offline_genuine, offline_tampered) = offline(&fixture);
    // And the policy kernel's configuration drifts: the TPM quotes what the sealed key
    // refuses to sign.
    std::fs::write(fixture.kernel_config_file(), "workers = 64\n").unwrap();
    let drift_nonce = client.nonce().await.unwrap();
    let drift = match fixture
        .agent()
        .attest(&fixture.kernel(), &fixture.status(), &drift_nonce)
    {
        Err(attestor_agent::attest::AgentError::Drift { report, .. }) => *report,
        other => panic!("expected a drift, got {other:?}"),
    };
    outlast_the_window(Instant::now()).await;

    let profile = Profile::load(&short_window_profile(&fixture)).unwrap();
    for tampered in [&tampered_with_ledger_nonce, &offline_tampered] {
        let answer = submit(&client, tampered).await;
        assert_eq!(answer.verdict, Verdict::Refused, "{answer:?}");
        let expected = failed_check_when_made(tampered, &profile, fixture.ak_name());
        assert_ne!(expected, "freshness");
        assert_eq!(
            answer.reason.as_deref(),
            Some(expected.as_str()),
            "{answer:?}"
        );
    }
    // The tampered ones are refused, not their genuine siblings.
    let (ledger_genuine, _) = ledger_nonce;
    let late = submit(&client, &ledger_genuine).await;
    assert_eq!(late.verdict, Verdict::Late, "{late:?}");
    let late_offline = submit(&client, &offline_genuine).await;
    assert_eq!(late_offline.verdict, Verdict::Late, "{late_offline:?}");

    // Sent again, a late bundle gets its original receipt; re-encoded, it is a replay.
    let again = submit(&client, &ledger_genuine).await;
    assert_eq!(again.receipt.index, late.receipt.index);
    let reencoded: serde_json::Value = serde_json::from_slice(&offline_genuine.to_json()).unwrap();
    let pretty = serde_json::to_vec_pretty(&reencoded).unwrap();
    let replay = client.submit(&pretty).await.unwrap();
    assert_ne!(replay.receipt.index, late_offline.receipt.index);
    assert_eq!(replay.verdict, Verdict::Refused, "{replay:?}");

    // A drift spooled through an outage is still reported as the drift it is.
    let now = Expectations {
        nonce: drift.nonce.clone(),
        ak: AkTrust::Name(fixture.ak_name()),
        ..Expectations::default()
    };
    let stale = verify_drift_report(&drift, &profile, &now).unwrap_err();
    assert_eq!(
        stale.check,
        Check::Freshness,
        "the report is past the window"
    );
    let drifted = client.submit(&drift.to_json()).await.unwrap();
    assert_eq!(drifted.verdict, Verdict::Refused, "{drifted:?}");
    assert_eq!(drifted.reason.as_deref(), Some("kernel-config-drift"));

    // A late bundle does not count as a heartbeat, nor is it an alert.
    let agents = client.agents().await.unwrap().agents;
    let first_logged = client.entry(first.receipt.index).await.unwrap();
    assert_eq!(
        agents[0].last_accepted_at_ms,
        Some(first_logged.received_at_ms)
    );
}
