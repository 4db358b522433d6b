//! Keys and values of the metadata trees, and the metadata checkpoint body (format 3,
//! `data-layout.md` 5.7b "Metadata trees").
//!
//! Two trees (`meta::tree`): the namespace tree, which a snapshot shares, and the chunk index.
//! Namespace keys start with a one-byte tag and the inode number big-endian, so that one inode's
//! records are adjacent and in order: `i` + ino -> the inode, `d` + parent + name -> the child's
//! inode number, `x` + ino + part -> up to [`EXTENTS_PER_PART`] extents of the file, `p` + ino ->
//! the parent and name of the link that made it (a directory's only link). Chunk index
//! keys are the 16-byte chunk id big-endian. Pure: no I/O, no state.

use crate::ids::{ChunkId, InodeNo, PackId};
use crate::model::{ChunkEntry, Extent, Inode, Timestamp};

use super::meta::{decode_inode, dts, encode_inode, ts};
use super::{Dec, DecodeError, DecodeErrorKind, Enc};

pub const TAG_INODE: u8 = b'i';
pub const TAG_DIRENT: u8 = b'd';
pub const TAG_EXTENTS: u8 = b'x';
pub const TAG_PARENT: u8 = b'p';
/// Length of the key prefix every record of one inode (or one directory's entries) shares.
pub const INO_PREFIX_LEN: usize = 9;
/// Extents per `x` record: 1024 x 32 bytes stays under the tree's 64 KiB value limit.
pub const EXTENTS_PER_PART: usize = 1024;
const EXTENT_LEN: usize = 32;
/// Bytes before the extents in part 0: total extent count (u32) and bytes they cover (u64).
const PART0_HEADER_LEN: usize = 12;

fn bad(at: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError::new(at as u64, DecodeErrorKind::BadField, reason)
}

/// `tag` + ino: the prefix of one inode's records of that kind.
pub fn ino_prefix(tag: u8, ino: InodeNo) -> [u8; INO_PREFIX_LEN] {
    let mut k = [0u8; INO_PREFIX_LEN];
    k[0] = tag;
    k[1..9].copy_from_slice(&ino.0.to_be_bytes());
    k
}

pub fn inode_key(ino: InodeNo) -> [u8; INO_PREFIX_LEN] {
    ino_prefix(TAG_INODE, ino)
}

pub fn dirent_key(parent: InodeNo, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(INO_PREFIX_LEN + name.len());
    k.extend_from_slice(&ino_prefix(TAG_DIRENT, parent));
    k.extend_from_slice(name);
    k
}

pub fn extents_key(ino: InodeNo, part: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&ino_prefix(TAG_EXTENTS, ino));
    k[9..].copy_from_slice(&part.to_be_bytes());
    k
}

/// The inode number in a key of any namespace tag.
pub fn key_ino(key: &[u8]) -> Result<InodeNo, DecodeError> {
    let b: [u8; 8] = key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(0, format!("key of {} bytes has no inode number", key.len())))?;
    Ok(InodeNo(u64::from_be_bytes(b)))
}

pub fn encode_inode_value(i: &Inode) -> Vec<u8> {
    let mut e = Enc::default();
    encode_inode(&mut e, i);
    e.0
}

/// An inode record; `key_ino` is the inode number its key names, which the record must repeat.
pub fn decode_inode_value(key_ino: InodeNo, v: &[u8]) -> Result<Inode, DecodeError> {
    let mut d = Dec::new(v);
    let i = decode_inode(&mut d)?;
    if !d.done() {
        return Err(bad(d.pos, "trailing bytes after the inode"));
    }
    if i.ino != key_ino {
        return Err(bad(
            0,
            format!("inode record says {} but is stored as {key_ino}", i.ino),
        ));
    }
    Ok(i)
}

pub fn parent_key(ino: InodeNo) -> [u8; INO_PREFIX_LEN] {
    ino_prefix(TAG_PARENT, ino)
}

pub fn encode_parent_value(parent: InodeNo, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + name.len());
    v.extend_from_slice(&parent.0.to_le_bytes());
    v.extend_from_slice(name);
    v
}

pub fn decode_parent_value(v: &[u8]) -> Result<(InodeNo, Vec<u8>), DecodeError> {
    if v.len() < 9 {
        return Err(bad(
            0,
            format!("parent value of {} bytes, under 9", v.len()),
        ));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[..8]);
    Ok((InodeNo(u64::from_le_bytes(b)), v[8..].to_vec()))
}

pub fn encode_dirent_value(child: InodeNo) -> Vec<u8> {
    child.0.to_le_bytes().to_vec()
}

pub fn decode_dirent_value(v: &[u8]) -> Result<InodeNo, DecodeError> {
    let b: [u8; 8] = v.try_into().map_err(|_| {
        bad(
            0,
            format!("directory entry value of {} bytes, not 8", v.len()),
        )
    })?;
    Ok(InodeNo(u64::from_le_bytes(b)))
}

/// A file's extent list as its `x` records: (part, value) pairs; none for an empty list.
pub fn encode_extent_parts(extents: &[Extent]) -> Vec<(u32, Vec<u8>)> {
    let total: u64 = extents.iter().map(|x| u64::from(x.len)).sum();
    let mut out = Vec::new();
    for (part, xs) in extents.chunks(EXTENTS_PER_PART).enumerate() {
        let mut e = Enc::default();
        if part == 0 {
            e.u32(extents.len() as u32);
            e.u64(total);
        }
        for x in xs {
            e.u64(x.file_off);
            e.u128(x.chunk.0);
            e.u32(x.chunk_off);
            e.u32(x.len);
        }
        out.push((part as u32, e.0));
    }
    out
}

/// Part 0's header: how many extents the file has in all, and the bytes they cover.
pub fn decode_extent_summary(v: &[u8]) -> Result<(u32, u64), DecodeError> {
    let mut d = Dec::new(v);
    Ok((d.u32()?, d.u64()?))
}

/// The extents of one `x` record, appended to `out`.
pub fn decode_extent_part(part: u32, v: &[u8], out: &mut Vec<Extent>) -> Result<(), DecodeError> {
    let body = if part == 0 {
        v.get(PART0_HEADER_LEN..)
            .ok_or_else(|| bad(0, "extent part 0 shorter than its header"))?
    } else {
        v
    };
    if body.len() % EXTENT_LEN != 0 || body.len() / EXTENT_LEN > EXTENTS_PER_PART {
        return Err(bad(
            0,
            format!("extent part of {} bytes is not whole extents", body.len()),
        ));
    }
    let mut d = Dec::new(body);
    while !d.done() {
        out.push(Extent {
            file_off: d.u64()?,
            chunk: ChunkId(d.u128()?),
            chunk_off: d.u32()?,
            len: d.u32()?,
        });
    }
    Ok(())
}

pub fn chunk_key(id: ChunkId) -> [u8; 16] {
    id.0.to_be_bytes()
}

pub fn decode_chunk_key(k: &[u8]) -> Result<ChunkId, DecodeError> {
    let b: [u8; 16] = k
        .try_into()
        .map_err(|_| bad(0, format!("chunk key of {} bytes, not 16", k.len())))?;
    Ok(ChunkId(u128::from_be_bytes(b)))
}

pub fn encode_chunk_value(e: &ChunkEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&e.pack.0.to_le_bytes());
    v.extend_from_slice(&e.raw_len.to_le_bytes());
    v
}

pub fn decode_chunk_value(v: &[u8]) -> Result<ChunkEntry, DecodeError> {
    let mut d = Dec::new(v);
    let e = ChunkEntry {
        pack: PackId(d.u64()?),
        raw_len: d.u32()?,
    };
    if !d.done() {
        return Err(bad(d.pos, "trailing bytes after the chunk entry"));
    }
    Ok(e)
}

/// Magic of a metadata checkpoint body (inside the checkpoint file's envelope).
pub const BODY_MAGIC: &[u8; 8] = b"VMETA3\0\0";

/// A snapshot as a checkpoint body lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapRecord {
    pub id: u64,
    pub name: Vec<u8>,
    pub time: Timestamp,
    /// The encoded root of its namespace tree once it is ready.
    pub root: Option<Vec<u8>>,
}

/// What a checkpoint body holds: the two roots (encoded), the counters and the snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub namespace: Vec<u8>,
    pub chunks: Vec<u8>,
    pub next_ino: u64,
    pub inodes: u64,
    pub chunk_count: u64,
    pub snapshots: Vec<SnapRecord>,
}

pub fn encode_body(b: &Body) -> Vec<u8> {
    let mut e = Enc::default();
    e.0.extend_from_slice(BODY_MAGIC);
    e.bytes(&b.namespace);
    e.bytes(&b.chunks);
    e.u64(b.next_ino);
    e.u64(b.inodes);
    e.u64(b.chunk_count);
    e.u32(b.snapshots.len() as u32);
    for s in &b.snapshots {
        e.u64(s.id);
        e.bytes(&s.name);
        ts(&mut e, s.time);
        match &s.root {
            Some(r) => {
                e.u8(1);
                e.bytes(r);
            }
            None => e.u8(0),
        }
    }
    e.0
}

pub fn decode_body(bytes: &[u8]) -> Result<Body, DecodeError> {
    if bytes.get(..8) != Some(&BODY_MAGIC[..]) {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::BadMagic,
            "not a format-3 metadata checkpoint body",
        ));
    }
    let mut d = Dec::new(&bytes[8..]);
    let namespace = d.bytes()?;
    let chunks = d.bytes()?;
    let next_ino = d.u64()?;
    let inodes = d.u64()?;
    let chunk_count = d.u64()?;
    let n = d.u32()? as usize;
    // The smallest snapshot record is 8 + 4 + 12 + 1 bytes.
    if n > bytes.len() / 25 {
        return Err(bad(
            d.pos + 8,
            format!("snapshot count {n} exceeds the body"),
        ));
    }
    let mut snapshots = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u64()?;
        let name = d.bytes()?;
        let time = dts(&mut d)?;
        let root = match d.u8()? {
            0 => None,
            1 => Some(d.bytes()?),
            f => return Err(bad(d.pos + 7, format!("snapshot root flag {f}"))),
        };
        snapshots.push(SnapRecord {
            id,
            name,
            time,
            root,
        });
    }
    if !d.done() {
        return Err(bad(d.pos + 8, "trailing bytes after the snapshots"));
    }
    Ok(Body {
        namespace,
        chunks,
        next_ino,
        inodes,
        chunk_count,
        snapshots,
    })
}
