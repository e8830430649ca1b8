//! The offline verifier: the only place that decides whether a bundle is trusted.
//!
//! Checks run in a fixed order and the first failure is reported with the [`Check`] it
//! belongs to. The order is chosen so each broken binding is reported as itself: the
//! genuine TPM (EK chain), then the AK in it (its attributes, then its binding to that
//! TPM), then what the AK vouches for; the envelope signature is checked before the
//! quote's binding to the envelope, the PCR digest before the event-log replay, and
//! content checks (freshness, policy) last. SEV-SNP bundles take their own checks
//! ([`snp`]) and then the same content checks.

mod ak_binding;
mod drift;
mod measured_boot;
mod snp;

pub use ak_binding::{AkBinding, AkTrust};
pub use drift::{verify_drift_report, VerifiedDrift};
pub use measured_boot::verify_firmware_log;
pub use snp::{check_report_policy, verify_signed_report};

use std::time::SystemTime;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use thiserror::Error;

use crate::appraisal::{policy_hash_approval, ApprovedPolicyHash, Basis, HashApproval};
use crate::bundle::{Bundle, Evidence, EvidenceKind, SignedAttest, TpmEvidence};
use crate::claims::{Claims, Statement, PAYLOAD_TYPE};
use crate::dsse::{self, VerifyingKey};
use crate::evidence::tpm::eventlog::measurement_digest;
use crate::evidence::tpm::keys::{
    ek_public_key_sha256, parse_tpm_public, KeyError, SigningAlgorithm, TpmSigningKey,
};
use crate::evidence::tpm::wire::{self, Attest, Attested, PcrSelection};
use crate::evidence::tpm::{policy, HashAlg};
use crate::evidence::tpm_commitment;
use crate::profiles::{Profile, TpmProfile};

/// The checks, in the order they run (TPM checks, then SEV-SNP's, then content checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The bundle carries the evidence the profile (or the ledger's enrollment) requires.
    EvidenceKind,
    /// The EK certificate chains to one of the profile's EK trust anchors, valid now (or,
    /// for a TPM without one, the EK public-key hash is on the profile's allow-list).
    EkChain,
    /// The AK is a TPM-resident, restricted, sign-only key of a supported algorithm (ECDSA
    /// P-384 or P-256, RSA-2048 RSASSA or RSAPSS) as strong as the profile requires.
    AttestationKey,
    /// The AK is in the EK's TPM: certified by an enrollment CA or as the IAK by a CA the
    /// profile trusts, or pinned by its TPM Name ([`AkTrust`]).
    AkBinding,
    /// The AK certified (TPM2_Certify) the sealed key, which is fixedTPM, usable only
    /// through its policy, and of a supported algorithm as strong as the profile requires.
    SealedKeyCertification,
    /// The sealed key (for SEV-SNP alone: the key the report commits to) signed the
    /// envelope.
    EnvelopeSignature,
    /// The payload is an attestor in-toto statement of the expected payload type.
    Statement,
    /// The quote is a TPM-generated TPM2_Quote signed by the AK.
    QuoteSignature,
    /// The quote's qualifying data commits to this envelope and the expected nonce.
    QuoteBinding,
    /// The bundle's PCR values are exactly the quoted ones, in a bank the profile allows.
    PcrDigest,
    /// Every firmware PCR holds one of the profile's reference values for that bank.
    FirmwarePcrs,
    /// The firmware (UEFI) event log, when carried or required, parses and replays to
    /// every quoted PCR but the measured one.
    FirmwareEventLog,
    /// PCR 7 measures Secure Boot on (when the profile requires it).
    SecureBoot,
    /// PK, KEK and db hold only entries the profile allows.
    SecureBootKeys,
    /// dbx holds every revocation the profile requires.
    SecureBootDbx,
    /// Every EV_EFI_BOOT_SERVICES_APPLICATION is one the profile allows.
    BootApplications,
    /// The event log replays to the quoted value of the measured PCR.
    EventLogReplay,
    /// The sealed key can sign only while the measured PCR holds the quoted value.
    SealedKeyPolicy,
    /// The last measurement is the claimed `kernel_config_hash`, and the quoted bank's
    /// digest of it is derived from that hash.
    MeasurementMatchesClaims,
    /// The SEV-SNP report parses: length, supported version, canonical bytes.
    SnpReport,
    /// The report is laid out for the profile's processor generation.
    ReportProduct,
    /// A VCEK is at hand and chains to the pinned ARK and ASK, all valid now.
    VcekChain,
    /// The VCEK signed the report.
    ReportSignature,
    /// The VCEK is the one of the report's chip at its reported TCB.
    VcekBinding,
    /// The report version is at least the profile's minimum.
    ReportVersion,
    /// The launch measurement is one the profile allows.
    LaunchMeasurement,
    /// The guest policy allows nothing the profile forbids (debugging, a migration agent,
    /// SMT).
    GuestPolicy,
    /// The report was requested at a VMPL the profile allows.
    Vmpl,
    /// Every reported TCB component is at least the profile's minimum.
    TcbMinimum,
    /// SEV-SNP runs `EnvelopeSignature` and `Statement` here, then this.
    ReportBinding,
    /// The claims' timestamp is within the profile's `max_age_seconds` of now.
    Freshness,
    /// The claims' `policy_hash` is the expected one, or one the appraisal policy approves.
    PolicyHash,
    /// The claims' `policy_hash` was approved, but its approval has expired.
    PolicyHashExpired,
}

impl Check {
    /// Stable, kebab-case name used in CLI output and by the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Check::EvidenceKind => "evidence-kind",
            Check::EkChain => "ek-chain",
            Check::AttestationKey => "attestation-key",
            Check::AkBinding => "ak-binding",
            Check::SealedKeyCertification => "sealed-key-certification",
            Check::EnvelopeSignature => "envelope-signature",
            Check::Statement => "statement",
            Check::QuoteSignature => "quote-signature",
            Check::QuoteBinding => "quote-binding",
            Check::PcrDigest => "pcr-digest",
            Check::FirmwarePcrs => "firmware-pcrs",
            Check::FirmwareEventLog => "firmware-event-log",
            Check::SecureBoot => "secure-boot",
            Check::SecureBootKeys => "secure-boot-keys",
            Check::SecureBootDbx => "secure-boot-dbx",
            Check::BootApplications => "boot-applications",
            Check::EventLogReplay => "event-log-replay",
            Check::SealedKeyPolicy => "sealed-key-policy",
            Check::MeasurementMatchesClaims => "measurement-matches-claims",
            Check::SnpReport => "snp-report",
            Check::ReportProduct => "report-product",
            Check::VcekChain => "vcek-chain",
            Check::ReportSignature => "report-signature",
            Check::VcekBinding => "vcek-binding",
            Check::ReportVersion => "report-version",
            Check::ReportBinding => "report-binding",
            Check::LaunchMeasurement => "launch-measurement",
            Check::GuestPolicy => "guest-policy",
            Check::Vmpl => "vmpl",
            Check::TcbMinimum => "tcb-minimum",
            Check::Freshness => "freshness",
            Check::PolicyHash => "policy-hash",
            Check::PolicyHashExpired => "policy-hash-expired",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The first check a bundle failed, and why.
#[derive(Debug, Error)]
#[error("check {check} failed: {reason}")]
pub struct VerifyError {
    /// The first check that failed; later ones did not run.
    pub check: Check,
    /// What was wrong, for people.
    pub reason: String,
}

fn fail(check: Check, reason: impl std::fmt::Display) -> VerifyError {
    VerifyError {
        check,
        reason: reason.to_string(),
    }
}

/// What the caller expects beyond the profile.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Required `policy_hash` (lowercase hex); `None` skips only that check.
    pub policy_hash: Option<String>,
    /// Verifier nonce the evidence must commit to (empty offline).
    pub nonce: Vec<u8>,
    /// "Now" for freshness and certificate validity; `None` means the system clock.
    pub now: Option<SystemTime>,
    /// Evidence the bundle must carry, over the profile's `evidence` (a ledger requires
    /// what the agent enrolled with).
    pub evidence: Option<EvidenceKind>,
    /// What shows the AK is in the EK's TPM (default: a certificate the profile trusts).
    pub ak: AkTrust,
}

/// A bundle that passed every check, with what later stages need.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The attested claims, from the payload the hardware-bound key signed.
    pub claims: Claims,
    /// The exact payload bytes the signature covers.
    pub payload: Vec<u8>,
    /// Who vouched for the envelope: what a ledger pins at enrollment and compares later.
    pub platform: Platform,
}

/// The hardware identity behind a verified bundle.
#[derive(Debug, Clone)]
pub enum Platform {
    /// A TPM: its AK and the quote's clock.
    Tpm(TpmIdentity),
    /// An SEV-SNP guest: what its report establishes.
    Snp(SnpIdentity),
    /// A confidential VM's vTPM and its SEV-SNP report, bound to the same envelope.
    TpmSnp(TpmIdentity, SnpIdentity),
}

/// A TPM's attestation key and the quote's clock.
#[derive(Debug, Clone)]
pub struct TpmIdentity {
    /// AK public area (TPMT_PUBLIC) the quote is signed with.
    pub ak_public: Vec<u8>,
    /// What showed the AK is in the EK's TPM.
    pub ak_binding: AkBinding,
    /// TPM clock of the quote, for reboot and replay detection. `safe == 0` (after an
    /// unorderly TPM shutdown, until the TPM next saves its clock) is accepted: the clock
    /// then must not be trusted for ordering, which is the ledger's concern, not a reason to
    /// refuse every host after a power loss.
    pub clock: wire::ClockInfo,
    /// The AK's signing algorithm.
    pub ak_algorithm: SigningAlgorithm,
    /// The sealed key's signing algorithm.
    pub sealed_key_algorithm: SigningAlgorithm,
    /// The bank the quote covers.
    pub pcr_bank: HashAlg,
}

/// What a verified SEV-SNP report establishes. A ledger should pin `chip_id` and
/// `signing_key` at enrollment: the key is sealed to this launch measurement and policy
/// on this chip, so it stays the same across reboots of the same image and changes when
/// either changes; the VCEK itself changes with every TCB update and is not an identity.
#[derive(Debug, Clone)]
pub struct SnpIdentity {
    /// CHIP_ID (64 bytes) = the VCEK's hwID.
    pub chip_id: Vec<u8>,
    /// The envelope's signing key (SEC1), committed to by REPORT_DATA.
    pub signing_key: Vec<u8>,
    /// MEASUREMENT: the launch digest of the guest image, one the profile allows.
    pub measurement: [u8; 48],
    /// HOST_DATA: what the host supplied at launch; unchecked, the host chooses it.
    pub host_data: [u8; 32],
    /// Per-launch identifier: changes on every guest launch.
    pub report_id: [u8; 32],
    /// REPORTED_TCB: the TCB the VCEK is for, at least the profile's minimum.
    pub reported_tcb: crate::evidence::snp::certs::Tcb,
    /// The VMPL the report was requested at (0 is the most privileged), one the profile
    /// allows.
    pub vmpl: u32,
    /// GUEST_SVN: the guest's security version number (from its ID block); unchecked.
    pub guest_svn: u32,
}

impl Verified {
    /// The TPM behind the bundle, if it carries TPM evidence.
    pub fn tpm(&self) -> Option<&TpmIdentity> {
        match &self.platform {
            Platform::Tpm(t) | Platform::TpmSnp(t, _) => Some(t),
            Platform::Snp(_) => None,
        }
    }

    /// The SEV-SNP report's facts, if the bundle carries one.
    pub fn snp(&self) -> Option<&SnpIdentity> {
        match &self.platform {
            Platform::Snp(s) | Platform::TpmSnp(_, s) => Some(s),
            Platform::Tpm(_) => None,
        }
    }

    /// The AK of a bundle with TPM evidence (`None` for SEV-SNP alone).
    pub fn ak_public(&self) -> Option<&[u8]> {
        self.tpm().map(|t| t.ak_public.as_slice())
    }

    /// The quote's clock of a bundle with TPM evidence (`None` for SEV-SNP alone).
    pub fn tpm_clock(&self) -> Option<&wire::ClockInfo> {
        self.tpm().map(|t| &t.clock)
    }

    /// What the checks established under `profile`, for the trust vector. The instance
    /// is bound: an AK passed `ak-binding` (certified after credential activation, an
    /// IAK, or pinned), and an SEV-SNP report's key is the chip's by its VCEK chain.
    pub fn appraisal_basis(&self, profile: &Profile) -> Basis {
        let evidence = match &self.platform {
            Platform::Tpm(_) => EvidenceKind::Tpm,
            Platform::Snp(_) => EvidenceKind::Snp,
            Platform::TpmSnp(..) => EvidenceKind::TpmSnp,
        };
        let firmware_pcrs_compared = profile
            .tpm
            .as_ref()
            .is_some_and(|tpm| !tpm.firmware_pcr_indices().is_empty());
        Basis {
            evidence,
            instance_bound: true,
            firmware_appraised: self.snp().is_some() || firmware_pcrs_compared,
        }
    }
}

/// Runs every check on a bundle against a profile.
pub fn verify_bundle(
    bundle: &Bundle,
    profile: &Profile,
    expect: &Expectations,
) -> Result<Verified, VerifyError> {
    let now = expect.now.unwrap_or_else(SystemTime::now);
    let carried = bundle.evidence.kind();
    if let Some(required) = expect.evidence.or(profile.evidence) {
        if carried != required {
            return Err(fail(
                Check::EvidenceKind,
                format!(
                    "{} evidence is required, the bundle carries {}",
                    required.name(),
                    carried.name()
                ),
            ));
        }
    }
    let tpm_profile = || {
        profile.tpm.as_ref().ok_or_else(|| {
            fail(
                Check::EkChain,
                format!("profile {:?} has no [tpm] section", profile.name),
            )
        })
    };
    let snp_profile = || {
        profile.snp.as_ref().ok_or_else(|| {
            fail(
                Check::VcekChain,
                format!("profile {:?} has no [snp] section", profile.name),
            )
        })
    };
    let verified = match &bundle.evidence {
        Evidence::Tpm(evidence) => verify_tpm(bundle, evidence, tpm_profile()?, expect, now)?,
        Evidence::Snp(evidence) => snp::verify_snp(bundle, evidence, snp_profile()?, expect, now)?,
        Evidence::TpmSnp(evidence) => {
            let snp = snp_profile()?;
            let tpm = verify_tpm(bundle, &evidence.tpm, tpm_profile()?, expect, now)?;
            // The report must vouch for the key the TPM vouched for: the one that signed.
            let sealed_key = wire::parse_public(&evidence.tpm.sealed_key.public)
                .and_then(|k| k.sec1_uncompressed())
                .map_err(|e| fail(Check::ReportBinding, format!("sealed key: {e}")))?;
            if evidence.snp.signing_key != sealed_key {
                return Err(fail(
                    Check::ReportBinding,
                    "the report commits to a signing key other than the TPM's sealed key",
                ));
            }
            let report = snp::verify_snp(bundle, &evidence.snp, snp, expect, now)?;
            match (tpm.platform, report.platform) {
                (Platform::Tpm(t), Platform::Snp(s)) => Verified {
                    platform: Platform::TpmSnp(t, s),
                    ..tpm
                },
                _ => return Err(fail(Check::EvidenceKind, "verifier mixed up evidence")),
            }
        }
    };
    check_claims(&verified.claims, profile, expect, now)?;
    Ok(verified)
}

fn verify_tpm(
    bundle: &Bundle,
    ev: &TpmEvidence,
    profile: &TpmProfile,
    expect: &Expectations,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let ak = genuine_ak(ev, profile, now)?;

    // Is the AK in that TPM?
    let ak_binding = ak_binding::check(ev, profile, &expect.ak, now)?;

    // Does the AK vouch that the sealed key lives in this TPM?
    // The certification does not change between attestations: its signature is checked
    // once per profile (see CertificationCache), what it says every time.
    let sealed = &ev.sealed_key;
    let sealed_key = profile.certifications.verify(
        &ev.ak_public,
        &sealed.public,
        (&sealed.certification).into(),
        |signature| {
            signature
                .map_err(|e| fail(Check::SealedKeyCertification, format!("AK signature: {e}")))?;
            certified_sealed_key(&sealed.public, &sealed.certification.attest, profile)
        },
    )?;
    let name_alg = sealed_key.public().name_alg();

    // Did that key sign this envelope?
    let envelope_key = sealed_key
        .dsse_key()
        .map_err(|e| fail(Check::EnvelopeSignature, e))?;
    let (payload, statement) = signed_statement_with(bundle, &envelope_key)?;

    // Is the quote genuine, and bound to this envelope and nonce? Are the PCRs the
    // quoted ones, in a bank the profile allows, and do the firmware PCRs and firmware
    // log pass the profile?
    let pae = dsse::pae(&bundle.envelope.payload_type, &bundle.envelope.payload);
    let quoted = quoted_state(ev, profile, &ak, (&expect.nonce, &bundle.nonce), &pae)?;
    let bank = quoted.bank;

    // Does the measurement log explain the measured PCR?
    let measured = quoted.measured_value(ev, profile)?;

    // Can the sealed key sign only while the measured PCR holds this value?
    let measured_selection = [PcrSelection {
        bank,
        pcrs: vec![profile.measured_pcr],
    }];
    let expected_policy = policy::sealed_key_policy(name_alg, &measured_selection, &[measured]);
    if sealed_key.public().auth_policy() != expected_policy {
        return Err(fail(
            Check::SealedKeyPolicy,
            "sealed key's policy does not bind it to the quoted measured PCR value",
        ));
    }

    // Is the measurement the configuration the claims describe?
    let last = ev.event_log.last().ok_or_else(|| {
        fail(
            Check::MeasurementMatchesClaims,
            "event log has no measurement",
        )
    })?;
    let claims = statement.predicate;
    // Only the quoted bank's digest was replayed; it must be the one derived from the
    // claimed (SHA-384) hash, so the claim is tied to the quoted PCR in either bank.
    let claimed = hex::decode(&claims.kernel_config_hash).unwrap_or_default();
    let extended = hex::encode(measurement_digest(bank, &claimed));
    if last.data != claims.kernel_config_hash || last.digests.get(&bank) != Some(&extended) {
        return Err(fail(
            Check::MeasurementMatchesClaims,
            format!(
                "last measurement {} ({} digest {}) is not the claimed kernel_config_hash {}",
                last.data,
                bank.name(),
                last.digests.get(&bank).map_or("absent", String::as_str),
                claims.kernel_config_hash
            ),
        ));
    }

    Ok(Verified {
        claims,
        payload,
        platform: Platform::Tpm(TpmIdentity {
            ak_public: ev.ak_public.clone(),
            ak_binding,
            clock: quoted.clock,
            ak_algorithm: ak.algorithm(),
            sealed_key_algorithm: sealed_key.algorithm(),
            pcr_bank: bank,
        }),
    })
}

/// What a certification whose signature verified says: a TPM2_Certify of the sealed key
/// `sealed_public`, which is fit to be the sealed key (resident, policy-bound, strong enough).
fn certified_sealed_key(
    sealed_public: &[u8],
    attest: &[u8],
    profile: &TpmProfile,
) -> Result<TpmSigningKey, VerifyError> {
    let certify = tpm_generated(attest).map_err(|e| fail(Check::SealedKeyCertification, e))?;
    let certified_name = match &certify.attested {
        Attested::Certify { name, .. } if certify.attest_type == wire::TPM_ST_ATTEST_CERTIFY => {
            name
        }
        _ => {
            return Err(fail(
                Check::SealedKeyCertification,
                "certification is not a TPM2_Certify attestation",
            ))
        }
    };
    let sealed_key = TpmSigningKey::from_public(sealed_public)
        .map_err(|e| fail(Check::SealedKeyCertification, e))?;
    let name_alg = sealed_key.public().name_alg();
    if wire::object_name(sealed_public, name_alg) != *certified_name {
        return Err(fail(
            Check::SealedKeyCertification,
            "certified name is not the name of the bundle's sealed key",
        ));
    }
    let s = sealed_key.public().object_attributes();
    if !(s.fixed_tpm()
        && s.fixed_parent()
        && s.sensitive_data_origin()
        && s.sign()
        && !s.restricted()
        && !s.user_with_auth())
    {
        return Err(fail(
            Check::SealedKeyCertification,
            "sealed key must be fixedTPM, fixedParent, sensitiveDataOrigin, sign, not \
             restricted, and usable only through its policy (userWithAuth clear)",
        ));
    }
    check_strength(
        sealed_key.algorithm(),
        profile,
        Check::SealedKeyCertification,
        "sealed key",
    )?;
    Ok(sealed_key)
}

/// The EK is trusted and the AK is a restricted signing key, strong enough, fit to quote;
/// parsed once for every signature it made.
fn genuine_ak(
    ev: &TpmEvidence,
    profile: &TpmProfile,
    now: SystemTime,
) -> Result<TpmSigningKey, VerifyError> {
    check_ek(ev, profile, now)?;
    let ak = attestation_key(&ev.ak_public)?;
    check_strength(ak.algorithm(), profile, Check::AttestationKey, "AK")?;
    Ok(ak)
}

/// The PCR values a genuine quote vouches for.
struct QuotedState {
    bank: HashAlg,
    /// Quoted PCRs, ascending, and their values.
    pcrs: Vec<(u8, Vec<u8>)>,
    clock: wire::ClockInfo,
}

impl QuotedState {
    fn value(&self, pcr: u8) -> Option<&[u8]> {
        self.pcrs
            .iter()
            .find(|(p, _)| *p == pcr)
            .map(|(_, v)| v.as_slice())
    }

    /// The measured PCR's value, once the measurement log replays to it.
    fn measured_value(&self, ev: &TpmEvidence, profile: &TpmProfile) -> Result<&[u8], VerifyError> {
        let measured = self.value(profile.measured_pcr).ok_or_else(|| {
            fail(
                Check::EventLogReplay,
                format!("measured PCR {} is not quoted", profile.measured_pcr),
            )
        })?;
        let replayed = ev
            .event_log
            .replay(profile.measured_pcr, self.bank)
            .map_err(|e| fail(Check::EventLogReplay, e))?;
        if replayed != measured {
            return Err(fail(
                Check::EventLogReplay,
                format!(
                    "event log replays to {}, quoted {} PCR {} is {}",
                    hex::encode(&replayed),
                    self.bank.name(),
                    profile.measured_pcr,
                    hex::encode(measured)
                ),
            ));
        }
        Ok(measured)
    }
}

/// The quote is the AK's, committed to `pae` and the expected nonce (`nonces`: expected,
/// carried); the supplied PCR values are exactly the quoted ones, in a bank the profile
/// allows; the firmware PCRs hold reference values and the firmware event log explains
/// the others.
fn quoted_state(
    ev: &TpmEvidence,
    profile: &TpmProfile,
    ak: &TpmSigningKey,
    (expected_nonce, carried_nonce): (&[u8], &[u8]),
    pae: &[u8],
) -> Result<QuotedState, VerifyError> {
    let quote = verified_attest(&ev.quote, ak).map_err(|e| fail(Check::QuoteSignature, e))?;
    let (selection, pcr_digest) = match &quote.attested {
        Attested::Quote {
            pcr_select,
            pcr_digest,
        } if quote.attest_type == wire::TPM_ST_ATTEST_QUOTE => (pcr_select, pcr_digest),
        _ => return Err(fail(Check::QuoteSignature, "not a TPM2_Quote attestation")),
    };
    if expected_nonce != carried_nonce {
        return Err(fail(
            Check::QuoteBinding,
            "the submission's nonce is not the expected nonce",
        ));
    }
    let commitment = tpm_commitment(expected_nonce, pae);
    verify_slices_are_equal(&quote.extra_data, &commitment).map_err(|_| {
        fail(
            Check::QuoteBinding,
            "quote qualifying data does not commit to this envelope",
        )
    })?;

    // Are the supplied PCR values exactly the quoted ones, in a bank the profile allows?
    let bank = ev.pcr_bank;
    if !profile.pcr_banks.contains(&bank) {
        let allowed: Vec<&str> = profile.pcr_banks.iter().map(|b| b.name()).collect();
        return Err(fail(
            Check::PcrDigest,
            format!(
                "the bundle's PCRs are in the {} bank; the profile allows {}",
                bank.name(),
                allowed.join(", ")
            ),
        ));
    }
    let quoted = quoted_pcrs(selection, bank).map_err(|e| fail(Check::PcrDigest, e))?;
    let supplied: Vec<u8> = ev.pcrs.keys().copied().collect();
    if supplied != quoted {
        return Err(fail(
            Check::PcrDigest,
            format!(
                "quote covers {} PCRs {quoted:?}, bundle supplies {supplied:?}",
                bank.name()
            ),
        ));
    }
    let mut pcrs = Vec::with_capacity(quoted.len());
    for (pcr, value) in &ev.pcrs {
        let bytes = hex::decode(value)
            .ok()
            .filter(|v| v.len() == bank.digest_len())
            .ok_or_else(|| fail(Check::PcrDigest, format!("PCR {pcr} value is malformed")))?;
        pcrs.push((*pcr, bytes));
    }
    let refs: Vec<&[u8]> = pcrs.iter().map(|(_, v)| v.as_slice()).collect();
    // The TPM hashes the quoted values with the signing scheme's hash.
    if wire::quote_pcr_digest(ak.algorithm().hash(), &refs) != *pcr_digest {
        return Err(fail(
            Check::PcrDigest,
            "PCR values do not hash to the quoted PCR digest",
        ));
    }
    let state = QuotedState {
        bank,
        pcrs,
        clock: quote.clock_info,
    };

    // Do the firmware PCRs hold reference values?
    let references = profile.firmware_pcrs.get(&bank).ok_or_else(|| {
        fail(
            Check::FirmwarePcrs,
            format!(
                "profile has no firmware values for the {} bank",
                bank.name()
            ),
        )
    })?;
    for (pcr, allowed) in references {
        match state.value(*pcr) {
            Some(v) if allowed.iter().any(|a| a.as_slice() == v) => {}
            Some(v) => {
                let allowed: Vec<String> = allowed.iter().map(hex::encode).collect();
                return Err(fail(
                    Check::FirmwarePcrs,
                    format!(
                        "{} PCR {pcr} is {}, profile allows {}",
                        bank.name(),
                        hex::encode(v),
                        allowed.join(" or ")
                    ),
                ));
            }
            None => {
                return Err(fail(
                    Check::FirmwarePcrs,
                    format!("PCR {pcr} is not quoted"),
                ))
            }
        }
    }

    // Does the firmware event log explain the other PCRs, and pass the profile?
    let quoted_values = state.pcrs.iter().map(|(p, v)| (*p, v.as_slice()));
    measured_boot::check_firmware_log(ev, profile, &quoted_values.collect())?;
    Ok(state)
}

/// The EK is trusted: its certificate chains to one of the profile's EK CAs, valid now,
/// or (a TPM without an EK certificate) its public key's hash is on the profile's
/// allow-list. A bundle that carries both must carry the certified EK.
fn check_ek(ev: &TpmEvidence, profile: &TpmProfile, now: SystemTime) -> Result<(), VerifyError> {
    let Some((ek_leaf, bundle_intermediates)) = ev.ek_certificates.split_first() else {
        if ev.ek_public.is_empty() {
            return Err(fail(
                Check::EkChain,
                "bundle carries no EK certificate and no EK public area",
            ));
        }
        return check_ek_allowed(&ev.ek_public, profile)
            .map(|_| ())
            .map_err(|e| fail(Check::EkChain, e));
    };
    if profile.ek_trust_anchors.is_empty() {
        return Err(fail(
            Check::EkChain,
            "the profile trusts no EK CA (only its EK allow-list), yet the bundle carries an \
             EK certificate",
        ));
    }
    // Paths this profile validated before are not checked again (see ChainCache).
    profile
        .ek_chains
        .verify(
            ek_leaf,
            &[bundle_intermediates, &profile.ek_intermediates],
            &profile.ek_trust_anchors,
            now,
        )
        .map_err(|e| fail(Check::EkChain, e))?;
    if !ev.ek_public.is_empty() {
        let certified = parse_tpm_public(&ev.ek_public)
            .map_err(KeyError::from)
            .and_then(|ek| ek.matches_certificate(ek_leaf))
            .map_err(|e| fail(Check::EkChain, e))?;
        if !certified {
            return Err(fail(
                Check::EkChain,
                "the bundle's EK public area is not the key of its EK certificate",
            ));
        }
    }
    Ok(())
}

/// Checks that `ek_public` (TPMT_PUBLIC) is an EK whose public-key hash the profile's
/// allow-list holds; returns the hash.
pub fn check_ek_allowed(ek_public: &[u8], profile: &TpmProfile) -> Result<[u8; 32], String> {
    let ek = parse_tpm_public(ek_public).map_err(|e| format!("EK public area: {e}"))?;
    let a = ek.object_attributes();
    if !(a.restricted() && a.decrypt() && a.fixed_tpm()) {
        return Err("the EK public area is not a fixedTPM restricted decryption key".into());
    }
    let hash = ek_public_key_sha256(ek_public).map_err(|e| e.to_string())?;
    if !profile.ek_allowlist.contains(&hash) {
        return Err(format!(
            "no EK certificate, and the EK public key hash {} is not on the profile's EK \
             allow-list",
            hex::encode(hash)
        ));
    }
    Ok(hash)
}

/// Refuses a key weaker than the profile's `min_key_strength`.
pub fn check_strength(
    algorithm: SigningAlgorithm,
    profile: &TpmProfile,
    check: Check,
    what: &str,
) -> Result<(), VerifyError> {
    if algorithm.security_bits() < profile.min_key_strength {
        return Err(fail(
            check,
            format!(
                "{what} is {algorithm} ({}-bit strength); the profile requires at least {} bits",
                algorithm.security_bits(),
                profile.min_key_strength
            ),
        ));
    }
    Ok(())
}

/// The envelope's payload, if `key` (SEC1) signed it, and the statement it holds.
fn signed_statement(bundle: &Bundle, key: &[u8]) -> Result<(Vec<u8>, Statement), VerifyError> {
    let envelope_key =
        VerifyingKey::from_sec1(key).map_err(|e| fail(Check::EnvelopeSignature, e))?;
    signed_statement_with(bundle, &envelope_key)
}

/// The envelope's payload, if `envelope_key` signed it, and the statement it holds.
fn signed_statement_with(
    bundle: &Bundle,
    envelope_key: &VerifyingKey,
) -> Result<(Vec<u8>, Statement), VerifyError> {
    let payload = bundle
        .envelope
        .verify(envelope_key)
        .map_err(|e| fail(Check::EnvelopeSignature, e))?
        .to_vec();
    if bundle.envelope.payload_type != PAYLOAD_TYPE {
        return Err(fail(
            Check::Statement,
            format!("payloadType is {:?}", bundle.envelope.payload_type),
        ));
    }
    let statement = Statement::from_json(&payload).map_err(|e| fail(Check::Statement, e))?;
    Ok((payload, statement))
}

/// Checks an AK public area is a TPM-resident, restricted, sign-only key of one of the
/// [`SigningAlgorithm`]s, and returns it parsed.
pub fn attestation_key(ak_public: &[u8]) -> Result<TpmSigningKey, VerifyError> {
    let ak = TpmSigningKey::from_public(ak_public).map_err(|e| fail(Check::AttestationKey, e))?;
    let a = ak.public().object_attributes();
    if !(a.fixed_tpm()
        && a.fixed_parent()
        && a.sensitive_data_origin()
        && a.restricted()
        && a.sign()
        && !a.decrypt())
    {
        return Err(fail(
            Check::AttestationKey,
            "AK must be fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign-only",
        ));
    }
    Ok(ak)
}

/// The spec's content checks: freshness and the expected policy.
fn check_claims(
    claims: &Claims,
    profile: &Profile,
    expect: &Expectations,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now_secs.abs_diff(claims.timestamp);
    if age > profile.max_age_seconds {
        return Err(fail(
            Check::Freshness,
            format!(
                "timestamp {} is {age} s from now, over the {} s window",
                claims.timestamp, profile.max_age_seconds
            ),
        ));
    }
    match &expect.policy_hash {
        Some(expected) => check_policy_hash(claims, expected),
        None => Ok(()),
    }
}

/// The spec's policy consistency check: `policy_hash` equals the expected value.
pub fn check_policy_hash(claims: &Claims, expected: &str) -> Result<(), VerifyError> {
    if claims.policy_hash.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(fail(
            Check::PolicyHash,
            format!("policy_hash is {}, expected {expected}", claims.policy_hash),
        ))
    }
}

/// The policy consistency check against a set of approved hashes, each perhaps with an
/// expiry (a canary rollout keeps the previous policy approved until a deadline).
pub fn check_policy_hashes(
    claims: &Claims,
    approved: &[ApprovedPolicyHash],
    now: SystemTime,
) -> Result<(), VerifyError> {
    let now_secs = crate::time::unix_ms(now) / 1000;
    match policy_hash_approval(approved, &claims.policy_hash, now_secs) {
        HashApproval::Approved => Ok(()),
        HashApproval::Expired { at } => Err(fail(
            Check::PolicyHashExpired,
            format!(
                "policy_hash {} was approved until {}",
                claims.policy_hash,
                crate::time::rfc3339(at)
            ),
        )),
        HashApproval::Unknown => Err(fail(
            Check::PolicyHash,
            format!(
                "policy_hash {} is not an approved policy ({} approved)",
                claims.policy_hash,
                approved.len()
            ),
        )),
    }
}

/// Parses a TPMS_ATTEST, checks it was produced by a TPM (magic) and signed by `ak`.
fn verified_attest(signed: &SignedAttest, ak: &TpmSigningKey) -> Result<Attest, String> {
    ak.verify_tpm_signature(&signed.attest, &signed.signature)
        .map_err(|e| format!("AK signature: {e}"))?;
    tpm_generated(&signed.attest)
}

/// Parses a TPMS_ATTEST whose signature was checked, and checks a TPM produced it (magic).
fn tpm_generated(attest: &[u8]) -> Result<Attest, String> {
    let attest = wire::parse_attest(attest).map_err(|e| e.to_string())?;
    if attest.magic != wire::TPM_GENERATED_VALUE {
        return Err("not TPM-generated (magic is not TPM_GENERATED_VALUE)".into());
    }
    Ok(attest)
}

/// The PCRs a quote covers in `bank`; any other bank in the selection is refused.
fn quoted_pcrs(selection: &[PcrSelection], bank: HashAlg) -> Result<Vec<u8>, String> {
    let mut pcrs = Vec::new();
    for s in selection {
        if s.bank != bank && !s.pcrs.is_empty() {
            return Err(format!("quote covers unexpected bank {}", s.bank.name()));
        }
        pcrs.extend(&s.pcrs);
    }
    pcrs.sort_unstable();
    Ok(pcrs)
}
