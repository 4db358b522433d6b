//! One error type per lock-table operation: [`OpenError`], [`AcquireError`], [`ConvertError`],
//! [`ReleaseError`], [`TestError`], and the [`RangeProblem`] a range request can have.
//!
//! Owns what each failure leaves behind (said on each type) and which failures are contention a
//! caller may retry ([`AcquireError::is_retryable`], [`ConvertError::is_retryable`]). Does not own
//! the operations themselves (`owner`, `table`). The crate-wide error rules are in the crate docs.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::{Mode, Resource, GATE_TRY_LIMIT, MAX_INODES};

/// [`LockTable::open`](super::LockTable::open) or [`LockTable::owner`](super::LockTable::owner) failed; nothing was locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("opening lock table {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The path now names another file than the table opened by [`LockTable::open`](super::LockTable::open): someone
    /// deleted or replaced it, and owners on the two files would not see each other [LOCK-1].
    #[error("lock table {path} was deleted or replaced since it was opened; it must never be")]
    Replaced { path: PathBuf },
}

/// [`LockOwner::acquire`](super::LockOwner::acquire) or [`LockOwner::try_acquire`](super::LockOwner::try_acquire) failed.
///
/// Unless the variant says otherwise, the owner holds exactly what it held before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// Another owner holds `held`, incompatible with the request ([`Wait::No`](super::Wait::No)).
    #[error("lock {resource} ({mode}) in {path}: would block, {held} is held by another owner")]
    WouldBlock {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
        held: Mode,
    },
    /// The gate of a named resource stayed busy for [`GATE_TRY_LIMIT`] ([`Wait::No`](super::Wait::No)): another
    /// owner is stopped or descheduled in the middle of a mode change.
    #[error("lock {resource} ({mode}) in {path}: the gate stayed busy for {GATE_TRY_LIMIT:?}")]
    GateBusy {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
    },
    /// Other owners wait in the block's queue, and are served first ([`Wait::No`](super::Wait::No),
    /// [LOCK-9]): even a compatible request does not overtake them.
    #[error("lock {resource} ({mode}) in {path}: would block, other owners are queued for it")]
    Queued {
        path: PathBuf,
        resource: Resource,
        mode: Mode,
    },
    /// [`Wait::Timeout`](super::Wait::Timeout) passed; `held` is the last conflicting mode seen (`None`: the gate).
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
    /// The owner already holds this named resource: use [`LockOwner::convert`](super::LockOwner::convert).
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

impl AcquireError {
    /// Contention, not failure: another owner holds a conflicting mode or the gate
    /// (`WouldBlock`, `GateBusy`, `TimedOut`). The owner holds what it held before, so the same
    /// call may simply be made again later (or with a longer [`Wait`](super::Wait)).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AcquireError::WouldBlock { .. }
                | AcquireError::GateBusy { .. }
                | AcquireError::Queued { .. }
                | AcquireError::TimedOut { .. }
        )
    }
}

/// [`LockOwner::convert`](super::LockOwner::convert) failed.
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
    /// Like [`AcquireError::Queued`]; the old mode is kept.
    #[error("convert {resource} to {mode} in {path}: would block, other owners are queued for it")]
    Queued {
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

impl ConvertError {
    /// Contention, not failure (`WouldBlock`, `GateBusy`, `TimedOut`): the resource is still
    /// held in its old mode and the conversion may be tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConvertError::WouldBlock { .. }
                | ConvertError::GateBusy { .. }
                | ConvertError::Queued { .. }
                | ConvertError::TimedOut { .. }
        )
    }
}

/// [`LockOwner::release`](super::LockOwner::release) failed. For a named resource the owner no longer counts it as held,
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

/// [`LockOwner::test`](super::LockOwner::test) failed; testing never changes any lock.
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
