//! Deterministic CBOR: RFC 8949 Appendix A vectors, §4.2.1 rules, hostile input.

use std::collections::{BTreeMap, HashMap};

use attestor_verify::cbor::{
    from_canonical_slice, from_slice, is_canonical, to_canonical_vec, CborError, MAX_DEPTH,
    MAX_INPUT_BYTES,
};
use ciborium::value::Value;
use serde::{Deserialize, Serialize};

const APPENDIX_A: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/cbor/appendix_a.json"
);

#[derive(Deserialize)]
struct Vector {
    hex: String,
    roundtrip: bool,
    /// Present-but-null must stay `Some(Null)`: the vector for CBOR null.
    #[serde(default, deserialize_with = "present")]
    decoded: Option<serde_json::Value>,
    diagnostic: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn vectors() -> Vec<Vector> {
    serde_json::from_slice(&std::fs::read(APPENDIX_A).unwrap()).unwrap()
}

fn hex_of<T: Serialize + ?Sized>(value: &T) -> String {
    hex::encode(to_canonical_vec(value).unwrap())
}

/// Indefinite-length items round-trip in a generic encoder but are never deterministic.
fn is_indefinite(hex: &str) -> bool {
    ["5f", "7f", "9f", "bf"].iter().any(|p| hex.starts_with(p)) || hex.contains("9f04")
}

/// Integers past i64/u64 (bignums and -2^64) do not survive serde_json, which reads them
/// as f64; `integers_use_the_shortest_head_and_bignums_only_past_64_bits` covers them.
fn beyond_json_numbers(hex: &str) -> bool {
    hex.starts_with("c2") || hex.starts_with("c3") || hex == "3bffffffffffffffff"
}

/// serde_json's default float parser can be one ulp off (3.4028234663852886e+38 reads as
/// 3.402823466385289e+38), so a top-level float is taken from the vector's own bytes
/// when they differ; `floats_use_the_shortest_exact_width` checks those from Rust literals.
fn json_misread_float(json: &serde_json::Value, hex: &str) -> bool {
    let Some(parsed) = json.as_f64().filter(|_| json.is_f64()) else {
        return false;
    };
    let exact: f64 = from_slice(&hex::decode(hex).unwrap()).unwrap();
    let misread = exact.to_bits() != parsed.to_bits();
    if misread {
        assert!(exact.to_bits().abs_diff(parsed.to_bits()) <= 1, "{hex}");
    }
    misread
}

/// The diagnostic-only vectors that ciborium's data model can hold.
fn from_diagnostic(diag: &str) -> Option<Value> {
    let tag = |t, v| Some(Value::Tag(t, Box::new(v)));
    match diag {
        "Infinity" => Some(Value::Float(f64::INFINITY)),
        "-Infinity" => Some(Value::Float(f64::NEG_INFINITY)),
        "NaN" => Some(Value::Float(f64::NAN)),
        "0(\"2013-03-21T20:04:00Z\")" => tag(0, Value::Text("2013-03-21T20:04:00Z".into())),
        "1(1363896240)" => tag(1, Value::Integer(1363896240.into())),
        "1(1363896240.5)" => tag(1, Value::Float(1363896240.5)),
        "23(h'01020304')" => tag(23, Value::Bytes(vec![1, 2, 3, 4])),
        "24(h'6449455446')" => tag(24, Value::Bytes(hex::decode("6449455446").unwrap())),
        "32(\"http://www.example.com\")" => tag(32, Value::Text("http://www.example.com".into())),
        "h''" => Some(Value::Bytes(vec![])),
        "h'01020304'" => Some(Value::Bytes(vec![1, 2, 3, 4])),
        "(_ h'0102', h'030405')" => Some(Value::Bytes(vec![1, 2, 3, 4, 5])),
        "{1: 2, 3: 4}" => Some(Value::Map(vec![
            (Value::Integer(3.into()), Value::Integer(4.into())),
            (Value::Integer(1.into()), Value::Integer(2.into())),
        ])),
        // undefined and simple(n): not in ciborium's (or serde's) data model.
        _ => None,
    }
}

// ---- Appendix A --------------------------------------------------------------------

#[test]
fn appendix_a_values_encode_to_the_rfc_bytes() {
    let mut checked = 0;
    for v in vectors() {
        if !v.roundtrip || is_indefinite(&v.hex) || beyond_json_numbers(&v.hex) {
            continue;
        }
        let got = match (&v.decoded, &v.diagnostic) {
            (Some(json), _) if json_misread_float(json, &v.hex) => continue,
            (Some(json), _) => hex_of(json),
            (None, Some(diag)) => match from_diagnostic(diag) {
                Some(value) => hex_of(&value),
                None => continue,
            },
            (None, None) => panic!("vector {} has no value", v.hex),
        };
        assert_eq!(got, v.hex, "{:?}{:?}", v.decoded, v.diagnostic);
        checked += 1;
    }
    // 82 vectors less 16 non-round-trip, 2 indefinite strings, 4 simple values, 3 integers
    // past 64 bits and 1 float serde_json misreads (all covered by the explicit tests).
    assert_eq!(checked, 56);
}

#[test]
fn appendix_a_canonical_check_matches_determinism() {
    for v in vectors() {
        let bytes = hex::decode(&v.hex).unwrap();
        let simple = v
            .diagnostic
            .as_deref()
            .is_some_and(|d| d == "undefined" || d.starts_with("simple("));
        let deterministic = v.roundtrip && !is_indefinite(&v.hex) && !simple;
        assert_eq!(is_canonical(&bytes), deterministic, "{}", v.hex);
    }
}

#[test]
fn appendix_a_non_deterministic_forms_decode_to_the_same_value() {
    for v in vectors() {
        let Some(json) = &v.decoded else { continue };
        if beyond_json_numbers(&v.hex) || json_misread_float(json, &v.hex) {
            continue;
        }
        let bytes = hex::decode(&v.hex).unwrap();
        let lenient: Value = from_slice(&bytes).unwrap();
        assert_eq!(hex_of(&lenient), hex_of(json), "{}", v.hex);
    }
}

/// The floats the brief and §4.2.1 single out: shortest width that keeps the value.
#[test]
fn floats_use_the_shortest_exact_width() {
    let cases: [(f64, &str); 18] = [
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.0, "f93c00"),
        (1.1, "fb3ff199999999999a"),
        (1.5, "f93e00"),
        (65504.0, "f97bff"),
        (100000.0, "fa47c35000"),
        (3.4028234663852886e+38, "fa7f7fffff"),
        (1.0e+300, "fb7e37e43c8800759c"),
        (5.960464477539063e-8, "f90001"),
        (0.00006103515625, "f90400"),
        (-4.0, "f9c400"),
        (-4.1, "fbc010666666666666"),
        (f64::INFINITY, "f97c00"),
        (f64::NEG_INFINITY, "f9fc00"),
        (f64::NAN, "f97e00"),
        (-f64::NAN, "f97e00"),
        (f64::from_bits(0x7ff8_0000_0000_0001), "f97e00"),
    ];
    for (value, expected) in cases {
        assert_eq!(hex_of(&value), expected, "{value:e}");
    }
    assert_eq!(hex_of(&1.5f32), "f93e00");
    assert_eq!(hex_of(&f32::NAN), "f97e00");
    assert_eq!(hex_of(&100000.0f32), "fa47c35000");
}

#[test]
fn integers_use_the_shortest_head_and_bignums_only_past_64_bits() {
    assert_eq!(hex_of(&0u8), "00");
    assert_eq!(hex_of(&24u64), "1818");
    assert_eq!(hex_of(&1000i32), "1903e8");
    assert_eq!(hex_of(&-1000i64), "3903e7");
    assert_eq!(hex_of(&u64::MAX), "1bffffffffffffffff");
    assert_eq!(hex_of(&(u64::MAX as u128)), "1bffffffffffffffff");
    assert_eq!(hex_of(&18446744073709551616u128), "c249010000000000000000");
    assert_eq!(hex_of(&-18446744073709551616i128), "3bffffffffffffffff");
    assert_eq!(hex_of(&-18446744073709551617i128), "c349010000000000000000");
}

// ---- §4.2.1 map ordering -----------------------------------------------------------

/// §4.2.1's own example order: 10, 100, -1, "z", "aa", [100], [-1], false.
#[test]
fn map_keys_sort_as_in_rfc_8949_section_4_2_1() {
    let int = |i: i64| Value::Integer(i.into());
    let keys = [
        Value::Bool(false),
        Value::Array(vec![int(-1)]),
        Value::Text("aa".into()),
        int(-1),
        Value::Array(vec![int(100)]),
        Value::Text("z".into()),
        int(100),
        int(10),
    ];
    let map = Value::Map(keys.into_iter().map(|k| (k, Value::Null)).collect());
    assert_eq!(
        hex_of(&map),
        concat!("a8", "0af6", "1864f6", "20f6", "617af6", "626161f6", "811864f6", "8120f6", "f4f6")
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    zeta: u8,
    alpha: String,
    mid: bool,
    b: Vec<u32>,
}

#[test]
fn struct_fields_are_sorted_by_encoded_key_not_declaration() {
    let record = Record {
        zeta: 1,
        alpha: "x".into(),
        mid: true,
        b: vec![],
    };
    // Shorter keys first: "b" < "mid" < "zeta" < "alpha" (length is in the first byte).
    let bytes = to_canonical_vec(&record).unwrap();
    assert_eq!(
        hex::encode(&bytes),
        concat!(
            "a4",
            "616280",
            "636d6964f5",
            "647a65746101",
            "65616c7068616178"
        )
    );
    assert_eq!(from_canonical_slice::<Record>(&bytes).unwrap(), record);
    assert_eq!(from_slice::<Record>(&bytes).unwrap(), record);
}

#[test]
fn nested_maps_are_sorted_and_hash_order_does_not_leak() {
    let inner: BTreeMap<i64, &str> = [(-1, "n"), (100, "h"), (10, "t")].into_iter().collect();
    let mut outer: HashMap<String, Vec<BTreeMap<i64, &str>>> = HashMap::new();
    for key in ["bb", "a", "ccc", "d"] {
        outer.insert(key.into(), vec![inner.clone()]);
    }
    let bytes = to_canonical_vec(&outer).unwrap();
    // Integers sort 10, 100, -1 (major type 0 before major type 1).
    let inner_hex = concat!("a3", "0a6174", "18646168", "20616e");
    let expected = format!(
        "a4 6161 81{i} 6164 81{i} 626262 81{i} 63636363 81{i}",
        i = inner_hex
    )
    .replace(' ', "");
    assert_eq!(hex::encode(&bytes), expected);
    assert!(is_canonical(&bytes));
    for _ in 0..10 {
        let mut again: HashMap<String, Vec<BTreeMap<i64, &str>>> = HashMap::new();
        for (k, v) in &outer {
            again.insert(k.clone(), v.clone());
        }
        assert_eq!(to_canonical_vec(&again).unwrap(), bytes);
    }
}

#[test]
fn duplicate_keys_are_refused_including_nans_that_canonicalise_alike() {
    let map = Value::Map(vec![
        (Value::Text("a".into()), Value::Integer(1.into())),
        (Value::Text("a".into()), Value::Integer(2.into())),
    ]);
    assert_eq!(
        to_canonical_vec(&map),
        Err(CborError::DuplicateKey("6161".into()))
    );

    let nans = Value::Map(vec![
        (Value::Float(f64::NAN), Value::Null),
        (
            Value::Float(f64::from_bits(0x7ff8_0000_0000_0001)),
            Value::Null,
        ),
    ]);
    assert!(matches!(
        to_canonical_vec(&nans),
        Err(CborError::DuplicateKey(_))
    ));
}

// ---- Decoding -----------------------------------------------------------------------

#[test]
fn canonical_decoder_refuses_each_kind_of_non_determinism() {
    for (hex, why) in [
        ("1800", "0 in a one-byte argument"),
        ("190017", "23 in a two-byte argument"),
        ("3a00000000", "-1 in a four-byte argument"),
        ("fa3f800000", "1.0 as f32"),
        ("fb3ff8000000000000", "1.5 as f64"),
        ("f97e01", "NaN with a payload"),
        ("f9fe00", "negative NaN"),
        ("fb7ff8000000000000", "NaN as f64"),
        ("9f01ff", "indefinite array"),
        ("5f4101ff", "indefinite byte string"),
        ("bf6161f6ff", "indefinite map"),
        ("5800", "empty bytes with a one-byte length"),
        ("a2616201616102", "keys out of order"),
        ("a2616102616102", "duplicate key"),
        ("a2200a0a20", "-1 before 10"),
    ] {
        let bytes = hex::decode(hex).unwrap();
        assert!(
            from_slice::<Value>(&bytes).is_ok(),
            "{why}: lenient decoder refused"
        );
        assert_eq!(
            from_canonical_slice::<Value>(&bytes),
            Err(if why == "duplicate key" {
                CborError::DuplicateKey("6161".into())
            } else {
                CborError::NotCanonical
            }),
            "{why}"
        );
    }
}

#[test]
fn trailing_bytes_are_refused() {
    assert_eq!(
        from_slice::<u8>(&[0x01, 0x02]),
        Err(CborError::TrailingBytes(1))
    );
    assert_eq!(
        from_canonical_slice::<u8>(&[0x01, 0x00, 0x00]),
        Err(CborError::TrailingBytes(2))
    );
    assert!(!is_canonical(&[0x01, 0x02]));
    assert!(!is_canonical(&[]));
}

#[test]
fn every_truncation_is_an_error() {
    let record = Record {
        zeta: 200,
        alpha: "a longer string value".into(),
        mid: false,
        b: vec![1, 1000, 100000, u32::MAX],
    };
    let bytes = to_canonical_vec(&record).unwrap();
    for len in 0..bytes.len() {
        let prefix = &bytes[..len];
        assert!(from_slice::<Record>(prefix).is_err(), "prefix {len}");
        assert!(from_slice::<Value>(prefix).is_err(), "prefix {len}");
        assert!(!is_canonical(prefix), "prefix {len}");
    }
    assert_eq!(from_slice::<Value>(&bytes[..1]), Err(CborError::Truncated));
}

#[test]
fn malformed_input_is_an_error() {
    for hex in ["ff", "1c", "1f", "5f01", "f8", "a1", "c0", "7f61"] {
        let bytes = hex::decode(hex).unwrap();
        assert!(from_slice::<Value>(&bytes).is_err(), "{hex}");
    }
    // Invalid UTF-8 in a text string.
    assert!(from_slice::<String>(&[0x62, 0xc3, 0x28]).is_err());
    // Well-formed but the wrong shape for the type.
    assert!(matches!(
        from_slice::<Record>(&[0x01]),
        Err(CborError::Semantic(_))
    ));
}

#[test]
fn huge_declared_lengths_fail_without_allocating_them() {
    for head in ["5b", "7b", "9b", "bb"] {
        let bytes = hex::decode(format!("{head}ffffffffffffffff00")).unwrap();
        assert!(from_slice::<Value>(&bytes).is_err(), "{head}");
    }
    let bytes = hex::decode("5a7fffffff00").unwrap();
    assert!(from_slice::<Vec<u8>>(&bytes).is_err());
}

#[test]
fn random_bytes_never_panic() {
    // A fixed xorshift stream: reproducible, no extra dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = from_slice::<Value>(&bytes);
        let _ = from_slice::<Record>(&bytes);
        let _ = is_canonical(&bytes);
    }
}

fn nested(open: &[u8], depth: usize, leaf: &[u8]) -> Vec<u8> {
    let mut bytes = open.repeat(depth);
    bytes.extend_from_slice(leaf);
    bytes
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for open in [&[0x81][..], &[0xa1, 0x00], &[0xc6]] {
        let bytes = nested(open, 200_000, &[0x00]);
        assert_eq!(
            from_slice::<Value>(&bytes),
            Err(CborError::TooDeep { max: MAX_DEPTH }),
            "{open:02x?}"
        );
        assert!(!is_canonical(&bytes));
        let _ = from_slice::<Record>(&bytes);
    }
}

#[test]
fn depth_limit_is_the_same_for_encoding_and_decoding() {
    let deep = |n: usize| (0..n).fold(Value::Integer(0.into()), |v, _| Value::Array(vec![v]));

    let ok = to_canonical_vec(&deep(MAX_DEPTH)).unwrap();
    assert_eq!(ok, nested(&[0x81], MAX_DEPTH, &[0x00]));
    assert!(from_canonical_slice::<Value>(&ok).is_ok());

    assert_eq!(
        to_canonical_vec(&deep(MAX_DEPTH + 1)),
        Err(CborError::TooDeep { max: MAX_DEPTH })
    );
    assert_eq!(
        from_slice::<Value>(&nested(&[0x81], MAX_DEPTH + 1, &[0x00])),
        Err(CborError::TooDeep { max: MAX_DEPTH })
    );
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let bytes = vec![0u8; MAX_INPUT_BYTES + 1];
    let err = Err(CborError::TooLarge {
        len: MAX_INPUT_BYTES + 1,
        max: MAX_INPUT_BYTES,
    });
    assert_eq!(from_slice::<Value>(&bytes), err);
    assert_eq!(from_canonical_slice::<Value>(&bytes), err);
}

#[test]
fn round_trip_through_canonical_bytes() {
    let value: BTreeMap<String, Vec<Option<f64>>> = [
        ("x".to_string(), vec![Some(1.5), None, Some(1.1)]),
        ("long key".to_string(), vec![Some(-0.0)]),
    ]
    .into_iter()
    .collect();
    let bytes = to_canonical_vec(&value).unwrap();
    assert!(is_canonical(&bytes));
    let back: BTreeMap<String, Vec<Option<f64>>> = from_canonical_slice(&bytes).unwrap();
    assert_eq!(to_canonical_vec(&back).unwrap(), bytes);
    assert_eq!(back["x"], vec![Some(1.5), None, Some(1.1)]);
    assert!(back["long key"][0].unwrap().is_sign_negative());
}

/// Found by the `cbor` fuzz target: a log record wrapped in a tag (here tag 11), or with a
/// field the record does not have, is canonical CBOR, yet a typed decode drops the tag or
/// the field. Two leaves would decode to one record; only the record's own bytes decode.
#[test]
fn a_typed_decode_refuses_what_its_type_would_drop() {
    use attestor_verify::record::LogRecord;
    let leaf = include_bytes!("vectors/tagged-record.cbor");
    assert!(is_canonical(leaf));
    assert!(matches!(
        LogRecord::from_leaf(leaf),
        Err(CborError::NotCanonical)
    ));
    let record = LogRecord::from_leaf(&leaf[1..]).unwrap();
    assert_eq!(record.to_leaf().unwrap(), &leaf[1..]);
    // An extra field, sorted into place, is refused too.
    let mut value: Value = ciborium::de::from_reader(&leaf[1..]).unwrap();
    if let Value::Map(fields) = &mut value {
        fields.push((Value::Text("zz".into()), Value::Integer(1.into())));
    }
    let extra = to_canonical_vec(&value).unwrap();
    assert!(is_canonical(&extra));
    assert!(LogRecord::from_leaf(&extra).is_err());
}
