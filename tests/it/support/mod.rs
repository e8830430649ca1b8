//! The root test binary's harness: the workspace's shared one ([`attestor_testkit`]:
//! swtpm, PostgreSQL, an operator's PKI, waiting), an agent on a private swtpm ([`agent`])
//! and a real `attestor ledger` process ([`ledger`]).
#![allow(dead_code)]

pub mod agent;
pub mod ledger;

pub use attestor_testkit::*;

/// A command's stdout then stderr, for assertion messages and matching.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
