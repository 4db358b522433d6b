//! The kernel's view of an inode: `FileAttr`, file types and times, and how long the kernel may
//! cache what it is told.
//!
//! Overview: [`file_attr`] builds the attributes of an engine [`Inode`]; [`snapshots_dir_attr`]
//! those of the virtual `/.snapshots`. [`TTL`] is the cache lifetime of everything in the live tree
//! (zero: another process's change is seen by the next lookup), [`SNAP_TTL`] that of a snapshot's
//! inodes, which never change. The conversions between engine timestamps and kinds and the
//! kernel's are here too.
//!
//! Not here: which FUSE number an inode gets (`inodes`; [`file_attr`] gives the store's own
//! number, which the caller replaces for a snapshot's inode).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, FopenFlags, INodeNo, TimeOrNow};
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::meta::{FileKind, Inode, Timestamp};
use verfs_engine::view::{ReadySnapshot, View};

use crate::inodes::SNAPSHOTS_INO;

/// Entry and attribute cache lifetime given to the kernel. Zero: every lookup asks the store,
/// so renames and unlinks by other processes are seen at once.
pub const TTL: Duration = Duration::ZERO;

/// Entry and attribute cache lifetime of the inodes inside a snapshot: they never change, and a
/// FUSE number is never reused for another snapshot. A path walk still notices a deleted snapshot
/// at once: `/.snapshots` and its entries are answered with [`TTL`].
pub const SNAP_TTL: Duration = Duration::from_secs(60);

/// How long the kernel may cache the attributes (and entries) of the tree of `view`.
pub(crate) fn ttl(view: &View<'_>) -> Duration {
    if view.is_live() {
        TTL
    } else {
        SNAP_TTL
    }
}

/// How the kernel may cache an opened file or directory of the tree of `view`: the bytes and
/// listings of a snapshot never change, so its page cache is kept across opens; the live tree's
/// are read afresh.
pub(crate) fn open_flags(view: &View<'_>, dir: bool) -> FopenFlags {
    match (view.is_live(), dir) {
        (true, _) => FopenFlags::empty(),
        (false, false) => FopenFlags::FOPEN_KEEP_CACHE,
        (false, true) => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
    }
}

pub(crate) fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nsecs as u64)
    }
}

pub(crate) fn from_system_time(t: SystemTime) -> Timestamp {
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

pub(crate) fn time_or_now(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => from_system_time(t),
        TimeOrNow::Now => Timestamp::now(),
    }
}

pub(crate) fn file_type(k: FileKind) -> FileType {
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

/// The kind a `mknod` mode asks for; `None` for a file type that does not exist.
pub(crate) fn kind_of_mode(mode: u32) -> Option<FileKind> {
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

/// `/.snapshots`: owned by root, read-only, one link per ready snapshot; its times are those of
/// the newest snapshot (`started`, the mount's start, while there is none).
pub(crate) fn snapshots_dir_attr(snaps: &[ReadySnapshot], started: Timestamp) -> FileAttr {
    let mut d = Inode::new(Ino(0), FileKind::Dir, 0o555);
    d.uid = 0;
    d.gid = 0;
    d.nlink = 2 + snaps.len() as u32;
    let t = snaps
        .iter()
        .map(|s| s.time)
        .max_by_key(|t| (t.secs, t.nsecs))
        .unwrap_or(started);
    (d.atime, d.mtime, d.ctime) = (t, t, t);
    let mut a = file_attr(&d, 0);
    a.ino = SNAPSHOTS_INO;
    a
}
