//! Named locks for users of a store (`verfs lock NAME MODE -- CMD`, `verfs locks`): a resource of
//! the lock table ([`verfs_coordination::lock`]) in any DLM mode, on any host that shares the
//! store, with a fencing token (the *epoch*) that grows with every exclusive grant.
//!
//! A user lock `NAME` is the table's named resource `user:NAME` (so it can never be one of the
//! engine's own, such as `gc-worker`). Its epoch is `locks/epochs/<hash>`, a control file that only
//! an EX holder rewrites. Who waits for and who holds which user lock is advertised in the
//! holder's lease folder (`leases/<id>/locks`), because the lock table's OFD locks carry no owner:
//! `verfs locks` reads those of live leases. The lock itself is the OFD lock: it is released by
//! the holder's exit, SIGKILL included, and by a fenced holder's exit ([LOCK-3], [ULOCK-2]).
//!
//! Does not own the modes or the waiting (`lock`), nor running the command (the CLI).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use verfs_coordination::ctlfile;
use verfs_coordination::lease;
use verfs_coordination::lock::{self, LockOwner, LockTable, Mode, Resource, Wait};

use crate::error::Error;
use crate::store::Store;

/// Control-file kind of `locks/epochs/<hash>`.
const EPOCH_KIND: &str = "lock-epoch";
/// Control-file kind of `leases/<id>/locks`.
const HELD_KIND: &str = "user-locks";
/// The file in a lease folder that lists its user locks.
pub const HELD_FILE: &str = "locks";
/// Longest user lock name, in bytes.
pub const MAX_NAME: usize = 255;

/// `locks/epochs/<hash>`: the last epoch granted in EX.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct EpochFile {
    name: String,
    epoch: u64,
}

/// One user lock of a process, as its lease folder advertises it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockClaim {
    pub name: String,
    pub mode: String,
    /// `waiting` or `held`.
    pub state: String,
    /// The epoch of the grant (0 while waiting).
    pub epoch: u64,
    pub since_unix_ms: u64,
}

/// A user lock `verfs locks` reports: the claim and who made it.
#[derive(Debug, Clone)]
pub struct LockReport {
    pub claim: LockClaim,
    pub lease: String,
    pub pid: u32,
    pub node: String,
    pub host: String,
}

/// A granted user lock; dropping it releases the lock and clears the advertisement.
pub struct UserLock {
    owner: LockOwner,
    resource: Resource,
    advert: PathBuf,
    pub epoch: u64,
}

impl Drop for UserLock {
    fn drop(&mut self) {
        let _ = self.owner.release(&self.resource);
        let _ = std::fs::remove_file(&self.advert);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn epoch_path(store: &Store, name: &str) -> PathBuf {
    store
        .layout()
        .root
        .join("locks/epochs")
        .join(format!("{:016x}", lock::name_hash(&resource_name(name))))
}

fn resource_name(name: &str) -> String {
    format!("user:{name}")
}

fn lock_err(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidPath {
        path: format!("lock {name:?}"),
        reason: reason.to_string(),
    }
}

/// Take user lock `name` in `mode`, waiting as `wait` says ([ULOCK-1]). In EX the epoch grows
/// by one, durably, before this returns; in other modes it is the last EX grant's.
pub fn acquire(store: &Store, name: &str, mode: Mode, wait: Wait) -> Result<UserLock, Error> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains(['\0', '\n']) {
        return Err(lock_err(
            name,
            format!("a lock name is 1 to {MAX_NAME} bytes without NUL or newline"),
        ));
    }
    let advert = store.lease().dir().join(HELD_FILE);
    let mut claim = LockClaim {
        name: name.to_string(),
        mode: mode.to_string(),
        state: "waiting".into(),
        epoch: 0,
        since_unix_ms: now_ms(),
    };
    ctlfile::write(&advert, HELD_KIND, &claim)?;
    let owner = LockTable::open(&store.layout().root.join("locks"))?.owner()?;
    let resource = Resource::Named(resource_name(name));
    if let Err(e) = owner.acquire(&resource, mode, wait) {
        let _ = std::fs::remove_file(&advert);
        return Err(e.into());
    }
    let mut held = UserLock {
        owner,
        resource,
        advert,
        epoch: 0,
    };
    let path = epoch_path(store, name);
    let last = match ctlfile::read::<EpochFile>(&path, EPOCH_KIND) {
        Ok(f) => f.epoch,
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(e.into()),
    };
    let epoch = if mode == Mode::Ex {
        let next = last + 1;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        ctlfile::write(
            &path,
            EPOCH_KIND,
            &EpochFile {
                name: name.to_string(),
                epoch: next,
            },
        )?;
        next
    } else {
        last
    };
    claim.state = "held".into();
    claim.epoch = epoch;
    claim.since_unix_ms = now_ms();
    ctlfile::write(&held.advert, HELD_KIND, &claim)?;
    held.epoch = epoch;
    Ok(held)
}

/// Every user lock that a live process holds or waits for, oldest first.
pub fn list(store: &Store) -> Result<Vec<LockReport>, Error> {
    let cfg = store.config().lease_config();
    let now = SystemTime::now();
    let mut out = Vec::new();
    for e in lease::list(&store.layout().leases())? {
        if e.state != lease::LeaseState::Live || e.liveness(&cfg, now).is_dead() {
            continue;
        }
        let lease::EntryInfo::Valid(info) = &e.info else {
            continue;
        };
        let Ok(claim) = ctlfile::read::<LockClaim>(&e.path.join(HELD_FILE), HELD_KIND) else {
            continue;
        };
        out.push(LockReport {
            claim,
            lease: e.id.to_string(),
            pid: info.pid,
            node: if info.node.is_empty() {
                info.host.clone()
            } else {
                info.node.clone()
            },
            host: info.host.clone(),
        });
    }
    out.sort_by_key(|r| r.claim.since_unix_ms);
    Ok(out)
}
