//! Per-process recovery journal: the multi-step actions a process has in flight.
//!
//! Owns the journal file `leases/<id>/journal` (its record format, begin/end, compaction, reading
//! what is pending). Does not own the lease folder it lives in nor who may read it after a death
//! (`lease`, a layer above), nor what an action's cleanup does (the engine).
//!
//! A process records `Begin` (durably) before it starts an action that leaves state behind if the
//! process dies half way (an open pack, temp files, a GC rewrite), and `End` when the action is
//! finished or undone. The journal lives in the process's lease folder (`leases/<id>/journal`),
//! so the cleaner that claims a dead lease (`lease::claim`) gets the journal with it and reads
//! the actions still pending with [`read_pending`].
//!
//! Every action MUST be idempotent to clean up ([JNL-4]): the cleaner may run the cleanup of an
//! action that already completed (its `End` was lost), and a cleaner that dies is replaced by
//! another that runs it again.
//!
//! Record format and rules `[JNL-n]`: `data-layout.md` section 5.6, "Journal" (crash points: 8.3).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fsutil;
use crate::io_site;

/// File name of the journal inside a lease folder.
pub const JOURNAL_FILE: &str = "journal";
/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"VJNL";
/// Bytes before the kind: magic, type, reserved, action id, kind length, payload length.
pub const HEADER_LEN: usize = 22;
/// Bytes after the payload: the crc32.
pub const TRAILER_LEN: usize = 4;
/// Largest payload accepted by [`Journal::begin`]; larger would make a torn tail ambiguous.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The journal is truncated to empty when it is larger than this and no action is pending.
pub const COMPACT_AT: u64 = 1 << 20;

const TYPE_BEGIN: u8 = 1;
const TYPE_END: u8 = 2;

/// Identity of one action within one journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(pub u64);

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Begin {
        id: ActionId,
        kind: String,
        payload: Vec<u8>,
    },
    End {
        id: ActionId,
    },
}

impl Record {
    /// The on-disk bytes of this record.
    pub fn encode(&self) -> Vec<u8> {
        let (ty, id, kind, payload): (u8, ActionId, &[u8], &[u8]) = match self {
            Record::Begin { id, kind, payload } => (TYPE_BEGIN, *id, kind.as_bytes(), payload),
            Record::End { id } => (TYPE_END, *id, b"", b""),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + kind.len() + payload.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(ty);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&id.0.to_le_bytes());
        out.extend_from_slice(&(kind.len() as u16).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Why decoding stopped at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Incomplete record at the end of the file: a writer died mid-append.
    Torn,
    /// A complete record that is invalid, followed by more bytes.
    Corrupt(String),
}

/// Decode the record at the start of `buf` ([JNL-1]); `Ok((record, length))`.
fn decode_one(buf: &[u8]) -> Result<(Record, usize), Stop> {
    if buf.len() < HEADER_LEN {
        return Err(Stop::Torn);
    }
    if buf[0..4] != MAGIC {
        // Space the filesystem allocated but never wrote (size updated, data lost) reads as zeros.
        if buf.iter().all(|&b| b == 0) {
            return Err(Stop::Torn);
        }
        return Err(Stop::Corrupt("bad magic".into()));
    }
    let ty = buf[4];
    let le = |r: std::ops::Range<usize>| -> u64 {
        buf[r]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let id = ActionId(le(8..16));
    let kind_len = le(16..18) as usize;
    let payload_len = le(18..22) as usize;
    let total = HEADER_LEN + kind_len + payload_len + TRAILER_LEN;
    if total > buf.len() {
        return Err(Stop::Torn);
    }
    let body_end = total - TRAILER_LEN;
    let stored = le(body_end..total) as u32;
    let computed = crc32fast::hash(&buf[..body_end]);
    if stored != computed {
        // The last record in the file may have been sized but not fully written before a crash.
        if total == buf.len() {
            return Err(Stop::Torn);
        }
        return Err(Stop::Corrupt(format!(
            "crc32 mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    if buf[5..8] != [0, 0, 0] {
        return Err(Stop::Corrupt("reserved bytes are not zero".into()));
    }
    let kind = &buf[HEADER_LEN..HEADER_LEN + kind_len];
    let payload = &buf[HEADER_LEN + kind_len..body_end];
    let rec = match ty {
        TYPE_BEGIN => {
            let kind = std::str::from_utf8(kind)
                .map_err(|_| Stop::Corrupt("kind is not UTF-8".into()))?
                .to_owned();
            Record::Begin {
                id,
                kind,
                payload: payload.to_vec(),
            }
        }
        TYPE_END if kind_len == 0 && payload_len == 0 => Record::End { id },
        TYPE_END => return Err(Stop::Corrupt("End record with a kind or payload".into())),
        t => return Err(Stop::Corrupt(format!("unknown record type {t}"))),
    };
    Ok((rec, total))
}

/// An action begun and not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAction {
    pub id: ActionId,
    pub kind: String,
    pub payload: Vec<u8>,
    /// Offset of its Begin record.
    pub offset: u64,
}

/// The result of reading a journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingActions {
    /// Begun and not ended, in Begin order.
    pub pending: Vec<PendingAction>,
    /// Length of the valid prefix; reading stopped here.
    pub valid_len: u64,
    /// Set when reading stopped at an incomplete last record (a writer died mid-append).
    pub torn_tail: Option<u64>,
    /// Set when reading stopped at a complete but invalid record: the actions recorded after it
    /// are unknown, so the cleaner must report it rather than assume nothing else is pending.
    pub corrupt: Option<CorruptRecord>,
    /// Largest action id seen in the valid prefix.
    pub max_id: u64,
}

/// Where and why a journal is corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub offset: u64,
    pub reason: String,
}

/// Decode a whole journal image ([JNL-1], [JNL-3]).
pub fn decode_all(buf: &[u8]) -> PendingActions {
    let mut open: BTreeMap<ActionId, PendingAction> = BTreeMap::new();
    let mut out = PendingActions::default();
    let mut off = 0usize;
    while off < buf.len() {
        match decode_one(&buf[off..]) {
            Ok((rec, len)) => {
                match rec {
                    Record::Begin { id, kind, payload } => {
                        out.max_id = out.max_id.max(id.0);
                        open.insert(
                            id,
                            PendingAction {
                                id,
                                kind,
                                payload,
                                offset: off as u64,
                            },
                        );
                    }
                    Record::End { id } => {
                        out.max_id = out.max_id.max(id.0);
                        open.remove(&id);
                    }
                }
                off += len;
            }
            Err(Stop::Torn) => {
                out.torn_tail = Some(off as u64);
                break;
            }
            Err(Stop::Corrupt(reason)) => {
                out.corrupt = Some(CorruptRecord {
                    offset: off as u64,
                    reason,
                });
                break;
            }
        }
    }
    out.valid_len = off as u64;
    out.pending = open.into_values().collect();
    out.pending.sort_by_key(|a| a.offset);
    out
}

/// [`read_pending`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("reading journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The actions pending in the journal at `path` (a missing file has none). Read-only.
pub fn read_pending(path: &Path) -> Result<PendingActions, ReadError> {
    match fs::read(path) {
        Ok(buf) => Ok(decode_all(&buf)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PendingActions::default()),
        Err(source) => Err(ReadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// [`Journal::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("opening journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A record in the middle is invalid; appending after it would hide the new records.
    #[error("journal {path} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// [`Journal::begin`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeginError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "journal {path}: kind of {kind_len} bytes or payload of {payload_len} bytes too large"
    )]
    TooLarge {
        path: PathBuf,
        kind_len: usize,
        payload_len: usize,
    },
    /// An earlier failed append could not be rolled back; the journal refuses further writes.
    #[error("journal {path} is unusable after an earlier write error")]
    Broken { path: PathBuf },
}

/// [`Journal::end`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("journal {path}: action {id} is not pending")]
    NotPending { path: PathBuf, id: ActionId },
    #[error("journal {path} is unusable after an earlier write error")]
    Broken { path: PathBuf },
}

#[derive(Debug)]
struct Inner {
    file: File,
    len: u64,
    next_id: u64,
    pending: BTreeMap<ActionId, ()>,
    broken: bool,
}

/// This process's journal. Shared between threads by reference.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

/// Outcome of one append, before it is mapped onto the caller's error type.
enum AppendError {
    Io(io::Error),
    Broken,
}

impl Journal {
    /// Open (creating if needed) `lease_dir/journal` for appending.
    ///
    /// Only the lease's owner may open it: a torn tail left by an earlier writer is truncated
    /// away ([JNL-3]). On error nothing was written except possibly that truncation and an empty
    /// journal file.
    pub fn open(lease_dir: &Path) -> Result<Journal, OpenError> {
        let path = lease_dir.join(JOURNAL_FILE);
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let file = io_site!(
            "journal.create",
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
        )
        .map_err(io)?;
        if !existed {
            // The file's own fdatasync does not make its name durable.
            fsutil::fsync_dir(lease_dir).map_err(io)?;
        }
        let buf = fs::read(&path).map_err(io)?;
        let state = decode_all(&buf);
        if let Some(c) = state.corrupt {
            return Err(OpenError::Corrupt {
                path,
                offset: c.offset,
                reason: c.reason,
            });
        }
        if state.torn_tail.is_some() {
            file.set_len(state.valid_len).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let pending = state.pending.iter().map(|a| (a.id, ())).collect();
        let inner = Inner {
            file,
            len: state.valid_len,
            next_id: state.max_id + 1,
            pending,
            broken: false,
        };
        Ok(Journal {
            path,
            inner: Mutex::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, rec: &Record, sync: bool, inner: &mut Inner) -> Result<(), AppendError> {
        if inner.broken {
            return Err(AppendError::Broken);
        }
        let bytes = rec.encode();
        let res = io_site!("journal.append-write", inner.file.write_all(&bytes)).and_then(|()| {
            if sync {
                io_site!("journal.append-fsync", inner.file.sync_data())
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                inner.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A partial record followed by later appends would read as corruption in the
                // middle and hide everything after it, so cut it off or stop writing ([JNL-3]).
                if io_site!("journal.append-cut", inner.file.set_len(inner.len)).is_err() {
                    inner.broken = true;
                }
                Err(AppendError::Io(e))
            }
        }
    }

    /// Record the start of an action, durably, before the action changes anything ([JNL-2]).
    ///
    /// On error the action is not recorded and must not be started; the journal is unchanged
    /// (or, if even the rollback of a partial append failed, refuses further writes).
    pub fn begin(&self, kind: &str, payload: &[u8]) -> Result<ActionId, BeginError> {
        if kind.len() > usize::from(u16::MAX) || payload.len() > MAX_PAYLOAD {
            return Err(BeginError::TooLarge {
                path: self.path.clone(),
                kind_len: kind.len(),
                payload_len: payload.len(),
            });
        }
        let mut inner = self.inner.lock().map_err(|_| BeginError::Broken {
            path: self.path.clone(),
        })?;
        let id = ActionId(inner.next_id);
        let rec = Record::Begin {
            id,
            kind: kind.to_owned(),
            payload: payload.to_vec(),
        };
        self.append(&rec, true, &mut inner).map_err(|e| match e {
            AppendError::Io(source) => BeginError::Io {
                path: self.path.clone(),
                source,
            },
            AppendError::Broken => BeginError::Broken {
                path: self.path.clone(),
            },
        })?;
        inner.next_id += 1;
        inner.pending.insert(id, ());
        Ok(id)
    }

    /// Record that an action is finished or undone.
    ///
    /// Not synced ([JNL-4]): if the `End` is lost in a crash, the cleaner redoes the action's
    /// idempotent cleanup, which is harmless. On error the action stays pending in the journal.
    pub fn end(&self, id: ActionId) -> Result<(), EndError> {
        let mut inner = self.inner.lock().map_err(|_| EndError::Broken {
            path: self.path.clone(),
        })?;
        if !inner.pending.contains_key(&id) {
            return Err(EndError::NotPending {
                path: self.path.clone(),
                id,
            });
        }
        self.append(&Record::End { id }, false, &mut inner)
            .map_err(|e| match e {
                AppendError::Io(source) => EndError::Io {
                    path: self.path.clone(),
                    source,
                },
                AppendError::Broken => EndError::Broken {
                    path: self.path.clone(),
                },
            })?;
        inner.pending.remove(&id);
        if inner.pending.is_empty() && inner.len > COMPACT_AT {
            // Nothing is pending, so an empty journal says the same; a crash that loses the
            // truncation leaves only ended actions. Failure just means no compaction this time.
            if inner.file.set_len(0).is_ok() {
                inner.len = 0;
            } else {
                inner.broken = true;
            }
        }
        Ok(())
    }

    /// Ids of the actions begun and not ended by this process.
    pub fn pending_ids(&self) -> Vec<ActionId> {
        match self.inner.lock() {
            Ok(i) => i.pending.keys().copied().collect(),
            Err(p) => p.into_inner().pending.keys().copied().collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn golden_bytes() {
        // proves [JNL-1]
        let rec = Record::Begin {
            id: ActionId(0x0102),
            kind: "pk".into(),
            payload: vec![0xAA],
        };
        let b = rec.encode();
        let mut want = Vec::new();
        want.extend_from_slice(b"VJNL"); // magic
        want.push(1); // type Begin
        want.extend_from_slice(&[0, 0, 0]); // reserved
        want.extend_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]); // action id 0x0102 LE
        want.extend_from_slice(&[2, 0]); // kind_len
        want.extend_from_slice(&[1, 0, 0, 0]); // payload_len
        want.extend_from_slice(b"pk"); // kind
        want.push(0xAA); // payload
        let crc = crc32fast::hash(&want);
        want.extend_from_slice(&crc.to_le_bytes()); // crc32 of all of the above
        assert_eq!(b, want);
        assert_eq!(decode_one(&b), Ok((rec, b.len())));
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(id: u64, kind in "[a-z -]{0,20}", payload in proptest::collection::vec(0u8.., 0..200)) {
            let begin = Record::Begin { id: ActionId(id), kind, payload };
            let end = Record::End { id: ActionId(id) };
            let mut buf = begin.encode();
            proptest::prop_assert_eq!(decode_one(&buf), Ok((begin.clone(), buf.len())));
            let e = end.encode();
            proptest::prop_assert_eq!(decode_one(&e), Ok((end, e.len())));
            buf.extend_from_slice(&e);
            let all = decode_all(&buf);
            proptest::prop_assert!(all.pending.is_empty());
            proptest::prop_assert_eq!(all.valid_len, buf.len() as u64);
        }

        #[test]
        fn every_truncation_is_a_torn_tail(cut in 0usize..60) {
            // proves [JNL-3]
            let a = Record::Begin { id: ActionId(1), kind: "a".into(), payload: vec![1; 9] }.encode();
            let b = Record::Begin { id: ActionId(2), kind: "b".into(), payload: vec![2; 9] }.encode();
            let mut buf = a.clone();
            buf.extend_from_slice(&b);
            let cut = cut.min(b.len() - 1);
            let got = decode_all(&buf[..a.len() + cut]);
            proptest::prop_assert_eq!(got.pending.len(), 1);
            proptest::prop_assert_eq!(got.corrupt, None);
            let torn = if cut == 0 { None } else { Some(a.len() as u64) };
            proptest::prop_assert_eq!(got.torn_tail, torn);
        }
    }

    #[test]
    fn flipped_byte_in_the_middle_is_corrupt_not_torn() {
        // proves [JNL-1]
        let a = Record::Begin {
            id: ActionId(1),
            kind: "a".into(),
            payload: vec![1; 5],
        }
        .encode();
        let b = Record::Begin {
            id: ActionId(2),
            kind: "b".into(),
            payload: vec![2; 5],
        }
        .encode();
        for i in 0..a.len() {
            let mut buf = a.clone();
            buf.extend_from_slice(&b);
            buf[i] ^= 0x04;
            let got = decode_all(&buf);
            assert!(got.pending.is_empty(), "flip at {i} accepted a record");
            // Flipping a length byte can make the record look longer than the file: torn.
            assert!(
                got.corrupt.is_some() || got.torn_tail == Some(0),
                "flip at {i}: {got:?}"
            );
        }
        // Zero-filled tail (size updated, data lost) is torn, not corrupt.
        let mut buf = a.clone();
        buf.extend_from_slice(&[0u8; 40]);
        let got = decode_all(&buf);
        assert_eq!(got.torn_tail, Some(a.len() as u64));
        assert_eq!(got.corrupt, None);
    }

    #[test]
    fn begin_end_pending_and_reopen() {
        // proves [JNL-2], [JNL-3]
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let a = j.begin("open-pack", b"pack 1").unwrap();
        let b = j.begin("temp", b"/x/.y").unwrap();
        j.end(a).unwrap();
        assert!(matches!(j.end(a), Err(EndError::NotPending { .. })));
        let p = read_pending(&d.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(p.pending.len(), 1);
        assert_eq!(p.pending[0].id, b);
        assert_eq!(p.pending[0].kind, "temp");
        assert_eq!(p.pending[0].payload, b"/x/.y");
        drop(j);
        // A writer died mid-append: torn tail, truncated on reopen, ids keep increasing.
        let path = d.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(
            &Record::Begin {
                id: ActionId(9),
                kind: "x".into(),
                payload: vec![],
            }
            .encode()[..10],
        )
        .unwrap();
        let p = read_pending(&path).unwrap();
        assert!(p.torn_tail.is_some());
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.pending_ids(), vec![b]);
        let c = j.begin("c", b"").unwrap();
        assert!(c.0 > b.0);
        let p = read_pending(&path).unwrap();
        assert_eq!(p.torn_tail, None);
        assert_eq!(
            p.pending.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![b, c]
        );
    }

    #[test]
    fn open_refuses_corruption_in_the_middle() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(JOURNAL_FILE);
        let mut buf = Record::Begin {
            id: ActionId(1),
            kind: "a".into(),
            payload: vec![],
        }
        .encode();
        buf[HEADER_LEN] ^= 1;
        buf.extend_from_slice(&Record::End { id: ActionId(1) }.encode());
        fs::write(&path, &buf).unwrap();
        assert!(matches!(
            Journal::open(d.path()),
            Err(OpenError::Corrupt { offset: 0, .. })
        ));
        assert_eq!(read_pending(&path).unwrap().corrupt.unwrap().offset, 0);
    }

    #[test]
    fn threads_share_one_journal_and_compaction_keeps_pending() {
        let d = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(d.path()).unwrap());
        let big = vec![7u8; 64 << 10];
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (j, big) = (j.clone(), &big);
                s.spawn(move || {
                    for _ in 0..10 {
                        let id = j.begin("w", big).unwrap();
                        j.end(id).unwrap();
                    }
                });
            }
        });
        let path = d.path().join(JOURNAL_FILE);
        assert!(j.pending_ids().is_empty());
        for _ in 0..20 {
            let id = j.begin("w", &big).unwrap();
            j.end(id).unwrap();
        }
        // 20 more records of 64 KiB pass the compaction size while nothing is pending.
        assert!(fs::metadata(&path).unwrap().len() < 20 * (64 << 10));
        let keep = j.begin("keep", b"k").unwrap();
        let p = read_pending(&path).unwrap();
        assert_eq!(
            p.pending.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![keep]
        );
        assert_eq!(p.corrupt, None);
        assert_eq!(p.torn_tail, None);
    }
}
