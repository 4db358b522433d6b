//! `verfs repair` (`data-layout.md` 5.12): a store is built through the library, one metadata
//! page (a namespace leaf of each kind of key, an internal page, a chunk index leaf) or one log
//! record in the middle of the log is damaged, and repair runs. Each case checks that fsck is clean
//! afterwards, that what the report says was lost is exactly what the damaged page (or record)
//! held, computed from the set of files written and the keys the page held before the damage,
//! and that everything else reads back byte for byte where it was (or below the directory that
//! moved into `/lost+found`).
//!
//! proves [REPAIR-1] [REPAIR-2] [REPAIR-3] [REPAIR-4] [REPAIR-5] [REPAIR-6]
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use verfs_coordination::txlog::{self, RecordAt};
use verfs_engine::format::meta::decode_ops;
use verfs_engine::meta::tree::{PagePtr, PageStore, Root};
use verfs_engine::meta::Op;
use verfs_engine::ops::fsck::fsck;
use verfs_engine::ops::repair::{
    repair, LossKind, Outcome, RepairError, RepairOptions, RepairReport,
};
use verfs_engine::ops::transfer;
use verfs_engine::store::{OpenOptions, Store};
use verfs_test_support::xorshift_bytes;

/// Small chunks (files of several extents), small segments (the checkpoint's truncation deletes
/// the log it covers, so a damaged page cannot be rebuilt from the log).
const CONFIG: &str = "\
[chunking]
min_size = 64
avg_size = 256
max_size = 1024

[log]
segment_size = 4096
";

/// One written inode: where it is, its parent, its content (None for a directory).
#[derive(Clone, Debug)]
struct Written {
    path: String,
    ino: u64,
    parent: u64,
    name: Vec<u8>,
    content: Option<Vec<u8>>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: PathBuf,
    written: Vec<Written>,
}

/// 8 directories of 400 files (empty, small, several chunks): a namespace tree of height 3.
fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::init(&root).unwrap();
        fs::write(root.join("config.toml"), CONFIG).unwrap();
        let src = dir.path().join("src");
        let mut contents = BTreeMap::new();
        for d in 0..8 {
            fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..400u64 {
                let seed = d * 1000 + f + 1;
                let len = match f % 10 {
                    0 => 0,
                    1 => 3000,
                    _ => (seed % 200) as usize + 1,
                };
                let bytes = xorshift_bytes(seed, len);
                let rel = format!("d{d}/f{f:03}");
                fs::write(src.join(&rel), &bytes).unwrap();
                contents.insert(format!("/t/{rel}"), bytes);
            }
        }
        let store = Store::open(&root, OpenOptions::new("repair test build")).unwrap();
        transfer::put(&store, &[src], "/t", &mut |_| {}).unwrap();
        store.checkpoint_and_truncate().unwrap();
        let mut written = Vec::new();
        let mut inos: HashMap<String, u64> = HashMap::new();
        inos.insert("/".into(), 1);
        written.push(Written {
            path: "/".into(),
            ino: 1,
            parent: 0,
            name: Vec::new(),
            content: None,
        });
        let mut paths: Vec<(String, Option<Vec<u8>>)> = vec![("/t".into(), None)];
        for d in 0..8 {
            paths.push((format!("/t/d{d}"), None));
        }
        paths.extend(contents.into_iter().map(|(p, c)| (p, Some(c))));
        for (p, content) in paths {
            let ino = store.stat(&p).unwrap().ino.0;
            let (parent, name) = p.rsplit_once('/').unwrap();
            let parent = if parent.is_empty() { "/" } else { parent };
            written.push(Written {
                path: p.clone(),
                ino,
                parent: inos[parent],
                name: name.as_bytes().to_vec(),
                content,
            });
            inos.insert(p, ino);
        }
        store.close().unwrap();
        assert!(fsck(&root).unwrap().is_clean());
        Fixture {
            _dir: dir,
            store: root,
            written,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A fresh copy of the fixture's store.
fn copy_of(fx: &Fixture, dir: &Path) -> PathBuf {
    let to = dir.join("store");
    copy_dir(&fx.store, &to);
    to
}

/// The page store and the roots (namespace, chunk index) the newest checkpoint names.
fn roots(store: &Path) -> (PageStore, Root, Root) {
    let (_, path) = txlog::list_checkpoints(&store.join("checkpoints"))
        .unwrap()
        .pop()
        .unwrap();
    let c = txlog::decode_checkpoint(&path, &fs::read(&path).unwrap()).unwrap();
    let b = verfs_engine::format::keys::decode_body(&c.body).unwrap();
    let pages = PageStore::open(&store.join("meta"), 1 << 20).unwrap();
    (
        pages,
        Root::decode(&b.namespace).unwrap(),
        Root::decode(&b.chunks).unwrap(),
    )
}

/// Every page of the tree with its level, in key order (left to right per level).
fn pages_of(pages: &PageStore, root: &Root) -> Vec<(PagePtr, u8)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    pages
        .visit_pages(root, &mut seen, |p, l| out.push((*p, l)))
        .unwrap();
    out
}

/// The keys of every leaf under `ptr`.
fn keys_under(pages: &PageStore, ptr: &PagePtr) -> BTreeSet<Vec<u8>> {
    let page = pages.read_page(ptr).unwrap();
    if page.is_leaf() {
        return (0..page.len()).map(|i| page.key(i).to_vec()).collect();
    }
    (0..page.len())
        .flat_map(|i| keys_under(pages, &page.child(i)))
        .collect()
}

fn flip(path: &Path, at: u64) {
    verfs_test_support::flip_byte(path, at, 0x5a);
}

/// Damage the page `ptr` names (a byte inside its entries).
fn damage(store: &Path, ptr: &PagePtr) {
    flip(
        &store.join("meta").join(format!("{:016x}.mpg", ptr.file)),
        ptr.offset + 8 + u64::from(ptr.len) / 2,
    );
}

fn ino_be(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}

/// Did the damaged keys hold one of this inode's own records (attributes, its entry, extents)?
fn affected(w: &Written, lost: &BTreeSet<Vec<u8>>) -> bool {
    let i = [&[b'i'][..], &ino_be(w.ino)].concat();
    let d = [&[b'd'][..], &ino_be(w.parent), &w.name].concat();
    let x = [&[b'x'][..], &ino_be(w.ino)].concat();
    lost.contains(&i)
        || (w.parent != 0 && lost.contains(&d))
        || (w.content.as_ref().is_some_and(|c| !c.is_empty())
            && lost.iter().any(|k| k.starts_with(&x)))
}

/// The checks every page case shares: fsck clean, the inodes the report names are exactly the
/// affected ones, each affected one is where and what the report says, every other file reads
/// back byte for byte at its path (or under its directory's new place in /lost+found).
fn check_repaired(store: &Path, fx: &Fixture, lost_keys: &BTreeSet<Vec<u8>>, r: &RepairReport) {
    let f = fsck(store).unwrap();
    assert!(f.is_clean(), "fsck after repair: {:?}", f.problems);
    let want: BTreeSet<u64> = fx
        .written
        .iter()
        .filter(|w| affected(w, lost_keys))
        .map(|w| w.ino)
        .collect();
    assert!(
        !want.is_empty(),
        "the damaged page held no inode's record: the case tests nothing"
    );
    let got: BTreeSet<u64> = r.losses.iter().map(|l| l.ino).collect();
    assert_eq!(got, want, "reported {:#?}", r.losses);
    assert_eq!(r.outcome(), Outcome::Lost);
    let moved: HashMap<u64, String> = r
        .losses
        .iter()
        .filter(|l| l.kind == LossKind::MovedToLostFound)
        .map(|l| (l.ino, l.path.clone()))
        .collect();
    let by_ino: HashMap<u64, &Written> = fx.written.iter().map(|w| (w.ino, w)).collect();
    // Where a path is now: under the nearest ancestor that moved into /lost+found.
    let now_at = |w: &Written| -> String {
        let mut rest = Vec::new();
        let mut at = w;
        loop {
            if let Some(m) = moved.get(&at.ino) {
                rest.reverse();
                return [m.clone()]
                    .into_iter()
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join("/");
            }
            if at.parent == 0 {
                return w.path.clone();
            }
            rest.push(String::from_utf8_lossy(&at.name).into_owned());
            at = by_ino[&at.parent];
        }
    };
    let s = Store::open(store, OpenOptions::new("repair test check")).unwrap();
    for w in &fx.written {
        let Some(content) = &w.content else { continue };
        let loss = r.losses.iter().find(|l| l.ino == w.ino);
        match loss.map(|l| l.kind) {
            None | Some(LossKind::MovedToLostFound) | Some(LossKind::Recreated) => {
                let p = now_at(w);
                assert_eq!(
                    &s.read_all(&p).unwrap(),
                    content,
                    "{} (now {p}) does not read back",
                    w.path
                );
                assert_eq!(s.stat(&p).unwrap().ino.0, w.ino, "{p}");
            }
            Some(LossKind::EntryRemoved) => {
                assert!(s.stat(&now_at(w)).is_err(), "{} is still there", w.path);
            }
            Some(LossKind::DataLost) => {
                assert_eq!(
                    s.stat(&now_at(w)).unwrap().size,
                    content.len() as u64,
                    "{}",
                    w.path
                );
            }
            Some(k) => panic!("{}: unexpected loss {k:?}", w.path),
        }
    }
    s.close().unwrap();
    // A second repair finds nothing to do.
    let again = repair(store, RepairOptions::default()).unwrap();
    assert_eq!(again.outcome(), Outcome::Clean, "{again:#?}");
}

/// A namespace leaf holding directory entries, one holding inode records, one holding extents.
#[test]
fn a_damaged_leaf_loses_exactly_the_records_it_held() {
    let fx = fixture();
    for tag in [b'd', b'i', b'x'] {
        let tmp = tempfile::tempdir().unwrap();
        let store = copy_of(fx, tmp.path());
        let (pages, ns, _) = roots(&store);
        let leaves: Vec<PagePtr> = pages_of(&pages, &ns)
            .into_iter()
            .filter(|(p, l)| *l == 0 && keys_under(&pages, p).iter().all(|k| k[0] == tag))
            .map(|(p, _)| p)
            .collect();
        assert!(
            leaves.len() > 2,
            "tag {}: {} leaves",
            tag as char,
            leaves.len()
        );
        let leaf = leaves[leaves.len() / 2];
        let lost = keys_under(&pages, &leaf);
        drop(pages);
        damage(&store, &leaf);
        let dry = repair(&store, RepairOptions { dry_run: true }).unwrap();
        let r = repair(&store, RepairOptions::default()).unwrap();
        assert_eq!(
            dry.losses, r.losses,
            "the dry run reports what the repair does"
        );
        assert_eq!(r.damaged_pages.len(), 1, "{:#?}", r.damaged_pages);
        assert_eq!(r.damaged_pages[0].offset, leaf.offset);
        check_repaired(&store, fx, &lost, &r);
    }
}

/// An internal page (not the root): its whole subtree is lost, nothing else.
#[test]
fn a_damaged_internal_page_loses_exactly_its_subtree() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let store = copy_of(fx, tmp.path());
    let (pages, ns, _) = roots(&store);
    let all = pages_of(&pages, &ns);
    let height = all.iter().map(|(_, l)| *l).max().unwrap();
    assert!(
        height >= 2,
        "the fixture's tree has height {height}: no internal page below the root"
    );
    let internal: Vec<PagePtr> = all
        .iter()
        .filter(|(_, l)| *l == 1)
        .map(|(p, _)| *p)
        .collect();
    let page = internal[internal.len() / 2];
    let lost = keys_under(&pages, &page);
    drop(pages);
    damage(&store, &page);
    let r = repair(&store, RepairOptions::default()).unwrap();
    assert_eq!(r.damaged_pages.len(), 1);
    check_repaired(&store, fx, &lost, &r);
}

/// A chunk index leaf: rebuilt from the packs' indexes, nothing lost.
#[test]
fn a_damaged_chunk_index_page_is_rebuilt_from_the_packs() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let store = copy_of(fx, tmp.path());
    let (pages, _, chunks) = roots(&store);
    let leaves: Vec<PagePtr> = pages_of(&pages, &chunks)
        .into_iter()
        .filter(|(_, l)| *l == 0)
        .map(|(p, _)| p)
        .collect();
    let leaf = leaves[leaves.len() / 2];
    let held = keys_under(&pages, &leaf).len() as u64;
    drop(pages);
    damage(&store, &leaf);
    assert!(!fsck(&store).unwrap().is_clean());
    let r = repair(&store, RepairOptions::default()).unwrap();
    assert_eq!(r.outcome(), Outcome::Repaired, "{r:#?}");
    assert!(r.losses.is_empty(), "{:#?}", r.losses);
    assert!(
        r.chunks_recovered >= held,
        "{} chunks recovered, the leaf held {held}",
        r.chunks_recovered
    );
    let f = fsck(&store).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
    let s = Store::open(&store, OpenOptions::new("repair test check")).unwrap();
    for w in &fx.written {
        if let Some(c) = &w.content {
            assert_eq!(&s.read_all(&w.path).unwrap(), c, "{}", w.path);
        }
    }
    s.close().unwrap();
}

/// An older checkpoint still on disk and the log since it hold what a damaged page of the newest
/// checkpoint held: nothing is lost.
#[test]
fn an_older_checkpoint_and_the_log_recover_a_damaged_page() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::init(&root).unwrap();
    let store = Store::open(&root, OpenOptions::new("repair test")).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..150u64 {
        let p = format!("/f{i:03}");
        let c = xorshift_bytes(i + 1, 40);
        store.commit_files_for_test(&p, &c);
        files.insert(p, c);
    }
    // A checkpoint without the log truncation: the log behind it stays.
    store.log().checkpoint().unwrap();
    for i in 0..150u64 {
        let p = format!("/g{i:03}");
        let c = xorshift_bytes(i + 1000, 40);
        store.commit_files_for_test(&p, &c);
        files.insert(p, c);
    }
    store.log().checkpoint().unwrap();
    store.close().unwrap();
    let (pages, ns, _) = roots(&root);
    let newest = pages_of(&pages, &ns);
    let (ckpts, _) = (
        txlog::list_checkpoints(&root.join("checkpoints")).unwrap(),
        (),
    );
    assert_eq!(ckpts.len(), 2);
    let old = txlog::decode_checkpoint(&ckpts[0].1, &fs::read(&ckpts[0].1).unwrap()).unwrap();
    let old_ns = Root::decode(
        &verfs_engine::format::keys::decode_body(&old.body)
            .unwrap()
            .namespace,
    )
    .unwrap();
    let old_pages: BTreeSet<PagePtr> = pages_of(&pages, &old_ns)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    // A leaf only the newest checkpoint has.
    let leaf = newest
        .iter()
        .find(|(p, l)| *l == 0 && !old_pages.contains(p))
        .unwrap()
        .0;
    drop(pages);
    damage(&root, &leaf);
    let r = repair(&root, RepairOptions::default()).unwrap();
    assert_eq!(r.outcome(), Outcome::Repaired, "{r:#?}");
    assert_eq!(r.base_lsn, old.lsn.0);
    assert!(r.damaged_pages[0].recovered_from.is_some());
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
    let s = Store::open(&root, OpenOptions::new("repair test check")).unwrap();
    for (p, c) in &files {
        assert_eq!(&s.read_all(p).unwrap(), c, "{p}");
    }
    s.close().unwrap();
}

trait CommitForTest {
    fn commit_files_for_test(&self, path: &str, content: &[u8]);
}

impl CommitForTest for Store {
    /// One file, one command: its own log records.
    fn commit_files_for_test(&self, path: &str, content: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, content).unwrap();
        transfer::put(self, &[f], path, &mut |_| {}).unwrap();
    }
}

/// The lsn and byte offset of the record that links `name`.
fn record_linking(seg: &Path, name: &[u8]) -> (u64, u64) {
    let f = fs::File::open(seg).unwrap();
    let len = f.metadata().unwrap().len();
    let mut off = txlog::SEGMENT_HEADER_LEN;
    loop {
        match txlog::read_record_at(&f, off, len).unwrap() {
            RecordAt::Valid {
                kind: 1,
                lsn,
                payload,
                len: n,
            } => {
                let links = decode_ops(&payload)
                    .unwrap()
                    .iter()
                    .any(|o| matches!(o, Op::Link { name: x, .. } if x == name));
                if links {
                    return (lsn.0, off);
                }
                off += n;
            }
            other => panic!("no record links {name:?}: {other:?}"),
        }
    }
}

/// A damaged record in the middle of the log: a normal open refuses, naming the segment, the
/// byte and `verfs repair`; repair applies the records before and after it, reports the record
/// by segment, offset and lsn, and only what that record did is lost.
#[test]
fn a_damaged_log_record_in_the_middle_is_cut_and_the_rest_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::init(&root).unwrap();
    let store = Store::open(&root, OpenOptions::new("repair test")).unwrap();
    store.commit_files_for_test("/before", &xorshift_bytes(1, 5000));
    store.checkpoint_and_truncate().unwrap();
    store.commit_files_for_test("/a", &xorshift_bytes(2, 5000));
    store.commit_files_for_test("/b", &xorshift_bytes(3, 5000));
    store.commit_files_for_test("/c", &xorshift_bytes(4, 5000));
    store.mkdir("/after", 0o755, false).unwrap();
    store.close().unwrap();
    let (_, seg) = txlog::list_segments(&root.join("log"))
        .unwrap()
        .pop()
        .unwrap();
    let (lsn, off) = record_linking(&seg, b"b");
    flip(&seg, off + 24 + 3);

    // [REPAIR-5]: a normal open refuses, naming the segment and the byte, pointing at repair.
    let e = Store::open(&root, OpenOptions::new("repair test"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&seg.display().to_string()) && e.contains(&format!("at byte {off}")),
        "{e}"
    );
    assert!(e.contains("verfs repair"), "{e}");

    let r = repair(&root, RepairOptions::default()).unwrap();
    assert_eq!(r.outcome(), Outcome::Lost);
    assert_eq!(
        r.damaged_log_records.len(),
        1,
        "{:#?}",
        r.damaged_log_records
    );
    let d = &r.damaged_log_records[0];
    assert_eq!(
        (d.segment.clone(), d.offset, d.lsns.clone()),
        (seg.clone(), off, vec![lsn])
    );
    assert_eq!(r.lost_lsns, vec![lsn]);
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
    let s = Store::open(&root, OpenOptions::new("repair test check")).unwrap();
    assert_eq!(s.read_all("/before").unwrap(), xorshift_bytes(1, 5000));
    assert_eq!(s.read_all("/a").unwrap(), xorshift_bytes(2, 5000));
    assert!(s.stat("/b").is_err(), "the damaged record's file is gone");
    assert_eq!(
        s.read_all("/c").unwrap(),
        xorshift_bytes(4, 5000),
        "a record after the damage is applied"
    );
    assert!(s.stat("/after").is_ok());
    s.close().unwrap();
}

/// [REPAIR-1]: repair refuses while another process holds a live lease, naming its pid; once it
/// is gone, a healthy store is left alone (exit 0, nothing written).
#[test]
fn repair_refuses_while_a_process_uses_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::init(&root).unwrap();
    let store = Store::open(&root, OpenOptions::new("repair test holder")).unwrap();
    // A healthy store with what looks odd but is not damage: a file whose recorded link (its
    // parent record) was removed while another link remains, a symlink, an empty directory.
    store.commit_files_for_test("/f", b"data");
    store.link("/f", "/g", false).unwrap();
    store.link("/f", "/h", false).unwrap();
    store.remove("/h", false).unwrap(); // the recorded link: /f and /g remain, no record
    store.link("g", "/sym", true).unwrap();
    store.mkdir("/empty", 0o700, false).unwrap();
    match repair(&root, RepairOptions::default()) {
        Err(e @ RepairError::Busy { .. }) => {
            let m = e.to_string();
            assert!(m.contains(&format!("pid {}", std::process::id())), "{m}");
            assert!(m.contains("repair test holder"), "{m}");
        }
        other => panic!("repair ran beside a live process: {other:?}"),
    }
    store.close().unwrap();
    assert_eq!(
        repair(&root, RepairOptions::default()).unwrap().outcome(),
        Outcome::Clean
    );
}

/// [REPAIR-6]: a dry run reports and changes nothing.
#[test]
fn a_dry_run_changes_nothing() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let store = copy_of(fx, tmp.path());
    let (pages, ns, _) = roots(&store);
    let leaf = pages_of(&pages, &ns)
        .into_iter()
        .find(|(_, l)| *l == 0)
        .unwrap()
        .0;
    drop(pages);
    damage(&store, &leaf);
    let snapshot = |root: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for sub in ["log", "checkpoints", "meta", "packs"] {
            for e in fs::read_dir(root.join(sub)).unwrap() {
                let p = e.unwrap().path();
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
        out
    };
    let before = snapshot(&store);
    let r = repair(&store, RepairOptions { dry_run: true }).unwrap();
    assert_eq!(r.outcome(), Outcome::Lost);
    assert!(r.checkpoint.is_none() && r.removed.is_empty());
    assert_eq!(snapshot(&store), before);
    assert!(
        fs::read_dir(store.join("leases")).unwrap().next().is_none(),
        "the dry run's lease is gone"
    );
}

/// [REPAIR-2]: a snapshot taken before the checkpoint holds the same pages, written in another
/// file: a damaged page of the live tree is read from the snapshot's copy, nothing is lost.
#[test]
fn a_page_another_root_holds_too_is_recovered_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::init(&root).unwrap();
    fs::write(root.join("config.toml"), CONFIG).unwrap();
    let store = Store::open(&root, OpenOptions::new("repair test")).unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..300u64 {
        let c = xorshift_bytes(i + 7, 60);
        fs::write(src.join(format!("f{i:03}")), &c).unwrap();
        files.insert(format!("/t/f{i:03}"), c);
    }
    transfer::put(&store, &[src], "/t", &mut |_| {}).unwrap();
    store.snapshot_create("s1").unwrap();
    store.checkpoint_and_truncate().unwrap();
    store.close().unwrap();
    let (pages, ns, _) = roots(&root);
    let leaves: Vec<PagePtr> = pages_of(&pages, &ns)
        .into_iter()
        .filter(|(_, l)| *l == 0)
        .map(|(p, _)| p)
        .collect();
    let leaf = leaves[leaves.len() / 2];
    drop(pages);
    damage(&root, &leaf);
    let r = repair(&root, RepairOptions::default()).unwrap();
    assert_eq!(r.outcome(), Outcome::Repaired, "{r:#?}");
    assert!(
        r.damaged_pages.iter().all(|d| d
            .recovered_from
            .as_deref()
            .is_some_and(|f| f.contains("another root"))),
        "{:#?}",
        r.damaged_pages
    );
    let f = fsck(&root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
    let s = Store::open(&root, OpenOptions::new("repair test check")).unwrap();
    for (p, c) in &files {
        assert_eq!(&s.read_all(p).unwrap(), c, "{p}");
        assert_eq!(
            &s.read_all(&format!("/.snapshots/s1{p}")).unwrap(),
            c,
            "{p} in the snapshot"
        );
    }
    s.close().unwrap();
}
