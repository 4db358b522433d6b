//! Two FUSE mounts of one store plus the CLI, used at once.
//!
//! Proves docs/DESIGN.md "Consistency model" across processes: file contents follow close-to-open
//! consistency (closed through mount 1 = seen whole through mount 2 and by `verfs cat`);
//! namespace changes are visible to every process as soon as the call returns; two processes
//! racing to create one name: exactly one wins, the other gets `EEXIST`. And data-layout.md
//! "Lock table": POSIX and flock locks hold across every process of the store ([LOCK-2],
//! [LOCK-7] ranges), a waiter wakes when the holder releases ([LOCK-5]), a SIGKILLed holder's
//! locks are released ([LOCK-3]).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::*;

const T: Duration = Duration::from_secs(60);

fn py(pool: &mut Pool, name: &str, script: &str, args: &[&Path]) -> usize {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    pool.spawn(name, c)
}

#[test]
fn mount_multi_close_to_open_and_namespace() {
    require_fuse!();
    let st = TestStore::new();
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    let host = st.scratch_dir("host");
    let want = write_random_file(&host.join("f"), seed(), 5 << 20);
    for round in 0..3 {
        let name = format!("file-{round}");
        // Written and closed through mount 1 (cp closes before returning) ...
        ext_ok("cp", &[host.join("f"), m1.join(&name)]);
        // ... seen whole, at once, through mount 2 and by the CLI.
        assert_eq!(sha256_file(&m2.join(&name)), want, "mount 2, round {round}");
        assert_eq!(
            sha256(&st.cat(&format!("/{name}"))),
            want,
            "verfs cat, round {round}"
        );
        // Rewritten in place through mount 2, seen through mount 1.
        let patch = random_bytes(seed() ^ round, 70_000);
        ext_ok(
            "python3",
            &[
                "-c",
                "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.pwrite(fd,open(sys.argv[2],'rb').read(),123456)\nos.close(fd)",
                &m2.join(&name).to_string_lossy(),
                &{
                    let p = host.join("patch");
                    fs::write(&p, &patch).unwrap();
                    p.to_string_lossy().into_owned()
                },
            ],
        );
        let mut expect = fs::read(host.join("f")).unwrap();
        expect[123456..123456 + patch.len()].copy_from_slice(&patch);
        assert_eq!(
            sha256_file(&m1.join(&name)),
            sha256(&expect),
            "mount 1 after rewrite"
        );
        assert_eq!(sha256(&st.cat(&format!("/{name}"))), sha256(&expect));
    }
    // rename and unlink through mount 2: `ls` on mount 1 sees each at once.
    let ls1 = || {
        let mut v: Vec<String> = ext_ok("ls", &[m1.path()])
            .stdout_str()
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    fs::rename(m2.join("file-0"), m2.join("renamed")).unwrap();
    assert_eq!(ls1(), ["file-1", "file-2", "renamed"]);
    fs::remove_file(m2.join("file-1")).unwrap();
    assert_eq!(ls1(), ["file-2", "renamed"]);
    fs::create_dir(m2.join("dir")).unwrap();
    fs::rename(m2.join("file-2"), m2.join("dir/inside")).unwrap();
    assert_eq!(ls1(), ["dir", "renamed"]);
    assert!(!m1.join("file-2").exists() && m1.join("dir/inside").is_file());
    // The CLI's changes too.
    st.ok(&["mv", "/renamed", "/dir/by-cli"]);
    assert_eq!(ls1(), ["dir"]);
    let sub = ext_ok("ls", &[m1.join("dir")]).stdout_str();
    assert_eq!(sub, "by-cli\ninside\n");
    drop(m1);
    drop(m2);
    st.assert_fsck_clean();
}

const MKDIR_PY: &str = r#"
import errno, os, sys, time
path, go = sys.argv[1], sys.argv[2]
open(sys.argv[3], "w").close()
while not os.path.exists(go):
    pass
try:
    os.mkdir(path); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"#;

#[test]
fn mount_multi_mkdir_race() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("race");
    let mut pool = Pool::new(st.scratch(), agent());
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    for round in 0..10 {
        let go = scratch.join(format!("go-{round}"));
        let name = format!("d{round}");
        let procs: Vec<usize> = [&m1, &m2]
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let ready = scratch.join(format!("ready-{round}-{k}"));
                let i = py(
                    &mut pool,
                    &format!("mkdir{k}"),
                    MKDIR_PY,
                    &[&m.join(&name), &go, &ready],
                );
                pool.wait_file(i, &ready, T);
                i
            })
            .collect();
        fs::write(&go, b"").unwrap();
        let mut outcomes: Vec<String> = procs
            .iter()
            .map(|&i| {
                let f = pool.wait(i, T);
                assert!(f.status.success(), "{}", f.describe());
                String::from_utf8_lossy(&f.stdout).trim().to_owned()
            })
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            ["EEXIST", "ok"],
            "round {round}: exactly one mkdir wins"
        );
    }
    let mut names = st.ls("/");
    names.sort();
    assert_eq!(names, (0..10).map(|r| format!("d{r}")).collect::<Vec<_>>());
    drop(m1);
    drop(m2);
    st.assert_fsck_clean();
}

// flock(1) through two mounts: -n fails while held, -w waits until the holder exits.
#[test]
fn mount_multi_flock() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("flock");
    let mut pool = Pool::new(st.scratch(), agent());
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    fs::write(m1.join("lockfile"), b"x").unwrap();
    let (ready, release, released) = (
        scratch.join("ready"),
        scratch.join("release"),
        scratch.join("released"),
    );
    let mut c = Command::new("flock");
    c.arg("-x").arg(m1.join("lockfile")).arg("-c").arg(format!(
        "touch {r}; while [ ! -e {rel} ]; do sleep 0.02; done; date +%s%N > {done}",
        r = shq(&ready),
        rel = shq(&release),
        done = shq(&released)
    ));
    let holder = pool.spawn("holder", c);
    pool.wait_file(holder, &ready, T);

    let nb = ext(
        "flock",
        &[
            "-n".as_ref(),
            m2.join("lockfile").as_os_str(),
            "true".as_ref(),
        ],
    );
    assert_eq!(
        nb.code(),
        Some(1),
        "flock -n through mount 2 while held through mount 1:\n{}",
        nb.describe()
    );
    // Through the same mount by another process too.
    let nb1 = ext(
        "flock",
        &[
            "-n".as_ref(),
            m1.join("lockfile").as_os_str(),
            "true".as_ref(),
        ],
    );
    assert_eq!(nb1.code(), Some(1), "{}", nb1.describe());
    // A shared lock conflicts with the exclusive one as well.
    let sh1 = ext(
        "flock",
        &[
            "-s".as_ref(),
            "-n".as_ref(),
            m2.join("lockfile").as_os_str(),
            "true".as_ref(),
        ],
    );
    assert_eq!(sh1.code(), Some(1), "{}", sh1.describe());

    let mut c = Command::new("flock");
    c.arg("-w")
        .arg("10")
        .arg(m2.join("lockfile"))
        .arg("-c")
        .arg("date +%s%N");
    let waiter = pool.spawn("waiter", c);
    thread::sleep(Duration::from_millis(500));
    assert!(
        !pool.has_exited(waiter),
        "flock -w got the lock while it was held"
    );
    fs::write(&release, b"").unwrap();
    let h = pool.wait(holder, T);
    assert!(h.status.success(), "{}", h.describe());
    let w = pool.wait(waiter, Duration::from_secs(15));
    assert!(
        w.status.success(),
        "flock -w after the holder exited:\n{}",
        w.describe()
    );
    let got: u128 = String::from_utf8_lossy(&w.stdout).trim().parse().unwrap();
    let rel: u128 = fs::read_to_string(&released)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        got >= rel,
        "the waiter ran its command before the holder released"
    );
    // Free now.
    ext_ok(
        "flock",
        &[
            "-n".as_ref(),
            m1.join("lockfile").as_os_str(),
            "true".as_ref(),
        ],
    );
}

const LOCKF_HOLD_PY: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 100, 100)   # bytes 100..199
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
os.close(fd)
"#;

/// Non-blocking lockf probes; prints one "start:len:kind -> ok|EAGAIN" line each.
const LOCKF_PROBE_PY: &str = r#"
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for spec in sys.argv[2:]:
    start, length, kind = spec.split(":")
    op = (fcntl.LOCK_EX if kind == "ex" else fcntl.LOCK_SH) | fcntl.LOCK_NB
    try:
        fcntl.lockf(fd, op, int(length), int(start))
        fcntl.lockf(fd, fcntl.LOCK_UN, int(length), int(start))
        print(spec, "ok")
    except OSError as e:
        print(spec, errno.errorcode.get(e.errno, e.errno))
"#;

fn probe(file: &Path, specs: &[&str]) -> String {
    let mut args = vec![
        "-c".to_owned(),
        LOCKF_PROBE_PY.to_owned(),
        file.to_string_lossy().into_owned(),
    ];
    args.extend(specs.iter().map(|s| s.to_string()));
    ext_ok("python3", &args).stdout_str()
}

// fcntl range locks (lockf) across mounts: overlapping ranges conflict, disjoint ones do not.
#[test]
fn mount_multi_lockf_ranges() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("lockf");
    let mut pool = Pool::new(st.scratch(), agent());
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    fs::write(m1.join("f"), vec![0u8; 1000]).unwrap();
    let (ready, release) = (scratch.join("ready"), scratch.join("release"));
    let holder = py(
        &mut pool,
        "holder",
        LOCKF_HOLD_PY,
        &[&m1.join("f"), &ready, &release],
    );
    pool.wait_file(holder, &ready, T);
    let specs = [
        "150:10:ex",
        "150:10:sh",
        "0:101:ex",
        "199:1:sh",
        "0:0:ex",
        "0:100:ex",
        "200:0:ex",
        "0:100:sh",
        "200:50:sh",
    ];
    let want =
        "150:10:ex EAGAIN\n150:10:sh EAGAIN\n0:101:ex EAGAIN\n199:1:sh EAGAIN\n0:0:ex EAGAIN\n\
                0:100:ex ok\n200:0:ex ok\n0:100:sh ok\n200:50:sh ok\n";
    assert_eq!(probe(&m2.join("f"), &specs), want, "through mount 2");
    assert_eq!(
        probe(&m1.join("f"), &specs),
        want,
        "another process through mount 1"
    );
    fs::write(&release, b"").unwrap();
    let h = pool.wait(holder, T);
    assert!(h.status.success(), "{}", h.describe());
    // Released by the holder's close: the whole range is free.
    assert_eq!(
        probe(&m2.join("f"), &["0:0:ex"]),
        "0:0:ex ok\n",
        "after the holder closed its fd"
    );
}

const KILLED_HOLDER_PY: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)      # the whole file
open(sys.argv[2], "w").close()
time.sleep(600)
"#;

// For server-side POSIX locks the kernel sends no unlock on close: FUSE_FLUSH with the lock
// owner is the only notice, on every close including the implicit ones of a dying process; the
// mount drops that owner's locks on the file there ([LOCK-3] through a mount).
#[test]
fn mount_multi_lock_released_when_holder_is_killed() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("killed");
    let mut pool = Pool::new(st.scratch(), agent());
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    fs::write(m1.join("f"), b"data").unwrap();
    let ready = scratch.join("ready");
    // python itself holds the descriptor (no child inherits it), so SIGKILL closes it.
    let holder = py(
        &mut pool,
        "holder",
        KILLED_HOLDER_PY,
        &[&m1.join("f"), &ready],
    );
    pool.wait_file(holder, &ready, T);
    assert_eq!(
        probe(&m2.join("f"), &["0:0:ex"]),
        "0:0:ex EAGAIN\n",
        "held through mount 1"
    );
    assert!(pool.sigkill(holder));
    let f = pool.wait(holder, T);
    assert!(f.status.code().is_none(), "{}", f.describe());
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        last = probe(&m2.join("f"), &["0:0:ex"]);
        if last == "0:0:ex ok\n" {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        last, "0:0:ex ok\n",
        "a SIGKILLed holder's POSIX lock (taken through mount 1) is still held 5 s later"
    );
}

const BLOCKING_WAITER_PY: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
open(sys.argv[2], "w").close()
fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)      # F_SETLKW on the whole file
print(time.time_ns(), flush=True)
os.close(fd)
"#;

// Blocking F_SETLKW through a mount: more waiters than the mount has FUSE worker threads all
// wait without starving the holder's unlock, each gets the lock after the holder released it,
// and a waiter killed while it waits dies at once instead of hanging in the kernel (the mount
// answers EINTR when the caller has a signal pending; fuser drops FUSE_INTERRUPT).
#[test]
fn mount_multi_fcntl_blocking_waiters() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("setlkw");
    let mut pool = Pool::new(st.scratch(), agent());
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &["threads=2"]);
    fs::write(m1.join("f"), b"data").unwrap();
    let (ready, release) = (scratch.join("ready"), scratch.join("release"));
    let holder = py(
        &mut pool,
        "holder",
        LOCKF_HOLD_PY.replace("100, 100", "0, 0").as_str(),
        &[&m1.join("f"), &ready, &release],
    );
    pool.wait_file(holder, &ready, T);
    let mut waiters = Vec::new();
    for k in 0..5 {
        let started = scratch.join(format!("started-{k}"));
        let via = if k % 2 == 0 { &m2 } else { &m1 };
        let w = py(
            &mut pool,
            &format!("waiter-{k}"),
            BLOCKING_WAITER_PY,
            &[&via.join("f"), &started],
        );
        waiters.push(w);
        pool.wait_file(w, &started, T);
    }
    let victim_started = scratch.join("started-victim");
    let victim = py(
        &mut pool,
        "victim",
        BLOCKING_WAITER_PY,
        &[&m2.join("f"), &victim_started],
    );
    pool.wait_file(victim, &victim_started, T);
    thread::sleep(Duration::from_millis(300));
    for &w in waiters.iter().chain([&victim]) {
        assert!(
            !pool.has_exited(w),
            "a waiter got the lock while it was held"
        );
    }
    // Both mounts still serve other requests while every worker could be taken by a waiter.
    // (`cat` runs under a timeout: a starved mount fails the test instead of hanging it.)
    for m in [&m2, &m1] {
        assert_eq!(ext_ok("cat", &[m.join("f")]).stdout, b"data");
    }
    // A killed waiter dies now, without waiting for the lock.
    assert!(pool.sigkill(victim));
    let v = pool.wait(victim, Duration::from_secs(10));
    assert!(v.status.code().is_none(), "{}", v.describe());
    let released_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    fs::write(&release, b"").unwrap();
    let h = pool.wait(holder, T);
    assert!(h.status.success(), "{}", h.describe());
    for w in waiters {
        let r = pool.wait(w, T);
        assert!(r.status.success(), "{}", r.describe());
        let t: u128 = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
        assert!(t >= released_at, "a waiter ran before the holder released");
    }
    // Free again once every waiter closed its descriptor.
    assert_eq!(probe(&m2.join("f"), &["0:0:ex"]), "0:0:ex ok\n");
}

/// Regression, found by the model test (`model.rs`, seed 2, step 29): a close committed the size
/// its overlay saw at its first write, so a file another mount had grown meanwhile was cut back
/// (that mount's committed bytes lost), and one another mount had truncated was grown again with
/// zeros. Data-layout 6.7 step 1: ranges other writers committed meanwhile are kept; as with one
/// file on a local filesystem, the writes and the truncate apply in commit order.
#[test]
fn mount_multi_close_keeps_size_set_by_other_mount() {
    require_fuse!();
    use std::os::unix::fs::FileExt;
    let st = TestStore::new();
    let m1 = Mount::new(&st, &[]);
    let m2 = Mount::new(&st, &[]);
    let open = |p: std::path::PathBuf| fs::OpenOptions::new().write(true).open(p).unwrap();

    // Grown by mount 2 while mount 1 has unflushed writes.
    fs::write(m1.join("grown"), vec![b'o'; 1000]).unwrap();
    let (f1, f2) = (open(m1.join("grown")), open(m2.join("grown")));
    f1.write_all_at(&[b'A'; 100], 0).unwrap();
    f2.write_all_at(&[b'B'; 100], 5000).unwrap();
    drop(f2);
    drop(f1);
    let mut want = vec![b'o'; 1000];
    want[..100].fill(b'A');
    want.resize(5000, 0);
    want.extend_from_slice(&[b'B'; 100]);
    for (who, got) in [
        ("mount 2", fs::read(m2.join("grown")).unwrap()),
        ("mount 1", fs::read(m1.join("grown")).unwrap()),
        ("verfs cat", st.cat("/grown")),
    ] {
        assert!(
            got == want,
            "{who}: {} bytes, want {} (mount 2's append kept)",
            got.len(),
            want.len()
        );
    }

    // Truncated by mount 2 while mount 1 has unflushed writes below the new size.
    fs::write(m1.join("shrunk"), vec![b'o'; 10_000]).unwrap();
    let f1 = open(m1.join("shrunk"));
    f1.write_all_at(&[b'A'; 10], 0).unwrap();
    open(m2.join("shrunk")).set_len(100).unwrap();
    drop(f1);
    let mut want = vec![b'o'; 100];
    want[..10].fill(b'A');
    for (who, got) in [
        ("mount 2", fs::read(m2.join("shrunk")).unwrap()),
        ("verfs cat", st.cat("/shrunk")),
    ] {
        assert!(
            got == want,
            "{who}: {} bytes, want {} (mount 2's truncate kept)",
            got.len(),
            want.len()
        );
    }
    drop(m1);
    drop(m2);
    st.assert_fsck_clean();
}
