//! The metadata model and its transactions.
//!
//! [`MetaState`] is the materialized view of the transaction log: inodes, directory entries, each
//! file's extents, and the chunk index (chunk id -> pack id). It changes only by applying [`Op`]s
//! read from the log, in log order, so every process that has read the log up to lsn N holds the
//! same state. [`Tx`] is how a change is made: it runs under the log lock against the up-to-date
//! state, validates each step against the state plus its own earlier steps (an overlay), and
//! produces the ops of one log record. Encodings: `data-layout.md`, "Metadata records".

use std::collections::{BTreeMap, HashMap, HashSet};

use verfs_coordination::txlog::{Lsn, StateMachine};

use crate::error::Error;
use crate::format::meta as enc;
use crate::ids::{ChunkId, InodeNo, PackId};

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDev = 6,
    BlockDev = 7,
}

impl FileKind {
    pub fn from_u8(v: u8) -> Option<FileKind> {
        Some(match v {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDev,
            7 => FileKind::BlockDev,
            _ => return None,
        })
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                Timestamp {
                    secs: -(d.as_secs() as i64),
                    nsecs: 0,
                }
            }
        }
    }
}

/// An inode's attributes (everything but its extents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: InodeNo,
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u64,
    /// Symlink target (empty for other kinds).
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Inode {
    pub fn new(ino: InodeNo, kind: FileKind, perm: u32) -> Inode {
        let now = Timestamp::now();
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Inode {
            ino,
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }
}

/// A run of a file's bytes stored in a chunk: file bytes `[file_off, file_off+len)` are chunk
/// bytes `[chunk_off, chunk_off+len)`. Bytes of a file covered by no extent are a hole (zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub file_off: u64,
    pub chunk: ChunkId,
    pub chunk_off: u32,
    pub len: u32,
}

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub pack: PackId,
    pub raw_len: u32,
}

/// One change in a log record. Applying is total: an op that does not fit the state (which a
/// validated [`Tx`] never produces) is applied as far as it can be, so every process still
/// derives the same state from the same log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace an inode's attributes (extents untouched).
    PutInode(Inode),
    /// Remove an inode and its extents.
    DeleteInode(InodeNo),
    /// Add or replace the entry `name` in directory `parent`.
    Link {
        parent: InodeNo,
        name: Vec<u8>,
        ino: InodeNo,
    },
    /// Remove the entry `name` from `parent`.
    Unlink { parent: InodeNo, name: Vec<u8> },
    /// Replace a file's whole extent list.
    SetExtents { ino: InodeNo, extents: Vec<Extent> },
    /// Index a chunk.
    AddChunk { id: ChunkId, entry: ChunkEntry },
    /// Drop a chunk from the index (garbage collection).
    RemoveChunk { id: ChunkId },
    /// A snapshot of the whole tree as it is just before this record; its file is being written.
    SnapshotBegin {
        id: u64,
        name: Vec<u8>,
        time: Timestamp,
    },
    /// The snapshot's file is durable: it can be listed, read and restored from.
    SnapshotReady { id: u64 },
    /// Forget a snapshot (deleted, or abandoned by a creator that died before it was ready).
    SnapshotDrop { id: u64 },
}

/// A snapshot as the metadata knows it; its tree is in `snapshots/<id>.snap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    pub name: Vec<u8>,
    pub time: Timestamp,
    /// The file is complete and durable. A snapshot that is not ready blocks GC's stage 1 (its
    /// references are not known yet) until it is ready or dropped.
    pub ready: bool,
}

/// The whole metadata state at some lsn.
#[derive(Clone, Debug, Default)]
pub struct MetaState {
    pub inodes: HashMap<InodeNo, Inode>,
    pub dirs: HashMap<InodeNo, BTreeMap<Vec<u8>, InodeNo>>,
    pub extents: HashMap<InodeNo, Vec<Extent>>,
    pub chunks: HashMap<ChunkId, ChunkEntry>,
    /// Snapshots by id.
    pub snapshots: BTreeMap<u64, SnapInfo>,
    pub next_ino: u64,
}

impl MetaState {
    pub fn apply_op(&mut self, op: &Op) {
        match op {
            Op::PutInode(i) => {
                // Saturating: inode numbers come from disk, and u64::MAX has no successor.
                self.next_ino = self.next_ino.max(i.ino.0.saturating_add(1));
                if i.kind == FileKind::Dir {
                    self.dirs.entry(i.ino).or_default();
                }
                self.inodes.insert(i.ino, i.clone());
            }
            Op::DeleteInode(ino) => {
                self.inodes.remove(ino);
                self.dirs.remove(ino);
                self.extents.remove(ino);
            }
            Op::Link { parent, name, ino } => {
                self.dirs
                    .entry(*parent)
                    .or_default()
                    .insert(name.clone(), *ino);
            }
            Op::Unlink { parent, name } => {
                if let Some(d) = self.dirs.get_mut(parent) {
                    d.remove(name);
                }
            }
            Op::SetExtents { ino, extents } => {
                if extents.is_empty() {
                    self.extents.remove(ino);
                } else {
                    self.extents.insert(*ino, extents.clone());
                }
            }
            Op::AddChunk { id, entry } => {
                self.chunks.insert(*id, *entry);
            }
            Op::RemoveChunk { id } => {
                self.chunks.remove(id);
            }
            Op::SnapshotBegin { id, name, time } => {
                self.snapshots.insert(
                    *id,
                    SnapInfo {
                        name: name.clone(),
                        time: *time,
                        ready: false,
                    },
                );
            }
            Op::SnapshotReady { id } => {
                if let Some(s) = self.snapshots.get_mut(id) {
                    s.ready = true;
                }
            }
            Op::SnapshotDrop { id } => {
                self.snapshots.remove(id);
            }
        }
    }

    /// Every chunk some inode's extents reference (orphans included).
    pub fn referenced_chunks(&self) -> HashSet<ChunkId> {
        self.extents
            .values()
            .flat_map(|v| v.iter().map(|x| x.chunk))
            .collect()
    }

    /// The snapshot named `name`, ready or not.
    pub fn snapshot_by_name(&self, name: &[u8]) -> Option<(u64, &SnapInfo)> {
        self.snapshots
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, s)| (*id, s))
    }

    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Option<InodeNo> {
        self.dirs.get(&parent)?.get(name).copied()
    }

    /// The ops that rebuild this state from empty (the checkpoint body, in a canonical order).
    pub fn to_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut inos: Vec<_> = self.inodes.keys().copied().collect();
        inos.sort();
        for ino in &inos {
            if let Some(i) = self.inodes.get(ino) {
                ops.push(Op::PutInode(i.clone()));
            }
        }
        for ino in &inos {
            if let Some(d) = self.dirs.get(ino) {
                for (name, child) in d {
                    ops.push(Op::Link {
                        parent: *ino,
                        name: name.clone(),
                        ino: *child,
                    });
                }
            }
            if let Some(x) = self.extents.get(ino) {
                ops.push(Op::SetExtents {
                    ino: *ino,
                    extents: x.clone(),
                });
            }
        }
        let mut chunks: Vec<_> = self.chunks.iter().collect();
        chunks.sort_by_key(|(id, _)| **id);
        for (id, entry) in chunks {
            ops.push(Op::AddChunk {
                id: *id,
                entry: *entry,
            });
        }
        for (id, s) in &self.snapshots {
            ops.push(Op::SnapshotBegin {
                id: *id,
                name: s.name.clone(),
                time: s.time,
            });
            if s.ready {
                ops.push(Op::SnapshotReady { id: *id });
            }
        }
        ops
    }
}

impl StateMachine for MetaState {
    fn empty() -> Self {
        // The root directory exists in every store from lsn 0 on; its attributes are replaced by
        // the first record `init` writes.
        let mut s = MetaState {
            next_ino: 2,
            ..Default::default()
        };
        s.apply_op(&Op::PutInode(Inode::new(
            InodeNo::ROOT,
            FileKind::Dir,
            0o755,
        )));
        s
    }

    fn apply(&mut self, _lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        for op in enc::decode_ops(payload)? {
            self.apply_op(&op);
        }
        Ok(())
    }

    fn encode_checkpoint(&self) -> Vec<u8> {
        let mut out = enc::encode_ops(&self.to_ops());
        // next_ino may exceed every live inode + 1 (deleted inodes are never reused).
        out.extend_from_slice(&self.next_ino.to_le_bytes());
        out
    }

    fn decode_checkpoint(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 8 {
            return Err("checkpoint body too short".into());
        }
        let (ops, tail) = bytes.split_at(bytes.len() - 8);
        let mut s = MetaState {
            next_ino: 2,
            ..Default::default()
        };
        for op in enc::decode_ops(ops)? {
            s.apply_op(&op);
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(tail);
        s.next_ino = s.next_ino.max(u64::from_le_bytes(a));
        Ok(s)
    }
}

/// A transaction under construction: validated against `base` plus its own earlier ops.
pub struct Tx<'a> {
    base: &'a MetaState,
    inodes: HashMap<InodeNo, Option<Inode>>,
    entries: HashMap<(InodeNo, Vec<u8>), Option<InodeNo>>,
    extents: HashMap<InodeNo, Vec<Extent>>,
    added_chunks: HashSet<ChunkId>,
    next_ino: u64,
    ops: Vec<Op>,
    /// Inodes open in the committing process: losing their last link keeps them as orphans
    /// (nlink 0) until the last close, instead of deleting them.
    pub keep_open: HashSet<InodeNo>,
    /// Regular-file inodes this transaction turned into orphans.
    pub orphaned: Vec<InodeNo>,
}

/// Which directory entry a path names: its parent and its last component.
#[derive(Clone, Debug)]
pub struct Entry {
    pub parent: InodeNo,
    pub name: Vec<u8>,
}

pub const NAME_MAX: usize = 255;

/// The root entry through which a mount shows snapshots (never stored).
pub const SNAPSHOTS_DIR: &str = ".snapshots";

/// A store path for messages: as is when it is UTF-8, else each byte that is not part of a UTF-8
/// character as `\xNN` (names are bytes; an error must still say which one it means).
pub fn show_path(path: &[u8]) -> String {
    match std::str::from_utf8(path) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut out = String::new();
            for chunk in path.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out
        }
    }
}

/// Split a store path (`/a/b/c`, `a/b`, `/`) into its components, refusing `.`/`..` and empty
/// names so that every path has exactly one meaning. A path is bytes (`&str`, `&[u8]`, or an
/// `OsStr`'s bytes): a name need not be UTF-8.
pub fn components<P: AsRef<[u8]> + ?Sized>(path: &P) -> Result<Vec<&[u8]>, Error> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => {
                return Err(Error::InvalidPath {
                    path: show_path(path),
                    reason: "'..' is not allowed".into(),
                })
            }
            c if c.len() > NAME_MAX => {
                return Err(Error::NameTooLong {
                    path: show_path(path),
                })
            }
            c => out.push(c),
        }
    }
    Ok(out)
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

    pub fn inode(&self, ino: InodeNo) -> Option<&Inode> {
        match self.inodes.get(&ino) {
            Some(v) => v.as_ref(),
            None => self.base.inodes.get(&ino),
        }
    }

    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Option<InodeNo> {
        match self.entries.get(&(parent, name.to_vec())) {
            Some(v) => *v,
            None => self.base.lookup(parent, name),
        }
    }

    /// A file's extents, with this transaction's changes.
    pub fn extents(&self, ino: InodeNo) -> Vec<Extent> {
        match self.extents.get(&ino) {
            Some(v) => v.clone(),
            None => self.base.extents.get(&ino).cloned().unwrap_or_default(),
        }
    }

    /// Did this transaction add `id` to the index?
    pub fn added(&self, id: ChunkId) -> bool {
        self.added_chunks.contains(&id)
    }

    pub fn has_chunk(&self, id: ChunkId) -> bool {
        self.added_chunks.contains(&id) || self.base.chunks.contains_key(&id)
    }

    /// Children of a directory, with this transaction's changes.
    pub fn children(&self, dir: InodeNo) -> BTreeMap<Vec<u8>, InodeNo> {
        let mut out = self.base.dirs.get(&dir).cloned().unwrap_or_default();
        for ((p, name), v) in &self.entries {
            if *p == dir {
                match v {
                    Some(ino) => out.insert(name.clone(), *ino),
                    None => out.remove(name),
                };
            }
        }
        out
    }

    fn push(&mut self, op: Op) {
        match &op {
            Op::PutInode(i) => {
                self.inodes.insert(i.ino, Some(i.clone()));
            }
            Op::DeleteInode(ino) => {
                self.inodes.insert(*ino, None);
                self.extents.insert(*ino, Vec::new());
            }
            Op::Link { parent, name, ino } => {
                self.entries.insert((*parent, name.clone()), Some(*ino));
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
            let dir = self.inode(cur).ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            if dir.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: show_path(path),
                });
            }
            cur = self.lookup(cur, c).ok_or_else(|| Error::NotFound {
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
            cur = self.lookup(cur, c).ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            let i = self.inode(cur).ok_or_else(|| Error::NotFound {
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

    fn touch_dir(&mut self, dir: InodeNo, nlink_delta: i32) {
        if let Some(mut d) = self.inode(dir).cloned() {
            let now = Timestamp::now();
            d.mtime = now;
            d.ctime = now;
            d.nlink = (d.nlink as i64 + nlink_delta as i64).max(0) as u32;
            self.push(Op::PutInode(d));
        }
    }

    /// Create a new inode of `proto`'s kind and attributes at `at`, which must be free.
    pub fn create(&mut self, at: &Entry, path: &str, mut proto: Inode) -> Result<InodeNo, Error> {
        Self::check_reserved(at, path)?;
        if self.lookup(at.parent, &at.name).is_some() {
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
        self.touch_dir(at.parent, if is_dir { 1 } else { 0 });
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
            cur = match self.lookup(cur, c) {
                Some(ino) => {
                    let i = self.inode(ino).ok_or_else(|| Error::NotFound {
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
    fn drop_link(&mut self, ino: InodeNo) {
        let Some(mut i) = self.inode(ino).cloned() else {
            return;
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
    }

    /// Remove the entry at `at` (`rm`, or `rmdir` when `allow_dir` and the directory is empty).
    pub fn remove(&mut self, at: &Entry, path: &str, allow_dir: bool) -> Result<(), Error> {
        let ino = self
            .lookup(at.parent, &at.name)
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        let kind = self
            .inode(ino)
            .map(|i| i.kind)
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        if kind == FileKind::Dir {
            if !allow_dir {
                return Err(Error::IsADirectory { path: path.into() });
            }
            if !self.children(ino).is_empty() {
                return Err(Error::NotEmpty { path: path.into() });
            }
        }
        self.push(Op::Unlink {
            parent: at.parent,
            name: at.name.clone(),
        });
        self.drop_link(ino);
        self.touch_dir(at.parent, if kind == FileKind::Dir { -1 } else { 0 });
        Ok(())
    }

    /// Remove a whole subtree (`rm -r`), deepest entries first.
    pub fn remove_tree(&mut self, at: &Entry, path: &str) -> Result<(), Error> {
        let ino = self
            .lookup(at.parent, &at.name)
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        if self.inode(ino).map(|i| i.kind) == Some(FileKind::Dir) {
            for (name, _) in self.children(ino) {
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
    fn is_ancestor(&self, anc: InodeNo, ino: InodeNo) -> bool {
        // Entries store no parent pointer, so walk down: is `ino` inside the subtree of `anc`?
        if anc == ino {
            return true;
        }
        let mut stack = vec![anc];
        while let Some(d) = stack.pop() {
            for (_, c) in self.children(d) {
                if c == ino {
                    return true;
                }
                if self.inode(c).map(|i| i.kind) == Some(FileKind::Dir) {
                    stack.push(c);
                }
            }
        }
        false
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
            .lookup(from.parent, &from.name)
            .ok_or_else(|| Error::NotFound {
                path: from_path.into(),
            })?;
        let kind = self
            .inode(ino)
            .map(|i| i.kind)
            .ok_or_else(|| Error::NotFound {
                path: from_path.into(),
            })?;
        if from.parent == to.parent && from.name == to.name {
            return Ok(());
        }
        // rename(2)'s EINVAL: linking a directory under itself would cut it and its subtree off
        // from the root (a cycle no walk reaches). Checked before anything else changes.
        if kind == FileKind::Dir && self.is_ancestor(ino, to.parent) {
            return Err(Error::InvalidPath {
                path: to_path.into(),
                reason: format!(
                    "cannot move {from_path} to a subdirectory of itself, {to_path} (Invalid argument)"
                ),
            });
        }
        let mut dir_delta_to = 0;
        if let Some(existing) = self.lookup(to.parent, &to.name) {
            if existing == ino {
                // Two hard links to one inode: POSIX says do nothing.
                return Ok(());
            }
            let ek = self.inode(existing).map(|i| i.kind);
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
                    if !self.children(existing).is_empty() {
                        return Err(Error::NotEmpty {
                            path: to_path.into(),
                        });
                    }
                    dir_delta_to -= 1;
                }
                (false, false) => {}
            }
            self.drop_link(existing);
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
            self.touch_dir(from.parent, dir_delta_to);
        } else {
            self.touch_dir(from.parent, if is_dir { -1 } else { 0 });
            self.touch_dir(to.parent, dir_delta_to + if is_dir { 1 } else { 0 });
        }
        if let Some(mut i) = self.inode(ino).cloned() {
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
            .lookup(a.parent, &a.name)
            .ok_or_else(|| Error::NotFound {
                path: a_path.into(),
            })?;
        let ib = self
            .lookup(b.parent, &b.name)
            .ok_or_else(|| Error::NotFound {
                path: b_path.into(),
            })?;
        if ia == ib {
            return Ok(());
        }
        let dir_a = self.inode(ia).map(|i| i.kind) == Some(FileKind::Dir);
        let dir_b = self.inode(ib).map(|i| i.kind) == Some(FileKind::Dir);
        if (dir_a && self.is_ancestor(ia, b.parent)) || (dir_b && self.is_ancestor(ib, a.parent)) {
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
            self.touch_dir(a.parent, to_a);
            self.touch_dir(b.parent, to_b);
        } else {
            self.touch_dir(a.parent, 0);
            if a.parent != b.parent {
                self.touch_dir(b.parent, 0);
            }
        }
        for ino in [ia, ib] {
            if let Some(mut i) = self.inode(ino).cloned() {
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
        let mut i = self.inode(ino).cloned().ok_or_else(|| Error::NotFound {
            path: src_path.into(),
        })?;
        if i.kind == FileKind::Dir {
            return Err(Error::IsADirectory {
                path: src_path.into(),
            });
        }
        if self.lookup(to.parent, &to.name).is_some() {
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
        self.touch_dir(to.parent, 0);
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
    pub fn add_chunk(&mut self, id: ChunkId, entry: ChunkEntry) {
        if !self.has_chunk(id) {
            self.push(Op::AddChunk { id, entry });
        }
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
        if let Some(old) = self.lookup(at.parent, &at.name) {
            match self.inode(old).map(|i| i.kind) {
                Some(FileKind::Dir) => return Err(Error::IsADirectory { path: path.into() }),
                _ => {
                    self.push(Op::Unlink {
                        parent: at.parent,
                        name: at.name.clone(),
                    });
                    self.drop_link(old);
                }
            }
        }
        let ino = self.create(at, path, proto)?;
        self.set_extents(ino, extents);
        Ok(ino)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn commit(
        s: &mut MetaState,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let payload = {
            let mut tx = Tx::new(s);
            f(&mut tx)?;
            tx.finish()
        };
        s.apply(Lsn(1), &payload).map_err(Error::Internal)?;
        Ok(())
    }

    #[test]
    fn namespace_ops_keep_link_counts() {
        let mut s = MetaState::empty();
        commit(&mut s, |tx| tx.mkdir_p("/a/b", 0o755).map(|_| ())).unwrap();
        let root = s.inodes[&InodeNo::ROOT].clone();
        assert_eq!(root.nlink, 3);
        commit(&mut s, |tx| {
            let at = tx.entry("/a/f")?;
            tx.write_file(
                &at,
                "/a/f",
                Inode::new(InodeNo(0), FileKind::File, 0o644),
                vec![],
            )
            .map(|_| ())
        })
        .unwrap();
        commit(&mut s, |tx| {
            let ino = tx.resolve("/a/f")?;
            let to = tx.entry("/a/b/g")?;
            tx.link(ino, "/a/f", &to, "/a/b/g")
        })
        .unwrap();
        let f = s
            .lookup(s.lookup(InodeNo::ROOT, b"a").unwrap(), b"f")
            .unwrap();
        assert_eq!(s.inodes[&f].nlink, 2);
        // rmdir of a non-empty dir fails, mkdir of an existing name fails.
        let err = commit(&mut s, |tx| {
            let at = tx.entry("/a/b")?;
            tx.remove(&at, "/a/b", true)
        });
        assert!(matches!(err, Err(Error::NotEmpty { .. })));
        let err = commit(&mut s, |tx| {
            let at = tx.entry("/a")?;
            tx.create(&at, "/a", Inode::new(InodeNo(0), FileKind::Dir, 0o755))
                .map(|_| ())
        });
        assert!(matches!(err, Err(Error::Exists { .. })));
        // Moving a directory into itself fails.
        let err = commit(&mut s, |tx| {
            let from = tx.entry("/a")?;
            let to = tx.entry("/a/b/a")?;
            tx.rename(&from, "/a", &to, "/a/b/a")
        });
        let err = err.unwrap_err();
        // rename(2) answers EINVAL (the fs crate maps InvalidPath so).
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        // ... and so does exchanging it with an entry of its own subtree (renameat2 EXCHANGE).
        let err = commit(&mut s, |tx| {
            let a = tx.entry("/a")?;
            let b = tx.entry("/a/b")?;
            tx.exchange(&a, "/a", &b, "/a/b")
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        commit(&mut s, |tx| {
            let at = tx.entry("/a")?;
            tx.remove_tree(&at, "/a")
        })
        .unwrap();
        assert_eq!(s.inodes.len(), 1);
        assert_eq!(s.inodes[&InodeNo::ROOT].nlink, 2);
    }

    #[test]
    fn checkpoint_roundtrip_preserves_state() {
        let mut s = MetaState::empty();
        commit(&mut s, |tx| {
            tx.mkdir_p("/x/y", 0o700)?;
            let at = tx.entry("/x/y/z")?;
            let id = ChunkId(42);
            tx.add_chunk(
                id,
                ChunkEntry {
                    pack: PackId(7),
                    raw_len: 10,
                },
            );
            tx.write_file(
                &at,
                "/x/y/z",
                Inode::new(InodeNo(0), FileKind::File, 0o600),
                vec![Extent {
                    file_off: 0,
                    chunk: id,
                    chunk_off: 0,
                    len: 10,
                }],
            )
            .map(|_| ())
        })
        .unwrap();
        let bytes = s.encode_checkpoint();
        let t = MetaState::decode_checkpoint(&bytes).unwrap();
        assert_eq!(t.to_ops(), s.to_ops());
        assert_eq!(t.next_ino, s.next_ino);
    }
}
