//! What `verfs repair` reports and how it fails: the losses, damaged pages and records, the
//! outcome that decides the exit code, and [`RepairError`] (`data-layout.md` 5.12, "Report").

use std::path::PathBuf;

use crate::error::Error;
use crate::format::keys;
use crate::meta::tree::Salvage;
use crate::meta::MetaError;

pub use super::log::DamagedRecord;

/// What a repair lost, one item per inode (or snapshot) concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// A directory entry removed: it named an inode whose record was lost (the file is gone),
    /// or it was a second entry of a directory.
    EntryRemoved,
    /// An inode no entry reaches any more, linked into `/lost+found` as `#<ino>`.
    MovedToLostFound,
    /// An inode whose record was lost, recreated from its entries (a directory) or its extents
    /// (a file) with default attributes.
    Recreated,
    /// A file's extents (some or all) were in a lost page: those bytes read as zeros.
    DataLost,
    /// Extents whose chunk is in no pack (or that do not fit it), cut.
    ExtentCut,
    /// A file has fewer surviving entries than its link count: names lost.
    LinksLost,
    /// Keys of a snapshot's tree that were in a lost page.
    SnapshotRangeLost,
}

/// One loss: what, which inode (0 for a snapshot), its path now (or where it was), and detail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Loss {
    pub kind: LossKind,
    pub ino: u64,
    pub path: String,
    pub detail: String,
}

/// A page that did not verify, found by the salvage walk of one tree.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedPage {
    /// "namespace", "chunk index", or "snapshot NAME".
    pub tree: String,
    pub file: PathBuf,
    pub offset: u64,
    /// The keys the subtree held: after `after` (exclusive) up to `upto` (inclusive); `None`:
    /// unbounded.
    pub after: Option<String>,
    pub upto: Option<String>,
    pub reason: String,
    /// Where its content came from instead, if it was recovered.
    pub recovered_from: Option<String>,
}

/// What `verfs repair` found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    /// The checkpoint the state was rebuilt from (its lsn; 0: the log from its start).
    pub base_lsn: u64,
    /// The newest lsn kept.
    pub head_lsn: u64,
    /// The checkpoint written (the commit of the repair); `None` if nothing was written.
    pub checkpoint: Option<u64>,
    pub damaged_pages: Vec<DamagedPage>,
    pub damaged_log_records: Vec<DamagedRecord>,
    /// Every transaction lost: damaged, missing, or valid but not applicable.
    pub lost_lsns: Vec<u64>,
    /// Records after the base that were applied (those after a damaged one included).
    pub records_applied: u64,
    pub losses: Vec<Loss>,
    /// What was set right without losing anything (link counts, sizes, parent records, chunk
    /// index entries, dead processes cleaned up after, files removed).
    pub fixes: Vec<String>,
    /// Chunk index entries rebuilt from pack indexes.
    pub chunks_recovered: u64,
    /// Checkpoints that did not verify.
    pub bad_checkpoints: Vec<String>,
    /// Files removed by the commit (old segments, checkpoints, page files).
    pub removed: Vec<String>,
}

/// The three outcomes, and `verfs repair`'s exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to repair (exit 0).
    Clean,
    /// Repaired without losing anything (exit 1).
    Repaired,
    /// Repaired, and something was lost (exit 2).
    Lost,
}

impl RepairReport {
    pub fn outcome(&self) -> Outcome {
        if !self.losses.is_empty() || !self.lost_lsns.is_empty() {
            Outcome::Lost
        } else if self.changed() {
            Outcome::Repaired
        } else {
            Outcome::Clean
        }
    }

    /// Does the store need (or did it get) a change?
    fn changed(&self) -> bool {
        !self.damaged_pages.is_empty()
            || !self.damaged_log_records.is_empty()
            || !self.fixes.is_empty()
            || !self.bad_checkpoints.is_empty()
            || !self.losses.is_empty()
            || !self.lost_lsns.is_empty()
    }
}

/// A process that holds a live lease on the store.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Holder {
    pub lease: String,
    pub pid: u32,
    pub host: String,
    pub kind: String,
}

/// `verfs repair` failed. Every variant leaves the store as it was, or (after the commit point)
/// repaired with leftovers the next repair removes (`data-layout.md` 5.12, crash points).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// Other processes use the store: a repair runs offline.
    #[error("{}: in use by {}; `verfs repair` works offline (like e2fsck): stop them (`verfs umount`, end the commands) and run it again", .store.display(), describe(.holders))]
    Busy {
        store: PathBuf,
        holders: Vec<Holder>,
    },
    /// Another process holds a maintenance lock (a GC, a page writer) although no live lease
    /// was seen: one is starting.
    #[error("{}: the lock {lock} is held by another process; run `verfs repair` again once it is gone", .store.display())]
    Locked { store: PathBuf, lock: String },
    /// Nothing to rebuild from: no checkpoint verifies and the log does not start at lsn 1.
    #[error("{}: cannot repair: {reason}", .store.display())]
    Unrepairable { store: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<MetaError> for RepairError {
    fn from(e: MetaError) -> Self {
        RepairError::Store(e.into())
    }
}

impl From<crate::meta::tree::TreeError> for RepairError {
    fn from(e: crate::meta::tree::TreeError) -> Self {
        RepairError::Store(MetaError::from(e).into())
    }
}

fn describe(h: &[Holder]) -> String {
    let each: Vec<String> = h
        .iter()
        .map(|h| {
            format!(
                "pid {} on {} ({}, lease {})",
                h.pid, h.host, h.kind, h.lease
            )
        })
        .collect();
    format!("{} other process(es): {}", h.len(), each.join(", "))
}
/// Add what one tree's salvage met to the report (`chunk_keys`: keys shown in hex, and the lost
/// range is rebuilt from the pack indexes).
pub(super) fn report_salvage(tree: &str, s: &Salvage, chunk_keys: bool, report: &mut RepairReport) {
    let key = |k: &Option<Vec<u8>>| {
        k.as_ref().map(|k| {
            if chunk_keys {
                hex::encode(k)
            } else {
                show_key(k)
            }
        })
    };
    for l in &s.lost {
        report.damaged_pages.push(DamagedPage {
            tree: tree.into(),
            file: l.path.clone(),
            offset: l.offset,
            after: key(&l.after),
            upto: key(&l.upto),
            reason: l.reason.clone(),
            recovered_from: chunk_keys
                .then(|| "the pack indexes (chunk ids in the range that a pack holds)".into()),
        });
    }
    for (path, offset, file, at, reason) in &s.replaced {
        report.damaged_pages.push(DamagedPage {
            tree: tree.into(),
            file: path.clone(),
            offset: *offset,
            after: None,
            upto: None,
            reason: reason.clone(),
            recovered_from: Some(format!("the page of equal content at byte {at} of page file {file:016x} (another root shares it)")),
        });
    }
}

pub(super) fn show(k: &Option<Vec<u8>>) -> String {
    k.as_deref().map_or("the start".into(), show_key)
}

/// A namespace key for people: `i 7`, `d 1 "name"`, `x 7 part 0`, `p 7`; hex otherwise.
pub fn show_key(k: &[u8]) -> String {
    let Ok(ino) = keys::key_ino(k) else {
        return hex::encode(k);
    };
    match k[0] {
        b'i' | b'p' => format!("{} {ino}", k[0] as char),
        b'd' => format!(
            "d {ino} {:?}",
            String::from_utf8_lossy(&k[keys::INO_PREFIX_LEN..])
        ),
        b'x' if k.len() == 13 => format!(
            "x {ino} part {}",
            u32::from_be_bytes([k[9], k[10], k[11], k[12]])
        ),
        _ => hex::encode(k),
    }
}
