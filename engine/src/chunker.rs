//! Content-defined chunking of a byte stream (FastCDC 2020), streaming: at most `max` bytes of the
//! source are buffered at a time, never a whole file.
//!
//! - [`ChunkerParams`]: min / average / max chunk size, from `config.toml`; [`ChunkerParams::validate`]
//!   enforces the limits that `fastcdc` itself only checks with `debug_assert`.
//! - [`Chunker`]: an iterator over any [`Read`] yielding [`Chunk`]s (offset, bytes, [`ChunkId`]).
//! - [`BufChunker`]: the same cut points, for the write path: it reads the source in large blocks
//!   into a few recycled buffers and yields [`SharedChunk`]s that point into them, so a chunk's
//!   bytes are never copied before compression (and not at all when it is a dedup hit).
//!
//! Because cut points depend only on nearby content, an insertion or deletion changes the ids of
//! the chunks around it and leaves the rest identical, which is what makes deduplication work
//! across versions of a file.
//!
//! ```
//! use verfs_engine::chunker::{Chunker, ChunkerParams};
//! let data = vec![7u8; 100_000];
//! let mut total = 0;
//! for chunk in Chunker::new(&data[..], ChunkerParams::default()).unwrap() {
//!     total += chunk.unwrap().data.len();
//! }
//! assert_eq!(total, data.len());
//! ```

use std::io::{self, Read};
use std::sync::Arc;

use fastcdc::v2020::{self, StreamCDC};

use crate::ids::ChunkId;

/// Chunk size bounds in bytes. Cut points are content-defined between `min` and `max`, aiming at
/// `avg` on average.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 16 KiB / 64 KiB / 256 KiB: large enough to keep per-chunk metadata small, small enough that an
    /// edit rewrites little.
    fn default() -> Self {
        ChunkerParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

impl ChunkerParams {
    /// Check the limits of fastcdc's 2020 algorithm. The crate only `debug_assert`s them, so a bad
    /// config in a release build would silently produce a wrong mask or buffer; reject it here.
    pub fn validate(&self) -> Result<(), String> {
        let ChunkerParams { min, avg, max } = *self;
        let within = |name: &str, v: u32, lo: usize, hi: usize| {
            if (v as usize) < lo || (v as usize) > hi {
                Err(format!("chunk {name} size {v} is outside {lo}..={hi}"))
            } else {
                Ok(())
            }
        };
        within("min", min, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX)?;
        within("avg", avg, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX)?;
        within("max", max, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX)?;
        if !(min <= avg && avg <= max) {
            return Err(format!(
                "chunk sizes must satisfy min <= avg <= max, got {min} / {avg} / {max}"
            ));
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err(format!(
                "chunk sizes must be even, got {min} / {avg} / {max}"
            ));
        }
        Ok(())
    }
}

/// One chunk of the source.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset of the chunk's first byte in the source.
    pub offset: u64,
    pub data: Vec<u8>,
    /// `ChunkId::of(&data)`.
    pub id: ChunkId,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .field("id", &self.id)
            .finish()
    }
}

/// Creating a [`Chunker`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkerError {
    #[error("invalid chunker parameters: {reason}")]
    InvalidParams { reason: String },
}

/// What the rest of the engine sees of a chunker error (same message).
impl From<ChunkerError> for crate::error::Error {
    fn from(e: ChunkerError) -> Self {
        match e {
            ChunkerError::InvalidParams { reason } => {
                crate::error::Error::InvalidChunkerParams { reason }
            }
        }
    }
}

/// Streaming content-defined chunker over a [`Read`]; see the module docs.
///
/// After the first error the iterator is finished (returns `None`): the source position is
/// unknown, so continuing could yield chunks at wrong offsets.
pub struct Chunker<R: Read> {
    inner: StreamCDC<RetryInterrupted<R>>,
    /// Offset just past the last chunk yielded, for error context.
    next_offset: u64,
    done: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `source`. Fails only if `params` are invalid; nothing is read yet.
    pub fn new(source: R, params: ChunkerParams) -> Result<Chunker<R>, ChunkerError> {
        params
            .validate()
            .map_err(|reason| ChunkerError::InvalidParams { reason })?;
        Ok(Chunker {
            inner: StreamCDC::new(
                RetryInterrupted(source),
                params.min as usize,
                params.avg as usize,
                params.max as usize,
            ),
            next_offset: 0,
            done: false,
        })
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        if self.done {
            return None;
        }
        match self.inner.next()? {
            Ok(c) => {
                self.next_offset = c.offset + c.length as u64;
                let id = ChunkId::of(&c.data);
                Some(Ok(Chunk {
                    offset: c.offset,
                    data: c.data,
                    id,
                }))
            }
            Err(e) => {
                self.done = true;
                let at = self.next_offset;
                let err = match e {
                    v2020::Error::IoError(io) => io::Error::new(
                        io.kind(),
                        format!("chunking: reading the source after byte {at} failed: {io}"),
                    ),
                    other => io::Error::other(format!("chunking after byte {at}: {other}")),
                };
                Some(Err(err))
            }
        }
    }
}

/// A chunk cut by [`BufChunker`]: a range of a shared read buffer.
#[derive(Clone)]
pub struct SharedChunk {
    /// Byte offset of the chunk's first byte in the source.
    pub offset: u64,
    /// `ChunkId::of(self.data())`.
    pub id: ChunkId,
    buf: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl SharedChunk {
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for SharedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedChunk")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("id", &self.id)
            .finish()
    }
}

/// Buffers a [`BufChunker`] keeps for reuse (a buffer is reused once no chunk points into it).
const RECYCLE: usize = 4;

/// Streaming FastCDC with the cut points of [`Chunker`] (same masks, gear table and
/// normalization), reading `max(1 MiB, 4 x max)` bytes at a time. Memory: the buffers that chunks
/// still in flight point into, plus [`RECYCLE`] spare ones.
pub struct BufChunker<R: Read> {
    src: R,
    p: ChunkerParams,
    masks: (u64, u64),
    cur: Arc<Vec<u8>>,
    filled: usize,
    pos: usize,
    eof: bool,
    done: bool,
    offset: u64,
    spare: Vec<Arc<Vec<u8>>>,
}

impl<R: Read> BufChunker<R> {
    pub fn new(source: R, params: ChunkerParams) -> Result<BufChunker<R>, ChunkerError> {
        params
            .validate()
            .map_err(|reason| ChunkerError::InvalidParams { reason })?;
        Ok(BufChunker {
            src: source,
            p: params,
            masks: v2020::select_masks(params.avg as usize, v2020::Normalization::Level1),
            cur: Arc::new(Vec::new()),
            filled: 0,
            pos: 0,
            eof: false,
            done: false,
            offset: 0,
            spare: Vec::new(),
        })
    }

    /// Move the unchunked tail into a free buffer and read until it is full or the source ends.
    fn refill(&mut self) -> io::Result<()> {
        let full = (1usize << 20).max(4 * self.p.max as usize);
        // The first buffer of a stream is small: most files are, and zeroing a whole buffer for
        // each one cost more than reading it (15% of a put of 100k small files). A stream that
        // fills it moves on to full-size buffers (`next` refills until `max` bytes are visible).
        let size = if self.offset == 0 && self.cur.is_empty() {
            FIRST_BUFFER.min(full)
        } else {
            full
        };
        let mut next = self
            .spare
            .iter()
            .position(|b| Arc::strong_count(b) == 1 && b.len() == size)
            .map(|i| self.spare.swap_remove(i))
            .unwrap_or_else(|| Arc::new(vec![0u8; size]));
        let rest = self.filled - self.pos;
        let Some(buf) = Arc::get_mut(&mut next) else {
            return Err(io::Error::other("chunk buffer still shared"));
        };
        buf[..rest].copy_from_slice(&self.cur[self.pos..self.filled]);
        let mut filled = rest;
        while filled < size {
            match self.src.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let old = std::mem::replace(&mut self.cur, next);
        if self.spare.len() < RECYCLE && !old.is_empty() {
            self.spare.push(old);
        }
        self.filled = filled;
        self.pos = 0;
        Ok(())
    }
}

/// Bytes of the first buffer a [`BufChunker`] reads into.
const FIRST_BUFFER: usize = 64 << 10;

impl<R: Read> Iterator for BufChunker<R> {
    type Item = io::Result<SharedChunk>;

    fn next(&mut self) -> Option<io::Result<SharedChunk>> {
        if self.done {
            return None;
        }
        while !self.eof && self.filled - self.pos < self.p.max as usize {
            if let Err(e) = self.refill() {
                self.done = true;
                let at = self.offset;
                return Some(Err(io::Error::new(
                    e.kind(),
                    format!("chunking: reading the source after byte {at} failed: {e}"),
                )));
            }
        }
        let rest = &self.cur[self.pos..self.filled];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let (mask_s, mask_l) = self.masks;
        let (_, n) = v2020::cut(
            rest,
            self.p.min as usize,
            self.p.avg as usize,
            self.p.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        let n = if n == 0 { rest.len() } else { n };
        let id = ChunkId::of(&rest[..n]);
        let c = SharedChunk {
            offset: self.offset,
            id,
            buf: self.cur.clone(),
            start: self.pos,
            len: n,
        };
        self.pos += n;
        self.offset += n as u64;
        Some(Ok(c))
    }
}

/// fastcdc passes `Interrupted` straight through as a hard error (it uses `read`, not
/// `read_exact`), which would abort a whole file because a signal arrived; retry it here.
struct RetryInterrupted<R>(R);

impl<R: Read> Read for RetryInterrupted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; n];
        rng.fill(&mut v[..]);
        v
    }

    fn chunk_all(data: &[u8], p: ChunkerParams) -> Vec<Chunk> {
        Chunker::new(data, p)
            .unwrap()
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().validate().unwrap();
    }

    #[test]
    fn validate_rejects_out_of_range_odd_and_unordered() {
        let bad = [
            ChunkerParams {
                min: 62,
                avg: 256,
                max: 1024,
            },
            ChunkerParams {
                min: 64,
                avg: 254,
                max: 1024,
            },
            ChunkerParams {
                min: 64,
                avg: 256,
                max: 1022,
            },
            ChunkerParams {
                min: 64,
                avg: 256,
                max: (16 << 20) + 2,
            },
            ChunkerParams {
                min: (1 << 20) + 2,
                avg: 2 << 20,
                max: 4 << 20,
            },
            ChunkerParams {
                min: 64,
                avg: (4 << 20) + 2,
                max: 8 << 20,
            },
            ChunkerParams {
                min: 65,
                avg: 256,
                max: 1024,
            },
            ChunkerParams {
                min: 4096,
                avg: 2048,
                max: 8192,
            },
            ChunkerParams {
                min: 1024,
                avg: 8192,
                max: 4096,
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?} should be rejected");
            assert!(Chunker::new(&[][..], p).is_err());
        }
        ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        }
        .validate()
        .unwrap();
        ChunkerParams {
            min: 1 << 20,
            avg: 4 << 20,
            max: 16 << 20,
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn concatenated_chunks_equal_input_with_correct_offsets_and_ids() {
        let data = random_bytes(3 << 20, 1);
        let p = ChunkerParams::default();
        let chunks = chunk_all(&data, p);
        assert!(chunks.len() > 10);
        let mut joined = Vec::new();
        for c in &chunks {
            assert_eq!(c.offset, joined.len() as u64);
            assert_eq!(c.id, ChunkId::of(&c.data));
            assert!(c.data.len() <= p.max as usize);
            joined.extend_from_slice(&c.data);
        }
        assert_eq!(joined, data);
        // every chunk but the last respects min
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.data.len() >= p.min as usize);
        }
    }

    #[test]
    fn insertion_near_start_changes_only_the_first_chunks() {
        let data = random_bytes(4 << 20, 2);
        let mut edited = data.clone();
        edited.splice(1000..1000, b"an inserted sentence".iter().copied());
        let a = chunk_all(&data, ChunkerParams::default());
        let b = chunk_all(&edited, ChunkerParams::default());
        let ids_a: std::collections::HashSet<_> = a.iter().map(|c| c.id).collect();
        let changed = b.iter().filter(|c| !ids_a.contains(&c.id)).count();
        assert!(changed <= 2, "{changed} of {} chunks changed", b.len());
        // and the tail is identical
        let tail = 10;
        let ta: Vec<_> = a[a.len() - tail..].iter().map(|c| c.id).collect();
        let tb: Vec<_> = b[b.len() - tail..].iter().map(|c| c.id).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn buf_chunker_cuts_where_the_stream_chunker_does() {
        // Random and repetitive regions, sizes around the buffer boundaries.
        let p = ChunkerParams::default();
        for (n, seed) in [(0usize, 1u64), (100, 2), (5 << 20, 3), ((1 << 20) + 7, 4)] {
            let mut data = random_bytes(n, seed);
            if n > 3 << 20 {
                for b in &mut data[1 << 20..2 << 20] {
                    *b = b'a';
                }
            }
            let want: Vec<(u64, usize, ChunkId)> = chunk_all(&data, p)
                .iter()
                .map(|c| (c.offset, c.data.len(), c.id))
                .collect();
            // A reader returning odd short reads, to cross buffer refills at random places.
            struct Odd<'a>(&'a [u8], usize);
            impl Read for Odd<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    self.1 = (self.1 * 7 + 13) % 70_001 + 1;
                    let k = self.1.min(buf.len()).min(self.0.len());
                    buf[..k].copy_from_slice(&self.0[..k]);
                    self.0 = &self.0[k..];
                    Ok(k)
                }
            }
            let got: Vec<(u64, usize, ChunkId)> = BufChunker::new(Odd(&data, 1), p)
                .unwrap()
                .map(|c| {
                    let c = c.unwrap();
                    assert_eq!(ChunkId::of(c.data()), c.id);
                    assert_eq!(
                        c.data(),
                        &data[c.offset as usize..c.offset as usize + c.len()]
                    );
                    (c.offset, c.len(), c.id)
                })
                .collect();
            assert_eq!(got, want, "input of {n} bytes");
        }
    }

    #[test]
    fn buf_chunker_reports_a_read_error_with_its_offset_and_stops() {
        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let k = self.0.min(buf.len());
                buf[..k].fill(9);
                self.0 -= k;
                Ok(k)
            }
        }
        let mut c = BufChunker::new(Fails(3 << 20), ChunkerParams::default()).unwrap();
        let mut err = None;
        for r in c.by_ref() {
            if let Err(e) = r {
                err = Some(e.to_string());
                break;
            }
        }
        let err = err.expect("a read error must surface");
        assert!(
            err.contains("disk on fire") && err.contains("after byte"),
            "{err}"
        );
        assert!(c.next().is_none(), "the chunker stops after an error");
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        assert!(chunk_all(&[], ChunkerParams::default()).is_empty());
    }

    #[test]
    fn input_smaller_than_min_is_one_chunk() {
        let data = random_bytes(1000, 3);
        let chunks = chunk_all(&data, ChunkerParams::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data, data);
        assert_eq!(chunks[0].offset, 0);
    }

    /// A reader that returns short reads, `Interrupted`, and finally a hard error.
    struct Flaky {
        data: Vec<u8>,
        pos: usize,
        calls: usize,
        fail_at: usize,
    }
    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            if self.pos >= self.fail_at {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "boom"));
            }
            let n = buf.len().min(777).min(self.fail_at - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn interrupted_is_retried_and_errors_end_the_stream_with_context() {
        let data = random_bytes(1 << 20, 4);
        let r = Flaky {
            data: data.clone(),
            pos: 0,
            calls: 0,
            fail_at: data.len() / 2,
        };
        let mut it = Chunker::new(r, ChunkerParams::default()).unwrap();
        let mut got = Vec::new();
        let err = loop {
            match it.next() {
                Some(Ok(c)) => got.extend_from_slice(&c.data),
                Some(Err(e)) => break e,
                None => panic!("expected an error"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("chunking"), "{err}");
        assert_eq!(&data[..got.len()], &got[..]);
        assert!(it.next().is_none());
    }
}
