//! A stalled process that was declared dead can never change the store again.
//!
//! Proves docs/DESIGN.md "Failure model" (a process that stalls and resumes after the others declared it
//! dead must not be able to change the store), layout crash point F1 and [FENCE-1] (every commit
//! of a claimed lease is refused under the log lock), [LEASE-5] (a SIGSTOPped process is dead by
//! heartbeat age), [LEASE-6]/[LEASE-8] (recover's claim is what fences it) and [LEASE-7] (its
//! keeper notices and reports it); [LEASE-11] (a process whose filesystem lost its connection
//! fences itself, and a mount then unmounts).

use std::fs;
use std::thread;
use std::time::Duration;

use crate::*;

struct Stalled {
    st: TestStore,
    pool: Pool,
    hold: usize,
    lease: String,
}

/// A `hold` process, SIGSTOPped past the lease timeout, whose lease `verfs recover` then claimed.
fn stalled_and_claimed(extra: &[&str]) -> Stalled {
    let st = TestStore::new();
    st.short_leases();
    let mut pool = Pool::new(st.scratch(), agent());
    let root = st.root().to_path_buf();
    let mut args = vec!["hold".as_ref(), root.as_os_str()];
    args.extend(extra.iter().map(|e| std::ffi::OsStr::new(*e)));
    let hold = pool.spawn_agent("hold", &args);
    let ready = pool.wait_event(hold, "ready", Duration::from_secs(30));
    let lease = ready["lease"].as_str().unwrap().to_owned();
    assert!(pool.sigstop(hold));
    // The one sleep used for correctness: the lease must time out (1500 ms) while stopped.
    thread::sleep(Duration::from_millis(2500));
    assert!(is_stopped(pool.proc(hold).pid), "hold is not stopped");
    let rec = st.ok(&["recover"]);
    assert!(
        rec.stdout_str()
            .contains(&format!("cleaned up after dead process {lease}")),
        "recover did not claim the stalled lease:\n{}",
        rec.describe()
    );
    assert!(
        !st.lease_folders().iter().any(|n| n.starts_with(&lease)),
        "{:?}",
        st.lease_folders()
    );
    Stalled {
        st,
        pool,
        hold,
        lease,
    }
}

fn assert_probe_absent(st: &TestStore) {
    let names = st.ls("/");
    assert!(
        !names.iter().any(|n| n == "fenced-probe"),
        "a fenced process changed the store: ls / = {names:?}"
    );
    st.assert_fsck_clean();
}

/// The resumed process tries to commit; whichever notices first (its keeper: exit 75, or the
/// log's fence check: the mkdir fails), nothing reaches the store.
#[test]
fn stalled_process_is_fenced_after_recover() {
    let mut s = stalled_and_claimed(&[]);
    assert!(s.pool.sigcont(s.hold));
    fs::write(s.st.scratch().join("go-commit"), b"").unwrap();
    let f = s.pool.wait(s.hold, Duration::from_secs(30));
    let fenced = f.results.iter().any(|r| r["event"] == "fenced");
    let probe = f.results.iter().find(|r| r["event"] == "probe");
    match (f.status.code(), probe) {
        (Some(75), _) => assert!(fenced, "exit 75 without a fenced report:\n{}", f.describe()),
        (Some(1), Some(p)) => assert_eq!(p["ok"], false, "{}", f.describe()),
        _ => panic!(
            "the fenced process neither exited 75 nor failed its probe:\n{}",
            f.describe()
        ),
    }
    assert_probe_absent(&s.st);
    eprintln!(
        "fencing: lease {} fenced, exit {:?}",
        s.lease,
        f.status.code()
    );
}

/// The resumed process does not exit when its keeper reports the fencing, and its commit was
/// already under way: the log refuses it under the log lock ([FENCE-1]), not the keeper.
#[test]
fn stalled_process_commit_is_refused_by_the_log() {
    let mut s = stalled_and_claimed(&["--stay-when-fenced"]);
    // go-commit exists before the process resumes: its main thread commits at once.
    fs::write(s.st.scratch().join("go-commit"), b"").unwrap();
    assert!(s.pool.sigcont(s.hold));
    let f = s.pool.wait(s.hold, Duration::from_secs(30));
    let probe = f
        .results
        .iter()
        .find(|r| r["event"] == "probe")
        .unwrap_or_else(|| panic!("{}", f.describe()));
    assert_eq!(
        probe["ok"],
        false,
        "the fenced commit succeeded:\n{}",
        f.describe()
    );
    let err = probe["error"].as_str().unwrap_or("");
    assert!(
        err.contains("fenced"),
        "probe failed, but not as fenced: {err}"
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    assert_probe_absent(&s.st);
}

/// [LEASE-11]: a mount whose heartbeat write fails as a GlusterFS client cut off from its server
/// fails (ENOTCONN, injected) fences itself at once, without waiting for anyone to declare it
/// dead: it unmounts (no dead mountpoint is left behind) and exits 75, saying why. `recover` then
/// cleans up after it; the store is clean and what was there before is still there.
#[test]
fn a_mount_that_loses_its_filesystem_fences_itself_and_unmounts() {
    require_fuse!();
    let st = TestStore::new();
    st.ok(&["mkdir", "/d"]);
    // The keeper's first heartbeat, one interval (1 s) after the open, fails.
    let mut m = Mount::foreground_with(
        &st,
        &[],
        &[("FAILPOINTS", "lease.heartbeat-write=return(enotconn)")],
    );
    let status = m.wait_exit(Duration::from_secs(30));
    let stderr = m.stderr();
    assert_eq!(
        status.code(),
        Some(75),
        "the mount did not exit as fenced:\n{stderr}"
    );
    assert!(
        !m.is_mounted(),
        "the fenced mount left its mountpoint mounted"
    );
    assert!(
        stderr.contains("fenced itself") || stderr.contains("fencing this process"),
        "the mount does not say it fenced itself:\n{stderr}"
    );
    assert!(
        stderr.contains("lost its connection"),
        "the mount does not say why it fenced itself:\n{stderr}"
    );
    let rec = st.ok(&["recover"]);
    assert!(
        rec.stdout_str().contains("cleaned up after dead process"),
        "recover did not clean up after the fenced mount:\n{}",
        rec.describe()
    );
    assert_eq!(st.ls("/"), vec!["d".to_owned()]);
    st.assert_fsck_clean();
}
