//! Copy-on-write edits: [`PageStore::apply`].
//!
//! Level by level, bottom up: the nodes of a level that hold edits are re-chunked with the
//! boundary rule, from the start of the first affected node, streaming its old entries merged with
//! the edits, until a node closes exactly where an old node ended with no edit pending for the
//! node after (from there the old boundaries hold again, because the rule depends only on the
//! entries since the last boundary). The replaced old nodes and the new ones become the edits of
//! the level above. Every node not re-chunked is reused by pointer, so the cost is
//! O(edits x depth) pages, and the result is the tree `build` makes from the final content.

use std::sync::Arc;

use super::build::check_entry;
use super::page::{NodeBuilder, Page};
use super::{Edit, PagePtr, PageStore, PageWriter, Root, TreeError};

/// Reads that also see the pages of the writer being filled (so applies can chain in one
/// writer), and writes into it.
struct Ctx<'a> {
    store: &'a PageStore,
    w: &'a mut PageWriter,
}

impl Ctx<'_> {
    fn read(&mut self, ptr: &PagePtr, level: Option<u8>) -> Result<Arc<Page>, TreeError> {
        let page = if ptr.file == self.w.file_id() {
            self.w.read_own(ptr)?
        } else {
            self.store.read_page(ptr)?
        };
        if let Some(l) = level {
            if page.level() != l {
                return Err(TreeError::Corrupt {
                    path: self.store.file_path(ptr.file),
                    offset: ptr.offset,
                    reason: format!(
                        "page has level {}, but its parent expects {l}",
                        page.level()
                    ),
                });
            }
        }
        Ok(page)
    }
}

/// The nodes of one level of the old tree, in key order, reached from the root.
struct Cursor {
    root: PagePtr,
    root_level: u8,
    level: u8,
    /// (page, child index) for levels `root_level ..= level + 1`; empty when `level` is the
    /// root's level (the only node is the root).
    path: Vec<(Arc<Page>, usize)>,
}

impl Cursor {
    /// Position at the node an edit of `key` belongs to: the first whose last key is `>= key`,
    /// else the last node.
    fn seek(&mut self, ctx: &mut Ctx<'_>, key: &[u8]) -> Result<(), TreeError> {
        self.path.clear();
        if self.level == self.root_level {
            return Ok(());
        }
        let mut ptr = self.root;
        let mut expect = self.root_level;
        loop {
            let page = ctx.read(&ptr, Some(expect))?;
            let i = page.lower_bound(key, false).min(page.len() - 1);
            ptr = page.child(i);
            self.path.push((page, i));
            if expect == self.level + 1 {
                return Ok(());
            }
            expect -= 1;
        }
    }

    fn current(&self) -> PagePtr {
        match self.path.last() {
            Some((p, i)) => p.child(*i),
            None => self.root,
        }
    }

    /// The last key of the current node, from its parent; `None` for the root.
    fn current_last_key(&self) -> Option<&[u8]> {
        self.path.last().map(|(p, i)| p.key(*i))
    }

    fn is_first(&self) -> bool {
        self.path.iter().all(|(_, i)| *i == 0)
    }

    fn is_last(&self) -> bool {
        self.path.iter().all(|(p, i)| *i + 1 == p.len())
    }

    /// Move to the next node of the level; false at its end.
    fn advance(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, TreeError> {
        loop {
            let Some((p, i)) = self.path.last_mut() else {
                return Ok(false);
            };
            if *i + 1 < p.len() {
                *i += 1;
                break;
            }
            self.path.pop();
        }
        loop {
            let Some((p, i)) = self.path.last() else {
                return Ok(false);
            };
            if p.level() == self.level + 1 {
                return Ok(true);
            }
            let child = ctx.read(&p.child(*i), Some(p.level() - 1))?;
            self.path.push((child, 0));
        }
    }
}

/// What re-chunking one level did.
struct LevelOut {
    /// Old nodes replaced, as (last key, pointer), in key order.
    consumed: Vec<(Vec<u8>, PagePtr)>,
    /// New nodes, as (last key, pointer), in key order (some may be old nodes found unchanged).
    new: Vec<(Vec<u8>, PagePtr)>,
    /// Every old node of the level was replaced: the new level is exactly `new`.
    whole: bool,
    /// The level turned out to be a single node with a single entry: the tree's root is that
    /// entry's child (the node itself was not written).
    collapsed: Option<PagePtr>,
}

/// Close the node in `b`: reuse `old` if the new node is the same content ending at the same
/// key (an edit that changed nothing), else write it.
fn close_node(
    ctx: &mut Ctx<'_>,
    b: &mut NodeBuilder,
    old: Option<(&[u8], &PagePtr)>,
    new: &mut Vec<(Vec<u8>, PagePtr)>,
) -> Result<(), TreeError> {
    let page = b.finish();
    let ptr = match old {
        Some((last, ptr)) if page.last_key() == last && page.hash() == ptr.hash => *ptr,
        _ => ctx.w.write(&page)?,
    };
    new.push((page.last_key().to_vec(), ptr));
    Ok(())
}

/// Re-chunk the nodes of `level` that `edits` (sorted, unique, nonempty) touch. `old` is the
/// old tree's root and level, or `None` if the old tree has no node at this level.
fn apply_level(
    ctx: &mut Ctx<'_>,
    level: u8,
    old: Option<(PagePtr, u8)>,
    edits: &[Edit],
) -> Result<LevelOut, TreeError> {
    let mut b = NodeBuilder::new(level);
    let mut out = LevelOut {
        consumed: Vec::new(),
        new: Vec::new(),
        whole: true,
        collapsed: None,
    };
    let Some((root, root_level)) = old else {
        // A level the old tree does not have: the entries are the inserts alone.
        for (k, v) in edits {
            if let Some(v) = v {
                if b.push(k, v) {
                    close_node(ctx, &mut b, None, &mut out.new)?;
                }
            }
        }
        if !b.is_empty() {
            if level > 0 && out.new.is_empty() && b.count() == 1 {
                out.collapsed = Some(b.finish().child(0));
            } else {
                close_node(ctx, &mut b, None, &mut out.new)?;
            }
        }
        return Ok(out);
    };
    let Some(first) = edits.first() else {
        out.whole = false;
        return Ok(out);
    };
    let mut cur = Cursor {
        root,
        root_level,
        level,
        path: Vec::new(),
    };
    cur.seek(ctx, &first.0)?;
    let mut covered = cur.is_first();
    let mut ei = 0;
    loop {
        let mptr = cur.current();
        let page = ctx.read(&mptr, Some(level))?;
        let last = cur.is_last();
        let mlast = page.last_key().to_vec();
        out.consumed.push((mlast.clone(), mptr));
        // The segment of node M: its old entries merged with the edits that belong to it.
        let mut i = 0;
        loop {
            let e = edits
                .get(ei)
                .filter(|e| last || e.0.as_slice() <= mlast.as_slice());
            let o = (i < page.len()).then(|| page.key(i));
            let (key, val): (&[u8], Option<&[u8]>) = match (o, e) {
                (None, None) => break,
                (Some(k), None) => {
                    i += 1;
                    (k, Some(page.value(i - 1)))
                }
                (Some(k), Some(e)) if k < e.0.as_slice() => {
                    i += 1;
                    (k, Some(page.value(i - 1)))
                }
                (Some(k), Some(e)) => {
                    if k == e.0.as_slice() {
                        i += 1;
                    }
                    ei += 1;
                    (&e.0, e.1.as_deref())
                }
                (None, Some(e)) => {
                    ei += 1;
                    (&e.0, e.1.as_deref())
                }
            };
            let Some(val) = val else { continue };
            if b.push(key, val) {
                close_node(ctx, &mut b, Some((&mlast, &mptr)), &mut out.new)?;
            }
        }
        if last {
            if !b.is_empty() {
                if level > 0 && covered && out.new.is_empty() && b.count() == 1 {
                    out.collapsed = Some(b.finish().child(0));
                } else {
                    close_node(ctx, &mut b, Some((&mlast, &mptr)), &mut out.new)?;
                }
            }
            break;
        }
        // Not the last node: advance() succeeds (a next node exists).
        if !b.is_empty() {
            // The new node is still open past M's old end: the next node must be re-chunked.
            cur.advance(ctx)?;
            continue;
        }
        // A new node ended where M ended: old boundaries hold again from here.
        let Some(next) = edits.get(ei) else {
            covered = false;
            break;
        };
        cur.advance(ctx)?;
        let belongs_next = cur.is_last()
            || cur
                .current_last_key()
                .is_some_and(|l| next.0.as_slice() <= l);
        if !belongs_next {
            covered = false;
            cur.seek(ctx, &next.0)?;
        }
    }
    out.whole = covered;
    Ok(out)
}

/// The edits of the level above: replaced nodes' keys deleted, new nodes' keys set, unchanged
/// pairs dropped.
fn parent_edits(consumed: Vec<(Vec<u8>, PagePtr)>, new: Vec<(Vec<u8>, PagePtr)>) -> Vec<Edit> {
    let mut out = Vec::with_capacity(consumed.len() + new.len());
    let mut a = consumed.into_iter().peekable();
    let mut b = new.into_iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => {
                let Some((k, _)) = a.next() else { continue };
                out.push((k, None));
            }
            (None, Some(_)) => {
                let Some((k, p)) = b.next() else { continue };
                out.push((k, Some(p.encode().to_vec())));
            }
            (Some(x), Some(y)) => {
                if x.0 < y.0 {
                    let Some((k, _)) = a.next() else { continue };
                    out.push((k, None));
                } else if x.0 > y.0 {
                    let Some((k, p)) = b.next() else { continue };
                    out.push((k, Some(p.encode().to_vec())));
                } else {
                    let (Some((_, op)), Some((k, np))) = (a.next(), b.next()) else {
                        continue;
                    };
                    if op != np {
                        out.push((k, Some(np.encode().to_vec())));
                    }
                }
            }
        }
    }
}

impl PageStore {
    /// Apply `edits` (sorted by key, unique; `None` deletes) to `root`, writing the changed pages
    /// into `w`, and return the new root. Unchanged subtrees are shared with `root` by pointer;
    /// the result is the same tree (same root hash) as [`PageStore::build`] of the final content.
    /// `root` may point into `w` (applies chained in one writer). On error `root` is unchanged
    /// and whatever was written into `w` is unreferenced (drop the writer or ignore it).
    pub fn apply(
        &self,
        root: &Root,
        edits: &[Edit],
        w: &mut PageWriter,
    ) -> Result<Root, TreeError> {
        for (i, (k, v)) in edits.iter().enumerate() {
            let prev = i
                .checked_sub(1)
                .and_then(|p| edits.get(p))
                .map(|e| e.0.as_slice());
            check_entry(prev, k, v.as_deref())?;
        }
        if edits.is_empty() {
            return Ok(*root);
        }
        let mut ctx = Ctx { store: self, w };
        let height = match &root.ptr {
            None => None,
            Some(p) => Some(ctx.read(p, None)?.level()),
        };
        let mut level: u8 = 0;
        let mut owned: Vec<Edit>;
        let mut edits: &[Edit] = edits;
        loop {
            let old = match (root.ptr, height) {
                (Some(p), Some(h)) if level <= h => Some((p, h)),
                _ => None,
            };
            let out = apply_level(&mut ctx, level, old, edits)?;
            if let Some(c) = out.collapsed {
                return collapse(&mut ctx, Some(c));
            }
            if out.whole && out.new.len() <= 1 {
                return collapse(&mut ctx, out.new.first().map(|n| n.1));
            }
            owned = parent_edits(out.consumed, out.new);
            if owned.is_empty() {
                // This level is unchanged, so is everything above it.
                return Ok(*root);
            }
            edits = &owned;
            level = level
                .checked_add(1)
                .ok_or_else(|| TreeError::InvalidInput {
                    reason: "tree height overflow".into(),
                })?;
        }
    }
}

/// A root that is an internal page with one entry is not canonical (`build` never makes one):
/// the tree's root is its child.
fn collapse(ctx: &mut Ctx<'_>, mut ptr: Option<PagePtr>) -> Result<Root, TreeError> {
    while let Some(p) = ptr {
        let page = ctx.read(&p, None)?;
        if page.is_leaf() || page.len() > 1 {
            break;
        }
        ptr = Some(page.child(0));
    }
    Ok(Root { ptr })
}
