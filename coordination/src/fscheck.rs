//! Is the filesystem under a store fit for sharing it (data-layout.md 3, [FS-1])?
//!
//! Every protocol here assumes that a write one process made durable (or a rename it made) is
//! seen by every other process at once, and that fcntl locks exclude across all of them. A local
//! filesystem gives that. A network filesystem gives it only with its caches off: on GlusterFS
//! with default options a file overwritten on one client reads old for a second or forever on
//! another, an fdatasynced append shows up half a second later, and counters updated under an
//! fcntl lock lose half their updates. [`inspect`] finds out what the filesystem is (from
//! `statfs` and `/proc/self/mountinfo`), checks the options it can see (NFS mount options; the
//! GlusterFS client's command line and active translator graph) and, when asked, probes
//! visibility between two handles. Each finding is a [`Check`] whose failure names the option
//! to set.
//!
//! Owns the checks and their wording. Does not decide what to do with a failure (the engine
//! refuses to open unless `config.toml` says otherwise; `verfs doctor` prints them), and never
//! changes anything outside the one probe file, which it removes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo` that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// `ext4`, `nfs4`, `fuse.glusterfs`, ...
    pub fstype: String,
    pub source: String,
    /// Per-mount and superblock options, in that order.
    pub options: Vec<String>,
}

/// What kind of filesystem a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// One kernel's page cache: coherent by construction.
    Local,
    /// Shared between hosts: coherent only with the right options.
    Network,
    /// Neither known local nor known network (a FUSE filesystem of unknown kind, ...).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Could not be checked, or a risk the protocols tolerate: said, not refused.
    Warn,
    /// The store must not be shared like this.
    Fail,
}

/// One finding: what was checked, the verdict, and (for a failure) what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// Everything [`inspect`] found about one store directory.
#[derive(Debug, Clone)]
pub struct FsReport {
    pub dir: PathBuf,
    pub mount: Option<MountEntry>,
    pub kind: FsKind,
    pub checks: Vec<Check>,
}

impl FsReport {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Fail)
    }
}

/// GlusterFS client options without which two clients disagree (measured, `../shared/multihost`).
const GLUSTER_CLIENT: &[(&str, &str)] = &[
    ("attribute-timeout", "0"),
    ("entry-timeout", "0"),
    ("negative-timeout", "0"),
    ("fopen-keep-cache", "off"),
    ("direct-io-mode", "enable"),
];

/// Client-side GlusterFS translators that serve stale data or reorder writes across clients:
/// the volume options `performance.<name> off` remove them from the client graph.
const GLUSTER_CACHES: &[(&str, &str)] = &[
    ("write-behind", "write-behind"),
    ("io-cache", "io-cache"),
    ("quick-read", "quick-read"),
    ("open-behind", "open-behind"),
    ("md-cache", "stat-prefetch"),
    ("read-ahead", "read-ahead"),
    ("readdir-ahead", "readdir-ahead"),
    ("nl-cache", "nl-cache"),
];

/// Is `dir` on a filesystem of one kernel's page cache (by `statfs` magic: ext2/3/4, xfs,
/// btrfs, tmpfs, overlayfs, zfs, f2fs)? There a process that holds a lock cannot lose it while
/// alive, and another process's write is seen at once. Unknown (statfs fails) counts as not local.
pub fn is_local(dir: &Path) -> bool {
    use nix::sys::statfs::{self, FsType};
    const LOCAL: &[i64] = &[
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x2FC1_2FC1, // zfs
        0xF2F5_2010, // f2fs
    ];
    match statfs::statfs(dir) {
        Ok(st) => {
            let FsType(t) = st.filesystem_type();
            // `fs_type_t` is i64 on 64-bit Linux but not everywhere.
            #[allow(clippy::unnecessary_cast)]
            let t = t as i64;
            LOCAL.contains(&t)
        }
        Err(_) => false,
    }
}

/// Classify a mountinfo filesystem type.
pub fn classify(fstype: &str) -> FsKind {
    const LOCAL: &[&str] = &[
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs",
        "ramfs",
    ];
    const NETWORK: &[&str] = &[
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "9p",
        "afs",
        "beegfs",
    ];
    let base = fstype.strip_prefix("fuse.").unwrap_or(fstype);
    if LOCAL.contains(&fstype) {
        FsKind::Local
    } else if NETWORK.contains(&base)
        || matches!(
            base,
            "sshfs" | "s3fs" | "cephfs" | "juicefs" | "moosefs" | "lizardfs"
        )
    {
        FsKind::Network
    } else {
        FsKind::Unknown
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo` text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 6 || post.len() < 3 {
                return None;
            }
            let mut options: Vec<String> = pre[5].split(',').map(str::to_owned).collect();
            options.extend(post[2].split(',').map(str::to_owned));
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(pre[4])),
                fstype: post[0].to_owned(),
                source: unescape(post[1]),
                options,
            })
        })
        .collect()
}

/// The mount that holds `path` (canonical): the last mounted entry whose mount point is the
/// longest prefix of it.
pub fn mount_of(path: &Path, mounts: &[MountEntry]) -> Option<MountEntry> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .cloned()
}

/// Find out what `dir` (an existing directory) is on and check it. With `probe`, also write,
/// read and rename a probe file in `dir` through two handles (a few round trips).
pub fn inspect(dir: &Path, probe: bool) -> FsReport {
    let canon = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mount = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| mount_of(&canon, &parse_mountinfo(&t)));
    let mut checks = Vec::new();
    let kind = match &mount {
        Some(m) => {
            let kind = classify(&m.fstype);
            checks.push(Check {
                name: "filesystem",
                verdict: if kind == FsKind::Unknown {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                },
                detail: format!(
                    "{} at {} ({})",
                    m.fstype,
                    m.mount_point.display(),
                    match kind {
                        FsKind::Local => "local: coherent by construction",
                        FsKind::Network => "network: needs the options below",
                        FsKind::Unknown => "unknown kind: its coherence is not checked",
                    }
                ),
            });
            kind
        }
        None => {
            checks.push(Check {
                name: "filesystem",
                verdict: Verdict::Warn,
                detail: format!(
                    "no mount found for {} in /proc/self/mountinfo",
                    canon.display()
                ),
            });
            FsKind::Unknown
        }
    };
    if let Some(m) = &mount {
        let base = m.fstype.strip_prefix("fuse.").unwrap_or(&m.fstype);
        match base {
            "nfs" | "nfs4" => checks.extend(nfs_checks(&m.options)),
            "glusterfs" => {
                checks.push(gluster_client_check(&m.mount_point, &proc_cmdlines()));
                checks.push(gluster_graph_check(&m.mount_point));
            }
            _ => {}
        }
    }
    if probe {
        checks.push(visibility_probe(&canon));
    }
    FsReport {
        dir: canon,
        mount,
        kind,
        checks,
    }
}

/// NFS: attribute caching off (else the log tail and heartbeats look stale to other clients) and
/// locks that reach the server.
pub fn nfs_checks(options: &[String]) -> Vec<Check> {
    let has = |o: &str| options.iter().any(|x| x == o);
    let ac_off = has("noac") || has("actimeo=0") || (has("acregmax=0") && has("acdirmax=0"));
    let local_locks = has("nolock")
        || options
            .iter()
            .any(|o| o == "local_lock=all" || o == "local_lock=posix");
    vec![
        Check {
            name: "nfs attribute cache",
            verdict: if ac_off { Verdict::Pass } else { Verdict::Fail },
            detail: if ac_off {
                "attribute caching is off".into()
            } else {
                "attribute caching is on: mount with `noac` (or `actimeo=0`), or other hosts see \
                 stale sizes of the log and heartbeats"
                    .into()
            },
        },
        Check {
            name: "nfs locks",
            verdict: if local_locks {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            detail: if local_locks {
                "fcntl locks stay on this client (`nolock` or `local_lock`): remove that option"
                    .into()
            } else {
                "fcntl locks go to the server".into()
            },
        },
    ]
}

/// `(pid, argv)` of every process whose command line this process may read.
fn proc_cmdlines() -> Vec<(u32, Vec<String>)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let raw = fs::read(e.path().join("cmdline")).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some((pid, argv))
    })
    .collect()
}

/// The value of `--name=value` or `--name value` in `argv`.
fn arg_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let flag = format!("--{name}");
    argv.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&flag).and_then(|r| r.strip_prefix('=')) {
            Some(v)
        } else if *a == flag {
            argv.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// The GlusterFS FUSE client serving `mount_point` (found among `procs`) runs with the strict
/// options. Its options are not in mountinfo, only on its command line.
pub fn gluster_client_check(mount_point: &Path, procs: &[(u32, Vec<String>)]) -> Check {
    let client = procs.iter().find(|(_, argv)| {
        argv.first()
            .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|n| n == "glusterfs"))
            && argv.last().is_some_and(|l| Path::new(l) == mount_point)
    });
    let Some((pid, argv)) = client else {
        return Check {
            name: "glusterfs client options",
            verdict: Verdict::Warn,
            detail: format!(
                "no glusterfs client process for {} is visible here: its options are not checked",
                mount_point.display()
            ),
        };
    };
    let missing: Vec<String> = GLUSTER_CLIENT
        .iter()
        .filter(|(k, v)| arg_value(argv, k) != Some(*v))
        .map(|(k, v)| format!("--{k}={v}"))
        .collect();
    Check {
        name: "glusterfs client options",
        verdict: if missing.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if missing.is_empty() {
            format!("client pid {pid} runs with every strict option")
        } else {
            format!(
                "client pid {pid} lacks {}: mount with them (glusterfs binary options; \
                 mount.glusterfs drops --fopen-keep-cache=off), or another host reads stale data",
                missing.join(" ")
            )
        },
    }
}

/// The volume's client-side caches are off: none of their translators is in the client's
/// active graph (the virtual `.meta/graphs/active` folder of a GlusterFS mount).
pub fn gluster_graph_check(mount_point: &Path) -> Check {
    let graph = mount_point.join(".meta/graphs/active");
    let names: Vec<String> = match fs::read_dir(&graph) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) => {
            return Check {
                name: "glusterfs volume caches",
                verdict: Verdict::Warn,
                detail: format!(
                    "cannot list {} ({e}): the volume's performance options are not checked",
                    graph.display()
                ),
            }
        }
    };
    gluster_graph_verdict(&names)
}

/// [`gluster_graph_check`] on the listed translator names (`<volume>-<translator>`).
pub fn gluster_graph_verdict(names: &[String]) -> Check {
    let on: Vec<&str> = GLUSTER_CACHES
        .iter()
        .filter(|(xl, _)| names.iter().any(|n| n.ends_with(&format!("-{xl}"))))
        .map(|(_, opt)| *opt)
        .collect();
    Check {
        name: "glusterfs volume caches",
        verdict: if on.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if on.is_empty() {
            "no caching translator in the client graph".into()
        } else {
            format!(
                "caching translators are on: `gluster volume set VOLUME performance.<x> off` for {}",
                on.join(", ")
            )
        },
    }
}

/// Write through one handle, read through another opened before: a durable write, a same-size
/// overwrite, an append and a rename-over must each be seen at once.
pub fn visibility_probe(dir: &Path) -> Check {
    let name = format!(
        ".fscheck.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let path = dir.join(&name);
    let res = probe_at(dir, &path);
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(dir.join(format!("{name}.new")));
    match res {
        Ok(None) => Check {
            name: "visibility probe",
            verdict: Verdict::Pass,
            detail: "writes, overwrites, appends and renames were seen at once by a second handle"
                .into(),
        },
        Ok(Some(what)) => Check {
            name: "visibility probe",
            verdict: Verdict::Fail,
            detail: format!("a second handle did not see {what} at once: caches are on"),
        },
        Err(e) => Check {
            name: "visibility probe",
            verdict: Verdict::Fail,
            detail: format!("probe file {} failed: {e}", path.display()),
        },
    }
}

/// `Ok(Some(what))` names the first change the reader missed.
fn probe_at(dir: &Path, path: &Path) -> io::Result<Option<&'static str>> {
    let w = OpenOptions::new().create_new(true).write(true).open(path)?;
    let r = File::open(path)?;
    let mut buf = [0u8; 8];
    let seen = |r: &File, buf: &mut [u8; 8], want: &[u8; 8]| -> io::Result<bool> {
        let n = r.read_at(buf, 0)?;
        Ok(n == 8 && buf == want)
    };
    w.write_all_at(b"verfs-1\n", 0)?;
    w.sync_data()?;
    if !seen(&r, &mut buf, b"verfs-1\n")? {
        return Ok(Some("a durable write"));
    }
    let w2 = OpenOptions::new().write(true).open(path)?;
    w2.write_all_at(b"verfs-2\n", 0)?;
    w2.sync_data()?;
    if !seen(&r, &mut buf, b"verfs-2\n")? {
        return Ok(Some("a same-size overwrite"));
    }
    let a = OpenOptions::new().append(true).open(path)?;
    use std::io::Write;
    (&a).write_all(b"appended")?;
    a.sync_data()?;
    if r.metadata()?.len() != 16 {
        return Ok(Some("the size after an append"));
    }
    let tmp = dir.join(format!(
        "{}.new",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    fs::write(&tmp, b"verfs-3\n")?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    if !seen(&File::open(path)?, &mut buf, b"verfs-3\n")? {
        return Ok(Some("a rename over the file"));
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (docs/STYLE.md)
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:40 / /mnt/gv rw,relatime shared:20 - fuse.glusterfs 10.0.0.1:/gv rw,user_id=0,group_id=0,allow_other
41 22 0:41 / /mnt/with\\040space rw - nfs4 srv:/x rw,vers=4.2,noac,hard
42 40 0:42 / /mnt/gv/inner rw - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_finds_the_innermost_mount_and_unescapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        let gv = mount_of(Path::new("/mnt/gv/store"), &m).unwrap();
        assert_eq!(gv.fstype, "fuse.glusterfs");
        assert_eq!(classify(&gv.fstype), FsKind::Network);
        assert_eq!(
            mount_of(Path::new("/mnt/gv/inner/s"), &m).unwrap().fstype,
            "tmpfs"
        );
        let sp = mount_of(Path::new("/mnt/with space/s"), &m).unwrap();
        assert_eq!(sp.fstype, "nfs4");
        assert!(sp.options.contains(&"noac".to_string()));
        assert_eq!(mount_of(Path::new("/home"), &m).unwrap().fstype, "ext4");
        assert_eq!(classify("ext4"), FsKind::Local);
        assert_eq!(classify("fuse.weirdfs"), FsKind::Unknown);
    }

    #[test]
    fn nfs_needs_noac_and_server_locks() {
        let opts = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let v = |s| {
            nfs_checks(&opts(s))
                .iter()
                .map(|c| c.verdict)
                .collect::<Vec<_>>()
        };
        assert_eq!(v("rw,noac,hard"), [Verdict::Pass, Verdict::Pass]);
        assert_eq!(v("rw,actimeo=0"), [Verdict::Pass, Verdict::Pass]);
        assert_eq!(v("rw,hard"), [Verdict::Fail, Verdict::Pass]);
        assert_eq!(v("rw,noac,nolock"), [Verdict::Pass, Verdict::Fail]);
        let c = &nfs_checks(&opts("rw"))[0];
        assert!(c.detail.contains("noac"), "{}", c.detail);
    }

    #[test]
    fn gluster_client_options_are_named_when_missing() {
        let mp = Path::new("/mnt/gv");
        let argv = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let strict = argv(
            "/usr/sbin/glusterfs --process-name fuse --volfile-server=10.0.0.1 --attribute-timeout=0 \
             --entry-timeout=0 --negative-timeout 0 --fopen-keep-cache=off --direct-io-mode=enable /mnt/gv",
        );
        let c = gluster_client_check(mp, &[(7, strict)]);
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
        let loose =
            argv("/usr/sbin/glusterfs --volfile-server=10.0.0.1 --attribute-timeout=0 /mnt/gv");
        let c = gluster_client_check(mp, &[(8, loose.clone())]);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.detail.contains("--entry-timeout=0") && c.detail.contains("--fopen-keep-cache=off"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains("--attribute-timeout"), "{}", c.detail);
        // Another mount's client, or none: not checked, said so.
        let c = gluster_client_check(Path::new("/mnt/other"), &[(8, loose)]);
        assert_eq!(c.verdict, Verdict::Warn);
    }

    #[test]
    fn gluster_caching_translators_are_named() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = gluster_graph_verdict(&names(&[
            "gv",
            "gv-client-0",
            "gv-dht",
            "gv-utime",
            "meta-autoload",
        ]));
        assert_eq!(ok.verdict, Verdict::Pass);
        let bad =
            gluster_graph_verdict(&names(&["gv", "gv-write-behind", "gv-md-cache", "gv-dht"]));
        assert_eq!(bad.verdict, Verdict::Fail);
        assert!(
            bad.detail.contains("write-behind") && bad.detail.contains("stat-prefetch"),
            "{}",
            bad.detail
        );
    }

    #[test]
    fn a_local_directory_passes_the_probe_and_is_left_clean() {
        let d = tempfile::tempdir().unwrap();
        let c = visibility_probe(d.path());
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
