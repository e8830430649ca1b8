//! AK certificates: X.509 certificates saying that an attestation key lives in a TPM, so
//! a verifier that trusts their issuer needs no credential activation of its own.
//!
//! One profile, from TCG "TPM 2.0 Keys for Device Identity and Attestation" (§8, the
//! IAK/LAK certificate), serves two kinds of issuer:
//!
//! - an **enrollment CA** (a ledger's, or the local one of `attestor enroll --local`),
//!   which certifies an AK after TPM2_MakeCredential / ActivateCredential proved it sits in
//!   the TPM of a certified EK. Its certificates carry, besides the common fields below,
//!   the agent's identity as a URI SAN (`spiffe://attestor/tenant/<t>/agent/<id>`) and the
//!   EK certificate's SHA-256 as a permanentIdentifier SAN (RFC 4043, assigner
//!   `tcg-on-ekPermIdSha256` 2.23.133.12.1, value the hex digest of the EK certificate's
//!   DER), which the verifier requires to equal the bundle's EK certificate;
//! - a platform maker's **IAK CA**, which certified the Initial Attestation Key in the
//!   factory. Its certificates carry a hardwareModuleName SAN (RFC 4108) whose hwType is
//!   TPM 2.0 (2.23.133.1.2); a permanentIdentifier of the EK certificate, when present,
//!   must name the bundle's.
//!
//! Common to both: the subject public key is the AK's (the key of its TPMT_PUBLIC),
//! basicConstraints cA is not set, keyUsage allows digitalSignature, and certificatePolicies
//! contains `tcg-cap-verifiedTPMRestricted` (2.23.133.11.1.3): the issuer verified that the
//! key is fixedTPM and restricted, so it signs only TPM-generated attestations. Enrollment
//! CAs also assert `tcg-cap-verifiedTPMResidency` (2.23.133.11.1.1) and the extended key
//! usage `tcg-kp-AIKCertificate` (2.23.133.8.3), and leave the subject empty (the SAN,
//! then critical, names the key).

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::der::asn1::{Ia5String, ObjectIdentifier, OctetString};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Any, Decode, Encode, Sequence};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use super::keys::{parse_tpm_public, KeyError, TpmPublic};
use super::wire::WireError;
use crate::evidence::certchain::CertChainError;
use crate::identity::{AgentIdentity, IdentityError, IDENTITY_URI_PREFIX};

/// `tcg-cap-verifiedTPMResidency`: the issuer verified the key is in a TPM.
pub const VERIFIED_TPM_RESIDENCY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.23.133.11.1.1");
/// `tcg-cap-verifiedTPMFixed`: the issuer verified the key is fixedTPM (an IDevID's).
pub const VERIFIED_TPM_FIXED: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.11.1.2");
/// `tcg-cap-verifiedTPMRestricted`: the issuer verified the key is fixedTPM and restricted
/// (an IAK's, or an AK's).
pub const VERIFIED_TPM_RESTRICTED: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.23.133.11.1.3");
/// `tcg-kp-AIKCertificate`: the extended key usage of attestation key certificates.
pub const AIK_CERTIFICATE_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");
/// `tcg-on-ekPermIdSha256`: a permanentIdentifier assigned as the SHA-256 of the EK
/// certificate.
pub const EK_PERM_ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.12.1");
/// hwType of a TPM 2.0 in a hardwareModuleName.
pub const HW_TYPE_TPM2: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.1.2");
/// `id-on-permanentIdentifier` (RFC 4043), an otherName.
pub const ON_PERMANENT_IDENTIFIER: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.3");
/// `id-on-hardwareModuleName` (RFC 4108), an otherName.
pub const ON_HARDWARE_MODULE_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// Why an AK certificate cannot be read or made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AkCertError {
    /// Not a DER X.509 certificate, or an extension of it does not decode.
    #[error("AK certificate: {what}: {source}")]
    Malformed {
        /// What did not decode.
        what: &'static str,
        /// The decoder's error.
        source: x509_cert::der::Error,
    },
    /// The certificate's key, or the chain, as the certificate parser sees it.
    #[error("AK certificate: {0}")]
    Certificate(#[from] CertChainError),
    /// The AK's TPMT_PUBLIC does not parse.
    #[error("AK public area: {0}")]
    AkPublic(#[from] WireError),
    /// The AK's key cannot be put into a certificate or compared with one.
    #[error("AK public key: {0}")]
    AkKey(KeyError),
    /// The AK is on a curve no certificate here can name.
    #[error("the AK's curve 0x{0:04x} is not P-256 or P-384")]
    UnsupportedCurve(u16),
    /// The certificate names more than one agent, or more than one EK certificate.
    #[error("AK certificate names more than one {0}")]
    Ambiguous(&'static str),
    /// A URI SAN of the agent-identity form that is not a valid identity.
    #[error("AK certificate: {0}")]
    Identity(#[from] IdentityError),
    /// A permanentIdentifier of the EK certificate that is not 32 bytes of hex.
    #[error("AK certificate's EK certificate digest {0:?} is not 64 hex digits")]
    EkDigest(String),
}

fn malformed(what: &'static str) -> impl FnOnce(x509_cert::der::Error) -> AkCertError {
    move |source| AkCertError::Malformed { what, source }
}

/// What an AK certificate says, parsed and not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkCertificate {
    /// Issuer, RFC 4514 string, for messages.
    pub issuer: String,
    /// Validity: notBefore.
    pub not_before: SystemTime,
    /// Validity: notAfter.
    pub not_after: SystemTime,
    /// basicConstraints cA: a CA certificate is never an AK certificate.
    pub is_ca: bool,
    /// keyUsage is absent or allows digitalSignature.
    pub digital_signature: bool,
    /// certificatePolicies' policy identifiers.
    pub policies: Vec<ObjectIdentifier>,
    /// The agent the certificate names (its URI SAN of the identity form), if any.
    pub agent: Option<AgentIdentity>,
    /// SHA-256 of the EK certificate the certificate names (permanentIdentifier), if any.
    pub ek_certificate_sha256: Option<[u8; 32]>,
    /// hwSerialNum of a hardwareModuleName whose hwType is TPM 2.0, if any.
    pub tpm_serial: Option<Vec<u8>>,
}

/// RFC 4043 PermanentIdentifier.
#[derive(Sequence)]
struct PermanentIdentifier {
    #[asn1(optional = "true")]
    identifier_value: Option<String>,
    #[asn1(optional = "true")]
    assigner: Option<ObjectIdentifier>,
}

/// RFC 4108 HardwareModuleName.
#[derive(Sequence)]
struct HardwareModuleName {
    hw_type: ObjectIdentifier,
    hw_serial_num: OctetString,
}

impl AkCertificate {
    /// Parses the fields the AK-certificate profile gives meaning to. Anything it cannot
    /// read is an error; fields it does not know are left to the chain check.
    pub fn parse(der: &[u8]) -> Result<AkCertificate, AkCertError> {
        let cert = Certificate::from_der(der).map_err(malformed("certificate"))?;
        let tbs = &cert.tbs_certificate;
        let mut parsed = AkCertificate {
            issuer: tbs.issuer.to_string(),
            not_before: tbs.validity.not_before.to_system_time(),
            not_after: tbs.validity.not_after.to_system_time(),
            is_ca: false,
            digital_signature: true,
            policies: Vec::new(),
            agent: None,
            ek_certificate_sha256: None,
            tpm_serial: None,
        };
        for ext in tbs.extensions.iter().flatten() {
            let value = ext.extn_value.as_bytes();
            match ext.extn_id {
                BasicConstraints::OID => {
                    parsed.is_ca = BasicConstraints::from_der(value)
                        .map_err(malformed("basicConstraints"))?
                        .ca;
                }
                KeyUsage::OID => {
                    parsed.digital_signature = KeyUsage::from_der(value)
                        .map_err(malformed("keyUsage"))?
                        .digital_signature();
                }
                CertificatePolicies::OID => {
                    parsed.policies = CertificatePolicies::from_der(value)
                        .map_err(malformed("certificatePolicies"))?
                        .0
                        .into_iter()
                        .map(|p| p.policy_identifier)
                        .collect();
                }
                SubjectAltName::OID => {
                    let san =
                        SubjectAltName::from_der(value).map_err(malformed("subjectAltName"))?;
                    for name in san.0 {
                        parsed.add_name(name)?;
                    }
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    fn add_name(&mut self, name: GeneralName) -> Result<(), AkCertError> {
        match name {
            GeneralName::UniformResourceIdentifier(uri)
                if uri.as_str().starts_with(IDENTITY_URI_PREFIX) =>
            {
                let agent = AgentIdentity::from_uri(uri.as_str())?;
                if agent.is_operator() {
                    return Err(AkCertError::Identity(IdentityError::InvalidUri {
                        uri: agent.to_uri(),
                        reason: "an AK certificate names an agent, not an operator",
                    }));
                }
                if self.agent.replace(agent).is_some() {
                    return Err(AkCertError::Ambiguous("agent"));
                }
            }
            GeneralName::OtherName(other) if other.type_id == ON_PERMANENT_IDENTIFIER => {
                let id: PermanentIdentifier = other
                    .value
                    .decode_as()
                    .map_err(malformed("permanentIdentifier"))?;
                if id.assigner != Some(EK_PERM_ID_SHA256) {
                    return Ok(());
                }
                let text = id.identifier_value.unwrap_or_default();
                let digest = hex::decode(&text)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| AkCertError::EkDigest(crate::identity::truncate(&text)))?;
                if self.ek_certificate_sha256.replace(digest).is_some() {
                    return Err(AkCertError::Ambiguous("EK certificate"));
                }
            }
            GeneralName::OtherName(other) if other.type_id == ON_HARDWARE_MODULE_NAME => {
                let module: HardwareModuleName = other
                    .value
                    .decode_as()
                    .map_err(malformed("hardwareModuleName"))?;
                if module.hw_type == HW_TYPE_TPM2
                    && self
                        .tpm_serial
                        .replace(module.hw_serial_num.as_bytes().to_vec())
                        .is_some()
                {
                    return Err(AkCertError::Ambiguous("TPM"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// SHA-256 of an EK certificate's DER: what an AK certificate's permanentIdentifier names.
pub fn ek_certificate_sha256(ek_certificate: &[u8]) -> [u8; 32] {
    Sha256::digest(ek_certificate).into()
}

/// The AK's key (from its marshalled TPMT_PUBLIC: ECC P-256/P-384 or RSA) as an X.509
/// SubjectPublicKeyInfo.
pub fn ak_spki(ak_public: &[u8]) -> Result<SubjectPublicKeyInfoOwned, AkCertError> {
    let der = ak_public_key(ak_public)?.spki_der().map_err(|e| match e {
        KeyError::Wire(WireError::UnsupportedCurve(curve)) => AkCertError::UnsupportedCurve(curve),
        other => AkCertError::AkKey(other),
    })?;
    SubjectPublicKeyInfoOwned::from_der(&der).map_err(malformed("AK public key"))
}

/// Whether the certificate's subject public key is the AK's (the key of its TPMT_PUBLIC).
pub fn certifies_ak(cert_der: &[u8], ak_public: &[u8]) -> Result<bool, AkCertError> {
    match ak_public_key(ak_public)?.matches_certificate(cert_der) {
        Ok(matches) => Ok(matches),
        Err(KeyError::Certificate(e)) => Err(AkCertError::Certificate(e)),
        Err(other) => Err(AkCertError::AkKey(other)),
    }
}

fn ak_public_key(ak_public: &[u8]) -> Result<TpmPublic, AkCertError> {
    Ok(parse_tpm_public(ak_public)?)
}

/// The extensions of an enrollment CA's AK certificate (see the module documentation):
/// for the AK `ak`, in the TPM of the EK certificate `ek_certificate`, of `agent` if
/// named, issued by the CA whose key identifier is `issuer_key_id`.
pub fn enrollment_extensions(
    ak: &SubjectPublicKeyInfoOwned,
    issuer_key_id: &[u8],
    agent: Option<&AgentIdentity>,
    ek_certificate: &[u8],
) -> Result<Vec<Extension>, AkCertError> {
    let encode = |what| malformed(what);
    let mut names = Vec::new();
    if let Some(agent) = agent {
        names.push(GeneralName::UniformResourceIdentifier(
            Ia5String::new(&agent.to_uri()).map_err(encode("agent URI"))?,
        ));
    }
    let ek_id = PermanentIdentifier {
        identifier_value: Some(hex::encode(ek_certificate_sha256(ek_certificate))),
        assigner: Some(EK_PERM_ID_SHA256),
    };
    names.push(GeneralName::OtherName(OtherName {
        type_id: ON_PERMANENT_IDENTIFIER,
        value: Any::encode_from(&ek_id).map_err(encode("permanentIdentifier"))?,
    }));
    let policies = CertificatePolicies(
        [VERIFIED_TPM_RESIDENCY, VERIFIED_TPM_RESTRICTED]
            .into_iter()
            .map(|policy_identifier| PolicyInformation {
                policy_identifier,
                policy_qualifiers: None,
            })
            .collect(),
    );
    let key_id = key_identifier(ak)?;
    let extension = |oid, critical, value: Vec<u8>| -> Result<Extension, AkCertError> {
        Ok(Extension {
            extn_id: oid,
            critical,
            extn_value: OctetString::new(value).map_err(encode("extension"))?,
        })
    };
    Ok(vec![
        extension(
            BasicConstraints::OID,
            true,
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_der()
            .map_err(encode("basicConstraints"))?,
        )?,
        extension(
            KeyUsage::OID,
            true,
            KeyUsage(KeyUsages::DigitalSignature.into())
                .to_der()
                .map_err(encode("keyUsage"))?,
        )?,
        extension(
            ExtendedKeyUsage::OID,
            false,
            ExtendedKeyUsage(vec![AIK_CERTIFICATE_EKU])
                .to_der()
                .map_err(encode("extendedKeyUsage"))?,
        )?,
        extension(
            CertificatePolicies::OID,
            false,
            policies.to_der().map_err(encode("certificatePolicies"))?,
        )?,
        // The subject is empty: the SAN names the key, so it is critical (RFC 5280).
        extension(
            SubjectAltName::OID,
            true,
            SubjectAltName(names)
                .to_der()
                .map_err(encode("subjectAltName"))?,
        )?,
        extension(
            SubjectKeyIdentifier::OID,
            false,
            SubjectKeyIdentifier(OctetString::new(key_id).map_err(encode("key identifier"))?)
                .to_der()
                .map_err(encode("subjectKeyIdentifier"))?,
        )?,
        extension(
            AuthorityKeyIdentifier::OID,
            false,
            AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(issuer_key_id).map_err(encode("key identifier"))?,
                ),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            }
            .to_der()
            .map_err(encode("authorityKeyIdentifier"))?,
        )?,
    ])
}

/// A key identifier: the first 20 bytes of the SHA-256 of the subjectPublicKey bits
/// (RFC 7093, method 1).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<u8>, AkCertError> {
    let bits = spki.subject_public_key.raw_bytes();
    Ok(Sha256::digest(bits)[..20].to_vec())
}

/// A certificate as PEM text.
pub fn certificate_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error() {
        for input in [&b""[..], &[0x30, 0x80], &[0x30, 0x03, 0x02, 0x01, 0x00]] {
            assert!(matches!(
                AkCertificate::parse(input),
                Err(AkCertError::Malformed { .. })
            ));
            assert!(certifies_ak(input, input).is_err());
        }
        assert!(ak_spki(b"\x00\x23").is_err());
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = certificate_pem(&der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(
            crate::evidence::certchain::pem_to_der_all(&pem).unwrap(),
            vec![der]
        );
    }
}
