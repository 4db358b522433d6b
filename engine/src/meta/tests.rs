//! Unit tests of the metadata state and transactions.

use verfs_coordination::txlog::{Lsn, StateMachine};

use std::sync::Arc;

use super::*;
use crate::error::Error;
use crate::ids::{ChunkId, InodeNo, PackId};

fn commit(
    s: &mut MetaState,
    f: impl FnOnce(&mut Tx<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let payload = {
        let mut tx = Tx::new(s);
        f(&mut tx)?;
        tx.finish()
    };
    s.apply(Lsn(1), &payload).map_err(Error::Internal)?;
    Ok(())
}

#[test]
fn namespace_ops_keep_link_counts() {
    let mut s = MetaState::empty(&None);
    commit(&mut s, |tx| tx.mkdir_p("/a/b", 0o755).map(|_| ())).unwrap();
    let root = s.inode(InodeNo::ROOT).unwrap().unwrap().clone();
    assert_eq!(root.nlink, 3);
    commit(&mut s, |tx| {
        let at = tx.entry("/a/f")?;
        tx.write_file(
            &at,
            "/a/f",
            Inode::new(InodeNo(0), FileKind::File, 0o644),
            vec![],
        )
        .map(|_| ())
    })
    .unwrap();
    commit(&mut s, |tx| {
        let ino = tx.resolve("/a/f")?;
        let to = tx.entry("/a/b/g")?;
        tx.link(ino, "/a/f", &to, "/a/b/g")
    })
    .unwrap();
    let f = s
        .lookup(s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap(), b"f")
        .unwrap()
        .unwrap();
    assert_eq!(s.inode(f).unwrap().unwrap().nlink, 2);
    // rmdir of a non-empty dir fails, mkdir of an existing name fails.
    let err = commit(&mut s, |tx| {
        let at = tx.entry("/a/b")?;
        tx.remove(&at, "/a/b", true)
    });
    assert!(matches!(err, Err(Error::NotEmpty { .. })));
    let err = commit(&mut s, |tx| {
        let at = tx.entry("/a")?;
        tx.create(&at, "/a", Inode::new(InodeNo(0), FileKind::Dir, 0o755))
            .map(|_| ())
    });
    assert!(matches!(err, Err(Error::Exists { .. })));
    // Moving a directory into itself fails.
    let err = commit(&mut s, |tx| {
        let from = tx.entry("/a")?;
        let to = tx.entry("/a/b/a")?;
        tx.rename(&from, "/a", &to, "/a/b/a")
    });
    let err = err.unwrap_err();
    // rename(2) answers EINVAL (the fs crate maps InvalidPath so).
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    // ... and so does exchanging it with an entry of its own subtree (renameat2 EXCHANGE).
    let err = commit(&mut s, |tx| {
        let a = tx.entry("/a")?;
        let b = tx.entry("/a/b")?;
        tx.exchange(&a, "/a", &b, "/a/b")
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    // Renaming a file onto a directory that contains it: ENOTEMPTY, as Linux (not EISDIR).
    let err = commit(&mut s, |tx| {
        let from = tx.entry("/a/b/g")?;
        let to = tx.entry("/a")?;
        tx.rename(&from, "/a/b/g", &to, "/a")
    })
    .unwrap_err();
    assert!(matches!(err, Error::NotEmpty { .. }), "{err}");
    commit(&mut s, |tx| {
        let at = tx.entry("/a")?;
        tx.remove_tree(&at, "/a")
    })
    .unwrap();
    assert_eq!(s.inode_count() as usize, 1);
    assert_eq!(s.inode(InodeNo::ROOT).unwrap().unwrap().nlink, 2);
}

#[test]
fn checkpoint_roundtrip_preserves_state() {
    let mut s = MetaState::empty(&None);
    commit(&mut s, |tx| {
        tx.mkdir_p("/x/y", 0o700)?;
        let at = tx.entry("/x/y/z")?;
        let id = ChunkId(42);
        tx.add_chunk(
            id,
            ChunkEntry {
                pack: PackId(7),
                raw_len: 10,
            },
        )?;
        tx.write_file(
            &at,
            "/x/y/z",
            Inode::new(InodeNo(0), FileKind::File, 0o600),
            vec![Extent {
                file_off: 0,
                chunk: id,
                chunk_off: 0,
                len: 10,
            }],
        )
        .map(|_| ())
    })
    .unwrap();
    let bytes = s.encode_checkpoint(Lsn(1));
    assert!(bytes.is_err(), "an in-memory state has no pages to write");
}

#[test]
fn path_of_finds_a_path_of_any_named_inode() {
    let mut s = MetaState::empty(&None);
    commit(&mut s, |tx| tx.mkdir_p("/a/b", 0o755).map(|_| ())).unwrap();
    let b = s
        .lookup(s.lookup(InodeNo::ROOT, b"a").unwrap().unwrap(), b"b")
        .unwrap()
        .unwrap();
    assert_eq!(s.path_of(b).as_deref(), Some(&b"/a/b"[..]));
    assert_eq!(s.path_of(InodeNo::ROOT).as_deref(), Some(&b"/"[..]));
    assert_eq!(s.path_of(InodeNo(999_999)), None);
}

fn page_store() -> (tempfile::TempDir, Arc<tree::PageStore>) {
    let d = tempfile::tempdir().unwrap();
    let p = Arc::new(tree::PageStore::open(d.path(), 256 << 10).unwrap());
    (d, p)
}

#[test]
fn checkpoint_on_pages_roundtrip_preserves_state() {
    let (_d, pages) = page_store();
    let ctx = Some(pages.clone());
    let mut s = MetaState::empty(&ctx);
    commit(&mut s, |tx| {
        tx.mkdir_p("/x/y", 0o700)?;
        let at = tx.entry("/x/y/z")?;
        tx.add_chunk(
            ChunkId(42),
            ChunkEntry {
                pack: PackId(7),
                raw_len: 10,
            },
        )?;
        tx.write_file(
            &at,
            "/x/y/z",
            Inode::new(InodeNo(0), FileKind::File, 0o600),
            vec![Extent {
                file_off: 0,
                chunk: ChunkId(42),
                chunk_off: 0,
                len: 10,
            }],
        )
        .map(|_| ())
    })
    .unwrap();
    let body = s.encode_checkpoint(Lsn(1)).unwrap();
    let t = MetaState::decode_checkpoint(&ctx, Lsn(1), &body).unwrap();
    assert_eq!(
        t.delta_len(),
        0,
        "a loaded checkpoint holds nothing in memory"
    );
    assert_eq!(t.next_ino, s.next_ino);
    assert_eq!(t.inode_count(), s.inode_count());
    let tx = Tx::new(&t);
    let z = tx.resolve("/x/y/z").unwrap();
    assert_eq!(t.extents(z).unwrap(), s.extents(z).unwrap());
    assert_eq!(t.extent_bytes(z).unwrap(), 10);
    assert_eq!(t.chunk(ChunkId(42)).unwrap().unwrap().pack, PackId(7));
    // Resting on it drops the delta.
    s.checkpointed(Lsn(1), &body).unwrap();
    assert_eq!(s.delta_len(), 0);
    assert_eq!(s.extents(z).unwrap().len(), 1);
}

/// The reference the page-backed state is compared with: plain maps, applied the way the
/// version-2 state applied ops.
#[derive(Clone, Default, Debug, PartialEq)]
struct Model {
    inodes: std::collections::BTreeMap<u64, Inode>,
    dirs: std::collections::BTreeMap<(u64, Vec<u8>), u64>,
    extents: std::collections::BTreeMap<u64, Vec<Extent>>,
    chunks: std::collections::BTreeMap<u128, ChunkEntry>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutInode(i) => {
                self.inodes.insert(i.ino.0, i.clone());
            }
            Op::DeleteInode(ino) => {
                self.inodes.remove(&ino.0);
                self.extents.remove(&ino.0);
                self.dirs.retain(|(p, _), _| *p != ino.0);
            }
            Op::Link { parent, name, ino } => {
                self.dirs.insert((parent.0, name.clone()), ino.0);
            }
            Op::Unlink { parent, name } => {
                self.dirs.remove(&(parent.0, name.clone()));
            }
            Op::SetExtents { ino, extents } => {
                if extents.is_empty() {
                    self.extents.remove(&ino.0);
                } else {
                    self.extents.insert(ino.0, extents.clone());
                }
            }
            Op::AddChunk { id, entry } => {
                self.chunks.insert(id.0, *entry);
            }
            Op::RemoveChunk { id } => {
                self.chunks.remove(&id.0);
            }
            _ => {}
        }
    }

    /// Every lookup and listing of `s` equals the model's.
    /// `counted`: the state keeps inode and chunk counts (a snapshot tree does not).
    fn check(&self, s: &MetaState, counted: bool) -> Result<(), String> {
        for ino in 0..24u64 {
            let got = s.inode(InodeNo(ino)).map_err(|e| e.to_string())?;
            if got.as_ref() != self.inodes.get(&ino) {
                return Err(format!(
                    "inode {ino}: {got:?} vs {:?}",
                    self.inodes.get(&ino)
                ));
            }
            let want: Vec<(Vec<u8>, InodeNo)> = self
                .dirs
                .iter()
                .filter(|((p, _), _)| *p == ino)
                .map(|((_, n), c)| (n.clone(), InodeNo(*c)))
                .collect();
            let got = s.entries(InodeNo(ino)).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!("entries of {ino}: {got:?} vs {want:?}"));
            }
            if s.has_entries(InodeNo(ino)).map_err(|e| e.to_string())? != !want.is_empty() {
                return Err(format!("has_entries of {ino}"));
            }
            for (n, c) in &want {
                if s.lookup(InodeNo(ino), n).map_err(|e| e.to_string())? != Some(*c) {
                    return Err(format!("lookup {ino}/{n:?}"));
                }
            }
            let want = self.extents.get(&ino).cloned().unwrap_or_default();
            let got = s.extents(InodeNo(ino)).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!("extents of {ino}: {} vs {}", got.len(), want.len()));
            }
            let bytes: u64 = want.iter().map(|x| u64::from(x.len)).sum();
            if s.extent_bytes(InodeNo(ino)).map_err(|e| e.to_string())? != bytes {
                return Err(format!("extent bytes of {ino}"));
            }
        }
        let mut all = Vec::new();
        s.for_each_inode(|i| {
            all.push(i.ino.0);
            Ok::<(), MetaError>(())
        })
        .map_err(|e| e.to_string())?;
        if all != self.inodes.keys().copied().collect::<Vec<_>>() {
            return Err(format!("for_each_inode {all:?}"));
        }
        if counted && s.inode_count() != self.inodes.len() as u64 {
            return Err(format!(
                "inode count {} vs {}",
                s.inode_count(),
                self.inodes.len()
            ));
        }
        let mut ents = Vec::new();
        s.for_each_entry(|p, n, c| {
            ents.push(((p.0, n.to_vec()), c.0));
            Ok::<(), MetaError>(())
        })
        .map_err(|e| e.to_string())?;
        if ents != self.dirs.clone().into_iter().collect::<Vec<_>>() {
            return Err("for_each_entry".into());
        }
        let mut xs = Vec::new();
        s.for_each_extents(|i, x| {
            xs.push((i.0, x.to_vec()));
            Ok::<(), MetaError>(())
        })
        .map_err(|e| e.to_string())?;
        if xs != self.extents.clone().into_iter().collect::<Vec<_>>() {
            return Err("for_each_extents".into());
        }
        let mut cs = Vec::new();
        s.for_each_chunk(|i, e| {
            cs.push((i.0, e));
            Ok::<(), MetaError>(())
        })
        .map_err(|e| e.to_string())?;
        if cs != self.chunks.clone().into_iter().collect::<Vec<_>>() {
            return Err(format!(
                "for_each_chunk {} vs {}",
                cs.len(),
                self.chunks.len()
            ));
        }
        if counted && s.chunk_count() != self.chunks.len() as u64 {
            return Err("chunk count".into());
        }
        for id in 0..12u128 {
            if s.chunk(ChunkId(id)).map_err(|e| e.to_string())? != self.chunks.get(&id).copied() {
                return Err(format!("chunk {id}"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    /// Write the delta as pages and a checkpoint body; rest on it.
    Checkpoint,
    /// Load the newest checkpoint into a fresh state (another process opening), then replay.
    Reopen,
    /// Keep the tree as a snapshot root, checked at the end.
    Snapshot,
    /// Start the filter in front of the chunk index and build it ([META-6]).
    StartFilter,
}

fn arb_step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let ino = 1u64..24;
    let name = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 1..3);
    let extent = (0u64..1 << 20, 0u128..12, 1u32..5000).prop_map(|(o, c, l)| Extent {
        file_off: o,
        chunk: ChunkId(c),
        chunk_off: 0,
        len: l,
    });
    let extents = prop_oneof![
        8 => proptest::collection::vec(extent.clone(), 0..4),
        // Past one `x` record (1024 extents): several parts, and shrinking back to one.
        1 => proptest::collection::vec(extent, 1000..2100),
    ];
    prop_oneof![
        6 => (ino.clone(), 0u32..3).prop_map(|(i, k)| {
            let kind = [FileKind::File, FileKind::Dir, FileKind::Symlink][k as usize];
            let mut n = Inode::new(InodeNo(i), kind, 0o644);
            n.size = i * 7;
            n.atime = Timestamp { secs: 1, nsecs: 2 };
            n.mtime = n.atime;
            n.ctime = n.atime;
            Step::Op(Op::PutInode(n))
        }),
        2 => ino.clone().prop_map(|i| Step::Op(Op::DeleteInode(InodeNo(i)))),
        6 => (ino.clone(), name.clone(), ino.clone()).prop_map(|(p, n, c)| Step::Op(Op::Link {
            parent: InodeNo(p),
            name: n,
            ino: InodeNo(c),
        })),
        2 => (ino.clone(), name).prop_map(|(p, n)| Step::Op(Op::Unlink {
            parent: InodeNo(p),
            name: n,
        })),
        4 => (ino, extents).prop_map(|(i, x)| Step::Op(Op::SetExtents {
            ino: InodeNo(i),
            extents: x,
        })),
        3 => (0u128..12, 0u64..4).prop_map(|(c, p)| Step::Op(Op::AddChunk {
            id: ChunkId(c),
            entry: ChunkEntry { pack: PackId(p), raw_len: 9 },
        })),
        1 => (0u128..12).prop_map(|c| Step::Op(Op::RemoveChunk { id: ChunkId(c) })),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Reopen),
        1 => Just(Step::Snapshot),
        1 => Just(Step::StartFilter),
    ]
}

/// Runs [`Step`]s against a page-backed state and the model side by side.
struct Driver {
    pages: Arc<tree::PageStore>,
    s: MetaState,
    m: Model,
    lsn: u64,
    log: Vec<(u64, Op)>,
    ckpt: Option<(u64, Vec<u8>)>,
    /// Snapshot roots with the model at that point.
    snaps: Vec<(tree::Root, Model)>,
}

impl Driver {
    fn new(pages: &Arc<tree::PageStore>) -> Driver {
        let mut s = MetaState::empty(&Some(pages.clone()));
        s.set_delta_limit(usize::MAX);
        let mut m = Model::default();
        m.apply(&Op::PutInode(s.inode(InodeNo::ROOT).unwrap().unwrap()));
        Driver {
            pages: pages.clone(),
            s,
            m,
            lsn: 0,
            log: Vec::new(),
            ckpt: None,
            snaps: Vec::new(),
        }
    }

    fn step(&mut self, step: Step) {
        let ctx = Some(self.pages.clone());
        match step {
            Step::Op(op) => {
                self.lsn += 1;
                self.s.apply_op(self.lsn, &op).unwrap();
                self.m.apply(&op);
                self.log.push((self.lsn, op));
            }
            Step::Checkpoint => {
                let body = self.s.encode_checkpoint(Lsn(self.lsn)).unwrap();
                self.s.checkpointed(Lsn(self.lsn), &body).unwrap();
                assert_eq!(self.s.delta_len(), 0);
                self.ckpt = Some((self.lsn, body));
            }
            Step::Reopen => {
                let (at, mut t) = match &self.ckpt {
                    Some((at, body)) => (
                        *at,
                        MetaState::decode_checkpoint(&ctx, Lsn(*at), body).unwrap(),
                    ),
                    None => (0, MetaState::empty(&ctx)),
                };
                for (l, op) in self.log.iter().filter(|(l, _)| *l > at) {
                    t.apply_op(*l, op).unwrap();
                }
                self.s = t;
            }
            Step::Snapshot => {
                let (roots, _) = self.s.write_pages().unwrap();
                self.snaps.push((roots.namespace, self.m.clone()));
            }
            Step::StartFilter => {
                if let Some(b) = self.s.start_presence(1 << 20) {
                    b.run().unwrap();
                }
                assert!(self.s.presence().is_some_and(|p| p.is_ready()));
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 48, ..Default::default() })]

    // The page-backed state answers every lookup and listing like plain maps, across
    // checkpoints (delta written as copy-on-write pages, then dropped), reopening from a
    // checkpoint (a second process), snapshots (a kept root) and a filter in front of the chunk
    // index started at any point.
    #[test]
    fn state_on_pages_equals_the_model(steps in proptest::collection::vec(arb_step(), 1..80)) {
        let (_d, pages) = page_store();
        let mut d = Driver::new(&pages);
        for step in steps {
            d.step(step);
            if let Err(e) = d.m.check(&d.s, true) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
        for (root, model) in d.snaps {
            let t = MetaState::snapshot_tree(&pages, root);
            let mut model = model;
            model.chunks.clear();
            if let Err(e) = model.check(&t, false) {
                proptest::prop_assert!(false, "snapshot: {}", e);
            }
        }
    }

    // GC's marking: `mark_references` reports every chunk a state references (its pages and its
    // delta), and `for_each_reference_since` every chunk the newer state references that the
    // older may not, whatever checkpoints, reopens and snapshots lie between the two ([GC-1]).
    #[test]
    fn marking_misses_no_reference(
        steps in proptest::collection::vec(arb_step(), 1..80),
        at in 0usize..80,
    ) {
        let refs_of = |m: &Model| -> std::collections::BTreeSet<u128> {
            m.extents.values().flatten().map(|x| x.chunk.0).collect()
        };
        let (_d, pages) = page_store();
        let mut d = Driver::new(&pages);
        let mut older: Option<(MetaState, Model)> = None;
        for (n, step) in steps.into_iter().enumerate() {
            if n == at {
                older = Some((d.s.clone(), d.m.clone()));
            }
            d.step(step);
        }
        let (s, m, snaps) = (d.s, d.m, d.snaps);
        // Every reference, of the live state and of each snapshot, marked with one `seen`.
        let mut seen = std::collections::HashSet::new();
        let mut marked = std::collections::BTreeSet::new();
        s.mark_references(&mut seen, &mut |c| { marked.insert(c.0); }).unwrap();
        let missing: Vec<_> = refs_of(&m).difference(&marked).copied().collect();
        proptest::prop_assert!(missing.is_empty(), "live references not marked: {:?}", missing);
        // A page shared with the live tree or an earlier snapshot is not read again: the union
        // still holds every snapshot's references.
        for (root, _) in &snaps {
            MetaState::snapshot_tree(&pages, *root)
                .mark_references(&mut seen, &mut |c| { marked.insert(c.0); })
                .unwrap();
        }
        for (_, model) in &snaps {
            for c in refs_of(model) {
                proptest::prop_assert!(marked.contains(&c), "snapshot reference {} not marked", c);
            }
        }
        if let Some((old_s, old_m)) = older {
            let mut since = std::collections::BTreeSet::new();
            s.for_each_reference_since(&old_s, &mut |c| { since.insert(c.0); }).unwrap();
            let old_refs = refs_of(&old_m);
            let new_refs: Vec<_> = refs_of(&m)
                .into_iter()
                .filter(|c| !old_refs.contains(c) && !since.contains(c))
                .collect();
            proptest::prop_assert!(new_refs.is_empty(), "new references not reported: {:?}", new_refs);
        }
    }
}

#[test]
fn chunk_filter_has_no_false_negatives_and_few_false_positives() {
    let mut f = ChunkFilter::for_chunks(100_000, 99);
    for i in 0..100_000u128 {
        f.insert(ChunkId(
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        ));
    }
    for i in 0..100_000u128 {
        assert!(f.may_contain(ChunkId(
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        )));
    }
    let fp = (100_000..300_000u128)
        .filter(|i| {
            f.may_contain(ChunkId(
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            ))
        })
        .count();
    // 16+ bits and 11 probes per entry: about 0.05%; 0.2% leaves room for chance.
    assert!(fp < 400, "{fp} false positives in 200,000");
    // A placement (id, pack) is not the same entry as the id alone or under another pack.
    f.insert_tagged(ChunkId(5), 3);
    assert!(f.may_contain_tagged(ChunkId(5), 3));
    assert!(!f.may_contain_tagged(ChunkId(1 << 100), 3));
}

/// The case a diff of the two base trees alone misses: a file's extents removed after the
/// older checkpoint (so the older state does not reference its chunk), then set back to the
/// very same bytes (a dedup re-put) and checkpointed, so both base trees hold the same record
/// and the newer delta is empty. The older state's delta names the key.
#[test]
fn reference_restored_to_the_same_bytes_is_reported() {
    let (_d, pages) = page_store();
    let ctx = Some(pages.clone());
    let mut s = MetaState::empty(&ctx);
    let file = Inode::new(InodeNo(5), FileKind::File, 0o644);
    let xs = vec![Extent {
        file_off: 0,
        chunk: ChunkId(77),
        chunk_off: 0,
        len: 9,
    }];
    let set = |xs: Vec<Extent>| Op::SetExtents {
        ino: InodeNo(5),
        extents: xs,
    };
    s.apply_op(1, &Op::PutInode(file)).unwrap();
    s.apply_op(2, &set(xs.clone())).unwrap();
    let body = s.encode_checkpoint(Lsn(2)).unwrap();
    s.checkpointed(Lsn(2), &body).unwrap();
    s.apply_op(3, &set(Vec::new())).unwrap();
    let older = s.clone();
    s.apply_op(4, &set(xs)).unwrap();
    let body = s.encode_checkpoint(Lsn(4)).unwrap();
    s.checkpointed(Lsn(4), &body).unwrap();
    assert_eq!(s.delta_len(), 0);
    let mut since = Vec::new();
    s.for_each_reference_since(&older, &mut |c| since.push(c))
        .unwrap();
    assert!(since.contains(&ChunkId(77)), "{since:?}");
}

/// Compaction: after many checkpoints of random chunk ids (each rewrites most chunk-index
/// leaves), the live trees are spread over many files; a rebuild gives the very same roots
/// (content-defined pages) in one file, so the older files hold no live page.
#[test]
fn rebuild_gives_the_same_roots_in_one_file() {
    let (_d, pages) = page_store();
    let ctx = Some(pages.clone());
    let mut s = MetaState::empty(&ctx);
    let mut lsn = 0u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    // A tree of 20,000 chunks (about 200 leaves), then rounds of 100 new ids, each touching
    // about 40% of the leaves: every round's file keeps some live pages.
    for round in 0..16u64 {
        for _ in 0..if round == 0 { 20_000 } else { 100 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lsn += 1;
            s.apply_op(
                lsn,
                &Op::AddChunk {
                    id: ChunkId(u128::from(x) << 64 | u128::from(lsn)),
                    entry: ChunkEntry {
                        pack: PackId(round),
                        raw_len: 100,
                    },
                },
            )
            .unwrap();
        }
        let mut i = Inode::new(InodeNo(100 + round), FileKind::File, 0o644);
        i.size = round;
        s.apply_op(lsn, &Op::PutInode(i)).unwrap();
        let body = s.encode_checkpoint(Lsn(lsn)).unwrap();
        s.checkpointed(Lsn(lsn), &body).unwrap();
    }
    let (live, spanned) = s.page_spread().unwrap();
    assert!(
        spanned > 2 * live,
        "live {live} spanned {spanned}: not spread, the test tests nothing"
    );
    let (cow, _) = s.write_pages().unwrap();
    let (rebuilt, _) = s.rebuild_pages().unwrap();
    assert_eq!(rebuilt.namespace.hash(), cow.namespace.hash());
    assert_eq!(rebuilt.chunks.hash(), cow.chunks.hash());
    let mut seen = std::collections::HashSet::new();
    let (mut live2, mut files) = (0u64, std::collections::HashSet::new());
    for root in [&rebuilt.namespace, &rebuilt.chunks] {
        pages
            .visit_pages(root, &mut seen, |p, _| {
                live2 += u64::from(p.len);
                files.insert(p.file);
            })
            .unwrap();
    }
    assert_eq!(live2, live);
    assert_eq!(files.len(), 1, "the rebuilt trees are in one file");
    assert!(compaction_due(64 + 3 * 1000 + 1, 1000, 64));
    assert!(!compaction_due(64 + 3 * 1000, 1000, 64));
}

// A clone keeps answering for its own lsn: a filter its original starts later (after removing a
// chunk the clone still holds) is not the clone's ([META-6]).
#[test]
fn a_filter_started_after_a_clone_is_not_the_clones() {
    let (_d, pages) = page_store();
    let ctx = Some(pages.clone());
    let mut a = MetaState::empty(&ctx);
    let entry = ChunkEntry {
        pack: PackId(3),
        raw_len: 9,
    };
    a.apply_op(
        1,
        &Op::AddChunk {
            id: ChunkId(5),
            entry,
        },
    )
    .unwrap();
    let body = a.encode_checkpoint(Lsn(1)).unwrap();
    a.checkpointed(Lsn(1), &body).unwrap();
    let b = a.clone();
    a.apply_op(2, &Op::RemoveChunk { id: ChunkId(5) }).unwrap();
    let body = a.encode_checkpoint(Lsn(2)).unwrap();
    a.checkpointed(Lsn(2), &body).unwrap();
    a.start_presence(1 << 20).unwrap().run().unwrap();
    assert_eq!(a.chunk(ChunkId(5)).unwrap(), None);
    assert_eq!(b.chunk(ChunkId(5)).unwrap(), Some(entry));
    // A clone taken now shares the filter, and chunks added later still answer.
    let c = a.clone();
    a.apply_op(
        3,
        &Op::AddChunk {
            id: ChunkId(6),
            entry,
        },
    )
    .unwrap();
    assert!(c.presence().is_some());
    assert_eq!(a.chunk(ChunkId(6)).unwrap(), Some(entry));
}
