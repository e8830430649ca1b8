//! Deterministic CBOR: the ledger's leaves (stored on disk and returned to auditors) and
//! the canonical decoder in general.
#![no_main]

use attestor_verify::cbor::{from_canonical_slice, from_slice, is_canonical, to_canonical_vec};
use attestor_verify::record::LogRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let canonical = is_canonical(data);
    if let Ok(value) = from_canonical_slice::<ciborium::value::Value>(data) {
        // Canonical input re-encodes to itself.
        assert!(canonical);
        assert_eq!(to_canonical_vec(&value).expect("re-encode"), data);
    }
    let _ = from_slice::<ciborium::value::Value>(data);
    if let Ok(record) = LogRecord::from_leaf(data) {
        assert_eq!(record.to_leaf().expect("re-encode"), data);
    }
});
