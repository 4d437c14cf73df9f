//! Whether this machine can hold the ranks `herald run` is asked to start.
//!
//! Every rank is a process, and `herald run` adds threads of its own for each
//! (two reading its output, one noticing its exit), all of which take a task id.
//! The check compares that lower bound with the limits the kernel enforces on
//! tasks, and raises the soft limit on open files to the hard one if the pipes
//! need it. It cannot know how many threads each rank will start, so a job that
//! passes may still run out later; one that fails could never have started.

use anyhow::bail;

/// Tasks `herald run` needs per rank: the rank's process and three threads here.
pub const TASKS_PER_RANK: u64 = 4;

/// Open files `herald run` needs per rank: the read ends of its two output pipes.
const FILES_PER_RANK: u64 = 2;

/// Refuses `nodes` ranks if a kernel limit on tasks or open files cannot hold them.
pub fn check(nodes: u32) -> anyhow::Result<()> {
    let needed = u64::from(nodes) * TASKS_PER_RANK;
    let in_use = tasks_in_use().unwrap_or(0);
    let limits = [
        (
            "kernel.pid_max (/proc/sys/kernel/pid_max)",
            read_number("/proc/sys/kernel/pid_max"),
        ),
        (
            "kernel.threads-max (/proc/sys/kernel/threads-max)",
            read_number("/proc/sys/kernel/threads-max"),
        ),
    ];
    for (name, limit) in limits {
        let Some(limit) = limit else { continue };
        if in_use + needed > limit {
            bail!(
                "herald run: -n {nodes} needs at least {needed} tasks ({TASKS_PER_RANK} per rank: \
                 its process and 3 threads of herald run), but {name} allows {limit} on this \
                 machine and {in_use} are in use; use a smaller -n"
            );
        }
    }
    if let Some((path, limit, current)) = cgroup_pids() {
        if current + needed > limit {
            bail!(
                "herald run: -n {nodes} needs at least {needed} tasks ({TASKS_PER_RANK} per rank), \
                 but this cgroup's pids.max ({path}) is {limit} with {current} in use; use a \
                 smaller -n"
            );
        }
    }
    // Root is exempt from RLIMIT_NPROC (it has CAP_SYS_RESOURCE).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if let Some(limit) = soft_limit(libc::RLIMIT_NPROC) {
            if needed > limit {
                bail!(
                    "herald run: -n {nodes} needs at least {needed} tasks ({TASKS_PER_RANK} per \
                     rank), but RLIMIT_NPROC (ulimit -u) allows {limit} for this user; use a \
                     smaller -n or raise ulimit -u"
                );
            }
        }
    }
    ensure_files(nodes)
}

/// Raises the soft limit on open files to the hard one if the output pipes of
/// `nodes` ranks need more; refuses if the hard limit is too low too.
fn ensure_files(nodes: u32) -> anyhow::Result<()> {
    // Standard streams, the signal and listening sockets, and some slack.
    let needed = u64::from(nodes) * FILES_PER_RANK + 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < needed {
        bail!(
            "herald run: -n {nodes} needs {needed} open files here (2 pipes per rank), but \
             RLIMIT_NOFILE (ulimit -Hn) allows {}; use a smaller -n or raise ulimit -n",
            limit.rlim_max
        );
    }
    // The ranks inherit the raised limit, which their own links need too.
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit with cur <= max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!(
            "herald run: -n {nodes} needs {needed} open files here, and raising RLIMIT_NOFILE \
             failed: {}; raise ulimit -n",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Tasks (processes and threads) on the machine now: the fourth field of
/// /proc/loadavg is "runnable/total".
fn tasks_in_use() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// This process's pids cgroup limit, if it has one: (pids.max path, limit, current).
fn cgroup_pids() -> Option<(String, u64, u64)> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let dir = match controllers {
            "" => format!("/sys/fs/cgroup{path}"),
            c if c.split(',').any(|c| c == "pids") => format!("/sys/fs/cgroup/pids{path}"),
            _ => return None,
        };
        let max = format!("{}/pids.max", dir.trim_end_matches('/'));
        let limit = read_number(&max)?;
        let current = read_number(&format!("{}/pids.current", dir.trim_end_matches('/')))?;
        Some((max, limit, current))
    })
}

fn soft_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur)
}

/// A number in a /proc or /sys file; `None` if absent or not a number ("max").
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
