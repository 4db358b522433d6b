//! `doctor`: what the filesystem under a store is, and whether it is fit to share ([FS-1]). The
//! checks are `verfs_coordination::fscheck`'s; this module prints them. Nothing in the store is
//! opened or changed (the visibility probe writes and removes one temp file).

use std::process::ExitCode;

use anyhow::Result;
use verfs_coordination::fscheck::{self, Check, FsReport, Verdict};

use crate::Cli;

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "ok",
        Verdict::Warn => "warn",
        Verdict::Fail => "FAIL",
    }
}

/// Exit 0 when no check failed, 1 when one did.
pub fn doctor(cli: &Cli) -> Result<ExitCode> {
    if !cli.store.is_dir() {
        anyhow::bail!("doctor {}: not a directory", cli.store.display());
    }
    let report = fscheck::inspect(&cli.store, true);
    if cli.json {
        println!("{}", json(&report));
    } else {
        println!("store:      {}", report.dir.display());
        for c in &report.checks {
            println!("{:<5} {}: {}", verdict(c.verdict), c.name, c.detail);
        }
    }
    Ok(if report.failures().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn json(r: &FsReport) -> serde_json::Value {
    let check = |c: &Check| serde_json::json!({ "name": c.name, "verdict": verdict(c.verdict), "detail": c.detail });
    serde_json::json!({
        "store": r.dir,
        "fstype": r.mount.as_ref().map(|m| m.fstype.clone()),
        "mount_point": r.mount.as_ref().map(|m| m.mount_point.clone()),
        "kind": format!("{:?}", r.kind).to_lowercase(),
        "checks": r.checks.iter().map(check).collect::<Vec<_>>(),
    })
}

/// After `init`: say what would make opening the new store fail, without refusing it.
pub fn warn_unfit(dir: &std::path::Path) {
    let report = fscheck::inspect(dir, report_probe(dir));
    for c in report.failures() {
        eprintln!(
            "verfs: warning: {}: {}: {} (opening it will be refused until fixed; `verfs doctor` lists every check)",
            dir.display(),
            c.name,
            c.detail
        );
    }
}

/// Probe only off local filesystems: locally it proves nothing and costs fsyncs.
fn report_probe(dir: &std::path::Path) -> bool {
    fscheck::inspect(dir, false).kind != fscheck::FsKind::Local
}
