//! attestor: runtime attestation with a hardware root of trust.
//!
//! Data flows one way: [`collect`] reads the policy kernel's configuration and status,
//! [`agent`] measures it into the TPM and builds [`claims`], signs them as a [`dsse`]
//! envelope with a hardware-sealed key, binds a quote to that envelope ([`evidence`]) and
//! packs everything into a [`bundle`]; [`verify`] decides whether a bundle is trusted,
//! against a firmware [`profiles`] entry.

pub mod agent;
pub mod bundle;
pub mod cbor;
pub mod claims;
pub mod collect;
pub mod config;
pub mod dsse;
pub mod encoding;
pub mod evidence;
pub mod failpoint;
pub mod gate;
pub mod ledger;
pub mod logging;
pub mod ops;
pub mod profiles;
pub mod tls;
pub mod verify;

pub use agent::heartbeat::{Attestor, AttestorConfig};
