//! One log record: [`encode_record`], [`decode_at`] (shared by [`read_record_at`] and the block
//! reads of a catch-up) and the rule that tells a torn tail (a writer died mid-append, or the
//! filesystem left zeros) from corruption.
//!
//! Owns the record's bytes (`data-layout.md` section 5.3, "Record"). Does not own the segment header
//! (`segment`) nor what to do with a torn tail (the [`super::TxLog`] cuts it under its lock).

use std::fs::File;
use std::io;

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

/// Largest read a catch-up makes at once: it decodes every complete record such a block holds,
/// so a pass costs about one `pread` per block instead of two per record (on a network
/// filesystem each is a round trip). A record larger than a block takes one more read.
pub(super) const READ_BLOCK: u64 = 1 << 20;

/// Parse the record at `offset` of a segment whose current length is `file_len` (two reads: its
/// header, then the whole record). A catch-up reads whole blocks instead; both decode a record
/// with the same function, so they judge it by the same rules (`data-layout.md` section 5.3).
pub fn read_record_at(file: &File, offset: u64, file_len: u64) -> io::Result<RecordAt> {
    let io = IoCounters::default();
    let mut buf = Vec::new();
    loop {
        let w = Window {
            file,
            start: offset,
            bytes: &buf,
            file_len,
            io: &io,
        };
        let at = match decode_at(&w, offset)? {
            Decoded::Need(n) => {
                buf = vec![0u8; n as usize];
                io.read_exact_at(file, &mut buf, offset)?;
                continue;
            }
            Decoded::Valid { kind, lsn, len } => RecordAt::Valid {
                kind,
                lsn,
                payload: buf[RECORD_HEADER_LEN as usize..len as usize].to_vec(),
                len,
            },
            Decoded::End => RecordAt::End,
            Decoded::Short => RecordAt::Short,
            Decoded::ZeroTail => RecordAt::ZeroTail,
            Decoded::Bad(reason) => RecordAt::Bad(reason),
        };
        return Ok(at);
    }
}

/// Bytes of a segment read in one go from `start` (its block of a catch-up).
pub(super) struct Block {
    pub(super) start: u64,
    pub(super) bytes: Vec<u8>,
    /// The segment's length for decoding: the length it was seen to have, or less if it turned
    /// out shorter when read (a lock holder cut a torn tail meanwhile).
    pub(super) file_len: u64,
}

impl Block {
    /// Read `max(READ_BLOCK, need)` bytes of `file` from `start`, or what it holds up to
    /// `file_len` if that is less (one `pread` unless the kernel returns less).
    pub(super) fn read(
        file: &File,
        io: &IoCounters,
        start: u64,
        file_len: u64,
        need: u64,
    ) -> io::Result<Block> {
        let want = file_len.saturating_sub(start).min(READ_BLOCK.max(need));
        let mut bytes = vec![0u8; want as usize];
        let got = io.read_full_at(file, &mut bytes, start)?;
        bytes.truncate(got);
        let file_len = if (got as u64) < want {
            start + got as u64
        } else {
            file_len
        };
        Ok(Block {
            start,
            bytes,
            file_len,
        })
    }

    pub(super) fn window<'a>(&'a self, file: &'a File, io: &'a IoCounters) -> Window<'a> {
        Window {
            file,
            start: self.start,
            bytes: &self.bytes,
            file_len: self.file_len,
            io,
        }
    }
}

/// Bytes of a segment held in memory: `bytes` is the segment from byte `start` on, read after the
/// segment was seen `file_len` bytes long (`start + bytes.len() <= file_len`).
pub(super) struct Window<'a> {
    pub(super) file: &'a File,
    pub(super) start: u64,
    pub(super) bytes: &'a [u8],
    pub(super) file_len: u64,
    pub(super) io: &'a IoCounters,
}

impl Window<'_> {
    /// `n` bytes from segment offset `at`, if the window holds them.
    pub(super) fn get(&self, at: u64, n: u64) -> Option<&[u8]> {
        let rel = usize::try_from(at.checked_sub(self.start)?).ok()?;
        let end = rel.checked_add(usize::try_from(n).ok()?)?;
        self.bytes.get(rel..end)
    }

    /// The bytes from `at` to the end of the file, if the window reaches the end of the file.
    fn to_end(&self, at: u64) -> Option<&[u8]> {
        if self.start + self.bytes.len() as u64 != self.file_len {
            return None;
        }
        self.get(at, self.file_len.checked_sub(at)?)
    }

    fn all_zero_from(&self, at: u64) -> io::Result<bool> {
        match self.to_end(at) {
            Some(b) => Ok(b.iter().all(|&x| x == 0)),
            None => all_zero_from(self.file, at, self.file_len, self.io),
        }
    }

    fn zero_run_start(&self, floor: u64) -> io::Result<u64> {
        match self.to_end(floor) {
            Some(b) => Ok(b
                .iter()
                .rposition(|&x| x != 0)
                .map_or(floor, |i| floor + i as u64 + 1)),
            None => zero_run_start(self.file, floor, self.file_len, self.io),
        }
    }
}

/// What [`decode_at`] finds at one position: a [`RecordAt`] without a copy of the payload, or
/// that the window ends before the record does.
#[derive(Debug)]
pub(super) enum Decoded {
    /// A valid record of `len` bytes; its payload is the window's bytes
    /// `offset + RECORD_HEADER_LEN .. offset + len`.
    Valid {
        kind: u8,
        lsn: Lsn,
        len: u64,
    },
    End,
    Short,
    ZeroTail,
    Bad(String),
    /// The window holds less of the record than the file does: read this many bytes from the
    /// record's first byte and decode again (never more than the file holds from there).
    Need(u64),
}

/// Decode the record at segment offset `offset` from the bytes of `w`: the one place that applies
/// [LOG-1] and the torn-tail rules ([LOG-4], `data-layout.md` section 5.3) to a record, whichever
/// way its bytes were read. Reads the file only for the zero-tail test of a record that is not
/// valid, and only when the window does not reach the end of the file.
pub(super) fn decode_at(w: &Window<'_>, offset: u64) -> io::Result<Decoded> {
    let file_len = w.file_len;
    if offset >= file_len {
        return Ok(Decoded::End);
    }
    if file_len - offset < RECORD_HEADER_LEN {
        return Ok(Decoded::Short);
    }
    let Some(h) = w.get(offset, RECORD_HEADER_LEN) else {
        return Ok(Decoded::Need(RECORD_HEADER_LEN));
    };
    let plen = u32::from_le_bytes([h[16], h[17], h[18], h[19]]) as u64;
    if &h[0..4] != RECORD_MAGIC || plen > MAX_PAYLOAD {
        if w.all_zero_from(offset)? {
            return Ok(Decoded::ZeroTail);
        }
        return Ok(Decoded::Bad(if &h[0..4] != RECORD_MAGIC {
            "bad record magic".into()
        } else {
            format!("payload length {plen} exceeds limit")
        }));
    }
    let len = RECORD_HEADER_LEN + plen;
    if file_len - offset < len {
        return Ok(Decoded::Short);
    }
    let Some(rec) = w.get(offset, len) else {
        return Ok(Decoded::Need(len));
    };
    let stored = u32::from_le_bytes([rec[20], rec[21], rec[22], rec[23]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rec[0..20]);
    hasher.update(&rec[RECORD_HEADER_LEN as usize..]);
    let actual = hasher.finalize();
    if actual != stored {
        // [LOG-4]: a record whose bytes end in zeros that reach the end of the file is a power
        // cut's unwritten blocks, not rot, however much of its header and payload did land.
        if is_zero_tail(w.zero_run_start(offset)?, offset, offset + len) {
            return Ok(Decoded::ZeroTail);
        }
        return Ok(Decoded::Bad(format!(
            "record crc32 mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let kind = rec[4];
    if kind != TYPE_TXN && kind != TYPE_SEGMENT_END {
        return Ok(Decoded::Bad(format!("unknown record type {kind}")));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[8..16]);
    Ok(Decoded::Valid {
        kind,
        lsn: Lsn(u64::from_le_bytes(b)),
        len,
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
pub(super) fn zero_run_start(
    file: &File,
    floor: u64,
    file_len: u64,
    io: &IoCounters,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut end = file_len;
    while end > floor {
        let n = ((end - floor) as usize).min(buf.len());
        let start = end - n as u64;
        io.read_exact_at(file, &mut buf[..n], start)?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(floor)
}

pub(super) fn all_zero_from(
    file: &File,
    offset: u64,
    file_len: u64,
    io: &IoCounters,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = offset;
    while pos < file_len {
        let n = ((file_len - pos) as usize).min(buf.len());
        io.read_exact_at(file, &mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}
