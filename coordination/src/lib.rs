//! File-based coordination for processes that share one verfs store.
//!
//! Nothing here knows about files-as-data, chunks or FUSE: these are the mechanisms that let any
//! number of processes, on one host or several sharing a POSIX filesystem, change one directory of
//! state safely while any of them may be SIGKILLed at any instruction.
//!
//! - [`txlog::TxLog`]: the shared transaction log (WAL coordinator): serializable commits under a
//!   short exclusive lock, group commit, materialized views that readers refresh without locking.
//! - [`lease::Lease`]: one folder per live process; liveness, fencing, exactly-one cleaner.
//! - [`journal::Journal`]: per-process recovery journal of multi-step actions in flight.
//! - [`manifest::Manifest`]: atomic multi-file operations (prepare, commit record, apply).
//! - [`lock::LockTable`]: DLM-mode lock manager (named resources, POSIX ranges) on OFD locks.
//! - [`two_phase`]: file-voted two-phase commit among the live processes.
//! - [`ctlfile`] and [`fsutil`]: the checksummed control-file envelope and durable file primitives.
//! - [`failpoint`]: fault injection at every store write site, for tests ([`io_site!`]).
//!
//! The byte formats and protocols are specified in `data-layout.md` at the repository root.

pub mod ctlfile;
pub mod failpoint;
pub mod fsutil;
pub mod id;
pub mod journal;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod two_phase;
pub mod txlog;
