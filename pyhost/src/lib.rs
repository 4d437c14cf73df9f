//! The `herald` Python module's native half (`herald._herald`), shared by the two
//! ways Python runs as a node of a herald job:
//!
//! * **herald-python** (`src/main.rs`), CPython embedded in a binary: rank 0 runs
//!   the program and the other ranks serve it;
//! * **the extension module** in the `herald` wheel (`pyproject.toml`, built with
//!   maturin): `import herald` in the user's own `python3` joins the job that the
//!   launcher (`herald run`, `mpirun`, `srun`) described in the environment, and
//!   every rank runs the script (SPMD); the job ends when every rank's
//!   interpreter exits ([`spmd`]).
//!
//! Either way the process exports the C ABI (`herald_*`), so a native library
//! that Python loads with `ctypes` registers its tasks from its constructor.
#![deny(missing_docs)]

mod claims;
mod executor;
pub mod job;
pub mod logging;
pub mod module;
mod spmd;
