//! Joining the job: the bootstrap from the environment (the same as `herald
//! node`'s), the runtime with the Python executor in place, and the ends of a job
//! that both herald-python and the extension module need.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Receiver;
use herald_host::{HostConfig, Runtime, TransportChoice, TransportKind};
use herald_tcp::{Bootstrap, BootstrapError, Mesh, bootstrap_from_env};

use crate::executor::{PYTHON_KIND, PythonExecutor};
use crate::{module, spmd};

/// Longest a node waits, after the end of the job, for rank 0 to close its links.
pub const COORDINATOR_LINGER: Duration = Duration::from_secs(10);

/// Where this process stands: in a job a launcher described in the environment,
/// or alone (a job of one node).
pub fn bootstrap() -> anyhow::Result<Option<Bootstrap>> {
    let env = |name: &str| std::env::var(name).ok();
    let booted = match joining() {
        Some(address) => herald_host::join_bootstrap(&address, &env),
        None => bootstrap_from_env(&env),
    };
    match booted {
        Ok(bootstrap) => Ok(Some(bootstrap)),
        Err(BootstrapError::NoRank) => Ok(None),
        Err(error) => Err(error).context("cannot tell which job this process belongs to"),
    }
}

/// Joins the job (or starts a job of one), with the Python executor in place
/// before any frame from another node is handled, and makes the runtime the one
/// the `herald` module and the C ABI use.
pub fn start_runtime(
    bootstrap: Option<Bootstrap>,
    library_paths: &[PathBuf],
) -> anyhow::Result<Node> {
    let mut config = host_config(library_paths)?;
    let executor = Arc::new(PythonExecutor);
    let (coordinator_gone_tx, coordinator_gone) = crossbeam_channel::bounded(1);
    // HERALD_TRANSPORT, or MPI under an MPI launcher in a build with MPI support.
    let transport = TransportChoice::from_env()?.resolve()?;
    let mut fence_grace = Duration::ZERO;
    let runtime = match bootstrap {
        _ if transport == TransportKind::Mpi => start_mpi(config, executor, coordinator_gone_tx)?,
        None => {
            let runtime = Runtime::single_process(config)?;
            runtime.register_executor(PYTHON_KIND, executor);
            make_current(&runtime);
            runtime
        }
        Some(bootstrap) => {
            let mut mesh_config = bootstrap.mesh_config()?;
            // Every rank checks, link by link, that the others use the same
            // protocol version, fan-out and frame limit.
            config.agree_on(&mut mesh_config);
            fence_grace = mesh_config.peer_timeout;
            let join = joining();
            let (mesh, mesh_events) = match &join {
                Some(address) => Mesh::join(mesh_config)
                    .with_context(|| format!("cannot join the running job through {address}"))?,
                None => Mesh::establish(mesh_config).context("cannot join the job")?,
            };
            // Another node may send Python work as soon as the mesh is up, before
            // the executor is registered here; its frames wait in the mesh's
            // channel until then, instead of failing with "no executor".
            config.hold_events = true;
            let events = mesh_events;
            let runtime = match join {
                // The executor is in place before the log's Python registrations
                // are replayed.
                Some(_) => {
                    let executors: Vec<(String, Arc<dyn herald_host::Executor>)> =
                        vec![(PYTHON_KIND.to_owned(), executor)];
                    Runtime::start_joining(mesh, events, config, executors)?
                }
                None => {
                    let runtime = Runtime::start(mesh, events, config)?;
                    runtime.register_executor(PYTHON_KIND, executor);
                    runtime
                }
            };
            // Before any work arrives: a library loaded for another node calls the
            // C ABI from its constructor, which needs the runtime installed.
            make_current(&runtime);
            watch_ends(&runtime, coordinator_gone_tx);
            runtime.open_events();
            runtime
        }
    };
    // A joiner replays the job's log before the program goes on.
    runtime.wait_admitted()?;
    Ok(Node {
        runtime,
        coordinator_gone,
        fence_grace,
    })
}

/// Joins the job over MPI (herald-mpi; a duplicate of MPI_COMM_WORLD, MPI
/// initialised by herald unless mpi4py or the program did it first).
#[cfg(feature = "mpi")]
fn start_mpi(
    config: HostConfig,
    executor: Arc<PythonExecutor>,
    coordinator_gone: crossbeam_channel::Sender<()>,
) -> anyhow::Result<Runtime> {
    let links = herald_host::MpiLinks::join(&config)?;
    let runtime = Runtime::start_with_transport(
        links.transport,
        links.events,
        links.node,
        links.nodes,
        config,
    )?;
    runtime.register_executor(PYTHON_KIND, executor);
    make_current(&runtime);
    watch_ends(&runtime, coordinator_gone);
    // Frames wait in MPI until the executor and the runtime are in place.
    links.opener.open();
    tracing::info!(
        "herald: rank {} of {}, over MPI ({} MPI)",
        links.node,
        links.nodes,
        if links.initialised_mpi {
            "herald initialised"
        } else {
            "the program initialised"
        }
    );
    Ok(runtime)
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(
    _config: HostConfig,
    _executor: Arc<PythonExecutor>,
    _coordinator_gone: crossbeam_channel::Sender<()>,
) -> anyhow::Result<Runtime> {
    // `resolve` never chooses MPI in a build without it.
    anyhow::bail!("this herald was built without MPI support")
}

/// Notes nodes that go down in the job's view (rank 0 stops waiting for them at
/// the end of the program) and signals when node 0 is gone (also when it closes
/// its links after the end of the job).
fn watch_ends(runtime: &Runtime, coordinator_gone: crossbeam_channel::Sender<()>) {
    runtime.on_node_down(Arc::new(move |node| {
        spmd::note_peer_down(node);
        if node == 0 {
            let _ = coordinator_gone.try_send(());
        }
    }));
}

/// Rank 0's address when this process joins a running job (`HERALD_JOIN`).
fn joining() -> Option<String> {
    std::env::var(herald_host::JOIN_ENV)
        .ok()
        .filter(|address| !address.trim().is_empty())
}

/// The runtime's settings: the allowed library directories are the defaults
/// (`HERALD_LIBRARY_PATH`, the working directory and the executable's when safe),
/// Python's site-packages and the active virtualenv's (their Python code is
/// trusted already, so their native libraries are too, unless anyone may write
/// there), and every `--library-path`.
fn host_config(library_paths: &[PathBuf]) -> anyhow::Result<HostConfig> {
    let mut config = HostConfig::default();
    for dir in site_library_dirs()? {
        match herald_host::implicit_dir_problem(&dir) {
            None => config.library_dirs.push(dir),
            Some(problem) => tracing::debug!(
                dir = %dir.display(),
                problem,
                "herald-python: site directory not allowed implicitly"
            ),
        }
    }
    config.library_dirs.extend(library_paths.iter().cloned());
    Ok(config)
}

/// The directories whose native libraries Python trusts already (its
/// site-packages and the active virtualenv's), from `herald._main.library_dirs`.
fn site_library_dirs() -> anyhow::Result<Vec<PathBuf>> {
    use pyo3::types::PyAnyMethods;
    pyo3::Python::attach(|py| {
        py.import("herald._main")
            .and_then(|main| main.call_method0("library_dirs"))
            .and_then(|dirs| dirs.extract::<Vec<PathBuf>>())
            .map_err(|error| anyhow::anyhow!("finding Python's site-packages: {error}"))
    })
}

/// Makes `runtime` the one the C ABI and the `herald` module use.
fn make_current(runtime: &Runtime) {
    herald_host::install_global(runtime);
    module::set_runtime(runtime.clone());
}

/// This process's node of the job.
pub struct Node {
    /// Its runtime.
    pub runtime: Runtime,
    /// Signalled when rank 0's link goes down (never, in a job of one).
    pub coordinator_gone: Receiver<()>,
    /// How long a node that lost rank 0 waits to hear whether the job declared
    /// it down instead (the peer timeout over TCP; zero over MPI).
    pub fence_grace: Duration,
}

/// Whether this node knows that the job is over.
pub fn job_over(runtime: &Runtime) -> bool {
    runtime.wait_for_job_end(Some(Duration::ZERO)).is_ok()
}
