//! Chunk cut points and ids pinned by an independent oracle (data-layout.md 5.2 and 6.3: FastCDC
//! 2020 at the configured sizes; section 2: chunk id = XXH3-128 of the chunk's bytes).
//!
//! The expected values are literals, computed once outside verfs with the `fastcdc` crate's
//! `v2020::StreamCDC` (5.0.0, the algorithm the format promises to match) and `xxhash-rust`'s
//! `xxh3_128` (0.8.19), over the input [`input`] builds, at the default sizes (16 / 64 / 256 KiB).
//! Every chunker of the engine (the streaming [`Chunker`], the write path's [`BufChunker`]) and
//! the extents a put stores must reproduce them; other tests that compare against the engine's
//! own `Chunker` rely on this one. A change of cut points or ids is a format change: existing
//! stores would stop deduplicating against new writes.
#![allow(clippy::unwrap_used)]

use std::fs;

use verfs_engine::chunker::{BufChunker, Chunker, ChunkerParams};
use verfs_engine::config::Config;
use verfs_engine::ids::ChunkId;
use verfs_engine::ops::transfer;
use verfs_engine::store::{OpenOptions, Store};

/// `n` bytes of a xorshift64 (13, 7, 17) stream from `seed`, each state written little-endian.
fn xorshift_stream(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// 1 MiB of noise (content-defined cuts), 600 KiB of zeros (no cut point: chunks of exactly the
/// maximum size), 512 KiB + 777 bytes of other noise (ends in a chunk shorter than the minimum).
fn input() -> Vec<u8> {
    let mut data = xorshift_stream(0x9E37_79B9_7F4A_7C15, 1 << 20);
    data.extend(std::iter::repeat_n(0u8, 600 << 10));
    data.extend(xorshift_stream(42, (512 << 10) + 777));
    data
}

/// (offset, length, XXH3-128 id) of every chunk of [`input`], from the oracle (module docs).
const GOLDEN: &[(u64, u32, u128)] = &[
    (0, 44750, 0xf71d88043d79c7ff0cddeef95edc91aa),
    (44750, 219962, 0x037f6d1c8d252d6c38c341639296ec00),
    (264712, 100125, 0x4be61283d6d58c2c7ff1331a325f7eba),
    (364837, 28400, 0x0c97af8e27c765963f5b047b42eef7d7),
    (393237, 91429, 0x0646e26b41495d0837673ed661500495),
    (484666, 28467, 0x404c9e00595b773ac90ae9e9a639ad92),
    (513133, 19017, 0x992a29792bee0577c036a6c87dc0ce90),
    (532150, 114735, 0xadd7c0ee15cf216d9049f88ff3d6c74c),
    (646885, 88164, 0xd6d66596851758c5e6d2e37ca7d02580),
    (735049, 66867, 0xd29a9f543d1d3b27d2d7ceb8a78b12e1),
    (801916, 152283, 0x5bd681cbdc2a71d88237b725ae1a560f),
    (954199, 262144, 0xa05cebf271665ffdbf7c17bd9b1968c9),
    (1216343, 262144, 0x9aa295aead2a46612d64c035e85fb928),
    (1478487, 215151, 0xaab9b43cdd2bcb56cd532fafb7164b5b),
    (1693638, 87429, 0xf7e019f0c0025a9dd300d85a106bdbf1),
    (1781067, 111414, 0xf89734c2df7f475882f8f19b29854775),
    (1892481, 80463, 0x9e7a73147f0f2710717215409f0a40b6),
    (1972944, 110305, 0xa1527b1a2a99985ce9ad8e896b16300a),
    (2083249, 96159, 0xc8b7f1d58dd0f993068b32551b326969),
    (2179408, 8633, 0xeec57898b7c6c3923dc8e37fe66d6f52),
];

const INPUT_LEN: usize = 2_188_041;

fn golden() -> Vec<(u64, u32, ChunkId)> {
    GOLDEN
        .iter()
        .map(|&(o, l, id)| (o, l, ChunkId(id)))
        .collect()
}

/// The golden list is self-consistent: contiguous, covering the input, within the sizes.
#[test]
fn golden_list_covers_the_input() {
    let data = input();
    assert_eq!(data.len(), INPUT_LEN);
    let mut end = 0;
    for (i, &(o, l, _)) in GOLDEN.iter().enumerate() {
        assert_eq!(
            o,
            end,
            "chunk {i} does not start where chunk {} ended",
            i.max(1) - 1
        );
        assert!(l <= 256 << 10 && (l >= 16 << 10 || i == GOLDEN.len() - 1));
        end = o + u64::from(l);
    }
    assert_eq!(end, INPUT_LEN as u64);
}

/// The defaults the golden values were computed at are the defaults a new store gets.
#[test]
fn default_chunk_sizes_are_the_golden_ones() {
    let want = ChunkerParams {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };
    assert_eq!(ChunkerParams::default(), want);
    assert_eq!(Config::default().chunker(), want);
}

#[test]
fn stream_chunker_matches_the_golden_cut_points() {
    let data = input();
    let got: Vec<(u64, u32, ChunkId)> = Chunker::new(&data[..], ChunkerParams::default())
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            (c.offset, c.data.len() as u32, c.id)
        })
        .collect();
    assert_eq!(got, golden());
}

#[test]
fn buf_chunker_matches_the_golden_cut_points() {
    let data = input();
    let got: Vec<(u64, u32, ChunkId)> = BufChunker::new(&data[..], ChunkerParams::default())
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            assert_eq!(c.id, ChunkId::of(c.data()));
            (c.offset, c.len() as u32, c.id)
        })
        .collect();
    assert_eq!(got, golden());
}

/// End to end: a put of the input stores exactly the golden extents, and each golden id is the
/// id of those bytes of the input.
#[test]
fn put_stores_the_golden_extents() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::init(&root).unwrap();
    let src = dir.path().join("golden.bin");
    let data = input();
    fs::write(&src, &data).unwrap();
    let s = Store::open(&root, OpenOptions::new("test golden chunks")).unwrap();
    transfer::put(&s, std::slice::from_ref(&src), "/golden.bin", &mut |_| {}).unwrap();
    let (inode, extents) = s.lookup("/golden.bin").unwrap();
    assert_eq!(inode.size, INPUT_LEN as u64);
    let got: Vec<(u64, u32, ChunkId)> = extents
        .iter()
        .map(|e| {
            assert_eq!(e.chunk_off, 0, "{e:?}");
            (e.file_off, e.len, e.chunk)
        })
        .collect();
    assert_eq!(got, golden());
    for &(o, l, id) in &golden() {
        assert_eq!(
            ChunkId::of(&data[o as usize..(o + u64::from(l)) as usize]),
            id
        );
    }
    assert_eq!(s.read_all("/golden.bin").unwrap(), data);
    s.close().unwrap();
}
