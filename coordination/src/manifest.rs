//! Atomic multi-file operations: prepare, commit record, apply; roll forward or back on recovery.
//!
//! Owns `manifests/` (prepare and commit files, staging temps, apply, roll forward or back).
//! Does not own the meaning of the files it changes, nor deciding that an owner is dead (the
//! caller passes that to [`recover`]); it knows leases only by id.
//!
//! A [`Manifest`] changes several files, possibly in several directories, as one atomic step
//! without relying on a rename across directories: every new content is first written to a temp
//! file beside its target ([`Manifest::stage`]); the durable creation of `manifests/<id>.commit`
//! is the commit point ([`Manifest::commit`]); then each temp is renamed onto its target inside its
//! own directory. [`recover`] finishes (rolls forward) or undoes (rolls back) the manifests of
//! dead owners.
//!
//! `<id>.commit` is a decision written with an exclusive create, like a two-phase-commit decision:
//! the owner writes `Commit`, a recoverer that rolls back a dead owner's manifest writes `Abort`.
//! Exactly one of them succeeds, so an owner that was only stalled (SIGSTOP) and resumes after
//! the rollback can never commit a manifest whose temps were deleted.
//!
//! Paths are recorded relative to the store root (the parent of `manifests/`), so a store
//! mounted at different paths on different hosts recovers correctly.
//!
//! Formats, protocol steps, crash points and rules `[MAN-n]`: `data-layout.md`
//! section 5.6, "Manifests" (crash points: 8.4).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::ctlfile::{self, CtlError};
use crate::fsutil;
use crate::id::LeaseId;
pub use crate::id::{ManifestId, ParseIdError};
use crate::io_site;

/// Control-file kind of `manifests/<id>.prepare`.
pub const PREPARE_KIND: &str = "manifest-prepare";
/// Control-file kind of `manifests/<id>.commit`.
pub const COMMIT_KIND: &str = "manifest-commit";
/// An `Abort` decision of a dead owner is kept this long after the rollback, so that the owner,
/// if it was only stalled, finds it instead of committing ([MAN-6]).
pub const ABORT_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// What a manifest does to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EntryOp {
    /// Replace (or create) the target with the temp's content, of this length and crc32.
    Write { len: u64, crc32: u32 },
    /// Delete the target if it exists.
    Remove,
}

/// One target of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the store root, `/`-separated, no `.` or `..`.
    pub target: String,
    pub op: EntryOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PrepareDoc {
    id: ManifestId,
    entries: Vec<ManifestEntry>,
}

/// The content of `manifests/<id>.commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum CommitDoc {
    Commit {
        id: ManifestId,
        entries: Vec<ManifestEntry>,
    },
    Abort {
        id: ManifestId,
        reason: String,
    },
}

fn temp_name(target_name: &str, id: &ManifestId) -> String {
    format!(".{target_name}.mf-{id}")
}

/// Absolute target and temp paths of an entry under `root`; `None` if the recorded path is
/// unsafe (which only a damaged or forged file can produce).
fn entry_paths(root: &Path, id: &ManifestId, target: &str) -> Option<(PathBuf, PathBuf)> {
    let mut rel = PathBuf::new();
    for part in target.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        rel.push(part);
    }
    let abs = root.join(&rel);
    let name = abs.file_name()?.to_str()?.to_owned();
    let tmp = fsutil::parent_of(&abs).join(temp_name(&name, id));
    Some((abs, tmp))
}

fn store_root(manifests_dir: &Path) -> PathBuf {
    fsutil::parent_of(manifests_dir)
}

/// [`Manifest::stage`] or [`Manifest::stage_remove`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    #[error("manifest {id}: {path}: {source}")]
    Io {
        id: ManifestId,
        path: PathBuf,
        source: io::Error,
    },
    #[error("manifest {id}: {source}")]
    Ctl {
        id: ManifestId,
        #[source]
        source: CtlError,
    },
    #[error("manifest {id}: target {target} is not a plain path under the store root {root}")]
    OutsideStore {
        id: ManifestId,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("manifest {id}: target {target} staged twice")]
    Duplicate { id: ManifestId, target: PathBuf },
}

/// [`Manifest::commit`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Failed before the commit point: the manifest is rolled back (best effort) and no target
    /// changed. If the failure was creating the commit record, it may exist nonetheless; see
    /// [`Manifest::commit`].
    #[error("manifest {id}: {path}: {source}")]
    Io {
        id: ManifestId,
        path: PathBuf,
        source: io::Error,
    },
    #[error("manifest {id}: {source}")]
    Ctl {
        id: ManifestId,
        #[source]
        source: CtlError,
    },
    /// A recoverer decided `Abort` first: this process was declared dead while stalled.
    #[error("manifest {id} was rolled back by recovery: {reason}")]
    RolledBack { id: ManifestId, reason: String },
    /// Committed, but applying failed: [`recover`] rolls the rest forward once this owner is
    /// dead (or when forced for it).
    #[error("manifest {id} committed but not fully applied: {reason}")]
    Apply { id: ManifestId, reason: String },
}

impl CommitError {
    /// A recoverer rolled the manifest back (`RolledBack`): this process was declared dead while
    /// stalled, exactly as if its lease had been claimed. Never retryable.
    pub fn is_fenced(&self) -> bool {
        matches!(self, CommitError::RolledBack { .. })
    }
}

/// [`Manifest::abort`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AbortError {
    #[error("manifest {id}: removing {path}: {source}")]
    Io {
        id: ManifestId,
        path: PathBuf,
        source: io::Error,
    },
}

/// [`recover`] could not list the manifests directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error("recovering manifests in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An atomic multi-file operation being built by its owner.
///
/// Dropping it uncommitted rolls it back (best effort; [`recover`] finishes the job).
#[derive(Debug)]
pub struct Manifest {
    dir: PathBuf,
    root: PathBuf,
    id: ManifestId,
    entries: Vec<ManifestEntry>,
    /// Every entry the prepare file lists (a superset of `entries` after a failed stage).
    listed: Vec<ManifestEntry>,
    temp_dirs: BTreeSet<PathBuf>,
    settled: bool,
}

impl Manifest {
    /// Start a manifest owned by `owner`. Writes nothing yet.
    pub fn begin(manifests_dir: &Path, owner: &LeaseId) -> Manifest {
        Manifest {
            dir: manifests_dir.to_path_buf(),
            root: store_root(manifests_dir),
            id: ManifestId::generate(owner),
            entries: Vec::new(),
            listed: Vec::new(),
            temp_dirs: BTreeSet::new(),
            settled: false,
        }
    }

    pub fn id(&self) -> &ManifestId {
        &self.id
    }

    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    fn prepare_path(&self) -> PathBuf {
        self.dir.join(format!("{}.prepare", self.id))
    }

    fn commit_path(&self) -> PathBuf {
        self.dir.join(format!("{}.commit", self.id))
    }

    fn relative(&self, target: &Path) -> Result<String, StageError> {
        let outside = || StageError::OutsideStore {
            id: self.id.clone(),
            target: target.to_path_buf(),
            root: self.root.clone(),
        };
        let rel = target.strip_prefix(&self.root).map_err(|_| outside())?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_str().ok_or_else(outside)?.to_owned()),
                _ => return Err(outside()),
            }
        }
        if parts.is_empty() || parts.iter().any(|p| p.contains('/')) {
            return Err(outside());
        }
        let rel = parts.join("/");
        if self.listed.iter().any(|e| e.target == rel) {
            return Err(StageError::Duplicate {
                id: self.id.clone(),
                target: target.to_path_buf(),
            });
        }
        Ok(rel)
    }

    /// Stage new content for `target` ([MAN-1], [MAN-2]).
    ///
    /// The prepare file is rewritten to list this entry before its temp file is created, so
    /// recovery always knows every temp that may exist. On error the target is untouched and the
    /// entry is not part of the manifest; its temp may remain until [`Manifest::abort`], drop or
    /// [`recover`] removes it.
    pub fn stage(&mut self, target: &Path, bytes: &[u8]) -> Result<(), StageError> {
        let rel = self.relative(target)?;
        let op = EntryOp::Write {
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        };
        let entry = ManifestEntry { target: rel, op };
        self.listed.push(entry.clone());
        let doc = PrepareDoc {
            id: self.id.clone(),
            entries: self.listed.clone(),
        };
        ctlfile::write(&self.prepare_path(), PREPARE_KIND, &doc).map_err(|source| {
            StageError::Ctl {
                id: self.id.clone(),
                source,
            }
        })?;
        let Some((_, tmp)) = entry_paths(&self.root, &self.id, &entry.target) else {
            return Err(StageError::OutsideStore {
                id: self.id.clone(),
                target: target.to_path_buf(),
                root: self.root.clone(),
            });
        };
        let io = |source| StageError::Io {
            id: self.id.clone(),
            path: tmp.clone(),
            source,
        };
        let mut f = io_site!(
            "manifest.stage-create",
            OpenOptions::new().write(true).create_new(true).open(&tmp)
        )
        .map_err(io)?;
        io_site!("manifest.stage-write", f.write_all(bytes))
            .and_then(|()| io_site!("manifest.stage-fsync", f.sync_all()))
            .map_err(io)?;
        self.temp_dirs.insert(fsutil::parent_of(&tmp));
        self.entries.push(entry);
        Ok(())
    }

    /// Stage the deletion of `target` (absent at apply time is fine). Writes nothing yet.
    pub fn stage_remove(&mut self, target: &Path) -> Result<(), StageError> {
        let rel = self.relative(target)?;
        let entry = ManifestEntry {
            target: rel,
            op: EntryOp::Remove,
        };
        self.listed.push(entry.clone());
        self.entries.push(entry);
        Ok(())
    }

    /// Write the commit record; the durable creation of `<id>.commit` is the commit point
    /// ([MAN-3]). Returns with the manifest committed but not applied. Test hook for crash points.
    #[doc(hidden)]
    pub fn commit_without_apply(mut self) -> Result<(), CommitError> {
        self.write_commit()?;
        self.settled = true;
        Ok(())
    }

    fn write_commit(&mut self) -> Result<(), CommitError> {
        // [MAN-2]: the temps' names must be durable before the record that says to rename them.
        for d in &self.temp_dirs {
            fsutil::fsync_dir(d).map_err(|source| CommitError::Io {
                id: self.id.clone(),
                path: d.clone(),
                source,
            })?;
        }
        let doc = CommitDoc::Commit {
            id: self.id.clone(),
            entries: self.entries.clone(),
        };
        let path = self.commit_path();
        match ctlfile::create_exclusive(&path, COMMIT_KIND, &doc) {
            Ok(true) => Ok(()),
            Ok(false) => {
                let reason = match ctlfile::read::<CommitDoc>(&path, COMMIT_KIND) {
                    Ok(CommitDoc::Abort { reason, .. }) => reason,
                    Ok(CommitDoc::Commit { .. }) => "a commit record already exists".into(),
                    Err(e) => e.to_string(),
                };
                // The recoverer decided Abort; undo what this (stalled) process staged since.
                let _ = self.rollback_files();
                self.settled = true;
                Err(CommitError::RolledBack {
                    id: self.id.clone(),
                    reason,
                })
            }
            Err(source) => {
                // The record may exist (e.g. only the directory fsync failed), so leave every
                // file for recovery to judge instead of rolling back on drop.
                self.settled = true;
                Err(CommitError::Ctl {
                    id: self.id.clone(),
                    source,
                })
            }
        }
    }

    /// Commit and apply ([MAN-3], [MAN-4]).
    ///
    /// Before the commit point an error leaves the targets untouched and the manifest rolled back,
    /// except [`CommitError::Ctl`] when creating the record: the record may then exist, and
    /// [`recover`] decides once this owner is gone. After the commit point an error is
    /// [`CommitError::Apply`]: some targets may be updated and the rest are rolled forward by
    /// [`recover`].
    pub fn commit(mut self) -> Result<(), CommitError> {
        self.write_commit()?;
        self.settled = true;
        let problems = apply(&self.root, &self.id, &self.entries);
        if !problems.is_empty() {
            return Err(CommitError::Apply {
                id: self.id.clone(),
                reason: problems.join("; "),
            });
        }
        let io = |path: PathBuf| {
            let id = self.id.clone();
            move |source| CommitError::Io { id, path, source }
        };
        remove_if_exists(&self.commit_path()).map_err(io(self.commit_path()))?;
        remove_if_exists(&self.prepare_path()).map_err(io(self.prepare_path()))?;
        fsutil::fsync_dir(&self.dir).map_err(io(self.dir.clone()))
    }

    fn rollback_files(&self) -> Result<(), AbortError> {
        rollback(&self.root, &self.id, &self.listed).map_err(|(path, source)| AbortError::Io {
            id: self.id.clone(),
            path,
            source,
        })?;
        let p = self.prepare_path();
        remove_if_exists(&p).map_err(|source| AbortError::Io {
            id: self.id.clone(),
            path: p,
            source,
        })
    }

    /// Roll back: delete the staged temps and the prepare file. Targets are never touched.
    ///
    /// On error some temps or the prepare file may remain; [`recover`] removes them once this
    /// owner is dead.
    pub fn abort(mut self) -> Result<(), AbortError> {
        self.settled = true;
        self.rollback_files()
    }
}

impl Drop for Manifest {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.rollback_files();
        }
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match io_site!("manifest.remove", fs::remove_file(path)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Length and crc32 of a file's content, read in bounded pieces.
fn file_len_crc(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize()))
}

/// Apply every entry idempotently ([MAN-4]); the problems found, empty when all is applied.
fn apply(root: &Path, id: &ManifestId, entries: &[ManifestEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut dirs = BTreeSet::new();
    for e in entries {
        let Some((target, tmp)) = entry_paths(root, id, &e.target) else {
            problems.push(format!("unsafe target path {:?}", e.target));
            continue;
        };
        match &e.op {
            EntryOp::Write { len, crc32 } => {
                match io_site!("manifest.apply-rename", fs::rename(&tmp, &target)) {
                    Ok(()) => {
                        dirs.insert(fsutil::parent_of(&target));
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        // Applied before (by this owner or another recoverer), or lost: only the
                        // target's content tells which.
                        match file_len_crc(&target) {
                            Ok((l, c)) if l == *len && c == *crc32 => {
                                dirs.insert(fsutil::parent_of(&target));
                            }
                            Ok((l, c)) => problems.push(format!(
                                "{}: temp is gone and target has len {l} crc32 {c:08x}, \
                             expected len {len} crc32 {crc32:08x}",
                                target.display()
                            )),
                            Err(err) => problems.push(format!(
                                "{}: temp is gone and target unreadable: {err}",
                                target.display()
                            )),
                        }
                    }
                    Err(err) => problems.push(format!("renaming {}: {err}", tmp.display())),
                }
            }
            EntryOp::Remove => match remove_if_exists(&target) {
                Ok(()) => {
                    dirs.insert(fsutil::parent_of(&target));
                }
                Err(err) => problems.push(format!("removing {}: {err}", target.display())),
            },
        }
    }
    for d in dirs {
        if let Err(err) = fsutil::fsync_dir(&d) {
            problems.push(format!("fsync {}: {err}", d.display()));
        }
    }
    problems
}

/// Delete the temps of `entries` and fsync their directories ([MAN-5]).
fn rollback(
    root: &Path,
    id: &ManifestId,
    entries: &[ManifestEntry],
) -> Result<(), (PathBuf, io::Error)> {
    let mut dirs = BTreeSet::new();
    for e in entries {
        if !matches!(e.op, EntryOp::Write { .. }) {
            continue;
        }
        // An unsafe path names no temp this code could have created.
        let Some((_, tmp)) = entry_paths(root, id, &e.target) else {
            continue;
        };
        remove_if_exists(&tmp).map_err(|err| (tmp.clone(), err))?;
        dirs.insert(fsutil::parent_of(&tmp));
    }
    for d in dirs {
        match fsutil::fsync_dir(&d) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err((d, err)),
            _ => {}
        }
    }
    Ok(())
}

/// A manifest [`recover`] could not settle; its files are left as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    pub id: ManifestId,
    pub reason: String,
}

/// What [`recover`] did, for `verfs recover` to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    pub rolled_forward: Vec<ManifestId>,
    pub rolled_back: Vec<ManifestId>,
    /// Manifests of live owners, left alone.
    pub skipped_live: Vec<ManifestId>,
    /// Temp files of control-file writes by dead owners.
    pub stray_temps_removed: usize,
    /// `Abort` decisions older than [`ABORT_TOMBSTONE_TTL`] removed.
    pub tombstones_removed: usize,
    pub problems: Vec<ManifestProblem>,
}

#[derive(Default)]
struct Files {
    prepare: bool,
    commit: bool,
}

/// Roll forward or back every manifest whose owner `is_owner_dead` ([MAN-5], [MAN-6]).
///
/// Pass a predicate that is also true for the caller's own id to force its manifests (e.g. after
/// a [`CommitError::Apply`]). Manifests of other owners are never touched ([MAN-7]). Safe to run
/// in several processes at once and to repeat after a crash: every step is idempotent. A manifest
/// that cannot be settled (corrupt record, target changed since) is listed in `problems` and left
/// as it is. Fails only when the directory cannot be listed.
pub fn recover(
    manifests_dir: &Path,
    is_owner_dead: &dyn Fn(&LeaseId) -> bool,
) -> Result<RecoverReport, RecoverError> {
    let root = store_root(manifests_dir);
    let io = |source| RecoverError::Io {
        path: manifests_dir.to_path_buf(),
        source,
    };
    let mut report = RecoverReport::default();
    let mut found: BTreeMap<ManifestId, Files> = BTreeMap::new();
    for ent in fs::read_dir(manifests_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if fsutil::is_temp_name(name) {
            // `.<id>.prepare.tmp-...` or `.<id>.commit.tmp-...`, left by a dead ctlfile writer.
            let id = name[1..]
                .split('.')
                .next()
                .and_then(|s| s.parse::<ManifestId>().ok());
            if let Some(id) = id {
                if is_owner_dead(&id.owner()) && remove_if_exists(&ent.path()).is_ok() {
                    report.stray_temps_removed += 1;
                }
            }
            continue;
        }
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Ok(id) = stem.parse::<ManifestId>() else {
            continue;
        };
        let f = found.entry(id).or_default();
        match ext {
            "prepare" => f.prepare = true,
            "commit" => f.commit = true,
            _ => {}
        }
    }
    for (id, files) in found {
        if !files.prepare && !files.commit {
            continue;
        }
        if !is_owner_dead(&id.owner()) {
            report.skipped_live.push(id);
            continue;
        }
        match recover_one(manifests_dir, &root, &id, &files) {
            Ok(Settled::Forward) => report.rolled_forward.push(id),
            Ok(Settled::Back) => report.rolled_back.push(id),
            Ok(Settled::TombstoneRemoved) => report.tombstones_removed += 1,
            Ok(Settled::Nothing) => {}
            Err(reason) => report.problems.push(ManifestProblem { id, reason }),
        }
    }
    let _ = fsutil::fsync_dir(manifests_dir);
    Ok(report)
}

enum Settled {
    Forward,
    Back,
    TombstoneRemoved,
    Nothing,
}

fn recover_one(dir: &Path, root: &Path, id: &ManifestId, files: &Files) -> Result<Settled, String> {
    let prepare_path = dir.join(format!("{id}.prepare"));
    let commit_path = dir.join(format!("{id}.commit"));
    let decision = if files.commit {
        ctlfile::read::<CommitDoc>(&commit_path, COMMIT_KIND)
    } else {
        // [MAN-6]: decide Abort exclusively; if the owner committed meanwhile, its record wins.
        let doc = CommitDoc::Abort {
            id: id.clone(),
            reason: "owner died before commit".into(),
        };
        match ctlfile::create_exclusive(&commit_path, COMMIT_KIND, &doc) {
            Ok(true) => Ok(doc),
            Ok(false) => ctlfile::read::<CommitDoc>(&commit_path, COMMIT_KIND),
            Err(e) => return Err(format!("writing abort decision: {e}")),
        }
    };
    // [MAN-8]: a corrupt decision is reported, never applied nor rolled back.
    let decision = match decision {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Settled::Nothing), // settled by someone else
        Err(e) => return Err(format!("commit record unreadable: {e}")),
    };
    match decision {
        CommitDoc::Commit {
            id: rec_id,
            entries,
        } => {
            if &rec_id != id {
                return Err(format!("commit record names manifest {rec_id}"));
            }
            let problems = apply(root, id, &entries);
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            remove_if_exists(&commit_path).map_err(|e| format!("removing commit record: {e}"))?;
            fsutil::fsync_dir(dir).map_err(|e| format!("fsync {}: {e}", dir.display()))?;
            remove_if_exists(&prepare_path).map_err(|e| format!("removing prepare: {e}"))?;
            Ok(Settled::Forward)
        }
        CommitDoc::Abort { .. } => {
            let had_prepare = prepare_path.exists();
            if had_prepare {
                let doc: PrepareDoc = match ctlfile::read(&prepare_path, PREPARE_KIND) {
                    Ok(d) => d,
                    Err(e) if e.is_not_found() => return Ok(Settled::Nothing),
                    Err(e) => return Err(format!("prepare record unreadable: {e}")),
                };
                rollback(root, id, &doc.entries)
                    .map_err(|(p, e)| format!("removing {}: {e}", p.display()))?;
                remove_if_exists(&prepare_path).map_err(|e| format!("removing prepare: {e}"))?;
                fsutil::fsync_dir(dir).map_err(|e| format!("fsync {}: {e}", dir.display()))?;
                return Ok(Settled::Back);
            }
            // Only the Abort decision is left: keep it while a stalled owner could still wake.
            let old = fs::metadata(&commit_path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABORT_TOMBSTONE_TTL);
            if old {
                remove_if_exists(&commit_path).map_err(|e| format!("removing tombstone: {e}"))?;
                return Ok(Settled::TombstoneRemoved);
            }
            Ok(Settled::Nothing)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests {
    use super::*;

    struct Store {
        _d: tempfile::TempDir,
        root: PathBuf,
        manifests: PathBuf,
    }

    fn store() -> Store {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        let manifests = root.join("manifests");
        fs::create_dir(&manifests).unwrap();
        fs::create_dir(root.join("a")).unwrap();
        fs::create_dir(root.join("b")).unwrap();
        Store {
            _d: d,
            root,
            manifests,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_applies_across_directories_and_cleans_up() {
        // proves [MAN-3], [MAN-4]
        let s = store();
        fs::write(s.root.join("a/old"), b"old").unwrap();
        fs::write(s.root.join("b/gone"), b"x").unwrap();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/old"), b"new").unwrap();
        m.stage(&s.root.join("b/fresh"), b"fresh").unwrap();
        m.stage_remove(&s.root.join("b/gone")).unwrap();
        assert!(m.stage(&s.root.join("a/old"), b"again").is_err());
        assert!(matches!(
            m.stage(Path::new("/elsewhere/x"), b""),
            Err(StageError::OutsideStore { .. })
        ));
        assert_eq!(fs::read(s.root.join("a/old")).unwrap(), b"old");
        m.commit().unwrap();
        assert_eq!(fs::read(s.root.join("a/old")).unwrap(), b"new");
        assert_eq!(fs::read(s.root.join("b/fresh")).unwrap(), b"fresh");
        assert_eq!(names(&s.root.join("a")), vec!["old"]);
        assert_eq!(names(&s.root.join("b")), vec!["fresh"]);
        assert!(names(&s.manifests).is_empty());
    }

    #[test]
    fn crash_after_commit_point_rolls_forward_idempotently() {
        // proves [MAN-3], [MAN-5]
        let s = store();
        fs::write(s.root.join("b/gone"), b"x").unwrap();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/one"), b"1").unwrap();
        m.stage(&s.root.join("b/two"), b"22").unwrap();
        m.stage_remove(&s.root.join("b/gone")).unwrap();
        let id = m.id().clone();
        m.commit_without_apply().unwrap();
        // Half applied by the owner before it died.
        let tmp = s.root.join(format!("a/.one.mf-{id}"));
        fs::rename(&tmp, s.root.join("a/one")).unwrap();
        // proves [MAN-7]: a live owner's manifest is never touched.
        let r = recover(&s.manifests, &|_| false).unwrap();
        assert_eq!(r.skipped_live, vec![id.clone()]);
        assert!(!s.root.join("b/two").exists());
        let r = recover(&s.manifests, &|o| o == &owner).unwrap();
        assert_eq!(r.rolled_forward, vec![id.clone()]);
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(fs::read(s.root.join("a/one")).unwrap(), b"1");
        assert_eq!(fs::read(s.root.join("b/two")).unwrap(), b"22");
        assert!(!s.root.join("b/gone").exists());
        assert!(names(&s.manifests).is_empty());
        assert_eq!(names(&s.root.join("a")), vec!["one"]);
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert_eq!(r, RecoverReport::default());
    }

    #[test]
    fn crash_before_commit_point_rolls_back() {
        // proves [MAN-1], [MAN-5]
        let s = store();
        fs::write(s.root.join("a/keep"), b"keep").unwrap();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/keep"), b"new").unwrap();
        m.stage(&s.root.join("b/x"), b"x").unwrap();
        let id = m.id().clone();
        std::mem::forget(m); // the process dies: no drop, no rollback
                             // A temp that the prepare file lists but that was never created is fine too.
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert_eq!(r.rolled_back, vec![id.clone()]);
        assert_eq!(fs::read(s.root.join("a/keep")).unwrap(), b"keep");
        assert_eq!(names(&s.root.join("a")), vec!["keep"]);
        assert!(names(&s.root.join("b")).is_empty());
        // Only the Abort tombstone remains.
        assert_eq!(names(&s.manifests), vec![format!("{id}.commit")]);
    }

    #[test]
    fn stalled_owner_cannot_commit_after_rollback() {
        // proves [MAN-6]
        let s = store();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/x"), b"x").unwrap();
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert_eq!(r.rolled_back.len(), 1);
        // The owner resumes, stages more and tries to commit.
        m.stage(&s.root.join("b/y"), b"y").unwrap();
        assert!(matches!(m.commit(), Err(CommitError::RolledBack { .. })));
        assert!(!s.root.join("a/x").exists());
        assert!(!s.root.join("b/y").exists());
        assert!(names(&s.root.join("a")).is_empty());
        assert!(names(&s.root.join("b")).is_empty());
    }

    #[test]
    fn changed_target_and_corrupt_commit_are_reported_not_applied() {
        // proves [MAN-8]
        let s = store();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/t"), b"content").unwrap();
        let id = m.id().clone();
        m.commit_without_apply().unwrap();
        fs::remove_file(s.root.join(format!("a/.t.mf-{id}"))).unwrap();
        fs::write(s.root.join("a/t"), b"other").unwrap();
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert_eq!(r.problems.len(), 1);
        assert!(r.rolled_forward.is_empty());
        assert_eq!(fs::read(s.root.join("a/t")).unwrap(), b"other");
        assert!(s.manifests.join(format!("{id}.commit")).exists());

        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("b/t"), b"content").unwrap();
        let id2 = m.id().clone();
        m.commit_without_apply().unwrap();
        let cp = s.manifests.join(format!("{id2}.commit"));
        let mut bytes = fs::read(&cp).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0x20;
        fs::write(&cp, &bytes).unwrap();
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert!(r
            .problems
            .iter()
            .any(|p| p.id == id2 && p.reason.contains("unreadable")));
        assert!(!s.root.join("b/t").exists());
        assert!(
            s.root.join(format!("b/.t.mf-{id2}")).exists(),
            "temp must not be deleted"
        );
    }

    #[test]
    fn drop_and_abort_roll_back_and_stray_temps_are_removed() {
        let s = store();
        let owner = LeaseId::generate();
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("a/x"), b"x").unwrap();
        drop(m);
        let mut m = Manifest::begin(&s.manifests, &owner);
        m.stage(&s.root.join("b/x"), b"x").unwrap();
        m.abort().unwrap();
        assert!(names(&s.root.join("a")).is_empty());
        assert!(names(&s.root.join("b")).is_empty());
        assert!(names(&s.manifests).is_empty());
        let id = ManifestId::generate(&owner);
        fs::write(s.manifests.join(format!(".{id}.commit.tmp-1-00")), b"").unwrap();
        let r = recover(&s.manifests, &|_| false).unwrap();
        assert_eq!(r.stray_temps_removed, 0);
        let r = recover(&s.manifests, &|_| true).unwrap();
        assert_eq!(r.stray_temps_removed, 1);
        assert!(names(&s.manifests).is_empty());
    }

    #[test]
    fn manifest_id_parse() {
        let owner = LeaseId::generate();
        let id = ManifestId::generate(&owner);
        assert_eq!(id.owner(), owner);
        assert_eq!(id.as_str().parse::<ManifestId>().unwrap(), id);
        assert!("x".parse::<ManifestId>().is_err());
        assert!(format!("{owner}_0000000000000000")
            .parse::<ManifestId>()
            .is_err());
    }
}
