//! The operations over a [`Store`], one file each: `namespace` (CLI path operations), `inode`
//! (the mount's operations by inode), `transfer` (put/get), `snapshot` (create, list, delete,
//! restore, and reading snapshot trees), `gc/` (the two stages), `recover`, `repair/` (offline rebuild of a damaged store), `fsck`, `maintain`
//! (checkpoint and log truncation), `status` (the figures of `verfs status`, the lease holders), `userlock` (`verfs lock` / `verfs locks`). Each is an `impl Store` block (methods the CLI and the mount
//! call on their handle) or free functions taking `&Store` (whole-store passes that are not a
//! handle's business: `gc::run_pass`, `recover`, `fsck`, `transfer::put`), as they were before.
//!
//! What they share lives here: [`Store::propose`], a two-phase commit that cleans up after a
//! participant that died without voting.

pub mod fsck;
pub mod gc;
pub mod inode;
pub mod maintain;
pub mod namespace;
pub mod recover;
pub mod repair;
pub mod snapshot;
pub mod status;
pub mod transfer;
pub mod userlock;

use verfs_coordination::two_phase;

use crate::error::Error;
use crate::store::Store;

impl Store {
    /// Propose `kind` to every live process (two-phase commit) and wait for the decision. The
    /// caller applies a Commit, then calls [`two_phase::finish`]. A participant that died
    /// without voting is cleaned up here ([`recover::clean_lease`]), so it never blocks the
    /// decision ([2PC-4]).
    pub fn propose(
        &self,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<two_phase::Outcome, Error> {
        self.propose_with(kind, payload, &mut |dead| {
            let _ = recover::clean_lease(self, dead);
        })
    }
}
