//! The multi-process tests: one test binary (docs/STYLE.md), one module per property.
//!
//! Every test gets a fresh store ([`TestStore`]) and spawns real `verfs` / `xproc-agent`
//! processes. Each test names the rule it proves (`data-layout.md`, `docs/DESIGN.md`).
//! Run with `cargo build --workspace --bins && cargo test -p verfs-xproc-tests`; set
//! `XPROC_SEED=<n>` to replay the random choices of a failed run (the seed is printed).

#![allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)

mod crash_images;
mod failpoints;
mod fencing;
mod gc;
mod locks;
mod model;
mod mount_cli;
mod mount_kill;
mod mount_multi;
mod mount_perms;
mod mount_posix;
mod mount_rsync;
mod mount_shell;
mod multihost;
mod pipeline;
mod put_many;
mod races;
mod regressions;
mod same_path;
mod snapshots;
mod torture;
mod two_phase;

use std::path::PathBuf;

pub use verfs_xproc_tests::*;

/// The helper binary, built by cargo for this package's tests.
pub fn agent() -> PathBuf {
    agent_bin!()
}

/// The harness itself: a stale or missing binary is refused loudly, a hang is reported.
#[test]
fn harness_self_check() {
    let st = TestStore::new();
    st.short_leases();
    st.set_config("xproc_new_section", "key", "1");
    let cfg = std::fs::read_to_string(st.root().join("config.toml")).unwrap();
    assert!(
        cfg.contains("timeout_ms = 1500\n") && cfg.contains("heartbeat_ms = 200\n"),
        "{cfg}"
    );
    assert!(cfg.ends_with("[xproc_new_section]\nkey = 1\n"), "{cfg}");
    // The store refuses unknown keys: proves the rewrite reached the file the binary reads.
    let bad = st.run(&["status"]);
    assert!(
        !bad.success() && bad.stderr.contains("xproc_new_section"),
        "{}",
        bad.describe()
    );
    let fixed = std::fs::read_to_string(st.root().join("config.toml"))
        .unwrap()
        .replace("[xproc_new_section]\nkey = 1\n", "");
    std::fs::write(st.root().join("config.toml"), fixed).unwrap();
    assert_eq!(st.ok(&["status", "--json"]).code(), Some(0));
    let hang = std::panic::catch_unwind(|| {
        let mut c = std::process::Command::new("sleep");
        c.arg("30");
        run_with_timeout(c, std::time::Duration::from_millis(300))
    });
    let msg = *hang.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("HANG") && msg.contains("sleep 30"), "{msg}");
    let t = tagged_content("w01-r002", 7, 3 * TAG_BLOCK);
    assert_eq!(describe_tags(&t), "12288 bytes: \"w01-r002\" x 3");
}
