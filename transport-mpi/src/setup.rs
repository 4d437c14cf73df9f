//! Joining MPI: initialise it unless the application did, check the thread
//! level, duplicate the communicator, and check that every rank shares the
//! settings it must.

use mpi::Threading;
use mpi::environment::Universe;

use crate::config::MpiConfig;
use crate::error::MpiError;
use crate::raw::{self, Comm};

/// herald's place in MPI, made on the progress thread.
pub(crate) struct Joined {
    /// herald's own communicator (a duplicate).
    pub(crate) comm: Comm,
    pub(crate) rank: u32,
    pub(crate) size: u32,
    /// Present when herald initialised MPI: dropping it finalises MPI.
    pub(crate) universe: Option<Universe>,
}

/// Name under which ranks compare their frame limits.
const FRAME_LIMIT: &str = "frame limit (bytes)";

/// Joins MPI on the calling thread (the progress thread, which is then MPI's
/// main thread when herald initialises it).
pub(crate) fn join(config: &MpiConfig) -> Result<Joined, MpiError> {
    if config.max_frame_bytes > i32::MAX as usize {
        return Err(MpiError::FrameLimit(config.max_frame_bytes));
    }
    if mpi::environment::is_finalized() {
        return Err(MpiError::Finalized);
    }
    // A communicator of the program's exists only once the program initialised
    // MPI; initialising it here would leave the program's own MPI_Init failing.
    if config.comm.is_some() && !mpi::environment::is_initialized() {
        return Err(MpiError::NotInitialised);
    }
    // `None` when the application initialised MPI (rsmpi checks under its lock).
    let universe = mpi::initialize_with_threading(Threading::Multiple).map(|(u, _)| u);
    let provided = mpi::environment::threading_support();
    if provided != Threading::Multiple {
        if universe.is_none() {
            return Err(MpiError::ThreadLevel {
                provided: level_name(provided),
            });
        }
        // Only this thread calls MPI as long as the program does not.
        tracing::warn!(
            "herald-mpi: MPI provides only {}: the program must not call MPI while herald runs",
            level_name(provided)
        );
    }
    let base = match config.comm {
        // Checked before MPI_Comm_dup, whose error handler is the program's
        // (by default MPI_ERRORS_ARE_FATAL: the whole job would abort).
        Some(comm) => raw::check_intracomm(comm)?,
        None => raw::world(),
    };
    let comm = raw::dup(base).map_err(MpiError::Mpi)?;
    let joined = raw::rank_and_size(comm)
        .map_err(MpiError::Mpi)
        .and_then(|(rank, size)| {
            agree(comm, rank, size, config)?;
            Ok((rank, size))
        });
    match joined {
        Ok((rank, size)) => Ok(Joined {
            comm,
            rank,
            size,
            universe,
        }),
        Err(error) => {
            raw::free(comm);
            Err(error)
        }
    }
}

/// Compares the settings every rank must share (collective: every rank gets
/// the same table, so every rank fails alike).
fn agree(comm: Comm, rank: u32, size: u32, config: &MpiConfig) -> Result<(), MpiError> {
    let mut settings = vec![(
        FRAME_LIMIT.to_owned(),
        config.max_frame_bytes as u64,
        "--max-frame-bytes".to_owned(),
    )];
    settings.extend(config.agree.iter().cloned());
    let ours: Vec<u64> = settings.iter().map(|(_, value, _)| *value).collect();
    let all = raw::all_gather(comm, &ours, size).map_err(MpiError::Mpi)?;
    for (node, theirs) in all.chunks(ours.len()).enumerate() {
        if node as u32 == rank {
            continue;
        }
        let differs = settings.iter().zip(theirs).find(|((_, v, _), t)| v != *t);
        if let Some(((name, value, hint), theirs)) = differs {
            return Err(MpiError::Disagree {
                node: node as u32,
                name: name.clone(),
                theirs: *theirs,
                ours: *value,
                hint: hint.clone(),
            });
        }
    }
    Ok(())
}

fn level_name(level: Threading) -> &'static str {
    match level {
        Threading::Single => "MPI_THREAD_SINGLE",
        Threading::Funneled => "MPI_THREAD_FUNNELED",
        Threading::Serialized => "MPI_THREAD_SERIALIZED",
        Threading::Multiple => "MPI_THREAD_MULTIPLE",
    }
}
