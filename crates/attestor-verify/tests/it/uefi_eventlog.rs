//! The firmware (UEFI) event log parser against `tpm2_eventlog` on every real log in
//! tests/fixtures/eventlogs (see its README: how the short, the Windows-tailed and the
//! ExitBootServices-less logs are handled), then the measured-boot appraisal on them.
//! A missing tpm2_eventlog fails the test: the cross-check is the point.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use attestor_verify::checks::{verify_firmware_log, Check};
use attestor_verify::evidence::tpm::uefi_log::{
    self, extend_exit_boot_services, parse_signature_lists, AlgId, EventType, Guid, LogFormat,
    UefiLog, UefiLogError,
};
use attestor_verify::profiles::{Profile, TpmProfile};
use base64::Engine;

fn fixture(name: &str) -> Vec<u8> {
    let path = crate::support::repo_root()
        .join("tests/fixtures/eventlogs")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What tpm2_eventlog printed: events (PCR, type, digests by bank name, data size) and the
/// PCR values it replayed, by bank name.
#[derive(Debug, Default)]
struct Tpm2Eventlog {
    events: Vec<Tpm2Event>,
    pcrs: BTreeMap<String, BTreeMap<u32, String>>,
}

#[derive(Debug, Default, PartialEq)]
struct Tpm2Event {
    pcr: u32,
    event_type: String,
    digests: Vec<(String, String)>,
    size: usize,
    variable: Option<(String, usize)>,
}

/// Runs tpm2_eventlog on `bytes`: its output, or its exit failure and stderr.
fn tpm2_eventlog(bytes: &[u8]) -> Result<Tpm2Eventlog, String> {
    let tool = attestor_testkit::require_tool("tpm2_eventlog");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(tool).arg(&file).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(parse_yaml(&String::from_utf8_lossy(&out.stdout)))
}

/// tpm2-tools 5.4 prints SHA-1 logs as YAML without list markers, so its output is read
/// line by line rather than as YAML.
fn parse_yaml(text: &str) -> Tpm2Eventlog {
    let mut out = Tpm2Eventlog::default();
    let mut alg: Option<String> = None;
    let mut bank = String::new();
    let mut in_pcrs = false;
    for line in text.lines() {
        if line == "pcrs:" {
            in_pcrs = true;
            continue;
        }
        let item = line.trim_start().trim_start_matches("- ");
        let Some((key, value)) = item.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        if in_pcrs {
            if value.is_empty() {
                bank = key.to_string();
            } else {
                let pcr = key.trim().parse().unwrap();
                let hex = value.trim_start_matches("0x").to_string();
                out.pcrs.entry(bank.clone()).or_default().insert(pcr, hex);
            }
            continue;
        }
        let event = out.events.last_mut();
        match (key, event) {
            ("PCRIndex", _) => out.events.push(Tpm2Event {
                pcr: value.parse().unwrap(),
                ..Tpm2Event::default()
            }),
            ("EventType", Some(e)) => e.event_type = value,
            ("AlgorithmId", _) => alg = Some(value),
            // The Spec ID header's digest has no AlgorithmId: it is the SHA-1 form's.
            ("Digest", Some(e)) => e
                .digests
                .push((alg.take().unwrap_or_else(|| "sha1".into()), value)),
            ("EventSize", Some(e)) => e.size = value.parse().unwrap(),
            // VariableDataLength comes before UnicodeName.
            ("VariableDataLength", Some(e)) => {
                e.variable = Some((String::new(), value.parse().unwrap()));
            }
            ("UnicodeName", Some(e)) => {
                if let Some((name, _)) = &mut e.variable {
                    *name = value;
                }
            }
            _ => {}
        }
    }
    out
}

/// Our parse in tpm2_eventlog's terms.
fn as_tpm2(log: &UefiLog<'_>) -> Vec<Tpm2Event> {
    log.events
        .iter()
        .map(|e| Tpm2Event {
            pcr: e.pcr,
            event_type: e.event_type.name().unwrap_or("Unknown event type").into(),
            digests: e
                .digests
                .iter()
                .map(|(alg, d)| (alg.to_string(), hex::encode(d)))
                .collect(),
            size: e.data.len(),
            variable: e
                .event_type
                .name()
                .filter(|n| n.starts_with("EV_EFI_VARIABLE"))
                .and_then(|_| e.variable().ok())
                .map(|v| (v.name, v.data.len())),
        })
        .collect()
}

fn replayed_hex(log: &UefiLog<'_>) -> BTreeMap<String, BTreeMap<u32, String>> {
    log.banks
        .iter()
        .map(|(alg, _)| {
            let pcrs = log.replay(*alg).unwrap();
            let hex = pcrs.into_iter().map(|(p, v)| (p, hex::encode(v))).collect();
            (alg.to_string(), hex)
        })
        .collect()
}

fn cross_check(name: &str, bytes: &[u8], log: &UefiLog<'_>) {
    let theirs = tpm2_eventlog(bytes).unwrap_or_else(|e| panic!("{name}: tpm2_eventlog: {e}"));
    let ours = as_tpm2(log);
    assert_eq!(ours.len(), theirs.events.len(), "{name}: event count");
    for (index, (o, t)) in ours.iter().zip(&theirs.events).enumerate() {
        // tpm2_eventlog parses variable data only for variable events it decodes.
        let t_variable = t.variable.clone().or(o.variable.clone());
        assert_eq!(
            (o.pcr, &o.event_type, &o.digests, o.size),
            (t.pcr, &t.event_type, &t.digests, t.size),
            "{name}: event {index}"
        );
        assert_eq!(o.variable, t_variable, "{name}: event {index} variable");
    }
    assert_eq!(replayed_hex(log), theirs.pcrs, "{name}: replayed PCRs");
}

#[test]
fn every_real_log_parses_and_replays_as_tpm2_eventlog_does() {
    for (name, format, events) in [
        ("crypto_agile_eventlog", LogFormat::CryptoAgile, 27),
        ("sb_cert_eventlog", LogFormat::CryptoAgile, 15),
        (
            "coreos_36_shielded_vm_no_secure_boot_eventlog",
            LogFormat::CryptoAgile,
            76,
        ),
        (
            "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
            LogFormat::CryptoAgile,
            106,
        ),
        ("ebs_event_missing_eventlog", LogFormat::Sha1, 38),
    ] {
        let bytes = fixture(name);
        let log = uefi_log::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((log.format, log.events.len()), (format, events), "{name}");
        cross_check(name, &bytes, &log);
    }
}

#[test]
fn a_windows_tail_at_pcr_ffffffff_is_never_extended() {
    let bytes = fixture("option_rom_eventlog");
    let log = uefi_log::parse(&bytes).unwrap();
    assert_eq!(log.events.len(), 61);
    let last = log.events.last().unwrap();
    assert_eq!(
        (last.pcr, last.event_type),
        (u32::MAX, EventType::NO_ACTION)
    );
    // tpm2_eventlog 5.4 crashes extending that event (tpm2-tools #3224): cross-check the
    // log without it, which must replay to the same PCRs since it is not extended.
    let prefix = &bytes[..bytes.len() - (32 + last.data.len())];
    let without_last = uefi_log::parse(prefix).unwrap();
    assert_eq!(without_last.events[..], log.events[..60]);
    cross_check(
        "option_rom_eventlog minus its last event",
        prefix,
        &without_last,
    );
    assert_eq!(replayed_hex(&log), replayed_hex(&without_last));
}

#[test]
fn a_short_log_of_one_startup_locality_event() {
    let bytes = fixture("short_no_action_eventlog");
    let log = uefi_log::parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::Sha1);
    assert_eq!(log.events.len(), 1);
    assert_eq!(log.events[0].startup_locality(), Some(3));
    let mut pcr0 = vec![0u8; 20];
    pcr0[19] = 3;
    assert_eq!(log.replay(AlgId::SHA1).unwrap(), [(0, pcr0)].into());
    let err = tpm2_eventlog(&bytes).expect_err("tpm2_eventlog 5.4 refuses this log");
    assert!(err.contains("specid"), "{err}");
}

#[test]
fn a_log_missing_exit_boot_services_completes_pcr_5_with_its_fixed_events() {
    let log_bytes = fixture("ebs_event_missing_eventlog");
    let log = uefi_log::parse(&log_bytes).unwrap();
    assert!(!log.has_exit_boot_services());
    // go-attestation's TestEBSVerifyWorkaround: the quoted SHA-1 PCR 5 of this machine.
    let quoted = hex::decode("31245808d6d35849bc394f6343f2b3ff908ed5e3").unwrap();
    let logged = &log.replay(AlgId::SHA1).unwrap()[&5];
    assert_ne!(logged, &quoted);
    assert_eq!(extend_exit_boot_services(logged, AlgId::SHA1), Some(quoted));
    let complete = fixture("option_rom_eventlog");
    assert!(uefi_log::parse(&complete).unwrap().has_exit_boot_services());
}

#[test]
fn a_log_cut_inside_an_event_is_refused_naming_it() {
    let bytes = fixture("crypto_agile_eventlog");
    let log = uefi_log::parse(&bytes).unwrap();
    let mut offset = 0;
    let mut starts = Vec::new();
    for e in &log.events {
        starts.push(offset);
        offset += if starts.len() == 1 {
            32 + e.data.len()
        } else {
            12 + e.digests.iter().map(|(_, d)| 2 + d.len()).sum::<usize>() + 4 + e.data.len()
        };
    }
    assert_eq!(offset, bytes.len());
    for (index, start) in starts.iter().enumerate().skip(1) {
        for cut in [start + 1, start + 20, start + 50] {
            let end = starts.get(index + 1).copied().unwrap_or(bytes.len());
            if cut >= end {
                continue;
            }
            assert_eq!(
                uefi_log::parse(&bytes[..cut]),
                Err(UefiLogError::Truncated {
                    index,
                    offset: *start
                }),
                "cut at {cut}"
            );
        }
        // Cut between events: a shorter, well-formed log.
        assert_eq!(
            uefi_log::parse(&bytes[..*start]).unwrap().events.len(),
            index
        );
    }
}

#[test]
fn signature_databases_hold_real_certificates() {
    use x509_cert::der::Decode;
    for name in [
        "crypto_agile_eventlog",
        "sb_cert_eventlog",
        "option_rom_eventlog",
    ] {
        let bytes = fixture(name);
        let log = uefi_log::parse(&bytes).unwrap();
        let mut certificates = 0;
        for e in log
            .events
            .iter()
            .filter(|e| e.pcr == 7 && e.event_type == EventType::EFI_VARIABLE_DRIVER_CONFIG)
        {
            let var = e.variable().unwrap();
            if var.name == "SecureBoot" {
                continue;
            }
            for entry in parse_signature_lists(var.data).unwrap() {
                if entry.signature_type == Guid::CERT_X509 {
                    x509_cert::Certificate::from_der(entry.data)
                        .unwrap_or_else(|e| panic!("{name} {}: {e}", var.name));
                    certificates += 1;
                } else {
                    assert_eq!(entry.signature_type, Guid::CERT_SHA256, "{name}");
                }
            }
        }
        assert!(certificates >= 3, "{name}: {certificates} certificates");
    }
}

// ---- appraisal against a profile, with the log's own replay as the quoted PCRs

/// A TPM profile in `bank` with a `[tpm.measured_boot]` section of `measured_boot` (TOML
/// lines), written into `dir`.
fn profile(dir: &Path, bank: &str, measured_boot: &str) -> TpmProfile {
    let root = crate::support::repo_root().join("tests/fixtures/tpm/ca_root.pem");
    let text = format!(
        "name = \"t\"\n[tpm]\npcr_bank = \"{bank}\"\nmeasured_pcr = 13\n\
         ek_trust_anchors = [{root:?}]\n[tpm.firmware_pcrs]\n[tpm.measured_boot]\n{measured_boot}\n"
    );
    let path = dir.join("profile.toml");
    std::fs::write(&path, &text).unwrap();
    Profile::load(&path).unwrap().tpm.unwrap()
}

/// PCRs 0-7 as the log replays them in `bank`: what a TPM that ran this firmware quotes.
fn quoted(log: &[u8], bank: AlgId) -> BTreeMap<u8, Vec<u8>> {
    let replayed = uefi_log::parse(log).unwrap().replay(bank).unwrap();
    let len = bank.hash(&[]).unwrap().len();
    (0..8u8)
        .map(|p| {
            let v = replayed.get(&u32::from(p)).cloned();
            (p, v.unwrap_or_else(|| vec![0; len]))
        })
        .collect()
}

fn verify(log: &[u8], profile: &TpmProfile, quoted: &BTreeMap<u8, Vec<u8>>) -> Result<(), Check> {
    let refs = quoted.iter().map(|(p, v)| (*p, v.as_slice())).collect();
    verify_firmware_log(log, profile, profile.pcr_banks[0], &refs).map_err(|e| {
        eprintln!("{e}");
        e.check
    })
}

#[test]
fn a_secure_boot_reference_refuses_the_gcp_logs_with_secure_boot_off() {
    let dir = tempfile::tempdir().unwrap();
    for bank in ["sha256", "sha384"] {
        let alg = if bank == "sha256" {
            AlgId::SHA256
        } else {
            AlgId::SHA384
        };
        let secure_boot = profile(dir.path(), bank, "secure_boot = true");
        let no_reference = profile(dir.path(), bank, "");
        for name in [
            "coreos_36_shielded_vm_no_secure_boot_eventlog",
            "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
        ] {
            let log = fixture(name);
            let pcrs = quoted(&log, alg);
            assert_eq!(verify(&log, &no_reference, &pcrs), Ok(()), "{name}");
            assert_eq!(
                verify(&log, &secure_boot, &pcrs),
                Err(Check::SecureBoot),
                "{name}"
            );
        }
        let on = fixture("sb_cert_eventlog");
        assert_eq!(verify(&on, &secure_boot, &quoted(&on, alg)), Ok(()));
    }
}

/// The first SecureBoot variable event's data byte, for tampering.
fn secure_boot_byte(log: &[u8]) -> usize {
    let parsed = uefi_log::parse(log).unwrap();
    let event = parsed
        .events
        .iter()
        .find(|e| e.variable().is_ok_and(|v| v.name == "SecureBoot"))
        .unwrap();
    let data = event.variable().unwrap().data;
    data.as_ptr() as usize - log.as_ptr() as usize
}

#[test]
fn a_log_edited_to_claim_secure_boot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secure_boot = profile(dir.path(), "sha384", "secure_boot = true");
    let honest = fixture("ubuntu_2104_shielded_vm_no_secure_boot_eventlog");
    let pcrs = quoted(&honest, AlgId::SHA384);
    // Flipping SecureBoot to 1 keeps every digest (the replay still matches) but the data
    // no longer hashes to its digest.
    let mut edited = honest.clone();
    edited[secure_boot_byte(&honest)] = 1;
    assert_eq!(verify(&edited, &secure_boot, &pcrs), Err(Check::SecureBoot));
    // Another machine's log does not replay to this machine's PCRs.
    let other = fixture("coreos_36_shielded_vm_no_secure_boot_eventlog");
    assert_eq!(
        verify(&other, &secure_boot, &pcrs),
        Err(Check::FirmwareEventLog)
    );
    // A log that leaves a quoted PCR unexplained.
    let mut pcrs_10 = pcrs.clone();
    pcrs_10.insert(10, vec![1; 48]);
    assert_eq!(
        verify(&honest, &secure_boot, &pcrs_10),
        Err(Check::FirmwareEventLog)
    );
    // The log has no sha384 digests for a sha384 quote.
    let sha256_only = fixture("crypto_agile_eventlog");
    assert_eq!(
        verify(&sha256_only, &secure_boot, &pcrs),
        Err(Check::FirmwareEventLog)
    );
}

/// The PEM of every X.509 entry of `variable` in `log`, and their count.
fn certificates_pem(log: &[u8], variable: &str) -> (String, usize) {
    let parsed = uefi_log::parse(log).unwrap();
    let var = parsed
        .events
        .iter()
        .filter_map(|e| e.variable().ok())
        .find(|v| v.name == variable)
        .unwrap();
    let mut pem = String::new();
    let mut n = 0;
    for entry in parse_signature_lists(var.data).unwrap() {
        if entry.signature_type == Guid::CERT_X509 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(entry.data);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            n += 1;
        }
    }
    (pem, n)
}

fn fingerprints(log: &[u8], variable: &str) -> Vec<String> {
    let parsed = uefi_log::parse(log).unwrap();
    let var = parsed
        .events
        .iter()
        .filter_map(|e| e.variable().ok())
        .find(|v| v.name == variable)
        .unwrap();
    parse_signature_lists(var.data)
        .unwrap()
        .iter()
        .map(|e| hex::encode(e.fingerprint()))
        .collect()
}

#[test]
fn pk_kek_and_db_hold_only_allowed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = fixture("sb_cert_eventlog");
    let pcrs = quoted(&log, AlgId::SHA384);
    // db by certificate file, PK and KEK by fingerprint.
    let (db_pem, db_certs) = certificates_pem(&log, "db");
    assert!(db_certs >= 2);
    std::fs::write(dir.path().join("db.pem"), db_pem).unwrap();
    let list = |v: &[String]| format!("{v:?}");
    let pk = fingerprints(&log, "PK");
    let kek = fingerprints(&log, "KEK");
    let reference = |db: &str| {
        format!(
            "[tpm.measured_boot.pk]\nsha256 = {}\n[tpm.measured_boot.kek]\nsha256 = {}\n\
             [tpm.measured_boot.db]\n{db}\n",
            list(&pk),
            list(&kek)
        )
    };
    let all = profile(
        dir.path(),
        "sha384",
        &reference("certificates = [\"db.pem\"]"),
    );
    assert_eq!(verify(&log, &all, &pcrs), Ok(()));
    // One db certificate short.
    let (one_pem, _) = certificates_pem(&log, "db");
    let first = one_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(dir.path().join("one.pem"), first).unwrap();
    let short = profile(
        dir.path(),
        "sha384",
        &reference("certificates = [\"one.pem\"]"),
    );
    assert_eq!(verify(&log, &short, &pcrs), Err(Check::SecureBootKeys));
    // A PK the profile does not know.
    let other_pk = profile(
        dir.path(),
        "sha384",
        &format!(
            "[tpm.measured_boot.pk]\nsha256 = [\"{}\"]\n",
            "11".repeat(32)
        ),
    );
    assert_eq!(verify(&log, &other_pk, &pcrs), Err(Check::SecureBootKeys));
}

#[test]
fn a_dbx_older_than_the_required_update_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // GCP's dbx as the required "update"; the older physical machine's dbx lacks most of it.
    let gcp = fixture("ubuntu_2104_shielded_vm_no_secure_boot_eventlog");
    let required = fingerprints(&gcp, "dbx");
    let old = fixture("crypto_agile_eventlog");
    let old_dbx = fingerprints(&old, "dbx");
    assert!(required.len() > old_dbx.len());
    std::fs::write(
        dir.path().join("dbx.txt"),
        format!("# GCP dbx\n{}\n", required.join("\n")),
    )
    .unwrap();
    let reference = profile(dir.path(), "sha256", "dbx_required = \"dbx.txt\"");
    assert_eq!(
        verify(&gcp, &reference, &quoted(&gcp, AlgId::SHA256)),
        Ok(())
    );
    assert_eq!(
        verify(&old, &reference, &quoted(&old, AlgId::SHA256)),
        Err(Check::SecureBootDbx)
    );
}

#[test]
fn only_allowed_boot_applications_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = fixture("sb_cert_eventlog");
    let parsed = uefi_log::parse(&log).unwrap();
    let apps: Vec<String> = parsed
        .events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| hex::encode(e.digest(AlgId::SHA384).unwrap()))
        .collect();
    assert_eq!(apps.len(), 3);
    let pcrs = quoted(&log, AlgId::SHA384);
    let allow = |digests: &[String]| {
        let p = profile(
            dir.path(),
            "sha384",
            &format!("[tpm.measured_boot.boot_applications]\nsha384 = {digests:?}\n"),
        );
        verify(&log, &p, &pcrs)
    };
    assert_eq!(allow(&apps), Ok(()));
    assert_eq!(allow(&apps[..2]), Err(Check::BootApplications));
    // Reference digests for another bank only: the quoted bank's are not known.
    let sha256_only = profile(
        dir.path(),
        "sha384",
        &format!(
            "[tpm.measured_boot.boot_applications]\nsha256 = [\"{}\"]\n",
            "00".repeat(32)
        ),
    );
    assert_eq!(
        verify(&log, &sha256_only, &pcrs),
        Err(Check::BootApplications)
    );
    // PCR 4 unquoted: the applications' events are unverified.
    let all = profile(
        dir.path(),
        "sha384",
        &format!("[tpm.measured_boot.boot_applications]\nsha384 = {apps:?}\n"),
    );
    let mut without_4 = pcrs.clone();
    without_4.remove(&4);
    assert_eq!(verify(&log, &all, &without_4), Err(Check::BootApplications));
}

#[test]
fn bad_measured_boot_references_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::support::repo_root().join("tests/fixtures/tpm/ca_root.pem");
    let load = |section: &str| {
        let text = format!(
            "name = \"t\"\n[tpm]\npcr_bank = \"sha384\"\nmeasured_pcr = 13\n\
             ek_trust_anchors = [{root:?}]\n[tpm.firmware_pcrs]\n[tpm.measured_boot]\n{section}\n"
        );
        Profile::parse(&text, &dir.path().join("p.toml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    std::fs::write(dir.path().join("empty.txt"), "# nothing\n").unwrap();
    for (section, needle) in [
        ("[tpm.measured_boot.db]\n", "allows nothing"),
        (
            "[tpm.measured_boot.pk]\nsha256 = [\"abcd\"]",
            "not 32 bytes",
        ),
        (
            "[tpm.measured_boot.boot_applications]\nsha384 = [\"00\"]",
            "not 48 bytes",
        ),
        ("dbx_required = \"empty.txt\"", "names no hash"),
        ("dbx_required = \"absent.txt\"", "cannot read"),
        ("surprise = 1", "unknown field"),
    ] {
        let err = load(section).unwrap_err();
        assert!(err.contains(needle), "{section:?}: {err}");
    }
    assert!(load("secure_boot = true").is_ok());
}

/// SHA-512 is a hash attestor knows (the P-521 EK's nameAlg), never a PCR bank: a profile
/// that names it as a bank, as an allowed bank or as a reference table is refused by name.
#[test]
fn a_profile_cannot_choose_sha512_as_a_bank() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::support::repo_root().join("tests/fixtures/tpm/ca_root.pem");
    for banks in [
        "pcr_bank = \"sha512\"",
        "pcr_banks = [\"sha384\", \"sha512\"]",
    ] {
        let text = format!(
            "name = \"t\"\n[tpm]\n{banks}\nmeasured_pcr = 13\nek_trust_anchors = [{root:?}]\n\
             [tpm.firmware_pcrs]\n"
        );
        let err = Profile::parse(&text, &dir.path().join("p.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"sha512\" is not a PCR bank attestor quotes"),
            "{banks}: {err}"
        );
    }
    let text = format!(
        "name = \"t\"\n[tpm]\npcr_bank = \"sha384\"\nmeasured_pcr = 13\n\
         ek_trust_anchors = [{root:?}]\n[tpm.firmware_pcrs]\n\
         [tpm.measured_boot.boot_applications]\nsha512 = [\"{}\"]\n",
        "00".repeat(64)
    );
    let err = Profile::parse(&text, &dir.path().join("p.toml")).unwrap_err();
    assert!(err.to_string().contains("not a PCR bank"), "{err}");
}
