//! Merkle tree costs at 10^6 leaves (10^7 with `ATTESTOR_BENCH_LARGE=1`): append, inclusion
//! and consistency proof generation, inclusion verification, each against one bare SHA-256
//! of 65 bytes (the size of an interior node's preimage) measured in the same run. Prints
//! the ratios at the end. Run: `cargo bench --bench merkle`.
// Shared helpers are `pub` for the bench, not for anyone outside this binary.
#![allow(unreachable_pub)]

mod support;

use std::time::{Duration, Instant};
use support::median_ns;

use attestor_verify::log::merkle::{leaf_hash, verify_inclusion, MerkleTree};
use aws_lc_rs::digest::{digest, SHA256};
use criterion::{black_box, Criterion};

const REFERENCE: (&str, &str) = ("merkle_reference", "sha256_65_bytes_aws_lc");

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group(REFERENCE.0);
    let buf = [0x5au8; 65];
    group.bench_function(REFERENCE.1, |b| b.iter(|| digest(&SHA256, black_box(&buf))));
    group.finish();
}

/// Cheap deterministic index stream so lookups do not hit one cached path.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn group_name(leaves: u64) -> String {
    format!("merkle_{leaves}")
}

fn bench_size(c: &mut Criterion, leaves: u64) {
    let started = Instant::now();
    let tree = MerkleTree::from_leaf_hashes((0..leaves).map(|i| leaf_hash(&i.to_be_bytes())));
    eprintln!("built a tree of {leaves} leaves in {:?}", started.elapsed());
    let size = tree.size();
    let mut group = c.benchmark_group(group_name(leaves));
    group.measurement_time(Duration::from_secs(5));

    // Appends grow one copy of the big tree across all samples, so vector growth is
    // amortised as in a running ledger (the tree ends some millions of leaves larger).
    let mut growing = tree.clone();
    let appended = leaf_hash(b"appended");
    group.bench_function("append", |b| {
        b.iter(|| growing.push_leaf_hash(black_box(appended)))
    });
    drop(growing);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            let index = next(&mut state) % size;
            tree.inclusion_proof(black_box(index), size)
        })
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            let old = 1 + next(&mut state) % (size - 1);
            tree.consistency_proof(black_box(old), size)
        })
    });
    let root = tree.root();
    let samples: Vec<_> = (0..1024)
        .map(|_| {
            let index = next(&mut state) % size;
            let leaf = tree.leaf(index).unwrap_or_default();
            let proof = tree.inclusion_proof(index, size).unwrap_or_default();
            (index, leaf, proof)
        })
        .collect();
    let mut k = 0usize;
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| {
            k = (k + 1) % samples.len();
            let (index, leaf, proof) = &samples[k];
            verify_inclusion(leaf, *index, size, proof, &root)
        })
    });
    group.bench_function("root", |b| b.iter(|| black_box(&tree).root()));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut sizes = vec![1_000_000u64];
    if std::env::var("ATTESTOR_BENCH_LARGE").is_ok_and(|v| v == "1") {
        sizes.push(10_000_000);
    }
    reference(&mut c);
    for &n in &sizes {
        bench_size(&mut c, n);
    }
    c.final_summary();

    println!("\nmedians, same run (reference: one SHA-256 of 65 bytes, aws-lc-rs):");
    let Some(unit) = median_ns(REFERENCE.0, REFERENCE.1) else {
        println!("no reference estimate found");
        return;
    };
    println!("reference: {unit:.1} ns");
    for &n in &sizes {
        for name in [
            "append",
            "inclusion_proof",
            "consistency_proof",
            "verify_inclusion",
            "root",
        ] {
            if let Some(x) = median_ns(&group_name(n), name) {
                println!(
                    "{n} leaves, {name}: {x:.1} ns = {:.2}x one SHA-256",
                    x / unit
                );
            }
        }
    }
}
