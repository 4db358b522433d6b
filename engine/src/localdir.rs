//! [`LocalDir`]: a directory on the host filesystem that `verfs get` writes into without ever
//! following a symlink it did not create.
//!
//! A stored tree is untrusted input: it may hold `evil -> /somewhere` in one place and
//! `evil/pwned` in another, and a destination may already hold symlinks (dangling or not). Every
//! step is therefore taken relative to an open directory descriptor: `mkdirat` for a new
//! directory, then `openat(O_DIRECTORY | O_NOFOLLOW)` to step into it (a symlink in its place
//! fails with `ELOOP` instead of being followed), `O_EXCL` temp files for new contents, and
//! `renameat` to put a finished file under its name (a rename replaces the name itself, never
//! what a symlink there points at). Metadata is set on descriptors or with `AT_SYMLINK_NOFOLLOW`.
//!
//! This module owns only the host side; what to write comes from `transfer`. It knows nothing
//! about chunks or the store.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstatat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::model::{Inode, Timestamp};

/// Why one entry could not be written. Names the host path; the caller adds the store path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteEntryError {
    #[error("{path}: not writing through the symlink that is there")]
    Symlink { path: PathBuf },
    #[error("{path}: cannot overwrite directory with non-directory")]
    IsDirectory { path: PathBuf },
    #[error("{path}: cannot overwrite non-directory with directory")]
    NotDirectory { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(Errno) -> WriteEntryError + '_ {
    move |e| WriteEntryError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// The kind of what is at a name, not following a symlink.
enum Existing {
    None,
    Dir,
    Symlink,
    Other,
}

/// An open directory of the destination, and the path it was reached by (for messages only: the
/// path is never used to reach anything).
pub struct LocalDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A file being written under a temp name in a [`LocalDir`], put under its name by
/// [`LocalDir::commit_file`] or removed by [`LocalDir::discard_file`].
pub struct NewFile {
    pub file: File,
    tmp: Vec<u8>,
    /// Where the file will appear.
    pub path: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn timespec(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.secs as libc::time_t, t.nsecs as libc::c_long)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn perm(i: &Inode) -> Mode {
    Mode::from_bits_truncate((i.perm & 0o7777) as libc::mode_t)
}

impl LocalDir {
    /// Open an existing directory named by the user. The path itself may be or pass through a
    /// symlink (the user chose it, as with `cp`); nothing below it is followed.
    pub fn open(path: &Path) -> Result<LocalDir, WriteEntryError> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_at(path))?;
        Ok(LocalDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn child_path(&self, name: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(name))
    }

    fn existing(&self, name: &[u8]) -> Result<Existing, WriteEntryError> {
        match fstatat(
            &self.fd,
            OsStr::from_bytes(name),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
                SFlag::S_IFDIR => Existing::Dir,
                SFlag::S_IFLNK => Existing::Symlink,
                _ => Existing::Other,
            }),
            Err(Errno::ENOENT) => Ok(Existing::None),
            Err(e) => Err(io_at(&self.child_path(name))(e)),
        }
    }

    /// The directory `name` inside this one: created (mode 0700 until [`LocalDir::finish_dir`]
    /// sets the stored mode, so it can be filled even if that mode is read-only), or an existing
    /// directory. Never a symlink, whatever it points at.
    pub fn dir(&self, name: &[u8]) -> Result<LocalDir, WriteEntryError> {
        let path = self.child_path(name);
        let n = OsStr::from_bytes(name);
        match mkdirat(&self.fd, n, Mode::S_IRWXU) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
        match openat(
            &self.fd,
            n,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(LocalDir { fd, path }),
            Err(Errno::ELOOP) => Err(WriteEntryError::Symlink { path }),
            Err(Errno::ENOTDIR) => match self.existing(name)? {
                Existing::Symlink => Err(WriteEntryError::Symlink { path }),
                _ => Err(WriteEntryError::NotDirectory { path }),
            },
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Set a directory's stored mode, owner (as root) and times, after its children are written.
    pub fn finish_dir(&self, i: &Inode) -> Result<(), WriteEntryError> {
        fchmod(&self.fd, perm(i)).map_err(io_at(&self.path))?;
        self.set_owner_times_fd(self.fd.as_fd(), i, &self.path)
    }

    fn set_owner_times_fd(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        i: &Inode,
        path: &Path,
    ) -> Result<(), WriteEntryError> {
        if is_root() {
            fchown(fd, Some(Uid::from_raw(i.uid)), Some(Gid::from_raw(i.gid)))
                .map_err(io_at(path))?;
            // chown clears set-id bits: put the stored mode back.
            fchmod(fd, perm(i)).map_err(io_at(path))?;
        }
        futimens(fd, &timespec(i.atime), &timespec(i.mtime)).map_err(io_at(path))
    }

    /// Start writing file `name`: a new temp file in this directory, created with `O_EXCL` so it
    /// is always a fresh inode of ours.
    pub fn new_file(&self, name: &[u8]) -> Result<NewFile, WriteEntryError> {
        let path = self.child_path(name);
        loop {
            let tmp = format!(
                ".verfs-get-{}-{}",
                std::process::id(),
                TMP_SEQ.fetch_add(1, Relaxed)
            )
            .into_bytes();
            match openat(
                &self.fd,
                OsStr::from_bytes(&tmp),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
            ) {
                Ok(fd) => {
                    return Ok(NewFile {
                        file: File::from(fd),
                        tmp,
                        path,
                    })
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
    }

    /// Give a finished file its stored mode, owner and times and put it under its name,
    /// replacing a regular file (or other non-directory, non-symlink) that is there. A directory
    /// or a symlink at the name is refused and the temp file removed.
    pub fn commit_file(&self, f: NewFile, i: &Inode) -> Result<(), WriteEntryError> {
        let name = f
            .path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let res = (|| {
            fchmod(f.file.as_fd(), perm(i)).map_err(io_at(&f.path))?;
            self.set_owner_times_fd(f.file.as_fd(), i, &f.path)?;
            match self.existing(&name)? {
                Existing::Dir => {
                    return Err(WriteEntryError::IsDirectory {
                        path: f.path.clone(),
                    })
                }
                Existing::Symlink => {
                    return Err(WriteEntryError::Symlink {
                        path: f.path.clone(),
                    })
                }
                Existing::None | Existing::Other => {}
            }
            renameat(
                &self.fd,
                OsStr::from_bytes(&f.tmp),
                &self.fd,
                OsStr::from_bytes(&name),
            )
            .map_err(io_at(&f.path))
        })();
        if res.is_err() {
            let _ = unlinkat(
                &self.fd,
                OsStr::from_bytes(&f.tmp),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        res
    }

    /// Remove a file that will not be finished (its data could not be read): nothing partial is
    /// left, under its name or the temp name.
    pub fn discard_file(&self, f: NewFile) {
        drop(f.file);
        let _ = unlinkat(
            &self.fd,
            OsStr::from_bytes(&f.tmp),
            UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Make `name` a symlink to `target`, replacing a non-directory that is there (the old
    /// entry itself, never what it points at).
    pub fn symlink(&self, name: &[u8], target: &[u8], i: &Inode) -> Result<(), WriteEntryError> {
        let path = self.child_path(name);
        self.replace_non_dir(name, &path, |n| {
            symlinkat(OsStr::from_bytes(target), &self.fd, n)
        })?;
        self.set_owner_times_at(name, i, &path)
    }

    /// Make `name` a FIFO, socket or device node, replacing a non-directory that is there.
    pub fn node(&self, name: &[u8], kind: SFlag, i: &Inode) -> Result<(), WriteEntryError> {
        let path = self.child_path(name);
        self.replace_non_dir(name, &path, |n| {
            mknodat(&self.fd, n, kind, perm(i), i.rdev as libc::dev_t)
        })?;
        self.set_owner_times_at(name, i, &path)
    }

    fn replace_non_dir(
        &self,
        name: &[u8],
        path: &Path,
        make: impl Fn(&OsStr) -> nix::Result<()>,
    ) -> Result<(), WriteEntryError> {
        let n = OsStr::from_bytes(name);
        match make(n) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_at(path)(e)),
        }
        if let Existing::Dir = self.existing(name)? {
            return Err(WriteEntryError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        unlinkat(&self.fd, n, UnlinkatFlags::NoRemoveDir).map_err(io_at(path))?;
        make(n).map_err(io_at(path))
    }

    fn set_owner_times_at(
        &self,
        name: &[u8],
        i: &Inode,
        path: &Path,
    ) -> Result<(), WriteEntryError> {
        let n = OsStr::from_bytes(name);
        if is_root() {
            fchownat(
                &self.fd,
                n,
                Some(Uid::from_raw(i.uid)),
                Some(Gid::from_raw(i.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io_at(path))?;
        }
        utimensat(
            &self.fd,
            n,
            &timespec(i.atime),
            &timespec(i.mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_at(path))
    }
}
