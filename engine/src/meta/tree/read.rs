//! Point lookups and streaming range scans.

use std::ops::Bound;
use std::sync::Arc;

use super::page::Page;
use super::{PagePtr, PageStore, Root, TreeError};

impl PageStore {
    /// Read `ptr`, which its parent (at `parent_level`, or none for a root) says is one level
    /// below it. A level that does not fit is damage (and it is what bounds every descent).
    pub(crate) fn read_child(
        &self,
        ptr: &PagePtr,
        parent_level: Option<u8>,
    ) -> Result<Arc<Page>, TreeError> {
        let page = self.read_page(ptr)?;
        if let Some(pl) = parent_level {
            if page.level() + 1 != pl {
                return Err(TreeError::Corrupt {
                    path: self.file_path(ptr.file),
                    offset: ptr.offset,
                    reason: format!(
                        "page has level {}, but its parent has level {pl}",
                        page.level()
                    ),
                });
            }
        }
        Ok(page)
    }

    /// The value of `key` in the tree `root`, reading one page per level. Reads only.
    pub fn get(&self, root: &Root, key: &[u8]) -> Result<Option<Vec<u8>>, TreeError> {
        let Some(mut ptr) = root.ptr else {
            return Ok(None);
        };
        let mut parent = None;
        loop {
            let page = self.read_child(&ptr, parent)?;
            let i = page.lower_bound(key, false);
            if i == page.len() {
                return Ok(None);
            }
            if page.is_leaf() {
                return Ok((page.key(i) == key).then(|| page.value(i).to_vec()));
            }
            parent = Some(page.level());
            ptr = page.child(i);
        }
    }

    /// The entries of `root` with keys within the bounds, in key order, streamed: the iterator
    /// holds one page per level at a time. An error ends the iteration after it is yielded.
    pub fn range(&self, root: &Root, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Range<'_> {
        Range {
            store: self,
            root: root.ptr,
            lower: lower.map(|k| k.to_vec()),
            upper: upper.map(|k| k.to_vec()),
            stack: Vec::new(),
            started: false,
            done: false,
        }
    }

    /// The entries whose keys start with `prefix`, in key order (see [`PageStore::range`]).
    pub fn prefix(&self, root: &Root, prefix: &[u8]) -> Range<'_> {
        let upper = prefix_end(prefix);
        let mut r = self.range(root, Bound::Included(prefix), Bound::Unbounded);
        r.upper = match upper {
            Some(u) => Bound::Excluded(u),
            None => Bound::Unbounded,
        };
        r
    }
}

/// The smallest key greater than every key starting with `p`, if there is one.
pub fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

/// One (key, value) pair yielded by a [`Range`].
pub type Entry = (Vec<u8>, Vec<u8>);

/// The iterator of [`PageStore::range`].
pub struct Range<'a> {
    store: &'a PageStore,
    root: Option<PagePtr>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// One (page, index) per level, root first: for internal pages the child being read, for the
    /// leaf the next entry.
    stack: Vec<(Arc<Page>, usize)>,
    started: bool,
    done: bool,
}

impl Range<'_> {
    /// Descend from the root to the first entry at or after the lower bound.
    fn seek(&mut self) -> Result<(), TreeError> {
        let Some(mut ptr) = self.root else {
            self.done = true;
            return Ok(());
        };
        let mut parent = None;
        loop {
            let page = self.store.read_child(&ptr, parent)?;
            let i = match &self.lower {
                Bound::Unbounded => 0,
                Bound::Included(k) => page.lower_bound(k, false),
                Bound::Excluded(k) => page.lower_bound(k, true),
            };
            if page.is_leaf() {
                self.stack.push((page, i));
                return Ok(());
            }
            if i == page.len() {
                // Every key of the tree is below the bound.
                self.done = true;
                return Ok(());
            }
            parent = Some(page.level());
            ptr = page.child(i);
            self.stack.push((page, i));
        }
    }

    /// Move to the first entry of the next leaf; false at the end of the tree.
    fn next_leaf(&mut self) -> Result<bool, TreeError> {
        loop {
            self.stack.pop();
            let Some((page, i)) = self.stack.last_mut() else {
                return Ok(false);
            };
            *i += 1;
            if *i < page.len() {
                break;
            }
        }
        // Descend to the leftmost leaf under the new position.
        loop {
            let Some((page, i)) = self.stack.last() else {
                return Ok(false);
            };
            if page.is_leaf() {
                return Ok(true);
            }
            let child = self.store.read_child(&page.child(*i), Some(page.level()))?;
            self.stack.push((child, 0));
        }
    }

    fn step(&mut self) -> Result<Option<Entry>, TreeError> {
        if !self.started {
            self.started = true;
            self.seek()?;
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let Some((leaf, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *i < leaf.len() {
                let k = leaf.key(*i);
                let within = match &self.upper {
                    Bound::Unbounded => true,
                    Bound::Included(u) => k <= u.as_slice(),
                    Bound::Excluded(u) => k < u.as_slice(),
                };
                if !within {
                    self.done = true;
                    return Ok(None);
                }
                let item = (k.to_vec(), leaf.value(*i).to_vec());
                *i += 1;
                return Ok(Some(item));
            }
            if !self.next_leaf()? {
                self.done = true;
            }
        }
    }
}

impl Iterator for Range<'_> {
    type Item = Result<Entry, TreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
