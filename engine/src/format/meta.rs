//! Encoding of metadata ops: the payload of every log record and the body of every checkpoint.
//!
//! Layout: `data-layout.md`, "Metadata records". A payload is a u32 op count followed by the ops;
//! each op is a one-byte tag followed by its fields, all little-endian.

use std::collections::BTreeMap;

use super::{Dec, DecodeError, DecodeErrorKind, Enc};
use crate::ids::{ChunkId, InodeNo, PackId};
use crate::model::{ChunkEntry, Extent, FileKind, Inode, Op, Timestamp};

pub const TAG_PUT_INODE: u8 = 1;
pub const TAG_DELETE_INODE: u8 = 2;
pub const TAG_LINK: u8 = 3;
pub const TAG_UNLINK: u8 = 4;
pub const TAG_SET_EXTENTS: u8 = 5;
pub const TAG_ADD_CHUNK: u8 = 6;
pub const TAG_REMOVE_CHUNK: u8 = 7;
pub const TAG_SNAPSHOT_BEGIN: u8 = 8;
pub const TAG_SNAPSHOT_READY: u8 = 9;
pub const TAG_SNAPSHOT_DROP: u8 = 10;

/// The on-disk code of a file kind.
pub fn kind_code(k: FileKind) -> u8 {
    match k {
        FileKind::File => 1,
        FileKind::Dir => 2,
        FileKind::Symlink => 3,
        FileKind::Fifo => 4,
        FileKind::Socket => 5,
        FileKind::CharDev => 6,
        FileKind::BlockDev => 7,
    }
}

/// The file kind of an on-disk code, if it is one.
pub fn kind_of_code(v: u8) -> Option<FileKind> {
    Some(match v {
        1 => FileKind::File,
        2 => FileKind::Dir,
        3 => FileKind::Symlink,
        4 => FileKind::Fifo,
        5 => FileKind::Socket,
        6 => FileKind::CharDev,
        7 => FileKind::BlockDev,
        _ => return None,
    })
}

pub fn ts(e: &mut Enc, t: Timestamp) {
    e.i64(t.secs);
    e.u32(t.nsecs);
}

pub fn encode_inode(e: &mut Enc, i: &Inode) {
    e.u64(i.ino.0);
    e.u8(kind_code(i.kind));
    e.u32(i.perm);
    e.u32(i.uid);
    e.u32(i.gid);
    e.u32(i.nlink);
    e.u64(i.size);
    ts(e, i.atime);
    ts(e, i.mtime);
    ts(e, i.ctime);
    e.u64(i.rdev);
    e.bytes(&i.target);
    e.u32(i.xattrs.len() as u32);
    for (k, v) in &i.xattrs {
        e.bytes(k);
        e.bytes(v);
    }
}

pub fn encode_op(e: &mut Enc, op: &Op) {
    match op {
        Op::PutInode(i) => {
            e.u8(TAG_PUT_INODE);
            encode_inode(e, i);
        }
        Op::DeleteInode(ino) => {
            e.u8(TAG_DELETE_INODE);
            e.u64(ino.0);
        }
        Op::Link { parent, name, ino } => {
            e.u8(TAG_LINK);
            e.u64(parent.0);
            e.bytes(name);
            e.u64(ino.0);
        }
        Op::Unlink { parent, name } => {
            e.u8(TAG_UNLINK);
            e.u64(parent.0);
            e.bytes(name);
        }
        Op::SetExtents { ino, extents } => {
            e.u8(TAG_SET_EXTENTS);
            e.u64(ino.0);
            e.u32(extents.len() as u32);
            for x in extents {
                e.u64(x.file_off);
                e.u128(x.chunk.0);
                e.u32(x.chunk_off);
                e.u32(x.len);
            }
        }
        Op::AddChunk { id, entry } => {
            e.u8(TAG_ADD_CHUNK);
            e.u128(id.0);
            e.u64(entry.pack.0);
            e.u32(entry.raw_len);
        }
        Op::RemoveChunk { id } => {
            e.u8(TAG_REMOVE_CHUNK);
            e.u128(id.0);
        }
        Op::SnapshotBegin { id, name, time } => {
            e.u8(TAG_SNAPSHOT_BEGIN);
            e.u64(*id);
            e.bytes(name);
            ts(e, *time);
        }
        Op::SnapshotReady { id, root } => {
            e.u8(TAG_SNAPSHOT_READY);
            e.u64(*id);
            e.bytes(root);
        }
        Op::SnapshotDrop { id } => {
            e.u8(TAG_SNAPSHOT_DROP);
            e.u64(*id);
        }
    }
}

pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut e = Enc::default();
    e.u32(ops.len() as u32);
    for op in ops {
        encode_op(&mut e, op);
    }
    e.0
}

/// A field of `d` at `at` holds a value the format forbids.
fn bad(at: usize, reason: String) -> DecodeError {
    DecodeError::new(at as u64, DecodeErrorKind::BadField, reason)
}

pub fn dts(d: &mut Dec<'_>) -> Result<Timestamp, DecodeError> {
    let secs = d.i64()?;
    let nsecs = d.u32()?;
    if nsecs >= 1_000_000_000 {
        return Err(bad(
            d.pos - 4,
            format!("nanoseconds {nsecs} out of range at byte {}", d.pos - 4),
        ));
    }
    Ok(Timestamp { secs, nsecs })
}

pub fn decode_inode(d: &mut Dec<'_>) -> Result<Inode, DecodeError> {
    let ino = InodeNo(d.u64()?);
    let kind = d.u8()?;
    let kind = kind_of_code(kind).ok_or_else(|| {
        bad(
            d.pos - 1,
            format!("unknown file kind {kind} at byte {}", d.pos - 1),
        )
    })?;
    let perm = d.u32()?;
    let uid = d.u32()?;
    let gid = d.u32()?;
    let nlink = d.u32()?;
    let size = d.u64()?;
    let atime = dts(d)?;
    let mtime = dts(d)?;
    let ctime = dts(d)?;
    let rdev = d.u64()?;
    let target = d.bytes()?;
    let n = d.u32()?;
    let mut xattrs = BTreeMap::new();
    for _ in 0..n {
        let k = d.bytes()?;
        let v = d.bytes()?;
        xattrs.insert(k, v);
    }
    Ok(Inode {
        ino,
        kind,
        perm,
        uid,
        gid,
        nlink,
        size,
        atime,
        mtime,
        ctime,
        rdev,
        target,
        xattrs,
    })
}

/// Decode one op; errors are at their offset in `d`'s buffer.
pub fn decode_op(d: &mut Dec<'_>) -> Result<Op, DecodeError> {
    let tag = d.u8()?;
    Ok(match tag {
        TAG_PUT_INODE => Op::PutInode(decode_inode(d)?),
        TAG_DELETE_INODE => Op::DeleteInode(InodeNo(d.u64()?)),
        TAG_LINK => Op::Link {
            parent: InodeNo(d.u64()?),
            name: d.bytes()?,
            ino: InodeNo(d.u64()?),
        },
        TAG_UNLINK => Op::Unlink {
            parent: InodeNo(d.u64()?),
            name: d.bytes()?,
        },
        TAG_SET_EXTENTS => {
            let ino = InodeNo(d.u64()?);
            let n = d.u32()? as usize;
            // Each extent is 32 bytes: refuse counts the payload cannot hold before allocating.
            if n > (d.buf.len() - d.pos) / 32 {
                return Err(bad(
                    d.pos - 4,
                    format!("extent count {n} at byte {} exceeds the record", d.pos - 4),
                ));
            }
            let mut extents = Vec::with_capacity(n);
            for _ in 0..n {
                extents.push(Extent {
                    file_off: d.u64()?,
                    chunk: ChunkId(d.u128()?),
                    chunk_off: d.u32()?,
                    len: d.u32()?,
                });
            }
            Op::SetExtents { ino, extents }
        }
        TAG_ADD_CHUNK => Op::AddChunk {
            id: ChunkId(d.u128()?),
            entry: ChunkEntry {
                pack: PackId(d.u64()?),
                raw_len: d.u32()?,
            },
        },
        TAG_REMOVE_CHUNK => Op::RemoveChunk {
            id: ChunkId(d.u128()?),
        },
        TAG_SNAPSHOT_BEGIN => Op::SnapshotBegin {
            id: d.u64()?,
            name: d.bytes()?,
            time: dts(d)?,
        },
        TAG_SNAPSHOT_READY => Op::SnapshotReady {
            id: d.u64()?,
            root: d.bytes()?,
        },
        TAG_SNAPSHOT_DROP => Op::SnapshotDrop { id: d.u64()? },
        t => {
            return Err(bad(
                d.pos - 1,
                format!("unknown op tag {t} at byte {}", d.pos - 1),
            ))
        }
    })
}

/// Decode a payload of ops. The error is at the byte of `bytes` where the failing op starts
/// (so that a caller that knows where `bytes` lies in a file can name the file offset), and its
/// reason says at which byte decoding failed.
pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, DecodeError> {
    let mut d = Dec::new(bytes);
    let n = d.u32().map_err(|e| DecodeError { at: 0, ..e })? as usize;
    // The smallest op is 9 bytes.
    if n > bytes.len() / 9 + 1 {
        return Err(bad(0, format!("op count {n} at byte 0 exceeds the record")));
    }
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let at = d.pos;
        ops.push(decode_op(&mut d).map_err(|e| DecodeError {
            at: at as u64,
            kind: e.kind,
            reason: format!("op {i} at byte {at}: {}", e.reason),
        })?);
    }
    if !d.done() {
        return Err(bad(
            d.pos,
            format!(
                "{} trailing bytes at byte {} after {n} ops",
                d.buf.len() - d.pos,
                d.pos
            ),
        ));
    }
    Ok(ops)
}

/// [`decode_ops`] (the name it had when it alone reported the offset).
pub fn decode_ops_at(bytes: &[u8]) -> Result<Vec<Op>, DecodeError> {
    decode_ops(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_inode() -> impl Strategy<Value = Inode> {
        (
            any::<u64>(),
            1u8..=7,
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            0u32..1_000_000_000,
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 0..8),
                0..3,
            ),
        )
            .prop_map(
                |(ino, kind, perm, nlink, size, secs, nsecs, target, xattrs)| Inode {
                    ino: InodeNo(ino),
                    kind: kind_of_code(kind).unwrap_or(FileKind::File),
                    perm,
                    uid: perm ^ 1,
                    gid: nlink,
                    nlink,
                    size,
                    atime: Timestamp { secs, nsecs },
                    mtime: Timestamp {
                        secs: -secs / 2,
                        nsecs,
                    },
                    ctime: Timestamp { secs, nsecs: 0 },
                    rdev: size ^ 3,
                    target,
                    xattrs,
                },
            )
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            arb_inode().prop_map(Op::PutInode),
            any::<u64>().prop_map(|i| Op::DeleteInode(InodeNo(i))),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<u64>()
            )
                .prop_map(|(p, name, i)| Op::Link {
                    parent: InodeNo(p),
                    name,
                    ino: InodeNo(i)
                }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..30)).prop_map(|(p, name)| {
                Op::Unlink {
                    parent: InodeNo(p),
                    name,
                }
            }),
            (
                any::<u64>(),
                proptest::collection::vec(
                    (any::<u64>(), any::<u128>(), any::<u32>(), any::<u32>()),
                    0..5
                )
            )
                .prop_map(|(i, xs)| Op::SetExtents {
                    ino: InodeNo(i),
                    extents: xs
                        .into_iter()
                        .map(|(file_off, c, chunk_off, len)| Extent {
                            file_off,
                            chunk: ChunkId(c),
                            chunk_off,
                            len
                        })
                        .collect()
                }),
            (any::<u128>(), any::<u64>(), any::<u32>()).prop_map(|(c, p, l)| Op::AddChunk {
                id: ChunkId(c),
                entry: ChunkEntry {
                    pack: PackId(p),
                    raw_len: l
                }
            }),
            any::<u128>().prop_map(|c| Op::RemoveChunk { id: ChunkId(c) }),
        ]
    }

    proptest! {
        #[test]
        fn ops_roundtrip(ops in proptest::collection::vec(arb_op(), 0..20)) {
            let bytes = encode_ops(&ops);
            prop_assert_eq!(decode_ops(&bytes).unwrap(), ops);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_ops(&bytes);
        }
    }

    #[test]
    fn golden_add_chunk() {
        let op = Op::AddChunk {
            id: ChunkId(0x0102),
            entry: ChunkEntry {
                pack: PackId(0xaa),
                raw_len: 5,
            },
        };
        let b = encode_ops(&[op]);
        let mut want = vec![1, 0, 0, 0]; // op count 1
        want.push(6); // tag AddChunk
        want.extend_from_slice(&[0x02, 0x01]); // chunk id, 16 bytes LE
        want.extend_from_slice(&[0; 14]);
        want.extend_from_slice(&[0xaa, 0, 0, 0, 0, 0, 0, 0]); // pack id u64 LE
        want.extend_from_slice(&[5, 0, 0, 0]); // raw_len u32 LE
        assert_eq!(b, want);
    }
}
