//! fsck's check of the metadata trees: every page file verifies, every page reachable from a
//! root (the state's trees, every snapshot's) reads back and verifies, each shared page once, and
//! every snapshot is ready and references only indexed chunks.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::ids::ChunkId;
use crate::meta::tree::PageStore;
use crate::meta::MetaState;

use super::FsckReport;

/// Every page reachable from a root (the trees the state rests on, every ready snapshot's) reads
/// back and verifies (crc, structure, content hash), each shared page once; every page file's
/// pages verify on their own ([TREE-2], [TREE-7]). A damaged page is named by file and offset.
pub(super) fn check_pages(pages: &PageStore, s: &MetaState, r: &mut FsckReport) {
    match pages.list_files() {
        Ok(files) => {
            r.page_files = files.len();
            for id in files {
                match pages.verify_file(id) {
                    Ok(check) => {
                        for (offset, reason) in check.damaged {
                            r.problem(
                                format!("{} at byte {offset}", pages.file_path(id).display()),
                                format!("damaged metadata page: {reason}"),
                            );
                        }
                    }
                    Err(e) => r.problem(pages.file_path(id).display().to_string(), e.to_string()),
                }
            }
        }
        Err(e) => r.problem(pages.dir().display().to_string(), e.to_string()),
    }
    let (roots, _) = s.base();
    let mut trees = vec![
        ("the namespace tree".to_string(), roots.namespace),
        ("the chunk index".to_string(), roots.chunks),
    ];
    for (id, info) in &s.snapshots {
        if let Some(root) = info.root {
            trees.push((
                format!(
                    "snapshot {} ({id:016x})",
                    String::from_utf8_lossy(&info.name)
                ),
                root,
            ));
        }
    }
    let mut seen = HashSet::new();
    for (what, root) in trees {
        let mut ptrs = Vec::new();
        if let Err(e) = pages.visit_pages(&root, &mut seen, |p, _| ptrs.push(*p)) {
            r.problem(what.clone(), format!("cannot walk its pages: {e}"));
        }
        for p in ptrs {
            r.pages += 1;
            if let Err(e) = pages.read_page(&p) {
                r.problem(what.clone(), format!("a page of it does not verify: {e}"));
            }
        }
    }
}

/// Every snapshot the metadata lists is ready; every chunk its tree references is indexed
/// ([SNAP-4], [GC-2]). The snapshots' extent pages are read with one `seen` set, so a page that
/// several snapshots share is checked once (under the first that reaches it).
pub(super) fn check_snapshots(pages: &Arc<PageStore>, s: &MetaState, r: &mut FsckReport) {
    let mut seen = HashSet::new();
    for (id, info) in &s.snapshots {
        let name = String::from_utf8_lossy(&info.name);
        let at = format!("snapshot {name} ({id:016x})");
        let Some(root) = info.root.filter(|_| info.ready) else {
            r.problem(
                at,
                "not ready: being created, or its creator died (`verfs recover` drops it)",
            );
            continue;
        };
        let mut missing: BTreeSet<ChunkId> = BTreeSet::new();
        let mut failed = None;
        let marked =
            MetaState::snapshot_tree(pages, root).mark_references(&mut seen, &mut |c| match s
                .chunk(c)
            {
                Ok(Some(_)) => {}
                Ok(None) => {
                    missing.insert(c);
                }
                Err(e) => failed = Some(e),
            });
        for c in missing {
            r.problem(
                at.clone(),
                format!("references chunk {c}, which is not indexed"),
            );
        }
        if let Some(e) = marked.err().or(failed) {
            r.problem(at, e.to_string());
        }
    }
}
