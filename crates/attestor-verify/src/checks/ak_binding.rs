//! `ak-binding`: is the AK in the TPM whose EK certificate the bundle carries?
//!
//! The EK chain proves the EK is a genuine TPM's, and the AK's attributes say "restricted,
//! fixedTPM", but those attributes are the bundle's own word: a key made in software can
//! claim them, sign its own "quotes" and carry any public EK certificate. Only credential
//! activation proves the AK sits beside the EK, and an offline verifier cannot run it. So
//! it needs someone who did: an enrollment CA that certified the AK after activating a
//! credential (a ledger's, or a local one), a platform maker that certified it as the
//! TPM's IAK in the factory, or the verifier's own pin of the AK's TPM Name. The
//! certificate profile is in [`crate::evidence::tpm::akcert`].

use std::time::SystemTime;

use aws_lc_rs::constant_time::verify_slices_are_equal;

use super::{fail, Check, VerifyError};
use crate::bundle::TpmEvidence;
use crate::evidence::certchain;
use crate::evidence::tpm::akcert::{self, AkCertificate, VERIFIED_TPM_RESTRICTED};
use crate::evidence::tpm::keys::parse_tpm_public;
use crate::evidence::tpm::wire;
use crate::identity::AgentIdentity;
use crate::profiles::TpmProfile;

/// What the verifier accepts as proof that the AK belongs to the EK's TPM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AkTrust {
    /// An AK certificate in the bundle, chaining to the profile's `ak_trust_anchors`
    /// (enrollment CAs) or `iak_trust_anchors` (platform makers' IAK CAs).
    #[default]
    Certificate,
    /// The AK whose TPM Name (nameAlg || digest of its TPMT_PUBLIC) this is, whatever
    /// certificate the bundle carries (`attestor verify --ak-name`).
    Name(Vec<u8>),
    /// The caller compares the verified AK with one it pinned by credential activation
    /// itself (a ledger): the bundle's certificate, if any, is not consulted.
    PinnedByCaller,
}

/// How a verified bundle's AK is bound to its TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkBinding {
    /// Certified by an enrollment CA after credential activation.
    EnrollmentCa {
        /// The CA (RFC 4514 subject of the certificate's issuer).
        issuer: String,
        /// The agent the certificate names, if any.
        agent: Option<AgentIdentity>,
    },
    /// Certified by a platform maker's CA as the TPM's IAK.
    Iak {
        /// The CA (RFC 4514 subject of the certificate's issuer).
        issuer: String,
        /// The TPM's hardware serial number from the certificate (hwSerialNum).
        tpm_serial: Vec<u8>,
    },
    /// The verifier pinned the AK's TPM Name.
    PinnedName,
    /// The caller pins the AK itself ([`AkTrust::PinnedByCaller`]).
    PinnedByCaller,
}

impl std::fmt::Display for AkBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AkBinding::EnrollmentCa { issuer, agent } => {
                write!(f, "AK certified by enrollment CA \"{issuer}\"")?;
                match agent {
                    Some(agent) => write!(f, " for {agent}"),
                    None => Ok(()),
                }
            }
            AkBinding::Iak { issuer, tpm_serial } => write!(
                f,
                "AK is the IAK certified by \"{issuer}\" for TPM {}",
                String::from_utf8_lossy(tpm_serial)
            ),
            AkBinding::PinnedName => f.write_str("AK pinned by its TPM Name"),
            AkBinding::PinnedByCaller => f.write_str("AK pinned by the caller"),
        }
    }
}

fn refuse(reason: impl std::fmt::Display) -> VerifyError {
    fail(Check::AkBinding, reason)
}

/// Checks the bundle's AK against what `trust` accepts; the AK's public area already
/// passed `attestation-key`.
pub(super) fn check(
    ev: &TpmEvidence,
    profile: &TpmProfile,
    trust: &AkTrust,
    now: SystemTime,
) -> Result<AkBinding, VerifyError> {
    match trust {
        AkTrust::PinnedByCaller => Ok(AkBinding::PinnedByCaller),
        AkTrust::Name(pinned) => {
            let ak = parse_tpm_public(&ev.ak_public).map_err(refuse)?;
            let name = wire::object_name(&ev.ak_public, ak.name_alg());
            verify_slices_are_equal(&name, pinned).map_err(|_| {
                refuse(format!(
                    "the AK's TPM Name is {}, the pinned one is {}",
                    hex::encode(&name),
                    hex::encode(pinned)
                ))
            })?;
            Ok(AkBinding::PinnedName)
        }
        AkTrust::Certificate => certified(ev, profile, now),
    }
}

fn certified(
    ev: &TpmEvidence,
    profile: &TpmProfile,
    now: SystemTime,
) -> Result<AkBinding, VerifyError> {
    let (leaf, intermediates) = ev.ak_certificates.split_first().ok_or_else(|| {
        refuse(
            "the bundle carries no AK certificate and no AK Name is pinned: nothing shows the \
             AK is in the EK's TPM (enrol the agent with a ledger or `attestor enroll \
             --local`, or pin the AK with --ak-name)",
        )
    })?;
    if profile.ak_trust_anchors.is_empty() && profile.iak_trust_anchors.is_empty() {
        return Err(refuse(
            "the profile trusts no AK certificate issuer (tpm.ak_trust_anchors, \
             tpm.iak_trust_anchors)",
        ));
    }
    let chain_to = |anchors: &[Vec<u8>]| {
        (!anchors.is_empty())
            .then(|| certchain::verify_chain(leaf, intermediates, anchors, now).map(|_| ()))
    };
    let enrollment = chain_to(&profile.ak_trust_anchors);
    let iak = match enrollment {
        Some(Ok(())) => None,
        _ => chain_to(&profile.iak_trust_anchors),
    };
    let is_enrollment = match (enrollment, iak) {
        (Some(Ok(())), _) => true,
        (_, Some(Ok(()))) => false,
        (enrollment, iak) => {
            let why = [("enrollment CAs", enrollment), ("IAK CAs", iak)]
                .into_iter()
                .filter_map(|(what, outcome)| Some(format!("{what}: {}", outcome?.err()?)))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(refuse(format!(
                "the AK certificate does not chain to a CA the profile trusts ({why})"
            )));
        }
    };

    let cert = AkCertificate::parse(leaf).map_err(refuse)?;
    if !akcert::certifies_ak(leaf, &ev.ak_public).map_err(refuse)? {
        return Err(refuse(
            "the AK certificate certifies another key than the AK",
        ));
    }
    if cert.is_ca || !cert.digital_signature {
        return Err(refuse(
            "the AK certificate is a CA certificate, or its keyUsage lacks digitalSignature",
        ));
    }
    if !cert.policies.contains(&VERIFIED_TPM_RESTRICTED) {
        return Err(refuse(
            "the AK certificate does not assert tcg-cap-verifiedTPMRestricted \
             (2.23.133.11.1.3): its issuer did not vouch that the key is restricted",
        ));
    }
    let ek_leaf = ev.ek_certificates.first().map(Vec::as_slice);
    let names_bundle_ek =
        |digest: &[u8; 32]| ek_leaf.is_some_and(|ek| akcert::ek_certificate_sha256(ek) == *digest);
    let issuer = cert.issuer.clone();
    if is_enrollment {
        match &cert.ek_certificate_sha256 {
            Some(digest) if names_bundle_ek(digest) => Ok(AkBinding::EnrollmentCa {
                issuer,
                agent: cert.agent,
            }),
            Some(_) => Err(refuse(
                "the AK certificate was issued for the TPM of another EK certificate",
            )),
            None => Err(refuse(
                "the enrollment CA's AK certificate names no EK certificate \
                 (permanentIdentifier, tcg-on-ekPermIdSha256)",
            )),
        }
    } else {
        if cert
            .ek_certificate_sha256
            .as_ref()
            .is_some_and(|d| !names_bundle_ek(d))
        {
            return Err(refuse(
                "the IAK certificate names the TPM of another EK certificate",
            ));
        }
        let tpm_serial = cert.tpm_serial.ok_or_else(|| {
            refuse(
                "the IAK certificate names no TPM 2.0 (hardwareModuleName with hwType \
                 2.23.133.1.2)",
            )
        })?;
        Ok(AkBinding::Iak { issuer, tpm_serial })
    }
}
