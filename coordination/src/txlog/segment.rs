//! Segment files `log/<first lsn>.seg`: names, the segment header, creating an empty log and
//! listing segments.
//!
//! Owns the segment header's bytes (`data-layout.md` "Log segment"). Does not own the records
//! inside a segment (`record`) nor when segments roll (the [`super::TxLog`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::{LogError, Lsn, LOG_VERSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use crate::fsutil;
use crate::io_site;

pub(super) fn segment_name(first: Lsn) -> String {
    format!("{:020}.seg", first.0)
}

pub(super) fn parse_numbered(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Encode a segment header. Layout: `data-layout.md` "Log segment".
pub fn encode_segment_header(first: Lsn) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first.0.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn decode_segment_header(path: &Path, h: &[u8]) -> Result<Lsn, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.into(),
    };
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(corrupt("segment header truncated"));
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(corrupt("bad segment magic"));
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc32fast::hash(&h[0..20]) != crc {
        return Err(corrupt("segment header crc32 mismatch"));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != LOG_VERSION {
        return Err(corrupt(&format!(
            "segment version {version}, this verfs reads {LOG_VERSION}"
        )));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[12..20]);
    Ok(Lsn(u64::from_le_bytes(b)))
}

/// Create an empty log in `log_dir` (first segment starting at lsn 1). Used by store init.
///
/// On error the directory may hold a partial segment; init is not complete until the caller's
/// format file exists, so a half-initialized store is never opened.
pub fn create(log_dir: &Path) -> Result<(), LogError> {
    fs::create_dir_all(log_dir).map_err(io_err(log_dir))?;
    // The first segment is complete before `LOCK` exists: store init takes an existing `LOCK`
    // for a finished log, so a crash or I/O error in between must not leave a torn segment.
    let seg_path = log_dir.join(segment_name(Lsn(1)));
    fsutil::write_atomic(&seg_path, &encode_segment_header(Lsn(1))).map_err(io_err(&seg_path))?;
    let lock_path = log_dir.join("LOCK");
    io_site!("txlog.init-create-lock", File::create(&lock_path)).map_err(io_err(&lock_path))?;
    fsutil::fsync_dir(log_dir).map_err(io_err(log_dir))
}

/// Segment files in `log_dir`, sorted by first lsn.
pub fn list_segments(log_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for e in fs::read_dir(log_dir).map_err(io_err(log_dir))? {
        let e = e.map_err(io_err(log_dir))?;
        let name = e.file_name();
        if let Some(n) = name.to_str().and_then(|n| parse_numbered(n, ".seg")) {
            out.push((Lsn(n), e.path()));
        }
    }
    out.sort();
    Ok(out)
}
