//! attestor-verify: everything a relying party needs to check attestor's evidence and log
//! on its own, without a TPM, a network stack or a database.
//!
//! - The attestation: the spec's [`claims`], deterministic [`cbor`], the [`dsse`] envelope,
//!   the [`bundle`] carrying it with its hardware [`evidence`] (TPM and SEV-SNP parsers,
//!   EK/VCEK chains), firmware [`profiles`], and the ordered [`checks`] that decide trust.
//! - The judgement: posture [`appraisal`] against a policy, and its standard signed form,
//!   the EAR ([`ear`]).
//! - The log: RFC 9162 trees and proofs, C2SP checkpoints and the key history ([`log`]),
//!   the leaf format ([`record`]), and client-side [`audit`] of what a ledger answers.
//! - Between agent and ledger: the messages ([`api`]), an agent's [`identity`], and the
//!   release-[`gate`] decision from a ledger's answers.
//!
//! Parsers bound their input and never panic; only [`checks`] decides trust.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod appraisal;
pub mod audit;
pub mod bundle;
pub mod cbor;
pub mod checks;
pub mod claims;
pub mod drift;
pub mod dsse;
pub mod ear;
pub mod encoding;
pub mod evidence;
pub mod fs;
pub mod gate;
pub mod identity;
pub mod log;
pub mod profiles;
pub mod record;
pub mod time;
