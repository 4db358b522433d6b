//! Log maintenance: a checkpoint every `log.checkpoint_every` records (or `log.checkpoint_delta`
//! changes held in memory), then deleting the segments it covers once every live process agreed
//! (two-phase commit `log-truncate`). Also the DLM lock `meta-pages` that page writers hold.

use std::fs;
use std::path::Path;

use verfs_coordination::io_site;
use verfs_coordination::lock::{LockTable, Mode, Resource, Wait};
use verfs_coordination::two_phase;
use verfs_coordination::txlog::{self, Lsn};

use crate::error::Error;
use crate::kinds::{LOCK_META_PAGES, PROPOSAL_LOG_TRUNCATE};
use crate::store::Store;

impl Store {
    /// Run `f`, which writes metadata pages and publishes a root that reaches them, holding the
    /// DLM lock `meta-pages` in PR, so that the page sweep (EX) never sees the pages without the
    /// root ([META-4]).
    pub(crate) fn with_pages_held<T>(
        &self,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        with_pages_held(&self.layout.root.join("locks"), f)
    }

    /// Write a checkpoint if the log grew by `log.checkpoint_every` records since the newest one
    /// (or this process holds an eighth of `log.checkpoint_delta` changes), then propose (two-phase commit) to
    /// delete the segments it covers.
    pub fn maintain(&self) -> Result<Option<Lsn>, Error> {
        let head = self.log.refresh()?;
        let newest = txlog::list_checkpoints(&self.layout.checkpoints())?
            .last()
            .map(|c| c.0)
            .unwrap_or(Lsn(0));
        // A command that ends holding an eighth of `checkpoint_delta` (a put of a few thousand
        // files) checkpoints too, so the commands after it do not replay its records.
        let big = self
            .log
            .read(|s, _| s.delta_len() as u64 >= self.cfg.log.checkpoint_delta / 8)?;
        if head.0 < newest.0 + self.cfg.log.checkpoint_every && !big {
            return Ok(None);
        }
        self.checkpoint_and_truncate().map(Some)
    }

    /// After committing `lsn`: if the state has rested on its checkpoint for `log.checkpoint_every`
    /// records or holds `log.checkpoint_delta` changes, move onto a newer one another process
    /// wrote, or write one (only the pages that changed). So whichever process crosses the
    /// threshold checkpoints, and no process holds more than about that much in memory
    /// ([META-5]). A failure is logged and left to the next
    /// commit: the commit itself succeeded. Segments are deleted by [`Store::maintain`] (the CLI,
    /// GC), which needs a two-phase commit.
    pub(crate) fn checkpoint_if_due(&self, lsn: Lsn) {
        let cfg = &self.cfg.log;
        let due = |log: &txlog::TxLog<crate::meta::MetaState>, factor: u64| {
            log.read(|s, _| {
                lsn.0 >= s.base().1 .0 + cfg.checkpoint_every
                    || s.delta_len() as u64 >= cfg.checkpoint_delta.saturating_mul(factor)
            })
            .unwrap_or(false)
        };
        if !due(&self.log, 1) {
            return;
        }
        if self.log.rebase(true).is_ok() && !due(&self.log, 1) {
            return;
        }
        // Written on a thread of its own, one at a time: a checkpoint of a large store writes
        // tens of MB of pages (random chunk ids touch most leaves of the chunk index), and the
        // commit that crossed the threshold, a `put` batch or a mount's close, need not wait.
        // A commit that finds the delta at twice the threshold while one runs waits for it, so
        // the memory the delta takes stays bounded however fast commits come.
        let mut slot = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.take() {
            if !h.is_finished() && !due(&self.log, 2) {
                *slot = Some(h);
                return;
            }
            let _ = h.join();
            if !due(&self.log, 1) {
                return;
            }
        }
        let log = self.log.clone();
        let locks = self.layout.root.join("locks");
        let root = self.layout.root.clone();
        let spawned = std::thread::Builder::new()
            .name("verfs-checkpoint".into())
            .spawn(move || {
                if let Err(e) = with_pages_held(&locks, || Ok(log.checkpoint()?)) {
                    tracing::warn!(store = %root.display(), op = "checkpoint", error = %e,
                        "automatic checkpoint failed; the next commit tries again");
                }
            });
        match spawned {
            Ok(h) => *slot = Some(h),
            Err(e) => tracing::warn!(store = %self.layout.root.display(), op = "checkpoint",
                error = %e, "cannot start the checkpoint thread; the next commit tries again"),
        }
    }

    /// Wait for an automatic checkpoint this process is writing (before it closes).
    pub(crate) fn wait_for_checkpoint(&self) {
        let h = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// Checkpoint now, then delete covered segments once every live process agreed (2PC).
    pub fn checkpoint_and_truncate(&self) -> Result<Lsn, Error> {
        // [META-4]: the pages and the checkpoint naming them appear under `meta-pages` in PR.
        let lsn = self.with_pages_held(|| Ok(self.log.checkpoint()?))?;
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

/// Run `f` holding the DLM lock `meta-pages` in PR ([META-4]): the pages it writes and the
/// checkpoint naming them appear before a page sweep (EX) can run.
fn with_pages_held<T>(locks: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let owner = LockTable::open(locks)
        .and_then(|t| t.owner())
        .map_err(Error::coordination)?;
    let res = Resource::Named(LOCK_META_PAGES.into());
    owner
        .acquire(&res, Mode::Pr, Wait::Forever)
        .map_err(Error::coordination)?;
    let r = f();
    let _ = owner.release(&res);
    r
}
