//! attestor-ledger's test binary: the stores (SQLite and PostgreSQL, TLS to the database)
//! and the sequencer, on both backends; the action runner.
// Harness items are `pub` for the test modules, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support;

mod incident_store;
mod ledger_actions;
mod ledger_sequencer;
mod ledger_store;
mod ledger_store_tls;
