//! One module per command group; `run` dispatches.

mod fsck;
mod io;
pub mod mount;
pub mod names;
mod namespace;
mod snapshot;
mod status;

use std::process::ExitCode;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use verfs_engine::store::{OpenOptions, Store};

use crate::{Cli, Command};

pub fn open(cli: &Cli, kind: &str) -> Result<Store> {
    Ok(Store::open(&cli.store, OpenOptions::new(kind))?)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init { dir } => {
            let dir = dir.clone().unwrap_or_else(|| cli.store.clone());
            let ff = verfs_engine::store::Store::init(&dir)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "store": dir, "version": ff.version })
                );
            } else {
                eprintln!(
                    "verfs: created store {} (format version {})",
                    dir.display(),
                    ff.version
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Put { paths, quiet } => io::put(&cli, paths, *quiet),
        Command::Get { path, local } => io::get(&cli, path, local),
        Command::Cat { path } => io::cat(&cli, path),
        Command::Ls {
            paths,
            long,
            quoting_style,
        } => namespace::ls(&cli, paths, *long, *quoting_style),
        Command::Stat { path } => namespace::stat(&cli, path),
        Command::Mkdir {
            path,
            parents,
            mode,
        } => namespace::mkdir(&cli, path, *parents, mode),
        Command::Rm { path, recursive } => namespace::rm(&cli, path, *recursive),
        Command::Mv { src, dst } => namespace::mv(&cli, src, dst),
        Command::Ln {
            target,
            link,
            symbolic,
        } => namespace::ln(&cli, target, link, *symbolic),
        Command::Status => status::status(&cli),
        Command::Recover => fsck::recover(&cli),
        Command::Snapshot { cmd } => snapshot::snapshot(&cli, cmd),
        Command::Gc { worker } => snapshot::gc(&cli, *worker),
        Command::Fsck => fsck::fsck(&cli),
        Command::Checkpoint => fsck::checkpoint(&cli),
        Command::Mount {
            mountpoint,
            daemon,
            options,
        } => mount::mount(&cli.store, mountpoint, *daemon, options),
        Command::InstallMountHelper { dir, force } => mount::install_helper(dir, *force),
        Command::Umount { mountpoint, lazy } => mount::umount(&cli, mountpoint, *lazy),
    }
}

/// A store path given on the command line, as the bytes the engine takes.
pub fn bytes(p: &OsStr) -> &[u8] {
    p.as_bytes()
}

/// Close the store (seal pack, release lease) after running maintenance that is due.
pub fn finish(store: Store) -> Result<()> {
    store.maintain()?;
    store.close()?;
    Ok(())
}
