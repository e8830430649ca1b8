//! attestor-net: what the agent and the ledger share at run time. Mutual TLS 1.3 configs
//! and the quick-start PKI ([`tls`]), the one HTTP/1.1 client ([`http`]), the plain-HTTP
//! operations listener ([`ops`]) and structured JSON logs and
//! submission stage timings through `tracing` ([`logging`]).
#![forbid(unsafe_code)]

pub mod http;
pub mod logging;
pub mod ops;
pub mod shutdown;
pub mod tls;
