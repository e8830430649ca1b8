//! Signature checks through the `sev` crate (ARK → ASK → VCEK → report), and nothing of
//! trust: the caller passes the roots it pins, and decides what the facts returned mean.
//! The crate accepts any self-signed ARK and checks no validity, names or TCB; those
//! checks are here and in [`crate::verify`].

use std::time::SystemTime;

use sev::certs::snp::{Certificate, Chain, Verifiable};
use thiserror::Error;

use super::certs::{self, unix_seconds, CertError, VcekFacts};
use super::report::{Report, SIG_ALGO_ECDSA_P384_SHA384};
use super::roots::TrustRoots;

/// Why a chain or a report signature does not hold.
#[derive(Debug, Error)]
pub enum ChainError {
    #[error("{which} certificate does not parse: {reason}")]
    Parse { which: &'static str, reason: String },
    #[error("signature chain ARK -> ASK -> VCEK does not verify under the {origin}: {reason}")]
    Signatures { origin: String, reason: String },
    #[error(
        "{which} certificate is not valid now (valid {from} to {until}, now {now}, Unix seconds)"
    )]
    Expired {
        which: &'static str,
        from: u64,
        until: u64,
        now: u64,
    },
    #[error(transparent)]
    Vcek(#[from] CertError),
    #[error("report signature algorithm is {0}, only 1 (ECDSA P-384 SHA-384) is defined")]
    SignatureAlgorithm(u32),
    #[error("report signature does not verify under the VCEK: {0}")]
    ReportSignature(String),
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

/// Verifies the report's signature (over bytes [0, 0x2A0)) with an already verified VCEK.
pub fn verify_report_signature(vcek_der: &[u8], report: &Report) -> Result<(), ChainError> {
    let algo = report.fields().sig_algo;
    if algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(ChainError::SignatureAlgorithm(algo));
    }
    let vcek = Certificate::from_der(vcek_der).map_err(|e| ChainError::Parse {
        which: "VCEK",
        reason: e.to_string(),
    })?;
    (&vcek, report.fields())
        .verify()
        .map_err(|e| ChainError::ReportSignature(e.to_string()))
}
