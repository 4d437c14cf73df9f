//! This rank's part in a herald-python job: rank 0 runs the program and then
//! ends the job; every other rank serves until it ends.

use herald_host::{JobEnd, Runtime};
use herald_python::job::{COORDINATOR_LINGER, Node};
use herald_python::module;

use crate::interpreter;

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
    herald_python::logging::mute_runtime_logs();
    if let Err(error) = runtime.end_job() {
        eprintln!("herald-python: ending the job: {error}");
    }
    runtime.shutdown();
    status
}

/// The status of a rank the job declared down, as `herald node` exits with it:
/// `herald run` lets the rest of the job go on when a rank ends with it.
const FENCED_EXIT: u8 = 88;

/// Every other rank: serves registrations and tasks until the job ends.
/// Returns the exit status.
pub(crate) fn serve(node: &Node) -> u8 {
    let runtime = &node.runtime;
    let end = node.runtime.wait_for_verdict(node.fence_grace);
    interpreter::finish();
    if matches!(end, Ok(JobEnd::Ended { .. })) {
        // Rank 0 closes its links once every node has acknowledged the end; leaving
        // only then means no node sees another leave while its job still runs.
        let _ = node.coordinator_gone.recv_timeout(COORDINATOR_LINGER);
    }
    runtime.shutdown();
    match end {
        Ok(JobEnd::Ended { .. } | JobEnd::Stopped) => 0,
        Ok(JobEnd::Fenced { by, reason }) => {
            eprintln!(
                "herald-python: node {} was declared down by node {by} ({reason}); the job goes \
                 on without it, so this node stops",
                runtime.node_id()
            );
            FENCED_EXIT
        }
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
