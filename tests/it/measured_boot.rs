//! Measured boot end to end on swtpm: its PCRs extended with a real firmware event log's
//! digests (tests/fixtures/eventlogs), as that firmware would have, then attest → verify
//! with the log in the bundle. And the banks of attestor's own measurement log: every
//! digest is replayed or refused, and a bank change is named as one.

use std::path::{Path, PathBuf};

use crate::support::agent::{tpm_ev, tpm_ev_mut, AgentFixture};
use attestor_agent::attest::AgentError;
use attestor_platform::tpm::Tpm;
use attestor_verify::bundle::Bundle;
use attestor_verify::checks::{verify_bundle, Check};
use attestor_verify::evidence::tpm::uefi_log::{self, AlgId, EventType, UefiLogError};
use attestor_verify::evidence::tpm::HashAlg;
use attestor_verify::profiles::Profile;

fn eventlog(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eventlogs")
        .join(name)
}

/// Extends the swtpm's PCRs with every extended event of the log (sha256 and sha384, the
/// swtpm's banks), points the agent at the log, and returns the sha384 values of PCRs
/// 0-7 as the log replays them.
fn boot(setup: &AgentFixture, name: &str) -> Vec<(u8, String)> {
    let bytes = std::fs::read(eventlog(name)).unwrap();
    let log = uefi_log::parse(&bytes).unwrap();
    let mut tpm = Tpm::open(&setup.tpm.tcti()).unwrap();
    for event in log
        .events
        .iter()
        .filter(|e| e.event_type != EventType::NO_ACTION)
    {
        let digests = [HashAlg::Sha256, HashAlg::Sha384]
            .map(|bank| (bank, event.digest(bank.into()).unwrap().to_vec()));
        tpm.extend(u8::try_from(event.pcr).unwrap(), &digests)
            .unwrap();
    }
    drop(tpm);
    set_config(
        setup,
        "[tpm]\n",
        &format!("[tpm]\nfirmware_event_log = {:?}\n", eventlog(name)),
    );
    let replayed = log.replay(AlgId::SHA384).unwrap();
    (0..8u8)
        .map(|p| {
            let value = replayed.get(&u32::from(p)).map(hex::encode);
            (p, value.unwrap_or_else(|| "00".repeat(48)))
        })
        .collect()
}

fn set_config(setup: &AgentFixture, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    assert!(text.contains(from), "agent config has no {from:?}");
    std::fs::write(&setup.config_path, text.replacen(from, to, 1)).unwrap();
}

/// The fixture's profile with these firmware PCR values and `[tpm.measured_boot]` lines
/// (none: no such section).
fn profile(setup: &AgentFixture, pcrs: &[(u8, String)], measured_boot: Option<&str>) -> Profile {
    let text = std::fs::read_to_string(&setup.profile_path).unwrap();
    let mut text = text.split("[tpm.firmware_pcrs").next().unwrap().replace(
        "pcr_banks = [\"sha384\", \"sha256\"]",
        "pcr_banks = [\"sha384\"]",
    );
    text.push_str("[tpm.firmware_pcrs.sha384]\n");
    for (pcr, value) in pcrs {
        text.push_str(&format!("{pcr} = \"{value}\"\n"));
    }
    if let Some(lines) = measured_boot {
        text.push_str(&format!("[tpm.measured_boot]\n{lines}\n"));
    }
    let path = setup.dir.path().join("measured-boot-profile.toml");
    std::fs::write(&path, text).unwrap();
    Profile::load(&path).unwrap()
}

fn failed(bundle: &Bundle, profile: &Profile, setup: &AgentFixture) -> Check {
    let err = verify_bundle(bundle, profile, &setup.expect()).expect_err("accepted");
    eprintln!("{err}");
    err.check
}

fn boot_applications(name: &str, bank: AlgId) -> Vec<String> {
    let bytes = std::fs::read(eventlog(name)).unwrap();
    let log = uefi_log::parse(&bytes).unwrap();
    log.events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| hex::encode(e.digest(bank).unwrap()))
        .collect()
}

#[test]
fn the_bundle_carries_the_firmware_log_and_the_profile_appraises_it() {
    let setup = AgentFixture::new();
    let pcrs = boot(&setup, "sb_cert_eventlog");
    let apps = boot_applications("sb_cert_eventlog", AlgId::SHA384);
    let reference =
        format!("secure_boot = true\n[tpm.measured_boot.boot_applications]\nsha384 = {apps:?}");
    let appraising = profile(&setup, &pcrs, Some(&reference));
    let bundle = setup.attest();
    let ev = tpm_ev(&bundle);
    assert_eq!(
        ev.firmware_event_log,
        std::fs::read(eventlog("sb_cert_eventlog")).unwrap()
    );
    let reparsed = Bundle::from_json(&bundle.to_json()).unwrap();
    verify_bundle(&reparsed, &appraising, &setup.expect()).unwrap();

    // The profile requires the log: a bundle without it is refused.
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).firmware_event_log.clear();
    assert_eq!(failed(&b, &appraising, &setup), Check::FirmwareEventLog);
    // Without [tpm.measured_boot] a bundle may leave it out...
    let plain = profile(&setup, &pcrs, None);
    verify_bundle(&b, &plain, &setup.expect()).unwrap();
    // ...but one it carries must replay: another machine's log does not.
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).firmware_event_log =
        std::fs::read(eventlog("ubuntu_2104_shielded_vm_no_secure_boot_eventlog")).unwrap();
    assert_eq!(failed(&b, &plain, &setup), Check::FirmwareEventLog);
    // `attestor firmware-log` on the same log prints a reference that accepts it.
    let dbx = setup.dir.path().join("dbx.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attestor"))
        .arg("firmware-log")
        .arg(eventlog("sb_cert_eventlog"))
        .arg("--dbx-out")
        .arg(&dbx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("secure_boot = true"), "{printed}");
    let printed = printed.replacen("[tpm.measured_boot]\n", "", 1);
    let from_cli = profile(&setup, &pcrs, Some(&printed));
    let reference = from_cli
        .tpm
        .as_ref()
        .unwrap()
        .measured_boot
        .as_ref()
        .unwrap();
    assert!(reference.pk.is_some() && reference.db.is_some() && reference.dbx_required.is_some());
    verify_bundle(&bundle, &from_cli, &setup.expect()).unwrap();
    // An application the profile does not list.
    let fewer = format!(
        "[tpm.measured_boot.boot_applications]\nsha384 = {:?}",
        &apps[1..]
    );
    let fewer = profile(&setup, &pcrs, Some(&fewer));
    assert_eq!(failed(&bundle, &fewer, &setup), Check::BootApplications);
}

#[test]
fn a_secure_boot_reference_refuses_a_host_that_booted_with_secure_boot_off() {
    let setup = AgentFixture::new();
    let pcrs = boot(&setup, "ubuntu_2104_shielded_vm_no_secure_boot_eventlog");
    let bundle = setup.attest();
    verify_bundle(&bundle, &profile(&setup, &pcrs, Some("")), &setup.expect()).unwrap();
    let secure_boot = profile(&setup, &pcrs, Some("secure_boot = true"));
    assert_eq!(failed(&bundle, &secure_boot, &setup), Check::SecureBoot);
}

#[test]
fn the_agent_refuses_a_firmware_log_without_the_quoted_bank() {
    let setup = AgentFixture::new();
    let path = eventlog("crypto_agile_eventlog");
    set_config(
        &setup,
        "[tpm]\n",
        &format!("[tpm]\nfirmware_event_log = {path:?}\n"),
    );
    let err = setup
        .agent()
        .attest(&setup.kernel(), &setup.status(), b"")
        .expect_err("attested with a log it cannot ship");
    assert!(
        matches!(
            &err,
            AgentError::FirmwareEventLog {
                source: UefiLogError::BankNotInLog(AlgId::SHA384, _),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no sha384 digests"), "{err}");
}

#[test]
fn the_measurement_log_carries_only_the_quoted_bank() {
    let setup = AgentFixture::new();
    let bundle = setup.attest();
    let log = &tpm_ev(&bundle).event_log;
    assert!(log
        .events
        .iter()
        .all(|e| e.digests.keys().eq([&HashAlg::Sha384])));
    // A digest of another bank, which the quote cannot vouch for, is refused.
    let mut b = bundle.clone();
    let event = &mut tpm_ev_mut(&mut b).event_log.events[0];
    event.digests.insert(HashAlg::Sha256, "00".repeat(32));
    assert_eq!(failed(&b, &setup.profile, &setup), Check::EventLogReplay);
    // An event of a type attestor never writes into its PCR.
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).event_log.events[0].event_type = "other/v1".into();
    assert_eq!(failed(&b, &setup.profile, &setup), Check::EventLogReplay);
}

#[test]
fn a_bank_change_is_named_not_reported_as_drift() {
    let setup = AgentFixture::new();
    setup.attest();
    set_config(
        &setup,
        "pcr_banks = [\"sha384\", \"sha256\"]",
        "pcr_banks = [\"sha256\"]",
    );
    let err = setup
        .agent()
        .attest(&setup.kernel(), &setup.status(), b"")
        .expect_err("signed with a key sealed to another bank");
    assert!(
        matches!(
            err,
            AgentError::BankMismatch {
                sealed: "sha384",
                configured: "sha256",
                ..
            }
        ),
        "{err}"
    );
    // Resealed to the sha256 bank, it attests and quotes that bank; the sha256 digest of
    // the measurement is derived from the claimed hash, so the shipped profile (both
    // banks) accepts it.
    setup.agent().reseal(&setup.kernel()).unwrap();
    let bundle = setup.attest();
    assert_eq!(tpm_ev(&bundle).pcr_bank, HashAlg::Sha256);
    verify_bundle(&bundle, &setup.profile, &setup.expect()).unwrap();
}
