//! `verfs recover`: bring a store back to a clean state after any crash.
//!
//! Safe while other processes use the store and safe to run twice (or in two processes at once):
//! each dead process's lease is claimed by exactly one cleaner (an atomic rename, done under the
//! log lock so fencing is serializable), and every cleanup step is idempotent. Protocol and crash
//! points: `data-layout.md`, "Recovery".

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use verfs_coordination::fsutil;
use verfs_coordination::journal;
use verfs_coordination::lease::{self, Claimed, LeaseConfig, LeaseId, LeaseState};
use verfs_coordination::manifest;
use verfs_coordination::two_phase;

use crate::error::Error;
use crate::ids::InodeNo;
use crate::ids::PackId;
use crate::kinds::{
    ACTION_GC_REWRITE, ACTION_OPEN_PACK, ACTION_ORPHAN, ACTION_SNAPSHOT, LOCK_GC,
    PROPOSAL_LOG_TRUNCATE,
};
use crate::pack;
use crate::store::Store;

/// What recovery did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RecoverReport {
    /// Dead processes cleaned up after: lease id and why it was dead.
    pub leases_cleaned: Vec<(String, String)>,
    /// Open packs of dead processes that were sealed, with the torn tail cut (bytes) if any.
    pub packs_sealed: Vec<(String, Option<u64>)>,
    pub manifests_rolled_forward: usize,
    pub manifests_rolled_back: usize,
    pub two_phase_decided: Vec<String>,
    pub temp_files_removed: Vec<String>,
    /// Unlinked-but-open inodes of dead processes that were deleted.
    pub orphans_deleted: u64,
    /// Snapshots whose creator died before they were ready, dropped.
    pub snapshots_dropped: Vec<String>,
    /// Pack rewrites of dead GC processes (their manifests are settled with the others).
    pub gc_rewrites_interrupted: Vec<String>,
    /// `.discard` files whose torn tail (a GC died appending) was cut, with the offset.
    pub discard_tails_cut: Vec<(String, u64)>,
    /// Snapshot files no snapshot names any more, and other GC leftovers, removed.
    pub stale_files_removed: u64,
    /// Things recovery could not settle, with their location.
    pub problems: Vec<String>,
}

/// `verfs recover` failed ([`recover`]): the store could not be read or a dead process could
/// not be claimed or cleaned up after. Every step is idempotent, so what was done stays done and
/// running recovery again continues from there; what a step could not settle but could skip is
/// in [`RecoverReport::problems`] instead. Each variant's message is its cause's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// Listing the leases failed.
    #[error(transparent)]
    ListLeases(#[from] lease::ListError),
    /// Claiming a dead process's lease (or a half-created one) failed.
    #[error(transparent)]
    Claim(#[from] lease::ClaimError),
    /// Cleaning up after a claimed process failed (its journal, packs, lease folder).
    #[error(transparent)]
    Clean(Error),
    /// Settling the dead processes' manifests failed.
    #[error(transparent)]
    Manifests(#[from] manifest::RecoverError),
    /// Reading the dead coordinators' two-phase commits failed.
    #[error(transparent)]
    TwoPhase(#[from] two_phase::RecoverError),
    /// Marking a decided two-phase commit finished failed.
    #[error(transparent)]
    TwoPhaseFinish(#[from] two_phase::FinishError),
    /// The log (taking its lock, cutting a torn tail, listing segments) failed: I/O,
    /// corruption or fencing, as [`Error`] gives a log error.
    #[error(transparent)]
    Log(#[from] Error),
}

impl RecoverError {
    /// Contention only (see [`Error::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            RecoverError::Clean(e) | RecoverError::Log(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// This process was fenced while recovering (see [`Error::is_fenced`]).
    pub fn is_fenced(&self) -> bool {
        match self {
            RecoverError::Clean(e) | RecoverError::Log(e) => e.is_fenced(),
            _ => false,
        }
    }
}

/// The same [`Error`] (and message) as before recovery had its own error.
impl From<RecoverError> for Error {
    fn from(e: RecoverError) -> Self {
        match e {
            RecoverError::ListLeases(e) => e.into(),
            RecoverError::Claim(e) => e.into(),
            RecoverError::Clean(e) | RecoverError::Log(e) => e,
            RecoverError::Manifests(e) => e.into(),
            RecoverError::TwoPhase(e) => e.into(),
            RecoverError::TwoPhaseFinish(e) => e.into(),
        }
    }
}

/// Clean up after every dead process. Errors only if the store cannot be read at all; anything
/// that cannot be settled is listed in `problems` and left as it was.
pub fn recover(store: &Store) -> Result<RecoverReport, RecoverError> {
    let layout = store.layout().clone();
    let cfg = store.config().clone();
    let lcfg = cfg.lease_config();
    let me = store.lease().id().clone();
    let mut report = RecoverReport::default();
    let now = SystemTime::now();

    let mut entries = lease::list(&layout.leases())?;
    // Abandoned claims last: a claim can be taken over only once its dead cleaner's own lease
    // is claimed, which this same pass does first. (In listing order it was a coin toss whether
    // a recover killed while cleaning was itself cleaned before or after its claim was looked
    // at, leaving `<id>.claimed-<dead recover>` until the next pass.)
    entries.sort_by_key(|e| matches!(e.state, LeaseState::Claimed { .. }));
    for entry in entries {
        if entry.id == me {
            continue;
        }
        let claimed = match &entry.state {
            LeaseState::Live => {
                let l = entry.liveness(&lcfg, now);
                if !l.is_dead() {
                    continue;
                }
                // Claim under the log lock: every commit of the dead process either happened
                // before this point or is refused by the fence check ([FENCE-1]).
                let res = store
                    .log()
                    .exclusive(|_| lease::claim(&layout.leases(), &entry.id, &me))
                    .map_err(Error::from)?;
                match res? {
                    Some(c) => {
                        report
                            .leases_cleaned
                            .push((entry.id.to_string(), format!("{l:?}")));
                        c
                    }
                    None => continue,
                }
            }
            LeaseState::Claimed { cleaner } => {
                if cleaner == &me || lease::is_live_lease(&layout.leases(), cleaner) {
                    continue;
                }
                match lease::reclaim_abandoned(&layout.leases(), &entry.id, cleaner, &me) {
                    Ok(Some(c)) => {
                        report.leases_cleaned.push((
                            entry.id.to_string(),
                            format!("abandoned by cleaner {cleaner}"),
                        ));
                        c
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        report.problems.push(e.to_string());
                        continue;
                    }
                }
            }
            LeaseState::Partial => {
                if !entry.liveness(&lcfg, now).is_dead() {
                    continue;
                }
                match lease::claim_partial(&layout.leases(), &entry.id, &me)? {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        clean_claimed(store, claimed, &mut report).map_err(RecoverError::Clean)?;
    }

    let is_dead = |id: &LeaseId| !lease::is_live_lease(&layout.leases(), id);
    let m = manifest::recover(&layout.manifests(), &is_dead)?;
    report.manifests_rolled_forward += m.rolled_forward.len();
    report.manifests_rolled_back += m.rolled_back.len();
    for p in m.problems {
        report
            .problems
            .push(format!("manifest {}: {}", p.id.as_str(), p.reason));
    }

    for t in two_phase::recover(&layout.twopc(), &is_dead)? {
        let Ok(decision) = &t.decision else {
            report
                .problems
                .push(format!("two-phase commit {}: {:?}", t.txn, t.decision));
            continue;
        };
        let kind = t
            .proposal
            .as_ref()
            .map(|p| p.kind.clone())
            .unwrap_or_default();
        // A committed log truncation of a dead coordinator is finished here; it is idempotent.
        if let (Some(p), false, true) = (&t.proposal, t.done, decision.is_commit()) {
            if p.kind == PROPOSAL_LOG_TRUNCATE {
                if let Some(lsn) = p.payload.get("lsn").and_then(|v| v.as_u64()) {
                    for seg in store
                        .log()
                        .segments_covered_by(verfs_coordination::txlog::Lsn(lsn))
                        .map_err(Error::from)?
                    {
                        let _ = verfs_coordination::io_site!(
                            "recover.log-truncate-unlink",
                            fs::remove_file(seg)
                        );
                    }
                }
            }
        }
        report
            .two_phase_decided
            .push(format!("{} {kind} -> {decision:?}", t.txn));
        two_phase::finish(&layout.twopc(), &t.txn)?;
    }

    // A dead writer's torn log tail: the next commit would cut it; do it now so fsck is clean.
    store.log().exclusive(|_| ()).map_err(Error::from)?;
    finish_gc(store, &mut report);
    remove_dead_temps(store, &lcfg, &mut report);
    Ok(report)
}

/// Claim and clean up after one lease, if its process is dead. Used by a two-phase-commit
/// coordinator for a participant that stopped answering. `Ok(false)` when it is alive or another
/// cleaner got it first.
pub fn clean_lease(store: &Store, id: &LeaseId) -> Result<bool, Error> {
    let cfg = store.config();
    let lcfg = cfg.lease_config();
    let leases = store.layout().leases();
    let Some(entry) = lease::list(&leases)
        .map_err(Error::coordination)?
        .into_iter()
        .find(|e| &e.id == id && e.state == LeaseState::Live)
    else {
        return Ok(false);
    };
    if !entry.liveness(&lcfg, SystemTime::now()).is_dead() {
        return Ok(false);
    }
    let me = store.lease().id().clone();
    let Some(claimed) = store
        .log()
        .exclusive(|_| lease::claim(&leases, id, &me))?
        .map_err(Error::coordination)?
    else {
        return Ok(false);
    };
    let mut report = RecoverReport::default();
    clean_claimed(store, claimed, &mut report)?;
    Ok(report.problems.is_empty())
}

fn clean_claimed(store: &Store, claimed: Claimed, report: &mut RecoverReport) -> Result<(), Error> {
    let packs = store.layout().packs();
    let problems_before = report.problems.len();
    match journal::read_pending(&claimed.journal_path()) {
        Ok(p) => {
            if let Some(c) = &p.corrupt {
                report.problems.push(format!(
                    "{} at byte {}: corrupt journal record ({}); actions after it are unknown",
                    claimed.journal_path().display(),
                    c.offset,
                    c.reason
                ));
            }
            for a in p.pending {
                // The payload parsed by `parse`, or a problem naming the action.
                let mut arg = |parse: &dyn Fn(&str) -> Option<u64>| {
                    let v = std::str::from_utf8(&a.payload).ok().and_then(parse);
                    if v.is_none() {
                        report.problems.push(format!(
                            "{} action with bad payload {:?}",
                            a.kind, a.payload
                        ));
                    }
                    v
                };
                match a.kind.as_str() {
                    ACTION_OPEN_PACK => {
                        let Some(id) = arg(&|s| s.parse::<PackId>().ok().map(|p| p.0)) else {
                            continue;
                        };
                        seal_dead_pack(&packs, PackId(id), report)?;
                    }
                    ACTION_ORPHAN => {
                        let Some(ino) = arg(&|s| s.parse::<u64>().ok()) else {
                            continue;
                        };
                        // The dead process had it open after its last unlink: nobody can reach
                        // it. Still linked: the unlink journaled first never committed.
                        let deleted = store.transact(true, |tx| {
                            let orphan = tx.inode(InodeNo(ino))?.map(|i| i.nlink) == Some(0);
                            if orphan {
                                tx.delete_inode(InodeNo(ino));
                            }
                            Ok(orphan)
                        })?;
                        if deleted {
                            report.orphans_deleted += 1;
                        }
                    }
                    ACTION_SNAPSHOT => {
                        let Some(id) = arg(&|s| u64::from_str_radix(s, 16).ok()) else {
                            continue;
                        };
                        // [SNAP-3]: not ready means its creator never finished: drop it. Its file
                        // (if the manifest rolls forward) is removed as stale below.
                        let dropped = store.transact(true, |tx| {
                            let pending = tx.base().snapshots.get(&id).filter(|s| !s.ready);
                            let name =
                                pending.map(|s| String::from_utf8_lossy(&s.name).into_owned());
                            if name.is_some() {
                                tx.snapshot_op(crate::meta::Op::SnapshotDrop { id });
                            }
                            Ok(name)
                        })?;
                        if let Some(n) = dropped {
                            report.snapshots_dropped.push(n);
                        }
                    }
                    ACTION_GC_REWRITE => {
                        report
                            .gc_rewrites_interrupted
                            .push(String::from_utf8_lossy(&a.payload).into_owned());
                    }
                    other => report.problems.push(format!(
                        "{}: unknown journal action {other:?} left as it is",
                        claimed.journal_path().display()
                    )),
                }
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    // Only a fully cleaned lease is removed; otherwise it stays claimed for a later attempt.
    if report.problems.len() == problems_before {
        claimed.finish().map_err(Error::coordination)?;
    }
    Ok(())
}

fn seal_dead_pack(packs: &Path, id: PackId, report: &mut RecoverReport) -> Result<(), Error> {
    let path = pack::pack_path(packs, id);
    if !path.exists() {
        // Died between the journal entry and creating the file, or already cleaned and removed.
        return Ok(());
    }
    match pack::seal_abandoned(packs, id) {
        Ok(cut) => report.packs_sealed.push((id.to_string(), cut)),
        Err(e) => report.problems.push(e.to_string()),
    }
    Ok(())
}

/// What a GC that died leaves besides its manifests: snapshot files nothing names, and torn
/// `.discard` tails. The tails are cut only under the `gc` lock in EX (a live GC appends under it),
/// so while a GC runs they are left for it.
fn finish_gc(store: &Store, report: &mut RecoverReport) {
    let mut gc_report = crate::ops::gc::GcReport::default();
    if let Err(e) = crate::ops::gc::sweep_pages(store, &mut gc_report) {
        report.problems.push(format!("metadata page sweep: {e}"));
    }
    report.stale_files_removed += gc_report.stale_files_removed + gc_report.page_files_removed;
    let table = match verfs_coordination::lock::LockTable::open(&store.layout().root.join("locks"))
        .and_then(|t| t.owner())
    {
        Ok(o) => o,
        Err(e) => {
            report.problems.push(format!("lock table: {e}"));
            return;
        }
    };
    let gc = verfs_coordination::lock::Resource::Named(LOCK_GC.into());
    if table
        .try_acquire(&gc, verfs_coordination::lock::Mode::Ex)
        .is_err()
    {
        return;
    }
    let packs = store.layout().packs();
    if let Ok(rd) = fs::read_dir(&packs) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".discard")
                .and_then(|h| h.parse::<PackId>().ok())
            else {
                continue;
            };
            match crate::ops::gc::repair_discard(&packs, id) {
                Ok(Some(at)) => report.discard_tails_cut.push((name, at)),
                Ok(None) => {}
                Err(e) => report.problems.push(e.to_string()),
            }
        }
    }
    let _ = table.release(&gc);
}

/// Temp files (`.NAME.tmp-PID-RAND`) whose writer is gone: the pid is not running on this host.
/// Temp names carry no node, so while a process of another node or boot holds a live lease, a
/// temp file must also be older than the lease timeout (a writer elsewhere with the same pid
/// would have finished long ago); on a single host the pid alone decides, so one `recover` leaves
/// nothing for a second one to do.
fn remove_dead_temps(store: &Store, cfg: &LeaseConfig, report: &mut RecoverReport) {
    let l = store.layout();
    let now = SystemTime::now();
    let others_alive = lease::list(&l.leases())
        .map(|entries| {
            entries.iter().any(|e| match &e.info {
                lease::EntryInfo::Valid(i) => {
                    !lease::runs_here(i) && !e.liveness(cfg, now).is_dead()
                }
                _ => false,
            })
        })
        .unwrap_or(true);
    let min_age = if others_alive {
        cfg.timeout.max(Duration::from_secs(1))
    } else {
        Duration::ZERO
    };
    for dir in [
        l.root.clone(),
        l.checkpoints(),
        l.packs(),
        l.log(),
        l.leases(),
        l.twopc(),
        l.manifests(),
    ] {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !fsutil::is_temp_name(&name) {
                continue;
            }
            let Some(pid) = fsutil::temp_name_pid(&name) else {
                continue;
            };
            let running = Path::new(&format!("/proc/{pid}")).exists();
            let old_enough = min_age.is_zero()
                || e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map(|a| a >= min_age)
                    .unwrap_or(false);
            if !running
                && old_enough
                && verfs_coordination::io_site!("recover.temp-unlink", fs::remove_file(e.path()))
                    .is_ok()
            {
                report
                    .temp_files_removed
                    .push(e.path().display().to_string());
            }
        }
    }
}
