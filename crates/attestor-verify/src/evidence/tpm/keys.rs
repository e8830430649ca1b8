//! TPM keys of any algorithm attestor accepts: public areas (ECC and RSA TPMT_PUBLIC),
//! signatures (TPMT_SIGNATURE: ECDSA, RSASSA, RSAPSS), the signing algorithms an AK or a
//! sealed key may use and their strength, signature checks over TPM-signed data and DSSE
//! envelopes, and the EK public-key hash of allow-lists.
//!
//! Signing keys are one of [`SigningAlgorithm`]; anything else (SHA-1, RSA below 2048
//! bits, other curves, a hash that does not match the key size) is refused, not weakened.

use aws_lc_rs::signature::{
    self, ParsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED,
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED,
};
use serde::{Deserialize, Serialize};
use x509_cert::der::asn1::{Any, BitString, ObjectIdentifier, UintRef};
use x509_cert::der::{Encode, Header, Tag};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::wire::{
    self, read_public_header, EccPublic, EcdsaSignature, ObjectAttributes, PublicHeader, Reader,
    SymDef, WireError, TPM_ALG_ECDSA, TPM_ALG_NULL, TPM_ECC_NIST_P256, TPM_ECC_NIST_P384,
};
use super::HashAlg;
use crate::dsse;
use crate::evidence::certchain::{self, CertChainError, PublicKey};

/// TPM_ALG_RSA, the TPMT_PUBLIC type of an RSA key.
pub const TPM_ALG_RSA: u16 = 0x0001;
/// TPM_ALG_RSASSA (RSASSA-PKCS1-v1_5).
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_RSAPSS (RSASSA-PSS, salt as long as the digest).
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
/// The exponent a TPMS_RSA_PARMS.exponent of zero stands for.
pub const RSA_DEFAULT_EXPONENT: u32 = 65_537;
/// MAX_RSA_KEY_BYTES for RSA-4096, bounding TPM2B_PUBLIC_KEY_RSA.
const MAX_RSA_MODULUS: usize = 512;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Why a TPM key or signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The structure does not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A key whose type, size, curve, scheme or hash is not one of [`SigningAlgorithm`].
    #[error("unsupported signing key: {0}")]
    UnsupportedKey(String),
    /// The signature was made with another algorithm or hash than the key's scheme.
    #[error("signature is {found}, the key signs {expected}")]
    SchemeMismatch {
        /// The key's algorithm.
        expected: &'static str,
        /// What the signature says it is.
        found: String,
    },
    /// The signature does not verify under the key.
    #[error("signature does not verify under the key")]
    BadSignature,
    /// aws-lc-rs refused the public key (a point off its curve, a bad modulus).
    #[error("public key rejected: {0}")]
    Rejected(String),
    /// The key cannot be compared with a certificate's.
    #[error("certificate: {0}")]
    Certificate(#[from] CertChainError),
}

/// TPMT_RSA_SCHEME when not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaScheme {
    /// Scheme algorithm (e.g. [`TPM_ALG_RSASSA`]).
    pub scheme: u16,
    /// Raw hash algorithm id (kept raw: the verifier decides which are acceptable).
    pub hash: u16,
}

/// A decoded TPMT_PUBLIC of type RSA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// Algorithm used to compute the object's Name.
    pub name_alg: HashAlg,
    /// TPMA_OBJECT.
    pub object_attributes: ObjectAttributes,
    /// Policy digest that authorizes use (empty if none).
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm for a storage key; `None` for TPM_ALG_NULL.
    pub symmetric: Option<SymDef>,
    /// Signing or decryption scheme; `None` for TPM_ALG_NULL.
    pub scheme: Option<RsaScheme>,
    /// TPMS_RSA_PARMS.keyBits.
    pub key_bits: u16,
    /// The public exponent ([`RSA_DEFAULT_EXPONENT`] where the TPM stores zero).
    pub exponent: u32,
    /// The modulus, big-endian.
    pub modulus: Vec<u8>,
}

impl RsaPublic {
    /// DER RSAPublicKey (PKCS#1): what aws-lc-rs verification and certificates carry.
    pub fn rsa_public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        let rejected = |e: x509_cert::der::Error| KeyError::Rejected(e.to_string());
        let exponent = self.exponent.to_be_bytes();
        let n = UintRef::new(&self.modulus).map_err(rejected)?;
        let e = UintRef::new(&exponent).map_err(rejected)?;
        let len = (n.encoded_len().map_err(rejected)? + e.encoded_len().map_err(rejected)?)
            .map_err(rejected)?;
        let mut out = Vec::new();
        Header::new(Tag::Sequence, len)
            .map_err(rejected)?
            .encode_to_vec(&mut out)
            .map_err(rejected)?;
        n.encode_to_vec(&mut out).map_err(rejected)?;
        e.encode_to_vec(&mut out).map_err(rejected)?;
        Ok(out)
    }
}

/// A TPMT_PUBLIC of an asymmetric key: ECC or RSA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmPublic {
    /// An ECC key.
    Ecc(EccPublic),
    /// An RSA key.
    Rsa(RsaPublic),
}

impl TpmPublic {
    /// The key's nameAlg.
    pub fn name_alg(&self) -> HashAlg {
        match self {
            TpmPublic::Ecc(k) => k.name_alg,
            TpmPublic::Rsa(k) => k.name_alg,
        }
    }

    /// TPMA_OBJECT.
    pub fn object_attributes(&self) -> ObjectAttributes {
        match self {
            TpmPublic::Ecc(k) => k.object_attributes,
            TpmPublic::Rsa(k) => k.object_attributes,
        }
    }

    /// The authPolicy digest (empty if none).
    pub fn auth_policy(&self) -> &[u8] {
        match self {
            TpmPublic::Ecc(k) => &k.auth_policy,
            TpmPublic::Rsa(k) => &k.auth_policy,
        }
    }

    /// The symmetric definition of a storage key.
    pub fn symmetric(&self) -> Option<SymDef> {
        match self {
            TpmPublic::Ecc(k) => k.symmetric,
            TpmPublic::Rsa(k) => k.symmetric,
        }
    }

    /// The DER SubjectPublicKeyInfo of the key, as X.509 certificates and Go's
    /// `x509.MarshalPKIXPublicKey` encode it: rsaEncryption with NULL parameters, or
    /// id-ecPublicKey on a named curve with an uncompressed point.
    pub fn spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let rejected = |e: x509_cert::der::Error| KeyError::Rejected(e.to_string());
        let (algorithm, key) = match self {
            TpmPublic::Rsa(k) => (
                AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(Any::null()),
                },
                k.rsa_public_key_der()?,
            ),
            TpmPublic::Ecc(k) => {
                let curve = match k.curve {
                    TPM_ECC_NIST_P256 => SECP256R1,
                    TPM_ECC_NIST_P384 => SECP384R1,
                    wire::TPM_ECC_NIST_P521 => SECP521R1,
                    other => return Err(WireError::UnsupportedCurve(other).into()),
                };
                (
                    AlgorithmIdentifierOwned {
                        oid: EC_PUBLIC_KEY,
                        parameters: Some(Any::encode_from(&curve).map_err(rejected)?),
                    },
                    k.sec1_uncompressed()?,
                )
            }
        };
        SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: BitString::from_bytes(&key).map_err(rejected)?,
        }
        .to_der()
        .map_err(rejected)
    }

    /// The key type and size, e.g. `rsa-2048`, `ecc-p256`, `ecc-p384`.
    pub fn key_name(&self) -> String {
        match self {
            TpmPublic::Rsa(k) => format!("rsa-{}", k.key_bits),
            TpmPublic::Ecc(k) => match k.curve {
                TPM_ECC_NIST_P256 => "ecc-p256".into(),
                TPM_ECC_NIST_P384 => "ecc-p384".into(),
                wire::TPM_ECC_NIST_P521 => "ecc-p521".into(),
                other => format!("ecc-{other:#06x}"),
            },
        }
    }

    /// Whether the key is the subject key of the certificate `cert_der`.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> Result<bool, KeyError> {
        Ok(match (self, certchain::public_key_of(cert_der)?) {
            (TpmPublic::Ecc(k), PublicKey::Ec { sec1_point, .. }) => {
                k.sec1_uncompressed()? == sec1_point
            }
            (TpmPublic::Rsa(k), PublicKey::Rsa { rsa_public_key }) => {
                k.rsa_public_key_der()? == rsa_public_key
            }
            _ => false,
        })
    }
}

/// Parses a marshalled TPMT_PUBLIC (no TPM2B size prefix) of type ECC or RSA.
pub fn parse_tpm_public(buf: &[u8]) -> Result<TpmPublic, WireError> {
    match buf.first_chunk::<2>().map(|t| u16::from_be_bytes(*t)) {
        Some(TPM_ALG_RSA) => parse_rsa_public(buf).map(TpmPublic::Rsa),
        _ => wire::parse_public(buf).map(TpmPublic::Ecc),
    }
}

/// Parses a marshalled TPMT_PUBLIC of type RSA.
pub fn parse_rsa_public(buf: &[u8]) -> Result<RsaPublic, WireError> {
    let mut r = Reader::new(buf);
    let PublicHeader {
        name_alg,
        object_attributes,
        auth_policy,
        symmetric,
    } = read_public_header(&mut r, TPM_ALG_RSA)?;
    let scheme_alg = r.u16("TPMT_RSA_SCHEME.scheme")?;
    let scheme = if scheme_alg == TPM_ALG_NULL {
        None
    } else {
        Some(RsaScheme {
            scheme: scheme_alg,
            hash: r.u16("TPMT_RSA_SCHEME.details.hashAlg")?,
        })
    };
    let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
    let exponent = match r.u32("TPMS_RSA_PARMS.exponent")? {
        0 => RSA_DEFAULT_EXPONENT,
        e => e,
    };
    let modulus = r.tpm2b("TPM2B_PUBLIC_KEY_RSA", MAX_RSA_MODULUS)?;
    r.finish("TPMT_PUBLIC")?;
    Ok(RsaPublic {
        name_alg,
        object_attributes,
        auth_policy,
        symmetric,
        scheme,
        key_bits,
        exponent,
        modulus,
    })
}

/// A TPMT_SIGNATURE of a supported kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    /// TPM_ALG_ECDSA.
    Ecdsa(EcdsaSignature),
    /// TPM_ALG_RSASSA or TPM_ALG_RSAPSS.
    Rsa {
        /// [`TPM_ALG_RSASSA`] or [`TPM_ALG_RSAPSS`].
        scheme: u16,
        /// The hash the TPM signed with.
        hash: HashAlg,
        /// The signature, as long as the modulus.
        sig: Vec<u8>,
    },
}

impl TpmSignature {
    /// The signature as a DSSE envelope carries it: ASN.1 DER `ECDSA-Sig-Value` for ECDSA,
    /// the raw signature for RSA.
    pub fn to_dsse(&self) -> Result<Vec<u8>, WireError> {
        match self {
            TpmSignature::Ecdsa(sig) => sig.to_der(),
            TpmSignature::Rsa { sig, .. } => Ok(sig.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            TpmSignature::Ecdsa(s) => format!("ECDSA with {}", s.hash.name()),
            TpmSignature::Rsa { scheme, hash, .. } => {
                let kind = if *scheme == TPM_ALG_RSAPSS {
                    "RSASSA-PSS"
                } else {
                    "RSASSA-PKCS1-v1_5"
                };
                format!("{kind} with {}", hash.name())
            }
        }
    }
}

/// Parses a marshalled TPMT_SIGNATURE: ECDSA, RSASSA or RSAPSS with SHA-256/384.
pub fn parse_tpm_signature(buf: &[u8]) -> Result<TpmSignature, WireError> {
    let mut r = Reader::new(buf);
    match r.u16("TPMT_SIGNATURE.sigAlg")? {
        TPM_ALG_ECDSA => wire::parse_signature(buf).map(TpmSignature::Ecdsa),
        scheme @ (TPM_ALG_RSASSA | TPM_ALG_RSAPSS) => {
            let hash = r.hash_alg("TPMS_SIGNATURE_RSA.hash")?;
            let sig = r.tpm2b("TPMS_SIGNATURE_RSA.sig", MAX_RSA_MODULUS)?;
            r.finish("TPMT_SIGNATURE")?;
            Ok(TpmSignature::Rsa { scheme, hash, sig })
        }
        other => Err(WireError::UnsupportedSignatureAlg(other)),
    }
}

/// The signing algorithms an attestation key or a sealed key may use, each a key type and
/// size, a scheme and the one hash that matches the key's strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA on NIST P-384 with SHA-384 (192-bit strength).
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// ECDSA on NIST P-256 with SHA-256 (128-bit strength).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSASSA-PSS, RSA-2048, SHA-256 (112-bit strength).
    #[serde(rename = "rsapss-2048")]
    Rsapss2048,
    /// RSASSA-PKCS1-v1_5, RSA-2048, SHA-256 (112-bit strength).
    #[serde(rename = "rsassa-2048")]
    Rsassa2048,
}

impl SigningAlgorithm {
    /// Every algorithm, strongest first: the agent's default preference.
    pub const ALL: [SigningAlgorithm; 4] = [
        SigningAlgorithm::EcdsaP384,
        SigningAlgorithm::EcdsaP256,
        SigningAlgorithm::Rsapss2048,
        SigningAlgorithm::Rsassa2048,
    ];

    /// The name in configs, profiles and records: `ecdsa-p384`, `ecdsa-p256`,
    /// `rsapss-2048`, `rsassa-2048`.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EcdsaP384 => "ecdsa-p384",
            SigningAlgorithm::EcdsaP256 => "ecdsa-p256",
            SigningAlgorithm::Rsapss2048 => "rsapss-2048",
            SigningAlgorithm::Rsassa2048 => "rsassa-2048",
        }
    }

    /// Security strength in bits (NIST SP 800-57 Part 1, Table 2).
    pub fn security_bits(self) -> u16 {
        match self {
            SigningAlgorithm::EcdsaP384 => 192,
            SigningAlgorithm::EcdsaP256 => 128,
            SigningAlgorithm::Rsapss2048 | SigningAlgorithm::Rsassa2048 => 112,
        }
    }

    /// The hash the key signs with, which is also its nameAlg and policy hash.
    pub fn hash(self) -> HashAlg {
        match self {
            SigningAlgorithm::EcdsaP384 => HashAlg::Sha384,
            _ => HashAlg::Sha256,
        }
    }

    /// The TPM scheme id (TPM_ALG_ECDSA, TPM_ALG_RSAPSS, TPM_ALG_RSASSA).
    pub fn scheme(self) -> u16 {
        match self {
            SigningAlgorithm::EcdsaP384 | SigningAlgorithm::EcdsaP256 => TPM_ALG_ECDSA,
            SigningAlgorithm::Rsapss2048 => TPM_ALG_RSAPSS,
            SigningAlgorithm::Rsassa2048 => TPM_ALG_RSASSA,
        }
    }

    /// The TPM curve of an ECDSA algorithm; `None` for RSA.
    pub fn curve(self) -> Option<u16> {
        match self {
            SigningAlgorithm::EcdsaP384 => Some(TPM_ECC_NIST_P384),
            SigningAlgorithm::EcdsaP256 => Some(TPM_ECC_NIST_P256),
            _ => None,
        }
    }

    /// The algorithm named `name` (see [`SigningAlgorithm::name`]).
    pub fn from_name(name: &str) -> Option<SigningAlgorithm> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm of a signing key's public area, if it is one of these: the key type
    /// and size, its scheme and the scheme's hash must all match.
    pub fn of(public: &TpmPublic) -> Result<SigningAlgorithm, KeyError> {
        let unsupported = |what: String| Err(KeyError::UnsupportedKey(what));
        let found = match public {
            TpmPublic::Ecc(k) => {
                let Some(scheme) = k.scheme.filter(|s| s.scheme == TPM_ALG_ECDSA) else {
                    return unsupported("an ECC key without the ECDSA scheme".into());
                };
                match (k.curve, scheme.hash_alg()) {
                    (TPM_ECC_NIST_P384, Some(HashAlg::Sha384)) => SigningAlgorithm::EcdsaP384,
                    (TPM_ECC_NIST_P256, Some(HashAlg::Sha256)) => SigningAlgorithm::EcdsaP256,
                    (curve, _) => {
                        return unsupported(format!(
                            "ECC curve {curve:#06x} with hash {:#06x} (P-384/SHA-384 or \
                             P-256/SHA-256 only)",
                            scheme.hash
                        ))
                    }
                }
            }
            TpmPublic::Rsa(k) => {
                let bits_ok = k.key_bits == 2048 && k.modulus.len() == 256;
                match k.scheme {
                    Some(s)
                        if bits_ok && HashAlg::from_tpm_alg_id(s.hash) == Some(HashAlg::Sha256) =>
                    {
                        match s.scheme {
                            TPM_ALG_RSAPSS => SigningAlgorithm::Rsapss2048,
                            TPM_ALG_RSASSA => SigningAlgorithm::Rsassa2048,
                            other => return unsupported(format!("RSA scheme {other:#06x}")),
                        }
                    }
                    _ => {
                        return unsupported(format!(
                            "RSA-{} key with scheme {:?} (RSA-2048 with RSASSA or RSAPSS and \
                             SHA-256 only)",
                            k.key_bits, k.scheme
                        ))
                    }
                }
            }
        };
        if public.name_alg() != found.hash() {
            return unsupported(format!(
                "{} key with nameAlg {}",
                found.name(),
                public.name_alg().name()
            ));
        }
        Ok(found)
    }

    fn tpm_verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            SigningAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_FIXED,
            SigningAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_FIXED,
            SigningAlgorithm::Rsapss2048 => &signature::RSA_PSS_2048_8192_SHA256,
            SigningAlgorithm::Rsassa2048 => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    fn dsse_verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            SigningAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1,
            SigningAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            other => other.tpm_verification(),
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningAlgorithm::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = SigningAlgorithm::ALL.iter().map(|a| a.name()).collect();
            format!(
                "unknown signing algorithm {s:?} (one of {})",
                names.join(", ")
            )
        })
    }
}

/// A TPM signing key (an AK or a sealed key), parsed once for every signature it made.
#[derive(Debug, Clone)]
pub struct TpmSigningKey {
    algorithm: SigningAlgorithm,
    public: TpmPublic,
    tpm_key: ParsedPublicKey,
    key_bytes: Vec<u8>,
}

impl TpmSigningKey {
    /// Parses a marshalled TPMT_PUBLIC of a signing key of one of the [`SigningAlgorithm`]s.
    pub fn from_public(tpmt_public: &[u8]) -> Result<TpmSigningKey, KeyError> {
        let public = parse_tpm_public(tpmt_public)?;
        let algorithm = SigningAlgorithm::of(&public)?;
        let key_bytes = match &public {
            TpmPublic::Ecc(k) => k.sec1_uncompressed()?,
            TpmPublic::Rsa(k) => k.rsa_public_key_der()?,
        };
        let tpm_key = ParsedPublicKey::new(algorithm.tpm_verification(), &key_bytes)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(TpmSigningKey {
            algorithm,
            public,
            tpm_key,
            key_bytes,
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The decoded public area.
    pub fn public(&self) -> &TpmPublic {
        &self.public
    }

    /// Checks a TPMT_SIGNATURE the TPM made with this key over `message` (e.g. a
    /// TPMS_ATTEST): its scheme and hash must be the key's.
    pub fn verify_tpm_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let parsed = parse_tpm_signature(signature)?;
        let raw = match (&parsed, self.algorithm) {
            (
                TpmSignature::Ecdsa(sig),
                SigningAlgorithm::EcdsaP384 | SigningAlgorithm::EcdsaP256,
            ) if sig.hash == self.algorithm.hash() => {
                let field_len = if self.algorithm == SigningAlgorithm::EcdsaP384 {
                    48
                } else {
                    32
                };
                sig.to_fixed(field_len)?
            }
            (TpmSignature::Rsa { scheme, hash, sig }, _)
                if *scheme == self.algorithm.scheme() && *hash == self.algorithm.hash() =>
            {
                sig.clone()
            }
            _ => {
                return Err(KeyError::SchemeMismatch {
                    expected: self.algorithm.name(),
                    found: parsed.describe(),
                })
            }
        };
        self.tpm_key
            .verify_sig(message, &raw)
            .map_err(|_| KeyError::BadSignature)
    }

    /// The key as a DSSE verifying key: envelope signatures are DER ECDSA or raw RSA.
    pub fn dsse_key(&self) -> Result<dsse::VerifyingKey, dsse::DsseError> {
        dsse::VerifyingKey::with_algorithm(self.algorithm.dsse_verification(), &self.key_bytes)
    }
}

/// The EK public-key hash of allow-lists: SHA-256 of the DER SubjectPublicKeyInfo of the
/// EK's public key (what SPIRE's TPM node attestor and Go's `x509.MarshalPKIXPublicKey`
/// produce), from the EK's marshalled TPMT_PUBLIC.
pub fn ek_public_key_sha256(ek_public: &[u8]) -> Result<[u8; 32], KeyError> {
    use sha2::Digest;
    let spki = parse_tpm_public(ek_public)?.spki_der()?;
    Ok(sha2::Sha256::digest(spki).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA TPMT_PUBLIC with the given scheme, hash and modulus.
    fn rsa_public(attributes: u32, scheme: u16, hash: u16, modulus: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0x01, 0, 0x0b];
        out.extend(attributes.to_be_bytes());
        out.extend([0, 0, 0, 0x10]); // no policy, no symmetric
        out.extend(scheme.to_be_bytes());
        if scheme != TPM_ALG_NULL {
            out.extend(hash.to_be_bytes());
        }
        out.extend(2048u16.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(u16::try_from(modulus.len()).unwrap().to_be_bytes());
        out.extend(modulus);
        out
    }

    #[test]
    fn rsa_signing_keys_are_classified_strictly() {
        let m = [0xc5u8; 256];
        let key = |scheme, hash| parse_tpm_public(&rsa_public(0x0005_0072, scheme, hash, &m));
        assert_eq!(
            SigningAlgorithm::of(&key(TPM_ALG_RSASSA, 0x0b).unwrap()),
            Ok(SigningAlgorithm::Rsassa2048)
        );
        assert_eq!(
            SigningAlgorithm::of(&key(TPM_ALG_RSAPSS, 0x0b).unwrap()),
            Ok(SigningAlgorithm::Rsapss2048)
        );
        // SHA-384 is not a hash these keys sign with here; OAEP is no signing scheme; a
        // NULL scheme leaves the choice to the caller.
        for (scheme, hash) in [(TPM_ALG_RSASSA, 0x0c), (0x0017, 0x0b), (TPM_ALG_NULL, 0)] {
            assert!(matches!(
                SigningAlgorithm::of(&key(scheme, hash).unwrap()),
                Err(KeyError::UnsupportedKey(_))
            ));
        }
        // SHA-1 does not even parse as a scheme hash the verifier would accept.
        assert!(SigningAlgorithm::of(&key(TPM_ALG_RSASSA, 0x04).unwrap()).is_err());
        // RSA-1024.
        let short = parse_tpm_public(&rsa_public(0x0005_0072, TPM_ALG_RSASSA, 0x0b, &[0xc5; 128]));
        assert!(SigningAlgorithm::of(&short.unwrap()).is_err());
        // Every truncation is a typed error.
        let full = rsa_public(0x0005_0072, TPM_ALG_RSASSA, 0x0b, &m);
        for n in 0..full.len() {
            assert!(parse_tpm_public(&full[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in SigningAlgorithm::ALL {
            assert_eq!(alg.name().parse::<SigningAlgorithm>(), Ok(alg));
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(json, format!("\"{}\"", alg.name()));
        }
        assert!("ecdsa-p521".parse::<SigningAlgorithm>().is_err());
    }

    #[test]
    fn rsa_signatures_parse_and_others_are_refused() {
        let mut sig = vec![0, 0x14, 0, 0x0b, 0, 3, 1, 2, 3];
        assert_eq!(
            parse_tpm_signature(&sig),
            Ok(TpmSignature::Rsa {
                scheme: TPM_ALG_RSASSA,
                hash: HashAlg::Sha256,
                sig: vec![1, 2, 3]
            })
        );
        sig.push(0);
        assert!(matches!(
            parse_tpm_signature(&sig),
            Err(WireError::TrailingBytes { .. })
        ));
        // HMAC and SHA-1 RSASSA.
        assert!(parse_tpm_signature(&[0, 0x05, 0, 0x0b, 0, 0]).is_err());
        assert!(parse_tpm_signature(&[0, 0x14, 0, 0x04, 0, 1, 1]).is_err());
    }

    #[test]
    fn spki_of_an_rsa_key_is_the_pkix_encoding() {
        let mut m = vec![0xc5u8; 256];
        m[255] = 0x01;
        let public = parse_tpm_public(&rsa_public(0x0003_00b2, TPM_ALG_NULL, 0, &m)).unwrap();
        let spki = public.spki_der().unwrap();
        // SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }.
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert!(spki.ends_with(&[0x02, 0x03, 0x01, 0x00, 0x01]));
        assert_eq!(
            ek_public_key_sha256(&rsa_public(0x0003_00b2, TPM_ALG_NULL, 0, &m)).unwrap(),
            <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&spki))
        );
    }
}
