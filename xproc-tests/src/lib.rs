//! Process-pool harness: tests that spawn real `verfs` processes against one shared store.
//!
//! Overview of the main types:
//!
//! - [`verfs_bin`] finds the `verfs` binary next to the test executable and refuses a stale one.
//! - [`TestStore`]: a fresh temporary directory holding a store (`verfs init`), a helper to rewrite
//!   `config.toml` ([`TestStore::set_config`]) and to run one `verfs` command under a timeout
//!   ([`TestStore::run`]); a command that hangs is killed and fails the test with its command line
//!   and stderr.
//! - [`Pool`]: many real OS processes started at once behind a file barrier (each waits until the
//!   `go` file exists), each with its own result file (JSON lines written by the process), stdout
//!   and stderr files; SIGKILL / SIGSTOP / SIGCONT by index. Every child is reaped; dropping the
//!   pool kills whatever still runs, so a failing test leaves no process behind.
//! - [`KillSlot`] + [`run_killable`]: a child that another thread may SIGKILL at any moment, with
//!   no risk of signalling a reused pid (the child is reaped under the slot's lock).
//! - Content helpers: seeded random bytes ([`random_bytes`]), [`tagged_content`] whose every 4 KiB
//!   block names its writer (so a mix of two writers is diagnosed, not just detected), sha256.
//!
//! The helper process is `xproc-agent` (`src/bin/xproc-agent.rs`); integration tests locate it
//! with [`agent_bin!`]. The rules the tests prove are in `docs/layout/*.md` (`[LOG-n]`, ...).
//!
//! ```no_run
//! use verfs_xproc_tests::TestStore;
//! let st = TestStore::new();
//! st.ok(&["mkdir", "/a"]);
//! assert_eq!(st.ok(&["ls", "/"]).stdout_str(), "a\n");
//! ```

pub mod crash;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Default limit for one `verfs` command; a command running longer is a hang.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The command that builds everything these tests need (also in the README).
pub const BUILD_HINT: &str = "cargo build --workspace --bins && cargo test --workspace";

/// Path of the `xproc-agent` helper binary; only valid inside this package's integration tests,
/// where cargo builds it and sets `CARGO_BIN_EXE_xproc-agent`.
#[macro_export]
macro_rules! agent_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_xproc-agent"))
    };
}

// ---------------------------------------------------------------------------------------------
// Locating binaries
// ---------------------------------------------------------------------------------------------

/// `target/<profile>/`: the test executable lives in `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Newest modification time among the sources cargo built `bin` from (its dep-info file
/// `<bin>.d`, which lists exactly the files rustc read: test-only modules are not in it), with
/// the file that has it. Without a dep-info file, every `.rs` file of the cli, engine and
/// coordination crates counts.
fn newest_source(bin: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Ok(dep_info) = fs::read_to_string(bin.with_extension("d")) {
        let deps = dep_info
            .lines()
            .next()
            .and_then(|l| l.split_once(": "))
            .map(|(_, d)| d)
            .unwrap_or("");
        // Paths are separated by spaces; a space inside a path is escaped as `\ `.
        let mut cur = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    cur.push(' ');
                    chars.next();
                }
                ' ' => files.push(PathBuf::from(std::mem::take(&mut cur))),
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            files.push(PathBuf::from(cur));
        }
    } else {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out);
                    } else if p.extension() == Some(OsStr::new("rs")) {
                        out.push(p);
                    }
                }
            }
        }
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
        for c in ["cli/src", "engine/src", "coordination/src"] {
            walk(&ws.join(c), &mut files);
        }
    }
    files
        .into_iter()
        .filter_map(|f| mtime(&f).map(|t| (t, f)))
        .max_by_key(|(t, _)| *t)
}

/// The `verfs` binary of this build profile (`target/<profile>/verfs`).
///
/// Panics, loudly, when it is missing or older than a source file it is built from (cargo's
/// dep-info `verfs.d`): a test against a stale binary proves nothing. (Comparing with the test executable's own
/// mtime would be wrong: `cargo build --bins` followed by `cargo test` links the test after the
/// binary even though the binary is up to date.)
pub fn verfs_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let bin = profile_dir().join("verfs");
        let Some(bin_time) = mtime(&bin) else {
            return Err(format!(
                "\n\n*** verfs binary not found at {} ***\nThe multi-process tests run the real \
                 binary. Build it first:\n    {BUILD_HINT}\n",
                bin.display()
            ));
        };
        if let Some((src_time, src)) = newest_source(&bin) {
            if src_time > bin_time {
                return Err(format!(
                    "\n\n*** STALE verfs binary: {} is older than {} ***\nRefusing to test an old \
                     binary. Rebuild it first:\n    {BUILD_HINT}\n",
                    bin.display(),
                    src.display()
                ));
            }
        }
        Ok(bin)
    });
    match r {
        Ok(p) => p.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running one command under a timeout
// ---------------------------------------------------------------------------------------------

/// Make a child die with the test process (and its spawning thread): no leftovers if the test
/// runner itself is killed.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// A finished child process.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Killed by SIGKILL.
    pub fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// One-paragraph description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` -> {} after {:.2}s\n--- stdout ({} bytes) ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
            self.stderr
        )
    }
}

/// `program arg...` as one line, for messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn spawn_piped(
    cmd: &mut Command,
) -> (
    Child,
    thread::JoinHandle<Vec<u8>>,
    thread::JoinHandle<Vec<u8>>,
) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{}`: {e}", cmdline(cmd)));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    (child, t_out, t_err)
}

/// Run `cmd` to completion; a run longer than `timeout` is killed and fails the test.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> RunOutput {
    run_killable(&mut cmd, &KillSlot::default(), timeout)
}

/// Where a running child's pid is published so another thread can SIGKILL it.
///
/// The child is reaped only while the lock is held, and [`KillSlot::kill`] signals only while
/// the pid is published under the same lock: a signal can reach the child (running or a zombie)
/// but never a process that reused its pid.
#[derive(Default, Clone)]
pub struct KillSlot(Arc<Mutex<Option<i32>>>);

impl KillSlot {
    /// Send `sig` to the published child; false when no child is running.
    pub fn kill(&self, sig: Signal) -> bool {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *g {
            Some(pid) => kill(Pid::from_raw(pid), sig).is_ok(),
            None => false,
        }
    }
}

/// Run `cmd`, publishing its pid in `slot` while it runs (see [`KillSlot`]).
pub fn run_killable(cmd: &mut Command, slot: &KillSlot, timeout: Duration) -> RunOutput {
    let line = cmdline(cmd);
    let start = Instant::now();
    let (mut child, t_out, t_err) = spawn_piped(cmd);
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(child.id() as i32);
    let mut pause = Duration::from_micros(500);
    let mut timed_out = false;
    let status = loop {
        {
            let mut g = slot.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(st) = child.try_wait().expect("try_wait") {
                *g = None;
                break st;
            }
            if start.elapsed() > timeout && !timed_out {
                timed_out = true;
                let _ = child.kill();
            }
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    };
    let out = RunOutput {
        cmdline: line,
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned(),
        elapsed: start.elapsed(),
    };
    if timed_out {
        panic!(
            "HANG: command ran longer than {:?} and was killed:\n{}",
            timeout,
            out.describe()
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TestStore
// ---------------------------------------------------------------------------------------------

/// A fresh store in a temporary directory: `<tmp>/store`, with `<tmp>` free for scratch files.
pub struct TestStore {
    // Dropped first: a tmpfs under `dir` is unmounted before `dir` is removed.
    _tmpfs: Option<TmpfsGuard>,
    dir: tempfile::TempDir,
    root: PathBuf,
}

/// Lazily unmounts a tmpfs when dropped.
struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStore {
    /// `verfs init` in a new temporary directory.
    pub fn new() -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("verfs-xproc-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("store");
        TestStore {
            _tmpfs: None,
            dir,
            root,
        }
        .init()
    }

    /// A store on its own tmpfs of `mib` MiB (`<tmp>/fs/store`; scratch stays on the host), for
    /// tests that fill the disk. `None`, after a loud SKIPPED line, if no tmpfs can be mounted
    /// (not root); under CI that panics instead ([`skip`]).
    pub fn on_tmpfs(mib: u32) -> Option<TestStore> {
        let dir = tempfile::Builder::new()
            .prefix("verfs-xproc-")
            .tempdir()
            .expect("tempdir");
        let fs_dir = dir.path().join("fs");
        fs::create_dir(&fs_dir).expect("tmpfs dir");
        let out = ext(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                format!("size={mib}m").as_ref(),
                "tmpfs".as_ref(),
                fs_dir.as_os_str(),
            ],
        );
        if !out.success() {
            skip(&format!(
                "cannot mount a tmpfs (needs root):\n{}",
                out.describe()
            ));
            return None;
        }
        Some(
            TestStore {
                _tmpfs: Some(TmpfsGuard(fs_dir.clone())),
                dir,
                root: fs_dir.join("store"),
            }
            .init(),
        )
    }

    fn init(self) -> TestStore {
        let st = self;
        let mut c = Command::new(verfs_bin());
        c.arg("init").arg(&st.root);
        let out = run_with_timeout(c, CMD_TIMEOUT);
        assert!(out.success(), "verfs init failed:\n{}", out.describe());
        st
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temporary directory holding the store; free for scratch files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A new scratch sub-directory.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Set `key = value` in `[section]` of `config.toml` (`value` is TOML, e.g. `"1500"`).
    pub fn set_config(&self, section: &str, key: &str, value: &str) {
        let path = self.root.join("config.toml");
        let text = fs::read_to_string(&path).expect("read config.toml");
        let text = set_toml_value(&text, section, key, value);
        fs::write(&path, text).expect("write config.toml");
    }

    /// Short leases for tests that wait for a lease to time out: 1500 ms, heartbeat 200 ms.
    pub fn short_leases(&self) {
        self.set_config("leases", "timeout_ms", "1500");
        self.set_config("leases", "heartbeat_ms", "200");
    }

    /// `verfs -s STORE` with no subcommand yet.
    pub fn command(&self) -> Command {
        let mut c = Command::new(verfs_bin());
        c.arg("-s").arg(&self.root).env_remove("VERFS_STORE");
        c
    }

    /// Run `verfs -s STORE args...` under [`CMD_TIMEOUT`]; any exit status is returned.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        let mut c = self.command();
        c.args(args);
        run_with_timeout(c, CMD_TIMEOUT)
    }

    /// [`TestStore::run`] that must exit 0.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        let out = self.run(args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out
    }

    /// `verfs fsck` must exit 0 and print no problem line.
    pub fn assert_fsck_clean(&self) {
        let out = self.run(&["fsck"]);
        assert!(
            out.success() && out.stdout.is_empty(),
            "fsck is not clean:\n{}",
            out.describe()
        );
    }

    /// `verfs ls PATH` as a list of names.
    pub fn ls(&self, path: &str) -> Vec<String> {
        self.ok(&["ls", path])
            .stdout_str()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `verfs cat PATH` bytes (must succeed).
    pub fn cat(&self, path: &str) -> Vec<u8> {
        self.ok(&["cat", path]).stdout
    }

    /// Leave what crash point L1 leaves (data-layout.md 8: a writer killed during the `pwrite` of
    /// a log record): the complete header and part of the payload of the next record (the lsn
    /// after the head) at the end of the last segment. A SIGKILL cannot tear one `pwrite`, so
    /// tests that claim L1 plant it. Call only while no process writes the log. Returns the segment and its
    /// length before the torn bytes (where [LOG-5] must cut it).
    pub fn plant_torn_log_tail(&self) -> (PathBuf, u64) {
        let status = self.ok(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&status.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", status.describe()));
        let head = v["lsn"]
            .as_u64()
            .unwrap_or_else(|| panic!("status --json without lsn: {v}"));
        let seg = self.root.join("log").join(
            self.log_segments()
                .pop()
                .expect("the store has a log segment"),
        );
        let len = fs::metadata(&seg).expect("stat segment").len();
        let payload = vec![0x5a; 300];
        // Record type 1 (a transaction), data-layout.md "Log record".
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

    /// Names of the log segments (`log/*.seg`), sorted.
    pub fn log_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("log"))
            .expect("read log dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    }

    /// Names in `leases/`.
    pub fn lease_folders(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("leases"))
            .expect("read leases dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Rewrite one `key = value` line of a TOML text with flat `[section]` tables; the key is added
/// (and the section appended) when missing.
pub fn set_toml_value(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut seen_section = false;
    let mut done = false;
    let header = format!("[{section}]");
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_section && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_section = t == header;
            seen_section |= in_section;
        } else if in_section && !done {
            let k = t.split('=').next().unwrap_or("").trim();
            if !t.starts_with('#') && k == key {
                out.push(format!("{key} = {value}"));
                done = true;
                continue;
            }
        }
        out.push(line.to_owned());
    }
    if !done {
        if !seen_section {
            out.push(header);
        }
        out.push(format!("{key} = {value}"));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
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
// Content helpers
// ---------------------------------------------------------------------------------------------

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// `len` pseudo-random bytes from `seed` (same seed, same bytes).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Write [`random_bytes`] to `path`; returns their sha256.
pub fn write_random_file(path: &Path, seed: u64, len: usize) -> String {
    let data = random_bytes(seed, len);
    fs::write(path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha256(&data)
}

/// Block size of [`tagged_content`].
pub const TAG_BLOCK: usize = 4096;
/// Length of the tag at the start of each block.
pub const TAG_LEN: usize = 32;

/// `len` bytes whose every 4 KiB block starts with a 32-byte tag `"<tag> b<block>"` followed by
/// random bytes (seeded by `seed`), so content is incompressible, chunks are distinct, and a
/// mix of two versions can be traced block by block ([`describe_tags`]).
pub fn tagged_content(tag: &str, seed: u64, len: usize) -> Vec<u8> {
    let mut data = random_bytes(seed, len);
    for (k, block) in data.chunks_mut(TAG_BLOCK).enumerate() {
        let mut t = format!("{tag} b{k:05}");
        t.truncate(TAG_LEN);
        let mut hdr = [b' '; TAG_LEN];
        hdr[..t.len()].copy_from_slice(t.as_bytes());
        let n = block.len().min(TAG_LEN);
        block[..n].copy_from_slice(&hdr[..n]);
    }
    data
}

/// Runs of block tags in `data` ("w03-r007 x 75, w05-r002 x 12"): which versions a bad read mixes.
pub fn describe_tags(data: &[u8]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for block in data.chunks(TAG_BLOCK) {
        let hdr = String::from_utf8_lossy(&block[..block.len().min(TAG_LEN)]).into_owned();
        let who = hdr.split(" b").next().unwrap_or("?").trim().to_owned();
        match runs.last_mut() {
            Some((w, n)) if *w == who => *n += 1,
            _ => runs.push((who, 1)),
        }
    }
    let mut s = format!("{} bytes: ", data.len());
    for (i, (w, n)) in runs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{w:?} x {n}");
    }
    s
}

/// A deterministic per-test seed, overridable with `XPROC_SEED` to replay a failure.
pub fn seed() -> u64 {
    std::env::var("XPROC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Serializes the CPU-heavy tests: on a small machine, eight writers of two tests at once only
/// slow each other down and stretch lease timing. Light tests (mostly waiting) skip it.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// FUSE mounts and external tools
// ---------------------------------------------------------------------------------------------

/// Limit for one external command (rsync, cp, sha256sum, tar, ...) in the mount tests.
pub const EXT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why FUSE tests cannot run here (`/dev/fuse` or `fusermount3` missing), or `None`.
pub fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

/// Return from the test, loudly, when FUSE is unavailable ([`fuse_missing`]); under CI
/// ([`in_ci`]) fail it instead ([`skip`]).
#[macro_export]
macro_rules! require_fuse {
    () => {
        if let Some(why) = $crate::fuse_missing() {
            $crate::skip(&why);
            return;
        }
    };
}

/// Is this a CI run: `CI` set to anything non-empty (what GitHub, GitLab and most runners set),
/// or `VERFS_CI=1`? There a test that lacks a capability fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os("VERFS_CI").is_some_and(|v| v == "1")
}

/// The one place a test gives up for lack of root, FUSE or a tool. Outside CI: a loud SKIPPED
/// line, and the caller returns (the test passes). Under CI ([`in_ci`]): a panic, so a CI machine
/// that lacks what the suite needs is red, not green with the mount suite never run.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("*** CI: this test cannot run: {why} (CI must provide it; see README \"Test\") ***");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// Run `program args...` under [`EXT_TIMEOUT`]; any exit status is returned. A run longer than
/// that is killed and fails the test with the command line and stderr.
pub fn ext<S: AsRef<OsStr>>(program: &str, args: &[S]) -> RunOutput {
    let mut c = Command::new(program);
    c.args(args);
    run_with_timeout(c, EXT_TIMEOUT)
}

/// [`ext`] that must exit 0.
pub fn ext_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> RunOutput {
    let out = ext(program, args);
    assert!(out.success(), "command failed:\n{}", out.describe());
    out
}

/// Run a bash script (`set -euo pipefail` first) under [`EXT_TIMEOUT`]; any exit status.
pub fn sh(script: &str) -> RunOutput {
    ext("bash", &["-c", &format!("set -euo pipefail\n{script}")])
}

/// [`sh`] that must exit 0.
pub fn sh_ok(script: &str) -> RunOutput {
    let out = sh(script);
    assert!(out.success(), "script failed:\n{}", out.describe());
    out
}

/// Quote `s` for a shell script.
pub fn shq(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

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
}

impl Mount {
    /// Mount `st` with `verfs mount -d [-o opts]` on a new empty directory under its scratch.
    pub fn new(st: &TestStore, opts: &[&str]) -> Mount {
        let mp = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(st.scratch())
            .expect("mountpoint dir")
            .keep();
        let mp = fs::canonicalize(&mp).expect("canonical mountpoint");
        let mut m = Mount {
            store: fs::canonicalize(st.root()).expect("canonical store"),
            mp,
            opts: opts.iter().map(|s| s.to_string()).collect(),
            pid: None,
            child: None,
            child_status: None,
            stderr_file: None,
            log: None,
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
            .env_remove("VERFS_STORE");
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
        };
        let mut c = Command::new(verfs_bin());
        c.args(m.mount_args())
            .env_remove("VERFS_STORE")
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
            .env_remove("VERFS_STORE");
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
