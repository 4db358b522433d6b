//! fsck's check of the packs: every file of `packs/` is expected, every pack's records and index
//! verify, and every chunk of the index has a valid copy where the index says.

use std::collections::{HashMap, HashSet};

use crate::ids::{ChunkId, PackId};
use crate::layout::Layout;
use crate::meta::{MetaError, MetaState};
use crate::pack::{self, ProblemKind};

use super::FsckReport;

/// Scan every pack: its structure, every record (crc, decode, hash) and its index against its
/// records. With the metadata `s`, also prove that every indexed chunk has a valid copy in the
/// pack the index names ([`check_placements`]).
pub(super) fn check_packs(
    layout: &Layout,
    open: &HashSet<PackId>,
    s: Option<&MetaState>,
    r: &mut FsckReport,
) {
    let listing = match pack::list_packs(&layout.packs()) {
        Ok(l) => l,
        Err(e) => {
            r.problem(layout.packs().display().to_string(), e.to_string());
            return;
        }
    };
    // Per pack: distinct valid records that the index places in it.
    let mut placed: HashMap<PackId, u64> = HashMap::new();
    for u in &listing.unknown {
        r.problem(u.display().to_string(), "unexpected file in packs/");
    }
    for t in &listing.manifest_temps {
        r.problem(
            t.display().to_string(),
            "file staged by an unfinished manifest (a GC rewrite; `verfs recover` settles it)",
        );
    }
    for id in &listing.discards {
        let path = crate::ops::gc::discard_path(&layout.packs(), *id);
        if listing.packs.binary_search(id).is_err() {
            r.problem(path.display().to_string(), "discard file without its pack");
            continue;
        }
        match crate::ops::gc::read_discard(&layout.packs(), *id) {
            Ok(d) => {
                if let Some(at) = d.torn_at {
                    r.problem(
                        format!("{} at byte {at}", path.display()),
                        "torn tail (a GC died appending; `verfs recover` cuts it)",
                    );
                }
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
    }
    for id in &listing.orphan_indexes {
        r.problem(
            pack::index_path(&layout.packs(), *id).display().to_string(),
            "index without its pack",
        );
    }
    r.packs = listing.packs.len();
    for id in &listing.packs {
        let path = pack::pack_path(&layout.packs(), *id);
        let is_open = open.contains(id);
        match pack::scan(&path) {
            Ok(rep) => {
                for p in &rep.problems {
                    if is_open && matches!(p.kind, ProblemKind::TornTail) {
                        continue;
                    }
                    r.problem(
                        format!("{} at byte {}", p.path.display(), p.offset),
                        format!("{:?}: {}", p.kind, p.reason),
                    );
                }
                r.pack_records += rep.records.len() as u64;
                if let Some(s) = s {
                    let ids: HashSet<ChunkId> = rep.records.iter().map(|x| x.chunk_id).collect();
                    let mut n = 0u64;
                    for c in ids {
                        match s.chunk(c) {
                            Ok(Some(e)) if e.pack == *id => n += 1,
                            Ok(_) => {}
                            Err(e) => r.problem(format!("chunk {c}"), e.to_string()),
                        }
                    }
                    placed.insert(*id, n);
                }
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
        match pack::check_index(&layout.packs(), *id) {
            Ok(problems) => {
                for p in problems {
                    if is_open && p.kind == ProblemKind::IndexMissing {
                        continue;
                    }
                    let hint = if p.kind == ProblemKind::IndexMissing {
                        " (unsealed pack of a dead process; run `verfs recover`)"
                    } else {
                        ""
                    };
                    r.problem(
                        format!("{} at byte {}", p.path.display(), p.offset),
                        format!("{:?}: {}{hint}", p.kind, p.reason),
                    );
                }
            }
            Err(e) => r.problem(path.display().to_string(), e.to_string()),
        }
    }
    if let Some(s) = s {
        if let Err(e) = check_placements(layout, s, &placed, r) {
            r.problem("the chunk index", e.to_string());
        }
    }
}

/// Every chunk of the index has a valid copy in the pack it names. Proven by counting: one
/// stream of the index counts its entries per pack, and a pack whose count differs from the
/// number of its valid records the index places there (`placed`, from the scan) is scanned again
/// to name the entries without a copy. Holds one pack's record ids at a time.
fn check_placements(
    layout: &Layout,
    s: &MetaState,
    placed: &HashMap<PackId, u64>,
    r: &mut FsckReport,
) -> Result<(), MetaError> {
    let mut indexed: HashMap<PackId, u64> = HashMap::new();
    s.for_each_chunk(|_, e| -> Result<(), MetaError> {
        *indexed.entry(e.pack).or_default() += 1;
        Ok(())
    })?;
    let mut short: Vec<PackId> = indexed
        .iter()
        .filter(|(p, n)| placed.get(p) != Some(n))
        .map(|(p, _)| *p)
        .collect();
    short.sort();
    for p in short {
        let path = pack::pack_path(&layout.packs(), p);
        let valid: HashSet<ChunkId> = match pack::scan(&path) {
            Ok(rep) => rep.records.iter().map(|x| x.chunk_id).collect(),
            Err(_) => HashSet::new(),
        };
        let mut missing = Vec::new();
        s.for_each_chunk(|c, e| -> Result<(), MetaError> {
            if e.pack == p && !valid.contains(&c) {
                missing.push(c);
            }
            Ok(())
        })?;
        for c in missing {
            r.problem(
                format!("chunk {c}"),
                format!("indexed in pack {p} but that pack holds no valid copy of it (missing or damaged)"),
            );
        }
    }
    Ok(())
}
