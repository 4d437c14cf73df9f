//! The executor that runs Python code for the host: global registrations of
//! kind `python` (imports and callables) and the task every Python launch runs.
//!
//! Both run on host worker threads with the invocation set, so the Python code
//! they call (a module being imported, a registered callable) registers nested.
//! The thread attaches to the interpreter only for the call; what it runs is in
//! `herald/_remote.py`, which also turns Python exceptions into the error text
//! (with traceback) that the requesting node reports.

use std::sync::{Condvar, LazyLock, Mutex, PoisonError};

use herald_host::Executor;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::claims;

/// The Python calls that workers are making, and whether new ones may start.
static CALLS: LazyLock<Calls> = LazyLock::new(Calls::default);

#[derive(Default)]
struct Calls {
    state: Mutex<CallState>,
    finished: Condvar,
}

#[derive(Default)]
struct CallState {
    running: usize,
    closed: bool,
}

/// Refuses Python calls from now on and waits until the running ones have
/// returned and let go of the interpreter: a stock Python finalizes itself when
/// its program ends, and a worker still attached then would crash the process.
/// Call without holding the GIL, once the job has ended.
pub(crate) fn close_and_drain() {
    let mut state = CALLS.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.closed = true;
    while state.running > 0 {
        state = CALLS
            .finished
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// The code kind of Python registrations and tasks.
pub(crate) const PYTHON_KIND: &str = "python";

/// How the payload of an `import_global` registration starts (then the module name).
const IMPORT_PREFIX: &[u8] = b"import:";

/// Runs `python` code references in the embedded interpreter.
pub(crate) struct PythonExecutor;

impl Executor for PythonExecutor {
    fn invoke(&self, payload: &[u8], args: &[u8]) -> Result<(), String> {
        let claimed = payload
            .strip_prefix(IMPORT_PREFIX)
            .and_then(|name| std::str::from_utf8(name).ok())
            .and_then(|name| claims::wait_for_claimed(name, args));
        if let Some(outcome) = claimed {
            return outcome;
        }
        let failure = attached(|py| {
            let args = (PyBytes::new(py, payload), PyBytes::new(py, args));
            remote(py)?
                .call_method1("invoke", args)?
                .extract::<Option<String>>()
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn run_task(&self, payload: &[u8], args: &[u8]) -> Result<Vec<u8>, String> {
        attached(|py| {
            let args = (PyBytes::new(py, payload), PyBytes::new(py, args));
            let result = remote(py)?.call_method1("run_task", args)?;
            Ok(result.cast_into::<PyBytes>()?.as_bytes().to_vec())
        })
    }
}

fn remote(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("herald._remote")
}

/// Runs `call` attached to the interpreter; a Python error that escapes
/// `herald._remote` (a bug there, or a broken interpreter) becomes its text.
fn attached<T>(call: impl for<'py> FnOnce(Python<'py>) -> PyResult<T>) -> Result<T, String> {
    const SHUTTING_DOWN: &str = "the Python interpreter of this node is shutting down";
    admitted(|| {
        Python::try_attach(|py| {
            keep_thread_state();
            call(py).map_err(|error| error.to_string())
        })
    })
    .flatten()
    .unwrap_or_else(|| Err(SHUTTING_DOWN.to_owned()))
}

/// Runs `call` as one of the Python calls [`close_and_drain`] waits for, or
/// returns None if Python calls are refused already.
fn admitted<T>(call: impl FnOnce() -> T) -> Option<T> {
    {
        let mut state = CALLS.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return None;
        }
        state.running += 1;
    }
    let outcome = call();
    let mut state = CALLS.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.running -= 1;
    CALLS.finished.notify_all();
    Some(outcome)
}

thread_local! {
    /// Whether this worker thread keeps its Python thread state between calls.
    static KEPT_THREAD_STATE: std::cell::OnceCell<KeptThreadState> =
        const { std::cell::OnceCell::new() };
}

/// Keeps the calling thread's Python thread state (it must be attached) until
/// the thread ends. Attaching a thread without one creates one, and detaching
/// deletes it: on a worker that is a thread state, its frame stack and its
/// thread-locals made and freed for every call (about a tenth of a remote
/// import's CPU).
fn keep_thread_state() {
    KEPT_THREAD_STATE.with(|kept| {
        kept.get_or_init(|| {
            // SAFETY: the thread is attached (called inside `Python::try_attach`),
            // so this only counts one more hold on its existing thread state, which
            // the drop below gives back.
            unsafe { pyo3::ffi::PyGILState_Ensure() };
            KeptThreadState
        });
    });
}

/// The extra hold [`keep_thread_state`] took on a worker's thread state.
struct KeptThreadState;

impl Drop for KeptThreadState {
    /// Gives the hold back as the thread ends, so that its thread state is
    /// deleted with it; unless the interpreter is finalizing or gone (Python
    /// calls are refused then), which frees every thread state itself.
    fn drop(&mut self) {
        admitted(|| {
            Python::try_attach(|_py| {
                // SAFETY: attached, so the thread state has this hold and the
                // attachment's; giving back ours (taken while attached: LOCKED)
                // leaves the attachment to release the GIL and delete the state.
                unsafe {
                    pyo3::ffi::PyGILState_Release(pyo3::ffi::PyGILState_STATE::PyGILState_LOCKED)
                };
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use pyo3::types::PyDict;

    use super::*;

    /// A worker keeps its thread state between calls (what one call leaves in a
    /// `threading.local` is there in the next) and gives it back when the thread
    /// ends (the interpreter then drops that thread's locals).
    #[test]
    fn a_worker_keeps_its_thread_state_between_calls_and_gives_it_back_as_it_ends() {
        Python::initialize();
        let scope = Python::attach(|py| {
            let scope = PyDict::new(py);
            py.run(
                c"import threading, weakref\nlocal = threading.local()\nclass Mark: pass\n",
                Some(&scope),
                None,
            )?;
            PyResult::Ok(scope.unbind())
        })
        .expect("the test's Python runs");
        let scope = std::sync::Arc::new(scope);
        let run = |scope: &Py<PyDict>, code: &std::ffi::CStr| {
            attached(|py| py.run(code, Some(scope.bind(py)), None)).expect("the call runs")
        };
        let holds = |scope: &Py<PyDict>, condition: &std::ffi::CStr| {
            attached(|py| {
                py.eval(condition, Some(scope.bind(py)), None)?
                    .extract::<bool>()
            })
            .expect("the call runs")
        };
        // A thread of its own, joined (a scoped thread counts as done before its
        // thread-locals are dropped).
        let worker = {
            let scope = std::sync::Arc::clone(&scope);
            std::thread::spawn(move || {
                run(
                    &scope,
                    c"local.mark = Mark()\nmark = weakref.ref(local.mark)\n",
                );
                holds(&scope, c"getattr(local, 'mark', None) is not None")
            })
        };
        assert!(worker.join().expect("the worker thread ends"), "kept");
        assert!(
            holds(&scope, c"mark() is None"),
            "given back with the thread"
        );
    }
}
