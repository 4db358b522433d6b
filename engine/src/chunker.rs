//! Content-defined chunking of a byte stream (FastCDC 2020), streaming: at most `max` bytes of the
//! source are buffered at a time, never a whole file.
//!
//! - [`ChunkerParams`]: min / average / max chunk size, from `config.toml`; [`ChunkerParams::validate`]
//!   enforces the limits that `fastcdc` itself only checks with `debug_assert`.
//! - [`Chunker`]: an iterator over any [`Read`] yielding [`Chunk`]s (offset, bytes, [`ChunkId`]).
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
