//! The VCEK cache: certificates by (product, chip, TCB), one DER file each, filled by the
//! agent (from the host's certificate table or AMD's key distribution service) and read by
//! the verifier. It holds only certificates, which the verifier checks against pinned
//! roots, so a poisoned cache cannot forge trust.

use std::path::{Path, PathBuf};

use super::certs::{canonical_der, Tcb};
use super::roots::Product;
use crate::fs::{write_atomically, WriteError};

/// A VCEK larger than this is not one (they are about 1.4 KiB).
pub const MAX_VCEK_BYTES: u64 = 16 * 1024;

/// The KDS URL of the VCEK for a chip at a TCB (AMD spec 57230, "VCEK certificate"):
/// Turin's hwID is the chip id's first 8 bytes, and its TCB has an FMC SPL.
pub fn vcek_url(base: &str, product: Product, chip_id: &[u8], tcb: &Tcb) -> String {
    let (hw_id, fmc) = match product {
        Product::Turin => (
            chip_id.get(..8).unwrap_or(chip_id),
            format!("fmcSPL={}&", tcb.fmc.unwrap_or(0)),
        ),
        Product::Milan | Product::Genoa => (chip_id, String::new()),
    };
    format!(
        "{}/vcek/v1/{}/{}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        base.trim_end_matches('/'),
        product.kds_name(),
        hex::encode(hw_id),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    )
}

/// VCEK certificates by (product, chip, TCB), one DER file each.
#[derive(Debug, Clone)]
pub struct VcekCache {
    dir: PathBuf,
}

impl VcekCache {
    /// The cache in `dir`, which [`VcekCache::put`] creates when needed.
    pub fn new(dir: impl Into<PathBuf>) -> VcekCache {
        VcekCache { dir: dir.into() }
    }

    /// File a VCEK for this chip and TCB is cached in.
    pub fn path(&self, product: Product, chip_id: &[u8], tcb: &Tcb) -> PathBuf {
        // 64 bytes of hex would make long names; 16 bytes of chip id are unique enough to
        // name a file, and the verifier compares the full hwID anyway.
        let chip = hex::encode(chip_id.get(..16).unwrap_or(chip_id));
        let fmc = tcb.fmc.map(|f| format!("{f}-")).unwrap_or_default();
        self.dir.join(format!(
            "{}-{chip}-{fmc}{}-{}-{}-{}.der",
            product.name(),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        ))
    }

    /// The cached VCEK, if there is one that parses as a certificate.
    pub fn get(&self, product: Product, chip_id: &[u8], tcb: &Tcb) -> Option<Vec<u8>> {
        let path = self.path(product, chip_id, tcb);
        let size = std::fs::metadata(&path).ok()?.len();
        if size > MAX_VCEK_BYTES {
            return None;
        }
        canonical_der(&std::fs::read(path).ok()?).ok()
    }

    /// Caches a VCEK (written atomically).
    pub fn put(
        &self,
        product: Product,
        chip_id: &[u8],
        tcb: &Tcb,
        der: &[u8],
    ) -> Result<(), WriteError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| WriteError {
            step: "create",
            path: self.dir.clone(),
            source,
        })?;
        write_atomically(&self.path(product, chip_id, tcb), der)
    }

    /// The directory holding the cached files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
