//! Process plumbing for the ranks of a job started on this machine: their bootstrap
//! environment, their output lines and notice of their exit.
//!
//! `herald run` uses it, and so does the multi-process test harness
//! (`tests/common/mod.rs`), which includes this file with `#[path]`: the `herald`
//! package is a binary with no library to import it from.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A loopback port free right now, for rank 0 to listen on once it starts.
/// Taken below the kernel's ephemeral range when it can be: a port from that
/// range (what binding port 0 gives) may be handed to any process's outgoing
/// connection before rank 0 binds it ("Address already in use", seen in CI);
/// one below it can only be taken by another explicit bind.
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let below = ephemeral_low().unwrap_or(0);
    if below > FIRST_UNPRIVILEGED {
        let span = u32::from(below - FIRST_UNPRIVILEGED);
        // A start that differs from process to process, so jobs started at
        // once do not all probe the same ports (RandomState is seeded randomly).
        let start = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        ) as u32
            % span;
        for step in 0..span.min(PROBES) {
            let port = FIRST_UNPRIVILEGED + ((start + step) % span) as u16;
            if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                return listener.local_addr();
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Ports from here up need no privilege to bind.
const FIRST_UNPRIVILEGED: u16 = 1024;
/// Ports tried below the ephemeral range before settling for one in it.
const PROBES: u32 = 64;

/// The first port of the kernel's ephemeral range (for outgoing connections).
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Makes `command` rank `rank` of a job of `nodes` on this machine: the variables
/// herald-tcp's bootstrap reads, with `secret_hex` as the cluster secret.
pub fn set_bootstrap_env<'c>(
    command: &'c mut Command,
    rank: u32,
    nodes: u32,
    coordinator: SocketAddr,
    secret_hex: &str,
) -> &'c mut Command {
    command
        .env("HERALD_RANK", rank.to_string())
        .env("HERALD_SIZE", nodes.to_string())
        .env("HERALD_COORDINATOR", coordinator.to_string())
        .env("HERALD_SECRET", secret_hex)
        // An inherited secret file would conflict with the secret given here.
        .env_remove("HERALD_SECRET_FILE")
}

/// Hands each line that `child` writes to its piped standard output and error to
/// `on_line`, from one thread per pipe; the threads end when the pipes close.
pub fn forward_output(
    rank: u32,
    child: &mut Child,
    on_line: &Arc<impl Fn(u32, Stream, &str) + Send + Sync + 'static>,
) -> Vec<JoinHandle<()>> {
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward_lines(
            rank,
            Stream::Stdout,
            out,
            Arc::clone(on_line),
        ));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward_lines(
            rank,
            Stream::Stderr,
            err,
            Arc::clone(on_line),
        ));
    }
    readers
}

/// Sends `rank` on `exited` once `child` has exited, from a thread of its own, and
/// calls `on_stop` with the signal each time a signal stops it (SIGSTOP, SIGTSTP,
/// ...). The child is left a zombie, so its pid stays reserved (and killing it
/// stays safe) until `Child::wait` reaps it.
pub fn notify_exit(
    child: &Child,
    rank: u32,
    exited: Sender<u32>,
    on_stop: impl Fn(i32) + Send + 'static,
) {
    let pid = child.id();
    std::thread::spawn(move || {
        wait_without_reaping(pid, on_stop);
        let _ = exited.send(rank);
    });
}

fn forward_lines(
    rank: u32,
    stream: Stream,
    pipe: impl Read + Send + 'static,
    on_line: Arc<impl Fn(u32, Stream, &str) + Send + Sync + 'static>,
) -> JoinHandle<()> {
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

/// What `waitid` reports about our child `pid` with `flags` (all zeroes when
/// WNOHANG finds nothing to report), or why it failed.
pub fn wait_child(pid: u32, flags: libc::c_int) -> std::io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits on our own child, with the caller's flags (WNOWAIT leaves it
    // unreaped, so its pid stays its own).
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    if rc == 0 {
        Ok(info)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Blocks until process `pid` has exited, leaving it a zombie so that its pid
/// stays reserved until `Child::wait` reaps it; calls `on_stop` with the signal
/// each time a signal stops it meanwhile.
fn wait_without_reaping(pid: u32, on_stop: impl Fn(i32)) {
    loop {
        let info = match wait_child(pid, libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT) {
            Ok(info) => info,
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return,
        };
        if info.si_code != libc::CLD_STOPPED {
            return;
        }
        // SAFETY: a CLD_STOPPED report carries the stopping signal in si_status.
        let signal = unsafe { info.si_status() };
        // Takes this stop's report (WNOWAIT left it), and only it: WSTOPPED alone
        // never reaps, and WNOHANG returns at once if the child ran on meanwhile.
        let _ = wait_child(pid, libc::WSTOPPED | libc::WNOHANG);
        on_stop(signal);
    }
}
