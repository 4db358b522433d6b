//! Page bytes: encoding, checked decoding, the content hash and the boundary rule.
//!
//! The byte layout is specified once, in `data-layout.md` section 5.7a ("Metadata page files
//! (format 3)"); this file is the only code that knows its offsets. Everything read from disk
//! goes through [`Page::decode`], which checks every length against the bytes present before using
//! it, so damaged or hostile bytes give an error, never a panic or a large allocation.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// `VMPG`: the first bytes of every page.
pub(crate) const PAGE_MAGIC: &[u8; 4] = b"VMPG";
/// Magic, level, flags, count.
pub(crate) const PAGE_HEADER_LEN: usize = 8;
/// The trailing crc32.
pub(crate) const PAGE_CRC_LEN: usize = 4;
/// The encoded size of a [`PagePtr`].
pub const PTR_LEN: usize = 36;

/// Boundary rule: a node is never closed by its content below this many bytes.
pub const NODE_MIN: usize = 1024;
/// Boundary rule: a node is always closed once it holds this many bytes.
pub const NODE_MAX: usize = 16 * 1024;
/// Boundary rule: an entry of `n` bytes closes a node (past [`NODE_MIN`]) with probability
/// `n / NODE_TARGET`; with the minimum this makes nodes average about 4 KiB.
pub const NODE_TARGET: u64 = 3072;
/// `floor(2^64 / NODE_TARGET)`: the threshold per entry byte.
const THRESHOLD_PER_BYTE: u64 = (1u128 << 64).div_euclid(NODE_TARGET as u128) as u64;

/// The largest leaf entry: key length, key, value length, value.
const MAX_LEAF_ENTRY: usize = 2 + MAX_KEY_LEN + 4 + MAX_VALUE_LEN;
/// The largest page any writer produces: a node just under [`NODE_MAX`] plus one largest entry,
/// plus the crc. Readers refuse longer pointers before allocating.
pub const MAX_PAGE_LEN: usize = NODE_MAX - 1 + MAX_LEAF_ENTRY + PAGE_CRC_LEN;
/// The smallest valid page: header, one empty leaf entry, crc.
pub const MIN_PAGE_LEN: usize = PAGE_HEADER_LEN + 6 + PAGE_CRC_LEN;
/// Levels above this are refused (fanout is at least 2 above the leaves, so 64 levels would
/// need more than 2^63 entries).
pub const MAX_LEVEL: u8 = 64;

/// The address of one page: bytes `[offset, offset + len)` of page file `file`, whose content
/// hash is `hash` (see [`Page::hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PagePtr {
    pub file: u64,
    pub offset: u64,
    pub len: u32,
    pub hash: u128,
}

impl PagePtr {
    /// The fixed [`PTR_LEN`]-byte encoding (`data-layout.md` 5.7a, "Page pointer"), as stored in
    /// internal pages and roots.
    pub fn encode(&self) -> [u8; PTR_LEN] {
        let mut b = [0u8; PTR_LEN];
        b[0..8].copy_from_slice(&self.file.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b[20..36].copy_from_slice(&self.hash.to_le_bytes());
        b
    }

    /// Decode [`PagePtr::encode`]'s bytes. Fails (never panics) on a wrong length, a zero file
    /// id, an offset inside the file header or a length no writer produces.
    pub fn decode(b: &[u8]) -> Result<PagePtr, String> {
        let b: &[u8; PTR_LEN] = b
            .try_into()
            .map_err(|_| format!("a page pointer is {PTR_LEN} bytes, not {}", b.len()))?;
        let (f, rest) = b.split_at(8);
        let (o, rest) = rest.split_at(8);
        let (l, h) = rest.split_at(4);
        let ptr = PagePtr {
            file: u64::from_le_bytes(f.try_into().map_err(|_| "file")?),
            offset: u64::from_le_bytes(o.try_into().map_err(|_| "offset")?),
            len: u32::from_le_bytes(l.try_into().map_err(|_| "len")?),
            hash: u128::from_le_bytes(h.try_into().map_err(|_| "hash")?),
        };
        ptr.check()?;
        Ok(ptr)
    }

    /// The rules every pointer obeys, whoever made it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.file == 0 {
            return Err("page pointer names file 0".into());
        }
        if self.offset < super::FILE_HEADER_LEN as u64 {
            return Err(format!(
                "page pointer offset {} is inside the file header",
                self.offset
            ));
        }
        let len = self.len as usize;
        if !(MIN_PAGE_LEN..=MAX_PAGE_LEN).contains(&len) {
            return Err(format!(
                "page pointer length {len} is outside {MIN_PAGE_LEN}..={MAX_PAGE_LEN}"
            ));
        }
        if self.offset.checked_add(self.len as u64).is_none() {
            return Err("page pointer end overflows".into());
        }
        Ok(())
    }
}

/// Where one entry's key and value lie inside [`Page::bytes`].
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: u32,
    key_len: u16,
    val: u32,
    val_len: u32,
}

/// One decoded, checked page: a leaf (level 0, entries are key/value pairs) or an internal page
/// (entries are the last key of a child subtree and the child's [`PagePtr`]). Cheap to share
/// (the cache hands out `Arc<Page>`); accessors borrow from the page's own bytes.
#[derive(Debug)]
pub struct Page {
    bytes: Vec<u8>,
    level: u8,
    slots: Vec<Slot>,
    hash: u128,
}

impl Page {
    /// 0 for a leaf.
    pub fn level(&self) -> u8 {
        self.level
    }
    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }
    /// Number of entries (at least 1).
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// Never true for a decoded page; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    /// The encoded bytes, crc included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The content hash: XXH3-128 of the bytes before the crc, with each child pointer's `file`
    /// and `offset` read as zeros, so it depends on content only, not on where children live.
    pub fn hash(&self) -> u128 {
        self.hash
    }

    /// Key of entry `i` (for an internal page: the last key of child `i`). Panics if `i >= len()`
    /// (an index bug of the caller, not data from disk).
    pub fn key(&self, i: usize) -> &[u8] {
        let s = self.slots[i];
        &self.bytes[s.key as usize..s.key as usize + s.key_len as usize]
    }

    /// Value of entry `i`: the user's value in a leaf, the encoded child pointer in an internal
    /// page.
    pub fn value(&self, i: usize) -> &[u8] {
        let s = self.slots[i];
        &self.bytes[s.val as usize..s.val as usize + s.val_len as usize]
    }

    /// The child pointer of entry `i` of an internal page (checked when the page was decoded).
    pub fn child(&self, i: usize) -> PagePtr {
        // Decoding checked every pointer already, so this cannot fail for an internal page.
        PagePtr::decode(self.value(i)).unwrap_or(PagePtr {
            file: 0,
            offset: 0,
            len: 0,
            hash: 0,
        })
    }

    /// The last key of the page.
    pub fn last_key(&self) -> &[u8] {
        self.key(self.slots.len() - 1)
    }

    /// The index of the first entry whose key is `>= key` (`strict`: `> key`), or `len()`.
    pub fn lower_bound(&self, key: &[u8], strict: bool) -> usize {
        let (mut lo, mut hi) = (0, self.slots.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = self.key(mid);
            let before = if strict { k <= key } else { k < key };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Decode and check a page read from disk: the crc, then the structure (magic, flags, count,
    /// every length within the bytes, keys strictly increasing, sizes within the limits, child
    /// pointers well-formed). `bytes` must be exactly the page.
    pub fn decode(bytes: Vec<u8>) -> Result<Page, String> {
        let n = bytes.len();
        if n < MIN_PAGE_LEN {
            return Err(format!("page of {n} bytes is shorter than {MIN_PAGE_LEN}"));
        }
        if n > MAX_PAGE_LEN {
            return Err(format!("page of {n} bytes is longer than {MAX_PAGE_LEN}"));
        }
        let body = n - PAGE_CRC_LEN;
        let stored = read_u32(&bytes, body).ok_or("no room for the crc")?;
        let actual = crc32fast::hash(bytes.get(..body).ok_or("no body")?);
        if stored != actual {
            return Err(format!(
                "page crc mismatch: stored {stored:08x}, computed {actual:08x}"
            ));
        }
        let (level, slots, end) = parse_structure(&bytes)?;
        if end != body {
            return Err(format!(
                "page entries end at byte {end} but the crc is at byte {body}"
            ));
        }
        let hash = content_hash(&bytes, level, &slots);
        Ok(Page {
            bytes,
            level,
            slots,
            hash,
        })
    }
}

/// The length of the page that starts `buf` as its structure says (header and entries, plus the
/// crc), without checking the crc; `Ok(None)` if `buf` ends before the page does. For walking a
/// file whose page lengths are known only from the pages themselves.
pub(crate) fn page_len_at(buf: &[u8]) -> Result<Option<usize>, String> {
    match parse_prefix(buf) {
        Ok((_, _, end)) => Ok(Some(end + PAGE_CRC_LEN)),
        Err(ParseError::Short) => Ok(None),
        Err(ParseError::Bad(r)) => Err(r),
    }
}

enum ParseError {
    Short,
    Bad(String),
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError::Bad(s)
    }
}

fn parse_structure(bytes: &[u8]) -> Result<(u8, Vec<Slot>, usize), String> {
    match parse_prefix(
        bytes
            .get(..bytes.len().saturating_sub(PAGE_CRC_LEN))
            .unwrap_or(&[]),
    ) {
        Ok(v) => Ok(v),
        Err(ParseError::Short) => Err("page entries run past the page's end".into()),
        Err(ParseError::Bad(r)) => Err(r),
    }
}

/// Parse header and entries from `buf` (which may be longer than the page, or shorter: `Short`).
/// Returns the level, the slots and the offset where the entries end (where the crc starts).
fn parse_prefix(buf: &[u8]) -> Result<(u8, Vec<Slot>, usize), ParseError> {
    let header = buf.get(..PAGE_HEADER_LEN).ok_or(ParseError::Short)?;
    if &header[0..4] != PAGE_MAGIC {
        return Err(ParseError::Bad(format!(
            "page magic is {:02x?}, not VMPG",
            &header[0..4]
        )));
    }
    let level = header[4];
    if level > MAX_LEVEL {
        return Err(ParseError::Bad(format!(
            "page level {level} is above {MAX_LEVEL}"
        )));
    }
    if header[5] != 0 {
        return Err(ParseError::Bad(format!(
            "page flags are {:#04x}, not 0",
            header[5]
        )));
    }
    let count = u16::from_le_bytes([header[6], header[7]]) as usize;
    if count == 0 {
        return Err(ParseError::Bad("page has no entries".into()));
    }
    // Every entry takes at least 6 bytes, so `count` cannot ask for more slots than the limit
    // allows; the allocation is bounded by the u16 anyway.
    let mut slots = Vec::with_capacity(count);
    let mut pos = PAGE_HEADER_LEN;
    for i in 0..count {
        let key_len = read_u16(buf, pos).ok_or(ParseError::Short)? as usize;
        if key_len > MAX_KEY_LEN {
            return Err(ParseError::Bad(format!(
                "entry {i}: key length {key_len} is above {MAX_KEY_LEN}"
            )));
        }
        let key = pos + 2;
        let after_key = key + key_len;
        let (val, val_len) = if level == 0 {
            let val_len = read_u32(buf, after_key).ok_or(ParseError::Short)? as usize;
            if val_len > MAX_VALUE_LEN {
                return Err(ParseError::Bad(format!(
                    "entry {i}: value length {val_len} is above {MAX_VALUE_LEN}"
                )));
            }
            (after_key + 4, val_len)
        } else {
            (after_key, PTR_LEN)
        };
        let end = val + val_len;
        let v = buf.get(val..end).ok_or(ParseError::Short)?;
        if level > 0 {
            PagePtr::decode(v).map_err(|r| ParseError::Bad(format!("entry {i}: {r}")))?;
        }
        let slot = Slot {
            key: key as u32,
            key_len: key_len as u16,
            val: val as u32,
            val_len: val_len as u32,
        };
        if let Some(prev) = slots.last() {
            let pk = slot_key(buf, prev);
            let k = slot_key(buf, &slot);
            if pk >= k {
                return Err(ParseError::Bad(format!(
                    "entry {i}: keys are not strictly increasing"
                )));
            }
        }
        slots.push(slot);
        pos = end;
        if pos > MAX_PAGE_LEN {
            return Err(ParseError::Bad(format!(
                "page entries exceed {MAX_PAGE_LEN} bytes"
            )));
        }
    }
    Ok((level, slots, pos))
}

fn slot_key<'a>(buf: &'a [u8], s: &Slot) -> &'a [u8] {
    buf.get(s.key as usize..s.key as usize + s.key_len as usize)
        .unwrap_or(&[])
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// See [`Page::hash`]. `slots` must be in bounds (the page was built or parsed).
fn content_hash(bytes: &[u8], level: u8, slots: &[Slot]) -> u128 {
    let body = &bytes[..bytes.len() - PAGE_CRC_LEN];
    if level == 0 {
        return xxhash_rust::xxh3::xxh3_128(body);
    }
    let mut h = Xxh3::new();
    let mut prev = 0;
    for s in slots {
        let p = s.val as usize;
        h.update(&body[prev..p]);
        h.update(&[0u8; 16]);
        prev = p + 16;
    }
    h.update(&body[prev..]);
    h.digest128()
}

/// Builds the node being filled at one level and applies the boundary rule after each entry
/// (`data-layout.md` 5.7a, "Node boundaries"). The decision depends only on the entries pushed
/// since the last close, which is what lets `apply` stop re-chunking at an old boundary.
pub(crate) struct NodeBuilder {
    level: u8,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    scratch: Vec<u8>,
}

impl NodeBuilder {
    pub(crate) fn new(level: u8) -> NodeBuilder {
        let mut b = NodeBuilder {
            level,
            buf: Vec::with_capacity(NODE_MAX + 1024),
            slots: Vec::new(),
            scratch: Vec::with_capacity(MAX_KEY_LEN + 1),
        };
        b.reset();
        b
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(PAGE_MAGIC);
        self.buf.extend_from_slice(&[self.level, 0, 0, 0]);
        self.slots.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(crate) fn count(&self) -> usize {
        self.slots.len()
    }

    /// Append an entry (keys strictly increasing, sizes within limits: checked by the callers)
    /// and say whether the boundary rule closes the node after it.
    pub(crate) fn push(&mut self, key: &[u8], val: &[u8]) -> bool {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        let k = self.buf.len();
        self.buf.extend_from_slice(key);
        if self.level == 0 {
            self.buf
                .extend_from_slice(&(val.len() as u32).to_le_bytes());
        }
        let v = self.buf.len();
        self.buf.extend_from_slice(val);
        self.slots.push(Slot {
            key: k as u32,
            key_len: key.len() as u16,
            val: v as u32,
            val_len: val.len() as u32,
        });
        let entry = (self.buf.len() - start) as u64;
        let size = self.buf.len();
        // Above the leaves a node needs two entries, so every level has at most half the nodes
        // of the one below and the tree's height is bounded.
        if self.level > 0 && self.slots.len() < 2 {
            return false;
        }
        if size >= NODE_MAX {
            return true;
        }
        if size < NODE_MIN {
            return false;
        }
        self.scratch.clear();
        self.scratch.push(self.level);
        self.scratch.extend_from_slice(key);
        xxh3_64(&self.scratch) < entry.saturating_mul(THRESHOLD_PER_BYTE)
    }

    /// Close the node: the finished page (count and crc filled in); the builder is empty again.
    pub(crate) fn finish(&mut self) -> Page {
        let count = self.slots.len() as u16;
        self.buf[6..8].copy_from_slice(&count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(NODE_MAX + 1024));
        let slots = std::mem::take(&mut self.slots);
        let hash = content_hash(&bytes, self.level, &slots);
        self.reset();
        Page {
            bytes,
            level: self.level,
            slots,
            hash,
        }
    }
}
