//! `put`, `get`, `cat`.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use verfs_engine::error::Error;
use verfs_engine::ops::transfer;
use verfs_engine::store::{Store, TransferReport};

use super::bytes;
use crate::Cli;

fn progress_bar(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(pb)
}

fn local_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| local_size(&e.path())).sum())
            .unwrap_or(0)
    } else if m.is_file() {
        m.len()
    } else {
        0
    }
}

pub fn put(cli: &Cli, paths: &[OsString], quiet: bool) -> Result<ExitCode> {
    let (dest, sources) = paths
        .split_last()
        .ok_or_else(|| anyhow::anyhow!("put needs LOCAL... DEST"))?;
    let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
    for s in &sources {
        // Fail before taking a lease: a clear message for the common mistake.
        std::fs::symlink_metadata(s).map_err(|e| anyhow::anyhow!("{}: {e}", s.display()))?;
    }
    if cli.store == std::path::Path::new(crate::DEFAULT_STORE) && !cli.store.exists() {
        // The embedded default: `verfs put DIR /x` works with no set-up at all.
        verfs_engine::store::Store::init(&cli.store)?;
        eprintln!("verfs: created store {}", cli.store.display());
    }
    let store = super::open(cli, "cli put")?;
    // The total is only for the progress bar: without a terminal, no second walk of the tree.
    let total = std::io::stderr()
        .is_terminal()
        .then(|| sources.iter().map(|s| local_size(s)).sum());
    let before = store.stats().snapshot();
    let t0 = Instant::now();
    let summary = |store: &Store, r: &TransferReport| {
        // What this put added to the packs (compressed), from this process's own counters.
        let stored = store.stats().snapshot().bytes_stored - before.bytes_stored;
        (!quiet).then(|| put_summary(r, stored, t0.elapsed()))
    };
    with_progress(cli, store, total, summary, |store, tick| {
        transfer::put(store, &sources, bytes(dest), tick)
    })
}

/// The one line a successful `put` prints (as restic's backup summary): what was copied, how
/// much of it was new, what that took in the packs, and how long it took.
fn put_summary(r: &TransferReport, stored: u64, took: Duration) -> String {
    format!(
        "verfs: put {} files, {} directories, {} symlinks, {} bytes: {} bytes new in {} chunks, {} chunks already stored (dedup), {} bytes added to the store, {:.2} s",
        r.files,
        r.dirs,
        r.symlinks,
        r.bytes,
        r.new_chunk_bytes,
        r.new_chunks,
        r.dedup_chunks,
        stored,
        took.as_secs_f64()
    )
}

/// Run a transfer with a progress bar on a terminal, close the store, print the report as JSON
/// (or `summary`'s line on stderr).
fn with_progress(
    cli: &Cli,
    store: Store,
    total: Option<u64>,
    summary: impl FnOnce(&Store, &TransferReport) -> Option<String>,
    run: impl FnOnce(&Store, &mut dyn FnMut(u64)) -> Result<TransferReport, Error>,
) -> Result<ExitCode> {
    let pb = progress_bar(total);
    let mut tick = |n: u64| {
        if let Some(pb) = &pb {
            pb.inc(n)
        }
    };
    let report = run(&store, &mut tick)?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let line = summary(&store, &report);
    super::finish(store)?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if let Some(line) = line {
        eprintln!("{line}");
    }
    // Like `cp -r`: every entry that could not be copied is named, the rest was copied, and the
    // exit status says that something failed.
    for e in &report.errors {
        eprintln!("verfs: {e}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn get(cli: &Cli, path: &OsStr, local: &Path) -> Result<ExitCode> {
    let store = super::open(cli, "cli get")?;
    with_progress(
        cli,
        store,
        None,
        |_, _| None,
        |store, tick| transfer::get(store, bytes(path), local, tick),
    )
}

pub fn cat(cli: &Cli, path: &OsStr) -> Result<ExitCode> {
    let store = super::open(cli, "cli cat")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match store.cat(bytes(path), &mut out) {
        Ok(()) => {}
        // `verfs cat f | head` closes the pipe early: not an error.
        Err(verfs_engine::error::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(ExitCode::SUCCESS)
        }
        Err(e) => return Err(e.into()),
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    drop(out);
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}
