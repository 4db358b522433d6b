//! What the CLI prints and which names it accepts (issue 11, items 1.9 and 1.10): names that are
//! not UTF-8 round-trip through every command, `ls` and `ls -l` print what GNU `ls` prints for
//! the same tree (GNU `ls` on a local copy is the oracle), `ls` takes several paths, `put` prints
//! a summary, `gc` counts what is left correctly.
#![allow(clippy::unwrap_used)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use verfs_test_support::cli::{new_store, ok, verfs};
use verfs_test_support::verfs_bin;

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// `/d/NAME` as an argument.
fn under(dir: &str, name: &[u8]) -> OsString {
    let mut v = format!("{dir}/").into_bytes();
    v.extend_from_slice(name);
    OsString::from_vec(v)
}

/// GNU `ls` itself (C.UTF-8, so that printable UTF-8 is printed as such, as on a UTF-8 terminal).
fn gnu_ls(dir: &Path, args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new("ls")
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ls {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

const ODD_NAMES: &[&[u8]] = &[
    b"\xff\xfe",
    b"a\xffb",
    b"tab\there",
    b"caf\xc3\xa9",
    b"it's",
    b"a b",
];

/// Issue 11, 1.9: a stored name like `$'\xff\xfe'` could not be named (`cat`, `rm`, `mv`, `stat`
/// failed with "invalid UTF-8 was detected") and `ls` printed U+FFFD. Every byte must round-trip.
#[test]
fn names_that_are_not_utf8_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("d");
    fs::create_dir(&src).unwrap();
    for (k, n) in ODD_NAMES.iter().enumerate() {
        fs::write(src.join(OsStr::from_bytes(n)), format!("content {k}\n")).unwrap();
    }
    ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/d")],
    );

    // To a pipe: the raw bytes, one name per line, in byte order (as `ls -1` in the C locale).
    let mut want: Vec<&[u8]> = ODD_NAMES.to_vec();
    want.sort();
    let listed = ok(&store, &["ls", "/d"]).stdout;
    let got: Vec<&[u8]> = listed
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        got,
        want,
        "ls to a pipe: {:?}",
        String::from_utf8_lossy(&listed)
    );

    // Quoted as GNU ls quotes them on a terminal: compared with GNU ls on the local copy.
    let quoted = ok(&store, &["ls", "--quoting-style", "shell-escape", "/d"]).stdout;
    assert_eq!(
        String::from_utf8_lossy(&quoted),
        String::from_utf8_lossy(&gnu_ls(&src, &["-1", "--quoting-style=shell-escape"])),
    );
    assert!(String::from_utf8_lossy(&quoted).contains(r"''$'\377\376'"));

    // JSON: a string for UTF-8 names, {"bytes_hex"} for the others.
    let j: serde_json::Value = serde_json::from_slice(
        &verfs(&store)
            .args(["--json", "ls", "/d"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let names: Vec<serde_json::Value> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert!(
        names.contains(&serde_json::json!({ "bytes_hex": "fffe" })),
        "{names:?}"
    );
    assert!(
        names.contains(&serde_json::json!({ "bytes_hex": "61ff62" })),
        "{names:?}"
    );
    assert!(names.contains(&serde_json::json!("café")), "{names:?}");

    // cat and stat by the raw name.
    let ff = under("/d", b"\xff\xfe");
    assert_eq!(ok(&store, &[OsStr::new("cat"), &ff]).stdout, b"content 0\n");
    let st: serde_json::Value = serde_json::from_slice(
        &ok(&store, &[OsStr::new("--json"), OsStr::new("stat"), &ff]).stdout,
    )
    .unwrap();
    assert_eq!(st["size"], 10);
    assert_eq!(st["name"], serde_json::json!({ "bytes_hex": "2f642ffffe" }));

    // mv to another name that is not UTF-8, then get it back, alone and as part of the tree.
    let moved = under("/d", b"\x80moved\xc0");
    ok(&store, &[OsStr::new("mv"), &ff, &moved]);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    ok(&store, &[OsStr::new("get"), &moved, out.as_os_str()]);
    assert_eq!(
        fs::read(out.join(OsStr::from_bytes(b"\x80moved\xc0"))).unwrap(),
        b"content 0\n"
    );
    let tree = tmp.path().join("tree");
    ok(
        &store,
        &[OsStr::new("get"), OsStr::new("/d"), tree.as_os_str()],
    );
    for (k, n) in ODD_NAMES.iter().enumerate().skip(1) {
        assert_eq!(
            fs::read(tree.join(OsStr::from_bytes(n))).unwrap(),
            format!("content {k}\n").as_bytes(),
            "{}",
            n.escape_ascii()
        );
    }

    // Symlink targets and mkdir/rm by raw name.
    ok(
        &store,
        &[
            OsStr::new("ln"),
            OsStr::new("-s"),
            &os(b"\xfetarget"),
            &under("/d", b"l\xfe"),
        ],
    );
    let lst = ok(&store, &["ls", "-l", "/d"]).stdout;
    assert!(
        lst.windows(14).any(|w| w == b"l\xfe -> \xfetarget\n"),
        "{}",
        lst.escape_ascii()
    );
    ok(&store, &[OsStr::new("mkdir"), &under("/d", b"dir\xff")]);
    for n in [&b"\x80moved\xc0"[..], b"l\xfe", b"dir\xff"] {
        ok(
            &store,
            &[OsStr::new("rm"), OsStr::new("-r"), &under("/d", n)],
        );
    }
    let after = ok(&store, &["ls", "/d"]).stdout;
    assert_eq!(
        after
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        ODD_NAMES.len() - 1
    );
    ok(&store, &["fsck"]);
}

/// What `verfs ls` prints on a terminal (a pty from `script`): quoted like GNU ls.
#[test]
fn names_are_shell_escaped_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs `script` (util-linux)"
        );
        eprintln!("\n*** SKIPPED: `script` (util-linux) is not installed ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("d");
    fs::create_dir(&src).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"\xff\xfe")), b"x").unwrap();
    ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/d")],
    );
    let bin = verfs_bin();
    let o = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} -s {} ls /d", bin.display(), store.display()),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains(r"''$'\377\376'"), "on a terminal: {shown:?}");
}

/// Issue 11, 1.10: `ls -l` printed raw epoch seconds and numeric ids. It must print what GNU
/// `ls -l` prints for the same files (mode, links, user, group, size, date, name); `--json`
/// keeps the numbers.
#[test]
fn ls_long_prints_like_gnu_ls() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("d");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("recent"), vec![7u8; 12345]).unwrap();
    fs::write(src.join("old"), b"old\n").unwrap();
    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("sticky-noexec"), b"").unwrap();
    std::os::unix::fs::symlink("recent", src.join("link")).unwrap();
    let set = |name: &str, mode: u32, when: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
        let st = std::process::Command::new("touch")
            .args(["-h", "-d", when])
            .arg(src.join(name))
            .status()
            .unwrap();
        assert!(st.success());
    };
    set("old", 0o640, "2019-03-07 08:09:10 UTC");
    set("setuid", 0o4755, "2 days ago");
    set("sticky-noexec", 0o1644, "3 hours ago");
    if unsafe { libc::geteuid() } == 0 {
        // An id without a name is printed as the number.
        std::os::unix::fs::lchown(src.join("old"), Some(54321), Some(54322)).unwrap();
    }
    ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/d")],
    );
    let got = verfs(&store)
        .env("TZ", "UTC")
        .args(["ls", "-l", "/d"])
        .output()
        .unwrap();
    assert!(got.status.success());
    let want = gnu_ls(&src, &["-l"]);
    let want: Vec<&[u8]> = want
        .split(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"total "))
        .collect();
    let got: Vec<&[u8]> = got.stdout.split(|&b| b == b'\n').collect();
    assert_eq!(
        got.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    // JSON keeps numbers.
    let j: serde_json::Value =
        serde_json::from_slice(&ok(&store, &["--json", "ls", "-l", "/d/old"]).stdout).unwrap();
    assert_eq!(j[0]["mtime"], 1_551_946_150);
    assert!(j[0]["uid"].is_u64() && j[0]["size"] == 4, "{j}");
}

/// Issue 11, 1.10: `ls` took one path only. Several are listed as GNU ls lists them: the
/// non-directories first, then each directory under a "PATH:" header.
#[test]
fn ls_takes_several_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("t");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/x"), b"1").unwrap();
    fs::write(src.join("a/y"), b"2").unwrap();
    fs::write(src.join("b/z"), b"3").unwrap();
    fs::write(src.join("f"), b"4").unwrap();
    ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/t")],
    );
    // Relative store paths name the same entries as relative local paths from `tmp`.
    let args = ["t/b", "t/f", "t/a"];
    let mut v = vec!["ls"];
    v.extend(args);
    assert_eq!(
        String::from_utf8_lossy(&ok(&store, &v).stdout),
        String::from_utf8_lossy(&gnu_ls(tmp.path(), &args))
    );
    let j: serde_json::Value =
        serde_json::from_slice(&ok(&store, &["--json", "ls", "t/a", "t/b"]).stdout).unwrap();
    assert_eq!(j[0]["path"], "t/a");
    assert_eq!(j[1]["entries"][0]["name"], "z");
    // A missing path is reported; the others are still listed; the exit status says so.
    let o = verfs(&store).args(["ls", "nope", "t/a"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    // As GNU ls: the header is printed because two paths were given.
    assert_eq!(o.stdout, b"t/a:\nx\ny\n");
}

/// Issue 11, 1.10: a successful `put` printed nothing at all. It prints one summary line on
/// stderr (nothing with `-q`; `--json` prints only the report).
#[test]
fn put_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let src = tmp.path().join("s");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("one"), vec![1u8; 100_000]).unwrap();
    fs::write(src.join("sub/two"), b"two").unwrap();
    let o = ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/s")],
    );
    let line = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.stdout.is_empty());
    assert_eq!(line.lines().count(), 1, "{line:?}");
    for part in [
        "2 files",
        "2 directories",
        "100003 bytes",
        "bytes new",
        "added to the store",
        " s\n",
    ] {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
    // The same again: every chunk is already stored.
    let o = ok(
        &store,
        &[OsStr::new("put"), src.as_os_str(), OsStr::new("/s2")],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 bytes new in 0 chunks"),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = ok(
        &store,
        &[
            OsStr::new("put"),
            OsStr::new("-q"),
            src.as_os_str(),
            OsStr::new("/s3"),
        ],
    );
    assert!(o.stderr.is_empty() && o.stdout.is_empty());
    let o = ok(
        &store,
        &[
            OsStr::new("--json"),
            OsStr::new("put"),
            src.as_os_str(),
            OsStr::new("/s4"),
        ],
    );
    assert!(o.stderr.is_empty());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["files"], 2);
}

/// Issue 11, 1.10: the `gc` summary counted a deleted pack under "garbage left".
#[test]
fn gc_summary_does_not_count_a_deleted_pack_as_garbage_left() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let noise = |seed: u64| {
        let mut x = seed | 1;
        (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    for (k, n) in ["r1", "r2"].iter().enumerate() {
        fs::write(tmp.path().join(n), noise(k as u64 + 1)).unwrap();
        ok(
            &store,
            &[
                OsString::from("put"),
                tmp.path().join(n).into(),
                format!("/{n}").into(),
            ],
        );
    }
    ok(&store, &["rm", "/r1"]);
    let o = ok(&store, &["gc"]);
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(line.contains(" 1 deleted"), "{line}");
    assert!(
        line.contains("0 bytes of garbage left in 0 packs"),
        "{line}"
    );
}
