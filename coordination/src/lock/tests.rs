//! Unit tests of the lock module (moved out of `mod.rs`; they see its private items).
#![allow(clippy::unwrap_used)]

use super::owner::*;
use super::table::*;
use super::*;
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

fn table() -> (tempfile::TempDir, LockTable) {
    let d = tempfile::tempdir().unwrap();
    let t = LockTable::open(&d.path().join("locks")).unwrap();
    (d, t)
}

fn named(n: &str) -> Resource {
    Resource::Named(n.to_owned())
}

fn range(ino: u64, start: u64, end: u64) -> Resource {
    Resource::Range { ino, start, end }
}

fn would_block(r: Result<(), AcquireError>) -> bool {
    match r {
        Ok(()) => false,
        Err(AcquireError::WouldBlock { .. }) => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

// proves [LOCK-5]: the 6x6 compatibility matrix, for try_acquire and for test.
#[test]
fn full_matrix() {
    let (_d, t) = table();
    let expected = ["yyyyyy", "yyyyyn", "yyynnn", "yynynn", "yynnnn", "ynnnnn"];
    for (i, held) in Mode::ALL.into_iter().enumerate() {
        for (j, req) in Mode::ALL.into_iter().enumerate() {
            let ok = expected[i].as_bytes()[j] == b'y';
            assert_eq!(held.compatible(req), ok, "{held} vs {req}");
            let a = t.owner().unwrap();
            let b = t.owner().unwrap();
            let r = named("matrix");
            a.try_acquire(&r, held).unwrap();
            let tested = b.test(&r, req).unwrap();
            assert_eq!(tested.is_none(), ok, "test: held {held}, requested {req}");
            let got = b.try_acquire(&r, req);
            assert_eq!(!would_block(got), ok, "held {held}, requested {req}");
            drop(a);
            drop(b);
        }
    }
}

// proves [LOCK-2]: two owners of one process conflict; one owner never conflicts with itself.
#[test]
fn owners_are_separate_descriptions() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&range(5, 0, 99), Mode::Ex).unwrap();
    a.try_acquire(&range(5, 50, 60), Mode::Ex).unwrap();
    assert!(would_block(b.try_acquire(&range(5, 10, 10), Mode::Pr)));
    a.try_acquire(&named("x"), Mode::Ex).unwrap();
    assert!(matches!(
        a.try_acquire(&named("x"), Mode::Pr),
        Err(AcquireError::AlreadyHeld { held: Mode::Ex, .. })
    ));
    assert!(would_block(b.try_acquire(&named("x"), Mode::Cr)));
}

// proves [LOCK-1]: an owner is never opened on a table that replaced the original.
#[test]
fn replaced_table_is_refused() {
    let (d, t) = table();
    let locks = d.path().join("locks");
    std::fs::rename(locks.join(TABLE_FILE), locks.join("old")).unwrap();
    let r = t.owner();
    assert!(matches!(r, Err(OpenError::Replaced { .. })), "{r:?}");
    let t2 = LockTable::open(&locks).unwrap();
    t2.owner().unwrap();
}

// proves [LOCK-3]: dropping an owner (closing its description, as process death does)
// releases everything it holds, the gate included.
#[test]
fn drop_releases_everything() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&named("job"), Mode::Ex).unwrap();
    a.try_acquire(&range(1, 0, TO_EOF), Mode::Ex).unwrap();
    assert!(would_block(b.try_acquire(&named("job"), Mode::Pr)));
    drop(a);
    b.try_acquire(&named("job"), Mode::Ex).unwrap();
    b.try_acquire(&range(1, 0, TO_EOF), Mode::Ex).unwrap();
}

// proves [LOCK-4]: a holder that dies holding the gate blocks nobody afterwards; while the
// gate is held, no mode change passes it.
#[test]
fn dead_gate_holder_is_released() {
    let (_d, t) = table();
    let dead = t.owner().unwrap();
    let b = t.owner().unwrap();
    let gate = named_block("g") + GATE_BYTE;
    assert!(dead.setlk(libc::F_WRLCK, gate, 1).unwrap());
    let start = Instant::now();
    let r = b.try_acquire(&named("g"), Mode::Cr);
    assert!(matches!(r, Err(AcquireError::GateBusy { .. })), "{r:?}");
    assert!(start.elapsed() >= GATE_TRY_LIMIT);
    let r = b.acquire(
        &named("g"),
        Mode::Cr,
        Wait::Timeout(Duration::from_millis(50)),
    );
    assert!(
        matches!(r, Err(AcquireError::TimedOut { held: None, .. })),
        "{r:?}"
    );
    drop(dead); // the kernel releases the gate of a closed (or dead) description
    b.try_acquire(&named("g"), Mode::Ex).unwrap();
}

// proves [LOCK-5]: conversion up and down, atomic, the old mode kept on failure.
#[test]
fn conversion_up_and_down() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    let r = named("conv");
    a.try_acquire(&r, Mode::Pr).unwrap();
    b.try_acquire(&r, Mode::Pr).unwrap();
    let up = a.convert(&r, Mode::Ex, Wait::No);
    assert!(
        matches!(up, Err(ConvertError::WouldBlock { held: Mode::Pr, .. })),
        "{up:?}"
    );
    assert_eq!(a.held("conv"), Some(Mode::Pr));
    assert!(would_block(t.owner().unwrap().try_acquire(&r, Mode::Cw)));
    b.release(&r).unwrap();
    a.convert(&r, Mode::Ex, Wait::No).unwrap();
    assert!(would_block(b.try_acquire(&r, Mode::Cr)));
    a.convert(&r, Mode::Cr, Wait::No).unwrap();
    b.try_acquire(&r, Mode::Pw).unwrap();
    assert!(would_block(t.owner().unwrap().try_acquire(&r, Mode::Pr)));
    b.convert(&r, Mode::Nl, Wait::No).unwrap();
    t.owner().unwrap().try_acquire(&r, Mode::Pr).unwrap();
    // CW <-> PR: incomparable modes convert through one gated section.
    let c = t.owner().unwrap();
    let d = t.owner().unwrap();
    c.try_acquire(&named("cw"), Mode::Cw).unwrap();
    d.try_acquire(&named("cw"), Mode::Cw).unwrap();
    assert!(matches!(
        c.convert(&named("cw"), Mode::Pr, Wait::No),
        Err(ConvertError::WouldBlock { held: Mode::Cw, .. })
    ));
    d.release(&named("cw")).unwrap();
    c.convert(&named("cw"), Mode::Pr, Wait::No).unwrap();
    assert!(would_block(d.try_acquire(&named("cw"), Mode::Cw)));
    d.try_acquire(&named("cw"), Mode::Pr).unwrap();
    assert!(matches!(
        t.owner().unwrap().convert(&named("cw"), Mode::Ex, Wait::No),
        Err(ConvertError::NotHeld { .. })
    ));
}

#[test]
fn blocking_acquire_wakes_on_release() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&named("w"), Mode::Ex).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let h = thread::spawn(move || {
        b.acquire(&named("w"), Mode::Pr, Wait::Forever).unwrap();
        d2.store(true, Ordering::SeqCst);
        b
    });
    thread::sleep(Duration::from_millis(150));
    assert!(!done.load(Ordering::SeqCst), "acquired while EX was held");
    let released = Instant::now();
    a.release(&named("w")).unwrap();
    let b = h.join().unwrap();
    assert!(released.elapsed() < Duration::from_secs(1));
    assert_eq!(b.held("w"), Some(Mode::Pr));
    // Ranges wait too.
    a.try_acquire(&range(3, 0, 10), Mode::Pr).unwrap();
    let h = thread::spawn(move || {
        b.acquire(&range(3, 5, 5), Mode::Ex, Wait::Forever).unwrap();
        b
    });
    thread::sleep(Duration::from_millis(100));
    a.release(&range(3, 0, 10)).unwrap();
    let b = h.join().unwrap();
    assert!(would_block(a.try_acquire(&range(3, 5, 5), Mode::Pr)));
    drop(b);
}

#[test]
fn timeout() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&named("t"), Mode::Pw).unwrap();
    let start = Instant::now();
    let r = b.acquire(
        &named("t"),
        Mode::Cw,
        Wait::Timeout(Duration::from_millis(200)),
    );
    let el = start.elapsed();
    assert!(
        matches!(
            r,
            Err(AcquireError::TimedOut {
                held: Some(Mode::Pw),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        el >= Duration::from_millis(200) && el < Duration::from_millis(1000),
        "{el:?}"
    );
    assert_eq!(b.held("t"), None);
    a.try_acquire(&range(9, 0, 0), Mode::Ex).unwrap();
    let r = b.acquire(
        &range(9, 0, 0),
        Mode::Pr,
        Wait::Timeout(Duration::from_millis(50)),
    );
    assert!(matches!(r, Err(AcquireError::TimedOut { .. })), "{r:?}");
}

// proves [LOCK-7]: POSIX range semantics from the kernel.
#[test]
fn ranges() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&range(7, 100, 199), Mode::Ex).unwrap();
    // Overlapping conflicts, disjoint does not, another inode never does.
    assert!(would_block(b.try_acquire(&range(7, 199, 300), Mode::Pr)));
    assert!(would_block(b.try_acquire(&range(7, 0, TO_EOF), Mode::Pr)));
    b.try_acquire(&range(7, 200, 300), Mode::Ex).unwrap();
    b.try_acquire(&range(7, 0, 99), Mode::Pr).unwrap();
    b.try_acquire(&range(8, 100, 199), Mode::Ex).unwrap();
    b.try_acquire(&range(6, 0, TO_EOF), Mode::Ex).unwrap();
    // getlk reports the conflicting range and type.
    assert_eq!(
        b.test(&range(7, 150, 160), Mode::Pr).unwrap(),
        Some(Conflict {
            start: 100,
            end: 199,
            mode: Mode::Ex
        })
    );
    assert_eq!(
        a.test(&range(7, 250, 250), Mode::Pr).unwrap(),
        Some(Conflict {
            start: 200,
            end: 300,
            mode: Mode::Ex
        })
    );
    assert_eq!(
        a.test(&range(7, 50, 60), Mode::Ex).unwrap(),
        Some(Conflict {
            start: 0,
            end: 99,
            mode: Mode::Pr
        })
    );
    assert_eq!(a.test(&range(7, 50, 60), Mode::Pr).unwrap(), None);
    // Unlock of a sub-range frees only that part (the kernel splits the lock).
    a.release(&range(7, 120, 129)).unwrap();
    let c = t.owner().unwrap();
    c.try_acquire(&range(7, 120, 129), Mode::Ex).unwrap();
    assert!(would_block(c.try_acquire(&range(7, 119, 119), Mode::Pr)));
    assert!(would_block(c.try_acquire(&range(7, 130, 130), Mode::Pr)));
    assert_eq!(
        c.test(&range(7, 100, 300), Mode::Pr).unwrap(),
        Some(Conflict {
            start: 100,
            end: 119,
            mode: Mode::Ex
        })
    );
    // Downgrade of part of a write lock (kernel conversion).
    a.convert(&range(7, 130, 149), Mode::Pr, Wait::No).unwrap();
    c.try_acquire(&range(7, 140, 140), Mode::Pr).unwrap();
    assert!(would_block(c.try_acquire(&range(7, 150, 150), Mode::Pr)));
    // Invalid requests.
    assert!(matches!(
        a.try_acquire(&range(7, 5, 4), Mode::Pr),
        Err(AcquireError::Invalid {
            problem: RangeProblem::Empty,
            ..
        })
    ));
    assert!(matches!(
        a.try_acquire(&range(7, 0, 4), Mode::Cw),
        Err(AcquireError::Invalid {
            problem: RangeProblem::Mode,
            ..
        })
    ));
    assert!(matches!(
        a.try_acquire(&range(MAX_INODES, 0, 4), Mode::Ex),
        Err(AcquireError::Invalid {
            problem: RangeProblem::Inode,
            ..
        })
    ));
    // The last inode's region is usable.
    a.try_acquire(&range(MAX_INODES - 1, 0, TO_EOF), Mode::Ex)
        .unwrap();
    assert!(would_block(b.try_acquire(
        &range(MAX_INODES - 1, u64::MAX - 1, u64::MAX),
        Mode::Pr
    )));
    b.try_acquire(&range(MAX_INODES - 2, 0, TO_EOF), Mode::Ex)
        .unwrap();
}

// proves [LOCK-8]: offsets beyond the inode region are coarser, never weaker.
#[test]
fn tail_is_coarse_but_safe() {
    let (_d, t) = table();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    let big = INODE_REGION * 4;
    a.try_acquire(&range(2, big, big + 10), Mode::Pr).unwrap();
    // Beyond the region, everything shares the tail byte: disjoint far ranges conflict.
    assert!(would_block(
        b.try_acquire(&range(2, big * 2, big * 2), Mode::Ex)
    ));
    b.try_acquire(&range(2, big * 2, TO_EOF), Mode::Pr).unwrap();
    assert_eq!(
        b.test(&range(2, 0, TO_EOF), Mode::Ex).unwrap(),
        Some(Conflict {
            start: INODE_REGION - 1,
            end: u64::MAX,
            mode: Mode::Pr
        })
    );
    // A whole-file write lock; then a partial read lock beyond the region must not weaken
    // the tail (the write lock still covers other far offsets).
    let c = t.owner().unwrap();
    let ino = 3;
    c.try_acquire(&range(ino, 0, TO_EOF), Mode::Ex).unwrap();
    c.convert(&range(ino, big, big + 1), Mode::Pr, Wait::No)
        .unwrap();
    assert!(would_block(
        b.try_acquire(&range(ino, big * 3, big * 3), Mode::Pr)
    ));
    // A partial unlock beyond the region keeps the tail too.
    c.release(&range(ino, big * 3, big * 3)).unwrap();
    assert!(would_block(
        b.try_acquire(&range(ino, big * 3, big * 3), Mode::Pr)
    ));
    // ... but the exact part below the region is released exactly.
    c.release(&range(ino, 0, 9)).unwrap();
    b.try_acquire(&range(ino, 0, 9), Mode::Ex).unwrap();
    // Unlock to EOF releases the tail.
    c.release(&range(ino, 10, TO_EOF)).unwrap();
    b.try_acquire(&range(ino, big * 3, big * 3), Mode::Ex)
        .unwrap();
    // Partial read beyond, when nothing stronger is held: the tail is read-locked.
    let d = t.owner().unwrap();
    d.try_acquire(&range(4, big, big), Mode::Pr).unwrap();
    b.try_acquire(&range(4, big * 2, big * 2), Mode::Pr)
        .unwrap();
    assert!(would_block(
        b.try_acquire(&range(4, big * 2, big * 2), Mode::Ex)
    ));
}

// proves [LOCK-6]: distinct names land in distinct blocks (2^40 blocks, stable hash).
#[test]
fn named_blocks_do_not_collide() {
    let mut seen = HashSet::new();
    for i in 0..5000 {
        for n in [format!("pack:{i:016x}"), format!("job-{i}")] {
            let b = named_block(&n);
            assert!(b < NAMED_BLOCKS * BLOCK_SIZE);
            assert_eq!(b % BLOCK_SIZE, 0);
            assert!(seen.insert(b), "{n} collides");
        }
    }
    // The hash is part of the format: pin it, and the block it gives ([LOCK-6]).
    for (name, hash, block) in PINNED {
        assert_eq!(
            format!("{:016x}", name_hash(name)),
            *hash,
            "name_hash({name:?})"
        );
        assert_eq!(named_block(name), *block, "named_block({name:?})");
    }
}

/// (name, name_hash, named_block), computed independently in Python from the text of
/// data-layout.md [LOCK-6] (FNV-1a 64, then murmur3 fmix64; block = (hash >> 24) * 8).
const PINNED: &[(&str, &str, u64)] = &[
    ("", "efd01f60ba992926", 8_239_911_208_400),
    ("a", "82a2a958a9bece5b", 4_488_598_046_024),
    ("gc", "6772167bc6ec4b27", 3_554_365_660_720),
    ("gc-worker", "d37e8d488e172b2a", 7_266_890_302_576),
    (
        "pack:0000000000000001",
        "63a5f7b96a3f9949",
        3_423_889_902_416,
    ),
];

// proves [LOCK-4], [LOCK-5] under concurrency: threads with their own owners never hold
// incompatible modes at the same instant.
#[test]
fn concurrent_holders_are_always_compatible() {
    let (_d, t) = table();
    let t = Arc::new(t);
    let held: Arc<Mutex<Vec<Mode>>> = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<_> = (0..4u64)
        .map(|k| {
            let t = t.clone();
            let held = held.clone();
            thread::spawn(move || {
                let o = t.owner().unwrap();
                let r = named("stress");
                for i in 0..300u64 {
                    let mode = Mode::ALL[1 + ((i * 7 + k * 3) % 5) as usize];
                    o.acquire(&r, mode, Wait::Forever).unwrap();
                    {
                        let mut h = held.lock().unwrap();
                        for m in h.iter() {
                            assert!(m.compatible(mode), "{m} held while {mode} granted");
                        }
                        h.push(mode);
                    }
                    if i % 3 == 0 {
                        thread::yield_now();
                    }
                    {
                        let mut h = held.lock().unwrap();
                        let p = h.iter().position(|m| *m == mode).unwrap();
                        h.swap_remove(p);
                    }
                    o.release(&r).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize, usize, Mode),
    Convert(usize, usize, Mode),
    Release(usize, usize),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop::sample::select(Mode::ALL.to_vec());
    prop_oneof![
        4 => (0..4usize, 0..2usize, mode.clone()).prop_map(|(o, r, m)| Op::Acquire(o, r, m)),
        2 => (0..4usize, 0..2usize, mode).prop_map(|(o, r, m)| Op::Convert(o, r, m)),
        3 => (0..4usize, 0..2usize).prop_map(|(o, r)| Op::Release(o, r)),
        1 => (0..4usize).prop_map(Op::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // proves [LOCK-5]: against a model, every try_acquire / convert succeeds iff the mode
    // is compatible with every other owner's, so no incompatible pair is ever held.
    #[test]
    fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let (_d, t) = table();
        let names = ["res-a", "res-b"];
        let mut owners: Vec<LockOwner> = (0..4).map(|_| t.owner().unwrap()).collect();
        let mut model: Vec<[Option<Mode>; 2]> = vec![[None; 2]; 4];
        let others_ok = |model: &Vec<[Option<Mode>; 2]>, o: usize, r: usize, m: Mode| {
            (0..4).filter(|&k| k != o).all(|k| model[k][r].is_none_or(|h| h.compatible(m)))
        };
        for op in ops {
            match op {
                Op::Acquire(o, r, m) => {
                    let res = owners[o].try_acquire(&named(names[r]), m);
                    if model[o][r].is_some() {
                        prop_assert!(
                            matches!(res, Err(AcquireError::AlreadyHeld { .. })),
                            "{:?}",
                            res
                        );
                    } else if others_ok(&model, o, r, m) {
                        prop_assert!(res.is_ok(), "{:?}", res);
                        model[o][r] = Some(m);
                    } else {
                        prop_assert!(would_block(res));
                    }
                }
                Op::Convert(o, r, m) => {
                    let res = owners[o].convert(&named(names[r]), m, Wait::No);
                    match model[o][r] {
                        None => prop_assert!(
                            matches!(res, Err(ConvertError::NotHeld { .. })),
                            "{:?}",
                            res
                        ),
                        Some(_) if others_ok(&model, o, r, m) => {
                            prop_assert!(res.is_ok(), "{:?}", res);
                            model[o][r] = Some(m);
                        }
                        Some(_) => prop_assert!(
                            matches!(res, Err(ConvertError::WouldBlock { .. })),
                            "{:?}",
                            res
                        ),
                    }
                }
                Op::Release(o, r) => {
                    owners[o].release(&named(names[r])).unwrap();
                    model[o][r] = None;
                }
                Op::Drop(o) => {
                    owners[o] = t.owner().unwrap();
                    model[o] = [None; 2];
                }
            }
            // The invariant itself, and test() agrees with the model for every mode.
            for r in 0..2 {
                for a in 0..4 {
                    for b in (a + 1)..4 {
                        if let (Some(x), Some(y)) = (model[a][r], model[b][r]) {
                            prop_assert!(x.compatible(y));
                        }
                    }
                }
                for m in Mode::ALL {
                    let free = owners[0].test(&named(names[r]), m).unwrap().is_none();
                    prop_assert_eq!(free, others_ok(&model, 0, r, m));
                }
            }
        }
    }

    // proves [LOCK-7]: range locks of 3 owners on bytes 0..12 of 2 inodes behave like a
    // per-byte model (set replaces the owner's own mode, unlock splits).
    #[test]
    fn ranges_match_the_model(
        ops in prop::collection::vec((0..3usize, 0..2u64, 0..12u64, 0..12u64, 0..3u8), 1..80)
    ) {
        let (_d, t) = table();
        let owners: Vec<LockOwner> = (0..3).map(|_| t.owner().unwrap()).collect();
        // model[owner][ino][byte]: 0 none, 1 read, 2 write
        let mut model = vec![vec![[0u8; 12]; 2]; 3];
        for (o, ino, a, b, k) in ops {
            let (s, e) = (a.min(b), a.max(b));
            let res = range(ino, s, e);
            if k == 0 {
                owners[o].release(&res).unwrap();
                for x in s..=e { model[o][ino as usize][x as usize] = 0; }
                continue;
            }
            let mode = if k == 1 { Mode::Pr } else { Mode::Ex };
            let conflict = (0..3).filter(|&p| p != o).any(|p| {
                (s..=e).any(|x| {
                    let h = model[p][ino as usize][x as usize];
                    h == 2 || (h == 1 && k == 2)
                })
            });
            let tested = owners[o].test(&res, mode).unwrap();
            prop_assert_eq!(tested.is_some(), conflict);
            let got = owners[o].try_acquire(&res, mode);
            if conflict {
                prop_assert!(would_block(got));
            } else {
                prop_assert!(got.is_ok(), "{:?}", got);
                for x in s..=e { model[o][ino as usize][x as usize] = k; }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// [LOCK-9]: the wait queue

/// Start a thread that acquires `name` in `mode` through `owner` (waiting up to 20 s), pushes
/// `tag` to `order` when granted, holds it for `hold`, then releases.
fn queued_acquire(
    owner: Arc<LockOwner>,
    name: &'static str,
    mode: Mode,
    hold: Duration,
    tag: &'static str,
    order: Arc<Mutex<Vec<&'static str>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        owner
            .acquire(&named(name), mode, Wait::Timeout(Duration::from_secs(20)))
            .unwrap();
        order.lock().unwrap().push(tag);
        thread::sleep(hold);
        owner.release(&named(name)).unwrap();
    })
}

/// Wait until `n` live waiters are in the queue of `name` (entries with a locked presence byte).
fn wait_queued(t: &LockTable, probe: &LockOwner, name: &str, n: usize) {
    let block = named_block(name);
    let qpath = queue::path(&crate::fsutil::parent_of(t.path()), block);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = queue::load(&qpath, block)
            .unwrap()
            .iter()
            .filter(|w| probe.waiter_alive(w.slot).unwrap())
            .count();
        if live == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{live} waiters queued, expected {n}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

// proves [LOCK-9]: waiters are granted in arrival order, and a waiting EX is not overtaken by
// later compatible requests (no starvation by a stream of readers).
#[test]
fn waiters_are_served_in_arrival_order() {
    let (_d, t) = table();
    let probe = t.owner().unwrap();
    let holder = t.owner().unwrap();
    holder.try_acquire(&named("q"), Mode::Pr).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (i, (tag, mode)) in [("ex1", Mode::Ex), ("pr2", Mode::Pr), ("ex3", Mode::Ex)]
        .into_iter()
        .enumerate()
    {
        let o = Arc::new(t.owner().unwrap());
        let hold = Duration::from_millis(30);
        threads.push(queued_acquire(o, "q", mode, hold, tag, order.clone()));
        wait_queued(&t, &probe, "q", i + 1);
    }
    // pr2 is compatible with the holder's PR but queued behind ex1: neither a waiting nor a
    // non-waiting PR may overtake.
    thread::sleep(Duration::from_millis(50));
    assert!(order.lock().unwrap().is_empty());
    let late = t.owner().unwrap();
    assert!(matches!(
        late.try_acquire(&named("q"), Mode::Pr),
        Err(AcquireError::Queued { .. })
    ));
    holder.release(&named("q")).unwrap();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["ex1", "pr2", "ex3"]);
    // Everyone left: the queue file is gone and a request is granted at once.
    late.try_acquire(&named("q"), Mode::Pr).unwrap();
}

// proves [LOCK-9]: a waiter that dies (its description closed) or gives up is skipped.
#[test]
fn a_dead_or_timed_out_waiter_does_not_block_the_queue() {
    let (_d, t) = table();
    let probe = t.owner().unwrap();
    let holder = t.owner().unwrap();
    holder.try_acquire(&named("d"), Mode::Ex).unwrap();
    // A waiter that times out.
    let quitter = t.owner().unwrap();
    let r = quitter.acquire(
        &named("d"),
        Mode::Ex,
        Wait::Timeout(Duration::from_millis(50)),
    );
    assert!(matches!(r, Err(AcquireError::TimedOut { .. })), "{r:?}");
    // A waiter that dies while queued: its owner is dropped from another thread mid-wait.
    let doomed = Arc::new(t.owner().unwrap());
    let d2 = doomed.clone();
    let waiting = thread::spawn(move || {
        let _ = d2.acquire(
            &named("d"),
            Mode::Ex,
            Wait::Timeout(Duration::from_millis(300)),
        );
    });
    wait_queued(&t, &probe, "d", 1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(t.owner().unwrap());
    let th = queued_acquire(next, "d", Mode::Ex, Duration::ZERO, "next", order.clone());
    wait_queued(&t, &probe, "d", 2);
    waiting.join().unwrap(); // gave up after 300 ms: its presence byte is free
    drop(doomed);
    holder.release(&named("d")).unwrap();
    th.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["next"]);
}

// proves [LOCK-9]: a convert is served before queued acquires, and a down-convert never waits.
#[test]
fn converts_go_first_and_down_converts_bypass_the_queue() {
    let (_d, t) = table();
    let probe = t.owner().unwrap();
    let a = t.owner().unwrap();
    let b = t.owner().unwrap();
    a.try_acquire(&named("c"), Mode::Pr).unwrap();
    b.try_acquire(&named("c"), Mode::Cr).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let w = Arc::new(t.owner().unwrap());
    let th = queued_acquire(w, "c", Mode::Ex, Duration::ZERO, "ex", order.clone());
    wait_queued(&t, &probe, "c", 1);
    // CR -> PR is an up-convert (PR conflicts with CW, CR does not), compatible with a's PR:
    // granted although an acquire waits, because converts go first.
    b.convert(&named("c"), Mode::Pr, Wait::Timeout(Duration::from_secs(5)))
        .unwrap();
    // PR -> CR is a down-convert: granted at once, even without waiting.
    a.convert(&named("c"), Mode::Cr, Wait::No).unwrap();
    assert!(order.lock().unwrap().is_empty());
    a.release(&named("c")).unwrap();
    b.release(&named("c")).unwrap();
    th.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["ex"]);
}

// proves [LOCK-9]: the queue is soft state. A damaged queue file costs no grant and no exclusion.
#[test]
fn a_damaged_queue_file_is_rebuilt_by_the_live_waiters() {
    let (_d, t) = table();
    let probe = t.owner().unwrap();
    let holder = t.owner().unwrap();
    holder.try_acquire(&named("z"), Mode::Ex).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let w = Arc::new(t.owner().unwrap());
    let th = queued_acquire(w, "z", Mode::Ex, Duration::ZERO, "w", order.clone());
    wait_queued(&t, &probe, "z", 1);
    let qpath = queue::path(&crate::fsutil::parent_of(t.path()), named_block("z"));
    std::fs::write(&qpath, b"garbage").unwrap();
    // The waiter puts itself back; a newcomer still sees the queue byte and queues.
    wait_queued(&t, &probe, "z", 1);
    assert!(matches!(
        t.owner().unwrap().try_acquire(&named("z"), Mode::Ex),
        Err(AcquireError::Queued { .. })
    ));
    holder.release(&named("z")).unwrap();
    th.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["w"]);
}
