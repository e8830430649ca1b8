//! The UEFI firmware event log (TCG PC Client Platform Firmware Profile, "PFP"): what the
//! firmware, and boot loaders through the EFI TCG2 protocol, extended into the PCRs, as
//! Linux exposes it in `/sys/kernel/security/tpm0/binary_bios_measurements`.
//!
//! Two layouts exist. The crypto-agile log starts with a SHA-1-style TCG_PCR_EVENT whose
//! data is the "Spec ID Event03" naming each bank and its digest size, then holds
//! TCG_PCR_EVENT2 entries with one digest per bank. The older SHA-1 log holds TCG_PCR_EVENT
//! entries throughout. Parsing checks layout only: the events are unverified until
//! [`UefiLog::replay`] matches quoted PCRs, and an event's data is unverified unless it
//! hashes to its replayed digest ([`UefiEvent::data_matches_digest`]).

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use super::HashAlg;

/// A log larger than this is refused: firmware log areas are 64 KiB to a few hundred KiB,
/// and the log must fit in a bundle ([`crate::bundle::MAX_BUNDLE_BYTES`], as base64).
pub const MAX_LOG_BYTES: usize = 512 * 1024;
/// A log with more events than this is refused (each takes at least 32 bytes).
pub const MAX_EVENTS: usize = 8192;
/// The Spec ID event may declare at most this many banks.
const MAX_BANKS: usize = 8;
/// The largest digest a bank may declare (SHA-512).
const MAX_DIGEST_LEN: usize = 64;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// EV_EFI_ACTION data firmware measures into PCR 5 when the OS calls ExitBootServices().
pub const EXIT_BOOT_SERVICES_INVOCATION: &[u8] = b"Exit Boot Services Invocation";
/// EV_EFI_ACTION data firmware measures into PCR 5 when ExitBootServices() succeeded.
pub const EXIT_BOOT_SERVICES_SUCCESS: &[u8] = b"Exit Boot Services Returned with Success";

/// A digest algorithm as the log names it (TPM_ALG_ID), SHA-1 and unknown ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlgId(pub u16);

impl AlgId {
    /// TPM_ALG_SHA1.
    pub const SHA1: AlgId = AlgId(0x0004);
    /// TPM_ALG_SHA256.
    pub const SHA256: AlgId = AlgId(0x000B);
    /// TPM_ALG_SHA384.
    pub const SHA384: AlgId = AlgId(0x000C);
    /// TPM_ALG_SHA512.
    pub const SHA512: AlgId = AlgId(0x000D);

    /// The lowercase name tpm2-tools uses, for the algorithms that can be replayed.
    pub fn name(self) -> Option<&'static str> {
        match self {
            AlgId::SHA1 => Some("sha1"),
            AlgId::SHA256 => Some("sha256"),
            AlgId::SHA384 => Some("sha384"),
            AlgId::SHA512 => Some("sha512"),
            _ => None,
        }
    }

    fn algorithm(self) -> Option<&'static aws_lc_rs::digest::Algorithm> {
        use aws_lc_rs::digest;
        match self {
            AlgId::SHA1 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            AlgId::SHA256 => Some(&digest::SHA256),
            AlgId::SHA384 => Some(&digest::SHA384),
            AlgId::SHA512 => Some(&digest::SHA512),
            _ => None,
        }
    }

    /// The digest of the concatenated `parts`; `None` for an algorithm attestor cannot
    /// compute.
    pub fn hash(self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        self.algorithm().map(|a| hash_with(a, parts))
    }
}

impl From<HashAlg> for AlgId {
    fn from(bank: HashAlg) -> Self {
        AlgId(bank.tpm_alg_id())
    }
}

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "algorithm 0x{:04x}", self.0),
        }
    }
}

fn hash_with(algorithm: &'static aws_lc_rs::digest::Algorithm, parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(algorithm);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish().as_ref().to_vec()
}

/// An event type (PFP §10.4.1); any value parses, known ones have names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(pub u32);

impl EventType {
    /// Not extended: informational (Spec ID, startup locality, vendor data).
    pub const NO_ACTION: EventType = EventType(0x3);
    /// The boundary between pre-OS and OS measurements of a PCR.
    pub const SEPARATOR: EventType = EventType(0x4);
    /// A UEFI variable that configures the platform, e.g. Secure Boot's (PCR 7).
    pub const EFI_VARIABLE_DRIVER_CONFIG: EventType = EventType(0x8000_0001);
    /// A UEFI application loaded from a boot option (boot loader, shim), by its
    /// Authenticode digest (PCR 4).
    pub const EFI_BOOT_SERVICES_APPLICATION: EventType = EventType(0x8000_0003);
    /// A fixed string marking a firmware action, e.g. ExitBootServices (PCR 5).
    pub const EFI_ACTION: EventType = EventType(0x8000_0007);

    /// The spec's name, as tpm2-tools prints it.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "EV_PREBOOT_CERT",
            0x1 => "EV_POST_CODE",
            0x2 => "EV_UNUSED",
            0x3 => "EV_NO_ACTION",
            0x4 => "EV_SEPARATOR",
            0x5 => "EV_ACTION",
            0x6 => "EV_EVENT_TAG",
            0x7 => "EV_S_CRTM_CONTENTS",
            0x8 => "EV_S_CRTM_VERSION",
            0x9 => "EV_CPU_MICROCODE",
            0xA => "EV_PLATFORM_CONFIG_FLAGS",
            0xB => "EV_TABLE_OF_DEVICES",
            0xC => "EV_COMPACT_HASH",
            0xD => "EV_IPL",
            0xE => "EV_IPL_PARTITION_DATA",
            0xF => "EV_NONHOST_CODE",
            0x10 => "EV_NONHOST_CONFIG",
            0x11 => "EV_NONHOST_INFO",
            0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
            0x8000_0000 => "EV_EFI_EVENT_BASE",
            0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
            0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
            0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
            0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
            0x8000_0006 => "EV_EFI_GPT_EVENT",
            0x8000_0007 => "EV_EFI_ACTION",
            0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
            0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
            0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
            0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
            0x8000_0010 => "EV_EFI_HCRTM_EVENT",
            0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
            0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
            0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
            _ => return None,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "event type 0x{:08x}", self.0),
        }
    }
}

/// Which layout a log has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// TCG_PCR_EVENT entries, SHA-1 only (TCG EFI Protocol 1.2 firmware).
    Sha1,
    /// A Spec ID event, then TCG_PCR_EVENT2 entries with a digest per declared bank.
    CryptoAgile,
}

/// One event as logged; nothing in it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiEvent<'a> {
    /// The PCR extended (any value parses: Windows logs EV_NO_ACTION events at 0xFFFFFFFF).
    pub pcr: u32,
    /// What was measured.
    pub event_type: EventType,
    /// The digest extended into each bank, in log order.
    pub digests: Vec<(AlgId, &'a [u8])>,
    /// The event data; for most types the measured digest is of these bytes.
    pub data: &'a [u8],
}

impl UefiEvent<'_> {
    /// The digest this event extended into `bank`.
    pub fn digest(&self, bank: AlgId) -> Option<&[u8]> {
        self.digests
            .iter()
            .find_map(|(alg, d)| (*alg == bank).then_some(*d))
    }

    /// Whether the event data hashes to the event's `bank` digest: only then may the
    /// data be believed once the digest is replayed.
    pub fn data_matches_digest(&self, bank: AlgId) -> bool {
        match (self.digest(bank), bank.hash(&[self.data])) {
            (Some(logged), Some(computed)) => logged == computed.as_slice(),
            _ => false,
        }
    }

    /// The locality the TPM was started from, for a TCG_EfiStartupLocalityEvent.
    pub fn startup_locality(&self) -> Option<u8> {
        match self.data {
            [signature @ .., locality]
                if self.event_type == EventType::NO_ACTION
                    && signature == STARTUP_LOCALITY_SIGNATURE =>
            {
                Some(*locality)
            }
            _ => None,
        }
    }

    /// The event data as a UEFI_VARIABLE_DATA (variable events).
    pub fn variable(&self) -> Result<VariableData<'_>, EventDataError> {
        parse_variable(self.data)
    }
}

/// A parsed firmware event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiLog<'a> {
    /// The layout.
    pub format: LogFormat,
    /// The banks the log carries and their digest sizes (SHA-1 alone for a SHA-1 log).
    pub banks: Vec<(AlgId, usize)>,
    /// Every event in log order, the Spec ID event first in a crypto-agile log.
    pub events: Vec<UefiEvent<'a>>,
}

/// Why bytes are not a firmware event log, or do not replay.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UefiLogError {
    /// The log is over [`MAX_LOG_BYTES`].
    #[error("firmware event log is {0} bytes, over the {MAX_LOG_BYTES}-byte limit")]
    TooLarge(usize),
    /// The log has no event at all.
    #[error("firmware event log is empty")]
    Empty,
    /// The log has over [`MAX_EVENTS`] events.
    #[error("firmware event log has over {MAX_EVENTS} events")]
    TooManyEvents,
    /// The log ends inside an event: it was cut short.
    #[error("firmware event log ends inside event {index} (at byte {offset}): truncated")]
    Truncated {
        /// The event's position (0-based, the header event included).
        index: usize,
        /// Where the event starts.
        offset: usize,
    },
    /// The Spec ID event does not follow PFP's layout.
    #[error("the Spec ID event is malformed: {0}")]
    SpecId(&'static str),
    /// An event holds a digest of a bank the Spec ID event does not declare, whose size
    /// is therefore unknown.
    #[error("event {index} has a digest of {alg}, a bank the Spec ID event does not declare")]
    UndeclaredBank {
        /// The event's position.
        index: usize,
        /// The algorithm.
        alg: AlgId,
    },
    /// An event holds two digests for one bank.
    #[error("event {index} has two {alg} digests")]
    DuplicateDigest {
        /// The event's position.
        index: usize,
        /// The algorithm.
        alg: AlgId,
    },
    /// An event holds more digests than there are banks.
    #[error("event {index} has {count} digests for {banks} banks")]
    TooManyDigests {
        /// The event's position.
        index: usize,
        /// Digests it claims.
        count: u32,
        /// Banks declared.
        banks: usize,
    },
    /// A replay was asked for a bank the log does not carry.
    #[error("the firmware event log has no {0} digests (its banks: {1})")]
    BankNotInLog(AlgId, String),
    /// A replay was asked for a bank whose hash attestor cannot compute.
    #[error("{0} digests cannot be replayed")]
    UnsupportedBank(AlgId),
    /// An extended event lacks the replayed bank's digest.
    #[error("event {index} has no {bank} digest")]
    MissingDigest {
        /// The event's position.
        index: usize,
        /// The bank replayed.
        bank: AlgId,
    },
    /// An extended event names a PCR that does not exist.
    #[error("event {index} extends PCR {pcr}, which does not exist")]
    PcrOutOfRange {
        /// The event's position.
        index: usize,
        /// The PCR it names.
        pcr: u32,
    },
    /// A startup-locality event comes after PCR 0 was already extended (or set).
    #[error("event {index} sets PCR 0's startup locality after PCR 0 was extended")]
    LateStartupLocality {
        /// The event's position.
        index: usize,
    },
}

/// Why an event's data does not have the structure its type defines.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventDataError {
    /// The data ends inside the named structure.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// The variable name is not UTF-16.
    #[error("the variable name is not UTF-16")]
    VariableName,
    /// An EFI_SIGNATURE_LIST's sizes do not fit together.
    #[error("EFI_SIGNATURE_LIST: {0}")]
    SignatureList(&'static str),
}

/// A bounds-checked little-endian reader: every read past the end is `None`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    /// A length field's value as a count of `unit`-byte items, if it can fit at all.
    fn len_field(&mut self, value: u64, unit: usize) -> Option<&'a [u8]> {
        let n = usize::try_from(value).ok()?.checked_mul(unit)?;
        self.take(n)
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Parses a firmware event log of either layout.
pub fn parse(bytes: &[u8]) -> Result<UefiLog<'_>, UefiLogError> {
    if bytes.len() > MAX_LOG_BYTES {
        return Err(UefiLogError::TooLarge(bytes.len()));
    }
    if bytes.is_empty() {
        return Err(UefiLogError::Empty);
    }
    let mut r = Reader::new(bytes);
    let first = sha1_event(&mut r, 0)?;
    let spec_id =
        first.event_type == EventType::NO_ACTION && first.data.starts_with(SPEC_ID_SIGNATURE);
    let (format, banks) = if spec_id {
        (LogFormat::CryptoAgile, spec_id_banks(&first)?)
    } else {
        (LogFormat::Sha1, vec![(AlgId::SHA1, 20)])
    };
    let mut events = vec![first];
    while !r.is_empty() {
        if events.len() >= MAX_EVENTS {
            return Err(UefiLogError::TooManyEvents);
        }
        let index = events.len();
        let event = match format {
            LogFormat::Sha1 => sha1_event(&mut r, index)?,
            LogFormat::CryptoAgile => agile_event(&mut r, index, &banks)?,
        };
        events.push(event);
    }
    Ok(UefiLog {
        format,
        banks,
        events,
    })
}

/// A TCG_PCR_EVENT: PCR, type, one SHA-1 digest, data.
fn sha1_event<'a>(r: &mut Reader<'a>, index: usize) -> Result<UefiEvent<'a>, UefiLogError> {
    let offset = r.pos;
    let read = |r: &mut Reader<'a>| {
        let pcr = r.u32()?;
        let event_type = EventType(r.u32()?);
        let digest = r.take(20)?;
        let size = r.u32()?;
        let data = r.len_field(size.into(), 1)?;
        Some(UefiEvent {
            pcr,
            event_type,
            digests: vec![(AlgId::SHA1, digest)],
            data,
        })
    };
    read(r).ok_or(UefiLogError::Truncated { index, offset })
}

/// A TCG_PCR_EVENT2: PCR, type, a TPML_DIGEST_VALUES sized by the Spec ID event, data.
fn agile_event<'a>(
    r: &mut Reader<'a>,
    index: usize,
    banks: &[(AlgId, usize)],
) -> Result<UefiEvent<'a>, UefiLogError> {
    let offset = r.pos;
    let truncated = UefiLogError::Truncated { index, offset };
    let (Some(pcr), Some(event_type), Some(count)) = (r.u32(), r.u32(), r.u32()) else {
        return Err(truncated);
    };
    if usize::try_from(count).map_or(true, |c| c > banks.len()) {
        return Err(UefiLogError::TooManyDigests {
            index,
            count,
            banks: banks.len(),
        });
    }
    let mut digests: Vec<(AlgId, &[u8])> = Vec::with_capacity(banks.len());
    for _ in 0..count {
        let alg = AlgId(r.u16().ok_or_else(|| truncated.clone())?);
        let size = banks
            .iter()
            .find_map(|(a, size)| (*a == alg).then_some(*size))
            .ok_or(UefiLogError::UndeclaredBank { index, alg })?;
        if digests.iter().any(|(a, _)| *a == alg) {
            return Err(UefiLogError::DuplicateDigest { index, alg });
        }
        digests.push((alg, r.take(size).ok_or_else(|| truncated.clone())?));
    }
    let data = r
        .u32()
        .and_then(|size| r.len_field(size.into(), 1))
        .ok_or(truncated)?;
    Ok(UefiEvent {
        pcr,
        event_type: EventType(event_type),
        digests,
        data,
    })
}

/// The banks a TCG_EfiSpecIDEventStruct declares (PFP §10.4.5.1), checked.
fn spec_id_banks(header: &UefiEvent<'_>) -> Result<Vec<(AlgId, usize)>, UefiLogError> {
    use UefiLogError::SpecId;
    if header.pcr != 0
        || header
            .digests
            .iter()
            .any(|(_, d)| d.iter().any(|b| *b != 0))
    {
        return Err(SpecId("it must be in PCR 0 with an all-zero digest"));
    }
    let mut r = Reader::new(header.data);
    let truncated = SpecId("it is truncated");
    // signature, platformClass, specVersionMinor/Major, specErrata, uintnSize
    r.take(16 + 4 + 4).ok_or(truncated.clone())?;
    let count = r.u32().ok_or(truncated.clone())?;
    if count == 0 || count as usize > MAX_BANKS {
        return Err(SpecId("it must declare 1 to 8 banks"));
    }
    let mut banks: Vec<(AlgId, usize)> = Vec::new();
    for _ in 0..count {
        let (Some(alg), Some(size)) = (r.u16(), r.u16()) else {
            return Err(truncated);
        };
        let (alg, size) = (AlgId(alg), usize::from(size));
        if size == 0 || size > MAX_DIGEST_LEN {
            return Err(SpecId("a digest size is 0 or over 64 bytes"));
        }
        if alg.algorithm().is_some_and(|a| a.output_len() != size) {
            return Err(SpecId("a bank's digest size is not its algorithm's"));
        }
        if banks.iter().any(|(a, _)| *a == alg) {
            return Err(SpecId("a bank is declared twice"));
        }
        banks.push((alg, size));
    }
    let vendor_info = r.u8().ok_or(truncated.clone())?;
    r.take(vendor_info.into()).ok_or(truncated)?;
    if !r.is_empty() {
        return Err(SpecId("bytes follow its vendor information"));
    }
    Ok(banks)
}

impl UefiLog<'_> {
    /// The value of every PCR the log extends (and PCR 0 when a startup-locality event
    /// sets it), in `bank`: from all zeros (PCR 0: the locality in its last byte), each
    /// event but EV_NO_ACTION extends `pcr = H(pcr || digest)`. PCRs absent from the map
    /// are all zero.
    pub fn replay(&self, bank: AlgId) -> Result<BTreeMap<u32, Vec<u8>>, UefiLogError> {
        let len = self
            .banks
            .iter()
            .find_map(|(a, len)| (*a == bank).then_some(*len))
            .ok_or_else(|| UefiLogError::BankNotInLog(bank, self.bank_names()))?;
        let algorithm = bank
            .algorithm()
            .ok_or(UefiLogError::UnsupportedBank(bank))?;
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (index, event) in self.events.iter().enumerate() {
            if event.event_type == EventType::NO_ACTION {
                if let (0, Some(locality)) = (event.pcr, event.startup_locality()) {
                    if pcrs.contains_key(&0) {
                        return Err(UefiLogError::LateStartupLocality { index });
                    }
                    let mut initial = vec![0; len];
                    if let Some(last) = initial.last_mut() {
                        *last = locality;
                    }
                    pcrs.insert(0, initial);
                }
                continue;
            }
            if event.pcr > 23 {
                return Err(UefiLogError::PcrOutOfRange {
                    index,
                    pcr: event.pcr,
                });
            }
            let digest = event
                .digest(bank)
                .ok_or(UefiLogError::MissingDigest { index, bank })?;
            let value = pcrs.entry(event.pcr).or_insert_with(|| vec![0; len]);
            *value = hash_with(algorithm, &[value, digest]);
        }
        Ok(pcrs)
    }

    /// Whether the firmware logged the ExitBootServices() invocation. Linux before 5.3
    /// read the log before calling ExitBootServices() and did not append the TCG2 Final
    /// Events Table, so its log lacks the two PCR 5 events that firmware extends then.
    pub fn has_exit_boot_services(&self) -> bool {
        self.events.iter().any(|e| {
            e.event_type == EventType::EFI_ACTION && e.data == EXIT_BOOT_SERVICES_INVOCATION
        })
    }

    fn bank_names(&self) -> String {
        let names: Vec<String> = self.banks.iter().map(|(a, _)| a.to_string()).collect();
        names.join(", ")
    }
}

/// `pcr` extended with the two ExitBootServices() events (PFP §10.4.4: EV_EFI_ACTION, digest
/// of the action string), for a log read before they were logged.
pub fn extend_exit_boot_services(pcr: &[u8], bank: AlgId) -> Option<Vec<u8>> {
    let algorithm = bank.algorithm()?;
    [EXIT_BOOT_SERVICES_INVOCATION, EXIT_BOOT_SERVICES_SUCCESS]
        .iter()
        .try_fold(pcr.to_vec(), |value, action| {
            let digest = hash_with(algorithm, &[action]);
            Some(hash_with(algorithm, &[&value, &digest]))
        })
}

/// An EFI_GUID, kept in its wire byte order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `a-b-c-d` in the specs (the first three fields little-endian on
    /// the wire).
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let (a, b, c) = (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }
    /// EFI_GLOBAL_VARIABLE: the vendor of SecureBoot, PK and KEK.
    pub const GLOBAL_VARIABLE: Guid = Guid::from_fields(
        0x8be4_df61,
        0x93ca,
        0x11d2,
        [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
    );
    /// EFI_IMAGE_SECURITY_DATABASE_GUID: the vendor of db and dbx.
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
        0xd719_b2cb,
        0x3d3a,
        0x4596,
        [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
    );
    /// EFI_CERT_X509_GUID: a signature list of DER certificates.
    pub const CERT_X509: Guid = Guid::from_fields(
        0xa5c0_59a1,
        0x94e4,
        0x4aa7,
        [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
    );
    /// EFI_CERT_SHA256_GUID: a signature list of SHA-256 image digests.
    pub const CERT_SHA256: Guid = Guid::from_fields(
        0xc1c4_1626,
        0x504c,
        0x4092,
        [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
    );
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{}-{}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            hex::encode(&g[8..10]),
            hex::encode(&g[10..])
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A UEFI_VARIABLE_DATA (PFP §10.4.6): a variable's vendor, name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableData<'a> {
    /// VariableName: the vendor GUID.
    pub vendor: Guid,
    /// UnicodeName, decoded.
    pub name: String,
    /// VariableData: the value (EFI_SIGNATURE_LISTs for PK, KEK, db and dbx).
    pub data: &'a [u8],
}

/// Parses a UEFI_VARIABLE_DATA. Bytes after it are ignored, as tpm2-tools does: shim pads
/// its EV_EFI_VARIABLE_AUTHORITY events (the structure's size, not its fields').
pub fn parse_variable(bytes: &[u8]) -> Result<VariableData<'_>, EventDataError> {
    const WHAT: &str = "UEFI_VARIABLE_DATA";
    let mut r = Reader::new(bytes);
    let read = |r: &mut Reader<'_>| -> Option<(Guid, Vec<u16>, u64)> {
        let vendor = Guid(r.array()?);
        let (name_len, data_len) = (r.u64()?, r.u64()?);
        let name = r.len_field(name_len, 2)?;
        let units = name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some((vendor, units, data_len))
    };
    let (vendor, units, data_len) = read(&mut r).ok_or(EventDataError::Truncated(WHAT))?;
    let name = String::from_utf16(&units).map_err(|_| EventDataError::VariableName)?;
    let data = r
        .len_field(data_len, 1)
        .ok_or(EventDataError::Truncated(WHAT))?;
    Ok(VariableData { vendor, name, data })
}

/// One EFI_SIGNATURE_DATA of a signature database (PK, KEK, db, dbx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry<'a> {
    /// The list's SignatureType, e.g. [`Guid::CERT_X509`] or [`Guid::CERT_SHA256`].
    pub signature_type: Guid,
    /// SignatureOwner: who added the entry.
    pub owner: Guid,
    /// SignatureData: a DER certificate, an image digest, ...
    pub data: &'a [u8],
}

impl SignatureEntry<'_> {
    /// How a profile names the entry: a SHA-256 entry by its digest, any other (an X.509
    /// certificate: its DER) by the SHA-256 of its data.
    pub fn fingerprint(&self) -> [u8; 32] {
        match <[u8; 32]>::try_from(self.data) {
            Ok(digest) if self.signature_type == Guid::CERT_SHA256 => digest,
            _ => {
                let mut out = [0u8; 32];
                out.copy_from_slice(&hash_with(&aws_lc_rs::digest::SHA256, &[self.data]));
                out
            }
        }
    }
}

/// Parses a variable value holding EFI_SIGNATURE_LISTs (UEFI 2.10 §32.4.1) into its
/// entries; an empty value has none.
pub fn parse_signature_lists(bytes: &[u8]) -> Result<Vec<SignatureEntry<'_>>, EventDataError> {
    use EventDataError::{SignatureList, Truncated};
    const HEADER: usize = 16 + 4 + 4 + 4;
    let mut r = Reader::new(bytes);
    let mut entries = Vec::new();
    while !r.is_empty() {
        let (Some(signature_type), Some(list_size), Some(header_size), Some(size)) =
            (r.array().map(Guid), r.u32(), r.u32(), r.u32())
        else {
            return Err(Truncated("EFI_SIGNATURE_LIST"));
        };
        let body = (list_size as usize)
            .checked_sub(HEADER)
            .ok_or(SignatureList("SignatureListSize is below its header"))?;
        let body = r.take(body).ok_or(Truncated("EFI_SIGNATURE_LIST"))?;
        let signatures = body
            .get(header_size as usize..)
            .ok_or(SignatureList("SignatureHeaderSize is beyond the list"))?;
        let size = size as usize;
        if size <= 16 || signatures.len() % size != 0 {
            return Err(SignatureList(
                "SignatureSize does not divide the list into entries",
            ));
        }
        for entry in signatures.chunks_exact(size) {
            let (owner, data) = entry.split_at(16);
            if signature_type == Guid::CERT_SHA256 && data.len() != 32 {
                return Err(SignatureList("an EFI_CERT_SHA256 entry is not 32 bytes"));
            }
            entries.push(SignatureEntry {
                signature_type,
                owner: Guid(owner.try_into().unwrap_or_default()),
                data,
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agile_header(banks: &[(u16, u16)]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend([0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend((banks.len() as u32).to_le_bytes());
        for (alg, size) in banks {
            spec.extend(alg.to_le_bytes());
            spec.extend(size.to_le_bytes());
        }
        spec.push(0);
        sha1_record(0, 3, &[0; 20], &spec)
    }

    fn sha1_record(pcr: u32, event_type: u32, digest: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = pcr.to_le_bytes().to_vec();
        out.extend(event_type.to_le_bytes());
        out.extend(digest);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    fn agile_record(pcr: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut out = pcr.to_le_bytes().to_vec();
        out.extend(event_type.to_le_bytes());
        out.extend((digests.len() as u32).to_le_bytes());
        for (alg, d) in digests {
            out.extend(alg.to_le_bytes());
            out.extend(d);
        }
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        AlgId::SHA256.hash(&[data]).unwrap()
    }

    #[test]
    fn replays_a_crypto_agile_log_with_startup_locality() {
        let mut log = agile_header(&[(0x0B, 32)]);
        let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
        locality.push(3);
        log.extend(agile_record(0, 3, &[(0x0B, vec![0; 32])], &locality));
        log.extend(agile_record(0, 8, &[(0x0B, sha256(b"v1"))], b"v1"));
        log.extend(agile_record(7, 4, &[(0x0B, sha256(&[0; 4]))], &[0; 4]));
        let parsed = parse(&log).unwrap();
        assert_eq!(parsed.format, LogFormat::CryptoAgile);
        assert_eq!(parsed.banks, vec![(AlgId::SHA256, 32)]);
        assert_eq!(parsed.events.len(), 4);
        assert!(parsed.events[2].data_matches_digest(AlgId::SHA256));
        let pcrs = parsed.replay(AlgId::SHA256).unwrap();
        let mut pcr0 = vec![0u8; 32];
        pcr0[31] = 3;
        let pcr0 = AlgId::SHA256.hash(&[&pcr0, &sha256(b"v1")]).unwrap();
        let pcr7 = AlgId::SHA256.hash(&[&[0u8; 32], &sha256(&[0; 4])]).unwrap();
        assert_eq!(pcrs, [(0, pcr0), (7, pcr7)].into());
        assert!(matches!(
            parsed.replay(AlgId::SHA384),
            Err(UefiLogError::BankNotInLog(AlgId::SHA384, _))
        ));
    }

    #[test]
    fn malformed_logs_get_typed_errors() {
        let header = agile_header(&[(0x0B, 32), (0x0C, 48)]);
        let event = agile_record(4, 0x8000_0003, &[(0x0B, vec![1; 32])], b"app");
        let mut log = header.clone();
        log.extend(&event);
        // Cut anywhere inside the last event: truncated, named by its index and offset.
        for cut in 1..event.len() {
            assert_eq!(
                parse(&log[..header.len() + cut]),
                Err(UefiLogError::Truncated {
                    index: 1,
                    offset: header.len()
                })
            );
        }
        // The sha384 digest is missing: parsing is fine, replaying that bank is not.
        let parsed = parse(&log).unwrap();
        assert_eq!(
            parsed.replay(AlgId::SHA384),
            Err(UefiLogError::MissingDigest {
                index: 1,
                bank: AlgId::SHA384
            })
        );
        let undeclared = agile_record(4, 1, &[(0x0D, vec![0; 64])], b"");
        assert_eq!(
            parse(&[header.clone(), undeclared].concat()),
            Err(UefiLogError::UndeclaredBank {
                index: 1,
                alg: AlgId::SHA512
            })
        );
        let twice = agile_record(4, 1, &[(0x0B, vec![0; 32]), (0x0B, vec![0; 32])], b"");
        assert!(matches!(
            parse(&[header.clone(), twice].concat()),
            Err(UefiLogError::DuplicateDigest { index: 1, .. })
        ));
        let many = agile_record(4, 1, &vec![(0x0B, vec![0; 32]); 3], b"");
        assert!(matches!(
            parse(&[header.clone(), many].concat()),
            Err(UefiLogError::TooManyDigests { count: 3, .. })
        ));
        let beyond = agile_record(24, 1, &[(0x0B, vec![0; 32]), (0x0C, vec![0; 48])], b"");
        assert_eq!(
            parse(&[header.clone(), beyond].concat())
                .unwrap()
                .replay(AlgId::SHA256),
            Err(UefiLogError::PcrOutOfRange { index: 1, pcr: 24 })
        );
        assert!(matches!(
            parse(&agile_header(&[(0x0B, 48)])),
            Err(UefiLogError::SpecId(_))
        ));
        assert!(matches!(
            parse(&agile_header(&[(0x0B, 32), (0x0B, 32)])),
            Err(UefiLogError::SpecId(_))
        ));
        assert!(matches!(
            parse(&agile_header(&[])),
            Err(UefiLogError::SpecId(_))
        ));
        assert_eq!(parse(&[]), Err(UefiLogError::Empty));
        assert_eq!(
            parse(&vec![0; MAX_LOG_BYTES + 1]),
            Err(UefiLogError::TooLarge(MAX_LOG_BYTES + 1))
        );
    }

    #[test]
    fn a_sha1_log_and_the_exit_boot_services_events() {
        let digest = AlgId::SHA1.hash(&[b"x"]).unwrap();
        let log = sha1_record(5, 0x8000_0007, &digest, b"x");
        let parsed = parse(&log).unwrap();
        assert_eq!(parsed.format, LogFormat::Sha1);
        assert!(!parsed.has_exit_boot_services());
        let pcr5 = parsed.replay(AlgId::SHA1).unwrap()[&5].clone();
        let mut full = log.clone();
        for action in [EXIT_BOOT_SERVICES_INVOCATION, EXIT_BOOT_SERVICES_SUCCESS] {
            let d = AlgId::SHA1.hash(&[action]).unwrap();
            full.extend(sha1_record(5, 0x8000_0007, &d, action));
        }
        let full = parse(&full).unwrap();
        assert!(full.has_exit_boot_services());
        assert_eq!(
            Some(full.replay(AlgId::SHA1).unwrap()[&5].clone()),
            extend_exit_boot_services(&pcr5, AlgId::SHA1)
        );
    }

    #[test]
    fn variables_and_signature_lists() {
        let cert = b"not really DER".to_vec();
        let mut list = Guid::CERT_X509.0.to_vec();
        list.extend((28 + 16 + cert.len() as u32).to_le_bytes());
        list.extend(0u32.to_le_bytes());
        list.extend((16 + cert.len() as u32).to_le_bytes());
        list.extend([7; 16]);
        list.extend(&cert);
        let mut var = Guid::IMAGE_SECURITY_DATABASE.0.to_vec();
        var.extend(2u64.to_le_bytes());
        var.extend((list.len() as u64).to_le_bytes());
        var.extend([b'd', 0, b'b', 0]);
        var.extend(&list);
        let parsed = parse_variable(&var).unwrap();
        assert_eq!(parsed.name, "db");
        assert_eq!(
            parsed.vendor.to_string(),
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
        );
        let entries = parse_signature_lists(parsed.data).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].owner, Guid([7; 16]));
        assert_eq!(entries[0].fingerprint().to_vec(), sha256(&cert));
        assert_eq!(
            parse_variable(&[var.clone(), vec![0; 6]].concat()),
            Ok(parsed.clone())
        );
        for cut in 0..var.len() {
            assert!(parse_variable(&var[..cut]).is_err());
        }
        let mut bad = list.clone();
        bad[24..28].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            parse_signature_lists(&bad),
            Err(EventDataError::SignatureList(_))
        ));
        assert_eq!(parse_signature_lists(&[]), Ok(vec![]));
    }
}
