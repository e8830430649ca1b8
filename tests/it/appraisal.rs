//! Posture appraisal against a real ledger process and an agent on swtpm: each broken
//! posture rule is named in the signed EAR the log keeps, in /metrics and in an alert; the
//! EARs verify with the ledger's JWKS in PyJWT as well as here; the appraisal policy
//! changes on SIGHUP (all or nothing, recorded in the log, alerts kept), and a canary's
//! old policy hash is refused once its approval expires. `attestor verify --appraisal`
//! gives the same judgement offline. A drift on a TPM host is reported at the next
//! heartbeat (a quote proving the new measurement) and raises `policy-drift`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::agent::AgentFixture;
use crate::support::ledger::{
    all_entries, attestor_config, enrol_tpm, Heartbeating, LedgerProcess, LedgerSpec,
};
use crate::support::{wait_for, wait_until};
use attestor_agent::client::LedgerClient;
use attestor_verify::api::{AlertKind, SubmitResponse, Verdict};
use attestor_verify::ear::{self, Ear, Jwks, Tier};
use attestor_verify::record::POLICY_RECORDER;

fn example_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appraisal.toml"))
        .unwrap()
}

/// Rewrites the fixture's runtime status, as the policy kernel would report it.
fn set_status(fixture: &AgentFixture, change: impl FnOnce(&mut serde_json::Value)) {
    let path = fixture.dir.path().join("agent/status.json");
    let mut status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    change(&mut status);
    std::fs::write(&path, serde_json::to_vec_pretty(&status).unwrap()).unwrap();
}

fn reset_status(fixture: &AgentFixture) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/status.json");
    std::fs::copy(example, fixture.dir.path().join("agent/status.json")).unwrap();
}

async fn submit(fixture: &AgentFixture, client: &LedgerClient) -> SubmitResponse {
    let nonce = client.nonce().await.unwrap();
    let bundle = fixture.attest_with_nonce(&nonce);
    client.submit(&bundle.to_json()).await.unwrap()
}

fn jwks(ledger: &LedgerProcess) -> Jwks {
    let (status, body) = ledger.ops_get("/v1/ear/jwks");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The EAR of a response, verified with the ledger's key set.
fn verified_ear(response: &SubmitResponse, keys: &Jwks) -> Ear {
    ear::verify(
        response.ear.as_deref().expect("every verdict has an EAR"),
        keys,
    )
    .unwrap()
}

fn first_check(ear: &Ear) -> Option<String> {
    ear.appraisal()
        .unwrap()
        .attestor
        .reasons
        .first()
        .map(|r| r.check.clone())
}

/// PyJWT (an independent JOSE implementation) verifies `token` with the ledger's JWKS and
/// returns the EAR status it read.
fn pyjwt_status(token: &str, keys: &Jwks) -> String {
    // Debian's interpreter, which python3-jwt (scripts/deps.sh) installs PyJWT for.
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 is missing: run scripts/deps.sh"
    );
    let script = r#"
import json, sys, jwt
token, jwks = sys.argv[1], json.loads(sys.argv[2])
kid = jwt.get_unverified_header(token)["kid"]
key = jwt.PyJWK([k for k in jwks["keys"] if k["kid"] == kid][0])
claims = jwt.decode(token, key.key, algorithms=["ES384"])
appraisal = claims["submods"]["policy-kernel"]
assert claims["eat_profile"] == "tag:ietf.org,2026:rats/ear#04", claims
assert claims["ear_verifier_id"]["developer"] == "https://attestor.dev", claims
assert isinstance(claims["iat"], int) and appraisal["ear_appraisal_policy_ids"], claims
assert all(isinstance(v, int) for v in appraisal["ear_trustworthiness_vector"].values())
print(appraisal["ear_status"])
"#;
    let out = Command::new(python)
        .args(["-c", script, token, &serde_json::to_string(keys).unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused the EAR: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A ledger for `fixture`'s agent `a1` of tenant `acme` (expecting `policy_hash`), whose
/// appraisal policy is the file `policy`; the agent enrolled.
async fn ledger_with_policy(
    fixture: &AgentFixture,
    policy_hash: &str,
    policy: &Path,
) -> (LedgerProcess, LedgerClient) {
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", policy_hash)],
        profile: Some(&fixture.profile_path),
        tenant_extra: &format!("appraisal = \"{}\"\n", policy.display()),
        ..LedgerSpec::default()
    });
    let client = ledger.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    (ledger, client)
}

fn metric(ledger: &LedgerProcess, series: &str) -> f64 {
    let (_, text) = ledger.ops_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn open_alerts(client: &LedgerClient) -> Vec<AlertKind> {
    client
        .alerts()
        .await
        .unwrap()
        .alerts
        .iter()
        .map(|a| a.kind)
        .collect()
}

fn hang_up(ledger: &LedgerProcess) {
    let before = ledger.reloads();
    ledger.hang_up();
    wait_for(Duration::from_secs(20), "the reload", || {
        ledger.reloads() > before
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_posture_break_is_named_in_the_ear_the_metrics_and_an_alert() {
    let fixture = AgentFixture::new();
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("appraisal.toml");
    std::fs::write(&policy, example_policy()).unwrap();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let (ledger, client) = ledger_with_policy(&fixture, &policy_hash, &policy).await;
    let keys = jwks(&ledger);

    let clean = submit(&fixture, &client).await;
    assert_eq!(clean.verdict, Verdict::Accepted);
    let ear = verified_ear(&clean, &keys);
    assert_eq!(ear.status(), Tier::Affirming, "{ear:?}");
    assert_eq!(
        pyjwt_status(clean.ear.as_deref().unwrap(), &keys),
        "affirming"
    );
    assert_eq!(ear.attestor.agent_id.as_deref(), Some("a1"));
    let policy_id = ear.appraisal().unwrap().ear_appraisal_policy_ids[0].clone();
    assert!(policy_id.starts_with("demo@1#sha256:"), "{policy_id}");

    type Break = fn(&mut serde_json::Value);
    let breaks: [(Break, &str, Tier); 8] = [
        (
            |s| s["tenant_isolation"] = false.into(),
            "tenant-isolation",
            Tier::Contraindicated,
        ),
        (
            |s| s["egress_firewall_enabled"] = false.into(),
            "egress-firewall",
            Tier::Contraindicated,
        ),
        (
            |s| s["pii_detection_enabled"] = false.into(),
            "pii-detection",
            Tier::Contraindicated,
        ),
        (
            |s| s["epsilon_current_usage"] = 3.5.into(),
            "epsilon-over-budget",
            Tier::Contraindicated,
        ),
        (
            |s| s["capability_keys"][0]["key_id"] = "cap-unknown".into(),
            "capability-key",
            Tier::Contraindicated,
        ),
        // The example policy makes an old version a warning.
        (|s| s["version"] = "1.3.9".into(), "version", Tier::Warning),
        // Fewer requests than before in the same uptime.
        (
            |s| {
                s["total_requests"] = 1000.into();
                s["blocked_requests"] = 0.into();
            },
            "counter-regression",
            Tier::Contraindicated,
        ),
        // 59,000 of the 129,394 requests since the previous attestation blocked.
        (
            |s| {
                s["total_requests"] = 130_394.into();
                s["blocked_requests"] = 60_000.into();
            },
            "blocked-rate",
            Tier::Contraindicated,
        ),
    ];
    for (change, check, tier) in breaks {
        set_status(&fixture, change);
        let response = submit(&fixture, &client).await;
        // Genuine evidence of an unfit posture: logged as accepted, judged by the policy.
        assert_eq!(response.verdict, Verdict::Accepted, "{check}");
        let ear = verified_ear(&response, &keys);
        assert_eq!(ear.status(), tier, "{check}: {ear:?}");
        assert_eq!(first_check(&ear).as_deref(), Some(check));
        assert_eq!(
            pyjwt_status(response.ear.as_deref().unwrap(), &keys),
            tier.name()
        );
        let series = format!(
            "attestor_ledger_posture_reasons_total{{tenant=\"acme\",check=\"{check}\",tier=\"{}\"}}",
            tier.name()
        );
        assert_eq!(metric(&ledger, &series), 1.0, "{series}");
        let alert = match tier {
            Tier::Warning => AlertKind::PostureWarning,
            _ => AlertKind::PostureContraindicated,
        };
        assert_eq!(open_alerts(&client).await, [alert], "{check}");
        reset_status(&fixture);
    }
    // The runtime restarted: its counters start again, which is no regression.
    set_status(&fixture, |s| s["uptime_seconds"] = 10.into());
    let healthy = submit(&fixture, &client).await;
    let ear = verified_ear(&healthy, &keys);
    assert_eq!(ear.status(), Tier::Affirming, "{ear:?}");
    assert!(ear.appraisal().unwrap().attestor.runtime_restarted);
    assert_eq!(open_alerts(&client).await, []);
    for (series, count) in [
        (
            "attestor_ledger_appraisals_total{tenant=\"acme\",status=\"contraindicated\"}",
            7.0,
        ),
        (
            "attestor_ledger_appraisals_total{tenant=\"acme\",status=\"warning\"}",
            1.0,
        ),
        (
            "attestor_ledger_appraisals_total{tenant=\"acme\",status=\"affirming\"}",
            2.0,
        ),
        (
            "attestor_ledger_runtime_restarts_total{tenant=\"acme\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&ledger, series), count, "{series}");
    }

    // The log keeps each EAR with its entry, and the policy that judged them before them.
    let entries = all_entries(&client).await;
    let recorded = entries
        .iter()
        .position(|e| e.agent_id == POLICY_RECORDER)
        .expect("the policy is recorded");
    assert_eq!(
        entries[recorded].appraisal_policy.as_deref(),
        Some(&*policy_id)
    );
    let judged: Vec<_> = entries.iter().filter(|e| e.ear.is_some()).collect();
    assert_eq!(judged.len(), 10);
    assert!(judged.iter().all(|e| e.index > entries[recorded].index));
    assert_eq!(judged[0].ear, clean.ear);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_reloads_all_or_nothing_and_a_canary_hash_expires() {
    let fixture = AgentFixture::new();
    let old_hash = hex::encode(fixture.kernel().policy_hash);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("appraisal.toml");
    let lenient = example_policy().replace(
        "egress_firewall_enabled = \"contraindicated\"",
        "egress_firewall_enabled = \"warning\"",
    );
    std::fs::write(&policy, &lenient).unwrap();
    let (ledger, client) = ledger_with_policy(&fixture, &old_hash, &policy).await;
    let keys = jwks(&ledger);

    set_status(&fixture, |s| s["egress_firewall_enabled"] = false.into());
    let warned = submit(&fixture, &client).await;
    assert_eq!(verified_ear(&warned, &keys).status(), Tier::Warning);
    assert_eq!(open_alerts(&client).await, [AlertKind::PostureWarning]);

    // Revision 2 makes it contraindicated: judged so from the next attestation on, and
    // the open alert survives the reload.
    let strict = example_policy().replace("revision = 1", "revision = 2");
    std::fs::write(&policy, &strict).unwrap();
    hang_up(&ledger);
    assert_eq!(open_alerts(&client).await, [AlertKind::PostureWarning]);
    let refused_posture = submit(&fixture, &client).await;
    let ear = verified_ear(&refused_posture, &keys);
    assert_eq!(ear.status(), Tier::Contraindicated);
    assert!(ear.appraisal().unwrap().ear_appraisal_policy_ids[0].starts_with("demo@2#"));

    // A broken file keeps the loaded policy, loudly.
    std::fs::write(
        &policy,
        "name = \"demo\"\nrevision = 3\n[posture]\negress = 1\n",
    )
    .unwrap();
    hang_up(&ledger);
    assert!(
        ledger.log().contains("kept the loaded policies"),
        "{}",
        ledger.log()
    );
    assert_eq!(
        metric(
            &ledger,
            "attestor_ledger_appraisal_reloads_total{result=\"failed\"}"
        ),
        1.0
    );
    let still = submit(&fixture, &client).await;
    let ear = verified_ear(&still, &keys);
    assert!(ear.appraisal().unwrap().ear_appraisal_policy_ids[0].starts_with("demo@2#"));
    reset_status(&fixture);

    // A canary: the agent moves to a new kernel policy while the tenant still names the
    // old one; the appraisal policy approves the new hash until a deadline.
    fixture.reseal_with_policy(
        &std::fs::read_to_string(fixture.policy_file())
            .unwrap()
            .replace("max_epsilon = 3.0", "max_epsilon = 2.5"),
    );
    let new_hash = hex::encode(fixture.kernel().policy_hash);
    assert_ne!(new_hash, old_hash);
    // Array-of-tables headers are absolute in TOML: appending one is valid.
    let with_hashes = |expires: &str| {
        format!(
            "{}\n[[policy_hashes]]\nsha256 = \"{new_hash}\"\nexpires = {expires}\n",
            strict.replace("revision = 2", "revision = 4")
        )
    };
    std::fs::write(&policy, with_hashes("2099-01-01T00:00:00Z")).unwrap();
    hang_up(&ledger);
    let tenant = client.tenant().await.unwrap();
    assert!(
        tenant.approved_policy_hashes.contains(&new_hash),
        "{tenant:?}"
    );
    let approved = submit(&fixture, &client).await;
    assert_eq!(approved.verdict, Verdict::Accepted, "{approved:?}");

    std::fs::write(&policy, with_hashes("2020-01-01T00:00:00Z")).unwrap();
    hang_up(&ledger);
    let expired = submit(&fixture, &client).await;
    assert_eq!(expired.verdict, Verdict::Refused);
    assert_eq!(expired.reason.as_deref(), Some("policy-hash-expired"));
    let ear = verified_ear(&expired, &keys);
    assert_eq!(ear.status(), Tier::Contraindicated);
    assert!(open_alerts(&client).await.contains(&AlertKind::PolicyDrift));

    // Every policy that judged is in the log, in order, each with its document.
    let recorded: Vec<String> = all_entries(&client)
        .await
        .into_iter()
        .filter(|e| e.agent_id == POLICY_RECORDER)
        .map(|e| e.appraisal_policy.unwrap())
        .collect();
    let revisions: Vec<&str> = recorded
        .iter()
        .map(|id| id.split('#').next().unwrap())
        .collect();
    assert_eq!(revisions, ["demo@1", "demo@2", "demo@4", "demo@4"]);
}

#[test]
fn verify_offline_gives_the_ledgers_judgement() {
    let fixture = AgentFixture::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appraisal.toml");
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let ak_name = hex::encode(fixture.ak_name());
    let verify = |name: &str| {
        let bundle = dir.path().join(format!("{name}.json"));
        std::fs::write(&bundle, fixture.attest().to_json()).unwrap();
        let ear_out = dir.path().join(format!("{name}.ear"));
        let out = Command::new(env!("CARGO_BIN_EXE_attestor"))
            .arg("verify")
            .arg(&bundle)
            .arg("--profile")
            .arg(&fixture.profile_path)
            .args([
                "--policy-hash",
                &policy_hash,
                "--ak-name",
                &ak_name,
                "--appraisal",
            ])
            .arg(&policy)
            .arg("--ear-out")
            .arg(&ear_out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let token = std::fs::read_to_string(&ear_out).unwrap();
        (
            out.status.code(),
            text,
            ear::claims_unverified(token.trim()).unwrap(),
        )
    };
    let (code, text, ear) = verify("clean");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("EAR affirming by appraisal policy demo@1#sha256:"),
        "{text}"
    );
    assert!(text.contains("unsigned"), "an unsigned EAR says so: {text}");
    assert_eq!(ear.status(), Tier::Affirming);

    set_status(&fixture, |s| s["egress_firewall_enabled"] = false.into());
    let (code, text, ear) = verify("unfit");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED egress-firewall"), "{text}");
    assert_eq!(ear.status(), Tier::Contraindicated);

    // After an unapproved change `attest` writes the drift report, which verifies as one.
    std::fs::write(fixture.kernel_config_file(), "workers = 64\n").unwrap();
    let drifted = hex::encode(fixture.kernel().kernel_config_hash);
    let report = dir.path().join("drift.json");
    let attest = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["attest", "--config"])
        .arg(&fixture.config_path)
        .args(["--tcti", &fixture.tpm.tcti(), "--out"])
        .arg(&report)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&attest.stdout);
    assert_eq!(attest.status.code(), Some(1), "{text}");
    assert!(text.contains("drifted"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .arg("verify")
        .arg(&report)
        .arg("--profile")
        .arg(&fixture.profile_path)
        .args(["--ak-name", &ak_name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "DRIFT: the TPM measures kernel configuration {drifted}"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_is_reported_at_the_next_heartbeat_and_raises_policy_drift() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 2).await;
    let client = ledger.client("a1");
    let approved = fixture.kernel().kernel_config_hash;

    // An unapproved change: the TPM refuses to sign, and the agent reports what it measures.
    std::fs::write(fixture.kernel_config_file(), "workers = 64\n").unwrap();
    let drifted = hex::encode(fixture.kernel().kernel_config_hash);
    wait_until(Duration::from_secs(60), "a policy-drift alert", || {
        ledger.log().contains("\"kind\":\"policy-drift\"")
    })
    .await;
    let alerts = client.alerts().await.unwrap().alerts;
    let drift = alerts
        .iter()
        .find(|a| a.kind == AlertKind::PolicyDrift)
        .expect("policy-drift is open");
    assert!(drift.summary.contains(&drifted), "{}", drift.summary);
    assert!(
        drift.summary.contains(&hex::encode(approved)),
        "{}",
        drift.summary
    );
    assert!(
        alerts.iter().all(|a| a.kind != AlertKind::MissingHeartbeat),
        "the agent did not fall silent: {alerts:?}"
    );
    agent.stop().await;

    // No heartbeat went missing: the entry after the last accepted one is the report.
    let entries: Vec<_> = all_entries(&client)
        .await
        .into_iter()
        .filter(|e| e.agent_id == "a1")
        .collect();
    let last_accepted = entries
        .iter()
        .rposition(|e| e.verdict == Verdict::Accepted)
        .unwrap();
    let report = &entries[last_accepted + 1];
    assert_eq!(
        report.reason.as_deref(),
        Some("kernel-config-drift"),
        "{report:?}"
    );
    assert!(entries[last_accepted + 1..]
        .iter()
        .all(|e| e.reason.as_deref() == Some("kernel-config-drift")));
    let keys = jwks(&ledger);
    let ear = ear::verify(report.ear.as_deref().unwrap(), &keys).unwrap();
    assert_eq!(ear.status(), Tier::Contraindicated);
    assert_eq!(ear.attestor.submission, "drift-report");
    assert_eq!(ear.attestor.kernel_config_hash.as_deref(), Some(&*drifted));
    assert_eq!(
        ear.appraisal()
            .unwrap()
            .ear_trustworthiness_vector
            .executables,
        Some(ear::value::CONTRAINDICATED_RUNTIME)
    );
}

#[test]
fn a_drift_report_proves_only_what_the_tpm_quoted() {
    use attestor_agent::attest::AgentError;
    use attestor_verify::checks::{verify_drift_report, AkTrust, Check, Expectations};
    let fixture = AgentFixture::new();
    fixture.attest();
    std::fs::write(fixture.kernel_config_file(), "workers = 64\n").unwrap();
    let nonce = b"drift-nonce-0123".to_vec();
    let report = match fixture
        .agent()
        .attest(&fixture.kernel(), &fixture.status(), &nonce)
    {
        Err(AgentError::Drift { report, .. }) => *report,
        other => panic!("expected a drift, got {other:?}"),
    };
    let expect = Expectations {
        nonce: nonce.clone(),
        ak: AkTrust::Name(fixture.ak_name()),
        ..Expectations::default()
    };
    let verified = verify_drift_report(&report, &fixture.profile, &expect).unwrap();
    assert_eq!(
        verified.claims.kernel_config_hash,
        hex::encode(fixture.kernel().kernel_config_hash)
    );

    let refused = |report: &attestor_verify::drift::DriftReport, expect: &Expectations| {
        verify_drift_report(report, &fixture.profile, expect)
            .unwrap_err()
            .check
    };
    // Claims the quote did not commit to, another nonce, another AK pinned.
    let mut claims = report.claims().unwrap();
    claims.kernel_config_hash = "ab".repeat(48);
    let mut lying = report.clone();
    lying.payload = serde_json::to_vec(&claims).unwrap();
    assert_eq!(refused(&lying, &expect), Check::QuoteBinding);
    let other_nonce = Expectations {
        nonce: b"another-nonce-00".to_vec(),
        ..expect.clone()
    };
    assert_eq!(refused(&report, &other_nonce), Check::QuoteBinding);
    let other_ak = Expectations {
        ak: AkTrust::Name(vec![0; 50]),
        ..expect.clone()
    };
    assert_eq!(refused(&report, &other_ak), Check::AkBinding);

    // Once the change is approved (resealed), that key signs: nothing drifted.
    fixture.agent().reseal(&fixture.kernel()).unwrap();
    let bundle = fixture.attest();
    let mut approved = report.clone();
    approved.evidence.sealed_key = crate::support::agent::tpm_ev(&bundle).sealed_key.clone();
    assert_eq!(refused(&approved, &expect), Check::SealedKeyPolicy);
}
