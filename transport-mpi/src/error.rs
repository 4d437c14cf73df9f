//! What can go wrong when herald joins a job over MPI.

/// Why the MPI transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// MPI was finalised before herald started.
    #[error(
        "MPI is already finalised: start herald after MPI_Init (or let herald initialise \
         MPI) and end it with herald_finalize before MPI_Finalize"
    )]
    Finalized,
    /// herald_init_comm was called before the program initialised MPI.
    #[error(
        "MPI is not initialised: call MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, \
         &provided) before herald_init_comm, or call herald_init instead, which initialises MPI \
         itself under an MPI launcher"
    )]
    NotInitialised,
    /// The communicator given is `MPI_COMM_NULL`.
    #[error(
        "the communicator is MPI_COMM_NULL: call herald_init_comm only on ranks that belong to \
         a communicator (MPI_Comm_split gives MPI_COMM_NULL to ranks of colour MPI_UNDEFINED)"
    )]
    NullComm,
    /// The communicator given is an intercommunicator.
    #[error(
        "the communicator is an intercommunicator: herald runs on an intracommunicator (merge \
         it with MPI_Intercomm_merge first)"
    )]
    InterComm,
    /// The application initialised MPI with a thread level below
    /// `MPI_THREAD_MULTIPLE`: herald's progress thread would call MPI while the
    /// application's threads do.
    #[error(
        "MPI was initialised with {provided} but herald's progress thread calls MPI while the \
         program's threads do, which needs MPI_THREAD_MULTIPLE: initialise MPI with \
         MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) (mpi4py asks for it by \
         default: do not lower mpi4py.rc.thread_level), let herald initialise MPI (start herald \
         before any MPI call), or use HERALD_TRANSPORT=tcp"
    )]
    ThreadLevel {
        /// The level MPI provides, by name.
        provided: &'static str,
    },
    /// A rank uses a setting that must be the same on every rank.
    #[error(
        "node {node} uses {name} {theirs}, this node {ours}: start every rank with the same {hint}"
    )]
    Disagree {
        /// The first rank that disagrees with this one.
        node: u32,
        /// The setting.
        name: String,
        /// Its value there.
        theirs: u64,
        /// Its value here.
        ours: u64,
        /// What sets it.
        hint: String,
    },
    /// The frame limit does not fit an MPI count.
    #[error(
        "a frame limit of {0} bytes does not fit an MPI message count (at most {max}): lower \
         --max-frame-bytes",
        max = i32::MAX
    )]
    FrameLimit(usize),
    /// An MPI call failed.
    #[error("{0}")]
    Mpi(String),
    /// The progress thread could not be started, or ended before it was ready.
    #[error("herald's MPI progress thread: {0}")]
    Thread(String),
}
