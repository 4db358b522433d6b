//! Unit tests of the lease module (moved out of `mod.rs`; they see its private items).

use super::heartbeat::*;
use super::liveness::*;
use super::*;
use crate::ctlfile;
use std::fs;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

fn cfg() -> LeaseConfig {
    LeaseConfig {
        timeout: Duration::from_millis(500),
        heartbeat_interval: Duration::from_millis(20),
    }
}

#[test]
fn lease_id_parse_and_generate() {
    let id = LeaseId::generate();
    assert_eq!(id.as_str().len(), 16);
    assert_eq!(id.to_string().parse::<LeaseId>().unwrap(), id);
    for bad in [
        "",
        "0123456789abcdeF",
        "0123456789abcde",
        "0123456789abcdefa",
        "g123456789abcdef",
    ] {
        assert!(bad.parse::<LeaseId>().is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<LeaseId>("\"xyz\"").is_err());
}

#[test]
fn proc_stat_with_spaces_and_parens_in_comm() {
    // Fields 4..=21 are 18 numbers, then field 22 (starttime).
    let mut line = String::from("1234 (a) b) (c d) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18");
    line.push_str(" 424242 99 100\n");
    let st = parse_proc_stat(&line).unwrap();
    assert_eq!(st.state, 'S');
    assert_eq!(st.start_ticks, 424242);
    assert!(parse_proc_stat("1 (x) S 1 2").is_none());
    let own = proc_stat(std::process::id()).unwrap().unwrap();
    let text = fs::read_to_string("/proc/self/stat").unwrap();
    let naive: u64 = text.split_whitespace().nth(21).unwrap().parse().unwrap();
    assert_eq!(own.start_ticks, naive);
}

#[test]
fn heartbeat_golden_bytes_and_corruption() {
    // proves [LEASE-4]
    let hb = Heartbeat {
        counter: 1,
        unix_ms: 0x0102_0304_0506_0708,
    };
    let b = hb.encode();
    assert_eq!(&b[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]); // counter, LE
    assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]); // unix_ms, LE
    assert_eq!(&b[16..20], &crc32fast::hash(&b[0..16]).to_le_bytes()); // crc32 of 0..16
    assert_eq!(Heartbeat::decode(&b), Some(hb));
    for i in 0..HEARTBEAT_LEN {
        let mut bad = b;
        bad[i] ^= 0x10;
        assert_eq!(Heartbeat::decode(&bad), None, "flip at {i}");
    }
    assert_eq!(Heartbeat::decode(&b[..19]), None);
}

proptest::proptest! {
    #[test]
    fn heartbeat_roundtrip(counter: u64, unix_ms: u64) {
        let hb = Heartbeat { counter, unix_ms };
        proptest::prop_assert_eq!(Heartbeat::decode(&hb.encode()), Some(hb));
    }
}

#[test]
fn acquire_builds_complete_folder_and_release_removes_it() {
    // proves [LEASE-1], [LEASE-2], [LEASE-9]
    let d = tempfile::tempdir().unwrap();
    let lease = Lease::acquire(d.path(), "test", cfg()).unwrap();
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(lease.id().as_str())]);
    let info: LeaseInfo = ctlfile::read(&lease.dir().join(INFO_FILE), INFO_KIND).unwrap();
    assert_eq!(&info, lease.info());
    assert_eq!(info.pid, std::process::id());
    let hb = read_heartbeat(&lease.dir().join(HEARTBEAT_FILE))
        .unwrap()
        .unwrap();
    assert_eq!(hb.counter, 0);
    lease.heartbeat().unwrap();
    let hb = read_heartbeat(&lease.dir().join(HEARTBEAT_FILE))
        .unwrap()
        .unwrap();
    assert_eq!(hb.counter, 1);
    lease.check_valid().unwrap();
    lease.release().unwrap();
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn claim_fences_and_has_exactly_one_winner() {
    // proves [LEASE-6], [LEASE-8]
    let d = tempfile::tempdir().unwrap();
    let lease = Lease::acquire(d.path(), "victim", cfg()).unwrap();
    let id = lease.id().clone();
    let cleaners: Vec<LeaseId> = (0..8).map(|_| LeaseId::generate()).collect();
    let wins = AtomicUsize::new(0);
    let dp = d.path();
    thread::scope(|s| {
        for c in &cleaners {
            let (wins, id) = (&wins, &id);
            s.spawn(move || {
                if claim(dp, id, c).unwrap().is_some() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    let err = lease.check_valid().unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(lease.heartbeat().unwrap_err().is_fenced());
    let entries = list(d.path()).unwrap();
    assert_eq!(entries.len(), 1);
    let LeaseState::Claimed { cleaner } = &entries[0].state else {
        panic!("{entries:?}")
    };
    let claimed = Claimed::open(d.path(), &id, cleaner).unwrap().unwrap();
    assert!(matches!(&claimed.info, EntryInfo::Valid(i) if i.id == id));
    claimed.finish().unwrap();
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn abandoned_claim_is_reclaimed_only_when_cleaner_is_gone() {
    // proves [LEASE-8]
    let d = tempfile::tempdir().unwrap();
    let victim = Lease::acquire(d.path(), "victim", cfg()).unwrap();
    let cleaner = Lease::acquire(d.path(), "cleaner", cfg()).unwrap();
    let me = LeaseId::generate();
    let vid = victim.id().clone();
    claim(d.path(), &vid, cleaner.id()).unwrap().unwrap();
    let err = reclaim_abandoned(d.path(), &vid, cleaner.id(), &me).unwrap_err();
    assert!(matches!(err, ClaimError::CleanerLive { .. }));
    let cid = cleaner.id().clone();
    cleaner.release().unwrap();
    let c = reclaim_abandoned(d.path(), &vid, &cid, &me)
        .unwrap()
        .unwrap();
    assert_eq!(c.path, d.path().join(claimed_name(&vid, &me)));
    assert!(reclaim_abandoned(d.path(), &vid, &cid, &me)
        .unwrap()
        .is_none());
}

#[test]
fn list_reports_states_and_skips_unknown_names() {
    // proves [LEASE-3]
    let d = tempfile::tempdir().unwrap();
    // Generous timeout: a loaded machine must not make a fresh folder look dead.
    let slow = LeaseConfig {
        timeout: Duration::from_secs(60),
        ..cfg()
    };
    let live = Lease::acquire(d.path(), "live", cfg()).unwrap();
    let partial = LeaseId::generate();
    fs::create_dir(d.path().join(format!(".new-{partial}"))).unwrap();
    fs::create_dir(d.path().join("junk")).unwrap();
    fs::write(d.path().join(".x.tmp-1-2"), b"").unwrap();
    let entries = list(d.path()).unwrap();
    assert_eq!(entries.len(), 2);
    let p = entries.iter().find(|e| e.id == partial).unwrap();
    assert_eq!(p.state, LeaseState::Partial);
    assert_eq!(p.info, EntryInfo::Missing);
    // A fresh partial folder is young, so it is not cleanable yet.
    assert_eq!(p.liveness(&slow, SystemTime::now()), Liveness::Alive);
    assert!(p
        .liveness(&slow, SystemTime::now() + Duration::from_secs(120))
        .is_dead());
    let l = entries.iter().find(|e| &e.id == live.id()).unwrap();
    assert_eq!(l.state, LeaseState::Live);
    assert_eq!(l.liveness(&slow, SystemTime::now()), Liveness::Alive);
    assert!(claim_partial(d.path(), &partial, live.id())
        .unwrap()
        .unwrap()
        .finish()
        .is_ok());
}

fn info_for(pid: u32, start: u64) -> LeaseInfo {
    let h = local_host();
    LeaseInfo {
        id: LeaseId::generate(),
        pid,
        pid_start_ticks: start,
        node: h.node.clone(),
        host: h.host.clone(),
        boot_id: h.boot_id.clone(),
        pid_ns: h.pid_ns.clone(),
        kind: "t".into(),
        started_unix_ms: unix_ms(SystemTime::now()),
    }
}

#[test]
fn liveness_rules() {
    // proves [LEASE-5]
    let c = cfg();
    let now = SystemTime::now();
    let me = std::process::id();
    let ticks = proc_stat(me).unwrap().unwrap().start_ticks;
    let fresh = Some(Heartbeat {
        counter: 1,
        unix_ms: unix_ms(now),
    });
    assert_eq!(
        liveness(&info_for(me, ticks), fresh, &c, now),
        Liveness::Alive
    );
    // Reused pid: same pid, other start time.
    assert!(liveness(&info_for(me, ticks + 1), fresh, &c, now).is_dead());
    // A pid that cannot exist (above pid_max).
    assert!(liveness(&info_for(i32::MAX as u32, 1), fresh, &c, now).is_dead());
    assert!(liveness(&info_for(0, 1), fresh, &c, now).is_dead());
    // Stale heartbeat although the pid is alive (a SIGSTOPped process).
    let old = Some(Heartbeat {
        counter: 1,
        unix_ms: unix_ms(now) - 5_000,
    });
    assert!(liveness(&info_for(me, ticks), old, &c, now).is_dead());
    // No heartbeat: the info's start time counts.
    let mut i = info_for(me, ticks);
    assert_eq!(liveness(&i, None, &c, now), Liveness::Alive);
    i.started_unix_ms -= 5_000;
    assert!(liveness(&i, None, &c, now).is_dead());
    // Same hostname, other boot: rebooted.
    let mut i = info_for(me, ticks);
    i.boot_id = "00000000-0000-0000-0000-000000000000".into();
    assert!(liveness(&i, fresh, &c, now).is_dead());
    // Other node with a fresh heartbeat: alive, pid is not checked.
    i.node = "elsewhere".into();
    i.pid = i32::MAX as u32;
    assert_eq!(liveness(&i, fresh, &c, now), Liveness::Alive);
    assert!(liveness(&i, old, &c, now).is_dead());
    // Another node on this very kernel (same boot id and pid namespace, `VERFS_NODE` differs):
    // its pid names nothing here, so only the heartbeat counts.
    let mut i = info_for(i32::MAX as u32, 1);
    i.node = format!("{}-other", i.node);
    assert!(!runs_here(&i));
    assert_eq!(liveness(&i, fresh, &c, now), Liveness::Alive);
    assert!(liveness(&i, old, &c, now).is_dead());
    // A lease from before nodes were recorded: its hostname stands for the node.
    let mut i = info_for(0, 1);
    i.node = String::new();
    assert!(runs_here(&i));
    assert!(liveness(&i, fresh, &c, now).is_dead());
}

#[test]
fn node_identity_comes_from_the_environment_first() {
    assert_eq!(node_identity(Some(" h1 ".into()), "box"), "h1");
    let fallback = node_identity(Some("  ".into()), "box");
    assert!(
        fallback.starts_with("machine-") || fallback == "host-box",
        "{fallback}"
    );
    assert_eq!(node_identity(None, "box"), fallback);
}

#[test]
fn zombie_child_is_dead() {
    // proves [LEASE-5]: a SIGKILLed child that nobody reaped yet must count as dead.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let ticks = proc_stat(pid).unwrap().unwrap().start_ticks;
    let now = SystemTime::now();
    let fresh = Some(Heartbeat {
        counter: 1,
        unix_ms: unix_ms(now),
    });
    assert_eq!(
        liveness(&info_for(pid, ticks), fresh, &cfg(), now),
        Liveness::Alive
    );
    child.kill().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !liveness(&info_for(pid, ticks), fresh, &cfg(), SystemTime::now()).is_dead() {
        assert!(
            std::time::Instant::now() < deadline,
            "zombie never seen dead"
        );
        thread::sleep(Duration::from_millis(5));
    }
    child.wait().unwrap();
}

#[test]
fn keeper_heartbeats_ticks_reports_fencing_once_and_stops_fast() {
    // proves [LEASE-7]
    let d = tempfile::tempdir().unwrap();
    let lease = Arc::new(Lease::acquire(d.path(), "k", cfg()).unwrap());
    let fenced = Arc::new(AtomicUsize::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let (f2, t2) = (fenced.clone(), ticks.clone());
    let keeper = Lease::start_keeper(
        lease.clone(),
        Box::new(move || {
            f2.fetch_add(1, Ordering::SeqCst);
        }),
        Some(Box::new(move || {
            t2.fetch_add(1, Ordering::SeqCst);
        })),
    )
    .unwrap();
    let hb_path = lease.dir().join(HEARTBEAT_FILE);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while read_heartbeat(&hb_path).unwrap().unwrap().counter < 3 {
        assert!(std::time::Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    assert!(ticks.load(Ordering::SeqCst) >= 2);
    claim(d.path(), lease.id(), &LeaseId::generate())
        .unwrap()
        .unwrap();
    while fenced.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "fencing never reported"
        );
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(fenced.load(Ordering::SeqCst), 1);
    keeper.stop();

    // A keeper with a long interval still stops at once.
    let slow = LeaseConfig {
        timeout: Duration::from_secs(600),
        ..cfg()
    };
    let slow = LeaseConfig {
        heartbeat_interval: Duration::from_secs(300),
        ..slow
    };
    let l2 = Arc::new(Lease::acquire(d.path(), "k2", slow).unwrap());
    let k2 = Lease::start_keeper(l2.clone(), Box::new(|| {}), None).unwrap();
    let t0 = std::time::Instant::now();
    drop(k2);
    assert!(t0.elapsed() < Duration::from_secs(2));
    Arc::try_unwrap(l2).unwrap().release().unwrap();
}
