//! Two hosts on one store over GlusterFS: the bed of `xproc-tests/multihost/bed.sh` (issue 14).
//!
//! "Host N" is every process that uses the store through the bed's mount hN (started with
//! `VERFS_NODE=hN`); its `verfs mount` serves a FUSE mountpoint in a scratch directory of the
//! test. One `#[test]`, since there is one bed per machine; its scenarios run in sequence on one
//! store:
//!
//! - a. CLI writers and a writer through each host's mount at once: every acknowledged operation
//!   is listed, and reads whole, from both hosts; fsck is clean from both. docs/DESIGN.md
//!   "Consistency model" (namespace changes visible to every process when the call returns).
//! - b. Close-to-open across hosts: written and closed through host 1's mount, read whole and
//!   current through host 2's mount and CLI (and back), also after a same-size overwrite.
//! - c. `mkdir` and rename races between the hosts (CLI and mounts): exactly one winner a round,
//!   the loser gets `EEXIST` / `ENOENT`.
//! - d. SIGKILL of every verfs process of host 1 (its mount daemon, a CLI writer's command, a
//!   `put` of a tree) while both hosts write: host 2 declares them dead and `verfs recover`
//!   cleans up after them ("Failure model", "Invariants": after recover no lease, open pack or
//!   temp file of a dead process), host 2 goes on writing, nothing acknowledged is lost, every
//!   file the killed `put` committed is whole, fsck is clean from both hosts, and a new mount on
//!   host 1 comes up.
//!
//! - e. Locks across hosts: `verfs lock counter EX -- read-modify-write` of a file through each
//!   host's mount, 100 times from each host at once: no update lost, and every grant's epoch is
//!   new and larger than the one before it in the file; flock and POSIX locks taken through one
//!   host's mount exclude the other host's.
//!
//! - f. Partitions, `XPROC_PARTITION_ROUNDS` times (10): host 1's link is cut at a random
//!   moment while its mount writes and it holds a `verfs lock` and a flock through its mount, and
//!   host 2 writes. Host 2 declares host 1's processes dead, recovers, takes over both locks and
//!   goes on, within the lease timeout plus the recover run. Host 1's processes fence
//!   themselves ([LEASE-11]): the mount detaches and exits, the lock holder exits 75, and neither
//!   commits anything after the heal. Then a new CLI and a new mount on host 1 work, nothing
//!   acknowledged is lost, and fsck is clean from both hosts.
//! - g. `verfs gc --worker` on host 2 (a pass every 300 ms) while host 1 writes, through its
//!   mount, files whose content it had just deleted (dedup against chunks the GC sees as
//!   garbage); a snapshot taken on host 2 meanwhile holds every file host 1 had closed before
//!   it; after more passes every file reads whole and fsck is clean.
//!
//! The timings of the bed and of every scenario are printed (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::bed::Bed;
use crate::*;

const T: Duration = Duration::from_secs(60);

/// One host's view of the store on the bed.
#[derive(Clone)]
struct Host {
    n: usize,
    store: PathBuf,
}

impl Host {
    fn node(&self) -> String {
        Bed::node(self.n)
    }

    /// `verfs -s STORE` with this host's node identity.
    fn command(&self) -> Command {
        let mut c = Command::new(verfs_bin());
        c.arg("-s")
            .arg(&self.store)
            .env_remove("VERFS_STORE")
            .env("VERFS_NODE", self.node());
        c
    }

    fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> RunOutput {
        let mut c = self.command();
        c.args(args);
        run_with_timeout(c, CMD_TIMEOUT)
    }

    fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> RunOutput {
        let out = self.run(args);
        assert!(
            out.success(),
            "host {}: command failed:\n{}",
            self.n,
            out.describe()
        );
        out
    }

    fn ls(&self, path: &str) -> BTreeSet<String> {
        self.ok(&["ls", path])
            .stdout_str()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn assert_fsck_clean(&self, when: &str) {
        let out = self.run(&["fsck"]);
        assert!(
            out.success() && out.stdout.is_empty(),
            "{when}: fsck from host {} is not clean:\n{}",
            self.n,
            out.describe()
        );
    }

    fn mount(&self, scratch: &Path) -> Mount {
        let node = self.node();
        Mount::of_store(&self.store, scratch, &[], &[("VERFS_NODE", node.as_str())])
    }

    /// `status --json` processes: (lease, pid, state, kind).
    fn processes(&self) -> Vec<(String, i64, String, String)> {
        let out = self.ok(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", out.describe()));
        v["processes"]
            .as_array()
            .unwrap_or_else(|| panic!("status --json without processes: {v}"))
            .iter()
            .map(|p| {
                (
                    p["lease"].as_str().unwrap_or("").to_owned(),
                    p["pid"].as_i64().unwrap_or(-1),
                    p["state"].as_str().unwrap_or("").to_owned(),
                    p["kind"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

/// What the processes acknowledged: the directories that must exist and the contents (sha256)
/// of the files, by store path.
#[derive(Default)]
struct Acked {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, String>,
    /// Files whose last write was not acknowledged (its writer was killed): either content.
    either: BTreeMap<String, (String, String)>,
}

impl Acked {
    fn merge(&mut self, o: Acked) {
        self.dirs.extend(o.dirs);
        self.files.extend(o.files);
        self.either.extend(o.either);
    }

    /// Every acknowledged entry is listed by `verfs ls` on `h`, and the files read whole
    /// (`verfs get` of each top directory).
    fn check_cli(&self, h: &Host, scratch: &Path, when: &str) {
        let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in self
            .dirs
            .iter()
            .chain(self.files.keys())
            .chain(self.either.keys())
        {
            let (dir, name) = p.rsplit_once('/').expect("absolute path");
            let dir = if dir.is_empty() { "/" } else { dir };
            parents
                .entry(dir.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
        for (dir, want) in &parents {
            let got = h.ls(dir);
            let missing: Vec<_> = want.difference(&got).collect();
            assert!(
                missing.is_empty(),
                "{when}: host {} lists {dir} without acknowledged {missing:?}",
                h.n
            );
        }
        let out = tempfile::Builder::new()
            .prefix(&format!("get-h{}-", h.n))
            .tempdir_in(scratch)
            .unwrap();
        let tops: BTreeSet<&str> = self
            .dirs
            .iter()
            .chain(self.files.keys())
            .chain(self.either.keys())
            .map(|p| p[1..].split('/').next().unwrap())
            .collect();
        for top in tops {
            h.ok(&[
                "get".as_ref(),
                format!("/{top}").as_ref(),
                out.path().join(top).as_os_str(),
            ]);
        }
        self.check_tree(out.path(), &format!("{when}: `verfs get` on host {}", h.n));
    }

    /// The same through a mount (or any local copy of the tree) at `root`.
    fn check_tree(&self, root: &Path, when: &str) {
        for d in &self.dirs {
            assert!(root.join(&d[1..]).is_dir(), "{when}: directory {d} missing");
        }
        for (p, sha) in &self.files {
            let got = sha256_file(&root.join(&p[1..]));
            assert_eq!(&got, sha, "{when}: {p} is not what was acknowledged");
        }
        for (p, (a, b)) in &self.either {
            let got = sha256_file(&root.join(&p[1..]));
            assert!(
                &got == a || &got == b,
                "{when}: {p} is neither its acknowledged nor its interrupted content"
            );
        }
    }
}

/// Sets every flag when dropped: inside a `thread::scope`, a panic of the scope's own closure
/// then stops the writer threads the scope is about to join.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.0 {
            f.store(true, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

/// A CLI writer's rounds under `/TAG`: `mkdir /TAG/dI`, `put` a new file into it, `put` over
/// `/TAG/over` and `cat` it back (read your own write). Runs `rounds` rounds, or until `stop`;
/// a command that dies of SIGKILL ([`KillSlot`]) ends it, unacknowledged.
struct CliWriter {
    acked: Acked,
    /// When each acknowledged command returned.
    acks_at: Vec<Instant>,
    commands: usize,
    killed: bool,
}

fn cli_writer(
    h: &Host,
    tag: &str,
    src: &Path,
    rounds: Option<usize>,
    stop: &AtomicBool,
    slot: &KillSlot,
) -> CliWriter {
    let mut w = CliWriter {
        acked: Acked::default(),
        acks_at: Vec::new(),
        commands: 0,
        killed: false,
    };
    let mut last_over: Option<String> = None;
    // One command; Ok(true) acknowledged, Ok(false) killed; Err: it failed.
    let run = |w: &mut CliWriter, args: &[&std::ffi::OsStr]| -> Result<bool, String> {
        let mut c = h.command();
        c.args(args);
        let out = run_killable(&mut c, slot, CMD_TIMEOUT);
        w.commands += 1;
        if out.killed() {
            w.killed = true;
            return Ok(false);
        }
        if !out.success() {
            return Err(out.describe());
        }
        w.acks_at.push(Instant::now());
        Ok(true)
    };
    let top = format!("/{tag}");
    match run(&mut w, &["mkdir".as_ref(), top.as_ref()]) {
        Ok(true) => {
            w.acked.dirs.insert(top.clone());
        }
        Ok(false) => return w,
        Err(e) => panic!("host {} writer {tag}: {e}", h.n),
    }
    let mut i = 0;
    while rounds.is_none_or(|r| i < r) && !stop.load(Ordering::SeqCst) {
        let dir = format!("{top}/d{i:03}");
        let file = src.join(format!("{tag}-{i}"));
        let sha = write_random_file(
            &file,
            seed() ^ ((h.n as u64) << 32) ^ i as u64,
            3000 + i * 997,
        );
        let over = src.join(format!("{tag}-over-{i}"));
        let over_sha = write_random_file(&over, seed() ^ 0xabcd ^ i as u64, 20_000 + i * 31);
        let fpath = format!("{dir}/f");
        let opath = format!("{top}/over");
        let steps: [(&[&std::ffi::OsStr], u8); 3] = [
            (&["mkdir".as_ref(), dir.as_ref()], 0),
            (&["put".as_ref(), file.as_os_str(), fpath.as_ref()], 1),
            (&["put".as_ref(), over.as_os_str(), opath.as_ref()], 2),
        ];
        for (args, what) in steps {
            match run(&mut w, args) {
                Ok(true) => match what {
                    0 => {
                        w.acked.dirs.insert(dir.clone());
                    }
                    1 => {
                        w.acked.files.insert(fpath.clone(), sha.clone());
                    }
                    _ => {
                        w.acked.files.insert(opath.clone(), over_sha.clone());
                        last_over = Some(over_sha.clone());
                    }
                },
                Ok(false) => {
                    if what == 2 {
                        // The killed put may or may not have committed.
                        let old = w.acked.files.remove(&opath);
                        if let Some(old) = old.or(last_over.clone()) {
                            w.acked
                                .either
                                .insert(opath.clone(), (old, over_sha.clone()));
                        }
                    }
                    return w;
                }
                Err(e) => panic!("host {} writer {tag}, round {i}: {e}", h.n),
            }
        }
        // Read your own write, through a new process of the same host.
        let mut c = h.command();
        c.args(["cat", &opath]);
        let out = run_killable(&mut c, slot, CMD_TIMEOUT);
        w.commands += 1;
        if out.killed() {
            w.killed = true;
            return w;
        }
        assert!(
            out.success(),
            "host {} writer {tag}: {}",
            h.n,
            out.describe()
        );
        assert_eq!(
            sha256(&out.stdout),
            over_sha,
            "host {}: cat {opath} after put",
            h.n
        );
        i += 1;
    }
    w
}

/// Writes files `DIR/fNNNN` through a mount (after the `go` file appears), each closed (every
/// tenth fsynced first) before it prints `ack NAME SHA256`; until `stop` exists or `count`
/// files. A write that fails (the mount died) ends it with a traceback.
const MOUNT_WRITER_PY: &str = r#"
import hashlib, os, random, sys, time
d, go, stop, count, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
os.makedirs(d, exist_ok=True)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
k = 0
while (count == 0 or k < count) and not os.path.exists(stop):
    data = random.Random(f"{seed}-{k}").randbytes(1000 + (k * 7919) % 150000)
    name = f"f{k:04}"
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:65536]):]
    if k % 10 == 0:
        os.fsync(fd)
    os.close(fd)
    print(f"ack {name} {hashlib.sha256(data).hexdigest()}", flush=True)
    k += 1
print("done", flush=True)
"#;

struct MountWriter {
    idx: usize,
    dir: String,
    stop: PathBuf,
}

fn spawn_mount_writer(
    pool: &mut Pool,
    m: &Mount,
    tag: &str,
    go: &Path,
    count: usize,
) -> MountWriter {
    let stop = pool.dir().join(format!("stop-{tag}"));
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(MOUNT_WRITER_PY)
        .arg(m.join(tag))
        .arg(go)
        .arg(&stop)
        .arg(count.to_string())
        .arg(format!("{tag}-{}", seed()));
    let idx = pool.spawn(&format!("mount-writer-{tag}"), c);
    let start = Instant::now();
    while !fs::read_to_string(&pool.proc(idx).stdout)
        .unwrap_or_default()
        .starts_with("ready")
    {
        assert!(
            !pool.has_exited(idx) && start.elapsed() < T,
            "mount writer {tag} did not start:\n{}",
            fs::read_to_string(&pool.proc(idx).stderr).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(10));
    }
    MountWriter {
        idx,
        dir: format!("/{tag}"),
        stop,
    }
}

impl MountWriter {
    /// Its acknowledged files so far.
    fn acked(&self, pool: &Pool) -> Acked {
        let out = fs::read_to_string(&pool.proc(self.idx).stdout).unwrap_or_default();
        let mut a = Acked::default();
        a.dirs.insert(self.dir.clone());
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("ack ") {
                let (name, sha) = rest.split_once(' ').expect("ack NAME SHA");
                a.files
                    .insert(format!("{}/{name}", self.dir), sha.to_owned());
            }
        }
        a
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn multihost_two_hosts_on_glusterfs() {
    require_fuse!();
    let t0 = Instant::now();
    let Some(mut bed) = Bed::up() else { return };
    let mut times: Vec<(&str, Duration)> = vec![("bed up", bed.up_time())];
    eprintln!("multihost: bed up in {:.1} s", bed.up_time().as_secs_f64());
    let scratch = tempfile::Builder::new()
        .prefix("verfs-multihost-")
        .tempdir()
        .unwrap();
    let scratch = scratch.path();
    let hosts = [1, 2].map(|n| Host {
        n,
        store: bed.host(n).join("store"),
    });
    {
        let (h1, h2) = (&hosts[0], &hosts[1]);
        h1.ok(&["init"]);
        let cfg = h1.store.join("config.toml");
        let text = fs::read_to_string(&cfg).unwrap();
        let text = set_toml_value(&text, "leases", "timeout_ms", "1500");
        let text = set_toml_value(&text, "leases", "heartbeat_ms", "200");
        fs::write(&cfg, text).unwrap();
        // Host 2 sees host 1's store at once.
        assert_eq!(h2.ls("/"), BTreeSet::new());

        let mut pool = Pool::new(scratch, agent());
        // Declared after the pool: the mounts go before the processes' files (Mount docs) ...
        let m1 = h1.mount(scratch);
        let m2 = h2.mount(scratch);
        let mut acked = Acked::default();

        let t = Instant::now();
        scenario_a(&hosts, [&m1, &m2], &mut pool, scratch, &mut acked);
        times.push(("a. writers on both hosts", t.elapsed()));

        let t = Instant::now();
        scenario_b(&hosts, [&m1, &m2], scratch, &mut acked);
        times.push(("b. close-to-open", t.elapsed()));

        let t = Instant::now();
        scenario_c(&hosts, [&m1, &m2], scratch);
        times.push(("c. mkdir/rename races", t.elapsed()));

        let t = Instant::now();
        scenario_e(&hosts, [&m1, &m2]);
        times.push(("e. locks across hosts", t.elapsed()));

        let t = Instant::now();
        scenario_d(&hosts, [&m1, &m2], &mut pool, scratch, &mut acked);
        times.push(("d. host 1 killed", t.elapsed()));

        drop(m2);
        drop(m1);

        // Partitions need the lease timeout chosen for the bed's 5 s ping timeout ([LEASE-11]:
        // above 5 s + 2 heartbeats), set while no process uses the store.
        let text = fs::read_to_string(&cfg).unwrap();
        let text = set_toml_value(
            &text,
            "leases",
            "timeout_ms",
            &PARTITION_TIMEOUT_MS.to_string(),
        );
        let text = set_toml_value(&text, "leases", "heartbeat_ms", "500");
        fs::write(&cfg, text).unwrap();
        let t = Instant::now();
        scenario_f(&bed, &hosts, &mut pool, scratch, &mut acked);
        times.push(("f. partitions", t.elapsed()));

        let text = fs::read_to_string(&cfg).unwrap();
        fs::write(&cfg, set_toml_value(&text, "gc", "interval_ms", "300")).unwrap();
        let t = Instant::now();
        scenario_g(&hosts, &mut pool, scratch, &mut acked);
        times.push(("g. gc and snapshot", t.elapsed()));
        drop(pool);
        // ... and the bed goes after the mounts whose stores live on it.
        acked.check_cli(h1, scratch, "the end");
        h1.assert_fsck_clean("the end");
        h2.assert_fsck_clean("the end");
    }
    let down = bed.down();
    times.push(("bed down", down));
    eprintln!("multihost timings:");
    for (what, d) in &times {
        eprintln!("  {what:<28} {:6.1} s", d.as_secs_f64());
    }
    eprintln!("  {:<28} {:6.1} s", "total", t0.elapsed().as_secs_f64());
}

/// a. CLI writers on both hosts and a writer through each host's mount, all at once.
fn scenario_a(
    hosts: &[Host; 2],
    m: [&Mount; 2],
    pool: &mut Pool,
    scratch: &Path,
    acked: &mut Acked,
) {
    const ROUNDS: usize = 12;
    const MOUNT_FILES: usize = 60;
    let src = scratch.join("src-a");
    fs::create_dir_all(&src).unwrap();
    let go = pool.dir().join("go-a");
    let mw: Vec<MountWriter> = (0..2)
        .map(|k| spawn_mount_writer(pool, m[k], &format!("mw{}", k + 1), &go, MOUNT_FILES))
        .collect();
    let barrier = Arc::new(Barrier::new(3));
    let stop = AtomicBool::new(false);
    let writers: Vec<CliWriter> = thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (barrier, src, stop) = (barrier.clone(), &src, &stop);
                s.spawn(move || {
                    barrier.wait();
                    cli_writer(
                        h,
                        &format!("cli{}", h.n),
                        src,
                        Some(ROUNDS),
                        stop,
                        &KillSlot::default(),
                    )
                })
            })
            .collect();
        barrier.wait();
        fs::write(&go, b"").unwrap();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut a = Acked::default();
    for w in writers {
        assert!(!w.killed);
        a.merge(w.acked);
    }
    for w in &mw {
        let f = pool.wait(w.idx, T);
        assert!(f.status.success(), "{}", f.describe());
        let got = w.acked(pool);
        assert_eq!(got.files.len(), MOUNT_FILES, "{}", f.describe());
        a.merge(got);
    }
    for h in hosts {
        a.check_cli(h, scratch, "a");
    }
    for (k, mk) in m.iter().enumerate() {
        a.check_tree(mk.path(), &format!("a: through host {}'s mount", k + 1));
    }
    for h in hosts {
        h.assert_fsck_clean("a");
    }
    eprintln!(
        "multihost a: {} directories and {} files acknowledged by 4 writers on 2 hosts",
        a.dirs.len(),
        a.files.len()
    );
    acked.merge(a);
}

/// b. Close-to-open across hosts, both ways, with same-size overwrites.
fn scenario_b(hosts: &[Host; 2], m: [&Mount; 2], scratch: &Path, acked: &mut Acked) {
    let local = scratch.join("c2o");
    fs::create_dir_all(m[0].join("c2o")).unwrap();
    for round in 0..4u64 {
        let (from, to) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let name = format!("c2o/f{}", round / 2);
        let size = 3 << 20;
        for version in 0..2u64 {
            let want = write_random_file(&local, seed() ^ (round << 8) ^ version, size);
            // fs::copy closes before returning.
            fs::copy(&local, m[from].join(&name)).unwrap();
            assert_eq!(
                sha256_file(&m[to].join(&name)),
                want,
                "b: {name} (version {version}) written and closed through host {}'s mount, read through host {}'s",
                from + 1,
                to + 1
            );
            for h in hosts {
                assert_eq!(
                    sha256(&h.ok(&["cat", &format!("/{name}")]).stdout),
                    want,
                    "b: verfs cat /{name} on host {} (version {version})",
                    h.n
                );
            }
            acked.files.insert(format!("/{name}"), want);
        }
    }
    acked.dirs.insert("/c2o".into());
}

/// A racer: waits for the pool's go file, then runs `program args...` (same pid).
fn spawn_racer(pool: &mut Pool, name: &str, h: &Host, program: &Path, args: &[String]) -> usize {
    let mut c = Command::new(agent());
    c.arg("exec-after")
        .arg("--go")
        .arg(pool.go_file())
        .arg("--")
        .arg(program)
        .args(args)
        .env("VERFS_NODE", h.node());
    pool.spawn(name, c)
}

/// `os.mkdir` or `os.rename` through a mount; prints `ok` or the errno's name.
const FS_OP_PY: &str = r#"
import errno, os, sys
try:
    if sys.argv[1] == "mkdir":
        os.mkdir(sys.argv[2])
    else:
        os.rename(sys.argv[2], sys.argv[3])
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"#;

/// c. mkdir and rename races between the hosts, through the CLI and through the mounts.
fn scenario_c(hosts: &[Host; 2], m: [&Mount; 2], scratch: &Path) {
    const ROUNDS: usize = 8;
    let py = PathBuf::from("python3");
    hosts[0].ok(&["mkdir", "/race"]);
    let local = scratch.join("race-src");
    let mut results = BTreeMap::new();
    for round in 0..2 * ROUNDS {
        let via_mount = round % 2 == 1;
        // mkdir: both hosts, one name.
        let name = format!("/race/m{round:02}");
        let mut pool = Pool::new(scratch, agent());
        let idx: Vec<usize> = (0..2)
            .map(|k| {
                let h = &hosts[k];
                if via_mount {
                    let p = m[k].join(&name[1..]).to_string_lossy().into_owned();
                    spawn_racer(
                        &mut pool,
                        &format!("mkdir-h{}", h.n),
                        h,
                        &py,
                        &["-c".into(), FS_OP_PY.into(), "mkdir".into(), p],
                    )
                } else {
                    let args = ["-s", h.store.to_str().unwrap(), "mkdir", &name].map(String::from);
                    spawn_racer(
                        &mut pool,
                        &format!("mkdir-h{}", h.n),
                        h,
                        &verfs_bin(),
                        &args,
                    )
                }
            })
            .collect();
        let won = race(
            &mut pool,
            &idx,
            via_mount,
            ("File exists", "EEXIST"),
            &format!("c: mkdir {name} round {round} (mount: {via_mount})"),
        );
        *results.entry(("mkdir", won)).or_insert(0) += 1;
        for h in hosts {
            let n = h.ls("/race").iter().filter(|e| **e == name[6..]).count();
            assert_eq!(n, 1, "c: {name} listed {n} times on host {}", h.n);
        }

        // rename: one source, each host moves it to a name of its own.
        let dir = format!("/race/r{round:02}");
        let sha = write_random_file(&local, seed() ^ round as u64, 50_000);
        hosts[round % 2].ok(&["mkdir", &dir]);
        hosts[round % 2].ok(&[
            "put".as_ref(),
            local.as_os_str(),
            format!("{dir}/src").as_ref(),
        ]);
        let mut pool = Pool::new(scratch, agent());
        let idx: Vec<usize> = (0..2)
            .map(|k| {
                let h = &hosts[k];
                let dst = format!("{dir}/dst-h{}", h.n);
                if via_mount {
                    let p = |s: &str| m[k].join(&s[1..]).to_string_lossy().into_owned();
                    spawn_racer(
                        &mut pool,
                        &format!("mv-h{}", h.n),
                        h,
                        &py,
                        &[
                            "-c".into(),
                            FS_OP_PY.into(),
                            "rename".into(),
                            p(&format!("{dir}/src")),
                            p(&dst),
                        ],
                    )
                } else {
                    let args = [
                        "-s",
                        h.store.to_str().unwrap(),
                        "mv",
                        &format!("{dir}/src"),
                        &dst,
                    ]
                    .map(String::from);
                    spawn_racer(&mut pool, &format!("mv-h{}", h.n), h, &verfs_bin(), &args)
                }
            })
            .collect();
        let won = race(
            &mut pool,
            &idx,
            via_mount,
            ("No such file or directory", "ENOENT"),
            &format!("c: rename in {dir} round {round} (mount: {via_mount})"),
        );
        *results.entry(("rename", won)).or_insert(0) += 1;
        let want: BTreeSet<String> = [format!("dst-h{}", won + 1)].into();
        for h in hosts {
            assert_eq!(h.ls(&dir), want, "c: entries of {dir} on host {}", h.n);
        }
        assert_eq!(
            sha256(
                &hosts[1 - won]
                    .ok(&["cat", &format!("{dir}/dst-h{}", won + 1)])
                    .stdout
            ),
            sha
        );
    }
    eprintln!("multihost c: {} rounds each of mkdir and rename, one winner each; wins by (op, host index): {results:?}", 2 * ROUNDS);
}

/// Start the racers `idx` at once and wait for them: exactly one wins (the others fail with
/// `loser`: the CLI's message, the mount's errno); its index.
fn race(pool: &mut Pool, idx: &[usize], via_mount: bool, loser: (&str, &str), what: &str) -> usize {
    pool.go(idx);
    let outs = pool.wait_all(T);
    let won = winners(&outs, via_mount, loser.0, loser.1);
    assert_eq!(
        won.len(),
        1,
        "{what}: winners {won:?}\n{}",
        describe_all(&outs)
    );
    won[0]
}

fn winners(outs: &[Finished], via_mount: bool, cli_loser: &str, errno: &str) -> Vec<usize> {
    let mut won = Vec::new();
    for (i, f) in outs.iter().enumerate() {
        if via_mount {
            assert!(f.status.success(), "{}", f.describe());
            match String::from_utf8_lossy(&f.stdout).trim() {
                "ok" => won.push(i),
                e => assert_eq!(e, errno, "loser's errno:\n{}", f.describe()),
            }
        } else if f.status.success() {
            won.push(i);
        } else {
            assert_eq!(f.status.code(), Some(1), "{}", f.describe());
            assert!(
                f.stderr.contains(cli_loser),
                "loser without {cli_loser:?}:\n{}",
                f.describe()
            );
        }
    }
    won
}

fn describe_all(outs: &[Finished]) -> String {
    outs.iter()
        .map(Finished::describe)
        .collect::<Vec<_>>()
        .join("\n")
}

/// d. Every verfs process of host 1 SIGKILLed while both hosts write; host 2 recovers and goes
/// on; nothing acknowledged is lost.
fn scenario_d(
    hosts: &[Host; 2],
    m: [&Mount; 2],
    pool: &mut Pool,
    scratch: &Path,
    acked: &mut Acked,
) {
    let [m1, m2] = m;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // A tree for a `put` that is killed midway (its open pack, its batches).
    let big = scratch.join("big-src");
    fs::create_dir_all(&big).unwrap();
    // Large enough that the put is still running when host 2 first lists it (about 0.3 s
    // after it starts on a quiet machine; 300 files of 64 KiB were sometimes all done by then).
    const BIG_FILES: u64 = 1500;
    let mut big_sha = BTreeMap::new();
    for i in 0..BIG_FILES {
        let sha = write_random_file(&big.join(format!("b{i:04}")), seed() ^ 0xb16 ^ i, 64 << 10);
        big_sha.insert(format!("b{i:04}"), sha);
    }
    let src = scratch.join("src-d");
    fs::create_dir_all(&src).unwrap();
    let go = pool.dir().join("go-d");
    let mw1 = spawn_mount_writer(pool, m1, "kmw1", &go, 0);
    let mw2 = spawn_mount_writer(pool, m2, "kmw2", &go, 0);
    let (stop1, stop2) = (AtomicBool::new(false), AtomicBool::new(false));
    let (slot1, slot2) = (KillSlot::default(), KillSlot::default());
    let t = Instant::now();
    let (w1, w2, recovered_at, stats) = thread::scope(|s| {
        // A panic below must not leave the scope waiting for endless writers.
        let _stop = StopOnDrop(&[&stop1, &stop2]);
        let t1 = s.spawn(|| cli_writer(h1, "k1", &src, None, &stop1, &slot1));
        let t2 = s.spawn(|| cli_writer(h2, "k2", &src, None, &stop2, &slot2));
        fs::write(&go, b"").unwrap();
        thread::sleep(Duration::from_millis(1500));
        // The put on host 1, visible to host 2 as a live process before it is killed.
        let mut c = h1.command();
        c.arg("put").arg(&big).arg("/big");
        let put = pool.spawn("put-h1", c);
        let put_pid = pool.proc(put).pid as i64;
        let start = Instant::now();
        let mut before;
        loop {
            before = h2.processes();
            if before.iter().any(|p| p.1 == put_pid && p.2 == "live") {
                break;
            }
            assert!(
                !pool.has_exited(put),
                "the put finished before host 2 saw it:\n{}",
                pool.wait(put, T).describe()
            );
            assert!(
                start.elapsed() < T,
                "host 2 never saw host 1's put: {before:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert!(!pool.has_exited(put), "the put finished before the kill");
        // SIGKILL every verfs process of host 1: the mount daemon, the put, the CLI writer's
        // command in flight (wait until one is).
        let mut killed = vec![m1.pid() as i64, put_pid];
        assert!(
            m1.signal(Signal::SIGKILL),
            "host 1's mount process already gone"
        );
        assert!(pool.sigkill(put));
        let start = Instant::now();
        let cli_pid = loop {
            if let Some(pid) = slot1.kill_reporting(Signal::SIGKILL) {
                break pid;
            }
            assert!(start.elapsed() < T, "host 1's CLI writer runs no command");
            thread::sleep(Duration::from_millis(1));
        };
        killed.push(cli_pid as i64);
        let killed_at = Instant::now();
        // Lazily detach the dead mount (its writer then fails, ENOTCONN).
        ext_ok("umount", &["-l".as_ref(), m1.path().as_os_str()]);
        let w1 = t1.join().unwrap();
        assert!(w1.killed, "host 1's CLI writer was not killed");
        let f = pool.wait(mw1.idx, T);
        assert!(
            !f.status.success(),
            "host 1's mount writer outlived its mount:\n{}",
            f.describe()
        );
        let fput = pool.wait(put, T);
        assert_eq!(
            fput.status.signal(),
            Some(libc::SIGKILL),
            "{}",
            fput.describe()
        );

        // Host 2 declares them dead: by heartbeat age (1.5 s here), or at once by pid while the
        // two hosts share a kernel.
        let leases: BTreeMap<String, i64> = before
            .iter()
            .filter(|p| killed.contains(&p.1) && p.2 == "live")
            .map(|p| (p.0.clone(), p.1))
            .collect();
        assert!(
            leases.len() >= 2,
            "host 1's mount and put hold no live lease: {before:?}"
        );
        let dead_after;
        let start = Instant::now();
        loop {
            let now = h2.processes();
            let not_dead: Vec<_> = now
                .iter()
                .filter(|p| leases.contains_key(&p.0) && p.2 != "dead")
                .collect();
            if not_dead.is_empty() {
                dead_after = killed_at.elapsed();
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "host 2 still sees host 1's killed processes live: {not_dead:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        let rec = h2.ok(&["recover"]);
        let recovered_at = Instant::now();
        let after = h2.processes();
        let lingering: Vec<_> = after.iter().filter(|p| killed.contains(&p.1)).collect();
        assert!(
            lingering.is_empty(),
            "after recover on host 2, host 1's killed processes still hold leases:\n{}\n{lingering:?}",
            rec.describe()
        );
        for (lease, pid) in &leases {
            assert!(
                !after.iter().any(|p| &p.0 == lease),
                "after recover on host 2, the lease {lease} of host 1's killed pid {pid} is still there:\n{}\n{after:?}",
                rec.describe()
            );
        }
        let named = leases
            .keys()
            .filter(|l| {
                rec.stdout_str()
                    .contains(&format!("cleaned up after dead process {l}"))
            })
            .count();
        // Host 2 goes on: more acknowledged commands and mount writes after the recovery.
        let mw2_before = mw2.acked(pool).files.len();
        let start = Instant::now();
        while mw2.acked(pool).files.len() < mw2_before + 5 {
            assert!(
                !pool.has_exited(mw2.idx) && start.elapsed() < T,
                "host 2's mount writer stopped after the recovery"
            );
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(1500));
        stop2.store(true, Ordering::SeqCst);
        fs::write(&mw2.stop, b"").unwrap();
        let w2 = t2.join().unwrap();
        let stats = format!(
            "killed pids {killed:?} (leases {leases:?}); dead to host 2 after {:.2} s; recover named {named} of {} leases:\n{}",
            dead_after.as_secs_f64(),
            leases.len(),
            rec.stdout_str().trim_end()
        );
        (w1, w2, recovered_at, stats)
    });
    let f = pool.wait(mw2.idx, T);
    assert!(f.status.success(), "{}", f.describe());
    assert!(!w2.killed);
    let after = w2.acks_at.iter().filter(|&&a| a > recovered_at).count();
    assert!(
        after >= 3,
        "host 2's CLI writer acknowledged only {after} commands after the recovery"
    );

    let mut a = Acked::default();
    a.merge(w1.acked);
    a.merge(w2.acked);
    a.merge(mw1.acked(pool));
    a.merge(mw2.acked(pool));
    // The killed put: whatever it committed is whole.
    let ls_big = h2.run(&["ls", "/big"]);
    let put_files: Vec<String> = if ls_big.success() {
        ls_big.stdout_str().lines().map(str::to_owned).collect()
    } else {
        // Killed before its first batch committed /big.
        assert!(
            ls_big.stderr.contains("No such file or directory"),
            "{}",
            ls_big.describe()
        );
        Vec::new()
    };
    for name in &put_files {
        a.either.insert(
            format!("/big/{name}"),
            (big_sha[name].clone(), big_sha[name].clone()),
        );
    }
    a.check_cli(h2, scratch, "d, host 2");
    a.check_tree(m2.path(), "d, host 2's mount");
    a.check_cli(h1, scratch, "d, a new CLI on host 1");
    h2.assert_fsck_clean("d");
    h1.assert_fsck_clean("d");
    // A new mount on host 1 comes up and sees it all.
    let m1b = h1.mount(scratch);
    a.check_tree(m1b.path(), "d, a new mount on host 1");
    drop(m1b);
    eprintln!(
        "multihost d: host 1 acknowledged {} CLI commands before the kill, host 2 {} ({after} after the recovery); the put had committed {} of {BIG_FILES} files; {stats}; {:.1} s",
        w1.commands,
        w2.commands,
        put_files.len(),
        t.elapsed().as_secs_f64()
    );
    acked.merge(a);
}

/// e. Locks across hosts: the DLM lock of `verfs lock` serializes read-modify-write from both
/// hosts; flock and POSIX locks through the mounts exclude each other across hosts.
fn scenario_e(hosts: &[Host; 2], m: [&Mount; 2]) {
    const EACH: usize = 100;
    fs::write(m[0].join("counter"), b"0 0\n").unwrap();
    // One increment: "COUNT LAST_EPOCH" -> "COUNT+1 EPOCH"; refuses an epoch that is not new.
    let rmw = |mnt: &Path| {
        format!(
            "read n e < {f}; [ \"$VERFS_LOCK_EPOCH\" -gt \"$e\" ] || {{ echo \"epoch $VERFS_LOCK_EPOCH after $e\" >&2; exit 9; }}; \
             printf '%s %s\\n' $((n + 1)) \"$VERFS_LOCK_EPOCH\" > {f}.tmp && mv {f}.tmp {f}",
            f = shq(mnt.join("counter"))
        )
    };
    let t = Instant::now();
    let lat: Vec<Vec<Duration>> = thread::scope(|s| {
        let hs: Vec<_> = hosts
            .iter()
            .zip(m)
            .map(|(h, mk)| {
                let script = rmw(mk.path());
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let t = Instant::now();
                            let out = h.run(&["lock", "counter", "EX", "--", "sh", "-c", &script]);
                            assert!(
                                out.success(),
                                "host {} increment {i} under `verfs lock counter EX`:\n{}",
                                h.n,
                                out.describe()
                            );
                            t.elapsed()
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got = fs::read_to_string(m[1].join("counter")).unwrap();
    let n: usize = got.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        n,
        2 * EACH,
        "updates lost under `verfs lock` across hosts: {got}"
    );
    let mut all: Vec<Duration> = lat.concat();
    all.sort();
    eprintln!(
        "multihost e: {} increments under verfs lock from 2 hosts in {:.1} s (per command p50 {:.0} ms, p99 {:.0} ms)",
        2 * EACH,
        t.elapsed().as_secs_f64(),
        all[all.len() / 2].as_secs_f64() * 1e3,
        all[all.len() * 99 / 100].as_secs_f64() * 1e3
    );

    // flock and POSIX locks through the mounts: held through host 1's, refused through host 2's.
    for kind in ["flock", "posix"] {
        let file = format!("{kind}-lock");
        let ready = m[0].path().parent().unwrap().join(format!("ready-{kind}"));
        let _ = fs::remove_file(&ready);
        let mut holder = Command::new("python3");
        holder
            .args(["-c", LOCK_HOLD_PY, kind])
            .arg(m[0].join(&file))
            .arg(&ready)
            .arg("3");
        let mut holder = holder.spawn().unwrap();
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < T,
                "{kind} lock through host 1's mount not taken"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let tried = ext(
            "python3",
            &[
                "-c".as_ref(),
                LOCK_TRY_PY.as_ref(),
                kind.as_ref(),
                m[1].join(&file).as_os_str(),
            ],
        );
        assert_eq!(
            tried.code(),
            Some(11),
            "a {kind} lock held through host 1's mount did not exclude host 2's:\n{}",
            tried.describe()
        );
        assert!(holder.wait().unwrap().success());
        let tried = ext(
            "python3",
            &[
                "-c".as_ref(),
                LOCK_TRY_PY.as_ref(),
                kind.as_ref(),
                m[1].join(&file).as_os_str(),
            ],
        );
        assert!(
            tried.success(),
            "host 2 cannot take the {kind} lock after host 1 released it:\n{}",
            tried.describe()
        );
    }
}

/// The lease timeout of scenario f: above the bed's 5 s ping timeout + 2 heartbeats of 500 ms.
const PARTITION_TIMEOUT_MS: u64 = 7000;

/// Wait until `pid` is gone or a zombie.
fn wait_gone(pid: i32, within: Duration, what: &str) {
    let start = Instant::now();
    while !is_zombie_or_gone(pid) {
        assert!(
            start.elapsed() < within,
            "{what} (pid {pid}) still runs after {within:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Run `args` on `h` until it succeeds (a client reconnecting after a heal answers ENOTCONN for
/// a few seconds); how long that took.
fn ok_after_heal(h: &Host, args: &[&str]) -> (RunOutput, Duration) {
    let start = Instant::now();
    loop {
        let out = h.run(args);
        if out.success() {
            return (out, start.elapsed());
        }
        assert!(
            start.elapsed() < T,
            "host {} after the heal: `{}` still fails:\n{}",
            h.n,
            args.join(" "),
            out.describe()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// f. Host 1 partitioned, again and again; see the module docs.
fn scenario_f(bed: &Bed, hosts: &[Host; 2], pool: &mut Pool, scratch: &Path, acked: &mut Acked) {
    let rounds: usize = std::env::var("XPROC_PARTITION_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let mut rng = seed();
    eprintln!("multihost f: {rounds} rounds, XPROC_SEED={rng}");
    let mut next = move |lo: u64, hi: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        Duration::from_millis(lo + rng % (hi - lo))
    };
    let m2 = h2.mount(scratch);
    let src = scratch.join("src-f");
    fs::create_dir_all(&src).unwrap();
    let mut recovery = Vec::new();
    for round in 0..rounds {
        let m1 = h1.mount(scratch);
        let go = pool.dir().join(format!("go-f{round}"));
        let mw1 = spawn_mount_writer(pool, &m1, &format!("p{round}w1"), &go, 0);
        let mw2 = spawn_mount_writer(pool, &m2, &format!("p{round}w2"), &go, 0);
        // Host 1 holds a user lock and a flock through its mount across the cut.
        let res = format!("part{round}");
        let mut c = h1.command();
        c.args(["lock", &res, "EX", "--", "sleep", "1000"]);
        let locker = pool.spawn(&format!("lock-h1-{round}"), c);
        let flocked = m1.join(format!("flock-{round}"));
        let ready = pool.dir().join(format!("flocked-{round}"));
        let mut c = Command::new("python3");
        c.args(["-c", LOCK_HOLD_PY, "flock"])
            .arg(&flocked)
            .arg(&ready)
            .arg("100000");
        let flocker = pool.spawn(&format!("flock-h1-{round}"), c);
        let start = Instant::now();
        while !ready.exists() || !h2.ok(&["locks"]).stdout_str().contains(&res) {
            assert!(
                start.elapsed() < T,
                "round {round}: host 1's locks were not taken"
            );
            thread::sleep(Duration::from_millis(50));
        }
        let stop2 = AtomicBool::new(false);
        let (w2, cut_at, recovered_after) = thread::scope(|s| {
            // A panic below must not leave the scope waiting for endless writers.
            let _stop = StopOnDrop(&[&stop2]);
            let t2 = s.spawn(|| {
                cli_writer(
                    h2,
                    &format!("p{round}c2"),
                    &src,
                    None,
                    &stop2,
                    &KillSlot::default(),
                )
            });
            fs::write(&go, b"").unwrap();
            thread::sleep(next(300, 2500));
            let before = h2.processes();
            let host1: BTreeMap<String, i64> = before
                .iter()
                .filter(|p| p.1 == m1.pid() as i64 || p.1 == pool.proc(locker).pid as i64)
                .map(|p| (p.0.clone(), p.1))
                .collect();
            assert_eq!(
                host1.len(),
                2,
                "round {round}: host 1's mount and locker leases: {before:?}"
            );
            bed.cut(1);
            let cut_at = Instant::now();
            // Host 2 declares them dead (heartbeat age) and recovers.
            loop {
                let now = h2.processes();
                if now
                    .iter()
                    .all(|p| !host1.contains_key(&p.0) || p.2 == "dead")
                {
                    break;
                }
                assert!(
                    cut_at.elapsed() < Duration::from_millis(PARTITION_TIMEOUT_MS) + T,
                    "round {round}: host 2 never declared host 1's processes dead: {now:?}"
                );
                thread::sleep(Duration::from_millis(100));
            }
            let rec = h2.ok(&["recover"]);
            let recovered_after = cut_at.elapsed();
            let after = h2.processes();
            assert!(
                !after.iter().any(|p| host1.contains_key(&p.0)),
                "round {round}: after recover, host 1's leases remain:\n{}\n{after:?}",
                rec.describe()
            );
            // Host 2 takes over both locks.
            let out = h2.run(&["lock", &res, "EX", "--timeout", "30", "--", "true"]);
            assert!(
                out.success(),
                "round {round}: host 2 cannot take host 1's lock:\n{}",
                out.describe()
            );
            let start = Instant::now();
            loop {
                let tried = ext(
                    "python3",
                    &[
                        "-c".as_ref(),
                        LOCK_TRY_PY.as_ref(),
                        "flock".as_ref(),
                        m2.join(format!("flock-{round}")).as_os_str(),
                    ],
                );
                if tried.success() {
                    break;
                }
                assert!(
                    tried.code() == Some(11) && start.elapsed() < T,
                    "round {round}: host 2 cannot take host 1's flock:\n{}",
                    tried.describe()
                );
                thread::sleep(Duration::from_millis(200));
            }
            // Host 2 goes on while host 1 is still cut off, then the link comes back.
            let mw2_now = mw2.acked(pool).files.len();
            let start = Instant::now();
            while mw2.acked(pool).files.len() < mw2_now + 3 {
                assert!(
                    !pool.has_exited(mw2.idx) && start.elapsed() < T,
                    "round {round}: host 2's mount writer stopped"
                );
                thread::sleep(Duration::from_millis(20));
            }
            thread::sleep(next(0, 3000));
            bed.heal(1);
            thread::sleep(Duration::from_millis(500));
            stop2.store(true, Ordering::SeqCst);
            fs::write(&mw2.stop, b"").unwrap();
            (t2.join().unwrap(), cut_at, recovered_after)
        });
        recovery.push(recovered_after);
        // Host 1's processes fenced themselves: the mount is gone without a dead mountpoint,
        // the locker exited 75 (its command killed), the writer through the mount failed.
        wait_gone(m1.pid(), T, "host 1's partitioned mount");
        let start = Instant::now();
        while m1.is_mounted() {
            assert!(
                start.elapsed() < T,
                "round {round}: host 1's fenced mount left {} mounted",
                m1.path().display()
            );
            thread::sleep(Duration::from_millis(50));
        }
        let log = m1.stderr();
        assert!(
            log.contains("fenced"),
            "round {round}: host 1's mount did not report its fencing:\n{log}"
        );
        let fl = pool.wait(locker, T);
        assert_eq!(
            fl.status.code(),
            Some(75),
            "round {round}: host 1's locker:\n{}",
            fl.describe()
        );
        let fw = pool.wait(mw1.idx, T);
        assert!(
            !fw.status.success(),
            "round {round}: host 1's mount writer outlived its mount:\n{}",
            fw.describe()
        );
        let _ = pool.sigkill(flocker);
        let _ = pool.wait(flocker, T);
        let f2 = pool.wait(mw2.idx, T);
        assert!(f2.status.success(), "round {round}: {}", f2.describe());
        // A new process on host 1 works once its client reconnected.
        let (_, reconnect) = ok_after_heal(h1, &["ls", "/"]);
        let mut a = Acked::default();
        a.merge(mw1.acked(pool));
        a.merge(mw2.acked(pool));
        a.merge(w2.acked);
        a.check_tree(m2.path(), &format!("f round {round}, host 2's mount"));
        h2.assert_fsck_clean(&format!("f round {round}"));
        eprintln!(
            "multihost f round {round}: host 1 acknowledged {} writes, host 2 {}; recovered {:.1} s after the cut; host 1 usable {:.1} s after the heal ({:.1} s after the cut)",
            mw1.acked(pool).files.len(),
            mw2.acked(pool).files.len() + w2.commands,
            recovered_after.as_secs_f64(),
            reconnect.as_secs_f64(),
            cut_at.elapsed().as_secs_f64()
        );
        drop(m1);
        acked.merge(a);
    }
    drop(m2);
    // A last new mount on host 1 sees everything.
    let m1 = h1.mount(scratch);
    acked.check_tree(m1.path(), "f, a new mount on host 1");
    drop(m1);
    h1.assert_fsck_clean("f");
    recovery.sort();
    let limit = Duration::from_millis(PARTITION_TIMEOUT_MS) + Duration::from_secs(15);
    eprintln!(
        "multihost f: recovery after a cut, median {:.1} s, max {:.1} s (lease timeout {:.1} s)",
        recovery[recovery.len() / 2].as_secs_f64(),
        recovery[recovery.len() - 1].as_secs_f64(),
        PARTITION_TIMEOUT_MS as f64 / 1e3
    );
    assert!(
        recovery[recovery.len() - 1] < limit,
        "a recovery took longer than the lease timeout + 15 s: {recovery:?}"
    );
}

/// Take an exclusive lock of kind argv[1] (`flock` or `posix`) on argv[2], touch argv[3], hold
/// it for argv[4] seconds.
const LOCK_HOLD_PY: &str = r#"
import fcntl, os, sys, time
kind, path, ready = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX)
open(ready, "w").close()
time.sleep(float(sys.argv[4]))
"#;

/// Try an exclusive lock of kind argv[1] on argv[2] without waiting: exit 11 when it is held
/// elsewhere.
const LOCK_TRY_PY: &str = r#"
import fcntl, os, sys
kind, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
try:
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(11)
"#;

/// g's writer through a mount: file `x` of random content, closed and deleted, then `y` with the
/// same content (dedup against chunks no file references any more); prints `ack yK SHA256`.
const DEDUP_WRITER_PY: &str = r#"
import hashlib, os, random, sys, time
d, go, stop, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(d, exist_ok=True)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
rnd = random.Random(seed)
k = 0
while not os.path.exists(stop):
    data = rnd.randbytes(20000 + rnd.randrange(200000))
    for name in (f"x{k:04}", f"y{k:04}"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        if name[0] == "x":
            os.unlink(os.path.join(d, name))
            time.sleep(rnd.random() * 0.3)
    print(f"ack y{k:04} {hashlib.sha256(data).hexdigest()}", flush=True)
    k += 1
print("done", flush=True)
"#;

/// g. GC worker on host 2 while host 1 dedups against garbage; a snapshot on host 2.
fn scenario_g(hosts: &[Host; 2], pool: &mut Pool, scratch: &Path, acked: &mut Acked) {
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let m1 = h1.mount(scratch);
    let mut c = h2.command();
    c.args(["gc", "--worker"]);
    let gc = pool.spawn("gc-worker-h2", c);
    let go = pool.dir().join("go-g");
    let stop = pool.dir().join("stop-g");
    let mut c = Command::new("python3");
    c.args(["-c", DEDUP_WRITER_PY])
        .arg(m1.join("g"))
        .arg(&go)
        .arg(&stop)
        .arg(seed().to_string());
    let w = pool.spawn("dedup-writer-h1", c);
    let acks = |pool: &Pool| -> BTreeMap<String, String> {
        fs::read_to_string(&pool.proc(w).stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("ack "))
            .filter_map(|r| r.split_once(' '))
            .map(|(n, sha)| (format!("/g/{n}"), sha.to_owned()))
            .collect()
    };
    let start = Instant::now();
    while !fs::read_to_string(&pool.proc(w).stdout)
        .unwrap_or_default()
        .starts_with("ready")
    {
        assert!(
            !pool.has_exited(w) && start.elapsed() < T,
            "the dedup writer did not start"
        );
        thread::sleep(Duration::from_millis(10));
    }
    fs::write(&go, b"").unwrap();
    let wait_acks = |pool: &Pool, n: usize| {
        let start = Instant::now();
        while acks(pool).len() < n {
            assert!(
                !pool.has_exited(w) && start.elapsed() < T * 2,
                "the dedup writer stalled at {} files",
                acks(pool).len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_acks(pool, 10);
    // Everything host 1 closed before the snapshot began is in it.
    let before = acks(pool);
    h2.ok(&["snapshot", "create", "g-snap"]);
    wait_acks(pool, before.len() + 15);
    fs::write(&stop, b"").unwrap();
    let fw = pool.wait(w, T);
    assert!(fw.status.success(), "{}", fw.describe());
    // More passes after the last write, then stop the worker.
    let passes_from = Instant::now();
    while passes_from.elapsed() < Duration::from_secs(3) {
        assert!(
            !pool.has_exited(gc),
            "the gc worker died:\n{}",
            pool.wait(gc, T).describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(pool.signal(gc, Signal::SIGTERM));
    let fg = pool.wait(gc, T);
    assert!(
        fg.status.success(),
        "gc worker on host 2:\n{}",
        fg.describe()
    );
    let written = acks(pool);
    let mut a = Acked::default();
    a.dirs.insert("/g".into());
    a.files = written.clone();
    a.check_tree(m1.path(), "g, host 1's mount");
    a.check_cli(h2, scratch, "g, host 2");
    let out = tempfile::Builder::new()
        .prefix("snap-")
        .tempdir_in(scratch)
        .unwrap();
    h2.ok(&[
        "get".as_ref(),
        "/.snapshots/g-snap/g".as_ref(),
        out.path().join("g").as_os_str(),
    ]);
    let snap = Acked {
        files: before.clone(),
        ..Acked::default()
    };
    snap.check_tree(out.path(), "g, the snapshot taken on host 2");
    drop(m1);
    h1.assert_fsck_clean("g");
    h2.assert_fsck_clean("g");
    eprintln!(
        "multihost g: {} files written on host 1 by dedup against deleted ones during gc passes on host 2; the snapshot holds the {} closed before it",
        written.len(),
        before.len()
    );
    acked.merge(a);
}
