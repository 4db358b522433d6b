//! The reading side of [`VerFs`]: every request that only reads, over a resolved node (the live
//! tree or a snapshot's through an engine view, or `/.snapshots`), never branching on which tree.
//!
//! Not here: changes (`change`), the kernel-facing handlers (`filesystem`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fuser::{FileAttr, FileHandle, FopenFlags, INodeNo, OpenFlags};
use verfs_engine::error::Error;
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::meta::{show_path, FileKind, Inode, NAME_MAX, SNAPSHOTS_DIR};
use verfs_engine::overlay::Seek;
use verfs_engine::view::{self, View};

use super::{Listing, Result, VerFs};
use crate::attr::{self, file_attr, TTL};
use crate::errno::FsError;
use crate::inodes::{self, Node};

impl VerFs {
    /// The kernel's view of inode `i` of the tree of `view`, which has `used` allocated bytes.
    pub(super) fn attr_in(&self, view: &View<'_>, i: &Inode, used: u64) -> Result<FileAttr> {
        let mut a = file_attr(i, used);
        a.ino = self.inodes.fuse_ino(view, i.ino)?;
        Ok(a)
    }

    /// The kernel's view of a node, and how long it may cache it.
    pub(super) fn attr(&self, node: &Node<'_>) -> Result<(FileAttr, Duration)> {
        match node {
            Node::SnapshotsDir => {
                let snaps = view::ready_snapshots(&self.store)?;
                Ok((attr::snapshots_dir_attr(&snaps, self.started), TTL))
            }
            Node::In { view, ino } => {
                let (i, used) = view.attr_allocated(*ino)?;
                Ok((self.attr_in(view, &i, used)?, attr::ttl(view)))
            }
        }
    }

    /// The kernel's view of live inode `i`, just made or changed by this process.
    pub(super) fn live_attr(&self, i: &Inode) -> Result<FileAttr> {
        let view = View::live(&self.store);
        self.attr_in(&view, i, view.allocated(i))
    }

    /// Lookup of `name` in `parent`: the attributes, how long the kernel may cache them, and how
    /// long the entry.
    pub(super) fn lookup_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(FileAttr, Duration, Duration)> {
        if inodes::is_snapshots_entry(parent, name) {
            let (a, ttl) = self.attr(&Node::SnapshotsDir)?;
            return Ok((a, ttl, TTL));
        }
        let name = name.as_bytes();
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong {
                path: show_path(name),
            }
            .into());
        }
        match self.node(parent)? {
            Node::SnapshotsDir => {
                // A name can be deleted and given to a new snapshot: never cache the entry.
                let snap = view::ready_snapshots(&self.store)?
                    .into_iter()
                    .find(|s| s.name.as_bytes() == name)
                    .ok_or_else(|| Error::NotFound {
                        path: format!("/{SNAPSHOTS_DIR}/{}", show_path(name)),
                    })?;
                let view = View::snapshot(&self.store, snap.id)?;
                let (a, ttl) = self.attr(&Node::In {
                    view,
                    ino: Ino::ROOT,
                })?;
                Ok((a, ttl, TTL))
            }
            Node::In { view, ino } => {
                let (i, used) = view.lookup(ino, name)?;
                let ttl = attr::ttl(&view);
                Ok((self.attr_in(&view, &i, used)?, ttl, ttl))
            }
        }
    }

    /// Directory `dir` as readdir numbers it: offset 1 = ".", 2 = "..", 3.. = the entries (the
    /// kernel resolves ".." itself, so both dots name `dir`). `/.snapshots` is not listed in the
    /// live root (lookup finds it), so tools that walk the mount do not copy every snapshot.
    pub(super) fn listing(&self, dir: INodeNo) -> Result<Listing> {
        let mut out = vec![
            (b".".to_vec(), dir, FileKind::Dir),
            (b"..".to_vec(), dir, FileKind::Dir),
        ];
        match self.node(dir)? {
            Node::SnapshotsDir => {
                for s in view::ready_snapshots(&self.store)? {
                    let root = self.inodes.snapshot_root(s.id)?;
                    out.push((s.name.into_bytes(), root, FileKind::Dir));
                }
            }
            Node::In { view, ino } => {
                let mut entries = view.read_dir(ino)?;
                if view.is_live() && ino == Ino::ROOT {
                    // Only a store older than the reserved name can hold such an entry; the
                    // virtual directory shadows it.
                    entries.retain(|(name, _, _)| name != SNAPSHOTS_DIR.as_bytes());
                }
                for (name, child, kind) in entries {
                    out.push((name, self.inodes.fuse_ino(&view, child)?, kind));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn open_file(
        &self,
        ino: INodeNo,
        flags: OpenFlags,
    ) -> Result<(FileHandle, FopenFlags)> {
        let acc = flags.0 & libc::O_ACCMODE;
        if acc != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            if self.read_only && acc != libc::O_RDONLY {
                return Err(FsError::ReadOnly("the mount is read-only"));
            }
            inodes::live(ino)?;
        }
        let Node::In { view, ino } = self.node(ino)? else {
            return Err(FsError::IsADirectory);
        };
        if view.attr(ino)?.kind == FileKind::Dir {
            return Err(FsError::IsADirectory);
        }
        // A snapshot's file needs no handle state: nothing to flush, never an orphan.
        let fh = if view.is_live() {
            self.new_handle(ino)
        } else {
            FileHandle(0)
        };
        Ok((fh, attr::open_flags(&view, false)))
    }

    pub(super) fn open_dir(&self, ino: INodeNo) -> Result<FopenFlags> {
        match self.node(ino)? {
            // `/.snapshots` changes with every snapshot: read afresh.
            Node::SnapshotsDir => Ok(FopenFlags::empty()),
            Node::In { view, ino } => {
                if view.attr(ino)?.kind != FileKind::Dir {
                    return Err(FsError::NotADirectory);
                }
                Ok(attr::open_flags(&view, true))
            }
        }
    }

    pub(super) fn read_file(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::SnapshotsDir => Err(FsError::IsADirectory),
            Node::In { view, ino } => Ok(view.read(ino, offset, size)?),
        }
    }

    pub(super) fn statfs_of(&self) -> Result<(libc::statvfs, u64)> {
        // Space is the host filesystem's under the store; inodes are unlimited.
        let root = &self.store.layout().root;
        let c = std::ffi::CString::new(root.as_os_str().as_bytes())
            .map_err(|_| FsError::Invalid("store path"))?;
        // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid path and `st` a valid out-pointer for the duration of the call.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(FsError::Os(std::io::Error::last_os_error()));
        }
        let files = self.store.read(|s| s.inode_count()).unwrap_or(0);
        Ok((st, files))
    }

    pub(super) fn get_xattr(&self, ino: INodeNo, name: &OsStr) -> Result<Vec<u8>> {
        match self.node(ino)? {
            // `/.snapshots` itself has no extended attributes.
            Node::SnapshotsDir => Err(Error::NoAttribute {
                name: name.to_string_lossy().into_owned(),
            }
            .into()),
            Node::In { view, ino } => Ok(view.xattr(ino, name.as_bytes())?),
        }
    }

    pub(super) fn list_xattr(&self, ino: INodeNo) -> Result<Vec<u8>> {
        let names = match self.node(ino)? {
            Node::SnapshotsDir => Vec::new(),
            Node::In { view, ino } => view.xattr_names(ino)?,
        };
        let mut buf = Vec::new();
        for n in names {
            buf.extend_from_slice(&n);
            buf.push(0);
        }
        Ok(buf)
    }

    pub(super) fn exists(&self, ino: INodeNo) -> Result<()> {
        match self.node(ino)? {
            Node::SnapshotsDir => Ok(()),
            Node::In { view, ino } => view.attr(ino).map(|_| ()).map_err(FsError::from),
        }
    }

    pub(super) fn readlink_of(&self, ino: INodeNo) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::SnapshotsDir => Err(FsError::Invalid("not a symbolic link")),
            Node::In { view, ino } => Ok(view.readlink(ino)?),
        }
    }

    pub(super) fn seek(&self, ino: INodeNo, offset: i64, whence: i32) -> Result<i64> {
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            // SEEK_SET/CUR/END are handled by the kernel and never reach a filesystem.
            _ => return Err(FsError::Invalid("whence")),
        };
        if offset < 0 {
            return Err(FsError::NoSuchOffset);
        }
        let Node::In { view, ino } = self.node(ino)? else {
            return Err(FsError::Invalid("lseek on /.snapshots"));
        };
        match view.seek(ino, offset as u64, what)? {
            Some(p) => Ok(p as i64),
            None => Err(FsError::NoSuchOffset),
        }
    }
}
