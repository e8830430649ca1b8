//! The real secure processor, through `/dev/sev-guest` (the `sev` crate's ioctls). Only
//! the device calls live here; everything around them is shared with the simulation.

use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
use sev::firmware::host::{CertTableEntry, CertType};

use super::{DeviceError, ExtendedReport, SecureProcessor};
use attestor_verify::evidence::snp::certs::{CertEntry, CertKind};

/// Where the Linux sev-guest driver exposes the secure processor.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// GUEST_FIELD_SELECT bits mixed into the sealing key: guest policy (bit 0) and launch
/// measurement (bit 3). Not the TCB, so a firmware update does not lose the key.
pub const SEALING_FIELDS: u64 = (1 << 0) | (1 << 3);

/// `/dev/sev-guest`, opened.
pub struct SevGuestDevice {
    firmware: Firmware,
}

impl SevGuestDevice {
    /// Opens the device, naming the cause when it cannot: not a guest, or no permission.
    pub fn open() -> Result<SevGuestDevice, DeviceError> {
        let path = SEV_GUEST_DEVICE.to_string();
        match Firmware::open() {
            Ok(firmware) => Ok(SevGuestDevice { firmware }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DeviceError::NotSnpGuest(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(DeviceError::Permission(path))
            }
            Err(source) => Err(DeviceError::Open { path, source }),
        }
    }
}

impl SecureProcessor for SevGuestDevice {
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
        vmpl: u32,
    ) -> Result<ExtendedReport, DeviceError> {
        let (report, table) = self
            .firmware
            .get_ext_report(None, Some(report_data), Some(vmpl))
            .map_err(|e| DeviceError::Refused {
                request: "an extended attestation report (SNP_GET_EXT_REPORT)",
                detail: e.to_string(),
            })?;
        Ok(ExtendedReport {
            report,
            certs: table.unwrap_or_default().into_iter().map(entry).collect(),
        })
    }

    fn sealing_key(&mut self) -> Result<[u8; 32], DeviceError> {
        // Message version 1: version 2 would require the launch mitigation vector.
        let request = DerivedKey::new(false, GuestFieldSelect(SEALING_FIELDS), 0, 0, 0, None);
        self.firmware
            .get_derived_key(Some(1), request)
            .map_err(|e| DeviceError::Refused {
                request: "a derived key (MSG_KEY_REQ)",
                detail: e.to_string(),
            })
    }
}

fn entry(e: CertTableEntry) -> CertEntry {
    let kind = match &e.cert_type {
        CertType::ARK => CertKind::Ark,
        CertType::ASK => CertKind::Ask,
        CertType::VCEK => CertKind::Vcek,
        CertType::VLEK => CertKind::Vlek,
        CertType::CRL => CertKind::Crl,
        CertType::Empty => CertKind::Other([0; 16]),
        CertType::OTHER(guid) => CertKind::Other(*guid.as_bytes()),
    };
    CertEntry {
        kind,
        data: e.data().to_vec(),
    }
}
