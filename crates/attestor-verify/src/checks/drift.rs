//! A drift report's checks: the same chain of trust as a TPM bundle's (EK, AK and its
//! binding, quote, PCRs, firmware, measurement log), ending in what changed instead of
//! signed claims: the measured PCR holds a configuration the sealed key is not bound to.

use std::time::SystemTime;

use aws_lc_rs::constant_time::verify_slices_are_equal;

use super::{
    ak_binding, fail, genuine_ak, quoted_state, verified_attest, Check, Expectations, VerifyError,
};
use crate::drift::{DriftClaims, DriftReport, DRIFT_PAYLOAD_TYPE};
use crate::dsse;
use crate::evidence::tpm::eventlog::measurement_digest;
use crate::evidence::tpm::keys::TpmSigningKey;
use crate::evidence::tpm::wire::{self, Attested, ClockInfo, PcrSelection};
use crate::evidence::tpm::{policy, HashAlg};
use crate::profiles::Profile;

/// What a verified drift report proves.
#[derive(Debug, Clone)]
pub struct VerifiedDrift {
    /// The agent's claims; `kernel_config_hash` is what the TPM measures now.
    pub claims: DriftClaims,
    /// The AK that quoted (a ledger compares it with the one it pinned).
    pub ak_public: Vec<u8>,
    /// The quote's clock, for ordering against accepted attestations.
    pub clock: ClockInfo,
    /// The bank quoted.
    pub pcr_bank: HashAlg,
}

/// Checks a drift report against a profile: a genuine TPM's AK quoted the measured PCR,
/// bound to the report's claims and `expect.nonce`; the measurement log replays to it
/// and ends in the claimed configuration; the certified sealed key's policy does not
/// hold for it (the key really refuses); and the report is fresh at `expect.now`.
pub fn verify_drift_report(
    report: &DriftReport,
    profile: &Profile,
    expect: &Expectations,
) -> Result<VerifiedDrift, VerifyError> {
    let now = expect.now.unwrap_or_else(SystemTime::now);
    let tpm = profile
        .tpm
        .as_ref()
        .ok_or_else(|| fail(Check::EvidenceKind, "the profile has no [tpm] section"))?;
    let ev = &report.evidence;
    let claims = report.claims().map_err(|e| fail(Check::Statement, e))?;
    let now_secs = crate::time::unix_ms(now) / 1000;
    let age = now_secs.abs_diff(claims.detected_at);
    if age > profile.max_age_seconds {
        return Err(fail(
            Check::Freshness,
            format!(
                "drift detected at {} is {age} s from now, over the {} s window",
                claims.detected_at, profile.max_age_seconds
            ),
        ));
    }

    let ak = genuine_ak(ev, tpm, now)?;
    ak_binding::check(ev, tpm, &expect.ak, now)?;

    // The quote commits to these claims and the verifier's nonce.
    let pae = dsse::pae(DRIFT_PAYLOAD_TYPE, &report.payload);
    let quoted = quoted_state(ev, tpm, &ak, (&expect.nonce, &report.nonce), &pae)?;

    // The measurement log explains the measured PCR and ends in the claimed configuration.
    let measured = quoted.measured_value(ev, tpm)?;
    let last = ev.event_log.last().ok_or_else(|| {
        fail(
            Check::MeasurementMatchesClaims,
            "event log has no measurement",
        )
    })?;
    let reported = hex::decode(&claims.kernel_config_hash).unwrap_or_default();
    let extended = hex::encode(measurement_digest(quoted.bank, &reported));
    if last.data != claims.kernel_config_hash || last.digests.get(&quoted.bank) != Some(&extended) {
        return Err(fail(
            Check::MeasurementMatchesClaims,
            format!(
                "last measurement {} is not the reported kernel_config_hash {}",
                last.data, claims.kernel_config_hash
            ),
        ));
    }

    // The sealed key this AK certified would not sign now: a drift, not a lost signature.
    let sealed = &ev.sealed_key;
    let certify = verified_attest(&sealed.certification, &ak)
        .map_err(|e| fail(Check::SealedKeyCertification, e))?;
    let sealed_key = TpmSigningKey::from_public(&sealed.public)
        .map_err(|e| fail(Check::SealedKeyCertification, e))?;
    let name_alg = sealed_key.public().name_alg();
    match &certify.attested {
        Attested::Certify { name, .. }
            if certify.attest_type == wire::TPM_ST_ATTEST_CERTIFY
                && verify_slices_are_equal(&wire::object_name(&sealed.public, name_alg), name)
                    .is_ok() => {}
        _ => {
            return Err(fail(
                Check::SealedKeyCertification,
                "the AK did not certify the report's sealed key",
            ))
        }
    }
    let selection = [PcrSelection {
        bank: quoted.bank,
        pcrs: vec![tpm.measured_pcr],
    }];
    let would_sign = policy::sealed_key_policy(name_alg, &selection, &[measured]);
    if sealed_key.public().auth_policy() == would_sign {
        return Err(fail(
            Check::SealedKeyPolicy,
            "the sealed key is bound to the measured value: nothing drifted",
        ));
    }

    Ok(VerifiedDrift {
        claims,
        ak_public: ev.ak_public.clone(),
        clock: quoted.clock,
        pcr_bank: quoted.bank,
    })
}
