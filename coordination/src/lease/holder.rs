//! This process's own lease: [`Lease::acquire`], the heartbeat and fencing check, the
//! [`LeaseKeeper`] thread, and [`Lease::release`].
//!
//! Owns the life of one process's folder `leases/<id>/` and the errors of those operations. Does
//! not own other processes' folders (`listing`, `claim`) nor the journal written inside the folder
//! ([`crate::journal`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use super::heartbeat::needs_flush;
use super::listing::claimed_name;
use super::liveness::{local_host, proc_stat};
use super::{
    unix_ms, Heartbeat, LeaseConfig, LeaseId, LeaseInfo, HEARTBEAT_FILE, INFO_FILE, INFO_KIND,
    NEW_PREFIX,
};
use crate::ctlfile::{self, CtlError};
use crate::fsutil::{self, remove_tree};
use crate::io_site;

/// A lease operation's I/O failure or lost lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// The lease folder is gone or belongs to someone else: another process declared this one
    /// dead and claimed it. This process must not change the store any more.
    #[error("lease {id} is fenced: {reason} ({path})")]
    Fenced {
        id: LeaseId,
        path: PathBuf,
        reason: String,
    },
    #[error("lease {id}: {path}: {source}")]
    Io {
        id: LeaseId,
        path: PathBuf,
        source: io::Error,
    },
}

impl FenceError {
    pub fn is_fenced(&self) -> bool {
        matches!(self, FenceError::Fenced { .. })
    }
}

/// [`Lease::acquire`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    #[error("acquiring a lease in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("acquiring a lease: {0}")]
    Ctl(#[from] CtlError),
}

/// [`Lease::release`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    #[error("releasing lease {id}: {path}: {source}")]
    Io {
        id: LeaseId,
        path: PathBuf,
        source: io::Error,
    },
}

/// This process's lease. Held for the process's whole life; see the module docs.
#[derive(Debug)]
pub struct Lease {
    /// (dev, inode) of `leases/<id>/info` once the lease existed: the fencing check compares
    /// against it with one `stat` instead of reading and parsing the file on every commit.
    info_ident: Option<(u64, u64)>,
    info: LeaseInfo,
    leases_dir: PathBuf,
    dir: PathBuf,
    heartbeat: File,
    counter: AtomicU64,
    flush: bool,
    cfg: LeaseConfig,
    /// When the newest heartbeat that reached the file was begun (its `unix_ms` is at most this
    /// old): the self-fencing deadline ([LEASE-11]) counts from here.
    renewed: Mutex<Instant>,
    /// Set once, for good, when this process fenced itself ([LEASE-11]): why.
    self_fenced: OnceLock<String>,
}

/// Errors of the store's filesystem that mean its connection was lost (a network filesystem's
/// client cut off from its server, or its descriptors revoked after a reconnect): the server may
/// have released this process's locks, so it fences itself ([LEASE-11]).
fn lost_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN | libc::EBADFD | libc::ESTALE | libc::ECONNABORTED | libc::ESHUTDOWN)
    )
}

impl Lease {
    /// Create this process's lease folder `leases_dir/<id>` ([LEASE-1], [LEASE-2]).
    ///
    /// On error no `leases_dir/<id>` exists; a `.new-<id>` folder may remain if removing it also
    /// failed or the process dies, and any cleaner removes it once this pid is dead.
    pub fn acquire(leases_dir: &Path, kind: &str, cfg: LeaseConfig) -> Result<Lease, AcquireError> {
        let here = local_host();
        let pid = std::process::id();
        let id = LeaseId::generate();
        let start_ticks = proc_stat(pid)
            .ok()
            .flatten()
            .map(|s| s.start_ticks)
            .ok_or_else(|| AcquireError::Io {
                path: PathBuf::from(format!("/proc/{pid}/stat")),
                source: io::Error::other("cannot read own start time"),
            })?;
        let info = LeaseInfo {
            id: id.clone(),
            pid,
            pid_start_ticks: start_ticks,
            node: here.node.clone(),
            host: here.host.clone(),
            boot_id: here.boot_id.clone(),
            pid_ns: here.pid_ns.clone(),
            kind: kind.to_owned(),
            started_unix_ms: unix_ms(SystemTime::now()),
        };
        // The pid in the partial folder's name lets a cleaner tell at once that a process died
        // inside acquire, before any file of the lease existed ([LEASE-10]).
        let new_dir = leases_dir.join(format!("{NEW_PREFIX}{id}-{pid}"));
        let dir = leases_dir.join(id.as_str());
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AcquireError::Io { path, source }
        };
        io_site!("lease.create-dir", fs::create_dir(&new_dir)).map_err(io(&new_dir))?;
        let built = (|| {
            ctlfile::write(&new_dir.join(INFO_FILE), INFO_KIND, &info)?;
            let hb_path = new_dir.join(HEARTBEAT_FILE);
            let mut hb = io_site!(
                "lease.heartbeat-create",
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&hb_path)
            )
            .map_err(io(&hb_path))?;
            let first = Heartbeat {
                counter: 0,
                unix_ms: unix_ms(SystemTime::now()),
            };
            io_site!("lease.heartbeat-write-first", hb.write_all(&first.encode()))
                .map_err(io(&hb_path))?;
            io_site!("lease.heartbeat-fsync-first", hb.sync_all()).map_err(io(&hb_path))?;
            fsutil::fsync_dir(&new_dir).map_err(io(&new_dir))?;
            // [LEASE-1]: the folder appears under its final name complete or not at all.
            io_site!("lease.publish-rename", fs::rename(&new_dir, &dir)).map_err(io(&dir))?;
            fsutil::fsync_dir(leases_dir).map_err(io(leases_dir))?;
            Ok(hb)
        })();
        let heartbeat = match built {
            Ok(hb) => hb,
            Err(e) => {
                let _ = remove_tree(&new_dir);
                return Err(e);
            }
        };
        let info_ident = fs::metadata(dir.join(INFO_FILE))
            .ok()
            .map(|m| fsutil::file_identity(&m));
        Ok(Lease {
            info,
            info_ident,
            leases_dir: leases_dir.to_path_buf(),
            dir,
            heartbeat,
            counter: AtomicU64::new(0),
            flush: needs_flush(leases_dir),
            cfg,
            renewed: Mutex::new(Instant::now()),
            self_fenced: OnceLock::new(),
        })
    }

    pub fn id(&self) -> &LeaseId {
        &self.info.id
    }

    /// `leases/<id>`: where this process's journal lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn leases_dir(&self) -> &Path {
        &self.leases_dir
    }

    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Rewrite the heartbeat in place, then check the lease is still ours.
    ///
    /// Returns [`FenceError::Fenced`] once another process claimed the lease; the write may then
    /// have landed in the claimed folder, which is harmless. On an I/O error the heartbeat may be
    /// stale; the next call tries again.
    pub fn heartbeat(&self) -> Result<(), FenceError> {
        self.fenced_self()?;
        self.renew()?;
        self.check_valid()
    }

    /// Write one heartbeat; on success move the self-fencing deadline. An error that means the
    /// filesystem's connection was lost fences this process for good ([LEASE-11]).
    fn renew(&self) -> Result<(), FenceError> {
        let begun = Instant::now();
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let hb = Heartbeat {
            counter,
            unix_ms: unix_ms(SystemTime::now()),
        };
        let path = self.dir.join(HEARTBEAT_FILE);
        let io = |source| FenceError::Io {
            id: self.info.id.clone(),
            path: path.clone(),
            source,
        };
        // [LEASE-4]: no fsync on a local disk: after a power loss the boot id differs, so the
        // heartbeat's durability never matters.
        let written = io_site!(
            "lease.heartbeat-write",
            self.heartbeat.write_all_at(&hb.encode(), 0)
        )
        .and_then(|()| {
            if self.flush {
                self.heartbeat.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                let mut r = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
                *r = (*r).max(begun);
                Ok(())
            }
            Err(e) if lost_connection(&e) => Err(self.fence_self(format!(
                "the store's filesystem lost its connection ({e}) while renewing the heartbeat \
                 {}: its locks may have been released",
                path.display()
            ))),
            Err(e) => Err(io(e)),
        }
    }

    /// How long after the newest renewal this process stops trusting its lease ([LEASE-11]):
    /// one heartbeat interval before others may declare it dead, at least half the timeout.
    fn self_fence_after(&self) -> Duration {
        self.cfg
            .timeout
            .saturating_sub(self.cfg.heartbeat_interval)
            .max(self.cfg.timeout / 2)
    }

    /// Fence this process for good ([LEASE-11]) and say why; the first reason stays.
    fn fence_self(&self, reason: String) -> FenceError {
        let first = self.self_fenced.get_or_init(|| {
            tracing::error!(lease = %self.info.id, "fencing this process: {reason}");
            reason
        });
        FenceError::Fenced {
            id: self.info.id.clone(),
            path: self.dir.clone(),
            reason: format!("this process fenced itself: {first}"),
        }
    }

    /// `Err` once this process fenced itself ([LEASE-11]), with the first reason.
    fn fenced_self(&self) -> Result<(), FenceError> {
        match self.self_fenced.get() {
            Some(_) => Err(self.fence_self(String::new())),
            None => Ok(()),
        }
    }

    /// The fencing check ([LEASE-6]): `leases/<id>` still exists and holds this lease's info.
    ///
    /// The transaction log calls this under its commit lock; [`claim`](super::claim) is called under the same
    /// lock, so a commit is either before the claim or rejected. Changes nothing on disk.
    ///
    /// Also [LEASE-11]: a process that fenced itself stays fenced, and one whose newest heartbeat
    /// is older than [`Lease::self_fence_after`] (stopped, starved, or its heartbeat writes hang)
    /// renews it now and fences itself if that fails: others may declare it dead any moment.
    pub fn check_valid(&self) -> Result<(), FenceError> {
        self.fenced_self()?;
        let age = self
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if age > self.self_fence_after() {
            if let Err(e) = self.renew() {
                return Err(match e {
                    FenceError::Io { source, .. } => self.fence_self(format!(
                        "no heartbeat for {:.1} s (others may declare this process dead after {:.1} s) \
                         and renewing it failed: {source}",
                        age.as_secs_f64(),
                        self.cfg.timeout.as_secs_f64()
                    )),
                    fenced => fenced,
                });
            }
        }
        let path = self.dir.join(INFO_FILE);
        // Fast path: the info file this lease wrote is still at its path (a claim renames the
        // folder away; info is written once, so another file there is another lease's). Any
        // doubt falls through to reading it.
        if let (Some(want), Ok(m)) = (self.info_ident, fs::metadata(&path)) {
            if fsutil::file_identity(&m) == want {
                return Ok(());
            }
        }
        let fenced = |reason: String| FenceError::Fenced {
            id: self.info.id.clone(),
            path: path.clone(),
            reason,
        };
        match ctlfile::read::<LeaseInfo>(&path, INFO_KIND) {
            Ok(info) if info == self.info => Ok(()),
            Ok(_) => Err(fenced("lease folder holds another lease's info".into())),
            Err(e) if e.is_not_found() => {
                Err(fenced("lease folder is gone (claimed by a cleaner)".into()))
            }
            Err(CtlError::Io { path, source }) => Err(FenceError::Io {
                id: self.info.id.clone(),
                path,
                source,
            }),
            Err(e) => Err(fenced(e.to_string())),
        }
    }

    /// Start the thread that heartbeats every `heartbeat_interval` ([LEASE-7]).
    ///
    /// `on_fenced` is called once, on the keeper thread, when the lease is found claimed; the
    /// keeper then stops. `on_tick` runs after each successful heartbeat and must return quickly:
    /// while it runs no heartbeat is written. A panic in either hook is caught so heartbeats go on.
    pub fn start_keeper(
        lease: Arc<Lease>,
        on_fenced: Box<dyn Fn() + Send>,
        on_tick: Option<Box<dyn Fn() + Send>>,
    ) -> io::Result<LeaseKeeper> {
        let (tx, rx) = mpsc::channel::<()>();
        let interval = lease.cfg.heartbeat_interval;
        let handle = thread::Builder::new()
            .name(format!("lease-{}", lease.id()))
            .spawn(move || {
                use std::panic::{catch_unwind, AssertUnwindSafe};
                loop {
                    match rx.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    match lease.heartbeat() {
                        // Fenced by a cleaner, or by itself ([LEASE-11]).
                        Err(e) if e.is_fenced() => {
                            let _ = catch_unwind(AssertUnwindSafe(&on_fenced));
                            return;
                        }
                        // Transient: retried next tick. If it lasts past the timeout, others claim
                        // the lease and the next tick reports the fencing.
                        Err(_) => {}
                        Ok(()) => {
                            if let Some(tick) = &on_tick {
                                let _ = catch_unwind(AssertUnwindSafe(tick));
                            }
                        }
                    }
                }
            })?;
        Ok(LeaseKeeper {
            stop: Some(tx),
            handle: Some(handle),
        })
    }

    /// Remove this lease's folder ([LEASE-9]).
    ///
    /// The folder is first claimed by this lease itself, so a crash half way leaves
    /// `<id>.claimed-<id>`, which any cleaner may take over and finish ([`reclaim_abandoned`](super::reclaim_abandoned)).
    /// The caller ends its journal's actions first; everything in the folder is deleted.
    /// Stop the [`LeaseKeeper`] first, or it would report this process as fenced.
    pub fn release(self) -> Result<(), ReleaseError> {
        self.release_shared()
    }

    /// [`Lease::release`] for a lease shared through an `Arc` (the transaction log's fence check
    /// holds a reference). After it returns, [`Lease::check_valid`] fails: the process is no longer
    /// allowed to commit, exactly as if it had been fenced.
    pub fn release_shared(&self) -> Result<(), ReleaseError> {
        let id = self.info.id.clone();
        let claimed = self.leases_dir.join(claimed_name(&id, &id));
        let io = |path: &Path| {
            let (id, path) = (id.clone(), path.to_path_buf());
            move |source| ReleaseError::Io { id, path, source }
        };
        io_site!("lease.release-rename", fs::rename(&self.dir, &claimed)).map_err(io(&self.dir))?;
        fsutil::fsync_dir(&self.leases_dir).map_err(io(&self.leases_dir))?;
        remove_tree(&claimed).map_err(io(&claimed))?;
        fsutil::fsync_dir(&self.leases_dir).map_err(io(&self.leases_dir))
    }
}

/// The heartbeat thread of a [`Lease`]. Stops on [`LeaseKeeper::stop`] or drop, at once.
#[derive(Debug)]
pub struct LeaseKeeper {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Stop the thread and wait for it (at most one running hook), dropping its `Arc<Lease>`.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes recv_timeout at once.
        self.stop.take();
        if let Some(h) = self.handle.take() {
            // Called from a hook on the keeper thread itself (e.g. on_fenced drops the keeper):
            // joining would deadlock, and the thread is about to return anyway.
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.shutdown();
    }
}
