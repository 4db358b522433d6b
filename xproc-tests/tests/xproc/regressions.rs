//! Deterministic reproductions of bugs first found by the torture test, named after what they
//! regress. Each builds the exact state a SIGKILL at one instruction leaves.

use std::fs;

use crate::*;

/// A process SIGKILLed inside `Lease::acquire` while the info file was being written (the fsync
/// of its temp file is the long step) leaves `leases/.new-<id>/.info.tmp-<pid>-<rand>` and no
/// info. DESIGN.md "Invariants": after `verfs recover`, no lease of a dead process; `fsck` must
/// then be clean. Found by `torture`: recover exits 0 leaving the folder until the lease timeout
/// (10 s by default), while fsck reports it at once.
#[test]
fn recover_cleans_half_created_lease_of_killed_process() {
    let st = TestStore::new();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let dir = st.root().join("leases").join(".new-00000000deadbeef");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join(format!(".info.tmp-{dead_pid}-0123456789abcdef")),
        b"partial",
    )
    .unwrap();
    let rec = st.run(&["recover"]);
    let fsck = st.run(&["fsck"]);
    assert!(
        rec.success() && fsck.success() && fsck.stdout.is_empty(),
        "recover and fsck disagree about a half-created lease of a dead process:\n{}\n{}",
        rec.describe(),
        fsck.describe()
    );
}

/// A writer killed inside `write_atomic` (here: sealing its pack's `.idx`) leaves
/// `.NAME.tmp-<pid>-<rand>`. On a single host the dead pid alone proves the writer gone, so the
/// first `recover` must remove it and a second must find nothing to do ([REC-1]). Found by
/// `torture` in a fresh-clone CI run: the first recover kept it until it was older than the lease
/// timeout, so the second recover still "did something".
#[test]
fn recover_removes_fresh_temp_file_of_dead_writer_at_once() {
    let st = TestStore::new();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let tmp = st.root().join("packs").join(format!(
        ".0123456789abcdef.idx.tmp-{dead_pid}-00000000000000aa"
    ));
    fs::write(&tmp, b"half an index").unwrap();
    let first = st.run(&["recover"]);
    assert!(
        first.success() && !tmp.exists(),
        "first recover left the temp file:\n{}",
        first.describe()
    );
    let second = st.run(&["recover"]);
    assert!(
        second.success() && second.stdout.is_empty(),
        "second recover did something:\n{}",
        second.describe()
    );
}

/// `verfs mv /a /a/b/a` (a directory into its own subtree) must fail like `rename(2)` (EINVAL)
/// and change nothing. Without the check the commit unlinks `/a` from the root and links it
/// under its own child: exit 0, and `/a` and `/a/b` become a cycle no walk from the root reaches
/// (fsck: "inode not reachable from the root"). A mount never gets this far (the kernel refuses
/// first), so only the CLI path proves it. Also the exchange form and a deeper target.
#[test]
fn mv_directory_into_its_own_subtree_is_refused() {
    let st = TestStore::new();
    st.ok(&["mkdir", "/a"]);
    st.ok(&["mkdir", "/a/b"]);
    st.ok(&["mkdir", "/a/b/c"]);
    st.ok(&["mkdir", "/d"]);
    for (src, dst) in [
        ("/a", "/a/b/a"),
        ("/a", "/a/b/c"),
        ("/a/b", "/a/b/c/x"),
        ("/a", "/a"),
    ] {
        let out = st.run(&["mv", src, dst]);
        let err = &out.stderr;
        if src == dst {
            // `mv /a /a`: /a is a directory, so this means /a/a, inside itself as well.
            assert!(
                !out.success(),
                "mv {src} {dst} succeeded:\n{}",
                out.describe()
            );
        } else {
            assert!(
                !out.success()
                    && err.contains(src)
                    && err.contains(dst)
                    && err.contains("subdirectory of itself"),
                "mv {src} {dst} must fail naming both paths:\n{}",
                out.describe()
            );
        }
        assert_eq!(
            err.lines().count(),
            1,
            "one error line:\n{}",
            out.describe()
        );
    }
    // Nothing moved: the tree is as built, and every inode is reachable.
    assert_eq!(st.ok(&["ls", "/"]).stdout_str(), "a\nd\n");
    assert_eq!(st.ok(&["ls", "/a"]).stdout_str(), "b\n");
    assert_eq!(st.ok(&["ls", "/a/b"]).stdout_str(), "c\n");
    assert_eq!(st.ok(&["ls", "/a/b/c"]).stdout_str(), "");
    st.assert_fsck_clean();
    // A legal move next to it still works.
    st.ok(&["mv", "/d", "/a/b/c/d"]);
    assert_eq!(st.ok(&["ls", "/a/b/c"]).stdout_str(), "d\n");
    st.assert_fsck_clean();
}

/// Crash point L1 (data-layout.md 8) with [LOG-5]: a writer killed during the `pwrite` of a log
/// record leaves part of the record at the tail. Readers stop before it (everything committed
/// reads back), fsck reports it as a torn record, `verfs recover` cuts it exactly at the
/// record's offset, and the next commit lands there.
#[test]
fn torn_log_tail_of_a_killed_writer_is_cut_by_recover() {
    let st = TestStore::new();
    let src = st.scratch_dir("src");
    let sha = write_random_file(&src.join("f"), 7, 200_000);
    st.ok(&["put".as_ref(), src.join("f").as_os_str(), "/f".as_ref()]);
    let (seg, valid) = st.plant_torn_log_tail();
    assert!(fs::metadata(&seg).unwrap().len() > valid);
    assert_eq!(
        sha256(&st.cat("/f")),
        sha,
        "a torn tail hides committed data"
    );
    let fsck = st.run(&["fsck"]);
    assert!(
        !fsck.success() && fsck.stdout_str().contains("torn record"),
        "fsck does not report the torn tail:\n{}",
        fsck.describe()
    );
    st.ok(&["recover"]);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        valid,
        "recover did not cut the torn record at its offset"
    );
    st.assert_fsck_clean();
    st.ok(&["mkdir", "/after"]);
    assert_eq!(st.ls("/"), vec!["after".to_owned(), "f".to_owned()]);
    assert_eq!(sha256(&st.cat("/f")), sha);
    st.assert_fsck_clean();
}
