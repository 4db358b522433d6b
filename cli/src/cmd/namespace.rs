//! `ls`, `stat`, `mkdir`, `rm`, `mv`, `ln`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use verfs_engine::meta::{FileKind, Inode};

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

fn mode_string(i: &Inode) -> String {
    let mut s = String::new();
    s.push(kind_char(i.kind));
    for shift in [6, 3, 0] {
        let b = (i.perm >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn inode_json(name: &str, i: &Inode) -> serde_json::Value {
    serde_json::json!({
        "name": name, "ino": i.ino.0, "kind": format!("{:?}", i.kind).to_lowercase(),
        "mode": format!("{:o}", i.perm), "nlink": i.nlink, "uid": i.uid, "gid": i.gid, "size": i.size,
        "mtime": i.mtime.secs, "mtime_nsec": i.mtime.nsecs, "atime": i.atime.secs, "ctime": i.ctime.secs,
        "target": if i.kind == FileKind::Symlink { Some(String::from_utf8_lossy(&i.target).into_owned()) } else { None },
    })
}

pub fn ls(cli: &Cli, path: &str, long: bool) -> Result<ExitCode> {
    let store = super::open(cli, "cli ls")?;
    let entries = store.list(path)?;
    let mut out = std::io::stdout().lock();
    if cli.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(n, i)| inode_json(&String::from_utf8_lossy(n), i))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
    } else {
        for (name, i) in &entries {
            let name = String::from_utf8_lossy(name);
            if long {
                let link = if i.kind == FileKind::Symlink {
                    format!(" -> {}", String::from_utf8_lossy(&i.target))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{} {:>3} {:>5} {:>5} {:>12} {:>10} {name}{link}",
                    mode_string(i),
                    i.nlink,
                    i.uid,
                    i.gid,
                    i.size,
                    i.mtime.secs
                )?;
            } else {
                writeln!(out, "{name}")?;
            }
        }
    }
    drop(out);
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn stat(cli: &Cli, path: &str) -> Result<ExitCode> {
    let store = super::open(cli, "cli stat")?;
    let i = store.stat(path)?;
    if cli.json {
        println!("{}", inode_json(path, &i));
    } else {
        println!("  File: {path}");
        println!(
            "  Size: {}  Links: {}  Inode: {}  Type: {:?}",
            i.size, i.nlink, i.ino, i.kind
        );
        println!(
            "Access: ({:04o}/{})  Uid: {}  Gid: {}",
            i.perm,
            mode_string(&i),
            i.uid,
            i.gid
        );
        println!("Modify: {}.{:09}", i.mtime.secs, i.mtime.nsecs);
        println!("Change: {}.{:09}", i.ctime.secs, i.ctime.nsecs);
        if i.kind == FileKind::Symlink {
            println!("Target: {}", String::from_utf8_lossy(&i.target));
        }
    }
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn mkdir(cli: &Cli, path: &str, parents: bool, mode: &str) -> Result<ExitCode> {
    let perm =
        u32::from_str_radix(mode, 8).with_context(|| format!("mode {mode:?} is not octal"))?;
    let store = super::open(cli, "cli mkdir")?;
    store.mkdir(path, perm, parents)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rm(cli: &Cli, path: &str, recursive: bool) -> Result<ExitCode> {
    let store = super::open(cli, "cli rm")?;
    store.remove(path, recursive)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn mv(cli: &Cli, src: &str, dst: &str) -> Result<ExitCode> {
    let store = super::open(cli, "cli mv")?;
    store.rename(src, dst)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}

pub fn ln(cli: &Cli, target: &str, link: &str, symbolic: bool) -> Result<ExitCode> {
    let store = super::open(cli, "cli ln")?;
    store.link(target, link, symbolic)?;
    super::finish(store)?;
    Ok(ExitCode::SUCCESS)
}
