//! The transparency log's formats: RFC 9162 Merkle tree hashing and proofs, signed
//! checkpoints (C2SP tlog-checkpoint / signed-note), and the checkpoint key history.

pub mod checkpoint;
pub mod keys;
pub mod merkle;
