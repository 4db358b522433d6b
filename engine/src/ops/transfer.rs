//! Copying trees between the host filesystem and a store (`verfs put` / `verfs get`).
//!
//! Both follow `cp -r`: when the destination does not exist it becomes the copy of the source;
//! when it is an existing directory the copy goes inside it. Mode, owner (as root), mtime and
//! symlinks are kept. A put commits its files in batches (`[batch]` in `config.toml`): one pack
//! sync and one log record per batch, and a final log sync before it returns.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nix::sys::stat::SFlag;

use crate::error::Error;
use crate::ids::InodeNo;
use crate::localdir::{LocalDir, WriteEntryError};
use crate::meta::{components, show_path, Entry, Extent, FileKind, Inode, Timestamp, Tx};
use crate::ops::namespace::{display, mkdir_comps};
use crate::store::{Held, PendingFile, Store, TransferReport};

/// Called with the number of bytes just transferred.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

fn comps_of<P: AsRef<[u8]> + ?Sized>(path: &P) -> Result<Vec<Vec<u8>>, Error> {
    Ok(components(path)?.into_iter().map(|c| c.to_vec()).collect())
}

fn base_name(p: &Path) -> Result<Vec<u8>, Error> {
    // `cp -r dir/ x` names the copy after `dir`, as does `cp -r dir/. x` in GNU cp.
    let canon = if p.file_name().is_none() {
        fs::canonicalize(p).map_err(Error::io(p))?
    } else {
        p.to_path_buf()
    };
    canon
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| Error::InvalidPath {
            path: p.display().to_string(),
            reason: "has no file name".into(),
        })
}

fn inode_from_meta(kind: FileKind, m: &fs::Metadata) -> Inode {
    let mut i = Inode::new(InodeNo(0), kind, m.mode() & 0o7777);
    // Ownership is kept as given: as root that is the source's owner (like `cp -a`); otherwise the
    // host's permissions already made it ours or readable.
    i.uid = m.uid();
    i.gid = m.gid();
    i.mtime = ts_of(m.mtime(), m.mtime_nsec());
    i.atime = ts_of(m.atime(), m.atime_nsec());
    i.size = m.len();
    i.rdev = m.rdev();
    i
}

struct Batch<'s> {
    store: &'s Store,
    base: Vec<Vec<u8>>,
    files: Vec<PendingFile>,
    bytes: u64,
    /// The batch's in-flight dedup references, released once it is committed.
    held: Held,
    /// When the batch got its first file (or was last committed).
    opened: std::time::Instant,
}

impl Batch<'_> {
    fn push(&mut self, f: PendingFile) -> Result<(), Error> {
        self.bytes += f.inode.size;
        self.files.push(f);
        let b = &self.store.config().batch;
        if self.files.len() >= b.max_files
            || self.bytes >= b.max_bytes
            || self.opened.elapsed() >= std::time::Duration::from_millis(b.max_age_ms)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.files.is_empty() {
            self.store.commit_files(
                &self.base,
                &[],
                std::mem::take(&mut self.files),
                Some(&self.held),
            )?;
            self.bytes = 0;
            self.held = self.store.hold();
            self.opened = std::time::Instant::now();
        }
        Ok(())
    }
}

/// A regular file for a worker to store.
struct FileJob {
    src: PathBuf,
    rel: Vec<Vec<u8>>,
    meta: fs::Metadata,
}

/// What a worker made of a [`FileJob`].
type FileDone = Result<(PendingFile, Held, TransferReport), Error>;

/// The walk's side of the file workers: jobs go out, stored files come back into the batch.
struct Walk<'a, 's> {
    jobs: Option<crossbeam_channel::Sender<FileJob>>,
    done: crossbeam_channel::Receiver<FileDone>,
    batch: Batch<'s>,
    dirs: Vec<(Vec<Vec<u8>>, Inode)>,
    report: &'a mut TransferReport,
    /// Bytes read by the workers so far, and how many of them were reported to `progress`.
    read: &'a AtomicU64,
    reported: u64,
    /// The first error: the walk stops sending jobs, and it is returned once workers finished.
    failed: Option<Error>,
    /// The first error was handed to the walk; results still coming back are dropped.
    stopped: bool,
    /// `[pipeline] file_workers = 1`: store each file on the walking thread, no worker.
    inline: Option<&'s Store>,
}

impl Walk<'_, '_> {
    fn take(&mut self, d: FileDone, progress: &mut dyn FnMut(u64)) {
        let n = self.read.load(Relaxed);
        progress(n - self.reported);
        self.reported = n;
        // After the first error nothing more joins the batch (it is never committed).
        if self.failed.is_some() || self.stopped {
            return;
        }
        let r = d.and_then(|(f, held, r)| {
            self.batch.held.absorb(held);
            self.report.add(&r);
            self.batch.push(f)
        });
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }

    fn send(&mut self, job: FileJob, progress: &mut dyn FnMut(u64)) -> Result<(), Error> {
        if let Some(store) = self.inline {
            // One file at a time, on this thread: a batch's files and only they are in the pack
            // when it commits (the layout of `put` before file workers).
            let d = store_file(store, job, self.read);
            self.take(d, progress);
            return self.stop_on_failure();
        }
        let Some(tx) = self.jobs.clone() else {
            return Err(Error::Internal("file workers already stopped".into()));
        };
        let mut job = job;
        loop {
            while let Ok(d) = self.done.try_recv() {
                self.take(d, progress);
            }
            self.stop_on_failure()?;
            match tx.send_timeout(job, std::time::Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(j)) => job = j,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    return Err(Error::Internal("the file workers stopped".into()))
                }
            }
        }
    }

    /// Hand the first error to the walk; from then on results are dropped.
    fn stop_on_failure(&mut self) -> Result<(), Error> {
        match self.failed.take() {
            Some(e) => {
                self.stopped = true;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// No more jobs: wait for every outstanding file.
    fn finish(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), Error> {
        self.jobs = None;
        while let Ok(d) = self.done.recv() {
            self.take(d, progress);
        }
        self.stop_on_failure()
    }
}

/// Store one file (a worker's job). Errors name the source path.
fn store_file(store: &Store, job: FileJob, read: &AtomicU64) -> FileDone {
    let src = &job.src;
    let f = fs::File::open(src).map_err(Error::io(src))?;
    let mut held = store.hold();
    let mut report = TransferReport::default();
    let counting = CountingReader { inner: f, read };
    let (extents, size) = store
        .write_stream(counting, &mut report, &mut held)
        .map_err(|e| e.with_input_path(src))?;
    report.files += 1;
    report.bytes += size;
    let mut inode = inode_from_meta(FileKind::File, &job.meta);
    inode.size = size;
    Ok((
        PendingFile {
            comps: job.rel,
            inode,
            extents,
        },
        held,
        report,
    ))
}

/// `verfs put LOCAL... DEST`.
///
/// Each batch is committed atomically; a failure leaves the batches before it in the store (as
/// `cp -r` leaves the files it copied) and nothing of the failed batch. Regular files are stored
/// by `[pipeline] file_workers` threads at once (each one a pipelined stream, see
/// [`Store::write_stream`]) while this thread walks the tree and commits the batches.
pub fn put(
    store: &Store,
    sources: &[PathBuf],
    dest: &(impl AsRef<[u8]> + ?Sized),
    progress: Progress<'_>,
) -> Result<TransferReport, Error> {
    let dest = dest.as_ref();
    let mut report = TransferReport::default();
    let dest_is_dir = store.read(|s| -> Result<bool, Error> {
        let tx = Tx::new(s);
        Ok(match tx.resolve(dest).ok() {
            Some(i) => s.inode(i)?.is_some_and(|i| i.kind == FileKind::Dir),
            None => false,
        })
    })??;
    if sources.len() > 1 && !dest_is_dir {
        return Err(Error::NotADirectory {
            path: format!("{} (target of several sources)", show_path(dest)),
        });
    }
    let workers = match store.config().pipeline.file_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    for src in sources {
        let meta = fs::symlink_metadata(src).map_err(Error::io(src))?;
        let mut target = comps_of(dest)?;
        // GNU cp: `SRC/.` copies SRC's contents into an existing directory DEST.
        let contents_only = src.as_os_str().as_bytes().ends_with(b"/.") || src.as_os_str() == ".";
        if dest_is_dir && contents_only && meta.is_dir() {
            // target stays DEST
        } else if dest_is_dir {
            target.push(base_name(src)?);
        } else {
            // The parent must exist, as for `cp`.
            store.read(|s| Tx::new(s).entry(dest).map(|_| ()))??;
        }
        if target.is_empty() {
            return Err(Error::IsADirectory { path: "/".into() });
        }
        let read = AtomicU64::new(0);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<FileJob>(workers * 2);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<FileDone>();
        let batch = Batch {
            store,
            base: target,
            files: Vec::new(),
            bytes: 0,
            held: store.hold(),
            opened: std::time::Instant::now(),
        };
        let mut walk = Walk {
            jobs: Some(job_tx),
            done: done_rx,
            batch,
            dirs: Vec::new(),
            report: &mut report,
            read: &read,
            reported: 0,
            failed: None,
            stopped: false,
            inline: (workers == 1).then_some(store),
        };
        let walked = std::thread::scope(|scope| {
            for _ in 0..workers * usize::from(workers > 1) {
                let (rx, tx, read) = (job_rx.clone(), done_tx.clone(), &read);
                scope.spawn(move || {
                    for job in rx {
                        if tx.send(store_file(store, job, read)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((job_rx, done_tx));
            let walked = put_entry(src, &meta, &mut Vec::new(), &mut walk, progress);
            let finished = walk.finish(progress);
            walked.and(finished)
        });
        walked?;
        walk.batch.flush()?;
        if !walk.dirs.is_empty() {
            // Directory attributes last: creating their children changed their mtimes.
            store.commit_files(&walk.batch.base, &walk.dirs, Vec::new(), None)?;
        }
    }
    store.sync()?;
    Ok(report)
}

fn put_entry(
    src: &Path,
    meta: &fs::Metadata,
    rel: &mut Vec<Vec<u8>>,
    walk: &mut Walk<'_, '_>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let ft = meta.file_type();
    if ft.is_dir() {
        walk.dirs
            .push((rel.clone(), inode_from_meta(FileKind::Dir, meta)));
        walk.report.dirs += 1;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(Error::io(src))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::io(src))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).map_err(Error::io(&p))?;
            rel.push(e.file_name().as_bytes().to_vec());
            put_entry(&p, &m, rel, walk, progress)?;
            rel.pop();
        }
        return Ok(());
    }
    if ft.is_file() {
        return walk.send(
            FileJob {
                src: src.to_path_buf(),
                rel: rel.clone(),
                meta: meta.clone(),
            },
            progress,
        );
    }
    let (kind, size, target) = if ft.is_symlink() {
        let t = fs::read_link(src).map_err(Error::io(src))?;
        walk.report.symlinks += 1;
        let t = t.as_os_str().as_bytes().to_vec();
        (FileKind::Symlink, t.len() as u64, t)
    } else if ft.is_fifo() {
        (FileKind::Fifo, 0, Vec::new())
    } else if ft.is_socket() {
        (FileKind::Socket, 0, Vec::new())
    } else if ft.is_char_device() {
        (FileKind::CharDev, 0, Vec::new())
    } else {
        (FileKind::BlockDev, 0, Vec::new())
    };
    let mut inode = inode_from_meta(kind, meta);
    inode.size = size;
    inode.target = target;
    walk.batch.push(PendingFile {
        comps: rel.clone(),
        inode,
        extents: Vec::new(),
    })
}

/// Counts the bytes a worker read, for the walk's progress reports.
struct CountingReader<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// A consistent copy of a subtree's metadata, taken in one read of the log.
struct TreeNode {
    name: Vec<u8>,
    inode: Inode,
    extents: Vec<Extent>,
    children: Vec<TreeNode>,
}

fn snapshot_tree(store: &Store, path: &[u8]) -> Result<TreeNode, Error> {
    store.view(path, |s, path| {
        let tx = Tx::new(s);
        let ino = tx.resolve(path)?;
        fn build(
            s: &crate::meta::MetaState,
            name: Vec<u8>,
            ino: InodeNo,
            depth: usize,
        ) -> Result<TreeNode, Error> {
            let inode = s.inode(ino)?.ok_or_else(|| Error::NotFound {
                path: format!("inode {ino}"),
            })?;
            let mut children = Vec::new();
            if inode.kind == FileKind::Dir && depth < 4096 {
                for (n, c) in s.entries(ino)? {
                    children.push(build(s, n, c, depth + 1)?);
                }
            }
            let extents = s.extents(ino)?;
            Ok(TreeNode {
                name,
                inode,
                extents,
                children,
            })
        }
        let name = comps_of(path)?.pop().unwrap_or_default();
        build(s, name, ino, 0)
    })?
}

/// `verfs get PATH LOCAL`.
///
/// Like `cp -r`, but never through a symlink in the destination that it did not create itself:
/// the host side is walked with directory descriptors ([`LocalDir`]). A file is written under a
/// temp name and renamed into place once all its bytes were read and checked, so a damaged chunk
/// leaves no partial file under the final name. Per-entry failures (a damaged chunk, a symlink or
/// directory in the way, a host write error) do not stop the copy: each is listed in
/// [`TransferReport::errors`] with the store path and the host path, and the rest of the tree is
/// still copied. Nothing in the store changes.
///
/// Errors (nothing written): the store path does not resolve, the destination's parent cannot
/// be opened.
pub fn get(
    store: &Store,
    path: &(impl AsRef<[u8]> + ?Sized),
    local: &Path,
    progress: Progress<'_>,
) -> Result<TransferReport, Error> {
    let tree = snapshot_tree(store, path.as_ref())?;
    // Below, the store path only names files in messages.
    let shown = show_path(path.as_ref());
    let path = shown.as_str();
    let mut g = Get {
        store,
        report: TransferReport::default(),
        progress,
    };
    // Named after the destination the user gave, whichever directory on the way failed.
    let host = |e: WriteEntryError| match e {
        WriteEntryError::Io { source, .. } => Error::Io {
            path: local.to_path_buf(),
            source,
        },
        other => Error::InvalidPath {
            path: local.display().to_string(),
            reason: other.to_string(),
        },
    };
    match fs::metadata(local) {
        // The path the user named may be a symlink to a directory, as with cp; below it nothing
        // is followed.
        Ok(m) if m.is_dir() => {
            let dir = LocalDir::open(local).map_err(host)?;
            if tree.name.is_empty() {
                // `get / DIR`: the root's contents go into DIR.
                for c in &tree.children {
                    g.entry(&dir, &c.name, c, &child_path(path, &c.name));
                }
                if let Err(e) = dir.finish_dir(&tree.inode) {
                    g.failed(path, e);
                }
            } else {
                g.entry(&dir, &tree.name, &tree, path);
            }
        }
        _ => {
            let name = local.file_name().ok_or_else(|| Error::InvalidPath {
                path: local.display().to_string(),
                reason: "has no file name".into(),
            })?;
            let parent = match local.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let dir = LocalDir::open(parent).map_err(host)?;
            g.entry(&dir, name.as_bytes(), &tree, path);
        }
    }
    Ok(g.report)
}

fn child_path(parent: &str, name: &[u8]) -> String {
    format!("{}/{}", parent.trim_end_matches('/'), show_path(name))
}

/// One `get` in progress: what it has copied and what failed.
struct Get<'s, 'p> {
    store: &'s Store,
    report: TransferReport,
    progress: Progress<'p>,
}

impl Get<'_, '_> {
    fn failed(&mut self, store_path: &str, e: WriteEntryError) {
        self.report.errors.push(format!("{store_path}: {e}"));
    }

    /// Copy `node` to `name` in `dir`, recording a failure instead of returning it.
    fn entry(&mut self, dir: &LocalDir, name: &[u8], node: &TreeNode, store_path: &str) {
        let i = &node.inode;
        let res = match i.kind {
            FileKind::Dir => match dir.dir(name) {
                Ok(sub) => {
                    self.report.dirs += 1;
                    for c in &node.children {
                        self.entry(&sub, &c.name, c, &child_path(store_path, &c.name));
                    }
                    sub.finish_dir(i)
                }
                Err(e) => Err(e),
            },
            FileKind::File => return self.file(dir, name, node, store_path),
            FileKind::Symlink => dir.symlink(name, &i.target, i).map(|()| {
                self.report.symlinks += 1;
            }),
            FileKind::Fifo | FileKind::Socket | FileKind::CharDev | FileKind::BlockDev => {
                let kind = match i.kind {
                    FileKind::Fifo => SFlag::S_IFIFO,
                    FileKind::Socket => SFlag::S_IFSOCK,
                    FileKind::CharDev => SFlag::S_IFCHR,
                    _ => SFlag::S_IFBLK,
                };
                dir.node(name, kind, i)
            }
        };
        if let Err(e) = res {
            self.failed(store_path, e);
        }
    }

    fn file(&mut self, dir: &LocalDir, name: &[u8], node: &TreeNode, store_path: &str) {
        let i = &node.inode;
        let mut f = match dir.new_file(name) {
            Ok(f) => f,
            Err(e) => return self.failed(store_path, e),
        };
        let mut w = ProgressWriter {
            inner: BufWriter::with_capacity(1 << 20, &mut f.file),
            progress: &mut *self.progress,
        };
        // Like cp, no fsync per file: the copy out is not part of the store's durability.
        let res = self
            .store
            .read_extents(i, &node.extents, &mut w)
            .and_then(|()| w.inner.flush().map_err(Error::io("<output>")));
        drop(w);
        match res {
            Ok(()) => match dir.commit_file(f, i) {
                Ok(()) => {
                    self.report.files += 1;
                    self.report.bytes += i.size;
                }
                Err(e) => self.failed(store_path, e),
            },
            Err(Error::Io { path, source }) if path == Path::new("<output>") => {
                let path = f.path.clone();
                dir.discard_file(f);
                self.failed(store_path, WriteEntryError::Io { path, source });
            }
            Err(e) => {
                let local = f.path.display().to_string();
                dir.discard_file(f);
                self.report
                    .errors
                    .push(format!("{store_path}: {e} ({local} not written)"));
            }
        }
    }
}

struct ProgressWriter<'a, 'p, W: Write> {
    inner: W,
    progress: &'a mut (dyn FnMut(u64) + 'p),
}

impl<W: Write> Write for ProgressWriter<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// Commit a batch of files written by [`Store::write_stream`] below `base` (directories
    /// created as needed, existing regular files replaced). The pack is synced first.
    pub fn commit_files(
        &self,
        base: &[Vec<u8>],
        dirs: &[(Vec<Vec<u8>>, Inode)],
        files: Vec<PendingFile>,
        held: Option<&Held>,
    ) -> Result<(), Error> {
        self.sync_pack()?;
        self.transact_held(false, held, |tx| {
            for (comps, proto) in dirs {
                let full: Vec<Vec<u8>> = base.iter().chain(comps.iter()).cloned().collect();
                let ino = mkdir_comps(tx, &full, proto.perm)?;
                if let Some(mut i) = tx.inode(ino)? {
                    i.perm = proto.perm;
                    i.uid = proto.uid;
                    i.gid = proto.gid;
                    i.mtime = proto.mtime;
                    i.atime = proto.atime;
                    tx.put_inode(i);
                }
            }
            for f in files {
                let full: Vec<Vec<u8>> = base.iter().chain(f.comps.iter()).cloned().collect();
                let Some((name, parents)) = full.split_last() else {
                    continue;
                };
                let parent = mkdir_comps(tx, parents, 0o755)?;
                let at = Entry {
                    parent,
                    name: name.clone(),
                };
                let path = display(&full);
                let kind = f.inode.kind;
                let ino = tx.write_file(&at, &path, f.inode.clone(), f.extents)?;
                // Restore the attributes `create` resets.
                if let Some(mut i) = tx.inode(ino)? {
                    i.kind = kind;
                    i.size = f.inode.size;
                    i.mtime = f.inode.mtime;
                    i.atime = f.inode.atime;
                    i.target = f.inode.target.clone();
                    i.rdev = f.inode.rdev;
                    tx.put_inode(i);
                }
            }
            Ok(())
        })?;
        self.maybe_roll_pack()
    }
}

/// A timestamp from file metadata.
pub fn ts_of(secs: i64, nsecs: i64) -> Timestamp {
    Timestamp {
        secs,
        nsecs: nsecs.clamp(0, 999_999_999) as u32,
    }
}
