//! `status`: live processes, logical vs stored bytes, dedup and compression ratios.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use verfs_coordination::lease::{self, EntryInfo, LeaseState};
use verfs_engine::meta::FileKind;

use crate::Cli;

pub fn status(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli status")?;
    let lcfg = store.config().lease_config();
    let (files, dirs, logical, unique, chunks, lsn) = store.read(|s| {
        let mut logical = 0u64;
        let mut files = 0u64;
        let mut dirs = 0u64;
        for i in s.inodes.values() {
            match i.kind {
                FileKind::File => {
                    files += 1;
                    logical += i.size;
                }
                FileKind::Dir => dirs += 1,
                _ => {}
            }
        }
        let unique: u64 = s
            .referenced_chunks()
            .iter()
            .filter_map(|c| s.chunks.get(c))
            .map(|c| c.raw_len as u64)
            .sum();
        (
            files,
            dirs,
            logical,
            unique,
            s.chunks.len(),
            store.log().applied_lsn(),
        )
    })?;
    let mut stored = 0u64;
    for e in std::fs::read_dir(store.layout().packs())?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".pack") {
            stored += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let now = SystemTime::now();
    let mut procs = Vec::new();
    for e in lease::list(&store.layout().leases())? {
        if e.state != LeaseState::Live {
            continue;
        }
        let live = !e.liveness(&lcfg, now).is_dead();
        let (pid, host, kind) = match &e.info {
            EntryInfo::Valid(i) => (i.pid, i.host.clone(), i.kind.clone()),
            _ => (0, String::new(), String::from("?")),
        };
        let me = e.id == *store.lease().id();
        procs.push(serde_json::json!({
            "lease": e.id.to_string(), "pid": pid, "host": host, "kind": kind,
            "state": if live { "live" } else { "dead" }, "self": me,
        }));
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let v = serde_json::json!({
        "store": store.layout().root, "lsn": lsn.0, "files": files, "directories": dirs,
        "logical_bytes": logical, "unique_bytes": unique, "stored_bytes": stored, "chunks": chunks,
        "dedup_ratio": ratio(logical, unique), "compression_ratio": ratio(unique, stored),
        "processes": procs,
    });
    if cli.json {
        println!("{v}");
    } else {
        println!("store:        {}", store.layout().root.display());
        println!("log head:     lsn {}", lsn.0);
        println!("files:        {files} in {dirs} directories");
        println!("logical:      {logical} bytes");
        println!(
            "unique:       {unique} bytes in {chunks} chunks (dedup ratio {:.2})",
            ratio(logical, unique)
        );
        println!(
            "stored:       {stored} bytes in packs (compression ratio {:.2})",
            ratio(unique, stored)
        );
        println!("processes:");
        for p in v["processes"].as_array().into_iter().flatten() {
            println!(
                "  {} pid {} on {} ({}) {}{}",
                p["lease"].as_str().unwrap_or(""),
                p["pid"],
                p["host"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or(""),
                if p["self"].as_bool() == Some(true) {
                    " (this command)"
                } else {
                    ""
                }
            );
        }
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}
