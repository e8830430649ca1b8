//! The SEV-SNP guest's secure processor behind one trait, [`SecureProcessor`]: the
//! kernel's configfs-tsm report interface ([`configfs`]), the `/dev/sev-guest` device
//! ([`device`]), and a software stand-in ([`sim`]: reports in the exact ABI layout, signed
//! by a test VCEK chain, also served as a configfs-tsm tree). [`seal`] keeps the envelope signing key
//! at rest under the processor's measurement-bound derived key.

pub mod configfs;
pub mod device;
pub mod seal;
pub mod sim;

use std::path::PathBuf;

use attestor_verify::evidence::snp::certs::{CertEntry, CertError};
use attestor_verify::evidence::snp::roots::RootsError;
use thiserror::Error;

/// What a guest asks of its secure processor. The agent's code is the same above this
/// trait for real hardware and the simulation.
pub trait SecureProcessor {
    /// An attestation report carrying `report_data`, at `vmpl`, with the certificate
    /// table the host provides (possibly empty).
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
        vmpl: u32,
    ) -> Result<ExtendedReport, DeviceError>;

    /// A 32-byte key derived from the chip's VCEK-rooted secret, the launch measurement and
    /// the guest policy (MSG_KEY_REQ): the same for every launch of the same code under the
    /// same policy on this chip, and different otherwise.
    fn sealing_key(&mut self) -> Result<[u8; 32], DeviceError>;
}

/// A report and the certificates returned with it.
#[derive(Debug, Clone)]
pub struct ExtendedReport {
    /// The raw attestation report.
    pub report: Vec<u8>,
    /// The host's certificate table (VCEK and chain), possibly empty.
    pub certs: Vec<CertEntry>,
}

/// Why the secure processor (or its stand-in) did not answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error(
        "{0} does not exist: this is not an SEV-SNP guest, or the sev-guest driver is not \
         loaded (modprobe sev-guest)"
    )]
    NotSnpGuest(String),
    #[error("no permission to open {0}: run as root or grant this user access to the device")]
    Permission(String),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("the secure processor refused {request}: {detail}")]
    Refused {
        request: &'static str,
        detail: String,
    },
    #[error(
        "{0} does not exist: this kernel has no configfs-tsm (Linux 6.7+, configfs mounted \
         at /sys/kernel/config); use /dev/sev-guest (snp.interface = \"sev-guest\")"
    )]
    NoTsm(PathBuf),
    #[error(
        "configfs-tsm at {0} has no report provider: this is not an SEV-SNP guest, or the \
         sev-guest driver is not loaded (modprobe sev-guest)"
    )]
    NoTsmProvider(PathBuf),
    #[error("configfs-tsm entry {path} serves {found:?} reports, not SEV-SNP's \"sev_guest\"")]
    TsmProvider { path: PathBuf, found: String },
    #[error("configfs-tsm: cannot {action} {path}: {source}")]
    Tsm {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configfs-tsm: {path} holds more than {limit} bytes")]
    TsmOversized { path: PathBuf, limit: usize },
    #[error("configfs-tsm: {path} holds {found:?}, not a number")]
    TsmNotANumber { path: PathBuf, found: String },
    #[error("VMPL {vmpl} is below this guest's configfs-tsm privlevel_floor {floor}")]
    TsmPrivlevel { vmpl: u32, floor: u32 },
    #[error("configfs-tsm entry {path} kept changing under another writer ({attempts} attempts)")]
    TsmContended { path: PathBuf, attempts: usize },
    #[error("configfs-tsm returned a report ({0}) for other REPORT_DATA or VMPL than written")]
    TsmReportMismatch(PathBuf),
    #[error(
        "configfs-tsm cannot derive keys (it has no MSG_KEY_REQ); the sealed signing key \
         needs /dev/sev-guest as well: {source}"
    )]
    NoDerivedKeys { source: Box<DeviceError> },
    #[error("the host's certificate table is unusable: {0}")]
    CertTable(#[from] CertError),
    #[error("SNP simulation: {0}")]
    Simulation(String),
    #[error("SNP simulation: cannot read {path}: {source}")]
    SimulationRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SNP simulation: {file} is not PEM: {source}")]
    SimulationPem {
        file: &'static str,
        source: der::Error,
    },
    #[error("SNP simulation: {file} is not a usable P-384 key: {source}")]
    SimulationKey {
        file: &'static str,
        source: aws_lc_rs::error::KeyRejected,
    },
    #[error("SNP simulation: {file}: {source}")]
    SimulationCert {
        file: &'static str,
        source: RootsError,
    },
}
