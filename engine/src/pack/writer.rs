//! [`PackWriter`]: a process's own open pack, append-only until sealed ([PACK-5]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use verfs_coordination::{fsutil, io_site};

use super::scan::Problem;
use super::{index_path, pack_path, PackError};
use crate::format::pack::{
    check_lengths, Encoding, IndexEntry, PackHeader, PackIndex, RecordHeader, MAX_RAW_LEN,
    PACK_HEADER_LEN,
};
use crate::ids::{ChunkId, PackId};

/// Where a record was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLoc {
    pub pack: PackId,
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub encoding: Encoding,
    pub raw_len: u32,
    pub stored_len: u32,
}

/// Counters of one writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records written.
    pub records: u64,
    /// Appends skipped because the chunk was already in this pack.
    pub dedup_hits: u64,
    /// Sum of raw_len over records written.
    pub bytes_raw: u64,
    /// Sum of stored_len over records written (payload bytes, headers excluded).
    pub bytes_stored: u64,
}

/// A sealed pack: it has a `.idx` and never changes again ([PACK-5], [PACK-9]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPack {
    pub id: PackId,
    pub path: PathBuf,
    /// Pack file length.
    pub len: u64,
    /// Records in the `.idx`.
    pub records: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub dedup_hits: u64,
    /// Damage found while sealing an existing pack (always empty from [`PackWriter::seal`]).
    pub problems: Vec<Problem>,
}

/// A chunk compressed ahead of time (e.g. on a thread pool) for
/// [`PackWriter::append_compressed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub encoding: Encoding,
    /// The payload: zstd frame, or the raw bytes.
    pub stored: Vec<u8>,
}

/// A reusable zstd context applying the pack's rule: keep the compressed form only if it is
/// smaller than the raw bytes ([PACK-3]). One per thread.
pub struct ChunkCompressor {
    inner: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ChunkCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCompressor").finish_non_exhaustive()
    }
}

impl ChunkCompressor {
    pub fn new(level: i32) -> Result<ChunkCompressor, PackError> {
        let inner = zstd::bulk::Compressor::new(level).map_err(|e| PackError::Compress {
            reason: format!("cannot create a zstd context at level {level}: {e}"),
        })?;
        Ok(ChunkCompressor {
            inner,
            scratch: Vec::new(),
        })
    }

    /// Compress `raw` into the internal buffer; returns the encoding and the payload to store
    /// (borrowing either the buffer or `raw`).
    pub fn compress<'a>(&'a mut self, raw: &'a [u8]) -> Result<(Encoding, &'a [u8]), PackError> {
        if raw.len() > MAX_RAW_LEN as usize {
            return Err(PackError::InvalidInput {
                reason: format!(
                    "chunk of {} bytes exceeds the {MAX_RAW_LEN}-byte limit",
                    raw.len()
                ),
            });
        }
        self.scratch.clear();
        self.scratch.reserve(zstd::compress_bound(raw.len()));
        self.inner
            .compress_to_buffer(raw, &mut self.scratch)
            .map_err(|e| PackError::Compress {
                reason: e.to_string(),
            })?;
        if !self.scratch.is_empty() && self.scratch.len() < raw.len() {
            Ok((Encoding::Zstd, &self.scratch))
        } else {
            Ok((Encoding::Raw, raw))
        }
    }

    /// [`ChunkCompressor::compress`] into an owned value, computing the chunk id.
    pub fn compress_chunk(&mut self, raw: &[u8]) -> Result<CompressedChunk, PackError> {
        let id = ChunkId::of(raw);
        let (encoding, stored) = self.compress(raw)?;
        Ok(CompressedChunk {
            id,
            raw_len: raw.len() as u32,
            encoding,
            stored: stored.to_vec(),
        })
    }
}

/// Buffered bytes are handed to the kernel once this much is pending.
const FLUSH_AT: usize = 4 << 20;

/// A process's own open pack. See the module docs of [`crate::pack`].
///
/// Not shared: one writer per pack, owned by the process that created it. Appended records are
/// visible to readers once flushed to the kernel (at the latest by [`PackWriter::sync`]), and
/// durable only after `sync` returns ([PACK-6]).
pub struct PackWriter {
    id: PackId,
    path: PathBuf,
    packs_dir: PathBuf,
    /// Shared so a group sync can `fdatasync` without holding the writer (see [`PackWriter::sync_handle`]).
    file: std::sync::Arc<File>,
    /// Encoded records not yet handed to the kernel.
    buf: Vec<u8>,
    /// Bytes of the file handed to the kernel (`write` returned).
    written: u64,
    /// Bytes of the file known durable (`fdatasync` returned).
    synced: u64,
    seen: HashMap<ChunkId, RecordLoc>,
    compressor: ChunkCompressor,
    stats: WriterStats,
    /// Set by the first failed write or sync.
    poisoned: Option<String>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("id", &self.id)
            .field("len", &self.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PackWriter {
    /// Create `packs_dir/<random id>.pack` with `O_EXCL`, write its header and fsync the file and
    /// the directory, so that a recovery journal entry naming the pack, written after this
    /// returns, always names a file that exists with a valid header ([PACK-6]).
    ///
    /// On error the pack file is removed if it was created (best effort: if the process dies
    /// first, a file with a torn header may remain, which [`super::truncate_torn_tail`] repairs).
    pub fn create(packs_dir: &Path, level: i32) -> Result<PackWriter, PackError> {
        let mut attempt = 0;
        loop {
            match PackWriter::create_with_id(packs_dir, PackId::random(), level) {
                // 63 random bits: a collision means a broken RNG more than bad luck, but the
                // O_EXCL create makes it harmless to retry.
                Err(PackError::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists && attempt < 8 =>
                {
                    attempt += 1
                }
                r => return r,
            }
        }
    }

    /// [`PackWriter::create`] with an id chosen by the caller, so that a recovery journal entry
    /// naming the pack can be made durable *before* the file exists (a cleaner that finds no file
    /// for a journalled id has nothing to do). Fails with `Io` of kind `AlreadyExists` if
    /// `<id>.pack` exists; nothing is touched then.
    pub fn create_with_id(
        packs_dir: &Path,
        id: PackId,
        level: i32,
    ) -> Result<PackWriter, PackError> {
        let compressor = ChunkCompressor::new(level)?;
        let path = pack_path(packs_dir, id);
        let file = io_site!(
            "pack.create",
            OpenOptions::new().write(true).create_new(true).open(&path)
        )
        .map_err(|e| PackError::io(&path, e))?;
        let init = io_site!(
            "pack.header-write",
            file.write_all_at(&PackHeader { pack_id: id }.encode(), 0)
        )
        .and_then(|()| io_site!("pack.header-fsync", file.sync_all()))
        .map_err(|e| PackError::io(&path, e))
        .and_then(|()| fsutil::fsync_dir(packs_dir).map_err(|e| PackError::io(packs_dir, e)));
        if let Err(e) = init {
            let _ = io_site!("pack.create-cleanup-unlink", std::fs::remove_file(&path));
            return Err(e);
        }
        let len = PACK_HEADER_LEN as u64;
        Ok(PackWriter {
            id,
            path,
            packs_dir: packs_dir.to_path_buf(),
            file: std::sync::Arc::new(file),
            buf: Vec::new(),
            written: len,
            synced: len,
            seen: HashMap::new(),
            compressor,
            stats: WriterStats::default(),
            poisoned: None,
        })
    }

    pub fn id(&self) -> PackId {
        self.id
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Pack length including buffered records, for size-based rollover.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
    /// True while no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.len() == PACK_HEADER_LEN as u64
    }
    pub fn stats(&self) -> WriterStats {
        self.stats
    }
    /// Records appended (buffered ones included), for count-based rollover.
    pub fn records(&self) -> u64 {
        self.seen.len() as u64
    }
    /// Was `id` appended to this pack?
    pub fn contains(&self, id: ChunkId) -> bool {
        self.seen.contains_key(&id)
    }

    /// Has a failed write or sync made this writer unusable ([`PackWriter::seal`] salvages it)?
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Is `id` in this pack and known durable (before the last successful sync)?
    pub fn is_durable(&self, id: ChunkId) -> bool {
        self.seen.get(&id).is_some_and(|l| l.offset < self.synced)
    }

    /// Append chunk `id` with bytes `raw` (`id` must be `ChunkId::of(raw)`), zstd-compressed at
    /// the writer's level unless that does not save space. A chunk already in this pack is not
    /// written again; its location is returned ([PACK-10]).
    ///
    /// Not durable until [`PackWriter::sync`]. Errors: `InvalidInput` (over 16 MiB) and `Compress`
    /// leave the writer unchanged; `Io` (while flushing the buffer) poisons the writer.
    pub fn append(&mut self, id: ChunkId, raw: &[u8]) -> Result<RecordLoc, PackError> {
        self.check_usable()?;
        debug_assert_eq!(id, ChunkId::of(raw), "chunk id does not match its bytes");
        if let Some(loc) = self.seen.get(&id) {
            self.stats.dedup_hits += 1;
            return Ok(*loc);
        }
        let (encoding, payload) = self.compressor.compress(raw)?;
        let h = RecordHeader {
            encoding,
            chunk_id: id,
            raw_len: raw.len() as u32,
            stored_len: payload.len() as u32,
        };
        // Encode into the buffer here rather than via a method: `payload` borrows the compressor.
        let offset = self.written + self.buf.len() as u64;
        self.buf.extend_from_slice(&h.encode(payload));
        self.buf.extend_from_slice(payload);
        self.record_appended(h, offset)
    }

    /// Append a chunk compressed elsewhere (see [`ChunkCompressor`]): `stored` is the payload in
    /// `encoding`. The caller guarantees that it decodes to `raw_len` bytes hashing to `id`; it
    /// is not decompressed here (readers and fsck check it, [PACK-4]). Dedup and errors as
    /// [`PackWriter::append`]; `InvalidInput` if the lengths break [PACK-3].
    pub fn append_compressed(
        &mut self,
        id: ChunkId,
        raw_len: u32,
        encoding: Encoding,
        stored: &[u8],
    ) -> Result<RecordLoc, PackError> {
        self.check_usable()?;
        if let Some(loc) = self.seen.get(&id) {
            self.stats.dedup_hits += 1;
            return Ok(*loc);
        }
        let stored_len = u32::try_from(stored.len()).map_err(|_| PackError::InvalidInput {
            reason: format!("payload of {} bytes is too large", stored.len()),
        })?;
        check_lengths(encoding, raw_len, stored_len)
            .map_err(|e| PackError::InvalidInput { reason: e.reason })?;
        let h = RecordHeader {
            encoding,
            chunk_id: id,
            raw_len,
            stored_len,
        };
        let offset = self.len();
        self.buf.extend_from_slice(&h.encode(stored));
        self.buf.extend_from_slice(stored);
        self.record_appended(h, offset)
    }

    fn record_appended(&mut self, h: RecordHeader, offset: u64) -> Result<RecordLoc, PackError> {
        let loc = RecordLoc {
            pack: self.id,
            offset,
            encoding: h.encoding,
            raw_len: h.raw_len,
            stored_len: h.stored_len,
        };
        self.seen.insert(h.chunk_id, loc);
        self.stats.records += 1;
        self.stats.bytes_raw += u64::from(h.raw_len);
        self.stats.bytes_stored += u64::from(h.stored_len);
        if self.buf.len() >= FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(loc)
    }

    /// Hand buffered records to the kernel without waiting for the disk, so that readers (of this
    /// or another process on this host) can see them. Appends buffer up to 4 MiB; a process that
    /// reads a chunk it appended but has not synced must call this first.
    ///
    /// On error the writer is poisoned, as for [`PackWriter::sync`].
    pub fn flush(&mut self) -> Result<(), PackError> {
        self.check_usable()?;
        self.flush_buf()
    }

    /// Make every appended record durable: write the buffer, then `fdatasync` ([PACK-6]). The
    /// engine commits metadata referencing these chunks only after this returns.
    ///
    /// On error the writer is poisoned: records since the last successful `sync` may or may not
    /// be on disk, and must be treated as not stored; call [`PackWriter::seal`] to salvage the
    /// durable prefix.
    pub fn sync(&mut self) -> Result<(), PackError> {
        let Some((file, len)) = self.sync_handle()? else {
            return Ok(());
        };
        if let Err(e) = io_site!("pack.sync", file.sync_data()) {
            self.poison(format!("fdatasync failed: {e}"));
            return Err(PackError::io(&self.path, e));
        }
        self.synced_to(len);
        Ok(())
    }

    /// For a sync outside the writer's lock: flush the buffer to the kernel and return the file
    /// and the length that an `fdatasync` of it now makes durable, or `None` if that is durable
    /// already. Report the outcome with [`PackWriter::synced_to`] or [`PackWriter::poison`].
    pub fn sync_handle(&mut self) -> Result<Option<(std::sync::Arc<File>, u64)>, PackError> {
        self.check_usable()?;
        self.flush_buf()?;
        if self.synced == self.written {
            return Ok(None);
        }
        Ok(Some((self.file.clone(), self.written)))
    }

    /// An `fdatasync` begun when the pack was `len` bytes long returned: those bytes are durable.
    pub fn synced_to(&mut self, len: u64) {
        self.synced = self.synced.max(len.min(self.written));
    }

    /// Bytes known to be durable.
    pub fn synced_len(&self) -> u64 {
        self.synced
    }

    /// An `fdatasync` done outside the writer failed: treat records since the last sync as lost.
    pub fn poison(&mut self, cause: String) {
        self.poisoned.get_or_insert(cause);
    }

    /// Sync, write the `.idx` atomically ([PACK-9]) and close the pack; it never changes again.
    ///
    /// A poisoned writer is salvaged instead: the pack is cut back to its last durable length,
    /// fsynced, and indexed with the records before that point.
    ///
    /// On error the pack stays unsealed (no `.idx`, or the temp file of a failed `write_atomic`),
    /// with every record up to the last successful sync durable; [`super::seal_existing`] (after
    /// [`super::truncate_torn_tail`]) can finish the job later.
    pub fn seal(mut self) -> Result<SealedPack, PackError> {
        if self.poisoned.is_some() {
            let keep = self.synced;
            self.buf.clear();
            io_site!("pack.salvage-truncate", self.file.set_len(keep))
                .and_then(|()| io_site!("pack.salvage-fsync", self.file.sync_all()))
                .map_err(|e| PackError::io(&self.path, e))?;
            self.written = keep;
            let id = self.id;
            self.seen.retain(|_, l| l.offset < keep);
            let mut st = WriterStats {
                dedup_hits: self.stats.dedup_hits,
                ..WriterStats::default()
            };
            for l in self.seen.values() {
                st.records += 1;
                st.bytes_raw += u64::from(l.raw_len);
                st.bytes_stored += u64::from(l.stored_len);
            }
            self.stats = st;
            debug_assert!(self.seen.values().all(|l| l.pack == id));
        } else {
            self.sync()?;
        }
        let entries = self
            .seen
            .iter()
            .map(|(id, l)| IndexEntry {
                chunk_id: *id,
                offset: l.offset,
                raw_len: l.raw_len,
                stored_len: l.stored_len,
            })
            .collect();
        let index = PackIndex::new(self.id, entries);
        let ipath = index_path(&self.packs_dir, self.id);
        fsutil::write_atomic(&ipath, &index.encode()).map_err(|e| PackError::io(&ipath, e))?;
        Ok(SealedPack {
            id: self.id,
            path: self.path.clone(),
            len: self.written,
            records: self.stats.records,
            bytes_raw: self.stats.bytes_raw,
            bytes_stored: self.stats.bytes_stored,
            dedup_hits: self.stats.dedup_hits,
            problems: Vec::new(),
        })
    }

    fn check_usable(&self) -> Result<(), PackError> {
        match &self.poisoned {
            Some(cause) => Err(PackError::Poisoned {
                path: self.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn flush_buf(&mut self) -> Result<(), PackError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Positional write: the file offset of each record is decided here, not by a cursor.
        // Data never eats into the store's space reserve (kept for reading and freeing).
        let res = crate::access::leave_reserve(&self.file, self.buf.len() as u64).and_then(|()| {
            io_site!(
                "pack.append-write",
                self.file.write_all_at(&self.buf, self.written)
            )
        });
        if let Err(e) = res {
            self.poisoned = Some(format!("write failed: {e}"));
            return Err(PackError::io(&self.path, e));
        }
        // Start writeback of these bytes now (asynchronously), so the `fdatasync` of the next
        // commit finds little left to write instead of stalling every appender behind it.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on our own open descriptor; failure only loses the hint.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.written as libc::off64_t,
                    self.buf.len() as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl Drop for PackWriter {
    /// Hand buffered records to the kernel so readers and a later cleaner see whole records
    /// rather than losing them; durability was never promised without `sync`.
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            let _ = self.flush_buf();
        }
    }
}
