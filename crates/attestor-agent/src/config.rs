//! Agent configuration (TOML). Relative paths are resolved against the config file's
//! directory, so a config and the files it names can move together.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::collect::StatusSource;
use attestor_net::tls::TlsFiles;
use attestor_platform::snp::sim::SimulationSettings;
use attestor_platform::tpm::persistent::{self, PersistentHandles};
use attestor_platform::tpm::EkTemplate;
use attestor_verify::evidence::snp::roots::Product;
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::HashAlg;

pub use attestor_verify::evidence::tpm::{check_pcr_choice, DEFAULT_MEASURED_PCR, RESETTABLE_PCRS};
/// Default TCTI: the kernel's TPM resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Why a configuration file is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "config {path}: [heartbeat] timeout_seconds = {timeout_seconds} must be at most \
         {MAX_HEARTBEAT_TIMEOUT_SECONDS} (the spec's bound) and shorter than interval_seconds \
         = {interval_seconds}"
    )]
    HeartbeatTimeout {
        path: PathBuf,
        timeout_seconds: u64,
        interval_seconds: u64,
    },
}

/// The spec's bound on one heartbeat: a ledger that has not answered by then is down for
/// this agent, and the attestation waits in the spool.
pub const MAX_HEARTBEAT_TIMEOUT_SECONDS: u64 = 15;

/// Where the policy kernel keeps its configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyKernelFiles {
    /// The active policy document (.toml or .json).
    pub policy: PathBuf,
    /// Other configuration files, hashed as raw bytes.
    #[serde(default)]
    pub config_files: Vec<PathBuf>,
}

/// TPM settings of the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TCTI in tss-esapi syntax; `--tcti` / `ATTESTOR_TCTI` take precedence.
    pub tcti: Option<String>,
    /// PCR extended with the policy kernel measurement. Default 13: PCRs 0–7 belong to
    /// firmware and 8–12, 14, 15 are claimed by common Linux boot chains (grub, IMA,
    /// systemd-stub, shim, systemd); 16 and 23 are resettable from locality 0 by any local
    /// process, which would let an attacker replay an old measurement, and 17–22 need
    /// localities the OS does not have. 13 is non-resettable and is what Google's
    /// Confidential Space uses for workload measurements. Pick another free non-resettable
    /// PCR if your boot chain uses 13 (systemd-stub measures system extensions there).
    #[serde(default = "default_measured_pcr")]
    pub measured_pcr: u8,
    /// Banks to quote (and seal the signing key to), most preferred first: the agent uses
    /// the first one the TPM has PCRs allocated in. `pcr_bank = "sha384"` (one bank) is
    /// accepted too.
    #[serde(
        default = "default_banks",
        alias = "pcr_bank",
        deserialize_with = "one_or_many"
    )]
    pub pcr_banks: Vec<HashAlg>,
    /// Firmware/boot PCRs quoted alongside the measured one, for the profile to check.
    #[serde(default = "default_firmware_pcrs")]
    pub firmware_pcrs: Vec<u8>,
    /// Algorithms for the AK and the sealed key, most preferred first: the agent uses the
    /// first the TPM implements (curve, scheme and hash).
    #[serde(default = "default_key_algorithms")]
    pub key_algorithms: Vec<SigningAlgorithm>,
    /// PEM file of EK certificate intermediates to ship in bundles (the TPM holds only the leaf).
    pub ek_intermediates: Option<PathBuf>,
    /// Keep the storage key and the AK resident under persistent handles instead of
    /// re-creating a primary key for every signature and quote. Unset: on behind a resource
    /// manager (see [`TpmConfig::persistent_keys_for`]), off otherwise.
    pub persistent_keys: Option<bool>,
    /// Persistent handle of the storage key.
    #[serde(default = "default_srk_handle")]
    pub srk_handle: u32,
    /// Persistent handle of the AK.
    #[serde(default = "default_ak_handle")]
    pub ak_handle: u32,
    /// The firmware's UEFI event log to ship in bundles, usually
    /// `/sys/kernel/security/tpm0/binary_bios_measurements` (or a copy readable by the
    /// agent). Absent: no log (swtpm runs no firmware).
    pub firmware_event_log: Option<PathBuf>,
    /// The EK certificate as a file (PEM, the EK certificate first and any intermediates
    /// after it, or DER), for a TPM without one in NV; the agent uses the EK it certifies.
    pub ek_certificate_file: Option<PathBuf>,
    /// Use this EK template's EK without any certificate (`rsa2048`, `ecc-p256`,
    /// `ecc-p384`, ...): verifiers must then allow-list the EK's public-key hash.
    pub ek_without_certificate: Option<EkTemplate>,
}

impl TpmConfig {
    /// Where the EK's certificate comes from: the file, none, or (by default) NV.
    pub fn ek_source_kind(&self) -> EkSourceKind<'_> {
        match (&self.ek_certificate_file, self.ek_without_certificate) {
            (Some(path), _) => EkSourceKind::File(path),
            (None, Some(template)) => EkSourceKind::Uncertified(template),
            (None, None) => EkSourceKind::Nv,
        }
    }
}

/// Where the agent takes its EK certificate from (see [`TpmConfig::ek_source_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkSourceKind<'a> {
    /// The TPM's NV, at the TCG EK Credential Profile indices.
    Nv,
    /// A file the operator supplies.
    File(&'a Path),
    /// No certificate: this template's EK, trusted by its hash.
    Uncertified(EkTemplate),
}

/// A bank or a list of banks, each named as [`HashAlg::pcr_bank`] accepts. The names are
/// read as strings first, so an untagged match cannot swallow why a name is refused.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<HashAlg>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let names = match OneOrMany::deserialize(d)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    };
    names
        .iter()
        .map(|name| HashAlg::pcr_bank(name).map_err(serde::de::Error::custom))
        .collect()
}

impl TpmConfig {
    /// Whether keys are kept resident on the TPM behind `tcti`: as configured, else on for
    /// the kernel's resource manager (`device:/dev/tpmrm*`) and tpm2-abrmd, where other
    /// users' objects cannot collide with ours, and off for a raw device or a simulator.
    pub fn persistent_keys_for(&self, tcti: &str) -> bool {
        self.persistent_keys
            .unwrap_or_else(|| tcti.starts_with("device:/dev/tpmrm") || tcti.starts_with("tabrmd"))
    }

    /// The persistent handles the keys use when resident.
    pub fn persistent_handles(&self) -> PersistentHandles {
        PersistentHandles {
            srk: self.srk_handle,
            ak: self.ak_handle,
        }
    }
}

fn default_measured_pcr() -> u8 {
    DEFAULT_MEASURED_PCR
}
fn default_banks() -> Vec<HashAlg> {
    vec![HashAlg::Sha384, HashAlg::Sha256]
}
fn default_key_algorithms() -> Vec<SigningAlgorithm> {
    SigningAlgorithm::ALL.to_vec()
}
fn default_firmware_pcrs() -> Vec<u8> {
    (0..8).collect()
}
fn default_srk_handle() -> u32 {
    persistent::DEFAULT_SRK_HANDLE
}
fn default_ak_handle() -> u32 {
    persistent::DEFAULT_AK_HANDLE
}

impl Default for TpmConfig {
    fn default() -> Self {
        TpmConfig {
            tcti: None,
            measured_pcr: DEFAULT_MEASURED_PCR,
            pcr_banks: default_banks(),
            firmware_pcrs: default_firmware_pcrs(),
            key_algorithms: default_key_algorithms(),
            ek_intermediates: None,
            ek_certificate_file: None,
            ek_without_certificate: None,
            persistent_keys: None,
            srk_handle: default_srk_handle(),
            ak_handle: default_ak_handle(),
            firmware_event_log: None,
        }
    }
}

/// The ledger the agent ships to.
#[derive(Debug, Clone)]
pub struct LedgerConnection {
    /// `https://HOST:PORT` of the ledger.
    pub endpoint: String,
    /// The CA to pin and the agent's client certificate and key.
    pub tls: TlsFiles,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerToml {
    endpoint: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Heartbeat timing and the values the operator expects the agent to attest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Seconds between attestations (the spec's 60 by default).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Seconds one heartbeat may take before it counts as failed (the spec's 15).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Expected policy hash (hex); when absent, the one measured at start.
    pub expected_policy_hash: Option<String>,
    /// Expected zero-retention flag; when absent, the one measured at start.
    pub expected_zero_retention: Option<bool>,
    /// Attestations kept while the ledger is unreachable.
    #[serde(default = "default_spool_capacity")]
    pub spool_capacity: usize,
    /// Where to serve `/metrics` and `/healthz` (plain HTTP; keep it on loopback).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

fn default_interval() -> u64 {
    60
}
fn default_timeout() -> u64 {
    15
}
fn default_spool_capacity() -> usize {
    crate::spool::DEFAULT_CAPACITY
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            expected_policy_hash: None,
            expected_zero_retention: None,
            spool_capacity: default_spool_capacity(),
            metrics_listen: None,
        }
    }
}

/// Status source as written in TOML: exactly one of `file` or `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusToml {
    file: Option<PathBuf>,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentToml {
    state_dir: PathBuf,
    policy_kernel: PolicyKernelFiles,
    status: StatusToml,
    #[serde(default)]
    tpm: TpmConfig,
    ledger: Option<LedgerToml>,
    #[serde(default)]
    heartbeat: HeartbeatConfig,
    #[serde(default)]
    evidence: EvidenceKind,
    snp: Option<SnpConfig>,
}

pub use attestor_verify::bundle::EvidenceKind;

/// How the agent reaches the secure processor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnpInterface {
    /// configfs-tsm when its report directory exists (Linux 6.7+), else `/dev/sev-guest`.
    #[default]
    Auto,
    /// Reports through configfs-tsm; derived keys still through `/dev/sev-guest`.
    ConfigfsTsm,
    /// Everything through `/dev/sev-guest`.
    SevGuest,
}

/// SEV-SNP settings of the agent: the real device, or (only when named) the simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpConfig {
    /// The guest device; only the Linux driver's `/dev/sev-guest` is supported.
    #[serde(default = "default_snp_device")]
    pub device: String,
    /// configfs-tsm or the device (ignored by the simulation).
    #[serde(default)]
    pub interface: SnpInterface,
    /// configfs-tsm's report directory.
    #[serde(default = "default_tsm_report_dir")]
    pub tsm_report_dir: PathBuf,
    /// Use the software simulation instead of the device (tests and demos only).
    pub simulation: Option<SimulationSettings>,
    /// VMPL to request reports at.
    #[serde(default)]
    pub vmpl: u32,
    /// Processor generation, to find the VCEK in the cache or at AMD's KDS when the host
    /// returns no certificate table.
    pub product: Option<Product>,
    /// Where cached VCEKs live (default: `state_dir/snp/vcek`).
    pub vcek_cache: Option<PathBuf>,
    /// Fetch a VCEK the host does not provide from this KDS (AMD's is
    /// `https://kdsintf.amd.com`) into the cache; without it, a missing VCEK is an error
    /// naming the URL.
    pub kds_url: Option<String>,
    /// CA (PEM) of a private KDS mirror; AMD's KDS is checked against the Mozilla roots.
    pub kds_ca: Option<PathBuf>,
}

fn default_tsm_report_dir() -> PathBuf {
    PathBuf::from(attestor_platform::snp::configfs::TSM_REPORT_DIR)
}

fn default_snp_device() -> String {
    attestor_platform::snp::device::SEV_GUEST_DEVICE.to_string()
}

/// A loaded, path-resolved agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where key blobs and the measurement log live (one subdirectory per TPM).
    pub state_dir: PathBuf,
    pub policy_kernel: PolicyKernelFiles,
    pub status: StatusSource,
    pub tpm: TpmConfig,
    /// Needed by the heartbeat daemon only.
    pub ledger: Option<LedgerConnection>,
    pub heartbeat: HeartbeatConfig,
    pub evidence: EvidenceKind,
    pub snp: Option<SnpConfig>,
}

impl AgentConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text as if it were read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: AgentToml = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| base.join(p);
        let status = match (raw.status.file, raw.status.url) {
            (Some(file), None) => StatusSource::File(resolve(&file)),
            (None, Some(url)) => StatusSource::Url(url),
            _ => {
                return Err(invalid(
                    "[status] needs exactly one of `file` or `url`".into(),
                ))
            }
        };
        let mut tpm = raw.tpm;
        check_pcr_choice(tpm.measured_pcr, &tpm.firmware_pcrs).map_err(invalid)?;
        tpm.ek_intermediates = tpm.ek_intermediates.as_deref().map(resolve);
        tpm.persistent_handles()
            .check()
            .map_err(|e| invalid(format!("[tpm] {e}")))?;
        tpm.firmware_event_log = tpm.firmware_event_log.as_deref().map(resolve);
        tpm.ek_certificate_file = tpm.ek_certificate_file.as_deref().map(resolve);
        if tpm.ek_certificate_file.is_some() && tpm.ek_without_certificate.is_some() {
            return Err(invalid(
                "[tpm] ek_certificate_file and ek_without_certificate exclude each other".into(),
            ));
        }
        if tpm.pcr_banks.is_empty() || tpm.key_algorithms.is_empty() {
            return Err(invalid(
                "[tpm] pcr_banks and key_algorithms must name at least one choice".into(),
            ));
        }
        let heartbeat = raw.heartbeat;
        if heartbeat.interval_seconds == 0
            || heartbeat.timeout_seconds == 0
            || heartbeat.spool_capacity == 0
        {
            return Err(invalid(
                "[heartbeat] interval_seconds, timeout_seconds and spool_capacity must be positive"
                    .into(),
            ));
        }
        // A heartbeat still waiting when the next one is due would overlap it, and one
        // waiting longer than the spec allows hides an outage.
        if heartbeat.timeout_seconds > MAX_HEARTBEAT_TIMEOUT_SECONDS
            || heartbeat.timeout_seconds >= heartbeat.interval_seconds
        {
            return Err(ConfigError::HeartbeatTimeout {
                path: path.to_path_buf(),
                timeout_seconds: heartbeat.timeout_seconds,
                interval_seconds: heartbeat.interval_seconds,
            });
        }
        let ledger = raw.ledger.map(|l| LedgerConnection {
            endpoint: l.endpoint,
            tls: TlsFiles {
                ca: l.ca,
                cert: l.cert,
                key: l.key,
            }
            .resolve(base),
        });
        let mut snp = raw.snp;
        if let Some(snp) = &mut snp {
            if let Some(sim) = &mut snp.simulation {
                sim.pki_dir = resolve(&sim.pki_dir);
            }
            snp.vcek_cache = snp.vcek_cache.as_deref().map(resolve);
            snp.kds_ca = snp.kds_ca.as_deref().map(resolve);
            snp.tsm_report_dir = resolve(&snp.tsm_report_dir);
            if snp.device != default_snp_device() {
                return Err(invalid(format!(
                    "snp.device {:?}: only {} is supported",
                    snp.device,
                    default_snp_device()
                )));
            }
        }
        if raw.evidence != EvidenceKind::Tpm && snp.is_none() {
            return Err(invalid(format!(
                "evidence = {:?} needs an [snp] section",
                raw.evidence.name()
            )));
        }
        Ok(AgentConfig {
            state_dir: resolve(&raw.state_dir),
            policy_kernel: PolicyKernelFiles {
                policy: resolve(&raw.policy_kernel.policy),
                config_files: raw
                    .policy_kernel
                    .config_files
                    .iter()
                    .map(|p| resolve(p))
                    .collect(),
            },
            status,
            tpm,
            ledger,
            heartbeat,
            evidence: raw.evidence,
            snp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads_with_paths_resolved() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/agent.toml"
        ));
        let config = AgentConfig::load(path).unwrap();
        assert_eq!(config.tpm.measured_pcr, 13);
        assert_eq!(config.tpm.pcr_banks, [HashAlg::Sha384, HashAlg::Sha256]);
        assert_eq!(config.tpm.key_algorithms, SigningAlgorithm::ALL);
        assert_eq!(config.tpm.ek_source_kind(), EkSourceKind::Nv);
        assert!(config.policy_kernel.policy.exists());
        assert!(matches!(config.status, StatusSource::File(ref p) if p.exists()));
    }

    #[test]
    fn one_bank_or_a_preference() {
        let p = Path::new("/x/agent.toml");
        let base =
            "state_dir = \"s\"\n[policy_kernel]\npolicy = \"p.toml\"\n[status]\nfile = \"a\"\n";
        let one = AgentConfig::parse(&format!("{base}[tpm]\npcr_bank = \"sha256\"\n"), p).unwrap();
        assert_eq!(one.tpm.pcr_banks, [HashAlg::Sha256]);
        let text = format!(
            "{base}[tpm]\npcr_banks = [\"sha256\", \"sha384\"]\n\
             key_algorithms = [\"ecdsa-p256\", \"rsassa-2048\"]\n\
             ek_without_certificate = \"ecc-p256\"\n"
        );
        let many = AgentConfig::parse(&text, p).unwrap();
        assert_eq!(many.tpm.pcr_banks, [HashAlg::Sha256, HashAlg::Sha384]);
        // SHA-512 is a hash attestor knows (the P-521 EK's), never a bank it quotes.
        for banks in [
            "pcr_bank = \"sha512\"",
            "pcr_banks = [\"sha384\", \"sha512\"]",
        ] {
            let err = AgentConfig::parse(&format!("{base}[tpm]\n{banks}\n"), p).unwrap_err();
            assert!(
                err.to_string()
                    .contains("\"sha512\" is not a PCR bank attestor quotes"),
                "{err}"
            );
        }
        assert_eq!(
            many.tpm.key_algorithms,
            [SigningAlgorithm::EcdsaP256, SigningAlgorithm::Rsassa2048]
        );
        assert_eq!(
            many.tpm.ek_source_kind(),
            EkSourceKind::Uncertified(EkTemplate::EccP256)
        );
        let file = AgentConfig::parse(
            &format!("{base}[tpm]\nek_certificate_file = \"ek.pem\"\n"),
            p,
        )
        .unwrap();
        assert_eq!(
            file.tpm.ek_source_kind(),
            EkSourceKind::File(Path::new("/x/ek.pem"))
        );
    }

    #[test]
    fn keys_are_resident_by_default_only_behind_a_resource_manager() {
        let mut tpm = TpmConfig::default();
        assert!(tpm.persistent_keys_for("device:/dev/tpmrm0"));
        assert!(tpm.persistent_keys_for("tabrmd:bus_type=system"));
        assert!(!tpm.persistent_keys_for("device:/dev/tpm0"));
        assert!(!tpm.persistent_keys_for("swtpm:host=127.0.0.1,port=2321"));
        tpm.persistent_keys = Some(true);
        assert!(tpm.persistent_keys_for("swtpm:port=2321"));
        tpm.persistent_keys = Some(false);
        assert!(!tpm.persistent_keys_for("device:/dev/tpmrm0"));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let p = Path::new("/x/agent.toml");
        let base = "state_dir = \"s\"\n[policy_kernel]\npolicy = \"p.toml\"\n";
        for (text, needle) in [
            ("garbage = [", "invalid"),
            (&format!("{base}[status]\n") as &str, "exactly one"),
            (
                &format!("{base}[status]\nfile = \"a\"\nurl = \"http://127.0.0.1/\"\n"),
                "exactly one",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\nmeasured_pcr = 23\n"),
                "reset",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\npcr_bank = \"sha1\"\n"),
                "invalid",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\nsurprise = 1\n"),
                "invalid",
            ),
            (
                &format!("evidence = \"snp\"\n{base}[status]\nfile = \"a\"\n"),
                "needs an [snp] section",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[snp]\ndevice = \"/dev/sev\"\n"),
                "only /dev/sev-guest",
            ),
            (
                &format!("evidence = \"sgx\"\n{base}[status]\nfile = \"a\"\n"),
                "invalid",
            ),
            (
                &format!(
                    "{base}[status]\nfile = \"a\"\n[tpm]\nek_certificate_file = \"ek.pem\"\n\
                     ek_without_certificate = \"rsa2048\"\n"
                ),
                "exclude each other",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\nek_without_certificate = \"dsa\"\n"),
                "invalid",
            ),
            (
                &format!(
                    "{base}[status]\nfile = \"a\"\n[tpm]\nkey_algorithms = [\"rsassa-1024\"]\n"
                ),
                "invalid",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\npcr_banks = []\n"),
                "at least one",
            ),
            (
                &format!(
                    "{base}[status]\nfile = \"a\"\n[tpm]\npcr_bank = \"sha256\"\n\
                     pcr_banks = [\"sha256\"]\n"
                ),
                "invalid",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\nak_handle = 0x81800000\n"),
                "outside the owner's persistent range",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[tpm]\nsrk_handle = 0x81000005\nak_handle = 0x81000005\n"),
                "both",
            ),
            (
                &format!("{base}[status]\nfile = \"a\"\n[snp]\ninterface = \"ioctl\"\n"),
                "invalid",
            ),
        ] {
            let err = AgentConfig::parse(text, p).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }
    #[test]
    fn the_heartbeat_timeout_is_at_most_15_s_and_shorter_than_the_interval() {
        let p = Path::new("/x/agent.toml");
        let with = |heartbeat: &str| {
            AgentConfig::parse(
                &format!(
                    "state_dir = \"s\"\n[policy_kernel]\npolicy = \"p.toml\"\n\
                     [status]\nfile = \"a\"\n[heartbeat]\n{heartbeat}\n"
                ),
                p,
            )
        };
        let defaults = with("").unwrap().heartbeat;
        assert_eq!(
            (defaults.interval_seconds, defaults.timeout_seconds),
            (60, 15)
        );
        assert_eq!(
            with("interval_seconds = 2\ntimeout_seconds = 1")
                .unwrap()
                .heartbeat
                .timeout_seconds,
            1
        );
        for (heartbeat, timeout, interval) in [
            ("timeout_seconds = 16", 16, 60),
            ("interval_seconds = 600\ntimeout_seconds = 30", 30, 600),
            ("interval_seconds = 10\ntimeout_seconds = 10", 10, 10),
            // The default timeout is as long as this interval.
            ("interval_seconds = 15", 15, 15),
            ("interval_seconds = 5\ntimeout_seconds = 9", 9, 5),
        ] {
            match with(heartbeat) {
                Err(ConfigError::HeartbeatTimeout {
                    timeout_seconds,
                    interval_seconds,
                    ..
                }) => assert_eq!((timeout_seconds, interval_seconds), (timeout, interval)),
                other => panic!("{heartbeat:?} gave {other:?}"),
            }
        }
        let message = with("timeout_seconds = 20").unwrap_err().to_string();
        assert!(message.contains("at most 15"), "{message}");
    }
}
