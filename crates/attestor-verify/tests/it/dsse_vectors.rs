//! DSSE: the spec's published vectors, and the project's P-384 sign/verify behaviour.

use std::collections::BTreeSet;

use attestor_verify::dsse::{
    self, p384_asn1_from_fixed, DsseError, EcdsaP384Signer, Envelope, Signature, Signer,
    VerifyingKey, MAX_ENVELOPE_BYTES, MAX_SIGNATURES,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, ED25519,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/dsse");
const TYPE: &str = "application/vnd.in-toto+json";

fn fixture(name: &str) -> Value {
    let text = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn signed(payload: &[u8]) -> (EcdsaP384Signer, Envelope) {
    let signer = EcdsaP384Signer::generate().unwrap();
    let env = Envelope::sign(TYPE, payload.to_vec(), &signer).unwrap();
    (signer, env)
}

// ---- Spec vectors ------------------------------------------------------------------

#[test]
fn pae_matches_protocol_md_example() {
    assert_eq!(
        dsse::pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
}

#[test]
fn pae_of_empty_fields_keeps_every_separator() {
    assert_eq!(dsse::pae("", b""), b"DSSEv1 0  0 ");
}

#[test]
fn pae_lengths_count_bytes_and_have_no_leading_zeros() {
    let body = vec![b'x'; 100];
    let out = dsse::pae("é", &body);
    let mut expected = b"DSSEv1 2 \xc3\xa9 100 ".to_vec();
    expected.extend_from_slice(&body);
    assert_eq!(out, expected);
}

/// protocol.md's worked example: ECDSA P-256/SHA-256, raw r||s, no keyid.
#[test]
fn protocol_md_p256_envelope_verifies_over_our_pae() {
    let v = fixture("protocol_example.json");
    let env = Envelope::from_json(&serde_json::to_vec(&v["envelope"]).unwrap()).unwrap();
    assert_eq!(env.payload_type, v["payloadType"].as_str().unwrap());
    assert_eq!(env.payload, v["body"].as_str().unwrap().as_bytes());
    assert_eq!(env.signatures.len(), 1);
    assert_eq!(env.signatures[0].keyid, "", "missing keyid reads as empty");

    let pae = dsse::pae(&env.payload_type, &env.payload);
    assert_eq!(pae, v["pae"].as_str().unwrap().as_bytes());

    let point = hex::decode(v["publicKeySec1"].as_str().unwrap()).unwrap();
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point);
    key.verify(&pae, &env.signatures[0].sig).unwrap();
    // The same signature over a different payload must fail, or the check proves nothing.
    let other = dsse::pae(&env.payload_type, b"hello world!");
    assert!(key.verify(&other, &env.signatures[0].sig).is_err());
}

/// testvectors/vectors.json: Ed25519, threshold semantics as the spec's protocol.md.
#[test]
fn spec_vectors_json_all_expectations_hold() {
    let doc = fixture("vectors.json");
    let keys: Vec<(String, Vec<u8>)> = doc["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, k)| {
            assert_eq!(k["algorithm"], "ed25519");
            (
                name.clone(),
                hex::decode(k["public"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 9);

    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let env = Envelope::from_json(&serde_json::to_vec(&v["envelope"]).unwrap())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let pae = dsse::pae(&env.payload_type, &env.payload);
        let vector_pae = hex::decode(v["pae"].as_str().unwrap()).unwrap();
        if id == "payload-type-swapped" {
            // The vector's pae is what was signed; ours follows the claimed type.
            assert_ne!(pae, vector_pae, "{id}");
        } else {
            assert_eq!(
                hex::encode(&pae),
                hex::encode(&vector_pae),
                "{id}: PAE differs"
            );
        }

        let trusted: Vec<&str> = v["trustedKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        // keyid is only a hint: try every trusted key against every signature.
        let accepted: BTreeSet<&str> = keys
            .iter()
            .filter(|(name, _)| trusted.contains(&name.as_str()))
            .filter(|(_, public)| {
                env.signatures.iter().any(|s| {
                    UnparsedPublicKey::new(&ED25519, public)
                        .verify(&pae, &s.sig)
                        .is_ok()
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        let threshold = v["threshold"].as_u64().unwrap() as usize;
        let supported = v["supportedPayloadTypes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str() == Some(env.payload_type.as_str()));
        let accept = accepted.len() >= threshold && supported;
        let expect = v["expect"].as_str().unwrap();
        assert_eq!(accept, expect == "accept", "{id}: expected {expect}");
    }
}

#[test]
fn spec_url_safe_vector_decodes_to_the_right_bytes() {
    let doc = fixture("vectors.json");
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "url-safe-base64")
        .unwrap();
    let env = Envelope::from_json(&serde_json::to_vec(&v["envelope"]).unwrap()).unwrap();
    assert_eq!(env.payload, [0xfb, 0xff, 0xbf, 0x3e, 0x3f]);
    assert_eq!(env.signatures[0].sig.len(), 64);
}

// ---- Sign / verify ------------------------------------------------------------------

#[test]
fn sign_verify_round_trip_returns_the_exact_payload() {
    let (signer, env) = signed(b"{\"_type\":\"x\"}");
    let key = signer.verifying_key().unwrap();
    assert_eq!(env.verify(&key).unwrap(), b"{\"_type\":\"x\"}");
    assert_eq!(env.signatures[0].keyid, signer.keyid());

    let parsed = Envelope::from_json(&env.to_json().unwrap()).unwrap();
    assert_eq!(parsed, env);
    assert_eq!(parsed.verify(&key).unwrap(), b"{\"_type\":\"x\"}");
}

#[test]
fn json_has_standard_shape_and_padded_standard_base64() {
    let payload = vec![0xfb, 0xff, 0xbf, 0x3e];
    let (signer, env) = signed(&payload);
    let json: Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
    let obj = json.as_object().unwrap();
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["payload", "payloadType", "signatures"])
    );
    assert_eq!(json["payloadType"], TYPE);
    assert_eq!(json["payload"], "+/+/Pg==");
    assert_eq!(json["signatures"][0]["keyid"], signer.keyid());
    assert_eq!(
        json["signatures"][0]["sig"],
        STANDARD.encode(&env.signatures[0].sig)
    );
}

#[test]
fn flipped_payload_byte_is_rejected() {
    let (signer, mut env) = signed(b"payload bytes");
    env.payload[0] ^= 1;
    assert_eq!(
        env.verify(&signer.verifying_key().unwrap()),
        Err(DsseError::BadSignature)
    );
}

#[test]
fn changed_payload_type_is_rejected() {
    let (signer, mut env) = signed(b"payload bytes");
    env.payload_type = "application/vnd.in-toto+jsoN".into();
    assert_eq!(
        env.verify(&signer.verifying_key().unwrap()),
        Err(DsseError::BadSignature)
    );
}

#[test]
fn flipped_signature_byte_is_rejected_at_every_position() {
    let (signer, env) = signed(b"payload bytes");
    let key = signer.verifying_key().unwrap();
    for i in 0..env.signatures[0].sig.len() {
        let mut bad = env.clone();
        bad.signatures[0].sig[i] ^= 0x01;
        assert_eq!(bad.verify(&key), Err(DsseError::BadSignature), "byte {i}");
    }
}

#[test]
fn wrong_key_is_rejected() {
    let (_, env) = signed(b"payload bytes");
    let other = EcdsaP384Signer::generate().unwrap();
    assert_eq!(
        env.verify(&other.verifying_key().unwrap()),
        Err(DsseError::BadSignature)
    );
}

#[test]
fn any_verifying_signature_suffices_and_keyid_is_ignored() {
    let (signer, env) = signed(b"payload bytes");
    let key = signer.verifying_key().unwrap();
    let other = EcdsaP384Signer::generate().unwrap();
    let foreign = Envelope::sign(TYPE, b"payload bytes".to_vec(), &other).unwrap();

    let mut multi = env.clone();
    // A foreign signature first, carrying the trusted key's keyid: must not matter.
    multi.signatures.insert(
        0,
        Signature {
            keyid: signer.keyid(),
            sig: foreign.signatures[0].sig.clone(),
        },
    );
    multi.signatures[1].keyid = "definitely-not-this-key".into();
    assert_eq!(multi.verify(&key).unwrap(), b"payload bytes");

    // Only the foreign signature, labelled with the trusted keyid: rejected.
    let mut spoofed = foreign.clone();
    spoofed.signatures[0].keyid = signer.keyid();
    assert_eq!(spoofed.verify(&key), Err(DsseError::BadSignature));
}

#[test]
fn envelope_without_signatures_never_verifies() {
    let (signer, mut env) = signed(b"x");
    env.signatures.clear();
    assert_eq!(
        env.verify(&signer.verifying_key().unwrap()),
        Err(DsseError::NoSignatures)
    );
}

#[test]
fn url_safe_and_unpadded_base64_are_accepted() {
    let payload = vec![0xfb, 0xff, 0xbf, 0x3e, 0x3f, 0x00];
    let (signer, env) = signed(&payload);
    let key = signer.verifying_key().unwrap();
    for engine in [&URL_SAFE, &URL_SAFE_NO_PAD] {
        let json = json!({
            "payloadType": TYPE,
            "payload": engine.encode(&payload),
            "signatures": [{"sig": engine.encode(&env.signatures[0].sig)}],
        });
        let parsed = Envelope::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.verify(&key).unwrap(), payload);
    }
    let unpadded_standard = STANDARD.encode(&payload).trim_end_matches('=').to_owned();
    let json = json!({
        "payloadType": TYPE,
        "payload": unpadded_standard,
        "signatures": [{"keyid": "k", "sig": STANDARD.encode(&env.signatures[0].sig)}],
    });
    assert_eq!(
        Envelope::from_json(json.to_string().as_bytes())
            .unwrap()
            .payload,
        payload
    );
}

#[test]
fn verify_payload_type_is_exact() {
    let (_, env) = signed(b"x");
    env.verify_payload_type(TYPE).unwrap();
    assert_eq!(
        env.verify_payload_type("application/vnd.in-toto+JSON"),
        Err(DsseError::WrongPayloadType {
            expected: "application/vnd.in-toto+JSON".into(),
            found: TYPE.into()
        })
    );
}

// ---- Parsing errors ----------------------------------------------------------------

fn parse(json: Value) -> Result<Envelope, DsseError> {
    Envelope::from_json(json.to_string().as_bytes())
}

#[test]
fn missing_fields_are_named() {
    let sigs = json!([{"sig": "AA=="}]);
    assert_eq!(
        parse(json!({"payload": "", "signatures": sigs})),
        Err(DsseError::MissingField("payloadType".into()))
    );
    assert_eq!(
        parse(json!({"payloadType": TYPE, "signatures": sigs})),
        Err(DsseError::MissingField("payload".into()))
    );
    assert_eq!(
        parse(json!({"payloadType": TYPE, "payload": ""})),
        Err(DsseError::MissingField("signatures".into()))
    );
    assert_eq!(
        parse(
            json!({"payloadType": TYPE, "payload": "", "signatures": [{"sig": "AA=="}, {"keyid": "k"}]})
        ),
        Err(DsseError::MissingField("signatures[1].sig".into()))
    );
}

#[test]
fn bad_base64_names_the_field() {
    assert_eq!(
        parse(
            json!({"payloadType": TYPE, "payload": "not base64!", "signatures": [{"sig": "AA=="}]})
        ),
        Err(DsseError::Base64 {
            field: "payload".into()
        })
    );
    assert_eq!(
        parse(
            json!({"payloadType": TYPE, "payload": "", "signatures": [{"sig": "AA=="}, {"sig": "A"}]})
        ),
        Err(DsseError::Base64 {
            field: "signatures[1].sig".into()
        })
    );
    // Non-zero trailing bits would give one byte string two spellings.
    assert_eq!(
        parse(
            json!({"payloadType": TYPE, "payload": "aGVsbG8gd29ybGR=", "signatures": [{"sig": "AA=="}]})
        ),
        Err(DsseError::Base64 {
            field: "payload".into()
        })
    );
}

#[test]
fn empty_or_too_many_signatures_are_refused() {
    assert_eq!(
        parse(json!({"payloadType": TYPE, "payload": "", "signatures": []})),
        Err(DsseError::NoSignatures)
    );
    let many: Vec<Value> = (0..=MAX_SIGNATURES)
        .map(|_| json!({"sig": "AA=="}))
        .collect();
    assert_eq!(
        parse(json!({"payloadType": TYPE, "payload": "", "signatures": many})),
        Err(DsseError::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            max: MAX_SIGNATURES
        })
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        Envelope::from_json(&big),
        Err(DsseError::TooLarge {
            len: MAX_ENVELOPE_BYTES + 1,
            max: MAX_ENVELOPE_BYTES
        })
    );
}

#[test]
fn garbage_and_every_truncation_are_errors_not_panics() {
    for garbage in [
        &b""[..],
        b"null",
        b"[]",
        b"\xff\xfe\x00",
        b"{\"payloadType\": 5, \"payload\": \"\", \"signatures\": [{\"sig\": \"\"}]}",
        b"{\"payloadType\": \"t\", \"payload\": \"\", \"signatures\": {}}",
        b"{\"payloadType\": \"t\", \"payloadType\": \"u\", \"payload\": \"\", \"signatures\": [{\"sig\": \"\"}]}",
    ] {
        assert!(matches!(Envelope::from_json(garbage), Err(DsseError::Json(_))), "{garbage:?}");
    }
    let (_, env) = signed(b"{\"a\": [1, 2, 3]}");
    let json = env.to_json().unwrap();
    for len in 0..json.len() {
        assert!(
            Envelope::from_json(&json[..len]).is_err(),
            "prefix {len} parsed"
        );
    }
}

#[test]
fn serde_deserialize_applies_the_same_checks() {
    // Envelope is embedded in other documents (the bundle) through serde directly.
    let err = serde_json::from_str::<Envelope>(
        r#"{"payloadType": "t", "payload": "", "signatures": []}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no signatures"), "{err}");
}

// ---- Keys -------------------------------------------------------------------------

#[test]
fn verifying_key_from_spki_and_sec1_agree() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = pair.public_key().as_der().unwrap();

    let signer = EcdsaP384Signer::from_pkcs8(pkcs8.as_ref()).unwrap();
    assert_eq!(signer.public_key_sec1(), pair.public_key().as_ref());
    let env = Envelope::sign(TYPE, b"p".to_vec(), &signer).unwrap();
    env.verify(&VerifyingKey::from_spki_der(spki.as_ref()).unwrap())
        .unwrap();
    env.verify(&VerifyingKey::from_sec1(&signer.public_key_sec1()).unwrap())
        .unwrap();

    // Each constructor takes only its own encoding.
    assert!(VerifyingKey::from_sec1(spki.as_ref()).is_err());
    assert!(VerifyingKey::from_spki_der(&signer.public_key_sec1()).is_err());
}

#[test]
fn malformed_and_wrong_curve_keys_are_refused() {
    assert!(VerifyingKey::from_sec1(&[]).is_err());
    assert!(
        VerifyingKey::from_sec1(&[0x04; 97]).is_err(),
        "not on the curve"
    );
    assert!(VerifyingKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let p256 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    // A P-256 point is a P-256 key (a TPM's P-256 sealed key), never a P-384 one.
    let p256_key = VerifyingKey::from_sec1(p256.public_key().as_ref()).unwrap();
    let p384 = EcdsaP384Signer::generate().unwrap();
    let env = Envelope::sign("t", b"x".to_vec(), &p384).unwrap();
    assert!(env.verify(&p256_key).is_err());
    let spki = p256.public_key().as_der().unwrap();
    assert!(VerifyingKey::from_spki_der(spki.as_ref()).is_err());
    assert!(EcdsaP384Signer::from_pkcs8(pkcs8.as_ref()).is_err());
    assert!(EcdsaP384Signer::from_pkcs8(b"not a key").is_err());
}

#[test]
fn pkcs8_export_round_trips_and_keyid_is_overridable() {
    let signer = EcdsaP384Signer::generate().unwrap();
    let again = EcdsaP384Signer::from_pkcs8(&signer.to_pkcs8().unwrap()).unwrap();
    assert_eq!(again.public_key_sec1(), signer.public_key_sec1());
    assert_eq!(again.keyid(), signer.keyid());
    assert_eq!(signer.keyid().len(), 64);
    assert_eq!(again.with_keyid("tpm:abc").keyid(), "tpm:abc");
}

// ---- TPM r/s to DER ---------------------------------------------------------------

#[test]
fn fixed_to_der_uses_minimal_integers() {
    // r = 1 with leading zeros; s = 0x80 needs a 0x00 sign byte.
    assert_eq!(
        p384_asn1_from_fixed(&[0, 0, 1], &[0x80]).unwrap(),
        [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]
    );
    assert_eq!(
        p384_asn1_from_fixed(&[0x7f], &[0, 0x00, 0x01, 0x00]).unwrap(),
        [0x30, 0x07, 0x02, 0x01, 0x7f, 0x02, 0x02, 0x01, 0x00]
    );
    // 48-byte values with the top bit set: long-form length is not needed (0x66 < 0x80).
    let der = p384_asn1_from_fixed(&[0xff; 48], &[0xff; 48]).unwrap();
    assert_eq!(&der[..4], &[0x30, 0x66, 0x02, 0x31]);
    assert_eq!(der.len(), 2 + 0x66);
}

#[test]
fn fixed_to_der_refuses_impossible_scalars() {
    assert!(matches!(
        p384_asn1_from_fixed(&[], &[1]),
        Err(DsseError::BadScalar { component: "r", .. })
    ));
    assert!(matches!(
        p384_asn1_from_fixed(&[1], &[0, 0, 0]),
        Err(DsseError::BadScalar { component: "s", .. })
    ));
    assert!(matches!(
        p384_asn1_from_fixed(&[1], &[1; 49]),
        Err(DsseError::BadScalar { component: "s", .. })
    ));
    // Leading zeros beyond 48 bytes are fine: only the value's length matters.
    let mut padded = vec![0; 10];
    padded.extend_from_slice(&[1; 48]);
    assert!(p384_asn1_from_fixed(&padded, &[1]).is_ok());
}

/// TPM-style fixed r||s signatures, converted, verify under aws-lc-rs's DER verifier —
/// including the 1-in-128 case where r or s is short, trimmed or padded.
#[test]
fn fixed_to_der_round_trips_against_aws_lc_rs() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let key = VerifyingKey::from_sec1(pair.public_key().as_ref()).unwrap();
    let message = dsse::pae(TYPE, b"statement");

    let mut short_seen = 0;
    for i in 0..4000 {
        let fixed = pair.sign(&rng, &message).unwrap();
        let (r, s) = fixed.as_ref().split_at(48);
        let der = p384_asn1_from_fixed(r, s).unwrap();
        key.verify_signature(&message, &der).unwrap();

        let trim = |v: &[u8]| {
            v.iter()
                .skip_while(|&&b| b == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        let pad = |v: &[u8]| [vec![0u8; 3], v.to_vec()].concat();
        assert_eq!(p384_asn1_from_fixed(&trim(r), &trim(s)).unwrap(), der);
        assert_eq!(p384_asn1_from_fixed(&pad(r), &pad(s)).unwrap(), der);
        if r[0] == 0 || s[0] == 0 {
            short_seen += 1;
        }
        if short_seen >= 2 && i >= 200 {
            break;
        }
    }
    assert!(short_seen >= 1, "no short r/s in 4000 signatures");
}

/// A TPM-style signer plugs into Envelope::sign through the trait.
#[test]
fn custom_signer_through_trait_object() {
    struct FixedSigner(EcdsaKeyPair);
    impl Signer for FixedSigner {
        fn keyid(&self) -> String {
            String::new()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DsseError> {
            let fixed = self.0.sign(&SystemRandom::new(), message).unwrap();
            let (r, s) = fixed.as_ref().split_at(48);
            p384_asn1_from_fixed(r, s)
        }
    }
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let key = VerifyingKey::from_sec1(pair.public_key().as_ref()).unwrap();
    let signer: &dyn Signer = &FixedSigner(pair);
    let env = Envelope::sign(TYPE, b"tpm".to_vec(), signer).unwrap();
    assert_eq!(env.verify(&key).unwrap(), b"tpm");
    let json: Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
    assert!(
        json["signatures"][0].get("keyid").is_none(),
        "empty keyid is omitted"
    );
}
