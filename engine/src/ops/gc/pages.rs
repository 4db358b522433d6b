//! Garbage collection of metadata page files (`meta/*.mpg`, `data-layout.md` 5.7a and 6.9):
//! a page file that no root reaches is deleted.
//!
//! The roots are every checkpoint file present (each live process rests on one of them: a
//! checkpoint file is deleted only by a log truncation every live process voted for, and a
//! process votes only once it rests on the newest checkpoint, [META-3]) and every ready snapshot.
//! The sweep holds the DLM lock `meta-pages` in EX; whoever writes pages and then publishes a
//! root that reaches them (a checkpoint, `SnapshotReady`) holds it in PR from before the first
//! page until the root is published, so a sweep never sees a finished file whose root is not
//! visible yet ([META-4]). A snapshot being created (begun, not ready) rests on pages no listed
//! root may reach: the sweep does nothing while one exists. Temporary page files (`.mpg.tmp`)
//! can only be a dead writer's under EX, and go too.
//!
//! Not here: the chunk index and packs (`stage1`, `stage2`).

use std::collections::HashSet;
use std::fs;

use verfs_coordination::io_site;
use verfs_coordination::lock::{LockTable, Mode, Resource};
use verfs_coordination::txlog::{self, StateMachine};

use crate::error::Error;
use crate::ids::InodeNo;
use crate::kinds::LOCK_META_PAGES;
use crate::meta::tree::Root;
use crate::meta::MetaState;
use crate::store::Store;

use super::GcReport;

/// Delete the page files no root reaches. Skipped (with the reason in the report) while a
/// snapshot is being created or another process holds `meta-pages`.
pub(crate) fn sweep_pages(store: &Store, report: &mut GcReport) -> Result<(), Error> {
    let owner = LockTable::open(&store.layout().root.join("locks"))
        .and_then(|t| t.owner())
        .map_err(Error::coordination)?;
    let res = Resource::Named(LOCK_META_PAGES.into());
    if owner.try_acquire(&res, Mode::Ex).is_err() {
        report.pages_skipped = Some("metadata pages are being written".into());
        return Ok(());
    }
    let r = sweep_locked(store, report);
    let _ = owner.release(&res);
    r
}

fn sweep_locked(store: &Store, report: &mut GcReport) -> Result<(), Error> {
    let pages = store.pages();
    // Listed first: a file published after this listing is not a candidate at all.
    let files = pages.list_files().map_err(crate::meta::MetaError::from)?;
    let snapshots = store.read(|s| s.snapshots.clone())?;
    if let Some(s) = snapshots.values().find(|s| !s.ready) {
        report.pages_skipped = Some(format!(
            "snapshot {} is being created",
            String::from_utf8_lossy(&s.name)
        ));
        return Ok(());
    }
    let mut roots: Vec<Root> = snapshots.values().filter_map(|s| s.root).collect();
    let ckpt_dir = store.layout().checkpoints();
    for (lsn, path) in txlog::list_checkpoints(&ckpt_dir)? {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Removed by a truncation since the listing: the processes have moved past it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let c = txlog::decode_checkpoint(&path, &bytes)?;
        let state = <MetaState as StateMachine>::decode_checkpoint(&None, lsn, &c.body).map_err(
            |reason| Error::Corrupt {
                path: path.clone(),
                offset: txlog::CHECKPOINT_HEADER_LEN,
                reason,
            },
        )?;
        let (base, _) = state.base();
        roots.push(base.namespace);
        roots.push(base.chunks);
        roots.extend(state.snapshots.values().filter_map(|s| s.root));
    }
    let mut live: HashSet<u64> = HashSet::new();
    let mut seen = HashSet::new();
    for root in &roots {
        pages
            .visit_pages(root, &mut seen, |p, _| {
                live.insert(p.file);
            })
            .map_err(crate::meta::MetaError::from)?;
    }
    for id in files {
        if live.contains(&id) {
            continue;
        }
        let path = pages.file_path(id);
        match io_site!("gc.page-file-unlink", fs::remove_file(&path)) {
            Ok(()) => report.page_files_removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path)(e)),
        }
    }
    // Under EX no writer is alive: every temporary page file is a dead one's.
    if let Ok(rd) = fs::read_dir(pages.dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".mpg.tmp")
                && io_site!("gc.page-tmp-unlink", fs::remove_file(e.path())).is_ok()
            {
                report.stale_files_removed += 1;
            }
        }
    }
    Ok(())
}

/// Compaction of the metadata page files (`meta/state/compact.rs`, 6.9 step 4a): when the files
/// under the live trees reach [`crate::meta::compaction_due`], this process commits a record
/// (the root inode put back unchanged, so the head moves past the newest checkpoint), writes a
/// checkpoint whose trees are rebuilt into one file, and truncates, so the sweep that follows can
/// delete the files only older checkpoints reached.
pub(crate) fn compact_pages(store: &Store, report: &mut GcReport) -> Result<(), Error> {
    let view: MetaState = store.read(|s| s.clone())?;
    let (live, spanned) = view.page_spread()?;
    drop(view);
    if !crate::meta::compaction_due(spanned, live, store.config().gc.compact_slack) {
        return Ok(());
    }
    store.transact(true, |tx| {
        let root = tx
            .inode(InodeNo::ROOT)?
            .ok_or_else(|| Error::Internal("no root directory".into()))?;
        tx.put_inode(root);
        Ok(())
    })?;
    store.pages.request_rebuild();
    let r = store.checkpoint_and_truncate();
    // Not consumed if the checkpoint failed before writing pages: no later checkpoint of this
    // process should rebuild by surprise.
    store.pages.take_rebuild_request();
    r?;
    report.pages_compacted = Some((spanned, live));
    Ok(())
}
