//! An agent on a private swtpm: a private copy of `examples/` (so a test may change the
//! policy kernel's configuration), and the shipped swtpm profile pointed at that swtpm's CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use attestor_agent::attest::Agent;
use attestor_agent::collect::{self, PolicyKernelConfig, RuntimeStatus};
use attestor_agent::config::AgentConfig;
use attestor_verify::bundle::{Bundle, Evidence, TpmEvidence};
use attestor_verify::checks::{AkTrust, Expectations};
use attestor_verify::dsse;
use attestor_verify::evidence::tpm::{wire, HashAlg};
use attestor_verify::profiles::Profile;

use super::Swtpm;

/// One swtpm and an agent configured against it.
pub struct AgentFixture {
    pub tpm: Swtpm,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub profile_path: PathBuf,
    pub profile: Profile,
}

impl AgentFixture {
    /// A fixture on a fresh swtpm whose EK chains to the harness CA.
    pub fn new() -> AgentFixture {
        Self::with_tpm(Swtpm::start())
    }

    /// A fixture on the given swtpm.
    pub fn with_tpm(tpm: Swtpm) -> AgentFixture {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&root.join("examples"), &dir.path().join("agent"));
        let config_path = dir.path().join("agent/agent.toml");
        let text = std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("../target/attestor-state", "../state");
        std::fs::write(&config_path, text).unwrap();
        let profile_path = dir.path().join("profile.toml");
        write_swtpm_profile(&tpm, &profile_path);
        let profile = Profile::load(&profile_path).unwrap();
        AgentFixture {
            tpm,
            dir,
            config_path,
            profile_path,
            profile,
        }
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig::load(&self.config_path).unwrap()
    }

    pub fn agent(&self) -> Agent {
        Agent::open(self.config(), &self.tpm.tcti()).unwrap()
    }

    pub fn kernel(&self) -> PolicyKernelConfig {
        let c = self.config();
        collect::read_policy_kernel(&c.policy_kernel.policy, &c.policy_kernel.config_files).unwrap()
    }

    pub fn status(&self) -> RuntimeStatus {
        let bytes = std::fs::read(self.dir.path().join("agent/status.json")).unwrap();
        RuntimeStatus::from_json("status", &bytes).unwrap()
    }

    /// One bundle, committing to `nonce`.
    pub fn attest_with_nonce(&self, nonce: &[u8]) -> Bundle {
        self.agent()
            .attest(&self.kernel(), &self.status(), nonce)
            .unwrap()
    }

    /// One bundle made offline (no nonce).
    pub fn attest(&self) -> Bundle {
        self.attest_with_nonce(b"")
    }

    /// Expectations matching the example policy, with this TPM's AK pinned by its Name
    /// (as `attestor verify --ak-name` pins it).
    pub fn expect(&self) -> Expectations {
        Expectations {
            policy_hash: Some(hex::encode(self.kernel().policy_hash)),
            ak: AkTrust::Name(self.ak_name()),
            ..Expectations::default()
        }
    }

    /// The TPM Name of this TPM's AK.
    pub fn ak_name(&self) -> Vec<u8> {
        self.agent().ak_name().unwrap()
    }

    /// The policy kernel's non-policy configuration file.
    pub fn kernel_config_file(&self) -> PathBuf {
        self.dir.path().join("agent/policy-kernel/kernel.toml")
    }

    /// Replaces the policy document and reseals to it, as an operator approving the
    /// change would (or an attacker with root forcing it).
    pub fn reseal_with_policy(&self, policy: &str) {
        std::fs::write(self.policy_file(), policy).unwrap();
        self.agent().reseal(&self.kernel()).unwrap();
    }

    /// The policy document.
    pub fn policy_file(&self) -> PathBuf {
        self.dir.path().join("agent/policy-kernel/policy.toml")
    }
}

/// The TPM evidence of a bundle.
pub fn tpm_ev(bundle: &Bundle) -> &TpmEvidence {
    match &bundle.evidence {
        Evidence::Tpm(ev) => ev,
        other => panic!("not TPM evidence: {other:?}"),
    }
}

/// The TPM evidence of a bundle, to tamper with.
pub fn tpm_ev_mut(bundle: &mut Bundle) -> &mut TpmEvidence {
    match &mut bundle.evidence {
        Evidence::Tpm(ev) => ev,
        other => panic!("not TPM evidence: {other:?}"),
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped swtpm profile, trusting `tpm`'s CA instead of the machine's local CA.
pub fn write_swtpm_profile(tpm: &Swtpm, out: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles/swtpm.toml");
    let text = std::fs::read_to_string(shipped)
        .unwrap()
        .replace(
            "/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem",
            tpm.ca_root_pem().to_str().unwrap(),
        )
        .replace(
            "/var/lib/swtpm-localca/issuercert.pem",
            tpm.ca_intermediate_pem().to_str().unwrap(),
        );
    std::fs::write(out, text).unwrap();
}

/// tpm2_checkquote accepts the bundle's quote, and refuses it for another commitment.
pub fn tpm2_checkquote_accepts(bundle: &Bundle, ak_hash: HashAlg) {
    let ev = tpm_ev(bundle);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut ak_tpm2b = u16::try_from(ev.ak_public.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    ak_tpm2b.extend(&ev.ak_public);
    std::fs::write(dir.join("ak.pub"), ak_tpm2b).unwrap();
    std::fs::write(dir.join("quote.msg"), &ev.quote.attest).unwrap();
    std::fs::write(dir.join("quote.sig"), &ev.quote.signature).unwrap();
    let selection = match wire::parse_attest(&ev.quote.attest).unwrap().attested {
        wire::Attested::Quote { pcr_select, .. } => pcr_select,
        _ => panic!("not a quote"),
    };
    assert!(selection.iter().all(|s| s.bank == ev.pcr_bank));
    let values: Vec<Vec<u8>> = ev.pcrs.values().map(|v| hex::decode(v).unwrap()).collect();
    std::fs::write(
        dir.join("quote.pcrs"),
        wire::tpm2_tools_pcr_file(&selection, &values).unwrap(),
    )
    .unwrap();
    let pae = dsse::pae(&bundle.envelope.payload_type, &bundle.envelope.payload);
    let qualifying = attestor_verify::evidence::tpm_commitment(&bundle.nonce, &pae);
    let run = |qualifying: &[u8]| {
        Command::new("tpm2_checkquote")
            .args(["-u", "ak.pub", "-m", "quote.msg", "-s", "quote.sig"])
            .args(["-f", "quote.pcrs", "-g", ak_hash.name()])
            .args(["-q", &hex::encode(qualifying)])
            .current_dir(dir)
            .output()
            .expect("tpm2_checkquote (tpm2-tools) must be installed: run scripts/test.sh")
    };
    let ok = run(&qualifying);
    assert!(
        ok.status.success(),
        "tpm2_checkquote refused: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!run(&[0u8; 32]).status.success());
}
