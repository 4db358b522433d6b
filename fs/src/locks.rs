//! POSIX (`fcntl`) and BSD (`flock`) locks of a mount, on the store's shared lock table.
//!
//! Overview: [`Locks`] holds the store's [`LockTable`] (`STORE/locks/table`, shared by every
//! process of the store, so a lock taken through one mount holds against every other) and one
//! lock owner (an open file description on the table) per kernel lock owner. [`Locks::getlk`]
//! and [`Locks::setlk`] answer the kernel's requests; a waiting `F_SETLKW` runs on a thread of its
//! own and gives up with `EINTR` once the caller has a signal pending. [`Locks::drop_posix`] is
//! what close(2) does to fcntl locks, [`Locks::drop_owner`] what the last close of a file with
//! flock locks does.
//!
//! Not here: the lock table itself (`verfs_coordination::lock`); errno values (`errno`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{LockOwner, ReplyEmpty};
use verfs_coordination::lock::{self, AcquireError, LockTable, Mode, Resource, Wait};

use crate::errno::FsError;

/// How long a waiting `setlk` sleeps between looks at the lock and at the caller's signals.
const SETLKW_POLL: Duration = Duration::from_millis(50);

/// What one kernel lock owner holds through this mount.
struct HeldLocks {
    owner: Arc<lock::LockOwner>,
    inos: HashSet<u64>,
}

/// A conflicting lock, as `F_GETLK` reports it.
pub(crate) struct Conflict {
    pub start: u64,
    pub end: u64,
    pub typ: i32,
}

/// The locks of one mount.
pub(crate) struct Locks {
    /// POSIX and flock locks, shared by every process of the store (`STORE/locks/table`).
    table: LockTable,
    /// One lock owner (an open file description on the table) per kernel lock owner, with the
    /// inodes it may hold range locks on. An owner is dropped (closing its description, which
    /// frees whatever it still holds) once `flush` has released its last inode.
    owners: Mutex<HashMap<u64, HeldLocks>>,
}

/// The table's lock mode for an `F_RDLCK`/`F_WRLCK`.
fn lock_mode(typ: i32) -> Result<Mode, FsError> {
    match typ {
        libc::F_RDLCK => Ok(Mode::Pr),
        libc::F_WRLCK => Ok(Mode::Ex),
        _ => Err(FsError::Invalid("lock type")),
    }
}

fn no_lock(e: impl std::fmt::Display) -> FsError {
    FsError::NoLock(e.to_string())
}

impl Locks {
    pub(crate) fn new(table: LockTable) -> Locks {
        Locks {
            table,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HeldLocks>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table owner for kernel lock owner `owner`, created on first use and recorded as
    /// possibly holding locks on `ino`.
    fn owner(&self, owner: LockOwner, ino: u64) -> Result<Arc<lock::LockOwner>, FsError> {
        let mut owners = self.owners();
        if let Some(h) = owners.get_mut(&owner.0) {
            h.inos.insert(ino);
            return Ok(h.owner.clone());
        }
        let o = Arc::new(self.table.owner().map_err(no_lock)?);
        owners.insert(
            owner.0,
            HeldLocks {
                owner: o.clone(),
                inos: [ino].into_iter().collect(),
            },
        );
        Ok(o)
    }

    /// `F_GETLK`: the first lock that conflicts with `typ` on `[start, end]` of `ino`, if any.
    pub(crate) fn getlk(
        &self,
        ino: u64,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
    ) -> Result<Option<Conflict>, FsError> {
        let mode = lock_mode(typ)?;
        let owner = self.owner(lock_owner, ino)?;
        let c = owner
            .test(&Resource::Range { ino, start, end }, mode)
            .map_err(no_lock)?;
        Ok(c.map(|c| Conflict {
            start: c.start,
            end: c.end,
            typ: if c.mode == Mode::Pr {
                libc::F_RDLCK
            } else {
                libc::F_WRLCK
            },
        }))
    }

    /// `F_SETLK`/`F_SETLKW` (`sleep`) of `typ` on `[start, end]` of `ino`, answered through
    /// `reply`: at once, or for a waiting `F_SETLKW` from a thread of its own, so waiters never
    /// take the FUSE workers (the holder's unlock must get through). `answer` turns the outcome
    /// into the reply.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setlk<A>(
        &self,
        ino: u64,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
        answer: A,
    ) where
        A: FnOnce(ReplyEmpty, Result<(), FsError>) + Send + 'static,
    {
        let owner = match self.owner(lock_owner, ino) {
            Ok(o) => o,
            Err(e) => return answer(reply, Err(e)),
        };
        let res = Resource::Range { ino, start, end };
        if typ == libc::F_UNLCK {
            return answer(reply, owner.release(&res).map_err(no_lock));
        }
        let mode = match lock_mode(typ) {
            Ok(m) => m,
            Err(e) => return answer(reply, Err(e)),
        };
        match owner.acquire(&res, mode, Wait::No) {
            Ok(()) => answer(reply, Ok(())),
            Err(AcquireError::WouldBlock { .. }) | Err(AcquireError::GateBusy { .. }) if sleep => {
                // Give up with EINTR once a signal is pending for the caller: the kernel waits
                // uninterruptibly for this reply, and fuser drops FUSE_INTERRUPT.
                let spawned = std::thread::Builder::new()
                    .name("verfs-setlkw".into())
                    .spawn(move || answer(reply, wait_for_lock(&owner, &res, mode, pid)));
                if let Err(e) = spawned {
                    tracing::warn!(op = "setlk", ino, error = %e, "cannot start a lock waiter");
                }
            }
            Err(AcquireError::WouldBlock { .. }) | Err(AcquireError::GateBusy { .. }) => {
                answer(reply, Err(FsError::WouldBlock))
            }
            Err(e) => answer(reply, Err(no_lock(e))),
        }
    }

    /// close(2) by `owner` of a descriptor of `ino`: POSIX drops every fcntl lock the process
    /// holds on the file. For server-side POSIX locks the kernel sends no unlock of its own (its
    /// local lock list is empty); FUSE_FLUSH with the owner is the only notice, also for the
    /// implicit closes of a dying process, SIGKILL included.
    pub(crate) fn drop_posix(&self, owner: LockOwner, ino: u64) {
        let mut owners = self.owners();
        let Some(h) = owners.get_mut(&owner.0) else {
            return;
        };
        if !h.inos.remove(&ino) {
            return;
        }
        let all = Resource::Range {
            ino,
            start: 0,
            end: lock::TO_EOF,
        };
        if let Err(e) = h.owner.release(&all) {
            // Dropping the description below releases the lock all the same.
            tracing::warn!(op = "flush", ino, error = %e, "releasing fcntl locks");
            h.inos.clear();
        }
        if h.inos.is_empty() {
            owners.remove(&owner.0);
        }
    }

    /// FUSE_RELEASE_FLOCK_UNLOCK: the last close of a file with flock locks. Closing the owner's
    /// open file description on the lock table drops every lock it holds.
    pub(crate) fn drop_owner(&self, owner: LockOwner) {
        self.owners().remove(&owner.0);
    }
}

/// Wait for `res` in `mode`: `Ok` once acquired, `EINTR` as soon as the calling thread `pid` has a
/// signal pending (or is gone).
fn wait_for_lock(
    owner: &lock::LockOwner,
    res: &Resource,
    mode: Mode,
    pid: u32,
) -> Result<(), FsError> {
    loop {
        match owner.acquire(res, mode, Wait::Timeout(SETLKW_POLL)) {
            Ok(()) => return Ok(()),
            Err(AcquireError::TimedOut { .. }) => {}
            Err(e) => return Err(no_lock(e)),
        }
        if caller_interrupted(pid) {
            return Err(FsError::Interrupted);
        }
    }
}

/// Does thread `pid` (as the kernel reports it in a request; 0 when outside our pid namespace)
/// have an unblocked, non-ignored signal pending, or has it exited?
fn caller_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") & !field("SigIgn:") != 0
}
