//! `herald-python -n N ...`: become `herald run -n N -- herald-python ...`.
//!
//! Starting processes, choosing the coordinator's port, handing out a fresh
//! secret, prefixing output and collecting exit statuses is `herald run`'s job;
//! herald-python replaces itself with it (so signals and the exit status are
//! `herald run`'s own) rather than doing any of that a second time.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, anyhow};

/// Environment variable naming the `herald` binary; by default it is looked up
/// next to herald-python (both are built into the same target directory).
pub(crate) const HERALD_BIN_ENV: &str = "HERALD_BIN";

/// Replaces this process with `herald run -n NODES -- herald-python PYTHON_ARGS`.
/// Returns only if that cannot be done.
pub(crate) fn relaunch(
    nodes: u32,
    library_paths: &[PathBuf],
    python_args: &[OsString],
) -> anyhow::Error {
    let (herald, myself) = match (herald_binary(), std::env::current_exe()) {
        (Ok(herald), Ok(myself)) => (herald, myself),
        (Err(error), _) => return error,
        (_, Err(error)) => return anyhow!("cannot find herald-python's own path: {error}"),
    };
    let error = Command::new(&herald)
        .arg("run")
        .arg("-n")
        .arg(nodes.to_string())
        .arg("--")
        .arg(myself)
        .args(
            library_paths
                .iter()
                .flat_map(|dir| [OsString::from("--library-path"), dir.into()]),
        )
        .arg("--")
        .args(python_args)
        .exec();
    anyhow!("cannot start {}: {error}", herald.display())
}

fn herald_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(HERALD_BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let myself = std::env::current_exe().context("cannot find herald-python's own path")?;
    let beside = myself.with_file_name("herald");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(anyhow!(
        "-n needs the `herald` launcher, which is not at {} (build it with \
         `cargo build -p herald`, or set {HERALD_BIN_ENV}); or start the job yourself: \
         herald run -n N -- herald-python ...",
        beside.display()
    ))
}
