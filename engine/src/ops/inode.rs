//! Inode-level operations for a filesystem adapter (the FUSE mount): everything by inode number,
//! with POSIX semantics, on top of the same transactions the CLI uses.
//!
//! Writes to an open file go into a per-inode [`DirtyFile`] overlay in this process (so every
//! handle of this process sees them at once, as POSIX wants) and are committed by
//! [`Store::flush_inode`] on `flush`/`close`/`fsync` (close-to-open consistency for other
//! processes). A commit chunks only the written ranges, appends the new chunks to the process's
//! pack, syncs it, and splices the new extents over the ranges in the *current* committed extent
//! list inside one transaction, so a flush never loses another process's committed ranges.

use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::ids::InodeNo;
use crate::meta::{Entry, Extent, FileKind, Inode, Timestamp};
use crate::overlay::{punch, seek_extents, DirtyFile, Seek, DIRTY_LIMIT};
use crate::store::{Store, TransferReport};

/// Attribute changes of `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub perm: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// How `rename` treats an existing target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RenameMode {
    #[default]
    Replace,
    NoReplace,
    Exchange,
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn check_name(name: &[u8]) -> Result<(), Error> {
    if name.len() > crate::meta::NAME_MAX {
        return Err(Error::NameTooLong {
            path: name_str(name),
        });
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::InvalidPath {
            path: name_str(name),
            reason: "invalid name".into(),
        });
    }
    Ok(())
}

/// Bytes the committed extents of `ino` cover.
fn extent_bytes(s: &crate::meta::MetaState, ino: InodeNo) -> Result<u64, Error> {
    Ok(s.extent_bytes(ino)?)
}

/// Committed bytes of `i` that hold data: its extents for a file, its size otherwise.
fn used_bytes(s: &crate::meta::MetaState, i: &Inode) -> Result<u64, Error> {
    match i.kind {
        FileKind::File => extent_bytes(s, i.ino),
        _ => Ok(i.size),
    }
}

impl Store {
    fn dirty_of(&self, ino: InodeNo) -> Option<Arc<Mutex<DirtyFile>>> {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    /// An inode's attributes as this process sees them (its unflushed size and mtime included).
    pub fn attr(&self, ino: InodeNo) -> Result<Inode, Error> {
        let mut i = self
            .read(|s| s.inode(ino))??
            .ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
        self.apply_dirty(&mut i);
        Ok(i)
    }

    /// Put this process's unflushed size and mtime over committed attributes; returns the bytes
    /// it has buffered for the file.
    fn apply_dirty(&self, i: &mut Inode) -> u64 {
        let Some(d) = self.dirty_of(i.ino) else {
            return 0;
        };
        let d = d.lock().unwrap_or_else(|p| p.into_inner());
        if !d.is_clean() {
            i.size = d.size;
            if let Some(m) = d.mtime {
                i.mtime = m;
                i.ctime = m;
            }
        }
        d.bytes as u64
    }

    /// Bytes of regular file `i` that hold data (its extents, plus what this process has
    /// buffered), at most its size: holes and punched ranges take no space.
    pub fn allocated(&self, i: &Inode) -> u64 {
        let committed = self
            .read(|s| extent_bytes(s, i.ino))
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(0);
        let buffered = self
            .dirty_of(i.ino)
            .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()).bytes as u64)
            .unwrap_or(0);
        (committed + buffered).min(i.size)
    }

    /// [`Store::attr`] and [`Store::allocated`] from one read of the metadata (one check of the
    /// log head instead of two: `getattr` and `lookup` are the commonest kernel requests).
    pub fn attr_allocated(&self, ino: InodeNo) -> Result<(Inode, u64), Error> {
        let (i, committed) = self
            .read(|s| -> Result<_, Error> {
                Ok(match s.inode(ino)? {
                    Some(i) => {
                        let used = used_bytes(s, &i)?;
                        Some((i, used))
                    }
                    None => None,
                })
            })??
            .ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
        Ok(self.overlay(i, committed))
    }

    /// Apply this process's unflushed size, mtime and buffered bytes to committed attributes.
    fn overlay(&self, mut i: Inode, committed: u64) -> (Inode, u64) {
        let buffered = self.apply_dirty(&mut i);
        let used = if i.kind == FileKind::File {
            (committed + buffered).min(i.size)
        } else {
            committed
        };
        (i, used)
    }

    /// [`Store::lookup_child`] with the child's allocated bytes, in one read.
    pub fn lookup_child_allocated(
        &self,
        parent: InodeNo,
        name: &[u8],
    ) -> Result<(Inode, u64), Error> {
        // Lookup of any other odd name simply finds nothing; only an over-long one is an error.
        if name.len() > crate::meta::NAME_MAX {
            return Err(Error::NameTooLong {
                path: name_str(name),
            });
        }
        let (i, committed) = self.read(|s| {
            let p = s.inode(parent)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {parent}"),
            })?;
            if p.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: format!("inode {parent}"),
                });
            }
            let ino = s.lookup(parent, name)?.ok_or_else(|| Error::NotFound {
                path: name_str(name),
            })?;
            let i = s.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: name_str(name),
            })?;
            let used = used_bytes(s, &i)?;
            Ok((i, used))
        })??;
        Ok(self.overlay(i, committed))
    }

    /// Entries of a directory: name, inode, kind (without `.` and `..`).
    pub fn read_dir(&self, ino: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo, FileKind)>, Error> {
        self.read(|s| {
            let d = s.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
            if d.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: format!("inode {ino}"),
                });
            }
            let mut out = Vec::new();
            for (n, c) in s.entries(ino)? {
                if let Some(i) = s.inode(c)? {
                    out.push((n, c, i.kind));
                }
            }
            Ok(out)
        })?
    }

    /// Create a file, directory, symlink or special file; the name must be free (`EEXIST`).
    pub fn make_node(&self, parent: InodeNo, name: &[u8], proto: Inode) -> Result<Inode, Error> {
        check_name(name)?;
        let ino = self.transact(false, |tx| {
            let p = tx.inode(parent)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {parent}"),
            })?;
            if p.kind != FileKind::Dir {
                return Err(Error::NotADirectory {
                    path: name_str(name),
                });
            }
            let mut proto = proto.clone();
            if proto.kind == FileKind::Symlink {
                proto.size = proto.target.len() as u64;
            }
            // A set-group-ID directory gives new entries its group, and new directories the bit
            // itself (BSD group semantics, as every Linux filesystem does).
            if p.perm & 0o2000 != 0 {
                proto.gid = p.gid;
                if proto.kind == FileKind::Dir {
                    proto.perm |= 0o2000;
                }
            }
            tx.create(
                &Entry {
                    parent,
                    name: name.to_vec(),
                },
                &name_str(name),
                proto,
            )
        })?;
        self.attr(ino)
    }

    /// `unlink(2)` (`rmdir` with `dir`).
    pub fn unlink_at(&self, parent: InodeNo, name: &[u8], dir: bool) -> Result<(), Error> {
        self.transact(false, |tx| {
            let at = Entry {
                parent,
                name: name.to_vec(),
            };
            let ino = tx.lookup(parent, name)?.ok_or_else(|| Error::NotFound {
                path: name_str(name),
            })?;
            let is_dir = tx.inode(ino)?.map(|i| i.kind) == Some(FileKind::Dir);
            match (dir, is_dir) {
                (true, false) => Err(Error::NotADirectory {
                    path: name_str(name),
                }),
                (false, true) => Err(Error::IsADirectory {
                    path: name_str(name),
                }),
                _ => tx.remove(&at, &name_str(name), dir),
            }
        })?;
        Ok(())
    }

    /// `renameat2` with its flags.
    pub fn rename_at(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<(), Error> {
        check_name(newname)?;
        Ok(self.transact(false, |tx| {
            let from = Entry {
                parent,
                name: name.to_vec(),
            };
            let to = Entry {
                parent: newparent,
                name: newname.to_vec(),
            };
            if tx.inode(newparent)?.map(|i| i.kind) != Some(FileKind::Dir) {
                return Err(Error::NotADirectory {
                    path: name_str(newname),
                });
            }
            match mode {
                RenameMode::Exchange => {
                    tx.exchange(&from, &name_str(name), &to, &name_str(newname))
                }
                RenameMode::NoReplace if tx.lookup(newparent, newname)?.is_some() => {
                    Err(Error::Exists {
                        path: name_str(newname),
                    })
                }
                _ => tx.rename(&from, &name_str(name), &to, &name_str(newname)),
            }
        })?)
    }

    /// `link(2)`.
    pub fn link_at(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: &[u8],
    ) -> Result<Inode, Error> {
        check_name(newname)?;
        self.transact(false, |tx| {
            let to = Entry {
                parent: newparent,
                name: newname.to_vec(),
            };
            tx.link(ino, &format!("inode {ino}"), &to, &name_str(newname))
        })?;
        self.attr(ino)
    }

    /// `setattr`: mode, owner, times, size (a size change is committed at once, with any dirty
    /// data of this process).
    pub fn set_attr(&self, ino: InodeNo, a: &SetAttr) -> Result<Inode, Error> {
        if let Some(size) = a.size {
            let d = self.dirty_entry(ino)?;
            {
                let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                d.truncate(size);
                d.mtime = Some(Timestamp::now());
            }
            self.flush_inode(ino)?;
        }
        if a.perm.is_some()
            || a.uid.is_some()
            || a.gid.is_some()
            || a.atime.is_some()
            || a.mtime.is_some()
        {
            self.transact(false, |tx| {
                let mut i = tx.inode(ino)?.ok_or_else(|| Error::NotFound {
                    path: format!("inode {ino}"),
                })?;
                if let Some(p) = a.perm {
                    i.perm = p & 0o7777;
                }
                if let Some(u) = a.uid {
                    i.uid = u;
                }
                if let Some(g) = a.gid {
                    i.gid = g;
                }
                if let Some(t) = a.atime {
                    i.atime = t;
                }
                if let Some(t) = a.mtime {
                    i.mtime = t;
                }
                i.ctime = a.ctime.unwrap_or_else(Timestamp::now);
                tx.put_inode(i);
                Ok(())
            })?;
            // A later flush must not overwrite an explicit mtime with the time of the last write.
            if a.mtime.is_some() {
                if let Some(d) = self.dirty_of(ino) {
                    d.lock().unwrap_or_else(|p| p.into_inner()).mtime = None;
                }
            }
        }
        self.attr(ino)
    }

    /// `setxattr`: `create_only` fails with `EEXIST`, `replace_only` with `ENODATA` (as
    /// `XATTR_CREATE` / `XATTR_REPLACE`).
    pub fn set_xattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        create_only: bool,
        replace_only: bool,
    ) -> Result<(), Error> {
        Ok(self.transact(false, |tx| {
            let mut i = tx.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
            let exists = i.xattrs.contains_key(name);
            if create_only && exists {
                return Err(Error::Exists {
                    path: name_str(name),
                });
            }
            if replace_only && !exists {
                return Err(Error::NoAttribute {
                    name: name_str(name),
                });
            }
            i.xattrs.insert(name.to_vec(), value.to_vec());
            i.ctime = Timestamp::now();
            tx.put_inode(i);
            Ok(())
        })?)
    }

    pub fn get_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>, Error> {
        let i = self.attr(ino)?;
        i.xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoAttribute {
                name: name_str(name),
            })
    }

    pub fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.attr(ino)?.xattrs.keys().cloned().collect())
    }

    pub fn remove_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<(), Error> {
        Ok(self.transact(false, |tx| {
            let mut i = tx.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
            if i.xattrs.remove(name).is_none() {
                return Err(Error::NoAttribute {
                    name: name_str(name),
                });
            }
            i.ctime = Timestamp::now();
            tx.put_inode(i);
            Ok(())
        })?)
    }

    /// Read up to `len` bytes at `off` (short at end of file; holes read as zeros).
    pub fn read_at(&self, ino: InodeNo, off: u64, len: u32) -> Result<Vec<u8>, Error> {
        let (inode, exts) = self
            .read(|s| {
                Ok::<_, Error>(match s.inode(ino)? {
                    Some(i) => Some((i, s.extents(ino)?)),
                    None => None,
                })
            })??
            .ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
        if inode.kind == FileKind::Dir {
            return Err(Error::IsADirectory {
                path: format!("inode {ino}"),
            });
        }
        let dirty = self.dirty_of(ino);
        let guard = dirty
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()));
        let (size, base_limit) = match guard.as_deref() {
            Some(d) if !d.is_clean() => (
                d.size,
                d.truncated.map_or(inode.size, |t| t.min(inode.size)),
            ),
            _ => (inode.size, inode.size),
        };
        if off >= size {
            return Ok(Vec::new());
        }
        let end = size.min(off + len as u64);
        let mut buf = vec![0u8; (end - off) as usize];
        let base_end = end.min(base_limit);
        if off < base_end {
            // A read that starts where the last one ended: decode the next chunks meanwhile.
            if self.cfg.cache.readahead_chunks > 0 && self.read_ends.get(&ino) == Some(off) {
                let next = exts.partition_point(|x| x.file_off + x.len as u64 <= end);
                self.prefetch(exts[next..].iter().map(|x| x.chunk));
            }
            self.read_ends.insert(ino, end);
            self.fill_from_extents(&exts, off, &mut buf[..(base_end - off) as usize])?;
        }
        if let Some(d) = guard.as_deref() {
            for (k, v) in d.ranges.range(..end) {
                let ks = *k;
                let ke = ks + v.len() as u64;
                if ke <= off {
                    continue;
                }
                let s = ks.max(off);
                let e = ke.min(end);
                buf[(s - off) as usize..(e - off) as usize]
                    .copy_from_slice(&v[(s - ks) as usize..(e - ks) as usize]);
            }
        }
        Ok(buf)
    }

    /// Up to `len` bytes at `off` of a file with attributes `inode` and extents `extents` (short
    /// at its end, holes read as zeros), without this process's unflushed writes: for files that
    /// are not in the live tree (a snapshot's). Reads only.
    pub fn read_extents_range(
        &self,
        inode: &Inode,
        extents: &[Extent],
        off: u64,
        len: u32,
    ) -> Result<Vec<u8>, Error> {
        if off >= inode.size {
            return Ok(Vec::new());
        }
        let end = inode.size.min(off.saturating_add(u64::from(len)));
        let mut buf = vec![0u8; (end - off) as usize];
        self.fill_from_extents(extents, off, &mut buf)?;
        Ok(buf)
    }

    /// Copy into `buf`, which stands for file bytes `[off, off + buf.len())`, what `extents`
    /// (sorted, disjoint) hold there; bytes no extent covers are left as they are.
    fn fill_from_extents(&self, extents: &[Extent], off: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = off + buf.len() as u64;
        // First extent that ends after `off`.
        let first = extents.partition_point(|x| x.file_off + x.len as u64 <= off);
        for x in &extents[first..] {
            if x.file_off >= end {
                break;
            }
            let s = x.file_off.max(off);
            let e = (x.file_off + x.len as u64).min(end);
            if s >= e {
                continue;
            }
            let data = self.chunk(x.chunk)?;
            let cs = (x.chunk_off as u64 + (s - x.file_off)) as usize;
            let ce = cs + (e - s) as usize;
            let src = data.get(cs..ce).ok_or_else(|| Error::Corrupt {
                path: self.layout().packs(),
                offset: 0,
                reason: format!("extent beyond chunk {} ({} bytes)", x.chunk, data.len()),
            })?;
            buf[(s - off) as usize..(e - off) as usize].copy_from_slice(src);
        }
        Ok(())
    }

    fn dirty_entry(&self, ino: InodeNo) -> Result<Arc<Mutex<DirtyFile>>, Error> {
        if let Some(d) = self.dirty_of(ino) {
            return Ok(d);
        }
        let size = self
            .read(|s| s.inode(ino).map(|i| i.map(|i| i.size)))??
            .ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
        let mut map = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(Mutex::new(DirtyFile {
                    size,
                    ..Default::default()
                }))
            })
            .clone())
    }

    /// Write `data` at `off` into this process's overlay; commits early past [`DIRTY_LIMIT`].
    pub fn write_at(&self, ino: InodeNo, off: u64, data: &[u8]) -> Result<(), Error> {
        let d = self.dirty_entry(ino)?;
        let over = {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            d.write(off, data);
            d.mtime = Some(Timestamp::now());
            d.bytes > DIRTY_LIMIT
        };
        if over {
            self.flush_inode(ino)?;
        }
        Ok(())
    }

    /// Commit this process's unflushed writes to a file (visible to every process when it
    /// returns; durable after [`Store::sync`]).
    ///
    /// On error (ENOSPC, EIO, fenced) the unflushed writes are dropped: this process then sees
    /// the file exactly as every other process does, as last committed, and nothing of the
    /// failed part (keeping them would show a size and bytes no other process can see, and
    /// reads of them would fail). The caller reports the error to whoever closed or synced.
    pub fn flush_inode(&self, ino: InodeNo) -> Result<(), Error> {
        let Some(d) = self.dirty_of(ino) else {
            return Ok(());
        };
        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_clean() {
            return Ok(());
        }
        let res = self.flush_locked(ino, &mut d);
        if res.is_err() {
            self.salvage_now();
            let size = self
                .read(|s| s.inode(ino).map(|i| i.map(|i| i.size)))
                .ok()
                .and_then(|r| r.ok())
                .flatten()
                .unwrap_or(0);
            *d = DirtyFile {
                size,
                ..Default::default()
            };
        }
        res
    }

    fn flush_locked(&self, ino: InodeNo, d: &mut DirtyFile) -> Result<(), Error> {
        // Chunk and store the written ranges first; nothing is visible until the commit.
        let mut report = TransferReport::default();
        let mut held = self.hold();
        let mut written: Vec<(u64, u64, Vec<Extent>)> = Vec::new();
        for (off, bytes) in &d.ranges {
            let (mut exts, _) = self.write_stream(&bytes[..], &mut report, &mut held)?;
            for x in &mut exts {
                x.file_off += off;
            }
            written.push((*off, *off + bytes.len() as u64, exts));
        }
        self.sync_pack()?;
        let size = d.size;
        let truncated = d.truncated;
        // None: an explicit utimens after the last write set the mtime; a flush keeps it.
        let mtime = d.mtime;
        let written_end = written.iter().map(|(_, e, _)| *e).max().unwrap_or(0);
        let res = self.transact_held(false, Some(&held), |tx| {
            let Some(mut inode) = tx.inode(ino)? else {
                // Deleted by another process meanwhile: its data goes with it.
                return Ok(size);
            };
            // Only a truncate (committed at once by `set_attr`) sets the size outright. Writes
            // only extend the file as it is NOW: `d.size` is the size this overlay saw at its
            // first write, and another process may have grown the file since (cutting to it
            // would drop that process's committed ranges) or shrunk it (restoring it would
            // resurrect a hole the other process truncated away).
            let size = match truncated {
                Some(_) => size,
                None => inode.size.max(written_end),
            };
            let mut exts = tx.extents(ino)?;
            if let Some(t) = truncated {
                exts = punch(&exts, t, u64::MAX);
            }
            for (s, e, new) in &written {
                exts = punch(&exts, *s, *e);
                exts.extend_from_slice(new);
            }
            exts.sort_by_key(|x| x.file_off);
            exts = punch(&exts, size, u64::MAX);
            inode.size = size;
            if let Some(m) = mtime {
                inode.mtime = m;
                inode.ctime = m;
            }
            tx.put_inode(inode);
            tx.set_extents(ino, exts);
            Ok(size)
        });
        let size = res?;
        let spare = std::mem::take(&mut d.ranges)
            .into_values()
            .max_by_key(Vec::capacity)
            .unwrap_or_default();
        *d = DirtyFile {
            size,
            spare,
            ..Default::default()
        };
        Ok(())
    }

    /// Flush every file with pending writes (unmount, snapshot barrier).
    pub fn flush_all(&self) -> Result<(), Error> {
        let inos: Vec<InodeNo> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for ino in inos {
            self.flush_inode(ino)?;
        }
        self.sync()
    }

    /// Forget the overlay of a file no longer open in this process (after its final flush).
    pub fn forget_dirty(&self, ino: InodeNo) {
        let mut map = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&ino) {
            if d.lock().unwrap_or_else(|p| p.into_inner()).is_clean() {
                map.remove(&ino);
            }
        }
    }

    /// A handle on `ino` was opened in this process.
    pub fn open_inode(&self, ino: InodeNo) {
        *self
            .open_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .entry(ino)
            .or_default() += 1;
    }

    /// A handle on `ino` was closed. At the last close its writes are committed and, if it was
    /// unlinked meanwhile (an orphan), the inode is deleted.
    pub fn close_inode(&self, ino: InodeNo) -> Result<(), Error> {
        let flushed = self.flush_inode(ino);
        let orphan = {
            let mut of = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
            let last = match of.open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    of.open.remove(&ino);
                    true
                }
            };
            if last {
                of.orphans.remove(&ino)
            } else {
                None
            }
        };
        if flushed.is_ok() {
            self.forget_dirty(ino);
        }
        if let Some(action) = orphan {
            self.transact(false, |tx| {
                if tx.inode(ino)?.map(|i| i.nlink) == Some(0) {
                    tx.delete_inode(ino);
                }
                Ok(())
            })?;
            self.journal.end(action).map_err(Error::coordination)?;
        }
        flushed
    }

    /// `fallocate`: `punch` removes the data of `[off, off+len)` (reads as zeros, the space goes
    /// to GC); otherwise the range is allocated, i.e. the size grows to `off+len` unless
    /// `keep_size` (verfs allocates on write, so there is nothing else to reserve).
    pub fn fallocate(
        &self,
        ino: InodeNo,
        off: u64,
        len: u64,
        punch_hole: bool,
        keep_size: bool,
    ) -> Result<(), Error> {
        self.flush_inode(ino)?;
        let end = off.saturating_add(len);
        self.transact(false, |tx| {
            let mut i = tx.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
            if i.kind != FileKind::File {
                return Err(Error::InvalidPath {
                    path: format!("inode {ino}"),
                    reason: "not a regular file".into(),
                });
            }
            if punch_hole {
                let exts = punch(&tx.extents(ino)?, off, end);
                tx.set_extents(ino, exts);
            }
            if !keep_size && end > i.size {
                i.size = end;
            }
            i.mtime = Timestamp::now();
            i.ctime = i.mtime;
            tx.put_inode(i);
            Ok(())
        })?;
        if let Some(d) = self.dirty_of(ino) {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            if !keep_size && end > d.size {
                d.size = end;
            }
        }
        Ok(())
    }

    /// `copy_file_range`: the destination range refers to the source's chunks (no data is copied
    /// or stored again). Returns the number of bytes copied (short at the source's end).
    pub fn copy_range(
        &self,
        src: InodeNo,
        off_in: u64,
        dst: InodeNo,
        off_out: u64,
        len: u64,
    ) -> Result<u64, Error> {
        self.flush_inode(src)?;
        self.flush_inode(dst)?;
        let copied = self.transact(false, |tx| {
            let si = tx.inode(src)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {src}"),
            })?;
            let mut di = tx.inode(dst)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {dst}"),
            })?;
            if si.kind != FileKind::File || di.kind != FileKind::File {
                return Err(Error::InvalidPath {
                    path: format!("inode {src}"),
                    reason: "not a regular file".into(),
                });
            }
            let end_in = si.size.min(off_in.saturating_add(len));
            if end_in <= off_in {
                return Ok(0);
            }
            let n = end_in - off_in;
            if src == dst && off_in < off_out + n && off_out < end_in {
                return Err(Error::InvalidPath {
                    path: format!("inode {src}"),
                    reason: "overlapping ranges in one file".into(),
                });
            }
            // The source's extents inside the range, moved to the destination offset.
            let inside: Vec<Extent> = punch(&punch(&tx.extents(src)?, 0, off_in), end_in, u64::MAX)
                .into_iter()
                .map(|x| Extent {
                    file_off: x.file_off - off_in + off_out,
                    ..x
                })
                .collect();
            let mut exts = punch(&tx.extents(dst)?, off_out, off_out + n);
            exts.extend(inside);
            exts.sort_by_key(|x| x.file_off);
            di.size = di.size.max(off_out + n);
            di.mtime = Timestamp::now();
            di.ctime = di.mtime;
            tx.put_inode(di);
            tx.set_extents(dst, exts);
            Ok(n)
        })?;
        if let Some(d) = self.dirty_of(dst) {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            d.size = d.size.max(off_out + copied);
        }
        Ok(copied)
    }

    /// `lseek(SEEK_DATA / SEEK_HOLE)` from `off`; `None` means ENXIO (no data past `off`, or `off`
    /// at or past the end).
    pub fn seek(&self, ino: InodeNo, off: u64, what: Seek) -> Result<Option<u64>, Error> {
        self.flush_inode(ino)?;
        let (size, exts) = self
            .read(|s| {
                Ok::<_, Error>(match s.inode(ino)? {
                    Some(i) => Some((i.size, s.extents(ino)?)),
                    None => None,
                })
            })??
            .ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
        Ok(seek_extents(size, &exts, off, what))
    }
}
