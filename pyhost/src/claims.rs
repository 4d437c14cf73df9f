//! Imports that a top-level `import_global` does itself, on its own thread.
//!
//! That import *is* this node's part of the global import: when the runtime
//! invokes the registration here, the executor waits for it (and reports its
//! outcome) instead of importing a second time on a worker. The wait happens
//! here, in Rust, without attaching to the interpreter, so the worker never
//! competes for the GIL with the thread that is importing.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

/// Claims by module name.
static CLAIMS: LazyLock<Mutex<HashMap<String, Arc<Claim>>>> = LazyLock::new(Default::default);

/// One claimed import: `None` while it runs, then its failure text (if any).
#[derive(Default)]
struct Claim {
    outcome: Mutex<Option<Option<String>>>,
    finished: Condvar,
}

/// The claim of one import, held by the thread doing it.
#[pyclass(module = "herald", name = "ImportClaim", frozen)]
pub(crate) struct ImportClaim {
    name: String,
    claim: Arc<Claim>,
}

#[pymethods]
impl ImportClaim {
    /// Records the import's outcome (None, or its failure text) and wakes the
    /// invocation waiting for it.
    #[pyo3(signature = (failure=None))]
    fn finish(&self, failure: Option<String>) {
        let mut outcome = lock(&self.claim.outcome);
        if outcome.is_none() {
            *outcome = Some(failure);
        }
        self.claim.finished.notify_all();
    }

    /// Withdraws the claim, once the global import has completed (no invocation
    /// can come for it any more).
    fn release(&self) {
        self.finish(None);
        let mut claims = lock(&CLAIMS);
        if claims
            .get(&self.name)
            .is_some_and(|claim| Arc::ptr_eq(claim, &self.claim))
        {
            claims.remove(&self.name);
        }
    }
}

/// Claims the import of `name` for the calling thread, unless another thread
/// already has (it then imports under Python's own module lock).
#[pyfunction]
pub(crate) fn claim_import(name: String) -> Option<ImportClaim> {
    let mut claims = lock(&CLAIMS);
    if claims.contains_key(&name) {
        return None;
    }
    let claim = Arc::new(Claim::default());
    claims.insert(name.clone(), Arc::clone(&claim));
    Some(ImportClaim { name, claim })
}

/// This node's invocation of `import_global(name)`: if a thread here claimed
/// the import, waits for it and returns its outcome (`Some(Ok)` or
/// `Some(Err(text))`); `None` if nobody did, and the executor must import.
pub(crate) fn wait_for_claimed(name: &str) -> Option<Result<(), String>> {
    let claim = lock(&CLAIMS).get(name).cloned()?;
    let mut outcome = lock(&claim.outcome);
    loop {
        if let Some(failure) = outcome.as_ref() {
            return Some(failure.clone().map_or(Ok(()), Err));
        }
        outcome = claim
            .finished
            .wait(outcome)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
