//! `snapshot create|list|delete|restore`, `gc`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use verfs_engine::gc::{self, GcReport};

use crate::{Cli, SnapshotCmd};

pub fn snapshot(cli: &Cli, cmd: &SnapshotCmd) -> Result<ExitCode> {
    let store = super::open(cli, "cli snapshot")?;
    match cmd {
        SnapshotCmd::Create { name } => {
            let c = store.snapshot_create(name)?;
            if cli.json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                eprintln!(
                    "verfs: snapshot {} created: {} inodes, {} bytes of metadata, barrier {} ms, written in {} ms",
                    c.name, c.inodes, c.file_bytes, c.barrier_ms, c.write_ms
                );
            }
        }
        SnapshotCmd::List => {
            let l = store.snapshot_list()?;
            if cli.json {
                println!("{}", serde_json::to_string(&l)?);
            } else {
                println!(
                    "{:<24} {:<20} {:>8} {:>14} {:>14}",
                    "NAME", "TIME", "FILES", "LOGICAL", "EXCLUSIVE"
                );
                for s in &l {
                    println!(
                        "{:<24} {:<20} {:>8} {:>14} {:>14}{}",
                        s.name,
                        utc(s.time),
                        s.files,
                        s.logical_bytes,
                        s.exclusive_bytes,
                        if s.ready { "" } else { "  (not ready)" }
                    );
                }
            }
        }
        SnapshotCmd::Delete { name } => {
            store.snapshot_delete(name)?;
            if !cli.json {
                eprintln!("verfs: snapshot {name} deleted (`verfs gc` reclaims its space)");
            }
        }
        SnapshotCmd::Restore { name, path, dest } => {
            let r = store.snapshot_restore(name, super::bytes(path), super::bytes(dest))?;
            if cli.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "verfs: restored {} of snapshot {name} to {}: {} files, {} directories, {} others, {} bytes (no data copied)",
                    path.to_string_lossy(), dest.to_string_lossy(), r.files, r.dirs, r.others, r.bytes
                );
            }
        }
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(cli: &Cli, r: &GcReport) -> Result<()> {
    if cli.json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!(
        "gc: removed {} chunks ({} bytes) from the index; {} packs rewritten, {} deleted, {} bytes reclaimed on disk; {} bytes of garbage left in {} packs; {} ms",
        r.chunks_removed,
        r.chunk_bytes_removed,
        r.packs_rewritten,
        r.packs_deleted,
        r.bytes_reclaimed,
        r.garbage_bytes_left,
        r.packs_with_garbage_left,
        r.millis
    );
    for x in &r.recovered {
        println!("gc: recovered first: {x}");
    }
    if let Some(s) = &r.stage1_skipped {
        println!("gc: stage 1 skipped: {s}");
    }
    if let Some(s) = &r.stage2_refused {
        println!("gc: pack rewrite refused: {s}");
    }
    if r.packs_busy > 0 {
        println!("gc: {} packs left to another GC worker", r.packs_busy);
    }
    for p in &r.problems {
        println!("gc: problem: {p}");
    }
    Ok(())
}

pub fn gc(cli: &Cli, worker: bool) -> Result<ExitCode> {
    let store = super::open(cli, if worker { "gc worker" } else { "cli gc" })?;
    if worker {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())?;
        }
        eprintln!(
            "verfs gc: worker started (pass every {} ms; SIGTERM or Ctrl-C stops it)",
            store.config().gc.interval_ms
        );
        gc::run_worker(&store, &stop, &mut |r| match r {
            Ok(r) => {
                let _ = print_report(cli, &r);
            }
            // A failed pass is retried at the next interval; what it did is consistent.
            Err(e) => eprintln!("verfs gc: pass failed: {e}"),
        });
        eprintln!("verfs gc: worker stopping");
        store.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    let pb = std::io::stderr().is_terminal().then(|| {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{msg:30} {bar:40} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    });
    let r = gc::run_pass(&store, &mut |what, done, total| {
        if let Some(pb) = &pb {
            pb.set_message(what.to_string());
            pb.set_length(total);
            pb.set_position(done);
        }
    });
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let r = r?;
    print_report(cli, &r)?;
    store.close()?;
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of seconds since the epoch.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let t = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        // Expected values from `date -u -d @N`.
        assert_eq!(super::utc(1_795_000_000), "2026-11-18 11:06:40");
    }
}
