//! Fault injection at every write site (issue 11, section 2; `data-layout.md` 6.8).
//!
//! Every `io_site!` of the engine and coordination crates (`all_sites()`) gets, in turn, EIO,
//! ENOSPC and a crash (abort) injected through `FAILPOINTS` in a real `verfs` process running the
//! workload that reaches it (put, a write through a mount, a commit, `checkpoint`, `snapshot`,
//! `gc` with a rewrite, `recover`, ...). Each time:
//!
//! - EIO/ENOSPC: the command exits non-zero with the error and the path of the failing file
//!   (under the store), or exits 0 where the site's failure is harmless by design ([`TOLERATED`]);
//! - abort: the process dies by SIGABRT there (proof the site was reached);
//! - then `verfs recover` succeeds, `verfs fsck` is clean, every file acknowledged before the
//!   faulty run reads back with its content hash, what the faulty run acknowledged (exit 0)
//!   is there in full, and the workload succeeds again without faults (the store is usable).
//!
//! Which workload reaches which site is not written down by hand: one fault-free run of every
//! workload with `VERFS_FAILPOINT_TRACE` lists the sites it reaches, and each site is tested in
//! the first workload that reaches it. A site no workload reaches fails the test, as does a site
//! in the code that is missing from the lists (the per-crate unit tests).
//! `XPROC_FAILPOINTS_ALL=1` tests every site in every workload that reaches it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

/// Sites whose failure is harmless by design: the command goes on and succeeds. Each with why.
const TOLERATED: &[(&str, &str)] = &[
    (
        "fsutil.atomic-cleanup-unlink",
        "removing the temp of a failed atomic write; recover removes a leftover temp",
    ),
    (
        "fsutil.excl-temp-unlink",
        "removing the temp after the hard link; recover removes a leftover temp",
    ),
    (
        "txlog.append-cut",
        "cutting a failed append; the next commit or recover cuts the torn tail",
    ),
    (
        "journal.append-cut",
        "cutting a failed journal append; the journal then refuses writes",
    ),
    (
        "pack.create-cleanup-unlink",
        "removing a pack whose creation failed; recover completes its header",
    ),
    (
        "store.init-remove-partial-log",
        "removing a log directory a dead init left; txlog::create reports what blocks it",
    ),
    (
        "gc.orphan-index-unlink",
        "a stale file; the next gc pass retries",
    ),
    (
        "gc.page-file-unlink",
        "a metadata page file no root reaches; the next gc pass retries",
    ),
    (
        "gc.page-tmp-unlink",
        "a dead writer's temporary page file; the next gc pass retries",
    ),
    (
        "gc.orphan-discard-unlink",
        "a stale file; the next gc pass retries",
    ),
    (
        "recover.log-truncate-unlink",
        "a segment a checkpoint already covers; the next truncation removes it",
    ),
    (
        "recover.temp-unlink",
        "a dead process's temp file; the next recover retries",
    ),
    (
        "lock.table-create",
        "in put only the advisory counters need the lock table (gc, which needs it, fails)",
    ),
    (
        "lease.heartbeat-write",
        "a missed heartbeat; the next one rewrites it",
    ),
    ("stats.publish-write", "advisory counters"),
    ("stats.publish-rename", "advisory counters"),
    ("stats.fold-write", "advisory counters (reported on stderr)"),
    (
        "stats.fold-rename",
        "advisory counters (reported on stderr)",
    ),
];

const ACTIONS: &[&str] = &["eio", "enospc", "abort"];

/// Sites no workload here reaches yet, each with why. The test fails if one of them becomes
/// reachable (move it out of here) or another site is unreached.
const UNREACHED: &[(&str, &str)] = &[
    (
        "pack.sync",
        "PackWriter::sync runs only from seal() of a pack with unsynced records; the store \
         always group-syncs (store.pack-group-sync) before sealing",
    ),
    (
        "gc.discard-cut-truncate",
        "a .discard longer than its valid prefix is repaired (gc.discard-repair-*) before \
         the append that would cut it",
    ),
    (
        "gc.orphan-discard-unlink",
        "needs a .discard with a valid header of a pack that is gone (no fixture yet)",
    ),
];

/// Failures found by this test and not fixed yet: (workload, text in the problem, the bug).
/// They are printed loudly instead of failing the test; remove an entry once it is fixed.
// Was: a `verfs recover` killed while sealing a dead writer's pack left the claimed folder
// (`<id>.claimed-<dead recover>`) and the pack unsealed after the next recover, depending on the
// order in which that recover listed the folders. Fixed: recover settles abandoned claims last.
const KNOWN_BUGS: &[(&str, &str, &str)] = &[];

/// Workloads that cannot simply run twice (the second run finds what the first made).
const NOT_REPEATABLE: &[&str] = &["snapshot-create", "snapshot-delete"];

/// Sites reached on a timer (the heartbeat thread), so a short run may miss one of them: for
/// these, one of the three actions reaching the site is enough.
const TIMED: &[&str] = &[
    "lease.heartbeat-write",
    "stats.publish-write",
    "stats.publish-rename",
];

/// What a workload is run against: a fresh store, or a copy of the workload's template store.
struct Job<'a> {
    w: &'a Workload,
    site: &'static str,
    action: &'static str,
}

/// One store directory under test (a copy of a template).
struct Copy {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl Copy {
    fn run(&self, args: &[&str], env: &[(&str, String)]) -> RunOutput {
        let mut c = Command::new(verfs_bin());
        c.arg("-s")
            .arg(&self.root)
            .args(args)
            .env_remove("VERFS_STORE");
        c.env_remove("FAILPOINTS")
            .env_remove("VERFS_FAILPOINT_TRACE");
        for (k, v) in env {
            c.env(k, v);
        }
        run_with_timeout(c, CMD_TIMEOUT)
    }
    fn ok(&self, args: &[&str]) -> RunOutput {
        let out = self.run(args, &[]);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out
    }
    fn src(&self) -> PathBuf {
        self.base.join("src")
    }
}

type Step = fn(&Copy);

/// A command run under faults, with the state it needs.
struct Workload {
    name: &'static str,
    /// Extra FAILPOINTS for every run: a first fault that leads to the error path under test.
    base: &'static str,
    /// Prepares the template (once per workload): acknowledged data, config.
    setup: Step,
    /// Prepares each copy right before the faulty run (e.g. leaves a dead process behind).
    prep: Step,
    /// The faulty run.
    run: fn(&Copy, &[(&str, String)]) -> RunOutput,
    /// What a successful run must have left (checked after the run and after the rerun).
    done: Step,
    /// Sites tested here even if an earlier workload reaches them too.
    focus: &'static [&'static str],
}

fn nothing(_: &Copy) {}

/// Acknowledged data every template holds: checked by content after every faulty run.
fn base_files(c: &Copy) {
    let src = c.src();
    fs::create_dir_all(src.join("tree/sub")).unwrap();
    write_random_file(&src.join("tree/big"), 11, 700 << 10);
    write_random_file(&src.join("tree/sub/small"), 12, 3000);
    fs::write(src.join("tree/empty"), b"").unwrap();
    c.ok(&["put", src.join("tree").to_str().unwrap(), "/acked"]);
    c.ok(&["mkdir", "/acked/dir"]);
    // Inputs of the workloads.
    fs::create_dir_all(src.join("new/d")).unwrap();
    write_random_file(&src.join("new/one"), 21, 400 << 10);
    for i in 0..40 {
        fs::write(
            src.join(format!("new/d/f{i:02}")),
            format!("file {i}\n").repeat(40),
        )
        .unwrap();
    }
}

fn setup_plain(c: &Copy) {
    fast_config(c);
    base_files(c);
}

/// Short leases (a dead process is found at once anyway: its pid is gone) and a heartbeat
/// often enough that short commands reach the heartbeat and counter sites.
fn fast_config(c: &Copy) {
    let path = c.root.join("config.toml");
    let mut t = fs::read_to_string(&path).unwrap();
    for (s, k, v) in [
        ("leases", "timeout_ms", "1500"),
        ("leases", "heartbeat_ms", "40"),
        ("two_phase", "timeout_ms", "5000"),
    ] {
        t = set_toml_value(&t, s, k, v);
    }
    fs::write(&path, t).unwrap();
}

fn small_segments(c: &Copy) {
    let path = c.root.join("config.toml");
    let t = set_toml_value(
        &fs::read_to_string(&path).unwrap(),
        "log",
        "segment_size",
        "4096",
    );
    fs::write(&path, t).unwrap();
}

fn put_new(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["put", c.src().join("new").to_str().unwrap(), "/new"], env)
}

fn put_new_done(c: &Copy) {
    assert_same_tree(c, &c.src().join("new"), "/new");
}

/// Every file under `local` is at `stored` with the same bytes.
fn assert_same_tree(c: &Copy, local: &Path, stored: &str) {
    for e in walk(local) {
        let rel = e.strip_prefix(local).unwrap().to_str().unwrap().to_owned();
        let want = sha256(&fs::read(&e).unwrap());
        let got = c.run(&["cat", &format!("{stored}/{rel}")], &[]);
        assert!(
            got.success() && sha256(&got.stdout) == want,
            "{stored}/{rel} does not read back:\n{}",
            got.describe()
        );
    }
}

/// Files under `local` that a failed run left at `stored` are complete (a failed put may leave
/// some files, never a torn one).
fn assert_no_torn_file(c: &Copy, local: &Path, stored: &str) {
    for e in walk(local) {
        let rel = e.strip_prefix(local).unwrap().to_str().unwrap().to_owned();
        let got = c.run(&["cat", &format!("{stored}/{rel}")], &[]);
        if got.success() {
            assert_eq!(
                sha256(&got.stdout),
                sha256(&fs::read(&e).unwrap()),
                "{stored}/{rel} exists after a failed put but its content is not what was put"
            );
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if p.is_dir() {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        for e in v {
            out.extend(walk(&e));
        }
    } else {
        out.push(p.to_path_buf());
    }
    out
}

fn mkdir_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["mkdir", "/made"], env)
}

fn mkdir_done(c: &Copy) {
    assert!(c.ok(&["ls", "/"]).stdout_str().lines().any(|l| l == "made"));
}

/// A torn last log record (the first bytes of a record and no more, as a writer killed inside
/// its `pwrite` leaves): cut by the next commit.
fn prep_torn_log(c: &Copy) {
    let segs = list_with_ext(&c.root.join("log"), "seg");
    let seg = segs.last().unwrap();
    let before = fs::metadata(seg).unwrap().len();
    c.ok(&["mkdir", "/torn-away"]);
    let after = fs::metadata(seg).unwrap().len();
    assert!(
        after > before + 8,
        "mkdir appended no record to {}",
        seg.display()
    );
    let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.set_len(after - 3).unwrap();
}

fn list_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

fn setup_segments(c: &Copy) {
    fast_config(c);
    small_segments(c);
    base_files(c);
    for i in 0..6 {
        c.ok(&[
            "put",
            c.src().join("new/d").to_str().unwrap(),
            &format!("/fill{i}"),
        ]);
    }
}

fn checkpoint_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["checkpoint"], env)
}

fn checkpoint_done(c: &Copy) {
    assert!(
        !list_with_ext(&c.root.join("checkpoints"), "ckpt").is_empty() || {
            // Name of checkpoint files is the format's business: any file there will do.
            fs::read_dir(c.root.join("checkpoints")).unwrap().count() > 0
        }
    );
}

fn setup_snapshot(c: &Copy) {
    setup_plain(c);
    c.ok(&["snapshot", "create", "s0"]);
}

fn snapshot_create_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["snapshot", "create", "s1"], env)
}

fn snapshot_create_done(c: &Copy) {
    let big = sha256(&fs::read(c.src().join("tree/big")).unwrap());
    assert_eq!(
        sha256(&c.ok(&["cat", "/.snapshots/s1/acked/big"]).stdout),
        big
    );
}

fn snapshot_delete_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["snapshot", "delete", "s0"], env)
}

fn snapshot_delete_done(c: &Copy) {
    let list = c.ok(&["snapshot", "list"]).stdout_str();
    assert!(!list.contains("s0"), "s0 is still listed:\n{list}");
}

/// Garbage in a pack: `/gone` shares a pack with acknowledged data and is removed, so `gc`
/// rewrites that pack.
fn setup_gc(c: &Copy) {
    fast_config(c);
    let src = c.src();
    fs::create_dir_all(src.join("mix")).unwrap();
    write_random_file(&src.join("mix/keep"), 31, 300 << 10);
    write_random_file(&src.join("mix/gone"), 32, 600 << 10);
    fs::write(src.join("mix/later"), "later\n".repeat(5000)).unwrap();
    c.ok(&["put", src.join("mix").to_str().unwrap(), "/mix"]);
    c.ok(&["rm", "/mix/gone"]);
    base_files(c);
    c.ok(&["snapshot", "create", "s0"]);
}

fn gc_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["gc"], env)
}

fn gc_done(c: &Copy) {
    let keep = sha256(&fs::read(c.src().join("mix/keep")).unwrap());
    assert_eq!(sha256(&c.ok(&["cat", "/mix/keep"]).stdout), keep);
}

/// A `.discard` file (garbage found, no rewrite: threshold 1.0), torn by a dead GC.
fn setup_gc_discard(c: &Copy) {
    setup_gc(c);
    let path = c.root.join("config.toml");
    let t = set_toml_value(
        &fs::read_to_string(&path).unwrap(),
        "gc",
        "rewrite_threshold",
        "1.0",
    );
    fs::write(&path, t).unwrap();
    c.ok(&["gc"]);
    assert!(
        !list_with_ext(&c.root.join("packs"), "discard").is_empty(),
        "gc left no .discard file"
    );
}

fn prep_torn_discard(c: &Copy) {
    for d in list_with_ext(&c.root.join("packs"), "discard") {
        let mut b = fs::read(&d).unwrap();
        b.extend_from_slice(b"VDCR\x01\x00");
        fs::write(&d, b).unwrap();
    }
    // More garbage, so this pass appends to the repaired file.
    c.ok(&["rm", "/mix/later"]);
}

fn prep_torn_discard_header(c: &Copy) {
    for d in list_with_ext(&c.root.join("packs"), "discard") {
        let f = fs::OpenOptions::new().write(true).open(&d).unwrap();
        f.set_len(10).unwrap();
    }
}

/// Stale files gc removes: an index without its pack, a discard without its pack, a metadata
/// page file no root reaches and a dead writer's temporary page file.
fn prep_stale(c: &Copy) {
    let packs = c.root.join("packs");
    let idx = list_with_ext(&packs, "idx");
    fs::copy(&idx[0], packs.join("00000000000000f1.idx")).unwrap();
    // Shorter than a header: a torn file, valid and empty.
    fs::write(packs.join("00000000000000f2.discard"), b"VERFS").unwrap();
    let meta = c.root.join("meta");
    let any = list_with_ext(&meta, "mpg");
    fs::copy(&any[0], meta.join("00000000000000f3.mpg")).unwrap();
    fs::write(meta.join("00000000000000f4.mpg.tmp"), b"VERFSMP3").unwrap();
}

/// A process killed with its pack unsynced (records written, no `.idx`), then a torn tail.
fn prep_dead_writer(c: &Copy) {
    let out = put_new(
        c,
        &[("FAILPOINTS", "store.pack-group-sync=return(abort)".into())],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}",
        out.describe()
    );
    let packs = c.root.join("packs");
    let unsealed: Vec<PathBuf> = list_with_ext(&packs, "pack")
        .into_iter()
        .filter(|p| !p.with_extension("idx").exists())
        .collect();
    assert!(!unsealed.is_empty(), "the killed put left no unsealed pack");
    for p in unsealed {
        let len = fs::metadata(&p).unwrap().len();
        if len > 100 {
            fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len - 5)
                .unwrap();
        }
    }
}

/// A process killed right after creating its pack, whose header a power cut left torn.
fn prep_torn_header(c: &Copy) {
    let out = put_new(
        c,
        &[("FAILPOINTS", "pack.header-fsync=return(abort)".into())],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}",
        out.describe()
    );
    for p in list_with_ext(&c.root.join("packs"), "pack") {
        if !p.with_extension("idx").exists() {
            fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(10)
                .unwrap();
        }
    }
}

/// A checkpoint coordinator killed after the truncation was decided, before it deleted a
/// segment; and a dead process's temp file.
fn prep_dead_truncation(c: &Copy) {
    let out = c.run(
        &["checkpoint"],
        &[(
            "FAILPOINTS",
            "store.log-truncate-unlink=return(abort)".into(),
        )],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}",
        out.describe()
    );
    // A temp file of a process that is gone (named as `fsutil::write_atomic` names them).
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    let _ = gone.wait();
    let tmp = format!(".x.tmp-{pid}-00000000000000aa");
    fs::write(c.root.join("checkpoints").join(tmp), b"partial").unwrap();
}

fn recover_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    c.run(&["recover"], env)
}

/// A fresh directory instead of a template: `verfs init` itself under faults.
fn init_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    let mut cmd = Command::new(verfs_bin());
    cmd.arg("init").arg(c.base.join("fresh"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, CMD_TIMEOUT)
}

fn prep_dead_init(c: &Copy) {
    let out = init_run(
        c,
        &[("FAILPOINTS", "txlog.init-create-lock=return(abort)".into())],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{}",
        out.describe()
    );
}

/// A file copied into a mount, then `sync`: the mount daemon runs under the faults.
fn mount_run(c: &Copy, env: &[(&str, String)]) -> RunOutput {
    let mp = c.base.join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let log = c.base.join("mount.log");
    let mut cmd = Command::new(verfs_bin());
    cmd.arg("-s").arg(&c.root).arg("mount").arg(&mp);
    cmd.env_remove("VERFS_STORE").env_remove("FAILPOINTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut early = None;
    while !is_mounted(&mp) {
        if let Some(st) = child.try_wait().unwrap() {
            early = Some(st);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mount did not come up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let copied = if early.is_none() {
        let src = c.src().join("new/one");
        let out = sh(&format!(
            "cp {} {}/viamount && sync {}/viamount",
            shq(&src),
            shq(&mp),
            shq(&mp)
        ));
        Some(out)
    } else {
        None
    };
    let status = match early {
        Some(st) => st,
        None => {
            // A dead daemon leaves a dead endpoint; `verfs umount` clears both cases.
            let mut u = Command::new(verfs_bin());
            u.arg("umount").arg(&mp);
            let _ = run_with_timeout(u, CMD_TIMEOUT);
            let mut waited = Instant::now();
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if waited.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    waited = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    if is_mounted(&mp) {
        let _ = ext("fusermount3", &["-u", "-z", mp.to_str().unwrap()]);
    }
    let copied_ok = copied.as_ref().is_some_and(|o| o.success());
    fs::write(
        c.base.join("mount.acked"),
        if copied_ok { "1" } else { "0" },
    )
    .unwrap();
    // The daemon's status decides abort; a failed copy is the user-visible error.
    let stderr = format!(
        "{}\n--- cp ---\n{}",
        fs::read_to_string(&log).unwrap_or_default(),
        copied.map(|o| o.describe()).unwrap_or_default()
    );
    let status = if status.signal().is_some() || copied_ok {
        status
    } else {
        std::process::ExitStatus::from_raw(1 << 8)
    };
    RunOutput {
        cmdline: format!("cp into a mount of {}", c.root.display()),
        status,
        stdout: Vec::new(),
        stderr,
        elapsed: start.elapsed(),
    }
}

fn mount_done(c: &Copy) {
    if fs::read_to_string(c.base.join("mount.acked")).unwrap_or_default() == "1" {
        let want = sha256(&fs::read(c.src().join("new/one")).unwrap());
        assert_eq!(
            sha256(&c.ok(&["cat", "/viamount"]).stdout),
            want,
            "a copy cp acknowledged is lost"
        );
    }
}

fn workloads() -> Vec<Workload> {
    let w = |name, base, setup: Step, prep: Step, run, done: Step| Workload {
        name,
        base,
        setup,
        prep,
        run,
        done,
        focus: &[],
    };
    vec![
        w("init", "", nothing, nothing, init_run, nothing),
        // [STORE-2]: an init that died before its manifest committed is rolled back or forward
        // by the next init, under every fault.
        w(
            "init-after-crash",
            "",
            nothing,
            prep_dead_init,
            init_run,
            nothing,
        ),
        w("put", "", setup_plain, nothing, put_new, put_new_done),
        w(
            "put-after-write-error",
            "pack.append-write=return(eio)",
            setup_plain,
            nothing,
            put_new,
            nothing,
        ),
        w(
            "put-after-sync-error",
            "store.pack-group-sync=return(eio)",
            setup_plain,
            nothing,
            put_new,
            nothing,
        ),
        w(
            "put-after-create-error",
            "pack.header-fsync=return(eio)",
            setup_plain,
            nothing,
            put_new,
            nothing,
        ),
        w(
            "put-after-idx-error",
            "fsutil.atomic-write=1*off->return(eio)",
            setup_plain,
            nothing,
            put_new,
            nothing,
        ),
        // [STORE-3]: a put whose `open-pack` journal entry fails creates no pack (fsck would
        // report a pack no journal names).
        w(
            "put-after-journal-error",
            "journal.append-write=return(eio)",
            setup_plain,
            nothing,
            put_new,
            nothing,
        ),
        w("commit", "", setup_plain, nothing, mkdir_run, mkdir_done),
        // [LOG-7]: a failed log append is cut back, so the next commit and fsck find no partial
        // record.
        w(
            "commit-after-error",
            "txlog.append-write=return(eio)",
            setup_plain,
            nothing,
            mkdir_run,
            nothing,
        ),
        w(
            "commit-torn-tail",
            "",
            setup_plain,
            prep_torn_log,
            mkdir_run,
            mkdir_done,
        ),
        w(
            "commit-roll-segment",
            "",
            setup_segments,
            nothing,
            put_new,
            put_new_done,
        ),
        w(
            "checkpoint",
            "",
            setup_segments,
            nothing,
            checkpoint_run,
            checkpoint_done,
        ),
        w(
            "snapshot-create",
            "",
            setup_snapshot,
            nothing,
            snapshot_create_run,
            snapshot_create_done,
        ),
        w(
            "snapshot-create-after-error",
            "txlog.append-write=1*off->return(eio)",
            setup_snapshot,
            nothing,
            snapshot_create_run,
            nothing,
        ),
        w(
            "snapshot-delete",
            "",
            setup_snapshot,
            nothing,
            snapshot_delete_run,
            snapshot_delete_done,
        ),
        w("gc-rewrite", "", setup_gc, nothing, gc_run, gc_done),
        w(
            "gc-torn-discard",
            "",
            setup_gc_discard,
            prep_torn_discard,
            gc_run,
            gc_done,
        ),
        w(
            "gc-torn-discard-header",
            "",
            setup_gc_discard,
            prep_torn_discard_header,
            gc_run,
            gc_done,
        ),
        w(
            "gc-stale-files",
            "",
            setup_gc_discard,
            prep_stale,
            gc_run,
            gc_done,
        ),
        w(
            "recover-dead-writer",
            "",
            setup_plain,
            prep_dead_writer,
            recover_run,
            nothing,
        ),
        w(
            "recover-torn-header",
            "",
            setup_plain,
            prep_torn_header,
            recover_run,
            nothing,
        ),
        w(
            "recover-dead-truncation",
            "",
            setup_segments,
            prep_dead_truncation,
            recover_run,
            nothing,
        ),
        Workload {
            focus: &[
                "pack.append-write",
                "store.pack-group-sync",
                "txlog.append-write",
                "txlog.sync",
                "journal.append-write",
                "lease.heartbeat-write",
                "stats.publish-write",
                "stats.publish-rename",
            ],
            ..w(
                "mount-write",
                "",
                setup_plain,
                nothing,
                mount_run,
                mount_done,
            )
        },
    ]
}

/// Templates, one per workload, built once; each job copies one.
struct Templates {
    dir: tempfile::TempDir,
    acked: BTreeMap<&'static str, Vec<(String, String)>>,
}

fn build_template(dir: &Path, w: &Workload) -> Vec<(String, String)> {
    let base = dir.join(w.name);
    fs::create_dir_all(&base).unwrap();
    let c = Copy {
        _dir: tempfile::tempdir().unwrap(),
        base: base.clone(),
        root: base.join("store"),
    };
    if !w.name.starts_with("init") {
        let mut cmd = Command::new(verfs_bin());
        cmd.arg("init").arg(&c.root);
        let out = run_with_timeout(cmd, CMD_TIMEOUT);
        assert!(out.success(), "{}", out.describe());
        (w.setup)(&c);
    }
    // Every regular file stored now is acknowledged: path and sha256.
    let mut acked = Vec::new();
    if c.root.exists() {
        for local in walk(&c.src().join("tree")) {
            let rel = local.strip_prefix(c.src().join("tree")).unwrap();
            acked.push((
                format!("/acked/{}", rel.display()),
                sha256(&fs::read(&local).unwrap()),
            ));
        }
    }
    acked
}

fn copy_of(t: &Templates, w: &Workload) -> Copy {
    let dir = tempfile::Builder::new()
        .prefix("verfs-fp-")
        .tempdir()
        .unwrap();
    let base = dir.path().to_path_buf();
    let out = ext(
        "cp",
        &[
            "-a".as_ref(),
            format!("{}/.", t.dir.path().join(w.name).display()).as_ref(),
            base.as_os_str(),
        ],
    );
    assert!(out.success(), "{}", out.describe());
    Copy {
        _dir: dir,
        root: base.join("store"),
        base,
    }
}

/// Sites reached by a fault-free run (plus the base fault) of `w`.
fn discover(t: &Templates, w: &Workload) -> BTreeSet<String> {
    let c = copy_of(t, w);
    (w.prep)(&c);
    let trace = c.base.join("trace");
    let mut env = vec![("VERFS_FAILPOINT_TRACE", trace.display().to_string())];
    if !w.base.is_empty() {
        env.push(("FAILPOINTS", w.base.to_owned()));
    }
    let out = (w.run)(&c, &env);
    if w.base.is_empty() {
        assert!(
            out.success(),
            "workload {} fails without faults:\n{}",
            w.name,
            out.describe()
        );
        (w.done)(&c);
    }
    fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("hit "))
        .map(str::to_owned)
        .collect()
}

/// Run one job; the problems found (empty = every property held) and a one-word outcome.
fn run_job(t: &Templates, job: &Job<'_>) -> (String, Vec<String>) {
    let w = job.w;
    let c = copy_of(t, w);
    (w.prep)(&c);
    let trace = c.base.join("trace");
    let mut fp = format!("{}=return({})", job.site, job.action);
    if !w.base.is_empty() {
        fp = format!("{};{fp}", w.base);
    }
    let env = vec![
        ("FAILPOINTS", fp.clone()),
        ("VERFS_FAILPOINT_TRACE", trace.display().to_string()),
    ];
    let out = (w.run)(&c, &env);
    let fired = fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("fired {} ", job.site)));
    let mut problems = Vec::new();
    let ctx = format!("[{} {} {}] FAILPOINTS={fp}", w.name, job.site, job.action);
    let tolerated = TOLERATED.iter().any(|(s, _)| *s == job.site);
    let outcome = if job.action == "abort" {
        if out.status.signal() != Some(libc::SIGABRT) && TIMED.contains(&job.site) {
            return ("not-reached".into(), problems);
        }
        if out.status.signal() != Some(libc::SIGABRT) {
            problems.push(format!(
                "{ctx}: expected a crash (SIGABRT):\n{}",
                out.describe()
            ));
        }
        "crash"
    } else if !fired && TIMED.contains(&job.site) {
        "not-reached"
    } else if !fired {
        problems.push(format!(
            "{ctx}: the fault was never injected (site not reached):\n{}",
            out.describe()
        ));
        "not-reached"
    } else if out.success() {
        if !tolerated && w.base.is_empty() {
            problems.push(format!(
                "{ctx}: the command succeeded although the I/O failed (add the site to TOLERATED \
                 only if that is harmless by design):\n{}",
                out.describe()
            ));
        }
        "tolerated"
    } else {
        let errno = if job.action == "eio" {
            "Input/output error"
        } else {
            "No space left on device"
        };
        let root = c.root.display().to_string();
        let fresh = c.base.display().to_string();
        // Commands that go on after a failure (gc, recover) list it on stdout as a problem.
        let said = format!("{}\n{}", out.stderr, out.stdout_str());
        if out.status.signal().is_some() || out.code() == Some(101) {
            problems.push(format!(
                "{ctx}: crashed or panicked instead of an error:\n{}",
                out.describe()
            ));
        } else if !(said.contains(errno) || w.base.contains("eio")) {
            problems.push(format!(
                "{ctx}: the error does not say {errno:?}:\n{}",
                out.describe()
            ));
        } else if !said.contains(&root) && !said.contains(&fresh) {
            problems.push(format!(
                "{ctx}: the error names no path in the store:\n{}",
                out.describe()
            ));
        }
        "error"
    };
    if !problems.is_empty() {
        return (outcome.into(), problems);
    }
    let check = |what: &str, r: std::thread::Result<()>| -> Option<String> {
        r.err().map(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("{ctx}: {what}: {msg}")
        })
    };
    let is_init = w.name.starts_with("init");
    let target = if is_init {
        Copy {
            _dir: tempfile::tempdir().unwrap(),
            base: c.base.clone(),
            root: c.base.join("fresh"),
        }
    } else {
        Copy {
            _dir: tempfile::tempdir().unwrap(),
            base: c.base.clone(),
            root: c.root.clone(),
        }
    };
    if is_init {
        // A failed or crashed init leaves nothing usable: init again must work.
        if !out.success() {
            let again = init_run(&c, &[]);
            // Failed after its commit point (FORMAT is in place): it is a store.
            let is_store = again.stderr.contains("already a verfs store");
            if !again.success() && !is_store {
                problems.push(format!(
                    "{ctx}: init after the failed init fails:\n{}",
                    again.describe()
                ));
                return (outcome.into(), problems);
            }
        }
    }
    let steps: Vec<(&str, Box<dyn Fn() + '_>)> = vec![
        (
            "recover",
            Box::new(|| {
                target.ok(&["recover"]);
            }),
        ),
        (
            "the workload again (a tolerated failure is retried by the next run)",
            Box::new(|| {
                // Stale files a failed gc left are removed by the next gc, not by recover.
                let retry = (out.success() && fired) || w.name == "gc-stale-files";
                if retry && !is_init && !NOT_REPEATABLE.contains(&w.name) {
                    let again = (w.run)(&target, &[]);
                    assert!(again.success(), "{}", again.describe());
                }
            }),
        ),
        (
            "fsck",
            Box::new(|| {
                let f = target.run(&["fsck"], &[]);
                assert!(
                    f.success() && f.stdout.is_empty(),
                    "fsck is not clean:\n{}",
                    f.describe()
                );
            }),
        ),
        (
            "acknowledged data",
            Box::new(|| {
                for (p, h) in &t.acked[w.name] {
                    let got = target.run(&["cat", p], &[]);
                    assert!(
                        got.success() && sha256(&got.stdout) == *h,
                        "{p} lost:\n{}",
                        got.describe()
                    );
                }
                if out.success() {
                    (w.done)(&target);
                } else if w.name.starts_with("put") || w.name == "commit-roll-segment" {
                    assert_no_torn_file(&target, &target.src().join("new"), "/new");
                }
            }),
        ),
        (
            "workload again without faults",
            Box::new(|| {
                if !is_init && !NOT_REPEATABLE.contains(&w.name) {
                    let again = (w.run)(&target, &[]);
                    assert!(again.success(), "{}", again.describe());
                    (w.done)(&target);
                }
            }),
        ),
    ];
    for (what, f) in steps {
        if let Some(p) = check(
            what,
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)),
        ) {
            problems.push(p);
            break;
        }
    }
    (outcome.into(), problems)
}

#[test]
fn failpoints_every_site_eio_enospc_abort() {
    if !verfs_coordination::failpoint::ENABLED {
        // This test binary is built with the feature; the `verfs` binary is checked below.
        panic!("xproc-tests must be built with verfs-coordination/failpoints");
    }
    let fuse = fuse_missing();
    let _g = heavy();
    let t0 = Instant::now();
    let all_ws = workloads();
    let ws: Vec<&Workload> = all_ws
        .iter()
        .filter(|w| w.name != "mount-write" || fuse.is_none())
        .collect();
    if let Some(why) = &fuse {
        if std::env::var_os("CI").is_some() {
            panic!("FUSE is needed for the mount workload in CI: {why}");
        }
        eprintln!("\n*** SKIPPED: mount-write workload: {why} ***\n");
    }
    // The binary honours FAILPOINTS (else every result below would be vacuous).
    {
        let d = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(verfs_bin());
        cmd.arg("init").arg(d.path().join("s"));
        cmd.env("FAILPOINTS", "txlog.init-create-lock=return(eio)");
        let out = run_with_timeout(cmd, CMD_TIMEOUT);
        assert!(
            !out.success() && out.stderr.contains("Input/output error"),
            "target/debug/verfs ignores FAILPOINTS: build it with `{BUILD_HINT}`\n{}",
            out.describe()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("verfs-fp-templates-")
        .tempdir()
        .unwrap();
    let mut acked = BTreeMap::new();
    for w in &ws {
        acked.insert(w.name, build_template(dir.path(), w));
    }
    let t = Templates { dir, acked };
    let t_setup = t0.elapsed();

    // Which workload reaches which site.
    let reach: Vec<BTreeSet<String>> = par_map(&ws, 2, |w| discover(&t, w));
    let sites = verfs_engine::failpoint::all_sites();
    let all = std::env::var_os("XPROC_FAILPOINTS_ALL").is_some();
    let mut home: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    let mut unreached = Vec::new();
    for s in &sites {
        let reaching: Vec<usize> = (0..ws.len()).filter(|i| reach[*i].contains(*s)).collect();
        let mut chosen: Vec<usize> = if all {
            reaching.clone()
        } else {
            reaching.first().copied().into_iter().collect()
        };
        for i in &reaching {
            if ws[*i].focus.contains(s) && !chosen.contains(i) {
                chosen.push(*i);
            }
        }
        if chosen.is_empty() {
            unreached.push(*s);
        }
        home.insert(*s, chosen);
    }
    let mut jobs = Vec::new();
    for (s, wi) in &home {
        for i in wi {
            if ws[*i]
                .base
                .split(';')
                .any(|b| b.starts_with(&format!("{s}=")))
            {
                continue;
            }
            for a in ACTIONS {
                jobs.push(Job {
                    w: ws[*i],
                    site: s,
                    action: a,
                });
            }
        }
    }
    let t_discover = t0.elapsed();
    let results: Vec<(String, Vec<String>)> = par_map(&jobs, 2, |j| run_job(&t, j));

    // The table of covered sites.
    let mut table: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for (j, (outcome, p)) in jobs.iter().zip(&results) {
        let cell = if p.is_empty() {
            outcome.clone()
        } else {
            format!("{outcome}:FAIL")
        };
        table.entry((j.site, j.w.name)).or_default().push(cell);
        problems.extend(p.iter().cloned());
    }
    let mut report = format!(
        "failpoint sites covered ({} sites, {} runs; setup {:.0}s, discovery {:.0}s, total {:.0}s):\n{:<34} {:<28} {}\n",
        sites.len(),
        jobs.len(),
        t_setup.as_secs_f64(),
        (t_discover - t_setup).as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        "site",
        "workload",
        ACTIONS.join(" / ")
    );
    for ((s, w), cells) in &table {
        report.push_str(&format!("{s:<34} {w:<28} {}\n", cells.join(" / ")));
    }
    for s in &unreached {
        report.push_str(&format!("{s:<34} {:<28} -\n", "(no workload reaches it)"));
    }
    eprintln!("{report}");
    let known: Vec<&str> = UNREACHED.iter().map(|(s, _)| *s).collect();
    let new_unreached: Vec<&str> = unreached
        .iter()
        .copied()
        .filter(|s| !known.contains(s))
        .filter(|s| fuse.is_none() || !TIMED.contains(s))
        .collect();
    if !new_unreached.is_empty() {
        problems.push(format!(
            "sites no workload reaches (add a workload that does): {}",
            new_unreached.join(", ")
        ));
    }
    for s in &known {
        if !unreached.contains(s) {
            problems.push(format!("{s} is reached now: remove it from UNREACHED"));
        }
    }
    let mut known_bugs = Vec::new();
    problems.retain(|p| {
        let known = KNOWN_BUGS
            .iter()
            .find(|(ws, pat, _)| p.starts_with(&format!("[{ws} ")) && p.contains(pat));
        if let Some((_, _, why)) = known {
            known_bugs.push(format!("{why}\n  {}", p.lines().next().unwrap_or("")));
        }
        known.is_none()
    });
    if !known_bugs.is_empty() {
        eprintln!(
            "\n*** KNOWN BUGS seen (not failing the test):\n{} ***\n",
            known_bugs.join("\n")
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// `f` over `items` on `n` threads, results in order.
fn par_map<T: Sync, R: Send>(items: &[T], n: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = Mutex::new(0usize);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    let i = *g;
                    *g += 1;
                    i
                };
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}
