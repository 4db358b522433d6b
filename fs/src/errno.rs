//! The only place errno values are produced.
//!
//! Overview: [`errno`] maps an engine [`Error`] to the errno a Linux filesystem would return for
//! the same condition; [`FsError`] is what a handler of the mount returns: an engine error, or one
//! of the few conditions the adapter itself detects (a write to a read-only tree, an inode number
//! this mount never gave out, an unsupported flag, a lock that cannot be had). [`FsError::errno`]
//! maps those. A handler never names an errno value itself; it returns an `FsError` and
//! [`reply_errno`] turns it into the answer to the kernel, logging the cause of an `EIO` (which
//! reaches the caller without it).
//!
//! Not here: what a condition means to the engine (its error type lives in
//! `verfs_engine::error`), and messages or exit codes (the CLI's).

use std::io;

use fuser::Errno;
use verfs_engine::error::Error;

/// The errno a filesystem returns for engine error `e`. What has no POSIX meaning (damage, a store
/// that cannot be used, an internal error) is `EIO`.
pub fn errno(e: &Error) -> Errno {
    Errno::from_i32(match e {
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        Error::NotFound { .. } => libc::ENOENT,
        Error::Exists { .. } => libc::EEXIST,
        Error::NotADirectory { .. } => libc::ENOTDIR,
        Error::IsADirectory { .. } => libc::EISDIR,
        Error::NotEmpty { .. } => libc::ENOTEMPTY,
        Error::NameTooLong { .. } => libc::ENAMETOOLONG,
        Error::InvalidPath { .. } => libc::EINVAL,
        Error::NoAttribute { .. } => libc::ENODATA,
        Error::Reserved { .. } => libc::EEXIST,
        Error::ReadOnly { .. } => libc::EROFS,
        Error::Fenced(_) => libc::EROFS,
        // A typed coordination failure (fenced or not, retryable or not), a pack or chunker
        // error: no POSIX meaning, like before they were typed.
        Error::Coordination(_) | Error::Pack(_) | Error::InvalidChunkerParams { .. } => libc::EIO,
        Error::NoWriteAccess { .. } | Error::NoReadAccess { .. } => libc::EACCES,
        _ => libc::EIO,
    })
}

/// Why a request of the mount failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error(transparent)]
    Engine(#[from] Error),
    /// A change to a read-only mount or to a snapshot (`EROFS`).
    #[error("read-only: {0}")]
    ReadOnly(&'static str),
    /// A FUSE inode number this mount never gave out (`ESTALE`).
    #[error("inode {0:#x} was never given out by this mount")]
    Stale(u64),
    /// An inode number that does not fit the bits of a FUSE number (`EOVERFLOW`).
    #[error("{0}: does not fit a FUSE inode number")]
    Overflow(String),
    /// An argument the operation does not take (`EINVAL`).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// A feature verfs does not have (`EOPNOTSUPP`).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// The operation needs a regular file (`EISDIR`).
    #[error("is a directory")]
    IsADirectory,
    /// The operation needs a directory (`ENOTDIR`).
    #[error("not a directory")]
    NotADirectory,
    /// `SEEK_DATA`/`SEEK_HOLE` found nothing at or after the offset (`ENXIO`).
    #[error("no data or hole at or after the offset")]
    NoSuchOffset,
    /// The caller's buffer is too small for the answer (`ERANGE`).
    #[error("buffer of {0} bytes too small")]
    BufferTooSmall(u32),
    /// The lock table failed (`ENOLCK`).
    #[error("lock table: {0}")]
    NoLock(String),
    /// A lock conflicts and the caller does not wait (`EAGAIN`).
    #[error("lock conflicts")]
    WouldBlock,
    /// The caller got a signal while waiting for a lock (`EINTR`).
    #[error("interrupted")]
    Interrupted,
    /// An ioctl verfs does not know (`ENOTTY`).
    #[error("unknown ioctl")]
    UnknownIoctl,
    /// A host system call failed (its own errno).
    #[error("{0}")]
    Os(io::Error),
}

impl FsError {
    /// The errno for this error.
    pub fn errno(&self) -> Errno {
        match self {
            FsError::Engine(e) => errno(e),
            FsError::ReadOnly(_) => Errno::EROFS,
            FsError::Stale(_) => Errno::ESTALE,
            FsError::Overflow(_) => Errno::EOVERFLOW,
            FsError::Invalid(_) => Errno::EINVAL,
            FsError::NotSupported(_) => Errno::EOPNOTSUPP,
            FsError::IsADirectory => Errno::EISDIR,
            FsError::NotADirectory => Errno::ENOTDIR,
            FsError::NoSuchOffset => Errno::ENXIO,
            FsError::BufferTooSmall(_) => Errno::ERANGE,
            FsError::NoLock(_) => Errno::ENOLCK,
            FsError::WouldBlock => Errno::EAGAIN,
            FsError::Interrupted => Errno::EINTR,
            FsError::UnknownIoctl => Errno::from_i32(libc::ENOTTY),
            FsError::Os(e) => Errno::from_i32(e.raw_os_error().unwrap_or(0)),
        }
    }
}

/// The store path an engine error is about, when it names one.
fn cause_path(e: &FsError) -> Option<String> {
    let FsError::Engine(e) = e else {
        return None;
    };
    match e {
        Error::Io { path, .. }
        | Error::NotAStore { path, .. }
        | Error::WrongVersion { path, .. }
        | Error::Config { path, .. }
        | Error::Corrupt { path, .. }
        | Error::NoWriteAccess { path, .. }
        | Error::NoReadAccess { path, .. } => Some(path.display().to_string()),
        _ => None,
    }
}

/// The answer to request `op` on FUSE inode `ino` of the mount of `store` that failed with `e`.
/// An `EIO` reaches the caller without its cause (a damaged record, a failing disk), so the cause,
/// which names the file and the offset, is logged; so is an error the kernel does not expect.
/// `file_of` names the file the request was about (its path in the store), asked only for an
/// `EIO` because finding it searches the directories.
pub fn reply_errno(
    store: &str,
    op: &'static str,
    ino: u64,
    file_of: impl FnOnce() -> Option<String>,
    e: &FsError,
) -> Errno {
    let n = e.errno();
    if n == Errno::EIO {
        tracing::warn!(
            store,
            op,
            ino,
            file = file_of().as_deref().unwrap_or(""),
            path = cause_path(e).as_deref().unwrap_or(""),
            error = %e,
            "I/O error"
        );
    } else {
        tracing::debug!(store, op, ino, error = %e, "request failed");
    }
    n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io;
    use std::path::PathBuf;

    use verfs_engine::error::CoordinationError;

    use super::*;

    /// Every engine error variant reaches the kernel as the errno `rename(2)`, `open(2)` and
    /// friends would return for the same condition; what has no POSIX meaning (damage, a store
    /// that cannot be used, an internal error) is `EIO`. `Error` is `#[non_exhaustive]`, so a new
    /// variant is not caught here by the compiler: add it to this list.
    #[test]
    fn errno_maps_every_engine_error() {
        let p = || PathBuf::from("/store/x");
        let s = || String::from("/a/b");
        let cases: Vec<(Error, Errno)> = vec![
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::ENOSPC),
                },
                Errno::from_i32(libc::ENOSPC),
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::EDQUOT),
                },
                Errno::from_i32(libc::EDQUOT),
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::from_raw_os_error(libc::EACCES),
                },
                Errno::EACCES,
            ),
            (
                Error::Io {
                    path: p(),
                    source: io::Error::other("no os error"),
                },
                Errno::EIO,
            ),
            (
                Error::NotAStore {
                    path: p(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::WrongVersion {
                    path: p(),
                    found: 9,
                    supported: 2,
                },
                Errno::EIO,
            ),
            (
                Error::Config {
                    path: p(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::Corrupt {
                    path: p(),
                    offset: 24,
                    reason: "record crc mismatch".into(),
                },
                Errno::EIO,
            ),
            (Error::NotFound { path: s() }, Errno::ENOENT),
            (Error::Exists { path: s() }, Errno::EEXIST),
            (Error::NotADirectory { path: s() }, Errno::ENOTDIR),
            (Error::IsADirectory { path: s() }, Errno::EISDIR),
            (Error::NotEmpty { path: s() }, Errno::ENOTEMPTY),
            (Error::NameTooLong { path: s() }, Errno::ENAMETOOLONG),
            (
                Error::InvalidPath {
                    path: s(),
                    reason: "cannot move /a to a subdirectory of itself".into(),
                },
                Errno::EINVAL,
            ),
            (
                Error::Reserved {
                    path: s(),
                    reason: "/.snapshots".into(),
                },
                Errno::EEXIST,
            ),
            (
                Error::ReadOnly {
                    path: s(),
                    reason: "r".into(),
                },
                Errno::EROFS,
            ),
            (
                Error::Snapshot {
                    name: "n".into(),
                    reason: "r".into(),
                },
                Errno::EIO,
            ),
            (
                Error::NoAttribute {
                    name: "user.x".into(),
                },
                Errno::NO_XATTR,
            ),
            (Error::Fenced("claimed".into()), Errno::EROFS),
            (
                Error::Coordination(CoordinationError::LeaseKeeper {
                    source: io::Error::other("c"),
                }),
                Errno::EIO,
            ),
            (
                Error::InvalidChunkerParams { reason: "r".into() },
                Errno::EIO,
            ),
            (Error::Internal("i".into()), Errno::EIO),
        ];
        for (e, want) in &cases {
            assert_eq!(errno(e), *want, "{e:?} ({e})");
        }
    }

    /// The adapter's own conditions get the errno the old literal replies gave.
    #[test]
    fn errno_maps_every_fs_condition() {
        let cases = [
            (FsError::ReadOnly("snapshot"), libc::EROFS),
            (FsError::Stale(1 << 63 | 5), libc::ESTALE),
            (FsError::Overflow("inode 0".into()), libc::EOVERFLOW),
            (FsError::Invalid("x"), libc::EINVAL),
            (FsError::NotSupported("x"), libc::EOPNOTSUPP),
            (FsError::IsADirectory, libc::EISDIR),
            (FsError::NotADirectory, libc::ENOTDIR),
            (FsError::NoSuchOffset, libc::ENXIO),
            (FsError::BufferTooSmall(3), libc::ERANGE),
            (FsError::NoLock("x".into()), libc::ENOLCK),
            (FsError::WouldBlock, libc::EAGAIN),
            (FsError::Interrupted, libc::EINTR),
            (FsError::UnknownIoctl, libc::ENOTTY),
            (
                FsError::Os(io::Error::from_raw_os_error(libc::ENOENT)),
                libc::ENOENT,
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(e.errno().code(), *want, "{e:?}");
        }
    }
}
