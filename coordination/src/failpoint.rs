//! Failpoints at the store's write sites, for fault-injection tests (`data-layout.md` 6.8,
//! "Design choices").
//!
//! Owns the [`io_site!`] macro, the list of this crate's sites ([`SITES`]) and the check that the
//! list matches the sources. Does not own any I/O itself nor the engine's sites (the engine keeps
//! its own list).
//!
//! Every write, fsync, rename, unlink, truncate and create of a store file in this crate and in
//! the engine is wrapped in [`io_site!`]: `io_site!("txlog.append-write", f.write_all_at(..))`.
//! Each site has a unique name, listed in [`SITES`] (this crate) or the engine's `SITES`; a unit
//! test per crate checks the list against the sources, and the xproc failpoint tests inject a
//! fault at every listed site.
//!
//! In a build with feature `failpoints` *and* debug assertions (the test build), each site is a
//! [`fail`] failpoint configured from the environment variable `FAILPOINTS`
//! (`site=action;site=action`, read once per process, so child processes get it through their
//! environment). The actions are the `fail` crate's (`off`, `N*off->...`, `panic`, `sleep(ms)`,
//! ...) and four values of `return`:
//!
//! - `return(eio)`, `return(enospc)`, `return(enotconn)`: the wrapped call is not made and
//!   returns that error instead, so the site's own error path runs (the same message, naming the
//!   path, as a real failure).
//! - `return(abort)`: the process aborts there (a crash at that instruction).
//!
//! `VERFS_FAILPOINT_TRACE=FILE` appends one line per site reached (`hit NAME`) and per fault
//! injected (`fired NAME ACTION`) to FILE, so a test can discover which workload reaches which
//! site and prove that an injection took place. In every other build (release, or without the
//! feature) [`io_site!`] is the bare expression.

use std::io;

/// Run the I/O expression `$e` (an `io::Result`) at the failpoint `$name` (see the module doc):
/// in a failpoint build an injected fault replaces the call, else it is just `$e`.
#[macro_export]
macro_rules! io_site {
    ($name:literal, $e:expr) => {
        match $crate::failpoint::hit($name) {
            ::std::result::Result::Ok(()) => $e,
            ::std::result::Result::Err(err) => ::std::result::Result::Err(err),
        }
    };
}

/// The failpoint sites of this crate, one per wrapped call (the engine lists its own).
pub const SITES: &[&str] = &[
    // fsutil: shared by every control file, checkpoint and pack index.
    "fsutil.fsync-dir",
    "fsutil.atomic-create",
    "fsutil.atomic-write",
    "fsutil.atomic-fsync",
    "fsutil.atomic-rename",
    "fsutil.atomic-cleanup-unlink",
    "fsutil.excl-create",
    "fsutil.excl-write",
    "fsutil.excl-fsync",
    "fsutil.excl-link",
    "fsutil.excl-temp-unlink",
    // txlog
    "txlog.init-create-lock",
    "txlog.torn-truncate",
    "txlog.torn-fsync",
    "txlog.segment-end-write",
    "txlog.segment-end-fsync",
    "txlog.append-write",
    "txlog.append-cut",
    "txlog.roll-fsync-old",
    "txlog.sync",
    // journal
    "journal.create",
    "journal.append-write",
    "journal.append-fsync",
    "journal.append-cut",
    // lease
    "lease.create-dir",
    "lease.heartbeat-create",
    "lease.heartbeat-write-first",
    "lease.heartbeat-fsync-first",
    "lease.publish-rename",
    "lease.heartbeat-write",
    "lease.release-rename",
    "lease.claim-rename",
    "lease.remove-file",
    "lease.remove-dir",
    // lock table
    "lock.table-create",
    // manifest
    "manifest.stage-create",
    "manifest.stage-write",
    "manifest.stage-fsync",
    "manifest.remove",
    "manifest.apply-rename",
    // two-phase commit
    "twopc.create-dir",
    "twopc.publish-rename",
    "twopc.finish-rename",
];

#[cfg(all(feature = "failpoints", debug_assertions))]
mod active {
    use std::fs::OpenOptions;
    use std::io::{self, Write};
    use std::sync::OnceLock;

    struct State {
        /// `FAILPOINTS` configured at least one site.
        any: bool,
        trace: Option<std::fs::File>,
    }

    fn state() -> &'static State {
        static STATE: OnceLock<State> = OnceLock::new();
        STATE.get_or_init(|| {
            let spec = std::env::var("FAILPOINTS").unwrap_or_default();
            let mut any = false;
            for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((name, actions)) = part.split_once('=') else {
                    panic!("FAILPOINTS: {part:?} is not NAME=ACTIONS");
                };
                if let Err(e) = fail::cfg(name.trim(), actions.trim()) {
                    panic!("FAILPOINTS: {part:?}: {e}");
                }
                any = true;
            }
            let trace = std::env::var_os("VERFS_FAILPOINT_TRACE").map(|p| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .unwrap_or_else(|e| panic!("VERFS_FAILPOINT_TRACE {p:?}: {e}"))
            });
            State { any, trace }
        })
    }

    fn trace(st: &State, line: String) {
        if let Some(mut f) = st.trace.as_ref() {
            // One `write` per line with O_APPEND: lines of threads and processes never mix.
            let _ = f.write_all(line.as_bytes());
        }
    }

    pub fn hit(name: &'static str) -> io::Result<()> {
        let st = state();
        trace(st, format!("hit {name}\n"));
        if !st.any {
            return Ok(());
        }
        let Some(arg) = fail::eval(name, |arg| arg) else {
            return Ok(());
        };
        let action = arg.unwrap_or_else(|| "eio".into());
        trace(st, format!("fired {name} {action}\n"));
        match action.as_str() {
            "eio" => Err(io::Error::from_raw_os_error(libc::EIO)),
            "enospc" => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            // A network filesystem's client cut off from its server ([LEASE-11]).
            "enotconn" => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
            "abort" => {
                tracing::error!(
                    failpoint = name,
                    "failpoint fired: aborting the process here"
                );
                std::process::abort()
            }
            other => panic!("failpoint {name}: unknown action return({other})"),
        }
    }
}

/// The failpoint `name` is reached: `Err` if a fault is to be injected there (see the module
/// doc). Called by [`io_site!`]; always `Ok` outside a failpoint build.
#[cfg(all(feature = "failpoints", debug_assertions))]
pub fn hit(name: &'static str) -> io::Result<()> {
    active::hit(name)
}

/// The failpoint `name` is reached: `Err` if a fault is to be injected there (see the module
/// doc). Called by [`io_site!`]; always `Ok` outside a failpoint build.
#[cfg(not(all(feature = "failpoints", debug_assertions)))]
#[inline(always)]
pub fn hit(_name: &'static str) -> io::Result<()> {
    Ok(())
}

/// Does this build honour `FAILPOINTS`?
pub const ENABLED: bool = cfg!(all(feature = "failpoints", debug_assertions));

/// Every `io_site!("NAME", ...)` name in the `.rs` files under `src_dir`, with its file, in
/// source order. For the per-crate tests that compare the sources with the site list.
pub fn sites_in_sources(src_dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut v: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        for p in v {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src_dir, &mut files);
    let needle = concat!("io_site", "!(");
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // Comment lines (docs that show the macro) are not sites.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(|l| [l, "\n"])
            .collect();
        let mut rest = code.as_str();
        while let Some(i) = rest.find(needle) {
            rest = rest[i + needle.len()..].trim_start();
            if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                out.push((name.to_owned(), f.clone()));
            }
        }
    }
    out
}

/// Compare the sites found in `src_dir` with `listed`: every site in the code is listed once,
/// every listed site is in the code. The problems, empty if none.
pub fn check_site_list(src_dir: &std::path::Path, listed: &[&str]) -> Vec<String> {
    let found = sites_in_sources(src_dir);
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for (name, file) in &found {
        if let Some(prev) = seen.insert(name.clone(), file.clone()) {
            problems.push(format!(
                "site {name} appears twice ({} and {}): each site needs its own name",
                prev.display(),
                file.display()
            ));
        }
        if !listed.contains(&name.as_str()) {
            problems.push(format!(
                "site {name} in {} is not in the crate's failpoint SITES list (add it there and \
                 make sure an xproc failpoint test reaches it)",
                file.display()
            ));
        }
    }
    for l in listed {
        if !seen.contains_key(*l) {
            problems.push(format!("listed site {l} is not in the sources"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_list_matches_the_sources() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let problems = check_site_list(&src, SITES);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_site_missing_from_the_list_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = concat!("fn f() { io_site", "!(\"new.site\", Ok(())) }\n");
        std::fs::write(dir.path().join("a.rs"), src).expect("write");
        let problems = check_site_list(dir.path(), &["gone.site"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("new.site") && problems[1].contains("gone.site"));
    }
}
