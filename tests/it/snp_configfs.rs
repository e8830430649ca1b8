//! Agents whose secure processor speaks configfs-tsm, on a report entry the SNP simulation
//! serves as the kernel lays it out: an SNP guest attests and verifies (its sealed key from
//! the key source), a guest without `/dev/sev-guest` is told that derived keys need it, and
//! a confidential VM with a vTPM (`tpm+snp`, no derived key needed) picks configfs-tsm by
//! itself (`interface = "auto"`) and verifies end to end; without configfs-tsm, `auto`
//! falls back to the device.

use std::path::{Path, PathBuf};

use crate::support::agent::AgentFixture;
use attestor_agent::collect::{self, PolicyKernelConfig, RuntimeStatus};
use attestor_agent::config::{AgentConfig, SnpInterface};
use attestor_agent::evidence_source::EvidenceSource;
use attestor_agent::snp::{SnpAgent, SnpAgentError};
use attestor_platform::snp::configfs::{ConfigfsTsm, KeySource, ENTRY_NAME};
use attestor_platform::snp::sim::configfs::SimulatedTsm;
use attestor_platform::snp::sim::SimulatedProcessor;
use attestor_platform::snp::DeviceError;
use attestor_verify::bundle::{Bundle, Evidence, EvidenceKind};
use attestor_verify::checks::{verify_bundle, AkTrust, Expectations, Platform};
use attestor_verify::evidence::tpm::credential::ak_name;
use attestor_verify::profiles::Profile;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn config_from(example: &str, state: &Path) -> AgentConfig {
    let path = root().join("examples").join(example);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("../target/attestor-state-snp-sim", state.to_str().unwrap())
        .replace("../target/attestor-state-cvm-sim", state.to_str().unwrap());
    AgentConfig::parse(&text, &path).unwrap()
}

fn kernel(config: &AgentConfig) -> PolicyKernelConfig {
    collect::read_policy_kernel(
        &config.policy_kernel.policy,
        &config.policy_kernel.config_files,
    )
    .unwrap()
}

fn status() -> RuntimeStatus {
    let bytes = std::fs::read(root().join("examples/status.json")).unwrap();
    RuntimeStatus::from_json("status", &bytes).unwrap()
}

/// The configured simulation as a processor: the same chip and launch every time.
fn processor(config: &AgentConfig) -> SimulatedProcessor {
    let sim = config.snp.as_ref().unwrap().simulation.as_ref().unwrap();
    SimulatedProcessor::from_settings(sim).unwrap()
}

/// The configured simulation served at `dir/report/attestor`.
fn serve(config: &AgentConfig, dir: &Path) -> (SimulatedTsm, PathBuf) {
    let report_dir = dir.join("report");
    let sim = SimulatedTsm::start(&report_dir, ENTRY_NAME, processor(config)).unwrap();
    (sim, report_dir)
}

#[test]
fn an_snp_guest_on_configfs_tsm_attests_verifies_and_keeps_its_sealed_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_from("agent-snp-sim.toml", &dir.path().join("state"));
    let (sim, report_dir) = serve(&config, dir.path());
    let open = || {
        let tsm = ConfigfsTsm::open(
            &report_dir,
            KeySource::Processor(Box::new(processor(&config))),
        )
        .unwrap();
        SnpAgent::with_processor(
            Box::new(tsm),
            &config.state_dir,
            config.snp.as_ref().unwrap(),
        )
        .unwrap()
    };
    let mut agent = open();
    let bundle = agent.attest(&kernel(&config), &status(), b"nonce").unwrap();
    assert_eq!(sim.reports_made(), 1);
    let profile = Profile::load(&root().join("firmware-profiles/snp-sim.toml")).unwrap();
    let expect = Expectations {
        nonce: b"nonce".to_vec(),
        ..Default::default()
    };
    let verified = verify_bundle(&bundle, &profile, &expect).unwrap();
    let Platform::Snp(id) = &verified.platform else {
        panic!("not SNP evidence")
    };
    assert_eq!(id.signing_key, agent.signing_key());
    // A restart unseals the same key (the key source is the same launch).
    let key = agent.signing_key().to_vec();
    drop(agent);
    assert_eq!(open().signing_key(), key.as_slice());
}

#[test]
fn an_snp_guest_on_configfs_tsm_without_the_device_is_told_derived_keys_need_it() {
    if Path::new("/dev/sev-guest").exists() {
        panic!("this test expects a machine that is not an SEV-SNP guest");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_from("agent-snp-sim.toml", &dir.path().join("state"));
    let (_sim, report_dir) = serve(&config, dir.path());
    let snp = config.snp.as_mut().unwrap();
    snp.simulation = None;
    snp.interface = SnpInterface::ConfigfsTsm;
    snp.tsm_report_dir = report_dir;
    match SnpAgent::open(&config) {
        Err(SnpAgentError::Device(e @ DeviceError::NoDerivedKeys { .. })) => {
            let text = e.to_string();
            assert!(text.contains("configfs-tsm cannot derive keys"), "{text}");
            assert!(text.contains("/dev/sev-guest does not exist"), "{text}");
        }
        Err(other) => panic!("expected NoDerivedKeys, got {other}"),
        Ok(_) => panic!("opened without a key source"),
    }

    // Without configfs-tsm, `auto` falls back to the device and says what is missing.
    let snp = config.snp.as_mut().unwrap();
    snp.interface = SnpInterface::Auto;
    snp.tsm_report_dir = dir.path().join("no-such-tsm");
    match SnpAgent::open(&config) {
        Err(SnpAgentError::Device(DeviceError::NotSnpGuest(path))) => {
            assert_eq!(path, "/dev/sev-guest")
        }
        Err(other) => panic!("expected NotSnpGuest, got {other}"),
        Ok(_) => panic!("opened without a device"),
    }
}

#[test]
fn a_confidential_vm_picks_configfs_tsm_by_itself_and_verifies_end_to_end() {
    let fixture = AgentFixture::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_from("agent-cvm-sim.toml", &dir.path().join("state"));
    assert_eq!(config.evidence, EvidenceKind::TpmSnp);
    let (sim, report_dir) = serve(&config, dir.path());
    let snp = config.snp.as_mut().unwrap();
    snp.simulation = None;
    assert_eq!(snp.interface, SnpInterface::Auto);
    snp.tsm_report_dir = report_dir;

    let mut source = EvidenceSource::open(config.clone(), &fixture.tpm.tcti()).unwrap();
    let bundle: Bundle = source
        .attest(&kernel(&config), &status(), b"cvm-nonce")
        .unwrap();
    let Evidence::TpmSnp(cvm) = &bundle.evidence else {
        panic!("not tpm+snp evidence: {:?}", bundle.evidence)
    };
    let cvm_tpm = cvm.tpm.clone();
    assert_eq!(sim.reports_made(), 1);

    // A profile of this swtpm's [tpm] and the simulated Turin chip's [snp].
    let tpm = std::fs::read_to_string(&fixture.profile_path).unwrap();
    let turin =
        std::fs::read_to_string(root().join("firmware-profiles/snp-sim-turin.toml")).unwrap();
    let snp = turin[turin.find("[snp]").unwrap()..]
        .replace("../examples/", &format!("{}/examples/", root().display()));
    let path = dir.path().join("cvm-profile.toml");
    std::fs::write(&path, format!("evidence = \"tpm+snp\"\n{tpm}\n{snp}")).unwrap();
    let profile = Profile::load(&path).unwrap();
    let expect = Expectations {
        nonce: b"cvm-nonce".to_vec(),
        // This agent's own AK (its state is not the fixture's), pinned as the ledger would.
        ak: AkTrust::Name(ak_name(&cvm_tpm.ak_public).unwrap()),
        ..Default::default()
    };
    verify_bundle(&bundle, &profile, &expect).unwrap();
}
