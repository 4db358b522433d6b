//! fsck's check of the namespace at one lsn: the directories form a tree reached from the root,
//! every entry names an inode that exists, link counts, sizes and extents agree, every extent's
//! chunk is indexed.
//!
//! It streams: what it holds is the page cache, the stack of directories still to list and a few
//! counters, never a map over all inodes. Directories are descended only through the entry their
//! parent record names, so each is listed once and a damaged tree cannot loop. Link counts of
//! non-directories are proven with a multiset hash: the sum of `h(ino)` over every entry that
//! names a non-directory equals the sum of `nlink * h(ino)` over the non-directories. Only when
//! the sums differ (damage) does a second walk, in slices of at most 2^20 inodes, name the
//! inodes whose counts are wrong.

use std::collections::{HashMap, HashSet};

use crate::ids::InodeNo;
use crate::meta::{FileKind, Inode, MetaError, MetaState};

use super::FsckReport;

/// Inodes counted per slice of the walk that names wrong link counts.
const SLICE: u64 = 1 << 20;

fn h(ino: InodeNo) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&ino.0.to_le_bytes(), 0x6673_636b)
}

/// `ino`'s path for a report, or `inode N` when no path names it.
fn name(s: &MetaState, ino: InodeNo) -> String {
    match s.path_of(ino) {
        Some(p) => String::from_utf8_lossy(&p).into_owned(),
        None => format!("inode {ino}"),
    }
}

fn entry_path(s: &MetaState, dir: InodeNo, entry: &[u8]) -> String {
    let d = name(s, dir);
    let sep = if d.ends_with('/') { "" } else { "/" };
    format!("{d}{sep}{}", String::from_utf8_lossy(entry))
}

/// What an entry names, as the walk sees it.
enum Child {
    Missing,
    /// A directory this entry is not the recorded link of (a second link, or no parent record):
    /// not descended.
    ExtraDirLink,
    Dir,
    /// A file, symlink or special file.
    Other,
}

/// `(directory, entry name, inode it names, what that is)`.
type OnEntry<'a> = dyn FnMut(InodeNo, &[u8], InodeNo, Child) + 'a;

/// Walk the tree from the root, listing each directory once: `entry(dir, name, child, what)`
/// for every entry, `listed(dir, subdirectories)` after each directory. Returns the number of
/// directories reached (the root included).
fn walk(
    s: &MetaState,
    entry: &mut OnEntry<'_>,
    listed: &mut dyn FnMut(&Inode, u32),
) -> Result<u64, MetaError> {
    let Some(root) = s.inode(InodeNo::ROOT)? else {
        return Ok(0);
    };
    let mut stack = vec![root];
    let mut reached = 1u64;
    while let Some(dir) = stack.pop() {
        let mut subdirs = 0u32;
        s.for_each_entry_of(dir.ino, |n, child| -> Result<(), MetaError> {
            match s.inode(child)? {
                None => entry(dir.ino, n, child, Child::Missing),
                Some(ci) if ci.kind == FileKind::Dir => {
                    subdirs += 1;
                    if s.parent_of(child)?
                        .is_some_and(|(p, pn)| p == dir.ino && pn == n)
                    {
                        entry(dir.ino, n, child, Child::Dir);
                        reached += 1;
                        stack.push(ci);
                    } else {
                        entry(dir.ino, n, child, Child::ExtraDirLink);
                    }
                }
                Some(_) => entry(dir.ino, n, child, Child::Other),
            }
            Ok(())
        })?;
        listed(&dir, subdirs);
    }
    Ok(reached)
}

pub(super) fn check_namespace(
    s: &MetaState,
    at: &str,
    live_orphans: &HashSet<InodeNo>,
    r: &mut FsckReport,
) -> Result<(), MetaError> {
    let Some(root) = s.inode(InodeNo::ROOT)? else {
        r.problem(at, "no root directory");
        return Ok(());
    };
    if root.kind != FileKind::Dir {
        r.problem(at, "root is not a directory");
        return Ok(());
    }
    // 1. The walk: entries name inodes, directories have one link and 2 + subdirectories counts.
    let (mut links, mut link_sum) = (0u64, 0u64);
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut counts: Vec<(String, String)> = Vec::new();
    let reached = walk(
        s,
        &mut |dir, n, child, what| match what {
            Child::Missing => problems.push((
                entry_path(s, dir, n),
                format!("entry points at missing inode {child}"),
            )),
            Child::ExtraDirLink => problems.push((
                entry_path(s, dir, n),
                format!("directory inode {child} has more than one entry (not a tree)"),
            )),
            Child::Dir => {}
            Child::Other => {
                links += 1;
                link_sum = link_sum.wrapping_add(h(child));
            }
        },
        &mut |dir, subdirs| {
            if dir.nlink != 2 + subdirs {
                counts.push((
                    name(s, dir.ino),
                    format!("link count {} but {} links exist", dir.nlink, 2 + subdirs),
                ));
            }
        },
    )?;
    for (loc, msg) in problems.into_iter().chain(counts) {
        r.problem(loc, msg);
    }
    // 2. Entries under something that is not a directory.
    let mut last: Option<InodeNo> = None;
    let mut bad_parents = Vec::new();
    s.for_each_entry(|dir, _, _| -> Result<(), MetaError> {
        if last != Some(dir) {
            last = Some(dir);
            match s.inode(dir)? {
                None => bad_parents.push((dir, "entries of a directory that does not exist")),
                Some(i) if i.kind != FileKind::Dir => {
                    bad_parents.push((dir, "non-directory has directory entries"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    })?;
    for (dir, msg) in bad_parents {
        r.problem(format!("inode {dir}"), msg);
    }
    // 3. Every inode: counted, orphans, symlinks.
    let (mut dirs, mut want, mut want_sum) = (0u64, 0u64, 0u64);
    let mut orphans = Vec::new();
    let mut symlinks = Vec::new();
    s.for_each_inode(|i| -> Result<(), MetaError> {
        if i.kind == FileKind::Dir {
            dirs += 1;
            return Ok(());
        }
        if i.nlink == 0 && !live_orphans.contains(&i.ino) {
            orphans.push(i.ino);
        }
        want += u64::from(i.nlink);
        want_sum = want_sum.wrapping_add(h(i.ino).wrapping_mul(u64::from(i.nlink)));
        if i.kind == FileKind::Symlink && i.size != i.target.len() as u64 {
            symlinks.push((i.ino, i.size, i.target.len()));
        }
        Ok(())
    })?;
    for ino in orphans {
        r.problem(
            format!("inode {ino}"),
            "inode not reachable from the root (orphan)",
        );
    }
    for (ino, size, len) in symlinks {
        r.problem(
            name(s, ino),
            format!("symlink size {size} but target is {len} bytes"),
        );
    }
    // 4. Directories the walk did not reach: no path from the root names them.
    if reached < dirs {
        let mut lost = Vec::new();
        s.for_each_inode(|i| -> Result<(), MetaError> {
            if i.kind == FileKind::Dir && i.ino != InodeNo::ROOT && s.path_of(i.ino).is_none() {
                lost.push(i.ino);
            }
            Ok(())
        })?;
        for ino in lost {
            r.problem(
                format!("inode {ino}"),
                "inode not reachable from the root (orphan)",
            );
        }
    }
    // 5. Link counts of everything else, named only if the sums disagree.
    if links != want || link_sum != want_sum {
        name_wrong_link_counts(s, links.max(want), r)?;
    }
    check_extents(s, r)
}

/// The slow path of the link-count proof: count the links of each slice of inodes (by hash) in
/// a map and compare each inode's count with them.
fn name_wrong_link_counts(s: &MetaState, links: u64, r: &mut FsckReport) -> Result<(), MetaError> {
    let slices = links.div_ceil(SLICE).max(1);
    for slice in 0..slices {
        let mine = |ino: InodeNo| h(ino) % slices == slice;
        let mut counts: HashMap<InodeNo, u32> = HashMap::new();
        walk(
            s,
            &mut |_, _, child, what| {
                if matches!(what, Child::Other) && mine(child) {
                    *counts.entry(child).or_default() += 1;
                }
            },
            &mut |_, _| {},
        )?;
        let mut wrong = Vec::new();
        s.for_each_inode(|i| -> Result<(), MetaError> {
            if i.kind != FileKind::Dir && mine(i.ino) {
                let n = counts.get(&i.ino).copied().unwrap_or(0);
                if i.nlink != n {
                    wrong.push((i.ino, i.nlink, n));
                }
            }
            Ok(())
        })?;
        for (ino, nlink, n) in wrong {
            if n == 0 {
                // (nlink 0 without a link is step 3's orphan, or a live process's.)
                r.problem(
                    format!("inode {ino}"),
                    "inode not reachable from the root (orphan)",
                );
            } else {
                r.problem(
                    name(s, ino),
                    format!("link count {nlink} but {n} links exist"),
                );
            }
        }
    }
    Ok(())
}

/// Every file's extents: of a regular file that exists, in order without overlap, within its
/// size, each on an indexed chunk and within it.
///
/// The inodes come from a second stream in inode order (both are sorted by inode), read on a
/// second thread, instead of one lookup per file.
fn check_extents(s: &MetaState, r: &mut FsckReport) -> Result<(), MetaError> {
    let mut problems: Vec<(InodeNo, String)> = Vec::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Inode>>(4);
    std::thread::scope(|scope| -> Result<(), MetaError> {
        let producer = scope.spawn(move || {
            let mut batch = Vec::with_capacity(INODE_BATCH);
            // `Err(None)`: the consumer is done (it stops listening); `Err(Some(e))`: a read failed.
            let streamed = s.for_each_inode(|i| -> Result<(), Option<MetaError>> {
                batch.push(i.clone());
                if batch.len() >= INODE_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(INODE_BATCH));
                    tx.send(full).map_err(|_| None)?;
                }
                Ok(())
            });
            match streamed {
                Ok(()) => {
                    let _ = tx.send(batch);
                    Ok(())
                }
                Err(None) => Ok(()),
                Err(Some(e)) => Err(e),
            }
        });
        let mut inodes = rx.iter().flatten().peekable();
        let checked = check_extents_of(s, &mut inodes, &mut problems);
        drop(inodes);
        let streamed = producer.join().unwrap_or_else(|_| {
            Err(MetaError::Record {
                what: "inode".into(),
                key: String::new(),
                reason: "the thread reading the inodes died".into(),
            })
        });
        checked.and(streamed)
    })?;
    for (ino, msg) in problems {
        r.problem(name(s, ino), msg);
    }
    Ok(())
}

/// Inodes handed from the inode stream to the extent check at a time.
const INODE_BATCH: usize = 1024;

fn check_extents_of(
    s: &MetaState,
    inodes: &mut std::iter::Peekable<impl Iterator<Item = Inode>>,
    problems: &mut Vec<(InodeNo, String)>,
) -> Result<(), MetaError> {
    s.for_each_extents(|ino, xs| -> Result<(), MetaError> {
        while inodes.next_if(|i| i.ino < ino).is_some() {}
        let Some(i) = inodes.next_if(|i| i.ino == ino) else {
            problems.push((ino, "extents of an inode that does not exist".into()));
            return Ok(());
        };
        if i.kind != FileKind::File {
            problems.push((ino, "non-regular file has data extents".into()));
        }
        let mut end = 0u64;
        for x in xs {
            if x.file_off < end {
                problems.push((
                    ino,
                    format!("extent at {} overlaps the previous one", x.file_off),
                ));
            }
            end = x.file_off + x.len as u64;
            match s.chunk(x.chunk)? {
                None => problems.push((
                    ino,
                    format!(
                        "chunk {} at file offset {} is not in the chunk index",
                        x.chunk, x.file_off
                    ),
                )),
                Some(c) if x.chunk_off as u64 + x.len as u64 > c.raw_len as u64 => problems.push((
                    ino,
                    format!(
                        "extent at {} reaches past the end of chunk {}",
                        x.file_off, x.chunk
                    ),
                )),
                Some(_) => {}
            }
        }
        if end > i.size {
            problems.push((ino, format!("size {} but extents reach {end}", i.size)));
        }
        Ok(())
    })
}
