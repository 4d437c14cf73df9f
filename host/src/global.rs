//! The process-global runtime that the C ABI talks to.

use std::sync::{PoisonError, RwLock};

use crate::Runtime;

static GLOBAL: RwLock<Option<Runtime>> = RwLock::new(None);

/// Makes `runtime` the one the C ABI (`herald_*`) uses in this process, and
/// returns the one it replaces. Install it before loading plugins.
pub fn install_global(runtime: &Runtime) -> Option<Runtime> {
    GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(runtime.clone())
}

/// Removes the process-global runtime (C calls then fail with "no runtime").
pub fn uninstall_global() -> Option<Runtime> {
    GLOBAL
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// The process-global runtime, if one is installed.
pub fn global() -> Option<Runtime> {
    GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}
