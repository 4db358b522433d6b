//! Durable file primitives shared by every coordination mechanism.
//!
//! Owns atomic writes, directory fsync, temp names, file identity and tree removal. Does not own any
//! store path or file format; it sits at the bottom and imports only the failpoint macro.
//!
//! Everything here uses only operations that also hold on NFSv4: `O_EXCL` create, rename inside one
//! directory, fsync of files and directories (see `data-layout.md`, "Assumptions").

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::io_site;

/// fsync a directory so that creates, renames and unlinks inside it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    io_site!("fsutil.fsync-dir", File::open(dir)?.sync_all())
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temp name beside `path`, unique to this process and call: `.NAME.tmp-PID-RANDOM`.
pub fn temp_path_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r: u64 = rand::random();
    parent_of(path).join(format!(".{name}.tmp-{}-{r:016x}", std::process::id()))
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
///
/// On error the target is untouched (either the old content or absent); a temp file may be left
/// behind only if the process dies, and its name starts with `.` and contains `.tmp-`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path_beside(path);
    let res = (|| {
        let mut f = io_site!(
            "fsutil.atomic-create",
            OpenOptions::new().write(true).create_new(true).open(&tmp)
        )?;
        io_site!("fsutil.atomic-write", f.write_all(bytes))?;
        io_site!("fsutil.atomic-fsync", f.sync_all())?;
        io_site!("fsutil.atomic-rename", fs::rename(&tmp, path))?;
        fsync_dir(&parent_of(path))
    })();
    if res.is_err() {
        let _ = io_site!("fsutil.atomic-cleanup-unlink", fs::remove_file(&tmp));
    }
    res
}

/// Create `path` with `bytes` only if it does not exist yet (`O_EXCL`), durably.
///
/// Returns `Ok(false)` when another process created it first (and the file is there to be
/// read). The content is written through a temp file and hard-linked into place, so no reader
/// ever sees a partial file: `link(2)` fails with `EEXIST` exactly like `O_EXCL` and is atomic on
/// NFSv4 as well.
pub fn create_exclusive(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = temp_path_beside(path);
    let mut f = io_site!(
        "fsutil.excl-create",
        OpenOptions::new().write(true).create_new(true).open(&tmp)
    )?;
    let res = (|| {
        io_site!("fsutil.excl-write", f.write_all(bytes))?;
        io_site!("fsutil.excl-fsync", f.sync_all())?;
        // On GlusterFS a tight create race can answer EEXIST to every racer and leave no file
        // (0.1-0.3% of O_EXCL races, `../shared/multihost`): "exists" counts only once the
        // file is seen, else the link is tried again.
        let mut attempt = 0u32;
        loop {
            match io_site!("fsutil.excl-link", fs::hard_link(&tmp, path)) {
                Ok(()) => {
                    fsync_dir(&parent_of(path))?;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match fs::symlink_metadata(path) {
                        Ok(_) => return Ok(false),
                        Err(m) if m.kind() == io::ErrorKind::NotFound && attempt < 20 => {
                            std::thread::sleep(std::time::Duration::from_millis(
                                1 << attempt.min(6),
                            ));
                            attempt += 1;
                        }
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })();
    let _ = io_site!("fsutil.excl-temp-unlink", fs::remove_file(&tmp));
    res
}

/// Is this a temp file left by [`write_atomic`] or [`create_exclusive`]?
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The pid embedded in a temp name made by [`temp_path_beside`], if any.
pub fn temp_name_pid(name: &str) -> Option<u32> {
    let rest = name.rsplit_once(".tmp-")?.1;
    rest.split('-').next()?.parse().ok()
}

/// (device, inode) of a file: its identity on this filesystem (a path that now names another
/// file gives another identity).
pub fn file_identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// `remove_dir_all` that treats entries vanishing under a concurrent remover as removed.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let gone_ok = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    if !meta.is_dir() {
        return gone_ok(io_site!("lease.remove-file", fs::remove_file(path)));
    }
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        match ent {
            Ok(ent) => remove_tree(&ent.path())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    gone_ok(io_site!("lease.remove-dir", fs::remove_dir(path)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_exclusive_has_one_winner() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("decision");
        assert!(create_exclusive(&p, b"a").unwrap());
        assert!(!create_exclusive(&p, b"b").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"a");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_carry_the_pid() {
        let t = temp_path_beside(Path::new("/x/name"));
        let n = t.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(n));
        assert_eq!(temp_name_pid(n), Some(std::process::id()));
    }
}
