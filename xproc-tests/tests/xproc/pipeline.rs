//! The data pipeline with real processes: four `verfs put`s of overlapping trees into one store
//! at once (file workers, the compression pool and its window in each), one SIGKILLed at a
//! random point; and a mount with `-o writeback_cache` written with `dd`.
//!
//! Proves data-layout.md 6.3 (a put's batches are atomic, exit 0 means durable, several
//! processes storing the same chunk is harmless), 6.6 (recover after a killed writer, fsck
//! clean), 5.11 (`stats.json` sums the counters of the processes that closed, and only theirs:
//! every chunk a finished put looked up is counted once as new or as a dedup hit), and the
//! README's `-o writeback_cache` (every byte written through the kernel's cache reaches the store
//! by unmount).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};

use crate::*;

const PUTS: usize = 4;

/// Tree `k`: its own small and text files, a pair of identical files (a dedup hit inside the
/// process), files every tree shares (dedup across processes), and `big_mib` MiB of its own
/// random data in 1 MiB files. Returns path -> sha256 (paths relative to the tree).
fn build_tree(
    dir: &Path,
    k: usize,
    rng: &mut impl Rng,
    big_mib: usize,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        files.insert(rel.to_owned(), sha256(&data));
    };
    for j in 0..40 {
        let len = rng.gen_range(0..30_000);
        let data = if j % 2 == 0 {
            random_bytes(rng.gen(), len)
        } else {
            text(rng.gen_range(0..1_000_000), len)
        };
        put(&format!("small/s{j:02}"), data);
    }
    let own = text(k as u64 * 7_000_000, 600_000);
    put("dup/one.txt", own.clone());
    put("dup/deeper/two.txt", own);
    for c in 0..3 {
        put(
            &format!("shared/common{c}"),
            random_bytes(0xC0FF_EE00 + c, 400_000),
        );
    }
    put("shared/common-text", text(42, 800_000));
    for b in 0..big_mib {
        put(&format!("big/b{b:02}"), random_bytes(rng.gen(), 1 << 20));
    }
    files
}

/// Every regular file below `path` in the store, with its number of extents (= chunks the put
/// looked up: one extent per chunk).
fn extents_below(s: &verfs_engine::store::Store, path: &str, out: &mut u64) {
    use verfs_engine::meta::FileKind;
    for (name, inode) in s.list(path).unwrap() {
        let p = format!("{path}/{}", String::from_utf8_lossy(&name));
        match inode.kind {
            FileKind::Dir => extents_below(s, &p, out),
            FileKind::File => *out += s.lookup(&p).unwrap().1.len() as u64,
            _ => {}
        }
    }
}

#[test]
fn four_puts_one_killed_then_recover_fsck_and_counters() {
    let _g = heavy();
    let seed = seed();
    eprintln!("pipeline four_puts seed: {seed} (XPROC_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let st = TestStore::new();
    // Several batches per put, so the killed one may die between commits as well as inside one.
    st.set_config("batch", "max_files", "8");
    st.set_config("pipeline", "queue_chunks", "8");
    let victim = rng.gen_range(0..PUTS);
    let delay = Duration::from_millis(rng.gen_range(10..160));
    eprintln!("victim: put {victim}, SIGKILL {delay:?} after the start");
    let local = st.scratch_dir("local");
    let mut trees = Vec::new();
    for k in 0..PUTS {
        let big = if k == victim { 64 } else { 2 };
        trees.push(build_tree(&local.join(format!("t{k}")), k, &mut rng, big));
    }

    let verfs = verfs_bin();
    let root = st.root().to_str().unwrap().to_owned();
    let mut pool = Pool::new(st.scratch(), agent());
    let mut waiting = Vec::new();
    for k in 0..PUTS {
        let src = local.join(format!("t{k}"));
        waiting.push(pool.spawn_at_go(
            &format!("put{k}"),
            &verfs,
            &["-s", &root, "put", src.to_str().unwrap(), &format!("/t{k}")],
        ));
    }
    pool.go(&waiting);
    let t0 = Instant::now();
    thread::sleep(delay);
    // The victim stores 64 MiB more than the others: it is still running after at most 160 ms.
    // The test is about a killed put, so a kill that did not land fails it.
    let running = !pool.has_exited(waiting[victim]);
    let killed = running && pool.sigkill(waiting[victim]);
    let finished = pool.wait_all(Duration::from_secs(120));
    eprintln!(
        "puts done after {:.2}s; victim killed mid-put: {killed}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        killed,
        "put {victim} had exited before the SIGKILL {delay:?} after the start (running: {running}):\n{}",
        finished[victim].describe()
    );
    for (k, f) in finished.iter().enumerate() {
        if k == victim {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&f.status),
                Some(libc::SIGKILL),
                "the victim did not die of the SIGKILL: {}",
                f.describe()
            );
        } else {
            assert!(f.status.success(), "{}", f.describe());
        }
    }

    let rec = st.run(&["recover"]);
    assert!(rec.success(), "recover:\n{}", rec.describe());
    eprintln!("recover: {}", rec.stdout_str().trim());
    st.assert_fsck_clean();

    // The finished trees read back identical (`get`, then stat, sha256 and xattrs compared).
    let out = st.scratch_dir("out");
    for k in (0..PUTS).filter(|&k| k != victim || !killed) {
        let dst = out.join(format!("t{k}"));
        st.ok(&["get".as_ref(), format!("/t{k}").as_ref(), dst.as_os_str()]);
        assert_trees_equal(&local.join(format!("t{k}")), &dst, &format!("tree t{k}"));
    }
    // What the killed put committed is whole: every file it left is the source's.
    if killed {
        let got = st.run(&["ls", &format!("/t{victim}")]);
        if got.success() {
            let dst = out.join(format!("t{victim}"));
            st.ok(&[
                "get".as_ref(),
                format!("/t{victim}").as_ref(),
                dst.as_os_str(),
            ]);
            let sums = tree_sha256(&dst);
            let mut n = 0;
            for l in sums.lines() {
                let (sha, rel) = l.split_once("  ").unwrap();
                let rel = rel.trim_start_matches("./");
                assert_eq!(
                    trees[victim].get(rel).map(String::as_str),
                    Some(sha),
                    "killed put left {rel} with other content"
                );
                n += 1;
            }
            eprintln!("the killed put left {n} of {} files", trees[victim].len());
        }
    }

    // Counters: the store's stats.json holds the finished puts' counters (the killed one never
    // closed). Every chunk a finished put looked up is either new or a dedup hit, and each such
    // lookup is one extent of a file it stored.
    let v: serde_json::Value =
        serde_json::from_slice(&st.ok(&["status", "--json"]).stdout).unwrap();
    let c = &v["counters"];
    let get = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counters.{k}: {v}"));
    assert!(get("chunks_new") > 0, "{v}");
    assert!(get("chunks_dedup") > 0, "{v}");
    assert!(
        get("bytes_in") > 0 && get("bytes_stored") <= get("bytes_in"),
        "{v}"
    );
    assert!(get("chunks_raw") <= get("chunks_new"), "{v}");
    let rate = v["rates"]["dedup_hit_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 1.0, "{v}");
    let mut lookups = 0;
    {
        let s = verfs_engine::store::Store::open(
            st.root(),
            verfs_engine::store::OpenOptions::new("xproc pipeline check"),
        )
        .unwrap();
        for k in (0..PUTS).filter(|&k| k != victim || !killed) {
            extents_below(&s, &format!("/t{k}"), &mut lookups);
        }
        s.close().unwrap();
    }
    // Each chunk a finished put looked up is one extent of a file it stored, and counts exactly
    // once, as new or as a dedup hit (5.11).
    assert_eq!(
        get("chunks_new") + get("chunks_dedup"),
        lookups,
        "new + dedup chunks of the finished puts vs the {lookups} extents of their trees: {v}"
    );
    // What they counted as appended is in the packs: no more records, no more stored bytes
    // (the killed put's records are there too; nothing was collected).
    let (mut records, mut stored) = (0u64, 0u64);
    for e in fs::read_dir(st.root().join("packs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "pack") {
            let scan = verfs_engine::pack::scan(&e.path()).unwrap();
            assert!(scan.is_clean(), "{:?}", scan.problems);
            records += scan.records.len() as u64;
            stored += scan
                .records
                .iter()
                .map(|r| u64::from(r.stored_len))
                .sum::<u64>();
        }
    }
    assert!(
        get("chunks_new") <= records && get("bytes_stored") <= stored,
        "counters count more appended chunks or bytes than the packs hold ({records} records, \
         {stored} payload bytes): {v}"
    );
    st.assert_fsck_clean();
}

/// `-o writeback_cache`: 10 MiB written with `dd` (1 MiB writes with fsync, 4 KiB writes, and
/// 1000-byte writes that are not page aligned) read back through the mount, and after unmount
/// through the CLI, with the sha256 of the source.
#[test]
fn writeback_cache_mount_keeps_dd_writes() {
    require_fuse!();
    let seed = seed();
    eprintln!("pipeline writeback seed: {seed} (XPROC_SEED to replay)");
    let st = TestStore::new();
    let src = st.scratch().join("src.bin");
    let mut data = vec![0u8; 10 << 20];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data[..6 << 20]);
    data[6 << 20..].copy_from_slice(&text(seed, 4 << 20));
    fs::write(&src, &data).unwrap();
    let want = sha256(&data);
    let mut m = Mount::new(&st, &["writeback_cache"]);
    let files = [
        ("f-1m.bin", "bs=1M conv=fsync"),
        ("f-4k.bin", "bs=4k"),
        ("f-odd.bin", "bs=1000"),
    ];
    for (name, args) in files {
        sh_ok(&format!(
            "dd if={} of={} {args} status=none",
            shq(&src),
            shq(m.join(name))
        ));
        assert_eq!(
            sha256_file(&m.join(name)),
            want,
            "{name} read back through the mount"
        );
    }
    m.umount();
    for (name, _) in files {
        let got = st.cat(&format!("/{name}"));
        assert_eq!(got.len(), data.len(), "{name}: size after unmount");
        assert_eq!(
            sha256(&got),
            want,
            "{name}: sha256 through the CLI after unmount"
        );
    }
    st.assert_fsck_clean();
}
