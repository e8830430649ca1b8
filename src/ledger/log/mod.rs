//! The transparency log: RFC 9162 Merkle tree hashing and proofs, and signed checkpoints
//! in the C2SP tlog-checkpoint / signed-note formats.

pub mod batcher;
pub mod checkpoint;
pub mod keys;
pub mod merkle;
pub mod sequencer;
pub mod tiled;
