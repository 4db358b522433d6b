//! `lock` and `locks`: hold a user lock while a command runs, and list them
//! (`verfs_engine::ops::userlock`, data-layout.md [ULOCK-1]).

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use verfs_coordination::lock::{Mode, Wait};
use verfs_engine::ops::userlock;
use verfs_engine::store::{OpenOptions, Store};

use crate::Cli;

/// Exit status when the lock was not granted in time (as `timeout(1)`).
const NOT_GRANTED: u8 = 124;

pub fn lock(
    cli: &Cli,
    name: &str,
    mode: &str,
    timeout: Option<f64>,
    cmd: &[OsString],
) -> Result<ExitCode> {
    let mode: Mode = mode.parse().with_context(|| format!("lock {name}"))?;
    let wait = match timeout {
        None => Wait::Forever,
        Some(s) if s.is_finite() && s >= 0.0 => Wait::Timeout(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("lock {name}: --timeout {s}: not a number of seconds"),
    };
    let Some((prog, args)) = cmd.split_first() else {
        anyhow::bail!("lock {name}: no command (verfs lock NAME MODE -- CMD [ARGS])");
    };
    // A fenced holder's lock is released by its exit; the command it protects must not outlive
    // it ([ULOCK-2]).
    let child = Arc::new(AtomicI32::new(0));
    let fenced_child = child.clone();
    let mut open = OpenOptions::new(&format!("lock {name} {mode}"));
    open.on_fenced = Some(Box::new(move || {
        let pid = fenced_child.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) with a pid this process spawned; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        tracing::error!("fenced: the lock is lost, the command was killed");
        std::process::exit(75);
    }));
    let store = Store::open(&cli.store, open)?;
    let held = match userlock::acquire(&store, name, mode, wait) {
        Ok(h) => h,
        Err(e) if e.is_retryable() => {
            eprintln!("verfs: lock {name} {mode}: not granted in time: {e}");
            super::finish(store)?;
            return Ok(ExitCode::from(NOT_GRANTED));
        }
        Err(e) => return Err(e.into()),
    };
    let mut command = std::process::Command::new(prog);
    command
        .args(args)
        .env("VERFS_LOCK_NAME", name)
        .env("VERFS_LOCK_MODE", mode.to_string())
        .env("VERFS_LOCK_EPOCH", held.epoch.to_string());
    // SAFETY: prctl in the child between fork and exec is async-signal-safe and touches no
    // memory of the parent. The command dies with this process, so it never runs unlocked.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut proc = command
        .spawn()
        .with_context(|| format!("lock {name}: cannot run {}", prog.to_string_lossy()))?;
    child.store(proc.id() as i32, Ordering::SeqCst);
    let status = proc.wait().context("waiting for the command")?;
    drop(held);
    super::finish(store)?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn locks(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli locks")?;
    let list = userlock::list(&store)?;
    if cli.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.claim.name, "mode": r.claim.mode, "state": r.claim.state,
                    "epoch": r.claim.epoch, "since_unix_ms": r.claim.since_unix_ms,
                    "lease": r.lease, "pid": r.pid, "node": r.node, "host": r.host,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for r in &list {
            println!(
                "{} {} {}{} pid {} on node {} ({}) lease {}",
                r.claim.name,
                r.claim.mode,
                r.claim.state,
                if r.claim.state == "held" {
                    format!(" epoch {}", r.claim.epoch)
                } else {
                    String::new()
                },
                r.pid,
                r.node,
                r.host,
                r.lease
            );
        }
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}
