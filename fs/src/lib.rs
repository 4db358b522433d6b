//! The verfs FUSE adapter: maps kernel requests onto the engine; it holds no storage logic.
//!
//! Overview: [`VerFs`] implements `fuser::Filesystem` over an open [`Store`]
//! (`filesystem`). Inode numbers are the store's inode numbers (the root is 1 in both). Every
//! namespace request becomes one engine transaction, so a change is visible to every process
//! sharing the store when the reply is sent. File writes go into the engine's per-inode overlay
//! and are committed on `flush` (close) and `fsync` (close-to-open consistency). The kernel's
//! entry and attribute caches are disabled (TTL 0), so a change made by another process is seen
//! by the next lookup. Errors become errno values in exactly one module, [`errno`]. [`mount()`]
//! runs a mount in the foreground until SIGINT/SIGTERM or an external unmount, then flushes
//! everything and releases the lease.
//!
//! Snapshots: `/.snapshots` is a read-only virtual directory, found by lookup but not listed in
//! the root (so `find`, `cp -a` and `rsync` of the mount do not descend into it). It lists the
//! ready snapshots; below `/.snapshots/NAME` each snapshot's tree is read through an engine
//! [`verfs_engine::view::View`], from its `snapshots/<id>.snap` and its chunks. Those inodes get
//! FUSE numbers with bit 63 set (`inodes`). Every change to them is `EROFS`. A snapshot never
//! changes, so its inodes are cached by the kernel ([`SNAP_TTL`], page cache kept across opens);
//! a deleted snapshot's inodes answer `ENOENT`. The mount votes on a snapshot barrier by
//! committing every unflushed write ([`Store::set_barrier_hook`]).
//!
//! Modules: `filesystem` (the handlers), `inodes` (FUSE numbers <-> tree and inode), `attr`
//! (`FileAttr`, cache lifetimes), `locks` (fcntl/flock on the store's lock table), [`errno`] (the
//! only errno mapping), `mount` (options, signals, detach).
//!
//! Format and protocol: `data-layout.md`. Supported operations and their errors: README "Mount".
//!
//! [`Store`]: verfs_engine::store::Store
//! [`Store::set_barrier_hook`]: verfs_engine::store::Store::set_barrier_hook

mod attr;
pub mod errno;
mod filesystem;
mod inodes;
mod locks;
mod mount;

pub use attr::{file_attr, SNAP_TTL};
pub use errno::{errno, FsError};
pub use filesystem::VerFs;
pub use mount::{
    check_mountpoint, detach, is_mountpoint, mount, mounted_store, MountConfig, MountError,
};
