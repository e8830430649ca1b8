//! swtpm provisioned like the TPMs hosts really have (attestor_testkit::provision): only
//! the sha256 bank, only an RSA-2048, a P-256 or a P-521 EK certificate, or none (the
//! certificate as a file, or the EK's hash on an allow-list). Each runs `init → attest → verify` with
//! the CLI, `tpm2_checkquote` accepts its quote, and its agent enrols with a ledger
//! process and gets a heartbeat accepted.

use std::path::Path;
use std::process::Command;

use crate::support::agent::{tpm2_checkquote_accepts, tpm_ev, AgentFixture};
use crate::support::ledger::{attestor_config, enrol_tpm, Heartbeating, LedgerProcess, LedgerSpec};
use crate::support::Swtpm;
use attestor_ledger::store::Verdict;
use attestor_verify::bundle::Bundle;
use attestor_verify::checks::{verify_bundle, Check, Platform, TpmIdentity};
use attestor_verify::evidence::tpm::keys::{parse_tpm_public, SigningAlgorithm};
use attestor_verify::evidence::tpm::HashAlg;
use attestor_verify::profiles::Profile;

/// Sets `key = value` lines in the agent config's `[tpm]` section, replacing those keys.
fn set_tpm_config(fixture: &AgentFixture, lines: &str) {
    let keys: Vec<String> = lines
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| format!("{k} = ")))
        .collect();
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(k.as_str())))
        .collect();
    let text = format!("{}\n", kept.join("\n"));
    assert!(text.contains("[tpm]\n"));
    let text = text.replacen("[tpm]\n", &format!("[tpm]\n{lines}\n"), 1);
    std::fs::write(&fixture.config_path, text).unwrap();
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap()
}

/// `attestor ARGS`, which must exit 0.
fn cli_ok(args: &[&str]) -> std::process::Output {
    let o = cli(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `attestor init` (which names the algorithms it chose), `attest` and `verify` against
/// `profile`; returns the bundle.
fn cli_init_attest_verify(
    fixture: &AgentFixture,
    profile: &Path,
    bank: HashAlg,
    ak: SigningAlgorithm,
) -> Bundle {
    let config = fixture.config_path.to_str().unwrap();
    let tcti = fixture.tpm.tcti();
    let out = fixture.dir.path().join("cli-bundle.json");
    for args in [
        vec!["init", "--config", config, "--tcti", &tcti],
        vec![
            "attest",
            "--config",
            config,
            "--tcti",
            &tcti,
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        let o = cli_ok(&args);
        if args[0] == "init" {
            let stdout = String::from_utf8_lossy(&o.stdout);
            let chosen = format!("AK {ak}, sealed key {ak}, PCR bank {}", bank.name());
            assert!(stdout.contains(&chosen), "{stdout}");
        }
    }
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    // Offline, the AK is pinned by its Name (ak-binding); the ledger enrols it below.
    let ak_name = hex::encode(fixture.ak_name());
    cli_ok(&[
        "verify",
        out.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
        "--policy-hash",
        &policy_hash,
        "--ak-name",
        &ak_name,
    ]);
    Bundle::from_json(&std::fs::read(&out).unwrap()).unwrap()
}

/// The README's first example on this TPM: `attestor enroll --local` (credential
/// activation against the EK certificate, then an AK certificate from a local enrollment
/// CA), `attest`, and `verify --enrollment-ca` without pinning the AK's Name.
fn cli_enroll_local_attest_verify(fixture: &AgentFixture, profile: &Path) {
    let config = fixture.config_path.to_str().unwrap();
    let tcti = fixture.tpm.tcti();
    let ca = fixture.dir.path().join("local-enrollment-ca");
    let out = fixture.dir.path().join("enrolled-bundle.json");
    let ca_dir = ca.to_str().unwrap();
    for args in [
        vec![
            "enroll",
            "--local",
            ca_dir,
            "--config",
            config,
            "--tcti",
            &tcti,
            "--profile",
            profile.to_str().unwrap(),
        ],
        vec![
            "attest",
            "--config",
            config,
            "--tcti",
            &tcti,
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        cli_ok(&args);
    }
    let bundle = Bundle::from_json(&std::fs::read(&out).unwrap()).unwrap();
    assert!(!tpm_ev(&bundle).ak_certificates.is_empty());
    cli_ok(&[
        "verify",
        out.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
        "--enrollment-ca",
        ca.join("enrollment-ca.pem").to_str().unwrap(),
        "--policy-hash",
        &hex::encode(fixture.kernel().policy_hash),
    ]);
}

/// The TPM identity a verified bundle establishes.
fn verified_tpm(bundle: &Bundle, profile: &Profile, fixture: &AgentFixture) -> TpmIdentity {
    match verify_bundle(bundle, profile, &fixture.expect())
        .unwrap()
        .platform
    {
        Platform::Tpm(tpm) => tpm,
        other => panic!("not a TPM identity: {other:?}"),
    }
}

/// The agent enrols with a ledger process trusting `profile` and gets heartbeats accepted,
/// none refused.
async fn enrols_and_is_accepted(
    fixture: &AgentFixture,
    profile: &Path,
    ak: SigningAlgorithm,
    trusted_by: &str,
) {
    let policy_hash = hex::encode(fixture.kernel().policy_hash);
    let ledger = LedgerProcess::start(&LedgerSpec {
        agents: &[("a1", "acme")],
        tenants: &[("acme", &policy_hash)],
        profile: Some(profile),
        ..LedgerSpec::default()
    });
    // The ledger records what the agent's TPM uses.
    let enrolled = enrol_tpm(&mut fixture.agent(), &ledger.client("a1"))
        .await
        .unwrap();
    let tpm = enrolled.tpm.expect("a TPM agent's keys are recorded");
    let ek = parse_tpm_public(&fixture.agent().enrollment_request().unwrap().ek_public).unwrap();
    assert_eq!(tpm.ek_key, ek.key_name());
    assert_eq!(tpm.ak_algorithm, ak);
    assert_eq!(tpm.ek_trusted_by, trusted_by);
    let agent = Heartbeating::start(attestor_config(fixture, &ledger, "a1"), 2).await;
    let refused = agent.metrics.delivered_count(Verdict::Refused);
    agent.stop().await;
    assert_eq!(refused, 0, "{}", ledger.log());
}

/// Everything a configuration must pass: CLI round trip, the identity the verifier
/// establishes, tpm2_checkquote, and enrollment with a heartbeat accepted.
async fn end_to_end(
    fixture: &AgentFixture,
    profile_path: &Path,
    bank: HashAlg,
    ak: SigningAlgorithm,
) -> Bundle {
    let profile = Profile::load(profile_path).unwrap();
    let bundle = cli_init_attest_verify(fixture, profile_path, bank, ak);
    let identity = verified_tpm(&bundle, &profile, fixture);
    assert_eq!(
        (
            identity.pcr_bank,
            identity.ak_algorithm,
            identity.sealed_key_algorithm
        ),
        (bank, ak, ak)
    );
    tpm2_checkquote_accepts(&bundle, ak.hash());
    let trusted_by = if tpm_ev(&bundle).ek_certificates.is_empty() {
        "allowlist"
    } else {
        "certificate"
    };
    enrols_and_is_accepted(fixture, profile_path, ak, trusted_by).await;
    bundle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_bank_and_only_the_rsa_ek_certificate() {
    let mut tpm = Swtpm::start();
    tpm.provision_like_discrete_tpm();
    let fixture = AgentFixture::with_tpm(tpm);
    // A TPM without ECC P-384: the agent falls back to RSA keys.
    set_tpm_config(&fixture, "key_algorithms = [\"rsassa-2048\"]");
    let bundle = end_to_end(
        &fixture,
        &fixture.profile_path,
        HashAlg::Sha256,
        SigningAlgorithm::Rsassa2048,
    )
    .await;
    cli_enroll_local_attest_verify(&fixture, &fixture.profile_path);
    let ev = tpm_ev(&bundle);
    assert_eq!(
        ev.ek_certificates[0],
        fixture
            .tpm
            .nv_read(attestor_testkit::provision::RSA_EK_CERT)
    );
    // A profile demanding 128-bit keys refuses RSA-2048 by name.
    let strict = std::fs::read_to_string(&fixture.profile_path)
        .unwrap()
        .replacen("[tpm]\n", "[tpm]\nmin_key_strength = 128\n", 1);
    let path = fixture.dir.path().join("strict.toml");
    std::fs::write(&path, strict).unwrap();
    let err = verify_bundle(&bundle, &Profile::load(&path).unwrap(), &fixture.expect())
        .expect_err("RSA-2048 accepted by a 128-bit profile");
    assert_eq!(err.check, Check::AttestationKey, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p256_ek_certificate_alone() {
    let mut tpm = Swtpm::start();
    let certificate = tpm.provision_p256_ek_only();
    let fixture = AgentFixture::with_tpm(tpm);
    set_tpm_config(&fixture, "key_algorithms = [\"ecdsa-p256\"]");
    let bundle = end_to_end(
        &fixture,
        &fixture.profile_path,
        HashAlg::Sha384,
        SigningAlgorithm::EcdsaP256,
    )
    .await;
    assert_eq!(tpm_ev(&bundle).ek_certificates[0], certificate);
    cli_enroll_local_attest_verify(&fixture, &fixture.profile_path);
}

/// A P-521 EK (template H-4, SHA-512) with a test-made certificate at 0x01c00018 and no
/// other EK certificate: the agent finds and uses it, and the ledger activates a credential
/// for it (ECDH P-521, SHA-512 KDFs) and records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p521_ek_certificate_alone() {
    let mut tpm = Swtpm::start();
    let certificate = tpm.provision_p521_ek_only();
    let fixture = AgentFixture::with_tpm(tpm);
    let bundle = end_to_end(
        &fixture,
        &fixture.profile_path,
        HashAlg::Sha384,
        SigningAlgorithm::EcdsaP384,
    )
    .await;
    let ev = tpm_ev(&bundle);
    assert_eq!(ev.ek_certificates, [certificate]);
    let ek = parse_tpm_public(&ev.ek_public).unwrap();
    assert_eq!(
        (ek.key_name().as_str(), ek.name_alg()),
        ("ecc-p521", HashAlg::Sha512)
    );
    cli_enroll_local_attest_verify(&fixture, &fixture.profile_path);
}

/// SHA-256 of the DER SubjectPublicKeyInfo of a certificate's key, as openssl computes it.
fn spki_sha256(certificate_der: &Path) -> String {
    let pem = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-pubkey", "-in"])
        .arg(certificate_der)
        .output()
        .unwrap();
    assert!(pem.status.success());
    let dir = certificate_der.parent().unwrap();
    std::fs::write(dir.join("ek-spki.pem"), &pem.stdout).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-in", "ek-spki.pem", "-outform", "DER"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(der.status.success());
    hex::encode(HashAlg::Sha256.digest(&der.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ek_certificate_in_nv_then_a_file_or_the_allow_list() {
    let mut tpm = Swtpm::start();
    let certificate = tpm.remove_ek_certificates();
    let fixture = AgentFixture::with_tpm(tpm);
    // No certificate in NV and nothing configured: the agent says what to do.
    let o = cli(&[
        "init",
        "--config",
        fixture.config_path.to_str().unwrap(),
        "--tcti",
        &fixture.tpm.tcti(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("ek_certificate_file"), "{stderr}");

    // The operator supplies the EK certificate as a file.
    let file = fixture.dir.path().join("ek-cert.der");
    std::fs::write(&file, &certificate).unwrap();
    set_tpm_config(
        &fixture,
        &format!("ek_certificate_file = {file:?}\nkey_algorithms = [\"rsassa-2048\"]"),
    );
    let bundle = end_to_end(
        &fixture,
        &fixture.profile_path,
        HashAlg::Sha384,
        SigningAlgorithm::Rsassa2048,
    )
    .await;
    assert_eq!(tpm_ev(&bundle).ek_certificates[0], certificate);

    // Or none at all: the EK is used uncertified, and only a profile that allow-lists its
    // public-key hash accepts it; the usual profile refuses it, nothing falls back.
    let text = std::fs::read_to_string(&fixture.config_path)
        .unwrap()
        .replace(
            &format!("ek_certificate_file = {file:?}\n"),
            "ek_without_certificate = \"rsa2048\"\n",
        );
    std::fs::write(&fixture.config_path, text).unwrap();
    let bundle = fixture.attest();
    assert!(tpm_ev(&bundle).ek_certificates.is_empty());
    let err = verify_bundle(&bundle, &fixture.profile, &fixture.expect()).unwrap_err();
    assert_eq!(err.check, Check::EkChain, "{err}");
    let allowlist = fixture.dir.path().join("ek-allowlist.txt");
    std::fs::write(
        &allowlist,
        format!("# host-1's TPM\n{}  host-1\n", spki_sha256(&file)),
    )
    .unwrap();
    let allowing = fixture.dir.path().join("allowlist-profile.toml");
    let text = std::fs::read_to_string(&fixture.profile_path)
        .unwrap()
        .replacen(
            "[tpm]\n",
            &format!("[tpm]\nek_allowlist = {allowlist:?}\n"),
            1,
        );
    std::fs::write(&allowing, text).unwrap();
    end_to_end(
        &fixture,
        &allowing,
        HashAlg::Sha384,
        SigningAlgorithm::Rsassa2048,
    )
    .await;
    // Another TPM's EK hash on the list is not this one.
    std::fs::write(&allowlist, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = verify_bundle(
        &bundle,
        &Profile::load(&allowing).unwrap(),
        &fixture.expect(),
    )
    .unwrap_err();
    assert_eq!(err.check, Check::EkChain, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_and_shipped_profile_work_on_a_typical_tpm() {
    let mut tpm = Swtpm::start();
    tpm.provision_like_discrete_tpm();
    // examples/agent.toml and firmware-profiles/swtpm.toml as shipped (the profile trusts
    // this swtpm's CA instead of the machine's; nothing else changes).
    let fixture = AgentFixture::with_tpm(tpm);
    end_to_end(
        &fixture,
        &fixture.profile_path,
        HashAlg::Sha256,
        SigningAlgorithm::EcdsaP384,
    )
    .await;
    cli_enroll_local_attest_verify(&fixture, &fixture.profile_path);
}
