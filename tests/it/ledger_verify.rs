//! The ledger's verification pipeline on real swtpm bundles: each refusal has its reason.

use std::time::{Duration, SystemTime};

use crate::support::agent::AgentFixture;
use attestor_ledger::enroll::Enrollment;
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::AgentRecord;
use attestor_ledger::submission::{
    accepted_state, verify_submission, NonceBook, Refusal, TenantPolicy,
};
use attestor_net::tls::AgentIdentity;
use attestor_verify::appraisal::ApprovedPolicyHash;
use attestor_verify::bundle::Bundle;

fn agent() -> AgentIdentity {
    AgentIdentity::new("tenant-a", "agent-1").unwrap()
}

struct Ledger {
    fixture: AgentFixture,
    nonces: NonceBook,
    record: AgentRecord,
    tenant: TenantPolicy,
}

impl Ledger {
    /// An agent enrolled through credential activation, as the ledger does it.
    fn new() -> Ledger {
        let fixture = AgentFixture::new();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("ledger.db")).unwrap();
        let enrollment = Enrollment::default();
        let mut agent = fixture.agent();
        let challenge = enrollment
            .begin(
                &self::agent(),
                agent.enrollment_request().unwrap(),
                &fixture.profile,
                SystemTime::now(),
            )
            .unwrap();
        let proof = agent.activate(&challenge).unwrap();
        let record = enrollment
            .finish(&self::agent(), &proof, &store, 0)
            .unwrap();
        let tenant = TenantPolicy::new(hex::encode(fixture.kernel().policy_hash));
        Ledger {
            fixture,
            nonces: NonceBook::default(),
            record,
            tenant,
        }
    }

    fn fresh_bundle(&self) -> Bundle {
        let nonce = self.nonces.issue(&agent()).unwrap();
        self.fixture.attest_with_nonce(&nonce)
    }

    /// Judges a submission as the ledger does, and spends its nonce as the ledger does
    /// once the entry is appended, whatever the verdict.
    fn submit_at(&mut self, bundle: &Bundle, now: SystemTime) -> Result<(), Refusal> {
        let nonce = self.nonces.presented(&agent(), &bundle.nonce, now);
        let verdict = verify_submission(
            bundle,
            &self.record,
            nonce,
            &self.fixture.profile,
            &[ApprovedPolicyHash::always(&self.tenant.policy_hash)],
            now,
        );
        if nonce.to_spend() {
            self.nonces.spend(&agent(), &bundle.nonce);
        }
        self.record.last_accepted = Some(accepted_state(&verdict?));
        Ok(())
    }

    fn submit(&mut self, bundle: &Bundle) -> Result<(), Refusal> {
        self.submit_at(bundle, SystemTime::now())
    }
}

fn reason(r: Result<(), Refusal>) -> &'static str {
    r.expect_err("submission was accepted").reason()
}

#[test]
fn a_fresh_bundle_is_accepted_and_a_replay_is_refused() {
    let mut ledger = Ledger::new();
    let bundle = ledger.fresh_bundle();
    ledger.submit(&bundle).unwrap();
    assert_eq!(reason(ledger.submit(&bundle)), "nonce");
    // A bundle made offline (no nonce) or with a nonce the ledger never issued.
    let offline = ledger.fixture.attest();
    assert_eq!(reason(ledger.submit(&offline)), "nonce");
    let forged_nonce = ledger.fixture.attest_with_nonce(&[7; 32]);
    assert_eq!(reason(ledger.submit(&forged_nonce)), "nonce");
}

#[test]
fn a_reordered_submission_is_refused_by_the_tpm_clock() {
    let mut ledger = Ledger::new();
    let older = ledger.fresh_bundle();
    std::thread::sleep(Duration::from_millis(20));
    let newer = ledger.fresh_bundle();
    ledger.submit(&newer).unwrap();
    assert_eq!(reason(ledger.submit(&older)), "clock-regression");
}

#[test]
fn content_and_evidence_refusals_name_their_check() {
    let mut ledger = Ledger::new();
    let bundle = ledger.fresh_bundle();
    let late = SystemTime::now() + Duration::from_secs(400);
    assert_eq!(reason(ledger.submit_at(&bundle, late)), "freshness");

    let mut forged = ledger.fresh_bundle();
    let sig = &mut forged.envelope.signatures[0].sig;
    let last = sig.len() - 1;
    sig[last] ^= 1;
    assert_eq!(reason(ledger.submit(&forged)), "envelope-signature");

    ledger.tenant.policy_hash = "00".repeat(32);
    let other_policy = ledger.fresh_bundle();
    assert_eq!(reason(ledger.submit(&other_policy)), "policy-hash");
}

#[test]
fn a_zero_retention_flip_is_reported_as_drift() {
    let mut ledger = Ledger::new();
    ledger.submit(&ledger.fresh_bundle()).unwrap();
    let policy = ledger.fixture.policy_file();
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("zero_retention = true", "zero_retention = false"),
    )
    .unwrap();
    // An operator reseals the agent to the new configuration; the ledger still refuses.
    ledger
        .fixture
        .agent()
        .reseal(&ledger.fixture.kernel())
        .unwrap();
    let flipped = ledger.fresh_bundle();
    assert_eq!(reason(ledger.submit(&flipped)), "zero-retention-drift");
}

/// Unknown agents never reach `verify_submission`: the ledger refuses them before keeping
/// their body (tests/ledger_security.rs).
#[test]
fn revoked_and_foreign_agents_are_refused() {
    let mut ledger = Ledger::new();
    // Agent B's TPM, submitting under agent A's enrollment (same EK CA, other AK).
    let foreign = AgentFixture::with_tpm(crate::support::Swtpm::start());
    let nonce = ledger.nonces.issue(&agent()).unwrap();
    let foreign_bundle = foreign.attest_with_nonce(&nonce);
    assert_eq!(reason(ledger.submit(&foreign_bundle)), "ak-mismatch");

    ledger.record.revoked = true;
    assert_eq!(reason(ledger.submit(&ledger.fresh_bundle())), "revoked");
}
