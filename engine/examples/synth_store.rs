//! Build a large store fast through the engine API: `synth_store STORE FILES`.
//!
//! For `bench/scale.sh --big` (10M files would take hours through a filesystem tree): FILES small
//! regular files under `/t/dNNNNN/fNNNN`, 1000 per directory, one commit per directory, all
//! sharing the bytes of one stored chunk (so the metadata is real, the data tiny). Prints
//! `files=N secs=S`.

use std::path::Path;
use std::time::Instant;

use verfs_engine::meta::{FileKind, Inode};
use verfs_engine::store::{OpenOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: synth_store STORE FILES".into());
    }
    let (root, files): (&str, u64) = (&args[1], args[2].parse()?);
    let store = Store::open(Path::new(root), OpenOptions::new("synth"))?;
    let t = Instant::now();
    let seed = b"one small file, stored once and shared by every synthetic file\n";
    let mut held = store.hold();
    let mut report = verfs_engine::store::TransferReport::default();
    let (extents, _) = store.write_stream(&seed[..], &mut report, &mut held)?;
    store.sync_pack()?;
    store.transact_held(true, Some(&held), |tx| {
        let at = tx.entry("/seed")?;
        let mut i = Inode::new(verfs_engine::ids::InodeNo(0), FileKind::File, 0o644);
        i.size = seed.len() as u64;
        tx.write_file(&at, "/seed", i, extents.clone())?;
        Ok(())
    })?;
    let per = 1000u64;
    let mut done = 0u64;
    let mut d = 0u64;
    while done < files {
        let n = per.min(files - done);
        let dir = format!("/t/d{d:05}");
        store.transact(false, |tx| {
            tx.mkdir_p(&dir, 0o755)?;
            for f in 0..n {
                let path = format!("{dir}/f{f:04}");
                let at = tx.entry(&path)?;
                let mut i = Inode::new(verfs_engine::ids::InodeNo(0), FileKind::File, 0o644);
                i.size = seed.len() as u64;
                tx.write_file(&at, &path, i, extents.clone())?;
            }
            Ok(())
        })?;
        done += n;
        d += 1;
    }
    store.sync()?;
    println!("files={files} secs={:.2}", t.elapsed().as_secs_f64());
    store.close()?;
    Ok(())
}
