//! Byte layout of pack files (`packs/<PackId>.pack`) and pack index files (`packs/<PackId>.idx`).
//!
//! This is the only code that knows their offsets. The layout, the validity rules ([PACK-n]) and
//! the reasons behind them are specified in `data-layout.md` section 5.7; read that instead of looking for
//! offsets in comments here.
//!
//! Everything here is pure: bytes in, values out (or a [`DecodeError`] saying which byte is wrong).
//! File handling, scanning and recovery live in the `pack` module.

use crate::ids::{ChunkId, PackId};

pub const PACK_MAGIC: [u8; 8] = *b"VERFSPK1";
pub const PACK_VERSION: u32 = 1;
pub const PACK_HEADER_LEN: usize = 24;

pub const RECORD_MAGIC: [u8; 4] = *b"VREC";
pub const RECORD_HEADER_LEN: usize = 36;
/// Largest chunk a record may hold: fastcdc's largest `max` (16 MiB).
pub const MAX_RAW_LEN: u32 = 16 << 20;

pub const INDEX_MAGIC: [u8; 8] = *b"VERFSIX1";
pub const INDEX_VERSION: u32 = 1;
pub const INDEX_HEADER_LEN: usize = 24;
pub const INDEX_ENTRY_LEN: usize = 32;
pub const INDEX_TRAILER_LEN: usize = 4;

/// Flag bit 0 of a record: payload is one zstd frame. All other flag bits must be zero.
const FLAG_ZSTD: u8 = 1;

pub use super::{DecodeError, DecodeErrorKind};

fn err(at: u64, kind: DecodeErrorKind, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        at,
        kind,
        reason: reason.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn id_at(b: &[u8], at: usize) -> ChunkId {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    ChunkId::from_bytes(a)
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

// ---------------------------------------------------------------------------------------------
// Pack header

/// The 24-byte header at offset 0 of every pack ([PACK-1]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackHeader {
    pub pack_id: PackId,
}

impl PackHeader {
    pub fn encode(&self) -> [u8; PACK_HEADER_LEN] {
        let mut b = [0u8; PACK_HEADER_LEN];
        b[0..8].copy_from_slice(&PACK_MAGIC);
        b[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.pack_id.0.to_le_bytes());
        let crc = crc32(&[&b[0..20]]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check magic, crc and version ([PACK-1]). Does not compare the id to a file name.
    pub fn decode(b: &[u8]) -> Result<PackHeader, DecodeError> {
        if b.len() < PACK_HEADER_LEN {
            return Err(err(
                b.len() as u64,
                DecodeErrorKind::Short,
                format!(
                    "pack header needs {PACK_HEADER_LEN} bytes, have {}",
                    b.len()
                ),
            ));
        }
        if b[0..8] != PACK_MAGIC {
            return Err(err(
                0,
                DecodeErrorKind::BadMagic,
                "pack magic is not VERFSPK1",
            ));
        }
        let stored = u32_at(b, 20);
        let computed = crc32(&[&b[0..20]]);
        if stored != computed {
            // The damage may be anywhere in the 24 bytes: report the start of the header.
            return Err(err(
                0,
                DecodeErrorKind::Checksum,
                format!("pack header crc {stored:08x} != computed {computed:08x}"),
            ));
        }
        let version = u32_at(b, 8);
        if version != PACK_VERSION {
            return Err(err(
                8,
                DecodeErrorKind::BadField,
                format!("unknown pack format version {version}"),
            ));
        }
        Ok(PackHeader {
            pack_id: PackId(u64_at(b, 12)),
        })
    }

    /// Is `b` (shorter than a header) a prefix of this header? Used to tell a header torn by a
    /// crash during pack creation from a damaged one ([PACK-7]).
    pub fn is_torn_prefix(&self, b: &[u8]) -> bool {
        b.len() < PACK_HEADER_LEN && self.encode()[..b.len()] == *b
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// How a record's payload encodes the chunk (flag bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Payload is the chunk's bytes.
    Raw,
    /// Payload is one zstd frame that decompresses to the chunk's bytes.
    Zstd,
}

impl Encoding {
    pub fn flags(self) -> u8 {
        match self {
            Encoding::Raw => 0,
            Encoding::Zstd => FLAG_ZSTD,
        }
    }
    pub fn from_flags(flags: u8) -> Option<Encoding> {
        match flags {
            0 => Some(Encoding::Raw),
            FLAG_ZSTD => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// The fields of a 36-byte record header. The crc is not a field here: [`RecordHeader::encode`]
/// computes it from the payload and [`check_record_crc`] verifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    pub encoding: Encoding,
    pub chunk_id: ChunkId,
    pub raw_len: u32,
    pub stored_len: u32,
}

/// Check the length rule of [PACK-3]: `raw_len <= 16 MiB`; a raw payload is exactly `raw_len`
/// bytes; a zstd payload is non-empty and strictly smaller than `raw_len` (the writer stores a
/// chunk raw unless compression saves space, and the tight bound makes a damaged length field
/// visible before any payload is read).
/// `Err` is at 0, of kind [`DecodeErrorKind::BadField`].
pub fn check_lengths(encoding: Encoding, raw_len: u32, stored_len: u32) -> Result<(), DecodeError> {
    let bad = |reason: String| Err(err(0, DecodeErrorKind::BadField, reason));
    if raw_len > MAX_RAW_LEN {
        return bad(format!("raw_len {raw_len} exceeds {MAX_RAW_LEN}"));
    }
    match encoding {
        Encoding::Raw if stored_len != raw_len => bad(format!(
            "raw record with stored_len {stored_len} != raw_len {raw_len}"
        )),
        Encoding::Zstd if stored_len == 0 || stored_len >= raw_len => bad(format!(
            "zstd record with stored_len {stored_len} not in 1..raw_len ({raw_len})"
        )),
        _ => Ok(()),
    }
}

impl RecordHeader {
    /// Total bytes of the record on disk: header plus payload.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    /// Encode the header for `payload` (which must be `stored_len` bytes), crc included.
    pub fn encode(&self, payload: &[u8]) -> [u8; RECORD_HEADER_LEN] {
        debug_assert_eq!(payload.len(), self.stored_len as usize);
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4] = self.encoding.flags();
        // b[5..8] reserved, zero
        b[8..24].copy_from_slice(&self.chunk_id.to_bytes());
        b[24..28].copy_from_slice(&self.raw_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.stored_len.to_le_bytes());
        let crc = crc32(&[&b[0..32], payload]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode a record header and check everything that does not need the payload: magic, flags,
    /// reserved bytes, lengths ([PACK-3]). The crc is checked by [`check_record_crc`].
    pub fn decode(b: &[u8]) -> Result<RecordHeader, DecodeError> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(err(
                b.len() as u64,
                DecodeErrorKind::Short,
                format!(
                    "record header needs {RECORD_HEADER_LEN} bytes, have {}",
                    b.len()
                ),
            ));
        }
        if b[0..4] != RECORD_MAGIC {
            return Err(err(
                0,
                DecodeErrorKind::BadMagic,
                "record magic is not VREC",
            ));
        }
        let encoding = Encoding::from_flags(b[4]).ok_or_else(|| {
            err(
                4,
                DecodeErrorKind::BadField,
                format!("unknown record flags {:#04x}", b[4]),
            )
        })?;
        if b[5..8] != [0, 0, 0] {
            return Err(err(
                5,
                DecodeErrorKind::BadField,
                "reserved record bytes are not zero",
            ));
        }
        let raw_len = u32_at(b, 24);
        let stored_len = u32_at(b, 28);
        check_lengths(encoding, raw_len, stored_len).map_err(|e| err(24, e.kind, e.reason))?;
        Ok(RecordHeader {
            encoding,
            chunk_id: id_at(b, 8),
            raw_len,
            stored_len,
        })
    }
}

/// The crc stored in a record header; callers check `header.len() >= RECORD_HEADER_LEN`.
fn stored_record_crc(header: &[u8]) -> u32 {
    u32_at(header, 32)
}

/// Does the crc in `header` (36 bytes) match header bytes 0..32 followed by `payload`?
pub fn check_record_crc(header: &[u8], payload: &[u8]) -> bool {
    header.len() >= RECORD_HEADER_LEN
        && stored_record_crc(header) == crc32(&[&header[0..32], payload])
}

/// Would the crc in `header` match if its stored_len field said `payload.len()`? Used only to
/// recognise a complete final record whose stored_len field was damaged, so that it is reported
/// as corruption rather than cut as a torn tail ([PACK-7]).
pub fn record_crc_matches_with_len(header: &[u8], payload: &[u8]) -> bool {
    if header.len() < RECORD_HEADER_LEN {
        return false;
    }
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    let mut h = [0u8; 32];
    h.copy_from_slice(&header[0..32]);
    h[28..32].copy_from_slice(&len.to_le_bytes());
    stored_record_crc(header) == crc32(&[&h, payload])
}

// ---------------------------------------------------------------------------------------------
// Index

/// One `.idx` entry: where a chunk's record starts in the pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub chunk_id: ChunkId,
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
}

/// The contents of a `.idx` file ([PACK-8]). Entries are strictly sorted by chunk id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackIndex {
    pub pack_id: PackId,
    pub entries: Vec<IndexEntry>,
}

impl PackIndex {
    /// Build an index from entries in any order; for a chunk id that appears more than once the
    /// entry with the lowest offset is kept ([PACK-10]).
    pub fn new(pack_id: PackId, mut entries: Vec<IndexEntry>) -> PackIndex {
        entries.sort_by_key(|e| (e.chunk_id, e.offset));
        entries.dedup_by_key(|e| e.chunk_id);
        PackIndex { pack_id, entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len();
        let mut b = Vec::with_capacity(INDEX_HEADER_LEN + n * INDEX_ENTRY_LEN + INDEX_TRAILER_LEN);
        b.extend_from_slice(&INDEX_MAGIC);
        b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        b.extend_from_slice(&self.pack_id.0.to_le_bytes());
        // A pack holds at most a few million records; u32 cannot overflow for any sane pack size,
        // and `new` plus the writer guarantee it. Saturating keeps encode total.
        b.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.chunk_id.to_bytes());
            b.extend_from_slice(&e.offset.to_le_bytes());
            b.extend_from_slice(&e.raw_len.to_le_bytes());
            b.extend_from_slice(&e.stored_len.to_le_bytes());
        }
        let crc = crc32(&[&b]);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check magic, version, length, crc and the strict order of entries ([PACK-8]).
    /// Whether the entries agree with the pack is checked by the caller.
    pub fn decode(b: &[u8]) -> Result<PackIndex, DecodeError> {
        let min = INDEX_HEADER_LEN + INDEX_TRAILER_LEN;
        if b.len() < min {
            return Err(err(
                b.len() as u64,
                DecodeErrorKind::Short,
                format!("index needs at least {min} bytes, have {}", b.len()),
            ));
        }
        if b[0..8] != INDEX_MAGIC {
            return Err(err(
                0,
                DecodeErrorKind::BadMagic,
                "index magic is not VERFSIX1",
            ));
        }
        let body = b.len() - INDEX_TRAILER_LEN;
        let stored = u32_at(b, body);
        let computed = crc32(&[&b[..body]]);
        if stored != computed {
            // The damage may be anywhere before the crc: report the start of the file.
            return Err(err(
                0,
                DecodeErrorKind::Checksum,
                format!("index crc {stored:08x} != computed {computed:08x}"),
            ));
        }
        let version = u32_at(b, 8);
        if version != INDEX_VERSION {
            return Err(err(
                8,
                DecodeErrorKind::BadField,
                format!("unknown index version {version}"),
            ));
        }
        let pack_id = PackId(u64_at(b, 12));
        let count = u32_at(b, 20) as usize;
        let expect = count
            .checked_mul(INDEX_ENTRY_LEN)
            .and_then(|x| x.checked_add(min))
            .ok_or_else(|| {
                err(
                    20,
                    DecodeErrorKind::BadField,
                    format!("index count {count} overflows"),
                )
            })?;
        if expect != b.len() {
            return Err(err(
                20,
                DecodeErrorKind::BadField,
                format!(
                    "index count {count} needs {expect} bytes, file has {}",
                    b.len()
                ),
            ));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
            let e = IndexEntry {
                chunk_id: id_at(b, at),
                offset: u64_at(b, at + 16),
                raw_len: u32_at(b, at + 24),
                stored_len: u32_at(b, at + 28),
            };
            if let Some(prev) = entries.last().map(|p: &IndexEntry| p.chunk_id) {
                if prev >= e.chunk_id {
                    return Err(err(
                        at as u64,
                        DecodeErrorKind::BadField,
                        format!(
                            "index entry {i} is not sorted strictly after entry {}",
                            i - 1
                        ),
                    ));
                }
            }
            entries.push(e);
        }
        Ok(PackIndex { pack_id, entries })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Golden bytes of a pack header, field by field ([PACK-1]).
    #[test]
    fn golden_pack_header() {
        let h = PackHeader {
            pack_id: PackId(0x0123_4567_89ab_cdef),
        };
        let b = h.encode();
        #[rustfmt::skip]
        let expect_prefix: [u8; 20] = [
            b'V', b'E', b'R', b'F', b'S', b'P', b'K', b'1', // 0..8   magic
            0x01, 0x00, 0x00, 0x00,                         // 8..12  version 1, LE
            0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // 12..20 pack id, LE
        ];
        assert_eq!(b[..20], expect_prefix);
        // 20..24 crc32 (IEEE, as crc32fast / zlib) of bytes 0..20, LE
        assert_eq!(b[20..24], crc32fast::hash(&expect_prefix).to_le_bytes());
        assert_eq!(b[20..24], [0xad, 0xe8, 0x18, 0x47]);
        assert_eq!(PackHeader::decode(&b), Ok(h));
    }

    /// Golden bytes of a record header, field by field ([PACK-3]).
    #[test]
    fn golden_record_header() {
        let payload = b"hello";
        let h = RecordHeader {
            encoding: Encoding::Raw,
            chunk_id: ChunkId(0x00112233_44556677_8899aabb_ccddeeff),
            raw_len: 5,
            stored_len: 5,
        };
        let b = h.encode(payload);
        #[rustfmt::skip]
        let expect_prefix: [u8; 32] = [
            b'V', b'R', b'E', b'C',                         // 0..4   magic
            0x00,                                           // 4      flags: raw
            0x00, 0x00, 0x00,                               // 5..8   reserved
            0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, // 8..24  chunk id, u128 LE
            0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00,
            0x05, 0x00, 0x00, 0x00,                         // 24..28 raw_len 5
            0x05, 0x00, 0x00, 0x00,                         // 28..32 stored_len 5
        ];
        assert_eq!(b[..32], expect_prefix);
        // 32..36 crc32 of bytes 0..32 then the payload, LE
        let mut h2 = crc32fast::Hasher::new();
        h2.update(&expect_prefix);
        h2.update(payload);
        assert_eq!(b[32..36], h2.finalize().to_le_bytes());
        assert_eq!(b[32..36], [0x36, 0x0a, 0x19, 0x9a]);
        assert_eq!(RecordHeader::decode(&b), Ok(h));
        assert!(check_record_crc(&b, payload));
        assert!(!check_record_crc(&b, b"hellO"));
    }

    #[test]
    fn golden_index() {
        let idx = PackIndex::new(
            PackId(7),
            vec![IndexEntry {
                chunk_id: ChunkId(1),
                offset: 24,
                raw_len: 10,
                stored_len: 10,
            }],
        );
        let b = idx.encode();
        #[rustfmt::skip]
        let expect_prefix: Vec<u8> = [
            &b"VERFSIX1"[..],                               // 0..8   magic
            &[1, 0, 0, 0],                                  // 8..12  version
            &[7, 0, 0, 0, 0, 0, 0, 0],                      // 12..20 pack id
            &[1, 0, 0, 0],                                  // 20..24 count
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // +0  chunk id
            &[24, 0, 0, 0, 0, 0, 0, 0],                     // +16 offset
            &[10, 0, 0, 0],                                 // +24 raw_len
            &[10, 0, 0, 0],                                 // +28 stored_len
        ].concat();
        assert_eq!(b[..56], expect_prefix[..]);
        assert_eq!(b[56..60], crc32fast::hash(&expect_prefix).to_le_bytes());
        assert_eq!(b.len(), 60);
        assert_eq!(PackIndex::decode(&b), Ok(idx));
    }

    #[test]
    fn header_rejects_bad_version_magic_and_every_flip() {
        let b = PackHeader {
            pack_id: PackId(42),
        }
        .encode();
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert!(PackHeader::decode(&c).is_err(), "flip byte {i} bit {bit}");
            }
        }
        assert_eq!(
            PackHeader::decode(&b[..23]).unwrap_err().kind,
            DecodeErrorKind::Short
        );
        let h = PackHeader {
            pack_id: PackId(42),
        };
        assert!(h.is_torn_prefix(&b[..0]));
        assert!(h.is_torn_prefix(&b[..23]));
        assert!(!h.is_torn_prefix(&b[..]));
        assert!(!PackHeader {
            pack_id: PackId(43)
        }
        .is_torn_prefix(&b[..15]));
    }

    #[test]
    fn record_length_rules() {
        assert!(check_lengths(Encoding::Raw, 0, 0).is_ok());
        assert!(check_lengths(Encoding::Raw, MAX_RAW_LEN, MAX_RAW_LEN).is_ok());
        assert!(check_lengths(Encoding::Raw, MAX_RAW_LEN + 1, MAX_RAW_LEN + 1).is_err());
        assert!(check_lengths(Encoding::Raw, 10, 9).is_err());
        assert!(check_lengths(Encoding::Zstd, 10, 9).is_ok());
        assert!(check_lengths(Encoding::Zstd, 10, 10).is_err());
        assert!(check_lengths(Encoding::Zstd, 10, 0).is_err());
    }

    #[test]
    fn stored_len_damage_is_recognised() {
        let payload = vec![9u8; 100];
        let h = RecordHeader {
            encoding: Encoding::Raw,
            chunk_id: ChunkId::of(&payload),
            raw_len: 100,
            stored_len: 100,
        };
        let mut b = h.encode(&payload);
        b[28] ^= 0x40;
        assert!(!check_record_crc(&b, &payload));
        assert!(record_crc_matches_with_len(&b, &payload));
        assert!(!record_crc_matches_with_len(&b, &payload[..99]));
    }

    fn arb_header() -> impl Strategy<Value = (RecordHeader, Vec<u8>)> {
        (
            any::<bool>(),
            any::<u128>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            0u32..1000,
        )
            .prop_map(|(zstd, id, payload, extra)| {
                let stored_len = payload.len() as u32;
                let (encoding, raw_len) = if zstd && stored_len > 0 {
                    (Encoding::Zstd, stored_len + 1 + extra)
                } else {
                    (Encoding::Raw, stored_len)
                };
                (
                    RecordHeader {
                        encoding,
                        chunk_id: ChunkId(id),
                        raw_len,
                        stored_len,
                    },
                    payload,
                )
            })
    }

    proptest! {
        #[test]
        fn record_header_round_trips((h, payload) in arb_header()) {
            let b = h.encode(&payload);
            prop_assert_eq!(RecordHeader::decode(&b), Ok(h));
            prop_assert!(check_record_crc(&b, &payload));
        }

        #[test]
        fn record_header_flip_is_detected((h, payload) in arb_header(), pos in 0usize..36, bit in 0u8..8) {
            let mut b = h.encode(&payload);
            b[pos] ^= 1 << bit;
            let ok = RecordHeader::decode(&b).is_ok() && check_record_crc(&b, &payload);
            prop_assert!(!ok);
        }

        #[test]
        fn index_round_trips(id in any::<u64>(), raw in proptest::collection::vec((any::<u128>(), any::<u64>(), any::<u32>(), any::<u32>()), 0..50)) {
            let entries = raw.into_iter().map(|(c, o, r, s)| IndexEntry { chunk_id: ChunkId(c), offset: o, raw_len: r, stored_len: s }).collect();
            let idx = PackIndex::new(PackId(id), entries);
            let b = idx.encode();
            prop_assert_eq!(PackIndex::decode(&b), Ok(idx));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PackHeader::decode(&bytes);
            let _ = RecordHeader::decode(&bytes);
            let _ = PackIndex::decode(&bytes);
            let _ = check_record_crc(&bytes, &bytes);
            let _ = record_crc_matches_with_len(&bytes, &bytes);
        }
    }
}
