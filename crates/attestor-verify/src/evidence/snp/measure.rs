//! Expected launch measurements, computed from the guest's images with the `sev` crate's
//! measurement module: reference values for a profile without running the guest.

use std::path::PathBuf;

use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};
use thiserror::Error;

/// Why a measurement could not be computed.
#[derive(Debug, Error)]
#[error("cannot compute the launch measurement: {0}")]
pub struct MeasureError(String);

/// What QEMU (or another VMM) launches.
#[derive(Debug, Clone)]
pub struct LaunchImages {
    /// OVMF firmware image (built with SNP support).
    pub ovmf: PathBuf,
    /// Kernel image, for a direct kernel boot.
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub append: Option<String>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// QEMU vCPU model, e.g. EPYC-Milan, EPYC-Genoa.
    pub vcpu_type: String,
    /// VMM: qemu, ec2 or krun.
    pub vmm: String,
    /// SEV_FEATURES the VMM enables (QEMU's default 1: SNP active).
    pub guest_features: u64,
}

/// The 48-byte launch digest the secure processor would report.
pub fn launch_measurement(images: &LaunchImages) -> Result<[u8; 48], MeasureError> {
    let err = |e: &dyn std::fmt::Display| MeasureError(e.to_string());
    let vcpu_type = CpuType::try_from(images.vcpu_type.as_str()).map_err(|e| err(&e))?;
    let vmm_type: VMMType = images.vmm.parse().map_err(|e| err(&e))?;
    let digest = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: images.vcpus,
        vcpu_type,
        ovmf_file: images.ovmf.clone(),
        guest_features: GuestFeatures(images.guest_features),
        kernel_file: images.kernel.clone(),
        initrd_file: images.initrd.clone(),
        append: images.append.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(vmm_type),
    })
    .map_err(|e| err(&e))?;
    hex::decode(digest.get_hex_ld())
        .ok()
        .and_then(|d| <[u8; 48]>::try_from(d).ok())
        .ok_or_else(|| MeasureError("the crate returned a digest that is not 48 bytes".into()))
}
