//! Lock manager with the six DLM modes, built only on open-file-description (OFD) byte-range
//! locks on one shared file, `STORE/locks/table`.
//!
//! Owns the lock table's geometry (the constants below), what can be locked ([`Resource`]) and
//! how long a call may wait ([`Wait`]); re-exports the rest from its parts: `mode` ([`Mode`], the
//! DLM compatibility matrix), `table` ([`LockTable`] and the byte mapping of [LOCK-6]/[LOCK-8]),
//! `owner` ([`LockOwner`], [`Guard`]: acquire, convert, release, test), `queue` (the wait queue
//! of a named block) and `error` (one error type per operation). Does not own what the names mean (the engine picks resource names) nor any
//! other coordination file: it imports nothing from the rest of the crate but `io_site!`, `fsutil`
//! and the control-file envelope (`ctlfile`, for the queue file).
//!
//! Used for POSIX and flock locks that must hold across mounts (FUSE `getlk`/`setlk`), one GC
//! worker per pack, and exclusive maintenance jobs (docs/DESIGN.md, "Where each coordination mechanism
//! earns its place"). The byte layout, the protocol and its crash cases are specified in
//! `data-layout.md` ("Lock table"); rules `[LOCK-n]` are cited by the tests that prove them.
//!
//! - [`LockTable::open`] creates `locks/` and the table file if missing (the file holds no data:
//!   only its lock state matters, kept by the kernel or the NFS server).
//! - [`LockTable::owner`] opens a new open file description: one [`LockOwner`]. Two owners, even in
//!   one process, conflict like two processes [LOCK-2]. Dropping an owner closes its description,
//!   which releases every lock it holds; so does the death of the process, SIGKILL included
//!   [LOCK-3].
//! - [`Resource::Named`] resources take any [`Mode`] with the standard DLM compatibility matrix
//!   ([`Mode::compatible`]); a *gate* byte serializes mode changes [LOCK-4].
//! - [`Resource::Range`] resources are POSIX byte ranges of an inode, modes [`Mode::Pr`] (read
//!   lock) and [`Mode::Ex`] (write lock) only, mapped one to one onto OFD read/write locks, so the
//!   kernel provides POSIX merging and splitting [LOCK-7].
//!
//! Waiting is always polling with a bounded, jittered backoff ([`MAX_BACKOFF`]); no call ever
//! blocks inside the kernel (`F_OFD_SETLKW` is not used), so timeouts are exact and a stopped
//! holder cannot hang a `try_` call.
//! Waiting requests on a named resource are served in order (`queue`, [LOCK-9]): up-converts
//! first, then acquires, each in arrival order, so a stream of compatible holders cannot starve
//! an incompatible waiter.

use std::fmt;
use std::time::Duration;

mod error;
mod mode;
mod owner;
mod queue;
mod table;

pub use error::{AcquireError, ConvertError, OpenError, RangeProblem, ReleaseError, TestError};
pub use mode::{Mode, ParseModeError};
pub use owner::{Guard, LockOwner};
pub use queue::{QUEUE_BYTE, QUEUE_DIR, WAITER_BASE};
pub use table::{name_hash, named_block, LockTable};

/// Name of the table file inside the `locks/` directory.
pub const TABLE_FILE: &str = "table";

/// Bytes per named-resource block (gate, five mode bytes, the queue byte, one reserved).
pub const BLOCK_SIZE: u64 = 8;
/// Number of named-resource blocks: 2^40, indexed by the top 40 bits of the name's hash.
pub const NAMED_BLOCKS: u64 = 1 << 40;
/// Byte offset of the gate inside a block.
pub const GATE_BYTE: u64 = 0;
/// First byte of the range region: `RANGE_BASE + ino * INODE_REGION`.
pub const RANGE_BASE: u64 = 1 << 44;
/// Bytes of the table per inode: file offsets `0 ..= INODE_REGION - 2` map exactly; every offset
/// from `INODE_REGION - 1` on maps to the region's last byte (the *tail byte*) [LOCK-8].
pub const INODE_REGION: u64 = 1 << 32;
/// Inode numbers `0 .. MAX_INODES` can take range locks; larger ones are refused.
pub const MAX_INODES: u64 = 1 << 30;
// The named region ends before the range region, and the range region fits in `off_t`.
const _: () = {
    assert!(NAMED_BLOCKS * BLOCK_SIZE <= RANGE_BASE);
    assert!(RANGE_BASE + MAX_INODES * INODE_REGION - 1 <= i64::MAX as u64);
};
/// A range `end` at or above this value means "to end of file" (`OFFSET_MAX`, `i64::MAX`).
pub const TO_EOF: u64 = i64::MAX as u64;
/// Longest sleep between two attempts of a waiting acquire.
pub const MAX_BACKOFF: Duration = Duration::from_millis(8);
/// First sleep between two attempts.
pub const MIN_BACKOFF: Duration = Duration::from_micros(50);
/// How long a non-waiting call retries while only the gate (not a conflicting mode) is busy.
pub const GATE_TRY_LIMIT: Duration = Duration::from_millis(100);

/// What is locked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A named resource ("gc-worker", "pack:<id>"), any mode. Hashed to one of 2^40 blocks;
    /// two names that share a block conflict as if they were one resource (safe) [LOCK-6].
    Named(String),
    /// Bytes `start ..= end` (inclusive; `end >= TO_EOF` means to end of file) of inode `ino`;
    /// modes PR and EX only.
    Range { ino: u64, start: u64, end: u64 },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Named(n) => write!(f, "{n:?}"),
            Resource::Range { ino, start, end } if *end >= TO_EOF => {
                write!(f, "inode {ino} bytes {start}..EOF")
            }
            Resource::Range { ino, start, end } => write!(f, "inode {ino} bytes {start}..={end}"),
        }
    }
}

/// How long an acquire or convert may wait for conflicting holders to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once with `WouldBlock` when a conflicting mode is held.
    No,
    /// Wait as long as it takes.
    Forever,
    /// Wait at most this long, then fail with `TimedOut`.
    Timeout(Duration),
}

/// A lock held by another owner that conflicts with a tested request ([`LockOwner::test`]).
///
/// OFD locks carry no pid (`F_OFD_GETLK` reports `l_pid = -1`), so none is reported: a FUSE
/// `getlk` reply must supply its own (e.g. 0, or a pid it recorded for its own lock owners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// First conflicting byte in file coordinates (0 for a named resource).
    pub start: u64,
    /// Last conflicting byte, inclusive; `u64::MAX` means to end of file (always for a named
    /// resource, and for a range lock that reaches the inode's tail byte).
    pub end: u64,
    /// The conflicting mode: PR (read) or EX (write) for ranges; any mode for named resources.
    pub mode: Mode,
}

#[cfg(test)]
mod tests;
