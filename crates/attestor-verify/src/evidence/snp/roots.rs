//! Which ARK and ASK a verifier trusts: AMD's, as the `sev` crate carries them, by product;
//! or the simulation's, only where a profile names their files.

use std::path::PathBuf;

use thiserror::Error;

use crate::evidence::certchain;

/// An EPYC generation with SEV-SNP: fixes the report's TCB layout and AMD's roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// EPYC 7003 series (Zen 3).
    Milan,
    /// EPYC 9004 series (Zen 4).
    Genoa,
    /// EPYC 9005 series (Zen 5); its TCB adds an FMC SPL.
    Turin,
}

impl Product {
    /// Lowercase name, as in profiles and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "milan",
            Product::Genoa => "genoa",
            Product::Turin => "turin",
        }
    }

    /// The name AMD's key distribution service uses in its URLs.
    pub fn kds_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Parses `milan`, `genoa` or `turin`.
    pub fn parse(text: &str) -> Option<Product> {
        [Product::Milan, Product::Genoa, Product::Turin]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(text))
    }

    /// AMD's real ARK and ASK for this product.
    pub fn amd_roots(self) -> Result<TrustRoots, RootsError> {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let (ark, ask) = match self {
            Product::Milan => (milan::ARK, milan::ASK),
            Product::Genoa => (genoa::ARK, genoa::ASK),
            Product::Turin => (turin::ARK, turin::ASK),
        };
        Ok(TrustRoots {
            ark: one_cert(ark)?,
            ask: one_cert(ask)?,
            origin: RootsOrigin::Amd(self),
        })
    }
}

/// Where a profile's roots come from, so output and errors can say which are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootsOrigin {
    /// AMD's roots for the product, built in.
    Amd(Product),
    /// Test roots named by the profile (the SNP simulation's): never trusted by default.
    Simulation(PathBuf),
}

impl std::fmt::Display for RootsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootsOrigin::Amd(p) => write!(f, "AMD {} roots", p.kds_name()),
            RootsOrigin::Simulation(path) => write!(f, "simulation roots {}", path.display()),
        }
    }
}

/// The pinned ARK (trust anchor) and ASK (its intermediate), DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoots {
    /// The AMD Root Key certificate (DER): the trust anchor.
    pub ark: Vec<u8>,
    /// The AMD SEV Signing Key certificate (DER), which the ARK must have signed.
    pub ask: Vec<u8>,
    /// Where both come from, for output and errors.
    pub origin: RootsOrigin,
}

/// Why roots cannot be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RootsError {
    /// The PEM is not UTF-8 or its blocks are not certificates; why.
    #[error("root certificate PEM: {0}")]
    Pem(String),
    /// The PEM holds this many certificates, not exactly one.
    #[error("expected exactly one certificate, found {0}")]
    Count(usize),
}

/// The single certificate of a PEM file, as DER.
pub fn one_cert(pem: &[u8]) -> Result<Vec<u8>, RootsError> {
    let text = std::str::from_utf8(pem).map_err(|e| RootsError::Pem(e.to_string()))?;
    let mut ders = certchain::pem_to_der_all(text).map_err(|e| RootsError::Pem(e.to_string()))?;
    match ders.len() {
        1 => Ok(ders.remove(0)),
        n => Err(RootsError::Count(n)),
    }
}
