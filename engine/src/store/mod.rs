//! One process's handle on a store: [`Store`], its fields, and opening and closing it.
//!
//! [`Store::open`] checks the format file, reads `config.toml`, acquires this process's lease
//! (its folder under `leases/`, with its recovery journal), starts the lease keeper (heartbeat and
//! two-phase-commit votes) and opens the shared transaction log. Data is written to this process's
//! own open pack; the metadata that references it is committed to the log only after the pack is
//! synced ([STORE-1] in `data-layout.md`).
//!
//! The handle's mechanisms, one file each: [`init`](Store::init) (creating a store), `commit`
//! ([`Store::transact`], log sync), `write` (the write path: chunking, the open pack, group
//! sync), `read` (the read path: pack readers, chunk cache, readahead), `held` (in-flight dedup
//! references, [GC-4]) and `vote` (how this process votes on two-phase-commit proposals).
//! Operations built from them (namespace, inode operations, put/get, snapshots, GC, recovery,
//! maintenance) are in `ops`, never here: this module imports nothing above it.

mod commit;
mod held;
mod init;
mod read;
mod vote;
mod write;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use verfs_coordination::journal::{self, ActionId, Journal};
use verfs_coordination::lease::{self, Lease, LeaseKeeper};
use verfs_coordination::two_phase;
use verfs_coordination::txlog::{LogConfig, LogError, TxLog};

use crate::access;
use crate::config::Config;
use crate::error::{CoordinationError, Error};
use crate::ids::{ChunkId, InodeNo, PackId};
use crate::meta::tree::PageStore;
use crate::meta::MetaState;
use crate::pipeline::{Compressors, Stats};

/// The write path's error (defined beside the pipeline it mostly comes from).
pub use crate::pipeline::WriteError;
pub use commit::CommitError;
pub use held::Held;
pub(crate) use held::InFlight;
pub(crate) use read::CachedReader;
pub use vote::BarrierHook;
pub(crate) use vote::Voter;
use write::OpenPack;
pub use write::{PendingFile, TransferReport};

// Compatibility paths (issue 12): these names now live in `kinds` and `layout`.
pub use crate::kinds::{
    ACTION_OPEN_PACK, ACTION_ORPHAN, PROPOSAL_GC_REWRITE, PROPOSAL_LOG_TRUNCATE, PROPOSAL_SNAPSHOT,
};
pub use crate::layout::{
    Layout, CHECKPOINT_DIR, CONFIG_FILE, FORMAT_FILE, LEASE_DIR, LOG_DIR, MANIFEST_DIR, META_DIR,
    PACK_DIR, TWOPC_DIR,
};

/// How to open a store.
pub struct OpenOptions {
    /// What this process is, recorded in its lease ("cli put", "mount", ...).
    pub kind: String,
    /// Called once if this process is fenced. The default prints an error and exits with 75.
    pub on_fenced: Option<Box<dyn Fn() + Send>>,
    /// On a network filesystem, also probe visibility between two handles before opening
    /// (a few round trips; long-running processes such as mounts ask for it) ([FS-1]).
    pub probe_filesystem: bool,
}

impl OpenOptions {
    pub fn new(kind: &str) -> OpenOptions {
        OpenOptions {
            kind: kind.to_string(),
            on_fenced: None,
            probe_filesystem: false,
        }
    }
}

/// A handle on an open store. `Send + Sync`.
pub struct Store {
    pub(crate) layout: Layout,
    pub(crate) cfg: Config,
    pub(crate) lease: Arc<Lease>,
    pub(crate) keeper: Mutex<Option<LeaseKeeper>>,
    /// The automatic checkpoint being written on its own thread, if any (`ops::maintain`).
    pub(crate) checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) log: Arc<TxLog<MetaState>>,
    pub(crate) journal: Journal,
    pack: Mutex<Option<OpenPack>>,
    /// This process's state that the lease keeper votes on (shared with its thread).
    pub(crate) voter: Arc<Voter>,
    /// Open pack readers with their indexes (bounded by `[cache] pack_readers`).
    pub(crate) readers: moka::sync::Cache<PackId, Arc<CachedReader>>,
    /// The metadata page files (`meta/`), with this process's bounded cache of decoded pages.
    pub(crate) pages: Arc<PageStore>,
    /// Snapshot trees by id (a root each; immutable, so never stale; bounded by
    /// `[cache] snapshot_trees`).
    pub(crate) snap_cache: moka::sync::Cache<u64, Arc<MetaState>>,
    /// Packs whose salvage after a failed write failed too, with their open-pack actions:
    /// sealed again at close, else left to `verfs recover` (the lease is kept).
    unsealed: Mutex<Vec<(PackId, ActionId)>>,
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Decoded chunks recently read (bounded by `[cache] chunk_bytes`; see `fsops`).
    pub(crate) chunk_cache: moka::sync::Cache<ChunkId, Arc<Vec<u8>>>,
    /// Files with unflushed writes in this process, by inode.
    pub(crate) dirty: Mutex<HashMap<InodeNo, Arc<Mutex<crate::overlay::DirtyFile>>>>,
    /// Open handles per inode in this process, and the journal action of each orphan.
    pub(crate) open_files: Mutex<crate::overlay::OpenFiles>,
    /// The last (pack, length) a group sync made durable; its mutex serializes pack syncs.
    pack_sync: Mutex<(PackId, u64)>,
    /// The compression pool, started at the first write.
    compressors: std::sync::OnceLock<Result<Compressors, String>>,
    /// What this process did (published in its lease folder for `verfs status`).
    pub(crate) stats: Arc<Stats>,
    /// Chunks being read ahead on the pool (so one is not decoded twice at once).
    prefetching: Arc<Mutex<std::collections::HashSet<ChunkId>>>,
    /// Where each recently read inode's last read ended (sequential-read detection).
    pub(crate) read_ends: moka::sync::Cache<InodeNo, u64>,
}

/// [`Store::open`] failed. Nothing was changed in the store; a lease acquired before a failure of
/// the log is released again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory is not a store this verfs can use: no format file or another version, a
    /// bad `config.toml`, no write access, an I/O failure.
    #[error(transparent)]
    Store(#[from] Error),
    /// Acquiring this process's lease failed.
    #[error(transparent)]
    Lease(lease::AcquireError),
    /// Opening the log failed: I/O, or corruption with the file and offset. Corruption (a
    /// damaged log record, checkpoint or metadata page met while loading the state) names the
    /// file and byte and points at `verfs repair` (`data-layout.md` 5.12).
    #[error("{e}{hint}", e = .0, hint = repair_hint(.0))]
    Log(LogError),
    /// Opening this process's journal failed.
    #[error(transparent)]
    Journal(journal::OpenError),
    /// The thread that heartbeats the lease could not be started.
    #[error("starting the lease keeper: {source}")]
    LeaseKeeper { source: std::io::Error },
}

/// Refuse a store whose filesystem failed a check ([FS-1]).
fn check_filesystem(layout: &Layout, cfg: &Config, probe: bool) -> Result<(), Error> {
    use verfs_coordination::fscheck::{self, FsKind};
    if !cfg.filesystem.checks {
        return Ok(());
    }
    let mut report = fscheck::inspect(&layout.root, false);
    if report.kind == FsKind::Local {
        return Ok(());
    }
    if probe {
        report.checks.push(fscheck::visibility_probe(&layout.root));
    }
    let failures: Vec<String> = report
        .failures()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    Err(Error::UnfitFilesystem {
        path: layout.root.clone(),
        fstype: report
            .mount
            .map_or_else(|| "an unknown filesystem".into(), |m| m.fstype),
        failures: failures.join("; "),
        config: layout.config(),
    })
}

/// What an open that met damage tells the user to do.
fn repair_hint(e: &LogError) -> &'static str {
    match e {
        LogError::Corrupt { .. } => {
            "; the store cannot be opened until it is repaired: `verfs repair --dry-run` shows what \
             `verfs repair` would rebuild and lose"
        }
        _ => "",
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Store(e) => e,
            OpenError::Lease(e) => e.into(),
            OpenError::Log(e) => e.into(),
            OpenError::Journal(e) => e.into(),
            OpenError::LeaseKeeper { source } => {
                Error::Coordination(CoordinationError::LeaseKeeper { source })
            }
        }
    }
}

impl Store {
    /// Open a store: acquire a lease, start the keeper, open the log.
    ///
    /// On error nothing is left behind except, if the failure came after the lease was acquired,
    /// the lease is released again.
    pub fn open(root: &Path, opts: OpenOptions) -> Result<Store, OpenError> {
        let layout = Layout::new(root);
        layout.check()?;
        let cfg = Config::load(&layout.config())?;
        check_filesystem(&layout, &cfg, opts.probe_filesystem)?;
        access::apply_umask(root)?;
        access::check_writable(&layout.leases())?;
        let lease = Arc::new(
            Lease::acquire(&layout.leases(), &opts.kind, cfg.lease_config())
                .map_err(OpenError::Lease)?,
        );
        let fence_lease = lease.clone();
        let pages = match PageStore::open(&layout.meta(), cfg.cache.meta_bytes) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = Arc::try_unwrap(lease).map(|l| l.release());
                return Err(OpenError::Store(crate::meta::MetaError::from(e).into()));
            }
        };
        let log = match TxLog::open(
            &layout.log(),
            &layout.checkpoints(),
            LogConfig {
                segment_bytes: cfg.log.segment_size,
            },
            Box::new(move || fence_lease.check_valid().map_err(|e| e.to_string())),
            Some(pages.clone()),
        ) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                let _ = Arc::try_unwrap(lease).map(|l| l.release());
                return Err(OpenError::Log(e));
            }
        };
        let journal = Journal::open(lease.dir()).map_err(OpenError::Journal)?;
        let on_fenced = opts.on_fenced.unwrap_or_else(|| {
            Box::new(|| {
                tracing::error!(
                    "fenced: another process declared this one dead and cleaned up after it, or it \
                     fenced itself (see above); exiting without touching the store"
                );
                std::process::exit(75);
            })
        });
        let voter = Arc::new(Voter {
            log: log.clone(),
            pending: Mutex::new(HashMap::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            barrier_hook: Mutex::new(None),
        });
        let tick_voter = voter.clone();
        let tick_lease = lease.clone();
        let twopc = layout.twopc();
        let stats = Arc::new(Stats::default());
        let tick_stats = stats.clone();
        let published = Mutex::new(crate::pipeline::StatsSnapshot::default());
        let on_tick: Box<dyn Fn() + Send> = Box::new(move || {
            // A process that only reads moves onto newer checkpoints as others write them, so
            // its in-memory delta stays bounded ([META-2]).
            let _ = tick_voter.log.rebase(false);
            let _ = two_phase::poll_participant(&twopc, tick_lease.id(), &mut |p| {
                tick_voter.vote(&p.kind, &p.payload)
            });
            let mut last = published.lock().unwrap_or_else(|p| p.into_inner());
            let now = tick_stats.snapshot();
            if now != *last && crate::pipeline::publish(tick_lease.dir(), &now).is_ok() {
                *last = now;
            }
        });
        let keeper = Lease::start_keeper(lease.clone(), on_fenced, Some(on_tick))
            .map_err(|source| OpenError::LeaseKeeper { source })?;
        let readers = moka::sync::Cache::new(cfg.cache.pack_readers);
        let snap_cache = moka::sync::Cache::new(cfg.cache.snapshot_trees);
        let chunk_cache = moka::sync::Cache::builder()
            .max_capacity(cfg.cache.chunk_bytes)
            .weigher(|_, v: &Arc<Vec<u8>>| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        Ok(Store {
            layout,
            cfg,
            lease,
            keeper: Mutex::new(Some(keeper)),
            checkpointer: Mutex::new(None),
            log,
            journal,
            pack: Mutex::new(None),
            voter,
            readers,
            pages,
            snap_cache,
            unsealed: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            chunk_cache,
            dirty: Mutex::new(HashMap::new()),
            open_files: Mutex::new(Default::default()),
            pack_sync: Mutex::new((PackId(0), 0)),
            compressors: std::sync::OnceLock::new(),
            stats,
            prefetching: Arc::new(Mutex::new(std::collections::HashSet::new())),
            read_ends: moka::sync::Cache::new(4096),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    pub fn log(&self) -> &Arc<TxLog<MetaState>> {
        &self.log
    }

    /// The metadata page files and this process's cache of them.
    pub fn pages(&self) -> &Arc<PageStore> {
        &self.pages
    }

    /// This process's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Run `f` on the up-to-date metadata (never waits for a writer).
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Result<R, Error> {
        Ok(self.log.read(|s, _| f(s))?)
    }

    /// Seal the open pack, stop the keeper and release the lease. Everything committed is made
    /// durable first. On error the lease stays and `verfs recover` cleans up after this process.
    pub fn close(self) -> Result<(), Error> {
        self.close_inner()
    }

    /// [`Store::close`] through a shared reference (a mount whose FUSE session still holds the
    /// store): afterwards this handle can no longer commit, exactly as if it were fenced.
    pub fn shutdown(&self) -> Result<(), Error> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<(), Error> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wait_for_checkpoint();
        self.sync()?;
        {
            let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
            self.salvage_poisoned(&mut guard)?;
            self.seal_locked(&mut guard)?;
        }
        for (id, action) in
            std::mem::take(&mut *self.unsealed.lock().unwrap_or_else(|p| p.into_inner()))
        {
            // What `verfs recover` would do; on failure the lease (and its journal) stays.
            crate::pack::seal_abandoned(&self.layout.packs(), id).map_err(Error::from)?;
            self.journal.end(action).map_err(Error::coordination)?;
        }
        if let Some(k) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            k.stop();
        }
        let counters = self.stats.snapshot();
        if counters != crate::pipeline::StatsSnapshot::default() {
            if let Err(e) = crate::pipeline::fold_into_store(&self.layout.root, &counters) {
                tracing::warn!(
                    store = %self.layout.root.display(),
                    op = "close",
                    error = %e,
                    "this process's counters were not added to stats.json"
                );
            }
        }
        // An action this process could not finish (e.g. a snapshot whose undo failed too) is
        // known only to the journal in the lease folder: releasing the lease would delete it and
        // leave the half-done work for no one. Keep the lease; once this process is gone it is
        // dead, and `verfs recover` finishes the actions ([JNL-2]).
        let unfinished = self.journal.pending_ids();
        if !unfinished.is_empty() {
            tracing::warn!(
                store = %self.layout.root.display(),
                op = "close",
                actions = unfinished.len(),
                "unfinished actions stay in this process's journal; `verfs recover` finishes them"
            );
            return Ok(());
        }
        self.lease.release_shared().map_err(Error::coordination)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.close_inner();
        }
    }
}
