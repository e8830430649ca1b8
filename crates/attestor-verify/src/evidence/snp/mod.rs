//! AMD SEV-SNP evidence, as a verifier sees it (never a device): [`report`] (bytes →
//! fields, via the `sev` crate's parser), [`certs`] (VCEK facts, certificate tables),
//! [`roots`] (which ARK is pinned), [`chain`] (signature checks through the crate, cached
//! per VCEK), [`measure`] (expected launch digests) and [`vcek`] (the VCEK cache the
//! agent fills and the verifier reads).

pub mod certs;
pub mod chain;
pub mod measure;
pub mod report;
pub mod roots;
pub mod vcek;
