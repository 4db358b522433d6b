//! The shared transaction log: every metadata change of every process, serializable by construction.
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
//! Byte formats, the commit steps and their commit point: `data-layout.md`, sections "Log segment"
//! and "Commit protocol". Fencing: the `fence` callback given to [`TxLog::open`] is checked under the
//! lock right before the append, so a process whose lease was claimed by a cleaner can never append.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::fsutil;
use crate::io_site;

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
pub trait StateMachine: Send + Sync + 'static {
    /// The state of an empty log.
    fn empty() -> Self;
    /// Apply one committed record. An error means the payload does not decode: corruption.
    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), String>;
    /// Serialize the whole state (a checkpoint body).
    fn encode_checkpoint(&self) -> Vec<u8>;
    /// Inverse of [`StateMachine::encode_checkpoint`].
    fn decode_checkpoint(bytes: &[u8]) -> Result<Self, String>
    where
        Self: Sized;
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
pub const LOG_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: u64 = 24;
pub const RECORD_HEADER_LEN: u64 = 24;
pub const CHECKPOINT_HEADER_LEN: u64 = 40;
/// Largest payload a record may carry; anything larger in a header is corruption.
pub const MAX_PAYLOAD: u64 = 1 << 30;

const TYPE_TXN: u8 = 1;
const TYPE_SEGMENT_END: u8 = 2;

/// A failure of the log itself, with the file and byte offset where it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("fenced: {0}")]
    Fenced(String),
    /// A closure given to [`TxLog::read`], [`TxLog::commit`] or [`TxLog::exclusive`] called back
    /// into the same log on the same thread. That would wait for a lock this thread already holds
    /// (the hang `verfs status` had), so it is refused at once: use the state and lsn the closure
    /// was given instead. Always a programming error, never caused by data on disk.
    #[error("log re-entered from inside a {0} closure (use the view the closure was given)")]
    Reentered(&'static str),
}

/// Why a commit did not happen. In every case nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError<E> {
    /// The closure refused the transaction (e.g. the name already exists).
    #[error(transparent)]
    Rejected(E),
    #[error(transparent)]
    Log(#[from] LogError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_name(first: Lsn) -> String {
    format!("{:020}.seg", first.0)
}

fn checkpoint_name(lsn: Lsn) -> String {
    format!("{:020}.ckpt", lsn.0)
}

fn parse_numbered(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Encode a segment header. Layout: `data-layout.md` "Log segment".
pub fn encode_segment_header(first: Lsn) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first.0.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_segment_header(path: &Path, h: &[u8]) -> Result<Lsn, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.into(),
    };
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(corrupt("segment header truncated"));
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(corrupt("bad segment magic"));
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc32fast::hash(&h[0..20]) != crc {
        return Err(corrupt("segment header crc32 mismatch"));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != LOG_VERSION {
        return Err(corrupt(&format!(
            "segment version {version}, this verfs reads {LOG_VERSION}"
        )));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[12..20]);
    Ok(Lsn(u64::from_le_bytes(b)))
}

/// Encode one record (header + payload). Layout: `data-layout.md` "Log record".
pub fn encode_record(kind: u8, lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD_HEADER_LEN as usize + payload.len());
    r.extend_from_slice(RECORD_MAGIC);
    r.push(kind);
    r.extend_from_slice(&[0, 0, 0]);
    r.extend_from_slice(&lsn.0.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&r[0..20]);
    h.update(payload);
    r.extend_from_slice(&h.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

/// What lies at one position of a segment.
#[derive(Debug)]
pub enum RecordAt {
    /// A valid record: its type, lsn, payload, and total length in bytes.
    Valid {
        kind: u8,
        lsn: Lsn,
        payload: Vec<u8>,
        len: u64,
    },
    /// Nothing: clean end of the segment.
    End,
    /// The file ends inside a record (a writer died mid-write, or one is writing right now).
    Short,
    /// A complete record whose bytes are all zero from here to EOF (power loss after a size update).
    ZeroTail,
    /// A complete record that is wrong: corruption.
    Bad(String),
}

/// Parse the record at `offset` of a segment whose current length is `file_len`.
pub fn read_record_at(file: &File, offset: u64, file_len: u64) -> io::Result<RecordAt> {
    if offset >= file_len {
        return Ok(RecordAt::End);
    }
    if file_len - offset < RECORD_HEADER_LEN {
        return Ok(RecordAt::Short);
    }
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    file.read_exact_at(&mut h, offset)?;
    let plen = u32::from_le_bytes([h[16], h[17], h[18], h[19]]) as u64;
    if &h[0..4] != RECORD_MAGIC || plen > MAX_PAYLOAD {
        if all_zero_from(file, offset, file_len)? {
            return Ok(RecordAt::ZeroTail);
        }
        return Ok(RecordAt::Bad(if &h[0..4] != RECORD_MAGIC {
            "bad record magic".into()
        } else {
            format!("payload length {plen} exceeds limit")
        }));
    }
    if file_len - offset < RECORD_HEADER_LEN + plen {
        return Ok(RecordAt::Short);
    }
    let mut payload = vec![0u8; plen as usize];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER_LEN)?;
    let stored = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[0..20]);
    hasher.update(&payload);
    let actual = hasher.finalize();
    if actual != stored {
        // [LOG-4]: a record whose bytes end in zeros that reach the end of the file is a power
        // cut's unwritten blocks, not rot, however much of its header and payload did land.
        if is_zero_tail(
            zero_run_start(file, offset, file_len)?,
            offset,
            offset + RECORD_HEADER_LEN + plen,
        ) {
            return Ok(RecordAt::ZeroTail);
        }
        return Ok(RecordAt::Bad(format!(
            "record crc32 mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let kind = h[4];
    if kind != TYPE_TXN && kind != TYPE_SEGMENT_END {
        return Ok(RecordAt::Bad(format!("unknown record type {kind}")));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[8..16]);
    Ok(RecordAt::Valid {
        kind,
        lsn: Lsn(u64::from_le_bytes(b)),
        payload,
        len: RECORD_HEADER_LEN + plen,
    })
}

/// [LOG-4]: is a record at `start..end` that fails its crc, in a file whose final run of zero
/// bytes begins at `zeros`, the remains of a power cut? Yes if the zeros cover a whole 512-byte
/// block boundary inside the record (blocks that never reached the disk read back as zeros), or
/// are at least 64 bytes long; a few zero bytes at the end of a payload are just its last fields.
fn is_zero_tail(zeros: u64, start: u64, end: u64) -> bool {
    const BLOCK: u64 = 512;
    const LONG_RUN: u64 = 64;
    if zeros <= start {
        return true;
    }
    zeros < end && (zeros.div_ceil(BLOCK) * BLOCK < end || end - zeros >= LONG_RUN)
}

/// Where the run of zero bytes that ends the file begins, searching back no further than `floor`
/// (`file_len` if the last byte is not zero, `floor` if everything from `floor` on is zero).
fn zero_run_start(file: &File, floor: u64, file_len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut end = file_len;
    while end > floor {
        let n = ((end - floor) as usize).min(buf.len());
        let start = end - n as u64;
        file.read_exact_at(&mut buf[..n], start)?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(floor)
}

fn all_zero_from(file: &File, offset: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = offset;
    while pos < file_len {
        let n = ((file_len - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

struct View<S> {
    state: S,
    /// Last applied lsn.
    lsn: Lsn,
    /// The segment being read, its path and first lsn.
    seg: Arc<File>,
    seg_path: PathBuf,
    /// Byte offset of the next unread record in `seg`.
    offset: u64,
    /// A write handle on the segment at this path, kept between commits (a segment is never
    /// replaced at its path, only cut in place, so the handle stays right until a roll).
    writer: Option<(PathBuf, Arc<File>)>,
}

/// A write guard on the view that publishes the view's lsn to [`TxLog::applied_lsn`] on drop.
struct ViewWriteGuard<'a, S> {
    guard: RwLockWriteGuard<'a, View<S>>,
    applied: &'a AtomicU64,
}

impl<S> std::ops::Deref for ViewWriteGuard<'_, S> {
    type Target = View<S>;
    fn deref(&self) -> &View<S> {
        &self.guard
    }
}

impl<S> std::ops::DerefMut for ViewWriteGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut View<S> {
        &mut self.guard
    }
}

impl<S> Drop for ViewWriteGuard<'_, S> {
    fn drop(&mut self) {
        self.applied.store(self.guard.lsn.0, Ordering::Release);
    }
}

thread_local! {
    /// Set while this thread runs a closure of `read`, `commit` or `exclusive` on any log.
    static IN_VIEW: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Marks the current thread as inside a log closure for as long as it lives. Entering a second
/// time on the same thread is refused: the view's lock (and the log lock) are not re-entrant.
struct InView;

impl InView {
    fn enter(what: &'static str) -> Result<InView, LogError> {
        IN_VIEW.with(|c| match c.get() {
            Some(outer) => Err(LogError::Reentered(outer)),
            None => {
                c.set(Some(what));
                Ok(InView)
            }
        })
    }
}

impl Drop for InView {
    fn drop(&mut self) {
        IN_VIEW.with(|c| c.set(None));
    }
}

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
}

/// Create an empty log in `log_dir` (first segment starting at lsn 1). Used by store init.
///
/// On error the directory may hold a partial segment; init is not complete until the caller's
/// format file exists, so a half-initialized store is never opened.
pub fn create(log_dir: &Path) -> Result<(), LogError> {
    fs::create_dir_all(log_dir).map_err(io_err(log_dir))?;
    // The first segment is complete before `LOCK` exists: store init takes an existing `LOCK`
    // for a finished log, so a crash or I/O error in between must not leave a torn segment.
    let seg_path = log_dir.join(segment_name(Lsn(1)));
    fsutil::write_atomic(&seg_path, &encode_segment_header(Lsn(1))).map_err(io_err(&seg_path))?;
    let lock_path = log_dir.join("LOCK");
    io_site!("txlog.init-create-lock", File::create(&lock_path)).map_err(io_err(&lock_path))?;
    fsutil::fsync_dir(log_dir).map_err(io_err(log_dir))
}

/// Segment files in `log_dir`, sorted by first lsn.
pub fn list_segments(log_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for e in fs::read_dir(log_dir).map_err(io_err(log_dir))? {
        let e = e.map_err(io_err(log_dir))?;
        let name = e.file_name();
        if let Some(n) = name.to_str().and_then(|n| parse_numbered(n, ".seg")) {
            out.push((Lsn(n), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Checkpoint files in `ckpt_dir`, sorted by lsn.
pub fn list_checkpoints(ckpt_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(ckpt_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(ckpt_dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err(ckpt_dir))?;
        if let Some(n) = e
            .file_name()
            .to_str()
            .and_then(|n| parse_numbered(n, ".ckpt"))
        {
            out.push((Lsn(n), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Encode a checkpoint file. Layout: `data-layout.md` "Checkpoint".
pub fn encode_checkpoint_file(lsn: Lsn, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN as usize + body.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&LOG_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hcrc = crc32fast::hash(&out[0..36]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode a checkpoint file into its lsn and body, verifying both checksums.
pub fn decode_checkpoint_file(path: &Path, bytes: &[u8]) -> Result<(Lsn, Vec<u8>), LogError> {
    let corrupt = |offset: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < CHECKPOINT_HEADER_LEN as usize {
        return Err(corrupt(
            0,
            format!("checkpoint truncated to {} bytes", bytes.len()),
        ));
    }
    if &bytes[0..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(0, "bad checkpoint magic".into()));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if crc32fast::hash(&bytes[0..36]) != u32_at(36) {
        return Err(corrupt(36, "checkpoint header crc32 mismatch".into()));
    }
    let version = u32_at(8);
    if version != LOG_VERSION {
        return Err(corrupt(
            8,
            format!("checkpoint version {version}, this verfs reads {LOG_VERSION}"),
        ));
    }
    let lsn = Lsn(u64_at(16));
    let len = u64_at(24);
    let body = &bytes[CHECKPOINT_HEADER_LEN as usize..];
    if body.len() as u64 != len {
        return Err(corrupt(
            24,
            format!("checkpoint body is {} bytes, header says {len}", body.len()),
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != u32_at(32) {
        return Err(corrupt(
            CHECKPOINT_HEADER_LEN,
            format!("checkpoint body crc32 mismatch (computed {actual:08x})"),
        ));
    }
    Ok((lsn, body.to_vec()))
}

/// Outcome of reading records from the view's position.
enum CatchUp {
    /// Reached the end of what is visible.
    Done,
    /// Stopped at a torn or in-flight record at this offset (only meaningful under the lock).
    Torn(u64),
}

impl<S: StateMachine> TxLog<S> {
    /// Open the log of a store: load the newest valid checkpoint and replay the segments after it.
    ///
    /// `fence` is called under the log lock before every append; an `Err` refuses the append
    /// ([`LogError::Fenced`]). Read-only: opening changes nothing on disk.
    pub fn open(
        log_dir: &Path,
        ckpt_dir: &Path,
        cfg: LogConfig,
        fence: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    ) -> Result<TxLog<S>, LogError> {
        let lock_path = log_dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // A concurrent log truncation may delete the segment we are about to open; retry from the
        // newer checkpoint it published first.
        let mut attempts = 0;
        let view = loop {
            match Self::load_view(log_dir, ckpt_dir) {
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
        };
        log.refresh()?;
        Ok(log)
    }

    fn load_view(log_dir: &Path, ckpt_dir: &Path) -> Result<View<S>, LogError> {
        let (state, base) = Self::load_checkpoint(ckpt_dir)?;
        let segs = list_segments(log_dir)?;
        // The segment holding lsn base+1 is the last one whose first lsn is <= base+1.
        let (first, seg_path) = segs
            .iter()
            .rev()
            .find(|(first, _)| first.0 <= base.0.saturating_add(1))
            .cloned()
            .ok_or_else(|| LogError::Corrupt {
                path: log_dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "no log segment covers lsn {} (checkpoint at {base}); segments: {:?}",
                    base.0.saturating_add(1),
                    segs.iter().map(|s| s.0 .0).collect::<Vec<_>>()
                ),
            })?;
        let f = File::open(&seg_path).map_err(io_err(&seg_path))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        f.read_exact_at(&mut h, 0).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => LogError::Corrupt {
                path: seg_path.clone(),
                offset: 0,
                reason: "segment header truncated".into(),
            },
            _ => io_err(&seg_path)(e),
        })?;
        let hdr_first = decode_segment_header(&seg_path, &h)?;
        if hdr_first != first {
            return Err(LogError::Corrupt {
                path: seg_path,
                offset: 12,
                reason: format!("header says first lsn {hdr_first}, name says {first}"),
            });
        }
        // Lsns start at 1: a segment claiming to start at 0 (name and header agreeing) is damage,
        // and would make the lsn before it underflow.
        if first.0 == 0 {
            return Err(LogError::Corrupt {
                path: seg_path,
                offset: 12,
                reason: "segment starts at lsn 0; lsns start at 1".into(),
            });
        }
        let mut view = View {
            state,
            lsn: Lsn(first.0 - 1),
            seg: Arc::new(f),
            seg_path,
            offset: SEGMENT_HEADER_LEN,
            writer: None,
        };
        // Records up to `base` are already in the checkpoint: skip them without applying.
        if view.lsn < base {
            Self::skip_to(&mut view, base)?;
        }
        Ok(view)
    }

    fn load_checkpoint(ckpt_dir: &Path) -> Result<(S, Lsn), LogError> {
        let ckpts = list_checkpoints(ckpt_dir)?;
        let Some((lsn, path)) = ckpts.last() else {
            return Ok((S::empty(), Lsn(0)));
        };
        // Only the newest checkpoint is trusted: older segments may already be gone, so falling
        // back to an older one could silently skip transactions.
        let bytes = fs::read(path).map_err(io_err(path))?;
        let (hdr_lsn, body) = decode_checkpoint_file(path, &bytes)?;
        if hdr_lsn != *lsn {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 16,
                reason: format!("header says lsn {hdr_lsn}, name says {lsn}"),
            });
        }
        let state = S::decode_checkpoint(&body).map_err(|reason| LogError::Corrupt {
            path: path.clone(),
            offset: CHECKPOINT_HEADER_LEN,
            reason,
        })?;
        Ok((state, hdr_lsn))
    }

    fn skip_to(view: &mut View<S>, base: Lsn) -> Result<(), LogError> {
        while view.lsn < base {
            let len = view.seg.metadata().map_err(io_err(&view.seg_path))?.len();
            match read_record_at(&view.seg, view.offset, len).map_err(io_err(&view.seg_path))? {
                RecordAt::Valid {
                    kind: TYPE_TXN,
                    lsn,
                    len,
                    ..
                } => {
                    Self::check_next(view, lsn)?;
                    view.lsn = lsn;
                    view.offset += len;
                }
                RecordAt::Valid { payload, .. } => Self::next_segment(view, &payload)?,
                other => {
                    return Err(LogError::Corrupt {
                        path: view.seg_path.clone(),
                        offset: view.offset,
                        reason: format!("log ends ({other:?}) before checkpoint lsn {base}"),
                    })
                }
            }
        }
        Ok(())
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
        f.read_exact_at(&mut h, 0).map_err(io_err(&path))?;
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
        view.offset = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Apply every complete record past the view's position.
    fn catch_up(view: &mut View<S>) -> Result<CatchUp, LogError> {
        loop {
            let len = view.seg.metadata().map_err(io_err(&view.seg_path))?.len();
            match read_record_at(&view.seg, view.offset, len).map_err(io_err(&view.seg_path))? {
                RecordAt::End => return Ok(CatchUp::Done),
                RecordAt::Short | RecordAt::ZeroTail => return Ok(CatchUp::Torn(view.offset)),
                RecordAt::Bad(reason) => {
                    return Err(LogError::Corrupt {
                        path: view.seg_path.clone(),
                        offset: view.offset,
                        reason,
                    })
                }
                RecordAt::Valid {
                    kind: TYPE_TXN,
                    lsn,
                    payload,
                    len,
                } => {
                    Self::check_next(view, lsn)?;
                    view.state
                        .apply(lsn, &payload)
                        .map_err(|reason| LogError::Corrupt {
                            path: view.seg_path.clone(),
                            offset: view.offset,
                            reason: format!("record {lsn} does not decode: {reason}"),
                        })?;
                    view.lsn = lsn;
                    view.offset += len;
                }
                RecordAt::Valid { payload, .. } => Self::next_segment(view, &payload)?,
            }
        }
    }

    /// Bring the view up to the log head. Readers call this implicitly through [`TxLog::read`].
    pub fn refresh(&self) -> Result<Lsn, LogError> {
        let mut view = self.write_view();
        // An incomplete tail record is either being written right now or was left by a dead
        // writer; either way it is not committed yet, so a reader simply stops before it.
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
            let len = view.seg.metadata().map_err(io_err(&view.seg_path))?.len();
            if len == view.offset {
                return Ok(f(&view.state, view.lsn));
            }
        }
        let mut view = self.write_view();
        Self::catch_up(&mut view)?;
        Ok(f(&view.state, view.lsn))
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
            .write(true)
            .open(&view.seg_path)
            .map_err(io_err(&view.seg_path))?;
        io_site!("txlog.segment-end-write", f.write_all_at(&rec, view.offset))
            .map_err(io_err(&view.seg_path))?;
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
                let f = Arc::new(
                    OpenOptions::new()
                        .write(true)
                        .open(&view.seg_path)
                        .map_err(io_err(&view.seg_path))?,
                );
                view.writer = Some((view.seg_path.clone(), f.clone()));
                f
            }
        };
        if let Err(e) = io_site!("txlog.append-write", wf.write_all_at(&rec, view.offset)) {
            // ENOSPC or EIO mid-record: cut it so the next reader does not see a torn record.
            let _ = io_site!("txlog.append-cut", wf.set_len(view.offset));
            return Err(io_err(&view.seg_path)(e).into());
        }
        view.state
            .apply(lsn, &payload)
            .map_err(|reason| LogError::Corrupt {
                path: view.seg_path.clone(),
                offset: view.offset,
                reason: format!("own record {lsn} does not apply: {reason}"),
            })?;
        view.lsn = lsn;
        view.offset += rec.len() as u64;
        if view.offset >= self.cfg.segment_bytes {
            self.roll_segment(&mut view)?;
        }
        Ok((lsn, out))
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
        let (lsn, body) = {
            let v = self.read_view();
            (v.lsn, v.state.encode_checkpoint())
        };
        let path = self.ckpt_dir.join(checkpoint_name(lsn));
        if path.exists() {
            return Ok(lsn);
        }
        // The records it covers must be durable before a checkpoint may stand in for them.
        self.sync_to(lsn)?;
        fsutil::write_atomic(&path, &encode_checkpoint_file(lsn, &body)).map_err(io_err(&path))?;
        Ok(lsn)
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
mod tests {
    use super::*;

    /// A toy state: the list of payloads, as strings.
    #[derive(Default)]
    struct Strings(Vec<String>);

    impl StateMachine for Strings {
        fn empty() -> Self {
            Strings::default()
        }
        fn apply(&mut self, _lsn: Lsn, payload: &[u8]) -> Result<(), String> {
            self.0
                .push(String::from_utf8(payload.to_vec()).map_err(|e| e.to_string())?);
            Ok(())
        }
        fn encode_checkpoint(&self) -> Vec<u8> {
            self.0.join("\n").into_bytes()
        }
        fn decode_checkpoint(bytes: &[u8]) -> Result<Self, String> {
            let s = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
            Ok(Strings(if s.is_empty() {
                vec![]
            } else {
                s.split('\n').map(String::from).collect()
            }))
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let ck = d.path().join("checkpoints");
        fs::create_dir_all(&ck).unwrap();
        create(&log).unwrap();
        (d, log, ck)
    }

    fn open(log: &Path, ck: &Path, seg: u64) -> TxLog<Strings> {
        TxLog::open(
            log,
            ck,
            LogConfig { segment_bytes: seg },
            Box::new(|| Ok(())),
        )
        .unwrap()
    }

    fn put(l: &TxLog<Strings>, s: &str) -> Lsn {
        l.commit_durable::<(), String>(|_| Ok((s.as_bytes().to_vec(), ())))
            .unwrap()
            .0
    }

    /// A closure that calls back into its log is refused at once instead of deadlocking on the
    /// view's lock (the `verfs status` hang): the closure must use the state and lsn it was given.
    #[test]
    fn reentering_the_log_from_a_closure_is_refused_not_a_deadlock() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        put(&a, "x");
        let inner = a.read(|_, _| a.read(|s, _| s.0.len())).unwrap();
        assert!(
            matches!(inner, Err(LogError::Reentered("read"))),
            "{inner:?}"
        );
        let inner = a
            .commit::<_, String>(|_| Ok((b"y".to_vec(), a.exclusive(|_| ()))))
            .unwrap()
            .1;
        assert!(
            matches!(inner, Err(LogError::Reentered("commit"))),
            "{inner:?}"
        );
        // applied_lsn takes no lock, so it is fine anywhere, and the guard is released afterwards.
        assert_eq!(
            a.read(|_, lsn| (lsn, a.applied_lsn())).unwrap(),
            (Lsn(2), Lsn(2))
        );
        assert_eq!(a.read(|s, _| s.0.len()).unwrap(), 2);
    }

    #[test]
    fn two_handles_see_each_others_commits() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        let b = open(&log, &ck, 1 << 20);
        put(&a, "x");
        put(&b, "y");
        assert_eq!(a.read(|s, _| s.0.clone()).unwrap(), vec!["x", "y"]);
        // Validation happens against the head: b's closure sees a's record.
        let seen = b
            .commit::<usize, String>(|s| Ok((b"z".to_vec(), s.0.len())))
            .unwrap()
            .1;
        assert_eq!(seen, 2);
    }

    #[test]
    fn rejected_and_fenced_commits_append_nothing() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        let err = a.commit::<(), &str>(|_| Err("no")).unwrap_err();
        assert!(matches!(err, CommitError::Rejected("no")));
        let fenced: TxLog<Strings> = TxLog::open(
            &log,
            &ck,
            LogConfig::default(),
            Box::new(|| Err("lease gone".into())),
        )
        .unwrap();
        let err = fenced
            .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
            .unwrap_err();
        assert!(matches!(err, CommitError::Log(LogError::Fenced(_))));
        assert_eq!(a.refresh().unwrap(), Lsn(0));
    }

    #[test]
    fn segments_roll_and_reopen_with_checkpoint() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 200);
        for i in 0..50 {
            put(&a, &format!("v{i}"));
        }
        assert!(list_segments(&log).unwrap().len() > 5);
        let b = open(&log, &ck, 200);
        assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 50);
        let at = a.checkpoint().unwrap();
        assert_eq!(at, Lsn(50));
        for p in a.segments_covered_by(at).unwrap() {
            fs::remove_file(p).unwrap();
        }
        put(&a, "after");
        let c = open(&log, &ck, 200);
        let all = c.read(|s, _| s.0.clone()).unwrap();
        assert_eq!(all.len(), 51);
        assert_eq!(all[0], "v0");
        assert_eq!(all[50], "after");
        // b was positioned before the deleted segments but keeps its open file: still catches up.
        assert_eq!(b.read(|s, _| s.0.len()).unwrap(), 51);
    }

    #[test]
    fn torn_tail_is_invisible_to_readers_and_cut_by_next_writer() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        put(&a, "one");
        let seg = list_segments(&log).unwrap()[0].1.clone();
        let full = encode_record(TYPE_TXN, Lsn(2), b"torn-record");
        let f = OpenOptions::new().append(true).open(&seg).unwrap();
        use std::io::Write;
        (&f).write_all(&full[..full.len() - 3]).unwrap();
        let b = open(&log, &ck, 1 << 20);
        assert_eq!(b.read(|s, _| s.0.clone()).unwrap(), vec!["one"]);
        put(&b, "two");
        assert_eq!(a.read(|s, _| s.0.clone()).unwrap(), vec!["one", "two"]);
    }

    /// A last record whose header landed but whose payload ends in zeros (a power cut before
    /// `fdatasync` on a filesystem that grew the file first) is a torn tail ([LOG-4]): readers stop
    /// before it and the next writer cuts it, so the store stays usable.
    #[test]
    fn zero_filled_tail_inside_the_last_record_is_torn() {
        for zeros in ["block", "long-run"] {
            let (_d, log, ck) = setup();
            let a = open(&log, &ck, 1 << 20);
            put(&a, "kept");
            let seg = log.join(segment_name(Lsn(1)));
            let start = fs::metadata(&seg).unwrap().len();
            let mut rec = encode_record(TYPE_TXN, Lsn(2), &[b'p'; 2000]);
            let end = start as usize + rec.len();
            // From a 512-byte block boundary inside the record, or the last 64 bytes.
            let from = match zeros {
                "block" => (end - 100).div_ceil(512) * 512,
                _ => end - 64,
            };
            assert!(from > start as usize + 24 && from < end);
            for b in &mut rec[from - start as usize..] {
                *b = 0;
            }
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&rec, start).unwrap();
            let b = open(&log, &ck, 1 << 20);
            assert_eq!(b.read(|s, _| s.0.clone()).unwrap(), vec!["kept"], "{zeros}");
            put(&b, "next");
            assert_eq!(
                a.read(|s, _| s.0.clone()).unwrap(),
                vec!["kept", "next"],
                "{zeros}"
            );
        }
    }

    /// [LOG-4] on its own: which zero runs are a power cut's and which are a payload's last fields.
    #[test]
    fn zero_tail_rule() {
        // Whole record zero, from its first byte or earlier.
        assert!(is_zero_tail(1000, 1000, 1100));
        assert!(is_zero_tail(900, 1000, 1100));
        // A few zeros at the end, no block boundary among them: a payload's last fields.
        assert!(!is_zero_tail(1090, 1000, 1100));
        // The same few zeros, but covering the boundary at 1024 inside the record.
        assert!(is_zero_tail(1020, 1000, 1100));
        // A boundary exactly at the record's end is not inside it.
        assert!(!is_zero_tail(1020, 1000, 1024));
        // A long run needs no boundary.
        assert!(is_zero_tail(1036, 1000, 1100));
        assert!(!is_zero_tail(1037, 1000, 1100));
        // No zeros at all.
        assert!(!is_zero_tail(1100, 1000, 1100));
    }

    /// The same record with a flipped byte instead of a zero tail, or zeros that stop before the
    /// end of the file, is corruption ([LOG-4] does not stretch to rot).
    #[test]
    fn damaged_last_record_without_zero_tail_is_corruption() {
        for damage in ["flip", "zeros-then-data"] {
            let (_d, log, ck) = setup();
            let a = open(&log, &ck, 1 << 20);
            put(&a, "kept");
            let seg = log.join(segment_name(Lsn(1)));
            let before = fs::metadata(&seg).unwrap().len();
            let mut rec = encode_record(TYPE_TXN, Lsn(2), b"another payload of some length");
            let n = rec.len();
            match damage {
                "flip" => rec[n - 3] ^= 0x40,
                _ => {
                    for b in &mut rec[n - 9..n - 1] {
                        *b = 0;
                    }
                    rec[n - 1] = 1;
                }
            }
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&rec, before).unwrap();
            let err = TxLog::<Strings>::open(
                &log,
                &ck,
                LogConfig {
                    segment_bytes: 1 << 20,
                },
                Box::new(|| Ok(())),
            )
            .err()
            .unwrap_or_else(|| panic!("{damage}: a damaged last record opened"));
            assert!(
                matches!(&err, LogError::Corrupt { offset, .. } if *offset == before),
                "{damage}: {err}"
            );
        }
    }

    /// Regression (crash images, issue 11): a power loss during a segment roll, after the next
    /// segment was created and synced but before the segment-end record was, leaves that record
    /// torn (short or zero-filled) in front of an empty next segment. That is crash case L3, not
    /// a truncated closed segment: the next writer cuts it, finishes the roll and commits.
    /// Before, every commit failed with "torn record inside a closed segment".
    #[test]
    fn power_loss_tearing_the_segment_end_record_of_a_roll_is_repaired() {
        let (d, log, ck) = setup();
        let a = open(&log, &ck, 200);
        let mut n = 0;
        while list_segments(&log).unwrap().len() < 2 {
            n += 1;
            put(&a, &format!("v{n}"));
        }
        drop(a);
        let segs = list_segments(&log).unwrap();
        assert_eq!(fs::metadata(&segs[1].1).unwrap().len(), SEGMENT_HEADER_LEN);
        let first = fs::read(&segs[0].1).unwrap();
        let end_len = encode_record(TYPE_SEGMENT_END, Lsn(n), &(n + 1).to_le_bytes()).len();
        let end_at = first.len() - end_len;
        // (A complete header followed by zeros is issue 11 item 1.6, fixed separately.)
        for (what, keep, zeros) in [
            ("short", 10, 0),
            ("short header", 23, 0),
            ("zeros", 0, end_len),
        ] {
            let copy = tempfile::tempdir().unwrap();
            fsutil_copy_dir(d.path(), copy.path());
            let (log2, ck2) = (copy.path().join("log"), copy.path().join("checkpoints"));
            let mut b = first[..end_at + keep].to_vec();
            b.resize(b.len() + zeros, 0);
            fs::write(log2.join(segs[0].1.file_name().unwrap()), &b).unwrap();
            let l = open(&log2, &ck2, 200);
            assert_eq!(l.read(|s, _| s.0.len()).unwrap() as u64, n, "{what}");
            put(&l, "after");
            let again = open(&log2, &ck2, 200);
            let all = again.read(|s, _| s.0.clone()).unwrap();
            assert_eq!(all.len() as u64, n + 1, "{what}");
            assert_eq!(all.last().unwrap(), "after", "{what}");
        }
        // A torn record in front of a later segment that holds records stays corruption.
        let l = open(&log, &ck, 200);
        put(&l, "in the second segment");
        drop(l);
        fs::write(&segs[0].1, &first[..end_at + 10]).unwrap();
        let l = open(&log, &ck, 200);
        let err = l
            .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
            .unwrap_err();
        assert!(
            matches!(err, CommitError::Log(LogError::Corrupt { .. })),
            "{err:?}"
        );
    }

    /// Regression (crash images, issue 11): a power loss during a roll, after the next
    /// segment's name reached the disk but before its header did, leaves it empty or a prefix
    /// of its header followed by zeros, and no segment-end record. The next writer completes the
    /// header, writes the segment-end record and commits. Before, every commit failed with
    /// "failed to fill whole buffer".
    #[test]
    fn power_loss_before_the_new_segment_header_is_synced_is_repaired() {
        let (d, log, ck) = setup();
        let a = open(&log, &ck, 200);
        let mut n = 0;
        while list_segments(&log).unwrap().len() < 2 {
            n += 1;
            put(&a, &format!("v{n}"));
        }
        drop(a);
        let segs = list_segments(&log).unwrap();
        let first = fs::read(&segs[0].1).unwrap();
        let end_len = encode_record(TYPE_SEGMENT_END, Lsn(n), &(n + 1).to_le_bytes()).len();
        let header = encode_segment_header(Lsn(n + 1));
        for (keep, len) in [(0, 0), (5, 5), (0, 24), (9, 24), (23, 23)] {
            let copy = tempfile::tempdir().unwrap();
            fsutil_copy_dir(d.path(), copy.path());
            let (log2, ck2) = (copy.path().join("log"), copy.path().join("checkpoints"));
            let name = |i: usize| log2.join(segs[i].1.file_name().unwrap());
            fs::write(name(0), &first[..first.len() - end_len]).unwrap();
            let mut b = header[..keep].to_vec();
            b.resize(len, 0);
            fs::write(name(1), &b).unwrap();
            let l = open(&log2, &ck2, 200);
            assert_eq!(l.read(|s, _| s.0.len()).unwrap() as u64, n);
            put(&l, "after");
            let all = open(&log2, &ck2, 200).read(|s, _| s.0.clone()).unwrap();
            assert_eq!(all.len() as u64, n + 1, "{keep} of {len}");
            assert_eq!(fs::read(name(1)).unwrap()[..24], header, "{keep} of {len}");
        }
    }

    fn fsutil_copy_dir(from: &Path, to: &Path) {
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                fs::create_dir_all(&dest).unwrap();
                fsutil_copy_dir(&e.path(), &dest);
            } else {
                fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_a_complete_record_is_corruption_not_a_torn_tail() {
        let (_d, log, ck) = setup();
        let a = open(&log, &ck, 1 << 20);
        put(&a, "one");
        // b has applied record 1 only, so it must read record 2 from disk.
        let b = open(&log, &ck, 1 << 20);
        put(&a, "two");
        let seg = list_segments(&log).unwrap()[0].1.clone();
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x40; // last payload byte of the last record
        fs::write(&seg, &bytes).unwrap();
        match TxLog::<Strings>::open(&log, &ck, LogConfig::default(), Box::new(|| Ok(()))) {
            Err(LogError::Corrupt { offset, .. }) => assert!(offset > SEGMENT_HEADER_LEN),
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("opened a log with a corrupt record"),
        }
        // The next writer refuses to "repair" it by truncation.
        let err = b
            .commit::<(), String>(|_| Ok((b"x".to_vec(), ())))
            .unwrap_err();
        assert!(matches!(err, CommitError::Log(LogError::Corrupt { .. })));
        assert_eq!(fs::read(&seg).unwrap().len(), n);
    }

    #[test]
    fn checkpoint_file_detects_every_flipped_byte() {
        let bytes = encode_checkpoint_file(Lsn(9), b"body bytes");
        assert_eq!(
            decode_checkpoint_file(Path::new("c"), &bytes).unwrap(),
            (Lsn(9), b"body bytes".to_vec())
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x08;
            assert!(
                decode_checkpoint_file(Path::new("c"), &bad).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn many_threads_commit_serializably() {
        let (_d, log, ck) = setup();
        let logs: Vec<_> = (0..4).map(|_| Arc::new(open(&log, &ck, 4096))).collect();
        let hs: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(t, l)| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        // Each record carries the count it observed: serializable iff they form 0..n.
                        l.commit_durable::<(), String>(|s| {
                            Ok((format!("{}:{t}:{i}", s.0.len()).into_bytes(), ()))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let all = logs[0].read(|s, _| s.0.clone()).unwrap();
        assert_eq!(all.len(), 400);
        for (i, rec) in all.iter().enumerate() {
            assert_eq!(rec.split(':').next().unwrap(), i.to_string());
        }
    }
}
