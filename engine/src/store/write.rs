//! The write path: chunk, dedup and compress a stream ([`Store::write_stream`]) into this
//! process's own open pack, journaled before it exists ([STORE-3]); salvage of a pack poisoned by
//! a failed write ([PACK-6]); group sync ([`Store::sync_pack`]: one `fdatasync` for every waiting
//! commit) and rolling to a new pack at the target size.
//!
//! Not here: committing the metadata that references the chunks (`commit.rs`).

use std::io::Read;
use std::path::PathBuf;

use verfs_coordination::io_site;
use verfs_coordination::journal::ActionId;

use super::{Held, Store};
use crate::chunker::BufChunker;
use crate::error::Error;
use crate::ids::PackId;
use crate::kinds::ACTION_OPEN_PACK;
use crate::meta::{ChunkEntry, Extent, Inode};
use crate::pack::{self, Encoding, PackError, PackWriter};
use crate::pipeline::{Compressors, Pending, Stats, Window, WriteError};

/// This process's open pack and the chunks in it that no committed record indexes yet.
pub(super) struct OpenPack {
    pub(super) writer: PackWriter,
    pub(super) action: ActionId,
}

/// A file prepared for commit: its data is in a (synced) pack, its metadata not yet in the log.
pub struct PendingFile {
    /// Path components below the batch's base directory.
    pub comps: Vec<Vec<u8>>,
    pub inode: Inode,
    pub extents: Vec<Extent>,
}

/// Totals of a put or get.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TransferReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub new_chunks: u64,
    pub new_chunk_bytes: u64,
    pub dedup_chunks: u64,
    /// Entries a `get` could not write, one message each naming the store path and the host
    /// path; the rest of the tree was copied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl TransferReport {
    pub fn add(&mut self, o: &TransferReport) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.bytes += o.bytes;
        self.new_chunks += o.new_chunks;
        self.new_chunk_bytes += o.new_chunk_bytes;
        self.dedup_chunks += o.dedup_chunks;
        self.errors.extend(o.errors.iter().cloned());
    }
}

impl Store {
    pub(super) fn with_pack<R, E: From<Error> + From<PackError>>(
        &self,
        f: impl FnOnce(&mut PackWriter) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
        self.salvage_poisoned(&mut guard)?;
        if guard.is_none() {
            // Journal first, then the file ([STORE-3]): a process killed in between leaves a
            // journal entry naming a pack that does not exist (the cleaner skips it), never a pack
            // that no journal names (which nobody would ever seal).
            let id = PackId::random();
            let action = self
                .journal
                .begin(ACTION_OPEN_PACK, id.to_string().as_bytes())
                .map_err(Error::coordination)?;
            let writer = match PackWriter::create_with_id(
                &self.layout.packs(),
                id,
                self.cfg.compression.zstd_level,
            ) {
                Ok(w) => w,
                Err(e) => {
                    if pack::pack_path(&self.layout.packs(), id).exists() {
                        // Its removal failed too: seal it at close like a salvaged pack, so no
                        // unsealed pack without a journal entry is left behind.
                        self.unsealed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, action));
                    } else {
                        let _ = self.journal.end(action);
                    }
                    return Err(e.into());
                }
            };
            *guard = Some(OpenPack { writer, action });
        }
        let open = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("no open pack".into()))?;
        f(&mut open.writer)
    }

    /// Salvage the open pack now if a failed write poisoned it, so the space its lost records
    /// took comes back at once (not at this process's next write). Best effort.
    pub(crate) fn salvage_now(&self) {
        let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.salvage_poisoned(&mut guard);
    }

    /// A pack writer poisoned by a failed write or sync (ENOSPC, EIO) is sealed at its durable
    /// length ([PACK-6]) and closed, so the process keeps working with a new pack once space is
    /// back, and chunks committed earlier stay readable. Chunks appended after the last sync are
    /// forgotten (`pending`), so a retry writes them again instead of committing references to
    /// bytes that are not there. If even the salvage fails, the pack stays unsealed with its
    /// journal action open: `verfs recover` seals it after this process is gone.
    pub(super) fn salvage_poisoned(&self, guard: &mut Option<OpenPack>) -> Result<(), Error> {
        let Some(open) = guard.take_if(|o| o.writer.is_poisoned()) else {
            return Ok(());
        };
        let id = open.writer.id();
        self.voter
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|chunk, e| e.pack != id || open.writer.is_durable(*chunk));
        self.readers.invalidate(&id);
        match open.writer.seal() {
            Ok(_) => self.journal.end(open.action).map_err(Error::coordination),
            Err(e) => {
                tracing::warn!(
                    store = %self.layout.root.display(),
                    op = "salvage",
                    pack = %id,
                    error = %e,
                    "salvaging the pack after a failed write failed; `verfs recover` will seal it once this process has exited"
                );
                self.unsealed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id, open.action));
                Ok(())
            }
        }
    }

    /// Make the open pack's bytes durable: required before committing records that reference them.
    ///
    /// Group commit: the `fdatasync` runs outside the pack lock (appenders go on meanwhile) and
    /// under `pack_sync`, so callers that arrive while one runs wait for it and return at once if
    /// it covered their bytes; one `fdatasync` serves every close and batch that was waiting.
    pub fn sync_pack(&self) -> Result<(), Error> {
        // What this caller needs durable: everything appended so far.
        let need = {
            let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
            self.salvage_poisoned(&mut guard)?;
            match guard.as_mut() {
                Some(o) if o.writer.synced_len() < o.writer.len() => {
                    (o.writer.id(), o.writer.len())
                }
                _ => return Ok(()),
            }
        };
        let mut durable = self.pack_sync.lock().unwrap_or_else(|p| p.into_inner());
        if durable.0 == need.0 && durable.1 >= need.1 {
            return Ok(());
        }
        let handle = {
            let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
            self.salvage_poisoned(&mut guard)?;
            match guard.as_mut() {
                // Sealed (and so synced) since: nothing left to do.
                Some(o) if o.writer.id() == need.0 => o.writer.sync_handle()?,
                _ => None,
            }
        };
        let Some((file, len)) = handle else {
            return Ok(());
        };
        let res = io_site!("store.pack-group-sync", file.sync_data());
        let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = guard.as_mut().filter(|o| o.writer.id() == need.0) {
            match &res {
                Ok(()) => o.writer.synced_to(len),
                Err(e) => o.writer.poison(format!("fdatasync failed: {e}")),
            }
        }
        drop(guard);
        let path = pack::pack_path(&self.layout.packs(), need.0);
        res.map_err(|source| Error::Io { path, source })?;
        *durable = (need.0, len);
        Ok(())
    }

    /// Seal the open pack if it grew past the target size or record count (after a sync +
    /// commit).
    pub(crate) fn maybe_roll_pack(&self) -> Result<(), Error> {
        let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
        let p = &self.cfg.packs;
        let full = guard
            .as_ref()
            .map(|o| o.writer.len() >= p.target_size || o.writer.records() >= p.target_records)
            .unwrap_or(false);
        if full {
            self.seal_locked(&mut guard)?;
        }
        Ok(())
    }

    pub(super) fn seal_locked(&self, guard: &mut Option<OpenPack>) -> Result<(), Error> {
        if let Some(open) = guard.take() {
            open.writer.seal().map_err(Error::from)?;
            self.journal.end(open.action).map_err(Error::coordination)?;
        }
        Ok(())
    }

    pub(super) fn compressors(&self) -> Result<&Compressors, WriteError> {
        self.compressors
            .get_or_init(|| {
                Compressors::new(
                    self.cfg.pipeline.compress_threads,
                    self.cfg.compression.zstd_level,
                )
            })
            .as_ref()
            .map_err(|reason| WriteError::CompressorPool {
                reason: reason.clone(),
            })
    }

    /// Chunk, dedup and append a stream; returns its extents and size. Nothing is committed;
    /// commit with [`Store::transact_held`] and the same `held`.
    ///
    /// New chunks are compressed on the pool while this thread reads and chunks on, and are
    /// appended in stream order once the window of `[pipeline] queue_chunks` is full (so a file's
    /// chunks lie in pack order). A chunk that repeats inside the window is counted as dedup.
    pub fn write_stream(
        &self,
        mut src: impl Read,
        report: &mut TransferReport,
        held: &mut Held,
    ) -> Result<(Vec<Extent>, u64), WriteError> {
        let chunker = BufChunker::new(&mut src, self.cfg.chunker())?;
        let pool = self.compressors()?;
        let mut window = Window::new(self.cfg.pipeline.queue_chunks);
        let mut extents = Vec::new();
        let mut size = 0u64;
        for chunk in chunker {
            let chunk = chunk.map_err(|source| WriteError::Input {
                path: PathBuf::from("<input>"),
                source,
            })?;
            let len = chunk.len() as u32;
            extents.push(Extent {
                file_off: chunk.offset,
                chunk: chunk.id,
                chunk_off: 0,
                len,
            });
            size = chunk.offset + len as u64;
            if window.contains(&chunk.id) || self.known_chunk(chunk.id, held)? {
                report.dedup_chunks += 1;
                self.stats.dedup_hit(len);
                continue;
            }
            report.new_chunks += 1;
            report.new_chunk_bytes += len as u64;
            window.push(chunk.id, pool.submit(chunk));
            while let Some(job) = window.pop_ready(false) {
                self.append_compressed(job)?;
            }
        }
        while let Some(job) = window.pop_ready(true) {
            self.append_compressed(job)?;
        }
        Ok((extents, size))
    }

    /// Append one chunk compressed on the pool to this process's pack and list it as pending.
    fn append_compressed(&self, job: Pending) -> Result<(), WriteError> {
        let c = job.wait()?;
        let (pack, fresh) = self.with_pack(|w| {
            // Another stream of this process may have appended it meanwhile: then the pack
            // keeps one copy and this one counts as a dedup hit.
            let fresh = !w.contains(c.id);
            w.append_compressed(c.id, c.raw_len, c.encoding, c.stored())?;
            Ok::<_, WriteError>((w.id(), fresh))
        })?;
        if fresh {
            Stats::add(&self.stats.chunks_new, 1);
            Stats::add(&self.stats.bytes_in, c.raw_len as u64);
            Stats::add(&self.stats.bytes_stored, c.stored().len() as u64);
            if c.encoding == Encoding::Raw {
                Stats::add(&self.stats.chunks_raw, 1);
            }
        } else {
            self.stats.dedup_hit(c.raw_len);
        }
        // Pending either way: the copy already in this open pack may belong to a chunk GC has
        // dropped from the index since it was committed (an open pack is never rewritten, so its
        // bytes are there); the commit indexes it again.
        self.voter
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                c.id,
                ChunkEntry {
                    pack,
                    raw_len: c.raw_len,
                },
            );
        Ok(())
    }
}
