//! The elastic worker pool: user code (invocations, tasks, `dlopen`) runs here and
//! never on the event loop.
//!
//! Every job gets a thread at once: an idle worker if there is one, a new worker
//! otherwise. So an invocation blocked in user code, or one waiting for a
//! registration nested in it, never keeps the nested invocation from running.
//! Workers beyond the first exit after being idle for a while.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A unit of work for a worker.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Submits jobs; dropping it lets idle workers exit.
pub(crate) struct WorkerPool {
    jobs: Sender<Job>,
    state: Arc<PoolState>,
}

/// Whether user code has been running on the workers for a while. Threads that
/// poll for their next event (idle workers, the transport's I/O thread) stop
/// then: the code is using a core, and on a machine whose cores are all taken
/// (a 2-core VM, or one MPI rank per core) a poller takes its share of one from
/// it, however often it yields. Short jobs (a C callback's microseconds) never
/// stop them, so a burst of small registrations still costs no wake-ups.
pub(crate) struct Occupancy {
    /// Jobs running now.
    running: AtomicU32,
    /// When the workers last went from idle to running, in nanoseconds since `epoch`.
    since: AtomicU64,
    epoch: Instant,
}

/// How long user code must have run before pollers stop.
const LONG_RUNNING: Duration = Duration::from_micros(50);

struct PoolState {
    jobs: Receiver<Job>,
    occupancy: Arc<Occupancy>,
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
                occupancy: Arc::new(Occupancy::new()),
                counts: Mutex::new(Counts::default()),
                idle_timeout,
                poll_window,
                on_count,
            }),
        }
    }

    /// Whether threads that poll should: no job has been running for long.
    pub(crate) fn poll_gate(&self) -> Arc<Occupancy> {
        Arc::clone(&self.state.occupancy)
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
            if last_job.elapsed() < self.poll_window && !self.occupancy.long_running() {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        self.occupancy.run(job);
                        self.lock().idle += 1;
                        last_job = std::time::Instant::now();
                    }
                    Err(_) => std::thread::yield_now(),
                }
                continue;
            }
            match self.jobs.recv_timeout(self.idle_timeout) {
                Ok(job) => {
                    self.occupancy.run(job);
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

impl Occupancy {
    fn new() -> Occupancy {
        Occupancy {
            running: AtomicU32::new(0),
            since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether a job has been running for longer than [`LONG_RUNNING`] (since
    /// the workers were last all idle).
    pub(crate) fn long_running(&self) -> bool {
        if self.running.load(Ordering::Acquire) == 0 {
            return false;
        }
        let since = Duration::from_nanos(self.since.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(since) > LONG_RUNNING
    }

    /// Runs `job`, counted as running meanwhile.
    fn run(&self, job: Job) {
        if self.running.load(Ordering::Relaxed) == 0 {
            // Set before the count rises, so a reader that sees the count sees a
            // start no older than this job's (two jobs starting at once may
            // both set it: either time will do).
            self.since
                .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.running.fetch_add(1, Ordering::AcqRel);
        // Jobs catch their own panics; this guard only keeps the count right if
        // one did not.
        let _running = Running(&self.running);
        job();
    }
}

/// Counts a job out when it ends.
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pool() -> WorkerPool {
        WorkerPool::new(
            Duration::from_secs(30),
            Duration::from_micros(100),
            Box::new(|_| {}),
        )
    }

    /// Submits a job that runs until released; returns once it runs, with the
    /// time just before it was submitted and the way to release it.
    fn start_blocked_job(pool: &WorkerPool) -> (Instant, crossbeam_channel::Sender<()>) {
        let (started, job_started) = crossbeam_channel::bounded(0);
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        let submitted = Instant::now();
        pool.submit(Box::new(move || {
            let _ = started.send(());
            let _ = released.recv();
        }));
        job_started.recv().expect("the job starts");
        (submitted, release)
    }

    /// Pollers go on while the workers are idle or run short jobs, stop once a
    /// job has run for longer than `LONG_RUNNING`, and go on again when it ends.
    #[test]
    fn pollers_stop_while_a_job_runs_long_and_go_on_when_it_ends() {
        let pool = pool();
        let occupancy = pool.poll_gate();
        assert!(!occupancy.long_running(), "idle workers");

        let (submitted, release) = start_blocked_job(&pool);
        // The job is running: the answer turns once it has run long enough, and
        // not before (it started after `submitted`).
        while !occupancy.long_running() {
            assert!(
                submitted.elapsed() < Duration::from_secs(10),
                "never long-running"
            );
            std::thread::yield_now();
        }
        assert!(submitted.elapsed() > LONG_RUNNING);

        release.send(()).expect("release the job");
        let ended = Instant::now();
        while occupancy.long_running() {
            assert!(
                ended.elapsed() < Duration::from_secs(10),
                "still long-running"
            );
            std::thread::yield_now();
        }
    }

    /// A new job after an idle spell is timed from its own start, not from the
    /// first job's.
    #[test]
    fn a_job_after_an_idle_spell_is_timed_from_its_own_start() {
        let pool = pool();
        let occupancy = pool.poll_gate();
        let (done, finished) = crossbeam_channel::bounded(0);
        pool.submit(Box::new(move || {
            let _ = done.send(());
        }));
        finished.recv().expect("the first job runs");
        // Idle for well over the threshold.
        let idle = Instant::now();
        while idle.elapsed() < LONG_RUNNING * 4 {
            std::thread::yield_now();
        }
        let (submitted, release) = start_blocked_job(&pool);
        let long = occupancy.long_running();
        // Only a check made within the threshold of the submission says
        // anything (a slow machine may take longer to get here).
        if submitted.elapsed() < LONG_RUNNING {
            assert!(!long, "timed from the first job's start");
        }
        release.send(()).expect("release the job");
    }
}
