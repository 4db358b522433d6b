//! What this crate's integration tests share: the one way a test gives up for lack of a
//! capability (root, a tool), which under CI is a failure, not a skip.

/// Is this a CI run: `CI` set to anything non-empty, or `VERFS_CI=1`?
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os("VERFS_CI").is_some_and(|v| v == "1")
}

/// Outside CI: a loud SKIPPED line, and the caller returns (the test passes). Under CI
/// ([`in_ci`]): a panic, so a CI machine without what the suite needs is red, not silently green.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("*** CI: this test cannot run: {why} (CI must provide it) ***");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
}
