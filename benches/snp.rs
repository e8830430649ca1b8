//! SEV-SNP verification against the bare signature check it cannot avoid, measured in the
//! same run: the real Milan report with AMD's chain, cold (three RSA-4096 PSS checks
//! through the `sev` crate, and the report's P-384 ECDSA by aws-lc) and with the chain
//! cached (what the ledger pays per submission after a chip's first), the report
//! signature alone (VCEK parsing included), a whole simulated SNP bundle, and a bare P-384
//! verification by aws-lc, key already extracted, as the reference. Run:
//! `cargo bench --bench snp`.
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod bench_support;

use std::path::Path;
use std::time::SystemTime;

use attestor_agent::collect::{self, RuntimeStatus};
use attestor_agent::config::AgentConfig;
use attestor_agent::snp::SnpAgent;
use attestor_platform::snp::sim::SimulatedProcessor;
use attestor_verify::checks::{verify_bundle, verify_signed_report, Expectations};
use attestor_verify::evidence::snp::certs::vcek_facts;
use attestor_verify::evidence::snp::chain::{verify_report_signature, ChainCache};
use attestor_verify::evidence::snp::report::{decode_report_file, Report};
use attestor_verify::evidence::snp::roots::Product;
use attestor_verify::profiles::Profile;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use bench_support::median_ns;
use criterion::{black_box, Criterion};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/snp");
    let raw =
        decode_report_file(&std::fs::read(fixtures.join("report_milan.hex")).unwrap()).unwrap();
    let vcek = std::fs::read(fixtures.join("vcek_milan.der")).unwrap();
    let roots = Product::Milan.amd_roots().unwrap();
    let report = Report::parse(&raw).unwrap();
    let now = SystemTime::now();

    // The reference operation, done by aws-lc on the same report and key.
    let key = vcek_facts(&vcek).unwrap().public_key_sec1;
    let fixed = report.signature_p384_fixed();
    let signed = report.signed_bytes();

    // A simulated guest's bundle, as the agent makes it.
    let state = tempfile::tempdir().unwrap();
    let config_path = root.join("examples/agent-snp-sim.toml");
    let config = AgentConfig::load(&config_path).unwrap();
    let snp = config.snp.clone().unwrap();
    let sp = SimulatedProcessor::from_settings(snp.simulation.as_ref().unwrap()).unwrap();
    let mut agent = SnpAgent::with_processor(Box::new(sp), state.path(), &snp).unwrap();
    let kernel = collect::read_policy_kernel(
        &config.policy_kernel.policy,
        &config.policy_kernel.config_files,
    )
    .unwrap();
    let status = RuntimeStatus::from_json(
        "status",
        &std::fs::read(root.join("examples/status.json")).unwrap(),
    )
    .unwrap();
    let bundle = agent.attest(&kernel, &status, b"").unwrap();
    let profile = Profile::load(&root.join("firmware-profiles/snp-sim.toml")).unwrap();
    let expect = Expectations::default();

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("snp");
    group.bench_function("milan_chain_and_report", |b| {
        b.iter(|| {
            let cold = ChainCache::new(1);
            verify_signed_report(black_box(&raw), &vcek, Product::Milan, &roots, &cold, now)
                .unwrap()
        })
    });
    let warm = ChainCache::default();
    group.bench_function("milan_cached_chain_and_report", |b| {
        b.iter(|| {
            verify_signed_report(black_box(&raw), &vcek, Product::Milan, &roots, &warm, now)
                .unwrap()
        })
    });
    group.bench_function("milan_report_signature", |b| {
        b.iter(|| verify_report_signature(&vcek, black_box(&report)).unwrap())
    });
    group.bench_function("sim_verify_bundle", |b| {
        b.iter(|| verify_bundle(black_box(&bundle), &profile, &expect).unwrap())
    });
    group.bench_function("one_p384_verify_aws_lc", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &key)
                .verify(black_box(signed), &fixed)
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();

    println!("\nmedians, same run (reference: one P-384 verify by aws-lc):");
    let reference = median_ns("snp", "one_p384_verify_aws_lc");
    for (label, name) in [
        ("Milan report + AMD chain", "milan_chain_and_report"),
        (
            "Milan report, chain cached",
            "milan_cached_chain_and_report",
        ),
        (
            "Milan report signature alone (aws-lc)",
            "milan_report_signature",
        ),
        ("simulated SNP bundle, all checks", "sim_verify_bundle"),
    ] {
        if let (Some(x), Some(y)) = (median_ns("snp", name), reference) {
            println!(
                "{label}: {:.3} ms vs {:.3} ms = {:.1}x",
                x / 1e6,
                y / 1e6,
                x / y
            );
        }
    }
}
