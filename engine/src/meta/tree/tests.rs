//! Tests of the page tree (`data-layout.md` 5.7a): a model test (proptest, against a `BTreeMap`)
//! for apply, range, get, diff and history independence; structural sharing; corruption and
//! decoder fuzzing; writer publication. Each test names the rule it proves.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::ops::{Bound, ControlFlow};
use std::os::unix::fs::FileExt;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::page::{page_len_at, NodeBuilder};
use super::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn open() -> (tempfile::TempDir, PageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = PageStore::open(&d.path().join("pages"), 64 << 20).unwrap();
    (d, s)
}

fn build(s: &PageStore, m: &Model) -> Root {
    let mut w = PageWriter::new(s).unwrap();
    let r = s.build(m.iter(), &mut w).unwrap();
    w.finish().unwrap();
    r
}

fn apply(s: &PageStore, r: &Root, edits: &[Edit]) -> (Root, u64) {
    let mut w = PageWriter::new(s).unwrap();
    let r = s.apply(r, edits, &mut w).unwrap();
    let n = w.pages_written();
    w.finish().unwrap();
    (r, n)
}

fn all(s: &PageStore, r: &Root) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.range(r, Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn height(s: &PageStore, r: &Root) -> u8 {
    r.ptr.map_or(0, |p| s.read_page(&p).unwrap().level())
}

type Change = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

fn tree_diff(s: &PageStore, a: &Root, b: &Root) -> Vec<Change> {
    let mut out = Vec::new();
    s.diff(a, b, |k, o, n| {
        out.push((k.to_vec(), o.map(<[u8]>::to_vec), n.map(<[u8]>::to_vec)));
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

fn model_diff(a: &Model, b: &Model) -> Vec<Change> {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
}

fn key(i: u64) -> Vec<u8> {
    format!("key/{:012}", i * 7919 % 1_000_003).into_bytes()
}

fn kv_model(n: u64, vlen: usize) -> Model {
    (0..n)
        .map(|i| (key(i), vec![(i % 251) as u8; vlen]))
        .collect()
}

// ---- encodings ----

// proves [TREE-7]
#[test]
fn root_and_ptr_encodings_round_trip_and_reject_damage() {
    let p = PagePtr {
        file: 0x1122_3344_5566_7788,
        offset: 32,
        len: 100,
        hash: 0xdead_beef_u128 << 64 | 7,
    };
    assert_eq!(PagePtr::decode(&p.encode()).unwrap(), p);
    for r in [Root::EMPTY, Root::new(p)] {
        let b = r.encode();
        assert_eq!(Root::decode(&b).unwrap(), r);
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(Root::decode(&d).is_err(), "flip at {i} accepted");
        }
        assert!(Root::decode(&b[..43]).is_err());
    }
    let zero_file = PagePtr { file: 0, ..p };
    assert!(PagePtr::decode(&zero_file.encode()).is_err());
    let in_header = PagePtr { offset: 31, ..p };
    assert!(PagePtr::decode(&in_header.encode()).is_err());
    let huge = PagePtr { len: u32::MAX, ..p };
    assert!(PagePtr::decode(&huge.encode()).is_err());
}

/// Golden bytes of a leaf with two entries (data-layout.md 5.7a, "Page").
// proves [TREE-7]
#[test]
fn leaf_page_golden_bytes() {
    let mut b = NodeBuilder::new(0);
    assert!(!b.push(b"ab", b"x"));
    assert!(!b.push(b"b", b""));
    let page = b.finish();
    let mut want = Vec::new();
    want.extend_from_slice(b"VMPG"); // magic
    want.extend_from_slice(&[0, 0]); // level 0, flags 0
    want.extend_from_slice(&2u16.to_le_bytes()); // count
    want.extend_from_slice(&[2, 0, b'a', b'b', 1, 0, 0, 0, b'x']); // key len, key, val len, val
    want.extend_from_slice(&[1, 0, b'b', 0, 0, 0, 0]);
    let crc = crc32fast::hash(&want);
    let hash = xxhash_rust::xxh3::xxh3_128(&want);
    want.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(page.bytes(), &want[..]);
    assert_eq!(page.hash(), hash);
    let d = Page::decode(want.clone()).unwrap();
    assert_eq!((d.len(), d.key(1), d.value(0)), (2, &b"b"[..], &b"x"[..]));
    assert_eq!(
        page_len_at(&[&want[..], b"trailing"].concat()).unwrap(),
        Some(want.len())
    );
}

/// An internal page's hash ignores where its children live ([TREE-4]).
// proves [TREE-4]
#[test]
fn internal_hash_ignores_child_locations() {
    let mk = |file: u64, offset: u64| {
        let mut b = NodeBuilder::new(1);
        for (i, k) in [b"a", b"b"].iter().enumerate() {
            let p = PagePtr {
                file: file + i as u64,
                offset: offset + i as u64,
                len: 100,
                hash: i as u128,
            };
            b.push(*k, &p.encode());
        }
        b.finish()
    };
    let (x, y) = (mk(5, 32), mk(9, 4096));
    assert_ne!(x.bytes(), y.bytes());
    assert_eq!(x.hash(), y.hash());
    let z = {
        let mut b = NodeBuilder::new(1);
        let p = PagePtr {
            file: 5,
            offset: 32,
            len: 100,
            hash: 99,
        };
        b.push(b"a", &p.encode());
        b.push(b"b", &p.encode());
        b.finish()
    };
    assert_ne!(x.hash(), z.hash());
}

// ---- basic operations ----

#[test]
fn empty_tree_and_small_tree() {
    let (_d, s) = open();
    assert_eq!(s.get(&Root::EMPTY, b"a").unwrap(), None);
    assert_eq!(all(&s, &Root::EMPTY), vec![]);
    let m: Model = [
        (b"".to_vec(), b"empty key".to_vec()),
        (b"a".to_vec(), b"1".to_vec()),
    ]
    .into_iter()
    .collect();
    let r = build(&s, &m);
    assert_eq!(s.get(&r, b"").unwrap().unwrap(), b"empty key");
    assert_eq!(s.get(&r, b"b").unwrap(), None);
    assert_eq!(all(&s, &r).len(), 2);
    let (r2, _) = apply(&s, &r, &[(b"".to_vec(), None), (b"a".to_vec(), None)]);
    assert_eq!(r2, Root::EMPTY);
}

#[test]
fn build_get_range_prefix_on_a_multi_level_tree() {
    let (_d, s) = open();
    let m = kv_model(20_000, 40);
    let r = build(&s, &m);
    assert!(height(&s, &r) >= 2, "height {}", height(&s, &r));
    for (k, v) in m.iter().step_by(97) {
        assert_eq!(s.get(&r, k).unwrap().as_ref(), Some(v));
        let mut absent = k.clone();
        absent.push(0);
        assert_eq!(s.get(&r, &absent).unwrap(), None);
    }
    assert!(all(&s, &r).into_iter().eq(m.clone()));
    let (lo, hi) = (key(10), key(500));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (hi, lo) };
    let got: Vec<_> = s
        .range(&r, Bound::Excluded(&lo), Bound::Included(&hi))
        .map(Result::unwrap)
        .collect();
    let want: Vec<_> = m
        .range::<Vec<u8>, _>((Bound::Excluded(&lo), Bound::Included(&hi)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);
    let got: Vec<_> = s.prefix(&r, b"key/0000001").map(Result::unwrap).collect();
    let want: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with(b"key/0000001"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert_eq!(s.prefix(&r, b"zzz").count(), 0);
    assert_eq!(s.prefix(&r, b"").count(), m.len());
}

#[test]
fn limits_and_unsorted_input_are_errors() {
    let (_d, s) = open();
    let mut w = PageWriter::new(&s).unwrap();
    let big_key = vec![(vec![0u8; MAX_KEY_LEN + 1], Some(vec![]))];
    assert!(matches!(
        s.apply(&Root::EMPTY, &big_key, &mut w),
        Err(TreeError::TooLarge { what: "key", .. })
    ));
    let big_val = vec![(vec![1], Some(vec![0u8; MAX_VALUE_LEN + 1]))];
    assert!(matches!(
        s.apply(&Root::EMPTY, &big_val, &mut w),
        Err(TreeError::TooLarge { what: "value", .. })
    ));
    let unsorted = vec![(vec![2], None), (vec![1], None)];
    assert!(matches!(
        s.apply(&Root::EMPTY, &unsorted, &mut w),
        Err(TreeError::InvalidInput { .. })
    ));
    let dup = vec![(vec![1u8], vec![]), (vec![1u8], vec![])];
    assert!(matches!(
        s.build(dup, &mut w),
        Err(TreeError::InvalidInput { .. })
    ));
    // The largest key and value fit.
    let max = vec![(vec![7u8; MAX_KEY_LEN], Some(vec![9u8; MAX_VALUE_LEN]))];
    let r = s.apply(&Root::EMPTY, &max, &mut w).unwrap();
    assert_eq!(s.apply(&r, &[], &mut w).unwrap(), r);
}

// ---- writer and files ----

// proves [TREE-1]
#[test]
fn writer_publishes_only_on_finish() {
    let (_d, s) = open();
    let names = || {
        let mut v: Vec<String> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Nothing written: no file at all.
    let w = PageWriter::new(&s).unwrap();
    assert_eq!(names().len(), 1); // the temp file
    assert_eq!(w.finish().unwrap(), None);
    assert!(names().is_empty());
    // Dropped unfinished: temp removed, pages unreadable to others.
    let mut w = PageWriter::new(&s).unwrap();
    let r = s.build([(b"k", b"v")], &mut w).unwrap();
    assert!(names()[0].ends_with(".mpg.tmp"));
    assert!(matches!(s.get(&r, b"k"), Err(TreeError::Io { .. })));
    drop(w);
    assert!(names().is_empty());
    assert!(s.list_files().unwrap().is_empty());
    // Finished: published under its id, readable.
    let mut w = PageWriter::new(&s).unwrap();
    let id = w.file_id();
    let r = s.build([(b"k", b"v")], &mut w).unwrap();
    assert_eq!(w.finish().unwrap(), Some(id));
    assert_eq!(names(), vec![format!("{id:016x}.mpg")]);
    assert_eq!(s.list_files().unwrap(), vec![id]);
    assert_eq!(s.get(&r, b"k").unwrap().unwrap(), b"v");
    let head = fs::read(s.file_path(id)).unwrap();
    assert_eq!(&head[0..8], b"VERFSMP3");
    assert_eq!(&head[8..12], &3u32.to_le_bytes());
    assert_eq!(&head[16..24], &id.to_le_bytes());
    assert_eq!(
        s.verify_file(id).unwrap(),
        FileCheck {
            pages: 1,
            damaged: vec![]
        }
    );
}

#[test]
fn applies_chain_inside_one_writer() {
    let (_d, s) = open();
    let mut w = PageWriter::new(&s).unwrap();
    let mut m = Model::new();
    let mut r = Root::EMPTY;
    for batch in 0..5u64 {
        let edits: Vec<Edit> = (batch * 300..batch * 300 + 700)
            .map(|i| (key(i), Some(vec![batch as u8; 60])))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        for (k, v) in &edits {
            m.insert(k.clone(), v.clone().unwrap());
        }
        r = s.apply(&r, &edits, &mut w).unwrap();
    }
    w.finish().unwrap();
    assert!(all(&s, &r).into_iter().eq(m.clone()));
    assert_eq!(r.hash(), build(&s, &m).hash());
}

// ---- apply vs build ----

/// A deep tree (long keys make internal nodes small), edited in random batches, including range
/// deletes that shrink it to a few levels and to nothing, always equal to `build` ([TREE-5]).
// proves [TREE-5]
#[test]
fn apply_equals_build_on_a_deep_tree() {
    let (_d, s) = open();
    let mut rng = StdRng::seed_from_u64(7);
    let long = |i: u64| {
        let mut k = format!("{:08}", i * 7 % 10_007).into_bytes();
        k.resize(400, b'.');
        k
    };
    let mut m: Model = (0..6000).map(|i| (long(i), vec![i as u8; 300])).collect();
    let mut r = build(&s, &m);
    let h0 = height(&s, &r);
    assert!(h0 >= 4, "height {h0}");
    let mut heights = vec![h0];
    for round in 0..40 {
        let mut edits = BTreeMap::new();
        match round % 4 {
            0 => {
                // delete a run
                let keys: Vec<_> = m.keys().cloned().collect();
                if !keys.is_empty() {
                    let a = rng.gen_range(0..keys.len());
                    let n = rng.gen_range(0..keys.len() / 2 + 1);
                    for k in keys.iter().skip(a).take(n) {
                        edits.insert(k.clone(), None);
                    }
                }
            }
            _ => {
                for _ in 0..rng.gen_range(1..200) {
                    let k = long(rng.gen_range(0..12_000));
                    let v = if rng.gen_bool(0.3) {
                        None
                    } else {
                        Some(vec![round as u8; rng.gen_range(0..2000)])
                    };
                    edits.insert(k, v);
                }
            }
        }
        let edits: Vec<Edit> = edits.into_iter().collect();
        for (k, v) in &edits {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
        let old = r;
        r = apply(&s, &old, &edits).0;
        assert_eq!(r.hash(), build(&s, &m).hash(), "round {round}");
        heights.push(height(&s, &r));
        if round % 8 == 0 {
            assert!(all(&s, &r).into_iter().eq(m.clone()));
        }
    }
    // Delete everything.
    let edits: Vec<Edit> = m.keys().map(|k| (k.clone(), None)).collect();
    assert_eq!(apply(&s, &r, &edits).0, Root::EMPTY);
    assert!(heights.iter().any(|&h| h < h0), "never shrank: {heights:?}");
}

#[derive(Clone, Debug)]
enum KeySpec {
    Existing(usize),
    Fresh(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Op {
    Put(KeySpec, Vec<u8>),
    Del(KeySpec),
    DelRun(usize, usize),
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // a small alphabet and short keys: collisions between batches
        3 => prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 0xff]), 0..4),
        2 => prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c', b'd']), 0..40),
    ]
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => prop::collection::vec(any::<u8>(), 0..300),
        1 => prop::collection::vec(any::<u8>(), 10_000..20_000),
    ]
}

fn spec_strategy() -> impl Strategy<Value = KeySpec> {
    prop_oneof![
        any::<usize>().prop_map(KeySpec::Existing),
        key_strategy().prop_map(KeySpec::Fresh),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (spec_strategy(), value_strategy()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => spec_strategy().prop_map(Op::Del),
        1 => (any::<usize>(), 0usize..400).prop_map(|(a, n)| Op::DelRun(a, n)),
    ]
}

fn batches_strategy() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(
        prop_oneof![
            1 => prop::collection::vec(op_strategy(), 300..1500),
            3 => prop::collection::vec(op_strategy(), 1..60),
        ],
        1..7,
    )
}

/// The batch's ops, resolved against the model: sorted unique edits (the last op on a key wins).
fn resolve(m: &Model, ops: &[Op]) -> Vec<Edit> {
    let keys: Vec<&Vec<u8>> = m.keys().collect();
    let pick = |s: &KeySpec| match s {
        KeySpec::Existing(i) if !keys.is_empty() => keys[i % keys.len()].clone(),
        KeySpec::Existing(i) => vec![*i as u8],
        KeySpec::Fresh(k) => k.clone(),
    };
    let mut e: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                e.insert(pick(k), Some(v.clone()));
            }
            Op::Del(k) => {
                e.insert(pick(k), None);
            }
            Op::DelRun(a, n) => {
                if !keys.is_empty() {
                    for k in keys.iter().skip(a % keys.len()).take(*n) {
                        e.insert((*k).clone(), None);
                    }
                }
            }
        }
    }
    e.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// apply in batches, each with its own writer, against a BTreeMap: get, range, history
    /// independence (root hash equal to a build from scratch) and diff between any two roots.
    // proves [TREE-5]
    #[test]
    fn apply_matches_the_model(batches in batches_strategy(), probes in prop::collection::vec(key_strategy(), 8)) {
        let (_d, s) = open();
        let mut m = Model::new();
        let mut r = Root::EMPTY;
        let mut history = vec![(r, m.clone())];
        for ops in &batches {
            let edits = resolve(&m, ops);
            for (k, v) in &edits {
                match v {
                    Some(v) => m.insert(k.clone(), v.clone()),
                    None => m.remove(k),
                };
            }
            r = apply(&s, &r, &edits).0;
            prop_assert_eq!(r.hash(), build(&s, &m).hash());
            prop_assert_eq!(r.is_empty(), m.is_empty());
            for (k, _) in edits.iter().take(50) {
                prop_assert_eq!(s.get(&r, k).unwrap(), m.get(k).cloned());
            }
            for k in &probes {
                prop_assert_eq!(s.get(&r, k).unwrap(), m.get(k).cloned());
            }
            prop_assert!(all(&s, &r).into_iter().eq(m.clone()));
            let mut sorted = probes.clone();
            sorted.sort();
            let (lo, hi) = (&sorted[1], &sorted[6]);
            let got: Vec<_> = s.range(&r, Bound::Included(lo), Bound::Excluded(hi)).map(Result::unwrap).collect();
            let want: Vec<_> = m.range::<Vec<u8>, _>((Bound::Included(lo), Bound::Excluded(hi))).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
            let got: Vec<_> = s.prefix(&r, &sorted[3]).map(Result::unwrap).collect();
            let want: Vec<_> = m.iter().filter(|(k, _)| k.starts_with(&sorted[3])).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
            history.push((r, m.clone()));
        }
        for (i, (ra, ma)) in history.iter().enumerate() {
            for (rb, mb) in history.iter().skip(i) {
                prop_assert_eq!(tree_diff(&s, ra, rb), model_diff(ma, mb));
                prop_assert_eq!(tree_diff(&s, rb, ra), model_diff(mb, ma));
            }
        }
    }

    /// Random bytes never make the decoders panic ([TREE-3]).
    // proves [TREE-3]
    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Page::decode(bytes.clone());
        let _ = page_len_at(&bytes);
        let _ = Root::decode(&bytes);
        let _ = PagePtr::decode(&bytes);
        let mut with_magic = b"VMPG".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Page::decode(with_magic.clone());
        let _ = page_len_at(&with_magic);
    }

    /// Valid pages with bytes overwritten: decode fails or gives a page whose accessors work.
    // proves [TREE-3]
    #[test]
    fn damaged_pages_never_panic(level in 0u8..3, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut b = NodeBuilder::new(level);
        for i in 0..20u32 {
            let k = format!("k{i:03}");
            if level == 0 {
                b.push(k.as_bytes(), &vec![i as u8; i as usize]);
            } else {
                let p = PagePtr { file: 1, offset: 32 + u64::from(i), len: 100, hash: 1 };
                b.push(k.as_bytes(), &p.encode());
            }
        }
        let mut bytes = b.finish().bytes().to_vec();
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        let _ = page_len_at(&bytes);
        if let Ok(p) = Page::decode(bytes) {
            for i in 0..p.len() {
                let _ = (p.key(i), p.value(i));
                if !p.is_leaf() { let _ = p.child(i); }
            }
        }
    }

    /// Arbitrary pointers into a file of random bytes: errors, no panic, no huge allocation.
    // proves [TREE-3]
    #[test]
    fn reads_through_random_pointers_never_panic(junk in prop::collection::vec(any::<u8>(), 0..3000), offset in 0u64..4000, len in any::<u32>(), hash in any::<u128>()) {
        let (_d, s) = open();
        let mut w = PageWriter::new(&s).unwrap();
        let id = w.file_id();
        s.build([(b"x", b"y")], &mut w).unwrap();
        w.finish().unwrap();
        let path = s.file_path(id);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&junk, 32).unwrap();
        let root = Root::new(PagePtr { file: id, offset, len, hash });
        let _ = s.get(&root, b"x");
        let _ = s.range(&root, Bound::Unbounded, Bound::Unbounded).count();
        let _ = s.verify_file(id);
        let mut seen = HashSet::new();
        let _ = s.visit_pages(&root, &mut seen, |_, _| {});
    }
}

// ---- structural sharing ----

fn leaf_of(s: &PageStore, r: &Root, k: &[u8]) -> PagePtr {
    let mut ptr = r.ptr.unwrap();
    loop {
        let p = s.read_page(&ptr).unwrap();
        if p.is_leaf() {
            return ptr;
        }
        ptr = p.child(p.lower_bound(k, false).min(p.len() - 1));
    }
}

/// One edit in a 100k-entry tree rewrites about one page per level and diff reads O(depth)
/// pages; every other page is shared ([TREE-6]).
// proves [TREE-6]
#[test]
fn one_edit_rewrites_a_path_and_diff_reads_a_path() {
    let (_d, s) = open();
    let m = kv_model(100_000, 50);
    let r = build(&s, &m);
    let depth = u64::from(height(&s, &r)) + 1;
    let mut rng = StdRng::seed_from_u64(1);
    let keys: Vec<&Vec<u8>> = m.keys().collect();
    let mut worst_write = 0;
    let mut worst_read = 0;
    let mut total_written = 0;
    let n = 200;
    for i in 0..n {
        let edit: Edit = match i % 4 {
            0 => (
                keys[rng.gen_range(0..keys.len())].clone(),
                Some(b"changed".to_vec()),
            ),
            1 => (keys[rng.gen_range(0..keys.len())].clone(), None),
            2 => (
                format!("key/{:012}x", rng.gen_range(0..1_000_003)).into_bytes(),
                Some(vec![1; 50]),
            ),
            _ => (
                keys[if i % 8 == 3 { 0 } else { keys.len() - 1 }].clone(),
                Some(vec![2; 80]),
            ),
        };
        let (r2, written) = apply(&s, &r, std::slice::from_ref(&edit));
        worst_write = worst_write.max(written);
        total_written += written;
        let before = s.stats().page_reads;
        let d = tree_diff(&s, &r, &r2);
        let reads = s.stats().page_reads - before;
        worst_read = worst_read.max(reads);
        let want = usize::from(m.get(&edit.0) != edit.1.as_ref());
        assert_eq!(d.len(), want, "{edit:?}");
        // Only pages on the edited key's path are new.
        let mut old_pages = HashSet::new();
        s.visit_pages(&r, &mut old_pages, |_, _| {}).unwrap();
        let mut new_pages = HashSet::new();
        s.visit_pages(&r2, &mut new_pages, |_, _| {}).unwrap();
        let fresh = new_pages.difference(&old_pages).count() as u64;
        assert!(fresh <= written);
        let _ = leaf_of(&s, &r2, &edit.0);
    }
    eprintln!(
        "100k entries, depth {depth}: pages written per edit avg {:.2} max {worst_write}; diff page reads max {worst_read}",
        total_written as f64 / n as f64
    );
    assert!(
        worst_write <= 2 * depth,
        "{worst_write} pages for one edit, depth {depth}"
    );
    assert!(
        worst_read <= 4 * depth + 2,
        "diff read {worst_read} pages, depth {depth}"
    );
}

#[test]
fn node_sizes_average_about_4k() {
    let (_d, s) = open();
    let m = kv_model(50_000, 50);
    let r = build(&s, &m);
    let mut seen = HashSet::new();
    let mut leaves = Vec::new();
    s.visit_pages(&r, &mut seen, |p, l| {
        if l == 0 {
            leaves.push(p.len);
        }
    })
    .unwrap();
    let avg = leaves.iter().map(|&l| u64::from(l)).sum::<u64>() / leaves.len() as u64;
    let max = leaves.iter().max().copied().unwrap_or(0);
    eprintln!("{} leaves, average {avg} bytes, max {max}", leaves.len());
    assert!((3000..=5500).contains(&avg), "average leaf {avg}");
    assert!(max as usize <= NODE_MAX + 200);
}

#[test]
fn visit_pages_shares_seen_across_roots() {
    let (_d, s) = open();
    let m = kv_model(20_000, 30);
    let r1 = build(&s, &m);
    let (r2, written) = apply(&s, &r1, &[(key(5), Some(b"x".to_vec()))]);
    let mut seen = HashSet::new();
    let mut n1 = 0;
    s.visit_pages(&r1, &mut seen, |_, _| n1 += 1).unwrap();
    let mut n2 = 0;
    s.visit_pages(&r2, &mut seen, |_, _| n2 += 1).unwrap();
    assert_eq!(n2, written);
    let mut again = 0;
    s.visit_pages(&r1, &mut seen, |_, _| again += 1).unwrap();
    assert_eq!(again, 0);
    let files: HashSet<u64> = seen.iter().map(|p| p.file).collect();
    assert_eq!(files.len(), 2);
    assert_eq!(s.list_files().unwrap().len(), 2);
}

// ---- corruption ----

fn corrupt_at(e: TreeError) -> (std::path::PathBuf, u64) {
    match e {
        TreeError::Corrupt { path, offset, .. } => (path, offset),
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// A flipped byte in a page is reported as Corrupt with the file and the page's offset, by reads
/// and by verify_file ([TREE-2]).
// proves [TREE-2]
#[test]
fn flipped_byte_is_corrupt_with_file_and_offset() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pages");
    let s = PageStore::open(&dir, 1 << 20).unwrap();
    let m = kv_model(5000, 20);
    let r = build(&s, &m);
    let k = key(1234);
    let leaf = leaf_of(&s, &r, &k);
    let path = s.file_path(leaf.file);
    drop(s);
    for at in [0u64, 5, 9, u64::from(leaf.len) - 1] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, leaf.offset + at).unwrap();
        f.write_all_at(&[b[0] ^ 0x04], leaf.offset + at).unwrap();
        let s = PageStore::open(&dir, 1 << 20).unwrap();
        let err = s.get(&r, &k).unwrap_err();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert_eq!(corrupt_at(err), (path.clone(), leaf.offset));
        let it: Vec<_> = s.range(&r, Bound::Unbounded, Bound::Unbounded).collect();
        assert!(it.last().unwrap().is_err());
        let check = s.verify_file(leaf.file).unwrap();
        assert_eq!(check.damaged.len(), 1, "{check:?}");
        assert_eq!(check.damaged[0].0, leaf.offset);
        f.write_all_at(&b, leaf.offset + at).unwrap();
    }
    // A page that is well-formed but not the one the pointer means: hash mismatch.
    let s = PageStore::open(&dir, 1 << 20).unwrap();
    let other = leaf_of(&s, &r, &key(1));
    let wrong = Root::new(PagePtr {
        hash: other.hash ^ 1,
        ..other
    });
    assert_eq!(corrupt_at(s.get(&wrong, &k).unwrap_err()).1, other.offset);
    // Also from the cache.
    s.get(&Root::new(other), &key(1)).unwrap();
    assert_eq!(corrupt_at(s.get(&wrong, &k).unwrap_err()).1, other.offset);
}

// proves [TREE-2]
#[test]
fn truncated_file_is_corrupt() {
    let (_d, s) = open();
    let r = build(&s, &kv_model(5000, 20));
    let root = r.ptr.unwrap();
    let path = s.file_path(root.file);
    let size = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(size - 7).unwrap();
    let s = PageStore::open(s.dir(), 1 << 20).unwrap();
    assert_eq!(
        corrupt_at(s.get(&r, &key(3)).unwrap_err()),
        (path.clone(), root.offset)
    );
    let check = s.verify_file(root.file).unwrap();
    assert_eq!(check.damaged.len(), 1);
    assert_eq!(check.damaged[0].0, root.offset);
    assert!(check.pages > 10);
    f.set_len(20).unwrap();
    let s = PageStore::open(s.dir(), 1 << 20).unwrap();
    assert_eq!(corrupt_at(s.get(&r, &key(3)).unwrap_err()), (path, 0));
    assert_eq!(s.verify_file(root.file).unwrap().damaged[0].0, 0);
}

// ---- benchmark ----

/// `cargo test --release -p verfs-engine --lib meta::tree::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "benchmark, not a test: run in release with --ignored (see the doc comment)"]
fn bench_build_1m_and_single_edits() {
    let (_d, s) = open();
    let n = 1_000_000u64;
    let t = std::time::Instant::now();
    let mut w = PageWriter::new(&s).unwrap();
    let r = s
        .build(
            (0..n).map(|i| {
                (
                    format!("ino/{i:016x}/name").into_bytes(),
                    vec![(i % 251) as u8; 60],
                )
            }),
            &mut w,
        )
        .unwrap();
    let bytes = w.bytes_written();
    let pages = w.pages_written();
    w.finish().unwrap();
    let build_time = t.elapsed();
    let depth = height(&s, &r) + 1;
    let t = std::time::Instant::now();
    let count = s.range(&r, Bound::Unbounded, Bound::Unbounded).count();
    let scan_time = t.elapsed();
    assert_eq!(count as u64, n);
    let mut rng = StdRng::seed_from_u64(3);
    let t = std::time::Instant::now();
    let mut total = 0;
    let mut cur = r;
    let edits = 1000;
    let mut w = PageWriter::new(&s).unwrap();
    for _ in 0..edits {
        let i = rng.gen_range(0..n);
        let before = w.pages_written();
        cur = s
            .apply(
                &cur,
                &[(format!("ino/{i:016x}/name").into_bytes(), Some(vec![1; 70]))],
                &mut w,
            )
            .unwrap();
        total += w.pages_written() - before;
    }
    w.finish().unwrap();
    let edit_time = t.elapsed();
    let t = std::time::Instant::now();
    let mut changes = 0;
    s.diff(&r, &cur, |_, _, _| {
        changes += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    let diff_time = t.elapsed();
    eprintln!(
        "build {n} entries: {build_time:?} ({pages} pages, {} MiB, depth {depth}); full scan {scan_time:?}; \
         {edits} single-key applies chained in one writer: {edit_time:?}, {:.2} pages/edit; diff ({changes} changes) {diff_time:?}",
        bytes >> 20,
        total as f64 / edits as f64
    );
}

/// Deleting all but the last (or first) leaf leaves a one-leaf tree, whatever shape the levels
/// above had: in particular when the last node of a level had a single entry, apply must
/// collapse the chain of single-entry roots down to the leaf, as `build` does.
// proves [TREE-5]
#[test]
fn deletes_down_to_one_leaf_collapse_the_levels_above() {
    let (_d, s) = open();
    let mut single_entry_tail = 0;
    for n in 8..300 {
        // Long keys: few entries per node, so single-entry last nodes are common.
        let m: Model = (0..n)
            .map(|i| {
                let mut k = key(i);
                k.resize(900, b'-');
                (k, vec![i as u8; 40])
            })
            .collect();
        let r = build(&s, &m);
        // Is the last node of some level between the root and the leaves a single entry?
        let mut p = s.read_page(&r.ptr.unwrap()).unwrap();
        while p.level() > 1 {
            p = s.read_page(&p.child(p.len() - 1)).unwrap();
            if p.len() == 1 {
                single_entry_tail += 1;
            }
        }
        for keep_last in [true, false] {
            let leaf = if keep_last {
                leaf_of(&s, &r, m.keys().next_back().unwrap())
            } else {
                leaf_of(&s, &r, m.keys().next().unwrap())
            };
            let keep = s.read_page(&leaf).unwrap();
            let kept: Model = (0..keep.len())
                .map(|i| (keep.key(i).to_vec(), keep.value(i).to_vec()))
                .collect();
            let edits: Vec<Edit> = m
                .keys()
                .filter(|k| !kept.contains_key(*k))
                .map(|k| (k.clone(), None))
                .collect();
            let (r2, _) = apply(&s, &r, &edits);
            assert_eq!(
                r2.hash(),
                build(&s, &kept).hash(),
                "n {n} keep_last {keep_last}"
            );
            assert_eq!(r2.ptr, Some(leaf));
        }
    }
    assert!(
        single_entry_tail > 0,
        "no tree with a single-entry last node at level 1"
    );
}

#[test]
fn store_is_shared_by_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PageStore>();
    // A small cache, so the threads also evict and reread pages.
    let d = tempfile::tempdir().unwrap();
    let s = PageStore::open(d.path(), 64 << 10).unwrap();
    let m = kv_model(20_000, 30);
    let r = build(&s, &m);
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let (s, m) = (&s, &m);
            sc.spawn(move || {
                for (k, v) in m.iter().skip(t as usize).step_by(37) {
                    assert_eq!(s.get(&r, k).unwrap().as_ref(), Some(v));
                }
                assert_eq!(all(s, &r).len(), m.len());
            });
        }
    });
    assert!(s.stats().disk_reads > 0);
}

/// The salvage walk of `verfs repair` ([REPAIR-2]): with a leaf damaged, every other entry is
/// read and the lost bounds hold exactly the leaf's keys; with a copy of the same content in
/// another file (another root sharing the page by hash), nothing is lost.
#[test]
fn salvage_skips_a_damaged_page_with_its_bounds_or_reads_a_stand_in() {
    let (_d, s) = open();
    let m: Model = (0..3000u32)
        .map(|i| (format!("key{i:05}").into_bytes(), vec![b'v'; 40]))
        .collect();
    let a = build(&s, &m);
    let b = build(&s, &m); // the same content, written again into another file
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.ptr.unwrap().file, b.ptr.unwrap().file);
    let mut leaves = Vec::new();
    s.visit_pages(&a, &mut HashSet::new(), |p, l| {
        if l == 0 {
            leaves.push(*p)
        }
    })
    .unwrap();
    let leaf = leaves[leaves.len() / 2];
    let held: Vec<Vec<u8>> = {
        let p = s.read_page(&leaf).unwrap();
        (0..p.len()).map(|i| p.key(i).to_vec()).collect()
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(s.file_path(leaf.file))
        .unwrap();
    let at = leaf.offset + 12;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 1], at).unwrap();
    let s = PageStore::open(s.dir(), 64 << 20).unwrap(); // no cached copy of the good page

    let mut got = Model::new();
    let alone = s.salvage(&a, &PageIndex::new(), |k, v| {
        got.insert(k.to_vec(), v.to_vec());
    });
    assert_eq!(alone.lost.len(), 1, "{:?}", alone.lost);
    let lost = &alone.lost[0];
    assert_eq!(
        (lost.path.clone(), lost.offset),
        (s.file_path(leaf.file), leaf.offset)
    );
    let want: Model = m
        .iter()
        .filter(|(k, _)| !held.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(
        m.keys().all(|k| lost.contains(k) == held.contains(k)),
        "bounds {lost:?}"
    );

    let mut others = PageIndex::new();
    s.index_pages(&b, &mut others);
    let mut got = Model::new();
    let helped = s.salvage(&a, &others, |k, v| {
        got.insert(k.to_vec(), v.to_vec());
    });
    assert!(
        helped.lost.is_empty() && helped.replaced.len() == 1,
        "{helped:?}"
    );
    assert_eq!(got, m);
}
