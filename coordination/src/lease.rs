//! Process leases: one folder per live process, liveness, fencing and exactly-one cleaner.
//!
//! - [`Lease`]: this process's folder `leases/<id>/` (info, heartbeat, journal), created by
//!   [`Lease::acquire`] and kept fresh by a [`LeaseKeeper`] thread.
//! - [`liveness`] decides whether another process's lease is [`Liveness::Dead`] from its
//!   [`LeaseInfo`] (pid, pid start time, boot id) and its [`Heartbeat`].
//! - [`list`] shows every lease folder, [`claim`] renames a dead process's folder to
//!   `<id>.claimed-<cleaner>` so exactly one cleaner gets its journal ([`Claimed`]), and that rename
//!   is also what fences the dead process: [`Lease::check_valid`] fails from then on.
//!
//! Formats, protocol steps and crash points: `docs/layout/coordination.md`, section "Leases"
//! (rules `[LEASE-n]`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ctlfile::{self, CtlError};
use crate::fsutil::{self, remove_tree};
pub use crate::id::{LeaseId, ParseLeaseIdError};
use crate::io_site;

/// Control-file kind of `leases/<id>/info`.
pub const INFO_KIND: &str = "lease";
/// File name of the lease info inside a lease folder.
pub const INFO_FILE: &str = "info";
/// File name of the heartbeat inside a lease folder.
pub const HEARTBEAT_FILE: &str = "heartbeat";
/// Size of the heartbeat file in bytes.
pub const HEARTBEAT_LEN: usize = 20;
/// Prefix of a lease folder still being built by [`Lease::acquire`].
pub const NEW_PREFIX: &str = ".new-";
/// Infix between a dead lease's id and its cleaner's id in a claimed folder's name.
pub const CLAIMED_INFIX: &str = ".claimed-";

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Timing of leases; every process sharing a store must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// A lease whose last sign of life is older than this is dead ([LEASE-5]).
    pub timeout: Duration,
    /// How often the [`LeaseKeeper`] rewrites the heartbeat; must be well below `timeout`.
    pub heartbeat_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(2),
        }
    }
}

/// Who holds a lease: the content of `leases/<id>/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot): tells a reused pid apart.
    pub pid_start_ticks: u64,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot.
    pub boot_id: String,
    /// `/proc/self/ns/pid` link text; pids are only comparable inside one pid namespace.
    #[serde(default)]
    pub pid_ns: String,
    /// Free text naming the process's role, e.g. `"cli put"`, `"mount"`, `"gc-worker"`.
    pub kind: String,
    pub started_unix_ms: u64,
}

/// The content of `leases/<id>/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Incremented by every heartbeat write.
    pub counter: u64,
    /// Writer's wall clock at the write.
    pub unix_ms: u64,
}

impl Heartbeat {
    /// The 20-byte on-disk form.
    pub fn encode(&self) -> [u8; HEARTBEAT_LEN] {
        let mut b = [0u8; HEARTBEAT_LEN];
        b[0..8].copy_from_slice(&self.counter.to_le_bytes());
        b[8..16].copy_from_slice(&self.unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[0..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse the on-disk form; `None` when the length or the crc32 is wrong ([LEASE-4]).
    pub fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let b: &[u8; HEARTBEAT_LEN] = bytes.try_into().ok()?;
        let le64 = |r: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(r.try_into().ok()?)) };
        let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
        if crc32fast::hash(&b[0..16]) != crc {
            return None;
        }
        Some(Heartbeat {
            counter: le64(&b[0..8])?,
            unix_ms: le64(&b[8..16])?,
        })
    }
}

/// Read a heartbeat file: `Ok(None)` when it exists but is torn or corrupt.
///
/// A concurrent `pwrite` may be seen half done, so a bad read is retried a few times before it
/// is reported as corrupt.
pub fn read_heartbeat(path: &Path) -> io::Result<Option<Heartbeat>> {
    for attempt in 0..3 {
        let bytes = fs::read(path)?;
        if let Some(hb) = Heartbeat::decode(&bytes) {
            return Ok(Some(hb));
        }
        if attempt < 2 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(None)
}

/// Facts about the local machine that [`liveness`] compares with a lease's info.
#[derive(Debug, Clone)]
struct LocalHost {
    host: String,
    boot_id: String,
    pid_ns: String,
}

/// This machine's boot id, as recorded in every lease made here (empty if unknown).
pub fn this_boot_id() -> &'static str {
    &local_host().boot_id
}

fn local_host() -> &'static LocalHost {
    static LOCAL: OnceLock<LocalHost> = OnceLock::new();
    LOCAL.get_or_init(|| LocalHost {
        host: hostname(),
        boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        pid_ns: fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

fn hostname() -> String {
    if let Ok(s) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    start_ticks: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `fields` starts at field 3 (state); field 22 (starttime) is 19 further on.
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

fn proc_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_proc_stat(&text))
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...) from `/proc/<pid>/stat`; `None`
/// if there is no such process here.
pub fn proc_state(pid: u32) -> Option<char> {
    proc_stat(pid).ok().flatten().map(|s| s.state)
}

/// Has process `pid` exited: gone, or a zombie (`Z`/`X`) not yet reaped?
pub fn has_exited(pid: u32) -> bool {
    !matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Is a lease alive?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Dead, with a human-readable reason for `verfs recover` output.
    Dead(String),
}

impl Liveness {
    pub fn is_dead(&self) -> bool {
        matches!(self, Liveness::Dead(_))
    }
}

/// Decide whether the lease described by `info` is dead ([LEASE-5]).
///
/// Dead when, in this order: the lease was made on this machine during this boot and in this pid
/// namespace, and its pid no longer exists, is a zombie, or started at another time (pids are
/// reused); or it was made on a host with this hostname during another boot (the machine
/// rebooted); or its last sign of life (the heartbeat's time, else `info.started_unix_ms`) is more
/// than `cfg.timeout` before `now`. The last rule is the only one that catches a SIGSTOPped process
/// (its pid still exists) and processes on other hosts; it assumes the hosts' clocks agree to
/// well within `cfg.timeout`.
pub fn liveness(
    info: &LeaseInfo,
    hb: Option<Heartbeat>,
    cfg: &LeaseConfig,
    now: SystemTime,
) -> Liveness {
    let last = hb.map(|h| h.unix_ms).unwrap_or(info.started_unix_ms);
    liveness_at(Some(info), last, cfg, now)
}

fn liveness_at(
    info: Option<&LeaseInfo>,
    last_seen_ms: u64,
    cfg: &LeaseConfig,
    now: SystemTime,
) -> Liveness {
    if let Some(info) = info {
        let here = local_host();
        let same_boot = !here.boot_id.is_empty() && info.boot_id == here.boot_id;
        if same_boot && info.pid_ns == here.pid_ns {
            if let Some(reason) = local_pid_dead(info) {
                return Liveness::Dead(reason);
            }
        } else if !same_boot && !here.host.is_empty() && info.host == here.host {
            return Liveness::Dead(format!(
                "host {} rebooted (boot id {} is now {})",
                info.host, info.boot_id, here.boot_id
            ));
        }
    }
    let now_ms = unix_ms(now);
    let age = Duration::from_millis(now_ms.saturating_sub(last_seen_ms));
    if age > cfg.timeout {
        return Liveness::Dead(format!(
            "no heartbeat for {:.1}s (timeout {:.1}s)",
            age.as_secs_f64(),
            cfg.timeout.as_secs_f64()
        ));
    }
    Liveness::Alive
}

fn local_pid_dead(info: &LeaseInfo) -> Option<String> {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    // 0 and values above i32::MAX would make kill() address a process group or every process.
    let raw = match i32::try_from(info.pid) {
        Ok(p) if p > 0 => p,
        _ => return Some(format!("invalid pid {}", info.pid)),
    };
    if let Err(Errno::ESRCH) = kill(Pid::from_raw(raw), None) {
        return Some(format!("pid {} no longer exists", info.pid));
    }
    match proc_stat(info.pid) {
        Ok(Some(st)) if st.state == 'Z' || st.state == 'X' => {
            Some(format!("pid {} has exited (zombie)", info.pid))
        }
        Ok(Some(st)) if st.start_ticks != info.pid_start_ticks => Some(format!(
            "pid {} was reused (started at tick {}, lease says {})",
            info.pid, st.start_ticks, info.pid_start_ticks
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(format!("pid {} no longer exists", info.pid))
        }
        // Unparsable stat or a transient error: let the heartbeat age decide.
        _ => None,
    }
}

/// Should heartbeat writes be flushed for other hosts to see them?
///
/// On a network filesystem an unflushed `pwrite` stays in the writer's cache, so other clients
/// would see a stale heartbeat and declare a live process dead. Local filesystems share the page
/// cache, where no flush is needed.
fn needs_flush(dir: &Path) -> bool {
    use nix::sys::statfs::{self, FsType};
    const LOCAL: &[i64] = &[
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x2FC1_2FC1, // zfs
        0xF2F5_2010, // f2fs
    ];
    match statfs::statfs(dir) {
        Ok(st) => {
            let FsType(t) = st.filesystem_type();
            // `fs_type_t` is i64 on 64-bit Linux but not everywhere.
            #[allow(clippy::unnecessary_cast)]
            let t = t as i64;
            !LOCAL.contains(&t)
        }
        Err(_) => true,
    }
}

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

/// [`list`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error("listing leases in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// [`claim`] or [`reclaim_abandoned`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    #[error("claiming lease {id}: {path}: {source}")]
    Io {
        id: LeaseId,
        path: PathBuf,
        source: io::Error,
    },
    /// `reclaim_abandoned` refuses while the previous cleaner's lease is still live.
    #[error("claim of lease {id} is held by live cleaner {cleaner}")]
    CleanerLive { id: LeaseId, cleaner: LeaseId },
}

/// [`Claimed::finish`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    #[error("removing claimed lease folder {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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
        io_site!(
            "lease.heartbeat-write",
            self.heartbeat.write_all_at(&hb.encode(), 0)
        )
        .map_err(io)?;
        if self.flush {
            self.heartbeat.sync_data().map_err(io)?;
        }
        self.check_valid()
    }

    /// The fencing check ([LEASE-6]): `leases/<id>` still exists and holds this lease's info.
    ///
    /// The transaction log calls this under its commit lock; [`claim`] is called under the same
    /// lock, so a commit is either before the claim or rejected. Changes nothing on disk.
    pub fn check_valid(&self) -> Result<(), FenceError> {
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
    /// `<id>.claimed-<id>`, which any cleaner may take over and finish ([`reclaim_abandoned`]).
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

/// Is `leases_dir/<id>` a live (unclaimed) lease folder?
pub fn is_live_lease(leases_dir: &Path, id: &LeaseId) -> bool {
    fs::metadata(leases_dir.join(id.as_str()))
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

/// Name of `id`'s folder once claimed by `cleaner`.
pub fn claimed_name(id: &LeaseId, cleaner: &LeaseId) -> String {
    format!("{id}{CLAIMED_INFIX}{cleaner}")
}

/// What a folder in `leases/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// `<id>`: a lease in use, or of a dead process not yet claimed.
    Live,
    /// `<id>.claimed-<cleaner>`: being cleaned by `cleaner`.
    Claimed { cleaner: LeaseId },
    /// `.new-<id>`: [`Lease::acquire`] has not finished (or died) building it.
    Partial,
}

/// The info file of a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryInfo {
    Valid(LeaseInfo),
    Missing,
    Corrupt { reason: String },
}

/// One folder in `leases/`, as seen by [`list`].
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    pub id: LeaseId,
    pub path: PathBuf,
    pub state: LeaseState,
    pub info: EntryInfo,
    /// `None` when missing, torn or corrupt.
    pub heartbeat: Option<Heartbeat>,
    /// Newest sign of life: the heartbeat's time, the heartbeat file's mtime and, without a
    /// valid info, the folder's mtime.
    pub last_seen_unix_ms: u64,
}

impl LeaseEntry {
    /// [`liveness`] of this entry, using file times where the info or heartbeat are unreadable.
    ///
    /// A torn heartbeat read must not make a live process look as old as its start time, so the
    /// heartbeat file's mtime (updated by every write) also counts as a sign of life.
    pub fn liveness(&self, cfg: &LeaseConfig, now: SystemTime) -> Liveness {
        if self.state == LeaseState::Partial && !matches!(self.info, EntryInfo::Valid(_)) {
            // No info yet: the pid in the folder name is all there is. If it is not running here
            // the creator is gone, or it is on another host, whose acquire then fails cleanly
            // at its rename instead of publishing a lease.
            if let Some(pid) = partial_pid(&self.path) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Liveness::Dead(format!(
                        "creator pid {pid} died while acquiring the lease"
                    ));
                }
            }
        }
        match &self.info {
            EntryInfo::Valid(info) => {
                let last = self.last_seen_unix_ms.max(info.started_unix_ms);
                liveness_at(Some(info), last, cfg, now)
            }
            _ => liveness_at(None, self.last_seen_unix_ms, cfg, now),
        }
    }
}

fn mtime_ms(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(unix_ms)
}

/// The info file of lease folder `dir`, as a lease listing reports it.
fn read_entry_info(dir: &Path) -> EntryInfo {
    match ctlfile::read::<LeaseInfo>(&dir.join(INFO_FILE), INFO_KIND) {
        Ok(info) => EntryInfo::Valid(info),
        Err(e) if e.is_not_found() => EntryInfo::Missing,
        Err(e) => EntryInfo::Corrupt {
            reason: e.to_string(),
        },
    }
}

/// Read one lease folder; `None` when it vanished meanwhile (claimed or released).
pub fn read_entry(path: &Path, id: LeaseId, state: LeaseState) -> Option<LeaseEntry> {
    let folder_mtime = mtime_ms(path)?;
    let info = read_entry_info(path);
    let hb_path = path.join(HEARTBEAT_FILE);
    let heartbeat = read_heartbeat(&hb_path).ok().flatten();
    let mut last = heartbeat
        .map(|h| h.unix_ms)
        .unwrap_or(0)
        .max(mtime_ms(&hb_path).unwrap_or(0));
    if !matches!(info, EntryInfo::Valid(_)) {
        last = last.max(folder_mtime);
    }
    // The folder may have been renamed away while we read it; then this view is meaningless.
    if !path.is_dir() {
        return None;
    }
    Some(LeaseEntry {
        id,
        path: path.to_path_buf(),
        state,
        info,
        heartbeat,
        last_seen_unix_ms: last,
    })
}

/// Parse a name in `leases/`; `None` for names that are not lease folders.
pub fn parse_folder_name(name: &str) -> Option<(LeaseId, LeaseState)> {
    if let Some(rest) = name.strip_prefix(NEW_PREFIX) {
        // `.new-<id>-<pid>`; older builds wrote `.new-<id>`.
        let id = rest.split('-').next()?;
        return Some((id.parse().ok()?, LeaseState::Partial));
    }
    if let Some((id, cleaner)) = name.split_once(CLAIMED_INFIX) {
        return Some((
            id.parse().ok()?,
            LeaseState::Claimed {
                cleaner: cleaner.parse().ok()?,
            },
        ));
    }
    Some((name.parse().ok()?, LeaseState::Live))
}

/// Every lease folder in `leases_dir` ([LEASE-3]). Unknown names are skipped.
///
/// Read-only. Folders renamed or removed while listing are left out.
pub fn list(leases_dir: &Path) -> Result<Vec<LeaseEntry>, ListError> {
    let io = |source| ListError::Io {
        path: leases_dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for ent in fs::read_dir(leases_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((id, state)) = parse_folder_name(name) else {
            continue;
        };
        if let Some(e) = read_entry(&ent.path(), id, state) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A dead process's lease folder, owned by exactly one cleaner ([LEASE-8]).
#[derive(Debug)]
pub struct Claimed {
    /// The dead lease's id.
    pub id: LeaseId,
    /// `leases/<id>.claimed-<cleaner>`: holds the dead process's journal.
    pub path: PathBuf,
    pub info: EntryInfo,
    leases_dir: PathBuf,
}

impl Claimed {
    /// Open a folder already claimed by `cleaner`, e.g. after [`claim`] returned an I/O error
    /// past its rename. `Ok(None)` if there is no such folder.
    pub fn open(
        leases_dir: &Path,
        id: &LeaseId,
        cleaner: &LeaseId,
    ) -> Result<Option<Claimed>, ClaimError> {
        let path = leases_dir.join(claimed_name(id, cleaner));
        if !path.is_dir() {
            return Ok(None);
        }
        Ok(Some(Claimed::at(leases_dir, id, path)))
    }

    fn at(leases_dir: &Path, id: &LeaseId, path: PathBuf) -> Claimed {
        let info = read_entry_info(&path);
        Claimed {
            id: id.clone(),
            path,
            info,
            leases_dir: leases_dir.to_path_buf(),
        }
    }

    /// The dead process's journal file (it may not exist).
    pub fn journal_path(&self) -> PathBuf {
        self.path.join(crate::journal::JOURNAL_FILE)
    }

    /// Delete the claimed folder durably, once its journal's actions are undone or finished.
    ///
    /// On error part of the folder may remain under its claimed name; calling `finish` again
    /// (or a later cleaner's [`reclaim_abandoned`]) completes it.
    pub fn finish(self) -> Result<(), FinishError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FinishError::Io { path, source }
        };
        remove_tree(&self.path).map_err(io(&self.path))?;
        fsutil::fsync_dir(&self.leases_dir).map_err(io(&self.leases_dir))
    }
}

fn claim_rename(
    leases_dir: &Path,
    id: &LeaseId,
    from: &Path,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    let to = leases_dir.join(claimed_name(id, cleaner));
    let io = |path: &Path| {
        let (id, path) = (id.clone(), path.to_path_buf());
        move |source| ClaimError::Io { id, path, source }
    };
    match io_site!("lease.claim-rename", fs::rename(from, &to)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(from)(e)),
    }
    fsutil::fsync_dir(leases_dir).map_err(io(leases_dir))?;
    Ok(Some(Claimed::at(leases_dir, id, to)))
}

/// Claim dead lease `id` for `cleaner`: rename `leases/<id>` to `leases/<id>.claimed-<cleaner>`.
///
/// `Ok(None)` when the folder is already gone (another cleaner won, or the owner released it).
/// The caller decides deadness first (e.g. [`LeaseEntry::liveness`]); this is a plain rename
/// and takes no lock, so the transaction log may call it under its commit lock ([LEASE-6]).
/// On an I/O error after the rename the claim may have happened: [`Claimed::open`] finds it.
pub fn claim(
    leases_dir: &Path,
    id: &LeaseId,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    claim_rename(leases_dir, id, &leases_dir.join(id.as_str()), cleaner)
}

/// Claim a `.new-<id>` folder left by a process that died inside [`Lease::acquire`].
///
/// Same result and failure states as [`claim`]; the caller checks the entry is dead first.
pub fn claim_partial(
    leases_dir: &Path,
    id: &LeaseId,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    let prefix = format!("{NEW_PREFIX}{id}");
    let found = fs::read_dir(leases_dir)
        .map_err(|source| ClaimError::Io {
            id: id.clone(),
            path: leases_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n == &prefix || n.starts_with(&format!("{prefix}-")));
    match found {
        Some(name) => claim_rename(leases_dir, id, &leases_dir.join(name), cleaner),
        None => Ok(None),
    }
}

/// The creator pid in a partial lease folder's name (`.new-<id>-<pid>`).
pub fn partial_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(NEW_PREFIX)?
        .split('-')
        .nth(1)?
        .parse()
        .ok()
}

/// Take over a claim whose cleaner is gone: rename `<id>.claimed-<old>` to `<id>.claimed-<me>`.
///
/// Refused with [`ClaimError::CleanerLive`] while `leases/<old>` exists: a cleaner's claim is
/// only abandoned once the cleaner itself has been claimed (fenced) or released. `Ok(None)` when
/// another cleaner took it over first. Same failure states as [`claim`].
pub fn reclaim_abandoned(
    leases_dir: &Path,
    id: &LeaseId,
    old_cleaner: &LeaseId,
    me: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    if is_live_lease(leases_dir, old_cleaner) {
        return Err(ClaimError::CleanerLive {
            id: id.clone(),
            cleaner: old_cleaner.clone(),
        });
    }
    claim_rename(
        leases_dir,
        id,
        &leases_dir.join(claimed_name(id, old_cleaner)),
        me,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            timeout: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(20),
        }
    }

    #[test]
    fn lease_id_parse_and_generate() {
        let id = LeaseId::generate();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(id.to_string().parse::<LeaseId>().unwrap(), id);
        for bad in [
            "",
            "0123456789abcdeF",
            "0123456789abcde",
            "0123456789abcdefa",
            "g123456789abcdef",
        ] {
            assert!(bad.parse::<LeaseId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<LeaseId>("\"xyz\"").is_err());
    }

    #[test]
    fn proc_stat_with_spaces_and_parens_in_comm() {
        // Fields 4..=21 are 18 numbers, then field 22 (starttime).
        let mut line =
            String::from("1234 (a) b) (c d) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18");
        line.push_str(" 424242 99 100\n");
        let st = parse_proc_stat(&line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_ticks, 424242);
        assert!(parse_proc_stat("1 (x) S 1 2").is_none());
        let own = proc_stat(std::process::id()).unwrap().unwrap();
        let text = fs::read_to_string("/proc/self/stat").unwrap();
        let naive: u64 = text.split_whitespace().nth(21).unwrap().parse().unwrap();
        assert_eq!(own.start_ticks, naive);
    }

    #[test]
    fn heartbeat_golden_bytes_and_corruption() {
        // proves [LEASE-4]
        let hb = Heartbeat {
            counter: 1,
            unix_ms: 0x0102_0304_0506_0708,
        };
        let b = hb.encode();
        assert_eq!(&b[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]); // counter, LE
        assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]); // unix_ms, LE
        assert_eq!(&b[16..20], &crc32fast::hash(&b[0..16]).to_le_bytes()); // crc32 of 0..16
        assert_eq!(Heartbeat::decode(&b), Some(hb));
        for i in 0..HEARTBEAT_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert_eq!(Heartbeat::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(Heartbeat::decode(&b[..19]), None);
    }

    proptest::proptest! {
        #[test]
        fn heartbeat_roundtrip(counter: u64, unix_ms: u64) {
            let hb = Heartbeat { counter, unix_ms };
            proptest::prop_assert_eq!(Heartbeat::decode(&hb.encode()), Some(hb));
        }
    }

    #[test]
    fn acquire_builds_complete_folder_and_release_removes_it() {
        // proves [LEASE-1], [LEASE-2], [LEASE-9]
        let d = tempfile::tempdir().unwrap();
        let lease = Lease::acquire(d.path(), "test", cfg()).unwrap();
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(lease.id().as_str())]);
        let info: LeaseInfo = ctlfile::read(&lease.dir().join(INFO_FILE), INFO_KIND).unwrap();
        assert_eq!(&info, lease.info());
        assert_eq!(info.pid, std::process::id());
        let hb = read_heartbeat(&lease.dir().join(HEARTBEAT_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(hb.counter, 0);
        lease.heartbeat().unwrap();
        let hb = read_heartbeat(&lease.dir().join(HEARTBEAT_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(hb.counter, 1);
        lease.check_valid().unwrap();
        lease.release().unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn claim_fences_and_has_exactly_one_winner() {
        // proves [LEASE-6], [LEASE-8]
        let d = tempfile::tempdir().unwrap();
        let lease = Lease::acquire(d.path(), "victim", cfg()).unwrap();
        let id = lease.id().clone();
        let cleaners: Vec<LeaseId> = (0..8).map(|_| LeaseId::generate()).collect();
        let wins = AtomicUsize::new(0);
        let dp = d.path();
        thread::scope(|s| {
            for c in &cleaners {
                let (wins, id) = (&wins, &id);
                s.spawn(move || {
                    if claim(dp, id, c).unwrap().is_some() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        let err = lease.check_valid().unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert!(lease.heartbeat().unwrap_err().is_fenced());
        let entries = list(d.path()).unwrap();
        assert_eq!(entries.len(), 1);
        let LeaseState::Claimed { cleaner } = &entries[0].state else {
            panic!("{entries:?}")
        };
        let claimed = Claimed::open(d.path(), &id, cleaner).unwrap().unwrap();
        assert!(matches!(&claimed.info, EntryInfo::Valid(i) if i.id == id));
        claimed.finish().unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn abandoned_claim_is_reclaimed_only_when_cleaner_is_gone() {
        // proves [LEASE-8]
        let d = tempfile::tempdir().unwrap();
        let victim = Lease::acquire(d.path(), "victim", cfg()).unwrap();
        let cleaner = Lease::acquire(d.path(), "cleaner", cfg()).unwrap();
        let me = LeaseId::generate();
        let vid = victim.id().clone();
        claim(d.path(), &vid, cleaner.id()).unwrap().unwrap();
        let err = reclaim_abandoned(d.path(), &vid, cleaner.id(), &me).unwrap_err();
        assert!(matches!(err, ClaimError::CleanerLive { .. }));
        let cid = cleaner.id().clone();
        cleaner.release().unwrap();
        let c = reclaim_abandoned(d.path(), &vid, &cid, &me)
            .unwrap()
            .unwrap();
        assert_eq!(c.path, d.path().join(claimed_name(&vid, &me)));
        assert!(reclaim_abandoned(d.path(), &vid, &cid, &me)
            .unwrap()
            .is_none());
    }

    #[test]
    fn list_reports_states_and_skips_unknown_names() {
        // proves [LEASE-3]
        let d = tempfile::tempdir().unwrap();
        // Generous timeout: a loaded machine must not make a fresh folder look dead.
        let slow = LeaseConfig {
            timeout: Duration::from_secs(60),
            ..cfg()
        };
        let live = Lease::acquire(d.path(), "live", cfg()).unwrap();
        let partial = LeaseId::generate();
        fs::create_dir(d.path().join(format!(".new-{partial}"))).unwrap();
        fs::create_dir(d.path().join("junk")).unwrap();
        fs::write(d.path().join(".x.tmp-1-2"), b"").unwrap();
        let entries = list(d.path()).unwrap();
        assert_eq!(entries.len(), 2);
        let p = entries.iter().find(|e| e.id == partial).unwrap();
        assert_eq!(p.state, LeaseState::Partial);
        assert_eq!(p.info, EntryInfo::Missing);
        // A fresh partial folder is young, so it is not cleanable yet.
        assert_eq!(p.liveness(&slow, SystemTime::now()), Liveness::Alive);
        assert!(p
            .liveness(&slow, SystemTime::now() + Duration::from_secs(120))
            .is_dead());
        let l = entries.iter().find(|e| &e.id == live.id()).unwrap();
        assert_eq!(l.state, LeaseState::Live);
        assert_eq!(l.liveness(&slow, SystemTime::now()), Liveness::Alive);
        assert!(claim_partial(d.path(), &partial, live.id())
            .unwrap()
            .unwrap()
            .finish()
            .is_ok());
    }

    fn info_for(pid: u32, start: u64) -> LeaseInfo {
        let h = local_host();
        LeaseInfo {
            id: LeaseId::generate(),
            pid,
            pid_start_ticks: start,
            host: h.host.clone(),
            boot_id: h.boot_id.clone(),
            pid_ns: h.pid_ns.clone(),
            kind: "t".into(),
            started_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    #[test]
    fn liveness_rules() {
        // proves [LEASE-5]
        let c = cfg();
        let now = SystemTime::now();
        let me = std::process::id();
        let ticks = proc_stat(me).unwrap().unwrap().start_ticks;
        let fresh = Some(Heartbeat {
            counter: 1,
            unix_ms: unix_ms(now),
        });
        assert_eq!(
            liveness(&info_for(me, ticks), fresh, &c, now),
            Liveness::Alive
        );
        // Reused pid: same pid, other start time.
        assert!(liveness(&info_for(me, ticks + 1), fresh, &c, now).is_dead());
        // A pid that cannot exist (above pid_max).
        assert!(liveness(&info_for(i32::MAX as u32, 1), fresh, &c, now).is_dead());
        assert!(liveness(&info_for(0, 1), fresh, &c, now).is_dead());
        // Stale heartbeat although the pid is alive (a SIGSTOPped process).
        let old = Some(Heartbeat {
            counter: 1,
            unix_ms: unix_ms(now) - 5_000,
        });
        assert!(liveness(&info_for(me, ticks), old, &c, now).is_dead());
        // No heartbeat: the info's start time counts.
        let mut i = info_for(me, ticks);
        assert_eq!(liveness(&i, None, &c, now), Liveness::Alive);
        i.started_unix_ms -= 5_000;
        assert!(liveness(&i, None, &c, now).is_dead());
        // Same hostname, other boot: rebooted.
        let mut i = info_for(me, ticks);
        i.boot_id = "00000000-0000-0000-0000-000000000000".into();
        assert!(liveness(&i, fresh, &c, now).is_dead());
        // Other host with a fresh heartbeat: alive, pid is not checked.
        i.host = "elsewhere".into();
        i.pid = i32::MAX as u32;
        assert_eq!(liveness(&i, fresh, &c, now), Liveness::Alive);
        assert!(liveness(&i, old, &c, now).is_dead());
    }

    #[test]
    fn zombie_child_is_dead() {
        // proves [LEASE-5]: a SIGKILLed child that nobody reaped yet must count as dead.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let ticks = proc_stat(pid).unwrap().unwrap().start_ticks;
        let now = SystemTime::now();
        let fresh = Some(Heartbeat {
            counter: 1,
            unix_ms: unix_ms(now),
        });
        assert_eq!(
            liveness(&info_for(pid, ticks), fresh, &cfg(), now),
            Liveness::Alive
        );
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !liveness(&info_for(pid, ticks), fresh, &cfg(), SystemTime::now()).is_dead() {
            assert!(
                std::time::Instant::now() < deadline,
                "zombie never seen dead"
            );
            thread::sleep(Duration::from_millis(5));
        }
        child.wait().unwrap();
    }

    #[test]
    fn keeper_heartbeats_ticks_reports_fencing_once_and_stops_fast() {
        // proves [LEASE-7]
        let d = tempfile::tempdir().unwrap();
        let lease = Arc::new(Lease::acquire(d.path(), "k", cfg()).unwrap());
        let fenced = Arc::new(AtomicUsize::new(0));
        let ticks = Arc::new(AtomicUsize::new(0));
        let (f2, t2) = (fenced.clone(), ticks.clone());
        let keeper = Lease::start_keeper(
            lease.clone(),
            Box::new(move || {
                f2.fetch_add(1, Ordering::SeqCst);
            }),
            Some(Box::new(move || {
                t2.fetch_add(1, Ordering::SeqCst);
            })),
        )
        .unwrap();
        let hb_path = lease.dir().join(HEARTBEAT_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while read_heartbeat(&hb_path).unwrap().unwrap().counter < 3 {
            assert!(std::time::Instant::now() < deadline);
            thread::sleep(Duration::from_millis(5));
        }
        assert!(ticks.load(Ordering::SeqCst) >= 2);
        claim(d.path(), lease.id(), &LeaseId::generate())
            .unwrap()
            .unwrap();
        while fenced.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "fencing never reported"
            );
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(100));
        assert_eq!(fenced.load(Ordering::SeqCst), 1);
        keeper.stop();

        // A keeper with a long interval still stops at once.
        let slow = LeaseConfig {
            timeout: Duration::from_secs(600),
            ..cfg()
        };
        let slow = LeaseConfig {
            heartbeat_interval: Duration::from_secs(300),
            ..slow
        };
        let l2 = Arc::new(Lease::acquire(d.path(), "k2", slow).unwrap());
        let k2 = Lease::start_keeper(l2.clone(), Box::new(|| {}), None).unwrap();
        let t0 = std::time::Instant::now();
        drop(k2);
        assert!(t0.elapsed() < Duration::from_secs(2));
        Arc::try_unwrap(l2).unwrap().release().unwrap();
    }
}
