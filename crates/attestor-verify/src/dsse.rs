//! DSSE v1 (Dead Simple Signing Envelope): the signed wrapper around every statement.
//!
//! Spec: <https://github.com/secure-systems-lab/dsse> (`protocol.md`, `envelope.md`).
//! Signatures cover [`pae`] of the payload type and the payload *bytes as received*;
//! [`Envelope::verify`] hands back exactly those bytes so callers never re-serialise
//! anything before trusting it. `keyid` is an unauthenticated hint and never takes part
//! in a trust decision here.
//!
//! The project's algorithm is ECDSA P-384 with SHA-384, signatures ASN.1 DER encoded (as
//! in-toto and sigstore encode ECDSA); a TPM without P-384 seals a P-256 or RSA-2048 key
//! instead, whose signatures [`VerifyingKey::with_algorithm`] checks. The hardware-sealed
//! key lives in the TPM and signs through [`Signer`]; [`EcdsaP384Signer`] is a software
//! key for tests and load generation.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1,
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING,
};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use der::asn1::UintRef;
use der::Encode as _;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Largest JSON envelope [`Envelope::from_json`] accepts, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Most signatures an envelope may carry; bounds the verification work one envelope costs.
pub const MAX_SIGNATURES: usize = 16;

/// Byte length of a P-384 scalar (r, s, private key) and of one point coordinate.
const P384_SCALAR_LEN: usize = 48;

/// Length of an uncompressed SEC1 P-384 point: `04 || X || Y`.
const P384_SEC1_UNCOMPRESSED_LEN: usize = 1 + 2 * P384_SCALAR_LEN;
/// Length of an uncompressed SEC1 P-256 point.
const P256_SEC1_UNCOMPRESSED_LEN: usize = 1 + 2 * 32;

/// Errors from building, parsing, signing or verifying DSSE envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsseError {
    /// The JSON input is over [`MAX_ENVELOPE_BYTES`].
    #[error("envelope is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not JSON of the envelope's shape.
    #[error("envelope is not valid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("envelope has no {0:?} field")]
    MissingField(String),
    /// A base64 field decodes under neither the standard nor the URL-safe alphabet.
    #[error("field {field:?} is not valid base64 (standard or URL-safe)")]
    Base64 {
        /// Which field, e.g. `payload` or `signatures[1].sig`.
        field: String,
    },
    /// The `signatures` array is empty.
    #[error("envelope has no signatures")]
    NoSignatures,
    /// More signatures than [`MAX_SIGNATURES`].
    #[error("envelope has {count} signatures, more than the limit of {max}")]
    TooManySignatures {
        /// Signatures present.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No signature in the envelope verifies under the given key.
    #[error("no signature verifies under the given key")]
    BadSignature,
    /// The envelope's `payloadType` is not the one the caller accepts.
    #[error("payloadType is {found:?}, expected {expected:?}")]
    WrongPayloadType {
        /// The accepted type.
        expected: String,
        /// The envelope's type.
        found: String,
    },
    /// A public key is not a valid key of the expected algorithm and encoding.
    #[error("invalid public key: {0}")]
    BadPublicKey(String),
    /// A private key could not be generated, parsed or exported.
    #[error("private key error: {0}")]
    PrivateKey(String),
    /// The signer failed to produce a signature.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A raw ECDSA r or s value cannot be a P-384 scalar.
    #[error("invalid ECDSA {component}: {reason}")]
    BadScalar {
        /// `r` or `s`.
        component: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// DSSE pre-authentication encoding: the exact bytes a signature covers.
///
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal
/// without leading zeros, `LEN(type)` counting UTF-8 bytes, not characters.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_bytes = payload_type.as_bytes();
    let type_len = type_bytes.len().to_string();
    let body_len = payload.len().to_string();
    let mut out = Vec::with_capacity(
        b"DSSEv1 ".len()
            + type_len.len()
            + 1
            + type_bytes.len()
            + 1
            + body_len.len()
            + 1
            + payload.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(type_bytes);
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature over the envelope's PAE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// Unauthenticated hint naming the key; empty when absent. Never used for trust.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// Signature bytes (for this project: ASN.1 DER ECDSA-Sig-Value).
    #[serde(serialize_with = "serialize_base64")]
    pub sig: Vec<u8>,
}

/// A DSSE JSON envelope with its base64 fields already decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEnvelope")]
pub struct Envelope {
    /// Media type or URI saying how to interpret `payload`; authenticated by the signature.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The serialized body exactly as signed.
    #[serde(serialize_with = "serialize_base64")]
    pub payload: Vec<u8>,
    /// Signatures over `pae(payload_type, payload)`.
    pub signatures: Vec<Signature>,
}

/// Something that can sign a PAE: the TPM-sealed key, or a software key in tests.
pub trait Signer {
    /// Unauthenticated hint to put in the signature's `keyid` (may be empty).
    fn keyid(&self) -> String;
    /// Signs `message` (the PAE bytes), hashing it as the signer's algorithm requires.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DsseError>;
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `signer` into a one-signature envelope.
    pub fn sign(
        payload_type: &str,
        payload: Vec<u8>,
        signer: &dyn Signer,
    ) -> Result<Envelope, DsseError> {
        let sig = signer.sign(&pae(payload_type, &payload))?;
        Ok(Envelope {
            payload_type: payload_type.to_owned(),
            payload,
            signatures: vec![Signature {
                keyid: signer.keyid(),
                sig,
            }],
        })
    }

    /// Parses a JSON envelope, refusing inputs over [`MAX_ENVELOPE_BYTES`].
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let raw: RawEnvelope =
            serde_json::from_slice(bytes).map_err(|e| DsseError::Json(e.to_string()))?;
        Envelope::try_from(raw)
    }

    /// Serialises to the standard JSON envelope (standard, padded base64).
    pub fn to_json(&self) -> Result<Vec<u8>, DsseError> {
        serde_json::to_vec(self).map_err(|e| DsseError::Json(e.to_string()))
    }

    /// Returns the payload if ANY signature verifies under `key` over the PAE of the
    /// received bytes; `keyid` plays no part in the decision.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&[u8], DsseError> {
        if self.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        let message = pae(&self.payload_type, &self.payload);
        if self
            .signatures
            .iter()
            .any(|s| key.verify_signature(&message, &s.sig).is_ok())
        {
            Ok(&self.payload)
        } else {
            Err(DsseError::BadSignature)
        }
    }

    /// Checks `payloadType` is exactly `expected` (case-sensitive, as the spec says).
    pub fn verify_payload_type(&self, expected: &str) -> Result<(), DsseError> {
        if self.payload_type == expected {
            Ok(())
        } else {
            Err(DsseError::WrongPayloadType {
                expected: expected.to_owned(),
                found: self.payload_type.clone(),
            })
        }
    }
}

/// The wire shape, every field optional so a missing one gets a precise error.
#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: Option<String>,
    payload: Option<String>,
    signatures: Option<Vec<RawSignature>>,
}

#[derive(Deserialize)]
struct RawSignature {
    keyid: Option<String>,
    sig: Option<String>,
}

impl TryFrom<RawEnvelope> for Envelope {
    type Error = DsseError;

    fn try_from(raw: RawEnvelope) -> Result<Self, Self::Error> {
        let payload_type = raw
            .payload_type
            .ok_or_else(|| DsseError::MissingField("payloadType".into()))?;
        let payload = raw
            .payload
            .ok_or_else(|| DsseError::MissingField("payload".into()))?;
        let payload = decode_base64(&payload, "payload")?;
        let raw_sigs = raw
            .signatures
            .ok_or_else(|| DsseError::MissingField("signatures".into()))?;
        if raw_sigs.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        if raw_sigs.len() > MAX_SIGNATURES {
            return Err(DsseError::TooManySignatures {
                count: raw_sigs.len(),
                max: MAX_SIGNATURES,
            });
        }
        let signatures = raw_sigs
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let sig = s
                    .sig
                    .ok_or_else(|| DsseError::MissingField(format!("signatures[{i}].sig")))?;
                Ok(Signature {
                    keyid: s.keyid.unwrap_or_default(),
                    sig: decode_base64(&sig, &format!("signatures[{i}].sig"))?,
                })
            })
            .collect::<Result<Vec<_>, DsseError>>()?;
        Ok(Envelope {
            payload_type,
            payload,
            signatures,
        })
    }
}

/// Either alphabet, padding optional; trailing bits must be zero so one byte string has
/// one accepted spelling per alphabet.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, DsseError> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map_err(|_| DsseError::Base64 {
            field: field.to_owned(),
        })
}

fn serialize_base64<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

/// A public key that accepts envelope signatures: ECDSA P-384/SHA-384 or P-256/SHA-256 in
/// ASN.1 DER, or (for a TPM's RSA sealed key) RSA signatures of its scheme.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    key: ParsedPublicKey,
}

impl VerifyingKey {
    /// From an uncompressed SEC1 point (`04 || X || Y`): 97 bytes for P-384 (the project's
    /// algorithm), 65 for P-256 (a TPM's P-256 sealed key).
    pub fn from_sec1(point: &[u8]) -> Result<VerifyingKey, DsseError> {
        // aws-lc-rs would also take SPKI here; insist on the form the caller named.
        let algorithm = match (point.len(), point.first()) {
            (P384_SEC1_UNCOMPRESSED_LEN, Some(0x04)) => &ECDSA_P384_SHA384_ASN1,
            (P256_SEC1_UNCOMPRESSED_LEN, Some(0x04)) => &ECDSA_P256_SHA256_ASN1,
            _ => {
                return Err(DsseError::BadPublicKey(format!(
                    "expected a {P384_SEC1_UNCOMPRESSED_LEN}-byte (P-384) or \
                     {P256_SEC1_UNCOMPRESSED_LEN}-byte (P-256) uncompressed SEC1 point, got {} bytes",
                    point.len()
                )))
            }
        };
        Self::with_algorithm(algorithm, point)
    }

    /// From a DER SubjectPublicKeyInfo (id-ecPublicKey on secp384r1).
    pub fn from_spki_der(spki: &[u8]) -> Result<VerifyingKey, DsseError> {
        // A SEC1 point starts with 0x04, an SPKI with a SEQUENCE tag.
        if spki.first() != Some(&0x30) {
            return Err(DsseError::BadPublicKey(
                "expected a DER SubjectPublicKeyInfo".into(),
            ));
        }
        Self::with_algorithm(&ECDSA_P384_SHA384_ASN1, spki)
    }

    /// A key of the given aws-lc-rs verification algorithm, in the encoding that algorithm
    /// parses (SEC1 point or SPKI for ECDSA, RSAPublicKey or SPKI for RSA).
    pub fn with_algorithm(
        algorithm: &'static dyn VerificationAlgorithm,
        bytes: &[u8],
    ) -> Result<VerifyingKey, DsseError> {
        ParsedPublicKey::new(algorithm, bytes)
            .map(|key| VerifyingKey { key })
            .map_err(|e| DsseError::BadPublicKey(e.to_string()))
    }

    /// Checks one signature over `message` (hashed here with the key's hash).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), DsseError> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| DsseError::BadSignature)
    }
}

/// A P-384 key held in process memory: for tests and the load generator only.
///
/// This is NOT the hardware-sealed key: its private half is ordinary memory, so envelopes
/// it signs prove nothing about the host's state.
#[derive(Debug)]
pub struct EcdsaP384Signer {
    pair: EcdsaKeyPair,
    keyid: String,
}

impl EcdsaP384Signer {
    /// Generates a fresh random key.
    pub fn generate() -> Result<EcdsaP384Signer, DsseError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
            .map_err(|e| DsseError::PrivateKey(e.to_string()))?;
        Ok(Self::with_default_keyid(pair))
    }

    /// Loads an unencrypted PKCS#8 v1 DER P-384 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<EcdsaP384Signer, DsseError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der)
            .map_err(|e| DsseError::PrivateKey(e.to_string()))?;
        Ok(Self::with_default_keyid(pair))
    }

    fn with_default_keyid(pair: EcdsaKeyPair) -> EcdsaP384Signer {
        // A stable hint so a verifier holding several keys can try the right one first.
        let keyid = hex::encode(Sha256::digest(pair.public_key().as_ref()));
        EcdsaP384Signer { pair, keyid }
    }

    /// Replaces the default `keyid` hint (hex SHA-256 of the SEC1 public point).
    pub fn with_keyid(mut self, keyid: impl Into<String>) -> EcdsaP384Signer {
        self.keyid = keyid.into();
        self
    }

    /// Exports the private key as PKCS#8 v1 DER, so a load generator can reuse it.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, DsseError> {
        self.pair
            .to_pkcs8v1()
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|e| DsseError::PrivateKey(e.to_string()))
    }

    /// The public key as an uncompressed SEC1 point (97 bytes).
    pub fn public_key_sec1(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// The matching verification key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, DsseError> {
        VerifyingKey::from_sec1(self.pair.public_key().as_ref())
    }
}

impl Signer for EcdsaP384Signer {
    fn keyid(&self) -> String {
        self.keyid.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DsseError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|e| DsseError::Signing(e.to_string()))
    }
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 / SEC1).
#[derive(der::Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Turns big-endian r and s from a TPM (any length, leading zeros allowed) into a DER
/// ECDSA-Sig-Value with minimal INTEGER encodings, as [`VerifyingKey`] expects.
pub fn p384_asn1_from_fixed(r: &[u8], s: &[u8]) -> Result<Vec<u8>, DsseError> {
    let sig = EcdsaSigValue {
        r: scalar(r, "r")?,
        s: scalar(s, "s")?,
    };
    sig.to_der().map_err(|e| DsseError::Signing(e.to_string()))
}

fn scalar<'a>(bytes: &'a [u8], component: &'static str) -> Result<UintRef<'a>, DsseError> {
    let first_nonzero = bytes
        .iter()
        .position(|&b| b != 0)
        .ok_or(DsseError::BadScalar {
            component,
            reason: "value is zero",
        })?;
    if bytes.len() - first_nonzero > P384_SCALAR_LEN {
        return Err(DsseError::BadScalar {
            component,
            reason: "value is longer than 48 bytes",
        });
    }
    UintRef::new(bytes).map_err(|_| DsseError::BadScalar {
        component,
        reason: "not encodable as a DER INTEGER",
    })
}
