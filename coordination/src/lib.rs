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
//! - [`id`]: the typed ids ([`id::LeaseId`], [`id::ManifestId`], [`id::TxnId`]) the others share.
//! - [`ctlfile`] and [`fsutil`]: the checksummed control-file envelope and durable file primitives.
//! - [`failpoint`]: fault injection at every store write site, for tests ([`io_site!`]).
//! - [`fscheck`]: is the filesystem under a store coherent enough to share it ([FS-1]).
//!
//! # Layers
//!
//! A module imports only from rows below its own (checked by `modcycles.py`):
//!
//! | row | modules |
//! |---|---|
//! | 0 | `failpoint`, `fscheck`, `fsutil`, `id` |
//! | 1 | `ctlfile`, `lock`, `txlog` |
//! | 2 | `journal` |
//! | 3 | `lease` (hands a dead process's journal file to its cleaner) |
//! | 4 | `manifest` (needs only lease ids), `two_phase` (lists and reads leases) |
//!
//! # Errors
//!
//! The rules every module here follows (the engine wraps these types, it does not flatten them):
//!
//! - **One error type per operation, named after it**, in the module that owns the operation:
//!   `lease::AcquireError`, `lock::ConvertError`, `manifest::CommitError`, `two_phase::ProposeError`.
//!   The same short name in two modules (`lock::AcquireError`, `lease::AcquireError`) is
//!   intended: callers name them through their module.
//! - **thiserror enums, `#[non_exhaustive]`, variants that carry data** (the path, the id, the
//!   resource and mode), so a message always names what failed; an I/O failure keeps its
//!   `io::Error` (or [`ctlfile::CtlError`]) as its `#[source]`, never a copy of its text.
//! - **Each fallible public function says what state a failure leaves behind** (on the function
//!   or on the error type): "nothing was appended", "the owner holds what it held before".
//! - **Queries instead of matching on variants:** `is_retryable()` where the failure is contention
//!   and the same call may be made again (`lock::AcquireError`, `lock::ConvertError`: a wait
//!   that timed out, a conflicting holder, a busy gate); `is_fenced()` where this process has
//!   lost the right to change the store and must stop (`lease::FenceError`, `txlog::LogError`,
//!   `txlog::CommitError`, `manifest::CommitError`); `is_not_found()` on
//!   [`ctlfile::CtlError`].
//! - **Messages are lower case, without a trailing period**, and are part of the interface: tests
//!   and operators match on them, so a restructure does not change them.
//! - **No panics on bytes read from disk and no `unwrap()` on I/O**; diagnostics go through
//!   `tracing`, never `eprintln!`.
//!
//! The byte formats and protocols are specified in `data-layout.md` at the repository root.

pub mod ctlfile;
pub mod failpoint;
pub mod fscheck;
pub mod fsutil;
pub mod id;
pub mod journal;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod two_phase;
pub mod txlog;
