//! File-voted two-phase commit among real processes (layout "Two-phase commit", [2PC-1]..[2PC-6]).
//!
//! The coordinator is `xproc-agent propose`, participants are `xproc-agent participant` (they vote
//! from their lease keeper's tick, as the engine does), and the engine-level tests use `verfs
//! checkpoint` (which proposes log truncation) with `xproc-agent hold` processes voting through
//! the engine's own handler.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

const TIMEOUT_MS: u64 = 20_000;

struct Scenario {
    st: TestStore,
    pool: Pool,
    participants: Vec<usize>,
}

fn participants(votes: &[&str]) -> Scenario {
    let st = TestStore::new();
    let mut pool = Pool::new(st.scratch(), agent());
    let root = st.root().to_path_buf();
    let participants: Vec<usize> = votes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            pool.spawn_agent(
                &format!("participant{i}-{v}"),
                &[
                    "participant".as_ref(),
                    root.as_os_str(),
                    "--vote".as_ref(),
                    v.as_ref(),
                ],
            )
        })
        .collect();
    for &p in &participants {
        pool.wait_event(p, "ready", Duration::from_secs(30));
    }
    Scenario {
        st,
        pool,
        participants,
    }
}

/// Start `xproc-agent propose` in the pool (so a hang is caught and it is killed on failure).
fn start_propose(s: &mut Scenario, extra: &[&str]) -> usize {
    let root = s.st.root().to_path_buf();
    let mut args = vec![
        "propose".as_ref(),
        root.as_os_str(),
        "--kind".as_ref(),
        "test".as_ref(),
        "--timeout-ms".as_ref(),
    ];
    let t = TIMEOUT_MS.to_string();
    args.push(t.as_ref());
    args.extend(extra.iter().map(|e| std::ffi::OsStr::new(*e)));
    s.pool.spawn_agent("coordinator", &args)
}

fn outcome(s: &mut Scenario, coord: usize) -> Value {
    let f = s
        .pool
        .wait(coord, Duration::from_millis(TIMEOUT_MS + 30_000));
    assert!(f.status.success(), "{}", f.describe());
    let v: Value =
        serde_json::from_slice(&f.stdout).unwrap_or_else(|e| panic!("{e}: {}", f.describe()));
    assert!(v["finish_error"].is_null(), "{v}");
    v
}

/// [2PC-2], [2PC-3]: every participant votes once; all Commit -> Commit; the transaction folder
/// is gone after finish [2PC-6].
#[test]
fn all_participants_commit() {
    let mut s = participants(&["commit", "commit", "commit"]);
    let c = start_propose(&mut s, &[]);
    let v = outcome(&mut s, c);
    assert_eq!(v["decision"]["decision"], "commit", "{v}");
    for &p in &s.participants {
        let votes: Vec<_> = s
            .pool
            .results(p)
            .into_iter()
            .filter(|r| r["event"] == "vote")
            .collect();
        assert_eq!(votes.len(), 1, "participant {p} voted {votes:?}");
        assert_eq!(votes[0]["txn"], v["txn"]);
    }
    assert_eq!(
        fs::read_dir(s.st.root().join("2pc")).unwrap().count(),
        0,
        "2pc/ not empty after finish"
    );
}

/// Layout 2PC step 4: any Abort vote decides Abort at once, long before the timeout.
#[test]
fn one_abort_vote_aborts_fast() {
    let mut s = participants(&["commit", "abort", "commit"]);
    let c = start_propose(&mut s, &[]);
    let v = outcome(&mut s, c);
    assert_eq!(v["decision"]["decision"], "abort", "{v}");
    let reason = v["decision"]["reason"].as_str().unwrap();
    assert!(reason.contains("voted abort"), "{reason}");
    let ms = v["elapsed_ms"].as_u64().unwrap();
    assert!(
        ms < TIMEOUT_MS / 4,
        "abort took {ms} ms: not failing fast (timeout {TIMEOUT_MS} ms)"
    );
}

/// [2PC-4]: a participant SIGKILLed mid-vote does not block: the coordinator finds it dead,
/// cleans its lease (claim + finish, which also fences it [LEASE-6]) and decides without it.
#[test]
fn participant_killed_mid_vote_is_cleaned_by_the_coordinator() {
    let mut s = participants(&["commit", "die", "commit"]);
    let dying = s.participants[1];
    let dying_lease = s.pool.wait_event(dying, "ready", Duration::from_secs(1))["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = start_propose(&mut s, &[]);
    let v = outcome(&mut s, c);
    assert_eq!(v["decision"]["decision"], "commit", "{v}");
    assert!(v["elapsed_ms"].as_u64().unwrap() < TIMEOUT_MS / 2, "{v}");
    assert_eq!(v["cleaned"], serde_json::json!([dying_lease]), "{v}");
    assert!(s.pool.results(dying).iter().any(|r| r["event"] == "dying"));
    let f = s.pool.wait(dying, Duration::from_secs(5));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&f.status),
        Some(libc::SIGKILL)
    );
    assert!(
        !s.st
            .lease_folders()
            .iter()
            .any(|n| n.starts_with(&dying_lease)),
        "{:?}",
        s.st.lease_folders()
    );
}

/// [2PC-4] with cleaning by `verfs recover` instead: a coordinator that does not clean dead
/// participants waits (no decision while the dead lease exists), and decides as soon as recover
/// has claimed the dead participant's lease (docs/DESIGN.md: "exactly-one cleaner for a dead process").
#[test]
fn participant_killed_mid_vote_is_cleaned_by_recover() {
    let mut s = participants(&["commit", "die"]);
    let dying = s.participants[1];
    let c = start_propose(&mut s, &["--no-clean-dead"]);
    s.pool.wait_event(dying, "dying", Duration::from_secs(30));
    let t0 = Instant::now();
    while !s.pool.has_exited(dying) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "participant did not die"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !s.pool.has_exited(c),
        "coordinator decided although the dead lease was not cleaned"
    );
    let rec = s.st.ok(&["recover"]);
    assert!(
        rec.stdout_str().contains("cleaned up after dead process"),
        "{}",
        rec.describe()
    );
    let started = Instant::now();
    let v = outcome(&mut s, c);
    assert_eq!(v["decision"]["decision"], "commit", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no decision {:?} after recover",
        started.elapsed()
    );
    assert!(v["elapsed_ms"].as_u64().unwrap() < TIMEOUT_MS, "{v}");
}

/// A store with many small log segments, for the checkpoint tests.
fn store_with_segments() -> TestStore {
    let st = TestStore::new();
    st.set_config("log", "segment_size", "4096");
    st.set_config("batch", "max_files", "1");
    st.set_config("two_phase", "timeout_ms", &TIMEOUT_MS.to_string());
    let local = st.scratch_dir("small");
    for j in 0..60 {
        write_random_file(&local.join(format!("f{j:02}")), j, 100 + j as usize);
    }
    st.ok(&["put".as_ref(), local.as_os_str(), "/small".as_ref()]);
    let segs = st.log_segments();
    assert!(segs.len() >= 4, "expected several segments, got {segs:?}");
    st
}

fn hold(pool: &mut Pool, st: &TestStore, name: &str, probe: &str) -> usize {
    let root = st.root().to_path_buf();
    let i = pool.spawn_agent(
        name,
        &[
            "hold".as_ref(),
            root.as_os_str(),
            "--probe".as_ref(),
            probe.as_ref(),
        ],
    );
    pool.wait_event(i, "ready", Duration::from_secs(30));
    i
}

/// Layout "Checkpoint" + [2PC-2]: with two live processes holding the store open, `verfs
/// checkpoint` proposes log truncation, both vote Commit (after reading up to the head), and the
/// covered segments are deleted; the live processes keep working on the truncated log.
#[test]
fn checkpoint_truncates_the_log_with_live_voters() {
    let st = store_with_segments();
    let before = st.log_segments();
    let mut pool = Pool::new(st.scratch(), agent());
    let a = hold(&mut pool, &st, "hold-a", "/probe-a");
    let b = hold(&mut pool, &st, "hold-b", "/probe-b");
    let out = st.ok(&["checkpoint"]);
    assert!(
        out.elapsed < Duration::from_millis(TIMEOUT_MS / 2),
        "checkpoint waited: {}",
        out.describe()
    );
    let after = st.log_segments();
    assert!(
        after.len() <= 2,
        "segments left after truncation: {after:?} (before: {before:?})"
    );
    for old in &before[..before.len() - 1] {
        assert!(
            !after.contains(old),
            "covered segment {old} survived: {after:?}"
        );
    }
    assert!(fs::read_dir(st.root().join("checkpoints")).unwrap().count() >= 1);
    assert_eq!(fs::read_dir(st.root().join("2pc")).unwrap().count(), 0);

    fs::write(st.scratch().join("go-commit"), b"").unwrap();
    for i in [a, b] {
        let f = pool.wait(i, Duration::from_secs(30));
        assert!(f.status.success(), "{}", f.describe());
    }
    let names = st.ls("/");
    assert!(
        names.contains(&"probe-a".to_owned()) && names.contains(&"probe-b".to_owned()),
        "{names:?}"
    );
    assert_eq!(st.ls("/small").len(), 60);
    st.assert_fsck_clean();
}

/// The other half of [2PC-2] for checkpoints: the covered segments are deleted only after every
/// live process voted. A live process that cannot vote (SIGSTOPped: alive by its pid, its lease
/// not yet expired) keeps every segment until the two-phase timeout decides Abort; once it runs
/// again, the next checkpoint truncates. A checkpoint that deleted segments without asking would
/// delete them at once, under a process that may still need them.
#[test]
fn checkpoint_waits_for_the_vote_of_a_stalled_live_process() {
    const SHORT_MS: u64 = 2_000;
    let st = store_with_segments();
    // Shorter than the lease timeout (10 s), so the stalled process stays live throughout.
    st.set_config("two_phase", "timeout_ms", &SHORT_MS.to_string());
    let before = st.log_segments();
    let mut pool = Pool::new(st.scratch(), agent());
    let a = hold(&mut pool, &st, "hold-running", "/probe-running");
    let b = hold(&mut pool, &st, "hold-stalled", "/probe-stalled");
    assert!(pool.sigstop(b), "SIGSTOP did not reach the holder");
    let out = st.ok(&["checkpoint"]);
    let after = st.log_segments();
    assert!(
        out.elapsed >= Duration::from_millis(SHORT_MS * 9 / 10),
        "checkpoint decided in {:.2}s without the stalled process's vote (timeout {SHORT_MS} ms):\n{}",
        out.elapsed.as_secs_f64(),
        out.describe()
    );
    for seg in &before {
        assert!(
            after.contains(seg),
            "segment {seg} deleted while a live process had not voted: {after:?} (before: {before:?})"
        );
    }
    assert_eq!(fs::read_dir(st.root().join("2pc")).unwrap().count(), 0);
    assert!(pool.sigcont(b), "SIGCONT did not reach the holder");
    let again = st.ok(&["checkpoint"]);
    let truncated = st.log_segments();
    assert!(
        truncated.len() <= 2 && again.elapsed < Duration::from_millis(SHORT_MS),
        "once every live process votes, the checkpoint truncates at once: {truncated:?} in {:.2}s",
        again.elapsed.as_secs_f64()
    );
    fs::write(st.scratch().join("go-commit"), b"").unwrap();
    for i in [a, b] {
        let f = pool.wait(i, Duration::from_secs(30));
        assert!(f.status.success(), "{}", f.describe());
    }
    let names = st.ls("/");
    assert!(
        names.contains(&"probe-running".to_owned()) && names.contains(&"probe-stalled".to_owned()),
        "{names:?}"
    );
    st.assert_fsck_clean();
}

/// [2PC-4] in the engine: "one that exists but is dead by `liveness` is passed to
/// `on_dead_participant` (the engine claims and cleans it)". A SIGKILLed process that nobody
/// cleaned yet must not hold log truncation hostage until the two-phase timeout.
#[test]
fn checkpoint_is_not_blocked_by_a_dead_process() {
    let st = store_with_segments();
    let before = st.log_segments();
    let mut pool = Pool::new(st.scratch(), agent());
    let alive = hold(&mut pool, &st, "hold-alive", "/probe-alive");
    let dead = hold(&mut pool, &st, "hold-dead", "/probe-dead");
    pool.sigkill(dead);
    pool.wait(dead, Duration::from_secs(5));
    let out = st.ok(&["checkpoint"]);
    let after = st.log_segments();
    assert!(
        out.elapsed < Duration::from_millis(TIMEOUT_MS / 2) && after.len() <= 2,
        "checkpoint took {:.1}s (two-phase timeout {} ms) and left segments {after:?} (before: {before:?}):\n{}",
        out.elapsed.as_secs_f64(),
        TIMEOUT_MS,
        out.describe()
    );
    pool.sigkill(alive);
    st.ok(&["recover"]);
    st.assert_fsck_clean();
}
