//! PCR reset and re-extend of an old measurement, on a real swtpm: root on the host
//! changes the policy kernel's configuration, then tries to bring the measured PCR back
//! to the approved value so the sealed key signs again. The measured PCR cannot be reset
//! from locality 0, and re-extending the approved measurement on top of the drifted one
//! does not reproduce the approved value, so the agent cannot attest. The PCRs that *are*
//! resettable from locality 0 (16, 23) are refused as the measured PCR.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::agent::{tpm_ev, AgentFixture};
use attestor_agent::attest::AgentError;
use attestor_agent::config::{check_pcr_choice, RESETTABLE_PCRS};
use attestor_verify::checks::verify_bundle;
use attestor_verify::evidence::tpm::HashAlg;

fn tpm2(setup: &AgentFixture, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .env("TPM2TOOLS_TCTI", setup.tpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap_or_else(|e| panic!("{tool} (tpm2-tools) must be installed (scripts/test.sh): {e}"))
}

fn pcr_sha384(setup: &AgentFixture, pcr: u8) -> String {
    let out = tpm2(setup, "tpm2_pcrread", &[&format!("sha384:{pcr}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{pcr}: 0x")))
        .unwrap_or_else(|| panic!("no PCR {pcr} in {text}"));
    line.trim().to_ascii_lowercase()
}

#[test]
fn resetting_or_re_extending_the_measured_pcr_does_not_restore_the_approved_state() {
    let setup = AgentFixture::new();
    let approved = setup.attest();
    verify_bundle(&approved, &setup.profile, &setup.expect()).unwrap();
    let ev = tpm_ev(&approved);
    let approved_pcr = ev.pcrs[&13].to_ascii_lowercase();
    let approved_digest = ev.event_log.events[0].digests[&HashAlg::Sha384].clone();
    assert_eq!(pcr_sha384(&setup, 13), approved_pcr);

    // Root changes the configuration: the agent measures it and the sealed key refuses.
    std::fs::write(setup.kernel_config_file(), "workers = 64\n").unwrap();
    let err = setup
        .agent()
        .attest(&setup.kernel(), &setup.status(), b"")
        .unwrap_err();
    assert!(matches!(err, AgentError::Drift { pcr: 13, .. }), "{err}");
    let drifted_pcr = pcr_sha384(&setup, 13);
    assert_ne!(drifted_pcr, approved_pcr);

    // Attack 1: reset PCR 13 from locality 0, to replay the approved measurement from zero.
    let reset = tpm2(&setup, "tpm2_pcrreset", &["13"]);
    assert!(
        !reset.status.success(),
        "the TPM let locality 0 reset PCR 13"
    );
    assert_eq!(pcr_sha384(&setup, 13), drifted_pcr, "PCR 13 changed");

    // Attack 2: extend the approved measurement again and restore the approved files.
    let extend = tpm2(
        &setup,
        "tpm2_pcrextend",
        &[&format!("13:sha384={approved_digest}")],
    );
    assert!(
        extend.status.success(),
        "{}",
        String::from_utf8_lossy(&extend.stderr)
    );
    assert_ne!(pcr_sha384(&setup, 13), approved_pcr);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-kernel/kernel.toml");
    std::fs::write(setup.kernel_config_file(), std::fs::read(shipped).unwrap()).unwrap();
    let refused = setup.agent().attest(&setup.kernel(), &setup.status(), b"");
    assert!(
        matches!(
            refused,
            Err(AgentError::Drift { .. } | AgentError::EventLogMismatch { .. })
        ),
        "the agent attested after a re-extend: {refused:?}"
    );
}

#[test]
fn the_resettable_pcrs_are_resettable_and_refused_as_measured_pcr() {
    let setup = AgentFixture::new();
    for pcr in RESETTABLE_PCRS {
        let extend = tpm2(
            &setup,
            "tpm2_pcrextend",
            &[&format!("{pcr}:sha384={}", "ab".repeat(48))],
        );
        assert!(
            extend.status.success(),
            "{}",
            String::from_utf8_lossy(&extend.stderr)
        );
        assert_ne!(pcr_sha384(&setup, pcr), "00".repeat(48));
        let reset = tpm2(&setup, "tpm2_pcrreset", &[&pcr.to_string()]);
        assert!(
            reset.status.success(),
            "{}",
            String::from_utf8_lossy(&reset.stderr)
        );
        assert_eq!(pcr_sha384(&setup, pcr), "00".repeat(48));
        assert!(check_pcr_choice(pcr, &[0, 1, 2, 3, 4, 5, 6, 7]).is_err());
    }
    assert!(check_pcr_choice(13, &[0, 1, 2, 3, 4, 5, 6, 7]).is_ok());
}
