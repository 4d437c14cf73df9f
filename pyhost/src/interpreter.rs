//! The embedded interpreter: started before this process joins the job (so no
//! Python work can arrive before it is ready), with the `herald` package
//! compiled into the binary, and the program run on rank 0.
//!
//! It takes its standard library from `PYTHONHOME` when that is set, else from
//! the prefix of the Python it was built against (build.rs): never from
//! whichever `python3` happens to be first on PATH, which may be another
//! installation (Debian's, say) of the same version without the same modules.
//!
//! The interpreter is never finalized: worker threads may still be attached when
//! the job ends, and finalizing under them would crash. `herald._main.finish`
//! runs the `atexit` handlers and flushes the standard streams instead.

use std::ffi::{CString, OsString};
use std::path::Path;

use anyhow::{anyhow, bail};
use herald_python::module::{self, _herald};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `sys.base_prefix` of the Python this binary was built against (empty if unknown).
const BUILD_HOME: &str = env!("HERALD_PYTHON_HOME");
/// Its interpreter (empty if unknown): `sys.executable` here.
const BUILD_EXECUTABLE: &str = env!("HERALD_PYTHON_EXECUTABLE");

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
    herald_module!("herald._checked", "_checked.py", false),
    herald_module!("herald._imports", "_imports.py", false),
    herald_module!("herald._calls", "_calls.py", false),
    herald_module!("herald._remote", "_remote.py", false),
    herald_module!("herald._main", "_main.py", false),
    herald_module!("herald._spmd", "_spmd.py", false),
];

/// Installs the finder that serves [`PACKAGE`] (it defines `install(sources)`).
const BOOTSTRAP: &str = include_str!("../python/bootstrap.py");

/// Starts Python with `_herald` built in and `herald` importable, and prepares
/// `sys.argv` and `sys.path` from the program's arguments (every rank does, so
/// modules beside the script import the same way everywhere).
pub(crate) fn start(python_args: &[OsString]) -> anyhow::Result<()> {
    module::mark_embedded();
    pyo3::append_to_inittab!(_herald);
    initialize()?;
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

/// Sets `os.environ[name] = value` (so child processes get it too).
pub(crate) fn set_environment(name: &str, value: &str) -> anyhow::Result<()> {
    Python::attach(|py| {
        py.import("os")
            .and_then(|os| os.getattr("environ"))
            .and_then(|environ| environ.set_item(name, value))
            .map_err(|error| report(py, "setting the environment", error))
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

/// Starts the interpreter with its home and program name fixed (see the module
/// docs), without signal handlers (as `Py_InitializeEx(0)` would), and releases
/// the GIL, as `Python::initialize` does.
fn initialize() -> anyhow::Result<()> {
    let home = std::env::var_os("PYTHONHOME").filter(|home| !home.is_empty());
    let build_home = (home.is_none() && Path::new(BUILD_HOME).is_dir()).then_some(BUILD_HOME);
    let program = Path::new(BUILD_EXECUTABLE)
        .is_file()
        .then_some(BUILD_EXECUTABLE);
    let home = build_home.map(c_text).transpose()?;
    let program = program.map(c_text).transpose()?;
    // SAFETY: the config is initialised by PyConfig_InitPythonConfig before use
    // and cleared after Py_InitializeFromConfig copied it; the strings outlive
    // the calls that copy them; this runs once, on the main thread, before any
    // other Python call.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.parse_argv = 0;
        config.install_signal_handlers = 0;
        let mut status = ffi::PyStatus_Ok();
        if let Some(home) = &home {
            status = ffi::PyConfig_SetBytesString(&mut config, &mut config.home, home.as_ptr());
        }
        if ffi::PyStatus_Exception(status) == 0 {
            if let Some(program) = &program {
                status = ffi::PyConfig_SetBytesString(
                    &mut config,
                    &mut config.program_name,
                    program.as_ptr(),
                );
            }
        }
        if ffi::PyStatus_Exception(status) == 0 {
            status = ffi::Py_InitializeFromConfig(&config);
        }
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let message = if status.err_msg.is_null() {
                "unknown error".to_owned()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            let home = match (&home, std::env::var_os("PYTHONHOME")) {
                (Some(home), _) => home.to_string_lossy().into_owned(),
                (None, Some(set)) => format!(
                    "PYTHONHOME={}: unset it, or point it at the prefix of a Python of the \
                     version herald-python was built against ({BUILD_EXECUTABLE})",
                    set.to_string_lossy()
                ),
                (None, None) => "Python's default".to_owned(),
            };
            bail!("starting Python: {message} (home: {home})");
        }
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn c_text(text: &str) -> anyhow::Result<CString> {
    CString::new(text).map_err(|_| anyhow!("{text:?} contains a NUL byte"))
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
