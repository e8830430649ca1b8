//! attestor-ledger: verifies submissions, judges them, keeps them in a tamper-evident,
//! append-only log, answers audit queries, watches for gaps and raises alerts. It never
//! links a TPM library: evidence is checked with `attestor-verify` alone.
#![forbid(unsafe_code)]

pub mod actions;
pub mod alerts;
pub mod appraise;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod enforce;
pub mod enroll;
pub mod enrollment_ca;
pub mod failpoint;
pub mod incidents;
pub mod keyfiles;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod monitor;
pub mod server;
pub mod service;
pub mod store;
pub mod submission;
pub mod tiles;
pub mod witnessing;
