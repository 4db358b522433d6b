//! The salvage walk of `verfs repair` (`data-layout.md` 5.12): every entry of a tree that can
//! still be read, and, for each page that cannot, the key bounds of the subtree it held.
//!
//! A tree is read top-down through checked pointers ([TREE-2]), so a page that does not verify
//! hides exactly its subtree: the keys after its left sibling's last key up to its own last key
//! (both known from the parent). Before such a subtree is given up, the caller's `alt` is asked
//! for other pages with the same content hash and length (another root that shares the page: an
//! older checkpoint, a snapshot); equal hashes mean equal content ([TREE-4]), so any of them
//! that verifies stands in for the damaged one, children included.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::page::Page;
use super::{PagePtr, PageStore, Root};

/// A subtree whose page could not be read or did not verify, and no stand-in did either: every
/// key `k` with `after < k <= upto` that the tree held is lost (`None`: unbounded on that side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostSubtree {
    pub after: Option<Vec<u8>>,
    pub upto: Option<Vec<u8>>,
    /// The page file and offset the pointer names, and why it was refused.
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl LostSubtree {
    /// Is `key` inside the lost bounds?
    pub fn contains(&self, key: &[u8]) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
            && self.upto.as_deref().is_none_or(|u| key <= u)
    }
}

/// What [`PageStore::salvage`] found.
#[derive(Clone, Debug, Default)]
pub struct Salvage {
    /// Subtrees lost for good.
    pub lost: Vec<LostSubtree>,
    /// Damaged pages replaced by a page of equal content elsewhere: (damaged page's file and
    /// offset, the stand-in's file id and offset, why the damaged one was refused).
    pub replaced: Vec<(PathBuf, u64, u64, u64, String)>,
}

impl Salvage {
    /// Did the walk meet any page that did not verify (lost or replaced)?
    pub fn met_damage(&self) -> bool {
        !self.lost.is_empty() || !self.replaced.is_empty()
    }
}

/// A subtree still to read: its pointer, its parent's level, the keys after which and up to
/// which it holds.
type Pending = (PagePtr, Option<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Pages of other trees by (content hash, length): the stand-ins [`PageStore::salvage`] may use.
pub type PageIndex = HashMap<(u128, u32), Vec<PagePtr>>;

impl PageStore {
    /// Call `f(key, value)` in key order for every entry of `root` that can be read. A page that
    /// cannot be read or does not verify is replaced by the first page of `others` with its hash
    /// and length that does; failing that its subtree is skipped and returned in
    /// [`Salvage::lost`]. Reads only; never fails (every failure is a lost subtree).
    pub fn salvage(
        &self,
        root: &Root,
        others: &PageIndex,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Salvage {
        let mut out = Salvage::default();
        let Some(r) = root.ptr else { return out };
        let mut stack: Vec<Pending> = vec![(r, None, None, None)];
        while let Some((ptr, parent, after, upto)) = stack.pop() {
            let page = match self.read_child(&ptr, parent) {
                Ok(p) => p,
                Err(e) => match self.stand_in(&ptr, parent, others) {
                    Some((alt, page)) => {
                        out.replaced.push((
                            self.file_path(ptr.file),
                            ptr.offset,
                            alt.file,
                            alt.offset,
                            e.to_string(),
                        ));
                        page
                    }
                    None => {
                        out.lost.push(LostSubtree {
                            after,
                            upto,
                            path: self.file_path(ptr.file),
                            offset: ptr.offset,
                            reason: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            if page.is_leaf() {
                for i in 0..page.len() {
                    f(page.key(i), page.value(i));
                }
                continue;
            }
            for i in (0..page.len()).rev() {
                let lo = if i == 0 {
                    after.clone()
                } else {
                    Some(page.key(i - 1).to_vec())
                };
                stack.push((
                    page.child(i),
                    Some(page.level()),
                    lo,
                    Some(page.key(i).to_vec()),
                ));
            }
        }
        out
    }

    /// A page of `others` with `ptr`'s content that reads and verifies at `ptr`'s place.
    fn stand_in(
        &self,
        ptr: &PagePtr,
        parent: Option<u8>,
        others: &PageIndex,
    ) -> Option<(PagePtr, Arc<Page>)> {
        others
            .get(&(ptr.hash, ptr.len))?
            .iter()
            .filter(|p| *p != ptr)
            .find_map(|p| self.read_child(p, parent).ok().map(|page| (*p, page)))
    }

    /// Add every page reachable from `root` that can be found to `index` (internal pages are read;
    /// pages below one that does not verify are not found). Reads only, never fails.
    pub fn index_pages(&self, root: &Root, index: &mut PageIndex) {
        let Some(r) = root.ptr else { return };
        let mut stack = vec![(r, None::<u8>)];
        while let Some((ptr, level)) = stack.pop() {
            let known = index.entry((ptr.hash, ptr.len)).or_default();
            if known.contains(&ptr) {
                continue;
            }
            known.push(ptr);
            if level == Some(0) {
                continue;
            }
            let Ok(page) = self.read_child(&ptr, level.map(|l| l + 1)) else {
                continue;
            };
            if !page.is_leaf() {
                for i in 0..page.len() {
                    stack.push((page.child(i), Some(page.level() - 1)));
                }
            }
        }
    }
}
