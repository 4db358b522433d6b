//! The model every layer shares: inodes, extents, the chunk index entry, metadata ops,
//! timestamps, and store paths (splitting, showing).
//!
//! Plain data and pure functions. Owns no state and no byte format: the encodings are in
//! `format`, the state built from ops and the validated builder of ops in
//! `meta`.

use std::collections::BTreeMap;

use crate::ids::{ChunkId, InodeNo, PackId};

/// What an inode is. Its on-disk code is `format::meta`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                Timestamp {
                    secs: -(d.as_secs() as i64),
                    nsecs: 0,
                }
            }
        }
    }
}

/// An inode's attributes (everything but its extents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: InodeNo,
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u64,
    /// Symlink target (empty for other kinds).
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Inode {
    pub fn new(ino: InodeNo, kind: FileKind, perm: u32) -> Inode {
        let now = Timestamp::now();
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Inode {
            ino,
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }
}

/// A run of a file's bytes stored in a chunk: file bytes `[file_off, file_off+len)` are chunk
/// bytes `[chunk_off, chunk_off+len)`. Bytes of a file covered by no extent are a hole (zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub file_off: u64,
    pub chunk: ChunkId,
    pub chunk_off: u32,
    pub len: u32,
}

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub pack: PackId,
    pub raw_len: u32,
}

/// One change in a log record. Applying is total: an op that does not fit the state (which a
/// validated `meta::Tx` never produces) is applied as far as it can be, so every process still
/// derives the same state from the same log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace an inode's attributes (extents untouched).
    PutInode(Inode),
    /// Remove an inode and its extents.
    DeleteInode(InodeNo),
    /// Add or replace the entry `name` in directory `parent`.
    Link {
        parent: InodeNo,
        name: Vec<u8>,
        ino: InodeNo,
    },
    /// Remove the entry `name` from `parent`.
    Unlink { parent: InodeNo, name: Vec<u8> },
    /// Replace a file's whole extent list.
    SetExtents { ino: InodeNo, extents: Vec<Extent> },
    /// Index a chunk.
    AddChunk { id: ChunkId, entry: ChunkEntry },
    /// Drop a chunk from the index (garbage collection).
    RemoveChunk { id: ChunkId },
    /// A snapshot of the whole tree as it is just before this record; its file is being written.
    SnapshotBegin {
        id: u64,
        name: Vec<u8>,
        time: Timestamp,
    },
    /// The snapshot's tree is durable: it can be listed, read and restored from. `root` is the
    /// encoded root of its namespace tree (`meta::tree::Root`, 44 bytes: `data-layout.md` 5.7a).
    SnapshotReady { id: u64, root: Vec<u8> },
    /// Forget a snapshot (deleted, or abandoned by a creator that died before it was ready).
    SnapshotDrop { id: u64 },
}

/// A store path that names nothing: [`components`] refuses it. Converts into
/// `Error::InvalidPath` / `Error::NameTooLong` (in `error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: File name too long")]
    NameTooLong { path: String },
}

/// Which directory entry a path names: its parent and its last component.
#[derive(Clone, Debug)]
pub struct Entry {
    pub parent: InodeNo,
    pub name: Vec<u8>,
}

pub const NAME_MAX: usize = 255;

/// The root entry through which a mount shows snapshots (never stored).
pub const SNAPSHOTS_DIR: &str = ".snapshots";

/// A store path for messages: as is when it is UTF-8, else each byte that is not part of a UTF-8
/// character as `\xNN` (names are bytes; an error must still say which one it means).
pub fn show_path(path: &[u8]) -> String {
    match std::str::from_utf8(path) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut out = String::new();
            for chunk in path.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out
        }
    }
}

/// Split a store path (`/a/b/c`, `a/b`, `/`) into its components, refusing `.`/`..` and empty
/// names so that every path has exactly one meaning. A path is bytes (`&str`, `&[u8]`, or an
/// `OsStr`'s bytes): a name need not be UTF-8.
pub fn components<P: AsRef<[u8]> + ?Sized>(path: &P) -> Result<Vec<&[u8]>, PathError> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => {
                return Err(PathError::Invalid {
                    path: show_path(path),
                    reason: "'..' is not allowed".into(),
                })
            }
            c if c.len() > NAME_MAX => {
                return Err(PathError::NameTooLong {
                    path: show_path(path),
                })
            }
            c => out.push(c),
        }
    }
    Ok(out)
}
