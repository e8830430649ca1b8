//! A confidential VM with a vTPM (`tpm+snp` evidence) before the ledger's verification:
//! its vTPM (swtpm) enrols by credential activation, a report pins its SEV-SNP chip
//! (simulated Turin), and each binding of the two pieces of evidence to the one envelope,
//! broken alone, is refused with its own reason.

use std::time::SystemTime;

use crate::support::agent::AgentFixture;
use attestor_agent::attest::Agent;
use attestor_agent::config::AgentConfig;
use attestor_agent::snp::SnpReporter;
use attestor_ledger::enroll::{enroll_snp, EnrollError, Enrollment};
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::{AgentRecord, LedgerStore};
use attestor_ledger::submission::{verify_submission, NonceBook, Refusal, TenantPolicy};
use attestor_verify::bundle::{Bundle, Evidence, EvidenceKind, TpmSnpEvidence};
use attestor_verify::checks::{verify_bundle, AkTrust, Check, Expectations};
use attestor_verify::profiles::Profile;

const AGENT: &str = "cvm-1";

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}
const TENANT: &str = "acme";

fn who() -> attestor_net::tls::AgentIdentity {
    attestor_net::tls::AgentIdentity::new(TENANT, AGENT).unwrap()
}

struct Cvm {
    fixture: AgentFixture,
    profile: Profile,
    store: EmbeddedStore,
    nonces: NonceBook,
    _db: tempfile::TempDir,
}

impl Cvm {
    /// The swtpm fixture as a vTPM, with the example `tpm+snp` config's simulated Turin
    /// chip, and a profile of the swtpm's `[tpm]` and the Turin simulation's `[snp]`.
    fn new() -> Cvm {
        let fixture = AgentFixture::new();
        let tpm = std::fs::read_to_string(&fixture.profile_path).unwrap();
        let sim =
            std::fs::read_to_string(root().join("firmware-profiles/snp-sim-turin.toml")).unwrap();
        let snp = sim[sim.find("[snp]").unwrap()..]
            .replace("../examples/", &format!("{}/examples/", root().display()));
        let path = fixture.dir.path().join("cvm-profile.toml");
        std::fs::write(&path, format!("evidence = \"tpm+snp\"\n{tpm}\n{snp}")).unwrap();
        let profile = Profile::load(&path).unwrap();
        assert_eq!(profile.evidence, Some(EvidenceKind::TpmSnp));
        let db = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&db.path().join("ledger.db")).unwrap();
        Cvm {
            fixture,
            profile,
            store,
            nonces: NonceBook::default(),
            _db: db,
        }
    }

    /// The example confidential-VM config, on this fixture's copy of examples/.
    fn config(&self) -> AgentConfig {
        let path = self.fixture.dir.path().join("agent/agent-cvm-sim.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("../target/attestor-state-cvm-sim", "../state");
        let config = AgentConfig::parse(&text, &path).unwrap();
        assert_eq!(config.evidence, EvidenceKind::TpmSnp);
        config
    }

    /// What an offline verifier expects of a bundle committing to `nonce`: the vTPM's AK
    /// pinned by its Name (no enrollment CA certified it here).
    fn offline(&self, nonce: &[u8]) -> Expectations {
        Expectations {
            nonce: nonce.to_vec(),
            ak: AkTrust::Name(self.agent().ak_name().unwrap()),
            ..Default::default()
        }
    }

    fn agent(&self) -> Agent {
        Agent::open(self.config(), &self.fixture.tpm.tcti()).unwrap()
    }

    /// A reporter on the configured chip, or on `examples/snp-sim-turin/<chip>`.
    fn reporter(&self, chip: Option<&str>) -> SnpReporter {
        let mut config = self.config();
        if let Some(chip) = chip {
            let sim = config.snp.as_mut().unwrap().simulation.as_mut().unwrap();
            sim.pki_dir = sim.pki_dir.join(chip);
        }
        SnpReporter::open(&config).unwrap()
    }

    /// A `tpm+snp` bundle made with a fresh ledger nonce, its report from `chip`.
    fn bundle_from(&self, chip: Option<&str>) -> Bundle {
        let nonce = self.nonces.issue(&who()).unwrap();
        self.bundle_with_nonce(chip, &nonce)
    }

    fn bundle_with_nonce(&self, chip: Option<&str>, nonce: &[u8]) -> Bundle {
        let f = &self.fixture;
        self.agent()
            .attest_with_snp(&mut self.reporter(chip), &f.kernel(), &f.status(), nonce)
            .unwrap()
    }

    /// Enrols the vTPM by credential activation, as the ledger does it.
    fn enrol_tpm(&self) -> AgentRecord {
        let enrollment = Enrollment::default();
        let mut agent = self.agent();
        let challenge = enrollment
            .begin(
                &who(),
                agent.enrollment_request().unwrap(),
                &self.profile,
                SystemTime::now(),
            )
            .unwrap();
        let proof = agent.activate(&challenge).unwrap();
        enrollment.finish(&who(), &proof, &self.store, 0).unwrap()
    }

    fn pin_chip(&self, bundle: &Bundle) -> Result<AgentRecord, EnrollError> {
        enroll_snp(
            &who(),
            &bundle.to_json(),
            &self.nonces,
            &self.profile,
            &self.store,
            SystemTime::now(),
        )
    }

    fn submit(&self, bundle: &Bundle) -> Result<(), Refusal> {
        let record = self
            .store
            .agent(TENANT, AGENT)
            .unwrap()
            .expect("the agent is enrolled");
        let tenant = TenantPolicy::new(hex::encode(self.fixture.kernel().policy_hash));
        let now = SystemTime::now();
        let nonce = self.nonces.presented(&who(), &bundle.nonce, now);
        let verdict = verify_submission(bundle, &record, nonce, &self.profile, &tenant, now);
        // Spent once appended, whatever the verdict, as the ledger does.
        if nonce.to_spend() {
            self.nonces.spend(&who(), &bundle.nonce);
        }
        verdict.map(drop)
    }
}

fn both(bundle: &mut Bundle) -> &mut TpmSnpEvidence {
    match &mut bundle.evidence {
        Evidence::TpmSnp(ev) => ev,
        other => panic!("not tpm+snp evidence: {other:?}"),
    }
}

fn reason(result: Result<(), Refusal>) -> String {
    result
        .expect_err("submission was accepted")
        .reason()
        .to_string()
}

#[test]
fn a_cvm_enrols_its_vtpm_then_pins_its_chip_and_each_broken_binding_is_refused() {
    let cvm = Cvm::new();

    // The offline verifier accepts both pieces of evidence under the tpm+snp profile.
    let offline = cvm.bundle_with_nonce(None, b"");
    let verified = verify_bundle(&offline, &cvm.profile, &cvm.offline(b"")).unwrap();
    assert!(verified.tpm().is_some());
    assert_eq!(verified.snp().unwrap().reported_tcb.fmc, Some(2));

    // Pinning a chip needs the vTPM enrolled first.
    let early = cvm.bundle_from(None);
    assert!(matches!(
        cvm.pin_chip(&early),
        Err(EnrollError::TpmNotEnrolled)
    ));
    let record = cvm.enrol_tpm();
    assert_eq!(record.snp_chip_id, None);
    let record = cvm.pin_chip(&cvm.bundle_from(None)).unwrap();
    let chip = record.snp_chip_id.clone().expect("chip pinned");
    assert_eq!(chip[8..], [0; 56], "a Turin chip id");
    assert_eq!(
        cvm.store.agent(TENANT, AGENT).unwrap().unwrap().snp_chip_id,
        Some(chip)
    );

    cvm.submit(&cvm.bundle_from(None)).unwrap();

    // The report bound to another envelope: REPORT_DATA commits to that one.
    let mut bundle = cvm.bundle_from(None);
    both(&mut bundle).snp = both(&mut cvm.bundle_with_nonce(None, &bundle.nonce))
        .snp
        .clone();
    assert_eq!(reason(cvm.submit(&bundle)), "report-binding");

    // The quote bound to another envelope (same sealed key, so the envelope still
    // verifies): its qualifying data commits to that one.
    let mut bundle = cvm.bundle_from(None);
    both(&mut bundle).tpm = both(&mut cvm.bundle_with_nonce(None, &bundle.nonce))
        .tpm
        .clone();
    assert_eq!(reason(cvm.submit(&bundle)), "quote-binding");

    // The SNP report missing: the TPM evidence alone is not what this agent enrolled with.
    let mut bundle = cvm.bundle_from(None);
    bundle.evidence = Evidence::Tpm(both(&mut bundle).tpm.clone());
    assert_eq!(reason(cvm.submit(&bundle)), "evidence-kind");
    // ... and the offline verifier, under a profile requiring both, says the same.
    let e = verify_bundle(&bundle, &cvm.profile, &cvm.offline(&bundle.nonce)).unwrap_err();
    assert_eq!(e.check, Check::EvidenceKind, "{e}");

    // A genuine report from another chip under the same roots than the pinned one.
    let other_chip = cvm.bundle_from(Some("second-chip"));
    verify_bundle(&other_chip, &cvm.profile, &cvm.offline(&other_chip.nonce))
        .expect("the other chip's evidence is itself valid");
    let other_chip = cvm.bundle_from(Some("second-chip"));
    assert_eq!(reason(cvm.submit(&other_chip)), "chip-mismatch");
    // Nor can it be pinned over the first chip without re-enrolling the vTPM.
    assert!(matches!(
        cvm.pin_chip(&cvm.bundle_from(Some("second-chip"))),
        Err(EnrollError::ChipAlreadyPinned)
    ));

    // The report committing to a key other than the sealed key that signed.
    let mut bundle = cvm.bundle_from(None);
    both(&mut bundle).snp.signing_key[10] ^= 1;
    assert_eq!(reason(cvm.submit(&bundle)), "report-binding");

    cvm.submit(&cvm.bundle_from(None)).unwrap();
}

#[test]
fn profiles_name_the_evidence_they_require_and_need_its_sections() {
    // Parsed as if it sat beside the shipped profiles (nothing is written).
    let path = root().join("firmware-profiles/required.toml");
    let sim = std::fs::read_to_string(root().join("firmware-profiles/snp-sim.toml")).unwrap();
    let err = Profile::parse(&format!("evidence = \"tpm+snp\"\n{sim}"), &path).unwrap_err();
    assert!(err.to_string().contains("needs the matching"), "{err}");
    assert!(Profile::parse(&format!("evidence = \"sgx\"\n{sim}"), &path).is_err());
    let snp_only = Profile::parse(&format!("evidence = \"snp\"\n{sim}"), &path).unwrap();
    assert_eq!(snp_only.evidence, Some(EvidenceKind::Snp));
}
