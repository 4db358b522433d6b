//! `verfs lock NAME MODE -- CMD` and `verfs locks` (data-layout.md [ULOCK-1], [ULOCK-2]) with
//! real processes: EX excludes (no read-modify-write lost), every EX grant gets a larger epoch,
//! PR holders share, a timeout gives 124, `locks` names holder and waiter, and waiters are served
//! in arrival order ([LOCK-9]).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use verfs_test_support::cli::{new_store, ok, verfs};

fn lock_cmd(store: &std::path::Path, name: &str, mode: &str, script: &str) -> Command {
    let mut c = verfs(store);
    c.args(["lock", name, mode, "--", "sh", "-c", script]);
    c
}

#[test]
fn ex_locks_lose_no_update_and_epochs_grow() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let counter = tmp.path().join("counter");
    let epochs = tmp.path().join("epochs");
    fs::write(&counter, "0\n").unwrap();
    // Read, pause, write: without the lock, concurrent updates would be lost.
    let script = format!(
        "n=$(cat {c}); sleep 0.002; echo $((n+1)) > {c}; echo $VERFS_LOCK_EPOCH >> {e}",
        c = counter.display(),
        e = epochs.display()
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let script = script.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let out = lock_cmd(&store, "counter", "EX", &script).output().unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(fs::read_to_string(&counter).unwrap().trim(), "100");
    let mut seen: Vec<u64> = fs::read_to_string(&epochs)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=100).collect::<Vec<u64>>(),
        "one epoch per EX grant"
    );
    // The exit status is the command's.
    let out = lock_cmd(&store, "counter", "PR", "exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn pr_shares_ex_waits_and_a_timeout_gives_124() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let flag = tmp.path().join("in");
    let mut a = lock_cmd(
        &store,
        "db",
        "PR",
        &format!("touch {}; sleep 3", flag.display()),
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flag.exists() {
        assert!(Instant::now() < deadline, "the first PR holder never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second PR is granted at once, an EX is not.
    let t = Instant::now();
    let out = lock_cmd(&store, "db", "PR", "true").output().unwrap();
    assert!(out.status.success() && t.elapsed() < Duration::from_secs(2));
    let out = verfs(&store)
        .args(["lock", "db", "EX", "--timeout", "0.3", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `locks` shows the holder, and a waiter while it waits.
    let mut w = verfs(&store)
        .args(["lock", "db", "EX", "--", "true"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let v: serde_json::Value =
            serde_json::from_slice(&ok(&store, &["--json", "locks"]).stdout).unwrap();
        if v.as_array().unwrap().len() == 2 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let states: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["mode"].as_str().unwrap(), l["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("PR", "held"), ("EX", "waiting")], "{listed}");
    assert!(a.wait().unwrap().success());
    assert!(
        w.wait().unwrap().success(),
        "the waiter gets the lock once PR is gone"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&store, &["--json", "locks"]).stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn a_killed_holder_releases_its_lock_and_its_command() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let pidfile = tmp.path().join("child");
    let mut holder = lock_cmd(
        &store,
        "job",
        "EX",
        &format!("echo $$ > {}; exec sleep 60", pidfile.display()),
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the command never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let child: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = verfs(&store)
        .args(["lock", "job", "EX", "--timeout", "10", "--", "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The protected command died with its holder (PR_SET_PDEATHSIG).
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !std::path::Path::new(&format!("/proc/{child}")).exists()
            || fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "the command outlived the holder of its lock");
}

/// [LOCK-9] with real processes: PR requests that arrive while an EX waits queue behind it,
/// although they are compatible with the PR holder (without the queue they would be granted at
/// once, and a stream of them would starve the EX).
#[test]
fn a_waiting_ex_is_not_overtaken_by_later_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let log = tmp.path().join("order");
    let entry = |tag: &str, secs: f64| format!("echo {tag} >> {}; sleep {secs}", log.display());
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let have = fs::read_to_string(&log).map_or(0, |s| s.lines().count());
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {have} of {n} lock holders ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut a = lock_cmd(&store, "q", "PR", &entry("a", 1.5))
        .spawn()
        .unwrap();
    wait_for(1);
    let mut w = lock_cmd(&store, "q", "EX", &entry("w", 0.2))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&ok(&store, &["--json", "locks"]).stdout).unwrap();
        if v.as_array().unwrap().len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the EX waiter never showed up: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200)); // the waiter has queued by now
    let mut readers: Vec<_> = ["b", "c"]
        .iter()
        .map(|t| {
            let c = lock_cmd(&store, "q", "PR", &entry(t, 0.1)).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c
        })
        .collect();
    for c in readers.iter_mut().chain([&mut a, &mut w]) {
        assert!(c.wait().unwrap().success());
    }
    let order: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(order[..2], ["a", "w"], "order of grants: {order:?}");
}
