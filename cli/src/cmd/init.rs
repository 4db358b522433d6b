//! `init`: create a new store, private or shared with a group.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use verfs_engine::store::Store;

use crate::Cli;

pub fn init(cli: &Cli, dir: Option<&Path>, group: Option<&str>) -> Result<ExitCode> {
    let dir = dir.map_or_else(|| cli.store.clone(), Path::to_path_buf);
    let gid = group.map(group_id).transpose()?;
    let ff = Store::init_shared(&dir, gid)?;
    super::doctor::warn_unfit(&dir);
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "store": dir, "version": ff.version })
        );
    } else {
        eprintln!(
            "verfs: created store {} (format version {})",
            dir.display(),
            ff.version
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A group given to `init --group` by name or number.
fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        Ok(None) => anyhow::bail!("init --group {g}: no such group"),
        Err(e) => anyhow::bail!("init --group {g}: {e}"),
    }
}
