//! The data pipeline through the library: `Store::write_stream` on the compression pool with its
//! ordered, bounded window, `transfer::put` with several file workers, the process counters
//! (`Stats`, `leases/<id>/stats.json`, `STORE/stats.json`), in-flight references merged by
//! `Held::absorb`, the decoded-chunk cache with readahead, and the `[pipeline]`/`[cache]`
//! validation of `config.toml`.
//!
//! proves data-layout.md 5.2 ([CFG-1] for the new keys), 5.11, 6.3 step 1, [GC-4] for absorbed
//! references.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use verfs_engine::chunker::Chunker;
use verfs_engine::config::Config;
use verfs_engine::ids::{ChunkId, InodeNo};
use verfs_engine::meta::{Extent, FileKind, Inode};
use verfs_engine::ops::fsck::fsck;
use verfs_engine::ops::gc;
use verfs_engine::ops::transfer;
use verfs_engine::pipeline::{read_published, read_store_stats, StatsSnapshot};
use verfs_engine::store::{OpenOptions, PendingFile, Store, TransferReport};
use verfs_test_support::{noise, packs_bytes, skip, text};

/// Fast heartbeats (published counters and GC votes within ~100 ms).
const BASE: &str = "\
[leases]
timeout_ms = 3000
heartbeat_ms = 100
";

/// 20 MiB: 1 MiB blocks of random bytes, text, zeros, and one random 100 KiB block repeated.
fn mix_20m() -> Vec<u8> {
    let rep = noise(77, 100 << 10);
    let mut v = Vec::with_capacity(20 << 20);
    for i in 0..20u64 {
        match i % 4 {
            0 => v.extend_from_slice(&noise(1000 + i, 1 << 20)),
            1 => v.extend_from_slice(&text(i * 50_000, 1 << 20)),
            2 => v.extend(std::iter::repeat_n(0u8, 1 << 20)),
            _ => {
                let start = v.len();
                while v.len() < start + (1 << 20) {
                    let k = (start + (1 << 20) - v.len()).min(rep.len());
                    v.extend_from_slice(&rep[..k]);
                }
            }
        }
    }
    assert_eq!(v.len(), 20 << 20);
    v
}

/// A new store at `dir/name` whose `config.toml` is [`BASE`] plus `extra`.
fn new_store(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let root = dir.join(name);
    Store::init(&root).unwrap();
    fs::write(root.join("config.toml"), format!("{BASE}{extra}")).unwrap();
    root
}

fn open(root: &Path, kind: &str) -> Store {
    Store::open(root, OpenOptions::new(kind)).unwrap()
}

fn set_config(root: &Path, extra: &str) {
    fs::write(root.join("config.toml"), format!("{BASE}{extra}")).unwrap();
}

/// Commit the stream's result as the file `/name`.
fn commit_one(
    s: &Store,
    name: &str,
    extents: Vec<Extent>,
    size: u64,
    held: &verfs_engine::store::Held,
) {
    let mut inode = Inode::new(InodeNo(0), FileKind::File, 0o644);
    inode.size = size;
    let f = PendingFile {
        comps: vec![name.as_bytes().to_vec()],
        inode,
        extents,
    };
    s.commit_files(&[], &[], vec![f], Some(held)).unwrap();
}

/// What FastCDC alone makes of `data`: (offset, id, len) per chunk.
fn reference_chunks(data: &[u8]) -> Vec<(u64, ChunkId, u32)> {
    Chunker::new(data, Config::default().chunker())
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            (c.offset, c.id, c.data.len() as u32)
        })
        .collect()
}

fn pack_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root.join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    v.sort();
    v
}

#[track_caller]
fn assert_fsck_clean(root: &Path) {
    let f = fsck(root).unwrap();
    assert!(f.is_clean(), "{:?}", f.problems);
}

// ---------------------------------------------------------------------------------------------
// write_stream through the pool
// ---------------------------------------------------------------------------------------------

/// Every queue depth and pool size gives the extents FastCDC gives, stores each distinct chunk
/// once and in stream order (6.3 step 1: appends in stream order; a file's chunks lie in file
/// order in its pack), and reads back the input byte for byte, in the writing process and after
/// a reopen; fsck is clean.
#[test]
fn write_stream_round_trips_at_every_queue_depth_and_pool_size() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("small", noise(5, 1000)),
        ("mix", mix_20m()),
    ];
    let refs: Vec<Vec<(u64, ChunkId, u32)>> =
        inputs.iter().map(|(_, d)| reference_chunks(d)).collect();
    assert!(refs[0].is_empty() && refs[1].len() == 1 && refs[2].len() > 100);
    for (queue, threads) in [(1, 1), (1, 3), (64, 1), (64, 3)] {
        let what = format!("queue_chunks {queue}, compress_threads {threads}");
        let root = new_store(
            dir.path(),
            &format!("q{queue}-t{threads}"),
            &format!("[pipeline]\nqueue_chunks = {queue}\ncompress_threads = {threads}\n"),
        );
        let s = open(&root, "test pipeline");
        assert_eq!(s.config().pipeline.queue_chunks, queue);
        let mut seen: HashSet<ChunkId> = HashSet::new();
        // Distinct chunk ids in order of their first appearance: the order of the pack records.
        let mut first_seen: Vec<ChunkId> = Vec::new();
        for ((name, data), want) in inputs.iter().zip(&refs) {
            let mut held = s.hold();
            let mut rep = TransferReport::default();
            let (exts, size) = s.write_stream(&data[..], &mut rep, &mut held).unwrap();
            assert_eq!(size, data.len() as u64, "{what}: {name}");
            let got: Vec<(u64, ChunkId, u32)> =
                exts.iter().map(|x| (x.file_off, x.chunk, x.len)).collect();
            assert_eq!(&got, want, "{what}: {name}: extents differ from FastCDC's");
            assert!(exts.iter().all(|x| x.chunk_off == 0));
            let mut new = 0;
            for x in &exts {
                if seen.insert(x.chunk) {
                    first_seen.push(x.chunk);
                    new += 1;
                }
            }
            assert_eq!(rep.new_chunks, new, "{what}: {name}: {rep:?}");
            assert_eq!(
                rep.new_chunks + rep.dedup_chunks,
                exts.len() as u64,
                "{what}: {name}: {rep:?}"
            );
            commit_one(&s, name, exts, size, &held);
            drop(held);
            assert_eq!(
                &s.read_all(&format!("/{name}")).unwrap(),
                data,
                "{what}: {name}"
            );
        }
        // The mix repeats chunks (zeros, the repeated block): fewer distinct chunks than chunks.
        let mix_distinct: HashSet<ChunkId> = refs[2].iter().map(|c| c.1).collect();
        assert!(mix_distinct.len() + 20 < refs[2].len(), "{what}");
        s.close().unwrap();
        assert_fsck_clean(&root);
        // One process, one pack (64 MiB target): its records are the distinct chunks, each once,
        // in stream order, whatever the pool finished first.
        let packs = pack_files(&root);
        assert_eq!(packs.len(), 1, "{what}: {packs:?}");
        let scan = verfs_engine::pack::scan(&packs[0]).unwrap();
        assert!(scan.is_clean(), "{what}: {:?}", scan.problems);
        let order: Vec<ChunkId> = scan.records.iter().map(|r| r.chunk_id).collect();
        assert_eq!(
            order.len(),
            first_seen.len(),
            "{what}: pack holds {} records for {} distinct chunks",
            order.len(),
            first_seen.len()
        );
        assert!(
            order == first_seen,
            "{what}: pack records are not in stream order"
        );
        let s = open(&root, "test reader");
        for (name, data) in &inputs {
            assert_eq!(
                &s.read_all(&format!("/{name}")).unwrap(),
                data,
                "{what}: {name} after reopen"
            );
        }
        s.close().unwrap();
    }
}

/// A block repeated inside one stream, within the window (queue 64) or after its first copy left
/// it (queue 1), is stored once: new chunks == distinct chunks, the rest are dedup hits, and the
/// pack grows by about one copy.
#[test]
fn repeats_inside_one_stream_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let block = noise(31, 256 << 10);
    let data: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take(8 * block.len())
        .collect();
    for queue in [64, 1] {
        let root = new_store(
            dir.path(),
            &format!("q{queue}"),
            &format!("[pipeline]\nqueue_chunks = {queue}\ncompress_threads = 3\n"),
        );
        let s = open(&root, "test repeats");
        let mut held = s.hold();
        let mut rep = TransferReport::default();
        let (exts, size) = s.write_stream(&data[..], &mut rep, &mut held).unwrap();
        let mut distinct: HashMap<ChunkId, u32> = HashMap::new();
        for x in &exts {
            distinct.insert(x.chunk, x.len);
        }
        let distinct_bytes: u64 = distinct.values().map(|&l| u64::from(l)).sum();
        assert_eq!(
            rep.new_chunks,
            distinct.len() as u64,
            "queue {queue}: {rep:?}"
        );
        assert_eq!(
            rep.dedup_chunks,
            (exts.len() - distinct.len()) as u64,
            "queue {queue}: {rep:?}"
        );
        assert_eq!(rep.new_chunk_bytes, distinct_bytes, "queue {queue}");
        // FastCDC re-synchronises within a copy: the distinct chunks are one copy plus the
        // chunks that straddle a copy boundary, far less than two copies.
        assert!(
            distinct_bytes < 2 * block.len() as u64,
            "queue {queue}: {distinct_bytes} distinct bytes"
        );
        commit_one(&s, "rep", exts, size, &held);
        drop(held);
        let grown = packs_bytes(&root);
        assert!(
            grown >= block.len() as u64
                && grown <= distinct_bytes + 64 * distinct.len() as u64 + 8192,
            "queue {queue}: pack holds {grown} bytes for {distinct_bytes} distinct bytes"
        );
        assert_eq!(s.read_all("/rep").unwrap(), data, "queue {queue}");
        let st = s.stats().snapshot();
        assert_eq!(st.chunks_new, rep.new_chunks, "queue {queue}: {st:?}");
        assert_eq!(st.chunks_dedup, rep.dedup_chunks, "queue {queue}: {st:?}");
        s.close().unwrap();
        assert_fsck_clean(&root);
    }
}

/// A stream that checks, on every read, that the writer keeps appending while it reads: every
/// chunk that certainly came out of the chunker already (it ends 2 MiB before the read position:
/// more than a read-ahead block plus a maximal chunk) is appended, except at most `queue` of
/// them still in the window. Reads return at most 64 KiB, at odd sizes.
struct AppendsKeepUp<'a> {
    data: &'a [u8],
    pos: usize,
    store: &'a Store,
    ends: Vec<u64>,
    queue: u64,
    /// (read position, chunks certainly out of the chunker, chunks appended) when behind.
    behind: Vec<(usize, u64, u64)>,
    checks: u64,
}

impl std::io::Read for AppendsKeepUp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let margin = 2u64 << 20;
        let out = self
            .ends
            .partition_point(|&e| e + margin <= self.pos as u64) as u64;
        let appended = self.store.stats().snapshot().chunks_new;
        self.checks += 1;
        if appended + self.queue < out {
            self.behind.push((self.pos, out, appended));
        }
        let n = buf.len().min(65_521).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// 6.3 step 1: at most `queue_chunks` new chunks are in flight between the chunker and the pack;
/// the rest are appended while the stream is still being read (memory stays bounded).
#[test]
fn the_window_appends_while_reading_and_holds_at_most_queue_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(51, 12 << 20);
    let ends: Vec<u64> = reference_chunks(&data)
        .iter()
        .map(|(o, _, l)| o + u64::from(*l))
        .collect();
    for queue in [1u64, 8] {
        let root = new_store(
            dir.path(),
            &format!("q{queue}"),
            &format!("[pipeline]\nqueue_chunks = {queue}\ncompress_threads = 2\n"),
        );
        let s = open(&root, "test window");
        let mut held = s.hold();
        let mut src = AppendsKeepUp {
            data: &data,
            pos: 0,
            store: &s,
            ends: ends.clone(),
            queue,
            behind: Vec::new(),
            checks: 0,
        };
        let (exts, size) = s
            .write_stream(&mut src, &mut TransferReport::default(), &mut held)
            .unwrap();
        assert!(src.checks > 100, "{}", src.checks);
        assert!(
            src.behind.is_empty(),
            "queue {queue}: appends fell behind the reader (position, chunks out, appended): {:?}",
            &src.behind[..src.behind.len().min(5)]
        );
        commit_one(&s, "f", exts, size, &held);
        assert!(s.read_all("/f").unwrap() == data);
        s.close().unwrap();
    }
}

/// A stream that, when it reaches its end, waits until every other stream on the barrier has
/// reached its end too (so two streams have chunked everything before either appends).
struct MeetAtEnd<'a> {
    data: &'a [u8],
    pos: usize,
    barrier: &'a std::sync::Barrier,
    met: bool,
}

impl std::io::Read for MeetAtEnd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.data.len() {
            if !self.met {
                self.met = true;
                self.barrier.wait();
            }
            return Ok(0);
        }
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// 5.11: `chunks_new`, `bytes_in` and `bytes_stored` count what was appended to packs. Two
/// streams of one process (two file workers of a put storing identical files) that both chunk
/// the same new data before either appends both send every chunk to the pack; the pack writer
/// keeps one record per id, so the counters must count each chunk once too: after the close they
/// equal the pack's records.
#[test]
fn a_chunk_two_streams_append_at_once_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(
        dir.path(),
        "st",
        "[pipeline]\nqueue_chunks = 4096\ncompress_threads = 2\n",
    );
    let s = open(&root, "test two streams");
    let data = noise(41, 2 << 20);
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    let mut held = s.hold();
                    let mut rep = TransferReport::default();
                    let src = MeetAtEnd {
                        data: &data,
                        pos: 0,
                        barrier: &barrier,
                        met: false,
                    };
                    let (exts, size) = s.write_stream(src, &mut rep, &mut held).unwrap();
                    (exts, size, held, rep)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (exts, size, held, _)) in results.into_iter().enumerate() {
        commit_one(&s, &format!("f{i}"), exts, size, &held);
    }
    assert_eq!(s.read_all("/f0").unwrap(), data);
    assert_eq!(s.read_all("/f1").unwrap(), data);
    let st = s.stats().snapshot();
    s.close().unwrap();
    assert_fsck_clean(&root);
    let packs = pack_files(&root);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let records = verfs_engine::pack::scan(&packs[0]).unwrap().records;
    let raw: u64 = records.iter().map(|r| u64::from(r.raw_len)).sum();
    let stored: u64 = records.iter().map(|r| u64::from(r.stored_len)).sum();
    assert_eq!(
        (st.chunks_new, st.bytes_in, st.bytes_stored),
        (records.len() as u64, raw, stored),
        "counters (chunks_new, bytes_in, bytes_stored) vs the pack's records: {st:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// put with file workers
// ---------------------------------------------------------------------------------------------

/// Seconds and nanoseconds for the n-th entry's mtime.
fn mtime_of(n: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            1_500_000_000 + n * 7,
            (n as u32 * 1_234_567) % 1_000_000_000,
        )
}

fn set_mtime(p: &Path, n: u64) {
    let f = fs::File::options().read(true).open(p).unwrap();
    f.set_modified(mtime_of(n)).unwrap();
}

/// A local tree: nested directories, 240 small files (every 12th identical), a few large ones,
/// an empty file, symlinks (relative, absolute, dangling), several modes, distinct mtimes.
fn build_tree(root: &Path) -> usize {
    fs::create_dir_all(root).unwrap();
    let mut n = 0u64;
    let mut files = 0;
    let dirs = ["a", "a/b", "a/b/c", "a/b/c/d", "e", "f"];
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..240u64 {
        let d = dirs[(i % dirs.len() as u64) as usize];
        let p = root.join(d).join(format!("s{i:03}"));
        let body = if i % 12 == 0 {
            text(1, 3000)
        } else if i % 2 == 0 {
            noise(i, (i as usize * 37) % 5000)
        } else {
            text(i * 1000, (i as usize * 53) % 6000)
        };
        fs::write(&p, body).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][(i % 4) as usize];
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, n);
        n += 1;
        files += 1;
    }
    let big: [(&str, Vec<u8>); 3] = [
        ("a/b/big-noise", noise(99, 3 << 20)),
        ("e/big-text", text(7, 2 << 20)),
        ("f/big-mixed", {
            let mut v = vec![0u8; 1 << 20];
            v.extend_from_slice(&noise(98, 700_000));
            v.extend_from_slice(&text(3, 300_000));
            v
        }),
    ];
    for (name, body) in big {
        let p = root.join(name);
        fs::write(&p, body).unwrap();
        set_mtime(&p, n);
        n += 1;
        files += 1;
    }
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::set_permissions(root.join("a/empty"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_mtime(&root.join("a/empty"), n);
    n += 1;
    files += 1;
    std::os::unix::fs::symlink("../e/big-text", root.join("a/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("no/such/target", root.join("a/b/c/dangling")).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o700)).unwrap();
    // Directory mtimes last, deepest first (setting one does not change its parent's).
    for d in dirs.iter().rev() {
        set_mtime(&root.join(d), n);
        n += 1;
    }
    files
}

/// Compare the store's `spath` with the local `local`, recursively: kind, mode, mtime (files
/// and directories), size, bytes, symlink targets, and the same names in every directory.
fn assert_same_tree(s: &Store, local: &Path, spath: &str) {
    let m = fs::symlink_metadata(local).unwrap();
    let i = s.stat(spath).unwrap();
    let ft = m.file_type();
    if ft.is_symlink() {
        assert_eq!(i.kind, FileKind::Symlink, "{spath}");
        let t = fs::read_link(local).unwrap();
        assert_eq!(i.target, t.as_os_str().as_encoded_bytes(), "{spath}");
        return;
    }
    assert_eq!(i.perm, m.mode() & 0o7777, "mode of {spath}");
    assert_eq!(
        (i.mtime.secs, i.mtime.nsecs as i64),
        (m.mtime(), m.mtime_nsec()),
        "mtime of {spath}"
    );
    if ft.is_dir() {
        assert_eq!(i.kind, FileKind::Dir, "{spath}");
        let want: BTreeSet<String> = fs::read_dir(local)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let got: BTreeSet<String> = s
            .list(spath)
            .unwrap()
            .into_iter()
            .map(|(n, _)| String::from_utf8(n).unwrap())
            .collect();
        assert_eq!(got, want, "entries of {spath}");
        for name in want {
            assert_same_tree(s, &local.join(&name), &format!("{spath}/{name}"));
        }
    } else {
        assert_eq!(i.kind, FileKind::File, "{spath}");
        assert_eq!(i.size, m.len(), "size of {spath}");
        assert!(
            s.read_all(spath).unwrap() == fs::read(local).unwrap(),
            "content of {spath}"
        );
    }
}

/// `put` of a mixed tree with 1, 2 and 4 file workers and small batches: every file, link and
/// directory reads back identical with its mode and mtime, the report counts them, and fsck is
/// clean.
#[test]
fn put_tree_with_1_2_and_4_file_workers() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("tree");
    let nfiles = build_tree(&local);
    for workers in [1, 2, 4] {
        let root = new_store(
            dir.path(),
            &format!("w{workers}"),
            &format!(
                "[pipeline]\nfile_workers = {workers}\nqueue_chunks = 4\ncompress_threads = 2\n\n[batch]\nmax_files = 16\n"
            ),
        );
        let s = open(&root, "test put");
        s.mkdir("/in", 0o755, false).unwrap();
        let rep = transfer::put(&s, std::slice::from_ref(&local), "/in", &mut |_| {}).unwrap();
        assert_eq!(rep.files as usize, nfiles, "workers {workers}: {rep:?}");
        assert_eq!(rep.symlinks, 3, "workers {workers}: {rep:?}");
        assert_eq!(rep.dirs, 7, "workers {workers}: {rep:?}");
        assert!(rep.dedup_chunks > 0, "workers {workers}: {rep:?}");
        assert_same_tree(&s, &local, "/in/tree");
        // `cp -r` rule: a put to a name that does not exist yet becomes that name.
        let rep2 = transfer::put(&s, &[local.join("a")], "/copy-a", &mut |_| {}).unwrap();
        assert_eq!(rep2.new_chunks, 0, "workers {workers}: {rep2:?}");
        assert_same_tree(&s, &local.join("a"), "/copy-a");
        s.close().unwrap();
        assert_fsck_clean(&root);
        // A fresh store handle (nothing cached) sees the same.
        let s = open(&root, "test reader");
        assert_same_tree(&s, &local, "/in/tree");
        s.close().unwrap();
    }
}

/// A bind mount and the process whose memory file it shows; dropping it unmounts, then kills and
/// reaps that process (also when the test fails).
struct BindMount(PathBuf, std::process::Child);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

/// Make `path` (a regular file) a file whose every read fails with EIO: a bind mount of the
/// `/proc/PID/mem` of a `sleep` started here (address 0 is never mapped; another process's, so
/// the read does not contend with this test process's own memory map). `None` (after a SKIPPED
/// line; a failure under CI) if that cannot be done (not root).
fn unreadable_file(path: &Path) -> Option<BindMount> {
    fs::write(path, b"placeholder").unwrap();
    let child = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(format!("/proc/{}/mem", child.id()))
        .arg(path)
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    let guard = BindMount(path.to_path_buf(), child);
    if !mounted {
        skip("the read-error case: cannot bind-mount /proc/PID/mem (needs root)");
        return None;
    }
    assert!(
        fs::read(path).is_err(),
        "reading the bind mount should fail"
    );
    Some(guard)
}

/// A put that fails names the path: a missing source, and a file whose read fails (EIO: a bind
/// mount of a `/proc/PID/mem`, as root). The batches committed before the failing file stay, and
/// nothing of the failed batch (or after it) is stored (`transfer::put`'s contract). One file
/// worker, so files finish in walk order and the batches are known.
#[test]
fn put_errors_name_the_path_and_keep_earlier_batches() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(
        dir.path(),
        "st",
        "[pipeline]\nfile_workers = 1\n\n[batch]\nmax_files = 4\n",
    );
    let s = open(&root, "test put errors");
    let missing = dir.path().join("no-such-source");
    let e = transfer::put(&s, std::slice::from_ref(&missing), "/x", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains(&*missing.to_string_lossy()), "{e}");
    assert!(s.stat("/x").is_err());

    // tree/a/f00..f09, tree/b-bad (reads fail), tree/c/g0..g5. Walk order is name order.
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("a")).unwrap();
    fs::create_dir_all(tree.join("c")).unwrap();
    let f = |i: u64| noise(500 + i, 512 << 10);
    for i in 0..10 {
        fs::write(tree.join(format!("a/f{i:02}")), f(i)).unwrap();
    }
    for i in 0..6 {
        fs::write(tree.join(format!("c/g{i}")), text(100 + i, 2000)).unwrap();
    }
    let bad = tree.join("b-bad");
    let Some(guard) = unreadable_file(&bad) else {
        s.close().unwrap();
        return;
    };
    let e = transfer::put(&s, std::slice::from_ref(&tree), "/t", &mut |_| {})
        .unwrap_err()
        .to_string();
    drop(guard);
    assert!(
        e.contains(&*bad.to_string_lossy()),
        "error does not name the file: {e}"
    );
    // Batches of 4: f00..f07 were committed in two batches before the failure; f08, f09 were in
    // the failed batch with b-bad; nothing after it was stored.
    for i in 0..8 {
        assert_eq!(
            s.read_all(&format!("/t/a/f{i:02}")).unwrap(),
            f(i),
            "f{i:02} of an earlier batch"
        );
    }
    for p in [
        "/t/a/f08", "/t/a/f09", "/t/b-bad", "/t/c/g0", "/t/c/g1", "/t/c",
    ] {
        assert!(s.stat(p).is_err(), "{p} should not be stored");
    }
    s.close().unwrap();
    assert_fsck_clean(&root);
}

/// `transfer::put`'s contract with several workers: after a file fails, nothing that comes after
/// it is committed. Four workers are busy with large files when the walk queues the bad file and
/// the small files after it (the queue holds 2 x workers jobs), so those jobs are in flight when
/// the failure comes back; their results must be dropped, not committed (batches of 2, so any
/// result taken after the failure would be committed soon).
#[test]
fn put_commits_nothing_after_a_failed_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(
        dir.path(),
        "st",
        "[pipeline]\nfile_workers = 4\n\n[batch]\nmax_files = 2\n",
    );
    let s = open(&root, "test put error, 4 workers");
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("a")).unwrap();
    fs::create_dir_all(tree.join("c")).unwrap();
    // Two rounds of large files for the four workers: the queue is full when the bad file's
    // turn comes, and the files after it are queued behind it.
    for i in 0..8 {
        fs::write(tree.join(format!("a/f{i}")), noise(600 + i, 1 << 20)).unwrap();
    }
    // Large enough that the workers cannot have stored them all by the time the walk sees the
    // failure, even if the walk thread is descheduled for a while.
    for i in 0..20 {
        fs::write(tree.join(format!("c/g{i:02}")), noise(700 + i, 1 << 20)).unwrap();
    }
    let bad = tree.join("b-bad");
    let Some(guard) = unreadable_file(&bad) else {
        s.close().unwrap();
        return;
    };
    let e = transfer::put(&s, std::slice::from_ref(&tree), "/t", &mut |_| {})
        .unwrap_err()
        .to_string();
    drop(guard);
    assert!(e.contains(&*bad.to_string_lossy()), "{e}");
    let after: Vec<String> = (0..20)
        .map(|i| format!("/t/c/g{i:02}"))
        .filter(|p| s.stat(p).is_ok())
        .collect();
    assert!(
        after.is_empty() && s.stat("/t/c").is_err(),
        "the put failed at {} but committed {} files after it: {after:?}",
        bad.display(),
        after.len()
    );
    assert!(s.stat("/t/b-bad").is_err());
    s.close().unwrap();
    assert_fsck_clean(&root);
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

fn delta(a: &StatsSnapshot, b: &StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        chunks_new: b.chunks_new - a.chunks_new,
        chunks_dedup: b.chunks_dedup - a.chunks_dedup,
        bytes_dedup: b.bytes_dedup - a.bytes_dedup,
        bytes_in: b.bytes_in - a.bytes_in,
        bytes_stored: b.bytes_stored - a.bytes_stored,
        chunks_raw: b.chunks_raw - a.chunks_raw,
        ..StatsSnapshot::default()
    }
}

fn sum(a: &StatsSnapshot, b: &StatsSnapshot) -> StatsSnapshot {
    let mut s = a.clone();
    s.add(b);
    s
}

fn text_tree(dir: &Path, seed: u64) -> PathBuf {
    let t = dir.join(format!("text-{seed}"));
    fs::create_dir_all(t.join("sub")).unwrap();
    for i in 0..20 {
        fs::write(t.join(format!("f{i}")), text(seed * 1000 + i, 40_000)).unwrap();
    }
    fs::write(t.join("sub/big"), text(seed, 600_000)).unwrap();
    t
}

/// 5.11: a put's counters match its report; text compresses (bytes_stored < bytes_in); the same
/// tree again is all dedup hits; the lease keeper publishes the counters in the lease folder;
/// `close` adds them to `STORE/stats.json`, and later closers (also two handles at once) add
/// theirs.
#[test]
fn counters_follow_puts_and_are_summed_into_store_stats_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(dir.path(), "st", "");
    let tree = text_tree(dir.path(), 1);
    let s = open(&root, "test stats 1");
    assert_eq!(s.stats().snapshot(), StatsSnapshot::default());
    let r1 = transfer::put(&s, std::slice::from_ref(&tree), "/one", &mut |_| {}).unwrap();
    let s1 = s.stats().snapshot();
    assert!(s1.chunks_new > 0, "{s1:?}");
    assert_eq!(s1.chunks_new, r1.new_chunks, "{s1:?} {r1:?}");
    assert_eq!(s1.chunks_dedup, r1.dedup_chunks, "{s1:?} {r1:?}");
    assert_eq!(s1.bytes_in, r1.new_chunk_bytes, "{s1:?} {r1:?}");
    assert!(
        s1.bytes_stored > 0 && s1.bytes_stored < s1.bytes_in / 2,
        "text should compress: {s1:?}"
    );
    assert!(s1.chunks_raw < s1.chunks_new, "{s1:?}");
    // The same tree again: nothing new, every chunk a dedup hit.
    let r2 = transfer::put(&s, std::slice::from_ref(&tree), "/two", &mut |_| {}).unwrap();
    let s2 = s.stats().snapshot();
    let d = delta(&s1, &s2);
    assert_eq!(r2.new_chunks, 0, "{r2:?}");
    assert_eq!(d.chunks_new, 0, "{d:?}");
    assert_eq!(d.bytes_in, 0, "{d:?}");
    assert!(d.chunks_dedup > 0, "{d:?}");
    assert_eq!(
        d.chunks_dedup,
        r1.new_chunks + r1.dedup_chunks,
        "{d:?} {r1:?}"
    );
    assert_eq!(d.bytes_dedup, r2.bytes, "{d:?} {r2:?}");
    // Published in the lease folder by the keeper (heartbeat 100 ms).
    let t0 = Instant::now();
    loop {
        let p = read_published(s.lease().dir());
        if p.as_ref() == Some(&s2) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "leases/<id>/stats.json is {p:?}, want {s2:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_store_stats(&root), StatsSnapshot::default());
    s.close().unwrap();
    assert_eq!(
        read_store_stats(&root),
        s2,
        "STORE/stats.json after the first close"
    );

    // A second store handle (its own lease) adds its counters.
    let s = open(&root, "test stats 2");
    transfer::put(&s, &[text_tree(dir.path(), 2)], "/three", &mut |_| {}).unwrap();
    let third = s.stats().snapshot();
    assert!(third.chunks_new > 0, "{third:?}");
    s.close().unwrap();
    let total = sum(&s2, &third);
    assert_eq!(read_store_stats(&root), total, "after the second close");

    // Two store handles closing at once on two threads: neither loses the other's counts (the
    // DLM lock `stats` is an OFD lock, so two handles conflict as two processes do). Real
    // processes closing at once: xproc `four_puts_one_killed_then_recover_fsck_and_counters`.
    let a = open(&root, "test stats a");
    let b = open(&root, "test stats b");
    transfer::put(&a, &[text_tree(dir.path(), 3)], "/four", &mut |_| {}).unwrap();
    transfer::put(&b, &[text_tree(dir.path(), 4)], "/five", &mut |_| {}).unwrap();
    let (sa, sb) = (a.stats().snapshot(), b.stats().snapshot());
    std::thread::scope(|sc| {
        sc.spawn(|| a.close().unwrap());
        sc.spawn(|| b.close().unwrap());
    });
    assert_eq!(
        read_store_stats(&root),
        sum(&sum(&total, &sa), &sb),
        "after two concurrent closes"
    );
    assert_fsck_clean(&root);
}

// ---------------------------------------------------------------------------------------------
// Held::absorb
// ---------------------------------------------------------------------------------------------

/// [GC-4] with merged references: two operations deduplicate the same chunks (each registers
/// them); one absorbs the other. While the merged set lives, this process votes Abort on a rewrite
/// of their pack (a registration remains); once it is dropped, nothing remains registered and the
/// next pass collects the pack. A chunk only the absorbed set held stays registered too.
#[test]
fn absorbed_in_flight_references_are_held_once_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(dir.path(), "st", "[packs]\ntarget_size = 1048576\n");
    let w = open(&root, "test writer");
    let g = open(&root, "test gc");
    let put = |name: &str, data: &[u8]| {
        let mut held = w.hold();
        let (exts, size) = w
            .write_stream(data, &mut TransferReport::default(), &mut held)
            .unwrap();
        commit_one(&w, name, exts, size, &held);
    };
    let dedup_all = |data: &[u8]| {
        let mut held = w.hold();
        let mut rep = TransferReport::default();
        let (exts, size) = w.write_stream(data, &mut rep, &mut held).unwrap();
        assert_eq!(rep.new_chunks, 0, "{rep:?}");
        (held, exts, size)
    };
    let f = noise(11, 2 << 20);
    put("f", &f);
    // Two sets over the same chunks, merged.
    let (mut h1, exts, size) = dedup_all(&f);
    let (h2, _, _) = dedup_all(&f);
    h1.absorb(h2);
    w.remove("/f", false).unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.chunks_removed > 0, "{r:?}");
    assert!(
        r.stage2_refused
            .as_deref()
            .unwrap_or("")
            .contains("in flight"),
        "the merged set must still hold its chunks: {r:?}"
    );
    assert_eq!(r.packs_rewritten + r.packs_deleted, 0, "{r:?}");
    // The merged set commits: its chunks are indexed again, and the file reads back.
    w.transact_held(true, Some(&h1), |tx| {
        let at = tx.entry("/g")?;
        let mut i = Inode::new(InodeNo(0), FileKind::File, 0o644);
        i.size = size;
        tx.write_file(&at, "/g", i, exts.clone())?;
        Ok(())
    })
    .unwrap();
    drop(h1);
    assert_eq!(w.read_all("/g").unwrap(), f);
    // Dropped: no registration is left over from the absorbed set. Delete /g: the pack goes.
    w.remove("/g", false).unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(
        r.stage2_refused.is_none(),
        "a registration outlived the merged set: {r:?}"
    );
    assert!(r.packs_rewritten + r.packs_deleted > 0, "{r:?}");

    // Disjoint sets: what only the absorbed one held stays registered in the merged set.
    let p = noise(12, 1200 << 10);
    let q = noise(13, 1200 << 10);
    put("p", &p);
    put("q", &q);
    let (mut hp, _, _) = dedup_all(&p);
    let (hq, _, _) = dedup_all(&q);
    hp.absorb(hq);
    w.remove("/q", false).unwrap();
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.chunks_removed > 0, "{r:?}");
    assert!(
        r.stage2_refused
            .as_deref()
            .unwrap_or("")
            .contains("in flight"),
        "q's chunks, absorbed, must still be held: {r:?}"
    );
    drop(hp);
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.stage2_refused.is_none(), "{r:?}");
    assert_eq!(w.read_all("/p").unwrap(), p);
    w.close().unwrap();
    g.close().unwrap();
    assert_fsck_clean(&root);
}

// ---------------------------------------------------------------------------------------------
// Caches and readahead
// ---------------------------------------------------------------------------------------------

/// Read `path` the way a mount does: `read_at` in 128 KiB requests, in order.
fn read_by_requests(s: &Store, path: &str) -> Vec<u8> {
    let ino = s.stat(path).unwrap().ino;
    let mut out = Vec::new();
    loop {
        let b = s.read_at(ino, out.len() as u64, 128 << 10).unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

/// Reads are correct whatever `[cache] chunk_bytes` (tiny, 1 MiB, larger than the file) and
/// `readahead_chunks` (0, 8): each chunk a `cat` or a mount read needs is one cache lookup;
/// readahead decodes ahead of a sequential `cat`; a cache larger than the file serves a second
/// read without a miss, and a 1 MiB cache does not hold a 20 MiB file.
#[test]
fn chunk_cache_and_readahead_keep_reads_correct_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(dir.path(), "st", "");
    let mut data = noise(21, 12 << 20);
    data.extend_from_slice(&text(5, 8 << 20));
    {
        let s = open(&root, "test writer");
        let mut held = s.hold();
        let (exts, size) = s
            .write_stream(&data[..], &mut TransferReport::default(), &mut held)
            .unwrap();
        commit_one(&s, "big", exts, size, &held);
        s.close().unwrap();
    }
    let n_chunks = {
        let s = open(&root, "test count");
        let n = s.lookup("/big").unwrap().1.len() as u64;
        s.close().unwrap();
        n
    };
    assert!(n_chunks > 100, "{n_chunks}");
    for chunk_bytes in [65536u64, 1 << 20, 64 << 20] {
        for readahead in [0usize, 8] {
            let what = format!("chunk_bytes {chunk_bytes}, readahead_chunks {readahead}");
            set_config(
                &root,
                &format!("[cache]\nchunk_bytes = {chunk_bytes}\nreadahead_chunks = {readahead}\n"),
            );
            // A fresh store handle: nothing cached, the pack is sealed (readahead skips an open
            // pack).
            let s = open(&root, "test reader");
            let lookups = |st: &StatsSnapshot| st.chunk_cache_hits + st.chunk_cache_misses;
            let c0 = s.stats().snapshot();
            assert!(s.read_all("/big").unwrap() == data, "{what}: first cat");
            let c1 = s.stats().snapshot();
            assert!(s.read_all("/big").unwrap() == data, "{what}: second cat");
            let c2 = s.stats().snapshot();
            if readahead > 0 {
                assert_eq!(lookups(&c1) - lookups(&c0), n_chunks, "{what}: {c1:?}");
                assert_eq!(lookups(&c2) - lookups(&c1), n_chunks, "{what}: {c2:?}");
                assert!(
                    c1.readahead_chunks > 0,
                    "{what}: nothing read ahead: {c1:?}"
                );
                if chunk_bytes > data.len() as u64 {
                    assert_eq!(
                        c2.chunk_cache_misses, c1.chunk_cache_misses,
                        "{what}: the second cat missed the cache: {c2:?}"
                    );
                }
            } else {
                assert_eq!(c1.readahead_chunks, 0, "{what}: {c1:?}");
            }
            // The mount's path: read_at goes through the cache, readahead or not.
            assert!(read_by_requests(&s, "/big") == data, "{what}: read_at");
            let c3 = s.stats().snapshot();
            assert!(
                lookups(&c3) > lookups(&c2),
                "{what}: read_at did no lookup: {c3:?}"
            );
            assert!(
                read_by_requests(&s, "/big") == data,
                "{what}: read_at again"
            );
            let c4 = s.stats().snapshot();
            let misses = c4.chunk_cache_misses - c3.chunk_cache_misses;
            if chunk_bytes > data.len() as u64 {
                assert_eq!(misses, 0, "{what}: second read_at pass missed: {c4:?}");
            } else if readahead == 0 {
                // A 20 MiB file does not fit: most of the second pass decodes again.
                assert!(
                    misses >= n_chunks / 2,
                    "{what}: only {misses} of {n_chunks} chunks missed: the cache holds more than its bound"
                );
            }
            s.close().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config validation
// ---------------------------------------------------------------------------------------------

/// [CFG-1] for the new sections: out-of-range values are refused with a one-line message naming
/// the key, by `Config::load` and by `Store::open`; the limits themselves are accepted.
#[test]
fn pipeline_and_cache_limits_are_validated_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    for (section, key, value) in [
        ("pipeline", "queue_chunks", "0"),
        ("pipeline", "queue_chunks", "4097"),
        ("pipeline", "file_workers", "300"),
        ("pipeline", "compress_threads", "300"),
        ("cache", "readahead_chunks", "5000"),
        ("cache", "pack_readers", "0"),
        ("cache", "snapshot_trees", "0"),
    ] {
        fs::write(&p, format!("[{section}]\n{key} = {value}\n")).unwrap();
        let msg = Config::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains(key) && !msg.contains('\n'),
            "[{section}] {key} = {value}: {msg}"
        );
    }
    for (section, key, value) in [
        ("pipeline", "queue_chunks", "1"),
        ("pipeline", "queue_chunks", "4096"),
        ("pipeline", "file_workers", "256"),
        ("pipeline", "compress_threads", "256"),
        ("cache", "readahead_chunks", "1024"),
        ("cache", "readahead_chunks", "0"),
        ("cache", "pack_readers", "1"),
        ("cache", "snapshot_trees", "1"),
    ] {
        fs::write(&p, format!("[{section}]\n{key} = {value}\n")).unwrap();
        Config::load(&p).unwrap_or_else(|e| panic!("[{section}] {key} = {value}: {e}"));
    }
    // The store refuses to open with such a config, naming the key.
    let root = new_store(dir.path(), "st", "[pipeline]\nfile_workers = 300\n");
    let e = Store::open(&root, OpenOptions::new("test bad config"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("file_workers"), "{e}");
    set_config(&root, "[cache]\nreadahead_chunks = 5000\n");
    let e = Store::open(&root, OpenOptions::new("test bad config"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("readahead_chunks"), "{e}");
}

/// 5.2 says bad values are refused with the key's name: also a value outside the key's type (a
/// negative count, a string for a size), which toml reports by line and table only.
#[test]
fn values_outside_the_keys_type_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    for (section, key, value) in [
        ("pipeline", "queue_chunks", "-1"),
        ("pipeline", "file_workers", "-4"),
        ("cache", "chunk_bytes", "\"big\""),
        ("cache", "readahead_chunks", "1.5"),
    ] {
        fs::write(&p, format!("[{section}]\n{key} = {value}\n")).unwrap();
        let msg = Config::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains(key) && !msg.contains('\n'),
            "[{section}] {key} = {value}: {msg}"
        );
    }
}

/// A chunk GC dropped from the index while its copy sits in the writer's still-open pack: writing
/// the same bytes again finds the copy in the pack (no second copy) and the commit indexes it
/// again. (Regression: the append skipped the chunk's pending entry, the commit refused the
/// reference as unindexed, and a mount answered EIO.)
#[test]
fn rewriting_a_chunk_gc_dropped_from_an_open_pack_indexes_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_store(dir.path(), "s", "");
    let w = open(&root, "test writer");
    let data = noise(77, 300_000);
    let write = |name: &str| {
        let mut held = w.hold();
        let mut rep = TransferReport::default();
        let (x, size) = w.write_stream(&data[..], &mut rep, &mut held).unwrap();
        commit_one(&w, name, x, size, &held);
        rep
    };
    let first = write("a");
    assert!(first.new_chunks > 0, "{first:?}");
    w.remove("/a", false).unwrap();
    // A second store handle (its own lease, as a second process has) runs GC: stage 1 drops
    // the chunks; the writer's pack is open, so stays.
    let g = open(&root, "test gc");
    let r = gc::run_pass(&g, &mut |_, _, _| {}).unwrap();
    assert!(r.chunks_removed > 0, "{r:?}");
    let again = write("b");
    assert_eq!(again.new_chunks, first.new_chunks, "{again:?}");
    assert_eq!(w.read_all("/b").unwrap(), data);
    g.close().unwrap();
    w.close().unwrap();
    assert_fsck_clean(&root);
}
