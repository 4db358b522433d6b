//! Checkpoint files `checkpoints/<lsn>.ckpt`: names, listing, and the checkpoint file's bytes
//! (`data-layout.md` "Checkpoint").
//!
//! Owns the checkpoint envelope (magic, lsn, length, crc32). Does not own the body, which the
//! [`super::StateMachine`] encodes, nor when checkpoints are written (the [`super::TxLog`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::segment::parse_numbered;
use super::{LogError, Lsn, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, LOG_VERSION};

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

/// Encode a checkpoint file. Layout: `data-layout.md` "Checkpoint".
pub fn encode_checkpoint_file(lsn: Lsn, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN as usize + body.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&LOG_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hcrc = crc32fast::hash(&out[0..36]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode a checkpoint file into its lsn and body, verifying both checksums.
pub fn decode_checkpoint_file(path: &Path, bytes: &[u8]) -> Result<(Lsn, Vec<u8>), LogError> {
    let corrupt = |offset: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < CHECKPOINT_HEADER_LEN as usize {
        return Err(corrupt(
            0,
            format!("checkpoint truncated to {} bytes", bytes.len()),
        ));
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
    if crc32fast::hash(&bytes[0..36]) != u32_at(36) {
        return Err(corrupt(36, "checkpoint header crc32 mismatch".into()));
    }
    let version = u32_at(8);
    if version != LOG_VERSION {
        return Err(corrupt(
            8,
            format!("checkpoint version {version}, this verfs reads {LOG_VERSION}"),
        ));
    }
    let lsn = Lsn(u64_at(16));
    let len = u64_at(24);
    let body = &bytes[CHECKPOINT_HEADER_LEN as usize..];
    if body.len() as u64 != len {
        return Err(corrupt(
            24,
            format!("checkpoint body is {} bytes, header says {len}", body.len()),
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != u32_at(32) {
        return Err(corrupt(
            CHECKPOINT_HEADER_LEN,
            format!("checkpoint body crc32 mismatch (computed {actual:08x})"),
        ));
    }
    Ok((lsn, body.to_vec()))
}
