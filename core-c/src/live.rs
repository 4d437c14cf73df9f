//! The cores that exist: every entry point checks its `herald_core *` here before
//! touching it, so a core freed twice, used after `herald_core_free`, or never made
//! by `herald_core_new` is refused with an error code instead of corrupting memory.
//! (A freed address that a later `herald_core_new` reuses names the new core.)

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use crate::api::HeraldCore;

/// Addresses of the cores made and not yet freed.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

/// Records a core just made.
pub(crate) fn add(core: *const HeraldCore) {
    live().insert(core as usize);
}

/// Forgets `core`; false if it was not live (freed already, or never made).
pub(crate) fn remove(core: *const HeraldCore) -> bool {
    live().remove(&(core as usize))
}

/// Whether `core` is a core made and not yet freed.
pub(crate) fn contains(core: *const HeraldCore) -> bool {
    live().contains(&(core as usize))
}

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    // The set is consistent after any panic (each operation is one call).
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}
