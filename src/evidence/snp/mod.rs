//! AMD SEV-SNP: the guest's secure processor as a root of trust.
//!
//! Verifier side (never touches a device): [`report`] (bytes → fields, via the `sev`
//! crate), [`certs`] (VCEK facts, certificate tables), [`roots`] (which ARK is pinned),
//! [`chain`] (signature checks through the crate). Guest side: the [`SecureProcessor`]
//! trait, with [`device`] (`/dev/sev-guest`) and [`sim`] (a software stand-in) behind it,
//! [`seal`] (the signing key at rest, under a measurement-bound derived key) and [`kds`]
//! (VCEK cache and AMD's key distribution service).

pub mod certs;
pub mod chain;
pub mod device;
pub mod kds;
pub mod measure;
pub mod report;
pub mod roots;
pub mod seal;
pub mod sim;

use thiserror::Error;

use certs::{CertEntry, CertError};

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
    pub report: Vec<u8>,
    pub certs: Vec<CertEntry>,
}

/// Why the secure processor (or its stand-in) did not answer.
#[derive(Debug, Error)]
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
    #[error("the host's certificate table is unusable: {0}")]
    CertTable(#[from] CertError),
    #[error("SNP simulation: {0}")]
    Simulation(String),
}
