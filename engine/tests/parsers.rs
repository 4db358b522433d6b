//! Every parser of engine files against hostile bytes (issue 11, "fuzzing every on-disk
//! parser"): metadata ops (log payloads, checkpoint bodies), the format file, pack header, record
//! and index, `.snap`, `.discard` and `config.toml`. Arbitrary bytes and mutated valid encodings
//! (bit flips, cuts, extensions, length fields set to extremes) must never panic, never allocate
//! from an unchecked length, and every rejection must name the file and a byte offset inside it.
//! The long-running version is `fuzz/` (cargo fuzz). Case count: `PROPTEST_CASES` (default 64).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use verfs_coordination::txlog::StateMachine;
use verfs_engine::config::{Config, DEFAULT_TOML};
use verfs_engine::error::Error;
use verfs_engine::format::meta as metafmt;
use verfs_engine::format::pack::{self as packfmt, PackHeader, PackIndex, RecordHeader};
use verfs_engine::format::FormatFile;
use verfs_engine::ids::{ChunkId, InodeNo, PackId};
use verfs_engine::meta::{ChunkEntry, Extent, FileKind, Inode, MetaState, Op, Timestamp};
use verfs_engine::ops::gc;
use verfs_engine::pack;
use verfs_test_support::crc32;
use verfs_test_support::hostile::{apply, hostile, mutation, proptest_config};

/// An engine error must name `path` and, if it is corruption, an offset inside the file.
#[track_caller]
fn names_file_and_offset(e: &Error, path: &Path, len: usize) {
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "no path: {msg}");
    match e {
        Error::Corrupt { offset, .. } => {
            assert!(
                *offset <= len as u64,
                "offset {offset} past the end ({len}): {msg}"
            );
            assert!(msg.contains(&format!("at byte {offset}")), "{msg}");
        }
        Error::Config { .. } => {}
        other => panic!("parsing bytes returned a non-corruption error: {other}"),
    }
}

fn t() -> Timestamp {
    Timestamp {
        secs: 1_700_000_000,
        nsecs: 5,
    }
}

fn inode(ino: u64, kind: FileKind) -> Inode {
    Inode {
        ino: InodeNo(ino),
        kind,
        perm: 0o755,
        uid: 0,
        gid: 0,
        nlink: 1,
        size: 0,
        atime: t(),
        mtime: t(),
        ctime: t(),
        rdev: 0,
        target: Vec::new(),
        xattrs: [(b"user.a".to_vec(), b"1".to_vec())].into_iter().collect(),
    }
}

fn sample_ops() -> Vec<Op> {
    let chunk = ChunkId::of(b"hello");
    vec![
        Op::PutInode(inode(1, FileKind::Dir)),
        Op::PutInode(inode(2, FileKind::File)),
        Op::Link {
            parent: InodeNo::ROOT,
            name: b"f".to_vec(),
            ino: InodeNo(2),
        },
        Op::SetExtents {
            ino: InodeNo(2),
            extents: vec![Extent {
                file_off: 0,
                chunk,
                chunk_off: 0,
                len: 5,
            }],
        },
        Op::AddChunk {
            id: chunk,
            entry: ChunkEntry {
                pack: PackId(1),
                raw_len: 5,
            },
        },
        Op::SnapshotBegin {
            id: 1,
            name: b"s".to_vec(),
            time: t(),
        },
        Op::SnapshotReady {
            id: 1,
            root: verfs_engine::meta::tree::Root::EMPTY.encode().to_vec(),
        },
        Op::Unlink {
            parent: InodeNo::ROOT,
            name: b"g".to_vec(),
        },
        Op::DeleteInode(InodeNo(77)),
    ]
}

/// A checkpoint body of the sample ops' state, its pages in `pages`.
fn sample_body(pages: &std::sync::Arc<verfs_engine::meta::tree::PageStore>) -> Vec<u8> {
    let mut s = MetaState::empty(&Some(pages.clone()));
    for op in sample_ops() {
        s.apply_op(1, &op).unwrap();
    }
    s.encode_checkpoint(verfs_coordination::txlog::Lsn(1))
        .unwrap()
}

/// A sealed pack of three chunks (one compressed) and its `.idx`, made by the real writer.
fn sample_pack() -> (Vec<u8>, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let id = PackId(0xab);
    let mut w = pack::PackWriter::create_with_id(d.path(), id, 3).unwrap();
    for chunk in [&b"hello"[..], &[b'z'; 3000][..], b"0123456789"] {
        w.append(ChunkId::of(chunk), chunk).unwrap();
    }
    w.seal().unwrap();
    (
        fs::read(pack::pack_path(d.path(), id)).unwrap(),
        fs::read(pack::index_path(d.path(), id)).unwrap(),
    )
}

fn discard_file(id: PackId) -> Vec<u8> {
    let mut h = gc::DISCARD_MAGIC.to_vec();
    h.extend_from_slice(&gc::DISCARD_VERSION.to_le_bytes());
    h.extend_from_slice(&id.0.to_le_bytes());
    let c = crc32(&h);
    h.extend_from_slice(&c.to_le_bytes());
    let mut entry = ChunkId(5).to_bytes().to_vec();
    entry.extend_from_slice(&100u32.to_le_bytes());
    let mut ck = 9u64.to_le_bytes().to_vec();
    ck.extend_from_slice(&[0; 8]);
    for (kind, payload) in [(1u8, entry), (2, ck)] {
        let mut r = gc::DISCARD_RECORD_MAGIC.to_vec();
        r.push(kind);
        r.extend_from_slice(&[0, 0, 0]);
        r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let c = crc32(&[&r[..], &payload[..]].concat());
        r.extend_from_slice(&c.to_le_bytes());
        r.extend_from_slice(&payload);
        h.extend(r);
    }
    h
}

// Regression: an inode number of u64::MAX in a log payload, checkpoint or snapshot made
// `ino + 1` overflow (a panic in debug builds) in `MetaState::apply_op` and `snapshot::decode`.
#[test]
fn inode_number_u64_max_is_not_a_panic() {
    let ops = vec![
        Op::PutInode(inode(1, FileKind::Dir)),
        Op::PutInode(inode(u64::MAX, FileKind::File)),
        Op::Link {
            parent: InodeNo::ROOT,
            name: b"x".to_vec(),
            ino: InodeNo(u64::MAX),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let pages = std::sync::Arc::new(
        verfs_engine::meta::tree::PageStore::open(dir.path(), 1 << 20).unwrap(),
    );
    let ctx = Some(pages);
    let mut s = MetaState::empty(&ctx);
    s.apply(
        verfs_coordination::txlog::Lsn(1),
        &metafmt::encode_ops(&ops),
    )
    .unwrap();
    assert_eq!(s.next_ino, u64::MAX);
    let body = s
        .encode_checkpoint(verfs_coordination::txlog::Lsn(1))
        .unwrap();
    let back =
        MetaState::decode_checkpoint(&ctx, verfs_coordination::txlog::Lsn(1), &body).unwrap();
    assert_eq!(back.next_ino, u64::MAX);
    assert!(back.has_inode(InodeNo(u64::MAX)).unwrap());
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Log payloads: decode, apply, and what decodes re-encodes to the same bytes.
    #[test]
    fn meta_ops_never_panic(bytes in hostile(metafmt::encode_ops(&sample_ops()))) {
        match metafmt::decode_ops_at(&bytes) {
            Ok(ops) => {
                let mut s = MetaState::default();
                for op in &ops {
                    // An op that does not fit is applied as far as it can be; a snapshot root
                    // that does not decode is refused: either way, no panic.
                    let _ = s.apply_op(1, op);
                }
                prop_assert_eq!(metafmt::encode_ops(&ops), bytes);
            }
            Err(e) => {
                let (at, reason) = (e.at as usize, e.reason);
                prop_assert!(at <= bytes.len(), "{} {}", at, reason);
                prop_assert!(reason.contains("at byte"), "{}", reason);
            }
        }
    }

    #[test]
    fn format_file_never_panics(
        bytes in hostile(FormatFile { version: 3, uuid: [7; 16] }.encode().to_vec())
    ) {
        let _ = FormatFile::decode(Path::new("/s/FORMAT"), &bytes);
    }

    #[test]
    fn pack_structures_never_panic(
        header in hostile(PackHeader { pack_id: PackId(9) }.encode().to_vec()),
        record in hostile(sample_pack().0[packfmt::PACK_HEADER_LEN..].to_vec()),
        index in hostile(sample_pack().1),
    ) {
        if let Err(e) = PackHeader::decode(&header) {
            prop_assert!(e.at <= header.len() as u64, "{}", e);
        }
        if let Ok(h) = RecordHeader::decode(&record) {
            let _ = packfmt::check_record_crc(&record, &record[packfmt::RECORD_HEADER_LEN..]);
            prop_assert!(h.record_len() >= packfmt::RECORD_HEADER_LEN as u64);
        }
        let _ = packfmt::record_crc_matches_with_len(&record, record.get(36..).unwrap_or(&[]));
        if let Err(e) = PackIndex::decode(&index) {
            prop_assert!(e.at <= index.len() as u64, "{}", e);
        }
    }

    /// A damaged pack or `.idx` on disk, read the three ways verfs reads one: fsck's scan, a
    /// reader (from the `.idx` or by scanning) reading every chunk it lists, and check_index.
    #[test]
    fn damaged_pack_files_never_panic(
        which in 0u8..2,
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (p, i) = sample_pack();
        let (p, i) = if which == 0 { (apply(&p, &muts), i) } else { (p, apply(&i, &muts)) };
        let d = tempfile::tempdir().unwrap();
        let id = PackId(0xab);
        let ppath = pack::pack_path(d.path(), id);
        fs::write(&ppath, &p).unwrap();
        fs::write(pack::index_path(d.path(), id), &i).unwrap();
        let report = pack::scan(&ppath).unwrap();
        for pr in &report.problems {
            prop_assert!(pr.offset <= p.len().max(i.len()) as u64, "{}", pr);
            prop_assert!(pr.to_string().contains(&ppath.display().to_string()), "{}", pr);
        }
        match pack::PackReader::open(d.path(), id) {
            Ok(r) => {
                for c in r.chunk_ids() {
                    match r.read_chunk(c) {
                        Ok(bytes) => prop_assert_eq!(ChunkId::of(&bytes), c),
                        Err(e) => prop_assert!(e.to_string().contains(&d.path().display().to_string()), "{}", e),
                    }
                }
            }
            Err(e) => prop_assert!(e.to_string().contains(&ppath.display().to_string()), "{}", e),
        }
        for pr in pack::check_index(d.path(), id).unwrap() {
            prop_assert!(pr.offset <= p.len().max(i.len()) as u64, "{}", pr);
        }
    }

    // A checkpoint body of any bytes decodes or is refused, never a panic; a body that names
    // roots whose pages are damaged or missing answers an error on the read, never a panic.
    #[test]
    fn checkpoint_body_never_panics(body in hostile({
        let dir = tempfile::tempdir().unwrap();
        let pages = std::sync::Arc::new(verfs_engine::meta::tree::PageStore::open(dir.path(), 1 << 20).unwrap());
        sample_body(&pages)
    })) {
        let dir = tempfile::tempdir().unwrap();
        let pages = std::sync::Arc::new(verfs_engine::meta::tree::PageStore::open(dir.path(), 1 << 20).unwrap());
        let ctx = Some(pages);
        if let Ok(s) = MetaState::decode_checkpoint(&ctx, verfs_coordination::txlog::Lsn(1), &body) {
            let _ = s.inode(InodeNo::ROOT);
            let _ = s.entries(InodeNo::ROOT);
            let _ = s.referenced_chunks();
        }
    }

    #[test]
    fn discard_never_panics_and_names_file_and_offset(bytes in hostile(discard_file(PackId(5)))) {
        let p = Path::new("/s/packs/0000000000000005.discard");
        match gc::parse_discard(p, PackId(5), &bytes) {
            Ok(d) => {
                prop_assert!(d.valid_len <= bytes.len() as u64);
                prop_assert!(d.torn_at.is_none_or(|t| t <= bytes.len() as u64));
            }
            Err(e) => names_file_and_offset(&e, p, bytes.len()),
        }
    }

    /// A damaged `config.toml` is refused with its path (and line), and what is accepted builds
    /// a working chunker (a validation gap would panic in fastcdc).
    #[test]
    fn config_never_panics(bytes in hostile(DEFAULT_TOML.as_bytes().to_vec())) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.toml");
        fs::write(&path, &bytes).unwrap();
        match Config::load(&path) {
            Ok(c) => {
                let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
                let ch = verfs_engine::chunker::Chunker::new(&data[..], c.chunker()).unwrap();
                let total: usize = ch.map(|c| c.unwrap().data.len()).sum();
                prop_assert_eq!(total, data.len());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
            }
        }
    }
}
