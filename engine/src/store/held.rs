//! In-flight dedup references ([GC-4]): a chunk an operation found in the index and has not
//! committed a reference to yet. While held, this process votes Abort on a GC rewrite that would
//! drop it ([`vote`](super::vote)), and the commit indexes it again if GC dropped it meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Store;
use crate::error::Error;
use crate::ids::{ChunkId, PackId};
use crate::meta::ChunkEntry;

/// Chunks that operations of this process found in the index (dedup) and have not committed a
/// reference to yet, with the pack the index named, and how many operations hold each.
pub(crate) type InFlight = Arc<Mutex<HashMap<(ChunkId, PackId), u32>>>;

/// One operation's in-flight dedup references ([GC-4]). While it exists, this process votes
/// Abort on a GC rewrite of a pack that holds one of them and no longer indexes it; its commit
/// re-indexes such a chunk in that pack (the bytes are still there, because of that vote).
/// Dropping it releases the references.
pub struct Held {
    reg: InFlight,
    ids: HashMap<ChunkId, ChunkEntry>,
}

impl Held {
    pub(crate) fn get(&self, id: &ChunkId) -> Option<&ChunkEntry> {
        self.ids.get(id)
    }

    /// Take over `other`'s references (an operation made of several streams, e.g. a batch of
    /// files stored by different threads). A chunk both hold keeps one registration.
    pub fn absorb(&mut self, mut other: Held) {
        if other.ids.is_empty() {
            return;
        }
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in other.ids.drain() {
            match self.ids.entry(id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e);
                }
                std::collections::hash_map::Entry::Occupied(_) => release(&mut reg, id, e.pack),
            }
        }
    }
}

/// Drop one in-flight registration of `id` found in `pack`.
fn release(reg: &mut HashMap<(ChunkId, PackId), u32>, id: ChunkId, pack: PackId) {
    if let std::collections::hash_map::Entry::Occupied(mut o) = reg.entry((id, pack)) {
        *o.get_mut() -= 1;
        if *o.get() == 0 {
            o.remove();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in self.ids.drain() {
            release(&mut reg, id, e.pack);
        }
    }
}

impl Store {
    /// A fresh, empty set of in-flight dedup references for one operation.
    pub fn hold(&self) -> Held {
        Held {
            reg: self.voter.inflight.clone(),
            ids: HashMap::new(),
        }
    }

    /// Is this chunk stored (committed index, or appended by this process)? A hit in the
    /// committed index is registered in `held` ([GC-4]): the lookup and the registration happen
    /// under the in-flight mutex, which a GC vote also takes before it refreshes its view.
    pub(super) fn known_chunk(&self, id: ChunkId, held: &mut Held) -> Result<bool, Error> {
        if held.ids.contains_key(&id)
            || self
                .voter
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
        {
            return Ok(true);
        }
        let mut reg = self
            .voter
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let budget = self.cfg.cache.chunk_filter_bytes;
        let (found, build) =
            self.read(|s| (s.chunk(id), (budget > 0).then(|| s.start_presence(budget))))?;
        if let Some(b) = build.flatten() {
            start_filter_build(b);
        }
        let Some(entry) = found? else {
            return Ok(false);
        };
        *reg.entry((id, entry.pack)).or_insert(0) += 1;
        held.ids.insert(id, entry);
        Ok(true)
    }
}

/// Fill a new filter in front of the chunk index ([META-6]): at once when the index is small,
/// else on a thread of its own while lookups keep using the index.
fn start_filter_build(b: crate::meta::PresenceBuild) {
    let run = |b: crate::meta::PresenceBuild| {
        let started = std::time::Instant::now();
        let presence = b.presence().clone();
        match b.run() {
            Ok(()) => tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                bytes = presence.bytes(),
                "chunk filter built"
            ),
            Err(e) => tracing::warn!("the chunk filter was not built, lookups use the index: {e}"),
        }
    };
    if b.is_small() {
        run(b);
    } else if let Err(e) = std::thread::Builder::new()
        .name("chunk-filter".into())
        .spawn(move || run(b))
    {
        tracing::warn!("no thread for the chunk filter, lookups use the index: {e}");
    }
}
