//! `_herald`: the native half of the `herald` Python module (`herald._herald`),
//! built into herald-python or loaded as the wheel's extension module. It holds
//! no policy: it hands Python's requests to the runtime and
//! returns outcomes as plain values; `herald/*.py` decides what to wait for and
//! which exception to raise.
//!
//! Every call that can block (waiting for a registration or a task, loading a
//! library whose constructors register) detaches from the interpreter while it
//! waits, so other Python threads and the workers running Python code for other
//! nodes keep going.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_host::{
    CodeRef, HostError, RegistrationHandle, Runtime, TaskCode, TaskHandle, TaskVariant,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::executor::PYTHON_KIND;

/// Name of the task that runs a pickled Python call; every Python launch runs it.
pub const PYTHON_CALL_TASK: &str = "herald-python.call";
/// Payload of that task's variant (there is one kind of Python task).
const PYTHON_CALL_PAYLOAD: &[u8] = b"call";

create_exception!(
    herald,
    HeraldError,
    PyRuntimeError,
    "A herald call failed on this node: the runtime stopped, a wait would deadlock, \
     a library was refused, ..."
);
create_exception!(
    herald,
    TaskFailed,
    HeraldError,
    "A launched task produced no result; args are (message, node, kind) with kind \
     'failed', 'requirement' or 'unreachable'."
);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process that joined the job: a child forked from it (`os.fork`,
/// multiprocessing's fork workers) has a copy of [`RUNTIME`] but none of its
/// threads, and shares its links: it must not use them.
static NODE_PID: OnceLock<u32> = OnceLock::new();

/// Why this process stays out of the job, when a parent of it is the node.
static OUTSIDE: OnceLock<String> = OnceLock::new();

/// The environment variable in which a process that joined a job (the wheel's,
/// herald-python) leaves `PID:JOB` for its children, JOB a digest of the
/// variables that describe the job and its rank. A child that finds the same
/// job described (it inherited them) is not that node: it stays out of the job
/// (multiprocessing's spawn and forkserver workers import the main module
/// again, and with it herald). A launcher started in a node (`herald run`,
/// `mpirun`) describes a job of its own, which its ranks join.
pub const NODE_PID_ENV: &str = "HERALD_NODE_PID";

/// The variables that say which job a process belongs to, and as which rank.
const JOB_VARIABLES: &[&str] = &[
    "HERALD_RANK",
    "HERALD_SIZE",
    "HERALD_COORDINATOR",
    "HERALD_SECRET",
    "HERALD_SECRET_FILE",
    "HERALD_JOIN",
    "HERALD_CLUSTER",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_MCA_ess_base_jobid",
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "PMIX_NAMESPACE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
];

/// A digest of the job the environment describes (not a secret: the
/// variables are in the environment already).
fn job_digest() -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for name in JOB_VARIABLES {
        std::env::var_os(name).hash(&mut hasher);
    }
    hasher.finish()
}

/// What a node leaves in [`NODE_PID_ENV`] for its children.
pub fn node_marker() -> String {
    format!("{}:{:016x}", std::process::id(), job_digest())
}

/// Set by herald-python before Python starts: the runtime is the binary's to
/// start, and rank 0 alone runs the program.
static EMBEDDED: AtomicBool = AtomicBool::new(false);

/// Tells the module that it is built into herald-python (call before Python
/// starts), so `import herald` does not join a job by itself.
pub fn mark_embedded() {
    EMBEDDED.store(true, Ordering::Relaxed);
}

/// Whether this is herald-python (True) or the extension module in a stock
/// Python (False), where every rank runs the program.
#[pyfunction]
pub(crate) fn embedded() -> bool {
    EMBEDDED.load(Ordering::Relaxed)
}

/// Makes `runtime` the one the `herald` module talks to (once per process).
pub(crate) fn set_runtime(runtime: Runtime) {
    let _ = NODE_PID.set(std::process::id());
    if RUNTIME.set(runtime).is_err() {
        tracing::error!("herald-python: bug: the runtime was set twice");
    }
}

/// The pid of the node whose child this process is: [`NODE_PID_ENV`] names
/// another process, which joined the job that the environment describes.
pub(crate) fn parent_node() -> Option<u32> {
    let marker = std::env::var(NODE_PID_ENV).ok()?;
    let (pid, digest) = marker.trim().split_once(':')?;
    let pid = pid.parse::<u32>().ok()?;
    let same_job = u64::from_str_radix(digest, 16).ok()? == job_digest();
    (pid != std::process::id() && same_job).then_some(pid)
}

/// Keeps this process out of the job: it is a child of node process `parent`.
pub(crate) fn stay_outside(parent: u32) {
    let _ = OUTSIDE.set(format!(
        "this process (pid {}) is a child of process {parent}, which is the job's node: \
         herald works in that process only (the job's variables, HERALD_RANK and the \
         rest, are its own); start processes that need herald as ranks of their own",
        std::process::id()
    ));
}

/// Whether this process is a fork of the node's process, with a copy of its
/// runtime but none of its threads.
pub(crate) fn forked() -> bool {
    NODE_PID.get().is_some_and(|pid| *pid != std::process::id())
}

/// The task variant every Python launch runs, registered by rank 0 at start.
pub fn python_call_variant() -> TaskVariant {
    TaskVariant {
        name: PYTHON_CALL_TASK.to_owned(),
        code: TaskCode::Custom {
            kind: PYTHON_KIND.to_owned(),
            payload: PYTHON_CALL_PAYLOAD.to_vec(),
        },
    }
}

/// The runtime, once [`set_runtime`] has run.
pub fn runtime_if_started() -> Option<&'static Runtime> {
    RUNTIME.get()
}

fn runtime() -> PyResult<&'static Runtime> {
    if forked() {
        return Err(HeraldError::new_err(format!(
            "this process (pid {}) was forked from process {}, which is the job's node: \
             herald works in that process only",
            std::process::id(),
            NODE_PID.get().copied().unwrap_or_default()
        )));
    }
    match (RUNTIME.get(), OUTSIDE.get()) {
        (Some(runtime), _) => Ok(runtime),
        (None, Some(outside)) => Err(HeraldError::new_err(outside.clone())),
        (None, None) => Err(HeraldError::new_err(
            "the herald runtime of this process is not running",
        )),
    }
}

fn host_error(error: HostError) -> PyErr {
    match error {
        HostError::TimedOut { .. } => PyTimeoutError::new_err(error.to_string()),
        HostError::Task(task) => {
            let kind = match task.kind {
                herald_core::TaskErrorKind::Failed(_) => "failed",
                herald_core::TaskErrorKind::RequirementFailed { .. } => "requirement",
                herald_core::TaskErrorKind::Unreachable => "unreachable",
            };
            TaskFailed::new_err((task.kind.to_string(), task.node.0, kind))
        }
        other => HeraldError::new_err(other.to_string()),
    }
}

/// `timeout` seconds as a duration: None (and infinity) wait without limit, a
/// negative timeout does not wait; NaN is refused.
fn timeout_duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(seconds) if seconds.is_nan() => Err(PyValueError::new_err(
            "timeout must be a number of seconds, not nan",
        )),
        Some(seconds) if seconds == f64::INFINITY => Ok(None),
        Some(seconds) => Duration::try_from_secs_f64(seconds.max(0.0))
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("bad timeout: {seconds}"))),
    }
}

/// How long a wait runs without the GIL before it checks for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Waits for `wait(slice)` to give an outcome, without holding the GIL, for at
/// most `timeout` (None: without limit), in slices of [`SIGNAL_CHECK`]. Between
/// slices it runs Python's signal handlers, so Ctrl-C (KeyboardInterrupt) or an
/// alarm handler that raises ends the wait, as it ends any wait of Python's own.
fn wait_in_slices<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    wait: impl Fn(Duration) -> Result<T, HostError> + Sync,
) -> PyResult<Result<T, HostError>> {
    let timeout = timeout_duration(timeout)?;
    let started = Instant::now();
    let deadline = timeout.map(|timeout| started + timeout);
    loop {
        let slice = deadline.map_or(SIGNAL_CHECK, |deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK)
        });
        match py.detach(|| wait(slice)) {
            Err(HostError::TimedOut { .. })
                if deadline.is_none_or(|deadline| Instant::now() < deadline) =>
            {
                py.check_signals()?;
            }
            Err(HostError::TimedOut { .. }) => {
                return Ok(Err(HostError::TimedOut {
                    waited: started.elapsed(),
                }));
            }
            outcome => return Ok(outcome),
        }
    }
}

/// Per-node failures of a registration: `[(node, error text)]` and unreachable nodes.
type Failures = (Vec<(u32, String)>, Vec<u32>);

/// A global registration in progress.
#[pyclass(module = "herald", name = "RegistrationHandle", frozen)]
struct PyRegistration {
    handle: RegistrationHandle,
}

#[pymethods]
impl PyRegistration {
    /// Blocks (without holding the GIL) until the registration completed on every
    /// node. Returns None if it succeeded everywhere, else `(failures, unreachable)`.
    /// A signal handler that raises (Ctrl-C) ends the wait with its exception.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Failures>> {
        match wait_in_slices(py, timeout, |slice| self.handle.wait_timeout(slice))? {
            Ok(_) => Ok(None),
            Err(HostError::Registration { result, .. }) => {
                let failures = result
                    .failures
                    .into_iter()
                    .map(|failure| (failure.node.0, failure.error))
                    .collect();
                let unreachable = result.unreachable.into_iter().map(|node| node.0).collect();
                Ok(Some((failures, unreachable)))
            }
            Err(error) => Err(host_error(error)),
        }
    }

    /// Whether the outcome is in (so `wait` will not block).
    fn done(&self) -> bool {
        self.handle.try_result().is_some()
    }
}

/// A launched task in progress.
#[pyclass(module = "herald", name = "TaskHandle", frozen)]
struct PyTask {
    handle: TaskHandle,
}

#[pymethods]
impl PyTask {
    /// Blocks (without holding the GIL) until the task's result bytes are back;
    /// raises TaskFailed if there are none, TimeoutError after `timeout` seconds.
    /// A signal handler that raises (Ctrl-C) ends the wait with its exception.
    #[pyo3(signature = (timeout=None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        wait_in_slices(py, timeout, |slice| self.handle.wait_timeout(slice))?
            .map(|bytes| PyBytes::new(py, &bytes))
            .map_err(host_error)
    }

    /// Whether the result (or the failure) is in.
    fn done(&self) -> bool {
        self.handle.try_result().is_some()
    }
}

/// This node's id (its rank), from 0.
#[pyfunction]
fn node_id() -> PyResult<u32> {
    Ok(runtime()?.node_id())
}

/// Number of node ids in this node's current view of the job (nodes that joined
/// since the start included, nodes down too).
#[pyfunction]
fn num_nodes() -> PyResult<u32> {
    Ok(runtime()?.num_nodes())
}

/// Calls `callback(epoch, nodes, members)` on every later change of this node's
/// view (a node joined or went down), from a thread of its own: the event loop
/// never waits for Python.
#[pyfunction]
fn on_view_change(callback: Py<PyAny>) -> PyResult<()> {
    let runtime = runtime()?;
    let (views, received) = crossbeam_channel::unbounded::<herald_core::View>();
    std::thread::Builder::new()
        .name("herald-view-hooks".into())
        .spawn(move || {
            for view in received {
                Python::attach(|py| {
                    let args = (view.epoch, view.size, view.members());
                    if let Err(error) = callback.call1(py, args) {
                        error.print(py);
                    }
                });
            }
        })
        .map_err(|e| HeraldError::new_err(format!("cannot start the view hook thread: {e}")))?;
    runtime.on_view_change(std::sync::Arc::new(move |view| {
        let _ = views.send(view);
    }));
    Ok(())
}

/// Starts a global registration of Python code (`payload` for herald._remote,
/// `args` its bytes); `tag` replaces the digest of both as the key. Never blocks.
/// Nested in the current invocation when called from one.
#[pyfunction]
#[pyo3(signature = (payload, args, tag=None))]
fn register(payload: Vec<u8>, args: Vec<u8>, tag: Option<String>) -> PyResult<PyRegistration> {
    let code = CodeRef::Custom {
        kind: PYTHON_KIND.to_owned(),
        payload,
    };
    let handle = runtime()?.register_global(code, args, tag);
    Ok(PyRegistration { handle })
}

/// Launches task `task` on `node` with argument bytes `args`. Never blocks.
#[pyfunction]
fn launch(node: i64, task: String, args: Vec<u8>) -> PyResult<PyTask> {
    let runtime = runtime()?;
    let node = check_node(node, runtime.num_nodes())?;
    let handle = runtime.launch(node, task, args);
    Ok(PyTask { handle })
}

/// `node` as a node id of a job of `nodes`, or a ValueError naming the job's nodes.
fn check_node(node: i64, nodes: u32) -> PyResult<u32> {
    match u32::try_from(node) {
        Ok(id) if id < nodes => Ok(id),
        _ => Err(PyValueError::new_err(format!(
            "node {node} does not exist: {}",
            describe_nodes(nodes)
        ))),
    }
}

/// "the job has nodes 0..3" (inclusive), or "the job has node 0 only".
fn describe_nodes(nodes: u32) -> String {
    match nodes {
        0 | 1 => "the job has node 0 only".to_owned(),
        _ => format!("the job has nodes 0..{} (inclusive)", nodes - 1),
    }
}

/// Loads a native library here (its constructors may register globally) and
/// waits for those registrations, without holding the GIL. Returns
/// `(canonical path, sha256 hex, number of registrations its constructors made,
/// the loader's name for this very object)`.
#[pyfunction]
fn load_library(py: Python<'_>, path: PathBuf) -> PyResult<(String, String, usize, PathBuf)> {
    let runtime = runtime()?;
    let report = py
        .detach(|| runtime.load_library(&path))
        .map_err(host_error)?;
    let loader_path = report.loader_path().to_owned();
    Ok((
        report.library.path,
        report.library.digest.to_string(),
        report.registrations.len(),
        loader_path,
    ))
}

/// Waits (without holding the GIL) for the registrations that native library
/// constructors made on this thread (or on every thread) through the C ABI
/// while no herald call was around them — a library loaded with `ctypes`.
/// Returns how many it waited for; raises HeraldError naming the registration,
/// the nodes and why, if one failed.
#[pyfunction]
#[pyo3(signature = (all_threads=false))]
fn settle_native(py: Python<'_>, all_threads: bool) -> PyResult<usize> {
    let runtime = runtime()?;
    py.detach(|| runtime.settle_unawaited(all_threads))
        .map_err(host_error)
}

/// How many registrations [`settle_native`] would wait for.
#[pyfunction]
#[pyo3(signature = (all_threads=false))]
fn native_pending_count(all_threads: bool) -> PyResult<usize> {
    Ok(runtime()?.unawaited_count(all_threads))
}

/// This node's counters, as a dict.
#[pyfunction]
fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let stats = runtime()?.stats();
    let dict = PyDict::new(py);
    dict.set_item("node", stats.node)?;
    dict.set_item("nodes", stats.nodes)?;
    dict.set_item("registrations_requested", stats.registrations_requested)?;
    dict.set_item("registrations_completed", stats.registrations_completed)?;
    dict.set_item("invocations", stats.invocations)?;
    dict.set_item("invocations_failed", stats.invocations_failed)?;
    dict.set_item("tasks_run", stats.tasks_run)?;
    dict.set_item("launches", stats.launches)?;
    dict.set_item("messages_sent", stats.messages_sent)?;
    dict.set_item("messages_received", stats.messages_received)?;
    dict.set_item("frames_sent", stats.frames_sent)?;
    dict.set_item("bytes_sent", stats.bytes_sent)?;
    dict.set_item("workers", stats.workers)?;
    Ok(dict)
}

/// The `_herald` module.
#[pymodule]
pub mod _herald {
    #[pymodule_export]
    use super::{
        HeraldError, PyRegistration, PyTask, TaskFailed, embedded, launch, load_library,
        native_pending_count, node_id, num_nodes, on_view_change, register, settle_native, stats,
    };

    #[pymodule_export]
    use crate::spmd::{arrive, end_of_program, join_job};

    #[pymodule_export]
    use crate::claims::{ImportClaim, claim_import};

    #[pymodule_export]
    const PYTHON_CALL_TASK: &str = super::PYTHON_CALL_TASK;

    #[pymodule_export]
    const NODE_PID_ENV: &str = super::NODE_PID_ENV;
}
