//! The mount and umount commands as a user meets them (issue 11, item 1.10): `verfs umount` as
//! root needs no fusermount3; a fenced mount unmounts itself before it exits (no dead
//! endpoint); an option set that disables every permission check is warned about; and
//! `mount -t fuse.verfs` / an fstab entry of type `fuse.verfs` mount a store through the mount
//! helper that `verfs install-mount-helper` installs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::*;

/// `verfs umount` needed fusermount3 even as root. As root it unmounts with umount2(2) itself.
#[test]
fn umount_as_root_needs_no_fusermount3() {
    require_fuse!();
    require_root!();
    let st = TestStore::new();
    let mut m = Mount::new(&st, &[]);
    fs::write(m.join("f"), b"kept").unwrap();
    let mut c = Command::new(verfs_bin());
    c.arg("umount")
        .arg(m.path())
        .env("PATH", "/nonexistent")
        .env_remove("VERFS_STORE");
    let out = run_with_timeout(c, CMD_TIMEOUT);
    assert!(
        out.success(),
        "umount without fusermount3 on PATH:\n{}",
        out.describe()
    );
    assert!(!m.is_mounted());
    assert!(
        !is_mount_pid_alive(m.pid()),
        "mount process still runs after umount returned"
    );
    assert_eq!(st.cat("/f"), b"kept");
    m.mount();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"kept");
}

fn is_mount_pid_alive(pid: i32) -> bool {
    !is_zombie_or_gone(pid)
}

/// A fenced mount exited but left a dead endpoint: every process touching the mountpoint got
/// ENOTCONN until someone unmounted it. It must detach the mount before it exits.
#[test]
fn fenced_mount_leaves_no_dead_mountpoint() {
    require_fuse!();
    let st = TestStore::new();
    st.short_leases();
    let mut m = Mount::foreground(&st, &[]);
    fs::write(m.join("before"), b"durable").unwrap();
    // fsync: the write is acknowledged as durable before the mount is stalled.
    fs::File::open(m.join("before"))
        .unwrap()
        .sync_all()
        .unwrap();
    assert!(m.signal(nix::sys::signal::Signal::SIGSTOP));
    // The lease (1500 ms) must time out while the mount is stopped.
    thread::sleep(Duration::from_millis(2500));
    let rec = st.ok(&["recover"]);
    assert!(
        rec.stdout_str().contains("cleaned up after dead process"),
        "recover did not claim the stalled mount's lease:\n{}",
        rec.describe()
    );
    assert!(m.signal(nix::sys::signal::Signal::SIGCONT));
    let status = m.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(75),
        "fenced mount exit:\n{}",
        m.stderr()
    );
    assert!(
        !m.is_mounted(),
        "the fenced mount left its mountpoint mounted (dead endpoint):\n{}",
        m.stderr()
    );
    // Usable again at once: no ENOTCONN.
    let entries = fs::read_dir(m.path()).map(|d| d.count());
    assert_eq!(entries.ok(), Some(0), "mountpoint after the fenced exit");
    assert_eq!(st.cat("/before"), b"durable");
    st.assert_fsck_clean();
}

/// `-o allow_other,no_default_permissions` lets every local user read and write everything:
/// verfs says so on stderr when it mounts (and stays quiet for a safe option set).
#[test]
fn allow_other_without_default_permissions_warns() {
    require_fuse!();
    let st = TestStore::new();
    let mut m = Mount::foreground(&st, &["allow_other,no_default_permissions"]);
    let err = m.stderr();
    assert!(
        err.contains("WARNING") && err.contains("every local user can read and write"),
        "no warning on stderr:\n{err}"
    );
    m.umount();
    let mut safe = Mount::foreground(&st, &["allow_other"]);
    assert!(
        !safe.stderr().contains("WARNING"),
        "warned for allow_other with default_permissions:\n{}",
        safe.stderr()
    );
    safe.umount();
}

/// Puts the mount helper in /sbin for one test and takes it away again (restoring what was
/// there before).
struct HelperInstalled {
    link: PathBuf,
    before: Option<PathBuf>,
}

impl HelperInstalled {
    fn new() -> HelperInstalled {
        let link = Path::new("/sbin/mount.fuse.verfs").to_path_buf();
        let before = fs::read_link(&link).ok();
        let mut c = Command::new(verfs_bin());
        c.args(["install-mount-helper", "--force"]);
        let out = run_with_timeout(c, CMD_TIMEOUT);
        assert!(out.success(), "install-mount-helper:\n{}", out.describe());
        assert_eq!(
            fs::canonicalize(&link).unwrap(),
            fs::canonicalize(verfs_bin()).unwrap()
        );
        HelperInstalled { link, before }
    }
}

impl Drop for HelperInstalled {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
        if let Some(old) = &self.before {
            let _ = std::os::unix::fs::symlink(old, &self.link);
        }
    }
}

/// A store could not be mounted with `mount -t fuse.verfs STORE MOUNTPOINT` or from an fstab
/// line. With the helper installed both work, and `verfs umount` unmounts them.
#[test]
fn mount_t_fuse_verfs_uses_the_mount_helper() {
    require_fuse!();
    require_root!();
    let st = TestStore::new();
    fs::write(st.scratch_dir("src").join("hello"), b"hello\n").unwrap();
    st.ok(&[
        std::ffi::OsString::from("put"),
        st.scratch().join("src").into(),
        "/d".into(),
    ]);
    let _helper = HelperInstalled::new();
    let store = fs::canonicalize(st.root()).unwrap();
    let mp = st.scratch_dir("mnt");
    let mp = fs::canonicalize(&mp).unwrap();
    let umount = |mp: &Path| {
        let mut c = Command::new(verfs_bin());
        c.arg("umount").arg(mp).env_remove("VERFS_STORE");
        let out = run_with_timeout(c, CMD_TIMEOUT);
        assert!(out.success(), "verfs umount:\n{}", out.describe());
        assert!(!is_mounted(mp));
    };

    // mount(8) with the type on the command line.
    let out = ext(
        "mount",
        &[
            "-t".as_ref(),
            "fuse.verfs".as_ref(),
            store.as_os_str(),
            mp.as_os_str(),
            "-o".as_ref(),
            "rw,nodev".as_ref(),
        ],
    );
    let mounted = is_mounted(&mp);
    let read = fs::read(mp.join("d/hello"));
    if mounted {
        umount(&mp);
    }
    assert!(out.success(), "mount -t fuse.verfs:\n{}", out.describe());
    assert!(
        mounted,
        "mount -t fuse.verfs returned but nothing is mounted"
    );
    assert_eq!(read.unwrap(), b"hello\n");

    // An fstab entry (mount -T reads another fstab file), with options mount(8) itself uses.
    let fstab = st.scratch().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.verfs defaults,noauto,nofail,x-systemd.automount,ro 0 0\n",
            store.display(),
            mp.display()
        ),
    )
    .unwrap();
    let out = ext("mount", &["-T".as_ref(), fstab.as_os_str(), mp.as_os_str()]);
    let mounted = is_mounted(&mp);
    let read = fs::read(mp.join("d/hello"));
    let write = fs::write(mp.join("d/new"), b"x");
    if mounted {
        umount(&mp);
    }
    assert!(out.success(), "mount from fstab:\n{}", out.describe());
    assert!(mounted, "mount from fstab returned but nothing is mounted");
    assert_eq!(read.unwrap(), b"hello\n");
    assert!(
        write.is_err(),
        "the fstab entry said ro, but a write succeeded"
    );
    st.assert_fsck_clean();
}
