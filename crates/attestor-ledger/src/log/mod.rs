//! The write path of the log: the tree the sequencer extends (tiled, old tiles read back
//! from the store), durable batched appends, signed checkpoints and receipts.

pub mod batcher;
pub mod sequencer;
