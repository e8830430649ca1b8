//! The root test binary's harness: the workspace's shared one ([`attestor_testkit`]:
//! swtpm, PostgreSQL, an operator's PKI, waiting), an agent on a private swtpm ([`agent`])
//! and a real `attestor ledger` process ([`ledger`]).
#![allow(dead_code)]

pub mod agent;
pub mod ledger;

pub use attestor_testkit::*;
