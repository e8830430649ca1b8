//! `attestor firmware-log LOG`: a known-good machine's firmware event log as the
//! `[tpm.measured_boot]` reference values of a profile, for the operator to review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use attestor_verify::evidence::tpm::uefi_log::{
    self, parse_signature_lists, AlgId, EventType, Guid, UefiLog, VariableData,
};
use attestor_verify::evidence::tpm::HashAlg;

/// Prints the log's Secure Boot state, PK/KEK/db fingerprints and boot applications as a
/// `[tpm.measured_boot]` section in `bank`; writes its dbx fingerprints to `dbx_out`.
pub(crate) fn run(log: &Path, bank: HashAlg, dbx_out: Option<PathBuf>) -> Result<ExitCode, String> {
    let bytes = std::fs::read(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let parsed = uefi_log::parse(&bytes).map_err(|e| format!("{}: {e}", log.display()))?;
    let alg = AlgId::from(bank);
    let replayed = parsed
        .replay(alg)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let variables = config_variables(&parsed, alg)?;
    let value = |vendor: Guid, name: &str| {
        variables
            .iter()
            .find(|v| v.vendor == vendor && v.name == name)
            .map(|v| v.data)
    };
    let fingerprints = |vendor: Guid, name: &str| -> Result<Vec<String>, String> {
        let data = value(vendor, name).unwrap_or_default();
        let entries = parse_signature_lists(data).map_err(|e| format!("{name}: {e}"))?;
        Ok(entries
            .iter()
            .map(|e| hex::encode(e.fingerprint()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    };
    let secure_boot = value(Guid::GLOBAL_VARIABLE, "SecureBoot") == Some(&[1]);
    outln!(
        "# {}: {} events, banks {}; PCRs as it replays them ({}):",
        log.display(),
        parsed.events.len(),
        parsed
            .banks
            .iter()
            .map(|(a, _)| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        bank.name()
    )?;
    for (pcr, v) in &replayed {
        outln!("#   PCR {pcr} = {}", hex::encode(v))?;
    }
    outln!("[tpm.measured_boot]")?;
    outln!("secure_boot = {secure_boot}")?;
    if let Some(out) = dbx_out {
        let dbx = fingerprints(Guid::IMAGE_SECURITY_DATABASE, "dbx")?;
        let text = format!("# dbx of {}\n{}\n", log.display(), dbx.join("\n"));
        std::fs::write(&out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        outln!(
            "dbx_required = {:?}   # {} entries",
            out.display().to_string(),
            dbx.len()
        )?;
    }
    for (table, vendor, name) in [
        ("pk", Guid::GLOBAL_VARIABLE, "PK"),
        ("kek", Guid::GLOBAL_VARIABLE, "KEK"),
        ("db", Guid::IMAGE_SECURITY_DATABASE, "db"),
    ] {
        let list = fingerprints(vendor, name)?;
        if !list.is_empty() {
            outln!("[tpm.measured_boot.{table}]\nsha256 = {list:?}")?;
        }
    }
    let apps: BTreeSet<String> = parsed
        .events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
        .filter_map(|e| e.digest(alg).map(hex::encode))
        .collect();
    outln!(
        "[tpm.measured_boot.boot_applications]\n{} = {:?}",
        bank.name(),
        apps.into_iter().collect::<Vec<_>>()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// PCR 7's Secure Boot variables, each checked to be the data its digest was computed over.
fn config_variables<'a>(
    log: &'a UefiLog<'_>,
    bank: AlgId,
) -> Result<Vec<VariableData<'a>>, String> {
    log.events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pcr == 7 && e.event_type == EventType::EFI_VARIABLE_DRIVER_CONFIG)
        .map(|(index, e)| {
            if !e.data_matches_digest(bank) {
                return Err(format!(
                    "event {index}: its data does not hash to its {bank} digest"
                ));
            }
            e.variable().map_err(|err| format!("event {index}: {err}"))
        })
        .collect()
}
