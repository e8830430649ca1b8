//! The ledger: verifies submissions and keeps them in a tamper-evident, append-only log.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod backup;
pub mod config;
pub mod dashboard;
pub mod enroll;
pub mod keyfiles;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod monitor;
pub mod record;
pub mod server;
pub mod service;
pub mod store;
pub mod verify;
