//! TPM 2.0 wire formats (Library spec Part 2) that a verifier parses without the TPM
//! library: TPMS_ATTEST, TPMT_SIGNATURE (ECDSA), TPMT_PUBLIC (ECC), PCR selections, and the
//! PCR file format of tpm2-tools.
//!
//! Every parser is a `fn(&[u8]) -> Result<_, WireError>` over hostile input: it never
//! panics, bounds every size field by the spec's maximum, and rejects trailing bytes. The
//! parsers decode only; trust decisions (magic, type, attributes, nonces) belong to the
//! verifier.

use super::HashAlg;

/// TPMS_ATTEST.magic of a structure the TPM generated itself (TPM_GENERATED_VALUE).
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPMS_ATTEST.type of a quote (TPM_ST_ATTEST_QUOTE).
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// TPMS_ATTEST.type of a certification (TPM_ST_ATTEST_CERTIFY).
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// TPM_ALG_ECDSA.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_ECDAA, the one ECC scheme whose details carry an extra `count` field.
pub const TPM_ALG_ECDAA: u16 = 0x001A;
/// TPM_ALG_ECC, the only TPMT_PUBLIC type [`parse_public`] accepts.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// TPM_ALG_NULL, which marks an absent algorithm and its absent details.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// TPM_ECC_NIST_P256 curve identifier.
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
/// TPM_ECC_NIST_P384 curve identifier.
pub const TPM_ECC_NIST_P384: u16 = 0x0004;
/// TPM_ECC_NIST_P521 curve identifier.
pub const TPM_ECC_NIST_P521: u16 = 0x0005;

/// Largest TPMU_HA (SHA-512): bounds TPM2B_DIGEST and TPM2B_DATA.
const MAX_DIGEST: usize = 64;
/// Largest TPMU_NAME: a TPMT_HA (alg id + SHA-512 digest).
const MAX_NAME: usize = 2 + MAX_DIGEST;
/// MAX_ECC_KEY_BYTES as the TSS defines it.
const MAX_ECC_PARAMETER: usize = 128;
/// TPM2_NUM_PCR_BANKS in the TSS headers.
const MAX_PCR_BANKS: usize = 16;
/// TPM2_PCR_SELECT_MAX in the TSS headers (32 PCRs).
const MAX_PCR_SELECT: usize = 4;
/// sizeofSelect that PC Client TPMs (24 PCRs) and tpm2-tools use.
const PCR_SELECT_MIN: usize = 3;

/// Why a TPM wire structure could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside a field.
    #[error("truncated {what}: need {need} bytes at offset {offset}, only {have} left")]
    Truncated {
        /// The field being read (by its spec name where it has one, e.g.
        /// `TPMS_ATTEST.extraData`).
        what: &'static str,
        /// Its byte offset in the input.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// Bytes remained after a complete structure.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// The structure just read.
        what: &'static str,
        /// Bytes after it.
        count: usize,
    },
    /// A size or count field exceeds the maximum the spec allows.
    #[error("{what} is {size}, more than the maximum {max}")]
    TooLarge {
        /// The size or count field.
        what: &'static str,
        /// Its value.
        size: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// TPMS_ATTEST.type is neither a quote nor a certification.
    #[error("unsupported attestation type {0:#06x}")]
    UnsupportedAttestType(u16),
    /// A hash algorithm that attestor does not support (SHA-1 included, on purpose).
    #[error("unsupported hash algorithm {alg:#06x} in {what}")]
    UnsupportedHashAlg {
        /// The field holding it.
        what: &'static str,
        /// Its TPM_ALG_ID.
        alg: u16,
    },
    /// A PCR selection names the same bank twice, which makes its digest ambiguous.
    #[error("PCR bank {0:?} selected more than once")]
    DuplicateBank(HashAlg),
    /// TPMT_SIGNATURE with an algorithm other than ECDSA (or, where RSA keys are
    /// accepted, RSASSA and RSAPSS).
    #[error("unsupported signature algorithm {0:#06x}")]
    UnsupportedSignatureAlg(u16),
    /// TPMT_PUBLIC of a type other than ECC.
    #[error("unsupported public key type {0:#06x} (only ECC is accepted)")]
    UnsupportedPublicType(u16),
    /// An ECC curve without a known field size.
    #[error("unsupported ECC curve {0:#06x}")]
    UnsupportedCurve(u16),
    /// An ECC value longer than the field it belongs to.
    #[error("ECC value of {len} significant bytes does not fit a {field_len}-byte field")]
    EccValueTooLong {
        /// The value's significant (non-leading-zero) bytes.
        len: usize,
        /// The curve's field size in bytes.
        field_len: usize,
    },
    /// A PCR index that the requested encoding cannot represent.
    #[error("PCR index {0} cannot be encoded (at most {max})", max = MAX_PCR_SELECT * 8 - 1)]
    PcrIndexOutOfRange(u8),
    /// The number of PCR values does not match the PCRs selected.
    #[error("{values} PCR values for {selected} selected PCRs")]
    PcrCountMismatch {
        /// PCRs the selection names, over all banks.
        selected: usize,
        /// Values given.
        values: usize,
    },
    /// A structurally invalid tpm2-tools PCR file.
    #[error("tpm2-tools PCR file: {0}")]
    PcrFile(&'static str),
    /// An ECDSA signature component that cannot be DER-encoded.
    #[error("ECDSA signature cannot be DER-encoded: {0}")]
    Der(String),
}

/// A bounds-checked big-endian cursor over TPM wire bytes (also used by `credential`).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let out = rest.get(..n).ok_or(WireError::Truncated {
            what,
            offset: self.pos,
            need: n,
            have: rest.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: u16 size then that many bytes, with size bounded by `max`.
    pub(crate) fn tpm2b(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(WireError::TooLarge { what, size, max });
        }
        Ok(self.take(size, what)?.to_vec())
    }

    pub(crate) fn hash_alg(&mut self, what: &'static str) -> Result<HashAlg, WireError> {
        let alg = self.u16(what)?;
        HashAlg::from_tpm_alg_id(alg).ok_or(WireError::UnsupportedHashAlg { what, alg })
    }

    /// A hash algorithm that is one of [`HashAlg::PCR_BANKS`]: a SHA-512 bank is as
    /// unsupported as a SHA-1 one.
    pub(crate) fn pcr_bank(&mut self, what: &'static str) -> Result<HashAlg, WireError> {
        let alg = self.u16(what)?;
        HashAlg::from_tpm_alg_id(alg)
            .filter(|h| h.is_pcr_bank())
            .ok_or(WireError::UnsupportedHashAlg { what, alg })
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), WireError> {
        let count = self.buf.len().saturating_sub(self.pos);
        if count == 0 {
            Ok(())
        } else {
            Err(WireError::TrailingBytes { what, count })
        }
    }
}

/// One bank of a TPML_PCR_SELECTION: the PCR indices selected in it, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    /// The PCR bank.
    pub bank: HashAlg,
    /// Selected PCR indices, ascending and without duplicates.
    pub pcrs: Vec<u8>,
}

/// TPMS_CLOCK_INFO: the TPM's clock and reset counters at signing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was last cleared.
    pub clock: u64,
    /// TPM resets (reboots) since the last clear.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernate) since the last reset.
    pub restart_count: u32,
    /// TPMI_YES_NO: 1 if `clock` has not been rolled back since it was last reported.
    pub safe: u8,
}

/// The type-specific part of a TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// TPMS_QUOTE_INFO.
    Quote {
        /// The PCRs the TPM actually covered, in signed order.
        pcr_select: Vec<PcrSelection>,
        /// Hash (with the signing scheme's hash) of the selected PCR values.
        pcr_digest: Vec<u8>,
    },
    /// TPMS_CERTIFY_INFO.
    Certify {
        /// Name of the certified object: nameAlg || H(TPMT_PUBLIC).
        name: Vec<u8>,
        /// Qualified name of the certified object.
        qualified_name: Vec<u8>,
    },
}

/// A decoded TPMS_ATTEST. Magic and type are exposed, not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Should be [`TPM_GENERATED_VALUE`]; the verifier checks.
    pub magic: u32,
    /// TPMI_ST_ATTEST; consistent with `attested` by construction.
    pub attest_type: u16,
    /// Qualified name of the signing key (TPM2B_NAME contents).
    pub qualified_signer: Vec<u8>,
    /// Caller-supplied qualifying data (the nonce), TPM2B_DATA contents.
    pub extra_data: Vec<u8>,
    /// Clock and reset counters.
    pub clock_info: ClockInfo,
    /// Vendor-specific firmware version.
    pub firmware_version: u64,
    /// Quote or certification details.
    pub attested: Attested,
}

/// Parses a marshalled TPMS_ATTEST (no TPM2B size prefix), as the TPM signs it.
pub fn parse_attest(buf: &[u8]) -> Result<Attest, WireError> {
    let mut r = Reader::new(buf);
    let magic = r.u32("TPMS_ATTEST.magic")?;
    let attest_type = r.u16("TPMS_ATTEST.type")?;
    let qualified_signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner", MAX_NAME)?;
    let extra_data = r.tpm2b("TPMS_ATTEST.extraData", MAX_DIGEST)?;
    let clock_info = ClockInfo {
        clock: r.u64("TPMS_CLOCK_INFO.clock")?,
        reset_count: r.u32("TPMS_CLOCK_INFO.resetCount")?,
        restart_count: r.u32("TPMS_CLOCK_INFO.restartCount")?,
        safe: r.u8("TPMS_CLOCK_INFO.safe")?,
    };
    let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
    let attested = match attest_type {
        TPM_ST_ATTEST_QUOTE => Attested::Quote {
            pcr_select: read_pcr_selection(&mut r)?,
            pcr_digest: r.tpm2b("TPMS_QUOTE_INFO.pcrDigest", MAX_DIGEST)?,
        },
        TPM_ST_ATTEST_CERTIFY => Attested::Certify {
            name: r.tpm2b("TPMS_CERTIFY_INFO.name", MAX_NAME)?,
            qualified_name: r.tpm2b("TPMS_CERTIFY_INFO.qualifiedName", MAX_NAME)?,
        },
        other => return Err(WireError::UnsupportedAttestType(other)),
    };
    r.finish("TPMS_ATTEST")?;
    Ok(Attest {
        magic,
        attest_type,
        qualified_signer,
        extra_data,
        clock_info,
        firmware_version,
        attested,
    })
}

/// Decodes a big-endian TPML_PCR_SELECTION.
fn read_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, WireError> {
    let count = r.u32("TPML_PCR_SELECTION.count")?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > MAX_PCR_BANKS {
        return Err(WireError::TooLarge {
            what: "TPML_PCR_SELECTION.count",
            size: count,
            max: MAX_PCR_BANKS,
        });
    }
    let mut out: Vec<PcrSelection> = Vec::with_capacity(count);
    for _ in 0..count {
        let bank = r.pcr_bank("TPMS_PCR_SELECTION.hash")?;
        let size = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        if size > MAX_PCR_SELECT {
            return Err(WireError::TooLarge {
                what: "TPMS_PCR_SELECTION.sizeofSelect",
                size,
                max: MAX_PCR_SELECT,
            });
        }
        let bitmap = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")?;
        if out.iter().any(|s| s.bank == bank) {
            return Err(WireError::DuplicateBank(bank));
        }
        out.push(PcrSelection {
            bank,
            pcrs: bitmap_to_pcrs(bitmap),
        });
    }
    Ok(out)
}

/// PCR n is bit (n % 8) of byte (n / 8).
fn bitmap_to_pcrs(bitmap: &[u8]) -> Vec<u8> {
    let mut pcrs = Vec::new();
    for (byte_index, byte) in (0u8..).zip(bitmap) {
        for bit in 0..8u8 {
            if byte & (1 << bit) != 0 {
                pcrs.push(byte_index * 8 + bit);
            }
        }
    }
    pcrs
}

/// pcrSelect bitmap of `size` bytes; `None` if an index does not fit.
fn pcrs_to_bitmap(pcrs: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut bitmap = vec![0u8; size];
    for &pcr in pcrs {
        *bitmap.get_mut(usize::from(pcr / 8))? |= 1 << (pcr % 8);
    }
    Some(bitmap)
}

/// Parses a marshalled TPML_PCR_SELECTION on its own (e.g. from a policy or a command).
pub fn parse_pcr_selection(buf: &[u8]) -> Result<Vec<PcrSelection>, WireError> {
    let mut r = Reader::new(buf);
    let out = read_pcr_selection(&mut r)?;
    r.finish("TPML_PCR_SELECTION")?;
    Ok(out)
}

/// Marshals a TPML_PCR_SELECTION as tpm2-tools and the TPM build it: sizeofSelect 3, or
/// larger only if an index is 24 or above (so PC Client selections hash identically).
pub fn marshal_pcr_selection(selection: &[PcrSelection]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + selection.len() * 6);
    let count = u32::try_from(selection.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for s in selection {
        let needed = s.pcrs.iter().max().map_or(0, |&m| usize::from(m) / 8 + 1);
        let size = needed.max(PCR_SELECT_MIN);
        out.extend_from_slice(&s.bank.tpm_alg_id().to_be_bytes());
        // size <= 32 because PCR indices are u8.
        out.push(u8::try_from(size).unwrap_or(u8::MAX));
        out.extend(pcrs_to_bitmap(&s.pcrs, size).unwrap_or_default());
    }
    out
}

/// Number of PCR values a selection covers (one per selected PCR per bank).
pub fn selected_pcr_count(selection: &[PcrSelection]) -> usize {
    selection.iter().map(|s| s.pcrs.len()).sum()
}

/// An ECDSA signature from a TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// Hash algorithm the TPM signed with.
    pub hash: HashAlg,
    /// r, big-endian as the TPM returned it (possibly shorter than the field).
    pub r: Vec<u8>,
    /// s, big-endian as the TPM returned it (possibly shorter than the field).
    pub s: Vec<u8>,
}

/// Left-pads (or strips leading zeros from) a big-endian integer to exactly `field_len`.
fn fixed_width(value: &[u8], field_len: usize) -> Result<Vec<u8>, WireError> {
    let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let significant = value.get(first..).unwrap_or_default();
    if significant.len() > field_len {
        return Err(WireError::EccValueTooLong {
            len: significant.len(),
            field_len,
        });
    }
    let mut out = vec![0u8; field_len - significant.len()];
    out.extend_from_slice(significant);
    Ok(out)
}

impl EcdsaSignature {
    /// r || s, each left-padded to `field_len` (48 for P-384), as aws-lc-rs `*_FIXED` wants.
    pub fn to_fixed(&self, field_len: usize) -> Result<Vec<u8>, WireError> {
        let mut out = fixed_width(&self.r, field_len)?;
        out.extend(fixed_width(&self.s, field_len)?);
        Ok(out)
    }

    /// The X9.62 DER form `SEQUENCE { r INTEGER, s INTEGER }` (aws-lc-rs `*_ASN1`, OpenSSL).
    pub fn to_der(&self) -> Result<Vec<u8>, WireError> {
        use x509_cert::der::asn1::UintRef;
        use x509_cert::der::{Encode, Header, Tag};
        let der_err = |e: x509_cert::der::Error| WireError::Der(e.to_string());
        let r = UintRef::new(&self.r).map_err(der_err)?;
        let s = UintRef::new(&self.s).map_err(der_err)?;
        let len = (r.encoded_len().map_err(der_err)? + s.encoded_len().map_err(der_err)?)
            .map_err(der_err)?;
        let mut out = Vec::new();
        Header::new(Tag::Sequence, len)
            .map_err(der_err)?
            .encode_to_vec(&mut out)
            .map_err(der_err)?;
        r.encode_to_vec(&mut out).map_err(der_err)?;
        s.encode_to_vec(&mut out).map_err(der_err)?;
        Ok(out)
    }
}

/// Parses a marshalled TPMT_SIGNATURE; only TPM_ALG_ECDSA with SHA-256/384 is accepted.
pub fn parse_signature(buf: &[u8]) -> Result<EcdsaSignature, WireError> {
    let mut r = Reader::new(buf);
    let sig_alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
    if sig_alg != TPM_ALG_ECDSA {
        return Err(WireError::UnsupportedSignatureAlg(sig_alg));
    }
    let hash = r.hash_alg("TPMS_SIGNATURE_ECDSA.hash")?;
    let sig_r = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureR", MAX_ECC_PARAMETER)?;
    let sig_s = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureS", MAX_ECC_PARAMETER)?;
    r.finish("TPMT_SIGNATURE")?;
    Ok(EcdsaSignature {
        hash,
        r: sig_r,
        s: sig_s,
    })
}

/// TPMA_OBJECT bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    const FIXED_TPM: u32 = 1 << 1;
    const ST_CLEAR: u32 = 1 << 2;
    const FIXED_PARENT: u32 = 1 << 4;
    const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    const USER_WITH_AUTH: u32 = 1 << 6;
    const ADMIN_WITH_POLICY: u32 = 1 << 7;
    const NO_DA: u32 = 1 << 10;
    const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    const RESTRICTED: u32 = 1 << 16;
    const DECRYPT: u32 = 1 << 17;
    const SIGN: u32 = 1 << 18;

    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// The key cannot leave this TPM.
    pub fn fixed_tpm(self) -> bool {
        self.has(Self::FIXED_TPM)
    }
    /// Transient copies are lost on TPM Restart.
    pub fn st_clear(self) -> bool {
        self.has(Self::ST_CLEAR)
    }
    /// The key cannot be re-parented (duplicated).
    pub fn fixed_parent(self) -> bool {
        self.has(Self::FIXED_PARENT)
    }
    /// The TPM generated the sensitive part itself.
    pub fn sensitive_data_origin(self) -> bool {
        self.has(Self::SENSITIVE_DATA_ORIGIN)
    }
    /// The user role may be authorized with a password/HMAC, bypassing authPolicy.
    pub fn user_with_auth(self) -> bool {
        self.has(Self::USER_WITH_AUTH)
    }
    /// The admin role requires authPolicy.
    pub fn admin_with_policy(self) -> bool {
        self.has(Self::ADMIN_WITH_POLICY)
    }
    /// Exempt from dictionary-attack lockout.
    pub fn no_da(self) -> bool {
        self.has(Self::NO_DA)
    }
    /// Duplication must wrap with an inner symmetric key.
    pub fn encrypted_duplication(self) -> bool {
        self.has(Self::ENCRYPTED_DUPLICATION)
    }
    /// Signs only TPM-generated data (or decrypts only for the TPM).
    pub fn restricted(self) -> bool {
        self.has(Self::RESTRICTED)
    }
    /// A decryption key.
    pub fn decrypt(self) -> bool {
        self.has(Self::DECRYPT)
    }
    /// A signing key.
    pub fn sign(self) -> bool {
        self.has(Self::SIGN)
    }
}

/// TPMT_SYM_DEF_OBJECT when not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Symmetric algorithm (e.g. TPM_ALG_AES 0x0006).
    pub alg: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Block mode (e.g. TPM_ALG_CFB 0x0043).
    pub mode: u16,
}

/// TPMT_ECC_SCHEME when not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EccScheme {
    /// Scheme algorithm (e.g. [`TPM_ALG_ECDSA`]).
    pub scheme: u16,
    /// Raw hash algorithm id (kept raw: the verifier decides which are acceptable).
    pub hash: u16,
    /// ECDAA commit count, present only for [`TPM_ALG_ECDAA`].
    pub count: Option<u16>,
}

impl EccScheme {
    /// The scheme hash if attestor supports it.
    pub fn hash_alg(&self) -> Option<HashAlg> {
        HashAlg::from_tpm_alg_id(self.hash)
    }
}

/// TPMT_KDF_SCHEME when not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfScheme {
    /// KDF algorithm.
    pub scheme: u16,
    /// Raw hash algorithm id.
    pub hash: u16,
}

/// A decoded TPMT_PUBLIC of type ECC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    /// Algorithm used to compute the object's Name.
    pub name_alg: HashAlg,
    /// TPMA_OBJECT.
    pub object_attributes: ObjectAttributes,
    /// Policy digest that authorizes use (empty if none).
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm for a storage key; `None` for TPM_ALG_NULL.
    pub symmetric: Option<SymDef>,
    /// Signing/key-exchange scheme; `None` for TPM_ALG_NULL.
    pub scheme: Option<EccScheme>,
    /// TPM_ECC_CURVE (e.g. [`TPM_ECC_NIST_P384`]).
    pub curve: u16,
    /// KDF; `None` for TPM_ALG_NULL.
    pub kdf: Option<KdfScheme>,
    /// Public point x, big-endian.
    pub x: Vec<u8>,
    /// Public point y, big-endian.
    pub y: Vec<u8>,
}

/// Field size in bytes of a TPM curve identifier.
pub fn curve_field_len(curve: u16) -> Option<usize> {
    match curve {
        TPM_ECC_NIST_P256 => Some(32),
        TPM_ECC_NIST_P384 => Some(48),
        TPM_ECC_NIST_P521 => Some(66),
        _ => None,
    }
}

impl EccPublic {
    /// The SEC1 uncompressed point 0x04 || x || y, coordinates left-padded to the field size.
    pub fn sec1_uncompressed(&self) -> Result<Vec<u8>, WireError> {
        let field_len =
            curve_field_len(self.curve).ok_or(WireError::UnsupportedCurve(self.curve))?;
        let mut out = Vec::with_capacity(1 + 2 * field_len);
        out.push(0x04);
        out.extend(fixed_width(&self.x, field_len)?);
        out.extend(fixed_width(&self.y, field_len)?);
        Ok(out)
    }
}

/// The fields every TPMT_PUBLIC starts with, up to its scheme.
pub(crate) struct PublicHeader {
    pub(crate) name_alg: HashAlg,
    pub(crate) object_attributes: ObjectAttributes,
    pub(crate) auth_policy: Vec<u8>,
    pub(crate) symmetric: Option<SymDef>,
}

/// Reads a TPMT_PUBLIC's type, which must be `kind`, and the fields after it up to the
/// scheme.
pub(crate) fn read_public_header(r: &mut Reader<'_>, kind: u16) -> Result<PublicHeader, WireError> {
    let found = r.u16("TPMT_PUBLIC.type")?;
    if found != kind {
        return Err(WireError::UnsupportedPublicType(found));
    }
    let name_alg = r.hash_alg("TPMT_PUBLIC.nameAlg")?;
    let object_attributes = ObjectAttributes(r.u32("TPMT_PUBLIC.objectAttributes")?);
    let auth_policy = r.tpm2b("TPMT_PUBLIC.authPolicy", MAX_DIGEST)?;
    let sym_alg = r.u16("TPMT_SYM_DEF_OBJECT.algorithm")?;
    let symmetric = if sym_alg == TPM_ALG_NULL {
        None
    } else {
        Some(SymDef {
            alg: sym_alg,
            key_bits: r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?,
            mode: r.u16("TPMT_SYM_DEF_OBJECT.mode")?,
        })
    };
    Ok(PublicHeader {
        name_alg,
        object_attributes,
        auth_policy,
        symmetric,
    })
}

/// Parses a marshalled TPMT_PUBLIC (no TPM2B size prefix) of type ECC.
pub fn parse_public(buf: &[u8]) -> Result<EccPublic, WireError> {
    let mut r = Reader::new(buf);
    let PublicHeader {
        name_alg,
        object_attributes,
        auth_policy,
        symmetric,
    } = read_public_header(&mut r, TPM_ALG_ECC)?;
    let scheme_alg = r.u16("TPMT_ECC_SCHEME.scheme")?;
    let scheme = if scheme_alg == TPM_ALG_NULL {
        None
    } else {
        let hash = r.u16("TPMT_ECC_SCHEME.details.hashAlg")?;
        let count = if scheme_alg == TPM_ALG_ECDAA {
            Some(r.u16("TPMS_SCHEME_ECDAA.count")?)
        } else {
            None
        };
        Some(EccScheme {
            scheme: scheme_alg,
            hash,
            count,
        })
    };
    let curve = r.u16("TPMS_ECC_PARMS.curveID")?;
    let kdf_alg = r.u16("TPMT_KDF_SCHEME.scheme")?;
    let kdf = if kdf_alg == TPM_ALG_NULL {
        None
    } else {
        Some(KdfScheme {
            scheme: kdf_alg,
            hash: r.u16("TPMT_KDF_SCHEME.details.hashAlg")?,
        })
    };
    let x = r.tpm2b("TPMS_ECC_POINT.x", MAX_ECC_PARAMETER)?;
    let y = r.tpm2b("TPMS_ECC_POINT.y", MAX_ECC_PARAMETER)?;
    r.finish("TPMT_PUBLIC")?;
    Ok(EccPublic {
        name_alg,
        object_attributes,
        auth_policy,
        symmetric,
        scheme,
        curve,
        kdf,
        x,
        y,
    })
}

/// Returns the contents of a TPM2B (e.g. TPM2B_PUBLIC as tpm2-tools writes it), requiring
/// the size prefix to cover exactly the rest of the input.
pub fn strip_tpm2b(buf: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(buf);
    let size = usize::from(r.u16("TPM2B.size")?);
    let body = r.take(size, "TPM2B.buffer")?;
    r.finish("TPM2B")?;
    Ok(body)
}

/// The TPM Name of an object: nameAlg (u16 BE) || H_nameAlg(TPMT_PUBLIC).
pub fn object_name(tpmt_public: &[u8], name_alg: HashAlg) -> Vec<u8> {
    let mut out = name_alg.tpm_alg_id().to_be_bytes().to_vec();
    out.extend(name_alg.digest(tpmt_public));
    out
}

/// TPMS_QUOTE_INFO.pcrDigest: H(PCR values concatenated in selection order).
pub fn quote_pcr_digest(hash: HashAlg, values: &[&[u8]]) -> Vec<u8> {
    hash.digest_parts(values)
}

// The tpm2-tools "serialized" PCR file (lib/pcr.c, pcr_fwrite_serialized) is the raw C
// structs, little-endian on the hosts it runs on:
//   TPML_PCR_SELECTION { u32 count; TPMS_PCR_SELECTION[16] }   (each: u16 hash, u8
//       sizeofSelect, u8 pcrSelect[4], 1 padding byte = 8 bytes)     -> 132 bytes
//   u32 number of TPML_DIGEST that follow
//   TPML_DIGEST { u32 count; TPM2B_DIGEST[8] } (each: u16 size, u8 buffer[64]) -> 532 bytes
// one TPML_DIGEST per TPM2_PCR_Read, which returns at most 8 digests.
const TT_SEL_ENTRY: usize = 8;
const TT_SEL_LEN: usize = 4 + MAX_PCR_BANKS * TT_SEL_ENTRY;
const TT_DIGESTS_PER_LIST: usize = 8;
const TT_DIGEST_ENTRY: usize = 2 + MAX_DIGEST;
const TT_LIST_LEN: usize = 4 + TT_DIGESTS_PER_LIST * TT_DIGEST_ENTRY;
/// Upper bound on TPML_DIGESTs in a file (tpm2_pcrs.pcr_values has 16 entries).
const TT_MAX_LISTS: usize = 16;

/// Builds the PCR file `tpm2_quote -o` writes and `tpm2_checkquote -f` reads, with values
/// in selection order and grouped 8 per TPML_DIGEST as a TPM's PCR_Read returns them.
pub fn tpm2_tools_pcr_file(
    selection: &[PcrSelection],
    values: &[Vec<u8>],
) -> Result<Vec<u8>, WireError> {
    if selection.len() > MAX_PCR_BANKS {
        return Err(WireError::TooLarge {
            what: "PCR banks in a tpm2-tools PCR file",
            size: selection.len(),
            max: MAX_PCR_BANKS,
        });
    }
    let selected = selected_pcr_count(selection);
    if selected != values.len() {
        return Err(WireError::PcrCountMismatch {
            selected,
            values: values.len(),
        });
    }
    let lists = values.len().div_ceil(TT_DIGESTS_PER_LIST);
    if lists > TT_MAX_LISTS {
        return Err(WireError::TooLarge {
            what: "PCR value lists in a tpm2-tools PCR file",
            size: lists,
            max: TT_MAX_LISTS,
        });
    }
    let mut out = Vec::with_capacity(TT_SEL_LEN + 4 + lists * TT_LIST_LEN);
    out.extend_from_slice(&(selection.len() as u32).to_le_bytes());
    for i in 0..MAX_PCR_BANKS {
        match selection.get(i) {
            Some(s) => {
                let bitmap = pcrs_to_bitmap(&s.pcrs, MAX_PCR_SELECT).ok_or_else(|| {
                    let bad = s.pcrs.iter().copied().max().unwrap_or_default();
                    WireError::PcrIndexOutOfRange(bad)
                })?;
                let needed = s.pcrs.iter().max().map_or(0, |&m| usize::from(m) / 8 + 1);
                out.extend_from_slice(&s.bank.tpm_alg_id().to_le_bytes());
                out.push(needed.max(PCR_SELECT_MIN) as u8);
                out.extend(bitmap);
                out.push(0);
            }
            None => out.extend_from_slice(&[0u8; TT_SEL_ENTRY]),
        }
    }
    out.extend_from_slice(&(lists as u32).to_le_bytes());
    for chunk in values.chunks(TT_DIGESTS_PER_LIST) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for i in 0..TT_DIGESTS_PER_LIST {
            let value: &[u8] = chunk.get(i).map_or(&[], |v| v.as_slice());
            if value.len() > MAX_DIGEST {
                return Err(WireError::TooLarge {
                    what: "PCR value",
                    size: value.len(),
                    max: MAX_DIGEST,
                });
            }
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value);
            out.resize(out.len() + MAX_DIGEST - value.len(), 0);
        }
    }
    Ok(out)
}

/// Parses a tpm2-tools PCR file into its selection and the PCR values in selection order.
pub fn parse_tpm2_tools_pcr_file(
    buf: &[u8],
) -> Result<(Vec<PcrSelection>, Vec<Vec<u8>>), WireError> {
    let mut r = Reader::new(buf);
    let bank_count = u32::from_le_bytes(r.array("PCR file selection count")?);
    let bank_count = usize::try_from(bank_count).unwrap_or(usize::MAX);
    if bank_count > MAX_PCR_BANKS {
        return Err(WireError::TooLarge {
            what: "PCR file selection count",
            size: bank_count,
            max: MAX_PCR_BANKS,
        });
    }
    let mut selection: Vec<PcrSelection> = Vec::with_capacity(bank_count);
    for i in 0..MAX_PCR_BANKS {
        let [a0, a1, size, bitmap_and_pad @ ..]: [u8; TT_SEL_ENTRY] =
            r.array("PCR file selection entry")?;
        if i >= bank_count {
            continue;
        }
        let alg = u16::from_le_bytes([a0, a1]);
        let bank = HashAlg::from_tpm_alg_id(alg)
            .filter(|h| h.is_pcr_bank())
            .ok_or(WireError::UnsupportedHashAlg {
                what: "PCR file selection",
                alg,
            })?;
        let bitmap = bitmap_and_pad
            .get(..usize::from(size))
            .filter(|b| b.len() <= MAX_PCR_SELECT)
            .ok_or(WireError::PcrFile("sizeofSelect larger than 4"))?;
        if selection.iter().any(|s| s.bank == bank) {
            return Err(WireError::DuplicateBank(bank));
        }
        selection.push(PcrSelection {
            bank,
            pcrs: bitmap_to_pcrs(bitmap),
        });
    }
    let lists = u32::from_le_bytes(r.array("PCR file value list count")?);
    let lists = usize::try_from(lists).unwrap_or(usize::MAX);
    if lists > TT_MAX_LISTS {
        return Err(WireError::TooLarge {
            what: "PCR file value list count",
            size: lists,
            max: TT_MAX_LISTS,
        });
    }
    let mut values = Vec::new();
    for _ in 0..lists {
        let count = u32::from_le_bytes(r.array("PCR file TPML_DIGEST.count")?);
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > TT_DIGESTS_PER_LIST {
            return Err(WireError::TooLarge {
                what: "PCR file TPML_DIGEST.count",
                size: count,
                max: TT_DIGESTS_PER_LIST,
            });
        }
        for i in 0..TT_DIGESTS_PER_LIST {
            let [s0, s1, buffer @ ..]: [u8; TT_DIGEST_ENTRY] = r.array("PCR file TPM2B_DIGEST")?;
            if i >= count {
                continue;
            }
            let size = usize::from(u16::from_le_bytes([s0, s1]));
            let value = buffer.get(..size).ok_or(WireError::TooLarge {
                what: "PCR file TPM2B_DIGEST.size",
                size,
                max: MAX_DIGEST,
            })?;
            values.push(value.to_vec());
        }
    }
    r.finish("tpm2-tools PCR file")?;
    let selected = selected_pcr_count(&selection);
    if selected != values.len() {
        return Err(WireError::PcrCountMismatch {
            selected,
            values: values.len(),
        });
    }
    Ok((selection, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_bitmap_round_trips_and_orders() {
        let sel = vec![
            PcrSelection {
                bank: HashAlg::Sha384,
                pcrs: vec![0, 1, 2, 13],
            },
            PcrSelection {
                bank: HashAlg::Sha256,
                pcrs: vec![23],
            },
        ];
        let wire = marshal_pcr_selection(&sel);
        assert_eq!(
            wire,
            [0, 0, 0, 2, 0, 0x0c, 3, 0x07, 0x20, 0, 0, 0x0b, 3, 0, 0, 0x80]
        );
        assert_eq!(parse_pcr_selection(&wire).unwrap(), sel);
        // Unordered input still yields ascending indices after a round trip.
        let unordered = [PcrSelection {
            bank: HashAlg::Sha256,
            pcrs: vec![13, 0],
        }];
        let back = parse_pcr_selection(&marshal_pcr_selection(&unordered)).unwrap();
        assert_eq!(back[0].pcrs, vec![0, 13]);
    }

    #[test]
    fn pcr_selection_rejects_sha1_sha512_duplicates_and_oversize() {
        let sha1 = [0, 0, 0, 1, 0, 0x04, 3, 1, 0, 0];
        assert!(matches!(
            parse_pcr_selection(&sha1),
            Err(WireError::UnsupportedHashAlg { alg: 4, .. })
        ));
        // SHA-512 is a hash attestor knows (EK names), not a bank it quotes.
        let sha512 = [0, 0, 0, 1, 0, 0x0d, 3, 1, 0, 0];
        assert!(matches!(
            parse_pcr_selection(&sha512),
            Err(WireError::UnsupportedHashAlg { alg: 0x0d, .. })
        ));
        let dup = [0, 0, 0, 2, 0, 0x0b, 3, 1, 0, 0, 0, 0x0b, 3, 2, 0, 0];
        assert_eq!(
            parse_pcr_selection(&dup),
            Err(WireError::DuplicateBank(HashAlg::Sha256))
        );
        let big = [0, 0, 0, 1, 0, 0x0b, 5, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_pcr_selection(&big),
            Err(WireError::TooLarge { size: 5, .. })
        ));
        let many = [0, 0, 0, 17];
        assert!(matches!(
            parse_pcr_selection(&many),
            Err(WireError::TooLarge { size: 17, .. })
        ));
    }

    #[test]
    fn fixed_width_pads_and_strips() {
        let sig = EcdsaSignature {
            hash: HashAlg::Sha384,
            r: vec![0, 0, 1],
            s: vec![2; 3],
        };
        assert_eq!(sig.to_fixed(4).unwrap(), [0, 0, 0, 1, 0, 2, 2, 2]);
        assert_eq!(
            sig.to_fixed(2),
            Err(WireError::EccValueTooLong {
                len: 3,
                field_len: 2
            })
        );
        // INTEGER 1 and INTEGER 0x020202 in a SEQUENCE.
        assert_eq!(
            sig.to_der().unwrap(),
            [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 2, 2, 2]
        );
    }

    #[test]
    fn attest_rejects_unknown_type_and_trailing_bytes() {
        let mut buf = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        buf.extend(0x8014u16.to_be_bytes());
        buf.extend([0, 0, 0, 0]);
        buf.extend([0; 17 + 8]);
        assert_eq!(
            parse_attest(&buf),
            Err(WireError::UnsupportedAttestType(0x8014))
        );
        let n = buf.len();
        buf[4..6].copy_from_slice(&TPM_ST_ATTEST_CERTIFY.to_be_bytes());
        buf.extend([0, 0, 0, 0]);
        let ok = parse_attest(&buf).unwrap();
        assert_eq!(
            ok.attested,
            Attested::Certify {
                name: vec![],
                qualified_name: vec![]
            }
        );
        buf.push(9);
        assert_eq!(
            parse_attest(&buf),
            Err(WireError::TrailingBytes {
                what: "TPMS_ATTEST",
                count: 1
            })
        );
        assert!(parse_attest(&buf[..n]).is_err());
    }
}
