//! The log's errors: [`LogError`] (a failure of the log itself, with file and offset) and
//! [`CommitError`] (a commit that did not happen: refused by its closure, or the log failed).
//!
//! Owns the error types and their queries. Does not own the errors of the state machine: those
//! travel inside [`CommitError::Rejected`] untouched.

use std::io;
use std::path::{Path, PathBuf};

/// A failure of the log itself, with the file and byte offset where it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("fenced: {0}")]
    Fenced(String),
    /// This process's record did not land where the log ended when it took the lock: another
    /// writer's record is there, so this process lost the log lock while appending (a network
    /// filesystem that released it during a partition). The transaction was not committed; the
    /// record, wherever it landed, is void for every reader ([LOG-10]).
    #[error(
        "{path}: the log lock was lost while appending at byte {offset} (another writer's record \
         is there): the transaction was not committed"
    )]
    LostLock { path: PathBuf, offset: u64 },
    /// Encoding the state for a checkpoint failed (the state's own reason): no checkpoint file
    /// was written.
    #[error("{path}: writing the checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A closure given to [`TxLog::read`](super::TxLog::read), [`TxLog::commit`](super::TxLog::commit) or [`TxLog::exclusive`](super::TxLog::exclusive) called back
    /// into the same log on the same thread. That would wait for a lock this thread already holds
    /// (the hang `verfs status` had), so it is refused at once: use the state and lsn the closure
    /// was given instead. Always a programming error, never caused by data on disk.
    #[error("log re-entered from inside a {0} closure (use the view the closure was given)")]
    Reentered(&'static str),
}

impl LogError {
    /// The `fence` check refused an append: this process's lease was claimed, so it must not
    /// change the store any more. Never retryable.
    pub fn is_fenced(&self) -> bool {
        matches!(self, LogError::Fenced(_))
    }
}

/// Why a commit did not happen. In every case nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError<E> {
    /// The closure refused the transaction (e.g. the name already exists).
    #[error(transparent)]
    Rejected(E),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl<E> CommitError<E> {
    /// The log refused the commit because this process is fenced ([`LogError::is_fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, CommitError::Log(e) if e.is_fenced())
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}
