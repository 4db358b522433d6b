//! Copy-on-write snapshots (`data-layout.md`, 5.9).
//!
//! A snapshot is the namespace tree at one log position, named by the root of its pages
//! (`meta::tree`): it shares every unchanged page with the live tree and with other snapshots,
//! and its files reference the same chunks as the live files did (GC keeps every chunk a
//! snapshot references). Creation costs the pages of what changed since the checkpoint the live
//! state rests on, not a walk of the tree:
//!
//! 1. Barrier: a two-phase commit `snapshot-barrier`; every live process commits its unflushed
//!    writes before it votes ([SNAP-2]), so what any process had written before the command
//!    started is in the snapshot.
//! 2. Journal `snapshot <id>`, then one commit that appends `SnapshotBegin` and, under the log
//!    lock, takes a copy of the state that record is appended to ([SNAP-1]): a file is in it
//!    whole or not at all, because every file change is one record.
//! 3. The copy's changes are written as pages (durable before the next step), then
//!    `SnapshotReady` with the root is committed and synced. A creator that dies before leaves a
//!    snapshot that is not ready: `verfs recover` drops it ([SNAP-3]); GC stage 1 waits while
//!    one exists. Pages written for a snapshot that never got ready are garbage.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::Arc;
use std::time::Instant;

use verfs_coordination::two_phase;

use crate::error::Error;
use crate::ids::{ChunkId, InodeNo};
use crate::kinds::PROPOSAL_SNAPSHOT;
use crate::meta::{
    components, show_path, Entry, FileKind, Inode, MetaState, Op, Timestamp, Tx, NAME_MAX,
    SNAPSHOTS_DIR,
};
use crate::store::Store;

/// Compatibility path (issue 12): the name now lives in `kinds`.
pub use crate::kinds::ACTION_SNAPSHOT;

/// [SNAP-6]: a snapshot name is one path component: 1-255 bytes, no `/`, NUL, `.` or `..`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::Snapshot {
        name: name.to_string(),
        reason: reason.into(),
    };
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.len() > NAME_MAX {
        return Err(bad("the name is longer than 255 bytes"));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(bad(
            "the name must be one path component (no '/', not '.' or '..')",
        ));
    }
    Ok(())
}

/// `/.snapshots/NAME/REST` -> (NAME, "/REST"); `/.snapshots` -> ("", "/"). None for live paths.
pub fn split_path<P: AsRef<[u8]> + ?Sized>(path: &P) -> Option<(String, Vec<u8>)> {
    let comps = components(path).ok()?;
    let (first, rest) = comps.split_first()?;
    if *first != SNAPSHOTS_DIR.as_bytes() {
        return None;
    }
    let Some((name, rest)) = rest.split_first() else {
        return Some((String::new(), b"/".to_vec()));
    };
    let mut r = Vec::new();
    for c in rest {
        r.push(b'/');
        r.extend_from_slice(c);
    }
    if r.is_empty() {
        r.push(b'/');
    }
    Some((String::from_utf8_lossy(name).into_owned(), r))
}

/// What `verfs snapshot create` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Created {
    pub name: String,
    pub id: String,
    pub inodes: u64,
    pub file_bytes: u64,
    /// Time of the barrier (every process flushed), then of writing the snapshot.
    pub barrier_ms: u64,
    pub write_ms: u64,
}

/// How a path differs between two trees (`verfs snapshot diff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

impl ChangeKind {
    /// `A`, `D` or `M`, as `git diff --name-status` prints them.
    pub fn letter(&self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Removed => 'D',
            ChangeKind::Modified => 'M',
        }
    }
}

/// One changed path of `verfs snapshot diff`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
}

/// One line of `verfs snapshot list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub name: String,
    pub id: String,
    /// Seconds since the epoch.
    pub time: i64,
    pub ready: bool,
    pub files: u64,
    /// Sum of the sizes of its regular files.
    pub logical_bytes: u64,
    /// Stored (compressed) bytes of chunks that no other snapshot and no live file references:
    /// what deleting it (then GC) frees.
    pub exclusive_bytes: u64,
}

/// What `verfs snapshot restore` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Restored {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
}

impl Store {
    /// The snapshots in the metadata, ready or not, by name.
    pub fn snapshots(&self) -> Result<BTreeMap<String, (u64, crate::meta::SnapInfo)>, Error> {
        self.read(|s| {
            s.snapshots
                .iter()
                .map(|(id, i)| {
                    (
                        String::from_utf8_lossy(&i.name).into_owned(),
                        (*id, i.clone()),
                    )
                })
                .collect()
        })
    }

    /// A ready snapshot's id by name.
    pub fn snapshot_id(&self, name: &str) -> Result<u64, Error> {
        let not_found = || Error::Snapshot {
            name: name.into(),
            reason: "no such snapshot".into(),
        };
        match self.read(|s| {
            s.snapshot_by_name(name.as_bytes())
                .map(|(id, i)| (id, i.ready))
        })? {
            Some((id, true)) => Ok(id),
            Some((_, false)) => Err(Error::Snapshot {
                name: name.into(),
                reason: "is still being created (or its creator died: run `verfs recover`)".into(),
            }),
            None => Err(not_found()),
        }
    }

    /// A snapshot's tree (cached; snapshot files never change).
    pub fn snapshot_tree(&self, id: u64) -> Result<Arc<MetaState>, Error> {
        use crate::pipeline::Stats;
        if let Some(t) = self.snap_cache.get(&id) {
            Stats::add(&self.stats.snapshot_cache_hits, 1);
            return Ok(t);
        }
        Stats::add(&self.stats.snapshot_cache_misses, 1);
        let root = self
            .read(|s| s.snapshots.get(&id).and_then(|i| i.root))?
            .ok_or_else(|| Error::Snapshot {
                name: format!("{id:016x}"),
                reason: "no such snapshot, or it is not ready".into(),
            })?;
        let t = Arc::new(MetaState::snapshot_tree(self.pages(), root));
        self.snap_cache.insert(id, t.clone());
        Ok(t)
    }

    /// Run `f` on the tree a store path is in: a snapshot's for `/.snapshots/NAME/...` (with the
    /// path inside it), else the live tree.
    pub fn view<R>(&self, path: &[u8], f: impl FnOnce(&MetaState, &[u8]) -> R) -> Result<R, Error> {
        match split_path(path) {
            None => self.read(|s| f(s, path)),
            Some((name, _)) if name.is_empty() => Err(Error::InvalidPath {
                path: show_path(path),
                reason: "the list of snapshots: use `verfs snapshot list`".into(),
            }),
            Some((name, rest)) => {
                let tree = self.snapshot_tree(self.snapshot_id(&name)?)?;
                Ok(f(&tree, &rest))
            }
        }
    }

    /// `verfs snapshot create NAME`.
    pub fn snapshot_create(&self, name: &str) -> Result<Created, Error> {
        check_name(name)?;
        if self.read(|s| s.snapshot_by_name(name.as_bytes()).is_some())? {
            return Err(Error::Snapshot {
                name: name.into(),
                reason: "a snapshot of that name exists".into(),
            });
        }
        let t0 = Instant::now();
        // [SNAP-2]: every live process commits what it has written, then votes.
        let outcome = self.propose(PROPOSAL_SNAPSHOT, serde_json::json!({ "name": name }))?;
        two_phase::finish(&self.layout().twopc(), &outcome.txn).map_err(Error::coordination)?;
        if let two_phase::Decision::Abort { reason } = outcome.decision {
            return Err(Error::Snapshot {
                name: name.into(),
                reason: format!("the barrier was refused: {reason}"),
            });
        }
        if let Some(h) = self
            .voter
            .barrier_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h().map_err(|reason| Error::Snapshot {
                name: name.into(),
                reason,
            })?;
        }
        let barrier_ms = t0.elapsed().as_millis() as u64;
        let t1 = Instant::now();
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !self.read(|s| s.snapshots.contains_key(&id))? {
                break id;
            }
        };
        let action = self
            .journal
            .begin(ACTION_SNAPSHOT, format!("{id:016x}").as_bytes())
            .map_err(Error::coordination)?;
        let result = (|| {
            // [SNAP-1]: the state is copied under the log lock from the state the Begin record
            // is appended to, so it is exactly the tree at that point of the log.
            let state = self.transact(false, |tx| {
                if tx.base().snapshot_by_name(name.as_bytes()).is_some() {
                    return Err(Error::Snapshot {
                        name: name.into(),
                        reason: "a snapshot of that name exists".into(),
                    });
                }
                let state = tx.base().clone();
                tx.snapshot_op(Op::SnapshotBegin {
                    id,
                    name: name.as_bytes().to_vec(),
                    time: Timestamp::now(),
                });
                Ok(state)
            })?;
            crate::failpoint::crash_point("snapshot-begun");
            // Durable before the root is committed: pages first, then the record, both under
            // `meta-pages` in PR so that the page sweep sees both or neither ([META-4]).
            self.with_pages_held(|| {
                let (roots, bytes) = state.write_pages()?;
                crate::failpoint::crash_point("snapshot-written");
                let root = roots.namespace.encode().to_vec();
                self.transact(true, |tx| {
                    if !tx.base().snapshots.contains_key(&id) {
                        return Err(Error::Snapshot {
                        name: name.into(),
                        reason:
                            "dropped while it was being written (this process was presumed dead)"
                                .into(),
                    });
                    }
                    tx.snapshot_op(Op::SnapshotReady { id, root });
                    Ok(())
                })?;
                Ok((bytes, state.inode_count()))
            })
        })();
        let (file_bytes, inodes) = match result {
            Ok(r) => r,
            Err(e) => {
                // Undo what is ours to undo. If that fails too, the journal action stays, and
                // `verfs recover` drops the snapshot once this process is gone ([SNAP-3]).
                let undone = self.transact(true, |tx| {
                    if tx.base().snapshots.get(&id).is_some_and(|s| !s.ready) {
                        tx.snapshot_op(Op::SnapshotDrop { id });
                    }
                    Ok(())
                });
                if undone.is_ok() {
                    let _ = self.journal.end(action);
                }
                return Err(e);
            }
        };
        self.journal.end(action).map_err(Error::coordination)?;
        Ok(Created {
            name: name.into(),
            id: format!("{id:016x}"),
            inodes,
            file_bytes,
            barrier_ms,
            write_ms: t1.elapsed().as_millis() as u64,
        })
    }

    /// `verfs snapshot delete NAME`: forget it (durably), then remove its file. Its chunks are
    /// reclaimed by the next GC.
    pub fn snapshot_delete(&self, name: &str) -> Result<(), Error> {
        let id = self.snapshot_id(name)?;
        self.transact(true, |tx| {
            if !tx.base().snapshots.contains_key(&id) {
                return Err(Error::Snapshot {
                    name: name.into(),
                    reason: "no such snapshot (deleted meanwhile)".into(),
                });
            }
            tx.snapshot_op(Op::SnapshotDrop { id });
            Ok(())
        })?;
        self.snap_cache.invalidate(&id);
        Ok(())
    }

    /// `verfs snapshot diff A B`: every path added, removed or modified (attributes or data) from
    /// tree A to tree B, sorted by path. `/` names the live tree (its changes since its checkpoint
    /// are written as pages first, which the next page sweep removes). Compares the two
    /// namespace trees page by page and skips every subtree whose content hash is equal in both,
    /// so the cost is the changed pages times the depth, not the size of the trees.
    pub fn snapshot_diff(&self, a: &str, b: &str) -> Result<Vec<Change>, Error> {
        use crate::format::keys::{self, INO_PREFIX_LEN, TAG_DIRENT, TAG_EXTENTS, TAG_INODE};
        use std::ops::ControlFlow;
        // The live tree's pages exist only while `meta-pages` is held ([META-4]).
        self.with_pages_held(|| {
            let ta = self.diff_side(a)?;
            let tb = self.diff_side(b)?;
            let mut raw: Vec<(Vec<u8>, bool, bool)> = Vec::new();
            self.pages()
                .diff(
                    &ta.base().0.namespace,
                    &tb.base().0.namespace,
                    |k, old, new| {
                        raw.push((k.to_vec(), old.is_some(), new.is_some()));
                        ControlFlow::Continue(())
                    },
                )
                .map_err(crate::meta::MetaError::from)?;
            let show = |t: &MetaState, ino: InodeNo| -> String {
                t.path_of(ino)
                    .map(|p| show_path(&p))
                    .unwrap_or_else(|| format!("inode {ino}"))
            };
            let join = |dir: String, name: &[u8]| -> String {
                format!("{}/{}", dir.trim_end_matches('/'), show_path(name))
            };
            let mut out: BTreeMap<String, ChangeKind> = BTreeMap::new();
            for (k, old, new) in raw {
                let Ok(ino) = keys::key_ino(&k) else { continue };
                match k[0] {
                    TAG_DIRENT => {
                        let name = &k[INO_PREFIX_LEN..];
                        let (kind, path) = match (old, new) {
                            (false, true) => (ChangeKind::Added, join(show(&tb, ino), name)),
                            (true, false) => (ChangeKind::Removed, join(show(&ta, ino), name)),
                            _ => (ChangeKind::Modified, join(show(&tb, ino), name)),
                        };
                        out.insert(path, kind);
                    }
                    TAG_INODE | TAG_EXTENTS => {
                        // Created or deleted inodes are reported through their entries.
                        if ta.has_inode(ino)? && tb.has_inode(ino)? {
                            if let Some(p) = tb.path_of(ino) {
                                out.entry(show_path(&p)).or_insert(ChangeKind::Modified);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(out
                .into_iter()
                .map(|(path, kind)| Change { kind, path })
                .collect())
        })
    }

    /// A side of a diff: a ready snapshot's tree, or (`/`) the live tree written as pages.
    fn diff_side(&self, name: &str) -> Result<Arc<MetaState>, Error> {
        if name == "/" {
            let state = self.read(|s| s.clone())?;
            let (roots, _) = state.write_pages()?;
            return Ok(Arc::new(MetaState::snapshot_tree(
                self.pages(),
                roots.namespace,
            )));
        }
        self.snapshot_tree(self.snapshot_id(name)?)
    }

    /// `verfs snapshot list`: every snapshot with its sizes.
    pub fn snapshot_list(&self) -> Result<Vec<Summary>, Error> {
        let snaps = self.snapshots()?;
        let mut trees: Vec<(String, u64, crate::meta::SnapInfo, Option<Arc<MetaState>>)> =
            Vec::new();
        for (name, (id, info)) in snaps {
            let tree = if info.ready {
                Some(self.snapshot_tree(id)?)
            } else {
                None
            };
            trees.push((name, id, info, tree));
        }
        // How many trees (live + snapshots) reference each chunk.
        let (live, index) = self.read(|s| -> Result<_, Error> {
            let mut index = HashMap::new();
            s.for_each_chunk(|c, e| -> Result<(), Error> {
                index.insert(c, e);
                Ok(())
            })?;
            Ok((s.referenced_chunks()?, index))
        })??;
        let mut refs: HashMap<ChunkId, u32> = HashMap::new();
        for c in &live {
            *refs.entry(*c).or_default() += 1;
        }
        let mut sets: Vec<Option<HashSet<ChunkId>>> = Vec::new();
        for t in &trees {
            sets.push(match &t.3 {
                Some(tr) => Some(tr.referenced_chunks()?),
                None => None,
            });
        }
        for set in sets.iter().flatten() {
            for c in set {
                *refs.entry(*c).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for ((name, id, info, tree), set) in trees.into_iter().zip(sets) {
            let (mut files, mut logical, mut exclusive) = (0u64, 0u64, 0u64);
            if let Some(tree) = &tree {
                tree.for_each_inode(|i| -> Result<(), Error> {
                    if i.kind == FileKind::File {
                        files += 1;
                        logical += i.size;
                    }
                    Ok(())
                })?;
            }
            for c in set.iter().flatten() {
                if refs.get(c) == Some(&1) {
                    if let Some(e) = index.get(c) {
                        exclusive += self.stored_len(*c, e.pack).unwrap_or(e.raw_len as u64);
                    }
                }
            }
            out.push(Summary {
                name,
                id: format!("{id:016x}"),
                time: info.time.secs,
                ready: info.ready,
                files,
                logical_bytes: logical,
                exclusive_bytes: exclusive,
            });
        }
        out.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
        Ok(out)
    }

    /// `verfs snapshot restore NAME PATH DEST`: copy `PATH` of the snapshot into the live tree at
    /// `DEST` (into it, if it is a directory), sharing every chunk: no data is copied. Hard links
    /// inside the copied tree stay hard links. One transaction: all or nothing.
    pub fn snapshot_restore(
        &self,
        name: &str,
        path: &(impl AsRef<[u8]> + ?Sized),
        dest: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Restored, Error> {
        let (path, dest) = (path.as_ref(), dest.as_ref());
        let id = self.snapshot_id(name)?;
        let tree = self.snapshot_tree(id)?;
        let src_root = Tx::new(&tree).resolve(path)?;
        let src_name = components(path)?.last().map(|c| c.to_vec());
        let mut report = Restored::default();
        self.transact(true, |tx| {
            // The snapshot must still exist when the references are taken: while it does, GC
            // keeps every chunk it references ([GC-2]).
            if !tx.base().snapshots.get(&id).is_some_and(|s| s.ready) {
                return Err(Error::Snapshot {
                    name: name.into(),
                    reason: "deleted meanwhile".into(),
                });
            }
            let dest_ino = tx.resolve(dest).ok();
            let dest_is_dir = match dest_ino {
                Some(i) => tx.inode(i)?.is_some_and(|i| i.kind == FileKind::Dir),
                None => false,
            };
            let (at, at_path) = if dest_is_dir {
                let Some(n) = &src_name else {
                    return Err(Error::Exists {
                        path: show_path(dest),
                    });
                };
                let p = format!("{}/{}", show_path(dest).trim_end_matches('/'), show_path(n));
                let parent = dest_ino.unwrap_or(InodeNo::ROOT);
                (
                    Entry {
                        parent,
                        name: n.clone(),
                    },
                    p,
                )
            } else {
                (tx.entry(dest)?, show_path(dest))
            };
            let mut map: HashMap<InodeNo, InodeNo> = HashMap::new();
            copy_in(tx, &tree, src_root, &at, &at_path, &mut map, &mut report)
        })?;
        Ok(report)
    }

    /// Stored length of chunk `id`'s record in `pack` (reads the pack's index).
    pub(crate) fn stored_len(&self, id: ChunkId, pack: crate::ids::PackId) -> Option<u64> {
        let r = self.reader(pack).ok()?;
        r.stored_len(id).ok().flatten().map(u64::from)
    }
}

/// Copy inode `src` of `tree` (and its subtree) to the free entry `at` of the live tree.
fn copy_in(
    tx: &mut Tx<'_>,
    tree: &MetaState,
    src: InodeNo,
    at: &Entry,
    path: &str,
    map: &mut HashMap<InodeNo, InodeNo>,
    report: &mut Restored,
) -> Result<(), Error> {
    let inode = tree
        .inode(src)?
        .ok_or_else(|| Error::NotFound { path: path.into() })?;
    if inode.kind != FileKind::Dir {
        if let Some(done) = map.get(&src) {
            return tx.link(*done, path, at, path);
        }
    }
    let proto = Inode {
        ino: InodeNo(0),
        nlink: 0,
        ..inode.clone()
    };
    let ino = tx.create(at, path, proto)?;
    // `create` sets the attributes of `proto` but counts links itself; times are the snapshot's.
    if let Some(mut i) = tx.inode(ino)? {
        i.atime = inode.atime;
        i.mtime = inode.mtime;
        i.ctime = Timestamp::now();
        tx.put_inode(i);
    }
    map.insert(src, ino);
    match inode.kind {
        FileKind::Dir => {
            report.dirs += 1;
            for (name, child) in tree.entries(src)? {
                let cat = Entry {
                    parent: ino,
                    name: name.clone(),
                };
                let cpath = format!(
                    "{}/{}",
                    path.trim_end_matches('/'),
                    String::from_utf8_lossy(&name)
                );
                copy_in(tx, tree, child, &cat, &cpath, map, report)?;
            }
            // Children changed the directory's times; restore the snapshot's.
            if let Some(mut i) = tx.inode(ino)? {
                i.mtime = inode.mtime;
                i.atime = inode.atime;
                tx.put_inode(i);
            }
        }
        FileKind::File => {
            report.files += 1;
            report.bytes += inode.size;
            let x = tree.extents(src)?;
            if !x.is_empty() {
                tx.set_extents(ino, x);
            }
        }
        _ => report.others += 1,
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use crate::meta::Extent;

    fn tree(pages: &Arc<crate::meta::tree::PageStore>) -> MetaState {
        use verfs_coordination::txlog::StateMachine;
        let mut s = MetaState::empty(&Some(pages.clone()));
        let mut f = Inode::new(InodeNo(2), FileKind::File, 0o644);
        f.size = 10;
        s.apply_op(1, &Op::PutInode(f)).unwrap();
        s.apply_op(
            1,
            &Op::Link {
                parent: InodeNo::ROOT,
                name: b"f".to_vec(),
                ino: InodeNo(2),
            },
        )
        .unwrap();
        s.apply_op(
            1,
            &Op::SetExtents {
                ino: InodeNo(2),
                extents: vec![Extent {
                    file_off: 0,
                    chunk: ChunkId(42),
                    chunk_off: 0,
                    len: 10,
                }],
            },
        )
        .unwrap();
        s
    }

    // proves [SNAP-4]
    #[test]
    fn a_snapshot_tree_is_its_root_and_damage_in_its_pages_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let pages = Arc::new(crate::meta::tree::PageStore::open(dir.path(), 1 << 20).unwrap());
        let s = tree(&pages);
        let (roots, bytes) = s.write_pages().unwrap();
        assert!(bytes > 0);
        let t = MetaState::snapshot_tree(&pages, roots.namespace);
        assert_eq!(t.lookup(InodeNo::ROOT, b"f").unwrap(), Some(InodeNo(2)));
        assert_eq!(t.inode(InodeNo(2)).unwrap().unwrap().size, 10);
        assert_eq!(
            t.referenced_chunks().unwrap(),
            [ChunkId(42)].into_iter().collect()
        );
        // Nothing changed: the same roots, no new page file.
        let again = MetaState::snapshot_tree(&pages, roots.namespace);
        assert_eq!(again.write_pages().unwrap(), (roots, 0));
        // A flipped byte in the page file: a fresh reader (no cache) gets Corrupt, no panic.
        let id = pages.list_files().unwrap()[0];
        let path = pages.file_path(id);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 10;
        b[last] ^= 0x40;
        std::fs::write(&path, &b).unwrap();
        let fresh = Arc::new(crate::meta::tree::PageStore::open(dir.path(), 1 << 20).unwrap());
        let t = MetaState::snapshot_tree(&fresh, roots.namespace);
        let e = t.inode(InodeNo(2)).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(split_path("/a/b"), None);
        assert_eq!(split_path("/.snapshots"), Some((String::new(), "/".into())));
        assert_eq!(
            split_path("/.snapshots/s1/d/f"),
            Some(("s1".into(), "/d/f".into()))
        );
        assert_eq!(
            split_path("/.snapshots/s1"),
            Some(("s1".into(), "/".into()))
        );
        assert!(check_name("ok-name").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
