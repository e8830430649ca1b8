//! JSON documents inside or beside a bundle: the in-toto Statement carrying the claims,
//! the policy kernel's runtime status, and the measurement event log (replayed).
#![no_main]

use attestor_verify::claims::Statement;
use attestor_agent::collect::RuntimeStatus;
use attestor_verify::evidence::tpm::eventlog::EventLog;
use attestor_verify::evidence::tpm::HashAlg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = Statement::from_json(data) {
        let json = statement.to_json().expect("a parsed statement serialises");
        Statement::from_json(&json).expect("round trip");
    }
    let _ = RuntimeStatus::from_json("fuzz", data);
    if let Ok(log) = serde_json::from_slice::<EventLog>(data) {
        for pcr in [13, 0, 23] {
            let _ = log.replay(pcr, HashAlg::Sha384);
            let _ = log.replay(pcr, HashAlg::Sha256);
        }
        let _ = log.last();
    }
});
