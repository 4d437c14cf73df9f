//! The cores that exist. A `herald_core *` is an id, never reused, that every
//! entry point looks up here before touching a core: a core freed twice, used
//! after `herald_core_free`, or never made by `herald_core_new` is refused with
//! an error code instead of corrupting memory, and a stale pointer never reaches
//! a core made later.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::api::HeraldCore;

/// The cores made and not yet freed: id → address of the boxed core.
static LIVE: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());
/// The next core's id (0 would be NULL).
static NEXT: AtomicUsize = AtomicUsize::new(1);

/// Keeps `core` and returns the pointer that names it for C.
pub(crate) fn add(core: Box<HeraldCore>) -> *mut HeraldCore {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    live().insert(id, Box::into_raw(core).expose_provenance());
    std::ptr::without_provenance_mut(id)
}

/// Takes back the core `core` names; None if it names none (freed already, or
/// never made).
pub(crate) fn remove(core: *const HeraldCore) -> Option<Box<HeraldCore>> {
    let address = live().remove(&core.addr())?;
    // SAFETY: made by Box::into_raw in `add`, and just removed from the live
    // set, so taken back once.
    Some(unsafe { Box::from_raw(std::ptr::with_exposed_provenance_mut(address)) })
}

/// The core `core` names, if it names one.
pub(crate) fn get(core: *const HeraldCore) -> Option<*mut HeraldCore> {
    let address = *live().get(&core.addr())?;
    Some(std::ptr::with_exposed_provenance_mut(address))
}

fn live() -> MutexGuard<'static, BTreeMap<usize, usize>> {
    // Each operation on the map is one call: consistent after any panic.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}
