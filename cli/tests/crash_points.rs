//! A snapshot or a GC pass that dies at each of its crash points (`VERFS_CRASH_POINT` aborts the
//! process there, leaving what a SIGKILL leaves) is finished or undone by `verfs recover`; nothing
//! referenced is lost, `fsck` is clean, and the next GC pass reclaims the space.
//!
//! proves [SNAP-3] [GC-8] (data-layout.md 8, crash points S3-S4 and G1-G4)
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use verfs_test_support::cli::{ok, verfs};
use verfs_test_support::{noise, packs_bytes, sha256};

fn crash(store: &Path, point: &str, args: &[&str]) {
    let o = verfs(store)
        .env("VERFS_CRASH_POINT", point)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(&format!("VERFS_CRASH_POINT={point}")),
        "{point}: expected to die there, got {:?}: {err}",
        o.status
    );
}

/// A store with `keep/` (kept) and `drop/` (deleted before GC), 1 MiB packs so that `drop/`
/// fills packs of its own; returns the store and the sha256 of each kept file.
fn fixture(tmp: &Path) -> (PathBuf, Vec<(String, String)>) {
    let store = tmp.join("st");
    ok(&store, &["init"]);
    let cfg = fs::read_to_string(store.join("config.toml"))
        .unwrap()
        .replace("target_size = 67108864", "target_size = 1048576");
    fs::write(store.join("config.toml"), cfg).unwrap();
    ok(&store, &["mkdir", "-p", "/src"]);
    let src = tmp.join("src");
    let mut kept = Vec::new();
    for (dir, seed) in [("keep", 1u64), ("drop", 100)] {
        fs::create_dir_all(src.join(dir)).unwrap();
        for i in 0..4 {
            let data = noise(seed + i, 700_000);
            fs::write(src.join(dir).join(format!("f{i}")), &data).unwrap();
            if dir == "keep" {
                kept.push((format!("/src/keep/f{i}"), sha256(&data)));
            }
        }
        ok(
            &store,
            &[
                "put",
                src.join(dir).to_str().unwrap(),
                &format!("/src/{dir}"),
            ],
        );
    }
    (store, kept)
}

fn check(store: &Path, kept: &[(String, String)]) {
    for (p, h) in kept {
        let o = ok(store, &["cat", p]);
        assert_eq!(&sha256(&o.stdout), h, "{p}");
    }
    let f = verfs(store).arg("fsck").output().unwrap();
    assert!(
        f.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&f.stdout),
        String::from_utf8_lossy(&f.stderr)
    );
}

fn recover(store: &Path) -> serde_json::Value {
    let o = ok(store, &["--json", "recover"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn snapshot_creator_dies_before_ready() {
    for point in ["snapshot-begun", "snapshot-written"] {
        let tmp = tempfile::tempdir().unwrap();
        let (store, kept) = fixture(tmp.path());
        let page_files = |store: &Path| -> std::collections::BTreeSet<String> {
            fs::read_dir(store.join("meta"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let before = page_files(&store);
        crash(&store, point, &["snapshot", "create", "s1"]);
        // Not ready: not readable.
        let o = verfs(&store)
            .args(["ls", "/.snapshots/s1"])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point}");
        if point == "snapshot-begun" {
            let r = recover(&store);
            assert_eq!(
                r["snapshots_dropped"],
                serde_json::json!(["s1"]),
                "{point}: {r}"
            );
        } else {
            // [GC-8]: a GC pass cleans up first, then stage 1 is not blocked by it.
            let o = ok(&store, &["--json", "gc"]);
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let rec = r["recovered"].to_string();
            assert!(rec.contains("dropped snapshot s1"), "{point}: {r}");
            assert!(r["stage1_skipped"].is_null(), "{point}: {r}");
        }
        check(&store, &kept);
        // S3/S4: the pages the dead creator wrote are reached by no root; the page sweep of a
        // GC pass removes them (and any temporary page file).
        ok(&store, &["gc"]);
        let after = page_files(&store);
        assert!(
            after.is_subset(&before),
            "{point}: page files left behind: {:?}",
            after.difference(&before).collect::<Vec<_>>()
        );
        // The name is free again and a snapshot works.
        ok(&store, &["snapshot", "create", "s1"]);
        let o = ok(&store, &["cat", "/.snapshots/s1/src/keep/f0"]);
        assert_eq!(sha256(&o.stdout), kept[0].1);
    }
}

#[test]
fn gc_dies_at_every_step_and_recover_finishes_or_undoes_it() {
    gc_crash_cases(true);
}

/// [GC-8]: the next GC pass settles what a dead GC left, without `verfs recover`.
#[test]
fn gc_dies_at_every_step_and_the_next_pass_finishes_or_undoes_it() {
    gc_crash_cases(false);
}

fn gc_crash_cases(via_recover: bool) {
    for point in [
        "gc-after-stage1",
        "gc-rewrite-staged",
        "gc-rewrite-committed",
        "gc-rewrite-published",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (store, kept) = fixture(tmp.path());
        ok(&store, &["rm", "-r", "/src/drop"]);
        let before = packs_bytes(&store);
        crash(&store, point, &["gc"]);
        if via_recover {
            let r = recover(&store);
            assert!(r["problems"].as_array().unwrap().is_empty(), "{point}: {r}");
            check(&store, &kept);
        }
        // The next pass reclaims what is left; the deleted 2.8 MB are gone in the end.
        let o = ok(&store, &["--json", "gc"]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if !via_recover {
            assert!(
                !r["recovered"].as_array().unwrap().is_empty(),
                "{point}: the pass must clean up after the dead GC first: {r}"
            );
        }
        let after = packs_bytes(&store);
        assert!(
            before - after >= 2_800_000 * 9 / 10,
            "{point}: {before} -> {after}: {r}"
        );
        check(&store, &kept);
    }
}
