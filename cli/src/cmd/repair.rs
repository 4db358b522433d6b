//! `repair`: rebuild a damaged store offline and say exactly what was lost (the engine's
//! `repair` module does the work). Exit codes: 0 nothing to repair, 1 repaired without loss,
//! 2 repaired with losses (or nothing to rebuild from), 3 not run (in use, I/O error).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use verfs_engine::ops::repair::{self, Outcome, RepairError, RepairOptions};

use crate::Cli;

pub fn repair(cli: &Cli, store: Option<&Path>, dry_run: bool) -> Result<ExitCode> {
    let root = store.unwrap_or(&cli.store);
    let r = match repair::repair(root, RepairOptions { dry_run }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verfs repair: {e}");
            let code = if matches!(e, RepairError::Unrepairable { .. }) {
                2
            } else {
                3
            };
            return Ok(ExitCode::from(code));
        }
    };
    let outcome = r.outcome();
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let would = if dry_run { "would be " } else { "" };
        for d in &r.damaged_pages {
            let range = format!(
                "keys after {} up to {}",
                d.after.as_deref().unwrap_or("the first"),
                d.upto.as_deref().unwrap_or("the last")
            );
            match &d.recovered_from {
                Some(from) => println!(
                    "{} at byte {}: damaged page of the {} ({}): {range}, {would}recovered from {from}",
                    d.file.display(), d.offset, d.tree, d.reason
                ),
                None => println!(
                    "{} at byte {}: damaged page of the {} ({}): {range} {would}lost",
                    d.file.display(), d.offset, d.tree, d.reason
                ),
            }
        }
        for d in &r.damaged_log_records {
            let lsns = if d.lsns.is_empty() {
                "no transaction".to_string()
            } else {
                format!(
                    "lsn {}",
                    d.lsns
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            println!(
                "{} at byte {}: damaged log record ({}): {lsns} {would}lost, the records after it {would}applied",
                d.segment.display(), d.offset, d.reason
            );
        }
        for l in &r.losses {
            println!(
                "lost: {} (inode {}): {:?}: {}",
                l.path, l.ino, l.kind, l.detail
            );
        }
        for f in &r.fixes {
            println!("{}: {f}", if dry_run { "would fix" } else { "fixed" });
        }
        let verdict = match outcome {
            Outcome::Clean => "nothing to repair".to_string(),
            Outcome::Repaired if dry_run => "would repair without loss".into(),
            Outcome::Repaired => "repaired without loss".into(),
            Outcome::Lost => format!(
                "{} {} lost, {} log records lost",
                if dry_run {
                    "would repair;"
                } else {
                    "repaired;"
                },
                r.losses.len(),
                r.lost_lsns.len()
            ),
        };
        eprintln!(
            "verfs repair: rebuilt from checkpoint {} and {} log records up to lsn {}{}: {verdict}",
            r.base_lsn,
            r.records_applied,
            r.head_lsn,
            r.checkpoint
                .map(|c| format!(", new checkpoint {c}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::from(match outcome {
        Outcome::Clean => 0,
        Outcome::Repaired => 1,
        Outcome::Lost => 2,
    }))
}
