//! What a store holds and who is using it: the figures `verfs status` prints, and the listing of
//! the processes that hold (or held) a lease on the store.
//!
//! Overview of the main types:
//! - [`StoreStatus`]: one consistent view of the metadata (files, directories, logical and unique
//!   bytes, chunks, log head), the bytes the packs take on disk, every live-state lease folder as
//!   a [`ProcessStatus`], and the data plane's counters summed over the store (`stats.json`) and
//!   the live processes. [`StoreStatus::gather`] computes it; [`Rates`] derives the ratios.
//! - [`LeaseHolder`]: one folder in `leases/` (a process using the store, one being cleaned up,
//!   or one still acquiring its lease), as [`lease_holders`] lists it without opening the store.
//!   [`has_exited`] tells whether a holder's pid is gone on this machine.
//!
//! This module only reads: it never claims, cleans or changes a lease (that is `recover`), and it
//! does not format anything (that is the CLI). It depends on the public API of [`Store`] and on
//! `verfs-coordination`'s lease listing only.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use verfs_coordination::lease::{self, EntryInfo, LeaseEntry, LeaseId, LeaseState};
use verfs_coordination::txlog::LogError;

use crate::layout::Layout;
use crate::meta::ChunkFilter;
use crate::model::FileKind;
use crate::pipeline::{self, StatsSnapshot};
use crate::store::Store;

/// Why [`StoreStatus::gather`] or [`lease_holders`] failed. Nothing is changed by either, so a
/// failure leaves the store as it was. The messages are those of the underlying errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Reading the metadata view from the log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Reading the metadata (a page that cannot be read or does not verify).
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    /// Listing `packs/`.
    #[error(transparent)]
    Packs(std::io::Error),
    /// Listing `leases/`.
    #[error(transparent)]
    Leases(#[from] lease::ListError),
}

/// What a folder in `leases/` is (its name says it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolderState {
    /// A lease in use, or of a dead process not yet cleaned up.
    Live,
    /// Being cleaned up by the process holding lease `cleaner`.
    Claimed { cleaner: LeaseId },
    /// A lease still being acquired (or whose acquirer died doing it).
    Partial,
}

/// Who a lease holder is, from its lease's info file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    pub pid: u32,
    /// The node it runs on ([LEASE-5]; empty in leases made before nodes were recorded).
    pub node: String,
    pub host: String,
    /// What the process does (`cli status`, `mount /mnt`, `gc worker`, ...).
    pub kind: String,
    pub started_unix_ms: u64,
}

/// One folder in `leases/`: a process that holds, or held, a lease on the store.
#[derive(Clone, Debug)]
pub struct LeaseHolder {
    pub lease: LeaseId,
    pub state: HolderState,
    /// `None` when the info file is missing or unreadable.
    pub info: Option<HolderInfo>,
    entry: LeaseEntry,
}

impl LeaseHolder {
    fn new(entry: LeaseEntry) -> LeaseHolder {
        let state = match &entry.state {
            LeaseState::Live => HolderState::Live,
            LeaseState::Claimed { cleaner } => HolderState::Claimed {
                cleaner: cleaner.clone(),
            },
            LeaseState::Partial => HolderState::Partial,
        };
        let info = match &entry.info {
            EntryInfo::Valid(i) => Some(HolderInfo {
                pid: i.pid,
                node: i.node.clone(),
                host: i.host.clone(),
                kind: i.kind.clone(),
                started_unix_ms: i.started_unix_ms,
            }),
            _ => None,
        };
        LeaseHolder {
            lease: entry.id.clone(),
            state,
            info,
            entry,
        }
    }

    /// The lease folder.
    pub fn folder(&self) -> &Path {
        &self.entry.path
    }

    /// Is the holder alive by the store's lease rules ([LEASE-5]) at `now`?
    pub fn is_alive(&self, store: &Store, now: SystemTime) -> bool {
        !self
            .entry
            .liveness(&store.config().lease_config(), now)
            .is_dead()
    }

    /// The counters the holder last published in its lease folder, if it did.
    pub fn published_counters(&self) -> Option<StatsSnapshot> {
        pipeline::read_published(&self.entry.path)
    }
}

/// Every lease folder of the store at `root`, sorted by lease id; the store is not opened and
/// nothing is changed. Folders renamed or removed while listing are left out.
pub fn lease_holders(root: &Path) -> Result<Vec<LeaseHolder>, StatusError> {
    Ok(lease::list(&Layout::new(root).leases())?
        .into_iter()
        .map(LeaseHolder::new)
        .collect())
}

/// Has process `pid` on this machine exited (gone, or a zombie not yet reaped)?
pub fn has_exited(pid: u32) -> bool {
    lease::has_exited(pid)
}

/// A live-state lease folder as `verfs status` reports it.
#[derive(Clone, Debug)]
pub struct ProcessStatus {
    pub lease: LeaseId,
    /// `pid 0`, no host and kind `?` when the info file is missing or unreadable.
    pub pid: u32,
    /// The node it runs on (the hostname for leases made before nodes were recorded).
    pub node: String,
    pub host: String,
    pub kind: String,
    /// Alive by the lease rules; `false` for a dead process not yet cleaned up.
    pub alive: bool,
    /// The lease of the store handle the status was gathered through.
    pub is_self: bool,
    /// What it last published (zeros if nothing).
    pub counters: StatsSnapshot,
}

/// Ratios derived from the data plane's counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Dedup hits over chunk lookups; `None` before the first lookup.
    pub dedup_hit_rate: Option<f64>,
    /// Raw bytes of new chunks over what they took in packs.
    pub compression_ratio_new: f64,
    pub chunk_cache_hit_rate: Option<f64>,
    pub reader_cache_hit_rate: Option<f64>,
    pub snapshot_cache_hit_rate: Option<f64>,
}

impl Rates {
    pub fn of(t: &StatsSnapshot) -> Rates {
        Rates {
            dedup_hit_rate: rate(t.chunks_dedup, t.chunks_new),
            compression_ratio_new: ratio(t.bytes_in, t.bytes_stored),
            chunk_cache_hit_rate: rate(t.chunk_cache_hits, t.chunk_cache_misses),
            reader_cache_hit_rate: rate(t.reader_cache_hits, t.reader_cache_misses),
            snapshot_cache_hit_rate: rate(t.snapshot_cache_hits, t.snapshot_cache_misses),
        }
    }
}

/// `a / b`, 1 when `b` is 0 (nothing stored: no gain, no loss).
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// `hits / (hits + misses)`; `None` before the first lookup.
pub fn rate(hits: u64, misses: u64) -> Option<f64> {
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

/// The store's figures and processes at one moment.
#[derive(Clone, Debug)]
pub struct StoreStatus {
    pub root: PathBuf,
    /// The log head the metadata figures were read at.
    pub lsn: u64,
    pub files: u64,
    pub directories: u64,
    /// Sum of regular files' sizes.
    pub logical_bytes: u64,
    /// Raw bytes of the distinct chunks the live tree references (counted through a filter of
    /// the references: never below the exact figure, at most about 0.05% above it).
    pub unique_bytes: u64,
    /// Bytes of `packs/*.pack` on disk.
    pub stored_bytes: u64,
    /// Chunks in the index.
    pub chunks: usize,
    /// Every live-state lease folder, sorted by lease id.
    pub processes: Vec<ProcessStatus>,
    /// Counters of every process that closed cleanly (`stats.json`) plus the live ones other
    /// than this one (this handle has not published, or closed, yet).
    pub counters: StatsSnapshot,
}

impl StoreStatus {
    /// Gather the status through `store`. Read-only.
    pub fn gather(store: &Store) -> Result<StoreStatus, StatusError> {
        // The closure gets the view and its lsn; it must not call back into the store or its log.
        let (files, directories, logical_bytes, unique_bytes, chunks, lsn) =
            store
                .log()
                .read(|s, lsn| -> Result<_, crate::meta::MetaError> {
                    let mut logical = 0u64;
                    let mut files = 0u64;
                    let mut dirs = 0u64;
                    s.for_each_inode(|i| -> Result<(), crate::meta::MetaError> {
                        match i.kind {
                            FileKind::File => {
                                files += 1;
                                logical += i.size;
                            }
                            FileKind::Dir => dirs += 1,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    // The referenced chunks' bytes, from a filter of the references (a few
                    // bytes per chunk, not a set): within about 0.05% of the exact figure, never
                    // below it.
                    let mut refs = ChunkFilter::for_chunks(s.chunk_count(), rand::random());
                    s.mark_references(&mut HashSet::new(), &mut |c| refs.insert(c))?;
                    let mut unique = 0u64;
                    s.for_each_chunk(|c, e| -> Result<(), crate::meta::MetaError> {
                        if refs.may_contain(c) {
                            unique += u64::from(e.raw_len);
                        }
                        Ok(())
                    })?;
                    Ok((files, dirs, logical, unique, s.chunk_count() as usize, lsn))
                })??;
        let mut stored_bytes = 0u64;
        for e in std::fs::read_dir(store.layout().packs())
            .map_err(StatusError::Packs)?
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".pack") {
                stored_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let now = SystemTime::now();
        let mut processes = Vec::new();
        // Every process that closed cleanly, plus the live ones' latest published counters.
        let mut counters = pipeline::read_store_stats(&store.layout().root);
        for h in lease_holders(&store.layout().root)? {
            if h.state != HolderState::Live {
                continue;
            }
            let alive = h.is_alive(store, now);
            let is_self = h.lease == *store.lease().id();
            let published = h.published_counters().unwrap_or_default();
            if alive && !is_self {
                counters.add(&published);
            }
            let (pid, node, host, kind) = match h.info {
                Some(i) if i.node.is_empty() => (i.pid, i.host.clone(), i.host, i.kind),
                Some(i) => (i.pid, i.node, i.host, i.kind),
                None => (0, String::from("?"), String::new(), String::from("?")),
            };
            processes.push(ProcessStatus {
                lease: h.lease,
                pid,
                node,
                host,
                kind,
                alive,
                is_self,
                counters: published,
            });
        }
        Ok(StoreStatus {
            root: store.layout().root.clone(),
            lsn: lsn.0,
            files,
            directories,
            logical_bytes,
            unique_bytes,
            stored_bytes,
            chunks,
            processes,
            counters,
        })
    }

    /// Logical over unique bytes.
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.logical_bytes, self.unique_bytes)
    }

    /// Unique over stored bytes.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.unique_bytes, self.stored_bytes)
    }

    /// Ratios of [`StoreStatus::counters`].
    pub fn rates(&self) -> Rates {
        Rates::of(&self.counters)
    }
}
