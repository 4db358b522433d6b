//! `mount`, `umount`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use verfs_fs::{is_mountpoint, MountConfig};

use crate::Cli;

/// Apply `-o a,b=c` over the defaults from `config.toml`.
fn mount_config(store_cfg: &verfs_engine::config::Config, opts: &[String]) -> Result<MountConfig> {
    let m = &store_cfg.mount;
    let mut c = MountConfig {
        read_only: false,
        allow_other: m.allow_other,
        default_permissions: m.default_permissions,
        threads: m.threads,
        dev: false,
        suid: false,
        writeback_cache: m.writeback_cache,
        sync_interval: Duration::from_millis(m.sync_interval_ms.max(1)),
    };
    for o in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        match o.split_once('=') {
            None => match o {
                "ro" => c.read_only = true,
                "rw" => c.read_only = false,
                "allow_other" => c.allow_other = true,
                "default_permissions" => c.default_permissions = true,
                "no_default_permissions" => c.default_permissions = false,
                "dev" => c.dev = true,
                "nodev" => c.dev = false,
                "writeback_cache" => c.writeback_cache = true,
                "no_writeback_cache" => c.writeback_cache = false,
                "suid" => c.suid = true,
                "nosuid" => c.suid = false,
                other => bail!("mount option {other:?} is not supported (ro, rw, allow_other, default_permissions, no_default_permissions, dev, nodev, suid, nosuid, writeback_cache, no_writeback_cache, threads=N)"),
            },
            Some(("threads", n)) => c.threads = n.parse().with_context(|| format!("mount option threads={n}: not a number"))?,
            Some((k, _)) => bail!("mount option {k:?} is not supported"),
        }
    }
    Ok(c)
}

pub fn mount(cli: &Cli, mountpoint: &Path, daemon: bool, opts: &[String]) -> Result<ExitCode> {
    verfs_fs::check_mountpoint(mountpoint)?;
    if daemon {
        return spawn_daemon(cli, mountpoint, opts);
    }
    let canon = std::fs::canonicalize(mountpoint)?;
    let store = verfs_engine::store::Store::open(
        &cli.store,
        verfs_engine::store::OpenOptions::new(&format!("mount {}", canon.display())),
    )?;
    let cfg = mount_config(store.config(), opts)?;
    verfs_fs::mount(store, &canon, &cfg, || {
        eprintln!(
            "verfs: mounted {} at {} (Ctrl-C or `verfs umount` to unmount)",
            cli.store.display(),
            canon.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--daemon`: run the same command in the foreground in a new session, detached from the
/// terminal, and return once the mount is up (or report why it failed).
fn spawn_daemon(cli: &Cli, mountpoint: &Path, opts: &[String]) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = std::env::temp_dir().join(format!("verfs-mount-{}.log", std::process::id()));
    let logf = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-s").arg(&cli.store).arg("mount").arg(mountpoint);
    for o in opts {
        cmd.arg("-o").arg(o);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    // SAFETY: setsid is async-signal-safe and has no preconditions in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if is_mountpoint(mountpoint) {
            // The log stays: the daemon reports damaged records and other trouble there.
            eprintln!(
                "verfs: mounted at {} (daemon pid {}, log {})",
                mountpoint.display(),
                child.id(),
                log.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            let msg = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            bail!(
                "{}: mount failed ({status}): {}",
                mountpoint.display(),
                msg.trim()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{}: mount did not come up within 30 s (log: {})",
                mountpoint.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount processes of this store serving `mp`, from their leases.
fn mount_pids(store: &Path, mp: &Path) -> Vec<u32> {
    let want = format!("mount {}", mp.display());
    verfs_coordination::lease::list(&store.join(verfs_engine::store::LEASE_DIR))
        .map(|entries| {
            entries
                .into_iter()
                .filter_map(|e| match e.info {
                    verfs_coordination::lease::EntryInfo::Valid(i) if i.kind == want => Some(i.pid),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn umount(cli: &Cli, mountpoint: &Path, lazy: bool) -> Result<ExitCode> {
    let canon: PathBuf =
        std::fs::canonicalize(mountpoint).or_else(|_| std::path::absolute(mountpoint))?;
    if !is_mountpoint(&canon) {
        bail!("{}: not mounted", mountpoint.display());
    }
    // The mount records its store; `-s` is needed only for mounts that could not record it.
    let store = verfs_fs::mounted_store(&canon).unwrap_or_else(|| cli.store.clone());
    let pids = mount_pids(&store, &canon);
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg(if lazy { "-uz" } else { "-u" }).arg(&canon);
    let out = cmd
        .output()
        .with_context(|| "running fusermount3 (install the fuse3 package)")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let busy = msg.contains("busy");
        bail!(
            "{}: unmount failed: {}{}",
            mountpoint.display(),
            msg.trim(),
            if busy {
                " (files are open; `verfs umount --lazy` detaches now and finishes when they close)"
            } else {
                ""
            }
        );
    }
    // Wait for the mount process to finish its final flush and release its lease, so that
    // everything written through the mount is durable when this command returns.
    let deadline = Instant::now() + Duration::from_secs(60);
    for pid in pids {
        while !verfs_coordination::lease::has_exited(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(ExitCode::SUCCESS)
}
