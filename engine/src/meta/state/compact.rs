//! Compaction of the page files under the live trees.
//!
//! A checkpoint writes its changed pages into a new page file, and a page file is deleted only
//! when no root reaches any page in it ([TREE-5], 6.9 step 5). Random chunk ids make each
//! checkpoint rewrite most leaves of the chunk index, while a few pages of every older file stay
//! live (a directory nobody changed since), so the files under the live trees grow to several
//! times the trees (1.8 GB of files after a put of 1M files). When the files that hold the live
//! trees' pages reach [`SPREAD`] times those pages' bytes (plus `gc.compact_slack`), GC asks for a
//! rebuild ([`PageStore::request_rebuild`]): the next checkpoint this process writes writes both
//! trees from scratch into one new file instead of copying the changed paths. The prolly tree is
//! content-defined, so the rebuilt trees have the very same pages and root hashes, only in one
//! file; the older files then hold no live page and the page sweep deletes them once no
//! checkpoint or snapshot reaches them. Why in GC and not at every checkpoint: a rebuild writes
//! the whole tree, and a `put` that rebuilt whenever the spread was reached wrote it every few
//! checkpoints (measured: 215 s instead of 104 s for 1M files); GC reclaims metadata space the
//! way it reclaims pack space, in its own pass.
//!
//! Does not own when checkpoints happen (`[META-5]`, `ops::maintain`) nor the sweep (`ops::gc`).

use std::collections::HashSet;
use std::sync::mpsc::sync_channel;

use crate::format::keys;
use crate::meta::tree::{PageStore, PageWriter, Root, TreeError};
use crate::meta::MetaError;

use super::{MetaState, Roots};

/// Rebuild when the files spanned by the live trees exceed this many times their pages' bytes,
/// plus a slack (`gc.compact_slack`) so that a small store never rebuilds for a few stray pages.
pub const SPREAD: u64 = 3;

/// Entries handed from the scan to the builder at a time.
const HANDOFF: usize = 4096;

/// Is a rebuild due for trees of `live` page bytes spread over files of `spanned` bytes?
pub fn compaction_due(spanned: u64, live: u64, slack: u64) -> bool {
    spanned > SPREAD.saturating_mul(live).saturating_add(slack)
}

impl MetaState {
    /// The bytes of the pages the base trees reach, and of the page files that hold them.
    /// Reads the internal pages (leaves are only named).
    pub fn page_spread(&self) -> Result<(u64, u64), MetaError> {
        let Some(pages) = &self.pages else {
            return Ok((0, 0));
        };
        let mut seen = HashSet::new();
        let (mut live, mut files) = (0u64, HashSet::new());
        for root in [&self.base.namespace, &self.base.chunks] {
            pages.visit_pages(root, &mut seen, |p, _| {
                live += u64::from(p.len);
                files.insert(p.file);
            })?;
        }
        let mut spanned = 0u64;
        for f in files {
            let path = pages.file_path(f);
            spanned += std::fs::metadata(&path)
                .map_err(|e| MetaError::Tree(TreeError::io(&path, e)))?
                .len();
        }
        Ok((live, spanned))
    }

    /// Write this state's two trees (its pages merged with its delta) from scratch into one new
    /// page file and return their roots, as [`MetaState::write_pages`] does. The roots equal
    /// the ones copy-on-write would give (content-defined pages). Streams: the scan runs on a
    /// second thread and hands entries over in batches.
    pub fn rebuild_pages(&self) -> Result<(Roots, u64), MetaError> {
        let pages = self.pages.as_ref().ok_or_else(|| {
            MetaError::Tree(TreeError::InvalidInput {
                reason: "an in-memory state has no page store to write to".into(),
            })
        })?;
        let mut w = PageWriter::new(pages).map_err(MetaError::from)?;
        let namespace = build_from(pages, &mut w, |send| {
            self.ns_scan(&[], None, |k, v| send(k.to_vec(), v.to_vec()))
        })?;
        let chunks = build_from(pages, &mut w, |send| {
            self.for_each_chunk(|id, e| {
                send(keys::chunk_key(id).to_vec(), keys::encode_chunk_value(&e))
            })
        })?;
        let bytes = w.bytes_written();
        w.finish().map_err(MetaError::from)?;
        Ok((Roots { namespace, chunks }, bytes))
    }
}

/// Build a tree into `w` from the entries `scan` produces in key order (it calls its argument
/// once per entry). A scan that fails fails the build: a tree of part of the entries is never
/// returned.
fn build_from(
    pages: &PageStore,
    w: &mut PageWriter,
    scan: impl FnOnce(&mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), MetaError>) -> Result<(), MetaError>
        + Send,
) -> Result<Root, MetaError> {
    let (tx, rx) = sync_channel::<Vec<(Vec<u8>, Vec<u8>)>>(4);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut batch = Vec::with_capacity(HANDOFF);
            let mut send = |k: Vec<u8>, v: Vec<u8>| -> Result<(), MetaError> {
                batch.push((k, v));
                if batch.len() >= HANDOFF {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(HANDOFF));
                    tx.send(full).map_err(|_| stopped())?;
                }
                Ok(())
            };
            scan(&mut send)?;
            if !batch.is_empty() {
                tx.send(batch).map_err(|_| stopped())?;
            }
            Ok::<(), MetaError>(())
        });
        let built = pages.build(rx.iter().flatten(), w).map_err(MetaError::from);
        let scanned = producer.join().unwrap_or_else(|_| Err(stopped()));
        // The scan's error first: a build that ended early because the scan stopped is its
        // consequence.
        scanned?;
        built
    })
}

fn stopped() -> MetaError {
    MetaError::Tree(TreeError::InvalidInput {
        reason: "the rebuild of the metadata trees stopped".into(),
    })
}
