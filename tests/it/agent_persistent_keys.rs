//! The agent with resident keys (`[tpm] persistent_keys`) on swtpm: by default a simulator
//! TCTI leaves the TPM's persistent handles alone; switched on, the same AK and the same
//! sealed key (made before, under a re-created storage key) attest and verify from
//! resident keys, and a restart adopts them.

use std::process::Command;

use crate::support::agent::{tpm_ev, AgentFixture};
use attestor_platform::tpm::persistent::{DEFAULT_AK_HANDLE, DEFAULT_SRK_HANDLE};
use attestor_verify::checks::verify_bundle;

fn persistent_handles(fixture: &AgentFixture) -> Vec<String> {
    crate::support::require_tool("tpm2_getcap");
    let out = Command::new("tpm2_getcap")
        .arg("handles-persistent")
        .env("TPM2TOOLS_TCTI", fixture.tpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("- ").trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn resident_keys_are_opt_in_on_swtpm_and_attest_as_the_re_created_ones() {
    let fixture = AgentFixture::new();
    let before = persistent_handles(&fixture);
    let transient = fixture.attest();
    verify_bundle(&transient, &fixture.profile, &fixture.expect()).unwrap();
    assert_eq!(persistent_handles(&fixture), before, "swtpm default: none");

    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let text = text.replace("[tpm]\n", "[tpm]\npersistent_keys = true\n");
    std::fs::write(&fixture.config_path, text).unwrap();
    let resident = fixture.attest();
    verify_bundle(&resident, &fixture.profile, &fixture.expect()).unwrap();
    let listed = persistent_handles(&fixture);
    for handle in [DEFAULT_SRK_HANDLE, DEFAULT_AK_HANDLE] {
        assert!(listed.contains(&format!("{handle:#010x}")), "{listed:?}");
    }
    assert_eq!(listed.len(), before.len() + 2);
    // The same AK and sealed key as before: only where they live changed.
    assert_eq!(tpm_ev(&resident).ak_public, tpm_ev(&transient).ak_public);
    assert_eq!(
        tpm_ev(&resident).sealed_key.public,
        tpm_ev(&transient).sealed_key.public
    );

    // A restart adopts the resident keys.
    let again = fixture.attest();
    verify_bundle(&again, &fixture.profile, &fixture.expect()).unwrap();
    assert_eq!(persistent_handles(&fixture), listed);
}
