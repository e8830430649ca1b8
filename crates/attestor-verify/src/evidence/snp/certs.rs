//! Certificates around a report: the facts AMD writes into a VCEK (TCB, chip id,
//! product) and the GHCB certificate table a host returns with an extended report.
//! Both are parsed as hostile bytes.

use std::time::{Duration, SystemTime};

use thiserror::Error;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// The TCB component security patch levels, as the report and the VCEK carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tcb {
    /// The FMC (first mutable code) SPL: only Turin and later TCB_VERSIONs carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    /// The PSP bootloader SPL.
    pub bootloader: u8,
    /// The PSP OS (TEE) SPL.
    pub tee: u8,
    /// The SNP firmware SPL.
    pub snp: u8,
    /// The CPU microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// The first component below `min`, if any (each component is its own version
    /// number: a TCB is not ordered as a whole). When `min` has an FMC, a TCB without one
    /// counts as FMC 0.
    pub fn first_below(&self, min: &Tcb) -> Option<(&'static str, u8, u8)> {
        let fmc = min.fmc.map(|want| ("fmc", self.fmc.unwrap_or(0), want));
        fmc.into_iter()
            .chain([
                ("bootloader", self.bootloader, min.bootloader),
                ("tee", self.tee, min.tee),
                ("snp", self.snp, min.snp),
                ("microcode", self.microcode, min.microcode),
            ])
            .find(|(_, have, want)| have < want)
    }
}

impl From<sev::firmware::host::TcbVersion> for Tcb {
    fn from(t: sev::firmware::host::TcbVersion) -> Tcb {
        Tcb {
            fmc: t.fmc,
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        }
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc} ")?;
        }
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Why a certificate or certificate table is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertError {
    /// Not a DER X.509 certificate; the parser's reason.
    #[error("certificate is not DER X.509: {0}")]
    Der(String),
    /// The VCEK lacks a required AMD extension: its OID and name.
    #[error("VCEK lacks AMD extension {0} ({1})")]
    MissingExtension(&'static str, &'static str),
    /// The value of the named AMD extension does not decode.
    #[error("VCEK extension {0} is malformed")]
    BadExtension(&'static str),
    /// The VCEK's key is not an uncompressed P-384 point.
    #[error("VCEK key is not an uncompressed P-384 point")]
    NotP384,
    /// The table (of this many bytes) ends before its all-zero closing entry.
    #[error("certificate table is {0} bytes, too short for its entries")]
    TableTruncated(usize),
    /// An entry's data lies outside the table.
    #[error(
        "certificate table entry {index} points outside the table ({offset}+{length} > {size})"
    )]
    TableEntryOutOfBounds {
        /// The entry's position in the table.
        index: usize,
        /// Its data's offset from the table's start, in bytes.
        offset: u32,
        /// Its data's length, in bytes.
        length: u32,
        /// The table's size, in bytes.
        size: usize,
    },
    /// More than [`MAX_TABLE_ENTRIES`] entries.
    #[error("certificate table has more than {MAX_TABLE_ENTRIES} entries")]
    TableTooLong,
    /// The table (of this many bytes) is over [`MAX_TABLE_BYTES`]; it was not parsed.
    #[error("certificate table is {0} bytes, over the {MAX_TABLE_BYTES}-byte limit")]
    TableTooLarge(usize),
    /// Two entries of this kind, which would make the table ambiguous.
    #[error("certificate table has two {0} entries")]
    TableDuplicate(CertKind),
}

const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
/// Turin and later VCEKs only (AMD spec 57230, "VCEK certificate extensions").
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// What a VCEK certificate says about the chip and firmware it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcekFacts {
    /// The TCB the VCEK was derived at: a report signed by it must report this TCB.
    pub tcb: Tcb,
    /// hwID: the chip id the report must carry (64 bytes; 8 on Turin).
    pub hw_id: Vec<u8>,
    /// productName, e.g. "Milan-B0" (absent from some VLEK certificates).
    pub product_name: Option<String>,
    /// The public key, SEC1 uncompressed (97 bytes).
    pub public_key_sec1: Vec<u8>,
    /// Start of the certificate's validity.
    pub not_before: SystemTime,
    /// End of the certificate's validity.
    pub not_after: SystemTime,
}

/// Reads the AMD extensions and the key of a VCEK certificate (DER).
pub fn vcek_facts(der: &[u8]) -> Result<VcekFacts, CertError> {
    let cert = Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let extension = |oid: &'static str, name: &'static str| -> Result<&[u8], CertError> {
        tbs.extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
            .ok_or(CertError::MissingExtension(oid, name))
    };
    let spl = |oid: &'static str, name: &'static str| -> Result<u8, CertError> {
        let value = extension(oid, name)?;
        u8::from_der(value).map_err(|_| CertError::BadExtension(name))
    };
    let fmc = match extension(OID_FMC_SPL, "fmcSPL") {
        Ok(value) => Some(u8::from_der(value).map_err(|_| CertError::BadExtension("fmcSPL"))?),
        Err(_) => None,
    };
    let tcb = Tcb {
        fmc,
        bootloader: spl(OID_BL_SPL, "blSPL")?,
        tee: spl(OID_TEE_SPL, "teeSPL")?,
        snp: spl(OID_SNP_SPL, "snpSPL")?,
        microcode: spl(OID_UCODE_SPL, "ucodeSPL")?,
    };
    let hw_id = extension(OID_HW_ID, "hwID")?.to_vec();
    let product_name = extension(OID_PRODUCT_NAME, "productName")
        .ok()
        .and_then(|v| x509_cert::der::asn1::Ia5StringRef::from_der(v).ok())
        .map(|s| s.as_str().to_string());
    let public_key_sec1 = tbs
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .filter(|k| k.len() == 97 && k.first() == Some(&4))
        .ok_or(CertError::NotP384)?
        .to_vec();
    let validity = &tbs.validity;
    Ok(VcekFacts {
        tcb,
        hw_id,
        product_name,
        public_key_sec1,
        not_before: SystemTime::UNIX_EPOCH + validity.not_before.to_unix_duration(),
        not_after: SystemTime::UNIX_EPOCH + validity.not_after.to_unix_duration(),
    })
}

/// Validity period of any certificate (DER), for the ARK and ASK checks.
pub fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), CertError> {
    let cert = Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
    let v = &cert.tbs_certificate.validity;
    Ok((
        SystemTime::UNIX_EPOCH + v.not_before.to_unix_duration(),
        SystemTime::UNIX_EPOCH + v.not_after.to_unix_duration(),
    ))
}

/// Re-encodes a certificate, so what is pinned or cached is canonical DER.
pub fn canonical_der(der: &[u8]) -> Result<Vec<u8>, CertError> {
    Certificate::from_der(der)
        .and_then(|c| c.to_der())
        .map_err(|e| CertError::Der(e.to_string()))
}

/// Seconds since the epoch, for messages.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The kinds of entry a GHCB certificate table holds (GUIDs from the GHCB specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertKind {
    /// The AMD Root Key certificate.
    Ark,
    /// The AMD SEV Signing Key certificate, issued by the ARK.
    Ask,
    /// The Versioned Chip Endorsement Key certificate: this chip at one TCB.
    Vcek,
    /// A Versioned Loaded Endorsement Key certificate (a cloud provider's key, used in
    /// place of the VCEK).
    Vlek,
    /// A certificate revocation list of AMD's chain.
    Crl,
    /// An entry of another GUID (as the table stores it).
    Other([u8; 16]),
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertKind::Ark => f.write_str("ARK"),
            CertKind::Ask => f.write_str("ASK"),
            CertKind::Vcek => f.write_str("VCEK"),
            CertKind::Vlek => f.write_str("VLEK"),
            CertKind::Crl => f.write_str("CRL"),
            CertKind::Other(g) => write!(f, "GUID {}", hex::encode(g)),
        }
    }
}

const GUIDS: [(CertKind, [u8; 16]); 5] = [
    (
        CertKind::Ark,
        guid(0xc0b406a4, 0xa803, 0x4952, 0x97433fb6014cd0ae),
    ),
    (
        CertKind::Ask,
        guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f05aef327c782),
    ),
    (
        CertKind::Vcek,
        guid(0x63da758d, 0xe664, 0x4564, 0xadc5f4b93be8accd),
    ),
    (
        CertKind::Vlek,
        guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae639c045a0b8a1),
    ),
    (
        CertKind::Crl,
        guid(0x92f81bc3, 0x5811, 0x4d3d, 0x97ffd19f88dc67ea),
    ),
];

/// A GUID in the byte order the table uses (as written, like the `sev` crate).
const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
    let (a, b, c, d) = (
        a.to_be_bytes(),
        b.to_be_bytes(),
        c.to_be_bytes(),
        d.to_be_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

impl CertKind {
    fn from_guid(g: [u8; 16]) -> CertKind {
        GUIDS
            .iter()
            .find(|(_, known)| *known == g)
            .map_or(CertKind::Other(g), |(k, _)| *k)
    }

    fn guid(self) -> [u8; 16] {
        match self {
            CertKind::Other(g) => g,
            known => GUIDS
                .iter()
                .find(|(k, _)| *k == known)
                .map_or([0; 16], |(_, g)| *g),
        }
    }
}

/// One certificate from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// What the entry holds, by its GUID.
    pub kind: CertKind,
    /// The entry's bytes (DER for a certificate), unverified.
    pub data: Vec<u8>,
}

/// Tables larger than this are refused (a full one with a CRL is under 16 KiB).
pub const MAX_TABLE_BYTES: usize = 64 * 1024;
/// Entries beyond this are refused.
pub const MAX_TABLE_ENTRIES: usize = 16;
const ENTRY_LEN: usize = 24;

/// Parses a GHCB certificate table: entries of (GUID, u32 LE offset, u32 LE length),
/// closed by an all-zero entry, offsets counted from the table's start.
pub fn parse_cert_table(bytes: &[u8]) -> Result<Vec<CertEntry>, CertError> {
    if bytes.len() > MAX_TABLE_BYTES {
        return Err(CertError::TableTooLarge(bytes.len()));
    }
    let mut entries: Vec<CertEntry> = Vec::new();
    for index in 0.. {
        let at = index * ENTRY_LEN;
        let entry = bytes
            .get(at..at + ENTRY_LEN)
            .ok_or(CertError::TableTruncated(bytes.len()))?;
        let (g, rest) = entry.split_at(16);
        let g: [u8; 16] = g
            .try_into()
            .map_err(|_| CertError::TableTruncated(bytes.len()))?;
        if g == [0; 16] {
            return Ok(entries);
        }
        if index >= MAX_TABLE_ENTRIES {
            return Err(CertError::TableTooLong);
        }
        let word = |i: usize| -> u32 {
            rest.get(i..i + 4)
                .and_then(|w| w.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let (offset, length) = (word(0), word(4));
        let data = (offset as usize)
            .checked_add(length as usize)
            .and_then(|end| bytes.get(offset as usize..end))
            .ok_or(CertError::TableEntryOutOfBounds {
                index,
                offset,
                length,
                size: bytes.len(),
            })?;
        let kind = CertKind::from_guid(g);
        if entries.iter().any(|e| e.kind == kind) {
            return Err(CertError::TableDuplicate(kind));
        }
        entries.push(CertEntry {
            kind,
            data: data.to_vec(),
        });
    }
    Ok(entries)
}

/// Encodes a certificate table (for the simulation, which hands the guest the same bytes
/// a host would).
pub fn encode_cert_table(entries: &[CertEntry]) -> Vec<u8> {
    let mut offset = ENTRY_LEN * (entries.len() + 1);
    let mut head = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for e in entries {
        head.extend(e.kind.guid());
        head.extend((offset as u32).to_le_bytes());
        head.extend((e.data.len() as u32).to_le_bytes());
        offset += e.data.len();
        body.extend(&e.data);
    }
    head.extend([0u8; ENTRY_LEN]);
    head.extend(body);
    head
}

/// The entry of `kind`, if the table has one.
pub fn find(entries: &[CertEntry], kind: CertKind) -> Option<&[u8]> {
    entries
        .iter()
        .find(|e| e.kind == kind)
        .map(|e| e.data.as_slice())
}
