//! Copy-on-write snapshots, read back by the CLI and through a FUSE mount.
//!
//! Proves data-layout.md 5.9 and 6.7: a snapshot keeps every file's bytes while the live tree is
//! overwritten, appended to, truncated, renamed and deleted ([SNAP-1]: the tree at one log
//! position); it is served read-only at `/.snapshots/NAME` (`EROFS` for every change) and is
//! not listed in the mount's root; `snapshot restore` shares chunks instead of copying data; the
//! barrier makes every live process commit what it has written, so bytes written to a file that
//! is still open in a mount are in a snapshot taken by another process ([SNAP-2]); snapshot names
//! are single path components, unique, and `/.snapshots` is a reserved name ([SNAP-6]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::*;

const T: Duration = Duration::from_secs(60);

/// The big file of the tree (several MiB, so it spans many chunks).
const BIG: &str = "a/big.bin";
const BIG_LEN: usize = 6 << 20;

/// Sizes of the small files: empty, one byte, around block and chunk boundaries, up to 1 MB.
const SIZES: [usize; 29] = [
    0, 1, 17, 511, 4095, 4096, 4097, 10_000, 65_535, 65_536, 65_537, 100_000, 131_072, 200_000,
    250_000, 333_333, 500_000, 777_777, 1_000_000, 3, 99, 1_024, 8_192, 16_385, 40_000, 70_000,
    123_456, 150_001, 300_000,
];

/// Directories the small files are spread over.
const DIRS: [&str; 6] = ["a", "a/b", "a/b/c", "d", "e", "e/f"];

/// The small files: `DIR/fNN.bin`.
fn small_files() -> Vec<(String, usize)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, len)| (format!("{}/f{i:02}.bin", DIRS[i % DIRS.len()]), *len))
        .collect()
}

/// Build the host tree under `src`; returns every regular file's relative path and sha256.
fn build_tree(src: &Path, seed: u64) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    for d in DIRS {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (i, (rel, len)) in small_files().into_iter().enumerate() {
        let sha = write_random_file(&src.join(&rel), seed + i as u64, len);
        want.insert(rel, sha);
    }
    let sha = write_random_file(&src.join(BIG), seed + 1000, BIG_LEN);
    want.insert(BIG.to_owned(), sha);
    std::os::unix::fs::symlink("big.bin", src.join("a/link-to-big")).unwrap();
    want
}

/// `sha256sum` lines of `want` as [`tree_sha256`] prints them (paths `./rel`, sorted bytewise).
fn sha_lines(want: &BTreeMap<String, String>) -> String {
    want.iter()
        .map(|(rel, sha)| format!("{sha}  ./{rel}\n"))
        .collect()
}

fn stat(fmt: &str, p: &Path) -> String {
    ext_ok("stat", &["-c", fmt, &p.to_string_lossy()])
        .stdout_str()
        .trim_end()
        .to_owned()
}

/// `script` must fail, and name "Read-only file system".
fn assert_erofs(script: &str) {
    let out = sh(script);
    assert!(
        !out.success() && out.stderr.contains("Read-only file system"),
        "must fail with EROFS:\n{}",
        out.describe()
    );
}

/// `verfs ...` must fail with an error that names every one of `words`.
fn assert_refused(st: &TestStore, args: &[&str], words: &[&str]) {
    let out = st.run(args);
    assert!(
        !out.success() && words.iter().all(|w| out.stderr.contains(w)),
        "must fail naming {words:?}:\n{}",
        out.describe()
    );
}

/// Snapshot `s1` as the mount at `mp` serves it: exactly the files of `want`, byte for byte,
/// with the symlink, the hard link and the original mode; every change refused; `.snapshots`
/// absent from the root listing.
fn check_mount(mp: &Path, want: &BTreeMap<String, String>, mode0: &str, when: &str) {
    let snap = mp.join(".snapshots/s1/src");
    assert_eq!(
        tree_sha256(&snap),
        sha_lines(want),
        "{when}: find -type f + sha256sum of the snapshot"
    );
    assert_eq!(
        fs::read_link(snap.join("a/link-to-big")).unwrap(),
        Path::new("big.bin"),
        "{when}: symlink"
    );
    let (f0, hard) = (snap.join(&small_files()[0].0), snap.join("d/hard"));
    assert_eq!(stat("%a", &f0), mode0, "{when}: mode kept in the snapshot");
    let (a, b) = (stat("%i %h", &f0), stat("%i %h", &hard));
    assert!(
        a == b && a.ends_with(" 2"),
        "{when}: hard link in the snapshot: {a} vs {b}"
    );
    // Visible by name, not listed: `ls -a`, `find` and `rsync` of the mount skip it.
    let root = ext_ok("ls", &["-a", &mp.to_string_lossy()]).stdout_str();
    assert!(
        !root.lines().any(|l| l == ".snapshots"),
        "{when}: ls -a of the mount lists .snapshots:\n{root}"
    );
    let found = sh_ok(&format!("find {} | grep -c snapshots || true", shq(mp))).stdout_str();
    assert_eq!(found.trim(), "0", "{when}: find descends into .snapshots");
    assert_eq!(
        ext_ok("ls", &[mp.join(".snapshots")]).stdout_str(),
        "s1\n",
        "{when}: ls of .snapshots"
    );
    assert_eq!(stat("%F %a %u", &mp.join(".snapshots")), "directory 555 0");
    sh_ok(&format!(
        "cd {}/.snapshots/s1/src/a && cat big.bin > /dev/null",
        shq(mp)
    ));
    let s = shq(mp.join(".snapshots/s1"));
    for script in [
        format!("touch {s}/new-file"),
        format!("touch {s}/src/a/big.bin"),
        format!("rm {s}/src/a/big.bin"),
        format!("echo x > {s}/src/d/hard"),
        format!("echo x >> {s}/src/d/hard"),
        format!("mkdir {s}/src/newdir"),
        format!("rmdir {s}/src/a/b/c"),
        format!("mv {s}/src/a/big.bin {s}/src/a/moved"),
        format!("mv {s}/src/a/big.bin {}/stolen", shq(mp)),
        format!("ln {s}/src/a/big.bin {s}/src/a/hard2"),
        format!("ln -s x {s}/src/a/sym2"),
        format!("chmod 600 {s}/src/a/big.bin"),
        format!("truncate -s 0 {s}/src/a/big.bin"),
        format!("setfattr -n user.x -v 1 {s}/src/a/big.bin"),
        format!("rm -rf {}", shq(mp.join(".snapshots"))),
    ] {
        assert_erofs(&script);
    }
    // Still intact after every refused change.
    assert_eq!(
        tree_sha256(&snap),
        sha_lines(want),
        "{when}: snapshot after refused changes"
    );
}

// A tree put by the CLI, snapshotted, then mutated through a mount: the snapshot keeps every
// byte, read by `verfs cat`/`verfs get` and through the mount (before and after a remount);
// `snapshot list` counts it; `snapshot restore` brings a file back without copying data.
#[test]
fn snapshot_survives_mutation_cli_and_mount() {
    require_fuse!();
    let _g = heavy();
    let st = TestStore::new();
    let src = st.scratch_dir("src");
    let mut want = build_tree(&src, seed());
    st.ok(&["put", src.to_str().unwrap(), "/"]);
    let f0 = small_files()[0].0.clone();
    st.ok(&["ln", &format!("/src/{f0}"), "/src/d/hard"]);
    want.insert("d/hard".into(), want[&f0].clone());
    let mode0 = format!("{:o}", {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(src.join(&f0)).unwrap().permissions().mode() & 0o7777
    });
    let logical: u64 = SIZES.iter().map(|n| *n as u64).sum::<u64>() + BIG_LEN as u64;
    st.ok(&["snapshot", "create", "s1"]);

    // Mutate the live tree through a mount: overwrite (cp), append, rewrite in the middle,
    // truncate, chmod, delete, rm -r, rename.
    let host = st.scratch_dir("host");
    write_random_file(&host.join("new-big"), seed() ^ 0x5eed, BIG_LEN);
    let mut m = Mount::new(&st, &[]);
    let live = m.join("src");
    let files = small_files();
    sh_ok(&format!(
        r#"cd {live}
cp {host}/new-big {big}
cp {host}/new-big {f1}
printf 'appended' >> {f2}
printf 'MIDDLE' | dd of={f12} bs=1 seek=5000 conv=notrunc status=none
truncate -s 10 {f13}
chmod 600 {f0}
rm {f7} {f8}
rm -r e
mv d d-renamed
mv a/b/c a/c-moved
"#,
        live = shq(&live),
        host = shq(&host),
        big = shq(BIG),
        f0 = shq(&f0),
        f1 = shq(&files[1].0),
        f2 = shq(&files[2].0),
        f12 = shq(&files[12].0),
        f13 = shq(&files[13].0),
        f7 = shq(&files[7].0),
        f8 = shq(&files[8].0),
    ));
    // The live tree really changed (else the checks below prove nothing).
    assert_ne!(sha256_file(&live.join(BIG)), want[BIG]);
    assert_ne!(sha256_file(&live.join(&files[12].0)), want[&files[12].0]);
    assert!(!live.join("e").exists() && !live.join("d").exists());

    // The CLI reads the snapshot, file by file and as a tree.
    for (rel, sha) in &want {
        assert_eq!(
            sha256(&st.cat(&format!("/.snapshots/s1/src/{rel}"))),
            *sha,
            "verfs cat /.snapshots/s1/src/{rel}"
        );
    }
    let got = st.scratch().join("got");
    st.ok(&["get", "/.snapshots/s1", got.to_str().unwrap()]);
    assert_eq!(tree_sha256(&got.join("src")), sha_lines(&want), "verfs get");
    assert_eq!(
        fs::read_link(got.join("src/a/link-to-big")).unwrap(),
        Path::new("big.bin")
    );

    check_mount(m.path(), &want, &mode0, "mounted");
    m.remount();
    check_mount(m.path(), &want, &mode0, "after remount");
    m.umount();

    let list: serde_json::Value =
        serde_json::from_slice(&st.ok(&["snapshot", "list", "--json"]).stdout).unwrap();
    let s1 = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "s1"))
        .unwrap_or_else(|| panic!("s1 not in {list}"));
    assert_eq!(s1["ready"], true, "{s1}");
    assert_eq!(s1["files"], SIZES.len() as u64 + 1, "{s1}");
    assert_eq!(s1["logical_bytes"], logical, "{s1}");

    // Restore the big file, overwritten since: its chunks are shared, not copied.
    let du = || -> u64 {
        ext_ok("du", &["-sb", &st.root().join("packs").to_string_lossy()])
            .stdout_str()
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    let before = du();
    st.ok(&[
        "snapshot",
        "restore",
        "s1",
        &format!("/src/{BIG}"),
        "/restored",
    ]);
    st.ok(&["snapshot", "restore", "s1", "/src/e", "/e-restored"]);
    let after = du();
    assert_eq!(sha256(&st.cat("/restored")), want[BIG], "restored file");
    for (rel, sha) in want.iter().filter(|(r, _)| r.starts_with("e/")) {
        let p = format!("/e-restored/{}", &rel[2..]);
        assert_eq!(sha256(&st.cat(&p)), *sha, "{p}");
    }
    assert!(
        after < before + (64 << 10),
        "restore copied data: packs grew from {before} to {after} bytes"
    );
    st.assert_fsck_clean();
}

const WRITER: &str = r#"
import os, sys, time
path, first, ready, go, second, done = sys.argv[1:7]
def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
write_all(fd, open(first, 'rb').read())
open(ready, 'w').close()
deadline = time.time() + 60
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit('no go file within 60 s')
    time.sleep(0.01)
write_all(fd, open(second, 'rb').read())
os.close(fd)
open(done, 'w').close()
"#;

// A process writes a file through a mount and keeps it open; `verfs snapshot create` in another
// process holds those bytes ([SNAP-2]: the mount commits its unflushed writes before it votes),
// and nothing written after it.
#[test]
fn snapshot_barrier_includes_unclosed_writes() {
    require_fuse!();
    let st = TestStore::new();
    let host = st.scratch_dir("host");
    let mut pool = Pool::new(st.scratch(), agent());
    let m = Mount::new(&st, &[]);
    let first = random_bytes(seed(), 3 << 20);
    let second = random_bytes(seed() ^ 1, 100_000);
    fs::write(host.join("first"), &first).unwrap();
    fs::write(host.join("second"), &second).unwrap();
    let (ready, go, done) = (host.join("ready"), host.join("go"), host.join("done"));
    let mut c = Command::new("python3");
    c.arg("-c").arg(WRITER).arg(m.join("file")).args([
        host.join("first"),
        ready.clone(),
        go.clone(),
        host.join("second"),
        done.clone(),
    ]);
    let w = pool.spawn("writer", c);
    pool.wait_file(w, &ready, T);

    // Not closed, so not committed: another process sees none of it yet (close-to-open).
    assert_eq!(
        st.cat("/file").len(),
        0,
        "the open file's bytes were committed before any barrier: this test proves nothing"
    );
    let out = st.ok(&["snapshot", "create", "b1"]);
    assert_eq!(
        sha256(&st.cat("/.snapshots/b1/file")),
        sha256(&first),
        "the snapshot misses the bytes written to a file still open in the mount:\n{}",
        out.describe()
    );

    // Written after the snapshot: in the live file only.
    fs::write(&go, b"go").unwrap();
    let f = pool.wait(w, T);
    assert!(f.status.success() && done.exists(), "{}", f.describe());
    ext_ok("cp", &[host.join("second"), m.join("after")]);
    let mut whole = first.clone();
    whole.extend_from_slice(&second);
    assert_eq!(sha256(&st.cat("/file")), sha256(&whole), "live file");
    assert_eq!(
        sha256_file(&m.join(".snapshots/b1/file")),
        sha256(&first),
        "snapshot through the mount"
    );
    assert_eq!(st.ls("/.snapshots/b1"), vec!["file".to_owned()]);
    assert!(!m.join(".snapshots/b1/after").exists());
    let late = st.run(&["cat", "/.snapshots/b1/after"]);
    assert!(!late.success(), "{}", late.describe());
    drop(m);
    st.assert_fsck_clean();
}

// Names: unique, one path component; `/.snapshots` is reserved in the live tree; deleting a
// missing snapshot fails; a deleted snapshot's name can be reused, and a mount serves the new one.
#[test]
fn snapshot_name_rules() {
    require_fuse!();
    let st = TestStore::new();
    let host = st.scratch_dir("host");
    fs::write(host.join("one"), b"version 1\n").unwrap();
    st.ok(&["put", host.join("one").to_str().unwrap(), "/one"]);
    st.ok(&["snapshot", "create", "n1"]);
    assert_refused(
        &st,
        &["snapshot", "create", "n1"],
        &["n1", "a snapshot of that name exists"],
    );
    for bad in ["a/b", "..", ".", "/x"] {
        assert_refused(
            &st,
            &["snapshot", "create", bad],
            &[bad, "one path component"],
        );
    }
    assert_refused(&st, &["snapshot", "create", ""], &["the name is empty"]);
    let long = "x".repeat(256);
    assert_refused(&st, &["snapshot", "create", &long], &["longer than 255"]);
    assert_refused(&st, &["mkdir", "/.snapshots"], &[".snapshots", "reserved"]);
    assert_refused(
        &st,
        &["snapshot", "delete", "missing"],
        &["missing", "no such snapshot"],
    );
    assert_eq!(st.ls("/.snapshots"), vec!["n1".to_owned()]);

    // Through a mount: creating `.snapshots` in the root is EEXIST, also by rename.
    let m = Mount::new(&st, &[]);
    for script in [
        format!("mkdir {}", shq(m.join(".snapshots"))),
        format!("mv {} {}", shq(m.join("one")), shq(m.join(".snapshots"))),
    ] {
        let out = sh(&script);
        assert!(!out.success(), "{}", out.describe());
    }
    let mkdir = sh(&format!("mkdir {}", shq(m.join(".snapshots"))));
    assert!(mkdir.stderr.contains("File exists"), "{}", mkdir.describe());
    assert_eq!(
        fs::read(m.join(".snapshots/n1/one")).unwrap(),
        b"version 1\n"
    );

    // Changing a snapshot path from the CLI is refused as read-only, naming the path.
    for args in [
        vec!["rm", "/.snapshots/n1/one"],
        vec!["mv", "/.snapshots/n1/one", "/moved"],
        vec!["mkdir", "/.snapshots/n1/d"],
    ] {
        assert_refused(&st, &args, &["/.snapshots/n1/", "Read-only file system"]);
    }

    // Delete while mounted, then reuse the name.
    st.ok(&["snapshot", "delete", "n1"]);
    assert!(st.ls("/.snapshots").is_empty());
    let gone = sh(&format!("ls {}", shq(m.join(".snapshots/n1"))));
    assert!(
        !gone.success() && gone.stderr.contains("No such file"),
        "{}",
        gone.describe()
    );
    fs::write(m.join("one"), b"version 2\n").unwrap();
    st.ok(&["snapshot", "create", "n1"]);
    assert_eq!(
        fs::read(m.join(".snapshots/n1/one")).unwrap(),
        b"version 2\n",
        "a reused name must serve the new snapshot"
    );
    assert_eq!(st.cat("/.snapshots/n1/one"), b"version 2\n");
    drop(m);
    st.assert_fsck_clean();
}
