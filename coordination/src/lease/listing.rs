//! Every folder in `leases/` as a reader sees it: [`list`], [`LeaseEntry`], folder names.
//!
//! Owns the folder-name grammar (`<id>`, `<id>.claimed-<cleaner>`, `.new-<id>-<pid>`) and the
//! read-only listing ([LEASE-3]). Does not change anything on disk: claiming is `claim`, this
//! process's own folder is `holder`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::heartbeat::read_heartbeat;
use super::liveness::liveness_at;
use super::{
    unix_ms, Heartbeat, LeaseConfig, LeaseId, LeaseInfo, Liveness, CLAIMED_INFIX, HEARTBEAT_FILE,
    INFO_FILE, INFO_KIND, NEW_PREFIX,
};
use crate::ctlfile;

/// [`list`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error("listing leases in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Is `leases_dir/<id>` a live (unclaimed) lease folder?
pub fn is_live_lease(leases_dir: &Path, id: &LeaseId) -> bool {
    fs::metadata(leases_dir.join(id.as_str()))
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

/// Name of `id`'s folder once claimed by `cleaner`.
pub fn claimed_name(id: &LeaseId, cleaner: &LeaseId) -> String {
    format!("{id}{CLAIMED_INFIX}{cleaner}")
}

/// What a folder in `leases/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// `<id>`: a lease in use, or of a dead process not yet claimed.
    Live,
    /// `<id>.claimed-<cleaner>`: being cleaned by `cleaner`.
    Claimed { cleaner: LeaseId },
    /// `.new-<id>`: [`Lease::acquire`](super::Lease::acquire) has not finished (or died) building it.
    Partial,
}

/// The info file of a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryInfo {
    Valid(LeaseInfo),
    Missing,
    Corrupt { reason: String },
}

/// One folder in `leases/`, as seen by [`list`].
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    pub id: LeaseId,
    pub path: PathBuf,
    pub state: LeaseState,
    pub info: EntryInfo,
    /// `None` when missing, torn or corrupt.
    pub heartbeat: Option<Heartbeat>,
    /// Newest sign of life: the heartbeat's time, the heartbeat file's mtime and, without a
    /// valid info, the folder's mtime.
    pub last_seen_unix_ms: u64,
}

impl LeaseEntry {
    /// [`liveness`](super::liveness) of this entry, using file times where the info or heartbeat are unreadable.
    ///
    /// A torn heartbeat read must not make a live process look as old as its start time, so the
    /// heartbeat file's mtime (updated by every write) also counts as a sign of life.
    pub fn liveness(&self, cfg: &LeaseConfig, now: SystemTime) -> Liveness {
        if self.state == LeaseState::Partial && !matches!(self.info, EntryInfo::Valid(_)) {
            // No info yet: the pid in the folder name is all there is. If it is not running here
            // the creator is gone, or it is on another host, whose acquire then fails cleanly
            // at its rename instead of publishing a lease.
            if let Some(pid) = partial_pid(&self.path) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Liveness::Dead(format!(
                        "creator pid {pid} died while acquiring the lease"
                    ));
                }
            }
        }
        match &self.info {
            EntryInfo::Valid(info) => {
                let last = self.last_seen_unix_ms.max(info.started_unix_ms);
                liveness_at(Some(info), last, cfg, now)
            }
            _ => liveness_at(None, self.last_seen_unix_ms, cfg, now),
        }
    }
}

fn mtime_ms(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(unix_ms)
}

/// The info file of lease folder `dir`, as a lease listing reports it.
pub(super) fn read_entry_info(dir: &Path) -> EntryInfo {
    match ctlfile::read::<LeaseInfo>(&dir.join(INFO_FILE), INFO_KIND) {
        Ok(info) => EntryInfo::Valid(info),
        Err(e) if e.is_not_found() => EntryInfo::Missing,
        Err(e) => EntryInfo::Corrupt {
            reason: e.to_string(),
        },
    }
}

/// Read one lease folder; `None` when it vanished meanwhile (claimed or released).
pub fn read_entry(path: &Path, id: LeaseId, state: LeaseState) -> Option<LeaseEntry> {
    let folder_mtime = mtime_ms(path)?;
    let info = read_entry_info(path);
    let hb_path = path.join(HEARTBEAT_FILE);
    let heartbeat = read_heartbeat(&hb_path).ok().flatten();
    let mut last = heartbeat
        .map(|h| h.unix_ms)
        .unwrap_or(0)
        .max(mtime_ms(&hb_path).unwrap_or(0));
    if !matches!(info, EntryInfo::Valid(_)) {
        last = last.max(folder_mtime);
    }
    // The folder may have been renamed away while we read it; then this view is meaningless.
    if !path.is_dir() {
        return None;
    }
    Some(LeaseEntry {
        id,
        path: path.to_path_buf(),
        state,
        info,
        heartbeat,
        last_seen_unix_ms: last,
    })
}

/// Parse a name in `leases/`; `None` for names that are not lease folders.
pub fn parse_folder_name(name: &str) -> Option<(LeaseId, LeaseState)> {
    if let Some(rest) = name.strip_prefix(NEW_PREFIX) {
        // `.new-<id>-<pid>`; older builds wrote `.new-<id>`.
        let id = rest.split('-').next()?;
        return Some((id.parse().ok()?, LeaseState::Partial));
    }
    if let Some((id, cleaner)) = name.split_once(CLAIMED_INFIX) {
        return Some((
            id.parse().ok()?,
            LeaseState::Claimed {
                cleaner: cleaner.parse().ok()?,
            },
        ));
    }
    Some((name.parse().ok()?, LeaseState::Live))
}

/// Every lease folder in `leases_dir` ([LEASE-3]). Unknown names are skipped.
///
/// Read-only. Folders renamed or removed while listing are left out.
pub fn list(leases_dir: &Path) -> Result<Vec<LeaseEntry>, ListError> {
    let io = |source| ListError::Io {
        path: leases_dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for ent in fs::read_dir(leases_dir).map_err(io)? {
        let ent = ent.map_err(io)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((id, state)) = parse_folder_name(name) else {
            continue;
        };
        if let Some(e) = read_entry(&ent.path(), id, state) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The creator pid in a partial lease folder's name (`.new-<id>-<pid>`).
pub fn partial_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(NEW_PREFIX)?
        .split('-')
        .nth(1)?
        .parse()
        .ok()
}
