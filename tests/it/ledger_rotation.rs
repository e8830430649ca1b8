//! Rotation without downtime, on a running ledger process with a real agent heartbeating
//! on swtpm: the checkpoint signing key (a transition signed by both keys, followed by
//! auditors who pinned the old key) and the TLS material (the agent's client certificate,
//! the ledger's server certificate and trusted client CAs, reloaded on SIGHUP).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::agent::AgentFixture;
use crate::support::ledger::{
    all_entries, attestor_config, Heartbeating, LedgerProcess, LedgerSpec,
};
use crate::support::wait_until;
use attestor_agent::client::{ClientError, LedgerClient};
use attestor_ledger::store::Verdict;
use attestor_net::tls::{self, AgentIdentity, TlsFiles};
use attestor_verify::audit;
use attestor_verify::log::checkpoint::{open_checkpoint, Checkpoint, CheckpointSigner};
use attestor_verify::log::keys::{KeyError, KeyHistory};

fn attestor_cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// `attestor query` against `ledger` as `agent`, verifying with the key in `log_key`.
fn query(ledger: &LedgerProcess, agent: &str, log_key: &Path, what: &[&str]) -> (bool, String) {
    let out = ledger
        .cli("query", agent)
        .arg("--log-key")
        .arg(log_key)
        .args(what)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_key_rotates_while_an_agent_heartbeats_and_old_key_auditors_follow() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 2).await;
    let metrics = agent.metrics.clone();

    let client = ledger.client("a1");
    let old_key = ledger.verifier_key();
    let old_key_file = ledger.dir.path().join("old.vkey");
    std::fs::write(&old_key_file, &old_key).unwrap();
    let before_note = client.checkpoint(None).await.unwrap();
    let before = open_checkpoint(&before_note, &old_key).unwrap();
    let held = ledger.dir.path().join("held.note");
    std::fs::write(&held, &before_note).unwrap();

    let config = ledger.dir.path().join("ledger.toml");
    let prepared = attestor_cli(&["ledger", "rotate-key"], &config);
    assert!(prepared.status.success(), "{prepared:?}");
    // A second prepare before the reload is refused: one rotation at a time.
    assert!(!attestor_cli(&["ledger", "rotate-key"], &config)
        .status
        .success());
    ledger.hang_up();
    wait_until(Duration::from_secs(20), "the rotated key", || {
        ledger.verifier_key() != old_key
    })
    .await;
    let new_key = ledger.verifier_key();
    let accepted = metrics.delivered_count(Verdict::Accepted);
    wait_until(
        Duration::from_secs(60),
        "three heartbeats after the rotation",
        || metrics.delivered_count(Verdict::Accepted) >= accepted + 3,
    )
    .await;
    agent.stop().await;
    assert_eq!(
        metrics.delivered_count(Verdict::Refused),
        0,
        "{}",
        ledger.log()
    );
    assert_eq!(
        metrics.spool_depth(),
        0,
        "a submission was not acknowledged"
    );

    // The history: one transition, signed by both keys, followed from the old key.
    let answer = client.log_keys().await.unwrap();
    assert_eq!(answer.current, new_key);
    assert_eq!(answer.transitions.len(), 1);
    let history = KeyHistory::follow(&old_key, &answer.transitions).unwrap();
    assert_eq!(history.newest(), new_key);
    assert_eq!(
        history.keys().collect::<Vec<_>>(),
        [old_key.as_str(), new_key.as_str()]
    );

    // No gap: dense indexes, every entry verifies through the history; the newest ones
    // only through it (the old key alone does not vouch for them).
    let entries = all_entries(&client).await;
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, i as u64, "gap in the log");
    }
    for entry in &entries {
        let entry = client.entry(entry.index).await.unwrap();
        audit::verify_entry(&entry, &history).unwrap();
    }
    let last = client.entry(entries.last().unwrap().index).await.unwrap();
    assert!(audit::verify_entry(&last, &old_key).is_err());

    // Consistency across the rotation, from the checkpoint the old key signed.
    let latest_note = client.checkpoint(None).await.unwrap();
    let latest = history.open_checkpoint(&latest_note).unwrap();
    assert!(latest.size > before.size);
    let proof = client.consistency(before.size, latest.size).await.unwrap();
    audit::verify_extends(&before, &latest_note, &proof, &history).unwrap();

    // A checkpoint by a key outside the history is refused, and so is one by the retired
    // key for sizes past its period (a leaked retired key cannot vouch for the future).
    let stranger = CheckpointSigner::generate("ledger.test/attestor").unwrap();
    let forged = stranger
        .sign(&Checkpoint::new(
            latest.origin.clone(),
            latest.size,
            latest.root,
        ))
        .unwrap();
    assert_eq!(
        history.open_checkpoint(&forged).unwrap_err(),
        KeyError::UnknownKey
    );
    let retired_file = std::fs::read_dir(ledger.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("checkpoint.key.retired-"))
        .expect("the old key is kept as retired");
    let retired = CheckpointSigner::from_pkcs8(
        "ledger.test/attestor",
        &std::fs::read(retired_file).unwrap(),
    )
    .unwrap();
    assert_eq!(retired.verifier_key(), old_key);
    let late = retired
        .sign(&Checkpoint::new(
            latest.origin.clone(),
            latest.size,
            latest.root,
        ))
        .unwrap();
    assert!(matches!(
        history.open_checkpoint(&late),
        Err(KeyError::OutOfPeriod { .. })
    ));

    // The command-line auditor, holding only the old key and an old checkpoint.
    let (ok, text) = query(
        &ledger,
        "a1",
        &old_key_file,
        &["checkpoint", "--held", held.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("followed 1 key transition"), "{text}");
    assert!(text.contains("consistency verified"), "{text}");
    let (ok, text) = query(&ledger, "a1", &old_key_file, &["entries"]);
    assert!(ok, "{text}");
    let stranger_file = ledger.dir.path().join("stranger.vkey");
    std::fs::write(&stranger_file, stranger.verifier_key()).unwrap();
    let (ok, text) = query(&ledger, "a1", &stranger_file, &["checkpoint"]);
    assert!(!ok && text.contains("AUDIT FAILED"), "{text}");
}

/// The first restart after a checkpoint key rotation derives the nonce tag key from the
/// new key alone: a nonce handed out with an accepted answer after the rotation must
/// carry its tag, or every agent carrying one through that restart would be refused. A
/// nonce handed out before the rotation counts exactly as before while the process runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_handed_out_after_a_key_rotation_survives_the_next_restart() {
    let fixture = AgentFixture::new();
    let mut ledger = LedgerProcess::for_fixture(&fixture);
    let client = ledger.client("a1");
    crate::support::ledger::enrol_tpm(&mut fixture.agent(), &client)
        .await
        .unwrap();
    let bundle = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let answer = client
        .submit_for_next_nonce(&bundle.to_json())
        .await
        .unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
    let before_rotation = answer.next_nonce.expect("the next nonce").nonce;

    let old_key = ledger.verifier_key();
    let config = ledger.dir.path().join("ledger.toml");
    let prepared = attestor_cli(&["ledger", "rotate-key"], &config);
    assert!(prepared.status.success(), "{prepared:?}");
    ledger.hang_up();
    wait_until(Duration::from_secs(20), "the rotated key", || {
        ledger.verifier_key() != old_key
    })
    .await;
    let bundle = fixture.attest_with_nonce(&before_rotation).to_json();
    let answer = client.submit_for_next_nonce(&bundle).await.unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
    let after_rotation = answer.next_nonce.expect("the next nonce").nonce;
    let made_before_restart = fixture.attest_with_nonce(&after_rotation).to_json();
    let also_made_before_restart = fixture.attest_with_nonce(&after_rotation).to_json();

    ledger.stop();
    ledger.restart();
    let client = ledger.client("a1");
    let answer = client.submit(&made_before_restart).await.unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
    let refused = client.submit(&also_made_before_restart).await.unwrap();
    assert_eq!(refused.reason.as_deref(), Some("nonce"), "a second use");
}

/// Writes `pem` to `path` by rename, as certificate tooling does.
fn replace_file(path: &Path, pem: &[u8]) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, pem).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificate_and_ledger_client_cas_rotate_without_a_restart() {
    let fixture = AgentFixture::new();
    let mut ledger = LedgerProcess::for_fixture(&fixture);
    let pki = ledger.dir.path().join("pki");
    let old_ca = std::fs::read(pki.join("ca.pem")).unwrap();
    // The successor PKI: a new CA, a ledger certificate and the same agent identity.
    let next = ledger.dir.path().join("next-pki");
    let identity = AgentIdentity::new("acme", "a1").unwrap();
    tls::pki_init(
        &next,
        std::slice::from_ref(&identity),
        &["127.0.0.1".into()],
    )
    .unwrap();
    let new_ca = std::fs::read(next.join("ca.pem")).unwrap();
    let both_cas = [old_ca.clone(), new_ca.clone()].concat();

    // The agent's own copies of its files; it trusts both CAs for the ledger.
    let agent_dir = ledger.dir.path().join("agent-tls");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent_files = TlsFiles {
        ca: agent_dir.join("ca.pem"),
        cert: agent_dir.join("a1.pem"),
        key: agent_dir.join("a1.key"),
    };
    std::fs::write(&agent_files.ca, &both_cas).unwrap();
    std::fs::copy(pki.join("agents/a1.pem"), &agent_files.cert).unwrap();
    std::fs::copy(pki.join("agents/a1.key"), &agent_files.key).unwrap();
    let mut config = attestor_config(&fixture, &ledger, "a1");
    config.ledger_tls = agent_files.clone();
    let agent = Heartbeating::start(config, 2).await;
    let metrics = agent.metrics.clone();

    // Roll-over: the ledger trusts both CAs, then the agent gets its new certificate.
    replace_file(&pki.join("ca.pem"), &both_cas);
    ledger.hang_up();
    wait_until(Duration::from_secs(20), "the first reload", || {
        ledger.reloads() >= 1
    })
    .await;
    replace_file(
        &agent_files.key,
        &std::fs::read(next.join("agents/a1.key")).unwrap(),
    );
    replace_file(
        &agent_files.cert,
        &std::fs::read(next.join("agents/a1.pem")).unwrap(),
    );
    let accepted = metrics.delivered_count(Verdict::Accepted);
    wait_until(
        Duration::from_secs(60),
        "heartbeats during the roll-over",
        || metrics.delivered_count(Verdict::Accepted) >= accepted + 2,
    )
    .await;

    // The old CA goes, and the ledger presents a certificate of the new one.
    replace_file(&pki.join("ca.pem"), &new_ca);
    replace_file(
        &pki.join("ledger.pem"),
        &std::fs::read(next.join("ledger.pem")).unwrap(),
    );
    replace_file(
        &pki.join("ledger.key"),
        &std::fs::read(next.join("ledger.key")).unwrap(),
    );
    ledger.hang_up();
    wait_until(Duration::from_secs(20), "the second reload", || {
        ledger.reloads() >= 2
    })
    .await;
    assert!(
        !ledger.log().contains("\"level\":\"error\""),
        "{}",
        ledger.log()
    );

    // A client with an old-CA certificate is refused at the handshake.
    let old_cert_client = {
        let config = tls::client_config(
            &agent_files.ca,
            &pki.join("agents/a1.pem"),
            &pki.join("agents/a1.key"),
        )
        .unwrap();
        LedgerClient::new(&ledger.endpoint(), config).unwrap()
    };
    let refused = old_cert_client.tenant().await.unwrap_err();
    assert!(
        !matches!(refused, ClientError::Refused { .. }),
        "expected a handshake failure, got {refused}"
    );
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        ledger.log().contains("tls-refused")
    })
    .await;

    // The agent's connection is forced to be made again: only its rotated certificate
    // (read from disk by the running agent) can make it.
    ledger.kill9();
    ledger.restart();
    let accepted = metrics.delivered_count(Verdict::Accepted);
    wait_until(
        Duration::from_secs(60),
        "heartbeats over a new connection",
        || metrics.delivered_count(Verdict::Accepted) >= accepted + 2,
    )
    .await;
    agent.stop().await;
    assert_eq!(metrics.delivered_count(Verdict::Refused), 0);

    // Same identity throughout: every entry is a1's, of tenant acme.
    let new_client = {
        let config =
            tls::client_config(&agent_files.ca, &agent_files.cert, &agent_files.key).unwrap();
        LedgerClient::new(&ledger.endpoint(), config).unwrap()
    };
    let entries = all_entries(&new_client).await;
    assert!(entries.len() >= 6);
    assert!(entries
        .iter()
        .all(|e| e.agent_id == "a1" && e.tenant == "acme" && e.verdict == Verdict::Accepted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_pick_up_the_rotated_key_and_the_follower_takes_over_with_it() {
    let url = crate::support::postgres::database();
    let spec = LedgerSpec {
        agents: &[("w0", "t")],
        tenants: &[("t", &"0".repeat(64))],
        enrolled: true,
        ..LedgerSpec::default()
    };
    let mut first = LedgerProcess::start_on_postgres(&spec, &url, 2);
    let second = first.replica();
    let old_key = first.verifier_key();
    let submit = |ledger: &LedgerProcess, n: u32| {
        let client = ledger.client("w0");
        async move { client.submit(format!("{{\"n\": {n}}}").as_bytes()).await }
    };
    for n in 0..3 {
        submit(&first, n).await.unwrap();
    }
    let before_note = first.client("w0").checkpoint(None).await.unwrap();
    let before = open_checkpoint(&before_note, &old_key).unwrap();

    let prepared = attestor_cli(
        &["ledger", "rotate-key"],
        &first.dir.path().join("ledger.toml"),
    );
    assert!(prepared.status.success(), "{prepared:?}");
    std::fs::copy(
        first.state_dir().join("checkpoint.key.next"),
        second.state_dir().join("checkpoint.key.next"),
    )
    .unwrap();
    // The follower cannot introduce a key: it keeps the prepared file and its old key.
    second.hang_up();
    wait_until(Duration::from_secs(20), "the follower's reload", || {
        second.reloads() >= 1
    })
    .await;
    assert_eq!(second.verifier_key(), old_key);
    assert!(second.state_dir().join("checkpoint.key.next").exists());

    first.hang_up();
    wait_until(Duration::from_secs(20), "the sequencer's rotation", || {
        first.verifier_key() != old_key
    })
    .await;
    let new_key = first.verifier_key();
    for n in 3..6 {
        submit(&first, n).await.unwrap();
    }
    // The follower serves the new entries, signed by the new key, before its own reload.
    let history = KeyHistory::follow(
        &old_key,
        &first.client("w0").log_keys().await.unwrap().transitions,
    )
    .unwrap();
    let follower = second.client("w0");
    audit::verify_entry(&follower.entry(5).await.unwrap(), &history).unwrap();

    second.hang_up();
    wait_until(Duration::from_secs(20), "the follower's key", || {
        second.verifier_key() == new_key
    })
    .await;
    // The sequencer dies; the follower takes over and signs with the new key.
    first.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let receipt = loop {
        match submit(&second, 6).await {
            Ok(answer) => break answer.receipt,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no take-over: {e}\n{}",
                    second.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // After six submissions and the record of the incident the first one opened.
    assert_eq!(receipt.index, 7);
    let checkpoint = audit::verify_receipt(&receipt, &history).unwrap();
    assert!(audit::verify_receipt(&receipt, &old_key).is_err());
    let latest_note = follower.checkpoint(None).await.unwrap();
    let proof = follower
        .consistency(before.size, checkpoint.size)
        .await
        .unwrap();
    audit::verify_extends(&before, &latest_note, &proof, &history).unwrap();
}
