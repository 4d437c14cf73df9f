//! Links herald-python so that it runs, and serves plugins, with no environment set up:
//! * an rpath to the directory of the shared libpython it embeds, so the binary
//!   starts without `LD_LIBRARY_PATH`;
//! * the C ABI (`herald_*`) exported from the executable, so that a library loaded
//!   by Python (`ctypes.CDLL`) resolves its `herald_*` calls against this process.
//!   `main` calls `herald_host::keep_c_abi()` so the linker keeps those functions.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=herald_*");
    println!("cargo:rerun-if-changed=build.rs");
    // The `herald` Python package is compiled into the binary (src/interpreter.rs).
    println!("cargo:rerun-if-changed=python");
}
