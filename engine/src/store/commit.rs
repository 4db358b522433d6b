//! Committing metadata: [`Store::transact`] (one log record, built against the up-to-date state
//! under the log lock), the indexing of this process's pending chunks inside that record, orphan
//! journaling ([ORPH-1]) and log sync.
//!
//! A failed commit is a [`CommitError`] (which converts into the engine's [`Error`]).
//!
//! Not here: making the data durable first (the write path's group sync, `write.rs`).

use std::collections::{HashMap, HashSet};

use verfs_coordination::journal::{self, ActionId};
use verfs_coordination::txlog::{self, LogError};

use super::{Held, Store};
use crate::error::Error;
use crate::ids::{ChunkId, InodeNo};
use crate::kinds::ACTION_ORPHAN;
use crate::meta::{ChunkEntry, Op, Tx};

/// [`Store::transact`] failed. Nothing was committed unless the variant says otherwise, and the
/// orphan actions journaled for the transaction were ended again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The transaction's closure refused it (the name exists, the directory is not empty, ...),
    /// with the error it returned.
    #[error(transparent)]
    Rejected(Error),
    /// The log did not append the record: fenced ([`CommitError::is_fenced`]), I/O, corruption.
    #[error(transparent)]
    Log(LogError),
    /// Journaling an inode that the transaction orphans failed ([ORPH-1]).
    #[error(transparent)]
    Journal(journal::BeginError),
    /// A new extent references a chunk that is neither indexed, pending nor held: a broken
    /// invariant of the write path, never caused by data on disk.
    #[error("internal error: chunk {id} would be referenced but is not in the chunk index")]
    Unindexed { id: ChunkId },
    /// The record IS committed (visible to every process), but making it durable failed.
    #[error(transparent)]
    Sync(LogError),
}

impl CommitError {
    /// This process is fenced: the log refused the append, or the closure saw it.
    pub fn is_fenced(&self) -> bool {
        match self {
            CommitError::Rejected(e) => e.is_fenced(),
            CommitError::Log(e) | CommitError::Sync(e) => e.is_fenced(),
            _ => false,
        }
    }

    /// Whether the same transaction may simply be tried again ([`Error::is_retryable`] of the
    /// closure's error). A commit is validated under the log lock, so it is never a retryable race.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommitError::Rejected(e) if e.is_retryable())
    }
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Rejected(e) => e,
            CommitError::Log(e) | CommitError::Sync(e) => e.into(),
            CommitError::Journal(e) => e.into(),
            CommitError::Unindexed { id } => Error::Internal(format!(
                "chunk {id} would be referenced but is not in the chunk index"
            )),
        }
    }
}

impl Store {
    /// Commit a metadata transaction built by `f` against the up-to-date state.
    ///
    /// Chunks this process appended and synced but has not indexed yet are indexed in the same
    /// record when `f` references them. With `durable`, returns only once the record is on disk.
    /// On error nothing was committed.
    pub fn transact<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, CommitError> {
        self.transact_held(durable, None, f)
    }

    /// [`Store::transact`] for an operation that deduplicated against the index: a chunk in
    /// `held` that GC dropped from the index meanwhile is indexed again in the pack it was found
    /// in ([GC-4]). Every chunk the new extents reference must be indexed when the record is
    /// appended, or nothing is committed ([GC-5]).
    pub fn transact_held<T>(
        &self,
        durable: bool,
        held: Option<&Held>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, CommitError> {
        let pending: HashMap<ChunkId, ChunkEntry> = self
            .voter
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let keep: HashSet<InodeNo> = self
            .open_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .keys()
            .copied()
            .collect();
        // Orphan actions journaled inside the commit; ended again if the commit then fails.
        let mut begun: Vec<(InodeNo, ActionId)> = Vec::new();
        let committed = self.log.commit(|s| {
            let mut tx = Tx::new(s);
            tx.keep_open = keep;
            let out = f(&mut tx).map_err(CommitError::Rejected)?;
            // [ORPH-1]: the orphan is journaled before the record that unlinks it is appended,
            // so no crash point leaks it; if the record never lands, the inode keeps its link
            // and the cleaner leaves it alone.
            for ino in std::mem::take(&mut tx.orphaned) {
                let action = self
                    .journal
                    .begin(ACTION_ORPHAN, ino.0.to_string().as_bytes())
                    .map_err(CommitError::Journal)?;
                begun.push((ino, action));
            }
            let mut indexed = Vec::new();
            let referenced: Vec<ChunkId> = tx
                .ops()
                .iter()
                .filter_map(|op| match op {
                    Op::SetExtents { extents, .. } => Some(extents.iter().map(|x| x.chunk)),
                    _ => None,
                })
                .flatten()
                .collect();
            for id in referenced {
                if tx.added(id) {
                    continue;
                }
                if let Some(e) = pending.get(&id) {
                    tx.add_chunk(id, *e).map_err(CommitError::Rejected)?;
                    indexed.push(id);
                } else if !tx.has_chunk(id).map_err(CommitError::Rejected)? {
                    match held.and_then(|h| h.get(&id)) {
                        Some(e) => tx.add_chunk(id, *e).map_err(CommitError::Rejected)?,
                        None => return Err(CommitError::Unindexed { id }),
                    }
                }
            }
            Ok((tx.finish(), (out, indexed)))
        });
        let (lsn, (out, indexed)) = match committed {
            Ok(c) => c,
            Err(e) => {
                for (_, action) in begun {
                    let _ = self.journal.end(action);
                }
                return Err(match e {
                    txlog::CommitError::Rejected(e) => e,
                    txlog::CommitError::Log(e) => CommitError::Log(e),
                    // `txlog::CommitError` has no other variant today; it is `#[non_exhaustive]`.
                    other => CommitError::Rejected(Error::Internal(format!("log commit: {other}"))),
                });
            }
        };
        if !begun.is_empty() {
            let mut of = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
            of.orphans.extend(begun);
        }
        if !indexed.is_empty() {
            let mut p = self.voter.pending.lock().unwrap_or_else(|p| p.into_inner());
            for id in indexed {
                p.remove(&id);
            }
        }
        if durable {
            self.log.sync_to(lsn).map_err(CommitError::Sync)?;
        }
        self.checkpoint_if_due(lsn);
        Ok(out)
    }

    /// Make every record this process committed durable.
    pub fn sync(&self) -> Result<(), Error> {
        let lsn = self.log.applied_lsn();
        Ok(self.log.sync_to(lsn)?)
    }
}
