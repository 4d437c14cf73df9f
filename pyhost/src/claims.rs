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
    /// The file the claiming thread found for the module (`herald._checked.record_of`).
    file: Vec<u8>,
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
/// already has (it then imports under Python's own module lock). `file` is the
/// module file that thread found (see `herald._checked.record_of`).
#[pyfunction]
pub(crate) fn claim_import(name: String, file: Vec<u8>) -> Option<ImportClaim> {
    let mut claims = lock(&CLAIMS);
    if claims.contains_key(&name) {
        return None;
    }
    let claim = Arc::new(Claim {
        file,
        ..Claim::default()
    });
    claims.insert(name.clone(), Arc::clone(&claim));
    Some(ImportClaim { name, claim })
}

/// This node's invocation of `import_global(name)`, whose requester found the
/// module in `requested` (a file record): if a thread here claimed the import,
/// waits for it and returns its outcome (`Some(Ok)` or `Some(Err(text))`),
/// failing if that thread imported another file; `None` if nobody claimed it,
/// and the executor must import.
pub(crate) fn wait_for_claimed(name: &str, requested: &[u8]) -> Option<Result<(), String>> {
    let claim = lock(&CLAIMS).get(name).cloned()?;
    let mut outcome = lock(&claim.outcome);
    loop {
        if let Some(failure) = outcome.as_ref() {
            if let Some(failure) = failure {
                return Some(Err(failure.clone()));
            }
            return Some(match file_mismatch(name, &claim.file, requested) {
                Some(mismatch) => Err(mismatch),
                None => Ok(()),
            });
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

/// Why the file imported here is not the one the requester found, if it is not.
/// The digests are compared here; the text comes from `herald._checked`, which
/// wrote both records (the interpreter is attached only on a mismatch), or is
/// a plainer one if the interpreter cannot be reached.
fn file_mismatch(name: &str, here: &[u8], requested: &[u8]) -> Option<String> {
    let (Some(mine), Some(theirs)) = (digest_of(here), digest_of(requested)) else {
        return None;
    };
    if mine == theirs {
        return None;
    }
    let explained = Python::try_attach(|py| {
        py.import("herald._checked")
            .and_then(|checked| checked.call_method1("mismatch", (name, here, requested)))
            .and_then(|text| text.extract::<Option<String>>())
            .ok()
            .flatten()
    })
    .flatten();
    Some(explained.unwrap_or_else(|| {
        format!(
            "this node imported {name} from a file whose SHA-256 differs from the file the \
             requesting node found: every node must import the same module"
        )
    }))
}

/// The SHA-256 in a file record (`sha256\0`, 32 bytes, node, path), if it has one.
fn digest_of(record: &[u8]) -> Option<&[u8]> {
    record
        .strip_prefix(b"sha256\0")
        .and_then(|rest| rest.get(..32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: u8, node: u32, path: &str) -> Vec<u8> {
        let mut record = b"sha256\0".to_vec();
        record.extend([digest; 32]);
        record.extend(node.to_le_bytes());
        record.extend(path.as_bytes());
        record
    }

    fn claimed_then_finished(name: &str, file: Vec<u8>) -> ImportClaim {
        let claim = claim_import(name.to_owned(), file).expect("nobody else claimed it");
        claim.finish(None);
        claim
    }

    /// The same file found elsewhere (another node, another path, equal bytes)
    /// is the same module: the claimed import stands for this node's part.
    #[test]
    fn a_claimed_import_of_the_file_the_requester_found_succeeds() {
        let claim = claimed_then_finished("claims_same", record(7, 2, "/here/m.py"));
        let outcome = wait_for_claimed("claims_same", &record(7, 0, "/there/m.py"));
        assert_eq!(outcome, Some(Ok(())));
        claim.release();
    }

    /// A claimed import of another file fails this node's part, naming the module.
    #[test]
    fn a_claimed_import_of_another_file_fails() {
        let claim = claimed_then_finished("claims_other", record(7, 2, "/here/m.py"));
        let outcome = wait_for_claimed("claims_other", &record(8, 0, "/there/m.py"));
        let Some(Err(text)) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(text.contains("claims_other"), "{text}");
        claim.release();
    }

    /// Without a file on either side (a built-in module, a namespace package)
    /// there is nothing to compare.
    #[test]
    fn a_module_without_a_file_is_not_compared() {
        let claim = claimed_then_finished("claims_none", Vec::new());
        assert_eq!(
            wait_for_claimed("claims_none", &record(8, 0, "/m.py")),
            Some(Ok(()))
        );
        claim.release();
        assert_eq!(wait_for_claimed("claims_none", &[]), None, "released");
    }
}
