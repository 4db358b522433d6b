//! The verfs storage engine: a directory of files that any number of processes use at once.
//!
//! Overview of the main types:
//! - [`store::Store`]: one process's handle on a store. Opening one acquires a
//!   [lease](verfs_coordination::lease), opens the shared [transaction log](verfs_coordination::txlog)
//!   whose materialized view is a [`meta::MetaState`], and an own open pack for new chunks.
//! - [`meta`]: the metadata model (inodes, directory entries, per-file extents, chunk index) and
//!   [`meta::Tx`], the validated builder that turns a namespace operation into log records.
//! - [`chunker`], [`pack`]: streaming FastCDC, XXH3-128 chunk ids, zstd records in append-only packs.
//! - [`fsck`] proves the invariants of `docs/DESIGN.md` (checked as listed in `data-layout.md` section 7); [`recover`] cleans up after dead processes.
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
pub mod ids;
pub mod kinds;
pub mod layout;
pub mod localdir;
pub mod meta;
pub mod model;
pub mod ops;
pub mod overlay;
pub mod pack;
pub mod pipeline;
pub mod store;
pub mod view;
