//! One lock owner, one open file description on the table: [`LockOwner`] and its [`Guard`].
//!
//! Owns taking, converting, releasing and testing locks on named and range resources, the gate
//! protocol ([LOCK-4]), waiting by polling with backoff, and the owner's record of what it holds.
//! Does not own the table file or the byte offsets of resources (`table`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use super::table::{flock, is_busy, map_range, Mapped};
use super::*;

/// Level of the tail byte held by one owner for one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Read,
    Write,
}

#[derive(Debug, Default)]
pub(super) struct OwnerState {
    /// Named resources held, with their mode (NL included).
    named: HashMap<String, Mode>,
    /// Mode bytes held (table offset -> number of held named resources using it; >1 only when
    /// two held names share a block).
    bytes: HashMap<u64, u32>,
    /// Tail byte of each inode region this owner locks, with its level [LOCK-8].
    tails: HashMap<u64, Level>,
    /// Named resources this owner waits for in their block's queue, with the presence byte it
    /// holds meanwhile [LOCK-9].
    queued: HashMap<String, u64>,
}

/// One lock owner: one open file description on the table. `Send + Sync`; threads sharing an
/// owner are one owner (they never conflict with each other), as in POSIX.
///
/// Dropping it releases every lock it holds (the kernel drops an OFD's locks when it is closed).
#[derive(Debug)]
pub struct LockOwner {
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// Also serializes this owner's gated sections: two threads of one OFD would otherwise both
    /// "hold" the gate at once [LOCK-4].
    pub(super) state: Mutex<OwnerState>,
}

/// Result of one attempt.
enum Attempt {
    Done,
    /// Another owner holds this conflicting mode.
    Conflict(Mode),
    /// The gate is held by another owner.
    GateBusy,
    /// Other owners queued for the block earlier are served first [LOCK-9].
    Queued,
}

/// Failure of one attempt.
enum AttemptError {
    /// A lock call failed; the owner holds what it held before.
    Io(io::Error),
    /// The gate could not be released (the owner still holds it); `committed`: the change
    /// itself took effect before.
    GateStuck { committed: bool, source: io::Error },
    /// The change took effect and the gate is released, but the old mode's byte could not be
    /// released (stricter than needed until the owner is dropped).
    OldByteStuck(io::Error),
}

impl From<io::Error> for AttemptError {
    fn from(source: io::Error) -> Self {
        AttemptError::Io(source)
    }
}

/// Outcome of a wait loop.
enum Waited {
    Done,
    Conflict(Mode),
    GateBusy,
    Queued,
    TimedOut(Duration, Option<Mode>),
    Failed(AttemptError),
}

impl LockOwner {
    /// Path of the table file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_state(&self) -> MutexGuard<'_, OwnerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `F_OFD_SETLK` of `ty` on `[start, start + len)`: Ok(false) when another owner conflicts.
    pub(super) fn setlk(&self, ty: libc::c_int, start: u64, len: u64) -> io::Result<bool> {
        let fl = flock(ty, start, len);
        loop {
            match fcntl(&self.file, FcntlArg::F_OFD_SETLK(&fl)) {
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) if ty != libc::F_UNLCK && is_busy(e) => return Ok(false),
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// `F_OFD_GETLK` of `ty` on `[start, start + len)`: the first conflicting lock of another
    /// owner as (type, first byte, last byte), table coordinates.
    pub(super) fn getlk(
        &self,
        ty: libc::c_int,
        start: u64,
        len: u64,
    ) -> io::Result<Option<(i32, u64, u64)>> {
        let mut fl = flock(ty, start, len);
        loop {
            match fcntl(&self.file, FcntlArg::F_OFD_GETLK(&mut fl)) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        if i32::from(fl.l_type) == libc::F_UNLCK {
            return Ok(None);
        }
        let s = fl.l_start as u64;
        let e = if fl.l_len <= 0 {
            u64::MAX
        } else {
            s.saturating_add(fl.l_len as u64 - 1)
        };
        Ok(Some((i32::from(fl.l_type), s, e)))
    }

    /// Release the gate at `gate`; retried a few times since a stuck gate blocks a whole block.
    fn unlock_gate(&self, gate: u64) -> io::Result<()> {
        let mut last = None;
        for _ in 0..3 {
            match self.setlk(libc::F_UNLCK, gate, 1) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("gate unlock failed")))
    }

    /// Take one reference on the mode byte at `off` (shared OFD lock on the first reference).
    fn take_byte(&self, st: &mut OwnerState, off: u64) -> io::Result<()> {
        let n = st.bytes.get(&off).copied().unwrap_or(0);
        if n == 0 && !self.setlk(libc::F_RDLCK, off, 1)? {
            // Only the gate is ever write-locked, so a mode byte cannot be busy.
            return Err(io::Error::other(format!(
                "mode byte {off} is write-locked by another owner: the table is used by \
                 something that does not follow the lock protocol"
            )));
        }
        st.bytes.insert(off, n + 1);
        Ok(())
    }

    /// Drop one reference on the mode byte at `off` (unlock on the last one).
    fn drop_byte(&self, st: &mut OwnerState, off: u64) -> io::Result<()> {
        match st.bytes.get(&off).copied() {
            Some(n) if n > 1 => {
                st.bytes.insert(off, n - 1);
                Ok(())
            }
            Some(_) => {
                st.bytes.remove(&off);
                self.setlk(libc::F_UNLCK, off, 1).map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// First mode incompatible with `mode` that another owner holds on the block at `block`.
    fn named_conflict(&self, block: u64, mode: Mode) -> io::Result<Option<Mode>> {
        for m in mode.incompatible() {
            if let Some(b) = m.byte() {
                if self.getlk(libc::F_WRLCK, block + b, 1)?.is_some() {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }

    /// One attempt to move named resource `name` from `from` (None: not held) to `to`, under
    /// the gate [LOCK-4], [LOCK-5], in the block's queue order [LOCK-9]: with `queue` (a waiting
    /// call) a request that cannot be granted now joins the queue, and a queued one is granted
    /// only when no live waiter is ahead of it. Caller holds the state mutex for the attempt.
    fn named_attempt(
        &self,
        st: &mut OwnerState,
        name: &str,
        from: Option<Mode>,
        to: Mode,
        queue: bool,
    ) -> Result<Attempt, AttemptError> {
        let block = named_block(name);
        let old_byte = from.and_then(Mode::byte).map(|b| block + b);
        let Some(new_b) = to.byte() else {
            // To NL: only a release, which never needs the gate (dropping a holder cannot make
            // two holders incompatible).
            if let Some(ob) = old_byte {
                self.drop_byte(st, ob)?;
            }
            st.named.insert(name.to_owned(), to);
            return Ok(Attempt::Done);
        };
        let gate = block + GATE_BYTE;
        if !self.setlk(libc::F_WRLCK, gate, 1)? {
            return Ok(Attempt::GateBusy);
        }
        let stuck = |committed| move |source| AttemptError::GateStuck { committed, source };
        // Under the gate: no other owner can add a holder to this block, or change its queue,
        // until we release it.
        let outcome = self.gated_named(st, name, from, to, new_b, queue);
        let committed = matches!(outcome, Ok(Attempt::Done));
        self.unlock_gate(gate).map_err(stuck(committed))?;
        let done = outcome?;
        if committed {
            if let Some(ob) = old_byte {
                self.drop_byte(st, ob).map_err(AttemptError::OldByteStuck)?;
            }
        }
        Ok(done)
    }

    /// The gated part of [`LockOwner::named_attempt`]: the queue check, the conflict check and,
    /// when both pass, the commit point (the new mode's byte). The old mode's byte is dropped by
    /// the caller after the gate.
    fn gated_named(
        &self,
        st: &mut OwnerState,
        name: &str,
        from: Option<Mode>,
        to: Mode,
        new_b: u64,
        queue: bool,
    ) -> Result<Attempt, AttemptError> {
        let block = named_block(name);
        let bypass = from.is_some_and(|f| queue::never_waits(f, to));
        // Built only off the uncontended path, which never touches the queue file.
        let qpath = || queue::path(&crate::fsutil::parent_of(&self.path), block);
        let me = st.queued.get(name).copied();
        if !bypass {
            let ahead = match me {
                Some(slot) => self.ahead_in_queue(&qpath(), block, slot, to, from.is_some())?,
                None => self
                    .getlk(libc::F_WRLCK, block + queue::QUEUE_BYTE, 1)?
                    .is_some(),
            };
            if ahead {
                if queue && me.is_none() {
                    self.join_queue(st, name, &qpath(), block, to, from.is_some())?;
                }
                return Ok(Attempt::Queued);
            }
        }
        if let Some(m) = self.named_conflict(block, to)? {
            if queue && me.is_none() && !bypass {
                // Arrivals from now on queue behind this request.
                self.join_queue(st, name, &qpath(), block, to, from.is_some())?;
            }
            return Ok(Attempt::Conflict(m));
        }
        // Commit point: the shared lock on the new mode's byte is granted.
        self.take_byte(st, block + new_b)?;
        st.named.insert(name.to_owned(), to);
        if let Some(slot) = me {
            // Best effort: a left-over entry whose presence byte is free is dead to every
            // reader, and the next one drops it.
            let qpath = qpath();
            if let Ok(mut q) = queue::load(&qpath, block) {
                q.retain(|w| w.slot != slot);
                let _ = queue::store(&qpath, block, &q);
            }
            self.leave_queue(st, name);
        }
        Ok(Attempt::Done)
    }

    /// A named wait ended without the grant (or with it: then this does nothing): leave the
    /// block's queue, so the entry is dead for every other waiter.
    fn stop_waiting(&self, name: &str, waited: &Waited) {
        if !matches!(waited, Waited::Done) {
            let mut st = self.lock_state();
            self.leave_queue(&mut st, name);
        }
    }

    /// Does a live waiter hold the presence byte `slot`? (This owner's own byte reads as free.)
    pub(super) fn waiter_alive(&self, slot: u64) -> io::Result<bool> {
        Ok(self.getlk(libc::F_WRLCK, slot, 1)?.is_some())
    }

    /// Is a live waiter ahead of this owner's entry `slot`? Dead entries met on the way (their
    /// presence byte is free) are dropped; an entry that went missing is put back at its place
    /// by grant order (a damaged file, or one rewritten by a writer that lost the gate).
    fn ahead_in_queue(
        &self,
        qpath: &Path,
        block: u64,
        slot: u64,
        mode: Mode,
        convert: bool,
    ) -> io::Result<bool> {
        let mut q = queue::load(qpath, block)?;
        let mut changed = false;
        if !q.iter().any(|w| w.slot == slot) {
            queue::insert(&mut q, queue::Waiter::new(slot, mode, convert));
            changed = true;
        }
        let mut ahead = false;
        // `q` holds `slot`, so this stops at it at the latest.
        while q[0].slot != slot {
            if self.waiter_alive(q[0].slot)? {
                ahead = true;
                break;
            }
            q.remove(0);
            changed = true;
        }
        if changed {
            queue::store(qpath, block, &q)?;
        }
        Ok(ahead)
    }

    /// Join the queue of `block` for `name`: take a presence byte and the block's queue byte,
    /// then add the entry (dead entries are dropped on the way). On error nothing is held.
    fn join_queue(
        &self,
        st: &mut OwnerState,
        name: &str,
        qpath: &Path,
        block: u64,
        mode: Mode,
        convert: bool,
    ) -> io::Result<()> {
        let slot = loop {
            let slot = queue::random_slot();
            if self.setlk(libc::F_WRLCK, slot, 1)? {
                break slot;
            }
        };
        let joined = (|| {
            self.take_byte(st, block + queue::QUEUE_BYTE)?;
            let mut live = Vec::new();
            for w in queue::load(qpath, block)? {
                if self.waiter_alive(w.slot)? {
                    live.push(w);
                }
            }
            queue::insert(&mut live, queue::Waiter::new(slot, mode, convert));
            queue::store(qpath, block, &live)
        })();
        st.queued.insert(name.to_owned(), slot);
        if let Err(e) = joined {
            self.leave_queue(st, name);
            return Err(e);
        }
        Ok(())
    }

    /// Stop waiting for `name`: free the presence byte (which makes the entry dead for every
    /// reader) and drop this owner's reference on the queue byte. No gate needed.
    fn leave_queue(&self, st: &mut OwnerState, name: &str) {
        if let Some(slot) = st.queued.remove(name) {
            let _ = self.setlk(libc::F_UNLCK, slot, 1);
            let _ = self.drop_byte(st, named_block(name) + queue::QUEUE_BYTE);
        }
    }

    /// One attempt to set range lock `ty` (read, write or unlock) [LOCK-7], [LOCK-8].
    fn range_attempt(
        &self,
        st: &mut OwnerState,
        m: Mapped,
        ty: libc::c_int,
    ) -> Result<Attempt, AttemptError> {
        let level = match ty {
            libc::F_RDLCK => Some(Level::Read),
            libc::F_WRLCK => Some(Level::Write),
            _ => None,
        };
        let cur = st.tails.get(&m.tail).copied();
        // Which table bytes to operate on, and the tail level afterwards.
        let (e, new_tail) = if !m.touches_tail {
            (Some(m.e), cur)
        } else if m.covers_tail || level >= cur {
            // The request covers every offset the tail stands for, or does not weaken it.
            (
                Some(m.e),
                if m.covers_tail { level } else { level.max(cur) },
            )
        } else {
            // Partial (not to EOF) and weaker than what the tail holds: the tail byte may still
            // stand for a stronger lock beyond this request, so it is left alone.
            ((m.e > m.s).then(|| m.e - 1), cur)
        };
        let Some(e) = e else {
            return Ok(Attempt::Done);
        };
        if !self.setlk(ty, m.s, e - m.s + 1)? {
            let held = self
                .getlk(ty, m.s, e - m.s + 1)
                .ok()
                .flatten()
                .map(|(t, _, _)| {
                    if t == libc::F_WRLCK {
                        Mode::Ex
                    } else {
                        Mode::Pr
                    }
                })
                .unwrap_or(Mode::Ex);
            return Ok(Attempt::Conflict(held));
        }
        match new_tail {
            Some(l) => st.tails.insert(m.tail, l),
            None => st.tails.remove(&m.tail),
        };
        Ok(Attempt::Done)
    }

    /// Run `attempt` under the state mutex until it is done, fails, or `wait` gives up;
    /// sleeps (without the mutex) with a jittered exponential backoff.
    fn wait_loop(
        &self,
        wait: Wait,
        mut attempt: impl FnMut(&mut OwnerState) -> Result<Attempt, AttemptError>,
    ) -> Waited {
        let start = Instant::now();
        let mut backoff = MIN_BACKOFF;
        let mut last: Option<Mode> = None;
        loop {
            let r = {
                let mut st = self.lock_state();
                attempt(&mut st)
            };
            match r {
                Ok(Attempt::Done) => return Waited::Done,
                Err(e) => return Waited::Failed(e),
                Ok(Attempt::Conflict(m)) => {
                    last = Some(m);
                    if wait == Wait::No {
                        return Waited::Conflict(m);
                    }
                }
                Ok(Attempt::GateBusy) => {
                    last = None;
                    if wait == Wait::No && start.elapsed() >= GATE_TRY_LIMIT {
                        return Waited::GateBusy;
                    }
                }
                Ok(Attempt::Queued) => {
                    if wait == Wait::No {
                        return Waited::Queued;
                    }
                }
            }
            let mut sleep = backoff;
            if let Wait::Timeout(t) = wait {
                let waited = start.elapsed();
                if waited >= t {
                    return Waited::TimedOut(waited, last);
                }
                sleep = sleep.min(t - waited);
            }
            // Jitter (50-100 %) so that waiters polling one resource do not run in lockstep.
            let jitter = 0.5 + rand::random::<f64>() * 0.5;
            thread::sleep(sleep.mul_f64(jitter));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Acquire `res` in `mode`, waiting as `wait` says.
    ///
    /// Named resources: the owner must not hold `res` yet ([`AcquireError::AlreadyHeld`]; use
    /// [`LockOwner::convert`]). Ranges: PR or EX; setting a range that overlaps ranges this owner
    /// already holds replaces their mode there (POSIX semantics, done by the kernel).
    /// On error the owner holds what it held before, except [`AcquireError::GateNotReleased`].
    pub fn acquire(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<(), AcquireError> {
        let path = || self.path.clone();
        let waited = match res {
            Resource::Named(name) => {
                if let Some(held) = self.lock_state().named.get(name).copied() {
                    return Err(AcquireError::AlreadyHeld {
                        path: path(),
                        resource: res.clone(),
                        held,
                    });
                }
                let waited = self.wait_loop(wait, |st| {
                    if let Some(held) = st.named.get(name).copied() {
                        // Another thread of this owner acquired it meanwhile.
                        return Err(AttemptError::Io(io::Error::other(format!(
                            "acquired concurrently by another thread of this owner in {held}"
                        ))));
                    }
                    self.named_attempt(st, name, None, mode, wait != Wait::No)
                });
                self.stop_waiting(name, &waited);
                waited
            }
            Resource::Range { ino, start, end } => {
                let problem = |problem| AcquireError::Invalid {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    problem,
                };
                let ty = match mode {
                    Mode::Pr => libc::F_RDLCK,
                    Mode::Ex => libc::F_WRLCK,
                    _ => return Err(problem(RangeProblem::Mode)),
                };
                let m = map_range(*ino, *start, *end).map_err(problem)?;
                self.wait_loop(wait, |st| self.range_attempt(st, m, ty))
            }
        };
        match waited {
            Waited::Done => Ok(()),
            Waited::Conflict(held) => Err(AcquireError::WouldBlock {
                path: path(),
                resource: res.clone(),
                mode,
                held,
            }),
            Waited::GateBusy => Err(AcquireError::GateBusy {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::Queued => Err(AcquireError::Queued {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::TimedOut(waited, held) => Err(AcquireError::TimedOut {
                path: path(),
                resource: res.clone(),
                mode,
                waited,
                held,
            }),
            Waited::Failed(AttemptError::Io(source) | AttemptError::OldByteStuck(source)) => {
                Err(AcquireError::Io {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    source,
                })
            }
            Waited::Failed(AttemptError::GateStuck { committed, source }) => {
                Err(AcquireError::GateNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    acquired: committed,
                    source,
                })
            }
        }
    }

    /// [`LockOwner::acquire`] with [`Wait::No`].
    pub fn try_acquire(&self, res: &Resource, mode: Mode) -> Result<(), AcquireError> {
        self.acquire(res, mode, Wait::No)
    }

    /// Acquire and return a guard that releases `res` when dropped (errors of that release are
    /// ignored: the lock stays at worst until the owner is dropped).
    pub fn lock(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<Guard<'_>, AcquireError> {
        self.acquire(res, mode, wait)?;
        Ok(Guard {
            owner: self,
            res: res.clone(),
        })
    }

    /// Change the mode of a held resource, up or down, atomically with respect to every other
    /// owner's mode change (one gated section: check, take the new mode, drop the old one).
    ///
    /// While waiting, the old mode stays held; so two holders converting up to modes that
    /// conflict with each other's old mode wait for each other forever under [`Wait::Forever`]
    /// (the classic conversion deadlock): use a timeout. Ranges: same as [`LockOwner::acquire`]
    /// (the kernel converts atomically; on failure the old lock stays).
    pub fn convert(&self, res: &Resource, mode: Mode, wait: Wait) -> Result<(), ConvertError> {
        let path = || self.path.clone();
        let waited = match res {
            Resource::Named(name) => {
                let not_held = || ConvertError::NotHeld {
                    path: path(),
                    resource: res.clone(),
                };
                match self.lock_state().named.get(name).copied() {
                    None => return Err(not_held()),
                    Some(m) if m == mode => return Ok(()),
                    Some(_) => {}
                }
                let waited = self.wait_loop(wait, |st| match st.named.get(name).copied() {
                    Some(from) => self.named_attempt(st, name, Some(from), mode, wait != Wait::No),
                    None => Err(AttemptError::Io(io::Error::other(
                        "released by another thread of this owner",
                    ))),
                });
                self.stop_waiting(name, &waited);
                waited
            }
            Resource::Range { .. } => {
                return self.acquire(res, mode, wait).map_err(|e| match e {
                    AcquireError::WouldBlock {
                        path,
                        resource,
                        mode,
                        held,
                    } => ConvertError::WouldBlock {
                        path,
                        resource,
                        mode,
                        held,
                    },
                    AcquireError::TimedOut {
                        path,
                        resource,
                        mode,
                        waited,
                        held,
                    } => ConvertError::TimedOut {
                        path,
                        resource,
                        mode,
                        waited,
                        held,
                    },
                    AcquireError::Invalid {
                        path,
                        resource,
                        mode,
                        problem,
                    } => ConvertError::Invalid {
                        path,
                        resource,
                        mode,
                        problem,
                    },
                    AcquireError::GateBusy {
                        path,
                        resource,
                        mode,
                    } => ConvertError::GateBusy {
                        path,
                        resource,
                        mode,
                    },
                    AcquireError::Queued {
                        path,
                        resource,
                        mode,
                    } => ConvertError::Queued {
                        path,
                        resource,
                        mode,
                    },
                    AcquireError::Io {
                        path,
                        resource,
                        mode,
                        source,
                    } => ConvertError::Io {
                        path,
                        resource,
                        mode,
                        source,
                    },
                    AcquireError::GateNotReleased {
                        path,
                        resource,
                        mode,
                        acquired,
                        source,
                    } => ConvertError::GateNotReleased {
                        path,
                        resource,
                        mode,
                        converted: acquired,
                        source,
                    },
                    AcquireError::AlreadyHeld { path, resource, .. } => {
                        ConvertError::NotHeld { path, resource }
                    }
                });
            }
        };
        match waited {
            Waited::Done => Ok(()),
            Waited::Conflict(held) => Err(ConvertError::WouldBlock {
                path: path(),
                resource: res.clone(),
                mode,
                held,
            }),
            Waited::GateBusy => Err(ConvertError::GateBusy {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::Queued => Err(ConvertError::Queued {
                path: path(),
                resource: res.clone(),
                mode,
            }),
            Waited::TimedOut(waited, held) => Err(ConvertError::TimedOut {
                path: path(),
                resource: res.clone(),
                mode,
                waited,
                held,
            }),
            Waited::Failed(AttemptError::Io(source)) => Err(ConvertError::Io {
                path: path(),
                resource: res.clone(),
                mode,
                source,
            }),
            Waited::Failed(AttemptError::OldByteStuck(source)) => {
                Err(ConvertError::OldModeNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    source,
                })
            }
            Waited::Failed(AttemptError::GateStuck { committed, source }) => {
                Err(ConvertError::GateNotReleased {
                    path: path(),
                    resource: res.clone(),
                    mode,
                    converted: committed,
                    source,
                })
            }
        }
    }

    /// Release `res`. Named: releasing a resource not held is a no-op. Range: unlocks exactly
    /// that sub-range of what this owner holds (the kernel splits locks; POSIX semantics).
    pub fn release(&self, res: &Resource) -> Result<(), ReleaseError> {
        let mut st = self.lock_state();
        let io = |source| ReleaseError::Io {
            path: self.path.clone(),
            resource: res.clone(),
            source,
        };
        match res {
            Resource::Named(name) => {
                let Some(mode) = st.named.remove(name) else {
                    return Ok(());
                };
                match mode.byte() {
                    Some(b) => self.drop_byte(&mut st, named_block(name) + b).map_err(io),
                    None => Ok(()),
                }
            }
            Resource::Range { ino, start, end } => {
                let m = map_range(*ino, *start, *end).map_err(|problem| ReleaseError::Invalid {
                    path: self.path.clone(),
                    resource: res.clone(),
                    problem,
                })?;
                match self.range_attempt(&mut st, m, libc::F_UNLCK) {
                    Ok(_) => Ok(()),
                    Err(AttemptError::Io(e) | AttemptError::OldByteStuck(e)) => Err(io(e)),
                    Err(AttemptError::GateStuck { source, .. }) => Err(io(source)),
                }
            }
        }
    }

    /// The mode in which this owner holds named resource `name`, if any.
    pub fn held(&self, name: &str) -> Option<Mode> {
        self.lock_state().named.get(name).copied()
    }

    /// Would `mode` on `res` conflict with another owner now? Returns one conflicting lock
    /// (POSIX `getlk`); `None` when the request would be granted at this instant. Changes no lock.
    ///
    /// For a range, the reported bytes are the other owner's lock clipped to this inode (a lock
    /// that reaches the inode's tail byte is reported as running to end of file, `u64::MAX`).
    pub fn test(&self, res: &Resource, mode: Mode) -> Result<Option<Conflict>, TestError> {
        let io = |source| TestError::Io {
            path: self.path.clone(),
            resource: res.clone(),
            mode,
            source,
        };
        match res {
            Resource::Named(name) => {
                let block = named_block(name);
                Ok(self
                    .named_conflict(block, mode)
                    .map_err(io)?
                    .map(|m| Conflict {
                        start: 0,
                        end: u64::MAX,
                        mode: m,
                    }))
            }
            Resource::Range { ino, start, end } => {
                let problem = |problem| TestError::Invalid {
                    path: self.path.clone(),
                    resource: res.clone(),
                    mode,
                    problem,
                };
                let ty = match mode {
                    Mode::Pr => libc::F_RDLCK,
                    Mode::Ex => libc::F_WRLCK,
                    _ => return Err(problem(RangeProblem::Mode)),
                };
                let m = map_range(*ino, *start, *end).map_err(problem)?;
                let Some((t, s, e)) = self.getlk(ty, m.s, m.e - m.s + 1).map_err(io)? else {
                    return Ok(None);
                };
                let s = s.max(m.base);
                let e = e.min(m.tail);
                Ok(Some(Conflict {
                    start: s - m.base,
                    end: if e == m.tail { u64::MAX } else { e - m.base },
                    mode: if t == libc::F_WRLCK {
                        Mode::Ex
                    } else {
                        Mode::Pr
                    },
                }))
            }
        }
    }
}

/// Releases its named or range resource when dropped ([`LockOwner::lock`]).
#[derive(Debug)]
pub struct Guard<'a> {
    owner: &'a LockOwner,
    res: Resource,
}

impl Guard<'_> {
    pub fn resource(&self) -> &Resource {
        &self.res
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.owner.release(&self.res);
    }
}
