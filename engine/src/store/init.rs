//! Creating a store ([`Store::init`], [`Store::init_shared`]).
//!
//! Owns the order of `init`'s steps and its commit point (the format file, [STORE-2]); what each
//! path is comes from [`crate::layout`].

use std::fs;
use std::path::Path;

use verfs_coordination::io_site;
use verfs_coordination::lease::Lease;
use verfs_coordination::txlog;

use super::Store;
use crate::access;
use crate::config::{Config, DEFAULT_TOML};
use crate::error::Error;
use crate::format::{FormatFile, FORMAT_VERSION};
use crate::layout::{
    Layout, CHECKPOINT_DIR, CONFIG_FILE, FORMAT_FILE, LEASE_DIR, LOG_DIR, MANIFEST_DIR, META_DIR,
    PACK_DIR, TWOPC_DIR,
};

impl Store {
    /// Create a store at `root` (which must be absent or an empty directory).
    ///
    /// The format file is written last: it is the commit point of `init`. A crash before leaves a
    /// directory without it, which every command refuses as "not a verfs store" and a second
    /// `verfs init` completes.
    pub fn init(root: &Path) -> Result<FormatFile, Error> {
        Store::init_shared(root, None)
    }

    /// [`Store::init`], for a store shared with group `group` (root 2770, files 0660) instead of
    /// a private one (0700 / 0600) ([STORE-4]).
    pub fn init_shared(root: &Path, group: Option<u32>) -> Result<FormatFile, Error> {
        let layout = Layout::new(root);
        if layout.format().exists() {
            return Err(Error::Exists {
                path: format!("{} (already a verfs store)", root.display()),
            });
        }
        match fs::read_dir(root) {
            Ok(mut rd) => {
                if let Some(Ok(_)) = rd.next() {
                    // A half-finished init (no FORMAT, our own folders, and the manifest temps
                    // of `config.toml` and `FORMAT` that the recovery below rolls back) may be
                    // completed.
                    let ours = [
                        CONFIG_FILE,
                        LOG_DIR,
                        CHECKPOINT_DIR,
                        PACK_DIR,
                        LEASE_DIR,
                        MANIFEST_DIR,
                        TWOPC_DIR,
                        META_DIR,
                        access::RESERVE_FILE,
                    ];
                    let is_ours = |name: &str| {
                        ours.contains(&name)
                            || [CONFIG_FILE, FORMAT_FILE]
                                .iter()
                                .any(|t| name.starts_with(&format!(".{t}.mf-")))
                    };
                    let foreign = fs::read_dir(root)
                        .map_err(Error::io(root))?
                        .filter_map(|e| e.ok())
                        .find(|e| !is_ours(&e.file_name().to_string_lossy()));
                    if let Some(e) = foreign {
                        return Err(Error::InvalidPath {
                            path: root.display().to_string(),
                            reason: format!("directory is not empty (found {:?})", e.file_name()),
                        });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                io_site!("store.init-mkdir-root", fs::create_dir_all(root))
                    .map_err(Error::io(root))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::NotADirectory {
                    path: root.display().to_string(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: root.into(),
                    source,
                })
            }
        }
        access::set_root_mode(root, group)?;
        access::apply_umask(root)?;
        for d in [
            layout.checkpoints(),
            layout.packs(),
            layout.leases(),
            layout.manifests(),
            layout.twopc(),
            layout.meta(),
        ] {
            io_site!("store.init-mkdir", fs::create_dir_all(&d)).map_err(Error::io(&d))?;
        }
        if !layout.log().join("LOCK").exists() {
            let _ = io_site!(
                "store.init-remove-partial-log",
                fs::remove_dir_all(layout.log())
            );
            txlog::create(&layout.log())?;
        }
        // A previous init that died: roll its manifest back (or forward) first.
        let lcfg = Config::default().lease_config();
        let leases = layout.leases();
        let now = std::time::SystemTime::now();
        let dead = |id: &verfs_coordination::lease::LeaseId| {
            verfs_coordination::lease::list(&leases)
                .map(|v| {
                    v.iter()
                        .all(|e| &e.id != id || e.liveness(&lcfg, now).is_dead())
                })
                .unwrap_or(false)
        };
        verfs_coordination::manifest::recover(&layout.manifests(), &dead)
            .map_err(Error::coordination)?;
        // config.toml and FORMAT appear together or not at all: a manifest under an init lease
        // ([STORE-2]). FORMAT is what makes the directory a store.
        let lease = Lease::acquire(&layout.leases(), "init", lcfg).map_err(Error::coordination)?;
        let ff = FormatFile {
            version: FORMAT_VERSION,
            uuid: rand::random(),
        };
        let mut m = verfs_coordination::manifest::Manifest::begin(&layout.manifests(), lease.id());
        m.stage(&layout.config(), DEFAULT_TOML.as_bytes())
            .map_err(Error::coordination)?;
        m.stage(&layout.format(), &ff.encode())
            .map_err(Error::coordination)?;
        m.commit().map_err(Error::coordination)?;
        lease.release().map_err(Error::coordination)?;
        access::refill(root);
        Ok(ff)
    }
}
