//! Hostile input for the parser tests (`engine/tests/parsers.rs`, `coordination/tests/parsers.rs`):
//! arbitrary bytes, or a valid encoding mutated (bit flips, cuts, extensions, insertions, length
//! fields set to extremes). Behind the feature `proptest`.

use proptest::prelude::*;

/// The proptest configuration of the parser tests: `PROPTEST_CASES` cases (default 64), no
/// failure files written into the source tree.
pub fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A mutation of a valid encoding.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    /// Overwrite a 1/2/4/8-byte little-endian field with an extreme value.
    Field(usize, usize, u64),
    Insert(usize, Vec<u8>),
}

/// One mutation; field values include every length limit of the format (16 MiB for packs,
/// journals and discard records, 1 GiB for log records).
pub fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0xff),
        Just(0xffff),
        Just(0xffff_ffff),
        Just(u64::MAX),
        Just(16 << 20),
        Just(1 << 30),
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (
            any::<usize>(),
            prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
            extreme
        )
            .prop_map(|(i, w, v)| Mutation::Field(i, w, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

/// `valid` with `muts` applied in order (positions taken modulo the current length).
pub fn apply(valid: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for m in muts {
        let n = b.len();
        match m {
            Mutation::Flip(i, bit) if n > 0 => b[i % n] ^= 1 << bit,
            Mutation::Truncate(i) if n > 0 => b.truncate(i % n),
            Mutation::Extend(v) => b.extend_from_slice(v),
            Mutation::Field(i, w, v) if n >= *w => {
                let at = i % (n - w + 1);
                b[at..at + w].copy_from_slice(&v.to_le_bytes()[..*w]);
            }
            Mutation::Insert(i, v) => {
                let at = i % (n + 1);
                b.splice(at..at, v.iter().copied());
            }
            _ => {}
        }
    }
    b
}

/// Hostile input: arbitrary bytes, or `valid` with one to three mutations.
pub fn hostile(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(mutation(), 1..4).prop_map(move |m| apply(&valid, &m)),
    ]
}
