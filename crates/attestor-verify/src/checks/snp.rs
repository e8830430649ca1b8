//! The SEV-SNP checks: signatures through the `sev` crate under the profile's pinned
//! roots, then every trust decision the crate leaves to its caller, each as its own check.

use std::time::SystemTime;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use sev::firmware::guest::AttestationReport;
use sev::Generation;

use super::{fail, signed_statement, Check, Platform, SnpIdentity, Verified, VerifyError};
use crate::bundle::{Bundle, SnpEvidence};
use crate::dsse;
use crate::evidence::snp::certs::{Tcb, VcekFacts};
use crate::evidence::snp::chain::{verify_report_signature, ChainCache};
use crate::evidence::snp::report::Report;
use crate::evidence::snp::roots::{Product, TrustRoots};
use crate::evidence::snp::vcek::VcekCache;
use crate::evidence::snp_commitment;
use crate::profiles::SnpProfile;

/// KEY_INFO.SIGNING_KEY value meaning the VCEK signed the report.
const SIGNING_KEY_VCEK: u32 = 0;

pub(super) fn verify_snp(
    bundle: &Bundle,
    ev: &SnpEvidence,
    profile: &SnpProfile,
    expect: &super::Expectations,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let parsed = Report::parse(&ev.report).map_err(|e| fail(Check::SnpReport, e))?;
    let vcek = vcek_for(ev, profile, parsed.fields())?;
    let report = verify_signed_report(
        &ev.report,
        &vcek,
        profile.product,
        &profile.roots,
        &profile.chain_cache,
        now,
    )?;
    check_report_policy(&report, profile)?;
    let fields = report.fields();

    // Did the committed key sign this envelope, and does the report commit to both?
    let (payload, statement) = signed_statement(bundle, &ev.signing_key)?;
    if expect.nonce != bundle.nonce {
        return Err(fail(
            Check::ReportBinding,
            "bundle nonce is not the expected nonce",
        ));
    }
    let pae = dsse::pae(&bundle.envelope.payload_type, &bundle.envelope.payload);
    let commitment = snp_commitment(&expect.nonce, &ev.signing_key, &pae);
    verify_slices_are_equal(&fields.report_data, &commitment).map_err(|_| {
        fail(
            Check::ReportBinding,
            "REPORT_DATA does not commit to this envelope, signing key and nonce",
        )
    })?;

    Ok(Verified {
        claims: statement.predicate,
        payload,
        platform: Platform::Snp(SnpIdentity {
            chip_id: fields.chip_id.to_vec(),
            signing_key: ev.signing_key.clone(),
            measurement: fields.measurement,
            host_data: fields.host_data,
            report_id: fields.report_id,
            reported_tcb: Tcb::from(fields.reported_tcb),
            vmpl: fields.vmpl,
            guest_svn: fields.guest_svn,
        }),
    })
}

/// A report of a `product` processor genuinely signed by the VCEK of the chip and TCB it
/// names, under `roots`: `snp-report`, `report-product`, `vcek-chain` (skipping the signature checks of a chain `chains` holds),
/// `report-signature`, `vcek-binding`.
pub fn verify_signed_report(
    raw: &[u8],
    vcek: &[u8],
    product: Product,
    roots: &TrustRoots,
    chains: &ChainCache,
    now: SystemTime,
) -> Result<Report, VerifyError> {
    let report = Report::parse(raw).map_err(|e| fail(Check::SnpReport, e))?;
    check_report_product(report.fields(), product)?;
    let facts = chains
        .verify_vcek(roots, vcek, now)
        .map_err(|e| fail(Check::VcekChain, e))?;
    verify_report_signature(vcek, &report).map_err(|e| fail(Check::ReportSignature, e))?;
    check_vcek_binding(report.fields(), &facts)?;
    Ok(report)
}

/// The profile's reference values: `report-version`, `launch-measurement`,
/// `guest-policy`, `vmpl`, `tcb-minimum`.
pub fn check_report_policy(report: &Report, profile: &SnpProfile) -> Result<(), VerifyError> {
    let fields = report.fields();
    if fields.version < profile.min_report_version {
        return Err(fail(
            Check::ReportVersion,
            format!(
                "report version {} is below the profile's minimum {}",
                fields.version, profile.min_report_version
            ),
        ));
    }
    if !profile.allowed_measurements.contains(&fields.measurement) {
        return Err(fail(
            Check::LaunchMeasurement,
            format!(
                "launch measurement {} is not among the profile's {} allowed",
                hex::encode(fields.measurement),
                profile.allowed_measurements.len()
            ),
        ));
    }
    check_guest_policy(fields, profile)?;
    if !profile.allowed_vmpls.contains(&fields.vmpl) {
        return Err(fail(
            Check::Vmpl,
            format!(
                "report requested at VMPL {}, profile allows {:?}",
                fields.vmpl, profile.allowed_vmpls
            ),
        ));
    }
    let reported_tcb = Tcb::from(fields.reported_tcb);
    if let Some((component, have, want)) = reported_tcb.first_below(&profile.min_tcb) {
        return Err(fail(
            Check::TcbMinimum,
            format!("reported TCB {component} is {have}, profile requires at least {want}"),
        ));
    }
    Ok(())
}

/// The report must be laid out for the profile's processor: the TCB_VERSION layout (and
/// so what each TCB number means) depends on it. Versions 3+ name the processor by CPUID
/// family and model; version 2 has no such field, and its only layout marker is a
/// Turin-style chip id (8 bytes, then zeros), which is what the `sev` crate goes by.
fn check_report_product(fields: &AttestationReport, product: Product) -> Result<(), VerifyError> {
    let (reported, matches) = match (fields.cpuid_fam_id, fields.cpuid_mod_id) {
        (Some(family), Some(model)) => {
            let matches = matches!(
                (Generation::identify_cpu(family, model), product),
                (Ok(Generation::Milan), Product::Milan)
                    | (Ok(Generation::Genoa), Product::Genoa)
                    | (Ok(Generation::Turin), Product::Turin)
            );
            (
                format!("CPUID family {family:#x} model {model:#x}"),
                matches,
            )
        }
        _ => {
            let turin_like = fields
                .chip_id
                .get(8..)
                .is_some_and(|r| r.iter().all(|b| *b == 0));
            let layout = if turin_like { "Turin" } else { "Milan/Genoa" };
            (
                format!("a version-2 report with a {layout} chip id"),
                turin_like == (product == Product::Turin),
            )
        }
    };
    if matches {
        return Ok(());
    }
    Err(fail(
        Check::ReportProduct,
        format!(
            "report is laid out for {reported}, the profile is for {}",
            product.kds_name()
        ),
    ))
}

/// The bundle's VCEK, else the profile's cache entry for this chip and TCB. Whichever it
/// is, the chain check decides whether it is trusted.
fn vcek_for(
    ev: &SnpEvidence,
    profile: &SnpProfile,
    fields: &AttestationReport,
) -> Result<Vec<u8>, VerifyError> {
    if !ev.vcek.is_empty() {
        return Ok(ev.vcek.clone());
    }
    let (chip_id, tcb) = (&fields.chip_id[..], &Tcb::from(fields.reported_tcb));
    let cache = profile.vcek_cache.as_ref().map(VcekCache::new);
    cache
        .as_ref()
        .and_then(|c| c.get(profile.product, chip_id, tcb))
        .ok_or_else(|| {
            fail(
                Check::VcekChain,
                match cache {
                    Some(c) => format!(
                        "bundle carries no VCEK and {} is not cached",
                        c.path(profile.product, chip_id, tcb).display()
                    ),
                    None => "bundle carries no VCEK and the profile names no vcek_cache".into(),
                },
            )
        })
}

/// The VCEK must be the one for this chip at the TCB the report claims: the crate checks
/// neither, and a VCEK of another chip or TCB would otherwise vouch for this report.
fn check_vcek_binding(fields: &AttestationReport, facts: &VcekFacts) -> Result<(), VerifyError> {
    let reported_tcb = &Tcb::from(fields.reported_tcb);
    if fields.key_info.signing_key() != SIGNING_KEY_VCEK {
        return Err(fail(
            Check::VcekBinding,
            format!(
                "report is signed by key kind {} (only the VCEK, 0, is supported)",
                fields.key_info.signing_key()
            ),
        ));
    }
    if *reported_tcb != facts.tcb {
        return Err(fail(
            Check::VcekBinding,
            format!(
                "report's reported TCB ({reported_tcb}) is not the VCEK's ({})",
                facts.tcb
            ),
        ));
    }
    let (id, rest) = fields
        .chip_id
        .split_at(facts.hw_id.len().min(fields.chip_id.len()));
    if facts.hw_id.is_empty() || id != facts.hw_id.as_slice() || rest.iter().any(|b| *b != 0) {
        return Err(fail(
            Check::VcekBinding,
            "report's CHIP_ID is not the VCEK's hwID (or the chip id is masked)",
        ));
    }
    Ok(())
}

fn check_guest_policy(fields: &AttestationReport, profile: &SnpProfile) -> Result<(), VerifyError> {
    let p = fields.policy;
    let rules = profile.policy;
    let refused = if p.debug_allowed() && !rules.allow_debug {
        Some("allows debugging (the host can read guest memory)")
    } else if p.migrate_ma_allowed() && !rules.allow_migration_agent {
        Some("allows a migration agent")
    } else if p.smt_allowed() && !rules.allow_smt {
        Some("allows SMT")
    } else {
        None
    };
    match refused {
        Some(what) => Err(fail(
            Check::GuestPolicy,
            format!(
                "guest policy {:#x} {what}, which the profile forbids",
                u64::from(p)
            ),
        )),
        None => Ok(()),
    }
}
