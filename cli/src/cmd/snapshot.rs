//! `snapshot create|list|delete|restore|diff`.

use std::process::ExitCode;

use anyhow::Result;

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
        SnapshotCmd::Diff { a, b } => {
            let changes = store.snapshot_diff(a, b)?;
            if cli.json {
                println!("{}", serde_json::to_string(&changes)?);
            } else {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for c in &changes {
                    writeln!(out, "{} {}", c.kind.letter(), c.path)?;
                }
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
