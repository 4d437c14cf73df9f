//! How the MPI transport is set up and how it polls.

use std::time::Duration;

use crate::raw::Comm;

/// Settings of the MPI transport.
#[derive(Debug)]
pub struct MpiConfig {
    /// The communicator herald duplicates; `None` for `MPI_COMM_WORLD`.
    pub(crate) comm: Option<Comm>,
    /// Largest frame sent or accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Settings every rank must share, compared across ranks at start:
    /// (name, value, what sets it), e.g. `("fan-out", 4, "--fanout")`.
    pub agree: Vec<(String, u64, String)>,
    /// How the progress thread polls while nothing happens.
    pub poll: PollConfig,
}

impl Default for MpiConfig {
    fn default() -> Self {
        MpiConfig {
            comm: None,
            max_frame_bytes: 64 << 20,
            agree: Vec::new(),
            poll: PollConfig::default(),
        }
    }
}

impl MpiConfig {
    /// Runs herald on a duplicate of `comm` (an `MPI_Comm` of the application)
    /// instead of `MPI_COMM_WORLD`; its ranks are herald's nodes.
    ///
    /// # Safety
    ///
    /// `comm` must be a valid communicator of this process's MPI library, and
    /// every rank of it must start herald on it.
    pub unsafe fn with_comm(mut self, comm: mpi::ffi::MPI_Comm) -> Self {
        self.comm = Some(Comm(comm));
        self
    }
}

/// Adaptive polling: after the last message sent or received, the progress
/// thread polls without pause for `spin`, then yields its core between polls
/// until `yield_for` has passed, then sleeps between polls, from 10 µs doubling
/// up to `max_sleep`. A frame to send wakes it at once; a frame arriving while
/// it sleeps waits for the next poll (at most `max_sleep`).
#[derive(Clone, Copy, Debug)]
pub struct PollConfig {
    /// Busy polling after the last activity.
    pub spin: Duration,
    /// Polling with `sched_yield` after that.
    pub yield_for: Duration,
    /// The longest sleep between two polls.
    pub max_sleep: Duration,
}

/// Environment variable overriding [`PollConfig::spin`], in microseconds.
pub const SPIN_ENV: &str = "HERALD_MPI_SPIN_US";
/// Environment variable overriding [`PollConfig::yield_for`], in microseconds.
pub const YIELD_ENV: &str = "HERALD_MPI_YIELD_US";
/// Environment variable overriding [`PollConfig::max_sleep`], in microseconds.
pub const SLEEP_ENV: &str = "HERALD_MPI_MAX_SLEEP_US";

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            // Measured with scripts/bench-mpi.sh on 2 oversubscribed cores: longer
            // spinning steals the core the runtime's other threads need; a
            // shorter yield lets ranks fall asleep between rounds, and each hop
            // then waits for a sleeper (8 ms rounds at N = 8 instead of 0.5 ms).
            spin: Duration::from_micros(10),
            yield_for: Duration::from_millis(5),
            max_sleep: Duration::from_micros(500),
        }
    }
}

impl PollConfig {
    /// The defaults, each overridden by its variable when that is set to a
    /// number of microseconds: `HERALD_MPI_SPIN_US`, `HERALD_MPI_YIELD_US`,
    /// `HERALD_MPI_MAX_SLEEP_US` (at least 1).
    pub fn from_env() -> PollConfig {
        let micros = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_micros)
        };
        let default = PollConfig::default();
        PollConfig {
            spin: micros(SPIN_ENV).unwrap_or(default.spin),
            yield_for: micros(YIELD_ENV).unwrap_or(default.yield_for),
            max_sleep: micros(SLEEP_ENV)
                .unwrap_or(default.max_sleep)
                .max(Duration::from_micros(1)),
        }
    }
}
