//! Two-stage garbage collection (`data-layout.md`, 5.10 and 6.9).
//!
//! **Stage 1 (metadata)**, under the DLM lock `gc` in EX: chunks that no live inode and no
//! snapshot references are removed from the index in one transaction that re-checks, under the
//! log lock, that nothing references them at the log head ([GC-1], [GC-2]). Then every sealed
//! pack's records are compared with the index: a record whose chunk the index does not place in
//! that pack is garbage, and new garbage ids are appended to the pack's `.discard` file, followed
//! by a checkpoint record. The index is the truth; the `.discard` file is the durable, resumable
//! account of what stage 2 may drop.
//!
//! **Stage 2 (packs)**, under `gc` in PR and `gc-pack:<id>` in EX (two workers never touch one
//! pack at once, [GC-3]): a sealed pack whose garbage share reaches `gc.rewrite_threshold` is
//! proposed to every live process (two-phase commit `gc-rewrite`); each votes Commit only if it
//! holds no in-flight reference to a dropped chunk of it ([GC-4]). Then the survivors (records
//! the index places in the pack, read after the decision) are copied verbatim into a new pack
//! that a manifest publishes under the same id, with its `.idx`, removing the `.discard` file.
//! Metadata is not touched. A pack with no survivor is removed by the same kind of manifest.

//!
//! Files: `stage1.rs` (the index and the `.discard` accounts), `stage2.rs` (the two-phase commit
//! and the pack rewrite), `discard.rs` (reading, appending and repairing `.discard` files; their
//! bytes are `format::discard`'s). A pass first runs `recover` ([GC-8]).

mod discard;
mod pages;
mod stage1;
mod stage2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use verfs_coordination::lock::{self, LockOwner, LockTable, Mode, Resource, Wait};

use crate::error::Error;
use crate::ids::PackId;
use crate::store::Store;

pub use discard::{discard_path, parse_discard, read_discard, repair_discard};
pub(crate) use pages::sweep_pages;

pub use crate::format::discard::{
    Discard, DISCARD_ENTRY_LEN, DISCARD_HEADER_LEN, DISCARD_MAGIC, DISCARD_RECORD_HEADER_LEN,
    DISCARD_RECORD_MAGIC, DISCARD_VERSION,
};
// Compatibility paths (issue 12): the names now live in `kinds`.
pub use crate::kinds::{ACTION_GC_REWRITE, LOCK_GC};

/// What one GC pass did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Chunks dropped from the index by stage 1, and their uncompressed bytes.
    pub chunks_removed: u64,
    pub chunk_bytes_removed: u64,
    /// Why stage 1 removed nothing this pass, if it was skipped.
    pub stage1_skipped: Option<String>,
    /// Garbage records newly listed in `.discard` files.
    pub discarded_records: u64,
    /// Sealed packs examined, and how many bytes of them are garbage now.
    pub packs_examined: u64,
    pub garbage_bytes: u64,
    /// Garbage still on disk after stage 2, and in how many packs (a pack that stage 2 rewrote
    /// or deleted holds none).
    pub garbage_bytes_left: u64,
    pub packs_with_garbage_left: u64,
    pub packs_rewritten: u64,
    pub packs_deleted: u64,
    /// Bytes of pack files freed on disk by stage 2.
    pub bytes_reclaimed: u64,
    /// Packs left alone because another worker was on them.
    pub packs_busy: u64,
    /// Why stage 2 did nothing this pass (the two-phase commit was refused), if so.
    pub stage2_refused: Option<String>,
    /// Orphaned `.idx`/`.discard` files and dead writers' temporary page files removed.
    pub stale_files_removed: u64,
    /// The live trees were rebuilt into one page file: (bytes of the files they spanned, bytes
    /// of their pages) before.
    pub pages_compacted: Option<(u64, u64)>,
    /// Metadata page files no root reaches, removed.
    pub page_files_removed: u64,
    /// Why the page sweep did nothing this pass, if so.
    pub pages_skipped: Option<String>,
    /// What the pass first cleaned up after dead processes ([GC-8]): dead leases, manifests
    /// settled (an interrupted rewrite rolled forward or back), two-phase commits decided.
    pub recovered: Vec<String>,
    pub millis: u64,
    pub problems: Vec<String>,
}

/// Progress of a pass: (what, done, total).
pub type GcProgress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Per sealed pack: its file length, how many records its index lists and how many of them
/// (and their bytes) are garbage now. Counts only, so a pass holds no pack's index longer than
/// it looks at it.
struct PackState {
    id: PackId,
    len: u64,
    records: usize,
    garbage: usize,
    garbage_bytes: u64,
}

fn lock_owner(store: &Store) -> Result<LockOwner, lock::OpenError> {
    LockTable::open(&store.layout().root.join("locks"))?.owner()
}

/// [`run_pass`] failed. The store is consistent whatever the step: stage 1 commits in one
/// transaction and appends `.discard` accounts that a next pass resumes, a rewrite of stage 2 is
/// a manifest that recovery rolls back or forward.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// The recovery that runs before the pass ([GC-8]) failed.
    #[error(transparent)]
    Recover(Error),
    /// Opening the lock table failed.
    #[error(transparent)]
    LockTable(lock::OpenError),
    /// Taking the `gc` lock failed ([`GcError::is_retryable`] when it is contention).
    #[error(transparent)]
    Lock(lock::AcquireError),
    /// Stage 1 (dropping unreferenced chunks from the index, `.discard` accounts) failed.
    #[error(transparent)]
    Stage1(Error),
    /// Stage 2 (the two-phase commit and the pack rewrites) failed.
    #[error(transparent)]
    Stage2(Error),
}

impl GcError {
    /// Contention on the `gc` lock, or a step that failed on contention: run the pass again.
    pub fn is_retryable(&self) -> bool {
        match self {
            GcError::Lock(e) => e.is_retryable(),
            GcError::Recover(e) | GcError::Stage1(e) | GcError::Stage2(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// This process was fenced during the pass; it must not change the store any more.
    pub fn is_fenced(&self) -> bool {
        match self {
            GcError::Recover(e) | GcError::Stage1(e) | GcError::Stage2(e) => e.is_fenced(),
            _ => false,
        }
    }
}

impl From<GcError> for Error {
    fn from(e: GcError) -> Self {
        match e {
            GcError::Recover(e) | GcError::Stage1(e) | GcError::Stage2(e) => e,
            GcError::LockTable(e) => e.into(),
            GcError::Lock(e) => e.into(),
        }
    }
}

/// One full pass: stage 1 then stage 2. Safe beside any number of other processes, including
/// other GC passes.
pub fn run_pass(store: &Store, progress: GcProgress<'_>) -> Result<GcReport, GcError> {
    let t0 = Instant::now();
    let mut report = GcReport::default();
    // [GC-8]: a GC (or anything else) that died is finished or undone first, so an interrupted
    // rewrite never blocks this pass, whether or not `verfs recover` ran.
    let rec = crate::ops::recover::recover(store).map_err(|e| GcError::Recover(e.into()))?;
    for (id, why) in &rec.leases_cleaned {
        report.recovered.push(format!("dead process {id} ({why})"));
    }
    if rec.manifests_rolled_forward + rec.manifests_rolled_back > 0 {
        report.recovered.push(format!(
            "manifests: {} rolled forward, {} rolled back",
            rec.manifests_rolled_forward, rec.manifests_rolled_back
        ));
    }
    report
        .recovered
        .extend(rec.two_phase_decided.iter().cloned());
    for n in &rec.snapshots_dropped {
        report
            .recovered
            .push(format!("dropped snapshot {n} (its creator died)"));
    }
    report.stale_files_removed += rec.stale_files_removed;
    report
        .problems
        .extend(rec.problems.iter().map(|p| format!("recovery: {p}")));
    let owner = lock_owner(store).map_err(GcError::LockTable)?;
    let gc = Resource::Named(LOCK_GC.into());
    let packs = {
        owner
            .acquire(&gc, Mode::Ex, Wait::Forever)
            .map_err(GcError::Lock)?;
        let r = stage1::stage1(store, &mut report, progress);
        let _ = owner.release(&gc);
        r.map_err(GcError::Stage1)?
    };
    crate::failpoint::crash_point("gc-after-stage1");
    owner
        .acquire(&gc, Mode::Pr, Wait::Forever)
        .map_err(GcError::Lock)?;
    let r = stage2::stage2(store, &owner, packs, &mut report, progress);
    let _ = owner.release(&gc);
    r.map_err(GcError::Stage2)?;
    report.millis = t0.elapsed().as_millis() as u64;
    Ok(report)
}

/// `verfs gc --worker`: a pass every `gc.interval_ms` until `stop` is set (checked every 100 ms
/// and between the steps of a pass's caller). Each pass's report goes to `on_pass`.
pub fn run_worker(
    store: &Store,
    stop: &AtomicBool,
    on_pass: &mut dyn FnMut(Result<GcReport, Error>),
) {
    let interval = Duration::from_millis(store.config().gc.interval_ms);
    while !stop.load(Ordering::SeqCst) {
        let r = run_pass(store, &mut |_, _, _| {});
        on_pass(r.map_err(Error::from));
        let until = Instant::now() + interval;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
    }
}
