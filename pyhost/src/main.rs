//! herald-python: CPython embedded as a node of a herald job.
//!
//! ```text
//! herald run -n 4 -- herald-python script.py     # 4 ranks started by herald run
//! herald-python -n 4 script.py                   # the same, started for you
//! herald-python -n 4 -m pytest tests/            # rank 0 runs pytest
//! ```
//!
//! Rank 0 runs the program; every other rank serves it — imports, registered
//! callables and tasks arrive from the job — until rank 0's program ends. The
//! process exits with the program's status (rank 0) or 0 (other ranks, unless
//! rank 0 was lost), so `herald run` fails when the program does.
//!
//! The `herald` Python module ([`module`] and `pyhost/python/herald/`) gives the
//! program `import_global`, `register_global`, `launch` and `@herald.task`; the
//! executable exports the C ABI (`herald_*`), so a native library that Python
//! loads with `ctypes` registers its tasks on every node from its constructor.

mod claims;
mod cli;
mod executor;
mod interpreter;
mod job;
mod launch;
mod module;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;

fn main() -> ExitCode {
    // Keeps the herald_* functions in the binary for plugins (see build.rs).
    herald_host::keep_c_abi();
    init_logging();
    match run() {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("herald-python: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<u8> {
    let options = match cli::parse(std::env::args_os().skip(1))? {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            return Ok(0);
        }
        cli::Command::Version => {
            println!("herald-python {}", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        cli::Command::Run(options) => options,
    };
    let bootstrap = job::bootstrap()?;
    match (&bootstrap, options.nodes) {
        (None, Some(nodes)) if nodes > 1 => {
            return Err(launch::relaunch(
                nodes,
                &options.library_paths,
                &options.python_args,
            ));
        }
        (Some(job), Some(nodes)) if job.size != nodes => bail!(
            "-n {nodes} asks for a new job, but this process is rank {} of a job of {} \
             (started by a launcher): leave -n out",
            job.rank,
            job.size
        ),
        _ => {}
    }
    interpreter::start(&options.python_args)?;
    let node = job::start_runtime(bootstrap, &options.library_paths)?;
    Ok(if node.runtime.node_id() == 0 {
        job::coordinate(&node.runtime)
    } else {
        job::serve(&node)
    })
}

/// Set on rank 0 when it ends the job (other nodes learn it from their runtime).
static ENDING_JOB: AtomicBool = AtomicBool::new(false);

/// Stops the runtime's logging on rank 0 (see [`LogWriter`]).
pub(crate) fn mute_runtime_logs() {
    ENDING_JOB.store(true, Ordering::Relaxed);
}

/// Standard error until this node knows the job is over, then nothing: links
/// closing then are the job's teardown, not news.
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

/// Logs of the runtime (a registration nobody waits for failed, a node went
/// down, ...) go to stderr; `HERALD_LOG` sets the level.
fn init_logging() {
    let level = match std::env::var("HERALD_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(|| LogWriter)
        .with_target(false)
        .init();
}
