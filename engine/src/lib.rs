//! The verfs storage engine: a directory of files that any number of processes use at once.
//!
//! Overview of the main types:
//! - [`store::Store`]: one process's handle on a store. Opening one acquires a
//!   [lease](verfs_coordination::lease), opens the shared [transaction log](verfs_coordination::txlog)
//!   whose materialized view is a [`meta::MetaState`], and an own open pack for new chunks.
//! - [`meta`]: the metadata model (inodes, directory entries, per-file extents, chunk index) and
//!   [`meta::Tx`], the validated builder that turns a namespace operation into log records.
//! - [`chunker`], [`pack`]: streaming FastCDC, XXH3-128 chunk ids, zstd records in append-only packs.
//! - [`fsck`] proves the invariants of `DESIGN.md`; [`recover`] cleans up after dead processes.
//!
//! ```no_run
//! use verfs_engine::store::{Store, OpenOptions};
//! # fn main() -> Result<(), verfs_engine::error::Error> {
//! Store::init(std::path::Path::new("./store"))?;
//! let store = Store::open(std::path::Path::new("./store"), OpenOptions::new("example"))?;
//! store.mkdir("/docs", 0o755, true)?;
//! let bytes = store.read_all("/docs")?; // a directory: Err(IsADirectory)
//! # let _ = bytes; Ok(()) }
//! ```
//!
//! Every on-disk format is specified in `data-layout.md` at the repository root.

pub mod access;
pub mod chunker;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod fsck;
pub mod fsops;
pub mod gc;
pub mod ids;
pub mod localdir;
pub mod meta;
pub mod pack;
pub mod pipeline;
pub mod recover;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod transfer;

/// Test hook for crash points: if the environment variable `VERFS_CRASH_POINT` names `point`,
/// the process aborts here (no destructor runs: its lease, journal and files stay as a SIGKILL
/// would leave them). Used by the crash tests of snapshots and GC; costs one cached lookup.
pub fn crash_point(point: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if WANTED
        .get_or_init(|| std::env::var("VERFS_CRASH_POINT").ok())
        .as_deref()
        == Some(point)
    {
        eprintln!("verfs: VERFS_CRASH_POINT={point}: aborting here");
        std::process::abort();
    }
}
