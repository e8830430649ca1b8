//! Where a VCEK comes from when the report's certificate table lacks it: a local cache,
//! filled from AMD's key distribution service (KDS). The cache holds only certificates,
//! which the verifier checks against pinned roots, so a poisoned cache cannot forge trust.

use std::path::{Path, PathBuf};

use super::certs::{canonical_der, Tcb};
use super::roots::Product;

/// AMD's key distribution service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";
/// A VCEK larger than this is not one (they are about 1.4 KiB).
const MAX_VCEK_BYTES: u64 = 16 * 1024;

/// The KDS URL of the VCEK for a chip at a TCB (AMD spec 57230, "VCEK certificate").
pub fn vcek_url(base: &str, product: Product, chip_id: &[u8], tcb: &Tcb) -> String {
    format!(
        "{}/vcek/v1/{}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        base.trim_end_matches('/'),
        product.kds_name(),
        hex::encode(chip_id),
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
    pub fn new(dir: impl Into<PathBuf>) -> VcekCache {
        VcekCache { dir: dir.into() }
    }

    /// File a VCEK for this chip and TCB is cached in.
    pub fn path(&self, product: Product, chip_id: &[u8], tcb: &Tcb) -> PathBuf {
        // 64 bytes of hex would make long names; 16 bytes of chip id are unique enough to
        // name a file, and the verifier compares the full hwID anyway.
        let chip = hex::encode(chip_id.get(..16).unwrap_or(chip_id));
        self.dir.join(format!(
            "{}-{chip}-{}-{}-{}-{}.der",
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
    ) -> Result<(), std::io::Error> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(product, chip_id, tcb);
        crate::agent::write_atomically(&path, der).map_err(|(_, e)| e)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
