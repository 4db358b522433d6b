//! Running one command under a timeout: a hang is killed and fails the test with its command
//! line and output; every child dies with the test process.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default limit for one `verfs` command; a command running longer is a hang.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Limit for one external command (rsync, cp, sha256sum, tar, ...).
pub const EXT_TIMEOUT: Duration = Duration::from_secs(120);

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

    /// [`KillSlot::kill`] that returns the pid it signalled (to find that process's lease),
    /// or `None` when no child is running.
    pub fn kill_reporting(&self, sig: Signal) -> Option<i32> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let pid = (*g)?;
        kill(Pid::from_raw(pid), sig).ok().map(|()| pid)
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
