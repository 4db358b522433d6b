//! `status`: live processes, logical vs stored bytes, dedup and compression ratios, and the
//! data plane's counters (dedup hits, bytes compressed and stored, cache hit rates). The engine
//! computes them ([`StoreStatus::gather`]); this module only formats them.

use std::process::ExitCode;

use anyhow::Result;
use verfs_engine::ops::status::{ratio, StoreStatus};

use crate::Cli;

pub fn status(cli: &Cli) -> Result<ExitCode> {
    let store = super::open(cli, "cli status")?;
    let st = StoreStatus::gather(&store)?;
    if cli.json {
        println!("{}", json(&st));
    } else {
        print_text(&st);
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

fn json(st: &StoreStatus) -> serde_json::Value {
    let procs: Vec<serde_json::Value> = st
        .processes
        .iter()
        .map(|p| {
            serde_json::json!({
                "lease": p.lease.to_string(), "pid": p.pid, "node": p.node, "host": p.host,
                "kind": p.kind,
                "state": if p.alive { "live" } else { "dead" }, "self": p.is_self,
                "counters": p.counters,
            })
        })
        .collect();
    let r = st.rates();
    serde_json::json!({
        "store": st.root, "lsn": st.lsn, "files": st.files, "directories": st.directories,
        "logical_bytes": st.logical_bytes, "unique_bytes": st.unique_bytes,
        "stored_bytes": st.stored_bytes, "chunks": st.chunks,
        "dedup_ratio": st.dedup_ratio(), "compression_ratio": st.compression_ratio(),
        "processes": procs,
        "counters": st.counters,
        "rates": {
            "dedup_hit_rate": r.dedup_hit_rate,
            "compression_ratio_new": r.compression_ratio_new,
            "chunk_cache_hit_rate": r.chunk_cache_hit_rate,
            "reader_cache_hit_rate": r.reader_cache_hit_rate,
            "snapshot_cache_hit_rate": r.snapshot_cache_hit_rate,
        },
    })
}

fn print_text(st: &StoreStatus) {
    let pct = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let r = st.rates();
    println!("store:        {}", st.root.display());
    println!("log head:     lsn {}", st.lsn);
    println!(
        "files:        {} in {} directories",
        st.files, st.directories
    );
    println!("logical:      {} bytes", st.logical_bytes);
    println!(
        "unique:       {} bytes in {} chunks (dedup ratio {:.2})",
        st.unique_bytes,
        st.chunks,
        st.dedup_ratio()
    );
    println!(
        "stored:       {} bytes in packs (compression ratio {:.2})",
        st.stored_bytes,
        st.compression_ratio()
    );
    let t = &st.counters;
    println!(
        "dedup:        {} chunk hits, {} bytes not stored again ({} of chunk lookups)",
        t.chunks_dedup,
        t.bytes_dedup,
        pct(r.dedup_hit_rate)
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
        pct(r.chunk_cache_hit_rate),
        t.chunk_cache_hits + t.chunk_cache_misses,
        pct(r.reader_cache_hit_rate),
        t.reader_cache_hits + t.reader_cache_misses,
        pct(r.snapshot_cache_hit_rate),
        t.snapshot_cache_hits + t.snapshot_cache_misses,
        t.readahead_chunks
    );
    println!("              (since init: processes that closed cleanly, plus live ones now)");
    // Grouped by node: a node whose processes all stopped heartbeating is dead as a whole.
    let mut nodes: Vec<&str> = st.processes.iter().map(|p| p.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    println!("processes:");
    for node in nodes {
        let procs: Vec<_> = st.processes.iter().filter(|p| p.node == node).collect();
        let live = procs.iter().filter(|p| p.alive).count();
        println!(
            "  node {node}: {live} of {} live{}",
            procs.len(),
            if live == 0 { " (node dead)" } else { "" }
        );
        for p in procs {
            println!(
                "    {} pid {} on {} ({}) {}{}",
                p.lease,
                p.pid,
                p.host,
                p.kind,
                if p.alive { "live" } else { "dead" },
                if p.is_self { " (this command)" } else { "" }
            );
        }
    }
}
