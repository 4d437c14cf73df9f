//! `herald run -n N -- PROGRAM ARGS...`: starts N ranks of a job on this machine,
//! with a fresh cluster secret, and prefixes each output line with its rank.
//! If a rank fails, the others are stopped and `herald run` fails too.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use herald_tcp::Secret;

/// Flags of `herald run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Number of ranks to start.
    #[arg(short = 'n', long = "nodes", value_name = "N")]
    pub nodes: u32,
    /// The program each rank runs, with its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<OsString>,
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a local job ended.
#[derive(Debug)]
pub struct JobOutcome {
    /// Each rank's exit status, by rank.
    pub statuses: Vec<ExitStatus>,
    /// The first rank that failed, if any (the others were then stopped).
    pub first_failure: Option<u32>,
}

/// Runs `herald run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some((program, rest)) = args.command.split_first() else {
        bail!("herald run: give the program to run after --");
    };
    let stdout = Arc::new(std::io::stdout());
    let stderr = Arc::new(std::io::stderr());
    let outcome = run_local_job(args.nodes, program, rest, move |rank, stream, line| {
        // One write per line keeps lines of different ranks whole.
        let text = format!("[{rank}] {line}\n");
        let _ = match stream {
            Stream::Stdout => stdout.lock().write_all(text.as_bytes()),
            Stream::Stderr => stderr.lock().write_all(text.as_bytes()),
        };
    })?;
    Ok(report(&outcome))
}

/// Prints why a job failed, and gives the exit code for it.
pub fn report(outcome: &JobOutcome) -> ExitCode {
    match outcome.first_failure {
        None => ExitCode::SUCCESS,
        Some(rank) => {
            let status = outcome.statuses[rank as usize];
            eprintln!("herald run: rank {rank} failed ({status}); the other ranks were stopped");
            ExitCode::FAILURE
        }
    }
}

/// Starts `nodes` copies of `program` on loopback as one job and waits for all.
/// Each output line goes to `on_line`. The first failing rank stops the others.
pub fn run_local_job(
    nodes: u32,
    program: &OsString,
    args: &[OsString],
    on_line: impl Fn(u32, Stream, &str) + Send + Sync + 'static,
) -> anyhow::Result<JobOutcome> {
    if nodes == 0 {
        bail!("herald run: -n must be at least 1");
    }
    let secret = Secret::try_random().context("generating the cluster secret")?;
    let coordinator = free_loopback_port()?;
    let on_line = Arc::new(on_line);
    let (exited_tx, exited) = crossbeam_channel::unbounded();
    let mut children: Vec<Child> = Vec::new();
    let mut readers = Vec::new();
    for rank in 0..nodes {
        let spawned = Command::new(program)
            .args(args)
            .env("HERALD_RANK", rank.to_string())
            .env("HERALD_SIZE", nodes.to_string())
            .env("HERALD_COORDINATOR", coordinator.to_string())
            .env("HERALD_SECRET", secret.to_hex())
            .env_remove("HERALD_SECRET_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                children.iter_mut().for_each(|c| drop(c.kill()));
                children.iter_mut().for_each(|c| drop(c.wait()));
                bail!(
                    "herald run: cannot start {}: {error}",
                    program.to_string_lossy()
                );
            }
        };
        if let Some(out) = child.stdout.take() {
            readers.push(forward_lines(
                rank,
                Stream::Stdout,
                out,
                Arc::clone(&on_line),
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(forward_lines(
                rank,
                Stream::Stderr,
                err,
                Arc::clone(&on_line),
            ));
        }
        let pid = child.id();
        let exited_tx = exited_tx.clone();
        std::thread::spawn(move || {
            wait_without_reaping(pid);
            let _ = exited_tx.send(rank);
        });
        children.push(child);
    }
    drop(exited_tx);

    let mut statuses: Vec<Option<ExitStatus>> = vec![None; nodes as usize];
    let mut first_failure = None;
    for rank in exited.iter() {
        let status = children[rank as usize]
            .wait()
            .with_context(|| format!("waiting for rank {rank}"))?;
        statuses[rank as usize] = Some(status);
        if !status.success() && first_failure.is_none() {
            first_failure = Some(rank);
            for (other, child) in children.iter_mut().enumerate() {
                if statuses[other].is_none() {
                    // Not reaped yet, so the pid is still this child's.
                    let _ = child.kill();
                }
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
    Ok(JobOutcome {
        statuses,
        first_failure,
    })
}

/// A loopback port free right now, for rank 0 to listen on.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    listener.local_addr().context("finding a free port")
}

fn forward_lines(
    rank: u32,
    stream: Stream,
    pipe: impl Read + Send + 'static,
    on_line: Arc<impl Fn(u32, Stream, &str) + Send + Sync + 'static>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            on_line(rank, stream, text.trim_end_matches(['\n', '\r']));
            line.clear();
        }
    })
}

/// Blocks until process `pid` has exited, leaving it a zombie so that its pid
/// stays reserved until `Child::wait` reaps it.
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits on our own child without reaping it (WNOWAIT).
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}
