//! GC stage 2, under `gc` in PR and `gc-pack:<id>` in EX per pack ([GC-3]): propose the rewrite
//! of every pack over the threshold (two-phase commit `gc-rewrite`, [GC-4]), then copy each
//! pack's survivors into a new pack that a manifest publishes under the same id.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use verfs_coordination::lock::{LockOwner, Mode, Resource};
use verfs_coordination::manifest::Manifest;
use verfs_coordination::two_phase;

use crate::error::Error;
use crate::format::pack::{self as pfmt, IndexEntry, PackHeader, PackIndex, RECORD_HEADER_LEN};
use crate::kinds::{lock_gc_pack, ACTION_GC_REWRITE, PROPOSAL_GC_REWRITE};
use crate::pack::{index_path, pack_path};
use crate::store::Store;

use super::discard::discard_path;
use super::{GcProgress, GcReport, PackState};

pub(super) fn stage2(
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
            let all_garbage = p.garbage == p.records;
            // A sealed pack with no record at all (what a write that failed with ENOSPC before
            // its first record leaves) is all garbage too: deleted, not kept forever.
            (p.records == 0 || p.garbage > 0)
                && (all_garbage || p.garbage_bytes as f64 >= threshold * p.len as f64)
        })
        .collect();
    let mut mine = Vec::new();
    for p in chosen {
        // [GC-3]: one worker per pack.
        match owner.try_acquire(&Resource::Named(lock_gc_pack(p.id)), Mode::Ex) {
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
        let _ = owner.release(&Resource::Named(lock_gc_pack(p.id)));
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
    let keep: Vec<IndexEntry> = store.read(|s| -> Result<_, Error> {
        let mut keep = Vec::new();
        for e in &idx.entries {
            if s.chunk(e.chunk_id)?.map(|c| c.pack) == Some(p.id) {
                keep.push(*e);
            }
        }
        Ok(keep)
    })??;
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
        crate::failpoint::crash_point("gc-rewrite-staged");
        if std::env::var("VERFS_CRASH_POINT").as_deref() == Ok("gc-rewrite-committed") {
            // The commit record is durable, no target renamed yet: recovery rolls forward.
            m.commit_without_apply().map_err(Error::coordination)?;
            crate::failpoint::crash_point("gc-rewrite-committed");
            return Ok(new_len);
        }
        m.commit().map_err(Error::coordination)?;
        crate::failpoint::crash_point("gc-rewrite-published");
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
