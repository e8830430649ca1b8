//! Operator-written TOML: the agent configuration, the ledger configuration and firmware
//! profiles. The first byte chooses the parser; paths resolve under a directory that does
//! not exist, so nothing outside the input is read.
#![no_main]

use std::path::Path;

use attestor_agent::config::AgentConfig;
use attestor_ledger::config::LedgerConfig;
use attestor_verify::profiles::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let dir = Path::new("/nonexistent/attestor-fuzz");
    match which % 3 {
        0 => {
            let _ = AgentConfig::parse(text, &dir.join("agent.toml"));
        }
        1 => {
            let _ = LedgerConfig::parse(text, &dir.join("ledger.toml"));
        }
        _ => {
            let _ = Profile::parse(text, &dir.join("profile.toml"));
        }
    }
});
