//! herald-mpi: herald's frames over the job's own MPI, instead of a TCP mesh.
//!
//! Under `mpirun` or `srun` MPI already connects every rank over the fastest
//! path the machine has (shared memory within a node, the interconnect between
//! nodes), and the job is already the trust domain: no secret, no port.
//! [`MpiTransport`] carries herald's frames on a duplicate of `MPI_COMM_WORLD`
//! (or of a communicator the application passes), so they never mix with the
//! application's messages.
//!
//! * **Who initialises MPI.** If the application did (C, C++, Fortran, mpi4py),
//!   herald uses it and leaves finalising to it; it needs
//!   `MPI_THREAD_MULTIPLE`, because its progress thread calls MPI while the
//!   application's threads do, and says so otherwise ([`MpiError::ThreadLevel`]).
//!   If not, herald initialises it (asking for `MPI_THREAD_MULTIPLE`) on its
//!   progress thread and finalises it at [`MpiTransport::shutdown`].
//! * **Progress.** One thread makes every MPI call herald makes:
//!   `MPI_Iprobe` + `MPI_Recv` for whatever arrives (any size up to the frame
//!   limit), `MPI_Isend` + `MPI_Testsome` for frames the runtime queues. While
//!   idle it spins briefly, then yields, then sleeps (10 µs doubling to
//!   0.5 ms, see [`PollConfig`]); a frame to send wakes it at once.
//! * **Failures.** Errors on herald's communicator are returned, not fatal:
//!   a failed send or receive reports the peer down. But by default Open MPI
//!   aborts the whole job when a rank dies, before herald can say anything.
//!
//! Without the `mpi` feature this crate is empty, so that a workspace build
//! needs no MPI library.
#![deny(missing_docs)]

#[cfg(feature = "mpi")]
mod backoff;
#[cfg(feature = "mpi")]
mod config;
#[cfg(feature = "mpi")]
mod error;
#[cfg(feature = "mpi")]
mod finalize;
#[cfg(feature = "mpi")]
mod progress;
#[cfg(feature = "mpi")]
mod raw;
#[cfg(feature = "mpi")]
mod setup;
#[cfg(feature = "mpi")]
mod transport;

#[cfg(feature = "mpi")]
pub use config::{MpiConfig, PollConfig, SLEEP_ENV, SPIN_ENV, YIELD_ENV};
#[cfg(feature = "mpi")]
pub use error::MpiError;
/// rsmpi, the MPI bindings herald uses, for programs that want the same ones.
#[cfg(feature = "mpi")]
pub use mpi;
#[cfg(feature = "mpi")]
pub use mpi::ffi::MPI_Comm;
#[cfg(feature = "mpi")]
pub use transport::{MpiOpener, MpiTransport};
