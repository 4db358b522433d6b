//! The verfs FUSE adapter: maps kernel requests onto the engine; it holds no storage logic.
//!
//! Overview: [`VerFs`] implements `fuser::Filesystem` over an open [`Store`]. Inode numbers are
//! the store's inode numbers (the root is 1 in both). Every namespace request becomes one engine
//! transaction, so a change is visible to every process sharing the store when the reply is sent.
//! File writes go into the engine's per-inode overlay and are committed on `flush` (close) and
//! `fsync` (close-to-open consistency). The kernel's entry and attribute caches are disabled
//! (TTL 0), so a change made by another process is seen by the next lookup. Errors are mapped to
//! errno values in exactly one place, [`errno`]. [`mount`] runs a mount in the foreground until
//! SIGINT/SIGTERM or an external unmount, then flushes everything and releases the lease.
//!
//! Snapshots: `/.snapshots` is a read-only virtual directory, found by lookup but not listed in
//! the root (so `find`, `cp -a` and `rsync` of the mount do not descend into it). It lists the
//! ready snapshots; below `/.snapshots/NAME` each snapshot's tree is served from its
//! `snapshots/<id>.snap` and its chunks. Those inodes get FUSE numbers with bit 63 set (live
//! inode numbers never reach it): bits 40..62 are a slot this mount gives each snapshot on first
//! use, bits 0..39 the snapshot's own inode number; `/.snapshots` itself is `1 << 63`. Every
//! change to them is `EROFS`. A snapshot never changes, so its inodes are cached by the kernel
//! ([`SNAP_TTL`], page cache kept across opens); a deleted snapshot's inodes answer `ENOENT`.
//! The mount votes on a snapshot barrier by committing every unflushed write
//! ([`Store::set_barrier_hook`]).
//!
//! Format and protocol: `data-layout.md`. Supported operations and their errors: README "Mount".

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use verfs_coordination::lock::{self, LockTable, Mode, Resource, Wait};
use verfs_engine::error::Error;
use verfs_engine::fsops::{RenameMode, SetAttr};
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::meta::{FileKind, Inode, MetaState, Timestamp, SNAPSHOTS_DIR};
use verfs_engine::store::Store;

/// Entry and attribute cache lifetime given to the kernel. Zero: every lookup asks the store,
/// so renames and unlinks by other processes are seen at once.
const TTL: Duration = Duration::ZERO;

/// Bit 63 of a FUSE inode number: an inode of `/.snapshots` (read-only), not of the live tree.
const SNAP_BIT: u64 = 1 << 63;
/// FUSE inode number of `/.snapshots`.
const SNAPSHOTS_INO: u64 = SNAP_BIT;
/// A snapshot's own inode number takes the low 40 bits of a FUSE inode number ...
const SNAP_INO_BITS: u32 = 40;
/// ... and the mount's slot for the snapshot the 23 bits above (slots count from 1).
const SNAP_SLOT_MAX: u64 = (1 << (63 - SNAP_INO_BITS)) - 1;
/// Entry and attribute cache lifetime of the inodes inside a snapshot: they never change, and a
/// FUSE number is never reused for another snapshot. A path walk still notices a deleted snapshot
/// at once: `/.snapshots` and its entries are answered with [`TTL`].
pub const SNAP_TTL: Duration = Duration::from_secs(60);

/// The one place where engine errors become errno values. An `EIO` (a damaged record, a failing
/// disk) reaches the caller without its cause, so the cause, which names the file and the
/// offset, goes to the mount's stderr (the log of a `mount -d`).
pub fn errno(e: &Error) -> Errno {
    let n = e.errno();
    if n == libc::EIO {
        eprintln!("verfs mount: I/O error: {e}");
    }
    Errno::from_i32(n)
}

/// Answer an operation that returns nothing.
fn reply_empty(reply: ReplyEmpty, r: Result<(), Error>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nsecs as u64)
    }
}

fn from_system_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nsecs: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (secs, nsecs) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Timestamp { secs, nsecs }
        }
    }
}

fn time_or_now(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => from_system_time(t),
        TimeOrNow::Now => Timestamp::now(),
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn kind_of_mode(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDev,
        libc::S_IFBLK => FileKind::BlockDev,
        _ => return None,
    })
}

/// The kernel's view of an inode; `allocated` bytes hold data (holes excluded), which is what
/// `st_blocks` reports (`du`, and `cp`'s sparse-file detection, rely on it).
pub fn file_attr(i: &Inode, allocated: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(i.ino.0),
        size: i.size,
        blocks: allocated.div_ceil(512),
        atime: to_system_time(i.atime),
        mtime: to_system_time(i.mtime),
        ctime: to_system_time(i.ctime),
        crtime: to_system_time(i.ctime),
        kind: file_type(i.kind),
        perm: (i.perm & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev as u32,
        blksize: 64 << 10,
        flags: 0,
    }
}

/// What an open file handle refers to.
struct Handle {
    ino: Ino,
}

/// The filesystem a mount serves.
pub struct VerFs {
    store: Arc<Store>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    read_only: bool,
    /// POSIX and flock locks, shared by every process of the store (`STORE/locks/table`).
    locks: LockTable,
    /// One lock owner (an open file description on the table) per kernel lock owner, with the
    /// inodes it may hold range locks on. An owner is dropped (closing its description, which
    /// frees whatever it still holds) once `flush` has released its last inode.
    owners: Mutex<HashMap<u64, HeldLocks>>,
    /// The slot of each snapshot this mount has given inode numbers to.
    slots: Mutex<SnapSlots>,
    /// Times of `/.snapshots` while no snapshot exists.
    started: Timestamp,
    /// Negotiate `FUSE_WRITEBACK_CACHE` in `init`.
    writeback_cache: bool,
}

/// Snapshot ids by slot (bits 40..62 of their FUSE inode numbers) and back. A slot is given on
/// first use and kept for the life of the mount, so a FUSE number never names two inodes.
#[derive(Default)]
struct SnapSlots {
    by_id: HashMap<u64, u64>,
    /// `ids[slot - 1]` is the snapshot of `slot`.
    ids: Vec<u64>,
}

impl SnapSlots {
    /// The FUSE number of inode `ino` of snapshot `id`, giving the snapshot a slot on first use;
    /// `EOVERFLOW` if the inode number or the slot does not fit its bits.
    fn fuse_ino(&mut self, id: u64, ino: Ino) -> Result<u64, Errno> {
        if ino.0 == 0 || ino.0 >> SNAP_INO_BITS != 0 {
            return Err(Errno::EOVERFLOW);
        }
        let slot = match self.by_id.get(&id) {
            Some(s) => *s,
            None => {
                let s = self.ids.len() as u64 + 1;
                if s > SNAP_SLOT_MAX {
                    return Err(Errno::EOVERFLOW);
                }
                self.ids.push(id);
                self.by_id.insert(id, s);
                s
            }
        };
        Ok(SNAP_BIT | slot << SNAP_INO_BITS | ino.0)
    }

    /// The (snapshot id, inode) a FUSE number below `/.snapshots` (not `/.snapshots` itself)
    /// names; `ESTALE` for a number this mount never gave out.
    fn resolve(&self, fuse_ino: u64) -> Result<(u64, Ino), Errno> {
        let slot = (fuse_ino & !SNAP_BIT) >> SNAP_INO_BITS;
        let id = (slot as usize)
            .checked_sub(1)
            .and_then(|i| self.ids.get(i).copied())
            .ok_or(Errno::ESTALE)?;
        Ok((id, Ino(fuse_ino & ((1 << SNAP_INO_BITS) - 1))))
    }
}

/// A `/.snapshots` inode, resolved.
enum SnapNode {
    /// `/.snapshots` itself.
    Dir,
    /// `inode` of snapshot `id`, whose tree is `tree`.
    In {
        id: u64,
        tree: Arc<MetaState>,
        inode: Inode,
    },
}

/// Is `ino` an inode of `/.snapshots` (read-only)?
fn is_snap(ino: INodeNo) -> bool {
    ino.0 & SNAP_BIT != 0
}

/// Is this the entry `/.snapshots`?
fn is_snapshots_entry(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == Ino::ROOT.0 && name.as_bytes() == SNAPSHOTS_DIR.as_bytes()
}

/// What one kernel lock owner holds through this mount.
struct HeldLocks {
    owner: Arc<lock::LockOwner>,
    inos: std::collections::HashSet<u64>,
}

impl VerFs {
    /// A filesystem over `store`; opens (creating if needed) the store's lock table, and makes
    /// the store commit this mount's unflushed writes when it votes on a snapshot barrier
    /// ([SNAP-2]), so a snapshot taken by any process holds what was written here before.
    pub fn new(store: Arc<Store>, read_only: bool) -> Result<VerFs, Error> {
        let locks =
            LockTable::open(&store.layout().root.join("locks")).map_err(Error::coordination)?;
        // Weak: the store owns the hook; a strong reference would keep the store alive forever.
        let weak: Weak<Store> = Arc::downgrade(&store);
        store.set_barrier_hook(Box::new(move || match weak.upgrade() {
            Some(s) => s.flush_all().map_err(|e| e.to_string()),
            None => Ok(()),
        }));
        Ok(VerFs {
            store,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_only,
            locks,
            owners: Mutex::new(HashMap::new()),
            slots: Mutex::new(SnapSlots::default()),
            started: Timestamp::now(),
            writeback_cache: false,
        })
    }

    /// Ask the kernel for its writeback cache ([`MountConfig::writeback_cache`]).
    pub fn with_writeback_cache(mut self, on: bool) -> VerFs {
        self.writeback_cache = on;
        self
    }

    /// The table owner for kernel lock owner `owner`, created on first use and recorded as
    /// possibly holding locks on `ino`.
    fn lock_owner(&self, owner: LockOwner, ino: u64) -> Result<Arc<lock::LockOwner>, Errno> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = owners.get_mut(&owner.0) {
            h.inos.insert(ino);
            return Ok(h.owner.clone());
        }
        let o = Arc::new(self.locks.owner().map_err(|_| Errno::ENOLCK)?);
        owners.insert(
            owner.0,
            HeldLocks {
                owner: o.clone(),
                inos: [ino].into_iter().collect(),
            },
        );
        Ok(o)
    }

    /// close(2) by `owner` of a descriptor of `ino`: POSIX drops every fcntl lock the process
    /// holds on the file. For server-side POSIX locks the kernel sends no unlock of its own (its
    /// local lock list is empty); FUSE_FLUSH with the owner is the only notice, also for the
    /// implicit closes of a dying process, SIGKILL included.
    fn drop_posix_locks(&self, owner: LockOwner, ino: u64) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = owners.get_mut(&owner.0) else {
            return;
        };
        if !h.inos.remove(&ino) {
            return;
        }
        let all = Resource::Range {
            ino,
            start: 0,
            end: lock::TO_EOF,
        };
        if let Err(e) = h.owner.release(&all) {
            // Dropping the description below releases the lock all the same.
            eprintln!("verfs mount: releasing fcntl locks on inode {ino}: {e}");
            h.inos.clear();
        }
        if h.inos.is_empty() {
            owners.remove(&owner.0);
        }
    }

    /// Directory `ino` as readdir numbers it: offset 1 = ".", 2 = "..", 3.. = the entries (the
    /// kernel resolves ".." itself, so both dots name `ino`). `/.snapshots` is not listed in the
    /// root (lookup finds it), so tools that walk the mount do not copy every snapshot.
    fn listing(&self, ino: Ino) -> Result<Vec<(Vec<u8>, Ino, FileKind)>, Error> {
        let mut entries = self.store.read_dir(ino)?;
        if ino == Ino::ROOT {
            // Only a store older than the reserved name can hold such an entry; the virtual
            // directory shadows it.
            entries.retain(|(name, _, _)| name != SNAPSHOTS_DIR.as_bytes());
        }
        let dots = [
            (b".".to_vec(), ino, FileKind::Dir),
            (b"..".to_vec(), ino, FileKind::Dir),
        ];
        Ok(dots.into_iter().chain(entries).collect())
    }

    /// The kernel's view of `i`.
    fn attr_of(&self, i: &Inode) -> FileAttr {
        let allocated = match i.kind {
            FileKind::File => self.store.allocated(i),
            _ => i.size,
        };
        file_attr(i, allocated)
    }

    /// Answer an operation that returns a directory entry.
    fn reply_entry(&self, reply: ReplyEntry, r: Result<Inode, Error>) {
        match r {
            Ok(i) => reply.entry(&TTL, &self.attr_of(&i), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Answer an operation that returns attributes.
    fn reply_attr(&self, reply: ReplyAttr, r: Result<Inode, Error>) {
        match r {
            Ok(i) => reply.attr(&TTL, &self.attr_of(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
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

    fn close_handle(&self, fh: FileHandle) -> Result<(), Error> {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        match h {
            Some(h) => self.store.close_inode(h.ino),
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn new_inode(req: &Request, kind: FileKind, mode: u32, umask: u32) -> Inode {
        let mut i = Inode::new(Ino(0), kind, mode & !umask & 0o7777);
        i.uid = req.uid();
        i.gid = req.gid();
        i
    }

    fn reply_node(&self, parent: INodeNo, name: &OsStr, proto: Inode, reply: ReplyEntry) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(parent) {
            return reply.error(Errno::EROFS);
        }
        self.reply_entry(
            reply,
            self.store.make_node(Ino(parent.0), name.as_bytes(), proto),
        )
    }
}

/// `/.snapshots`: every answer comes from a snapshot's immutable tree.
impl VerFs {
    /// `unlink` (`dir` false) and `rmdir` (`dir` true); nothing in `/.snapshots` can go.
    fn remove_entry(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(parent) || is_snapshots_entry(parent, name) {
            return reply.error(Errno::EROFS);
        }
        reply_empty(
            reply,
            self.store.unlink_at(Ino(parent.0), name.as_bytes(), dir),
        )
    }

    /// The FUSE number of inode `ino` of snapshot `id` (its slot is given on first use);
    /// `EOVERFLOW` if it does not fit.
    fn snap_ino(&self, id: u64, ino: Ino) -> Result<u64, Errno> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fuse_ino(id, ino)
    }

    /// The tree of snapshot `id`; `ENOENT` once it is deleted (or while it is not ready).
    fn snap_tree(&self, id: u64) -> Result<Arc<MetaState>, Errno> {
        let ready = self
            .store
            .read(|s| s.snapshots.get(&id).map(|i| i.ready))
            .map_err(|e| errno(&e))?;
        if ready != Some(true) {
            return Err(Errno::ENOENT);
        }
        self.store.snapshot_tree(id).map_err(|e| errno(&e))
    }

    /// Inode `ino` of snapshot `id`.
    fn snap_in(&self, id: u64, ino: Ino) -> Result<SnapNode, Errno> {
        let tree = self.snap_tree(id)?;
        let inode = tree.inodes.get(&ino).cloned().ok_or(Errno::ENOENT)?;
        Ok(SnapNode::In { id, tree, inode })
    }

    /// What the `/.snapshots` inode `ino` is. A number this mount never gave out is `ESTALE`.
    fn snap_node(&self, ino: INodeNo) -> Result<SnapNode, Errno> {
        if ino.0 == SNAPSHOTS_INO {
            return Ok(SnapNode::Dir);
        }
        let (id, sino) = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(ino.0)?;
        self.snap_in(id, sino)
    }

    /// The ready snapshots, by name.
    fn ready_snapshots(&self) -> Result<Vec<(String, u64, Timestamp)>, Errno> {
        Ok(self
            .store
            .snapshots()
            .map_err(|e| errno(&e))?
            .into_iter()
            .filter(|(_, (_, i))| i.ready)
            .map(|(name, (id, i))| (name, id, i.time))
            .collect())
    }

    /// The kernel's view of a `/.snapshots` inode, and how long it may cache it.
    fn snap_attr(&self, n: &SnapNode) -> Result<(FileAttr, Duration), Errno> {
        match n {
            SnapNode::Dir => {
                // Owned by root, read-only; its times are those of the newest snapshot.
                let snaps = self.ready_snapshots()?;
                let mut d = Inode::new(Ino(0), FileKind::Dir, 0o555);
                d.uid = 0;
                d.gid = 0;
                d.nlink = 2 + snaps.len() as u32;
                let t = snaps
                    .iter()
                    .map(|s| s.2)
                    .max_by_key(|t| (t.secs, t.nsecs))
                    .unwrap_or(self.started);
                (d.atime, d.mtime, d.ctime) = (t, t, t);
                let mut a = file_attr(&d, 0);
                a.ino = INodeNo(SNAPSHOTS_INO);
                Ok((a, TTL))
            }
            SnapNode::In { id, tree, inode } => {
                let allocated = match inode.kind {
                    FileKind::File => tree
                        .extents
                        .get(&inode.ino)
                        .map(|v| v.iter().map(|x| u64::from(x.len)).sum::<u64>())
                        .unwrap_or(0)
                        .min(inode.size),
                    _ => inode.size,
                };
                let mut a = file_attr(inode, allocated);
                a.ino = INodeNo(self.snap_ino(*id, inode.ino)?);
                Ok((a, SNAP_TTL))
            }
        }
    }

    /// Lookup of `name` in `parent` (`/.snapshots`, or a directory of a snapshot); `parent` None
    /// is the live root, where only `.snapshots` gets here. Returns the attributes, how long
    /// the kernel may cache them, and how long the entry.
    fn snap_lookup(
        &self,
        parent: Option<INodeNo>,
        name: &[u8],
    ) -> Result<(FileAttr, Duration, Duration), Errno> {
        let Some(parent) = parent else {
            let (a, ttl) = self.snap_attr(&SnapNode::Dir)?;
            return Ok((a, ttl, TTL));
        };
        if name.len() > verfs_engine::meta::NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let child = match self.snap_node(parent)? {
            SnapNode::Dir => {
                // A name can be deleted and given to a new snapshot: never cache the entry.
                let (_, id, _) = self
                    .ready_snapshots()?
                    .into_iter()
                    .find(|s| s.0.as_bytes() == name)
                    .ok_or(Errno::ENOENT)?;
                let (a, ttl) = self.snap_attr(&self.snap_in(id, Ino::ROOT)?)?;
                return Ok((a, ttl, TTL));
            }
            SnapNode::In { id, tree, inode } => {
                if inode.kind != FileKind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                let child = tree.lookup(inode.ino, name).ok_or(Errno::ENOENT)?;
                let ci = tree.inodes.get(&child).cloned().ok_or(Errno::ENOENT)?;
                SnapNode::In {
                    id,
                    tree,
                    inode: ci,
                }
            }
        };
        let (a, ttl) = self.snap_attr(&child)?;
        Ok((a, ttl, ttl))
    }

    /// A `/.snapshots` directory as readdir numbers it (see [`VerFs::listing`]), with FUSE
    /// inode numbers.
    fn snap_listing(&self, ino: INodeNo) -> Result<Vec<(Vec<u8>, u64, FileKind)>, Errno> {
        let dots = |me: u64| {
            [
                (b".".to_vec(), me, FileKind::Dir),
                (b"..".to_vec(), me, FileKind::Dir),
            ]
        };
        match self.snap_node(ino)? {
            SnapNode::Dir => {
                let mut out = dots(SNAPSHOTS_INO).to_vec();
                for (name, id, _) in self.ready_snapshots()? {
                    out.push((
                        name.into_bytes(),
                        self.snap_ino(id, Ino::ROOT)?,
                        FileKind::Dir,
                    ));
                }
                Ok(out)
            }
            SnapNode::In { id, tree, inode } => {
                if inode.kind != FileKind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                let mut out = dots(ino.0).to_vec();
                for (name, child) in tree.dirs.get(&inode.ino).into_iter().flatten() {
                    if let Some(c) = tree.inodes.get(child) {
                        out.push((name.clone(), self.snap_ino(id, *child)?, c.kind));
                    }
                }
                Ok(out)
            }
        }
    }

    /// Read from a file of a snapshot.
    fn snap_read(&self, ino: INodeNo, off: u64, len: u32) -> Result<Vec<u8>, Errno> {
        match self.snap_node(ino)? {
            SnapNode::In { tree, inode, .. } if inode.kind != FileKind::Dir => {
                let extents = tree.extents.get(&inode.ino).map_or(&[][..], Vec::as_slice);
                self.store
                    .read_extents_range(&inode, extents, off, len)
                    .map_err(|e| errno(&e))
            }
            _ => Err(Errno::EISDIR),
        }
    }

    /// The extended attributes of a `/.snapshots` inode (`/.snapshots` itself has none).
    fn snap_xattrs(
        &self,
        ino: INodeNo,
    ) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, Errno> {
        match self.snap_node(ino)? {
            SnapNode::Dir => Ok(Default::default()),
            SnapNode::In { inode, .. } => Ok(inode.xattrs),
        }
    }
}

/// How long a waiting `setlk` sleeps between looks at the lock and at the caller's signals.
const SETLKW_POLL: Duration = Duration::from_millis(50);

/// Wait for `res` in `mode`, then answer the kernel: ok once acquired, EINTR as soon as the
/// calling thread `pid` has a signal pending (or is gone).
fn wait_for_lock(owner: &lock::LockOwner, res: &Resource, mode: Mode, pid: u32, reply: ReplyEmpty) {
    loop {
        match owner.acquire(res, mode, Wait::Timeout(SETLKW_POLL)) {
            Ok(()) => return reply.ok(),
            Err(lock::AcquireError::TimedOut { .. }) => {}
            Err(_) => return reply.error(Errno::ENOLCK),
        }
        if caller_interrupted(pid) {
            return reply.error(Errno::EINTR);
        }
    }
}

/// Does thread `pid` (as the kernel reports it in a request; 0 when outside our pid namespace)
/// have an unblocked, non-ignored signal pending, or has it exited?
fn caller_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") & !field("SigIgn:") != 0
}

fn lock_mode(typ: i32) -> Option<Mode> {
    match typ {
        libc::F_RDLCK => Some(Mode::Pr),
        libc::F_WRLCK => Some(Mode::Ex),
        _ => None,
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
        let Some(mode) = lock_mode(typ) else {
            return reply.error(Errno::EINVAL);
        };
        let owner = match self.lock_owner(lock_owner, ino.0) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        match owner.test(
            &Resource::Range {
                ino: ino.0,
                start,
                end,
            },
            mode,
        ) {
            // OFD locks carry no pid: the holder may be in another process or on another host.
            Ok(Some(c)) => {
                let t = if c.mode == Mode::Pr {
                    libc::F_RDLCK
                } else {
                    libc::F_WRLCK
                };
                reply.locked(c.start, c.end, t, 0)
            }
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, pid),
            Err(_) => reply.error(Errno::ENOLCK),
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
        let owner = match self.lock_owner(lock_owner, ino.0) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let res = Resource::Range {
            ino: ino.0,
            start,
            end,
        };
        if typ == libc::F_UNLCK {
            return match owner.release(&res) {
                Ok(()) => reply.ok(),
                Err(_) => reply.error(Errno::ENOLCK),
            };
        }
        let Some(mode) = lock_mode(typ) else {
            return reply.error(Errno::EINVAL);
        };
        match owner.acquire(&res, mode, Wait::No) {
            Ok(()) => reply.ok(),
            Err(lock::AcquireError::WouldBlock { .. })
            | Err(lock::AcquireError::GateBusy { .. })
                if sleep =>
            {
                // F_SETLKW: wait on a thread of its own, so waiters never take the FUSE workers
                // (the holder's unlock must get through), and give up with EINTR once a signal
                // is pending for the caller: the kernel waits uninterruptibly for this reply, and
                // fuser drops FUSE_INTERRUPT.
                let spawned = std::thread::Builder::new()
                    .name("verfs-setlkw".into())
                    .spawn(move || wait_for_lock(&owner, &res, mode, pid, reply));
                if let Err(e) = spawned {
                    eprintln!("verfs mount: cannot start a lock waiter: {e}");
                }
            }
            Err(lock::AcquireError::WouldBlock { .. })
            | Err(lock::AcquireError::GateBusy { .. }) => reply.error(Errno::EAGAIN),
            Err(_) => reply.error(Errno::ENOLCK),
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let snapdir = is_snapshots_entry(parent, name);
        if snapdir || is_snap(parent) {
            let parent = (!snapdir).then_some(parent);
            return match self.snap_lookup(parent, name.as_bytes()) {
                Ok((attr, attr_ttl, entry_ttl)) => {
                    reply.entry_with_ttls(&attr_ttl, &entry_ttl, &attr, Generation(0))
                }
                Err(e) => reply.error(e),
            };
        }
        match self
            .store
            .lookup_child_allocated(Ino(parent.0), name.as_bytes())
        {
            Ok((i, used)) => reply.entry(&TTL, &file_attr(&i, used), Generation(0)),
            Err(e) => reply.error(errno(&e)),
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
        if is_snap(ino) {
            return match self.snap_node(ino).and_then(|n| self.snap_attr(&n)) {
                Ok((attr, ttl)) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            };
        }
        match self.store.attr_allocated(Ino(ino.0)) {
            Ok((i, used)) => reply.attr(&TTL, &file_attr(&i, used)),
            Err(e) => reply.error(errno(&e)),
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) {
            return reply.error(Errno::EROFS);
        }
        let a = SetAttr {
            perm: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
            ctime: ctime.map(from_system_time),
        };
        self.reply_attr(reply, self.store.set_attr(Ino(ino.0), &a))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if is_snap(ino) {
            return match self.snap_node(ino) {
                Ok(SnapNode::In { inode, .. }) if inode.kind == FileKind::Symlink => {
                    reply.data(&inode.target)
                }
                Ok(_) => reply.error(Errno::EINVAL),
                Err(e) => reply.error(e),
            };
        }
        match self.store.attr(Ino(ino.0)) {
            Ok(i) if i.kind == FileKind::Symlink => reply.data(&i.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno(&e)),
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
        let Some(kind) = kind_of_mode(mode) else {
            return reply.error(Errno::EINVAL);
        };
        if kind == FileKind::Dir || kind == FileKind::Symlink {
            return reply.error(Errno::EINVAL);
        }
        let mut i = Self::new_inode(req, kind, mode, umask);
        i.rdev = rdev as u64;
        self.reply_node(parent, name, i, reply)
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
        self.reply_node(parent, name, i, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, false, reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, true, reply)
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
        self.reply_node(parent, link_name, i, reply)
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        // Renaming `/.snapshots` away is refused here; renaming onto it, by the engine (its name
        // is reserved: EEXIST).
        if is_snap(parent) || is_snap(newparent) || is_snapshots_entry(parent, name) {
            return reply.error(Errno::EROFS);
        }
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            // RENAME_WHITEOUT is for overlay filesystems.
            return reply.error(Errno::EINVAL);
        };
        reply_empty(
            reply,
            self.store.rename_at(
                Ino(parent.0),
                name.as_bytes(),
                Ino(newparent.0),
                newname.as_bytes(),
                mode,
            ),
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) || is_snap(newparent) {
            return reply.error(Errno::EROFS);
        }
        self.reply_entry(
            reply,
            self.store
                .link_at(Ino(ino.0), Ino(newparent.0), newname.as_bytes()),
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let acc = flags.0 & libc::O_ACCMODE;
        if self.read_only && acc != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if is_snap(ino) {
            if acc != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return reply.error(Errno::EROFS);
            }
            // No handle state: nothing to flush, and a snapshot inode is never an orphan. Its
            // bytes never change, so the page cache is kept across opens.
            return match self.snap_node(ino) {
                Ok(SnapNode::In { inode, .. }) if inode.kind != FileKind::Dir => {
                    reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
                }
                Ok(_) => reply.error(Errno::EISDIR),
                Err(e) => reply.error(e),
            };
        }
        match self.store.attr(Ino(ino.0)) {
            Ok(i) if i.kind == FileKind::Dir => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(self.new_handle(Ino(ino.0)), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
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
        if is_snap(ino) {
            return match self.snap_read(ino, offset, size) {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(e),
            };
        }
        match self.store.read_at(Ino(ino.0), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) {
            return reply.error(Errno::EROFS);
        }
        match self.store.write_at(Ino(ino.0), offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
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
        self.drop_posix_locks(lock_owner, ino.0);
        if is_snap(ino) {
            return reply.ok();
        }
        reply_empty(reply, self.store.flush_inode(Ino(ino.0)))
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
        // FUSE_RELEASE_FLOCK_UNLOCK: the last close of a file with flock locks. Closing the
        // owner's open file description on the lock table drops every lock it holds.
        if let Some(owner) = lock_owner {
            self.owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&owner.0);
        }
        let _ = ino;
        reply_empty(reply, self.close_handle(fh))
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if is_snap(ino) {
            return reply.ok();
        }
        reply_empty(
            reply,
            self.store
                .flush_inode(Ino(ino.0))
                .and_then(|()| self.store.sync()),
        )
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if is_snap(ino) {
            return match self.snap_node(ino) {
                // `/.snapshots` changes with every snapshot: read afresh.
                Ok(SnapNode::Dir) => reply.opened(FileHandle(0), FopenFlags::empty()),
                Ok(SnapNode::In { inode, .. }) if inode.kind == FileKind::Dir => reply.opened(
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                ),
                Ok(_) => reply.error(Errno::ENOTDIR),
                Err(e) => reply.error(e),
            };
        }
        match self.store.attr(Ino(ino.0)) {
            Ok(i) if i.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
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
        if is_snap(ino) {
            let entries = match self.snap_listing(ino) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
                if reply.add(
                    INodeNo(child),
                    (i + 1) as u64,
                    file_type(kind),
                    OsStr::from_bytes(&name),
                ) {
                    break;
                }
            }
            return reply.ok();
        }
        let entries = match self.listing(Ino(ino.0)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(child.0),
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
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are log records: syncing the log makes them durable.
        reply_empty(reply, self.store.sync())
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Space is the host filesystem's under the store; inodes are unlimited.
        let root = &self.store.layout().root;
        let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid path and `st` a valid out-pointer for the duration of the call.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return reply.error(Errno::from(std::io::Error::last_os_error()));
        }
        let files = self.store.read(|s| s.inodes.len() as u64).unwrap_or(0);
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            files + st.f_ffree,
            st.f_ffree,
            st.f_bsize as u32,
            verfs_engine::meta::NAME_MAX as u32,
            st.f_frsize as u32,
        );
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) {
            return reply.error(Errno::EROFS);
        }
        // POSIX ACLs are not supported: answering EOPNOTSUPP makes `cp -a`/`setfacl` fall back to
        // chmod, as on a filesystem mounted without ACLs (storing them as plain xattrs would
        // silently ignore their effect on the mode).
        if name.as_bytes().starts_with(b"system.posix_acl_") {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        reply_empty(
            reply,
            self.store
                .set_xattr(Ino(ino.0), name.as_bytes(), value, create, replace),
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = if is_snap(ino) {
            match self.snap_xattrs(ino) {
                Ok(mut x) => x.remove(name.as_bytes()).ok_or(Errno::ENODATA),
                Err(e) => Err(e),
            }
        } else {
            self.store
                .get_xattr(Ino(ino.0), name.as_bytes())
                .map_err(|e| errno(&e))
        };
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = if is_snap(ino) {
            self.snap_xattrs(ino).map(|x| x.into_keys().collect())
        } else {
            self.store.list_xattr(Ino(ino.0)).map_err(|e| errno(&e))
        };
        match names {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) {
            return reply.error(Errno::EROFS);
        }
        reply_empty(reply, self.store.remove_xattr(Ino(ino.0), name.as_bytes()))
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (`default_permissions`); this answers F_OK.
        if is_snap(ino) {
            return match self.snap_node(ino) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        match self.store.attr(Ino(ino.0)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        if is_snap(ino) {
            let entries = match self.snap_listing(ino) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            for (i, (name, child, _)) in entries.into_iter().enumerate().skip(offset as usize) {
                let Ok((attr, ttl)) = self
                    .snap_node(INodeNo(child))
                    .and_then(|n| self.snap_attr(&n))
                else {
                    continue; // deleted since the listing
                };
                if reply.add(
                    INodeNo(child),
                    (i + 1) as u64,
                    OsStr::from_bytes(&name),
                    &ttl,
                    &attr,
                    Generation(0),
                ) {
                    break;
                }
            }
            return reply.ok();
        }
        let entries = match self.listing(Ino(ino.0)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        // Attributes only for the entries this reply can carry, not for the ones skipped.
        for (i, (name, child, _)) in entries.into_iter().enumerate().skip(offset as usize) {
            let Ok(attr) = self.store.attr(child) else {
                continue; // removed since the listing
            };
            if reply.add(
                INodeNo(attr.ino.0),
                (i + 1) as u64,
                OsStr::from_bytes(&name),
                &TTL,
                &self.attr_of(&attr),
                Generation(0),
            ) {
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino) {
            return reply.error(Errno::EROFS);
        }
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
        // Collapsing or inserting ranges would shift every later extent; not supported, as on
        // many Linux filesystems.
        let supported =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !supported != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && !keep_size {
            return reply.error(Errno::EINVAL);
        }
        reply_empty(
            reply,
            self.store
                .fallocate(Ino(ino.0), offset, length, punch, keep_size),
        )
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
        let what = match whence {
            libc::SEEK_DATA => verfs_engine::fsops::Seek::Data,
            libc::SEEK_HOLE => verfs_engine::fsops::Seek::Hole,
            // SEEK_SET/CUR/END are handled by the kernel and never reach a filesystem.
            _ => return reply.error(Errno::EINVAL),
        };
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        if is_snap(ino) {
            return match self.snap_node(ino) {
                Ok(SnapNode::In { tree, inode, .. }) => {
                    let extents = tree.extents.get(&inode.ino).map_or(&[][..], Vec::as_slice);
                    match verfs_engine::fsops::seek_extents(
                        inode.size,
                        extents,
                        offset as u64,
                        what,
                    ) {
                        Some(p) => reply.offset(p as i64),
                        None => reply.error(Errno::ENXIO),
                    }
                }
                Ok(SnapNode::Dir) => reply.error(Errno::EINVAL),
                Err(e) => reply.error(e),
            };
        }
        match self.store.seek(Ino(ino.0), offset as u64, what) {
            Ok(Some(p)) => reply.offset(p as i64),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(ino_out) {
            return reply.error(Errno::EROFS);
        }
        if is_snap(ino_in) {
            // The engine shares chunks between live files only; EOPNOTSUPP makes the kernel copy
            // the bytes itself (read, then write).
            return reply.error(Errno::EOPNOTSUPP);
        }
        // The reply carries a u32: copy at most 1 GiB per call (the caller loops, as for write).
        let len = len.min(1 << 30);
        match self
            .store
            .copy_range(Ino(ino_in.0), offset_in, Ino(ino_out.0), offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        // Files live in compressed, deduplicated chunks, not at fixed device blocks: there is no
        // block number to give (the kernel only asks this of block-device-backed mounts).
        reply.error(Errno::EINVAL)
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No verfs-specific ioctls exist; ENOTTY is what Linux filesystems answer for unknown ones.
        reply.error(Errno::from_i32(libc::ENOTTY))
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if is_snap(parent) {
            return reply.error(Errno::EROFS);
        }
        let i = Self::new_inode(req, FileKind::File, mode, umask);
        match self.store.make_node(Ino(parent.0), name.as_bytes(), i) {
            Ok(i) => {
                let fh = self.new_handle(i.ino);
                reply.created(
                    &TTL,
                    &self.attr_of(&i),
                    Generation(0),
                    fh,
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountConfig {
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub threads: usize,
    /// Device nodes in the mount can be opened (`dev`); off by default, as for every FUSE mount.
    pub dev: bool,
    /// Set-user-ID and set-group-ID bits take effect on exec (`suid`); off by default.
    pub suid: bool,
    /// Let the kernel cache writes and send them in large batches (`FUSE_WRITEBACK_CACHE`).
    /// Off by default: the kernel then trusts its own idea of a cached file's size and mtime
    /// over this process's answers, so a size change made by *another* mount or CLI is not seen
    /// while the file stays cached here. For a mount that is the only writer of its files.
    pub writeback_cache: bool,
    /// Group commit: how often the log is synced while mounted (changes are visible at once and
    /// durable at the next fsync, fsyncdir, unmount, or this tick).
    pub sync_interval: Duration,
}

/// Why a mount could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("{path}: {reason}")]
    Mountpoint { path: String, reason: String },
    #[error("{path}: mount failed: {source}")]
    Fuse {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] Error),
}

/// Check that `mp` is an empty directory that nothing is mounted on.
pub fn check_mountpoint(mp: &Path) -> Result<(), MountError> {
    let err = |reason: &str| MountError::Mountpoint {
        path: mp.display().to_string(),
        reason: reason.into(),
    };
    let meta = std::fs::metadata(mp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err("mountpoint does not exist"),
        std::io::ErrorKind::NotConnected => {
            err("mountpoint is a dead FUSE endpoint (run `verfs umount` on it)")
        }
        _ => err(&e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(err("mountpoint is not a directory"));
    }
    if is_mountpoint(mp) {
        return Err(err(
            "mountpoint is busy (something is already mounted there)",
        ));
    }
    let mut rd = std::fs::read_dir(mp).map_err(|e| err(&e.to_string()))?;
    if rd.next().is_some() {
        return Err(err("mountpoint is not empty"));
    }
    Ok(())
}

/// The store a verfs mount at `mp` serves, from the source field of `/proc/self/mountinfo`
/// (`None` for another filesystem, or a mount whose store path could not be recorded).
pub fn mounted_store(mp: &Path) -> Option<std::path::PathBuf> {
    // "36 35 0:45 / /mnt rw,nosuid shared:1 - fuse /srv/store rw,user_id=0,..."
    let line = mountinfo_line(mp)?;
    let (_, tail) = line.split_once(" - ")?;
    let mut f = tail.split(' ');
    let (fstype, source) = (f.next()?, f.next()?);
    // The type is "fuse" when mounted directly as root ("fuse.verfs" through fusermount); the
    // source must then be a verfs store.
    let source = std::path::PathBuf::from(unescape_mount_path(source));
    ((fstype == "fuse" || fstype == "fuse.verfs")
        && source.is_absolute()
        && source.join("FORMAT").is_file())
    .then_some(source)
}

/// Is something mounted at `p` (per `/proc/self/mountinfo`)?
pub fn is_mountpoint(p: &Path) -> bool {
    mountinfo_line(p).is_some()
}

/// The line of `/proc/self/mountinfo` for the mount at `p` (the last one: the visible mount).
fn mountinfo_line(p: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .ok()?;
    let want = canon.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rfind(|l| l.split(' ').nth(4).map(unescape_mount_path).as_deref() == Some(want.as_str()))
        .map(str::to_owned)
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount `store` at `mp` and serve it until SIGINT/SIGTERM or an external unmount; then flush every
/// dirty file, make everything durable, unmount and release the lease.
///
/// On a clean return every write that the kernel acknowledged is durable. If the process is killed
/// instead, the kernel leaves a dead endpoint (`verfs umount` clears it) and `verfs recover`
/// cleans up after the process; files closed or fsynced before the kill are intact.
pub fn mount(
    store: Store,
    mp: &Path,
    cfg: &MountConfig,
    on_ready: impl FnOnce(),
) -> Result<(), MountError> {
    check_mountpoint(mp)?;
    let store = Arc::new(store);
    let fs = VerFs::new(store.clone(), cfg.read_only)?.with_writeback_cache(cfg.writeback_cache);
    // The source field of the mount names the store, so `verfs umount MP` finds the mount's
    // process without `-s` (and `df`/`findmnt` show it). A path with a comma or a space cannot
    // pass through the mount option string.
    let root = store.layout().root.clone();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let fsname = match root.to_str() {
        Some(r) if !r.contains([',', ' ', '\t', '\n', '\\']) => r.to_owned(),
        _ => "verfs".to_owned(),
    };
    let mut options = vec![
        fuser::MountOption::FSName(fsname),
        fuser::MountOption::Subtype("verfs".into()),
    ];
    if cfg.read_only {
        options.push(fuser::MountOption::RO);
    }
    if cfg.default_permissions {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    options.push(if cfg.dev {
        fuser::MountOption::Dev
    } else {
        fuser::MountOption::NoDev
    });
    options.push(if cfg.suid {
        fuser::MountOption::Suid
    } else {
        fuser::MountOption::NoSuid
    });
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = options;
    if cfg.allow_other {
        fcfg.acl = fuser::SessionACL::All;
    }
    fcfg.n_threads = Some(cfg.threads.max(1));
    fcfg.clone_fd = cfg.threads > 1;
    let session = fuser::spawn_mount(fs, mp, &fcfg).map_err(|source| MountError::Fuse {
        path: mp.display().to_string(),
        source,
    })?;
    on_ready();
    let stop = Arc::new(AtomicBool::new(false));
    watch_stop_signals(&stop, mp);
    let mut last_sync = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if last_sync.elapsed() >= cfg.sync_interval {
            // Cheap when nothing was committed since the last sync.
            if let Err(e) = store.sync() {
                eprintln!("verfs mount: group commit: {e}");
            }
            last_sync = std::time::Instant::now();
        }
    }
    // Flush before unmounting: every handle's writes become durable even if the kernel never
    // sends their release.
    store.flush_all()?;
    if session.guard.is_finished() {
        // Unmounted from outside (`verfs umount`, fusermount3 -u): the session has ended.
        let _ = session.join();
    } else {
        // Detach lazily, like libfuse: a plain umount fails with EBUSY while a file is open.
        // Processes still holding files open get ENOTCONN once this process exits.
        detach(mp);
        std::mem::forget(session);
    }
    store.flush_all()?;
    store.shutdown()?;
    Ok(())
}

/// Set `stop` on the first SIGINT or SIGTERM. Later ones (a second Ctrl-C) do not cut the
/// final flush short: they are answered with a note on stderr; SIGKILL is the way to abort, and
/// even then every file closed or fsynced before is intact.
fn watch_stop_signals(stop: &Arc<AtomicBool>, mp: &Path) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            // Without the handler the default action (exit without flushing) would apply.
            eprintln!("verfs mount: cannot watch SIGINT/SIGTERM: {e}; stop it with `verfs umount`");
            return;
        }
    };
    let (stop, mp) = (stop.clone(), mp.display().to_string());
    let spawned = std::thread::Builder::new()
        .name("verfs-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if stop.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "verfs mount: still flushing {mp}; every acknowledged write is being made \
                         durable before exit"
                    );
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("verfs mount: cannot watch SIGINT/SIGTERM: {e}");
    }
}

/// Lazy unmount of `mp` (`MNT_DETACH` as root, else `fusermount3 -uz`). Also what a fenced mount
/// process does before it exits, so that it leaves no dead endpoint behind.
pub fn detach(mp: &Path) {
    if let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mp)
        .status();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::io;
    use std::path::PathBuf;

    use super::*;

    /// Every engine error variant reaches the kernel as the errno `rename(2)`, `open(2)` and
    /// friends would return for the same condition; what has no POSIX meaning (damage, a store
    /// that cannot be used, an internal error) is `EIO`. `Error` is `#[non_exhaustive]`, so a new
    /// variant is not caught here by the compiler: add it to this list.
    #[test]
    fn errno_maps_every_engine_error() {
        let p = || PathBuf::from("/store/x");
        let s = || String::from("/a/b");
        let cases: Vec<(Error, Errno)> = vec![
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::ENOSPC),
                },
                Errno::from_i32(libc::ENOSPC),
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::EDQUOT),
                },
                Errno::from_i32(libc::EDQUOT),
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::EACCES),
                },
                Errno::EACCES,
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::other("no os error"),
                },
                Errno::EIO,
            ),
            (
                Error::NotAStore {
                    path: p(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::WrongVersion {
                    path: p(),
                    found: 9,
                    supported: 2,
                },
                Errno::EIO,
            ),
            (
                Error::Config {
                    path: p(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::Corrupt {
                    path: p(),
                    offset: 24,
                    reason: "record crc mismatch".into(),
                },
                Errno::EIO,
            ),
            (Error::NotFound { path: s() }, Errno::ENOENT),
            (Error::Exists { path: s() }, Errno::EEXIST),
            (Error::NotADirectory { path: s() }, Errno::ENOTDIR),
            (Error::IsADirectory { path: s() }, Errno::EISDIR),
            (Error::NotEmpty { path: s() }, Errno::ENOTEMPTY),
            (Error::NameTooLong { path: s() }, Errno::ENAMETOOLONG),
            (
                Error::InvalidPath {
                    path: s(),
                    reason: "cannot move /a to a subdirectory of itself".into(),
                },
                Errno::EINVAL,
            ),
            (
                Error::Reserved {
                    path: s(),
                    reason: "/.snapshots".into(),
                },
                Errno::EEXIST,
            ),
            (
                Error::ReadOnly {
                    path: s(),
                    reason: "r".into(),
                },
                Errno::EROFS,
            ),
            (
                Error::Snapshot {
                    name: "n".into(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::NoAttribute {
                    name: "user.x".into(),
                },
                Errno::NO_XATTR,
            ),
            (Error::Fenced("claimed".into()), Errno::EROFS),
            (Error::Coordination("c".into()), Errno::EIO),
            (Error::Internal("i".into()), Errno::EIO),
        ];
        for (e, want) in &cases {
            assert_eq!(errno(e), *want, "{e:?} ({e})");
        }
    }

    /// A live inode's FUSE number is its store number (the root is 1 in both).
    #[test]
    fn live_inodes_keep_their_store_numbers() {
        for n in [1u64, 2, 3, 1 << 20, (1 << 40) + 7, SNAP_BIT - 1] {
            let i = Inode::new(Ino(n), FileKind::File, 0o644);
            assert_eq!(file_attr(&i, 0).ino, INodeNo(n));
            assert!(!is_snap(INodeNo(n)), "{n}");
        }
        assert_eq!(INodeNo::ROOT.0, Ino::ROOT.0);
    }

    /// Snapshot inode numbers: bit 63 set (so never a live number, which stays below it), never
    /// `/.snapshots` itself, one number per (snapshot, inode) and the same one on every call, and
    /// each resolves back to its snapshot and inode.
    #[test]
    fn snapshot_inode_numbers_never_collide_and_are_stable() {
        let mut slots = SnapSlots::default();
        let ids = [7u64, 3, 1 << 40, u64::MAX, 0];
        let inos = [1u64, 2, 3, 999, (1 << SNAP_INO_BITS) - 1];
        let mut seen = HashMap::new();
        for round in 0..2 {
            for &id in &ids {
                for &ino in &inos {
                    let f = slots.fuse_ino(id, Ino(ino)).unwrap();
                    assert!(is_snap(INodeNo(f)), "{f:#x}");
                    assert_ne!(f, SNAPSHOTS_INO);
                    assert_eq!(slots.resolve(f).unwrap(), (id, Ino(ino)));
                    match seen.get(&(id, ino)) {
                        None => {
                            assert_eq!(round, 0);
                            seen.insert((id, ino), f);
                        }
                        Some(&prev) => assert_eq!(prev, f, "not stable: ({id}, {ino})"),
                    }
                }
            }
        }
        let distinct: HashSet<u64> = seen.values().copied().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "two snapshot inodes share a number"
        );
        // Slots are given in first-use order, from 1.
        assert_eq!(
            slots.fuse_ino(7, Ino(1)).unwrap(),
            SNAP_BIT | 1 << SNAP_INO_BITS | 1
        );
        assert_eq!(
            slots.fuse_ino(3, Ino(1)).unwrap(),
            SNAP_BIT | 2 << SNAP_INO_BITS | 1
        );
    }

    #[test]
    fn snapshot_inode_numbers_refuse_what_does_not_fit_or_was_never_given() {
        let mut slots = SnapSlots::default();
        assert_eq!(slots.fuse_ino(1, Ino(0)), Err(Errno::EOVERFLOW));
        assert_eq!(
            slots.fuse_ino(1, Ino(1 << SNAP_INO_BITS)),
            Err(Errno::EOVERFLOW)
        );
        // Slot 0 and slots never given are stale, not some other snapshot's inode.
        assert_eq!(slots.resolve(SNAP_BIT | 5), Err(Errno::ESTALE));
        assert_eq!(
            slots.resolve(SNAP_BIT | 1 << SNAP_INO_BITS | 5),
            Err(Errno::ESTALE)
        );
        let f = slots.fuse_ino(42, Ino(5)).unwrap();
        assert_eq!(slots.resolve(f), Ok((42, Ino(5))));
        assert_eq!(
            slots.resolve(SNAP_BIT | 2 << SNAP_INO_BITS | 5),
            Err(Errno::ESTALE)
        );
        // The last slot fits; the one after it is refused rather than wrapping into bit 63.
        // (Slots 1 .. SNAP_SLOT_MAX - 1 taken; only their count matters to the next new id.)
        slots.ids = vec![0; SNAP_SLOT_MAX as usize - 1];
        slots.by_id.clear();
        let last = slots.fuse_ino(1000, Ino(1)).unwrap();
        assert_eq!(last, SNAP_BIT | SNAP_SLOT_MAX << SNAP_INO_BITS | 1);
        assert!(is_snap(INodeNo(last)));
        assert_eq!(slots.resolve(last), Ok((1000, Ino(1))));
        assert_eq!(slots.fuse_ino(1001, Ino(1)), Err(Errno::EOVERFLOW));
    }
}
