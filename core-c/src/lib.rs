//! herald-core-c: the C API of the sans-IO protocol core, declared in
//! `include/herald_core.h` and exported by `libherald.so`.
//!
//! A `herald_core` is a [`herald_core::Node`] behind an opaque pointer (an id
//! that every call looks up, so stale and made-up pointers are refused), plus the
//! storage its outputs borrow from: every pointer in a `herald_core_output` stays
//! valid until the next call on the same core, and nothing else is handed out, so
//! the caller frees only the core itself. Frames are encoded inside (the caller
//! sends bytes), and bytes from the network go through the core's decoder, which
//! never panics; every entry point also catches panics, so none unwinds into C
//! (a core that panicked answers `HERALD_CORE_ERR_BROKEN` from then on).
//!
//! Like the Rust core, it does no I/O, reads no clock and starts no thread.
#![deny(missing_docs)]

mod api;
mod live;
mod members;
mod output;
mod text;

pub use api::{
    HERALD_CORE_ERR_BROKEN, HERALD_CORE_ERR_FENCED, HERALD_CORE_ERR_INVALID,
    HERALD_CORE_ERR_PROTOCOL, HERALD_CORE_ERR_TOO_LARGE, HERALD_CORE_ERR_UNKNOWN,
    HERALD_CORE_NO_PARENT, HERALD_CORE_OK, HeraldCore, herald_core_error, herald_core_free,
    herald_core_handle_frame, herald_core_invocation_finished, herald_core_launch, herald_core_new,
    herald_core_peer_down, herald_core_poll, herald_core_register, herald_core_task_finished,
};
pub use output::{Completed, Fenced, Invoke, PeerDown, RunTask, TaskCompleted, Transmit};
pub use output::{
    HERALD_CORE_COMPLETED, HERALD_CORE_FENCED, HERALD_CORE_INVOKE, HERALD_CORE_NONE,
    HERALD_CORE_PEER_DOWN, HERALD_CORE_RUN_TASK, HERALD_CORE_TASK_COMPLETED,
    HERALD_CORE_TASK_FAILED, HERALD_CORE_TASK_OK, HERALD_CORE_TASK_REQUIREMENT_FAILED,
    HERALD_CORE_TASK_UNREACHABLE, HERALD_CORE_TRANSMIT, OutputBody, herald_core_failure,
    herald_core_output,
};
