//! Snapshots and GC through the library, with two `Store` handles on one store (two leases, so
//! the two-phase commits have a real participant whose lease keeper votes).
//!
//! proves [GC-2] [GC-4] [GC-5] [SNAP-1] [SNAP-4] [SNAP-5] [PACK-5] [META-3] [META-4] [META-5]
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use verfs_engine::error::Error;
use verfs_engine::ids::InodeNo;
use verfs_engine::meta::{FileKind, Inode, Op};
use verfs_engine::ops::fsck::fsck;
use verfs_engine::ops::gc;
use verfs_engine::store::{OpenOptions, PendingFile, Store, TransferReport};
use verfs_test_support::{noise, packs_bytes};

/// Fast heartbeats so that votes arrive within ~100 ms; small packs so data spreads over several.
const CONFIG: &str = "\
[leases]
timeout_ms = 3000
heartbeat_ms = 100

[packs]
target_size = 1048576
";

fn store(dir: &Path) -> (Store, Store) {
    let root = dir.join("st");
    Store::init(&root).unwrap();
    fs::write(root.join("config.toml"), CONFIG).unwrap();
    (
        Store::open(&root, OpenOptions::new("test writer")).unwrap(),
        Store::open(&root, OpenOptions::new("test gc")).unwrap(),
    )
}

/// Write `data` as the new file `path` (one component) in one batch; the pack is sealed once it
/// passes 1 MiB, as after any put (an open pack of a live process is never collected).
fn put(s: &Store, path: &str, data: &[u8]) {
    let mut held = s.hold();
    let (extents, size) = s
        .write_stream(data, &mut TransferReport::default(), &mut held)
        .unwrap();
    let mut inode = Inode::new(InodeNo(0), FileKind::File, 0o644);
    inode.size = size;
    let f = PendingFile {
        comps: vec![path.trim_start_matches('/').as_bytes().to_vec()],
        inode,
        extents,
    };
    s.commit_files(&[], &[], vec![f], Some(&held)).unwrap();
}

#[test]
fn snapshot_keeps_data_and_gc_reclaims_after_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (w, g) = store(dir.path());
    let root = dir.path().join("st");
    let a = noise(1, 3 << 20);
    let b = noise(2, 2 << 20);
    put(&w, "/a", &a);
    put(&w, "/b", &b);
    let c = w.snapshot_create("s1").unwrap();
    assert_eq!(c.inodes, 3);
    w.remove("/a", false).unwrap();
    put(&w, "/b2", &noise(3, 1000));
    w.rename("/b2", "/b").unwrap();
    // [SNAP-1]: the snapshot is the tree before the changes.
    assert_eq!(w.read_all("/.snapshots/s1/a").unwrap(), a);
    assert_eq!(w.read_all("/.snapshots/s1/b").unwrap(), b);
    assert_eq!(w.read_all("/b").unwrap(), noise(3, 1000));
    // [GC-2]: nothing the snapshot references goes.
    let before = packs_bytes(&root);
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.chunks_removed, 0, "{r:?}");
    assert_eq!(w.read_all("/.snapshots/s1/a").unwrap(), a);
    // Restore shares chunks: the packs do not grow.
    let restored = w.snapshot_restore("s1", "/a", "/a-again").unwrap();
    assert_eq!(restored.files, 1);
    assert_eq!(w.read_all("/a-again").unwrap(), a);
    assert!(packs_bytes(&root) <= before + 4096);
    w.remove("/a-again", false).unwrap();
    // Deleting the snapshot lets GC reclaim a and b: 5 MiB of incompressible data.
    w.snapshot_delete("s1").unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.chunk_bytes_removed >= 5 << 20, "{r:?}");
    let after = packs_bytes(&root);
    assert!(
        before - after >= (5 << 20) * 9 / 10,
        "{before} -> {after}: {r:?}"
    );
    assert_eq!(w.read_all("/b").unwrap(), noise(3, 1000));
    w.close().unwrap();
    g.close().unwrap();
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
}

/// [GC-4]: an operation that deduplicated against a chunk before stage 1 dropped it makes its
/// process vote Abort on the rewrite of that pack; its commit re-indexes the chunk in the pack,
/// and the next pass keeps it.
#[test]
fn in_flight_dedup_blocks_the_rewrite_and_is_reindexed() {
    let dir = tempfile::tempdir().unwrap();
    let (w, g) = store(dir.path());
    let root = dir.path().join("st");
    let data = noise(7, 2 << 20);
    put(&w, "/f", &data);
    // A second operation chunks the same bytes: every chunk is a dedup hit, held in flight.
    let mut held = w.hold();
    let mut rep = TransferReport::default();
    let (exts, size) = w.write_stream(&data[..], &mut rep, &mut held).unwrap();
    assert_eq!(rep.new_chunks, 0);
    assert!(rep.dedup_chunks > 0);
    w.remove("/f", false).unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.chunks_removed > 0, "{r:?}");
    let refused = r.stage2_refused.clone().unwrap_or_default();
    assert!(refused.contains("in flight"), "{r:?}");
    assert_eq!(r.packs_rewritten + r.packs_deleted, 0, "{r:?}");
    // The held operation commits: its chunks are indexed again in their pack.
    w.transact_held(true, Some(&held), |tx| {
        let at = tx.entry("/g")?;
        let mut i = Inode::new(InodeNo(0), FileKind::File, 0o644);
        i.size = size;
        tx.write_file(&at, "/g", i, exts.clone())?;
        Ok(())
    })
    .unwrap();
    drop(held);
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.stage2_refused.is_none(), "{r:?}");
    assert_eq!(w.read_all("/g").unwrap(), data);
    w.close().unwrap();
    g.close().unwrap();
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
}

/// [GC-5]: a commit that would reference a chunk that is not indexed is refused.
#[test]
fn commit_of_an_unindexed_chunk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (w, g) = store(dir.path());
    put(&w, "/f", b"hello world");
    let exts = w.lookup("/f").unwrap().1;
    w.remove("/f", false).unwrap();
    gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    let err = w
        .transact(true, |tx| {
            let at = tx.entry("/h")?;
            let i = Inode::new(InodeNo(0), FileKind::File, 0o644);
            tx.write_file(&at, "/h", i, exts.clone())?;
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("not in the chunk index"), "{err}");
    assert!(matches!(w.stat("/h"), Err(Error::NotFound { .. })));
    w.close().unwrap();
    g.close().unwrap();
}

/// A snapshot that is not ready blocks stage 1 (its references are unknown), and names are
/// checked; `/.snapshots` is reserved ([SNAP-5]).
#[test]
fn pending_snapshot_blocks_stage1_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (w, g) = store(dir.path());
    put(&w, "/f", &noise(9, 100_000));
    w.transact(true, |tx| {
        tx.snapshot_op(Op::SnapshotBegin {
            id: 42,
            name: b"half".to_vec(),
            time: verfs_engine::meta::Timestamp::now(),
        });
        Ok(())
    })
    .unwrap();
    w.remove("/f", false).unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.chunks_removed, 0);
    assert!(r.stage1_skipped.unwrap().contains("half"));
    assert!(w.snapshot_create("half").is_err());
    for bad in ["", "a/b", "..", "."] {
        let e = w.snapshot_create(bad).unwrap_err().to_string();
        assert!(e.contains("snapshot"), "{e}");
    }
    let e = w
        .mkdir("/.snapshots", 0o755, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reserved"), "{e}");
    w.close().unwrap();
    g.close().unwrap();
}

/// Every writer appends only to packs it created, and a sealed pack never changes: a second
/// handle (its own lease, as a second process) stores its data in a pack of its own, and neither
/// its puts nor a GC pass with nothing to reclaim change a byte of the first handle's sealed
/// packs or their indexes.
///
/// proves [PACK-5]
#[test]
fn sealed_packs_never_change_and_each_writer_has_its_own_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (w, g) = store(dir.path());
    let root = dir.path().join("st");
    // Past the 1 MiB target size: the writer seals the pack.
    put(&w, "/a", &noise(11, 3 << 20));
    let sealed: Vec<(std::path::PathBuf, Vec<u8>, Vec<u8>)> = fs::read_dir(root.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack") && p.with_extension("idx").exists())
        .map(|p| {
            let pack = fs::read(&p).unwrap();
            let idx = fs::read(p.with_extension("idx")).unwrap();
            (p, pack, idx)
        })
        .collect();
    assert!(!sealed.is_empty(), "no sealed pack after a 3 MiB put");
    let packs_before = fs::read_dir(root.join("packs")).unwrap().count();
    put(&g, "/b", &noise(12, 3 << 20));
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.chunks_removed, 0, "{r:?}");
    for (p, pack, idx) in &sealed {
        assert!(fs::read(p).unwrap() == *pack, "sealed {p:?} changed");
        assert!(
            fs::read(p.with_extension("idx")).unwrap() == *idx,
            "the index of sealed {p:?} changed"
        );
    }
    assert!(
        fs::read_dir(root.join("packs")).unwrap().count() > packs_before,
        "the second handle's chunks went into no pack of its own"
    );
    assert_eq!(w.read_all("/a").unwrap(), noise(11, 3 << 20));
    assert_eq!(w.read_all("/b").unwrap(), noise(12, 3 << 20));
    w.close().unwrap();
    g.close().unwrap();
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
}

/// Many small files committed in batches of one directory each (through the library, fast).
fn many_files(s: &Store, dirs: usize, per: usize) {
    let mut held = s.hold();
    let (extents, size) = s
        .write_stream(
            &b"shared bytes\n"[..],
            &mut TransferReport::default(),
            &mut held,
        )
        .unwrap();
    for d in 0..dirs {
        let files: Vec<PendingFile> = (0..per)
            .map(|f| {
                let mut inode = Inode::new(InodeNo(0), FileKind::File, 0o644);
                inode.size = size;
                PendingFile {
                    comps: vec![
                        format!("d{d:04}").into_bytes(),
                        format!("f{f:04}").into_bytes(),
                    ],
                    inode,
                    extents: extents.clone(),
                }
            })
            .collect();
        let dir = (
            vec![format!("d{d:04}").into_bytes()],
            Inode::new(InodeNo(0), FileKind::Dir, 0o755),
        );
        s.commit_files(&[], &[dir], files, Some(&held)).unwrap();
    }
}

// proves [SNAP-1] [META-5]: a snapshot and a checkpoint cost the pages of what changed, and a
// diff reads pages in proportion to the changes, not to the tree.
#[test]
fn snapshots_share_pages_and_diff_reads_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _g) = store(dir.path());
    many_files(&w, 20, 1000);
    w.checkpoint_and_truncate().unwrap();
    let c1 = w.snapshot_create("s1").unwrap();
    assert_eq!(
        c1.file_bytes, 0,
        "nothing changed since the checkpoint: no new page"
    );
    put(&w, "/top", b"new content");
    {
        // Replace /d0007/f0005 with new content.
        let mut held = w.hold();
        let (extents, size) = w
            .write_stream(
                &b"other bytes\n"[..],
                &mut TransferReport::default(),
                &mut held,
            )
            .unwrap();
        let mut inode = Inode::new(InodeNo(0), FileKind::File, 0o644);
        inode.size = size;
        let f = PendingFile {
            comps: vec![b"d0007".to_vec(), b"f0005".to_vec()],
            inode,
            extents,
        };
        w.commit_files(&[], &[], vec![f], Some(&held)).unwrap();
    }
    w.rmdir("/d0019").unwrap_err(); // not empty: refused, changes nothing
    w.remove("/d0003/f0001", false).unwrap();
    let c2 = w.snapshot_create("s2").unwrap();
    assert!(
        c2.file_bytes > 0 && c2.file_bytes < 256 << 10,
        "a snapshot after 3 changes wrote {} bytes of pages",
        c2.file_bytes
    );
    let before = w.pages().stats();
    let d = w.snapshot_diff("s1", "s2").unwrap();
    let reads = w.pages().stats().page_reads - before.page_reads;
    let got: Vec<(char, &str)> = d
        .iter()
        .map(|c| (c.kind.letter(), c.path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ('M', "/"),
            ('M', "/d0003"),
            ('D', "/d0003/f0001"),
            ('M', "/d0007"),
            ('M', "/d0007/f0005"),
            ('A', "/top"),
        ]
    );
    assert!(w.snapshot_diff("s2", "s2").unwrap().is_empty());
    let live = w.snapshot_diff("s2", "/").unwrap();
    assert!(live.is_empty(), "{live:?}");
    let r = fsck(&dir.path().join("st")).unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    // The trees of 20,000 files are some thousands of pages; the diff of three changes, with the
    // lookups that name the changed paths, asks for about a hundred (cache hits included).
    assert!(
        reads * 5 < r.pages,
        "the diff asked for {reads} pages of {} in all",
        r.pages
    );
}

// proves [META-3] [META-4]: a reader that rested on an old checkpoint moves onto the new one in
// its log-truncate vote, so the page sweep may delete the page files only old checkpoints
// reached, and the reader still answers every lookup afterwards.
#[test]
fn page_sweep_after_truncation_leaves_every_reader_working() {
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = store(dir.path());
    let root = dir.path().join("st");
    let page_files = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join("meta"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    many_files(&w, 3, 500);
    w.checkpoint_and_truncate().unwrap();
    let first = page_files();
    // The reader rests on that checkpoint (it reads through it).
    assert_eq!(r.list("/d0001").unwrap().len(), 500);
    for f in 0..500 {
        w.remove(&format!("/d0000/f{f:04}"), false).unwrap();
    }
    // Checkpoints whose changes the next one rewrites again: the pages of the middle ones end
    // up reached by no root. Each truncation needs the reader's vote: it moves onto the newest.
    put(&w, "/after", b"round 0");
    w.checkpoint_and_truncate().unwrap();
    // A second reader opens now: it rests on the checkpoint of round 0, whose page file the
    // later rounds replace.
    let r0 = Store::open(&root, OpenOptions::new("test reader 0")).unwrap();
    assert_eq!(r0.read_all("/after").unwrap(), b"round 0");
    for round in 1..4 {
        put(&w, "/after", format!("round {round}").as_bytes());
        w.checkpoint_and_truncate().unwrap();
    }
    let before = page_files();
    assert!(before.len() >= 4, "{before:?}");
    gc::run_pass(&w, &mut |_, _, _| {}).unwrap();
    let after = page_files();
    assert!(
        after.len() < before.len() && after.contains(&first[0]),
        "the sweep removed no page file, or a live one: {before:?} then {after:?}"
    );
    // Every page the reader needs is still there: it lists, stats and reads.
    assert!(r.list("/d0000").unwrap().is_empty());
    assert_eq!(r.list("/d0002").unwrap().len(), 500);
    assert_eq!(r.read_all("/after").unwrap(), b"round 3");
    assert_eq!(r0.read_all("/after").unwrap(), b"round 3");
    assert_eq!(r0.list("/d0001").unwrap().len(), 500);
    assert!(r0.list("/d0000").unwrap().is_empty());
    let fresh = Store::open(&root, OpenOptions::new("test fresh")).unwrap();
    assert_eq!(fresh.list("/d0001").unwrap().len(), 500);
    let rep = fsck(&root).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

fn unique_content(dir: &str, f: usize) -> String {
    format!("{dir} file {f} {}\n", f * 7919)
}

/// `n` small files with distinct bytes (so `n` random chunk ids) under the new directory `dir`,
/// in one commit.
fn unique_files(s: &Store, dir: &str, n: usize) {
    let mut held = s.hold();
    let files: Vec<PendingFile> = (0..n)
        .map(|f| {
            let data = unique_content(dir, f);
            let (extents, size) = s
                .write_stream(data.as_bytes(), &mut TransferReport::default(), &mut held)
                .unwrap();
            let mut inode = Inode::new(InodeNo(0), FileKind::File, 0o644);
            inode.size = size;
            PendingFile {
                comps: vec![dir.as_bytes().to_vec(), format!("f{f:05}").into_bytes()],
                inode,
                extents,
            }
        })
        .collect();
    let d = (
        vec![dir.as_bytes().to_vec()],
        Inode::new(InodeNo(0), FileKind::Dir, 0o755),
    );
    s.commit_files(&[], &[d], files, Some(&held)).unwrap();
}

// proves [META-4]: a GC pass rebuilds live trees spread thin over many page files into one
// file, the sweep then deletes the old ones, and every reader, snapshot and fresh process keeps
// working on the same content.
#[test]
fn gc_compacts_page_files_the_live_trees_are_spread_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("st");
    Store::init(&root).unwrap();
    fs::write(
        root.join("config.toml"),
        format!("{CONFIG}\n[gc]\ncompact_slack = 0\n"),
    )
    .unwrap();
    let w = Store::open(&root, OpenOptions::new("test writer")).unwrap();
    let r = Store::open(&root, OpenOptions::new("test reader")).unwrap();
    // A chunk index of 3,000 random ids, then rounds of 20 more: each round's checkpoint
    // rewrites some leaves, and every round's file keeps a few live ones.
    unique_files(&w, "base", 3000);
    w.checkpoint_and_truncate().unwrap();
    w.snapshot_create("early").unwrap();
    for round in 0..40 {
        unique_files(&w, &format!("round{round:02}"), 20);
        w.checkpoint_and_truncate().unwrap();
    }
    let files = || fs::read_dir(root.join("meta")).unwrap().count();
    let before = files();
    let rep = gc::run_pass(&w, &mut |_, _, _| {}).unwrap();
    let (spanned, live) = rep
        .pages_compacted
        .unwrap_or_else(|| panic!("no compaction: {rep:?}"));
    assert!(spanned > 3 * live, "{spanned} {live}");
    let after = files();
    assert!(after < before, "{before} page files, then {after}: {rep:?}");
    // Readers that rested on older checkpoints, the snapshot and a fresh process read it all.
    assert_eq!(r.list("/base").unwrap().len(), 3000);
    let content = |d: &str, f: usize| unique_content(d, f).into_bytes();
    assert_eq!(
        r.read_all("/round39/f00019").unwrap(),
        content("round39", 19)
    );
    assert_eq!(
        w.read_all("/.snapshots/early/base/f02999").unwrap(),
        content("base", 2999)
    );
    let fresh = Store::open(&root, OpenOptions::new("test fresh")).unwrap();
    assert_eq!(fresh.read_all("/base/f00007").unwrap(), content("base", 7));
    // A second pass finds nothing to compact.
    let rep = gc::run_pass(&w, &mut |_, _, _| {}).unwrap();
    assert!(rep.pages_compacted.is_none(), "{rep:?}");
    fresh.close().unwrap();
    r.close().unwrap();
    w.close().unwrap();
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
}
