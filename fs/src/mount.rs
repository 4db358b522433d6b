//! Mounting: options, the mountpoint checks, the serve loop with its group commit, stop signals,
//! and detaching (also what a fenced mount process does before it exits).
//!
//! Overview: [`mount`] checks the mountpoint ([`check_mountpoint`]), serves a [`VerFs`] on it until
//! SIGINT/SIGTERM or an external unmount, syncing the log every [`MountConfig::sync_interval`],
//! then flushes every dirty file, detaches ([`detach`]) and releases the lease.
//! [`mounted_store`] and [`is_mountpoint`] read `/proc/self/mountinfo`.
//!
//! Not here: answering the kernel's requests (`filesystem`).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verfs_engine::error::Error;
use verfs_engine::store::Store;

use crate::filesystem::VerFs;

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountConfig {
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub threads: usize,
    /// Device nodes in the mount can be opened (`dev`); off by default, as for every FUSE mount.
    pub dev: bool,
    /// Set-user-ID and set-group-ID bits take effect on exec (`suid`); off by default.
    pub suid: bool,
    /// Let the kernel cache writes and send them in large batches (`FUSE_WRITEBACK_CACHE`).
    /// Off by default: the kernel then trusts its own idea of a cached file's size and mtime
    /// over this process's answers, so a size change made by *another* mount or CLI is not seen
    /// while the file stays cached here. For a mount that is the only writer of its files.
    pub writeback_cache: bool,
    /// Group commit: how often the log is synced while mounted (changes are visible at once and
    /// durable at the next fsync, fsyncdir, unmount, or this tick).
    pub sync_interval: Duration,
}

/// Why a mount could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("{path}: {reason}")]
    Mountpoint { path: String, reason: String },
    #[error("{path}: mount failed: {source}")]
    Fuse {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] Error),
}

/// Check that `mp` is an empty directory that nothing is mounted on.
pub fn check_mountpoint(mp: &Path) -> Result<(), MountError> {
    let err = |reason: &str| MountError::Mountpoint {
        path: mp.display().to_string(),
        reason: reason.into(),
    };
    let meta = std::fs::metadata(mp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err("mountpoint does not exist"),
        std::io::ErrorKind::NotConnected => {
            err("mountpoint is a dead FUSE endpoint (run `verfs umount` on it)")
        }
        _ => err(&e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(err("mountpoint is not a directory"));
    }
    if is_mountpoint(mp) {
        return Err(err(
            "mountpoint is busy (something is already mounted there)",
        ));
    }
    let mut rd = std::fs::read_dir(mp).map_err(|e| err(&e.to_string()))?;
    if rd.next().is_some() {
        return Err(err("mountpoint is not empty"));
    }
    Ok(())
}

/// The store a verfs mount at `mp` serves, from the source field of `/proc/self/mountinfo`
/// (`None` for another filesystem, or a mount whose store path could not be recorded).
pub fn mounted_store(mp: &Path) -> Option<std::path::PathBuf> {
    // "36 35 0:45 / /mnt rw,nosuid shared:1 - fuse /srv/store rw,user_id=0,..."
    let line = mountinfo_line(mp)?;
    let (_, tail) = line.split_once(" - ")?;
    let mut f = tail.split(' ');
    let (fstype, source) = (f.next()?, f.next()?);
    // The type is "fuse" when mounted directly as root ("fuse.verfs" through fusermount); the
    // source must then be a verfs store.
    let source = std::path::PathBuf::from(unescape_mount_path(source));
    ((fstype == "fuse" || fstype == "fuse.verfs")
        && source.is_absolute()
        && source.join("FORMAT").is_file())
    .then_some(source)
}

/// Is something mounted at `p` (per `/proc/self/mountinfo`)?
pub fn is_mountpoint(p: &Path) -> bool {
    mountinfo_line(p).is_some()
}

/// The line of `/proc/self/mountinfo` for the mount at `p` (the last one: the visible mount).
fn mountinfo_line(p: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .ok()?;
    let want = canon.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rfind(|l| l.split(' ').nth(4).map(unescape_mount_path).as_deref() == Some(want.as_str()))
        .map(str::to_owned)
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount `store` at `mp` and serve it until SIGINT/SIGTERM or an external unmount; then flush every
/// dirty file, make everything durable, unmount and release the lease.
///
/// On a clean return every write that the kernel acknowledged is durable. If the process is killed
/// instead, the kernel leaves a dead endpoint (`verfs umount` clears it) and `verfs recover`
/// cleans up after the process; files closed or fsynced before the kill are intact.
pub fn mount(
    store: Store,
    mp: &Path,
    cfg: &MountConfig,
    on_ready: impl FnOnce(),
) -> Result<(), MountError> {
    check_mountpoint(mp)?;
    let store = Arc::new(store);
    let fs = VerFs::new(store.clone(), cfg.read_only)?.with_writeback_cache(cfg.writeback_cache);
    // The source field of the mount names the store, so `verfs umount MP` finds the mount's
    // process without `-s` (and `df`/`findmnt` show it). A path with a comma or a space cannot
    // pass through the mount option string.
    let root = store.layout().root.clone();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let fsname = match root.to_str() {
        Some(r) if !r.contains([',', ' ', '\t', '\n', '\\']) => r.to_owned(),
        _ => "verfs".to_owned(),
    };
    let mut options = vec![
        fuser::MountOption::FSName(fsname),
        fuser::MountOption::Subtype("verfs".into()),
    ];
    if cfg.read_only {
        options.push(fuser::MountOption::RO);
    }
    if cfg.default_permissions {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    options.push(if cfg.dev {
        fuser::MountOption::Dev
    } else {
        fuser::MountOption::NoDev
    });
    options.push(if cfg.suid {
        fuser::MountOption::Suid
    } else {
        fuser::MountOption::NoSuid
    });
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = options;
    if cfg.allow_other {
        fcfg.acl = fuser::SessionACL::All;
    }
    fcfg.n_threads = Some(cfg.threads.max(1));
    fcfg.clone_fd = cfg.threads > 1;
    let session = fuser::spawn_mount(fs, mp, &fcfg).map_err(|source| MountError::Fuse {
        path: mp.display().to_string(),
        source,
    })?;
    on_ready();
    let stop = Arc::new(AtomicBool::new(false));
    watch_stop_signals(&stop, mp);
    let mut last_sync = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if last_sync.elapsed() >= cfg.sync_interval {
            // Cheap when nothing was committed since the last sync.
            if let Err(e) = store.sync() {
                tracing::warn!(store = %root.display(), op = "group commit", error = %e, "sync failed");
            }
            last_sync = std::time::Instant::now();
        }
    }
    // Flush before unmounting: every handle's writes become durable even if the kernel never
    // sends their release.
    store.flush_all()?;
    if session.guard.is_finished() {
        // Unmounted from outside (`verfs umount`, fusermount3 -u): the session has ended.
        let _ = session.join();
    } else {
        // Detach lazily, like libfuse: a plain umount fails with EBUSY while a file is open.
        // Processes still holding files open get ENOTCONN once this process exits.
        detach(mp);
        std::mem::forget(session);
    }
    store.flush_all()?;
    store.shutdown()?;
    Ok(())
}

/// Set `stop` on the first SIGINT or SIGTERM. Later ones (a second Ctrl-C) do not cut the
/// final flush short: they are answered with a note on stderr; SIGKILL is the way to abort, and
/// even then every file closed or fsynced before is intact.
fn watch_stop_signals(stop: &Arc<AtomicBool>, mp: &Path) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            // Without the handler the default action (exit without flushing) would apply.
            tracing::warn!(
                path = %mp.display(),
                op = "mount",
                error = %e,
                "cannot watch SIGINT/SIGTERM; stop the mount with `verfs umount`"
            );
            return;
        }
    };
    let (stop, shown) = (stop.clone(), mp.display().to_string());
    let spawned = std::thread::Builder::new()
        .name("verfs-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if stop.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        path = %shown,
                        op = "unmount",
                        "still flushing: every acknowledged write is being made durable before exit"
                    );
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(path = %mp.display(), op = "mount", error = %e, "cannot watch SIGINT/SIGTERM");
    }
}

/// Lazy unmount of `mp` (`MNT_DETACH` as root, else `fusermount3 -uz`). Also what a fenced mount
/// process does before it exits, so that it leaves no dead endpoint behind.
pub fn detach(mp: &Path) {
    if let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mp)
        .status();
}
