//! The sequencer's Merkle tree: the same RFC 9162 roots and proofs as [`MerkleTree`]
//! (the proof walks are shared), holding in memory only what a proof cannot cheaply read
//! back. Leaves are grouped in tiles of 256 (height 8, as in C2SP tlog-tiles). The tree
//! keeps every complete subtree at and above level 8 (one hash per tile, about two per 256
//! leaves), every node of the incomplete right-edge tile, and a few recently completed or
//! used tiles. A node below level 8 inside any other tile is recomputed from that tile's
//! 256 stored leaf hashes (one read), which must hash to the tile's level-8 hash the tree
//! holds. Those hashes were checked against a signed checkpoint when the tree was rebuilt
//! at start-up, so a tile rewritten in the store since is an error naming its entries,
//! never a wrong proof.
//!
//! Reads go through a caller's `read(from, to)` returning the leaf hashes of entries
//! `[from, to)`, so the tree knows nothing of storage and its errors are the caller's.

use std::collections::VecDeque;

use super::merkle::{consistency_path, inclusion_path, root_from, Hash, LogError, MerkleTree};

/// Levels per tile: a tile covers `2^8 = 256` leaves (C2SP tlog-tiles' height).
pub const TILE_HEIGHT: u32 = 8;
/// Leaves per complete tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Complete tiles kept beside the right edge (16 KiB each). The batcher's largest batch
/// (512 entries) touches at most four tiles, so the receipts of a batch need no read.
const CACHED_TILES: usize = 8;

/// An append-only RFC 9162 tree that reads subtrees below tile height back from storage.
#[derive(Debug, Clone, Default)]
pub struct TiledTree {
    /// Complete subtrees at level 8 and above: its leaves are the tiles' hashes.
    upper: MerkleTree,
    /// The incomplete right-edge tile (fewer than 256 leaves), all its nodes.
    edge: MerkleTree,
    /// Recently completed or read tiles with all their nodes, most recent first.
    cache: VecDeque<(u64, MerkleTree)>,
}

impl TiledTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        (self.upper.size() << TILE_HEIGHT) + self.edge.size()
    }

    /// Appends a leaf hash and returns its index; amortised O(1) node hashes.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        self.edge.push_leaf_hash(leaf);
        if self.edge.size() == TILE_WIDTH {
            let tile = std::mem::take(&mut self.edge);
            self.upper.push_leaf_hash(tile.root());
            // Just completed: the receipts of the batch that completed it read it next.
            self.remember(index >> TILE_HEIGHT, tile);
        }
        index
    }

    /// The current root hash: every subtree it needs is held, so nothing is read.
    pub fn root(&self) -> Result<Hash, LogError> {
        root_from(self.size(), &mut |level, index| {
            self.held(level, index)
                .ok_or(LogError::MissingNode { level, index })
        })
    }

    /// The root hash the tree had when it held `size` leaves.
    pub fn root_at<E: From<LogError>>(
        &mut self,
        size: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Hash, E> {
        self.check_size(size)?;
        root_from(size, &mut |level, index| self.node(level, index, read))
    }

    /// The leaf hash at `index`, authenticated by its tile's hash.
    pub fn leaf<E: From<LogError>>(
        &mut self,
        index: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Hash, E> {
        let size = self.size();
        if index >= size {
            return Err(LogError::IndexOutOfRange { index, size }.into());
        }
        self.node(0, index, read)
    }

    /// RFC 9162 `PATH(index, D[0:size])`, as [`MerkleTree::inclusion_proof`].
    pub fn inclusion_proof<E: From<LogError>>(
        &mut self,
        index: u64,
        size: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Vec<Hash>, E> {
        self.check_size(size)?;
        inclusion_path(index, size, &mut |level, i| self.node(level, i, read))
    }

    /// RFC 9162 `PROOF(old_size, D[0:new_size])`, as [`MerkleTree::consistency_proof`].
    pub fn consistency_proof<E: From<LogError>>(
        &mut self,
        old_size: u64,
        new_size: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Vec<Hash>, E> {
        self.check_size(new_size)?;
        consistency_path(old_size, new_size, &mut |level, i| {
            self.node(level, i, read)
        })
    }

    /// The hashes of the complete subtrees `(level, first..first + count)`: a C2SP
    /// tlog-tiles tile when `level` is a multiple of 8. Subtrees below tile height are
    /// read (once per tile) and checked; the others are held.
    pub fn subtree_hashes<E: From<LogError>>(
        &mut self,
        level: u32,
        first: u64,
        count: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Vec<Hash>, E> {
        let end = first
            .checked_add(count)
            .and_then(|end| end.checked_shl(level).filter(|size| size >> level == end))
            .ok_or(LogError::SizeBeyondTree {
                requested: u64::MAX,
                current: self.size(),
            })?;
        self.check_size(end)?;
        (first..first + count)
            .map(|index| self.node(level, index, read))
            .collect()
    }

    /// Hashes held in memory: about two per 256 leaves, plus at most nine tiles' worth.
    pub fn held_hashes(&self) -> usize {
        self.upper.held_hashes()
            + self.edge.held_hashes()
            + self
                .cache
                .iter()
                .map(|(_, t)| t.held_hashes())
                .sum::<usize>()
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

    /// The complete subtree `(level, index)` if it is in memory.
    fn held(&self, level: u32, index: u64) -> Option<Hash> {
        let Some((tile, within)) = in_tile(level, index) else {
            return self.upper.node(level - TILE_HEIGHT, index);
        };
        if tile == self.upper.size() {
            return self.edge.node(level, within);
        }
        let (_, tree) = self.cache.iter().find(|(t, _)| *t == tile)?;
        tree.node(level, within)
    }

    /// The complete subtree `(level, index)`, reading its tile if it is not in memory.
    fn node<E: From<LogError>>(
        &mut self,
        level: u32,
        index: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<Hash, E> {
        let missing = LogError::MissingNode { level, index };
        let Some((tile, within)) = in_tile(level, index) else {
            return Ok(self.upper.node(level - TILE_HEIGHT, index).ok_or(missing)?);
        };
        let tree = if tile == self.upper.size() {
            &self.edge
        } else {
            self.tile(tile, read)?
        };
        Ok(tree.node(level, within).ok_or(missing)?)
    }

    /// Complete tile number `tile`, from the cache or read and checked.
    fn tile<E: From<LogError>>(
        &mut self,
        tile: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<&MerkleTree, E> {
        match self.cache.iter().position(|(t, _)| *t == tile) {
            // Most recently used first: an auditor's repeated proofs keep their tile.
            Some(hit) => {
                if let Some(used) = self.cache.remove(hit) {
                    self.cache.push_front(used);
                }
            }
            None => {
                let tree = self.read_tile(tile, read)?;
                self.remember(tile, tree);
            }
        }
        let front = self.cache.front().map(|(_, tree)| tree);
        Ok(front.ok_or(LogError::MissingNode {
            level: TILE_HEIGHT,
            index: tile,
        })?)
    }

    /// Reads complete tile `tile`'s leaf hashes and checks them against its held hash.
    fn read_tile<E: From<LogError>>(
        &self,
        tile: u64,
        read: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, E>,
    ) -> Result<MerkleTree, E> {
        let expected = self.upper.node(0, tile).ok_or(LogError::MissingNode {
            level: TILE_HEIGHT,
            index: tile,
        })?;
        let from = tile << TILE_HEIGHT;
        let to = from + TILE_WIDTH;
        let leaves = read(from, to)?;
        if leaves.len() as u64 != TILE_WIDTH {
            return Err(LogError::TileLeaves {
                from,
                to,
                got: leaves.len(),
            }
            .into());
        }
        let tree = MerkleTree::from_leaf_hashes(leaves);
        if tree.root() != expected {
            return Err(LogError::TileMismatch { from, to }.into());
        }
        Ok(tree)
    }

    fn remember(&mut self, tile: u64, tree: MerkleTree) {
        self.cache.push_front((tile, tree));
        self.cache.truncate(CACHED_TILES);
    }
}

/// For a node below tile height, its tile and its index within the tile's level; `None`
/// for a node at or above tile height.
fn in_tile(level: u32, index: u64) -> Option<(u64, u64)> {
    let shift = TILE_HEIGHT.checked_sub(level).filter(|&s| s > 0)?;
    Some((index >> shift, index & ((1u64 << shift) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::leaf_hash;

    fn no_reads(_: u64, _: u64) -> Result<Vec<Hash>, LogError> {
        Err(LogError::RootMismatch)
    }

    #[test]
    fn memory_per_leaf_before_and_after() {
        let n = (1u64 << 20) + 300;
        let mut full = MerkleTree::new();
        let mut tiled = TiledTree::new();
        for i in 0..n {
            let leaf = leaf_hash(&i.to_be_bytes());
            full.push_leaf_hash(leaf);
            tiled.push_leaf_hash(leaf);
        }
        assert_eq!(tiled.root(), Ok(full.root()));
        let per_leaf = |hashes: usize| (hashes * 32) as f64 / n as f64;
        eprintln!(
            "{n} leaves: full tree {} hashes = {:.2} B/leaf; tiled {} hashes = {:.3} B/leaf",
            full.held_hashes(),
            per_leaf(full.held_hashes()),
            tiled.held_hashes(),
            per_leaf(tiled.held_hashes()),
        );
        // Two hashes per tile above level 8, the edge tile and the bounded cache.
        let bound = 2 * (n / TILE_WIDTH) as usize + (CACHED_TILES + 1) * 2 * TILE_WIDTH as usize;
        assert!(tiled.held_hashes() <= bound, "{}", tiled.held_hashes());
        assert!(full.held_hashes() > 2 * n as usize - 64);
    }

    #[test]
    fn the_current_root_and_the_edge_need_no_reads() {
        let mut tiled = TiledTree::new();
        for i in 0..700u64 {
            tiled.push_leaf_hash(leaf_hash(&i.to_be_bytes()));
        }
        let full = MerkleTree::from_leaf_hashes((0..700u64).map(|i| leaf_hash(&i.to_be_bytes())));
        assert_eq!(tiled.root(), Ok(full.root()));
        assert_eq!(
            tiled.inclusion_proof(650, 700, &mut no_reads),
            full.inclusion_proof(650, 700)
        );
        assert_eq!(tiled.leaf(699, &mut no_reads), full.leaf(699));
    }

    #[test]
    fn node_positions_split_at_tile_height() {
        assert_eq!(in_tile(0, 0), Some((0, 0)));
        assert_eq!(in_tile(0, 257), Some((1, 1)));
        assert_eq!(in_tile(7, 3), Some((1, 1)));
        assert_eq!(in_tile(8, 3), None);
        assert_eq!(in_tile(40, 0), None);
    }
}
