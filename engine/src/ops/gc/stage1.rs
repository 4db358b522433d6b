//! GC stage 1, under `gc` in EX: drop unreferenced chunks from the index ([GC-1], [GC-2]), then
//! account each sealed pack's garbage in its `.discard` file.

use std::collections::{HashMap, HashSet};
use std::fs::{self};
use std::path::Path;

use verfs_coordination::io_site;

use crate::error::Error;
use crate::format::pack::{PackIndex, RECORD_HEADER_LEN};
use crate::ids::{ChunkId, PackId};
use crate::pack::{self, index_path, pack_path};
use crate::store::Store;

use super::discard::{append_discard, discard_path, read_discard};
use super::{Discard, GcProgress, GcReport, PackState};

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
        let mut snap_refs: HashSet<ChunkId> = HashSet::new();
        let ids: Vec<u64> = snaps.values().map(|(id, _)| *id).collect();
        for (i, id) in ids.iter().enumerate() {
            progress("reading snapshots", i as u64, ids.len() as u64);
            snap_refs.extend(store.snapshot_tree(*id)?.referenced_chunks()?);
        }
        let candidates: HashSet<ChunkId> = store.read(|s| -> Result<_, Error> {
            // Every inode counts, orphans included.
            let live = s.referenced_chunks()?;
            let mut out = HashSet::new();
            s.for_each_chunk(|c, _| -> Result<(), Error> {
                if !live.contains(&c) && !snap_refs.contains(&c) {
                    out.insert(c);
                }
                Ok(())
            })?;
            Ok(out)
        })??;
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
                base.for_each_extents(|_, xs| -> Result<(), Error> {
                    for x in xs {
                        left.remove(&x.chunk);
                    }
                    Ok(())
                })?;
                let mut bytes = 0u64;
                let mut ids: Vec<ChunkId> = Vec::new();
                for c in left {
                    if let Some(e) = base.chunk(c)? {
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
    if let Err(e) = super::pages::sweep_pages(store, report) {
        report.problems.push(format!("metadata page sweep: {e}"));
    }

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
    let (index, lsn) = store.log().read(|s, lsn| -> Result<_, Error> {
        let mut index = HashMap::<ChunkId, PackId>::new();
        s.for_each_chunk(|c, e| -> Result<(), Error> {
            index.insert(c, e.pack);
            Ok(())
        })?;
        Ok((index, lsn.0))
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
