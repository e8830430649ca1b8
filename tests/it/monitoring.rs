//! Monitoring against a real ledger process and agents on swtpm: metrics checked by
//! promtool, the shipped alert rules tested by promtool, alerts at an Alertmanager-style
//! webhook (a real HTTP listener) that fire and resolve, actions on drift, the release
//! gate, and the dashboard rendered by headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::agent::AgentFixture;
use crate::support::ledger::{
    attestor_config, enrol_tpm, http_get, LedgerProcess, LedgerSpec, OPS_TOKEN,
};
use crate::support::require_tool;
use crate::support::wait_for;
use attestor_agent::client::LedgerClient;
use attestor_agent::{Attestor, AttestorConfig};
use attestor_ledger::store::{AlertKind, Verdict};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests leave artifacts worth keeping (screenshots).
fn test_output() -> PathBuf {
    let dir = root().join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `promtool ARGS` with `stdin`, failing the test with its output unless it succeeds.
fn promtool(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(require_tool("promtool"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A heartbeat daemon in a thread of its own, stopped on drop.
struct RunningAgent {
    metrics: Arc<attestor_agent::metrics::AgentMetrics>,
    stopper: attestor_agent::heartbeat::Stopper,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningAgent {
    fn start(config: AttestorConfig) -> RunningAgent {
        let mut attestor = Attestor::new(config);
        let (metrics, stopper) = (attestor.metrics(), attestor.stopper());
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(attestor.start_heartbeat())
                .unwrap();
        });
        RunningAgent {
            metrics,
            stopper,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> u64 {
        self.metrics.delivered_count(Verdict::Accepted)
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn agent_config(
    fixture: &AgentFixture,
    ledger: &LedgerProcess,
    agent_id: &str,
    metrics_port: Option<u16>,
) -> AttestorConfig {
    let mut config = attestor_config(fixture, ledger, agent_id);
    config.agent.heartbeat.metrics_listen = metrics_port.map(|p| ([127, 0, 0, 1], p).into());
    config
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An Alertmanager stand-in: records every alert POSTed to /api/v2/alerts.
struct Webhook {
    port: u16,
    /// Each alert with when it arrived.
    received: Arc<Mutex<Vec<(time::OffsetDateTime, serde_json::Value)>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                assert!(
                    request_line.starts_with("POST /api/v2/alerts "),
                    "{request_line}"
                );
                let alerts: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                let now = time::OffsetDateTime::now_utc();
                sink.lock()
                    .unwrap()
                    .extend(alerts.into_iter().map(|a| (now, a)));
                reader
                    .into_inner()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .unwrap();
            }
        });
        Webhook { port, received }
    }

    /// Whether an alert named `name` for `agent` arrived, firing (`endsAt` ahead of its
    /// arrival) or resolved (`endsAt` reached).
    fn saw(&self, name: &str, agent: &str, firing: bool) -> bool {
        self.received.lock().unwrap().iter().any(|(arrived, a)| {
            let ends = time::OffsetDateTime::parse(
                a["endsAt"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            a["labels"]["alertname"] == name
                && a["labels"]["agent"] == agent
                && (ends > *arrived + time::Duration::seconds(1)) == firing
        })
    }
}

fn gate(ledger: &LedgerProcess, agent_id: &str, args: &[&str]) -> (bool, String) {
    let files = ledger.tls_files(agent_id);
    let out = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .arg("gate")
        .args(["--ledger", &ledger.endpoint()])
        .arg("--ca")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "gate could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn metrics_pass_promtool_and_the_alert_rules_pass_their_tests() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let port = free_port();
    let agent = RunningAgent::start(agent_config(&fixture, &ledger, "a1", Some(port)));
    wait_for(Duration::from_secs(60), "an accepted heartbeat", || {
        agent.accepted() >= 1
    });

    let (status, ledger_metrics) = ledger.ops_get("/metrics");
    assert_eq!(status, 200);
    promtool(&["check", "metrics"], &ledger_metrics);
    for series in [
        "attestor_ledger_submissions_total{verdict=\"accepted\",reason=\"\"}",
        "attestor_ledger_agents{state=\"healthy\"} 1",
        "attestor_ledger_agent_last_attestation_age_seconds{tenant=\"acme\",agent=\"a1\"}",
        "attestor_ledger_verification_seconds_bucket",
        "attestor_ledger_stage_seconds_bucket{le=",
        "attestor_ledger_log_entries",
        "attestor_ledger_checkpoint_age_seconds",
    ] {
        assert!(
            ledger_metrics.contains(series),
            "no {series} in:\n{ledger_metrics}"
        );
    }
    let (_, agent_metrics) = http_get(port, "/metrics");
    promtool(&["check", "metrics"], &agent_metrics);
    for series in [
        "attestor_agent_heartbeats_total{outcome=\"ok\"}",
        "attestor_agent_attestations_delivered_total{verdict=\"accepted\"}",
        "attestor_agent_tpm_call_duration_seconds_bucket{le=",
        "attestor_agent_spool_depth 0",
    ] {
        assert!(
            agent_metrics.contains(series),
            "no {series} in:\n{agent_metrics}"
        );
    }

    // Every metric the shipped rules and Grafana dashboard use is one we export.
    let exported = format!("{ledger_metrics}{agent_metrics}");
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/attestor.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let used = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("attestor_"));
        for name in used {
            assert!(
                exported.contains(name),
                "{file} uses {name}, which is not exported"
            );
        }
    }
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], "");
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"], "");
}

/// Each stage's histogram on `/metrics`: (upper bound, cumulative count) per bucket, in
/// the order written, and the `_count`.
fn stage_histogram(metrics: &str, stage: &str) -> (Vec<(f64, u64)>, u64) {
    // `NAME{k="v",...} VALUE` lines of the series `name` for this stage: (labels, value).
    let series = |name: &str| -> Vec<(Vec<(String, String)>, String)> {
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|rest| {
                let (labels, value) = rest.split_once("} ")?;
                let labels: Vec<(String, String)> = labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                    .collect();
                let ours = labels.iter().any(|(k, v)| k == "stage" && v == stage);
                ours.then(|| (labels, value.trim().to_string()))
            })
            .collect()
    };
    let buckets = series("attestor_ledger_stage_seconds_bucket")
        .into_iter()
        .map(|(labels, count)| {
            let le = &labels.iter().find(|(k, _)| k == "le").unwrap().1;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, count.parse().unwrap())
        })
        .collect();
    let counts = series("attestor_ledger_stage_seconds_count");
    let count = counts
        .first()
        .unwrap_or_else(|| panic!("no count for {stage} in:\n{metrics}"))
        .1
        .parse()
        .unwrap();
    (buckets, count)
}

/// The ledger times every pipeline stage of a submission from its tracing spans: after a
/// few submissions each stage's histogram has observations, in cumulative buckets. The
/// timings do not depend on RUST_LOG, which here keeps every info line out of the log.
#[test]
fn every_pipeline_stage_of_a_submission_is_timed_on_metrics() {
    let scratch = tempfile::tempdir().unwrap();
    let ek_ca = scratch.path().join("ek-ca");
    let mut ledger = crate::loadgen::ledger_for_loadgen(&ek_ca, &"ab".repeat(32));
    ledger.stop();
    let from = ledger.log().len();
    ledger.env.push(("RUST_LOG".into(), "warn".into()));
    ledger.restart();
    crate::loadgen::loadgen(
        &ledger,
        &ek_ca,
        &["--agents", "2", "--rate", "10", "--duration", "1"],
    );

    let (status, metrics) = ledger.ops_get("/metrics");
    assert_eq!(status, 200);
    for stage in attestor_net::logging::STAGES {
        let (buckets, count) = stage_histogram(&metrics, stage);
        assert!(count > 0, "nothing timed for {stage} in:\n{metrics}");
        assert!(buckets.len() > 2, "{stage}: {buckets:?}");
        for pair in buckets.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{stage}: bounds out of order {buckets:?}"
            );
            assert!(
                pair[0].1 <= pair[1].1,
                "{stage}: not cumulative {buckets:?}"
            );
        }
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, count)),
            "{stage}: +Inf holds every observation"
        );
    }
    let log = ledger.log();
    let (default, warn) = log.split_at(from);
    assert!(
        default.contains("\"event\":\"ledger-started\""),
        "{default}"
    );
    assert!(!warn.contains("\"level\":\"info\""), "{warn}");
}

/// `attestor agent` writes its events as the same JSON lines on stderr (the subscriber is
/// installed for every command), from its start to its stop.
#[test]
fn the_agent_process_logs_json_lines_from_start_to_stop() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let tls = ledger.tls_files("a1");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&fixture.config_path)
        .unwrap();
    write!(
        config,
        "\n[ledger]\nendpoint = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [heartbeat]\ninterval_seconds = 5\ntimeout_seconds = 4\n",
        ledger.endpoint(),
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    )
    .unwrap();
    let log_path = fixture.dir.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .arg("agent")
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("--tcti")
        .arg(fixture.tpm.tcti())
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log().contains("\"event\":\"delivered\"") {
        assert!(
            Instant::now() < deadline && agent.try_wait().unwrap().is_none(),
            "no delivered attestation; agent log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    agent.wait().unwrap();

    let log = log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"agent-started"), "{log}");
    assert_eq!(events.last(), Some(&"agent-stopped"), "{log}");
    let delivered = &lines[events.iter().position(|e| *e == "delivered").unwrap()];
    assert_eq!(delivered["level"], "info");
    assert_eq!(delivered["verdict"], "accepted");
    // An accepted attestation has no refusal reason: written as null, as before tracing.
    assert_eq!(delivered["reason"], serde_json::Value::Null);
    assert!(delivered["ts_ms"].as_u64().is_some() && delivered["index"].as_u64().is_some());
    assert_eq!(lines[0]["tenant"], "acme");
    assert_eq!(lines[0]["agent"], "a1");
}

#[test]
fn a_silent_agent_raises_a_gap_alert_that_resolves_and_the_gate_follows() {
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let webhook = Webhook::start();
    let extra = format!(
        "[alerts]\nalertmanager = \"http://127.0.0.1:{}\"\nresend_seconds = 1\n",
        webhook.port
    );
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&fixture.profile_path),
        max_gap_seconds: Some(3),
        extra: &extra,
        ..LedgerSpec::default()
    });
    let agent = RunningAgent::start(agent_config(&fixture, &ledger, "a1", None));
    wait_for(Duration::from_secs(60), "an accepted heartbeat", || {
        agent.accepted() >= 1
    });
    let (pass, table) = gate(&ledger, "a1", &["--tenant", "acme", "--max-age", "1m"]);
    assert!(pass, "{table}");

    drop(agent);
    wait_for(Duration::from_secs(60), "the gap alert", || {
        webhook.saw("AttestorMissingHeartbeat", "a1", true)
    });
    let (pass, table) = gate(&ledger, "a1", &["--max-age", "1m"]);
    assert!(!pass && table.contains("missing-heartbeat"), "{table}");
    let (pass, json) = gate(&ledger, "a1", &["--max-age", "1s", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(!pass && report["pass"] == false, "{json}");
    assert!(
        report["agents"][0]["problems"].to_string().contains("old"),
        "{json}"
    );

    let agent = RunningAgent::start(agent_config(&fixture, &ledger, "a1", None));
    wait_for(Duration::from_secs(60), "the alert to resolve", || {
        webhook.saw("AttestorMissingHeartbeat", "a1", false)
    });
    drop(agent);
    let (pass, table) = gate(&ledger, "a1", &["--max-age", "1m"]);
    assert!(pass, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_drifted_attestations_fail_the_gate_and_drift_runs_the_action() {
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("rollback.json");
    let extra = format!(
        "[[alerts.actions]]\non = \"policy-drift\"\ncommand = [\"sh\", \"-c\", \"cat > {}\"]\n",
        marker.display()
    );
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        operators: &[("oncall", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&fixture.profile_path),
        extra: &extra,
        ..LedgerSpec::default()
    });
    let client: LedgerClient = ledger.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();

    // An invalid attestation (forged signature) fails the gate until an operator resolves
    // its incident, a valid attestation after it notwithstanding.
    let mut forged = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let sig = &mut forged.envelope.signatures[0].sig;
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let refused = client.submit(&forged.to_json()).await.unwrap();
    assert_eq!(refused.verdict, Verdict::Refused);
    let (pass, table) = tokio::task::block_in_place(|| gate(&ledger, "a1", &[]));
    assert!(!pass && table.contains("invalid-attestation"), "{table}");
    let good = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    assert_eq!(
        client.submit(&good.to_json()).await.unwrap().verdict,
        Verdict::Accepted
    );
    let (pass, table) = tokio::task::block_in_place(|| gate(&ledger, "a1", &[]));
    assert!(!pass && table.contains("invalid-attestation"), "{table}");
    let open = ledger
        .operator_client("oncall")
        .incidents("")
        .await
        .unwrap();
    let invalid = open.incidents[0].id;
    ledger
        .operator_client("oncall")
        .change_incident(invalid, true, "the forged bundle was our own test")
        .await
        .unwrap();
    let (pass, table) = tokio::task::block_in_place(|| gate(&ledger, "a1", &[]));
    assert!(pass, "{table}");

    let policy = std::fs::read_to_string(fixture.policy_file()).unwrap();
    fixture.reseal_with_policy(&policy.replace("max_epsilon = 3.0", "max_epsilon = 30.0"));
    let nonce = client.nonce().await.unwrap();
    let response = client
        .submit(&fixture.attest_with_nonce(&nonce).to_json())
        .await
        .unwrap();
    assert_eq!(response.reason.as_deref(), Some("policy-hash"));

    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the action did not run:\n{}",
            ledger.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    assert_eq!(payload["phase"], "fire");
    assert_eq!(payload["incident"]["kind"], "policy-drift");
    assert_eq!(payload["agent_id"], "a1");
    assert_eq!(payload["ear"], response.ear.clone().unwrap().as_str());
    let record = std::fs::read_to_string(ledger.state_dir().join("actions.jsonl")).unwrap();
    assert!(record.contains("\"ok\":true"), "{record}");
    // The outcome is kept in the drift's incident too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let incidents = client.incidents("state=open").await.unwrap().incidents;
        let drift = incidents
            .iter()
            .find(|i| i.kind == AlertKind::PolicyDrift)
            .expect("the drift is an open incident");
        if let Some(outcome) = drift.actions.first() {
            assert!(outcome.ok && outcome.attempts == 1, "{outcome:?}");
            assert_eq!(outcome.hook, "alerts.actions[0]");
            break;
        }
        assert!(Instant::now() < deadline, "no action outcome in {drift:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let open = client.alerts().await.unwrap().alerts;
    assert_eq!(open.len(), 1);
    let (pass, table) = tokio::task::block_in_place(|| gate(&ledger, "a1", &[]));
    assert!(!pass && table.contains("policy-drift"), "{table}");
}

#[test]
fn the_dashboard_renders_in_headless_chromium() {
    let chromium = require_tool("chromium");
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("web-1", "acme"), ("stranger", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&fixture.profile_path),
        enrolled: true,
        ..LedgerSpec::default()
    });
    let agent = RunningAgent::start(agent_config(&fixture, &ledger, "web-1", None));
    wait_for(Duration::from_secs(60), "three accepted heartbeats", || {
        agent.accepted() >= 3
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(ledger.client("stranger").submit(b"{\"not\": \"a bundle\"}"))
        .unwrap();
    drop(agent);

    assert_eq!(ledger.ops_get("/dashboard").0, 401);
    let url = format!(
        "http://127.0.0.1:{}/dashboard?token={OPS_TOKEN}",
        ledger.ops_port
    );
    let profile_dir = tempfile::tempdir().unwrap();
    let headless = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile_dir.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = headless(&["--dump-dom"]);
    for expected in [
        "attestor: security posture",
        "data-agent=\"web-1\"",
        "<td class=\"health\">healthy</td>",
        "expected",
        "Recent refusals",
        "malformed",
        "stranger",
        // The stranger's refusal opened an incident, with its evidence.
        "<table id=\"incidents\">",
        "<td>invalid-attestation</td>",
        // Posture flags, the EAR of the built-in policy, and the 24 h timeline.
        "isolation on",
        "PII detection on",
        "<span class=\"ear affirming\">affirming</span>",
        "<svg class=\"timeline\"",
        "<rect class=\"accepted\"",
        "<rect class=\"refused\"",
    ] {
        assert!(
            dom.contains(expected),
            "no {expected:?} in the rendered page:\n{dom}"
        );
    }
    assert!(!dom.contains("MISMATCH"), "{dom}");
    let shot = test_output().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(&[
        "--window-size=1280,800",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "no screenshot"
    );
}
