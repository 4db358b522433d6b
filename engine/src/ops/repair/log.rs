//! Reading the log past damage: every valid transaction record after a base lsn, the damaged
//! records skipped (by segment, byte offset and the lsns they held), the next valid record found
//! by its magic and crc (`data-layout.md` 5.12, "The log").

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use verfs_coordination::txlog::{
    self, LogPosition, Lsn, RecordAt, RECORD_MAGIC, SEGMENT_HEADER_LEN,
};

use crate::error::Error;

/// One stretch of a segment that holds no valid record where one was expected.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRecord {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the first bad byte (the record that does not verify).
    pub offset: u64,
    /// The transactions it held: the lsns missing between the valid records around it. Empty
    /// if none was missing (damage in a segment-end record or a header).
    pub lsns: Vec<u64>,
    pub reason: String,
}

/// One valid transaction record and where it is.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub lsn: Lsn,
    pub payload: Vec<u8>,
    pub segment: PathBuf,
    pub offset: u64,
}

/// What [`scan`] read.
#[derive(Clone, Debug, Default)]
pub(super) struct LogScan {
    /// Valid transaction records after the base, in lsn order (lsns may have gaps).
    pub records: Vec<Record>,
    pub damaged: Vec<DamagedRecord>,
    /// Lsns after the base that no valid record holds and no damaged record accounts for
    /// (a segment deleted or missing).
    pub missing: Vec<u64>,
    /// The last lsn read (the base if none).
    pub head: Lsn,
}

impl LogScan {
    /// Every lsn lost, damaged or missing.
    pub fn lost_lsns(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .damaged
            .iter()
            .flat_map(|d| d.lsns.iter().copied())
            .chain(self.missing.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Read every valid record after `base`, from `at` (a checkpoint's log position) or, without
/// one, from the segment that holds `base + 1`. A torn record at the end of the last segment is
/// an append that never finished (crash L1): not read, not a loss. Reads only.
pub(super) fn scan(log_dir: &Path, base: Lsn, at: Option<LogPosition>) -> Result<LogScan, Error> {
    let segs = txlog::list_segments(log_dir)?;
    let mut out = LogScan {
        head: base,
        ..LogScan::default()
    };
    let start = match at.and_then(|a| segs.iter().position(|(f, _)| *f == a.segment)) {
        Some(i) => i,
        None => segs
            .iter()
            .rposition(|(f, _)| f.0 <= base.0 + 1)
            .unwrap_or(0),
    };
    // Damage seen since the last valid record: the lsns found missing next go to it.
    let mut open_damage: Option<usize> = None;
    for (i, (first, path)) in segs.iter().enumerate().skip(start) {
        let f = File::open(path).map_err(Error::io(path))?;
        let len = f.metadata().map_err(Error::io(path))?.len();
        let last_segment = i + 1 == segs.len();
        let mut off = match at {
            Some(a) if i == start && a.segment == *first => a.offset,
            _ => SEGMENT_HEADER_LEN,
        };
        if off == SEGMENT_HEADER_LEN {
            let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
            use std::os::unix::fs::FileExt;
            let ok =
                f.read_exact_at(&mut h, 0).is_ok() && h == txlog::encode_segment_header(*first);
            if !ok {
                out.damaged.push(DamagedRecord {
                    segment: path.clone(),
                    offset: 0,
                    lsns: Vec::new(),
                    reason: "segment header damaged or truncated".into(),
                });
                open_damage = Some(out.damaged.len() - 1);
            }
        }
        loop {
            match txlog::read_record_at(&f, off, len).map_err(Error::io(path))? {
                RecordAt::Valid {
                    kind: 1,
                    lsn,
                    payload,
                    len: n,
                } => {
                    let at = off;
                    off += n;
                    if lsn <= out.head {
                        continue;
                    }
                    let gap: Vec<u64> = (out.head.0 + 1..lsn.0).collect();
                    match open_damage.take() {
                        Some(d) => out.damaged[d].lsns.extend(gap),
                        None => out.missing.extend(gap),
                    }
                    out.records.push(Record {
                        lsn,
                        payload,
                        segment: path.clone(),
                        offset: at,
                    });
                    out.head = lsn;
                }
                RecordAt::Valid { len: n, .. } => {
                    // A segment-end record: the log goes on in the next segment. Only void
                    // records (late appends of a writer that lost the lock, [LOG-10]) follow it.
                    off += n;
                    while off < len {
                        match txlog::read_record_at(&f, off, len).map_err(Error::io(path))? {
                            RecordAt::Valid { lsn, len: m, .. } if lsn <= out.head => off += m,
                            _ => {
                                out.damaged.push(DamagedRecord {
                                    segment: path.clone(),
                                    offset: off,
                                    lsns: Vec::new(),
                                    reason: "bytes after the segment-end record".into(),
                                });
                                break;
                            }
                        }
                    }
                    break;
                }
                RecordAt::End if last_segment => break,
                RecordAt::End => {
                    // [LOG-3]: readers stop here and never see the later segments.
                    out.damaged.push(DamagedRecord {
                        segment: path.clone(),
                        offset: off,
                        lsns: Vec::new(),
                        reason: "closed segment without its segment-end record".into(),
                    });
                    open_damage = Some(out.damaged.len() - 1);
                    break;
                }
                RecordAt::Short | RecordAt::ZeroTail if last_segment => break,
                RecordAt::Short | RecordAt::ZeroTail => {
                    out.damaged.push(DamagedRecord {
                        segment: path.clone(),
                        offset: off,
                        lsns: Vec::new(),
                        reason: "torn record inside a closed segment (the segment was truncated)"
                            .into(),
                    });
                    open_damage = Some(out.damaged.len() - 1);
                    break;
                }
                RecordAt::Bad(reason) => {
                    out.damaged.push(DamagedRecord {
                        segment: path.clone(),
                        offset: off,
                        lsns: Vec::new(),
                        reason,
                    });
                    open_damage = Some(out.damaged.len() - 1);
                    match next_valid(&f, path, off, len)? {
                        Some(q) => off = q,
                        None => break,
                    }
                }
            }
        }
    }
    // Damage after the last valid record held at least the next lsn.
    if let Some(d) = open_damage {
        if out.damaged[d].lsns.is_empty() {
            out.damaged[d].lsns.push(out.head.0 + 1);
            out.damaged[d].reason.push_str(
                " (the last valid record of the log comes before it: it held the next lsn, and any after it)",
            );
        }
    }
    Ok(out)
}

/// The first offset after `bad` where a valid record starts (its magic, then [LOG-1]).
fn next_valid(f: &File, path: &Path, bad: u64, len: u64) -> Result<Option<u64>, Error> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    let from = (bad as usize + 1).min(bytes.len());
    let mut q = from;
    while let Some(i) = bytes[q..].windows(4).position(|w| w == RECORD_MAGIC) {
        let cand = (q + i) as u64;
        if let RecordAt::Valid { .. } =
            txlog::read_record_at(f, cand, len).map_err(Error::io(path))?
        {
            return Ok(Some(cand));
        }
        q += i + 1;
    }
    Ok(None)
}
