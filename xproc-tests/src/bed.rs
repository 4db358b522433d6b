//! The two-host test bed (`xproc-tests/multihost/bed.sh`) as a guard: [`Bed::up`] brings it up,
//! dropping the [`Bed`] tears it down, also when the test panics (`Drop` runs on unwind).
//!
//! Two "hosts" share one GlusterFS volume: [`Bed::host`]`(1)` and `(2)` are the two FUSE mounts of
//! it, each served by a client daemon in its own network namespace, so [`Bed::cut`] partitions
//! one of them. "Host N" processes are the ones that use a store under `host(N)` (give them
//! `VERFS_NODE=hN`, [`Bed::node`]). The bed's names and ports are per machine (glusterd listens
//! on 24007): a guard holds an exclusive `flock` on [`LOCK_FILE`] for its whole life, so two test
//! processes (two worktrees running the suite at once) take turns instead of colliding; each
//! uses a base directory of its own (`$TMPDIR/verfs-bed-<pid>`).
//!
//! ```no_run
//! use verfs_xproc_tests::bed::Bed;
//! let Some(bed) = Bed::up() else { return }; // SKIPPED without root or glusterd (CI: fails)
//! let store = bed.host(1).join("store");
//! // ... `verfs init` there, run host-1 processes on it, host-2 ones on bed.host(2)/store ...
//! ```

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::{die_with_parent, is_root, run_with_timeout, skip, RunOutput};

/// Serializes beds of concurrent test processes on one machine.
pub const LOCK_FILE: &str = "/run/verfs-bed.lock";

/// Longest wait for another test process's bed to go down.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// `up` may install glusterfs first (apt-get: ~40 s on a fresh machine).
const UP_TIMEOUT: Duration = Duration::from_secs(400);
const DOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Exit status of `bed.sh up` when the bed cannot run on this machine (not root, or a glusterd
/// it did not start runs): a skip, not a failure, outside CI.
const CANNOT_RUN: i32 = 3;

/// The bed script in the source tree.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("multihost/bed.sh")
}

/// Why the bed cannot run here (not root, glusterfs not installed), or `None`.
pub fn bed_missing() -> Option<String> {
    if !is_root() {
        return Some(
            "the two-host bed needs root (network namespaces, glusterd, FUSE mounts)".into(),
        );
    }
    let installed = ["/usr/sbin/glusterd", "/sbin/glusterd"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !installed {
        return Some(
            "glusterd is not installed (apt-get install glusterfs-server glusterfs-client, \
             which .ci/run does; or run xproc-tests/multihost/bed.sh up once)"
                .into(),
        );
    }
    None
}

/// A two-host bed that is up; see the module docs.
pub struct Bed {
    base: PathBuf,
    hosts: [PathBuf; 2],
    up_time: Duration,
    is_up: bool,
    // Released after `down` (fields drop after `Drop::drop` ran).
    _lock: Flock<fs::File>,
}

impl Bed {
    /// Bring the bed up under a base directory of this test process. `None`, after a loud
    /// SKIPPED line, when it cannot run here ([`bed_missing`], or another glusterd runs); under
    /// CI ([`crate::in_ci`]) that panics instead. Panics when `bed.sh up` fails (it has torn
    /// down what it made by then), with its output.
    pub fn up() -> Option<Bed> {
        if let Some(why) = bed_missing() {
            skip(&why);
            return None;
        }
        let lock = take_lock();
        let base = std::env::temp_dir().join(format!("verfs-bed-{}", std::process::id()));
        let start = Instant::now();
        let out = run(&base, &["up"], UP_TIMEOUT);
        let up_time = start.elapsed();
        if out.code() == Some(CANNOT_RUN) {
            skip(&format!(
                "the two-host bed cannot come up here:\n{}",
                out.stderr
            ));
            return None;
        }
        assert!(out.success(), "bed.sh up failed:\n{}", out.describe());
        let lines: Vec<PathBuf> = out.stdout_str().lines().map(PathBuf::from).collect();
        assert!(
            lines.len() == 2 && lines.iter().all(|p| p.is_dir()),
            "bed.sh up did not print the two mounts:\n{}",
            out.describe()
        );
        Some(Bed {
            base,
            hosts: [lines[0].clone(), lines[1].clone()],
            up_time,
            is_up: true,
            _lock: lock,
        })
    }

    /// Host `n`'s mount of the shared volume (`n` is 1 or 2).
    pub fn host(&self, n: usize) -> &Path {
        assert!(n == 1 || n == 2, "host {n}: the bed has hosts 1 and 2");
        &self.hosts[n - 1]
    }

    /// The node name host `n`'s processes get in `VERFS_NODE`: `h1`, `h2`.
    pub fn node(n: usize) -> String {
        format!("h{n}")
    }

    /// The bed's base directory (brick, logs, pid files).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// How long `up` took.
    pub fn up_time(&self) -> Duration {
        self.up_time
    }

    /// Partition host `n`: its link goes down; its mount's calls fail (ENOTCONN) or block until
    /// [`Bed::heal`], and the server releases its locks after the 5 s ping timeout.
    pub fn cut(&self, n: usize) {
        self.ok(&["cut", &n.to_string()]);
    }

    /// Bring host `n`'s link back; its client reconnects within a few seconds.
    pub fn heal(&self, n: usize) {
        self.ok(&["heal", &n.to_string()]);
    }

    /// `bed.sh status`.
    pub fn status(&self) -> String {
        self.ok(&["status"]).stdout_str()
    }

    /// Tear the bed down now (the guard's drop does it otherwise); returns how long it took.
    /// Unmount every mount whose store lives on the bed first. Panics if `down` fails.
    pub fn down(&mut self) -> Duration {
        let start = Instant::now();
        self.is_up = false;
        let out = run(&self.base, &["down"], DOWN_TIMEOUT);
        assert!(out.success(), "bed.sh down failed:\n{}", out.describe());
        start.elapsed()
    }

    fn ok(&self, args: &[&str]) -> RunOutput {
        let out = run(&self.base, args, DOWN_TIMEOUT);
        assert!(out.success(), "bed.sh failed:\n{}", out.describe());
        out
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if !self.is_up {
            return;
        }
        self.is_up = false;
        // No panic here: this may run during a panic's unwind.
        let mut c = Command::new("bash");
        c.arg(script())
            .arg("down")
            .env("VERFS_BED", &self.base)
            .stdin(Stdio::null());
        die_with_parent(&mut c);
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => return eprintln!("Bed guard: cannot run bed.sh down: {e}"),
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return,
                Ok(Some(st)) => return eprintln!("Bed guard: bed.sh down -> {st}"),
                Ok(None) if start.elapsed() < DOWN_TIMEOUT => {
                    thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return eprintln!(
                        "Bed guard: bed.sh down hung; the next `bed.sh up` cleans up"
                    );
                }
            }
        }
    }
}

fn run(base: &Path, args: &[&str], timeout: Duration) -> RunOutput {
    let mut c = Command::new("bash");
    c.arg(script()).args(args).env("VERFS_BED", base);
    run_with_timeout(c, timeout)
}

fn take_lock() -> Flock<fs::File> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("{LOCK_FILE}: {e}"));
    let start = Instant::now();
    let mut said = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return l,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                file = f;
                if !said {
                    eprintln!("Bed: another test process holds {LOCK_FILE}: waiting for its bed to go down");
                    said = true;
                }
                assert!(
                    start.elapsed() < LOCK_WAIT,
                    "HANG: {LOCK_FILE} still held after {LOCK_WAIT:?}"
                );
                thread::sleep(Duration::from_millis(200));
            }
            Err((_, e)) => panic!("flock {LOCK_FILE}: {e}"),
        }
    }
}
