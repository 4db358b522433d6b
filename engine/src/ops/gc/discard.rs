//! `.discard` files on disk ([GC-7]): read, append under `gc` in EX, repair a torn tail. The
//! bytes are [`crate::format::discard`]'s.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use verfs_coordination::{fsutil, io_site};

use crate::error::Error;
use crate::format::discard as dfmt;
use crate::ids::{ChunkId, PackId};

use super::{Discard, DISCARD_HEADER_LEN};

/// `packs/<id>.discard`.
pub fn discard_path(packs_dir: &Path, id: PackId) -> PathBuf {
    packs_dir.join(format!("{id}.discard"))
}

/// Parse a `.discard` file's bytes ([GC-7]): [`crate::format::discard::parse`], errors naming
/// `path`.
pub fn parse_discard(path: &Path, id: PackId, b: &[u8]) -> Result<Discard, Error> {
    dfmt::parse(id, b).map_err(Error::corrupt(path))
}

/// Read `packs/<id>.discard` (absent: empty).
pub fn read_discard(packs_dir: &Path, id: PackId) -> Result<Discard, Error> {
    let path = discard_path(packs_dir, id);
    match fs::read(&path) {
        Ok(b) => parse_discard(&path, id, &b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Discard::default()),
        Err(e) => Err(Error::io(&path)(e)),
    }
}

/// Append a batch of newly found garbage and a checkpoint record to `packs/<id>.discard`,
/// creating it, or cutting a torn tail first. Only under `gc` in EX ([GC-7]).
pub(super) fn append_discard(
    packs_dir: &Path,
    id: PackId,
    existing: &Discard,
    batch: &[(ChunkId, u32)],
    lsn: u64,
) -> Result<(), Error> {
    let path = discard_path(packs_dir, id);
    let io = Error::io(&path);
    let mut f = io_site!(
        "gc.discard-create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    )
    .map_err(Error::io(&path))?;
    let len = f.metadata().map_err(Error::io(&path))?.len();
    let mut start = existing.valid_len;
    if start < DISCARD_HEADER_LEN as u64 {
        io_site!("gc.discard-reset-truncate", f.set_len(0)).map_err(Error::io(&path))?;
        io_site!(
            "gc.discard-header-write",
            f.write_all_at(&dfmt::encode_header(id), 0)
        )
        .map_err(Error::io(&path))?;
        start = DISCARD_HEADER_LEN as u64;
    } else if len != start {
        io_site!("gc.discard-cut-truncate", f.set_len(start)).map_err(Error::io(&path))?;
    }
    let out = dfmt::encode_append(batch, lsn);
    io_site!("gc.discard-write", f.write_all_at(&out, start)).map_err(Error::io(&path))?;
    io_site!("gc.discard-fsync", f.sync_data()).map_err(io)?;
    if existing.valid_len == 0 {
        fsutil::fsync_dir(packs_dir).map_err(Error::io(packs_dir))?;
    }
    let _ = f.flush();
    Ok(())
}

/// Cut a torn tail of a `.discard` file left by a GC that died ([GC-7]); only under `gc` EX.
pub fn repair_discard(packs_dir: &Path, id: PackId) -> Result<Option<u64>, Error> {
    let d = read_discard(packs_dir, id)?;
    let Some(at) = d.torn_at else { return Ok(None) };
    let path = discard_path(packs_dir, id);
    if at < DISCARD_HEADER_LEN as u64 {
        io_site!("gc.discard-repair-unlink", fs::remove_file(&path)).map_err(Error::io(&path))?;
    } else {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        io_site!("gc.discard-repair-truncate", f.set_len(at)).map_err(Error::io(&path))?;
        io_site!("gc.discard-repair-fsync", f.sync_all()).map_err(Error::io(&path))?;
    }
    Ok(Some(at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::discard::DISCARD_RECORD_HEADER_LEN;

    fn sample(dir: &Path) -> (PackId, Vec<u8>) {
        let id = PackId(0x1234_5678_9abc_def0);
        let a: Vec<(ChunkId, u32)> = (1..4u128)
            .map(|i| (ChunkId(i * 77), i as u32 * 10))
            .collect();
        let d = read_discard(dir, id).unwrap();
        append_discard(dir, id, &d, &a, 5).unwrap();
        let d = read_discard(dir, id).unwrap();
        append_discard(dir, id, &d, &[(ChunkId(999), 7)], 9).unwrap();
        (id, fs::read(discard_path(dir, id)).unwrap())
    }

    // proves [GC-7]
    #[test]
    fn discard_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let d = parse_discard(Path::new("x"), id, &bytes).unwrap();
        assert_eq!(d.ids.len(), 4);
        assert_eq!(d.ids[&ChunkId(999)], 7);
        assert_eq!(d.checkpoint_lsn, Some(9));
        assert_eq!(d.unconfirmed, 0);
        assert_eq!(d.torn_at, None);
        assert_eq!(d.valid_len, bytes.len() as u64);
    }

    // proves [GC-7]: every cut is a torn tail at a record boundary, never corruption, and the
    // next append after a cut produces a valid file.
    #[test]
    fn discard_every_truncation_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        for n in 0..bytes.len() {
            let d = parse_discard(Path::new("x"), id, &bytes[..n])
                .unwrap_or_else(|e| panic!("cut at {n}: {e}"));
            let at = d.torn_at.unwrap_or(n as u64);
            assert!(at <= n as u64, "cut at {n}");
            fs::write(discard_path(dir.path(), id), &bytes[..n]).unwrap();
            repair_discard(dir.path(), id).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert_eq!(d.torn_at, None, "cut at {n}");
            append_discard(dir.path(), id, &d, &[(ChunkId(5), 1)], 11).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert!(
                d.ids.contains_key(&ChunkId(5)) && d.torn_at.is_none(),
                "cut at {n}"
            );
        }
    }

    // proves [GC-7]. Regression: a `.discard` file whose unsynced bytes read back as zeros
    // after a power loss (crash image "names-zero-data": the name survived, the data did not)
    // made `recover` fail with "bad magic (not a discard file)". Every zero-filled tail of
    // every length, header included, is torn; what is left is a subset of the real content.
    #[test]
    fn discard_zero_filled_tail_after_power_loss_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let good = parse_discard(Path::new("x"), id, &bytes).unwrap();
        for n in [0, 1, 23, 24, 25, bytes.len()] {
            let d = parse_discard(Path::new("x"), id, &vec![0; n]).unwrap();
            assert!(
                d.ids.is_empty() && (n == 0 || d.torn_at == Some(0)),
                "{n} zeros: {d:?}"
            );
        }
        for k in 0..bytes.len() {
            let mut b = bytes.clone();
            b[k..].iter_mut().for_each(|x| *x = 0);
            let d = parse_discard(Path::new("x"), id, &b)
                .unwrap_or_else(|e| panic!("zeros from byte {k}: {e}"));
            assert!(
                d.ids.iter().all(|(c, v)| good.ids.get(c) == Some(v)),
                "zeros from byte {k}: {d:?}"
            );
            fs::write(discard_path(dir.path(), id), &b).unwrap();
            repair_discard(dir.path(), id).unwrap();
            let d = read_discard(dir.path(), id).unwrap();
            assert_eq!(d.torn_at, None, "zeros from byte {k}");
        }
        // A record that fails its checks with data, not zeros, after it stays corruption.
        let mut b = bytes.clone();
        b[DISCARD_HEADER_LEN + DISCARD_RECORD_HEADER_LEN] ^= 1;
        assert!(parse_discard(Path::new("x"), id, &b).is_err());
    }

    // Every flipped byte is either reported as corruption or seen as a torn tail (cut and
    // rebuilt from the index by the next sweep); never read as different valid content.
    #[test]
    fn discard_every_flip_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = sample(dir.path());
        let good = parse_discard(Path::new("x"), id, &bytes).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            match parse_discard(Path::new("x"), id, &b) {
                Err(_) => {}
                Ok(d) => assert!(
                    d.torn_at.is_some() && d.ids.iter().all(|(k, v)| good.ids.get(k) == Some(v)),
                    "flip at {i} accepted: {d:?}"
                ),
            }
        }
    }
}
