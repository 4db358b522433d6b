//! The log's reads of segment and checkpoint files, counted ([`IoStats`]).
//!
//! Owns the counters and the helpers every read of the log goes through, so that the cost of an
//! open or a catch-up can be measured (on a network filesystem each call is a round trip, and
//! opening a store once cost two reads and a stat per record of the log). Does not own what is
//! read: `record`, `segment` and `checkpoint` decode the bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many file system calls a [`TxLog`](super::TxLog) has made to read the log since it was
/// opened (the open included). Always counted: an atomic add per call, next to a system call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// `pread`/`read` calls on segment and checkpoint files.
    pub reads: u64,
    /// `fstat`/`statx` calls made to learn a segment's visible length.
    pub stats: u64,
    /// Directory listings of `log/` and `checkpoints/`.
    pub dir_lists: u64,
}

/// The live counters behind [`IoStats`], shared by a log and its view.
#[derive(Default, Debug)]
pub(super) struct IoCounters {
    reads: AtomicU64,
    stats: AtomicU64,
    dir_lists: AtomicU64,
}

impl IoCounters {
    pub(super) fn snapshot(&self) -> IoStats {
        IoStats {
            reads: self.reads.load(Ordering::Relaxed),
            stats: self.stats.load(Ordering::Relaxed),
            dir_lists: self.dir_lists.load(Ordering::Relaxed),
        }
    }

    /// Fill as much of `buf` as the file holds from `offset`: several `pread`s only if the kernel
    /// returns less than asked before the end of the file. Returns the bytes read (fewer than
    /// `buf.len()` only at the end of the file).
    pub(super) fn read_full_at(&self, f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            self.reads.fetch_add(1, Ordering::Relaxed);
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// [`IoCounters::read_full_at`] that fails with `UnexpectedEof` if the file ends first.
    pub(super) fn read_exact_at(&self, f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_full_at(f, buf, offset)? < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        Ok(())
    }

    /// The file's current length (one `fstat`).
    pub(super) fn len(&self, f: &File) -> io::Result<u64> {
        self.stats.fetch_add(1, Ordering::Relaxed);
        Ok(f.metadata()?.len())
    }

    pub(super) fn count_dir_list(&self) {
        self.dir_lists.fetch_add(1, Ordering::Relaxed);
    }
}
