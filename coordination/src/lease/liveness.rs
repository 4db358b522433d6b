//! Is a lease's process alive? Local facts (`/proc`, boot id, pid namespace) and the
//! [`liveness`] rule ([LEASE-5]).
//!
//! Owns the decision "dead or alive" from a [`LeaseInfo`] and a last sign of life. Does not read
//! lease folders (`listing` does, and passes what it found) and never changes anything on disk.

use std::fs;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::{unix_ms, Heartbeat, LeaseConfig, LeaseInfo};

/// Facts about the local machine that [`liveness`] compares with a lease's info.
#[derive(Debug, Clone)]
pub(super) struct LocalHost {
    pub(super) node: String,
    pub(super) host: String,
    pub(super) boot_id: String,
    pub(super) pid_ns: String,
}

/// The environment variable that names this process's node ([LEASE-5]): processes that share a
/// kernel but stand for different hosts (containers, the two-host test bed) must set it.
pub const NODE_ENV: &str = "VERFS_NODE";

/// This machine's boot id, as recorded in every lease made here (empty if unknown).
pub fn this_boot_id() -> &'static str {
    &local_host().boot_id
}

/// This process's node identity, as recorded in every lease it makes: `VERFS_NODE` if set, else
/// `/etc/machine-id`, else the hostname.
pub fn this_node() -> &'static str {
    &local_host().node
}

/// Was the lease made by a process of this node, this boot and this pid namespace, so that its
/// pid means a process here? Only then may a pid (in a lease, a temp file name) be checked.
pub fn runs_here(info: &LeaseInfo) -> bool {
    let here = local_host();
    same_node(info, here)
        && !here.boot_id.is_empty()
        && info.boot_id == here.boot_id
        && info.pid_ns == here.pid_ns
}

/// A lease of this node. A lease without a node (made before nodes were recorded) is judged by
/// its hostname.
fn same_node(info: &LeaseInfo, here: &LocalHost) -> bool {
    if info.node.is_empty() {
        !here.host.is_empty() && info.host == here.host
    } else {
        info.node == here.node
    }
}

pub(super) fn local_host() -> &'static LocalHost {
    static LOCAL: OnceLock<LocalHost> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let host = hostname();
        LocalHost {
            node: node_identity(std::env::var(NODE_ENV).ok(), &host),
            host,
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            pid_ns: fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    })
}

/// The node identity from `VERFS_NODE` (`env`), else the machine id, else the hostname.
pub(super) fn node_identity(env: Option<String>, host: &str) -> String {
    if let Some(n) = env.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) {
        return n;
    }
    match fs::read_to_string("/etc/machine-id") {
        Ok(m) if !m.trim().is_empty() => format!("machine-{}", m.trim()),
        _ => format!("host-{host}"),
    }
}

fn hostname() -> String {
    if let Ok(s) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) state: char,
    pub(super) start_ticks: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub(super) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `fields` starts at field 3 (state); field 22 (starttime) is 19 further on.
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

pub(super) fn proc_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_proc_stat(&text))
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...) from `/proc/<pid>/stat`; `None`
/// if there is no such process here.
pub fn proc_state(pid: u32) -> Option<char> {
    proc_stat(pid).ok().flatten().map(|s| s.state)
}

/// Has process `pid` exited: gone, or a zombie (`Z`/`X`) not yet reaped?
pub fn has_exited(pid: u32) -> bool {
    !matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Is a lease alive?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Dead, with a human-readable reason for `verfs recover` output.
    Dead(String),
}

impl Liveness {
    pub fn is_dead(&self) -> bool {
        matches!(self, Liveness::Dead(_))
    }
}

/// Decide whether the lease described by `info` is dead ([LEASE-5]).
///
/// Dead when, in this order: the lease was made on this node during this boot and in this pid
/// namespace ([`runs_here`]), and its pid no longer exists, is a zombie, or started at another
/// time (pids are reused); or it was made on this node during another boot (the node rebooted);
/// or its last sign of life (the heartbeat's time, else `info.started_unix_ms`) is more than
/// `cfg.timeout` before `now`. The last rule is the only one that catches a SIGSTOPped process
/// (its pid still exists) and processes of other nodes, whose pids mean nothing here even when
/// they share this kernel; it assumes the nodes' clocks agree to well within `cfg.timeout`.
pub fn liveness(
    info: &LeaseInfo,
    hb: Option<Heartbeat>,
    cfg: &LeaseConfig,
    now: SystemTime,
) -> Liveness {
    let last = hb.map(|h| h.unix_ms).unwrap_or(info.started_unix_ms);
    liveness_at(Some(info), last, cfg, now)
}

pub(super) fn liveness_at(
    info: Option<&LeaseInfo>,
    last_seen_ms: u64,
    cfg: &LeaseConfig,
    now: SystemTime,
) -> Liveness {
    if let Some(info) = info {
        let here = local_host();
        if runs_here(info) {
            if let Some(reason) = local_pid_dead(info) {
                return Liveness::Dead(reason);
            }
        } else if same_node(info, here) && !here.boot_id.is_empty() && info.boot_id != here.boot_id
        {
            return Liveness::Dead(format!(
                "node {} rebooted (boot id {} is now {})",
                if info.node.is_empty() {
                    &info.host
                } else {
                    &info.node
                },
                info.boot_id,
                here.boot_id
            ));
        }
    }
    let now_ms = unix_ms(now);
    let age = Duration::from_millis(now_ms.saturating_sub(last_seen_ms));
    if age > cfg.timeout {
        return Liveness::Dead(format!(
            "no heartbeat for {:.1}s (timeout {:.1}s)",
            age.as_secs_f64(),
            cfg.timeout.as_secs_f64()
        ));
    }
    Liveness::Alive
}

fn local_pid_dead(info: &LeaseInfo) -> Option<String> {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    // 0 and values above i32::MAX would make kill() address a process group or every process.
    let raw = match i32::try_from(info.pid) {
        Ok(p) if p > 0 => p,
        _ => return Some(format!("invalid pid {}", info.pid)),
    };
    if let Err(Errno::ESRCH) = kill(Pid::from_raw(raw), None) {
        return Some(format!("pid {} no longer exists", info.pid));
    }
    match proc_stat(info.pid) {
        Ok(Some(st)) if st.state == 'Z' || st.state == 'X' => {
            Some(format!("pid {} has exited (zombie)", info.pid))
        }
        Ok(Some(st)) if st.start_ticks != info.pid_start_ticks => Some(format!(
            "pid {} was reused (started at tick {}, lease says {})",
            info.pid, st.start_ticks, info.pid_start_ticks
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(format!("pid {} no longer exists", info.pid))
        }
        // Unparsable stat or a transient error: let the heartbeat age decide.
        _ => None,
    }
}
