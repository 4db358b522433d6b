//! Process leases: one folder per live process, liveness, fencing and exactly-one cleaner.
//!
//! Owns the lease folder `leases/<id>/` (its names, its [`LeaseInfo`], the shared [`LeaseConfig`])
//! and re-exports the whole lease API from its parts. Does not own the journal inside the folder
//! ([`crate::journal`], a lower layer) nor the lease id's text form ([`crate::id`]).
//!
//! - [`Lease`] (`holder`): this process's folder `leases/<id>/` (info, heartbeat, journal),
//!   created by [`Lease::acquire`] and kept fresh by a [`LeaseKeeper`] thread.
//! - [`Heartbeat`] (`heartbeat`): the 20-byte sign of life and how it is read.
//! - [`liveness`] (`liveness`) decides whether another process's lease is [`Liveness::Dead`] from
//!   its [`LeaseInfo`] (pid, pid start time, boot id) and its [`Heartbeat`].
//! - [`list`] (`listing`) shows every lease folder; [`claim`] (`claim`) renames a dead process's
//!   folder to `<id>.claimed-<cleaner>` so exactly one cleaner gets its journal ([`Claimed`]), and
//!   that rename is also what fences the dead process: [`Lease::check_valid`] fails from then on.
//!
//! Layers inside: `heartbeat` uses only this file, `liveness` adds `heartbeat`, `listing` uses
//! both; `holder` and `claim` sit on top.
//!
//! Formats, protocol steps and crash points: `data-layout.md` section 5.6, "Leases" (crash points: 8.2)
//! (rules `[LEASE-n]`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod claim;
mod heartbeat;
mod holder;
mod listing;
mod liveness;

pub use crate::id::{LeaseId, ParseLeaseIdError};
pub use claim::{claim, claim_partial, reclaim_abandoned, ClaimError, Claimed, FinishError};
pub use heartbeat::{read_heartbeat, Heartbeat};
pub use holder::{AcquireError, FenceError, Lease, LeaseKeeper, ReleaseError};
pub use listing::{
    claimed_name, is_live_lease, list, parse_folder_name, partial_pid, read_entry, EntryInfo,
    LeaseEntry, LeaseState, ListError,
};
pub use liveness::{
    has_exited, liveness, proc_state, runs_here, this_boot_id, this_node, Liveness, NODE_ENV,
};

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
    /// The node (host) the process runs on: `VERFS_NODE`, else the machine id, else the
    /// hostname ([`this_node`]). Empty in leases made before nodes were recorded.
    #[serde(default)]
    pub node: String,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests;
