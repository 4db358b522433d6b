//! `verfs fsck`: prove every invariant of `data-layout.md` ("Invariants") or report where it fails.
//!
//! Read-only and lock-free: it takes no lease and never changes a byte, so it may run beside any
//! number of live processes. What a live process is doing right now (the open tail of its pack or
//! of the log) is not reported as damage.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use verfs_coordination::journal;
use verfs_coordination::lease::{self, LeaseConfig, LeaseState};
use verfs_coordination::txlog::{self, LogConfig, Lsn, RecordAt, TxLog};

use crate::config::Config;
use crate::error::Error;
use crate::ids::{ChunkId, InodeNo, PackId};
use crate::kinds::{ACTION_OPEN_PACK, ACTION_ORPHAN};
use crate::layout::Layout;
use crate::meta::tree::PageStore;
use crate::meta::{FileKind, MetaError, MetaState};
use crate::pack::{self, ProblemKind};

/// One violated invariant: where, and what is wrong.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// A file path with a byte offset, or a store path / inode.
    pub location: String,
    pub message: String,
}

/// What fsck checked and found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FsckReport {
    pub log_records: u64,
    pub segments: usize,
    pub checkpoints: usize,
    pub packs: usize,
    pub pack_records: u64,
    pub inodes: usize,
    pub chunks: usize,
    /// Metadata page files, and the pages reachable from some root (the newest checkpoint's
    /// trees and every snapshot's), each read and verified once however many roots share it.
    pub page_files: usize,
    pub pages: u64,
    pub problems: Vec<Problem>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }
}

/// Check a store. Errors only when the store itself cannot be identified (not a store, wrong
/// version); every kind of damage is reported in the [`FsckReport`].
pub fn fsck(root: &std::path::Path) -> Result<FsckReport, Error> {
    let layout = Layout::new(root);
    crate::access::check_readable(root)?;
    layout.check()?;
    let mut r = FsckReport::default();
    let cfg = match Config::load(&layout.config()) {
        Ok(c) => c,
        Err(Error::Config { path, reason }) => {
            r.problem(
                path.display().to_string(),
                format!("invalid configuration: {reason}"),
            );
            Config::default()
        }
        Err(e) => {
            r.problem(layout.config().display().to_string(), e.to_string());
            Config::default()
        }
    };
    let lcfg = cfg.lease_config();
    let (open_packs, live_orphans) = check_leases(&layout, &lcfg, &mut r);
    check_log(&layout, &mut r);
    check_checkpoints(&layout, &mut r);
    let pack_chunks = check_packs(&layout, &open_packs, &mut r);
    let pages = match PageStore::open(&layout.meta(), cfg.cache.meta_bytes) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            r.problem(layout.meta().display().to_string(), e.to_string());
            return Ok(r);
        }
    };
    match TxLog::<MetaState>::open(
        &layout.log(),
        &layout.checkpoints(),
        LogConfig::default(),
        Box::new(|| Err("fsck is read-only".into())),
        Some(pages.clone()),
    ) {
        Ok(log) => {
            match log.read(|s, lsn| {
                check_pages(&pages, s, &mut r);
                check_state(s, lsn, &pack_chunks, &live_orphans, &mut r);
                check_snapshots(&pages, s, &mut r);
            }) {
                Ok(()) => {}
                Err(e) => r.problem(
                    layout.log().display().to_string(),
                    format!("cannot load metadata: {e}"),
                ),
            }
        }
        Err(e) => r.problem(
            layout.log().display().to_string(),
            format!("cannot load metadata: {e}"),
        ),
    }
    Ok(r)
}

/// Leases of dead processes that nobody cleaned are a violation; returns the packs that live
/// processes have open (their unsealed tails are not damage).
fn check_leases(
    layout: &Layout,
    cfg: &LeaseConfig,
    r: &mut FsckReport,
) -> (HashSet<PackId>, HashSet<InodeNo>) {
    let mut open = HashSet::new();
    let mut orphans = HashSet::new();
    let entries = match lease::list(&layout.leases()) {
        Ok(e) => e,
        Err(e) => {
            r.problem(layout.leases().display().to_string(), e.to_string());
            return (open, orphans);
        }
    };
    let now = SystemTime::now();
    for e in entries {
        let dead = e.liveness(cfg, now).is_dead();
        if e.state == LeaseState::Partial && !dead {
            // A process starting right now: the same rule recover applies.
            continue;
        }
        let live = e.state == LeaseState::Live && !dead;
        if live {
            if let Ok(p) = journal::read_pending(&e.path.join("journal")) {
                for a in p.pending.iter().filter(|a| a.kind == ACTION_OPEN_PACK) {
                    if let Some(id) = std::str::from_utf8(&a.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        open.insert(id);
                    }
                }
                for a in p.pending.iter().filter(|a| a.kind == ACTION_ORPHAN) {
                    if let Some(ino) = std::str::from_utf8(&a.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        orphans.insert(InodeNo(ino));
                    }
                }
            }
            continue;
        }
        let why = match &e.state {
            LeaseState::Live => format!("{:?}", e.liveness(cfg, now)),
            LeaseState::Claimed { cleaner } => format!("claimed by {cleaner} but not cleaned up"),
            LeaseState::Partial => "half-created lease".to_string(),
        };
        // A claim in progress by a live cleaner is work under way, not damage.
        if let LeaseState::Claimed { cleaner } = &e.state {
            if lease::is_live_lease(&layout.leases(), cleaner) {
                continue;
            }
        }
        r.problem(
            e.path.display().to_string(),
            format!("lease of a dead process ({why}); run `verfs recover`"),
        );
    }
    (open, orphans)
}

fn check_log(layout: &Layout, r: &mut FsckReport) {
    let segs = match txlog::list_segments(&layout.log()) {
        Ok(s) => s,
        Err(e) => return r.problem(layout.log().display().to_string(), e.to_string()),
    };
    r.segments = segs.len();
    if segs.is_empty() {
        r.problem(layout.log().display().to_string(), "no log segment");
    }
    let mut expect: Option<u64> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let loc = |off: u64| format!("{} at byte {off}", path.display());
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                r.problem(path.display().to_string(), e.to_string());
                continue;
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut h = [0u8; txlog::SEGMENT_HEADER_LEN as usize];
        if f.read_exact_at(&mut h, 0).is_err() {
            r.problem(loc(0), "segment header truncated");
            continue;
        }
        let hdr = txlog::encode_segment_header(*first);
        if h != hdr {
            r.problem(loc(0), "segment header does not match its name or is damaged (magic, version, first lsn, crc32)");
            continue;
        }
        if let Some(e) = expect {
            if first.0 != e {
                r.problem(
                    loc(0),
                    format!("segment starts at lsn {first}, previous ended before {e}"),
                );
            }
        }
        let mut off = txlog::SEGMENT_HEADER_LEN;
        let mut next = first.0;
        let last = i + 1 == segs.len();
        let mut ended = false;
        loop {
            match txlog::read_record_at(&f, off, len) {
                Ok(RecordAt::Valid {
                    kind: 1,
                    lsn,
                    len: n,
                    ..
                }) => {
                    if lsn.0 != next {
                        r.problem(loc(off), format!("record lsn {lsn}, expected {next}"));
                    }
                    r.log_records += 1;
                    next = lsn.0 + 1;
                    off += n;
                }
                Ok(RecordAt::Valid { len: n, .. }) => {
                    ended = true;
                    off += n;
                    if off != len {
                        r.problem(loc(off), "bytes after the segment-end record");
                    }
                    break;
                }
                Ok(RecordAt::End) => {
                    if !last {
                        // [LOG-3]: a closed segment ends with a segment-end record. Readers stop
                        // where it is missing, so every record after it is invisible until the
                        // next lock holder writes it (crash L3). Harmless only if nothing follows.
                        let (nfirst, npath) = &segs[i + 1];
                        let next_empty = i + 2 == segs.len()
                            && std::fs::metadata(npath)
                                .map(|m| m.len() <= txlog::SEGMENT_HEADER_LEN)
                                .unwrap_or(false);
                        r.problem(
                            loc(off),
                            if next_empty {
                                "closed segment has no segment-end record (an interrupted segment roll; the next commit or `verfs recover` writes it)".to_string()
                            } else {
                                format!(
                                    "closed segment has no segment-end record but {} follows: readers stop here and miss lsn {nfirst} onwards (segment truncated?)",
                                    npath.display()
                                )
                            },
                        );
                    }
                    break;
                }
                Ok(RecordAt::Short) | Ok(RecordAt::ZeroTail) => {
                    let msg = if last {
                        "torn record at the log tail (a writer died mid-append; the next commit or `verfs recover` cuts it)"
                    } else {
                        "torn record inside a closed segment"
                    };
                    r.problem(loc(off), msg);
                    break;
                }
                Ok(RecordAt::Bad(reason)) => {
                    r.problem(loc(off), format!("corrupt log record: {reason}"));
                    break;
                }
                Err(e) => {
                    r.problem(loc(off), e.to_string());
                    break;
                }
            }
        }
        if ended && last {
            r.problem(
                loc(0),
                format!("segment-end record points at lsn {next}, but there is no later segment"),
            );
        }
        expect = Some(next);
    }
}

fn check_checkpoints(layout: &Layout, r: &mut FsckReport) {
    let cks = match txlog::list_checkpoints(&layout.checkpoints()) {
        Ok(c) => c,
        Err(e) => return r.problem(layout.checkpoints().display().to_string(), e.to_string()),
    };
    r.checkpoints = cks.len();
    for (lsn, path) in cks {
        match std::fs::read(&path) {
            Ok(b) => match txlog::decode_checkpoint_file(&path, &b) {
                Ok((l, body)) => {
                    if l != lsn {
                        r.problem(
                            format!("{} at byte 16", path.display()),
                            format!("lsn {l} but named {lsn}"),
                        );
                    } else if let Err(e) =
                        <MetaState as txlog::StateMachine>::decode_checkpoint(&None, l, &body)
                    {
                        r.problem(
                            format!(
                                "{} at byte {}",
                                path.display(),
                                txlog::CHECKPOINT_HEADER_LEN
                            ),
                            e,
                        );
                    }
                }
                Err(txlog::LogError::Corrupt { offset, reason, .. }) => r.problem(
                    format!("{} at byte {offset}", path.display()),
                    format!("corrupt checkpoint: {reason}"),
                ),
                Err(e) => r.problem(path.display().to_string(), e.to_string()),
            },
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
    }
}

/// Scan every pack; returns chunk id -> packs holding a verified copy.
fn check_packs(
    layout: &Layout,
    open: &HashSet<PackId>,
    r: &mut FsckReport,
) -> HashMap<ChunkId, Vec<PackId>> {
    let mut out: HashMap<ChunkId, Vec<PackId>> = HashMap::new();
    let listing = match pack::list_packs(&layout.packs()) {
        Ok(l) => l,
        Err(e) => {
            r.problem(layout.packs().display().to_string(), e.to_string());
            return out;
        }
    };
    for u in &listing.unknown {
        r.problem(u.display().to_string(), "unexpected file in packs/");
    }
    for t in &listing.manifest_temps {
        r.problem(
            t.display().to_string(),
            "file staged by an unfinished manifest (a GC rewrite; `verfs recover` settles it)",
        );
    }
    for id in &listing.discards {
        let path = crate::ops::gc::discard_path(&layout.packs(), *id);
        if listing.packs.binary_search(id).is_err() {
            r.problem(path.display().to_string(), "discard file without its pack");
            continue;
        }
        match crate::ops::gc::read_discard(&layout.packs(), *id) {
            Ok(d) => {
                if let Some(at) = d.torn_at {
                    r.problem(
                        format!("{} at byte {at}", path.display()),
                        "torn tail (a GC died appending; `verfs recover` cuts it)",
                    );
                }
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
    }
    for id in &listing.orphan_indexes {
        r.problem(
            pack::index_path(&layout.packs(), *id).display().to_string(),
            "index without its pack",
        );
    }
    r.packs = listing.packs.len();
    for id in &listing.packs {
        let path = pack::pack_path(&layout.packs(), *id);
        let is_open = open.contains(id);
        match pack::scan(&path) {
            Ok(rep) => {
                for p in &rep.problems {
                    if is_open && matches!(p.kind, ProblemKind::TornTail) {
                        continue;
                    }
                    r.problem(
                        format!("{} at byte {}", p.path.display(), p.offset),
                        format!("{:?}: {}", p.kind, p.reason),
                    );
                }
                for rec in &rep.records {
                    out.entry(rec.chunk_id).or_default().push(*id);
                }
                r.pack_records += rep.records.len() as u64;
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
        match pack::check_index(&layout.packs(), *id) {
            Ok(problems) => {
                for p in problems {
                    if is_open && p.kind == ProblemKind::IndexMissing {
                        continue;
                    }
                    let hint = if p.kind == ProblemKind::IndexMissing {
                        " (unsealed pack of a dead process; run `verfs recover`)"
                    } else {
                        ""
                    };
                    r.problem(
                        format!("{} at byte {}", p.path.display(), p.offset),
                        format!("{:?}: {}{hint}", p.kind, p.reason),
                    );
                }
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
    }
    out
}

/// Every page reachable from a root (the trees the state rests on, every ready snapshot's) reads
/// back and verifies (crc, structure, content hash), each shared page once; every page file's
/// pages verify on their own ([TREE-2], [TREE-7]). A damaged page is named by file and offset.
fn check_pages(pages: &PageStore, s: &MetaState, r: &mut FsckReport) {
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
/// ([SNAP-4], [GC-2]).
fn check_snapshots(pages: &Arc<PageStore>, s: &MetaState, r: &mut FsckReport) {
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
        let tree = MetaState::snapshot_tree(pages, root);
        let missing = tree.referenced_chunks().and_then(|refs| {
            let mut missing = Vec::new();
            for c in refs {
                if s.chunk(c)?.is_none() {
                    missing.push(c);
                }
            }
            missing.sort();
            Ok(missing)
        });
        match missing {
            Ok(m) => {
                for c in m {
                    r.problem(
                        at.clone(),
                        format!("references chunk {c}, which is not indexed"),
                    );
                }
            }
            Err(e) => r.problem(at, e.to_string()),
        }
    }
}

fn check_state(
    s: &MetaState,
    lsn: Lsn,
    packs: &HashMap<ChunkId, Vec<PackId>>,
    live_orphans: &HashSet<InodeNo>,
    r: &mut FsckReport,
) {
    if let Err(e) = check_state_inner(s, lsn, packs, live_orphans, r) {
        r.problem(format!("metadata at lsn {lsn}"), e.to_string());
    }
}

fn check_state_inner(
    s: &MetaState,
    lsn: Lsn,
    packs: &HashMap<ChunkId, Vec<PackId>>,
    live_orphans: &HashSet<InodeNo>,
    r: &mut FsckReport,
) -> Result<(), MetaError> {
    r.inodes = s.inode_count() as usize;
    r.chunks = s.chunk_count() as usize;
    let at = format!("metadata at lsn {lsn}");
    let Some(root) = s.inode(InodeNo::ROOT)? else {
        r.problem(at, "no root directory");
        return Ok(());
    };
    if root.kind != FileKind::Dir {
        r.problem(at.clone(), "root is not a directory");
    }
    // Walk the tree from the root: every entry's inode exists, every directory is reached once.
    let mut refs: HashMap<InodeNo, u32> = HashMap::new();
    let mut subdirs: HashMap<InodeNo, u32> = HashMap::new();
    let mut path_of: HashMap<InodeNo, String> = HashMap::new();
    path_of.insert(InodeNo::ROOT, "/".into());
    let mut stack = vec![(InodeNo::ROOT, String::new())];
    let mut seen_dirs: HashSet<InodeNo> = HashSet::new();
    seen_dirs.insert(InodeNo::ROOT);
    while let Some((dir, dpath)) = stack.pop() {
        for (name, child) in s.entries(dir)? {
            let cpath = format!("{dpath}/{}", String::from_utf8_lossy(&name));
            let Some(ci) = s.inode(child)? else {
                r.problem(cpath, format!("entry points at missing inode {child}"));
                continue;
            };
            *refs.entry(child).or_default() += 1;
            path_of.entry(child).or_insert_with(|| cpath.clone());
            if ci.kind == FileKind::Dir {
                *subdirs.entry(dir).or_default() += 1;
                if !seen_dirs.insert(child) {
                    r.problem(
                        cpath,
                        format!("directory inode {child} has more than one entry (not a tree)"),
                    );
                    continue;
                }
                stack.push((child, cpath));
            }
        }
    }
    let mut parents: Vec<InodeNo> = Vec::new();
    s.for_each_entry(|dir, _, _| -> Result<(), MetaError> {
        if parents.last() != Some(&dir) {
            parents.push(dir);
        }
        Ok(())
    })?;
    let mut with_entries: HashSet<InodeNo> = HashSet::new();
    for dir in parents {
        with_entries.insert(dir);
        if !s.has_inode(dir)? {
            r.problem(
                format!("inode {dir}"),
                "entries of a directory that does not exist",
            );
        }
    }
    let mut inodes: Vec<crate::meta::Inode> = Vec::new();
    s.for_each_inode(|i| -> Result<(), MetaError> {
        inodes.push(i.clone());
        Ok(())
    })?;
    for i in &inodes {
        let ino = i.ino;
        let p = path_of
            .get(&ino)
            .cloned()
            .unwrap_or_else(|| format!("inode {ino}"));
        if ino != InodeNo::ROOT && !refs.contains_key(&ino) {
            // Unlinked but still open in a live process: kept until its last close.
            if i.nlink == 0 && live_orphans.contains(&ino) {
                continue;
            }
            r.problem(p.clone(), "inode not reachable from the root (orphan)");
            continue;
        }
        let want = if i.kind == FileKind::Dir {
            2 + subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            refs.get(&ino).copied().unwrap_or(0)
        };
        if i.nlink != want {
            r.problem(
                p.clone(),
                format!("link count {} but {} links exist", i.nlink, want),
            );
        }
        if i.kind != FileKind::Dir && with_entries.contains(&ino) {
            r.problem(p.clone(), "non-directory has directory entries");
        }
        let extents = s.extents(ino)?;
        if i.kind != FileKind::File && !extents.is_empty() {
            r.problem(p.clone(), "non-regular file has data extents");
        }
        if i.kind == FileKind::Symlink && i.size != i.target.len() as u64 {
            r.problem(
                p.clone(),
                format!(
                    "symlink size {} but target is {} bytes",
                    i.size,
                    i.target.len()
                ),
            );
        }
        let mut end = 0u64;
        for x in &extents {
            if x.file_off < end {
                r.problem(
                    p.clone(),
                    format!("extent at {} overlaps the previous one", x.file_off),
                );
            }
            end = x.file_off + x.len as u64;
            match s.chunk(x.chunk)? {
                None => r.problem(
                    p.clone(),
                    format!(
                        "chunk {} at file offset {} is not in the chunk index",
                        x.chunk, x.file_off
                    ),
                ),
                Some(c) => {
                    if x.chunk_off as u64 + x.len as u64 > c.raw_len as u64 {
                        r.problem(
                            p.clone(),
                            format!(
                                "extent at {} reaches past the end of chunk {}",
                                x.file_off, x.chunk
                            ),
                        );
                    }
                }
            }
        }
        if end > i.size {
            r.problem(
                p.clone(),
                format!("size {} but extents reach {end}", i.size),
            );
        }
    }
    s.for_each_chunk(|id, c| -> Result<(), MetaError> {
        match packs.get(&id) {
            Some(in_packs) if in_packs.contains(&c.pack) => {}
            Some(_) => r.problem(
                format!("chunk {id}"),
                format!(
                    "indexed in pack {} but only a valid copy exists elsewhere",
                    c.pack
                ),
            ),
            None => r.problem(
                format!("chunk {id}"),
                format!(
                    "indexed in pack {} but no valid copy exists (missing or damaged)",
                    c.pack
                ),
            ),
        }
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::meta::{Op, Tx};
    use verfs_coordination::txlog::StateMachine;

    /// What a rename of a directory into its own subtree would leave if `Tx::rename` did not
    /// refuse it (`mv /a /a/b/a`): `/a` unlinked from the root and linked under `/a/b`. The
    /// two directories form a cycle no walk from the root reaches; fsck must name both.
    #[test]
    fn fsck_flags_a_directory_cycle_cut_off_from_the_root() {
        let mut s = MetaState::empty(&None);
        let payload = {
            let mut tx = Tx::new(&s);
            tx.mkdir_p("/a/b", 0o755).unwrap();
            tx.finish()
        };
        s.apply(Lsn(1), &payload).unwrap();
        let a = s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap();
        let b = s.lookup(a, b"b").unwrap().unwrap();
        let mut clean = FsckReport::default();
        check_state(&s, Lsn(1), &HashMap::new(), &HashSet::new(), &mut clean);
        assert!(clean.is_clean(), "{:?}", clean.problems);
        s.apply_op(
            2,
            &Op::Unlink {
                parent: InodeNo::ROOT,
                name: b"a".to_vec(),
            },
        )
        .unwrap();
        s.apply_op(
            2,
            &Op::Link {
                parent: b,
                name: b"a".to_vec(),
                ino: a,
            },
        )
        .unwrap();
        let mut r = FsckReport::default();
        check_state(&s, Lsn(2), &HashMap::new(), &HashSet::new(), &mut r);
        for ino in [a, b] {
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.location == format!("inode {ino}")
                        && p.message.contains("not reachable from the root")),
                "inode {ino} not reported: {:?}",
                r.problems
            );
        }
    }
}
