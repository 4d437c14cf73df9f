//! Joining the job and playing this rank's part in it: rank 0 runs the program
//! and then ends the job; every other rank serves until it ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Receiver;
use herald_host::{HostConfig, JobEnd, Runtime};
use herald_tcp::{Bootstrap, BootstrapError, Mesh, MeshEvent, bootstrap_from_env};

use crate::executor::{PYTHON_KIND, PythonExecutor};
use crate::{interpreter, module};

/// Longest a node waits, after the end of the job, for rank 0 to close its links.
const COORDINATOR_LINGER: Duration = Duration::from_secs(10);

/// Where this process stands: in a job a launcher described in the environment,
/// or alone (a job of one node).
pub(crate) fn bootstrap() -> anyhow::Result<Option<Bootstrap>> {
    match bootstrap_from_env(&|name| std::env::var(name).ok()) {
        Ok(bootstrap) => Ok(Some(bootstrap)),
        Err(BootstrapError::NoRank) => Ok(None),
        Err(error) => Err(error).context("cannot tell which job this process belongs to"),
    }
}

/// Joins the job (or starts a job of one), with the Python executor in place
/// before any frame from another node is handled, and makes the runtime the one
/// the `herald` module and the C ABI use.
pub(crate) fn start_runtime(
    bootstrap: Option<Bootstrap>,
    library_paths: &[PathBuf],
) -> anyhow::Result<Node> {
    let config = host_config(library_paths)?;
    let executor = Arc::new(PythonExecutor);
    let (coordinator_gone_tx, coordinator_gone) = crossbeam_channel::bounded(1);
    let runtime = match bootstrap {
        None => {
            let runtime = Runtime::single_process(config)?;
            runtime.register_executor(PYTHON_KIND, executor);
            make_current(&runtime);
            runtime
        }
        Some(bootstrap) => {
            let mesh_config = bootstrap.mesh_config()?;
            let (mesh, mesh_events) =
                Mesh::establish(mesh_config).context("cannot join the job")?;
            // Another node may send Python work as soon as the mesh is up, before
            // the executor is registered here; its frames wait in this channel
            // until then, instead of failing with "no executor".
            let (gate, events) = crossbeam_channel::unbounded();
            let runtime = Runtime::start(mesh, events, config)?;
            runtime.register_executor(PYTHON_KIND, executor);
            // Before any work arrives: a library loaded for another node calls the
            // C ABI from its constructor, which needs the runtime installed.
            make_current(&runtime);
            std::thread::Builder::new()
                .name("herald-python-events".into())
                .spawn(move || {
                    for event in mesh_events {
                        if matches!(event, MeshEvent::PeerDown { node: 0, .. }) {
                            let _ = coordinator_gone_tx.try_send(());
                        }
                        if gate.send(event).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start the event forwarding thread")?;
            runtime
        }
    };
    Ok(Node {
        runtime,
        coordinator_gone,
    })
}

/// The runtime's settings: the allowed library directories are the defaults
/// (`HERALD_LIBRARY_PATH`, the working directory and the executable's when safe),
/// Python's site-packages and the active virtualenv's (their Python code is
/// trusted already, so their native libraries are too, unless anyone may write
/// there), and every `--library-path`.
fn host_config(library_paths: &[PathBuf]) -> anyhow::Result<HostConfig> {
    let mut config = HostConfig::default();
    for dir in interpreter::library_dirs()? {
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

/// Makes `runtime` the one the C ABI and the `herald` module use.
fn make_current(runtime: &Runtime) {
    herald_host::install_global(runtime);
    module::set_runtime(runtime.clone());
}

/// This process's node of the job.
pub(crate) struct Node {
    /// Its runtime.
    pub(crate) runtime: Runtime,
    /// Signalled when rank 0's link goes down (never, in a job of one).
    coordinator_gone: Receiver<()>,
}

/// Whether this node knows that the job is over.
pub(crate) fn job_over(runtime: &Runtime) -> bool {
    runtime.wait_for_job_end(Some(Duration::ZERO)).is_ok()
}

/// Rank 0: registers the task Python launches run on every node, runs the
/// program, ends the job. Returns the exit status.
pub(crate) fn coordinate(runtime: &Runtime) -> u8 {
    let ready = runtime
        .register_task(module::python_call_variant())
        .and_then(|handle| handle.wait());
    let status = match ready {
        Ok(_) => interpreter::run_main(),
        Err(error) => {
            eprintln!("herald-python: cannot register the Python task on every node: {error}");
            1
        }
    };
    crate::mute_runtime_logs();
    if let Err(error) = runtime.end_job() {
        eprintln!("herald-python: ending the job: {error}");
    }
    runtime.shutdown();
    status
}

/// Every other rank: serves registrations and tasks until the job ends.
/// Returns the exit status.
pub(crate) fn serve(node: &Node) -> u8 {
    let runtime = &node.runtime;
    let end = runtime.wait_for_job_end(None);
    interpreter::finish();
    if matches!(end, Ok(JobEnd::Ended { .. })) {
        // Rank 0 closes its links once every node has acknowledged the end; leaving
        // only then means no node sees another leave while its job still runs.
        let _ = node.coordinator_gone.recv_timeout(COORDINATOR_LINGER);
    }
    runtime.shutdown();
    match end {
        Ok(JobEnd::Ended { .. } | JobEnd::Stopped) => 0,
        Ok(JobEnd::CoordinatorLost { reason }) => {
            eprintln!(
                "herald-python: node {} stops: rank 0, which runs the program, is gone ({reason})",
                runtime.node_id()
            );
            1
        }
        Err(error) => {
            eprintln!("herald-python: waiting for the end of the job: {error}");
            1
        }
    }
}
