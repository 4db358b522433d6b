//! Path operations of the CLI (`mkdir`, `rm`, `rmdir`, `mv`, `ln`, `ls`, `stat`, `cat`): each
//! one transaction over store paths (bytes; `/.snapshots/NAME/...` reads a snapshot).
//!
//! Not here: the same operations by inode for the mount (`ops::inode`).

use std::io::Write;

use crate::error::Error;
use crate::ids::InodeNo;
use crate::meta::{components, show_path, Entry, Extent, FileKind, Inode, Tx};
use crate::store::Store;

impl Store {
    /// Resolve a store path (no symlinks followed) to its inode and extents; `/.snapshots/NAME/...`
    /// paths are read from that snapshot. Paths here and below are bytes (`&str`, `&[u8]`, an
    /// `OsStr`'s bytes): a stored name need not be UTF-8.
    pub fn lookup(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<(Inode, Vec<Extent>), Error> {
        self.view(path.as_ref(), |s, path| {
            let tx = Tx::new(s);
            let ino = tx.resolve(path)?;
            let inode = s.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            Ok((inode, s.extents(ino)?))
        })?
    }

    pub fn stat(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Inode, Error> {
        Ok(self.lookup(path)?.0)
    }

    /// A directory's entries with their inodes, sorted by name; a non-directory lists itself.
    pub fn list(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Vec<(Vec<u8>, Inode)>, Error> {
        let path = path.as_ref();
        if let Some((name, _)) = crate::ops::snapshot::split_path(path) {
            if name.is_empty() {
                // `/.snapshots`: one read-only directory per ready snapshot.
                return Ok(self
                    .snapshots()?
                    .into_iter()
                    .filter(|(_, (_, i))| i.ready)
                    .map(|(n, (_, i))| {
                        let mut d = Inode::new(InodeNo(0), FileKind::Dir, 0o555);
                        d.mtime = i.time;
                        d.ctime = i.time;
                        d.atime = i.time;
                        (n.into_bytes(), d)
                    })
                    .collect());
            }
        }
        self.view(path, |s, path| {
            let tx = Tx::new(s);
            let ino = tx.resolve(path)?;
            let inode = s.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            if inode.kind != FileKind::Dir {
                let name = components(path)?
                    .last()
                    .map(|c| c.to_vec())
                    .unwrap_or_default();
                return Ok(vec![(name, inode)]);
            }
            let mut out = Vec::new();
            for (name, child) in s.entries(ino)? {
                if let Some(i) = s.inode(child)? {
                    out.push((name, i));
                }
            }
            Ok(out)
        })?
    }

    /// `cat`: a regular file's bytes to `out`.
    pub fn cat(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        let (inode, extents) = self.lookup(path)?;
        match inode.kind {
            FileKind::File => self.read_extents(&inode, &extents, out),
            FileKind::Dir => Err(Error::IsADirectory {
                path: show_path(path),
            }),
            _ => Err(Error::InvalidPath {
                path: show_path(path),
                reason: "not a regular file".into(),
            }),
        }
    }

    pub fn read_all(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        self.cat(path, &mut v)?;
        Ok(v)
    }

    /// `mkdir [-p]`.
    pub fn mkdir(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
        perm: u32,
        parents: bool,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        Ok(self.transact(true, |tx| {
            if parents {
                tx.mkdir_p(path, perm).map(|_| ())
            } else {
                let at = tx.entry(path)?;
                tx.create(
                    &at,
                    &show_path(path),
                    Inode::new(InodeNo(0), FileKind::Dir, perm),
                )
                .map(|_| ())
            }
        })?)
    }

    /// `rm [-r]` (a directory needs `recursive`).
    pub fn remove(&self, path: &(impl AsRef<[u8]> + ?Sized), recursive: bool) -> Result<(), Error> {
        let path = path.as_ref();
        Ok(self.transact(true, |tx| {
            let at = tx.entry(path)?;
            if recursive {
                tx.remove_tree(&at, &show_path(path))
            } else {
                tx.remove(&at, &show_path(path), false)
            }
        })?)
    }

    /// `rmdir`: an empty directory.
    pub fn rmdir(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<(), Error> {
        let path = path.as_ref();
        Ok(self.transact(true, |tx| {
            let at = tx.entry(path)?;
            let ino = tx.lookup(at.parent, &at.name)?;
            let kind = match ino {
                Some(i) => tx.inode(i)?.map(|i| i.kind),
                None => None,
            };
            if kind != Some(FileKind::Dir) {
                return Err(Error::NotADirectory {
                    path: show_path(path),
                });
            }
            tx.remove(&at, &show_path(path), true)
        })?)
    }

    /// `mv SRC DST`: when DST is an existing directory the entry moves inside it. Decided under
    /// the log lock, so of several processes racing to move one source exactly one succeeds.
    pub fn rename(
        &self,
        src: &(impl AsRef<[u8]> + ?Sized),
        dst: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<(), Error> {
        let (src, dst) = (src.as_ref(), dst.as_ref());
        Ok(self.transact(true, |tx| {
            let from = tx.entry(src)?;
            tx.lookup(from.parent, &from.name)?
                .ok_or_else(|| Error::NotFound {
                    path: show_path(src),
                })?;
            let (to, to_path) = into_dir_or_self(tx, dst, &from.name)?;
            tx.rename(&from, &show_path(src), &to, &to_path)
        })?)
    }

    /// `ln TARGET LINK` (hard) or `ln -s TARGET LINK` (symbolic; TARGET is stored as given).
    pub fn link(
        &self,
        target: &(impl AsRef<[u8]> + ?Sized),
        link: &(impl AsRef<[u8]> + ?Sized),
        symbolic: bool,
    ) -> Result<(), Error> {
        let (target, link) = (target.as_ref(), link.as_ref());
        Ok(self.transact(true, |tx| {
            if symbolic {
                let base = target
                    .rsplit(|&b| b == b'/')
                    .next()
                    .unwrap_or(target)
                    .to_vec();
                let (to, to_path) = into_dir_or_self(tx, link, &base)?;
                let mut i = Inode::new(InodeNo(0), FileKind::Symlink, 0o777);
                i.target = target.to_vec();
                i.size = i.target.len() as u64;
                tx.create(&to, &to_path, i).map(|_| ())
            } else {
                let ino = tx.resolve(target)?;
                let src = tx.entry(target)?;
                let (to, to_path) = into_dir_or_self(tx, link, &src.name)?;
                tx.link(ino, &show_path(target), &to, &to_path)
            }
        })?)
    }
}

/// `/a/b` from components.
pub fn display(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&show_path(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Create missing directories along `comps`; returns the last one's inode.
pub(crate) fn mkdir_comps(tx: &mut Tx<'_>, comps: &[Vec<u8>], perm: u32) -> Result<InodeNo, Error> {
    let mut cur = InodeNo::ROOT;
    for (i, c) in comps.iter().enumerate() {
        let path = display(&comps[..=i]);
        cur = match tx.lookup(cur, c)? {
            Some(ino) => {
                if tx.inode(ino)?.map(|n| n.kind) != Some(FileKind::Dir) {
                    return Err(Error::NotADirectory { path });
                }
                ino
            }
            None => {
                let at = Entry {
                    parent: cur,
                    name: c.clone(),
                };
                tx.create(&at, &path, Inode::new(InodeNo(0), FileKind::Dir, perm))?
            }
        };
    }
    Ok(cur)
}

/// `cp`/`mv` destination rule: an existing directory DST means DST/NAME, anything else DST itself.
/// Also returns the destination as a path for messages.
fn into_dir_or_self(tx: &Tx<'_>, dst: &[u8], name: &[u8]) -> Result<(Entry, String), Error> {
    if let Ok(ino) = tx.resolve(dst) {
        if tx.inode(ino)?.map(|i| i.kind) == Some(FileKind::Dir) {
            let path = format!(
                "{}/{}",
                show_path(dst).trim_end_matches('/'),
                show_path(name)
            );
            return Ok((
                Entry {
                    parent: ino,
                    name: name.to_vec(),
                },
                path,
            ));
        }
    }
    Ok((tx.entry(dst)?, show_path(dst)))
}
