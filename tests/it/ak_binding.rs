//! `ak-binding` on real swtpm TPMs and real processes: offline, an AK counts only if an
//! enrollment CA the profile trusts certified it (a ledger's, after credential activation,
//! or the local one of `attestor enroll --local`), a platform maker's CA certified it as
//! the TPM's IAK, or the verifier pinned its TPM Name. A bundle whose AK and sealed key
//! were made in software, with the TPM's real EK certificate attached, is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use x509_cert::der::Encode;

use crate::support::agent::{tpm_ev, tpm_ev_mut, AgentFixture};
use crate::support::ledger::{attestor_config, Heartbeating, LedgerProcess};
use attestor_agent::attest::{Agent, AgentError};
use attestor_ledger::enrollment_ca::EnrollmentCa;
use attestor_net::tls::AgentIdentity;
use attestor_verify::bundle::{Bundle, SignedAttest};
use attestor_verify::checks::{verify_bundle, AkBinding, AkTrust, Check, Expectations};
use attestor_verify::dsse::{EcdsaP384Signer, Envelope};
use attestor_verify::evidence::certchain;
use attestor_verify::evidence::tpm::akcert::{self, AkCertificate};
use attestor_verify::evidence::tpm::wire;
use attestor_verify::profiles::Profile;

const P384: usize = 48;
const TPM_ALG_SHA384: u16 = 0x000c;

fn attestor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What a relying party expects of `fixture`'s offline bundles: its policy, an AK
/// certificate from a CA the profile trusts.
fn certified(fixture: &AgentFixture) -> Expectations {
    Expectations {
        ak: AkTrust::Certificate,
        ..fixture.expect()
    }
}

/// `fixture`'s profile, trusting these enrollment CAs and IAK CAs (PEM files), written
/// beside it as an operator would and loaded from there.
fn profile_trusting(fixture: &AgentFixture, enrollment: &[&Path], iak: &[&Path]) -> Profile {
    let list = |paths: &[&Path]| {
        let quoted: Vec<String> = paths.iter().map(|p| format!("{:?}", path(p))).collect();
        format!("[{}]", quoted.join(", "))
    };
    let shipped = std::fs::read_to_string(&fixture.profile_path).unwrap();
    let text = shipped
        .replace(
            "\nak_trust_anchors = []\n",
            &format!("\nak_trust_anchors = {}\n", list(enrollment)),
        )
        .replace(
            "\niak_trust_anchors = []\n",
            &format!("\niak_trust_anchors = {}\n", list(iak)),
        );
    assert_ne!(
        text, shipped,
        "the shipped profile lists the AK trust anchors"
    );
    let out = fixture.dir.path().join("profile-ak.toml");
    std::fs::write(&out, text).unwrap();
    Profile::load(&out).unwrap()
}

fn refused(bundle: &Bundle, profile: &Profile, expect: &Expectations) -> (Check, String) {
    let e = verify_bundle(bundle, profile, expect).expect_err("bundle was accepted");
    (e.check, e.to_string())
}

/// `attestor enroll --local DIR` for `fixture`'s TPM; returns DIR/enrollment-ca.pem.
fn enroll_local(fixture: &AgentFixture, dir: &Path) -> PathBuf {
    let o = attestor(&[
        "enroll",
        "--local",
        path(dir),
        "--config",
        path(&fixture.config_path),
        "--tcti",
        &fixture.tpm.tcti(),
        "--profile",
        path(&fixture.profile_path),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("certified"), "{}", stdout(&o));
    dir.join("enrollment-ca.pem")
}

fn pem_file_der(pem: &Path) -> Vec<u8> {
    certchain::pem_to_der_all(&std::fs::read_to_string(pem).unwrap())
        .unwrap()
        .swap_remove(0)
}

/// A TPMT_PUBLIC with its ECC point (the trailing x and y TPM2Bs) replaced by `sec1`.
fn with_point(tpmt_public: &[u8], sec1: &[u8]) -> Vec<u8> {
    let (x, y) = sec1[1..].split_at(P384);
    let mut out = tpmt_public[..tpmt_public.len() - 2 * (2 + P384)].to_vec();
    for coordinate in [x, y] {
        out.extend_from_slice(&(P384 as u16).to_be_bytes());
        out.extend_from_slice(coordinate);
    }
    let parsed = wire::parse_public(&out).unwrap();
    assert_eq!(parsed.sec1_uncompressed().unwrap(), sec1);
    out
}

fn name_of(tpmt_public: &[u8]) -> Vec<u8> {
    wire::object_name(
        tpmt_public,
        wire::parse_public(tpmt_public).unwrap().name_alg,
    )
}

/// `attest` signed by `key` as a TPM signs with an ECDSA P-384 AK (a TPMT_SIGNATURE).
fn signed_by(key: &EcdsaKeyPair, attest: Vec<u8>) -> SignedAttest {
    let fixed = key.sign(&SystemRandom::new(), &attest).unwrap();
    let mut signature = wire::TPM_ALG_ECDSA.to_be_bytes().to_vec();
    signature.extend_from_slice(&TPM_ALG_SHA384.to_be_bytes());
    for half in fixed.as_ref().chunks(P384) {
        signature.extend_from_slice(&(P384 as u16).to_be_bytes());
        signature.extend_from_slice(half);
    }
    SignedAttest { attest, signature }
}

/// The forgery: `bundle` re-made in software. An AK and a sealed key of the forger's own,
/// claiming the real keys' attributes and policy, certify and quote as the TPM did; the
/// TPM's real EK certificate stays attached; no AK certificate.
fn forge(bundle: &Bundle) -> (Bundle, Vec<u8>) {
    let ak = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    let sealed = EcdsaP384Signer::generate().unwrap();
    let mut forged = bundle.clone();
    forged.envelope = Envelope::sign(
        &bundle.envelope.payload_type,
        bundle.envelope.payload.clone(),
        &sealed,
    )
    .unwrap();
    let ev = tpm_ev_mut(&mut forged);
    let real_sealed_name = name_of(&ev.sealed_key.public);
    ev.ak_public = with_point(&ev.ak_public, ak.public_key().as_ref());
    ev.sealed_key.public = with_point(&ev.sealed_key.public, &sealed.public_key_sec1());
    let forged_name = name_of(&ev.sealed_key.public);
    let mut certify = ev.sealed_key.certification.attest.clone();
    let at = certify
        .windows(real_sealed_name.len())
        .position(|w| w == real_sealed_name)
        .expect("the certification names the sealed key");
    certify[at..at + forged_name.len()].copy_from_slice(&forged_name);
    ev.sealed_key.certification = signed_by(&ak, certify);
    ev.quote = signed_by(&ak, ev.quote.attest.clone());
    ev.ak_certificates.clear();
    let ak_public = ev.ak_public.clone();
    (forged, ak_public)
}

#[test]
fn a_software_ak_with_the_real_ek_certificate_is_refused_offline() {
    let fixture = AgentFixture::new();
    let ca_pem = enroll_local(&fixture, &fixture.dir.path().join("local-ca"));
    let real = fixture.attest();
    let profile = profile_trusting(&fixture, &[&ca_pem], &[]);
    let verified = verify_bundle(&real, &profile, &certified(&fixture)).unwrap();
    assert!(matches!(
        verified.tpm().unwrap().ak_binding,
        AkBinding::EnrollmentCa { agent: None, .. }
    ));

    let (forged, forged_ak) = forge(&real);
    // Every other binding of the forgery holds: only the AK's residency is missing, which
    // a ledger checks by its own pin and an offline verifier by `ak-binding`.
    let pinned = Expectations {
        ak: AkTrust::PinnedByCaller,
        ..certified(&fixture)
    };
    verify_bundle(&forged, &profile, &pinned).expect("the forgery is otherwise complete");

    let (check, reason) = refused(&forged, &profile, &certified(&fixture));
    assert_eq!(check, Check::AkBinding, "{reason}");
    assert!(reason.contains("no AK certificate"), "{reason}");
    // The real AK's certificate attached: it certifies another key.
    let mut with_real_cert = forged.clone();
    tpm_ev_mut(&mut with_real_cert).ak_certificates = tpm_ev(&real).ak_certificates.clone();
    let (check, reason) = refused(&with_real_cert, &profile, &certified(&fixture));
    assert_eq!(check, Check::AkBinding, "{reason}");
    assert!(reason.contains("another key"), "{reason}");
    // The forger's own enrollment CA, naming the real EK certificate: not trusted.
    let forger = tempfile::tempdir().unwrap();
    let forger_ca = EnrollmentCa::load_or_create(forger.path(), "forger").unwrap();
    let mut self_certified = forged.clone();
    let ek = tpm_ev(&real).ek_certificates[0].clone();
    tpm_ev_mut(&mut self_certified).ak_certificates = vec![forger_ca
        .issue(&forged_ak, &ek, None, SystemTime::now())
        .unwrap()];
    let (check, reason) = refused(&self_certified, &profile, &certified(&fixture));
    assert_eq!(check, Check::AkBinding, "{reason}");
    // Pinned by the real AK's Name.
    let (check, _) = refused(&forged, &profile, &fixture.expect());
    assert_eq!(check, Check::AkBinding);

    // And so says `attestor verify`, with the CA trusted on the command line.
    let file = fixture.dir.path().join("forged.json");
    std::fs::write(&file, forged.to_json()).unwrap();
    let o = attestor(&[
        "verify",
        path(&file),
        "--profile",
        path(&fixture.profile_path),
        "--enrollment-ca",
        path(&ca_pem),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("FAILED ak-binding"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn cli_ak_name_pin_and_local_enrollment() {
    let fixture = AgentFixture::new();
    let config = path(&fixture.config_path);
    let tcti = fixture.tpm.tcti();
    let o = attestor(&["init", "--config", config, "--tcti", &tcti]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = stdout(&o);
    let name = printed
        .lines()
        .find_map(|l| l.strip_prefix("AK name "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("init prints the AK name: {printed}"))
        .to_string();
    assert_eq!(name, hex::encode(fixture.ak_name()));

    let bundle = fixture.dir.path().join("bundle.json");
    let attest = || {
        let o = attestor(&[
            "attest",
            "--config",
            config,
            "--tcti",
            &tcti,
            "--out",
            path(&bundle),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            path(&bundle),
            "--profile",
            path(&fixture.profile_path),
        ];
        args.extend_from_slice(extra);
        attestor(&args)
    };
    attest();
    // Neither certified nor pinned.
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("FAILED ak-binding"),
        "{}",
        stdout(&o)
    );
    // Pinned by its Name, and by another Name.
    let o = verify(&["--ak-name", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("AK pinned by its TPM Name"),
        "{}",
        stdout(&o)
    );
    let mut other = hex::decode(&name).unwrap();
    other[5] ^= 1;
    let o = verify(&["--ak-name", &hex::encode(other)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("FAILED ak-binding"),
        "{}",
        stdout(&o)
    );

    // `attestor enroll --local`, its CA in the agent's state directory by default.
    let o = attestor(&[
        "enroll",
        "--local",
        "--config",
        config,
        "--tcti",
        &tcti,
        "--profile",
        path(&fixture.profile_path),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ca_pem = fixture
        .dir
        .path()
        .join("state/enrollment-ca/enrollment-ca.pem");
    assert!(
        stdout(&o).contains("state/enrollment-ca/enrollment-ca.pem"),
        "{}",
        stdout(&o)
    );
    attest();
    let o = verify(&["--enrollment-ca", path(&ca_pem)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("enrollment CA"), "{}", stdout(&o));
    // The profile's own list does the same.
    let profile = profile_trusting(&fixture, &[&ca_pem], &[]);
    let loaded = Bundle::from_json(&std::fs::read(&bundle).unwrap()).unwrap();
    verify_bundle(&loaded, &profile, &certified(&fixture)).unwrap();
    // Another local CA is not this one.
    let elsewhere = tempfile::tempdir().unwrap();
    EnrollmentCa::load_or_create(elsewhere.path(), "elsewhere").unwrap();
    let o = verify(&[
        "--enrollment-ca",
        path(&elsewhere.path().join("enrollment-ca.pem")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("FAILED ak-binding"),
        "{}",
        stdout(&o)
    );
    // A local enrollment is checked as a ledger's: an EK from an untrusted CA is refused.
    let foreign = fixture.dir.path().join("foreign-profile.toml");
    std::fs::write(
        &foreign,
        std::fs::read_to_string(&fixture.profile_path)
            .unwrap()
            .replace(path(&fixture.tpm.ca_root_pem()), path(&ca_pem)),
    )
    .unwrap();
    let o = attestor(&[
        "enroll",
        "--local",
        "--config",
        config,
        "--tcti",
        &tcti,
        "--profile",
        path(&foreign),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("enrollment refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_certifies_the_ak_it_enrolled_and_bundles_carry_it() {
    let fixture = AgentFixture::new();
    let ledger = LedgerProcess::for_fixture(&fixture);
    let agent = Heartbeating::start(attestor_config(&fixture, &ledger, "a1"), 1).await;
    agent.stop().await;

    let bundle = fixture.attest();
    let ev = tpm_ev(&bundle);
    assert_eq!(
        ev.ak_certificates.len(),
        1,
        "the enrolled agent carries its AK certificate"
    );
    let cert = AkCertificate::parse(&ev.ak_certificates[0]).unwrap();
    assert_eq!(cert.agent, Some(AgentIdentity::new("acme", "a1").unwrap()));
    assert_eq!(
        cert.ek_certificate_sha256,
        Some(akcert::ek_certificate_sha256(&ev.ek_certificates[0]))
    );
    assert!(cert.policies.contains(&akcert::VERIFIED_TPM_RESTRICTED));
    assert!(!cert.is_ca);

    let ca_pem = ledger.state_dir().join("enrollment-ca.pem");
    // The ledger publishes the same CA certificate.
    let (status, served) = ledger
        .client("a1")
        .send(hyper::Method::GET, "/v1/enrollment-ca", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(served, std::fs::read(&ca_pem).unwrap());
    let profile = profile_trusting(&fixture, &[&ca_pem], &[]);
    let verified = verify_bundle(&bundle, &profile, &certified(&fixture)).unwrap();
    match &verified.tpm().unwrap().ak_binding {
        AkBinding::EnrollmentCa { agent, issuer } => {
            assert_eq!(agent, &Some(AgentIdentity::new("acme", "a1").unwrap()));
            assert!(issuer.contains("attestor enrollment CA"), "{issuer}");
        }
        other => panic!("bound by {other:?}"),
    }
    // Without the ledger's CA trusted, the certificate proves nothing.
    let (check, _) = refused(&bundle, &fixture.profile, &certified(&fixture));
    assert_eq!(check, Check::AkBinding);
    // The certificate carried by another TPM's bundle: it certifies another key.
    let other = AgentFixture::new();
    let mut stolen = other.attest();
    tpm_ev_mut(&mut stolen).ak_certificates = ev.ak_certificates.clone();
    let other_profile = profile_trusting(&other, &[&ca_pem], &[]);
    let (check, reason) = refused(&stolen, &other_profile, &certified(&other));
    assert_eq!(check, Check::AkBinding, "{reason}");

    // `attestor verify` trusting the ledger's CA.
    let file = fixture.dir.path().join("bundle.json");
    std::fs::write(&file, bundle.to_json()).unwrap();
    let o = attestor(&[
        "verify",
        path(&file),
        "--profile",
        path(&fixture.profile_path),
        "--policy-hash",
        &hex::encode(fixture.kernel().policy_hash),
        "--enrollment-ca",
        path(&ca_pem),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// A test OEM's IAK CA and the IAK certificates it issues, made with openssl as a
/// platform maker's PKI would (TCG "TPM 2.0 Keys for Device Identity and Attestation").
struct IakCa {
    dir: PathBuf,
}

impl IakCa {
    fn new(dir: PathBuf) -> IakCa {
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-nodes",
                "-sha384",
                "-days",
                "2",
                "-subj",
                "/O=Test OEM/CN=Test OEM IAK CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        IakCa { dir }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// An IAK certificate for the key of the TPMT_PUBLIC `ak_public`; `hardware_module`
    /// names a TPM 2.0 with this serial number.
    fn issue(&self, name: &str, ak_public: &[u8], hardware_module: bool) -> Vec<u8> {
        let spki = akcert::ak_spki(ak_public).unwrap().to_der().unwrap();
        std::fs::write(self.dir.join(format!("{name}.pub")), public_key_pem(&spki)).unwrap();
        let mut ext = String::from(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=2.23.133.8.3\ncertificatePolicies=2.23.133.11.1.3\n",
        );
        if hardware_module {
            ext.push_str(
                "subjectAltName=critical,otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hwmodule\n\
                 [hwmodule]\nhwType=OID:2.23.133.1.2\nhwSerialNum=OCTETSTRING:TPM-SN-0001\n",
            );
        }
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-new",
                "-force_pubkey",
                &format!("{name}.pub"),
                "-subj",
                "/CN=IAK",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-sha384",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        pem_file_der(&self.dir.join(format!("{name}.pem")))
    }
}

fn public_key_pem(spki_der: &[u8]) -> String {
    akcert::certificate_pem(spki_der).replace("CERTIFICATE", "PUBLIC KEY")
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new(attestor_testkit::require_tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn an_oem_iak_certificate_binds_the_ak_it_certifies() {
    let fixture = AgentFixture::new();
    let oem = IakCa::new(fixture.dir.path().join("oem"));
    let mut bundle = fixture.attest();
    let ak_public = tpm_ev(&bundle).ak_public.clone();
    tpm_ev_mut(&mut bundle).ak_certificates = vec![oem.issue("iak", &ak_public, true)];
    let profile = profile_trusting(&fixture, &[], &[&oem.ca_pem()]);
    let verified = verify_bundle(&bundle, &profile, &certified(&fixture)).unwrap();
    match &verified.tpm().unwrap().ak_binding {
        AkBinding::Iak { issuer, tpm_serial } => {
            assert_eq!(tpm_serial, b"TPM-SN-0001");
            assert!(issuer.contains("Test OEM IAK CA"), "{issuer}");
        }
        other => panic!("bound by {other:?}"),
    }

    let expect_refused = |b: &Bundle, p: &Profile, why: &str| {
        let (check, reason) = refused(b, p, &certified(&fixture));
        assert_eq!(check, Check::AkBinding, "{reason}");
        assert!(reason.contains(why), "{why:?} not in {reason}");
    };
    // The OEM's CA not trusted (another OEM's is), or trusted only as an enrollment CA
    // (whose certificates must name the EK certificate).
    let other_oem = IakCa::new(fixture.dir.path().join("other-oem"));
    let elsewhere = profile_trusting(&fixture, &[], &[&other_oem.ca_pem()]);
    expect_refused(&bundle, &elsewhere, "does not chain");
    let as_enrollment = profile_trusting(&fixture, &[&oem.ca_pem()], &[]);
    expect_refused(&bundle, &as_enrollment, "names no EK certificate");
    // An IAK certificate of the trusted OEM for another key.
    let (forged, _) = forge(&fixture.attest());
    let mut other_key = bundle.clone();
    tpm_ev_mut(&mut other_key).ak_certificates =
        vec![oem.issue("other", &tpm_ev(&forged).ak_public, true)];
    expect_refused(&other_key, &profile, "another key");
    // The real IAK certificate carried by the software AK's forgery.
    let mut forged_with_iak = forged.clone();
    tpm_ev_mut(&mut forged_with_iak).ak_certificates = tpm_ev(&bundle).ak_certificates.clone();
    expect_refused(&forged_with_iak, &profile, "another key");
    // A certificate of the trusted OEM that names no TPM.
    let mut no_tpm = bundle.clone();
    tpm_ev_mut(&mut no_tpm).ak_certificates = vec![oem.issue("no-tpm", &ak_public, false)];
    expect_refused(&no_tpm, &profile, "names no TPM 2.0");
}

#[test]
fn the_agent_carries_only_a_certificate_of_its_own_ak() {
    let fixture = AgentFixture::new();
    enroll_local(&fixture, &fixture.dir.path().join("local-ca"));
    let agent = fixture.agent();
    assert!(agent.ak_certificate().is_some());
    let state = agent.state_dir().to_path_buf();
    drop(agent);
    let kept = state.join(attestor_agent::attest::AK_CERTIFICATE_FILE);

    // A kept file that is no certificate, or a certificate of another key, is an error
    // naming the file, not something to ship.
    std::fs::write(
        &kept,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let Err(err) = Agent::open(fixture.config(), &fixture.tpm.tcti()) else {
        panic!("the agent opened with a bad AK certificate")
    };
    assert!(matches!(err, AgentError::AkCertificate { .. }), "{err}");
    assert!(err.to_string().contains("ak-certificate.pem"), "{err}");
    std::fs::remove_file(&kept).unwrap();
    let (forged, _) = forge(&fixture.attest());
    let other = IakCa::new(fixture.dir.path().join("oem"));
    let foreign = other.issue("foreign", &tpm_ev(&forged).ak_public, true);
    std::fs::write(&kept, akcert::certificate_pem(&foreign)).unwrap();
    let Err(err) = Agent::open(fixture.config(), &fixture.tpm.tcti()) else {
        panic!("the agent opened with a bad AK certificate")
    };
    assert!(
        matches!(err, AgentError::AkCertificateMismatch { .. }),
        "{err}"
    );
    // ... and the agent refuses to keep one for another key.
    std::fs::remove_file(&kept).unwrap();
    let mut agent = fixture.agent();
    assert!(matches!(
        agent.keep_ak_certificate(Some(&foreign)),
        Err(AgentError::AkCertificateForAnotherKey)
    ));
    assert!(!kept.exists());

    // A new AK (its blob gone) drops the old AK's certificate.
    enroll_local(&fixture, &fixture.dir.path().join("local-ca"));
    assert!(kept.exists());
    std::fs::remove_file(state.join("ak.json")).unwrap();
    let agent = fixture.agent();
    assert!(agent.ak_certificate().is_none());
    assert!(!kept.exists());
    assert!(tpm_ev(&fixture.attest()).ak_certificates.is_empty());
}
