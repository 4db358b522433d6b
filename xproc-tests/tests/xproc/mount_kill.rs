//! A mount process killed (SIGKILL) in the middle of an rsync, and stopped (SIGTERM) while a
//! writer still has a file open.
//!
//! Proves docs/DESIGN.md "Failure model": a process may die at any instruction and the store stays
//! consistent (`verfs recover` exits 0, then `verfs fsck` is clean: "Invariants", including
//! "after `verfs recover`: no lease of a dead process, no temp file or open pack of a dead
//! process"); `verfs umount` clears the dead endpoint of a killed mount. And "Consistency
//! model": a file closed before the kill is whole — rsync writes each file to a temp name,
//! closes it (commit), then renames it, so every file visible under its final name after
//! recovery must have exactly the source's bytes. A SIGTERMed mount exits 0 after flushing:
//! data that the kernel acknowledged (write(2) returned) to a still-open file is durable.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::*;

const T: Duration = Duration::from_secs(60);

/// Pid of the live process whose lease says `mount <mp>`, from `verfs status --json`.
fn mount_pid_from_status(st: &TestStore, mp: &Path) -> i32 {
    let out = st.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = format!("mount {}", mp.display());
    let pids: Vec<i64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == want.as_str() && p["state"] == "live")
        .filter_map(|p| p["pid"].as_i64())
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "one live `{want}` process expected:\n{}",
        out.describe()
    );
    pids[0] as i32
}

#[test]
fn mount_kill_sigkill_during_rsync() {
    require_fuse!();
    let _g = heavy();
    let st = TestStore::new();
    let src = st.scratch_dir("src");
    // 600 small files in 12 directories, then 6 x 12 MiB: the kill lands while rsync streams.
    sh_ok(&format!(
        r#"cd {src}
head -c 4M /dev/urandom > ../pool
for d in $(seq -w 1 12); do
  mkdir d$d
  for f in $(seq -w 1 50); do
    dd if=../pool of=d$d/f$f bs=1 skip=$((10#$d * 997 + 10#$f * 7919)) count=$((10#$f * 531 + 10#$d)) status=none
  done
done
mkdir large
for i in 1 2 3 4 5 6; do head -c 12M /dev/urandom > large/big$i; done
rm ../pool"#,
        src = shq(&src)
    ));
    let mut pool = Pool::new(st.scratch(), agent());
    let mut m = Mount::new(&st, &[]);
    let pid = mount_pid_from_status(&st, m.path());
    assert_eq!(
        pid,
        m.pid(),
        "status --json and `mount -d` disagree on the mount's pid"
    );

    let mut c = Command::new("rsync");
    c.arg("-a")
        .arg("--out-format=%n")
        .arg(format!("{}/", src.display()))
        .arg(m.join("dst"));
    let r = pool.spawn("rsync", c);
    // Kill once about 300 entries have been transferred.
    let start = Instant::now();
    loop {
        let n = fs::read_to_string(&pool.proc(r).stdout)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 300 {
            break;
        }
        assert!(
            !pool.has_exited(r),
            "rsync finished before the kill ({n} lines)"
        );
        assert!(start.elapsed() < T, "rsync made no progress ({n} lines)");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(m.signal(Signal::SIGKILL), "mount process already gone");
    let f = pool.wait(r, T);
    assert!(
        !f.status.success(),
        "rsync succeeded despite the kill:\n{}",
        f.describe()
    );

    // The dead endpoint: verfs umount clears it; recover exits 0; fsck is clean.
    assert!(
        m.is_mounted(),
        "the killed mount's endpoint vanished by itself"
    );
    m.umount();
    let rec = st.run(&["recover"]);
    assert!(
        rec.success(),
        "recover after a killed mount:\n{}",
        rec.describe()
    );
    st.assert_fsck_clean();

    // Every file visible under its final name is whole.
    m.mount();
    let dst = m.join("dst");
    let mut complete = 0;
    let mut checked = Vec::new();
    let listing = sh_ok(&format!("cd {} && find . -type f", shq(&src))).stdout_str();
    for rel in listing.lines() {
        let rel = rel.trim_start_matches("./");
        let got = dst.join(rel);
        if fs::symlink_metadata(&got).is_ok() {
            let (a, b) = (sha256_file(&src.join(rel)), sha256_file(&got));
            assert_eq!(a, b, "{rel} is visible under its final name but not whole");
            complete += 1;
            checked.push(rel.to_owned());
        }
    }
    assert!(
        complete >= 100,
        "only {complete} files survived; the kill came too early?"
    );
    eprintln!("mount_kill: {complete} files complete after the kill");
    // The only other files are rsync's temp files of the killed run (`.NAME.XXXXXX`), as any
    // filesystem would keep them: a killed rsync cannot clean up.
    let in_dst = sh_ok(&format!("cd {} && find . -type f", shq(&dst))).stdout_str();
    for rel in in_dst.lines().map(|l| l.trim_start_matches("./")) {
        if checked.iter().any(|c| c == rel) {
            continue;
        }
        let name = rel.rsplit('/').next().unwrap();
        let temp = name.starts_with('.')
            && name.rsplit_once('.').is_some_and(|(stem, suffix)| {
                suffix.len() == 6 && src.join(rel).with_file_name(&stem[1..]).exists()
            });
        assert!(
            temp,
            "{rel}: in the mount but neither complete nor an rsync temp file"
        );
    }
    // The store takes new work after recovery: finish the rsync through the new mount
    // (`--delete` removes the stale temp files).
    ext_ok(
        "rsync",
        &[
            "-a".to_owned(),
            "--delete".to_owned(),
            format!("{}/", src.display()),
            dst.to_string_lossy().into_owned(),
        ],
    );
    assert_same_contents(&src, &dst, "rsync after recovery");
    m.umount();
    st.assert_fsck_clean();
}

const WRITER_PY: &str = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
data = open(sys.argv[2], "rb").read()
for off in range(0, len(data), 65536):
    n = os.pwrite(fd, data[off:off + 65536], off)
    assert n == len(data[off:off + 65536])
open(sys.argv[3], "w").close()   # every write was acknowledged
time.sleep(600)                  # the file stays open, never closed
"#;

// A stopped mount (SIGTERM, or Ctrl-C twice: the second arrives during the final flush) exits 0
// with a writer still holding its file open: the mountpoint is detached lazily (a plain umount
// would fail with EBUSY), what the kernel acknowledged is durable, and the store is closed
// cleanly (fsck is clean before any `verfs recover`).
#[test]
fn mount_kill_sigterm_keeps_acknowledged_writes() {
    stop_keeps_acknowledged_writes(&[Signal::SIGTERM]);
}

#[test]
fn mount_kill_second_ctrl_c_keeps_acknowledged_writes() {
    stop_keeps_acknowledged_writes(&[Signal::SIGINT, Signal::SIGINT]);
}

fn stop_keeps_acknowledged_writes(signals: &[Signal]) {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("sigterm");
    let data = tagged_content("sigterm", seed(), 3 << 20);
    fs::write(scratch.join("data"), &data).unwrap();
    let written = scratch.join("written");
    let mut pool = Pool::new(st.scratch(), agent());
    let mut m = Mount::foreground(&st, &[]);
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(WRITER_PY)
        .arg(m.join("open.bin"))
        .arg(scratch.join("data"))
        .arg(&written);
    let w = pool.spawn("writer", c);
    pool.wait_file(w, &written, T);
    for &sig in signals {
        // Apart, so two signals of one kind are not merged into one pending signal.
        assert!(m.signal(sig));
        thread::sleep(Duration::from_millis(5));
    }
    let status = m.wait_exit(T);
    assert_eq!(
        status.code(),
        Some(0),
        "mount stopped with {signals:?}:\n{}",
        m.stderr()
    );
    let left_mounted = m.is_mounted();
    pool.sigkill(w);
    pool.wait(w, T);
    if left_mounted {
        m.umount();
    }

    // What the writer wrote (and the kernel acknowledged) is durable: by the CLI and a new mount.
    let got = st.cat("/open.bin");
    assert!(
        got == data,
        "after {signals:?}: open.bin is {} (want {})",
        describe_tags(&got),
        describe_tags(&data)
    );
    let mut m2 = Mount::new(&st, &[]);
    assert_eq!(sha256_file(&m2.join("open.bin")), sha256(&data));
    m2.umount();

    let fsck = st.run(&["fsck"]);
    let fsck_clean = fsck.success() && fsck.stdout.is_empty();
    let rec = st.run(&["recover"]);
    assert!(rec.success(), "{}", rec.describe());
    st.assert_fsck_clean();
    assert!(
        !left_mounted && fsck_clean,
        "the mount stopped with {signals:?} (pid {}) exited 0 but left {} mounted (a dead endpoint): {left_mounted}; \
         fsck before recover:\n{}",
        m.pid(),
        m.path().display(),
        fsck.describe()
    );
}

const ORPHAN_CHURN_PY: &str = r#"
import os, sys
d = sys.argv[1]
open(sys.argv[2], "w").close()
held = []
i = 0
while True:
    p = os.path.join(d, "f%d" % i)
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"%d" % i * 1000)
    os.fsync(fd)
    os.unlink(p)                          # open and unlinked: an orphan of the mount
    assert os.pread(fd, 4, 0) == (b"%d" % i * 1000)[:4]
    held.append(fd)
    if len(held) > 4:
        os.close(held.pop(0))             # the last close deletes it
    i += 1
"#;

// [ORPH-1]: a mount killed while files are open and unlinked (and while more are being unlinked)
// leaks none of them: after `verfs recover` no unreachable inode is left (`fsck` checks every
// inode's reachability) and recover reports the orphans it deleted. The kill lands at a random
// moment of the create/unlink/close churn, again and again (XPROC_SEED replays the delays).
#[test]
fn mount_kill_orphans_are_never_leaked() {
    require_fuse!();
    let st = TestStore::new();
    let scratch = st.scratch_dir("orphans");
    let mut pool = Pool::new(st.scratch(), agent());
    let mut m = Mount::new(&st, &[]);
    let s = seed();
    eprintln!("mount_kill_orphans_are_never_leaked: XPROC_SEED={s}");
    let delays = random_bytes(s, 12);
    let mut deleted = 0;
    for (round, d) in delays.iter().enumerate() {
        let dir = m.join(format!("r{round}"));
        fs::create_dir(&dir).unwrap();
        let started = scratch.join(format!("started-{round}"));
        let mut c = Command::new("python3");
        c.arg("-c").arg(ORPHAN_CHURN_PY).arg(&dir).arg(&started);
        let w = pool.spawn(&format!("churn-{round}"), c);
        pool.wait_file(w, &started, T);
        thread::sleep(Duration::from_millis(50 + u64::from(*d)));
        assert!(m.signal(Signal::SIGKILL), "mount process already gone");
        let f = pool.wait(w, T);
        assert!(
            !f.status.success(),
            "the churn survived its mount:\n{}",
            f.describe()
        );
        m.umount();
        let rec = st.run(&["recover"]);
        assert!(rec.success(), "round {round}: recover:\n{}", rec.describe());
        deleted += rec
            .stdout_str()
            .lines()
            .find_map(|l| {
                l.strip_prefix("deleted ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(0);
        st.assert_fsck_clean();
        m.mount();
    }
    // Each round held up to five orphans open at the kill.
    assert!(
        deleted >= 12,
        "recover deleted only {deleted} orphans in 12 rounds"
    );
    m.umount();
}
