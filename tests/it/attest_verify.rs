//! End to end on a real swtpm: attest → verify, and every binding broken alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::support::agent::{tpm2_checkquote_accepts, tpm_ev, tpm_ev_mut, AgentFixture};
use crate::support::Swtpm;
use attestor_agent::attest::AgentError;
use attestor_verify::bundle::{Bundle, SealedKeyEvidence};
use attestor_verify::checks::{verify_bundle, Check, Expectations};
use attestor_verify::dsse::{EcdsaP384Signer, Envelope};
use attestor_verify::evidence::tpm::certification::CertificationCache;
use attestor_verify::evidence::tpm::HashAlg;
use attestor_verify::profiles::Profile;
use base64::Engine;

fn failed_check(setup: &AgentFixture, bundle: &Bundle, expect: &Expectations) -> Check {
    verify_bundle(bundle, &setup.profile, expect)
        .expect_err("tampered bundle was accepted")
        .check
}

#[test]
fn round_trip_attest_then_verify() {
    let setup = AgentFixture::new();
    let bundle = setup.attest();
    // The bundle survives its JSON form byte for byte.
    let reparsed = Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(reparsed, bundle);
    let verified = verify_bundle(&reparsed, &setup.profile, &setup.expect()).unwrap();
    assert_eq!(
        verified.claims.kernel_config_hash,
        hex::encode(setup.kernel().kernel_config_hash)
    );
    assert!(verified.claims.zero_retention);
    assert_eq!(verified.claims.total_requests, 120_394);
    // A second attestation reuses the keys and does not measure again.
    let second = setup.attest();
    let ev = tpm_ev(&second);
    assert_eq!(ev.event_log.events.len(), 1);
    verify_bundle(&second, &setup.profile, &setup.expect()).unwrap();
}

#[test]
fn each_broken_binding_is_named() {
    let setup = AgentFixture::new();
    let bundle = setup.attest();
    let expect = setup.expect();

    // A flipped payload byte.
    let mut b = bundle.clone();
    b.envelope.payload[10] ^= 1;
    assert_eq!(failed_check(&setup, &b, &expect), Check::EnvelopeSignature);

    // The same payload re-signed with another key.
    let mut b = bundle.clone();
    let other = EcdsaP384Signer::generate().unwrap();
    b.envelope =
        Envelope::sign(&b.envelope.payload_type, b.envelope.payload.clone(), &other).unwrap();
    assert_eq!(failed_check(&setup, &b, &expect), Check::EnvelopeSignature);

    // A quote made for another envelope.
    let other_bundle = setup.attest();
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).quote = tpm_ev(&other_bundle).quote.clone();
    assert_eq!(failed_check(&setup, &b, &expect), Check::QuoteBinding);

    // A PCR value changed (firmware PCR, then the measured one).
    for pcr in [0u8, 13] {
        let mut b = bundle.clone();
        let value = tpm_ev_mut(&mut b).pcrs.get_mut(&pcr).unwrap();
        *value = "11".repeat(48);
        assert_eq!(failed_check(&setup, &b, &expect), Check::PcrDigest);
    }

    // A PCR the quote does not cover smuggled in.
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).pcrs.insert(9, "00".repeat(48));
    assert_eq!(failed_check(&setup, &b, &expect), Check::PcrDigest);

    // An event-log entry removed.
    let mut b = bundle.clone();
    tpm_ev_mut(&mut b).event_log.events.pop();
    assert_eq!(failed_check(&setup, &b, &expect), Check::EventLogReplay);

    // A stale timestamp: verify six minutes later.
    let late = Expectations {
        now: Some(SystemTime::now() + Duration::from_secs(360)),
        ..expect.clone()
    };
    assert_eq!(failed_check(&setup, &bundle, &late), Check::Freshness);

    // A wrong expected policy hash.
    let wrong = Expectations {
        policy_hash: Some("00".repeat(32)),
        ..expect.clone()
    };
    assert_eq!(failed_check(&setup, &bundle, &wrong), Check::PolicyHash);

    // A nonce the evidence does not commit to.
    let nonce = Expectations {
        nonce: vec![1, 2, 3],
        ..expect.clone()
    };
    assert_eq!(failed_check(&setup, &bundle, &nonce), Check::QuoteBinding);

    // The sealed key swapped for the AK (a key not bound to the PCR policy).
    let mut b = bundle.clone();
    let ev = tpm_ev_mut(&mut b);
    ev.sealed_key.public = ev.ak_public.clone();
    assert_eq!(
        failed_check(&setup, &b, &expect),
        Check::SealedKeyCertification
    );
}

#[test]
fn ek_certificate_from_another_ca_is_refused() {
    let setup = AgentFixture::new();
    let foreign = AgentFixture::with_tpm(Swtpm::start_with_own_ca());
    // The foreign TPM's bundle is internally consistent but its EK chains to another CA.
    let bundle = foreign.attest();
    verify_bundle(&bundle, &foreign.profile, &foreign.expect()).unwrap();
    assert_eq!(
        failed_check(&setup, &bundle, &foreign.expect()),
        Check::EkChain
    );
    // And our bundle with the foreign EK certificate swapped in.
    let mut ours = setup.attest();
    let foreign_ek = tpm_ev(&bundle).ek_certificates[0].clone();
    tpm_ev_mut(&mut ours).ek_certificates[0] = foreign_ek;
    assert_eq!(failed_check(&setup, &ours, &setup.expect()), Check::EkChain);
}

#[test]
fn drift_refuses_to_sign_and_reseal_restores() {
    let setup = AgentFixture::new();
    let before = setup.attest();
    verify_bundle(&before, &setup.profile, &setup.expect()).unwrap();

    std::fs::write(setup.kernel_config_file(), "workers = 64\n").unwrap();
    let drifted = setup.kernel();
    let err = setup
        .agent()
        .attest(&drifted, &setup.status(), b"")
        .unwrap_err();
    assert!(matches!(err, AgentError::Drift { pcr: 13, .. }), "{err}");
    assert!(err.to_string().contains("attestor reseal"));

    // Reverting the file does not help: the PCR keeps the drifted measurement.
    std::fs::write(
        setup.kernel_config_file(),
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-kernel/kernel.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let reverted = setup.kernel();
    assert!(matches!(
        setup.agent().attest(&reverted, &setup.status(), b""),
        Err(AgentError::Drift { .. })
    ));

    // The operator approves the current configuration.
    let mut agent = setup.agent();
    agent.reseal(&reverted).unwrap();
    let after = agent.attest(&reverted, &setup.status(), b"").unwrap();
    let verified = verify_bundle(&after, &setup.profile, &setup.expect()).unwrap();
    let ev = tpm_ev(&after);
    // The log shows the whole history: original, drifted, reverted.
    assert_eq!(ev.event_log.events.len(), 3);
    assert_eq!(
        verified.claims.kernel_config_hash,
        hex::encode(reverted.kernel_config_hash)
    );
    // The old bundle's sealed key no longer matches the quoted PCR: old key evidence
    // combined with a new quote is refused.
    let mut mixed = after.clone();
    tpm_ev_mut(&mut mixed).sealed_key = tpm_ev(&before).sealed_key.clone();
    assert_ne!(
        verify_bundle(&mixed, &setup.profile, &setup.expect())
            .unwrap_err()
            .check,
        Check::Freshness
    );
}

#[test]
fn tpm_restart_starts_a_new_measurement_log() {
    let mut setup = AgentFixture::new();
    setup.attest();
    setup.tpm.restart();
    let bundle = setup.attest();
    let ev = tpm_ev(&bundle);
    assert_eq!(ev.event_log.events.len(), 1);
    verify_bundle(&bundle, &setup.profile, &setup.expect()).unwrap();
}

#[test]
fn tpm2_checkquote_accepts_the_quote() {
    let setup = AgentFixture::new();
    tpm2_checkquote_accepts(&setup.attest(), HashAlg::Sha384);
}

fn attestor_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attestor"))
        .args(args)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap()
}

#[test]
fn cli_attest_and_verify_exit_codes() {
    let setup = AgentFixture::new();
    let out = setup.dir.path().join("bundle.json");
    let profile = setup.dir.path().join("profile.toml");
    let config = setup.config_path.to_str().unwrap();
    let tcti = setup.tpm.tcti();
    // The README's first example: a local enrollment CA certifies the AK, so that the
    // verifier knows it is in this TPM.
    let o = attestor_cli(&[
        "enroll",
        "--local",
        "--config",
        config,
        "--tcti",
        &tcti,
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let enrollment_ca = setup
        .dir
        .path()
        .join("state/enrollment-ca/enrollment-ca.pem");
    let o = attestor_cli(&[
        "attest",
        "--config",
        config,
        "--tcti",
        &tcti,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let policy_hash = hex::encode(setup.kernel().policy_hash);
    let verify = |bundle: &Path, policy_hash: &str| {
        attestor_cli(&[
            "verify",
            bundle.to_str().unwrap(),
            "--profile",
            profile.to_str().unwrap(),
            "--policy-hash",
            policy_hash,
            "--enrollment-ca",
            enrollment_ca.to_str().unwrap(),
        ])
    };
    let o = verify(&out, &policy_hash);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = verify(&out, &"00".repeat(32));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("FAILED policy-hash"));

    // Bad input: truncated, garbage, empty bundles give a clear error and exit 2.
    let bytes = std::fs::read(&out).unwrap();
    let bad = setup.dir.path().join("bad.json");
    for input in [&bytes[..bytes.len() / 2], b"\x00\xffgarbage", b""] {
        std::fs::write(&bad, input).unwrap();
        let o = verify(&bad, &policy_hash);
        assert_eq!(o.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.starts_with("error: bundle"), "{stderr}");
        assert!(!stderr.contains("panicked"));
    }
    // A bundle with base64 garbage inside an otherwise valid document.
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["evidence"]["tpm"]["quote"]["attest"] = "!!!".into();
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(verify(&bad, &policy_hash).status.code(), Some(2));
    // A structurally valid bundle whose TPM structures are garbage fails a check.
    v["evidence"]["tpm"]["quote"]["attest"] = base64::engine::general_purpose::STANDARD
        .encode(b"garbage")
        .into();
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = verify(&bad, &policy_hash);
    assert_eq!(o.status.code(), Some(1));

    // Bad config and status files are named in the error.
    let broken = setup.dir.path().join("broken.toml");
    std::fs::write(&broken, "state_dir = [").unwrap();
    let o = attestor_cli(&[
        "attest",
        "--config",
        broken.to_str().unwrap(),
        "--tcti",
        &tcti,
        "--out",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.toml"));
    std::fs::write(
        setup.dir.path().join("agent/status.json"),
        "{\"total_requests\": \"many\"}",
    )
    .unwrap();
    let o = attestor_cli(&["attest", "--config", config, "--tcti", &tcti, "--out", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("status"));
}

#[test]
fn measured_pcr_extended_by_someone_else_is_reported() {
    let setup = AgentFixture::new();
    setup.attest();
    // Another process extends the measured PCR behind the agent's back.
    let o = Command::new("tpm2_pcrextend")
        .arg(format!("13:sha384={}", "ab".repeat(48)))
        .env("TPM2TOOLS_TCTI", setup.tpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .expect("tpm2_pcrextend (tpm2-tools) must be installed: run scripts/test.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = setup
        .agent()
        .attest(&setup.kernel(), &setup.status(), b"")
        .unwrap_err();
    assert!(
        matches!(err, AgentError::EventLogMismatch { pcr: 13, .. }),
        "{err}"
    );
}

#[test]
fn dsse_payload_is_an_in_toto_statement() {
    let setup = AgentFixture::new();
    let bundle = setup.attest();
    assert_eq!(bundle.envelope.payload_type, "application/vnd.in-toto+json");
    let statement: serde_json::Value = serde_json::from_slice(&bundle.envelope.payload).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["subject"][0]["name"], "policy-kernel");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        hex::encode(setup.kernel().policy_hash)
    );
    for field in [
        "attestation_id",
        "timestamp",
        "policy_hash",
        "zero_retention",
        "epsilon_limits",
        "version",
        "kernel_config_hash",
        "capability_keys",
        "tenant_isolation",
        "egress_firewall_enabled",
        "pii_detection_enabled",
        "total_requests",
        "blocked_requests",
        "capability_failures",
        "plan_validations",
        "uptime_seconds",
    ] {
        assert!(!statement["predicate"][field].is_null(), "missing {field}");
    }
    for field in [
        "max_epsilon",
        "max_delta",
        "current_usage",
        "reset_interval",
    ] {
        assert!(!statement["predicate"]["epsilon_limits"][field].is_null());
    }
}

/// `profile` with an empty certification cache of its own: every check runs in full.
fn uncached(profile: &Profile) -> Profile {
    let mut profile = profile.clone();
    profile.tpm.as_mut().unwrap().certifications = Default::default();
    profile
}

/// What a verifier answers, in a comparable form: the whole result, or the failed check and why.
fn outcome(bundle: &Bundle, profile: &Profile, expect: &Expectations) -> Result<String, String> {
    verify_bundle(bundle, profile, expect)
        .map(|verified| format!("{verified:?}"))
        .map_err(|e| e.to_string())
}

/// Changes a bundle, given another sealed key's public area of the same TPM.
type Tampering = fn(&mut Bundle, &[u8]);

#[test]
fn the_sealed_key_certification_is_verified_once_per_exact_bytes() {
    let setup = AgentFixture::new();
    let expect = setup.expect();
    let profile = uncached(&setup.profile);
    let cache = profile.tpm.as_ref().unwrap().certifications.clone();
    // The same answer as a verifier that has never seen the certification.
    let judged = |bundle: &Bundle| {
        let answer = outcome(bundle, &profile, &expect);
        assert_eq!(answer, outcome(bundle, &uncached(&setup.profile), &expect));
        answer
    };

    let first = setup.attest();
    let second = setup.attest();
    assert_eq!(tpm_ev(&first).sealed_key, tpm_ev(&second).sealed_key);
    assert!(judged(&first).is_ok());
    assert_eq!((cache.signatures_checked(), cache.len()), (1, 1));
    // Steady state: the next attestation carries the same certification, checked once.
    assert!(judged(&second).is_ok());
    assert!(judged(&first).is_ok());
    assert_eq!((cache.signatures_checked(), cache.len()), (1, 1));

    // A changed byte anywhere misses, is checked, is refused, and is not kept: the same
    // refusal every time.
    let mut resealed_agent = setup.agent();
    resealed_agent.reseal(&setup.kernel()).unwrap();
    let resealed = resealed_agent
        .attest(&setup.kernel(), &setup.status(), b"")
        .unwrap();
    let other_sealed_public = tpm_ev(&resealed).sealed_key.public.clone();
    assert_ne!(other_sealed_public, tpm_ev(&first).sealed_key.public);
    let tamperings: [(&str, Tampering); 4] = [
        ("attest", |b, _| {
            let attest = &mut tpm_ev_mut(b).sealed_key.certification.attest;
            let last = attest.len() - 1;
            attest[last] ^= 1;
        }),
        ("signature", |b, _| {
            let signature = &mut tpm_ev_mut(b).sealed_key.certification.signature;
            let last = signature.len() - 1;
            signature[last] ^= 1;
        }),
        ("sealed key byte", |b, _| {
            let public = &mut tpm_ev_mut(b).sealed_key.public;
            let last = public.len() - 1;
            public[last] ^= 1;
        }),
        ("another sealed key of the same TPM", |b, other| {
            tpm_ev_mut(b).sealed_key.public = other.to_vec();
        }),
    ];
    for (what, tamper) in tamperings {
        let mut bundle = second.clone();
        tamper(&mut bundle, &other_sealed_public);
        for _ in 0..2 {
            let before = cache.signatures_checked();
            let refusal = judged(&bundle).expect_err(what);
            assert!(
                refusal.contains(Check::SealedKeyCertification.name()),
                "{what}: {refusal}"
            );
            assert_eq!(cache.signatures_checked(), before + 1, "{what}");
            assert_eq!(cache.len(), 1, "{what}");
        }
    }
    // The AK's public area: another key's, or one byte changed, misses and is refused.
    let sealed = &tpm_ev(&first).sealed_key;
    let mut ak_public = tpm_ev(&first).ak_public.clone();
    let last = ak_public.len() - 1;
    ak_public[last] ^= 1;
    for ak in [&sealed.public, &ak_public] {
        let before = cache.signatures_checked();
        let answer = cache.verify(ak, &sealed.public, (&sealed.certification).into(), |s| s);
        assert!(answer.is_err());
        assert_eq!(cache.signatures_checked(), before + 1);
    }
    assert_eq!(cache.len(), 1);

    // The genuine certification is still a hit; a new sealed key's is checked once.
    let checked = cache.signatures_checked();
    assert!(judged(&second).is_ok());
    assert_eq!(cache.signatures_checked(), checked);
    assert!(judged(&resealed).is_ok());
    assert!(judged(&resealed).is_ok());
    assert_eq!((cache.signatures_checked(), cache.len()), (checked + 1, 2));
}

#[test]
fn the_certification_cache_keeps_only_passes_and_is_bounded() {
    let setup = AgentFixture::new();
    let first = setup.attest();
    let mut agent = setup.agent();
    agent.reseal(&setup.kernel()).unwrap();
    let second = agent.attest(&setup.kernel(), &setup.status(), b"").unwrap();
    let inputs = |b: &Bundle| {
        let ev = tpm_ev(b);
        (ev.ak_public.clone(), ev.sealed_key.clone())
    };
    let (ak, sealed) = inputs(&first);
    let (_, resealed) = inputs(&second);

    // A good signature whose certification the caller refuses is not kept.
    let cache = CertificationCache::new(2);
    for _ in 0..2 {
        let refused: Result<(), &str> =
            cache.verify(&ak, &sealed.public, (&sealed.certification).into(), |s| {
                s.unwrap();
                Err("refused by the caller")
            });
        assert!(refused.is_err());
    }
    assert_eq!((cache.signatures_checked(), cache.len()), (2, 0));

    // Three passing certifications in a cache of two: the oldest makes room.
    let pass = |sealed: &SealedKeyEvidence| {
        cache
            .verify(&ak, &sealed.public, (&sealed.certification).into(), |s| s)
            .unwrap()
    };
    let mut third = sealed.clone();
    third.public.push(0); // Still the AK's signature: a distinct input the check passes.
    for s in [&sealed, &resealed, &third] {
        pass(s);
    }
    assert_eq!((cache.signatures_checked(), cache.len()), (5, 2));
    pass(&third);
    assert_eq!(cache.signatures_checked(), 5);
    pass(&sealed);
    assert_eq!((cache.signatures_checked(), cache.len()), (6, 2));
}
