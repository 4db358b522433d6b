//! `STORE/config.toml`: every tunable, with its default. Unknown keys are refused by name.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::Error;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub chunking: Chunking,
    pub compression: Compression,
    pub packs: Packs,
    pub log: Log,
    pub leases: Leases,
    pub two_phase: TwoPhase,
    pub batch: Batch,
    pub mount: Mount,
    pub gc: Gc,
    pub pipeline: Pipeline,
    pub cache: Cache,
    pub filesystem: Filesystem,
}

/// What is checked about the filesystem under the store ([FS-1]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Filesystem {
    /// Refuse to open a store on a network filesystem whose checks fail.
    pub checks: bool,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem { checks: true }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    pub compress_threads: usize,
    pub queue_chunks: usize,
    pub file_workers: usize,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            compress_threads: 0,
            queue_chunks: 32,
            file_workers: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    pub chunk_bytes: u64,
    pub pack_readers: u64,
    pub snapshot_trees: u64,
    pub readahead_chunks: usize,
    /// Decoded metadata pages a process keeps (bytes).
    pub meta_bytes: u64,
    /// The filter in front of the chunk index a writing process keeps (bytes; 0 = none).
    pub chunk_filter_bytes: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            chunk_bytes: 32 << 20,
            pack_readers: 256,
            snapshot_trees: 8,
            readahead_chunks: 8,
            meta_bytes: 16 << 20,
            chunk_filter_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Gc {
    pub interval_ms: u64,
    pub rewrite_threshold: f64,
    /// Metadata compaction: the page files under the live trees may exceed 3x their pages by
    /// this many bytes before GC rebuilds the trees into one file.
    pub compact_slack: u64,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval_ms: 60_000,
            rewrite_threshold: 0.2,
            compact_slack: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Chunking {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    pub zstd_level: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Packs {
    pub target_size: u64,
    /// A pack is also sealed past this many records: a reader loads a pack's whole index and
    /// the writer keeps one entry per record in memory, so a pack of tiny chunks (a tree of
    /// small files: 64 MiB is a million of them) would make both large.
    pub target_records: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub segment_size: u64,
    pub checkpoint_every: u64,
    /// A checkpoint is also due once the state holds this many changes in memory (a put of
    /// many files in few records).
    pub checkpoint_delta: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Leases {
    pub timeout_ms: u64,
    pub heartbeat_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TwoPhase {
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    pub max_files: usize,
    pub max_bytes: u64,
    pub max_age_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Mount {
    pub default_permissions: bool,
    pub allow_other: bool,
    pub threads: usize,
    pub sync_interval_ms: u64,
    pub writeback_cache: bool,
}

impl Default for Mount {
    fn default() -> Self {
        Mount {
            default_permissions: true,
            allow_other: false,
            threads: 4,
            sync_interval_ms: 1000,
            writeback_cache: false,
        }
    }
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            min_size: 16 << 10,
            avg_size: 64 << 10,
            max_size: 256 << 10,
        }
    }
}
impl Default for Compression {
    fn default() -> Self {
        Compression { zstd_level: 1 }
    }
}
impl Default for Packs {
    fn default() -> Self {
        Packs {
            target_size: 64 << 20,
            target_records: 65536,
        }
    }
}
impl Default for Log {
    fn default() -> Self {
        Log {
            segment_size: 64 << 20,
            checkpoint_every: 4096,
            checkpoint_delta: 65536,
        }
    }
}
impl Default for Leases {
    fn default() -> Self {
        Leases {
            timeout_ms: 10_000,
            heartbeat_ms: 1_000,
        }
    }
}
impl Default for TwoPhase {
    fn default() -> Self {
        TwoPhase { timeout_ms: 30_000 }
    }
}
impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_files: 1024,
            max_bytes: 64 << 20,
            max_age_ms: 1000,
        }
    }
}

/// The commented `config.toml` that `verfs init` writes (every key, every default).
pub const DEFAULT_TOML: &str = r#"# verfs store configuration. Every tunable is listed with its default value.
# Changes take effect for processes that open the store afterwards.

[chunking]
# Content-defined chunking (FastCDC 2020). Bytes; even numbers; min <= avg <= max.
# Limits: min 64..=1048576, avg 256..=4194304, max 1024..=16777216.
min_size = 16384
avg_size = 65536
max_size = 262144

[compression]
# zstd level for chunk records (1..=22). Chunks that do not shrink are stored raw. Level 1
# compresses text ~1.7x faster than 3 for ~1% more bytes on the benchmark dataset.
zstd_level = 1

[packs]
# A process seals its open pack and starts a new one past this many bytes, or records.
target_size = 67108864
target_records = 65536

[log]
# A log segment is closed and a new one started past this many bytes.
segment_size = 67108864
# After this many records since the newest checkpoint, the process that commits the next one
# writes a new checkpoint (only the metadata pages that changed) and proposes (by two-phase
# commit) to delete the segments it covers. A process opening the store replays at most about
# this many records.
checkpoint_every = 4096
# A checkpoint is also due once a process holds this many metadata changes in memory since the
# checkpoint it rests on (a put of many small files commits few, large records).
checkpoint_delta = 65536

[leases]
# A process whose heartbeat is older than this is dead (this is how stalled processes and
# processes on other hosts are detected). Must be well above heartbeat_ms.
timeout_ms = 10000
# How often every process refreshes its heartbeat and looks for two-phase-commit proposals.
heartbeat_ms = 1000

[two_phase]
# A two-phase commit that has not collected every vote by then is aborted.
timeout_ms = 30000

[batch]
# `verfs put` commits many small files in one log record and one pack sync: a batch closes
# at this many files or bytes, or when a file joins it this long after it opened (so a slow
# source still shows its files to other processes every second or so).
max_files = 1024
max_bytes = 67108864
max_age_ms = 1000

[mount]
# Defaults of `verfs mount`; `-o` on the command line overrides them.
# Let the kernel check permission bits and ownership (as for a local filesystem).
default_permissions = true
# Let users other than the one who mounted access the mount.
allow_other = false
# Threads serving FUSE requests.
threads = 4
# Namespace changes and closed files are visible to every process at once and durable at the
# next fsync/fsyncdir, unmount, or group commit, which runs this often (bounds what a power
# loss can take; a killed process loses nothing).
sync_interval_ms = 1000
# Let the kernel cache writes and send them in large batches. Off by default: with it on, the
# kernel trusts its own cached size and mtime of a file over the store's, so changes another
# mount or CLI makes to a file this mount has cached are not seen. For single-writer mounts.
writeback_cache = false

[gc]
# `verfs gc --worker` runs a pass this often (milliseconds).
interval_ms = 60000
# Stage 2 rewrites a sealed pack once at least this share of its bytes is garbage (0.0..=1.0);
# a pack with no live chunk at all is always deleted.
rewrite_threshold = 0.2
# The metadata page files under the live trees may be 3x their pages plus this many bytes
# before GC rebuilds the trees into one file (and the sweep deletes the old files).
compact_slack = 67108864

[pipeline]
# Threads compressing new chunks in parallel (0 = one per core). Chunking, dedup lookup and
# pack appends run on the writing thread, overlapped with compression.
compress_threads = 0
# New chunks in flight between the chunker and the pack, per writer (memory: at most this many
# x chunking.max_size).
queue_chunks = 32
# Files `verfs put` stores at once, each through its own chunker (0 = one per core).
file_workers = 0

[cache]
# Decoded chunks kept in memory by a process (bytes).
chunk_bytes = 33554432
# Pack readers (open file + index) kept open by a process.
pack_readers = 256
# Snapshot trees kept decoded by a process.
snapshot_trees = 8
# Chunks decoded ahead of a sequential reader (0 = no readahead).
readahead_chunks = 8
# Decoded metadata pages kept in memory by a process (bytes); the page files themselves are
# shared between processes through the OS page cache.
meta_bytes = 16777216
# A filter of the chunk ids the store holds, kept by a process that writes (2-4 bytes per chunk),
# so that new data does not look each of its chunks up in the on-disk index. A store with more
# chunks than fit falls back to the index (bytes; 0 = never).
chunk_filter_bytes = 67108864

[filesystem]
# Refuse to open a store on a network filesystem (NFS, GlusterFS, ...) whose options let other
# hosts read stale data (`verfs doctor` lists the checks and the option each one wants). Set to
# false only if you know better than the checks: a stale read there can lose commits.
checks = true
"#;

impl Config {
    /// Read and validate `config.toml`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = match std::fs::read(path) {
            // Not read_to_string: its error for bad UTF-8 is an I/O error with no position.
            Ok(b) => String::from_utf8(b).map_err(|e| Error::Config {
                path: path.into(),
                reason: format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(Error::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.into(),
            reason: toml_reason(&text, &e),
        })?;
        cfg.validate().map_err(|reason| Error::Config {
            path: path.into(),
            reason,
        })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.chunker().validate()?;
        if !(1..=22).contains(&self.compression.zstd_level) {
            return Err(format!(
                "compression.zstd_level {} is not in 1..=22",
                self.compression.zstd_level
            ));
        }
        if self.packs.target_size < 1 << 20 {
            return Err("packs.target_size must be at least 1 MiB".into());
        }
        if self.packs.target_records == 0 {
            return Err("packs.target_records must be at least 1".into());
        }
        if self.log.segment_size < 4096 {
            return Err("log.segment_size must be at least 4096".into());
        }
        if self.leases.heartbeat_ms == 0 || self.leases.timeout_ms < 3 * self.leases.heartbeat_ms {
            return Err(
                "leases.timeout_ms must be at least 3 x leases.heartbeat_ms (and heartbeat_ms > 0)"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.gc.rewrite_threshold) {
            return Err(format!(
                "gc.rewrite_threshold {} is not in 0.0..=1.0",
                self.gc.rewrite_threshold
            ));
        }
        if self.gc.interval_ms == 0 {
            return Err("gc.interval_ms must be at least 1".into());
        }
        if self.pipeline.queue_chunks == 0 || self.pipeline.queue_chunks > 4096 {
            return Err("pipeline.queue_chunks must be in 1..=4096".into());
        }
        if self.pipeline.compress_threads > 256 || self.pipeline.file_workers > 256 {
            return Err(
                "pipeline.compress_threads and pipeline.file_workers must be at most 256".into(),
            );
        }
        if self.cache.pack_readers == 0 || self.cache.snapshot_trees == 0 {
            return Err("cache.pack_readers and cache.snapshot_trees must be at least 1".into());
        }
        if self.cache.readahead_chunks > 1024 {
            return Err("cache.readahead_chunks must be at most 1024".into());
        }
        if self.batch.max_files == 0 {
            return Err("batch.max_files must be at least 1".into());
        }
        Ok(())
    }

    pub fn chunker(&self) -> ChunkerParams {
        ChunkerParams {
            min: self.chunking.min_size,
            avg: self.chunking.avg_size,
            max: self.chunking.max_size,
        }
    }

    /// The lease timing every process of the store uses.
    pub fn lease_config(&self) -> verfs_coordination::lease::LeaseConfig {
        verfs_coordination::lease::LeaseConfig {
            timeout: self.lease_timeout(),
            heartbeat_interval: self.heartbeat(),
        }
    }

    pub fn lease_timeout(&self) -> Duration {
        Duration::from_millis(self.leases.timeout_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.leases.heartbeat_ms)
    }
}

/// A TOML error on one line: `line L, [table]: message` (the toml crate's own rendering spans
/// several lines with a source excerpt, which breaks one-line error messages).
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let msg = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else { return msg };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    // A value of the wrong type is reported without its key: name the key from the line.
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !msg.contains(*k));
    let msg = match key {
        Some(k) => format!("{k}: {msg}"),
        None => msg,
    };
    // The table the offending line is in: the last `[header]` above it.
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|h| format!(", in {h}"))
        .unwrap_or_default();
    format!("line {line}{table}: {msg}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_config_names_path_and_byte() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, b"[gc]\ninterval_ms = \xff1\n").unwrap();
        let msg = Config::load(&p).unwrap_err().to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("not UTF-8 at byte 19"), "{msg}");
    }

    #[test]
    fn default_toml_matches_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<Config>("[chunking]\nmin_sise = 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_sise"), "{err}");
    }

    #[test]
    fn load_error_is_one_line_naming_key_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "[compression]\nzstd_level = 3\n\n[batch]\nmax_filez = 4\n",
        )
        .unwrap();
        let msg = Config::load(&p).unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains("max_filez") && msg.contains("[batch]") && msg.contains("line 5"),
            "{msg}"
        );
    }
}
