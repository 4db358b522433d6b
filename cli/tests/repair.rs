//! `verfs repair` through the binary: exit codes (0 nothing to repair, 1 repaired without loss,
//! 2 repaired with losses, 3 not run), the refusal of a damaged log by every other command, the
//! report's lines and `--json`, and `fsck` clean afterwards (`data-layout.md` 5.12).
//!
//! proves [REPAIR-1] [REPAIR-4] [REPAIR-5] through the CLI.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use verfs_test_support::cli::{new_store, ok, run};

fn flip(path: &Path, at: u64) {
    verfs_test_support::flip_byte(path, at, 0x5a);
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn put_tree(dir: &Path, store: &Path, n: usize) {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        fs::write(src.join(format!("f{i:03}")), format!("file {i}\n")).unwrap();
    }
    ok(
        store,
        &[
            std::ffi::OsStr::new("put"),
            src.as_os_str(),
            std::ffi::OsStr::new("/src"),
        ],
    );
}

/// A damaged page whose log is still there (no other process ever truncated it): repaired
/// without loss, exit 1; then exit 0.
#[test]
fn repair_rebuilds_a_damaged_page_from_the_log_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    put_tree(tmp.path(), &store, 300);
    ok(&store, &["checkpoint"]);
    assert_eq!(
        code(&run(&store, &["repair"])),
        0,
        "a healthy store: nothing to repair"
    );
    let page = fs::read_dir(store.join("meta"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flip(&page, 3000);
    let ls = run(&store, &["ls", "/src"]);
    assert_ne!(code(&ls), 0, "ls read a damaged page: {}", text(&ls));

    let dry = run(&store, &["repair", "--dry-run"]);
    assert_eq!(code(&dry), 1, "{}", text(&dry));
    assert!(
        text(&dry).contains("would be recovered from checkpoint 0"),
        "{}",
        text(&dry)
    );
    assert_ne!(
        code(&run(&store, &["fsck"])),
        0,
        "the dry run changed the store"
    );

    let o = run(&store, &["repair", "--json"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["damaged_pages"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["losses"].as_array().unwrap().is_empty(), "{r}");
    ok(&store, &["fsck"]);
    let names = String::from_utf8(ok(&store, &["ls", "/src"]).stdout).unwrap();
    assert_eq!(names.lines().count(), 300);
    assert_eq!(ok(&store, &["cat", "/src/f123"]).stdout, b"file 123\n");
    assert_eq!(code(&run(&store, &["repair"])), 0);
    assert_eq!(code(&run(&store, &["fsck", "--repair"])), 0, "the alias");
}

/// A damaged record in the middle of the log: every command refuses with the segment, the byte
/// and `verfs repair`; repair loses that record only (exit 2) and names it.
#[test]
fn a_damaged_log_record_is_refused_by_open_and_cut_by_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    for name in ["a", "b", "c"] {
        ok(&store, &["mkdir", &format!("/{name}")]);
    }
    let seg = fs::read_dir(store.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    // The record of `mkdir /b` is the second to last: find it by its name in the payload.
    let bytes = fs::read(&seg).unwrap();
    let at = bytes
        .windows(5)
        .rposition(|w| w == [1, 0, 0, 0, b'b'])
        .unwrap() as u64;
    flip(&seg, at + 4);
    let ls = run(&store, &["ls", "/"]);
    assert_ne!(code(&ls), 0);
    let msg = text(&ls);
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains("verfs repair"),
        "{msg}"
    );

    let o = run(&store, &["repair"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("damaged log record"), "{}", text(&o));
    ok(&store, &["fsck"]);
    let names = String::from_utf8(ok(&store, &["ls", "/"]).stdout).unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["a", "c"]);
}

/// [REPAIR-1]: exit 3 and the pid of the process that holds the store.
#[test]
fn repair_refuses_a_store_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let mut holder = verfs_test_support::cli::verfs(&store)
        .args(["gc", "--worker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::read_dir(store.join("leases")).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gc worker took no lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = run(&store, &["repair"]);
    let _ = nix_kill(holder.id());
    let _ = holder.wait();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("pid {}", holder.id())),
        "{}",
        text(&o)
    );
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    let st = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}
