//! One log record: [`encode_record`], [`read_record_at`] and the rule that tells a torn tail
//! (a writer died mid-append, or the filesystem left zeros) from corruption.
//!
//! Owns the record's bytes (`data-layout.md` section 5.3, "Record"). Does not own the segment header
//! (`segment`) nor what to do with a torn tail (the [`super::TxLog`] cuts it under its lock).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::iocount::IoCounters;
use super::{Lsn, MAX_PAYLOAD, RECORD_HEADER_LEN, RECORD_MAGIC, TYPE_SEGMENT_END, TYPE_TXN};

/// Encode one record (header + payload). Layout: `data-layout.md` section 5.3, "Record".
pub fn encode_record(kind: u8, lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD_HEADER_LEN as usize + payload.len());
    r.extend_from_slice(RECORD_MAGIC);
    r.push(kind);
    r.extend_from_slice(&[0, 0, 0]);
    r.extend_from_slice(&lsn.0.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&r[0..20]);
    h.update(payload);
    r.extend_from_slice(&h.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

/// What lies at one position of a segment.
#[derive(Debug)]
pub enum RecordAt {
    /// A valid record: its type, lsn, payload, and total length in bytes.
    Valid {
        kind: u8,
        lsn: Lsn,
        payload: Vec<u8>,
        len: u64,
    },
    /// Nothing: clean end of the segment.
    End,
    /// The file ends inside a record (a writer died mid-write, or one is writing right now).
    Short,
    /// A complete record whose bytes are all zero from here to EOF (power loss after a size update).
    ZeroTail,
    /// A complete record that is wrong: corruption.
    Bad(String),
}

/// Parse the record at `offset` of a segment whose current length is `file_len`.
pub fn read_record_at(file: &File, offset: u64, file_len: u64) -> io::Result<RecordAt> {
    read_record_counted(file, offset, file_len, &IoCounters::default())
}

pub(super) fn read_record_counted(
    file: &File,
    offset: u64,
    file_len: u64,
    io: &IoCounters,
) -> io::Result<RecordAt> {
    if offset >= file_len {
        return Ok(RecordAt::End);
    }
    if file_len - offset < RECORD_HEADER_LEN {
        return Ok(RecordAt::Short);
    }
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    io.read_exact_at(file, &mut h, offset)?;
    let plen = u32::from_le_bytes([h[16], h[17], h[18], h[19]]) as u64;
    if &h[0..4] != RECORD_MAGIC || plen > MAX_PAYLOAD {
        if all_zero_from(file, offset, file_len)? {
            return Ok(RecordAt::ZeroTail);
        }
        return Ok(RecordAt::Bad(if &h[0..4] != RECORD_MAGIC {
            "bad record magic".into()
        } else {
            format!("payload length {plen} exceeds limit")
        }));
    }
    if file_len - offset < RECORD_HEADER_LEN + plen {
        return Ok(RecordAt::Short);
    }
    let mut payload = vec![0u8; plen as usize];
    io.read_exact_at(file, &mut payload, offset + RECORD_HEADER_LEN)?;
    let stored = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[0..20]);
    hasher.update(&payload);
    let actual = hasher.finalize();
    if actual != stored {
        // [LOG-4]: a record whose bytes end in zeros that reach the end of the file is a power
        // cut's unwritten blocks, not rot, however much of its header and payload did land.
        if is_zero_tail(
            zero_run_start(file, offset, file_len)?,
            offset,
            offset + RECORD_HEADER_LEN + plen,
        ) {
            return Ok(RecordAt::ZeroTail);
        }
        return Ok(RecordAt::Bad(format!(
            "record crc32 mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let kind = h[4];
    if kind != TYPE_TXN && kind != TYPE_SEGMENT_END {
        return Ok(RecordAt::Bad(format!("unknown record type {kind}")));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[8..16]);
    Ok(RecordAt::Valid {
        kind,
        lsn: Lsn(u64::from_le_bytes(b)),
        payload,
        len: RECORD_HEADER_LEN + plen,
    })
}

/// [LOG-4]: is a record at `start..end` that fails its crc, in a file whose final run of zero
/// bytes begins at `zeros`, the remains of a power cut? Yes if the zeros cover a whole 512-byte
/// block boundary inside the record (blocks that never reached the disk read back as zeros), or
/// are at least 64 bytes long; a few zero bytes at the end of a payload are just its last fields.
pub(super) fn is_zero_tail(zeros: u64, start: u64, end: u64) -> bool {
    const BLOCK: u64 = 512;
    const LONG_RUN: u64 = 64;
    if zeros <= start {
        return true;
    }
    zeros < end && (zeros.div_ceil(BLOCK) * BLOCK < end || end - zeros >= LONG_RUN)
}

/// Where the run of zero bytes that ends the file begins, searching back no further than `floor`
/// (`file_len` if the last byte is not zero, `floor` if everything from `floor` on is zero).
pub(super) fn zero_run_start(file: &File, floor: u64, file_len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut end = file_len;
    while end > floor {
        let n = ((end - floor) as usize).min(buf.len());
        let start = end - n as u64;
        file.read_exact_at(&mut buf[..n], start)?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(floor)
}

pub(super) fn all_zero_from(file: &File, offset: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = offset;
    while pos < file_len {
        let n = ((file_len - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}
