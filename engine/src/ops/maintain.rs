//! Log maintenance: a checkpoint every `log.checkpoint_every` records, then deleting the segments
//! it covers once every live process agreed (two-phase commit `log-truncate`).

use std::fs;

use verfs_coordination::io_site;
use verfs_coordination::two_phase;
use verfs_coordination::txlog::{self, Lsn};

use crate::error::Error;
use crate::kinds::PROPOSAL_LOG_TRUNCATE;
use crate::store::Store;

impl Store {
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
