//! The engine's failpoint sites (see `verfs_coordination::failpoint` for how a site works and
//! how `FAILPOINTS` configures it; `data-layout.md` 6.8, "Design choices").

/// The failpoint sites of this crate, one per wrapped call.
pub const SITES: &[&str] = &[
    // store
    "store.init-mkdir-root",
    "store.init-mkdir",
    "store.init-remove-partial-log",
    "store.pack-group-sync",
    "store.log-truncate-unlink",
    // pack writer
    "pack.create",
    "pack.header-write",
    "pack.header-fsync",
    "pack.create-cleanup-unlink",
    "pack.append-write",
    "pack.sync",
    "pack.salvage-truncate",
    "pack.salvage-fsync",
    // packs of dead writers
    "pack.seal-existing-fsync",
    "pack.torn-header-write",
    "pack.torn-header-fsync",
    "pack.torn-cut-truncate",
    "pack.torn-cut-fsync",
    // gc
    "gc.discard-create",
    "gc.discard-reset-truncate",
    "gc.discard-header-write",
    "gc.discard-cut-truncate",
    "gc.discard-write",
    "gc.discard-fsync",
    "gc.discard-repair-unlink",
    "gc.discard-repair-truncate",
    "gc.discard-repair-fsync",
    "gc.orphan-index-unlink",
    "gc.page-file-unlink",
    "gc.page-tmp-unlink",
    "gc.orphan-discard-unlink",
    // snapshots
    // recover
    "recover.log-truncate-unlink",
    "recover.temp-unlink",
    // advisory counters
    "stats.publish-write",
    "stats.publish-rename",
    "stats.fold-write",
    "stats.fold-rename",
];

/// Every site of the engine and of the coordination crate it uses.
pub fn all_sites() -> Vec<&'static str> {
    verfs_coordination::failpoint::SITES
        .iter()
        .chain(SITES)
        .copied()
        .collect()
}

/// Test hook for crash points: if the environment variable `VERFS_CRASH_POINT` names `point`,
/// the process aborts here (no destructor runs: its lease, journal and files stay as a SIGKILL
/// would leave them). Used by the crash tests of snapshots and GC; costs one cached lookup.
pub fn crash_point(point: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if WANTED
        .get_or_init(|| std::env::var("VERFS_CRASH_POINT").ok())
        .as_deref()
        == Some(point)
    {
        // Deliberately stderr, not `tracing`: the process aborts on the next line, and the crash
        // tests look for this line whether or not the binary installed a subscriber.
        eprintln!("verfs: VERFS_CRASH_POINT={point}: aborting here");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_list_matches_the_sources() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let problems = verfs_coordination::failpoint::check_site_list(&src, SITES);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
