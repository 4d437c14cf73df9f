//! `herald_init` and `herald_finalize`: a program (C, C++, Fortran, any SPMD
//! program) that starts herald itself, the way it starts MPI.
//!
//! `herald_init` bootstraps from the environment exactly as `herald node` does
//! (`HERALD_RANK`/`HERALD_SIZE`, Open MPI, PMI, PMIx, Slurm; `HERALD_COORDINATOR`,
//! `HERALD_SECRET` or `HERALD_SECRET_FILE`, `HERALD_BIND`), forms the links and
//! starts the runtime; with no launcher in the environment the process is a job
//! of one node. `herald_finalize` ends the job collectively
//! ([`Runtime::finalize`]). A process joins one job: a second `herald_init`, or
//! one after `herald_finalize`, is refused. Under an MPI launcher, in a build
//! with the `mpi` feature (or with `HERALD_TRANSPORT=mpi`), `herald_init` joins
//! over MPI instead (see `herald_init_comm`).

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use herald_tcp::{BootstrapError, Mesh, bootstrap_from_env};

use super::{
    HERALD_ERR_INVALID, HERALD_ERR_NO_RUNTIME, HERALD_ERR_WOULD_DEADLOCK, LAST_ERROR, code_of,
    no_runtime,
};
use crate::{
    HostConfig, HostError, Runtime, TransportChoice, TransportKind, global, install_global,
    uninstall_global,
};

/// Environment variable choosing how much herald logs to standard error in a
/// program started with `herald_init`: `error`, `warn` (default), `info`, `debug`.
pub const LOG_ENV: &str = "HERALD_LOG";

/// Where this process stands with `herald_init`.
enum Embedded {
    /// `herald_init` was never called.
    Never,
    /// Between `herald_init` and `herald_finalize`.
    Running(Runtime),
    /// `herald_finalize` was called.
    Finalized,
}

static EMBEDDED: Mutex<Embedded> = Mutex::new(Embedded::Never);

/// Set once `herald_finalize` has stopped the runtime, so that a later call says
/// so. Apart from `EMBEDDED`, whose lock `herald_finalize` holds while the job
/// ends (and a hook running meanwhile may call herald).
static FINALIZED: AtomicBool = AtomicBool::new(false);

/// Whether `herald_finalize` has ended this process's runtime.
pub(crate) fn finalized() -> bool {
    FINALIZED.load(Ordering::Acquire)
}

/// Joins the job this process was started in (collective: every rank calls it)
/// and installs its runtime for the C ABI. `argc` and `argv` may be NULL; herald
/// reads no arguments, and leaves them as they are. Returns `HERALD_OK`, or an
/// error code whose reason is printed to standard error and reported by
/// `herald_wait(0, ...)` on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn herald_init(argc: *mut c_int, argv: *mut *mut *mut c_char) -> c_int {
    // Taken for symmetry with MPI_Init; never dereferenced.
    let _ = (argc, argv);
    init_with("herald_init", start)
}

/// Starts the runtime with `start` unless this process has one already, and
/// installs it (herald_init and herald_init_comm).
pub(super) fn init_with(name: &str, start: impl FnOnce() -> Result<Runtime, HostError>) -> c_int {
    // Refused before the lock, which herald_finalize on the main thread may hold.
    if let Some(reason) = crate::context::user_code_refusal() {
        return failed(name, HERALD_ERR_INVALID, reason);
    }
    // A fork of a process with a runtime: its copy of the state says Running,
    // and the job is the parent's.
    if crate::forked_from().is_some() {
        return failed(name, HERALD_ERR_INVALID, no_runtime().to_string());
    }
    let mut embedded = EMBEDDED.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = match &*embedded {
        Embedded::Running(_) => Err((
            HERALD_ERR_INVALID,
            format!(
                "{name}: herald was already initialised in this process; initialise it once, at start"
            ),
        )),
        Embedded::Finalized => Err((
            HERALD_ERR_INVALID,
            format!("{name} after herald_finalize: a process joins one job, once"),
        )),
        Embedded::Never if global().is_some() => Err((
            HERALD_ERR_INVALID,
            format!(
                "a herald runtime is already running in this process (its host started it: \
                 herald node, herald-python or a Rust program); do not call {name} there"
            ),
        )),
        Embedded::Never => start().map_err(|e| (code_of(&e), e.to_string())),
    };
    match outcome {
        Ok(runtime) => {
            *embedded = Embedded::Running(runtime);
            super::HERALD_OK
        }
        Err((code, text)) => failed(name, code, text),
    }
}

/// Ends the job (collective: every rank calls it, from a thread that runs no
/// herald callback or task). Returns once every rank has called it, after this
/// rank's own registrations and launches are answered; the runtime is stopped
/// and removed, so later herald calls return `HERALD_ERR_NO_RUNTIME`.
#[unsafe(no_mangle)]
pub extern "C" fn herald_finalize() -> c_int {
    // Refused before the lock: the main thread may hold it inside
    // herald_finalize, waiting for the end of the job, which this callback or
    // task holds up.
    let outcome = match crate::context::user_code_refusal() {
        Some(reason) => Err((HERALD_ERR_WOULD_DEADLOCK, reason)),
        None => finalize_embedded(),
    };
    match outcome {
        Ok(()) => super::HERALD_OK,
        Err((code, text)) => failed("herald_finalize", code, text),
    }
}

/// `name` failed with `code`: says why on stderr (naming the function once:
/// many texts already start with its name) and keeps the reason for
/// `herald_wait(0, ...)`. Returns `code`.
fn failed(name: &str, code: c_int, text: String) -> c_int {
    if text.starts_with(name) {
        eprintln!("{text}");
    } else {
        eprintln!("{name}: {text}");
    }
    LAST_ERROR.with(|e| *e.borrow_mut() = Some((code, text)));
    code
}

/// herald_finalize on a thread of the program.
fn finalize_embedded() -> Result<(), (c_int, String)> {
    // A fork of the node must not end the parent's job over the parent's links.
    if crate::forked_from().is_some() {
        return Err((HERALD_ERR_NO_RUNTIME, no_runtime().to_string()));
    }
    let mut embedded = EMBEDDED.lock().unwrap_or_else(PoisonError::into_inner);
    match std::mem::replace(&mut *embedded, Embedded::Finalized) {
        Embedded::Running(runtime) => {
            let outcome = runtime.finalize();
            if matches!(outcome, Err(HostError::WouldDeadlock { .. })) {
                // Nothing was stopped: the caller may finalize from a proper place.
                *embedded = Embedded::Running(runtime);
            } else {
                FINALIZED.store(true, Ordering::Release);
                uninstall_global();
            }
            outcome.map_err(|e| (code_of(&e), e.to_string()))
        }
        Embedded::Never => {
            *embedded = Embedded::Never;
            Err((
                HERALD_ERR_NO_RUNTIME,
                "herald_finalize without herald_init: there is no job to end".to_owned(),
            ))
        }
        Embedded::Finalized => Err((
            HERALD_ERR_NO_RUNTIME,
            "herald_finalize was already called in this process".to_owned(),
        )),
    }
}

/// Joins the job the environment describes, or starts a job of one node, and
/// installs its runtime for the C ABI.
fn start() -> Result<Runtime, HostError> {
    init_logging();
    // HERALD_TRANSPORT, or MPI under an MPI launcher in a build with MPI support.
    if TransportChoice::from_env()?.resolve()? == TransportKind::Mpi {
        return start_mpi();
    }
    let mut config = HostConfig::default();
    let join = std::env::var(crate::JOIN_ENV)
        .ok()
        .filter(|address| !address.trim().is_empty());
    let env = |name: &str| std::env::var(name).ok();
    let booted = match &join {
        Some(address) => crate::join_bootstrap(address, &env),
        None => bootstrap_from_env(&env),
    };
    let boot = match booted {
        Ok(boot) => boot,
        Err(BootstrapError::NoRank) => {
            let runtime = Runtime::single_process(config)?;
            install_global(&runtime);
            return Ok(runtime);
        }
        Err(error) => return Err(HostError::Start(error.to_string())),
    };
    let mut mesh_config = boot
        .mesh_config()
        .map_err(|e| HostError::Start(format!("rank {} of {}: {e}", boot.rank, boot.size)))?;
    // Every link checks that both ends use the same protocol version, fan-out
    // and frame limit.
    config.agree_on(&mut mesh_config);
    let formed = match &join {
        Some(address) => Mesh::join(mesh_config)
            .map_err(|e| HostError::Start(format!("cannot join the job through {address}: {e}"))),
        None => Mesh::establish(mesh_config).map_err(|e| {
            HostError::Start(format!(
                "rank {} of {}: the job did not form: {e}",
                boot.rank, boot.size
            ))
        }),
    };
    let (mesh, events) = formed?;
    // Another node may send work as soon as the links are up; a library it makes
    // this node load calls the C ABI from its constructor, which needs the runtime
    // installed. So the frames wait in their channel until it is.
    config.hold_events = true;
    let runtime = match join {
        Some(_) => Runtime::start_joining(mesh, events, config, Vec::new())?,
        None => Runtime::start(mesh, events, config)?,
    };
    install_global(&runtime);
    runtime.open_events();
    // A joiner replays the job's log (the runtime installed: constructors of the
    // libraries it loads call the C ABI) before herald_init returns.
    if let Err(error) = runtime.wait_admitted() {
        uninstall_global();
        return Err(error);
    }
    tracing::info!(
        "herald_init: rank {} of {}, bootstrap from {:?}",
        runtime.node_id(),
        runtime.num_nodes(),
        boot.source
    );
    Ok(runtime)
}

/// The level `HERALD_LOG` asks for (error, warn, info, debug, trace); warn when
/// it is unset or unknown.
pub fn log_level() -> tracing::Level {
    match std::env::var(LOG_ENV).as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    }
}

#[cfg(feature = "mpi")]
fn start_mpi() -> Result<Runtime, HostError> {
    super::init_mpi::start_mpi(None)
}

#[cfg(not(feature = "mpi"))]
fn start_mpi() -> Result<Runtime, HostError> {
    // `resolve` never chooses MPI in a build without it.
    Err(HostError::Start(
        "this herald was built without MPI support".into(),
    ))
}

/// Herald's warnings go to standard error (more with `HERALD_LOG`), unless the
/// program installed a `tracing` subscriber of its own.
pub(super) fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(log_level())
        .with_writer(std::io::stderr)
        .try_init();
}
