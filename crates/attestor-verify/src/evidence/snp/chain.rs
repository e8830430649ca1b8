//! Signature checks (ARK → ASK → VCEK through the `sev` crate, the report by aws-lc), and
//! nothing of trust: the caller passes the roots it pins, and decides what the facts
//! returned mean. The crate accepts any self-signed ARK and checks no validity, names or
//! TCB; those checks are here and in [`crate::checks`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use sev::certs::snp::{Certificate, Chain, Verifiable};
use sha2::{Digest, Sha384};
use thiserror::Error;

use super::certs::{self, unix_seconds, CertError, VcekFacts};
use super::report::{Report, SIG_ALGO_ECDSA_P384_SHA384};
use super::roots::TrustRoots;

/// Why a chain or a report signature does not hold.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A certificate does not parse.
    #[error("{which} certificate does not parse: {reason}")]
    Parse {
        /// `ARK`, `ASK` or `VCEK`.
        which: &'static str,
        /// The `sev` crate's reason.
        reason: String,
    },
    /// The ARK → ASK → VCEK signatures do not verify under the pinned roots.
    #[error("signature chain ARK -> ASK -> VCEK does not verify under the {origin}: {reason}")]
    Signatures {
        /// Which roots were pinned (AMD's for a product, or simulation roots).
        origin: String,
        /// The `sev` crate's reason.
        reason: String,
    },
    /// A certificate is expired or not yet valid.
    #[error(
        "{which} certificate is not valid now (valid {from} to {until}, now {now}, Unix seconds)"
    )]
    Expired {
        /// `ARK`, `ASK` or `VCEK`.
        which: &'static str,
        /// Its notBefore (Unix seconds).
        from: u64,
        /// Its notAfter (Unix seconds).
        until: u64,
        /// The time it was checked at (Unix seconds).
        now: u64,
    },
    /// A certificate's content is unusable: the VCEK's AMD extensions or key, or a
    /// validity that does not decode.
    #[error(transparent)]
    Vcek(#[from] CertError),
    /// The report's `sig_algo` is not ECDSA P-384/SHA-384; the value found.
    #[error("report signature algorithm is {0}, only 1 (ECDSA P-384 SHA-384) is defined")]
    SignatureAlgorithm(u32),
    /// The report's signature does not verify under the VCEK's key (or that key is not a
    /// P-384 point).
    #[error("report signature does not verify under the VCEK")]
    ReportSignature,
}

/// Verifies ARK (self-signed, must be the pinned one) → ASK → VCEK and the validity of
/// each at `now`; returns what the VCEK certifies.
pub fn verify_vcek(
    roots: &TrustRoots,
    vcek_der: &[u8],
    now: SystemTime,
) -> Result<VcekFacts, ChainError> {
    let parse = |which: &'static str, der: &[u8]| {
        Certificate::from_der(der).map_err(|e| ChainError::Parse {
            which,
            reason: e.to_string(),
        })
    };
    let chain = Chain {
        ca: sev::certs::snp::ca::Chain {
            ark: parse("ARK", &roots.ark)?,
            ask: parse("ASK", &roots.ask)?,
        },
        vek: parse("VCEK", vcek_der)?,
    };
    (&chain).verify().map_err(|e| ChainError::Signatures {
        origin: roots.origin.to_string(),
        reason: e.to_string(),
    })?;
    for (which, der) in [("ARK", &roots.ark), ("ASK", &roots.ask)] {
        let (from, until) = certs::validity(der)?;
        check_validity(which, from, until, now)?;
    }
    let facts = certs::vcek_facts(vcek_der)?;
    check_validity("VCEK", facts.not_before, facts.not_after, now)?;
    Ok(facts)
}

/// Chains verified by [`verify_vcek`], per VCEK and pinned root, so a verifier judging
/// many reports from the same chips pays the three RSA signature checks once per VCEK and
/// then only the report signature. Only a chain that verified is kept, with the validity
/// windows of its three certificates, which are checked again on every use. Bounded:
/// the oldest entry makes room for a new one.
#[derive(Debug)]
pub struct ChainCache {
    capacity: usize,
    entries: Mutex<CacheEntries>,
}

/// (SHA-384 of the VCEK DER, SHA-384 of the pinned ARK and ASK DER).
type ChainKey = ([u8; 48], [u8; 48]);

#[derive(Debug, Default)]
struct CacheEntries {
    verified: HashMap<ChainKey, VerifiedChain>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<ChainKey>,
}

#[derive(Debug, Clone)]
struct VerifiedChain {
    facts: VcekFacts,
    ark_validity: (SystemTime, SystemTime),
    ask_validity: (SystemTime, SystemTime),
}

/// Verified chains a [`ChainCache`] keeps unless told otherwise: a ledger's fleet of
/// chips times the TCB updates between restarts, at about 1.5 KiB each.
pub const DEFAULT_CHAIN_CACHE_CAPACITY: usize = 4096;

impl Default for ChainCache {
    fn default() -> Self {
        ChainCache::new(DEFAULT_CHAIN_CACHE_CAPACITY)
    }
}

impl ChainCache {
    /// A cache holding at most `capacity` verified chains (at least one).
    pub fn new(capacity: usize) -> ChainCache {
        ChainCache {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }

    /// [`verify_vcek`], skipping the signature checks for a chain verified before under
    /// the same roots.
    pub fn verify_vcek(
        &self,
        roots: &TrustRoots,
        vcek_der: &[u8],
        now: SystemTime,
    ) -> Result<VcekFacts, ChainError> {
        let key = chain_key(roots, vcek_der);
        let cached = self.lock().verified.get(&key).cloned();
        if let Some(chain) = cached {
            check_validity("ARK", chain.ark_validity.0, chain.ark_validity.1, now)?;
            check_validity("ASK", chain.ask_validity.0, chain.ask_validity.1, now)?;
            let f = &chain.facts;
            check_validity("VCEK", f.not_before, f.not_after, now)?;
            return Ok(chain.facts);
        }
        let facts = verify_vcek(roots, vcek_der, now)?;
        let chain = VerifiedChain {
            facts: facts.clone(),
            ark_validity: certs::validity(&roots.ark)?,
            ask_validity: certs::validity(&roots.ask)?,
        };
        let mut entries = self.lock();
        if entries.verified.insert(key, chain).is_none() {
            entries.order.push_back(key);
        }
        while entries.order.len() > self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.verified.remove(&oldest);
            }
        }
        Ok(facts)
    }

    /// Number of verified chains held.
    pub fn len(&self) -> usize {
        self.lock().verified.len()
    }

    /// Whether no chain is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        // The map is consistent after every statement: a panic elsewhere cannot tear it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn chain_key(roots: &TrustRoots, vcek_der: &[u8]) -> ChainKey {
    let mut root = Sha384::new();
    for der in [&roots.ark, &roots.ask] {
        root.update((der.len() as u64).to_be_bytes());
        root.update(der);
    }
    (Sha384::digest(vcek_der).into(), root.finalize().into())
}

fn check_validity(
    which: &'static str,
    from: SystemTime,
    until: SystemTime,
    now: SystemTime,
) -> Result<(), ChainError> {
    if now < from || now > until {
        return Err(ChainError::Expired {
            which,
            from: unix_seconds(from),
            until: unix_seconds(until),
            now: unix_seconds(now),
        });
    }
    Ok(())
}

/// Verifies the report's signature (over bytes [0, 0x2A0)) with an already verified VCEK:
/// ECDSA P-384 with SHA-384 by aws-lc, over the bytes and with the key the `sev` crate's
/// check takes (its certificate parsing and report re-encoding; its pure-Rust P-384 costs
/// several aws-lc verifications).
pub fn verify_report_signature(vcek_der: &[u8], report: &Report) -> Result<(), ChainError> {
    let algo = report.fields().sig_algo;
    if algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(ChainError::SignatureAlgorithm(algo));
    }
    let vcek = Certificate::from_der(vcek_der).map_err(|e| ChainError::Parse {
        which: "VCEK",
        reason: e.to_string(),
    })?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, vcek.public_key_sec1())
        .verify(report.signed_bytes(), &report.signature_p384_fixed())
        .map_err(|_| ChainError::ReportSignature)
}
