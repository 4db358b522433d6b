//! `recover`, `checkpoint`: the maintenance commands that change the store without changing its
//! contents (clean up after dead processes; write a checkpoint and drop the log it covers).

use std::process::ExitCode;

use anyhow::Result;

use crate::Cli;

pub fn recover(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli recover")?;
    let r = verfs_engine::ops::recover::recover(&store)?;
    store.close()?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for (id, why) in &r.leases_cleaned {
            println!("cleaned up after dead process {id}: {why}");
        }
        for (id, cut) in &r.packs_sealed {
            match cut {
                Some(len) => println!("sealed pack {id} (cut torn tail at byte {len})"),
                None => println!("sealed pack {id}"),
            }
        }
        if r.manifests_rolled_forward + r.manifests_rolled_back > 0 {
            println!(
                "manifests: {} rolled forward, {} rolled back",
                r.manifests_rolled_forward, r.manifests_rolled_back
            );
        }
        for t in &r.two_phase_decided {
            println!("two-phase commit settled: {t}");
        }
        if r.orphans_deleted > 0 {
            println!(
                "deleted {} unlinked-but-open files of dead processes",
                r.orphans_deleted
            );
        }
        for n in &r.snapshots_dropped {
            println!("dropped snapshot {n} (its creator died before it was complete)");
        }
        for p in &r.gc_rewrites_interrupted {
            println!("GC rewrite of pack {p} was interrupted (its manifest is settled above)");
        }
        for (f, at) in &r.discard_tails_cut {
            println!("cut the torn tail of packs/{f} at byte {at}");
        }
        if r.stale_files_removed > 0 {
            println!("removed {} stale snapshot/GC files", r.stale_files_removed);
        }
        for t in &r.temp_files_removed {
            println!("removed temp file {t}");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
        if r.leases_cleaned.is_empty()
            && r.problems.is_empty()
            && r.temp_files_removed.is_empty()
            && r.manifests_rolled_back + r.manifests_rolled_forward == 0
            && r.two_phase_decided.is_empty()
            && r.snapshots_dropped.is_empty()
            && r.discard_tails_cut.is_empty()
            && r.stale_files_removed == 0
        {
            eprintln!("verfs recover: nothing to do");
        }
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn checkpoint(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli checkpoint")?;
    let lsn = store.checkpoint_and_truncate()?;
    store.close()?;
    if cli.json {
        println!("{}", serde_json::json!({ "checkpoint_lsn": lsn.0 }));
    } else {
        eprintln!("verfs: checkpoint at lsn {}", lsn.0);
    }
    Ok(ExitCode::SUCCESS)
}
