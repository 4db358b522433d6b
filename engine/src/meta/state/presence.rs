//! A filter in front of the chunk index: most lookups of a chunk the store does not hold (every
//! chunk of new data, looked up by dedup, by the commit and by applying the record) end here
//! instead of reading a leaf of the index tree for each.
//!
//! A [`ChunkPresence`] is a growing Bloom filter ([`ChunkFilter`] layers, each twice the size of
//! the one before) that holds every chunk id of its state's index: it is filled from the index
//! tree it was started on, by a background build, and every chunk a record adds is inserted when
//! the record is applied. Until the build is done it answers nothing, and past its memory budget
//! it stops answering for good: in both cases lookups go to the tree, as without a filter.
//! `false` from [`ChunkPresence::may_contain`] is therefore certain, and a removed chunk only
//! costs a false positive.
//!
//! Which states may use it (the invariant, data-layout.md 5.7a [META-6]): a filter answers for
//! the state it was started on and for what that state becomes by applying records and resting
//! on checkpoints of lsns it already applied (their chunk sets follow from the same records). A
//! state decoded from a checkpoint starts without one; a clone takes the filter its original
//! has at that moment, never one started later (which may have missed chunks the clone holds
//! and the original removed since).
//!
//! Does not own the index itself (`MetaState::chunk`) nor when a build starts (`store::held`).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use crate::format::keys;
use crate::ids::ChunkId;
use crate::meta::tree::{PageStore, Root};
use crate::meta::MetaError;

use super::{record_err, ChunkFilter};

/// The first layer's capacity; each next one holds twice as many.
const FIRST_LAYER: u64 = 1 << 16;

/// An index this small is read at once when a filter starts.
const SMALL_INDEX: u64 = 1 << 14;

const BUILDING: u8 = 0;
const READY: u8 = 1;
/// Over budget or the build failed: answers nothing, ever.
const OFF: u8 = 2;

/// One filter layer and how many ids went into it.
struct Layer {
    filter: ChunkFilter,
    capacity: u64,
    count: u64,
}

pub struct ChunkPresence {
    layers: RwLock<Vec<Layer>>,
    status: AtomicU8,
    budget: u64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for ChunkPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkPresence")
            .field("status", &self.status.load(Ordering::Relaxed))
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl ChunkPresence {
    /// An empty filter for about `expected` ids (more grow it), in at most `budget` bytes.
    pub fn new(expected: u64, budget: u64) -> ChunkPresence {
        let p = ChunkPresence {
            layers: RwLock::new(Vec::new()),
            status: AtomicU8::new(BUILDING),
            budget,
            bytes: AtomicU64::new(0),
        };
        p.push_layer(
            &mut p.layers.write().unwrap_or_else(|e| e.into_inner()),
            expected,
        );
        p
    }

    fn push_layer(&self, layers: &mut Vec<Layer>, at_least: u64) {
        let capacity = layers
            .last()
            .map_or(FIRST_LAYER, |l| l.capacity.saturating_mul(2))
            .max(at_least);
        let filter = ChunkFilter::for_chunks(capacity, rand::random());
        // The layer is a power of two of bits: fill it to its 16 bits per id.
        let capacity = filter.bytes() as u64 * 8 / 16;
        let total = self.bytes.load(Ordering::Relaxed) + filter.bytes() as u64;
        if total > self.budget {
            // Nothing more can be added, so nothing may be answered from now on.
            self.status.store(OFF, Ordering::Release);
            layers.clear();
            self.bytes.store(0, Ordering::Relaxed);
            return;
        }
        self.bytes.store(total, Ordering::Relaxed);
        layers.push(Layer {
            filter,
            capacity,
            count: 0,
        });
    }

    /// Add `id` (every chunk of the state, and every chunk a record adds).
    pub fn insert(&self, id: ChunkId) {
        if self.status.load(Ordering::Acquire) == OFF {
            return;
        }
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        let full = layers.last().is_none_or(|l| l.count >= l.capacity);
        if full {
            self.push_layer(&mut layers, 0);
        }
        if let Some(l) = layers.last_mut() {
            l.filter.insert(id);
            l.count += 1;
        }
    }

    /// May the index hold `id`? `false` is certain; `true` also while the filter is not built
    /// or is off.
    pub fn may_contain(&self, id: ChunkId) -> bool {
        if self.status.load(Ordering::Acquire) != READY {
            return true;
        }
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers.iter().any(|l| l.filter.may_contain(id))
    }

    /// Does the filter answer lookups?
    pub fn is_ready(&self) -> bool {
        self.status.load(Ordering::Acquire) == READY
    }

    /// Bytes of memory the layers hold.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn finish(&self, ok: bool) {
        let _ = self.status.compare_exchange(
            BUILDING,
            if ok { READY } else { OFF },
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// The part of a filter's build that reads the index tree: run it on any thread.
pub struct PresenceBuild {
    pub(super) pages: Arc<PageStore>,
    pub(super) root: Root,
    pub(super) entries: u64,
    pub(super) presence: Arc<ChunkPresence>,
}

impl PresenceBuild {
    /// The filter this build fills.
    pub fn presence(&self) -> &Arc<ChunkPresence> {
        &self.presence
    }

    /// Is the tree small enough to read on the caller's thread (a few milliseconds)?
    pub fn is_small(&self) -> bool {
        self.root.is_empty() || self.entries < SMALL_INDEX
    }

    /// Insert every id of the tree; then the filter answers. On an error (a page that cannot be
    /// read, perhaps removed by GC after a newer checkpoint) the filter turns off and lookups
    /// keep going to the tree.
    pub fn run(self) -> Result<(), MetaError> {
        let res = (|| {
            for item in self.pages.range(
                &self.root,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            ) {
                let (k, _) = item.map_err(MetaError::from)?;
                let id = keys::decode_chunk_key(&k).map_err(|e| record_err("chunk", &k, e))?;
                self.presence.insert(id);
            }
            Ok(())
        })();
        self.presence.finish(res.is_ok());
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ChunkId {
        ChunkId(xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes()))
    }

    #[test]
    fn a_grown_filter_forgets_nothing_and_rejects_most_strangers() {
        let p = ChunkPresence::new(0, 64 << 20);
        for n in 0..300_000 {
            p.insert(id(n));
        }
        assert!(!p.is_ready());
        assert!(p.may_contain(id(1_000_000)), "answers only once built");
        p.finish(true);
        assert!((0..300_000).all(|n| p.may_contain(id(n))));
        let strangers = (1_000_000..1_100_000)
            .filter(|n| p.may_contain(id(*n)))
            .count();
        // Three layers of about 0.05% each.
        assert!(strangers < 500, "{strangers} false positives in 100,000");
    }

    #[test]
    fn a_filter_over_its_budget_answers_nothing() {
        let p = ChunkPresence::new(0, 300 << 10);
        p.finish(true);
        for n in 0..200_000 {
            p.insert(id(n));
        }
        assert_eq!(p.bytes(), 0);
        assert!(!p.is_ready());
        assert!(p.may_contain(id(5_000_000)));
    }
}
