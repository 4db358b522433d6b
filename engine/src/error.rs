//! Errors of the engine.
//!
//! Rules: every variant names the path (store path or host path) it is about, and the cause;
//! corruption carries the file and byte offset. Commits are validated under the log lock, so no
//! error is a retryable race. Only the `cli` crate
//! turns these into messages and exit codes, only the `fs` crate into errno values.

use std::io;
use std::path::PathBuf;

use verfs_coordination::txlog::LogError;

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
    #[error("{0}")]
    Coordination(String),
    #[error("verfs needs write access to {path} (read-only use is not supported): {source}")]
    NoWriteAccess { path: PathBuf, source: io::Error },
    #[error("{path}: {source}: a permission problem, not damage (run as the store's owner, or as a member of its group for a store made with `init --group`)")]
    NoReadAccess { path: PathBuf, source: io::Error },
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

    /// Wrap an error of a coordination mechanism (lease, journal, manifest, two-phase commit).
    pub fn coordination(e: impl std::fmt::Display) -> Error {
        Error::Coordination(e.to_string())
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
            other => Error::Coordination(other.to_string()),
        }
    }
}
