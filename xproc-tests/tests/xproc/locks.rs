//! The lock manager (`coordination::lock`) between real processes.
//!
//! Proves data-layout.md "Lock table": [LOCK-2] (owners in different processes conflict per the
//! DLM matrix), [LOCK-3] (a SIGKILLed holder's locks are released by the kernel), [LOCK-4] and
//! [LOCK-5] (mutual exclusion and CW/PR exclusion between processes; a waiter wakes when the
//! holders release), [LOCK-7] (range locks across processes).

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use verfs_coordination::lock::{AcquireError, Conflict, LockTable, Mode, Resource, Wait};

use crate::*;

const T: Duration = Duration::from_secs(30);

fn table(st: &TestStore) -> LockTable {
    LockTable::open(&st.root().join("locks")).unwrap()
}

fn named(n: &str) -> Resource {
    Resource::Named(n.to_owned())
}

fn would_block(r: Result<(), AcquireError>) -> bool {
    match r {
        Ok(()) => false,
        Err(AcquireError::WouldBlock { .. }) => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn spawn_lock(pool: &mut Pool, name: &str, store: &Path, extra: &[&str]) -> usize {
    let mut args = vec!["lock".to_owned(), store.to_str().unwrap().to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    pool.spawn_agent(name, &args)
}

fn has_event(pool: &Pool, i: usize, event: &str) -> bool {
    pool.results(i).iter().any(|r| r["event"] == event)
}

// proves [LOCK-2], [LOCK-3]: EX held by another process blocks EX and PR but not NL; SIGKILL of
// the holder frees the resource at once.
#[test]
fn killed_holder_releases_its_lock() {
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let holder = spawn_lock(
        &mut pool,
        "holder",
        st.root(),
        &["--resource", "gc-worker", "--mode", "EX", "--until-killed"],
    );
    pool.wait_event(holder, "acquired", T);

    let me = table(&st).owner().unwrap();
    let r = named("gc-worker");
    assert!(would_block(me.try_acquire(&r, Mode::Ex)));
    assert!(would_block(me.try_acquire(&r, Mode::Pr)));
    assert!(would_block(me.try_acquire(&r, Mode::Cr)));
    me.try_acquire(&r, Mode::Nl).unwrap();
    // Another real process sees the same.
    let other = spawn_lock(
        &mut pool,
        "other",
        st.root(),
        &["--resource", "gc-worker", "--mode", "PR"],
    );
    let f = pool.wait(other, T);
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    let wb = f.results.iter().find(|r| r["event"] == "would-block");
    assert_eq!(
        wb.map(|r| r["held"].clone()),
        Some("EX".into()),
        "{}",
        f.describe()
    );

    assert!(pool.sigkill(holder));
    let start = Instant::now();
    me.convert(&r, Mode::Ex, Wait::Timeout(Duration::from_secs(1)))
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    pool.wait(holder, T);
}

// proves [LOCK-5]: a blocking acquire in one process wakes when another process releases.
#[test]
fn blocking_acquire_wakes_on_release_by_another_process() {
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let release = st.scratch().join("release-a");
    let a = spawn_lock(
        &mut pool,
        "a",
        st.root(),
        &[
            "--resource",
            "job",
            "--mode",
            "EX",
            "--release-on",
            release.to_str().unwrap(),
        ],
    );
    pool.wait_event(a, "acquired", T);
    let b = spawn_lock(
        &mut pool,
        "b",
        st.root(),
        &["--resource", "job", "--mode", "PR", "--wait", "forever"],
    );
    pool.wait_event(b, "trying", T);
    thread::sleep(Duration::from_millis(300));
    assert!(!has_event(&pool, b, "acquired"), "PR granted while EX held");
    fs::write(&release, b"").unwrap();
    let released = pool.wait_event(a, "released", T)["at_ms"].as_u64().unwrap();
    let acquired = pool.wait_event(b, "acquired", Duration::from_secs(2))["at_ms"]
        .as_u64()
        .unwrap();
    assert!(
        acquired >= released,
        "acquired {acquired} < released {released}"
    );
    assert!(
        acquired - released < 1000,
        "woke {} ms late",
        acquired - released
    );
    for f in pool.wait_all(T) {
        assert!(f.status.success(), "{}", f.describe());
    }
}

// proves [LOCK-4], [LOCK-5]: 4 processes x 200 increments under EX: exactly 800, and no two
// processes were ever inside at once.
#[test]
fn ex_is_mutual_exclusion_between_processes() {
    let _g = heavy();
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let counter = st.scratch().join("counter");
    let go = pool.go_file();
    let waiting: Vec<usize> = (0..4)
        .map(|i| {
            pool.spawn_agent(
                &format!("counter{i}"),
                &[
                    "lock-count",
                    st.root().to_str().unwrap(),
                    "--resource",
                    "counter",
                    "--counter",
                    counter.to_str().unwrap(),
                    "--iterations",
                    "200",
                    "--go",
                    go.to_str().unwrap(),
                ],
            )
        })
        .collect();
    pool.go(&waiting);
    for f in pool.wait_all(Duration::from_secs(120)) {
        assert!(f.status.success(), "{}", f.describe());
    }
    assert_eq!(fs::read_to_string(&counter).unwrap(), "800\n");
}

// proves [LOCK-5]: CW holders in two processes coexist; a PR request blocks until both release.
#[test]
fn cw_holders_coexist_and_block_pr() {
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let rel: Vec<_> = (0..2)
        .map(|i| st.scratch().join(format!("release-cw{i}")))
        .collect();
    let cw: Vec<usize> = (0..2)
        .map(|i| {
            let i = spawn_lock(
                &mut pool,
                &format!("cw{i}"),
                st.root(),
                &[
                    "--resource",
                    "pack:0123456789abcdef",
                    "--mode",
                    "CW",
                    "--release-on",
                    rel[i].to_str().unwrap(),
                ],
            );
            pool.wait_event(i, "acquired", T);
            i
        })
        .collect();
    let pr = spawn_lock(
        &mut pool,
        "pr",
        st.root(),
        &[
            "--resource",
            "pack:0123456789abcdef",
            "--mode",
            "PR",
            "--wait",
            "forever",
        ],
    );
    pool.wait_event(pr, "trying", T);
    thread::sleep(Duration::from_millis(300));
    assert!(
        !has_event(&pool, pr, "acquired"),
        "PR granted beside two CW"
    );
    fs::write(&rel[0], b"").unwrap();
    pool.wait_event(cw[0], "released", T);
    thread::sleep(Duration::from_millis(300));
    assert!(
        !has_event(&pool, pr, "acquired"),
        "PR granted beside one CW"
    );
    fs::write(&rel[1], b"").unwrap();
    let released = pool.wait_event(cw[1], "released", T)["at_ms"]
        .as_u64()
        .unwrap();
    let acquired = pool.wait_event(pr, "acquired", Duration::from_secs(2))["at_ms"]
        .as_u64()
        .unwrap();
    assert!(acquired >= released);
    for f in pool.wait_all(T) {
        assert!(f.status.success(), "{}", f.describe());
    }
}

// proves [LOCK-7], [LOCK-3]: a range write lock held by another process conflicts with
// overlapping ranges only, getlk reports it, and it vanishes with the process.
#[test]
fn range_locks_between_processes() {
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let holder = spawn_lock(
        &mut pool,
        "holder",
        st.root(),
        &["--range", "42:100:199", "--mode", "EX", "--until-killed"],
    );
    pool.wait_event(holder, "acquired", T);
    let me = table(&st).owner().unwrap();
    let r = |s, e| Resource::Range {
        ino: 42,
        start: s,
        end: e,
    };
    assert_eq!(
        me.test(&r(0, u64::MAX), Mode::Pr).unwrap(),
        Some(Conflict {
            start: 100,
            end: 199,
            mode: Mode::Ex
        })
    );
    assert!(would_block(me.try_acquire(&r(150, 150), Mode::Pr)));
    me.try_acquire(&r(0, 99), Mode::Ex).unwrap();
    me.try_acquire(&r(200, u64::MAX), Mode::Ex).unwrap();
    me.try_acquire(
        &Resource::Range {
            ino: 43,
            start: 0,
            end: u64::MAX,
        },
        Mode::Ex,
    )
    .unwrap();
    assert!(pool.sigkill(holder));
    me.acquire(
        &r(100, 199),
        Mode::Ex,
        Wait::Timeout(Duration::from_secs(1)),
    )
    .unwrap();
    pool.wait(holder, T);
}
