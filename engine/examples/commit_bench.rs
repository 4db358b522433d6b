//! Metadata commit rate of one process: `commit_bench STORE ID COUNT [GO_FILE]`.
//!
//! Opens the store, waits until GO_FILE exists (so that several processes start together), then
//! makes COUNT durable metadata commits (`mkdir /bench-ID/dN`, each acknowledged only after the log
//! is fdatasynced) and prints `commits=COUNT secs=S`.

use std::path::Path;
use std::time::Instant;

use verfs_engine::store::{OpenOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: commit_bench STORE ID COUNT [GO_FILE]".into());
    }
    let (root, id, count): (&str, &str, u64) = (&args[1], &args[2], args[3].parse()?);
    let store = Store::open(Path::new(root), OpenOptions::new("bench"))?;
    store.mkdir(&format!("/bench-{id}"), 0o755, true)?;
    if let Some(go) = args.get(4) {
        while !Path::new(go).exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let t = Instant::now();
    for n in 0..count {
        store.mkdir(&format!("/bench-{id}/d{n}"), 0o755, false)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("commits={count} secs={secs:.4}");
    store.close()?;
    Ok(())
}
