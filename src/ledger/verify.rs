//! The ledger's verification of a submission: every check of the offline verifier
//! ([`crate::verify`]), plus what only a stateful verifier can check: the AK pinned at
//! enrollment, a single-use nonce it issued, zero-retention unchanged since the agent's
//! previous attestation, and a TPM clock that never runs backwards within one boot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

use crate::bundle::EvidenceKind;
use crate::bundle::{Bundle, BundleError};
use crate::ledger::store::{AcceptedState, AgentRecord};
use crate::profiles::Profile;
use crate::verify::{
    check_policy_hash, verify_bundle, Check, Expectations, Platform, Verified, VerifyError,
};

/// How long an issued nonce may be used.
pub const NONCE_TTL: Duration = Duration::from_secs(120);
/// Outstanding nonces per agent; older ones are dropped first.
pub const MAX_NONCES_PER_AGENT: usize = 4;
/// Bytes of randomness in a nonce.
pub const NONCE_LEN: usize = 32;
/// Marks a nonce the agent made itself because the ledger was unreachable. Such a
/// spooled attestation proves no freshness beyond its own timestamp: it is accepted only
/// within the freshness window and only if its TPM clock is past the agent's last accepted
/// quote, which is what refuses its replay.
pub const OFFLINE_NONCE_PREFIX: &[u8] = b"attestor-offline:";

/// Why the ledger refuses a submission. Every refusal is itself logged.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error(transparent)]
    Malformed(#[from] BundleError),
    #[error("tenant {0:?} is not configured on this ledger")]
    UnknownTenant(String),
    #[error("agent {0:?} is not enrolled")]
    UnknownAgent(String),
    #[error("agent {0:?} is revoked")]
    Revoked(String),
    #[error("nonce was not issued to this agent, was already used, or expired")]
    Nonce,
    #[error(transparent)]
    Evidence(#[from] VerifyError),
    #[error("the evidence is signed by a key other than the one enrolled")]
    AkMismatch,
    #[error("the SEV-SNP report comes from a chip other than the one pinned at enrollment")]
    ChipMismatch,
    #[error(
        "an offline nonce needs a TPM clock to order attestations; SEV-SNP attestations must \
         carry a ledger nonce"
    )]
    OfflineWithoutClock,
    #[error("zero_retention changed from {previous} to {now} since the previous attestation")]
    ZeroRetentionDrift { previous: bool, now: bool },
    #[error("TPM clock went backwards within one boot (replayed or reordered quote)")]
    ClockRegression,
}

impl Refusal {
    /// Stable kebab-case reason for logs, metrics and queries.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownTenant(_) => "unknown-tenant",
            Refusal::UnknownAgent(_) => "unknown-agent",
            Refusal::Revoked(_) => "revoked",
            Refusal::Nonce => "nonce",
            Refusal::Evidence(e) => e.check.name(),
            Refusal::AkMismatch => "ak-mismatch",
            Refusal::ChipMismatch => "chip-mismatch",
            Refusal::OfflineWithoutClock => "nonce",
            Refusal::ZeroRetentionDrift { .. } => "zero-retention-drift",
            Refusal::ClockRegression => "clock-regression",
        }
    }
}

/// A nonce and when it was issued.
type IssuedNonce = ([u8; NONCE_LEN], Instant);

/// Single-use, short-lived nonces, per agent. Kept in memory: after a ledger restart
/// agents simply ask for new ones.
#[derive(Default)]
pub struct NonceBook {
    issued: Mutex<HashMap<String, Vec<IssuedNonce>>>,
}

impl NonceBook {
    /// Issues a fresh nonce to `agent_id`.
    pub fn issue(&self, agent_id: &str) -> Result<[u8; NONCE_LEN], aws_lc_rs::error::Unspecified> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce)?;
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let list = issued.entry(agent_id.to_string()).or_default();
        list.retain(|(_, at)| at.elapsed() < NONCE_TTL);
        if list.len() >= MAX_NONCES_PER_AGENT {
            list.remove(0);
        }
        list.push((nonce, Instant::now()));
        Ok(nonce)
    }

    /// Consumes `nonce` if it was issued to `agent_id` and has not expired.
    pub fn take(&self, agent_id: &str, nonce: &[u8]) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = issued.get_mut(agent_id) else {
            return false;
        };
        let Some(pos) = list.iter().position(|(n, _)| n.as_slice() == nonce) else {
            return false;
        };
        let (_, at) = list.remove(pos);
        at.elapsed() < NONCE_TTL
    }
}

/// What a tenant expects of its agents.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    /// Required `policy_hash` (hex).
    pub policy_hash: String,
}

/// Verifies one submission of an enrolled agent. A ledger nonce is consumed whatever the
/// outcome, so a refused submission cannot be retried with the same evidence; an offline
/// nonce ([`OFFLINE_NONCE_PREFIX`]) relies on the freshness window and the TPM clock.
pub fn verify_submission(
    bundle: &Bundle,
    agent: Option<&AgentRecord>,
    agent_id: &str,
    nonces: &NonceBook,
    profile: &Profile,
    tenant: &TenantPolicy,
    now: SystemTime,
) -> Result<Verified, Refusal> {
    let agent = agent.ok_or_else(|| Refusal::UnknownAgent(agent_id.to_string()))?;
    if agent.revoked {
        return Err(Refusal::Revoked(agent_id.to_string()));
    }
    if !bundle.nonce.starts_with(OFFLINE_NONCE_PREFIX) && !nonces.take(agent_id, &bundle.nonce) {
        return Err(Refusal::Nonce);
    }
    // The policy hash is checked last: a zero_retention flip changes the policy too, and
    // must be reported as the drift it is.
    // An agent enrolled with a pinned SNP chip besides its vTPM must always bring both.
    let expect = Expectations {
        policy_hash: None,
        nonce: bundle.nonce.clone(),
        now: Some(now),
        evidence: agent.snp_chip_id.as_ref().map(|_| EvidenceKind::TpmSnp),
    };
    let verified = verify_bundle(bundle, profile, &expect)?;
    check_pinned(&verified, agent)?;
    if bundle.nonce.starts_with(OFFLINE_NONCE_PREFIX) && verified.tpm_clock().is_none() {
        return Err(Refusal::OfflineWithoutClock);
    }
    if let Some(previous) = &agent.last_accepted {
        check_continuity(previous, &verified)?;
    }
    check_policy_hash(&verified.claims, &tenant.policy_hash)?;
    Ok(verified)
}

/// The key pinned at enrollment signed this evidence: a TPM's AK, or an SEV-SNP guest's
/// signing key on the same chip; with both, the AK and the pinned chip (see
/// [`AgentRecord`]).
fn check_pinned(verified: &Verified, agent: &AgentRecord) -> Result<(), Refusal> {
    let (key, chip) = match &verified.platform {
        Platform::Tpm(tpm) => (tpm.ak_public == agent.ak_public, true),
        Platform::Snp(snp) => (
            snp.signing_key == agent.ak_public,
            snp.chip_id == agent.ek_certificate,
        ),
        Platform::TpmSnp(tpm, snp) => {
            let Some(pinned_chip) = &agent.snp_chip_id else {
                return Err(Refusal::Evidence(VerifyError {
                    check: Check::EvidenceKind,
                    reason: "the agent enrolled without an SEV-SNP chip: enrol again with \
                             tpm+snp evidence"
                        .into(),
                }));
            };
            (
                tpm.ak_public == agent.ak_public,
                snp.chip_id == *pinned_chip,
            )
        }
    };
    match (key, chip) {
        (false, _) => Err(Refusal::AkMismatch),
        (true, false) => Err(Refusal::ChipMismatch),
        (true, true) => Ok(()),
    }
}

/// zero_retention must not change, and within one TPM boot (same reset and restart
/// counts) the clock must advance: an older quote presented later is a replay.
fn check_continuity(previous: &AcceptedState, now: &Verified) -> Result<(), Refusal> {
    if previous.zero_retention != now.claims.zero_retention {
        return Err(Refusal::ZeroRetentionDrift {
            previous: previous.zero_retention,
            now: now.claims.zero_retention,
        });
    }
    if let (Some((reset, restart, clock)), Some(c)) = (previous.tpm_clock, now.tpm_clock()) {
        let boot_now = (c.reset_count, c.restart_count);
        if boot_now < (reset, restart) || (boot_now == (reset, restart) && c.clock <= clock) {
            return Err(Refusal::ClockRegression);
        }
    }
    Ok(())
}

/// The state an accepted attestation establishes for the agent's next one.
pub fn accepted_state(verified: &Verified) -> AcceptedState {
    AcceptedState {
        zero_retention: verified.claims.zero_retention,
        tpm_clock: verified
            .tpm_clock()
            .map(|c| (c.reset_count, c.restart_count, c.clock)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_and_per_agent() {
        let book = NonceBook::default();
        let n = book.issue("a").unwrap();
        assert!(!book.take("b", &n));
        assert!(book.take("a", &n));
        assert!(!book.take("a", &n));
        assert!(!book.take("a", b""));
    }

    #[test]
    fn only_the_newest_nonces_stay_valid() {
        let book = NonceBook::default();
        let first = book.issue("a").unwrap();
        for _ in 0..MAX_NONCES_PER_AGENT {
            book.issue("a").unwrap();
        }
        assert!(!book.take("a", &first));
    }
}
