//! Who may read a store, and how it stays usable on a full disk.
//!
//! **Sharing mode** (data-layout.md 4.1). A store is private to its owner unless `verfs init
//! --group G` made it shared with a group: the root directory's mode says which (0700, or setgid
//! 2770 with group G), and every verfs process that opens the store sets its umask from it
//! (077, or 007), so every file any process creates later (packs, log segments, leases) is 0600 or
//! 0660 and every directory 0700 or 2770 whatever the caller's umask. Without this, packs and the
//! log followed the umask (0644): any local user could read every stored byte.
//!
//! **Space reserve** (data-layout.md 4.2). `STORE/reserve` holds `RESERVE_BYTES` of allocated
//! space, like ext4's reserved blocks. Commands that only read or free space (`ls`, `cat`, `rm`,
//! `gc`, ...) release it when the filesystem is nearly full, so they can still take their lease
//! and append their log record, and refill it when they finish. Commands that add data never
//! touch it, so a full disk stops writes but never locks the user out of reading and freeing.
//!
//! This module owns the reserve file and the umask rule; it knows nothing about what a command
//! does with the space.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Error;

/// The reserve file's name in the store root.
pub const RESERVE_FILE: &str = "reserve";

/// Bytes the reserve holds when the filesystem has room for it: enough for several leases, log
/// records, a GC pass's discard files and manifests.
pub const RESERVE_BYTES: u64 = 1 << 20;

/// The umask of a store whose root directory has `mode`: group-shared (setgid, group rwx) or
/// private.
pub fn umask_for(mode: u32) -> u32 {
    if mode & 0o2070 == 0o2070 {
        0o007
    } else {
        0o077
    }
}

/// Set this process's umask from the store root's mode ([STORE-4]). Called by init and open.
pub fn apply_umask(root: &Path) -> Result<(), Error> {
    let mode = fs::metadata(root).map_err(Error::io(root))?.mode();
    // SAFETY: umask has no preconditions; it only changes this process's file creation mask.
    unsafe { libc::umask(umask_for(mode) as libc::mode_t) };
    Ok(())
}

/// Give a new store root its sharing mode: 0700, or 2770 with group `gid`.
pub fn set_root_mode(root: &Path, group: Option<u32>) -> Result<(), Error> {
    if let Some(gid) = group {
        std::os::unix::fs::chown(root, None, Some(gid)).map_err(Error::io(root))?;
    }
    let mode = if group.is_some() { 0o2770 } else { 0o700 };
    fs::set_permissions(root, fs::Permissions::from_mode(mode)).map_err(Error::io(root))
}

/// Refuse early, with a message that says what is needed, when this user cannot write `dir`
/// (every process needs a lease folder there; read-only use is not supported).
pub fn check_writable(dir: &Path) -> Result<(), Error> {
    match nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    ) {
        Ok(()) => Ok(()),
        Err(
            e @ (nix::errno::Errno::EACCES | nix::errno::Errno::EPERM | nix::errno::Errno::EROFS),
        ) => Err(Error::NoWriteAccess {
            path: dir.to_path_buf(),
            source: io::Error::from(e),
        }),
        // Anything else (a missing folder) is reported by the step that needs it.
        Err(_) => Ok(()),
    }
}

/// Refuse, naming the first file this user cannot read, when part of the store is unreadable:
/// a checker would otherwise report every such file as damaged. Only the store's own folders
/// are walked (packs, log, leases, ...), never file contents.
pub fn check_readable(root: &Path) -> Result<(), Error> {
    fn walk(p: &Path, depth: usize) -> Result<(), Error> {
        let flags = nix::unistd::AccessFlags::R_OK;
        let is_dir = fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false);
        let flags = if is_dir {
            flags | nix::unistd::AccessFlags::X_OK
        } else {
            flags
        };
        match nix::unistd::access(p, flags) {
            Err(e @ (nix::errno::Errno::EACCES | nix::errno::Errno::EPERM)) => {
                return Err(Error::NoReadAccess {
                    path: p.to_path_buf(),
                    source: io::Error::from(e),
                })
            }
            // Vanished meanwhile (a lease released): not this check's business.
            _ => {}
        }
        if is_dir && depth < 3 {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), depth + 1)?;
                }
            }
        }
        Ok(())
    }
    walk(root, 0)
}

/// Is the filesystem under `root` so full that a command might not find room for its lease and
/// log record?
fn nearly_full(root: &Path) -> bool {
    match nix::sys::statvfs::statvfs(root) {
        Ok(s) => {
            (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64) < RESERVE_BYTES
        }
        Err(_) => false,
    }
}

/// Refuse, as ENOSPC, to write `len` more bytes of data to `file` if that would leave less than
/// [`RESERVE_BYTES`] free on its filesystem: like ext4's reserved blocks, the last space is kept
/// for leases, log records and the commands that free space, even after the reserve file was
/// released. Metadata writes do not call this.
pub fn leave_reserve(file: &File, len: u64) -> io::Result<()> {
    let Ok(s) = nix::sys::statvfs::fstatvfs(file) else {
        return Ok(());
    };
    let free = (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64);
    if free < len.saturating_add(RESERVE_BYTES) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

/// For a command that only reads or frees space: if the disk is nearly full, give the reserve's
/// space back to the filesystem so the command can run. Returns whether it did. Never fails: at
/// worst the command meets ENOSPC as it would have.
pub fn release_if_full(root: &Path) -> bool {
    if !nearly_full(root) {
        return false;
    }
    let path = root.join(RESERVE_FILE);
    match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f.set_len(0).is_ok(),
        Err(_) => false,
    }
}

/// Bring the reserve back to [`RESERVE_BYTES`] of allocated space if the filesystem has room
/// (creating it for a store made before it existed). Best effort: on ENOSPC the reserve stays as
/// it is and the next command tries again.
pub fn refill(root: &Path) {
    let path = root.join(RESERVE_FILE);
    let Ok(f) = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        // The store's umask (set at open) makes this 0600 or 0660.
        .mode(0o666)
        .open(&path)
    else {
        return;
    };
    if f.metadata()
        .map(|m| m.blocks() * 512 >= RESERVE_BYTES)
        .unwrap_or(true)
    {
        return;
    }
    if allocate(&f, RESERVE_BYTES).is_err() {
        let _ = f.set_len(0);
    }
}

fn allocate(f: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    // A filesystem without fallocate: write real bytes (zeros may be stored sparse).
    use std::os::unix::fs::FileExt;
    let block = vec![0xA5u8; 64 << 10];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(block.len() as u64) as usize;
        f.write_all_at(&block[..n], off)?;
        off += n as u64;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_follows_the_root_mode() {
        assert_eq!(umask_for(0o40700), 0o077);
        assert_eq!(umask_for(0o42770), 0o007);
        // Group rwx without setgid is not a shared store (the group would not be inherited).
        assert_eq!(umask_for(0o40770), 0o077);
        assert_eq!(umask_for(0o40755), 0o077);
    }

    #[test]
    fn refill_allocates_and_release_frees_only_when_full() {
        let d = tempfile::tempdir().unwrap();
        refill(d.path());
        let m = fs::metadata(d.path().join(RESERVE_FILE)).unwrap();
        assert!(m.blocks() * 512 >= RESERVE_BYTES, "{} blocks", m.blocks());
        // This temp dir's filesystem is not nearly full: the reserve is kept.
        assert!(!release_if_full(d.path()));
        assert!(fs::metadata(d.path().join(RESERVE_FILE)).unwrap().len() >= RESERVE_BYTES);
    }
}
