//! The ledger's log primitives against published vectors and independent implementations:
//! RFC 6962/9162 known answers (transparency-dev/merkle), the ct-merkle crate, a naive
//! recursive MTH/PATH/PROOF written from the RFC text, and C2SP signed notes from
//! golang.org/x/mod (Ed25519) and transparency-dev/formats (ECDSA, real Rekor checkpoints).
//! Fixture origins: tests/fixtures/merkle/README.md.

use attestor_verify::log::checkpoint::{
    ecdsa_key_id, ed25519_key_id, open_checkpoint, open_note, Checkpoint, CheckpointError,
    CheckpointSigner, NoteVerifier, MAX_NOTE_BYTES, MAX_SIGNATURES, SIGNATURE_TYPE_ECDSA,
};
use attestor_verify::log::merkle::{
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion, Hash, LogError,
    MerkleTree,
};
use attestor_verify::log::tiled::{TiledTree, TILE_WIDTH};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/merkle/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn h(hex_str: &str) -> Hash {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| h(x.as_str().unwrap()))
        .collect()
}

fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
}

fn tree_of(n: u64) -> MerkleTree {
    MerkleTree::from_leaf_hashes(entries(n).iter().map(|e| leaf_hash(e)))
}

/// Deterministic pseudo-random bytes (SplitMix64) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = (self.next() % 100) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// A naive reference written straight from RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 (recursive,
// over all leaves, no stored nodes): MTH, PATH, PROOF/SUBPROOF.

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

// ---------------------------------------------------------------------------------------
// Known answers.

#[test]
fn hashes_match_published_vectors() {
    let v = fixture("rfc6962_vectors.json");
    assert_eq!(empty_root(), h(v["empty_root"].as_str().unwrap()));
    assert_eq!(MerkleTree::new().root(), empty_root());
    for case in v["leaf_hash_vectors"].as_array().unwrap() {
        let entry = hex::decode(case["entry"].as_str().unwrap()).unwrap();
        assert_eq!(leaf_hash(&entry), h(case["leaf_hash"].as_str().unwrap()));
    }
}

fn kat_tree() -> (MerkleTree, Vec<Hash>, Value) {
    let v = fixture("rfc6962_vectors.json");
    let leaves: Vec<Hash> = v["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| leaf_hash(&hex::decode(x.as_str().unwrap()).unwrap()))
        .collect();
    let roots = hashes(&v["roots"]);
    (MerkleTree::from_leaf_hashes(leaves), roots, v)
}

#[test]
fn roots_at_every_size_match_published_vectors() {
    let (tree, roots, _) = kat_tree();
    assert_eq!(tree.size(), 8);
    assert_eq!(tree.root(), roots[7]);
    assert_eq!(tree.root_at(0).unwrap(), empty_root());
    for (i, root) in roots.iter().enumerate() {
        let size = i as u64 + 1;
        assert_eq!(&tree.root_at(size).unwrap(), root, "size {size}");
        // A tree built only up to that size agrees with the earlier-size view.
        let small = MerkleTree::from_leaf_hashes((0..size).map(|j| tree.leaf(j).unwrap()));
        assert_eq!(&small.root(), root, "grown to size {size}");
    }
}

#[test]
fn inclusion_proofs_match_published_vectors() {
    let (tree, roots, v) = kat_tree();
    for case in v["inclusion_proofs"].as_array().unwrap() {
        let index = case["index"].as_u64().unwrap();
        let size = case["size"].as_u64().unwrap();
        let want = hashes(&case["proof"]);
        let got = tree.inclusion_proof(index, size).unwrap();
        assert_eq!(got, want, "PATH({index}, {size})");
        let leaf = tree.leaf(index).unwrap();
        let root = roots[size as usize - 1];
        verify_inclusion(&leaf, index, size, &want, &root).unwrap();
        assert_inclusion_tamper_fails(&leaf, index, size, &want, &root);
    }
}

#[test]
fn consistency_proofs_match_published_vectors() {
    let (tree, roots, v) = kat_tree();
    for case in v["consistency_proofs"].as_array().unwrap() {
        let old = case["old_size"].as_u64().unwrap();
        let new = case["new_size"].as_u64().unwrap();
        let want = hashes(&case["proof"]);
        assert_eq!(
            tree.consistency_proof(old, new).unwrap(),
            want,
            "PROOF({old}, {new})"
        );
        let (r1, r2) = (roots[old as usize - 1], roots[new as usize - 1]);
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
        if old != new {
            assert_consistency_tamper_fails(old, new, &r1, &r2, &want);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tamper probes (modelled on transparency-dev/merkle's corrupt*Proof helpers).

fn assert_inclusion_tamper_fails(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
    let ctx = format!("index {index} size {size}");
    for wrong in [index.wrapping_sub(1), index + 1, index ^ 2] {
        if wrong != index {
            assert!(
                verify_inclusion(leaf, wrong, size, proof, root).is_err(),
                "{ctx} idx {wrong}"
            );
        }
    }
    // As in transparency-dev's probes: a size that changes the proof's shape. (A size with
    // the same shape, e.g. 7 vs 8 for leaf 0, cannot be told apart by the proof: the root
    // binds the size, and checkpoints sign both together.)
    for wrong in [size * 2, size / 2] {
        if wrong != size {
            assert!(
                verify_inclusion(leaf, index, wrong, proof, root).is_err(),
                "{ctx} size {wrong}"
            );
        }
    }
    let mut bad_leaf = *leaf;
    bad_leaf[31] ^= 1;
    assert_eq!(
        verify_inclusion(&bad_leaf, index, size, proof, root),
        Err(LogError::RootMismatch),
        "{ctx}"
    );
    let mut bad_root = *root;
    bad_root[0] ^= 0x80;
    assert!(verify_inclusion(leaf, index, size, proof, &bad_root).is_err());
    assert!(verify_inclusion(leaf, index, size, proof, &empty_root()).is_err());
    for i in 0..proof.len() {
        for byte in [0, 17, 31] {
            let mut p = proof.to_vec();
            p[i][byte] ^= 0x08;
            assert_eq!(
                verify_inclusion(leaf, index, size, &p, root),
                Err(LogError::RootMismatch),
                "{ctx} proof[{i}][{byte}]"
            );
        }
    }
    let mut longer = proof.to_vec();
    longer.push(*root);
    assert!(matches!(
        verify_inclusion(leaf, index, size, &longer, root),
        Err(LogError::ProofLength { .. })
    ));
    let mut prepended = vec![*root];
    prepended.extend_from_slice(proof);
    assert!(verify_inclusion(leaf, index, size, &prepended, root).is_err());
    if let Some((_, shorter)) = proof.split_last() {
        assert!(matches!(
            verify_inclusion(leaf, index, size, shorter, root),
            Err(LogError::ProofLength { .. })
        ));
    }
}

fn assert_consistency_tamper_fails(old: u64, new: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) {
    let ctx = format!("{old} -> {new}");
    for wrong in [old - 1, old + 1, old ^ 2] {
        if wrong != old {
            assert!(
                verify_consistency(wrong, new, r1, r2, proof).is_err(),
                "{ctx} old {wrong}"
            );
        }
    }
    for wrong in [new * 2, new / 2] {
        if wrong != new {
            assert!(
                verify_consistency(old, wrong, r1, r2, proof).is_err(),
                "{ctx} new {wrong}"
            );
        }
    }
    assert!(
        verify_consistency(old, new, r2, r1, proof).is_err(),
        "{ctx} swapped"
    );
    assert!(
        verify_consistency(old, new, r1, r2, &[]).is_err(),
        "{ctx} empty"
    );
    let mut bad = *r1;
    bad[5] ^= 1;
    assert!(verify_consistency(old, new, &bad, r2, proof).is_err());
    let mut bad = *r2;
    bad[5] ^= 1;
    assert!(verify_consistency(old, new, r1, &bad, proof).is_err());
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 0x10;
        assert_eq!(
            verify_consistency(old, new, r1, r2, &p),
            Err(LogError::RootMismatch),
            "{ctx} proof[{i}]"
        );
    }
    for extra in [r1, r2, &proof[0]] {
        let mut p = proof.to_vec();
        p.push(*extra);
        assert!(verify_consistency(old, new, r1, r2, &p).is_err());
        let mut p = vec![*extra];
        p.extend_from_slice(proof);
        assert!(verify_consistency(old, new, r1, r2, &p).is_err());
    }
    assert!(verify_consistency(old, new, r1, r2, &proof[..proof.len() - 1]).is_err());
}

// ---------------------------------------------------------------------------------------
// Properties over all small sizes, against the naive RFC recursion.

#[test]
fn every_proof_up_to_130_matches_the_rfc_recursion_and_verifies() {
    const MAX: u64 = 130;
    let tree = tree_of(MAX);
    let leaves: Vec<Hash> = (0..MAX).map(|i| tree.leaf(i).unwrap()).collect();
    let roots: Vec<Hash> = (0..=MAX as usize).map(|n| mth(&leaves[..n])).collect();
    for n in 1..=MAX {
        let nu = n as usize;
        assert_eq!(tree.root_at(n).unwrap(), roots[nu], "MTH size {n}");
        for i in 0..n {
            let proof = tree.inclusion_proof(i, n).unwrap();
            assert_eq!(proof, path(i as usize, &leaves[..nu]), "PATH({i}, {n})");
            verify_inclusion(&leaves[i as usize], i, n, &proof, &roots[nu]).unwrap();
        }
        for m in 1..=n {
            let proof = tree.consistency_proof(m, n).unwrap();
            assert_eq!(
                proof,
                subproof(m as usize, &leaves[..nu], true),
                "PROOF({m}, {n})"
            );
            verify_consistency(m, n, &roots[m as usize], &roots[nu], &proof).unwrap();
        }
    }
}

#[test]
fn every_tampered_proof_up_to_130_fails() {
    const MAX: u64 = 130;
    let tree = tree_of(MAX);
    for n in 1..=MAX {
        let root = tree.root_at(n).unwrap();
        for i in 0..n {
            let proof = tree.inclusion_proof(i, n).unwrap();
            let leaf = tree.leaf(i).unwrap();
            assert_inclusion_tamper_fails(&leaf, i, n, &proof, &root);
        }
        for m in 1..n {
            let proof = tree.consistency_proof(m, n).unwrap();
            let old_root = tree.root_at(m).unwrap();
            assert_consistency_tamper_fails(m, n, &old_root, &root, &proof);
        }
    }
}

#[test]
fn no_other_index_verifies_an_inclusion_proof() {
    let tree = tree_of(40);
    for n in 1..=40 {
        let root = tree.root_at(n).unwrap();
        for i in 0..n {
            let proof = tree.inclusion_proof(i, n).unwrap();
            let leaf = tree.leaf(i).unwrap();
            for j in (0..n).filter(|&j| j != i) {
                assert!(verify_inclusion(&leaf, j, n, &proof, &root).is_err());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Independent implementation: ct-merkle 0.3 (RFC 6962), random trees of sizes 1..=300.

#[test]
fn matches_ct_merkle_on_random_trees_up_to_300() {
    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use sha2_0_11::Sha256;

    let mut rng = Rng(0x5eed_1e0f_a77e_5707);
    let mut ours = MerkleTree::new();
    let mut theirs: MemoryBackedTree<Sha256, Vec<u8>> = MemoryBackedTree::new();
    let flat = |p: &[Hash]| p.concat();
    for n in 1..=300u64 {
        let entry = rng.bytes();
        assert_eq!(ours.push_entry(&entry), n - 1);
        theirs.push(entry);
        assert_eq!(
            ours.root().as_slice(),
            theirs.root().as_bytes().as_slice(),
            "root {n}"
        );
        for i in 0..n {
            assert_eq!(
                flat(&ours.inclusion_proof(i, n).unwrap()),
                theirs.prove_inclusion(i as usize).as_bytes(),
                "inclusion {i} in {n}"
            );
        }
        for m in 1..n {
            assert_eq!(
                flat(&ours.consistency_proof(m, n).unwrap()),
                theirs.prove_consistency((n - m) as usize).as_bytes(),
                "consistency {m} -> {n}"
            );
        }
    }
    // Proofs for earlier sizes from the finished tree equal those made at that size.
    let mut rng = Rng(0x5eed_1e0f_a77e_5707);
    let mut small: MemoryBackedTree<Sha256, Vec<u8>> = MemoryBackedTree::new();
    for _ in 0..77 {
        small.push(rng.bytes());
    }
    assert_eq!(
        ours.root_at(77).unwrap().as_slice(),
        small.root().as_bytes().as_slice()
    );
    for i in 0..77 {
        assert_eq!(
            flat(&ours.inclusion_proof(i, 77).unwrap()),
            small.prove_inclusion(i as usize).as_bytes()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hostile parameters: errors, never panics.

#[test]
fn hostile_parameters_are_errors() {
    let tree = tree_of(10);
    let r = tree.root();
    assert_eq!(
        tree.inclusion_proof(10, 10),
        Err(LogError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    );
    assert!(matches!(
        tree.inclusion_proof(0, 0),
        Err(LogError::IndexOutOfRange { .. })
    ));
    assert_eq!(
        tree.inclusion_proof(0, 11),
        Err(LogError::SizeBeyondTree {
            requested: 11,
            current: 10
        })
    );
    assert!(matches!(
        tree.root_at(11),
        Err(LogError::SizeBeyondTree { .. })
    ));
    assert_eq!(tree.consistency_proof(0, 5), Err(LogError::EmptyOldTree));
    assert_eq!(
        tree.consistency_proof(6, 5),
        Err(LogError::SizesReversed { old: 6, new: 5 })
    );
    assert!(matches!(
        tree.consistency_proof(5, 11),
        Err(LogError::SizeBeyondTree { .. })
    ));
    assert_eq!(tree.consistency_proof(4, 4), Ok(vec![]));
    assert!(tree.leaf(10).is_err());
    assert!(MerkleTree::new().inclusion_proof(0, 0).is_err());
    assert_eq!(MerkleTree::new().root_at(0), Ok(empty_root()));

    assert!(matches!(
        verify_inclusion(&r, 0, 0, &[], &r),
        Err(LogError::IndexOutOfRange { .. })
    ));
    assert!(verify_inclusion(&r, u64::MAX, u64::MAX, &[], &r).is_err());
    assert!(verify_inclusion(&r, 0, u64::MAX, &vec![r; 64], &r).is_err());
    assert!(matches!(
        verify_inclusion(&r, 3, 10, &vec![r; 1000], &r),
        Err(LogError::ProofLength { got: 1000, .. })
    ));
    assert_eq!(
        verify_consistency(0, 10, &empty_root(), &r, &[]),
        Err(LogError::EmptyOldTree)
    );
    assert_eq!(
        verify_consistency(0, 0, &r, &r, &[]),
        Err(LogError::EmptyOldTree)
    );
    assert_eq!(
        verify_consistency(7, 3, &r, &r, &[r]),
        Err(LogError::SizesReversed { old: 7, new: 3 })
    );
    assert_eq!(verify_consistency(5, 5, &r, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency(5, 5, &r, &empty_root(), &[]),
        Err(LogError::RootMismatch)
    );
    assert!(matches!(
        verify_consistency(5, 5, &r, &r, &[r]),
        Err(LogError::ProofLength { expected: 0, .. })
    ));
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &r, &r, &[r; 3]).is_err());
    assert!(verify_consistency(1, u64::MAX, &r, &r, &vec![r; 64]).is_err());
    assert!(verify_consistency(3, 10, &r, &r, &vec![r; 5000]).is_err());
}

// ---------------------------------------------------------------------------------------
// Persistence helpers.

#[test]
fn levels_round_trip_and_malformed_levels_are_refused() {
    for n in [0u64, 1, 2, 3, 7, 8, 9, 100, 255, 256, 257] {
        let tree = tree_of(n);
        let levels: Vec<Vec<Hash>> = (0..tree.level_count())
            .map(|l| tree.level_nodes(l).to_vec())
            .collect();
        let restored = MerkleTree::from_levels(levels.clone()).unwrap();
        assert_eq!(restored, tree, "size {n}");
        assert_eq!(restored.root(), tree.root());
        if n >= 2 {
            let mut missing_top = levels.clone();
            missing_top.pop();
            assert!(matches!(
                MerkleTree::from_levels(missing_top),
                Err(LogError::MalformedLevels { .. })
            ));
            let mut extra = levels.clone();
            extra[1].push([0; 32]);
            assert!(MerkleTree::from_levels(extra).is_err());
        }
        if n >= 1 {
            let mut over = levels.clone();
            over.push(vec![[0; 32]]);
            assert!(MerkleTree::from_levels(over).is_err());
        }
    }
    // Appending to a restored tree continues exactly as the original would.
    let mut restored = MerkleTree::from_levels(
        (0..tree_of(5).level_count())
            .map(|l| tree_of(5).level_nodes(l).to_vec())
            .collect(),
    )
    .unwrap();
    for e in &entries(9)[5..] {
        restored.push_entry(e);
    }
    assert_eq!(restored, tree_of(9));
}

// ---------------------------------------------------------------------------------------
// The sequencer's tiled tree against the full tree: byte-identical roots and proofs, old
// tiles read back from "storage" (here a vector of leaf hashes) and checked.

/// Leaf hashes as the store would hold them, and reads of them that count themselves and
/// check that each read is one whole tile.
struct Stored {
    leaves: Vec<Hash>,
    reads: u64,
}

impl Stored {
    fn new(n: u64) -> Stored {
        Stored {
            leaves: (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect(),
            reads: 0,
        }
    }

    fn read(&mut self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        assert_eq!(
            (from % TILE_WIDTH, to - from),
            (0, TILE_WIDTH),
            "{from}..{to}"
        );
        self.reads += 1;
        Ok(self
            .leaves
            .get(from as usize..(to as usize).min(self.leaves.len()))
            .unwrap_or_default()
            .to_vec())
    }
}

/// Compares every answer of `tiled` (of size `n`) with `full` (of at least `n` leaves) for
/// the given sizes and indexes, errors included.
fn assert_same_answers(
    tiled: &mut TiledTree,
    full: &MerkleTree,
    stored: &mut Stored,
    n: u64,
    sizes: &[u64],
    indexes: &[u64],
) {
    let mut read = |from, to| stored.read(from, to);
    assert_eq!(tiled.size(), n);
    assert_eq!(tiled.root(), full.root_at(n), "root at {n}");
    for &m in sizes.iter().chain([n + 1].iter()) {
        let expected = if m <= n {
            full.root_at(m)
        } else {
            Err(LogError::SizeBeyondTree {
                requested: m,
                current: n,
            })
        };
        assert_eq!(tiled.root_at(m, &mut read), expected, "root_at({m}) of {n}");
        for &i in indexes.iter().chain([m, m.wrapping_sub(1)].iter()) {
            let expected = if m <= n {
                full.inclusion_proof(i, m)
            } else {
                Err(LogError::SizeBeyondTree {
                    requested: m,
                    current: n,
                })
            };
            assert_eq!(
                tiled.inclusion_proof(i, m, &mut read),
                expected,
                "inclusion of {i} at {m} in {n}"
            );
        }
        for &old in sizes {
            let expected = if m <= n {
                full.consistency_proof(old, m)
            } else {
                Err(LogError::SizeBeyondTree {
                    requested: m,
                    current: n,
                })
            };
            assert_eq!(
                tiled.consistency_proof(old, m, &mut read),
                expected,
                "consistency {old} -> {m} in {n}"
            );
        }
    }
    for &i in indexes {
        let expected = if i < n {
            full.leaf(i)
        } else {
            tiled_out_of_range(i, n)
        };
        assert_eq!(tiled.leaf(i, &mut read), expected, "leaf {i} of {n}");
    }
}

fn tiled_out_of_range(index: u64, size: u64) -> Result<Hash, LogError> {
    Err(LogError::IndexOutOfRange { index, size })
}

#[test]
fn the_tiled_tree_answers_as_the_full_tree_at_every_size_up_to_530() {
    let n_max = 530;
    let mut stored = Stored::new(n_max);
    let full = MerkleTree::from_leaf_hashes(stored.leaves.clone());
    let mut tiled = TiledTree::new();
    for n in 0..=n_max {
        if n > 0 {
            tiled.push_leaf_hash(stored.leaves[n as usize - 1]);
        }
        let all: Vec<u64> = (0..=n).collect();
        let mut read = |from, to| stored.read(from, to);
        assert_eq!(tiled.root(), full.root_at(n));
        for i in 0..n {
            assert_eq!(
                tiled.inclusion_proof(i, n, &mut read),
                full.inclusion_proof(i, n)
            );
        }
        for &old in &all {
            assert_eq!(
                tiled.consistency_proof(old, n, &mut read),
                full.consistency_proof(old, n)
            );
        }
    }
}

#[test]
fn the_tiled_tree_answers_as_the_full_tree_around_tile_boundaries_up_to_65537() {
    let sizes: Vec<u64> = vec![
        0, 1, 2, 3, 7, 8, 9, 255, 256, 257, 511, 512, 513, 767, 768, 769, 1000, 1023, 1024, 1025,
        2047, 2048, 2049, 4095, 4097, 32768, 40000, 65535, 65536, 65537,
    ];
    let n_max = *sizes.last().unwrap();
    let mut stored = Stored::new(n_max);
    let full = MerkleTree::from_leaf_hashes(stored.leaves.clone());
    let mut tiled = TiledTree::new();
    let mut rng = Rng(7);
    for &n in &sizes {
        while tiled.size() < n {
            tiled.push_leaf_hash(stored.leaves[tiled.size() as usize]);
        }
        let known: Vec<u64> = sizes.iter().copied().filter(|&m| m <= n).collect();
        let mut indexes = vec![
            0, 1, 254, 255, 256, 257, 511, 512, 32767, 32768, 65535, 65536,
        ];
        indexes.extend((0..6).map(|_| rng.next() % (n + 1)));
        assert_same_answers(&mut tiled, &full, &mut stored, n, &known, &indexes);
    }
    // Reads are whole tiles (checked in `Stored::read`), each at most once per miss.
    assert!(stored.reads > 0);
}

#[test]
fn a_batchs_receipts_and_the_current_root_need_no_read() {
    let mut stored = Stored::new(3000);
    let full = MerkleTree::from_leaf_hashes(stored.leaves.clone());
    let mut tiled = TiledTree::new();
    for &leaf in &stored.leaves[..2900] {
        tiled.push_leaf_hash(leaf);
    }
    // A batch of 100 crossing the tile boundary at 2816, as the sequencer appends it.
    for &leaf in &stored.leaves[2900..3000] {
        tiled.push_leaf_hash(leaf);
    }
    let mut read = |from, to| stored.read(from, to);
    assert_eq!(tiled.root(), Ok(full.root()));
    for i in 2900..3000 {
        assert_eq!(
            tiled.inclusion_proof(i, 3000, &mut read),
            full.inclusion_proof(i, 3000)
        );
    }
    assert_eq!(stored.reads, 0);
    // An old entry's proof reads its tile once; the cache answers the next one.
    assert_eq!(
        tiled.inclusion_proof(3, 3000, &mut |f, t| stored.read(f, t)),
        full.inclusion_proof(3, 3000)
    );
    assert_eq!(
        tiled.inclusion_proof(200, 3000, &mut |f, t| stored.read(f, t)),
        full.inclusion_proof(200, 3000)
    );
    assert_eq!(stored.reads, 1);
}

#[test]
fn a_rewritten_stored_leaf_hash_is_an_error_naming_its_tile_never_a_proof() {
    let n = 4000;
    let mut stored = Stored::new(n);
    let full = MerkleTree::from_leaf_hashes(stored.leaves.clone());
    let mut tiled = TiledTree::new();
    for &leaf in &stored.leaves {
        tiled.push_leaf_hash(leaf);
    }
    // Entry 300 (tile 1, long out of the cache) rewritten behind the tree's back.
    stored.leaves[300] = leaf_hash(b"rewritten");
    fn rewritten<T>() -> Result<T, LogError> {
        Err(LogError::TileMismatch { from: 256, to: 512 })
    }
    let mut read = |from, to| stored.read(from, to);
    assert_eq!(tiled.leaf(300, &mut read), rewritten());
    assert_eq!(tiled.leaf(257, &mut read), rewritten());
    assert_eq!(tiled.inclusion_proof(300, n, &mut read), rewritten());
    assert_eq!(tiled.inclusion_proof(5, 400, &mut read), rewritten());
    assert_eq!(tiled.consistency_proof(300, n, &mut read), rewritten());
    assert_eq!(tiled.root_at(400, &mut read), rewritten());
    // Other tiles still prove, and the current root needs no tile at all.
    assert_eq!(
        tiled.inclusion_proof(5, n, &mut read),
        full.inclusion_proof(5, n)
    );
    assert_eq!(
        tiled.inclusion_proof(600, n, &mut read),
        full.inclusion_proof(600, n)
    );
    assert_eq!(tiled.root(), Ok(full.root()));

    // A short read (entries gone from the store) is an error too, not a panic.
    stored.leaves.truncate(1000);
    let mut read = |from, to| stored.read(from, to);
    assert_eq!(
        tiled.leaf(800, &mut read),
        Err(LogError::TileLeaves {
            from: 768,
            to: 1024,
            got: 232
        })
    );
}

// ---------------------------------------------------------------------------------------
// Checkpoints and signed notes.

const ORIGIN: &str = "ledger.example/attestor";

fn signed(signer: &CheckpointSigner) -> (Checkpoint, String) {
    let cp = Checkpoint::new(ORIGIN, 20852163, leaf_hash(b"root")).with_timestamp(1_800_000_000);
    let note = signer.sign(&cp).unwrap();
    (cp, note)
}

#[test]
fn checkpoint_round_trip_and_exact_format() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let (cp, note) = signed(&signer);
    let root_b64 = STANDARD.encode(cp.root);
    let body = format!("{ORIGIN}\n20852163\n{root_b64}\ntimestamp 1800000000\n");
    assert_eq!(cp.body().unwrap(), body);
    let (text, sigs) = note.split_at(body.len());
    assert_eq!(text, body);
    let sig_line = sigs.strip_prefix('\n').unwrap();
    let b64 = sig_line
        .strip_prefix(&format!("\u{2014} {ORIGIN} "))
        .unwrap()
        .strip_suffix('\n')
        .unwrap();
    let blob = STANDARD.decode(b64).unwrap();
    assert_eq!(blob[..4], signer.key_id().to_be_bytes());
    assert_eq!(blob[4], 0x30, "ASN.1 DER ECDSA signature");

    let opened = open_checkpoint(&note, &signer.verifier_key()).unwrap();
    assert_eq!(opened, cp);
    assert_eq!(opened.timestamp(), Ok(Some(1_800_000_000)));

    // Verifier key: <name>+<8 hex key ID>+base64(0x02 || SPKI DER), ID = SHA-256(SPKI)[:4].
    let vkey = signer.verifier_key();
    let mut parts = vkey.splitn(3, '+');
    assert_eq!(parts.next(), Some(ORIGIN));
    assert_eq!(
        parts.next(),
        Some(format!("{:08x}", signer.key_id()).as_str())
    );
    let key = STANDARD.decode(parts.next().unwrap()).unwrap();
    assert_eq!(key[0], SIGNATURE_TYPE_ECDSA);
    assert_eq!(ecdsa_key_id(&key[1..]), signer.key_id());
    let verifier = NoteVerifier::from_vkey(&vkey).unwrap();
    assert_eq!(verifier.name(), ORIGIN);
    assert_eq!(verifier.key_id(), signer.key_id());
}

#[test]
fn pkcs8_export_reloads_the_same_key() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let reloaded = CheckpointSigner::from_pkcs8(ORIGIN, &signer.to_pkcs8().unwrap()).unwrap();
    assert_eq!(reloaded.verifier_key(), signer.verifier_key());
    let (cp, note) = signed(&reloaded);
    assert_eq!(open_checkpoint(&note, &signer.verifier_key()).unwrap(), cp);
    assert!(matches!(
        CheckpointSigner::from_pkcs8(ORIGIN, b"not a key"),
        Err(CheckpointError::SigningKey(_))
    ));
    assert_eq!(
        CheckpointSigner::from_pkcs8("bad name", &signer.to_pkcs8().unwrap()).err(),
        Some(CheckpointError::InvalidKeyName)
    );
}

#[test]
fn tampered_notes_are_refused() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let (cp, note) = signed(&signer);
    let root_b64 = STANDARD.encode(cp.root);
    let mut other_root = cp.root;
    other_root[0] ^= 1;
    for (what, from, to) in [
        ("origin", "ledger.example/", "ledger.exampl3/"),
        ("size", "20852163", "20852164"),
        (
            "root",
            root_b64.as_str(),
            STANDARD.encode(other_root).as_str(),
        ),
        ("timestamp", "1800000000", "1800000001"),
    ] {
        let bad = note.replacen(from, to, 1);
        assert_eq!(
            open_checkpoint(&bad, &vkey),
            Err(CheckpointError::InvalidSignature(ORIGIN.into())),
            "{what}"
        );
    }
    // Every single-byte change of the note is refused (and nothing panics).
    for i in 0..note.len() {
        let mut bytes = note.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        if let Ok(bad) = String::from_utf8(bytes) {
            assert!(open_checkpoint(&bad, &vkey).is_err(), "byte {i}");
        }
    }
    // Every truncation is refused.
    for i in 0..note.len() {
        if let Some(prefix) = note.get(..i) {
            assert!(open_checkpoint(prefix, &vkey).is_err(), "prefix {i}");
        }
    }
}

#[test]
fn wrong_and_unknown_keys_are_refused() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let same_name = CheckpointSigner::generate(ORIGIN).unwrap();
    let stranger = CheckpointSigner::generate("witness.example/w1").unwrap();
    let (cp, note) = signed(&signer);

    // A different key under the same name: its ID differs, so our signature is ignored.
    assert_eq!(
        open_checkpoint(&note, &same_name.verifier_key()),
        Err(CheckpointError::NoTrustedSignature(ORIGIN.into()))
    );
    // Signed only by an unknown key.
    let (_, foreign) = signed(&stranger);
    assert_eq!(
        open_checkpoint(&foreign, &signer.verifier_key()),
        Err(CheckpointError::NoTrustedSignature(ORIGIN.into()))
    );
    // Our signature plus a cosignature by another key: the other line is ignored.
    let cosig = foreign.rsplit_once("\n\n").unwrap().1;
    let cosigned = format!("{note}{cosig}");
    assert_eq!(
        open_checkpoint(&cosigned, &signer.verifier_key()).unwrap(),
        cp
    );
    assert_eq!(
        open_checkpoint(&cosigned, &stranger.verifier_key()).unwrap(),
        cp,
        "the stranger's own signature covers the same body"
    );
    // Same name and key ID as ours but a signature that does not verify: refused.
    let sig_line = note.rsplit_once("\n\n").unwrap().1;
    let b64 = sig_line.trim_end().rsplit_once(' ').unwrap().1;
    let mut blob = STANDARD.decode(b64).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let forged = note.replace(b64, &STANDARD.encode(&blob));
    assert!(matches!(
        open_checkpoint(&forged, &signer.verifier_key()),
        Err(CheckpointError::InvalidSignature(_))
    ));
    // Two signature lines by our key are ambiguous: refused.
    let doubled = format!("{note}{sig_line}");
    assert_eq!(
        open_checkpoint(&doubled, &signer.verifier_key()),
        Err(CheckpointError::DuplicateSignature(ORIGIN.into()))
    );
}

#[test]
fn malformed_notes_are_refused_without_panic() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = signer.verifier_key();
    let (_, note) = signed(&signer);
    let (body, sig_line) = note.rsplit_once("\n\n").unwrap();
    let body = format!("{body}\n");

    let no_blank = format!("{body}{sig_line}");
    assert_eq!(
        open_checkpoint(&no_blank, &vkey),
        Err(CheckpointError::MissingSeparator)
    );
    assert_eq!(
        open_checkpoint(note.trim_end_matches('\n'), &vkey),
        Err(CheckpointError::MissingFinalNewline)
    );
    assert_eq!(
        open_checkpoint(&format!("{body}\n"), &vkey),
        Err(CheckpointError::NoSignatures)
    );
    let crlf = note.replace('\n', "\r\n");
    assert!(matches!(
        open_checkpoint(&crlf, &vkey),
        Err(CheckpointError::ControlCharacter(_))
    ));
    let bad_b64 = format!("{body}\n\u{2014} {ORIGIN} !!!notbase64!!!\n");
    assert!(matches!(
        open_checkpoint(&bad_b64, &vkey),
        Err(CheckpointError::MalformedSignatureLine { line: 1, .. })
    ));
    let short = format!("{body}\n\u{2014} {ORIGIN} AAAA\n");
    assert!(matches!(
        open_checkpoint(&short, &vkey),
        Err(CheckpointError::MalformedSignatureLine { .. })
    ));
    let hyphen = note.replace('\u{2014}', "-");
    assert!(matches!(
        open_checkpoint(&hyphen, &vkey),
        Err(CheckpointError::MalformedSignatureLine { .. })
    ));
    let no_name = format!("{body}\n\u{2014}  {}\n", "AAAAAAAA");
    assert!(open_checkpoint(&no_name, &vkey).is_err());
    let oversized = format!("{}{note}", "x".repeat(MAX_NOTE_BYTES));
    assert!(matches!(
        open_checkpoint(&oversized, &vkey),
        Err(CheckpointError::NoteTooLarge { .. })
    ));
    let many = format!("{note}{}", sig_line.repeat(MAX_SIGNATURES));
    assert_eq!(
        open_checkpoint(&many, &vkey),
        Err(CheckpointError::TooManySignatures(MAX_SIGNATURES))
    );
    assert!(open_checkpoint("", &vkey).is_err());
    assert!(open_checkpoint("\n\n", &vkey).is_err());
    assert!(open_checkpoint("\n\n\u{2014} \n", &vkey).is_err());
}

#[test]
fn bodies_that_break_the_checkpoint_rules_cannot_be_signed() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let root = leaf_hash(b"r");
    let cases = [
        Checkpoint::new("", 1, root),
        Checkpoint::new("two\nlines", 1, root),
        Checkpoint::new("tab\there", 1, root),
        Checkpoint {
            extensions: vec![String::new()],
            ..Checkpoint::new(ORIGIN, 1, root)
        },
        Checkpoint::new(ORIGIN, 1, root)
            .with_timestamp(1)
            .with_timestamp(2),
        Checkpoint {
            extensions: vec!["timestamp 01".into()],
            ..Checkpoint::new(ORIGIN, 1, root)
        },
    ];
    for cp in cases {
        assert!(signer.sign(&cp).is_err(), "{cp:?}");
    }
    // The empty tree is a valid checkpoint (size 0, SHA-256 of nothing).
    let empty = Checkpoint::new(ORIGIN, 0, empty_root());
    let note = signer.sign(&empty).unwrap();
    assert!(note.contains("\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"));
    assert_eq!(
        open_checkpoint(&note, &signer.verifier_key()).unwrap(),
        empty
    );
}

// ---------------------------------------------------------------------------------------
// Published signed-note vectors.

struct Ed25519Vectors {
    name: String,
    key_id: u32,
    vkey: String,
    seed: Vec<u8>,
    text: String,
    signed_note: String,
    other_vkey: String,
    other_line: String,
}

fn ed25519_vectors() -> Ed25519Vectors {
    let v = &fixture("signed_notes.json")["ed25519"];
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let skey = s("skey");
    // PRIVATE+KEY+<name>+<id>+<base64>, and base64 may itself contain '+'.
    let seed_b64 = skey.splitn(5, '+').nth(4).unwrap();
    let seed = STANDARD.decode(seed_b64).unwrap();
    assert_eq!(seed[0], 0x01, "Go private key blob = type byte || seed");
    Ed25519Vectors {
        name: s("name"),
        key_id: u32::from_str_radix(&s("key_id"), 16).unwrap(),
        vkey: s("vkey"),
        seed: seed[1..].to_vec(),
        text: s("text"),
        signed_note: s("signed_note"),
        other_vkey: s("other_key_vkey"),
        other_line: s("other_key_signature_line"),
    }
}

/// Signs `text` as a note with the Go test key, framing it exactly as the spec says.
fn go_sign(v: &Ed25519Vectors, text: &str) -> String {
    let key = Ed25519KeyPair::from_seed_unchecked(&v.seed).unwrap();
    let mut blob = v.key_id.to_be_bytes().to_vec();
    blob.extend_from_slice(key.sign(text.as_bytes()).as_ref());
    format!("{text}\n\u{2014} {} {}\n", v.name, STANDARD.encode(blob))
}

#[test]
fn ed25519_note_vectors_from_go_are_reproduced_byte_for_byte() {
    let v = ed25519_vectors();
    let key = Ed25519KeyPair::from_seed_unchecked(&v.seed).unwrap();
    let public = key.public_key().as_ref().to_vec();
    // The generic key ID rule, on the Go test key.
    assert_eq!(ed25519_key_id(&v.name, &public), v.key_id);
    let vkey_blob = STANDARD
        .decode(v.vkey.splitn(3, '+').nth(2).unwrap())
        .unwrap();
    assert_eq!(vkey_blob[0], 0x01);
    assert_eq!(vkey_blob[1..], public[..]);
    // Ed25519 is deterministic: the exact note golang.org/x/mod's TestSign expects.
    assert_eq!(go_sign(&v, &v.text), v.signed_note);

    let verifier = NoteVerifier::from_vkey(&v.vkey).unwrap();
    assert_eq!(verifier.key_id(), v.key_id);
    assert_eq!(open_note(&v.signed_note, &verifier), Ok(v.text.as_str()));
    // TestOpen: a second signature by a key we do not trust is ignored...
    let both = format!("{}{}", v.signed_note, v.other_line);
    assert_eq!(open_note(&both, &verifier), Ok(v.text.as_str()));
    // ...and verifies on its own against that key.
    let other = NoteVerifier::from_vkey(&v.other_vkey).unwrap();
    assert_eq!(open_note(&both, &other), Ok(v.text.as_str()));
    // Only the untrusted signature: refused.
    let only_other = format!("{}\n{}", v.text, v.other_line);
    assert!(matches!(
        open_note(&only_other, &verifier),
        Err(CheckpointError::NoTrustedSignature(_))
    ));
    // Go's TestOpen bad messages.
    let sig_line = v.signed_note.rsplit_once("\n\n").unwrap().1;
    for bad in [
        v.text.clone(),
        format!("{}\n", v.text),
        format!("{}\n{}", v.text, sig_line.trim_end()),
        format!("\x01{}\n{sig_line}", v.text),
        format!("{}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n", v.text),
        format!("{}\n{sig_line}Unexpected line.\n", v.text),
    ] {
        assert!(open_note(&bad, &verifier).is_err(), "{bad:?}");
    }
}

#[test]
fn checkpoint_body_rules_apply_after_verification() {
    // Validly signed notes (Go's Ed25519 test key) whose bodies break tlog-checkpoint.
    let v = ed25519_vectors();
    let root = STANDARD.encode([7u8; 32]);
    let cases: [(&str, CheckpointError); 9] = [
        ("o\n", CheckpointError::TooFewLines(1)),
        ("o\n5\n", CheckpointError::TooFewLines(2)),
        ("o\n012\nROOT\n", CheckpointError::InvalidSize),
        ("o\n+12\nROOT\n", CheckpointError::InvalidSize),
        ("o\n1 2\nROOT\n", CheckpointError::InvalidSize),
        (
            "o\n18446744073709551616\nROOT\n",
            CheckpointError::InvalidSize,
        ),
        ("o\n5\nAAAA\n", CheckpointError::InvalidRoot),
        (
            "o\n5\nROOT\ntimestamp 1\ntimestamp 1\n",
            CheckpointError::InvalidTimestamp,
        ),
        ("o\n\n5\nROOT\n", CheckpointError::EmptyLine(2)),
    ];
    let verifier = NoteVerifier::from_vkey(&v.vkey).unwrap();
    for (body, want) in cases {
        let body = body.replace("ROOT", &root);
        let note = go_sign(&v, &body);
        let got = open_note(&note, &verifier).and_then(Checkpoint::from_body);
        assert_eq!(got, Err(want), "{body:?}");
    }
    // Unpadded base64 root is not the standard encoding.
    let unpadded = format!("o\n5\n{}\n", root.trim_end_matches('='));
    assert_eq!(
        Checkpoint::from_body(&unpadded),
        Err(CheckpointError::InvalidRoot)
    );
    // Size 0 and the largest u64 are canonical; extensions are kept in order.
    let ok = Checkpoint::from_body(&format!("o\n18446744073709551615\n{root}\nb\na\n")).unwrap();
    assert_eq!(ok.size, u64::MAX);
    assert_eq!(ok.extensions, ["b", "a"]);
    assert_eq!(ok.timestamp(), Ok(None));
    assert_eq!(
        Checkpoint::from_body(&format!("o\n0\n{root}\n"))
            .unwrap()
            .size,
        0
    );
}

#[test]
fn ecdsa_note_vectors_from_transparency_dev_verify() {
    let v = fixture("signed_notes.json");
    for case in v["ecdsa"]["vectors"].as_array().unwrap() {
        let vkey = case["vkey"].as_str().unwrap();
        let note = case["signed_note"].as_str().unwrap();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id_hex, key_b64) = rest.split_once('+').unwrap();
        let key = STANDARD.decode(key_b64).unwrap();
        // Type 0x02's key ID is SHA-256 of the SPKI alone, not the generic formula.
        let id = u32::from_str_radix(id_hex, 16).unwrap();
        assert_eq!(ecdsa_key_id(&key[1..]), id, "{name}");
        let mut generic = name.as_bytes().to_vec();
        generic.push(b'\n');
        generic.extend_from_slice(&key);
        let generic_id = u32::from_be_bytes(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &generic).as_ref()[..4]
                .try_into()
                .unwrap(),
        );
        assert_ne!(generic_id, id, "{name}");

        let cp = open_checkpoint(note, vkey).unwrap();
        assert_eq!(cp.origin, case["origin"].as_str().unwrap());
        assert_eq!(cp.size, case["size"].as_u64().unwrap());
        assert_eq!(STANDARD.encode(cp.root), case["root_b64"].as_str().unwrap());
        assert!(cp.extensions.is_empty());

        let size = cp.size.to_string();
        let tampered = note.replacen(&size, &(cp.size + 1).to_string(), 1);
        assert_eq!(
            open_checkpoint(&tampered, vkey),
            Err(CheckpointError::InvalidSignature(name.into()))
        );
        let wrong_id = format!("{name}+00000000+{key_b64}");
        assert!(matches!(
            open_checkpoint(note, &wrong_id),
            Err(CheckpointError::KeyIdMismatch { declared: 0, .. })
        ));
        let renamed = format!("bananas.example+{id_hex}+{key_b64}");
        assert!(matches!(
            open_checkpoint(note, &renamed),
            Err(CheckpointError::NoTrustedSignature(_))
        ));
    }
}

#[test]
fn hostile_verifier_keys_are_refused() {
    let signer = CheckpointSigner::generate(ORIGIN).unwrap();
    let good = signer.verifier_key();
    let (name, rest) = good.split_once('+').unwrap();
    let (id, key) = rest.split_once('+').unwrap();
    let ed = ed25519_vectors().vkey;
    for bad in [
        String::new(),
        "+".into(),
        "++".into(),
        format!("{name}+{id}"),
        format!("+{id}+{key}"),
        format!("a b+{id}+{key}"),
        format!("{name}+{}+{key}", &id[..7]),
        format!("{name}+{id}0+{key}"),
        format!("{name}+xyzxyzxy+{key}"),
        format!("{name}+{id}+{}", &key[..key.len() - 2]),
        format!("{name}+{id}+!!!!"),
        format!("{name}+{id}+"),
        format!("{name}+{id}+{}", STANDARD.encode([9u8, 1, 2, 3])),
        format!(
            "{name}+{id}+{}",
            STANDARD.encode([2u8, 0x30, 0x03, 0x02, 0x01, 0x00])
        ),
        ed.replacen("ARpc", "ARpd", 1),
        ed.replacen("c74f20a3", "c74f20a4", 1),
        "x".repeat(MAX_NOTE_BYTES + 1),
    ] {
        assert!(NoteVerifier::from_vkey(&bad).is_err(), "{bad:?}");
    }
    // Ed25519 keys of the wrong length, with an adjusted key ID (from Go's TestNewVerifier).
    assert!(NoteVerifier::from_vkey(
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
    )
    .is_err());
    assert_eq!(
        NoteVerifier::from_vkey(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(CheckpointError::UnsupportedKeyType(0x65))
    );
}
