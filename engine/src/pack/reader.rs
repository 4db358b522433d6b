//! [`PackReader`]: checked random access to the chunks of one pack, shared between threads.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::record::decode_payload;
use super::scan::{Walk, Walker};
use super::{index_path, pack_path, PackError};
use crate::format::pack::{
    self as fmt, PackHeader, PackIndex, RecordHeader, PACK_HEADER_LEN, RECORD_HEADER_LEN,
};
use crate::ids::{ChunkId, PackId};

/// Where a reader's index came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexSource {
    /// A valid `.idx`: the pack is sealed and the index is complete.
    Idx,
    /// Built by scanning the pack, because `reason` (no `.idx` yet: the pack is still being
    /// written, or its `.idx` was lost; or the `.idx` is damaged). Lookups that miss rescan.
    Scanned { reason: String },
}

#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u64,
    raw_len: u32,
    stored_len: u32,
}

struct State {
    map: HashMap<ChunkId, Loc>,
    source: IndexSource,
    /// For a scanned index: the record boundary where the next rescan starts.
    scanned_to: u64,
}

/// Checked random access to one pack's chunks ([PACK-3], [PACK-4]). `Send + Sync`: reads use
/// `pread`, so one reader serves every thread of a process.
pub struct PackReader {
    id: PackId,
    path: PathBuf,
    packs_dir: PathBuf,
    file: File,
    /// Why the pack header is not valid, if it is not (see [`PackReader::header_problem`]).
    header_problem: Option<String>,
    state: RwLock<State>,
}

impl std::fmt::Debug for PackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackReader")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}

impl PackReader {
    /// Open `packs_dir/<id>.pack`, check its header ([PACK-1]) and load its index: the `.idx` if
    /// it is valid for this pack ([PACK-8]), else a scan of the pack. A missing or damaged `.idx`
    /// never makes this fail; [`PackReader::index_source`] says which happened.
    ///
    /// A damaged header, or one that names another pack, does not fail the open: records are
    /// served by their own checks and [`PackReader::header_problem`] says what is wrong.
    ///
    /// Read-only: a failure leaves nothing behind. Errors: `Io` (including a missing pack),
    /// `Corrupt` if the file is shorter than a pack header.
    pub fn open(packs_dir: &Path, id: PackId) -> Result<PackReader, PackError> {
        let path = pack_path(packs_dir, id);
        let file = File::open(&path).map_err(|e| PackError::io(&path, e))?;
        let len = file.metadata().map_err(|e| PackError::io(&path, e))?.len();
        let corrupt = |offset, reason: String| PackError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        if len < PACK_HEADER_LEN as u64 {
            return Err(corrupt(
                0,
                format!("pack is {len} bytes, shorter than its header"),
            ));
        }
        let mut hb = [0u8; PACK_HEADER_LEN];
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| PackError::io(&path, e))?;
        // A damaged header does not make the records unreadable: each record carries its own
        // magic, crc and chunk id, and the `.idx` its own checksum and pack id. So the damage is
        // remembered (fsck reports it from its own scan) and every record whose checks hold is
        // still served ([PACK-1]).
        let header_problem = match PackHeader::decode(&hb) {
            Err(e) => Some(corrupt(e.at, e.reason).to_string()),
            Ok(h) if h.pack_id != id => Some(
                corrupt(
                    12,
                    format!("header names pack {} but the file is {id}", h.pack_id),
                )
                .to_string(),
            ),
            Ok(_) => None,
        };
        let reader = PackReader {
            header_problem,
            id,
            path,
            packs_dir: packs_dir.to_path_buf(),
            file,
            state: RwLock::new(State {
                map: HashMap::new(),
                source: IndexSource::Scanned {
                    reason: String::new(),
                },
                scanned_to: PACK_HEADER_LEN as u64,
            }),
        };
        {
            let mut st = reader.write_state();
            match reader.load_idx(len) {
                Ok(map) => {
                    st.map = map;
                    st.source = IndexSource::Idx;
                }
                Err(reason) => {
                    st.source = IndexSource::Scanned { reason };
                    reader.rescan(&mut st)?;
                }
            }
        }
        Ok(reader)
    }

    pub fn id(&self) -> PackId {
        self.id
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// (device, inode) of the file this reader opened: tells whether GC replaced the pack since.
    pub fn identity(&self) -> (u64, u64) {
        self.file
            .metadata()
            .map(|m| super::file_identity(&m))
            .unwrap_or((0, 0))
    }
    /// Why the pack's header failed its checks, if it did. The records are still served by their
    /// own checks; `verfs fsck` reports the header.
    pub fn header_problem(&self) -> Option<&str> {
        self.header_problem.as_deref()
    }
    pub fn index_source(&self) -> IndexSource {
        self.read_state().source.clone()
    }
    /// Number of chunks in the loaded index.
    pub fn chunk_count(&self) -> usize {
        self.read_state().map.len()
    }
    /// Chunk ids in the loaded index, unordered.
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        self.read_state().map.keys().copied().collect()
    }

    /// (chunk id, raw length) of every chunk in the loaded index, unordered (`verfs repair`
    /// rebuilds chunk index entries from them).
    pub fn chunks(&self) -> Vec<(ChunkId, u32)> {
        self.read_state()
            .map
            .iter()
            .map(|(id, l)| (*id, l.raw_len))
            .collect()
    }

    /// Where and why a chunk that should be here may be missing, for a `Corrupt` error: for an
    /// index built by scanning, the record boundary where the scan met its first problem (or the
    /// end of the pack) and why the `.idx` was not used; for a valid `.idx`, the index file.
    pub fn missing_chunk_context(&self) -> (PathBuf, u64, String) {
        let st = self.read_state();
        match &st.source {
            IndexSource::Scanned { reason } => {
                let len = self
                    .file
                    .metadata()
                    .map(|m| m.len())
                    .unwrap_or(st.scanned_to);
                let why = if st.scanned_to < len {
                    format!("the pack has no valid record from here on ({reason})")
                } else {
                    format!("the pack ends here ({reason})")
                };
                (self.path.clone(), st.scanned_to, why)
            }
            IndexSource::Idx => (
                index_path(&self.packs_dir, self.id),
                0,
                "the pack's valid .idx does not list it".into(),
            ),
        }
    }

    /// Stored (payload) length of chunk `id`'s record, if the pack has it.
    pub fn stored_len(&self, id: ChunkId) -> Result<Option<u32>, PackError> {
        Ok(self.locate(id)?.map(|l| l.stored_len))
    }

    /// Is `id` in this pack? For a pack without a valid `.idx` a miss rescans first (see
    /// [`PackReader::read_chunk`]). Errors: `Io` during that rescan.
    pub fn contains(&self, id: ChunkId) -> Result<bool, PackError> {
        Ok(self.locate(id)?.is_some())
    }

    /// Read chunk `id`: `pread` its record, check the header against the index, the crc, decode,
    /// and check that the bytes hash to `id` ([PACK-3], [PACK-4]).
    ///
    /// If `id` is not in an index built by scanning, the `.idx` is tried again (the writer may have
    /// sealed the pack since) and otherwise the pack is rescanned from where the last scan stopped
    /// (another process may have appended since) before answering `NotFound` ([PACK-11]).
    ///
    /// Read-only. Errors: `NotFound`, `Corrupt { offset }` (offset of the record), `Io`.
    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>, PackError> {
        let Some(loc) = self.locate(id)? else {
            return Err(PackError::NotFound {
                path: self.path.clone(),
                id,
            });
        };
        let corrupt = |reason: String| PackError::Corrupt {
            path: self.path.clone(),
            offset: loc.offset,
            reason,
        };
        let total = RECORD_HEADER_LEN + loc.stored_len as usize;
        let mut buf = vec![0u8; total];
        match self.file.read_exact_at(&mut buf, loc.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(corrupt(format!(
                    "record of {total} bytes extends past the end of the pack"
                )))
            }
            Err(e) => return Err(PackError::io(&self.path, e)),
        }
        let (hb, payload) = buf.split_at(RECORD_HEADER_LEN);
        let h = RecordHeader::decode(hb).map_err(|e| corrupt(e.to_string()))?;
        if h.chunk_id != id || h.raw_len != loc.raw_len || h.stored_len != loc.stored_len {
            return Err(corrupt(format!(
                "record header ({}, raw {}, stored {}) does not match the index ({id}, raw {}, stored {})",
                h.chunk_id, h.raw_len, h.stored_len, loc.raw_len, loc.stored_len
            )));
        }
        if !fmt::check_record_crc(hb, payload) {
            return Err(corrupt(format!("record crc mismatch (chunk {id})")));
        }
        decode_payload(&h, payload).map_err(corrupt)
    }

    fn locate(&self, id: ChunkId) -> Result<Option<Loc>, PackError> {
        {
            let st = self.read_state();
            if let Some(l) = st.map.get(&id) {
                return Ok(Some(*l));
            }
            if st.source == IndexSource::Idx {
                return Ok(None);
            }
        }
        let mut st = self.write_state();
        if let Some(l) = st.map.get(&id) {
            return Ok(Some(*l));
        }
        if st.source == IndexSource::Idx {
            return Ok(None);
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| PackError::io(&self.path, e))?
            .len();
        match self.load_idx(len) {
            Ok(map) => {
                st.map = map;
                st.source = IndexSource::Idx;
            }
            Err(_) => self.rescan(&mut st)?,
        }
        Ok(st.map.get(&id).copied())
    }

    /// Load and validate the `.idx` against this pack of length `len`; `Err(reason)` if unusable.
    fn load_idx(&self, len: u64) -> Result<HashMap<ChunkId, Loc>, String> {
        let ipath = index_path(&self.packs_dir, self.id);
        let bytes = match std::fs::read(&ipath) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err("no .idx (pack not sealed yet, or its index was lost)".into())
            }
            Err(e) => return Err(format!("cannot read {}: {e}", ipath.display())),
        };
        let idx = PackIndex::decode(&bytes)
            .map_err(|e| format!("{} is damaged: {e}", ipath.display()))?;
        if idx.pack_id != self.id {
            return Err(format!("{} names pack {}", ipath.display(), idx.pack_id));
        }
        let mut map = HashMap::with_capacity(idx.entries.len());
        for e in &idx.entries {
            let end = e
                .offset
                .checked_add(RECORD_HEADER_LEN as u64 + u64::from(e.stored_len));
            if e.offset < PACK_HEADER_LEN as u64 || end.is_none_or(|end| end > len) {
                return Err(format!(
                    "{} has an entry outside the pack: {e:?}",
                    ipath.display()
                ));
            }
            map.insert(
                e.chunk_id,
                Loc {
                    offset: e.offset,
                    raw_len: e.raw_len,
                    stored_len: e.stored_len,
                },
            );
        }
        // [GC-6]: GC replaces a pack and its index by two renames; a reader that opened the pack
        // on one side of them and reads the index from the other must notice. The record the
        // last entry points at must carry that entry's id and lengths.
        if let Some(last) = idx.entries.iter().max_by_key(|e| e.offset) {
            let mut hb = [0u8; RECORD_HEADER_LEN];
            self.file
                .read_exact_at(&mut hb, last.offset)
                .map_err(|e| format!("reading the record at {}: {e}", last.offset))?;
            match RecordHeader::decode(&hb) {
                Ok(h)
                    if h.chunk_id == last.chunk_id
                        && h.raw_len == last.raw_len
                        && h.stored_len == last.stored_len => {}
                _ => {
                    return Err(format!(
                        "{} does not match the pack (its last entry, at byte {}, is not there)",
                        ipath.display(),
                        last.offset
                    ))
                }
            }
        }
        Ok(map)
    }

    /// Scan from `scanned_to` to the current end, adding valid records (crc checked; the hash is
    /// checked when a chunk is read).
    fn rescan(&self, st: &mut State) -> Result<(), PackError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| PackError::io(&self.path, e))?
            .len();
        if len <= st.scanned_to {
            return Ok(());
        }
        let mut walk = Walk {
            records: Vec::new(),
            problems: Vec::new(),
            torn_at: None,
            first_bad: None,
        };
        let mut w = Walker {
            file: &self.file,
            path: &self.path,
            len,
            verify_hash: false,
        };
        w.walk(st.scanned_to, &mut walk)
            .map_err(|e| PackError::io(&self.path, e))?;
        for r in &walk.records {
            st.map.entry(r.chunk_id).or_insert(Loc {
                offset: r.offset,
                raw_len: r.raw_len,
                stored_len: r.stored_len,
            });
        }
        st.scanned_to = walk.first_bad.unwrap_or(len);
        Ok(())
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}
