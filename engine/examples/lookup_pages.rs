//! How many metadata pages a fresh process reads to answer one lookup: `lookup_pages STORE PATH`.
//!
//! Opens the store (an empty page cache, as every new process has), then prints the pages read
//! from page files for `stat PATH`, then for listing PATH's directory with every entry's inode:
//! `stat_pages=N ls_pages=M entries=E depth=D` (D: levels of the namespace tree). With a cold OS
//! cache each of those pages is one read of the disk (or one round trip on a network
//! filesystem); the count grows with the depth of the tree, O(log n).

use std::path::Path;

use verfs_engine::store::{OpenOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: lookup_pages STORE PATH".into());
    }
    let store = Store::open(Path::new(&args[1]), OpenOptions::new("lookup-pages"))?;
    let path = args[2].as_str();
    let p0 = store.pages().stats().disk_reads;
    store.stat(path)?;
    let p1 = store.pages().stats().disk_reads;
    let dir = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    let entries = store.list(dir)?.len();
    let p2 = store.pages().stats().disk_reads;
    let (roots, _) = store.read(|s| s.base())?;
    let depth = match roots.namespace.ptr {
        Some(p) => u32::from(store.pages().read_page(&p)?.level()) + 1,
        None => 0,
    };
    println!(
        "stat_pages={} ls_pages={} entries={entries} depth={depth}",
        p1 - p0,
        p2 - p1
    );
    store.close()?;
    Ok(())
}
