//! `gc`: one garbage-collection pass (with a progress bar on a terminal), or a worker that runs
//! one every `[gc] interval_ms` until SIGTERM / Ctrl-C. The engine's `gc` module does the work.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use verfs_engine::ops::gc::{self, GcReport};

use crate::Cli;

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
    if let Some((spanned, live)) = r.pages_compacted {
        println!(
            "gc: metadata compacted: {live} bytes of live pages rewritten out of {spanned} bytes of page files"
        );
    }
    if r.page_files_removed > 0 {
        println!("gc: {} metadata page files removed", r.page_files_removed);
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
            Err(e) => tracing::warn!(
                store = %store.layout().root.display(),
                op = "gc",
                error = %e,
                "gc worker: pass failed (retried at the next interval)"
            ),
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
