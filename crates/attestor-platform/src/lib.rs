//! attestor-platform: the only crate that talks to hardware. [`tpm`] holds every
//! tss-esapi call (extend, PCR reads, EK/AK, the PCR-sealed key, certify, sign, quote,
//! keys kept resident under persistent handles); [`snp`] the SEV-SNP guest's secure
//! processor behind one trait, as the kernel's configfs-tsm reports, the real
//! `/dev/sev-guest` device and a faithful simulation (for tests and demos), and the
//! signing key sealed under its derived key. What either returns is parsed and judged by
//! `attestor-verify`, never trusted here.
#![forbid(unsafe_code)]

pub mod snp;
pub mod tpm;
