//! This process's view of open files over the committed metadata: [`DirtyFile`], the per-inode
//! overlay of unflushed writes (every handle of this process sees them at once, as POSIX wants),
//! [`OpenFiles`] (handle counts and orphans), and the pure extent arithmetic both the overlay's
//! commit and `lseek` need ([`punch`], [`seek_extents`]).
//!
//! Data only: committing an overlay (chunking its ranges, splicing the extents in a transaction)
//! is the inode operations' job (`ops::inode`); the `Store` holds the
//! overlays of its process.

use std::collections::{BTreeMap, HashMap};

use crate::ids::InodeNo;
use crate::meta::{Extent, Timestamp};

/// Dirty bytes of one file above which a write commits early, so memory stays bounded.
pub const DIRTY_LIMIT: usize = 64 << 20;

/// Files open in this process: handle counts, and the journal action of each orphan (an
/// unlinked inode kept until its last close).
#[derive(Default)]
pub struct OpenFiles {
    pub open: HashMap<InodeNo, u32>,
    pub orphans: HashMap<InodeNo, verfs_coordination::journal::ActionId>,
}

/// Where `lseek` looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    Data,
    Hole,
}

/// Unflushed writes to one file in this process.
#[derive(Default)]
pub struct DirtyFile {
    /// The file's size as this process sees it.
    pub size: u64,
    /// Lowest size the file was truncated to since the last flush.
    pub truncated: Option<u64>,
    /// Written ranges, non-overlapping, keyed by offset.
    pub ranges: BTreeMap<u64, Vec<u8>>,
    pub bytes: usize,
    pub mtime: Option<Timestamp>,
    /// The largest range buffer of the last flush, emptied, for the next new range: a stream of
    /// writes reuses memory that is already mapped instead of faulting in fresh zeroed pages
    /// after every flush. Dropped with the overlay (at the last close).
    pub(crate) spare: Vec<u8>,
}

impl DirtyFile {
    pub(crate) fn is_clean(&self) -> bool {
        self.ranges.is_empty() && self.truncated.is_none() && self.mtime.is_none()
    }

    /// Put `data` at `off`, merging with overlapping or adjacent ranges (appends extend in place).
    pub(crate) fn write(&mut self, off: u64, data: &[u8]) {
        let end = off + data.len() as u64;
        let start_key = self
            .ranges
            .range(..=off)
            .next_back()
            .filter(|(k, v)| **k + v.len() as u64 >= off)
            .map(|(k, _)| *k);
        let key = match start_key {
            Some(k) => k,
            None => {
                let mut buf = std::mem::take(&mut self.spare);
                buf.clear();
                self.ranges.insert(off, buf);
                off
            }
        };
        // Absorb following ranges that the new bytes reach.
        let followers: Vec<u64> = self.ranges.range(key + 1..=end).map(|(k, _)| *k).collect();
        let mut absorbed = Vec::new();
        for k in followers {
            if let Some(v) = self.ranges.remove(&k) {
                absorbed.push((k, v));
            }
        }
        let Some(buf) = self.ranges.get_mut(&key) else {
            return;
        };
        let before = buf.len();
        let rel = (off - key) as usize;
        if rel == buf.len() && absorbed.is_empty() {
            // A plain append (the common sequential write): no zero fill before the copy.
            buf.extend_from_slice(data);
            self.bytes += data.len();
            self.size = self.size.max(end);
            return;
        }
        if buf.len() < rel + data.len() {
            buf.resize(rel + data.len(), 0);
        }
        for (k, v) in absorbed {
            self.bytes -= v.len();
            let r = (k - key) as usize;
            // Bytes of the follower past the new write stay; the overlap is overwritten below.
            if buf.len() < r + v.len() {
                buf.resize(r + v.len(), 0);
            }
            buf[r..r + v.len()].copy_from_slice(&v);
        }
        buf[rel..rel + data.len()].copy_from_slice(data);
        self.bytes += buf.len() - before;
        self.size = self.size.max(end);
    }

    pub(crate) fn truncate(&mut self, size: u64) {
        self.truncated = Some(self.truncated.map_or(size, |t| t.min(size)));
        let keys: Vec<u64> = self.ranges.range(..).map(|(k, _)| *k).collect();
        for k in keys {
            if k >= size {
                if let Some(v) = self.ranges.remove(&k) {
                    self.bytes -= v.len();
                }
            } else if let Some(v) = self.ranges.get_mut(&k) {
                let keep = (size - k) as usize;
                if v.len() > keep {
                    self.bytes -= v.len() - keep;
                    v.truncate(keep);
                }
            }
        }
        self.size = size;
    }
}

/// Remove the coverage of `[start, end)` from sorted extents, splitting the ones that cross.
pub fn punch(exts: &[Extent], start: u64, end: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(exts.len() + 1);
    for x in exts {
        let x_end = x.file_off + x.len as u64;
        if x_end <= start || x.file_off >= end {
            out.push(*x);
            continue;
        }
        if x.file_off < start {
            out.push(Extent {
                len: (start - x.file_off) as u32,
                ..*x
            });
        }
        if x_end > end {
            let cut = end - x.file_off;
            out.push(Extent {
                file_off: end,
                chunk_off: x.chunk_off + cut as u32,
                len: (x_end - end) as u32,
                chunk: x.chunk,
            });
        }
    }
    out
}

/// `lseek(SEEK_DATA / SEEK_HOLE)` in a file of `size` bytes with sorted, disjoint `extents`;
/// `None` is `ENXIO`. Also serves files of a snapshot (the mount's `/.snapshots`).
pub fn seek_extents(size: u64, extents: &[Extent], off: u64, what: Seek) -> Option<u64> {
    if off >= size {
        return None;
    }
    let first = extents.partition_point(|x| x.file_off + x.len as u64 <= off);
    match what {
        Seek::Data => extents
            .get(first)
            .map(|x| x.file_off.max(off))
            .filter(|&p| p < size),
        Seek::Hole => {
            let mut pos = off;
            for x in &extents[first..] {
                if x.file_off > pos {
                    break;
                }
                pos = pos.max(x.file_off + x.len as u64);
            }
            Some(pos.min(size))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;

    fn x(off: u64, len: u32) -> Extent {
        Extent {
            file_off: off,
            chunk: ChunkId(off as u128),
            chunk_off: 0,
            len,
        }
    }

    #[test]
    fn punch_splits_crossing_extents() {
        let e = vec![x(0, 10), x(10, 10), x(20, 10)];
        let p = punch(&e, 5, 25);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].file_off, p[0].len), (0, 5));
        assert_eq!((p[1].file_off, p[1].len, p[1].chunk_off), (25, 5, 5));
        assert_eq!(punch(&e, 100, 200), e);
        assert!(punch(&e, 0, u64::MAX).is_empty());
    }

    #[test]
    fn dirty_ranges_merge_and_truncate() {
        let mut d = DirtyFile::default();
        d.write(0, b"aaaa");
        d.write(4, b"bbbb"); // adjacent: extends in place
        d.write(20, b"cc");
        d.write(2, b"XXXXXXXXXXXXXXXXXXXXX"); // bridges both
        assert_eq!(d.ranges.len(), 1);
        assert_eq!(d.ranges[&0], b"aaXXXXXXXXXXXXXXXXXXXXX".to_vec());
        assert_eq!(d.size, 23);
        assert_eq!(d.bytes, 23);
        d.truncate(5);
        assert_eq!(d.ranges[&0], b"aaXXX".to_vec());
        assert_eq!((d.size, d.bytes, d.truncated), (5, 5, Some(5)));
    }
}
