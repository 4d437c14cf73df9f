//! `herald_init_comm` (`include/herald_mpi.h`), and `herald_init` over MPI: the
//! job's nodes are the ranks of an MPI communicator, and herald's frames travel
//! on a duplicate of it (no secret, no port).

use std::ffi::c_int;

use crate::{HostConfig, HostError, MPI_Comm, MpiLinks, Runtime, install_global};

/// Joins the job made of the ranks of `comm` (collective over `comm`: each of
/// its ranks calls it, like `herald_init`) and installs its runtime for the C
/// ABI. herald duplicates `comm`, so its messages never match the program's.
/// MPI must be initialised with `MPI_THREAD_MULTIPLE`; herald never finalises
/// MPI it did not initialise: call `herald_finalize` before `MPI_Finalize`.
///
/// # Safety
///
/// `comm` must be a valid communicator of the MPI library this process uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_init_comm(comm: MPI_Comm) -> c_int {
    super::init::init_with("herald_init_comm", || {
        super::init::init_logging();
        // SAFETY: the caller vouches for `comm`.
        unsafe { start_comm(Some(comm)) }
    })
}

/// Joins over MPI_COMM_WORLD (herald_init under an MPI launcher).
pub(super) fn start_mpi(comm: Option<MPI_Comm>) -> Result<Runtime, HostError> {
    // SAFETY: without a communicator of the caller's, herald uses the world's.
    unsafe { start_comm(comm) }
}

/// # Safety
///
/// `comm`, if given, must be a valid communicator.
unsafe fn start_comm(comm: Option<MPI_Comm>) -> Result<Runtime, HostError> {
    let config = HostConfig::default();
    let links = match comm {
        // SAFETY: the caller vouches for `comm`.
        Some(comm) => unsafe { MpiLinks::join_comm(&config, comm) }?,
        None => MpiLinks::join(&config)?,
    };
    let (node, nodes, initialised) = (links.node, links.nodes, links.initialised_mpi);
    // Installed before any frame is let in: a library loaded for another node
    // calls the C ABI from its constructor.
    let runtime = links.start(config, |runtime| {
        install_global(runtime);
    })?;
    tracing::info!(
        "herald_init: rank {node} of {nodes}, over MPI ({} MPI)",
        if initialised {
            "herald initialised"
        } else {
            "the program initialised"
        }
    );
    Ok(runtime)
}
