//! The shared transaction log: every metadata change of every process, serializable by construction.
//!
//! Owns [`TxLog`] (open, catch-up, read, commit, group commit, checkpoint) and the types callers
//! name ([`Lsn`], [`StateMachine`], [`LogConfig`]); the byte formats are in its parts: `segment`
//! (segment files, headers, listing), `record` (one log record, the torn-tail rules and the block
//! reads of a catch-up), `checkpoint` (checkpoint files and the log position they record), `view`
//! (the materialized view and the re-entry guard), `iocount` (the counted reads behind
//! [`TxLog::io_stats`]) and `error`. Does not own what payloads mean (the [`StateMachine`]) nor who may commit: fencing is
//! the `fence` callback the caller passes (a lease check in verfs), so this module
//! imports nothing from the rest of the crate but `fsutil` and `io_site!`.
//!
//! Overview: a [`TxLog`] is one process's handle on `STORE/log/` (segment files) and
//! `STORE/checkpoints/`. It keeps a materialized view `S: StateMachine` of the whole state. A writer
//! calls [`TxLog::commit`] with a closure: the closure runs under the log's exclusive lock against a
//! view that has just been brought up to the log head, so whatever it validates (a name is free, an
//! inode exists) is still true when its record is appended. The lock is held for the catch-up, the
//! closure and one `pwrite`, never for an fsync; durability comes afterwards from a group commit
//! ([`TxLog::sync_to`]) that lets every thread waiting at that moment share one `fdatasync`.
//! Readers ([`TxLog::read`]) never take the log lock: they compare the segment's size with their
//! read position, apply any new complete records, and answer.
//!
//! Byte formats, how a segment is read and where an open starts reading, the commit steps and their
//! commit point: `data-layout.md`, sections "Log segment", "Checkpoint" and "Commit" (6.2). Fencing: the `fence` callback given to [`TxLog::open`] is checked under the
//! lock right before the append, so a process whose lease was claimed by a cleaner can never append.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::fsutil;
use crate::io_site;

mod checkpoint;
mod error;
mod iocount;
mod record;
mod segment;
mod view;

pub use checkpoint::{
    decode_checkpoint, decode_checkpoint_file, encode_checkpoint_file, list_checkpoints,
    Checkpoint, LogPosition,
};
pub use error::{CommitError, LogError};
pub use iocount::IoStats;
pub use record::{encode_record, read_record_at, RecordAt};
pub use segment::{create, encode_segment_header, list_segments};

use checkpoint::checkpoint_name;
use error::io_err;
use iocount::IoCounters;
use record::{decode_at, Block, Decoded};
use segment::{decode_segment_header, segment_name};
use view::{InView, View, ViewWriteGuard};

/// Log sequence number: the 1-based index of a transaction record in the log. `Lsn(0)` is the
/// empty log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The state a log materializes. The log knows nothing about what the payloads mean.
///
/// A state may keep most of itself outside memory (verfs keeps its metadata in page files): a
/// checkpoint then persists what its body references before the body is written
/// ([`StateMachine::encode_checkpoint`]), and a state that has grown since the checkpoint it was
/// built on can move onto a newer one ([`StateMachine::checkpointed`]) instead of holding every
/// change since.
pub trait StateMachine: Clone + Send + Sync + 'static {
    /// What building a state needs besides the log and checkpoint bytes (verfs: its page store).
    type Ctx: Clone + Send + Sync + 'static;
    /// The state of an empty log.
    fn empty(ctx: &Self::Ctx) -> Self;
    /// Apply one committed record. An error means the payload does not decode (corruption) or
    /// what the state reads to apply it cannot be read; the record counts as not applied and is
    /// applied again on the next attempt, so applying must be idempotent.
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String>;
    /// Serialize the state at `lsn` into a checkpoint body, first making durable whatever the
    /// body refers to. Runs on a clone of the view, off every lock.
    fn encode_checkpoint(&self, lsn: Lsn) -> Result<Vec<u8>, String>;
    /// Inverse of [`StateMachine::encode_checkpoint`]: the state at `lsn`.
    fn decode_checkpoint(ctx: &Self::Ctx, lsn: Lsn, bytes: &[u8]) -> Result<Self, String>
    where
        Self: Sized;
    /// The checkpoint at `lsn` (at or before this state's lsn) with `body` is published: the
    /// state may rest on it and drop what it holds for records up to `lsn`. The default keeps
    /// everything.
    fn checkpointed(&mut self, _lsn: Lsn, _body: &[u8]) -> Result<(), String> {
        Ok(())
    }
    /// Has the state grown enough since its checkpoint that moving onto a newer checkpoint
    /// ([`StateMachine::checkpointed`]) is worth a listing of the checkpoint directory?
    fn wants_rebase(&self) -> bool {
        false
    }
}

/// Tunables of the log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment is closed and a new one started once it grows past this many bytes.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
        }
    }
}

pub const SEGMENT_MAGIC: &[u8; 8] = b"VERFSLG1";
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"VERFSCK1";
pub const RECORD_MAGIC: &[u8; 4] = b"VLOG";
/// Version of the segment header (records are framed by it too).
pub const LOG_VERSION: u32 = 1;
/// Version of the checkpoint header, separate from [`LOG_VERSION`]: version 2 added the log
/// position (segments did not change). Version 1 files are refused by name.
pub const CHECKPOINT_VERSION: u32 = 2;
pub const SEGMENT_HEADER_LEN: u64 = 24;
pub const RECORD_HEADER_LEN: u64 = 24;
pub const CHECKPOINT_HEADER_LEN: u64 = 64;
/// Largest payload a record may carry; anything larger in a header is corruption.
pub const MAX_PAYLOAD: u64 = 1 << 30;

const TYPE_TXN: u8 = 1;
const TYPE_SEGMENT_END: u8 = 2;

/// One process's handle on the shared log. `Send + Sync`: share it between threads with `Arc`.
pub struct TxLog<S: StateMachine> {
    dir: PathBuf,
    ckpt_dir: PathBuf,
    cfg: LogConfig,
    /// The log lock file; the mutex serializes this process's threads, flock the processes.
    lock: Mutex<File>,
    lock_path: PathBuf,
    view: RwLock<View<S>>,
    /// `view.lsn`, published whenever a write guard on the view is dropped, so that
    /// [`TxLog::applied_lsn`] takes no lock.
    applied: AtomicU64,
    /// Group commit: highest lsn known durable in this process.
    durable: Mutex<Lsn>,
    #[allow(clippy::type_complexity)]
    fence: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Reads and stats of the log by this handle ([`TxLog::io_stats`]).
    io: Arc<IoCounters>,
    /// What the state needs to be built ([`StateMachine::Ctx`]).
    ctx: S::Ctx,
    /// The lsn of the newest checkpoint this handle has seen (listed, written or adopted):
    /// [`TxLog::rebase`] lists the directory again only when the state asks.
    newest_ckpt: AtomicU64,
    /// The log is on a local filesystem ([`fscheck::is_local`]): the lock cannot be lost while
    /// this process lives, so a failed append may be cut back ([LOG-10]).
    local: bool,
}

/// Outcome of reading records from the view's position.
enum CatchUp {
    /// Reached the end of what is visible.
    Done,
    /// Stopped at a torn or in-flight record at this offset (only meaningful under the lock).
    Torn(u64),
}

/// Outcome of reading one segment's records ([`CatchUp`], or on into the next segment).
enum SegmentPass {
    Done,
    Torn(u64),
    /// Passed a segment-end record: the view is at the start of the next segment.
    Next,
}

impl<S: StateMachine> TxLog<S> {
    /// Open the log of a store: load the newest valid checkpoint and replay the log from the
    /// position it records, up to the head. A handful of reads whatever the log's length: the
    /// records the checkpoint covers are not read (only the last one, to check the position).
    ///
    /// `fence` is called under the log lock before every append; an `Err` refuses the append
    /// ([`LogError::Fenced`]). Read-only: opening changes nothing on disk.
    pub fn open(
        log_dir: &Path,
        ckpt_dir: &Path,
        cfg: LogConfig,
        fence: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
        ctx: S::Ctx,
    ) -> Result<TxLog<S>, LogError> {
        let lock_path = log_dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // A concurrent log truncation may delete the segment we are about to open; retry from the
        // newer checkpoint it published first.
        let io = Arc::new(IoCounters::default());
        let mut attempts = 0;
        let view = loop {
            match Self::load_view(log_dir, ckpt_dir, &io, &ctx) {
                Ok(v) => break v,
                Err(LogError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempts < 5 =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let log = TxLog {
            dir: log_dir.to_path_buf(),
            ckpt_dir: ckpt_dir.to_path_buf(),
            cfg,
            lock: Mutex::new(lock),
            lock_path,
            durable: Mutex::new(Lsn(0)),
            applied: AtomicU64::new(view.lsn.0),
            view: RwLock::new(view),
            fence,
            io,
            newest_ckpt: AtomicU64::new(0),
            local: crate::fscheck::is_local(log_dir),
            ctx,
        };
        Ok(log)
    }

    /// The view at the log head: the newest checkpoint's state, caught up from the position it
    /// records ([CKPT-4]), or the empty state caught up from the log's first record.
    fn load_view(
        log_dir: &Path,
        ckpt_dir: &Path,
        io: &Arc<IoCounters>,
        ctx: &S::Ctx,
    ) -> Result<View<S>, LogError> {
        let (state, base, at, ckpt) = match Self::load_checkpoint(ckpt_dir, io, ctx)? {
            Some((state, c, path)) => (state, c.lsn, c.at, Some(path)),
            None => (
                S::empty(ctx),
                Lsn(0),
                LogPosition::segment_start(Self::first_segment(log_dir, io)?),
                None,
            ),
        };
        let mut path = log_dir.join(segment_name(at.segment));
        let mut at = at;
        let f = match File::open(&path) {
            Ok(f) => f,
            // The position was the end of its segment and a log truncation has deleted that
            // segment since (it held only records up to `base`): the log continues at the start
            // of the segment after it. NotFound otherwise, which `open` retries.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let next = LogPosition::segment_start(Lsn(base.0.saturating_add(1)));
                let next_path = log_dir.join(segment_name(next.segment));
                if next.segment == at.segment || !next_path.exists() {
                    return Err(io_err(&path)(e));
                }
                at = next;
                path = next_path;
                File::open(&path).map_err(io_err(&path))?
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        io.read_exact_at(&f, &mut h, 0)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => LogError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: "segment header truncated".into(),
                },
                _ => io_err(&path)(e),
            })?;
        let hdr_first = decode_segment_header(&path, &h)?;
        if hdr_first != at.segment {
            return Err(LogError::Corrupt {
                path,
                offset: 12,
                reason: format!(
                    "header says first lsn {hdr_first}, name says {}",
                    at.segment
                ),
            });
        }
        // Lsns start at 1: a segment claiming to start at 0 (name and header agreeing) is damage,
        // and would make the lsn before it underflow.
        if at.segment.0 == 0 {
            return Err(LogError::Corrupt {
                path,
                offset: 12,
                reason: "segment starts at lsn 0; lsns start at 1".into(),
            });
        }
        let len = io.len(&f).map_err(io_err(&path))?;
        let mut view = View {
            state,
            lsn: base,
            seg: Arc::new(f),
            seg_path: path,
            seg_first: at.segment,
            offset: at.offset,
            last_record: at.last_record,
            writer: None,
            io: io.clone(),
        };
        if at.offset > len {
            return Err(Self::position_mismatch(
                &view,
                ckpt.as_deref(),
                format!("that segment is only {len} bytes long"),
            ));
        }
        // One block from the checkpoint's own record on: it proves the position, and the
        // catch-up goes on from the same bytes.
        let from = at.last_record.unwrap_or(at.offset);
        let block = Block::read(&view.seg, io, from, len, 0).map_err(io_err(&view.seg_path))?;
        if let Some(r) = at.last_record {
            Self::check_checkpoint_record(&view, ckpt.as_deref(), &block, r)?;
        }
        Self::catch_up_from(&mut view, Some(block))?;
        Ok(view)
    }

    /// No checkpoint yet: the segment that holds lsn 1 (the last whose first lsn is at most 1).
    fn first_segment(log_dir: &Path, io: &IoCounters) -> Result<Lsn, LogError> {
        io.count_dir_list();
        let segs = list_segments(log_dir)?;
        segs.iter()
            .rev()
            .find(|(first, _)| first.0 <= 1)
            .map(|(first, _)| *first)
            .ok_or_else(|| LogError::Corrupt {
                path: log_dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "no log segment covers lsn 1 (no checkpoint); segments: {:?}",
                    segs.iter().map(|s| s.0 .0).collect::<Vec<_>>()
                ),
            })
    }

    /// [CKPT-4]: the record at byte `r` of the view's segment must be the transaction record of
    /// the checkpoint's lsn and end at the position. Anything else means the position is wrong
    /// (or the segment is not the one it was taken in), and reading on from it would misread.
    fn check_checkpoint_record(
        view: &View<S>,
        ckpt: Option<&Path>,
        block: &Block,
        r: u64,
    ) -> Result<(), LogError> {
        let seg_err = io_err(&view.seg_path);
        let mut found = decode_at(&block.window(&view.seg, &view.io), r).map_err(seg_err)?;
        if let Decoded::Need(n) = found {
            // The checkpoint's record is larger than a block.
            let big = Block::read(&view.seg, &view.io, r, block.file_len, n)
                .map_err(io_err(&view.seg_path))?;
            found =
                decode_at(&big.window(&view.seg, &view.io), r).map_err(io_err(&view.seg_path))?;
        }
        let what = match found {
            Decoded::Valid {
                kind: TYPE_TXN,
                lsn,
                len,
            } if lsn == view.lsn => {
                if r.checked_add(len) == Some(view.offset) {
                    return Ok(());
                }
                format!("record {lsn} there ends at byte {}", r.saturating_add(len))
            }
            Decoded::Valid {
                kind: TYPE_TXN,
                lsn,
                ..
            } => format!("record {lsn} is there"),
            Decoded::Valid { .. } => "a segment-end record is there".into(),
            Decoded::End => "the segment ends there".into(),
            Decoded::Short | Decoded::ZeroTail => "a torn record is there".into(),
            Decoded::Bad(reason) => format!("no record is there ({reason})"),
            Decoded::Need(_) => "the record there could not be read whole".into(),
        };
        Err(Self::position_mismatch(view, ckpt, what))
    }

    /// The error for a checkpoint whose log position does not match the log: blamed on the
    /// checkpoint file (its position field), naming the segment.
    fn position_mismatch(view: &View<S>, ckpt: Option<&Path>, what: String) -> LogError {
        let record = view
            .last_record
            .map(|r| format!(" after its record {} at byte {r}", view.lsn))
            .unwrap_or_default();
        LogError::Corrupt {
            path: ckpt.map_or_else(|| view.seg_path.clone(), Path::to_path_buf),
            offset: 40,
            reason: format!(
                "checkpoint at lsn {} says the log continues at byte {} of {}{record}, but {what}",
                view.lsn,
                view.offset,
                view.seg_path.display()
            ),
        }
    }

    fn load_checkpoint(
        ckpt_dir: &Path,
        io: &IoCounters,
        ctx: &S::Ctx,
    ) -> Result<Option<(S, Checkpoint, PathBuf)>, LogError> {
        io.count_dir_list();
        let ckpts = list_checkpoints(ckpt_dir)?;
        let Some((lsn, path)) = ckpts.last() else {
            return Ok(None);
        };
        // Only the newest checkpoint is trusted: older segments may already be gone, so falling
        // back to an older one could silently skip transactions.
        // One stat and one read of the whole file: `fs::read` would add a read at the end of
        // the file to find it, a round trip on a network filesystem (checkpoint files are never
        // changed once renamed into place).
        let f = File::open(path).map_err(io_err(path))?;
        let mut bytes = vec![0u8; io.len(&f).map_err(io_err(path))? as usize];
        io.read_exact_at(&f, &mut bytes, 0).map_err(io_err(path))?;
        let c = decode_checkpoint(path, &bytes)?;
        if c.lsn != *lsn {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 16,
                reason: format!("header says lsn {}, name says {lsn}", c.lsn),
            });
        }
        let state =
            S::decode_checkpoint(ctx, c.lsn, &c.body).map_err(|reason| LogError::Corrupt {
                path: path.clone(),
                offset: CHECKPOINT_HEADER_LEN,
                reason,
            })?;
        Ok(Some((state, c, path.clone())))
    }

    /// [LOG-10]: a valid record whose lsn the view already has (a transaction at or below its
    /// lsn, a segment end below it) was appended late by a writer that had lost the log lock; it
    /// is skipped. The first record of an lsn is the one that counts.
    fn is_void(view: &View<S>, kind: u8, lsn: Lsn) -> bool {
        if kind == TYPE_TXN {
            lsn.0 <= view.lsn.0
        } else {
            lsn.0 < view.lsn.0
        }
    }

    fn check_next(view: &View<S>, lsn: Lsn) -> Result<(), LogError> {
        // Checked: lsns on disk are untrusted, and u64::MAX has no successor.
        let expected = view.lsn.0.checked_add(1);
        if Some(lsn.0) != expected {
            return Err(LogError::Corrupt {
                path: view.seg_path.clone(),
                offset: view.offset,
                reason: format!(
                    "record lsn {lsn} where {} was expected",
                    expected.map_or("none".to_string(), |e| e.to_string())
                ),
            });
        }
        Ok(())
    }

    fn next_segment(view: &mut View<S>, payload: &[u8]) -> Result<(), LogError> {
        let next = payload
            .get(0..8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Lsn(u64::from_le_bytes(a))
            })
            .ok_or_else(|| LogError::Corrupt {
                path: view.seg_path.clone(),
                offset: view.offset,
                reason: "segment-end record without next lsn".into(),
            })?;
        let expected = view.lsn.0.checked_add(1);
        if Some(next.0) != expected {
            return Err(LogError::Corrupt {
                path: view.seg_path.clone(),
                offset: view.offset,
                reason: format!(
                    "segment-end points at lsn {next}, expected {}",
                    expected.map_or("none".to_string(), |e| e.to_string())
                ),
            });
        }
        let dir = fsutil::parent_of(&view.seg_path);
        let path = dir.join(segment_name(next));
        let f = File::open(&path).map_err(io_err(&path))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        view.io
            .read_exact_at(&f, &mut h, 0)
            .map_err(io_err(&path))?;
        let first = decode_segment_header(&path, &h)?;
        if first != next {
            return Err(LogError::Corrupt {
                path,
                offset: 12,
                reason: format!("first lsn {first}, expected {next}"),
            });
        }
        view.seg = Arc::new(f);
        view.seg_path = path;
        view.seg_first = next;
        view.offset = SEGMENT_HEADER_LEN;
        view.last_record = None;
        Ok(())
    }

    /// Apply every complete record past the view's position, as far as each segment reached
    /// when the pass came to it.
    fn catch_up(view: &mut View<S>) -> Result<CatchUp, LogError> {
        Self::catch_up_from(view, None)
    }

    /// [`TxLog::catch_up`] starting from `block`, bytes of the view's segment already read.
    /// One `fstat` per segment for its visible length, then one `pread` per [`record::READ_BLOCK`]
    /// (a record larger than that takes one more), every complete record in a block decoded
    /// from memory.
    fn catch_up_from(view: &mut View<S>, mut block: Option<Block>) -> Result<CatchUp, LogError> {
        loop {
            let len = match &block {
                Some(b) => b.file_len,
                None => view.io.len(&view.seg).map_err(io_err(&view.seg_path))?,
            };
            match Self::catch_up_segment(view, len, block.take())? {
                SegmentPass::Done => return Ok(CatchUp::Done),
                SegmentPass::Torn(offset) => return Ok(CatchUp::Torn(offset)),
                SegmentPass::Next => {}
            }
        }
    }

    /// Apply the records of the view's segment from its position up to `file_len`, moving into the
    /// next segment at a segment-end record.
    fn catch_up_segment(
        view: &mut View<S>,
        file_len: u64,
        mut block: Option<Block>,
    ) -> Result<SegmentPass, LogError> {
        // Owned handles, so that the bytes read do not borrow the view they are applied to.
        let seg = view.seg.clone();
        let io = view.io.clone();
        let mut need = 0;
        loop {
            let b = match block.take() {
                Some(b) => b,
                None => Block::read(&seg, &io, view.offset, file_len, need)
                    .map_err(io_err(&view.seg_path))?,
            };
            let w = b.window(&seg, &io);
            loop {
                let at = view.offset;
                match decode_at(&w, at).map_err(io_err(&view.seg_path))? {
                    Decoded::End => return Ok(SegmentPass::Done),
                    // An incomplete tail record is either being written right now or was left by
                    // a dead writer; either way it is not committed yet, so a reader stops before it.
                    Decoded::Short | Decoded::ZeroTail => return Ok(SegmentPass::Torn(at)),
                    Decoded::Bad(reason) => {
                        return Err(LogError::Corrupt {
                            path: view.seg_path.clone(),
                            offset: at,
                            reason,
                        })
                    }
                    Decoded::Need(n) => {
                        need = n;
                        break;
                    }
                    Decoded::Valid { kind, lsn, len } => {
                        let payload = w
                            .get(at + RECORD_HEADER_LEN, len - RECORD_HEADER_LEN)
                            .unwrap_or_default();
                        if Self::is_void(view, kind, lsn) {
                            // A late append of a writer that lost the lock ([LOG-10]).
                            tracing::warn!(
                                segment = %view.seg_path.display(),
                                offset = at,
                                %lsn,
                                "skipping a void log record (written by a process that had lost the log lock)"
                            );
                            view.offset = at + len;
                            continue;
                        }
                        if kind != TYPE_TXN {
                            Self::next_segment(view, payload)?;
                            return Ok(SegmentPass::Next);
                        }
                        Self::check_next(view, lsn)?;
                        view.state
                            .apply(lsn, payload)
                            .map_err(|reason| LogError::Corrupt {
                                path: view.seg_path.clone(),
                                offset: at,
                                reason: format!("record {lsn} does not decode: {reason}"),
                            })?;
                        view.lsn = lsn;
                        view.last_record = Some(at);
                        view.offset = at + len;
                    }
                }
            }
        }
    }

    /// Bring the view up to the log head. Readers call this implicitly through [`TxLog::read`].
    pub fn refresh(&self) -> Result<Lsn, LogError> {
        let mut view = self.write_view();
        Self::catch_up(&mut view)?;
        Ok(view.lsn)
    }

    fn write_view(&self) -> ViewWriteGuard<'_, S> {
        ViewWriteGuard {
            guard: self.view.write().unwrap_or_else(|p| p.into_inner()),
            applied: &self.applied,
        }
    }

    fn read_view(&self) -> RwLockReadGuard<'_, View<S>> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` against a view that is at least as new as the log head at the time of the call.
    /// Never takes the log lock and never waits for another process.
    ///
    /// `f` gets the state and its lsn: everything it may use. It must not call back into this
    /// log (that is refused with [`LogError::Reentered`] rather than left to deadlock).
    pub fn read<R>(&self, f: impl FnOnce(&S, Lsn) -> R) -> Result<R, LogError> {
        let _inside = InView::enter("read")?;
        {
            let view = self.read_view();
            let len = view.io.len(&view.seg).map_err(io_err(&view.seg_path))?;
            if len == view.offset {
                return Ok(f(&view.state, view.lsn));
            }
        }
        let mut view = self.write_view();
        Self::catch_up(&mut view)?;
        Ok(f(&view.state, view.lsn))
    }

    /// How many reads, stats and directory listings this handle has made of the log so far, its
    /// open included.
    pub fn io_stats(&self) -> IoStats {
        self.io.snapshot()
    }

    /// The last lsn this process has applied (no refresh, no lock: safe from anywhere).
    pub fn applied_lsn(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::Acquire))
    }

    fn lock_log(&self) -> Result<MutexGuard<'_, File>, LogError> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        guard.lock().map_err(io_err(&self.lock_path))?;
        Ok(guard)
    }

    /// Run `f` while holding the log lock, with the view at the log head. Used for actions that
    /// must be serialized with every commit, such as claiming a dead process's lease (fencing).
    pub fn exclusive<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R, LogError> {
        let _inside = InView::enter("exclusive")?;
        let guard = self.lock_log()?;
        let res = (|| {
            let mut view = self.write_view();
            self.catch_up_locked(&mut view)?;
            Ok(f(&view.state))
        })();
        let _ = guard.unlock();
        res
    }

    /// Catch up under the lock, cutting a torn tail left by a dead writer, and repairing a
    /// rollover that died between creating the next segment and writing the segment-end record.
    fn catch_up_locked(&self, view: &mut View<S>) -> Result<(), LogError> {
        if let CatchUp::Torn(offset) = Self::catch_up(view)? {
            // A torn record can only be a dead writer's in the *last* segment. Inside a closed one
            // it means the segment was truncated: cutting it and appending here would fork the
            // log from the later segments, silently hiding their records. Refuse instead.
            let name = view.seg_path.file_name().map(|n| n.to_os_string());
            let later: Vec<PathBuf> = list_segments(&self.dir)?
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| p.file_name().map(|n| n.to_os_string()) > name)
                .collect();
            // Except an interrupted roll whose segment-end record a power loss tore (8, case
            // L3): the records before it were synced before the next segment was created, and
            // that segment is the only later one and holds no record yet. Cut the torn record;
            // the roll is finished below.
            let next = self.dir.join(segment_name(Lsn(view.lsn.0 + 1)));
            let torn_roll = later.len() == 1
                && later[0] == next
                && fs::metadata(&next).is_ok_and(|m| m.len() <= SEGMENT_HEADER_LEN);
            if !later.is_empty() && !torn_roll {
                return Err(LogError::Corrupt {
                    path: view.seg_path.clone(),
                    offset,
                    reason: "torn record inside a closed segment (later segments exist): the segment was truncated"
                        .into(),
                });
            }
            // We hold the lock, so no live writer is mid-append: the tail is a dead writer's.
            let f = OpenOptions::new()
                .write(true)
                .open(&view.seg_path)
                .map_err(io_err(&view.seg_path))?;
            io_site!("txlog.torn-truncate", f.set_len(offset)).map_err(io_err(&view.seg_path))?;
            io_site!("txlog.torn-fsync", f.sync_all()).map_err(io_err(&view.seg_path))?;
            view.seg = Arc::new(File::open(&view.seg_path).map_err(io_err(&view.seg_path))?);
        }
        let next = self.dir.join(segment_name(Lsn(view.lsn.0 + 1)));
        let next_exists = next != view.seg_path && next.exists();
        if next_exists {
            Self::complete_torn_segment_header(&next, Lsn(view.lsn.0 + 1))?;
            self.write_segment_end(view)?;
            Self::catch_up(view)?;
        }
        Ok(())
    }

    /// Before finishing an interrupted roll (8, case L3): a power loss before the new segment's
    /// fsync can leave it shorter than its header, or with a prefix of its header followed by
    /// zeros (its name reached the disk, its data did not). It holds no record yet, so write the
    /// header it was meant to have; any other damage is left for the reader to report.
    fn complete_torn_segment_header(path: &Path, first: Lsn) -> Result<(), LogError> {
        let b = fs::read(path).map_err(io_err(path))?;
        let full = encode_segment_header(first);
        let k = b
            .iter()
            .zip(full.iter())
            .take_while(|(a, c)| a == c)
            .count();
        let torn = b.len() <= full.len() && b[..] != full[..] && b[k..].iter().all(|&x| x == 0);
        if torn {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.write_all_at(&full, 0).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        Ok(())
    }

    fn write_segment_end(&self, view: &mut View<S>) -> Result<(), LogError> {
        let next = Lsn(view.lsn.0 + 1);
        let rec = encode_record(TYPE_SEGMENT_END, view.lsn, &next.0.to_le_bytes());
        let f = OpenOptions::new()
            .append(true)
            .open(&view.seg_path)
            .map_err(io_err(&view.seg_path))?;
        io_site!("txlog.segment-end-write", f.write_all_at(&rec, view.offset))
            .map_err(io_err(&view.seg_path))?;
        Self::check_landed(view, &rec)?;
        io_site!("txlog.segment-end-fsync", f.sync_data()).map_err(io_err(&view.seg_path))?;
        Ok(())
    }

    /// Commit one transaction.
    ///
    /// `f` runs under the log lock against the up-to-date state and returns the record payload
    /// (or refuses with its own error). The record is appended and applied to this process's view;
    /// the call returns its lsn once it is visible to every process. It is durable only after
    /// [`TxLog::sync_to`] returns for that lsn (or use [`TxLog::commit_durable`]).
    ///
    /// On any error nothing was appended: a failed write is cut back before the lock is released.
    pub fn commit<T, E>(
        &self,
        f: impl FnOnce(&S) -> Result<(Vec<u8>, T), E>,
    ) -> Result<(Lsn, T), CommitError<E>> {
        let _inside = InView::enter("commit")?;
        let guard = self.lock_log()?;
        let res = self.commit_locked(f);
        let _ = guard.unlock();
        res
    }

    fn commit_locked<T, E>(
        &self,
        f: impl FnOnce(&S) -> Result<(Vec<u8>, T), E>,
    ) -> Result<(Lsn, T), CommitError<E>> {
        let mut view = self.write_view();
        self.catch_up_locked(&mut view)?;
        let (payload, out) = f(&view.state).map_err(CommitError::Rejected)?;
        (self.fence)().map_err(LogError::Fenced)?;
        let lsn = Lsn(view.lsn.0 + 1);
        let rec = encode_record(TYPE_TXN, lsn, &payload);
        let wf = match &view.writer {
            Some((p, f)) if *p == view.seg_path => f.clone(),
            _ => {
                // O_APPEND ([LOG-10]): a write that arrives after this process lost the lock (held
                // up by a partition) lands after the records written meanwhile, never on them;
                // on Linux the offset of `pwrite` is then ignored.
                let f = Arc::new(
                    OpenOptions::new()
                        .append(true)
                        .open(&view.seg_path)
                        .map_err(io_err(&view.seg_path))?,
                );
                view.writer = Some((view.seg_path.clone(), f.clone()));
                f
            }
        };
        if let Err(e) = io_site!("txlog.append-write", wf.write_all_at(&rec, view.offset)) {
            // ENOSPC or EIO mid-record: cut it so the next reader does not see a torn record.
            // Only where the lock cannot have been lost meanwhile: on a network filesystem the
            // cut could remove another writer's records, so the next lock holder cuts the torn
            // tail after reading up to it.
            if self.local {
                let _ = io_site!("txlog.append-cut", wf.set_len(view.offset));
            }
            return Err(io_err(&view.seg_path)(e).into());
        }
        Self::check_landed(&view, &rec)?;
        view.state
            .apply(lsn, &payload)
            .map_err(|reason| LogError::Corrupt {
                path: view.seg_path.clone(),
                offset: view.offset,
                reason: format!("own record {lsn} does not apply: {reason}"),
            })?;
        view.lsn = lsn;
        view.last_record = Some(view.offset);
        view.offset += rec.len() as u64;
        if view.offset >= self.cfg.segment_bytes {
            self.roll_segment(&mut view)?;
        }
        Ok((lsn, out))
    }

    /// [LOG-10]: the record just appended must be the first record at the offset where the log
    /// ended under the lock; else another writer appended first and ours is void.
    fn check_landed(view: &View<S>, rec: &[u8]) -> Result<(), LogError> {
        let mut back = vec![0u8; rec.len()];
        let landed = match view.seg.read_exact_at(&mut back, view.offset) {
            Ok(()) => back == rec,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(io_err(&view.seg_path)(e)),
        };
        if landed {
            Ok(())
        } else {
            Err(LogError::LostLock {
                path: view.seg_path.clone(),
                offset: view.offset,
            })
        }
    }

    /// Start a new segment. The old one is synced first so that group commit only ever has to
    /// sync the segment that is current when it runs.
    fn roll_segment(&self, view: &mut View<S>) -> Result<(), LogError> {
        io_site!("txlog.roll-fsync-old", view.seg.sync_data()).map_err(io_err(&view.seg_path))?;
        let next = Lsn(view.lsn.0 + 1);
        let path = self.dir.join(segment_name(next));
        // The new segment appears with its whole header or not at all (temp + rename): a
        // segment file cut inside its header would make every later open of the log fail.
        fsutil::write_atomic(&path, &encode_segment_header(next)).map_err(io_err(&path))?;
        // Commit point of the rollover: the segment-end record in the old segment.
        self.write_segment_end(view)?;
        Self::catch_up(view)?;
        Ok(())
    }

    /// Make every record up to `lsn` durable. Threads that arrive while a sync runs share it
    /// (group commit): one `fdatasync` covers every record appended before it started.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), LogError> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= lsn {
            return Ok(());
        }
        let (seg, path, head) = {
            let v = self.read_view();
            (v.seg.clone(), v.seg_path.clone(), v.lsn)
        };
        // Records in older segments were synced when their segment was rolled.
        io_site!("txlog.sync", seg.sync_data()).map_err(io_err(&path))?;
        *durable = head.max(lsn);
        Ok(())
    }

    /// [`TxLog::commit`] followed by [`TxLog::sync_to`]: returns once the record is durable.
    pub fn commit_durable<T, E>(
        &self,
        f: impl FnOnce(&S) -> Result<(Vec<u8>, T), E>,
    ) -> Result<(Lsn, T), CommitError<E>> {
        let (lsn, out) = self.commit(f)?;
        self.sync_to(lsn)?;
        Ok((lsn, out))
    }

    /// Write a checkpoint of the current state (at the log head) and return its lsn.
    ///
    /// The checkpoint file is written to a temp name, fsynced and renamed into `checkpoints/`
    /// (commit point: the rename, made durable by the directory fsync). A crash before leaves only
    /// a temp file that recovery removes. Segments are not deleted here: see
    /// [`TxLog::segments_covered_by`] and the two-phase log truncation in the engine.
    pub fn checkpoint(&self) -> Result<Lsn, LogError> {
        self.refresh()?;
        // The view's position is where the log continues after its lsn ([CKPT-3]): after a roll
        // that is the new segment's header end, and the view is there already. The state is
        // cloned so that encoding it (which may write pages) holds no lock.
        let (lsn, at, state) = {
            let v = self.read_view();
            let at = LogPosition {
                segment: v.seg_first,
                offset: v.offset,
                last_record: v.last_record,
            };
            (v.lsn, at, v.state.clone())
        };
        let path = self.ckpt_dir.join(checkpoint_name(lsn));
        if path.exists() {
            return Ok(lsn);
        }
        // The records it covers must be durable before a checkpoint may stand in for them.
        self.sync_to(lsn)?;
        let body = state
            .encode_checkpoint(lsn)
            .map_err(|reason| LogError::Checkpoint {
                path: path.clone(),
                reason,
            })?;
        drop(state);
        fsutil::write_atomic(&path, &encode_checkpoint_file(lsn, at, &body))
            .map_err(io_err(&path))?;
        self.newest_ckpt.fetch_max(lsn.0, Ordering::AcqRel);
        let mut v = self.write_view();
        v.state
            .checkpointed(lsn, &body)
            .map_err(|reason| LogError::Corrupt {
                path: path.clone(),
                offset: CHECKPOINT_HEADER_LEN,
                reason,
            })?;
        Ok(lsn)
    }

    /// If the state asks for it ([`StateMachine::wants_rebase`]) or `force`, move it onto the
    /// newest checkpoint at or before its lsn that is newer than the one it rests on. Returns whether it
    /// moved. A listing of the checkpoint directory and one read of the checkpoint file; nothing
    /// is written.
    pub fn rebase(&self, force: bool) -> Result<bool, LogError> {
        if !force && !self.read_view().state.wants_rebase() {
            return Ok(false);
        }
        let applied = self.applied_lsn();
        let Some((lsn, path)) = list_checkpoints(&self.ckpt_dir)?
            .into_iter()
            .rev()
            .find(|(l, _)| *l <= applied)
        else {
            return Ok(false);
        };
        if !force && lsn.0 <= self.newest_ckpt.load(Ordering::Acquire) {
            return Ok(false);
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Replaced by a newer one and removed meanwhile: the next call finds that one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let c = decode_checkpoint(&path, &bytes)?;
        self.newest_ckpt.fetch_max(lsn.0, Ordering::AcqRel);
        let mut v = self.write_view();
        v.state
            .checkpointed(c.lsn, &c.body)
            .map_err(|reason| LogError::Corrupt {
                path: path.clone(),
                offset: CHECKPOINT_HEADER_LEN,
                reason,
            })?;
        Ok(true)
    }

    /// What this log's state is built with ([`StateMachine::Ctx`]).
    pub fn ctx(&self) -> &S::Ctx {
        &self.ctx
    }

    /// Segments that hold only records at or below `lsn` (so a checkpoint at `lsn` replaces them),
    /// never the segment currently being appended to.
    pub fn segments_covered_by(&self, lsn: Lsn) -> Result<Vec<PathBuf>, LogError> {
        let segs = list_segments(&self.dir)?;
        let mut out = Vec::new();
        for w in segs.windows(2) {
            // Segment w[0] holds lsns [w0.first, w1.first - 1].
            if w[1].0 .0 <= lsn.0 + 1 {
                out.push(w[0].1.clone());
            }
        }
        Ok(out)
    }

    /// Checkpoints older than the newest one.
    pub fn stale_checkpoints(&self) -> Result<Vec<PathBuf>, LogError> {
        let mut c = list_checkpoints(&self.ckpt_dir)?;
        c.pop();
        Ok(c.into_iter().map(|(_, p)| p).collect())
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    pub fn checkpoint_dir(&self) -> &Path {
        &self.ckpt_dir
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
