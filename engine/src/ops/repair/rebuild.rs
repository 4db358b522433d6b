//! The consistency rebuild of `verfs repair` (`data-layout.md` 5.12, "The rebuild"): from a
//! state that may hold any subset of its records, the ops that make it satisfy every invariant
//! of section 7 again, and what each one loses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::format::keys::{self, TAG_EXTENTS};
use crate::ids::{ChunkId, InodeNo, PackId};
use crate::meta::tree::LostSubtree;
use crate::meta::{ChunkEntry, Extent, FileKind, Inode, MetaError, MetaState, Op, Timestamp};

use super::{Loss, LossKind};

/// Where each chunk has a record, from the packs' indexes: chunk id -> (pack, raw length).
pub(super) type Inventory = HashMap<ChunkId, Vec<(PackId, u32)>>;

/// What the rebuild decided.
#[derive(Default)]
pub(super) struct Plan {
    pub ops: Vec<Op>,
    pub losses: Vec<Loss>,
    pub fixes: Vec<String>,
    pub chunks_recovered: u64,
}

/// Compute the ops. `lost` are the namespace subtrees the salvage could not read, `extent_damage`
/// the files whose extent list lost some of its parts.
pub(super) fn plan(
    s: &MetaState,
    inv: &Inventory,
    lost: &[LostSubtree],
    extent_damage: &BTreeSet<InodeNo>,
) -> Result<Plan, MetaError> {
    let mut p = Plan::default();
    let mut inodes: BTreeMap<InodeNo, Inode> = BTreeMap::new();
    s.for_each_inode(|i| {
        inodes.insert(i.ino, i.clone());
        Ok::<(), MetaError>(())
    })?;
    let mut entries: Vec<(InodeNo, Vec<u8>, InodeNo)> = Vec::new();
    s.for_each_entry(|d, n, c| {
        entries.push((d, n.to_vec(), c));
        Ok::<(), MetaError>(())
    })?;
    let mut extents: BTreeMap<InodeNo, Vec<Extent>> = BTreeMap::new();
    s.for_each_extents(|ino, xs| {
        extents.insert(ino, xs.to_vec());
        Ok::<(), MetaError>(())
    })?;
    let before = paths(&entries);
    let name_of = |ino: InodeNo| {
        before
            .get(&ino)
            .cloned()
            .unwrap_or_else(|| format!("inode {ino}"))
    };
    let mut next_ino = s.next_ino;
    // Inodes to write (recreated, new, or with fixed attributes).
    let mut put: BTreeMap<InodeNo, Inode> = BTreeMap::new();
    let mut unlinks: Vec<Op> = Vec::new();
    let mut links: Vec<Op> = Vec::new();

    // 1. Inodes whose record is gone but whose entries or extents survive are recreated.
    let recreate = |ino: InodeNo, kind: FileKind| {
        let perm = match kind {
            _ if ino == InodeNo::ROOT => 0o755,
            FileKind::Dir => 0o700,
            _ => 0o600,
        };
        let mut i = Inode::new(ino, kind, perm);
        (i.uid, i.gid) = (0, 0);
        (i.atime, i.mtime, i.ctime) = (
            Timestamp::default(),
            Timestamp::default(),
            Timestamp::default(),
        );
        i
    };
    let mut wanted: BTreeMap<InodeNo, FileKind> = BTreeMap::new();
    wanted.insert(InodeNo::ROOT, FileKind::Dir);
    for (d, _, _) in &entries {
        wanted.insert(*d, FileKind::Dir);
    }
    for (ino, xs) in &extents {
        if !xs.is_empty() {
            wanted.entry(*ino).or_insert(FileKind::File);
        }
    }
    for (ino, kind) in wanted {
        if inodes.contains_key(&ino) {
            continue;
        }
        let mut i = recreate(ino, kind);
        if kind == FileKind::File {
            i.size = extents[&ino]
                .iter()
                .map(|x| x.file_off + u64::from(x.len))
                .max()
                .unwrap_or(0);
        }
        p.losses.push(Loss {
            kind: LossKind::Recreated,
            ino: ino.0,
            path: name_of(ino),
            detail: format!(
                "its inode record was lost: recreated as a {} (mode {:o}, owner root, times 0){}",
                if kind == FileKind::Dir {
                    "directory"
                } else {
                    "regular file"
                },
                i.perm,
                if kind == FileKind::File {
                    format!(", size {} from its extents", i.size)
                } else {
                    ", its entries kept".into()
                }
            ),
        });
        inodes.insert(ino, i.clone());
        put.insert(ino, i);
    }

    // 2. Entries that point at a missing inode, or that live in something not a directory.
    let mut kept: BTreeMap<InodeNo, Vec<(Vec<u8>, InodeNo)>> = BTreeMap::new();
    for (d, name, c) in &entries {
        let path = entry_path(&before, *d, name);
        let why = if !inodes.contains_key(c) {
            Some(format!("pointed at inode {c}, whose record was lost"))
        } else if inodes.get(d).is_none_or(|i| i.kind != FileKind::Dir) {
            Some(format!("an entry of inode {d}, which is not a directory"))
        } else {
            None
        };
        match why {
            Some(detail) => {
                unlinks.push(Op::Unlink {
                    parent: *d,
                    name: name.clone(),
                });
                p.losses.push(Loss {
                    kind: LossKind::EntryRemoved,
                    ino: c.0,
                    path,
                    detail,
                });
            }
            None => kept.entry(*d).or_default().push((name.clone(), *c)),
        }
    }

    // 3. Walk from the root; a directory reached a second time loses that entry.
    let mut reached: HashSet<InodeNo> = HashSet::new();
    let mut after: HashMap<InodeNo, String> = HashMap::new();
    reached.insert(InodeNo::ROOT);
    after.insert(InodeNo::ROOT, String::new());
    walk(
        InodeNo::ROOT,
        &mut kept,
        &inodes,
        &mut reached,
        &mut after,
        &mut unlinks,
        &mut p.losses,
    );

    // 4. Unreachable inodes: unlinked files of dead processes are deleted, the rest go to
    //    /lost+found (the tops of unreachable subtrees; their contents follow them).
    let mut deletes: Vec<Op> = Vec::new();
    let mut lf: Option<InodeNo> = None;
    loop {
        let unreached: BTreeSet<InodeNo> = inodes
            .keys()
            .copied()
            .filter(|i| !reached.contains(i))
            .collect();
        if unreached.is_empty() {
            break;
        }
        let incoming: HashSet<InodeNo> = kept
            .iter()
            .filter(|(d, _)| unreached.contains(d))
            .flat_map(|(_, es)| es.iter().map(|(_, c)| *c))
            .collect();
        let mut tops: Vec<InodeNo> = unreached
            .iter()
            .copied()
            .filter(|i| !incoming.contains(i))
            .collect();
        if tops.is_empty() {
            // Only cycles of directories are left: cut the smallest one's incoming entries.
            let Some(&t) = unreached.iter().next() else {
                break;
            };
            for (d, es) in kept.iter_mut() {
                es.retain(|(n, c)| {
                    let cut = *c == t && unreached.contains(d);
                    if cut {
                        unlinks.push(Op::Unlink {
                            parent: *d,
                            name: n.clone(),
                        });
                    }
                    !cut
                });
            }
            tops.push(t);
        }
        for t in tops {
            let Some(i) = inodes.get(&t) else { continue };
            if i.kind != FileKind::Dir && i.nlink == 0 {
                deletes.push(Op::DeleteInode(t));
                p.fixes.push(format!(
                    "inode {t}: deleted (unlinked, kept only while a process that is gone had it open)"
                ));
                reached.insert(t);
                continue;
            }
            let dir = match lf {
                Some(d) => d,
                None => {
                    let (d, name) = lost_found(
                        &mut kept,
                        &inodes,
                        &mut next_ino,
                        &mut put,
                        &mut links,
                        &mut p.fixes,
                    );
                    if let Some(i) = put.get(&d) {
                        inodes.entry(d).or_insert_with(|| i.clone());
                    }
                    reached.insert(d);
                    after
                        .entry(d)
                        .or_insert(format!("/{}", String::from_utf8_lossy(&name)));
                    lf = Some(d);
                    d
                }
            };
            let es = kept.entry(dir).or_default();
            let mut name = format!("#{t}").into_bytes();
            let mut k = 1;
            while es.iter().any(|(n, _)| *n == name) {
                name = format!("#{t}.{k}").into_bytes();
                k += 1;
            }
            es.push((name.clone(), t));
            links.push(Op::Link {
                parent: dir,
                name: name.clone(),
                ino: t,
            });
            let now_at = format!("{}/{}", after[&dir], String::from_utf8_lossy(&name));
            p.losses.push(Loss {
                kind: LossKind::MovedToLostFound,
                ino: t.0,
                path: now_at.clone(),
                detail: match before.get(&t) {
                    Some(b) => format!("was {b} (the entry that named it was lost)"),
                    None => "no entry named it any more (the entry was lost)".into(),
                },
            });
            reached.insert(t);
            after.insert(t, now_at);
            if inodes.get(&t).is_some_and(|i| i.kind == FileKind::Dir) {
                walk(
                    t,
                    &mut kept,
                    &inodes,
                    &mut reached,
                    &mut after,
                    &mut unlinks,
                    &mut p.losses,
                );
            }
        }
    }
    let deleted: HashSet<InodeNo> = deletes
        .iter()
        .filter_map(|o| match o {
            Op::DeleteInode(i) => Some(*i),
            _ => None,
        })
        .collect();
    let path_now = |ino: InodeNo| {
        after
            .get(&ino)
            .map(|p| {
                if p.is_empty() {
                    "/".to_string()
                } else {
                    p.clone()
                }
            })
            .unwrap_or_else(|| format!("inode {ino}"))
    };

    // 5. Link counts, and the parent records (`p`) path_of and rename rely on.
    let mut links_to: HashMap<InodeNo, Vec<(InodeNo, Vec<u8>)>> = HashMap::new();
    let mut subdirs: HashMap<InodeNo, u32> = HashMap::new();
    for (d, es) in &kept {
        for (n, c) in es {
            links_to.entry(*c).or_default().push((*d, n.clone()));
            if inodes.get(c).is_some_and(|i| i.kind == FileKind::Dir) {
                *subdirs.entry(*d).or_default() += 1;
            }
        }
    }
    let relinked: HashSet<InodeNo> = links
        .iter()
        .filter_map(|o| match o {
            Op::Link { ino, .. } => Some(*ino),
            _ => None,
        })
        .collect();
    let mut parents_fixed = 0u64;
    for (ino, i) in &inodes {
        if deleted.contains(ino) {
            continue;
        }
        let mine = links_to.get(ino).map(Vec::as_slice).unwrap_or(&[]);
        let want = if i.kind == FileKind::Dir {
            2 + subdirs.get(ino).copied().unwrap_or(0)
        } else {
            mine.len() as u32
        };
        let cur = put.get(ino).map_or(i.nlink, |x| x.nlink);
        if cur != want {
            if i.kind != FileKind::Dir && want < cur && !lost.is_empty() && !put.contains_key(ino) {
                p.losses.push(Loss {
                    kind: LossKind::LinksLost,
                    ino: ino.0,
                    path: path_now(*ino),
                    detail: format!(
                        "link count {cur} but {want} entries survive: {} names lost",
                        cur - want
                    ),
                });
            } else if !put.contains_key(ino) {
                p.fixes
                    .push(format!("{}: link count {cur} -> {want}", path_now(*ino)));
            }
            put.entry(*ino).or_insert_with(|| i.clone()).nlink = want;
        }
        if *ino != InodeNo::ROOT && !relinked.contains(ino) {
            if let Some((d, n)) = mine.first() {
                // A directory's record is exact; a file with several links may rightly have
                // none (its recorded link was removed), but never one that names no link.
                let rec = s.parent_of(*ino).ok().flatten();
                let wrong = match &rec {
                    Some(r) => !mine.contains(r),
                    None => i.kind == FileKind::Dir || put.contains_key(ino),
                };
                if wrong {
                    links.push(Op::Link {
                        parent: *d,
                        name: n.clone(),
                        ino: *ino,
                    });
                    parents_fixed += 1;
                }
            }
        }
    }
    if parents_fixed > 0 {
        p.fixes
            .push(format!("{parents_fixed} parent records rewritten"));
    }

    // 6. The chunk index against the packs, then every file's extents against the index.
    let mut chunk_ops: Vec<Op> = Vec::new();
    let mut index: HashMap<ChunkId, ChunkEntry> = HashMap::new();
    s.for_each_chunk(|id, e| {
        index.insert(id, e);
        Ok::<(), MetaError>(())
    })?;
    for (id, e) in index.iter_mut() {
        let copies = inv.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if copies.iter().any(|(pk, _)| *pk == e.pack) {
            continue;
        }
        match copies.first() {
            Some(&(pack, raw_len)) => {
                p.fixes.push(format!(
                    "chunk {id}: indexed in pack {} where it is not; pack {pack} holds it",
                    e.pack
                ));
                *e = ChunkEntry { pack, raw_len };
                chunk_ops.push(Op::AddChunk { id: *id, entry: *e });
            }
            None => {
                p.fixes.push(format!(
                    "chunk {id}: indexed in pack {}, but no pack holds it: removed from the index",
                    e.pack
                ));
                chunk_ops.push(Op::RemoveChunk { id: *id });
            }
        }
    }
    index.retain(|id, _| inv.contains_key(id));
    let mut set_extents: Vec<Op> = Vec::new();
    for (ino, xs) in &extents {
        if deleted.contains(ino) || xs.is_empty() {
            continue;
        }
        let Some(i) = inodes.get(ino) else { continue };
        if i.kind != FileKind::File {
            set_extents.push(Op::SetExtents {
                ino: *ino,
                extents: Vec::new(),
            });
            p.fixes.push(format!(
                "{}: data extents of a non-regular file removed",
                path_now(*ino)
            ));
            continue;
        }
        let mut keep = Vec::with_capacity(xs.len());
        let mut end = 0u64;
        for x in xs {
            let entry = match index.get(&x.chunk) {
                Some(e) => Some(*e),
                None => match inv.get(&x.chunk).and_then(|c| c.first()) {
                    Some(&(pack, raw_len)) => {
                        let e = ChunkEntry { pack, raw_len };
                        index.insert(x.chunk, e);
                        chunk_ops.push(Op::AddChunk {
                            id: x.chunk,
                            entry: e,
                        });
                        p.chunks_recovered += 1;
                        Some(e)
                    }
                    None => None,
                },
            };
            let why = match entry {
                None => Some(format!("chunk {} is in no pack", x.chunk)),
                Some(e) if u64::from(x.chunk_off) + u64::from(x.len) > u64::from(e.raw_len) => {
                    Some(format!("reaches past the end of chunk {}", x.chunk))
                }
                Some(_) if x.file_off < end => Some("overlaps the extent before it".into()),
                Some(_) => None,
            };
            match why {
                None => {
                    end = x.file_off + u64::from(x.len);
                    keep.push(*x);
                }
                Some(w) => p.losses.push(Loss {
                    kind: LossKind::ExtentCut,
                    ino: ino.0,
                    path: path_now(*ino),
                    detail: format!(
                        "bytes {}..{} cut ({w}): they read as zeros now, not as an I/O error",
                        x.file_off,
                        x.file_off + u64::from(x.len)
                    ),
                }),
            }
        }
        if keep.len() != xs.len() {
            set_extents.push(Op::SetExtents {
                ino: *ino,
                extents: keep,
            });
        }
        let cur = put.get(ino).map_or(i.size, |x| x.size);
        if cur < end {
            p.fixes.push(format!(
                "{}: size {cur} -> {end} (its extents reach that far)",
                path_now(*ino)
            ));
            put.entry(*ino).or_insert_with(|| i.clone()).size = end;
        }
    }
    for (ino, i) in &inodes {
        if deleted.contains(ino) {
            continue;
        }
        if i.kind == FileKind::Symlink && i.size != i.target.len() as u64 {
            p.fixes.push(format!(
                "{}: symlink size {} -> {}",
                path_now(*ino),
                i.size,
                i.target.len()
            ));
            put.entry(*ino).or_insert_with(|| i.clone()).size = i.target.len() as u64;
        }
        let data_lost = i.kind == FileKind::File
            && i.size > 0
            && (extent_damage.contains(ino)
                || (extents.get(ino).is_none_or(Vec::is_empty)
                    && lost.iter().any(|l| l.contains(&keys::extents_key(*ino, 0)))));
        if data_lost {
            p.losses.push(Loss {
                kind: LossKind::DataLost,
                ino: ino.0,
                path: path_now(*ino),
                detail:
                    "extents were lost with a damaged page: the bytes they covered read as zeros"
                        .into(),
            });
        }
    }

    // 7. Snapshots whose creator died before they were ready ([SNAP-3]).
    let mut snap_ops = Vec::new();
    for (id, info) in &s.snapshots {
        if !info.ready {
            snap_ops.push(Op::SnapshotDrop { id: *id });
            p.fixes.push(format!(
                "snapshot {}: not ready (its creator died): dropped",
                String::from_utf8_lossy(&info.name)
            ));
        }
    }

    p.ops.extend(unlinks);
    p.ops.extend(deletes);
    p.ops.extend(put.into_values().map(Op::PutInode));
    p.ops.extend(links);
    p.ops.extend(set_extents);
    p.ops.extend(chunk_ops);
    p.ops.extend(snap_ops);
    Ok(p)
}

/// Breadth-first from `from` over `kept`, marking what it reaches and its path; a directory
/// already reached loses the entry (a directory has one link: the namespace is a tree).
fn walk(
    from: InodeNo,
    kept: &mut BTreeMap<InodeNo, Vec<(Vec<u8>, InodeNo)>>,
    inodes: &BTreeMap<InodeNo, Inode>,
    reached: &mut HashSet<InodeNo>,
    after: &mut HashMap<InodeNo, String>,
    unlinks: &mut Vec<Op>,
    losses: &mut Vec<Loss>,
) {
    let mut queue = VecDeque::from([from]);
    while let Some(d) = queue.pop_front() {
        let base = after.get(&d).cloned().unwrap_or_default();
        let Some(es) = kept.get_mut(&d) else { continue };
        es.retain(|(name, c)| {
            let path = format!("{base}/{}", String::from_utf8_lossy(name));
            let is_dir = inodes.get(c).is_some_and(|i| i.kind == FileKind::Dir);
            if is_dir && reached.contains(c) {
                unlinks.push(Op::Unlink {
                    parent: d,
                    name: name.clone(),
                });
                losses.push(Loss {
                    kind: LossKind::EntryRemoved,
                    ino: c.0,
                    path,
                    detail: format!("a second entry of directory inode {c} (not a tree)"),
                });
                return false;
            }
            if reached.insert(*c) {
                after.insert(*c, path);
                if is_dir {
                    queue.push_back(*c);
                }
            }
            true
        });
    }
}

/// `/lost+found`: the existing directory, or a new one (a free name beside it if something else
/// holds the name).
fn lost_found(
    kept: &mut BTreeMap<InodeNo, Vec<(Vec<u8>, InodeNo)>>,
    inodes: &BTreeMap<InodeNo, Inode>,
    next_ino: &mut u64,
    put: &mut BTreeMap<InodeNo, Inode>,
    links: &mut Vec<Op>,
    fixes: &mut Vec<String>,
) -> (InodeNo, Vec<u8>) {
    let root = kept.entry(InodeNo::ROOT).or_default();
    if let Some((n, c)) = root.iter().find(|(n, _)| n == b"lost+found") {
        if inodes.get(c).is_some_and(|i| i.kind == FileKind::Dir) {
            return (*c, n.clone());
        }
    }
    let mut name = b"lost+found".to_vec();
    let mut k = 1;
    while root.iter().any(|(n, _)| *n == name) {
        name = format!("lost+found.{k}").into_bytes();
        k += 1;
    }
    let ino = InodeNo(*next_ino);
    *next_ino += 1;
    put.insert(ino, Inode::new(ino, FileKind::Dir, 0o700));
    root.push((name.clone(), ino));
    links.push(Op::Link {
        parent: InodeNo::ROOT,
        name: name.clone(),
        ino,
    });
    fixes.push(format!("/{} created", String::from_utf8_lossy(&name)));
    (ino, name)
}

/// The path of every inode the entries reach from the root (before any change), for reports.
fn paths(entries: &[(InodeNo, Vec<u8>, InodeNo)]) -> HashMap<InodeNo, String> {
    let mut children: HashMap<InodeNo, Vec<(&[u8], InodeNo)>> = HashMap::new();
    for (d, n, c) in entries {
        children.entry(*d).or_default().push((n, *c));
    }
    let mut out = HashMap::new();
    out.insert(InodeNo::ROOT, "/".to_string());
    let mut queue = VecDeque::from([(InodeNo::ROOT, String::new())]);
    while let Some((d, base)) = queue.pop_front() {
        for (n, c) in children.get(&d).map(Vec::as_slice).unwrap_or(&[]) {
            if out.contains_key(c) {
                continue;
            }
            let p = format!("{base}/{}", String::from_utf8_lossy(n));
            out.insert(*c, p.clone());
            queue.push_back((*c, p));
        }
    }
    out
}

fn entry_path(before: &HashMap<InodeNo, String>, d: InodeNo, name: &[u8]) -> String {
    let base = match before.get(&d) {
        Some(p) if p == "/" => String::new(),
        Some(p) => p.clone(),
        None => format!("inode {d}:"),
    };
    format!("{base}/{}", String::from_utf8_lossy(name))
}

/// Make every file's extent parts whole again after a salvage: parts numbered 0.. without gaps
/// and part 0's totals right. A file that lost parts keeps the extents that survive; it is
/// returned (its data is partly lost).
pub(super) fn mend_extent_parts(ns: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeSet<InodeNo> {
    let mut damaged = BTreeSet::new();
    let mut by_ino: BTreeMap<InodeNo, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
    for (k, v) in ns.range(vec![TAG_EXTENTS]..vec![TAG_EXTENTS + 1]) {
        if let (Ok(ino), Some(part)) = (
            keys::key_ino(k),
            k.get(9..13).and_then(|b| <[u8; 4]>::try_from(b).ok()),
        ) {
            by_ino
                .entry(ino)
                .or_default()
                .push((u32::from_be_bytes(part), v.clone()));
        }
    }
    for (ino, parts) in by_ino {
        let mut xs: Vec<Extent> = Vec::new();
        let mut ok = parts.iter().enumerate().all(|(i, (p, _))| *p as usize == i);
        for (p, v) in &parts {
            ok &= keys::decode_extent_part(*p, v, &mut xs).is_ok();
        }
        let summary = parts
            .first()
            .filter(|(p, _)| *p == 0)
            .and_then(|(_, v)| keys::decode_extent_summary(v).ok());
        let bytes: u64 = xs.iter().map(|x| u64::from(x.len)).sum();
        ok &= summary == Some((xs.len() as u32, bytes));
        if ok {
            continue;
        }
        damaged.insert(ino);
        let prefix = keys::ino_prefix(TAG_EXTENTS, ino);
        ns.retain(|k, _| !k.starts_with(&prefix));
        xs.sort_by_key(|x| x.file_off);
        for (part, v) in keys::encode_extent_parts(&xs) {
            ns.insert(keys::extents_key(ino, part).to_vec(), v);
        }
    }
    damaged
}
