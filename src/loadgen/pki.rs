//! Certificates the load generator issues: one mTLS client certificate per simulated agent
//! (from the operator's CA, as `attestor pki init` issues them) and one EK certificate per
//! simulated TPM (from the loadgen EK CA, which `attestor loadgen ek-ca` creates together
//! with a firmware profile naming it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attestor_net::tls::AgentIdentity;
use attestor_verify::evidence::certchain;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SignatureAlgorithm, PKCS_ECDSA_P384_SHA384,
};
use thiserror::Error;
use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Decode, Tag, Tagged};

use super::soft_tpm;

/// PCR the simulated agents measure the policy kernel configuration into.
pub(super) const MEASURED_PCR: u8 = 13;
/// Firmware PCRs the simulated TPMs hold and quote.
pub(super) const FIRMWARE_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Why a certificate could not be loaded or issued.
#[derive(Debug, Error)]
pub(crate) enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0} already exists; refusing to overwrite an EK CA")]
    Exists(PathBuf),
}

/// A CA that can issue certificates: its key and a certificate object with its subject.
pub(super) struct Issuer {
    cert_pem: String,
    cert: Certificate,
    key: KeyPair,
}

impl Issuer {
    /// Loads a CA certificate and key (PEM). rcgen needs the issuer's subject name and key
    /// only, so the subject is copied from the certificate attribute by attribute.
    pub(super) fn load(cert_path: &Path, key_path: &Path) -> Result<Issuer, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let invalid = |path: &Path, detail: String| PkiError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let cert_pem = read(cert_path)?;
        let key =
            KeyPair::from_pem(&read(key_path)?).map_err(|e| invalid(key_path, e.to_string()))?;
        let der = certchain::pem_to_der_all(&cert_pem)
            .map_err(|e| invalid(cert_path, e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(cert_path, "no certificate".into()))?;
        let parsed = x509_cert::Certificate::from_der(&der)
            .map_err(|e| invalid(cert_path, e.to_string()))?;
        let spki = certchain::spki_of(&der).map_err(|e| invalid(cert_path, e.to_string()))?;
        if key.public_key_der() != spki {
            return Err(invalid(key_path, "key is not the certificate's key".into()));
        }
        let mut name = DistinguishedName::new();
        for rdn in parsed.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
                let bad = |e: &dyn std::fmt::Display| invalid(cert_path, e.to_string());
                let value = match atv.value.tag() {
                    Tag::Utf8String => DnValue::Utf8String(
                        atv.value
                            .decode_as::<Utf8StringRef<'_>>()
                            .map_err(|e| bad(&e))?
                            .to_string(),
                    ),
                    Tag::PrintableString => DnValue::PrintableString(
                        atv.value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map_err(|e| bad(&e))?
                            .as_str()
                            .try_into()
                            .map_err(|e| bad(&e))?,
                    ),
                    other => return Err(bad(&format!("subject attribute of type {other}"))),
                };
                name.push(DnType::from_oid(&arcs), value);
            }
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key)?;
        Ok(Issuer {
            cert_pem,
            cert,
            key,
        })
    }

    pub(super) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS client certificate and key (PEM) for `identity`, as `attestor pki init`
    /// issues agents.
    pub(super) fn agent_certificate(
        &self,
        identity: &AgentIdentity,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!(
            "{}/{} (loadgen)",
            identity.tenant, identity.agent_id
        ));
        params.subject_alt_names = vec![SanType::URI(identity.to_uri().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// An EK certificate (DER) for the simulated TPM's EK point.
    pub(super) fn ek_certificate(&self, label: &str, ek_point: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("loadgen simulated TPM EK {label}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::KeyAgreement];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&EcPoint(ek_point), &self.cert, &self.key)?;
        Ok(cert.der().to_vec())
    }
}

/// A P-384 public point, as rcgen's subject key.
struct EcPoint<'a>(&'a [u8]);

impl PublicKeyData for EcPoint<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P384_SHA384
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "attestor loadgen");
    dn.push(DnType::CommonName, cn);
    dn
}

/// The digest "firmware" extends into each firmware PCR of every simulated TPM.
pub(super) fn firmware_digests() -> BTreeMap<u8, Vec<u8>> {
    FIRMWARE_PCRS
        .iter()
        .map(|&pcr| {
            let event = format!("attestor loadgen simulated firmware, PCR {pcr}");
            (pcr, soft_tpm::sha384(event.as_bytes()))
        })
        .collect()
}

/// Creates `dir/ek-ca.pem`, `dir/ek-ca.key` and `dir/loadgen-profile.toml` (a firmware
/// profile trusting that CA and expecting the simulated firmware PCRs). Returns the
/// profile's path.
pub(super) fn create_ek_ca(dir: &Path) -> Result<PathBuf, PkiError> {
    let cert_path = dir.join("ek-ca.pem");
    let key_path = dir.join("ek-ca.key");
    let profile_path = dir.join("loadgen-profile.toml");
    for path in [&cert_path, &key_path, &profile_path] {
        if path.exists() {
            return Err(PkiError::Exists(path.clone()));
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("attestor loadgen EK CA (simulated TPMs only)");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key)?;

    let mut profile = String::from(
        "# Firmware profile for `attestor loadgen` ONLY: its EK CA certifies simulated TPMs\n\
         # whose keys live in the load generator's memory. Never use it for real agents.\n\
         name = \"loadgen\"\n\
         description = \"attestor loadgen simulated TPMs (not a root of trust)\"\n\
         max_age_seconds = 300\n\n[tpm]\npcr_bank = \"sha384\"\n",
    );
    profile.push_str(&format!(
        "measured_pcr = {MEASURED_PCR}\nek_trust_anchors = [\"ek-ca.pem\"]\n\n[tpm.firmware_pcrs]\n"
    ));
    for (pcr, digest) in firmware_digests() {
        let value = soft_tpm::extend(&[0u8; 48], &digest);
        profile.push_str(&format!("{pcr} = \"{}\"\n", hex::encode(value)));
    }

    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (path, contents, private) in [
        (&key_path, key.serialize_pem(), true),
        (&cert_path, cert.pem(), false),
        (&profile_path, profile, false),
    ] {
        write_file(path, contents.as_bytes(), private)?;
    }
    Ok(profile_path)
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)
}
