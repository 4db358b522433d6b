//! `fsck`: check every invariant and checksum of the store (read-only; the engine's `fsck`
//! module does the work) and list each problem.

use std::process::ExitCode;

use anyhow::Result;

use crate::Cli;

pub fn fsck(cli: &Cli) -> Result<ExitCode> {
    let r = verfs_engine::ops::fsck::fsck(&cli.store)?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for p in &r.problems {
            println!("{}: {}", p.location, p.message);
        }
        eprintln!(
            "verfs fsck: {} log records in {} segments, {} checkpoints, {} packs ({} records), {} inodes, {} chunks, {} metadata pages in {} files: {}",
            r.log_records,
            r.segments,
            r.checkpoints,
            r.packs,
            r.pack_records,
            r.inodes,
            r.chunks,
            r.pages,
            r.page_files,
            if r.is_clean() { "clean".to_string() } else { format!("{} problems", r.problems.len()) }
        );
    }
    Ok(if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
