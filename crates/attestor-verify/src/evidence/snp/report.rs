//! The attestation report as bytes: length, version and canonical form are checked here,
//! field parsing is the `sev` crate's. Nothing here decides trust.

use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use thiserror::Error;

/// Size of every report version the crate parses (SEV-SNP ABI, table "ATTESTATION_REPORT").
pub const REPORT_LEN: usize = 1184;
/// The signature covers bytes [0, 0x2A0).
pub const SIGNED_LEN: usize = 0x2A0;
/// `sig_algo` of ECDSA P-384 with SHA-384, the only algorithm AMD defines.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Report versions whose layout the crate knows exactly (4 and 6+ it maps onto other
/// layouts, which could misread fields, so they are refused).
pub const SUPPORTED_VERSIONS: [u32; 3] = [2, 3, 5];
/// r and s are 72-byte little-endian fields of which P-384 uses the low 48 bytes.
const SCALAR_LEN: usize = 48;
const COMPONENT_LEN: usize = 72;

/// Why bytes are not an attestation report we accept to look at.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The input is this many bytes, not [`REPORT_LEN`].
    #[error("report is {0} bytes; an SEV-SNP attestation report is {REPORT_LEN}")]
    Length(usize),
    /// The report's version is not one of [`SUPPORTED_VERSIONS`].
    #[error("report version {0} is not supported (supported: 2, 3, 5)")]
    Version(u32),
    /// The `sev` crate cannot decode or re-encode the fields; its reason.
    #[error("report fields do not parse: {0}")]
    Malformed(String),
    /// The re-encoded fields differ from the input at this byte offset: the signature
    /// check would not see what the input holds there.
    #[error("report is not canonical: byte {0:#x} differs from the re-encoded fields")]
    NonCanonical(usize),
    /// r or s has non-zero bytes above the 48 a P-384 scalar uses.
    #[error("signature r or s has bytes above the 48 a P-384 scalar uses")]
    SignaturePadding,
    /// A report file that is neither the raw bytes nor hex of them.
    #[error("report file is neither {REPORT_LEN} raw bytes nor hex of them")]
    Encoding,
}

/// A parsed report together with the exact bytes it came from.
#[derive(Debug, Clone)]
pub struct Report {
    raw: Vec<u8>,
    fields: AttestationReport,
}

impl Report {
    /// Parses a report. The re-encoding must equal the input byte for byte: the crate
    /// verifies signatures over its re-encoding, so any byte it would drop or normalise
    /// (reserved TCB bytes, the unsigned tail) must not be let through silently.
    pub fn parse(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() != REPORT_LEN {
            return Err(ReportError::Length(bytes.len()));
        }
        let version = bytes
            .get(..4)
            .and_then(|v| v.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(ReportError::Length(bytes.len()))?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ReportError::Version(version));
        }
        let fields = AttestationReport::from_bytes(bytes)
            .map_err(|e| ReportError::Malformed(e.to_string()))?;
        let encoded = fields
            .to_bytes()
            .map_err(|e| ReportError::Malformed(e.to_string()))?;
        if let Some(i) = encoded.iter().zip(bytes).position(|(a, b)| a != b) {
            return Err(ReportError::NonCanonical(i));
        }
        let sig = &fields.signature;
        let padded = |c: &[u8; COMPONENT_LEN]| {
            c.get(SCALAR_LEN..)
                .is_some_and(|h| h.iter().any(|b| *b != 0))
        };
        if padded(sig.r()) || padded(sig.s()) {
            return Err(ReportError::SignaturePadding);
        }
        Ok(Report {
            raw: bytes.to_vec(),
            fields,
        })
    }

    /// The report's fields, as the `sev` crate decodes them.
    pub fn fields(&self) -> &AttestationReport {
        &self.fields
    }

    /// The exact input bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes the signature covers, [0, [`SIGNED_LEN`]) (SEV-SNP ABI, table
    /// "ATTESTATION_REPORT Structure"): the same the `sev` crate hashes, as the input is
    /// its re-encoding byte for byte.
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..SIGNED_LEN).unwrap_or(&self.raw)
    }

    /// The signature as r ‖ s, each 48 bytes big-endian (what aws-lc's
    /// `ECDSA_P384_SHA384_FIXED` takes). The report stores each as a 72-byte little-endian
    /// field (ABI spec, "ECDSA P-384 with SHA-384" signature format); [`Report::parse`]
    /// refused any non-zero byte above the low 48, so dropping them loses nothing.
    pub fn signature_p384_fixed(&self) -> [u8; 2 * SCALAR_LEN] {
        let sig = &self.fields.signature;
        let mut fixed = [0; 2 * SCALAR_LEN];
        for (out, component) in fixed.chunks_exact_mut(SCALAR_LEN).zip([sig.r(), sig.s()]) {
            for (o, b) in out.iter_mut().zip(component.iter().take(SCALAR_LEN).rev()) {
                *o = *b;
            }
        }
        fixed
    }
}

/// Accepts a report file as raw bytes or as hex (as `snpguest` and the AMD tools write
/// it; whitespace ignored).
pub fn decode_report_file(bytes: &[u8]) -> Result<Vec<u8>, ReportError> {
    if bytes.len() == REPORT_LEN {
        return Ok(bytes.to_vec());
    }
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match hex::decode(text) {
        Ok(raw) if raw.len() == REPORT_LEN => Ok(raw),
        Ok(raw) => Err(ReportError::Length(raw.len())),
        Err(_) => Err(ReportError::Encoding),
    }
}
