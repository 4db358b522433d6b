//! [`VerFs`]: the `fuser::Filesystem` of a mount, one short handler per FUSE operation.
//!
//! Overview: a read handler resolves the request's inode to a node ([`Inodes::resolve`]: the
//! live tree or a snapshot's, through an engine [`View`](verfs_engine::view::View), or the virtual `/.snapshots`) and asks
//! the view; a change takes the live inode ([`inodes::live`], `EROFS` for anything in a snapshot)
//! and calls the matching [`Store`] operation, one engine transaction per namespace request. Every
//! handler returns a `Result<_, FsError>`; [`errno::reply_errno`] turns a failure into the answer.
//! File writes go into the engine's per-inode overlay and are committed on `flush` (close) and
//! `fsync`.
//!
//! Not here: FUSE numbering (`inodes`), attributes and cache lifetimes (`attr`), locks (`locks`),
//! errno values (`errno`), mounting (`mount`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use verfs_coordination::lock::LockTable;
use verfs_engine::error::Error;
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::model::{FileKind, Timestamp, NAME_MAX, SNAPSHOTS_DIR};
use verfs_engine::ops::inode::SetAttr;
use verfs_engine::store::Store;

use crate::attr::{self, file_type, TTL};
use crate::errno::{self, FsError};
use crate::inodes::{self, Inodes, Node};
use crate::locks::Locks;

mod change;
mod read;

type Result<T, E = FsError> = std::result::Result<T, E>;

/// What an open file handle refers to.
struct Handle {
    ino: Ino,
}

/// One entry of a listing as readdir numbers it: name, FUSE number, kind.
type Listing = Vec<(Vec<u8>, INodeNo, FileKind)>;

/// The filesystem a mount serves.
pub struct VerFs {
    store: Arc<Store>,
    /// The store's path, as log lines name it.
    name: String,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    read_only: bool,
    locks: Locks,
    inodes: Inodes,
    /// Times of `/.snapshots` while no snapshot exists.
    started: Timestamp,
    /// Negotiate `FUSE_WRITEBACK_CACHE` in `init`.
    writeback_cache: bool,
}

impl VerFs {
    /// A filesystem over `store`; opens (creating if needed) the store's lock table, and makes
    /// the store commit this mount's unflushed writes when it votes on a snapshot barrier
    /// ([SNAP-2]), so a snapshot taken by any process holds what was written here before.
    pub fn new(store: Arc<Store>, read_only: bool) -> Result<VerFs, Error> {
        let table =
            LockTable::open(&store.layout().root.join("locks")).map_err(Error::coordination)?;
        // Weak: the store owns the hook; a strong reference would keep the store alive forever.
        let weak: Weak<Store> = Arc::downgrade(&store);
        store.set_barrier_hook(Box::new(move || match weak.upgrade() {
            Some(s) => s.flush_all().map_err(|e| e.to_string()),
            None => Ok(()),
        }));
        Ok(VerFs {
            name: store.layout().root.display().to_string(),
            store,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_only,
            locks: Locks::new(table),
            inodes: Inodes::default(),
            started: Timestamp::now(),
            writeback_cache: false,
        })
    }

    /// Ask the kernel for its writeback cache ([`crate::MountConfig::writeback_cache`]).
    pub fn with_writeback_cache(mut self, on: bool) -> VerFs {
        self.writeback_cache = on;
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The errno for request `op` on `ino` that failed with `e` (logged when the cause would be
    /// lost).
    fn fail(&self, op: &'static str, ino: INodeNo, e: FsError) -> Errno {
        let file_of = || match self.node(ino) {
            Ok(Node::In { view, ino }) => view.path_of(ino),
            Ok(Node::SnapshotsDir) => Some(format!("/{SNAPSHOTS_DIR}")),
            Err(_) => None,
        };
        errno::reply_errno(&self.name, op, ino.0, file_of, &e)
    }

    /// What FUSE number `ino` names.
    fn node(&self, ino: INodeNo) -> Result<Node<'_>> {
        self.inodes.resolve(&self.store, ino)
    }

    /// The live inode `ino` names, for a change: `EROFS` on a read-only mount or in a snapshot.
    fn writable(&self, ino: INodeNo) -> Result<Ino> {
        if self.read_only {
            return Err(FsError::ReadOnly("the mount is read-only"));
        }
        inodes::live(ino)
    }

    fn new_handle(&self, ino: Ino) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Handle { ino });
        self.store.open_inode(ino);
        FileHandle(fh)
    }

    fn close_handle(&self, fh: FileHandle) -> Result<()> {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        match h {
            Some(h) => Ok(self.store.close_inode(h.ino)?),
            None => Ok(()),
        }
    }
}

/// Answer an operation that returns nothing.
fn empty(fs: &VerFs, op: &'static str, ino: INodeNo, reply: ReplyEmpty, r: Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fs.fail(op, ino, e)),
    }
}

/// Answer an operation that returns a directory entry.
fn entry(fs: &VerFs, op: &'static str, ino: INodeNo, reply: ReplyEntry, r: Result<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(fs.fail(op, ino, e)),
    }
}

/// Answer `getxattr`/`listxattr`: the size when asked for it (`size` 0), else the bytes if they
/// fit.
fn xattr_reply(
    fs: &VerFs,
    op: &'static str,
    ino: INodeNo,
    size: u32,
    reply: ReplyXattr,
    r: Result<Vec<u8>>,
) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => {
            reply.error(fs.fail(op, ino, FsError::BufferTooSmall(size)))
        }
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(fs.fail(op, ino, e)),
    }
}

impl Filesystem for VerFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // POSIX (fcntl) and BSD (flock) locks go through getlk/setlk, so they hold across every
        // mount of the store; 1 MiB writes keep the request count down.
        // READDIRPLUS_AUTO: the kernel asks for attributes with the listing when a program
        // (ls -l, find, rsync) looks them up after reading the directory. 128 KiB readahead (the
        // kernel's cap here) and parallel directory operations keep the request count down.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_POSIX_LOCKS
                | fuser::InitFlags::FUSE_FLOCK_LOCKS
                | fuser::InitFlags::FUSE_DO_READDIRPLUS
                | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS,
        );
        if self.writeback_cache {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(128 << 10);
        Ok(())
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        match self.locks.getlk(ino.0, lock_owner, start, end, typ) {
            // OFD locks carry no pid: the holder may be in another process or on another host.
            Ok(Some(c)) => reply.locked(c.start, c.end, c.typ, 0),
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, pid),
            Err(e) => reply.error(self.fail("getlk", ino, e)),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let name = self.name.clone();
        let answer = move |reply: ReplyEmpty, r: Result<()>| match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::reply_errno(&name, "setlk", ino.0, || None, &e)),
        };
        self.locks.setlk(
            ino.0, lock_owner, start, end, typ, pid, sleep, reply, answer,
        )
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_entry(parent, name) {
            Ok((attr, attr_ttl, entry_ttl)) => {
                reply.entry_with_ttls(&attr_ttl, &entry_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(self.fail("lookup", parent, e)),
        }
    }

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {
        // Nothing to drop: no per-inode state lives in the mount beyond open handles, and an
        // unlinked inode is kept for its open handles (`open_inode`/`close_inode`), not for the
        // kernel's lookup count. `batch_forget` falls back to this.
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        // Directory handles carry no state: every readdir reads the committed directory.
        reply.ok()
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.attr(&n)) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(self.fail("getattr", ino, e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            perm: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(attr::time_or_now),
            mtime: mtime.map(attr::time_or_now),
            ctime: ctime.map(attr::from_system_time),
        };
        match self.set_attr(ino, &a) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(self.fail("setattr", ino, e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.readlink_of(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino, e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = match attr::kind_of_mode(mode) {
            None | Some(FileKind::Dir) | Some(FileKind::Symlink) => {
                Err(FsError::Invalid("mknod file type"))
            }
            Some(kind) => {
                let mut i = Self::new_inode(req, kind, mode, umask);
                i.rdev = rdev as u64;
                self.make_node(parent, name, i)
            }
        };
        entry(self, "mknod", parent, reply, r)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let i = Self::new_inode(req, FileKind::Dir, mode, umask);
        entry(
            self,
            "mkdir",
            parent,
            reply,
            self.make_node(parent, name, i),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.remove_entry(parent, name, false);
        empty(self, "unlink", parent, reply, r)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.remove_entry(parent, name, true);
        empty(self, "rmdir", parent, reply, r)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut i = Self::new_inode(req, FileKind::Symlink, 0o777, 0);
        i.target = target.as_os_str().as_bytes().to_vec();
        entry(
            self,
            "symlink",
            parent,
            reply,
            self.make_node(parent, link_name, i),
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.rename_entry(parent, name, newparent, newname, flags);
        empty(self, "rename", parent, reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.link_entry(ino, newparent, newname);
        entry(self, "link", ino, reply, r)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(ino, flags) {
            Ok((fh, flags)) => reply.opened(fh, flags),
            Err(e) => reply.error(self.fail("open", ino, e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_file(ino, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(self.fail("read", ino, e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .writable(ino)
            .and_then(|i| Ok(self.store.write_at(i, offset, data)?));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(self.fail("write", ino, e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): drop the caller's fcntl locks on the file, and commit, so a process that
        // opens the file afterwards sees it whole.
        self.locks.drop_posix(lock_owner, ino.0);
        empty(self, "flush", ino, reply, self.commit(ino, false))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(owner) = lock_owner {
            self.locks.drop_owner(owner);
        }
        empty(self, "release", ino, reply, self.close_handle(fh))
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self, "fsync", ino, reply, self.commit(ino, true))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(ino) {
            Ok(flags) => reply.opened(FileHandle(0), flags),
            Err(e) => reply.error(self.fail("opendir", ino, e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.listing(ino) {
            Ok(e) => e,
            Err(e) => return reply.error(self.fail("readdir", ino, e)),
        };
        for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(
                child,
                (i + 1) as u64,
                file_type(kind),
                OsStr::from_bytes(&name),
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are log records: syncing the log makes them durable.
        let r = self.store.sync().map_err(FsError::from);
        empty(self, "fsyncdir", ino, reply, r)
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.statfs_of() {
            Ok((st, files)) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                files + st.f_ffree,
                st.f_ffree,
                st.f_bsize as u32,
                NAME_MAX as u32,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(self.fail("statfs", ino, e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.set_xattr(ino, name, value, flags);
        empty(self, "setxattr", ino, reply, r)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.get_xattr(ino, name);
        xattr_reply(self, "getxattr", ino, size, reply, r)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.list_xattr(ino);
        xattr_reply(self, "listxattr", ino, size, reply, r)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .writable(ino)
            .and_then(|i| Ok(self.store.remove_xattr(i, name.as_bytes())?));
        empty(self, "removexattr", ino, reply, r)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (`default_permissions`); this answers F_OK.
        empty(self, "access", ino, reply, self.exists(ino))
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let entries = match self.listing(ino) {
            Ok(e) => e,
            Err(e) => return reply.error(self.fail("readdirplus", ino, e)),
        };
        // Attributes only for the entries this reply can carry, not for the ones skipped.
        for (i, (name, child, _)) in entries.into_iter().enumerate().skip(offset as usize) {
            let Ok((attr, ttl)) = self.node(child).and_then(|n| self.attr(&n)) else {
                continue; // removed since the listing
            };
            let name = OsStr::from_bytes(&name);
            if reply.add(child, (i + 1) as u64, name, &ttl, &attr, Generation(0)) {
                break;
            }
        }
        reply.ok()
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.fallocate_range(ino, offset, length, mode);
        empty(self, "fallocate", ino, reply, r)
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        match self.seek(ino, offset, whence) {
            Ok(p) => reply.offset(p),
            Err(e) => reply.error(self.fail("lseek", ino, e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.copy_range(ino_in, offset_in, ino_out, offset_out, len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.fail("copy_file_range", ino_out, e)),
        }
    }

    fn bmap(
        &self,
        _req: &Request,
        ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        // Files live in compressed, deduplicated chunks, not at fixed device blocks: there is no
        // block number to give (the kernel only asks this of block-device-backed mounts).
        reply.error(self.fail("bmap", ino, FsError::Invalid("no block numbers")))
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No verfs-specific ioctls exist; ENOTTY is what Linux filesystems answer for unknown ones.
        reply.error(self.fail("ioctl", ino, FsError::UnknownIoctl))
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        // Regular files are always ready for reading and writing, as on any disk filesystem.
        reply.poll(
            events
                & (fuser::PollEvents::POLLIN
                    | fuser::PollEvents::POLLOUT
                    | fuser::PollEvents::POLLRDNORM
                    | fuser::PollEvents::POLLWRNORM),
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(req, parent, name, mode, umask) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(self.fail("create", parent, e)),
        }
    }
}
