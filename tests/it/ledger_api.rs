//! The ledger as a process, over mutual TLS on loopback: heartbeats from a real agent on
//! swtpm, refusals and their audit trail, durability under kill -9, the agent's spool
//! across a ledger outage, tenant isolation, hostile requests, and `attestor query`.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::agent::AgentFixture;
use crate::support::ledger::{
    all_entries, attestor_config, enrol_tpm, Heartbeating, LedgerProcess, LedgerSpec,
};
use crate::support::output_text;
use crate::support::wait_until;
use attestor_agent::client::{ClientError, LedgerClient};
use attestor_ledger::store::Verdict;
use attestor_net::tls;
use attestor_verify::api::SubmitResponse;
use attestor_verify::audit;
use attestor_verify::bundle::Bundle;
use attestor_verify::log::checkpoint::open_checkpoint;
use attestor_verify::log::merkle::leaf_hash;
use attestor_verify::record::{is_recorder, LogRecord};
use hyper::Method;

const ANY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Attests with a fresh ledger nonce and submits.
async fn attest_and_submit(fixture: &AgentFixture, client: &LedgerClient) -> SubmitResponse {
    let nonce = client.nonce().await.unwrap();
    let bundle = fixture.attest_with_nonce(&nonce);
    client.submit(&bundle.to_json()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_the_log_with_proofs_and_the_log_only_grows() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 2).await;
    let metrics = agent.metrics.clone();
    let client = ledger.client("a1");
    let vkey = ledger.verifier_key();
    let early = open_checkpoint(&client.checkpoint(None).await.unwrap(), &vkey).unwrap();
    wait_until(
        Duration::from_secs(60),
        "a third accepted heartbeat",
        || metrics.delivered_count(Verdict::Accepted) >= 3,
    )
    .await;
    agent.stop().await;
    assert_eq!(
        metrics.delivered_count(Verdict::Refused),
        0,
        "{}",
        ledger.log()
    );
    assert_eq!(metrics.spool_depth(), 0);

    let page = client.entries("proofs=true").await.unwrap();
    assert!(page.entries.len() >= 3);
    for entry in &page.entries {
        assert_eq!(entry.verdict, Verdict::Accepted, "{entry:?}");
        audit::verify_entry(entry, &vkey).unwrap();
        // The leaf holds the submitted bundle itself: anyone can re-verify it.
        let record = LogRecord::from_leaf(&entry.leaf).unwrap();
        Bundle::from_json(&record.submission).unwrap();
    }
    let latest = client.latest_healthy().await.unwrap();
    assert_eq!(latest.entries.len(), 1);
    assert_eq!(latest.entries[0].index, page.entries.last().unwrap().index);

    // The log only grew between the two checkpoints.
    let note = client.checkpoint(None).await.unwrap();
    let now = open_checkpoint(&note, &vkey).unwrap();
    assert!(now.size > early.size);
    let proof = client.consistency(early.size, now.size).await.unwrap();
    audit::verify_extends(&early, &note, &proof, &vkey).unwrap();
    // A proof for another old size does not pass for this one.
    let other = client.consistency(early.size - 1, now.size).await.unwrap();
    assert!(audit::verify_extends(&early, &note, &other, &vkey).is_err());

    let agents = client.agents().await.unwrap().agents;
    assert_eq!(agents.len(), 1);
    assert!(!agents[0].stale);
    assert_eq!(agents[0].zero_retention, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_recorded_with_its_reason() {
    let fixture = AgentFixture::new();
    // A short freshness window, so a stale bundle takes seconds, not minutes.
    let profile = std::fs::read_to_string(&fixture.profile_path)
        .unwrap()
        .replace("max_age_seconds = 300", "max_age_seconds = 3");
    let profile_path = fixture.dir.path().join("short-profile.toml");
    std::fs::write(&profile_path, profile).unwrap();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&profile_path),
        ..LedgerSpec::default()
    });
    let client = ledger.client("a1");
    let mut expected = Vec::new();

    // Not enrolled yet: refused before the body is kept; a summary is logged.
    let nonce = client.nonce().await.unwrap();
    let bundle = fixture.attest_with_nonce(&nonce).to_json();
    let stranger = client.submit(&bundle).await.unwrap_err();
    assert_eq!(stranger.code(), Some("unknown-agent"), "{stranger}");
    expected.push("unknown-agent");

    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let nonce = client.nonce().await.unwrap();
    let good = fixture.attest_with_nonce(&nonce).to_json();
    let accepted = client.submit(&good).await.unwrap();
    assert_eq!(accepted.verdict, Verdict::Accepted);

    // The same bundle again: a re-send, answered with its entry, not logged again.
    let replay = client.submit(&good).await.unwrap();
    assert_eq!(replay, accepted);

    // A new quote over a spent nonce.
    let reused = fixture.attest_with_nonce(&nonce).to_json();
    assert_eq!(
        client.submit(&reused).await.unwrap().reason.as_deref(),
        Some("nonce")
    );
    expected.push("nonce");

    // A forged envelope signature.
    let mut forged = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let sig = &mut forged.envelope.signatures[0].sig;
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let response = client.submit(&forged.to_json()).await.unwrap();
    assert_eq!(response.reason.as_deref(), Some("envelope-signature"));
    expected.push("envelope-signature");

    // Stale, and nothing shows when it was made: an offline bundle older than the agent's
    // next accepted attestation by more than the window. (One whose ledger nonce, or TPM
    // clock past the last accepted quote, shows it was made in time is `late`:
    // tests/it/outage.rs.)
    let offline = [attestor_verify::api::OFFLINE_NONCE_PREFIX, b"stale"].concat();
    let stale = fixture.attest_with_nonce(&offline);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let since = attest_and_submit(&fixture, &client).await;
    assert_eq!(since.verdict, Verdict::Accepted, "{since:?}");
    let response = client.submit(&stale.to_json()).await.unwrap();
    assert_eq!(response.reason.as_deref(), Some("freshness"));
    expected.push("freshness");

    // The policy changes and someone force-reseals: the tenant expects another hash.
    let policy = std::fs::read_to_string(fixture.policy_file()).unwrap();
    fixture.reseal_with_policy(&policy.replace("max_epsilon = 3.0", "max_epsilon = 30.0"));
    let response = attest_and_submit(&fixture, &client).await;
    assert_eq!(response.reason.as_deref(), Some("policy-hash"));
    expected.push("policy-hash");

    // zero_retention flips: reported as that, not merely as a different policy.
    fixture.reseal_with_policy(&policy.replace("zero_retention = true", "zero_retention = false"));
    let response = attest_and_submit(&fixture, &client).await;
    assert_eq!(response.reason.as_deref(), Some("zero-retention-drift"));
    expected.push("zero-retention-drift");

    // Back to the approved policy: accepted again.
    fixture.reseal_with_policy(&policy);
    let response = attest_and_submit(&fixture, &client).await;
    assert_eq!(response.verdict, Verdict::Accepted, "{response:?}");

    // An operator revokes the agent while the ledger runs: refused, and cannot re-enrol.
    let revoked = std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(["revoke", "--config"])
        .arg(ledger.dir.path().join("ledger.toml"))
        .args(["--tenant", "acme", "a1"])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    let response = attest_and_submit(&fixture, &client).await;
    assert_eq!(response.reason.as_deref(), Some("revoked"));
    expected.push("revoked");
    let again = enrol_tpm(&mut fixture.agent(), &client).await.unwrap_err();
    assert!(
        matches!(again, ClientError::Refused { status: 403, .. }),
        "{again}"
    );
    assert!(again.to_string().contains("revoked"), "{again}");

    // Every refusal is in the log, in order, with its reason and a valid proof.
    let refused = client
        .entries("verdict=refused&proofs=true")
        .await
        .unwrap()
        .entries;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|e| e.reason.as_deref().unwrap())
        .collect();
    assert_eq!(reasons, expected);
    let vkey = ledger.verifier_key();
    for entry in &refused {
        audit::verify_entry(entry, &vkey).unwrap();
        assert!(entry.detail.as_deref().is_some_and(|d| !d.is_empty()));
    }
    // Besides the incident records the refusals opened (the ledger's own entries).
    let accepted = client.entries("verdict=accepted").await.unwrap().entries;
    let attestations = accepted.iter().filter(|e| !is_recorder(&e.agent_id));
    assert_eq!(attestations.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_submissions_survive_kill_9() {
    // Refused submissions are logged as durably as accepted ones, so malformed bodies
    // exercise the same write path without a TPM.
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("w0", "t"), ("w1", "t"), ("w2", "t"), ("w3", "t")],
        tenants: &[("t", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, [u8; 32], String)>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = ledger.client(&format!("w{w}"));
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let body = format!("{{\"writer\": {w}, \"n\": {n}}}");
                match client.submit(body.as_bytes()).await {
                    Ok(response) => {
                        let hash: [u8; 32] = response.receipt.leaf_hash.try_into().unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((response.receipt.index, hash, body));
                    }
                    // The ledger died under us; everything before is acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    wait_until(
        Duration::from_secs(60),
        "200 acknowledged submissions",
        || acked.lock().unwrap().len() >= 200,
    )
    .await;
    ledger.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    ledger.restart();

    let client = ledger.client("w0");
    let vkey = ledger.verifier_key();
    let checkpoint = open_checkpoint(&client.checkpoint(None).await.unwrap(), &vkey).unwrap();
    let mut seen = HashSet::new();
    for entry in all_entries(&client).await {
        let record = LogRecord::from_leaf(&entry.leaf).unwrap();
        assert!(
            seen.insert(record.submission),
            "duplicate leaf {}",
            entry.index
        );
    }
    assert_eq!(seen.len() as u64, checkpoint.size);
    for (index, hash, body) in &acked {
        assert!(*index < checkpoint.size);
        let entry = client.entry(*index).await.unwrap();
        assert_eq!(leaf_hash(&entry.leaf), *hash, "entry {index} changed");
        assert_eq!(
            LogRecord::from_leaf(&entry.leaf).unwrap().submission,
            body.as_bytes()
        );
        audit::verify_entry(&entry, &vkey).unwrap();
    }
    // And the restarted ledger appends where it left off.
    let next = client.submit(b"{}").await.unwrap();
    assert_eq!(next.receipt.index, checkpoint.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_spools_while_the_ledger_is_down_and_delivers_in_order() {
    let fixture = AgentFixture::new();
    let mut ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 1).await;
    let metrics = agent.metrics.clone();

    ledger.stop();
    let produced_before = metrics.produced_count();
    wait_until(
        Duration::from_secs(60),
        "three attestations spooled",
        || metrics.spool_depth() >= 3,
    )
    .await;
    // It kept attesting while the ledger was away (the spool may also hold one made
    // just before the stop).
    assert!(metrics.produced_count() > produced_before);

    ledger.restart();
    wait_until(Duration::from_secs(60), "the spool to drain", || {
        metrics.spool_depth() == 0
            && metrics.delivered_count(Verdict::Accepted) >= produced_before + 3
    })
    .await;
    agent.stop().await;

    // Everything produced arrived, accepted, in the order it was made.
    let client = ledger.client("a1");
    let entries = client.entries("limit=1000").await.unwrap().entries;
    let produced = metrics.produced_count();
    assert_eq!(entries.len() as u64, produced, "{}", ledger.log());
    let mut made_at = Vec::new();
    for entry in &entries {
        assert_eq!(entry.verdict, Verdict::Accepted, "{entry:?}");
        let record = LogRecord::from_leaf(&entry.leaf).unwrap();
        let bundle = Bundle::from_json(&record.submission).unwrap();
        let statement: serde_json::Value =
            serde_json::from_slice(&bundle.envelope.payload).unwrap();
        made_at.push(statement["predicate"]["timestamp"].as_u64().unwrap());
    }
    assert!(made_at.windows(2).all(|w| w[0] <= w[1]), "{made_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_entries() {
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme"), ("b1", "globex")],
        tenants: &[("acme", ANY_HASH), ("globex", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let (acme, globex) = (ledger.client("a1"), ledger.client("b1"));
    acme.submit(b"{\"from\": \"acme\"}").await.unwrap();
    let theirs = globex.submit(b"{\"from\": \"globex\"}").await.unwrap();
    acme.submit(b"{\"from\": \"acme again\"}").await.unwrap();

    let seen = acme.entries("limit=100").await.unwrap().entries;
    // Its two refusals and the record of the incident they opened.
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.iter().filter(|e| is_recorder(&e.agent_id)).count(), 1);
    assert!(seen.iter().all(|e| e.tenant == "acme"));
    // Naming the other tenant's agent or entry finds nothing.
    assert!(acme.entries("agent=b1").await.unwrap().entries.is_empty());
    let hidden = acme.entry(theirs.receipt.index).await.unwrap_err();
    assert!(
        matches!(hidden, ClientError::Refused { status: 404, .. }),
        "{hidden}"
    );
    // Its refusal and the record of the incident it opened.
    assert_eq!(globex.entries("").await.unwrap().entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_the_ledger_keeps_serving() {
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let client = ledger.client("a1");
    let cases: &[(Method, &str, Option<Vec<u8>>, u16)] = &[
        (
            Method::POST,
            "/v1/attestations",
            Some(vec![b'x'; 2 << 20]),
            413,
        ),
        // A query the ledger does not know is refused before the bundle is judged.
        (
            Method::POST,
            "/v1/attestations?next_nonce=maybe",
            Some(b"{}".to_vec()),
            400,
        ),
        (
            Method::POST,
            "/v1/attestations?bogus=1",
            Some(b"{}".to_vec()),
            400,
        ),
        (Method::POST, "/v1/enroll", Some(b"{not json".to_vec()), 400),
        (Method::POST, "/v1/enroll", Some(vec![b' '; 100 << 10]), 413),
        (
            Method::POST,
            "/v1/enroll/proof",
            Some(b"{\"secret\": 7}".to_vec()),
            400,
        ),
        (Method::GET, "/v1/attestations?limit=abc", None, 400),
        (Method::GET, "/v1/attestations?limit=0", None, 400),
        (Method::GET, "/v1/attestations?bogus=1", None, 400),
        (Method::GET, "/v1/attestations?agent=a%27b", None, 400),
        (Method::GET, "/v1/attestations?limit=1&limit=2", None, 400),
        (Method::GET, "/v1/attestations?verdict=maybe", None, 400),
        (Method::GET, "/v1/entries/-1", None, 400),
        (Method::GET, "/v1/entries/99999", None, 404),
        (Method::GET, "/v1/log/consistency?old=5&new=1", None, 400),
        (
            Method::GET,
            "/v1/log/consistency?old=1&new=999999",
            None,
            400,
        ),
        (Method::GET, "/v1/log/consistency?old=1", None, 400),
        (Method::GET, "/v1/log/checkpoint?size=424242", None, 404),
        (Method::GET, "/v1/log/checkpoint?at_least=424242", None, 404),
        (
            Method::GET,
            "/v1/log/checkpoint?size=1&at_least=1",
            None,
            400,
        ),
        // Numbers beyond what the store holds: no such thing, or a bad filter; never a
        // storage failure.
        (Method::GET, "/v1/entries/18446744073709551615", None, 404),
        (
            Method::GET,
            "/v1/log/checkpoint?size=18446744073709551615",
            None,
            404,
        ),
        (
            Method::GET,
            "/v1/log/checkpoint?at_least=9223372036854775808",
            None,
            404,
        ),
        (
            Method::GET,
            "/v1/attestations?from=18446744073709551615",
            None,
            400,
        ),
        (
            Method::GET,
            "/v1/attestations?to=9223372036854775808",
            None,
            400,
        ),
        (
            Method::GET,
            "/v1/attestations?after=18446744073709551615",
            None,
            400,
        ),
        (
            Method::GET,
            "/v1/log/consistency?old=18446744073709551615&new=1",
            None,
            400,
        ),
        (
            Method::GET,
            "/v1/log/consistency?old=1&new=18446744073709551615",
            None,
            400,
        ),
        (Method::GET, "/v1/nowhere", None, 404),
        (Method::DELETE, "/v1/attestations", None, 404),
    ];
    for (method, path, body, status) in cases {
        let (got, answer) = client
            .send(method.clone(), path, body.clone())
            .await
            .unwrap();
        assert_eq!(got.as_u16(), *status, "{method} {path}: {answer:?}");
        let error: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    // Far too large to even read: answered 413 or cut off, never buffered.
    match client
        .send(Method::POST, "/v1/attestations", Some(vec![b'x'; 16 << 20]))
        .await
    {
        Ok((status, _)) => assert_eq!(status.as_u16(), 413),
        Err(e) => assert!(e.is_transient(), "{e}"),
    }
    // Malformed bundles are refused and still recorded.
    let response = client.submit(b"{\"type\": 1}").await.unwrap();
    assert_eq!(response.reason.as_deref(), Some("malformed"));
    let garbage = client.submit(&[0xff, 0x00, 0x13]).await.unwrap();
    // Between them: the record of the incident the first refusal opened.
    assert_eq!(garbage.receipt.index, response.receipt.index + 2);
    // Still serving, and none of it was a failure of the ledger's.
    assert_eq!(client.nonce().await.unwrap().len(), 32);
    let log = ledger.log();
    assert!(!log.contains("\"level\":\"error\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_of_the_ledger_ca_get_nothing() {
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", ANY_HASH)],
        ..LedgerSpec::default()
    });
    // A PKI of its own: same names, another CA.
    let other = tempfile::tempdir().unwrap();
    let identity = tls::AgentIdentity::new("acme", "a1").unwrap();
    tls::pki_init(other.path(), &[identity], &["127.0.0.1".into()]).unwrap();
    let pki = other.path();
    // It trusts the real ledger CA, but presents a certificate from its own CA.
    let config = tls::client_config(
        &ledger.tls_files("a1").ca,
        &pki.join("agents/a1.pem"),
        &pki.join("agents/a1.key"),
    )
    .unwrap();
    let stranger = LedgerClient::new(&ledger.endpoint(), config).unwrap();
    let refused = stranger.nonce().await.unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    // The ledger logged why, and kept serving.
    assert!(ledger.client("a1").nonce().await.is_ok());
    assert!(ledger.log().contains("tls-refused"), "{}", ledger.log());
}

/// A nonce the ledger issued before it restarted still counts (its tag, keyed from the
/// checkpoint key, vouches for it), once: an attestation made across a restart is not
/// lost, and neither the same bundle nor the same nonce is accepted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_issued_before_a_restart_is_accepted_once() {
    let fixture = AgentFixture::new();
    let mut ledger = LedgerProcess::for_fixture(&fixture);
    let client = ledger.client("a1");
    enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
    let before = client.nonce().await.unwrap();
    let made_before = fixture.attest_with_nonce(&before).to_json();
    let reused = fixture.attest_with_nonce(&before).to_json();

    ledger.stop();
    ledger.restart();
    let client = ledger.client("a1");
    let response = client.submit(&made_before).await.unwrap();
    assert_eq!(response.verdict, Verdict::Accepted, "{:?}", response.reason);
    // The same bundle again is a re-send: its original entry and receipt, no new entry.
    let again = client.submit(&made_before).await.unwrap();
    assert_eq!(again.verdict, Verdict::Accepted);
    assert_eq!(again.receipt.index, response.receipt.index);
    assert_eq!(again.receipt.leaf_hash, response.receipt.leaf_hash);
    // Other evidence with the same nonce is refused.
    let response = client.submit(&reused).await.unwrap();
    assert_eq!(response.reason.as_deref(), Some("nonce"), "the same nonce");
    assert_eq!(response.receipt.index, again.receipt.index + 1);
    // A nonce the ledger never issued is no better after a restart.
    let mut forged = client.nonce().await.unwrap();
    forged[0] ^= 1;
    let response = client
        .submit(&fixture.attest_with_nonce(&forged).to_json())
        .await
        .unwrap();
    assert_eq!(response.reason.as_deref(), Some("nonce"));
}

/// Enrols `fixture`'s TPM as `a1`, then sends one attestation made with a nonce from the
/// endpoint, asking for the next: the nonce its accepted answer hands out.
async fn first_piggybacked_nonce(fixture: &AgentFixture, client: &LedgerClient) -> Vec<u8> {
    enrol_tpm(&mut fixture.agent(), client).await.unwrap();
    let bundle = fixture.attest_with_nonce(&client.nonce().await.unwrap());
    let answer = client
        .submit_for_next_nonce(&bundle.to_json())
        .await
        .unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
    let next = answer
        .next_nonce
        .expect("an accepted answer carries a nonce");
    // The ledger's `nonce_ttl_seconds` (the default).
    assert_eq!(next.valid_for_ms, 120_000);
    next.nonce
}

/// A nonce handed out with an accepted answer is used once, like one from the endpoint:
/// other evidence made with it is refused by the nonce check. Only an accepted answer
/// to a submission that asked carries one (older agents never see the field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piggybacked_nonce_is_single_use() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let client = ledger.client("a1");
    let nonce = first_piggybacked_nonce(&fixture, &client).await;
    let first = fixture.attest_with_nonce(&nonce).to_json();
    let second = fixture.attest_with_nonce(&nonce).to_json();

    let accepted = client.submit_for_next_nonce(&first).await.unwrap();
    assert_eq!(accepted.verdict, Verdict::Accepted, "{:?}", accepted.detail);
    let next = accepted.next_nonce.clone().expect("the next nonce");
    assert_ne!(next.nonce, nonce);
    let refused = client.submit_for_next_nonce(&second).await.unwrap();
    assert_eq!(refused.verdict, Verdict::Refused);
    assert_eq!(
        refused.reason.as_deref(),
        Some("nonce"),
        "{:?}",
        refused.detail
    );
    assert_eq!(refused.next_nonce, None, "a refusal hands out no nonce");
    // The exact bytes again are a re-send, answered from the log, not a second use.
    let resent = client.submit(&first).await.unwrap();
    assert_eq!(resent.receipt.index, accepted.receipt.index);
    assert_eq!(resent.receipt.leaf_hash, accepted.receipt.leaf_hash);
    assert_eq!(resent.next_nonce, None, "not asked for");
    // The nonce that answer handed out was not spent by the refusal.
    let fresh = fixture.attest_with_nonce(&next.nonce).to_json();
    let answer = client.submit(&fresh).await.unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
}

/// A nonce handed out with a1's accepted answer is a1's alone: another agent of the same
/// tenant, and one of another tenant, both enrolled with the very TPM that made the
/// evidence (so nothing but the nonce tells them apart), are refused by the nonce check;
/// a1 then still uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piggybacked_nonce_is_bound_to_its_agent() {
    let fixture = AgentFixture::new();
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme"), ("a2", "acme"), ("b1", "beta")],
        tenants: &[("acme", &policy_hash), ("beta", &policy_hash)],
        profile: Some(&fixture.profile_path),
        ..LedgerSpec::default()
    });
    let a1 = ledger.client("a1");
    let nonce = first_piggybacked_nonce(&fixture, &a1).await;
    for other in ["a2", "b1"] {
        let client = ledger.client(other);
        enrol_tpm(&mut fixture.agent(), &client).await.unwrap();
        let bundle = fixture.attest_with_nonce(&nonce).to_json();
        let answer = client.submit_for_next_nonce(&bundle).await.unwrap();
        assert_eq!(answer.verdict, Verdict::Refused, "{other}");
        assert_eq!(
            answer.reason.as_deref(),
            Some("nonce"),
            "{other}: {:?}",
            answer.detail
        );
        assert_eq!(answer.next_nonce, None);
    }
    let bundle = fixture.attest_with_nonce(&nonce).to_json();
    let answer = a1.submit_for_next_nonce(&bundle).await.unwrap();
    assert_eq!(answer.verdict, Verdict::Accepted, "{:?}", answer.detail);
}

/// ARCHITECTURE.md: a nonce handed out with an answer is recognised after a restart
/// exactly as one from the endpoint. Within the vouch window its tag vouches for it once,
/// with a TPM clock past the agent's last accepted quote; evidence made with it that
/// misses the freshness window is at best late, judged at the nonce's issue time. The
/// second half restarts with a 3 s freshness window rather than waiting out 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piggybacked_nonce_after_a_restart_counts_as_an_endpoint_nonce() {
    let fixture = AgentFixture::new();
    let mut ledger = LedgerProcess::for_fixture(&fixture);
    let client = ledger.client("a1");
    let before = first_piggybacked_nonce(&fixture, &client).await;
    let made_before = fixture.attest_with_nonce(&before).to_json();
    let also_made_before = fixture.attest_with_nonce(&before).to_json();

    ledger.stop();
    ledger.restart();
    let client = ledger.client("a1");
    let accepted = client.submit_for_next_nonce(&made_before).await.unwrap();
    assert_eq!(accepted.verdict, Verdict::Accepted, "{:?}", accepted.detail);
    let refused = client.submit(&also_made_before).await.unwrap();
    assert_eq!(refused.reason.as_deref(), Some("nonce"), "a second use");

    // Past the freshness window.
    let old = accepted.next_nonce.expect("the next nonce").nonce;
    let made_then = fixture.attest_with_nonce(&old).to_json();
    let also_made_then = fixture.attest_with_nonce(&old).to_json();
    let short = fixture.dir.path().join("short-profile.toml");
    let profile = std::fs::read_to_string(&fixture.profile_path).unwrap();
    assert!(profile.contains("max_age_seconds = 300"));
    std::fs::write(
        &short,
        profile.replace("max_age_seconds = 300", "max_age_seconds = 3"),
    )
    .unwrap();
    let config = ledger.dir.path().join("ledger.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("profile = \"{}\"", fixture.profile_path.display()),
        &format!("profile = \"{}\"", short.display()),
    );
    std::fs::write(&config, text).unwrap();
    ledger.stop();
    // Longer than the 3 s window: the evidence is then too old for a heartbeat.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ledger.restart();
    let client = ledger.client("a1");
    let late = client.submit_for_next_nonce(&made_then).await.unwrap();
    assert_eq!(late.verdict, Verdict::Late, "{:?}", late.detail);
    assert_eq!(late.next_nonce, None, "only an accepted answer carries one");
    let refused = client.submit(&also_made_then).await.unwrap();
    assert_eq!(refused.reason.as_deref(), Some("nonce"), "a second use");
}

/// In steady state a heartbeat is one request: after the first nonce from the endpoint,
/// each accepted answer carries the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_heartbeat_is_one_request() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 5).await;
    let metrics = agent.metrics.clone();
    agent.stop().await;
    let accepted = metrics.delivered_count(Verdict::Accepted);
    assert!(accepted >= 5);
    assert_eq!(
        metrics.delivered_count(Verdict::Refused),
        0,
        "{}",
        ledger.log()
    );
    assert_eq!(
        ledger.metric("attestor_ledger_nonces_issued_total{via=\"endpoint\"}"),
        Some(1.0),
        "{}",
        ledger.log()
    );
    // One handed out with each accepted answer (the last one unused).
    assert_eq!(
        ledger.metric("attestor_ledger_nonces_issued_total{via=\"receipt\"}"),
        Some(accepted as f64)
    );
}

/// `attestor query` against `ledger` as `a1`, verifying with the ledger's key.
fn query_command(ledger: &LedgerProcess, what: &[&str]) -> Command {
    let key = ledger.dir.path().join("log.vkey");
    std::fs::write(&key, ledger.verifier_key()).unwrap();
    let mut command = ledger.cli("query", "a1");
    command.arg("--log-key").arg(&key).args(what);
    command
}

/// `checkpoint --since N` works for any N up to the latest size, checking the latest
/// checkpoint against the earliest signed one covering N; and `attestor query` piped
/// into a reader that goes away (`| head`) ends quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_since_any_size_and_into_a_closed_pipe() {
    let mut ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", ANY_HASH)],
        enrolled: true,
        ..LedgerSpec::default()
    });
    let client = ledger.client("a1");
    // One at a time: one batch, so one checkpoint, per entry (sizes 1 to 5: the first
    // refusal opens an incident, recorded as entry 1). Distinct bodies: the same bytes
    // again would be a re-send of the first entry.
    for n in 0..4 {
        let body = format!("{{\"not a bundle\": {n}}}");
        client.submit(body.as_bytes()).await.unwrap();
    }
    // Size 3 loses its checkpoint, as if entries 3 and 4 had come in one batch.
    ledger.stop();
    rusqlite::Connection::open(ledger.state_dir().join("ledger.db"))
        .unwrap()
        .execute("DELETE FROM checkpoints WHERE size = 3", [])
        .unwrap();
    ledger.restart();
    let client = ledger.client("a1");
    let exact = client.checkpoint(Some(3)).await.unwrap_err();
    assert!(
        matches!(exact, ClientError::Refused { status: 404, .. }),
        "{exact}"
    );

    let out = query_command(&ledger, &["checkpoint", "--since", "3"])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("earliest signed checkpoint of size 3 or more: size 4"),
        "{text}"
    );
    assert!(
        text.contains("consistency verified: size 5 extends size 4"),
        "{text}"
    );
    for since in ["1", "5"] {
        let out = query_command(&ledger, &["checkpoint", "--since", since])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "--since {since}: {}",
            output_text(&out)
        );
    }
    let beyond = query_command(&ledger, &["checkpoint", "--since", "6"])
        .output()
        .unwrap();
    assert!(!beyond.status.success());
    assert!(
        output_text(&beyond).contains("no signed checkpoint of size 6 or more"),
        "{}",
        output_text(&beyond)
    );

    // The reader of stdout is gone before anything is written.
    let mut child = query_command(&ledger, &["entries"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
