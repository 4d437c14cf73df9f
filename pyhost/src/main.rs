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
//! The `herald` Python module (`herald_python::module` and `pyhost/python/herald/`) gives the
//! program `import_global`, `register_global`, `launch` and `@herald.task`; the
//! executable exports the C ABI (`herald_*`), so a native library that Python
//! loads with `ctypes` registers its tasks on every node from its constructor.

mod cli;
mod interpreter;
mod launch;
mod roles;

use std::process::ExitCode;

use anyhow::bail;
use herald_python::{job, logging};

fn main() -> ExitCode {
    // Keeps the herald_* functions in the binary for plugins (see build.rs).
    herald_host::keep_c_abi();
    logging::init();
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
    let launched = bootstrap.is_some();
    let node = job::start_runtime(bootstrap, &options.library_paths)?;
    if launched {
        // This process's children inherit the job's variables, but are not its node.
        interpreter::set_environment(
            herald_python::module::NODE_PID_ENV,
            &herald_python::module::node_marker(),
        )?;
    }
    Ok(if node.runtime.node_id() == 0 {
        roles::coordinate(&node.runtime)
    } else {
        roles::serve(&node)
    })
}
