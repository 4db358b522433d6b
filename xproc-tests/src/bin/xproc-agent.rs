//! `xproc-agent`: a helper process for the multi-process tests, doing what the CLI cannot.
//!
//! Every mode appends JSON lines (`{"event": ...}`) to the result file named by `--result` or by
//! the `XPROC_RESULT` environment variable (set by the harness's `Pool`). Usage errors exit 2.
//!
//! ```text
//! xproc-agent exec-after --go GO -- PROG ARGS...
//!     report at-barrier, wait until GO exists, then exec PROG (same pid).
//! xproc-agent seq [--go GO] --script FILE [--repeat-until STOP] [--keep-stdout DIR]
//!     run each argv of FILE (a JSON array of arrays) in turn; one result line per command.
//!     With --repeat-until, run the script again and again until STOP exists (at least once).
//!     With --keep-stdout, command n's stdout is also saved as DIR/<n>.
//! xproc-agent participant STORE --vote commit|abort|die [--lease-ms N --heartbeat-ms N]
//!     take a lease in STORE/leases and vote as told on every proposal, from the keeper's tick;
//!     `die` SIGKILLs itself on the first proposal, before voting. Runs until killed.
//! xproc-agent propose STORE [--kind K] [--timeout-ms N] [--lease-ms N --heartbeat-ms N] [--no-clean-dead]
//!     take a lease, propose, print the decision as JSON on stdout, finish, release.
//! xproc-agent hold STORE [--probe PATH] [--stay-when-fenced]
//!     Store::open, report ready, wait for STORE/../go-commit, then mkdir PATH (default
//!     /fenced-probe) and report the result. When fenced: report it and exit 75 (or keep going
//!     with --stay-when-fenced, so the mkdir meets the log's own fence check).
//! xproc-agent lock STORE (--resource NAME | --range INO:START:END) --mode M [--wait no|forever|MS]
//!         [--hold-ms N | --until-killed | --release-on FILE]
//!     take one lock of STORE/locks/table (coordination::lock) and report `acquired` (or
//!     `would-block` / `timed-out` / `error`, exit 1); hold it as told (default: release at
//!     once), release and report `released`.
//! xproc-agent lock-count STORE --resource NAME --counter FILE --iterations N [--go GO]
//!     N times: acquire NAME in EX (waiting), check that nobody else is inside (FILE.inside,
//!     O_EXCL), read FILE (a decimal number, missing = 0), write it + 1, leave, release.
//! ```

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use verfs_coordination::lease::{self, Lease, LeaseConfig};
use verfs_coordination::lock;
use verfs_coordination::two_phase::{self, ProposeOptions, Vote};
use verfs_engine::store::{OpenOptions, Store};
use verfs_xproc_tests::{append_jsonl, sha256};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Args {
    positional: Vec<String>,
    opts: Vec<(String, Option<String>)>,
    rest: Vec<String>,
}

/// `--flag`, `--key value`, positionals, and everything after `--`.
fn parse(args: Vec<String>, flags: &[&str]) -> Args {
    let mut a = Args {
        positional: Vec::new(),
        opts: Vec::new(),
        rest: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(s) = it.next() {
        if s == "--" {
            a.rest = it.collect();
            break;
        }
        if let Some(k) = s.strip_prefix("--") {
            if flags.contains(&k) {
                a.opts.push((k.to_owned(), None));
            } else {
                let v = it.next();
                a.opts.push((k.to_owned(), v));
            }
        } else {
            a.positional.push(s);
        }
    }
    a
}

impl Args {
    fn get(&self, k: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.as_deref())
    }
    fn has(&self, k: &str) -> bool {
        self.opts.iter().any(|(n, _)| n == k)
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.get(k)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| usage(&format!("--{k} needs a number")))
            })
            .unwrap_or(default)
    }
    fn store(&self) -> PathBuf {
        PathBuf::from(
            self.positional
                .first()
                .unwrap_or_else(|| usage("missing STORE")),
        )
    }
    fn result(&self) -> PathBuf {
        self.get("result")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XPROC_RESULT").map(PathBuf::from))
            .unwrap_or_else(|| usage("no --result and no XPROC_RESULT"))
    }
    fn lease_cfg(&self) -> LeaseConfig {
        LeaseConfig {
            timeout: Duration::from_millis(self.num("lease-ms", 1500)),
            heartbeat_interval: Duration::from_millis(self.num("heartbeat-ms", 100)),
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("xproc-agent: {msg} (see the module docs of src/bin/xproc-agent.rs)");
    std::process::exit(2)
}

fn report(result: &Path, v: serde_json::Value) {
    if let Err(e) = append_jsonl(result, &v) {
        eprintln!("xproc-agent: writing {}: {e}", result.display());
        std::process::exit(3);
    }
}

fn wait_for_file(p: &Path) {
    while !p.exists() {
        thread::sleep(Duration::from_micros(200));
    }
}

/// A helper must not outlive a test run that forgot it (e.g. the test runner was SIGKILLed).
fn die_with_parent() {
    // SAFETY: plain prctl call with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(4);
    }
}

fn main() -> ExitCode {
    die_with_parent();
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        usage("missing mode");
    }
    let mode = argv.remove(0);
    match mode.as_str() {
        "exec-after" => exec_after(parse(argv, &[])),
        "seq" => seq(parse(argv, &[])),
        "participant" => participant(parse(argv, &[])),
        "propose" => propose(parse(argv, &["no-clean-dead"])),
        "hold" => hold(parse(argv, &["stay-when-fenced"])),
        "lock" => lock(parse(argv, &["until-killed"])),
        "lock-count" => lock_count(parse(argv, &[])),
        other => usage(&format!("unknown mode {other:?}")),
    }
}

fn exec_after(a: Args) -> ExitCode {
    let go = PathBuf::from(a.get("go").unwrap_or_else(|| usage("missing --go")));
    let (prog, args) = a
        .rest
        .split_first()
        .unwrap_or_else(|| usage("missing -- PROG"));
    report(
        &a.result(),
        json!({"event": "at-barrier", "pid": std::process::id()}),
    );
    wait_for_file(&go);
    let err = Command::new(prog).args(args).exec();
    eprintln!("xproc-agent: exec {prog}: {err}");
    ExitCode::from(127)
}

fn seq(a: Args) -> ExitCode {
    let result = a.result();
    let script = a.get("script").unwrap_or_else(|| usage("missing --script"));
    let text = std::fs::read_to_string(script).unwrap_or_else(|e| usage(&format!("{script}: {e}")));
    let cmds: Vec<Vec<String>> =
        serde_json::from_str(&text).unwrap_or_else(|e| usage(&format!("{script}: {e}")));
    if let Some(go) = a.get("go") {
        report(
            &result,
            json!({"event": "at-barrier", "pid": std::process::id()}),
        );
        wait_for_file(Path::new(go));
    }
    let stop = a.get("repeat-until").map(PathBuf::from);
    let keep = a.get("keep-stdout").map(PathBuf::from);
    for (n, argv) in cmds.iter().cycle().enumerate() {
        if n > 0 && n.is_multiple_of(cmds.len()) && stop.as_ref().is_none_or(|s| s.exists()) {
            break;
        }
        let i = n;
        let Some((prog, args)) = argv.split_first() else {
            continue;
        };
        let start = now_ms();
        let mut cmd = Command::new(prog);
        cmd.args(args);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                report(
                    &result,
                    json!({"event": "spawn-error", "i": i, "argv": argv, "error": e.to_string()}),
                );
                return ExitCode::from(1);
            }
        };
        if let Some(dir) = &keep {
            if let Err(e) = std::fs::write(dir.join(i.to_string()), &out.stdout) {
                usage(&format!("--keep-stdout: {e}"));
            }
        }
        report(
            &result,
            json!({
                "event": "cmd", "i": i, "argv": argv, "code": out.status.code(),
                "signal": out.status.signal(), "stdout_len": out.stdout.len(),
                "stdout_sha256": sha256(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr), "start_ms": start, "end_ms": now_ms(),
            }),
        );
    }
    report(&result, json!({"event": "done"}));
    ExitCode::SUCCESS
}

fn participant(a: Args) -> ExitCode {
    let store = a.store();
    let result = a.result();
    let vote = a
        .get("vote")
        .unwrap_or_else(|| usage("missing --vote"))
        .to_owned();
    if !["commit", "abort", "die"].contains(&vote.as_str()) {
        usage("--vote must be commit, abort or die");
    }
    let lease = match Lease::acquire(&store.join("leases"), "xproc participant", a.lease_cfg()) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            report(&result, json!({"event": "error", "error": e.to_string()}));
            return ExitCode::from(1);
        }
    };
    let twopc = store.join("2pc");
    let me = lease.id().clone();
    let tick_result = result.clone();
    let fenced_result = result.clone();
    let on_tick: Box<dyn Fn() + Send> = Box::new(move || {
        let r = two_phase::poll_participant(&twopc, &me, &mut |p| {
            match vote.as_str() {
                "commit" => {
                    report(
                        &tick_result,
                        json!({"event": "vote", "txn": p.txn.as_str(), "vote": "commit"}),
                    );
                    Vote::Commit
                }
                "abort" => {
                    report(
                        &tick_result,
                        json!({"event": "vote", "txn": p.txn.as_str(), "vote": "abort"}),
                    );
                    Vote::Abort {
                        reason: "xproc participant votes abort".into(),
                    }
                }
                _ => {
                    report(
                        &tick_result,
                        json!({"event": "dying", "txn": p.txn.as_str()}),
                    );
                    // Mid-vote: the proposal is read, no vote is written.
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                    std::process::abort();
                }
            }
        });
        if let Err(e) = r {
            report(
                &tick_result,
                json!({"event": "poll-error", "error": e.to_string()}),
            );
        }
    });
    let on_fenced: Box<dyn Fn() + Send> = Box::new(move || {
        report(&fenced_result, json!({"event": "fenced"}));
        std::process::exit(75);
    });
    let _keeper = match Lease::start_keeper(lease.clone(), on_fenced, Some(on_tick)) {
        Ok(k) => k,
        Err(e) => {
            report(&result, json!({"event": "error", "error": e.to_string()}));
            return ExitCode::from(1);
        }
    };
    report(
        &result,
        json!({"event": "ready", "pid": std::process::id(), "lease": lease.id().as_str()}),
    );
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn propose(a: Args) -> ExitCode {
    let store = a.store();
    let leases = store.join("leases");
    let cfg = a.lease_cfg();
    let lease = match Lease::acquire(&leases, "xproc propose", cfg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xproc-agent propose: {e}");
            return ExitCode::from(1);
        }
    };
    let clean_dead = !a.has("no-clean-dead");
    let mut cleaned = Vec::new();
    let me = lease.id().clone();
    let start = Instant::now();
    let outcome = two_phase::propose(
        &store.join("2pc"),
        &leases,
        &lease,
        a.get("kind").unwrap_or("test"),
        json!({"from": "xproc-agent"}),
        ProposeOptions {
            timeout: Duration::from_millis(a.num("timeout-ms", 20_000)),
            poll_interval: Duration::from_millis(20),
            lease: cfg,
        },
        &mut |dead| {
            if !clean_dead {
                return;
            }
            // The coordinator cleans a dead participant itself: claim (fences it) and finish.
            match lease::claim(&leases, dead, &me) {
                Ok(Some(c)) => {
                    let _ = c.finish();
                    cleaned.push(dead.to_string());
                }
                Ok(None) => {}
                Err(e) => eprintln!("xproc-agent propose: claiming {dead}: {e}"),
            }
        },
    );
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let code = match outcome {
        Ok(o) => {
            let finished = two_phase::finish(&store.join("2pc"), &o.txn)
                .map_err(|e| e.to_string())
                .err();
            println!(
                "{}",
                json!({"txn": o.txn.as_str(), "decision": o.decision, "elapsed_ms": elapsed_ms,
                       "cleaned": cleaned, "finish_error": finished})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "{}",
                json!({"error": e.to_string(), "elapsed_ms": elapsed_ms})
            );
            ExitCode::from(1)
        }
    };
    if let Err(e) = lease.release() {
        eprintln!("xproc-agent propose: releasing the lease: {e}");
        return ExitCode::from(1);
    }
    code
}

fn hold(a: Args) -> ExitCode {
    let store_dir = a.store();
    let result = a.result();
    let probe = a.get("probe").unwrap_or("/fenced-probe").to_owned();
    let stay = a.has("stay-when-fenced");
    let fenced_result = result.clone();
    let opts = OpenOptions {
        kind: "xproc hold".into(),
        probe_filesystem: false,
        on_fenced: Some(Box::new(move || {
            report(
                &fenced_result,
                json!({"event": "fenced", "at_ms": now_ms()}),
            );
            if !stay {
                std::process::exit(75);
            }
        })),
    };
    let store = match Store::open(&store_dir, opts) {
        Ok(s) => s,
        Err(e) => {
            report(&result, json!({"event": "error", "error": e.to_string()}));
            return ExitCode::from(1);
        }
    };
    report(
        &result,
        json!({"event": "ready", "pid": std::process::id(), "lease": store.lease().id().as_str()}),
    );
    let go = store_dir
        .parent()
        .map(|p| p.join("go-commit"))
        .unwrap_or_else(|| PathBuf::from("go-commit"));
    wait_for_file(&go);
    let res = store.mkdir(&probe, 0o755, false);
    report(
        &result,
        json!({"event": "probe", "path": probe, "ok": res.is_ok(),
               "error": res.as_ref().err().map(|e| e.to_string()), "at_ms": now_ms()}),
    );
    let closed = store.close();
    report(
        &result,
        json!({"event": "closed", "error": closed.err().map(|e| e.to_string())}),
    );
    if res.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn lock_owner(store: &Path, result: &Path) -> Option<lock::LockOwner> {
    match lock::LockTable::open(&store.join("locks")).and_then(|t| t.owner()) {
        Ok(o) => Some(o),
        Err(e) => {
            report(result, json!({"event": "error", "error": e.to_string()}));
            None
        }
    }
}

fn lock(a: Args) -> ExitCode {
    let store = a.store();
    let result = a.result();
    let mode: lock::Mode = a
        .get("mode")
        .unwrap_or_else(|| usage("missing --mode"))
        .parse()
        .unwrap_or_else(|e: lock::ParseModeError| usage(&e.to_string()));
    let res = match (a.get("resource"), a.get("range")) {
        (Some(n), None) => lock::Resource::Named(n.to_owned()),
        (None, Some(r)) => {
            let p: Vec<u64> = r
                .split(':')
                .map(|x| x.parse().unwrap_or_else(|_| usage("--range INO:START:END")))
                .collect();
            if p.len() != 3 {
                usage("--range INO:START:END");
            }
            lock::Resource::Range {
                ino: p[0],
                start: p[1],
                end: p[2],
            }
        }
        _ => usage("exactly one of --resource and --range"),
    };
    let wait = match a.get("wait").unwrap_or("no") {
        "no" => lock::Wait::No,
        "forever" => lock::Wait::Forever,
        ms => lock::Wait::Timeout(Duration::from_millis(
            ms.parse().unwrap_or_else(|_| usage("--wait no|forever|MS")),
        )),
    };
    let Some(owner) = lock_owner(&store, &result) else {
        return ExitCode::from(1);
    };
    report(
        &result,
        json!({"event": "trying", "pid": std::process::id(), "at_ms": now_ms()}),
    );
    match owner.acquire(&res, mode, wait) {
        Ok(()) => {}
        Err(lock::AcquireError::WouldBlock { held, .. }) => {
            report(
                &result,
                json!({"event": "would-block", "held": held.to_string(), "at_ms": now_ms()}),
            );
            return ExitCode::from(1);
        }
        Err(e @ lock::AcquireError::TimedOut { .. }) => {
            report(
                &result,
                json!({"event": "timed-out", "error": e.to_string(), "at_ms": now_ms()}),
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            report(&result, json!({"event": "error", "error": e.to_string()}));
            return ExitCode::from(1);
        }
    }
    report(
        &result,
        json!({"event": "acquired", "pid": std::process::id(), "at_ms": now_ms()}),
    );
    if a.has("until-killed") {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(f) = a.get("release-on") {
        wait_for_file(Path::new(f));
    }
    thread::sleep(Duration::from_millis(a.num("hold-ms", 0)));
    // Stamp before releasing: anyone who acquires after our release sees a later time.
    let at = now_ms();
    if let Err(e) = owner.release(&res) {
        report(&result, json!({"event": "error", "error": e.to_string()}));
        return ExitCode::from(1);
    }
    report(&result, json!({"event": "released", "at_ms": at}));
    ExitCode::SUCCESS
}

fn lock_count(a: Args) -> ExitCode {
    let store = a.store();
    let result = a.result();
    let name = a
        .get("resource")
        .unwrap_or_else(|| usage("missing --resource"));
    let counter = PathBuf::from(
        a.get("counter")
            .unwrap_or_else(|| usage("missing --counter")),
    );
    let inside = counter.with_extension("inside");
    let n = a.num("iterations", 100);
    let Some(owner) = lock_owner(&store, &result) else {
        return ExitCode::from(1);
    };
    if let Some(go) = a.get("go") {
        report(
            &result,
            json!({"event": "at-barrier", "pid": std::process::id()}),
        );
        wait_for_file(Path::new(go));
    }
    let res = lock::Resource::Named(name.to_owned());
    let fail = |what: String| {
        report(&result, json!({"event": "error", "error": what}));
        ExitCode::from(1)
    };
    for i in 0..n {
        if let Err(e) = owner.acquire(&res, lock::Mode::Ex, lock::Wait::Forever) {
            return fail(e.to_string());
        }
        // Nobody else may be inside: O_EXCL create fails if a second holder is.
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&inside)
        {
            return fail(format!("iteration {i}: someone else is inside ({e})"));
        }
        let v: u64 = match std::fs::read_to_string(&counter) {
            Ok(t) => t.trim().parse().unwrap_or(u64::MAX),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return fail(e.to_string()),
        };
        if v == u64::MAX {
            return fail(format!("iteration {i}: counter file is garbled"));
        }
        if let Err(e) = std::fs::write(&counter, format!("{}\n", v + 1)) {
            return fail(e.to_string());
        }
        if let Err(e) = std::fs::remove_file(&inside) {
            return fail(e.to_string());
        }
        if let Err(e) = owner.release(&res) {
            return fail(e.to_string());
        }
    }
    report(&result, json!({"event": "done", "iterations": n}));
    ExitCode::SUCCESS
}
