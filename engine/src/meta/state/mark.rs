//! Marking the chunks a state references, in memory that does not grow with the number of
//! files: what GC stage 1 and `verfs status` need to tell live chunks from garbage.
//!
//! A [`ChunkFilter`] is a Bloom filter of chunk ids: it never forgets an inserted id and admits
//! an id never inserted with a small probability (about 1 in 2,000 at the sizing of
//! [`ChunkFilter::for_chunks`]). For a collector that is the safe side: a false positive keeps a
//! garbage chunk one more pass (each pass draws a new seed, so no chunk is kept twice for the
//! same reason), a false negative, which would drop a live chunk, cannot happen. Marking reads
//! the extent records of a namespace tree leaf by leaf, each leaf once however many trees share
//! it (`seen`), plus the delta's records.
//!
//! Does not own the decision what to collect (`ops::gc`), nor the key layout (`format::keys`).

use std::collections::HashSet;
use std::ops::Bound;

use crate::format::keys::{self, TAG_EXTENTS};
use crate::ids::ChunkId;
use crate::meta::tree::{prefix_end, PagePtr};
use crate::meta::MetaError;
use crate::model::Extent;

use super::{extent_part_of, record_err, MetaState};

/// Bits per expected entry; with [`HASHES`] probes a false positive rate of about 0.05%.
const BITS_PER_ENTRY: u64 = 16;
const HASHES: u32 = 11;
const MIN_BITS: u64 = 1 << 16;

/// A Bloom filter of chunk ids (or of chunk ids paired with a pack id). No false negatives.
pub struct ChunkFilter {
    bits: Vec<u64>,
    mask: u64,
    seed: u64,
}

impl ChunkFilter {
    /// A filter for about `n` distinct entries (a power of two of bits, at least 16 per entry),
    /// hashing under `seed`. Memory: 2-4 bytes per entry.
    pub fn for_chunks(n: u64, seed: u64) -> ChunkFilter {
        let nbits = (n.saturating_mul(BITS_PER_ENTRY))
            .max(MIN_BITS)
            .next_power_of_two();
        ChunkFilter {
            bits: vec![0u64; (nbits / 64) as usize],
            mask: nbits - 1,
            seed,
        }
    }

    /// Two independent 64-bit hashes of (`id`, `tag`); the probes are `h1 + i * h2`.
    fn hashes(&self, id: ChunkId, tag: u64) -> (u64, u64) {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&id.0.to_le_bytes());
        b[16..].copy_from_slice(&tag.to_le_bytes());
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(&b, self.seed);
        (h as u64, ((h >> 64) as u64) | 1)
    }

    /// Add `id` (with `tag`: 0 for a plain id, a pack id for a placement).
    pub fn insert_tagged(&mut self, id: ChunkId, tag: u64) {
        let (h1, h2) = self.hashes(id, tag);
        for i in 0..u64::from(HASHES) {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Was `id` (with `tag`) perhaps inserted? `false` is certain.
    pub fn may_contain_tagged(&self, id: ChunkId, tag: u64) -> bool {
        let (h1, h2) = self.hashes(id, tag);
        (0..u64::from(HASHES)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    pub fn insert(&mut self, id: ChunkId) {
        self.insert_tagged(id, 0)
    }

    pub fn may_contain(&self, id: ChunkId) -> bool {
        self.may_contain_tagged(id, 0)
    }

    /// Bytes of memory the filter holds.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

fn mark_extent_record(
    k: &[u8],
    v: &[u8],
    xs: &mut Vec<Extent>,
    f: &mut dyn FnMut(ChunkId),
) -> Result<(), MetaError> {
    let part = extent_part_of(k)?;
    xs.clear();
    keys::decode_extent_part(part, v, xs).map_err(|e| record_err("extents", k, e))?;
    for x in xs.iter() {
        f(x.chunk);
    }
    Ok(())
}

impl MetaState {
    /// The delta's extent records (`None`: deleted), in key order.
    fn delta_extents(&self) -> impl Iterator<Item = (&[u8], Option<&Vec<u8>>)> {
        self.delta
            .ns
            .range::<[u8], _>((Bound::Included(&[TAG_EXTENTS][..]), Bound::Unbounded))
            .take_while(|(k, _)| k.first() == Some(&TAG_EXTENTS))
            .map(|(k, (_, v))| (k.as_slice(), v.as_ref()))
    }

    /// Call `f` for every chunk this state's extents reference, reading each leaf of its
    /// namespace tree that is not in `seen` (and adding it), then its delta's extent records.
    /// Over-approximates: a record the delta deleted or replaced still counts from its page.
    /// Pass one `seen` for the live state and every snapshot so a shared subtree is read once.
    pub fn mark_references(
        &self,
        seen: &mut HashSet<PagePtr>,
        f: &mut dyn FnMut(ChunkId),
    ) -> Result<(), MetaError> {
        let lower = [TAG_EXTENTS];
        let upper = prefix_end(&lower);
        let mut xs = Vec::new();
        if let Some(pages) = &self.pages {
            pages.visit_leaves(
                &self.base.namespace,
                &lower,
                upper.as_deref(),
                seen,
                |leaf| -> Result<(), MetaError> {
                    for i in 0..leaf.len() {
                        let k = leaf.key(i);
                        if k.first() == Some(&TAG_EXTENTS) {
                            mark_extent_record(k, leaf.value(i), &mut xs, f)?;
                        }
                    }
                    Ok(())
                },
            )?;
        }
        for (k, v) in self.delta_extents() {
            if let Some(v) = v {
                mark_extent_record(k, v, &mut xs, f)?;
            }
        }
        Ok(())
    }

    /// Call `f` for every chunk this state references that `older` (an earlier state of the
    /// same log) may not: the references of every extent key whose value may differ between
    /// the two. Those keys are in this state's delta, under a prefix `older`'s delta cleared, or
    /// differ between the two base trees; any other key has the same value in
    /// both. Cost: the two deltas and the changed pages, not the size of the store, which is
    /// what lets GC re-check its candidates under the log lock ([GC-1]).
    pub fn for_each_reference_since(
        &self,
        older: &MetaState,
        f: &mut dyn FnMut(ChunkId),
    ) -> Result<(), MetaError> {
        let mut xs = Vec::new();
        let is_x = |k: &[u8]| k.first() == Some(&TAG_EXTENTS);
        // Keys that changed in this state's delta, with their values now.
        for (k, v) in self.delta_extents() {
            if let Some(v) = v {
                mark_extent_record(k, v, &mut xs, f)?;
            }
        }
        // Keys the older state's delta changed: every change of an extent list (`SetExtents`,
        // `DeleteInode`) clears the file's whole `x` prefix first, so the cleared prefixes name
        // them all; their values now.
        for p in older.delta.cleared.keys().filter(|p| p[0] == TAG_EXTENTS) {
            self.ns_prefix(&p[..], |k, v| mark_extent_record(k, v, &mut xs, f))?;
        }
        // Keys that differ between the two base trees: their values in this one's.
        if let Some(pages) = &self.pages {
            let mut err = None;
            pages.diff(&older.base.namespace, &self.base.namespace, |k, _, new| {
                if is_x(k) {
                    if let Some(v) = new {
                        if let Err(e) = mark_extent_record(k, v, &mut xs, f) {
                            err = Some(e);
                            return std::ops::ControlFlow::Break(());
                        }
                    }
                }
                std::ops::ControlFlow::Continue(())
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }
}
