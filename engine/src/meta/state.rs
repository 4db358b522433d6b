//! [`MetaState`]: the metadata at one lsn, built by applying ops in log order, and its lookups.
//! Also the log's [`StateMachine`]: record payloads and checkpoint bodies.

use std::collections::{BTreeMap, HashMap, HashSet};

use verfs_coordination::txlog::{Lsn, StateMachine};

use crate::format::meta as enc;
use crate::ids::{ChunkId, InodeNo};
use crate::model::{ChunkEntry, Extent, FileKind, Inode, Op, Timestamp};

use super::MetaError;

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
    inodes: HashMap<InodeNo, Inode>,
    dirs: HashMap<InodeNo, BTreeMap<Vec<u8>, InodeNo>>,
    extents: HashMap<InodeNo, Vec<Extent>>,
    chunks: HashMap<ChunkId, ChunkEntry>,
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

    /// The state these ops build from nothing (a snapshot's tree); `next_ino` is one past the
    /// largest inode.
    pub fn from_ops(ops: &[Op]) -> MetaState {
        let mut s = MetaState::default();
        for op in ops {
            s.apply_op(op);
        }
        // Saturating: an inode number of u64::MAX read from a file has no successor.
        s.next_ino = s
            .inodes
            .keys()
            .map(|i| i.0.saturating_add(1))
            .max()
            .unwrap_or(2);
        s
    }

    /// The inode `ino`, if it exists.
    pub fn inode(&self, ino: InodeNo) -> Result<Option<Inode>, MetaError> {
        Ok(self.inodes.get(&ino).cloned())
    }

    pub fn has_inode(&self, ino: InodeNo) -> Result<bool, MetaError> {
        Ok(self.inodes.contains_key(&ino))
    }

    /// How many inodes exist (orphans included).
    pub fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    /// The entries of directory `dir`, sorted by name (empty for anything but a directory).
    pub fn entries(&self, dir: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError> {
        Ok(self
            .dirs
            .get(&dir)
            .map(|d| d.iter().map(|(n, i)| (n.clone(), *i)).collect())
            .unwrap_or_default())
    }

    /// Does directory `dir` have any entry?
    pub fn has_entries(&self, dir: InodeNo) -> Result<bool, MetaError> {
        Ok(self.dirs.get(&dir).is_some_and(|d| !d.is_empty()))
    }

    /// A file's extents, in file order (empty for a file with none, or no such inode).
    pub fn extents(&self, ino: InodeNo) -> Result<Vec<Extent>, MetaError> {
        Ok(self.extents.get(&ino).cloned().unwrap_or_default())
    }

    /// Bytes a file's extents cover (what it stores, holes excluded).
    pub fn extent_bytes(&self, ino: InodeNo) -> Result<u64, MetaError> {
        Ok(self
            .extents
            .get(&ino)
            .map_or(0, |v| v.iter().map(|x| u64::from(x.len)).sum()))
    }

    /// Where chunk `id` is stored, if the index has it.
    pub fn chunk(&self, id: ChunkId) -> Result<Option<ChunkEntry>, MetaError> {
        Ok(self.chunks.get(&id).copied())
    }

    /// How many chunks the index holds.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Every inode, in inode-number order, streamed to `f`.
    pub fn for_each_inode<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(&Inode) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut inos: Vec<_> = self.inodes.keys().copied().collect();
        inos.sort();
        for ino in inos {
            if let Some(i) = self.inodes.get(&ino) {
                f(i)?;
            }
        }
        Ok(())
    }

    /// Every directory entry (parent, name, child), by parent then name, streamed to `f`.
    pub fn for_each_entry<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(InodeNo, &[u8], InodeNo) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut dirs: Vec<_> = self.dirs.keys().copied().collect();
        dirs.sort();
        for d in dirs {
            for (name, child) in self.dirs.get(&d).into_iter().flatten() {
                f(d, name, *child)?;
            }
        }
        Ok(())
    }

    /// Every file's extent list (files with at least one extent), by inode, streamed to `f`.
    pub fn for_each_extents<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(InodeNo, &[Extent]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut inos: Vec<_> = self.extents.keys().copied().collect();
        inos.sort();
        for ino in inos {
            if let Some(x) = self.extents.get(&ino) {
                f(ino, x)?;
            }
        }
        Ok(())
    }

    /// Every chunk of the index, by id, streamed to `f`.
    pub fn for_each_chunk<E: From<MetaError>>(
        &self,
        mut f: impl FnMut(ChunkId, ChunkEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut ids: Vec<_> = self.chunks.iter().map(|(i, e)| (*i, *e)).collect();
        ids.sort_by_key(|(i, _)| *i);
        for (id, e) in ids {
            f(id, e)?;
        }
        Ok(())
    }

    /// Every chunk some inode's extents reference (orphans included).
    pub fn referenced_chunks(&self) -> Result<HashSet<ChunkId>, MetaError> {
        Ok(self
            .extents
            .values()
            .flat_map(|v| v.iter().map(|x| x.chunk))
            .collect())
    }

    /// The snapshot named `name`, ready or not.
    pub fn snapshot_by_name(&self, name: &[u8]) -> Option<(u64, &SnapInfo)> {
        self.snapshots
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, s)| (*id, s))
    }

    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError> {
        Ok(self.dirs.get(&parent).and_then(|d| d.get(name)).copied())
    }

    /// One path of `ino` (`/` for the root), found by searching the directories: O(entries) per
    /// level, for messages about a failure, never for the hot path. `None` for an inode no
    /// directory names (unlinked but open, or unknown). Of several hard links, any one.
    pub fn path_of(&self, ino: InodeNo) -> Option<Vec<u8>> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut at = ino;
        while at != InodeNo::ROOT {
            // A directory tree has no cycles, but a damaged state might: give up at a depth no
            // real tree reaches.
            if names.len() > 4096 {
                return None;
            }
            let (parent, name) = self.dirs.iter().find_map(|(p, entries)| {
                entries
                    .iter()
                    .find(|(_, i)| **i == at)
                    .map(|(n, _)| (*p, n.as_slice()))
            })?;
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
        for op in enc::decode_ops(payload).map_err(|e| e.reason)? {
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
        for op in enc::decode_ops(ops).map_err(|e| e.reason)? {
            s.apply_op(&op);
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(tail);
        s.next_ino = s.next_ino.max(u64::from_le_bytes(a));
        Ok(s)
    }
}
