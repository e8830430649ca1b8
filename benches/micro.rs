//! Micro-benchmarks of the ledger's per-submission building blocks, each beside the bare
//! primitive it cannot avoid, measured in the same run so the overhead is a ratio:
//!
//! * DSSE sign and verify of a real statement (about 1 KiB) against one bare ECDSA P-384
//!   sign / verify of the same PAE bytes with aws-lc-rs (the fastest implementation in the
//!   dependency tree). The verify reference is measured twice, with the key parsed once
//!   (`ParsedPublicKey`, as the verifier does) and parsed per call (`UnparsedPublicKey`),
//!   which shows what re-parsing a key costs.
//! * CBOR encode and decode of a log record carrying a 10 KiB submission (the size of a
//!   TPM bundle) against one SHA-256 of the encoded leaf (which the ledger computes anyway).
//!
//! * The ledger's posture appraisal of one accepted attestation (the example policy, a
//!   full counter history) with its EAR built, and the EAR's ES384 signature, against one
//!   bare P-384 verify and sign.
//!
//! Run: `cargo bench --bench micro`.
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod bench_support;

use attestor_ledger::store::Verdict;
use attestor_verify::appraisal::{
    accepted_appraisal, appraise, AppraisalPolicy, Basis, Counters, Sample,
};
use attestor_verify::bundle::EvidenceKind;
use attestor_verify::claims::{CapabilityKey, Claims, EpsilonLimits, Statement, PAYLOAD_TYPE};
use attestor_verify::dsse::{self, EcdsaP384Signer, Envelope, VerifyingKey};
use attestor_verify::ear::{Ear, EarSigner, Subject, VerifierId};
use attestor_verify::record::{LogRecord, RECORD_VERSION};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, UnparsedPublicKey, ECDSA_P384_SHA384_ASN1,
    ECDSA_P384_SHA384_ASN1_SIGNING,
};
use bench_support::median_ns;
use criterion::{black_box, Criterion};

fn claims() -> Claims {
    Claims {
        attestation_id: "0b7d5c1e-4c1f-4d39-9a57-0f6d1b8f7e21".into(),
        timestamp: 1_790_000_000,
        policy_hash: "ab".repeat(32),
        zero_retention: true,
        epsilon_limits: EpsilonLimits {
            max_epsilon: 1.0,
            max_delta: 1e-6,
            current_usage: 0.25,
            reset_interval: 86_400,
        },
        version: "1.4.2".into(),
        attestor_version: env!("CARGO_PKG_VERSION").into(),
        kernel_config_hash: "cd".repeat(48),
        capability_keys: Vec::new(),
        tenant_isolation: true,
        egress_firewall_enabled: true,
        pii_detection_enabled: true,
        total_requests: 1000,
        blocked_requests: 3,
        capability_failures: 0,
        plan_validations: 1000,
        uptime_seconds: 3600,
    }
}

fn statement() -> Vec<u8> {
    Statement::new(claims()).to_json().unwrap()
}

fn bench_dsse(c: &mut Criterion) {
    let payload = statement();
    let signer = EcdsaP384Signer::generate().unwrap();
    let key = signer.verifying_key().unwrap();
    let envelope = Envelope::sign(PAYLOAD_TYPE, payload.clone(), &signer).unwrap();
    let pae = dsse::pae(PAYLOAD_TYPE, &payload);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let bare = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let bare_public = bare.public_key().as_ref().to_vec();
    let bare_sig = bare.sign(&rng, &pae).unwrap().as_ref().to_vec();
    let parsed = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &bare_public).unwrap();

    let mut group = c.benchmark_group("dsse");
    group.bench_function("sign", |b| {
        b.iter(|| Envelope::sign(PAYLOAD_TYPE, black_box(payload.clone()), &signer).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| black_box(&envelope).verify(&key).unwrap().len())
    });
    group.bench_function("verify_with_key_from_sec1", |b| {
        b.iter(|| {
            let key = VerifyingKey::from_sec1(black_box(&signer.public_key_sec1())).unwrap();
            black_box(&envelope).verify(&key).unwrap().len()
        })
    });
    group.bench_function("ref_p384_sign_aws_lc", |b| {
        b.iter(|| bare.sign(&rng, black_box(&pae)).unwrap())
    });
    group.bench_function("ref_p384_verify_aws_lc_parsed", |b| {
        b.iter(|| parsed.verify_sig(black_box(&pae), &bare_sig).unwrap())
    });
    group.bench_function("ref_p384_verify_aws_lc_unparsed", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &bare_public)
                .verify(black_box(&pae), &bare_sig)
                .unwrap()
        })
    });
    group.finish();
}

fn bench_cbor(c: &mut Criterion) {
    let record = LogRecord {
        version: RECORD_VERSION,
        received_at_ms: 1_790_000_000_000,
        tenant: "tenant-a".into(),
        agent_id: "agent-0001".into(),
        verdict: Verdict::Accepted,
        reason: None,
        detail: None,
        attestation_id: Some("0b7d5c1e-4c1f-4d39-9a57-0f6d1b8f7e21".into()),
        policy_hash: Some("ab".repeat(32)),
        submission: (0..10 * 1024)
            .map(|i| b"{\"base64\": ABCDEFGH}"[i % 20])
            .collect(),
        discarded: None,
        ear: None,
        appraisal_policy: None,
    };
    let leaf = record.to_leaf().unwrap();
    let mut group = c.benchmark_group("cbor");
    group.bench_function("encode_record", |b| {
        b.iter(|| black_box(&record).to_leaf().unwrap())
    });
    group.bench_function("decode_record", |b| {
        b.iter(|| LogRecord::from_leaf(black_box(&leaf)).unwrap())
    });
    group.bench_function("ref_sha256_of_leaf", |b| {
        b.iter(|| digest(&SHA256, black_box(&leaf)))
    });
    group.finish();
}

/// CPU time this thread has used (user + system), from /proc in 10 ms ticks.
fn thread_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = after.split(' ').skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}

/// One bare P-384 verification timed by the wall clock and by this thread's CPU time: on
/// a machine shared with other work the two differ by the time the thread waited for a
/// core, which is what inflates wall-clock figures (criterion's included).
fn p384_wall_and_cpu() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let message = [0x42u8; 1024];
    let sig = pair.sign(&rng, &message).unwrap();
    let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, pair.public_key().as_ref()).unwrap();
    let n = 3000u32;
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
    for _ in 0..n {
        key.verify_sig(black_box(&message), sig.as_ref()).unwrap();
    }
    let wall = wall.elapsed() / n;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    match (cpu, thread_cpu()) {
        (Some(before), Some(after)) => println!(
            "bare P-384 verify (1 KiB): {:.1} us wall clock, {:.1} us CPU time; load average {}",
            wall.as_secs_f64() * 1e6,
            (after - before).as_secs_f64() * 1e6 / f64::from(n),
            load.split(' ').next().unwrap_or("?")
        ),
        _ => println!(
            "bare P-384 verify: {:.1} us wall clock",
            wall.as_secs_f64() * 1e6
        ),
    }
}

fn bench_appraisal(c: &mut Criterion) {
    let policy = AppraisalPolicy::parse(include_str!("../examples/appraisal.toml")).unwrap();
    let mut claims = claims();
    claims.capability_keys = vec![CapabilityKey {
        key_id: "cap-2026-11".into(),
        algorithm: "ecdsa-p384".into(),
        fingerprint: "5d41402abc4b2a76b9719d911017c592a3b0e1d7c5e9a3f1b2c4d6e8f0a1b2c3".into(),
    }];
    // As many earlier samples as the ledger keeps per agent, a minute apart.
    let history: Vec<Sample> = (0..18u64)
        .map(|i| Sample {
            at_ms: i * 60_000,
            counters: Counters {
                total_requests: i * 50,
                blocked_requests: 0,
                capability_failures: 0,
                plan_validations: i * 50,
                uptime_seconds: 2500 + i * 60,
            },
        })
        .collect();
    let now_ms = 18 * 60_000;
    let basis = Basis {
        evidence: EvidenceKind::Tpm,
        instance_bound: true,
        firmware_appraised: true,
    };
    let judge = || {
        let posture = appraise(black_box(&claims), &policy, &history, now_ms);
        assert!(posture.reasons.is_empty(), "{posture:?}");
        let subject = Subject {
            attestation_id: Some(claims.attestation_id.clone()),
            policy_hash: Some(claims.policy_hash.clone()),
            ..Subject::default()
        };
        let judged = accepted_appraisal(&basis, &posture, policy.id());
        Ear::new(
            VerifierId::attestor("ledger"),
            1_790_000_000,
            &[7; 32],
            judged,
            subject,
        )
    };
    let ear = judge();
    let signer = EarSigner::generate().unwrap();
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let bare = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let message = statement();
    let bare_sig = bare.sign(&rng, &message).unwrap().as_ref().to_vec();
    let parsed = ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, bare.public_key().as_ref()).unwrap();

    let mut group = c.benchmark_group("appraisal");
    group.bench_function("appraise_and_build_ear", |b| b.iter(judge));
    group.bench_function("sign_ear", |b| {
        b.iter(|| signer.sign(black_box(&ear)).unwrap())
    });
    group.bench_function("ref_p384_verify_aws_lc_parsed", |b| {
        b.iter(|| parsed.verify_sig(black_box(&message), &bare_sig).unwrap())
    });
    group.bench_function("ref_p384_sign_aws_lc", |b| {
        b.iter(|| bare.sign(&rng, black_box(&message)).unwrap())
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_dsse(&mut c);
    bench_appraisal(&mut c);
    bench_cbor(&mut c);
    c.final_summary();

    println!("\nmedians, same run:");
    p384_wall_and_cpu();
    let show = |label: &str, (g, a): (&str, &str), (h, r): (&str, &str)| {
        if let (Some(x), Some(y)) = (median_ns(g, a), median_ns(h, r)) {
            println!(
                "{label}: {:.1} us vs {:.1} us reference = {:.2}x",
                x / 1e3,
                y / 1e3,
                x / y
            );
        }
    };
    let dsse_ref = |name| ("dsse", name);
    show(
        "DSSE sign vs bare P-384 sign",
        ("dsse", "sign"),
        dsse_ref("ref_p384_sign_aws_lc"),
    );
    show(
        "DSSE verify vs bare P-384 verify (parsed key)",
        ("dsse", "verify"),
        dsse_ref("ref_p384_verify_aws_lc_parsed"),
    );
    show(
        "DSSE verify incl. key parse vs bare verify (parsed key)",
        ("dsse", "verify_with_key_from_sec1"),
        dsse_ref("ref_p384_verify_aws_lc_parsed"),
    );
    show(
        "bare P-384 verify, key parsed per call vs parsed once",
        dsse_ref("ref_p384_verify_aws_lc_unparsed"),
        dsse_ref("ref_p384_verify_aws_lc_parsed"),
    );
    show(
        "CBOR encode record vs SHA-256 of the leaf",
        ("cbor", "encode_record"),
        ("cbor", "ref_sha256_of_leaf"),
    );
    show(
        "CBOR decode record vs SHA-256 of the leaf",
        ("cbor", "decode_record"),
        ("cbor", "ref_sha256_of_leaf"),
    );
}
