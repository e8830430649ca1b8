//! Agent configuration (TOML). Relative paths are resolved against the config file's
//! directory, so a config and the files it names can move together.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::collect::StatusSource;
use attestor_net::tls::TlsFiles;
use attestor_platform::snp::sim::SimulationSettings;
use attestor_verify::evidence::snp::roots::Product;
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
}

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
    /// Bank that is quoted and that the sealed key's policy covers.
    #[serde(default = "default_bank")]
    pub pcr_bank: HashAlg,
    /// Firmware/boot PCRs quoted alongside the measured one, for the profile to check.
    #[serde(default = "default_firmware_pcrs")]
    pub firmware_pcrs: Vec<u8>,
    /// PEM file of EK certificate intermediates to ship in bundles (the TPM holds only the leaf).
    pub ek_intermediates: Option<PathBuf>,
    /// The firmware's UEFI event log to ship in bundles, usually
    /// `/sys/kernel/security/tpm0/binary_bios_measurements` (or a copy readable by the
    /// agent). Absent: no log (swtpm runs no firmware).
    pub firmware_event_log: Option<PathBuf>,
}

fn default_measured_pcr() -> u8 {
    DEFAULT_MEASURED_PCR
}
fn default_bank() -> HashAlg {
    HashAlg::Sha384
}
fn default_firmware_pcrs() -> Vec<u8> {
    (0..8).collect()
}

impl Default for TpmConfig {
    fn default() -> Self {
        TpmConfig {
            tcti: None,
            measured_pcr: DEFAULT_MEASURED_PCR,
            pcr_bank: default_bank(),
            firmware_pcrs: default_firmware_pcrs(),
            ek_intermediates: None,
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

/// SEV-SNP settings of the agent: the real device, or (only when named) the simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpConfig {
    /// The guest device; only the Linux driver's `/dev/sev-guest` is supported.
    #[serde(default = "default_snp_device")]
    pub device: String,
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
        tpm.firmware_event_log = tpm.firmware_event_log.as_deref().map(resolve);
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
        assert_eq!(config.tpm.pcr_bank, HashAlg::Sha384);
        assert!(config.policy_kernel.policy.exists());
        assert!(matches!(config.status, StatusSource::File(ref p) if p.exists()));
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
        ] {
            let err = AgentConfig::parse(text, p).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }
}
