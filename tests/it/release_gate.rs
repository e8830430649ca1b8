//! The CI example (deploy/ci/) run for real: its release-gate and rollback steps, taken
//! from the workflow file and run with the shell GitHub runs them with, against a real
//! ledger and an agent on swtpm. A release the gate passes stays in service; one after
//! which the agent drifts fails the gate, and `rollback.sh` returns the deployment marker
//! to the release before it. Meanwhile the ledger runs the tenant's `on_drift` hook. A
//! ledger whose actions cannot run (a webhook it cannot reach, a missing program) refuses
//! to start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::agent::AgentFixture;
use crate::support::ledger::{enrol_tpm, LedgerProcess, LedgerSpec};
use crate::support::wait_until;
use attestor_ledger::store::Verdict;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The single-line `run:` script of the workflow step named `name`, and its `if:`.
fn step(workflow: &str, name: &str) -> (String, Option<String>) {
    let mut lines = workflow
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {name}"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("- "));
    let (mut run, mut condition) = (None, None);
    for line in lines.by_ref() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("if: ") {
            condition = Some(c.to_string());
        }
        if let Some(r) = line.strip_prefix("run: ") {
            run = Some(r.to_string());
        }
    }
    let run = run.unwrap_or_else(|| panic!("no step {name:?} with a run: line"));
    assert_ne!(run, "|", "{name}: a one-line script is expected");
    (run, condition)
}

/// A CI job's working directory and environment.
struct Job {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Job {
    /// The checkout: rollback.sh at its root, the tenant's CI certificate in pki/, and
    /// release-1 in service.
    fn new(ledger: &LedgerProcess) -> Job {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root().join("deploy/ci/rollback.sh"),
            dir.path().join("rollback.sh"),
        )
        .unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        let files = ledger.tls_files("ci-gate");
        for (from, to) in [
            (files.ca, "ca.pem"),
            (files.cert, "ci.pem"),
            (files.key, "ci.key"),
        ] {
            std::fs::copy(from, pki.join(to)).unwrap();
        }
        let attestor = PathBuf::from(env!("CARGO_BIN_EXE_attestor"));
        let path = format!(
            "{}:{}",
            attestor.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::fs::create_dir(dir.path().join("deployment")).unwrap();
        let job = Job {
            dir,
            env: vec![
                ("LEDGER", ledger.endpoint()),
                ("DEPLOY_DIR", "deployment".into()),
                ("PATH", path),
            ],
        };
        job.deploy("release-1");
        job
    }

    /// What the workflow asks of `deploy.sh`: the release goes into the marker.
    fn deploy(&self, release: &str) {
        let marker = self.dir.path().join("deployment");
        std::fs::write(marker.join("current"), format!("{release}\n")).unwrap();
        let mut history = std::fs::read_to_string(marker.join("history")).unwrap_or_default();
        history.push_str(&format!("{release}\n"));
        std::fs::write(marker.join("history"), history).unwrap();
    }

    fn in_service(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("deployment/current"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs a step's script as GitHub does with `shell: bash`; whether it succeeded, and
    /// its output.
    fn run(&self, release: &str, script: &str) -> (bool, String) {
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RELEASE", release)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn gate_report(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("gate.json")).unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_the_gate_refuses_is_rolled_back_and_one_it_passes_stays() {
    let workflow =
        std::fs::read_to_string(root().join("deploy/ci/github-actions-gate.yml")).unwrap();
    assert!(workflow.contains("shell: bash"), "pipefail is needed");
    let (gate, _) = step(&workflow, "release gate (after)");
    let (rollback, condition) = step(&workflow, "roll back on attestation anomalies");
    assert_eq!(
        condition.as_deref(),
        Some("failure() && steps.after.outcome == 'failure'")
    );

    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let hooks = tempfile::tempdir().unwrap();
    let drift_payload = hooks.path().join("drift.json");
    let extra = format!(
        "[tenants.prod.actions]\non_drift = [\"sh\", \"-c\", \"cat > {}\"]\n",
        drift_payload.display()
    );
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("web-1", "prod"), ("ci-gate", "prod")],
        tenants: &[("prod", &policy_hash)],
        profile: Some(&fixture.profile_path),
        extra: &extra,
        ..LedgerSpec::default()
    });
    let client = ledger.client("web-1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let job = Job::new(&ledger);

    // release-2 goes out and the fleet attests it as expected: the gate passes, so the
    // rollback step's condition is false and release-2 stays.
    job.deploy("release-2");
    let good = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    assert_eq!(
        client.submit(&good.to_json()).await.unwrap().verdict,
        Verdict::Accepted
    );
    let (passed, out) = tokio::task::block_in_place(|| job.run("release-2", &gate));
    assert!(passed, "{out}");
    assert_eq!(job.gate_report()["pass"], true);
    assert_eq!(job.in_service(), "release-2");

    // release-3 goes out and the agent's policy drifts: the gate fails, through the pipe
    // into tee, and the rollback step returns the marker to release-2.
    job.deploy("release-3");
    let policy = std::fs::read_to_string(fixture.policy_file()).unwrap();
    fixture.reseal_with_policy(&policy.replace("max_epsilon = 3.0", "max_epsilon = 30.0"));
    let drifted = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let refused = client.submit(&drifted.to_json()).await.unwrap();
    assert_eq!(refused.reason.as_deref(), Some("policy-hash"));
    let (passed, out) = tokio::task::block_in_place(|| job.run("release-3", &gate));
    assert!(!passed, "the gate passed after a drift:\n{out}");
    let report = job.gate_report();
    assert_eq!(report["pass"], false);
    assert!(report.to_string().contains("policy-drift"), "{report}");
    assert_eq!(job.in_service(), "release-3");

    let (rolled, out) = tokio::task::block_in_place(|| job.run("release-3", &rollback));
    assert!(rolled, "{out}");
    assert!(out.contains("release-3 -> release-2"), "{out}");
    assert_eq!(job.in_service(), "release-2");
    // A re-run of the job finds it done.
    let (again, out) = tokio::task::block_in_place(|| job.run("release-3", &rollback));
    assert!(again && out.contains("rolled back already"), "{out}");
    assert_eq!(job.in_service(), "release-2");
    let record = std::fs::read_to_string(job.dir.path().join("deployment/rollbacks")).unwrap();
    assert_eq!(record.lines().count(), 1, "{record}");
    assert!(
        record.trim_end().ends_with(" release-3 release-2"),
        "{record}"
    );

    // The ledger ran the tenant's on_drift hook with the incident and the refusal's EAR.
    let outcomes = ledger.state_dir().join("actions.jsonl");
    wait_until(
        Duration::from_secs(60),
        "the on_drift hook's outcome",
        || std::fs::read_to_string(&outcomes).is_ok_and(|r| r.contains("on_drift")),
    )
    .await;
    let record = std::fs::read_to_string(&outcomes).unwrap();
    assert!(record.contains("\"ok\":true"), "{record}");
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&drift_payload).unwrap()).unwrap();
    assert_eq!(payload["phase"], "fire");
    assert_eq!(payload["tenant"], "prod");
    assert_eq!(payload["agent_id"], "web-1");
    assert_eq!(payload["incident"]["kind"], "policy-drift");
    assert_eq!(payload["ear"], refused.ear.unwrap().as_str());
}

#[test]
fn rollback_refuses_what_it_cannot_do_safely() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("deployment");
    std::fs::create_dir(&marker).unwrap();
    let rollback = |args: &[&str]| {
        Command::new(root().join("deploy/ci/rollback.sh"))
            .args(args)
            .env("DEPLOY_DIR", &marker)
            .output()
            .unwrap()
            .status
            .code()
    };
    std::fs::write(marker.join("history"), "r1\nr2\nr3\n").unwrap();
    std::fs::write(marker.join("current"), "r2\n").unwrap();
    assert_eq!(rollback(&[]), Some(2), "no release named");
    assert_eq!(rollback(&["r 3"]), Some(2), "not a release name");
    assert_eq!(rollback(&["r3"]), Some(3), "another release is in service");
    assert_eq!(
        std::fs::read_to_string(marker.join("current")).unwrap(),
        "r2\n"
    );
    // r2 is refused: back to r1; then r1 is refused too: nothing earlier to return to.
    assert_eq!(rollback(&["r2"]), Some(0));
    assert_eq!(
        std::fs::read_to_string(marker.join("current")).unwrap(),
        "r1\n"
    );
    assert_eq!(rollback(&["r1"]), Some(4));
    // A later release refused skips the one rolled back before it.
    std::fs::write(marker.join("history"), "r1\nr2\nr4\n").unwrap();
    std::fs::write(marker.join("current"), "r4\n").unwrap();
    assert_eq!(rollback(&["r4"]), Some(0));
    assert_eq!(
        std::fs::read_to_string(marker.join("current")).unwrap(),
        "r1\n"
    );
}

#[test]
fn a_ledger_with_an_action_that_cannot_run_refuses_to_start() {
    let policy_hash = "ab".repeat(32);
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash)],
        ..LedgerSpec::default()
    });
    ledger.stop();
    let config = ledger.dir.path().join("ledger.toml");
    let usable = std::fs::read_to_string(&config).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let webhook =
        |url: &str| format!("[[alerts.actions]]\non = \"policy-drift\"\nwebhook = \"{url}\"\n");
    for (action, why) in [
        (webhook("ftp://x/"), "only http:// and https://"),
        (webhook("http://"), "alerts.actions[0]"),
        (webhook("http://no-such-host.invalid/"), "does not resolve"),
        (
            webhook(&format!("http://127.0.0.1:{closed}/hook")),
            "does not accept connections",
        ),
        (
            "[tenants.acme.actions]\non_drift = [\"/nonexistent/rollback.sh\"]\n".to_string(),
            "tenants.acme.actions.on_drift: /nonexistent/rollback.sh is not an executable file",
        ),
    ] {
        std::fs::write(&config, format!("{usable}{action}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_attestor"))
            .args(["ledger", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the ledger started with {action}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{action}");
        assert!(stderr.contains(why), "{action}: {stderr}");
    }
}
