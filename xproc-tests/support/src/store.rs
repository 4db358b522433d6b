//! A fresh store in a temporary directory, run through the real `verfs` binary, and what tests
//! read of a store's files without the engine.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ext, run_with_timeout, RunOutput, CMD_TIMEOUT};
use crate::{skip, verfs_bin};

/// A fresh store in a temporary directory: `<tmp>/store`, with `<tmp>` free for scratch files.
pub struct TestStore {
    // Dropped first: a tmpfs under `dir` is unmounted before `dir` is removed.
    _tmpfs: Option<TmpfsGuard>,
    dir: tempfile::TempDir,
    root: PathBuf,
}

/// Lazily unmounts a tmpfs when dropped.
struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStore {
    /// `verfs init` in a new temporary directory.
    pub fn new() -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("verfs-xproc-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("store");
        TestStore {
            _tmpfs: None,
            dir,
            root,
        }
        .init()
    }

    /// A store on its own tmpfs of `mib` MiB (`<tmp>/fs/store`; scratch stays on the host), for
    /// tests that fill the disk. `None`, after a loud SKIPPED line, if no tmpfs can be mounted
    /// (not root); under CI that panics instead ([`skip`]).
    pub fn on_tmpfs(mib: u32) -> Option<TestStore> {
        let dir = tempfile::Builder::new()
            .prefix("verfs-xproc-")
            .tempdir()
            .expect("tempdir");
        let fs_dir = dir.path().join("fs");
        fs::create_dir(&fs_dir).expect("tmpfs dir");
        let out = ext(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                format!("size={mib}m").as_ref(),
                "tmpfs".as_ref(),
                fs_dir.as_os_str(),
            ],
        );
        if !out.success() {
            skip(&format!(
                "cannot mount a tmpfs (needs root):\n{}",
                out.describe()
            ));
            return None;
        }
        Some(
            TestStore {
                _tmpfs: Some(TmpfsGuard(fs_dir.clone())),
                dir,
                root: fs_dir.join("store"),
            }
            .init(),
        )
    }

    fn init(self) -> TestStore {
        let st = self;
        let mut c = Command::new(verfs_bin());
        c.arg("init").arg(&st.root);
        let out = run_with_timeout(c, CMD_TIMEOUT);
        assert!(out.success(), "verfs init failed:\n{}", out.describe());
        st
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temporary directory holding the store; free for scratch files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A new scratch sub-directory.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Set `key = value` in `[section]` of `config.toml` (`value` is TOML, e.g. `"1500"`).
    pub fn set_config(&self, section: &str, key: &str, value: &str) {
        let path = self.root.join("config.toml");
        let text = fs::read_to_string(&path).expect("read config.toml");
        let text = set_toml_value(&text, section, key, value);
        fs::write(&path, text).expect("write config.toml");
    }

    /// Short leases for tests that wait for a lease to time out: 1500 ms, heartbeat 200 ms.
    pub fn short_leases(&self) {
        self.set_config("leases", "timeout_ms", "1500");
        self.set_config("leases", "heartbeat_ms", "200");
    }

    /// `verfs -s STORE` with no subcommand yet.
    pub fn command(&self) -> Command {
        let mut c = Command::new(verfs_bin());
        c.arg("-s").arg(&self.root).env_remove("VERFS_STORE");
        c
    }

    /// Run `verfs -s STORE args...` under [`CMD_TIMEOUT`]; any exit status is returned.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        let mut c = self.command();
        c.args(args);
        run_with_timeout(c, CMD_TIMEOUT)
    }

    /// [`TestStore::run`] that must exit 0.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        let out = self.run(args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out
    }

    /// `verfs fsck` must exit 0 and print no problem line.
    pub fn assert_fsck_clean(&self) {
        let out = self.run(&["fsck"]);
        assert!(
            out.success() && out.stdout.is_empty(),
            "fsck is not clean:\n{}",
            out.describe()
        );
    }

    /// `verfs ls PATH` as a list of names.
    pub fn ls(&self, path: &str) -> Vec<String> {
        self.ok(&["ls", path])
            .stdout_str()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `verfs cat PATH` bytes (must succeed).
    pub fn cat(&self, path: &str) -> Vec<u8> {
        self.ok(&["cat", path]).stdout
    }

    /// Names of the log segments (`log/*.seg`), sorted.
    pub fn log_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("log"))
            .expect("read log dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    }

    /// Names in `leases/`.
    pub fn lease_folders(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("leases"))
            .expect("read leases dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Rewrite one `key = value` line of a TOML text with flat `[section]` tables; the key is added
/// (and the section appended) when missing.
pub fn set_toml_value(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut seen_section = false;
    let mut done = false;
    let header = format!("[{section}]");
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_section && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_section = t == header;
            seen_section |= in_section;
        } else if in_section && !done {
            let k = t.split('=').next().unwrap_or("").trim();
            if !t.starts_with('#') && k == key {
                out.push(format!("{key} = {value}"));
                done = true;
                continue;
            }
        }
        out.push(line.to_owned());
    }
    if !done {
        if !seen_section {
            out.push(header);
        }
        out.push(format!("{key} = {value}"));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Total size of the pack files `STORE/packs/*.pack` (their indexes not counted): what a put of
/// new data grows and a GC pass must shrink.
pub fn packs_bytes(store: &Path) -> u64 {
    fs::read_dir(store.join("packs"))
        .unwrap_or_else(|e| panic!("{}/packs: {e}", store.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// XOR the byte at `offset` of `path` with `mask` (damage for corruption tests).
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset)
        .unwrap_or_else(|e| panic!("{} at {offset}: {e}", path.display()));
    f.write_all_at(&[b[0] ^ mask], offset)
        .unwrap_or_else(|e| panic!("{} at {offset}: {e}", path.display()));
}
