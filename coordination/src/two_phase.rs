//! File-voted two-phase commit among the live processes of a store.
//!
//! Owns `2pc/` (proposal, votes, decision, done) and the protocol over them. Does not own what is
//! proposed or how a participant votes (the engine's handler), nor lease liveness (`lease`).
//!
//! A coordinator asks every other live process to confirm something (GC: "I hold no reference to
//! these packs"; vault lock: "I dropped my keys") with [`propose`]. Each participant answers from
//! its lease keeper's tick through [`poll_participant`] by writing a vote file. The coordinator
//! writes the decision file with an exclusive create, so exactly one decision ever exists even if
//! [`recover`] races it; then it applies the decided action and calls [`finish`].
//!
//! A participant blocks the decision only while its lease folder exists: a participant that was
//! declared dead and claimed is fenced, so it can no longer act on the store and needs no vote.
//!
//! A process that acquired its lease after a proposal is not among its participants; an action
//! decided by two-phase commit must therefore also be safe for such newcomers (for example by
//! publishing its intent in the transaction log first, or by newcomers checking [`undecided`]).
//!
//! Layout, protocol steps, crash points and rules `[2PC-n]`: `data-layout.md`
//! section 5.6, "Two-phase commit" (crash points: 8.5).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::ctlfile::{self, CtlError};
use crate::fsutil;
use crate::fsutil::remove_tree;
use crate::id::LeaseId;
pub use crate::id::TxnId;
use crate::io_site;
use crate::lease::{self, unix_ms, Lease, LeaseConfig, LeaseState};

/// Control-file kind of `2pc/<txn>/proposal`.
pub const PROPOSAL_KIND: &str = "2pc-proposal";
/// Control-file kind of `2pc/<txn>/vote-<lease id>`.
pub const VOTE_KIND: &str = "2pc-vote";
/// Control-file kind of `2pc/<txn>/decision`.
pub const DECISION_KIND: &str = "2pc-decision";
/// File names inside a transaction folder.
pub const PROPOSAL_FILE: &str = "proposal";
pub const DECISION_FILE: &str = "decision";
pub const DONE_FILE: &str = "done";
const VOTE_PREFIX: &str = "vote-";
const NEW_PREFIX: &str = ".new-";
const DONE_PREFIX: &str = ".done-";

/// The content of `proposal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub txn: TxnId,
    pub coordinator: LeaseId,
    /// What is proposed, e.g. `"gc-delete-packs"`, `"vault-lock"`.
    pub kind: String,
    pub payload: serde_json::Value,
    /// Live leases at proposal time, excluding the coordinator.
    pub participants: Vec<LeaseId>,
    pub created_unix_ms: u64,
    pub timeout_ms: u64,
}

/// A participant's answer: the content of `vote-<lease id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vote", rename_all = "snake_case")]
pub enum Vote {
    Commit,
    Abort { reason: String },
}

/// The outcome: the content of `decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Commit,
    Abort { reason: String },
}

impl Decision {
    pub fn is_commit(&self) -> bool {
        matches!(self, Decision::Commit)
    }
}

/// How long [`propose`] waits and how it judges participants.
#[derive(Debug, Clone, Copy)]
pub struct ProposeOptions {
    /// The decision is Abort when votes are still missing after this long.
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// To judge whether a silent participant is dead.
    pub lease: LeaseConfig,
}

/// The result of [`propose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub txn: TxnId,
    pub decision: Decision,
}

/// [`propose`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// Creating the transaction folder failed: nothing was proposed (a `.new-` folder may remain
    /// for [`recover`]).
    #[error("proposing {kind}: {path}: {source}")]
    Create {
        kind: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Reading or writing the transaction's files failed after it was proposed; it stays
    /// undecided until this coordinator retries or dies and [`recover`] aborts it.
    #[error("transaction {txn}: {source}")]
    Ctl {
        txn: TxnId,
        #[source]
        source: CtlError,
    },
    #[error("transaction {txn}: {path}: {source}")]
    Io {
        txn: TxnId,
        path: PathBuf,
        source: io::Error,
    },
}

/// [`poll_participant`] failed; votes written before the failure stand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    #[error("polling proposals in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("voting: {0}")]
    Ctl(#[from] CtlError),
}

/// [`wait_decision`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The folder was finished (removed) before a decision was seen.
    #[error("transaction {txn} is gone (finished) before its decision was seen")]
    Gone { txn: TxnId },
    #[error("transaction {txn}: {source}")]
    Ctl {
        txn: TxnId,
        #[source]
        source: CtlError,
    },
}

/// [`recover`] could not list the directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error("recovering transactions in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// [`finish`] failed; calling it again completes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    #[error("finishing transaction {txn}: {path}: {source}")]
    Io {
        txn: TxnId,
        path: PathBuf,
        source: io::Error,
    },
}

fn read_opt<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<Option<T>, CtlError> {
    match ctlfile::read(path, kind) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write `decision` unless one exists; return the one that stands ([2PC-3]).
///
/// On error no decision may have been written (or it was, and only its durability is uncertain).
pub fn decide(txn_dir: &Path, decision: &Decision) -> Result<Decision, CtlError> {
    let path = txn_dir.join(DECISION_FILE);
    if ctlfile::create_exclusive(&path, DECISION_KIND, decision)? {
        return Ok(decision.clone());
    }
    ctlfile::read(&path, DECISION_KIND)
}

/// The decision of `txn`, if one was written.
pub fn read_decision(twopc_dir: &Path, txn: &TxnId) -> Result<Option<Decision>, CtlError> {
    read_opt(
        &twopc_dir.join(txn.as_str()).join(DECISION_FILE),
        DECISION_KIND,
    )
}

/// Propose an action to every other live process and decide it ([2PC-1] .. [2PC-5]).
///
/// Returns the decision that stands (which may be one [`recover`] wrote if this coordinator was
/// declared dead). The caller applies a `Commit` itself, then calls [`finish`]; an `Abort` needs
/// only [`finish`]. `on_dead_participant` is called for a participant that is dead but not yet
/// cleaned; the engine cleans it up there (claiming its lease), after which it no longer blocks.
/// See [`ProposeError`] for the state each failure leaves.
pub fn propose(
    twopc_dir: &Path,
    leases_dir: &Path,
    coordinator: &Lease,
    kind: &str,
    payload: serde_json::Value,
    opts: ProposeOptions,
    on_dead_participant: &mut dyn FnMut(&LeaseId),
) -> Result<Outcome, ProposeError> {
    let create_err = |path: &Path| {
        let (kind, path) = (kind.to_owned(), path.to_path_buf());
        move |source| ProposeError::Create { kind, path, source }
    };
    let participants: Vec<LeaseId> = lease::list(leases_dir)
        .map_err(|e| match e {
            lease::ListError::Io { path, source } => create_err(&path)(source),
        })?
        .into_iter()
        .filter(|e| e.state == LeaseState::Live && &e.id != coordinator.id())
        .map(|e| e.id)
        .collect();
    let txn = TxnId::generate(coordinator.id());
    let proposal = Proposal {
        txn: txn.clone(),
        coordinator: coordinator.id().clone(),
        kind: kind.to_owned(),
        payload,
        participants,
        created_unix_ms: unix_ms(SystemTime::now()),
        timeout_ms: opts.timeout.as_millis() as u64,
    };
    let new_dir = twopc_dir.join(format!("{NEW_PREFIX}{txn}"));
    let dir = twopc_dir.join(txn.as_str());
    io_site!("twopc.create-dir", fs::create_dir(&new_dir)).map_err(create_err(&new_dir))?;
    let created = (|| {
        let p = new_dir.join(PROPOSAL_FILE);
        ctlfile::write(&p, PROPOSAL_KIND, &proposal).map_err(|e| match e {
            CtlError::Io { source, .. } => create_err(&p)(source),
            other => create_err(&p)(io::Error::other(other.to_string())),
        })?;
        // [2PC-1]: participants see the proposal complete or not at all.
        io_site!("twopc.publish-rename", fs::rename(&new_dir, &dir)).map_err(create_err(&dir))?;
        fsutil::fsync_dir(twopc_dir).map_err(create_err(twopc_dir))
    })();
    if let Err(e) = created {
        let _ = remove_tree(&new_dir);
        return Err(e);
    }

    let ctl = |source| ProposeError::Ctl {
        txn: txn.clone(),
        source,
    };
    let deadline = Instant::now() + opts.timeout;
    loop {
        if let Some(d) = read_decision(twopc_dir, &txn).map_err(ctl)? {
            return Ok(Outcome { txn, decision: d });
        }
        let mut waiting = Vec::new();
        let mut abort = None;
        for p in &proposal.participants {
            let vote_path = dir.join(format!("{VOTE_PREFIX}{p}"));
            match read_opt::<Vote>(&vote_path, VOTE_KIND) {
                Ok(Some(Vote::Commit)) => continue,
                Ok(Some(Vote::Abort { reason })) => {
                    abort = Some(format!("participant {p} voted abort: {reason}"));
                    break;
                }
                Ok(None) => {}
                // [2PC-2]: an unreadable vote is no consent.
                Err(e) => {
                    abort = Some(format!("participant {p}'s vote is unreadable: {e}"));
                    break;
                }
            }
            // [2PC-4]: a participant whose lease folder is gone is fenced and cannot block.
            let folder = leases_dir.join(p.as_str());
            let Some(entry) = lease::read_entry(&folder, p.clone(), LeaseState::Live) else {
                continue;
            };
            if entry.liveness(&opts.lease, SystemTime::now()).is_dead() {
                on_dead_participant(p);
                if !lease::is_live_lease(leases_dir, p) {
                    continue;
                }
            }
            waiting.push(p.to_string());
        }
        let decision = if let Some(reason) = abort {
            Some(Decision::Abort { reason })
        } else if waiting.is_empty() {
            Some(Decision::Commit)
        } else if Instant::now() >= deadline {
            Some(Decision::Abort {
                reason: format!("timeout waiting for {}", waiting.join(", ")),
            })
        } else {
            None
        };
        if let Some(d) = decision {
            let decision = decide(&dir, &d).map_err(ctl)?;
            return Ok(Outcome { txn, decision });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        thread::sleep(opts.poll_interval.min(left).max(Duration::from_millis(1)));
    }
}

/// Serializes this process's voting, so the handler runs once per proposal even when the
/// keeper's tick and a blocking wait poll at the same time.
static POLL_LOCK: Mutex<()> = Mutex::new(());

/// Vote on every undecided proposal that lists `me` and has no vote of mine yet ([2PC-2]).
///
/// Returns how many votes were written. Costs one directory listing when nothing is pending.
/// The handler's answer is final: a vote file is created exclusively and never changed.
pub fn poll_participant(
    twopc_dir: &Path,
    me: &LeaseId,
    handler: &mut dyn FnMut(&Proposal) -> Vote,
) -> Result<usize, PollError> {
    let _guard = POLL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let io = |source| PollError::Io {
        path: twopc_dir.to_path_buf(),
        source,
    };
    let mut voted = 0;
    for ent in fs::read_dir(twopc_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let Some(Ok(txn)) = ent.file_name().to_str().map(TxnId::from_str) else {
            continue;
        };
        let dir = twopc_dir.join(txn.as_str());
        let vote_path = dir.join(format!("{VOTE_PREFIX}{me}"));
        if dir.join(DECISION_FILE).exists() || vote_path.exists() {
            continue;
        }
        // A proposal that vanished (finished) or is unreadable needs no vote from here; an
        // unreadable one is aborted by its coordinator's timeout or by recovery.
        let Ok(p) = ctlfile::read::<Proposal>(&dir.join(PROPOSAL_FILE), PROPOSAL_KIND) else {
            continue;
        };
        if p.txn != txn || !p.participants.contains(me) {
            continue;
        }
        let vote = handler(&p);
        match ctlfile::create_exclusive(&vote_path, VOTE_KIND, &vote) {
            Ok(true) => voted += 1,
            Ok(false) => {}
            // Finished while we were voting.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(voted)
}

/// Wait up to `timeout` for the decision of `txn`; `Ok(None)` on timeout. Read-only.
pub fn wait_decision(
    twopc_dir: &Path,
    txn: &TxnId,
    timeout: Duration,
) -> Result<Option<Decision>, WaitError> {
    let dir = twopc_dir.join(txn.as_str());
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match read_decision(twopc_dir, txn) {
            Ok(Some(d)) => return Ok(Some(d)),
            Ok(None) => {}
            Err(source) => {
                return Err(WaitError::Ctl {
                    txn: txn.clone(),
                    source,
                })
            }
        }
        if !dir.is_dir() {
            return Err(WaitError::Gone { txn: txn.clone() });
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Every proposal without a decision, e.g. for a process that just started and is not a
/// participant of them. Read-only; unreadable proposals are skipped.
pub fn undecided(twopc_dir: &Path) -> Result<Vec<Proposal>, PollError> {
    let io = |source| PollError::Io {
        path: twopc_dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for ent in fs::read_dir(twopc_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let Some(Ok(txn)) = ent.file_name().to_str().map(TxnId::from_str) else {
            continue;
        };
        let dir = twopc_dir.join(txn.as_str());
        if dir.join(DECISION_FILE).exists() {
            continue;
        }
        if let Ok(p) = ctlfile::read::<Proposal>(&dir.join(PROPOSAL_FILE), PROPOSAL_KIND) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Mark `txn` applied and remove its folder ([2PC-6]). Idempotent: a missing folder is finished.
///
/// `done` is written first, so a crash before the folder is gone tells [`recover`] the action
/// needs no re-applying. On error the folder may remain as `<txn>` (with or without `done`) or
/// as `.done-<txn>`; calling `finish` again or [`recover`] completes the removal.
pub fn finish(twopc_dir: &Path, txn: &TxnId) -> Result<(), FinishError> {
    let dir = twopc_dir.join(txn.as_str());
    let gone = twopc_dir.join(format!("{DONE_PREFIX}{txn}"));
    let io = |path: &Path| {
        let (txn, path) = (txn.clone(), path.to_path_buf());
        move |source| FinishError::Io { txn, path, source }
    };
    if dir.is_dir() {
        let done = dir.join(DONE_FILE);
        match fsutil::create_exclusive(&done, b"") {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&done)(e)),
        }
        match io_site!("twopc.finish-rename", fs::rename(&dir, &gone)) {
            Ok(()) => fsutil::fsync_dir(twopc_dir).map_err(io(twopc_dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    remove_tree(&gone).map_err(io(&gone))?;
    fsutil::fsync_dir(twopc_dir).map_err(io(twopc_dir))
}

/// A transaction of a dead coordinator, returned by [`recover`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredTxn {
    pub txn: TxnId,
    /// `None` when the proposal is unreadable.
    pub proposal: Option<Proposal>,
    /// The decision that stands, or why it could not be read (then nothing is decided here).
    pub decision: Result<Decision, String>,
    /// The coordinator had applied the decision already (the `done` marker exists).
    pub done: bool,
}

/// Settle the transactions of dead coordinators ([2PC-5], [2PC-6]).
///
/// Undecided ones are decided `Abort("coordinator died")` (exclusively: a decision already
/// written stands). Every decided transaction of a dead coordinator is returned; the engine
/// finishes a `Commit` that is not `done` idempotently, then calls [`finish`] for each. Half
/// created `.new-` folders and half removed `.done-` folders of dead coordinators are removed.
/// Transactions of live coordinators are never touched. Fails only when the directory cannot be
/// listed; a transaction whose files cannot be written is returned with its decision as `Err`.
pub fn recover(
    twopc_dir: &Path,
    is_dead: &dyn Fn(&LeaseId) -> bool,
) -> Result<Vec<RecoveredTxn>, RecoverError> {
    let io = |source| RecoverError::Io {
        path: twopc_dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for ent in fs::read_dir(twopc_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let leftover = name
            .strip_prefix(NEW_PREFIX)
            .or_else(|| name.strip_prefix(DONE_PREFIX));
        if let Some(rest) = leftover {
            if let Ok(txn) = rest.parse::<TxnId>() {
                if is_dead(&txn.coordinator()) {
                    let _ = remove_tree(&ent.path());
                }
            }
            continue;
        }
        let Ok(txn) = name.parse::<TxnId>() else {
            continue;
        };
        if !is_dead(&txn.coordinator()) {
            continue;
        }
        let dir = ent.path();
        let proposal = ctlfile::read::<Proposal>(&dir.join(PROPOSAL_FILE), PROPOSAL_KIND).ok();
        let abort = Decision::Abort {
            reason: "coordinator died".into(),
        };
        let decision = match read_decision(twopc_dir, &txn) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => decide(&dir, &abort).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if !dir.is_dir() {
            continue; // finished by someone else meanwhile
        }
        let done = dir.join(DONE_FILE).exists();
        out.push(RecoveredTxn {
            txn,
            proposal,
            decision,
            done,
        });
    }
    out.sort_by(|a, b| a.txn.cmp(&b.txn));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Env {
        _d: tempfile::TempDir,
        leases: PathBuf,
        twopc: PathBuf,
    }

    fn env() -> Env {
        let d = tempfile::tempdir().unwrap();
        let leases = d.path().join("leases");
        let twopc = d.path().join("2pc");
        fs::create_dir(&leases).unwrap();
        fs::create_dir(&twopc).unwrap();
        Env {
            _d: d,
            leases,
            twopc,
        }
    }

    fn lcfg() -> LeaseConfig {
        LeaseConfig {
            timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
        }
    }

    fn opts(timeout_ms: u64) -> ProposeOptions {
        ProposeOptions {
            timeout: Duration::from_millis(timeout_ms),
            poll_interval: Duration::from_millis(5),
            lease: lcfg(),
        }
    }

    /// Run a participant that answers with `vote` until `stop`.
    fn participant(
        e: &Env,
        me: LeaseId,
        vote: Vote,
        stop: Arc<AtomicBool>,
    ) -> thread::JoinHandle<usize> {
        let twopc = e.twopc.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += poll_participant(&twopc, &me, &mut |_| vote.clone()).unwrap();
                thread::sleep(Duration::from_millis(2));
            }
            n
        })
    }

    #[test]
    fn all_vote_commit_then_finish() {
        // proves [2PC-1], [2PC-2], [2PC-6]
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let ps: Vec<Lease> = (0..3)
            .map(|_| Lease::acquire(&e.leases, "p", lcfg()).unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = ps
            .iter()
            .map(|p| participant(&e, p.id().clone(), Vote::Commit, stop.clone()))
            .collect();
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::json!({"packs": [1, 2]}),
            opts(10_000),
            &mut |_| panic!("nobody is dead"),
        )
        .unwrap();
        assert_eq!(out.decision, Decision::Commit);
        let p: Proposal = ctlfile::read(
            &e.twopc.join(out.txn.as_str()).join(PROPOSAL_FILE),
            PROPOSAL_KIND,
        )
        .unwrap();
        let mut want: Vec<_> = ps.iter().map(|p| p.id().clone()).collect();
        want.sort();
        assert_eq!(p.participants, want);
        assert_eq!(
            wait_decision(&e.twopc, &out.txn, Duration::ZERO).unwrap(),
            Some(Decision::Commit)
        );
        stop.store(true, Ordering::SeqCst);
        for h in hs {
            assert_eq!(h.join().unwrap(), 1, "each participant votes exactly once");
        }
        finish(&e.twopc, &out.txn).unwrap();
        finish(&e.twopc, &out.txn).unwrap();
        assert_eq!(fs::read_dir(&e.twopc).unwrap().count(), 0);
        assert!(matches!(
            wait_decision(&e.twopc, &out.txn, Duration::ZERO),
            Err(WaitError::Gone { .. })
        ));
    }

    #[test]
    fn one_abort_decides_abort_at_once() {
        // proves [2PC-2]
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let yes = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let no = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let _silent = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let h1 = participant(&e, yes.id().clone(), Vote::Commit, stop.clone());
        let h2 = participant(
            &e,
            no.id().clone(),
            Vote::Abort {
                reason: "busy".into(),
            },
            stop.clone(),
        );
        let t0 = Instant::now();
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::Value::Null,
            opts(30_000),
            &mut |_| {},
        )
        .unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "abort must not wait for the timeout"
        );
        let Decision::Abort { reason } = out.decision else {
            panic!("{out:?}")
        };
        assert!(
            reason.contains("busy") && reason.contains(no.id().as_str()),
            "{reason}"
        );
        stop.store(true, Ordering::SeqCst);
        h1.join().unwrap();
        h2.join().unwrap();
    }

    #[test]
    fn participant_whose_lease_is_gone_does_not_block() {
        // proves [2PC-4]
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let gone = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let gid = gone.id().clone();
        let leases = e.leases.clone();
        let cleaner = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            lease::claim(&leases, &gid, &LeaseId::generate())
                .unwrap()
                .unwrap()
                .finish()
                .unwrap();
        });
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::Value::Null,
            opts(30_000),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(out.decision, Decision::Commit);
        cleaner.join().unwrap();
    }

    #[test]
    fn dead_participant_is_reported_and_cleaned() {
        // proves [2PC-4]
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let dead = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let did = dead.id().clone();
        // Its heartbeat stops; with a short timeout it is judged dead.
        let mut o = opts(30_000);
        o.lease.timeout = Duration::from_millis(50);
        let mut reported = Vec::new();
        let leases = e.leases.clone();
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::Value::Null,
            o,
            &mut |p| {
                reported.push(p.clone());
                lease::claim(&leases, p, &LeaseId::generate())
                    .unwrap()
                    .unwrap()
                    .finish()
                    .unwrap();
            },
        )
        .unwrap();
        assert_eq!(out.decision, Decision::Commit);
        assert_eq!(reported, vec![did]);
    }

    #[test]
    fn timeout_decides_abort_naming_the_silent() {
        // proves [2PC-5]
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let silent = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::Value::Null,
            opts(150),
            &mut |_| {},
        )
        .unwrap();
        let Decision::Abort { reason } = out.decision else {
            panic!("{out:?}")
        };
        assert!(reason.starts_with("timeout waiting for") && reason.contains(silent.id().as_str()));
    }

    #[test]
    fn racing_decision_writers_agree_on_one() {
        // proves [2PC-3]
        let e = env();
        let dir = e.twopc.join("t");
        fs::create_dir(&dir).unwrap();
        let results: Vec<Decision> = thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let dir = &dir;
                    s.spawn(move || {
                        let d = if i % 2 == 0 {
                            Decision::Commit
                        } else {
                            Decision::Abort {
                                reason: format!("r{i}"),
                            }
                        };
                        decide(dir, &d).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk: Decision = ctlfile::read(&dir.join(DECISION_FILE), DECISION_KIND).unwrap();
        assert!(results.iter().all(|d| d == &on_disk), "{results:?}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn recover_aborts_orphans_and_returns_decided() {
        // proves [2PC-5], [2PC-6]
        let e = env();
        let dead = LeaseId::generate();
        let live = Lease::acquire(&e.leases, "live", lcfg()).unwrap();
        let mk = |coord: &LeaseId| {
            let txn = TxnId::generate(coord);
            let dir = e.twopc.join(txn.as_str());
            fs::create_dir(&dir).unwrap();
            let p = Proposal {
                txn: txn.clone(),
                coordinator: coord.clone(),
                kind: "gc".into(),
                payload: serde_json::json!([1]),
                participants: vec![],
                created_unix_ms: 0,
                timeout_ms: 1,
            };
            ctlfile::write(&dir.join(PROPOSAL_FILE), PROPOSAL_KIND, &p).unwrap();
            txn
        };
        let orphan = mk(&dead);
        let committed = mk(&dead);
        decide(&e.twopc.join(committed.as_str()), &Decision::Commit).unwrap();
        let mine = mk(live.id());
        fs::create_dir(e.twopc.join(format!(".new-{}", TxnId::generate(&dead)))).unwrap();
        let leases = e.leases.clone();
        let is_dead = move |id: &LeaseId| !lease::is_live_lease(&leases, id);
        let got = recover(&e.twopc, &is_dead).unwrap();
        assert_eq!(got.len(), 2);
        let o = got.iter().find(|r| r.txn == orphan).unwrap();
        assert_eq!(
            o.decision,
            Ok(Decision::Abort {
                reason: "coordinator died".into()
            })
        );
        let c = got.iter().find(|r| r.txn == committed).unwrap();
        assert_eq!(c.decision, Ok(Decision::Commit));
        assert_eq!(c.proposal.as_ref().unwrap().payload, serde_json::json!([1]));
        assert!(!c.done);
        for r in &got {
            finish(&e.twopc, &r.txn).unwrap();
        }
        let left: Vec<_> = fs::read_dir(&e.twopc)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(mine.as_str())]);
        assert_eq!(read_decision(&e.twopc, &mine).unwrap(), None);
    }

    #[test]
    fn recovery_abort_beats_a_stalled_coordinator() {
        // proves [2PC-3]: the coordinator's own Commit loses to an Abort already written.
        let e = env();
        let coord = Lease::acquire(&e.leases, "coord", lcfg()).unwrap();
        let p = Lease::acquire(&e.leases, "p", lcfg()).unwrap();
        let twopc = e.twopc.clone();
        let pid = p.id().clone();
        let h = thread::spawn(move || {
            // Recovery declares the coordinator dead before the vote arrives.
            loop {
                let published = fs::read_dir(&twopc).unwrap().any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_str()
                        .unwrap()
                        .parse::<TxnId>()
                        .is_ok()
                });
                if published {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(recover(&twopc, &|_| true).unwrap().len(), 1);
            poll_participant(&twopc, &pid, &mut |_| Vote::Commit).unwrap()
        });
        let out = propose(
            &e.twopc,
            &e.leases,
            &coord,
            "gc",
            serde_json::Value::Null,
            opts(30_000),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            out.decision,
            Decision::Abort {
                reason: "coordinator died".into()
            }
        );
        assert_eq!(h.join().unwrap(), 0, "no vote on a decided proposal");
    }
}
