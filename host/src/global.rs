//! The process-global runtime that the C ABI talks to.
//!
//! A child forked from the process that installed it (`fork` without `exec`)
//! inherits a copy of it but none of its threads, and shares its links: a
//! frame the child sent would be sealed with the parent's keys and counters
//! and break the parent's link (the job would then declare the parent down),
//! and a wait there would never end. So in such a child there is no runtime:
//! [`global`] returns `None`, and [`forked_from`] names the parent.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Once, PoisonError, RwLock};

use crate::Runtime;

static GLOBAL: RwLock<Option<Runtime>> = RwLock::new(None);

/// The process that installed the runtime.
static NODE_PID: AtomicU32 = AtomicU32::new(0);

/// Set in the child by `fork` (a `pthread_atfork` handler): this process is not
/// the one that installed the runtime. An atomic load per call, where asking
/// the kernel for the pid would be a system call per call.
static FORKED: AtomicBool = AtomicBool::new(false);

static AT_FORK: Once = Once::new();

/// Makes `runtime` the one the C ABI (`herald_*`) uses in this process, and
/// returns the one it replaces. Install it before loading plugins.
pub fn install_global(runtime: &Runtime) -> Option<Runtime> {
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe as a handler run in the child of fork must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(mark_forked)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "herald: pthread_atfork failed; a forked child is not detected"
            );
        }
    });
    let mut global = GLOBAL.write().unwrap_or_else(PoisonError::into_inner);
    NODE_PID.store(std::process::id(), Ordering::Relaxed);
    FORKED.store(false, Ordering::Release);
    global.replace(runtime.clone())
}

/// Removes the process-global runtime (C calls then fail with "no runtime").
pub fn uninstall_global() -> Option<Runtime> {
    GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// The process-global runtime, if one is installed (by this process, not by a
/// parent it was forked from).
pub fn global() -> Option<Runtime> {
    if FORKED.load(Ordering::Acquire) {
        return None;
    }
    GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The pid of the process this one was forked from, if that process had a
/// runtime installed when it forked: herald calls here must fail, saying so.
pub fn forked_from() -> Option<u32> {
    let installed = GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some();
    (FORKED.load(Ordering::Acquire) && installed).then(|| NODE_PID.load(Ordering::Relaxed))
}

extern "C" fn mark_forked() {
    FORKED.store(true, Ordering::Release);
}
