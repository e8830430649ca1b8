//! The ledger's verification of a submission: every check of the offline verifier
//! ([`attestor_verify::checks`]), plus what only a stateful verifier can check: the AK pinned at
//! enrollment, a single-use nonce it issued, zero-retention unchanged since the agent's
//! previous attestation, and a TPM clock that never runs backwards within one boot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{constant_time, hkdf, hmac};
use thiserror::Error;

use crate::limits::WriteLimit;
use crate::store::{AcceptedState, AgentRecord};
use attestor_net::tls::AgentIdentity;
use attestor_verify::appraisal::ApprovedPolicyHash;
use attestor_verify::bundle::EvidenceKind;
use attestor_verify::bundle::{Bundle, BundleError};
use attestor_verify::checks::{
    check_policy_hashes, verify_bundle, verify_drift_report, AkTrust, Check, Expectations,
    Platform, Verified, VerifiedDrift, VerifyError,
};
use attestor_verify::claims::Statement;
use attestor_verify::drift::{DriftClaims, DriftError, DriftReport};
use attestor_verify::evidence::tpm::wire::ClockInfo;
use attestor_verify::profiles::Profile;

/// How long an issued nonce counts as this ledger's own, single-use nonce (the default
/// of `nonce_ttl_seconds`).
pub const NONCE_TTL: Duration = Duration::from_secs(120);
/// How long a nonce whose tag still proves this log issued it may vouch for freshness
/// (with a TPM clock past the agent's last accepted quote), once it is no longer in this
/// process's book: issued before a restart or by another replica, or older than
/// [`NONCE_TTL`] because the ledger could not append when the agent first sent it. The
/// spec's freshness window.
pub const VOUCH_WINDOW: Duration = Duration::from_secs(300);
/// Outstanding nonces per agent; older ones are dropped first.
pub const MAX_NONCES_PER_AGENT: usize = 4;
/// Bytes of a ledger nonce (see [`NonceBook`]).
pub const NONCE_LEN: usize = 32;
pub use attestor_verify::api::OFFLINE_NONCE_PREFIX;

/// Why the ledger refuses a submission of an enrolled agent. Every refusal is itself
/// logged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(transparent)]
    Malformed(#[from] BundleError),
    #[error(transparent)]
    MalformedDrift(#[from] DriftError),
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
    #[error(
        "the policy kernel configuration drifted: the TPM now measures {measured}, the last \
         accepted attestation measured {}; the sealed key refuses to sign",
        approved.as_deref().unwrap_or("nothing (no accepted attestation yet)")
    )]
    KernelConfigDrift {
        /// The measurement the quote proves.
        measured: String,
        /// The agent's last accepted `kernel_config_hash`.
        approved: Option<String>,
    },
}

impl Refusal {
    /// Stable kebab-case reason for logs, metrics and queries.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) | Refusal::MalformedDrift(_) => "malformed",
            Refusal::Revoked(_) => "revoked",
            Refusal::Nonce => "nonce",
            Refusal::Evidence(e) => e.check.name(),
            Refusal::AkMismatch => "ak-mismatch",
            Refusal::ChipMismatch => "chip-mismatch",
            Refusal::OfflineWithoutClock => "nonce",
            Refusal::ZeroRetentionDrift { .. } => "zero-retention-drift",
            Refusal::ClockRegression => "clock-regression",
            Refusal::KernelConfigDrift { .. } => "kernel-config-drift",
        }
    }
}

/// A nonce and when it was issued.
type IssuedNonce = ([u8; NONCE_LEN], Instant);

/// What a nonce presented with a submission turns out to be. Checking spends nothing:
/// the caller spends a ledger nonce ([`NonceBook::spend`]) only once the entry that used
/// it is durably in the log, so a submission whose append failed can be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this process to this agent, unspent and within its lifetime.
    Issued,
    /// Not (or no longer) in this process's book, but its tag proves a ledger holding the
    /// same key issued it to this agent within [`VOUCH_WINDOW`] and it was not spent
    /// here. It cannot be marked spent everywhere, so like an offline nonce it is accepted
    /// only with a TPM clock past the agent's last accepted quote.
    Vouched,
    /// Its tag proves a ledger holding the same key issued it to this agent, unspent
    /// here, but before [`VOUCH_WINDOW`]: it proves when the agent asked, so it can vouch
    /// only for a late attestation (with a TPM clock past the agent's last accepted quote).
    Overdue,
    /// Anything else.
    Unknown,
}

/// The nonce a submission carries, as the ledger judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedNonce {
    /// Made by the agent while the ledger was unreachable ([`OFFLINE_NONCE_PREFIX`]).
    Offline,
    /// One of the ledger's nonces (or a pretender).
    Ledger(NonceCheck),
}

impl PresentedNonce {
    /// Whether the nonce must be spent once its entry is in the log.
    pub fn to_spend(self) -> bool {
        matches!(
            self,
            PresentedNonce::Ledger(NonceCheck::Issued | NonceCheck::Vouched | NonceCheck::Overdue)
        )
    }
}

/// When a ledger nonce says it was issued (Unix ms); meaningful only for a nonce the book
/// recognised (its tag covers this time).
fn nonce_issued_at(nonce: &[u8]) -> Option<SystemTime> {
    let time: [u8; NONCE_TIME] = nonce.get(..NONCE_TIME)?.try_into().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(u64::from_be_bytes(time)))
}

/// Single-use, short-lived nonces, per agent (tenant and agent id). A nonce is the time
/// it was issued, random bytes and an HMAC tag over those and the agent's identity, so a
/// ledger that restarted (or a replica sharing its checkpoint key) still recognises
/// nonces issued before.
pub struct NonceBook {
    issued: Mutex<HashMap<AgentIdentity, Vec<IssuedNonce>>>,
    /// Nonces spent here, until their tag can no longer vouch for them: a second use is
    /// refused here even though the tag still vouches for it.
    spent: Mutex<SpentNonces>,
    tag_keys: RwLock<TagKeys>,
    ttl: Duration,
    vouch_window: Duration,
}

/// The key new nonces are tagged with, and those of checkpoint keys rotated away while
/// this process runs: their nonces count here exactly as before the rotation, and those
/// issued since carry the tag a restarted ledger (keyed from the new checkpoint key
/// alone) recognises. A retired key is dropped once every nonce it tagged is past the
/// vouch window: a key rotated away because it leaked stops vouching soon after.
struct TagKeys {
    current: hmac::Key,
    /// Each with when it was retired.
    retired: Vec<(hmac::Key, Instant)>,
}

fn tag_key(secret: &[u8]) -> hmac::Key {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"attestor ledger nonce tag key v2");
    salt.extract(secret)
        .expand(&[b"nonce-tag"], hmac::HMAC_SHA256)
        .expect("HMAC-SHA256 key length is within HKDF's limit")
        .into()
}

fn nonce_tag(key: &hmac::Key, who: &AgentIdentity, time_and_random: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    for id in [&who.tenant, &who.agent_id] {
        context.update(&(id.len() as u64).to_be_bytes());
        context.update(id.as_bytes());
    }
    context.update(time_and_random);
    context.sign()
}

#[derive(Default)]
struct SpentNonces {
    set: HashSet<[u8; NONCE_LEN]>,
    by_age: VecDeque<([u8; NONCE_LEN], Instant)>,
}

impl SpentNonces {
    fn forget_older_than(&mut self, age: Duration) {
        while let Some((old, at)) = self.by_age.front() {
            if at.elapsed() < age {
                break;
            }
            self.set.remove(old);
            self.by_age.pop_front();
        }
    }

    fn spend(&mut self, nonce: [u8; NONCE_LEN], keep_for: Duration) {
        self.forget_older_than(keep_for);
        if self.set.insert(nonce) {
            self.by_age.push_back((nonce, Instant::now()));
        }
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
        NonceBook {
            issued: Mutex::default(),
            spent: Mutex::default(),
            tag_keys: RwLock::new(TagKeys {
                current: tag_key(secret),
                retired: Vec::new(),
            }),
            ttl: NONCE_TTL,
            vouch_window: VOUCH_WINDOW,
        }
    }

    /// The same book with other lifetimes: `ttl` for this process's own nonces, and
    /// `vouch_window` (at least `ttl`) for nonces only the tag vouches for.
    pub fn with_lifetimes(mut self, ttl: Duration, vouch_window: Duration) -> Self {
        self.ttl = ttl;
        self.vouch_window = vouch_window.max(ttl);
        self
    }

    /// How long an issued nonce counts as this process's own ([`NonceCheck::Issued`]).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Tags nonces from now on with a key derived from `secret`, the rotated checkpoint
    /// key, still recognising the tags of the keys before it until this process ends
    /// (see [`TagKeys`]).
    pub fn rekey(&self, secret: &[u8]) {
        let mut keys = self.tag_keys.write().unwrap_or_else(|p| p.into_inner());
        let previous = std::mem::replace(&mut keys.current, tag_key(secret));
        let lifetime = self.vouch_window + NONCE_CLOCK_SKEW;
        keys.retired.retain(|(_, at)| at.elapsed() < lifetime);
        keys.retired.push((previous, Instant::now()));
    }

    /// Issues a fresh nonce to `who`.
    pub fn issue(
        &self,
        who: &AgentIdentity,
    ) -> Result<[u8; NONCE_LEN], aws_lc_rs::error::Unspecified> {
        let mut nonce = [0u8; NONCE_LEN];
        let issued_ms = attestor_verify::time::unix_ms(SystemTime::now());
        nonce[..NONCE_TIME].copy_from_slice(&issued_ms.to_be_bytes());
        SystemRandom::new().fill(&mut nonce[NONCE_TIME..NONCE_TIME + NONCE_RANDOM])?;
        let tag = nonce_tag(
            &self
                .tag_keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .current,
            who,
            &nonce[..NONCE_TIME + NONCE_RANDOM],
        );
        nonce[NONCE_TIME + NONCE_RANDOM..].copy_from_slice(&tag.as_ref()[..NONCE_TAG]);
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let list = issued.entry(who.clone()).or_default();
        list.retain(|(_, at)| at.elapsed() < self.ttl);
        if list.len() >= MAX_NONCES_PER_AGENT {
            list.remove(0);
        }
        list.push((nonce, Instant::now()));
        Ok(nonce)
    }

    /// What `nonce` is for a submission of `who` (see [`PresentedNonce`]); spends nothing.
    pub fn presented(&self, who: &AgentIdentity, nonce: &[u8], now: SystemTime) -> PresentedNonce {
        if nonce.starts_with(OFFLINE_NONCE_PREFIX) {
            PresentedNonce::Offline
        } else {
            PresentedNonce::Ledger(self.check(who, nonce, now))
        }
    }

    /// Whether this ledger issued `nonce` to `who` and it is unspent (see [`NonceCheck`]);
    /// spends nothing.
    pub fn check(&self, who: &AgentIdentity, nonce: &[u8], now: SystemTime) -> NonceCheck {
        let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
            return NonceCheck::Unknown;
        };
        if self
            .spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&nonce)
        {
            return NonceCheck::Unknown;
        }
        let in_book = {
            let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            issued
                .get(who)
                .and_then(|list| list.iter().find(|(n, _)| *n == nonce))
                .map(|(_, at)| at.elapsed() < self.ttl)
        };
        if in_book == Some(true) {
            return NonceCheck::Issued;
        }
        let (signed, tag) = nonce.split_at(NONCE_TIME + NONCE_RANDOM);
        let keys = self.tag_keys.read().unwrap_or_else(|p| p.into_inner());
        let lifetime = self.vouch_window + NONCE_CLOCK_SKEW;
        let tagged = std::iter::once(&keys.current)
            .chain(
                keys.retired
                    .iter()
                    .filter(|(_, at)| at.elapsed() < lifetime)
                    .map(|(key, _)| key),
            )
            .any(|key| {
                let expected = nonce_tag(key, who, signed);
                constant_time::verify_slices_are_equal(&expected.as_ref()[..NONCE_TAG], tag).is_ok()
            });
        drop(keys);
        if !tagged {
            return NonceCheck::Unknown;
        }
        let mut time = [0u8; NONCE_TIME];
        time.copy_from_slice(&signed[..NONCE_TIME]);
        let issued_ms = u64::from_be_bytes(time);
        let now_ms = attestor_verify::time::unix_ms(now);
        let window_ms = u64::try_from(self.vouch_window.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = u64::try_from(NONCE_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if issued_ms > now_ms.saturating_add(skew_ms) {
            NonceCheck::Unknown
        } else if now_ms.saturating_sub(issued_ms) < window_ms {
            NonceCheck::Vouched
        } else {
            NonceCheck::Overdue
        }
    }

    /// Marks `nonce` of `who` used: it is refused from now on (here) for as long as its
    /// tag could vouch for it.
    pub fn spend(&self, who: &AgentIdentity, nonce: &[u8]) {
        let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
            return;
        };
        if let Some(list) = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(who)
        {
            list.retain(|(n, _)| *n != nonce);
        }
        // The spent set outlives the vouch window measured from spending, which is later
        // than the one measured from issuing.
        self.spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(nonce, self.vouch_window + NONCE_CLOCK_SKEW);
    }

    /// Checks and, unless [`NonceCheck::Unknown`], spends `nonce` at once: for steps that
    /// append nothing (enrollment).
    pub fn take(&self, who: &AgentIdentity, nonce: &[u8], now: SystemTime) -> NonceCheck {
        let check = self.check(who, nonce, now);
        if check != NonceCheck::Unknown {
            self.spend(who, nonce);
        }
        check
    }
}

/// What a tenant expects of its agents, and what they may send.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    /// Required `policy_hash` (hex).
    pub policy_hash: String,
    /// Each agent's allowance of write requests (nonces, enrollment, submissions).
    pub write_limit: WriteLimit,
    /// The appraisal policy file; the built-in policy when absent.
    pub appraisal: Option<std::path::PathBuf>,
}

impl TenantPolicy {
    /// A tenant expecting `policy_hash` (hex), with the default write limit.
    pub fn new(policy_hash: impl Into<String>) -> Self {
        TenantPolicy {
            policy_hash: policy_hash.into(),
            write_limit: WriteLimit::DEFAULT,
            appraisal: None,
        }
    }
}

/// A genuine submission, in time or not.
#[derive(Debug)]
pub enum Timeliness {
    /// Within the freshness window: a heartbeat.
    InTime(Verified),
    /// Delivered after the freshness window (spooled through an outage), with proof of
    /// when it was made: its ledger nonce's issue time, or a TPM clock past the agent's
    /// last accepted quote. Every other check passed, judged at that time; it proves the
    /// past, not the present.
    Late {
        verified: Verified,
        /// The freshness check it missed now.
        missed: VerifyError,
    },
}

/// Verifies one submission of an enrolled agent as [`judge_submission`] does, counting a
/// late one as the freshness refusal it is without the proof of its time.
pub fn verify_submission(
    bundle: &Bundle,
    agent: &AgentRecord,
    nonce: PresentedNonce,
    profile: &Profile,
    approved_policies: &[ApprovedPolicyHash],
    now: SystemTime,
) -> Result<Verified, Refusal> {
    match judge_submission(bundle, agent, nonce, profile, approved_policies, now)? {
        Timeliness::InTime(verified) => Ok(verified),
        Timeliness::Late { missed, .. } => Err(missed.into()),
    }
}

/// Verifies one submission of an enrolled agent, whose nonce the caller has judged
/// ([`NonceBook::presented`]) and spends once the entry is appended, whatever the verdict:
/// a refused submission cannot be retried with the same evidence. An offline nonce
/// ([`OFFLINE_NONCE_PREFIX`]) relies on the freshness window and the TPM clock. A
/// submission that fails only freshness, but shows when it was made, is
/// [`Timeliness::Late`]; one failing anything else is refused for that.
pub fn judge_submission(
    bundle: &Bundle,
    agent: &AgentRecord,
    nonce: PresentedNonce,
    profile: &Profile,
    approved_policies: &[ApprovedPolicyHash],
    now: SystemTime,
) -> Result<Timeliness, Refusal> {
    if agent.revoked {
        return Err(Refusal::Revoked(agent.agent_id.clone()));
    }
    let (offline, vouched) = match nonce {
        PresentedNonce::Offline => (true, false),
        PresentedNonce::Ledger(NonceCheck::Issued) => (false, false),
        PresentedNonce::Ledger(NonceCheck::Vouched | NonceCheck::Overdue) => (false, true),
        PresentedNonce::Ledger(NonceCheck::Unknown) => return Err(Refusal::Nonce),
    };
    // The policy hash is checked last: a zero_retention flip changes the policy too, and
    // must be reported as the drift it is.
    // An agent enrolled with a pinned SNP chip besides its vTPM must always bring both.
    let expect = Expectations {
        policy_hash: None,
        nonce: bundle.nonce.clone(),
        now: Some(now),
        evidence: agent.snp_chip_id.as_ref().map(|_| EvidenceKind::TpmSnp),
        // The AK must be the one credential activation pinned: `check_pinned`.
        ak: AkTrust::PinnedByCaller,
    };
    // Freshness is the last check: failing it, everything else held now. Judged again at
    // the time the bundle shows it was made, every check runs, certificate validity
    // included, as it would have had the ledger been reachable then.
    let (verified, missed, judged_at) = match verify_bundle(bundle, profile, &expect) {
        Ok(verified) => (verified, None, now),
        Err(missed) if missed.check == Check::Freshness => {
            let claimed = || {
                Statement::from_json(&bundle.envelope.payload)
                    .ok()
                    .map(|s| s.predicate.timestamp)
            };
            let Some(made_at) = made_at(&bundle.nonce, nonce, claimed, agent, profile, now) else {
                return Err(missed.into());
            };
            let then = Expectations {
                now: Some(made_at),
                ..expect
            };
            (
                verify_bundle(bundle, profile, &then)?,
                Some(missed),
                made_at,
            )
        }
        Err(e) => return Err(e.into()),
    };
    // An overdue nonce proves only that the attestation is old.
    if nonce == PresentedNonce::Ledger(NonceCheck::Overdue) && missed.is_none() {
        return Err(Refusal::Nonce);
    }
    check_pinned(&verified, agent)?;
    // Offline nonces are spent nowhere and vouched ones only in this process: the TPM
    // clock, which must move past the last accepted quote, is what refuses their replay.
    if offline && verified.tpm_clock().is_none() {
        return Err(Refusal::OfflineWithoutClock);
    }
    if vouched && verified.tpm_clock().is_none() {
        return Err(Refusal::Nonce);
    }
    if let Some(previous) = &agent.last_accepted {
        check_continuity(previous, &verified)?;
    }
    check_policy_hashes(&verified.claims, approved_policies, judged_at)?;
    Ok(match missed {
        None => Timeliness::InTime(verified),
        Some(missed) => Timeliness::Late { verified, missed },
    })
}

/// When evidence that missed the freshness window shows it was made, if it does: the
/// issue time of the ledger nonce it commits to; for an offline nonce, its `claimed` time
/// (Unix seconds), in the past and not before the agent's last accepted attestation, since
/// its TPM clock (checked after) must order it after that quote's.
fn made_at(
    nonce_bytes: &[u8],
    nonce: PresentedNonce,
    claimed: impl FnOnce() -> Option<u64>,
    agent: &AgentRecord,
    profile: &Profile,
    now: SystemTime,
) -> Option<SystemTime> {
    match nonce {
        PresentedNonce::Ledger(NonceCheck::Unknown) => None,
        PresentedNonce::Ledger(_) => nonce_issued_at(nonce_bytes),
        PresentedNonce::Offline => {
            agent.last_accepted.as_ref()?.tpm_clock?;
            let claimed = claimed()?;
            let now_secs = attestor_verify::time::unix_ms(now) / 1000;
            let since_secs = agent
                .last_accepted_at_ms
                .map_or(0, |ms| ms / 1000)
                .saturating_sub(profile.max_age_seconds);
            (claimed < now_secs && claimed >= since_secs)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(claimed))
        }
    }
}

/// Verifies a drift report of an enrolled agent as [`verify_submission`] does a bundle:
/// the quote must be the pinned AK's, fresh (the ledger's nonce, or else a TPM clock past
/// the last accepted quote) and in order. What it proves is the drift, for which the caller
/// refuses the agent; one delivered after the freshness window is judged, as a late bundle
/// is, at the time it shows it was made, so a drift spooled through an outage is still
/// reported as the drift.
pub fn verify_drift_submission(
    report: &DriftReport,
    agent: &AgentRecord,
    nonce: PresentedNonce,
    profile: &Profile,
    now: SystemTime,
) -> Result<VerifiedDrift, Refusal> {
    if agent.revoked {
        return Err(Refusal::Revoked(agent.agent_id.clone()));
    }
    if nonce == PresentedNonce::Ledger(NonceCheck::Unknown) {
        return Err(Refusal::Nonce);
    }
    let expect = Expectations {
        policy_hash: None,
        nonce: report.nonce.clone(),
        now: Some(now),
        evidence: None,
        ak: AkTrust::PinnedByCaller,
    };
    let verified = match verify_drift_report(report, profile, &expect) {
        Err(missed) if missed.check == Check::Freshness => {
            let claimed = || {
                serde_json::from_slice::<DriftClaims>(&report.payload)
                    .ok()
                    .map(|c| c.detected_at)
            };
            let Some(made_at) = made_at(&report.nonce, nonce, claimed, agent, profile, now) else {
                return Err(missed.into());
            };
            let then = Expectations {
                now: Some(made_at),
                ..expect
            };
            verify_drift_report(report, profile, &then)?
        }
        Ok(_) if nonce == PresentedNonce::Ledger(NonceCheck::Overdue) => {
            return Err(Refusal::Nonce)
        }
        verified => verified?,
    };
    if verified.ak_public != agent.ak_public {
        return Err(Refusal::AkMismatch);
    }
    if let Some(previous) = &agent.last_accepted {
        check_clock(previous, &verified.clock)?;
    }
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
    match now.tpm_clock() {
        Some(clock) => check_clock(previous, clock),
        None => Ok(()),
    }
}

/// Within one TPM boot (same reset and restart counts) the clock must advance past the
/// previous accepted quote's: an older quote presented later is a replay.
fn check_clock(previous: &AcceptedState, now: &ClockInfo) -> Result<(), Refusal> {
    if let Some((reset, restart, clock)) = previous.tpm_clock {
        let boot_now = (now.reset_count, now.restart_count);
        if boot_now < (reset, restart) || (boot_now == (reset, restart) && now.clock <= clock) {
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

    use NonceCheck::{Issued, Overdue, Unknown, Vouched};

    fn who(tenant: &str, agent: &str) -> AgentIdentity {
        AgentIdentity::new(tenant, agent).unwrap()
    }

    /// Checks, then spends as the ledger does once the entry is appended.
    fn use_once(book: &NonceBook, who: &AgentIdentity, n: &[u8], now: SystemTime) -> NonceCheck {
        let check = book.check(who, n, now);
        if check != Unknown {
            book.spend(who, n);
        }
        check
    }

    #[test]
    fn nonces_are_single_use_and_bound_to_tenant_and_agent() {
        let book = NonceBook::default();
        let now = SystemTime::now();
        let a = who("t1", "a");
        let n = book.issue(&a).unwrap();
        assert_eq!(book.check(&who("t1", "b"), &n, now), Unknown);
        assert_eq!(
            book.check(&who("t2", "a"), &n, now),
            Unknown,
            "same id, other tenant"
        );
        assert_eq!(use_once(&book, &a, &n, now), Issued);
        assert_eq!(book.check(&a, &n, now), Unknown);
        assert_eq!(book.check(&a, b"", now), Unknown);
    }

    #[test]
    fn checking_spends_nothing_until_the_entry_is_appended() {
        let book = NonceBook::default();
        let now = SystemTime::now();
        let a = who("t", "a");
        let n = book.issue(&a).unwrap();
        // A submission whose append failed is judged again with the same nonce.
        assert_eq!(book.check(&a, &n, now), Issued);
        assert_eq!(book.check(&a, &n, now), Issued);
        book.spend(&a, &n);
        assert_eq!(book.check(&a, &n, now), Unknown);
    }

    #[test]
    fn only_the_newest_nonces_stay_in_the_book() {
        let book = NonceBook::default();
        let a = who("t", "a");
        let first = book.issue(&a).unwrap();
        for _ in 0..MAX_NONCES_PER_AGENT {
            book.issue(&a).unwrap();
        }
        assert_eq!(book.check(&a, &first, SystemTime::now()), Vouched);
    }

    #[test]
    fn an_expired_nonce_still_vouches_within_the_window() {
        let book = NonceBook::default().with_lifetimes(Duration::ZERO, VOUCH_WINDOW);
        let a = who("t", "a");
        let n = book.issue(&a).unwrap();
        let now = SystemTime::now();
        assert_eq!(book.check(&a, &n, now), Vouched, "past its lifetime");
        assert_eq!(
            book.check(&a, &n, now + VOUCH_WINDOW),
            Overdue,
            "past the window: proof of an old request, nothing more"
        );
        assert_eq!(use_once(&book, &a, &n, now), Vouched);
        assert_eq!(book.check(&a, &n, now), Unknown, "spent");
    }

    #[test]
    fn after_a_key_rotation_old_and_new_tags_count_until_a_restart_keeps_only_the_new() {
        let (old, new) = (
            b"the checkpoint key".as_slice(),
            b"its successor".as_slice(),
        );
        let a = who("t", "a");
        let book = NonceBook::with_secret(old).with_lifetimes(Duration::ZERO, VOUCH_WINDOW);
        let before = book.issue(&a).unwrap();
        book.rekey(new);
        let after = book.issue(&a).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            book.check(&a, &before, now),
            Vouched,
            "as before the rotation"
        );
        assert_eq!(book.check(&a, &after, now), Vouched);
        let restarted = NonceBook::with_secret(new);
        assert_eq!(restarted.check(&a, &after, now), Vouched);
        assert_eq!(
            restarted.check(&a, &before, now),
            Unknown,
            "a restart knows the new key alone, as without the rotation's rekey"
        );
    }

    #[test]
    fn a_restarted_ledger_vouches_only_for_its_own_fresh_untampered_nonces() {
        let secret = b"the checkpoint key of this log";
        let a = who("t", "a");
        let before_restart = NonceBook::with_secret(secret);
        let n = before_restart.issue(&a).unwrap();
        let now = SystemTime::now();
        let after_restart = || NonceBook::with_secret(secret);
        let restarted = after_restart();
        assert_eq!(use_once(&restarted, &a, &n, now), Vouched);
        assert_eq!(restarted.check(&a, &n, now), Unknown, "a second use");
        let after_restart = after_restart();
        assert_eq!(after_restart.check(&who("t", "b"), &n, now), Unknown);
        assert_eq!(after_restart.check(&who("u", "a"), &n, now), Unknown);
        assert_eq!(
            NonceBook::with_secret(b"another log").check(&a, &n, now),
            Unknown
        );
        for i in 0..NONCE_LEN {
            let mut tampered = n;
            tampered[i] ^= 1;
            assert_eq!(after_restart.check(&a, &tampered, now), Unknown, "byte {i}");
        }
        assert_eq!(
            after_restart.check(&a, &n, now + VOUCH_WINDOW),
            Overdue,
            "expired"
        );
        let early = now - NONCE_CLOCK_SKEW - Duration::from_secs(1);
        assert_eq!(
            after_restart.check(&a, &n, early),
            Unknown,
            "from the future"
        );
    }
}
