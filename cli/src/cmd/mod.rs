//! One module per command group; `run` dispatches.

mod doctor;
mod fsck;
mod gc;
mod init;
mod io;
mod lock;
mod maintain;
pub mod mount;
pub mod names;
mod namespace;
mod repair;
mod snapshot;
mod status;

use std::process::ExitCode;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use verfs_engine::store::{OpenOptions, Store};

use verfs_engine::access;

use crate::{Cli, Command};

pub fn open(cli: &Cli, kind: &str) -> Result<Store> {
    tracing::debug!(store = %cli.store.display(), kind, "opening the store");
    Ok(Store::open(&cli.store, OpenOptions::new(kind))?)
}

/// Commands that only read the store or free space in it: on a nearly full disk they may use the
/// store's space reserve (see `verfs_engine::access`), so a full disk never locks the user out of
/// reading and deleting.
fn may_use_reserve(c: &Command) -> bool {
    matches!(
        c,
        Command::Get { .. }
            | Command::Cat { .. }
            | Command::Ls { .. }
            | Command::Stat { .. }
            | Command::Rm { .. }
            | Command::Status
            | Command::Recover
            | Command::Gc { .. }
            | Command::Fsck { repair: false }
            | Command::Snapshot { .. }
    )
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let reserve = may_use_reserve(&cli.command) && cli.store.join("FORMAT").is_file();
    if reserve && access::release_if_full(&cli.store) {
        tracing::warn!(
            store = %cli.store.display(),
            "the disk under the store is full: using the store's space reserve"
        );
    }
    let res = run_command(&cli);
    if reserve {
        access::refill(&cli.store);
    }
    res
}

fn run_command(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init { dir, group } => init::init(cli, dir.as_deref(), group.as_deref()),
        Command::Put { paths } => io::put(cli, paths, cli.quiet),
        Command::Get { path, local } => io::get(cli, path, local),
        Command::Cat { path } => io::cat(cli, path),
        Command::Ls {
            paths,
            long,
            quoting_style,
        } => namespace::ls(cli, paths, *long, *quoting_style),
        Command::Stat { path } => namespace::stat(cli, path),
        Command::Mkdir {
            path,
            parents,
            mode,
        } => namespace::mkdir(cli, path, *parents, mode),
        Command::Rm { path, recursive } => namespace::rm(cli, path, *recursive),
        Command::Mv { src, dst } => namespace::mv(cli, src, dst),
        Command::Ln {
            target,
            link,
            symbolic,
        } => namespace::ln(cli, target, link, *symbolic),
        Command::Status => status::status(cli),
        Command::Doctor => doctor::doctor(cli),
        Command::Lock {
            name,
            mode,
            timeout,
            cmd,
        } => lock::lock(cli, name, mode, *timeout, cmd),
        Command::Locks => lock::locks(cli),
        Command::Recover => maintain::recover(cli),
        Command::Snapshot { cmd } => snapshot::snapshot(cli, cmd),
        Command::Gc { worker } => gc::gc(cli, *worker),
        Command::Fsck { repair: false } => fsck::fsck(cli),
        Command::Fsck { repair: true } => repair::repair(cli, None, false),
        Command::Checkpoint => maintain::checkpoint(cli),
        Command::Repair { store, dry_run } => repair::repair(cli, store.as_deref(), *dry_run),
        Command::Mount {
            mountpoint,
            daemon,
            options,
        } => mount::mount(&cli.store, mountpoint, *daemon, options),
        Command::InstallMountHelper { dir, force } => mount::install_helper(dir, *force),
        Command::Umount { mountpoint, lazy } => mount::umount(cli, mountpoint, *lazy),
    }
}

/// A store path given on the command line, as the bytes the engine takes.
pub fn bytes(p: &OsStr) -> &[u8] {
    p.as_bytes()
}

/// Close the store (seal pack, release lease) after running maintenance that is due. A checkpoint
/// that finds no space is skipped with a warning: the command itself succeeded, and the next
/// command with room checkpoints.
pub fn finish(store: Store) -> Result<()> {
    match store.maintain() {
        Err(e) if verfs_fs::errno(&e).code() == libc::ENOSPC => {
            tracing::warn!(
                store = %store.layout().root.display(),
                op = "checkpoint",
                error = %e,
                "checkpoint skipped: no space"
            );
        }
        r => {
            r?;
        }
    }
    store.close()?;
    Ok(())
}
