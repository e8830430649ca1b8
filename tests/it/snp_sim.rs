//! A simulated SEV-SNP guest end to end: the agent attests, the verifier accepts, and
//! each binding broken alone is refused by the check that owns it.

use std::path::{Path, PathBuf};
use std::process::Command;

use attestor_agent::collect::{self, PolicyKernelConfig, RuntimeStatus};
use attestor_agent::config::{AgentConfig, EvidenceKind, SnpInterface};
use attestor_agent::evidence_source::EvidenceSource;
use attestor_agent::snp::SnpAgent;
use attestor_agent::snp::SnpAgentError;
use attestor_platform::snp::sim::{SimulatedChip, SimulatedLaunch, SimulatedProcessor};
use attestor_platform::snp::SecureProcessor;
use attestor_verify::bundle::{Bundle, Evidence, SnpEvidence};
use attestor_verify::checks::{verify_bundle, Check, Expectations, Platform};
use attestor_verify::dsse;
use attestor_verify::evidence::snp::roots::Product;
use attestor_verify::profiles::Profile;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sim_profile() -> Profile {
    Profile::load(&root().join("firmware-profiles/snp-sim.toml")).unwrap()
}

/// The example simulated-guest config, with its state in a temporary directory.
struct Guest {
    dir: tempfile::TempDir,
    config: AgentConfig,
}

impl Guest {
    fn new() -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(root().join("examples/agent-snp-sim.toml"))
            .unwrap()
            .replace(
                "../target/attestor-state-snp-sim",
                dir.path().to_str().unwrap(),
            );
        let config =
            AgentConfig::parse(&text, &root().join("examples/agent-snp-sim.toml")).unwrap();
        assert_eq!(config.evidence, EvidenceKind::Snp);
        Guest { dir, config }
    }

    fn kernel(&self) -> PolicyKernelConfig {
        let c = &self.config;
        collect::read_policy_kernel(&c.policy_kernel.policy, &c.policy_kernel.config_files).unwrap()
    }

    fn status(&self) -> RuntimeStatus {
        let bytes = std::fs::read(root().join("examples/status.json")).unwrap();
        RuntimeStatus::from_json("status", &bytes).unwrap()
    }

    fn launch(&self) -> SimulatedLaunch {
        SimulatedLaunch::from_settings(
            self.config
                .snp
                .as_ref()
                .unwrap()
                .simulation
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    /// An agent on a simulated processor launched as `launch` on `chip_dir`'s chip.
    fn agent_on(
        &self,
        chip_dir: &Path,
        launch: SimulatedLaunch,
    ) -> Result<SnpAgent, SnpAgentError> {
        let sp = SimulatedProcessor::new(SimulatedChip::load(chip_dir).unwrap(), launch).unwrap();
        SnpAgent::with_processor(
            Box::new(sp),
            self.dir.path(),
            self.config.snp.as_ref().unwrap(),
        )
    }

    /// One bundle from a guest launched as `launch`; a launch other than the configured
    /// one keeps its own state, as a sealed key opens only in the launch that sealed it.
    fn attest_with(&self, launch: SimulatedLaunch, nonce: &[u8]) -> Bundle {
        let configured = self.launch();
        let state =
            if (launch.measurement, launch.policy) == (configured.measurement, configured.policy) {
                self.dir.path().to_path_buf()
            } else {
                self.dir.path().join(format!(
                    "{}-{:x}",
                    hex::encode(&launch.measurement[..4]),
                    launch.policy
                ))
            };
        let sp = SimulatedProcessor::new(
            SimulatedChip::load(&root().join("examples/snp-sim")).unwrap(),
            launch,
        )
        .unwrap();
        SnpAgent::with_processor(Box::new(sp), &state, self.config.snp.as_ref().unwrap())
            .unwrap()
            .attest(&self.kernel(), &self.status(), nonce)
            .unwrap()
    }

    fn attest(&self) -> Bundle {
        self.attest_with(self.launch(), b"")
    }
}

fn snp_ev(bundle: &mut Bundle) -> &mut SnpEvidence {
    match &mut bundle.evidence {
        Evidence::Snp(ev) => ev,
        other => panic!("not SNP evidence: {other:?}"),
    }
}

fn refused(bundle: &Bundle, profile: &Profile, expect: &Expectations) -> (Check, String) {
    let e = verify_bundle(bundle, profile, expect).expect_err("bundle was accepted");
    (e.check, e.reason)
}

#[test]
fn simulated_guest_attests_and_verifies_through_config_and_json() {
    let guest = Guest::new();
    let mut source = EvidenceSource::open(guest.config.clone(), "unused").unwrap();
    let bundle = source
        .attest(&guest.kernel(), &guest.status(), b"nonce")
        .unwrap();
    let parsed = Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(parsed, bundle);
    let expect = Expectations {
        nonce: b"nonce".to_vec(),
        ..Default::default()
    };
    let verified = verify_bundle(&parsed, &sim_profile(), &expect).unwrap();
    let Platform::Snp(id) = &verified.platform else {
        panic!("not SNP")
    };
    assert_eq!(id.measurement, guest.launch().measurement);
    assert_eq!(id.signing_key, snp_ev(&mut parsed.clone()).signing_key);
    assert_eq!(verified.ak_public(), None);
    assert_eq!(
        verified.claims.policy_hash,
        hex::encode(guest.kernel().policy_hash)
    );
    // The key survives a restart of the same launch: the ledger can pin it.
    let again = guest.attest();
    assert_eq!(snp_ev(&mut again.clone()).signing_key, id.signing_key);
}

#[test]
fn each_broken_binding_is_refused_by_its_own_check() {
    let guest = Guest::new();
    let profile = sim_profile();
    let offline = Expectations::default();
    let good = guest.attest();
    verify_bundle(&good, &profile, &offline).unwrap();

    // The report of another envelope (same key, same guest).
    let other = guest.attest();
    let mut swapped = good.clone();
    swapped.envelope = other.envelope.clone();
    assert_eq!(
        refused(&swapped, &profile, &offline).0,
        Check::ReportBinding
    );

    // Another nonce than the verifier's, or a bundle claiming the verifier's nonce.
    let with_nonce = guest.attest_with(guest.launch(), b"n1");
    let n2 = Expectations {
        nonce: b"n2".to_vec(),
        ..Default::default()
    };
    assert_eq!(refused(&with_nonce, &profile, &n2).0, Check::ReportBinding);
    let mut relabelled = with_nonce.clone();
    relabelled.nonce = b"n2".to_vec();
    assert_eq!(refused(&relabelled, &profile, &n2).0, Check::ReportBinding);

    // Another signing key than the one REPORT_DATA commits to, re-signing the envelope.
    let mut rekeyed = good.clone();
    let signer = dsse::EcdsaP384Signer::generate().unwrap();
    rekeyed.envelope = dsse::Envelope::sign(
        &good.envelope.payload_type,
        good.envelope.payload.clone(),
        &signer,
    )
    .unwrap();
    snp_ev(&mut rekeyed).signing_key = signer.public_key_sec1();
    assert_eq!(
        refused(&rekeyed, &profile, &offline).0,
        Check::ReportBinding
    );
    // Or keeping the key and forging its signature.
    let mut forged = good.clone();
    forged.envelope.signatures[0].sig = rekeyed.envelope.signatures[0].sig.clone();
    assert_eq!(
        refused(&forged, &profile, &offline).0,
        Check::EnvelopeSignature
    );

    // A measurement the profile does not allow.
    let mut launch = guest.launch();
    launch.measurement = [0x66; 48];
    let (check, reason) = refused(&guest.attest_with(launch, b""), &profile, &offline);
    assert_eq!(check, Check::LaunchMeasurement, "{reason}");

    // A debuggable guest; a migration agent.
    let mut launch = guest.launch();
    launch.policy |= 1 << 19;
    let (check, reason) = refused(&guest.attest_with(launch, b""), &profile, &offline);
    assert_eq!(check, Check::GuestPolicy);
    assert!(reason.contains("debugging"), "{reason}");
    let mut launch = guest.launch();
    launch.policy |= 1 << 18;
    assert_eq!(
        refused(&guest.attest_with(launch, b""), &profile, &offline).0,
        Check::GuestPolicy
    );

    // TCB below the minimum.
    let mut strict = profile.clone();
    strict.snp.as_mut().unwrap().min_tcb.microcode = 200;
    let (check, reason) = refused(&good, &strict, &offline);
    assert_eq!(check, Check::TcbMinimum);
    assert!(reason.contains("microcode is 115"), "{reason}");

    // A report version below the profile's minimum (firmware downgrade).
    let mut launch = guest.launch();
    launch.report_version = 2;
    let old = guest.attest_with(launch, b"");
    verify_bundle(&old, &profile, &offline).unwrap();
    let mut v3 = profile.clone();
    v3.snp.as_mut().unwrap().min_report_version = 3;
    assert_eq!(refused(&old, &v3, &offline).0, Check::ReportVersion);

    // A VMPL the profile does not allow.
    let mut vmpl1 = profile.clone();
    vmpl1.snp.as_mut().unwrap().allowed_vmpls = vec![1];
    assert_eq!(refused(&good, &vmpl1, &offline).0, Check::Vmpl);

    // The simulation's roots are not trusted by a real-hardware profile.
    let milan = Profile::load(&root().join("firmware-profiles/amd-milan.toml")).unwrap();
    let (check, reason) = refused(&good, &milan, &offline);
    assert_eq!(check, Check::VcekChain);
    assert!(reason.contains("AMD Milan roots"), "{reason}");

    // A TPM-only profile has nothing to check an SNP bundle against.
    let mut tpm_only = profile.clone();
    tpm_only.snp = None;
    assert_eq!(refused(&good, &tpm_only, &offline).0, Check::VcekChain);
}

#[test]
fn forged_reports_and_vceks_are_refused() {
    let guest = Guest::new();
    let profile = sim_profile();
    let offline = Expectations::default();
    let good = guest.attest();

    // A whole guest on a chip from another chain (its own ARK), same launch.
    let other = guest.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let on_other = SnpAgent::with_processor(
        Box::new(
            SimulatedProcessor::new(
                SimulatedChip::load(&root().join("tests/fixtures/snp/other-chain")).unwrap(),
                guest.launch(),
            )
            .unwrap(),
        ),
        &other,
        guest.config.snp.as_ref().unwrap(),
    )
    .unwrap()
    .attest(&guest.kernel(), &guest.status(), b"")
    .unwrap();
    assert_eq!(refused(&on_other, &profile, &offline).0, Check::VcekChain);
    // Its report presented with our chip's VCEK: chain holds, signature does not.
    let mut mixed = on_other.clone();
    snp_ev(&mut mixed).vcek = snp_ev(&mut good.clone()).vcek.clone();
    assert_eq!(
        refused(&mixed, &profile, &offline).0,
        Check::ReportSignature
    );

    // Tampered report bytes: signed fields, then the signature.
    for (at, check) in [
        (0x90, Check::ReportSignature),  // measurement
        (0x50, Check::ReportSignature),  // report data
        (0x2A0, Check::ReportSignature), // signature r
        (0x400, Check::SnpReport),       // reserved, unsigned tail
    ] {
        let mut bad = good.clone();
        snp_ev(&mut bad).report[at] ^= 0x40;
        assert_eq!(refused(&bad, &profile, &offline).0, check, "offset {at:#x}");
    }
    let mut short = good.clone();
    snp_ev(&mut short).report.truncate(1000);
    assert_eq!(refused(&short, &profile, &offline).0, Check::SnpReport);

    // No VCEK in the bundle and none cached.
    let mut bare = good.clone();
    snp_ev(&mut bare).vcek.clear();
    let (check, reason) = refused(&bare, &profile, &offline);
    assert_eq!(check, Check::VcekChain);
    assert!(reason.contains("no VCEK"), "{reason}");
    // ... but the profile's VCEK cache has it (the agent cached it from the table).
    let mut cached = profile.clone();
    cached.snp.as_mut().unwrap().vcek_cache = Some(guest.dir.path().join("snp/vcek"));
    verify_bundle(&bare, &cached, &offline).unwrap();
}

#[test]
fn a_key_sealed_under_one_measurement_cannot_be_unsealed_under_another() {
    let guest = Guest::new();
    let chip = root().join("examples/snp-sim");
    let first = guest.agent_on(&chip, guest.launch()).unwrap();
    let key = first.signing_key().to_vec();
    drop(first);
    // Same launch again: same key.
    assert_eq!(
        guest.agent_on(&chip, guest.launch()).unwrap().signing_key(),
        key
    );
    // Other code, or another policy: the derived key differs and unsealing fails.
    let mut other_code = guest.launch();
    other_code.measurement[0] ^= 1;
    let err = guest
        .agent_on(&chip, other_code.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another measurement or policy"), "{err}");
    let mut other_policy = guest.launch();
    other_policy.policy |= 1 << 20;
    assert!(guest.agent_on(&chip, other_policy).is_err());
    // Another chip, same launch.
    assert!(guest
        .agent_on(
            &root().join("tests/fixtures/snp/other-chain"),
            guest.launch()
        )
        .is_err());
    // The derived keys themselves differ by measurement.
    let key_of = |launch: SimulatedLaunch| {
        SimulatedProcessor::new(SimulatedChip::load(&chip).unwrap(), launch)
            .unwrap()
            .sealing_key()
            .unwrap()
    };
    assert_ne!(key_of(guest.launch()), key_of(other_code.clone()));
    assert_eq!(key_of(guest.launch()), key_of(guest.launch()));
}

#[test]
fn missing_device_is_a_clear_error() {
    if Path::new("/dev/sev-guest").exists() {
        panic!("this test expects a machine that is not an SEV-SNP guest");
    }
    let mut guest = Guest::new();
    let snp = guest.config.snp.as_mut().unwrap();
    snp.simulation = None;
    snp.interface = SnpInterface::SevGuest;
    let err = SnpAgent::open(&guest.config).err().unwrap().to_string();
    assert!(
        err.contains("/dev/sev-guest does not exist: this is not an SEV-SNP guest"),
        "{err}"
    );
}

fn attestor(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn cli_verifies_bare_reports_and_snp_bundles() {
    let fx = |n: &str| path(root().join("tests/fixtures/snp").join(n));
    let milan = path(root().join("firmware-profiles/amd-milan.toml"));
    let (code, out) = attestor(&[
        "snp",
        "verify-report",
        &fx("report_milan.hex"),
        "--vcek",
        &fx("vcek_milan.der"),
        "--profile",
        &milan,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("measurement:      7a1e5c26") && out.contains("AMD Milan roots"),
        "{out}"
    );
    // Raw bytes work as well as hex; another product's roots fail, naming the check.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("report.bin");
    let bytes = hex::decode(
        std::fs::read_to_string(fx("report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    std::fs::write(&raw, &bytes).unwrap();
    let verify_raw = |extra: &[&str]| {
        let raw = path(raw.clone());
        let vcek = fx("vcek_milan.der");
        let mut args = vec![
            "snp",
            "verify-report",
            raw.as_str(),
            "--vcek",
            vcek.as_str(),
        ];
        args.extend(extra);
        attestor(&args)
    };
    let (code, out) = verify_raw(&["--product", "genoa"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED vcek-chain"), "{out}");
    let (code, out) = verify_raw(&["--report-data", "00"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED report-binding"), "{out}");
    let sim = path(root().join("firmware-profiles/snp-sim.toml"));
    let (code, out) = verify_raw(&["--profile", &sim]);
    assert_eq!(code, 1);
    assert!(out.contains("FAILED vcek-chain"), "{out}");

    // attest + verify with the example simulated guest, state in a temporary directory.
    let guest = Guest::new();
    let config = guest.dir.path().join("agent.toml");
    let text = std::fs::read_to_string(root().join("examples/agent-snp-sim.toml")).unwrap();
    let examples = path(root().join("examples"));
    let text = text
        .replace(
            "../target/attestor-state-snp-sim",
            &path(guest.dir.path().join("state")),
        )
        .replace("\"policy-kernel/", &format!("\"{examples}/policy-kernel/"))
        .replace("\"status.json\"", &format!("\"{examples}/status.json\""))
        .replace("\"snp-sim\"", &format!("\"{examples}/snp-sim\""));
    std::fs::write(&config, text).unwrap();
    let bundle = path(guest.dir.path().join("bundle.json"));
    let (code, out) = attestor(&[
        "attest",
        "--config",
        &path(config),
        "--out",
        &bundle,
        "--nonce",
        "abcd",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = attestor(&["verify", &bundle, "--profile", &sim, "--nonce", "abcd"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SEV-SNP chip"), "{out}");
    let (code, out) = attestor(&["verify", &bundle, "--profile", &milan, "--nonce", "abcd"]);
    assert_eq!(code, 1);
    assert!(out.contains("FAILED vcek-chain"), "{out}");
}

fn turin_profile() -> Profile {
    Profile::load(&root().join("firmware-profiles/snp-sim-turin.toml")).unwrap()
}

/// A bundle from a fresh guest on `chip` (a directory of examples/) emitting `product`'s
/// report layout.
fn bundle_on(chip: &str, product: Product) -> Bundle {
    let guest = Guest::new();
    let mut launch = guest.launch();
    launch.product = product;
    guest
        .agent_on(&root().join(chip), launch)
        .unwrap()
        .attest(&guest.kernel(), &guest.status(), b"")
        .unwrap()
}

#[test]
fn turin_reports_verify_under_a_turin_profile_with_their_fmc_compared() {
    let bundle = bundle_on("examples/snp-sim-turin", Product::Turin);
    let verified = verify_bundle(&bundle, &turin_profile(), &Expectations::default()).unwrap();
    let Platform::Snp(id) = &verified.platform else {
        panic!("not SNP")
    };
    assert_eq!(id.reported_tcb.fmc, Some(2));
    assert_eq!(id.chip_id[8..], [0; 56], "Turin chip ids are 8 bytes");

    let mut strict = turin_profile();
    let snp = strict.snp.as_mut().unwrap();
    snp.min_tcb.fmc = Some(3);
    let (check, reason) = refused(&bundle, &strict, &Expectations::default());
    assert_eq!(check, Check::TcbMinimum, "{reason}");
    assert!(reason.contains("fmc is 2"), "{reason}");
}

#[test]
fn a_report_of_another_layout_than_the_profiles_product_is_refused() {
    let turin = turin_profile();
    // Milan layout signed by the Turin chip: the chain holds, the layout does not.
    let milan_on_turin_chip = bundle_on("examples/snp-sim-turin", Product::Milan);
    let (check, reason) = refused(&milan_on_turin_chip, &turin, &Expectations::default());
    assert_eq!(check, Check::ReportProduct, "{reason}");
    assert!(reason.contains("family 0x19"), "{reason}");
    let milan = bundle_on("examples/snp-sim", Product::Milan);
    assert_eq!(
        refused(&milan, &turin, &Expectations::default()).0,
        Check::ReportProduct
    );
    let turin_report = bundle_on("examples/snp-sim-turin", Product::Turin);
    assert_eq!(
        refused(&turin_report, &sim_profile(), &Expectations::default()).0,
        Check::ReportProduct
    );
}

#[test]
fn turin_profiles_must_set_a_minimum_fmc_and_older_ones_must_not() {
    let path = root().join("firmware-profiles/snp-sim-turin.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = Profile::parse(&text.replace("fmc = 2\n", ""), &path).unwrap_err();
    assert!(err.to_string().contains("fmc is required"), "{err}");
    let err = Profile::parse(&text.replace("\"turin\"", "\"milan\""), &path).unwrap_err();
    assert!(err.to_string().contains("no FMC"), "{err}");
}

#[test]
fn a_cached_chain_still_refuses_other_signers_and_other_roots() {
    let profile = sim_profile();
    let cache = profile.snp.as_ref().unwrap().chain_cache.clone();
    let good = bundle_on("examples/snp-sim", Product::Milan);
    verify_bundle(&good, &profile, &Expectations::default()).unwrap();
    verify_bundle(&good, &profile, &Expectations::default()).unwrap();
    assert_eq!(cache.len(), 1, "one VCEK, one verified chain");

    // A report signed by another chip's key, presented with the cached VCEK.
    let mut forged = bundle_on("tests/fixtures/snp/other-chain", Product::Milan);
    snp_ev(&mut forged).vcek = snp_ev(&mut good.clone()).vcek.clone();
    let (check, reason) = refused(&forged, &profile, &Expectations::default());
    assert_eq!(check, Check::ReportSignature, "{reason}");

    // The cached VCEK judged under other roots (same cache): the chain is checked again
    // and fails, and the failure is not cached.
    let mut other_roots = turin_profile();
    let snp = other_roots.snp.as_mut().unwrap();
    snp.product = Product::Milan;
    snp.min_tcb = profile.snp.as_ref().unwrap().min_tcb;
    snp.chain_cache = cache.clone();
    let (check, reason) = refused(&good, &other_roots, &Expectations::default());
    assert_eq!(check, Check::VcekChain, "{reason}");
    assert_eq!(cache.len(), 1, "a failed chain is never cached");
}

#[test]
fn the_chain_cache_is_bounded_and_keeps_the_newest_chains() {
    use attestor_verify::evidence::snp::chain::ChainCache;
    let now = std::time::SystemTime::now();
    let chips = [
        (sim_profile(), "examples/snp-sim"),
        (turin_profile(), "examples/snp-sim-turin"),
        (turin_profile(), "examples/snp-sim-turin/second-chip"),
    ];
    let cache = ChainCache::new(2);
    for (profile, dir) in &chips {
        let vcek = std::fs::read(root().join(dir).join("vcek.der")).unwrap();
        let roots = &profile.snp.as_ref().unwrap().roots;
        cache.verify_vcek(roots, &vcek, now).unwrap();
        assert!(cache.len() <= 2);
    }
    assert_eq!(cache.len(), 2);
    // The evicted chain is verified again when it comes back.
    let (profile, dir) = &chips[0];
    let vcek = std::fs::read(root().join(dir).join("vcek.der")).unwrap();
    let facts = cache
        .verify_vcek(&profile.snp.as_ref().unwrap().roots, &vcek, now)
        .unwrap();
    assert_eq!(facts.tcb.fmc, None);
    assert_eq!(cache.len(), 2);
}
