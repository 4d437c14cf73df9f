//! The embedded interpreter: started before this process joins the job (so no
//! Python work can arrive before it is ready), with the `herald` package
//! compiled into the binary, and the program run on rank 0.
//!
//! The interpreter is never finalized: worker threads may still be attached when
//! the job ends, and finalizing under them would crash. `herald._main.finish`
//! runs the `atexit` handlers and flushes the standard streams instead.

use std::ffi::{CString, OsString};
use std::path::PathBuf;

use anyhow::anyhow;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::module::_herald;

/// One module of the `herald` package: (name, is it a package, file name, source).
macro_rules! herald_module {
    ($name:literal, $file:literal, $is_package:literal) => {
        (
            $name,
            $is_package,
            concat!("herald/", $file),
            include_str!(concat!("../python/herald/", $file)),
        )
    };
}

/// The `herald` package, compiled into the binary.
const PACKAGE: &[(&str, bool, &str, &str)] = &[
    herald_module!("herald", "__init__.py", true),
    herald_module!("herald._errors", "_errors.py", false),
    herald_module!("herald._context", "_context.py", false),
    herald_module!("herald._imports", "_imports.py", false),
    herald_module!("herald._calls", "_calls.py", false),
    herald_module!("herald._remote", "_remote.py", false),
    herald_module!("herald._main", "_main.py", false),
];

/// Installs the finder that serves [`PACKAGE`] (it defines `install(sources)`).
const BOOTSTRAP: &str = include_str!("../python/bootstrap.py");

/// Starts Python with `_herald` built in and `herald` importable, and prepares
/// `sys.argv` and `sys.path` from the program's arguments (every rank does, so
/// modules beside the script import the same way everywhere).
pub(crate) fn start(python_args: &[OsString]) -> anyhow::Result<()> {
    pyo3::append_to_inittab!(_herald);
    Python::initialize();
    let problem = Python::attach(|py| {
        install_package(py)
            .and_then(|()| {
                let args = python_args.to_vec();
                let main = py.import("herald._main")?;
                main.call_method1("prepare", (args,))?
                    .extract::<Option<String>>()
            })
            .map_err(|error| report(py, "starting Python", error))
    })?;
    problem.map_or(Ok(()), |problem| Err(anyhow!(problem)))
}

/// The directories whose native libraries Python trusts already (its
/// site-packages and the active virtualenv's), from `herald._main.library_dirs`.
pub(crate) fn library_dirs() -> anyhow::Result<Vec<PathBuf>> {
    Python::attach(|py| {
        py.import("herald._main")
            .and_then(|main| main.call_method0("library_dirs"))
            .and_then(|dirs| dirs.extract::<Vec<PathBuf>>())
            .map_err(|error| report(py, "finding site-packages", error))
    })
}

/// Runs the program (rank 0) and returns its exit status.
pub(crate) fn run_main() -> u8 {
    Python::attach(|py| {
        let status = py
            .import("herald._main")
            .and_then(|main| main.call_method0("run"))
            .and_then(|status| status.extract::<i64>());
        match status {
            // As a shell sees it: the low byte.
            Ok(status) => (status & 0xff) as u8,
            Err(error) => {
                eprintln!("{}", report(py, "running the program", error));
                1
            }
        }
    })
}

/// Runs the `atexit` handlers and flushes the standard streams.
pub(crate) fn finish() {
    Python::attach(|py| {
        if let Err(error) = py
            .import("herald._main")
            .and_then(|main| main.call_method0("finish"))
        {
            eprintln!("{}", report(py, "finishing", error));
        }
    });
}

fn install_package(py: Python<'_>) -> PyResult<()> {
    let sources = PyDict::new(py);
    for (name, is_package, file, source) in PACKAGE {
        sources.set_item(
            *name,
            (*is_package, format!("herald-python/{file}"), *source),
        )?;
    }
    let code = c_string(BOOTSTRAP)?;
    let bootstrap = PyModule::from_code(
        py,
        &code,
        c"herald-python/bootstrap.py",
        c"_herald_bootstrap",
    )?;
    bootstrap.call_method1("install", (sources,))?;
    Ok(())
}

fn c_string(text: &str) -> PyResult<CString> {
    CString::new(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// Prints a Python error with its traceback and returns a one-line summary.
fn report(py: Python<'_>, doing: &str, error: PyErr) -> anyhow::Error {
    let summary = error.to_string();
    error.print(py);
    anyhow!("{doing}: {summary}")
}
