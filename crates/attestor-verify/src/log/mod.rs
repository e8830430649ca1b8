//! The transparency log's formats: RFC 9162 Merkle tree hashing and proofs (a whole tree
//! in memory, or 256-leaf tiles whose lower levels are read back on demand), signed
//! checkpoints (C2SP tlog-checkpoint / signed-note), the checkpoint key history, and the
//! C2SP tlog-tiles resources that publish the tree.

pub mod checkpoint;
pub mod keys;
pub mod merkle;
pub mod tiled;
pub mod tiles;
pub mod witness;
