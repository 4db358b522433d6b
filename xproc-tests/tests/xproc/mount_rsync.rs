//! `rsync -aHAX` into a FUSE mount and back out, verified with the real tools (`sha256sum`,
//! `stat`, `getfattr`, `rsync -n --itemize-changes`), across unmount/remount.
//!
//! Proves, through `verfs mount`: every attribute `rsync -aHAX` sets (mode, owner, mtime, hard
//! links, symlinks, xattrs) and every byte of every file (random, text, empty, sparse, >= 256 MiB)
//! is stored and served back identically; a clean unmount makes all of it durable (docs/DESIGN.md
//! "Failure model": a clean unmount is an acknowledgement); in-place rewrites (`--inplace`:
//! appends, overwrites in the middle of an existing file) and deletions (`--delete`, `rm -rf`)
//! are stored and survive a remount; `verfs fsck` is clean afterwards (docs/DESIGN.md "Invariants":
//! link counts and sizes match, every referenced chunk is present and hashes to its id).

use std::fs;
use std::path::Path;

use crate::*;

/// Build the source tree on the host: every kind of entry rsync -aHAX must carry.
fn build_source(src: &Path) {
    let long = "L".repeat(255);
    sh_ok(&format!(
        r#"cd {src}
mkdir -p nested/a/b/c "dir with space" empty-dir
head -c 200000 /dev/urandom > random.bin
head -c 12345 /dev/urandom > nested/a/b/c/deep.bin
seq 1 20000 > text.txt
printf 'hello\n' > nested/a/hello.txt
: > empty
# Sparse: 300 MiB apparent, a few bytes written in the middle.
truncate -s 300M sparse.img
printf 'IN THE MIDDLE' | dd of=sparse.img bs=1 seek=157286400 conv=notrunc status=none
# >= 256 MiB: a 16 MiB random block repeated 16 times, each copy followed by its number, so no
# two 16 MiB windows are equal.
head -c 16M /dev/urandom > ../blk
for i in $(seq -w 1 16); do cat ../blk; printf 'copy-%s' "$i"; done > big.bin
rm ../blk
# Symlinks: relative, absolute, dangling, to a directory.
ln -s text.txt rel-link
ln -s /etc/hostname abs-link
ln -s does/not/exist dangling-link
ln -s nested/a dir-link
# Hard links (one across directories).
ln random.bin hard-1
ln random.bin nested/hard-2
# Extended attributes.
setfattr -n user.x -v hello text.txt
setfattr -n user.bin -v 0x00ff10 random.bin
setfattr -n user.empty empty
setfattr -n user.dir -v "on a dir" nested
# Odd names.
echo space > "dir with space/file with space"
echo uni > "ünïcödé-名前-😀"
echo q > "quote's \"double\""
echo dash > ./-leading-dash
echo long > {long}
echo tab > "$(printf 'tab\there')"
# Modes.
chmod 0600 random.bin
chmod 0755 text.txt nested/a/b
chmod 0640 empty
chmod 0700 empty-dir
# Owners other than root.
chown 1234:5678 nested/a/hello.txt
chown -h 4321:8765 rel-link
# mtimes, set last (children first: creating an entry changes its directory's mtime).
touch -h -d '2001-02-03 04:05:06.123456789' rel-link
touch -d '2002-03-04 05:06:07' nested/a/b/c/deep.bin random.bin
touch -d '1999-12-31 23:59:59' nested/a/b/c
touch -d '2003-01-01 00:00:00' nested/a/b nested/a "dir with space" empty-dir
touch -d '2004-01-01 00:00:00' nested
"#,
        src = shq(src),
    ));
}

fn rsync_noop(src: &Path, dst: &Path, when: &str) {
    let out = ext_ok(
        "rsync",
        &[
            "-aHAXn".to_owned(),
            "--itemize-changes".to_owned(),
            format!("{}/", src.display()),
            format!("{}/", dst.display()),
        ],
    );
    assert!(
        out.stdout.is_empty(),
        "{when}: rsync -n finds differences:\n{}",
        out.describe()
    );
}

fn rsync(extra: &[&str], src: &Path, dst: &Path) -> RunOutput {
    let mut args: Vec<String> = vec!["-aHAX".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("{}/", src.display()));
    args.push(format!("{}/", dst.display()));
    ext_ok("rsync", &args)
}

fn inode_of(p: &Path) -> String {
    ext_ok("stat", &["-c", "%i", &p.to_string_lossy()])
        .stdout_str()
        .trim()
        .to_owned()
}

#[test]
fn mount_rsync() {
    require_fuse!();
    let _g = heavy();
    let st = TestStore::new();
    let src = st.scratch_dir("src");
    build_source(&src);
    let mut m = Mount::new(&st, &[]);
    let dst = m.join("dst");

    rsync(&[], &src, &dst);
    assert_trees_equal(&src, &dst, "after rsync -aHAX");
    rsync_noop(&src, &dst, "after rsync -aHAX");

    // A clean unmount acknowledges everything: all of it is served again by a new mount.
    m.remount();
    assert_trees_equal(&src, &dst, "after remount");
    rsync_noop(&src, &dst, "after remount");

    // In-place updates: rsync --inplace opens the existing file without O_TRUNC and writes the
    // changed blocks (plus an append), so the engine must merge writes into a stored file.
    let big_ino = inode_of(&dst.join("big.bin"));
    sh_ok(&format!(
        r#"cd {src}
printf 'appended line\n' >> text.txt
head -c 5000 /dev/urandom | dd of=big.bin bs=1 seek=100000000 conv=notrunc status=none
head -c 100 /dev/urandom >> big.bin
printf 'XYZ' | dd of=random.bin bs=1 seek=100000 conv=notrunc status=none
printf 'NEW' | dd of=sparse.img bs=1 seek=4096 conv=notrunc status=none
touch -d '2010-10-10 10:10:10' text.txt big.bin random.bin sparse.img
"#,
        src = shq(&src)
    ));
    rsync(&["--inplace"], &src, &dst);
    assert_trees_equal(&src, &dst, "after rsync --inplace");
    assert_eq!(
        inode_of(&dst.join("big.bin")),
        big_ino,
        "--inplace must rewrite big.bin in place, not replace it"
    );
    rsync_noop(&src, &dst, "after rsync --inplace");

    // Deletions: a file, one name of a hard link, a symlink, a whole subtree.
    sh_ok(&format!(
        "cd {} && rm -r nested/a/b empty hard-1 abs-link 'dir with space'",
        shq(&src)
    ));
    rsync(&["--delete"], &src, &dst);
    assert_trees_equal(&src, &dst, "after rsync --delete");
    for gone in [
        "nested/a/b",
        "empty",
        "hard-1",
        "abs-link",
        "dir with space",
    ] {
        assert!(
            fs::symlink_metadata(dst.join(gone)).is_err(),
            "{gone} still in the mount after rsync --delete"
        );
    }
    m.remount();
    assert_trees_equal(&src, &dst, "after rsync --delete and remount");
    rsync_noop(&src, &dst, "after rsync --delete and remount");

    // rm -rf of the whole tree, seen by ls/stat at once and after a remount.
    ext_ok("rm", &["-rf", &dst.to_string_lossy()]);
    let ls = ext_ok("ls", &["-A", &m.path().to_string_lossy()]);
    assert!(
        ls.stdout.is_empty(),
        "mount not empty after rm -rf:\n{}",
        ls.describe()
    );
    let stat = ext("stat", &[dst.as_os_str()]);
    assert!(
        !stat.success() && stat.stderr.contains("No such file"),
        "{}",
        stat.describe()
    );
    m.remount();
    let ls = ext_ok("ls", &["-A", &m.path().to_string_lossy()]);
    assert!(
        ls.stdout.is_empty(),
        "rm -rf undone by a remount:\n{}",
        ls.describe()
    );
    assert!(
        st.ls("/").is_empty(),
        "verfs ls / after rm -rf: {:?}",
        st.ls("/")
    );
    m.umount();
    st.assert_fsck_clean();
}
