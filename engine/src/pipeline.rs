//! The data plane's parallel stages and this process's counters.
//!
//! `Store::write_stream` (in `store`, the layer above) runs the chunker (FastCDC + XXH3)
//! and the dedup lookup on the calling thread and hands every new chunk to a rayon pool that
//! compresses it ([`Compressors`]); the caller appends the results to its pack in stream order,
//! at most `[pipeline] queue_chunks` chunks behind, so reading and chunking, compression on every
//! core, and pack writes overlap, and memory stays bounded (`queue_chunks x max_size`).
//!
//! [`Stats`] counts what this process did (dedup hits, bytes compressed and stored, cache hits);
//! the lease keeper publishes it in the process's lease folder (`stats.json`), where
//! `verfs status` reads it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver};

use verfs_coordination::io_site;

use crate::chunker::{ChunkerError, SharedChunk};
use crate::error::Error;
use crate::ids::ChunkId;
use crate::kinds::LOCK_STATS;
use crate::pack::{ChunkCompressor, Encoding, PackError};

/// Writing a stream into the store failed (`Store::write_stream`, which runs this module's
/// stages). Nothing is committed by a write, so a failure leaves no metadata behind: chunks
/// already appended stay in this process's open pack, unreferenced, for GC; a pack write that
/// failed poisoned the pack writer, which is salvaged ([PACK-6]) before the next write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The store's `[chunker]` parameters are refused by the chunker.
    #[error(transparent)]
    Chunker(#[from] ChunkerError),
    /// Reading the input stream failed. `path` is `<input>` until the caller names the source
    /// ([`WriteError::with_input_path`]); `source` is the chunker's error (the read's kind, with
    /// the byte offset in its message).
    #[error("{}: {source}", path.display())]
    Input {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The compression pool could not be started (its cause as the pool reported it once; the
    /// store keeps that failure for every later write).
    #[error("internal error: {reason}")]
    CompressorPool { reason: String },
    /// Compressing a chunk or appending it to the open pack failed. The message is the one
    /// [`Error`] gives a pack error (corruption and I/O as `path: ...`).
    #[error("{}", PackMessage(.0))]
    Pack(PackError),
    /// Any other failure of the store under the write: journaling a new pack, salvaging a
    /// poisoned one, a dedup lookup.
    #[error(transparent)]
    Store(#[from] Error),
}

impl WriteError {
    /// Name the input a [`WriteError::Input`] is about (a put's host path).
    pub fn with_input_path(self, path: impl Into<std::path::PathBuf>) -> WriteError {
        match self {
            WriteError::Input { source, .. } => WriteError::Input {
                path: path.into(),
                source,
            },
            other => other,
        }
    }

    /// Contention only (see [`Error::is_retryable`]): never a pack, input or chunker failure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WriteError::Store(e) if e.is_retryable())
    }

    /// This process was fenced while writing (see [`Error::is_fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, WriteError::Store(e) if e.is_fenced())
    }
}

/// A pack error's text as [`Error`] gives it (`From<PackError> for Error`): corruption and I/O
/// lead with the path, the rest is the pack error's own message.
struct PackMessage<'a>(&'a PackError);

impl std::fmt::Display for PackMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            PackError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PackError::Corrupt {
                path,
                offset,
                reason,
            } => write!(f, "{}: corrupt at byte {offset}: {reason}", path.display()),
            other => other.fmt(f),
        }
    }
}

impl From<PackError> for WriteError {
    fn from(e: PackError) -> Self {
        WriteError::Pack(e)
    }
}

/// Same message and errno as before the write path had its own error: an input read error is
/// an [`Error::Io`], a pack error what [`Error`] makes of it, the pool's failure internal.
impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Chunker(e) => e.into(),
            WriteError::Input { path, source } => Error::Io { path, source },
            WriteError::CompressorPool { reason } => Error::Internal(reason),
            WriteError::Pack(e) => e.into(),
            WriteError::Store(e) => e,
        }
    }
}

/// Declares [`Stats`] (atomics) and [`StatsSnapshot`] (plain numbers, the JSON body) with the
/// same fields, the copy between them and the sum of snapshots: one list of counters.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// This process's counters (monotonic; relaxed atomics, read for reporting only).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`Stats`] at one moment: the body of `leases/<id>/stats.json`.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl StatsSnapshot {
            /// The sum of several processes' counters.
            pub fn add(&mut self, o: &StatsSnapshot) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

counters! {
    chunks_new,
    chunks_dedup,
    bytes_dedup,
    /// Raw bytes of new chunks.
    bytes_in,
    /// What new chunks took in packs (compressed or raw).
    bytes_stored,
    /// New chunks stored raw because zstd did not shrink them.
    chunks_raw,
    chunk_cache_hits,
    chunk_cache_misses,
    reader_cache_hits,
    reader_cache_misses,
    snapshot_cache_hits,
    snapshot_cache_misses,
    readahead_chunks,
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// A chunk of `len` bytes that was already stored.
    pub fn dedup_hit(&self, len: u32) {
        Stats::add(&self.chunks_dedup, 1);
        Stats::add(&self.bytes_dedup, u64::from(len));
    }
}

/// The file in a lease folder that holds its process's [`StatsSnapshot`].
pub const STATS_FILE: &str = "stats.json";

/// Write `leases/<id>/stats.json` (temp + rename, not synced: the counters are advisory, and a
/// reader ignores a file it cannot parse).
pub fn publish(lease_dir: &std::path::Path, s: &StatsSnapshot) -> std::io::Result<()> {
    let tmp = lease_dir.join(format!("{STATS_FILE}.tmp"));
    let body = serde_json::to_vec(s).map_err(std::io::Error::other)?;
    io_site!("stats.publish-write", std::fs::write(&tmp, body))?;
    io_site!(
        "stats.publish-rename",
        std::fs::rename(&tmp, lease_dir.join(STATS_FILE))
    )
}

/// The counters a live process last published, if it did.
pub fn read_published(lease_dir: &std::path::Path) -> Option<StatsSnapshot> {
    let body = std::fs::read(lease_dir.join(STATS_FILE)).ok()?;
    serde_json::from_slice(&body).ok()
}

/// `STORE/stats.json`: the counters of every process that closed the store cleanly, summed.
pub const STORE_STATS_FILE: &str = "stats.json";

/// Folding this process's counters into `STORE/stats.json` failed ([`fold_into_store`]). Nothing
/// is lost but the counters themselves (they are advisory); `STORE/stats.json` is unchanged or
/// replaced whole, never half written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FoldStatsError {
    /// Opening the lock table or registering as its owner failed.
    #[error(transparent)]
    LockOpen(#[from] verfs_coordination::lock::OpenError),
    /// The DLM lock `stats` was not granted (a wait that timed out is retryable).
    #[error(transparent)]
    Lock(#[from] verfs_coordination::lock::AcquireError),
    /// The counters could not be encoded as JSON.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// Writing the temp file or renaming it over `path` failed.
    #[error("{}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl FoldStatsError {
    /// Contention only: the `stats` lock stayed busy; the same call may be made again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FoldStatsError::Lock(e) if e.is_retryable())
    }
}

/// Add `s` to `STORE/stats.json` (read, add, write a temp, rename), under the DLM lock `stats`
/// in EX so concurrent closers do not lose each other's counts. Advisory: a process that dies
/// first never adds its counts.
pub fn fold_into_store(root: &std::path::Path, s: &StatsSnapshot) -> Result<(), FoldStatsError> {
    use verfs_coordination::lock::{LockTable, Mode, Resource, Wait};
    let t = LockTable::open(&root.join("locks"))?;
    let owner = t.owner()?;
    let res = Resource::Named(LOCK_STATS.into());
    let _g = owner.lock(
        &res,
        Mode::Ex,
        Wait::Timeout(std::time::Duration::from_secs(5)),
    )?;
    let path = root.join(STORE_STATS_FILE);
    let mut total = read_store_stats(root);
    total.add(s);
    let tmp = root.join(format!("{STORE_STATS_FILE}.tmp"));
    let body = serde_json::to_vec(&total)?;
    io_site!("stats.fold-write", std::fs::write(&tmp, body))
        .and_then(|()| io_site!("stats.fold-rename", std::fs::rename(&tmp, &path)))
        .map_err(|source| FoldStatsError::Write { path, source })
}

/// `STORE/stats.json`, or zeros if it is missing or unreadable.
pub fn read_store_stats(root: &std::path::Path) -> StatsSnapshot {
    std::fs::read(root.join(STORE_STATS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The rayon pool that compresses chunks, with one zstd context per pool thread.
pub struct Compressors {
    pool: rayon::ThreadPool,
    level: i32,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors")
            .field("threads", &self.pool.current_num_threads())
            .field("level", &self.level)
            .finish()
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, ChunkCompressor)>> = const { RefCell::new(None) };
}

/// A new chunk ready for its pack: zstd output, or the chunk itself when zstd did not shrink it.
pub struct Compressed {
    pub id: ChunkId,
    pub raw_len: u32,
    pub encoding: Encoding,
    payload: Payload,
}

enum Payload {
    Zstd(Vec<u8>),
    /// Stored raw: the chunker's buffer, no copy.
    Raw(SharedChunk),
}

impl Compressed {
    pub fn stored(&self) -> &[u8] {
        match &self.payload {
            Payload::Zstd(v) => v,
            Payload::Raw(c) => c.data(),
        }
    }
}

/// Compress one chunk with this thread's context (created on first use, per level).
fn compress_here(level: i32, chunk: SharedChunk) -> Result<Compressed, PackError> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, ChunkCompressor::new(level)?));
        }
        let Some((_, comp)) = slot.as_mut() else {
            return Err(PackError::Compress {
                reason: "no zstd context".into(),
            });
        };
        let (id, raw_len) = (chunk.id, chunk.len() as u32);
        let (encoding, zstd) = match comp.compress(chunk.data())? {
            (Encoding::Raw, _) => (Encoding::Raw, None),
            (e, z) => (e, Some(z.to_vec())),
        };
        Ok(Compressed {
            id,
            raw_len,
            encoding,
            payload: zstd.map_or(Payload::Raw(chunk), Payload::Zstd),
        })
    })
}

impl Compressors {
    /// `threads` 0 means one per core.
    pub fn new(threads: usize, level: i32) -> Result<Compressors, String> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("verfs-zstd-{i}"))
            .build()
            .map_err(|e| format!("cannot start the compression threads: {e}"))?;
        Ok(Compressors { pool, level })
    }

    /// Run `f` on the pool (readahead).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        self.pool.spawn(f);
    }

    /// Start compressing `chunk` on the pool; one of at most [`INLINE_MAX`] bytes is
    /// compressed on the calling thread instead.
    pub fn submit(&self, chunk: SharedChunk) -> Pending {
        if chunk.len() <= INLINE_MAX {
            return Pending::Done(compress_here(self.level, chunk));
        }
        let (tx, rx) = sync_channel(1);
        let level = self.level;
        self.pool.spawn(move || {
            // The receiver may be gone (its stream failed): nothing to do then.
            let _ = tx.send(compress_here(level, chunk));
        });
        Pending::OnPool(rx)
    }
}

/// Chunks up to this size are compressed where they are submitted: a small file's one chunk
/// compresses in a few microseconds, less than handing it to a pool thread and back costs, and
/// the callers that write many small files (`put`'s file workers) run in parallel already.
pub const INLINE_MAX: usize = 16 << 10;

/// A chunk being compressed on the pool, or already compressed.
pub enum Pending {
    OnPool(Receiver<Result<Compressed, PackError>>),
    Done(Result<Compressed, PackError>),
}

impl Pending {
    /// Wait for the compressed chunk.
    pub fn wait(self) -> Result<Compressed, PackError> {
        match self {
            Pending::Done(r) => r,
            Pending::OnPool(rx) => rx.recv().unwrap_or_else(|_| {
                Err(PackError::Compress {
                    reason: "a compression thread died".into(),
                })
            }),
        }
    }
}

/// Chunks in flight in stream order, at most a fixed number.
pub struct Window {
    jobs: VecDeque<(ChunkId, Pending)>,
    depth: usize,
}

impl Window {
    pub fn new(depth: usize) -> Window {
        Window {
            jobs: VecDeque::new(),
            depth: depth.max(1),
        }
    }
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.jobs.iter().any(|(j, _)| j == id)
    }
    pub fn push(&mut self, id: ChunkId, p: Pending) {
        self.jobs.push_back((id, p));
    }
    /// The oldest job, if the window is over its depth (or `all`).
    pub fn pop_ready(&mut self, all: bool) -> Option<Pending> {
        if all || self.jobs.len() > self.depth {
            self.jobs.pop_front().map(|(_, p)| p)
        } else {
            None
        }
    }
}
