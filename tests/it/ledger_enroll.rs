//! Enrollment on real swtpm TPMs: EK chain, EK binding, credential activation, AK pinning.

use std::time::SystemTime;

use crate::support::agent::{tpm_ev, AgentFixture};
use crate::support::Swtpm;
use attestor_agent::attest::Agent;
use attestor_ledger::enroll::{EnrollError, Enrollment};
use attestor_ledger::store::embedded::EmbeddedStore;
use attestor_ledger::store::LedgerStore;
use attestor_net::tls::AgentIdentity;
use attestor_verify::api::EnrollChallenge;

const AGENT: &str = "agent-1";
const TENANT: &str = "tenant-a";

fn who() -> AgentIdentity {
    AgentIdentity::new(TENANT, AGENT).unwrap()
}

/// The agent's enrollment request, answered with a challenge by the ledger.
fn begin_enrollment(
    enrollment: &Enrollment,
    agent: &mut Agent,
    fixture: &AgentFixture,
) -> EnrollChallenge {
    enrollment
        .begin(
            &who(),
            agent.enrollment_request().unwrap(),
            &fixture.profile,
            SystemTime::now(),
        )
        .unwrap()
}

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("ledger.db")).unwrap();
    (dir, store)
}

#[test]
fn an_agent_enrols_and_its_ak_is_pinned() {
    let fixture = AgentFixture::new();
    let (_dir, store) = store();
    let enrollment = Enrollment::default();
    let mut agent = fixture.agent();
    let request = agent.enrollment_request().unwrap();
    let challenge = enrollment
        .begin(&who(), request, &fixture.profile, SystemTime::now())
        .unwrap();
    let proof = agent.activate(&challenge).unwrap();
    let record = enrollment.finish(&who(), &proof, &store, 1_000).unwrap();
    assert_eq!(store.agent(TENANT, AGENT).unwrap().unwrap(), record);
    // The pinned AK is the one this agent's bundles are signed with.
    let bundle = fixture.attest();
    assert_eq!(record.ak_public, tpm_ev(&bundle).ak_public);
    // The challenge is single-use.
    assert!(matches!(
        enrollment.finish(&who(), &proof, &store, 2_000),
        Err(EnrollError::NoPendingChallenge)
    ));
}

#[test]
fn a_wrong_secret_or_tenant_is_refused_and_consumes_the_challenge() {
    let fixture = AgentFixture::new();
    let (_dir, store) = store();
    let enrollment = Enrollment::default();
    let mut agent = fixture.agent();
    let challenge = begin_enrollment(&enrollment, &mut agent, &fixture);
    let mut proof = agent.activate(&challenge).unwrap();
    proof.secret[0] ^= 1;
    assert!(matches!(
        enrollment.finish(&who(), &proof, &store, 1),
        Err(EnrollError::SecretMismatch)
    ));
    proof.secret[0] ^= 1;
    assert!(matches!(
        enrollment.finish(&who(), &proof, &store, 1),
        Err(EnrollError::NoPendingChallenge)
    ));
    let challenge = begin_enrollment(&enrollment, &mut agent, &fixture);
    let proof = agent.activate(&challenge).unwrap();
    assert!(matches!(
        enrollment.finish(
            &AgentIdentity::new("tenant-b", AGENT).unwrap(),
            &proof,
            &store,
            1
        ),
        Err(EnrollError::NoPendingChallenge)
    ));
    assert!(store.agent(TENANT, AGENT).unwrap().is_none());
}

#[test]
fn an_ak_from_another_tpm_cannot_answer() {
    // Agent A presents TPM B's AK with its own (genuine) EK: the challenge is bound to
    // B's AK Name, which TPM A does not hold, so A cannot activate it.
    let a = AgentFixture::new();
    let b = AgentFixture::new();
    let enrollment = Enrollment::default();
    let mut agent_a = a.agent();
    let mut request = agent_a.enrollment_request().unwrap();
    request.ak_public = b.agent().enrollment_request().unwrap().ak_public;
    let challenge = enrollment
        .begin(&who(), request, &a.profile, SystemTime::now())
        .unwrap();
    assert!(agent_a.activate(&challenge).is_err());
}

#[test]
fn untrusted_or_mismatched_eks_and_unsuitable_aks_are_refused() {
    let ours = AgentFixture::new();
    let foreign = AgentFixture::with_tpm(Swtpm::start_with_own_ca());
    let enrollment = Enrollment::default();
    let begin = |request| enrollment.begin(&who(), request, &ours.profile, SystemTime::now());

    // EK certificate from a CA the profile does not trust.
    let foreign_request = foreign.agent().enrollment_request().unwrap();
    assert!(matches!(
        begin(foreign_request.clone()),
        Err(EnrollError::EkChain(_))
    ));

    // A trusted EK certificate, but the public area of another EK (whose owner could
    // then answer the challenge).
    let mut request = ours.agent().enrollment_request().unwrap();
    request.ek_public = foreign_request.ek_public.clone();
    assert!(matches!(begin(request), Err(EnrollError::EkMismatch)));

    // No EK certificate at all, and a profile without an EK allow-list.
    let mut request = ours.agent().enrollment_request().unwrap();
    request.ek_certificates.clear();
    assert!(matches!(begin(request), Err(EnrollError::EkNotAllowed(_))));

    // An "AK" that is not a restricted signing key: the sealed key.
    let mut request = ours.agent().enrollment_request().unwrap();
    request.ak_public = tpm_ev(&ours.attest()).sealed_key.public.clone();
    assert!(matches!(
        begin(request),
        Err(EnrollError::AttestationKey(_))
    ));

    // Garbage public areas are errors, not panics.
    let mut request = ours.agent().enrollment_request().unwrap();
    request.ek_public = vec![0xff; 7];
    assert!(begin(request).is_err());
}

#[test]
fn a_revoked_agent_cannot_re_enrol() {
    let fixture = AgentFixture::new();
    let (_dir, store) = store();
    let enrollment = Enrollment::default();
    let mut agent = fixture.agent();
    let enrol = |agent: &mut Agent| {
        let challenge = begin_enrollment(&enrollment, agent, &fixture);
        let proof = agent.activate(&challenge).unwrap();
        enrollment.finish(&who(), &proof, &store, 5)
    };
    enrol(&mut agent).unwrap();
    store.revoke_agent(TENANT, AGENT).unwrap();
    assert!(matches!(enrol(&mut agent), Err(EnrollError::Revoked(_))));
}
