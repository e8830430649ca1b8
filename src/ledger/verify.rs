//! The ledger's verification of a submission: every check of the offline verifier
//! ([`crate::verify`]), plus what only a stateful verifier can check: the AK pinned at
//! enrollment, a single-use nonce it issued, zero-retention unchanged since the agent's
//! previous attestation, and a TPM clock that never runs backwards within one boot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{constant_time, hkdf, hmac};
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
/// Bytes of a ledger nonce (see [`NonceBook`]).
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

/// What a nonce presented with a submission turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this process to this agent, unused and unexpired: now spent.
    Issued,
    /// Not in this process's book, but its tag proves a ledger holding the same key issued
    /// it to this agent within [`NONCE_TTL`]: before a restart, or by another replica. It
    /// cannot be marked spent everywhere, so like an offline nonce it is accepted only with
    /// a TPM clock past the agent's last accepted quote.
    Vouched,
    /// Anything else.
    Unknown,
}

/// Single-use, short-lived nonces, per agent. A nonce is the time it was issued, random
/// bytes and an HMAC tag over those and the agent's id, so a ledger that restarted (or a
/// replica sharing its checkpoint key) still recognises nonces issued before.
pub struct NonceBook {
    issued: Mutex<HashMap<String, Vec<IssuedNonce>>>,
    /// Nonces this process accepted once, until they expire: a second use is refused here
    /// even though the tag still vouches for it.
    spent: Mutex<SpentNonces>,
    tag_key: hmac::Key,
}

#[derive(Default)]
struct SpentNonces {
    set: HashSet<[u8; NONCE_LEN]>,
    by_age: VecDeque<([u8; NONCE_LEN], Instant)>,
}

impl SpentNonces {
    /// Records `nonce` as spent; false if it already was.
    fn spend(&mut self, nonce: [u8; NONCE_LEN]) -> bool {
        while let Some((old, at)) = self.by_age.front() {
            if at.elapsed() < NONCE_TTL {
                break;
            }
            self.set.remove(old);
            self.by_age.pop_front();
        }
        if !self.set.insert(nonce) {
            return false;
        }
        self.by_age.push_back((nonce, Instant::now()));
        true
    }
}

/// Bytes of the issue time (Unix milliseconds, big-endian), the randomness and the tag.
const NONCE_TIME: usize = 8;
const NONCE_RANDOM: usize = 8;
const NONCE_TAG: usize = NONCE_LEN - NONCE_TIME - NONCE_RANDOM;
/// How far ahead of this ledger's clock a replica's issue time may be.
const NONCE_CLOCK_SKEW: Duration = Duration::from_secs(5);

impl Default for NonceBook {
    /// A book whose nonces only this process recognises (a random tag key).
    fn default() -> Self {
        let mut secret = [0u8; 32];
        // The system RNG failing leaves a zero key: tags are then forgeable, so fail loudly.
        SystemRandom::new()
            .fill(&mut secret)
            .expect("the system random number generator failed");
        Self::with_secret(&secret)
    }
}

impl NonceBook {
    /// A book whose tag key is derived (HKDF-SHA256) from `secret`, e.g. the checkpoint
    /// signing key every replica of a log holds.
    pub fn with_secret(secret: &[u8]) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"attestor ledger nonce tag key v1");
        let tag_key: hmac::Key = salt
            .extract(secret)
            .expand(&[b"nonce-tag"], hmac::HMAC_SHA256)
            .expect("HMAC-SHA256 key length is within HKDF's limit")
            .into();
        NonceBook {
            issued: Mutex::default(),
            spent: Mutex::default(),
            tag_key,
        }
    }

    fn tag(&self, agent_id: &str, time_and_random: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.tag_key);
        context.update(&(agent_id.len() as u64).to_be_bytes());
        context.update(agent_id.as_bytes());
        context.update(time_and_random);
        context.sign()
    }

    /// Issues a fresh nonce to `agent_id`.
    pub fn issue(&self, agent_id: &str) -> Result<[u8; NONCE_LEN], aws_lc_rs::error::Unspecified> {
        let mut nonce = [0u8; NONCE_LEN];
        let issued_ms = unix_ms(SystemTime::now());
        nonce[..NONCE_TIME].copy_from_slice(&issued_ms.to_be_bytes());
        SystemRandom::new().fill(&mut nonce[NONCE_TIME..NONCE_TIME + NONCE_RANDOM])?;
        let tag = self.tag(agent_id, &nonce[..NONCE_TIME + NONCE_RANDOM]);
        nonce[NONCE_TIME + NONCE_RANDOM..].copy_from_slice(&tag.as_ref()[..NONCE_TAG]);
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let list = issued.entry(agent_id.to_string()).or_default();
        list.retain(|(_, at)| at.elapsed() < NONCE_TTL);
        if list.len() >= MAX_NONCES_PER_AGENT {
            list.remove(0);
        }
        list.push((nonce, Instant::now()));
        Ok(nonce)
    }

    /// Spends `nonce`: [`NonceCheck::Issued`] if this process issued it to `agent_id`,
    /// else whether its tag vouches for it (see [`NonceCheck`]). Either way it is refused
    /// as [`NonceCheck::Unknown`] when presented again.
    pub fn take(&self, agent_id: &str, nonce: &[u8], now: SystemTime) -> NonceCheck {
        let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
            return NonceCheck::Unknown;
        };
        let check = self.check(agent_id, &nonce, now);
        let first_use = check != NonceCheck::Unknown
            && self
                .spent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .spend(nonce);
        if first_use {
            check
        } else {
            NonceCheck::Unknown
        }
    }

    fn check(&self, agent_id: &str, nonce: &[u8; NONCE_LEN], now: SystemTime) -> NonceCheck {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = issued.get_mut(agent_id) {
            if let Some(pos) = list.iter().position(|(n, _)| n == nonce) {
                let (_, at) = list.remove(pos);
                return if at.elapsed() < NONCE_TTL {
                    NonceCheck::Issued
                } else {
                    NonceCheck::Unknown
                };
            }
        }
        drop(issued);
        let (signed, tag) = nonce.split_at(NONCE_TIME + NONCE_RANDOM);
        let expected = self.tag(agent_id, signed);
        if constant_time::verify_slices_are_equal(&expected.as_ref()[..NONCE_TAG], tag).is_err() {
            return NonceCheck::Unknown;
        }
        let issued_ms = u64::from_be_bytes(signed[..NONCE_TIME].try_into().expect("8 bytes"));
        let now_ms = unix_ms(now);
        let fresh = issued_ms <= now_ms.saturating_add(NONCE_CLOCK_SKEW.as_millis() as u64)
            && now_ms.saturating_sub(issued_ms) < NONCE_TTL.as_millis() as u64;
        if fresh {
            NonceCheck::Vouched
        } else {
            NonceCheck::Unknown
        }
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    let offline = bundle.nonce.starts_with(OFFLINE_NONCE_PREFIX);
    let vouched = !offline
        && match nonces.take(agent_id, &bundle.nonce, now) {
            NonceCheck::Issued => false,
            NonceCheck::Vouched => true,
            NonceCheck::Unknown => return Err(Refusal::Nonce),
        };
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
    // Offline and vouched nonces are not spent anywhere: the TPM clock, which must move
    // past the last accepted quote, is what refuses their replay.
    if offline && verified.tpm_clock().is_none() {
        return Err(Refusal::OfflineWithoutClock);
    }
    if vouched && verified.tpm_clock().is_none() {
        return Err(Refusal::Nonce);
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

    use NonceCheck::{Issued, Unknown, Vouched};

    #[test]
    fn nonces_are_single_use_and_per_agent() {
        let book = NonceBook::default();
        let now = SystemTime::now();
        let n = book.issue("a").unwrap();
        assert_eq!(book.take("b", &n, now), Unknown);
        assert_eq!(book.take("a", &n, now), Issued);
        assert_eq!(book.take("a", &n, now), Unknown);
        assert_eq!(book.take("a", b"", now), Unknown);
    }

    #[test]
    fn only_the_newest_nonces_stay_in_the_book() {
        let book = NonceBook::default();
        let first = book.issue("a").unwrap();
        for _ in 0..MAX_NONCES_PER_AGENT {
            book.issue("a").unwrap();
        }
        assert_eq!(book.take("a", &first, SystemTime::now()), Vouched);
    }

    #[test]
    fn a_restarted_ledger_vouches_only_for_its_own_fresh_untampered_nonces() {
        let secret = b"the checkpoint key of this log";
        let before_restart = NonceBook::with_secret(secret);
        let n = before_restart.issue("a").unwrap();
        let now = SystemTime::now();
        let after_restart = || NonceBook::with_secret(secret);
        let restarted = after_restart();
        assert_eq!(restarted.take("a", &n, now), Vouched);
        assert_eq!(restarted.take("a", &n, now), Unknown, "a second use");
        let after_restart = after_restart();
        assert_eq!(after_restart.take("b", &n, now), Unknown);
        assert_eq!(
            NonceBook::with_secret(b"another log").take("a", &n, now),
            Unknown
        );
        for i in 0..NONCE_LEN {
            let mut tampered = n;
            tampered[i] ^= 1;
            assert_eq!(after_restart.take("a", &tampered, now), Unknown, "byte {i}");
        }
        assert_eq!(
            after_restart.take("a", &n, now + NONCE_TTL),
            Unknown,
            "expired"
        );
        let early = now - NONCE_CLOCK_SKEW - Duration::from_secs(1);
        assert_eq!(
            after_restart.take("a", &n, early),
            Unknown,
            "from the future"
        );
    }
}
