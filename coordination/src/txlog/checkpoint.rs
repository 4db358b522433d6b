//! Checkpoint files `checkpoints/<lsn>.ckpt`: names, listing, and the checkpoint file's bytes
//! (`data-layout.md` "Checkpoint").
//!
//! Owns the checkpoint envelope (magic, version, lsn, the log position after it, length, crc32s)
//! and the check that a position fits its lsn. Does not own the body, which the
//! [`super::StateMachine`] encodes, nor when checkpoints are written or whether the position
//! matches the log (the [`super::TxLog`], which reads there).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::segment::parse_numbered;
use super::{
    LogError, Lsn, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

pub(super) fn checkpoint_name(lsn: Lsn) -> String {
    format!("{:020}.ckpt", lsn.0)
}

/// Checkpoint files in `ckpt_dir`, sorted by lsn.
pub fn list_checkpoints(ckpt_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(ckpt_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(ckpt_dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err(ckpt_dir))?;
        if let Some(n) = e
            .file_name()
            .to_str()
            .and_then(|n| parse_numbered(n, ".ckpt"))
        {
            out.push((Lsn(n), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Where the log continues after a checkpoint: the position of the view that the checkpoint was
/// taken from, so that an open starts reading there instead of at the start of the log
/// (`data-layout.md` "Checkpoint", [CKPT-3]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    /// The segment that holds the position, by its first lsn (its name).
    pub segment: Lsn,
    /// Byte offset in that segment of the record after the checkpoint's lsn: where reading
    /// resumes (the segment's end if no record follows yet).
    pub offset: u64,
    /// Byte offset in that segment of the checkpoint lsn's own record, which ends at `offset`;
    /// `None` if the segment starts after it (then `offset` is the end of the segment header and
    /// `segment` is the checkpoint lsn + 1).
    pub last_record: Option<u64>,
}

impl LogPosition {
    /// The position at the start of the segment whose first lsn is `first`: right after lsn
    /// `first - 1`, before any record of that segment.
    pub fn segment_start(first: Lsn) -> LogPosition {
        LogPosition {
            segment: first,
            offset: SEGMENT_HEADER_LEN,
            last_record: None,
        }
    }
}

/// A decoded checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The state is that after applying records 1..=lsn.
    pub lsn: Lsn,
    /// Where the log continues after `lsn`.
    pub at: LogPosition,
    /// The state, as [`StateMachine::encode_checkpoint`](super::StateMachine::encode_checkpoint)
    /// wrote it.
    pub body: Vec<u8>,
}

/// Encode a checkpoint file of the state after `lsn`, whose log continues at `at`. Layout:
/// `data-layout.md` "Checkpoint".
pub fn encode_checkpoint_file(lsn: Lsn, at: LogPosition, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN as usize + body.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&at.segment.0.to_le_bytes());
    out.extend_from_slice(&at.offset.to_le_bytes());
    out.extend_from_slice(&at.last_record.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hcrc = crc32fast::hash(&out[0..60]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode a checkpoint file into its lsn and body, verifying both checksums and that its log
/// position is possible ([`decode_checkpoint`] without the position).
pub fn decode_checkpoint_file(path: &Path, bytes: &[u8]) -> Result<(Lsn, Vec<u8>), LogError> {
    let c = decode_checkpoint(path, bytes)?;
    Ok((c.lsn, c.body))
}

/// Decode a checkpoint file ([CKPT-1], [CKPT-3]): magic, version, both checksums, the body
/// length, and a log position that fits the lsn. Whether the position matches the log is checked
/// by the open that reads there.
pub fn decode_checkpoint(path: &Path, bytes: &[u8]) -> Result<Checkpoint, LogError> {
    let corrupt = |offset: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let truncated = || corrupt(0, format!("checkpoint truncated to {} bytes", bytes.len()));
    if bytes.len() < 12 {
        return Err(truncated());
    }
    if &bytes[0..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(0, "bad checkpoint magic".into()));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32_at(8);
    if version == 1 {
        // A version 1 header (data-layout.md "Checkpoint") carries its own crc32: name the old
        // version only if that crc holds, else this is a damaged header.
        if bytes.len() >= 40 && crc32fast::hash(&bytes[0..36]) == u32_at(36) {
            return Err(corrupt(
                8,
                format!(
                    "checkpoint version 1 (written by an older verfs), this verfs reads checkpoint version {CHECKPOINT_VERSION}"
                ),
            ));
        }
        return Err(corrupt(8, "checkpoint header crc32 mismatch".into()));
    }
    if bytes.len() < CHECKPOINT_HEADER_LEN as usize {
        return Err(truncated());
    }
    if crc32fast::hash(&bytes[0..60]) != u32_at(60) {
        return Err(corrupt(60, "checkpoint header crc32 mismatch".into()));
    }
    if version != CHECKPOINT_VERSION {
        return Err(corrupt(
            8,
            format!("checkpoint version {version}, this verfs reads checkpoint version {CHECKPOINT_VERSION}"),
        ));
    }
    let lsn = Lsn(u64_at(16));
    let len = u64_at(24);
    let last = u64_at(48);
    let at = LogPosition {
        segment: Lsn(u64_at(32)),
        offset: u64_at(40),
        last_record: (last != 0).then_some(last),
    };
    check_position(lsn, &at).map_err(|(offset, reason)| corrupt(offset, reason))?;
    let body = &bytes[CHECKPOINT_HEADER_LEN as usize..];
    if body.len() as u64 != len {
        return Err(corrupt(
            24,
            format!("checkpoint body is {} bytes, header says {len}", body.len()),
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != u32_at(56) {
        return Err(corrupt(
            CHECKPOINT_HEADER_LEN,
            format!("checkpoint body crc32 mismatch (computed {actual:08x})"),
        ));
    }
    Ok(Checkpoint {
        lsn,
        at,
        body: body.to_vec(),
    })
}

/// [CKPT-3], the part that needs no log: either the segment starts right after `lsn` and the
/// position is its header's end, or the segment holds record `lsn`, which lies before the position.
/// On failure: the header offset of the field at fault, and why.
fn check_position(lsn: Lsn, at: &LogPosition) -> Result<(), (u64, String)> {
    let next = lsn.0.checked_add(1);
    match at.last_record {
        None if Some(at.segment.0) != next => Err((
            32,
            format!(
                "log position in segment {} without a record of lsn {lsn} there: that segment must start at lsn {}",
                at.segment,
                next.map_or("none".to_string(), |n| n.to_string())
            ),
        )),
        None if at.offset != SEGMENT_HEADER_LEN => Err((
            40,
            format!(
                "log position at byte {} of segment {}, which starts after lsn {lsn}: must be {SEGMENT_HEADER_LEN}",
                at.offset, at.segment
            ),
        )),
        None => Ok(()),
        Some(_) if at.segment.0 == 0 || at.segment > lsn => Err((
            32,
            format!(
                "log position in segment {}, which cannot hold lsn {lsn}",
                at.segment
            ),
        )),
        Some(r) if r < SEGMENT_HEADER_LEN || r.checked_add(RECORD_HEADER_LEN).is_none_or(|e| e > at.offset) => Err((
            48,
            format!(
                "record of lsn {lsn} at byte {r} cannot end at the log position, byte {}",
                at.offset
            ),
        )),
        Some(_) => Ok(()),
    }
}
