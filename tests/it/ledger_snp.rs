//! A mixed fleet on one ledger: a simulated SEV-SNP guest, a TPM host (swtpm) and a
//! confidential VM with a vTPM (another swtpm plus the SNP simulation, `tpm+snp`) enrol
//! and heartbeat side by side; the SNP guest's key is pinned to its chip, the VM's AK and
//! chip both, and the evidence is held to the ledger's nonces.

use std::path::Path;
use std::time::Duration;

use crate::support::agent::AgentFixture;
use crate::support::ledger::{all_entries, LedgerProcess, LedgerSpec};
use crate::support::wait_for;
use attestor_agent::config::{AgentConfig, EvidenceKind};
use attestor_agent::evidence_source::EvidenceSource;
use attestor_agent::{Attestor, AttestorConfig};
use attestor_ledger::store::Verdict;
use attestor_verify::bundle::Evidence;
use attestor_verify::record::is_recorder;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example simulated guest, with its state in `state`.
fn snp_config(state: &Path) -> AgentConfig {
    let path = root().join("examples/agent-snp-sim.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("../target/attestor-state-snp-sim", state.to_str().unwrap());
    AgentConfig::parse(&text, &path).unwrap()
}

/// One profile for both kinds: the swtpm profile plus the simulation's `[snp]` sections.
fn mixed_profile(fixture: &AgentFixture) -> std::path::PathBuf {
    let tpm = std::fs::read_to_string(&fixture.profile_path).unwrap();
    let sim = std::fs::read_to_string(root().join("firmware-profiles/snp-sim.toml")).unwrap();
    let snp = &sim[sim.find("[snp]").unwrap()..];
    let snp = snp.replace("../examples/", &format!("{}/examples/", root().display()));
    let path = fixture.dir.path().join("mixed-profile.toml");
    std::fs::write(&path, format!("{tpm}\n{snp}")).unwrap();
    path
}

/// A confidential VM: the vTPM fixture's config with the simulated guest's `[snp]`.
fn cvm_config(vtpm: &AgentFixture, state: &Path) -> AgentConfig {
    let mut config = vtpm.config();
    config.evidence = EvidenceKind::TpmSnp;
    config.snp = snp_config(state).snp;
    config
}

#[test]
fn snp_guests_tpm_hosts_and_vtpm_guests_enrol_and_heartbeat_on_one_ledger() {
    let fixture = AgentFixture::new();
    let vtpm = AgentFixture::new();
    let profile = mixed_profile(&fixture);
    let kernel = fixture.kernel();
    let policy_hash = hex::encode(kernel.policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("guest-1", "acme"), ("host-1", "acme"), ("cvm-1", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(&profile),
        ..LedgerSpec::default()
    });
    let guest_state = tempfile::tempdir().unwrap();
    let cvm_state = tempfile::tempdir().unwrap();
    let config = |agent: AgentConfig, id: &str, tcti: String| AttestorConfig {
        attestation_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(15),
        policy_hash: policy_hash.clone(),
        zero_retention: true,
        ledger_endpoint: ledger.endpoint(),
        ledger_tls: ledger.tls_files(id),
        agent,
        tcti,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let attestors = [
        Attestor::new(config(
            snp_config(guest_state.path()),
            "guest-1",
            String::new(),
        )),
        Attestor::new(config(fixture.config(), "host-1", fixture.tpm.tcti())),
        Attestor::new(config(
            cvm_config(&vtpm, cvm_state.path()),
            "cvm-1",
            vtpm.tpm.tcti(),
        )),
    ];
    let metrics: Vec<_> = attestors.iter().map(|a| a.metrics()).collect();
    let stoppers: Vec<_> = attestors.iter().map(|a| a.stopper()).collect();
    let running: Vec<_> = attestors
        .into_iter()
        .map(|mut a| runtime.spawn(async move { a.start_heartbeat().await }))
        .collect();
    wait_for(
        Duration::from_secs(90),
        "two accepted heartbeats of each",
        || {
            metrics
                .iter()
                .all(|m| m.delivered_count(Verdict::Accepted) >= 2)
        },
    );
    stoppers.iter().for_each(|s| s.stop());
    for task in running {
        runtime.block_on(task).unwrap().unwrap();
    }
    for m in &metrics {
        assert_eq!(m.delivered_count(Verdict::Refused), 0, "{}", ledger.log());
    }

    runtime.block_on(async {
        let client = ledger.client("guest-1");
        let agents = client.agents().await.unwrap().agents;
        assert_eq!(agents.len(), 3);
        assert!(agents
            .iter()
            .all(|a| !a.stale && a.last_accepted_at_ms.is_some()));

        // A guest bundle replayed: its ledger nonce is spent.
        let mut source = EvidenceSource::open(snp_config(guest_state.path()), "").unwrap();
        let nonce = client.nonce().await.unwrap();
        let bundle = source
            .attest(&kernel, &fixture.status(), &nonce)
            .unwrap()
            .to_json();
        let accepted = client.submit(&bundle).await.unwrap();
        assert_eq!(accepted.verdict, Verdict::Accepted);
        // Sent again, it is the same entry (a re-send), never a second acceptance; other
        // evidence with the spent nonce is refused.
        let replay = client.submit(&bundle).await.unwrap();
        assert_eq!(replay.receipt.index, accepted.receipt.index);
        let other = source
            .attest(&kernel, &fixture.status(), &nonce)
            .unwrap()
            .to_json();
        let refused = client.submit(&other).await.unwrap();
        assert_eq!(refused.reason.as_deref(), Some("nonce"), "{refused:?}");
        // An offline nonce cannot be ordered without a TPM clock: refused.
        let offline = [attestor_ledger::submission::OFFLINE_NONCE_PREFIX, b"x"].concat();
        let bundle = source
            .attest(&kernel, &fixture.status(), &offline)
            .unwrap()
            .to_json();
        let refused = client.submit(&bundle).await.unwrap();
        assert_eq!(refused.reason.as_deref(), Some("nonce"), "{refused:?}");
        // The guest's evidence under the host's identity: another pinned key.
        let host = ledger.client("host-1");
        let nonce = host.nonce().await.unwrap();
        let bundle = source
            .attest(&kernel, &fixture.status(), &nonce)
            .unwrap()
            .to_json();
        let stolen = host.submit(&bundle).await.unwrap();
        assert_eq!(stolen.reason.as_deref(), Some("ak-mismatch"), "{stolen:?}");

        // The VM's bundles carry both pieces of evidence, and all three kinds share a log.
        let cvm = ledger.client("cvm-1");
        let mut source =
            EvidenceSource::open(cvm_config(&vtpm, cvm_state.path()), &vtpm.tpm.tcti()).unwrap();
        let nonce = cvm.nonce().await.unwrap();
        let bundle = source.attest(&kernel, &fixture.status(), &nonce).unwrap();
        assert!(matches!(bundle.evidence, Evidence::TpmSnp(_)));
        let accepted = cvm.submit(&bundle.to_json()).await.unwrap();
        assert_eq!(accepted.verdict, Verdict::Accepted, "{accepted:?}");
        let agents: std::collections::BTreeSet<String> = all_entries(&client)
            .await
            .into_iter()
            .filter(|e| e.verdict == Verdict::Accepted && !is_recorder(&e.agent_id))
            .map(|e| e.agent_id)
            .collect();
        assert_eq!(agents.len(), 3, "{agents:?}");
    });
}
