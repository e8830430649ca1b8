//! The secure processor through the kernel's configfs-tsm report interface (Linux 6.7+,
//! `Documentation/ABI/testing/configfs-tsm`), which current kernels prefer to the
//! `/dev/sev-guest` ioctls.
//!
//! A report entry is a configfs directory under `/sys/kernel/config/tsm/report`: writing
//! `privlevel` (the VMPL) and the 64-byte `inblob` (REPORT_DATA) configures it, reading
//! `outblob` makes the kernel fetch the report (`auxblob` is the host's GHCB certificate
//! table from the same request), and `generation` counts every write. Any process may write
//! the same entry, so a request counts only if `generation` moved by exactly our two writes
//! between before and after; otherwise it is repeated.
//!
//! configfs-tsm has no MSG_KEY_REQ: derived keys (the sealed signing key of `evidence =
//! "snp"`) still come from `/dev/sev-guest`, opened when a key is first asked for.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::device::SevGuestDevice;
use super::{DeviceError, ExtendedReport, SecureProcessor};
use attestor_verify::evidence::snp::certs::{parse_cert_table, MAX_TABLE_BYTES};

/// Where the kernel exposes configfs-tsm report entries.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";
/// The entry attestor uses, created when missing (a systemd unit may create it ahead and
/// hand it to the agent's user; see deploy/systemd).
pub const ENTRY_NAME: &str = "attestor";
/// The `provider` of SEV-SNP guests (the sev-guest module's name).
pub const SEV_GUEST_PROVIDER: &str = "sev_guest";
/// Requests repeated while other writers keep changing the entry.
pub const ATTEMPTS: usize = 8;
/// REPORT_DATA's length: what configfs-tsm's sev_guest provider requires of `inblob`.
const INBLOB_LEN: usize = 64;
/// Where REPORT_DATA and VMPL sit in an attestation report (SEV-SNP ABI).
const REPORT_DATA_AT: usize = 0x50;
const VMPL_AT: usize = 0x30;
/// ENXIO: configfs-tsm exists but no provider is registered.
const ENXIO: i32 = 6;

/// Where a configfs-tsm processor gets derived keys from.
pub enum KeySource {
    /// `/dev/sev-guest`, opened on first use.
    SevGuest,
    /// Another processor of the same launch (tests: the simulation).
    Processor(Box<dyn SecureProcessor>),
}

/// A configfs-tsm report entry of an SEV-SNP guest.
pub struct ConfigfsTsm {
    entry: PathBuf,
    privlevel_floor: u32,
    keys: KeySource,
}

impl ConfigfsTsm {
    /// Opens (creating it if needed) the attestor entry under `report_dir` and checks that
    /// its provider is SEV-SNP's.
    pub fn open(report_dir: &Path, keys: KeySource) -> Result<ConfigfsTsm, DeviceError> {
        let entry = report_dir.join(ENTRY_NAME);
        match std::fs::create_dir(&entry) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(DeviceError::NoTsm(report_dir.to_path_buf()))
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(DeviceError::Permission(entry.display().to_string()))
            }
            Err(e) if e.raw_os_error() == Some(ENXIO) => {
                return Err(DeviceError::NoTsmProvider(report_dir.to_path_buf()))
            }
            Err(source) => {
                return Err(DeviceError::Tsm {
                    action: "create",
                    path: entry,
                    source,
                })
            }
        }
        let tsm = ConfigfsTsm {
            privlevel_floor: 0,
            entry,
            keys,
        };
        let provider = tsm.read_text("provider")?;
        if provider != SEV_GUEST_PROVIDER {
            return Err(DeviceError::TsmProvider {
                path: tsm.entry.clone(),
                found: provider,
            });
        }
        let privlevel_floor = tsm.read_number("privlevel_floor")? as u32;
        Ok(ConfigfsTsm {
            privlevel_floor,
            ..tsm
        })
    }

    /// The report entry's directory.
    pub fn entry(&self) -> &Path {
        &self.entry
    }

    fn attr(&self, name: &str) -> PathBuf {
        self.entry.join(name)
    }

    fn io_error(&self, action: &'static str, name: &str, source: std::io::Error) -> DeviceError {
        DeviceError::Tsm {
            action,
            path: self.attr(name),
            source,
        }
    }

    /// Reads a blob attribute, refusing more than a certificate table may hold.
    fn read_blob(&self, name: &str) -> Result<Vec<u8>, DeviceError> {
        let mut out = Vec::new();
        File::open(self.attr(name))
            .and_then(|f| f.take(MAX_TABLE_BYTES as u64 + 1).read_to_end(&mut out))
            .map_err(|e| self.io_error("read", name, e))?;
        if out.len() > MAX_TABLE_BYTES {
            return Err(DeviceError::TsmOversized {
                path: self.attr(name),
                limit: MAX_TABLE_BYTES,
            });
        }
        Ok(out)
    }

    fn read_text(&self, name: &str) -> Result<String, DeviceError> {
        let bytes = self.read_blob(name)?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    fn read_number(&self, name: &str) -> Result<u64, DeviceError> {
        let text = self.read_text(name)?;
        text.parse().map_err(|_| DeviceError::TsmNotANumber {
            path: self.attr(name),
            found: text,
        })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), DeviceError> {
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.attr(name))
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| self.io_error("write", name, e))
    }

    /// One request: Ok(None) when another writer changed the entry meanwhile.
    fn request(&self, report_data: &[u8; 64], vmpl: u32) -> Result<Option<Blobs>, DeviceError> {
        let before = self.read_number("generation")?;
        self.write("privlevel", format!("{vmpl}\n").as_bytes())?;
        self.write("inblob", report_data)?;
        let report = self.read_blob("outblob")?;
        let table = self.read_blob("auxblob")?;
        let after = self.read_number("generation")?;
        Ok((after == before.wrapping_add(2)).then_some(Blobs { report, table }))
    }
}

/// What one request read: `outblob` and `auxblob`.
struct Blobs {
    report: Vec<u8>,
    table: Vec<u8>,
}

impl SecureProcessor for ConfigfsTsm {
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
        vmpl: u32,
    ) -> Result<ExtendedReport, DeviceError> {
        if vmpl < self.privlevel_floor {
            return Err(DeviceError::TsmPrivlevel {
                vmpl,
                floor: self.privlevel_floor,
            });
        }
        for _ in 0..ATTEMPTS {
            let Some(Blobs { report, table }) = self.request(&report_data, vmpl)? else {
                continue;
            };
            // The generation says no one else wrote; a report for other input would mean
            // a provider that does not do what it says.
            if report.get(REPORT_DATA_AT..REPORT_DATA_AT + INBLOB_LEN) != Some(&report_data[..])
                || report.get(VMPL_AT..VMPL_AT + 4) != Some(&vmpl.to_le_bytes()[..])
            {
                return Err(DeviceError::TsmReportMismatch(self.attr("outblob")));
            }
            // No certificates: the kernel leaves auxblob empty.
            let certs = if table.is_empty() {
                Vec::new()
            } else {
                parse_cert_table(&table)?
            };
            return Ok(ExtendedReport { report, certs });
        }
        Err(DeviceError::TsmContended {
            path: self.entry.clone(),
            attempts: ATTEMPTS,
        })
    }

    fn sealing_key(&mut self) -> Result<[u8; 32], DeviceError> {
        if let KeySource::Processor(p) = &mut self.keys {
            return p.sealing_key();
        }
        let mut device = SevGuestDevice::open().map_err(|e| DeviceError::NoDerivedKeys {
            source: Box::new(e),
        })?;
        let key = device.sealing_key()?;
        self.keys = KeySource::Processor(Box::new(device));
        Ok(key)
    }
}
