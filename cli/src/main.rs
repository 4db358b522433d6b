//! `verfs`: the command-line tool. A thin shell over `verfs-engine`: arguments, output, exit codes.

mod cmd;
mod logging;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// The store used when neither `-s` nor `VERFS_STORE` is given; `put` creates it if missing.
pub const DEFAULT_STORE: &str = "./store";

/// verfs: a deduplicating, compressing file store that many processes share at once.
#[derive(Parser)]
#[command(name = "verfs", version, about, propagate_version = true)]
pub struct Cli {
    /// The store directory (given before the command: `verfs -s STORE ls`).
    #[arg(short = 's', long = "store", env = "VERFS_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// Print structured output as JSON (where a command has structured output).
    #[arg(long, global = true)]
    pub json: bool,
    /// More diagnostics on stderr: -v debug, -vv trace (for the verfs crates; overrides
    /// RUST_LOG, which is honoured otherwise; the default shows warnings and errors).
    #[arg(short = 'v', long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Errors only on stderr: no warnings, and `put` prints no summary line.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new store (a directory that is absent or empty).
    Init {
        /// Where to create it (default: the --store directory).
        dir: Option<PathBuf>,
        /// Share the store with this group (name or gid): directories 2770, files 0660.
        /// Without it the store is private to its owner (0700 / 0600).
        #[arg(long)]
        group: Option<String>,
    },
    /// Copy local files or trees into the store (like `cp -r`; keeps mode, mtime, symlinks).
    Put {
        /// Local files or directories, then the store destination.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<OsString>,
    },
    /// Copy a file or tree out of the store (like `cp -r`).
    Get { path: OsString, local: PathBuf },
    /// Write a stored file's bytes to stdout.
    Cat { path: OsString },
    /// List directories (one name per line; a "PATH:" header before each when there are
    /// several). Names are printed raw to a pipe and quoted like GNU `ls` on a terminal.
    Ls {
        #[arg(default_value = "/")]
        paths: Vec<OsString>,
        /// Long format, as `ls -l`: mode, links, owner, group, size, modification time, name.
        #[arg(short = 'l')]
        long: bool,
        /// How names are printed (default: shell-escape on a terminal, else literal).
        #[arg(long, value_enum)]
        quoting_style: Option<cmd::names::Quoting>,
    },
    /// Show an entry's attributes.
    Stat { path: OsString },
    /// Create a directory.
    Mkdir {
        path: OsString,
        /// Create missing parents; no error if it exists.
        #[arg(short = 'p', long)]
        parents: bool,
        /// Permission bits (octal).
        #[arg(short = 'm', long, default_value = "755")]
        mode: String,
    },
    /// Remove a file or symlink (or a tree with -r).
    Rm {
        path: OsString,
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Rename or move an entry (into DST if DST is a directory).
    Mv { src: OsString, dst: OsString },
    /// Make a hard link, or a symbolic link with -s.
    Ln {
        target: OsString,
        link: OsString,
        #[arg(short = 's', long)]
        symbolic: bool,
    },
    /// Live processes, logical vs stored bytes, dedup and compression ratios.
    Status,
    /// Check the filesystem under the store: is it local, or a network filesystem mounted with
    /// the options sharing needs (NFS `noac`, GlusterFS caches off)? Exit 1 if a check failed.
    Doctor,
    /// Clean up after dead processes (leases, open packs, manifests, two-phase commits,
    /// unfinished snapshots and GC rewrites).
    Recover,
    /// Copy-on-write snapshots of the whole tree (readable at /.snapshots/NAME in a mount and in
    /// `ls`, `cat`, `get`).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Garbage collection: drop unreferenced chunks, rewrite or delete packs that are mostly
    /// garbage. One pass, or continuously with --worker.
    Gc {
        /// Run a pass every [gc] interval_ms until SIGTERM / Ctrl-C.
        #[arg(long)]
        worker: bool,
    },
    /// Check every invariant and every checksum; exits 1 and lists each problem if any.
    Fsck {
        /// Run `verfs repair` instead (offline; same report and exit codes).
        #[arg(long)]
        repair: bool,
    },
    /// Write a checkpoint and, once every live process agrees, delete the log it covers.
    Checkpoint,
    /// Hold the named lock NAME in a DLM mode (NL CR CW PR PW EX) while CMD runs, on any host
    /// that shares the store. CMD gets VERFS_LOCK_NAME, VERFS_LOCK_MODE and VERFS_LOCK_EPOCH (a
    /// fencing token that grows with every EX grant); the exit status is CMD's, 124 if the lock
    /// was not granted within --timeout.
    Lock {
        name: String,
        mode: String,
        /// Give up after this many seconds (default: wait as long as it takes).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Who holds and who waits for which `verfs lock`, by process and node.
    Locks,
    /// Rebuild a store whose metadata pages or log records are damaged, offline (no other
    /// process may use the store), and list exactly what was lost. Exit 0: nothing to repair;
    /// 1: repaired without loss; 2: repaired, something lost; 3: not run.
    Repair {
        /// The store (default: the --store directory).
        store: Option<PathBuf>,
        /// Report what would be rebuilt and lost; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mount the store with FUSE (foreground until Ctrl-C / SIGTERM / `verfs umount`).
    Mount {
        mountpoint: PathBuf,
        /// Detach: return once the mount is up, keep serving in the background.
        #[arg(short = 'd', long)]
        daemon: bool,
        /// Mount options: ro, rw, allow_other, default_permissions, no_default_permissions,
        /// dev (device nodes can be opened; off by default), suid (set-user-ID honoured; off by
        /// default), threads=N (defaults from [mount] in config.toml).
        #[arg(short = 'o', value_name = "OPTS")]
        options: Vec<String>,
    },
    /// Make `mount -t fuse.verfs STORE MOUNTPOINT` and /etc/fstab entries of type fuse.verfs
    /// work: a symlink DIR/mount.fuse.verfs to this binary (mount(8) runs it as the mount helper).
    InstallMountHelper {
        /// Where mount(8) looks for helpers.
        #[arg(long, default_value = "/sbin")]
        dir: PathBuf,
        /// Replace an existing DIR/mount.fuse.verfs.
        #[arg(long)]
        force: bool,
    },
    /// Unmount (also clears the dead endpoint of a killed mount); waits for the final flush.
    Umount {
        mountpoint: PathBuf,
        /// Detach now even if files are open (finishes when they are closed).
        #[arg(short = 'l', long)]
        lazy: bool,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot the whole tree as it is now, across every process using the store.
    Create { name: String },
    /// Name, time, files, logical bytes, and stored bytes only this snapshot holds.
    List,
    /// Delete a snapshot (its space is reclaimed by the next `verfs gc`).
    Delete { name: String },
    /// Copy PATH of snapshot NAME into the live tree at DEST, sharing data (no copy).
    Restore {
        name: String,
        path: OsString,
        dest: OsString,
    },
    /// Paths added (A), removed (D) and changed (M) from snapshot A to snapshot B; `/` names the
    /// live tree. Costs time in proportion to the changes: identical subtrees are skipped.
    Diff { a: String, b: String },
}

fn main() -> ExitCode {
    // Run by mount(8) for type fuse.verfs through the symlink `install-mount-helper` makes.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let result = if std::path::Path::new(&argv0).file_name()
        == Some(std::ffi::OsStr::new(cmd::mount::MOUNT_HELPER))
    {
        logging::init(0, false);
        cmd::mount::helper(&args.collect::<Vec<_>>())
    } else {
        let cli = Cli::parse();
        logging::init(cli.verbose, cli.quiet);
        cmd::run(cli)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verfs: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line. Engine errors already print their cause (`path: cause`),
/// so a cause whose text is already in the message is not repeated; line breaks (e.g. in a
/// parser's message) become "; ".
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
