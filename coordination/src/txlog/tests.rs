//! Unit tests of the transaction log (moved out of `mod.rs`; they see its private items).

use super::record::*;
use super::*;

/// A toy state: the list of payloads, as strings.
#[derive(Clone, Default)]
struct Strings(Vec<String>);

impl StateMachine for Strings {
    type Ctx = ();
    fn empty(_: &()) -> Self {
        Strings::default()
    }
    fn apply(&mut self, _lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        self.0
            .push(String::from_utf8(payload.to_vec()).map_err(|e| e.to_string())?);
        Ok(())
    }
    fn encode_checkpoint(&self, _: Lsn) -> Result<Vec<u8>, String> {
        Ok(self.0.join("\n").into_bytes())
    }
    fn decode_checkpoint(_: &(), _: Lsn, bytes: &[u8]) -> Result<Self, String> {
        let s = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
        Ok(Strings(if s.is_empty() {
            vec![]
        } else {
            s.split('\n').map(String::from).collect()
        }))
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let ck = d.path().join("checkpoints");
    fs::create_dir_all(&ck).unwrap();
    create(&log).unwrap();
    (d, log, ck)
}

fn open(log: &Path, ck: &Path, seg: u64) -> TxLog<Strings> {
    TxLog::open(
        log,
        ck,
        LogConfig { segment_bytes: seg },
        Box::new(|| Ok(())),
        (),
    )
    .unwrap()
}

fn put(l: &TxLog<Strings>, s: &str) -> Lsn {
    l.commit_durable::<(), String>(|_| Ok((s.as_bytes().to_vec(), ())))
        .unwrap()
        .0
}

/// A closure that calls back into its log is refused at once instead of deadlocking on the
/// view's lock (the `verfs status` hang): the closure must use the state and lsn it was given.
#[test]
fn reentering_the_log_from_a_closure_is_refused_not_a_deadlock() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "x");
    let inner = a.read(|_, _| a.read(|s, _| s.0.len())).unwrap();
    assert!(
        matches!(inner, Err(LogError::Reentered("read"))),
        "{inner:?}"
    );
    let inner = a
        .commit::<_, String>(|_| Ok((b"y".to_vec(), a.exclusive(|_| ()))))
        .unwrap()
        .1;
    assert!(
        matches!(inner, Err(LogError::Reentered("commit"))),
        "{inner:?}"
    );
    // applied_lsn takes no lock, so it is fine anywhere, and the guard is released afterwards.
    assert_eq!(
        a.read(|_, lsn| (lsn, a.applied_lsn())).unwrap(),
        (Lsn(2), Lsn(2))
    );
    assert_eq!(a.read(|s, _| s.0.len()).unwrap(), 2);
}

#[test]
fn two_handles_see_each_others_commits() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    let b = open(&log, &ck, 1 << 20);
    put(&a, "x");
    put(&b, "y");
    assert_eq!(a.read(|s, _| s.0.clone()).unwrap(), vec!["x", "y"]);
    // Validation happens against the head: b's closure sees a's record.
    let seen = b
        .commit::<usize, String>(|s| Ok((b"z".to_vec(), s.0.len())))
        .unwrap()
        .1;
    assert_eq!(seen, 2);
}

#[test]
fn rejected_and_fenced_commits_append_nothing() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    let err = a.commit::<(), &str>(|_| Err("no")).unwrap_err();
    assert!(matches!(err, CommitError::Rejected("no")));
    let fenced: TxLog<Strings> = TxLog::open(
        &log,
        &ck,
        LogConfig::default(),
        Box::new(|| Err("lease gone".into())),
        (),
    )
    .unwrap();
    let err = fenced
        .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
        .unwrap_err();
    assert!(matches!(err, CommitError::Log(LogError::Fenced(_))));
    assert_eq!(a.refresh().unwrap(), Lsn(0));
}

#[test]
fn segments_roll_and_reopen_with_checkpoint() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 200);
    for i in 0..50 {
        put(&a, &format!("v{i}"));
    }
    assert!(list_segments(&log).unwrap().len() > 5);
    let b = open(&log, &ck, 200);
    assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 50);
    let at = a.checkpoint().unwrap();
    assert_eq!(at, Lsn(50));
    for p in a.segments_covered_by(at).unwrap() {
        fs::remove_file(p).unwrap();
    }
    put(&a, "after");
    let c = open(&log, &ck, 200);
    let all = c.read(|s, _| s.0.clone()).unwrap();
    assert_eq!(all.len(), 51);
    assert_eq!(all[0], "v0");
    assert_eq!(all[50], "after");
    // b was positioned before the deleted segments but keeps its open file: still catches up.
    assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 51);
}

#[test]
fn torn_tail_is_invisible_to_readers_and_cut_by_next_writer() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "one");
    let seg = list_segments(&log).unwrap()[0].1.clone();
    let full = encode_record(TYPE_TXN, Lsn(2), b"torn-record");
    let f = OpenOptions::new().append(true).open(&seg).unwrap();
    use std::io::Write;
    (&f).write_all(&full[..full.len() - 3]).unwrap();
    let b = open(&log, &ck, 1 << 20);
    assert_eq!(b.read(|s, _| s.0.clone()).unwrap(), vec!["one"]);
    put(&b, "two");
    assert_eq!(a.read(|s, _| s.0.clone()).unwrap(), vec!["one", "two"]);
}

/// A last record whose header landed but whose payload ends in zeros (a power cut before
/// `fdatasync` on a filesystem that grew the file first) is a torn tail ([LOG-4]): readers stop
/// before it and the next writer cuts it, so the store stays usable.
#[test]
fn zero_filled_tail_inside_the_last_record_is_torn() {
    for zeros in ["block", "long-run"] {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        put(&a, "kept");
        let seg = log.join(segment_name(Lsn(1)));
        let start = fs::metadata(&seg).unwrap().len();
        let mut rec = encode_record(TYPE_TXN, Lsn(2), &[b'p'; 2000]);
        let end = start as usize + rec.len();
        // From a 512-byte block boundary inside the record, or the last 64 bytes.
        let from = match zeros {
            "block" => (end - 100).div_ceil(512) * 512,
            _ => end - 64,
        };
        assert!(from > start as usize + 24 && from < end);
        for b in &mut rec[from - start as usize..] {
            *b = 0;
        }
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&rec, start).unwrap();
        let b = open(&log, &ck, 1 << 20);
        assert_eq!(b.read(|s, _| s.0.clone()).unwrap(), vec!["kept"], "{zeros}");
        put(&b, "next");
        assert_eq!(
            a.read(|s, _| s.0.clone()).unwrap(),
            vec!["kept", "next"],
            "{zeros}"
        );
    }
}

/// [LOG-4] on its own: which zero runs are a power cut's and which are a payload's last fields.
#[test]
fn zero_tail_rule() {
    // Whole record zero, from its first byte or earlier.
    assert!(is_zero_tail(1000, 1000, 1100));
    assert!(is_zero_tail(900, 1000, 1100));
    // A few zeros at the end, no block boundary among them: a payload's last fields.
    assert!(!is_zero_tail(1090, 1000, 1100));
    // The same few zeros, but covering the boundary at 1024 inside the record.
    assert!(is_zero_tail(1020, 1000, 1100));
    // A boundary exactly at the record's end is not inside it.
    assert!(!is_zero_tail(1020, 1000, 1024));
    // A long run needs no boundary.
    assert!(is_zero_tail(1036, 1000, 1100));
    assert!(!is_zero_tail(1037, 1000, 1100));
    // No zeros at all.
    assert!(!is_zero_tail(1100, 1000, 1100));
}

/// The same record with a flipped byte instead of a zero tail, or zeros that stop before the
/// end of the file, is corruption ([LOG-4] does not stretch to rot).
#[test]
fn damaged_last_record_without_zero_tail_is_corruption() {
    for damage in ["flip", "zeros-then-data"] {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        put(&a, "kept");
        let seg = log.join(segment_name(Lsn(1)));
        let before = fs::metadata(&seg).unwrap().len();
        let mut rec = encode_record(TYPE_TXN, Lsn(2), b"another payload of some length");
        let n = rec.len();
        match damage {
            "flip" => rec[n - 3] ^= 0x40,
            _ => {
                for b in &mut rec[n - 9..n - 1] {
                    *b = 0;
                }
                rec[n - 1] = 1;
            }
        }
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&rec, before).unwrap();
        let err = TxLog::<Strings>::open(
            &log,
            &ck,
            LogConfig {
                segment_bytes: 1 << 20,
            },
            Box::new(|| Ok(())),
            (),
        )
        .err()
        .unwrap_or_else(|| panic!("{damage}: a damaged last record opened"));
        assert!(
            matches!(&err, LogError::Corrupt { offset, .. } if *offset == before),
            "{damage}: {err}"
        );
    }
}

/// Regression (crash images, issue 11): a power loss during a segment roll, after the next
/// segment was created and synced but before the segment-end record was, leaves that record
/// torn (short or zero-filled) in front of an empty next segment. That is crash case L3, not
/// a truncated closed segment: the next writer cuts it, finishes the roll and commits.
/// Before, every commit failed with "torn record inside a closed segment".
#[test]
fn power_loss_tearing_the_segment_end_record_of_a_roll_is_repaired() {
    let (d, log, ck) = setup();
    let a = open(&log, &ck, 200);
    let mut n = 0;
    while list_segments(&log).unwrap().len() < 2 {
        n += 1;
        put(&a, &format!("v{n}"));
    }
    drop(a);
    let segs = list_segments(&log).unwrap();
    assert_eq!(fs::metadata(&segs[1].1).unwrap().len(), SEGMENT_HEADER_LEN);
    let first = fs::read(&segs[0].1).unwrap();
    let end_len = encode_record(TYPE_SEGMENT_END, Lsn(n), &(n + 1).to_le_bytes()).len();
    let end_at = first.len() - end_len;
    // (A complete header followed by zeros is issue 11 item 1.6, fixed separately.)
    for (what, keep, zeros) in [
        ("short", 10, 0),
        ("short header", 23, 0),
        ("zeros", 0, end_len),
    ] {
        let copy = tempfile::tempdir().unwrap();
        fsutil_copy_dir(d.path(), copy.path());
        let (log2, ck2) = (copy.path().join("log"), copy.path().join("checkpoints"));
        let mut b = first[..end_at + keep].to_vec();
        b.resize(b.len() + zeros, 0);
        fs::write(log2.join(segs[0].1.file_name().unwrap()), &b).unwrap();
        let l = open(&log2, &ck2, 200);
        assert_eq!(l.read(|s, _| s.0.len()).unwrap() as u64, n, "{what}");
        put(&l, "after");
        let again = open(&log2, &ck2, 200);
        let all = again.read(|s, _| s.0.clone()).unwrap();
        assert_eq!(all.len() as u64, n + 1, "{what}");
        assert_eq!(all.last().unwrap(), "after", "{what}");
    }
    // A torn record in front of a later segment that holds records stays corruption.
    let l = open(&log, &ck, 200);
    put(&l, "in the second segment");
    drop(l);
    fs::write(&segs[0].1, &first[..end_at + 10]).unwrap();
    let l = open(&log, &ck, 200);
    let err = l
        .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
        .unwrap_err();
    assert!(
        matches!(err, CommitError::Log(LogError::Corrupt { .. })),
        "{err:?}"
    );
}

/// Regression (crash images, issue 11): a power loss during a roll, after the next
/// segment's name reached the disk but before its header did, leaves it empty or a prefix
/// of its header followed by zeros, and no segment-end record. The next writer completes the
/// header, writes the segment-end record and commits. Before, every commit failed with
/// "failed to fill whole buffer".
#[test]
fn power_loss_before_the_new_segment_header_is_synced_is_repaired() {
    let (d, log, ck) = setup();
    let a = open(&log, &ck, 200);
    let mut n = 0;
    while list_segments(&log).unwrap().len() < 2 {
        n += 1;
        put(&a, &format!("v{n}"));
    }
    drop(a);
    let segs = list_segments(&log).unwrap();
    let first = fs::read(&segs[0].1).unwrap();
    let end_len = encode_record(TYPE_SEGMENT_END, Lsn(n), &(n + 1).to_le_bytes()).len();
    let header = encode_segment_header(Lsn(n + 1));
    for (keep, len) in [(0, 0), (5, 5), (0, 24), (9, 24), (23, 23)] {
        let copy = tempfile::tempdir().unwrap();
        fsutil_copy_dir(d.path(), copy.path());
        let (log2, ck2) = (copy.path().join("log"), copy.path().join("checkpoints"));
        let name = |i: usize| log2.join(segs[i].1.file_name().unwrap());
        fs::write(name(0), &first[..first.len() - end_len]).unwrap();
        let mut b = header[..keep].to_vec();
        b.resize(len, 0);
        fs::write(name(1), &b).unwrap();
        let l = open(&log2, &ck2, 200);
        assert_eq!(l.read(|s, _| s.0.len()).unwrap() as u64, n);
        put(&l, "after");
        let all = open(&log2, &ck2, 200).read(|s, _| s.0.clone()).unwrap();
        assert_eq!(all.len() as u64, n + 1, "{keep} of {len}");
        assert_eq!(fs::read(name(1)).unwrap()[..24], header, "{keep} of {len}");
    }
}

fn fsutil_copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            fs::create_dir_all(&dest).unwrap();
            fsutil_copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_flipped_byte_in_a_complete_record_is_corruption_not_a_torn_tail() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "one");
    // b has applied record 1 only, so it must read record 2 from disk.
    let b = open(&log, &ck, 1 << 20);
    put(&a, "two");
    let seg = list_segments(&log).unwrap()[0].1.clone();
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40; // last payload byte of the last record
    fs::write(&seg, &bytes).unwrap();
    match TxLog::<Strings>::open(&log, &ck, LogConfig::default(), Box::new(|| Ok(())), ()) {
        Err(LogError::Corrupt { offset, .. }) => assert!(offset > SEGMENT_HEADER_LEN),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("opened a log with a corrupt record"),
    }
    // The next writer refuses to "repair" it by truncation.
    let err = b
        .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
        .unwrap_err();
    assert!(matches!(err, CommitError::Log(LogError::Corrupt { .. })));
    assert_eq!(fs::read(&seg).unwrap().len(), n);
}

#[test]
fn checkpoint_file_detects_every_flipped_byte() {
    let at = LogPosition {
        segment: Lsn(5),
        offset: 300,
        last_record: Some(250),
    };
    let bytes = encode_checkpoint_file(Lsn(9), at, b"body bytes");
    assert_eq!(
        decode_checkpoint_file(Path::new("c"), &bytes).unwrap(),
        (Lsn(9), b"body bytes".to_vec())
    );
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x08;
        assert!(
            decode_checkpoint_file(Path::new("c"), &bad).is_err(),
            "flip at {i}"
        );
    }
}

#[test]
fn many_threads_commit_serializably() {
    let (_d, log, ck) = setup();
    let logs: Vec<_> = (0..4).map(|_| Arc::new(open(&log, &ck, 4096))).collect();
    let hs: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(t, l)| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    // Each record carries the count it observed: serializable iff they form 0..n.
                    l.commit_durable::<(), String>(|s| {
                        Ok((format!("{}:{t}:{i}", s.0.len()).into_bytes(), ()))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let all = logs[0].read(|s, _| s.0.clone()).unwrap();
    assert_eq!(all.len(), 400);
    for (i, rec) in all.iter().enumerate() {
        assert_eq!(rec.split(':').next().unwrap(), i.to_string());
    }
}

fn put_unsynced(l: &TxLog<Strings>, s: &str) -> Lsn {
    l.commit::<(), String>(|_| Ok((s.as_bytes().to_vec(), ())))
        .unwrap()
        .0
}

fn put_many(l: &TxLog<Strings>, from: usize, to: usize, tag: &str) {
    for i in from..to {
        put_unsynced(l, &format!("{tag} {i:06}"));
    }
    l.sync_to(l.applied_lsn()).unwrap();
}

fn stats_since(before: IoStats, after: IoStats) -> IoStats {
    IoStats {
        reads: after.reads - before.reads,
        stats: after.stats - before.stats,
        dir_lists: after.dir_lists - before.dir_lists,
    }
}

/// (offset, lsn, kind, len) of every valid record of a segment, walked with `read_record_at`.
fn records_of(seg: &Path) -> Vec<(u64, Lsn, u8, u64)> {
    let f = File::open(seg).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let RecordAt::Valid {
        kind, lsn, len: n, ..
    } = read_record_at(&f, off, len).unwrap()
    {
        out.push((off, lsn, kind, n));
        off += n;
    }
    out
}

fn checkpoint_of(ck: &Path) -> (PathBuf, Checkpoint) {
    let (_, path) = list_checkpoints(ck).unwrap().pop().unwrap();
    let c = decode_checkpoint(&path, &fs::read(&path).unwrap()).unwrap();
    (path, c)
}

/// Issue 13: an open reads the newest checkpoint, the header of the segment it names and one
/// block from the position it records ([CKPT-3], [CKPT-4]), never the records the checkpoint
/// covers. Before, opening this log made 40002 reads and 20002 stats (two reads and a stat per
/// record, from the segment's start).
#[test]
fn opening_after_a_checkpoint_costs_a_handful_of_reads_whatever_the_log_length() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 64 << 20);
    put_many(&a, 0, 200, "record");
    a.checkpoint().unwrap();
    let short = open(&log, &ck, 64 << 20).io_stats();
    put_many(&a, 200, 20_000, "record");
    assert_eq!(a.checkpoint().unwrap(), Lsn(20_000));
    let b = open(&log, &ck, 64 << 20);
    let long = b.io_stats();
    eprintln!("open of a log of 200 records checkpointed at its head: {short:?}");
    eprintln!("open of a log of 20000 records checkpointed at its head: {long:?}");
    assert_eq!(
        b.read(|s, lsn| (s.0.len(), lsn)).unwrap(),
        (20_000, Lsn(20_000))
    );
    assert_eq!(
        long, short,
        "the cost of an open depends on the log's length"
    );
    // Checkpoint file, segment header, one block; one stat each for the checkpoint and segment.
    assert!(
        long.reads <= 3 && long.stats <= 2 && long.dir_lists == 1,
        "{long:?}"
    );

    // Records after the checkpoint cost reads only in proportion to their bytes.
    let seg = list_segments(&log).unwrap().pop().unwrap().1;
    let at = checkpoint_of(&ck).1.at.offset;
    put_many(&a, 0, 10, "after");
    let b = open(&log, &ck, 64 << 20);
    let ten = b.io_stats();
    assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 20_010);
    put_many(&a, 10, 10_000, "after");
    let b = open(&log, &ck, 64 << 20);
    let many = b.io_stats();
    assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 30_000);
    let bytes_after = fs::metadata(&seg).unwrap().len() - at;
    eprintln!("open with 10 records after the checkpoint: {ten:?}");
    eprintln!("open with 10000 records ({bytes_after} bytes) after the checkpoint: {many:?}");
    assert!(
        many.reads <= ten.reads + bytes_after.div_ceil(record::READ_BLOCK),
        "{many:?} vs {ten:?}"
    );
    assert_eq!((many.stats, many.dir_lists), (ten.stats, ten.dir_lists));
}

/// Issue 13: a catch-up reads whole blocks and decodes every record in them, with one stat
/// per segment, instead of two reads and a stat per record.
#[test]
fn catching_up_reads_blocks_not_records() {
    for segment_bytes in [64 << 20, 256 << 10] {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, segment_bytes);
        let b = open(&log, &ck, segment_bytes);
        let payload = "p".repeat(300);
        for i in 0..10_000 {
            put_unsynced(&a, &format!("{i:05} {payload}"));
        }
        let before = b.io_stats();
        assert_eq!(b.refresh().unwrap(), Lsn(10_000));
        let cost = stats_since(before, b.io_stats());
        let segs = list_segments(&log).unwrap();
        let bytes: u64 = segs
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        eprintln!(
            "catch-up of 10000 records, {bytes} bytes in {} segments: {cost:?}",
            segs.len()
        );
        let n = segs.len() as u64;
        // Per segment: its header (except the first, already open), one stat, its blocks; a
        // block ends where a record straddles it, so count one more per segment.
        assert!(
            cost.reads <= (n - 1) + bytes.div_ceil(record::READ_BLOCK) + n,
            "{cost:?}"
        );
        assert_eq!(cost.stats, n, "{cost:?}");
        let all = b.read(|s, _| s.0.clone()).unwrap();
        assert_eq!(all.len(), 10_000);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, s)| s.starts_with(&format!("{i:05} "))));
    }
}

/// A record larger than a block is read whole by a second read, by a catch-up and by an open
/// whose checkpoint's own record is that record.
#[test]
fn records_larger_than_a_block_are_read_whole() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 64 << 20);
    let b = open(&log, &ck, 64 << 20);
    let big = "b".repeat(record::READ_BLOCK as usize * 5 / 2);
    put(&a, "small");
    put(&a, &big);
    assert_eq!(
        b.read(|s, _| s.0.clone()).unwrap(),
        vec!["small", big.as_str()]
    );
    a.checkpoint().unwrap();
    let (_, c) = checkpoint_of(&ck);
    assert_eq!(c.at.last_record, Some(SEGMENT_HEADER_LEN + 24 + 5));
    let reopened = open(&log, &ck, 64 << 20);
    assert_eq!(reopened.read(|s, _| s.0.len()).unwrap(), 2);
    put(&a, "after");
    put(&a, &big);
    let reopened = open(&log, &ck, 64 << 20);
    let all = reopened.read(|s, _| s.0.clone()).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!((all[2].as_str(), all[3].len()), ("after", big.len()));
    assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 4);
}

/// [LOG-4] through block reads: a damaged record in the first block of a segment whose rest
/// does not fit in that block is still corruption, whether flipped or zeroed short of the end.
#[test]
fn damage_in_an_early_block_of_a_long_segment_is_corruption() {
    for damage in ["flip", "zeros"] {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 64 << 20);
        let payload = "q".repeat(500);
        for i in 0..5_000 {
            put_unsynced(&a, &format!("{i:05} {payload}"));
        }
        a.sync_to(a.applied_lsn()).unwrap();
        let seg = list_segments(&log).unwrap()[0].1.clone();
        assert!(fs::metadata(&seg).unwrap().len() > 2 * record::READ_BLOCK);
        let (at, _, _, n) = records_of(&seg)[100];
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        match damage {
            "flip" => f.write_all_at(b"!", at + n - 7).unwrap(),
            _ => f.write_all_at(&[0u8; 200], at + 30).unwrap(),
        }
        match TxLog::<Strings>::open(&log, &ck, LogConfig::default(), Box::new(|| Ok(())), ()) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, at, "{damage}"),
            Err(other) => panic!("{damage}: expected corruption, got {other}"),
            Ok(_) => panic!("{damage}: opened a log with a corrupt record"),
        }
    }
}

/// [CKPT-3]: the checkpoint records the view's position; after a roll that is the new segment's
/// header end. The log still opens once the segments it covers are deleted.
#[test]
fn checkpoint_right_after_a_roll_points_at_the_new_segment() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 300);
    let mut n = 0;
    while list_segments(&log).unwrap().len() < 3 {
        n += 1;
        put(&a, &format!("v{n}"));
    }
    assert_eq!(a.checkpoint().unwrap(), Lsn(n));
    let (_, c) = checkpoint_of(&ck);
    assert_eq!(c.at, LogPosition::segment_start(Lsn(n + 1)));
    for p in a.segments_covered_by(Lsn(n)).unwrap() {
        fs::remove_file(p).unwrap();
    }
    assert_eq!(list_segments(&log).unwrap().len(), 1);
    let b = open(&log, &ck, 300);
    assert_eq!(
        b.read(|s, lsn| (s.0.len() as u64, lsn)).unwrap(),
        (n, Lsn(n))
    );
    put(&b, "after");
    let c = open(&log, &ck, 300);
    assert_eq!(
        c.read(|s, _| s.0.last().cloned()).unwrap().unwrap(),
        "after"
    );
}

/// A checkpoint whose position is the end of a segment (taken while a roll was under way, before
/// its segment-end record), whose segment a truncation then deleted: the log continues at the
/// start of the segment after it.
#[test]
fn checkpoint_at_the_end_of_a_deleted_segment_opens_at_the_next_one() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 300);
    let mut n = 0;
    while list_segments(&log).unwrap().len() < 2 {
        n += 1;
        put(&a, &format!("v{n}"));
    }
    put(&a, "in the second segment");
    let segs = list_segments(&log).unwrap();
    let recs = records_of(&segs[0].1);
    let (end_at, _, kind, _) = *recs.last().unwrap();
    assert_eq!(kind, TYPE_SEGMENT_END);
    let (last, lsn, _, _) = recs[recs.len() - 2];
    assert_eq!(lsn, Lsn(n));
    let state = Strings((1..=n).map(|i| format!("v{i}")).collect());
    let at = LogPosition {
        segment: segs[0].0,
        offset: end_at,
        last_record: Some(last),
    };
    let ckpt = ck.join(checkpoint_name(Lsn(n)));
    fs::write(
        &ckpt,
        encode_checkpoint_file(Lsn(n), at, &state.encode_checkpoint(Lsn(0)).unwrap()),
    )
    .unwrap();
    let expect: Vec<String> = state
        .0
        .iter()
        .cloned()
        .chain(["in the second segment".to_string()])
        .collect();
    assert_eq!(
        open(&log, &ck, 300).read(|s, _| s.0.clone()).unwrap(),
        expect
    );
    fs::remove_file(&segs[0].1).unwrap();
    assert_eq!(
        open(&log, &ck, 300).read(|s, _| s.0.clone()).unwrap(),
        expect
    );
}

/// [CKPT-4]: a checkpoint whose log position does not match the log is refused as corrupt,
/// naming the checkpoint, instead of being read from the wrong byte (a position inside the
/// last record would have passed for a torn tail, and the next writer would have cut it).
#[test]
fn checkpoint_with_a_wrong_log_position_is_refused() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    for i in 1..=20 {
        put(&a, &format!("value {i}"));
    }
    drop(a);
    let seg = list_segments(&log).unwrap()[0].1.clone();
    let seg_bytes = fs::read(&seg).unwrap();
    let len = seg_bytes.len() as u64;
    let recs = records_of(&seg);
    let rec = |lsn: u64| recs[lsn as usize - 1];
    let after = |lsn: u64| LogPosition {
        segment: Lsn(1),
        offset: rec(lsn).0 + rec(lsn).3,
        last_record: Some(rec(lsn).0),
    };
    let body = |lsn: u64| {
        Strings((1..=lsn).map(|i| format!("value {i}")).collect())
            .encode_checkpoint(Lsn(0))
            .unwrap()
    };
    let write_ckpt = |lsn: u64, at: LogPosition| {
        for (_, p) in list_checkpoints(&ck).unwrap() {
            fs::remove_file(p).unwrap();
        }
        let path = ck.join(checkpoint_name(Lsn(lsn)));
        fs::write(&path, encode_checkpoint_file(Lsn(lsn), at, &body(lsn))).unwrap();
        path
    };
    // The right position opens, at every lsn.
    for lsn in [1, 10, 19, 20] {
        write_ckpt(lsn, after(lsn));
        let l = open(&log, &ck, 1 << 20);
        assert_eq!(l.read(|s, _| s.0.len()).unwrap(), 20, "lsn {lsn}");
    }
    let shift = |mut at: LogPosition, by: u64| {
        at.offset += by;
        at.last_record = at.last_record.map(|r| r + by);
        at
    };
    let cases: Vec<(&str, u64, LogPosition)> = vec![
        (
            "offset inside the next record",
            10,
            LogPosition {
                offset: after(10).offset + 10,
                ..after(10)
            },
        ),
        (
            "offset inside the last record",
            19,
            LogPosition {
                offset: len - 10,
                ..after(19)
            },
        ),
        (
            "offset at the end, before the last record",
            19,
            LogPosition {
                offset: len,
                ..after(19)
            },
        ),
        ("both inside records", 10, shift(after(10), 5)),
        ("past the end", 20, shift(after(20), 100)),
        (
            "offset past the end",
            20,
            LogPosition {
                offset: len + 1,
                ..after(20)
            },
        ),
        ("at a record with another lsn", 10, after(12)),
        ("at the record before", 10, after(9)),
        (
            "start of a segment that does not follow",
            10,
            LogPosition::segment_start(Lsn(1)),
        ),
    ];
    for (what, lsn, at) in cases {
        let path = write_ckpt(lsn, at);
        match TxLog::<Strings>::open(&log, &ck, LogConfig::default(), Box::new(|| Ok(())), ()) {
            Err(e @ LogError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
                eprintln!("{what}: {msg}");
            }
            Err(other) => panic!("{what}: expected corruption, got {other}"),
            Ok(_) => panic!("{what}: a checkpoint with a wrong log position opened"),
        }
        assert_eq!(
            fs::read(&seg).unwrap(),
            seg_bytes,
            "{what}: the segment changed"
        );
    }
    // A position that cannot fit its lsn is refused by the decoder itself.
    let bad = encode_checkpoint_file(Lsn(10), LogPosition::segment_start(Lsn(1)), b"");
    let err = decode_checkpoint(Path::new("c"), &bad).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { offset: 32, .. }), "{err}");
}

/// A checkpoint of the previous version (40-byte header, no log position) is refused with a
/// message naming the file and both versions.
#[test]
fn old_version_checkpoint_is_refused_by_name() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "x");
    let body = b"x";
    let mut v1 = Vec::new();
    v1.extend_from_slice(CHECKPOINT_MAGIC);
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&0u32.to_le_bytes());
    v1.extend_from_slice(&1u64.to_le_bytes());
    v1.extend_from_slice(&(body.len() as u64).to_le_bytes());
    v1.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hcrc = crc32fast::hash(&v1[0..36]);
    v1.extend_from_slice(&hcrc.to_le_bytes());
    v1.extend_from_slice(body);
    let path = ck.join(checkpoint_name(Lsn(1)));
    fs::write(&path, &v1).unwrap();
    let err = TxLog::<Strings>::open(&log, &ck, LogConfig::default(), Box::new(|| Ok(())), ())
        .err()
        .expect("an old checkpoint opened");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, LogError::Corrupt { offset: 8, .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("checkpoint version 1") && msg.contains("checkpoint version 2"),
        "{msg}"
    );
    // The same bytes with a broken header crc are damage, not an old version.
    v1[20] ^= 1;
    let err = decode_checkpoint(&path, &v1).unwrap_err().to_string();
    assert!(err.contains("crc32 mismatch"), "{err}");
}

/// Append `rec` to the end of the current segment, as a late write would land (O_APPEND).
fn append_raw(log: &Path, rec: &[u8]) {
    use std::io::Write;
    let seg = list_segments(log).unwrap().last().unwrap().1.clone();
    let f = OpenOptions::new().append(true).open(&seg).unwrap();
    (&f).write_all(rec).unwrap();
}

/// [LOG-10]: a writer that lost the lock (a partition on a network filesystem) and whose append
/// arrives after other records: its record repeats an lsn the log has, so every reader skips it,
/// and the next commit lands after it.
#[test]
fn a_late_append_of_a_writer_that_lost_the_lock_is_void() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "one");
    put(&a, "two");
    append_raw(&log, &encode_record(TYPE_TXN, Lsn(2), b"zombie"));
    assert_eq!(put(&a, "three"), Lsn(3));
    let b = open(&log, &ck, 1 << 20);
    assert_eq!(
        b.read(|s, _| s.0.clone()).unwrap(),
        vec!["one", "two", "three"]
    );
    // A stale segment-end record is void too; the real one still moves readers on.
    append_raw(
        &log,
        &encode_record(TYPE_SEGMENT_END, Lsn(1), &2u64.to_le_bytes()),
    );
    put(&a, "four");
    let c = open(&log, &ck, 1 << 20);
    assert_eq!(c.read(|s, _| s.0.len()).unwrap(), 4);
}

/// [LOG-10]: the other side. Another writer's record lands where this writer's was to go (here:
/// written from inside the commit closure, under the lock, after the catch-up): the append goes
/// after it (O_APPEND, nothing overwritten), the commit fails with `LostLock` instead of being
/// acknowledged, and readers keep the first record of that lsn.
#[test]
fn an_append_that_does_not_land_first_is_not_committed() {
    let (_d, log, ck) = setup();
    let a = open(&log, &ck, 1 << 20);
    put(&a, "one");
    let r = a.commit::<(), String>(|_| {
        append_raw(&log, &encode_record(TYPE_TXN, Lsn(2), b"other"));
        Ok((b"mine".to_vec(), ()))
    });
    match r {
        Err(CommitError::Log(LogError::LostLock { offset, .. })) => assert!(offset > 0),
        other => panic!("expected LostLock, got {other:?}"),
    }
    let b = open(&log, &ck, 1 << 20);
    assert_eq!(b.read(|s, _| s.0.clone()).unwrap(), vec!["one", "other"]);
    // The writer goes on after the record it lost to.
    assert_eq!(put(&a, "next"), Lsn(3));
    assert_eq!(
        a.read(|s, _| s.0.clone()).unwrap(),
        vec!["one", "other", "next"]
    );
}
