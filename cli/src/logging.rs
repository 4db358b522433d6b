//! The process's diagnostics: one `tracing` subscriber for every command, the mount process
//! included (the engine, `verfs-fs` and `verfs-coordination` log through it too).
//!
//! Levelled lines go to stderr, without timestamps (a terminal or a daemon's log file supplies
//! the context), coloured only on a terminal. What is shown:
//! - `-q`: errors only;
//! - `-v`: debug for the verfs crates (warnings for the others), `-vv`: trace;
//! - neither: `RUST_LOG` if it is set and valid, else warnings.
//!
//! A command's own output (listings, reports, the one-line error `main` prints) is not a
//! diagnostic and does not go through here.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The crates whose level `-v` raises.
/// (`verfs` is this binary; a target matches a directive it starts with, but naming each keeps
/// the directive readable.)
const VERFS_CRATES: [&str; 4] = ["verfs", "verfs_engine", "verfs_fs", "verfs_coordination"];

/// The filter in force, as a `RUST_LOG` directive (handed to a `mount --daemon` child).
static DIRECTIVES: OnceLock<String> = OnceLock::new();

/// The filter for `-v` repeated `verbose` times or `-q`.
fn directives(verbose: u8, quiet: bool) -> String {
    if quiet {
        return "error".into();
    }
    let level = match verbose {
        0 => {
            return std::env::var("RUST_LOG")
                .ok()
                .filter(|d| EnvFilter::try_new(d).is_ok())
                .unwrap_or_else(|| "warn".into())
        }
        1 => "debug",
        _ => "trace",
    };
    let mut d = String::from("warn");
    for c in VERFS_CRATES {
        d.push_str(&format!(",{c}={level}"));
    }
    d
}

/// Install the subscriber. Called once, first thing in `main`; a second call changes nothing.
pub fn init(verbose: u8, quiet: bool) {
    let d = DIRECTIVES.get_or_init(|| directives(verbose, quiet));
    let filter = EnvFilter::try_new(d).unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

/// The filter in force as a `RUST_LOG` value, for a child process that should log as this one.
pub fn directives_in_force() -> &'static str {
    DIRECTIVES.get().map_or("warn", String::as_str)
}
