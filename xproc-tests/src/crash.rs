//! Crash images: the states a power cut could leave a store in, built from a recording of one run.
//!
//! Overview of the main types:
//!
//! - [`parse_log`] reads what the LD_PRELOAD recorder (`shim/verfs_rec.c`, built by `build.rs`,
//!   path [`shim_path`]) wrote: one [`Record`] per call that changed a file or a directory entry
//!   under the store, or made one durable, in the order the kernel applied them (the recorder
//!   performs and logs each call under one lock across threads and processes).
//! - [`Tree`]: an in-memory file tree of inodes (regular files, directories, symlinks); node 0 is
//!   the store directory. [`Tree::scan`] reads the store as it is before recording (image 0).
//! - [`Recording`]: the records resolved against a live model of the tree into [`Step`]s that
//!   each change one inode: file data (a write or truncate), or one directory's entries (create,
//!   unlink, same-directory rename, ...). It checks every record against the model (the inode a
//!   path names must be the one the recorder saw), so a missed call shows up as an error, and
//!   [`Recording::live`] at the end must equal the real store (a test asserts it).
//! - The page-cache model: a step is *durable* once an `fsync`/`fdatasync` of its inode (the
//!   file for data, the directory for entries) follows it, or a `sync`. At a cut point (a prefix of
//!   the steps), the durable steps make the *base*; the others are *pending*. A [`Variant`] picks
//!   which pending steps survive, and how the last write survives (whole, first half only, first
//!   half then zeros, all zeros). Because every step touches one inode and per inode the durable
//!   steps are a prefix of its steps, applying the chosen pending steps on top of the base gives
//!   the same state as applying the survivors in their original order.
//! - [`Sweep`] walks the cut points in order keeping the base incrementally; [`Image`] is one
//!   candidate (cut, variant) with a cheap [`Image::fingerprint`] (files carry a version hash of
//!   the steps that made them, so no data is copied) used to drop duplicates before anything is
//!   written to disk; [`Tree::write_to`] materializes a chosen one.
//!
//! What the model does not cover: the recorder reports calls it cannot replay
//! ([`RecOp::Unsupported`]: copy_file_range, shared writable mmap, fallocate, raw syscalls),
//! and the test fails on them. A rename across directories is two independent steps (verfs does
//! not assume it is atomic, data-layout.md section 3), so an image may hold both names or neither.
//! File metadata other than size (mode, times) is not modelled. Only what the filesystem promises
//! after `fsync` is assumed: an `fsync` of a file does not make its directory entry durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::{Rng, SeedableRng};

/// The recorder library built by `build.rs` from `shim/verfs_rec.c`.
pub fn shim_path() -> PathBuf {
    PathBuf::from(env!("VERFS_REC_SHIM"))
}

// ---------------------------------------------------------------------------------------------
// The recorder's log
// ---------------------------------------------------------------------------------------------

/// Size of a record header (`shim/verfs_rec.c`, `struct hdr`).
pub const HEADER_LEN: usize = 36;

/// Operation codes of the recorder (`shim/verfs_rec.c`, `enum OP_*`).
pub mod op {
    pub const CREATE: u8 = 1;
    pub const TRUNC: u8 = 2;
    pub const WRITE: u8 = 3;
    pub const FSYNC: u8 = 4;
    pub const RENAME: u8 = 5;
    pub const UNLINK: u8 = 6;
    pub const MKDIR: u8 = 7;
    pub const RMDIR: u8 = 8;
    pub const LINK: u8 = 9;
    pub const SYMLINK: u8 = 10;
    pub const MARK: u8 = 11;
    pub const UNSUPPORTED: u8 = 12;
    pub const SYNCALL: u8 = 13;
}

/// One recorded call. Paths are relative to the store (`b""` is the store itself); `ino` is the
/// real inode number of the file the call acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecOp {
    Create {
        path: Vec<u8>,
        ino: u64,
    },
    Trunc {
        ino: u64,
        len: u64,
    },
    Write {
        ino: u64,
        off: u64,
        data: Vec<u8>,
    },
    Fsync {
        ino: u64,
        data_only: bool,
        dir: bool,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        ino: u64,
        flags: u8,
    },
    Unlink {
        path: Vec<u8>,
        ino: u64,
    },
    Mkdir {
        path: Vec<u8>,
        ino: u64,
    },
    Rmdir {
        path: Vec<u8>,
        ino: u64,
    },
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
        ino: u64,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
        ino: u64,
    },
    /// Written by the test driver between commands (`begin 3`, `ack 3`).
    Mark(String),
    /// A call the model cannot replay; the text says which and on what.
    Unsupported(String),
    SyncAll,
}

/// A record and the process that made the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pid: i32,
    pub op: RecOp,
}

/// Why a log or a recording cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError(pub String);

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encode one record as the recorder does (used by the driver for marks and by unit tests).
pub fn encode(pid: i32, opcode: u8, flags: u8, ino: u64, off: u64, a: &[u8], b: &[u8]) -> Vec<u8> {
    let total = HEADER_LEN + a.len() + b.len();
    let mut v = Vec::with_capacity(total);
    v.extend_from_slice(&(total as u32).to_le_bytes());
    v.push(opcode);
    v.push(flags);
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&pid.to_le_bytes());
    v.extend_from_slice(&ino.to_le_bytes());
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&(a.len() as u32).to_le_bytes());
    v.extend_from_slice(&(b.len() as u32).to_le_bytes());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

/// Encode a [`Record`] (the inverse of [`parse_log`] for one record).
pub fn encode_record(r: &Record) -> Vec<u8> {
    let p = r.pid;
    match &r.op {
        RecOp::Create { path, ino } => encode(p, op::CREATE, 0, *ino, 0, path, b""),
        RecOp::Trunc { ino, len } => encode(p, op::TRUNC, 0, *ino, *len, b"", b""),
        RecOp::Write { ino, off, data } => encode(p, op::WRITE, 0, *ino, *off, data, b""),
        RecOp::Fsync {
            ino,
            data_only,
            dir,
        } => encode(
            p,
            op::FSYNC,
            u8::from(*data_only) | (u8::from(*dir) << 1),
            *ino,
            0,
            b"",
            b"",
        ),
        RecOp::Rename {
            from,
            to,
            ino,
            flags,
        } => encode(p, op::RENAME, *flags, *ino, 0, from, to),
        RecOp::Unlink { path, ino } => encode(p, op::UNLINK, 0, *ino, 0, path, b""),
        RecOp::Mkdir { path, ino } => encode(p, op::MKDIR, 0, *ino, 0, path, b""),
        RecOp::Rmdir { path, ino } => encode(p, op::RMDIR, 0, *ino, 0, path, b""),
        RecOp::Link { from, to, ino } => encode(p, op::LINK, 0, *ino, 0, from, to),
        RecOp::Symlink { target, path, ino } => encode(p, op::SYMLINK, 0, *ino, 0, target, path),
        RecOp::Mark(t) => encode(p, op::MARK, 0, 0, 0, t.as_bytes(), b""),
        RecOp::Unsupported(t) => encode(p, op::UNSUPPORTED, 0, 0, 0, t.as_bytes(), b""),
        RecOp::SyncAll => encode(p, op::SYNCALL, 0, 0, 0, b"", b""),
    }
}

/// Parse the whole recorder log. A short last record means a recorded process died inside
/// `write(2)` of the log (not expected: the test kills nothing), so it is an error too.
pub fn parse_log(b: &[u8]) -> Result<Vec<Record>, LogError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        if b.len() - at < HEADER_LEN {
            return Err(LogError(format!("short record header at byte {at}")));
        }
        let len = u32_at(b, at) as usize;
        let n1 = u32_at(b, at + 28) as usize;
        let n2 = u32_at(b, at + 32) as usize;
        if len != HEADER_LEN + n1 + n2 || b.len() - at < len {
            return Err(LogError(format!(
                "bad record at byte {at}: length {len}, fields {n1} + {n2}, {} bytes left",
                b.len() - at
            )));
        }
        let opcode = b[at + 4];
        let flags = b[at + 5];
        let pid = i32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
        let ino = u64_at(b, at + 12);
        let off = u64_at(b, at + 20);
        let s1 = b[at + HEADER_LEN..at + HEADER_LEN + n1].to_vec();
        let s2 = b[at + HEADER_LEN + n1..at + len].to_vec();
        let text = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();
        let op = match opcode {
            op::CREATE => RecOp::Create { path: s1, ino },
            op::TRUNC => RecOp::Trunc { ino, len: off },
            op::WRITE => RecOp::Write { ino, off, data: s1 },
            op::FSYNC => RecOp::Fsync {
                ino,
                data_only: flags & 1 != 0,
                dir: flags & 2 != 0,
            },
            op::RENAME => RecOp::Rename {
                from: s1,
                to: s2,
                ino,
                flags,
            },
            op::UNLINK => RecOp::Unlink { path: s1, ino },
            op::MKDIR => RecOp::Mkdir { path: s1, ino },
            op::RMDIR => RecOp::Rmdir { path: s1, ino },
            op::LINK => RecOp::Link {
                from: s1,
                to: s2,
                ino,
            },
            op::SYMLINK => RecOp::Symlink {
                target: s1,
                path: s2,
                ino,
            },
            op::MARK => RecOp::Mark(text(s1)),
            op::UNSUPPORTED => RecOp::Unsupported(text(s1)),
            op::SYNCALL => RecOp::SyncAll,
            other => return Err(LogError(format!("unknown op {other} at byte {at}"))),
        };
        out.push(Record { pid, op });
        at += len;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The tree model
// ---------------------------------------------------------------------------------------------

/// An inode of the model, by index into [`Tree`]; 0 is the store directory.
pub type Node = usize;

/// One inode. File data is shared between the states that have not changed it (`Rc`).
#[derive(Debug, Clone)]
pub enum Inode {
    /// `ver` is a hash of how the file came to be (its origin and every step applied to it):
    /// equal versions mean equal bytes, so fingerprints need not read the data.
    File {
        data: Rc<Vec<u8>>,
        ver: u64,
    },
    Dir {
        entries: Rc<BTreeMap<Vec<u8>, Node>>,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// A file tree: every inode that exists at any point of the recording (unreachable ones are
/// simply not part of the image).
#[derive(Debug, Clone)]
pub struct Tree {
    pub inodes: Vec<Inode>,
}

/// An entry of a tree listing: what a path holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Dir,
    File { len: u64, sha256: String },
    Symlink(Vec<u8>),
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Tree {
    /// A tree holding only an empty root directory.
    pub fn empty() -> Tree {
        Tree {
            inodes: vec![Inode::Dir {
                entries: Rc::new(BTreeMap::new()),
            }],
        }
    }

    fn add(&mut self, inode: Inode) -> Node {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    fn new_file(&mut self, data: Vec<u8>) -> Node {
        let n = self.inodes.len();
        let ver = hash_of(("file", n, &data));
        self.add(Inode::File {
            data: Rc::new(data),
            ver,
        })
    }

    /// Read `dir` (the store as it is before recording), with the real inode number of each
    /// node. Hard links keep one node. Image 0: the model takes it as durable.
    pub fn scan(dir: &Path) -> std::io::Result<(Tree, HashMap<u64, Node>)> {
        let mut t = Tree::empty();
        let mut inos = HashMap::new();
        inos.insert(fs::symlink_metadata(dir)?.ino(), 0);
        t.scan_into(dir, 0, &mut inos)?;
        Ok((t, inos))
    }

    fn scan_into(
        &mut self,
        dir: &Path,
        node: Node,
        inos: &mut HashMap<u64, Node>,
    ) -> std::io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let md = fs::symlink_metadata(&p)?;
            let child = if let Some(&n) = inos.get(&md.ino()) {
                n
            } else {
                let n = if md.file_type().is_dir() {
                    self.add(Inode::Dir {
                        entries: Rc::new(BTreeMap::new()),
                    })
                } else if md.file_type().is_symlink() {
                    self.add(Inode::Symlink {
                        target: fs::read_link(&p)?.as_os_str().as_bytes().to_vec(),
                    })
                } else {
                    self.new_file(fs::read(&p)?)
                };
                inos.insert(md.ino(), n);
                if md.file_type().is_dir() {
                    self.scan_into(&p, n, inos)?;
                }
                n
            };
            self.entries_mut(node)
                .insert(e.file_name().as_bytes().to_vec(), child);
        }
        Ok(())
    }

    fn entries(&self, dir: Node) -> Option<&BTreeMap<Vec<u8>, Node>> {
        match &self.inodes[dir] {
            Inode::Dir { entries } => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: Node) -> &mut BTreeMap<Vec<u8>, Node> {
        match &mut self.inodes[dir] {
            Inode::Dir { entries } => Rc::make_mut(entries),
            // Steps are resolved against the live model, which only adds entries to directories.
            other => panic!("model: entry change on a non-directory {other:?}"),
        }
    }

    /// The node `path` (relative, `/`-separated) names, following no symlink.
    pub fn lookup(&self, path: &[u8]) -> Option<Node> {
        let mut n = 0;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            n = *self.entries(n)?.get(c)?;
        }
        Some(n)
    }

    /// The parent directory node and the last name of `path`.
    fn parent_of<'p>(&self, path: &'p [u8]) -> Result<(Node, &'p [u8]), LogError> {
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let d = self
            .lookup(dir)
            .filter(|&d| self.entries(d).is_some())
            .ok_or_else(|| LogError(format!("no directory {:?} in the model", show(dir))))?;
        Ok((d, name))
    }

    /// Every path of the tree reachable from the root, with what it holds.
    pub fn listing(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        self.list_into(0, String::new(), 0, &mut out);
        out
    }

    fn list_into(
        &self,
        dir: Node,
        prefix: String,
        depth: usize,
        out: &mut BTreeMap<String, Entry>,
    ) {
        let Some(entries) = self.entries(dir) else {
            return;
        };
        if depth > 64 {
            return;
        }
        for (name, &n) in entries.iter() {
            let p = format!("{prefix}{}", show(name));
            match &self.inodes[n] {
                Inode::Dir { .. } => {
                    out.insert(p.clone(), Entry::Dir);
                    self.list_into(n, format!("{p}/"), depth + 1, out);
                }
                Inode::File { data, .. } => {
                    out.insert(
                        p,
                        Entry::File {
                            len: data.len() as u64,
                            sha256: crate::sha256(data),
                        },
                    );
                }
                Inode::Symlink { target } => {
                    out.insert(p, Entry::Symlink(target.clone()));
                }
            }
        }
    }

    /// A hash of everything reachable from the root: names, kinds, file versions, symlink
    /// targets. Equal fingerprints mean equal images (up to 64-bit collisions).
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash_dir(0, 0, &mut h);
        h.finish()
    }

    fn hash_dir(&self, dir: Node, depth: usize, h: &mut impl Hasher) {
        let Some(entries) = self.entries(dir) else {
            return;
        };
        if depth > 64 {
            return;
        }
        entries.len().hash(h);
        for (name, &n) in entries.iter() {
            name.hash(h);
            match &self.inodes[n] {
                Inode::Dir { .. } => {
                    0u8.hash(h);
                    self.hash_dir(n, depth + 1, h);
                }
                Inode::File { ver, .. } => {
                    1u8.hash(h);
                    ver.hash(h);
                }
                Inode::Symlink { target } => {
                    2u8.hash(h);
                    target.hash(h);
                }
            }
        }
    }

    /// Write the tree under `dest` (which must not exist). A node reachable by two names is
    /// written once and hard-linked.
    pub fn write_to(&self, dest: &Path) -> std::io::Result<()> {
        fs::create_dir(dest)?;
        let mut written: HashMap<Node, PathBuf> = HashMap::new();
        self.write_dir(0, dest, 0, &mut written)
    }

    fn write_dir(
        &self,
        dir: Node,
        at: &Path,
        depth: usize,
        written: &mut HashMap<Node, PathBuf>,
    ) -> std::io::Result<()> {
        let Some(entries) = self.entries(dir) else {
            return Ok(());
        };
        if depth > 64 {
            return Ok(());
        }
        for (name, &n) in entries.iter() {
            let p = at.join(std::ffi::OsStr::from_bytes(name));
            match &self.inodes[n] {
                Inode::Dir { .. } => {
                    fs::create_dir(&p)?;
                    self.write_dir(n, &p, depth + 1, written)?;
                }
                Inode::File { data, .. } => {
                    if let Some(first) = written.get(&n) {
                        fs::hard_link(first, &p)?;
                    } else {
                        fs::write(&p, &data[..])?;
                        written.insert(n, p);
                    }
                }
                Inode::Symlink { target } => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)?;
                }
            }
        }
        Ok(())
    }
}

/// A path for messages.
pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

/// A recorded change, resolved to the one inode it changes.
#[derive(Debug, Clone)]
pub enum Step {
    Write {
        node: Node,
        off: u64,
        data: Rc<Vec<u8>>,
    },
    Trunc {
        node: Node,
        len: u64,
    },
    /// A name set to an inode (create, mkdir, symlink, link, the target half of a rename across
    /// directories).
    Link {
        dir: Node,
        name: Vec<u8>,
        node: Node,
    },
    /// A name removed (unlink, rmdir, the source half of a rename across directories).
    Unlink {
        dir: Node,
        name: Vec<u8>,
    },
    /// A rename inside one directory: atomic.
    Rename {
        dir: Node,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// `fsync`/`fdatasync` of the inode.
    Sync {
        node: Node,
    },
    SyncAll,
    Mark(String),
}

impl Step {
    /// The inode whose state the step changes (`None`: a sync or a mark).
    pub fn owner(&self) -> Option<Node> {
        match self {
            Step::Write { node, .. } | Step::Trunc { node, .. } => Some(*node),
            Step::Link { dir, .. } | Step::Unlink { dir, .. } | Step::Rename { dir, .. } => {
                Some(*dir)
            }
            Step::Sync { .. } | Step::SyncAll | Step::Mark(_) => None,
        }
    }

    /// A change of file data (as opposed to a directory entry).
    pub fn is_data(&self) -> bool {
        matches!(self, Step::Write { .. } | Step::Trunc { .. })
    }
}

/// How a chosen pending step survives the power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Survive {
    Whole,
    /// A write of which only the first half reached the disk (the file ends there if it grew).
    FirstHalf,
    /// A write whose start reached the disk and whose rest, from the first 512-byte sector
    /// boundary inside it, reads zeros (the size was updated, the last blocks were not written:
    /// ext4 delayed allocation). A write inside one sector reads all zeros.
    FirstHalfThenZeros,
    /// A write that reads all zeros.
    Zeros,
}

/// The unit in which a disk persists a write (data-layout.md section 3).
const SECTOR: usize = 512;

fn write_at(data: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    let end = off + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[off..end].copy_from_slice(bytes);
}

/// Apply step `i` to `t`; `with_data` false updates versions only (for fingerprints).
fn apply(t: &mut Tree, steps: &[Step], i: usize, how: Survive, with_data: bool) {
    match &steps[i] {
        Step::Write { node, off, data } => {
            let Inode::File { data: d, ver } = &mut t.inodes[*node] else {
                panic!("model: write step on a non-file");
            };
            let off = *off as usize;
            // Disks write whole 512-byte sectors and filesystems zero-fill whole blocks, so a
            // write that reads zeros past some point does so from a sector boundary of the file;
            // one that spans no boundary lands whole or reads all zeros.
            let boundary = (off / SECTOR + 1) * SECTOR;
            let zeros_from = if boundary < off + data.len() {
                boundary - off
            } else {
                0
            };
            let how = match how {
                Survive::FirstHalfThenZeros if zeros_from == 0 => Survive::Zeros,
                h => h,
            };
            *ver = hash_of((*ver, i, how));
            if with_data {
                let d = Rc::make_mut(d);
                let half = data.len() / 2;
                match how {
                    Survive::Whole => write_at(d, off, data),
                    Survive::FirstHalf => write_at(d, off, &data[..half]),
                    Survive::FirstHalfThenZeros => {
                        write_at(d, off, &data[..zeros_from]);
                        write_at(d, off + zeros_from, &vec![0; data.len() - zeros_from]);
                    }
                    Survive::Zeros => write_at(d, off, &vec![0; data.len()]),
                }
            }
        }
        Step::Trunc { node, len } => {
            let Inode::File { data: d, ver } = &mut t.inodes[*node] else {
                panic!("model: truncate step on a non-file");
            };
            *ver = hash_of((*ver, i));
            if with_data {
                Rc::make_mut(d).resize(*len as usize, 0);
            }
        }
        Step::Link { dir, name, node } => {
            t.entries_mut(*dir).insert(name.clone(), *node);
        }
        Step::Unlink { dir, name } => {
            t.entries_mut(*dir).remove(name);
        }
        Step::Rename { dir, from, to } => {
            let e = t.entries_mut(*dir);
            if let Some(n) = e.remove(from) {
                e.insert(to.clone(), n);
            }
        }
        Step::Sync { .. } | Step::SyncAll | Step::Mark(_) => {}
    }
}

/// The records of one run resolved into steps, with the initial tree they apply to.
pub struct Recording {
    /// Image 0 plus every inode created later (empty; unreachable until a step names it).
    pub initial: Tree,
    pub steps: Vec<Step>,
    /// For each step, the record it came from (for messages).
    pub record_of: Vec<usize>,
    /// What the running processes saw at the end: must equal the real store.
    pub live: Tree,
    /// Calls the recorder could not model ([`RecOp::Unsupported`]).
    pub unsupported: Vec<String>,
    /// Renames across directories (each two independent steps).
    pub cross_dir_renames: usize,
}

impl Recording {
    /// Resolve `records` against `initial` (from [`Tree::scan`], with its inode numbers).
    ///
    /// Fails when a record does not fit the model (a path that does not exist, a name that
    /// holds another inode than the recorder saw, a write to an unknown inode): the recorder
    /// missed a call, or the model is wrong. Either way no image built from it could be trusted.
    pub fn new(
        initial: Tree,
        mut inos: HashMap<u64, Node>,
        records: &[Record],
    ) -> Result<Recording, LogError> {
        let mut live = initial.clone();
        let mut init = initial;
        let mut steps = Vec::new();
        let mut record_of = Vec::new();
        let mut unsupported = Vec::new();
        let mut cross_dir_renames = 0;
        let known = |inos: &HashMap<u64, Node>, ino: u64, i: usize| {
            inos.get(&ino)
                .copied()
                .ok_or_else(|| LogError(format!("record {i}: inode {ino} is unknown to the model")))
        };
        for (i, r) in records.iter().enumerate() {
            let ctx = |e: LogError| LogError(format!("record {i} ({:?}): {}", brief(&r.op), e.0));
            let check_name = |live: &Tree,
                              path: &[u8],
                              ino: u64,
                              inos: &HashMap<u64, Node>|
             -> Result<Node, LogError> {
                let n = live.lookup(path).ok_or_else(|| {
                    LogError(format!("{} does not exist in the model", show(path)))
                })?;
                if inos.get(&ino) != Some(&n) {
                    return Err(LogError(format!(
                        "{} is node {n} in the model, but the recorder saw inode {ino} (node {:?})",
                        show(path),
                        inos.get(&ino)
                    )));
                }
                Ok(n)
            };
            let mut new_steps: Vec<Step> = Vec::new();
            match &r.op {
                RecOp::Create { path, ino } => {
                    let (dir, name) = live.parent_of(path).map_err(ctx)?;
                    if live.entries(dir).is_some_and(|e| e.contains_key(name)) {
                        return Err(ctx(LogError(format!("{} already exists", show(path)))));
                    }
                    let n = live.new_file(Vec::new());
                    init.new_file(Vec::new());
                    // A reused inode number now names the new file; the old node lives on
                    // in the states where its unlink did not survive.
                    inos.insert(*ino, n);
                    new_steps.push(Step::Link {
                        dir,
                        name: name.to_vec(),
                        node: n,
                    });
                }
                RecOp::Mkdir { path, ino } | RecOp::Symlink { path, ino, .. } => {
                    let (dir, name) = live.parent_of(path).map_err(ctx)?;
                    let inode = match &r.op {
                        RecOp::Symlink { target, .. } => Inode::Symlink {
                            target: target.clone(),
                        },
                        _ => Inode::Dir {
                            entries: Rc::new(BTreeMap::new()),
                        },
                    };
                    let n = live.add(inode.clone());
                    init.add(inode);
                    inos.insert(*ino, n);
                    new_steps.push(Step::Link {
                        dir,
                        name: name.to_vec(),
                        node: n,
                    });
                }
                RecOp::Trunc { ino, len } => {
                    let node = known(&inos, *ino, i)?;
                    new_steps.push(Step::Trunc { node, len: *len });
                }
                RecOp::Write { ino, off, data } => {
                    let node = known(&inos, *ino, i)?;
                    new_steps.push(Step::Write {
                        node,
                        off: *off,
                        data: Rc::new(data.clone()),
                    });
                }
                RecOp::Fsync { ino, .. } => {
                    let node = known(&inos, *ino, i)?;
                    new_steps.push(Step::Sync { node });
                }
                RecOp::Rename {
                    from,
                    to,
                    ino,
                    flags,
                } => {
                    if *flags & 2 != 0 {
                        unsupported.push(format!(
                            "record {i}: renameat2 RENAME_EXCHANGE {}",
                            show(from)
                        ));
                        continue;
                    }
                    let n = check_name(&live, from, *ino, &inos).map_err(ctx)?;
                    let (sd, sn) = live.parent_of(from).map_err(ctx)?;
                    let (dd, dn) = live.parent_of(to).map_err(ctx)?;
                    if sd == dd {
                        new_steps.push(Step::Rename {
                            dir: sd,
                            from: sn.to_vec(),
                            to: dn.to_vec(),
                        });
                    } else {
                        cross_dir_renames += 1;
                        new_steps.push(Step::Link {
                            dir: dd,
                            name: dn.to_vec(),
                            node: n,
                        });
                        new_steps.push(Step::Unlink {
                            dir: sd,
                            name: sn.to_vec(),
                        });
                    }
                }
                RecOp::Unlink { path, ino } | RecOp::Rmdir { path, ino } => {
                    check_name(&live, path, *ino, &inos).map_err(ctx)?;
                    let (dir, name) = live.parent_of(path).map_err(ctx)?;
                    new_steps.push(Step::Unlink {
                        dir,
                        name: name.to_vec(),
                    });
                }
                RecOp::Link { from, to, ino } => {
                    let n = check_name(&live, from, *ino, &inos).map_err(ctx)?;
                    let (dir, name) = live.parent_of(to).map_err(ctx)?;
                    new_steps.push(Step::Link {
                        dir,
                        name: name.to_vec(),
                        node: n,
                    });
                }
                RecOp::Mark(t) => new_steps.push(Step::Mark(t.clone())),
                RecOp::SyncAll => new_steps.push(Step::SyncAll),
                RecOp::Unsupported(t) => {
                    unsupported.push(format!("record {i} (pid {}): {t}", r.pid));
                    continue;
                }
            }
            for s in new_steps {
                steps.push(s);
                record_of.push(i);
                apply(&mut live, &steps, steps.len() - 1, Survive::Whole, true);
            }
        }
        Ok(Recording {
            initial: init,
            steps,
            record_of,
            live,
            unsupported,
            cross_dir_renames,
        })
    }

    /// For each step, the index of the first later step that makes it durable (`steps.len()`:
    /// never). Syncs and marks are durable at once.
    pub fn durable_at(&self) -> Vec<usize> {
        let n = self.steps.len();
        let mut out = vec![n; n];
        let mut next_sync: HashMap<Node, usize> = HashMap::new();
        let mut next_all = n;
        for i in (0..n).rev() {
            match &self.steps[i] {
                Step::Sync { node } => {
                    next_sync.insert(*node, i);
                    out[i] = i;
                }
                Step::SyncAll => {
                    next_all = i;
                    out[i] = i;
                }
                Step::Mark(_) => out[i] = i,
                s => {
                    let o = s.owner().expect("changes have an owner");
                    out[i] = next_sync.get(&o).copied().unwrap_or(n).min(next_all);
                }
            }
        }
        out
    }
}

fn brief(op: &RecOp) -> String {
    match op {
        RecOp::Write { ino, off, data } => format!("write ino {ino} off {off} len {}", data.len()),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Variants and the sweep over cut points
// ---------------------------------------------------------------------------------------------

/// Which pending (not yet durable) steps a crash image keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Every pending step is lost: only what was synced.
    Durable,
    /// Every pending step survives: what the running processes saw (as after SIGKILL).
    Live,
    /// The first `k` pending steps, in the order they were made.
    Prefix(usize),
    /// The first `k` pending steps; the last, a write, kept only its first half.
    Torn(usize),
    /// The first `k` pending steps; the last, a write: first half, then zeros.
    TornZeros(usize),
    /// The first `k` pending steps; the last, a write, reads zeros.
    Zeroed(usize),
    /// Every pending directory entry change survives, no pending file data does.
    NamesOnly,
    /// Every pending directory entry change survives; pending writes read zeros.
    NamesZeroData,
    /// Every pending file data change survives, no pending directory entry change does.
    DataOnly,
    /// Seeded: per inode (file or directory) a random prefix of its pending changes; the last
    /// write kept of a file may be torn or zero-filled.
    Random(u64),
}

impl Variant {
    /// A short class name for counts.
    pub fn class(&self) -> &'static str {
        match self {
            Variant::Durable => "durable",
            Variant::Live => "live",
            Variant::Prefix(_) => "prefix",
            Variant::Torn(_) => "torn",
            Variant::TornZeros(_) => "torn-zeros",
            Variant::Zeroed(_) => "zeroed",
            Variant::NamesOnly => "names-only",
            Variant::NamesZeroData => "names-zero-data",
            Variant::DataOnly => "data-only",
            Variant::Random(_) => "random",
        }
    }

    /// Every variant worth building at a cut with these pending steps (random ones: `randoms`).
    pub fn all(steps: &[Step], pending: &[usize], randoms: &[u64]) -> Vec<Variant> {
        let mut v = vec![Variant::Durable];
        if pending.is_empty() {
            return v;
        }
        v.push(Variant::Live);
        for k in 1..=pending.len() {
            if k < pending.len() {
                v.push(Variant::Prefix(k));
            }
            if let Step::Write { data, .. } = &steps[pending[k - 1]] {
                if data.len() >= 2 {
                    v.push(Variant::Torn(k));
                    v.push(Variant::TornZeros(k));
                }
                v.push(Variant::Zeroed(k));
            }
        }
        let data = pending.iter().filter(|&&i| steps[i].is_data()).count();
        if data > 0 && data < pending.len() {
            v.push(Variant::NamesOnly);
            v.push(Variant::DataOnly);
        }
        if data > 0
            && pending
                .iter()
                .any(|&i| matches!(steps[i], Step::Write { .. }))
        {
            v.push(Variant::NamesZeroData);
        }
        v.extend(randoms.iter().map(|&s| Variant::Random(s)));
        v
    }

    /// The pending steps this variant keeps, in order, and how each survives.
    pub fn choose(&self, steps: &[Step], pending: &[usize]) -> Vec<(usize, Survive)> {
        let whole = |ix: &[usize]| ix.iter().map(|&i| (i, Survive::Whole)).collect::<Vec<_>>();
        let last = |k: usize, how: Survive| {
            let mut v = whole(&pending[..k - 1]);
            v.push((pending[k - 1], how));
            v
        };
        match *self {
            Variant::Durable => Vec::new(),
            Variant::Live => whole(pending),
            Variant::Prefix(k) => whole(&pending[..k]),
            Variant::Torn(k) => last(k, Survive::FirstHalf),
            Variant::TornZeros(k) => last(k, Survive::FirstHalfThenZeros),
            Variant::Zeroed(k) => last(k, Survive::Zeros),
            Variant::NamesOnly => pending
                .iter()
                .filter(|&&i| !steps[i].is_data())
                .map(|&i| (i, Survive::Whole))
                .collect(),
            Variant::NamesZeroData => pending
                .iter()
                .filter(|&&i| !matches!(steps[i], Step::Trunc { .. }))
                .map(|&i| {
                    let how = if steps[i].is_data() {
                        Survive::Zeros
                    } else {
                        Survive::Whole
                    };
                    (i, how)
                })
                .collect(),
            Variant::DataOnly => pending
                .iter()
                .filter(|&&i| steps[i].is_data())
                .map(|&i| (i, Survive::Whole))
                .collect(),
            Variant::Random(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                // Per inode, a prefix of its pending changes survives, in order: directory
                // changes are committed in order (journaled filesystems), and file data reaches
                // the disk as a prefix of what was written (data-layout.md section 3). The last
                // surviving write of a file may be torn or zero-filled.
                let mut count: BTreeMap<Node, usize> = BTreeMap::new();
                for &i in pending {
                    *count.entry(steps[i].owner().unwrap_or(0)).or_default() += 1;
                }
                let keep: BTreeMap<Node, usize> = count
                    .iter()
                    .map(|(&n, &c)| (n, rng.gen_range(0..=c)))
                    .collect();
                let mut seen: BTreeMap<Node, usize> = BTreeMap::new();
                let mut out = Vec::new();
                for &i in pending {
                    let o = steps[i].owner().unwrap_or(0);
                    let s = seen.entry(o).or_default();
                    *s += 1;
                    if *s > keep[&o] {
                        continue;
                    }
                    let how = if *s == keep[&o] && matches!(steps[i], Step::Write { .. }) {
                        match rng.gen_range(0..4) {
                            0 => Survive::FirstHalf,
                            1 => Survive::FirstHalfThenZeros,
                            2 => Survive::Zeros,
                            _ => Survive::Whole,
                        }
                    } else {
                        Survive::Whole
                    };
                    out.push((i, how));
                }
                out
            }
        }
    }
}

/// One crash image: the first `cut` steps happened, then the power went; `variant` says which
/// of the pending steps reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Image {
    pub cut: usize,
    pub variant: Variant,
}

/// Walks the cut points in order, keeping the durable state (the base) and the pending steps.
pub struct Sweep<'r> {
    rec: &'r Recording,
    base: Tree,
    /// Pending steps per owner inode, in order.
    pending: BTreeMap<Node, Vec<usize>>,
    cut: usize,
}

impl<'r> Sweep<'r> {
    pub fn new(rec: &'r Recording) -> Sweep<'r> {
        Sweep {
            rec,
            base: rec.initial.clone(),
            pending: BTreeMap::new(),
            cut: 0,
        }
    }

    /// Number of steps that happened before this cut.
    pub fn cut(&self) -> usize {
        self.cut
    }

    /// Let step `cut` happen (there must be one).
    pub fn advance(&mut self) {
        let i = self.cut;
        let steps = &self.rec.steps;
        match &steps[i] {
            Step::Sync { node } => {
                for j in self.pending.remove(node).unwrap_or_default() {
                    apply(&mut self.base, steps, j, Survive::Whole, true);
                }
            }
            Step::SyncAll => {
                let mut all: Vec<usize> = std::mem::take(&mut self.pending)
                    .into_values()
                    .flatten()
                    .collect();
                all.sort_unstable();
                for j in all {
                    apply(&mut self.base, steps, j, Survive::Whole, true);
                }
            }
            Step::Mark(_) => {}
            s => {
                let o = s.owner().expect("changes have an owner");
                self.pending.entry(o).or_default().push(i);
            }
        }
        self.cut += 1;
    }

    /// The pending steps at this cut, in the order they were made.
    pub fn pending(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.pending.values().flatten().copied().collect();
        v.sort_unstable();
        v
    }

    /// The durable state at this cut.
    pub fn base(&self) -> &Tree {
        &self.base
    }

    /// The image `variant` at this cut; `with_data` false builds versions only (fingerprints).
    pub fn build(&self, variant: Variant, pending: &[usize], with_data: bool) -> Tree {
        let mut t = self.base.clone();
        for (i, how) in variant.choose(&self.rec.steps, pending) {
            apply(&mut t, &self.rec.steps, i, how, with_data);
        }
        t
    }
}

/// The marks (`Step::Mark`) among the first `cut` steps.
pub fn marks_before(rec: &Recording, cut: usize) -> Vec<&str> {
    rec.steps[..cut]
        .iter()
        .filter_map(|s| match s {
            Step::Mark(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// Every candidate image of a recording, duplicates removed: `(image, fingerprint)` in the order
/// found (cuts ascending). `randoms` random variants per cut, from `seed`.
pub fn candidates(rec: &Recording, randoms: usize, seed: u64) -> (Vec<(Image, u64)>, usize) {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut total = 0;
    let mut sweep = Sweep::new(rec);
    loop {
        let cut = sweep.cut();
        let pending = sweep.pending();
        let seeds: Vec<u64> = (0..randoms as u64)
            .map(|r| hash_of((seed, cut, r)))
            .collect();
        for variant in Variant::all(&rec.steps, &pending, &seeds) {
            total += 1;
            let fp = sweep.build(variant, &pending, false).fingerprint();
            if seen.insert(fp) {
                out.push((Image { cut, variant }, fp));
            }
        }
        if cut == rec.steps.len() {
            break;
        }
        sweep.advance();
    }
    (out, total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests {
    //! The builder on tiny synthetic logs: it must model drop / prefix / tear / zero and
    //! unsynced directory entries exactly, or every image built from a real run is suspect.
    use super::*;

    fn rec(pid: i32, op: RecOp) -> Record {
        Record { pid, op }
    }

    /// A store dir holding `old` = "OLD!" (inode 100) and dir `d` (inode 101), root inode 1.
    fn start() -> (Tree, HashMap<u64, Node>) {
        let mut t = Tree::empty();
        let d = t.add(Inode::Dir {
            entries: Rc::new(BTreeMap::new()),
        });
        let old = t.new_file(b"OLD!".to_vec());
        t.entries_mut(0).insert(b"d".to_vec(), d);
        t.entries_mut(0).insert(b"old".to_vec(), old);
        let inos = HashMap::from([(1, 0), (101, d), (100, old)]);
        (t, inos)
    }

    fn file(t: &Tree, p: &str) -> Option<Vec<u8>> {
        match &t.inodes[t.lookup(p.as_bytes())?] {
            Inode::File { data, .. } => Some(data.to_vec()),
            _ => None,
        }
    }

    /// create d/f, write "abcd" at 0, fsync f, write "EF" at 4, [cut], fsync d.
    fn log() -> Vec<Record> {
        vec![
            rec(
                7,
                RecOp::Create {
                    path: b"d/f".to_vec(),
                    ino: 200,
                },
            ),
            rec(
                7,
                RecOp::Write {
                    ino: 200,
                    off: 0,
                    data: b"abcd".to_vec(),
                },
            ),
            rec(
                7,
                RecOp::Fsync {
                    ino: 200,
                    data_only: false,
                    dir: false,
                },
            ),
            rec(
                7,
                RecOp::Write {
                    ino: 200,
                    off: 4,
                    data: b"EF".to_vec(),
                },
            ),
            rec(7, RecOp::Mark("ack 0".into())),
            rec(
                7,
                RecOp::Fsync {
                    ino: 101,
                    data_only: false,
                    dir: true,
                },
            ),
            rec(
                7,
                RecOp::Rename {
                    from: b"old".to_vec(),
                    to: b"new".to_vec(),
                    ino: 100,
                    flags: 0,
                },
            ),
        ]
    }

    #[test]
    fn log_round_trips() {
        let mut bytes = Vec::new();
        for r in log() {
            bytes.extend(encode_record(&r));
        }
        assert_eq!(parse_log(&bytes).unwrap(), log());
        let err = parse_log(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.0.contains("bad record"), "{err}");
    }

    #[test]
    fn drop_prefix_tear_zero_and_unsynced_names() {
        let (t, inos) = start();
        let r = Recording::new(t, inos, &log()).unwrap();
        assert_eq!(r.steps.len(), 7);
        let mut sw = Sweep::new(&r);
        for _ in 0..4 {
            sw.advance();
        }
        // At cut 4: "abcd" durable in the file; its name and "EF" are pending.
        let p = sw.pending();
        assert_eq!(p, vec![0, 3]);
        let img = |v| sw.build(v, &p, true);
        assert_eq!(
            file(&img(Variant::Durable), "d/f"),
            None,
            "name not synced: no file"
        );
        assert_eq!(file(&img(Variant::Live), "d/f").unwrap(), b"abcdEF");
        assert_eq!(file(&img(Variant::Prefix(1)), "d/f").unwrap(), b"abcd");
        assert_eq!(file(&img(Variant::Torn(2)), "d/f").unwrap(), b"abcdE");
        // "EF" at offset 4 spans no sector boundary: it lands whole or reads zeros.
        assert_eq!(
            file(&img(Variant::TornZeros(2)), "d/f").unwrap(),
            b"abcd\0\0"
        );
        assert_eq!(file(&img(Variant::Zeroed(2)), "d/f").unwrap(), b"abcd\0\0");
        assert_eq!(file(&img(Variant::NamesOnly), "d/f").unwrap(), b"abcd");
        assert_eq!(
            file(&img(Variant::NamesZeroData), "d/f").unwrap(),
            b"abcd\0\0"
        );
        assert_eq!(file(&img(Variant::DataOnly), "d/f"), None);
        // The data the base holds is the synced prefix, whatever the variant.
        assert_eq!(file(sw.base(), "old").unwrap(), b"OLD!");
        assert_eq!(marks_before(&r, 4), Vec::<&str>::new());
        sw.advance();
        assert_eq!(marks_before(&r, 5), vec!["ack 0"]);
        sw.advance();
        // After the directory fsync the name is durable; "EF" is still not.
        let p = sw.pending();
        assert_eq!(p, vec![3]);
        assert_eq!(
            file(&sw.build(Variant::Durable, &p, true), "d/f").unwrap(),
            b"abcd"
        );
        sw.advance();
        // The rename of `old` is pending: old or new, never both or neither.
        let p = sw.pending();
        let a = sw.build(Variant::Durable, &p, true);
        let b = sw.build(Variant::Live, &p, true);
        assert!(a.lookup(b"old").is_some() && a.lookup(b"new").is_none());
        assert!(b.lookup(b"new").is_some() && b.lookup(b"old").is_none());
        assert_eq!(file(&r.live, "d/f").unwrap(), b"abcdEF");
        assert_eq!(r.durable_at(), vec![5, 2, 2, 7, 4, 5, 7]);
    }

    #[test]
    fn fingerprints_drop_duplicates_but_not_differences() {
        let (t, inos) = start();
        let r = Recording::new(t, inos, &log()).unwrap();
        let (c, total) = candidates(&r, 0, 1);
        let mut fps: Vec<u64> = c.iter().map(|x| x.1).collect();
        fps.sort_unstable();
        fps.dedup();
        assert_eq!(fps.len(), c.len());
        assert!(
            c.len() < total,
            "cut 0 and cut 1 durable images are equal: {c:?}"
        );
        // Materialized, distinct fingerprints are distinct listings and vice versa.
        let mut listings = BTreeSet::new();
        let mut sw = Sweep::new(&r);
        for (img, _) in &c {
            while sw.cut() < img.cut {
                sw.advance();
            }
            let p = sw.pending();
            listings.insert(format!("{:?}", sw.build(img.variant, &p, true).listing()));
        }
        assert_eq!(listings.len(), c.len(), "{listings:#?}");
    }

    #[test]
    fn a_record_that_does_not_fit_the_model_is_refused() {
        let (t, inos) = start();
        let bad = vec![rec(
            1,
            RecOp::Write {
                ino: 999,
                off: 0,
                data: b"x".to_vec(),
            },
        )];
        let e = Recording::new(t.clone(), inos.clone(), &bad).err().unwrap();
        assert!(e.0.contains("inode 999 is unknown"), "{e}");
        let bad = vec![rec(
            1,
            RecOp::Unlink {
                path: b"old".to_vec(),
                ino: 101,
            },
        )];
        let e = Recording::new(t, inos, &bad).err().unwrap();
        assert!(e.0.contains("recorder saw inode 101"), "{e}");
    }

    #[test]
    fn random_variants_keep_per_inode_order() {
        // Two creates and a rename in one directory, never synced: any random image holds a
        // prefix of them, so `b` never exists without `a` and `c` only after `b` was renamed.
        let (t, inos) = start();
        let recs = vec![
            rec(
                1,
                RecOp::Create {
                    path: b"d/a".to_vec(),
                    ino: 300,
                },
            ),
            rec(
                1,
                RecOp::Create {
                    path: b"d/b".to_vec(),
                    ino: 301,
                },
            ),
            rec(
                1,
                RecOp::Rename {
                    from: b"d/b".to_vec(),
                    to: b"d/c".to_vec(),
                    ino: 301,
                    flags: 0,
                },
            ),
        ];
        let r = Recording::new(t, inos, &recs).unwrap();
        let mut sw = Sweep::new(&r);
        for _ in 0..3 {
            sw.advance();
        }
        let p = sw.pending();
        let mut seen = BTreeSet::new();
        for s in 0..200 {
            let l = sw.build(Variant::Random(s), &p, true).listing();
            let names: Vec<String> = l.keys().filter(|k| k.starts_with("d/")).cloned().collect();
            seen.insert(names);
        }
        let allowed: BTreeSet<Vec<String>> = [
            vec![],
            vec!["d/a".to_string()],
            vec!["d/a".to_string(), "d/b".to_string()],
            vec!["d/a".to_string(), "d/c".to_string()],
        ]
        .into_iter()
        .collect();
        assert_eq!(seen, allowed);
        // Two unsynced appends to one file: the second never survives without the first.
        let (t, inos) = start();
        let recs = vec![
            rec(
                1,
                RecOp::Write {
                    ino: 100,
                    off: 4,
                    data: b"AAAA".to_vec(),
                },
            ),
            rec(
                1,
                RecOp::Write {
                    ino: 100,
                    off: 8,
                    data: b"BBBB".to_vec(),
                },
            ),
        ];
        let r = Recording::new(t, inos, &recs).unwrap();
        let mut sw = Sweep::new(&r);
        sw.advance();
        sw.advance();
        let p = sw.pending();
        let mut contents = BTreeSet::new();
        for s in 0..200 {
            let f = file(&sw.build(Variant::Random(s), &p, true), "old").unwrap();
            assert!(
                f.len() <= 4 || &f[4..6] == b"AA" || f[4..].iter().all(|&b| b == 0),
                "{f:?}"
            );
            if f.len() > 8 {
                assert_eq!(&f[..8], b"OLD!AAAA", "{f:?}");
            }
            contents.insert(f);
        }
        assert!(
            contents.contains(b"OLD!".as_slice()) && contents.contains(b"OLD!AAAABBBB".as_slice())
        );
        assert!(contents.len() >= 6, "{contents:?}");
    }
}
