//! A read-only tree by inode and by path, live or snapshot: what `fs` and `cli` read through.
//!
//! Overview: a [`View`] is a [`Store`] seen through one [`Tree`]:
//! - [`Tree::Live`]: the log's up-to-date metadata, with this process's unflushed writes
//!   (size, mtime, buffered bytes) over it, exactly as [`Store::attr`] and [`Store::read_at`]
//!   answer;
//! - [`Tree::Snapshot`]: the immutable tree of one ready snapshot, from the store's snapshot cache
//!   ([`Store::snapshot_tree`]), whose file bytes are read from the chunks its extents name.
//!
//! Lookups, attributes, listings, reads, extended attributes, symlink targets and `SEEK_DATA`/
//! `SEEK_HOLE` answer the same way (and with the same errors) in both trees, so a caller holding a
//! resolved node (a view and an inode number) does not branch on which tree it is in.
//!
//! Not here: every change. Namespace and file operations take the live tree only, through
//! [`Store`]; a snapshot cannot be changed at all. Numbering the inodes of several trees apart (as
//! a mount must) is the caller's business: a view hands out each tree's own inode numbers.

use std::sync::Arc;

use crate::error::Error;
use crate::ids::InodeNo;
use crate::meta::{MetaState, Tx};
use crate::model::{show_path, FileKind, Inode, Timestamp, NAME_MAX, SNAPSHOTS_DIR};
use crate::overlay::{seek_extents, Seek};
use crate::store::Store;

/// Which tree a [`View`] reads.
#[derive(Clone)]
pub enum Tree {
    /// The live tree.
    Live,
    /// Ready snapshot `id`, whose tree is `state`.
    Snapshot { id: u64, state: Arc<MetaState> },
}

/// One tree of a store, read-only.
#[derive(Clone)]
pub struct View<'s> {
    store: &'s Store,
    tree: Tree,
}

/// A ready snapshot as a view lists it.
#[derive(Clone, Debug)]
pub struct ReadySnapshot {
    pub name: String,
    pub id: u64,
    pub time: Timestamp,
}

/// The ready snapshots of `store`, by name (a snapshot still being created is left out).
pub fn ready_snapshots(store: &Store) -> Result<Vec<ReadySnapshot>, Error> {
    Ok(store
        .snapshots()?
        .into_iter()
        .filter(|(_, (_, i))| i.ready)
        .map(|(name, (id, i))| ReadySnapshot {
            name,
            id,
            time: i.time,
        })
        .collect())
}

fn inode_path(ino: InodeNo) -> String {
    format!("inode {ino}")
}

fn not_found(ino: InodeNo) -> Error {
    Error::NotFound {
        path: inode_path(ino),
    }
}

/// Bytes of regular file `i` of `tree` that hold data (its extents), at most its size; the size
/// of anything else.
fn committed_allocated(tree: &MetaState, i: &Inode) -> Result<u64, Error> {
    Ok(match i.kind {
        FileKind::File => tree.extent_bytes(i.ino)?.min(i.size),
        _ => i.size,
    })
}

impl<'s> View<'s> {
    /// The live tree of `store`.
    pub fn live(store: &'s Store) -> View<'s> {
        View {
            store,
            tree: Tree::Live,
        }
    }

    /// The tree of snapshot `id`: `NotFound` once it is deleted (or while it is not ready yet),
    /// an I/O or corruption error if its `.snap` file cannot be loaded.
    pub fn snapshot(store: &'s Store, id: u64) -> Result<View<'s>, Error> {
        let ready = store.read(|s| s.snapshots.get(&id).map(|i| i.ready))?;
        if ready != Some(true) {
            return Err(Error::NotFound {
                path: format!("snapshot {id}"),
            });
        }
        Ok(View {
            store,
            tree: Tree::Snapshot {
                id,
                state: store.snapshot_tree(id)?,
            },
        })
    }

    /// The tree this view reads.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Is this the live tree (the one that can change)?
    pub fn is_live(&self) -> bool {
        matches!(self.tree, Tree::Live)
    }

    /// The snapshot this view reads, if it is not the live tree.
    pub fn snapshot_id(&self) -> Option<u64> {
        match &self.tree {
            Tree::Live => None,
            Tree::Snapshot { id, .. } => Some(*id),
        }
    }

    /// A path of `ino` in this tree, as a message shows it (a snapshot's under
    /// `/.snapshots/NAME`), for naming the file a failure is about; `None` if no directory names
    /// it. Searches the directories: for error paths only.
    pub fn path_of(&self, ino: InodeNo) -> Option<String> {
        match &self.tree {
            Tree::Live => self
                .store
                .read(|s| s.path_of(ino))
                .ok()
                .flatten()
                .map(|p| show_path(&p)),
            Tree::Snapshot { id, state } => {
                let name = self
                    .store
                    .read(|s| s.snapshots.get(id).map(|i| i.name.clone()))
                    .ok()
                    .flatten()?;
                let inner = state.path_of(ino)?;
                let mut p = format!("/{SNAPSHOTS_DIR}/").into_bytes();
                p.extend_from_slice(&name);
                if inner != b"/" {
                    p.extend_from_slice(&inner);
                }
                Some(show_path(&p))
            }
        }
    }

    /// Inode `ino` of a snapshot tree.
    fn snap_inode(state: &MetaState, ino: InodeNo) -> Result<Inode, Error> {
        state.inode(ino)?.ok_or_else(|| not_found(ino))
    }

    /// The attributes of `ino` (in the live tree with this process's unflushed size and mtime).
    pub fn attr(&self, ino: InodeNo) -> Result<Inode, Error> {
        match &self.tree {
            Tree::Live => self.store.attr(ino),
            Tree::Snapshot { state, .. } => Self::snap_inode(state, ino),
        }
    }

    /// Bytes of `i` (an inode of this tree) that hold data, holes excluded: what `st_blocks`
    /// counts. Regular files only; anything else reports its size.
    pub fn allocated(&self, i: &Inode) -> u64 {
        match (&self.tree, i.kind) {
            (Tree::Live, FileKind::File) => self.store.allocated(i),
            (Tree::Live, _) => i.size,
            (Tree::Snapshot { state, .. }, _) => committed_allocated(state, i).unwrap_or(i.size),
        }
    }

    /// [`View::attr`] and [`View::allocated`] from one read of the metadata.
    pub fn attr_allocated(&self, ino: InodeNo) -> Result<(Inode, u64), Error> {
        match &self.tree {
            Tree::Live => self.store.attr_allocated(ino),
            Tree::Snapshot { state, .. } => {
                let i = Self::snap_inode(state, ino)?;
                let used = committed_allocated(state, &i)?;
                Ok((i, used))
            }
        }
    }

    /// Entry `name` of directory `parent`, with its allocated bytes: `NameTooLong`, `NotFound`
    /// (no such parent or entry), `NotADirectory` (the parent).
    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<(Inode, u64), Error> {
        let Tree::Snapshot { state, .. } = &self.tree else {
            return self.store.lookup_child_allocated(parent, name);
        };
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong {
                path: show_path(name),
            });
        }
        let dir = Self::snap_inode(state, parent)?;
        if dir.kind != FileKind::Dir {
            return Err(Error::NotADirectory {
                path: inode_path(parent),
            });
        }
        let missing = || Error::NotFound {
            path: show_path(name),
        };
        let child = state.lookup(parent, name)?.ok_or_else(missing)?;
        let i = state.inode(child)?.ok_or_else(missing)?;
        let used = committed_allocated(state, &i)?;
        Ok((i, used))
    }

    /// Entries of directory `ino`: name, inode, kind (without `.` and `..`), sorted by name.
    pub fn read_dir(&self, ino: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo, FileKind)>, Error> {
        let Tree::Snapshot { state, .. } = &self.tree else {
            return self.store.read_dir(ino);
        };
        let d = Self::snap_inode(state, ino)?;
        if d.kind != FileKind::Dir {
            return Err(Error::NotADirectory {
                path: inode_path(ino),
            });
        }
        let mut out = Vec::new();
        for (n, c) in state.entries(ino)? {
            if let Some(i) = state.inode(c)? {
                out.push((n, c, i.kind));
            }
        }
        Ok(out)
    }

    /// Up to `len` bytes of file `ino` at `off` (short at its end; holes read as zeros):
    /// `IsADirectory` for a directory.
    pub fn read(&self, ino: InodeNo, off: u64, len: u32) -> Result<Vec<u8>, Error> {
        let Tree::Snapshot { state, .. } = &self.tree else {
            return self.store.read_at(ino, off, len);
        };
        let i = Self::snap_inode(state, ino)?;
        if i.kind == FileKind::Dir {
            return Err(Error::IsADirectory {
                path: inode_path(ino),
            });
        }
        let extents = state.extents(ino)?;
        self.store.read_extents_range(&i, &extents, off, len)
    }

    /// Extended attribute `name` of `ino`: `NoAttribute` if it has none of that name.
    pub fn xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.tree {
            Tree::Live => self.store.get_xattr(ino, name),
            Tree::Snapshot { state, .. } => Self::snap_inode(state, ino)?
                .xattrs
                .remove(name)
                .ok_or_else(|| Error::NoAttribute {
                    name: String::from_utf8_lossy(name).into_owned(),
                }),
        }
    }

    /// The names of the extended attributes of `ino`.
    pub fn xattr_names(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, Error> {
        match &self.tree {
            Tree::Live => self.store.list_xattr(ino),
            Tree::Snapshot { state, .. } => {
                Ok(Self::snap_inode(state, ino)?.xattrs.into_keys().collect())
            }
        }
    }

    /// The target of symlink `ino`: `InvalidPath` (what `readlink(2)` answers with `EINVAL`) if
    /// it is not a symlink.
    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>, Error> {
        let i = self.attr(ino)?;
        if i.kind != FileKind::Symlink {
            return Err(Error::InvalidPath {
                path: inode_path(ino),
                reason: "not a symbolic link".into(),
            });
        }
        Ok(i.target)
    }

    /// `lseek(SEEK_DATA / SEEK_HOLE)` in `ino` from `off`; `None` means `ENXIO`. In the live tree
    /// this process's unflushed writes to the file are committed first.
    pub fn seek(&self, ino: InodeNo, off: u64, what: Seek) -> Result<Option<u64>, Error> {
        let Tree::Snapshot { state, .. } = &self.tree else {
            return self.store.seek(ino, off, what);
        };
        let i = Self::snap_inode(state, ino)?;
        let extents = state.extents(ino)?;
        Ok(seek_extents(i.size, &extents, off, what))
    }

    /// The inode a path of this tree names (relative to its root; symlinks are not followed).
    pub fn resolve(&self, path: &[u8]) -> Result<InodeNo, Error> {
        match &self.tree {
            Tree::Live => self.store.read(|s| Tx::new(s).resolve(path))?,
            Tree::Snapshot { state, .. } => Tx::new(state).resolve(path),
        }
    }

    /// The attributes of the inode a path of this tree names.
    pub fn stat(&self, path: &[u8]) -> Result<Inode, Error> {
        self.attr(self.resolve(path)?)
    }
}
