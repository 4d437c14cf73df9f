//! Links herald-python so that it runs, and serves plugins, with no environment set up:
//! * an rpath to the directory of the shared libpython it embeds, so the binary
//!   starts without `LD_LIBRARY_PATH`;
//! * the prefix and executable of the Python it was built against
//!   (`HERALD_PYTHON_HOME`, `HERALD_PYTHON_EXECUTABLE` at compile time), so the
//!   embedded interpreter finds its own standard library whatever `python3` is
//!   first on PATH (src/interpreter.rs);
//! * the C ABI (`herald_*`) exported from the executable, so that a library loaded
//!   by Python (`ctypes.CDLL`) resolves its `herald_*` calls against this process.
//!   `main` calls `herald_host::keep_c_abi()` so the linker keeps those functions.
//!   (The extension module exports them from the cdylib; Python re-opens it with
//!   RTLD_GLOBAL, see python/herald/__init__.py.)
use std::process::Command;

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=herald_*");
    println!("cargo:rustc-link-arg-cdylib=-Wl,--export-dynamic-symbol=herald_*");
    let (home, executable) = python_location().unwrap_or_default();
    println!("cargo:rustc-env=HERALD_PYTHON_HOME={home}");
    println!("cargo:rustc-env=HERALD_PYTHON_EXECUTABLE={executable}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    // The `herald` Python package is compiled into the binary (src/interpreter.rs).
    println!("cargo:rerun-if-changed=python");
}

/// `sys.base_prefix` and the base interpreter's executable of the Python that
/// pyo3 builds against, asked of that interpreter; None if it cannot be run
/// (herald-python then lets Python search as it always does).
fn python_location() -> Option<(String, String)> {
    let python = pyo3_build_config::get().executable()?.to_owned();
    let output = Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.base_prefix); \
             print(getattr(sys, '_base_executable', None) or sys.executable)",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let mut lines = text.lines();
    Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
}
