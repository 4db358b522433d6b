//! `ls`, `stat`, `mkdir`, `rm`, `mv`, `ln`. Paths are bytes from the command line to the engine;
//! names are printed by [`super::names`].

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use verfs_engine::meta::{FileKind, Inode};

use super::bytes;
use super::names::{self, Quoting};
use crate::Cli;

fn kind_char(k: FileKind) -> char {
    match k {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDev => 'c',
        FileKind::BlockDev => 'b',
    }
}

/// `ls -l`'s mode column: type, then rwx for owner, group, others, with setuid/setgid/sticky
/// as `s`/`S`, `s`/`S`, `t`/`T`.
fn mode_string(i: &Inode) -> String {
    let mut s = String::new();
    s.push(kind_char(i.kind));
    for (shift, special, on, off) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let b = (i.perm >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(match (b & 1 != 0, i.perm & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn inode_json(name: &[u8], i: &Inode) -> serde_json::Value {
    serde_json::json!({
        "name": names::json(name), "ino": i.ino.0, "kind": format!("{:?}", i.kind).to_lowercase(),
        "mode": format!("{:o}", i.perm), "nlink": i.nlink, "uid": i.uid, "gid": i.gid, "size": i.size,
        "mtime": i.mtime.secs, "mtime_nsec": i.mtime.nsecs, "atime": i.atime.secs, "ctime": i.ctime.secs,
        "target": if i.kind == FileKind::Symlink { Some(names::json(&i.target)) } else { None },
    })
}

/// User and group names by id, as `ls -l` shows them (the number when the id has no name).
#[derive(Default)]
struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    fn user(&mut self, uid: u32) -> &str {
        self.users.entry(uid).or_insert_with(|| {
            let mut buf = vec![0 as libc::c_char; 4096];
            let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
            let mut res: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`'s fields.
            let rc =
                unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
            if rc == 0 && !res.is_null() {
                // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
                unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                uid.to_string()
            }
        })
    }

    fn group(&mut self, gid: u32) -> &str {
        self.groups.entry(gid).or_insert_with(|| {
            let mut buf = vec![0 as libc::c_char; 4096];
            let mut gr: libc::group = unsafe { std::mem::zeroed() };
            let mut res: *mut libc::group = std::ptr::null_mut();
            // SAFETY: as in `user`.
            let rc =
                unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
            if rc == 0 && !res.is_null() {
                // SAFETY: on success gr_name points to a NUL-terminated string inside `buf`.
                unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                gid.to_string()
            }
        })
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ls -l`'s time column in local time: `Dec  1 19:53` for the past six months, else
/// `Dec  1  2025` (GNU ls: a future time also gets the year).
fn ls_date(secs: i64, now: i64) -> String {
    // GNU ls: half of a mean Gregorian year.
    const SIX_MONTHS: i64 = 31_556_952 / 2;
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data and localtime_r only writes it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return secs.to_string();
    }
    let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("???");
    if now - SIX_MONTHS < secs && secs <= now {
        format!(
            "{month} {:>2} {:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min
        )
    } else {
        format!("{month} {:>2}  {}", tm.tm_mday, tm.tm_year as i64 + 1900)
    }
}

/// Names with their inodes, as listed.
type Rows = Vec<(Vec<u8>, Inode)>;

/// Rows of `ls -l`, columns aligned as GNU ls aligns them.
fn write_long(
    out: &mut dyn Write,
    rows: &[(Vec<u8>, Inode)],
    q: Quoting,
    owners: &mut Owners,
) -> std::io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|(_, i)| {
            let size = match i.kind {
                FileKind::CharDev | FileKind::BlockDev => {
                    let (major, minor) = (
                        ((i.rdev >> 8) & 0xfff) | ((i.rdev >> 32) & !0xfff),
                        (i.rdev & 0xff) | ((i.rdev >> 12) & !0xff),
                    );
                    format!("{major}, {minor}")
                }
                _ => i.size.to_string(),
            };
            [
                mode_string(i),
                i.nlink.to_string(),
                owners.user(i.uid).to_owned(),
                owners.group(i.gid).to_owned(),
                size,
            ]
        })
        .collect();
    let width = |k: usize| cells.iter().map(|c| c[k].len()).max().unwrap_or(0);
    let (wl, wu, wg, ws) = (width(1), width(2), width(3), width(4));
    for ((name, i), c) in rows.iter().zip(&cells) {
        write!(
            out,
            "{} {:>wl$} {:<wu$} {:<wg$} {:>ws$} {} ",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            ls_date(i.mtime.secs, now)
        )?;
        out.write_all(&q.quote(name))?;
        if i.kind == FileKind::Symlink {
            out.write_all(b" -> ")?;
            out.write_all(&q.quote(&i.target))?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn write_rows(
    out: &mut dyn Write,
    rows: &[(Vec<u8>, Inode)],
    long: bool,
    q: Quoting,
    owners: &mut Owners,
) -> std::io::Result<()> {
    if long {
        return write_long(out, rows, q, owners);
    }
    for (name, _) in rows {
        out.write_all(&q.quote(name))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `ls [-l] PATH...`, as GNU ls orders it: the arguments that are not directories first (named as
/// given), then each directory's entries, under a "PATH:" header when there are several
/// arguments. An argument that cannot be listed is reported and the others are still listed
/// (exit 1 at the end).
pub fn ls(cli: &Cli, paths: &[OsString], long: bool, quoting: Option<Quoting>) -> Result<ExitCode> {
    let store = super::open(cli, "cli ls")?;
    let q = Quoting::for_stdout(quoting);
    let mut failed = false;
    // (argument, its entries): the non-directories first, then the directories, each sorted.
    let mut files: Vec<(Vec<u8>, Rows)> = Vec::new();
    let mut dirs: Vec<(Vec<u8>, Rows)> = Vec::new();
    let mut sorted: Vec<&OsString> = paths.iter().collect();
    sorted.sort_by(|a, b| bytes(a).cmp(bytes(b)));
    for p in sorted {
        match store.list(bytes(p)) {
            Ok(entries) => {
                // `/.snapshots` lists but cannot be stat'ed: it is a directory.
                let is_dir = store
                    .stat(bytes(p))
                    .map_or(true, |i| i.kind == FileKind::Dir);
                if is_dir { &mut dirs } else { &mut files }.push((bytes(p).to_vec(), entries));
            }
            Err(e) => {
                eprintln!("verfs: ls: {e}");
                failed = true;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if cli.json {
        let rows = |v: &Rows| -> Vec<serde_json::Value> {
            v.iter().map(|(n, i)| inode_json(n, i)).collect()
        };
        let listed = files.iter().chain(&dirs);
        let v: Vec<serde_json::Value> = if paths.len() == 1 {
            // One path: its entries, as before several were taken.
            listed.flat_map(|(_, e)| rows(e)).collect()
        } else {
            listed
                .map(|(p, e)| serde_json::json!({ "path": names::json(p), "entries": rows(e) }))
                .collect()
        };
        writeln!(out, "{}", serde_json::Value::Array(v))?;
    } else {
        let mut owners = Owners::default();
        // A non-directory is shown by its argument, as given (`ls d/f` prints `d/f`).
        let files: Rows = files
            .into_iter()
            .flat_map(|(p, e)| e.into_iter().map(move |(_, i)| (p.clone(), i)))
            .collect();
        write_rows(&mut out, &files, long, q, &mut owners)?;
        let mut first = files.is_empty();
        for (p, entries) in &dirs {
            if !first {
                out.write_all(b"\n")?;
            }
            first = false;
            if paths.len() > 1 {
                out.write_all(&q.quote(p))?;
                out.write_all(b":\n")?;
            }
            write_rows(&mut out, entries, long, q, &mut owners)?;
        }
    }
    out.flush()?;
    drop(out);
    super::finish(store)?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn stat(cli: &Cli, path: &OsStr) -> Result<ExitCode> {
    let store = super::open(cli, "cli stat")?;
    let i = store.stat(bytes(path))?;
    if cli.json {
        println!("{}", inode_json(bytes(path), &i));
    } else {
        let q = Quoting::for_stdout(None);
        let mut out = std::io::stdout().lock();
        out.write_all(b"  File: ")?;
        out.write_all(&q.quote(bytes(path)))?;
        writeln!(out)?;
        writeln!(
            out,
            "  Size: {}  Links: {}  Inode: {}  Type: {:?}",
            i.size, i.nlink, i.ino, i.kind
        )?;
        let mut owners = Owners::default();
        let user = owners.user(i.uid).to_owned();
        writeln!(
            out,
            "Access: ({:04o}/{})  Uid: ({}/{user})  Gid: ({}/{})",
            i.perm,
            mode_string(&i),
            i.uid,
            i.gid,
            owners.group(i.gid)
        )?;
        writeln!(out, "Modify: {}.{:09}", i.mtime.secs, i.mtime.nsecs)?;
        writeln!(out, "Change: {}.{:09}", i.ctime.secs, i.ctime.nsecs)?;
        if i.kind == FileKind::Symlink {
            out.write_all(b"Target: ")?;
            out.write_all(&q.quote(&i.target))?;
            writeln!(out)?;
        }
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn mkdir(cli: &Cli, path: &OsStr, parents: bool, mode: &str) -> Result<ExitCode> {
    let perm =
        u32::from_str_radix(mode, 8).with_context(|| format!("mode {mode:?} is not octal"))?;
    let store = super::open(cli, "cli mkdir")?;
    store.mkdir(bytes(path), perm, parents)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rm(cli: &Cli, path: &OsStr, recursive: bool) -> Result<ExitCode> {
    let store = super::open(cli, "cli rm")?;
    store.remove(bytes(path), recursive)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn mv(cli: &Cli, src: &OsStr, dst: &OsStr) -> Result<ExitCode> {
    let store = super::open(cli, "cli mv")?;
    store.rename(bytes(src), bytes(dst))?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn ln(cli: &Cli, target: &OsStr, link: &OsStr, symbolic: bool) -> Result<ExitCode> {
    let store = super::open(cli, "cli ln")?;
    store.link(bytes(target), bytes(link), symbolic)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}
