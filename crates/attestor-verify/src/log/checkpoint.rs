//! Signed checkpoints: C2SP tlog-checkpoint bodies carried in C2SP signed notes.
//!
//! The ledger signs with signature type `0x02` by default, or `0x01` (Ed25519, which the
//! public witness networks require) when configured. Type `0x02` is ECDSA as implemented
//! by github.com/transparency-dev/witness: NIST P-256, ASN.1 DER signatures over SHA-256 of
//! the note text, public key = DER SubjectPublicKeyInfo, and — unlike the generic
//! recommendation — key ID = `SHA-256(SPKI DER)[:4]` (signed-note: "the key ID for these
//! signatures is the truncated SHA-256 hash of the DER encoded public key in SPKI format").
//! Verification also accepts type `0x01` (Ed25519, key ID =
//! `SHA-256(name || 0x0A || 0x01 || key)[:4]`) so auditors can pin either kind of key.
//!
//! The ledger's timestamp travels in an extension line `timestamp <unix seconds>`. The
//! spec allows extension lines (non-empty, opaque) but does not recommend them because log
//! monitors cannot audit them: the timestamp is the log's claim, signed by the log key only.

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, VerificationAlgorithm,
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA256_ASN1,
    ECDSA_P521_SHA256_ASN1, ED25519,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use super::merkle::Hash;

/// Signature type byte of Ed25519 note signatures (C2SP signed-note).
pub const SIGNATURE_TYPE_ED25519: u8 = 0x01;
/// Signature type byte of ECDSA note signatures (C2SP signed-note, transparency-dev/witness).
pub const SIGNATURE_TYPE_ECDSA: u8 = 0x02;
/// Signature type byte of Ed25519 witness cosignatures (C2SP tlog-cosignature v1).
pub const SIGNATURE_TYPE_COSIGNATURE: u8 = 0x04;
/// First line of the message a v1 cosignature signs, before `time <t>` and the note text.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// Largest note accepted (16 post-quantum signatures of ~5 kB fit, as the spec requires).
pub const MAX_NOTE_BYTES: usize = 128 * 1024;
/// Most signature lines accepted in one note (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// Prefix of the extension line carrying the ledger's timestamp.
pub const TIMESTAMP_EXTENSION: &str = "timestamp ";

/// The em dash (U+2014) that starts every signature line.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Errors from building, signing, parsing and verifying checkpoints and notes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note is larger than [`MAX_NOTE_BYTES`].
    #[error("note is {len} bytes, more than the {max} accepted")]
    NoteTooLarge {
        /// Size of the note.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control character other than newline (signed notes forbid them).
    #[error("note contains a control character other than newline at byte {0}")]
    ControlCharacter(usize),
    /// No blank line separates the text from the signatures.
    #[error("note has no blank line before its signatures")]
    MissingSeparator,
    /// The note or its signature block does not end with a newline.
    #[error("note does not end with a newline")]
    MissingFinalNewline,
    /// The signature block is empty.
    #[error("note has no signature lines")]
    NoSignatures,
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("note has more than {0} signature lines")]
    TooManySignatures(usize),
    /// A signature line that is not `— <name> <base64(key ID || signature)>`.
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key name that is empty or contains a space or `+`.
    #[error("key name is empty or contains a space or '+'")]
    InvalidKeyName,
    /// A signature by the trusted key that does not verify.
    #[error("signature by key {0} does not verify")]
    InvalidSignature(String),
    /// More than one signature line by the trusted key.
    #[error("note carries more than one signature by key {0}")]
    DuplicateSignature(String),
    /// No signature line by the trusted key (signatures by other keys are ignored).
    #[error("note has no signature by the trusted key {0}")]
    NoTrustedSignature(String),
    /// Fewer than the three mandatory checkpoint lines.
    #[error("checkpoint body has {0} lines, at least 3 are required")]
    TooFewLines(usize),
    /// An empty line inside the checkpoint body.
    #[error("checkpoint line {0} is empty")]
    EmptyLine(usize),
    /// An origin or extension line containing a newline or control character.
    #[error("checkpoint {0} must be one non-empty line without control characters")]
    InvalidLine(&'static str),
    /// A tree size that is not canonical decimal (digits only, no leading zero) or overflows.
    #[error("tree size is not a canonical decimal u64")]
    InvalidSize,
    /// A root hash that is not standard base64 of exactly 32 bytes.
    #[error("root hash is not standard base64 of 32 bytes")]
    InvalidRoot,
    /// A `timestamp` extension that is repeated or not canonical decimal seconds.
    #[error("timestamp extension is repeated or not canonical decimal seconds")]
    InvalidTimestamp,
    /// A verifier key string that is not `<name>+<8 hex>+<base64(type || key)>`.
    #[error("verifier key is malformed: {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key whose declared key ID is not the one its key computes to.
    #[error("verifier key declares key ID {declared:08x} but the key's ID is {computed:08x}")]
    KeyIdMismatch {
        /// ID written in the key string.
        declared: u32,
        /// ID computed from the key.
        computed: u32,
    },
    /// A signature type this module does not verify.
    #[error("unsupported note signature type 0x{0:02x}")]
    UnsupportedKeyType(u8),
    /// An ECDSA key that is not a named-curve P-256, P-384 or P-521 SubjectPublicKeyInfo.
    #[error("ECDSA key is not a P-256, P-384 or P-521 SubjectPublicKeyInfo")]
    UnsupportedEcdsaKey,
    /// The signing key could not be generated, parsed or exported.
    #[error("signing key: {0}")]
    SigningKey(&'static str),
}

/// A transparency-log checkpoint: the signed statement of a tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line), e.g. `ledger.example/attestor`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 9162 root hash at `size`.
    pub root: Hash,
    /// Extension lines (opaque, non-empty), e.g. `timestamp 1800000000`.
    pub extensions: Vec<String>,
}

fn is_forbidden_control(c: char) -> bool {
    c.is_control() && c != '\n'
}

fn valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c == '\n' || c.is_control())
}

/// Decimal digits only, no sign, no leading zero unless the value is `0`.
pub fn parse_canonical_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Adds the ledger's `timestamp <unix seconds>` extension line.
    pub fn with_timestamp(mut self, unix_seconds: u64) -> Self {
        self.extensions
            .push(format!("{TIMESTAMP_EXTENSION}{unix_seconds}"));
        self
    }

    /// The `timestamp` extension, if present; a repeated or malformed one is an error.
    pub fn timestamp(&self) -> Result<Option<u64>, CheckpointError> {
        let mut found = None;
        for ext in &self.extensions {
            if let Some(value) = ext.strip_prefix(TIMESTAMP_EXTENSION) {
                let seconds =
                    parse_canonical_u64(value).ok_or(CheckpointError::InvalidTimestamp)?;
                if found.replace(seconds).is_some() {
                    return Err(CheckpointError::InvalidTimestamp);
                }
            }
        }
        Ok(found)
    }

    /// The note text: origin, size, base64 root and extension lines, each ending in `\n`.
    pub fn body(&self) -> Result<String, CheckpointError> {
        if !valid_line(&self.origin) {
            return Err(CheckpointError::InvalidLine("origin"));
        }
        if !self.extensions.iter().all(|e| valid_line(e)) {
            return Err(CheckpointError::InvalidLine("extension"));
        }
        self.timestamp()?;
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a checkpoint body (note text) strictly; it does not verify anything.
    pub fn from_body(text: &str) -> Result<Self, CheckpointError> {
        let Some(content) = text.strip_suffix('\n') else {
            return Err(CheckpointError::MissingFinalNewline);
        };
        if let Some(pos) = text.find(is_forbidden_control) {
            return Err(CheckpointError::ControlCharacter(pos));
        }
        let lines: Vec<&str> = content.split('\n').collect();
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(CheckpointError::EmptyLine(i + 1));
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines(lines.len()));
        };
        let size = parse_canonical_u64(size).ok_or(CheckpointError::InvalidSize)?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointError::InvalidRoot)?;
        let checkpoint = Self {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        };
        checkpoint.timestamp()?;
        Ok(checkpoint)
    }
}

pub(crate) fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn sha256_prefix(parts: &[&[u8]]) -> u32 {
    let mut ctx = digest::Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let d = ctx.finish();
    let mut id = [0u8; 4];
    for (o, i) in id.iter_mut().zip(d.as_ref()) {
        *o = *i;
    }
    u32::from_be_bytes(id)
}

/// Key ID of an Ed25519 note key: `SHA-256(name || 0x0A || 0x01 || key)[:4]` big-endian.
pub fn ed25519_key_id(name: &str, public_key: &[u8]) -> u32 {
    sha256_prefix(&[
        name.as_bytes(),
        b"\n",
        &[SIGNATURE_TYPE_ED25519],
        public_key,
    ])
}

/// Key ID of an Ed25519 witness cosignature key:
/// `SHA-256(name || 0x0A || 0x04 || key)[:4]` big-endian.
pub fn cosignature_key_id(name: &str, public_key: &[u8]) -> u32 {
    sha256_prefix(&[
        name.as_bytes(),
        b"\n",
        &[SIGNATURE_TYPE_COSIGNATURE],
        public_key,
    ])
}

/// The message a v1 cosignature made at `timestamp` signs over a note's `text`.
pub fn cosigned_message(timestamp: u64, text: &str) -> String {
    format!("{COSIGNATURE_HEADER}time {timestamp}\n{text}")
}

/// Key ID of an ECDSA (type 0x02) note key: `SHA-256(SPKI DER)[:4]` big-endian.
pub fn ecdsa_key_id(spki_der: &[u8]) -> u32 {
    sha256_prefix(&[spki_der])
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum VerifyKey {
    Ed25519(Vec<u8>),
    /// A witness's Ed25519 key: its signatures are v1 cosignatures, carrying a timestamp.
    Cosignature(Vec<u8>),
    /// Curve's SHA-256 verification algorithm and the SEC1 point from the SPKI.
    Ecdsa {
        curve: EcCurve,
        point: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EcCurve {
    P256,
    P384,
    P521,
}

impl EcCurve {
    fn algorithm(self) -> &'static dyn VerificationAlgorithm {
        // The type fixes the digest to SHA-256 whatever the curve (the witness verifier
        // hashes with SHA-256 for every key).
        match self {
            EcCurve::P256 => &ECDSA_P256_SHA256_ASN1,
            EcCurve::P384 => &ECDSA_P384_SHA256_ASN1,
            EcCurve::P521 => &ECDSA_P521_SHA256_ASN1,
        }
    }
}

/// A trusted note verifier key, parsed from its `<name>+<hex ID>+<base64>` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyKey,
}

fn parse_ecdsa_spki(der: &[u8]) -> Result<VerifyKey, CheckpointError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|_| CheckpointError::UnsupportedEcdsaKey)?;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(CheckpointError::UnsupportedEcdsaKey);
    }
    let curve_oid: ObjectIdentifier = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or(CheckpointError::UnsupportedEcdsaKey)?;
    let curve = match curve_oid {
        c if c == SECP256R1 => EcCurve::P256,
        c if c == SECP384R1 => EcCurve::P384,
        c if c == SECP521R1 => EcCurve::P521,
        _ => return Err(CheckpointError::UnsupportedEcdsaKey),
    };
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CheckpointError::UnsupportedEcdsaKey)?
        .to_vec();
    Ok(VerifyKey::Ecdsa { curve, point })
}

impl NoteVerifier {
    /// Parses a log's C2SP verifier key string (type 0x01 or 0x02), checking its key ID
    /// against the key.
    pub fn from_vkey(vkey: &str) -> Result<Self, CheckpointError> {
        Self::parse(vkey, false)
    }

    /// Parses a witness's verifier key string (type 0x04, C2SP tlog-cosignature): its
    /// signature on a note is a timestamped cosignature, never a log's signature.
    pub fn cosigner(vkey: &str) -> Result<Self, CheckpointError> {
        Self::parse(vkey, true)
    }

    fn parse(vkey: &str, cosigner: bool) -> Result<Self, CheckpointError> {
        if vkey.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::MalformedVerifierKey("too long"));
        }
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::MalformedVerifierKey(
                "expected <name>+<key ID>+<key>",
            ));
        };
        if !valid_key_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        if hex_id.len() != 8 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CheckpointError::MalformedVerifierKey(
                "key ID is not 8 hex digits",
            ));
        }
        let declared = u32::from_str_radix(hex_id, 16)
            .map_err(|_| CheckpointError::MalformedVerifierKey("key ID is not 8 hex digits"))?;
        let key_bytes = STANDARD
            .decode(key_b64)
            .map_err(|_| CheckpointError::MalformedVerifierKey("key is not standard base64"))?;
        let Some((&key_type, key)) = key_bytes.split_first() else {
            return Err(CheckpointError::MalformedVerifierKey("key is empty"));
        };
        let (computed, key) = match key_type {
            SIGNATURE_TYPE_ED25519 if !cosigner => {
                if key.len() != 32 {
                    return Err(CheckpointError::MalformedVerifierKey(
                        "Ed25519 key is not 32 bytes",
                    ));
                }
                (ed25519_key_id(name, key), VerifyKey::Ed25519(key.to_vec()))
            }
            SIGNATURE_TYPE_COSIGNATURE if cosigner => {
                if key.len() != 32 {
                    return Err(CheckpointError::MalformedVerifierKey(
                        "Ed25519 key is not 32 bytes",
                    ));
                }
                (
                    cosignature_key_id(name, key),
                    VerifyKey::Cosignature(key.to_vec()),
                )
            }
            SIGNATURE_TYPE_ECDSA if !cosigner => (ecdsa_key_id(key), parse_ecdsa_spki(key)?),
            other => return Err(CheckpointError::UnsupportedKeyType(other)),
        };
        if computed != declared {
            return Err(CheckpointError::KeyIdMismatch { declared, computed });
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: computed,
            key,
        })
    }

    /// The key name signature lines must carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-bit key ID signature lines must start with.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Whether this is a witness's cosignature key (type 0x04).
    pub fn is_cosigner(&self) -> bool {
        matches!(self.key, VerifyKey::Cosignature(_))
    }

    fn verify(&self, text: &str, sig: &[u8]) -> bool {
        let msg = text.as_bytes();
        match &self.key {
            VerifyKey::Ed25519(pk) => UnparsedPublicKey::new(&ED25519, pk).verify(msg, sig),
            VerifyKey::Cosignature(pk) => {
                let Some((time, sig)) = sig.split_first_chunk::<8>() else {
                    return false;
                };
                let timestamp = u64::from_be_bytes(*time);
                if timestamp > i64::MAX as u64 {
                    return false;
                }
                UnparsedPublicKey::new(&ED25519, pk)
                    .verify(cosigned_message(timestamp, text).as_bytes(), sig)
            }
            VerifyKey::Ecdsa { curve, point } => {
                UnparsedPublicKey::new(curve.algorithm(), point).verify(msg, sig)
            }
        }
        .is_ok()
    }
}

/// Checks a signed note against one trusted key and returns its verified text.
///
/// Strict framing: size limit, UTF-8 without control characters other than newline, the
/// text separated from the signatures by the last blank line, every signature line well
/// formed. Signatures by other keys (another name or another key ID) are ignored; exactly
/// one signature by the trusted key must be present and it must verify.
pub fn open_note<'a>(note: &'a str, verifier: &NoteVerifier) -> Result<&'a str, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::NoteTooLarge {
            len: note.len(),
            max: MAX_NOTE_BYTES,
        });
    }
    if let Some(pos) = note.find(is_forbidden_control) {
        return Err(CheckpointError::ControlCharacter(pos));
    }
    if !note.ends_with('\n') {
        return Err(CheckpointError::MissingFinalNewline);
    }
    let split = note
        .rfind("\n\n")
        .ok_or(CheckpointError::MissingSeparator)?;
    // `split` indexes an ASCII newline, so both cuts are on character boundaries.
    let (Some(text), Some(sigs)) = (note.get(..split + 1), note.get(split + 2..)) else {
        return Err(CheckpointError::MissingSeparator);
    };
    if sigs.is_empty() {
        return Err(CheckpointError::NoSignatures);
    }
    let lines: Vec<&str> = sigs
        .strip_suffix('\n')
        .unwrap_or(sigs)
        .split('\n')
        .collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(CheckpointError::TooManySignatures(MAX_SIGNATURES));
    }
    let mut ours: Option<Vec<u8>> = None;
    for (i, line) in lines.iter().enumerate() {
        let bad = |reason| CheckpointError::MalformedSignatureLine {
            line: i + 1,
            reason,
        };
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| bad("does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("no space between key name and signature"))?;
        if !valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| bad("signature is not standard base64"))?;
        let Some((id, sig)) = blob.split_first_chunk::<4>() else {
            return Err(bad("signature shorter than a key ID"));
        };
        if sig.is_empty() {
            return Err(bad("empty signature"));
        }
        let trusted = name == verifier.name && u32::from_be_bytes(*id) == verifier.key_id;
        if trusted && ours.replace(sig.to_vec()).is_some() {
            return Err(CheckpointError::DuplicateSignature(verifier.name.clone()));
        }
    }
    let sig = ours.ok_or_else(|| CheckpointError::NoTrustedSignature(verifier.name.clone()))?;
    if !verifier.verify(text, &sig) {
        return Err(CheckpointError::InvalidSignature(verifier.name.clone()));
    }
    Ok(text)
}

/// Verifies a signed checkpoint note against the trusted verifier key string and parses it.
pub fn open_checkpoint(note: &str, verifier_key: &str) -> Result<Checkpoint, CheckpointError> {
    let verifier = NoteVerifier::from_vkey(verifier_key)?;
    let text = open_note(note, &verifier)?;
    Checkpoint::from_body(text)
}

/// The algorithm of a new checkpoint key. ECDSA P-256 is the default (type 0x02, as
/// transparency-dev/witness verifies it); the public witness networks and C2SP
/// tlog-tiles' public logs require Ed25519 (type 0x01).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteKeyAlgorithm {
    /// NIST P-256 with SHA-256, note signature type 0x02.
    #[default]
    EcdsaP256,
    /// Ed25519, note signature type 0x01.
    Ed25519,
}

#[derive(Debug)]
enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// The log's checkpoint signing key: ECDSA P-256 / SHA-256 (note signature type 0x02) or
/// Ed25519 (type 0x01).
#[derive(Debug)]
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
    /// The verifier key's bytes: the type byte, then the SPKI DER or the Ed25519 key.
    vkey_blob: Vec<u8>,
    key_id: u32,
}

impl CheckpointSigner {
    /// Generates a new ECDSA P-256 key; `name` is the key name (the checkpoint origin).
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        Self::generate_with(name, NoteKeyAlgorithm::EcdsaP256)
    }

    /// Generates a new key of `algorithm`.
    pub fn generate_with(name: &str, algorithm: NoteKeyAlgorithm) -> Result<Self, CheckpointError> {
        let failed = |_| CheckpointError::SigningKey("generation failed");
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            NoteKeyAlgorithm::EcdsaP256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(failed)?
            }
            NoteKeyAlgorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?,
        };
        Self::from_pkcs8(name, pkcs8.as_ref())
    }

    /// Loads a P-256 or Ed25519 key from an unencrypted PKCS#8 document.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, CheckpointError> {
        if !valid_key_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        if let Ok(key) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8) {
            let spki = key
                .public_key()
                .as_der()
                .map_err(|_| CheckpointError::SigningKey("public key does not encode"))?
                .as_ref()
                .to_vec();
            return Ok(Self {
                name: name.to_owned(),
                key_id: ecdsa_key_id(&spki),
                vkey_blob: [&[SIGNATURE_TYPE_ECDSA], spki.as_slice()].concat(),
                key: SigningKey::Ecdsa(key),
            });
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| CheckpointError::SigningKey("not a P-256 or Ed25519 PKCS#8 key"))?;
        let public = key.public_key().as_ref().to_vec();
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &public),
            vkey_blob: [&[SIGNATURE_TYPE_ED25519], public.as_slice()].concat(),
            key: SigningKey::Ed25519(key),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> NoteKeyAlgorithm {
        match self.key {
            SigningKey::Ecdsa(_) => NoteKeyAlgorithm::EcdsaP256,
            SigningKey::Ed25519(_) => NoteKeyAlgorithm::Ed25519,
        }
    }

    /// The private key as a PKCS#8 v1 document (for the operator's key store).
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, CheckpointError> {
        let document = match &self.key {
            SigningKey::Ecdsa(key) => key.to_pkcs8v1(),
            SigningKey::Ed25519(key) => key.to_pkcs8v1(),
        };
        Ok(document
            .map_err(|_| CheckpointError::SigningKey("PKCS#8 export failed"))?
            .as_ref()
            .to_vec())
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (`SHA-256(SPKI DER)[:4]` for ECDSA, the signed-note one for Ed25519).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The public verifier key `<name>+<hex key ID>+<base64(type || key)>`.
    pub fn verifier_key(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(&self.vkey_blob)
        )
    }

    /// Signs the checkpoint and returns the complete signed note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let body = checkpoint.body()?;
        Ok(format!("{body}\n{}", self.signature_line(&body)?))
    }

    /// The note signature line (`— <name> <base64(key ID || signature)>\n`) over `text`,
    /// for notes several keys sign.
    pub fn signature_line(&self, text: &str) -> Result<String, CheckpointError> {
        let sig = match &self.key {
            SigningKey::Ecdsa(key) => key
                .sign(&SystemRandom::new(), text.as_bytes())
                .map_err(|_| CheckpointError::SigningKey("signing failed"))?
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(key) => key.sign(text.as_bytes()).as_ref().to_vec(),
        };
        let blob = [self.key_id.to_be_bytes().as_slice(), &sig].concat();
        Ok(format!(
            "{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}
