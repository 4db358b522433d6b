//! Errors of the engine: [`Error`], the one type every engine operation returns, and
//! [`CoordinationError`], a failure of a coordination mechanism kept whole inside it.
//!
//! # Rules
//!
//! - **One general [`Error`]**, because its two consumers need one type: the `cli` crate turns
//!   it into a message and an exit code, the `fs` crate (`fs/src/errno.rs`, the only place) into
//!   an errno value. Nothing in the engine produces errno values or exit codes.
//! - **Operation errors** name the operation that failed and list what can fail in it, each with
//!   its typed cause: `store::OpenError` (`Store::open`),
//!   `store::CommitError` (`Store::transact`),
//!   `pipeline::WriteError` (`Store::write_stream`: chunker, input read with its path, pack,
//!   compression pool), `pipeline::FoldStatsError` (`pipeline::fold_into_store`),
//!   `ops::gc::GcError` (`gc::run_pass`), `ops::recover::RecoverError` (`recover::recover`).
//!   They live beside their operation (a layer above this
//!   one, so they may hold that layer's types), say what state a failure leaves behind, have
//!   `is_retryable()`/`is_fenced()`, and convert into [`Error`] with `From` (so `?` works in any
//!   engine function and the message is unchanged). Add one for an entry point whose callers
//!   need to tell its failures apart.
//! - **Typed causes, never their text.** A failure from a lower layer is kept as its typed
//!   source: coordination's per-operation errors inside [`Error::Coordination`] (through
//!   [`CoordinationError`], one variant per coordination error type, `#[error(transparent)]`),
//!   a pack error inside [`Error::Pack`], an `io::Error` inside [`Error::Io`]. So
//!   [`Error::is_fenced`] and [`Error::is_retryable`] can answer, and a lock's `TimedOut` reaches
//!   the caller. `to_string()` of an error is for messages only, never to build another error.
//! - **Every error names what it is about and its cause**: the store path or host path (or the
//!   snapshot, attribute or lease), then why. **Corruption carries the file and the byte offset**
//!   ([`Error::Corrupt`], built from a `format::DecodeError` with [`Error::corrupt`]).
//! - **Messages are part of the interface**: the CLI prints them and tests and operators match
//!   on them, so a restructure keeps them byte-identical. Lower case, no trailing period.
//! - **When to add a variant:** when a caller (the CLI, the fs adapter, a retry loop) must tell the
//!   condition apart, or when a lower layer's typed error would otherwise be flattened. Add a
//!   `From` for the lower type rather than a `map_err` closure that formats it.
//! - **[`Error::Internal`] is only for broken invariants** of the engine itself (a chunk missing
//!   from the index it was just put in, worker threads gone): never for a failure of the disk,
//!   the data or another process.
//! - **Retryable:** only contention, where the same call may simply be made again: a lock wait
//!   that timed out, a conflicting holder, a busy gate ([`Error::is_retryable`], answered by
//!   coordination's `lock::AcquireError::is_retryable`/`lock::ConvertError::is_retryable`).
//!   Commits are validated under the log lock, so a rejected commit is never a retryable race.
//!   **Fenced** ([`Error::is_fenced`]) is never retryable: the process must stop changing the
//!   store.

use std::io;
use std::path::PathBuf;

use verfs_coordination::{ctlfile, journal, lease, lock, manifest, two_phase, txlog};

use txlog::LogError;

use crate::format::DecodeError;
use crate::model::PathError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a verfs store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("{path}: store format version {found}, but this verfs reads version {supported}")]
    WrongVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: invalid configuration: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A metadata record that does not decode, or a tree operation that refused its input. The
    /// source is a `meta::MetaError` (boxed because the metadata layer sits above this one; page
    /// I/O and page damage become [`Error::Io`] and [`Error::Corrupt`]).
    #[error(transparent)]
    Meta(Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("{path}: No such file or directory")]
    NotFound { path: String },
    #[error("{path}: File exists")]
    Exists { path: String },
    #[error("{path}: Not a directory")]
    NotADirectory { path: String },
    #[error("{path}: Is a directory")]
    IsADirectory { path: String },
    #[error("{path}: Directory not empty")]
    NotEmpty { path: String },
    #[error("{path}: File name too long")]
    NameTooLong { path: String },
    #[error("{path}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{path}: the name is reserved ({reason})")]
    Reserved { path: String, reason: String },
    #[error("{path}: Read-only file system ({reason})")]
    ReadOnly { path: String, reason: String },
    #[error("snapshot {name}: {reason}")]
    Snapshot { name: String, reason: String },
    #[error("{name}: No data available (no such extended attribute)")]
    NoAttribute { name: String },
    #[error("fenced: this process was declared dead by another process and may not change the store any more ({0})")]
    Fenced(String),
    /// A lease, journal, manifest, two-phase commit or lock-table operation failed; the
    /// coordination error is kept whole (its message is this error's message).
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// `[chunker]` parameters the chunker refuses.
    #[error("invalid chunker parameters: {reason}")]
    InvalidChunkerParams { reason: String },
    /// A pack error that is neither corruption nor I/O (those become [`Error::Corrupt`] and
    /// [`Error::Io`]): a chunk not in its pack, a torn tail, a poisoned writer, input the format
    /// cannot hold, a compressor failure. The source is a `pack::PackError` (boxed because the
    /// pack layer sits above this one); its message is this error's message.
    #[error(transparent)]
    Pack(Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("verfs needs write access to {path} (read-only use is not supported): {source}")]
    NoWriteAccess { path: PathBuf, source: io::Error },
    #[error("{path}: {source}: a permission problem, not damage (run as the store's owner, or as a member of its group for a store made with `init --group`)")]
    NoReadAccess { path: PathBuf, source: io::Error },
    /// The store is on a network filesystem that does not show every process's changes to every
    /// other at once ([FS-1]); nothing was opened.
    #[error(
        "{path}: the store is on {fstype}, which is not safe to share as mounted: {failures}; \
         fix that, or set `checks = false` under [filesystem] in {config} to open it anyway \
         (`verfs doctor` shows every check)",
        path = .path.display(), config = .config.display()
    )]
    UnfitFilesystem {
        path: PathBuf,
        fstype: String,
        failures: String,
        config: PathBuf,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Name the file a [`DecodeError`] is about: it becomes [`Error::Corrupt`] at
    /// its `at` (which must then be an offset in the file), with its reason.
    pub fn corrupt(path: impl Into<PathBuf>) -> impl FnOnce(DecodeError) -> Error {
        let path = path.into();
        move |e| Error::Corrupt {
            path,
            offset: e.at,
            reason: e.reason,
        }
    }

    /// Wrap an error of a coordination mechanism (lease, journal, manifest, two-phase commit,
    /// lock table), keeping it typed. Same as `Error::from`; reads well in `map_err`.
    pub fn coordination(e: impl Into<CoordinationError>) -> Error {
        Error::Coordination(e.into())
    }

    /// This process was fenced: another process declared it dead (its lease was claimed, or a
    /// recoverer rolled its manifest back), so it must not change the store any more. Never
    /// retryable.
    pub fn is_fenced(&self) -> bool {
        match self {
            Error::Fenced(_) => true,
            Error::Coordination(e) => e.is_fenced(),
            _ => false,
        }
    }

    /// Contention, not failure: a lock wait timed out, another owner holds a conflicting mode,
    /// or a lock gate stayed busy. Nothing was changed, so the same call may be made again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Coordination(e) if e.is_retryable())
    }
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Invalid { path, reason } => Error::InvalidPath { path, reason },
            PathError::NameTooLong { path } => Error::NameTooLong { path },
        }
    }
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { path, source } => Error::Io { path, source },
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path,
                offset,
                reason,
            },
            LogError::Fenced(m) => Error::Fenced(m),
            other => Error::Coordination(CoordinationError::Log(other)),
        }
    }
}

/// A failure of one of coordination's operations, kept with its type (the variant names the
/// operation; the message is the coordination error's own).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinationError {
    /// A log failure that is neither I/O, corruption nor fencing (those become [`Error::Io`],
    /// [`Error::Corrupt`] and [`Error::Fenced`]): a closure that re-entered the log.
    #[error(transparent)]
    Log(LogError),
    #[error(transparent)]
    LeaseAcquire(#[from] lease::AcquireError),
    #[error(transparent)]
    LeaseRelease(#[from] lease::ReleaseError),
    #[error(transparent)]
    LeaseFence(#[from] lease::FenceError),
    #[error(transparent)]
    LeaseList(#[from] lease::ListError),
    #[error(transparent)]
    LeaseClaim(#[from] lease::ClaimError),
    #[error(transparent)]
    LeaseFinish(#[from] lease::FinishError),
    /// The thread that heartbeats this process's lease could not be started.
    #[error("starting the lease keeper: {source}")]
    LeaseKeeper { source: io::Error },
    #[error(transparent)]
    JournalOpen(#[from] journal::OpenError),
    #[error(transparent)]
    JournalRead(#[from] journal::ReadError),
    #[error(transparent)]
    JournalBegin(#[from] journal::BeginError),
    #[error(transparent)]
    JournalEnd(#[from] journal::EndError),
    #[error(transparent)]
    ManifestStage(#[from] manifest::StageError),
    #[error(transparent)]
    ManifestCommit(#[from] manifest::CommitError),
    #[error(transparent)]
    ManifestAbort(#[from] manifest::AbortError),
    #[error(transparent)]
    ManifestRecover(#[from] manifest::RecoverError),
    #[error(transparent)]
    Propose(#[from] two_phase::ProposeError),
    #[error(transparent)]
    Poll(#[from] two_phase::PollError),
    #[error(transparent)]
    WaitDecision(#[from] two_phase::WaitError),
    #[error(transparent)]
    TwoPhaseRecover(#[from] two_phase::RecoverError),
    #[error(transparent)]
    TwoPhaseFinish(#[from] two_phase::FinishError),
    #[error(transparent)]
    LockOpen(#[from] lock::OpenError),
    #[error(transparent)]
    LockAcquire(#[from] lock::AcquireError),
    #[error(transparent)]
    LockConvert(#[from] lock::ConvertError),
    #[error(transparent)]
    LockRelease(#[from] lock::ReleaseError),
    #[error(transparent)]
    LockTest(#[from] lock::TestError),
    #[error(transparent)]
    Ctl(#[from] ctlfile::CtlError),
}

impl CoordinationError {
    /// See [`Error::is_fenced`]: answered by the coordination error's own `is_fenced()`.
    pub fn is_fenced(&self) -> bool {
        match self {
            CoordinationError::Log(e) => e.is_fenced(),
            CoordinationError::LeaseFence(e) => e.is_fenced(),
            CoordinationError::ManifestCommit(e) => e.is_fenced(),
            _ => false,
        }
    }

    /// See [`Error::is_retryable`]: answered by the lock errors' own `is_retryable()`.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinationError::LockAcquire(e) => e.is_retryable(),
            CoordinationError::LockConvert(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// `?` on a coordination operation's result in an engine function: the error stays typed.
macro_rules! from_coordination {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Coordination(e.into())
            }
        }
    )*};
}

from_coordination!(
    lease::AcquireError,
    lease::ReleaseError,
    lease::FenceError,
    lease::ListError,
    lease::ClaimError,
    lease::FinishError,
    journal::OpenError,
    journal::ReadError,
    journal::BeginError,
    journal::EndError,
    manifest::StageError,
    manifest::CommitError,
    manifest::AbortError,
    manifest::RecoverError,
    two_phase::ProposeError,
    two_phase::PollError,
    two_phase::WaitError,
    two_phase::RecoverError,
    two_phase::FinishError,
    lock::OpenError,
    lock::AcquireError,
    lock::ConvertError,
    lock::ReleaseError,
    lock::TestError,
    ctlfile::CtlError,
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use verfs_coordination::lock::{Mode, Resource};

    #[test]
    fn coordination_errors_keep_their_type_and_message() {
        let e = lock::AcquireError::TimedOut {
            path: "locks".into(),
            resource: Resource::Named("gc-worker".into()),
            mode: Mode::Ex,
            waited: std::time::Duration::from_millis(5),
            held: None,
        };
        let text = e.to_string();
        let e = Error::from(e);
        assert_eq!(e.to_string(), text);
        assert!(e.is_retryable());
        assert!(!e.is_fenced());
        assert!(matches!(
            e,
            Error::Coordination(CoordinationError::LockAcquire(
                lock::AcquireError::TimedOut { .. }
            ))
        ));
        let e = Error::coordination(manifest::CommitError::RolledBack {
            id: format!("{}-{:016x}", verfs_coordination::id::LeaseId::generate(), 7)
                .parse()
                .expect("a valid manifest id"),
            reason: "claimed".into(),
        });
        assert!(e.is_fenced());
        assert!(!e.is_retryable());
        assert!(Error::Fenced("x".into()).is_fenced());
    }
}
