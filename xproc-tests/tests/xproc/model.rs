//! Model-based test of the mount and the CLI (issue 11, "A model-based test").
//!
//! One store, two real `verfs mount` processes (mount A and mount B) and the real `verfs` CLI.
//! A seeded random sequence of operations (create, write at offsets past EOF, truncate, rename
//! with and without `RENAME_NOREPLACE` / `RENAME_EXCHANGE`, link, unlink, mkdir, rmdir, symlink,
//! chmod, setxattr, removexattr through a mount; put, mv, ln, ln -s, rm, rm -r, mkdir and
//! snapshot create through the CLI) is applied to verfs and to the model: a plain directory on the
//! host filesystem, where a mount operation is the very same system call and a CLI command is
//! translated to the system calls that have its documented meaning (`mv`/`ln`/`put` into an
//! existing directory, `put` replaces the inode, ...). Each step must give both the same outcome
//! (success, or the same errno). After every step the whole tree, seen through the mount that did
//! NOT run the operation (or either mount after a CLI command), must equal the model: names,
//! kinds, sizes, content hashes, symlink targets, modes, link counts, which paths share an inode,
//! and `user.*` xattrs. This is docs/DESIGN.md "Consistency model": namespace changes are visible to
//! every process when the call returns, file contents after close. Every [`REMOUNT_EVERY`] steps
//! and at the end both mounts are unmounted and mounted again and compared again, every
//! [`CLI_EVERY`] steps the tree is compared through `verfs ls --json` and `verfs cat`, and each
//! snapshot (`MOUNT/.snapshots/NAME`) must equal the model as it was when the snapshot was made.
//! Two mounts that each apply the same log, and remounts that rebuild the state from the
//! checkpoint and the log, must all show one tree: [META-2].
//!
//! Knobs: `VERFS_MODEL_SEED` (else `XPROC_SEED`, else the clock; printed) replays a run,
//! `VERFS_MODEL_STEPS` sets its length (default [`DEFAULT_STEPS`]). A mismatch prints the seed,
//! the step, the operation log and a diff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::*;

/// Steps of a default (CI) run.
const DEFAULT_STEPS: usize = 300;
/// Unmount and remount both mounts (and check every snapshot) this often.
const REMOUNT_EVERY: usize = 100;
/// Compare through `verfs ls` / `verfs cat` this often.
const CLI_EVERY: usize = 50;
/// Names in every directory come from this small pool, so operations collide often (EEXIST,
/// ENOTEMPTY, rename over an existing target, ...).
const NAMES: &[&str] = &["a", "b", "c", "d", "e"];
/// New directories are made only this deep, so the tree stays small enough to compare each step.
const MAX_DEPTH: usize = 3;
const XATTR_NAMES: &[&str] = &["user.k0", "user.k1", "user.k2"];

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// One operation; paths are relative to the tree's root ("" is the root).
#[derive(Clone, Debug)]
enum Op {
    // Through a mount: the same system call on the mount and on the model.
    Create {
        path: String,
        mode: u32,
        excl: bool,
        seed: u64,
        len: usize,
    },
    Write {
        path: String,
        off: u64,
        seed: u64,
        len: usize,
    },
    Truncate {
        path: String,
        len: u64,
        via_fd: bool,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
        flags: i32,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    /// Open `path` read-write, write through the descriptor, run `then` through the same mount
    /// while it is open, then fstat and read the whole file through the descriptor and close:
    /// a process's own writes and orphans ([ORPH-1]).
    Held {
        path: String,
        off: u64,
        seed: u64,
        len: usize,
        then: HeldThen,
    },
    /// Open `path` through mount A and through mount B, write through each, close in the given
    /// order. Data-layout 6.7: each close splices its ranges over the current extents, so the
    /// model applies the two writes in close order.
    TwoWriters {
        path: String,
        a: (u64, u64, usize),
        b: (u64, u64, usize),
        b_closes_first: bool,
    },
    // Through the CLI: the model applies what the command is documented to do.
    Put {
        dest: String,
        name: String,
        mode: u32,
        seed: u64,
        len: usize,
    },
    Mv {
        from: String,
        to: String,
    },
    Ln {
        target: String,
        link: String,
        symbolic: bool,
    },
    Rm {
        path: String,
        recursive: bool,
    },
    CliMkdir {
        path: String,
    },
    Snapshot {
        name: String,
    },
    /// `verfs snapshot create` while a mount holds unflushed writes to `path` (written through an
    /// open descriptor, closed after the snapshot): the mount's barrier vote commits them, so the
    /// snapshot has them (data-layout.md 5.9, "Creation" step 1, [SNAP-2]).
    DirtySnapshot {
        name: String,
        path: String,
        via_b: bool,
        off: u64,
        seed: u64,
        len: usize,
    },
}

impl Op {
    fn is_cli(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Mv { .. }
                | Op::Ln { .. }
                | Op::Rm { .. }
                | Op::CliMkdir { .. }
                | Op::Snapshot { .. }
                | Op::DirtySnapshot { .. }
        )
    }
}

/// What a [`Op::Held`] does while its file is open.
#[derive(Clone, Debug)]
enum HeldThen {
    Unlink,
    /// Rename another entry over the open file's name.
    RenameOver(String),
    RenameTo(String),
    /// Read another path (a hard link of the file, or anything) before the close.
    ReadOther(String),
}

/// What an operation returned: success or an errno; `Other` is a CLI failure whose message names
/// no errno (never equal to anything).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Errno(nix::errno::Errno),
    Other(String),
    /// A [`Op::Held`]: what it read (sizes, link count and hashes).
    Read(String),
}

fn outcome(r: std::io::Result<()>) -> Outcome {
    outcome_of(r.map(|()| Outcome::Ok))
}

fn outcome_of(r: std::io::Result<Outcome>) -> Outcome {
    match r {
        Ok(o) => o,
        Err(e) => match e.raw_os_error() {
            Some(n) => Outcome::Errno(nix::errno::Errno::from_raw(n)),
            None => Outcome::Other(e.to_string()),
        },
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

fn cvt(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The bytes of a create/write/put: the seed names the content, so equal seeds dedup.
fn data(seed: u64, len: usize) -> Vec<u8> {
    random_bytes(seed, len)
}

/// Apply a mount operation under `base` (a mountpoint or the model directory).
fn apply_posix(base: &Path, op: &Op) -> Outcome {
    let p = |r: &str| base.join(r);
    if let Op::Held {
        path,
        off,
        seed,
        len,
        then,
    } = op
    {
        return outcome_of((|| -> std::io::Result<Outcome> {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p(path))?;
            f.write_all_at(&data(*seed, *len), *off)?;
            let other = match then {
                HeldThen::Unlink => fs::remove_file(p(path)).map(|()| String::new()),
                HeldThen::RenameOver(from) => fs::rename(p(from), p(path)).map(|()| String::new()),
                HeldThen::RenameTo(to) => fs::rename(p(path), p(to)).map(|()| String::new()),
                HeldThen::ReadOther(o) => {
                    fs::read(p(o)).map(|b| format!("{} bytes {}", b.len(), &sha256(&b)[..12]))
                }
            };
            let other = match other {
                Ok(s) => s,
                Err(e) => format!("{:?}", outcome(Err(e))),
            };
            let md = f.metadata()?;
            let mut all = vec![0u8; md.len() as usize];
            f.read_exact_at(&mut all, 0)?;
            drop(f);
            Ok(Outcome::Read(format!(
                "then: {other}; fd: size {} nlink {} sha {}",
                md.len(),
                md.nlink(),
                &sha256(&all)[..12]
            )))
        })());
    }
    outcome((|| -> std::io::Result<()> {
        match op {
            Op::Create {
                path,
                mode,
                excl,
                seed,
                len,
            } => {
                let mut o = fs::OpenOptions::new();
                o.write(true).mode(*mode);
                if *excl {
                    o.create_new(true);
                } else {
                    o.create(true).truncate(true);
                }
                let mut f = o.open(p(path))?;
                f.write_all(&data(*seed, *len))
            }
            Op::Write {
                path,
                off,
                seed,
                len,
            } => fs::OpenOptions::new()
                .write(true)
                .open(p(path))?
                .write_all_at(&data(*seed, *len), *off),
            Op::Truncate { path, len, via_fd } => {
                if *via_fd {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(p(path))?
                        .set_len(*len)
                } else {
                    // SAFETY: a valid NUL-terminated path.
                    cvt(unsafe { libc::truncate(cpath(&p(path)).as_ptr(), *len as libc::off_t) })
                }
            }
            Op::Rename { from, to, flags: 0 } => fs::rename(p(from), p(to)),
            Op::Rename { from, to, flags } => {
                let (a, b) = (cpath(&p(from)), cpath(&p(to)));
                // SAFETY: valid NUL-terminated paths.
                cvt(unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        *flags,
                    )
                })
            }
            Op::Link { from, to } => fs::hard_link(p(from), p(to)),
            Op::Unlink { path } => fs::remove_file(p(path)),
            Op::Mkdir { path, mode } => fs::DirBuilder::new().mode(*mode).create(p(path)),
            Op::Rmdir { path } => fs::remove_dir(p(path)),
            Op::Symlink { target, path } => std::os::unix::fs::symlink(target, p(path)),
            Op::Chmod { path, mode } => {
                fs::set_permissions(p(path), fs::Permissions::from_mode(*mode))
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => {
                let n = CString::new(name.as_str()).expect("xattr name");
                // SAFETY: valid path and name; `value` outlives the call.
                cvt(unsafe {
                    libc::lsetxattr(
                        cpath(&p(path)).as_ptr(),
                        n.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        *flags,
                    )
                })
            }
            Op::RemoveXattr { path, name } => {
                let n = CString::new(name.as_str()).expect("xattr name");
                // SAFETY: valid path and name.
                cvt(unsafe { libc::lremovexattr(cpath(&p(path)).as_ptr(), n.as_ptr()) })
            }
            Op::TwoWriters {
                path,
                a,
                b,
                b_closes_first,
            } => {
                // The model: one file, the writes in close order.
                let f = fs::OpenOptions::new().write(true).open(p(path))?;
                let order = if *b_closes_first { [b, a] } else { [a, b] };
                for (off, seed, len) in order {
                    f.write_all_at(&data(*seed, *len), *off)?;
                }
                Ok(())
            }
            _ => unreachable!("not a mount operation: {op:?}"),
        }
    })())
}

/// `rel/name` ("" is the root).
fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The CLI puts SRC into DST when DST is an existing directory (not following a symlink, as the
/// store resolves paths without following them).
fn into_dir_or_self(model: &Path, dst: &str, name: &str) -> String {
    let is_dir = fs::symlink_metadata(model.join(dst))
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if is_dir {
        join_rel(dst, name)
    } else {
        dst.to_owned()
    }
}

/// The model of a CLI command: the system calls that have the command's documented meaning.
/// `tmp` is a scratch path on the model's filesystem, outside the model.
fn apply_cli_model(model: &Path, tmp: &Path, put_src: &Path, op: &Op) -> Outcome {
    let m = |r: &str| model.join(r);
    let lstat_first = |r: &str| fs::symlink_metadata(m(r)).map(|_| ());
    outcome((|| -> std::io::Result<()> {
        match op {
            // `put` writes a new inode and links it in place of an existing non-directory.
            Op::Put { dest, name, .. } => {
                let target = into_dir_or_self(model, dest, name);
                fs::copy(put_src, tmp)?;
                let r = fs::rename(tmp, m(&target));
                let _ = fs::remove_file(tmp);
                r
            }
            Op::Mv { from, to } => {
                lstat_first(from)?;
                fs::rename(m(from), m(&into_dir_or_self(model, to, base_name(from))))
            }
            Op::Ln {
                target,
                link,
                symbolic: true,
            } => std::os::unix::fs::symlink(
                target,
                m(&into_dir_or_self(model, link, base_name(target))),
            ),
            Op::Ln {
                target,
                link,
                symbolic: false,
            } => {
                if fs::symlink_metadata(m(target))?.is_dir() {
                    return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
                }
                fs::hard_link(
                    m(target),
                    m(&into_dir_or_self(model, link, base_name(target))),
                )
            }
            Op::Rm { path, recursive } => {
                if fs::symlink_metadata(m(path))?.is_dir() {
                    if !*recursive {
                        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
                    }
                    fs::remove_dir_all(m(path))
                } else {
                    fs::remove_file(m(path))
                }
            }
            Op::CliMkdir { path } => {
                fs::DirBuilder::new().mode(0o755).create(m(path))?;
                fs::set_permissions(m(path), fs::Permissions::from_mode(0o755))
            }
            Op::Snapshot { .. } => Ok(()),
            Op::DirtySnapshot {
                path,
                off,
                seed,
                len,
                ..
            } => fs::OpenOptions::new()
                .write(true)
                .open(m(path))?
                .write_all_at(&data(*seed, *len), *off),
            _ => unreachable!("not a CLI operation: {op:?}"),
        }
    })())
}

/// The errno a CLI error message names (the engine prints the `strerror` text).
fn cli_outcome(out: &RunOutput) -> Outcome {
    if out.success() {
        return Outcome::Ok;
    }
    use nix::errno::Errno as E;
    for (text, e) in [
        ("No such file or directory", E::ENOENT),
        ("File exists", E::EEXIST),
        ("Not a directory", E::ENOTDIR),
        ("Is a directory", E::EISDIR),
        ("Directory not empty", E::ENOTEMPTY),
        ("cannot move", E::EINVAL),
    ] {
        if out.stderr.contains(text) {
            return Outcome::Errno(e);
        }
    }
    Outcome::Other(out.stderr.trim().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Tree descriptions
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    File { size: u64, sha: String },
    Dir,
    Symlink(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    nlink: u64,
    xattrs: BTreeMap<String, String>,
}

/// A whole tree as the test compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Groups of (2 or more) paths that are one inode.
    links: BTreeSet<Vec<String>>,
}

impl Tree {
    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, n)| {
                let kind = match &n.kind {
                    Kind::File { size, sha } => format!("file {size} {}", &sha[..12]),
                    Kind::Dir => "dir".into(),
                    Kind::Symlink(t) => format!("symlink -> {t:?}"),
                };
                format!(
                    "/{p}\t{kind} mode {:o} nlink {} xattrs {:?}",
                    n.mode, n.nlink, n.xattrs
                )
            })
            .collect();
        v.extend(self.links.iter().map(|g| format!("one inode: {g:?}")));
        v
    }

    fn dirs(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.kind == Kind::Dir)
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

/// Lines only in `want` and only in `got`.
fn diff(want: &Tree, got: &Tree) -> String {
    let (a, b) = (want.lines(), got.lines());
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
    let mut s = String::new();
    for l in a.iter().filter(|l| !sb.contains(l)) {
        let _ = writeln!(s, "- model: {l}");
    }
    for l in b.iter().filter(|l| !sa.contains(l)) {
        let _ = writeln!(s, "+ verfs: {l}");
    }
    s
}

fn list_user_xattrs(p: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path; the buffer is as long as we say.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let cn = CString::new(name).expect("xattr name");
        let mut val = vec![0u8; 65536];
        // SAFETY: valid path and name; the buffer is as long as we say.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.insert(
            String::from_utf8_lossy(name).into_owned(),
            hex::encode(&val[..m as usize]),
        );
    }
    Ok(out)
}

/// Describe the tree at `root` (symlinks are not followed).
fn describe(root: &Path) -> Result<Tree, String> {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
        let md = fs::symlink_metadata(&path).map_err(|e| err("lstat", e))?;
        let kind = if md.is_dir() {
            let rd = fs::read_dir(&path).map_err(|e| err("readdir", e))?;
            for e in rd {
                let e = e.map_err(|e| err("readdir", e))?;
                stack.push(join_rel(&rel, &e.file_name().to_string_lossy()));
            }
            Kind::Dir
        } else if md.file_type().is_symlink() {
            let t = fs::read_link(&path).map_err(|e| err("readlink", e))?;
            Kind::Symlink(t.to_string_lossy().into_owned())
        } else {
            let bytes = fs::read(&path).map_err(|e| err("read", e))?;
            if bytes.len() as u64 != md.len() {
                return Err(format!(
                    "{}: stat says {} bytes, read returned {}",
                    path.display(),
                    md.len(),
                    bytes.len()
                ));
            }
            Kind::File {
                size: md.len(),
                sha: sha256(&bytes),
            }
        };
        if kind != Kind::Dir {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let xattrs = list_user_xattrs(&path).map_err(|e| err("listxattr", e))?;
        nodes.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                nlink: md.nlink(),
                xattrs,
            },
        );
    }
    let links = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    Ok(Tree { nodes, links })
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    A,
    B,
    Cli,
}

struct Run {
    seed: u64,
    rng: StdRng,
    st: TestStore,
    mounts: [Mount; 2],
    model: PathBuf,
    tmp: PathBuf,
    put_src: PathBuf,
    log: Vec<String>,
    snapshots: Vec<(String, Tree)>,
    /// Content seeds used so far: a new file sometimes reuses one (dedup).
    seeds: Vec<(u64, usize)>,
    next_snapshot: usize,
}

impl Run {
    fn fail(&self, step: usize, what: &str) -> ! {
        panic!(
            "\n*** model test FAILED: seed {} (replay: VERFS_MODEL_SEED={} VERFS_MODEL_STEPS={}), step {step} ***\n\
             --- operation log ---\n{}\n--- {what}\n",
            self.seed,
            self.seed,
            step + 1,
            self.log.join("\n")
        );
    }

    fn mount(&self, e: Exec) -> &Mount {
        &self.mounts[if e == Exec::A { 0 } else { 1 }]
    }

    fn model_tree(&self, step: usize) -> Tree {
        describe(&self.model).unwrap_or_else(|e| self.fail(step, &format!("model: {e}")))
    }

    /// The tree under `root` (a mount, or a snapshot in a mount) must equal `want`.
    fn compare(&self, step: usize, want: &Tree, root: &Path, label: &str) {
        match describe(root) {
            Ok(got) if got == *want => {}
            Ok(got) => self.fail(
                step,
                &format!(
                    "{label}: tree differs from the model ({})\n{}",
                    root.display(),
                    diff(want, &got)
                ),
            ),
            Err(e) => self.fail(step, &format!("{label}: {e}")),
        }
    }

    /// The tree through `verfs ls --json` and `verfs cat`.
    fn compare_cli(&self, step: usize, want: &Tree) {
        let mut got_ino: HashMap<u64, Vec<String>> = HashMap::new();
        for dir in want.dirs() {
            let out = self.st.run(&["ls", "--json", &format!("/{dir}")]);
            if !out.success() {
                self.fail(step, &format!("verfs ls: {}", out.describe()));
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| self.fail(step, &format!("verfs ls --json: {e}")));
            let listed: BTreeSet<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap_or("?").to_owned())
                .collect();
            let expect: BTreeSet<String> = want
                .nodes
                .keys()
                .filter(|p| !p.is_empty() && p.rsplit_once('/').map_or("", |(d, _)| d) == dir)
                .map(|p| base_name(p).to_owned())
                .collect();
            if listed != expect {
                self.fail(
                    step,
                    &format!("verfs ls /{dir}: {listed:?}, model has {expect:?}"),
                );
            }
            for e in v.as_array().into_iter().flatten() {
                let rel = join_rel(dir, e["name"].as_str().unwrap_or("?"));
                let n = &want.nodes[&rel];
                let (kind, size, target) = match &n.kind {
                    Kind::File { size, .. } => ("file", Some(*size), None),
                    Kind::Dir => ("dir", None, None),
                    Kind::Symlink(t) => ("symlink", Some(t.len() as u64), Some(t.as_str())),
                };
                let ok = e["kind"] == kind
                    && e["mode"] == format!("{:o}", n.mode)
                    && e["nlink"] == n.nlink
                    && size.is_none_or(|s| e["size"] == s)
                    && e["target"].as_str() == target;
                if !ok {
                    self.fail(
                        step,
                        &format!("verfs ls --json /{dir}: entry {e} differs from the model {n:?}"),
                    );
                }
                if kind != "dir" {
                    got_ino
                        .entry(e["ino"].as_u64().unwrap_or(0))
                        .or_default()
                        .push(rel.clone());
                }
                if let Kind::File { sha, .. } = &n.kind {
                    let out = self.st.run(&["cat", &format!("/{rel}")]);
                    if !out.success() || sha256(&out.stdout) != *sha {
                        self.fail(
                            step,
                            &format!(
                                "verfs cat /{rel} differs from the model:\n{}",
                                out.describe()
                            ),
                        );
                    }
                }
            }
        }
        let got_links: BTreeSet<Vec<String>> = got_ino
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        if got_links != want.links {
            self.fail(
                step,
                &format!(
                    "verfs ls: inodes shared {got_links:?}, model {:?}",
                    want.links
                ),
            );
        }
    }

    fn compare_snapshots(&self, step: usize) {
        for (name, tree) in &self.snapshots {
            for m in &self.mounts {
                self.compare(
                    step,
                    tree,
                    &m.join(format!(".snapshots/{name}")),
                    &format!("snapshot {name}"),
                );
            }
        }
    }

    fn remount_and_compare(&mut self, step: usize) {
        for m in &mut self.mounts {
            m.umount();
        }
        for m in &mut self.mounts {
            m.mount();
        }
        let want = self.model_tree(step);
        for (m, l) in self
            .mounts
            .iter()
            .zip(["mount A after remount", "mount B after remount"])
        {
            self.compare(step, &want, m.path(), l);
        }
        self.compare_snapshots(step);
    }

    // -- generating operations ------------------------------------------------------------

    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.rng.gen_range(0..v.len())]
    }

    /// An existing entry (not the root), or a new name in an existing directory, or (rarely) a
    /// name below a regular file or a missing directory.
    fn path(&mut self, t: &Tree) -> String {
        let entries: Vec<&str> = t
            .nodes
            .keys()
            .filter(|p| !p.is_empty())
            .map(String::as_str)
            .collect();
        let r = self.rng.gen_range(0..100);
        if r < 50 && !entries.is_empty() {
            return self.pick(&entries).to_owned();
        }
        let name = self.pick(NAMES);
        if r < 95 {
            let dirs: Vec<&str> = t
                .dirs()
                .into_iter()
                .filter(|d| d.is_empty() || d.split('/').count() < MAX_DEPTH)
                .collect();
            let d = self.pick(&dirs);
            return join_rel(d, name);
        }
        let files: Vec<&str> = t
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .map(|(p, _)| p.as_str())
            .collect();
        if !files.is_empty() && self.rng.gen_bool(0.5) {
            join_rel(self.pick(&files), name)
        } else {
            join_rel("zz", name)
        }
    }

    /// Preferably a name that does not exist yet, in an existing directory (for creating ops).
    fn new_path(&mut self, t: &Tree) -> String {
        if self.rng.gen_bool(0.7) {
            let free: Vec<String> = t
                .dirs()
                .into_iter()
                .filter(|d| d.is_empty() || d.split('/').count() < MAX_DEPTH)
                .flat_map(|d| NAMES.iter().map(move |n| join_rel(d, n)))
                .filter(|p| !t.nodes.contains_key(p))
                .collect();
            if !free.is_empty() {
                return free[self.rng.gen_range(0..free.len())].clone();
            }
        }
        self.path(t)
    }

    /// Preferably an existing regular file.
    fn file_path(&mut self, t: &Tree) -> String {
        let files: Vec<&str> = t
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .map(|(p, _)| p.as_str())
            .collect();
        if !files.is_empty() && self.rng.gen_bool(0.85) {
            self.pick(&files).to_owned()
        } else {
            self.path(t)
        }
    }

    fn content(&mut self) -> (u64, usize) {
        if !self.seeds.is_empty() && self.rng.gen_bool(0.15) {
            return self.seeds[self.rng.gen_range(0..self.seeds.len())];
        }
        let len = match self.rng.gen_range(0..100) {
            0..=9 => 0,
            10..=69 => self.rng.gen_range(1..4096),
            70..=96 => self.rng.gen_range(4096..96 << 10),
            _ => self.rng.gen_range(96 << 10..1 << 20),
        };
        let s = (self.rng.gen::<u64>(), len);
        self.seeds.push(s);
        s
    }

    fn mode(&mut self) -> u32 {
        [0o644, 0o600, 0o755, 0o640, 0o700, 0o444][self.rng.gen_range(0..6)]
    }

    fn symlink_target(&mut self, t: &Tree) -> String {
        // Relative targets only, never `..`: resolved the same in the model and in a mount.
        let entries: Vec<&str> = t
            .nodes
            .keys()
            .filter(|p| !p.is_empty())
            .map(String::as_str)
            .collect();
        match self.rng.gen_range(0..3) {
            0 if !entries.is_empty() => self.pick(&entries).to_owned(),
            1 => self.pick(NAMES).to_owned(),
            _ => format!("nowhere-{}", self.rng.gen_range(0..100)),
        }
    }

    fn gen(&mut self, t: &Tree) -> (Op, Exec) {
        let mount = if self.rng.gen_bool(0.5) {
            Exec::A
        } else {
            Exec::B
        };
        let size_of = |p: &str| match t.nodes.get(p).map(|n| &n.kind) {
            Some(Kind::File { size, .. }) => *size,
            _ => 0,
        };
        let op = match self.rng.gen_range(0..110) {
            0..=11 => {
                let (seed, len) = self.content();
                let path = self.new_path(t);
                Op::Create {
                    path,
                    mode: self.mode(),
                    excl: self.rng.gen_bool(0.3),
                    seed,
                    len,
                }
            }
            12..=23 => {
                let path = self.file_path(t);
                let size = size_of(&path);
                let off = self.rng.gen_range(0..size + (64 << 10));
                let len = self.rng.gen_range(1..16 << 10);
                Op::Write {
                    path,
                    off,
                    seed: self.rng.gen(),
                    len,
                }
            }
            24..=30 => {
                let path = self.file_path(t);
                let size = size_of(&path);
                let len = self.rng.gen_range(0..(size * 2 + 8192).min(4 << 20));
                Op::Truncate {
                    path,
                    len,
                    via_fd: self.rng.gen_bool(0.5),
                }
            }
            31..=39 => {
                let (from, to) = (self.path(t), self.path(t));
                let flags = match self.rng.gen_range(0..10) {
                    0..=6 => 0,
                    7 | 8 => libc::RENAME_NOREPLACE,
                    _ => libc::RENAME_EXCHANGE,
                };
                Op::Rename { from, to, flags }
            }
            40..=44 => Op::Link {
                from: self.file_path(t),
                to: self.new_path(t),
            },
            45..=49 => Op::Unlink { path: self.path(t) },
            50..=56 => Op::Mkdir {
                path: self.new_path(t),
                mode: [0o755, 0o700, 0o750][self.rng.gen_range(0..3)],
            },
            57..=60 => Op::Rmdir { path: self.path(t) },
            61..=64 => Op::Symlink {
                target: self.symlink_target(t),
                path: self.new_path(t),
            },
            65..=67 => Op::Chmod {
                path: self.path(t),
                mode: self.mode(),
            },
            68..=72 => {
                let len = self.rng.gen_range(0..64);
                Op::SetXattr {
                    path: self.path(t),
                    name: self.pick(XATTR_NAMES).to_owned(),
                    value: random_bytes(self.rng.gen(), len),
                    flags: [0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]
                        [self.rng.gen_range(0..4)],
                }
            }
            73..=74 => Op::RemoveXattr {
                path: self.path(t),
                name: self.pick(XATTR_NAMES).to_owned(),
            },
            // The CLI.
            75..=79 => {
                let (seed, len) = self.content();
                Op::Put {
                    dest: self.path(t),
                    name: self.pick(NAMES).to_owned(),
                    mode: self.mode(),
                    seed,
                    len,
                }
            }
            80..=84 => {
                let (from, to) = (self.path(t), self.path(t));
                let target = into_dir_or_self(&self.model, &to, base_name(&from));
                if target.starts_with(&format!("{from}/")) {
                    // `verfs mv /a /a/b` (a directory into its own subtree) is a known bug fixed
                    // elsewhere; the kernel refuses it before a mount sees it, so run it there.
                    return (Op::Rename { from, to, flags: 0 }, mount);
                }
                Op::Mv { from, to }
            }
            85..=88 => {
                let symbolic = self.rng.gen_bool(0.5);
                let target = if symbolic {
                    self.symlink_target(t)
                } else {
                    self.file_path(t)
                };
                Op::Ln {
                    target,
                    link: self.new_path(t),
                    symbolic,
                }
            }
            89..=92 => Op::Rm {
                path: self.path(t),
                recursive: self.rng.gen_bool(0.3),
            },
            93..=96 => Op::CliMkdir {
                path: self.new_path(t),
            },
            105.. => {
                let path = self.file_path(t);
                let size = size_of(&path);
                let mut w = || {
                    (
                        self.rng.gen_range(0..size + 16384),
                        self.rng.gen::<u64>(),
                        self.rng.gen_range(1..16384),
                    )
                };
                let (a, b) = (w(), w());
                Op::TwoWriters {
                    path,
                    a,
                    b,
                    b_closes_first: self.rng.gen_bool(0.5),
                }
            }
            100.. => {
                let path = self.file_path(t);
                let size = size_of(&path);
                let then = match self.rng.gen_range(0..4) {
                    0 => HeldThen::Unlink,
                    1 => HeldThen::RenameOver(self.file_path(t)),
                    2 => HeldThen::RenameTo(self.path(t)),
                    _ => {
                        // Preferably another name of the same inode.
                        let twin = t
                            .links
                            .iter()
                            .find(|g| g.contains(&path))
                            .and_then(|g| g.iter().find(|p| **p != path));
                        HeldThen::ReadOther(twin.cloned().unwrap_or_else(|| self.file_path(t)))
                    }
                };
                Op::Held {
                    path,
                    off: self.rng.gen_range(0..size + 8192),
                    seed: self.rng.gen(),
                    len: self.rng.gen_range(1..8192),
                    then,
                }
            }
            97 => {
                self.next_snapshot += 1;
                let path = self.file_path(t);
                let size = size_of(&path);
                Op::DirtySnapshot {
                    name: format!("s{}", self.next_snapshot),
                    off: self.rng.gen_range(0..size + 8192),
                    path,
                    via_b: self.rng.gen_bool(0.5),
                    seed: self.rng.gen(),
                    len: self.rng.gen_range(1..32768),
                }
            }
            _ => {
                self.next_snapshot += 1;
                Op::Snapshot {
                    name: format!("s{}", self.next_snapshot),
                }
            }
        };
        let exec = if op.is_cli() { Exec::Cli } else { mount };
        (op, exec)
    }

    // -- applying operations --------------------------------------------------------------

    fn apply_verfs(&self, op: &Op, exec: Exec) -> Outcome {
        let cli = |args: &[&str]| cli_outcome(&self.st.run(args));
        let abs = |p: &str| format!("/{p}");
        match (op, exec) {
            (
                Op::TwoWriters {
                    path,
                    a,
                    b,
                    b_closes_first,
                },
                _,
            ) => outcome((|| {
                let open = |m: &Mount| fs::OpenOptions::new().write(true).open(m.join(path));
                let (fa, fb) = (open(&self.mounts[0])?, open(&self.mounts[1])?);
                fa.write_all_at(&data(a.1, a.2), a.0)?;
                fb.write_all_at(&data(b.1, b.2), b.0)?;
                if *b_closes_first {
                    drop(fb);
                    drop(fa);
                } else {
                    drop(fa);
                    drop(fb);
                }
                Ok(())
            })()),
            (_, Exec::A | Exec::B) => apply_posix(self.mount(exec).path(), op),
            (Op::Put { dest, .. }, _) => cli(&["put", &self.put_src.to_string_lossy(), &abs(dest)]),
            (Op::Mv { from, to }, _) => cli(&["mv", &abs(from), &abs(to)]),
            (
                Op::Ln {
                    target,
                    link,
                    symbolic: true,
                },
                _,
            ) => cli(&["ln", "-s", target, &abs(link)]),
            (
                Op::Ln {
                    target,
                    link,
                    symbolic: false,
                },
                _,
            ) => cli(&["ln", &abs(target), &abs(link)]),
            (
                Op::Rm {
                    path,
                    recursive: true,
                },
                _,
            ) => cli(&["rm", "-r", &abs(path)]),
            (
                Op::Rm {
                    path,
                    recursive: false,
                },
                _,
            ) => cli(&["rm", &abs(path)]),
            (Op::CliMkdir { path }, _) => cli(&["mkdir", &abs(path)]),
            (Op::Snapshot { name }, _) => cli(&["snapshot", "create", name]),
            (
                Op::DirtySnapshot {
                    name,
                    path,
                    via_b,
                    off,
                    seed,
                    len,
                },
                _,
            ) => {
                let f = match fs::OpenOptions::new()
                    .write(true)
                    .open(self.mounts[usize::from(*via_b)].join(path))
                {
                    Ok(f) => f,
                    Err(e) => return outcome(Err(e)),
                };
                if let Err(e) = f.write_all_at(&data(*seed, *len), *off) {
                    return outcome(Err(e));
                }
                let r = cli(&["snapshot", "create", name]);
                drop(f);
                r
            }
            _ => unreachable!("{op:?} by {exec:?}"),
        }
    }

    fn step(&mut self, step: usize) {
        let before = self.model_tree(step);
        let (op, exec) = self.gen(&before);
        if let Op::Put {
            name,
            mode,
            seed,
            len,
            ..
        } = &op
        {
            // The local file `verfs put` copies (its name is the name it gets in a directory).
            let dir = self.put_src.parent().expect("put dir").to_path_buf();
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            self.put_src = dir.join(name);
            fs::write(&self.put_src, data(*seed, *len)).unwrap();
            fs::set_permissions(&self.put_src, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let want = if op.is_cli() {
            apply_cli_model(&self.model, &self.tmp, &self.put_src, &op)
        } else {
            apply_posix(&self.model, &op)
        };
        let got = self.apply_verfs(&op, exec);
        self.log
            .push(format!("{step:4} {exec:?}: {op:?} -> {got:?}"));
        if want != got {
            self.fail(
                step,
                &format!("outcome differs: model {want:?}, verfs {got:?}"),
            );
        }
        let after = self.model_tree(step);
        if let (Op::Snapshot { name } | Op::DirtySnapshot { name, .. }, Outcome::Ok) = (&op, &got) {
            self.snapshots.push((name.clone(), after.clone()));
            let m = &self.mounts[self.rng.gen_range(0..2)];
            self.compare(
                step,
                &after,
                &m.join(format!(".snapshots/{name}")),
                &format!("snapshot {name}"),
            );
        }
        // Seen through the other process: the other mount (either one after a CLI command).
        let other = match exec {
            Exec::A => Exec::B,
            Exec::B => Exec::A,
            Exec::Cli if self.rng.gen_bool(0.5) => Exec::A,
            Exec::Cli => Exec::B,
        };
        self.compare(
            step,
            &after,
            self.mount(other).path(),
            &format!("mount {other:?}"),
        );
    }
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
}

#[test]
fn model_two_mounts_and_cli() {
    require_fuse!();
    let _heavy = heavy();
    let seed = env_num("VERFS_MODEL_SEED").unwrap_or_else(seed);
    let steps = env_num("VERFS_MODEL_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    eprintln!("model test: seed {seed}, {steps} steps (VERFS_MODEL_SEED / VERFS_MODEL_STEPS)");
    let start = Instant::now();
    let st = TestStore::new();
    let mounts = [Mount::new(&st, &[]), Mount::new(&st, &[])];
    let side = st.scratch_dir("model-side");
    let model = side.join("model");
    fs::create_dir(&model).unwrap();
    // The model's root looks like the mount's root.
    let root_mode = fs::metadata(mounts[0].path()).unwrap().mode() & 0o7777;
    fs::set_permissions(&model, fs::Permissions::from_mode(root_mode)).unwrap();
    let mut run = Run {
        seed,
        rng: StdRng::seed_from_u64(seed),
        st,
        mounts,
        tmp: side.join("put-tmp"),
        put_src: side.join("put").join("x"),
        model,
        log: Vec::new(),
        snapshots: Vec::new(),
        seeds: Vec::new(),
        next_snapshot: 0,
    };
    for step in 0..steps {
        run.step(step);
        if step % CLI_EVERY == CLI_EVERY - 1 {
            let t = run.model_tree(step);
            run.compare_cli(step, &t);
        }
        if step % REMOUNT_EVERY == REMOUNT_EVERY - 1 {
            run.remount_and_compare(step);
        }
    }
    let last = steps.saturating_sub(1);
    run.remount_and_compare(last);
    let t = run.model_tree(last);
    run.compare_cli(last, &t);
    let [a, b] = run.mounts;
    drop(a);
    drop(b);
    run.st.assert_fsck_clean();
    // What the run exercised, so a run that only ever hits errors shows.
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for l in &run.log {
        let op = l
            .split(": ")
            .nth(1)
            .and_then(|s| s.split([' ', '{']).next())
            .unwrap_or("?");
        let res = l.rsplit("-> ").next().unwrap_or("?");
        let res = if res.starts_with("Read(") {
            "Read"
        } else {
            res
        };
        *classes.entry(format!("{op} {res}")).or_default() += 1;
    }
    if std::env::var_os("VERFS_MODEL_LOG").is_some() {
        eprintln!("{}", run.log.join("\n"));
    }
    eprintln!("model test: outcomes {classes:?}");
    eprintln!(
        "model test: seed {seed}, {steps} steps, {} entries at the end, {} snapshots, {:.1}s",
        t.nodes.len(),
        run.snapshots.len(),
        start.elapsed().as_secs_f64()
    );
}
