//! Process-pool harness: tests that spawn real `verfs` processes against one shared store.
//!
//! What every test crate shares (the `verfs` binary, [`TestStore`], running one command under a
//! timeout, test data, CI-aware skips) is in `verfs-test-support` (`xproc-tests/support`),
//! re-exported here whole. This crate adds what only the multi-process tests need:
//!
//! - [`Pool`]: many real OS processes started at once behind a file barrier (each waits until the
//!   `go` file exists), each with its own result file (JSON lines written by the process), stdout
//!   and stderr files; SIGKILL / SIGSTOP / SIGCONT by index. Every child is reaped; dropping the
//!   pool kills whatever still runs, so a failing test leaves no process behind.
//! - [`Mount`]: a FUSE mount by the real `verfs mount` that is always gone when the guard drops,
//!   and tree comparisons of mounted and local trees ([`assert_trees_equal`]).
//! - [`TornLogTail`]: plants what crash point L1 leaves (it encodes a log record, so it needs
//!   `verfs-coordination`, which the support crate must not depend on).
//! - [`crash`]: crash images built from a recording of one run.
//! - [`bed`]: the two-host GlusterFS bed (`multihost/bed.sh`) as a guard that always tears it
//!   down; [`Mount::of_store`] mounts a store on it with a host's environment.
//!
//! The helper process is `xproc-agent` (`src/bin/xproc-agent.rs`); integration tests locate it
//! with [`agent_bin!`]. The rules the tests prove are in `data-layout.md` (`[LOG-n]`, ...).
//!
//! ```no_run
//! use verfs_xproc_tests::TestStore;
//! let st = TestStore::new();
//! st.ok(&["mkdir", "/a"]);
//! assert_eq!(st.ok(&["ls", "/"]).stdout_str(), "a\n");
//! ```

pub mod bed;
pub mod crash;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use verfs_test_support::*;

/// Path of the `xproc-agent` helper binary; only valid inside this package's integration tests,
/// where cargo builds it and sets `CARGO_BIN_EXE_xproc-agent`.
#[macro_export]
macro_rules! agent_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_xproc-agent"))
    };
}

// ---------------------------------------------------------------------------------------------
// Planting a torn log tail
// ---------------------------------------------------------------------------------------------

/// What a [`TestStore`] can do with `verfs-coordination`'s log codec.
pub trait TornLogTail {
    /// Leave what crash point L1 leaves (data-layout.md 8: a writer killed during the `pwrite` of
    /// a log record): the complete header and part of the payload of the next record (the lsn
    /// after the head) at the end of the last segment. A SIGKILL cannot tear one `pwrite`, so
    /// tests that claim L1 plant it. Call only while no process writes the log. Returns the segment and its
    /// length before the torn bytes (where [LOG-5] must cut it).
    fn plant_torn_log_tail(&self) -> (PathBuf, u64);
}

impl TornLogTail for TestStore {
    fn plant_torn_log_tail(&self) -> (PathBuf, u64) {
        let status = self.ok(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&status.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", status.describe()));
        let head = v["lsn"]
            .as_u64()
            .unwrap_or_else(|| panic!("status --json without lsn: {v}"));
        let seg = self.root().join("log").join(
            self.log_segments()
                .pop()
                .expect("the store has a log segment"),
        );
        let len = fs::metadata(&seg).expect("stat segment").len();
        let payload = vec![0x5a; 300];
        // Record type 1 (a transaction), data-layout.md 5.3, "Record".
        let rec = verfs_coordination::txlog::encode_record(
            1,
            verfs_coordination::txlog::Lsn(head + 1),
            &payload,
        );
        let torn = &rec[..rec.len() - payload.len() / 2];
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open segment");
        f.write_all(torn).expect("append torn record");
        (seg, len)
    }
}

// ---------------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------------

/// One process of a [`Pool`].
pub struct Proc {
    pub name: String,
    pub pid: i32,
    pub cmdline: String,
    child: Child,
    status: Option<ExitStatus>,
    pub result: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A finished pool process.
#[derive(Debug, Clone)]
pub struct Finished {
    pub name: String,
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Its result file's JSON lines.
    pub results: Vec<serde_json::Value>,
}

impl Finished {
    pub fn describe(&self) -> String {
        format!(
            "[{}] `{}` -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- results ---\n{}",
            self.name,
            self.cmdline,
            self.status,
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
            self.stderr,
            self.results
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// Real OS processes started together; see the crate docs.
pub struct Pool {
    dir: PathBuf,
    agent: PathBuf,
    procs: Vec<Proc>,
}

impl Pool {
    /// A pool whose control files live in a new folder under `scratch`; `agent` is the
    /// `xproc-agent` binary ([`agent_bin!`]).
    pub fn new(scratch: &Path, agent: PathBuf) -> Pool {
        let dir = tempfile::Builder::new()
            .prefix("pool-")
            .tempdir_in(scratch)
            .expect("pool dir")
            .keep();
        Pool {
            dir,
            agent,
            procs: Vec::new(),
        }
    }

    /// The barrier file: processes started with [`Pool::spawn_at_go`] wait for it.
    pub fn go_file(&self) -> PathBuf {
        self.dir.join("go")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn proc(&self, i: usize) -> &Proc {
        &self.procs[i]
    }

    /// Result file of the next process to be spawned.
    pub fn next_result_file(&self) -> PathBuf {
        self.dir.join(format!("result-{}.jsonl", self.procs.len()))
    }

    /// Spawn `cmd` with stdout/stderr to files; returns its index. `cmd` may use
    /// [`Pool::next_result_file`] for its result file.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> usize {
        let i = self.procs.len();
        let result = self.next_result_file();
        let stdout = self.dir.join(format!("stdout-{i}"));
        let stderr = self.dir.join(format!("stderr-{i}"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .env("XPROC_RESULT", &result);
        die_with_parent(&mut cmd);
        let line = cmdline(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{line}`: {e}"));
        self.procs.push(Proc {
            name: name.to_owned(),
            pid: child.id() as i32,
            cmdline: line,
            child,
            status: None,
            result,
            stdout,
            stderr,
        });
        i
    }

    /// Spawn `xproc-agent args...` (the agent reads its result file from `XPROC_RESULT`).
    pub fn spawn_agent<S: AsRef<OsStr>>(&mut self, name: &str, args: &[S]) -> usize {
        let mut c = Command::new(&self.agent);
        c.args(args);
        self.spawn(name, c)
    }

    /// Spawn a process that waits at the barrier, then `exec`s `program args...` (same pid, so
    /// signals by index reach the program itself).
    pub fn spawn_at_go<S: AsRef<OsStr>>(
        &mut self,
        name: &str,
        program: &Path,
        args: &[S],
    ) -> usize {
        let mut c = Command::new(&self.agent);
        c.arg("exec-after")
            .arg("--go")
            .arg(self.go_file())
            .arg("--")
            .arg(program)
            .args(args);
        self.spawn(name, c)
    }

    /// Open the barrier once every process `waiting` has reported `at-barrier` (so they really
    /// start at the same moment).
    pub fn go(&self, waiting: &[usize]) {
        for &i in waiting {
            self.wait_event(i, "at-barrier", Duration::from_secs(30));
        }
        fs::write(self.go_file(), b"go").expect("create go file");
    }

    /// The JSON lines process `i` wrote so far (a torn last line is skipped).
    pub fn results(&self, i: usize) -> Vec<serde_json::Value> {
        read_jsonl(&self.procs[i].result)
    }

    /// Wait until process `i` wrote a result line with `"event": event`; returns it. Fails the
    /// test when the process exits first or `timeout` passes.
    pub fn wait_event(&self, i: usize, event: &str, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.results(i).into_iter().find(|v| v["event"] == event) {
                return v;
            }
            let p = &self.procs[i];
            let exited = p.status.is_some() || is_zombie_or_gone(p.pid);
            // The process may have written the event and exited between the read above and
            // this check: read once more before calling it missing.
            if exited {
                if let Some(v) = self.results(i).into_iter().find(|v| v["event"] == event) {
                    return v;
                }
            }
            if exited || start.elapsed() > timeout {
                panic!(
                    "[{}] `{}`: no {event:?} event after {:.1}s ({})\n--- stderr ---\n{}\n--- results ---\n{:?}",
                    p.name,
                    p.cmdline,
                    start.elapsed().as_secs_f64(),
                    if exited { "the process exited" } else { "timeout" },
                    fs::read_to_string(&p.stderr).unwrap_or_default(),
                    self.results(i)
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Send `sig` to process `i`; false if it was already reaped.
    pub fn signal(&self, i: usize, sig: Signal) -> bool {
        let p = &self.procs[i];
        // Not reaped yet: the pid is ours (running or a zombie), never a reused one.
        p.status.is_none() && kill(Pid::from_raw(p.pid), sig).is_ok()
    }
    pub fn sigkill(&self, i: usize) -> bool {
        self.signal(i, Signal::SIGKILL)
    }
    pub fn sigstop(&self, i: usize) -> bool {
        self.signal(i, Signal::SIGSTOP)
    }
    pub fn sigcont(&self, i: usize) -> bool {
        self.signal(i, Signal::SIGCONT)
    }

    /// Has process `i` exited (without reaping it)? A zombie counts as exited.
    pub fn has_exited(&self, i: usize) -> bool {
        let p = &self.procs[i];
        p.status.is_some() || is_zombie_or_gone(p.pid)
    }

    /// Wait until file `p` exists (the signal a process gives that it reached a point); fails the
    /// test, with the process's output, if process `i` exits first or `timeout` passes.
    pub fn wait_file(&mut self, i: usize, p: &Path, timeout: Duration) {
        let start = Instant::now();
        while !p.exists() {
            if self.has_exited(i) {
                panic!(
                    "exited before {} appeared:\n{}",
                    p.display(),
                    self.wait(i, timeout).describe()
                );
            }
            assert!(start.elapsed() < timeout, "{} did not appear", p.display());
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for process `i` to exit (reaping it); a process still running after `timeout` is
    /// killed and fails the test.
    pub fn wait(&mut self, i: usize, timeout: Duration) -> Finished {
        let start = Instant::now();
        loop {
            let p = &mut self.procs[i];
            if p.status.is_none() {
                p.status = p.child.try_wait().expect("try_wait");
            }
            if p.status.is_some() {
                return self.finished(i);
            }
            if start.elapsed() > timeout {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGCONT);
                let _ = p.child.kill();
                p.status = p.child.wait().ok();
                let f = self.finished(i);
                panic!(
                    "HANG: process ran longer than {timeout:?} and was killed:\n{}",
                    f.describe()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`Pool::wait`] for every process, in index order, with one overall `timeout`.
    pub fn wait_all(&mut self, timeout: Duration) -> Vec<Finished> {
        let deadline = Instant::now() + timeout;
        (0..self.procs.len())
            .map(|i| self.wait(i, deadline.saturating_duration_since(Instant::now())))
            .collect()
    }

    fn finished(&self, i: usize) -> Finished {
        let p = &self.procs[i];
        Finished {
            name: p.name.clone(),
            cmdline: p.cmdline.clone(),
            status: p.status.expect("finished process has a status"),
            stdout: fs::read(&p.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&p.stderr).unwrap_or_default(),
            results: self.results(i),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.status.is_none() {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                // A stopped process dies of SIGKILL too; SIGCONT is not needed.
                p.status = p.child.wait().ok();
            }
        }
    }
}

/// `/proc/<pid>/stat` says zombie, or the pid is gone.
pub fn is_zombie_or_gone(pid: i32) -> bool {
    verfs_coordination::lease::has_exited(pid as u32)
}

/// `/proc/<pid>/stat` says stopped (`T`).
pub fn is_stopped(pid: i32) -> bool {
    verfs_coordination::lease::proc_state(pid as u32) == Some('T')
}

/// Every complete JSON line of `path` (missing file: none).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Append one JSON line to `path` with a single `write` (O_APPEND), so concurrent writers and a
/// kill never interleave or tear earlier lines.
pub fn append_jsonl(path: &Path, v: &serde_json::Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------------------------

/// Serializes the CPU-heavy tests: on a small machine, eight writers of two tests at once only
/// slow each other down and stretch lease timing. Light tests (mostly waiting) skip it.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// FUSE mounts and external tools
// ---------------------------------------------------------------------------------------------

/// Is something mounted at `p` (per `/proc/self/mountinfo`, which escapes space, tab, newline
/// and backslash as `\ooo`)? Works on a dead endpoint too (no `stat` of `p`).
pub fn is_mounted(p: &Path) -> bool {
    let want = fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf());
    let want = want.to_string_lossy().into_owned();
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ').nth(4).map(|f| {
            let b = f.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' && i + 3 < b.len() {
                    let d = &b[i + 1..i + 4];
                    if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                        out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                        i += 4;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }) == Some(want.clone())
    })
}

/// Is `pid` alive (not gone, not a zombie) and a `verfs ... mount` of `mp`? Guards every signal
/// the [`Mount`] guard sends by pid against a reused pid.
fn is_mount_process(pid: i32, mp: &Path) -> bool {
    if is_zombie_or_gone(pid) {
        return false;
    }
    let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
    let mp = mp.to_string_lossy();
    args.iter().any(|a| *a == b"mount") && args.iter().any(|a| *a == mp.as_bytes())
}

/// A mount of a store on a fresh empty directory, by the real `verfs mount`.
///
/// [`Mount::new`] mounts with `-d` (returns once mounted); [`Mount::foreground`] runs `verfs
/// mount` as a child of the test (for signals and the exit status). Dropping the guard ALWAYS
/// leaves nothing mounted, even when the test panics: `verfs umount`, then `fusermount3 -uz`,
/// then SIGKILL of the mount process (so a request it never answers, e.g. a blocked `F_SETLKW`,
/// cannot keep a test process in `D` state), then `fusermount3 -uz` of the dead endpoint.
/// Declare a [`Pool`] whose processes use the mount BEFORE the guard, so the mount goes first.
pub struct Mount {
    store: PathBuf,
    mp: PathBuf,
    opts: Vec<String>,
    pid: Option<i32>,
    child: Option<Child>,
    child_status: Option<ExitStatus>,
    stderr_file: Option<PathBuf>,
    /// The daemon's log (`mount -d` prints it).
    log: Option<PathBuf>,
    /// Extra environment of every `verfs` command the guard runs (`VERFS_NODE=h1`).
    env: Vec<(String, String)>,
}

impl Mount {
    /// Mount `st` with `verfs mount -d [-o opts]` on a new empty directory under its scratch.
    pub fn new(st: &TestStore, opts: &[&str]) -> Mount {
        Mount::of_store(st.root(), st.scratch(), opts, &[])
    }

    /// Mount the store at `store` (not a [`TestStore`]: one on the two-host bed) with `verfs
    /// mount -d`, on a new empty directory under `scratch`; `env` is added to every `verfs`
    /// command the guard runs (mount, umount).
    pub fn of_store(store: &Path, scratch: &Path, opts: &[&str], env: &[(&str, &str)]) -> Mount {
        let mp = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(scratch)
            .expect("mountpoint dir")
            .keep();
        let mp = fs::canonicalize(&mp).expect("canonical mountpoint");
        let mut m = Mount {
            store: fs::canonicalize(store).expect("canonical store"),
            mp,
            opts: opts.iter().map(|s| s.to_string()).collect(),
            pid: None,
            child: None,
            child_status: None,
            stderr_file: None,
            log: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        m.mount();
        m
    }

    fn mount_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["-s".into(), self.store.clone().into()];
        a.push("mount".into());
        a.push(self.mp.clone().into());
        for o in &self.opts {
            a.push("-o".into());
            a.push(o.into());
        }
        a
    }

    /// (Re)mount with `-d` on the same directory; it must be unmounted now.
    pub fn mount(&mut self) {
        assert!(
            !is_mounted(&self.mp),
            "{} is still mounted",
            self.mp.display()
        );
        let mut c = Command::new(verfs_bin());
        c.args(self.mount_args())
            .arg("-d")
            .env_remove("VERFS_STORE")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = run_with_timeout(c, CMD_TIMEOUT);
        assert!(out.success(), "mount failed:\n{}", out.describe());
        // "verfs: mounted at MP (daemon pid N, log PATH)"
        let pid = out.stderr.rsplit_once("daemon pid ").and_then(|(_, r)| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<i32>().ok())
        });
        if let Some(old) = self.log.take() {
            let _ = fs::remove_file(old);
        }
        self.log = out
            .stderr
            .rsplit_once(", log ")
            .map(|(_, r)| PathBuf::from(r.trim_end().trim_end_matches(')')));
        assert!(
            pid.is_some() && is_mounted(&self.mp),
            "mount -d returned without a daemon pid or a mount:\n{}",
            out.describe()
        );
        self.pid = pid;
        self.child = None;
        self.child_status = None;
    }

    /// `verfs mount` in the foreground as a child of the test (stderr to a scratch file);
    /// returns once the mountpoint is in `/proc/self/mountinfo`.
    pub fn foreground(st: &TestStore, opts: &[&str]) -> Mount {
        Mount::foreground_with(st, opts, &[])
    }

    /// [`Mount::foreground`] with extra environment for the daemon (`FAILPOINTS=...`).
    pub fn foreground_with(st: &TestStore, opts: &[&str], env: &[(&str, &str)]) -> Mount {
        let mp = tempfile::Builder::new()
            .prefix("mnt-fg-")
            .tempdir_in(st.scratch())
            .expect("mountpoint dir")
            .keep();
        let mp = fs::canonicalize(&mp).expect("canonical mountpoint");
        let stderr_file = mp.with_extension("stderr");
        let mut m = Mount {
            store: fs::canonicalize(st.root()).expect("canonical store"),
            mp,
            opts: opts.iter().map(|s| s.to_string()).collect(),
            pid: None,
            child: None,
            child_status: None,
            stderr_file: Some(stderr_file.clone()),
            log: None,
            env: Vec::new(),
        };
        let mut c = Command::new(verfs_bin());
        c.args(m.mount_args())
            .env_remove("VERFS_STORE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr_file).expect("stderr file"));
        die_with_parent(&mut c);
        let line = cmdline(&c);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{line}`: {e}"));
        m.pid = Some(child.id() as i32);
        let start = Instant::now();
        while !is_mounted(&m.mp) {
            if let Some(st) = child.try_wait().expect("try_wait") {
                panic!(
                    "`{line}` exited ({st}) before mounting:\n{}",
                    fs::read_to_string(&stderr_file).unwrap_or_default()
                );
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("HANG: `{line}` did not mount within 30 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
        m.child = Some(child);
        m
    }

    /// The mountpoint (canonical).
    pub fn path(&self) -> &Path {
        &self.mp
    }

    /// `MOUNTPOINT/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mp.join(rel)
    }

    /// Pid of the process serving the mount.
    pub fn pid(&self) -> i32 {
        self.pid.expect("mount has a pid")
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mp)
    }

    /// Send `sig` to the mount process; false if it is gone (or, for a daemon, its pid no
    /// longer names a mount of this directory).
    pub fn signal(&self, sig: Signal) -> bool {
        let Some(pid) = self.pid else { return false };
        let ours = if self.child.is_some() {
            self.child_status.is_none() // a child not yet reaped: the pid is ours
        } else {
            is_mount_process(pid, &self.mp)
        };
        ours && kill(Pid::from_raw(pid), sig).is_ok()
    }

    /// Wait for a foreground mount to exit (reaping it); fails the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .expect("wait_exit: not a foreground mount");
        if let Some(s) = self.child_status {
            return s;
        }
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.child_status = Some(s);
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "HANG: mount process {} still running after {timeout:?}",
                child.id()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the mount process wrote to stderr: its stderr file (foreground) or its log (`-d`).
    pub fn stderr(&self) -> String {
        self.stderr_file
            .as_ref()
            .or(self.log.as_ref())
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// `verfs umount MOUNTPOINT`: must succeed, and afterwards nothing is mounted and the mount
    /// process has finished (its final flush is done).
    pub fn umount(&mut self) -> RunOutput {
        let out = self.run_umount();
        assert!(out.success(), "umount failed:\n{}", out.describe());
        assert!(
            !self.is_mounted(),
            "still mounted after umount:\n{}",
            out.describe()
        );
        if let Some(pid) = self.pid {
            if self.child.is_some() {
                self.wait_exit(CMD_TIMEOUT);
            } else {
                assert!(
                    !is_mount_process(pid, &self.mp),
                    "mount process {pid} still runs after `verfs umount` returned"
                );
            }
        }
        out
    }

    /// `verfs umount MOUNTPOINT` with any outcome.
    pub fn run_umount(&self) -> RunOutput {
        // Without `-s`, from a directory that holds no store, as a user would type it: the
        // mount names its store itself, and `umount` must still wait for its final flush.
        let mut c = Command::new(verfs_bin());
        c.arg("umount")
            .arg(&self.mp)
            .current_dir("/")
            .env_remove("VERFS_STORE")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        run_with_timeout(c, CMD_TIMEOUT)
    }

    /// Unmount ([`Mount::umount`]) and mount again (`-d`) on the same directory.
    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    /// `fusermount3 -uz` if something is still mounted here.
    fn detach_if_mounted(&self) {
        if self.is_mounted() {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mp)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn cleanup(&mut self) {
        if self.is_mounted() {
            let _ = self.run_umount();
        }
        self.detach_if_mounted();
        // A lazily detached mount lives while files are open (or a request is stuck): give it
        // a moment to finish, then kill it.
        let start = Instant::now();
        while self.process_alive() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
        if self.process_alive() {
            eprintln!(
                "Mount guard: killing mount process {:?} of {}",
                self.pid,
                self.mp.display()
            );
            self.signal(Signal::SIGKILL);
        }
        if let Some(c) = self.child.as_mut() {
            if self.child_status.is_none() {
                self.child_status = c.wait().ok();
            }
        }
        self.detach_if_mounted();
    }

    fn process_alive(&mut self) -> bool {
        let Some(pid) = self.pid else { return false };
        match self.child.as_mut() {
            Some(c) => {
                if self.child_status.is_none() {
                    self.child_status = c.try_wait().ok().flatten();
                }
                self.child_status.is_none()
            }
            None => is_mount_process(pid, &self.mp),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.cleanup();
        if self.is_mounted() {
            eprintln!("Mount guard: {} is STILL mounted", self.mp.display());
        }
        if let Some(log) = self.log.take() {
            let _ = fs::remove_file(log);
        }
    }
}

/// One line per entry of the tree at `dir` (itself included), sorted by name, from the real
/// `stat -c '%N %a %u %g %Y %h %s %F'` (`%N` shows a symlink's target). A directory's size is
/// dropped: it is filesystem-specific.
pub fn tree_stat(dir: &Path) -> Vec<String> {
    let out = sh_ok(&format!(
        "cd {} && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%N\t%a %u %g %Y %h %s %F'",
        shq(dir)
    ));
    out.stdout_str()
        .lines()
        .map(|l| match l.strip_suffix(" directory") {
            Some(rest) => {
                // "... %h %s" -> drop the size
                let cut = rest.rfind(' ').unwrap_or(rest.len());
                format!("{} directory", &rest[..cut])
            }
            None => l.to_owned(),
        })
        .collect()
}

/// `sha256sum` of every regular file under `dir`, sorted by name (`./rel` paths).
pub fn tree_sha256(dir: &Path) -> String {
    sh_ok(&format!(
        "cd {} && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum",
        shq(dir)
    ))
    .stdout_str()
}

/// `getfattr -h -d -m -` of every entry under `dir` (symlinks not followed), sorted by name.
pub fn tree_xattrs(dir: &Path) -> String {
    sh_ok(&format!(
        "cd {} && find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m - 2>&1",
        shq(dir)
    ))
    .stdout_str()
}

/// Assert two trees hold the same regular files with the same bytes ([`tree_sha256`]); names
/// the files that differ or exist on one side only.
pub fn assert_same_contents(want: &Path, got: &Path, when: &str) {
    let (a, b) = (tree_sha256(want), tree_sha256(got));
    if a != b {
        let only_a: Vec<_> = a.lines().filter(|l| !b.contains(l)).take(10).collect();
        let only_b: Vec<_> = b.lines().filter(|l| !a.contains(l)).take(10).collect();
        panic!("{when}: file contents differ\nonly in want: {only_a:#?}\nonly in got: {only_b:#?}");
    }
}

/// Assert two trees are equal by `stat` ([`tree_stat`]), content ([`tree_sha256`]) and
/// extended attributes ([`tree_xattrs`]); the first differing line is named.
pub fn assert_trees_equal(want: &Path, got: &Path, when: &str) {
    let (a, b) = (tree_stat(want), tree_stat(got));
    if a != b {
        let first = a
            .iter()
            .zip(&b)
            .find(|(x, y)| x != y)
            .map(|(x, y)| format!("want {x:?}\n got {y:?}"))
            .unwrap_or_else(|| format!("{} vs {} entries", a.len(), b.len()));
        let only_a: Vec<_> = a.iter().filter(|l| !b.contains(l)).take(10).collect();
        let only_b: Vec<_> = b.iter().filter(|l| !a.contains(l)).take(10).collect();
        panic!(
            "{when}: stat of {} and {} differ; first difference:\n{first}\nonly in want: {only_a:#?}\nonly in got: {only_b:#?}",
            want.display(),
            got.display()
        );
    }
    assert_same_contents(want, got, when);
    let (a, b) = (tree_xattrs(want), tree_xattrs(got));
    assert_eq!(a, b, "{when}: xattrs differ (left: want, right: got)");
}
