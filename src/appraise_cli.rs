//! `attestor verify --appraisal FILE`: the ledger's posture judgement, offline. The
//! evidence is checked first; then the claims are judged by the same policy file a ledger
//! tenant uses, and the result is written as an EAR.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use attestor_verify::appraisal::{
    accepted_appraisal, appraise, refused_appraisal, AppraisalPolicy, ApprovedPolicyHash,
};
use attestor_verify::checks::{check_policy_hashes, Verified, VerifyError};
use attestor_verify::ear::{self, Appraisal, Ear, EarSigner, Subject, Tier, VerifierId};
use attestor_verify::profiles::Profile;

/// Where the judgement goes.
pub(crate) struct EarOutput {
    /// The EAR file to write, if any.
    pub out: Option<PathBuf>,
    /// The key (PKCS#8 PEM) to sign it with; unsigned (`alg: none`) without one.
    pub key: Option<PathBuf>,
}

/// Judges what the evidence checks left: `evidence` is their outcome.
pub(crate) fn judge(
    evidence: Result<Verified, VerifyError>,
    policy_file: &Path,
    expected_hash: Option<&str>,
    profile: &Profile,
    nonce: &[u8],
    output: &EarOutput,
) -> Result<ExitCode, String> {
    let policy = AppraisalPolicy::load(policy_file).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let now_ms = attestor_verify::time::unix_ms(now);
    let mut approved = policy.policy_hashes.clone();
    approved.extend(expected_hash.map(ApprovedPolicyHash::always));
    let evidence = evidence.and_then(|verified| {
        if !approved.is_empty() {
            check_policy_hashes(&verified.claims, &approved, now)?;
        }
        Ok(verified)
    });
    let (appraisal, subject) = match &evidence {
        Err(e) => {
            outln!("FAILED {}: {}", e.check, e.reason)?;
            let refused = refused_appraisal(e.check.name(), &e.reason, Some(policy.id()));
            (refused, subject_of(None))
        }
        Ok(verified) => {
            outln!(
                "OK: attestation {} of policy {} verified against profile {:?}",
                verified.claims.attestation_id,
                verified.claims.policy_hash,
                profile.name,
            )?;
            let basis = verified.appraisal_basis(profile);
            let posture = appraise(&verified.claims, &policy, &[], now_ms);
            let mut subject = subject_of(Some(verified));
            subject.evidence = Some(basis.evidence.name().to_string());
            (accepted_appraisal(&basis, &posture, policy.id()), subject)
        }
    };
    report(&appraisal, &policy)?;
    let status = appraisal.ear_status;
    if evidence.is_ok() && status == Tier::Contraindicated {
        if let Some(first) = appraisal.attestor.reasons.first() {
            outln!("FAILED {}: {}", first.check, first.detail)?;
        }
    }
    let ear = Ear::new(
        VerifierId::attestor("verify"),
        now_ms / 1000,
        nonce,
        appraisal,
        subject,
    );
    if let Some(out) = &output.out {
        write_ear(&ear, out, output.key.as_deref())?;
    }
    Ok(match status {
        Tier::Contraindicated | Tier::None => ExitCode::from(1),
        Tier::Warning | Tier::Affirming => ExitCode::SUCCESS,
    })
}

fn subject_of(verified: Option<&Verified>) -> Subject {
    let claims = verified.map(|v| &v.claims);
    Subject {
        submission: "bundle".into(),
        attestation_id: claims.map(|c| c.attestation_id.clone()),
        policy_hash: claims.map(|c| c.policy_hash.clone()),
        kernel_config_hash: claims.map(|c| c.kernel_config_hash.clone()),
        version: claims.map(|c| c.version.clone()),
        ..Subject::default()
    }
}

fn report(appraisal: &Appraisal, policy: &AppraisalPolicy) -> Result<(), String> {
    let vector = appraisal
        .ear_trustworthiness_vector
        .entries()
        .iter()
        .map(|(facet, value)| format!("{facet}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    outln!(
        "EAR {} by appraisal policy {} ({vector})",
        appraisal.ear_status.name(),
        policy.id()
    )?;
    for reason in &appraisal.attestor.reasons {
        outln!(
            "  {} {}: {}",
            reason.tier.name(),
            reason.check,
            reason.detail
        )?;
    }
    Ok(())
}

fn write_ear(ear: &Ear, out: &Path, key: Option<&Path>) -> Result<(), String> {
    let token = match key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let signer =
                EarSigner::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
            signer.sign(ear).map_err(|e| e.to_string())?
        }
        None => {
            outln!(
                "note: the EAR in {} is unsigned (alg \"none\"): pass --ear-key to sign it",
                out.display()
            )?;
            ear::unsigned(ear).map_err(|e| e.to_string())?
        }
    };
    std::fs::write(out, format!("{token}\n"))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}
