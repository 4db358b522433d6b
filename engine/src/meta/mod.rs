//! The metadata: the state the transaction log materializes, the page trees it lives in, and the
//! validated builder of its records.
//!
//! - [`MetaState`] (`state.rs`) is the metadata at one lsn: inodes, directory entries, each
//!   file's extents, the chunk index (chunk id -> pack id) and the snapshots. It rests on the
//!   roots of a checkpoint's page trees and holds the changes of the records applied since in
//!   memory; it changes only by applying [`Op`]s read from the log, in log order, so every
//!   process that has read the log up to lsn N answers every lookup the same.
//! - [`tree`] is the copy-on-write, content-defined B-tree of checksummed pages in append-only
//!   page files that the state's trees, checkpoints and snapshots are made of.
//! - [`Tx`] (`tx.rs`) is how a change is made: it runs under the log lock against the
//!   up-to-date state, validates each step against the state plus its own earlier steps (an
//!   overlay), and produces the ops of one log record.
//!
//! Does not own the model types ([`crate::model`]) nor their encodings ([`crate::format::meta`]
//! for records, [`crate::format::keys`] for tree keys and checkpoint bodies; `data-layout.md`
//! 5.5, 5.7a, 5.7b), nor the log itself (`verfs_coordination::txlog`).

mod state;
pub mod tree;
mod tx;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use state::{
    compaction_due, ChunkFilter, ChunkPresence, MetaState, PagesCtx, PresenceBuild, Roots,
    SnapInfo, DEFAULT_DELTA_LIMIT,
};

/// A read of the metadata failed: a page could not be read or did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record in a page that verified (so written that way) does not decode: what it is and
    /// its key, in hex.
    #[error("metadata {what} record {key} does not decode: {reason}")]
    Record {
        what: String,
        key: String,
        reason: String,
    },
    /// A tree operation refused its input (a key or value over the limit, a state without a
    /// page store asked to write pages).
    #[error(transparent)]
    Tree(tree::TreeError),
}
pub use tx::Tx;

// The model types used to live here: kept at their old paths so callers need no edit.
pub use crate::model::{
    components, show_path, ChunkEntry, Entry, Extent, FileKind, Inode, Op, Timestamp, NAME_MAX,
    SNAPSHOTS_DIR,
};

impl From<tree::TreeError> for MetaError {
    fn from(e: tree::TreeError) -> Self {
        match e {
            tree::TreeError::Io { path, source } => MetaError::Io { path, source },
            tree::TreeError::Corrupt {
                path,
                offset,
                reason,
            } => MetaError::Corrupt {
                path,
                offset,
                reason,
            },
            other => MetaError::Tree(other),
        }
    }
}

/// What the rest of the engine sees of a metadata read error (page I/O and damage keep their
/// path and offset).
impl From<MetaError> for crate::error::Error {
    fn from(e: MetaError) -> Self {
        use crate::error::Error;
        match e {
            MetaError::Io { path, source } => Error::Io { path, source },
            MetaError::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path,
                offset,
                reason,
            },
            other => Error::Meta(Box::new(other)),
        }
    }
}
