//! `attestor snp ...`: tools for operators of SEV-SNP guests. Wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;

use attestor_verify::checks::{
    check_report_policy, verify_signed_report, Platform, SnpIdentity, TpmIdentity,
};
use attestor_verify::evidence::snp::certs::Tcb;
use attestor_verify::evidence::snp::chain::ChainCache;
use attestor_verify::evidence::snp::measure::{launch_measurement, LaunchImages};
use attestor_verify::evidence::snp::report::{decode_report_file, Report};
use attestor_verify::evidence::snp::roots::Product;
use attestor_verify::profiles::Profile;

#[derive(Subcommand)]
pub(crate) enum SnpCommand {
    /// Verify a bare attestation report (raw or hex, as snpguest writes it): the chain
    /// ARK -> ASK -> VCEK, the signature, and with --profile the profile's checks. Prints
    /// the decoded fields; exits 1 naming the first failed check.
    VerifyReport {
        /// Report file: 1184 raw bytes or their hex.
        report: PathBuf,
        /// The chip's VCEK certificate (DER or PEM).
        #[arg(long)]
        vcek: PathBuf,
        /// Processor generation: its report layout, and its AMD roots are trusted
        /// (ignored with --profile, which names both).
        #[arg(long, default_value = "milan", value_parser = parse_product)]
        product: Product,
        /// Firmware profile with an [snp] section: its roots and reference values.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Expected REPORT_DATA (hex, 64 bytes).
        #[arg(long)]
        report_data: Option<String>,
    },
    /// Compute the launch measurement a guest booted from these images would have, for a
    /// profile's allowed_measurements.
    Measure(MeasureArgs),
}

/// What QEMU (or another VMM) launches.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MeasureArgs {
    /// OVMF firmware image (built with SNP support).
    #[arg(long)]
    ovmf: PathBuf,
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    append: Option<String>,
    #[arg(long)]
    vcpus: u32,
    /// QEMU vCPU model, e.g. EPYC-Milan, EPYC-Genoa.
    #[arg(long, default_value = "EPYC-Milan")]
    vcpu_type: String,
    /// VMM: qemu, ec2 or krun.
    #[arg(long, default_value = "qemu")]
    vmm: String,
    /// SEV_FEATURES the VMM enables, hex (QEMU's default 1: SNP active).
    #[arg(long, default_value = "1", value_parser = parse_hex_u64)]
    guest_features: u64,
}

fn parse_hex_u64(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("not hex: {e}"))
}

fn parse_product(text: &str) -> Result<Product, String> {
    Product::parse(text).ok_or_else(|| format!("{text:?} is not milan, genoa or turin"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub(crate) fn run(command: SnpCommand) -> Result<ExitCode, String> {
    match command {
        SnpCommand::VerifyReport {
            report,
            vcek,
            product,
            profile,
            report_data,
        } => verify_report(&report, &vcek, product, profile.as_deref(), report_data),
        SnpCommand::Measure(args) => {
            let images = LaunchImages {
                ovmf: args.ovmf,
                kernel: args.kernel,
                initrd: args.initrd,
                append: args.append,
                vcpus: args.vcpus,
                vcpu_type: args.vcpu_type,
                vmm: args.vmm,
                guest_features: args.guest_features,
            };
            let digest = launch_measurement(&images).map_err(|e| e.to_string())?;
            outln!("{}", hex::encode(digest))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_report(
    report: &Path,
    vcek: &Path,
    product: Product,
    profile: Option<&Path>,
    report_data: Option<String>,
) -> Result<ExitCode, String> {
    let raw = decode_report_file(&read(report)?).map_err(|e| e.to_string())?;
    let vcek = read(vcek)?;
    let vcek = match attestor_verify::evidence::snp::roots::one_cert(&vcek) {
        Ok(der) => der,
        Err(_) => vcek,
    };
    let profile = profile
        .map(|p| Profile::load(p).map_err(|e| e.to_string()))
        .transpose()?;
    let snp = match &profile {
        Some(p) => Some(
            p.snp
                .as_ref()
                .ok_or_else(|| format!("profile {:?} has no [snp] section", p.name))?,
        ),
        None => None,
    };
    let (product, roots) = match snp {
        Some(snp) => (snp.product, snp.roots.clone()),
        None => (product, product.amd_roots().map_err(|e| e.to_string())?),
    };
    if let Ok(parsed) = Report::parse(&raw) {
        print_fields(&parsed)?;
    }
    let chains = ChainCache::new(1);
    let outcome = verify_signed_report(&raw, &vcek, product, &roots, &chains, SystemTime::now())
        .and_then(|r| match snp {
            Some(snp) => check_report_policy(&r, snp).map(|_| r),
            None => Ok(r),
        });
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            outln!("FAILED {}: {}", e.check, e.reason)?;
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(expected) = report_data {
        let expected = hex::decode(expected).map_err(|e| format!("--report-data: {e}"))?;
        if expected != report.fields().report_data {
            outln!("FAILED report-binding: REPORT_DATA is not the expected value")?;
            return Ok(ExitCode::from(1));
        }
    }
    outln!(
        "OK: report signed by the VCEK of chip {}, chained to the {}{}",
        hex::encode(&report.fields().chip_id[..8]),
        roots.origin,
        if profile.is_some() {
            ", profile checks hold"
        } else {
            ""
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print_fields(report: &Report) -> Result<(), crate::output::OutputError> {
    let f = report.fields();
    outln!("version:          {}", f.version)?;
    outln!(
        "guest policy:     {:#x} (debug {}, migration agent {}, SMT {})",
        u64::from(f.policy),
        f.policy.debug_allowed(),
        f.policy.migrate_ma_allowed(),
        f.policy.smt_allowed()
    )?;
    outln!("vmpl:             {}", f.vmpl)?;
    outln!("measurement:      {}", hex::encode(f.measurement))?;
    outln!("report data:      {}", hex::encode(f.report_data))?;
    outln!("host data:        {}", hex::encode(f.host_data))?;
    outln!("reported TCB:     {}", Tcb::from(f.reported_tcb))?;
    outln!("committed TCB:    {}", Tcb::from(f.committed_tcb))?;
    outln!("chip id:          {}", hex::encode(f.chip_id))?;
    outln!("report id:        {}", hex::encode(f.report_id))
}

/// One line about the platform behind a verified bundle.
pub(crate) fn describe(platform: &Platform) -> String {
    let tpm = |t: &TpmIdentity| {
        format!(
            "TPM reset {} restart {}, {}",
            t.clock.reset_count, t.clock.restart_count, t.ak_binding
        )
    };
    let snp = |s: &SnpIdentity| {
        format!(
            "SEV-SNP chip {} measurement {} TCB {}",
            hex::encode(s.chip_id.get(..8).unwrap_or_default()),
            hex::encode(s.measurement),
            s.reported_tcb
        )
    };
    match platform {
        Platform::Tpm(t) => tpm(t),
        Platform::Snp(s) => snp(s),
        Platform::TpmSnp(t, s) => format!("{} + {}", tpm(t), snp(s)),
    }
}
