//! herald-host: the threaded runtime a real process runs around the herald core.
//!
//! * An event loop holds the protocol [`Node`](herald_core::Node) and drives it
//!   from the transport's frames, the API's commands and the workers' reports. It
//!   runs on the thread that brings it work (a frame is handled on the transport's
//!   I/O thread that read it, a registration on the caller's thread), one thread
//!   at a time; the runtime's own thread keeps only timed work and closing down.
//! * An elastic pool of worker threads runs invocations and tasks — user code and
//!   every `dlopen` — so nothing a plugin does stalls the protocol, and an
//!   invocation waiting for one nested in it always finds a free thread.
//! * Native code is named portably ([`CodeRef::Native`]: canonical library path,
//!   SHA-256 of the file and of its dependencies outside the system library
//!   directories, symbol found with `dladdr`), loaded only from allowed
//!   directories and only if the digests match, from the very descriptor that
//!   was hashed (`/proc/self/fd/N`, then the mapped file's device and inode are
//!   checked).
//! * Registrations made on a thread that executes an invocation — including from
//!   a library constructor running inside its `dlopen` — are nested: they run
//!   here only and never block. Top-level registrations made during
//!   [`Runtime::load_library`] are awaited when `dlopen` has returned.
//! * Task variants are registered by (library, symbol), batched, and resolved on
//!   first execution; [`Runtime::launch`] runs one on any node.
//! * The C ABI of `include/herald.h` (`herald_*`, in [`ffi`]) serves plugins
//!   through the runtime installed with [`install_global`], or started by a
//!   program itself with `herald_init` (and ended, collectively, by
//!   `herald_finalize`: [`Runtime::finalize`]).
//!
//! ```
//! use herald_host::{CodeRef, Executor, HostConfig, Runtime};
//! use std::sync::Arc;
//!
//! struct Hello;
//! impl Executor for Hello {
//!     fn invoke(&self, _payload: &[u8], args: &[u8]) -> Result<(), String> {
//!         println!("hello {}", String::from_utf8_lossy(args));
//!         Ok(())
//!     }
//! }
//! let runtime = Runtime::single_process(HostConfig::default())?;
//! runtime.register_executor("hello", Arc::new(Hello));
//! let code = CodeRef::Custom { kind: "hello".into(), payload: vec![] };
//! runtime.register_global(code, b"world".to_vec(), None).wait()?;
//! runtime.shutdown();
//! # Ok::<(), herald_host::HostError>(())
//! ```
#![deny(missing_docs)]

mod code;
mod config;
mod context;
mod driver;
mod error;
mod event_loop;
mod execute;
mod executor;
pub mod ffi;
mod finalize;
mod global;
mod handle;
mod handles;
mod membership;
#[cfg(feature = "mpi")]
mod mpi_links;
mod native;
mod pool;
mod runtime;
mod select;
mod shared;
mod stats;
mod sync;
mod tasks;
mod transport;
mod unawaited;
mod waits;
mod watchdog;

pub use code::{CodeRef, DependencyRef, Digest, LibraryRef, TaskCode, TaskVariant};
pub use config::{
    DEFAULT_POLL_WINDOW, HostConfig, LIBRARY_PATH_ENV, default_library_dirs, implicit_dir_problem,
};
pub use error::{HostError, LoadError};
pub use executor::Executor;
pub use ffi::keep_c_abi;
pub use global::{forked_from, global, install_global, uninstall_global};
pub use handle::{RegistrationHandle, TaskHandle};
pub use membership::{JOIN_ENV, LocalCluster, NodeDownHook, ViewHook, join_bootstrap};
#[cfg(feature = "mpi")]
pub use mpi_links::{MPI_Comm, MpiLinks, MpiOpener};
pub use runtime::{JobEnd, LoadReport, Runtime};
pub use select::{MPI_SUPPORT, TRANSPORT_ENV, TransportChoice, TransportKind};
pub use stats::RuntimeStats;
pub use transport::Transport;

/// The shared-state modules under loom's primitives, for `tests/loom.rs` only.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::context::{
        InvocationFrame, deadlock_reason, enter_invocation, enter_loading, placement,
        record_during_load,
    };
    pub use crate::driver::Combiner;
    pub use crate::handles::{Completion, HandleTable, WaitOutcome};
}
