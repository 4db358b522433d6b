//! `mount`, `umount`.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use verfs_engine::ops::status;
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

pub fn mount(store: &Path, mountpoint: &Path, daemon: bool, opts: &[String]) -> Result<ExitCode> {
    verfs_fs::check_mountpoint(mountpoint)?;
    // The options are checked (and warned about) before a daemon is started, so that a mistake
    // is reported on this terminal, not only in the daemon's log.
    let layout = verfs_engine::store::Layout::new(store);
    layout.check()?;
    let store_cfg = verfs_engine::config::Config::load(&layout.config())?;
    let cfg = mount_config(&store_cfg, opts)?;
    if cfg.allow_other && !cfg.default_permissions {
        eprintln!(
            "verfs mount: WARNING: allow_other without default_permissions: the kernel checks no \
             permissions, so every local user can read and write every file of this mount"
        );
    }
    if daemon {
        return spawn_daemon(store, mountpoint, opts);
    }
    let canon = std::fs::canonicalize(mountpoint)?;
    let mut open = verfs_engine::store::OpenOptions::new(&format!("mount {}", canon.display()));
    open.probe_filesystem = true;
    let fenced_mp = canon.clone();
    let fenced_store = store.to_path_buf();
    open.on_fenced = Some(Box::new(move || {
        // Exiting without detaching would leave a dead endpoint (ENOTCONN for every process
        // that touches the mountpoint) until someone unmounts it by hand.
        tracing::error!(
            store = %fenced_store.display(),
            path = %fenced_mp.display(),
            op = "mount",
            "fenced: another process declared this one dead and cleaned up after it, or it \
             fenced itself (see above); unmounting and exiting without touching the store"
        );
        verfs_fs::detach(&fenced_mp);
        std::process::exit(75);
    }));
    let opened = verfs_engine::store::Store::open(store, open)?;
    verfs_fs::mount(opened, &canon, &cfg, || {
        eprintln!(
            "verfs: mounted {} at {} (Ctrl-C or `verfs umount` to unmount)",
            store.display(),
            canon.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--daemon`: run the same command in the foreground in a new session, detached from the
/// terminal, and return once the mount is up (or report why it failed).
fn spawn_daemon(store: &Path, mountpoint: &Path, opts: &[String]) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = std::env::temp_dir().join(format!("verfs-mount-{}.log", std::process::id()));
    let logf = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-s").arg(store).arg("mount").arg(mountpoint);
    for o in opts {
        cmd.arg("-o").arg(o);
    }
    // The daemon logs as this process would: same filter, into its log file.
    cmd.env("RUST_LOG", crate::logging::directives_in_force());
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
    status::lease_holders(store)
        .map(|holders| {
            holders
                .into_iter()
                .filter_map(|h| h.info.filter(|i| i.kind == want).map(|i| i.pid))
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
    unmount(&canon, lazy).map_err(|msg| {
        let busy = msg.contains("busy");
        anyhow::anyhow!(
            "{}: unmount failed: {msg}{}",
            mountpoint.display(),
            if busy {
                " (files are open; `verfs umount --lazy` detaches now and finishes when they close)"
            } else {
                ""
            }
        )
    })?;
    // Wait for the mount process to finish its final flush and release its lease, so that
    // everything written through the mount is durable when this command returns.
    let deadline = Instant::now() + Duration::from_secs(60);
    for pid in pids {
        while !status::has_exited(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unmount `mp`: as root with umount2(2) itself (no fusermount3 needed), else with `fusermount3
/// -u` (the setuid helper that lets a user unmount their own FUSE mount).
fn unmount(mp: &Path, lazy: bool) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(mp.as_os_str().as_bytes())
            .map_err(|_| "the path contains a NUL byte".to_string())?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // EPERM as root: e.g. in a user namespace without the mount's privileges; fusermount3
        // may still be allowed to.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(if e.raw_os_error() == Some(libc::EBUSY) {
                "Device or resource busy".into()
            } else {
                e.to_string()
            });
        }
    }
    let out = std::process::Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg(mp)
        .output()
        .map_err(|e| format!("running fusermount3: {e} (install the fuse3 package)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The name mount(8) runs for filesystem type `fuse.verfs` (`mount -t fuse.verfs STORE MP`, or
/// an /etc/fstab line `STORE MP fuse.verfs OPTS 0 0`). mount(8) looks for it in /sbin.
pub const MOUNT_HELPER: &str = "mount.fuse.verfs";

/// Options mount(8) and fstab pass that are about mount(8) itself, not the filesystem.
fn is_mount8_option(o: &str) -> bool {
    matches!(
        o,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "loud"
            | "silent"
    ) || o.starts_with("x-")
        || o.starts_with("comment=")
}

/// Run as `mount.fuse.verfs STORE MOUNTPOINT [-o OPTS] [-s] [-f] [-n] [-v] [-N NS] [-t TYPE]`
/// (the mount helper protocol of mount(8)): mount as `verfs -s STORE mount -d -o OPTS MOUNTPOINT`
/// does, returning once the mount is up.
pub fn helper(args: &[std::ffi::OsString]) -> Result<ExitCode> {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let o = it.next().context("-o needs a value")?;
                let o = o.to_str().context("mount options must be UTF-8")?;
                let kept: Vec<&str> = o
                    .split(',')
                    .filter(|o| !o.is_empty() && !is_mount8_option(o))
                    .collect();
                opts.push(kept.join(","));
            }
            // -s sloppy, -f fake, -n no mtab, -v verbose: nothing for verfs to do.
            Some("-s" | "-f" | "-n" | "-v") => {}
            Some("-N" | "-t") => {
                it.next();
            }
            Some(f) if f.starts_with('-') => bail!("{MOUNT_HELPER}: unknown flag {f}"),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [store, mp] = pos.as_slice() else {
        bail!("usage: {MOUNT_HELPER} STORE MOUNTPOINT [-o OPTIONS]");
    };
    mount(store, mp, true, &opts)
}

/// `verfs install-mount-helper [--dir DIR]`: DIR/mount.fuse.verfs as a symlink to this binary.
pub fn install_helper(dir: &Path, force: bool) -> Result<ExitCode> {
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    let link = dir.join(MOUNT_HELPER);
    match std::fs::read_link(&link) {
        Ok(old) if old == exe => {
            eprintln!(
                "verfs: {} already points to {}",
                link.display(),
                exe.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Ok(old) if !force => bail!(
            "{}: exists and points to {} (--force replaces it)",
            link.display(),
            old.display()
        ),
        Ok(_) => std::fs::remove_file(&link).with_context(|| format!("{}", link.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if !force => bail!(
            "{}: exists and is not a symlink (--force replaces it)",
            link.display()
        ),
        Err(_) => std::fs::remove_file(&link).with_context(|| format!("{}", link.display()))?,
    }
    std::os::unix::fs::symlink(&exe, &link).with_context(|| format!("{}", link.display()))?;
    eprintln!(
        "verfs: installed {} -> {} (`mount -t fuse.verfs STORE MOUNTPOINT` and fstab type fuse.verfs now work)",
        link.display(),
        exe.display()
    );
    Ok(ExitCode::SUCCESS)
}
