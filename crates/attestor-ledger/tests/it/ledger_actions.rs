//! The action runner with real processes and real HTTP(S) servers: a hanging command is
//! killed with its children at its timeout without holding up later actions, the bound on
//! concurrent actions holds, failures are retried, the payload is the documented JSON,
//! webhooks are POSTed over http and https, unusable actions are refused at start-up, and
//! the alert book's delivery goes on while an action hangs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attestor_ledger::actions::{
    check_usable, ActionConfig, ActionConfigError, ActionOutcome, ActionPhase, ActionRunner,
    AlertKind, Incident, OnOutcome, TenantActions,
};
use attestor_ledger::config::{LedgerConfig, LedgerConfigError};
use attestor_ledger::incidents::IncidentBook;
use attestor_ledger::log::batcher::{Batcher, DEFAULT_MAX_BATCH};
use attestor_ledger::log::sequencer::Sequencer;
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::LedgerStore;
use attestor_verify::api::IncidentState;
use attestor_verify::log::checkpoint::CheckpointSigner;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::support::wait_for;

/// Guards a test against hanging forever; never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// A durable incident book on a fresh embedded store with its own log.
fn incident_book(dir: &Path) -> IncidentBook {
    let store: Arc<dyn LedgerStore> =
        Arc::new(EmbeddedStore::open(&dir.join("ledger.db")).unwrap());
    let signer = CheckpointSigner::generate("attestor.test/actions").unwrap();
    let sequencer =
        Arc::new(Sequencer::open(store.clone(), signer, "attestor.test/actions").unwrap());
    let (batcher, _writer) = Batcher::start(sequencer.clone(), DEFAULT_MAX_BATCH);
    IncidentBook::new(store, sequencer, batcher)
}

fn incident(kind: AlertKind, tenant: &str, agent_id: &str) -> Incident {
    Incident {
        id: 7,
        kind,
        tenant: tenant.into(),
        agent_id: agent_id.into(),
        summary: "attests policy 00…, expected ab…".into(),
        opened_at_ms: 1_700_000_000_000,
        first_index: Some(41),
        last_index: Some(42),
        state: IncidentState::Open,
        acknowledged: None,
        resolved: None,
        actions: Vec::new(),
    }
}

/// A shell script in `dir`, run as `sh PATH` (never executed directly: a file just
/// written may still be open in a process another test thread is forking).
fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
    let path = dir.join(name);
    std::fs::write(&path, format!("set -e\n{body}\n")).unwrap();
    vec!["sh".into(), path.display().to_string()]
}

fn action(on: AlertKind, command: Vec<String>, timeout_seconds: u64, retries: u32) -> ActionConfig {
    ActionConfig {
        on,
        phase: ActionPhase::Fire,
        command,
        webhook: None,
        ca: None,
        timeout_seconds,
        retries,
        tenant: None,
        hook: format!("test-{}", on.name()),
    }
}

fn webhook(on: AlertKind, url: String, ca: Option<PathBuf>) -> ActionConfig {
    ActionConfig {
        webhook: Some(url),
        ca,
        ..action(on, Vec::new(), 5, 0)
    }
}

/// A callback sending each outcome to the returned receiver.
fn outcomes() -> (OnOutcome, mpsc::UnboundedReceiver<ActionOutcome>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        Arc::new(move |outcome| {
            let _ = sender.send(outcome);
        }),
        receiver,
    )
}

async fn next(receiver: &mut mpsc::UnboundedReceiver<ActionOutcome>) -> ActionOutcome {
    tokio::time::timeout(PATIENCE, receiver.recv())
        .await
        .expect("no outcome")
        .unwrap()
}

/// Whether a process has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_killed_with_its_children_and_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let hang = script(
        dir.path(),
        "hang.sh",
        &format!(
            "echo $$ >> {p}\nsleep 600 &\necho $! >> {p}\nwait",
            p = pids.display()
        ),
    );
    let done = dir.path().join("done");
    let quick = script(dir.path(), "quick.sh", &format!("touch {}", done.display()));
    let runner = ActionRunner::start(
        &[
            action(AlertKind::PolicyDrift, hang, 1, 1),
            action(AlertKind::InvalidAttestation, quick, 10, 0),
        ],
        8,
        dir.path(),
    );
    let (on_outcome, mut ended) = outcomes();
    let drift = incident(AlertKind::PolicyDrift, "acme", "a1");
    assert_eq!(
        runner.dispatch(ActionPhase::Fire, &drift, None, on_outcome.clone()),
        1
    );
    // The hanging command has started before the next incident's action is dispatched.
    wait_for(PATIENCE, "the hanging command to start", || {
        std::fs::read_to_string(&pids).is_ok_and(|p| p.lines().count() >= 2)
    });
    let invalid = incident(AlertKind::InvalidAttestation, "acme", "a2");
    assert_eq!(
        runner.dispatch(ActionPhase::Fire, &invalid, None, on_outcome),
        1
    );

    let first = next(&mut ended).await;
    assert_eq!(first.hook, "test-invalid-attestation", "{first:?}");
    assert!(first.ok && first.attempts == 1, "{first:?}");
    assert!(done.exists());
    let second = next(&mut ended).await;
    assert_eq!(second.hook, "test-policy-drift", "{second:?}");
    assert!(!second.ok, "{second:?}");
    assert_eq!(second.attempts, 2, "one retry: {second:?}");
    assert!(
        second.error.as_deref().unwrap().contains("timed out"),
        "{second:?}"
    );
    // Two attempts, each a shell and its child, all killed.
    let started: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(started.len(), 4, "{started:?}");
    for pid in started {
        wait_for(PATIENCE, &format!("process {pid} to be killed"), || {
            exited(pid)
        });
    }
    let record = std::fs::read_to_string(dir.path().join("actions.jsonl")).unwrap();
    assert_eq!(record.lines().count(), 2, "{record}");
    assert!(record.contains("timed out"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_actions_than_the_bound_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Each records, as it starts, how many others had already ended.
    let blocking = script(
        dir.path(),
        "block.sh",
        &format!(
            "ls {d} | grep -c '^end\\.' > {d}/started.$$ || true\n\
             while [ ! -e {d}/release ]; do sleep 0.05; done\n\
             touch {d}/end.$$"
        ),
    );
    let runner = ActionRunner::start(
        &[action(AlertKind::MissingHeartbeat, blocking, 60, 0)],
        2,
        dir.path(),
    );
    let (on_outcome, mut ended) = outcomes();
    for agent in ["a1", "a2", "a3"] {
        let gap = incident(AlertKind::MissingHeartbeat, "acme", agent);
        runner.dispatch(ActionPhase::Fire, &gap, None, on_outcome.clone());
    }
    let started = |prefix: &str| -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(prefix))
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default())
            .collect();
        found.sort();
        found
    };
    wait_for(PATIENCE, "two actions to start", || {
        started("started.").len() >= 2
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(started("started.").len(), 2, "the third did not wait");
    assert!(ended.try_recv().is_err());

    std::fs::write(dir.path().join("release"), b"").unwrap();
    for _ in 0..3 {
        let outcome = next(&mut ended).await;
        assert!(outcome.ok, "{outcome:?}");
    }
    let counts: Vec<u32> = started("started.")
        .iter()
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3);
    assert_eq!(&counts[..2], &[0, 0], "the first two started at once");
    assert!(
        counts[2] >= 1,
        "the third started before a slot freed: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_failing_twice_then_succeeding_is_ok_at_the_third_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let flaky = script(
        dir.path(),
        "flaky.sh",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > {c}\n[ $n -ge 3 ]",
            c = count.display()
        ),
    );
    let runner = ActionRunner::start(
        &[action(AlertKind::PolicyDrift, flaky, 10, 5)],
        8,
        dir.path(),
    );
    let (on_outcome, mut ended) = outcomes();
    let drift = incident(AlertKind::PolicyDrift, "acme", "a1");
    runner.dispatch(ActionPhase::Fire, &drift, None, on_outcome);
    let outcome = next(&mut ended).await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.attempts, 3);
    assert_eq!(outcome.error, None);
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");

    // Out of retries, the last failure is the outcome.
    let failing = script(dir.path(), "fail.sh", "exit 3");
    let runner = ActionRunner::start(
        &[action(AlertKind::PolicyDrift, failing, 10, 1)],
        8,
        dir.path(),
    );
    let (on_outcome, mut ended) = outcomes();
    runner.dispatch(ActionPhase::Fire, &drift, None, on_outcome);
    let outcome = next(&mut ended).await;
    assert!(!outcome.ok && outcome.attempts == 2, "{outcome:?}");
    assert!(outcome.error.unwrap().contains("exit status: 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_names_phase_tenant_agent_incident_and_ear_and_hooks_are_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let fired = dir.path().join("fired.json");
    let resolved = dir.path().join("resolved.json");
    let mut actions = TenantActions {
        on_drift: script(dir.path(), "fire.sh", &format!("cat > {}", fired.display())),
        on_invalid: Vec::new(),
        on_drift_resolved: script(
            dir.path(),
            "resolve.sh",
            &format!("cat > {}", resolved.display()),
        ),
        on_invalid_resolved: Vec::new(),
        timeout_seconds: 10,
        retries: 0,
    }
    .into_actions("acme");
    assert_eq!(actions.len(), 4, "on_drift answers two kinds: {actions:?}");
    actions.retain(|a| a.on == AlertKind::PolicyDrift);
    let runner = ActionRunner::start(&actions, 8, dir.path());
    let (on_outcome, mut ended) = outcomes();

    let other_tenant = incident(AlertKind::PolicyDrift, "globex", "a1");
    let other_kind = incident(AlertKind::InvalidAttestation, "acme", "a1");
    for (phase, unrelated) in [
        (ActionPhase::Fire, &other_tenant),
        (ActionPhase::Fire, &other_kind),
        (ActionPhase::Resolve, &other_tenant),
    ] {
        assert_eq!(
            runner.dispatch(phase, unrelated, None, on_outcome.clone()),
            0
        );
    }

    let drift = incident(AlertKind::PolicyDrift, "acme", "a1");
    let ear = "eyJhbGciOiJFUzM4NCJ9.eyJlYXIuc3RhdHVzIjoiY29udHJhaW5kaWNhdGVkIn0.c2ln";
    assert_eq!(
        runner.dispatch(
            ActionPhase::Fire,
            &drift,
            Some(ear.into()),
            on_outcome.clone()
        ),
        1
    );
    let outcome = next(&mut ended).await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.hook, "tenants.acme.actions.on_drift");
    assert_eq!(outcome.phase, ActionPhase::Fire);
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fired).unwrap()).unwrap();
    assert_eq!(payload["phase"], "fire");
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["agent_id"], "a1");
    assert_eq!(payload["ear"], ear);
    let sent: Incident = serde_json::from_value(payload["incident"].clone()).unwrap();
    assert_eq!(sent, drift);
    assert_eq!(payload.as_object().unwrap().len(), 5, "{payload}");

    let mut closed = drift.clone();
    closed.state = IncidentState::Resolved;
    assert_eq!(
        runner.dispatch(ActionPhase::Resolve, &closed, None, on_outcome),
        1
    );
    let outcome = next(&mut ended).await;
    assert_eq!(outcome.hook, "tenants.acme.actions.on_drift_resolved");
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&resolved).unwrap()).unwrap();
    assert_eq!(payload["phase"], "resolve");
    assert_eq!(payload["ear"], serde_json::Value::Null);
    assert_eq!(payload["incident"]["state"], "resolved");
}

/// Serves one request per connection on `stream`: sends its request line and body to
/// `seen` and answers 200.
async fn answer_one<S>(stream: S, seen: mpsc::UnboundedSender<(String, Vec<u8>)>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await.unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    let _ = seen.send((request_line.trim().to_string(), body));
    let mut stream = reader.into_inner();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let _ = stream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receive_the_payload_over_http_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let (seen, mut requests) = mpsc::unbounded_channel();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_url = format!(
        "http://{}/hooks/drift?src=attestor",
        plain.local_addr().unwrap()
    );
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = plain.accept().await.unwrap();
            tokio::spawn(answer_one(stream, sink.clone()));
        }
    });

    // A web server with a certificate of a private CA, for 127.0.0.1.
    let pki =
        attestor_net::tls::pki_init(&dir.path().join("pki"), &[], &["127.0.0.1".into()]).unwrap();
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&pki.ledger_cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.ledger_key).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure_url = format!("https://{}/hooks/invalid", secure.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = secure.accept().await.unwrap();
            let (acceptor, sink) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    answer_one(tls, sink).await;
                }
            });
        }
    });

    let trusted = webhook(
        AlertKind::InvalidAttestation,
        secure_url.clone(),
        Some(pki.ca_cert.clone()),
    );
    // The same server is not trusted through the public web roots.
    let untrusted = ActionConfig {
        hook: "public-roots".into(),
        ..webhook(AlertKind::InvalidAttestation, secure_url, None)
    };
    let actions = [
        webhook(AlertKind::PolicyDrift, plain_url, None),
        trusted.clone(),
        untrusted.clone(),
    ];
    check_usable(&actions).await.unwrap();
    let runner = ActionRunner::start(&actions, 8, dir.path());
    let (on_outcome, mut ended) = outcomes();

    let drift = incident(AlertKind::PolicyDrift, "acme", "a1");
    runner.dispatch(
        ActionPhase::Fire,
        &drift,
        Some("e.a.r".into()),
        on_outcome.clone(),
    );
    let outcome = next(&mut ended).await;
    assert!(outcome.ok && outcome.attempts == 1, "{outcome:?}");
    // Webhooks often carry a secret in the path or query: outcomes name the origin only.
    assert!(
        outcome.action.starts_with("http://127.0.0.1:"),
        "{outcome:?}"
    );
    assert!(!outcome.action.contains("hooks"), "{outcome:?}");
    let (request_line, body) = requests.recv().await.unwrap();
    assert_eq!(request_line, "POST /hooks/drift?src=attestor HTTP/1.1");
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["incident"]["kind"], "policy-drift");
    assert_eq!(payload["ear"], "e.a.r");

    let invalid = incident(AlertKind::InvalidAttestation, "acme", "a2");
    assert_eq!(
        runner.dispatch(ActionPhase::Fire, &invalid, None, on_outcome),
        2
    );
    let mut by_hook = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let outcome = next(&mut ended).await;
        by_hook.insert(outcome.hook.clone(), outcome);
    }
    assert!(by_hook[&trusted.hook].ok, "{by_hook:?}");
    let refused = &by_hook[&untrusted.hook];
    assert!(
        !refused.ok && refused.error.as_deref().unwrap().contains("TLS handshake"),
        "{refused:?}"
    );
    let (request_line, body) = requests.recv().await.unwrap();
    assert_eq!(request_line, "POST /hooks/invalid HTTP/1.1");
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["agent_id"], "a2");
    assert!(
        requests.try_recv().is_err(),
        "the untrusted server got a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_actions_are_refused_before_the_ledger_starts() {
    let on = AlertKind::PolicyDrift;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for (url, wrong) in [
        ("ftp://x/", "WebhookUrl"),
        ("http://", "WebhookUrl"),
        ("no scheme", "WebhookUrl"),
        ("http://no-such-host.invalid/", "Unresolvable"),
        (&format!("http://127.0.0.1:{closed}/hook"), "Unreachable"),
    ] {
        let e = check_usable(&[webhook(on, url.to_string(), None)])
            .await
            .unwrap_err();
        assert!(format!("{e:?}").starts_with(wrong), "{url}: {e:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("rollback.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    for (command, wrong) in [
        (
            vec!["no-such-program-anywhere".to_string()],
            "ProgramNotFound",
        ),
        (vec!["/nonexistent/rollback".to_string()], "NotExecutable"),
        (vec![not_executable.display().to_string()], "NotExecutable"),
    ] {
        let e = check_usable(&[action(on, command.clone(), 10, 0)])
            .await
            .unwrap_err();
        assert!(format!("{e:?}").starts_with(wrong), "{command:?}: {e:?}");
    }
    check_usable(&[action(on, vec!["sh".into()], 10, 0)])
        .await
        .unwrap();
    let e = check_usable(&[webhook(
        on,
        "http://127.0.0.1:1/".into(),
        Some("ca.pem".into()),
    )])
    .await
    .unwrap_err();
    assert!(
        matches!(e, ActionConfigError::CaWithoutHttps { .. }),
        "{e:?}"
    );
}

const CONFIG: &str = r#"
listen = "127.0.0.1:8443"
state_dir = "state"
origin = "ledger.test/attestor"
profile = "profile.toml"
[tls]
ca = "ca.pem"
cert = "ledger.pem"
key = "ledger.key"
[tenants.acme]
policy_hash = "abababababababababababababababababababababababababababababababab"
"#;

#[test]
fn the_configuration_names_each_action_and_refuses_malformed_ones() {
    let path = Path::new("/etc/attestor/ledger.toml");
    let text = format!(
        "{CONFIG}[tenants.acme.actions]\non_drift = [\"/usr/local/bin/rollback\"]\n\
         on_invalid_resolved = [\"/usr/local/bin/unblock\"]\ntimeout_seconds = 60\n\
         [alerts]\nmax_concurrent_actions = 3\n\
         [[alerts.actions]]\non = \"missing-heartbeat\"\nphase = \"resolve\"\n\
         webhook = \"https://hooks.example/x\"\nca = \"hooks-ca.pem\"\n"
    );
    let c = LedgerConfig::parse(&text, path).unwrap();
    assert_eq!(c.alerts.max_concurrent_actions, 3);
    let hooks: Vec<_> = c
        .alerts
        .actions
        .iter()
        .map(|a| (a.hook.as_str(), a.on, a.phase, a.tenant.as_deref()))
        .collect();
    assert_eq!(
        hooks,
        [
            (
                "alerts.actions[0]",
                AlertKind::MissingHeartbeat,
                ActionPhase::Resolve,
                None
            ),
            (
                "tenants.acme.actions.on_drift",
                AlertKind::PolicyDrift,
                ActionPhase::Fire,
                Some("acme")
            ),
            (
                "tenants.acme.actions.on_drift",
                AlertKind::ZeroRetentionChange,
                ActionPhase::Fire,
                Some("acme")
            ),
            (
                "tenants.acme.actions.on_invalid_resolved",
                AlertKind::InvalidAttestation,
                ActionPhase::Resolve,
                Some("acme")
            ),
        ]
    );
    assert_eq!(
        c.alerts.actions[0].ca.as_deref(),
        Some(Path::new("/etc/attestor/hooks-ca.pem"))
    );
    assert_eq!(c.alerts.actions[1].timeout_seconds, 60);
    let defaults = LedgerConfig::parse(CONFIG, path).unwrap();
    assert_eq!(defaults.alerts.max_concurrent_actions, 8);

    for bad in [
        "[[alerts.actions]]\non = \"policy-drift\"\nwebhook = \"ftp://x\"\n",
        "[[alerts.actions]]\non = \"policy-drift\"\nwebhook = \"http://\"\n",
        "[[alerts.actions]]\non = \"policy-drift\"\n",
        "[[alerts.actions]]\non = \"policy-drift\"\ncommand = [\"a\"]\nwebhook = \"http://h/\"\n",
        "[[alerts.actions]]\non = \"policy-drift\"\ncommand = [\"a\"]\ntimeout_seconds = 0\n",
        "[[alerts.actions]]\non = \"policy-drift\"\ncommand = [\"a\"]\nretries = 99\n",
    ] {
        let e = LedgerConfig::parse(&format!("{CONFIG}{bad}"), path).unwrap_err();
        assert!(
            matches!(e, LedgerConfigError::Action { .. }),
            "{bad}: {e:?}"
        );
        assert!(e.to_string().contains("alerts.actions[0]"), "{e}");
    }
    for bad in [
        "[alerts]\nmax_concurrent_actions = 0\n",
        "[[alerts.actions]]\non = \"policy-drift\"\nphase = \"sometimes\"\ncommand = [\"a\"]\n",
        "[tenants.acme.actions]\non_surprise = [\"a\"]\n",
    ] {
        assert!(
            LedgerConfig::parse(&format!("{CONFIG}{bad}"), path).is_err(),
            "{bad}"
        );
    }
}

/// The alert book's delivery: an action that hangs delays no later alert, and dies with
/// the ledger's runtime.
#[test]
fn a_hanging_action_delays_no_later_alert_and_stops_with_the_ledger() {
    use attestor_ledger::alerts::{AlertConfig, Alerter};
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let hang = script(
        dir.path(),
        "hang.sh",
        &format!(
            "echo $$ >> {p}\nsleep 600 &\necho $! >> {p}\nwait",
            p = pids.display()
        ),
    );
    let started = || -> Vec<u32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (seen, mut requests) = mpsc::unbounded_channel();
        let alertmanager = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", alertmanager.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = alertmanager.accept().await.unwrap();
                tokio::spawn(answer_one(stream, seen.clone()));
            }
        });
        let alerter = Alerter::start(
            AlertConfig {
                alertmanager: Some(url),
                resend_seconds: 3600,
                actions: vec![action(AlertKind::PolicyDrift, hang, 600, 0)],
                max_concurrent_actions: 8,
            },
            dir.path().to_path_buf(),
            incident_book(dir.path()),
        );
        alerter
            .fire(
                AlertKind::PolicyDrift,
                "acme",
                "a1",
                "drift".into(),
                None,
                None,
            )
            .await;
        crate::support::wait_until(PATIENCE, "the action to start", || started().len() == 2).await;
        alerter
            .fire(
                AlertKind::InvalidAttestation,
                "acme",
                "a2",
                "forged".into(),
                None,
                None,
            )
            .await;
        loop {
            let (_, body) = tokio::time::timeout(PATIENCE, requests.recv())
                .await
                .expect("the later alert was not delivered")
                .unwrap();
            let alerts: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if alerts[0]["labels"]["agent"] == "a2" {
                break;
            }
        }
        for pid in started() {
            assert!(
                !exited(pid),
                "the action ended before the later alert went out"
            );
        }
    });
    drop(runtime);
    for pid in started() {
        wait_for(PATIENCE, &format!("process {pid} to be killed"), || {
            exited(pid)
        });
    }
}
