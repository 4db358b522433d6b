//! The changing side of [`VerFs`]: every request that changes the store. Each takes the live
//! inode (`EROFS` on a read-only mount and for anything in a snapshot) and calls one [`Store`]
//! operation, which is one engine transaction.
//!
//! Not here: reads (`read`), the kernel-facing handlers (`filesystem`).
//!
//! [`Store`]: verfs_engine::store::Store

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{FileAttr, FileHandle, INodeNo, RenameFlags, Request};
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::meta::{FileKind, Inode};
use verfs_engine::ops::inode::{RenameMode, SetAttr};

use super::{Result, VerFs};
use crate::errno::FsError;
use crate::inodes;

impl VerFs {
    /// `unlink` (`dir` false) and `rmdir` (`dir` true); nothing in `/.snapshots` can go.
    pub(super) fn remove_entry(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<()> {
        let p = self.writable(parent)?;
        if inodes::is_snapshots_entry(parent, name) {
            return Err(FsError::ReadOnly("/.snapshots cannot be removed"));
        }
        Ok(self.store.unlink_at(p, name.as_bytes(), dir)?)
    }

    /// A new inode of `kind` for the caller, with `mode` less `umask`.
    pub(super) fn new_inode(req: &Request, kind: FileKind, mode: u32, umask: u32) -> Inode {
        let mut i = Inode::new(Ino(0), kind, mode & !umask & 0o7777);
        i.uid = req.uid();
        i.gid = req.gid();
        i
    }

    /// `mknod`, `mkdir`, `symlink`: make `proto` as `name` in `parent`.
    pub(super) fn make_node(
        &self,
        parent: INodeNo,
        name: &OsStr,
        proto: Inode,
    ) -> Result<FileAttr> {
        let p = self.writable(parent)?;
        let i = self.store.make_node(p, name.as_bytes(), proto)?;
        self.live_attr(&i)
    }

    /// close(2) and fsync(2): commit this process's writes to `ino` (`sync`: and make the log
    /// durable). A snapshot's file has nothing to commit.
    pub(super) fn commit(&self, ino: INodeNo, sync: bool) -> Result<()> {
        let Ok(i) = inodes::live(ino) else {
            return Ok(());
        };
        self.store.flush_inode(i)?;
        if sync {
            self.store.sync()?;
        }
        Ok(())
    }

    pub(super) fn set_attr(&self, ino: INodeNo, a: &SetAttr) -> Result<FileAttr> {
        let i = self.store.set_attr(self.writable(ino)?, a)?;
        self.live_attr(&i)
    }

    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let (from, to) = (self.writable(parent)?, self.writable(newparent)?);
        // Renaming `/.snapshots` away is refused here; renaming onto it, by the engine (its name
        // is reserved: EEXIST).
        if inodes::is_snapshots_entry(parent, name) {
            return Err(FsError::ReadOnly("/.snapshots cannot be renamed"));
        }
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            // RENAME_WHITEOUT is for overlay filesystems.
            return Err(FsError::Invalid("rename flags"));
        };
        let (name, newname) = (name.as_bytes(), newname.as_bytes());
        Ok(self.store.rename_at(from, name, to, newname, mode)?)
    }

    pub(super) fn link_entry(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<FileAttr> {
        let (i, p) = (self.writable(ino)?, self.writable(newparent)?);
        let i = self.store.link_at(i, p, newname.as_bytes())?;
        self.live_attr(&i)
    }

    pub(super) fn set_xattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        let i = self.writable(ino)?;
        // POSIX ACLs are not supported: answering EOPNOTSUPP makes `cp -a`/`setfacl` fall back to
        // chmod, as on a filesystem mounted without ACLs (storing them as plain xattrs would
        // silently ignore their effect on the mode).
        if name.as_bytes().starts_with(b"system.posix_acl_") {
            return Err(FsError::NotSupported("POSIX ACLs"));
        }
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        Ok(self
            .store
            .set_xattr(i, name.as_bytes(), value, create, replace)?)
    }

    pub(super) fn fallocate_range(
        &self,
        ino: INodeNo,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        let i = self.writable(ino)?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
        // Collapsing or inserting ranges would shift every later extent; not supported, as on
        // many Linux filesystems.
        let supported =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !supported != 0 {
            return Err(FsError::NotSupported("fallocate mode"));
        }
        if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && !keep_size {
            return Err(FsError::Invalid(
                "FALLOC_FL_PUNCH_HOLE without FALLOC_FL_KEEP_SIZE",
            ));
        }
        Ok(self.store.fallocate(i, offset, length, punch, keep_size)?)
    }

    pub(super) fn copy_range(
        &self,
        ino_in: INodeNo,
        offset_in: u64,
        ino_out: INodeNo,
        offset_out: u64,
        len: u64,
    ) -> Result<u32> {
        let to = self.writable(ino_out)?;
        // The engine shares chunks between live files only; EOPNOTSUPP makes the kernel copy the
        // bytes itself (read, then write).
        let from = inodes::live(ino_in)
            .map_err(|_| FsError::NotSupported("copy_file_range from a snapshot"))?;
        // The reply carries a u32: copy at most 1 GiB per call (the caller loops, as for write).
        let len = len.min(1 << 30);
        Ok(self
            .store
            .copy_range(from, offset_in, to, offset_out, len)? as u32)
    }

    pub(super) fn create_file(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<(FileAttr, FileHandle)> {
        let p = self.writable(parent)?;
        let proto = Self::new_inode(req, FileKind::File, mode, umask);
        let i = self.store.make_node(p, name.as_bytes(), proto)?;
        let fh = self.new_handle(i.ino);
        Ok((self.live_attr(&i)?, fh))
    }
}
