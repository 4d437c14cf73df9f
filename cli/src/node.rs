//! `herald node`: a generic node of a job. After the mesh forms, rank 0 loads each
//! `--load` library (their constructors register what they need globally), runs
//! the `--main` function, and ends the job; every other rank serves until then.

use std::ffi::c_int;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_host::{HostConfig, JobEnd, Runtime, RuntimeStats};
use herald_tcp::{Bootstrap, Mesh, bootstrap_from_env};

/// Flags of `herald node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// This process's rank (default: from HERALD_RANK, Open MPI, PMI, PMIx or Slurm).
    #[arg(long, requires = "size")]
    pub rank: Option<u32>,
    /// Number of ranks in the job (default: from the environment, like --rank).
    #[arg(long, requires = "rank")]
    pub size: Option<u32>,
    /// Where rank 0 listens (default: HERALD_COORDINATOR). The secret always comes
    /// from HERALD_SECRET or HERALD_SECRET_FILE, never from the command line.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<SocketAddr>,
    /// Address this rank listens on (default: HERALD_BIND, else loopback).
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// A library rank 0 loads once the job has formed (repeatable, in order).
    #[arg(long = "load", value_name = "LIBRARY")]
    pub load: Vec<PathBuf>,
    /// The job's top-level function, `int f(void)`, run on rank 0 after the loads
    /// (taken from the library herald checked and loaded, never from the path
    /// again); its return value is rank 0's exit code.
    #[arg(long, value_name = "LIBRARY:SYMBOL")]
    pub main: Option<String>,
    /// A directory libraries may be loaded from, added to the defaults
    /// (HERALD_LIBRARY_PATH, plus the working directory and the executable's
    /// unless one is /, the home directory or writable by anyone).
    #[arg(long = "library-path", value_name = "DIR")]
    pub library_path: Vec<PathBuf>,
    /// Seconds to wait for every rank to join.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub establish_timeout: u64,
    /// Print this node's counters as one `herald-stats` line at exit.
    #[arg(long)]
    pub stats: bool,
}

/// Runs one node until the job ends.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    herald_host::keep_c_abi();
    let boot = bootstrap(&args)?;
    let mut mesh_config = boot
        .mesh_config()
        .context("herald node: incomplete bootstrap")?;
    if let Some(bind) = args.bind {
        mesh_config.bind = bind;
    }
    mesh_config.establish_timeout = Duration::from_secs(args.establish_timeout.max(1));
    let (rank, size) = (boot.rank, boot.size);
    let (mesh, events) = Mesh::establish(mesh_config)
        .with_context(|| format!("rank {rank} of {size}: the job did not form"))?;
    let mut config = HostConfig::default();
    config
        .library_dirs
        .extend(args.library_path.iter().cloned());
    let runtime = Runtime::start(mesh, events, config).context("starting the runtime")?;
    herald_host::install_global(&runtime);
    tracing::info!(
        "herald node: rank {rank} of {size}, bootstrap from {:?}",
        boot.source
    );

    let code = if rank == 0 {
        let code = run_top_level(&runtime, &args);
        if let Err(error) = runtime.end_job() {
            eprintln!("herald node: ending the job: {error}");
        }
        code
    } else {
        match runtime.wait_for_job_end(None) {
            Ok(JobEnd::Ended { .. }) => 0,
            Ok(JobEnd::CoordinatorLost { reason }) => {
                eprintln!("herald node: rank 0 went down before ending the job: {reason}");
                1
            }
            Ok(JobEnd::Stopped) | Err(_) => 1,
        }
    };
    if args.stats {
        println!("{}", stats_line(&runtime.stats()));
    }
    herald_host::uninstall_global();
    runtime.shutdown();
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Parses a `herald-stats` line printed by `--stats` into (name, value) pairs.
pub fn parse_stats_line(line: &str) -> Option<Vec<(String, u64)>> {
    let rest = line.trim().strip_prefix("herald-stats ")?;
    rest.split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Rank, size, coordinator and secret: flags first, then the environment
/// (herald's own variables, then Open MPI, PMI, PMIx, Slurm).
fn bootstrap(args: &NodeArgs) -> anyhow::Result<Bootstrap> {
    let flags = [
        ("HERALD_RANK", args.rank.map(|r| r.to_string())),
        ("HERALD_SIZE", args.size.map(|s| s.to_string())),
        (
            "HERALD_COORDINATOR",
            args.coordinator.map(|c| c.to_string()),
        ),
    ];
    let lookup = |name: &str| {
        flags
            .iter()
            .find(|(flag, value)| *flag == name && value.is_some())
            .and_then(|(_, value)| value.clone())
            .or_else(|| std::env::var(name).ok())
    };
    bootstrap_from_env(&lookup).context("herald node: cannot tell which rank this is")
}

/// Rank 0's part: the loads, then the main function. Returns the exit code.
fn run_top_level(runtime: &Runtime, args: &NodeArgs) -> i32 {
    for library in &args.load {
        match runtime.load_library(library) {
            Ok(report) => tracing::debug!(
                library = %report.library.path,
                registrations = report.registrations.len(),
                "herald node: loaded"
            ),
            Err(error) => {
                eprintln!("herald node: loading {}: {error}", library.display());
                return 1;
            }
        }
    }
    let code = match &args.main {
        None => 0,
        Some(main) => match call_main(runtime, main) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("herald node: --main {main}: {error:#}");
                1
            }
        },
    };
    // Registrations of libraries the program loaded itself (plain dlopen),
    // which nobody waited for: their failures fail the job.
    match runtime.settle_unawaited(true) {
        Ok(_) => code,
        Err(error) => {
            eprintln!("herald node: a registration from a library constructor failed: {error}");
            if code == 0 { 1 } else { code }
        }
    }
}

fn call_main(runtime: &Runtime, main: &str) -> anyhow::Result<i32> {
    let Some((library, symbol)) = main.rsplit_once(':') else {
        bail!("expected LIBRARY:SYMBOL");
    };
    // Through herald: the allowed-directory and dependency checks, loaded from
    // the descriptor it hashed, its constructors' registrations awaited. The
    // symbol comes from that loaded object, never from the path again.
    let report = runtime.load_library(library)?;
    let address = report.symbol(symbol)?;
    // SAFETY: `--main` documents the symbol as `int f(void)`; it lives in a
    // library herald never unloads.
    let function: unsafe extern "C" fn() -> c_int = unsafe { std::mem::transmute(address) };
    // SAFETY: a C function taking nothing, called on this (top-level) thread.
    Ok(unsafe { function() })
}

fn stats_line(stats: &RuntimeStats) -> String {
    let ready_ms = stats
        .last_invocation_done
        .map_or(0, |d| d.as_millis() as u64);
    format!(
        "herald-stats node={} nodes={} registrations={} invocations={} tasks={} launches={} \
         messages_sent={} bytes_sent={} messages_received={} bytes_received={} ready_ms={}",
        stats.node,
        stats.nodes,
        stats.registrations_requested,
        stats.invocations,
        stats.tasks_run,
        stats.launches,
        stats.messages_sent,
        stats.bytes_sent,
        stats.messages_received,
        stats.bytes_received,
        ready_ms
    )
}
