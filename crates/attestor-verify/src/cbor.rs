//! Deterministic CBOR (RFC 8949 §4.2.1, "Core Deterministic Encoding") over `ciborium`.
//!
//! Records that are hashed, signed or stored must have exactly one encoding, so two
//! parties serialising the same value get the same bytes. `ciborium` already writes
//! integers, lengths and floats in their shortest form and never uses indefinite
//! lengths; what it does not do is order map keys, refuse duplicate keys, or pin a
//! single NaN. This module adds those, and a decoder that only accepts input that is
//! already canonical, for stores that must only hold canonical records.

use ciborium::value::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest input the decoders accept, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Deepest nesting of arrays, maps and tags accepted when decoding or encoding.
pub const MAX_DEPTH: usize = 64;

/// The one NaN deterministic encoding allows: quiet, no payload, written as `f9 7e00`.
const CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;

/// Errors from deterministic CBOR encoding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The value could not be turned into a CBOR data model value.
    #[error("cannot serialise value to CBOR: {0}")]
    Serialize(String),
    /// Writing the encoded bytes failed.
    #[error("cannot encode CBOR: {0}")]
    Encode(String),
    /// A map holds two keys with the same encoding.
    #[error("duplicate map key (encoded {0})")]
    DuplicateKey(String),
    /// Input over [`MAX_INPUT_BYTES`].
    #[error("CBOR input is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("CBOR nesting is deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input ends inside a data item.
    #[error("CBOR input is truncated")]
    Truncated,
    /// Malformed CBOR at a byte offset.
    #[error("malformed CBOR at byte {offset}")]
    Syntax {
        /// Offset of the offending item.
        offset: usize,
    },
    /// Well-formed CBOR that does not match the expected type.
    #[error("CBOR does not match the expected shape: {0}")]
    Semantic(String),
    /// Bytes follow the single top-level data item.
    #[error("{0} unexpected bytes after the CBOR data item")]
    TrailingBytes(usize),
    /// Well-formed input that is not in deterministic encoding.
    #[error("CBOR input is not in deterministic (RFC 8949 §4.2.1) encoding")]
    NotCanonical,
}

/// Serialises `value` in RFC 8949 §4.2.1 deterministic encoding.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CborError> {
    let value = Value::serialized(value).map_err(|e| CborError::Serialize(e.to_string()))?;
    encode(&canonicalize(value, 0)?)
}

/// Decodes one data item, refusing oversized, too deeply nested or trailing input.
///
/// Accepts any well-formed encoding; use [`from_canonical_slice`] where only canonical
/// bytes may be admitted.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    check_size(bytes)?;
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
        .map_err(decode_error)?;
    if !rest.is_empty() {
        return Err(CborError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Decodes one data item, and refuses it unless it is in deterministic encoding.
pub fn from_canonical_slice<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, CborError> {
    let value: Value = from_slice(bytes)?;
    // Re-encoding is the simplest complete check: any non-shortest head, indefinite
    // length, unsorted or duplicate key, or odd NaN makes the bytes differ.
    let canonical = canonicalize(value, 0)?;
    if encode(&canonical)? != bytes {
        return Err(CborError::NotCanonical);
    }
    let typed: T = canonical
        .deserialized()
        .map_err(|e| CborError::Semantic(e.to_string()))?;
    // A typed decode drops what its type has no place for (a tag around a map, a field
    // it does not know): two byte strings would then be one value. Only the value's own
    // encoding is accepted.
    if to_canonical_vec(&typed)? != bytes {
        return Err(CborError::NotCanonical);
    }
    Ok(typed)
}

/// Whether `bytes` is exactly one data item in deterministic encoding.
pub fn is_canonical(bytes: &[u8]) -> bool {
    from_canonical_slice::<Value>(bytes).is_ok()
}

fn check_size(bytes: &[u8]) -> Result<(), CborError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    Ok(())
}

fn decode_error(e: ciborium::de::Error<std::io::Error>) -> CborError {
    use ciborium::de::Error;
    match e {
        Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => CborError::Truncated,
        Error::Io(io) => CborError::Semantic(io.to_string()),
        Error::Syntax(offset) => CborError::Syntax { offset },
        Error::Semantic(_, msg) => CborError::Semantic(msg),
        Error::RecursionLimitExceeded => CborError::TooDeep { max: MAX_DEPTH },
    }
}

fn encode(value: &Value) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|e| CborError::Encode(e.to_string()))?;
    Ok(out)
}

/// Rewrites `value` so that `ciborium` encodes it deterministically: map entries sorted
/// by the bytewise order of their encoded keys, duplicates refused, NaN made canonical.
///
/// Depth counts arrays, maps and tags the way ciborium's decoder does, so whatever this
/// accepts [`from_slice`] can read back.
fn canonicalize(value: Value, depth: usize) -> Result<Value, CborError> {
    let nested = |d: usize| {
        if d >= MAX_DEPTH {
            Err(CborError::TooDeep { max: MAX_DEPTH })
        } else {
            Ok(d + 1)
        }
    };
    Ok(match value {
        Value::Float(f) if f.is_nan() => Value::Float(f64::from_bits(CANONICAL_NAN_BITS)),
        Value::Array(items) => {
            let depth = nested(depth)?;
            Value::Array(
                items
                    .into_iter()
                    .map(|item| canonicalize(item, depth))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Tag(tag, inner) => {
            let depth = nested(depth)?;
            Value::Tag(tag, Box::new(canonicalize(*inner, depth)?))
        }
        Value::Map(entries) => {
            let depth = nested(depth)?;
            let mut keyed = entries
                .into_iter()
                .map(|(k, v)| {
                    let k = canonicalize(k, depth)?;
                    Ok((encode(&k)?, k, canonicalize(v, depth)?))
                })
                .collect::<Result<Vec<_>, CborError>>()?;
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(dup) = keyed
                .windows(2)
                .find(|w| matches!(w, [a, b] if a.0 == b.0))
                .and_then(|w| w.first())
            {
                return Err(CborError::DuplicateKey(hex::encode(&dup.0)));
            }
            Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        other => other,
    })
}
