//! Permissions and ownership through a mount, checked as an unprivileged user.
//!
//! Proves the README "Mount" rules for permissions: with `default_permissions` (the default) the
//! kernel checks mode bits, owners and the sticky bit against the store's attributes; new
//! entries belong to the caller, or take a set-group-ID directory's group; `trusted.*` xattrs
//! need root; root bypasses mode bits. Without `allow_other` only the mounting user gets in.
//! The unprivileged user is `nobody` (65534), entered with `setpriv`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use crate::*;

const NOBODY: u32 = 65534;

/// Run as nobody: one line "name result" per step; result is "ok", "ok:<detail>" or the errno
/// name.
const AS_NOBODY_PY: &str = r#"
import errno, os, sys
m = sys.argv[1]
def p(*parts): return os.path.join(m, *parts)
def step(name, f):
    try:
        r = f()
        print(name, "ok" if r is None else "ok:%s" % r)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
def write(path, flags=os.O_WRONLY):
    fd = os.open(path, flags, 0o644)
    os.write(fd, b"x")
    os.close(fd)
def owner(path):
    s = os.stat(path)
    return "%d:%d:%o" % (s.st_uid, s.st_gid, s.st_mode & 0o7777)
step("read_public", lambda: open(p("pub", "ro"), "rb").read().decode())
step("write_public", lambda: write(p("pub", "ro")))
step("truncate_public", lambda: os.truncate(p("pub", "ro"), 0))
step("create_in_public", lambda: write(p("pub", "new"), os.O_CREAT | os.O_WRONLY))
step("mkdir_in_public", lambda: os.mkdir(p("pub", "d")))
step("read_secret", lambda: open(p("secret"), "rb").read())
step("list_private_dir", lambda: os.listdir(p("private")))
step("create_in_open", lambda: write(p("open", "mine"), os.O_CREAT | os.O_WRONLY))
step("owner_of_created", lambda: owner(p("open", "mine")))
step("chmod_own", lambda: os.chmod(p("open", "mine"), 0o600))
step("mode_after_chmod", lambda: owner(p("open", "mine")))
step("chmod_foreign", lambda: os.chmod(p("pub", "ro"), 0o666))
step("chown_own_to_root", lambda: os.chown(p("open", "mine"), 0, -1))
step("utime_foreign_explicit", lambda: os.utime(p("pub", "ro"), (1, 1)))
step("utime_foreign_now", lambda: os.utime(p("pub", "ro"), None))
step("utime_own_explicit", lambda: os.utime(p("open", "mine"), (1, 1)))
step("write_owned_by_nobody", lambda: write(p("nobodys")))
step("unlink_sticky_foreign", lambda: os.unlink(p("sticky", "roots")))
step("create_in_sticky", lambda: write(p("sticky", "mine"), os.O_CREAT | os.O_WRONLY))
step("unlink_sticky_own", lambda: os.unlink(p("sticky", "mine")))
step("rename_into_public", lambda: os.rename(p("open", "mine"), p("pub", "mine")))
step("rmdir_public", lambda: os.rmdir(p("pub")))
step("xattr_user_own", lambda: os.setxattr(p("open", "mine"), "user.k", b"v"))
step("xattr_user_foreign", lambda: os.setxattr(p("pub", "ro"), "user.k", b"v"))
step("xattr_trusted_own", lambda: os.setxattr(p("open", "mine"), "trusted.k", b"v"))
step("create_in_setgid", lambda: write(p("sgid", "f"), os.O_CREAT | os.O_WRONLY))
step("owner_in_setgid", lambda: owner(p("sgid", "f")))
step("mkdir_in_setgid", lambda: os.mkdir(p("sgid", "d"), 0o755))
step("owner_of_setgid_subdir", lambda: owner(p("sgid", "d")))
"#;

fn as_nobody(script: &str, args: &[&Path]) -> RunOutput {
    let mut a: Vec<String> = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        // Not the `python3` on PATH: it may be a shim under /root that nobody cannot run.
        "/usr/bin/python3",
        "-c",
        script,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.iter().map(|p| p.to_string_lossy().into_owned()));
    ext("setpriv", &a)
}

/// The mountpoint's ancestors must be searchable by nobody (temp dirs are 0700).
fn open_path_for_others(dir: &Path) {
    for a in dir.ancestors() {
        if a == Path::new("/") {
            break;
        }
        let mode = fs::metadata(a).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(a, fs::Permissions::from_mode(mode | 0o011)).unwrap();
        }
    }
}

#[test]
fn mount_perms_as_unprivileged_user() {
    require_fuse!();
    let st = TestStore::new();
    let m = Mount::new(&st, &["allow_other"]);
    open_path_for_others(m.path());
    // Built as root through the mount.
    let mk = |rel: &str, mode: u32| {
        fs::create_dir(m.join(rel)).unwrap();
        fs::set_permissions(m.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    };
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o755)).unwrap();
    mk("pub", 0o755);
    fs::write(m.join("pub/ro"), b"root").unwrap();
    fs::set_permissions(m.join("pub/ro"), fs::Permissions::from_mode(0o644)).unwrap();
    mk("open", 0o777);
    mk("private", 0o700);
    mk("sticky", 0o1777);
    fs::write(m.join("sticky/roots"), b"r").unwrap();
    fs::set_permissions(m.join("sticky/roots"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(m.join("secret"), b"s").unwrap();
    fs::set_permissions(m.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.join("nobodys"), b"n").unwrap();
    chown(m.join("nobodys"), Some(NOBODY), Some(NOBODY)).unwrap();
    mk("sgid", 0o777);
    chown(m.join("sgid"), None, Some(4321)).unwrap();
    fs::set_permissions(m.join("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();

    let out = as_nobody(AS_NOBODY_PY, &[m.path()]);
    assert!(out.success(), "{}", out.describe());
    let got: BTreeMap<String, String> = out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("read_public", "ok:root"),
        ("write_public", "EACCES"),
        ("truncate_public", "EACCES"),
        ("create_in_public", "EACCES"),
        ("mkdir_in_public", "EACCES"),
        ("read_secret", "EACCES"),
        ("list_private_dir", "EACCES"),
        ("create_in_open", "ok"),
        ("owner_of_created", "ok:65534:65534:644"),
        ("chmod_own", "ok"),
        ("mode_after_chmod", "ok:65534:65534:600"),
        ("chmod_foreign", "EPERM"),
        ("chown_own_to_root", "EPERM"),
        ("utime_foreign_explicit", "EPERM"),
        ("utime_foreign_now", "EACCES"),
        ("utime_own_explicit", "ok"),
        ("write_owned_by_nobody", "ok"),
        ("unlink_sticky_foreign", "EPERM"),
        ("create_in_sticky", "ok"),
        ("unlink_sticky_own", "ok"),
        ("rename_into_public", "EACCES"),
        ("rmdir_public", "EACCES"),
        ("xattr_user_own", "ok"),
        ("xattr_user_foreign", "EACCES"),
        ("xattr_trusted_own", "EPERM"),
        ("create_in_setgid", "ok"),
        ("owner_in_setgid", "ok:65534:4321:644"),
        ("mkdir_in_setgid", "ok"),
        ("owner_of_setgid_subdir", "ok:65534:4321:2755"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "as nobody through the mount:\n{}",
        diff.join("\n")
    );

    // Nothing nobody was refused happened; root sees nobody's work with nobody's ids.
    assert_eq!(fs::read(m.join("pub/ro")).unwrap(), b"root");
    assert!(fs::symlink_metadata(m.join("sticky/roots")).is_ok());
    assert!(fs::symlink_metadata(m.join("pub/new")).is_err());
    assert_eq!(
        ext_ok(
            "stat",
            &["-c", "%u:%g:%a", &m.join("open/mine").to_string_lossy()]
        )
        .stdout_str()
        .trim(),
        "65534:65534:600"
    );
    // Root passes mode bits: a 0000 file is readable by root.
    fs::set_permissions(m.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(fs::read(m.join("secret")).unwrap(), b"s");
    // And root may set trusted.* attributes.
    ext_ok(
        "setfattr",
        &[
            "-n",
            "trusted.k",
            "-v",
            "t",
            &m.join("secret").to_string_lossy(),
        ],
    );
}

#[test]
fn mount_perms_without_allow_other_only_owner_enters() {
    require_fuse!();
    let st = TestStore::new();
    let m = Mount::new(&st, &[]);
    open_path_for_others(m.path());
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.join("f"), b"x").unwrap();
    fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o666)).unwrap();
    let script = r#"
import errno, os, sys
for f in (lambda: os.stat(sys.argv[1]), lambda: os.listdir(sys.argv[1]),
          lambda: open(os.path.join(sys.argv[1], "f")).read()):
    try:
        f(); print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))
"#;
    let out = as_nobody(script, &[m.path()]);
    assert!(out.success(), "{}", out.describe());
    assert_eq!(
        out.stdout_str(),
        "EACCES\nEACCES\nEACCES\n",
        "{}",
        out.describe()
    );
    // The same steps work for the user who mounted.
    assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
}
