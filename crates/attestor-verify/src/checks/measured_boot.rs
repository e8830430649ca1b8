//! Measured boot: the firmware event log replayed against the quoted PCRs, then appraised
//! against the profile's `[tpm.measured_boot]` reference values. Only the quoted bank's
//! digests are used, only events of quoted PCRs are believed, and an event's data only when
//! it hashes to that digest.

use std::collections::{BTreeMap, BTreeSet};

use super::{fail, Check, VerifyError};
use crate::bundle::TpmEvidence;
use crate::evidence::tpm::uefi_log::{
    self, extend_exit_boot_services, parse_signature_lists, AlgId, EventType, Guid, SignatureEntry,
    UefiLog, VariableData,
};
use crate::evidence::tpm::HashAlg;
use crate::profiles::{KeyAllowList, MeasuredBootProfile, TpmProfile};

/// The bundle's firmware event log against the profile: refused when the profile requires
/// one and the bundle has none, else checked by [`verify_firmware_log`] when present.
pub(super) fn check_firmware_log(
    ev: &TpmEvidence,
    profile: &TpmProfile,
    quoted: &BTreeMap<u8, &[u8]>,
) -> Result<(), VerifyError> {
    match (ev.firmware_event_log.is_empty(), &profile.measured_boot) {
        (true, Some(_)) => Err(fail(
            Check::FirmwareEventLog,
            "the profile requires the firmware event log ([tpm.measured_boot]); the bundle \
             carries none (agent: tpm.firmware_event_log)",
        )),
        (true, None) => Ok(()),
        (false, _) => verify_firmware_log(&ev.firmware_event_log, profile, ev.pcr_bank, quoted),
    }
}

/// Checks a firmware event log against quoted PCR values (in the quoted `pcr_bank`): it must
/// parse, leave the measured PCR alone and replay to every quoted PCR but the measured one;
/// then the profile's `[tpm.measured_boot]` reference values, if any, appraise it.
pub fn verify_firmware_log(
    log: &[u8],
    profile: &TpmProfile,
    pcr_bank: HashAlg,
    quoted: &BTreeMap<u8, &[u8]>,
) -> Result<(), VerifyError> {
    let err = |e: &dyn std::fmt::Display| fail(Check::FirmwareEventLog, e);
    let log = uefi_log::parse(log).map_err(|e| err(&e))?;
    let bank = AlgId::from(pcr_bank);
    let replayed = log.replay(bank).map_err(|e| err(&e))?;
    if replayed.contains_key(&u32::from(profile.measured_pcr)) {
        return Err(err(&format!(
            "the firmware event log extends the measured PCR {}: choose a measured_pcr the \
             boot chain leaves alone",
            profile.measured_pcr
        )));
    }
    let zero = vec![0; pcr_bank.digest_len()];
    for (pcr, value) in quoted {
        if *pcr == profile.measured_pcr {
            continue;
        }
        let expected = replayed.get(&u32::from(*pcr)).unwrap_or(&zero);
        // Logs read before ExitBootServices() lack its two PCR 5 events (see
        // UefiLog::has_exit_boot_services): their fixed digests may complete the replay.
        let completed = *pcr == 5
            && !log.has_exit_boot_services()
            && extend_exit_boot_services(expected, bank).as_deref() == Some(*value);
        if expected.as_slice() != *value && !completed {
            return Err(err(&format!(
                "PCR {pcr} is quoted as {}, the firmware event log replays it to {}",
                hex::encode(value),
                hex::encode(expected)
            )));
        }
    }
    let quoted: Vec<u8> = quoted.keys().copied().collect();
    match &profile.measured_boot {
        Some(reference) => appraise(&log, pcr_bank, &quoted, reference),
        None => Ok(()),
    }
}

fn appraise(
    log: &UefiLog<'_>,
    pcr_bank: HashAlg,
    quoted: &[u8],
    reference: &MeasuredBootProfile,
) -> Result<(), VerifyError> {
    let bank = AlgId::from(pcr_bank);
    let variables = |check| config_variables(log, bank, quoted).map_err(|e| fail(check, e));
    if reference.secure_boot {
        let variables = variables(Check::SecureBoot)?;
        let states: Vec<&[u8]> = find(&variables, Guid::GLOBAL_VARIABLE, "SecureBoot")
            .map(|v| v.data)
            .collect();
        if states.is_empty() {
            return Err(fail(
                Check::SecureBoot,
                "PCR 7 does not measure the SecureBoot variable",
            ));
        }
        if let Some(off) = states.iter().find(|s| **s != [1]) {
            return Err(fail(
                Check::SecureBoot,
                format!(
                    "Secure Boot is off: PCR 7 measures the SecureBoot variable as {:?}",
                    hex::encode(off)
                ),
            ));
        }
    }
    for (name, vendor, allowed) in [
        ("PK", Guid::GLOBAL_VARIABLE, &reference.pk),
        ("KEK", Guid::GLOBAL_VARIABLE, &reference.kek),
        ("db", Guid::IMAGE_SECURITY_DATABASE, &reference.db),
    ] {
        if let Some(allowed) = allowed {
            let variables = variables(Check::SecureBootKeys)?;
            only_allowed_keys(&variables, name, vendor, allowed)
                .map_err(|e| fail(Check::SecureBootKeys, e))?;
        }
    }
    if let Some(required) = &reference.dbx_required {
        let variables = variables(Check::SecureBootDbx)?;
        dbx_holds(&variables, required).map_err(|e| fail(Check::SecureBootDbx, e))?;
    }
    if !reference.boot_applications.is_empty() {
        let allowed = reference.boot_applications.get(&pcr_bank).ok_or_else(|| {
            fail(
                Check::BootApplications,
                format!(
                    "the profile lists boot applications for other banks, none for the \
                     quoted {} bank",
                    pcr_bank.name()
                ),
            )
        })?;
        boot_applications_allowed(log, bank, quoted, allowed)
            .map_err(|e| fail(Check::BootApplications, e))?;
    }
    Ok(())
}

/// PCR 7's EV_EFI_VARIABLE_DRIVER_CONFIG events (the Secure Boot configuration), each
/// checked to be the data its replayed digest was computed over.
fn config_variables<'a>(
    log: &'a UefiLog<'_>,
    bank: AlgId,
    quoted: &[u8],
) -> Result<Vec<VariableData<'a>>, String> {
    if !quoted.contains(&7) {
        return Err("PCR 7 is not quoted, so its Secure Boot events are unverified".into());
    }
    let mut out = Vec::new();
    for (index, event) in log.events.iter().enumerate() {
        if event.pcr != 7 || event.event_type != EventType::EFI_VARIABLE_DRIVER_CONFIG {
            continue;
        }
        if !event.data_matches_digest(bank) {
            return Err(format!(
                "event {index} (PCR 7) carries data that does not hash to its {bank} digest"
            ));
        }
        out.push(
            event
                .variable()
                .map_err(|e| format!("event {index} (PCR 7): {e}"))?,
        );
    }
    Ok(out)
}

fn find<'v, 'a>(
    variables: &'v [VariableData<'a>],
    vendor: Guid,
    name: &'v str,
) -> impl Iterator<Item = &'v VariableData<'a>> {
    variables
        .iter()
        .filter(move |v| v.vendor == vendor && v.name == name)
}

/// The signature entries of every measurement of one database variable.
fn database<'a>(
    variables: &[VariableData<'a>],
    vendor: Guid,
    name: &str,
) -> Result<Vec<Vec<SignatureEntry<'a>>>, String> {
    let lists: Vec<Vec<SignatureEntry<'a>>> = find(variables, vendor, name)
        .map(|v| parse_signature_lists(v.data).map_err(|e| format!("{name}: {e}")))
        .collect::<Result<_, _>>()?;
    if lists.is_empty() {
        return Err(format!("PCR 7 does not measure {name}"));
    }
    Ok(lists)
}

fn only_allowed_keys(
    variables: &[VariableData<'_>],
    name: &str,
    vendor: Guid,
    allowed: &KeyAllowList,
) -> Result<(), String> {
    for entries in database(variables, vendor, name)? {
        if entries.is_empty() {
            return Err(format!("{name} is empty"));
        }
        if let Some(entry) = entries.iter().find(|e| !allowed.contains(&e.fingerprint())) {
            return Err(format!(
                "{name} holds {} that the profile does not allow",
                describe(entry)
            ));
        }
    }
    Ok(())
}

fn dbx_holds(variables: &[VariableData<'_>], required: &KeyAllowList) -> Result<(), String> {
    for entries in database(variables, Guid::IMAGE_SECURITY_DATABASE, "dbx")? {
        let present: BTreeSet<[u8; 32]> = entries.iter().map(SignatureEntry::fingerprint).collect();
        let missing: Vec<&[u8; 32]> = required.difference(&present).collect();
        if let Some(first) = missing.first() {
            return Err(format!(
                "dbx lacks {} of the {} revocations the profile requires (e.g. {}): it is \
                 older than the profile's dbx update",
                missing.len(),
                required.len(),
                hex::encode(first)
            ));
        }
    }
    Ok(())
}

fn boot_applications_allowed(
    log: &UefiLog<'_>,
    bank: AlgId,
    quoted: &[u8],
    allowed: &BTreeSet<Vec<u8>>,
) -> Result<(), String> {
    let apps = log
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION);
    for (index, event) in apps {
        let verified = u8::try_from(event.pcr).is_ok_and(|p| quoted.contains(&p));
        let digest = event.digest(bank).filter(|_| verified).ok_or_else(|| {
            format!(
                "event {index} starts an application measured into PCR {}, which is not \
                 quoted",
                event.pcr
            )
        })?;
        if !allowed.contains(digest) {
            return Err(format!(
                "event {index} (PCR {}) starts an application with {bank} digest {}, which \
                 the profile does not allow",
                event.pcr,
                hex::encode(digest)
            ));
        }
    }
    Ok(())
}

fn describe(entry: &SignatureEntry<'_>) -> String {
    let fingerprint = hex::encode(entry.fingerprint());
    match entry.signature_type {
        Guid::CERT_X509 => format!("the certificate with SHA-256 {fingerprint}"),
        Guid::CERT_SHA256 => format!("the image digest {fingerprint}"),
        other => format!("a {other} entry with SHA-256 {fingerprint}"),
    }
}
