//! The one way a test gives up for lack of a capability (root, FUSE, a tool): a loud SKIPPED
//! line outside CI, a failure under CI, so a CI machine that lacks what the suite needs is red,
//! not green with part of the suite never run.

use std::path::Path;

/// Is this a CI run: `CI` set to anything non-empty (what GitHub, GitLab and most runners set),
/// or `VERFS_CI=1`? There a test that lacks a capability fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os("VERFS_CI").is_some_and(|v| v == "1")
}

/// The one place a test gives up for lack of root, FUSE or a tool. Outside CI: a loud SKIPPED
/// line, and the caller returns (the test passes). Under CI ([`in_ci`]): a panic, so a CI machine
/// that lacks what the suite needs is red, not green with the mount suite never run.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("*** CI: this test cannot run: {why} (CI must provide it; see README \"Test\") ***");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// Does the test run as root (effective uid 0)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why FUSE tests cannot run here (`/dev/fuse` or `fusermount3` missing), or `None`.
pub fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

/// Return from the test, loudly, when FUSE is unavailable ([`fuse_missing`]); under CI
/// ([`in_ci`]) fail it instead ([`skip`]).
#[macro_export]
macro_rules! require_fuse {
    () => {
        if let Some(why) = $crate::fuse_missing() {
            $crate::skip(&why);
            return;
        }
    };
}

/// Return from the test, loudly, when not root ([`is_root`]); under CI ([`in_ci`], which runs as
/// root) fail it instead ([`skip`]). `require_root!("what needs it")` names the reason.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root!("needs root")
    };
    ($why:expr) => {
        if !$crate::is_root() {
            $crate::skip($why);
            return;
        }
    };
}
