//! Appraisal: judging what a verified attestation says against an appraisal policy
//! (TOML; `examples/appraisal.toml` documents every key), and the EAR trust vector that
//! results.
//!
//! [`crate::checks`] decides whether evidence is genuine; this module decides whether the
//! attested state is acceptable: the runtime's posture flags, its differential-privacy
//! budget, its capability keys and version, and its counters over time. Each rule names
//! the tier a break gives (`contraindicated`, `warning`, or `ignore`); the policy's
//! defaults are strict and need no reference data, so an empty policy (name and revision
//! only) requires the three posture flags, epsilon within budget and monotonic counters.
//!
//! Counters are judged against earlier accepted attestations of the same agent
//! ([`Sample`]), which only a ledger has; offline the rates are taken since the runtime
//! started, which is what a ledger does too for an agent's first attestation.

mod policy;

pub use policy::{
    policy_hash_approval, AllowedKey, AppraisalPolicy, ApprovedPolicyHash, CapabilityRules,
    CounterRules, HashApproval, PolicyError, PostureRules, PrivacyRules, Severity, VersionRules,
    BUILTIN_POLICY, MAX_POLICY_BYTES,
};

use crate::bundle::EvidenceKind;
use crate::claims::Claims;
use crate::ear::{self, value, Details, Reason, Tier, TrustVector};

/// The counters of one accepted attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// `total_requests`.
    pub total_requests: u64,
    /// `blocked_requests`.
    pub blocked_requests: u64,
    /// `capability_failures`.
    pub capability_failures: u64,
    /// `plan_validations`.
    pub plan_validations: u64,
    /// `uptime_seconds`.
    pub uptime_seconds: u64,
}

impl From<&Claims> for Counters {
    fn from(c: &Claims) -> Self {
        Counters {
            total_requests: c.total_requests,
            blocked_requests: c.blocked_requests,
            capability_failures: c.capability_failures,
            plan_validations: c.plan_validations,
            uptime_seconds: c.uptime_seconds,
        }
    }
}

/// An earlier accepted attestation of the same agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the ledger logged it (Unix ms).
    pub at_ms: u64,
    /// Its counters.
    pub counters: Counters,
}

/// What appraising the claims found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Posture {
    /// Every broken rule, the worst first.
    pub reasons: Vec<Reason>,
    /// The runtime's uptime went back since the previous sample: it restarted, and its
    /// counters started again.
    pub runtime_restarted: bool,
}

impl Posture {
    /// The posture's tier: its worst reason's, else affirming.
    pub fn tier(&self) -> Tier {
        self.reasons
            .iter()
            .map(|r| r.tier)
            .max()
            .unwrap_or(Tier::Affirming)
    }

    /// The first (worst) reason's check name, if any rule broke.
    pub fn first_reason(&self) -> Option<&Reason> {
        self.reasons.first()
    }

    fn add(&mut self, severity: Severity, check: &str, detail: String) {
        if let Some(tier) = severity.tier() {
            self.reasons.push(Reason {
                check: check.into(),
                tier,
                detail,
            });
        }
    }
}

/// Judges `claims` against `policy`; `history` holds the agent's earlier accepted
/// attestations, oldest first (empty offline), and `now_ms` is when these claims arrived.
pub fn appraise(
    claims: &Claims,
    policy: &AppraisalPolicy,
    history: &[Sample],
    now_ms: u64,
) -> Posture {
    let mut posture = Posture::default();
    let rules = &policy.posture;
    for (flag, severity, check) in [
        (
            claims.tenant_isolation,
            rules.tenant_isolation,
            "tenant-isolation",
        ),
        (
            claims.egress_firewall_enabled,
            rules.egress_firewall_enabled,
            "egress-firewall",
        ),
        (
            claims.pii_detection_enabled,
            rules.pii_detection_enabled,
            "pii-detection",
        ),
    ] {
        if !flag {
            posture.add(severity, check, format!("the runtime reports {check} off"));
        }
    }
    appraise_privacy(claims, &policy.privacy, &mut posture);
    if let Some(rules) = &policy.capabilities {
        for key in &claims.capability_keys {
            if !rules.allowed.iter().any(|a| a.matches(key)) {
                posture.add(
                    rules.unknown_key,
                    "capability-key",
                    format!(
                        "capability key {:?} ({}, fingerprint {}) is not allowed",
                        key.key_id, key.algorithm, key.fingerprint
                    ),
                );
            }
        }
    }
    appraise_version(&claims.version, &policy.version, &mut posture);
    appraise_counters(claims, &policy.counters, history, now_ms, &mut posture);
    posture.reasons.sort_by_key(|r| std::cmp::Reverse(r.tier));
    posture
}

fn appraise_privacy(claims: &Claims, rules: &PrivacyRules, posture: &mut Posture) {
    let e = &claims.epsilon_limits;
    let sane = |v: f64| v.is_finite() && v >= 0.0;
    if !(sane(e.max_epsilon) && sane(e.max_delta) && sane(e.current_usage)) {
        posture.add(
            Severity::Contraindicated,
            "epsilon-limits",
            "epsilon limits must be finite and non-negative".into(),
        );
        return;
    }
    if e.current_usage > e.max_epsilon {
        posture.add(
            rules.over_budget,
            "epsilon-over-budget",
            format!(
                "epsilon used {} is over the budget max_epsilon {}",
                e.current_usage, e.max_epsilon
            ),
        );
    }
    if let Some(ceiling) = rules.max_epsilon.filter(|c| e.max_epsilon > *c) {
        posture.add(
            rules.above_ceiling,
            "epsilon-ceiling",
            format!(
                "max_epsilon {} is above the ceiling {ceiling}",
                e.max_epsilon
            ),
        );
    }
    if let Some(ceiling) = rules.max_delta.filter(|c| e.max_delta > *c) {
        posture.add(
            rules.above_ceiling,
            "delta-ceiling",
            format!("max_delta {} is above the ceiling {ceiling}", e.max_delta),
        );
    }
    let below = rules
        .min_reset_interval_seconds
        .filter(|m| e.reset_interval < *m);
    let above = rules
        .max_reset_interval_seconds
        .filter(|m| e.reset_interval > *m);
    if below.is_some() || above.is_some() {
        posture.add(
            rules.reset_interval,
            "reset-interval",
            format!(
                "reset_interval {} s is outside {}..={} s",
                e.reset_interval,
                rules.min_reset_interval_seconds.unwrap_or(0),
                rules
                    .max_reset_interval_seconds
                    .map_or("∞".to_string(), |m| m.to_string())
            ),
        );
    }
}

fn appraise_version(version: &str, rules: &VersionRules, posture: &mut Posture) {
    if rules.minimum.is_none() && rules.allowed.is_empty() {
        return;
    }
    let Ok(parsed) = semver::Version::parse(version) else {
        posture.add(
            rules.violation,
            "version",
            format!("version {version:?} is not a semantic version"),
        );
        return;
    };
    if let Some(minimum) = rules.minimum.as_ref().filter(|m| parsed < **m) {
        posture.add(
            rules.violation,
            "version",
            format!("version {parsed} is below the minimum {minimum}"),
        );
    } else if !rules.allowed.is_empty() && !rules.allowed.contains(&parsed) {
        posture.add(
            rules.violation,
            "version",
            format!("version {parsed} is not one of the allowed versions"),
        );
    }
}

fn appraise_counters(
    claims: &Claims,
    rules: &CounterRules,
    history: &[Sample],
    now_ms: u64,
    posture: &mut Posture,
) {
    let now = Counters::from(claims);
    if now.blocked_requests > now.total_requests {
        posture.add(
            Severity::Contraindicated,
            "counter-inconsistent",
            format!(
                "blocked_requests {} exceeds total_requests {}",
                now.blocked_requests, now.total_requests
            ),
        );
        return;
    }
    if let Some(previous) = history.last() {
        let p = previous.counters;
        if now.uptime_seconds < p.uptime_seconds {
            posture.runtime_restarted = true;
        } else {
            let regressed: Vec<String> = [
                ("total_requests", p.total_requests, now.total_requests),
                ("blocked_requests", p.blocked_requests, now.blocked_requests),
                (
                    "capability_failures",
                    p.capability_failures,
                    now.capability_failures,
                ),
                ("plan_validations", p.plan_validations, now.plan_validations),
            ]
            .into_iter()
            .filter(|(_, before, after)| after < before)
            .map(|(name, before, after)| format!("{name} {before} → {after}"))
            .collect();
            if !regressed.is_empty() {
                posture.add(
                    rules.regression,
                    "counter-regression",
                    format!(
                        "counters went back without an uptime reset ({} s → {} s): {}",
                        p.uptime_seconds,
                        now.uptime_seconds,
                        regressed.join(", ")
                    ),
                );
                return;
            }
        }
    }
    // The oldest earlier sample of this run within the window; without one, the run's
    // start (every counter zero).
    let window_ms = rules.window_seconds.saturating_mul(1000);
    let mut baseline = None;
    let mut newer_uptime = now.uptime_seconds;
    for sample in history.iter().rev() {
        let c = sample.counters;
        if c.uptime_seconds > newer_uptime
            || now_ms.saturating_sub(sample.at_ms) > window_ms
            || c.total_requests > now.total_requests
        {
            break;
        }
        baseline = Some(c);
        newer_uptime = c.uptime_seconds;
    }
    let (since, base) = match baseline {
        Some(b) => (
            format!("over the last {} s", now.uptime_seconds - b.uptime_seconds),
            b,
        ),
        None => (
            "since the runtime started".to_string(),
            Counters {
                total_requests: 0,
                blocked_requests: 0,
                capability_failures: 0,
                plan_validations: 0,
                uptime_seconds: 0,
            },
        ),
    };
    let requests = now.total_requests - base.total_requests;
    if requests < rules.min_requests.max(1) {
        return;
    }
    for (check, count, base_count, warning, worse) in [
        (
            "blocked-rate",
            now.blocked_requests,
            base.blocked_requests,
            rules.blocked_rate_warning,
            rules.blocked_rate_contraindicated,
        ),
        (
            "capability-failure-rate",
            now.capability_failures,
            base.capability_failures,
            rules.capability_failure_rate_warning,
            rules.capability_failure_rate_contraindicated,
        ),
    ] {
        let rate = count.saturating_sub(base_count) as f64 / requests as f64;
        let severity = if worse.is_some_and(|t| rate >= t) {
            Severity::Contraindicated
        } else if warning.is_some_and(|t| rate >= t) {
            Severity::Warning
        } else {
            continue;
        };
        posture.add(
            severity,
            check,
            format!(
                "{:.2} % of {requests} requests {since}, threshold {:.2} %",
                rate * 100.0,
                if severity == Severity::Contraindicated {
                    worse
                } else {
                    warning
                }
                .unwrap_or_default()
                    * 100.0
            ),
        );
    }
}

/// What the verifier established about the attester, beyond the claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    /// The evidence the judgement rests on.
    pub evidence: EvidenceKind,
    /// The signing key is bound to an enrolled or certified hardware instance: a ledger's
    /// AK pinned after credential activation, or an SEV-SNP chip's key.
    pub instance_bound: bool,
    /// Firmware was compared with reference values (TPM: the profile has firmware PCRs;
    /// SEV-SNP: always, TCB and launch measurement).
    pub firmware_appraised: bool,
}

/// The trust vector of a verified attestation, filled from what the checks proved:
/// nothing is claimed that no check established.
pub fn trust_vector(basis: &Basis, posture: &Posture) -> TrustVector {
    let tpm = basis.evidence != EvidenceKind::Snp;
    let snp = basis.evidence != EvidenceKind::Tpm;
    TrustVector {
        instance_identity: Some(if basis.instance_bound {
            value::RECOGNIZED_INSTANCE
        } else {
            value::NO_CLAIM
        }),
        configuration: Some(match posture.tier() {
            Tier::Contraindicated => value::UNSUPPORTABLE_CONFIG,
            Tier::Warning => value::UNSAFE_CONFIG,
            Tier::Affirming | Tier::None => value::APPROVED_CONFIG,
        }),
        // A TPM measures the configuration into a PCR the sealed key is bound to; an
        // SEV-SNP guest alone only signs it, so nothing proves what runs now.
        executables: Some(if tpm {
            value::APPROVED_RUNTIME
        } else {
            value::NO_CLAIM
        }),
        hardware: Some(if basis.firmware_appraised {
            value::GENUINE_HARDWARE
        } else {
            value::NO_CLAIM
        }),
        runtime_opaque: snp.then_some(value::ENCRYPTED_MEMORY),
        ..TrustVector::default()
    }
}

/// The trust vector of a refused submission: the facet its failed check belongs to.
/// `reason` is a stable refusal name: a [`crate::checks::Check`] name or a ledger's own.
pub fn refusal_vector(reason: &str) -> TrustVector {
    let mut v = TrustVector::default();
    match reason {
        "ek-chain" | "vcek-chain" | "vcek-binding" | "ak-mismatch" | "chip-mismatch"
        | "ak-binding" => v.instance_identity = Some(value::UNRECOGNIZED_INSTANCE),
        "attestation-key"
        | "sealed-key-certification"
        | "envelope-signature"
        | "quote-signature"
        | "report-signature"
        | "quote-binding"
        | "report-binding"
        | "pcr-digest" => v.instance_identity = Some(value::CRYPTO_FAILED),
        "revoked" => v.instance_identity = Some(value::UNTRUSTWORTHY_INSTANCE),
        "event-log-replay"
        | "sealed-key-policy"
        | "measurement-matches-claims"
        | "kernel-config-drift"
        | "launch-measurement" => v.executables = Some(value::CONTRAINDICATED_RUNTIME),
        "firmware-pcrs" | "report-product" | "report-version" | "guest-policy" | "vmpl"
        | "tcb-minimum" => v.hardware = Some(value::CONTRAINDICATED_HARDWARE),
        "policy-hash" | "policy-hash-expired" | "zero-retention-drift" => {
            v.configuration = Some(value::UNSUPPORTABLE_CONFIG)
        }
        // Not fresh, replayed, or not what was expected: nothing of the attester's state
        // can be judged from it.
        _ => v.instance_identity = Some(value::UNEXPECTED_EVIDENCE),
    }
    v
}

/// The EAR appraisal of a verified attestation.
pub fn accepted_appraisal(basis: &Basis, posture: &Posture, policy_id: String) -> ear::Appraisal {
    let vector = trust_vector(basis, posture);
    ear::Appraisal {
        ear_status: vector.worst().max(posture.tier()),
        ear_trustworthiness_vector: vector,
        ear_appraisal_policy_ids: vec![policy_id],
        attestor: Details {
            reasons: posture.reasons.clone(),
            runtime_restarted: posture.runtime_restarted,
        },
    }
}

/// The EAR appraisal of a refused submission: always contraindicated.
pub fn refused_appraisal(reason: &str, detail: &str, policy_id: Option<String>) -> ear::Appraisal {
    ear::Appraisal {
        ear_status: Tier::Contraindicated,
        ear_trustworthiness_vector: refusal_vector(reason),
        ear_appraisal_policy_ids: policy_id.into_iter().collect(),
        attestor: Details {
            reasons: vec![Reason {
                check: reason.into(),
                tier: Tier::Contraindicated,
                detail: detail.into(),
            }],
            runtime_restarted: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::tests::sample_claims;
    use crate::claims::CapabilityKey;

    const STRICT: &str = r#"
name = "strict"
revision = 3

[privacy]
max_epsilon = 3.0
max_delta = 1e-5
min_reset_interval_seconds = 3600
max_reset_interval_seconds = 86400

[capabilities]
[[capabilities.allowed]]
key_id = "cap-1"
fingerprint = "aa"

[version]
minimum = "1.4.0"

[counters]
window_seconds = 600
min_requests = 10
blocked_rate_warning = 0.05
blocked_rate_contraindicated = 0.25

[[policy_hashes]]
sha256 = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"

[[policy_hashes]]
sha256 = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
expires = 2027-01-31T00:00:00Z
"#;

    fn strict() -> AppraisalPolicy {
        AppraisalPolicy::parse(STRICT).unwrap()
    }

    fn clean() -> Claims {
        let mut c = sample_claims();
        c.blocked_requests = 0;
        c.capability_keys = vec![CapabilityKey {
            key_id: "cap-1".into(),
            algorithm: "ecdsa-p384".into(),
            fingerprint: "AA".into(),
        }];
        c
    }

    fn checks(p: &Posture) -> Vec<(&str, Tier)> {
        p.reasons
            .iter()
            .map(|r| (r.check.as_str(), r.tier))
            .collect()
    }

    #[test]
    fn a_clean_attestation_is_affirming() {
        let posture = appraise(&clean(), &strict(), &[], 0);
        assert_eq!(posture, Posture::default());
        assert_eq!(posture.tier(), Tier::Affirming);
    }

    #[test]
    fn the_example_policy_affirms_the_example_status() {
        let example = include_str!("../../../../examples/appraisal.toml");
        let policy = AppraisalPolicy::parse(example).unwrap();
        let status: serde_json::Value =
            serde_json::from_str(include_str!("../../../../examples/status.json")).unwrap();
        let mut claims = sample_claims();
        claims.version = status["version"].as_str().unwrap().into();
        claims.capability_keys = serde_json::from_value(status["capability_keys"].clone()).unwrap();
        for (field, counter) in [
            ("total_requests", &mut claims.total_requests),
            ("blocked_requests", &mut claims.blocked_requests),
            ("capability_failures", &mut claims.capability_failures),
        ] {
            *counter = status[field].as_u64().unwrap();
        }
        let posture = appraise(&claims, &policy, &[], 0);
        assert_eq!(checks(&posture), []);
        claims.capability_keys[0].fingerprint = "00".repeat(32);
        let posture = appraise(&claims, &policy, &[], 0);
        assert_eq!(
            checks(&posture),
            [("capability-key", Tier::Contraindicated)]
        );
    }

    #[test]
    fn each_posture_break_is_named() {
        let policy = strict();
        type Break = fn(&mut Claims);
        let cases: Vec<(Break, &str)> = vec![
            (|c| c.tenant_isolation = false, "tenant-isolation"),
            (|c| c.egress_firewall_enabled = false, "egress-firewall"),
            (|c| c.pii_detection_enabled = false, "pii-detection"),
            (
                |c| c.epsilon_limits.current_usage = 3.5,
                "epsilon-over-budget",
            ),
            (
                |c| {
                    c.epsilon_limits.max_epsilon = 5.0;
                },
                "epsilon-ceiling",
            ),
            (|c| c.epsilon_limits.max_delta = 1e-3, "delta-ceiling"),
            (|c| c.epsilon_limits.reset_interval = 60, "reset-interval"),
            (
                |c| c.capability_keys[0].key_id = "rogue".into(),
                "capability-key",
            ),
            (
                |c| c.capability_keys[0].fingerprint = "bb".into(),
                "capability-key",
            ),
            (|c| c.version = "1.3.9".into(), "version"),
            (|c| c.version = "nightly".into(), "version"),
            (|c| c.blocked_requests = 11, "counter-inconsistent"),
        ];
        for (breaks, name) in cases {
            let mut claims = clean();
            breaks(&mut claims);
            let posture = appraise(&claims, &policy, &[], 0);
            assert_eq!(
                checks(&posture),
                vec![(name, Tier::Contraindicated)],
                "{name}"
            );
        }
    }

    #[test]
    fn severities_follow_the_policy() {
        let policy = AppraisalPolicy::parse(
            "name = \"n\"\nrevision = 1\n[posture]\npii_detection_enabled = \"warning\"\ntenant_isolation = \"ignore\"\n",
        )
        .unwrap();
        let mut claims = clean();
        claims.pii_detection_enabled = false;
        claims.tenant_isolation = false;
        claims.egress_firewall_enabled = false;
        let posture = appraise(&claims, &policy, &[], 0);
        assert_eq!(
            checks(&posture),
            vec![
                ("egress-firewall", Tier::Contraindicated),
                ("pii-detection", Tier::Warning)
            ]
        );
    }

    fn sample(at_ms: u64, total: u64, blocked: u64, uptime: u64) -> Sample {
        Sample {
            at_ms,
            counters: Counters {
                total_requests: total,
                blocked_requests: blocked,
                capability_failures: 0,
                plan_validations: 4,
                uptime_seconds: uptime,
            },
        }
    }

    #[test]
    fn counters_must_not_go_back_within_one_run() {
        let policy = strict();
        let claims = clean(); // total 10, blocked 0, uptime 99
        let history = [sample(0, 20, 0, 50)];
        let posture = appraise(&claims, &policy, &history, 60_000);
        assert_eq!(
            checks(&posture),
            vec![("counter-regression", Tier::Contraindicated)]
        );
        // An uptime that went back is a restart: recorded, not a regression.
        let history = [sample(0, 20, 0, 500)];
        let posture = appraise(&claims, &policy, &history, 60_000);
        assert!(posture.runtime_restarted);
        assert!(posture.reasons.is_empty());
    }

    #[test]
    fn rates_are_taken_over_the_window() {
        let policy = strict();
        let mut claims = clean();
        claims.total_requests = 1000;
        claims.blocked_requests = 100;
        claims.uptime_seconds = 2000;
        // Since the start: 10 % blocked → warning.
        let posture = appraise(&claims, &policy, &[], 0);
        assert_eq!(checks(&posture), vec![("blocked-rate", Tier::Warning)]);
        // In the window, 90 of the last 100 requests were blocked → contraindicated.
        let history = [sample(0, 500, 5, 100), sample(1_000_000, 900, 10, 1500)];
        let posture = appraise(&claims, &policy, &history, 1_300_000);
        assert_eq!(
            checks(&posture),
            vec![("blocked-rate", Tier::Contraindicated)]
        );
        // Too few requests in the window to judge.
        let history = [sample(1_000_000, 995, 95, 1500)];
        assert!(appraise(&claims, &policy, &history, 1_300_000)
            .reasons
            .is_empty());
    }

    #[test]
    fn policy_hash_approval_honours_expiry() {
        let approved = strict().policy_hashes;
        let deadline = 1_800_000_000; // 2027-01-15
        assert_eq!(
            policy_hash_approval(&approved, &"ab".repeat(32), deadline),
            HashApproval::Approved
        );
        assert_eq!(
            policy_hash_approval(&approved, &"cd".repeat(32), deadline),
            HashApproval::Approved
        );
        let expiry = 1_801_353_600; // 2027-01-31T00:00:00Z
        assert_eq!(
            policy_hash_approval(&approved, &"cd".repeat(32), expiry),
            HashApproval::Expired { at: expiry }
        );
        assert_eq!(
            policy_hash_approval(&approved, &"ef".repeat(32), deadline),
            HashApproval::Unknown
        );
    }

    #[test]
    fn the_builtin_policy_is_strict_without_reference_data() {
        let policy = AppraisalPolicy::builtin();
        assert_eq!(policy.id(), format!("builtin@1#sha256:{}", policy.sha256));
        let mut claims = clean();
        claims.version = "anything".into();
        claims.capability_keys[0].key_id = "any".into();
        claims.epsilon_limits.max_epsilon = 1e9;
        assert!(appraise(&claims, &policy, &[], 0).reasons.is_empty());
        claims.pii_detection_enabled = false;
        assert_eq!(
            appraise(&claims, &policy, &[], 0).tier(),
            Tier::Contraindicated
        );
    }

    #[test]
    fn trust_vectors_claim_only_what_was_proven() {
        let affirming = Posture::default();
        let tpm = Basis {
            evidence: EvidenceKind::Tpm,
            instance_bound: true,
            firmware_appraised: true,
        };
        let a = accepted_appraisal(&tpm, &affirming, "p".into());
        assert_eq!(a.ear_status, Tier::Affirming);
        assert_eq!(a.ear_trustworthiness_vector.executables, Some(2));
        assert_eq!(a.ear_trustworthiness_vector.runtime_opaque, None);
        // An SEV-SNP guest alone: the configuration is signed, not measured.
        let snp = Basis {
            evidence: EvidenceKind::Snp,
            ..tpm
        };
        let a = accepted_appraisal(&snp, &affirming, "p".into());
        assert_eq!(
            a.ear_trustworthiness_vector.executables,
            Some(value::NO_CLAIM)
        );
        assert_eq!(a.ear_trustworthiness_vector.runtime_opaque, Some(2));
        // Offline, nothing binds a TPM's AK to its EK.
        let offline = Basis {
            instance_bound: false,
            ..tpm
        };
        let a = accepted_appraisal(&offline, &affirming, "p".into());
        assert_eq!(
            a.ear_trustworthiness_vector.instance_identity,
            Some(value::NO_CLAIM)
        );
        let mut broken = clean();
        broken.tenant_isolation = false;
        let posture = appraise(&broken, &strict(), &[], 0);
        let a = accepted_appraisal(&tpm, &posture, "p".into());
        assert_eq!(a.ear_status, Tier::Contraindicated);
        assert_eq!(a.ear_trustworthiness_vector.configuration, Some(96));
        assert_eq!(a.attestor.reasons[0].check, "tenant-isolation");
        let refused = refused_appraisal("quote-binding", "replayed", None);
        assert_eq!(refused.ear_status, Tier::Contraindicated);
        assert_eq!(
            refused.ear_trustworthiness_vector.instance_identity,
            Some(value::CRYPTO_FAILED)
        );
    }
}
