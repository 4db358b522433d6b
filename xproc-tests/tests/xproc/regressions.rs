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

/// `verfs status` hung forever (2 of 20 calls) when another process committed while it ran: its
/// closure inside `TxLog::read` called `applied_lsn()`, a read lock on the view whose write lock
/// `read` held after catching up. Twenty status calls beside a `mkdir` loop in another process must
/// each finish in seconds.
#[test]
fn status_does_not_hang_beside_a_committer() {
    let st = TestStore::new();
    let stop = st.scratch().join("stop");
    let script = format!(
        "i=0; while [ ! -e '{}' ]; do '{}' -s '{}' mkdir /d$i >/dev/null || exit 1; i=$((i+1)); done",
        stop.display(),
        verfs_bin().display(),
        st.root().display()
    );
    let mut writer = std::process::Command::new("bash")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let mut hung = 0;
    for _ in 0..20 {
        let mut cmd = st.command();
        cmd.arg("status");
        let out = run_with_timeout(cmd, std::time::Duration::from_secs(20));
        if out.killed() {
            hung += 1;
        } else {
            assert!(out.success(), "status failed:\n{}", out.describe());
        }
    }
    fs::write(&stop, b"").unwrap();
    let w = writer.wait().unwrap();
    assert!(w.success(), "the mkdir loop failed: {w:?}");
    assert_eq!(hung, 0, "{hung} of 20 `verfs status` calls hung beside a committer");
    assert!(st.ls("/").len() > 3, "the writer committed too little to race with status");
}

/// A zero-filled tail inside the last log record (header intact, payload ending in zeros: what a
/// power cut before `fdatasync` leaves on filesystems that grow the file first) made the store
/// unusable: every command, even `cat` of a file committed long before, failed with "corrupt".
/// [LOG-4]: it is a torn tail; readers stop before it, the next writer cuts it, fsck is clean.
#[test]
fn zero_filled_tail_in_last_log_record_is_a_torn_tail() {
    let st = TestStore::new();
    let src = st.scratch_dir("src");
    let old = write_random_file(&src.join("old"), 1, 10_000);
    st.ok(&["put", src.join("old").to_str().unwrap(), "/old"]);
    st.ok(&["mkdir", "/a-directory-with-a-long-enough-name"]);
    let seg = st.log_segments().pop().expect("a log segment");
    let seg = st.root().join("log").join(seg);
    let len = fs::metadata(&seg).unwrap().len();
    // Zero the last 20 bytes of the mkdir's record (its payload holds the name, so it is longer).
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 20], len - 20).unwrap();
    drop(f);
    assert_eq!(sha256(&st.cat("/old")), old, "cat of a file committed before the tail");
    assert_eq!(st.ls("/"), vec!["old"], "the torn mkdir must not be visible");
    st.ok(&["mkdir", "/after"]);
    assert_eq!(st.ls("/"), vec!["after", "old"]);
    st.ok(&["recover"]);
    st.assert_fsck_clean();
}
