//! `attestor loadgen` against a real `attestor ledger` process (embedded store): the
//! simulated agents enrol and attest through the ledger's unmodified pipeline, and the
//! report's counts agree with what the ledger logged.

use std::path::Path;
use std::process::Command;

use crate::support::ledger::{all_entries, LedgerProcess, LedgerSpec};
use attestor_verify::record::is_recorder;

const TENANT: &str = "loadgen";
const OBSERVER: &str = "observer";

/// A ledger whose profile trusts a fresh loadgen EK CA, expecting `policy_hash`.
pub(crate) fn ledger_for_loadgen(ek_ca: &Path, policy_hash: &str) -> LedgerProcess {
    let status = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["loadgen", "ek-ca"])
        .arg(ek_ca)
        .status()
        .unwrap();
    assert!(status.success());
    LedgerProcess::start(&LedgerSpec {
        agents: &[(OBSERVER, TENANT)],
        tenants: &[(TENANT, policy_hash)],
        profile: Some(&ek_ca.join("loadgen-profile.toml")),
        ..LedgerSpec::default()
    })
}

/// Runs loadgen with `extra` arguments and returns its JSON report.
pub(crate) fn loadgen(ledger: &LedgerProcess, ek_ca: &Path, extra: &[&str]) -> serde_json::Value {
    let pki = ledger.dir.path().join("pki");
    let output = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .arg("loadgen")
        .args(["--ledger", &ledger.endpoint()])
        .arg("--ca-cert")
        .arg(pki.join("ca.pem"))
        .arg("--ca-key")
        .arg(pki.join("ca.key"))
        .arg("--ek-ca-cert")
        .arg(ek_ca.join("ek-ca.pem"))
        .arg("--ek-ca-key")
        .arg(ek_ca.join("ek-ca.key"))
        .args(["--tenant", TENANT, "--json"])
        .args(["--ledger-pid", &ledger.pid().unwrap().to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen failed: {}\nledger log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        ledger.log()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn every_simulated_submission_is_accepted_and_logged() {
    let scratch = tempfile::tempdir().unwrap();
    let ek_ca = scratch.path().join("ek-ca");
    let ledger = ledger_for_loadgen(&ek_ca, &"ab".repeat(32));
    let report = loadgen(
        &ledger,
        &ek_ca,
        &["--agents", "6", "--rate", "30", "--duration", "2"],
    );

    let heartbeats = count(&report, "heartbeats");
    // 30/s for 2 s on a fixed schedule: 60 heartbeats, whatever the machine's speed.
    assert_eq!(heartbeats, 60, "{report}");
    assert_eq!(count(&report, "accepted"), heartbeats, "{report}");
    assert_eq!(count(&report, "answered"), heartbeats, "{report}");
    assert!(report["errors_by_kind"].as_object().unwrap().is_empty());
    assert!(report["submit_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        report["ledger"]["cpu_seconds"].as_f64().is_some(),
        "{report}"
    );
    assert!(report["ledger"]["rss_peak_kib"].as_u64().unwrap() > 0);

    let entries = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(all_entries(&ledger.client(OBSERVER)));
    assert_eq!(entries.len() as u64, heartbeats);
    assert!(entries
        .iter()
        .all(|e| e.verdict == attestor_ledger::store::Verdict::Accepted));
    let agents: std::collections::BTreeSet<_> = entries.iter().map(|e| &e.agent_id).collect();
    assert_eq!(
        agents.len(),
        6,
        "every simulated agent submitted: {agents:?}"
    );
}

#[test]
fn refusals_are_counted_by_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let ek_ca = scratch.path().join("ek-ca");
    let ledger = ledger_for_loadgen(&ek_ca, &"ab".repeat(32));
    // The agents claim another policy than the tenant's: each submission is verified in
    // full and refused at the policy check.
    let claimed = "cd".repeat(32);
    let report = loadgen(
        &ledger,
        &ek_ca,
        &[
            "--agents",
            "3",
            "--rate",
            "20",
            "--duration",
            "1",
            "--policy-hash",
            &claimed,
        ],
    );

    let heartbeats = count(&report, "heartbeats");
    assert_eq!(heartbeats, 20, "{report}");
    assert_eq!(count(&report, "accepted"), 0, "{report}");
    assert_eq!(
        report["errors_by_kind"],
        serde_json::json!({ "refused:policy-hash": heartbeats }),
    );
    let entries = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(all_entries(&ledger.client(OBSERVER)));
    // Each agent's drift opened one incident, recorded in the log by the ledger.
    let (recorded, attestations): (Vec<_>, Vec<_>) =
        entries.iter().partition(|e| is_recorder(&e.agent_id));
    assert_eq!(recorded.len(), 3);
    assert_eq!(attestations.len() as u64, heartbeats);
    assert!(attestations
        .iter()
        .all(|e| e.reason.as_deref() == Some("policy-hash")));
}
