//! Walks over whole trees: [`PageStore::diff`], [`PageStore::visit_pages`] and
//! [`PageStore::visit_leaves`].

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::page::Page;
use super::{PagePtr, PageStore, Root, TreeError};

/// The front of one side of a diff: a subtree not yet looked into, or one entry of a leaf.
enum Item {
    Node { ptr: PagePtr, level: Option<u8> },
    Entry { page: Arc<Page>, i: usize },
}

/// One side of a diff: the items still to compare, the next one last.
struct Side<'a> {
    store: &'a PageStore,
    stack: Vec<Item>,
}

impl Side<'_> {
    fn new<'s>(store: &'s PageStore, root: &Root) -> Side<'s> {
        Side {
            store,
            stack: root
                .ptr
                .map(|ptr| Item::Node { ptr, level: None })
                .into_iter()
                .collect(),
        }
    }

    /// Replace the node on top by its children (or its entries).
    fn expand(&mut self) -> Result<(), TreeError> {
        let Some(Item::Node { ptr, level }) = self.stack.pop() else {
            return Ok(());
        };
        let page = self.store.read_child(&ptr, level.map(|l| l + 1))?;
        if page.is_leaf() {
            for i in (0..page.len()).rev() {
                self.stack.push(Item::Entry {
                    page: page.clone(),
                    i,
                });
            }
        } else {
            let cl = page.level() - 1;
            for i in (0..page.len()).rev() {
                self.stack.push(Item::Node {
                    ptr: page.child(i),
                    level: Some(cl),
                });
            }
        }
        Ok(())
    }

    /// The level of the node on top, reading it if it is a root of unknown level.
    fn top_level(&mut self) -> Result<Option<u8>, TreeError> {
        match self.stack.last_mut() {
            Some(Item::Node { ptr, level }) => {
                if level.is_none() {
                    *level = Some(self.store.read_page(ptr)?.level());
                }
                Ok(*level)
            }
            _ => Ok(None),
        }
    }
}

impl PageStore {
    /// Call `f(key, old, new)` for every key whose value differs between `a` (old) and `b`
    /// (new), in key order (`None`: absent on that side). Subtrees with equal content hashes on
    /// both sides are skipped unread, so the cost is about the number of changed pages times the
    /// depth. `f` returning `Break` stops the walk. Reads only.
    pub fn diff<F>(&self, a: &Root, b: &Root, mut f: F) -> Result<(), TreeError>
    where
        F: FnMut(&[u8], Option<&[u8]>, Option<&[u8]>) -> ControlFlow<()>,
    {
        if a.hash() == b.hash() && a.is_empty() == b.is_empty() {
            return Ok(());
        }
        let mut sa = Side::new(self, a);
        let mut sb = Side::new(self, b);
        loop {
            let flow = match (sa.stack.last(), sb.stack.last()) {
                (None, None) => return Ok(()),
                (Some(Item::Node { ptr: x, .. }), Some(Item::Node { ptr: y, .. }))
                    if x.hash == y.hash =>
                {
                    sa.stack.pop();
                    sb.stack.pop();
                    continue;
                }
                (Some(Item::Node { .. }), Some(Item::Node { .. })) => {
                    // Expand the higher one (both if level), so equal subtrees meet at a level.
                    let (la, lb) = (sa.top_level()?, sb.top_level()?);
                    if la >= lb {
                        sa.expand()?;
                    }
                    if lb >= la {
                        sb.expand()?;
                    }
                    continue;
                }
                (Some(Item::Node { .. }), _) => {
                    sa.expand()?;
                    continue;
                }
                (_, Some(Item::Node { .. })) => {
                    sb.expand()?;
                    continue;
                }
                (Some(Item::Entry { page: pa, i: ia }), Some(Item::Entry { page: pb, i: ib })) => {
                    let (ka, kb) = (pa.key(*ia), pb.key(*ib));
                    if ka < kb {
                        let r = f(ka, Some(pa.value(*ia)), None);
                        sa.stack.pop();
                        r
                    } else if ka > kb {
                        let r = f(kb, None, Some(pb.value(*ib)));
                        sb.stack.pop();
                        r
                    } else {
                        let (va, vb) = (pa.value(*ia), pb.value(*ib));
                        let r = if va != vb {
                            f(ka, Some(va), Some(vb))
                        } else {
                            ControlFlow::Continue(())
                        };
                        sa.stack.pop();
                        sb.stack.pop();
                        r
                    }
                }
                (Some(Item::Entry { page, i }), None) => {
                    let r = f(page.key(*i), Some(page.value(*i)), None);
                    sa.stack.pop();
                    r
                }
                (None, Some(Item::Entry { page, i })) => {
                    let r = f(page.key(*i), None, Some(page.value(*i)));
                    sb.stack.pop();
                    r
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    /// Call `f(ptr, level)` once for every page reachable from `root` that is not in `seen`,
    /// adding it; a page already in `seen` is not descended, so a walk over many snapshot roots
    /// that share `seen` reads each shared subtree once. `seen` holds whole pointers (file,
    /// offset, len, hash): two copies of the same content in different places are different
    /// pages for a collector. Internal pages are read (and so checked); leaves are only named
    /// (check them with [`PageStore::read_page`] or [`PageStore::verify_file`]). On error `seen`
    /// holds the pages visited so far.
    pub fn visit_pages<F>(
        &self,
        root: &Root,
        seen: &mut HashSet<PagePtr>,
        mut f: F,
    ) -> Result<(), TreeError>
    where
        F: FnMut(&PagePtr, u8),
    {
        let Some(r) = root.ptr else { return Ok(()) };
        let mut stack: Vec<(PagePtr, Option<u8>)> = vec![(r, None)];
        while let Some((ptr, level)) = stack.pop() {
            if seen.contains(&ptr) {
                continue;
            }
            if level == Some(0) {
                seen.insert(ptr);
                f(&ptr, 0);
                continue;
            }
            let page = self.read_child(&ptr, level.map(|l| l + 1))?;
            seen.insert(ptr);
            f(&ptr, page.level());
            if !page.is_leaf() {
                let cl = page.level() - 1;
                for i in (0..page.len()).rev() {
                    stack.push((page.child(i), Some(cl)));
                }
            }
        }
        Ok(())
    }

    /// Call `f(leaf)` once for every leaf of `root` that may hold keys in `[lower, upper)`
    /// (`upper` `None`: no end) and is not in `seen`, adding it (internal pages walked are added
    /// too). Subtrees wholly outside the range are not read, and a page already in `seen` is not
    /// descended: a walk over many roots that share `seen` reads each shared subtree once, which
    /// is what a mark over every snapshot needs. The leaf may hold keys outside the range at its
    /// edges: `f` filters. On error `seen` holds the pages visited so far.
    pub fn visit_leaves<E: From<TreeError>>(
        &self,
        root: &Root,
        lower: &[u8],
        upper: Option<&[u8]>,
        seen: &mut HashSet<PagePtr>,
        mut f: impl FnMut(&Page) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(r) = root.ptr else { return Ok(()) };
        let mut stack: Vec<(PagePtr, Option<u8>)> = vec![(r, None)];
        while let Some((ptr, parent)) = stack.pop() {
            if !seen.insert(ptr) {
                continue;
            }
            let page = self.read_child(&ptr, parent)?;
            if page.is_leaf() {
                f(&page)?;
                continue;
            }
            // Child i holds the keys in (key(i-1), key(i)].
            let first = page.lower_bound(lower, false);
            for i in (first..page.len()).rev() {
                if let Some(u) = upper {
                    if i > 0 && page.key(i - 1) >= u {
                        continue;
                    }
                }
                stack.push((page.child(i), Some(page.level())));
            }
        }
        Ok(())
    }
}
