//! Locating the `verfs` binary the tests run, and refusing a stale one.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The command that builds everything the tests need (also in the README).
pub const BUILD_HINT: &str = "cargo build --workspace --bins && cargo test --workspace";

/// `target/<profile>/`: the test executable lives in `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Newest modification time among the sources cargo built `bin` from (its dep-info file
/// `<bin>.d`, which lists exactly the files rustc read: test-only modules are not in it), with
/// the file that has it. Without a dep-info file, every `.rs` file of the crates the binary is
/// built from counts.
fn newest_source(bin: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Ok(dep_info) = fs::read_to_string(bin.with_extension("d")) {
        let deps = dep_info
            .lines()
            .next()
            .and_then(|l| l.split_once(": "))
            .map(|(_, d)| d)
            .unwrap_or("");
        // Paths are separated by spaces; a space inside a path is escaped as `\ `.
        let mut cur = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    cur.push(' ');
                    chars.next();
                }
                ' ' => files.push(PathBuf::from(std::mem::take(&mut cur))),
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            files.push(PathBuf::from(cur));
        }
    } else {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out);
                    } else if p.extension() == Some(OsStr::new("rs")) {
                        out.push(p);
                    }
                }
            }
        }
        // This crate is `<workspace>/xproc-tests/support`.
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
        for c in ["cli/src", "engine/src", "coordination/src", "fs/src"] {
            walk(&ws.join(c), &mut files);
        }
    }
    files
        .into_iter()
        .filter_map(|f| mtime(&f).map(|t| (t, f)))
        .max_by_key(|(t, _)| *t)
}

/// The `verfs` binary of this build profile (`target/<profile>/verfs`).
///
/// Panics, loudly, when it is missing or older than a source file it is built from (cargo's
/// dep-info `verfs.d`): a test against a stale binary proves nothing. (Comparing with the test
/// executable's own mtime would be wrong: `cargo build --bins` followed by `cargo test` links the
/// test after the binary even though the binary is up to date.)
pub fn verfs_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let bin = profile_dir().join("verfs");
        let Some(bin_time) = mtime(&bin) else {
            return Err(format!(
                "\n\n*** verfs binary not found at {} ***\nThe tests run the real binary. Build \
                 it first:\n    {BUILD_HINT}\n",
                bin.display()
            ));
        };
        if let Some((src_time, src)) = newest_source(&bin) {
            if src_time > bin_time {
                return Err(format!(
                    "\n\n*** STALE verfs binary: {} is older than {} ***\nRefusing to test an old \
                     binary. Rebuild it first:\n    {BUILD_HINT}\n",
                    bin.display(),
                    src.display()
                ));
            }
        }
        Ok(bin)
    });
    match r {
        Ok(p) => p.clone(),
        Err(msg) => panic!("{msg}"),
    }
}
