//! `herald node`: a generic node of a job. After the mesh forms, rank 0 loads each
//! `--load` library (their constructors register what they need globally), runs
//! the `--main` function, and ends the job; every other rank serves until then.

use std::ffi::c_int;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_host::{
    HostConfig, HostError, JobEnd, Runtime, RuntimeStats, TransportChoice, TransportKind,
};
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
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub coordinator: Option<SocketAddr>,
    /// Join a running job through its rank 0, listening at HOST:PORT (default:
    /// HERALD_JOIN): this process gets a fresh rank, replays every registration
    /// the job made, in order, then serves like any rank other than 0. It exits
    /// non-zero, naming the registration, if one fails here.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["rank", "size", "coordinator"])]
    pub join: Option<String>,
    /// Address this rank listens on (default: HERALD_BIND, else loopback). Over
    /// TCP only.
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
    /// Seconds to wait for every rank to join (with --join: to be admitted into
    /// the running job). Over TCP only.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub establish_timeout: u64,
    /// Idle time after which a link sends a heartbeat, in milliseconds
    /// (default: HERALD_HEARTBEAT_MS, else 1000; 0 = none, which turns silence
    /// detection off too; a non-zero peer timeout with it is refused).
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a peer is declared down, in milliseconds (default:
    /// HERALD_PEER_TIMEOUT_MS, else 10000; 0 = never, e.g. under a debugger).
    /// Registrations and launches waiting half as long are logged, naming what they wait for.
    #[arg(long, value_name = "MS")]
    pub peer_timeout_ms: Option<u64>,
    /// Children per node in the dissemination tree; every rank must use the same.
    #[arg(long, value_name = "K", default_value_t = herald_core::DEFAULT_FANOUT)]
    pub fanout: u32,
    /// Largest frame sent or accepted, in bytes; every rank must use the same.
    #[arg(long, value_name = "BYTES", default_value_t = herald_core::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Print this node's counters as one `herald-stats` line at exit.
    #[arg(long)]
    pub stats: bool,
    /// herald's links: the job's own MPI (a duplicated communicator; no secret,
    /// no port), herald's TCP mesh, or auto (default: HERALD_TRANSPORT, else
    /// auto): MPI under an MPI launcher when this herald was built with MPI
    /// support, TCP otherwise.
    #[arg(long, value_name = "mpi|tcp|auto")]
    pub transport: Option<TransportChoice>,
}

/// Runs one node until the job ends.
pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    herald_host::keep_c_abi();
    let choice = match args.transport {
        Some(choice) => choice,
        None => TransportChoice::from_env()?,
    };
    // Flags that describe a TCP job (or a join through rank 0) choose TCP under
    // auto, and cannot go with MPI, whose ranks and size are the world's.
    let tcp_flag = if args.join.is_some() {
        Some("--join")
    } else if args.rank.is_some() {
        Some("--rank/--size")
    } else if args.coordinator.is_some() {
        Some("--coordinator")
    } else {
        None
    };
    let kind = match (choice, tcp_flag) {
        (TransportChoice::Auto, Some(_)) => TransportKind::Tcp,
        (TransportChoice::Mpi, Some(flag)) => bail!(
            "{flag} describes a job over herald's TCP links, but the transport is MPI (whose \
             ranks are MPI_COMM_WORLD's): drop {flag}, or use --transport tcp"
        ),
        _ => choice.resolve()?,
    };
    let started = match kind {
        TransportKind::Tcp => start_tcp(&args)?,
        TransportKind::Mpi => start_mpi(&args)?,
    };
    let Some((runtime, rank, size, coordinator_gone, fence_grace)) = started else {
        // A joiner that was not admitted (it said why).
        return Ok(ExitCode::from(1));
    };
    tracing::debug!("herald node: rank {rank} of {size} serving");
    serve(runtime, &args, rank, coordinator_gone, fence_grace)
}

/// Joins the job over herald's TCP mesh (or a running job, with --join or
/// HERALD_JOIN), starts the runtime and installs it for the C ABI. `None`: a
/// joiner that was not admitted.
fn start_tcp(args: &NodeArgs) -> anyhow::Result<Option<Started>> {
    let join = args.join.clone().or_else(|| {
        std::env::var(herald_host::JOIN_ENV)
            .ok()
            .filter(|address| !address.trim().is_empty())
    });
    let mut boot = match &join {
        Some(address) => herald_host::join_bootstrap(address, &|name| std::env::var(name).ok())
            .context("herald node --join: incomplete bootstrap")?,
        None => bootstrap(args)?,
    };
    // The flags override the environment, before the bootstrap derives what
    // follows from both (no heartbeats and no timeout: no silence detection).
    if let Some(ms) = args.heartbeat_ms {
        boot.heartbeat = Some(Duration::from_millis(ms));
    }
    if let Some(ms) = args.peer_timeout_ms {
        boot.peer_timeout = Some(Duration::from_millis(ms));
    }
    let mut mesh_config = boot
        .mesh_config()
        .context("herald node: incomplete bootstrap")?;
    if let Some(bind) = args.bind {
        mesh_config.bind = bind;
    }
    mesh_config.establish_timeout = Duration::from_secs(args.establish_timeout.max(1));
    let mut config = host_config(args);
    if !mesh_config.peer_timeout.is_zero() {
        // Half the timeout: the warning names what a registration waits for before
        // a silent peer is declared down.
        config.slow_warning = mesh_config.peer_timeout / 2;
    }
    config.agree_on(&mut mesh_config);
    let fence_grace = mesh_config.peer_timeout;
    let (mesh, mesh_events) = match &join {
        Some(address) => Mesh::join(mesh_config)
            .with_context(|| format!("herald node: cannot join the job through {address}"))?,
        None => Mesh::establish(mesh_config).with_context(|| {
            format!("rank {} of {}: the job did not form", boot.rank, boot.size)
        })?,
    };
    let (rank, size) = (mesh.rank(), mesh.size());
    // Frames wait until the runtime is installed for the C ABI: a library loaded
    // for another node (or replayed by a joiner) calls it from its constructor.
    config.hold_events = true;
    let runtime = match join {
        Some(_) => Runtime::start_joining(mesh, mesh_events, config, Vec::new()),
        None => Runtime::start(mesh, mesh_events, config),
    }
    .context("starting the runtime")?;
    herald_host::install_global(&runtime);
    let coordinator_gone = watch_coordinator(&runtime);
    runtime.open_events();
    // A joiner replays the job's registrations (its libraries' constructors call
    // the C ABI, installed just above) before it serves.
    if let Err(error) = runtime.wait_admitted() {
        herald_host::uninstall_global();
        if let HostError::Fenced { by, reason } = &error {
            // Declared down while replaying: stop as any rank the job declared
            // down does, so `herald run` lets the rest of the job go on.
            eprintln!("{}", fenced_message(rank, *by, reason));
            runtime.shutdown();
            std::process::exit(i32::from(FENCED_EXIT));
        }
        eprintln!("herald node: {error}");
        return Ok(None);
    }
    if join.is_some() {
        // The job's ranks may run a program that ends with herald_finalize (or
        // a Python script); rank 0 then waits for every rank's, and this one
        // has none: it serves until the job ends.
        runtime.arrive_serving();
    }
    tracing::info!(
        "herald node: rank {rank} of {size}, bootstrap from {:?}",
        boot.source
    );
    Ok(Some((runtime, rank, size, coordinator_gone, fence_grace)))
}

/// A started runtime, its rank and job size, what signals rank 0's leaving, and
/// how long a rank that lost rank 0 waits to hear whether the job declared it
/// down instead (the peer timeout over TCP).
type Started = (Runtime, u32, u32, crossbeam_channel::Receiver<()>, Duration);

/// The runtime's settings from the flags.
fn host_config(args: &NodeArgs) -> HostConfig {
    let mut config = HostConfig {
        fanout: args.fanout,
        max_frame_bytes: args.max_frame_bytes,
        ..HostConfig::default()
    };
    config
        .library_dirs
        .extend(args.library_path.iter().cloned());
    config
}

/// Joins the job over the job's own MPI, starts the runtime and installs it for
/// the C ABI: rank and size
/// are the world's; no secret, coordinator or port. Silence detection is MPI's
/// (Open MPI ends the job when a rank dies), so --heartbeat-ms and
/// --peer-timeout-ms do not apply.
#[cfg(feature = "mpi")]
fn start_mpi(args: &NodeArgs) -> anyhow::Result<Option<Started>> {
    let config = host_config(args);
    let links = herald_host::MpiLinks::join(&config)?;
    let (rank, size) = (links.node, links.nodes);
    let runtime = Runtime::start_with_transport(links.transport, links.events, rank, size, config)
        .context("starting the runtime")?;
    // Frames start flowing once the runtime is installed for the C ABI (a
    // library loaded for another node calls it from its constructor).
    herald_host::install_global(&runtime);
    let coordinator_gone = watch_coordinator(&runtime);
    links.opener.open();
    tracing::info!(
        "herald node: rank {rank} of {size}, over MPI ({} MPI)",
        if links.initialised_mpi {
            "herald initialised"
        } else {
            "the program initialised"
        }
    );
    Ok(Some((
        runtime,
        rank,
        size,
        coordinator_gone,
        Duration::ZERO,
    )))
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(_args: &NodeArgs) -> anyhow::Result<Option<Started>> {
    // `resolve` refuses MPI in a build without it, saying how to get it.
    bail!("this herald was built without MPI support")
}

/// Runs the job's code (rank 0) or serves (the others) until the job ends.
fn serve(
    runtime: Runtime,
    args: &NodeArgs,
    rank: u32,
    coordinator_gone: crossbeam_channel::Receiver<()>,
    fence_grace: Duration,
) -> anyhow::Result<ExitCode> {
    let code = if rank == 0 {
        exit_when_fenced(&runtime, rank);
        let code = run_top_level(&runtime, args);
        if let Ok(JobEnd::Fenced { by, reason }) = runtime.wait_for_job_end(Some(Duration::ZERO)) {
            // The watch thread is about to say so too; one message is enough.
            eprintln!("{}", fenced_message(rank, by, &reason));
            std::process::exit(i32::from(FENCED_EXIT));
        }
        if let Err(error) = runtime.end_job() {
            eprintln!("herald node: ending the job: {error}");
        }
        code
    } else {
        // At one end of a broken link to rank 0, this rank declares rank 0 down
        // while rank 0 may declare it down: the job's verdict comes from the other
        // ranks a moment later. A rank the job declared down exits with
        // FENCED_EXIT, which lets `herald run` keep the rest of the job going.
        match runtime.wait_for_verdict(fence_grace) {
            Ok(JobEnd::Ended { .. }) => {
                // Rank 0 closes its links once every rank has acknowledged the end;
                // leaving only then means no rank sees another leave while it has
                // not heard of the end yet (and tells the job it lost a node).
                let _ = coordinator_gone.recv_timeout(COORDINATOR_LINGER);
                0
            }
            Ok(JobEnd::CoordinatorLost { reason }) => {
                eprintln!("herald node: rank 0 went down before ending the job: {reason}");
                1
            }
            Ok(JobEnd::Fenced { by, reason }) => {
                eprintln!("{}", fenced_message(rank, by, &reason));
                runtime.shutdown();
                return Ok(ExitCode::from(FENCED_EXIT));
            }
            Ok(JobEnd::Stopped) | Err(_) => 1,
        }
    };
    if args.stats {
        println!("{}", stats_line(&runtime.stats()));
    }
    herald_host::uninstall_global();
    runtime.shutdown();
    Ok(ExitCode::from(exit_status(code)))
}

/// The exit status for `--main`'s return value: the value itself from 0 to 255;
/// any other value, such as -1, is a failure too, and gives 255 (as `exit(-1)`
/// does in C), never 0.
fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(u8::MAX)
}

/// Longest a rank waits, after the end of the job, for rank 0 to close its links.
const COORDINATOR_LINGER: Duration = Duration::from_secs(10);

/// Signals once node 0 is gone: down in the job's view, or its links closed
/// after the end of the job (which a node other than 0 waits for before leaving).
fn watch_coordinator(runtime: &Runtime) -> crossbeam_channel::Receiver<()> {
    let (gone_tx, gone) = crossbeam_channel::bounded(1);
    runtime.on_node_down(std::sync::Arc::new(move |node| {
        if node == 0 {
            let _ = gone_tx.try_send(());
        }
    }));
    gone
}

/// Exit code of a rank that another node declared down (`herald run` lets the
/// other ranks go on when a rank exits with it).
pub const FENCED_EXIT: u8 = 88;

/// What a rank says when it ends because another node declared it down.
fn fenced_message(rank: u32, by: u32, reason: &str) -> String {
    format!(
        "herald node: rank {rank} was declared down by node {by} ({reason}); the job goes on \
         without it, so this rank stops. If it was only slow, raise --peer-timeout-ms \
         (HERALD_PEER_TIMEOUT_MS) on every rank"
    )
}

/// Rank 0 runs the job's code on its main thread, which may be busy for long: a
/// thread of its own ends the process as soon as another node declares it down.
fn exit_when_fenced(runtime: &Runtime, rank: u32) {
    let runtime = runtime.clone();
    let spawned = std::thread::Builder::new()
        .name("herald-fence-watch".into())
        .spawn(move || {
            if let Ok(JobEnd::Fenced { by, reason }) = runtime.wait_for_job_end(None) {
                eprintln!("{}", fenced_message(rank, by, &reason));
                std::process::exit(i32::from(FENCED_EXIT));
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "herald node: cannot watch for being declared down");
    }
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
    bootstrap_from_env(&lookup)
        .context("herald node: cannot find this job's settings (rank, size, coordinator, secret)")
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

/// `--coordinator HOST:PORT`: an address, or a host name resolved as
/// `HERALD_COORDINATOR` is (its first address), so `$(hostname):7700` works
/// on the command line as in the environment.
fn parse_host_port(value: &str) -> Result<SocketAddr, String> {
    herald_tcp::resolve_host_port(value)
        .map_err(|reason| format!("{reason}; use HOST:PORT, e.g. 127.0.0.1:7000"))
}
