//! The heartbeat file `leases/<id>/heartbeat`: its 20-byte form, a torn-tolerant read, and whether
//! a write must be flushed for other hosts to see it.
//!
//! Owns the [`Heartbeat`] encoding ([LEASE-4]). Does not own when heartbeats are written (the
//! [`super::LeaseKeeper`] in `holder`) nor what their age means (`liveness`).

use std::fs;
use std::io;
use std::path::Path;
use std::thread;
use std::time::Duration;

use super::HEARTBEAT_LEN;

/// The content of `leases/<id>/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Incremented by every heartbeat write.
    pub counter: u64,
    /// Writer's wall clock at the write.
    pub unix_ms: u64,
}

impl Heartbeat {
    /// The 20-byte on-disk form.
    pub fn encode(&self) -> [u8; HEARTBEAT_LEN] {
        let mut b = [0u8; HEARTBEAT_LEN];
        b[0..8].copy_from_slice(&self.counter.to_le_bytes());
        b[8..16].copy_from_slice(&self.unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[0..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse the on-disk form; `None` when the length or the crc32 is wrong ([LEASE-4]).
    pub fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let b: &[u8; HEARTBEAT_LEN] = bytes.try_into().ok()?;
        let le64 = |r: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(r.try_into().ok()?)) };
        let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
        if crc32fast::hash(&b[0..16]) != crc {
            return None;
        }
        Some(Heartbeat {
            counter: le64(&b[0..8])?,
            unix_ms: le64(&b[8..16])?,
        })
    }
}

/// Read a heartbeat file: `Ok(None)` when it exists but is torn or corrupt.
///
/// A concurrent `pwrite` may be seen half done, so a bad read is retried a few times before it
/// is reported as corrupt.
pub fn read_heartbeat(path: &Path) -> io::Result<Option<Heartbeat>> {
    for attempt in 0..3 {
        let bytes = fs::read(path)?;
        if let Some(hb) = Heartbeat::decode(&bytes) {
            return Ok(Some(hb));
        }
        if attempt < 2 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(None)
}

/// Should heartbeat writes be flushed for other hosts to see them?
///
/// On a network filesystem an unflushed `pwrite` stays in the writer's cache, so other clients
/// would see a stale heartbeat and declare a live process dead. Local filesystems share the page
/// cache, where no flush is needed.
pub(super) fn needs_flush(dir: &Path) -> bool {
    !crate::fscheck::is_local(dir)
}
