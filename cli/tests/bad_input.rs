//! Bad input: every case gives one clear error line (`verfs: PATH: CAUSE`), a non-zero exit, no
//! panic, and loses nothing that was stored before (`data-layout.md` sections 5, 7, 8, 9).
//!
//! Each test builds a store with the real `verfs` binary, records the sha256 of what it stored,
//! provokes one kind of bad input, checks the error, and then checks that every stored file still
//! reads back byte for byte (`cat` and `get`) and, where the case does not damage the store on
//! purpose, that `verfs fsck` is clean.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use verfs_test_support::cli::{ok, run};
use verfs_test_support::{crc32, is_root, noise, sha256, skip, text, verfs_bin};

/// The command failed cleanly: exit code 1 (not a signal, not a panic's 101), stderr one line
/// `verfs: ...` naming every string of `names` (the path) and `cause`. Returns that line.
#[track_caller]
fn fails_with(o: &Output, names: &[&str], cause: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit status {:?}, stderr: {err}",
        o.status
    );
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        !line.contains('\n'),
        "more than one line on stderr: {err:?}"
    );
    assert!(line.starts_with("verfs: "), "{line}");
    for n in names {
        assert!(line.contains(n), "error does not name {n:?}: {line}");
    }
    assert!(
        line.contains(cause),
        "error does not give the cause {cause:?}: {line}"
    );
    assert_eq!(
        line.matches(cause).count(),
        1,
        "the cause is repeated (error chain printed twice?): {line}"
    );
    line.to_string()
}

#[track_caller]
fn fails(store: &Path, args: &[&str], names: &[&str], cause: &str) -> String {
    let o = run(store, args);
    fails_with(&o, names, cause)
}

/// A store with a few files in it and the sha256 of each.
struct Fixture {
    tmp: tempfile::TempDir,
    store: PathBuf,
    files: Vec<(String, String)>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        Fixture::in_dir(tmp, None)
    }

    /// `store_in`: where to put the store (default: inside the temp dir).
    fn in_dir(tmp: tempfile::TempDir, store_in: Option<PathBuf>) -> Fixture {
        let store = store_in.unwrap_or_else(|| tmp.path().join("store"));
        ok(&store, &["init"]);
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("docs/deep")).unwrap();
        let contents: Vec<(&str, Vec<u8>)> = vec![
            ("random.bin", noise(1, 300_000)),
            ("text.txt", text(0, 200_000)),
            ("docs/deep/a.txt", text(0, 5_000)),
            ("docs/b.bin", noise(2, 70_000)),
        ];
        for (p, b) in &contents {
            fs::write(src.join(p), b).unwrap();
        }
        ok(
            &store,
            &[
                "put",
                src.join("random.bin").to_str().unwrap(),
                "/random.bin",
            ],
        );
        ok(
            &store,
            &["put", src.join("text.txt").to_str().unwrap(), "/text.txt"],
        );
        ok(
            &store,
            &["put", src.join("docs").to_str().unwrap(), "/docs"],
        );
        let files = contents
            .iter()
            .map(|(p, b)| (format!("/{p}"), sha256(b)))
            .collect();
        Fixture { tmp, store, files }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Every stored file reads back right through `cat` and through `get`.
    #[track_caller]
    fn assert_intact(&self) {
        for (p, want) in &self.files {
            let o = ok(&self.store, &["cat", p]);
            assert_eq!(&sha256(&o.stdout), want, "cat {p} returned other bytes");
        }
        let out = self.tmp.path().join(format!("get-{}", rand_suffix()));
        ok(&self.store, &["get", "/", out.to_str().unwrap()])
            .stdout
            .clear();
        for (p, want) in &self.files {
            let got = fs::read(out.join(p.trim_start_matches('/'))).unwrap();
            assert_eq!(&sha256(&got), want, "get / returned other bytes for {p}");
        }
        fs::remove_dir_all(&out).unwrap();
    }

    #[track_caller]
    fn assert_intact_and_clean(&self) {
        self.assert_intact();
        self.assert_fsck_clean();
    }

    #[track_caller]
    fn assert_fsck_clean(&self) {
        let o = run(&self.store, &["fsck"]);
        assert!(
            o.status.success(),
            "fsck not clean:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `verfs fsck` exits 1 and one of its problem lines names `file`; returns stdout.
    #[track_caller]
    fn assert_fsck_reports(&self, file: &Path) -> String {
        let o = run(&self.store, &["fsck"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            o.status.code(),
            Some(1),
            "fsck should find the damage; stdout:\n{out}stderr:\n{err}"
        );
        let f = file.to_str().unwrap();
        assert!(
            out.lines().any(|l| l.starts_with(f)),
            "fsck does not list {f}:\n{out}"
        );
        out
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: u64, mask: u8) {
    verfs_test_support::flip_byte(path, offset, mask);
}

/// Parse "corrupt at byte N" out of an error line.
fn corrupt_offset(line: &str) -> u64 {
    let i = line
        .find("corrupt at byte ")
        .unwrap_or_else(|| panic!("no byte offset in: {line}"));
    line[i + 16..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Missing paths, files where directories are expected.

#[test]
fn put_of_a_missing_local_path() {
    let fx = Fixture::new();
    let missing = fx.path("no-such-file");
    let m = missing.to_str().unwrap();
    fails(
        &fx.store,
        &["put", m, "/x"],
        &[m],
        "No such file or directory",
    );
    // A missing one among several sources: nothing is copied, not even the ones before it.
    let good = fx.path("src/text.txt");
    fails(
        &fx.store,
        &["put", good.to_str().unwrap(), m, "/docs"],
        &[m],
        "No such file or directory",
    );
    let o = ok(&fx.store, &["ls", "/docs"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b.bin\ndeep\n");
    fx.assert_intact_and_clean();
}

#[test]
fn missing_store_path() {
    let fx = Fixture::new();
    let out = fx.path("out");
    let o = out.to_str().unwrap();
    for args in [
        vec!["get", "/nope", o],
        vec!["get", "/docs/nope/x", o],
        vec!["cat", "/nope"],
        vec!["ls", "/nope"],
        vec!["ls", "-l", "/docs/nope"],
        vec!["stat", "/nope"],
        vec!["rm", "/nope"],
        vec!["rm", "-r", "/docs/nope"],
        vec!["mv", "/nope", "/elsewhere"],
        vec!["ln", "/nope", "/hard"],
    ] {
        let path = args.iter().find(|a| a.contains("nope")).copied().unwrap();
        fails(&fx.store, &args, &[path], "No such file or directory");
    }
    // A destination whose parent is missing.
    fails(
        &fx.store,
        &["mv", "/text.txt", "/nope/t"],
        &["/nope"],
        "No such file or directory",
    );
    fails(
        &fx.store,
        &["mkdir", "/nope/d"],
        &["/nope"],
        "No such file or directory",
    );
    fails(
        &fx.store,
        &["put", fx.path("src/text.txt").to_str().unwrap(), "/nope/t"],
        &["/nope"],
        "No such file or directory",
    );
    assert!(!out.exists(), "a failed get created {out:?}");
    fx.assert_intact_and_clean();
}

#[test]
fn file_where_a_directory_is_expected() {
    let fx = Fixture::new();
    let src = fx.path("src/docs/deep/a.txt");
    let s = src.to_str().unwrap();
    // In the store: /text.txt is a file.
    fails(
        &fx.store,
        &["put", s, "/text.txt/x"],
        &["/text.txt"],
        "Not a directory",
    );
    fails(
        &fx.store,
        &["mkdir", "/text.txt/d"],
        &["/text.txt"],
        "Not a directory",
    );
    fails(
        &fx.store,
        &["mkdir", "-p", "/text.txt/d/e"],
        &["/text.txt"],
        "Not a directory",
    );
    fails(
        &fx.store,
        &["cat", "/text.txt/x"],
        &["/text.txt"],
        "Not a directory",
    );
    fails(
        &fx.store,
        &["mv", "/random.bin", "/text.txt/r"],
        &["/text.txt"],
        "Not a directory",
    );
    // Several sources need a directory destination.
    fails(
        &fx.store,
        &["put", s, s, "/text.txt"],
        &["/text.txt"],
        "Not a directory",
    );
    // On the host: a local file where a directory is expected.
    let local_file = fx.path("src/text.txt");
    let under = local_file.join("x");
    let u = under.to_str().unwrap();
    fails(&fx.store, &["put", u, "/x"], &[u], "Not a directory");
    let into = local_file.join("out");
    let i = into.to_str().unwrap();
    fails(
        &fx.store,
        &["get", "/docs/deep/a.txt", i],
        &[i],
        "Not a directory",
    );
    fx.assert_intact_and_clean();
}

#[test]
fn cat_of_a_directory() {
    let fx = Fixture::new();
    fails(&fx.store, &["cat", "/docs"], &["/docs"], "Is a directory");
    fails(&fx.store, &["cat", "/"], &["/"], "Is a directory");
    let o = run(&fx.store, &["cat", "/docs"]);
    assert!(o.stdout.is_empty());
    fx.assert_intact_and_clean();
}

// ---------------------------------------------------------------------------------------------
// `-s` pointing at something that is not a store of this version. [FMT-1] [FMT-2] [CFG-1]

#[test]
fn store_option_not_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"hello").unwrap();
    let missing = tmp.path().join("missing");
    let local = tmp.path().join("local.txt");
    fs::write(&local, b"data").unwrap();
    let l = local.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    for store in [&empty, &file, &missing] {
        let s = store.to_str().unwrap();
        for args in [
            vec!["ls", "/"],
            vec!["cat", "/x"],
            vec!["get", "/x", o],
            vec!["put", l, "/x"],
            vec!["mkdir", "/d"],
            vec!["rm", "/x"],
            vec!["mv", "/x", "/y"],
            vec!["stat", "/"],
            vec!["status"],
            vec!["fsck"],
            vec!["recover"],
            vec!["checkpoint"],
        ] {
            // proves [FMT-1]: every command refuses it, naming the path.
            fails(store, &args, &[s], "not a verfs store");
        }
    }
    // Nothing was created or changed by the refusals.
    assert_eq!(
        fs::read_dir(&empty).unwrap().count(),
        0,
        "files appeared in the empty dir"
    );
    assert_eq!(fs::read(&file).unwrap(), b"hello");
    assert!(!missing.exists());
    assert!(!out.exists());
    // `init` refuses a regular file too.
    fails(
        &file,
        &["init"],
        &[file.to_str().unwrap()],
        "Not a directory",
    );
}

fn format_file(version: u32, uuid: [u8; 16]) -> Vec<u8> {
    // data-layout.md 5.1: magic, version, flags, uuid, crc32 of bytes 0..32.
    let mut b = Vec::with_capacity(36);
    b.extend_from_slice(b"VERFSTOR");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&uuid);
    let crc = crc32(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn store_of_another_format_version() {
    let fx = Fixture::new();
    let fpath = fx.store.join("FORMAT");
    let v3 = fs::read(&fpath).unwrap();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&v3[16..32]);
    assert_eq!(
        format_file(3, uuid),
        v3,
        "test's FORMAT encoding matches the layout"
    );
    let s = fx.store.to_str().unwrap();
    // Older stores (version 1: no snapshot ops; version 2: the whole metadata replayed from
    // the log, snapshot files) and a newer one are all refused.
    for other in [1u32, 2, 4] {
        fs::write(&fpath, format_file(other, uuid)).unwrap();
        for args in [
            vec!["ls", "/"],
            vec!["cat", "/text.txt"],
            vec!["put", fx.path("src/text.txt").to_str().unwrap(), "/t2"],
            vec!["fsck"],
            vec!["recover"],
        ] {
            // proves [FMT-2]: refused with both version numbers.
            let line = fails(&fx.store, &args, &[s], &format!("format version {other}"));
            assert!(line.contains("reads version 3"), "{line}");
        }
    }
    let v1 = v3;
    // A FORMAT file that is damaged (not another version): corrupt, with where.
    fs::write(&fpath, &v1).unwrap();
    flip(&fpath, 20, 0x01);
    fails(
        &fx.store,
        &["ls", "/"],
        &[fpath.to_str().unwrap()],
        "corrupt at byte 0",
    );
    fs::write(&fpath, &v1).unwrap();
    // Nothing was touched while refused.
    fx.assert_intact_and_clean();
}

#[test]
fn config_with_an_unknown_key_or_bad_value() {
    let fx = Fixture::new();
    let cpath = fx.store.join("config.toml");
    let orig = fs::read(&cpath).unwrap();
    let c = cpath.to_str().unwrap();
    for (toml, key) in [
        ("[chunking]\nmin_sise = 16384\n", "min_sise"),
        ("bogus_top = 1\n", "bogus_top"),
        // Appended to the default file: lands in its last table.
        (
            &*format!("{}\nmax_filez = 3\n", String::from_utf8_lossy(&orig)),
            "max_filez",
        ),
        ("[compression]\nzstd_level = 99\n", "compression.zstd_level"),
        (
            "[leases]\ntimeout_ms = 10\nheartbeat_ms = 1000\n",
            "leases.timeout_ms",
        ),
        ("[chunking\n", "line 1"),
    ] {
        fs::write(&cpath, toml).unwrap();
        // proves [CFG-1]
        for args in [vec!["ls", "/"], vec!["cat", "/text.txt"]] {
            fails(&fx.store, &args, &[c, key], "invalid configuration");
        }
        // fsck reports it as a problem line naming the file.
        fx.assert_fsck_reports(&cpath);
    }
    fs::write(&cpath, &orig).unwrap();
    fx.assert_intact_and_clean();
}

// ---------------------------------------------------------------------------------------------
// A full disk.

/// Unmounts on drop, whatever happened.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let st = std::process::Command::new("umount").arg(&self.0).status();
        if !matches!(st, Ok(s) if s.success()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    if !is_root() {
        skip("full_disk needs root to mount a tmpfs");
        return;
    }
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        skip(&format!(
            "full_disk: cannot mount a tmpfs on {} ({st:?})",
            mnt.display()
        ));
        return;
    }
    let _guard = Mount(mnt.clone());
    let store = mnt.join("store");
    ok(&store, &["init"]);
    let small = tmp.path().join("small.bin");
    let small_bytes = noise(3, 1_000_000);
    fs::write(&small, &small_bytes).unwrap();
    ok(&store, &["put", small.to_str().unwrap(), "/small.bin"]);
    ok(&store, &["mkdir", "/dir"]);

    let big = tmp.path().join("big.bin");
    fs::write(&big, noise(4, 6_000_000)).unwrap();
    let b = big.to_str().unwrap();
    let line = fails(
        &store,
        &["put", b, "/big.bin"],
        &[mnt.to_str().unwrap()],
        "No space left on device",
    );
    // Exactly one mention of the cause (no repeated error chain).
    assert_eq!(line.matches("No space left on device").count(), 1, "{line}");

    // The failed put committed nothing and left the committed file readable.
    let o = ok(&store, &["cat", "/small.bin"]);
    assert_eq!(sha256(&o.stdout), sha256(&small_bytes));
    let ls = ok(&store, &["ls", "/"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "dir\nsmall.bin\n");
    fails(
        &store,
        &["cat", "/big.bin"],
        &["/big.bin"],
        "No such file or directory",
    );
    // What the failed put left in packs/: its pack cut back to what was durable and sealed
    // (a writer poisoned by ENOSPC salvages its prefix, [PACK-6]); no temp files.
    let packs = files_in(&store.join("packs"), "pack");
    for p in &packs {
        assert!(
            fs::metadata(p).unwrap().len() < 2_000_000,
            "a pack kept the failed put's bytes: {p:?}"
        );
    }
    let o = run(&store, &["fsck"]);
    assert!(
        o.status.success(),
        "fsck after ENOSPC:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Still usable once space is back (the failed put freed its bytes).
    let again = tmp.path().join("again.bin");
    fs::write(&again, text(0, 100_000)).unwrap();
    ok(&store, &["put", again.to_str().unwrap(), "/dir/again.bin"]);
    let o = ok(&store, &["cat", "/small.bin"]);
    assert_eq!(sha256(&o.stdout), sha256(&small_bytes));
    ok(&store, &["fsck"]);
}

// ---------------------------------------------------------------------------------------------
// Permissions.

fn as_nobody(store: &Path, args: &[&str]) -> Output {
    let bin = verfs_bin();
    let have_setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    let mut c = if have_setpriv {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c
    } else {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "nobody", "--"]);
        c
    };
    c.arg(bin)
        .arg("-s")
        .arg(store)
        .args(args)
        .env_remove("VERFS_STORE")
        .current_dir("/");
    c.output().unwrap()
}

#[test]
fn permission_denied() {
    if !is_root() {
        skip("permission_denied needs root to run verfs as another user");
        return;
    }
    let fx = Fixture::new();
    // The binary and the temp dir must be reachable by nobody; the store itself is not (0700).
    fs::set_permissions(fx.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&fx.store, fs::Permissions::from_mode(0o700)).unwrap();
    let s = fx.store.to_str().unwrap();
    for args in [
        vec!["ls", "/"],
        vec!["cat", "/text.txt"],
        vec!["mkdir", "/d"],
        vec!["fsck"],
    ] {
        let o = as_nobody(&fx.store, &args);
        fails_with(&o, &[s], "Permission denied");
    }
    // A store made readable to others (as stores were before [STORE-4]) whose leases/ is not
    // writable: the lease cannot be taken, and the message says what is needed.
    chmod_r(&fx.store, 0o755, 0o644);
    let o = as_nobody(&fx.store, &["ls", "/"]);
    let line = fails_with(
        &o,
        &[fx.store.join("leases").to_str().unwrap()],
        "Permission denied",
    );
    assert!(line.contains("verfs needs write access to"), "{line}");
    chmod_r(&fx.store, 0o700, 0o600);
    // A local source nobody may not read.
    let secret = fx.path("secret.txt");
    fs::write(&secret, b"x").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let open = fx.path("open-store");
    ok(&open, &["init"]);
    chown_r(&open, 65534);
    let o = as_nobody(&open, &["put", secret.to_str().unwrap(), "/s"]);
    fails_with(&o, &[secret.to_str().unwrap()], "Permission denied");
    // Back as root, nothing was lost or left behind.
    fx.assert_intact_and_clean();
    ok(&open, &["fsck"]);
}

fn chmod_r(p: &Path, dir_mode: u32, file_mode: u32) {
    let is_dir = fs::symlink_metadata(p).unwrap().is_dir();
    let mode = if is_dir { dir_mode } else { file_mode };
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    if is_dir {
        for e in fs::read_dir(p).unwrap() {
            chmod_r(&e.unwrap().path(), dir_mode, file_mode);
        }
    }
}

fn chown_r(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_r(&e.unwrap().path(), uid);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Damaged packs, log records, checkpoints: a clear error with file and byte offset, never wrong
// bytes, and fsck lists the file. (Exhaustive single-byte flips: engine/tests/fsck_flips.rs.)

/// The pack holding `/random.bin` (the first put: the largest pack).
fn biggest_pack(store: &Path) -> PathBuf {
    files_in(&store.join("packs"), "pack")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn bit_flipped_pack() {
    let fx = Fixture::new();
    let pack = biggest_pack(&fx.store);
    let p = pack.to_str().unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    // A byte in the middle of a record's payload: [PACK-3] crc mismatch.
    flip(&pack, len / 2, 0x01);
    let o = run(&fx.store, &["cat", "/random.bin"]);
    let line = fails_with(&o, &[p], "corrupt at byte");
    let off = corrupt_offset(&line);
    assert!(
        off >= 24 && off <= len / 2,
        "offset {off} is the damaged record's start: {line}"
    );
    // Never wrong bytes: what reached stdout is a prefix of the file (the records before).
    let want = noise(1, 300_000);
    assert!(
        want.starts_with(&o.stdout),
        "cat wrote bytes that are not the file's"
    );
    assert!(
        o.stdout.len() as u64 <= off,
        "cat wrote past the damaged record"
    );
    let out = fx.path("got.bin");
    fails(
        &fx.store,
        &["get", "/random.bin", out.to_str().unwrap()],
        &[p],
        "corrupt at byte",
    );
    if let Ok(got) = fs::read(&out) {
        assert!(
            want.starts_with(&got),
            "get wrote bytes that are not the file's"
        );
    }
    // Files in other packs still read right.
    for (f, h) in &fx.files[1..] {
        assert_eq!(&sha256(&ok(&fx.store, &["cat", f]).stdout), h);
    }
    let report = fx.assert_fsck_reports(&pack);
    assert!(report.contains(&format!("{p} at byte {off}")), "{report}");
    // Flip back: everything is as it was.
    flip(&pack, len / 2, 0x01);
    fx.assert_intact_and_clean();

    // The pack header [PACK-1]: fsck reports it, but every record keeps its own checks, so the
    // chunks still read right.
    flip(&pack, 3, 0x80);
    assert_eq!(
        &sha256(&ok(&fx.store, &["cat", "/random.bin"]).stdout),
        &fx.files[0].1
    );
    let report = fx.assert_fsck_reports(&pack);
    assert!(report.contains(&format!("{p} at byte 0")), "{report}");
    flip(&pack, 3, 0x80);
    fx.assert_intact_and_clean();
}

/// Damage to nothing but a record's stored crc (header bytes 32..36, [PACK-3]): the payload
/// still decodes to bytes hashing to the chunk id, so only the crc check can refuse it, and a
/// reader that skipped it would serve the record as if nothing were wrong. The reader must refuse
/// it like any other damaged record (the crc is what proves the header fields it trusted), naming
/// the pack and the record's offset; fsck must report the same record.
#[test]
fn bit_flipped_record_crc_only() {
    let fx = Fixture::new();
    let pack = biggest_pack(&fx.store);
    let p = pack.to_str().unwrap();
    // The first record starts right after the 24-byte pack header; its crc is bytes 32..36.
    let first = 24u64;
    flip(&pack, first + 33, 0x10);
    let o = run(&fx.store, &["cat", "/random.bin"]);
    let line = fails_with(&o, &[p, "record crc mismatch"], "corrupt at byte");
    assert_eq!(corrupt_offset(&line), first, "{line}");
    assert!(
        o.stdout.is_empty(),
        "cat wrote bytes of the refused first record"
    );
    let report = fx.assert_fsck_reports(&pack);
    assert!(
        report.contains(&format!("{p} at byte {first}")) && report.contains("crc"),
        "{report}"
    );
    flip(&pack, first + 33, 0x10);
    fx.assert_intact_and_clean();
}

#[test]
fn bit_flipped_pack_index() {
    let fx = Fixture::new();
    let pack = biggest_pack(&fx.store);
    let idx = pack.with_extension("idx");
    flip(&idx, 30, 0x01);
    // [PACK-8]: a damaged .idx is never fatal, the reader scans the pack instead; fsck reports it.
    fx.assert_intact();
    fx.assert_fsck_reports(&idx);
    flip(&idx, 30, 0x01);
    fx.assert_intact_and_clean();
}

#[test]
fn truncated_pack() {
    let fx = Fixture::new();
    let pack = biggest_pack(&fx.store);
    let p = pack.to_str().unwrap();
    let orig = fs::read(&pack).unwrap();
    let cut = orig.len() as u64 - 1000;
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let o = run(&fx.store, &["cat", "/random.bin"]);
    let line = fails_with(&o, &[p], "corrupt at byte");
    let off = corrupt_offset(&line);
    assert!(off <= cut, "{line}");
    assert!(
        noise(1, 300_000).starts_with(&o.stdout),
        "cat wrote bytes that are not the file's"
    );
    fx.assert_fsck_reports(&pack);
    // The other files are unaffected.
    for (f, h) in &fx.files[1..] {
        assert_eq!(&sha256(&ok(&fx.store, &["cat", f]).stdout), h);
    }
    // Cut to less than its header.
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(10)
        .unwrap();
    fails(
        &fx.store,
        &["cat", "/random.bin"],
        &[p],
        "corrupt at byte 0",
    );
    fx.assert_fsck_reports(&pack);
    fs::write(&pack, &orig).unwrap();
    fx.assert_intact_and_clean();
}

#[test]
fn bit_flipped_log_record() {
    let fx = Fixture::new();
    let seg = files_in(&fx.store.join("log"), "seg").pop().unwrap();
    let s = seg.to_str().unwrap();
    // A byte inside the first record's payload ([LOG-1] crc32): the log cannot be read past it,
    // so every command that needs the metadata refuses, naming the segment and the record.
    flip(&seg, 24 + 30, 0x01);
    for args in [
        vec!["ls", "/"],
        vec!["cat", "/text.txt"],
        vec!["mkdir", "/d"],
        vec!["put", fx.path("src/text.txt").to_str().unwrap(), "/t2"],
    ] {
        let line = fails(&fx.store, &args, &[s], "corrupt at byte 24");
        assert!(line.contains("crc32"), "{line}");
    }
    let report = fx.assert_fsck_reports(&seg);
    assert!(report.contains(&format!("{s} at byte 24")), "{report}");
    flip(&seg, 24 + 30, 0x01);
    // The refused commits appended nothing ([LOG-6]).
    fx.assert_intact_and_clean();

    // The last record's header: the same, at its offset.
    let bytes = fs::read(&seg).unwrap();
    let mut off = 24usize;
    let mut last = off;
    while off + 24 <= bytes.len() {
        last = off;
        off += 24 + u32::from_le_bytes(bytes[off + 16..off + 20].try_into().unwrap()) as usize;
    }
    flip(&seg, last as u64 + 9, 0x80); // its lsn
    fails(
        &fx.store,
        &["ls", "/"],
        &[s],
        &format!("corrupt at byte {last}"),
    );
    fx.assert_fsck_reports(&seg);
    flip(&seg, last as u64 + 9, 0x80);
    fx.assert_intact_and_clean();
}

#[test]
fn truncated_log_record() {
    let fx = Fixture::new();
    let seg = files_in(&fx.store.join("log"), "seg").pop().unwrap();
    let s = seg.to_str().unwrap();
    let orig = fs::read(&seg).unwrap();
    // Cut inside the last record. A reader cannot tell this from a writer that died mid-append
    // ([LOG-1], crash L1): the record is not committed for it, so commands see the store as it
    // was before that record, and fsck reports the torn record with its offset and exits 1.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(orig.len() as u64 - 10)
        .unwrap();
    let report = fx.assert_fsck_reports(&seg);
    assert!(report.contains("torn record"), "{report}");
    // Everything committed before the cut record still reads right.
    for (f, h) in &fx.files[..2] {
        assert_eq!(&sha256(&ok(&fx.store, &["cat", f]).stdout), h);
    }
    fs::write(&seg, &orig).unwrap();
    fx.assert_intact_and_clean();

    // Cut inside the segment header: refused, naming the segment.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(10)
        .unwrap();
    fails(&fx.store, &["ls", "/"], &[s], "corrupt at byte 0");
    fx.assert_fsck_reports(&seg);
    fs::write(&seg, &orig).unwrap();
    fx.assert_intact_and_clean();
}

#[test]
fn damaged_checkpoint() {
    let fx = Fixture::new();
    ok(&fx.store, &["checkpoint"]);
    // Records after the checkpoint too.
    ok(&fx.store, &["mkdir", "/after"]);
    let ckpt = files_in(&fx.store.join("checkpoints"), "ckpt")
        .pop()
        .expect("verfs checkpoint wrote a checkpoint");
    let c = ckpt.to_str().unwrap();
    let orig = fs::read(&ckpt).unwrap();
    // [CKPT-1], [CKPT-2]: the newest checkpoint is invalid, so the store cannot be opened (no
    // silent fallback) and fsck reports it.
    for (what, damage) in [
        (
            "body byte",
            Box::new(|| flip(&ckpt, orig.len() as u64 - 5, 0x01)) as Box<dyn Fn()>,
        ),
        ("header byte", Box::new(|| flip(&ckpt, 17, 0x80))),
        (
            "truncated",
            Box::new(|| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&ckpt)
                    .unwrap()
                    .set_len(orig.len() as u64 / 2)
                    .unwrap()
            }),
        ),
        (
            "cut header",
            Box::new(|| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&ckpt)
                    .unwrap()
                    .set_len(20)
                    .unwrap()
            }),
        ),
    ] {
        damage();
        for args in [
            vec!["ls", "/"],
            vec!["cat", "/text.txt"],
            vec!["mkdir", "/d2"],
        ] {
            let line = fails(&fx.store, &args, &[c], "corrupt at byte");
            let _ = (what, line);
        }
        fx.assert_fsck_reports(&ckpt);
        fs::write(&ckpt, &orig).unwrap();
        fx.assert_intact_and_clean();
    }
    let ls = ok(&fx.store, &["ls", "/"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("after"));
}
