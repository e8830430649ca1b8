//! A software stand-in for the SEV-SNP secure processor, for tests and the demo.
//!
//! It emits reports laid out byte for byte as the SEV-SNP ABI specifies (written here
//! from the specification's offsets, not with the `sev` crate's encoder, so the crate's
//! parser checks this code and the real Milan vector checks the crate), signed by a test
//! VCEK whose certificate chains to a test ASK and ARK (`scripts/make-snp-sim-pki.sh`).
//! Derived keys depend on the launch measurement and policy, as the real ones do.
//!
//! What it does not prove: that a real processor would launch this guest, that the
//! measurement matches any image, or anything about confidentiality. Its roots are trusted
//! only by profiles that name them.
//!
//! [`configfs`] serves the same simulation as a configfs-tsm report entry.

pub mod configfs;

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use serde::Deserialize;

use super::{DeviceError, ExtendedReport, SecureProcessor};
use attestor_verify::evidence::snp::certs::{
    self, encode_cert_table, parse_cert_table, CertEntry, CertKind, VcekFacts,
};
use attestor_verify::evidence::snp::report::{REPORT_LEN, SIGNED_LEN, SIG_ALGO_ECDSA_P384_SHA384};
use attestor_verify::evidence::snp::roots::{one_cert, Product};

/// Guest policy of a default simulated launch: ABI 0.0, SMT allowed, reserved bit 17 set,
/// no debug, no migration agent.
pub const DEFAULT_POLICY: u64 = 0x3_0000;
/// Report version a simulated processor emits unless told otherwise (firmware 1.58+).
pub const DEFAULT_REPORT_VERSION: u32 = 5;

/// The simulation as configured in an agent's `[snp.simulation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationSettings {
    /// Directory holding the simulated chip's `vcek.der`, `vcek.key` (PKCS#8 PEM),
    /// `ask.pem` and `ark.pem`.
    pub pki_dir: PathBuf,
    /// Launch measurement of the simulated guest (48 bytes, hex): stands for the digest of
    /// its firmware, kernel, initrd and command line.
    pub measurement: String,
    /// Guest policy (SEV-SNP ABI bit layout).
    #[serde(default = "default_policy")]
    pub policy: u64,
    /// Report version to emit: 2, 3 or 5.
    #[serde(default = "default_version")]
    pub report_version: u32,
    /// Whether the simulated host returns a certificate table with the report.
    #[serde(default = "default_true")]
    pub host_provides_certificates: bool,
    /// Processor generation to simulate: its CPUID and TCB_VERSION layout. Turin needs
    /// a chip whose VCEK has an 8-byte hwID and an fmcSPL (`examples/snp-sim-turin`).
    #[serde(default = "default_product")]
    pub product: Product,
}

fn default_product() -> Product {
    Product::Milan
}

fn default_policy() -> u64 {
    DEFAULT_POLICY
}
fn default_version() -> u32 {
    DEFAULT_REPORT_VERSION
}
fn default_true() -> bool {
    true
}

/// A simulated chip: its VCEK (key and certificate) and the test ASK and ARK above it.
pub struct SimulatedChip {
    vcek_key: EcdsaKeyPair,
    /// HMAC key standing in for the chip secret that derived keys come from.
    derivation_root: hmac::Key,
    pub vcek: Vec<u8>,
    pub ask: Vec<u8>,
    pub ark: Vec<u8>,
    pub facts: VcekFacts,
}

impl SimulatedChip {
    /// Loads a chip from a PKI directory made by `scripts/make-snp-sim-pki.sh`.
    pub fn load(pki_dir: &Path) -> Result<SimulatedChip, DeviceError> {
        let read = |name: &str| {
            let path = pki_dir.join(name);
            std::fs::read(&path).map_err(|source| DeviceError::SimulationRead { path, source })
        };
        let cert = |file: &'static str| {
            one_cert(&read(file)?).map_err(|source| DeviceError::SimulationCert { file, source })
        };
        let key_pem = read("vcek.key")?;
        let (label, pkcs8) =
            der::pem::decode_vec(&key_pem).map_err(|e| DeviceError::SimulationPem {
                file: "vcek.key",
                source: e.into(),
            })?;
        if label != "PRIVATE KEY" {
            return Err(DeviceError::Simulation(format!(
                "vcek.key holds {label:?}, expected a PKCS#8 PRIVATE KEY"
            )));
        }
        let vcek_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8).map_err(
            |source| DeviceError::SimulationKey {
                file: "vcek.key",
                source,
            },
        )?;
        let vcek = read("vcek.der")?;
        let facts = certs::vcek_facts(&vcek)?;
        if facts.public_key_sec1 != vcek_key.public_key().as_ref() {
            return Err(DeviceError::Simulation(
                "vcek.key is not the key of vcek.der".into(),
            ));
        }
        Ok(SimulatedChip {
            derivation_root: hmac::Key::new(hmac::HMAC_SHA384, &pkcs8),
            vcek_key,
            ask: cert("ask.pem")?,
            ark: cert("ark.pem")?,
            vcek,
            facts,
        })
    }
}

/// What the simulated hypervisor launched: the values a real report takes from launch.
#[derive(Debug, Clone)]
pub struct SimulatedLaunch {
    pub measurement: [u8; 48],
    pub policy: u64,
    pub report_version: u32,
    pub host_data: [u8; 32],
    pub host_provides_certificates: bool,
    pub product: Product,
}

impl SimulatedLaunch {
    /// The launch an agent's settings describe.
    pub fn from_settings(s: &SimulationSettings) -> Result<SimulatedLaunch, DeviceError> {
        let measurement = hex::decode(&s.measurement)
            .ok()
            .and_then(|m| <[u8; 48]>::try_from(m).ok())
            .ok_or_else(|| DeviceError::Simulation("measurement must be 48 bytes of hex".into()))?;
        Ok(SimulatedLaunch {
            measurement,
            policy: s.policy,
            report_version: s.report_version,
            host_data: [0; 32],
            host_provides_certificates: s.host_provides_certificates,
            product: s.product,
        })
    }
}

/// The simulated secure processor of one launched guest.
pub struct SimulatedProcessor {
    chip: SimulatedChip,
    launch: SimulatedLaunch,
    report_id: [u8; 32],
}

impl SimulatedProcessor {
    /// A guest launched on `chip` as `launch` says; each launch gets its own report id.
    pub fn new(chip: SimulatedChip, launch: SimulatedLaunch) -> Result<Self, DeviceError> {
        if ![2, 3, 5].contains(&launch.report_version) {
            return Err(DeviceError::Simulation(format!(
                "report version {} is not simulated (2, 3, 5)",
                launch.report_version
            )));
        }
        let mut report_id = [0u8; 32];
        SystemRandom::new()
            .fill(&mut report_id)
            .map_err(|_| DeviceError::Simulation("no randomness for the report id".into()))?;
        Ok(SimulatedProcessor {
            chip,
            launch,
            report_id,
        })
    }

    /// Loads the chip and launch an agent's settings describe.
    pub fn from_settings(s: &SimulationSettings) -> Result<Self, DeviceError> {
        Self::new(
            SimulatedChip::load(&s.pki_dir)?,
            SimulatedLaunch::from_settings(s)?,
        )
    }

    /// The chip this guest runs on.
    pub fn chip(&self) -> &SimulatedChip {
        &self.chip
    }

    /// A signed report in the SEV-SNP ABI layout (offsets from the ABI's
    /// ATTESTATION_REPORT table).
    pub fn report(&self, report_data: [u8; 64], vmpl: u32) -> Result<Vec<u8>, DeviceError> {
        let launch = &self.launch;
        let facts = &self.chip.facts;
        let t = facts.tcb;
        // TCB_VERSION and CPUID (family, model, stepping) by generation. Milan and Genoa:
        // boot loader, TEE, 4 reserved, SNP, microcode; Turin: FMC, boot loader, TEE,
        // SNP, 3 reserved, microcode.
        let (tcb, cpuid) = match launch.product {
            Product::Milan => (
                [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode],
                [0x19, 0x01, 0x01],
            ),
            Product::Genoa => (
                [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode],
                [0x19, 0x11, 0x01],
            ),
            Product::Turin => (
                [
                    t.fmc.unwrap_or(0),
                    t.bootloader,
                    t.tee,
                    t.snp,
                    0,
                    0,
                    0,
                    t.microcode,
                ],
                [0x1A, 0x02, 0x01],
            ),
        };
        let mut r = vec![0u8; REPORT_LEN];
        put(&mut r, 0x00, &launch.report_version.to_le_bytes());
        put(&mut r, 0x04, &0u32.to_le_bytes()); // GUEST_SVN
        put(&mut r, 0x08, &launch.policy.to_le_bytes());
        put(&mut r, 0x30, &vmpl.to_le_bytes());
        put(&mut r, 0x34, &SIG_ALGO_ECDSA_P384_SHA384.to_le_bytes());
        put(&mut r, 0x38, &tcb); // CURRENT_TCB
        put(&mut r, 0x40, &1u64.to_le_bytes()); // PLATFORM_INFO: SMT enabled
        put(&mut r, 0x48, &0u32.to_le_bytes()); // KEY_INFO: signed by the VCEK, chip id not masked
        put(&mut r, 0x50, &report_data);
        put(&mut r, 0x90, &launch.measurement);
        put(&mut r, 0xC0, &launch.host_data);
        put(&mut r, 0x140, &self.report_id);
        put(&mut r, 0x160, &[0xFF; 32]); // REPORT_ID_MA: no migration agent
        put(&mut r, 0x180, &tcb); // REPORTED_TCB
        if launch.report_version >= 3 {
            put(&mut r, 0x188, &cpuid);
        }
        let mut chip_id = [0u8; 64];
        for (dst, src) in chip_id.iter_mut().zip(&facts.hw_id) {
            *dst = *src;
        }
        put(&mut r, 0x1A0, &chip_id);
        put(&mut r, 0x1E0, &tcb); // COMMITTED_TCB
        put(&mut r, 0x1E8, &[8, 55, 1]); // CURRENT build, minor, major: 1.55.8
        put(&mut r, 0x1EC, &[8, 55, 1]); // COMMITTED
        put(&mut r, 0x1F0, &tcb); // LAUNCH_TCB
                                  // Version 5's mitigation vectors (0x1F8, 0x200) stay zero: none required.
        let signed = r.get(..SIGNED_LEN).unwrap_or_default();
        let sig = self
            .chip
            .vcek_key
            .sign(&SystemRandom::new(), signed)
            .map_err(|_| DeviceError::Simulation("VCEK signing failed".into()))?;
        // Fixed r || s, big-endian, 48 bytes each; the report wants each little-endian in
        // a 72-byte field.
        let (rr, ss) = sig.as_ref().split_at(48);
        let le = |x: &[u8]| x.iter().rev().copied().collect::<Vec<u8>>();
        put(&mut r, 0x2A0, &le(rr));
        put(&mut r, 0x2A0 + 72, &le(ss));
        Ok(r)
    }

    /// The certificate table the simulated host returns, as the bytes a real host writes.
    pub fn cert_table(&self) -> Vec<u8> {
        encode_cert_table(&[
            CertEntry {
                kind: CertKind::Ark,
                data: self.chip.ark.clone(),
            },
            CertEntry {
                kind: CertKind::Ask,
                data: self.chip.ask.clone(),
            },
            CertEntry {
                kind: CertKind::Vcek,
                data: self.chip.vcek.clone(),
            },
        ])
    }
}

/// Writes `bytes` at offset `at` of a report being built (offsets are constants in range).
fn put(report: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = report.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl SecureProcessor for SimulatedProcessor {
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
        vmpl: u32,
    ) -> Result<ExtendedReport, DeviceError> {
        let certs = if self.launch.host_provides_certificates {
            parse_cert_table(&self.cert_table())?
        } else {
            Vec::new()
        };
        Ok(ExtendedReport {
            report: self.report(report_data, vmpl)?,
            certs,
        })
    }

    fn sealing_key(&mut self) -> Result<[u8; 32], DeviceError> {
        let mut msg = b"attestor/snp-sim/derived-key/v1\0".to_vec();
        msg.extend(self.launch.policy.to_le_bytes());
        msg.extend(self.launch.measurement);
        let tag = hmac::sign(&self.chip.derivation_root, &msg);
        let mut key = [0u8; 32];
        for (dst, src) in key.iter_mut().zip(tag.as_ref()) {
            *dst = *src;
        }
        Ok(key)
    }
}
