//! The names that processes agree on through shared files: journal action kinds (what a dead
//! process's journal says it was doing, so `recover` knows how to clean up), two-phase-commit
//! proposal kinds (what a vote is about) and DLM lock resource names. One place, so two
//! operations never pick the same name and a reader sees every kind at once.
//!
//! It owns names only; what each action, proposal or lock protects is in the module that uses it.

use crate::ids::PackId;

// Journal action kinds (the payload format is given with each).

/// Journal action kind for this process's open pack; payload: the pack id (16 hex chars).
pub const ACTION_OPEN_PACK: &str = "open-pack";
/// Journal action kind for an unlinked-but-open inode (nlink 0) this process must delete at its
/// last close; payload: the inode number (decimal). The cleaner deletes it if this process dies.
pub const ACTION_ORPHAN: &str = "orphan";
/// Journal action kind while this process creates a snapshot; payload: its id (16 hex).
pub const ACTION_SNAPSHOT: &str = "snapshot";
/// Journal action kind while this process rewrites a pack; payload: the pack id.
pub const ACTION_GC_REWRITE: &str = "gc-rewrite";

// Two-phase-commit proposal kinds.

/// Two-phase-commit kind for deleting log segments covered by a checkpoint; payload: the lsn.
pub const PROPOSAL_LOG_TRUNCATE: &str = "log-truncate";
/// Two-phase-commit kind of the snapshot barrier: every participant commits its unflushed writes
/// before voting ([SNAP-2]); payload: `{"name": NAME}`.
pub const PROPOSAL_SNAPSHOT: &str = "snapshot-barrier";
/// Two-phase-commit kind of a GC pack rewrite: a participant votes Commit only if it holds no
/// in-flight reference to a discarded chunk of those packs ([GC-4]); payload:
/// `{"packs": ["<16 hex>", ...]}`.
pub const PROPOSAL_GC_REWRITE: &str = "gc-rewrite";

// DLM lock resource names.

/// DLM resource: GC stage 1 holds it in EX, stage 2 in PR.
pub const LOCK_GC: &str = "gc";
/// DLM resource over the metadata page files: held in PR by whoever writes pages and then
/// publishes a root reaching them, in EX by the page sweep ([META-4]).
pub const LOCK_META_PAGES: &str = "meta-pages";
/// DLM resource serializing updates of the store's `stats.json`.
pub const LOCK_STATS: &str = "stats";

/// DLM resource a GC stage-2 worker holds in EX while it rewrites pack `id` ([GC-3]).
pub fn lock_gc_pack(id: PackId) -> String {
    format!("gc-pack:{id}")
}
