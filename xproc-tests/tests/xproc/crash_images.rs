//! Crash images (power loss): every state a power cut during one real run could leave.
//!
//! One run of real `verfs` commands (put, mkdir, mv, rm, snapshot create/delete, checkpoint, two
//! puts at once, gc deleting and rewriting packs; 4 KiB log segments, so the log rolls and
//! checkpoints delete segments) under the LD_PRELOAD recorder (`shim/verfs_rec.c`) logs every
//! write, truncate, fsync and directory change under the store, in kernel order. The driver marks
//! in the same log when each command starts and when it exited 0 (acknowledged: everything it
//! changed is durable, data-layout.md [LOG-8]). `verfs_xproc_tests::crash` turns the log into
//! crash images: at cut points between the steps, everything synced survives and the unsynced
//! rest survives as a variant says (none, all, each prefix, the last write torn / torn then zeros
//! / zeroed, names without data, data without names, random per-inode prefixes). Each distinct
//! image is written out and checked with the real binary:
//!
//! 1. the store opens and reads: `get /` exits 0 and every path is as the acknowledged commands
//!    left it; a path a command in flight changes is old or new, whole (a command that is one
//!    transaction - mv, rm, mkdir - is all old or all new); `ls /.snapshots` and `get` of each
//!    snapshot: an acknowledged snapshot is there with its exact tree, an in-flight one is
//!    absent or whole;
//! 2. `verfs recover` exits 0, then `verfs fsck` is clean (data-layout.md section 8);
//! 3. the store still takes a commit (`mkdir`), seen by `ls`.
//!
//! Under power loss this proves [LOG-8] (acknowledged means durable), [STORE-1] and [PACK-9]
//! (pack bytes, then the index, are durable before what names them), [MAN-2] (the names of a
//! manifest's temps survive once it commits) and [JNL-4] (a journal action whose End was lost is
//! cleaned up again, harmlessly).
//!
//! Knobs: `VERFS_CRASH_IMAGES=N` images to check (default 240), `VERFS_CRASH_SEED=S` (default:
//! time; printed) for the choice of images and the random variants, `VERFS_CRASH_RANDOM=R` random
//! variants per cut (default 2), `VERFS_CRASH_KEEP=DIR` keeps every failing image there.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use verfs_xproc_tests::crash::{self, Entry, Image, Recording, Sweep, Tree, Variant};

use crate::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `verfs` under the recorder and writes the driver's marks into its log.
struct Recorder {
    root: PathBuf,
    log: PathBuf,
}

impl Recorder {
    fn command(&self, args: &[OsString]) -> Command {
        let mut c = Command::new(verfs_bin());
        c.arg("-s")
            .arg(&self.root)
            .args(args)
            .env_remove("VERFS_STORE")
            .env("LD_PRELOAD", crash::shim_path())
            .env("VERFS_REC_ROOT", &self.root)
            .env("VERFS_REC_LOG", &self.log);
        c
    }

    /// Append a mark; under the log's flock like the recorder, so it is ordered with its records.
    fn mark(&self, text: &str) {
        let f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .unwrap();
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap()
            .write_all(&crash::encode(
                std::process::id() as i32,
                crash::op::MARK,
                0,
                0,
                0,
                text.as_bytes(),
                b"",
            ))
            .unwrap();
    }
}

/// What a local directory holds, as [`Tree::listing`] reports a store image.
fn scan_local(dir: &Path) -> BTreeMap<String, Entry> {
    let (t, _) = Tree::scan(dir).unwrap();
    t.listing()
}

/// What one command changes, and how the check treats it.
struct Cmd {
    name: String,
    /// Paths it changes: the new entry, or `None` for removed.
    delta: BTreeMap<String, Option<Entry>>,
    /// One transaction: in flight it is all old or all new.
    atomic: bool,
    snapshot: Option<SnapOp>,
}

enum SnapOp {
    Create(String, BTreeMap<String, Entry>),
    Delete(String),
}

/// The workload: real commands, with a local mirror that receives the same changes.
struct Workload {
    rec: Recorder,
    src: PathBuf,
    mirror: PathBuf,
    cmds: Vec<Cmd>,
}

impl Workload {
    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Run commands at once (each acknowledged when it exits 0); `mirror` updates the mirror
    /// once per command, in the same order.
    fn run(&mut self, batch: &[(&[&str], bool)], mirror: &[&dyn Fn(&Path)]) {
        let first = self.cmds.len();
        let mut children = Vec::new();
        for (k, (args, atomic)) in batch.iter().enumerate() {
            let before = scan_local(&self.mirror);
            mirror[k](&self.mirror);
            let after = scan_local(&self.mirror);
            let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            let delta = keys
                .into_iter()
                .filter(|p| before.get(*p) != after.get(*p))
                .map(|p| (p.clone(), after.get(p).cloned()))
                .collect();
            let snapshot = match args {
                ["snapshot", "create", n] => Some(SnapOp::Create(n.to_string(), after.clone())),
                ["snapshot", "delete", n] => Some(SnapOp::Delete(n.to_string())),
                _ => None,
            };
            self.cmds.push(Cmd {
                name: args.join(" "),
                delta,
                atomic: *atomic,
                snapshot,
            });
        }
        for (k, (args, _)) in batch.iter().enumerate() {
            let i = first + k;
            self.rec.mark(&format!("begin {i}"));
            let mut c = self.rec.command(&Self::os(args));
            c.current_dir(&self.src);
            let name = self.cmds[i].name.clone();
            children.push((
                i,
                name,
                std::thread::spawn(move || run_with_timeout(c, CMD_TIMEOUT)),
            ));
        }
        for (i, name, h) in children {
            let out = h.join().unwrap();
            assert!(
                out.success(),
                "workload command {i} `{name}` failed:\n{}",
                out.describe()
            );
            self.rec.mark(&format!("ack {i}"));
        }
    }
}

/// Which commands had started and which were acknowledged at a cut.
struct AtCut {
    begun: Vec<bool>,
    acked: Vec<bool>,
}

fn at_cut(rec: &Recording, cut: usize, n: usize) -> AtCut {
    let mut a = AtCut {
        begun: vec![false; n],
        acked: vec![false; n],
    };
    for m in crash::marks_before(rec, cut) {
        if let Some(i) = m.strip_prefix("begin ") {
            a.begun[i.parse::<usize>().unwrap()] = true;
        } else if let Some(i) = m.strip_prefix("ack ") {
            a.acked[i.parse::<usize>().unwrap()] = true;
        }
    }
    a
}

/// The paths where two listings differ, one per line.
fn listing_diff(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("/{k}: {} vs {}\n", describe(a.get(k)), describe(b.get(k))))
        .collect()
}

fn describe(e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(Entry::Dir) => "a directory".into(),
        Some(Entry::File { len, sha256 }) => {
            format!("a file of {len} bytes sha256 {}", &sha256[..12])
        }
        Some(Entry::Symlink(t)) => format!("a symlink to {:?}", String::from_utf8_lossy(t)),
    }
}

/// The store tree an image shows against what the commands acknowledged (module doc, point 1).
fn check_tree(actual: &BTreeMap<String, Entry>, cmds: &[Cmd], at: &AtCut) -> Result<(), String> {
    let mut expect: BTreeMap<String, Entry> = BTreeMap::new();
    for (i, c) in cmds.iter().enumerate() {
        if at.acked[i] {
            for (p, e) in &c.delta {
                match e {
                    Some(e) => expect.insert(p.clone(), e.clone()),
                    None => expect.remove(p),
                };
            }
        }
    }
    let inflight: Vec<usize> = (0..cmds.len())
        .filter(|&i| at.begun[i] && !at.acked[i])
        .collect();
    let mut paths: BTreeSet<&String> = actual.keys().chain(expect.keys()).collect();
    for &i in &inflight {
        paths.extend(cmds[i].delta.keys());
    }
    let mut problems = Vec::new();
    for p in paths {
        let got = actual.get(p);
        let mut allowed = vec![expect.get(p)];
        for &i in &inflight {
            if let Some(e) = cmds[i].delta.get(p) {
                allowed.push(e.as_ref());
            }
        }
        if !allowed.contains(&got) {
            let want: Vec<String> = allowed.iter().map(|e| describe(*e)).collect();
            problems.push(format!(
                "/{p}: {} (expected {})",
                describe(got),
                want.join(" or ")
            ));
        }
    }
    for &i in &inflight {
        let c = &cmds[i];
        if c.atomic {
            let new = c.delta.iter().all(|(p, e)| actual.get(p) == e.as_ref());
            let old = c.delta.keys().all(|p| actual.get(p) == expect.get(p));
            if !new && !old {
                problems.push(format!("`{}` (one transaction) is half applied", c.name));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// An image written to disk, with what the check needs to know about its cut.
struct Job {
    n: usize,
    dir: PathBuf,
    what: String,
    at: AtCut,
}

fn verfs(store: &Path, args: &[&std::ffi::OsStr]) -> RunOutput {
    let mut c = Command::new(verfs_bin());
    c.arg("-s").arg(store).args(args).env_remove("VERFS_STORE");
    run_with_timeout(c, CMD_TIMEOUT)
}

/// Points 1-3 of the module doc on one image.
fn check_image(job: &Job, cmds: &[Cmd]) -> Result<(), String> {
    let store = job.dir.join("store");
    let fail = |step: &str, out: &RunOutput| Err(format!("{step}:\n{}", out.describe()));
    let out_dir = job.dir.join("get");
    let got = verfs(&store, &["get".as_ref(), "/".as_ref(), out_dir.as_os_str()]);
    if !got.success() {
        return fail("`get /` of the image", &got);
    }
    check_tree(&scan_local(&out_dir), cmds, &job.at)
        .map_err(|e| format!("tree after the crash:\n{e}"))?;
    let ls = verfs(&store, &["ls".as_ref(), "/.snapshots".as_ref()]);
    if !ls.success() {
        return fail("`ls /.snapshots`", &ls);
    }
    let present: BTreeSet<String> = ls.stdout_str().lines().map(str::to_owned).collect();
    for (i, c) in cmds.iter().enumerate() {
        let Some(SnapOp::Create(name, tree)) = &c.snapshot else {
            continue;
        };
        let del = cmds
            .iter()
            .position(|d| matches!(&d.snapshot, Some(SnapOp::Delete(n)) if n == name));
        let deleting = del.is_some_and(|d| job.at.begun[d]);
        let deleted = del.is_some_and(|d| job.at.acked[d]);
        let must = job.at.acked[i] && !deleting;
        let may = job.at.begun[i] && !deleted;
        let here = present.contains(name);
        if must && !here {
            return Err(format!(
                "acknowledged snapshot {name} is missing (ls: {present:?})"
            ));
        }
        if here && !may {
            return Err(format!(
                "snapshot {name} is there but was never created or its deletion was acknowledged"
            ));
        }
        if here {
            let d = job.dir.join(format!("snap-{name}"));
            let g = verfs(
                &store,
                &[
                    "get".as_ref(),
                    format!("/.snapshots/{name}").as_ref(),
                    d.as_os_str(),
                ],
            );
            if !g.success() {
                return fail(&format!("`get /.snapshots/{name}`"), &g);
            }
            let actual = scan_local(&d);
            if &actual != tree {
                return Err(format!(
                    "snapshot {name} differs from the tree it was created from:\n got {actual:?}\nwant {tree:?}"
                ));
            }
        }
    }
    let r = verfs(&store, &["recover".as_ref()]);
    if !r.success() {
        return fail("`recover`", &r);
    }
    let f = verfs(&store, &["fsck".as_ref()]);
    if !f.success() || !f.stdout.is_empty() {
        return fail("`fsck` after `recover`", &f);
    }
    let m = verfs(&store, &["mkdir".as_ref(), "/after-the-crash".as_ref()]);
    if !m.success() {
        return fail("a commit after `recover` (`mkdir /after-the-crash`)", &m);
    }
    let l = verfs(&store, &["ls".as_ref(), "/".as_ref()]);
    if !l.success() || !l.stdout_str().lines().any(|n| n == "after-the-crash") {
        return fail("`ls /` after the commit", &l);
    }
    Ok(())
}

/// Chooses `n` images: the durable image right after every acknowledgement (the state the
/// commands promised), then round robin over the variant classes, each shuffled by `seed`.
fn choose(cands: &[(Image, u64)], rec: &Recording, n: usize, seed: u64) -> Vec<Image> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acks: BTreeSet<usize> = (0..rec.steps.len())
        .filter(|&i| matches!(&rec.steps[i], crash::Step::Mark(m) if m.starts_with("ack ")))
        .map(|i| i + 1)
        .collect();
    let mut chosen: Vec<Image> = Vec::new();
    let mut by_class: BTreeMap<&str, Vec<Image>> = BTreeMap::new();
    for (img, _) in cands {
        if img.variant == Variant::Durable
            && (acks.contains(&img.cut) || img.cut == rec.steps.len())
        {
            chosen.push(*img);
        } else {
            by_class.entry(img.variant.class()).or_default().push(*img);
        }
    }
    for v in by_class.values_mut() {
        v.shuffle(&mut rng);
        v.reverse();
    }
    while chosen.len() < n && by_class.values().any(|v| !v.is_empty()) {
        for v in by_class.values_mut() {
            if chosen.len() < n {
                if let Some(img) = v.pop() {
                    chosen.push(img);
                }
            }
        }
    }
    chosen.sort_by_key(|i| i.cut);
    chosen
}

/// Proves data-layout.md section 8 under power loss: from every image, the store opens, `recover`
/// and `fsck` are clean, and nothing acknowledged is lost ([LOG-8], [STORE-1]).
#[test]
fn crash_images() {
    let started = Instant::now();
    let _heavy = heavy();
    let n_images = env_num("VERFS_CRASH_IMAGES", 240) as usize;
    let randoms = env_num("VERFS_CRASH_RANDOM", 2) as usize;
    let seed = std::env::var("VERFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(verfs_xproc_tests::seed);
    eprintln!("crash images: VERFS_CRASH_SEED={seed} VERFS_CRASH_IMAGES={n_images} VERFS_CRASH_RANDOM={randoms}");

    let st = TestStore::new();
    // Small segments: the run rolls the log (crash case L3) and checkpoints delete segments.
    st.set_config("log", "segment_size", "4096");
    let root = fs::canonicalize(st.root()).unwrap();
    let src = st.scratch_dir("src");
    let mirror = st.scratch_dir("mirror");
    let a = src.join("a");
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::write(a.join("x"), random_bytes(seed ^ 1, 20_000)).unwrap();
    fs::write(a.join("y"), b"hello\n").unwrap();
    fs::write(a.join("z"), b"").unwrap();
    fs::write(a.join("sub/w"), random_bytes(seed ^ 2, 9_000)).unwrap();
    std::os::unix::fs::symlink("x", a.join("ln")).unwrap();
    let big1 = random_bytes(seed ^ 3, 300_000);
    let mut big2 = big1.clone();
    big2[100_000..110_000].copy_from_slice(&random_bytes(seed ^ 4, 10_000));
    fs::write(src.join("big1"), &big1).unwrap();
    fs::write(src.join("big2"), &big2).unwrap();
    fs::write(src.join("c1"), random_bytes(seed ^ 5, 30_000)).unwrap();
    fs::write(src.join("c2"), random_bytes(seed ^ 6, 30_000)).unwrap();
    fs::write(src.join("e"), b"after gc\n").unwrap();

    // Image 0: the fresh store, as the model's starting point (taken as durable).
    let (initial, inos) = Tree::scan(&root).unwrap();
    let log = st.scratch().join("rec.log");
    let mut w = Workload {
        rec: Recorder {
            root: root.clone(),
            log: log.clone(),
        },
        src: src.clone(),
        mirror: mirror.clone(),
        cmds: Vec::new(),
    };
    let s = src.clone();
    let copy_tree = move |m: &Path| {
        sh_ok(&format!("cp -a {} {}", shq(s.join("a")), shq(m.join("a"))));
    };
    let cp = |from: &'static str, to: &'static str| {
        let s = src.clone();
        move |m: &Path| {
            fs::copy(s.join(from), m.join(to)).unwrap();
        }
    };
    let nothing = |_: &Path| {};
    w.run(&[(&["put", "a", "/a"], false)], &[&copy_tree]);
    w.run(
        &[(&["mkdir", "/d"], true)],
        &[&|m: &Path| fs::create_dir(m.join("d")).unwrap()],
    );
    w.run(
        &[(&["put", "big1", "/d/big"], false)],
        &[&cp("big1", "d/big")],
    );
    w.run(
        &[(&["mv", "/a/x", "/d/x"], true)],
        &[&|m: &Path| fs::rename(m.join("a/x"), m.join("d/x")).unwrap()],
    );
    w.run(&[(&["snapshot", "create", "s1"], true)], &[&nothing]);
    w.run(
        &[(&["rm", "/a/y"], true)],
        &[&|m: &Path| fs::remove_file(m.join("a/y")).unwrap()],
    );
    w.run(
        &[(&["put", "big2", "/d/big"], false)],
        &[&cp("big2", "d/big")],
    );
    w.run(&[(&["checkpoint"], true)], &[&nothing]);
    w.run(
        &[
            (&["put", "c1", "/c1"], false),
            (&["put", "c2", "/d/c2"], false),
        ],
        &[&cp("c1", "c1"), &cp("c2", "d/c2")],
    );
    w.run(&[(&["snapshot", "delete", "s1"], true)], &[&nothing]);
    w.run(
        &[(&["rm", "/d/big"], true)],
        &[&|m: &Path| fs::remove_file(m.join("d/big")).unwrap()],
    );
    // Most of the pack that holds /a's files becomes garbage: gc rewrites it (crash cases G2-G4).
    w.run(
        &[(&["rm", "/d/x"], true)],
        &[&|m: &Path| fs::remove_file(m.join("d/x")).unwrap()],
    );
    w.run(&[(&["gc"], true)], &[&nothing]);
    w.run(&[(&["put", "e", "/e"], false)], &[&cp("e", "e")]);
    w.run(&[(&["checkpoint"], true)], &[&nothing]);
    let recorded_in = started.elapsed();

    let bytes = fs::read(&log).unwrap();
    let records = crash::parse_log(&bytes).unwrap();
    let rec = Recording::new(initial, inos, &records).unwrap_or_else(|e| panic!("recording: {e}"));
    assert!(
        rec.unsupported.is_empty(),
        "the recorder saw calls the model cannot replay:\n{}",
        rec.unsupported.join("\n")
    );
    // Proves the recorder missed nothing: the model replayed to the end is the real store.
    let (real, _) = Tree::scan(&root).unwrap();
    let diff = listing_diff(&rec.live.listing(), &real.listing());
    assert!(
        diff.is_empty(),
        "the recorded model differs from the real store at the end:\n{diff}"
    );
    // The live run itself: the store holds what the mirror holds (after the scan above: this
    // process is not recorded).
    let live_out = st.scratch().join("live-get");
    st.ok(&["get".as_ref(), "/".as_ref(), live_out.as_os_str()]);
    let diff = listing_diff(&scan_local(&live_out), &scan_local(&mirror));
    assert!(
        diff.is_empty(),
        "the live run lost or changed a file:\n{diff}"
    );
    let count = |f: &dyn Fn(&crash::Step) -> bool| rec.steps.iter().filter(|s| f(s)).count();
    let writes = count(&|s| matches!(s, crash::Step::Write { .. }));
    let syncs = count(&|s| matches!(s, crash::Step::Sync { .. }));
    let dirops = count(&|s| !s.is_data() && s.owner().is_some());
    assert!(
        writes > 50 && syncs > 50 && dirops > 50,
        "{writes} writes, {syncs} syncs, {dirops} entry changes: recorded too little"
    );

    let (cands, total) = crash::candidates(&rec, randoms, seed);
    let chosen = choose(&cands, &rec, n_images, seed);
    eprintln!(
        "crash images: {} records, {} steps ({writes} writes, {syncs} syncs, {dirops} entry changes, {} cross-directory renames) in {:.1?}; {} cut points, {total} candidate images, {} distinct, {} to check",
        records.len(),
        rec.steps.len(),
        rec.cross_dir_renames,
        recorded_in,
        rec.steps.len() + 1,
        cands.len(),
        chosen.len()
    );

    // Write the chosen images in cut order (one sweep), check them on two threads.
    let cmds = Arc::new(w.cmds);
    let work = st.scratch_dir("images");
    let keep = std::env::var_os("VERFS_CRASH_KEEP").map(PathBuf::from);
    let (tx, rx) = mpsc::sync_channel::<Job>(4);
    let rx = Arc::new(Mutex::new(rx));
    type Outcome = (String, Result<(), String>);
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (rx, cmds, results, keep) =
                (rx.clone(), cmds.clone(), results.clone(), keep.clone());
            std::thread::spawn(move || loop {
                let job = match rx.lock().unwrap().recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                // With VERFS_CRASH_KEEP, keep the image as built (the checks change it).
                let pristine = job.dir.join("pristine");
                if keep.is_some() {
                    sh_ok(&format!(
                        "cp -a {} {}",
                        shq(job.dir.join("store")),
                        shq(&pristine)
                    ));
                }
                let r = check_image(&job, &cmds);
                if let (Err(e), Some(k)) = (&r, &keep) {
                    let dest = k.join(format!("image-{}", job.n));
                    let _ = fs::create_dir_all(k);
                    sh_ok(&format!("cp -a {} {}", shq(&pristine), shq(&dest)));
                    let _ = fs::write(dest.join("WHY"), format!("{}\n{e}\n", job.what));
                }
                let _ = fs::remove_dir_all(&job.dir);
                results.lock().unwrap().push((job.what.clone(), r));
            })
        })
        .collect();
    let mut sweep = Sweep::new(&rec);
    let n_cmds = cmds.len();
    for (n, img) in chosen.iter().enumerate() {
        while sweep.cut() < img.cut {
            sweep.advance();
        }
        let pending = sweep.pending();
        let tree = sweep.build(img.variant, &pending, true);
        let dir = work.join(format!("img-{n}"));
        fs::create_dir(&dir).unwrap();
        tree.write_to(&dir.join("store")).unwrap();
        let what = format!(
            "image {n}: cut {} of {} (after record {}), {:?} of {} pending steps",
            img.cut,
            rec.steps.len(),
            img.cut
                .checked_sub(1)
                .map(|c| rec.record_of[c] as i64)
                .unwrap_or(-1),
            img.variant,
            pending.len()
        );
        tx.send(Job {
            n,
            dir,
            what,
            at: at_cut(&rec, img.cut, n_cmds),
        })
        .unwrap();
    }
    drop(tx);
    for h in workers {
        h.join().unwrap();
    }
    let results = results.lock().unwrap();
    let failed: Vec<&Outcome> = results.iter().filter(|r| r.1.is_err()).collect();
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for img in &chosen {
        *classes.entry(img.variant.class()).or_default() += 1;
    }
    eprintln!(
        "crash images: {} built and checked ({classes:?}), {} failed, {:.1?} in all",
        results.len(),
        failed.len(),
        started.elapsed()
    );
    assert_eq!(results.len(), chosen.len());
    if !failed.is_empty() {
        let mut msg = String::new();
        for (what, r) in failed.iter().take(5) {
            msg.push_str(&format!("\n--- {what}\n{}\n", r.as_ref().unwrap_err()));
        }
        panic!(
            "{} of {} crash images failed (VERFS_CRASH_SEED={seed} replays them; VERFS_CRASH_KEEP=DIR keeps them):{msg}",
            failed.len(),
            results.len()
        );
    }
}
