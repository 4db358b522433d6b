//! The table file `STORE/locks/table` and where each resource lives in it: [`LockTable`], the
//! stable name hash ([`name_hash`], [LOCK-6]) and the range mapping with its tail byte ([LOCK-8]).
//!
//! Owns opening the file (and noticing it was replaced, [LOCK-1]) and every byte offset of the
//! table. Does not take locks itself: [`LockTable::owner`] hands out a [`LockOwner`], which does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

use super::owner::OwnerState;
use super::{
    LockOwner, OpenError, RangeProblem, BLOCK_SIZE, INODE_REGION, MAX_INODES, RANGE_BASE,
    TABLE_FILE, TO_EOF,
};

/// FNV-1a 64 followed by the murmur3 `fmix64` finalizer: the stable name hash of [LOCK-6]
/// (every process and version must compute the same block for a name).
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Table offset of the block of a named resource: `(name_hash >> 24) * BLOCK_SIZE`.
pub fn named_block(name: &str) -> u64 {
    (name_hash(name) >> 24) * BLOCK_SIZE
}

/// The shared lock table file `STORE/locks/table` of one store.
#[derive(Debug)]
pub struct LockTable {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl LockTable {
    /// Open (creating `locks_dir` and the table file if missing) the table in `locks_dir`,
    /// normally `STORE/locks`. Holds no lock and no descriptor.
    pub fn open(locks_dir: &Path) -> Result<LockTable, OpenError> {
        let path = locks_dir.join(TABLE_FILE);
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(locks_dir).map_err(io)?;
        let f = open_table(&path).map_err(io)?;
        let md = f.metadata().map_err(io)?;
        Ok(LockTable {
            dev: md.dev(),
            ino: md.ino(),
            path,
        })
    }

    /// Path of the table file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new lock owner: a new open file description on the table [LOCK-2].
    pub fn owner(&self) -> Result<LockOwner, OpenError> {
        let f = open_table(&self.path).map_err(|source| OpenError::Io {
            path: self.path.clone(),
            source,
        })?;
        let md = f.metadata().map_err(|source| OpenError::Io {
            path: self.path.clone(),
            source,
        })?;
        if (md.dev(), md.ino()) != (self.dev, self.ino) {
            return Err(OpenError::Replaced {
                path: self.path.clone(),
            });
        }
        Ok(LockOwner {
            file: f,
            path: self.path.clone(),
            state: Mutex::new(OwnerState::default()),
        })
    }
}

/// Read-write (OFD read locks need a readable, write locks a writable description), close-on-exec
/// (std's default: an exec'd child must not keep the description, and with it the locks, alive).
fn open_table(path: &Path) -> io::Result<File> {
    crate::io_site!(
        "lock.table-create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(path)
    )
}

/// A mapped range request: table bytes `[s, e]`, its inode's tail byte, and whether the request
/// covers the whole tail (starts at or before it and runs to end of file).
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapped {
    pub(super) base: u64,
    pub(super) s: u64,
    pub(super) e: u64,
    pub(super) tail: u64,
    pub(super) touches_tail: bool,
    pub(super) covers_tail: bool,
}

pub(super) fn map_range(ino: u64, start: u64, end: u64) -> Result<Mapped, RangeProblem> {
    if ino >= MAX_INODES {
        return Err(RangeProblem::Inode);
    }
    if start > end {
        return Err(RangeProblem::Empty);
    }
    let base = RANGE_BASE + ino * INODE_REGION;
    let last = INODE_REGION - 1;
    Ok(Mapped {
        base,
        s: base + start.min(last),
        e: base + end.min(last),
        tail: base + last,
        touches_tail: end >= last,
        covers_tail: start <= last && end >= TO_EOF,
    })
}

pub(super) fn flock(ty: libc::c_int, start: u64, len: u64) -> libc::flock {
    libc::flock {
        l_type: ty as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start as libc::off_t,
        l_len: len as libc::off_t,
        l_pid: 0,
    }
}

pub(super) fn is_busy(e: Errno) -> bool {
    e == Errno::EAGAIN || e == Errno::EACCES
}
