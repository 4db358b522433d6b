//! Committing metadata: [`Store::transact`] (one log record, built against the up-to-date state
//! under the log lock), the indexing of this process's pending chunks inside that record, orphan
//! journaling ([ORPH-1]) and log sync.
//!
//! Not here: making the data durable first (the write path's group sync, `write.rs`).

use std::collections::{HashMap, HashSet};

use verfs_coordination::journal::ActionId;
use verfs_coordination::txlog::CommitError;

use super::{Held, Store};
use crate::error::Error;
use crate::ids::{ChunkId, InodeNo};
use crate::kinds::ACTION_ORPHAN;
use crate::meta::{ChunkEntry, Op, Tx};

fn commit_err(e: CommitError<Error>) -> Error {
    match e {
        CommitError::Rejected(e) => e,
        CommitError::Log(e) => e.into(),
        other => Error::Coordination(other.to_string()),
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
    ) -> Result<T, Error> {
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
    ) -> Result<T, Error> {
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
            let out = f(&mut tx)?;
            // [ORPH-1]: the orphan is journaled before the record that unlinks it is appended,
            // so no crash point leaks it; if the record never lands, the inode keeps its link
            // and the cleaner leaves it alone.
            for ino in std::mem::take(&mut tx.orphaned) {
                let action = self
                    .journal
                    .begin(ACTION_ORPHAN, ino.0.to_string().as_bytes())
                    .map_err(Error::coordination)?;
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
                    tx.add_chunk(id, *e);
                    indexed.push(id);
                } else if !tx.has_chunk(id) {
                    match held.and_then(|h| h.get(&id)) {
                        Some(e) => tx.add_chunk(id, *e),
                        None => {
                            return Err(Error::Internal(format!(
                                "chunk {id} would be referenced but is not in the chunk index"
                            )))
                        }
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
                return Err(commit_err(e));
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
            self.log.sync_to(lsn)?;
        }
        Ok(out)
    }

    /// Make every record this process committed durable.
    pub fn sync(&self) -> Result<(), Error> {
        let lsn = self.log.applied_lsn();
        Ok(self.log.sync_to(lsn)?)
    }
}
