//! Control files: small JSON documents with a kind tag and a crc32, written atomically.
//!
//! Owns the envelope (magic, kind, crc32, JSON body) and its atomic write and exclusive create.
//! Does not own any document's fields (each module that writes a control file defines its own).
//!
//! Byte format: `data-layout.md` section 2 (Conventions, "Control files"). Leases, journals' headers, manifests and
//! two-phase-commit files all use this envelope, so a torn or bit-flipped control file is always
//! detected, never parsed as something else.

use std::path::{Path, PathBuf};
use std::{fs, io};

use serde::{de::DeserializeOwned, Serialize};

use crate::fsutil;

/// First bytes of every control file.
pub const MAGIC: &str = "VERFS-CTL";

/// A control file that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// `offset`: the byte of the file where the damage was found.
    #[error("{path}: corrupt control file at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl CtlError {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CtlError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Encode `value` as a control file of `kind`.
pub fn encode<T: Serialize>(kind: &str, value: &T) -> Vec<u8> {
    // serde_json cannot fail on our plain structs; fall back to `null` rather than panic.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let crc = crc32fast::hash(&body);
    let mut out = format!("{MAGIC} {kind} {crc:08x}\n").into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Decode a control file of `kind`; `path` is only used in error messages.
pub fn decode<T: DeserializeOwned>(path: &Path, kind: &str, bytes: &[u8]) -> Result<T, CtlError> {
    let corrupt = |offset: usize, reason: String| CtlError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt(bytes.len(), "no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..nl])
        .map_err(|e| corrupt(e.valid_up_to(), "header is not UTF-8".into()))?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(corrupt(0, "bad magic".into()));
    }
    let kind_at = MAGIC.len() + 1;
    let got_kind = parts.next().unwrap_or("");
    if got_kind != kind {
        return Err(corrupt(
            kind_at,
            format!("kind {got_kind:?}, expected {kind:?}"),
        ));
    }
    let crc_at = kind_at + got_kind.len() + 1;
    let crc = parts
        .next()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or_else(|| corrupt(crc_at, "bad crc field".into()))?;
    let body_at = nl + 1;
    let body = &bytes[body_at..];
    let body = body
        .strip_suffix(b"\n")
        .ok_or_else(|| corrupt(bytes.len(), "truncated (no final newline)".into()))?;
    let actual = crc32fast::hash(body);
    if actual != crc {
        // The damage may be anywhere in the body: report where it starts.
        return Err(corrupt(
            body_at,
            format!("crc32 mismatch: stored {crc:08x}, computed {actual:08x}"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| corrupt(body_at + json_offset(body, &e), format!("bad JSON: {e}")))
}

/// Byte offset in `body` of the line and column a JSON error names (serde_json counts columns in
/// bytes, 1-based; line 0 means no position, e.g. a type error after the whole value).
fn json_offset(body: &[u8], e: &serde_json::Error) -> usize {
    if e.line() == 0 {
        return 0;
    }
    let line_start = if e.line() == 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(e.line() - 2)
            .map_or(body.len(), |(i, _)| i + 1)
    };
    (line_start + e.column().saturating_sub(1)).min(body.len())
}

/// Read and decode a control file.
pub fn read<T: DeserializeOwned>(path: &Path, kind: &str) -> Result<T, CtlError> {
    let bytes = fs::read(path).map_err(|source| CtlError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(path, kind, &bytes)
}

/// Write a control file atomically (temp + fsync + rename + fsync dir).
pub fn write<T: Serialize>(path: &Path, kind: &str, value: &T) -> Result<(), CtlError> {
    fsutil::write_atomic(path, &encode(kind, value)).map_err(|source| CtlError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Create a control file only if absent; `Ok(false)` when another process won the race.
pub fn create_exclusive<T: Serialize>(
    path: &Path,
    kind: &str,
    value: &T,
) -> Result<bool, CtlError> {
    fsutil::create_exclusive(path, &encode(kind, value)).map_err(|source| CtlError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Doc {
        a: u32,
        b: String,
    }

    #[test]
    fn roundtrip_and_every_flipped_byte_is_detected() {
        let doc = Doc {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode("doc", &doc);
        assert_eq!(decode::<Doc>(Path::new("p"), "doc", &bytes).unwrap(), doc);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                decode::<Doc>(Path::new("p"), "doc", &bad).is_err(),
                "flip at {i} not detected"
            );
        }
        assert!(decode::<Doc>(Path::new("p"), "other", &bytes).is_err());
        assert!(decode::<Doc>(Path::new("p"), "doc", &bytes[..bytes.len() - 1]).is_err());
    }

    /// Every rejection names the file and the byte where the damage was found.
    #[test]
    fn rejections_name_path_and_offset() {
        let p = Path::new("/s/leases/x/info");
        let at = |bytes: &[u8], kind: &str| match decode::<Doc>(p, kind, bytes) {
            Err(CtlError::Corrupt { offset, .. }) => {
                let msg = decode::<Doc>(p, kind, bytes).unwrap_err().to_string();
                assert!(msg.contains("/s/leases/x/info"), "{msg}");
                assert!(msg.contains(&format!("at byte {offset}")), "{msg}");
                offset
            }
            other => panic!("expected Corrupt, got {other:?}"),
        };
        let good = encode(
            "doc",
            &Doc {
                a: 1,
                b: "y".into(),
            },
        );
        assert_eq!(at(b"no newline", "doc"), 10);
        assert_eq!(at(&good, "other"), 10); // "VERFS-CTL " is 10 bytes
        let mut bad_crc = good.clone();
        bad_crc[14] = b'g';
        assert_eq!(at(&bad_crc, "doc"), 14);
        // Valid envelope, JSON of the wrong shape: the offset points into the body.
        let body = b"{\"a\": 1,\n \"b\": 7}";
        let mut f = format!("{MAGIC} doc {:08x}\n", crc32fast::hash(body)).into_bytes();
        let body_at = f.len();
        f.extend_from_slice(body);
        f.push(b'\n');
        let off = at(&f, "doc") as usize;
        assert!(
            off > body_at + 9 && off <= f.len(),
            "offset {off}, body at {body_at}"
        );
    }
}
