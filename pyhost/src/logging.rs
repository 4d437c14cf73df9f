//! The runtime's logs (a registration nobody waits for failed, a node went down,
//! ...) on standard error, until this node knows that the job is over: links
//! closing then are the job's teardown, not news. `HERALD_LOG` sets the level.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{job, module};

/// Set when this node ends the job (other nodes learn it from their runtime).
static ENDING_JOB: AtomicBool = AtomicBool::new(false);

/// Installs the log subscriber (once per process; later calls do nothing).
pub fn init() {
    // Fails only if the process already has a subscriber, which then logs instead.
    let _ = tracing_subscriber::fmt()
        .with_max_level(herald_host::ffi::log_level())
        .with_writer(|| LogWriter)
        .with_target(false)
        .try_init();
}

/// Stops the runtime's logging on the node that ends the job.
pub fn mute_runtime_logs() {
    ENDING_JOB.store(true, Ordering::Relaxed);
}

/// Standard error until this node knows the job is over, then nothing.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let over = ENDING_JOB.load(Ordering::Relaxed)
            || module::runtime_if_started().is_some_and(job::job_over);
        if over {
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
