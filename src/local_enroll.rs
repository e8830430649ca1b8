//! `attestor enroll --local DIR`: on one machine without a ledger, the enrollment a ledger
//! makes (EK chain, credential activation in this TPM), certified by a local enrollment CA
//! in DIR. The AK certificate is kept beside the AK, so every `attestor attest` carries it
//! and `attestor verify` trusting DIR/enrollment-ca.pem knows the AK is in this TPM.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use attestor_agent::attest::{Agent, AK_CERTIFICATE_FILE};
use attestor_ledger::enroll::Enrollment;
use attestor_ledger::enrollment_ca::{EnrollmentCa, CERT_FILE};
use attestor_net::tls::AgentIdentity;
use attestor_verify::profiles::Profile;

/// What a local enrollment made.
pub(crate) struct LocalEnrollment {
    /// The CA certificate to trust.
    pub(crate) ca_certificate: PathBuf,
    /// Where the AK certificate is kept.
    pub(crate) ak_certificate: PathBuf,
}

/// Enrols `agent`'s AK with the local CA in `ca_dir` (created on first use), checking its
/// EK against `profile` as a ledger would; names `who` in the certificate if given.
pub(crate) fn enroll(
    agent: &mut Agent,
    ca_dir: &Path,
    profile: &Profile,
    who: Option<&AgentIdentity>,
) -> Result<LocalEnrollment, String> {
    std::fs::create_dir_all(ca_dir)
        .map_err(|e| format!("cannot create {}: {e}", ca_dir.display()))?;
    let ca = EnrollmentCa::load_or_create(ca_dir, "local").map_err(|e| e.to_string())?;
    // The challenge book is keyed by identity; a local one needs some identity.
    let key = match who {
        Some(who) => who.clone(),
        None => AgentIdentity::new("local", "local").map_err(|e| e.to_string())?,
    };
    let now = SystemTime::now();
    let enrollment = Enrollment::default();
    let request = agent.enrollment_request().map_err(|e| e.to_string())?;
    let challenge = enrollment
        .begin(&key, request, profile, now)
        .map_err(|e| format!("enrollment refused: {e}"))?;
    let proof = agent.activate(&challenge).map_err(|e| e.to_string())?;
    let proven = enrollment
        .prove(&key, &proof)
        .map_err(|e| format!("enrollment refused: {e}"))?;
    let ek_certificate = proven
        .ek_certificates
        .first()
        .ok_or("enrollment refused: no EK certificate")?;
    let certificate = ca
        .issue(&proven.ak_public, ek_certificate, who, now)
        .map_err(|e| e.to_string())?;
    agent
        .keep_ak_certificate(Some(&certificate))
        .map_err(|e| e.to_string())?;
    Ok(LocalEnrollment {
        ca_certificate: ca_dir.join(CERT_FILE),
        ak_certificate: agent.state_dir().join(AK_CERTIFICATE_FILE),
    })
}
