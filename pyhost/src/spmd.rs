//! The extension module's job: `import herald` in a stock `python3` joins the job
//! its launcher described in the environment, and every rank runs the script.
//!
//! The job ends when every rank's program has ended (`herald/_spmd.py` calls
//! this at interpreter exit, or from `herald.serve()`): each rank other than 0
//! tells rank 0 it has arrived, then serves until rank 0 ends the job; rank 0
//! waits until every other rank has arrived (or gone down), then ends it. A rank
//! whose program ended early thus keeps serving the ranks still running theirs.

use std::collections::BTreeSet;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};

use herald_host::JobEnd;
use pyo3::prelude::*;

use crate::executor;
use crate::job::{self, COORDINATOR_LINGER, Node};
use crate::module::{self, HeraldError};

/// This process's node, once `join_job` has run.
static NODE: OnceLock<Node> = OnceLock::new();

/// What rank 0 knows about the end of the other ranks' programs.
static ENDS: LazyLock<Ends> = LazyLock::new(Ends::default);

#[derive(Default)]
struct Ends {
    state: Mutex<EndState>,
    changed: Condvar,
}

#[derive(Default)]
struct EndState {
    /// Ranks whose program has ended (they serve until the job ends).
    arrived: BTreeSet<u32>,
    /// Ranks whose link went down.
    down: BTreeSet<u32>,
}

/// Records that `node`'s link is gone (from the mesh's events): rank 0 no longer
/// waits for it to arrive.
pub(crate) fn note_peer_down(node: u32) {
    let mut state = lock(&ENDS.state);
    state.down.insert(node);
    ENDS.changed.notify_all();
}

/// Joins the job described by the environment (a job of one without a
/// launcher) and registers, on every node, the task Python launches run.
/// Returns whether it joined (not in a child of a node's process, see
/// [`module::NODE_PID_ENV`], whose herald calls then fail saying so), and what
/// to leave in that variable for this process's children (None in a job of
/// one without a launcher: a child may have a job of its own). Does nothing
/// in herald-python, which joined before Python started.
#[pyfunction]
pub(crate) fn join_job(py: Python<'_>) -> PyResult<(bool, Option<String>)> {
    if module::runtime_if_started().is_some() {
        return Ok((true, None));
    }
    if let Some(parent) = module::parent_node() {
        module::stay_outside(parent);
        return Ok((false, None));
    }
    if module::embedded() {
        return Err(HeraldError::new_err(
            "herald-python joins its job itself: the runtime is not running yet",
        ));
    }
    crate::logging::init();
    let mut launched = false;
    let node = py
        .detach(|| -> anyhow::Result<Node> {
            let bootstrap = job::bootstrap()?;
            launched = bootstrap.is_some();
            let node = job::start_runtime(bootstrap, &[])?;
            let handle = node.runtime.register_task(module::python_call_variant())?;
            node.runtime.flush();
            handle.wait().map(drop).map_err(|error| {
                anyhow::anyhow!("cannot register the Python task on every node: {error}")
            })?;
            Ok(node)
        })
        .map_err(|error| HeraldError::new_err(format!("herald: {error:#}")))?;
    // Only one thread can get here first: Python's import lock serializes
    // `import herald`, which is the only caller.
    let launched = launched || node.runtime.num_nodes() > 1;
    let _ = NODE.set(node);
    Ok((true, launched.then(module::node_marker)))
}

/// On rank 0: rank `node`'s program has ended.
#[pyfunction]
pub(crate) fn arrive(node: u32) {
    let mut state = lock(&ENDS.state);
    state.arrived.insert(node);
    ENDS.changed.notify_all();
}

/// How a rank's part in the job ended, for the exit status of its process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The job ended (or this is rank 0, which ends it).
    Ended,
    /// The job declared this rank down: `herald node`'s status 88.
    Fenced,
    /// Rank 0 went down before ending the job, or the wait for its end failed:
    /// the job failed, so does this rank (as herald-python's ranks do).
    Lost,
}

/// This rank's end of the job (see the module docs); stops the runtime. Returns
/// what went wrong (None if nothing), for the caller to print, and how it
/// ended: `"ended"`, `"fenced"` (the job declared this rank down; it exits with
/// `herald node`'s status 88) or `"lost"` (rank 0 went down first; it fails).
#[pyfunction]
pub(crate) fn end_of_program(py: Python<'_>) -> (Option<String>, &'static str) {
    let Some(node) = NODE.get().filter(|_| !module::forked()) else {
        return (None, "ended");
    };
    let (problem, ending) = py.detach(|| {
        let runtime = &node.runtime;
        let mut ending = Ending::Ended;
        let problem = if runtime.node_id() == 0 {
            wait_for_every_rank(runtime.num_nodes());
            crate::logging::mute_runtime_logs();
            runtime
                .end_job()
                .err()
                .map(|error| format!("ending the job: {error}"))
        } else {
            let end = node.runtime.wait_for_verdict(node.fence_grace);
            if matches!(end, Ok(JobEnd::Ended { .. })) {
                // Leaving only once rank 0 closes its links: no node sees
                // another leave while its job still runs.
                let _ = node.coordinator_gone.recv_timeout(COORDINATOR_LINGER);
            }
            match end {
                Ok(JobEnd::Ended { .. } | JobEnd::Stopped) => None,
                Ok(JobEnd::Fenced { by, reason }) => {
                    ending = Ending::Fenced;
                    Some(format!(
                        "node {} was declared down by node {by} ({reason}); the job goes \
                         on without it, so this node stops",
                        runtime.node_id()
                    ))
                }
                Ok(JobEnd::CoordinatorLost { reason }) => {
                    ending = Ending::Lost;
                    Some(format!(
                        "node {} stops: rank 0 went down before ending the job ({reason})",
                        runtime.node_id()
                    ))
                }
                Err(error) => {
                    ending = Ending::Lost;
                    Some(format!("waiting for the end of the job: {error}"))
                }
            }
        };
        runtime.shutdown();
        executor::close_and_drain();
        (problem, ending)
    });
    let ending = match ending {
        Ending::Ended => "ended",
        Ending::Fenced => "fenced",
        Ending::Lost => "lost",
    };
    (problem, ending)
}

/// Blocks until every rank but 0 has arrived or gone down.
fn wait_for_every_rank(nodes: u32) {
    let mut state = lock(&ENDS.state);
    while (1..nodes).any(|node| !state.arrived.contains(&node) && !state.down.contains(&node)) {
        state = ENDS
            .changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
