//! `herald run -n N -- PROGRAM ARGS...`: starts N ranks of a job on this machine,
//! with a fresh cluster secret, and prefixes each output line with its rank.
//! If a rank fails, the others are stopped and `herald run` fails too. SIGINT and
//! SIGTERM are passed on to every rank (a stopped rank is continued to receive
//! them); once all are reaped, `herald run` dies of the same signal. A rank that a
//! signal stops is named, with how to resume it.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_tcp::Secret;

use crate::signals::{self, Forwarder};
use crate::{
    capacity,
    local_ranks::{
        Stream, forward_output, free_loopback_port, notify_exit, set_bootstrap_env, wait_child,
    },
};

/// Flags of `herald run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Number of ranks to start.
    #[arg(short = 'n', long = "nodes", value_name = "N")]
    pub nodes: u32,
    /// Every rank's heartbeat interval on idle links, in milliseconds (passed to the
    /// ranks as HERALD_HEARTBEAT_MS; default 1000, 0 = none: then no silence
    /// detection either; a non-zero --peer-timeout-ms with it is refused).
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a rank declares a peer down, in milliseconds (passed to
    /// the ranks as HERALD_PEER_TIMEOUT_MS; default 10000, 0 = never).
    #[arg(long, value_name = "MS")]
    pub peer_timeout_ms: Option<u64>,
    /// The program each rank runs, with its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<OsString>,
}

/// How a local job ended.
#[derive(Debug)]
pub struct JobOutcome {
    /// Each rank's exit status, by rank.
    pub statuses: Vec<ExitStatus>,
    /// The first rank that failed, if any (the others were then stopped), else the
    /// first rank the job declared down (the others went on).
    pub first_failure: Option<u32>,
    /// Other ranks that had failed on their own when the job was stopped (a rank
    /// that aborts often takes the one that loses it down too: which of the two
    /// `herald run` sees first is chance, so it names both).
    pub also_failed: Vec<u32>,
    /// The signal (SIGINT or SIGTERM) `herald run` received and passed on, if any.
    pub signal: Option<i32>,
}

/// Runs `herald run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some((program, rest)) = args.command.split_first() else {
        bail!("herald run: give the program to run after --");
    };
    check_timing(args.heartbeat_ms, args.peer_timeout_ms)?;
    let stdout = Arc::new(std::io::stdout());
    let stderr = Arc::new(std::io::stderr());
    let env: Vec<(String, String)> = [
        ("HERALD_HEARTBEAT_MS", args.heartbeat_ms),
        ("HERALD_PEER_TIMEOUT_MS", args.peer_timeout_ms),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_owned(), value?.to_string())))
    .collect();
    let outcome = run_local_job(
        args.nodes,
        program,
        rest,
        &env,
        move |rank, stream, line| {
            // One write per line keeps lines of different ranks whole.
            let text = format!("[{rank}] {line}\n");
            let _ = match stream {
                Stream::Stdout => stdout.lock().write_all(text.as_bytes()),
                Stream::Stderr => stderr.lock().write_all(text.as_bytes()),
            };
        },
    )?;
    Ok(report(&outcome))
}

/// Prints why a job failed, and gives the exit code for it.
pub fn report(outcome: &JobOutcome) -> ExitCode {
    if let Some(signal) = outcome.signal {
        eprintln!(
            "herald run: stopped by {}; all {} rank(s) started have exited",
            signals::name(signal),
            outcome.statuses.len()
        );
        signals::die_by(signal);
        return ExitCode::from(128 + signal as u8);
    }
    match outcome.first_failure {
        None => ExitCode::SUCCESS,
        Some(rank) => {
            let status = outcome.statuses[rank as usize];
            if is_fenced(status) {
                eprintln!(
                    "herald run: rank {rank} was declared down by the job ({status}); the \
                     other ranks went on without it"
                );
            } else {
                eprintln!(
                    "herald run: rank {rank} failed ({status}); the other ranks were stopped"
                );
            }
            for &other in &outcome.also_failed {
                let status = outcome.statuses[other as usize];
                eprintln!("herald run: rank {other} had failed too ({status})");
            }
            exit_code_of(status)
        }
    }
}

/// Refuses, before any rank starts, the timing every rank's mesh would refuse
/// (each rank would otherwise start only to fail forming the job). A flag not
/// given is what the ranks will read: the inherited variable, else the default.
fn check_timing(heartbeat_ms: Option<u64>, peer_timeout_ms: Option<u64>) -> anyhow::Result<()> {
    let told = |flag: Option<u64>, var: &str| {
        flag.or_else(|| std::env::var(var).ok()?.trim().parse().ok())
            .map(Duration::from_millis)
    };
    let (heartbeat, peer_timeout) = herald_tcp::effective_timing(
        told(heartbeat_ms, "HERALD_HEARTBEAT_MS"),
        told(peer_timeout_ms, "HERALD_PEER_TIMEOUT_MS"),
    );
    herald_tcp::check_timing(heartbeat, peer_timeout)
        .map_err(|reason| anyhow::anyhow!("herald run: {reason}"))
}

/// Starts `nodes` copies of `program` on loopback as one job, each with the
/// extra variables `env`, and waits for all. Each output line goes to `on_line`.
/// The first failing rank stops the others. SIGINT and SIGTERM are forwarded to
/// the ranks: call this before starting other threads (see [`Forwarder::install`]).
pub fn run_local_job(
    nodes: u32,
    program: &OsString,
    args: &[OsString],
    env: &[(String, String)],
    on_line: impl Fn(u32, Stream, &str) + Send + Sync + 'static,
) -> anyhow::Result<JobOutcome> {
    if nodes == 0 {
        bail!("herald run: -n must be at least 1");
    }
    capacity::check(nodes)?;
    let forwarder = Forwarder::install().context("herald run: setting up signal forwarding")?;
    let secret = Secret::try_random()
        .context("generating the cluster secret")?
        .to_hex();
    let coordinator = free_loopback_port().context("finding a free port")?;
    let on_line = Arc::new(on_line);
    let (exited_tx, exited) = crossbeam_channel::unbounded();
    let mut children: Vec<Child> = Vec::new();
    let mut readers = Vec::new();
    for rank in 0..nodes {
        if forwarder.received().is_some() {
            // Stopped while starting: the ranks started so far got the signal.
            break;
        }
        let mut command = Command::new(program);
        // SAFETY: runs in the child between fork and exec, and calls only
        // sigprocmask, which is async-signal-safe. The rank must not inherit the
        // SIGINT/SIGTERM block `Forwarder` put on this thread.
        unsafe {
            command.pre_exec(signals::unblock_in_child);
        }
        let spawned = set_bootstrap_env(
            command.args(args).envs(env.iter().map(|(k, v)| (k, v))),
            rank,
            nodes,
            coordinator,
            &secret,
        )
        // Its own process group, so a forwarded signal reaches what the rank started too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                for (index, child) in children.iter_mut().enumerate() {
                    let _ = child.kill();
                    let _ = forwarder.reap(index, || child.wait());
                }
                bail!(
                    "herald run: cannot start {}: {error}",
                    program.to_string_lossy()
                );
            }
        };
        forwarder.add(child.id());
        readers.extend(forward_output(rank, &mut child, &on_line));
        let pid = child.id();
        notify_exit(&child, rank, exited_tx.clone(), move |signal| {
            // A stopped rank cannot end (nor learn that the job declared it
            // down): the job would wait for it in silence.
            eprintln!(
                "herald run: rank {rank} (pid {pid}) was stopped by {}; the job waits for it \
                 (its peers declare it down once it has been silent for the peer timeout): \
                 `kill -CONT {pid}` resumes it, `kill {pid}` ends it",
                signals::name(signal)
            );
        });
        children.push(child);
    }
    drop(exited_tx);

    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut first_failure = None;
    let mut first_fenced = None;
    let mut stopped = false;
    // Ranks that had failed on their own when the job was stopped.
    let mut own_failures = Vec::new();
    for rank in exited.iter() {
        let index = rank as usize;
        // A first failure stops the job: each rank's whole group, this one's too
        // while it is not reaped (its group id is still its own), since what a
        // rank started (a wrapper script's program, a background child) would
        // otherwise live on and hold its output pipes, and `herald run` with them.
        // After a forwarded signal the ranks are stopping already; let them.
        if !stopped
            && forwarder.received().is_none()
            && status_without_reaping(children[index].id()).is_some_and(failed_on_its_own)
        {
            stopped = true;
            own_failures = failed_unreaped(&children, &statuses);
            kill_unreaped_groups(&forwarder, &statuses);
        }
        let status = forwarder
            .reap(index, || children[index].wait())
            .with_context(|| format!("waiting for rank {rank}"))?;
        statuses[index] = Some(status);
        if status.success() {
            continue;
        }
        // A rank the job declared down ends by design; the job goes on without it.
        if is_fenced(status) {
            first_fenced.get_or_insert(rank);
            continue;
        }
        if first_failure.is_none() && forwarder.received().is_none() {
            first_failure = Some(rank);
            if !stopped {
                stopped = true;
                own_failures = failed_unreaped(&children, &statuses);
                kill_unreaped_groups(&forwarder, &statuses);
            }
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let statuses = statuses
        .into_iter()
        .enumerate()
        .map(|(rank, s)| s.with_context(|| format!("rank {rank} was never reaped")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    own_failures.retain(|&rank| Some(rank) != first_failure);
    Ok(JobOutcome {
        statuses,
        first_failure: first_failure.or(first_fenced),
        also_failed: own_failures,
        signal: forwarder.received(),
    })
}

/// The ranks not reaped yet that have already failed (not merely been declared
/// down), read without reaping them.
fn failed_unreaped(children: &[std::process::Child], statuses: &[Option<ExitStatus>]) -> Vec<u32> {
    statuses
        .iter()
        .enumerate()
        .filter(|(_, status)| status.is_none())
        .filter(|&(rank, _)| {
            status_without_reaping(children[rank].id()).is_some_and(failed_on_its_own)
        })
        .map(|(rank, _)| rank as u32)
        .collect()
}

/// Kills the process group of every rank not reaped yet (see
/// [`Forwarder::kill_group`]).
fn kill_unreaped_groups(forwarder: &Forwarder, statuses: &[Option<ExitStatus>]) {
    for (rank, status) in statuses.iter().enumerate() {
        if status.is_none() {
            forwarder.kill_group(rank);
        }
    }
}

/// The exit status of rank process `pid`, which has exited but is not reaped
/// yet, read without reaping it (so its pid and group id stay its own); None if
/// it cannot be read.
fn status_without_reaping(pid: u32) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let info = wait_child(pid, libc::WEXITED | libc::WNOWAIT | libc::WNOHANG).ok()?;
    // SAFETY: a SIGCHLD siginfo from waitid (all zeroes, si_pid 0, if the child
    // has not exited), whose si_pid and si_status are set.
    let (exited_pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if exited_pid == 0 {
        return None;
    }
    // Encoded as a wait status, as waitpid gives it.
    match info.si_code {
        libc::CLD_EXITED => Some(ExitStatus::from_raw((status & 0xff) << 8)),
        libc::CLD_KILLED => Some(ExitStatus::from_raw(status & 0x7f)),
        libc::CLD_DUMPED => Some(ExitStatus::from_raw((status & 0x7f) | 0x80)),
        _ => None,
    }
}

/// Whether a rank ended because the job declared it down (`herald node`'s exit
/// status for that).
/// `herald run`'s own exit code for a job whose first failing rank ended with
/// `status`: that rank's code, or 128 + the signal that killed it (as a shell
/// and `mpirun` report it), so a script can tell a fenced rank (88) or a crash.
fn exit_code_of(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code != 0 => ExitCode::from(code as u8),
        (_, Some(signal)) => ExitCode::from(128u8.wrapping_add(signal as u8)),
        _ => ExitCode::FAILURE,
    }
}

fn is_fenced(status: ExitStatus) -> bool {
    status.code() == Some(i32::from(crate::node::FENCED_EXIT))
}

/// Whether a rank failed, rather than succeeding or ending because the job
/// declared it down (which stops nothing).
fn failed_on_its_own(status: ExitStatus) -> bool {
    !status.success() && !is_fenced(status)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A rank that has failed is found without being reaped; one still running,
    /// one that succeeded and one the job declared down are not.
    #[test]
    fn failed_unreaped_names_the_ranks_that_already_failed() {
        let spawn = |script: &str| {
            Command::new("sh")
                .args(["-c", script])
                .spawn()
                .expect("spawn sh")
        };
        let fenced = format!("exit {}", crate::node::FENCED_EXIT);
        let mut children = vec![
            spawn("exit 0"),
            spawn("exit 3"),
            spawn("exec sleep 60"),
            spawn(&fenced),
            spawn("kill -ABRT $$"),
        ];
        for rank in [0, 1, 3, 4] {
            // Blocks until it has exited, and leaves it unreaped.
            wait_child(children[rank].id(), libc::WEXITED | libc::WNOWAIT).expect("waitid");
        }
        let statuses = vec![None; children.len()];
        assert_eq!(failed_unreaped(&children, &statuses), [1, 4]);
        assert_eq!(
            status_without_reaping(children[0].id()).map(|s| s.success()),
            Some(true),
            "still unreaped"
        );
        children[2].kill().expect("kill sleep");
        for child in &mut children {
            child.wait().expect("reap");
        }
    }
}
