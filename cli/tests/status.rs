//! `verfs status` reports the data plane's counters (data-layout.md 5.11): after two puts of the
//! same tree and a read, the dedup, compressed and caches lines carry non-zero numbers, and
//! `--json` has `counters` (the store's `stats.json`, summed over every process that closed)
//! and `rates` that agree with them.
#![allow(clippy::unwrap_used)]

use std::fs;

use verfs_engine::chunker::{Chunker, ChunkerParams};
use verfs_test_support::cli::{new_store, ok};
use verfs_test_support::{noise, text};

/// The unsigned integers of `line`, in order (a `12.5%` gives 12 and 5).
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

#[test]
fn status_reports_dedup_compression_and_cache_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), text(1, 300_000)).unwrap();
    fs::write(src.join("sub/b.txt"), text(9, 120_000)).unwrap();
    fs::write(src.join("sub/c.bin"), noise(3, 200_000)).unwrap();
    fs::write(src.join("copy.txt"), text(1, 300_000)).unwrap();
    let t = src.to_str().unwrap();
    ok(&store, &["put", t, "/one"]);
    ok(&store, &["put", t, "/two"]);
    // A read, so the caches have lookups (`cat` decodes through the chunk cache, readahead on).
    let cat = ok(&store, &["cat", "/two/a.txt"]);
    assert!(cat.stdout == text(1, 300_000));

    let out = String::from_utf8(ok(&store, &["status"]).stdout).unwrap();
    let dedup = line(&out, "dedup:");
    let n = numbers(dedup);
    assert!(n.len() >= 2 && n[0] > 0 && n[1] > 0, "{dedup}");
    assert!(dedup.contains('%') && !dedup.contains("(-"), "{dedup}");
    let compressed = line(&out, "compressed:");
    let n = numbers(compressed);
    // new chunks, bytes in, bytes stored, ratio (2 numbers), stored raw
    assert!(
        n.len() >= 3 && n[0] > 0 && n[1] > 0 && n[2] > 0,
        "{compressed}"
    );
    assert!(n[2] < n[1], "text should compress: {compressed}");
    let caches = line(&out, "caches:");
    assert!(
        caches.contains("chunks ") && caches.contains("pack readers "),
        "{caches}"
    );
    let lookups: Vec<u64> = caches
        .split(" of ")
        .skip(1)
        .map(|r| numbers(r).first().copied().unwrap_or(0))
        .collect();
    assert!(
        lookups.len() == 3 && lookups[0] > 0 && lookups[1] > 0,
        "chunk and pack reader lookups should be counted: {caches}"
    );

    let v: serde_json::Value =
        serde_json::from_slice(&ok(&store, &["status", "--json"]).stdout).unwrap();
    let c = &v["counters"];
    let get = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("counters.{k} missing: {v}"))
    };
    assert!(get("chunks_new") > 0, "{v}");
    assert!(get("chunks_dedup") > 0, "{v}");
    assert!(get("bytes_stored") < get("bytes_in"), "{v}");
    assert!(
        get("chunk_cache_hits") + get("chunk_cache_misses") > 0,
        "{v}"
    );
    // The second put found every chunk of the tree stored: at least as many hits as new chunks.
    let rate = v["rates"]["dedup_hit_rate"].as_f64().unwrap();
    assert!((0.5..1.0).contains(&rate), "dedup_hit_rate {rate}: {v}");
    let want = get("chunks_dedup") as f64 / (get("chunks_dedup") + get("chunks_new")) as f64;
    assert!((rate - want).abs() < 1e-9, "{rate} vs {want}: {v}");
    let ratio = v["rates"]["compression_ratio_new"].as_f64().unwrap();
    assert!(ratio > 1.0, "{v}");
    // The human lines show the same counters.
    assert!(
        dedup.starts_with(&format!("dedup:        {} chunk hits", get("chunks_dedup"))),
        "{dedup} vs {v}"
    );
    // The store's figures against numbers this test computes from what it put (the cut points
    // come from the engine's chunker, which tests/golden_chunks.rs pins to an independent
    // oracle): two copies of a tree of 4 files in 2 directories (plus the root), a.txt and
    // copy.txt identical.
    let tree: Vec<Vec<u8>> = ["a.txt", "sub/b.txt", "sub/c.bin", "copy.txt"]
        .iter()
        .map(|p| fs::read(src.join(p)).unwrap())
        .collect();
    let tree_bytes: u64 = tree.iter().map(|b| b.len() as u64).sum();
    let mut distinct = std::collections::BTreeMap::new();
    let mut tree_chunks = 0u64;
    for b in &tree {
        for c in Chunker::new(&b[..], ChunkerParams::default()).unwrap() {
            let c = c.unwrap();
            distinct.insert(c.id, c.data.len() as u64);
            tree_chunks += 1;
        }
    }
    let unique: u64 = distinct.values().sum();
    let packs: u64 = fs::read_dir(store.join("packs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let figure = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {v}"));
    assert_eq!(figure("files"), 8, "{v}");
    assert_eq!(figure("directories"), 5, "{v}");
    assert_eq!(figure("logical_bytes"), 2 * tree_bytes, "{v}");
    assert_eq!(figure("unique_bytes"), unique, "{v}");
    assert_eq!(figure("chunks"), distinct.len() as u64, "{v}");
    assert_eq!(figure("stored_bytes"), packs, "{v}");
    // Every chunk looked up once per put: new the first time its id is seen, a hit after that.
    assert_eq!(get("chunks_new"), distinct.len() as u64, "{v}");
    assert_eq!(
        get("chunks_new") + get("chunks_dedup"),
        2 * tree_chunks,
        "{v}"
    );
    assert_eq!(get("bytes_in"), unique, "{v}");
    assert_eq!(get("bytes_in") + get("bytes_dedup"), 2 * tree_bytes, "{v}");
    assert!(
        out.contains(&format!(
            "files:        8 in 5 directories\nlogical:      {} bytes\n",
            2 * tree_bytes
        )),
        "{out}"
    );
    // No process is live: the totals are the store's stats.json.
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("stats.json")).unwrap()).unwrap();
    for k in ["chunks_new", "chunks_dedup", "bytes_in", "bytes_stored"] {
        assert_eq!(file[k], c[k], "{k}: stats.json {file} vs status {v}");
    }
}

/// The lease of a process that runs on another node (`VERFS_NODE`), as `status` sees it.
fn worker_seen_from(store: &std::path::Path, node: &str) -> serde_json::Value {
    let out = verfs_test_support::cli::verfs(store)
        .env("VERFS_NODE", node)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "gc worker")
        .cloned()
        .unwrap_or_else(|| panic!("no gc worker in {v}"))
}

// [LEASE-5]: leases record their node, `status` groups processes by it, and a process of another
// node is judged by its heartbeat only: its pid means nothing there, even on this very kernel.
#[test]
fn status_groups_processes_by_node_and_judges_other_nodes_by_heartbeat() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let mut worker = verfs_test_support::cli::verfs(&store)
        .env("VERFS_NODE", "node-b")
        .args(["gc", "--worker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::read_dir(store.join("leases")).unwrap().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker took no lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let w = worker_seen_from(&store, "node-a");
    assert_eq!(w["node"], "node-b", "{w}");
    assert_eq!(w["state"], "live", "{w}");
    let out = verfs_test_support::cli::verfs(&store)
        .env("VERFS_NODE", "node-a")
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  node node-a: 1 of 1 live"), "{text}");
    assert!(text.contains("  node node-b: 1 of 1 live"), "{text}");

    worker.kill().unwrap();
    worker.wait().unwrap();
    // Its own node sees the pid gone at once; another node waits for the heartbeat to age.
    assert_eq!(worker_seen_from(&store, "node-b")["state"], "dead");
    assert_eq!(worker_seen_from(&store, "node-a")["state"], "live");
}
