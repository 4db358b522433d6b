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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use verfs_coordination::lock::{LockOwner, LockTable, Mode, Resource, Wait};
use verfs_coordination::manifest::Manifest;
use verfs_coordination::two_phase;
use verfs_coordination::{fsutil, io_site};

use crate::error::Error;
use crate::format::discard as dfmt;
use crate::format::pack::{self as pfmt, IndexEntry, PackHeader, PackIndex, RECORD_HEADER_LEN};
use crate::ids::{ChunkId, PackId};
use crate::pack::{self, index_path, pack_path};
use crate::snapshot;
use crate::store::{Store, PROPOSAL_GC_REWRITE};

pub use crate::format::discard::{
    Discard, DISCARD_ENTRY_LEN, DISCARD_HEADER_LEN, DISCARD_MAGIC, DISCARD_RECORD_HEADER_LEN,
    DISCARD_RECORD_MAGIC, DISCARD_VERSION,
};

/// Journal action kind while this process rewrites a pack; payload: the pack id.
pub const ACTION_GC_REWRITE: &str = "gc-rewrite";
/// DLM resource: stage 1 holds it in EX, stage 2 in PR.
pub const LOCK_GC: &str = "gc";

/// `packs/<id>.discard`.
pub fn discard_path(packs_dir: &Path, id: PackId) -> PathBuf {
    packs_dir.join(format!("{id}.discard"))
}

fn pack_lock(id: PackId) -> Resource {
    Resource::Named(format!("gc-pack:{id}"))
}

// ---------------------------------------------------------------------------------------------
// The `.discard` file

/// Parse a `.discard` file's bytes ([GC-7]): [`crate::format::discard::parse`], errors naming
/// `path`.
pub fn parse_discard(path: &Path, id: PackId, b: &[u8]) -> Result<Discard, Error> {
    dfmt::parse(id, b).map_err(Error::corrupt(path))
}

/// Read `packs/<id>.discard` (absent: empty).
pub fn read_discard(packs_dir: &Path, id: PackId) -> Result<Discard, Error> {
    let path = discard_path(packs_dir, id);
    match fs::read(&path) {
        Ok(b) => parse_discard(&path, id, &b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Discard::default()),
        Err(e) => Err(Error::io(&path)(e)),
    }
}

/// Append a batch of newly found garbage and a checkpoint record to `packs/<id>.discard`,
/// creating it, or cutting a torn tail first. Only under `gc` in EX ([GC-7]).
fn append_discard(
    packs_dir: &Path,
    id: PackId,
    existing: &Discard,
    batch: &[(ChunkId, u32)],
    lsn: u64,
) -> Result<(), Error> {
    let path = discard_path(packs_dir, id);
    let io = Error::io(&path);
    let mut f = io_site!(
        "gc.discard-create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    )
    .map_err(Error::io(&path))?;
    let len = f.metadata().map_err(Error::io(&path))?.len();
    let mut start = existing.valid_len;
    if start < DISCARD_HEADER_LEN as u64 {
        io_site!("gc.discard-reset-truncate", f.set_len(0)).map_err(Error::io(&path))?;
        io_site!(
            "gc.discard-header-write",
            f.write_all_at(&dfmt::encode_header(id), 0)
        )
        .map_err(Error::io(&path))?;
        start = DISCARD_HEADER_LEN as u64;
    } else if len != start {
        io_site!("gc.discard-cut-truncate", f.set_len(start)).map_err(Error::io(&path))?;
    }
    let out = dfmt::encode_append(batch, lsn);
    io_site!("gc.discard-write", f.write_all_at(&out, start)).map_err(Error::io(&path))?;
    io_site!("gc.discard-fsync", f.sync_data()).map_err(io)?;
    if existing.valid_len == 0 {
        fsutil::fsync_dir(packs_dir).map_err(Error::io(packs_dir))?;
    }
    let _ = f.flush();
    Ok(())
}

/// Cut a torn tail of a `.discard` file left by a GC that died ([GC-7]); only under `gc` EX.
pub fn repair_discard(packs_dir: &Path, id: PackId) -> Result<Option<u64>, Error> {
    let d = read_discard(packs_dir, id)?;
    let Some(at) = d.torn_at else { return Ok(None) };
    let path = discard_path(packs_dir, id);
    if at < DISCARD_HEADER_LEN as u64 {
        io_site!("gc.discard-repair-unlink", fs::remove_file(&path)).map_err(Error::io(&path))?;
    } else {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        io_site!("gc.discard-repair-truncate", f.set_len(at)).map_err(Error::io(&path))?;
        io_site!("gc.discard-repair-fsync", f.sync_all()).map_err(Error::io(&path))?;
    }
    Ok(Some(at))
}

// ---------------------------------------------------------------------------------------------
// A pass

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
    /// Snapshot files and orphaned `.idx`/`.discard` files removed.
    pub stale_files_removed: u64,
    /// What the pass first cleaned up after dead processes ([GC-8]): dead leases, manifests
    /// settled (an interrupted rewrite rolled forward or back), two-phase commits decided.
    pub recovered: Vec<String>,
    pub millis: u64,
    pub problems: Vec<String>,
}

/// Progress of a pass: (what, done, total).
pub type GcProgress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Per sealed pack: its file length, index, and which of its records are garbage now.
struct PackState {
    id: PackId,
    len: u64,
    entries: Vec<IndexEntry>,
    garbage: Vec<(ChunkId, u32)>,
    garbage_bytes: u64,
}

fn lock_owner(store: &Store) -> Result<LockOwner, Error> {
    let t = LockTable::open(&store.layout().root.join("locks")).map_err(Error::coordination)?;
    t.owner().map_err(Error::coordination)
}

/// One full pass: stage 1 then stage 2. Safe beside any number of other processes, including
/// other GC passes.
pub fn run_pass(store: &Store, progress: GcProgress<'_>) -> Result<GcReport, Error> {
    let t0 = Instant::now();
    let mut report = GcReport::default();
    // [GC-8]: a GC (or anything else) that died is finished or undone first, so an interrupted
    // rewrite never blocks this pass, whether or not `verfs recover` ran.
    let rec = crate::recover::recover(store)?;
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
    let owner = lock_owner(store)?;
    let gc = Resource::Named(LOCK_GC.into());
    let packs = {
        owner
            .acquire(&gc, Mode::Ex, Wait::Forever)
            .map_err(Error::coordination)?;
        let r = stage1(store, &mut report, progress);
        let _ = owner.release(&gc);
        r?
    };
    crate::crash_point("gc-after-stage1");
    owner
        .acquire(&gc, Mode::Pr, Wait::Forever)
        .map_err(Error::coordination)?;
    let r = stage2(store, &owner, packs, &mut report, progress);
    let _ = owner.release(&gc);
    r?;
    report.millis = t0.elapsed().as_millis() as u64;
    Ok(report)
}

fn stage1(
    store: &Store,
    report: &mut GcReport,
    progress: GcProgress<'_>,
) -> Result<Vec<PackState>, Error> {
    let layout = store.layout().clone();
    // Snapshots: all must be ready ([GC-2]); a pending one's references are unknown.
    let snaps = store.snapshots()?;
    let pending: Vec<&String> = snaps
        .iter()
        .filter(|(_, (_, i))| !i.ready)
        .map(|(n, _)| n)
        .collect();
    if let Some(n) = pending.first() {
        report.stage1_skipped = Some(format!(
            "snapshot {n} is being created (or its creator died: `verfs recover` drops it)"
        ));
    } else {
        let mut snap_refs: HashSet<ChunkId> = HashSet::new();
        let ids: Vec<u64> = snaps.values().map(|(id, _)| *id).collect();
        for (i, id) in ids.iter().enumerate() {
            progress("reading snapshots", i as u64, ids.len() as u64);
            snap_refs.extend(store.snapshot_tree(*id)?.referenced_chunks());
        }
        let candidates: HashSet<ChunkId> = store.read(|s| {
            // Every inode counts, orphans included.
            let live = s.referenced_chunks();
            s.chunks
                .keys()
                .filter(|c| !live.contains(c) && !snap_refs.contains(c))
                .copied()
                .collect()
        })?;
        if !candidates.is_empty() {
            progress("removing unreferenced chunks", 0, candidates.len() as u64);
            let used: HashSet<u64> = ids.iter().copied().collect();
            // [GC-1]: re-checked under the log lock against the head: a writer may have
            // committed a reference (dedup) since the candidates were computed.
            let res = store.transact(true, |tx| {
                let base = tx.base();
                let now: HashSet<u64> = base.snapshots.keys().copied().collect();
                if now != used || base.snapshots.values().any(|s| !s.ready) {
                    return Ok(None);
                }
                let mut left = candidates;
                for x in base.extents.values().flatten() {
                    left.remove(&x.chunk);
                }
                let mut bytes = 0u64;
                let ids: Vec<ChunkId> = left
                    .into_iter()
                    .filter(|c| match base.chunks.get(c) {
                        Some(e) => {
                            bytes += u64::from(e.raw_len);
                            true
                        }
                        None => false,
                    })
                    .collect();
                for c in &ids {
                    tx.remove_chunk(*c);
                }
                Ok(Some((ids.len() as u64, bytes)))
            })?;
            match res {
                Some((n, b)) => {
                    report.chunks_removed = n;
                    report.chunk_bytes_removed = b;
                }
                None => {
                    report.stage1_skipped =
                        Some("snapshots changed during the pass; the next pass retries".into())
                }
            }
        }
    }
    remove_stale_snapshot_files(store, report);

    // The sweep: every sealed pack against the index.
    let listing = pack::list_packs(&layout.packs()).map_err(Error::from)?;
    for id in &listing.orphan_indexes {
        if io_site!(
            "gc.orphan-index-unlink",
            fs::remove_file(index_path(&layout.packs(), *id))
        )
        .is_ok()
        {
            report.stale_files_removed += 1;
        }
    }
    let (index, lsn) = store.log().read(|s, lsn| {
        (
            s.chunks
                .iter()
                .map(|(c, e)| (*c, e.pack))
                .collect::<HashMap<ChunkId, PackId>>(),
            lsn.0,
        )
    })?;
    let mut out = Vec::new();
    let total = listing.packs.len() as u64;
    let present: HashSet<PackId> = listing.packs.iter().copied().collect();
    remove_orphan_discards(&layout.packs(), &present, report);
    for (i, id) in listing.packs.iter().enumerate() {
        progress("sweeping packs", i as u64, total);
        let ipath = index_path(&layout.packs(), *id);
        let bytes = match fs::read(&ipath) {
            Ok(b) => b,
            // Not sealed: an open pack of a live process (or of a dead one, for recover).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                report.problems.push(format!("{}: {e}", ipath.display()));
                continue;
            }
        };
        let idx = match PackIndex::decode(&bytes) {
            Ok(x) if x.pack_id == *id => x,
            Ok(_) | Err(_) => {
                report.problems.push(format!(
                    "{}: damaged index; pack left alone (`verfs fsck` reports it)",
                    ipath.display()
                ));
                continue;
            }
        };
        let len = match fs::metadata(pack_path(&layout.packs(), *id)) {
            Ok(m) => m.len(),
            Err(_) => continue,
        };
        // A GC killed between the renames of its rewrite's manifest leaves the new `.pack` under
        // the old `.idx` until `verfs recover` rolls it forward: the old index reaches past the
        // end of the (smaller) new pack. Rewriting from it would read past the end and fail the
        // whole stage 2, pass after pass.
        let end = idx
            .entries
            .iter()
            .map(|e| e.offset + RECORD_HEADER_LEN as u64 + u64::from(e.stored_len))
            .max()
            .unwrap_or(0);
        if end > len {
            report.problems.push(format!(
                "{}: its index reaches byte {end} of a {len}-byte pack (a GC rewrite left \
                 unfinished by a dead process? `verfs recover` settles it); pack left alone",
                ipath.display()
            ));
            continue;
        }
        let disc = match read_discard(&layout.packs(), *id) {
            Ok(d) => d,
            Err(e) => {
                // Derived data: rebuild it from the index.
                report.problems.push(format!("{e}; rebuilt"));
                let _ = fs::remove_file(discard_path(&layout.packs(), *id));
                Discard::default()
            }
        };
        let mut garbage = Vec::new();
        let mut garbage_bytes = 0u64;
        let mut new = Vec::new();
        for e in &idx.entries {
            if index.get(&e.chunk_id) != Some(id) {
                garbage.push((e.chunk_id, e.stored_len));
                garbage_bytes += RECORD_HEADER_LEN as u64 + u64::from(e.stored_len);
                if !disc.ids.contains_key(&e.chunk_id) {
                    new.push((e.chunk_id, e.stored_len));
                }
            }
        }
        if !new.is_empty() || disc.torn_at.is_some() {
            append_discard(&layout.packs(), *id, &disc, &new, lsn)?;
            report.discarded_records += new.len() as u64;
        }
        report.packs_examined += 1;
        report.garbage_bytes += garbage_bytes;
        report.garbage_bytes_left += garbage_bytes;
        report.packs_with_garbage_left += u64::from(garbage_bytes > 0);
        out.push(PackState {
            id: *id,
            len,
            entries: idx.entries,
            garbage,
            garbage_bytes,
        });
    }
    Ok(out)
}

/// Snapshot files whose id the metadata no longer lists (deleted, or dropped by recover).
pub(crate) fn remove_stale_snapshot_files(store: &Store, report: &mut GcReport) {
    let dir = store.layout().snapshots();
    let Ok(rd) = fs::read_dir(&dir) else { return };
    let files: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let id = snapshot::id_of_name(e.file_name().to_str()?)?;
            Some((id, e.path()))
        })
        .collect();
    // Read the state after listing: a file's SnapshotBegin is committed before the file exists.
    let Ok(known) = store.read(|s| s.snapshots.keys().copied().collect::<HashSet<u64>>()) else {
        return;
    };
    for (id, path) in files {
        if !known.contains(&id)
            && io_site!("gc.stale-snapshot-unlink", fs::remove_file(&path)).is_ok()
        {
            report.stale_files_removed += 1;
        }
    }
}

fn remove_orphan_discards(packs_dir: &Path, present: &HashSet<PackId>, report: &mut GcReport) {
    let Ok(rd) = fs::read_dir(packs_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_suffix(".discard")
            .and_then(|h| h.parse::<PackId>().ok())
        {
            if !present.contains(&id)
                && io_site!("gc.orphan-discard-unlink", fs::remove_file(e.path())).is_ok()
            {
                report.stale_files_removed += 1;
            }
        }
    }
}

fn stage2(
    store: &Store,
    owner: &LockOwner,
    packs: Vec<PackState>,
    report: &mut GcReport,
    progress: GcProgress<'_>,
) -> Result<(), Error> {
    let threshold = store.config().gc.rewrite_threshold;
    let chosen: Vec<PackState> = packs
        .into_iter()
        .filter(|p| {
            let all_garbage = p.garbage.len() == p.entries.len();
            // A sealed pack with no record at all (what a write that failed with ENOSPC before
            // its first record leaves) is all garbage too: deleted, not kept forever.
            (p.entries.is_empty() || !p.garbage.is_empty())
                && (all_garbage || p.garbage_bytes as f64 >= threshold * p.len as f64)
        })
        .collect();
    let mut mine = Vec::new();
    for p in chosen {
        // [GC-3]: one worker per pack.
        match owner.try_acquire(&pack_lock(p.id), Mode::Ex) {
            Ok(()) => mine.push(p),
            Err(_) => report.packs_busy += 1,
        }
    }
    if mine.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = mine.iter().map(|p| p.id.to_string()).collect();
    let payload = serde_json::json!({ "packs": ids });
    if let two_phase::Vote::Abort { reason } = store.own_vote(PROPOSAL_GC_REWRITE, &payload) {
        report.stage2_refused = Some(format!("this process: {reason}"));
        release_all(owner, &mine);
        return Ok(());
    }
    let outcome = store.propose(PROPOSAL_GC_REWRITE, payload);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            release_all(owner, &mine);
            return Err(e);
        }
    };
    let mut result = Ok(());
    if let two_phase::Decision::Abort { reason } = &outcome.decision {
        report.stage2_refused = Some(reason.clone());
    } else {
        let total = mine.len() as u64;
        for (i, p) in mine.iter().enumerate() {
            progress("rewriting packs", i as u64, total);
            if let Err(e) = rewrite(store, p, report) {
                result = Err(e);
                break;
            }
        }
    }
    let fin = two_phase::finish(&store.layout().twopc(), &outcome.txn).map_err(Error::coordination);
    release_all(owner, &mine);
    result.and(fin)
}

fn release_all(owner: &LockOwner, packs: &[PackState]) {
    for p in packs {
        let _ = owner.release(&pack_lock(p.id));
    }
}

/// Rewrite (or remove) one pack after the two-phase commit decided Commit.
fn rewrite(store: &Store, p: &PackState, report: &mut GcReport) -> Result<(), Error> {
    let packs_dir = store.layout().packs();
    let path = pack_path(&packs_dir, p.id);
    // Under this pack's lock nobody else changes it, but another worker may have rewritten it
    // since this pass swept it: read its files again.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let len = file.metadata().map_err(Error::io(&path))?.len();
    let ipath = index_path(&packs_dir, p.id);
    let idx = fs::read(&ipath).map_err(Error::io(&ipath)).and_then(|b| {
        PackIndex::decode(&b).map_err(|e| Error::Corrupt {
            path: ipath.clone(),
            offset: e.at,
            reason: e.reason,
        })
    })?;
    if idx.pack_id != p.id || len != p.len {
        // Rewritten by another worker since the sweep; the next pass looks at it again.
        return Ok(());
    }
    // Survivors by the index after the decision ([GC-4]): a chunk re-indexed in this pack by an
    // operation that was in flight before stage 1 stays.
    let keep: Vec<IndexEntry> = store.read(|s| {
        idx.entries
            .iter()
            .filter(|e| s.chunks.get(&e.chunk_id).map(|c| c.pack) == Some(p.id))
            .copied()
            .collect()
    })?;
    if keep.len() == idx.entries.len() && !keep.is_empty() {
        return Ok(());
    }
    let action = store
        .journal
        .begin(ACTION_GC_REWRITE, p.id.to_string().as_bytes())
        .map_err(Error::coordination)?;
    let res = (|| {
        let mut m = Manifest::begin(&store.layout().manifests(), store.lease().id());
        let new_len;
        if keep.is_empty() {
            m.stage_remove(&path).map_err(Error::coordination)?;
            m.stage_remove(&index_path(&packs_dir, p.id))
                .map_err(Error::coordination)?;
            new_len = 0;
        } else {
            let mut bytes = PackHeader { pack_id: p.id }.encode().to_vec();
            let mut entries = Vec::with_capacity(keep.len());
            let mut sorted = keep.clone();
            sorted.sort_by_key(|e| e.offset);
            for e in &sorted {
                let n = RECORD_HEADER_LEN + e.stored_len as usize;
                let mut rec = vec![0u8; n];
                file.read_exact_at(&mut rec, e.offset)
                    .map_err(Error::io(&path))?;
                let (h, payload) = rec.split_at(RECORD_HEADER_LEN);
                // A damaged live record is not copied: the pack stays as it is, for the
                // scrubber and fsck to report, instead of moving the damage around.
                let hdr = pfmt::RecordHeader::decode(h).ok();
                if hdr.map(|h| h.chunk_id) != Some(e.chunk_id)
                    || !pfmt::check_record_crc(h, payload)
                {
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        offset: e.offset,
                        reason: format!(
                            "record of live chunk {} is damaged; pack not rewritten",
                            e.chunk_id
                        ),
                    });
                }
                entries.push(IndexEntry {
                    offset: bytes.len() as u64,
                    ..*e
                });
                bytes.extend_from_slice(&rec);
            }
            let idx = PackIndex::new(p.id, entries).encode();
            new_len = bytes.len() as u64;
            m.stage(&path, &bytes).map_err(Error::coordination)?;
            m.stage(&index_path(&packs_dir, p.id), &idx)
                .map_err(Error::coordination)?;
        }
        m.stage_remove(&discard_path(&packs_dir, p.id))
            .map_err(Error::coordination)?;
        crate::crash_point("gc-rewrite-staged");
        if std::env::var("VERFS_CRASH_POINT").as_deref() == Ok("gc-rewrite-committed") {
            // The commit record is durable, no target renamed yet: recovery rolls forward.
            m.commit_without_apply().map_err(Error::coordination)?;
            crate::crash_point("gc-rewrite-committed");
            return Ok(new_len);
        }
        m.commit().map_err(Error::coordination)?;
        crate::crash_point("gc-rewrite-published");
        Ok(new_len)
    })();
    store.journal.end(action).map_err(Error::coordination)?;
    match res {
        Ok(new_len) => {
            report.bytes_reclaimed += len.saturating_sub(new_len);
            // The rewrite kept only live records (or deleted the pack): none of its garbage is left.
            report.garbage_bytes_left = report.garbage_bytes_left.saturating_sub(p.garbage_bytes);
            report.packs_with_garbage_left = report
                .packs_with_garbage_left
                .saturating_sub(u64::from(p.garbage_bytes > 0));
            if new_len == 0 {
                report.packs_deleted += 1;
            } else {
                report.packs_rewritten += 1;
            }
            Ok(())
        }
        Err(e @ Error::Corrupt { .. }) => {
            report.problems.push(e.to_string());
            Ok(())
        }
        Err(e) => Err(e),
    }
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
        on_pass(r);
        let until = Instant::now() + interval;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> (PackId, Vec<u8>) {
        let id = PackId(0x1234_5678_9abc_def0);
        let a: Vec<(ChunkId, u32)> = (1..4u128)
            .map(|i| (ChunkId(i * 77), i as u32 * 10))
            .collect();
        let d = read_discard(dir, id).unwrap();
        append_discard(dir, id, &d, &a, 5).unwrap();
        let d = read_discard(dir, id).unwrap();
        append_discard(dir, id, &d, &[(ChunkId(999), 7)], 9).unwrap();
        (id, fs::read(discard_path(dir, id)).unwrap())
    }

    // proves [GC-7]
    #[test]
    fn discard_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let d = parse_discard(Path::new("x"), id, &bytes).unwrap();
        assert_eq!(d.ids.len(), 4);
        assert_eq!(d.ids[&ChunkId(999)], 7);
        assert_eq!(d.checkpoint_lsn, Some(9));
        assert_eq!(d.unconfirmed, 0);
        assert_eq!(d.torn_at, None);
        assert_eq!(d.valid_len, bytes.len() as u64);
    }

    // proves [GC-7]: every cut is a torn tail at a record boundary, never corruption, and the
    // next append after a cut produces a valid file.
    #[test]
    fn discard_every_truncation_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        for n in 0..bytes.len() {
            let d = parse_discard(Path::new("x"), id, &bytes[..n])
                .unwrap_or_else(|e| panic!("cut at {n}: {e}"));
            let at = d.torn_at.unwrap_or(n as u64);
            assert!(at <= n as u64, "cut at {n}");
            fs::write(discard_path(dir.path(), id), &bytes[..n]).unwrap();
            repair_discard(dir.path(), id).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert_eq!(d.torn_at, None, "cut at {n}");
            append_discard(dir.path(), id, &d, &[(ChunkId(5), 1)], 11).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert!(
                d.ids.contains_key(&ChunkId(5)) && d.torn_at.is_none(),
                "cut at {n}"
            );
        }
    }

    // proves [GC-7]. Regression: a `.discard` file whose unsynced bytes read back as zeros
    // after a power loss (crash image "names-zero-data": the name survived, the data did not)
    // made `recover` fail with "bad magic (not a discard file)". Every zero-filled tail of
    // every length, header included, is torn; what is left is a subset of the real content.
    #[test]
    fn discard_zero_filled_tail_after_power_loss_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let good = parse_discard(Path::new("x"), id, &bytes).unwrap();
        for n in [0, 1, 23, 24, 25, bytes.len()] {
            let d = parse_discard(Path::new("x"), id, &vec![0; n]).unwrap();
            assert!(
                d.ids.is_empty() && (n == 0 || d.torn_at == Some(0)),
                "{n} zeros: {d:?}"
            );
        }
        for k in 0..bytes.len() {
            let mut b = bytes.clone();
            b[k..].iter_mut().for_each(|x| *x = 0);
            let d = parse_discard(Path::new("x"), id, &b)
                .unwrap_or_else(|e| panic!("zeros from byte {k}: {e}"));
            assert!(
                d.ids.iter().all(|(c, v)| good.ids.get(c) == Some(v)),
                "zeros from byte {k}: {d:?}"
            );
            fs::write(discard_path(dir.path(), id), &b).unwrap();
            repair_discard(dir.path(), id).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert_eq!(d.torn_at, None, "zeros from byte {k}");
        }
        // A record that fails its checks with data, not zeros, after it stays corruption.
        let mut b = bytes.clone();
        b[DISCARD_HEADER_LEN + DISCARD_RECORD_HEADER_LEN] ^= 1;
        assert!(parse_discard(Path::new("x"), id, &b).is_err());
    }

    // Every flipped byte is either reported as corruption or seen as a torn tail (cut and
    // rebuilt from the index by the next sweep); never read as different valid content.
    #[test]
    fn discard_every_flip_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let good = parse_discard(Path::new("x"), id, &bytes).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            match parse_discard(Path::new("x"), id, &b) {
                Err(_) => {}
                Ok(d) => assert!(
                    d.torn_at.is_some() && d.ids.iter().all(|(k, v)| good.ids.get(k) == Some(v)),
                    "flip at {i} accepted: {d:?}"
                ),
            }
        }
    }
}
