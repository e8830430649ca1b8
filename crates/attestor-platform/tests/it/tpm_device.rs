//! Integration tests of the TPM device layer against swtpm (one swtpm per test).
//! Run with `cargo test --test tpm_device`; swtpm, swtpm-tools, tpm2-tools and openssl
//! must be installed (the tests fail, naming the tool, when one is missing).

use std::path::Path;
use std::process::Command;

use crate::support::Swtpm;
use attestor_platform::tpm::{KeyBlob, Tpm, TpmError};
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::wire::{self, Attest, Attested, EccScheme, PcrSelection};
use attestor_verify::evidence::tpm::HashAlg;

const P384: SigningAlgorithm = SigningAlgorithm::EcdsaP384;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

const NONCE: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef"; // 48 bytes

fn open(sw: &Swtpm) -> Tpm {
    Tpm::open(&sw.tcti()).unwrap()
}

fn sha384(parts: &[&[u8]]) -> Vec<u8> {
    HashAlg::Sha384.digest_parts(parts)
}

/// Parses a marshalled ECC TPMT_PUBLIC; panics on anything else.
fn ecc_public(tpmt_public: &[u8]) -> wire::EccPublic {
    wire::parse_public(tpmt_public).unwrap()
}

/// ECDSA P-384 / SHA-384 verification of `message` (hashed here) under a TPMT_PUBLIC.
fn verify_p384(public: &[u8], message: &[u8], r: &[u8], s: &[u8]) -> bool {
    let key = ecc_public(public).sec1_uncompressed().unwrap();
    let sig = [r, s].concat();
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
        .verify(message, &sig)
        .is_ok()
}

/// An ECDSA TPMT_SIGNATURE as (hash alg, r, s), r and s left-padded to 48 bytes (P-384).
fn ecdsa_p384_signature(signature: &[u8]) -> (HashAlg, Vec<u8>, Vec<u8>) {
    let sig = wire::parse_signature(signature).unwrap();
    let mut r = sig.to_fixed(48).unwrap();
    let s = r.split_off(48);
    (sig.hash, r, s)
}

/// Checks the AK signature over a TPMS_ATTEST and returns the parsed attestation.
fn verified_attest(ak: &KeyBlob, attest: &[u8], signature: &[u8]) -> Attest {
    let (hash, r, s) = ecdsa_p384_signature(signature);
    assert_eq!(hash, HashAlg::Sha384);
    let ak_public = Tpm::public_of(ak).unwrap();
    assert!(
        verify_p384(&ak_public, attest, &r, &s),
        "AK signature does not verify"
    );
    let parsed = wire::parse_attest(attest).unwrap();
    assert_eq!(parsed.magic, wire::TPM_GENERATED_VALUE);
    parsed
}

/// The ECDSA-with-SHA-384 scheme of a TPMT_PUBLIC.
fn ecdsa_sha384_scheme() -> Option<EccScheme> {
    Some(EccScheme {
        scheme: wire::TPM_ALG_ECDSA,
        hash: HashAlg::Sha384.tpm_alg_id(),
        count: None,
    })
}

/// TPM2B form (u16 big-endian size prefix), e.g. a TPM2B_PUBLIC for `tpm2_checkquote -u`.
fn tpm2b(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// PEM SubjectPublicKeyInfo of an uncompressed P-384 point (04 || x || y).
fn p384_spki_pem(sec1_point: &[u8]) -> String {
    use base64::Engine;
    assert_eq!(sec1_point.len(), 97);
    // SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING (0 unused bits) }.
    let mut der = vec![
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    der.extend_from_slice(sec1_point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The tpm2-tools PCR file (`tpm2_quote -o`, `tpm2_checkquote -f`) of one SHA-384 bank,
/// from (PCR, value) pairs in ascending PCR order.
fn sha384_pcr_file(values: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let selection = [PcrSelection {
        bank: HashAlg::Sha384,
        pcrs: values.iter().map(|(p, _)| *p).collect(),
    }];
    let digests: Vec<Vec<u8>> = values.iter().map(|(_, v)| v.clone()).collect();
    wire::tpm2_tools_pcr_file(&selection, &digests).unwrap()
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[test]
fn extend_follows_the_hash_chain_in_both_banks() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    assert_eq!(
        tpm.active_banks().unwrap(),
        vec![HashAlg::Sha256, HashAlg::Sha384]
    );

    for round in 0..2u8 {
        let old256 = tpm.read_pcrs(HashAlg::Sha256, &[13]).unwrap().remove(0).1;
        let old384 = tpm.read_pcrs(HashAlg::Sha384, &[13]).unwrap().remove(0).1;
        let d256 = HashAlg::Sha256.digest(&[round]);
        let d384 = HashAlg::Sha384.digest(&[round]);
        tpm.extend(
            13,
            &[
                (HashAlg::Sha256, d256.clone()),
                (HashAlg::Sha384, d384.clone()),
            ],
        )
        .unwrap();
        let new256 = tpm.read_pcrs(HashAlg::Sha256, &[13]).unwrap();
        let new384 = tpm.read_pcrs(HashAlg::Sha384, &[13]).unwrap();
        assert_eq!(
            new256,
            vec![(13, HashAlg::Sha256.digest_parts(&[&old256, &d256]))]
        );
        assert_eq!(new384, vec![(13, sha384(&[&old384, &d384]))]);
    }
    // The neighbours are untouched.
    let zero = vec![0u8; 48];
    assert_eq!(
        tpm.read_pcrs(HashAlg::Sha384, &[12]).unwrap(),
        vec![(12, zero)]
    );

    assert!(matches!(
        tpm.extend(13, &[(HashAlg::Sha384, vec![0; 32])]),
        Err(TpmError::DigestLength {
            alg: HashAlg::Sha384,
            expected: 48,
            actual: 32
        })
    ));
    assert!(matches!(
        tpm.extend(24, &[(HashAlg::Sha384, vec![0; 48])]),
        Err(TpmError::PcrOutOfRange(24))
    ));
}

#[test]
fn read_pcrs_returns_more_than_eight_in_order() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let d = HashAlg::Sha384.digest(b"twenty-three");
    tpm.extend(23, &[(HashAlg::Sha384, d.clone())]).unwrap();

    let all: Vec<u8> = (0..24).rev().collect(); // unsorted on purpose, with all 24
    let values = tpm.read_pcrs(HashAlg::Sha384, &all).unwrap();
    assert_eq!(
        values.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (0..24).collect::<Vec<u8>>()
    );
    assert!(values.iter().all(|(_, v)| v.len() == 48));
    assert_eq!(values[23].1, sha384(&[&[0u8; 48], &d]));
    // PC-Client: 17..=22 start at all-ones after a reset (dynamic root of trust), the rest zero.
    assert_eq!(values[0].1, vec![0u8; 48]);
    assert_eq!(values[17].1, vec![0xffu8; 48]);

    let some = tpm
        .read_pcrs(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 23, 3])
        .unwrap();
    assert_eq!(some.len(), 11);
    assert!(some.iter().all(|(_, v)| v.len() == 32));

    assert!(matches!(
        tpm.read_pcrs(HashAlg::Sha384, &[]),
        Err(TpmError::EmptyPcrSelection)
    ));
    assert!(matches!(
        tpm.read_pcrs(HashAlg::Sha384, &[30]),
        Err(TpmError::PcrOutOfRange(30))
    ));
}

#[test]
fn ek_certificate_carries_the_ek_public_key_and_chains_to_the_harness_ca() {
    use x509_cert::der::{Decode, Encode};
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let der = tpm.ek_certificate().unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let spki = &cert.tbs_certificate.subject_public_key_info;
    assert_eq!(spki.algorithm.oid.to_string(), "1.2.840.10045.2.1"); // id-ecPublicKey
    let ek = ecc_public(&tpm.ek_public().unwrap());
    assert_eq!(ek.curve, wire::TPM_ECC_NIST_P384);
    assert_eq!(
        spki.subject_public_key.raw_bytes(),
        ek.sec1_uncompressed().unwrap().as_slice()
    );
    assert!(!cert.to_der().unwrap().is_empty());

    // The chain: root -> intermediate -> EK certificate, and not to another CA's root.
    let dir = tempfile::tempdir().unwrap();
    assert!(openssl_verifies(
        dir.path(),
        &der,
        &sw.ca_root_pem(),
        &sw.ca_intermediate_pem()
    ));
    let other = Swtpm::start_with_own_ca();
    assert_ne!(
        std::fs::read(other.ca_root_pem()).unwrap(),
        std::fs::read(sw.ca_root_pem()).unwrap()
    );
    let other_der = open(&other).ek_certificate().unwrap();
    assert!(openssl_verifies(
        dir.path(),
        &other_der,
        &other.ca_root_pem(),
        &other.ca_intermediate_pem()
    ));
    assert!(!openssl_verifies(
        dir.path(),
        &other_der,
        &sw.ca_root_pem(),
        &sw.ca_intermediate_pem()
    ));
}

fn openssl_verifies(dir: &Path, der: &[u8], root: &Path, intermediate: &Path) -> bool {
    crate::support::require_tool("openssl");
    let der_path = dir.join("ek.der");
    let pem_path = dir.join("ek.pem");
    std::fs::write(&der_path, der).unwrap();
    let conv = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&der_path)
        .arg("-out")
        .arg(&pem_path));
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(intermediate)
        .arg(&pem_path))
    .status
    .success()
}

#[test]
fn ek_certificate_missing_on_unprovisioned_tpm() {
    let sw = Swtpm::start_blank();
    let mut tpm = open(&sw);
    assert!(matches!(
        tpm.ek_certificate(),
        Err(TpmError::EkCertificateMissing { .. })
    ));
}

#[test]
fn quote_verifies_with_the_ak_and_with_tpm2_checkquote() {
    crate::support::require_tool("tpm2_checkquote");
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    tpm.extend(
        13,
        &[
            (HashAlg::Sha384, HashAlg::Sha384.digest(b"x")),
            (HashAlg::Sha256, HashAlg::Sha256.digest(b"x")),
        ],
    )
    .unwrap();
    tpm.extend(2, &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"two"))])
        .unwrap();
    let ak = tpm.create_ak(P384).unwrap();
    assert!(ak.policy_branches.is_empty());
    let ak_pub = ecc_public(&Tpm::public_of(&ak).unwrap());
    let attrs = ak_pub.object_attributes;
    assert!(attrs.fixed_tpm(), "{attrs:?}");
    assert!(attrs.fixed_parent(), "{attrs:?}");
    assert!(attrs.sensitive_data_origin(), "{attrs:?}");
    assert!(attrs.restricted(), "{attrs:?}");
    assert!(attrs.sign(), "{attrs:?}");
    assert!(!attrs.decrypt(), "{attrs:?}");
    assert_eq!(
        (ak_pub.name_alg, ak_pub.curve),
        (HashAlg::Sha384, wire::TPM_ECC_NIST_P384)
    );
    assert_eq!(ak_pub.scheme, ecdsa_sha384_scheme());

    // 12 PCRs: more than one TPML_DIGEST in tpm2-tools' PCR file.
    let pcrs: Vec<u8> = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 23];
    let (attest, signature) = tpm.quote(&ak, NONCE, HashAlg::Sha384, &pcrs).unwrap();
    let parsed = verified_attest(&ak, &attest, &signature);
    assert_eq!(parsed.attest_type, wire::TPM_ST_ATTEST_QUOTE);
    assert_eq!(parsed.extra_data, NONCE);
    assert_eq!(parsed.clock_info.safe, 1);
    let Attested::Quote {
        pcr_select: selection,
        pcr_digest,
    } = parsed.attested
    else {
        panic!("not a quote: {:?}", parsed.attested);
    };
    assert_eq!(
        selection,
        vec![PcrSelection {
            bank: HashAlg::Sha384,
            pcrs: pcrs.clone()
        }]
    );
    let values = tpm.read_pcrs(HashAlg::Sha384, &pcrs).unwrap();
    let concat: Vec<u8> = values.iter().flat_map(|(_, v)| v.clone()).collect();
    assert_eq!(pcr_digest, sha384(&[&concat]));

    // A tampered message does not verify.
    let mut tampered = attest.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (_, r, s) = ecdsa_p384_signature(&signature);
    assert!(!verify_p384(
        &Tpm::public_of(&ak).unwrap(),
        &tampered,
        &r,
        &s
    ));

    // Independent cross-check with tpm2-tools, AK given both as TPM2B_PUBLIC and as PEM.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ak.tpm2b"), tpm2b(&Tpm::public_of(&ak).unwrap())).unwrap();
    std::fs::write(
        d.join("ak.pem"),
        p384_spki_pem(&ak_pub.sec1_uncompressed().unwrap()),
    )
    .unwrap();
    std::fs::write(d.join("quote.msg"), &attest).unwrap();
    std::fs::write(d.join("quote.sig"), &signature).unwrap();
    std::fs::write(d.join("quote.pcrs"), sha384_pcr_file(&values)).unwrap();
    let checkquote = |key: &str, nonce: &[u8], pcr_file: &str| {
        run(Command::new("tpm2_checkquote")
            .current_dir(d)
            .args([
                "-u",
                key,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-f",
                pcr_file,
                "-g",
                "sha384",
                "-q",
            ])
            .arg(hex::encode(nonce)))
    };
    for key in ["ak.tpm2b", "ak.pem"] {
        let out = checkquote(key, NONCE, "quote.pcrs");
        assert!(
            out.status.success(),
            "tpm2_checkquote -u {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!checkquote("ak.pem", b"another nonce", "quote.pcrs")
        .status
        .success());
    let mut wrong = values.clone();
    wrong[0].1 = vec![1; 48];
    std::fs::write(d.join("wrong.pcrs"), sha384_pcr_file(&wrong)).unwrap();
    assert!(!checkquote("ak.pem", NONCE, "wrong.pcrs").status.success());

    assert!(matches!(
        tpm.quote(&ak, &[0; 65], HashAlg::Sha384, &pcrs),
        Err(TpmError::QualifyingDataTooLong(65))
    ));
}

/// The PCR file writer reproduces what tpm2_quote wrote for the checked-in fixture.
#[test]
fn pcr_file_writer_matches_tpm2_tools() {
    let fixtures = crate::support::repo_root().join("tests/fixtures/tpm");
    let raw = std::fs::read(fixtures.join("pcr_sha384_0_1_2_13.bin")).unwrap();
    let values: Vec<(u8, Vec<u8>)> = [0u8, 1, 2, 13]
        .iter()
        .zip(raw.chunks(48))
        .map(|(p, v)| (*p, v.to_vec()))
        .collect();
    assert_eq!(
        sha384_pcr_file(&values),
        std::fs::read(fixtures.join("quote.pcrs")).unwrap()
    );
}

/// authPolicy of the sealed key, computed in software from TPM 2.0 Part 3.
fn expected_policy(pcrs_mask: [u8; 3], pcr_values: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let zero = [0u8; 48];
    let mut selection = 1u32.to_be_bytes().to_vec();
    selection.extend_from_slice(&HashAlg::Sha384.tpm_alg_id().to_be_bytes());
    selection.push(3);
    selection.extend_from_slice(&pcrs_mask);
    let concat: Vec<u8> = pcr_values.concat();
    let pcr_branch = sha384(&[
        &zero,
        &0x17fu32.to_be_bytes(),
        &selection,
        &sha384(&[&concat]),
    ]);
    let cc_branch = sha384(&[&zero, &0x16cu32.to_be_bytes(), &0x148u32.to_be_bytes()]);
    let or = sha384(&[&zero, &0x171u32.to_be_bytes(), &pcr_branch, &cc_branch]);
    (pcr_branch, cc_branch, or)
}

#[test]
fn sealed_key_signs_until_pcr_drift_and_a_reseal_signs_again() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    tpm.extend(
        13,
        &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"config v1"))],
    )
    .unwrap();
    let sealed_pcrs = [2u8, 13];
    let sealed = tpm
        .create_sealed_key(P384, HashAlg::Sha384, &sealed_pcrs)
        .unwrap();

    // The key is what the verifier will require, and its policy is the documented one.
    let public = ecc_public(&Tpm::public_of(&sealed).unwrap());
    let attrs = public.object_attributes;
    assert!(attrs.fixed_tpm(), "{attrs:?}");
    assert!(attrs.fixed_parent(), "{attrs:?}");
    assert!(attrs.sensitive_data_origin(), "{attrs:?}");
    assert!(attrs.admin_with_policy(), "{attrs:?}");
    assert!(attrs.no_da(), "{attrs:?}");
    assert!(attrs.sign(), "{attrs:?}");
    assert!(!attrs.user_with_auth(), "{attrs:?}");
    assert!(!attrs.restricted(), "{attrs:?}");
    assert!(!attrs.decrypt(), "{attrs:?}");
    assert_eq!(public.name_alg, HashAlg::Sha384);
    assert_eq!(public.scheme, ecdsa_sha384_scheme());
    let values: Vec<Vec<u8>> = tpm
        .read_pcrs(HashAlg::Sha384, &sealed_pcrs)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let (pcr_branch, cc_branch, or) = expected_policy([0b0000_0100, 0b0010_0000, 0], &values);
    assert_eq!(sealed.policy_branches, vec![pcr_branch, cc_branch.clone()]);
    assert_eq!(public.auth_policy, or);
    let fixture_cc = std::fs::read(
        crate::support::repo_root().join("tests/fixtures/tpm/policy_cc_certify.digest"),
    )
    .unwrap();
    assert_eq!(cc_branch, fixture_cc);

    let message = b"envelope bytes";
    let signature = tpm
        .sign_sealed(&sealed, HashAlg::Sha384, &sealed_pcrs, &sha384(&[message]))
        .unwrap();
    let (_, r, s) = ecdsa_p384_signature(&signature);
    assert_eq!((r.len(), s.len()), (48, 48));
    assert!(verify_p384(
        &Tpm::public_of(&sealed).unwrap(),
        message,
        &r,
        &s
    ));
    assert!(!verify_p384(
        &Tpm::public_of(&sealed).unwrap(),
        b"other bytes",
        &r,
        &s
    ));

    // A PCR outside the sealed set may change freely.
    tpm.extend(
        14,
        &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"unrelated"))],
    )
    .unwrap();
    tpm.sign_sealed(&sealed, HashAlg::Sha384, &sealed_pcrs, &sha384(&[message]))
        .unwrap();

    // Drift: the measured PCR changes and the key refuses to sign.
    tpm.extend(
        13,
        &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"config v2"))],
    )
    .unwrap();
    let err = tpm
        .sign_sealed(&sealed, HashAlg::Sha384, &sealed_pcrs, &sha384(&[message]))
        .unwrap_err();
    assert!(matches!(err, TpmError::PolicyRefused { .. }), "{err:?}");
    // Asking with another selection than the sealing one is refused the same way.
    let err = tpm
        .sign_sealed(&sealed, HashAlg::Sha384, &[13], &sha384(&[message]))
        .unwrap_err();
    assert!(matches!(err, TpmError::PolicyRefused { .. }), "{err:?}");

    // Re-seal to the new state: the new key signs, the old one still does not.
    let resealed = tpm
        .create_sealed_key(P384, HashAlg::Sha384, &sealed_pcrs)
        .unwrap();
    assert_ne!(resealed.public, sealed.public);
    let signature = tpm
        .sign_sealed(
            &resealed,
            HashAlg::Sha384,
            &sealed_pcrs,
            &sha384(&[message]),
        )
        .unwrap();
    let (_, r, s) = ecdsa_p384_signature(&signature);
    assert!(verify_p384(
        &Tpm::public_of(&resealed).unwrap(),
        message,
        &r,
        &s
    ));
    assert!(matches!(
        tpm.sign_sealed(&sealed, HashAlg::Sha384, &sealed_pcrs, &sha384(&[message])),
        Err(TpmError::PolicyRefused { .. })
    ));

    assert!(matches!(
        tpm.sign_sealed(&resealed, HashAlg::Sha384, &sealed_pcrs, &[0; 32]),
        Err(TpmError::DigestLength {
            expected: 48,
            actual: 32,
            ..
        })
    ));
    let mut no_branches = resealed.clone();
    no_branches.policy_branches.clear();
    assert!(matches!(
        tpm.sign_sealed(
            &no_branches,
            HashAlg::Sha384,
            &sealed_pcrs,
            &sha384(&[message])
        ),
        Err(TpmError::MalformedKeyBlob(_))
    ));
}

#[test]
fn sealed_key_can_be_sealed_to_the_sha256_bank() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let sealed = tpm
        .create_sealed_key(P384, HashAlg::Sha256, &[7, 13])
        .unwrap();
    tpm.sign_sealed(&sealed, HashAlg::Sha256, &[7, 13], &sha384(&[b"m"]))
        .unwrap();
    tpm.extend(7, &[(HashAlg::Sha256, HashAlg::Sha256.digest(b"d"))])
        .unwrap();
    assert!(matches!(
        tpm.sign_sealed(&sealed, HashAlg::Sha256, &[7, 13], &sha384(&[b"m"])),
        Err(TpmError::PolicyRefused { .. })
    ));
}

#[test]
fn certify_sealed_verifies_under_the_ak_even_after_drift() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ak = tpm.create_ak(P384).unwrap();
    let sealed = tpm.create_sealed_key(P384, HashAlg::Sha384, &[13]).unwrap();
    let sealed_public = Tpm::public_of(&sealed).unwrap();
    let name = [
        &HashAlg::Sha384.tpm_alg_id().to_be_bytes()[..],
        &sha384(&[&sealed_public]),
    ]
    .concat();

    for round in 0..2 {
        let (attest, signature) = tpm.certify_sealed(&ak, &sealed, NONCE).unwrap();
        let parsed = verified_attest(&ak, &attest, &signature);
        assert_eq!(parsed.attest_type, wire::TPM_ST_ATTEST_CERTIFY);
        assert_eq!(parsed.extra_data, NONCE);
        let Attested::Certify {
            name: certified_name,
            ..
        } = parsed.attested
        else {
            panic!("not a certification: {:?}", parsed.attested);
        };
        assert_eq!(certified_name, name);
        // The Certify branch does not depend on PCRs: certification still works after drift.
        if round == 0 {
            tpm.extend(13, &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"drift"))])
                .unwrap();
        }
    }
    let (attest, _) = tpm.certify_sealed(&ak, &sealed, &[]).unwrap();
    assert!(wire::parse_attest(&attest).unwrap().extra_data.is_empty());
}

#[test]
fn key_blobs_reload_after_a_tpm_reset_in_a_new_context() {
    let mut sw = Swtpm::start();
    let (ak, sealed) = {
        let mut tpm = open(&sw);
        let ak = tpm.create_ak(P384).unwrap();
        let sealed = tpm
            .create_sealed_key(P384, HashAlg::Sha384, &[13, 23])
            .unwrap();
        tpm.extend(
            13,
            &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"before reset"))],
        )
        .unwrap();
        assert!(matches!(
            tpm.sign_sealed(&sealed, HashAlg::Sha384, &[13, 23], &sha384(&[b"m"])),
            Err(TpmError::PolicyRefused { .. })
        ));
        (ak, sealed)
    };
    // Blobs go through serialization as a caller would store them.
    let ak: KeyBlob = serde_json::from_str(&serde_json::to_string(&ak).unwrap()).unwrap();
    let sealed: KeyBlob = serde_json::from_str(&serde_json::to_string(&sealed).unwrap()).unwrap();

    sw.restart();
    let mut tpm = open(&sw);
    // A reset: PCR 13 is zero again, which is the value the key was sealed to.
    assert_eq!(
        tpm.read_pcrs(HashAlg::Sha384, &[13]).unwrap(),
        vec![(13, vec![0u8; 48])]
    );
    let signature = tpm
        .sign_sealed(&sealed, HashAlg::Sha384, &[13, 23], &sha384(&[b"m"]))
        .unwrap();
    let (_, r, s) = ecdsa_p384_signature(&signature);
    assert!(verify_p384(&Tpm::public_of(&sealed).unwrap(), b"m", &r, &s));
    let (attest, signature) = tpm.quote(&ak, NONCE, HashAlg::Sha384, &[13]).unwrap();
    let parsed = verified_attest(&ak, &attest, &signature);
    assert_eq!(parsed.extra_data, NONCE);
    assert!(
        parsed.clock_info.reset_count >= 1,
        "swtpm restart should count as a TPM reset"
    );
    let (attest, signature) = tpm.certify_sealed(&ak, &sealed, NONCE).unwrap();
    verified_attest(&ak, &attest, &signature);
}

#[test]
fn fifty_sign_and_quote_cycles_leak_no_slots() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ak = tpm.create_ak(P384).unwrap();
    let sealed = tpm.create_sealed_key(P384, HashAlg::Sha384, &[13]).unwrap();
    for i in 0..50u32 {
        let digest = sha384(&[&i.to_be_bytes()]);
        tpm.sign_sealed(&sealed, HashAlg::Sha384, &[13], &digest)
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        tpm.quote(&ak, &i.to_be_bytes(), HashAlg::Sha384, &[0, 13])
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
    }
    // Error paths flush too: more refusals than the TPM has session or object slots.
    tpm.extend(13, &[(HashAlg::Sha384, HashAlg::Sha384.digest(b"drift"))])
        .unwrap();
    for _ in 0..8 {
        assert!(matches!(
            tpm.sign_sealed(&sealed, HashAlg::Sha384, &[13], &sha384(&[b"m"])),
            Err(TpmError::PolicyRefused { .. })
        ));
        let mut broken = ak.clone();
        broken.private[20] ^= 0xff;
        assert!(tpm.quote(&broken, NONCE, HashAlg::Sha384, &[13]).is_err());
    }
    tpm.certify_sealed(&ak, &sealed, NONCE).unwrap();
    tpm.quote(&ak, NONCE, HashAlg::Sha384, &[13]).unwrap();
    assert_eq!(
        tpm.ek_public().unwrap().len(),
        tpm.ek_public().unwrap().len()
    );
    tpm.ek_certificate().unwrap();
}

#[test]
fn open_flushes_handles_left_by_killed_processes() {
    crate::support::require_tool("tpm2_createprimary");
    let sw = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    // tpm2-tools leaves what it creates loaded (there is no resource manager): fill all
    // object and session slots, as crashed agents would.
    let tool = |args: &[&str]| {
        let out = run(Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir.path())
            .env("TPM2TOOLS_TCTI", sw.tcti())
            .env("TSS2_LOG", "all+none"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for i in 0..3 {
        tool(&[
            "tpm2_createprimary",
            "-C",
            "o",
            "-G",
            "ecc256",
            "-c",
            &format!("p{i}.ctx"),
        ]);
    }
    tool(&["tpm2_startauthsession", "-S", "hmac0.ctx", "--hmac-session"]);
    tool(&["tpm2_startauthsession", "-S", "hmac1.ctx", "--hmac-session"]);
    tool(&[
        "tpm2_startauthsession",
        "-S",
        "policy.ctx",
        "--policy-session",
    ]);

    let mut tpm = open(&sw);
    let ak = tpm.create_ak(P384).unwrap();
    let sealed = tpm.create_sealed_key(P384, HashAlg::Sha384, &[13]).unwrap();
    let (attest, signature) = tpm.certify_sealed(&ak, &sealed, NONCE).unwrap();
    verified_attest(&ak, &attest, &signature);
}

#[test]
fn open_reports_unreachable_tpm_and_bad_tcti() {
    let sw = Swtpm::start();
    let port = sw.port();
    drop(sw);
    let err = Tpm::open(&format!("swtpm:host=127.0.0.1,port={port}")).unwrap_err();
    assert!(matches!(err, TpmError::Tcti { .. }), "{err:?}");
    let err = Tpm::open("no-such-tcti-library:x").unwrap_err();
    assert!(
        matches!(err, TpmError::Tcti { .. } | TpmError::TctiConfig { .. }),
        "{err:?}"
    );
}

#[test]
fn malformed_blobs_are_typed_errors() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let ak = tpm.create_ak(P384).unwrap();
    let mut trailing = ak.clone();
    trailing.public.push(0);
    assert!(matches!(
        Tpm::public_of(&trailing),
        Err(TpmError::MalformedKeyBlob(_))
    ));
    assert!(matches!(
        tpm.quote(&trailing, NONCE, HashAlg::Sha384, &[0]),
        Err(TpmError::MalformedKeyBlob(_))
    ));
    let mut truncated = ak.clone();
    truncated.public.truncate(10);
    assert!(matches!(
        tpm.quote(&truncated, NONCE, HashAlg::Sha384, &[0]),
        Err(TpmError::MalformedKeyBlob(_))
    ));
    let empty = KeyBlob {
        public: ak.public.clone(),
        private: vec![],
        policy_branches: vec![],
    };
    assert!(matches!(
        tpm.quote(&empty, NONCE, HashAlg::Sha384, &[0]),
        Err(TpmError::MalformedKeyBlob(_))
    ));
    // The AK is not a sealed key.
    assert!(matches!(
        tpm.sign_sealed(&ak, HashAlg::Sha384, &[0], &[0; 48]),
        Err(TpmError::MalformedKeyBlob(_))
    ));
    // A TPM-rejected private part is a command error naming the operation.
    let mut corrupt = ak.clone();
    corrupt.private[20] ^= 0xff;
    let err = tpm
        .quote(&corrupt, NONCE, HashAlg::Sha384, &[0])
        .unwrap_err();
    assert!(
        matches!(err, TpmError::Command { op: "Load(AK)", .. }),
        "{err:?}"
    );
}

/// Every algorithm the agent may choose makes an AK and a sealed key the verifier accepts:
/// the sealed key's signature, its certification by the AK and a quote all verify, and
/// openssl agrees with the sealed key's signature (RSASSA-PSS included, whose salt length
/// the TPM picks).
#[test]
fn every_signing_algorithm_signs_certifies_and_quotes() {
    use attestor_verify::evidence::tpm::keys::{
        parse_tpm_public, parse_tpm_signature, TpmSigningKey,
    };
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let caps = tpm.capabilities().unwrap();
    assert_eq!(caps.banks, [HashAlg::Sha256, HashAlg::Sha384]);
    let dir = tempfile::tempdir().unwrap();
    for alg in SigningAlgorithm::ALL {
        assert!(caps.supports(alg), "{alg}");
        let ak = tpm.create_ak(alg).unwrap();
        let sealed = tpm.create_sealed_key(alg, HashAlg::Sha256, &[13]).unwrap();
        assert_eq!(
            (ak.algorithm().unwrap(), sealed.algorithm().unwrap()),
            (alg, alg)
        );
        let ak_key = TpmSigningKey::from_public(&Tpm::public_of(&ak).unwrap()).unwrap();
        let sealed_public = Tpm::public_of(&sealed).unwrap();
        let sealed_key = TpmSigningKey::from_public(&sealed_public).unwrap();

        let message = format!("envelope signed with {alg}");
        let digest = alg.hash().digest(message.as_bytes());
        let signature = tpm
            .sign_sealed(&sealed, HashAlg::Sha256, &[13], &digest)
            .unwrap();
        sealed_key
            .verify_tpm_signature(message.as_bytes(), &signature)
            .unwrap();
        let (attest, certification) = tpm.certify_sealed(&ak, &sealed, b"q").unwrap();
        ak_key
            .verify_tpm_signature(&attest, &certification)
            .unwrap();
        let (quote, quote_sig) = tpm.quote(&ak, NONCE, HashAlg::Sha256, &[0, 13]).unwrap();
        ak_key.verify_tpm_signature(&quote, &quote_sig).unwrap();
        assert!(ak_key.verify_tpm_signature(&attest, &quote_sig).is_err());

        // openssl, from the key's SubjectPublicKeyInfo and the raw signature.
        let spki = parse_tpm_public(&sealed_public)
            .unwrap()
            .spki_der()
            .unwrap();
        let raw = parse_tpm_signature(&signature).unwrap().to_dsse().unwrap();
        std::fs::write(dir.path().join("key.der"), spki).unwrap();
        std::fs::write(dir.path().join("sig.bin"), raw).unwrap();
        std::fs::write(dir.path().join("msg.bin"), &message).unwrap();
        let mut cmd = Command::new("openssl");
        cmd.current_dir(dir.path())
            .args(["dgst", &format!("-{}", alg.hash().name())])
            .args([
                "-keyform",
                "DER",
                "-verify",
                "key.der",
                "-signature",
                "sig.bin",
            ]);
        if alg == SigningAlgorithm::Rsapss2048 {
            cmd.args([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:-2",
            ]);
        }
        let out = cmd.arg("msg.bin").output().unwrap();
        assert!(
            out.status.success(),
            "openssl refused the {alg} signature: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
