//! Wire parsers, policy digests and EK chain validation against output of real tpm2-tools,
//! swtpm and openssl (fixtures in tests/fixtures/tpm, see its README; plus live runs).
//! A missing tool fails the test: these cross-checks are the point.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestor_verify::evidence::certchain::{
    pem_to_der_all, public_key_of, spki_of, verify_chain, CertChainError, ChainCache, EcCurve,
    PublicKey,
};
use attestor_verify::evidence::tpm::policy::{
    policy_command_code, policy_or, policy_pcr, sealed_key_policy, zero_digest, TPM_CC_CERTIFY,
};
use attestor_verify::evidence::tpm::wire::{
    object_name, parse_attest, parse_public, parse_signature, parse_tpm2_tools_pcr_file,
    quote_pcr_digest, strip_tpm2b, tpm2_tools_pcr_file, Attested, EccPublic, PcrSelection,
    TPM_ALG_ECDSA, TPM_ECC_NIST_P384, TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
};
use attestor_verify::evidence::tpm::HashAlg;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED};

fn fixtures() -> PathBuf {
    crate::support::repo_root().join("tests/fixtures/tpm")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// Runs a tool; a missing tool or a failure fails the test with the tool's output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 2027-06-01, inside the fixture certificates' validity (made 2026-11-29, valid to 9999).
fn fixture_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

fn ak(dir: &Path) -> (Vec<u8>, EccPublic) {
    let tpmt = strip_tpm2b(&read(dir, "ak.pub")).unwrap().to_vec();
    let public = parse_public(&tpmt).unwrap();
    (tpmt, public)
}

fn verify_ecdsa_p384(ak: &EccPublic, msg: &[u8], sig: &[u8]) -> bool {
    let sig = parse_signature(sig).unwrap();
    assert_eq!(sig.hash, HashAlg::Sha384);
    let point = ak.sec1_uncompressed().unwrap();
    let fixed = UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &point)
        .verify(msg, &sig.to_fixed(48).unwrap())
        .is_ok();
    let der = UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &point)
        .verify(msg, &sig.to_der().unwrap())
        .is_ok();
    assert_eq!(fixed, der, "fixed and DER forms disagree");
    fixed
}

fn sel(bank: HashAlg, pcrs: &[u8]) -> PcrSelection {
    PcrSelection {
        bank,
        pcrs: pcrs.to_vec(),
    }
}

fn refs(values: &[Vec<u8>]) -> Vec<&[u8]> {
    values.iter().map(Vec::as_slice).collect()
}

/// Every check that holds for one output set of make_fixtures.sh.
fn check_tpm_set(dir: &Path, now: SystemTime) {
    // AK: a restricted P-384 ECDSA/SHA-384 signing key; its Name matches tpm2-tools'.
    let (ak_tpmt, ak) = ak(dir);
    let attrs = ak.object_attributes;
    assert!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin());
    assert!(attrs.restricted() && attrs.sign() && !attrs.decrypt());
    assert_eq!(ak.name_alg, HashAlg::Sha384);
    assert_eq!(ak.curve, TPM_ECC_NIST_P384);
    let scheme = ak.scheme.unwrap();
    assert_eq!(
        (scheme.scheme, scheme.hash_alg()),
        (TPM_ALG_ECDSA, Some(HashAlg::Sha384))
    );
    assert_eq!(ak.sec1_uncompressed().unwrap().len(), 97);
    assert_eq!(object_name(&ak_tpmt, HashAlg::Sha384), read(dir, "ak.name"));

    // Quote over sha384:0,1,2,13.
    let msg = read(dir, "quote.msg");
    let attest = parse_attest(&msg).unwrap();
    assert_eq!(attest.magic, TPM_GENERATED_VALUE);
    assert_eq!(attest.attest_type, TPM_ST_ATTEST_QUOTE);
    let nonce = hex::decode(read(dir, "quote.nonce.hex")).unwrap();
    assert_eq!(attest.extra_data, nonce);
    assert_eq!(attest.clock_info.safe, 1);
    assert_eq!(&attest.qualified_signer[..2], &[0x00, 0x0c]);
    assert!(verify_ecdsa_p384(&ak, &msg, &read(dir, "quote.sig")));
    let mut forged = msg.clone();
    forged[msg.len() - 1] ^= 1;
    assert!(!verify_ecdsa_p384(&ak, &forged, &read(dir, "quote.sig")));
    let Attested::Quote {
        pcr_select,
        pcr_digest,
    } = &attest.attested
    else {
        panic!("not a quote: {:?}", attest.attested)
    };
    assert_eq!(pcr_select, &[sel(HashAlg::Sha384, &[0, 1, 2, 13])]);

    // The PCR file: same selection, values hash to the signed digest, and we write it
    // byte for byte as tpm2_quote did.
    let pcr_file = read(dir, "quote.pcrs");
    let (file_sel, values) = parse_tpm2_tools_pcr_file(&pcr_file).unwrap();
    assert_eq!(&file_sel, pcr_select);
    assert_eq!(
        &quote_pcr_digest(HashAlg::Sha384, &refs(&values)),
        pcr_digest
    );
    assert_eq!(tpm2_tools_pcr_file(&file_sel, &values).unwrap(), pcr_file);
    // tpm2_pcrread's raw values agree.
    let raw = read(dir, "pcr_sha384_0_1_2_13.bin");
    assert_eq!(raw, values.concat());

    // Two banks, 13 PCRs: the file holds two TPML_DIGESTs.
    let msg2 = read(dir, "quote2.msg");
    let attest2 = parse_attest(&msg2).unwrap();
    assert!(verify_ecdsa_p384(&ak, &msg2, &read(dir, "quote2.sig")));
    let Attested::Quote {
        pcr_select,
        pcr_digest,
    } = &attest2.attested
    else {
        panic!("not a quote")
    };
    assert_eq!(
        pcr_select,
        &[
            sel(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 13]),
            sel(HashAlg::Sha384, &[0, 1, 2, 13])
        ]
    );
    let pcr_file2 = read(dir, "quote2.pcrs");
    assert_eq!(pcr_file2.len(), 132 + 4 + 2 * 532);
    let (sel2, values2) = parse_tpm2_tools_pcr_file(&pcr_file2).unwrap();
    assert_eq!(&sel2, pcr_select);
    assert_eq!(values2[0].len(), 32);
    assert_eq!(values2[12].len(), 48);
    assert_eq!(
        &quote_pcr_digest(HashAlg::Sha384, &refs(&values2)),
        pcr_digest
    );
    assert_eq!(tpm2_tools_pcr_file(&sel2, &values2).unwrap(), pcr_file2);

    // Policy digests equal the TPM's trial-session results.
    let zero = zero_digest(HashAlg::Sha384);
    let quoted = [sel(HashAlg::Sha384, &[0, 1, 2, 13])];
    let pcr_branch = policy_pcr(HashAlg::Sha384, &zero, &quoted, &refs(&values));
    assert_eq!(pcr_branch, read(dir, "policy_pcr.digest"));
    let cc_branch = policy_command_code(HashAlg::Sha384, &zero, TPM_CC_CERTIFY);
    assert_eq!(cc_branch, read(dir, "policy_cc_certify.digest"));
    let sealed = read(dir, "policy_sealed.digest");
    assert_eq!(
        policy_or(HashAlg::Sha384, &[&pcr_branch, &cc_branch]).unwrap(),
        sealed
    );
    assert_eq!(
        sealed_key_policy(HashAlg::Sha384, &quoted, &refs(&values)),
        sealed
    );

    // Certification of the policy-bound key by the AK.
    let key_tpmt = strip_tpm2b(&read(dir, "key.pub")).unwrap().to_vec();
    let key = parse_public(&key_tpmt).unwrap();
    assert_eq!(key.auth_policy, sealed);
    let ka = key.object_attributes;
    assert!(ka.fixed_tpm() && ka.fixed_parent() && ka.sensitive_data_origin());
    assert!(ka.admin_with_policy() && ka.no_da() && ka.sign());
    assert!(!ka.user_with_auth() && !ka.restricted() && !ka.decrypt());
    let key_name = object_name(&key_tpmt, key.name_alg);
    assert_eq!(key_name, read(dir, "key.name"));
    let cmsg = read(dir, "certify.msg");
    let cert = parse_attest(&cmsg).unwrap();
    assert_eq!(
        (cert.magic, cert.attest_type),
        (TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY)
    );
    assert_eq!(cert.extra_data, [0x00, 0xff, 0x55, 0xaa]);
    assert_eq!(cert.qualified_signer, attest.qualified_signer);
    let Attested::Certify { name, .. } = &cert.attested else {
        panic!("not a certification")
    };
    assert_eq!(name, &key_name);
    assert!(verify_ecdsa_p384(&ak, &cmsg, &read(dir, "certify.sig")));

    // EK certificate chain, and the certified key is the TPM's EK.
    let root = pem_to_der_all(&String::from_utf8(read(dir, "ca_root.pem")).unwrap()).unwrap();
    let inter =
        pem_to_der_all(&String::from_utf8(read(dir, "ca_intermediate.pem")).unwrap()).unwrap();
    let ek_der = read(dir, "ek_p384.der");
    let chain = verify_chain(&ek_der, &inter, &root, now).unwrap();
    assert_eq!(
        chain.certs,
        vec![ek_der.clone(), inter[0].clone(), root[0].clone()]
    );
    let ek = parse_public(strip_tpm2b(&read(dir, "ek.pub")).unwrap()).unwrap();
    assert_eq!(
        chain.leaf_public_key().unwrap(),
        PublicKey::Ec {
            curve: EcCurve::P384,
            sec1_point: ek.sec1_uncompressed().unwrap()
        }
    );
    assert!(ek.object_attributes.restricted() && ek.object_attributes.decrypt());
    let rsa_ek = read(dir, "ek_rsa2048.der");
    assert_eq!(
        verify_chain(&rsa_ek, &inter, &root, now)
            .unwrap()
            .certs
            .len(),
        3
    );
}

/// A cached path answers only for the same certificates and within their validity: a
/// different anchor or a time past the leaf's notAfter is judged afresh, as verify_chain
/// would judge it.
#[test]
fn chain_cache_answers_only_what_verify_chain_would() {
    let dir = fixtures();
    let pem = |name: &str| pem_to_der_all(&String::from_utf8(read(&dir, name)).unwrap()).unwrap();
    let (root, inter, other_root) = (
        pem("ca_root.pem"),
        pem("ca_intermediate.pem"),
        pem("other_ca_root.pem"),
    );
    let ek = read(&dir, "ek_p384.der");
    let now = fixture_now();
    let cache = ChainCache::default();
    cache.verify(&ek, &[&inter, &[]], &root, now).unwrap();
    // Same inputs: answered from the cache (and still right).
    cache.verify(&ek, &[&[], &inter], &root, now).unwrap();
    assert!(matches!(
        cache.verify(&ek, &[&inter], &other_root, now),
        Err(CertChainError::NoPath { .. } | CertChainError::SignatureInvalid { .. })
    ));
    // The fixtures are valid until 9999-12-31T23:59:59Z.
    let far_future = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400);
    let fresh = verify_chain(&ek, &inter, &root, far_future).unwrap_err();
    let cached = cache.verify(&ek, &[&inter], &root, far_future).unwrap_err();
    assert_eq!(cached.to_string(), fresh.to_string());
    assert!(matches!(cached, CertChainError::Expired { .. }), "{cached}");
    let before = UNIX_EPOCH + Duration::from_secs(86_400);
    assert!(matches!(
        cache.verify(&ek, &[&inter], &root, before),
        Err(CertChainError::NotYetValid { .. })
    ));
}

#[test]
fn fixtures_from_swtpm_and_tpm2_tools() {
    check_tpm_set(&fixtures(), fixture_now());
}

/// Picks a port P with P and P+1 free (swtpm's server and control sockets).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair")
}

#[test]
fn live_swtpm_matches_parsers_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("set");
    let pcr2 = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    run(Command::new("bash")
        .arg(fixtures().join("make_fixtures.sh"))
        .arg(&out)
        .arg(free_port_pair().to_string())
        .arg(&pcr2));
    check_tpm_set(&out, SystemTime::now());
    // A fresh PCR 2 value gives a policy different from the stored fixture's.
    assert_ne!(
        read(&out, "policy_pcr.digest"),
        read(&fixtures(), "policy_pcr.digest")
    );
}

#[test]
fn tpm2_print_agrees_on_quote_fields() {
    let dir = fixtures();
    let a = parse_attest(&read(&dir, "quote.msg")).unwrap();
    let yaml = String::from_utf8(read(&dir, "quote.msg.yaml")).unwrap();
    let field = |key: &str| -> String {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_string()
    };
    assert_eq!(field("magic"), format!("{:x}", a.magic));
    assert_eq!(field("type"), format!("{:x}", a.attest_type));
    assert_eq!(field("qualifiedSigner"), hex::encode(&a.qualified_signer));
    assert_eq!(field("extraData"), hex::encode(&a.extra_data));
    assert_eq!(field("clock"), a.clock_info.clock.to_string());
    assert_eq!(field("resetCount"), a.clock_info.reset_count.to_string());
    assert_eq!(
        field("restartCount"),
        a.clock_info.restart_count.to_string()
    );
    assert_eq!(field("safe"), a.clock_info.safe.to_string());
    // tpm2-tools 5.4 prints firmwareVersion as the hex of its in-memory (little-endian)
    // bytes; tss-esapi agrees with our big-endian decoding (see tss_esapi_agrees_on_layouts).
    assert_eq!(
        field("firmwareVersion"),
        hex::encode(a.firmware_version.to_le_bytes())
    );
    assert_eq!(field("sizeofSelect"), "3");
    assert_eq!(field("pcrSelect"), "072000");
    let Attested::Quote { pcr_digest, .. } = &a.attested else {
        panic!()
    };
    assert_eq!(field("pcrDigest"), hex::encode(pcr_digest));
}

#[test]
fn tss_esapi_agrees_on_layouts() {
    use tss_esapi::structures::{Attest, AttestInfo, Public, Signature};
    use tss_esapi::traits::{Marshall, UnMarshall};
    let dir = fixtures();
    for msg in ["quote.msg", "quote2.msg", "certify.msg"] {
        let bytes = read(&dir, msg);
        let ours = parse_attest(&bytes).unwrap();
        let theirs = Attest::unmarshall(&bytes).unwrap();
        assert_eq!(theirs.marshall().unwrap(), bytes);
        assert_eq!(theirs.extra_data().value(), ours.extra_data.as_slice());
        assert_eq!(
            theirs.qualified_signer().value(),
            ours.qualified_signer.as_slice()
        );
        assert_eq!(theirs.clock_info().clock(), ours.clock_info.clock);
        assert_eq!(
            theirs.clock_info().reset_count(),
            ours.clock_info.reset_count
        );
        assert_eq!(
            theirs.clock_info().restart_count(),
            ours.clock_info.restart_count
        );
        assert_eq!(theirs.clock_info().safe(), ours.clock_info.safe == 1);
        assert_eq!(theirs.firmware_version(), ours.firmware_version);
        match (theirs.attested(), &ours.attested) {
            (
                AttestInfo::Quote { info },
                Attested::Quote {
                    pcr_digest,
                    pcr_select,
                },
            ) => {
                assert_eq!(info.pcr_digest().value(), pcr_digest.as_slice());
                let n: usize = info
                    .pcr_selection()
                    .get_selections()
                    .iter()
                    .map(|s| s.selected().len())
                    .sum();
                assert_eq!(n, pcr_select.iter().map(|s| s.pcrs.len()).sum::<usize>());
            }
            (
                AttestInfo::Certify { info },
                Attested::Certify {
                    name,
                    qualified_name,
                },
            ) => {
                assert_eq!(info.name().value(), name.as_slice());
                assert_eq!(info.qualified_name().value(), qualified_name.as_slice());
            }
            other => panic!("type mismatch: {other:?}"),
        }
    }
    for key in ["ak.pub", "key.pub", "ek.pub"] {
        let tpmt = strip_tpm2b(&read(&dir, key)).unwrap().to_vec();
        let theirs = Public::unmarshall(&tpmt).unwrap();
        let ours = parse_public(&tpmt).unwrap();
        assert_eq!(theirs.object_attributes().0, ours.object_attributes.0);
        assert_eq!(theirs.auth_policy().value(), ours.auth_policy.as_slice());
        let Public::Ecc { unique, .. } = theirs else {
            panic!("not ECC")
        };
        assert_eq!(unique.x().value(), ours.x.as_slice());
        assert_eq!(unique.y().value(), ours.y.as_slice());
    }
    let sig = read(&dir, "quote.sig");
    let Signature::EcDsa(theirs) = Signature::unmarshall(&sig).unwrap() else {
        panic!("not ECDSA")
    };
    let ours = parse_signature(&sig).unwrap();
    assert_eq!(theirs.signature_r().value(), ours.r.as_slice());
    assert_eq!(theirs.signature_s().value(), ours.s.as_slice());
}

/// Feeds `input` to every byte parser; they may fail but must not panic.
fn parse_everything(input: &[u8]) {
    let _ = parse_attest(input);
    let _ = parse_signature(input);
    let _ = parse_public(input);
    let _ = strip_tpm2b(input);
    let _ = parse_tpm2_tools_pcr_file(input);
    let _ = attestor_verify::evidence::tpm::wire::parse_pcr_selection(input);
    let _ = spki_of(input);
    let _ = public_key_of(input);
    let _ = verify_chain(input, &[input.to_vec()], &[input.to_vec()], fixture_now());
}

#[test]
fn truncation_at_every_length_is_an_error() {
    let dir = fixtures();
    type Parses = fn(&[u8]) -> bool;
    let cases: Vec<(&str, Vec<u8>, Parses)> = vec![
        ("quote.msg", read(&dir, "quote.msg"), |b| {
            parse_attest(b).is_ok()
        }),
        ("quote2.msg", read(&dir, "quote2.msg"), |b| {
            parse_attest(b).is_ok()
        }),
        ("certify.msg", read(&dir, "certify.msg"), |b| {
            parse_attest(b).is_ok()
        }),
        ("quote.sig", read(&dir, "quote.sig"), |b| {
            parse_signature(b).is_ok()
        }),
        (
            "ak tpmt",
            strip_tpm2b(&read(&dir, "ak.pub")).unwrap().to_vec(),
            |b| parse_public(b).is_ok(),
        ),
        (
            "key tpmt",
            strip_tpm2b(&read(&dir, "key.pub")).unwrap().to_vec(),
            |b| parse_public(b).is_ok(),
        ),
        ("ak.pub", read(&dir, "ak.pub"), |b| strip_tpm2b(b).is_ok()),
        ("quote2.pcrs", read(&dir, "quote2.pcrs"), |b| {
            parse_tpm2_tools_pcr_file(b).is_ok()
        }),
        ("ek_p384.der", read(&dir, "ek_p384.der"), |b| {
            spki_of(b).is_ok()
        }),
    ];
    for (name, full, ok) in cases {
        assert!(ok(&full), "{name} should parse");
        for len in 0..full.len() {
            assert!(!ok(&full[..len]), "{name} truncated to {len} parsed");
            parse_everything(&full[..len]);
        }
        let mut longer = full.clone();
        longer.push(0);
        assert!(!ok(&longer), "{name} with a trailing byte parsed");
    }
}

#[test]
fn random_garbage_and_bit_flips_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = (next() % 300) as usize;
        let buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        parse_everything(&buf);
        let _ = pem_to_der_all(&String::from_utf8_lossy(&buf));
    }
    let dir = fixtures();
    for name in [
        "quote.msg",
        "certify.msg",
        "quote.sig",
        "ak.pub",
        "quote.pcrs",
        "ek_p384.der",
    ] {
        let full = read(&dir, name);
        for i in 0..full.len() {
            for bit in [0x01u8, 0x80] {
                let mut flipped = full.clone();
                flipped[i] ^= bit;
                parse_everything(&flipped);
                parse_everything(flipped.get(2..).unwrap_or_default());
            }
        }
    }
}

struct Chain {
    root: Vec<Vec<u8>>,
    inter: Vec<Vec<u8>>,
    ek: Vec<u8>,
}

fn fixture_chain() -> Chain {
    let dir = fixtures();
    let pem = |n| pem_to_der_all(&String::from_utf8(read(&dir, n)).unwrap()).unwrap();
    Chain {
        root: pem("ca_root.pem"),
        inter: pem("ca_intermediate.pem"),
        ek: read(&dir, "ek_p384.der"),
    }
}

#[test]
fn ek_chain_rejections() {
    let c = fixture_chain();
    let now = fixture_now();
    let other_root =
        pem_to_der_all(&String::from_utf8(read(&fixtures(), "other_ca_root.pem")).unwrap())
            .unwrap();
    let other_ek = read(&fixtures(), "other_ek_p384.der");

    // Another CA's EK: same issuer names, different key identifiers.
    for anchors in [&c.root, &other_root] {
        assert!(matches!(
            verify_chain(&other_ek, &c.inter, anchors, now),
            Err(CertChainError::NoPath { .. })
        ));
    }
    // Our EK with only the other CA as anchor.
    assert!(matches!(
        verify_chain(&c.ek, &c.inter, &other_root, now),
        Err(CertChainError::NoPath { .. })
    ));
    // Missing intermediate.
    assert!(matches!(
        verify_chain(&c.ek, &[], &c.root, now),
        Err(CertChainError::NoPath { .. })
    ));
    // Tampered signatures (last byte of the signature BIT STRING).
    let mut bad_ek = c.ek.clone();
    *bad_ek.last_mut().unwrap() ^= 1;
    match verify_chain(&bad_ek, &c.inter, &c.root, now) {
        Err(CertChainError::SignatureInvalid { cert, issuer }) => {
            assert!(cert.starts_with("leaf"), "{cert}");
            assert!(issuer.contains("swtpm-localca"), "{issuer}");
        }
        other => panic!("{other:?}"),
    }
    let mut bad_inter = c.inter[0].clone();
    *bad_inter.last_mut().unwrap() ^= 1;
    match verify_chain(&c.ek, &[bad_inter], &c.root, now) {
        Err(CertChainError::SignatureInvalid { cert, .. }) => {
            assert!(cert.starts_with("intermediate"), "{cert}")
        }
        other => panic!("{other:?}"),
    }
    // Tampered TBS (a byte of the EC point) also breaks the signature.
    let mut bad_tbs = c.ek.clone();
    let at = bad_tbs.len() / 2;
    bad_tbs[at] ^= 1;
    assert!(verify_chain(&bad_tbs, &c.inter, &c.root, now).is_err());
    // Validity: after notAfter (year 10000) and before notBefore.
    let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400);
    match verify_chain(&c.ek, &c.inter, &c.root, far) {
        Err(CertChainError::Expired { not_after, .. }) => {
            assert!(not_after.starts_with("9999-12-31"))
        }
        other => panic!("{other:?}"),
    }
    let early = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    assert!(matches!(
        verify_chain(&c.ek, &c.inter, &c.root, early),
        Err(CertChainError::NotYetValid { .. })
    ));
    // The intermediate alone as anchor is fine (anchors are trusted as configured); the
    // EK as an issuer is not.
    assert_eq!(
        verify_chain(&c.ek, &[], &c.inter, now).unwrap().certs.len(),
        2
    );
    let rsa_ek = read(&fixtures(), "ek_rsa2048.der");
    assert!(matches!(
        verify_chain(&rsa_ek, std::slice::from_ref(&c.ek), &c.root, now),
        Err(CertChainError::NoPath { .. })
    ));
    // A pinned leaf is its own anchor.
    assert_eq!(
        verify_chain(&c.ek, &[], std::slice::from_ref(&c.ek), now)
            .unwrap()
            .certs,
        vec![c.ek.clone()]
    );
}

fn der_to_pem_file(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let der_path = dir.join(format!("{name}.der"));
    let pem_path = dir.join(format!("{name}.pem"));
    std::fs::write(&der_path, der).unwrap();
    run(Command::new("openssl")
        .args(["x509", "-inform", "der", "-in"])
        .arg(&der_path)
        .arg("-out")
        .arg(&pem_path));
    pem_path
}

#[test]
fn openssl_verify_agrees_on_ek_chain() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let ek = der_to_pem_file(dir.path(), "ek", &read(&fx, "ek_p384.der"));
    let other = der_to_pem_file(dir.path(), "other", &read(&fx, "other_ek_p384.der"));
    // swtpm's critical SAN(dirName) is accepted by OpenSSL 3.0 without -ignore_critical.
    let verify = |leaf: &Path| {
        Command::new("openssl")
            .args(["verify", "-attime", "1811808000", "-CAfile"])
            .arg(fx.join("ca_root.pem"))
            .arg("-untrusted")
            .arg(fx.join("ca_intermediate.pem"))
            .arg(leaf)
            .output()
            .expect("openssl must be installed")
    };
    let ok = verify(&ek);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let c = fixture_chain();
    assert!(verify_chain(&c.ek, &c.inter, &c.root, fixture_now()).is_ok());
    assert!(!verify(&other).status.success());
    let other_der = read(&fx, "other_ek_p384.der");
    assert!(verify_chain(&other_der, &c.inter, &c.root, fixture_now()).is_err());
}

/// Makes a CA or leaf certificate with openssl; returns its DER.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn key(&self, name: &str, alg: &[&str]) {
        run(Command::new("openssl")
            .args(["genpkey", "-out"])
            .arg(self.path(&format!("{name}.key")))
            .args(alg));
    }

    fn root(&self, name: &str, alg: &[&str], ext: &str, sign: &[&str]) -> Vec<u8> {
        self.key(name, alg);
        let cfg = self.path(&format!("{name}.cnf"));
        std::fs::write(&cfg, format!("[v]\n{ext}\n")).unwrap();
        run(Command::new("openssl")
            .args(["req", "-x509", "-new", "-days", "30", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-key")
            .arg(self.path(&format!("{name}.key")))
            .arg("-config")
            .arg(&cfg)
            .args(["-extensions", "v"])
            .arg("-out")
            .arg(self.path(&format!("{name}.pem")))
            .args(sign));
        self.der(name)
    }

    fn issue(&self, name: &str, alg: &[&str], issuer: &str, ext: &str, sign: &[&str]) -> Vec<u8> {
        self.key(name, alg);
        let csr = self.path(&format!("{name}.csr"));
        let cfg = self.path(&format!("{name}.cnf"));
        std::fs::write(
            &cfg,
            format!("[req]\ndistinguished_name=dn\n[dn]\n[v]\n{ext}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"),
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["req", "-new", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-config")
            .arg(&cfg)
            .arg("-key")
            .arg(self.path(&format!("{name}.key")))
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "10", "-set_serial", "7", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(self.path(&format!("{issuer}.pem")))
            .arg("-CAkey")
            .arg(self.path(&format!("{issuer}.key")))
            .arg("-extfile")
            .arg(&cfg)
            .args(["-extensions", "v", "-out"])
            .arg(self.path(&format!("{name}.pem")))
            .args(sign));
        self.der(name)
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.path(&format!("{name}.pem"))).unwrap();
        pem_to_der_all(&pem).unwrap().remove(0)
    }
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign";
const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature";
const P384: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];
const P256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const RSA: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];

#[test]
fn openssl_made_chains_cover_ecdsa_pss_and_ca_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki {
        dir: tmp.path().to_path_buf(),
    };
    // Certificates made during the test start "now": check a minute later.
    let now = SystemTime::now() + Duration::from_secs(60);

    // ECDSA P-384 issuer, SHA-256 and SHA-384 signatures, P-256 leaf.
    let ec_root = pki.root("ecroot", P384, CA_EXT, &["-sha384"]);
    for hash in ["-sha256", "-sha384"] {
        let leaf = pki.issue("ecleaf", P256, "ecroot", LEAF_EXT, &[hash]);
        verify_chain(&leaf, &[], std::slice::from_ref(&ec_root), now).unwrap();
        assert!(matches!(
            public_key_of(&leaf).unwrap(),
            PublicKey::Ec { curve: EcCurve::P256, ref sec1_point } if sec1_point.len() == 65
        ));
    }

    // RSA-PSS with SHA-256/384 and salt = hash length; other salts are refused, not misread.
    let rsa_root = pki.root("rsaroot", RSA, CA_EXT, &["-sha256"]);
    for hash in ["-sha256", "-sha384"] {
        let pss = [
            hash,
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ];
        let leaf = pki.issue("pssleaf", P256, "rsaroot", LEAF_EXT, &pss);
        verify_chain(&leaf, &[], std::slice::from_ref(&rsa_root), now).unwrap();
    }
    let max_salt = [
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:max",
    ];
    let leaf = pki.issue("pssmax", P256, "rsaroot", LEAF_EXT, &max_salt);
    match verify_chain(&leaf, &[], std::slice::from_ref(&rsa_root), now) {
        Err(CertChainError::UnsupportedAlgorithm { detail, .. }) => {
            assert!(detail.contains("salt length 222"), "{detail}")
        }
        other => panic!("{other:?}"),
    }

    // pathLenConstraint 0 on the root forbids an intermediate below it.
    let pl_root = pki.root(
        "plroot",
        P384,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign",
        &["-sha384"],
    );
    let pl_inter = pki.issue("plinter", P384, "plroot", CA_EXT, &["-sha384"]);
    let pl_leaf = pki.issue("plleaf", P256, "plinter", LEAF_EXT, &["-sha384"]);
    assert!(matches!(
        verify_chain(
            &pl_leaf,
            std::slice::from_ref(&pl_inter),
            std::slice::from_ref(&pl_root),
            now
        ),
        Err(CertChainError::PathLenExceeded {
            path_len: 0,
            below: 1,
            ..
        })
    ));
    // The same intermediate as anchor works.
    verify_chain(&pl_leaf, &[], &[pl_inter], now).unwrap();

    // An intermediate that is not a CA, or lacks keyCertSign, cannot issue.
    for (name, ext) in [
        (
            "notca",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyCertSign",
        ),
        (
            "noku",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature",
        ),
        ("nobc", "keyUsage=critical,keyCertSign"),
    ] {
        let inter = pki.issue(name, P384, "ecroot", ext, &["-sha384"]);
        let leaf = pki.issue(&format!("{name}leaf"), P256, name, LEAF_EXT, &["-sha384"]);
        let result = verify_chain(&leaf, &[inter], std::slice::from_ref(&ec_root), now);
        assert!(
            matches!(result, Err(CertChainError::IssuerNotCa { .. })),
            "{name}: {result:?}"
        );
    }

    // An unknown critical extension on the leaf is refused.
    let odd = pki.issue(
        "odd",
        P256,
        "ecroot",
        "basicConstraints=critical,CA:FALSE\n1.2.3.4=critical,ASN1:NULL",
        &["-sha384"],
    );
    assert!(matches!(
        verify_chain(&odd, &[], &[ec_root], now),
        Err(CertChainError::UnhandledCriticalExtension { .. })
    ));
}
