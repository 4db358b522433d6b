//! Test data and digests: deterministic, so a failure reproduces.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// `len` pseudo-random bytes from `seed` (same seed, same bytes).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Write [`random_bytes`] to `path`; returns their sha256.
pub fn write_random_file(path: &Path, seed: u64, len: usize) -> String {
    let data = random_bytes(seed, len);
    fs::write(path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha256(&data)
}

/// Block size of [`tagged_content`].
pub const TAG_BLOCK: usize = 4096;
/// Length of the tag at the start of each block.
pub const TAG_LEN: usize = 32;

/// `len` bytes whose every 4 KiB block starts with a 32-byte tag `"<tag> b<block>"` followed by
/// random bytes (seeded by `seed`), so content is incompressible, chunks are distinct, and a
/// mix of two versions can be traced block by block ([`describe_tags`]).
pub fn tagged_content(tag: &str, seed: u64, len: usize) -> Vec<u8> {
    let mut data = random_bytes(seed, len);
    for (k, block) in data.chunks_mut(TAG_BLOCK).enumerate() {
        let mut t = format!("{tag} b{k:05}");
        t.truncate(TAG_LEN);
        let mut hdr = [b' '; TAG_LEN];
        hdr[..t.len()].copy_from_slice(t.as_bytes());
        let n = block.len().min(TAG_LEN);
        block[..n].copy_from_slice(&hdr[..n]);
    }
    data
}

/// Runs of block tags in `data` ("w03-r007 x 75, w05-r002 x 12"): which versions a bad read mixes.
pub fn describe_tags(data: &[u8]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for block in data.chunks(TAG_BLOCK) {
        let hdr = String::from_utf8_lossy(&block[..block.len().min(TAG_LEN)]).into_owned();
        let who = hdr.split(" b").next().unwrap_or("?").trim().to_owned();
        match runs.last_mut() {
            Some((w, n)) if *w == who => *n += 1,
            _ => runs.push((who, 1)),
        }
    }
    let mut s = format!("{} bytes: ", data.len());
    for (i, (w, n)) in runs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{w:?} x {n}");
    }
    s
}

/// A deterministic per-test seed, overridable with `XPROC_SEED` to replay a failure.
pub fn seed() -> u64 {
    std::env::var("XPROC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `n` incompressible bytes: the low byte of each state of a xorshift64 (13, 7, 17) stream that
/// starts at `state` (non-zero). [`noise`] is this from a spread seed; a test whose fixture bytes
/// are pinned (a layout it depends on) may start the stream where it always did.
pub fn xorshift_bytes(state: u64, n: usize) -> Vec<u8> {
    let mut x = state;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `n` incompressible bytes from `seed`: [`xorshift_bytes`] with the seed spread by a
/// multiplication first, so every seed gives its own stream.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    xorshift_bytes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, n)
}

/// `n` bytes of compressible text: the lines `line(i)` for `i = first, first + 1, ...`, cut at `n`.
pub fn lines(first: u64, n: usize, line: impl Fn(u64) -> String) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = first;
    while v.len() < n {
        v.extend_from_slice(line(i).as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// `n` bytes of compressible text: numbered lines `"{i} lorem ipsum dolor sit amet\n"` from
/// `i = seed`, cut at `n` ([`lines`]).
pub fn text(seed: u64, n: usize) -> Vec<u8> {
    lines(seed, n, |i| format!("{i} lorem ipsum dolor sit amet\n"))
}

/// `crc32` exactly as data-layout.md section 2 specifies it (CRC-32/ISO-HDLC, bit by bit): an
/// oracle independent of the `crc32fast` crate the engine uses, for tests that forge or check
/// on-disk bytes. A crc over several ranges is the crc of their concatenation.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}
