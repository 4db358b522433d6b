//! One process's handle on a store.
//!
//! [`Store::open`] checks the format file, reads `config.toml`, acquires this process's lease
//! (its folder under `leases/`, with its recovery journal), starts the lease keeper (heartbeat and
//! two-phase-commit votes) and opens the shared transaction log. Data is written to this process's
//! own open pack; the metadata that references it is committed to the log only after the pack is
//! synced ([STORE-1] in `data-layout.md`).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use verfs_coordination::io_site;
use verfs_coordination::journal::{ActionId, Journal};
use verfs_coordination::lease::{Lease, LeaseKeeper};
use verfs_coordination::two_phase;
use verfs_coordination::txlog::{self, CommitError, LogConfig, Lsn, TxLog};

use crate::access;
use crate::chunker::BufChunker;
use crate::config::{Config, DEFAULT_TOML};
use crate::error::Error;
use crate::format::{FormatFile, FORMAT_VERSION};
use crate::ids::{ChunkId, InodeNo, PackId};
use crate::meta::{
    components, show_path, ChunkEntry, Extent, FileKind, Inode, MetaState, Timestamp, Tx,
};
use crate::pack::{PackReader, PackWriter};
use crate::pipeline::{Compressors, Stats, Window};

pub const FORMAT_FILE: &str = "FORMAT";
pub const CONFIG_FILE: &str = "config.toml";
pub const LOG_DIR: &str = "log";
pub const CHECKPOINT_DIR: &str = "checkpoints";
pub const PACK_DIR: &str = "packs";
pub const LEASE_DIR: &str = "leases";
pub const MANIFEST_DIR: &str = "manifests";
pub const TWOPC_DIR: &str = "2pc";
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Journal action kind for this process's open pack; payload: the pack id (16 hex chars).
pub const ACTION_OPEN_PACK: &str = "open-pack";
/// Journal action kind for an unlinked-but-open inode (nlink 0) this process must delete at its
/// last close; payload: the inode number (decimal). The cleaner deletes it if this process dies.
pub const ACTION_ORPHAN: &str = "orphan";
/// Two-phase-commit kind for deleting log segments covered by a checkpoint; payload: the lsn.
pub const PROPOSAL_LOG_TRUNCATE: &str = "log-truncate";
/// Two-phase-commit kind of the snapshot barrier: every participant commits its unflushed writes
/// before voting ([SNAP-2]); payload: `{"name": NAME}`.
pub const PROPOSAL_SNAPSHOT: &str = "snapshot-barrier";
/// Two-phase-commit kind of a GC pack rewrite: a participant votes Commit only if it holds no
/// in-flight reference to a discarded chunk of those packs ([GC-4]); payload:
/// `{"packs": ["<16 hex>", ...]}`.
pub const PROPOSAL_GC_REWRITE: &str = "gc-rewrite";

/// How to open a store.
pub struct OpenOptions {
    /// What this process is, recorded in its lease ("cli put", "mount", ...).
    pub kind: String,
    /// Called once if this process is fenced. The default prints an error and exits with 75.
    pub on_fenced: Option<Box<dyn Fn() + Send>>,
}

impl OpenOptions {
    pub fn new(kind: &str) -> OpenOptions {
        OpenOptions {
            kind: kind.to_string(),
            on_fenced: None,
        }
    }
}

/// Paths of a store's parts.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn format(&self) -> PathBuf {
        self.root.join(FORMAT_FILE)
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn log(&self) -> PathBuf {
        self.root.join(LOG_DIR)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINT_DIR)
    }
    pub fn packs(&self) -> PathBuf {
        self.root.join(PACK_DIR)
    }
    pub fn leases(&self) -> PathBuf {
        self.root.join(LEASE_DIR)
    }
    pub fn manifests(&self) -> PathBuf {
        self.root.join(MANIFEST_DIR)
    }
    pub fn twopc(&self) -> PathBuf {
        self.root.join(TWOPC_DIR)
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root.join(SNAPSHOT_DIR)
    }

    /// Check that `root` is a store of this format version; returns its format file.
    pub fn check(&self) -> Result<FormatFile, Error> {
        let root = &self.root;
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: "not a directory".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: "no such directory (create one with `verfs init`)".into(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: root.clone(),
                    source,
                })
            }
        }
        let fpath = self.format();
        let bytes = match fs::read(&fpath) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: format!("no {FORMAT_FILE} file (create a store with `verfs init`)"),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: fpath,
                    source,
                })
            }
        };
        let ff = FormatFile::decode(&fpath, &bytes).map_err(|e| Error::Corrupt {
            path: fpath.clone(),
            offset: 0,
            reason: e.reason,
        })?;
        if ff.version != FORMAT_VERSION {
            return Err(Error::WrongVersion {
                path: root.clone(),
                found: ff.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(ff)
    }
}

/// This process's open pack and the chunks in it that no committed record indexes yet.
struct OpenPack {
    writer: PackWriter,
    action: ActionId,
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

/// Chunks that operations of this process found in the index (dedup) and have not committed a
/// reference to yet, with the pack the index named, and how many operations hold each.
pub(crate) type InFlight = Arc<Mutex<HashMap<(ChunkId, PackId), u32>>>;

/// One operation's in-flight dedup references ([GC-4]). While it exists, this process votes
/// Abort on a GC rewrite of a pack that holds one of them and no longer indexes it; its commit
/// re-indexes such a chunk in that pack (the bytes are still there, because of that vote).
/// Dropping it releases the references.
pub struct Held {
    reg: InFlight,
    ids: HashMap<ChunkId, ChunkEntry>,
}

impl Held {
    pub(crate) fn get(&self, id: &ChunkId) -> Option<&ChunkEntry> {
        self.ids.get(id)
    }

    /// Take over `other`'s references (an operation made of several streams, e.g. a batch of
    /// files stored by different threads). A chunk both hold keeps one registration.
    pub fn absorb(&mut self, mut other: Held) {
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in other.ids.drain() {
            match self.ids.entry(id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e);
                }
                std::collections::hash_map::Entry::Occupied(_) => release(&mut reg, id, e.pack),
            }
        }
    }
}

/// Drop one in-flight registration of `id` found in `pack`.
fn release(reg: &mut HashMap<(ChunkId, PackId), u32>, id: ChunkId, pack: PackId) {
    if let std::collections::hash_map::Entry::Occupied(mut o) = reg.entry((id, pack)) {
        *o.get_mut() -= 1;
        if *o.get() == 0 {
            o.remove();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in self.ids.drain() {
            release(&mut reg, id, e.pack);
        }
    }
}

/// Runs when this process votes on a snapshot barrier: commits every unflushed write (a mount
/// installs `flush_all`).
pub type BarrierHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A handle on an open store. `Send + Sync`.
pub struct Store {
    pub(crate) layout: Layout,
    pub(crate) cfg: Config,
    pub(crate) lease: Arc<Lease>,
    pub(crate) keeper: Mutex<Option<LeaseKeeper>>,
    pub(crate) log: Arc<TxLog<MetaState>>,
    pub(crate) journal: Journal,
    pack: Mutex<Option<OpenPack>>,
    /// This process's state that the lease keeper votes on (shared with its thread).
    pub(crate) voter: Arc<Voter>,
    /// Open pack readers with their indexes (bounded by `[cache] pack_readers`).
    pub(crate) readers: moka::sync::Cache<PackId, Arc<CachedReader>>,
    /// Snapshot trees loaded from `snapshots/<id>.snap` (immutable, so never stale; bounded by
    /// `[cache] snapshot_trees`).
    pub(crate) snap_cache: moka::sync::Cache<u64, Arc<MetaState>>,
    /// Packs whose salvage after a failed write failed too, with their open-pack actions:
    /// sealed again at close, else left to `verfs recover` (the lease is kept).
    unsealed: Mutex<Vec<(PackId, ActionId)>>,
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Decoded chunks recently read (bounded by `[cache] chunk_bytes`; see `fsops`).
    pub(crate) chunk_cache: moka::sync::Cache<ChunkId, Arc<Vec<u8>>>,
    /// Files with unflushed writes in this process, by inode.
    pub(crate) dirty: Mutex<HashMap<InodeNo, Arc<Mutex<crate::fsops::DirtyFile>>>>,
    /// Open handles per inode in this process, and the journal action of each orphan.
    pub(crate) open_files: Mutex<crate::fsops::OpenFiles>,
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

fn commit_err(e: CommitError<Error>) -> Error {
    match e {
        CommitError::Rejected(e) => e,
        CommitError::Log(e) => e.into(),
        other => Error::Coordination(other.to_string()),
    }
}

impl Store {
    /// Create a store at `root` (which must be absent or an empty directory).
    ///
    /// The format file is written last: it is the commit point of `init`. A crash before leaves a
    /// directory without it, which every command refuses as "not a verfs store" and a second
    /// `verfs init` completes.
    pub fn init(root: &Path) -> Result<FormatFile, Error> {
        Store::init_shared(root, None)
    }

    /// [`Store::init`], for a store shared with group `group` (root 2770, files 0660) instead of
    /// a private one (0700 / 0600) ([STORE-4]).
    pub fn init_shared(root: &Path, group: Option<u32>) -> Result<FormatFile, Error> {
        let layout = Layout::new(root);
        if layout.format().exists() {
            return Err(Error::Exists {
                path: format!("{} (already a verfs store)", root.display()),
            });
        }
        match fs::read_dir(root) {
            Ok(mut rd) => {
                if let Some(Ok(_)) = rd.next() {
                    // A half-finished init (no FORMAT, our own folders, and the manifest temps
                    // of `config.toml` and `FORMAT` that the recovery below rolls back) may be
                    // completed.
                    let ours = [
                        CONFIG_FILE,
                        LOG_DIR,
                        CHECKPOINT_DIR,
                        PACK_DIR,
                        LEASE_DIR,
                        MANIFEST_DIR,
                        TWOPC_DIR,
                        SNAPSHOT_DIR,
                        crate::access::RESERVE_FILE,
                    ];
                    let is_ours = |name: &str| {
                        ours.contains(&name)
                            || [CONFIG_FILE, FORMAT_FILE]
                                .iter()
                                .any(|t| name.starts_with(&format!(".{t}.mf-")))
                    };
                    let foreign = fs::read_dir(root)
                        .map_err(Error::io(root))?
                        .filter_map(|e| e.ok())
                        .find(|e| !is_ours(&e.file_name().to_string_lossy()));
                    if let Some(e) = foreign {
                        return Err(Error::InvalidPath {
                            path: root.display().to_string(),
                            reason: format!("directory is not empty (found {:?})", e.file_name()),
                        });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                io_site!("store.init-mkdir-root", fs::create_dir_all(root))
                    .map_err(Error::io(root))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::NotADirectory {
                    path: root.display().to_string(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: root.into(),
                    source,
                })
            }
        }
        access::set_root_mode(root, group)?;
        access::apply_umask(root)?;
        for d in [
            layout.checkpoints(),
            layout.packs(),
            layout.leases(),
            layout.manifests(),
            layout.twopc(),
            layout.snapshots(),
        ] {
            io_site!("store.init-mkdir", fs::create_dir_all(&d)).map_err(Error::io(&d))?;
        }
        if !layout.log().join("LOCK").exists() {
            let _ = io_site!(
                "store.init-remove-partial-log",
                fs::remove_dir_all(layout.log())
            );
            txlog::create(&layout.log())?;
        }
        // A previous init that died: roll its manifest back (or forward) first.
        let lcfg = Config::default().lease_config();
        let leases = layout.leases();
        let now = std::time::SystemTime::now();
        let dead = |id: &verfs_coordination::lease::LeaseId| {
            verfs_coordination::lease::list(&leases)
                .map(|v| {
                    v.iter()
                        .all(|e| &e.id != id || e.liveness(&lcfg, now).is_dead())
                })
                .unwrap_or(false)
        };
        verfs_coordination::manifest::recover(&layout.manifests(), &dead)
            .map_err(Error::coordination)?;
        // config.toml and FORMAT appear together or not at all: a manifest under an init lease
        // ([STORE-2]). FORMAT is what makes the directory a store.
        let lease = Lease::acquire(&layout.leases(), "init", lcfg).map_err(Error::coordination)?;
        let ff = FormatFile {
            version: FORMAT_VERSION,
            uuid: rand::random(),
        };
        let mut m = verfs_coordination::manifest::Manifest::begin(&layout.manifests(), lease.id());
        m.stage(&layout.config(), DEFAULT_TOML.as_bytes())
            .map_err(Error::coordination)?;
        m.stage(&layout.format(), &ff.encode())
            .map_err(Error::coordination)?;
        m.commit().map_err(Error::coordination)?;
        lease.release().map_err(Error::coordination)?;
        access::refill(root);
        Ok(ff)
    }

    /// Open a store: acquire a lease, start the keeper, open the log.
    ///
    /// On error nothing is left behind except, if the failure came after the lease was acquired,
    /// the lease is released again.
    pub fn open(root: &Path, opts: OpenOptions) -> Result<Store, Error> {
        let layout = Layout::new(root);
        layout.check()?;
        let cfg = Config::load(&layout.config())?;
        access::apply_umask(root)?;
        access::check_writable(&layout.leases())?;
        let lease = Arc::new(
            Lease::acquire(&layout.leases(), &opts.kind, cfg.lease_config())
                .map_err(Error::coordination)?,
        );
        let fence_lease = lease.clone();
        let log = match TxLog::open(
            &layout.log(),
            &layout.checkpoints(),
            LogConfig {
                segment_bytes: cfg.log.segment_size,
            },
            Box::new(move || fence_lease.check_valid().map_err(|e| e.to_string())),
        ) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                let _ = Arc::try_unwrap(lease).map(|l| l.release());
                return Err(e.into());
            }
        };
        let journal = Journal::open(lease.dir()).map_err(Error::coordination)?;
        let on_fenced = opts.on_fenced.unwrap_or_else(|| {
            Box::new(|| {
                eprintln!(
                    "verfs: fenced: another process declared this one dead (lease timed out) and cleaned up \
                     after it; exiting without touching the store"
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
            .map_err(|e| Error::Coordination(format!("starting the lease keeper: {e}")))?;
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
            log,
            journal,
            pack: Mutex::new(None),
            voter,
            readers,
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

    /// Run `f` on the up-to-date metadata (never waits for a writer).
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Result<R, Error> {
        Ok(self.log.read(|s, _| f(s))?)
    }

    /// Commit a metadata transaction built by `f` against the up-to-date state.
    ///
    /// Chunks this process appended and synced but has not indexed yet are indexed in the same
    /// record when `f` references them. With `durable`, returns only once the record is on disk.
    /// On error nothing was committed.
    pub fn transact<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.transact_held(durable, None, f)
    }

    /// [`Store::transact`] for an operation that deduplicated against the index: a chunk in
    /// `held` that GC dropped from the index meanwhile is indexed again in the pack it was found
    /// in ([GC-4]). Every chunk the new extents reference must be indexed when the record is
    /// appended, or nothing is committed ([GC-5]).
    pub fn transact_held<T>(
        &self,
        durable: bool,
        held: Option<&Held>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let pending: HashMap<ChunkId, ChunkEntry> = self
            .voter
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let keep: std::collections::HashSet<InodeNo> = self
            .open_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .keys()
            .copied()
            .collect();
        // Orphan actions journaled inside the commit; ended again if the commit then fails.
        let mut begun: Vec<(InodeNo, ActionId)> = Vec::new();
        let committed = self.log.commit(|s| {
            let mut tx = Tx::new(s);
            tx.keep_open = keep;
            let out = f(&mut tx)?;
            // [ORPH-1]: the orphan is journaled before the record that unlinks it is appended,
            // so no crash point leaks it; if the record never lands, the inode keeps its link
            // and the cleaner leaves it alone.
            for ino in std::mem::take(&mut tx.orphaned) {
                let action = self
                    .journal
                    .begin(ACTION_ORPHAN, ino.0.to_string().as_bytes())
                    .map_err(Error::coordination)?;
                begun.push((ino, action));
            }
            let mut indexed = Vec::new();
            let referenced: Vec<ChunkId> = tx
                .ops()
                .iter()
                .filter_map(|op| match op {
                    crate::meta::Op::SetExtents { extents, .. } => {
                        Some(extents.iter().map(|x| x.chunk))
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            for id in referenced {
                if tx.added(id) {
                    continue;
                }
                if let Some(e) = pending.get(&id) {
                    tx.add_chunk(id, *e);
                    indexed.push(id);
                } else if !tx.has_chunk(id) {
                    match held.and_then(|h| h.get(&id)) {
                        Some(e) => tx.add_chunk(id, *e),
                        None => {
                            return Err(Error::Internal(format!(
                                "chunk {id} would be referenced but is not in the chunk index"
                            )))
                        }
                    }
                }
            }
            Ok((tx.finish(), (out, indexed)))
        });
        let (lsn, (out, indexed)) = match committed {
            Ok(c) => c,
            Err(e) => {
                for (_, action) in begun {
                    let _ = self.journal.end(action);
                }
                return Err(commit_err(e));
            }
        };
        if !begun.is_empty() {
            let mut of = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
            of.orphans.extend(begun);
        }
        if !indexed.is_empty() {
            let mut p = self.voter.pending.lock().unwrap_or_else(|p| p.into_inner());
            for id in indexed {
                p.remove(&id);
            }
        }
        if durable {
            self.log.sync_to(lsn)?;
        }
        Ok(out)
    }

    /// Make every record this process committed durable.
    pub fn sync(&self) -> Result<(), Error> {
        let lsn = self.log.applied_lsn();
        Ok(self.log.sync_to(lsn)?)
    }

    fn with_pack<R>(
        &self,
        f: impl FnOnce(&mut PackWriter) -> Result<R, Error>,
    ) -> Result<R, Error> {
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
                    if crate::pack::pack_path(&self.layout.packs(), id).exists() {
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
    fn salvage_poisoned(&self, guard: &mut Option<OpenPack>) -> Result<(), Error> {
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
                eprintln!("verfs: salvaging pack {id} after a failed write: {e}; `verfs recover` will seal it once this process has exited");
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
        let path = crate::pack::pack_path(&self.layout.packs(), need.0);
        res.map_err(|source| Error::Io { path, source })?;
        *durable = (need.0, len);
        Ok(())
    }

    /// Seal the open pack if it grew past the target size (after a sync + commit).
    fn maybe_roll_pack(&self) -> Result<(), Error> {
        let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
        let full = guard
            .as_ref()
            .map(|o| o.writer.len() >= self.cfg.packs.target_size)
            .unwrap_or(false);
        if full {
            self.seal_locked(&mut guard)?;
        }
        Ok(())
    }

    fn seal_locked(&self, guard: &mut Option<OpenPack>) -> Result<(), Error> {
        if let Some(open) = guard.take() {
            open.writer.seal().map_err(Error::from)?;
            self.journal.end(open.action).map_err(Error::coordination)?;
        }
        Ok(())
    }

    /// A fresh, empty set of in-flight dedup references for one operation.
    pub fn hold(&self) -> Held {
        Held {
            reg: self.voter.inflight.clone(),
            ids: HashMap::new(),
        }
    }

    /// Is this chunk stored (committed index, or appended by this process)? A hit in the
    /// committed index is registered in `held` ([GC-4]): the lookup and the registration happen
    /// under the in-flight mutex, which a GC vote also takes before it refreshes its view.
    fn known_chunk(&self, id: ChunkId, held: &mut Held) -> Result<bool, Error> {
        if held.ids.contains_key(&id)
            || self
                .voter
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
        {
            return Ok(true);
        }
        let mut reg = self
            .voter
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(entry) = self.read(|s| s.chunks.get(&id).copied())? else {
            return Ok(false);
        };
        *reg.entry((id, entry.pack)).or_insert(0) += 1;
        held.ids.insert(id, entry);
        Ok(true)
    }

    /// This process's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn compressors(&self) -> Result<&Compressors, Error> {
        self.compressors
            .get_or_init(|| {
                Compressors::new(
                    self.cfg.pipeline.compress_threads,
                    self.cfg.compression.zstd_level,
                )
            })
            .as_ref()
            .map_err(|e| Error::Internal(e.clone()))
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
    ) -> Result<(Vec<Extent>, u64), Error> {
        let chunker = BufChunker::new(&mut src, self.cfg.chunker()).map_err(Error::coordination)?;
        let pool = self.compressors()?;
        let mut window = Window::new(self.cfg.pipeline.queue_chunks);
        let mut extents = Vec::new();
        let mut size = 0u64;
        for chunk in chunker {
            let chunk = chunk.map_err(|e| Error::Io {
                path: PathBuf::from("<input>"),
                source: std::io::Error::other(e.to_string()),
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
    fn append_compressed(&self, job: crate::pipeline::Pending) -> Result<(), Error> {
        let c = job.wait()?;
        let (pack, fresh) = self.with_pack(|w| {
            // Another stream of this process may have appended it meanwhile: then the pack
            // keeps one copy and this one counts as a dedup hit.
            let fresh = !w.contains(c.id);
            w.append_compressed(c.id, c.raw_len, c.encoding, c.stored())?;
            Ok((w.id(), fresh))
        })?;
        if fresh {
            Stats::add(&self.stats.chunks_new, 1);
            Stats::add(&self.stats.bytes_in, c.raw_len as u64);
            Stats::add(&self.stats.bytes_stored, c.stored().len() as u64);
            if c.encoding == crate::pack::Encoding::Raw {
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

    /// Decode `ids` into the chunk cache on the pool, ahead of a sequential reader (at most
    /// `[cache] readahead_chunks` of them). Chunks already cached or being read ahead, and chunks
    /// in this process's open pack, are skipped; failures are ignored (the reader's own read
    /// reports them).
    pub(crate) fn prefetch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let n = self.cfg.cache.readahead_chunks;
        if n == 0 {
            return;
        }
        let Ok(pool) = self.compressors() else {
            return;
        };
        let open = self
            .pack
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(|o| o.writer.id()));
        let want: Vec<ChunkId> = ids
            .into_iter()
            .take(n)
            .filter(|id| !self.chunk_cache.contains_key(id))
            .collect();
        if want.is_empty() {
            return;
        }
        let Ok(entries) = self.read(|s| {
            want.iter()
                .filter_map(|id| s.chunks.get(id).map(|e| (*id, *e)))
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        for (id, entry) in entries {
            if Some(entry.pack) == open {
                continue;
            }
            if !self
                .prefetching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
            {
                continue;
            }
            let Ok(reader) = self.reader(entry.pack) else {
                self.prefetching
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                continue;
            };
            let (cache, busy, stats) = (
                self.chunk_cache.clone(),
                self.prefetching.clone(),
                self.stats.clone(),
            );
            pool.spawn(move || {
                // `try_get_with`: a reader asking for this chunk meanwhile waits for this decode
                // instead of doing its own.
                let _ = cache.try_get_with(id, || {
                    Stats::add(&stats.readahead_chunks, 1);
                    reader.read_chunk(id).map(Arc::new)
                });
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
    }

    /// Read one chunk's bytes, verified against its id.
    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>, Error> {
        let entry = match self.read(|s| s.chunks.get(&id).copied())? {
            Some(e) => e,
            None => self
                .voter
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .copied()
                .ok_or_else(|| Error::Corrupt {
                    path: self.layout.packs(),
                    offset: 0,
                    reason: format!("chunk {id} is referenced but not in the chunk index"),
                })?,
        };
        // A chunk still in this process's write buffer is not in the file yet.
        {
            let mut guard = self.pack.lock().unwrap_or_else(|p| p.into_inner());
            self.salvage_poisoned(&mut guard)?;
            if let Some(open) = guard.as_mut().filter(|o| o.writer.id() == entry.pack) {
                open.writer.flush().map_err(Error::from)?;
            }
        }
        let mut reader = self.reader(entry.pack)?;
        let mut res = reader.read_chunk(id);
        for _ in 0..3 {
            if res.is_ok() {
                break;
            }
            // [GC-6]: GC may have replaced the pack between this reader opening its `.pack` and
            // its `.idx`, or since it was cached: retry with the current files.
            let current = fs::metadata(reader.path())
                .ok()
                .map(|m| crate::pack::file_identity(&m));
            if current == Some(reader.identity()) {
                break;
            }
            self.drop_reader(entry.pack);
            reader = self.reader(entry.pack)?;
            res = reader.read_chunk(id);
        }
        match res {
            // The pack was synced before the record naming it was committed ([PACK-6]): a chunk
            // the index puts in this pack and that is not there means the pack is damaged
            // (truncated, or its record unreadable), not "not written yet".
            Err(crate::pack::PackError::NotFound { .. }) => {
                let (path, offset, why) = reader.missing_chunk_context();
                Err(Error::Corrupt {
                    path,
                    offset,
                    reason: format!("chunk {id} is committed in this pack but missing: {why}"),
                })
            }
            r => r.map_err(Error::from),
        }
    }

    /// A reader for `pack`, cached. A cached reader keeps the file it opened, which stays
    /// consistent even after GC replaced the pack ([GC-6]); it is re-checked against the current
    /// file at most once per second (one `stat`), so an old pack's space is not pinned for long.
    pub(crate) fn reader(&self, pack: PackId) -> Result<Arc<PackReader>, Error> {
        if let Some(c) = self.readers.get(&pack) {
            let mut checked = c.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < READER_RECHECK {
                Stats::add(&self.stats.reader_cache_hits, 1);
                return Ok(c.reader.clone());
            }
            let current = fs::metadata(c.reader.path())
                .ok()
                .map(|m| crate::pack::file_identity(&m));
            if current == Some(c.identity) {
                *checked = std::time::Instant::now();
                Stats::add(&self.stats.reader_cache_hits, 1);
                return Ok(c.reader.clone());
            }
            drop(checked);
            self.readers.invalidate(&pack);
        }
        Stats::add(&self.stats.reader_cache_misses, 1);
        let r = Arc::new(PackReader::open(&self.layout.packs(), pack).map_err(Error::from)?);
        self.readers.insert(
            pack,
            Arc::new(CachedReader {
                identity: r.identity(),
                reader: r.clone(),
                checked: Mutex::new(std::time::Instant::now()),
            }),
        );
        Ok(r)
    }

    /// Forget the cached reader of `pack` (after a read failed: the pack may have been replaced
    /// between opening its `.pack` and its `.idx`).
    pub(crate) fn drop_reader(&self, pack: PackId) {
        self.readers.invalidate(&pack);
    }

    /// Install the function a snapshot barrier runs in this process (a mount: flush every file).
    pub fn set_barrier_hook(&self, hook: BarrierHook) {
        *self
            .voter
            .barrier_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// How this process itself would vote on `kind` (a coordinator is not among the participants
    /// of its own proposal, but its other threads may hold references too).
    pub(crate) fn own_vote(&self, kind: &str, payload: &serde_json::Value) -> two_phase::Vote {
        self.voter.vote(kind, payload)
    }

    /// Propose `kind` to every live process (two-phase commit) and wait for the decision. The
    /// caller applies a Commit, then calls [`two_phase::finish`].
    pub fn propose(
        &self,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<two_phase::Outcome, Error> {
        two_phase::propose(
            &self.layout.twopc(),
            &self.layout.leases(),
            &self.lease,
            kind,
            payload,
            two_phase::ProposeOptions {
                timeout: Duration::from_millis(self.cfg.two_phase.timeout_ms),
                poll_interval: Duration::from_millis(20),
                lease: self.cfg.lease_config(),
            },
            // A participant that died without voting is cleaned up here, so it never blocks the
            // decision ([2PC-4]).
            &mut |dead| {
                let _ = crate::recover::clean_lease(self, dead);
            },
        )
        .map_err(Error::coordination)
    }

    /// Write a file's bytes (holes as zeros) to `out`.
    pub fn read_extents(
        &self,
        inode: &Inode,
        extents: &[Extent],
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        let mut pos = 0u64;
        let zeros = vec![0u8; 64 << 10];
        let write = |out: &mut dyn Write, b: &[u8]| out.write_all(b).map_err(Error::io("<output>"));
        let fill = |out: &mut dyn Write, mut n: u64| -> Result<(), Error> {
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                write(out, &zeros[..k])?;
                n -= k as u64;
            }
            Ok(())
        };
        let ahead = self.cfg.cache.readahead_chunks;
        for (i, x) in extents.iter().enumerate() {
            if x.file_off >= inode.size {
                break;
            }
            if x.file_off > pos {
                fill(out, x.file_off - pos)?;
                pos = x.file_off;
            }
            if ahead > 0 && i % ahead.div_ceil(2) == 0 {
                self.prefetch(extents[i + 1..].iter().map(|x| x.chunk));
            }
            let data = if ahead > 0 {
                self.chunk(x.chunk)?
            } else {
                Arc::new(self.read_chunk(x.chunk)?)
            };
            let start = x.chunk_off as usize;
            let end = start + x.len as usize;
            let slice = data.get(start..end).ok_or_else(|| Error::Corrupt {
                path: self.layout.packs(),
                offset: 0,
                reason: format!(
                    "extent {}+{} beyond chunk {} of {} bytes",
                    start,
                    x.len,
                    x.chunk,
                    data.len()
                ),
            })?;
            let keep = (inode.size - x.file_off).min(slice.len() as u64) as usize;
            // Overlapping extents (never produced by verfs) would rewind: skip the overlap.
            let skip = (pos - x.file_off).min(keep as u64) as usize;
            write(out, &slice[skip..keep])?;
            pos = x.file_off + keep as u64;
        }
        if inode.size > pos {
            fill(out, inode.size - pos)?;
        }
        Ok(())
    }

    /// Resolve a store path (no symlinks followed) to its inode and extents; `/.snapshots/NAME/...`
    /// paths are read from that snapshot. Paths here and below are bytes (`&str`, `&[u8]`, an
    /// `OsStr`'s bytes): a stored name need not be UTF-8.
    pub fn lookup(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<(Inode, Vec<Extent>), Error> {
        self.view(path.as_ref(), |s, path| {
            let tx = Tx::new(s);
            let ino = tx.resolve(path)?;
            let inode = s.inodes.get(&ino).cloned().ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            Ok((inode, s.extents.get(&ino).cloned().unwrap_or_default()))
        })?
    }

    pub fn stat(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Inode, Error> {
        Ok(self.lookup(path)?.0)
    }

    /// A directory's entries with their inodes, sorted by name; a non-directory lists itself.
    pub fn list(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Vec<(Vec<u8>, Inode)>, Error> {
        let path = path.as_ref();
        if let Some((name, _)) = crate::snapshot::split_path(path) {
            if name.is_empty() {
                // `/.snapshots`: one read-only directory per ready snapshot.
                return Ok(self
                    .snapshots()?
                    .into_iter()
                    .filter(|(_, (_, i))| i.ready)
                    .map(|(n, (_, i))| {
                        let mut d = Inode::new(InodeNo(0), FileKind::Dir, 0o555);
                        d.mtime = i.time;
                        d.ctime = i.time;
                        d.atime = i.time;
                        (n.into_bytes(), d)
                    })
                    .collect());
            }
        }
        self.view(path, |s, path| {
            let tx = Tx::new(s);
            let ino = tx.resolve(path)?;
            let inode = s.inodes.get(&ino).ok_or_else(|| Error::NotFound {
                path: show_path(path),
            })?;
            if inode.kind != FileKind::Dir {
                let name = components(path)?
                    .last()
                    .map(|c| c.to_vec())
                    .unwrap_or_default();
                return Ok(vec![(name, inode.clone())]);
            }
            let mut out = Vec::new();
            for (name, child) in s.dirs.get(&ino).into_iter().flatten() {
                if let Some(i) = s.inodes.get(child) {
                    out.push((name.clone(), i.clone()));
                }
            }
            Ok(out)
        })?
    }

    /// `cat`: a regular file's bytes to `out`.
    pub fn cat(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        let (inode, extents) = self.lookup(path)?;
        match inode.kind {
            FileKind::File => self.read_extents(&inode, &extents, out),
            FileKind::Dir => Err(Error::IsADirectory {
                path: show_path(path),
            }),
            _ => Err(Error::InvalidPath {
                path: show_path(path),
                reason: "not a regular file".into(),
            }),
        }
    }

    pub fn read_all(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        self.cat(path, &mut v)?;
        Ok(v)
    }

    /// `mkdir [-p]`.
    pub fn mkdir(
        &self,
        path: &(impl AsRef<[u8]> + ?Sized),
        perm: u32,
        parents: bool,
    ) -> Result<(), Error> {
        let path = path.as_ref();
        self.transact(true, |tx| {
            if parents {
                tx.mkdir_p(path, perm).map(|_| ())
            } else {
                let at = tx.entry(path)?;
                tx.create(
                    &at,
                    &show_path(path),
                    Inode::new(InodeNo(0), FileKind::Dir, perm),
                )
                .map(|_| ())
            }
        })
    }

    /// `rm [-r]` (a directory needs `recursive`).
    pub fn remove(&self, path: &(impl AsRef<[u8]> + ?Sized), recursive: bool) -> Result<(), Error> {
        let path = path.as_ref();
        self.transact(true, |tx| {
            let at = tx.entry(path)?;
            if recursive {
                tx.remove_tree(&at, &show_path(path))
            } else {
                tx.remove(&at, &show_path(path), false)
            }
        })
    }

    /// `rmdir`: an empty directory.
    pub fn rmdir(&self, path: &(impl AsRef<[u8]> + ?Sized)) -> Result<(), Error> {
        let path = path.as_ref();
        self.transact(true, |tx| {
            let at = tx.entry(path)?;
            if tx
                .lookup(at.parent, &at.name)
                .and_then(|i| tx.inode(i))
                .map(|i| i.kind)
                != Some(FileKind::Dir)
            {
                return Err(Error::NotADirectory {
                    path: show_path(path),
                });
            }
            tx.remove(&at, &show_path(path), true)
        })
    }

    /// `mv SRC DST`: when DST is an existing directory the entry moves inside it. Decided under
    /// the log lock, so of several processes racing to move one source exactly one succeeds.
    pub fn rename(
        &self,
        src: &(impl AsRef<[u8]> + ?Sized),
        dst: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<(), Error> {
        let (src, dst) = (src.as_ref(), dst.as_ref());
        self.transact(true, |tx| {
            let from = tx.entry(src)?;
            tx.lookup(from.parent, &from.name)
                .ok_or_else(|| Error::NotFound {
                    path: show_path(src),
                })?;
            let (to, to_path) = into_dir_or_self(tx, dst, &from.name)?;
            tx.rename(&from, &show_path(src), &to, &to_path)
        })
    }

    /// `ln TARGET LINK` (hard) or `ln -s TARGET LINK` (symbolic; TARGET is stored as given).
    pub fn link(
        &self,
        target: &(impl AsRef<[u8]> + ?Sized),
        link: &(impl AsRef<[u8]> + ?Sized),
        symbolic: bool,
    ) -> Result<(), Error> {
        let (target, link) = (target.as_ref(), link.as_ref());
        self.transact(true, |tx| {
            if symbolic {
                let base = target
                    .rsplit(|&b| b == b'/')
                    .next()
                    .unwrap_or(target)
                    .to_vec();
                let (to, to_path) = into_dir_or_self(tx, link, &base)?;
                let mut i = Inode::new(InodeNo(0), FileKind::Symlink, 0o777);
                i.target = target.to_vec();
                i.size = i.target.len() as u64;
                tx.create(&to, &to_path, i).map(|_| ())
            } else {
                let ino = tx.resolve(target)?;
                let src = tx.entry(target)?;
                let (to, to_path) = into_dir_or_self(tx, link, &src.name)?;
                tx.link(ino, &show_path(target), &to, &to_path)
            }
        })
    }

    /// Commit a batch of files written by [`Store::write_stream`] below `base` (directories
    /// created as needed, existing regular files replaced). The pack is synced first.
    pub fn commit_files(
        &self,
        base: &[Vec<u8>],
        dirs: &[(Vec<Vec<u8>>, Inode)],
        files: Vec<PendingFile>,
        held: Option<&Held>,
    ) -> Result<(), Error> {
        self.sync_pack()?;
        self.transact_held(false, held, |tx| {
            for (comps, proto) in dirs {
                let full: Vec<Vec<u8>> = base.iter().chain(comps.iter()).cloned().collect();
                let ino = mkdir_comps(tx, &full, proto.perm)?;
                if let Some(mut i) = tx.inode(ino).cloned() {
                    i.perm = proto.perm;
                    i.uid = proto.uid;
                    i.gid = proto.gid;
                    i.mtime = proto.mtime;
                    i.atime = proto.atime;
                    tx.put_inode(i);
                }
            }
            for f in files {
                let full: Vec<Vec<u8>> = base.iter().chain(f.comps.iter()).cloned().collect();
                let Some((name, parents)) = full.split_last() else {
                    continue;
                };
                let parent = mkdir_comps(tx, parents, 0o755)?;
                let at = crate::meta::Entry {
                    parent,
                    name: name.clone(),
                };
                let path = display(&full);
                let kind = f.inode.kind;
                let ino = tx.write_file(&at, &path, f.inode.clone(), f.extents)?;
                // Restore the attributes `create` resets.
                if let Some(mut i) = tx.inode(ino).cloned() {
                    i.kind = kind;
                    i.size = f.inode.size;
                    i.mtime = f.inode.mtime;
                    i.atime = f.inode.atime;
                    i.target = f.inode.target.clone();
                    i.rdev = f.inode.rdev;
                    tx.put_inode(i);
                }
            }
            Ok(())
        })?;
        self.maybe_roll_pack()
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
                eprintln!("verfs: this process's counters were not added to stats.json: {e}");
            }
        }
        self.lease.release_shared().map_err(Error::coordination)
    }

    /// Write a checkpoint if the log grew by `log.checkpoint_every` records since the newest one,
    /// then propose (two-phase commit) to delete the segments it covers.
    pub fn maintain(&self) -> Result<Option<Lsn>, Error> {
        let head = self.log.refresh()?;
        let newest = txlog::list_checkpoints(&self.layout.checkpoints())?
            .last()
            .map(|c| c.0)
            .unwrap_or(Lsn(0));
        if head.0 < newest.0 + self.cfg.log.checkpoint_every {
            return Ok(None);
        }
        self.checkpoint_and_truncate().map(Some)
    }

    /// Checkpoint now, then delete covered segments once every live process agreed (2PC).
    pub fn checkpoint_and_truncate(&self) -> Result<Lsn, Error> {
        let lsn = self.log.checkpoint()?;
        let covered = self.log.segments_covered_by(lsn)?;
        let stale = self.log.stale_checkpoints()?;
        if covered.is_empty() && stale.is_empty() {
            return Ok(lsn);
        }
        let decision = self.propose(PROPOSAL_LOG_TRUNCATE, serde_json::json!({ "lsn": lsn.0 }))?;
        if decision.decision.is_commit() {
            for p in covered.iter().chain(stale.iter()) {
                match io_site!("store.log-truncate-unlink", fs::remove_file(p)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(Error::Io {
                            path: p.clone(),
                            source,
                        })
                    }
                }
            }
            verfs_coordination::fsutil::fsync_dir(&self.layout.log())
                .map_err(Error::io(self.layout.log()))?;
        }
        two_phase::finish(&self.layout.twopc(), &decision.txn).map_err(Error::coordination)?;
        Ok(lsn)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.close_inner();
        }
    }
}

/// How long a cached pack reader is trusted before its file is `stat`ed again.
const READER_RECHECK: Duration = Duration::from_secs(1);

/// A cached [`PackReader`] and the identity (device, inode) of the file it opened.
pub(crate) struct CachedReader {
    reader: Arc<PackReader>,
    identity: (u64, u64),
    /// When the pack file was last seen to be this reader's (re-checked once a second, [GC-6]).
    checked: Mutex<std::time::Instant>,
}

/// What the lease keeper needs to vote for this process; the `Store` works on the same state.
pub(crate) struct Voter {
    log: Arc<TxLog<MetaState>>,
    /// Chunks appended to this process's packs and not yet indexed by a committed record.
    pub(crate) pending: Mutex<HashMap<ChunkId, ChunkEntry>>,
    pub(crate) inflight: InFlight,
    pub(crate) barrier_hook: Mutex<Option<BarrierHook>>,
}

impl Voter {
    /// This process's vote on a proposal.
    fn vote(&self, kind: &str, payload: &serde_json::Value) -> two_phase::Vote {
        match kind {
            PROPOSAL_SNAPSHOT => {
                let hook = self.barrier_hook.lock().unwrap_or_else(|p| p.into_inner());
                match hook.as_ref().map(|h| h()) {
                    Some(Err(reason)) => two_phase::Vote::Abort {
                        reason: format!("flushing open files: {reason}"),
                    },
                    _ => two_phase::Vote::Commit,
                }
            }
            PROPOSAL_GC_REWRITE => {
                let packs: std::collections::HashSet<PackId> = payload
                    .get("packs")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str()?.parse::<PackId>().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                // [GC-4]: under the in-flight mutex, so no lookup of this process can register
                // a reference between the check and the refreshed view: every later lookup sees
                // at least this view, in which the discarded chunks are no longer indexed.
                let reg = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                // A chunk this process appended and has not committed yet, in a pack that was
                // sealed meanwhile (another thread rolled it), is garbage to the sweep.
                let uncommitted = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(_, e)| packs.contains(&e.pack))
                    .map(|(id, e)| (*id, e.pack));
                if let Some((id, pack)) = uncommitted {
                    return two_phase::Vote::Abort {
                        reason: format!("chunk {id} of pack {pack} is not committed yet here"),
                    };
                }
                let res = self.log.read(|s, _| {
                    reg.keys()
                        .find(|(id, pack)| {
                            packs.contains(pack) && s.chunks.get(id).map(|e| e.pack) != Some(*pack)
                        })
                        .copied()
                });
                match res {
                    Ok(None) => two_phase::Vote::Commit,
                    Ok(Some((id, pack))) => two_phase::Vote::Abort {
                        reason: format!(
                            "an operation in flight here references chunk {id} of pack {pack}"
                        ),
                    },
                    Err(e) => two_phase::Vote::Abort {
                        reason: e.to_string(),
                    },
                }
            }
            PROPOSAL_LOG_TRUNCATE => {
                let Some(lsn) = payload.get("lsn").and_then(|v| v.as_u64()) else {
                    return two_phase::Vote::Abort {
                        reason: "log-truncate proposal without lsn".into(),
                    };
                };
                // Moving past the checkpoint means reading up to the head: then no deleted segment
                // is ever needed by this process.
                match self.log.refresh() {
                    Ok(head) if head.0 >= lsn => two_phase::Vote::Commit,
                    Ok(head) => two_phase::Vote::Abort {
                        reason: format!("at lsn {head}, behind {lsn}"),
                    },
                    Err(e) => two_phase::Vote::Abort {
                        reason: e.to_string(),
                    },
                }
            }
            other => two_phase::Vote::Abort {
                reason: format!("unknown proposal kind {other:?}"),
            },
        }
    }
}

/// `/a/b` from components.
pub fn display(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&show_path(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Create missing directories along `comps`; returns the last one's inode.
fn mkdir_comps(tx: &mut Tx<'_>, comps: &[Vec<u8>], perm: u32) -> Result<InodeNo, Error> {
    let mut cur = InodeNo::ROOT;
    for (i, c) in comps.iter().enumerate() {
        let path = display(&comps[..=i]);
        cur = match tx.lookup(cur, c) {
            Some(ino) => {
                if tx.inode(ino).map(|n| n.kind) != Some(FileKind::Dir) {
                    return Err(Error::NotADirectory { path });
                }
                ino
            }
            None => {
                let at = crate::meta::Entry {
                    parent: cur,
                    name: c.clone(),
                };
                tx.create(&at, &path, Inode::new(InodeNo(0), FileKind::Dir, perm))?
            }
        };
    }
    Ok(cur)
}

/// `cp`/`mv` destination rule: an existing directory DST means DST/NAME, anything else DST itself.
/// Also returns the destination as a path for messages.
fn into_dir_or_self(
    tx: &Tx<'_>,
    dst: &[u8],
    name: &[u8],
) -> Result<(crate::meta::Entry, String), Error> {
    if let Ok(ino) = tx.resolve(dst) {
        if tx.inode(ino).map(|i| i.kind) == Some(FileKind::Dir) {
            let path = format!(
                "{}/{}",
                show_path(dst).trim_end_matches('/'),
                show_path(name)
            );
            return Ok((
                crate::meta::Entry {
                    parent: ino,
                    name: name.to_vec(),
                },
                path,
            ));
        }
    }
    Ok((tx.entry(dst)?, show_path(dst)))
}

/// A timestamp from file metadata.
pub fn ts_of(secs: i64, nsecs: i64) -> Timestamp {
    Timestamp {
        secs,
        nsecs: nsecs.clamp(0, 999_999_999) as u32,
    }
}
