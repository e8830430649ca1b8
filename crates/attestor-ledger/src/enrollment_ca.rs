//! The enrollment CA: once credential activation proved an agent's AK sits in the TPM of
//! its certified EK, the ledger says so in an AK certificate, which the agent carries in
//! every bundle so that an offline verifier trusting this CA can check the same binding
//! (`ak-binding`) without a TPM round trip of its own. The certificate's profile is in
//! [`attestor_verify::evidence::tpm::akcert`].
//!
//! Files, in the ledger's state directory (or the directory `attestor enroll --local`
//! names): `enrollment-ca.key`, the CA's P-384 ECDSA key (PKCS#8, mode 0600, created on
//! first start), and `enrollment-ca.pem`, its self-signed certificate, published for
//! relying parties (also at `GET /v1/enrollment-ca`). An operator may put a key and
//! certificate of their own PKI there instead (a P-384 key; the certificate may be an
//! intermediate). Replicas of one log should share both files, as they share the
//! checkpoint key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
use der::asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime};
use der::oid::db::rfc4519::{CN, O};
use der::oid::db::rfc5912::ECDSA_WITH_SHA_384;
use der::oid::AssociatedOid;
use der::{Any, Decode, Encode, Tag};
use thiserror::Error;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use attestor_verify::evidence::certchain::{self, CertChainError};
use attestor_verify::evidence::tpm::akcert::{self, AkCertError};
use attestor_verify::fs::{write_atomically, WriteError};
use attestor_verify::identity::AgentIdentity;

/// The CA's private key.
pub const KEY_FILE: &str = "enrollment-ca.key";
/// The CA's certificate, for relying parties to trust.
pub const CERT_FILE: &str = "enrollment-ca.pem";
/// How long an AK certificate is valid unless configured otherwise
/// (`ak_certificate_days`); agents renew theirs when a third of it is left.
pub const DEFAULT_AK_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// AK certificates start this long before they are issued, so a verifier whose clock is a
/// little behind accepts one at once.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why the enrollment CA cannot be loaded, created or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollmentCaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a P-384 ECDSA private key in PKCS#8: {source}")]
    Key {
        path: PathBuf,
        source: aws_lc_rs::error::KeyRejected,
    },
    #[error("{path}: {source}")]
    Certificate {
        path: PathBuf,
        source: CertChainError,
    },
    #[error("{path}: malformed certificate: {source}")]
    CertificateDer { path: PathBuf, source: der::Error },
    #[error("{cert} is not the certificate of the key in {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{cert} exists without its key {key}: restore the key, or move both away to start a \
         new enrollment CA (whose certificate relying parties must then trust)"
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("cannot encode a certificate: {0}")]
    Encode(#[from] der::Error),
    #[error(transparent)]
    AkCertificate(#[from] AkCertError),
    #[error("no randomness, or signing failed")]
    Crypto(#[source] aws_lc_rs::error::Unspecified),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// An enrollment CA: its key and certificate.
pub struct EnrollmentCa {
    key: EcdsaKeyPair,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    subject: Name,
    key_id: Vec<u8>,
    validity: Duration,
}

impl std::fmt::Debug for EnrollmentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentCa")
            .field("subject", &self.subject.to_string())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl EnrollmentCa {
    /// Loads the CA of `dir`, creating it (key, then self-signed certificate) on first use;
    /// `name` (the log's origin, or "local") goes into the new certificate's subject.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<EnrollmentCa, EnrollmentCaError> {
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        let pkcs8 = match std::fs::read(&key_path) {
            Ok(pkcs8) => pkcs8,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if cert_path.exists() {
                    return Err(EnrollmentCaError::MissingKey {
                        cert: cert_path,
                        key: key_path,
                    });
                }
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P384_SHA384_ASN1_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(EnrollmentCaError::Crypto)?;
                write_new_secret(&key_path, pkcs8.as_ref())?;
                pkcs8.as_ref().to_vec()
            }
            Err(source) => {
                return Err(EnrollmentCaError::Io {
                    path: key_path,
                    source,
                })
            }
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &pkcs8).map_err(
            |source| EnrollmentCaError::Key {
                path: key_path.clone(),
                source,
            },
        )?;
        let certificate_der = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => certchain::pem_to_der_all(&pem)
                .map_err(|source| EnrollmentCaError::Certificate {
                    path: cert_path.clone(),
                    source,
                })?
                .swap_remove(0),
            // A crash between writing the key and its certificate: certify the key now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = self_signed(&key, name)?;
                write_atomically(&cert_path, akcert::certificate_pem(&der).as_bytes())?;
                der
            }
            Err(source) => {
                return Err(EnrollmentCaError::Io {
                    path: cert_path,
                    source,
                })
            }
        };
        let cert = Certificate::from_der(&certificate_der).map_err(|source| {
            EnrollmentCaError::CertificateDer {
                path: cert_path.clone(),
                source,
            }
        })?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.subject_public_key.as_bytes() != Some(key.public_key().as_ref()) {
            return Err(EnrollmentCaError::Mismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        // The AKI of what it issues must be the SKI relying parties build paths with.
        let key_id = match cert.tbs_certificate.get::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
            Ok(None) => akcert::key_identifier(spki)?,
            Err(source) => {
                return Err(EnrollmentCaError::CertificateDer {
                    path: cert_path,
                    source,
                })
            }
        };
        Ok(EnrollmentCa {
            key,
            certificate_pem: akcert::certificate_pem(&certificate_der),
            certificate_der,
            subject: cert.tbs_certificate.subject,
            key_id,
            validity: DEFAULT_AK_CERTIFICATE_VALIDITY,
        })
    }

    /// The same CA issuing certificates valid for `validity`.
    pub fn with_validity(mut self, validity: Duration) -> EnrollmentCa {
        self.validity = validity;
        self
    }

    /// The CA's certificate (PEM), for relying parties.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA's certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Certifies the AK `ak_public` (TPMT_PUBLIC) of the TPM whose EK certificate is
    /// `ek_certificate` (DER), for `agent` if named. Call it only once credential
    /// activation proved the AK is in that TPM and its attributes were checked.
    pub fn issue(
        &self,
        ak_public: &[u8],
        ek_certificate: &[u8],
        agent: Option<&AgentIdentity>,
        now: SystemTime,
    ) -> Result<Vec<u8>, EnrollmentCaError> {
        let ak = akcert::ak_spki(ak_public)?;
        let extensions = akcert::enrollment_extensions(&ak, &self.key_id, agent, ek_certificate)?;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: random_serial()?,
            signature: signature_algorithm(),
            issuer: self.subject.clone(),
            validity: Validity {
                not_before: time(now.checked_sub(BACKDATE).unwrap_or(now))?,
                not_after: time(now + self.validity)?,
            },
            subject: RdnSequence::default(),
            subject_public_key_info: ak,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        sign(&self.key, tbs)
    }
}

/// Writes a new secret file (mode 0600, fsynced); refuses to replace one.
fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), EnrollmentCaError> {
    let io = |source| EnrollmentCaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The CA's own certificate: cA, may sign certificates only, without an end (notAfter
/// 9999-12-31, as RFC 5280 has it for "no well-defined expiration").
fn self_signed(key: &EcdsaKeyPair, name: &str) -> Result<Vec<u8>, EnrollmentCaError> {
    let subject = RdnSequence(vec![rdn(O, name)?, rdn(CN, "attestor enrollment CA")?]);
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(Any::from(der::oid::db::rfc5912::SECP_384_R_1)),
        },
        subject_public_key: BitString::from_bytes(key.public_key().as_ref())?,
    };
    let key_id = akcert::key_identifier(&spki)?;
    let extension = |oid, value: Vec<u8>| -> Result<Extension, der::Error> {
        Ok(Extension {
            extn_id: oid,
            critical: true,
            extn_value: OctetString::new(value)?,
        })
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: signature_algorithm(),
        issuer: subject.clone(),
        validity: Validity {
            not_before: time(
                SystemTime::now()
                    .checked_sub(BACKDATE)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )?,
            not_after: Time::GeneralTime(GeneralizedTime::from_date_time(der::DateTime::new(
                9999, 12, 31, 23, 59, 59,
            )?)),
        },
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![
            extension(
                BasicConstraints::OID,
                BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                }
                .to_der()?,
            )?,
            extension(
                KeyUsage::OID,
                KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign).to_der()?,
            )?,
            Extension {
                critical: false,
                ..extension(
                    SubjectKeyIdentifier::OID,
                    SubjectKeyIdentifier(OctetString::new(key_id)?).to_der()?,
                )?
            },
        ]),
    };
    sign(key, tbs)
}

fn rdn(
    oid: der::oid::ObjectIdentifier,
    value: &str,
) -> Result<RelativeDistinguishedName, der::Error> {
    let value = Any::new(Tag::Utf8String, value.as_bytes())?;
    Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![
        AttributeTypeAndValue { oid, value },
    ])?))
}

fn signature_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA_384,
        parameters: None,
    }
}

/// RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
fn time(at: SystemTime) -> Result<Time, der::Error> {
    Ok(match UtcTime::from_system_time(at) {
        Ok(utc) => Time::UtcTime(utc),
        Err(_) => Time::GeneralTime(GeneralizedTime::from_system_time(at)?),
    })
}

/// 16 random bytes, positive: unique per CA without keeping a counter.
fn random_serial() -> Result<SerialNumber, EnrollmentCaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(EnrollmentCaError::Crypto)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::new(&bytes)?)
}

fn sign(key: &EcdsaKeyPair, tbs: TbsCertificate) -> Result<Vec<u8>, EnrollmentCaError> {
    let signature = key
        .sign(&SystemRandom::new(), &tbs.to_der()?)
        .map_err(EnrollmentCaError::Crypto)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: signature_algorithm(),
        signature: BitString::from_bytes(signature.as_ref())?,
    };
    Ok(cert.to_der()?)
}
