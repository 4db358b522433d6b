//! The read path: a chunk's bytes from its pack ([`Store::read_chunk`], verified against its id,
//! retried when GC replaced the pack underneath, [GC-6]), the caches in front of it (pack readers,
//! decoded chunks) and readahead on the compression pool; a whole file's bytes
//! ([`Store::read_extents`]).
//!
//! Not here: resolving paths or inodes to extents (`ops::namespace`, `ops::inode`).

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Store;
use crate::error::Error;
use crate::ids::{ChunkId, PackId};
use crate::meta::{Extent, Inode};
use crate::pack::{self, PackReader};
use crate::pipeline::Stats;

impl Store {
    /// Decode `ids` into the chunk cache on the pool, ahead of a sequential reader (at most
    /// `[cache] readahead_chunks` of them). Chunks already cached or being read ahead, and chunks
    /// in this process's open pack, are skipped; failures are ignored (the reader's own read
    /// reports them).
    pub(crate) fn prefetch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let n = self.cfg.cache.readahead_chunks;
        if n == 0 {
            return;
        }
        let Ok(pool) = self.compressors() else {
            return;
        };
        let open = self
            .pack
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(|o| o.writer.id()));
        let want: Vec<ChunkId> = ids
            .into_iter()
            .take(n)
            .filter(|id| !self.chunk_cache.contains_key(id))
            .collect();
        if want.is_empty() {
            return;
        }
        let Ok(Ok(entries)) = self.read(|s| {
            let mut out = Vec::new();
            for id in &want {
                if let Some(e) = s.chunk(*id)? {
                    out.push((*id, e));
                }
            }
            Ok::<_, crate::meta::MetaError>(out)
        }) else {
            return;
        };
        for (id, entry) in entries {
            if Some(entry.pack) == open {
                continue;
            }
            if !self
                .prefetching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
            {
                continue;
            }
            let Ok(reader) = self.reader(entry.pack) else {
                self.prefetching
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                continue;
            };
            let (cache, busy, stats) = (
                self.chunk_cache.clone(),
                self.prefetching.clone(),
                self.stats.clone(),
            );
            pool.spawn(move || {
                // `try_get_with`: a reader asking for this chunk meanwhile waits for this decode
                // instead of doing its own.
                let _ = cache.try_get_with(id, || {
                    Stats::add(&stats.readahead_chunks, 1);
                    reader.read_chunk(id).map(Arc::new)
                });
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
    }

    /// Read one chunk's bytes, verified against its id.
    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>, Error> {
        let entry = match self.read(|s| s.chunk(id))?? {
            Some(e) => e,
            None => self
                .voter
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .copied()
                .ok_or_else(|| Error::Corrupt {
                    path: self.layout.packs(),
                    offset: 0,
                    reason: format!("chunk {id} is referenced but not in the chunk index"),
                })?,
        };
        // A chunk still in this process's write buffer is not in the file yet.
        {
            let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
            self.salvage_poisoned(&mut guard)?;
            if let Some(open) = guard.as_mut().filter(|o| o.writer.id() == entry.pack) {
                open.writer.flush().map_err(Error::from)?;
            }
        }
        let mut reader = self.reader(entry.pack)?;
        let mut res = reader.read_chunk(id);
        for _ in 0..3 {
            if res.is_ok() {
                break;
            }
            // [GC-6]: GC may have replaced the pack between this reader opening its `.pack` and
            // its `.idx`, or since it was cached: retry with the current files.
            let current = fs::metadata(reader.path())
                .ok()
                .map(|m| pack::file_identity(&m));
            if current == Some(reader.identity()) {
                break;
            }
            self.drop_reader(entry.pack);
            reader = self.reader(entry.pack)?;
            res = reader.read_chunk(id);
        }
        match res {
            // The pack was synced before the record naming it was committed ([PACK-6]): a chunk
            // the index puts in this pack and that is not there means the pack is damaged
            // (truncated, or its record unreadable), not "not written yet".
            Err(pack::PackError::NotFound { .. }) => {
                let (path, offset, why) = reader.missing_chunk_context();
                Err(Error::Corrupt {
                    path,
                    offset,
                    reason: format!("chunk {id} is committed in this pack but missing: {why}"),
                })
            }
            r => r.map_err(Error::from),
        }
    }

    /// A chunk's bytes through the decoded-chunk cache.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>, Error> {
        let mut decoded = false;
        // Waits for a decode of the same chunk already running (a readahead).
        let r = self.chunk_cache.try_get_with(id, || {
            decoded = true;
            self.read_chunk(id).map(Arc::new)
        });
        let counter = if decoded {
            &self.stats.chunk_cache_misses
        } else {
            &self.stats.chunk_cache_hits
        };
        Stats::add(counter, 1);
        match r {
            Ok(d) => Ok(d),
            // Another thread's failed decode comes back shared; read again for our own error.
            Err(_) => Ok(Arc::new(self.read_chunk(id)?)),
        }
    }

    /// A reader for `pack`, cached. A cached reader keeps the file it opened, which stays
    /// consistent even after GC replaced the pack ([GC-6]); it is re-checked against the current
    /// file at most once per second (one `stat`), so an old pack's space is not pinned for long.
    pub(crate) fn reader(&self, pack: PackId) -> Result<Arc<PackReader>, Error> {
        if let Some(c) = self.readers.get(&pack) {
            let mut checked = c.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < READER_RECHECK {
                Stats::add(&self.stats.reader_cache_hits, 1);
                return Ok(c.reader.clone());
            }
            let current = fs::metadata(c.reader.path())
                .ok()
                .map(|m| pack::file_identity(&m));
            if current == Some(c.identity) {
                *checked = std::time::Instant::now();
                Stats::add(&self.stats.reader_cache_hits, 1);
                return Ok(c.reader.clone());
            }
            drop(checked);
            self.readers.invalidate(&pack);
        }
        Stats::add(&self.stats.reader_cache_misses, 1);
        let r = Arc::new(PackReader::open(&self.layout.packs(), pack).map_err(Error::from)?);
        self.readers.insert(
            pack,
            Arc::new(CachedReader {
                identity: r.identity(),
                reader: r.clone(),
                checked: Mutex::new(std::time::Instant::now()),
            }),
        );
        Ok(r)
    }

    /// Forget the cached reader of `pack` (after a read failed: the pack may have been replaced
    /// between opening its `.pack` and its `.idx`).
    pub(crate) fn drop_reader(&self, pack: PackId) {
        self.readers.invalidate(&pack);
    }

    /// Write a file's bytes (holes as zeros) to `out`.
    pub fn read_extents(
        &self,
        inode: &Inode,
        extents: &[Extent],
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        let mut pos = 0u64;
        let zeros = vec![0u8; 64 << 10];
        let write = |out: &mut dyn Write, b: &[u8]| out.write_all(b).map_err(Error::io("<output>"));
        let fill = |out: &mut dyn Write, mut n: u64| -> Result<(), Error> {
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                write(out, &zeros[..k])?;
                n -= k as u64;
            }
            Ok(())
        };
        let ahead = self.cfg.cache.readahead_chunks;
        for (i, x) in extents.iter().enumerate() {
            if x.file_off >= inode.size {
                break;
            }
            if x.file_off > pos {
                fill(out, x.file_off - pos)?;
                pos = x.file_off;
            }
            if ahead > 0 && i % ahead.div_ceil(2) == 0 {
                self.prefetch(extents[i + 1..].iter().map(|x| x.chunk));
            }
            let data = if ahead > 0 {
                self.chunk(x.chunk)?
            } else {
                Arc::new(self.read_chunk(x.chunk)?)
            };
            let start = x.chunk_off as usize;
            let end = start + x.len as usize;
            let slice = data.get(start..end).ok_or_else(|| Error::Corrupt {
                path: self.layout.packs(),
                offset: 0,
                reason: format!(
                    "extent {}+{} beyond chunk {} of {} bytes",
                    start,
                    x.len,
                    x.chunk,
                    data.len()
                ),
            })?;
            let keep = (inode.size - x.file_off).min(slice.len() as u64) as usize;
            // Overlapping extents (never produced by verfs) would rewind: skip the overlap.
            let skip = (pos - x.file_off).min(keep as u64) as usize;
            write(out, &slice[skip..keep])?;
            pos = x.file_off + keep as u64;
        }
        if inode.size > pos {
            fill(out, inode.size - pos)?;
        }
        Ok(())
    }
}

/// How long a cached pack reader is trusted before its file is `stat`ed again.
const READER_RECHECK: Duration = Duration::from_secs(1);

/// A cached [`PackReader`] and the identity (device, inode) of the file it opened.
pub(crate) struct CachedReader {
    reader: Arc<PackReader>,
    identity: (u64, u64),
    /// When the pack file was last seen to be this reader's (re-checked once a second, [GC-6]).
    checked: Mutex<std::time::Instant>,
}
