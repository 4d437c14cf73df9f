//! Real jobs of many processes on this machine, next to Open MPI at the same N in
//! the same run (herald issue 9).
//!
//! `cargo bench -p herald --bench scale` (default N = 16 64 256; give sizes after
//! `--`, e.g. `-- 16 64 256 512`). For each N it starts `herald run -n N -- herald
//! node` with `global_main` of cli/tests/c/global.c (one global registration of a
//! no-op callback) and reports:
//!
//! - formation: from starting `herald run` to rank 0's main starting (every rank
//!   started, linked and its runtime up, the library loaded);
//! - registration: the first global registration, until it completed on every
//!   rank, then the median of 20 more (new argument bytes each) as
//!   `herald/MPI` compares with MPI's warm median;
//! - threads, sockets (`/proc/PID/fd` entries that are sockets) and resident
//!   memory (`VmRSS`) per rank process, mean and max, sampled while the job is
//!   formed and idle (rank 0 holds the job open until the benchmark has sampled);
//! - end: from releasing rank 0 until `herald run` exited;
//!
//! then Open MPI's start-up (`mpirun -np N` of `MPI_Init` + `MPI_Finalize`, wall
//! time) and 64-byte `MPI_Bcast` + `MPI_Reduce` over TCP at the same N
//! (host/benches/common/mpi_reference.c). An N that fails prints one line saying
//! why, and the table goes on.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../host/benches/common/mpi.rs"]
mod mpi;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Longest one job may take to reach its idle hold, or to end after it.
const GUARD: Duration = Duration::from_secs(600);
/// Registrations after the first, for a warm median.
const REPEATS: u32 = 20;

fn main() {
    let mut sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![16, 64, 256];
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let global = common::build_c(dir.path(), "global", "global", "");
    let reference = mpi::MpiReference::build(dir.path());
    if let Err(reason) = &reference {
        println!("Open MPI reference skipped: {reason}");
    }
    println!(
        "herald run -n N on this machine ({} cores), next to Open MPI over TCP in the same run",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>4} | {:>11} | {:>12} | {:>10} | {:>7} | {:>16} | {:>16} | {:>18} | {:>12} | {:>14} | {:>11}",
        "N",
        "formation s",
        "first reg ms",
        "reg med ms",
        "end s",
        "threads/proc",
        "sockets/proc",
        "RSS MiB/proc",
        "MPI start s",
        "MPI b+r med ms",
        "herald/MPI"
    );
    // Resident memory per rank measured at the last size, to skip a size whose
    // ranks would not fit in memory (512 asked for on a small machine).
    let mut rss_per_rank_kib = 0.0;
    for nodes in sizes {
        let needed_kib = rss_per_rank_kib * f64::from(nodes) * 1.5;
        let available_kib = mem_available_kib();
        let herald = if needed_kib > available_kib as f64 {
            Err(format!(
                "skipped: {nodes} ranks need about {:.0} MiB (1.5x the last size's RSS per \
                 rank), MemAvailable is {} MiB",
                needed_kib / 1024.0,
                available_kib / 1024
            ))
        } else {
            run_herald(nodes, dir.path(), &global)
        };
        if let Ok(m) = &herald {
            rss_per_rank_kib = m.rss_kib.mean;
        }
        let startup = reference
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| r.startup(nodes, if nodes >= 256 { 1 } else { 3 }));
        let iters = (4000 / nodes as usize).clamp(20, 1000);
        let bcast = reference
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| r.bcast_reduce(nodes, 64, iters, iters / 5 + 5));
        let mpi_start = startup
            .as_ref()
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()));
        let mpi_bcast = bcast
            .as_ref()
            .map_or("-".into(), |l| format!("{:.3}", l.median_us / 1000.0));
        match &herald {
            Ok(m) => {
                let ratio = bcast.as_ref().map_or("-".into(), |l| {
                    format!("{:.1}x", m.repeat_median.as_secs_f64() * 1e6 / l.median_us)
                });
                println!(
                    "{:>4} | {:>11.2} | {:>12.2} | {:>10.3} | {:>7.2} | {:>16} | {:>16} | {:>18} | {:>12} | {:>14} | {:>11}",
                    nodes,
                    m.formation.as_secs_f64(),
                    m.registration.as_secs_f64() * 1e3,
                    m.repeat_median.as_secs_f64() * 1e3,
                    m.end.as_secs_f64(),
                    m.threads.show(1.0, 0),
                    m.sockets.show(1.0, 0),
                    m.rss_kib.show(1024.0, 1),
                    mpi_start,
                    mpi_bcast,
                    ratio
                );
            }
            Err(reason) => {
                println!(
                    "{nodes:>4} | herald FAILED: {reason} | MPI start-up {mpi_start} s, \
                     bcast+reduce {mpi_bcast} ms"
                );
            }
        }
        for (what, result) in [("start-up", startup.err()), ("bcast+reduce", bcast.err())] {
            if let (Some(reason), Ok(_)) = (result, &reference) {
                println!("     Open MPI {what} at N={nodes} failed: {reason}");
            }
        }
    }
    println!(
        "per-process figures: mean / max over the N rank processes, sampled while the job \
         is formed and idle. MPI b+r: one 64-byte MPI_Bcast + MPI_Reduce round (median), \
         btl tcp,self, oversubscribed past the cores as herald is."
    );
}

/// What one job of N ranks measured.
struct Measured {
    formation: Duration,
    registration: Duration,
    repeat_median: Duration,
    end: Duration,
    threads: Spread,
    sockets: Spread,
    rss_kib: Spread,
}

/// Mean and max of a per-process figure.
struct Spread {
    mean: f64,
    max: u64,
}

impl Spread {
    fn of(values: &[u64]) -> Spread {
        Spread {
            mean: values.iter().sum::<u64>() as f64 / values.len().max(1) as f64,
            max: values.iter().copied().max().unwrap_or(0),
        }
    }

    /// "mean / max", each divided by `unit`.
    fn show(&self, unit: f64, decimals: usize) -> String {
        format!(
            "{:.decimals$} / {:.decimals$}",
            self.mean / unit,
            self.max as f64 / unit
        )
    }
}

/// Runs one job of `nodes` ranks and measures it, or says why it failed.
fn run_herald(nodes: u32, dir: &Path, global: &Path) -> Result<Measured, String> {
    let hold = dir.join(format!("hold-{nodes}"));
    let _ = std::fs::remove_file(&hold);
    let main = format!("{}:global_main", global.display());
    let spawned_unix_us = unix_us();
    let mut run = Command::new(common::herald())
        .args(["run", "-n", &nodes.to_string(), "--"])
        .arg(common::herald())
        .args(["node", "--load"])
        .arg(global)
        .args(["--main", &main, "--library-path"])
        .arg(dir)
        .args(["--establish-timeout", "300"])
        .env("HERALD_TEST_HOLD", &hold)
        .env("HERALD_TEST_REPEAT", REPEATS.to_string())
        .env_remove("HERALD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting herald run: {e}"))?;
    let lines = read_lines(&mut run);
    let outcome = measure_job(nodes, &mut run, &lines, &hold, spawned_unix_us);
    if outcome.is_err() {
        stop(&mut run);
    }
    outcome
}

fn measure_job(
    nodes: u32,
    run: &mut Child,
    lines: &Receiver<(bool, String)>,
    hold: &Path,
    spawned_unix_us: u64,
) -> Result<Measured, String> {
    let mut tail = Vec::new();
    let mut first_error = None;
    let mut registered = false;
    let mut timing = None;
    let mut repeat_median = None;
    let deadline = Instant::now() + GUARD;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((stderr, text)) => {
                if text.starts_with("[0] registration: ") {
                    registered = text == format!("[0] registration: ok on {nodes} nodes");
                    if !registered {
                        return Err(text);
                    }
                } else if let Some(rest) = text.strip_prefix("[0] timing: ") {
                    timing = Some(parse_timing(rest)?);
                } else if let Some(rest) = text.strip_prefix("[0] repeat: ") {
                    let median = rest
                        .split_whitespace()
                        .find_map(|kv| kv.strip_prefix("median_us="))
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("repeated registrations: {rest}"))?;
                    repeat_median = Some(Duration::from_micros(median));
                } else if text == "[0] hold: waiting" {
                    break;
                } else if stderr {
                    if first_error.is_none()
                        && (text.contains("did not form") || text.contains("refus"))
                    {
                        first_error = Some(text.clone());
                    }
                    tail.push(text);
                    if tail.len() > 1 {
                        tail.remove(0);
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = run.wait().map_err(|e| e.to_string())?;
                let last = tail.last().cloned().unwrap_or_default();
                return Err(format!(
                    "{status}; {last}; first error: {}",
                    first_error.unwrap_or_else(|| "none logged".into())
                ));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("not formed and registered within {GUARD:?}"));
            }
        }
    }
    let (main_start_unix_us, registration) = timing.ok_or("rank 0 printed no timing line")?;
    if !registered {
        return Err("rank 0 printed no registration outcome".into());
    }
    let repeat_median = repeat_median.ok_or("rank 0 printed no repeat line")?;
    let samples = sample_ranks(run.id())?;
    if samples.threads.len() != nodes as usize {
        return Err(format!(
            "found {} rank processes under herald run, expected {nodes}",
            samples.threads.len()
        ));
    }
    let released = Instant::now();
    std::fs::write(hold, b"").map_err(|e| format!("releasing rank 0: {e}"))?;
    // Drain the rest of the output until herald run closes it (and exits).
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => return Err("the job did not end".into()),
        }
    }
    let status = run.wait().map_err(|e| e.to_string())?;
    let end = released.elapsed();
    if !status.success() {
        return Err(format!("herald run ended with {status}"));
    }
    Ok(Measured {
        formation: Duration::from_micros(main_start_unix_us.saturating_sub(spawned_unix_us)),
        registration,
        repeat_median,
        end,
        threads: Spread::of(&samples.threads),
        sockets: Spread::of(&samples.sockets),
        rss_kib: Spread::of(&samples.rss_kib),
    })
}

/// `main_start_unix_us=T registration_us=D` from rank 0's timing line.
fn parse_timing(rest: &str) -> Result<(u64, Duration), String> {
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} in timing line {rest:?}"))
    };
    Ok((
        field("main_start_unix_us=")?,
        Duration::from_micros(field("registration_us=")?),
    ))
}

/// Threads, socket descriptors and VmRSS (KiB) of every child of `parent` (the
/// ranks `herald run` started).
fn sample_ranks(parent: u32) -> Result<Samples, String> {
    let mut samples = Samples::default();
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("reading /proc: {e}"))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("PPid:") != Some(u64::from(parent)) {
            continue;
        }
        let socket_count = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        samples.threads.push(field("Threads:").unwrap_or(0));
        samples.rss_kib.push(field("VmRSS:").unwrap_or(0));
        samples.sockets.push(socket_count);
    }
    Ok(samples)
}

/// Per-process figures of the ranks, one entry per rank process.
#[derive(Default)]
struct Samples {
    threads: Vec<u64>,
    sockets: Vec<u64>,
    rss_kib: Vec<u64>,
}

/// Lines of `child`'s stdout and stderr (`true` for stderr), from a thread per
/// pipe; the channel disconnects once both pipes have closed.
fn read_lines(child: &mut Child) -> Receiver<(bool, String)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let out = child
        .stdout
        .take()
        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
    for (is_err, pipe) in [(false, out), (true, err)] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send((is_err, line));
            }
        });
    }
    rx
}

/// Stops a job that failed or hung: SIGTERM (which herald run passes on to every
/// rank), then SIGKILL if it has not ended 10 s later.
fn stop(run: &mut Child) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = run.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = run.kill();
    let _ = run.wait();
}

/// `MemAvailable` from /proc/meminfo, in KiB (unbounded if unreadable: no size is skipped).
fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u64::MAX)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
