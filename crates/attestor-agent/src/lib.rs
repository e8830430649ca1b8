//! attestor-agent: the attestation agent. It [`collect`]s the policy kernel's
//! configuration and status, measures it into the TPM and attests ([`attest`]; on an
//! SEV-SNP guest [`snp`]), spools each bundle durably ([`spool`]) and ships it to the
//! ledger over mutual TLS ([`client`]) every heartbeat ([`heartbeat`]).
#![forbid(unsafe_code)]

pub mod attest;
pub mod client;
pub mod collect;
pub mod config;
pub mod evidence_source;
pub mod heartbeat;
pub mod kds;
pub mod metrics;
pub mod snp;
pub mod spool;
pub mod state;

pub use heartbeat::{Attestor, AttestorConfig};
