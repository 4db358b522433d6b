//! Byte format of `packs/<id>.discard` (`data-layout.md`, discard file; [GC-7]).
//!
//! Owns the header and record encodings and the parser that tells a torn tail from corruption.
//! Does not own the file itself (its path, appending, repairing, locking): that is GC's.

use std::collections::HashMap;

use super::{DecodeError, DecodeErrorKind as Kind};
use crate::ids::{ChunkId, PackId};

pub const DISCARD_MAGIC: &[u8; 8] = b"VERFSDC1";
pub const DISCARD_VERSION: u32 = 1;
pub const DISCARD_HEADER_LEN: usize = 24;
pub const DISCARD_RECORD_MAGIC: &[u8; 4] = b"VDCR";
pub const DISCARD_RECORD_HEADER_LEN: usize = 16;
pub const DISCARD_ENTRY_LEN: usize = 20;
const TYPE_BATCH: u8 = 1;
const TYPE_CHECKPOINT: u8 = 2;
/// Largest payload a discard record may claim (a batch of ~800k ids).
const MAX_DISCARD_PAYLOAD: u32 = 16 << 20;

/// A parsed `.discard` file.
#[derive(Clone, Debug, Default)]
pub struct Discard {
    /// Every id listed, with the stored length of its record.
    pub ids: HashMap<ChunkId, u32>,
    /// The lsn of the last checkpoint record: every batch before it was garbage at that lsn.
    pub checkpoint_lsn: Option<u64>,
    /// Length of the valid prefix; anything after it is a torn tail (or the file is absent: 0).
    pub valid_len: u64,
    /// Where a torn tail starts, if the file ends in one.
    pub torn_at: Option<u64>,
    /// Batches after the last checkpoint (the writer died before checkpointing them).
    pub unconfirmed: usize,
}

fn encode_record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DISCARD_RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(DISCARD_RECORD_MAGIC);
    out.push(kind);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header of the `.discard` file of pack `id`.
pub fn encode_header(id: PackId) -> Vec<u8> {
    let mut h = Vec::with_capacity(DISCARD_HEADER_LEN);
    h.extend_from_slice(DISCARD_MAGIC);
    h.extend_from_slice(&DISCARD_VERSION.to_le_bytes());
    h.extend_from_slice(&id.0.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// What one append writes after the valid prefix: `batch` as batch records (split to respect
/// the largest payload), then a checkpoint record for `lsn`.
pub fn encode_append(batch: &[(ChunkId, u32)], lsn: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(batch.len() * DISCARD_ENTRY_LEN);
    for (c, stored) in batch {
        payload.extend_from_slice(&c.0.to_le_bytes());
        payload.extend_from_slice(&stored.to_le_bytes());
    }
    let mut out = Vec::new();
    for part in
        payload.chunks((MAX_DISCARD_PAYLOAD as usize / DISCARD_ENTRY_LEN) * DISCARD_ENTRY_LEN)
    {
        out.extend_from_slice(&encode_record(TYPE_BATCH, part));
    }
    let mut cp = Vec::with_capacity(16);
    cp.extend_from_slice(&lsn.to_le_bytes());
    cp.extend_from_slice(&(batch.len() as u64).to_le_bytes());
    out.extend_from_slice(&encode_record(TYPE_CHECKPOINT, &cp));
    out
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Parse a `.discard` file's bytes ([GC-7]). A short tail is torn (a writer died mid-append),
/// and so is a header or record that fails its checks when the file is all zeros from inside it
/// to its end (a power loss before the `fdatasync`: data-layout.md section 3); anything else
/// that fails its checks is corruption, reported with its offset.
pub fn parse(id: PackId, b: &[u8]) -> Result<Discard, DecodeError> {
    let corrupt =
        |offset: usize, kind: Kind, reason: String| DecodeError::new(offset as u64, kind, reason);
    let mut d = Discard::default();
    // Where the all-zero suffix of the file starts (`b.len()`: the last byte is not zero). A
    // part that fails its checks is torn iff this falls inside it.
    let zero_from = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    let zero_tail_within =
        |start: usize, extent: usize| zero_from < b.len() && zero_from < start + extent;
    if b.len() >= DISCARD_HEADER_LEN
        && (&b[..8] != DISCARD_MAGIC || crc32fast::hash(&b[..20]) != le_u32(&b[20..]))
        && zero_tail_within(0, DISCARD_HEADER_LEN)
    {
        d.torn_at = Some(0);
        return Ok(d);
    }
    if b.len() < DISCARD_HEADER_LEN {
        let expect = encode_header(id);
        if expect.starts_with(b) || b.iter().all(|&x| x == 0) {
            d.torn_at = Some(0);
            return Ok(d);
        }
        return Err(corrupt(
            0,
            Kind::Short,
            format!("{} bytes: not a discard file", b.len()),
        ));
    }
    if &b[..8] != DISCARD_MAGIC {
        return Err(corrupt(
            0,
            Kind::BadMagic,
            "bad magic (not a discard file)".into(),
        ));
    }
    if crc32fast::hash(&b[..20]) != le_u32(&b[20..]) {
        return Err(corrupt(20, Kind::Checksum, "header crc mismatch".into()));
    }
    if le_u32(&b[8..]) != DISCARD_VERSION {
        return Err(corrupt(
            8,
            Kind::BadField,
            format!("version {}", le_u32(&b[8..])),
        ));
    }
    if le_u64(&b[12..]) != id.0 {
        return Err(corrupt(
            12,
            Kind::BadField,
            format!("header names pack {}", PackId(le_u64(&b[12..]))),
        ));
    }
    let mut pos = DISCARD_HEADER_LEN;
    while pos < b.len() {
        let rest = &b[pos..];
        let torn = || rest.iter().all(|&x| x == 0);
        if rest.len() < DISCARD_RECORD_HEADER_LEN {
            if torn() || DISCARD_RECORD_MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                d.torn_at = Some(pos as u64);
                break;
            }
            return Err(corrupt(
                pos,
                Kind::BadField,
                "garbage after the last record".into(),
            ));
        }
        if &rest[..4] != DISCARD_RECORD_MAGIC {
            if torn() || zero_tail_within(pos, 4) {
                d.torn_at = Some(pos as u64);
                break;
            }
            return Err(corrupt(pos, Kind::BadMagic, "bad record magic".into()));
        }
        let kind = rest[4];
        let len = le_u32(&rest[8..]);
        if len > MAX_DISCARD_PAYLOAD || rest[5..8] != [0, 0, 0] {
            if zero_tail_within(pos, DISCARD_RECORD_HEADER_LEN) {
                d.torn_at = Some(pos as u64);
                break;
            }
            return Err(corrupt(
                pos,
                Kind::BadField,
                format!("bad record header (length {len})"),
            ));
        }
        let end = DISCARD_RECORD_HEADER_LEN + len as usize;
        if rest.len() < end {
            d.torn_at = Some(pos as u64);
            break;
        }
        let payload = &rest[DISCARD_RECORD_HEADER_LEN..end];
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..12]);
        h.update(payload);
        if h.finalize() != le_u32(&rest[12..]) {
            if zero_tail_within(pos, end) {
                // Written, but the end of it did not reach the disk (delayed allocation): torn.
                d.torn_at = Some(pos as u64);
                break;
            }
            return Err(corrupt(pos, Kind::Checksum, "record crc mismatch".into()));
        }
        match kind {
            TYPE_BATCH if (len as usize).is_multiple_of(DISCARD_ENTRY_LEN) => {
                for e in payload.chunks_exact(DISCARD_ENTRY_LEN) {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&e[..16]);
                    d.ids
                        .insert(ChunkId(u128::from_le_bytes(a)), le_u32(&e[16..]));
                }
                d.unconfirmed += 1;
            }
            TYPE_CHECKPOINT if len == 16 => {
                d.checkpoint_lsn = Some(le_u64(payload));
                d.unconfirmed = 0;
            }
            _ => {
                return Err(corrupt(
                    pos,
                    Kind::BadField,
                    format!("unknown record type {kind} or bad length {len}"),
                ))
            }
        }
        pos += end;
        d.valid_len = pos as u64;
    }
    if d.torn_at.is_none() {
        d.valid_len = b.len() as u64;
    }
    Ok(d)
}
