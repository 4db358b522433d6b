//! Claiming a dead process's lease folder for exactly one cleaner ([LEASE-8]): [`claim`],
//! [`claim_partial`], [`reclaim_abandoned`], and the [`Claimed`] folder the cleaner then owns.
//!
//! Owns the claim renames, which are also what fences the dead process. Does not decide deadness
//! (the caller uses `liveness` first) and does not read or undo the journal it hands over
//! (the caller does, through [`crate::journal`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::listing::{claimed_name, is_live_lease, read_entry_info};
use super::{EntryInfo, LeaseId, NEW_PREFIX};
use crate::fsutil::{self, remove_tree};
use crate::io_site;

/// [`claim`] or [`reclaim_abandoned`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    #[error("claiming lease {id}: {path}: {source}")]
    Io {
        id: LeaseId,
        path: PathBuf,
        source: io::Error,
    },
    /// `reclaim_abandoned` refuses while the previous cleaner's lease is still live.
    #[error("claim of lease {id} is held by live cleaner {cleaner}")]
    CleanerLive { id: LeaseId, cleaner: LeaseId },
}

/// [`Claimed::finish`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    #[error("removing claimed lease folder {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A dead process's lease folder, owned by exactly one cleaner ([LEASE-8]).
#[derive(Debug)]
pub struct Claimed {
    /// The dead lease's id.
    pub id: LeaseId,
    /// `leases/<id>.claimed-<cleaner>`: holds the dead process's journal.
    pub path: PathBuf,
    pub info: EntryInfo,
    leases_dir: PathBuf,
}

impl Claimed {
    /// Open a folder already claimed by `cleaner`, e.g. after [`claim`] returned an I/O error
    /// past its rename. `Ok(None)` if there is no such folder.
    pub fn open(
        leases_dir: &Path,
        id: &LeaseId,
        cleaner: &LeaseId,
    ) -> Result<Option<Claimed>, ClaimError> {
        let path = leases_dir.join(claimed_name(id, cleaner));
        if !path.is_dir() {
            return Ok(None);
        }
        Ok(Some(Claimed::at(leases_dir, id, path)))
    }

    fn at(leases_dir: &Path, id: &LeaseId, path: PathBuf) -> Claimed {
        let info = read_entry_info(&path);
        Claimed {
            id: id.clone(),
            path,
            info,
            leases_dir: leases_dir.to_path_buf(),
        }
    }

    /// The dead process's journal file (it may not exist).
    pub fn journal_path(&self) -> PathBuf {
        self.path.join(crate::journal::JOURNAL_FILE)
    }

    /// Delete the claimed folder durably, once its journal's actions are undone or finished.
    ///
    /// On error part of the folder may remain under its claimed name; calling `finish` again
    /// (or a later cleaner's [`reclaim_abandoned`]) completes it.
    pub fn finish(self) -> Result<(), FinishError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FinishError::Io { path, source }
        };
        remove_tree(&self.path).map_err(io(&self.path))?;
        fsutil::fsync_dir(&self.leases_dir).map_err(io(&self.leases_dir))
    }
}

fn claim_rename(
    leases_dir: &Path,
    id: &LeaseId,
    from: &Path,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    let to = leases_dir.join(claimed_name(id, cleaner));
    let io = |path: &Path| {
        let (id, path) = (id.clone(), path.to_path_buf());
        move |source| ClaimError::Io { id, path, source }
    };
    match io_site!("lease.claim-rename", fs::rename(from, &to)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(from)(e)),
    }
    fsutil::fsync_dir(leases_dir).map_err(io(leases_dir))?;
    Ok(Some(Claimed::at(leases_dir, id, to)))
}

/// Claim dead lease `id` for `cleaner`: rename `leases/<id>` to `leases/<id>.claimed-<cleaner>`.
///
/// `Ok(None)` when the folder is already gone (another cleaner won, or the owner released it).
/// The caller decides deadness first (e.g. [`LeaseEntry::liveness`](super::LeaseEntry::liveness)); this is a plain rename
/// and takes no lock, so the transaction log may call it under its commit lock ([LEASE-6]).
/// On an I/O error after the rename the claim may have happened: [`Claimed::open`] finds it.
pub fn claim(
    leases_dir: &Path,
    id: &LeaseId,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    claim_rename(leases_dir, id, &leases_dir.join(id.as_str()), cleaner)
}

/// Claim a `.new-<id>` folder left by a process that died inside [`Lease::acquire`](super::Lease::acquire).
///
/// Same result and failure states as [`claim`]; the caller checks the entry is dead first.
pub fn claim_partial(
    leases_dir: &Path,
    id: &LeaseId,
    cleaner: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    let prefix = format!("{NEW_PREFIX}{id}");
    let found = fs::read_dir(leases_dir)
        .map_err(|source| ClaimError::Io {
            id: id.clone(),
            path: leases_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n == &prefix || n.starts_with(&format!("{prefix}-")));
    match found {
        Some(name) => claim_rename(leases_dir, id, &leases_dir.join(name), cleaner),
        None => Ok(None),
    }
}

/// Take over a claim whose cleaner is gone: rename `<id>.claimed-<old>` to `<id>.claimed-<me>`.
///
/// Refused with [`ClaimError::CleanerLive`] while `leases/<old>` exists: a cleaner's claim is
/// only abandoned once the cleaner itself has been claimed (fenced) or released. `Ok(None)` when
/// another cleaner took it over first. Same failure states as [`claim`].
pub fn reclaim_abandoned(
    leases_dir: &Path,
    id: &LeaseId,
    old_cleaner: &LeaseId,
    me: &LeaseId,
) -> Result<Option<Claimed>, ClaimError> {
    if is_live_lease(leases_dir, old_cleaner) {
        return Err(ClaimError::CleanerLive {
            id: id.clone(),
            cleaner: old_cleaner.clone(),
        });
    }
    claim_rename(
        leases_dir,
        id,
        &leases_dir.join(claimed_name(id, old_cleaner)),
        me,
    )
}
