//! FUSE inode numbers and the nodes they name: a tree of the store (live or snapshot) and an inode
//! in it.
//!
//! Overview: the kernel's numbers are fuser's [`INodeNo`]; the engine's are
//! [`verfs_engine::ids::InodeNo`] (here `Ino`). This module is the only place that converts
//! between them:
//! - a live inode's FUSE number is its store number (the root is 1 in both; live numbers never
//!   reach bit 63);
//! - `/.snapshots` is [`SNAPSHOTS_INO`] (`1 << 63`), a virtual directory of the ready snapshots;
//! - inode `i` of snapshot `id` is `1 << 63 | slot << 40 | i`, where the slot ([`SnapSlots`]) is
//!   given to the snapshot on first use and kept for the life of the mount, so a FUSE number never
//!   names two inodes.
//!
//! [`Inodes::resolve`] turns a FUSE number into a [`Node`]: `/.snapshots`, or a
//! [`View`] and an inode of its tree, which is what every read handler works on. [`live`] is the
//! one check a change makes: it refuses (`EROFS`) every inode that is not in the live tree.
//!
//! Not here: what a node holds (the engine's view) and how its attributes look to the kernel
//! (`attr`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use fuser::INodeNo;
use verfs_engine::ids::InodeNo as Ino;
use verfs_engine::meta::SNAPSHOTS_DIR;
use verfs_engine::store::Store;
use verfs_engine::view::View;

use crate::errno::FsError;

/// Bit 63 of a FUSE inode number: an inode of `/.snapshots` (read-only), not of the live tree.
pub(crate) const SNAP_BIT: u64 = 1 << 63;
/// FUSE inode number of `/.snapshots`.
pub(crate) const SNAPSHOTS_INO: INodeNo = INodeNo(SNAP_BIT);
/// A snapshot's own inode number takes the low 40 bits of a FUSE inode number ...
const SNAP_INO_BITS: u32 = 40;
/// ... and the mount's slot for the snapshot the 23 bits above (slots count from 1).
const SNAP_SLOT_MAX: u64 = (1 << (63 - SNAP_INO_BITS)) - 1;

/// Is `ino` an inode of `/.snapshots` (read-only)?
fn is_snap(ino: INodeNo) -> bool {
    ino.0 & SNAP_BIT != 0
}

/// Is this the entry `/.snapshots`?
pub(crate) fn is_snapshots_entry(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == Ino::ROOT.0 && name.as_bytes() == SNAPSHOTS_DIR.as_bytes()
}

/// The live inode `ino` names, for a change: `EROFS` for `/.snapshots` and everything below it.
pub(crate) fn live(ino: INodeNo) -> Result<Ino, FsError> {
    if is_snap(ino) {
        Err(FsError::ReadOnly("snapshots cannot be changed"))
    } else {
        Ok(Ino(ino.0))
    }
}

/// What a FUSE inode number names.
pub(crate) enum Node<'s> {
    /// `/.snapshots` itself.
    SnapshotsDir,
    /// Inode `ino` of the tree of `view`.
    In { view: View<'s>, ino: Ino },
}

/// Snapshot ids by slot (bits 40..62 of their FUSE inode numbers) and back. A slot is given on
/// first use and kept for the life of the mount, so a FUSE number never names two inodes.
#[derive(Default)]
pub(crate) struct SnapSlots {
    by_id: HashMap<u64, u64>,
    /// `ids[slot - 1]` is the snapshot of `slot`.
    ids: Vec<u64>,
}

impl SnapSlots {
    /// The FUSE number of inode `ino` of snapshot `id`, giving the snapshot a slot on first use;
    /// `EOVERFLOW` if the inode number or the slot does not fit its bits.
    fn fuse_ino(&mut self, id: u64, ino: Ino) -> Result<u64, FsError> {
        if ino.0 == 0 || ino.0 >> SNAP_INO_BITS != 0 {
            return Err(FsError::Overflow(format!("inode {ino} of snapshot {id}")));
        }
        let slot = match self.by_id.get(&id) {
            Some(s) => *s,
            None => {
                let s = self.ids.len() as u64 + 1;
                if s > SNAP_SLOT_MAX {
                    return Err(FsError::Overflow(format!("snapshot {id} (no slot left)")));
                }
                self.ids.push(id);
                self.by_id.insert(id, s);
                s
            }
        };
        Ok(SNAP_BIT | slot << SNAP_INO_BITS | ino.0)
    }

    /// The (snapshot id, inode) a FUSE number below `/.snapshots` (not `/.snapshots` itself)
    /// names; `ESTALE` for a number this mount never gave out.
    fn resolve(&self, fuse_ino: u64) -> Result<(u64, Ino), FsError> {
        let slot = (fuse_ino & !SNAP_BIT) >> SNAP_INO_BITS;
        let id = (slot as usize)
            .checked_sub(1)
            .and_then(|i| self.ids.get(i).copied())
            .ok_or(FsError::Stale(fuse_ino))?;
        Ok((id, Ino(fuse_ino & ((1 << SNAP_INO_BITS) - 1))))
    }
}

/// The FUSE inode numbers of one mount.
#[derive(Default)]
pub(crate) struct Inodes {
    slots: Mutex<SnapSlots>,
}

impl Inodes {
    fn slots(&self) -> std::sync::MutexGuard<'_, SnapSlots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The FUSE number of inode `ino` of the tree of `view` (a snapshot gets its slot on first
    /// use); `EOVERFLOW` if it does not fit.
    pub(crate) fn fuse_ino(&self, view: &View<'_>, ino: Ino) -> Result<INodeNo, FsError> {
        match view.snapshot_id() {
            None => Ok(INodeNo(ino.0)),
            Some(id) => self.slots().fuse_ino(id, ino).map(INodeNo),
        }
    }

    /// The FUSE number of the root of snapshot `id`.
    pub(crate) fn snapshot_root(&self, id: u64) -> Result<INodeNo, FsError> {
        self.slots().fuse_ino(id, Ino::ROOT).map(INodeNo)
    }

    /// What FUSE number `ino` names in `store`. A live number is taken as it is (the engine
    /// answers `ENOENT` for an inode that is gone); a number below `/.snapshots` this mount never
    /// gave out is `ESTALE`, one of a deleted snapshot `ENOENT`.
    pub(crate) fn resolve<'s>(&self, store: &'s Store, ino: INodeNo) -> Result<Node<'s>, FsError> {
        if !is_snap(ino) {
            return Ok(Node::In {
                view: View::live(store),
                ino: Ino(ino.0),
            });
        }
        if ino == SNAPSHOTS_INO {
            return Ok(Node::SnapshotsDir);
        }
        let (id, sino) = self.slots().resolve(ino.0)?;
        Ok(Node::In {
            view: View::snapshot(store, id)?,
            ino: sino,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use verfs_engine::meta::{FileKind, Inode};

    use super::*;
    use crate::attr::file_attr;

    fn code(r: Result<impl std::fmt::Debug, FsError>) -> i32 {
        r.unwrap_err().errno().code()
    }

    /// A live inode's FUSE number is its store number (the root is 1 in both).
    #[test]
    fn live_inodes_keep_their_store_numbers() {
        for n in [1u64, 2, 3, 1 << 20, (1 << 40) + 7, SNAP_BIT - 1] {
            let i = Inode::new(Ino(n), FileKind::File, 0o644);
            assert_eq!(file_attr(&i, 0).ino, INodeNo(n));
            assert!(!is_snap(INodeNo(n)), "{n}");
            assert_eq!(live(INodeNo(n)).unwrap(), Ino(n));
        }
        assert_eq!(INodeNo::ROOT.0, Ino::ROOT.0);
        assert_eq!(code(live(SNAPSHOTS_INO)), libc::EROFS);
    }

    /// Snapshot inode numbers: bit 63 set (so never a live number, which stays below it), never
    /// `/.snapshots` itself, one number per (snapshot, inode) and the same one on every call, and
    /// each resolves back to its snapshot and inode.
    #[test]
    fn snapshot_inode_numbers_never_collide_and_are_stable() {
        let mut slots = SnapSlots::default();
        let ids = [7u64, 3, 1 << 40, u64::MAX, 0];
        let inos = [1u64, 2, 3, 999, (1 << SNAP_INO_BITS) - 1];
        let mut seen = HashMap::new();
        for round in 0..2 {
            for &id in &ids {
                for &ino in &inos {
                    let f = slots.fuse_ino(id, Ino(ino)).unwrap();
                    assert!(is_snap(INodeNo(f)), "{f:#x}");
                    assert_ne!(f, SNAPSHOTS_INO.0);
                    assert_eq!(slots.resolve(f).unwrap(), (id, Ino(ino)));
                    match seen.get(&(id, ino)) {
                        None => {
                            assert_eq!(round, 0);
                            seen.insert((id, ino), f);
                        }
                        Some(&prev) => assert_eq!(prev, f, "not stable: ({id}, {ino})"),
                    }
                }
            }
        }
        let distinct: HashSet<u64> = seen.values().copied().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "two snapshot inodes share a number"
        );
        // Slots are given in first-use order, from 1.
        assert_eq!(
            slots.fuse_ino(7, Ino(1)).unwrap(),
            SNAP_BIT | 1 << SNAP_INO_BITS | 1
        );
        assert_eq!(
            slots.fuse_ino(3, Ino(1)).unwrap(),
            SNAP_BIT | 2 << SNAP_INO_BITS | 1
        );
    }

    #[test]
    fn snapshot_inode_numbers_refuse_what_does_not_fit_or_was_never_given() {
        let mut slots = SnapSlots::default();
        assert_eq!(code(slots.fuse_ino(1, Ino(0))), libc::EOVERFLOW);
        assert_eq!(
            code(slots.fuse_ino(1, Ino(1 << SNAP_INO_BITS))),
            libc::EOVERFLOW
        );
        // Slot 0 and slots never given are stale, not some other snapshot's inode.
        assert_eq!(code(slots.resolve(SNAP_BIT | 5)), libc::ESTALE);
        assert_eq!(
            code(slots.resolve(SNAP_BIT | 1 << SNAP_INO_BITS | 5)),
            libc::ESTALE
        );
        let f = slots.fuse_ino(42, Ino(5)).unwrap();
        assert_eq!(slots.resolve(f).unwrap(), (42, Ino(5)));
        assert_eq!(
            code(slots.resolve(SNAP_BIT | 2 << SNAP_INO_BITS | 5)),
            libc::ESTALE
        );
        // The last slot fits; the one after it is refused rather than wrapping into bit 63.
        // (Slots 1 .. SNAP_SLOT_MAX - 1 taken; only their count matters to the next new id.)
        slots.ids = vec![0; SNAP_SLOT_MAX as usize - 1];
        slots.by_id.clear();
        let last = slots.fuse_ino(1000, Ino(1)).unwrap();
        assert_eq!(last, SNAP_BIT | SNAP_SLOT_MAX << SNAP_INO_BITS | 1);
        assert!(is_snap(INodeNo(last)));
        assert_eq!(slots.resolve(last).unwrap(), (1000, Ino(1)));
        assert_eq!(code(slots.fuse_ino(1001, Ino(1))), libc::EOVERFLOW);
    }
}
