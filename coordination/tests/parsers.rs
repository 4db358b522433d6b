//! Every parser of coordination files against hostile bytes (issue 11, "fuzzing every on-disk
//! parser"): arbitrary bytes and mutated valid encodings (bit flips, cuts, extensions, length
//! fields set to extremes) must never panic, and every rejection that knows its file must name it
//! and the byte offset. The long-running version of this is `fuzz/` (cargo fuzz); this is the
//! cheap CI pass. Case count: `PROPTEST_CASES` (default 64 per property here).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use verfs_coordination::txlog::{self, LogConfig, LogError, LogPosition, Lsn, StateMachine, TxLog};
use verfs_coordination::{ctlfile, journal, lease, lock, manifest, two_phase};
use verfs_test_support::crc32;
use verfs_test_support::hostile::{hostile, proptest_config};

#[track_caller]
fn names_file_and_offset(msg: &str, path: &Path, offset: u64, len: usize) {
    assert!(msg.contains(&path.display().to_string()), "no path: {msg}");
    assert!(
        offset <= len as u64,
        "offset {offset} past the end ({len}): {msg}"
    );
}

/// A toy state machine: payloads must be UTF-8.
#[derive(Clone, Default)]
struct Strings(Vec<String>);

impl StateMachine for Strings {
    type Ctx = ();
    fn empty(_: &()) -> Self {
        Strings::default()
    }
    fn apply(&mut self, _lsn: Lsn, payload: &[u8]) -> Result<(), String> {
        let s = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        self.0.push(s.to_owned());
        Ok(())
    }
    fn encode_checkpoint(&self, _: Lsn) -> Result<Vec<u8>, String> {
        Ok(self.0.join("\n").into_bytes())
    }
    fn decode_checkpoint(_: &(), _: Lsn, bytes: &[u8]) -> Result<Self, String> {
        let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        Ok(Strings(s.split('\n').map(str::to_owned).collect()))
    }
}

fn open_log(dir: &Path) -> Result<TxLog<Strings>, LogError> {
    TxLog::open(
        &dir.join("log"),
        &dir.join("checkpoints"),
        LogConfig::default(),
        Box::new(|| Ok(())),
        (),
    )
}

/// A log directory holding `segments` (first lsn, bytes) and an optional checkpoint.
fn log_dir(segments: &[(u64, Vec<u8>)], ckpt: Option<(u64, Vec<u8>)>) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    fs::create_dir_all(&log).unwrap();
    fs::create_dir_all(d.path().join("checkpoints")).unwrap();
    fs::write(log.join("LOCK"), b"").unwrap();
    for (first, bytes) in segments {
        fs::write(log.join(format!("{first:020}.seg")), bytes).unwrap();
    }
    if let Some((lsn, bytes)) = ckpt {
        fs::write(d.path().join(format!("checkpoints/{lsn:020}.ckpt")), bytes).unwrap();
    }
    d
}

fn segment(first: u64, records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut b = txlog::encode_segment_header(Lsn(first)).to_vec();
    for (lsn, p) in records {
        b.extend(txlog::encode_record(1, Lsn(*lsn), p));
    }
    b
}

/// The log position after lsn 2 in `segment(1, ..)` of one-byte payloads (records of 25 bytes).
const AFTER_2: LogPosition = LogPosition {
    segment: Lsn(1),
    offset: 24 + 25 + 25,
    last_record: Some(24 + 25),
};

#[track_caller]
fn corrupt_at(r: Result<TxLog<Strings>, LogError>, what: &str) -> (u64, String) {
    match r {
        Err(e @ LogError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(what), "expected {what:?} in {msg}");
            let LogError::Corrupt { offset, .. } = e else {
                unreachable!()
            };
            (offset, msg)
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, log opened"),
    }
}

// Regression: a segment named and headed lsn 0 made `first - 1` underflow (a panic in debug
// builds, lsn u64::MAX in release).
#[test]
fn segment_starting_at_lsn_zero_is_rejected_not_a_panic() {
    let d = log_dir(&[(0, segment(0, &[(0, b"a")]))], None);
    let (offset, msg) = corrupt_at(open_log(d.path()), "lsn 0");
    assert_eq!(offset, 12, "{msg}");
    assert!(msg.contains("00000000000000000000.seg"), "{msg}");
}

// Regression: a checkpoint named lsn u64::MAX made `base + 1` overflow. Its log position can
// be neither the start of the segment after it (there is no lsn after it) nor in an empty segment.
#[test]
fn checkpoint_at_the_last_lsn_is_not_a_panic() {
    let max = u64::MAX;
    for at in [
        LogPosition::segment_start(Lsn(1)),
        LogPosition {
            segment: Lsn(1),
            offset: 49,
            last_record: Some(24),
        },
    ] {
        let ck = txlog::encode_checkpoint_file(Lsn(max), at, b"x");
        let d = log_dir(&[(1, segment(1, &[]))], Some((max, ck)));
        let _ = corrupt_at(open_log(d.path()), &format!("lsn {max}"));
    }
}

// Regression: records past lsn u64::MAX made `lsn + 1` overflow in the sequence check. A
// second record of lsn u64::MAX is void ([LOG-10]: a late append of the same lsn), not a panic.
#[test]
fn lsn_past_the_last_is_not_a_panic() {
    let max = u64::MAX;
    let seg = segment(max, &[(max, b"a"), (max, b"b")]);
    let ck =
        txlog::encode_checkpoint_file(Lsn(max - 1), LogPosition::segment_start(Lsn(max)), b"x");
    let d = log_dir(&[(max, seg)], Some((max - 1, ck)));
    let log = open_log(d.path()).unwrap();
    assert_eq!(log.refresh().unwrap(), Lsn(max));
    let applied = log.read(|s, _| s.0.clone()).unwrap();
    assert_eq!(applied.last().map(String::as_str), Some("a"), "{applied:?}");
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn ctlfile_never_panics_and_names_file_and_offset(
        bytes in hostile(ctlfile::encode(two_phase::VOTE_KIND, &two_phase::Vote::Abort {
            reason: "r".into(),
        }))
    ) {
        let p = Path::new("/s/2pc/t/vote-x");
        if let Err(e) = ctlfile::decode::<two_phase::Vote>(p, two_phase::VOTE_KIND, &bytes) {
            let ctlfile::CtlError::Corrupt { offset, .. } = &e else {
                panic!("decode of bytes returned {e}");
            };
            let msg = e.to_string();
            names_file_and_offset(&msg, p, *offset, bytes.len());
            prop_assert!(msg.contains(&format!("at byte {offset}")), "{}", msg);
        }
        let _ = ctlfile::decode::<serde_json::Value>(p, "x", &bytes);
    }

    /// The body of a valid envelope is hostile JSON: the offset points into the body.
    #[test]
    fn ctlfile_bad_json_offset_is_inside_the_file(body in hostile(br#"{"vote":"abort","reason":"r"}"#.to_vec())) {
        let mut f = format!("{} {} {:08x}\n", ctlfile::MAGIC, two_phase::VOTE_KIND, crc32(&body)).into_bytes();
        let body_at = f.len() as u64;
        f.extend_from_slice(&body);
        f.push(b'\n');
        let p = Path::new("/s/v");
        if let Err(ctlfile::CtlError::Corrupt { offset, reason, .. }) =
            ctlfile::decode::<two_phase::Vote>(p, two_phase::VOTE_KIND, &f)
        {
            prop_assert!(offset >= body_at && offset <= f.len() as u64, "{} {}", offset, reason);
        }
    }

    #[test]
    fn journal_never_panics(bytes in hostile(journal_sample())) {
        let all = journal::decode_all(&bytes);
        prop_assert!(all.valid_len <= bytes.len() as u64);
        if let Some(c) = &all.corrupt {
            prop_assert!(c.offset <= bytes.len() as u64);
        }
        if let Some(t) = all.torn_tail {
            prop_assert!(t <= bytes.len() as u64);
        }
    }

    #[test]
    fn journal_open_never_panics(bytes in hostile(journal_sample())) {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(journal::JOURNAL_FILE), &bytes).unwrap();
        match journal::Journal::open(d.path()) {
            Ok(j) => {
                let a = j.begin("k", b"p").unwrap();
                j.end(a).unwrap();
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&d.path().display().to_string()), "{}", msg);
                if let journal::OpenError::Corrupt { offset, .. } = e {
                    prop_assert!(offset <= bytes.len() as u64);
                }
            }
        }
    }

    #[test]
    fn heartbeat_and_lease_names_never_panic(
        bytes in hostile(lease::Heartbeat { counter: 1, unix_ms: 2 }.encode().to_vec()),
        name in ".{0,40}",
    ) {
        let _ = lease::Heartbeat::decode(&bytes);
        let _ = lease::parse_folder_name(&name);
        let _ = lease::parse_folder_name(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn log_records_never_panic(bytes in hostile(segment(1, &[(1, b"a"), (2, b"bb")])[24..].to_vec())) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        fs::write(&p, &bytes).unwrap();
        let f = fs::File::open(&p).unwrap();
        let mut off = 0;
        while let txlog::RecordAt::Valid { len, .. } =
            txlog::read_record_at(&f, off, bytes.len() as u64).unwrap()
        {
            off += len;
            prop_assert!(off <= bytes.len() as u64);
        }
    }

    #[test]
    fn checkpoint_never_panics_and_names_file_and_offset(
        bytes in hostile(txlog::encode_checkpoint_file(Lsn(3), AFTER_2, b"a\nb"))
    ) {
        let p = Path::new("/s/checkpoints/00000000000000000003.ckpt");
        if let Err(e) = txlog::decode_checkpoint_file(p, &bytes) {
            let LogError::Corrupt { offset, .. } = &e else { panic!("{e}") };
            names_file_and_offset(&e.to_string(), p, *offset, bytes.len());
        }
    }

    /// A whole log whose first segment (and name) and checkpoint are hostile.
    #[test]
    fn log_open_never_panics(
        seg in hostile(segment(1, &[(1, b"a"), (2, b"b"), (3, b"c")])),
        ckpt in prop_oneof![
            Just(None),
            hostile(txlog::encode_checkpoint_file(Lsn(2), AFTER_2, b"a\nb")).prop_map(Some),
        ],
    ) {
        let first = seg.get(12..20).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap()));
        let ck = ckpt.map(|c| {
            let lsn = c.get(16..24).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
            (lsn, c)
        });
        let d = log_dir(&[(first, seg)], ck);
        match open_log(d.path()) {
            Ok(log) => { let _ = log.read(|s, _| s.0.len()); }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&d.path().display().to_string()), "{}", msg);
            }
        }
    }

    /// Hostile prepare and commit records of a dead owner: recovery reports, never panics, and
    /// touches nothing outside the store.
    #[test]
    fn manifest_recover_never_panics(
        prepare in hostile(manifest_prepare()),
        commit in prop_oneof![Just(None), hostile(manifest_commit()).prop_map(Some)],
    ) {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        let mdir = store.join("manifests");
        fs::create_dir_all(&mdir).unwrap();
        fs::create_dir_all(store.join("a")).unwrap();
        fs::write(d.path().join("outside"), b"keep").unwrap();
        fs::write(mdir.join(format!("{MID}.prepare")), &prepare).unwrap();
        if let Some(c) = &commit {
            fs::write(mdir.join(format!("{MID}.commit")), c).unwrap();
        }
        let report = manifest::recover(&mdir, &|_| true).unwrap();
        for p in &report.problems {
            prop_assert!(!p.reason.is_empty());
        }
        prop_assert_eq!(fs::read(d.path().join("outside")).unwrap(), b"keep");
    }

    /// verfs never reads the lock table's bytes: a table of garbage locks as well as an empty one.
    #[test]
    fn lock_table_content_is_irrelevant(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("table"), &bytes).unwrap();
        let t = lock::LockTable::open(d.path()).unwrap();
        let a = t.owner().unwrap();
        let b = t.owner().unwrap();
        let r = lock::Resource::Named("gc".into());
        a.try_acquire(&r, lock::Mode::Ex).unwrap();
        prop_assert!(b.try_acquire(&r, lock::Mode::Ex).is_err());
        a.release(&r).unwrap();
        b.try_acquire(&r, lock::Mode::Ex).unwrap();
    }
}

const MID: &str = "0123456789abcdef-00000000000000aa";

fn manifest_prepare() -> Vec<u8> {
    let doc = serde_json::json!({"id": MID, "entries": [
        {"target": "a/t", "op": "write", "len": 3, "crc32": 0},
        {"target": "a/u", "op": "remove"}
    ]});
    ctlfile::encode(manifest::PREPARE_KIND, &doc)
}

fn manifest_commit() -> Vec<u8> {
    let doc = serde_json::json!({"decision": "commit", "id": MID, "entries": [
        {"target": "a/t", "op": "write", "len": 3, "crc32": 0},
        {"target": "a/u", "op": "remove"}
    ]});
    ctlfile::encode(manifest::COMMIT_KIND, &doc)
}

fn journal_sample() -> Vec<u8> {
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
    b
}
