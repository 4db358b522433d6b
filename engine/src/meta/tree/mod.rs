//! The metadata page tree: a persistent, copy-on-write, content-defined B-tree ("prolly tree")
//! of immutable, checksummed pages in append-only page files. Format and rules:
//! `data-layout.md` section 5.7a, "Metadata page files (format 3)" (rule ids [TREE-1] to [TREE-7]).
//!
//! An ordered map of byte keys (at most [`MAX_KEY_LEN`]) to byte values (at most
//! [`MAX_VALUE_LEN`]). A tree is named by its [`Root`]; a snapshot is just a kept root, and trees
//! derived from one another share every unchanged subtree by pointer.
//!
//! - [`PageStore`] (`store.rs`): one directory of page files, shared (`Send + Sync`) by every
//!   thread of a process and, through the OS page cache, by every process. Reads are checked
//!   (crc, structure, content hash against the pointer) and cached in a bounded cache of decoded
//!   pages. All tree operations are methods of the store: [`PageStore::get`],
//!   [`PageStore::range`] / [`PageStore::prefix`] (streaming), [`PageStore::build`],
//!   [`PageStore::apply`] (copy-on-write edits), [`PageStore::diff`],
//!   [`PageStore::visit_pages`] (GC marking and fsck), [`PageStore::verify_file`].
//! - [`PageWriter`] (`store.rs`): one new page file being written. Its pages become readable by
//!   others only after [`PageWriter::finish`] made the file durable and published it under its
//!   final name; only then may a root that points into it be published.
//! - [`Page`] / [`PagePtr`] (`page.rs`): the page bytes and their address. Node boundaries come
//!   from content only (`NodeBuilder`), so the same entries always give the same pages and the same
//!   root hash, whatever edits produced them.
//! - `build.rs`, `apply.rs`, `read.rs`, `walk.rs`: the algorithms; `salvage.rs` the tolerant
//!   walk of `verfs repair` ([`PageStore::salvage`]).
//!
//! Does not own where the page directory is in a store, which roots are live (the caller keeps
//! them, e.g. in checkpoints), nor garbage collection: it offers [`PageStore::list_files`],
//! [`PageStore::visit_pages`] and [`PageStore::file_path`] for a collector to use.
//!
//! ```
//! use verfs_engine::meta::tree::{PageStore, PageWriter, Root};
//! let dir = tempfile::tempdir().unwrap();
//! let store = PageStore::open(dir.path(), 1 << 20).unwrap();
//! let mut w = PageWriter::new(&store).unwrap();
//! let edits = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), Some(b"2".to_vec()))];
//! let root = store.apply(&Root::EMPTY, &edits, &mut w).unwrap();
//! w.finish().unwrap(); // durable and published: only now may `root` be stored anywhere
//! assert_eq!(store.get(&root, b"b").unwrap().as_deref(), Some(&b"2"[..]));
//! ```

mod apply;
mod build;
mod page;
mod read;
mod salvage;
mod store;
mod walk;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use page::{
    Page, PagePtr, MAX_LEVEL, MAX_PAGE_LEN, MIN_PAGE_LEN, NODE_MAX, NODE_MIN, NODE_TARGET, PTR_LEN,
};
pub use read::{prefix_end, Entry, Range};
pub use salvage::{LostSubtree, PageIndex, Salvage};
pub use store::{FileCheck, PageStore, PageWriter, StoreStats};

/// The longest key a tree holds.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest value a tree holds.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Magic of a page file's header.
pub const FILE_MAGIC: &[u8; 8] = b"VERFSMP3";
/// The page file format version in the header.
pub const FILE_VERSION: u32 = 3;
/// Size of a page file's header; the first page starts here.
pub const FILE_HEADER_LEN: usize = 32;

/// A tree operation failed. Each operation says what state a failure leaves behind; no operation
/// changes a published file, so a failure never damages an existing tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Bytes on disk break a rule of `data-layout.md` 5.7a: `offset` is where in `path` the
    /// damaged page (or the header, at 0) starts.
    #[error("corrupt {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A key or value over the limit ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]).
    #[error("{what} of {len} bytes is longer than the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The caller's input breaks a precondition (edits not sorted, duplicate keys).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// Bytes given to a `decode` (a stored root or pointer) are not a valid encoding.
    #[error("invalid {what} encoding: {reason}")]
    Decode { what: &'static str, reason: String },
    /// An earlier write of this writer failed, so what its file holds is unknown: no more pages.
    #[error("page writer for {path} is unusable after an earlier failure: {cause}")]
    Poisoned { path: PathBuf, cause: String },
}

impl TreeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> TreeError {
        TreeError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A tree: its root page, or none for the empty tree. The height is the root page's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Root {
    pub ptr: Option<PagePtr>,
}

/// Encoded size of a [`Root`].
pub const ROOT_LEN: usize = 44;

impl Root {
    pub const EMPTY: Root = Root { ptr: None };

    pub fn new(ptr: PagePtr) -> Root {
        Root { ptr: Some(ptr) }
    }

    pub fn is_empty(&self) -> bool {
        self.ptr.is_none()
    }

    /// The content hash of the tree (0 for the empty tree): equal for equal contents.
    pub fn hash(&self) -> u128 {
        self.ptr.map_or(0, |p| p.hash)
    }

    /// The fixed [`ROOT_LEN`]-byte encoding (`data-layout.md` 5.7a, "Root"), with its own crc so
    /// that a caller storing it anywhere can tell damage.
    pub fn encode(&self) -> [u8; ROOT_LEN] {
        let mut b = [0u8; ROOT_LEN];
        if let Some(p) = self.ptr {
            b[0] = 1;
            b[4..40].copy_from_slice(&p.encode());
        }
        let crc = crc32fast::hash(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode [`Root::encode`]'s bytes; any other input is an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Root, TreeError> {
        let bad = |reason: String| TreeError::Decode {
            what: "root",
            reason,
        };
        if b.len() != ROOT_LEN {
            return Err(bad(format!("{} bytes, not {ROOT_LEN}", b.len())));
        }
        let stored = u32::from_le_bytes([b[40], b[41], b[42], b[43]]);
        let actual = crc32fast::hash(&b[..40]);
        if stored != actual {
            return Err(bad(format!(
                "crc mismatch: stored {stored:08x}, computed {actual:08x}"
            )));
        }
        if b[1..4] != [0, 0, 0] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        match b[0] {
            0 if b[4..40].iter().all(|&x| x == 0) => Ok(Root::EMPTY),
            0 => Err(bad("empty root with a nonzero pointer".into())),
            1 => PagePtr::decode(&b[4..40]).map(Root::new).map_err(bad),
            k => Err(bad(format!("kind {k} is neither 0 (empty) nor 1 (page)"))),
        }
    }
}

/// One edit for [`PageStore::apply`]: a key and its new value, or `None` to delete it.
pub type Edit = (Vec<u8>, Option<Vec<u8>>);
