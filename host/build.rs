//! Exports the C ABI (`herald_*`) from this crate's test and bench executables, so
//! that plugins they load resolve those symbols against them.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
    println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=herald_*");
    println!("cargo:rustc-link-arg-benches=-Wl,--export-dynamic-symbol=herald_*");
    println!("cargo:rerun-if-changed=build.rs");
}
