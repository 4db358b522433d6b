//! [`MetaState`]: the metadata at one lsn, and its lookups. Also the log's [`StateMachine`]:
//! record payloads and checkpoint bodies.
//!
//! A state is two trees of checksummed pages on disk (`meta::tree`; the namespace and the chunk
//! index, as of the checkpoint it rests on) plus an in-memory [`Delta`]: every change of the
//! records applied since. A lookup asks the delta first, then the pages (through the page
//! store's bounded cache, shared with other processes by the OS page cache), so what a process
//! holds is bounded by the delta and the cache, never by the size of the store. A checkpoint
//! writes the delta into new pages (copy-on-write: only the paths to changed keys) and the state
//! then rests on the new roots. A snapshot's tree is a state with a namespace root and no delta.
//! Keys and values: `format::keys`, `data-layout.md` 5.7b.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use verfs_coordination::txlog::{Lsn, StateMachine};

use crate::format::keys::{
    self, Body, SnapRecord, INO_PREFIX_LEN, TAG_DIRENT, TAG_EXTENTS, TAG_INODE,
};
use crate::format::meta as enc;
use crate::format::DecodeError;
use crate::ids::{ChunkId, InodeNo};
use crate::model::{ChunkEntry, Extent, FileKind, Inode, Op, Timestamp};

use super::tree::{prefix_end, PageStore, PageWriter, Root, TreeError};
use super::MetaError;

mod compact;
mod mark;
mod presence;
pub use compact::compaction_due;
pub use mark::ChunkFilter;
pub use presence::{ChunkPresence, PresenceBuild};

/// A snapshot as the metadata knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    pub name: Vec<u8>,
    pub time: Timestamp,
    /// The snapshot's tree is durable (its root is known). A snapshot that is not ready blocks
    /// GC's stage 1 (its references are not known yet) until it is ready or dropped.
    pub ready: bool,
    /// The root of its namespace tree, once ready.
    pub root: Option<Root>,
}

/// Changes since the roots a state rests on. Each entry keeps the lsn that made it, so that
/// moving onto a newer checkpoint drops exactly what that checkpoint holds.
#[derive(Clone, Debug, Default)]
struct Delta {
    /// Namespace keys set (`Some`) or deleted (`None`).
    ns: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// Namespace prefixes (tag + inode) all of whose records in the pages are gone: a deleted
    /// inode's entries and extents, a file's replaced extent list. Later sets under the prefix
    /// are in `ns`.
    cleared: BTreeMap<[u8; INO_PREFIX_LEN], u64>,
    chunks: BTreeMap<ChunkId, (u64, Option<ChunkEntry>)>,
}

impl Delta {
    fn len(&self) -> usize {
        self.ns.len() + self.cleared.len() + self.chunks.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The roots of the two trees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    pub namespace: Root,
    pub chunks: Root,
}

/// The whole metadata state at some lsn.
#[derive(Clone, Debug)]
pub struct MetaState {
    /// Where the trees' pages are; `None` for a state that lives in memory only (tests).
    pages: Option<Arc<PageStore>>,
    base: Roots,
    /// The lsn `base` is the state of.
    base_lsn: u64,
    delta: Delta,
    /// Snapshots by id.
    pub snapshots: BTreeMap<u64, SnapInfo>,
    pub next_ino: u64,
    inodes: u64,
    chunk_count: u64,
    /// Past this many delta entries the state asks to move onto a newer checkpoint.
    delta_limit: usize,
    /// The filter in front of the chunk index, once [`MetaState::start_presence`] made one
    /// (`presence.rs`: which states may use it). A clone takes the one set at that moment.
    presence: OnceLock<Arc<ChunkPresence>>,
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState {
            pages: None,
            base: Roots::default(),
            base_lsn: 0,
            delta: Delta::default(),
            snapshots: BTreeMap::new(),
            next_ino: 2,
            inodes: 0,
            chunk_count: 0,
            delta_limit: DEFAULT_DELTA_LIMIT,
            presence: OnceLock::new(),
        }
    }
}

/// Delta entries past which a process moves onto a newer checkpoint when one exists.
pub const DEFAULT_DELTA_LIMIT: usize = 200_000;

/// What a state is built with: the page store of the store, or none (memory only).
pub type PagesCtx = Option<Arc<PageStore>>;

/// A record read from a page that does not decode: damage in the page it came from.
fn record_err(what: &str, key: &[u8], e: DecodeError) -> MetaError {
    MetaError::Record {
        what: what.to_string(),
        key: hex::encode(key),
        reason: e.reason,
    }
}

impl MetaState {
    /// The state of a snapshot: its namespace tree and nothing else.
    pub fn snapshot_tree(pages: &Arc<PageStore>, root: Root) -> MetaState {
        MetaState {
            pages: Some(pages.clone()),
            base: Roots {
                namespace: root,
                chunks: Root::EMPTY,
            },
            ..MetaState::default()
        }
    }

    /// The roots this state rests on and the lsn they are the state of.
    pub fn base(&self) -> (Roots, Lsn) {
        (self.base, Lsn(self.base_lsn))
    }

    /// How many changes the state holds in memory beyond its roots.
    pub fn delta_len(&self) -> usize {
        self.delta.len()
    }

    pub fn set_delta_limit(&mut self, n: usize) {
        self.delta_limit = n;
    }

    pub fn pages(&self) -> Option<&Arc<PageStore>> {
        self.pages.as_ref()
    }

    // ---- namespace reads: the delta over the pages ----

    fn ns_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        if let Some((_, v)) = self.delta.ns.get(key) {
            return Ok(v.clone());
        }
        if self.is_cleared(key) {
            return Ok(None);
        }
        match &self.pages {
            Some(pages) => pages
                .get(&self.base.namespace, key)
                .map_err(MetaError::from),
            None => Ok(None),
        }
    }

    /// Is `key` under a prefix the delta cleared (so its version in the pages is gone)?
    fn is_cleared(&self, key: &[u8]) -> bool {
        !self.delta.cleared.is_empty()
            && key
                .get(..INO_PREFIX_LEN)
                .and_then(|p| <[u8; INO_PREFIX_LEN]>::try_from(p).ok())
                .is_some_and(|p| self.delta.cleared.contains_key(&p))
    }

    /// Every namespace record with a key in `[lower, upper)`, in key order, streamed to `f`:
    /// the pages' records merged with the delta's, the delta winning.
    fn ns_scan<E: From<MetaError>>(
        &self,
        lower: &[u8],
        upper: Option<&[u8]>,
        f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let ub = match upper {
            Some(u) => Bound::Excluded(u),
            None => Bound::Unbounded,
        };
        let delta = self.delta.ns.range::<[u8], _>((Bound::Included(lower), ub));
        let mut pages = self
            .pages
            .as_ref()
            .map(|p| p.range(&self.base.namespace, Bound::Included(lower), ub));
        let next_page = || -> Result<Option<(Vec<u8>, Vec<u8>)>, MetaError> {
            match pages.as_mut() {
                Some(it) => it.next().transpose().map_err(MetaError::from),
                None => Ok(None),
            }
        };
        let f = std::cell::RefCell::new(f);
        merge(
            next_page,
            delta.map(|(k, (_, v))| (k, v.as_ref())),
            |k: &Vec<u8>, d: &&Vec<u8>| k.as_slice().cmp(d.as_slice()),
            |k, v| {
                if self.is_cleared(k) {
                    Ok(())
                } else {
                    (f.borrow_mut())(k, v)
                }
            },
            |k, v| (f.borrow_mut())(k, v),
        )
    }

    fn ns_prefix<E: From<MetaError>>(
        &self,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = prefix_end(prefix);
        self.ns_scan(prefix, end.as_deref(), f)
    }

    // ---- namespace changes (apply) ----

    fn ns_put(&mut self, lsn: u64, key: Vec<u8>, v: Option<Vec<u8>>) {
        self.delta.ns.insert(key, (lsn, v));
    }

    /// Every record under `prefix` (tag + inode) is gone, in the delta and in the pages.
    fn ns_clear(&mut self, lsn: u64, prefix: [u8; INO_PREFIX_LEN]) {
        let end = prefix_end(&prefix);
        let doomed: Vec<Vec<u8>> = self
            .delta
            .ns
            .range::<[u8], _>((
                Bound::Included(&prefix[..]),
                match &end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                },
            ))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.delta.ns.remove(&k);
        }
        self.delta.cleared.insert(prefix, lsn);
    }

    // ---- public reads ----

    /// The inode `ino`, if it exists.
    pub fn inode(&self, ino: InodeNo) -> Result<Option<Inode>, MetaError> {
        let key = keys::inode_key(ino);
        match self.ns_get(&key)? {
            Some(v) => Ok(Some(
                keys::decode_inode_value(ino, &v).map_err(|e| record_err("inode", &key, e))?,
            )),
            None => Ok(None),
        }
    }

    pub fn has_inode(&self, ino: InodeNo) -> Result<bool, MetaError> {
        Ok(self.ns_get(&keys::inode_key(ino))?.is_some())
    }

    /// How many inodes exist (orphans included); 0 for a snapshot tree, which keeps no counts.
    pub fn inode_count(&self) -> u64 {
        self.inodes
    }

    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError> {
        let key = keys::dirent_key(parent, name);
        match self.ns_get(&key)? {
            Some(v) => Ok(Some(
                keys::decode_dirent_value(&v)
                    .map_err(|e| record_err("directory entry", &key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// The directory and name of the link that made `ino` (the only link of a directory; for a
    /// file with several links, the latest, and none once that one is removed).
    pub fn parent_of(&self, ino: InodeNo) -> Result<Option<(InodeNo, Vec<u8>)>, MetaError> {
        let key = keys::parent_key(ino);
        match self.ns_get(&key)? {
            Some(v) => Ok(Some(
                keys::decode_parent_value(&v).map_err(|e| record_err("parent", &key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// The entries of directory `dir`, sorted by name (empty for anything but a directory).
    pub fn entries(&self, dir: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError> {
        let mut out = Vec::new();
        self.for_each_entry_of(dir, |name, child| {
            out.push((name.to_vec(), child));
            Ok::<(), MetaError>(())
        })?;
        Ok(out)
    }

    /// The entries of directory `dir` in name order, streamed to `f`.
    pub fn for_each_entry_of<E: From<MetaError>>(
        &self,
        dir: InodeNo,
        mut f: impl FnMut(&[u8], InodeNo) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ns_prefix(&keys::ino_prefix(TAG_DIRENT, dir), |k, v| {
            let child =
                keys::decode_dirent_value(v).map_err(|e| record_err("directory entry", k, e))?;
            f(&k[INO_PREFIX_LEN..], child)
        })
    }

    /// Does directory `dir` have any entry? Reads at most one leaf.
    pub fn has_entries(&self, dir: InodeNo) -> Result<bool, MetaError> {
        enum Stop {
            Found,
            Err(MetaError),
        }
        impl From<MetaError> for Stop {
            fn from(e: MetaError) -> Self {
                Stop::Err(e)
            }
        }
        match self.ns_prefix(&keys::ino_prefix(TAG_DIRENT, dir), |_, _| Err(Stop::Found)) {
            Ok(()) => Ok(false),
            Err(Stop::Found) => Ok(true),
            Err(Stop::Err(e)) => Err(e),
        }
    }

    /// A file's extents, in file order (empty for a file with none, or no such inode).
    pub fn extents(&self, ino: InodeNo) -> Result<Vec<Extent>, MetaError> {
        let mut out = Vec::new();
        self.ns_prefix(&keys::ino_prefix(TAG_EXTENTS, ino), |k, v| {
            let part = extent_part_of(k)?;
            keys::decode_extent_part(part, v, &mut out).map_err(|e| record_err("extents", k, e))
        })?;
        Ok(out)
    }

    /// Bytes a file's extents cover (what it stores, holes excluded): one record read.
    pub fn extent_bytes(&self, ino: InodeNo) -> Result<u64, MetaError> {
        let key = keys::extents_key(ino, 0);
        match self.ns_get(&key)? {
            Some(v) => Ok(keys::decode_extent_summary(&v)
                .map_err(|e| record_err("extents", &key, e))?
                .1),
            None => Ok(0),
        }
    }

    /// Where chunk `id` is stored, if the index has it.
    pub fn chunk(&self, id: ChunkId) -> Result<Option<ChunkEntry>, MetaError> {
        if let Some((_, e)) = self.delta.chunks.get(&id) {
            return Ok(*e);
        }
        let Some(pages) = &self.pages else {
            return Ok(None);
        };
        if self.presence.get().is_some_and(|p| !p.may_contain(id)) {
            return Ok(None);
        }
        let key = keys::chunk_key(id);
        match pages
            .get(&self.base.chunks, &key)
            .map_err(MetaError::from)?
        {
            Some(v) => Ok(Some(
                keys::decode_chunk_value(&v).map_err(|e| record_err("chunk", &key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// How many chunks the index holds.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Give this state a filter in front of its chunk index, of at most `budget` bytes, unless
    /// it has one. Returns the build that fills it from the index tree (run it anywhere; the
    /// filter answers once it finished). Call it on the state records are applied to, while no
    /// record is (the log's read view): the delta's chunks go in here, later ones as applied.
    pub fn start_presence(&self, budget: u64) -> Option<PresenceBuild> {
        let pages = self.pages.as_ref()?;
        if self.presence.get().is_some() {
            return None;
        }
        let p = Arc::new(ChunkPresence::new(self.chunk_count, budget));
        for (id, (_, e)) in &self.delta.chunks {
            if e.is_some() {
                p.insert(*id);
            }
        }
        self.presence.set(p.clone()).ok()?;
        Some(PresenceBuild {
            pages: pages.clone(),
            root: self.base.chunks,
            entries: self.chunk_count,
            presence: p,
        })
    }

    /// The filter in front of the chunk index, if one was started.
    pub fn presence(&self) -> Option<&Arc<ChunkPresence>> {
        self.presence.get()
    }

    /// Every inode, in inode-number order, streamed to `f`.
    pub fn for_each_inode<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(&Inode) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ns_prefix(&[TAG_INODE], |k, v| {
            let ino = keys::key_ino(k).map_err(|e| record_err("inode", k, e))?;
            let i = keys::decode_inode_value(ino, v).map_err(|e| record_err("inode", k, e))?;
            f(&i)
        })
    }

    /// Every directory entry (parent, name, child), by parent then name, streamed to `f`.
    pub fn for_each_entry<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(InodeNo, &[u8], InodeNo) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ns_prefix(&[TAG_DIRENT], |k, v| {
            let parent = keys::key_ino(k).map_err(|e| record_err("directory entry", k, e))?;
            let child =
                keys::decode_dirent_value(v).map_err(|e| record_err("directory entry", k, e))?;
            f(parent, &k[INO_PREFIX_LEN..], child)
        })
    }

    /// Every file's extent list (files with at least one extent), by inode, streamed to `f`.
    /// Holds one file's extents at a time.
    pub fn for_each_extents<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(InodeNo, &[Extent]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut cur: Option<(InodeNo, Vec<Extent>)> = None;
        self.ns_prefix(&[TAG_EXTENTS], |k, v| -> Result<(), E> {
            let ino = keys::key_ino(k).map_err(|e| record_err("extents", k, e))?;
            let part = extent_part_of(k)?;
            if cur.as_ref().is_some_and(|(i, _)| *i != ino) {
                if let Some((i, xs)) = cur.take() {
                    f(i, &xs)?;
                }
            }
            let xs = &mut cur.get_or_insert_with(|| (ino, Vec::new())).1;
            keys::decode_extent_part(part, v, xs).map_err(|e| record_err("extents", k, e))?;
            Ok(())
        })?;
        if let Some((i, xs)) = cur {
            f(i, &xs)?;
        }
        Ok(())
    }

    /// Every chunk of the index, by id, streamed to `f`: the pages' entries merged with the
    /// delta's, the delta winning.
    pub fn for_each_chunk<E: From<MetaError>>(
        &self,
        f: impl FnMut(ChunkId, ChunkEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let delta = self
            .delta
            .chunks
            .iter()
            .map(|(id, (_, e))| (*id, e.as_ref()));
        let mut pages = self
            .pages
            .as_ref()
            .map(|p| p.range(&self.base.chunks, Bound::Unbounded, Bound::Unbounded));
        let next_page = || -> Result<Option<(ChunkId, ChunkEntry)>, MetaError> {
            let Some(it) = pages.as_mut() else {
                return Ok(None);
            };
            match it.next().transpose().map_err(MetaError::from)? {
                None => Ok(None),
                Some((k, v)) => {
                    let id = keys::decode_chunk_key(&k).map_err(|e| record_err("chunk", &k, e))?;
                    let e = keys::decode_chunk_value(&v).map_err(|e| record_err("chunk", &k, e))?;
                    Ok(Some((id, e)))
                }
            }
        };
        let f = std::cell::RefCell::new(f);
        merge(
            next_page,
            delta,
            |id: &ChunkId, d: &ChunkId| id.cmp(d),
            |id, e| (f.borrow_mut())(*id, *e),
            |id, e: &&ChunkEntry| (f.borrow_mut())(*id, **e),
        )
    }

    /// Every chunk some inode's extents reference (orphans included).
    pub fn referenced_chunks(&self) -> Result<HashSet<ChunkId>, MetaError> {
        let mut out = HashSet::new();
        self.for_each_extents(|_, xs| {
            out.extend(xs.iter().map(|x| x.chunk));
            Ok::<(), MetaError>(())
        })?;
        Ok(out)
    }

    /// The snapshot named `name`, ready or not.
    pub fn snapshot_by_name(&self, name: &[u8]) -> Option<(u64, &SnapInfo)> {
        self.snapshots
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, s)| (*id, s))
    }

    /// One path of `ino` (`/` for the root), by its parent records: O(depth) lookups. `None`
    /// for an inode no directory names (unlinked but open, or unknown), for a file whose recorded
    /// link was removed while another remains, or when the metadata cannot be read.
    pub fn path_of(&self, ino: InodeNo) -> Option<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut at = ino;
        while at != InodeNo::ROOT {
            // A directory tree has no cycles, but a damaged state might: give up at a depth no
            // real tree reaches.
            if names.len() > 4096 {
                return None;
            }
            let (parent, name) = self.parent_of(at).ok()??;
            // The record must still be a link: a damaged or stale one names nothing.
            if self.lookup(parent, &name).ok()? != Some(at) {
                return None;
            }
            names.push(name);
            at = parent;
        }
        let mut path = Vec::new();
        for n in names.iter().rev() {
            path.push(b'/');
            path.extend_from_slice(n);
        }
        if path.is_empty() {
            path.push(b'/');
        }
        Some(path)
    }

    // ---- applying ops ----

    /// Apply one op of the record at `lsn`. Applying is total (an op that does not fit the
    /// state is applied as far as it can be) and idempotent (applying a record again gives the
    /// same state), so a record whose apply failed on a read is simply applied again.
    pub fn apply_op(&mut self, lsn: u64, op: &Op) -> Result<(), MetaError> {
        match op {
            Op::PutInode(i) => {
                // Saturating: inode numbers come from disk, and u64::MAX has no successor.
                self.next_ino = self.next_ino.max(i.ino.0.saturating_add(1));
                if !self.has_inode(i.ino)? {
                    self.inodes += 1;
                }
                self.ns_put(
                    lsn,
                    keys::inode_key(i.ino).to_vec(),
                    Some(keys::encode_inode_value(i)),
                );
            }
            Op::DeleteInode(ino) => {
                if self.has_inode(*ino)? {
                    self.inodes = self.inodes.saturating_sub(1);
                }
                self.ns_put(lsn, keys::inode_key(*ino).to_vec(), None);
                self.ns_put(lsn, keys::parent_key(*ino).to_vec(), None);
                self.ns_clear(lsn, keys::ino_prefix(TAG_DIRENT, *ino));
                self.ns_clear(lsn, keys::ino_prefix(TAG_EXTENTS, *ino));
            }
            Op::Link { parent, name, ino } => {
                self.ns_put(
                    lsn,
                    keys::dirent_key(*parent, name),
                    Some(keys::encode_dirent_value(*ino)),
                );
                self.ns_put(
                    lsn,
                    keys::parent_key(*ino).to_vec(),
                    Some(keys::encode_parent_value(*parent, name)),
                );
            }
            Op::Unlink { parent, name } => {
                if let Some(child) = self.lookup(*parent, name)? {
                    if self.parent_of(child)? == Some((*parent, name.clone())) {
                        self.ns_put(lsn, keys::parent_key(child).to_vec(), None);
                    }
                }
                self.ns_put(lsn, keys::dirent_key(*parent, name), None);
            }
            Op::SetExtents { ino, extents } => {
                self.ns_clear(lsn, keys::ino_prefix(TAG_EXTENTS, *ino));
                for (part, v) in keys::encode_extent_parts(extents) {
                    self.ns_put(lsn, keys::extents_key(*ino, part).to_vec(), Some(v));
                }
            }
            Op::AddChunk { id, entry } => {
                if self.chunk(*id)?.is_none() {
                    self.chunk_count += 1;
                }
                if let Some(p) = self.presence.get() {
                    p.insert(*id);
                }
                self.delta.chunks.insert(*id, (lsn, Some(*entry)));
            }
            Op::RemoveChunk { id } => {
                if self.chunk(*id)?.is_some() {
                    self.chunk_count = self.chunk_count.saturating_sub(1);
                }
                self.delta.chunks.insert(*id, (lsn, None));
            }
            Op::SnapshotBegin { id, name, time } => {
                self.snapshots.insert(
                    *id,
                    SnapInfo {
                        name: name.clone(),
                        time: *time,
                        ready: false,
                        root: None,
                    },
                );
            }
            Op::SnapshotReady { id, root } => {
                let root = Root::decode(root).map_err(|e| MetaError::Record {
                    what: "snapshot root".into(),
                    key: format!("snapshot {id:016x}"),
                    reason: e.to_string(),
                })?;
                if let Some(s) = self.snapshots.get_mut(id) {
                    s.ready = true;
                    s.root = Some(root);
                }
            }
            Op::SnapshotDrop { id } => {
                self.snapshots.remove(id);
            }
        }
        Ok(())
    }

    /// A state built from these ops alone, in memory (tests, tools).
    pub fn from_ops(ops: &[Op]) -> Result<MetaState, MetaError> {
        let mut s = MetaState::default();
        for op in ops {
            s.apply_op(1, op)?;
        }
        Ok(s)
    }

    // ---- writing pages ----

    /// Write the delta into new pages (only the paths to changed keys; everything else is
    /// shared with the current roots) and return the new roots, without changing this state.
    /// The page file is durable and published before this returns. With an empty delta no
    /// file is written and the roots are the current ones. When the files under the live
    /// trees are spread too thin and GC asked for it, both trees are written from scratch
    /// instead (`compact.rs`).
    pub fn write_pages(&self) -> Result<(Roots, u64), MetaError> {
        if self.delta.is_empty() {
            return Ok((self.base, 0));
        }
        let pages = self.pages.as_ref().ok_or_else(|| {
            MetaError::Tree(TreeError::InvalidInput {
                reason: "an in-memory state has no page store to write to".into(),
            })
        })?;
        if pages.take_rebuild_request() {
            return self.rebuild_pages();
        }
        let mut ns: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for prefix in self.delta.cleared.keys() {
            for item in pages.prefix(&self.base.namespace, prefix) {
                let (k, _) = item.map_err(MetaError::from)?;
                ns.insert(k, None);
            }
        }
        for (k, (_, v)) in &self.delta.ns {
            ns.insert(k.clone(), v.clone());
        }
        let ns_edits: Vec<(Vec<u8>, Option<Vec<u8>>)> = ns.into_iter().collect();
        let chunk_edits: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .delta
            .chunks
            .iter()
            .map(|(id, (_, e))| {
                (
                    keys::chunk_key(*id).to_vec(),
                    e.as_ref().map(keys::encode_chunk_value),
                )
            })
            .collect();
        let mut w = PageWriter::new(pages).map_err(MetaError::from)?;
        let namespace = pages
            .apply(&self.base.namespace, &ns_edits, &mut w)
            .map_err(MetaError::from)?;
        let chunks = pages
            .apply(&self.base.chunks, &chunk_edits, &mut w)
            .map_err(MetaError::from)?;
        let bytes = w.bytes_written();
        w.finish().map_err(MetaError::from)?;
        Ok((Roots { namespace, chunks }, bytes))
    }

    /// Rest on `roots`, the state at `lsn` (a published checkpoint): drop every change of the
    /// records up to `lsn`, which the roots hold.
    fn rest_on(&mut self, roots: Roots, lsn: u64) {
        if lsn < self.base_lsn {
            return;
        }
        self.base = roots;
        self.base_lsn = lsn;
        self.delta.ns.retain(|_, (l, _)| *l > lsn);
        self.delta.cleared.retain(|_, l| *l > lsn);
        self.delta.chunks.retain(|_, (l, _)| *l > lsn);
    }

    fn body(&self, roots: Roots) -> Body {
        Body {
            namespace: roots.namespace.encode().to_vec(),
            chunks: roots.chunks.encode().to_vec(),
            next_ino: self.next_ino,
            inodes: self.inodes,
            chunk_count: self.chunk_count,
            snapshots: self
                .snapshots
                .iter()
                .map(|(id, s)| SnapRecord {
                    id: *id,
                    name: s.name.clone(),
                    time: s.time,
                    root: s.root.map(|r| r.encode().to_vec()),
                })
                .collect(),
        }
    }
}

/// Merge the pages' entries (`next_page`, in key order) with the delta's (`delta`, in key order;
/// `None` a deletion), the delta winning on equal keys: `on_page` gets a page entry no delta
/// entry replaces, `on_delta` a delta entry that sets a value.
fn merge<K, V, DK, DV, E>(
    mut next_page: impl FnMut() -> Result<Option<(K, V)>, MetaError>,
    mut delta: impl Iterator<Item = (DK, Option<DV>)>,
    cmp: impl Fn(&K, &DK) -> std::cmp::Ordering,
    mut on_page: impl FnMut(&K, &V) -> Result<(), E>,
    mut on_delta: impl FnMut(&DK, &DV) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<MetaError>,
{
    use std::cmp::Ordering;
    let mut b = next_page()?;
    let mut d = delta.next();
    loop {
        let take_delta = match (&b, &d) {
            (None, None) => return Ok(()),
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((bk, _)), Some((dk, _))) => match cmp(bk, dk) {
                Ordering::Equal => {
                    b = next_page()?;
                    true
                }
                Ordering::Greater => true,
                Ordering::Less => false,
            },
        };
        if take_delta {
            if let Some((k, Some(v))) = &d {
                on_delta(k, v)?;
            }
            d = delta.next();
        } else {
            if let Some((k, v)) = &b {
                on_page(k, v)?;
            }
            b = next_page()?;
        }
    }
}

/// The part number in an `x` key.
fn extent_part_of(k: &[u8]) -> Result<u32, MetaError> {
    k.get(INO_PREFIX_LEN..)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| MetaError::Record {
            what: "extents".into(),
            key: hex::encode(k),
            reason: "key has no part number".into(),
        })
}

fn decode_roots(b: &Body) -> Result<Roots, String> {
    Ok(Roots {
        namespace: Root::decode(&b.namespace).map_err(|e| format!("namespace root: {e}"))?,
        chunks: Root::decode(&b.chunks).map_err(|e| format!("chunk index root: {e}"))?,
    })
}

impl StateMachine for MetaState {
    type Ctx = PagesCtx;

    fn empty(ctx: &PagesCtx) -> Self {
        // The root directory exists in every store from lsn 0 on; its attributes are replaced by
        // the first record `init` writes.
        let mut s = MetaState {
            pages: ctx.clone(),
            ..MetaState::default()
        };
        // Fixed attributes, so every process derives the same state from the same (empty) log.
        let mut root = Inode::new(InodeNo::ROOT, FileKind::Dir, 0o755);
        (root.uid, root.gid) = (0, 0);
        root.atime = Timestamp::default();
        root.mtime = root.atime;
        root.ctime = root.atime;
        s.inodes = 1;
        s.ns_put(
            0,
            keys::inode_key(InodeNo::ROOT).to_vec(),
            Some(keys::encode_inode_value(&root)),
        );
        s
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        for op in enc::decode_ops(payload).map_err(|e| e.reason)? {
            self.apply_op(lsn.0, &op).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn encode_checkpoint(&self, _lsn: Lsn) -> Result<Vec<u8>, String> {
        let (roots, _) = self.write_pages().map_err(|e| e.to_string())?;
        Ok(keys::encode_body(&self.body(roots)))
    }

    fn decode_checkpoint(ctx: &PagesCtx, lsn: Lsn, bytes: &[u8]) -> Result<Self, String> {
        let b = keys::decode_body(bytes).map_err(|e| e.to_string())?;
        let roots = decode_roots(&b)?;
        let mut snapshots = BTreeMap::new();
        for s in &b.snapshots {
            let root = match &s.root {
                Some(r) => Some(
                    Root::decode(r).map_err(|e| format!("root of snapshot {:016x}: {e}", s.id))?,
                ),
                None => None,
            };
            snapshots.insert(
                s.id,
                SnapInfo {
                    name: s.name.clone(),
                    time: s.time,
                    ready: root.is_some(),
                    root,
                },
            );
        }
        Ok(MetaState {
            pages: ctx.clone(),
            base: roots,
            base_lsn: lsn.0,
            delta: Delta::default(),
            snapshots,
            next_ino: b.next_ino.max(2),
            inodes: b.inodes,
            chunk_count: b.chunk_count,
            delta_limit: DEFAULT_DELTA_LIMIT,
            presence: OnceLock::new(),
        })
    }

    fn checkpointed(&mut self, lsn: Lsn, body: &[u8]) -> Result<(), String> {
        let b = keys::decode_body(body).map_err(|e| e.to_string())?;
        let roots = decode_roots(&b)?;
        self.rest_on(roots, lsn.0);
        Ok(())
    }

    fn wants_rebase(&self) -> bool {
        self.delta.len() > self.delta_limit
    }
}
