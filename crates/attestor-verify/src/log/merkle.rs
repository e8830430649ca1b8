//! RFC 9162 §2.1 Merkle tree: leaf and node hashing, an append-only tree that keeps every
//! full-subtree hash, inclusion and consistency proofs for any earlier tree size, and the
//! verification algorithms auditors run (§2.1.3.2, §2.1.4.2).
//!
//! Node storage: `levels[l][i]` is the hash of the complete subtree over leaves
//! `[i * 2^l, (i + 1) * 2^l)`. Only complete subtrees are stored, so nothing stored ever
//! changes when leaves are appended; a tree of `n` leaves holds fewer than `2n` hashes.
//! Hashes of incomplete right-edge subtrees (needed for roots and proofs at sizes that are
//! not powers of two) are recomputed from at most `log2(n)` stored nodes.
//!
//! This full tree (about 64 bytes per leaf, all in memory) serves tests, the offline audit
//! and benches; the sequencer's tree is [`super::tiled::TiledTree`], which shares the proof
//! walks below and reads old subtrees back from the store.

use aws_lc_rs::digest::{self, SHA256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Errors from building trees, producing proofs and verifying them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A leaf index that is not inside the tree of the given size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A tree size larger than the tree holds.
    #[error("tree size {requested} exceeds the tree's size {current}")]
    SizeBeyondTree {
        /// The requested size.
        requested: u64,
        /// The tree's current size.
        current: u64,
    },
    /// A consistency request whose old size is larger than its new size.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesReversed {
        /// The old (first) tree size.
        old: u64,
        /// The new (second) tree size.
        new: u64,
    },
    /// A consistency request from the empty tree, which RFC 9162 does not define: the empty
    /// tree is consistent with every tree, so there is nothing to prove.
    #[error("consistency from the empty tree is not defined (it is trivially consistent)")]
    EmptyOldTree,
    /// A proof with the wrong number of hashes for its index and sizes.
    #[error("proof has {got} hashes, the index and sizes need {expected}")]
    ProofLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes the algorithm needs.
        expected: usize,
    },
    /// A well-formed proof that does not lead to the expected root(s).
    #[error("proof does not match the expected root hash")]
    RootMismatch,
    /// Persisted levels whose node counts do not describe one tree.
    #[error("level {level} holds {got} nodes, a tree with {leaves} leaves has {expected}")]
    MalformedLevels {
        /// The offending level (0 = leaves).
        level: usize,
        /// Nodes found.
        got: usize,
        /// Nodes expected.
        expected: u64,
        /// Leaves at level 0.
        leaves: u64,
    },
    /// A node the tree should hold is absent (restored levels that do not match the leaves).
    #[error("tree lacks the node at level {level}, index {index}")]
    MissingNode {
        /// Level of the node (0 = leaves).
        level: u32,
        /// Index of the node within its level.
        index: u64,
    },
    /// Leaf hashes read back for a complete tile that do not hash to the tile's hash the
    /// tree holds (authenticated when the tree was checked against a signed checkpoint).
    #[error(
        "the stored leaf hashes of entries {from}..{to} do not hash to their tile's \
         authenticated hash: entries in that range were rewritten"
    )]
    TileMismatch {
        /// First entry of the tile.
        from: u64,
        /// One past its last entry.
        to: u64,
    },
    /// A read of a complete tile's leaf hashes that returned too few or too many.
    #[error("reading the leaf hashes of entries {from}..{to} returned {got} hashes")]
    TileLeaves {
        /// First entry of the tile.
        from: u64,
        /// One past its last entry.
        to: u64,
        /// Hashes returned.
        got: usize,
    },
}

/// Domain-separation prefix of leaf hashes (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    // SHA-256 output is always 32 bytes; zip avoids a panicking length assertion.
    for (o, i) in out.iter_mut().zip(d.as_ref()) {
        *o = *i;
    }
    out
}

/// The hash of an empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    to_hash(digest::digest(&SHA256, b""))
}

/// `SHA-256(0x00 || entry)`: the leaf hash of a log entry (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(entry);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One contiguous 65-byte buffer and a one-shot digest: this is the hot path of appends.
    let mut buf = [NODE_PREFIX; 65];
    for (dst, src) in buf.iter_mut().skip(1).zip(left.iter().chain(right)) {
        *dst = *src;
    }
    to_hash(digest::digest(&SHA256, &buf))
}

/// The largest power of two strictly smaller than `n` (the RFC's `k`); `n` must be > 1.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only RFC 9162 Merkle tree over leaf hashes, keeping every complete subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a tree from its leaf hashes in index order (e.g. at start-up).
    pub fn from_leaf_hashes<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push_leaf_hash(leaf);
        }
        tree
    }

    /// Restores a tree from persisted levels (as returned by [`MerkleTree::level_nodes`]).
    ///
    /// Only the shape is checked (each level holds exactly the complete subtrees of the
    /// level below); the hashes are trusted as the store's own. Use
    /// [`MerkleTree::from_leaf_hashes`] to recompute everything instead.
    pub fn from_levels(mut levels: Vec<Vec<Hash>>) -> Result<Self, LogError> {
        while levels.last().is_some_and(Vec::is_empty) {
            levels.pop();
        }
        let leaves = levels.first().map_or(0, Vec::len) as u64;
        for (level, nodes) in levels.iter().enumerate() {
            let expected = leaves >> level;
            if nodes.len() as u64 != expected || expected == 0 {
                return Err(LogError::MalformedLevels {
                    level,
                    got: nodes.len(),
                    expected,
                    leaves,
                });
            }
        }
        // The level above the last one must be empty, i.e. the top level has one node.
        if let Some(top) = levels.len().checked_sub(1) {
            if leaves >> (top + 1) != 0 {
                return Err(LogError::MalformedLevels {
                    level: top + 1,
                    got: 0,
                    expected: leaves >> (top + 1),
                    leaves,
                });
            }
        }
        Ok(Self { levels })
    }

    /// Appends a leaf hash and returns its index; amortised O(1) node hashes.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut node = leaf;
        let mut pos = index;
        let mut level = 0usize;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(nodes) = self.levels.get_mut(level) else {
                break;
            };
            nodes.push(node);
            // A right child completes its parent; a left child waits for its sibling.
            if pos & 1 == 0 {
                break;
            }
            let Some(left) = nodes.len().checked_sub(2).and_then(|i| nodes.get(i)) else {
                break;
            };
            node = node_hash(left, &node);
            pos >>= 1;
            level += 1;
        }
        index
    }

    /// Appends a log entry (hashing it as a leaf) and returns its index.
    pub fn push_entry(&mut self, entry: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(entry))
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, Vec::len) as u64
    }

    /// Number of stored levels (0 for the empty tree; level 0 holds the leaf hashes).
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// The stored complete-subtree hashes at `level`, left to right (empty past the top).
    pub fn level_nodes(&self, level: usize) -> &[Hash] {
        self.levels.get(level).map_or(&[], Vec::as_slice)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, LogError> {
        self.node(0, index).ok_or(LogError::IndexOutOfRange {
            index,
            size: self.size(),
        })
    }

    /// The current root hash (SHA-256 of the empty string for the empty tree).
    pub fn root(&self) -> Hash {
        // Cannot fail: the size is the tree's own.
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// The root hash the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.check_size(size)?;
        root_from(size, &mut |level, index| self.stored(level, index))
    }

    /// RFC 9162 §2.1.3.1 `PATH(index, D[0:size])`: the inclusion proof of leaf `index` in the
    /// tree of `size` leaves, leaf-side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(size)?;
        inclusion_path(index, size, &mut |level, index| self.stored(level, index))
    }

    /// RFC 9162 §2.1.4.1 `PROOF(old_size, D[0:new_size])`: the consistency proof between two
    /// sizes of this tree (empty when they are equal).
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(new_size)?;
        consistency_path(old_size, new_size, &mut |level, index| {
            self.stored(level, index)
        })
    }

    /// Hashes held in memory: every complete subtree, about two per leaf.
    pub fn held_hashes(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        let current = self.size();
        if size > current {
            return Err(LogError::SizeBeyondTree {
                requested: size,
                current,
            });
        }
        Ok(())
    }

    /// The complete subtree `(level, index)`, if the tree holds it.
    pub(crate) fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let level = usize::try_from(level).ok()?;
        let index = usize::try_from(index).ok()?;
        self.levels.get(level)?.get(index).copied()
    }

    fn stored(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        self.node(level, index)
            .ok_or(LogError::MissingNode { level, index })
    }
}

/// `MTH(D[0:size])` from complete-subtree hashes `node(level, index)` (the hash of leaves
/// `[index << level, (index + 1) << level)`), which a tree may hold or read from elsewhere.
pub(crate) fn root_from<E: From<LogError>>(
    size: u64,
    node: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(node, 0, size)
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[0:size])` from complete-subtree hashes; the caller has
/// checked that its tree holds `size` leaves.
pub(crate) fn inclusion_path<E: From<LogError>>(
    index: u64,
    size: u64,
    node: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size }.into());
    }
    // Walk PATH's recursion top-down, collecting each level's sibling subtree.
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < k {
            siblings.push(subtree(node, lo + k, hi)?);
            hi = lo + k;
        } else {
            siblings.push(subtree(node, lo, lo + k)?);
            lo += k;
            m -= k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[0:new_size])` from complete-subtree hashes; the
/// caller has checked that its tree holds `new_size` leaves.
pub(crate) fn consistency_path<E: From<LogError>>(
    old_size: u64,
    new_size: u64,
    node: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    check_consistency_sizes(old_size, new_size)?;
    // SUBPROOF's recursion walked top-down; `whole` is the RFC's boolean flag.
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new_size, old_size, true);
    let mut nodes = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                nodes.push(subtree(node, lo, hi)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            nodes.push(subtree(node, lo + k, hi)?);
            hi = lo + k;
        } else {
            nodes.push(subtree(node, lo, lo + k)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    nodes.reverse();
    Ok(nodes)
}

/// `MTH(D[lo:hi])` for a range produced by the RFC's splits (`lo` aligned to the largest
/// power of two in `hi - lo`, `hi` within the tree): the range is a run of complete
/// subtrees, largest first, and its hash is their right fold. Folding from the right end
/// (smallest subtree first) needs no buffer; a complete range is a single lookup.
fn subtree<E: From<LogError>>(
    node: &mut impl FnMut(u32, u64) -> Result<Hash, E>,
    lo: u64,
    hi: u64,
) -> Result<Hash, E> {
    let mut rest = hi - lo;
    let mut end = hi;
    let mut acc: Option<Hash> = None;
    while rest > 0 {
        let width = rest & rest.wrapping_neg();
        let level = width.trailing_zeros();
        end -= width;
        rest -= width;
        let hash = node(level, end >> level)?;
        acc = Some(match acc {
            None => hash,
            Some(right) => node_hash(&hash, &right),
        });
    }
    acc.ok_or_else(|| {
        LogError::MissingNode {
            level: 0,
            index: lo,
        }
        .into()
    })
}

/// The index walk shared by RFC 9162 §2.1.3.2 and §2.1.4.2 (`fn`, `sn` there): one entry
/// per proof hash, `true` when that hash is the left sibling. Its length is the exact proof
/// length, which is what turns the RFC's "if sn is 0, fail" steps into a length check.
fn sibling_sides(mut f: u64, mut s: u64) -> Vec<bool> {
    let mut sides = Vec::with_capacity(64);
    while s != 0 {
        let left = f & 1 == 1 || f == s;
        sides.push(left);
        if left && f & 1 == 0 {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
    }
    sides
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` leaves whose
/// root is `root`, using `proof` as produced by [`MerkleTree::inclusion_proof`].
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LogError> {
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    let sides = sibling_sides(index, size - 1);
    if proof.len() != sides.len() {
        return Err(LogError::ProofLength {
            got: proof.len(),
            expected: sides.len(),
        });
    }
    let mut r = *leaf;
    for (p, left) in proof.iter().zip(sides) {
        r = if left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    }
    if r != *root {
        return Err(LogError::RootMismatch);
    }
    Ok(())
}

/// Sizes a consistency proof can exist for: old no larger than new, and old non-empty
/// (the empty tree is consistent with every tree; there is nothing to prove).
fn check_consistency_sizes(old_size: u64, new_size: u64) -> Result<(), LogError> {
    if old_size > new_size {
        return Err(LogError::SizesReversed {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 {
        return Err(LogError::EmptyOldTree);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root`. Equal sizes need an empty proof and
/// equal roots; an `old_size` of 0 is refused ([`LogError::EmptyOldTree`]).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    check_consistency_sizes(old_size, new_size)?;
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(LogError::ProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(LogError::RootMismatch)
        };
    }
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let sides = sibling_sides(f, s);
    // Step 2: a power-of-two old tree is itself a node of the new tree, so its root is the
    // starting value and the proof omits it.
    let implicit = old_size.is_power_of_two();
    let expected = sides.len() + usize::from(!implicit);
    if proof.len() != expected {
        return Err(LogError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    let (first, rest) = if implicit {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => {
                return Err(LogError::ProofLength { got: 0, expected });
            }
        }
    };
    let (mut fr, mut sr) = (first, first);
    for (c, left) in rest.iter().zip(sides) {
        if left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    }
    if fr != *old_root || sr != *new_root {
        return Err(LogError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(1 << 40), 1 << 39);
        assert_eq!(split_point((1 << 40) + 1), 1 << 40);
    }

    #[test]
    fn stored_nodes_are_fewer_than_twice_the_leaves() {
        let tree = MerkleTree::from_leaf_hashes((0u32..1000).map(|i| leaf_hash(&i.to_be_bytes())));
        assert!(tree.held_hashes() < 2000);
        assert_eq!(tree.level_nodes(9).len(), 1);
        assert!(tree.level_nodes(10).is_empty());
    }
}
