//! Torture: four workers put, rename and remove through `verfs` while random children are
//! SIGKILLed (at least 50 kills), and `verfs recover` runs (and is killed) concurrently.
//!
//! Proves docs/DESIGN.md "Failure model" (any process may die at any instruction; the store stays
//! consistent) and "Invariants" (after `verfs recover`: no lease of a dead process, no open pack,
//! `fsck` clean); a command that exited 0 is durable and visible (layout [LOG-8], [STORE-1]);
//! a killed command is atomic: a killed put leaves nothing or the whole file, a killed put of a
//! directory all of its files or none (one batch = one record, layout 6.3 step 2), a killed mv
//! leaves the entry at exactly one of its two names, a killed rm leaves it whole or gone;
//! torn log tails (planted as crash point L1 leaves them: a SIGKILL cannot tear one `pwrite`)
//! and half-written packs of killed writers are repaired ([LOG-5], crash points L1, P1, P2, R1);
//! recover is safe while other processes use the store (engine/src/recover.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};

use crate::*;

const WORKERS: usize = 4;
const MIN_KILLS: usize = 50;
const MIN_RUN: Duration = Duration::from_secs(15);
const MAX_RUN: Duration = Duration::from_secs(80);

/// An operation whose process was killed: which end states are acceptable.
#[derive(Debug, Clone)]
enum Uncertain {
    /// Absent, or present with this content.
    File { path: String, sha: String },
    /// Absent, or a directory holding exactly these files.
    Dir {
        path: String,
        files: BTreeMap<String, String>,
    },
    /// The entry at exactly one of the two names.
    Moved {
        src: String,
        dst: String,
        sha: String,
    },
}

#[derive(Default)]
struct Ledger {
    /// Confirmed present (the command exited 0), path -> sha256.
    files: BTreeMap<String, String>,
    /// Confirmed absent.
    gone: BTreeSet<String>,
    uncertain: Vec<Uncertain>,
    done: usize,
    killed: usize,
}

struct Shared {
    st: TestStore,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    kills: AtomicUsize,
}

impl Shared {
    fn fail(&self, msg: String) {
        self.failures.lock().unwrap().push(msg);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Run one verfs command that the killer may SIGKILL: Some(output) if it finished by itself.
fn run(sh: &Shared, slot: &KillSlot, args: &[&std::ffi::OsStr]) -> Option<RunOutput> {
    let mut c = sh.st.command();
    c.args(args);
    let out = run_killable(&mut c, slot, CMD_TIMEOUT);
    if out.killed() {
        sh.kills.fetch_add(1, Ordering::SeqCst);
        return None;
    }
    if !out.success() {
        sh.fail(format!(
            "a verfs command failed without being killed:\n{}",
            out.describe()
        ));
    }
    Some(out)
}

fn worker(sh: &Shared, k: usize, slot: KillSlot, seed: u64) -> Ledger {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut l = Ledger::default();
    let local = sh.st.scratch_dir(&format!("local-w{k}"));
    let os = |s: &str| std::ffi::OsString::from(s);
    let mut n = 0usize;
    while !sh.stop.load(Ordering::SeqCst) {
        n += 1;
        let roll = rng.gen_range(0..100);
        let names: Vec<String> = l.files.keys().cloned().collect();
        if roll < 45 || names.is_empty() {
            // put one file: mostly small, sometimes several chunks.
            let path = format!("/w{k}/p{n:05}");
            let len = if rng.gen_bool(0.2) {
                rng.gen_range(100_000..400_000)
            } else {
                rng.gen_range(0..30_000)
            };
            let lp = local.join(format!("p{n:05}"));
            let sha = write_random_file(&lp, rng.gen(), len);
            match run(sh, &slot, &[&os("put"), lp.as_os_str(), &os(&path)]) {
                Some(_) => {
                    l.files.insert(path, sha);
                    l.done += 1;
                }
                None => {
                    l.uncertain.push(Uncertain::File { path, sha });
                    l.killed += 1;
                }
            }
        } else if roll < 55 {
            // put a directory of a few files: one batch.
            let path = format!("/w{k}/d{n:05}");
            let ld = local.join(format!("d{n:05}"));
            fs::create_dir_all(&ld).unwrap();
            let mut files = BTreeMap::new();
            for j in 0..rng.gen_range(2..6) {
                let sha = write_random_file(
                    &ld.join(format!("f{j}")),
                    rng.gen(),
                    rng.gen_range(0..20_000),
                );
                files.insert(format!("f{j}"), sha);
            }
            match run(sh, &slot, &[&os("put"), ld.as_os_str(), &os(&path)]) {
                Some(_) => {
                    for (f, sha) in &files {
                        l.files.insert(format!("{path}/{f}"), sha.clone());
                    }
                    l.done += 1;
                }
                None => {
                    l.uncertain.push(Uncertain::Dir { path, files });
                    l.killed += 1;
                }
            }
        } else if roll < 75 {
            let src = names[rng.gen_range(0..names.len())].clone();
            let dst = format!("/w{k}/m{n:05}");
            let sha = l.files.remove(&src).unwrap();
            match run(sh, &slot, &[&os("mv"), &os(&src), &os(&dst)]) {
                Some(_) => {
                    l.gone.insert(src);
                    l.files.insert(dst, sha);
                    l.done += 1;
                }
                None => {
                    l.uncertain.push(Uncertain::Moved { src, dst, sha });
                    l.killed += 1;
                }
            }
        } else if roll < 90 {
            let path = names[rng.gen_range(0..names.len())].clone();
            let sha = l.files.remove(&path).unwrap();
            match run(sh, &slot, &[&os("rm"), &os(&path)]) {
                Some(_) => {
                    l.gone.insert(path);
                    l.done += 1;
                }
                None => {
                    l.uncertain.push(Uncertain::File { path, sha });
                    l.killed += 1;
                }
            }
        } else {
            // Read back a confirmed file while everything else goes on (close-to-open).
            let path = &names[rng.gen_range(0..names.len())];
            if let Some(out) = run(sh, &slot, &[&os("cat"), &os(path)]) {
                if out.success() && sha256(&out.stdout) != l.files[path] {
                    sh.fail(format!(
                        "cat {path} during the torture returned other content"
                    ));
                }
                l.done += 1;
            }
        }
    }
    l
}

/// Check the store's tree below `/w<k>` (fetched with `get`) against the ledger.
fn verify(k: usize, l: &Ledger, tree: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut actual: BTreeMap<String, String> = BTreeMap::new();
    fn walk(
        base: &Path,
        p: &Path,
        out: &mut BTreeMap<String, String>,
        dirs: &mut BTreeSet<String>,
    ) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                dirs.insert(rel);
                walk(base, &e.path(), out, dirs);
            } else {
                out.insert(rel, sha256_file(&e.path()));
            }
        }
    }
    let mut dirs = BTreeSet::new();
    if tree.exists() {
        walk(tree, tree, &mut actual, &mut dirs);
    }
    let key = |p: &str| p.strip_prefix(&format!("/w{k}/")).unwrap().to_owned();
    let mut explained: BTreeSet<String> = BTreeSet::new();
    for (p, sha) in &l.files {
        match actual.get(&key(p)) {
            Some(a) if a == sha => {}
            Some(_) => problems.push(format!("{p}: done, but with other content")),
            None => problems.push(format!("{p}: done (exit 0), but missing")),
        }
        explained.insert(key(p));
    }
    for p in &l.gone {
        if actual.contains_key(&key(p)) {
            problems.push(format!(
                "{p}: removed or moved away (exit 0), but still there"
            ));
        }
    }
    for u in &l.uncertain {
        match u {
            Uncertain::File { path, sha } => {
                if let Some(a) = actual.get(&key(path)) {
                    if a != sha {
                        problems.push(format!("{path}: killed op left other content (torn?)"));
                    }
                }
                explained.insert(key(path));
            }
            Uncertain::Dir { path, files } => {
                let d = key(path);
                let present: BTreeMap<&String, &String> = actual
                    .iter()
                    .filter(|(n, _)| n.starts_with(&format!("{d}/")))
                    .collect();
                if !present.is_empty() || dirs.contains(&d) {
                    let want: BTreeMap<String, &String> =
                        files.iter().map(|(f, s)| (format!("{d}/{f}"), s)).collect();
                    let got: BTreeMap<String, &String> =
                        present.iter().map(|(n, s)| ((*n).clone(), *s)).collect();
                    if got != want {
                        problems.push(format!(
                            "{path}: killed put of a directory left part of its batch: {:?} of {:?}",
                            got.keys().collect::<Vec<_>>(),
                            want.keys().collect::<Vec<_>>()
                        ));
                    }
                }
                for f in files.keys() {
                    explained.insert(format!("{d}/{f}"));
                }
            }
            Uncertain::Moved { src, dst, sha } => {
                let (a, b) = (actual.get(&key(src)), actual.get(&key(dst)));
                match (a, b) {
                    (Some(x), None) | (None, Some(x)) if x == sha => {}
                    _ => problems.push(format!(
                        "killed mv {src} -> {dst}: expected the entry at exactly one name, found src={} dst={}",
                        a.is_some(),
                        b.is_some()
                    )),
                }
                explained.insert(key(src));
                explained.insert(key(dst));
            }
        }
    }
    for p in actual.keys() {
        if !explained.contains(p) {
            problems.push(format!("/w{k}/{p}: in the store but never created"));
        }
    }
    problems
}

#[test]
fn random_sigkills_never_break_the_store() {
    let _g = heavy();
    let seed = seed();
    eprintln!(
        "torture seed: {seed} (XPROC_SEED to replay the choices; kill timing is not replayable)"
    );
    let st = TestStore::new();
    for k in 0..WORKERS {
        st.ok(&["mkdir", &format!("/w{k}")]);
    }
    let sh = Arc::new(Shared {
        st,
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        kills: AtomicUsize::new(0),
    });
    let slots: Vec<KillSlot> = (0..=WORKERS).map(|_| KillSlot::default()).collect();
    let start = Instant::now();

    let workers: Vec<_> = (0..WORKERS)
        .map(|k| {
            let (sh, slot) = (sh.clone(), slots[k].clone());
            thread::spawn(move || worker(&sh, k, slot, seed.wrapping_add(k as u64)))
        })
        .collect();
    // A fifth process kind: `verfs recover` now and then, concurrently (and killed too).
    let recoverer = {
        let (sh, slot) = (sh.clone(), slots[WORKERS].clone());
        thread::spawn(move || {
            let mut runs = 0;
            while !sh.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(700));
                if run(&sh, &slot, &["recover".as_ref()]).is_some() {
                    runs += 1;
                }
            }
            runs
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut attempts = 0;
    loop {
        let kills = sh.kills.load(Ordering::SeqCst);
        let t = start.elapsed();
        if sh.stop.load(Ordering::SeqCst) || t > MAX_RUN || (kills >= MIN_KILLS + 10 && t > MIN_RUN)
        {
            break;
        }
        thread::sleep(Duration::from_millis(rng.gen_range(10..200)));
        // Mostly workers; the recoverer now and then.
        let i = if rng.gen_bool(0.1) {
            WORKERS
        } else {
            rng.gen_range(0..WORKERS)
        };
        if slots[i].kill(Signal::SIGKILL) {
            attempts += 1;
        }
    }
    sh.stop.store(true, Ordering::SeqCst);
    let ledgers: Vec<Ledger> = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .collect();
    let recover_runs = recoverer.join().expect("recoverer panicked");
    let failures = sh.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures, first:\n{}",
        failures.len(),
        failures[0]
    );
    let kills = sh.kills.load(Ordering::SeqCst);
    let done: usize = ledgers.iter().map(|l| l.done).sum();
    eprintln!(
        "torture: {:.1}s, {done} ops done, {kills} processes killed ({attempts} kill signals), {} uncertain ops, {recover_runs} concurrent recovers",
        start.elapsed().as_secs_f64(),
        ledgers.iter().map(|l| l.uncertain.len()).sum::<usize>(),
    );
    assert!(
        kills >= MIN_KILLS,
        "only {kills} processes were killed (wanted {MIN_KILLS})"
    );
    assert!(done >= 50, "only {done} operations completed");

    // Every check below runs even when an earlier one failed, so one run reports everything.
    let st = &sh.st;
    let mut bad: Vec<String> = Vec::new();
    // A SIGKILL never tears one `pwrite`, so the kills above cannot leave crash point L1's torn
    // log record: plant one as L1 leaves it, for the final recover to cut ([LOG-5]).
    let (torn_seg, torn_at) = st.plant_torn_log_tail();
    let rec = st.run(&["recover"]);
    if !rec.success() {
        bad.push(format!("final recover failed:\n{}", rec.describe()));
    }
    let seg_len = fs::metadata(&torn_seg).map(|m| m.len()).unwrap_or(0);
    if seg_len != torn_at {
        bad.push(format!(
            "recover left {} at {seg_len} bytes, the torn record at {torn_at} not cut",
            torn_seg.display()
        ));
    }
    let fsck = st.run(&["fsck"]);
    if !fsck.success() || !fsck.stdout.is_empty() {
        bad.push(format!(
            "fsck after recover is not clean:\n{}",
            fsck.describe()
        ));
    }
    let leases = st.lease_folders();
    if !leases.is_empty() {
        bad.push(format!("leases left after recover: {leases:?}"));
    }
    let twopc = fs::read_dir(st.root().join("2pc")).unwrap().count();
    if twopc != 0 {
        bad.push(format!(
            "{twopc} two-phase-commit folders left after recover"
        ));
    }

    let out = st.scratch_dir("verify");
    for (k, l) in ledgers.iter().enumerate() {
        let tree: PathBuf = out.join(format!("w{k}"));
        let got = st.run(&["get".as_ref(), format!("/w{k}").as_ref(), tree.as_os_str()]);
        if got.success() {
            bad.extend(verify(k, l, &tree));
        } else {
            bad.push(format!("get /w{k} failed:\n{}", got.describe()));
        }
    }
    let made = st.run(&["mkdir", "/after"]);
    if !made.success() {
        bad.push(format!(
            "the store no longer takes changes:\n{}",
            made.describe()
        ));
    }
    if !bad.is_empty() {
        // Diagnosis only: does waiting out the lease timeout (10 s) let recover finish the job?
        thread::sleep(Duration::from_millis(10_500));
        let rec2 = st.run(&["recover"]);
        let fsck2 = st.run(&["fsck"]);
        bad.push(format!(
            "diagnosis: after waiting out the lease timeout, recover -> {} and fsck -> {} with {} problem lines:\n{}{}",
            rec2.status,
            fsck2.status,
            fsck2.stdout_str().lines().count(),
            rec2.stdout_str(),
            fsck2.stdout_str()
        ));
        panic!(
            "{} problems after the torture:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
    // A second recover has nothing left to do.
    let again = st.ok(&["recover"]);
    assert!(
        again.stdout.is_empty(),
        "second recover did something:\n{}",
        again.describe()
    );
    st.assert_fsck_clean();
}
