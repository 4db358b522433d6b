//! Byte formats of the engine's own files. The only module that knows byte offsets.
//!
//! Pure: bytes in, values out, or a [`DecodeError`] saying what failed and at which byte. Owns
//! the format file ([`FormatFile`]), metadata records ([`meta`]), packs and their indexes
//! ([`pack`]), the metadata trees' keys and checkpoint bodies ([`keys`]) and `.discard` files ([`discard`]). Does not own
//! files, paths or I/O (the layers above do, and name the path in their errors), and imports
//! nothing above `ids`/`model`.
//!
//! Specified in `data-layout.md`: "Format file", "Metadata records", "Pack file", "Metadata trees" and
//! discard files.

pub mod discard;
pub mod keys;
pub mod meta;
pub mod pack;

use std::fmt;
use std::path::Path;

/// Why some bytes are not a valid structure: what failed (`kind`, `reason`) and where. `at` is
/// the byte offset of the offending field inside the bytes the decoder was given (each decoder
/// says what they are; the caller adds their position in the file, and the file's path:
/// `Error::corrupt` in `error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub at: u64,
    pub kind: DecodeErrorKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Fewer bytes than the structure needs.
    Short,
    /// The magic does not match: not this kind of structure at all.
    BadMagic,
    /// A field holds a value the format forbids (version, flags, reserved, lengths, order).
    BadField,
    /// The stored crc32 does not match the bytes.
    Checksum,
}

impl std::error::Error for DecodeError {}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at +{})", self.reason, self.at)
    }
}

impl DecodeError {
    pub fn new(at: u64, kind: DecodeErrorKind, reason: impl Into<String>) -> Self {
        DecodeError {
            at,
            kind,
            reason: reason.into(),
        }
    }
}

/// Magic at offset 0 of `STORE/FORMAT`.
pub const FORMAT_MAGIC: &[u8; 8] = b"VERFSTOR";
/// The store format version this build reads and writes. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 3;
pub const FORMAT_FILE_LEN: usize = 36;

/// Contents of the format file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatFile {
    pub version: u32,
    pub uuid: [u8; 16],
}

impl FormatFile {
    pub fn encode(&self) -> [u8; FORMAT_FILE_LEN] {
        let mut b = [0u8; FORMAT_FILE_LEN];
        b[0..8].copy_from_slice(FORMAT_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16: flags, zero in version 1.
        b[16..32].copy_from_slice(&self.uuid);
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode, checking magic and crc; the version is returned as found (the caller refuses it).
    /// Every error is at 0 (`path` is unused: the caller names the file).
    pub fn decode(path: &Path, b: &[u8]) -> Result<FormatFile, DecodeError> {
        let _ = path;
        if b.len() < 8 || &b[0..8] != FORMAT_MAGIC {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::BadMagic,
                "not a verfs format file (bad magic)",
            ));
        }
        if b.len() != FORMAT_FILE_LEN {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Short,
                format!(
                    "format file is {} bytes, expected {FORMAT_FILE_LEN}",
                    b.len()
                ),
            ));
        }
        let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
        if crc32fast::hash(&b[0..32]) != crc {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Checksum,
                "format file crc32 mismatch",
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(FormatFile {
            version: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            uuid,
        })
    }
}

/// Little-endian writer for the metadata encodings.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A byte string: u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
}

/// Bounds-checked little-endian reader: never panics on short or hostile input. Errors are at
/// the offset in `buf` where the value starts.
pub struct Dec<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::new(
                self.pos as u64,
                DecodeErrorKind::Short,
                format!("truncated at byte {} (need {n} more)", self.pos),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(a))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn format_file_golden_bytes() {
        let f = FormatFile {
            version: 1,
            uuid: [0xab; 16],
        };
        let b = f.encode();
        assert_eq!(&b[0..8], b"VERFSTOR"); // magic
        assert_eq!(&b[8..12], &[1, 0, 0, 0]); // version 1, LE
        assert_eq!(&b[12..16], &[0, 0, 0, 0]); // flags
        assert_eq!(&b[16..32], &[0xab; 16]); // store uuid
        assert_eq!(&b[32..36], &crc32fast::hash(&b[0..32]).to_le_bytes()); // crc32 of 0..32
        assert_eq!(FormatFile::decode(Path::new("F"), &b).unwrap(), f);
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(
                FormatFile::decode(Path::new("F"), &bad).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn dec_never_panics_on_short_input() {
        let mut d = Dec::new(&[1, 2, 3]);
        assert!(d.u64().is_err());
        let mut d = Dec::new(&[0xff, 0xff, 0xff, 0x7f]);
        assert!(d.bytes().is_err());
    }
}
