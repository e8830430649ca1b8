//! X.509 path validation for TPM endorsement-key certificates: leaf -> intermediates ->
//! configured trust anchor, with signatures checked by aws-lc-rs.
//!
//! EK certificates are unusual (critical subjectAltName holding a directoryName, the TCG
//! EK EKU 2.23.133.8.1, keyUsage keyAgreement/keyEncipherment), so the leaf is accepted
//! with any key usage and no TLS EKU. Revocation is out of scope.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::der::asn1::{AnyRef, ObjectIdentifier};
use x509_cert::der::{Any, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::Time;
use x509_cert::Certificate;

/// Longest path searched, counting the leaf and the anchor; bounds work on hostile input.
pub const MAX_CHAIN_LEN: usize = 6;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const EXT_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const EXT_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const EXT_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// DER of an empty Name (an RDNSequence with no element).
const EMPTY_NAME: [u8; 2] = [0x30, 0x00];
/// Extensions whose criticality is satisfied without further processing here: names and
/// usages that constrain only the leaf's application (the verifier checks those itself).
const EXT_CRITICAL_OK: [ObjectIdentifier; 4] = [
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName (critical in EK certs)
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extendedKeyUsage
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies
    ObjectIdentifier::new_unwrap("2.5.29.9"),  // subjectDirectoryAttributes (TPM spec)
];

/// Why a certificate chain was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertChainError {
    /// A certificate is not valid DER X.509.
    #[error("malformed certificate ({which}): {detail}")]
    Malformed {
        /// Which input: its role (`leaf`, `intermediate #i`, `trust anchor #i`, or
        /// `certificate` outside a path), with subject and serial once those decode.
        which: String,
        /// What does not decode.
        detail: String,
    },
    /// PEM text without certificates, or with a block that does not decode.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// No issuer (by name and key identifier) leads to a configured trust anchor.
    #[error("no path from {cert} to a trust anchor: {detail}")]
    NoPath {
        /// The certificate no usable issuer was found for (role, subject, serial).
        cert: String,
        /// Why the search ended there.
        detail: String,
    },
    /// A signature did not verify under its issuer's key.
    #[error("signature on {cert} does not verify under the key of {issuer}")]
    SignatureInvalid {
        /// The certificate whose signature fails (role, subject, serial).
        cert: String,
        /// The issuer whose key it was checked with (role, subject, serial).
        issuer: String,
    },
    /// `now` is after notAfter.
    #[error("{cert} expired: notAfter {not_after}, now {now}")]
    Expired {
        /// The expired certificate (role, subject, serial).
        cert: String,
        /// Its notAfter (RFC 3339, UTC).
        not_after: String,
        /// The time it was checked at, in the same form.
        now: String,
    },
    /// `now` is before notBefore.
    #[error("{cert} is not yet valid: notBefore {not_before}, now {now}")]
    NotYetValid {
        /// The certificate (role, subject, serial).
        cert: String,
        /// Its notBefore (RFC 3339, UTC).
        not_before: String,
        /// The time it was checked at, in the same form.
        now: String,
    },
    /// An issuing certificate may not issue certificates.
    #[error("{cert} is used as an issuer but {reason}")]
    IssuerNotCa {
        /// The issuing certificate (role, subject, serial).
        cert: String,
        /// What denies it (basicConstraints, keyUsage).
        reason: String,
    },
    /// An issuing certificate's pathLenConstraint is exceeded.
    #[error("{cert} allows {path_len} intermediates below it, the path has {below}")]
    PathLenExceeded {
        /// The issuing certificate (role, subject, serial).
        cert: String,
        /// Its pathLenConstraint.
        path_len: u8,
        /// Intermediates below it on the path.
        below: usize,
    },
    /// A signature or key algorithm (or parameter set) that is not supported.
    #[error("unsupported algorithm {oid} in {cert}: {detail}")]
    UnsupportedAlgorithm {
        /// The certificate using it (subject and serial, after its role in a path).
        cert: String,
        /// The algorithm's or curve's OID, dotted.
        oid: String,
        /// Where it was met, or which parameter is not supported.
        detail: String,
    },
    /// Certificate.signatureAlgorithm differs from TBSCertificate.signature.
    #[error("{cert}: outer and inner signature algorithms differ")]
    SignatureAlgorithmMismatch {
        /// The certificate (role, subject, serial).
        cert: String,
    },
    /// A leaf with an empty subject whose names are not in a critical subjectAltName
    /// (RFC 5280 §4.2.1.6; the TCG EK Credential Profile puts the TPM manufacturer
    /// attributes there).
    #[error("{cert} has an empty subject but no critical subjectAltName naming it")]
    UnnamedSubject {
        /// The certificate (role, subject, serial).
        cert: String,
    },
    /// A critical extension that this validator does not process.
    #[error("{cert} has an unhandled critical extension {oid}")]
    UnhandledCriticalExtension {
        /// The certificate (role, subject, serial).
        cert: String,
        /// The extension's OID, dotted.
        oid: String,
    },
}

/// A path that validated, leaf first and trust anchor last (DER of each certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// DER certificates from the leaf (index 0) to the trust anchor (last).
    pub certs: Vec<Vec<u8>>,
}

impl VerifiedChain {
    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &[u8] {
        self.certs.first().map_or(&[], |c| c.as_slice())
    }

    /// The trust anchor's DER the path ended at.
    pub fn anchor(&self) -> &[u8] {
        self.certs.last().map_or(&[], |c| c.as_slice())
    }

    /// The leaf's SubjectPublicKeyInfo DER.
    pub fn leaf_spki(&self) -> Result<Vec<u8>, CertChainError> {
        spki_of(self.leaf())
    }

    /// The leaf's public key in the form aws-lc-rs takes.
    pub fn leaf_public_key(&self) -> Result<PublicKey, CertChainError> {
        public_key_of(self.leaf())
    }
}

/// Outcomes of [`verify_chain`] already established, so a verifier that sees the same
/// EK certificate with every attestation of an agent checks its path once. An entry is
/// keyed by a SHA-256 over every input certificate (leaf, intermediates, anchors), so it
/// answers only for exactly the inputs it was verified with, and it holds only within the
/// validity periods of every certificate on the path: outside them the path is validated
/// again (and fails as it would have). The answer is therefore the one `verify_chain` would
/// give at that time; only the signature checks and parsing are saved.
#[derive(Debug, Default)]
pub struct ChainCache {
    verified: Mutex<HashMap<[u8; 32], (SystemTime, SystemTime)>>,
}

/// Entries kept at most; the cache starts over when full (one entry per distinct EK).
const CHAIN_CACHE_MAX: usize = 100_000;

impl ChainCache {
    /// [`verify_chain`] of `leaf_der` through `intermediates` (the bundle's, then the
    /// profile's) to `trust_anchors` at `now`, from the cache when it holds the answer.
    pub fn verify(
        &self,
        leaf_der: &[u8],
        intermediates: &[&[Vec<u8>]],
        trust_anchors: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<(), CertChainError> {
        let mut key = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut add = |group: u8, der: &[u8]| {
            key.update(&[group]);
            key.update(&(der.len() as u64).to_be_bytes());
            key.update(der);
        };
        add(0, leaf_der);
        intermediates
            .iter()
            .flat_map(|g| g.iter())
            .for_each(|d| add(1, d));
        trust_anchors.iter().for_each(|d| add(2, d));
        let mut digest = [0u8; 32];
        digest.copy_from_slice(key.finish().as_ref());

        let cached = self.lock().get(&digest).copied();
        if cached.is_some_and(|(from, until)| from <= now && now <= until) {
            return Ok(());
        }
        let pool: Vec<Vec<u8>> = intermediates
            .iter()
            .flat_map(|g| g.iter().cloned())
            .collect();
        let chain = verify_chain(leaf_der, &pool, trust_anchors, now)?;
        if let Some(window) = chain.validity() {
            let mut verified = self.lock();
            if verified.len() >= CHAIN_CACHE_MAX {
                verified.clear();
            }
            verified.insert(digest, window);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (SystemTime, SystemTime)>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VerifiedChain {
    /// When every certificate of the path is valid: (latest notBefore, earliest notAfter).
    fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        let mut window: Option<(SystemTime, SystemTime)> = None;
        for der in &self.certs {
            let v = Certificate::from_der(der).ok()?.tbs_certificate.validity;
            let (from, until) = (v.not_before.to_system_time(), v.not_after.to_system_time());
            window = Some(match window {
                None => (from, until),
                Some((f, u)) => (f.max(from), u.min(until)),
            });
        }
        window
    }
}

/// An elliptic curve attestor can verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1): the key of a P-521 EK (TCG template H-4), or of a CA.
    P521,
}

/// A certificate's subject public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// EC key: curve and SEC1 point (0x04 || x || y when uncompressed).
    Ec {
        /// The named curve of the key's parameters.
        curve: EcCurve,
        /// The point as the certificate carries it, unvalidated.
        sec1_point: Vec<u8>,
    },
    /// RSA key as a DER RSAPublicKey (PKCS#1), what aws-lc-rs RSA verification takes.
    Rsa {
        /// DER RSAPublicKey (modulus and exponent), unvalidated.
        rsa_public_key: Vec<u8>,
    },
}

/// Checks that a certificate decodes as path validation will decode it (the TBS, the
/// extensions it processes), so a trust store with one unreadable file is refused when
/// loaded rather than failing every later verification.
pub fn check_certificate(cert_der: &[u8]) -> Result<(), CertChainError> {
    Parsed::new(cert_der, "certificate").map(|_| ())
}

/// The SubjectPublicKeyInfo DER of a certificate.
pub fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, CertChainError> {
    let cert = decode_cert(cert_der, "certificate")?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| malformed("certificate", e))
}

/// The subject public key of a certificate (EC P-256/P-384/P-521 or RSA).
pub fn public_key_of(cert_der: &[u8]) -> Result<PublicKey, CertChainError> {
    let cert = decode_cert(cert_der, "certificate")?;
    let label = label_of(&cert);
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed(&label, "public key BIT STRING has unused bits"))?
        .to_vec();
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        Ok(PublicKey::Ec {
            curve: ec_curve(&spki.algorithm, &label)?,
            sec1_point: key,
        })
    } else if spki.algorithm.oid == RSA_ENCRYPTION || spki.algorithm.oid == RSASSA_PSS {
        Ok(PublicKey::Rsa {
            rsa_public_key: key,
        })
    } else {
        Err(unsupported(&label, spki.algorithm.oid, "public key type"))
    }
}

/// Decodes every `CERTIFICATE` block of PEM text into DER, in order.
pub fn pem_to_der_all(pem: &str) -> Result<Vec<Vec<u8>>, CertChainError> {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let from_begin = rest.get(start..).unwrap_or_default();
        let end = from_begin
            .find(END)
            .ok_or_else(|| CertChainError::Pem("BEGIN without END".into()))?;
        let after_end = from_begin.get(end + END.len()..).unwrap_or_default();
        let close = after_end
            .find("-----")
            .ok_or_else(|| CertChainError::Pem("unterminated END line".into()))?;
        let block_len = end + END.len() + close + "-----".len();
        let block = from_begin.get(..block_len).unwrap_or_default();
        let (label, der) = x509_cert::der::pem::decode_vec(block.as_bytes())
            .map_err(|e| CertChainError::Pem(e.to_string()))?;
        if label != "CERTIFICATE" {
            return Err(CertChainError::Pem(format!(
                "unexpected PEM block {label:?}"
            )));
        }
        out.push(der);
        rest = from_begin.get(block_len..).unwrap_or_default();
    }
    if out.is_empty() {
        return Err(CertChainError::Pem("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// Validates `leaf_der` up to one of `trust_anchors` at time `now`, building the path by
/// issuer name (and key identifier, when both sides carry one) through `intermediates`.
///
/// Anchors are trusted because they are configured, not because they are self-signed;
/// their own signature is not checked, but their validity period, and basicConstraints and
/// keyUsage when present, are.
pub fn verify_chain(
    leaf_der: &[u8],
    intermediates: &[Vec<u8>],
    trust_anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<VerifiedChain, CertChainError> {
    let leaf = Parsed::new(leaf_der, "leaf")?;
    let pool = intermediates
        .iter()
        .enumerate()
        .map(|(i, d)| Parsed::new(d, &format!("intermediate #{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let anchors = trust_anchors
        .iter()
        .enumerate()
        .map(|(i, d)| Parsed::new(d, &format!("trust anchor #{i}")))
        .collect::<Result<Vec<_>, _>>()?;

    check_validity(&leaf, now)?;
    leaf.check_leaf()?;
    if anchors.iter().any(|a| a.same_as(&leaf)) {
        return Ok(VerifiedChain {
            certs: vec![leaf_der.to_vec()],
        });
    }

    let mut search = Search {
        pool: &pool,
        anchors: &anchors,
        now,
        first_error: None,
    };
    let mut path = vec![&leaf];
    if search.extend(&mut path) {
        return Ok(VerifiedChain {
            certs: path.iter().map(|p| p.der.to_vec()).collect(),
        });
    }
    Err(search
        .first_error
        .unwrap_or_else(|| CertChainError::NoPath {
            cert: leaf.label.clone(),
            detail: format!(
                "no intermediate or anchor has subject {} and a matching key identifier",
                leaf.cert.tbs_certificate.issuer
            ),
        }))
}

/// Depth-first path search; remembers the first concrete failure to report it.
struct Search<'p, 'a> {
    pool: &'p [Parsed<'a>],
    anchors: &'p [Parsed<'a>],
    now: SystemTime,
    first_error: Option<CertChainError>,
}

impl<'p, 'a> Search<'p, 'a> {
    fn extend(&mut self, path: &mut Vec<&'p Parsed<'a>>) -> bool {
        let Some(&child) = path.last() else {
            return false;
        };
        if path.len() >= MAX_CHAIN_LEN {
            self.note(CertChainError::NoPath {
                cert: child.label.clone(),
                detail: format!("path longer than {MAX_CHAIN_LEN} certificates"),
            });
            return false;
        }
        let anchors = self.anchors.iter().map(|a| (a, true));
        let pool = self.pool.iter().map(|c| (c, false));
        for (candidate, is_anchor) in anchors.chain(pool) {
            if !candidate.could_issue(child) || path.iter().any(|p| p.der == candidate.der) {
                continue;
            }
            if let Err(e) = check_link(child, candidate, path, is_anchor, self.now) {
                self.note(e);
                continue;
            }
            path.push(candidate);
            if is_anchor || self.extend(path) {
                return true;
            }
            path.pop();
        }
        false
    }

    fn note(&mut self, e: CertChainError) {
        self.first_error.get_or_insert(e);
    }
}

/// A decoded certificate plus the pieces path building needs.
struct Parsed<'a> {
    der: &'a [u8],
    tbs_raw: &'a [u8],
    cert: Certificate,
    label: String,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    unhandled_critical: Option<ObjectIdentifier>,
    /// Whether a subjectAltName is present and critical.
    critical_san: bool,
}

impl<'a> Parsed<'a> {
    fn new(der: &'a [u8], role: &str) -> Result<Self, CertChainError> {
        let cert = decode_cert(der, role)?;
        let label = format!("{role} {}", label_of(&cert));
        let tbs_raw = raw_tbs(der).map_err(|e| malformed(&label, e))?;
        let tbs = &cert.tbs_certificate;
        let subject = tbs.subject.to_der().map_err(|e| malformed(&label, e))?;
        let issuer = tbs.issuer.to_der().map_err(|e| malformed(&label, e))?;
        let mut parsed = Parsed {
            der,
            tbs_raw,
            label,
            subject,
            issuer,
            subject_key_id: None,
            authority_key_id: None,
            basic_constraints: None,
            key_usage: None,
            unhandled_critical: None,
            critical_san: false,
            cert: cert.clone(),
        };
        let mut seen: Vec<ObjectIdentifier> = Vec::new();
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            if seen.contains(&ext.extn_id) {
                return Err(malformed(
                    &parsed.label,
                    format!("duplicate extension {}", ext.extn_id),
                ));
            }
            seen.push(ext.extn_id);
            let value = ext.extn_value.as_bytes();
            let bad = |e: x509_cert::der::Error| {
                malformed(&parsed.label, format!("extension {}: {e}", ext.extn_id))
            };
            match ext.extn_id {
                EXT_BASIC_CONSTRAINTS => {
                    parsed.basic_constraints = Some(BasicConstraints::from_der(value).map_err(bad)?)
                }
                EXT_KEY_USAGE => parsed.key_usage = Some(KeyUsage::from_der(value).map_err(bad)?),
                EXT_SUBJECT_KEY_ID => {
                    let ski = SubjectKeyIdentifier::from_der(value).map_err(bad)?;
                    parsed.subject_key_id = Some(ski.0.as_bytes().to_vec());
                }
                EXT_AUTHORITY_KEY_ID => {
                    let aki = AuthorityKeyIdentifier::from_der(value).map_err(bad)?;
                    parsed.authority_key_id = aki.key_identifier.map(|k| k.as_bytes().to_vec());
                }
                EXT_SUBJECT_ALT_NAME => parsed.critical_san = ext.critical,
                oid if ext.critical && !EXT_CRITICAL_OK.contains(&oid) => {
                    parsed.unhandled_critical.get_or_insert(oid);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// Name chaining, narrowed by key identifiers so same-named CAs are told apart.
    fn could_issue(&self, child: &Parsed<'_>) -> bool {
        if self.subject != child.issuer {
            return false;
        }
        match (&child.authority_key_id, &self.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
    }

    /// Same certificate, or same subject and key (a re-issued anchor).
    fn same_as(&self, other: &Parsed<'_>) -> bool {
        self.der == other.der
            || (self.subject == other.subject
                && self.cert.tbs_certificate.subject_public_key_info
                    == other.cert.tbs_certificate.subject_public_key_info)
    }

    /// The leaf's own checks: no unprocessed critical extension, and an empty subject
    /// (which EK certificates have) only with a critical subjectAltName.
    fn check_leaf(&self) -> Result<(), CertChainError> {
        self.check_critical()?;
        if self.subject == EMPTY_NAME && !self.critical_san {
            return Err(CertChainError::UnnamedSubject {
                cert: self.label.clone(),
            });
        }
        Ok(())
    }

    fn check_critical(&self) -> Result<(), CertChainError> {
        match self.unhandled_critical {
            Some(oid) => Err(CertChainError::UnhandledCriticalExtension {
                cert: self.label.clone(),
                oid: oid.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }
}

/// Checks that `issuer` signed `child` and may issue certificates at this depth.
fn check_link(
    child: &Parsed<'_>,
    issuer: &Parsed<'_>,
    path: &[&Parsed<'_>],
    is_anchor: bool,
    now: SystemTime,
) -> Result<(), CertChainError> {
    verify_signature(child, issuer)?;
    check_validity(issuer, now)?;
    issuer.check_critical()?;
    match &issuer.basic_constraints {
        Some(bc) if !bc.ca => {
            return Err(CertChainError::IssuerNotCa {
                cert: issuer.label.clone(),
                reason: "basicConstraints has cA=false".into(),
            })
        }
        None if !is_anchor => {
            return Err(CertChainError::IssuerNotCa {
                cert: issuer.label.clone(),
                reason: "it has no basicConstraints extension".into(),
            })
        }
        _ => {}
    }
    if let Some(ku) = &issuer.key_usage {
        if !ku.key_cert_sign() {
            return Err(CertChainError::IssuerNotCa {
                cert: issuer.label.clone(),
                reason: "keyUsage lacks keyCertSign".into(),
            });
        }
    }
    if let Some(path_len) = issuer
        .basic_constraints
        .as_ref()
        .and_then(|b| b.path_len_constraint)
    {
        // Intermediates between the leaf and this issuer; self-issued ones do not count.
        let below = path.iter().skip(1).filter(|p| !p.is_self_issued()).count();
        if below > usize::from(path_len) {
            return Err(CertChainError::PathLenExceeded {
                cert: issuer.label.clone(),
                path_len,
                below,
            });
        }
    }
    Ok(())
}

fn check_validity(cert: &Parsed<'_>, now: SystemTime) -> Result<(), CertChainError> {
    let validity = &cert.cert.tbs_certificate.validity;
    if now < validity.not_before.to_system_time() {
        return Err(CertChainError::NotYetValid {
            cert: cert.label.clone(),
            not_before: time_str(&validity.not_before),
            now: system_time_str(now),
        });
    }
    if now > validity.not_after.to_system_time() {
        return Err(CertChainError::Expired {
            cert: cert.label.clone(),
            not_after: time_str(&validity.not_after),
            now: system_time_str(now),
        });
    }
    Ok(())
}

fn verify_signature(child: &Parsed<'_>, issuer: &Parsed<'_>) -> Result<(), CertChainError> {
    let sig_alg = &child.cert.signature_algorithm;
    if sig_alg != &child.cert.tbs_certificate.signature {
        return Err(CertChainError::SignatureAlgorithmMismatch {
            cert: child.label.clone(),
        });
    }
    let signature = child
        .cert
        .signature
        .as_bytes()
        .ok_or_else(|| malformed(&child.label, "signature BIT STRING has unused bits"))?;
    let spki = &issuer.cert.tbs_certificate.subject_public_key_info;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed(&issuer.label, "public key BIT STRING has unused bits"))?;
    let algorithm = verification_algorithm(sig_alg, &spki.algorithm, child, issuer)?;
    UnparsedPublicKey::new(algorithm, key)
        .verify(child.tbs_raw, signature)
        .map_err(|_| CertChainError::SignatureInvalid {
            cert: child.label.clone(),
            issuer: issuer.label.clone(),
        })
}

/// Maps (signature algorithm, issuer key algorithm) to an aws-lc-rs verifier.
fn verification_algorithm(
    sig_alg: &AlgorithmIdentifierOwned,
    key_alg: &AlgorithmIdentifierOwned,
    child: &Parsed<'_>,
    issuer: &Parsed<'_>,
) -> Result<&'static dyn VerificationAlgorithm, CertChainError> {
    let oid = sig_alg.oid;
    let is_rsa_key = key_alg.oid == RSA_ENCRYPTION || key_alg.oid == RSASSA_PSS;
    let key_mismatch = || {
        unsupported(
            &issuer.label,
            key_alg.oid,
            &format!("key type does not match signature algorithm {oid}"),
        )
    };
    if [SHA256_WITH_RSA, SHA384_WITH_RSA, SHA512_WITH_RSA].contains(&oid) {
        if !params_absent_or_null(sig_alg) {
            return Err(unsupported(&child.label, oid, "parameters must be NULL"));
        }
        if !is_rsa_key {
            return Err(key_mismatch());
        }
        return Ok(match oid {
            SHA256_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA256,
            SHA384_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA384,
            _ => &signature::RSA_PKCS1_2048_8192_SHA512,
        });
    }
    if oid == RSASSA_PSS {
        if !is_rsa_key {
            return Err(key_mismatch());
        }
        let hash = pss_hash(sig_alg.parameters.as_ref())
            .map_err(|detail| unsupported(&child.label, oid, &detail))?;
        return Ok(match hash {
            SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
            SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
            _ => &signature::RSA_PSS_2048_8192_SHA512,
        });
    }
    if [ECDSA_SHA256, ECDSA_SHA384, ECDSA_SHA512].contains(&oid) {
        if sig_alg.parameters.is_some() {
            return Err(unsupported(&child.label, oid, "parameters must be absent"));
        }
        if key_alg.oid != EC_PUBLIC_KEY {
            return Err(key_mismatch());
        }
        return Ok(match (ec_curve(key_alg, &issuer.label)?, oid) {
            (EcCurve::P256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (EcCurve::P256, ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (EcCurve::P256, _) => &signature::ECDSA_P256_SHA512_ASN1,
            (EcCurve::P384, ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (EcCurve::P384, ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            (EcCurve::P384, _) => &signature::ECDSA_P384_SHA512_ASN1,
            (EcCurve::P521, ECDSA_SHA256) => &signature::ECDSA_P521_SHA256_ASN1,
            (EcCurve::P521, ECDSA_SHA384) => &signature::ECDSA_P521_SHA384_ASN1,
            (EcCurve::P521, _) => &signature::ECDSA_P521_SHA512_ASN1,
        });
    }
    Err(unsupported(&child.label, oid, "signature algorithm"))
}

/// The hash of RSASSA-PSS-params, accepted only in the form aws-lc-rs verifies: explicit
/// SHA-256/384/512, MGF1 with the same hash, salt length equal to the hash length, trailer 1.
fn pss_hash(params: Option<&Any>) -> Result<ObjectIdentifier, String> {
    use x509_cert::der::asn1::ContextSpecific;
    let params = params.ok_or("missing RSASSA-PSS parameters")?;
    if params.tag() != Tag::Sequence {
        return Err("RSASSA-PSS parameters are not a SEQUENCE".into());
    }
    let parse = || -> Result<_, x509_cert::der::Error> {
        let mut r = SliceReader::new(params.value())?;
        let hash =
            ContextSpecific::<AlgorithmIdentifierOwned>::decode_explicit(&mut r, TagNumber::N0)?;
        let mgf =
            ContextSpecific::<AlgorithmIdentifierOwned>::decode_explicit(&mut r, TagNumber::N1)?;
        let salt = ContextSpecific::<u32>::decode_explicit(&mut r, TagNumber::N2)?;
        let trailer = ContextSpecific::<u32>::decode_explicit(&mut r, TagNumber::N3)?;
        r.finish((
            hash.map(|h| h.value),
            mgf.map(|m| m.value),
            salt.map_or(20, |s| s.value),
            trailer.map_or(1, |t| t.value),
        ))
    };
    let (hash, mgf, salt, trailer) = parse().map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
    let hash = hash.ok_or("RSASSA-PSS with the default hash (SHA-1)")?;
    let hash_len = match hash.oid {
        SHA256 => 32,
        SHA384 => 48,
        SHA512 => 64,
        other => return Err(format!("RSASSA-PSS hash {other}")),
    };
    if !params_absent_or_null(&hash) {
        return Err("RSASSA-PSS hash parameters must be NULL or absent".into());
    }
    let mgf = mgf.ok_or("RSASSA-PSS with the default MGF (MGF1-SHA-1)")?;
    let mgf_hash = mgf
        .parameters
        .as_ref()
        .filter(|_| mgf.oid == MGF1)
        .and_then(|p| p.decode_as::<AlgorithmIdentifierOwned>().ok())
        .ok_or("RSASSA-PSS mask generation must be MGF1 with a hash")?;
    if mgf_hash.oid != hash.oid {
        return Err("RSASSA-PSS MGF1 hash differs from the message hash".into());
    }
    if salt != hash_len {
        return Err(format!(
            "RSASSA-PSS salt length {salt} (expected {hash_len})"
        ));
    }
    if trailer != 1 {
        return Err(format!("RSASSA-PSS trailer field {trailer}"));
    }
    Ok(hash.oid)
}

fn params_absent_or_null(alg: &AlgorithmIdentifierOwned) -> bool {
    match &alg.parameters {
        None => true,
        Some(p) => p.tag() == Tag::Null && p.value().is_empty(),
    }
}

fn ec_curve(key_alg: &AlgorithmIdentifierOwned, label: &str) -> Result<EcCurve, CertChainError> {
    let curve = key_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| malformed(label, "EC key without a named curve"))?;
    match curve {
        P256 => Ok(EcCurve::P256),
        P384 => Ok(EcCurve::P384),
        P521 => Ok(EcCurve::P521),
        other => Err(unsupported(label, other, "EC curve")),
    }
}

fn decode_cert(der: &[u8], role: &str) -> Result<Certificate, CertChainError> {
    Certificate::from_der(der).map_err(|e| malformed(role, e))
}

/// The TBSCertificate exactly as signed, rather than a re-encoding of the parsed value.
fn raw_tbs(der: &[u8]) -> Result<&[u8], x509_cert::der::Error> {
    let outer = AnyRef::from_der(der)?;
    SliceReader::new(outer.value())?.tlv_bytes()
}

fn label_of(cert: &Certificate) -> String {
    format!(
        "\"{}\" (serial {})",
        cert.tbs_certificate.subject,
        hex::encode(cert.tbs_certificate.serial_number.as_bytes())
    )
}

fn time_str(t: &Time) -> String {
    t.to_date_time().to_string()
}

fn system_time_str(t: SystemTime) -> String {
    x509_cert::der::DateTime::from_system_time(t)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{t:?}"))
}

fn malformed(which: &str, detail: impl std::fmt::Display) -> CertChainError {
    CertChainError::Malformed {
        which: which.to_string(),
        detail: detail.to_string(),
    }
}

fn unsupported(cert: &str, oid: ObjectIdentifier, detail: &str) -> CertChainError {
    CertChainError::UnsupportedAlgorithm {
        cert: cert.to_string(),
        oid: oid.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_rejects_empty_and_foreign_blocks() {
        assert!(matches!(
            pem_to_der_all("hello"),
            Err(CertChainError::Pem(_))
        ));
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(pem_to_der_all(key), Err(CertChainError::Pem(_))));
        let open = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(matches!(pem_to_der_all(open), Err(CertChainError::Pem(_))));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in [
            &b""[..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x03, 0x30, 0x01, 0x00],
        ] {
            assert!(matches!(
                verify_chain(input, &[], &[], SystemTime::now()),
                Err(CertChainError::Malformed { .. })
            ));
            assert!(spki_of(input).is_err());
        }
    }
}
