//! [LOG-10] seen from the engine: late appends of a writer that lost the log lock (a copy of an
//! earlier record, its lsn already taken) sit inside the current segment and after a closed
//! segment's segment-end record. A store with them opens, reads every file back, commits on top
//! of them, and `fsck` and `repair` call it clean; a record whose lsn is *ahead* of the log in the
//! same place is still reported.
//!
//! proves [LOG-10]
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions as FsOpen};
use std::io::Write;
use std::path::{Path, PathBuf};

use verfs_coordination::txlog::{self, Lsn, RecordAt};
use verfs_engine::ops::fsck::fsck;
use verfs_engine::ops::repair::{repair, RepairOptions};
use verfs_engine::store::{OpenOptions, Store};

/// Small segments, so that a few dozen commits close several of them.
const CONFIG: &str = "\
[log]
segment_size = 4096
";

fn segments(store: &Path) -> Vec<PathBuf> {
    txlog::list_segments(&store.join("log"))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// The bytes of the first transaction record of `seg`.
fn first_record(seg: &Path) -> Vec<u8> {
    let f = fs::File::open(seg).unwrap();
    let len = f.metadata().unwrap().len();
    match txlog::read_record_at(&f, txlog::SEGMENT_HEADER_LEN, len).unwrap() {
        RecordAt::Valid { len: n, .. } => {
            let bytes = fs::read(seg).unwrap();
            let at = txlog::SEGMENT_HEADER_LEN as usize;
            bytes[at..at + n as usize].to_vec()
        }
        other => panic!("{}: no first record: {other:?}", seg.display()),
    }
}

fn append(seg: &Path, bytes: &[u8]) {
    let mut f = FsOpen::new().append(true).open(seg).unwrap();
    f.write_all(bytes).unwrap();
}

fn build() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::init(&root).unwrap();
    fs::write(root.join("config.toml"), CONFIG).unwrap();
    let s = Store::open(&root, OpenOptions::new("void records test")).unwrap();
    for i in 0..120 {
        s.mkdir(&format!("/d{i}"), 0o755, false).unwrap();
    }
    drop(s);
    (dir, root)
}

#[test]
fn late_appends_are_skipped_by_every_reader() {
    let (_dir, root) = build();
    let segs = segments(&root);
    assert!(segs.len() >= 3, "the test needs closed segments: {segs:?}");
    // After the segment-end record of the first (closed) segment, and at the tail of the last.
    let late = first_record(&segs[0]);
    append(&segs[0], &late);
    append(segs.last().unwrap(), &first_record(&segs[1]));

    let r = fsck(&root).unwrap();
    assert!(r.is_clean(), "fsck: {:?}", r.problems);
    let s = Store::open(&root, OpenOptions::new("void records test")).unwrap();
    for i in 0..120 {
        s.stat(&format!("/d{i}")).unwrap();
    }
    // The next commit lands after the void record and counts.
    s.mkdir("/after", 0o755, false).unwrap();
    drop(s);
    let s = Store::open(&root, OpenOptions::new("void records test")).unwrap();
    s.stat("/after").unwrap();
    drop(s);
    let r = fsck(&root).unwrap();
    assert!(r.is_clean(), "fsck after a commit: {:?}", r.problems);
    let rep = repair(&root, RepairOptions { dry_run: true }).unwrap();
    assert!(
        rep.damaged_log_records.is_empty(),
        "repair: {:?}",
        rep.damaged_log_records
    );
}

#[test]
fn a_record_ahead_of_the_log_is_still_reported() {
    let (_dir, root) = build();
    let segs = segments(&root);
    let last = segs.last().unwrap();
    // A valid record whose lsn skips ahead: not void, a gap.
    let rec = txlog::encode_record(1, Lsn(1_000_000), b"");
    append(last, &rec);
    let r = fsck(&root).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("expected") && p.location.contains(".seg")),
        "fsck must report the gap: {:?}",
        r.problems
    );
    // After a closed segment's end, only a void record is allowed.
    append(&segs[0], &rec);
    let r = fsck(&root).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("after the segment-end")),
        "fsck must report the bytes after the segment end: {:?}",
        r.problems
    );
}
