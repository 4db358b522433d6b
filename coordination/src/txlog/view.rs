//! The materialized view a [`super::TxLog`] keeps ([`View`]), the write guard that publishes its
//! lsn, and [`InView`], which refuses re-entering a log from inside one of its closures.
//!
//! Owns those in-memory guards. Does not read or write files: the [`super::TxLog`] moves the view.

use std::cell::Cell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLockWriteGuard};

use super::iocount::IoCounters;
use super::{LogError, Lsn};

/// The materialized state and the read position in the log that it reflects.
pub(super) struct View<S> {
    pub(super) state: S,
    /// Last applied lsn.
    pub(super) lsn: Lsn,
    /// The segment being read, its path and first lsn.
    pub(super) seg: Arc<File>,
    pub(super) seg_path: PathBuf,
    pub(super) seg_first: Lsn,
    /// Byte offset of the next unread record in `seg`.
    pub(super) offset: u64,
    /// Byte offset in `seg` of the record of `lsn`, `None` if `seg` starts after it: with `offset`,
    /// the log position a checkpoint of this view records.
    pub(super) last_record: Option<u64>,
    /// A write handle on the segment at this path, kept between commits (a segment is never
    /// replaced at its path, only cut in place, so the handle stays right until a roll).
    pub(super) writer: Option<(PathBuf, Arc<File>)>,
    /// The log's read counters ([`super::TxLog::io_stats`]).
    pub(super) io: Arc<IoCounters>,
}

/// A write guard on the view that publishes the view's lsn to [`TxLog::applied_lsn`](super::TxLog::applied_lsn) on drop.
pub(super) struct ViewWriteGuard<'a, S> {
    pub(super) guard: RwLockWriteGuard<'a, View<S>>,
    pub(super) applied: &'a AtomicU64,
}

impl<S> std::ops::Deref for ViewWriteGuard<'_, S> {
    type Target = View<S>;
    fn deref(&self) -> &View<S> {
        &self.guard
    }
}

impl<S> std::ops::DerefMut for ViewWriteGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut View<S> {
        &mut self.guard
    }
}

impl<S> Drop for ViewWriteGuard<'_, S> {
    fn drop(&mut self) {
        self.applied.store(self.guard.lsn.0, Ordering::Release);
    }
}

thread_local! {
    /// Set while this thread runs a closure of `read`, `commit` or `exclusive` on any log.
    static IN_VIEW: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Marks the current thread as inside a log closure for as long as it lives. Entering a second
/// time on the same thread is refused: the view's lock (and the log lock) are not re-entrant.
pub(super) struct InView;

impl InView {
    pub(super) fn enter(what: &'static str) -> Result<InView, LogError> {
        IN_VIEW.with(|c| match c.get() {
            Some(outer) => Err(LogError::Reentered(outer)),
            None => {
                c.set(Some(what));
                Ok(InView)
            }
        })
    }
}

impl Drop for InView {
    fn drop(&mut self) {
        IN_VIEW.with(|c| c.set(None));
    }
}
