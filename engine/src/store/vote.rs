//! How this process votes on two-phase-commit proposals ([`Voter`], run by the lease keeper's
//! thread): a snapshot barrier flushes first ([SNAP-2]), a GC rewrite is refused while an
//! operation here holds a chunk it would drop ([GC-4]), a log truncation is accepted once this
//! process has read past the checkpoint. Also proposing ([`Store::propose_with`]).
//!
//! Not here: what a decided proposal does (the operation that proposed it, in `ops`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use verfs_coordination::lease::LeaseId;
use verfs_coordination::two_phase;
use verfs_coordination::txlog::TxLog;

use super::{InFlight, Store};
use crate::error::Error;
use crate::ids::{ChunkId, PackId};
use crate::kinds::{PROPOSAL_GC_REWRITE, PROPOSAL_LOG_TRUNCATE, PROPOSAL_SNAPSHOT};
use crate::meta::{ChunkEntry, MetaState};

/// Runs when this process votes on a snapshot barrier: commits every unflushed write (a mount
/// installs `flush_all`).
pub type BarrierHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

impl Store {
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

    /// Propose `kind` to every live process (two-phase commit) and wait for the decision.
    /// `on_dead` runs for a participant that died without voting, so it never blocks the
    /// decision ([2PC-4]). The caller applies a Commit, then calls [`two_phase::finish`].
    pub(crate) fn propose_with(
        &self,
        kind: &str,
        payload: serde_json::Value,
        on_dead: &mut dyn FnMut(&LeaseId),
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
            on_dead,
        )
        .map_err(Error::coordination)
    }
}

/// What the lease keeper needs to vote for this process; the `Store` works on the same state.
pub(crate) struct Voter {
    pub(super) log: Arc<TxLog<MetaState>>,
    /// Chunks appended to this process's packs and not yet indexed by a committed record.
    pub(crate) pending: Mutex<HashMap<ChunkId, ChunkEntry>>,
    pub(crate) inflight: InFlight,
    pub(crate) barrier_hook: Mutex<Option<BarrierHook>>,
}

impl Voter {
    /// This process's vote on a proposal.
    pub(super) fn vote(&self, kind: &str, payload: &serde_json::Value) -> two_phase::Vote {
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
                    for (id, pack) in reg.keys() {
                        if packs.contains(pack) && s.chunk(*id)?.map(|e| e.pack) != Some(*pack) {
                            return Ok(Some((*id, *pack)));
                        }
                    }
                    Ok::<_, crate::meta::MetaError>(None)
                });
                match res {
                    Ok(Ok(None)) => two_phase::Vote::Commit,
                    Ok(Err(e)) => two_phase::Vote::Abort {
                        reason: e.to_string(),
                    },
                    Ok(Ok(Some((id, pack)))) => two_phase::Vote::Abort {
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
                // Moving past the checkpoint means reading up to the head, then resting on the
                // newest checkpoint: then no deleted segment, and no page the older checkpoints
                // alone reach, is ever needed by this process ([META-3]).
                match self.log.refresh().and_then(|head| {
                    self.log.rebase(true)?;
                    Ok(head)
                }) {
                    Ok(head)
                        if head.0 >= lsn
                            && self
                                .log
                                .read(|s, _| s.base().1 .0)
                                .is_ok_and(|base| base >= lsn) =>
                    {
                        two_phase::Vote::Commit
                    }
                    Ok(head) if head.0 >= lsn => two_phase::Vote::Abort {
                        reason: format!("at lsn {head}, but not resting on checkpoint {lsn} yet"),
                    },
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
