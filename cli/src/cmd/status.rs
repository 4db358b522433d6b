//! `status`: live processes, logical vs stored bytes, dedup and compression ratios, and the
//! data plane's counters (dedup hits, bytes compressed and stored, cache hit rates): the store's
//! `stats.json` plus what every live process last published in its lease folder.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use verfs_coordination::lease::{self, EntryInfo, LeaseState};
use verfs_engine::meta::FileKind;

use crate::Cli;

pub fn status(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli status")?;
    let lcfg = store.config().lease_config();
    // The closure gets the view and its lsn; it must not call back into the store or its log.
    let (files, dirs, logical, unique, chunks, lsn) = store.log().read(|s, lsn| {
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
        (files, dirs, logical, unique, s.chunks.len(), lsn)
    })?;
    let mut stored = 0u64;
    for e in std::fs::read_dir(store.layout().packs())?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".pack") {
            stored += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let now = SystemTime::now();
    let mut procs = Vec::new();
    // Every process that closed cleanly, plus the live ones' latest published counters.
    let mut totals = verfs_engine::pipeline::read_store_stats(&store.layout().root);
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
        let counters = verfs_engine::pipeline::read_published(&e.path).unwrap_or_default();
        if live && !me {
            totals.add(&counters);
        }
        procs.push(serde_json::json!({
            "lease": e.id.to_string(), "pid": pid, "host": host, "kind": kind,
            "state": if live { "live" } else { "dead" }, "self": me,
            "counters": counters,
        }));
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    // hits / (hits + misses); null before the first lookup.
    let rate =
        |hits: u64, misses: u64| (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
    let pct = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let v = serde_json::json!({
        "store": store.layout().root, "lsn": lsn.0, "files": files, "directories": dirs,
        "logical_bytes": logical, "unique_bytes": unique, "stored_bytes": stored, "chunks": chunks,
        "dedup_ratio": ratio(logical, unique), "compression_ratio": ratio(unique, stored),
        "processes": procs,
        "counters": totals,
        "rates": {
            "dedup_hit_rate": rate(totals.chunks_dedup, totals.chunks_new),
            "compression_ratio_new": ratio(totals.bytes_in, totals.bytes_stored),
            "chunk_cache_hit_rate": rate(totals.chunk_cache_hits, totals.chunk_cache_misses),
            "reader_cache_hit_rate": rate(totals.reader_cache_hits, totals.reader_cache_misses),
            "snapshot_cache_hit_rate": rate(totals.snapshot_cache_hits, totals.snapshot_cache_misses),
        },
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
        let t = &totals;
        println!(
            "dedup:        {} chunk hits, {} bytes not stored again ({} of chunk lookups)",
            t.chunks_dedup,
            t.bytes_dedup,
            pct(rate(t.chunks_dedup, t.chunks_new))
        );
        println!(
            "compressed:   {} new chunks, {} bytes in -> {} bytes stored (ratio {:.2}; {} stored raw)",
            t.chunks_new,
            t.bytes_in,
            t.bytes_stored,
            ratio(t.bytes_in, t.bytes_stored),
            t.chunks_raw
        );
        println!(
            "caches:       chunks {} of {}, pack readers {} of {}, snapshot trees {} of {}; {} chunks read ahead",
            pct(rate(t.chunk_cache_hits, t.chunk_cache_misses)),
            t.chunk_cache_hits + t.chunk_cache_misses,
            pct(rate(t.reader_cache_hits, t.reader_cache_misses)),
            t.reader_cache_hits + t.reader_cache_misses,
            pct(rate(t.snapshot_cache_hits, t.snapshot_cache_misses)),
            t.snapshot_cache_hits + t.snapshot_cache_misses,
            t.readahead_chunks
        );
        println!("              (since init: processes that closed cleanly, plus live ones now)");
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
