//! Tests of pack files against `data-layout.md` section 5.7; each cites the [PACK-n] rule it proves.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::*;
use crate::format::pack::{RECORD_HEADER_LEN, RECORD_MAGIC};

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng(seed).fill(&mut v[..]);
    v
}

/// Text-like, compressible bytes.
fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "pack", "chunk", "record", "the", "of", "verfs", "store", "index", "lease", "journal",
        "seal", "and", "process", "crash", "durable", "a", "is", "to", "zstd", "hash",
    ];
    let mut r = rng(seed);
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(WORDS[r.gen_range(0..WORDS.len())].as_bytes());
        v.push(if r.gen_ratio(1, 12) { b'\n' } else { b' ' });
    }
    v.truncate(n);
    v
}

/// Some chunks: compressible, random, tiny, empty.
fn sample_chunks(n: usize, size: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 4 {
            0 => text_bytes(size, seed + i as u64),
            1 => random_bytes(size, seed + i as u64),
            2 => text_bytes(size / 3 + 1, seed + i as u64),
            _ => random_bytes(i % 7, seed + i as u64),
        })
        .collect()
}

fn write_pack(dir: &Path, chunks: &[Vec<u8>], seal: bool) -> (PackId, Vec<(ChunkId, RecordLoc)>) {
    let mut w = PackWriter::create(dir, 3).unwrap();
    let mut locs = Vec::new();
    for c in chunks {
        let id = ChunkId::of(c);
        locs.push((id, w.append(id, c).unwrap()));
    }
    let id = w.id();
    if seal {
        w.seal().unwrap();
    } else {
        w.sync().unwrap();
    }
    (id, locs)
}

fn scan_records(path: &Path) -> Vec<ScannedRecord> {
    let rep = scan(path).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
    rep.records
}

#[test]
fn create_writes_a_valid_empty_pack() {
    let d = tempfile::tempdir().unwrap();
    let w = PackWriter::create(d.path(), 3).unwrap();
    assert_eq!(fs::metadata(w.path()).unwrap().len(), 24);
    assert!(w.is_empty());
    let rep = scan(w.path()).unwrap();
    assert!(rep.is_clean());
    assert_eq!(rep.header_id, Some(w.id()));
    let sealed = w.seal().unwrap();
    assert_eq!(sealed.records, 0);
    let r = PackReader::open(d.path(), sealed.id).unwrap();
    assert_eq!(r.index_source(), IndexSource::Idx);
    assert_eq!(r.chunk_count(), 0);
}

#[test]
fn create_with_id_refuses_an_existing_pack() {
    let d = tempfile::tempdir().unwrap();
    let id = PackId(0xabc);
    let w = PackWriter::create_with_id(d.path(), id, 3).unwrap();
    assert_eq!(w.path(), pack_path(d.path(), id));
    match PackWriter::create_with_id(d.path(), id, 3) {
        Err(PackError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::metadata(w.path()).unwrap().len(), 24);
}

#[test]
fn round_trip_with_and_without_idx() {
    let d = tempfile::tempdir().unwrap();
    let chunks = sample_chunks(40, 70_000, 10);
    let (id, locs) = write_pack(d.path(), &chunks, true);
    assert!(locs.iter().any(|(_, l)| l.encoding == Encoding::Zstd));
    assert!(locs
        .iter()
        .any(|(_, l)| l.encoding == Encoding::Raw && l.raw_len > 1000));

    let check = |r: &PackReader| {
        for c in &chunks {
            assert_eq!(&r.read_chunk(ChunkId::of(c)).unwrap(), c);
        }
        assert!(matches!(
            r.read_chunk(ChunkId(12345)),
            Err(PackError::NotFound { .. })
        ));
        assert!(!r.contains(ChunkId(12345)).unwrap());
    };
    let r = PackReader::open(d.path(), id).unwrap();
    assert_eq!(r.index_source(), IndexSource::Idx);
    check(&r);
    assert!(check_index(d.path(), id).unwrap().is_empty());

    // [PACK-8]: a damaged .idx is rebuilt from a scan, never fatal.
    let ipath = index_path(d.path(), id);
    let mut idx = fs::read(&ipath).unwrap();
    idx[30] ^= 0x10;
    fs::write(&ipath, &idx).unwrap();
    let r = PackReader::open(d.path(), id).unwrap();
    assert!(
        matches!(r.index_source(), IndexSource::Scanned { reason } if reason.contains("damaged"))
    );
    check(&r);

    fs::remove_file(&ipath).unwrap();
    let r = PackReader::open(d.path(), id).unwrap();
    assert!(matches!(r.index_source(), IndexSource::Scanned { .. }));
    check(&r);
    assert_eq!(
        check_index(d.path(), id).unwrap()[0].kind,
        ProblemKind::IndexMissing
    );

    // seal_existing rebuilds the same .idx.
    let sealed = seal_existing(d.path(), id).unwrap();
    let unique: std::collections::HashSet<_> = chunks.iter().map(|c| ChunkId::of(c)).collect();
    assert_eq!(sealed.records, unique.len() as u64);
    assert!(check_index(d.path(), id).unwrap().is_empty());
}

#[test]
fn in_pack_dedup_writes_a_chunk_once() {
    // [PACK-10]
    let d = tempfile::tempdir().unwrap();
    let mut w = PackWriter::create(d.path(), 3).unwrap();
    let data = text_bytes(10_000, 1);
    let id = ChunkId::of(&data);
    let a = w.append(id, &data).unwrap();
    let len = w.len();
    let b = w.append(id, &data).unwrap();
    assert_eq!(a, b);
    assert_eq!(w.len(), len);
    assert_eq!(w.stats().records, 1);
    assert_eq!(w.stats().dedup_hits, 1);
    assert!(w.contains(id));
    let s = w.seal().unwrap();
    assert_eq!(s.records, 1);
    assert_eq!(scan_records(&s.path).len(), 1);
}

#[test]
fn append_compressed_matches_append_and_checks_lengths() {
    let d = tempfile::tempdir().unwrap();
    let mut c = ChunkCompressor::new(3).unwrap();
    let chunks = sample_chunks(8, 20_000, 3);
    let pre: Vec<CompressedChunk> = chunks
        .iter()
        .map(|x| c.compress_chunk(x).unwrap())
        .collect();
    let mut w = PackWriter::create(d.path(), 3).unwrap();
    for p in &pre {
        w.append_compressed(p.id, p.raw_len, p.encoding, &p.stored)
            .unwrap();
    }
    // [PACK-3]: lengths the format forbids are refused, and the writer stays usable.
    let bad = w.append_compressed(ChunkId(1), 10, Encoding::Zstd, &[0u8; 10]);
    assert!(
        matches!(bad, Err(PackError::InvalidInput { .. })),
        "{bad:?}"
    );
    let bad = w.append_compressed(ChunkId(1), 10, Encoding::Raw, &[0u8; 9]);
    assert!(matches!(bad, Err(PackError::InvalidInput { .. })));
    let huge = vec![0u8; (16 << 20) + 1];
    assert!(matches!(
        w.append(ChunkId::of(&huge), &huge),
        Err(PackError::InvalidInput { .. })
    ));
    let s = w.seal().unwrap();
    let r = PackReader::open(d.path(), s.id).unwrap();
    for x in &chunks {
        assert_eq!(&r.read_chunk(ChunkId::of(x)).unwrap(), x);
    }
    assert!(scan(&s.path).unwrap().is_clean());
}

#[test]
fn largest_chunk_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let big = random_bytes(16 << 20, 9);
    let (id, _) = write_pack(d.path(), std::slice::from_ref(&big), true);
    let r = PackReader::open(d.path(), id).unwrap();
    assert_eq!(r.read_chunk(ChunkId::of(&big)).unwrap(), big);
}

/// A small pack for the exhaustive damage tests.
fn small_pack(dir: &Path) -> (PackId, PathBuf, Vec<Vec<u8>>) {
    let chunks = vec![
        text_bytes(300, 1),
        random_bytes(90, 2),
        b"x".to_vec(),
        Vec::new(),
        text_bytes(200, 3),
        random_bytes(40, 4),
    ];
    let (id, _) = write_pack(dir, &chunks, true);
    (id, pack_path(dir, id), chunks)
}

/// What readers of a damaged copy of `small_pack` must do ([PACK-2]..[PACK-4]): a chunk whose
/// record the damage reaches (`hit`) is an error naming the pack, never wrong bytes; every other
/// chunk reads back exactly. Only damage to the 24-byte pack header may make `open` refuse the
/// whole pack (`header_damaged`), and then with an error naming it.
#[track_caller]
fn check_readers(
    dir: &Path,
    id: PackId,
    chunks: &[Vec<u8>],
    records: &[ScannedRecord],
    header_damaged: bool,
    hit: impl Fn(&ScannedRecord) -> bool,
    what: &str,
) {
    let path = pack_path(dir, id);
    let r = match PackReader::open(dir, id) {
        Ok(r) => r,
        Err(e) => {
            assert!(header_damaged, "{what}: open refused an intact header: {e}");
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "{what}: {e}"
            );
            return;
        }
    };
    for c in chunks {
        let cid = ChunkId::of(c);
        let rec = records
            .iter()
            .find(|x| x.chunk_id == cid)
            .expect("every chunk has a record");
        match r.read_chunk(cid) {
            Ok(got) => {
                assert_eq!(&got, c, "{what}: wrong bytes for chunk {cid}");
                assert!(
                    !hit(rec),
                    "{what}: damaged record at {} was served",
                    rec.offset
                );
            }
            Err(e) => {
                assert!(
                    hit(rec) || header_damaged,
                    "{what}: intact record at {} refused: {e}",
                    rec.offset
                );
                assert!(
                    matches!(e, PackError::Corrupt { .. } | PackError::NotFound { .. }),
                    "{what}: {e}"
                );
                assert!(
                    e.to_string().contains(&path.display().to_string()),
                    "{what}: {e}"
                );
            }
        }
    }
}

/// Every byte flipped, one at a time, is reported by `scan` with an offset ([PACK-1], [PACK-3],
/// [PACK-4]); a reader never returns wrong bytes; records away from the damage stay readable.
#[test]
fn every_flipped_byte_is_detected() {
    let src = tempfile::tempdir().unwrap();
    let (id, path, chunks) = small_pack(src.path());
    let orig = fs::read(&path).unwrap();
    let orig_records = scan_records(&path);
    let d = tempfile::tempdir().unwrap();
    let copy = pack_path(d.path(), id);
    for i in 0..orig.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = orig.clone();
            b[i] ^= mask;
            fs::write(&copy, &b).unwrap();
            let rep = scan(&copy).unwrap();
            assert!(
                !rep.problems.is_empty(),
                "flip {mask:#x} at byte {i} not detected"
            );
            let p = &rep.problems[0];
            // The reported offset is at or before the flipped byte, inside the damaged structure.
            assert!(
                p.offset <= i as u64,
                "flip at {i} reported at {}: {p}",
                p.offset
            );
            assert_eq!(p.path, copy);
            // At most the damaged record is lost ([PACK-2]: resync on the next valid record).
            assert!(
                rep.records.len() + 1 >= orig_records.len(),
                "flip at {i}: {:?}",
                rep.problems
            );
            for r in &rep.records {
                assert!(orig_records.contains(r));
            }
            // Readers: the damaged record is refused, every other one reads back exactly; both
            // with an index built by scanning and through the intact `.idx` (then only
            // `read_chunk`'s own checks stand between the damage and the caller).
            let at = i as u64;
            for with_idx in [false, true] {
                if with_idx {
                    fs::copy(index_path(src.path(), id), index_path(d.path(), id)).unwrap();
                }
                check_readers(
                    d.path(),
                    id,
                    &chunks,
                    &orig_records,
                    i < 24,
                    |r| r.offset <= at && at < r.end(),
                    &format!("flip {mask:#x} at {i} (.idx: {with_idx})"),
                );
            }
            fs::remove_file(index_path(d.path(), id)).unwrap();
            // The cleaner never cuts a complete record ([PACK-7]).
            if let Ok(Some(cut)) = truncate_torn_tail(&copy) {
                panic!("flip {mask:#x} at {i} made truncate_torn_tail cut at {cut}");
            }
        }
    }
}

/// A flipped byte in the .idx is reported by `check_index`, and readers fall back to a scan
/// ([PACK-8]).
#[test]
fn every_flipped_idx_byte_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let (id, _, chunks) = small_pack(d.path());
    let ipath = index_path(d.path(), id);
    let orig = fs::read(&ipath).unwrap();
    for i in 0..orig.len() {
        let mut b = orig.clone();
        b[i] ^= 0x04;
        fs::write(&ipath, &b).unwrap();
        let problems = check_index(d.path(), id).unwrap();
        assert!(!problems.is_empty(), "idx flip at {i} not detected");
        let r = PackReader::open(d.path(), id).unwrap();
        assert!(matches!(r.index_source(), IndexSource::Scanned { .. }));
        for c in &chunks {
            assert_eq!(&r.read_chunk(ChunkId::of(c)).unwrap(), c);
        }
    }
    // An .idx that is valid but disagrees with the pack is caught too.
    fs::write(&ipath, &orig).unwrap();
    let mut idx = crate::format::pack::PackIndex::decode(&orig).unwrap();
    idx.entries[0].offset += 1;
    fs::write(&ipath, idx.encode()).unwrap();
    let problems = check_index(d.path(), id).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.kind == ProblemKind::IndexMismatch),
        "{problems:?}"
    );
}

/// Cut at every length: nothing panics, and `truncate_torn_tail` leaves a valid prefix of the
/// original records ([PACK-7]) that `seal_existing` can seal.
#[test]
fn truncation_at_every_length() {
    let src = tempfile::tempdir().unwrap();
    let (id, path, chunks) = small_pack(src.path());
    let orig = fs::read(&path).unwrap();
    let orig_records = scan_records(&path);
    let d = tempfile::tempdir().unwrap();
    let copy = pack_path(d.path(), id);
    for len in 0..=orig.len() {
        fs::write(&copy, &orig[..len]).unwrap();
        let rep = scan(&copy).unwrap();
        let boundary = len == 24 || orig_records.iter().any(|r| r.end() == len as u64);
        assert_eq!(rep.is_clean(), boundary, "len {len}: {:?}", rep.problems);
        if !boundary {
            let kind = rep.problems.last().unwrap().kind;
            assert!(
                matches!(kind, ProblemKind::TornTail | ProblemKind::HeaderTorn),
                "len {len}: {kind:?}"
            );
        }
        // Readers: every record the cut left whole reads back; a cut one is refused.
        let l = len as u64;
        check_readers(
            d.path(),
            id,
            &chunks,
            &orig_records,
            len < 24,
            |r| r.end() > l,
            &format!("cut at {len}"),
        );
        let cut = truncate_torn_tail(&copy).unwrap();
        let new_len = fs::metadata(&copy).unwrap().len();
        assert_eq!(cut.is_some(), !boundary, "len {len}");
        if let Some(c) = cut {
            assert_eq!(c, new_len);
        }
        let after = scan(&copy).unwrap();
        assert!(
            after.is_clean(),
            "len {len} after cut: {:?}",
            after.problems
        );
        assert!(new_len <= len.max(24) as u64);
        assert_eq!(
            after.records[..],
            orig_records[..after.records.len()],
            "len {len}"
        );
        let sealed = seal_existing(d.path(), id).unwrap();
        assert_eq!(sealed.records as usize, after.records.len());
        fs::remove_file(index_path(d.path(), id)).unwrap();
    }
}

/// A complete final record with a bad crc is corruption: never cut, sealed around, reported
/// ([PACK-7]).
#[test]
fn damaged_final_record_is_not_cut() {
    let d = tempfile::tempdir().unwrap();
    let (id, path, _) = small_pack(d.path());
    fs::remove_file(index_path(d.path(), id)).unwrap();
    let mut b = fs::read(&path).unwrap();
    let last = scan_records(&path).last().copied().unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&path, &b).unwrap();
    assert_eq!(truncate_torn_tail(&path).unwrap(), None);
    assert_eq!(fs::metadata(&path).unwrap().len(), n as u64);
    let sealed = seal_existing(d.path(), id).unwrap();
    assert_eq!(sealed.problems.len(), 1);
    assert_eq!(sealed.problems[0].offset, last.offset);
    assert_eq!(sealed.problems[0].kind, ProblemKind::CrcMismatch);

    // Its stored_len grown past the end of file: still recognised as a complete record.
    let (id2, path2, _) = small_pack(d.path());
    let mut b = fs::read(&path2).unwrap();
    let last = scan_records(&path2).last().copied().unwrap();
    b[last.offset as usize + 28] ^= 0x08;
    fs::write(&path2, &b).unwrap();
    let rep = scan(&path2).unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert_eq!(rep.problems[0].kind, ProblemKind::RecordCorrupt);
    assert_eq!(truncate_torn_tail(&path2).unwrap(), None);
    let _ = id2;
}

/// A zero-filled tail (extended file whose data never reached the disk) is a torn tail ([PACK-7]).
#[test]
fn zero_filled_tail_is_cut() {
    let d = tempfile::tempdir().unwrap();
    let (id, path, _) = small_pack(d.path());
    let n = fs::metadata(&path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(n + 5000).unwrap();
    let rep = scan(&path).unwrap();
    assert_eq!(rep.torn_tail(), Some(n));
    assert_eq!(truncate_torn_tail(&path).unwrap(), Some(n));
    assert!(scan(&path).unwrap().is_clean());
    let _ = id;
}

/// Regression (crash images, issue 11): a power loss before the `fdatasync` of an append can
/// leave the last record's first bytes and zeros after them (the file grew, its last blocks were
/// never written). Zeros from any byte inside the last record, its header included, are a torn
/// tail ([PACK-7]): the cleaner cuts it (before, `recover` left it and `fsck` then reported a
/// crc mismatch), and the other records stay. Zeros inside a record that is not the last stay
/// corruption.
#[test]
fn zeros_inside_the_last_record_after_power_loss_are_a_torn_tail() {
    let src = tempfile::tempdir().unwrap();
    let (id, path, _) = small_pack(src.path());
    let orig = fs::read(&path).unwrap();
    let recs = scan_records(&path);
    let last = recs.last().unwrap().offset as usize;
    let d = tempfile::tempdir().unwrap();
    let copy = pack_path(d.path(), id);
    for k in last + 1..orig.len() {
        let mut b = orig.clone();
        b[k..].iter_mut().for_each(|x| *x = 0);
        if b == orig {
            continue;
        }
        fs::write(&copy, &b).unwrap();
        let rep = scan(&copy).unwrap();
        assert_eq!(
            rep.torn_tail(),
            Some(last as u64),
            "zeros from {k}: {:?}",
            rep.problems
        );
        assert_eq!(rep.problems.len(), 1, "zeros from {k}: {:?}", rep.problems);
        assert_eq!(
            truncate_torn_tail(&copy).unwrap(),
            Some(last as u64),
            "zeros from {k}"
        );
        assert_eq!(scan_records(&copy).len(), recs.len() - 1, "zeros from {k}");
    }
    // The same zeros inside a middle record, with the records after it intact: corruption.
    let mid = recs[recs.len() - 2].offset as usize;
    let mut b = orig.clone();
    b[mid + 20..last].iter_mut().for_each(|x| *x = 0);
    fs::write(&copy, &b).unwrap();
    let rep = scan(&copy).unwrap();
    assert_eq!(rep.torn_tail(), None, "{:?}", rep.problems);
    assert!(!rep.is_clean());
    assert_eq!(truncate_torn_tail(&copy).unwrap(), None);
}

/// Regression (crash images, issue 11): the 24-byte header of a new pack, written but not yet
/// synced at a power loss, can read back as a prefix of itself followed by zeros; that is a
/// torn header ([PACK-7]), which the cleaner completes (before, `recover` failed with "pack
/// header crc 00000000 != computed ...").
#[test]
fn header_prefix_then_zeros_after_power_loss_is_a_torn_header() {
    let d = tempfile::tempdir().unwrap();
    let id = PackId(0x1234);
    let path = pack_path(d.path(), id);
    let full = crate::format::pack::PackHeader { pack_id: id }.encode();
    for n in 1..24 {
        for len in n..=24 {
            let mut b = full[..n].to_vec();
            b.resize(len, 0);
            fs::write(&path, &b).unwrap();
            assert_eq!(
                truncate_torn_tail(&path).unwrap(),
                Some(24),
                "{n} bytes then zeros to {len}"
            );
            assert_eq!(fs::read(&path).unwrap(), full);
        }
    }
    // A complete, valid header is not torn.
    assert_eq!(truncate_torn_tail(&path).unwrap(), None);
    // A header with a wrong byte before the zeros is not torn.
    let mut b = full;
    b[3] ^= 1;
    b[12..].iter_mut().for_each(|x| *x = 0);
    fs::write(&path, b).unwrap();
    assert!(matches!(
        truncate_torn_tail(&path),
        Err(PackError::Corrupt { .. })
    ));
}

/// Non-record bytes after the last record are garbage: reported, not cut.
#[test]
fn trailing_garbage_is_reported_not_cut() {
    let d = tempfile::tempdir().unwrap();
    let (_, path, _) = small_pack(d.path());
    let mut b = fs::read(&path).unwrap();
    let n = b.len() as u64;
    b.extend_from_slice(b"garbage that is not a record at all, longer than a header");
    fs::write(&path, &b).unwrap();
    let rep = scan(&path).unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert_eq!(rep.problems[0].offset, n);
    assert_eq!(truncate_torn_tail(&path).unwrap(), None);
}

/// A header torn inside `create` is completed by the cleaner ([PACK-7]); a damaged one is not.
#[test]
fn torn_header_is_completed() {
    let d = tempfile::tempdir().unwrap();
    let id = PackId(0x1234);
    let path = pack_path(d.path(), id);
    let full = crate::format::pack::PackHeader { pack_id: id }.encode();
    for n in 0..24 {
        fs::write(&path, &full[..n]).unwrap();
        assert_eq!(
            scan(&path).unwrap().problems[0].kind,
            ProblemKind::HeaderTorn
        );
        assert!(PackReader::open(d.path(), id).is_err());
        assert_eq!(truncate_torn_tail(&path).unwrap(), Some(24));
        assert_eq!(fs::read(&path).unwrap(), full);
    }
    fs::write(&path, [0u8; 24]).unwrap();
    assert_eq!(truncate_torn_tail(&path).unwrap(), Some(24));
    fs::write(&path, b"VERFSPX").unwrap();
    assert!(matches!(
        truncate_torn_tail(&path),
        Err(PackError::Corrupt { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), b"VERFSPX");
    // A full header naming another pack.
    fs::write(
        &path,
        crate::format::pack::PackHeader {
            pack_id: PackId(99),
        }
        .encode(),
    )
    .unwrap();
    let r = PackReader::open(d.path(), id).unwrap();
    let why = r.header_problem().expect("the header problem is reported");
    assert!(
        why.contains("at byte 12") && why.contains("names pack"),
        "{why}"
    );
    assert_eq!(
        scan(&path).unwrap().problems[0].kind,
        ProblemKind::HeaderCorrupt
    );
    assert!(matches!(
        seal_existing(d.path(), id),
        Err(PackError::Corrupt { .. })
    ));
}

#[test]
fn seal_existing_refuses_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let (id, locs) = write_pack(d.path(), &sample_chunks(4, 5000, 5), false);
    let path = pack_path(d.path(), id);
    let n = fs::metadata(&path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(n - 3).unwrap();
    let last = locs.last().unwrap().1.offset;
    assert!(
        matches!(seal_existing(d.path(), id), Err(PackError::TornTail { offset, .. }) if offset == last)
    );
    assert!(!index_path(d.path(), id).exists());
    assert_eq!(truncate_torn_tail(&path).unwrap(), Some(last));
    assert_eq!(seal_existing(d.path(), id).unwrap().records, 3);
}

/// Damage in the middle of a larger pack: one record lost, all others found by resync.
#[test]
fn damage_in_the_middle_costs_one_record() {
    let d = tempfile::tempdir().unwrap();
    let chunks = sample_chunks(20, 30_000, 7);
    let (id, locs) = write_pack(d.path(), &chunks, false);
    let path = pack_path(d.path(), id);
    let mut b = fs::read(&path).unwrap();
    // Grow the stored_len of record 5 so it claims to run past EOF.
    let off = locs[5].1.offset as usize;
    b[off + 31] ^= 0x01;
    // And wreck the magic of record 9.
    let off9 = locs[9].1.offset as usize;
    b[off9] = b'X';
    fs::write(&path, &b).unwrap();
    let rep = scan(&path).unwrap();
    assert_eq!(rep.problems.len(), 2, "{:?}", rep.problems);
    assert_eq!(rep.records.len(), chunks.len() - 2);
    assert_eq!(truncate_torn_tail(&path).unwrap(), None);
    let r = PackReader::open(d.path(), id).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        let got = r.read_chunk(ChunkId::of(c));
        if i == 5 || i == 9 {
            assert!(got.is_err());
        } else {
            assert_eq!(&got.unwrap(), c);
        }
    }
}

/// A reader opened on a pack being written sees chunks appended later, after a rescan
/// ([PACK-11]), and treats the incomplete tail as not yet written.
#[test]
fn reader_sees_chunks_appended_by_a_concurrent_writer() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let mut w = PackWriter::create(&dir, 3).unwrap();
    let first = text_bytes(5000, 0);
    w.append(ChunkId::of(&first), &first).unwrap();
    w.sync().unwrap();
    let id = w.id();
    let reader = std::sync::Arc::new(PackReader::open(&dir, id).unwrap());
    assert_eq!(reader.read_chunk(ChunkId::of(&first)).unwrap(), first);

    // A torn tail written by hand (a record in flight) is not an error for readers.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::spawn(move || {
        for i in 0..200u64 {
            let c = if i % 2 == 0 {
                text_bytes(3000 + i as usize, i)
            } else {
                random_bytes(2000, i)
            };
            w.append(ChunkId::of(&c), &c).unwrap();
            if i % 3 == 0 {
                w.sync().unwrap();
            } else {
                w.flush().unwrap();
            }
            tx.send(c).unwrap();
        }
        w.seal().unwrap()
    });
    let mut readers = Vec::new();
    for _ in 0..2 {
        let r = reader.clone();
        readers.push(std::thread::spawn(move || r.index_source()));
    }
    let mut n = 0;
    for c in rx {
        assert_eq!(reader.read_chunk(ChunkId::of(&c)).unwrap(), c);
        n += 1;
    }
    assert_eq!(n, 200);
    let sealed = writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(sealed.records, 201);
    // After the seal, a miss loads the .idx.
    assert!(!reader.contains(ChunkId(7)).unwrap());
    assert_eq!(reader.index_source(), IndexSource::Idx);
}

#[test]
fn reader_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PackReader>();
    fn assert_send<T: Send>() {}
    assert_send::<PackWriter>();
}

/// A live pack with a partial record at its end: readers see every complete record.
#[test]
fn reader_stops_cleanly_at_an_incomplete_tail() {
    let d = tempfile::tempdir().unwrap();
    let chunks = sample_chunks(6, 4000, 11);
    let (id, _) = write_pack(d.path(), &chunks, false);
    let path = pack_path(d.path(), id);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    use std::io::Write;
    f.write_all(&RECORD_MAGIC).unwrap();
    f.write_all(&[0u8; 10]).unwrap();
    let r = PackReader::open(d.path(), id).unwrap();
    for c in &chunks {
        assert_eq!(&r.read_chunk(ChunkId::of(c)).unwrap(), c);
    }
    assert!(matches!(
        r.read_chunk(ChunkId(5)),
        Err(PackError::NotFound { .. })
    ));
    let _ = RECORD_HEADER_LEN;
}

#[test]
fn list_packs_sorts_and_reports_strays() {
    let d = tempfile::tempdir().unwrap();
    let (a, _) = write_pack(d.path(), &sample_chunks(2, 100, 1), true);
    let (b, _) = write_pack(d.path(), &sample_chunks(2, 100, 2), false);
    fs::write(d.path().join("0000000000000007.idx"), b"x").unwrap();
    fs::write(d.path().join("1.pack"), b"x").unwrap();
    fs::write(d.path().join("README"), b"x").unwrap();
    fs::write(d.path().join(".0000000000000008.idx.tmp-123-00ff"), b"x").unwrap();
    let l = list_packs(d.path()).unwrap();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(l.packs, want);
    assert_eq!(l.orphan_indexes, vec![PackId(7)]);
    assert_eq!(l.temp_files.len(), 1);
    assert_eq!(l.unknown.len(), 2);
    assert!(list_packs(&d.path().join("missing")).is_err());
}

/// Throughput in release mode:
/// `cargo test --release -p verfs-engine --lib pack::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "benchmark, not a test: run in release with --ignored (see the doc comment)"]
fn bench_append_and_read() {
    const TOTAL: usize = 256 << 20;
    const CHUNK: usize = 64 << 10;
    const ROLL: u64 = 64 << 20;
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    // Mixed data: half text-like (compressible ~3-4x), half random (stored raw).
    let chunks: Vec<Vec<u8>> = (0..TOTAL / CHUNK)
        .map(|i| {
            if i % 2 == 0 {
                text_bytes(CHUNK, i as u64)
            } else {
                random_bytes(CHUNK, i as u64)
            }
        })
        .collect();
    let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::of(c)).collect();

    let t = Instant::now();
    let mut packs = Vec::new();
    let mut stored = 0u64;
    let mut w = PackWriter::create(d.path(), 3).unwrap();
    for (id, c) in ids.iter().zip(&chunks) {
        w.append(*id, c).unwrap();
        if w.len() >= ROLL {
            let s = std::mem::replace(&mut w, PackWriter::create(d.path(), 3).unwrap())
                .seal()
                .unwrap();
            stored += s.len;
            packs.push(s.id);
        }
    }
    let s = w.seal().unwrap();
    stored += s.len;
    packs.push(s.id);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "append+seal level 3: {} MiB in {secs:.2}s = {:.0} MB/s (raw), packs {} MiB on disk",
        TOTAL >> 20,
        TOTAL as f64 / secs / 1e6,
        stored >> 20
    );

    // Text alone and random alone, to separate zstd's cost from the write and the fdatasync.
    for (name, parity) in [("text", 0usize), ("random", 1)] {
        let mut w = PackWriter::create(d.path(), 3).unwrap();
        let t = Instant::now();
        let mut n = 0;
        for (i, (id, c)) in ids.iter().zip(&chunks).enumerate().take(1024) {
            if i % 2 == parity {
                w.append(*id, c).unwrap();
                n += c.len();
            }
        }
        let appended = t.elapsed().as_secs_f64();
        w.sync().unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {name} only: append {:.0} MB/s, append+fdatasync {:.0} MB/s, ratio {:.2}",
            n as f64 / appended / 1e6,
            n as f64 / secs / 1e6,
            n as f64 / w.stats().bytes_stored as f64
        );
        let _ = w.seal();
    }

    let readers: Vec<PackReader> = packs
        .iter()
        .map(|p| PackReader::open(d.path(), *p).unwrap())
        .collect();
    let t = Instant::now();
    let mut n = 0usize;
    for id in &ids {
        let r = readers.iter().find(|r| r.contains(*id).unwrap()).unwrap();
        n += r.read_chunk(*id).unwrap().len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "read_chunk (page cache, crc + zstd + xxh3): {:.0} MB/s",
        n as f64 / secs / 1e6
    );

    let t = Instant::now();
    for p in &packs {
        let rep = scan(&pack_path(d.path(), *p)).unwrap();
        assert!(rep.is_clean());
    }
    println!(
        "scan (fsck, full verify): {:.0} MB/s raw",
        TOTAL as f64 / t.elapsed().as_secs_f64() / 1e6
    );

    for p in &packs {
        fs::remove_file(index_path(d.path(), *p)).unwrap();
    }
    let t = Instant::now();
    for p in &packs {
        let r = PackReader::open(d.path(), *p).unwrap();
        assert!(matches!(r.index_source(), IndexSource::Scanned { .. }));
    }
    println!(
        "open without .idx (scan, crc only): {:.0} MB/s of pack",
        stored as f64 / t.elapsed().as_secs_f64() / 1e6
    );
}

/// A flipped byte anywhere in a pack's 24-byte header made every record of the pack unreadable,
/// though each record (and the `.idx`) has its own checks. Now each record whose own checks hold
/// is read, with and without the `.idx`, and the header damage is still reported by `scan`.
#[test]
fn header_flip_leaves_every_record_readable() {
    let d = tempfile::tempdir().unwrap();
    let chunks = sample_chunks(6, 5000, 41);
    let (id, _) = write_pack(d.path(), &chunks, true);
    let path = pack_path(d.path(), id);
    let clean = fs::read(&path).unwrap();
    for with_idx in [true, false] {
        if !with_idx {
            fs::remove_file(index_path(d.path(), id)).unwrap();
        }
        for byte in 0..24 {
            let mut b = clean.clone();
            b[byte] ^= 0x10;
            fs::write(&path, &b).unwrap();
            let r = PackReader::open(d.path(), id)
                .unwrap_or_else(|e| panic!("byte {byte}, idx {with_idx}: open failed: {e}"));
            assert!(
                r.header_problem().is_some(),
                "byte {byte}: damage not noticed"
            );
            for c in &chunks {
                assert_eq!(
                    &r.read_chunk(ChunkId::of(c))
                        .unwrap_or_else(|e| panic!("byte {byte}, idx {with_idx}: {e}")),
                    c
                );
            }
            let rep = scan(&path).unwrap();
            assert_eq!(
                rep.problems[0].kind,
                ProblemKind::HeaderCorrupt,
                "byte {byte}"
            );
        }
    }
}
