//! [`Tx`]: the validated builder of one log record. Every step is checked against the base
//! state plus the transaction's own earlier steps, so a committed record never breaks the
//! namespace rules (link counts, directories, orphans, [SNAP-5]).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::Error;
use crate::format::meta as enc;
use crate::ids::{ChunkId, InodeNo};
use crate::model::{
    components, show_path, ChunkEntry, Entry, Extent, FileKind, Inode, Op, Timestamp, SNAPSHOTS_DIR,
};

use super::MetaState;

/// A transaction under construction: validated against `base` plus its own earlier ops.
pub struct Tx<'a> {
    base: &'a MetaState,
    inodes: HashMap<InodeNo, Option<Inode>>,
    entries: HashMap<(InodeNo, Vec<u8>), Option<InodeNo>>,
    extents: HashMap<InodeNo, Vec<Extent>>,
    /// Parent of each inode this transaction linked (or deleted: `None`).
    parents: HashMap<InodeNo, Option<InodeNo>>,
    added_chunks: HashSet<ChunkId>,
    next_ino: u64,
    ops: Vec<Op>,
    /// Inodes open in the committing process: losing their last link keeps them as orphans
    /// (nlink 0) until the last close, instead of deleting them.
    pub keep_open: HashSet<InodeNo>,
    /// Regular-file inodes this transaction turned into orphans.
    pub orphaned: Vec<InodeNo>,
}

/// [SNAP-5]: nothing below `/.snapshots/NAME` can be changed (a mount shows snapshots there; the
/// live tree has no such entry). Checked where every path-based change names its target, so the
/// error says why instead of "not found".
fn check_writable(path: &[u8], comps: &[&[u8]]) -> Result<(), Error> {
    if comps.len() >= 2 && comps[0] == SNAPSHOTS_DIR.as_bytes() {
        return Err(Error::ReadOnly {
            path: show_path(path),
            reason: "a snapshot never changes; `verfs snapshot restore` copies out of one".into(),
        });
    }
    Ok(())
}

impl<'a> Tx<'a> {
    pub fn new(base: &'a MetaState) -> Tx<'a> {
        Tx {
            base,
            inodes: HashMap::new(),
            entries: HashMap::new(),
            extents: HashMap::new(),
            parents: HashMap::new(),
            added_chunks: HashSet::new(),
            next_ino: base.next_ino,
            ops: Vec::new(),
            keep_open: HashSet::new(),
            orphaned: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, and the encoded log payload.
    pub fn finish(self) -> Vec<u8> {
        enc::encode_ops(&self.ops)
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn inode(&self, ino: InodeNo) -> Result<Option<Inode>, Error> {
        match self.inodes.get(&ino) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.base.inode(ino)?),
        }
    }

    /// The kind of inode `ino`, if it exists.
    fn kind(&self, ino: InodeNo) -> Result<Option<FileKind>, Error> {
        Ok(self.inode(ino)?.map(|i| i.kind))
    }

    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, Error> {
        match self.entries.get(&(parent, name.to_vec())) {
            Some(v) => Ok(*v),
            None => Ok(self.base.lookup(parent, name)?),
        }
    }

    /// A file's extents, with this transaction's changes.
    pub fn extents(&self, ino: InodeNo) -> Result<Vec<Extent>, Error> {
        match self.extents.get(&ino) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.base.extents(ino)?),
        }
    }

    /// Did this transaction add `id` to the index?
    pub fn added(&self, id: ChunkId) -> bool {
        self.added_chunks.contains(&id)
    }

    pub fn has_chunk(&self, id: ChunkId) -> Result<bool, Error> {
        Ok(self.added_chunks.contains(&id) || self.base.chunk(id)?.is_some())
    }

    /// Children of a directory, with this transaction's changes.
    pub fn children(&self, dir: InodeNo) -> Result<BTreeMap<Vec<u8>, InodeNo>, Error> {
        let mut out: BTreeMap<Vec<u8>, InodeNo> = self.base.entries(dir)?.into_iter().collect();
        for ((p, name), v) in &self.entries {
            if *p == dir {
                match v {
                    Some(ino) => out.insert(name.clone(), *ino),
                    None => out.remove(name),
                };
            }
        }
        Ok(out)
    }

    /// Does a directory have any entry, with this transaction's changes? Reads at most the
    /// entries this transaction touched plus the directory's first ones.
    fn has_children(&self, dir: InodeNo) -> Result<bool, Error> {
        if self
            .entries
            .iter()
            .any(|((p, _), v)| *p == dir && v.is_some())
        {
            return Ok(true);
        }
        let removed = self
            .entries
            .iter()
            .filter(|((p, _), v)| *p == dir && v.is_none())
            .count();
        if removed == 0 {
            return Ok(self.base.has_entries(dir)?);
        }
        Ok(!self.children(dir)?.is_empty())
    }

    fn push(&mut self, op: Op) {
        match &op {
            Op::PutInode(i) => {
                self.inodes.insert(i.ino, Some(i.clone()));
            }
            Op::DeleteInode(ino) => {
                self.inodes.insert(*ino, None);
                self.extents.insert(*ino, Vec::new());
                self.parents.insert(*ino, None);
            }
            Op::Link { parent, name, ino } => {
                self.entries.insert((*parent, name.clone()), Some(*ino));
                self.parents.insert(*ino, Some(*parent));
            }
            Op::Unlink { parent, name } => {
                self.entries.insert((*parent, name.clone()), None);
            }
            Op::SetExtents { ino, extents } => {
                self.extents.insert(*ino, extents.clone());
            }
            Op::AddChunk { id, .. } => {
                self.added_chunks.insert(*id);
            }
            Op::RemoveChunk { .. }
            | Op::SnapshotBegin { .. }
            | Op::SnapshotReady { .. }
            | Op::SnapshotDrop { .. } => {}
        }
        self.ops.push(op);
    }

    /// The state this transaction builds on (the log head while the commit closure runs).
    pub fn base(&self) -> &MetaState {
        self.base
    }

    /// Drop a chunk from the index (GC stage 1; the caller checked nothing references it).
    pub fn remove_chunk(&mut self, id: ChunkId) {
        self.push(Op::RemoveChunk { id });
    }

    /// Record a snapshot op (`snapshot.rs` validates names and ids).
    pub fn snapshot_op(&mut self, op: Op) {
        debug_assert!(matches!(
            op,
            Op::SnapshotBegin { .. } | Op::SnapshotReady { .. } | Op::SnapshotDrop { .. }
        ));
        self.push(op);
    }

    /// [SNAP-5]: `/.snapshots` is the mount's read-only view of the snapshots; no entry of that
    /// name may exist in the root directory.
    fn check_reserved(at: &Entry, path: &str) -> Result<(), Error> {
        if at.parent == InodeNo::ROOT && at.name == SNAPSHOTS_DIR.as_bytes() {
            return Err(Error::Reserved {
                path: path.into(),
                reason: "/.snapshots is where a mount shows the snapshots".into(),
            });
        }
        Ok(())
    }

    /// Resolve a path to an inode (symlinks are not followed).
    pub fn resolve<P: AsRef<[u8]> + ?Sized>(&self, path: &P) -> Result<InodeNo, Error> {
        let path = path.as_ref();
        let mut cur = InodeNo::ROOT;
        for c in components(path)? {
            let dir = self.inode(cur)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            if dir.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: show_path(path),
                });
            }
            cur = self.lookup(cur, c)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
        }
        Ok(cur)
    }

    /// The parent directory and name a path designates; the parent must exist and be a directory.
    pub fn entry<P: AsRef<[u8]> + ?Sized>(&self, path: &P) -> Result<Entry, Error> {
        let path = path.as_ref();
        let comps = components(path)?;
        check_writable(path, &comps)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Err(Error::InvalidPath {
                path: show_path(path),
                reason: "the root has no name".into(),
            });
        };
        let mut cur = InodeNo::ROOT;
        for c in dirs {
            cur = self.lookup(cur, c)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            let i = self.inode(cur)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            if i.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: show_path(path),
                });
            }
        }
        Ok(Entry {
            parent: cur,
            name: last.to_vec(),
        })
    }

    fn alloc_ino(&mut self) -> InodeNo {
        let ino = InodeNo(self.next_ino);
        self.next_ino += 1;
        ino
    }

    fn touch_dir(&mut self, dir: InodeNo, nlink_delta: i32) -> Result<(), Error> {
        if let Some(mut d) = self.inode(dir)? {
            let now = Timestamp::now();
            d.mtime = now;
            d.ctime = now;
            d.nlink = (d.nlink as i64 + nlink_delta as i64).max(0) as u32;
            self.push(Op::PutInode(d));
        }
        Ok(())
    }

    /// Create a new inode of `proto`'s kind and attributes at `at`, which must be free.
    pub fn create(&mut self, at: &Entry, path: &str, mut proto: Inode) -> Result<InodeNo, Error> {
        Self::check_reserved(at, path)?;
        if self.lookup(at.parent, &at.name)?.is_some() {
            return Err(Error::Exists { path: path.into() });
        }
        let ino = self.alloc_ino();
        proto.ino = ino;
        proto.nlink = if proto.kind == FileKind::Dir { 2 } else { 1 };
        let is_dir = proto.kind == FileKind::Dir;
        self.push(Op::PutInode(proto));
        self.push(Op::Link {
            parent: at.parent,
            name: at.name.clone(),
            ino,
        });
        self.touch_dir(at.parent, if is_dir { 1 } else { 0 })?;
        Ok(ino)
    }

    /// `mkdir -p`: every missing directory of `path` is created; existing ones are kept.
    pub fn mkdir_p<P: AsRef<[u8]> + ?Sized>(
        &mut self,
        path: &P,
        perm: u32,
    ) -> Result<InodeNo, Error> {
        let path = path.as_ref();
        let mut cur = InodeNo::ROOT;
        let mut sofar = String::new();
        let comps = components(path)?;
        check_writable(path, &comps)?;
        for c in comps {
            sofar.push('/');
            sofar.push_str(&show_path(c));
            cur = match self.lookup(cur, c)? {
                Some(ino) => {
                    let i = self.inode(ino)?.ok_or_else(|| Error::NotFound {
                        path: sofar.clone(),
                    })?;
                    if i.kind != FileKind::Dir {
                        return Err(Error::NotADirectory {
                            path: sofar.clone(),
                        });
                    }
                    ino
                }
                None => {
                    let at = Entry {
                        parent: cur,
                        name: c.to_vec(),
                    };
                    self.create(&at, &sofar, Inode::new(InodeNo(0), FileKind::Dir, perm))?
                }
            };
        }
        Ok(cur)
    }

    /// Drop one link to `ino`; the inode goes when its last link does.
    fn drop_link(&mut self, ino: InodeNo) -> Result<(), Error> {
        let Some(mut i) = self.inode(ino)? else {
            return Ok(());
        };
        if i.kind != FileKind::Dir && i.nlink <= 1 && self.keep_open.contains(&ino) {
            // Unlinked but open: readable until the last close (data-layout.md, orphans).
            i.nlink = 0;
            i.ctime = Timestamp::now();
            self.push(Op::PutInode(i));
            self.orphaned.push(ino);
        } else if i.kind == FileKind::Dir || i.nlink <= 1 {
            self.push(Op::DeleteInode(ino));
        } else {
            i.nlink -= 1;
            i.ctime = Timestamp::now();
            self.push(Op::PutInode(i));
        }
        Ok(())
    }

    /// Remove the entry at `at` (`rm`, or `rmdir` when `allow_dir` and the directory is empty).
    pub fn remove(&mut self, at: &Entry, path: &str, allow_dir: bool) -> Result<(), Error> {
        let ino = self
            .lookup(at.parent, &at.name)?
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        let kind = self
            .kind(ino)?
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        if kind == FileKind::Dir {
            if !allow_dir {
                return Err(Error::IsADirectory { path: path.into() });
            }
            if self.has_children(ino)? {
                return Err(Error::NotEmpty { path: path.into() });
            }
        }
        self.push(Op::Unlink {
            parent: at.parent,
            name: at.name.clone(),
        });
        self.drop_link(ino)?;
        self.touch_dir(at.parent, if kind == FileKind::Dir { -1 } else { 0 })?;
        Ok(())
    }

    /// Remove a whole subtree (`rm -r`), deepest entries first.
    pub fn remove_tree(&mut self, at: &Entry, path: &str) -> Result<(), Error> {
        let ino = self
            .lookup(at.parent, &at.name)?
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        if self.kind(ino)? == Some(FileKind::Dir) {
            for (name, _) in self.children(ino)? {
                let child = Entry {
                    parent: ino,
                    name: name.clone(),
                };
                let cpath = format!("{path}/{}", show_path(&name));
                self.remove_tree(&child, &cpath)?;
            }
        }
        self.remove(at, path, true)
    }

    /// Is `anc` the inode `ino` or one of its ancestors?
    fn is_ancestor(&self, anc: InodeNo, ino: InodeNo) -> Result<bool, Error> {
        // Walk up from `ino` (a directory: its parent record is its only link) to the root:
        // O(depth), whatever the size of `anc`'s subtree.
        let mut at = ino;
        for _ in 0..=4096 {
            if at == anc {
                return Ok(true);
            }
            if at == InodeNo::ROOT {
                return Ok(false);
            }
            let parent = match self.parents.get(&at) {
                Some(p) => *p,
                None => self.base.parent_of(at)?.map(|(p, _)| p),
            };
            match parent {
                Some(p) => at = p,
                None => return Ok(false),
            }
        }
        // Deeper than any real tree: a damaged chain; refuse rather than risk a cycle.
        Ok(true)
    }

    /// `rename(2)`: move the entry `from` to `to`, replacing a compatible target.
    pub fn rename(
        &mut self,
        from: &Entry,
        from_path: &str,
        to: &Entry,
        to_path: &str,
    ) -> Result<(), Error> {
        Self::check_reserved(to, to_path)?;
        let ino = self
            .lookup(from.parent, &from.name)?
            .ok_or_else(|| Error::NotFound {
                path: from_path.into(),
            })?;
        let kind = self.kind(ino)?.ok_or_else(|| Error::NotFound {
            path: from_path.into(),
        })?;
        if from.parent == to.parent && from.name == to.name {
            return Ok(());
        }
        // rename(2)'s EINVAL: linking a directory under itself would cut it and its subtree off
        // from the root (a cycle no walk reaches). Checked before anything else changes.
        if kind == FileKind::Dir && self.is_ancestor(ino, to.parent)? {
            return Err(Error::InvalidPath {
                path: to_path.into(),
                reason: format!(
                    "cannot move {from_path} to a subdirectory of itself, {to_path} (Invalid argument)"
                ),
            });
        }
        let mut dir_delta_to = 0;
        if let Some(existing) = self.lookup(to.parent, &to.name)? {
            if existing == ino {
                // Two hard links to one inode: POSIX says do nothing.
                return Ok(());
            }
            let ek = self.kind(existing)?;
            // rename(2) onto a directory that contains the source is ENOTEMPTY whatever the
            // source is (Linux checks it before the kinds; the model test found the order).
            if ek == Some(FileKind::Dir) && self.is_ancestor(existing, from.parent)? {
                return Err(Error::NotEmpty {
                    path: to_path.into(),
                });
            }
            match (kind == FileKind::Dir, ek == Some(FileKind::Dir)) {
                (true, false) => {
                    return Err(Error::NotADirectory {
                        path: to_path.into(),
                    })
                }
                (false, true) => {
                    return Err(Error::IsADirectory {
                        path: to_path.into(),
                    })
                }
                (true, true) => {
                    if self.has_children(existing)? {
                        return Err(Error::NotEmpty {
                            path: to_path.into(),
                        });
                    }
                    dir_delta_to -= 1;
                }
                (false, false) => {}
            }
            self.drop_link(existing)?;
        }
        self.push(Op::Unlink {
            parent: from.parent,
            name: from.name.clone(),
        });
        self.push(Op::Link {
            parent: to.parent,
            name: to.name.clone(),
            ino,
        });
        let is_dir = kind == FileKind::Dir;
        if from.parent == to.parent {
            self.touch_dir(from.parent, dir_delta_to)?;
        } else {
            self.touch_dir(from.parent, if is_dir { -1 } else { 0 })?;
            self.touch_dir(to.parent, dir_delta_to + if is_dir { 1 } else { 0 })?;
        }
        if let Some(mut i) = self.inode(ino)? {
            i.ctime = Timestamp::now();
            self.push(Op::PutInode(i));
        }
        Ok(())
    }

    /// `renameat2(RENAME_EXCHANGE)`: swap two existing entries atomically.
    pub fn exchange(
        &mut self,
        a: &Entry,
        a_path: &str,
        b: &Entry,
        b_path: &str,
    ) -> Result<(), Error> {
        let ia = self
            .lookup(a.parent, &a.name)?
            .ok_or_else(|| Error::NotFound {
                path: a_path.into(),
            })?;
        let ib = self
            .lookup(b.parent, &b.name)?
            .ok_or_else(|| Error::NotFound {
                path: b_path.into(),
            })?;
        if ia == ib {
            return Ok(());
        }
        let dir_a = self.kind(ia)? == Some(FileKind::Dir);
        let dir_b = self.kind(ib)? == Some(FileKind::Dir);
        if (dir_a && self.is_ancestor(ia, b.parent)?)
            || (dir_b && self.is_ancestor(ib, a.parent)?)
        {
            return Err(Error::InvalidPath {
                path: b_path.into(),
                reason: "cannot exchange a directory with its own descendant".into(),
            });
        }
        self.push(Op::Link {
            parent: a.parent,
            name: a.name.clone(),
            ino: ib,
        });
        self.push(Op::Link {
            parent: b.parent,
            name: b.name.clone(),
            ino: ia,
        });
        if a.parent != b.parent && dir_a != dir_b {
            // The directory moved to the other parent: its `..` link moves with it.
            let (to_a, to_b) = if dir_a { (-1, 1) } else { (1, -1) };
            self.touch_dir(a.parent, to_a)?;
            self.touch_dir(b.parent, to_b)?;
        } else {
            self.touch_dir(a.parent, 0)?;
            if a.parent != b.parent {
                self.touch_dir(b.parent, 0)?;
            }
        }
        for ino in [ia, ib] {
            if let Some(mut i) = self.inode(ino)? {
                i.ctime = Timestamp::now();
                self.push(Op::PutInode(i));
            }
        }
        Ok(())
    }

    /// `link(2)`: a new name for an existing non-directory inode.
    pub fn link(
        &mut self,
        ino: InodeNo,
        src_path: &str,
        to: &Entry,
        to_path: &str,
    ) -> Result<(), Error> {
        Self::check_reserved(to, to_path)?;
        let mut i = self.inode(ino)?.ok_or_else(|| Error::NotFound {
            path: src_path.into(),
        })?;
        if i.kind == FileKind::Dir {
            return Err(Error::IsADirectory {
                path: src_path.into(),
            });
        }
        if self.lookup(to.parent, &to.name)?.is_some() {
            return Err(Error::Exists {
                path: to_path.into(),
            });
        }
        i.nlink += 1;
        i.ctime = Timestamp::now();
        self.push(Op::PutInode(i));
        self.push(Op::Link {
            parent: to.parent,
            name: to.name.clone(),
            ino,
        });
        self.touch_dir(to.parent, 0)?;
        Ok(())
    }

    /// Replace the attributes of an existing inode.
    pub fn put_inode(&mut self, inode: Inode) {
        self.push(Op::PutInode(inode));
    }

    /// Delete an inode (an orphan at its last close).
    pub fn delete_inode(&mut self, ino: InodeNo) {
        self.push(Op::DeleteInode(ino));
    }

    pub fn set_extents(&mut self, ino: InodeNo, extents: Vec<Extent>) {
        self.push(Op::SetExtents { ino, extents });
    }

    /// Index a chunk unless some process already did (then this process's copy is garbage).
    pub fn add_chunk(&mut self, id: ChunkId, entry: ChunkEntry) -> Result<(), Error> {
        if !self.has_chunk(id)? {
            self.push(Op::AddChunk { id, entry });
        }
        Ok(())
    }

    /// Write a regular file at `at`: a new inode with these extents. An existing regular file there
    /// is replaced atomically (the old inode loses that link); anything else there is an error.
    pub fn write_file(
        &mut self,
        at: &Entry,
        path: &str,
        proto: Inode,
        extents: Vec<Extent>,
    ) -> Result<InodeNo, Error> {
        if let Some(old) = self.lookup(at.parent, &at.name)? {
            match self.kind(old)? {
                Some(FileKind::Dir) => return Err(Error::IsADirectory { path: path.into() }),
                _ => {
                    self.push(Op::Unlink {
                        parent: at.parent,
                        name: at.name.clone(),
                    });
                    self.drop_link(old)?;
                }
            }
        }
        let ino = self.create(at, path, proto)?;
        self.set_extents(ino, extents);
        Ok(ino)
    }
}
