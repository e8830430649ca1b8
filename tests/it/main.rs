//! The one integration-test binary of the `attestor` package: everything that runs the
//! `attestor` command or needs several crates at once (agents on swtpm against a real
//! ledger process, the CLI, deployment files). One module per concern.
// Harness items are `pub` for the test modules, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support;

mod agent_persistent_keys;
mod ak_binding;
mod appraisal;
mod architecture;
mod attest_verify;
mod config_reference;
mod enforcement;
mod evidence_pack;
mod fuzz_fixtures;
mod incidents;
mod ledger_api;
mod ledger_backup;
mod ledger_cvm;
mod ledger_enroll;
mod ledger_replicas;
mod ledger_resources;
mod ledger_rotation;
mod ledger_security;
mod ledger_snp;
mod ledger_verify;
mod loadgen;
mod measured_boot;
mod monitoring;
mod outage;
mod pcr_reset_attack;
mod public_log;
mod real_hardware;
mod release_gate;
mod snp_configfs;
mod snp_kds;
mod snp_sim;
mod systemd_units;
mod tls;
