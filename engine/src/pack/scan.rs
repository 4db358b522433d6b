//! Walking a pack record by record: full verification for fsck ([`scan`]), index rebuilding for
//! readers, torn-tail detection for the cleaner, and `.idx` verification ([`check_index`]).
//!
//! After damage the walk resynchronises on the next record that passes its crc, so one rotten
//! byte costs one record, not the rest of the pack, and every problem is reported.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{index_path, pack_id_of_path, pack_path, PackError};
use crate::format::pack::{
    self as fmt, DecodeErrorKind, Encoding, IndexEntry, PackHeader, PackIndex, RecordHeader,
    INDEX_ENTRY_LEN, INDEX_HEADER_LEN, PACK_HEADER_LEN, RECORD_HEADER_LEN, RECORD_MAGIC,
};
use crate::ids::{ChunkId, PackId};

/// What kind of problem a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file is shorter than a pack header and its bytes are a prefix of it ([PACK-7]).
    HeaderTorn,
    /// The pack header is damaged or names another pack ([PACK-1]).
    HeaderCorrupt,
    /// A record header is damaged: magic, flags, reserved bytes or lengths ([PACK-3]).
    RecordCorrupt,
    /// A complete record whose crc does not match ([PACK-3]).
    CrcMismatch,
    /// A record whose crc holds but whose payload does not decode to bytes hashing to its chunk
    /// id ([PACK-4]).
    HashMismatch,
    /// The pack ends in an incomplete record ([PACK-7]).
    TornTail,
    /// Bytes after the last record that are neither a record nor a torn tail ([PACK-2]).
    TrailingGarbage,
    /// No `.idx` ([PACK-9]; normal for an unsealed pack).
    IndexMissing,
    /// The `.idx` is damaged or names another pack ([PACK-8]).
    IndexCorrupt,
    /// The `.idx` and the pack disagree ([PACK-8]).
    IndexMismatch,
}

impl ProblemKind {
    pub(crate) fn is_header(self) -> bool {
        matches!(self, ProblemKind::HeaderTorn | ProblemKind::HeaderCorrupt)
    }
}

/// One problem found in a pack or its index: where (file and byte offset) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: ProblemKind,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {:?}: {}",
            self.path.display(),
            self.offset,
            self.kind,
            self.reason
        )
    }
}

/// A record that passed every check the walk made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    pub chunk_id: ChunkId,
    /// Offset of the record header.
    pub offset: u64,
    pub encoding: Encoding,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl ScannedRecord {
    pub fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            chunk_id: self.chunk_id,
            offset: self.offset,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
        }
    }
    /// Offset just past this record.
    pub fn end(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// Result of [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    pub path: PathBuf,
    /// Pack id from a valid header, `None` if the header is damaged.
    pub header_id: Option<PackId>,
    pub file_len: u64,
    /// Valid records in file order (a chunk id may repeat in a pack not written by `PackWriter`).
    pub records: Vec<ScannedRecord>,
    /// Problems in file order.
    pub problems: Vec<Problem>,
}

impl ScanReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    /// Offset where the torn tail starts, if the pack ends in one. Always the last problem.
    pub fn torn_tail(&self) -> Option<u64> {
        self.problems
            .last()
            .filter(|p| p.kind == ProblemKind::TornTail)
            .map(|p| p.offset)
    }
}

/// Verify a whole pack: header, every record's crc and every chunk's hash ([PACK-1]..[PACK-4],
/// [PACK-7]). Read-only. The expected pack id is taken from the file name if it is canonical.
///
/// Errors only if the file cannot be opened or read (`Io`); damage is reported, not returned as
/// an error. Run on a pack that a live writer is appending to, its tail shows up as `TornTail`.
pub fn scan(path: &Path) -> Result<ScanReport, PackError> {
    let file = File::open(path).map_err(|e| PackError::io(path, e))?;
    scan_file(&file, path, pack_id_of_path(path), true)
}

/// Compare `<id>.idx` with a scan of `<id>.pack` ([PACK-8]). Read-only. Returns the problems found
/// with the index (an empty list means the index is exactly the pack's valid records); problems of
/// the pack itself are [`scan`]'s business and are not repeated here.
pub fn check_index(packs_dir: &Path, id: PackId) -> Result<Vec<Problem>, PackError> {
    let ppath = pack_path(packs_dir, id);
    let ipath = index_path(packs_dir, id);
    let bytes = match std::fs::read(&ipath) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(vec![Problem {
                path: ipath,
                offset: 0,
                kind: ProblemKind::IndexMissing,
                reason: "no .idx: the pack is not sealed".into(),
            }])
        }
        Err(e) => return Err(PackError::io(&ipath, e)),
    };
    let corrupt = |offset: u64, reason: String| Problem {
        path: ipath.clone(),
        offset,
        kind: ProblemKind::IndexCorrupt,
        reason,
    };
    let index = match PackIndex::decode(&bytes) {
        Ok(i) => i,
        Err(e) => return Ok(vec![corrupt(e.at, e.reason)]),
    };
    if index.pack_id != id {
        return Ok(vec![corrupt(
            12,
            format!("index names pack {} instead of {id}", index.pack_id),
        )]);
    }
    let file = File::open(&ppath).map_err(|e| PackError::io(&ppath, e))?;
    let report = scan_file(&file, &ppath, Some(id), false)?;
    let mut expected = std::collections::HashMap::new();
    for r in &report.records {
        expected.entry(r.chunk_id).or_insert(r.index_entry());
    }
    let mut problems = Vec::new();
    for (i, e) in index.entries.iter().enumerate() {
        let at = (INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64;
        match expected.remove(&e.chunk_id) {
            Some(r) if r == *e => {}
            Some(r) => problems.push(Problem {
                path: ipath.clone(),
                offset: at,
                kind: ProblemKind::IndexMismatch,
                reason: format!("entry for {} says {e:?}, the pack holds {r:?}", e.chunk_id),
            }),
            None => problems.push(Problem {
                path: ipath.clone(),
                offset: at,
                kind: ProblemKind::IndexMismatch,
                reason: format!(
                    "entry for {} at pack byte {} has no valid record",
                    e.chunk_id, e.offset
                ),
            }),
        }
    }
    let mut missing: Vec<_> = expected.into_values().collect();
    missing.sort_by_key(|e| e.offset);
    for e in missing {
        problems.push(Problem {
            path: ppath.clone(),
            offset: e.offset,
            kind: ProblemKind::IndexMismatch,
            reason: format!("valid record of {} is missing from the .idx", e.chunk_id),
        });
    }
    Ok(problems)
}

/// Check the header, then walk all records. `verify_hash` also decodes every payload.
pub(crate) fn scan_file(
    file: &File,
    path: &Path,
    expect: Option<PackId>,
    verify_hash: bool,
) -> Result<ScanReport, PackError> {
    let len = file.metadata().map_err(|e| PackError::io(path, e))?.len();
    let mut problems = Vec::new();
    let mut header_id = None;
    let hlen = len.min(PACK_HEADER_LEN as u64) as usize;
    let mut hb = vec![0u8; hlen];
    file.read_exact_at(&mut hb, 0)
        .map_err(|e| PackError::io(path, e))?;
    let problem = |offset, kind, reason: String| Problem {
        path: path.to_path_buf(),
        offset,
        kind,
        reason,
    };
    if hlen < PACK_HEADER_LEN {
        let torn = match expect {
            Some(id) => PackHeader { pack_id: id }.is_torn_prefix(&hb),
            None => hb[..hlen.min(8)] == fmt::PACK_MAGIC[..hlen.min(8)],
        };
        let (kind, what) = if torn {
            (ProblemKind::HeaderTorn, "a torn header")
        } else {
            (ProblemKind::HeaderCorrupt, "not a pack header")
        };
        problems.push(problem(0, kind, format!("file is {len} bytes, {what}")));
    } else {
        match PackHeader::decode(&hb) {
            Ok(h) => match expect {
                Some(id) if id != h.pack_id => problems.push(problem(
                    12,
                    ProblemKind::HeaderCorrupt,
                    format!("header names pack {} but the file is {id}", h.pack_id),
                )),
                _ => header_id = Some(h.pack_id),
            },
            Err(e) => problems.push(problem(e.at, ProblemKind::HeaderCorrupt, e.reason)),
        }
    }
    let mut walk = Walk {
        records: Vec::new(),
        problems,
        torn_at: None,
        first_bad: None,
    };
    if len > PACK_HEADER_LEN as u64 {
        let mut w = Walker {
            file,
            path,
            len,
            verify_hash,
        };
        w.walk(PACK_HEADER_LEN as u64, &mut walk)
            .map_err(|e| PackError::io(path, e))?;
    }
    Ok(ScanReport {
        path: path.to_path_buf(),
        header_id,
        file_len: len,
        records: walk.records,
        problems: walk.problems,
    })
}

/// Accumulated result of a walk.
pub(crate) struct Walk {
    pub records: Vec<ScannedRecord>,
    pub problems: Vec<Problem>,
    pub torn_at: Option<u64>,
    /// Record boundary where the first problem of this walk starts: where a reader of an unsealed
    /// pack resumes, since what is damaged now may be a write still in flight ([PACK-11]).
    pub first_bad: Option<u64>,
}

pub(crate) struct Walker<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    /// File length when the walk started; bytes appended later are not looked at.
    pub len: u64,
    pub verify_hash: bool,
}

/// How much of the file the resync search reads at a time.
const SEARCH_WINDOW: u64 = 1 << 20;

impl Walker<'_> {
    /// Read `n` bytes at `off`; `None` if the file turned out shorter than `len` said (a cleaner
    /// cut it meanwhile), which the walk treats like the end of the file.
    fn read(&self, off: u64, n: u64) -> io::Result<Option<Vec<u8>>> {
        let n = usize::try_from(n).map_err(|_| io::Error::other("read length overflows usize"))?;
        let mut b = vec![0u8; n];
        match self.file.read_exact_at(&mut b, off) {
            Ok(()) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn problem(&self, w: &mut Walk, record: u64, offset: u64, kind: ProblemKind, reason: String) {
        w.first_bad.get_or_insert(record);
        if kind == ProblemKind::TornTail {
            w.torn_at = Some(offset);
        }
        w.problems.push(Problem {
            path: self.path.to_path_buf(),
            offset,
            kind,
            reason,
        });
    }

    /// Walk records from `start` (a record boundary) to `self.len` ([PACK-2]).
    pub fn walk(&mut self, start: u64, w: &mut Walk) -> io::Result<()> {
        let hl = RECORD_HEADER_LEN as u64;
        let mut off = start;
        while off < self.len {
            let rem = self.len - off;
            if rem < hl {
                let Some(tail) = self.read(off, rem)? else {
                    return Ok(());
                };
                let m = tail.len().min(RECORD_MAGIC.len());
                let k = tail
                    .iter()
                    .zip(RECORD_MAGIC.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                // A prefix of a header, or of the magic followed by zeros (power loss: the end
                // of the append never reached the disk).
                if tail[..m] == RECORD_MAGIC[..m] || is_zero(&tail[k..]) {
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::TornTail,
                        format!("partial record header ({rem} bytes)"),
                    );
                } else {
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::TrailingGarbage,
                        format!("{rem} bytes that are not a record"),
                    );
                }
                return Ok(());
            }
            let Some(hb) = self.read(off, hl)? else {
                return Ok(());
            };
            let h = match RecordHeader::decode(&hb) {
                Ok(h) => h,
                Err(e) => {
                    if self.zeros_from_inside(off, &hb, hl)? {
                        self.problem(
                            w,
                            off,
                            off,
                            ProblemKind::TornTail,
                            format!("record header ends in zeros to the end of the file ({e})"),
                        );
                        return Ok(());
                    }
                    if e.kind == DecodeErrorKind::BadMagic && self.zero_to_end(off)? {
                        // A crash before the filesystem wrote the data blocks of an extended file
                        // leaves zeros; a record never starts with zeros (its magic).
                        self.problem(
                            w,
                            off,
                            off,
                            ProblemKind::TornTail,
                            format!("zero-filled tail of {rem} bytes"),
                        );
                        return Ok(());
                    }
                    // Report the record, not the field: a length that breaks the rules may be the rotten
                    // byte or the victim of a rotten flags byte.
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::RecordCorrupt,
                        format!("record header: {e}"),
                    );
                    match self.find_next_valid(off + 1)? {
                        Some(p) => {
                            off = p;
                            continue;
                        }
                        None => return Ok(()),
                    }
                }
            };
            let end = off + h.record_len();
            if end > self.len {
                let Some(rest) = self.read(off + hl, self.len - off - hl)? else {
                    return Ok(());
                };
                if fmt::record_crc_matches_with_len(&hb, &rest) {
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::RecordCorrupt,
                        "stored_len field (+28) damaged (complete record, crc holds with the real length)".to_string(),
                    );
                    return Ok(());
                }
                if let Some(p) = self.find_next_valid(off + 1)? {
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::RecordCorrupt,
                        format!("record claims to end at {end}, past the end of file, but a valid record follows at {p}"),
                    );
                    off = p;
                    continue;
                }
                self.problem(
                    w,
                    off,
                    off,
                    ProblemKind::TornTail,
                    format!(
                        "record of {} bytes cut after {rem} bytes by the end of file",
                        h.record_len()
                    ),
                );
                return Ok(());
            }
            let Some(payload) = self.read(off + hl, u64::from(h.stored_len))? else {
                return Ok(());
            };
            if !fmt::check_record_crc(&hb, &payload) {
                if self.zeros_from_inside(off, &hb, h.record_len())? {
                    self.problem(
                        w,
                        off,
                        off,
                        ProblemKind::TornTail,
                        format!(
                            "record of {} bytes whose end reads zeros to the end of the file",
                            h.record_len()
                        ),
                    );
                    return Ok(());
                }
                self.problem(
                    w,
                    off,
                    off,
                    ProblemKind::CrcMismatch,
                    format!("record crc mismatch (chunk {})", h.chunk_id),
                );
                // Usually the payload rotted and `end` is right; but the length may be what rotted,
                // so look for the next record that proves itself with its crc. Failing that, go on
                // at `end` so that a torn tail after the damage is still recognised.
                match self.find_next_valid(off + 1)? {
                    Some(p) => off = p,
                    None => off = end,
                }
                continue;
            }
            if self.verify_hash {
                if let Err(reason) = super::record::decode_payload(&h, &payload) {
                    self.problem(w, off, off, ProblemKind::HashMismatch, reason);
                    off = end;
                    continue;
                }
            }
            w.records.push(ScannedRecord {
                chunk_id: h.chunk_id,
                offset: off,
                encoding: h.encoding,
                raw_len: h.raw_len,
                stored_len: h.stored_len,
            });
            off = end;
        }
        Ok(())
    }

    /// Does the record at `off` (header bytes `hb`, `extent` bytes long as far as its header
    /// can tell) fail because a power loss zero-filled its end ([PACK-7])? True iff it starts
    /// with the record magic (or a prefix of it followed by zeros) and the file is all zeros from
    /// a point inside it to the end. Only the last record of a file can be such a record.
    fn zeros_from_inside(&self, off: u64, hb: &[u8], extent: u64) -> io::Result<bool> {
        let k = hb
            .iter()
            .zip(RECORD_MAGIC.iter())
            .take_while(|(a, b)| a == b)
            .count() as u64;
        if k == 0 {
            return Ok(false);
        }
        let z = self.zero_suffix_start()?;
        let magic_ok = k == RECORD_MAGIC.len() as u64 || z <= off + k;
        Ok(magic_ok && z > off && z < off + extent && z < self.len)
    }

    /// Where the run of zero bytes that ends the file starts (`len`: the last byte is not zero).
    fn zero_suffix_start(&self) -> io::Result<u64> {
        let mut end = self.len;
        while end > 0 {
            let n = SEARCH_WINDOW.min(end);
            let Some(b) = self.read(end - n, n)? else {
                return Ok(self.len);
            };
            if let Some(i) = b.iter().rposition(|&x| x != 0) {
                return Ok(end - n + i as u64 + 1);
            }
            end -= n;
        }
        Ok(0)
    }

    fn zero_to_end(&self, from: u64) -> io::Result<bool> {
        let mut pos = from;
        while pos < self.len {
            let n = SEARCH_WINDOW.min(self.len - pos);
            let Some(b) = self.read(pos, n)? else {
                return Ok(false);
            };
            if !is_zero(&b) {
                return Ok(false);
            }
            pos += n;
        }
        Ok(true)
    }

    /// Is there a complete record whose header decodes and whose crc holds at `p`?
    fn valid_record_at(&self, p: u64) -> io::Result<bool> {
        let hl = RECORD_HEADER_LEN as u64;
        if p + hl > self.len {
            return Ok(false);
        }
        let Some(hb) = self.read(p, hl)? else {
            return Ok(false);
        };
        let Ok(h) = RecordHeader::decode(&hb) else {
            return Ok(false);
        };
        if p + h.record_len() > self.len {
            return Ok(false);
        }
        let Some(payload) = self.read(p + hl, u64::from(h.stored_len))? else {
            return Ok(false);
        };
        Ok(fmt::check_record_crc(&hb, &payload))
    }

    /// The first offset >= `from` holding a valid record, searching for the record magic.
    fn find_next_valid(&self, from: u64) -> io::Result<Option<u64>> {
        let hl = RECORD_HEADER_LEN as u64;
        let mut pos = from;
        while pos + hl <= self.len {
            let n = SEARCH_WINDOW.min(self.len - pos);
            let Some(b) = self.read(pos, n)? else {
                return Ok(None);
            };
            let mut i = 0usize;
            while let Some(j) = find_magic(&b[i..]) {
                let p = pos + (i + j) as u64;
                if self.valid_record_at(p)? {
                    return Ok(Some(p));
                }
                i += j + 1;
            }
            // Overlap by 3 so a magic split across two windows is still found.
            pos += n.saturating_sub(3).max(1);
        }
        Ok(None)
    }
}

fn find_magic(b: &[u8]) -> Option<usize> {
    b.windows(RECORD_MAGIC.len())
        .position(|w| w == RECORD_MAGIC)
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}
