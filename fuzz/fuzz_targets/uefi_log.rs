//! The firmware (UEFI) event log an agent ships in its bundle: both layouts, the replay of
//! every bank, the data of every event as a UEFI variable and its signature lists (what
//! measured-boot appraisal reads), and the ExitBootServices completion.
#![no_main]

use attestor_verify::evidence::tpm::uefi_log::{self, extend_exit_boot_services, parse_signature_lists};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = uefi_log::parse(data) else {
        return;
    };
    for (bank, _) in &log.banks {
        if let Ok(pcrs) = log.replay(*bank) {
            if let Some(pcr5) = pcrs.get(&5) {
                let _ = extend_exit_boot_services(pcr5, *bank);
            }
        }
    }
    let _ = log.has_exit_boot_services();
    for event in &log.events {
        let _ = (event.startup_locality(), event.event_type.to_string());
        for (bank, _) in &log.banks {
            let _ = event.data_matches_digest(*bank);
        }
        if let Ok(variable) = event.variable() {
            if let Ok(entries) = parse_signature_lists(variable.data) {
                for entry in entries {
                    let _ = (entry.fingerprint(), entry.signature_type.to_string());
                }
            }
        }
    }
});
