//! Byte format of `snapshots/<id>.snap` (`data-layout.md` 5.9): a header, then a body of
//! metadata ops (the encoding of [`super::meta`]) that rebuilds the tree.
//!
//! Owns the header, the body framing and the checks of [SNAP-4]. Does not own which inodes go
//! into a snapshot, nor turning the ops into a tree: that is the snapshot module's.

use super::meta as enc;
use super::{Dec, DecodeError, DecodeErrorKind as Kind, Enc};
use crate::ids::InodeNo;
use crate::model::{FileKind, Op};

pub const SNAP_MAGIC: &[u8; 8] = b"VERFSSN1";
pub const SNAP_VERSION: u32 = 1;
pub const SNAP_HEADER_LEN: usize = 40;

/// Builds a snapshot file op by op (only `PutInode`, `Link` and `SetExtents` belong in one).
pub struct SnapEncoder {
    body: Enc,
    count: u32,
}

impl Default for SnapEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapEncoder {
    pub fn new() -> Self {
        let mut body = Enc::default();
        body.u32(0);
        SnapEncoder { body, count: 0 }
    }

    pub fn push(&mut self, op: &Op) {
        enc::encode_op(&mut self.body, op);
        self.count += 1;
    }

    /// The whole file: header for snapshot `id`, then the body.
    pub fn finish(self, id: u64) -> Vec<u8> {
        let mut body = self.body.0;
        body[..4].copy_from_slice(&self.count.to_le_bytes());
        let mut h = Enc::default();
        h.0.extend_from_slice(SNAP_MAGIC);
        h.u32(SNAP_VERSION);
        h.u32(0);
        h.u64(id);
        h.u64(body.len() as u64);
        h.u32(crc32fast::hash(&body));
        let crc = crc32fast::hash(&h.0);
        h.u32(crc);
        debug_assert_eq!(h.0.len(), SNAP_HEADER_LEN);
        h.0.extend_from_slice(&body);
        h.0
    }
}

/// Parse a snapshot file of snapshot `id` ([SNAP-4]) into its ops, in file order. Every op is a
/// `PutInode`, `Link` or `SetExtents`, and the last `PutInode` of the root makes it a directory.
/// Offsets in errors are of the file.
pub fn decode(bytes: &[u8], id: u64) -> Result<Vec<Op>, DecodeError> {
    if bytes.len() < SNAP_HEADER_LEN {
        return Err(DecodeError::new(
            0,
            Kind::Short,
            format!(
                "{} bytes, shorter than the {SNAP_HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    let h = &bytes[..SNAP_HEADER_LEN];
    if &h[..8] != SNAP_MAGIC {
        return Err(DecodeError::new(
            0,
            Kind::BadMagic,
            "bad magic (not a snapshot file)",
        ));
    }
    let mut d = Dec::new(&h[8..]);
    let field = |r: Result<u64, DecodeError>| r.map_err(|e| DecodeError { at: 8, ..e });
    let version = field(d.u32().map(u64::from))?;
    let _flags = field(d.u32().map(u64::from))?;
    let file_id = field(d.u64())?;
    let body_len = field(d.u64())?;
    let body_crc = field(d.u32().map(u64::from))? as u32;
    let header_crc = field(d.u32().map(u64::from))? as u32;
    if crc32fast::hash(&h[..36]) != header_crc {
        return Err(DecodeError::new(36, Kind::Checksum, "header crc mismatch"));
    }
    if version != u64::from(SNAP_VERSION) {
        return Err(DecodeError::new(
            8,
            Kind::BadField,
            format!("snapshot format version {version}, this verfs reads {SNAP_VERSION}"),
        ));
    }
    if file_id != id {
        return Err(DecodeError::new(
            16,
            Kind::BadField,
            format!("header names snapshot {file_id:016x}, the file name {id:016x}"),
        ));
    }
    let body = &bytes[SNAP_HEADER_LEN..];
    if body.len() as u64 != body_len {
        return Err(DecodeError::new(
            24,
            Kind::BadField,
            format!("body is {} bytes, the header says {body_len}", body.len()),
        ));
    }
    if crc32fast::hash(body) != body_crc {
        return Err(DecodeError::new(
            SNAP_HEADER_LEN as u64,
            Kind::Checksum,
            "body crc mismatch",
        ));
    }
    let ops = enc::decode_ops(body).map_err(|e| DecodeError {
        at: SNAP_HEADER_LEN as u64 + e.at,
        kind: e.kind,
        reason: format!("body: {}", e.reason),
    })?;
    let mut root_kind = None;
    for op in &ops {
        match op {
            Op::PutInode(i) => {
                if i.ino == InodeNo::ROOT {
                    root_kind = Some(i.kind);
                }
            }
            Op::Link { .. } | Op::SetExtents { .. } => {}
            other => {
                return Err(DecodeError::new(
                    SNAP_HEADER_LEN as u64,
                    Kind::BadField,
                    format!("unexpected op in a snapshot: {other:?}"),
                ))
            }
        }
    }
    if root_kind != Some(FileKind::Dir) {
        return Err(DecodeError::new(
            SNAP_HEADER_LEN as u64,
            Kind::BadField,
            "no root directory",
        ));
    }
    Ok(ops)
}
