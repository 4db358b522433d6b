//! `verfs repair`: rebuild a consistent store from what survives damage to metadata pages or to
//! log records, and report exactly what was lost. Offline, like e2fsck: it refuses while any
//! other process holds a live lease. Protocol, rules and crash points: `data-layout.md` 5.12.
//!
//! The parts: `log` reads the log past damaged records, [`PageStore::salvage`] reads the trees
//! past damaged pages, `rebuild` turns the surviving state into a consistent one (entries to
//! missing inodes removed, unreachable inodes into `/lost+found`, link counts, sizes, extents
//! whose chunks are gone cut), `report` what is reported, and this file picks the base, commits the result as a new
//! checkpoint and removes what the checkpoint replaces.

mod log;
mod rebuild;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use verfs_coordination::fsutil;
use verfs_coordination::journal;
use verfs_coordination::lease::{self, Lease, LeaseState};
use verfs_coordination::lock::{LockOwner, LockTable, Mode, Resource};
use verfs_coordination::manifest;
use verfs_coordination::two_phase;
use verfs_coordination::txlog::{self, LogPosition, Lsn, StateMachine};

use crate::config::Config;
use crate::error::Error;
use crate::format::keys::{self, Body, TAG_INODE};
use crate::ids::{InodeNo, PackId};
use crate::kinds::{ACTION_OPEN_PACK, LOCK_GC, LOCK_META_PAGES};
use crate::layout::Layout;
use crate::meta::tree::{LostSubtree, PageIndex, PageStore, PageWriter, Root, Salvage};
use crate::meta::MetaState;
use crate::pack::{self, PackReader};

use rebuild::mend_extent_parts;
use report::{report_salvage, show};
pub use report::{
    show_key, DamagedPage, DamagedRecord, Holder, Loss, LossKind, Outcome, RepairError,
    RepairReport,
};

/// How to run [`repair`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// Find and report everything, change nothing (new pages go to a temporary directory).
    pub dry_run: bool,
}

/// Repair the store at `root` (see the module doc). Takes a lease of its own, the log lock and
/// the DLM locks `meta-pages` and `gc` in EX for its whole run; releases them at the end.
///
/// On an error before the commit point (the new checkpoint's rename) the store is as it was,
/// but for dead leases cleaned up after and page files no root reaches; after it the store is
/// repaired and the next repair removes what this one left (`data-layout.md` 5.12, RP1-RP4).
pub fn repair(root: &Path, opts: RepairOptions) -> Result<RepairReport, RepairError> {
    let layout = Layout::new(root);
    layout.check()?;
    let cfg = Config::load(&layout.config())?;
    crate::access::apply_umask(root)?;
    crate::access::check_writable(&layout.leases())?;
    let lease = Arc::new(
        Lease::acquire(&layout.leases(), "cli repair", cfg.lease_config()).map_err(Error::from)?,
    );
    let keeper = Lease::start_keeper(lease.clone(), Box::new(|| {}), None)
        .map_err(|e| Error::io(layout.leases())(e))?;
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..RepairReport::default()
    };
    let res = Offline::start(&layout, &cfg, &lease).and_then(|o| o.run(opts, &mut report));
    keeper.stop();
    let released = lease.release_shared();
    res?;
    released.map_err(Error::from)?;
    Ok(report)
}

/// The repair's hold on the store: the log lock and the two maintenance locks.
struct Offline<'a> {
    layout: &'a Layout,
    cfg: &'a Config,
    lease: &'a Lease,
    _log_lock: File,
    _locks: LockOwner,
}

impl<'a> Offline<'a> {
    fn start(
        layout: &'a Layout,
        cfg: &'a Config,
        lease: &'a Lease,
    ) -> Result<Offline<'a>, RepairError> {
        // The log lock for the whole run: a process that starts meanwhile cannot commit.
        let lock_path = layout.log().join("LOCK");
        let log_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        // A committer holds it for microseconds; one that holds it for seconds is stopped
        // (SIGSTOP) mid-commit, and waiting for it could be forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match log_lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(RepairError::Locked {
                        store: layout.root.clone(),
                        lock: format!("log lock ({})", lock_path.display()),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e).into()),
            }
        }
        let locks = LockTable::open(&layout.root.join("locks"))
            .and_then(|t| t.owner())
            .map_err(Error::coordination)?;
        for name in [LOCK_META_PAGES, LOCK_GC] {
            if locks
                .try_acquire(&Resource::Named(name.into()), Mode::Ex)
                .is_err()
            {
                return Err(RepairError::Locked {
                    store: layout.root.clone(),
                    lock: name.into(),
                });
            }
        }
        Ok(Offline {
            layout,
            cfg,
            lease,
            _log_lock: log_lock,
            _locks: locks,
        })
    }

    /// Refuse if another process holds a live lease (or is creating one, or is cleaning up after
    /// a dead one); with `clean`, claim and clean up after the dead ones ([LEASE-6]: the claim
    /// happens under the log lock, which this repair holds).
    fn settle_leases(&self, clean: bool, report: &mut RepairReport) -> Result<(), RepairError> {
        let leases = self.layout.leases();
        let lcfg = self.cfg.lease_config();
        let me = self.lease.id().clone();
        let now = SystemTime::now();
        let mut holders = Vec::new();
        let mut dead = Vec::new();
        for e in lease::list(&leases).map_err(Error::from)? {
            if e.id == me {
                continue;
            }
            let alive = match &e.state {
                LeaseState::Claimed { cleaner } => {
                    lease::is_live_lease(&leases, cleaner) && cleaner != &me
                }
                _ => !e.liveness(&lcfg, now).is_dead(),
            };
            if alive {
                let (pid, host, kind) = match &e.info {
                    lease::EntryInfo::Valid(i) => (i.pid, i.host.clone(), i.kind.clone()),
                    _ => (
                        lease::partial_pid(&e.path).unwrap_or(0),
                        "?".into(),
                        "starting".into(),
                    ),
                };
                holders.push(Holder {
                    lease: e.id.to_string(),
                    pid,
                    host,
                    kind,
                });
            } else {
                dead.push(e);
            }
        }
        if !holders.is_empty() {
            return Err(RepairError::Busy {
                store: self.layout.root.clone(),
                holders,
            });
        }
        for e in dead {
            if !clean {
                report.fixes.push(format!(
                    "lease {} of a dead process: cleaned up after",
                    e.id
                ));
                continue;
            }
            let claimed = match &e.state {
                LeaseState::Live => lease::claim(&leases, &e.id, &me),
                LeaseState::Partial => lease::claim_partial(&leases, &e.id, &me),
                LeaseState::Claimed { cleaner } => {
                    lease::reclaim_abandoned(&leases, &e.id, cleaner, &me)
                }
            }
            .map_err(Error::from)?;
            let Some(claimed) = claimed else { continue };
            if let Ok(p) = journal::read_pending(&claimed.journal_path()) {
                for a in p.pending.iter().filter(|a| a.kind == ACTION_OPEN_PACK) {
                    let id = std::str::from_utf8(&a.payload)
                        .ok()
                        .and_then(|s| s.parse::<PackId>().ok());
                    if let Some(id) =
                        id.filter(|id| pack::pack_path(&self.layout.packs(), *id).exists())
                    {
                        pack::seal_abandoned(&self.layout.packs(), id).map_err(Error::from)?;
                    }
                }
            }
            // Orphans and unfinished snapshots of the dead process are settled by the rebuild
            // (an unreachable inode with no link is deleted, a snapshot not ready is dropped).
            claimed.finish().map_err(Error::from)?;
            report.fixes.push(format!(
                "lease {} of a dead process: cleaned up after",
                e.id
            ));
        }
        if clean {
            let is_dead = |id: &lease::LeaseId| id != &me;
            manifest::recover(&self.layout.manifests(), &is_dead).map_err(Error::from)?;
            for t in two_phase::recover(&self.layout.twopc(), &is_dead).map_err(Error::from)? {
                // A committed log truncation needs no finishing: the repair's checkpoint
                // replaces every segment anyway.
                two_phase::finish(&self.layout.twopc(), &t.txn).map_err(Error::from)?;
            }
        }
        Ok(())
    }

    fn run(self, opts: RepairOptions, report: &mut RepairReport) -> Result<(), RepairError> {
        self.settle_leases(!opts.dry_run, report)?;
        let pages = Arc::new(PageStore::open(
            &self.layout.meta(),
            self.cfg.cache.meta_bytes,
        )?);
        // New pages: the store's page directory, or a scratch one that a dry run throws away.
        let scratch = if opts.dry_run {
            let dir =
                std::env::temp_dir().join(format!("verfs-repair-{:016x}", rand::random::<u64>()));
            Some(Scratch(dir))
        } else {
            None
        };
        let out = match &scratch {
            Some(s) => Arc::new(PageStore::open(&s.0, self.cfg.cache.meta_bytes)?),
            None => pages.clone(),
        };
        let damaged_files = damaged_files(&pages)?;
        let ckpts = self.checkpoints(report)?;
        let mut others = PageIndex::new();
        for c in &ckpts {
            for r in c.roots() {
                pages.index_pages(&r, &mut others);
            }
        }
        let inventory = self.inventory()?;
        let base = self.choose_base(&pages, &ckpts, &others)?;
        report.base_lsn = base.lsn.0;
        for (lsn, salvage) in &base.newer {
            let from = report.damaged_pages.len();
            report_salvage(
                &format!("namespace of checkpoint {lsn}"),
                salvage,
                false,
                report,
            );
            for d in &mut report.damaged_pages[from..] {
                d.recovered_from = Some(format!(
                    "checkpoint {} and the log records after it",
                    base.lsn
                ));
            }
        }
        for d in &base.scan.damaged {
            report.damaged_log_records.push(d.clone());
        }
        // Damage in segments before the base (covered by it, never read by an open, but still
        // on disk for fsck to report): the commit removes those segments.
        let full = log::scan(&self.layout.log(), Lsn(0), None)?;
        for d in full.damaged {
            if !report
                .damaged_log_records
                .iter()
                .any(|x| x.segment == d.segment && x.offset == d.offset)
            {
                report.fixes.push(format!(
                    "{} at byte {}: {} (in a segment the checkpoint covers: removed)",
                    d.segment.display(),
                    d.offset,
                    d.reason
                ));
            }
        }
        let mut lost_lsns = base.scan.lost_lsns();

        // The state at the base: its own roots when its trees are whole, else rebuilt from
        // what the salvage read.
        let (ns_lost, extent_damage, mut state) = self.base_state(
            &pages,
            &out,
            &base,
            &others,
            &damaged_files,
            &inventory,
            report,
        )?;
        for r in &base.scan.records {
            match state.apply(r.lsn, &r.payload) {
                Ok(()) => report.records_applied += 1,
                Err(reason) => {
                    report.damaged_log_records.push(DamagedRecord {
                        segment: r.segment.clone(),
                        offset: r.offset,
                        lsns: vec![r.lsn.0],
                        reason: format!("valid record that does not apply: {reason}"),
                    });
                    lost_lsns.push(r.lsn.0);
                }
            }
        }
        let head = base.scan.head;
        report.head_lsn = head.0;
        self.repair_snapshots(&pages, &out, &mut state, &others, &damaged_files, report)?;
        let plan = rebuild::plan(&state, &inventory, &ns_lost, &extent_damage)?;
        report.losses.extend(plan.losses);
        report.fixes.extend(plan.fixes);
        report.chunks_recovered += plan.chunks_recovered;
        lost_lsns.sort_unstable();
        lost_lsns.dedup();
        report.lost_lsns = lost_lsns;
        if !damaged_files.is_empty() {
            report.fixes.push(format!(
                "{} damaged page files that no kept tree reaches: removed",
                damaged_files.len()
            ));
        }
        if opts.dry_run || report.outcome() == Outcome::Clean {
            return Ok(());
        }
        for op in &plan.ops {
            state.apply_op(head.0, op)?;
        }
        self.commit(&pages, &state, head, report)
    }

    /// Every checkpoint that verifies, newest first; the others are reported.
    fn checkpoints(&self, report: &mut RepairReport) -> Result<Vec<Ckpt>, RepairError> {
        let mut out = Vec::new();
        for (lsn, path) in txlog::list_checkpoints(&self.layout.checkpoints())
            .map_err(Error::from)?
            .into_iter()
            .rev()
        {
            let decoded = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| txlog::decode_checkpoint(&path, &b).map_err(|e| e.to_string()))
                .and_then(|c| {
                    if c.lsn != lsn {
                        return Err(format!("header says lsn {}, name says {lsn}", c.lsn));
                    }
                    let body = keys::decode_body(&c.body).map_err(|e| e.to_string())?;
                    let ns = Root::decode(&body.namespace).map_err(|e| e.to_string())?;
                    let chunks = Root::decode(&body.chunks).map_err(|e| e.to_string())?;
                    Ok(Ckpt {
                        lsn,
                        at: c.at,
                        bytes: c.body,
                        body,
                        ns,
                        chunks,
                    })
                });
            match decoded {
                Ok(c) => out.push(c),
                Err(reason) => report
                    .bad_checkpoints
                    .push(format!("{}: {reason}", path.display())),
            }
        }
        Ok(out)
    }

    /// Chunk id -> the packs whose index lists it ("a pack index is the truth for where a chunk
    /// lives"; a pack without a valid `.idx` is scanned).
    fn inventory(&self) -> Result<rebuild::Inventory, RepairError> {
        let packs = self.layout.packs();
        let mut inv = rebuild::Inventory::new();
        for id in pack::list_packs(&packs).map_err(Error::from)?.packs {
            let r = PackReader::open(&packs, id).map_err(Error::from)?;
            for (c, raw) in r.chunks() {
                inv.entry(c).or_default().push((id, raw));
            }
        }
        for v in inv.values_mut() {
            v.sort_unstable();
        }
        Ok(inv)
    }

    /// The newest checkpoint whose namespace tree salvages whole and whose log is no worse than
    /// the newest's; else the newest (with its losses); else the log from its start.
    fn choose_base(
        &self,
        pages: &PageStore,
        ckpts: &[Ckpt],
        others: &PageIndex,
    ) -> Result<Base, RepairError> {
        let mut fallback: Option<Base> = None;
        let mut newer: Vec<(Lsn, Salvage)> = Vec::new();
        let mut newest_lost: Option<Vec<u64>> = None;
        let candidates = ckpts.iter().map(Some).chain(std::iter::once(None));
        for c in candidates {
            let scan = match c {
                Some(c) => log::scan(&self.layout.log(), c.lsn, Some(c.at))?,
                None => log::scan(&self.layout.log(), Lsn(0), None)?,
            };
            let mut ns = BTreeMap::new();
            let ns_salvage = match c {
                Some(c) => pages.salvage(&c.ns, others, |k, v| {
                    ns.insert(k.to_vec(), v.to_vec());
                }),
                None => Salvage::default(),
            };
            let lost = scan.lost_lsns();
            let newest = newest_lost.get_or_insert_with(|| lost.clone());
            let whole = ns_salvage.lost.is_empty() && lost.iter().all(|l| newest.contains(l));
            let mut b = Base {
                lsn: c.map_or(Lsn(0), |c| c.lsn),
                ckpt: c.cloned(),
                scan,
                ns,
                ns_salvage,
                newer: Vec::new(),
            };
            if whole {
                b.newer = newer;
                return Ok(b);
            }
            newer.push((b.lsn, b.ns_salvage.clone()));
            if fallback.is_none() && c.is_some() {
                fallback = Some(b);
            }
        }
        fallback.ok_or_else(|| RepairError::Unrepairable {
            store: self.layout.root.clone(),
            reason: "no checkpoint verifies, and the log does not hold every record from lsn 1"
                .into(),
        })
    }

    /// The state at the base, and what its namespace tree lost.
    #[allow(clippy::too_many_arguments)]
    fn base_state(
        &self,
        pages: &Arc<PageStore>,
        out: &Arc<PageStore>,
        base: &Base,
        others: &PageIndex,
        damaged_files: &BTreeSet<u64>,
        inventory: &rebuild::Inventory,
        report: &mut RepairReport,
    ) -> Result<(Vec<LostSubtree>, BTreeSet<InodeNo>, MetaState), RepairError> {
        let Some(c) = &base.ckpt else {
            return Ok((
                Vec::new(),
                BTreeSet::new(),
                MetaState::empty(&Some(out.clone())),
            ));
        };
        let mut chunks = BTreeMap::new();
        let chunk_salvage = pages.salvage(&c.chunks, others, |k, v| {
            chunks.insert(k.to_vec(), v.to_vec());
        });
        report_salvage("namespace", &base.ns_salvage, false, report);
        report_salvage("chunk index", &chunk_salvage, true, report);
        let rebuild = base.ns_salvage.met_damage()
            || chunk_salvage.met_damage()
            || reaches(pages, &c.ns, damaged_files)
            || reaches(pages, &c.chunks, damaged_files);
        if !rebuild {
            let s = MetaState::decode_checkpoint(&Some(pages.clone()), c.lsn, &c.bytes).map_err(
                |reason| Error::Corrupt {
                    path: self.layout.checkpoints(),
                    offset: 0,
                    reason,
                },
            )?;
            return Ok((Vec::new(), BTreeSet::new(), s));
        }
        let mut ns = base.ns.clone();
        let extent_damage = mend_extent_parts(&mut ns);
        let mut recovered = 0u64;
        for (id, copies) in inventory {
            let k = keys::chunk_key(*id);
            if chunks.contains_key(&k[..]) || !chunk_salvage.lost.iter().any(|l| l.contains(&k)) {
                continue;
            }
            if let Some(&(pack, raw_len)) = copies.first() {
                chunks.insert(
                    k.to_vec(),
                    keys::encode_chunk_value(&crate::meta::ChunkEntry { pack, raw_len }),
                );
                recovered += 1;
            }
        }
        if recovered > 0 {
            report.chunks_recovered += recovered;
            report.fixes.push(format!(
                "{recovered} chunk index entries rebuilt from the pack indexes"
            ));
        }
        let mut w = PageWriter::new(out)?;
        let ns_root = out.build(&ns, &mut w)?;
        let chunk_root = out.build(&chunks, &mut w)?;
        w.finish()?;
        let max_ino = ns
            .keys()
            .filter(|k| k.first() == Some(&TAG_INODE))
            .filter_map(|k| keys::key_ino(k).ok())
            .map(|i| i.0)
            .max()
            .unwrap_or(1);
        let body = Body {
            namespace: ns_root.encode().to_vec(),
            chunks: chunk_root.encode().to_vec(),
            next_ino: c.body.next_ino.max(max_ino.saturating_add(1)).max(2),
            inodes: ns.keys().filter(|k| k.first() == Some(&TAG_INODE)).count() as u64,
            chunk_count: chunks.len() as u64,
            snapshots: c.body.snapshots.clone(),
        };
        let s = MetaState::decode_checkpoint(&Some(out.clone()), c.lsn, &keys::encode_body(&body))
            .map_err(|reason| Error::Corrupt {
                path: out.dir().to_path_buf(),
                offset: 0,
                reason,
            })?;
        Ok((base.ns_salvage.lost.clone(), extent_damage, s))
    }

    /// Rebuild every snapshot tree that lost a page or reaches a damaged page file.
    fn repair_snapshots(
        &self,
        pages: &PageStore,
        out: &PageStore,
        state: &mut MetaState,
        others: &PageIndex,
        damaged_files: &BTreeSet<u64>,
        report: &mut RepairReport,
    ) -> Result<(), RepairError> {
        for info in state.snapshots.values_mut() {
            let Some(root) = info.root else { continue };
            let name = format!("snapshot {}", String::from_utf8_lossy(&info.name));
            let mut entries = BTreeMap::new();
            let salvage = pages.salvage(&root, others, |k, v| {
                entries.insert(k.to_vec(), v.to_vec());
            });
            if !salvage.met_damage() && !reaches(pages, &root, damaged_files) {
                continue;
            }
            report_salvage(&name, &salvage, false, report);
            for l in &salvage.lost {
                report.losses.push(Loss {
                    kind: LossKind::SnapshotRangeLost,
                    ino: 0,
                    path: name.clone(),
                    detail: format!(
                        "keys after {} up to {} (the page at byte {} of {})",
                        show(&l.after),
                        show(&l.upto),
                        l.offset,
                        l.path.display()
                    ),
                });
            }
            mend_extent_parts(&mut entries);
            let mut w = PageWriter::new(out)?;
            let r = out.build(&entries, &mut w)?;
            w.finish()?;
            info.root = Some(r);
            report
                .fixes
                .push(format!("{name}: tree rewritten from what survives"));
        }
        Ok(())
    }

    /// Write the result as a new checkpoint at `head` whose log starts in a new, empty segment
    /// `head + 1`, then remove what it replaces (`data-layout.md` 5.12, "Commit").
    fn commit(
        &self,
        pages: &PageStore,
        state: &MetaState,
        head: Lsn,
        report: &mut RepairReport,
    ) -> Result<(), RepairError> {
        // No process may have started since the check (they cannot commit: the log lock is
        // held, but one could rest on a checkpoint this commit removes).
        self.settle_leases(false, &mut RepairReport::default())?;
        self.lease.check_valid().map_err(Error::from)?;
        let body = state
            .encode_checkpoint(head)
            .map_err(|reason| Error::Corrupt {
                path: pages.dir().to_path_buf(),
                offset: 0,
                reason,
            })?;
        let log_dir = self.layout.log();
        let next = Lsn(head.0 + 1);
        let seg = log_dir.join(format!("{:020}.seg", next.0));
        let header = txlog::encode_segment_header(next);
        if fs::read(&seg).ok().as_deref() != Some(&header[..]) {
            fsutil::write_atomic(&seg, &header).map_err(Error::io(&seg))?;
        }
        let ckpt = self
            .layout
            .checkpoints()
            .join(format!("{:020}.ckpt", head.0));
        let at = LogPosition::segment_start(next);
        // The commit point: the rename inside write_atomic.
        fsutil::write_atomic(&ckpt, &txlog::encode_checkpoint_file(head, at, &body))
            .map_err(Error::io(&ckpt))?;
        report.checkpoint = Some(head.0);
        for (first, p) in txlog::list_segments(&log_dir).map_err(Error::from)? {
            if first <= head {
                remove(&p, report)?;
            }
        }
        for (lsn, p) in txlog::list_checkpoints(&self.layout.checkpoints()).map_err(Error::from)? {
            if lsn != head {
                remove(&p, report)?;
            }
        }
        fsutil::fsync_dir(&log_dir).map_err(Error::io(&log_dir))?;
        fsutil::fsync_dir(&self.layout.checkpoints())
            .map_err(Error::io(self.layout.checkpoints()))?;
        // The page sweep (6.9 step 5) with the new roots as the only ones: this repair holds
        // `meta-pages` in EX.
        let b = keys::decode_body(&body).map_err(|e| Error::Corrupt {
            path: ckpt.clone(),
            offset: txlog::CHECKPOINT_HEADER_LEN,
            reason: e.to_string(),
        })?;
        let mut keep = PageIndex::new();
        for r in std::iter::once(&b.namespace)
            .chain(std::iter::once(&b.chunks))
            .chain(b.snapshots.iter().filter_map(|s| s.root.as_ref()))
        {
            pages.index_pages(&Root::decode(r)?, &mut keep);
        }
        let files: HashSet<u64> = keep.values().flatten().map(|p| p.file).collect();
        for id in pages.list_files()? {
            if !files.contains(&id) {
                remove(&pages.file_path(id), report)?;
            }
        }
        if let Ok(rd) = fs::read_dir(pages.dir()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".mpg.tmp") {
                    remove(&e.path(), report)?;
                }
            }
        }
        fsutil::fsync_dir(pages.dir()).map_err(Error::io(pages.dir()))?;
        Ok(())
    }
}

/// A verified checkpoint.
#[derive(Clone)]
struct Ckpt {
    lsn: Lsn,
    at: LogPosition,
    bytes: Vec<u8>,
    body: Body,
    ns: Root,
    chunks: Root,
}

impl Ckpt {
    /// Every root it names (the trees and the snapshots).
    fn roots(&self) -> Vec<Root> {
        let mut v = vec![self.ns, self.chunks];
        v.extend(
            self.body
                .snapshots
                .iter()
                .filter_map(|s| s.root.as_ref())
                .filter_map(|r| Root::decode(r).ok()),
        );
        v
    }
}

/// The checkpoint (or the empty log) the state is rebuilt from, with its log and what of its
/// namespace tree survives.
struct Base {
    lsn: Lsn,
    ckpt: Option<Ckpt>,
    scan: log::LogScan,
    ns: BTreeMap<Vec<u8>, Vec<u8>>,
    ns_salvage: Salvage,
    /// Newer checkpoints passed over, with what their namespace trees lost: the base and the
    /// log since it hold what they lost.
    newer: Vec<(Lsn, Salvage)>,
}

/// A dry run's page directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn remove(p: &Path, report: &mut RepairReport) -> Result<(), RepairError> {
    match fs::remove_file(p) {
        Ok(()) => {
            report.removed.push(p.display().to_string());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p)(e).into()),
    }
}

/// Page files with a page that does not verify on its own ([TREE-7]).
fn damaged_files(pages: &PageStore) -> Result<BTreeSet<u64>, RepairError> {
    let mut out = BTreeSet::new();
    for id in pages.list_files()? {
        let check = pages.verify_file(id)?;
        if !check.damaged.is_empty() {
            out.insert(id);
        }
    }
    Ok(out)
}

/// Does the tree `root` reach a page in one of `files`?
fn reaches(pages: &PageStore, root: &Root, files: &BTreeSet<u64>) -> bool {
    if files.is_empty() {
        return false;
    }
    let mut idx = PageIndex::new();
    pages.index_pages(root, &mut idx);
    idx.values().flatten().any(|p| files.contains(&p.file))
}
