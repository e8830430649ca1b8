//! Merkle tree benchmarks (being written).

fn main() {}
