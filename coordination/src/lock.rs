//! Lock manager with the six DLM modes, built only on open-file-description (OFD) byte-range
//! locks on one shared file, `STORE/locks/table`.
//!
//! Used for POSIX and flock locks that must hold across mounts (FUSE `getlk`/`setlk`), one GC
//! worker per pack, and exclusive maintenance jobs (DESIGN.md, "Where each coordination mechanism
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

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// Name of the table file inside the `locks/` directory.
pub const TABLE_FILE: &str = "table";

/// Bytes per named-resource block (gate, five mode bytes, two reserved).
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

// ---------------------------------------------------------------------------------------------
// Modes and resources
// ---------------------------------------------------------------------------------------------

/// The six DLM lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Null: compatible with everything; holds nothing in the table.
    Nl,
    /// Concurrent read.
    Cr,
    /// Concurrent write.
    Cw,
    /// Protected read (shared); the POSIX read lock on ranges.
    Pr,
    /// Protected write.
    Pw,
    /// Exclusive; the POSIX write lock on ranges.
    Ex,
}

impl Mode {
    /// Every mode, in matrix order.
    pub const ALL: [Mode; 6] = [Mode::Nl, Mode::Cr, Mode::Cw, Mode::Pr, Mode::Pw, Mode::Ex];

    /// The standard DLM compatibility matrix (symmetric).
    ///
    /// ```text
    ///       NL CR CW PR PW EX
    /// NL    y  y  y  y  y  y
    /// CR    y  y  y  y  y  n
    /// CW    y  y  y  n  n  n
    /// PR    y  y  n  y  n  n
    /// PW    y  y  n  n  n  n
    /// EX    y  n  n  n  n  n
    /// ```
    pub fn compatible(self, other: Mode) -> bool {
        use Mode::*;
        match (self, other) {
            (Nl, _) | (_, Nl) => true,
            (Ex, _) | (_, Ex) => false,
            (Cr, _) | (_, Cr) => true,
            (Cw, Cw) | (Pr, Pr) => true,
            _ => false,
        }
    }

    /// Byte of this mode inside a named block; `None` for NL (which locks nothing).
    fn byte(self) -> Option<u64> {
        match self {
            Mode::Nl => None,
            Mode::Cr => Some(1),
            Mode::Cw => Some(2),
            Mode::Pr => Some(3),
            Mode::Pw => Some(4),
            Mode::Ex => Some(5),
        }
    }

    /// The modes (other than NL) a holder of `self` must find unheld by other owners.
    fn incompatible(self) -> impl Iterator<Item = Mode> {
        Mode::ALL
            .into_iter()
            .filter(move |m| *m != Mode::Nl && !self.compatible(*m))
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Nl => "NL",
            Mode::Cr => "CR",
            Mode::Cw => "CW",
            Mode::Pr => "PR",
            Mode::Pw => "PW",
            Mode::Ex => "EX",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Mode::from_str`]: not one of `NL CR CW PR PW EX` (case-insensitive).
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown lock mode {0:?} (expected NL, CR, CW, PR, PW or EX)")]
pub struct ParseModeError(pub String);

impl std::str::FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Mode, ParseModeError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}

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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// [`LockTable::open`] or [`LockTable::owner`] failed; nothing was locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("opening lock table {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The path now names another file than the table opened by [`LockTable::open`]: someone
    /// deleted or replaced it, and owners on the two files would not see each other [LOCK-1].
    #[error("lock table {path} was deleted or replaced since it was opened; it must never be")]
    Replaced { path: PathBuf },
}

/// [`LockOwner::acquire`] or [`LockOwner::try_acquire`] failed.
///
/// Unless the variant says otherwise, the owner holds exactly what it held before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// Another owner holds `held`, incompatible with the request ([`Wait::No`]).
    #[error("lock {resource} ({mode}) in {path}: would block, {held} is held by another owner")]
    WouldBlock {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        held: Mode,
    },
    /// The gate of a named resource stayed busy for [`GATE_TRY_LIMIT`] ([`Wait::No`]): another
    /// owner is stopped or descheduled in the middle of a mode change.
    #[error("lock {resource} ({mode}) in {path}: the gate stayed busy for {GATE_TRY_LIMIT:?}")]
    GateBusy {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
    },
    /// [`Wait::Timeout`] passed; `held` is the last conflicting mode seen (`None`: the gate).
    #[error(
        "lock {resource} ({mode}) in {path}: timed out after {waited:?} (last conflict: {held:?})"
    )]
    TimedOut {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        waited: Duration,
        held: Option<Mode>,
    },
    /// The owner already holds this named resource: use [`LockOwner::convert`].
    #[error("lock {resource} in {path}: already held by this owner in {held}")]
    AlreadyHeld {
        path: PathBuf,
        resource: Resource,
        held: Mode,
    },
    /// Range resources take PR and EX only; the range must be valid ([`RangeProblem`]).
    #[error("lock {resource} ({mode}) in {path}: {problem}")]
    Invalid {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        problem: RangeProblem,
    },
    /// A lock call failed; everything this call took was given back.
    #[error("lock {resource} ({mode}) in {path}: {source}")]
    Io {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        source: io::Error,
    },
    /// This owner could not release the gate of the resource's block, which blocks every other
    /// mode change on that block: drop the owner (closing its description releases the gate and
    /// everything else it holds). `acquired`: the resource IS held in `mode`; otherwise the owner
    /// holds what it held before (plus the gate).
    #[error("lock {resource} ({mode}) in {path}: releasing the gate failed (acquired: {acquired}): {source}")]
    GateNotReleased {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        acquired: bool,
        source: io::Error,
    },
}

/// [`LockOwner::convert`] failed.
///
/// Unless the variant says otherwise, the owner still holds the resource in its old mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The owner does not hold this named resource (nothing to convert; use acquire).
    #[error("convert {resource} in {path}: not held by this owner")]
    NotHeld { path: PathBuf, resource: Resource },
    /// Like [`AcquireError::WouldBlock`]; the old mode is kept.
    #[error(
        "convert {resource} to {mode} in {path}: would block, {held} is held by another owner"
    )]
    WouldBlock {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        held: Mode,
    },
    /// Like [`AcquireError::GateBusy`]; the old mode is kept.
    #[error("convert {resource} to {mode} in {path}: the gate stayed busy for {GATE_TRY_LIMIT:?}")]
    GateBusy {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
    },
    /// Like [`AcquireError::TimedOut`]; the old mode is kept.
    #[error("convert {resource} to {mode} in {path}: timed out after {waited:?} (last conflict: {held:?})")]
    TimedOut {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        waited: Duration,
        held: Option<Mode>,
    },
    /// Like [`AcquireError::Invalid`].
    #[error("convert {resource} to {mode} in {path}: {problem}")]
    Invalid {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        problem: RangeProblem,
    },
    /// A lock call failed; the old mode is kept and nothing new is held.
    #[error("convert {resource} to {mode} in {path}: {source}")]
    Io {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        source: io::Error,
    },
    /// The conversion happened (the resource is held in `mode`), but the old mode's byte could
    /// not be released: the owner is stricter than it should be until it is dropped.
    #[error("convert {resource} to {mode} in {path}: converted, but releasing the old mode failed: {source}")]
    OldModeNotReleased {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        source: io::Error,
    },
    /// Like [`AcquireError::GateNotReleased`]: drop the owner. `converted`: the resource is held
    /// in `mode`; otherwise still in its old mode.
    #[error("convert {resource} to {mode} in {path}: releasing the gate failed (converted: {converted}): {source}")]
    GateNotReleased {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        converted: bool,
        source: io::Error,
    },
}

/// [`LockOwner::release`] failed. For a named resource the owner no longer counts it as held,
/// but the kernel may still hold its mode byte (stricter, never weaker) until the owner is
/// dropped; for a range, the range may still be locked (retry, or drop the owner).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    #[error("release {resource} in {path}: {source}")]
    Io {
        path: PathBuf,
        resource: Resource,
        source: io::Error,
    },
    #[error("release {resource} in {path}: {problem}")]
    Invalid {
        path: PathBuf,
        resource: Resource,
        problem: RangeProblem,
    },
}

/// [`LockOwner::test`] failed; testing never changes any lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    #[error("test {resource} ({mode}) in {path}: {source}")]
    Io {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        source: io::Error,
    },
    #[error("test {resource} ({mode}) in {path}: {problem}")]
    Invalid {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        problem: RangeProblem,
    },
}

/// Why a range request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeProblem {
    #[error("range locks take modes PR and EX only")]
    Mode,
    #[error("start is after end")]
    Empty,
    #[error("inode number is {MAX_INODES} or more: no lock region")]
    Inode,
}

// ---------------------------------------------------------------------------------------------
// The table and its owners
// ---------------------------------------------------------------------------------------------

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

/// Level of the tail byte held by one owner for one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Read,
    Write,
}

#[derive(Debug, Default)]
struct OwnerState {
    /// Named resources held, with their mode (NL included).
    named: HashMap<String, Mode>,
    /// Mode bytes held (table offset -> number of held named resources using it; >1 only when
    /// two held names share a block).
    bytes: HashMap<u64, u32>,
    /// Tail byte of each inode region this owner locks, with its level [LOCK-8].
    tails: HashMap<u64, Level>,
}

/// One lock owner: one open file description on the table. `Send + Sync`; threads sharing an
/// owner are one owner (they never conflict with each other), as in POSIX.
///
/// Dropping it releases every lock it holds (the kernel drops an OFD's locks when it is closed).
#[derive(Debug)]
pub struct LockOwner {
    file: File,
    path: PathBuf,
    /// Also serializes this owner's gated sections: two threads of one OFD would otherwise both
    /// "hold" the gate at once [LOCK-4].
    state: Mutex<OwnerState>,
}

/// Result of one attempt.
enum Attempt {
    Done,
    /// Another owner holds this conflicting mode.
    Conflict(Mode),
    /// The gate is held by another owner.
    GateBusy,
}

/// Failure of one attempt.
enum AttemptError {
    /// A lock call failed; the owner holds what it held before.
    Io(io::Error),
    /// The gate could not be released (the owner still holds it); `committed`: the change
    /// itself took effect before.
    GateStuck { committed: bool, source: io::Error },
    /// The change took effect and the gate is released, but the old mode's byte could not be
    /// released (stricter than needed until the owner is dropped).
    OldByteStuck(io::Error),
}

impl From<io::Error> for AttemptError {
    fn from(source: io::Error) -> Self {
        AttemptError::Io(source)
    }
}

/// Outcome of a wait loop.
enum Waited {
    Done,
    Conflict(Mode),
    GateBusy,
    TimedOut(Duration, Option<Mode>),
    Failed(AttemptError),
}

/// A mapped range request: table bytes `[s, e]`, its inode's tail byte, and whether the request
/// covers the whole tail (starts at or before it and runs to end of file).
#[derive(Debug, Clone, Copy)]
struct Mapped {
    base: u64,
    s: u64,
    e: u64,
    tail: u64,
    touches_tail: bool,
    covers_tail: bool,
}

fn map_range(ino: u64, start: u64, end: u64) -> Result<Mapped, RangeProblem> {
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

fn flock(ty: libc::c_int, start: u64, len: u64) -> libc::flock {
    libc::flock {
        l_type: ty as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start as libc::off_t,
        l_len: len as libc::off_t,
        l_pid: 0,
    }
}

fn is_busy(e: Errno) -> bool {
    e == Errno::EAGAIN || e == Errno::EACCES
}

impl LockOwner {
    /// Path of the table file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_state(&self) -> MutexGuard<'_, OwnerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `F_OFD_SETLK` of `ty` on `[start, start + len)`: Ok(false) when another owner conflicts.
    fn setlk(&self, ty: libc::c_int, start: u64, len: u64) -> io::Result<bool> {
        let fl = flock(ty, start, len);
        loop {
            match fcntl(&self.file, FcntlArg::F_OFD_SETLK(&fl)) {
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) if ty != libc::F_UNLCK && is_busy(e) => return Ok(false),
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// `F_OFD_GETLK` of `ty` on `[start, start + len)`: the first conflicting lock of another
    /// owner as (type, first byte, last byte), table coordinates.
    fn getlk(&self, ty: libc::c_int, start: u64, len: u64) -> io::Result<Option<(i32, u64, u64)>> {
        let mut fl = flock(ty, start, len);
        loop {
            match fcntl(&self.file, FcntlArg::F_OFD_GETLK(&mut fl)) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        if i32::from(fl.l_type) == libc::F_UNLCK {
            return Ok(None);
        }
        let s = fl.l_start as u64;
        let e = if fl.l_len <= 0 {
            u64::MAX
        } else {
            s.saturating_add(fl.l_len as u64 - 1)
        };
        Ok(Some((i32::from(fl.l_type), s, e)))
    }

    /// Release the gate at `gate`; retried a few times since a stuck gate blocks a whole block.
    fn unlock_gate(&self, gate: u64) -> io::Result<()> {
        let mut last = None;
        for _ in 0..3 {
            match self.setlk(libc::F_UNLCK, gate, 1) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("gate unlock failed")))
    }

    /// Take one reference on the mode byte at `off` (shared OFD lock on the first reference).
    fn take_byte(&self, st: &mut OwnerState, off: u64) -> io::Result<()> {
        let n = st.bytes.get(&off).copied().unwrap_or(0);
        if n == 0 && !self.setlk(libc::F_RDLCK, off, 1)? {
            // Only the gate is ever write-locked, so a mode byte cannot be busy.
            return Err(io::Error::other(format!(
                "mode byte {off} is write-locked by another owner: the table is used by \
                 something that does not follow the lock protocol"
            )));
        }
        st.bytes.insert(off, n + 1);
        Ok(())
    }

    /// Drop one reference on the mode byte at `off` (unlock on the last one).
    fn drop_byte(&self, st: &mut OwnerState, off: u64) -> io::Result<()> {
        match st.bytes.get(&off).copied() {
            Some(n) if n > 1 => {
                st.bytes.insert(off, n - 1);
                Ok(())
            }
            Some(_) => {
                st.bytes.remove(&off);
                self.setlk(libc::F_UNLCK, off, 1).map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// First mode incompatible with `mode` that another owner holds on the block at `block`.
    fn named_conflict(&self, block: u64, mode: Mode) -> io::Result<Option<Mode>> {
        for m in mode.incompatible() {
            if let Some(b) = m.byte() {
                if self.getlk(libc::F_WRLCK, block + b, 1)?.is_some() {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }

    /// One attempt to move named resource `name` from `from` (None: not held) to `to`, under
    /// the gate [LOCK-4], [LOCK-5]. Caller holds the state mutex for the whole attempt.
    fn named_attempt(
        &self,
        st: &mut OwnerState,
        name: &str,
        from: Option<Mode>,
        to: Mode,
    ) -> Result<Attempt, AttemptError> {
        let block = named_block(name);
        let old_byte = from.and_then(Mode::byte).map(|b| block + b);
        let Some(new_b) = to.byte() else {
            // To NL: only a release, which never needs the gate (dropping a holder cannot make
            // two holders incompatible).
            if let Some(ob) = old_byte {
                self.drop_byte(st, ob)?;
            }
            st.named.insert(name.to_owned(), to);
            return Ok(Attempt::Done);
        };
        let gate = block + GATE_BYTE;
        if !self.setlk(libc::F_WRLCK, gate, 1)? {
            return Ok(Attempt::GateBusy);
        }
        let stuck = |committed| move |source| AttemptError::GateStuck { committed, source };
        // Under the gate: no other owner can add a holder to this block until we release it.
        let conflict = match self.named_conflict(block, to) {
            Ok(c) => c,
            Err(e) => {
                self.unlock_gate(gate).map_err(stuck(false))?;
                return Err(e.into());
            }
        };
        if let Some(m) = conflict {
            self.unlock_gate(gate).map_err(stuck(false))?;
            return Ok(Attempt::Conflict(m));
        }
        // Commit point: the shared lock on the new mode's byte is granted.
        if let Err(e) = self.take_byte(st, block + new_b) {
            self.unlock_gate(gate).map_err(stuck(false))?;
            return Err(e.into());
        }
        st.named.insert(name.to_owned(), to);
        let old = match old_byte {
            Some(ob) => self.drop_byte(st, ob),
            None => Ok(()),
        };
        self.unlock_gate(gate).map_err(stuck(true))?;
        old.map_err(AttemptError::OldByteStuck)?;
        Ok(Attempt::Done)
    }

    /// One attempt to set range lock `ty` (read, write or unlock) [LOCK-7], [LOCK-8].
    fn range_attempt(
        &self,
        st: &mut OwnerState,
        m: Mapped,
        ty: libc::c_int,
    ) -> Result<Attempt, AttemptError> {
        let level = match ty {
            libc::F_RDLCK => Some(Level::Read),
            libc::F_WRLCK => Some(Level::Write),
            _ => None,
        };
        let cur = st.tails.get(&m.tail).copied();
        // Which table bytes to operate on, and the tail level afterwards.
        let (e, new_tail) = if !m.touches_tail {
            (Some(m.e), cur)
        } else if m.covers_tail || level >= cur {
            // The request covers every offset the tail stands for, or does not weaken it.
            (
                Some(m.e),
                if m.covers_tail { level } else { level.max(cur) },
            )
        } else {
            // Partial (not to EOF) and weaker than what the tail holds: the tail byte may still
            // stand for a stronger lock beyond this request, so it is left alone.
            ((m.e > m.s).then(|| m.e - 1), cur)
        };
        let Some(e) = e else {
            return Ok(Attempt::Done);
        };
        if !self.setlk(ty, m.s, e - m.s + 1)? {
            let held = self
                .getlk(ty, m.s, e - m.s + 1)
                .ok()
                .flatten()
                .map(|(t, _, _)| {
                    if t == libc::F_WRLCK {
                        Mode::Ex
                    } else {
                        Mode::Pr
                    }
                })
                .unwrap_or(Mode::Ex);
            return Ok(Attempt::Conflict(held));
        }
        match new_tail {
            Some(l) => st.tails.insert(m.tail, l),
            None => st.tails.remove(&m.tail),
        };
        Ok(Attempt::Done)
    }

    /// Run `attempt` under the state mutex until it is done, fails, or `wait` gives up;
    /// sleeps (without the mutex) with a jittered exponential backoff.
    fn wait_loop(
        &self,
        wait: Wait,
        mut attempt: impl FnMut(&mut OwnerState) -> Result<Attempt, AttemptError>,
    ) -> Waited {
        let start = Instant::now();
        let mut backoff = MIN_BACKOFF;
        let mut last: Option<Mode>;
        loop {
            let r = {
                let mut st = self.lock_state();
                attempt(&mut st)
            };
            match r {
                Ok(Attempt::Done) => return Waited::Done,
                Err(e) => return Waited::Failed(e),
                Ok(Attempt::Conflict(m)) => {
                    last = Some(m);
                    if wait == Wait::No {
                        return Waited::Conflict(m);
                    }
                }
                Ok(Attempt::GateBusy) => {
                    last = None;
                    if wait == Wait::No && start.elapsed() >= GATE_TRY_LIMIT {
                        return Waited::GateBusy;
                    }
                }
            }
            let mut sleep = backoff;
            if let Wait::Timeout(t) = wait {
                let waited = start.elapsed();
                if waited >= t {
                    return Waited::TimedOut(waited, last);
                }
                sleep = sleep.min(t - waited);
            }
            // Jitter (50-100 %) so that waiters polling one resource do not run in lockstep.
            let jitter = 0.5 + rand::random::<f64>() * 0.5;
            thread::sleep(sleep.mul_f64(jitter));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Acquire `res` in `mode`, waiting as `wait` says.
    ///
    /// Named resources: the owner must not hold `res` yet ([`AcquireError::AlreadyHeld`]; use
    /// [`LockOwner::convert`]). Ranges: PR or EX; setting a range that overlaps ranges this owner
    /// already holds replaces their mode there (POSIX semantics, done by the kernel).
    /// On error the owner holds what it held before, except [`AcquireError::GateNotReleased`].
    pub fn acquire(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<(), AcquireError> {
        let path = || self.path.clone();
        let waited = match res {
            Resource::Named(name) => {
                if let Some(held) = self.lock_state().named.get(name).copied() {
                    return Err(AcquireError::AlreadyHeld {
                        path: path(),
                        resource: res.clone(),
                        held,
                    });
                }
                self.wait_loop(wait, |st| {
                    if let Some(held) = st.named.get(name).copied() {
                        // Another thread of this owner acquired it meanwhile.
                        return Err(AttemptError::Io(io::Error::other(format!(
                            "acquired concurrently by another thread of this owner in {held}"
                        ))));
                    }
                    self.named_attempt(st, name, None, mode)
                })
            }
            Resource::Range { ino, start, end } => {
                let problem = |problem| AcquireError::Invalid {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    problem,
                };
                let ty = match mode {
                    Mode::Pr => libc::F_RDLCK,
                    Mode::Ex => libc::F_WRLCK,
                    _ => return Err(problem(RangeProblem::Mode)),
                };
                let m = map_range(*ino, *start, *end).map_err(problem)?;
                self.wait_loop(wait, |st| self.range_attempt(st, m, ty))
            }
        };
        match waited {
            Waited::Done => Ok(()),
            Waited::Conflict(held) => Err(AcquireError::WouldBlock {
                path: path(),
                resource: res.clone(),
                mode,
                held,
            }),
            Waited::GateBusy => Err(AcquireError::GateBusy {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::TimedOut(waited, held) => Err(AcquireError::TimedOut {
                path: path(),
                resource: res.clone(),
                mode,
                waited,
                held,
            }),
            Waited::Failed(AttemptError::Io(source) | AttemptError::OldByteStuck(source)) => {
                Err(AcquireError::Io {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    source,
                })
            }
            Waited::Failed(AttemptError::GateStuck { committed, source }) => {
                Err(AcquireError::GateNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    acquired: committed,
                    source,
                })
            }
        }
    }

    /// [`LockOwner::acquire`] with [`Wait::No`].
    pub fn try_acquire(&self, res: &Resource, mode: Mode) -> Result<(), AcquireError> {
        self.acquire(res, mode, Wait::No)
    }

    /// Acquire and return a guard that releases `res` when dropped (errors of that release are
    /// ignored: the lock stays at worst until the owner is dropped).
    pub fn lock(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<Guard<'_>, AcquireError> {
        self.acquire(res, mode, wait)?;
        Ok(Guard {
            owner: self,
            res: res.clone(),
        })
    }

    /// Change the mode of a held resource, up or down, atomically with respect to every other
    /// owner's mode change (one gated section: check, take the new mode, drop the old one).
    ///
    /// While waiting, the old mode stays held; so two holders converting up to modes that
    /// conflict with each other's old mode wait for each other forever under [`Wait::Forever`]
    /// (the classic conversion deadlock): use a timeout. Ranges: same as [`LockOwner::acquire`]
    /// (the kernel converts atomically; on failure the old lock stays).
    pub fn convert(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<(), ConvertError> {
        let path = || self.path.clone();
        let waited = match res {
            Resource::Named(name) => {
                let not_held = || ConvertError::NotHeld {
                    path: path(),
                    resource: res.clone(),
                };
                match self.lock_state().named.get(name).copied() {
                    None => return Err(not_held()),
                    Some(m) if m == mode => return Ok(()),
                    Some(_) => {}
                }
                self.wait_loop(wait, |st| match st.named.get(name).copied() {
                    Some(from) => self.named_attempt(st, name, Some(from), mode),
                    None => Err(AttemptError::Io(io::Error::other(
                        "released by another thread of this owner",
                    ))),
                })
            }
            Resource::Range { .. } => {
                return self.acquire(res, mode, wait).map_err(|e| match e {
                    AcquireError::WouldBlock {
                        path,
                        resource,
                        mode,
                        held,
                    } => ConvertError::WouldBlock {
                        path,
                        resource,
                        mode,
                        held,
                    },
                    AcquireError::TimedOut {
                        path,
                        resource,
                        mode,
                        waited,
                        held,
                    } => ConvertError::TimedOut {
                        path,
                        resource,
                        mode,
                        waited,
                        held,
                    },
                    AcquireError::Invalid {
                        path,
                        resource,
                        mode,
                        problem,
                    } => ConvertError::Invalid {
                        path,
                        resource,
                        mode,
                        problem,
                    },
                    AcquireError::GateBusy {
                        path,
                        resource,
                        mode,
                    } => ConvertError::GateBusy {
                        path,
                        resource,
                        mode,
                    },
                    AcquireError::Io {
                        path,
                        resource,
                        mode,
                        source,
                    } => ConvertError::Io {
                        path,
                        resource,
                        mode,
                        source,
                    },
                    AcquireError::GateNotReleased {
                        path,
                        resource,
                        mode,
                        acquired,
                        source,
                    } => ConvertError::GateNotReleased {
                        path,
                        resource,
                        mode,
                        converted: acquired,
                        source,
                    },
                    AcquireError::AlreadyHeld { path, resource, .. } => {
                        ConvertError::NotHeld { path, resource }
                    }
                });
            }
        };
        match waited {
            Waited::Done => Ok(()),
            Waited::Conflict(held) => Err(ConvertError::WouldBlock {
                path: path(),
                resource: res.clone(),
                mode,
                held,
            }),
            Waited::GateBusy => Err(ConvertError::GateBusy {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::TimedOut(waited, held) => Err(ConvertError::TimedOut {
                path: path(),
                resource: res.clone(),
                mode,
                waited,
                held,
            }),
            Waited::Failed(AttemptError::Io(source)) => Err(ConvertError::Io {
                path: path(),
                resource: res.clone(),
                mode,
                source,
            }),
            Waited::Failed(AttemptError::OldByteStuck(source)) => {
                Err(ConvertError::OldModeNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    source,
                })
            }
            Waited::Failed(AttemptError::GateStuck { committed, source }) => {
                Err(ConvertError::GateNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    converted: committed,
                    source,
                })
            }
        }
    }

    /// Release `res`. Named: releasing a resource not held is a no-op. Range: unlocks exactly
    /// that sub-range of what this owner holds (the kernel splits locks; POSIX semantics).
    pub fn release(&self, res: &Resource) -> Result<(), ReleaseError> {
        let mut st = self.lock_state();
        let io = |source| ReleaseError::Io {
            path: self.path.clone(),
            resource: res.clone(),
            source,
        };
        match res {
            Resource::Named(name) => {
                let Some(mode) = st.named.remove(name) else {
                    return Ok(());
                };
                match mode.byte() {
                    Some(b) => self.drop_byte(&mut st, named_block(name) + b).map_err(io),
                    None => Ok(()),
                }
            }
            Resource::Range { ino, start, end } => {
                let m = map_range(*ino, *start, *end).map_err(|problem| ReleaseError::Invalid {
                    path: self.path.clone(),
                    resource: res.clone(),
                    problem,
                })?;
                match self.range_attempt(&mut st, m, libc::F_UNLCK) {
                    Ok(_) => Ok(()),
                    Err(AttemptError::Io(e) | AttemptError::OldByteStuck(e)) => Err(io(e)),
                    Err(AttemptError::GateStuck { source, .. }) => Err(io(source)),
                }
            }
        }
    }

    /// The mode in which this owner holds named resource `name`, if any.
    pub fn held(&self, name: &str) -> Option<Mode> {
        self.lock_state().named.get(name).copied()
    }

    /// Would `mode` on `res` conflict with another owner now? Returns one conflicting lock
    /// (POSIX `getlk`); `None` when the request would be granted at this instant. Changes no lock.
    ///
    /// For a range, the reported bytes are the other owner's lock clipped to this inode (a lock
    /// that reaches the inode's tail byte is reported as running to end of file, `u64::MAX`).
    pub fn test(&self, res: &Resource, mode: Mode) -> Result<Option<Conflict>, TestError> {
        let io = |source| TestError::Io {
            path: self.path.clone(),
            resource: res.clone(),
            mode,
            source,
        };
        match res {
            Resource::Named(name) => {
                let block = named_block(name);
                Ok(self
                    .named_conflict(block, mode)
                    .map_err(io)?
                    .map(|m| Conflict {
                        start: 0,
                        end: u64::MAX,
                        mode: m,
                    }))
            }
            Resource::Range { ino, start, end } => {
                let problem = |problem| TestError::Invalid {
                    path: self.path.clone(),
                    resource: res.clone(),
                    mode,
                    problem,
                };
                let ty = match mode {
                    Mode::Pr => libc::F_RDLCK,
                    Mode::Ex => libc::F_WRLCK,
                    _ => return Err(problem(RangeProblem::Mode)),
                };
                let m = map_range(*ino, *start, *end).map_err(problem)?;
                let Some((t, s, e)) = self.getlk(ty, m.s, m.e - m.s + 1).map_err(io)? else {
                    return Ok(None);
                };
                let s = s.max(m.base);
                let e = e.min(m.tail);
                Ok(Some(Conflict {
                    start: s - m.base,
                    end: if e == m.tail { u64::MAX } else { e - m.base },
                    mode: if t == libc::F_WRLCK {
                        Mode::Ex
                    } else {
                        Mode::Pr
                    },
                }))
            }
        }
    }
}

/// Releases its named or range resource when dropped ([`LockOwner::lock`]).
#[derive(Debug)]
pub struct Guard<'a> {
    owner: &'a LockOwner,
    res: Resource,
}

impl Guard<'_> {
    pub fn resource(&self) -> &Resource {
        &self.res
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.owner.release(&self.res);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn table() -> (tempfile::TempDir, LockTable) {
        let d = tempfile::tempdir().unwrap();
        let t = LockTable::open(&d.path().join("locks")).unwrap();
        (d, t)
    }

    fn named(n: &str) -> Resource {
        Resource::Named(n.to_owned())
    }

    fn range(ino: u64, start: u64, end: u64) -> Resource {
        Resource::Range { ino, start, end }
    }

    fn would_block(r: Result<(), AcquireError>) -> bool {
        match r {
            Ok(()) => false,
            Err(AcquireError::WouldBlock { .. }) => true,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    // proves [LOCK-5]: the 6x6 compatibility matrix, for try_acquire and for test.
    #[test]
    fn full_matrix() {
        let (_d, t) = table();
        let expected = ["yyyyyy", "yyyyyn", "yyynnn", "yynynn", "yynnnn", "ynnnnn"];
        for (i, held) in Mode::ALL.into_iter().enumerate() {
            for (j, req) in Mode::ALL.into_iter().enumerate() {
                let ok = expected[i].as_bytes()[j] == b'y';
                assert_eq!(held.compatible(req), ok, "{held} vs {req}");
                let a = t.owner().unwrap();
                let b = t.owner().unwrap();
                let r = named("matrix");
                a.try_acquire(&r, held).unwrap();
                let tested = b.test(&r, req).unwrap();
                assert_eq!(tested.is_none(), ok, "test: held {held}, requested {req}");
                let got = b.try_acquire(&r, req);
                assert_eq!(!would_block(got), ok, "held {held}, requested {req}");
                drop(a);
                drop(b);
            }
        }
    }

    // proves [LOCK-2]: two owners of one process conflict; one owner never conflicts with itself.
    #[test]
    fn owners_are_separate_descriptions() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        a.try_acquire(&range(5, 0, 99), Mode::Ex).unwrap();
        a.try_acquire(&range(5, 50, 60), Mode::Ex).unwrap();
        assert!(would_block(b.try_acquire(&range(5, 10, 10), Mode::Pr)));
        a.try_acquire(&named("x"), Mode::Ex).unwrap();
        assert!(matches!(
            a.try_acquire(&named("x"), Mode::Pr),
            Err(AcquireError::AlreadyHeld { held: Mode::Ex, .. })
        ));
        assert!(would_block(b.try_acquire(&named("x"), Mode::Cr)));
    }

    // proves [LOCK-1]: an owner is never opened on a table that replaced the original.
    #[test]
    fn replaced_table_is_refused() {
        let (d, t) = table();
        let locks = d.path().join("locks");
        std::fs::rename(locks.join(TABLE_FILE), locks.join("old")).unwrap();
        let r = t.owner();
        assert!(matches!(r, Err(OpenError::Replaced { .. })), "{r:?}");
        let t2 = LockTable::open(&locks).unwrap();
        t2.owner().unwrap();
    }

    // proves [LOCK-3]: dropping an owner (closing its description, as process death does)
    // releases everything it holds, the gate included.
    #[test]
    fn drop_releases_everything() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        a.try_acquire(&named("job"), Mode::Ex).unwrap();
        a.try_acquire(&range(1, 0, TO_EOF), Mode::Ex).unwrap();
        assert!(would_block(b.try_acquire(&named("job"), Mode::Pr)));
        drop(a);
        b.try_acquire(&named("job"), Mode::Ex).unwrap();
        b.try_acquire(&range(1, 0, TO_EOF), Mode::Ex).unwrap();
    }

    // proves [LOCK-4]: a holder that dies holding the gate blocks nobody afterwards; while the
    // gate is held, no mode change passes it.
    #[test]
    fn dead_gate_holder_is_released() {
        let (_d, t) = table();
        let dead = t.owner().unwrap();
        let b = t.owner().unwrap();
        let gate = named_block("g") + GATE_BYTE;
        assert!(dead.setlk(libc::F_WRLCK, gate, 1).unwrap());
        let start = Instant::now();
        let r = b.try_acquire(&named("g"), Mode::Cr);
        assert!(matches!(r, Err(AcquireError::GateBusy { .. })), "{r:?}");
        assert!(start.elapsed() >= GATE_TRY_LIMIT);
        let r = b.acquire(
            &named("g"),
            Mode::Cr,
            Wait::Timeout(Duration::from_millis(50)),
        );
        assert!(
            matches!(r, Err(AcquireError::TimedOut { held: None, .. })),
            "{r:?}"
        );
        drop(dead); // the kernel releases the gate of a closed (or dead) description
        b.try_acquire(&named("g"), Mode::Ex).unwrap();
    }

    // proves [LOCK-5]: conversion up and down, atomic, the old mode kept on failure.
    #[test]
    fn conversion_up_and_down() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        let r = named("conv");
        a.try_acquire(&r, Mode::Pr).unwrap();
        b.try_acquire(&r, Mode::Pr).unwrap();
        let up = a.convert(&r, Mode::Ex, Wait::No);
        assert!(
            matches!(up, Err(ConvertError::WouldBlock { held: Mode::Pr, .. })),
            "{up:?}"
        );
        assert_eq!(a.held("conv"), Some(Mode::Pr));
        assert!(would_block(t.owner().unwrap().try_acquire(&r, Mode::Cw)));
        b.release(&r).unwrap();
        a.convert(&r, Mode::Ex, Wait::No).unwrap();
        assert!(would_block(b.try_acquire(&r, Mode::Cr)));
        a.convert(&r, Mode::Cr, Wait::No).unwrap();
        b.try_acquire(&r, Mode::Pw).unwrap();
        assert!(would_block(t.owner().unwrap().try_acquire(&r, Mode::Pr)));
        b.convert(&r, Mode::Nl, Wait::No).unwrap();
        t.owner().unwrap().try_acquire(&r, Mode::Pr).unwrap();
        // CW <-> PR: incomparable modes convert through one gated section.
        let c = t.owner().unwrap();
        let d = t.owner().unwrap();
        c.try_acquire(&named("cw"), Mode::Cw).unwrap();
        d.try_acquire(&named("cw"), Mode::Cw).unwrap();
        assert!(matches!(
            c.convert(&named("cw"), Mode::Pr, Wait::No),
            Err(ConvertError::WouldBlock { held: Mode::Cw, .. })
        ));
        d.release(&named("cw")).unwrap();
        c.convert(&named("cw"), Mode::Pr, Wait::No).unwrap();
        assert!(would_block(d.try_acquire(&named("cw"), Mode::Cw)));
        d.try_acquire(&named("cw"), Mode::Pr).unwrap();
        assert!(matches!(
            t.owner().unwrap().convert(&named("cw"), Mode::Ex, Wait::No),
            Err(ConvertError::NotHeld { .. })
        ));
    }

    #[test]
    fn blocking_acquire_wakes_on_release() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        a.try_acquire(&named("w"), Mode::Ex).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let h = thread::spawn(move || {
            b.acquire(&named("w"), Mode::Pr, Wait::Forever).unwrap();
            d2.store(true, Ordering::SeqCst);
            b
        });
        thread::sleep(Duration::from_millis(150));
        assert!(!done.load(Ordering::SeqCst), "acquired while EX was held");
        let released = Instant::now();
        a.release(&named("w")).unwrap();
        let b = h.join().unwrap();
        assert!(released.elapsed() < Duration::from_secs(1));
        assert_eq!(b.held("w"), Some(Mode::Pr));
        // Ranges wait too.
        a.try_acquire(&range(3, 0, 10), Mode::Pr).unwrap();
        let h = thread::spawn(move || {
            b.acquire(&range(3, 5, 5), Mode::Ex, Wait::Forever).unwrap();
            b
        });
        thread::sleep(Duration::from_millis(100));
        a.release(&range(3, 0, 10)).unwrap();
        let b = h.join().unwrap();
        assert!(would_block(a.try_acquire(&range(3, 5, 5), Mode::Pr)));
        drop(b);
    }

    #[test]
    fn timeout() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        a.try_acquire(&named("t"), Mode::Pw).unwrap();
        let start = Instant::now();
        let r = b.acquire(
            &named("t"),
            Mode::Cw,
            Wait::Timeout(Duration::from_millis(200)),
        );
        let el = start.elapsed();
        assert!(
            matches!(
                r,
                Err(AcquireError::TimedOut {
                    held: Some(Mode::Pw),
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(
            el >= Duration::from_millis(200) && el < Duration::from_millis(1000),
            "{el:?}"
        );
        assert_eq!(b.held("t"), None);
        a.try_acquire(&range(9, 0, 0), Mode::Ex).unwrap();
        let r = b.acquire(
            &range(9, 0, 0),
            Mode::Pr,
            Wait::Timeout(Duration::from_millis(50)),
        );
        assert!(matches!(r, Err(AcquireError::TimedOut { .. })), "{r:?}");
    }

    // proves [LOCK-7]: POSIX range semantics from the kernel.
    #[test]
    fn ranges() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        a.try_acquire(&range(7, 100, 199), Mode::Ex).unwrap();
        // Overlapping conflicts, disjoint does not, another inode never does.
        assert!(would_block(b.try_acquire(&range(7, 199, 300), Mode::Pr)));
        assert!(would_block(b.try_acquire(&range(7, 0, TO_EOF), Mode::Pr)));
        b.try_acquire(&range(7, 200, 300), Mode::Ex).unwrap();
        b.try_acquire(&range(7, 0, 99), Mode::Pr).unwrap();
        b.try_acquire(&range(8, 100, 199), Mode::Ex).unwrap();
        b.try_acquire(&range(6, 0, TO_EOF), Mode::Ex).unwrap();
        // getlk reports the conflicting range and type.
        assert_eq!(
            b.test(&range(7, 150, 160), Mode::Pr).unwrap(),
            Some(Conflict {
                start: 100,
                end: 199,
                mode: Mode::Ex
            })
        );
        assert_eq!(
            a.test(&range(7, 250, 250), Mode::Pr).unwrap(),
            Some(Conflict {
                start: 200,
                end: 300,
                mode: Mode::Ex
            })
        );
        assert_eq!(
            a.test(&range(7, 50, 60), Mode::Ex).unwrap(),
            Some(Conflict {
                start: 0,
                end: 99,
                mode: Mode::Pr
            })
        );
        assert_eq!(a.test(&range(7, 50, 60), Mode::Pr).unwrap(), None);
        // Unlock of a sub-range frees only that part (the kernel splits the lock).
        a.release(&range(7, 120, 129)).unwrap();
        let c = t.owner().unwrap();
        c.try_acquire(&range(7, 120, 129), Mode::Ex).unwrap();
        assert!(would_block(c.try_acquire(&range(7, 119, 119), Mode::Pr)));
        assert!(would_block(c.try_acquire(&range(7, 130, 130), Mode::Pr)));
        assert_eq!(
            c.test(&range(7, 100, 300), Mode::Pr).unwrap(),
            Some(Conflict {
                start: 100,
                end: 119,
                mode: Mode::Ex
            })
        );
        // Downgrade of part of a write lock (kernel conversion).
        a.convert(&range(7, 130, 149), Mode::Pr, Wait::No).unwrap();
        c.try_acquire(&range(7, 140, 140), Mode::Pr).unwrap();
        assert!(would_block(c.try_acquire(&range(7, 150, 150), Mode::Pr)));
        // Invalid requests.
        assert!(matches!(
            a.try_acquire(&range(7, 5, 4), Mode::Pr),
            Err(AcquireError::Invalid {
                problem: RangeProblem::Empty,
                ..
            })
        ));
        assert!(matches!(
            a.try_acquire(&range(7, 0, 4), Mode::Cw),
            Err(AcquireError::Invalid {
                problem: RangeProblem::Mode,
                ..
            })
        ));
        assert!(matches!(
            a.try_acquire(&range(MAX_INODES, 0, 4), Mode::Ex),
            Err(AcquireError::Invalid {
                problem: RangeProblem::Inode,
                ..
            })
        ));
        // The last inode's region is usable.
        a.try_acquire(&range(MAX_INODES - 1, 0, TO_EOF), Mode::Ex)
            .unwrap();
        assert!(would_block(b.try_acquire(
            &range(MAX_INODES - 1, u64::MAX - 1, u64::MAX),
            Mode::Pr
        )));
        b.try_acquire(&range(MAX_INODES - 2, 0, TO_EOF), Mode::Ex)
            .unwrap();
    }

    // proves [LOCK-8]: offsets beyond the inode region are coarser, never weaker.
    #[test]
    fn tail_is_coarse_but_safe() {
        let (_d, t) = table();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        let big = INODE_REGION * 4;
        a.try_acquire(&range(2, big, big + 10), Mode::Pr).unwrap();
        // Beyond the region, everything shares the tail byte: disjoint far ranges conflict.
        assert!(would_block(
            b.try_acquire(&range(2, big * 2, big * 2), Mode::Ex)
        ));
        b.try_acquire(&range(2, big * 2, TO_EOF), Mode::Pr).unwrap();
        assert_eq!(
            b.test(&range(2, 0, TO_EOF), Mode::Ex).unwrap(),
            Some(Conflict {
                start: INODE_REGION - 1,
                end: u64::MAX,
                mode: Mode::Pr
            })
        );
        // A whole-file write lock; then a partial read lock beyond the region must not weaken
        // the tail (the write lock still covers other far offsets).
        let c = t.owner().unwrap();
        let ino = 3;
        c.try_acquire(&range(ino, 0, TO_EOF), Mode::Ex).unwrap();
        c.convert(&range(ino, big, big + 1), Mode::Pr, Wait::No)
            .unwrap();
        assert!(would_block(
            b.try_acquire(&range(ino, big * 3, big * 3), Mode::Pr)
        ));
        // A partial unlock beyond the region keeps the tail too.
        c.release(&range(ino, big * 3, big * 3)).unwrap();
        assert!(would_block(
            b.try_acquire(&range(ino, big * 3, big * 3), Mode::Pr)
        ));
        // ... but the exact part below the region is released exactly.
        c.release(&range(ino, 0, 9)).unwrap();
        b.try_acquire(&range(ino, 0, 9), Mode::Ex).unwrap();
        // Unlock to EOF releases the tail.
        c.release(&range(ino, 10, TO_EOF)).unwrap();
        b.try_acquire(&range(ino, big * 3, big * 3), Mode::Ex)
            .unwrap();
        // Partial read beyond, when nothing stronger is held: the tail is read-locked.
        let d = t.owner().unwrap();
        d.try_acquire(&range(4, big, big), Mode::Pr).unwrap();
        b.try_acquire(&range(4, big * 2, big * 2), Mode::Pr)
            .unwrap();
        assert!(would_block(
            b.try_acquire(&range(4, big * 2, big * 2), Mode::Ex)
        ));
    }

    // proves [LOCK-6]: distinct names land in distinct blocks (2^40 blocks, stable hash).
    #[test]
    fn named_blocks_do_not_collide() {
        let mut seen = HashSet::new();
        for i in 0..5000 {
            for n in [format!("pack:{i:016x}"), format!("job-{i}")] {
                let b = named_block(&n);
                assert!(b < NAMED_BLOCKS * BLOCK_SIZE);
                assert_eq!(b % BLOCK_SIZE, 0);
                assert!(seen.insert(b), "{n} collides");
            }
        }
        // The hash is part of the format: pin it, and the block it gives ([LOCK-6]).
        for (name, hash, block) in PINNED {
            assert_eq!(
                format!("{:016x}", name_hash(name)),
                *hash,
                "name_hash({name:?})"
            );
            assert_eq!(named_block(name), *block, "named_block({name:?})");
        }
    }

    /// (name, name_hash, named_block), computed independently in Python from the text of
    /// data-layout.md [LOCK-6] (FNV-1a 64, then murmur3 fmix64; block = (hash >> 24) * 8).
    const PINNED: &[(&str, &str, u64)] = &[
        ("", "efd01f60ba992926", 8_239_911_208_400),
        ("a", "82a2a958a9bece5b", 4_488_598_046_024),
        ("gc", "6772167bc6ec4b27", 3_554_365_660_720),
        ("gc-worker", "d37e8d488e172b2a", 7_266_890_302_576),
        (
            "pack:0000000000000001",
            "63a5f7b96a3f9949",
            3_423_889_902_416,
        ),
    ];

    // proves [LOCK-4], [LOCK-5] under concurrency: threads with their own owners never hold
    // incompatible modes at the same instant.
    #[test]
    fn concurrent_holders_are_always_compatible() {
        let (_d, t) = table();
        let t = Arc::new(t);
        let held: Arc<Mutex<Vec<Mode>>> = Arc::new(Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..4u64)
            .map(|k| {
                let t = t.clone();
                let held = held.clone();
                thread::spawn(move || {
                    let o = t.owner().unwrap();
                    let r = named("stress");
                    for i in 0..300u64 {
                        let mode = Mode::ALL[1 + ((i * 7 + k * 3) % 5) as usize];
                        o.acquire(&r, mode, Wait::Forever).unwrap();
                        {
                            let mut h = held.lock().unwrap();
                            for m in h.iter() {
                                assert!(m.compatible(mode), "{m} held while {mode} granted");
                            }
                            h.push(mode);
                        }
                        if i % 3 == 0 {
                            thread::yield_now();
                        }
                        {
                            let mut h = held.lock().unwrap();
                            let p = h.iter().position(|m| *m == mode).unwrap();
                            h.swap_remove(p);
                        }
                        o.release(&r).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(usize, usize, Mode),
        Convert(usize, usize, Mode),
        Release(usize, usize),
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let mode = prop::sample::select(Mode::ALL.to_vec());
        prop_oneof![
            4 => (0..4usize, 0..2usize, mode.clone()).prop_map(|(o, r, m)| Op::Acquire(o, r, m)),
            2 => (0..4usize, 0..2usize, mode).prop_map(|(o, r, m)| Op::Convert(o, r, m)),
            3 => (0..4usize, 0..2usize).prop_map(|(o, r)| Op::Release(o, r)),
            1 => (0..4usize).prop_map(Op::Drop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        // proves [LOCK-5]: against a model, every try_acquire / convert succeeds iff the mode
        // is compatible with every other owner's, so no incompatible pair is ever held.
        #[test]
        fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..60)) {
            let (_d, t) = table();
            let names = ["res-a", "res-b"];
            let mut owners: Vec<LockOwner> = (0..4).map(|_| t.owner().unwrap()).collect();
            let mut model: Vec<[Option<Mode>; 2]> = vec![[None; 2]; 4];
            let others_ok = |model: &Vec<[Option<Mode>; 2]>, o: usize, r: usize, m: Mode| {
                (0..4).filter(|&k| k != o).all(|k| model[k][r].is_none_or(|h| h.compatible(m)))
            };
            for op in ops {
                match op {
                    Op::Acquire(o, r, m) => {
                        let res = owners[o].try_acquire(&named(names[r]), m);
                        if model[o][r].is_some() {
                            prop_assert!(
                                matches!(res, Err(AcquireError::AlreadyHeld { .. })),
                                "{:?}",
                                res
                            );
                        } else if others_ok(&model, o, r, m) {
                            prop_assert!(res.is_ok(), "{:?}", res);
                            model[o][r] = Some(m);
                        } else {
                            prop_assert!(would_block(res));
                        }
                    }
                    Op::Convert(o, r, m) => {
                        let res = owners[o].convert(&named(names[r]), m, Wait::No);
                        match model[o][r] {
                            None => prop_assert!(
                                matches!(res, Err(ConvertError::NotHeld { .. })),
                                "{:?}",
                                res
                            ),
                            Some(_) if others_ok(&model, o, r, m) => {
                                prop_assert!(res.is_ok(), "{:?}", res);
                                model[o][r] = Some(m);
                            }
                            Some(_) => prop_assert!(
                                matches!(res, Err(ConvertError::WouldBlock { .. })),
                                "{:?}",
                                res
                            ),
                        }
                    }
                    Op::Release(o, r) => {
                        owners[o].release(&named(names[r])).unwrap();
                        model[o][r] = None;
                    }
                    Op::Drop(o) => {
                        owners[o] = t.owner().unwrap();
                        model[o] = [None; 2];
                    }
                }
                // The invariant itself, and test() agrees with the model for every mode.
                for r in 0..2 {
                    for a in 0..4 {
                        for b in (a + 1)..4 {
                            if let (Some(x), Some(y)) = (model[a][r], model[b][r]) {
                                prop_assert!(x.compatible(y));
                            }
                        }
                    }
                    for m in Mode::ALL {
                        let free = owners[0].test(&named(names[r]), m).unwrap().is_none();
                        prop_assert_eq!(free, others_ok(&model, 0, r, m));
                    }
                }
            }
        }

        // proves [LOCK-7]: range locks of 3 owners on bytes 0..12 of 2 inodes behave like a
        // per-byte model (set replaces the owner's own mode, unlock splits).
        #[test]
        fn ranges_match_the_model(
            ops in prop::collection::vec((0..3usize, 0..2u64, 0..12u64, 0..12u64, 0..3u8), 1..80)
        ) {
            let (_d, t) = table();
            let owners: Vec<LockOwner> = (0..3).map(|_| t.owner().unwrap()).collect();
            // model[owner][ino][byte]: 0 none, 1 read, 2 write
            let mut model = vec![vec![[0u8; 12]; 2]; 3];
            for (o, ino, a, b, k) in ops {
                let (s, e) = (a.min(b), a.max(b));
                let res = range(ino, s, e);
                if k == 0 {
                    owners[o].release(&res).unwrap();
                    for x in s..=e { model[o][ino as usize][x as usize] = 0; }
                    continue;
                }
                let mode = if k == 1 { Mode::Pr } else { Mode::Ex };
                let conflict = (0..3).filter(|&p| p != o).any(|p| {
                    (s..=e).any(|x| {
                        let h = model[p][ino as usize][x as usize];
                        h == 2 || (h == 1 && k == 2)
                    })
                });
                let tested = owners[o].test(&res, mode).unwrap();
                prop_assert_eq!(tested.is_some(), conflict);
                let got = owners[o].try_acquire(&res, mode);
                if conflict {
                    prop_assert!(would_block(got));
                } else {
                    prop_assert!(got.is_ok(), "{:?}", got);
                    for x in s..=e { model[o][ino as usize][x as usize] = k; }
                }
            }
        }
    }
}
