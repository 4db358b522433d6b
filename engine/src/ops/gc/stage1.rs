//! GC stage 1, under `gc` in EX: drop unreferenced chunks from the index ([GC-1], [GC-2]), then
//! account each sealed pack's garbage in its `.discard` file.

use std::collections::HashSet;
use std::fs::{self};
use std::path::Path;

use verfs_coordination::io_site;

use crate::error::Error;
use crate::format::pack::{PackIndex, RECORD_HEADER_LEN};
use crate::ids::{ChunkId, PackId};
use crate::meta::{ChunkFilter, MetaState};
use crate::pack::{self, index_path, pack_path};
use crate::store::Store;

use super::discard::{append_discard, discard_path, read_discard};
use super::{Discard, GcProgress, GcReport, PackState};

/// Candidates removed from the index per transaction: bounds the memory they take (16 bytes
/// each) and the time each commit holds the log lock.
const REMOVE_BATCH: usize = 1 << 20;

pub(super) fn stage1(
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
        let ids: Vec<u64> = snaps.values().map(|(id, _)| *id).collect();
        remove_unreferenced(store, &ids, report, progress)?;
    }
    if let Err(e) = super::pages::compact_pages(store, report) {
        report.problems.push(format!("metadata compaction: {e}"));
    }
    if let Err(e) = super::pages::sweep_pages(store, report) {
        report.problems.push(format!("metadata page sweep: {e}"));
    }
    sweep_packs(store, &layout, report, progress)
}

/// Drop from the index every chunk that neither the live tree nor a snapshot (`snaps`, all
/// ready) references. The references are marked into a [`ChunkFilter`] (a few bytes per chunk,
/// each page shared by several trees read once); a chunk the filter does not hold is certainly
/// unreferenced in the view it was built from. Each batch of such candidates is re-checked in its
/// transaction against what the head references beyond that view ([GC-1]: a writer may have
/// committed a reference, a dedup, since), which costs the changes since the view, not the store.
fn remove_unreferenced(
    store: &Store,
    snaps: &[u64],
    report: &mut GcReport,
    progress: GcProgress<'_>,
) -> Result<(), Error> {
    let view: MetaState = store.read(|s| s.clone())?;
    let mut filter = ChunkFilter::for_chunks(view.chunk_count(), rand::random());
    let mut seen = HashSet::new();
    progress("marking the live tree", 0, snaps.len() as u64 + 1);
    view.mark_references(&mut seen, &mut |c| filter.insert(c))?;
    for (i, id) in snaps.iter().enumerate() {
        progress("marking snapshots", i as u64 + 1, snaps.len() as u64 + 1);
        store
            .snapshot_tree(*id)?
            .mark_references(&mut seen, &mut |c| filter.insert(c))?;
    }
    drop(seen);
    let used: HashSet<u64> = snaps.iter().copied().collect();
    let mut batch: Vec<ChunkId> = Vec::new();
    let mut commit = |batch: &mut Vec<ChunkId>, report: &mut GcReport| -> Result<bool, Error> {
        if batch.is_empty() {
            return Ok(true);
        }
        progress("removing unreferenced chunks", 0, batch.len() as u64);
        let mut left: HashSet<ChunkId> = batch.drain(..).collect();
        let res = store.transact(true, |tx| {
            let head = tx.base();
            let now: HashSet<u64> = head.snapshots.keys().copied().collect();
            if now != used || head.snapshots.values().any(|s| !s.ready) {
                return Ok(None);
            }
            head.for_each_reference_since(&view, &mut |c| {
                left.remove(&c);
            })?;
            let mut bytes = 0u64;
            let mut ids: Vec<ChunkId> = Vec::new();
            for c in left {
                if let Some(e) = head.chunk(c)? {
                    bytes += u64::from(e.raw_len);
                    ids.push(c);
                }
            }
            for c in &ids {
                tx.remove_chunk(*c);
            }
            Ok(Some((ids.len() as u64, bytes)))
        })?;
        match res {
            Some((n, b)) => {
                report.chunks_removed += n;
                report.chunk_bytes_removed += b;
                Ok(true)
            }
            None => {
                report.stage1_skipped =
                    Some("snapshots changed during the pass; the next pass retries".into());
                Ok(false)
            }
        }
    };
    let mut go_on = true;
    view.for_each_chunk(|c, _| -> Result<(), Error> {
        if go_on && !filter.may_contain(c) {
            batch.push(c);
            if batch.len() >= REMOVE_BATCH {
                go_on = commit(&mut batch, report)?;
            }
        }
        Ok(())
    })?;
    if go_on {
        commit(&mut batch, report)?;
    }
    Ok(())
}

/// Every sealed pack against the index: a record whose chunk the index does not place in that
/// pack is garbage, listed in the pack's `.discard` file. The index's placements are marked into
/// a [`ChunkFilter`] of (chunk, pack) pairs; a record whose pair it does not hold is certainly
/// garbage, and a garbage record it admits by chance waits for a later pass (stage 2 re-reads
/// the index for the packs it rewrites).
fn sweep_packs(
    store: &Store,
    layout: &crate::layout::Layout,
    report: &mut GcReport,
    progress: GcProgress<'_>,
) -> Result<Vec<PackState>, Error> {
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
    let (placed, lsn) = store.log().read(|s, lsn| -> Result<_, Error> {
        let mut placed = ChunkFilter::for_chunks(s.chunk_count(), rand::random());
        s.for_each_chunk(|c, e| -> Result<(), Error> {
            placed.insert_tagged(c, e.pack.0);
            Ok(())
        })?;
        Ok((placed, lsn.0))
    })??;
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
        let mut garbage = 0usize;
        let mut garbage_bytes = 0u64;
        let mut new = Vec::new();
        for e in &idx.entries {
            if !placed.may_contain_tagged(e.chunk_id, id.0) {
                garbage += 1;
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
            records: idx.entries.len(),
            garbage,
            garbage_bytes,
        });
    }
    Ok(out)
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
