//! Enrollment: before its attestations count, an agent proves that its AK lives in a
//! genuine TPM. The ledger checks the EK certificate chain against the profile, that the
//! EK public area it will encrypt to is the certified key, and the AK's attributes; then
//! it encrypts a random secret to that EK, bound to the AK's Name (MakeCredential). Only
//! that TPM, holding both keys, can recover it. The AK is pinned once the secret returns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::store::{AgentRecord, LedgerStore, StoreError};
use crate::submission::{NonceBook, NonceCheck};
use attestor_net::tls::AgentIdentity;
use attestor_verify::api::{EnrollChallenge, EnrollProof, EnrollRequest, EnrolledTpm};
use attestor_verify::bundle::Bundle;
use attestor_verify::checks::{
    attestation_key, check_ek_allowed, check_strength, verify_bundle, AkTrust, Check, Expectations,
    Platform, VerifyError,
};
use attestor_verify::evidence::certchain::{self, CertChainError};
use attestor_verify::evidence::tpm::credential::{self, CredentialError};
use attestor_verify::evidence::tpm::keys::{
    ek_public_key_sha256, parse_tpm_public, KeyError, SigningAlgorithm,
};
use attestor_verify::evidence::tpm::wire;
use attestor_verify::profiles::Profile;

/// How long an agent has to answer its credential challenge.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Outstanding challenges kept at most (oldest dropped first), bounding memory.
pub const MAX_PENDING: usize = 10_000;

/// Why an enrollment is refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error("the request carries no EK certificate, and {0}")]
    EkNotAllowed(String),
    #[error("the profile trusts no EK CA (only its EK allow-list), yet the request carries an EK certificate")]
    NoEkTrustAnchors,
    #[error("the EK public area: {0}")]
    EkKey(#[from] KeyError),
    #[error("EK certificate chain: {0}")]
    EkChain(#[from] CertChainError),
    #[error("the EK public area is not the key of the EK certificate")]
    EkMismatch,
    #[error("EK public area: {0}")]
    EkPublic(#[from] wire::WireError),
    #[error("profile {0:?} has no [tpm] section: TPM agents cannot enrol against it")]
    NoTpmProfile(String),
    #[error(transparent)]
    AttestationKey(#[from] VerifyError),
    #[error("cannot make the credential challenge: {0}")]
    Credential(#[from] CredentialError),
    #[error("no pending challenge for this agent (expired, already answered, or never issued)")]
    NoPendingChallenge,
    #[error("the returned secret is wrong: the AK is not in the TPM of the certified EK")]
    SecretMismatch,
    #[error("agent {0:?} is revoked; re-enrollment needs an operator")]
    Revoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("SEV-SNP enrollment needs a bundle with SEV-SNP evidence: {0}")]
    NotSnp(String),
    #[error("the enrollment bundle's nonce was not issued to this agent, was used, or expired")]
    Nonce,
    #[error(
        "tpm+snp evidence pins an SEV-SNP chip to an agent enrolled by its TPM: complete the \
         TPM enrollment first (its AK must be the one that quoted)"
    )]
    TpmNotEnrolled,
    #[error("the agent's pinned SEV-SNP chip is another one; re-enrol its TPM first")]
    ChipAlreadyPinned,
}

/// Enrols an SEV-SNP guest in one step: its bundle, made with a nonce this ledger issued,
/// must pass every check of the profile; the report then vouches (REPORT_DATA) that the
/// envelope's signing key lives in a guest of an allowed launch on a genuine AMD chip. The
/// chip id and that key are pinned.
///
/// A `tpm+snp` bundle (a confidential VM with a vTPM) instead completes a TPM enrollment:
/// the agent's AK, pinned by credential activation, must have made its quote, and the
/// report's chip is pinned besides it.
pub fn enroll_snp(
    who: &AgentIdentity,
    bundle: &[u8],
    nonces: &NonceBook,
    profile: &Profile,
    store: &dyn LedgerStore,
    now: SystemTime,
) -> Result<AgentRecord, EnrollError> {
    let bundle = Bundle::from_json(bundle).map_err(|e| EnrollError::NotSnp(e.to_string()))?;
    // An SNP report has no clock to refuse a replay with: only a nonce spent here will do.
    if nonces.take(who, &bundle.nonce, now) != NonceCheck::Issued {
        return Err(EnrollError::Nonce);
    }
    let expect = Expectations {
        policy_hash: None,
        nonce: bundle.nonce.clone(),
        now: Some(now),
        evidence: None,
        // A vTPM's AK must be the one credential activation pinned (compared below).
        ak: AkTrust::PinnedByCaller,
    };
    let verified = verify_bundle(&bundle, profile, &expect)?;
    let snp = match verified.platform {
        Platform::Snp(snp) => snp,
        Platform::TpmSnp(tpm, snp) => {
            let mut record = store
                .agent(&who.tenant, &who.agent_id)?
                .filter(|a| a.ak_public == tpm.ak_public)
                .ok_or(EnrollError::TpmNotEnrolled)?;
            if record
                .snp_chip_id
                .as_ref()
                .is_some_and(|c| *c != snp.chip_id)
            {
                return Err(EnrollError::ChipAlreadyPinned);
            }
            record.snp_chip_id = Some(snp.chip_id);
            return pin(store, record);
        }
        Platform::Tpm(_) => return Err(EnrollError::NotSnp("it carries TPM evidence".into())),
    };
    let now_ms = attestor_verify::time::unix_ms(now);
    let record = AgentRecord::enrolled(who, snp.chip_id, snp.signing_key, now_ms);
    pin(store, record)
}

/// Records an enrolled agent unless an operator revoked it.
fn pin(store: &dyn LedgerStore, record: AgentRecord) -> Result<AgentRecord, EnrollError> {
    if store
        .agent(&record.tenant, &record.agent_id)?
        .is_some_and(|a| a.revoked)
    {
        return Err(EnrollError::Revoked(record.agent_id));
    }
    store.put_agent(&record)?;
    Ok(record)
}

struct Pending {
    request: EnrollRequest,
    secret: Vec<u8>,
    issued: Instant,
}

/// Challenges issued and not yet answered.
#[derive(Default)]
pub struct Enrollment {
    pending: Mutex<HashMap<AgentIdentity, Pending>>,
}

impl Enrollment {
    /// Checks the request and returns the credential challenge for `who`.
    pub fn begin(
        &self,
        who: &AgentIdentity,
        request: EnrollRequest,
        profile: &Profile,
        now: SystemTime,
    ) -> Result<EnrollChallenge, EnrollError> {
        let tpm = profile
            .tpm
            .as_ref()
            .ok_or_else(|| EnrollError::NoTpmProfile(profile.name.clone()))?;
        let ek = parse_tpm_public(&request.ek_public)?;
        match request.ek_certificates.split_first() {
            Some((ek_leaf, intermediates)) => {
                if tpm.ek_trust_anchors.is_empty() {
                    return Err(EnrollError::NoEkTrustAnchors);
                }
                let mut pool = intermediates.to_vec();
                pool.extend(tpm.ek_intermediates.iter().cloned());
                let chain = certchain::verify_chain(ek_leaf, &pool, &tpm.ek_trust_anchors, now)?;
                if !ek.matches_certificate(chain.leaf())? {
                    return Err(EnrollError::EkMismatch);
                }
            }
            // A TPM without EK certificate: only the profile's allow-list vouches for it.
            None => {
                check_ek_allowed(&request.ek_public, tpm).map_err(EnrollError::EkNotAllowed)?;
            }
        }
        let ak = attestation_key(&request.ak_public)?;
        check_strength(ak.algorithm(), tpm, Check::AttestationKey, "AK")?;
        let (secret, made) = credential::challenge_for(&request.ek_public, &request.ak_public)?;

        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.issued.elapsed() < CHALLENGE_TTL);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.issued)
                .map(|(who, _)| who.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            who.clone(),
            Pending {
                request,
                secret,
                issued: Instant::now(),
            },
        );
        Ok(EnrollChallenge {
            credential_blob: made.credential_blob,
            encrypted_secret: made.encrypted_secret,
        })
    }

    /// Checks the proof; on success records the agent with its AK pinned. The challenge
    /// is consumed either way: a wrong answer needs a new challenge.
    pub fn finish(
        &self,
        who: &AgentIdentity,
        proof: &EnrollProof,
        store: &dyn LedgerStore,
        now_ms: u64,
    ) -> Result<AgentRecord, EnrollError> {
        let request = self.prove(who, proof)?;
        let ek_certificate = request
            .ek_certificates
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut record = AgentRecord::enrolled(who, ek_certificate, request.ak_public, now_ms);
        record.ek_public = Some(request.ek_public);
        pin(store, record)
    }

    /// Checks the proof against `who`'s pending challenge (consuming it either way) and
    /// returns the request it answers: its AK is then proven to be in the TPM of its
    /// certified EK. [`Enrollment::finish`] pins it; a local enrollment only certifies it.
    pub fn prove(
        &self,
        who: &AgentIdentity,
        proof: &EnrollProof,
    ) -> Result<EnrollRequest, EnrollError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(who)
            .filter(|p| p.issued.elapsed() < CHALLENGE_TTL)
            .ok_or(EnrollError::NoPendingChallenge)?;
        if !credential::secret_matches(&pending.secret, &proof.secret) {
            return Err(EnrollError::SecretMismatch);
        }
        Ok(pending.request)
    }
}

/// What the record says of an enrolled agent's TPM keys; `None` for an agent without a
/// recorded EK (SEV-SNP alone, or enrolled before the ledger recorded EKs).
pub fn enrolled_tpm(record: &AgentRecord) -> Option<EnrolledTpm> {
    let ek_public = record.ek_public.as_ref()?;
    let ek = parse_tpm_public(ek_public).ok()?;
    let ak = parse_tpm_public(&record.ak_public).ok()?;
    Some(EnrolledTpm {
        ak_algorithm: SigningAlgorithm::of(&ak).ok()?,
        ek_key: ek.key_name(),
        ek_public_key_sha256: hex::encode(ek_public_key_sha256(ek_public).ok()?),
        ek_trusted_by: if record.ek_certificate.is_empty() {
            "allowlist"
        } else {
            "certificate"
        }
        .into(),
    })
}
