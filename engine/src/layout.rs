//! Every path inside a store: the names of its top-level files and folders, and [`Layout`], which
//! joins them to a store's root. Also [`Layout::check`], which tells a store of this format
//! version from anything else.
//!
//! What is inside each folder (pack, index, discard, snapshot and log file names) is named by the
//! module that owns that file kind; this module only owns the tree's first level.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::{FormatFile, FORMAT_VERSION};

pub const FORMAT_FILE: &str = "FORMAT";
pub const CONFIG_FILE: &str = "config.toml";
pub const LOG_DIR: &str = "log";
pub const CHECKPOINT_DIR: &str = "checkpoints";
pub const PACK_DIR: &str = "packs";
pub const LEASE_DIR: &str = "leases";
pub const MANIFEST_DIR: &str = "manifests";
pub const TWOPC_DIR: &str = "2pc";
/// The metadata page files (format 3; a version-2 store had `snapshots/` instead).
pub const META_DIR: &str = "meta";

/// Paths of a store's parts.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn format(&self) -> PathBuf {
        self.root.join(FORMAT_FILE)
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn log(&self) -> PathBuf {
        self.root.join(LOG_DIR)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINT_DIR)
    }
    pub fn packs(&self) -> PathBuf {
        self.root.join(PACK_DIR)
    }
    pub fn leases(&self) -> PathBuf {
        self.root.join(LEASE_DIR)
    }
    pub fn manifests(&self) -> PathBuf {
        self.root.join(MANIFEST_DIR)
    }
    pub fn twopc(&self) -> PathBuf {
        self.root.join(TWOPC_DIR)
    }
    /// `meta/`: the metadata page files (format 3).
    pub fn meta(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    /// Check that `root` is a store of this format version; returns its format file.
    pub fn check(&self) -> Result<FormatFile, Error> {
        let root = &self.root;
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: "not a directory".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: "no such directory (create one with `verfs init`)".into(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: root.clone(),
                    source,
                })
            }
        }
        let fpath = self.format();
        let bytes = match fs::read(&fpath) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAStore {
                    path: root.clone(),
                    reason: format!("no {FORMAT_FILE} file (create a store with `verfs init`)"),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    path: fpath,
                    source,
                })
            }
        };
        let ff = FormatFile::decode(&fpath, &bytes).map_err(|e| Error::Corrupt {
            path: fpath.clone(),
            offset: 0,
            reason: e.reason,
        })?;
        if ff.version != FORMAT_VERSION {
            return Err(Error::WrongVersion {
                path: root.clone(),
                found: ff.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(ff)
    }
}
