//! The ledger's verification of a submission: every check of the offline verifier
//! ([`crate::verify`]), plus what only a stateful verifier can check: the AK pinned at
//! enrollment, a single-use nonce it issued, zero-retention unchanged since the agent's
//! previous attestation, and a TPM clock that never runs backwards within one boot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

use crate::bundle::Bundle;
use crate::ledger::store::{AcceptedState, AgentRecord};
use crate::profiles::Profile;
use crate::verify::{check_policy_hash, verify_bundle, Expectations, Verified, VerifyError};

/// How long an issued nonce may be used.
pub const NONCE_TTL: Duration = Duration::from_secs(120);
/// Outstanding nonces per agent; older ones are dropped first.
pub const MAX_NONCES_PER_AGENT: usize = 4;
/// Bytes of randomness in a nonce.
pub const NONCE_LEN: usize = 32;

/// Why the ledger refuses a submission. Every refusal is itself logged.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error("agent {0:?} is not enrolled")]
    UnknownAgent(String),
    #[error("agent {0:?} is revoked")]
    Revoked(String),
    #[error("nonce was not issued to this agent, was already used, or expired")]
    Nonce,
    #[error(transparent)]
    Evidence(#[from] VerifyError),
    #[error("quote is signed by an AK other than the one enrolled")]
    AkMismatch,
    #[error("zero_retention changed from {previous} to {now} since the previous attestation")]
    ZeroRetentionDrift { previous: bool, now: bool },
    #[error("TPM clock went backwards within one boot (replayed or reordered quote)")]
    ClockRegression,
}

impl Refusal {
    /// Stable kebab-case reason for logs, metrics and queries.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownAgent(_) => "unknown-agent",
            Refusal::Revoked(_) => "revoked",
            Refusal::Nonce => "nonce",
            Refusal::Evidence(e) => e.check.name(),
            Refusal::AkMismatch => "ak-mismatch",
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

/// Verifies one submission of an enrolled agent. The nonce is consumed whatever the
/// outcome, so a refused submission cannot be retried with the same evidence.
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
    if !nonces.take(agent_id, &bundle.nonce) {
        return Err(Refusal::Nonce);
    }
    // The policy hash is checked last: a zero_retention flip changes the policy too, and
    // must be reported as the drift it is.
    let expect = Expectations {
        policy_hash: None,
        nonce: bundle.nonce.clone(),
        now: Some(now),
    };
    let verified = verify_bundle(bundle, profile, &expect)?;
    if verified.ak_public() != Some(agent.ak_public.as_slice()) {
        return Err(Refusal::AkMismatch);
    }
    if let Some(previous) = &agent.last_accepted {
        check_continuity(previous, &verified)?;
    }
    check_policy_hash(&verified.claims, &tenant.policy_hash)?;
    Ok(verified)
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
