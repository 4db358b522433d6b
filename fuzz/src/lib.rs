//! Fuzz harnesses for every parser of bytes verfs reads from disk.
//!
//! Each [`Target`] is one parser (or one family of files read by one code path): `run` feeds it
//! arbitrary bytes and panics only on a finding — a panic inside verfs, or a rejection whose
//! message does not name the file it is about. `seeds` are valid encodings the fuzzers start from.
//! The same functions back the libFuzzer targets in `fuzz_targets/` (nightly, `cargo fuzz`) and
//! the stable mutation runner `src/bin/stable_fuzz.rs`; see `fuzz/README.md`.
//!
//! Formats whose body is behind a crc32 are also fuzzed "sealed": the harness computes the
//! checksums itself, so mutations reach the decoder past the crc check instead of dying there.
//! Targets that need files write them under one scratch directory per process (in `$TMPDIR`).

use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use verfs_coordination::txlog::{self, LogConfig, Lsn, StateMachine, TxLog};
use verfs_coordination::{ctlfile, journal, lease, lock, manifest, two_phase};
use verfs_engine::format::meta as metafmt;
use verfs_engine::format::pack::{
    self as packfmt, IndexEntry, PackHeader, PackIndex, RecordHeader,
};
use verfs_engine::format::FormatFile;
use verfs_engine::ids::{ChunkId, InodeNo, PackId};
use verfs_engine::meta::{FileKind, Inode, MetaState, Op, Timestamp};
use verfs_engine::meta::tree::{PagePtr, PageStore, PageWriter, Root};
use verfs_engine::ops::gc;
use verfs_engine::{config, pack};

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target, in the order `run.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "txlog_record",
        run: txlog_record,
        seeds: txlog_record_seeds,
    },
    Target {
        name: "txlog_open",
        run: txlog_open,
        seeds: txlog_open_seeds,
    },
    Target {
        name: "checkpoint",
        run: checkpoint,
        seeds: checkpoint_seeds,
    },
    Target {
        name: "meta_ops",
        run: meta_ops,
        seeds: meta_ops_seeds,
    },
    Target {
        name: "format_file",
        run: format_file,
        seeds: format_file_seeds,
    },
    Target {
        name: "pack_header",
        run: pack_header,
        seeds: pack_header_seeds,
    },
    Target {
        name: "pack_record",
        run: pack_record,
        seeds: pack_record_seeds,
    },
    Target {
        name: "pack_index",
        run: pack_index,
        seeds: pack_index_seeds,
    },
    Target {
        name: "metapage",
        run: metapage,
        seeds: metapage_seeds,
    },
    Target {
        name: "discard",
        run: discard,
        seeds: discard_seeds,
    },
    Target {
        name: "ctlfile",
        run: ctl,
        seeds: ctl_seeds,
    },
    Target {
        name: "manifest",
        run: manifest_recover,
        seeds: manifest_seeds,
    },
    Target {
        name: "journal",
        run: journal_file,
        seeds: journal_seeds,
    },
    Target {
        name: "lease",
        run: lease_folder,
        seeds: lease_seeds,
    },
    Target {
        name: "lock_table",
        run: lock_table,
        seeds: lock_table_seeds,
    },
    Target {
        name: "config",
        run: config_file,
        seeds: config_seeds,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Separates the files of a multi-file input. Chosen so that no valid encoding contains it.
pub const SPLIT: &[u8] = b"\x00\xffNEXT\xff\x00";

/// Split `data` at [`SPLIT`] into exactly `n` parts (missing parts are empty).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SPLIT.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    while out.len() < n {
        out.push(&[]);
    }
    out
}

pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SPLIT)
}

/// A fresh, empty directory for one run (the same path every run of this process).
fn scratch() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("verfs-fuzz-")
            .tempdir()
            .expect("scratch dir");
        d.keep()
    });
    let dir = base.join("run");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch run dir");
    dir
}

/// A rejection must name the file it is about.
#[track_caller]
fn names(err: &dyn Display, path: &Path) {
    let msg = err.to_string();
    let p = path.display().to_string();
    assert!(msg.contains(&p), "error does not name {p}: {msg}");
}

/// An engine `Corrupt` error must name the file and an offset inside it.
#[track_caller]
fn engine_err(e: &verfs_engine::error::Error, path: &Path, len: usize) {
    names(e, path);
    if let verfs_engine::error::Error::Corrupt { offset, .. } = e {
        assert!(
            *offset <= len as u64,
            "offset {offset} past the end ({len}): {e}"
        );
    }
}

#[track_caller]
fn log_err(e: &txlog::LogError, len: Option<usize>) {
    if let txlog::LogError::Corrupt { offset, path, .. } = e {
        names(e, path);
        if let Some(len) = len {
            assert!(
                *offset <= len as u64,
                "offset {offset} past the end ({len}): {e}"
            );
        }
    }
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Transaction log

/// Walk the records of a segment body with `read_record_at`, as catch-up does.
pub fn txlog_record(data: &[u8]) {
    let dir = scratch();
    let path = dir.join("seg");
    fs::write(&path, data).expect("write");
    let f = fs::File::open(&path).expect("open");
    let mut off = 0u64;
    let len = data.len() as u64;
    loop {
        match txlog::read_record_at(&f, off, len).expect("read_record_at io") {
            txlog::RecordAt::Valid {
                len: l, payload, ..
            } => {
                assert!(l >= txlog::RECORD_HEADER_LEN && off + l <= len);
                assert_eq!(payload.len() as u64 + txlog::RECORD_HEADER_LEN, l);
                off += l;
            }
            _ => break,
        }
    }
}

fn txlog_record_seeds() -> Vec<Vec<u8>> {
    let mut a = txlog::encode_record(1, Lsn(1), &metafmt::encode_ops(&sample_ops()));
    a.extend(txlog::encode_record(2, Lsn(2), &3u64.to_le_bytes()));
    vec![a, txlog::encode_record(1, Lsn(7), b"")]
}

/// A whole log directory: two segments and a checkpoint, each named after its own header (so the
/// fuzzer controls the names too), opened and replayed with the engine's state machine.
pub fn txlog_open(data: &[u8]) {
    let parts = split(data, 3);
    let dir = scratch();
    let log_dir = dir.join("log");
    let ckpt_dir = dir.join("checkpoints");
    fs::create_dir_all(&log_dir).expect("mkdir");
    fs::create_dir_all(&ckpt_dir).expect("mkdir");
    fs::write(log_dir.join("LOCK"), b"").expect("lock");
    for seg in &parts[..2] {
        let first = le64(seg, 12).unwrap_or(1);
        fs::write(log_dir.join(format!("{first:020}.seg")), seg).expect("seg");
    }
    if !parts[2].is_empty() {
        let lsn = le64(parts[2], 16).unwrap_or(0);
        fs::write(ckpt_dir.join(format!("{lsn:020}.ckpt")), parts[2]).expect("ckpt");
    }
    match TxLog::<MetaState>::open(
        &log_dir,
        &ckpt_dir,
        LogConfig::default(),
        Box::new(|| Ok(())),
        None,
    ) {
        Ok(log) => {
            let _ = log.read(|s, lsn| (s.inode_count(), s.entries(InodeNo::ROOT).is_ok(), lsn));
        }
        Err(e) => log_err(&e, None),
    }
}

fn txlog_open_seeds() -> Vec<Vec<u8>> {
    let ops = metafmt::encode_ops(&sample_ops());
    let mut seg1 = txlog::encode_segment_header(Lsn(1)).to_vec();
    seg1.extend(txlog::encode_record(1, Lsn(1), &ops));
    seg1.extend(txlog::encode_record(2, Lsn(2), &2u64.to_le_bytes()));
    let mut seg2 = txlog::encode_segment_header(Lsn(2)).to_vec();
    seg2.extend(txlog::encode_record(1, Lsn(2), &ops));
    let ck = txlog::encode_checkpoint_file(Lsn(1), txlog::LogPosition::segment_start(Lsn(2)), &sample_body());
    vec![join(&[&seg1, &seg2, &ck]), join(&[&seg1, &seg2, b""]), seg1]
}

/// A checkpoint file, as is and sealed (valid header and crcs around the fuzzed body).
pub fn checkpoint(data: &[u8]) {
    let path = Path::new("/store/checkpoints/00000000000000000001.ckpt");
    match txlog::decode_checkpoint_file(path, data) {
        Ok((_, body)) => {
            let _ = MetaState::decode_checkpoint(&None, Lsn(1), &body);
        }
        Err(e) => {
            names(&e, path);
            log_err(&e, Some(data.len()));
        }
    }
    let sealed = txlog::encode_checkpoint_file(Lsn(1), txlog::LogPosition::segment_start(Lsn(2)), data);
    let (_, body) = txlog::decode_checkpoint_file(path, &sealed).expect("sealed checkpoint");
    if let Ok(s) = MetaState::decode_checkpoint(&None, Lsn(1), &body) {
        let _ = s.inode(InodeNo::ROOT);
    }
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let body = sample_body();
    vec![txlog::encode_checkpoint_file(Lsn(3), txlog::LogPosition::segment_start(Lsn(4)), &body), body]
}

/// A log record payload (and a checkpoint body): metadata ops, applied to a state.
pub fn meta_ops(data: &[u8]) {
    if let Ok(ops) = metafmt::decode_ops(data) {
        let mut s = MetaState::default();
        for op in &ops {
            // An op that does not fit is applied as far as it can be; a bad snapshot root is
            // refused: no panic either way.
            let _ = s.apply_op(1, op);
        }
        // What decodes must encode back to the same bytes: the format has one encoding.
        assert_eq!(metafmt::encode_ops(&ops), data, "re-encoding differs");
    }
}

fn meta_ops_seeds() -> Vec<Vec<u8>> {
    vec![metafmt::encode_ops(&sample_ops()), metafmt::encode_ops(&[])]
}

fn sample_ops() -> Vec<Op> {
    let t = Timestamp {
        secs: 1_700_000_000,
        nsecs: 5,
    };
    let dir = Inode {
        ino: InodeNo::ROOT,
        kind: FileKind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
        size: 0,
        atime: t,
        mtime: t,
        ctime: t,
        rdev: 0,
        target: Vec::new(),
        xattrs: [(b"user.a".to_vec(), b"1".to_vec())].into_iter().collect(),
    };
    let file = Inode {
        ino: InodeNo(2),
        kind: FileKind::File,
        nlink: 1,
        size: 5,
        ..dir.clone()
    };
    let chunk = ChunkId::of(b"hello");
    vec![
        Op::PutInode(dir),
        Op::PutInode(file),
        Op::Link {
            parent: InodeNo::ROOT,
            name: b"f".to_vec(),
            ino: InodeNo(2),
        },
        Op::SetExtents {
            ino: InodeNo(2),
            extents: vec![verfs_engine::meta::Extent {
                file_off: 0,
                chunk,
                chunk_off: 0,
                len: 5,
            }],
        },
        Op::AddChunk {
            id: chunk,
            entry: verfs_engine::meta::ChunkEntry {
                pack: PackId(1),
                raw_len: 5,
            },
        },
        Op::SnapshotBegin {
            id: 1,
            name: b"s".to_vec(),
            time: t,
        },
        Op::SnapshotReady { id: 1 },
        Op::Unlink {
            parent: InodeNo::ROOT,
            name: b"g".to_vec(),
        },
        Op::RemoveChunk { id: ChunkId(9) },
        Op::SnapshotDrop { id: 4 },
        Op::DeleteInode(InodeNo(77)),
    ]
}

/// A format-3 checkpoint body of the sample ops (its pages written to a temporary directory).
fn sample_body() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = std::sync::Arc::new(PageStore::open(dir.path(), 1 << 20).expect("page store"));
    let mut s = MetaState::empty(&Some(pages));
    for op in sample_ops() {
        let _ = s.apply_op(1, &op);
    }
    s.encode_checkpoint(Lsn(1)).expect("checkpoint body")
}

// ---------------------------------------------------------------------------------------------
// Engine files

pub fn format_file(data: &[u8]) {
    let _ = FormatFile::decode(Path::new("/store/FORMAT"), data);
}

fn format_file_seeds() -> Vec<Vec<u8>> {
    vec![FormatFile {
        version: 2,
        uuid: [7; 16],
    }
    .encode()
    .to_vec()]
}

pub fn pack_header(data: &[u8]) {
    if let Err(e) = PackHeader::decode(data) {
        assert!(e.at <= data.len() as u64, "offset past the end: {e}");
    }
    let h = PackHeader { pack_id: PackId(1) };
    let _ = h.is_torn_prefix(data);
}

fn pack_header_seeds() -> Vec<Vec<u8>> {
    vec![PackHeader {
        pack_id: PackId(0x1234),
    }
    .encode()
    .to_vec()]
}

/// Build a pack from fuzzed records and walk it the three ways verfs does: full scan with hash
/// checks (fsck), a reader without `.idx` (scanned index) reading every chunk, and check_index.
///
/// Part 0: raw bytes appended after a valid header. Part 1: "sealed" records, each made of the
/// input's bytes `[flags, raw_len u32, payload_len u16, payload...]` with a valid crc, so that
/// payload decoding (zstd, hashing) is reached.
pub fn pack_record(data: &[u8]) {
    let parts = split(data, 2);
    let id = PackId(0x00ab_cdef);
    let mut file = PackHeader { pack_id: id }.encode().to_vec();
    file.extend_from_slice(parts[0]);
    let mut rest = parts[1];
    while rest.len() >= 7 {
        let flags = rest[0];
        let raw_len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let plen = usize::from(u16::from_le_bytes([rest[5], rest[6]])).min(rest.len() - 7);
        let payload = &rest[7..7 + plen];
        rest = &rest[7 + plen..];
        let mut hb = [0u8; packfmt::RECORD_HEADER_LEN];
        hb[0..4].copy_from_slice(&packfmt::RECORD_MAGIC);
        hb[4] = flags;
        // Chunk id: the real hash when raw, so that valid chunks get through the reader too.
        let cid = ChunkId::of(payload);
        hb[8..24].copy_from_slice(&cid.to_bytes());
        hb[24..28].copy_from_slice(&raw_len.to_le_bytes());
        hb[28..32].copy_from_slice(&(plen as u32).to_le_bytes());
        let mut h = crc32fast_hash(&hb[0..32], payload);
        if flags & 0x80 != 0 {
            h ^= 1; // let the fuzzer ask for a bad crc too
        }
        hb[32..36].copy_from_slice(&h.to_le_bytes());
        file.extend_from_slice(&hb);
        file.extend_from_slice(payload);
    }
    for b in [&file[packfmt::PACK_HEADER_LEN..], data] {
        if let Ok(h) = RecordHeader::decode(b) {
            assert!(h.record_len() >= packfmt::RECORD_HEADER_LEN as u64);
            let _ = packfmt::check_record_crc(b, &b[packfmt::RECORD_HEADER_LEN..]);
        }
        let _ = packfmt::record_crc_matches_with_len(b, b.get(36..).unwrap_or(&[]));
    }
    let dir = scratch();
    let ppath = pack::pack_path(&dir, id);
    fs::write(&ppath, &file).expect("write pack");
    walk_pack(&dir, id, &ppath, file.len());
}

fn crc32fast_hash(a: &[u8], b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(a);
    h.update(b);
    h.finalize()
}

fn walk_pack(dir: &Path, id: PackId, ppath: &Path, len: usize) {
    let report = pack::scan(ppath).expect("scan io");
    for p in &report.problems {
        assert!(p.offset <= len as u64, "problem past the end: {p}");
        names(p, &p.path);
    }
    match pack::PackReader::open(dir, id) {
        Ok(r) => {
            for cid in r.chunk_ids() {
                match r.read_chunk(cid) {
                    Ok(bytes) => assert_eq!(ChunkId::of(&bytes), cid),
                    Err(e) => names(&e, dir),
                }
            }
            let _ = r.read_chunk(ChunkId(1));
        }
        Err(e) => names(&e, ppath),
    }
    if let Ok(problems) = pack::check_index(dir, id) {
        for p in &problems {
            names(p, &p.path);
        }
    }
}

fn pack_record_seeds() -> Vec<Vec<u8>> {
    let (pack, _) = sample_pack();
    let body = pack[packfmt::PACK_HEADER_LEN..].to_vec();
    let mut sealed = vec![0u8];
    sealed.extend_from_slice(&5u32.to_le_bytes());
    sealed.extend_from_slice(&5u16.to_le_bytes());
    sealed.extend_from_slice(b"hello");
    vec![join(&[&body, &sealed]), body]
}

/// A sealed pack of a few chunks (one compressible) and its `.idx`, made by the real writer.
fn sample_pack() -> (Vec<u8>, Vec<u8>) {
    static PACK: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    PACK.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        let id = PackId(0x00ab_cdef);
        let mut w = pack::PackWriter::create_with_id(d.path(), id, 3).expect("writer");
        for chunk in [&b"hello"[..], &[b'z'; 3000][..], b"0123456789"] {
            w.append(ChunkId::of(chunk), chunk).expect("append");
        }
        w.seal().expect("seal");
        (
            fs::read(pack::pack_path(d.path(), id)).expect("pack"),
            fs::read(pack::index_path(d.path(), id)).expect("idx"),
        )
    })
    .clone()
}

/// A `.idx` beside a valid pack: decoded alone, then loaded by a reader and checked by fsck.
/// Part 0: the index bytes. Part 1 (if non-empty): entries, 32 bytes each, sealed into a valid
/// index (header and crc computed), so that the entry checks are reached.
pub fn pack_index(data: &[u8]) {
    let parts = split(data, 2);
    let id = PackId(0x00ab_cdef);
    if let Err(e) = PackIndex::decode(parts[0]) {
        assert!(e.at <= parts[0].len() as u64, "offset past the end: {e}");
    }
    let idx = if parts[1].is_empty() {
        parts[0].to_vec()
    } else {
        let mut b = packfmt::INDEX_MAGIC.to_vec();
        b.extend_from_slice(&packfmt::INDEX_VERSION.to_le_bytes());
        b.extend_from_slice(&id.0.to_le_bytes());
        let n = parts[1].len() / packfmt::INDEX_ENTRY_LEN;
        b.extend_from_slice(&(n as u32).to_le_bytes());
        b.extend_from_slice(&parts[1][..n * packfmt::INDEX_ENTRY_LEN]);
        let crc = crc32fast_hash(&b, &[]);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    };
    let dir = scratch();
    let (pack_bytes, _) = sample_pack();
    let ppath = pack::pack_path(&dir, id);
    fs::write(&ppath, &pack_bytes).expect("pack");
    fs::write(pack::index_path(&dir, id), &idx).expect("idx");
    walk_pack(&dir, id, &ppath, pack_bytes.len().max(idx.len()));
}

fn pack_index_seeds() -> Vec<Vec<u8>> {
    let (_, idx) = sample_pack();
    let entries = PackIndex::decode(&idx).expect("idx").entries;
    let mut raw = Vec::new();
    for e in &entries {
        let IndexEntry {
            chunk_id,
            offset,
            raw_len,
            stored_len,
        } = *e;
        raw.extend_from_slice(&chunk_id.to_bytes());
        raw.extend_from_slice(&offset.to_le_bytes());
        raw.extend_from_slice(&raw_len.to_le_bytes());
        raw.extend_from_slice(&stored_len.to_le_bytes());
    }
    vec![idx.clone(), join(&[&idx, &raw])]
}

/// A metadata page file (`meta/<id>.mpg`): verified page by page, and its first page read
/// through a root that points at it with the right length and hash.
pub fn metapage(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PageStore::open(dir.path(), 1 << 20).expect("page store");
    let id = 0x42u64;
    fs::write(store.file_path(id), data).expect("page file");
    let _ = store.verify_file(id);
    if data.len() > 32 {
        let body = &data[32..];
        let ptr = PagePtr {
            file: id,
            offset: 32,
            len: body.len().min(u32::MAX as usize) as u32,
            hash: xxhash_rust::xxh3::xxh3_128(body),
        };
        let root = Root::new(ptr);
        let _ = store.get(&root, b"i");
        for e in store.range(&root, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded).take(64) {
            if e.is_err() {
                break;
            }
        }
    }
}

fn metapage_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PageStore::open(dir.path(), 1 << 20).expect("page store");
    let mut w = PageWriter::new(&store).expect("writer");
    let edits: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..200u32)
        .map(|i| (format!("key{i:05}").into_bytes(), Some(vec![i as u8; 40])))
        .collect();
    let _ = store.apply(&Root::EMPTY, &edits, &mut w).expect("apply");
    let id = w.finish().expect("finish").expect("a file");
    vec![fs::read(store.file_path(id)).expect("read")]
}

/// A `.discard` file, as is and with every record's crc recomputed.
pub fn discard(data: &[u8]) {
    let id = PackId(0x77);
    let path = gc::discard_path(Path::new("/store/packs"), id);
    let check = |b: &[u8]| match gc::parse_discard(&path, id, b) {
        Ok(d) => {
            assert!(d.valid_len <= b.len() as u64);
            if let Some(t) = d.torn_at {
                assert!(t <= b.len() as u64);
            }
        }
        Err(e) => engine_err(&e, &path, b.len()),
    };
    check(data);
    // Sealed: header for this pack, then the input cut into records at their length fields.
    let mut b = discard_header(id);
    let mut rest = data;
    while rest.len() >= 8 {
        let kind = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        b.extend(discard_record(kind, &rest[3..3 + len]));
        rest = &rest[3 + len..];
    }
    b.extend_from_slice(rest);
    check(&b);
}

fn discard_header(id: PackId) -> Vec<u8> {
    let mut h = gc::DISCARD_MAGIC.to_vec();
    h.extend_from_slice(&gc::DISCARD_VERSION.to_le_bytes());
    h.extend_from_slice(&id.0.to_le_bytes());
    let crc = crc32fast_hash(&h, &[]);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn discard_record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = gc::DISCARD_RECORD_MAGIC.to_vec();
    out.push(kind);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32fast_hash(&out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn discard_seeds() -> Vec<Vec<u8>> {
    let id = PackId(0x77);
    let mut entry = ChunkId(5).to_bytes().to_vec();
    entry.extend_from_slice(&100u32.to_le_bytes());
    let mut ck = 9u64.to_le_bytes().to_vec();
    ck.extend_from_slice(&[0; 8]);
    let mut file = discard_header(id);
    file.extend(discard_record(1, &entry));
    file.extend(discard_record(2, &ck));
    let mut sealed = vec![1u8];
    sealed.extend_from_slice(&(entry.len() as u16).to_le_bytes());
    sealed.extend_from_slice(&entry);
    sealed.push(2);
    sealed.extend_from_slice(&16u16.to_le_bytes());
    sealed.extend_from_slice(&ck);
    vec![file, sealed]
}

// ---------------------------------------------------------------------------------------------
// Coordination files

/// The control-file envelope, decoded as every document type verfs reads from one.
pub fn ctl(data: &[u8]) {
    let path = Path::new("/store/ctl/file");
    fn one<T: serde::de::DeserializeOwned>(path: &Path, kind: &str, data: &[u8]) {
        if let Err(e) = ctlfile::decode::<T>(path, kind, data) {
            names(&e, path);
            assert!(e.to_string().contains("at byte"), "no offset: {e}");
        }
    }
    one::<serde_json::Value>(path, "doc", data);
    one::<lease::LeaseInfo>(path, lease::INFO_KIND, data);
    one::<two_phase::Proposal>(path, two_phase::PROPOSAL_KIND, data);
    one::<two_phase::Vote>(path, two_phase::VOTE_KIND, data);
    one::<two_phase::Decision>(path, two_phase::DECISION_KIND, data);
    // Sealed: the fuzzed bytes as the body of a valid envelope, so JSON parsing is reached.
    let mut sealed = format!(
        "{} {} {:08x}\n",
        ctlfile::MAGIC,
        two_phase::PROPOSAL_KIND,
        crc32fast_hash(data, &[])
    )
    .into_bytes();
    sealed.extend_from_slice(data);
    sealed.push(b'\n');
    one::<two_phase::Proposal>(path, two_phase::PROPOSAL_KIND, &sealed);
    one::<serde_json::Value>(path, two_phase::PROPOSAL_KIND, &sealed);
}

fn sample_lease_id() -> lease::LeaseId {
    "0123456789abcdef".parse().expect("lease id")
}

fn ctl_seeds() -> Vec<Vec<u8>> {
    let p = two_phase::Proposal {
        txn: "0123456789abcdef-fedcba9876543210".parse().expect("txn"),
        coordinator: sample_lease_id(),
        kind: "gc-delete-packs".into(),
        payload: serde_json::json!({"packs": [1, 2]}),
        participants: vec![sample_lease_id()],
        created_unix_ms: 5,
        timeout_ms: 100,
    };
    vec![
        ctlfile::encode(two_phase::PROPOSAL_KIND, &p),
        ctlfile::encode(
            two_phase::VOTE_KIND,
            &two_phase::Vote::Abort { reason: "x".into() },
        ),
        serde_json::to_vec(&p).expect("json"),
    ]
}

/// A manifests directory holding a fuzzed prepare and commit record of a dead owner, recovered.
/// Targets are confined to the scratch store: `..` and absolute paths must be refused.
pub fn manifest_recover(data: &[u8]) {
    let parts = split(data, 2);
    let root = scratch();
    let mdir = root.join("manifests");
    fs::create_dir_all(&mdir).expect("mkdir");
    fs::create_dir_all(root.join("a")).expect("mkdir");
    let id = "0123456789abcdef-00000000000000aa";
    fs::write(mdir.join(format!("{id}.prepare")), parts[0]).expect("prepare");
    if !parts[1].is_empty() {
        fs::write(mdir.join(format!("{id}.commit")), parts[1]).expect("commit");
    }
    let report = manifest::recover(&mdir, &|_| true).expect("recover");
    for p in &report.problems {
        assert!(!p.reason.is_empty());
    }
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let id = "0123456789abcdef-00000000000000aa";
    let entries = serde_json::json!([
        {"target": "a/t", "op": "write", "len": 3, "crc32": 0},
        {"target": "a/u", "op": "remove"}
    ]);
    let prepare = serde_json::json!({"id": id, "entries": entries});
    let commit = serde_json::json!({"decision": "commit", "id": id, "entries": entries});
    let abort = serde_json::json!({"decision": "abort", "id": id, "reason": "r"});
    let p = ctlfile::encode(manifest::PREPARE_KIND, &prepare);
    vec![
        join(&[&p, &ctlfile::encode(manifest::COMMIT_KIND, &commit)]),
        join(&[&p, &ctlfile::encode(manifest::COMMIT_KIND, &abort)]),
        p,
    ]
}

/// A journal: decoded as the cleaner does, then opened for appending as its owner does.
pub fn journal_file(data: &[u8]) {
    let all = journal::decode_all(data);
    assert!(all.valid_len <= data.len() as u64);
    if let Some(c) = &all.corrupt {
        assert!(c.offset <= data.len() as u64);
    }
    let dir = scratch();
    fs::write(dir.join(journal::JOURNAL_FILE), data).expect("journal");
    match journal::Journal::open(&dir) {
        Ok(j) => {
            let a = j.begin("k", b"p").expect("begin after open");
            j.end(a).expect("end");
        }
        Err(e) => names(&e, &dir),
    }
}

fn journal_seeds() -> Vec<Vec<u8>> {
    let mut b = journal::Record::Begin {
        id: journal::ActionId(1),
        kind: "open-pack".into(),
        payload: b"{\"pack\":1}".to_vec(),
    }
    .encode();
    b.extend(
        journal::Record::End {
            id: journal::ActionId(1),
        }
        .encode(),
    );
    b.extend(
        journal::Record::Begin {
            id: journal::ActionId(2),
            kind: "gc".into(),
            payload: vec![],
        }
        .encode(),
    );
    vec![b]
}

/// A lease folder: name, info and heartbeat as `lease::list` reads them.
/// Part 0: folder name; part 1: info; part 2: heartbeat.
pub fn lease_folder(data: &[u8]) {
    let parts = split(data, 3);
    let _ = lease::Heartbeat::decode(parts[2]);
    let name = String::from_utf8_lossy(parts[0]);
    let _ = lease::parse_folder_name(&name);
    let root = scratch();
    let leases = root.join("leases");
    fs::create_dir_all(&leases).expect("mkdir");
    let ok_name = !name.is_empty()
        && name.len() < 200
        && !name.contains(['/', '\0'])
        && name != "."
        && name != "..";
    let folder = leases.join(if ok_name { &*name } else { "0123456789abcdef" });
    if fs::create_dir_all(&folder).is_ok() {
        fs::write(folder.join(lease::INFO_FILE), parts[1]).expect("info");
        fs::write(folder.join(lease::HEARTBEAT_FILE), parts[2]).expect("hb");
    }
    let _ = lease::list(&leases).expect("list");
}

fn lease_seeds() -> Vec<Vec<u8>> {
    let info = lease::LeaseInfo {
        id: sample_lease_id(),
        pid: 1,
        pid_start_ticks: 2,
        host: "h".into(),
        boot_id: "b".into(),
        pid_ns: "pid:[1]".into(),
        kind: "cli put".into(),
        started_unix_ms: 3,
    };
    let hb = lease::Heartbeat {
        counter: 1,
        unix_ms: 2,
    }
    .encode();
    vec![
        join(&[
            b"0123456789abcdef",
            &ctlfile::encode(lease::INFO_KIND, &info),
            &hb,
        ]),
        join(&[b"0123456789abcdef.claimed-fedcba9876543210", b"", &hb]),
        join(&[b".new-0123456789abcdef-77", b"", b""]),
    ]
}

/// The lock table: verfs never reads its bytes (only OFD byte-range locks on it), so whatever a
/// damaged table holds must not matter. Open, lock and unlock over a table of fuzzed content.
pub fn lock_table(data: &[u8]) {
    let dir = scratch();
    fs::write(dir.join("table"), data).expect("table");
    let t = lock::LockTable::open(&dir).expect("open table");
    let o = t.owner().expect("owner");
    let name = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    let res = lock::Resource::Named(name);
    o.try_acquire(&res, lock::Mode::Ex)
        .expect("acquire on a private table");
    o.release(&res).expect("release");
}

fn lock_table_seeds() -> Vec<Vec<u8>> {
    vec![b"gc".to_vec(), vec![0; 64]]
}

/// `config.toml`: loaded and validated as `Store::open` does, then the chunker it configures is
/// built and run, so a validation gap shows up as a panic in fastcdc.
pub fn config_file(data: &[u8]) {
    let dir = scratch();
    let path = dir.join("config.toml");
    fs::write(&path, data).expect("config");
    match config::Config::load(&path) {
        Ok(c) => {
            let p = c.chunker();
            let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
            let chunker =
                verfs_engine::chunker::Chunker::new(&data[..], p).expect("validated params");
            let total: usize = chunker.map(|c| c.expect("in-memory read").data.len()).sum();
            assert_eq!(total, data.len());
        }
        Err(e) => names(&e, &path),
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    vec![
        config::DEFAULT_TOML.as_bytes().to_vec(),
        b"[chunking]\nmin_size = 4096\navg_size = 16384\nmax_size = 65536\n".to_vec(),
    ]
}
