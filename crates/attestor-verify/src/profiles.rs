//! Firmware profiles: reference values for one platform (TOML, in `firmware-profiles/`).
//!
//! A profile has a `[tpm]` section, an `[snp]` section, or both. For a TPM it says which
//! PCR banks may be quoted, which PCR carries the policy kernel measurement, which values
//! each firmware PCR may hold (per bank), which CAs may issue EK certificates (or which
//! EK public-key hashes are trusted without one) and which may certify AKs, how strong
//! keys must be and, in `[tpm.measured_boot]`, what the firmware event log must show
//! (Secure Boot, keys, dbx, boot applications); for SEV-SNP, which roots are pinned, which
//! launch measurements, guest policies, VMPLs and TCBs are acceptable. And how old an
//! attestation may be. Relative paths resolve against the profile's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::bundle::EvidenceKind;
use crate::evidence::certchain;
use crate::evidence::snp::certs::Tcb;
use crate::evidence::snp::chain::ChainCache;
use crate::evidence::snp::roots::{one_cert, Product, RootsOrigin, TrustRoots};
use crate::evidence::tpm::HashAlg;

mod measured_boot;
pub use measured_boot::{KeyAllowList, MeasuredBootProfile};

/// The spec's freshness window.
pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;

/// Why a profile is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile, or a file it names, cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The profile's content is unusable.
    #[error("profile {path} is invalid: {message}")]
    Invalid {
        /// The profile.
        path: PathBuf,
        /// What is wrong, naming the key or file at fault.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileToml {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_max_age")]
    max_age_seconds: u64,
    evidence: Option<EvidenceKind>,
    tpm: Option<TpmProfileToml>,
    snp: Option<SnpProfileToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnpProfileToml {
    product: Product,
    /// Test roots (PEM files) of the SNP simulation. Absent: AMD's roots for `product`.
    simulation_roots: Option<SimulationRootsToml>,
    allowed_measurements: Vec<String>,
    #[serde(default)]
    policy: GuestPolicyRules,
    min_tcb: Tcb,
    #[serde(default = "default_vmpls")]
    allowed_vmpls: Vec<u32>,
    #[serde(default = "default_min_report_version")]
    min_report_version: u32,
    vcek_cache: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulationRootsToml {
    ark: PathBuf,
    ask: PathBuf,
}

fn default_vmpls() -> Vec<u32> {
    vec![0]
}
fn default_min_report_version() -> u32 {
    2
}

/// Which guest policy bits a profile accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPolicyRules {
    /// A debuggable guest's memory is readable by the host: never in production.
    #[serde(default)]
    pub allow_debug: bool,
    /// A migration agent may move the guest (and its secrets) elsewhere.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// SMT shares cores with other tenants' threads (side channels).
    #[serde(default = "yes")]
    pub allow_smt: bool,
}

fn yes() -> bool {
    true
}

impl Default for GuestPolicyRules {
    fn default() -> Self {
        GuestPolicyRules {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
        }
    }
}

/// Reference values for SEV-SNP guests.
#[derive(Debug, Clone)]
pub struct SnpProfile {
    /// The processor generation reports must come from: fixes the TCB layout and, unless
    /// simulation roots are named, the AMD roots.
    pub product: Product,
    /// The pinned ARK and ASK.
    pub roots: TrustRoots,
    /// Launch measurements of approved guest images (firmware, kernel, initrd, command line).
    pub allowed_measurements: Vec<[u8; 48]>,
    /// What the guest policy may allow (debugging, a migration agent, SMT).
    pub policy: GuestPolicyRules,
    /// Every reported TCB component must be at least this.
    pub min_tcb: Tcb,
    /// VMPLs (0-3) a report may have been requested at.
    pub allowed_vmpls: Vec<u32>,
    /// The lowest report version accepted.
    pub min_report_version: u32,
    /// Directory of cached VCEKs, for bundles that do not carry theirs.
    pub vcek_cache: Option<PathBuf>,
    /// Chains already verified under `roots`, shared by the clones of this profile.
    pub chain_cache: Arc<ChainCache>,
}

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECONDS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmProfileToml {
    /// One allowed bank, with `firmware_pcrs` keyed by PCR (the original form).
    pcr_bank: Option<HashAlg>,
    /// The allowed banks, with `firmware_pcrs` keyed by bank, then PCR.
    pcr_banks: Option<Vec<HashAlg>>,
    measured_pcr: u8,
    firmware_pcrs: BTreeMap<String, FirmwareEntry>,
    #[serde(default)]
    ek_trust: EkTrust,
    ek_vendor_store: Option<PathBuf>,
    #[serde(default)]
    ek_trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    ek_intermediates: Vec<PathBuf>,
    #[serde(default)]
    ak_trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    iak_trust_anchors: Vec<PathBuf>,
    measured_boot: Option<measured_boot::MeasuredBootToml>,
    ek_allowlist: Option<PathBuf>,
    #[serde(default = "default_min_key_strength")]
    min_key_strength: u16,
}

/// Which EK CAs a profile trusts besides its `ek_trust_anchors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EkTrust {
    /// Only the certificates `ek_trust_anchors` names.
    #[default]
    Anchors,
    /// Also every certificate in the vendor trust store (`ek_vendor_store`, by default
    /// [`VENDOR_STORE`] next to the profile): the TPM manufacturers' EK CAs.
    Vendors,
}

/// The vendor trust store's directory, relative to the profile's: every `*.pem` in it holds
/// EK CA certificates, each a trust anchor (as Keylime's `tpm_cert_store` is used).
pub const VENDOR_STORE: &str = "tpm-ek-roots";

/// Every certificate of the `*.pem` files in `dir`, in file-name order, each checked to
/// decode as path validation decodes it.
fn load_vendor_store(
    dir: &Path,
    invalid: &dyn Fn(String) -> ProfileError,
    load_certs: CertLoader,
) -> Result<Vec<Vec<u8>>, ProfileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        for der in load_certs(std::slice::from_ref(&file))? {
            certchain::check_certificate(&der)
                .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
            out.push(der);
        }
    }
    if out.is_empty() {
        return Err(invalid(format!(
            "the EK vendor trust store {} holds no certificate",
            dir.display()
        )));
    }
    Ok(out)
}

/// One allowed digest or a set of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Digests {
    One(String),
    Set(Vec<String>),
}

/// A `firmware_pcrs` entry: a PCR's digests (under `pcr_bank`), or a bank's PCRs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FirmwareEntry {
    Pcr(Digests),
    Bank(BTreeMap<String, Digests>),
}

/// Allowed values of each firmware PCR, per bank.
pub type FirmwareReferences = BTreeMap<HashAlg, BTreeMap<u8, Vec<Vec<u8>>>>;

/// The weakest keys the verifier ever accepts: RSA-2048 (112-bit strength).
pub const DEFAULT_MIN_KEY_STRENGTH: u16 = 112;

fn default_min_key_strength() -> u16 {
    DEFAULT_MIN_KEY_STRENGTH
}

/// Reference values for a TPM platform.
#[derive(Debug, Clone)]
pub struct TpmProfile {
    /// The banks a quote may cover (one per quote); the sealed key's policy covers the
    /// quoted one.
    pub pcr_banks: Vec<HashAlg>,
    /// The PCR the policy kernel measurement is extended into: neither resettable nor a
    /// firmware PCR.
    pub measured_pcr: u8,
    /// Per allowed bank, the allowed values of each quoted firmware PCR (every bank names
    /// the same PCRs).
    pub firmware_pcrs: FirmwareReferences,
    /// DER certificates of the CAs trusted to issue EK certificates.
    pub ek_trust_anchors: Vec<Vec<u8>>,
    /// DER intermediates the verifier may use besides those in a bundle.
    pub ek_intermediates: Vec<Vec<u8>>,
    /// EK public-key hashes trusted without a certificate
    /// ([`crate::evidence::tpm::keys::ek_public_key_sha256`]).
    pub ek_allowlist: std::collections::BTreeSet<[u8; 32]>,
    /// The AK and the sealed key must be at least this strong (bits of security: 112 for
    /// RSA-2048, 128 for P-256, 192 for P-384).
    pub min_key_strength: u16,
    /// EK certificate paths already validated against this profile, shared by its clones.
    pub ek_chains: std::sync::Arc<certchain::ChainCache>,
    /// Sealed-key certifications already verified against this profile, shared by its
    /// clones.
    pub certifications: std::sync::Arc<crate::evidence::tpm::certification::CertificationCache>,
    /// DER certificates of the enrollment CAs trusted to certify AKs after credential
    /// activation (a ledger's `enrollment-ca.pem`, or a local one).
    pub ak_trust_anchors: Vec<Vec<u8>>,
    /// DER certificates of the platform makers' CAs trusted to issue IAK certificates.
    pub iak_trust_anchors: Vec<Vec<u8>>,
    /// Reference values for the firmware event log; when present, bundles must carry the
    /// log.
    pub measured_boot: Option<MeasuredBootProfile>,
}

impl TpmProfile {
    /// The firmware PCRs every quote must cover (the same for every allowed bank).
    pub fn firmware_pcr_indices(&self) -> Vec<u8> {
        self.firmware_pcrs
            .values()
            .next()
            .map(|pcrs| pcrs.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// A loaded firmware profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name, for errors and output.
    pub name: String,
    /// What the profile is for, for people (may be empty).
    pub description: String,
    /// How far the claims' timestamp may be from now, in seconds (default
    /// [`DEFAULT_MAX_AGE_SECONDS`]).
    pub max_age_seconds: u64,
    /// Evidence every bundle must carry (`"tpm+snp"`: a confidential VM's vTPM and its
    /// report, both). Absent: whatever evidence the bundle carries, judged by the
    /// sections it needs.
    pub evidence: Option<EvidenceKind>,
    /// Reference values for TPM evidence, if the profile has a `[tpm]` section.
    pub tpm: Option<TpmProfile>,
    /// Reference values for SEV-SNP evidence, if the profile has an `[snp]` section.
    pub snp: Option<SnpProfile>,
}

impl Profile {
    /// Reads a profile and the certificates it names.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses profile text as if it were read from `path`, then reads the certificates it
    /// names (relative to `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let read_err = |path: &Path, source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: ProfileToml = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let load_certs = |paths: &[PathBuf]| -> Result<Vec<Vec<u8>>, ProfileError> {
            let mut out = Vec::new();
            for p in paths {
                let p = base.join(p);
                let pem = std::fs::read_to_string(&p).map_err(|e| read_err(&p, e))?;
                let ders = certchain::pem_to_der_all(&pem)
                    .map_err(|e| invalid(format!("{}: {e}", p.display())))?;
                out.extend(ders);
            }
            Ok(out)
        };
        if raw.tpm.is_none() && raw.snp.is_none() {
            return Err(invalid("profile needs a [tpm] or an [snp] section".into()));
        }
        let (needs_tpm, needs_snp) = match raw.evidence {
            None => (false, false),
            Some(EvidenceKind::Tpm) => (true, false),
            Some(EvidenceKind::Snp) => (false, true),
            Some(EvidenceKind::TpmSnp) => (true, true),
        };
        if (needs_tpm && raw.tpm.is_none()) || (needs_snp && raw.snp.is_none()) {
            return Err(invalid(format!(
                "evidence = {:?} needs the matching [tpm] and [snp] sections",
                raw.evidence.map(EvidenceKind::name).unwrap_or_default()
            )));
        }
        let tpm = match raw.tpm {
            Some(tpm) => Some(load_tpm(tpm, base, &invalid, &load_certs)?),
            None => None,
        };
        let snp = match raw.snp {
            Some(snp) => Some(load_snp(snp, base, &invalid, &read_err)?),
            None => None,
        };
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            max_age_seconds: raw.max_age_seconds,
            evidence: raw.evidence,
            tpm,
            snp,
        })
    }
}

/// Reads the certificates of PEM files named in a profile.
type CertLoader<'a> = &'a dyn Fn(&[PathBuf]) -> Result<Vec<Vec<u8>>, ProfileError>;

fn load_tpm(
    tpm: TpmProfileToml,
    base: &Path,
    invalid: &dyn Fn(String) -> ProfileError,
    load_certs: CertLoader,
) -> Result<TpmProfile, ProfileError> {
    let pcr_banks = match (tpm.pcr_bank, &tpm.pcr_banks) {
        (Some(bank), None) => vec![bank],
        (None, Some(banks)) if !banks.is_empty() => banks.clone(),
        (None, Some(_)) => return Err(invalid("tpm.pcr_banks is empty".into())),
        _ => {
            return Err(invalid(
                "[tpm] needs exactly one of pcr_bank (one bank) or pcr_banks (a list)".into(),
            ))
        }
    };
    if (1..pcr_banks.len()).any(|i| pcr_banks[..i].contains(&pcr_banks[i])) {
        return Err(invalid("tpm.pcr_banks names a bank twice".into()));
    }
    let firmware_pcrs = firmware_references(&tpm, &pcr_banks, invalid)?;
    let firmware: Vec<u8> = firmware_pcrs
        .values()
        .next()
        .map(|p| p.keys().copied().collect())
        .unwrap_or_default();
    crate::evidence::tpm::check_pcr_choice(tpm.measured_pcr, &firmware).map_err(invalid)?;
    let mut ek_trust_anchors = load_certs(&tpm.ek_trust_anchors)?;
    match (tpm.ek_trust, &tpm.ek_vendor_store) {
        (EkTrust::Vendors, store) => {
            let dir = base.join(store.as_deref().unwrap_or(Path::new(VENDOR_STORE)));
            ek_trust_anchors.extend(load_vendor_store(&dir, invalid, load_certs)?);
        }
        (EkTrust::Anchors, Some(_)) => {
            return Err(invalid(
                "tpm.ek_vendor_store is used only with ek_trust = \"vendors\"".into(),
            ))
        }
        (EkTrust::Anchors, None) => {}
    }
    let ek_allowlist = match &tpm.ek_allowlist {
        Some(path) => load_ek_allowlist(&base.join(path), invalid)?,
        None => Default::default(),
    };
    if ek_trust_anchors.is_empty() && tpm.ek_allowlist.is_none() {
        return Err(invalid(
            "[tpm] trusts no EK: name EK CA certificates (ek_trust_anchors) or an EK hash \
             allow-list (ek_allowlist)"
                .into(),
        ));
    }
    if ![112, 128, 192].contains(&tpm.min_key_strength) {
        return Err(invalid(format!(
            "tpm.min_key_strength {} is not 112 (RSA-2048), 128 (P-256) or 192 (P-384)",
            tpm.min_key_strength
        )));
    }
    Ok(TpmProfile {
        pcr_banks,
        measured_pcr: tpm.measured_pcr,
        firmware_pcrs,
        ek_trust_anchors,
        ek_intermediates: load_certs(&tpm.ek_intermediates)?,
        ek_allowlist,
        min_key_strength: tpm.min_key_strength,
        ek_chains: Default::default(),
        certifications: Default::default(),
        ak_trust_anchors: load_certs(&tpm.ak_trust_anchors)?,
        iak_trust_anchors: load_certs(&tpm.iak_trust_anchors)?,
        measured_boot: match tpm.measured_boot {
            Some(m) => Some(m.load(base, invalid, load_certs)?),
            None => None,
        },
    })
}

/// The allowed digests of each firmware PCR per allowed bank. Keyed by PCR, the entries
/// are for the one `pcr_bank`; keyed by bank, every allowed bank needs the same PCRs, so
/// a host cannot escape a check by quoting another bank.
fn firmware_references(
    tpm: &TpmProfileToml,
    banks: &[HashAlg],
    invalid: &dyn Fn(String) -> ProfileError,
) -> Result<FirmwareReferences, ProfileError> {
    let mut out = FirmwareReferences::new();
    if tpm.firmware_pcrs.is_empty() {
        return Ok(banks.iter().map(|b| (*b, BTreeMap::new())).collect());
    }
    let by_pcr = tpm
        .firmware_pcrs
        .values()
        .all(|e| matches!(e, FirmwareEntry::Pcr(_)));
    if by_pcr {
        let [bank] = banks else {
            return Err(invalid(
                "with several pcr_banks, firmware_pcrs are keyed by bank: \
                 [tpm.firmware_pcrs.sha256] ..."
                    .into(),
            ));
        };
        let mut pcrs = BTreeMap::new();
        for (index, entry) in &tpm.firmware_pcrs {
            if let FirmwareEntry::Pcr(digests) = entry {
                pcrs.insert(
                    pcr_index(index, invalid)?,
                    digest_set(*bank, digests, invalid)?,
                );
            }
        }
        out.insert(*bank, pcrs);
        return Ok(out);
    }
    for (name, entry) in &tpm.firmware_pcrs {
        let FirmwareEntry::Bank(table) = entry else {
            return Err(invalid(format!(
                "firmware_pcrs mixes PCR {name:?} with bank tables"
            )));
        };
        let bank = banks
            .iter()
            .copied()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                invalid(format!(
                    "firmware_pcrs.{name} is not one of the allowed pcr_banks"
                ))
            })?;
        let mut pcrs = BTreeMap::new();
        for (index, digests) in table {
            pcrs.insert(
                pcr_index(index, invalid)?,
                digest_set(bank, digests, invalid)?,
            );
        }
        out.insert(bank, pcrs);
    }
    for bank in banks {
        if !out.contains_key(bank) {
            return Err(invalid(format!(
                "firmware_pcrs has no {} table, yet pcr_banks allows that bank",
                bank.name()
            )));
        }
    }
    let mut sets = out.values().map(|p| p.keys().collect::<Vec<_>>());
    let first = sets.next().unwrap_or_default();
    if sets.any(|s| s != first) {
        return Err(invalid(
            "every bank of firmware_pcrs must name the same PCRs".into(),
        ));
    }
    Ok(out)
}

fn pcr_index(index: &str, invalid: &dyn Fn(String) -> ProfileError) -> Result<u8, ProfileError> {
    index
        .parse()
        .ok()
        .filter(|p| *p <= 23)
        .ok_or_else(|| invalid(format!("firmware PCR index {index:?} is not 0-23")))
}

fn digest_set(
    bank: HashAlg,
    digests: &Digests,
    invalid: &dyn Fn(String) -> ProfileError,
) -> Result<Vec<Vec<u8>>, ProfileError> {
    let texts: Vec<&String> = match digests {
        Digests::One(d) => vec![d],
        Digests::Set(set) => set.iter().collect(),
    };
    if texts.is_empty() {
        return Err(invalid(format!(
            "a firmware PCR of the {} bank allows no value",
            bank.name()
        )));
    }
    texts
        .into_iter()
        .map(|text| {
            hex::decode(text)
                .ok()
                .filter(|d| d.len() == bank.digest_len())
                .ok_or_else(|| {
                    invalid(format!(
                        "firmware PCR value {text:?} is not {} hex bytes ({})",
                        bank.digest_len(),
                        bank.name()
                    ))
                })
        })
        .collect()
}

/// Reads an EK allow-list: one hex SHA-256 per line (see
/// [`crate::evidence::tpm::keys::ek_public_key_sha256`]); text after it, blank lines and
/// `#` comments are ignored.
fn load_ek_allowlist(
    path: &Path,
    invalid: &dyn Fn(String) -> ProfileError,
) -> Result<std::collections::BTreeSet<[u8; 32]>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = std::collections::BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let Some(first) = line
            .split_whitespace()
            .next()
            .filter(|t| !t.starts_with('#'))
        else {
            continue;
        };
        let hash = hex::decode(first)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "{} line {}: {first:?} is not a hex SHA-256",
                    path.display(),
                    number + 1
                ))
            })?;
        out.insert(hash);
    }
    Ok(out)
}

fn load_snp(
    snp: SnpProfileToml,
    base: &Path,
    invalid: &dyn Fn(String) -> ProfileError,
    read_err: &dyn Fn(&Path, std::io::Error) -> ProfileError,
) -> Result<SnpProfile, ProfileError> {
    let roots = match &snp.simulation_roots {
        None => snp
            .product
            .amd_roots()
            .map_err(|e| invalid(format!("built-in AMD roots: {e}")))?,
        Some(sim) => {
            let read = |p: &Path| -> Result<Vec<u8>, ProfileError> {
                let p = base.join(p);
                let pem = std::fs::read(&p).map_err(|e| read_err(&p, e))?;
                one_cert(&pem).map_err(|e| invalid(format!("{}: {e}", p.display())))
            };
            TrustRoots {
                ark: read(&sim.ark)?,
                ask: read(&sim.ask)?,
                origin: RootsOrigin::Simulation(base.join(&sim.ark)),
            }
        }
    };
    let mut allowed_measurements = Vec::new();
    for m in &snp.allowed_measurements {
        let digest = hex::decode(m)
            .ok()
            .and_then(|d| <[u8; 48]>::try_from(d).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "snp.allowed_measurements: {m:?} is not 48 bytes of hex"
                ))
            })?;
        allowed_measurements.push(digest);
    }
    if allowed_measurements.is_empty() {
        return Err(invalid("snp.allowed_measurements is empty".into()));
    }
    // Turin's TCB_VERSION adds the FMC SPL; older layouts have no such field.
    match (snp.product, snp.min_tcb.fmc) {
        (Product::Turin, None) => {
            return Err(invalid(
                "snp.min_tcb.fmc is required for Turin (its TCB has an FMC SPL)".into(),
            ))
        }
        (Product::Milan | Product::Genoa, Some(_)) => {
            return Err(invalid(format!(
                "snp.min_tcb.fmc: {} TCBs have no FMC SPL",
                snp.product.kds_name()
            )))
        }
        _ => {}
    }
    if snp.allowed_vmpls.is_empty() || snp.allowed_vmpls.iter().any(|v| *v > 3) {
        return Err(invalid("snp.allowed_vmpls must list VMPLs 0-3".into()));
    }
    Ok(SnpProfile {
        product: snp.product,
        roots,
        allowed_measurements,
        policy: snp.policy,
        min_tcb: snp.min_tcb,
        allowed_vmpls: snp.allowed_vmpls,
        min_report_version: snp.min_report_version,
        vcek_cache: snp.vcek_cache.map(|p| base.join(p)),
        chain_cache: Arc::default(),
    })
}
