//! Building a tree from sorted entries, streaming: one node being filled per level.

use super::page::NodeBuilder;
use super::{PageStore, PageWriter, Root, TreeError, MAX_KEY_LEN, MAX_VALUE_LEN};

/// Checks one entry against the limits and against the previous key (strictly increasing).
pub(crate) fn check_entry(
    prev: Option<&[u8]>,
    key: &[u8],
    val: Option<&[u8]>,
) -> Result<(), TreeError> {
    if key.len() > MAX_KEY_LEN {
        return Err(TreeError::TooLarge {
            what: "key",
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if let Some(v) = val {
        if v.len() > MAX_VALUE_LEN {
            return Err(TreeError::TooLarge {
                what: "value",
                len: v.len(),
                max: MAX_VALUE_LEN,
            });
        }
    }
    if let Some(p) = prev {
        if p >= key {
            return Err(TreeError::InvalidInput {
                reason: format!(
                    "keys must be sorted and unique: {} is not after {}",
                    hex::encode(key),
                    hex::encode(p)
                ),
            });
        }
    }
    Ok(())
}

impl PageStore {
    /// Build the tree holding `entries` (sorted by key, unique) from scratch into `w`, holding
    /// one node per level in memory. On error the pages written so far are garbage in `w`'s
    /// file (drop the writer); no published file changes.
    pub fn build<I, K, V>(&self, entries: I, w: &mut PageWriter) -> Result<Root, TreeError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut levels: Vec<(NodeBuilder, u64)> = vec![(NodeBuilder::new(0), 0)];
        let mut prev: Vec<u8> = Vec::new();
        let mut first = true;
        for (k, v) in entries {
            let (k, v) = (k.as_ref(), v.as_ref());
            check_entry((!first).then_some(prev.as_slice()), k, Some(v))?;
            first = false;
            prev.clear();
            prev.extend_from_slice(k);
            if levels[0].0.push(k, v) {
                close(&mut levels, 0, w)?;
            }
        }
        // Close the last node of each level, bottom up; the first level that made exactly one
        // node holds the root.
        let mut level = 0;
        loop {
            if !levels[level].0.is_empty() {
                close(&mut levels, level, w)?;
            }
            match levels[level].1 {
                0 => return Ok(Root::EMPTY),
                1 => {
                    // Its only node was pushed into the level above as that level's only entry.
                    let top = &mut levels[level + 1].0;
                    let page = top.finish();
                    return Ok(Root::new(page.child(0)));
                }
                _ => level += 1,
            }
        }
    }
}

/// Close the node of `level`: write it and push its (last key, pointer) into the level above,
/// closing that one too if the rule says so.
fn close(
    levels: &mut Vec<(NodeBuilder, u64)>,
    mut level: usize,
    w: &mut PageWriter,
) -> Result<(), TreeError> {
    loop {
        let page = levels[level].0.finish();
        levels[level].1 += 1;
        let ptr = w.write(&page)?;
        if levels.len() == level + 1 {
            levels.push((NodeBuilder::new(level as u8 + 1), 0));
        }
        if !levels[level + 1].0.push(page.last_key(), &ptr.encode()) {
            return Ok(());
        }
        level += 1;
    }
}
