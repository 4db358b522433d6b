//! The wait queue of a named block: arrival-order fairness for waiting acquires and up-converts
//! [LOCK-9].
//!
//! Owns the queue file `locks/queue/<block>` (the block's waiters in grant order), a waiter's
//! *presence byte* (how others tell a live waiter from a dead one) and the block's *queue byte*
//! (held by every waiter, so a newcomer learns with one `F_OFD_GETLK` that it must queue). Does
//! not own the gate protocol or the mode bytes (`owner`): the queue only decides who may *try*
//! next; [LOCK-5] rests on the mode bytes alone, so a stale, lost or corrupt queue file can cost
//! fairness for a moment, never exclusion.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Mode, NAMED_BLOCKS, RANGE_BASE};
use crate::ctlfile;

/// Directory of the queue files, beside the table.
pub const QUEUE_DIR: &str = "queue";
/// Byte inside a named block that every queued waiter of the block holds shared.
pub const QUEUE_BYTE: u64 = 6;
/// First byte of the presence region: `[WAITER_BASE, RANGE_BASE)`, between the named blocks
/// and the range region. A waiter write-locks one random byte of it while it is queued.
pub const WAITER_BASE: u64 = NAMED_BLOCKS * super::BLOCK_SIZE;
const _: () = assert!(WAITER_BASE < RANGE_BASE);

/// Control-file kind of a queue file.
const KIND: &str = "lock-queue";

/// One queued request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Waiter {
    /// Table offset of the waiter's presence byte; unique among live waiters.
    pub slot: u64,
    /// The requested mode (`NL` .. `EX`).
    pub mode: String,
    /// A convert of a held resource (served before every plain acquire).
    pub convert: bool,
}

impl Waiter {
    pub fn new(slot: u64, mode: Mode, convert: bool) -> Waiter {
        Waiter {
            slot,
            mode: mode.to_string(),
            convert,
        }
    }
}

/// The body of `locks/queue/<block>`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    /// Table offset of the block this queue belongs to (a check against a misplaced file).
    block: u64,
    /// Grant order: converts first, then plain acquires, each in arrival order.
    waiters: Vec<Waiter>,
}

/// The queue file of the block at table offset `block`, in `locks_dir`.
pub fn path(locks_dir: &Path, block: u64) -> PathBuf {
    locks_dir
        .join(QUEUE_DIR)
        .join(format!("{:010x}", block / super::BLOCK_SIZE))
}

/// A random presence byte.
pub fn random_slot() -> u64 {
    WAITER_BASE + rand::random::<u64>() % (RANGE_BASE - WAITER_BASE)
}

/// The waiters of the queue at `path` in grant order. A missing file is an empty queue; so is a
/// damaged one or one of another block (soft state: the live waiters put themselves back).
pub fn load(path: &Path, block: u64) -> io::Result<Vec<Waiter>> {
    match ctlfile::read::<QueueFile>(path, KIND) {
        Ok(q) if q.block == block => Ok(q.waiters),
        Ok(_) => Ok(Vec::new()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(ctlfile::CtlError::Corrupt { .. }) => Ok(Vec::new()),
        Err(ctlfile::CtlError::Io { source, .. }) => Err(source),
    }
}

/// Replace the queue at `path` (temp file + rename, no fsync: after a machine crash no waiter is
/// left, so a lost or torn queue file is an empty queue). An empty queue removes the file.
pub fn store(path: &Path, block: u64, waiters: &[Waiter]) -> io::Result<()> {
    if waiters.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let dir = crate::fsutil::parent_of(path);
    fs::create_dir_all(&dir)?;
    let bytes = ctlfile::encode(
        KIND,
        &QueueFile {
            block,
            waiters: waiters.to_vec(),
        },
    );
    let tmp = crate::fsutil::temp_path_beside(path);
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Insert `w` at its place in grant order: a convert after the last convert, an acquire last.
pub fn insert(waiters: &mut Vec<Waiter>, w: Waiter) {
    let at = if w.convert {
        waiters.iter().take_while(|x| x.convert).count()
    } else {
        waiters.len()
    };
    waiters.insert(at, w);
}

/// Converting from `from` to `to` can never wait: every mode compatible with `from` is compatible
/// with `to` (a down-convert, such as EX to PR or PR to CR), so it bypasses the queue.
pub fn never_waits(from: Mode, to: Mode) -> bool {
    Mode::ALL
        .into_iter()
        .all(|m| !from.compatible(m) || to.compatible(m))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn w(slot: u64, convert: bool) -> Waiter {
        Waiter {
            slot,
            mode: "EX".into(),
            convert,
        }
    }

    #[test]
    fn converts_go_before_acquires_and_each_keeps_arrival_order() {
        let mut q = Vec::new();
        insert(&mut q, w(1, false));
        insert(&mut q, w(2, true));
        insert(&mut q, w(3, false));
        insert(&mut q, w(4, true));
        let order: Vec<u64> = q.iter().map(|x| x.slot).collect();
        assert_eq!(order, [2, 4, 1, 3]);
    }

    #[test]
    fn down_converts_never_wait_and_up_converts_may() {
        use Mode::*;
        assert!(never_waits(Ex, Pr));
        assert!(never_waits(Pr, Cr));
        assert!(never_waits(Pw, Nl));
        assert!(never_waits(Pr, Pr));
        assert!(!never_waits(Pr, Ex));
        assert!(!never_waits(Cw, Pr)); // sideways: PR conflicts with CW holders
        assert!(!never_waits(Cr, Cw));
    }

    #[test]
    fn a_damaged_or_misplaced_queue_file_reads_as_empty_and_a_good_one_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), 8 * 77);
        assert!(load(&p, 8 * 77).unwrap().is_empty());
        store(&p, 8 * 77, &[w(WAITER_BASE + 5, false)]).unwrap();
        assert_eq!(load(&p, 8 * 77).unwrap(), vec![w(WAITER_BASE + 5, false)]);
        assert!(load(&p, 8 * 78).unwrap().is_empty(), "another block's file");
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        fs::write(&p, bytes).unwrap();
        assert!(load(&p, 8 * 77).unwrap().is_empty());
        store(&p, 8 * 77, &[]).unwrap();
        assert!(!p.exists(), "an empty queue has no file");
    }
}
