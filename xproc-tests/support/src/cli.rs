//! `verfs -s STORE ...` for tests that hold a store by its path (the `cli` tests): plain
//! [`std::process::Command`] and [`Output`], no timeout. [`crate::TestStore`] is the same with a
//! temporary directory of its own and a timeout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::verfs_bin;

/// `verfs -s STORE`, with no subcommand yet. `VERFS_STORE` and `VERFS_CRASH_POINT` are removed
/// from its environment, so only what the test sets reaches it.
pub fn verfs(store: &Path) -> Command {
    let mut c = Command::new(verfs_bin());
    c.arg("-s")
        .arg(store)
        .env_remove("VERFS_STORE")
        .env_remove("VERFS_CRASH_POINT");
    c
}

/// Run `verfs -s STORE args...` to completion; any exit status is returned.
pub fn run<S: AsRef<OsStr>>(store: &Path, args: &[S]) -> Output {
    verfs(store)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", verfs_bin().display()))
}

/// [`run`] that must exit 0; a failure names the arguments, the status, stdout and stderr.
#[track_caller]
pub fn ok<S: AsRef<OsStr>>(store: &Path, args: &[S]) -> Output {
    let o = run(store, args);
    assert!(
        o.status.success(),
        "verfs {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `verfs init DIR/store`; returns the store's path.
pub fn new_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    ok(&store, &["init"]);
    store
}
