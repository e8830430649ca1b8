//! One attestation against the raw TPM commands it needs, one attestation with the storage
//! key and the AK resident (`[tpm] persistent_keys`) against one that re-creates primaries,
//! and offline verification against the bare signature checks it needs, each pair measured
//! in the same run on a real swtpm. Prints the ratios at the end. Run:
//! `cargo bench --bench attest`.
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod bench_support;
#[path = "../tests/it/support/mod.rs"]
mod support;

use bench_support::median_ns;

use std::time::Duration;

use attestor_agent::attest::Agent;
use attestor_agent::collect::RuntimeStatus;
use attestor_agent::config::AgentConfig;
use attestor_platform::tpm::Tpm;
use attestor_verify::bundle::{Bundle, Evidence};
use attestor_verify::checks::{verify_bundle, AkTrust, Expectations};
use attestor_verify::dsse;
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::{wire, HashAlg};
use aws_lc_rs::signature::{ParsedPublicKey, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use criterion::{black_box, Criterion};
use sha2::{Digest, Sha384};

struct Fixture {
    agent_fixture: support::agent::AgentFixture,
    agent: Agent,
    /// The same agent (same AK and sealed key) with its keys resident in the TPM.
    resident: Agent,
    raw: Tpm,
    config: AgentConfig,
    status: RuntimeStatus,
    bundle: Bundle,
}

fn fixture() -> Fixture {
    let agent_fixture = support::agent::AgentFixture::new();
    let mut agent = agent_fixture.agent();
    let status = agent_fixture.status();
    let bundle = agent.attest(&agent_fixture.kernel(), &status, b"").unwrap();
    let mut config = agent_fixture.config();
    config.tpm.persistent_keys = Some(true);
    let resident = Agent::open(config, &agent_fixture.tpm.tcti()).unwrap();
    let raw = Tpm::open(&agent_fixture.tpm.tcti()).unwrap();
    Fixture {
        resident,
        config: agent_fixture.config(),
        agent_fixture,
        agent,
        raw,
        status,
        bundle,
    }
}

fn bench_attest(c: &mut Criterion, f: &mut Fixture) {
    let kernel = f.agent_fixture.kernel();
    let pcr = f.config.tpm.measured_pcr;
    let mut selection = f.config.tpm.firmware_pcrs.clone();
    selection.push(pcr);
    // The raw path's own keys: the same kinds the agent uses, sealed to the same PCR state.
    let ak = f.raw.create_ak(SigningAlgorithm::EcdsaP384).unwrap();
    let sealed = f
        .raw
        .create_sealed_key(SigningAlgorithm::EcdsaP384, HashAlg::Sha384, &[pcr])
        .unwrap();
    let digest = Sha384::digest(b"pae");

    let mut group = c.benchmark_group("attest");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("agent_attest", |b| {
        b.iter(|| f.agent.attest(&kernel, &f.status, b"").unwrap())
    });
    // The same, without re-creating the EK and the storage key (and loading the AK)
    // for every quote and signature.
    group.bench_function("agent_attest_resident_keys", |b| {
        b.iter(|| f.resident.attest(&kernel, &f.status, b"").unwrap())
    });
    // What attest cannot avoid: read the measured PCR, sign with the sealed key, quote,
    // read the quoted PCRs.
    group.bench_function("raw_tpm_commands", |b| {
        b.iter(|| {
            f.raw.read_pcrs(HashAlg::Sha384, &[pcr]).unwrap();
            f.raw
                .sign_sealed(&sealed, HashAlg::Sha384, &[pcr], &digest)
                .unwrap();
            f.raw
                .quote(&ak, &[7; 48], HashAlg::Sha384, &selection)
                .unwrap();
            f.raw.read_pcrs(HashAlg::Sha384, &selection).unwrap();
        })
    });
    group.finish();
}

fn bench_verify(c: &mut Criterion, f: &Fixture) {
    let Evidence::Tpm(ev) = &f.bundle.evidence else {
        panic!("the fixture attests with a TPM")
    };
    let ak = wire::parse_public(&ev.ak_public)
        .unwrap()
        .sec1_uncompressed()
        .unwrap();
    let quote_sig = wire::parse_signature(&ev.quote.signature)
        .unwrap()
        .to_fixed(48)
        .unwrap();
    // The AK pinned by its Name (`--ak-name`): no AK certificate chain to check.
    let expect = Expectations {
        ak: AkTrust::Name(f.agent.ak_name().unwrap()),
        ..Expectations::default()
    };
    if let Some(dir) = std::env::var_os("ATTESTOR_BENCH_QUOTE_DIR") {
        write_quote_for_others(std::path::Path::new(&dir), &f.bundle, &ak);
    }
    let mut group = c.benchmark_group("verify");
    group.bench_function("verify_bundle", |b| {
        b.iter(|| verify_bundle(black_box(&f.bundle), &f.agent_fixture.profile, &expect).unwrap())
    });
    // The floor: one ECDSA P-384 verification with the fastest implementation in the tree.
    group.bench_function("one_p384_verify_aws_lc", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &ak)
                .verify(black_box(&ev.quote.attest), &quote_sig)
                .unwrap()
        })
    });
    // TPM quote verification alone, as the verifier does it: decode the TPMT_SIGNATURE,
    // check it with the AK parsed once, decode the TPMS_ATTEST.
    let ak_key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &ak).unwrap();
    group.bench_function("verify_quote", |b| {
        b.iter(|| {
            let sig = wire::parse_signature(black_box(&ev.quote.signature)).unwrap();
            ak_key
                .verify_sig(&ev.quote.attest, &sig.to_fixed(48).unwrap())
                .unwrap();
            wire::parse_attest(&ev.quote.attest).unwrap()
        })
    });
    group.bench_function("dsse_pae", |b| {
        b.iter(|| {
            dsse::pae(
                &f.bundle.envelope.payload_type,
                black_box(&f.bundle.envelope.payload),
            )
        })
    });
    group.finish();
}

/// The quote `verify_quote` checks, in the files other verifiers read (tpm2-tools' formats,
/// as `tpm2_quote` writes them), so scripts/bench.sh times Keylime's check of the same quote:
/// `ak.sec1` (the AK's uncompressed point), `quote.msg` (TPMS_ATTEST), `quote.sig`
/// (TPMT_SIGNATURE), `quote.pcrs`, `quote.qualifying` (the nonce the quote carries) and
/// `quote.hash` (the signature's hash algorithm).
fn write_quote_for_others(dir: &std::path::Path, bundle: &Bundle, ak_sec1: &[u8]) {
    let Evidence::Tpm(ev) = &bundle.evidence else {
        panic!("the fixture attests with a TPM")
    };
    let wire::Attested::Quote { pcr_select, .. } =
        wire::parse_attest(&ev.quote.attest).unwrap().attested
    else {
        panic!("the bundle's quote is not a TPM2_Quote")
    };
    let values: Vec<Vec<u8>> = ev.pcrs.values().map(|v| hex::decode(v).unwrap()).collect();
    let pae = dsse::pae(&bundle.envelope.payload_type, &bundle.envelope.payload);
    let files: [(&str, Vec<u8>); 6] = [
        ("ak.sec1", ak_sec1.to_vec()),
        ("quote.msg", ev.quote.attest.clone()),
        ("quote.sig", ev.quote.signature.clone()),
        (
            "quote.pcrs",
            wire::tpm2_tools_pcr_file(&pcr_select, &values).unwrap(),
        ),
        (
            "quote.qualifying",
            attestor_verify::evidence::tpm_commitment(&bundle.nonce, &pae).to_vec(),
        ),
        (
            "quote.hash",
            wire::parse_signature(&ev.quote.signature)
                .unwrap()
                .hash
                .name()
                .as_bytes()
                .to_vec(),
        ),
    ];
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The TPM configurations real hosts have, by AK and EK algorithm: (label, EK provisioning,
/// AK algorithm). P-384 is the default fixture's (P-384 EK and AK, sha384 bank).
const ALGORITHMS: [(&str, SigningAlgorithm); 3] = [
    ("rsa2048", SigningAlgorithm::Rsassa2048),
    ("p256", SigningAlgorithm::EcdsaP256),
    ("p384", SigningAlgorithm::EcdsaP384),
];

/// A fixture on a swtpm provisioned for `label`: the RSA-2048 EK and the sha256 bank only,
/// a P-256 EK alone, or swtpm_setup's P-384 EK; the agent's keys of `alg`.
fn algorithm_fixture(label: &str, alg: SigningAlgorithm) -> (support::agent::AgentFixture, Bundle) {
    let mut tpm = support::Swtpm::start();
    match label {
        "rsa2048" => tpm.provision_like_discrete_tpm(),
        "p256" => {
            tpm.provision_p256_ek_only();
        }
        _ => {}
    }
    let fixture = support::agent::AgentFixture::with_tpm(tpm);
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("key_algorithms = "))
        .collect();
    let text =
        text.join("\n")
            .replacen("[tpm]", &format!("[tpm]\nkey_algorithms = [\"{alg}\"]"), 1);
    std::fs::write(&fixture.config_path, text).unwrap();
    let bundle = fixture.attest();
    (fixture, bundle)
}

/// One bare check of the quote's signature with the AK's algorithm (aws-lc-rs, key parsed
/// once): the floor a verifier of that algorithm cannot go below.
fn bare_quote_check(bundle: &Bundle) -> impl Fn() + '_ {
    use attestor_verify::evidence::tpm::keys::{
        parse_tpm_public, parse_tpm_signature, TpmPublic, TpmSignature,
    };
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};
    let Evidence::Tpm(ev) = &bundle.evidence else {
        panic!("a TPM bundle")
    };
    let (key, sig) = match (
        parse_tpm_public(&ev.ak_public).unwrap(),
        parse_tpm_signature(&ev.quote.signature).unwrap(),
    ) {
        (TpmPublic::Ecc(k), TpmSignature::Ecdsa(s)) => {
            let (alg, len) = if k.curve == wire::TPM_ECC_NIST_P256 {
                (&ECDSA_P256_SHA256_FIXED, 32)
            } else {
                (&ECDSA_P384_SHA384_FIXED, 48)
            };
            let key = ParsedPublicKey::new(alg, k.sec1_uncompressed().unwrap()).unwrap();
            (key, s.to_fixed(len).unwrap())
        }
        (TpmPublic::Rsa(k), TpmSignature::Rsa { sig, .. }) => {
            let der = k.rsa_public_key_der().unwrap();
            (
                ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).unwrap(),
                sig,
            )
        }
        _ => panic!("AK and signature disagree"),
    };
    move || key.verify_sig(black_box(&ev.quote.attest), &sig).unwrap()
}

/// verify_bundle per AK/EK algorithm, each next to one bare signature check of that
/// algorithm in the same run.
fn bench_verify_by_algorithm(c: &mut Criterion) {
    let fixtures: Vec<_> = ALGORITHMS
        .iter()
        .map(|(label, alg)| (*label, algorithm_fixture(label, *alg)))
        .collect();
    let mut group = c.benchmark_group("verify_algorithms");
    for (label, (fixture, bundle)) in &fixtures {
        // The AK pinned by its Name, as in `verify`'s group.
        let expect = Expectations {
            ak: AkTrust::Name(fixture.ak_name()),
            ..Expectations::default()
        };
        group.bench_function(format!("verify_bundle_{label}"), |b| {
            b.iter(|| verify_bundle(black_box(bundle), &fixture.profile, &expect).unwrap())
        });
        let check = bare_quote_check(bundle);
        group.bench_function(format!("one_{label}_verify"), |b| b.iter(&check));
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut f = fixture();
    bench_attest(&mut c, &mut f);
    bench_verify(&mut c, &f);
    bench_verify_by_algorithm(&mut c);
    c.final_summary();
    let show = |label: &str, (g, a): (&str, &str), (h, b): (&str, &str)| {
        if let (Some(x), Some(y)) = (median_ns(g, a), median_ns(h, b)) {
            println!(
                "{label}: {:.2} ms vs {:.2} ms reference = {:.2}x",
                x / 1e6,
                y / 1e6,
                x / y
            );
        }
    };
    println!("\nmedians, same run:");
    show(
        "attest vs raw TPM commands",
        ("attest", "agent_attest"),
        ("attest", "raw_tpm_commands"),
    );
    show(
        "attest, resident keys vs re-created primaries",
        ("attest", "agent_attest_resident_keys"),
        ("attest", "agent_attest"),
    );
    show(
        "TPM quote verification vs one P-384 verify",
        ("verify", "verify_quote"),
        ("verify", "one_p384_verify_aws_lc"),
    );
    show(
        "verify_bundle vs one P-384 verify",
        ("verify", "verify_bundle"),
        ("verify", "one_p384_verify_aws_lc"),
    );
    for (label, _) in ALGORITHMS {
        show(
            &format!("verify_bundle ({label} AK and EK) vs one {label} verify"),
            ("verify_algorithms", &format!("verify_bundle_{label}")),
            ("verify_algorithms", &format!("one_{label}_verify")),
        );
    }
}
