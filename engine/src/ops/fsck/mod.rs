//! `verfs fsck`: prove every invariant of `data-layout.md` ("Invariants") or report where it fails.
//!
//! Read-only and lock-free: it takes no lease and never changes a byte, so it may run beside any
//! number of live processes. What a live process is doing right now (the open tail of its pack or
//! of the log) is not reported as damage.
//!
//! Files: `packs.rs` (packs, their indexes, where the index places each chunk), `trees.rs`
//! (metadata pages and snapshots), `namespace.rs` (the tree of files at the head). Every check
//! streams: memory is bounded by the page cache and one pack at a time, not by the store.

mod namespace;
mod packs;
mod trees;

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use verfs_coordination::journal;
use verfs_coordination::lease::{self, LeaseConfig, LeaseState};
use verfs_coordination::txlog::{self, LogConfig, Lsn, RecordAt, TxLog};

use crate::config::Config;
use crate::error::Error;
use crate::ids::{InodeNo, PackId};
use crate::kinds::{ACTION_OPEN_PACK, ACTION_ORPHAN};
use crate::layout::Layout;
use crate::meta::tree::PageStore;
use crate::meta::MetaState;

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
    let state = match load_state(&layout, &cfg) {
        Ok(st) => Some(st),
        Err(e) => {
            r.problem(e.0, e.1);
            None
        }
    };
    packs::check_packs(
        &layout,
        &open_packs,
        state.as_ref().map(|(_, s, _)| s),
        &mut r,
    );
    if let Some((pages, s, lsn)) = &state {
        trees::check_pages(pages, s, &mut r);
        check_state(s, *lsn, &live_orphans, &mut r);
        trees::check_snapshots(pages, s, &mut r);
    }
    Ok(r)
}

/// The metadata at the log's head, as a view of its own (fsck holds no lock while it checks),
/// or where and why it cannot be loaded.
fn load_state(
    layout: &Layout,
    cfg: &Config,
) -> Result<(Arc<PageStore>, MetaState, Lsn), (String, String)> {
    let pages = PageStore::open(&layout.meta(), cfg.cache.meta_bytes)
        .map(Arc::new)
        .map_err(|e| (layout.meta().display().to_string(), e.to_string()))?;
    let cannot = |e: &dyn std::fmt::Display| {
        (
            layout.log().display().to_string(),
            format!("cannot load metadata: {e}"),
        )
    };
    let log = TxLog::<MetaState>::open(
        &layout.log(),
        &layout.checkpoints(),
        LogConfig::default(),
        Box::new(|| Err("fsck is read-only".into())),
        Some(pages.clone()),
    )
    .map_err(|e| cannot(&e))?;
    let (s, lsn) = log
        .read(|s, lsn| (s.clone(), lsn))
        .map_err(|e| cannot(&e))?;
    Ok((pages, s, lsn))
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
                    off += n;
                    if lsn.0 < next {
                        // [LOG-10]: a late append of a writer that had lost the lock: void.
                        continue;
                    }
                    if lsn.0 != next {
                        r.problem(loc(off - n), format!("record lsn {lsn}, expected {next}"));
                    }
                    r.log_records += 1;
                    next = lsn.0 + 1;
                }
                Ok(RecordAt::Valid { len: n, .. }) => {
                    ended = true;
                    off += n;
                    // Only void records (late appends, [LOG-10]) may follow a segment end.
                    while off < len {
                        match txlog::read_record_at(&f, off, len) {
                            Ok(RecordAt::Valid { lsn, len: m, .. }) if lsn.0 < next => off += m,
                            _ => {
                                r.problem(loc(off), "bytes after the segment-end record");
                                break;
                            }
                        }
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

fn check_state(s: &MetaState, lsn: Lsn, live_orphans: &HashSet<InodeNo>, r: &mut FsckReport) {
    r.inodes = s.inode_count() as usize;
    r.chunks = s.chunk_count() as usize;
    let at = format!("metadata at lsn {lsn}");
    if let Err(e) = namespace::check_namespace(s, &at, live_orphans, r) {
        r.problem(at, e.to_string());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::meta::{Op, Tx};
    use verfs_coordination::txlog::StateMachine;

    /// A memory-only state holding the directories of `path`, committed at lsn 1.
    fn state_with_dirs(path: &str) -> MetaState {
        let mut s = MetaState::empty(&None);
        let payload = {
            let mut tx = Tx::new(&s);
            tx.mkdir_p(path, 0o755).unwrap();
            tx.finish()
        };
        s.apply(Lsn(1), &payload).unwrap();
        s
    }

    /// What a rename of a directory into its own subtree would leave if `Tx::rename` did not
    /// refuse it (`mv /a /a/b/a`): `/a` unlinked from the root and linked under `/a/b`. The
    /// two directories form a cycle no walk from the root reaches; fsck must name both.
    #[test]
    fn fsck_flags_a_directory_cycle_cut_off_from_the_root() {
        let mut s = state_with_dirs("/a/b");
        let a = s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap();
        let b = s.lookup(a, b"b").unwrap().unwrap();
        let mut clean = FsckReport::default();
        check_state(&s, Lsn(1), &HashSet::new(), &mut clean);
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
        check_state(&s, Lsn(2), &HashSet::new(), &mut r);
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

    /// Inode `ino` gets one 4-byte extent on chunk 7 (which no test indexes).
    fn one_extent_on_chunk_7(ino: u64) -> Op {
        Op::SetExtents {
            ino: InodeNo(ino),
            extents: vec![crate::meta::Extent {
                file_off: 0,
                chunk: crate::ids::ChunkId(7),
                chunk_off: 0,
                len: 4,
            }],
        }
    }

    fn problems_of(s: &MetaState) -> Vec<(String, String)> {
        let mut r = FsckReport::default();
        check_state(s, Lsn(9), &HashSet::new(), &mut r);
        r.problems
            .into_iter()
            .map(|p| (p.location, p.message))
            .collect()
    }

    fn has(ps: &[(String, String)], loc: &str, msg: &str) -> bool {
        ps.iter().any(|(l, m)| l == loc && m.contains(msg))
    }

    /// The streaming namespace check names each kind of damage where it is: link counts that the
    /// multiset sums catch (a swap of two counts keeps the totals equal), an entry to a missing
    /// inode, a second link to a directory, an extent on an unindexed chunk, extents of a
    /// symlink.
    #[test]
    fn fsck_names_wrong_link_counts_missing_inodes_and_bad_extents() {
        use crate::meta::{FileKind, Inode};
        let mut s = state_with_dirs("/d/e");
        let d = s.lookup(InodeNo::ROOT, b"d").unwrap().unwrap();
        let e = s.lookup(d, b"e").unwrap().unwrap();
        let mut file = |ino: u64, nlink: u32, kind: FileKind| {
            let mut i = Inode::new(InodeNo(ino), kind, 0o644);
            i.nlink = nlink;
            s.apply_op(2, &Op::PutInode(i)).unwrap();
        };
        // f (100) gets 2 links, g (101) one; later their counts are swapped.
        file(100, 2, FileKind::File);
        file(101, 1, FileKind::File);
        file(102, 1, FileKind::Symlink);
        let link = |s: &mut MetaState, parent: InodeNo, name: &[u8], ino: u64| {
            s.apply_op(
                3,
                &Op::Link {
                    parent,
                    name: name.to_vec(),
                    ino: InodeNo(ino),
                },
            )
            .unwrap();
        };
        link(&mut s, d, b"f", 100);
        link(&mut s, e, b"f2", 100);
        link(&mut s, d, b"g", 101);
        link(&mut s, d, b"l", 102);
        assert!(problems_of(&s).is_empty(), "{:?}", problems_of(&s));
        // Swap the counts: the totals still agree, the multiset sums do not.
        let mut f = s.inode(InodeNo(100)).unwrap().unwrap();
        f.nlink = 1;
        s.apply_op(4, &Op::PutInode(f)).unwrap();
        let mut g = s.inode(InodeNo(101)).unwrap().unwrap();
        g.nlink = 2;
        s.apply_op(4, &Op::PutInode(g)).unwrap();
        link(&mut s, d, b"ghost", 555);
        link(&mut s, InodeNo::ROOT, b"e2", e.0);
        s.apply_op(5, &one_extent_on_chunk_7(102)).unwrap();
        // Extents of an inode that does not exist, between two that do in inode order.
        s.apply_op(6, &one_extent_on_chunk_7(50)).unwrap();
        let ps = problems_of(&s);
        // A path is the one the parent records name: latest links (e is /e2 by now).
        assert!(
            has(&ps, "/e2/f2", "link count 1 but 2 links exist"),
            "{ps:?}"
        );
        assert!(has(&ps, "/d/g", "link count 2 but 1 links exist"), "{ps:?}");
        assert!(has(&ps, "/d/ghost", "missing inode 555"), "{ps:?}");
        // The parent record of e names its latest link, /e2: the other one is the extra.
        assert!(has(&ps, "/d/e", "more than one entry"), "{ps:?}");
        // The root now has a subdirectory entry more than its count says.
        assert!(has(&ps, "/", "link count 3 but 4 links exist"), "{ps:?}");
        assert!(
            has(&ps, "/d/l", "non-regular file has data extents"),
            "{ps:?}"
        );
        assert!(
            has(&ps, "/d/l", "chunk 00000000000000000000000000000007"),
            "{ps:?}"
        );
        assert!(
            has(&ps, "inode 50", "extents of an inode that does not exist"),
            "{ps:?}"
        );
    }
}
