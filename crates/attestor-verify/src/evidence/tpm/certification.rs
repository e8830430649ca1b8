//! Sealed-key certifications (the AK's TPM2_Certify signature) already verified, so a
//! verifier that sees an agent's unchanged certification with every attestation pays its
//! signature check once, as [`crate::evidence::certchain::ChainCache`] does for EK paths.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::keys::{KeyError, TpmSigningKey};

/// The AK's TPM2_Certify of a sealed key: the TPMS_ATTEST and the AK's TPMT_SIGNATURE over
/// it, as a bundle carries them.
#[derive(Debug, Clone, Copy)]
pub struct Certification<'a> {
    /// The marshalled TPMS_ATTEST, the signed message.
    pub attest: &'a [u8],
    /// The marshalled TPMT_SIGNATURE.
    pub signature: &'a [u8],
}

/// Certifications that passed, keyed by a SHA-256 over every input of the check (the AK
/// public area the key is parsed from, the sealed key's public area, the attest bytes and
/// the signature bytes), so a hit answers only for exactly the bytes that passed before.
/// Only a certification that passed is kept; a failure is checked again every time. A hit
/// saves the signature check only: what the certification says is checked on every use.
/// Bounded: the oldest entry makes room for a new one.
#[derive(Debug)]
pub struct CertificationCache {
    capacity: usize,
    entries: Mutex<Entries>,
    signatures_checked: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    verified: HashSet<[u8; 32]>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<[u8; 32]>,
}

/// Certifications a [`CertificationCache`] keeps unless told otherwise: one per agent's
/// sealed key (about 100 bytes each), for a fleet of this size.
pub const DEFAULT_CERTIFICATION_CACHE_CAPACITY: usize = 100_000;

impl Default for CertificationCache {
    fn default() -> Self {
        CertificationCache::new(DEFAULT_CERTIFICATION_CACHE_CAPACITY)
    }
}

impl CertificationCache {
    /// A cache holding at most `capacity` verified certifications (at least one).
    pub fn new(capacity: usize) -> CertificationCache {
        CertificationCache {
            capacity: capacity.max(1),
            entries: Mutex::default(),
            signatures_checked: AtomicU64::new(0),
        }
    }

    /// Runs `check`, the whole certification check, handing it the signature's outcome:
    /// `Ok` without checking when exactly these bytes passed `check` before, else the AK's
    /// signature over the certification checked now. The bytes are remembered only when
    /// both the signature and `check` passed.
    pub fn verify<T, E>(
        &self,
        ak_public: &[u8],
        sealed_public: &[u8],
        certification: Certification<'_>,
        check: impl FnOnce(Result<(), KeyError>) -> Result<T, E>,
    ) -> Result<T, E> {
        let key = certification_key(ak_public, sealed_public, &certification);
        if self.lock().verified.contains(&key) {
            return check(Ok(()));
        }
        self.signatures_checked.fetch_add(1, Ordering::Relaxed);
        let signature = TpmSigningKey::from_public(ak_public)
            .and_then(|ak| ak.verify_tpm_signature(certification.attest, certification.signature));
        let signature_verified = signature.is_ok();
        let checked = check(signature)?;
        if signature_verified {
            let mut entries = self.lock();
            if entries.verified.insert(key) {
                entries.order.push_back(key);
            }
            while entries.order.len() > self.capacity {
                if let Some(oldest) = entries.order.pop_front() {
                    entries.verified.remove(&oldest);
                }
            }
        }
        Ok(checked)
    }

    /// How many signature checks the cache could not answer and ran.
    pub fn signatures_checked(&self) -> u64 {
        self.signatures_checked.load(Ordering::Relaxed)
    }

    /// Number of verified certifications held.
    pub fn len(&self) -> usize {
        self.lock().verified.len()
    }

    /// Whether no certification is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The set is consistent after every statement: a panic elsewhere cannot tear it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn certification_key(
    ak_public: &[u8],
    sealed_public: &[u8],
    certification: &Certification<'_>,
) -> [u8; 32] {
    let mut key = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    // Length-prefixed, so no two different input tuples hash the same byte stream.
    for part in [
        ak_public,
        sealed_public,
        certification.attest,
        certification.signature,
    ] {
        key.update(&(part.len() as u64).to_be_bytes());
        key.update(part);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(key.finish().as_ref());
    digest
}
