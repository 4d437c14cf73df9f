//! The elastic worker pool: user code (invocations, tasks, `dlopen`) runs here and
//! never on the event loop.
//!
//! Every job gets a thread at once: an idle worker if there is one, a new worker
//! otherwise. So an invocation blocked in user code, or one waiting for a
//! registration nested in it, never keeps the nested invocation from running.
//! Workers beyond the first exit after being idle for a while.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A unit of work for a worker.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Submits jobs; dropping it lets idle workers exit.
pub(crate) struct WorkerPool {
    jobs: Sender<Job>,
    state: Arc<PoolState>,
}

struct PoolState {
    jobs: Receiver<Job>,
    counts: Mutex<Counts>,
    idle_timeout: Duration,
    /// How long a worker polls for the next job after one before it parks.
    poll_window: Duration,
    /// Called with the number of live workers whenever it changes.
    on_count: Box<dyn Fn(u64) + Send + Sync>,
}

#[derive(Default)]
struct Counts {
    /// Workers waiting for a job and not yet promised one.
    idle: usize,
    total: usize,
    spawned: u64,
}

impl WorkerPool {
    pub(crate) fn new(
        idle_timeout: Duration,
        poll_window: Duration,
        on_count: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Self {
        let (jobs, receiver) = crossbeam_channel::unbounded();
        Self {
            jobs,
            state: Arc::new(PoolState {
                jobs: receiver,
                counts: Mutex::new(Counts::default()),
                idle_timeout,
                poll_window,
                on_count,
            }),
        }
    }

    /// Runs `job` on an idle worker, or on a new one if none is idle.
    pub(crate) fn submit(&self, job: Job) {
        let spawn = {
            let mut counts = self.state.lock();
            if counts.idle > 0 {
                counts.idle -= 1;
                None
            } else {
                counts.total += 1;
                counts.spawned += 1;
                (self.state.on_count)(counts.total as u64);
                Some(counts.spawned)
            }
        };
        // The receiver lives in `state`, which this pool holds: sending cannot fail.
        let _ = self.jobs.send(job);
        if let Some(number) = spawn {
            let state = Arc::clone(&self.state);
            let spawned = std::thread::Builder::new()
                .name(format!("herald-worker-{number}"))
                .spawn(move || state.work());
            if let Err(error) = spawned {
                tracing::error!(%error, "herald: cannot start a worker thread; the job waits for a busy one");
                let mut counts = self.state.lock();
                counts.total -= 1;
                (self.state.on_count)(counts.total as u64);
            }
        }
    }
}

impl PoolState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work(self: Arc<Self>) {
        let mut last_job = std::time::Instant::now();
        loop {
            // After a job the worker polls for a while (yielding the core to any
            // thread that has work) before it parks: the next job of a burst
            // costs no wake-up.
            if last_job.elapsed() < self.poll_window {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        job();
                        self.lock().idle += 1;
                        last_job = std::time::Instant::now();
                    }
                    Err(_) => std::thread::yield_now(),
                }
                continue;
            }
            match self.jobs.recv_timeout(self.idle_timeout) {
                Ok(job) => {
                    job();
                    self.lock().idle += 1;
                    last_job = std::time::Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut counts = self.lock();
                    // Leave only if another worker stays, and this one is not
                    // promised to a job that is on its way.
                    if counts.idle > 0 && counts.total > 1 {
                        counts.idle -= 1;
                        counts.total -= 1;
                        (self.on_count)(counts.total as u64);
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let mut counts = self.lock();
                    counts.idle = counts.idle.saturating_sub(1);
                    counts.total -= 1;
                    (self.on_count)(counts.total as u64);
                    return;
                }
            }
        }
    }
}
