//! Pack files: where chunk bytes live. Format and rules: `data-layout.md` section 5.7 ([PACK-n] ids; crash cases in 8.1).
//!
//! - [`PackWriter`]: a process's own open pack. Appends records (zstd or raw), dedups within the
//!   pack, [`PackWriter::sync`] makes them durable, [`PackWriter::seal`] writes the `.idx` and ends
//!   the pack's writable life. Only the creating process ever appends ([PACK-5]).
//! - [`PackReader`]: shared, `Send + Sync` random access to one pack by [`ChunkId`], every read
//!   checked (crc, then the chunk hash). Loads the `.idx`, or rebuilds the index by scanning when
//!   the `.idx` is missing or damaged, and rescans an unsealed pack when a chunk is not found yet.
//! - [`scan`] / [`check_index`]: fsck's full verification, reporting each [`Problem`] with path and
//!   byte offset.
//! - [`truncate_torn_tail`] / [`seal_existing`]: what the cleaner of a dead process does with the
//!   pack it was appending to.
//! - [`list_packs`]: what is in `packs/`.
//!
//! ```
//! use verfs_engine::{ids::ChunkId, pack::{PackReader, PackWriter}};
//! let dir = tempfile::tempdir().unwrap();
//! let mut w = PackWriter::create(dir.path(), 3).unwrap();
//! let data = b"some chunk".repeat(100);
//! let id = ChunkId::of(&data);
//! w.append(id, &data).unwrap();
//! let sealed = w.seal().unwrap(); // durable, and indexed
//! let r = PackReader::open(dir.path(), sealed.id).unwrap();
//! assert_eq!(r.read_chunk(id).unwrap(), data);
//! ```

mod reader;
mod record;
mod scan;
mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use verfs_coordination::io_site;

pub use reader::{IndexSource, PackReader};
pub use scan::{check_index, scan, Problem, ProblemKind, ScanReport, ScannedRecord};
pub use writer::{
    ChunkCompressor, CompressedChunk, PackWriter, RecordLoc, SealedPack, WriterStats,
};

use crate::error::Error;
use crate::format::pack::{IndexEntry, PackHeader, PackIndex, PACK_HEADER_LEN};
use crate::ids::{ChunkId, PackId};

pub use crate::format::pack::Encoding;

/// A pack operation failed. Each function says what state a failure leaves behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Bytes on disk break a rule of `data-layout.md` section 5.7; `offset` is where in `path`.
    #[error("corrupt {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("chunk {id} is not in {path}")]
    NotFound { path: PathBuf, id: ChunkId },
    /// The pack ends in an incomplete record ([PACK-7]); [`truncate_torn_tail`] must cut it first.
    #[error("{path} ends in a torn record at byte {offset}; truncate it before sealing")]
    TornTail { path: PathBuf, offset: u64 },
    /// The caller passed something the format cannot hold (a chunk over 16 MiB, bad lengths).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// An earlier write or sync of this writer failed, so what the kernel holds for the pack is
    /// unknown (and after a failed fsync, retrying can falsely succeed); no further appends.
    #[error("pack writer for {path} is unusable after an earlier failure: {cause}")]
    Poisoned { path: PathBuf, cause: String },
    #[error("zstd compression failed: {reason}")]
    Compress { reason: String },
}

impl PackError {
    fn io(path: &Path, source: io::Error) -> PackError {
        PackError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the rest of the engine sees of a pack error (corruption and I/O keep path and offset).
impl From<PackError> for Error {
    fn from(e: PackError) -> Self {
        match e {
            PackError::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path,
                offset,
                reason,
            },
            PackError::Io { path, source } => Error::Io { path, source },
            other => Error::Pack(Box::new(other)),
        }
    }
}

/// `packs_dir/<id>.pack`.
pub fn pack_path(packs_dir: &Path, id: PackId) -> PathBuf {
    packs_dir.join(format!("{id}.pack"))
}

/// `packs_dir/<id>.idx`.
pub fn index_path(packs_dir: &Path, id: PackId) -> PathBuf {
    packs_dir.join(format!("{id}.idx"))
}

/// Parse a pack id from a canonical name stem: exactly 16 lowercase hex digits, so that two
/// spellings of one id ("1" and "0000000000000001") can never name two files.
fn parse_stem(stem: &str) -> Option<PackId> {
    if stem.len() != 16
        || !stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    stem.parse().ok()
}

/// The pack id named by a `.pack` or `.idx` path, if the name is canonical.
pub fn pack_id_of_path(path: &Path) -> Option<PackId> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".pack")
        .or_else(|| name.strip_suffix(".idx"))?;
    parse_stem(stem)
}

/// (device, inode) of a file: whether a pack file is still the one a reader opened, or GC has
/// replaced it since ([GC-6]).
pub use verfs_coordination::fsutil::file_identity;

/// What [`list_packs`] found in `packs/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackListing {
    /// Every `<id>.pack`, sorted.
    pub packs: Vec<PackId>,
    /// `<id>.idx` files whose pack is absent (e.g. GC died between removing the two).
    pub orphan_indexes: Vec<PackId>,
    /// Temp files of `fsutil::write_atomic` (`.<name>.tmp-<pid>-<rand>`); not packs.
    pub temp_files: Vec<PathBuf>,
    /// GC's `<id>.discard` files (`gc.rs`), sorted.
    pub discards: Vec<PackId>,
    /// Staged files of a manifest (`.<name>.mf-<manifest id>`), e.g. a GC rewrite in progress.
    pub manifest_temps: Vec<PathBuf>,
    /// Anything else: names that do not parse. Reported, never touched.
    pub unknown: Vec<PathBuf>,
}

/// List `packs_dir`. Read-only; an error (the directory cannot be read) leaves nothing changed.
pub fn list_packs(packs_dir: &Path) -> Result<PackListing, PackError> {
    let mut out = PackListing::default();
    let mut idx = Vec::new();
    let rd = fs::read_dir(packs_dir).map_err(|e| PackError::io(packs_dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| PackError::io(packs_dir, e))?;
        let path = ent.path();
        let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
            out.unknown.push(path);
            continue;
        };
        if verfs_coordination::fsutil::is_temp_name(&name) {
            out.temp_files.push(path);
        } else if let Some(id) = name.strip_suffix(".pack").and_then(parse_stem) {
            out.packs.push(id);
        } else if let Some(id) = name.strip_suffix(".idx").and_then(parse_stem) {
            idx.push(id);
        } else if let Some(id) = name.strip_suffix(".discard").and_then(parse_stem) {
            out.discards.push(id);
        } else if name.starts_with('.') && name.contains(".mf-") {
            out.manifest_temps.push(path);
        } else {
            out.unknown.push(path);
        }
    }
    out.packs.sort();
    idx.sort();
    out.orphan_indexes = idx
        .into_iter()
        .filter(|i| out.packs.binary_search(i).is_err())
        .collect();
    out.temp_files.sort();
    out.discards.sort();
    out.manifest_temps.sort();
    out.unknown.sort();
    Ok(out)
}

/// Seal a pack whose writer is gone: cut its torn tail ([`truncate_torn_tail`]), then
/// [`seal_existing`]. Returns the length the tail was cut to, if it was. Used by `verfs recover`
/// for a dead process's pack and by a process whose own salvage of a poisoned writer failed.
pub fn seal_abandoned(packs_dir: &Path, id: PackId) -> Result<Option<u64>, PackError> {
    let cut = truncate_torn_tail(&pack_path(packs_dir, id))?;
    seal_existing(packs_dir, id)?;
    Ok(cut)
}

/// Seal a pack whose writer is gone (a dead process's open pack, after [`truncate_torn_tail`], or
/// a pack whose own [`PackWriter::seal`] failed): fsync the pack, then write its `.idx` from a full
/// scan ([PACK-9]). Idempotent: re-running it rewrites the same `.idx`.
///
/// Records that fail their checks are left in place, kept out of the index and returned in
/// [`SealedPack::problems`]: refusing would block recovery forever on one rotten byte, and the
/// scrubber/GC deal with damaged records in sealed packs.
///
/// Errors: `TornTail` (cut it first), `Corrupt` if the pack header is damaged (no `.idx` is
/// written for a file that may not be this pack), `Io`. On error no `.idx` was written, or an
/// earlier one is untouched.
pub fn seal_existing(packs_dir: &Path, id: PackId) -> Result<SealedPack, PackError> {
    let path = pack_path(packs_dir, id);
    let file = fs::File::open(&path).map_err(|e| PackError::io(&path, e))?;
    let report = scan::scan_file(&file, &path, Some(id), true)?;
    if let Some(p) = report.problems.iter().find(|p| p.kind.is_header()) {
        return Err(PackError::Corrupt {
            path,
            offset: p.offset,
            reason: p.reason.clone(),
        });
    }
    if let Some(offset) = report.torn_tail() {
        return Err(PackError::TornTail { path, offset });
    }
    // The dead writer may never have synced its last records; they become durable before the
    // .idx that lists them.
    io_site!("pack.seal-existing-fsync", file.sync_all()).map_err(|e| PackError::io(&path, e))?;
    let entries: Vec<IndexEntry> = report
        .records
        .iter()
        .map(ScannedRecord::index_entry)
        .collect();
    let index = PackIndex::new(id, entries);
    let ipath = index_path(packs_dir, id);
    verfs_coordination::fsutil::write_atomic(&ipath, &index.encode())
        .map_err(|e| PackError::io(&ipath, e))?;
    let (bytes_raw, bytes_stored) = index.entries.iter().fold((0u64, 0u64), |(r, s), e| {
        (r + u64::from(e.raw_len), s + u64::from(e.stored_len))
    });
    Ok(SealedPack {
        id,
        path,
        len: report.file_len,
        records: index.entries.len() as u64,
        bytes_raw,
        bytes_stored,
        dedup_hits: 0,
        problems: report.problems,
    })
}

/// Cut the torn tail of a dead writer's pack ([PACK-7]) and fsync it. Returns the new length, or
/// `None` if the pack ends cleanly (or ends in damage that is not a torn tail, which is never cut:
/// [`seal_existing`] reports it).
///
/// A pack shorter than its header whose bytes are a prefix of the header its name implies (the
/// creator died inside [`PackWriter::create`], so it holds no record) gets its header completed
/// instead, returning `Some(24)`.
///
/// Must only be called when no process is appending to the pack (its writer is dead, as decided
/// by the lease protocol). Errors: `Corrupt` if the header is damaged (nothing is changed); `Io`,
/// after which the file is either unchanged or already cut to the valid prefix (truncation is a
/// single `ftruncate`), possibly not yet durable: re-run it.
pub fn truncate_torn_tail(path: &Path) -> Result<Option<u64>, PackError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| PackError::io(path, e))?;
    let len = file.metadata().map_err(|e| PackError::io(path, e))?.len();
    if len <= PACK_HEADER_LEN as u64 {
        let mut b = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, 0)
            .map_err(|e| PackError::io(path, e))?;
        let id = pack_id_of_path(path);
        let header = id.map(|pack_id| PackHeader { pack_id });
        // Torn inside `create` (a prefix), or zero-filled (wholly or after a prefix) by a power
        // cut before the header's data blocks reached the disk: either way no record was ever
        // appended.
        let torn = header.is_some_and(|h| {
            let full = h.encode();
            let k = b.iter().zip(&full).take_while(|(a, b)| a == b).count();
            h.is_torn_prefix(&b) || (b[..] != full[..] && b[k..].iter().all(|&x| x == 0))
        }) || b.iter().all(|&x| x == 0);
        if let (true, Some(header)) = (torn, header) {
            io_site!(
                "pack.torn-header-write",
                std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)
            )
            .and_then(|()| io_site!("pack.torn-header-fsync", file.sync_all()))
            .map_err(|e| PackError::io(path, e))?;
            return Ok(Some(PACK_HEADER_LEN as u64));
        }
        if len < PACK_HEADER_LEN as u64 {
            return Err(PackError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                reason: format!(
                    "pack is {len} bytes, shorter than its header, and not a torn prefix of it"
                ),
            });
        }
    }
    let report = scan::scan_file(&file, path, pack_id_of_path(path), false)?;
    if let Some(p) = report.problems.iter().find(|p| p.kind.is_header()) {
        return Err(PackError::Corrupt {
            path: path.to_path_buf(),
            offset: p.offset,
            reason: p.reason.clone(),
        });
    }
    let Some(cut) = report.torn_tail() else {
        return Ok(None);
    };
    io_site!("pack.torn-cut-truncate", file.set_len(cut))
        .and_then(|()| io_site!("pack.torn-cut-fsync", file.sync_all()))
        .map_err(|e| PackError::io(path, e))?;
    Ok(Some(cut))
}
