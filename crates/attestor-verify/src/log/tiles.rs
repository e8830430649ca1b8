//! C2SP tlog-tiles resources: the paths `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, and entry bundles (big-endian `u16` length-prefixed
//! entries). A tile at level `L` holds up to 256 consecutive hashes of complete subtrees
//! of height `8 L`; [`TilePath::needs_size`] is the smallest tree that fixes its content,
//! so a tile within a signed checkpoint's size is immutable and may be cached forever.

use thiserror::Error;

use super::tiled::{TILE_HEIGHT, TILE_WIDTH};

/// Highest tile level the spec allows.
pub const MAX_LEVEL: u8 = 63;
/// Largest entry an entry bundle can carry (its length prefix is a `u16`).
pub const MAX_BUNDLED_ENTRY: usize = u16::MAX as usize;

/// Why a tile path or an entry bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TileError {
    /// Not a tile path of the spec's grammar (or not its canonical spelling).
    #[error("not a tlog-tiles path: {0}")]
    MalformedPath(&'static str),
    /// An entry bundle is truncated, has trailing bytes or the wrong number of entries.
    #[error("entry bundle is malformed: {0}")]
    MalformedBundle(&'static str),
    /// An entry too large for a bundle's `u16` length prefix.
    #[error(
        "entry {index} is {len} bytes, more than the {MAX_BUNDLED_ENTRY} an entry bundle carries"
    )]
    EntryTooLarge {
        /// Its position in the bundle.
        index: usize,
        /// Its size.
        len: usize,
    },
}

/// What a tile holds: Merkle tree hashes at a level, or the entries themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Hashes of complete subtrees of height `8 * level`.
    Hashes {
        /// The tile level `L` (0..=63).
        level: u8,
    },
    /// The entries of a level-0 tile (an entry bundle).
    Entries,
}

/// One tile resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    /// Hashes at a level, or entries.
    pub kind: TileKind,
    /// The tile's index within its level.
    pub index: u64,
    /// Hashes or entries it holds: 256 for a full tile, 1..=255 for a partial one.
    pub width: u16,
}

impl TilePath {
    /// The level whose subtrees the tile's items span (0 for entry bundles).
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        }
    }

    /// Index of the first complete subtree (of height `8 * level`) the tile holds.
    pub fn first_item(&self) -> Option<u64> {
        self.index.checked_mul(TILE_WIDTH)
    }

    /// The smallest tree size in which every item of the tile is complete; `None` when it
    /// overflows (no tree that large exists).
    pub fn needs_size(&self) -> Option<u64> {
        let items = self.first_item()?.checked_add(u64::from(self.width))?;
        let shift = u32::from(self.level()) * TILE_HEIGHT;
        let size = items.checked_shl(shift)?;
        (size >> shift == items).then_some(size)
    }

    /// Parses a path relative to the log's prefix (`tile/...`), refusing every spelling
    /// but the canonical one, so a cache never holds two copies of one tile.
    pub fn parse(path: &str) -> Result<Self, TileError> {
        let rest = path
            .strip_prefix("tile/")
            .ok_or(TileError::MalformedPath("does not start with tile/"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or(TileError::MalformedPath("no tile index"))?;
        let kind = if kind == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hashes {
                level: canonical_decimal(kind)
                    .and_then(|l| u8::try_from(l).ok())
                    .filter(|&l| l <= MAX_LEVEL)
                    .ok_or(TileError::MalformedPath("level is not 0..=63"))?,
            }
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((index, width)) => (
                index,
                canonical_decimal(width)
                    .and_then(|w| u16::try_from(w).ok())
                    .filter(|w| (1..TILE_WIDTH as u16).contains(w))
                    .ok_or(TileError::MalformedPath("partial width is not 1..=255"))?,
            ),
            None => (rest, TILE_WIDTH as u16),
        };
        let index = parse_index(index_part)?;
        let tile = TilePath { kind, index, width };
        if tile.to_path() != path {
            return Err(TileError::MalformedPath("not the canonical spelling"));
        }
        Ok(tile)
    }

    /// The path relative to the log's prefix.
    pub fn to_path(&self) -> String {
        let kind = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        let mut elements = Vec::new();
        let mut n = self.index;
        loop {
            elements.push(format!("{:03}", n % 1000));
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let index = elements
            .iter()
            .rev()
            .enumerate()
            .map(|(i, e)| {
                if i + 1 < elements.len() {
                    format!("x{e}")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let partial = if u64::from(self.width) < TILE_WIDTH {
            format!(".p/{}", self.width)
        } else {
            String::new()
        };
        format!("tile/{kind}/{index}{partial}")
    }

    /// The tiles of `kind`'s levels whose content a tree of `size` fixes and a tree of
    /// `previous` did not: what a static mirror writes when the log grows.
    pub fn grown(previous: u64, size: u64, levels_of: TileKind) -> Vec<TilePath> {
        let mut tiles = Vec::new();
        for level in 0..=MAX_LEVEL {
            let kind = match levels_of {
                TileKind::Entries if level > 0 => break,
                TileKind::Entries => TileKind::Entries,
                TileKind::Hashes { .. } => TileKind::Hashes { level },
            };
            let shift = u32::from(level) * TILE_HEIGHT;
            let (old_items, items) = (previous >> shift, size >> shift);
            if items == 0 {
                break;
            }
            // Full tiles completed since, then the partial right-edge tile if it changed.
            for index in old_items / TILE_WIDTH..items / TILE_WIDTH {
                tiles.push(TilePath {
                    kind,
                    index,
                    width: TILE_WIDTH as u16,
                });
            }
            let width = (items % TILE_WIDTH) as u16;
            if width > 0 && items != old_items {
                tiles.push(TilePath {
                    kind,
                    index: items / TILE_WIDTH,
                    width,
                });
            }
        }
        tiles
    }
}

/// A decimal without leading zeroes (or `0`).
fn canonical_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// `x001/x234/067` → 1234067.
fn parse_index(text: &str) -> Result<u64, TileError> {
    let elements: Vec<&str> = text.split('/').collect();
    if elements.len() > 7 {
        return Err(TileError::MalformedPath("index has too many elements"));
    }
    let mut index: u64 = 0;
    for (i, element) in elements.iter().enumerate() {
        let digits = if i + 1 < elements.len() {
            element
                .strip_prefix('x')
                .ok_or(TileError::MalformedPath("index element lacks its x"))?
        } else {
            element
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TileError::MalformedPath("index element is not 3 digits"));
        }
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(digits.parse::<u64>().ok()?))
            .ok_or(TileError::MalformedPath("index overflows"))?;
    }
    Ok(index)
}

/// Concatenated 32-byte hashes: the body of a hash tile.
pub fn hash_tile(hashes: &[[u8; 32]]) -> Vec<u8> {
    hashes.concat()
}

/// An entry bundle: each entry prefixed with its length as a big-endian `u16`.
pub fn encode_entry_bundle<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Splits an entry bundle that must hold exactly `count` entries.
pub fn decode_entry_bundle(bundle: &[u8], count: usize) -> Result<Vec<&[u8]>, TileError> {
    let mut entries = Vec::with_capacity(count.min(TILE_WIDTH as usize));
    let mut rest = bundle;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(TileError::MalformedBundle("an entry runs past the end"));
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(TileError::MalformedBundle("a length prefix is cut short"));
    }
    if entries.len() != count {
        return Err(TileError::MalformedBundle("wrong number of entries"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: u16) -> TilePath {
        TilePath {
            kind: TileKind::Hashes { level },
            index,
            width,
        }
    }

    #[test]
    fn paths_are_spelled_as_the_spec_spells_them() {
        assert_eq!(hashes(0, 1_234_067, 256).to_path(), "tile/0/x001/x234/067");
        assert_eq!(hashes(1, 0, 17).to_path(), "tile/1/000.p/17");
        let entries = TilePath {
            kind: TileKind::Entries,
            index: 5,
            width: 256,
        };
        assert_eq!(entries.to_path(), "tile/entries/005");
        for tile in [hashes(0, 1_234_067, 256), hashes(2, 999, 1), entries] {
            assert_eq!(TilePath::parse(&tile.to_path()), Ok(tile));
        }
        assert_eq!(
            TilePath::parse("tile/0/x018/x446/x744/x073/x709/x551/615"),
            Ok(hashes(0, u64::MAX, 256))
        );
    }

    #[test]
    fn every_other_spelling_is_refused() {
        for bad in [
            "",
            "tile",
            "tile/0",
            "tile/0/",
            "tile/64/000",
            "tile/01/000",
            "tile/0/1",
            "tile/0/0001",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x1/001",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/05",
            "tile/0/000.p/",
            "tile/0/000.p/5/",
            "tile/0/-01",
            "tile/0/+01",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x001/x002/x003/x004/x005/x006/x007/008",
            "tile/entries/000.p/1x",
            "tile/hashes/000",
            "tile/0/00a",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_size_that_fixes_a_tile() {
        assert_eq!(hashes(0, 0, 5).needs_size(), Some(5));
        assert_eq!(hashes(0, 2, 256).needs_size(), Some(768));
        assert_eq!(hashes(1, 0, 17).needs_size(), Some(17 * 256));
        assert_eq!(hashes(2, 0, 1).needs_size(), Some(65_536));
        assert_eq!(hashes(8, 0, 1).needs_size(), None);
        assert_eq!(hashes(0, u64::MAX, 256).needs_size(), None);
    }

    #[test]
    fn a_grown_tree_names_the_spec_example_tiles() {
        // tlog-tiles: size 70,000 is 273 full level-0 tiles, a partial of width 112, one
        // full level-1 tile, a partial level-1 tile of width 17, a partial level-2 of 1.
        let tiles = TilePath::grown(0, 70_000, TileKind::Hashes { level: 0 });
        let of_level = |l: u8| tiles.iter().filter(|t| t.level() == l).collect::<Vec<_>>();
        assert_eq!(of_level(0).len(), 274);
        assert_eq!(of_level(0)[273], &hashes(0, 273, 112));
        assert_eq!(of_level(1), [&hashes(1, 0, 256), &hashes(1, 1, 17)]);
        assert_eq!(of_level(2), [&hashes(2, 0, 1)]);
        assert_eq!(
            TilePath::grown(256, 256, TileKind::Hashes { level: 0 }),
            Vec::new()
        );
        assert_eq!(
            TilePath::grown(250, 260, TileKind::Entries),
            vec![
                TilePath {
                    kind: TileKind::Entries,
                    index: 0,
                    width: 256
                },
                TilePath {
                    kind: TileKind::Entries,
                    index: 1,
                    width: 4
                }
            ]
        );
    }

    #[test]
    fn entry_bundles_round_trip_and_refuse_bad_framing() {
        let entries: [&[u8]; 3] = [b"a", b"", b"xyz"];
        let bundle = encode_entry_bundle(entries).unwrap();
        assert_eq!(bundle, b"\0\x01a\0\0\0\x03xyz");
        assert_eq!(decode_entry_bundle(&bundle, 3).unwrap(), entries);
        assert!(decode_entry_bundle(&bundle, 2).is_err());
        assert!(decode_entry_bundle(&bundle[..bundle.len() - 1], 3).is_err());
        assert!(decode_entry_bundle(&[0], 0).is_err());
        let big = vec![0u8; MAX_BUNDLED_ENTRY + 1];
        assert_eq!(
            encode_entry_bundle([b"ok".as_slice(), &big]),
            Err(TileError::EntryTooLarge {
                index: 1,
                len: MAX_BUNDLED_ENTRY + 1
            })
        );
    }
}
