//! Exports herald's C ABI (`herald_*`) from the `herald` binary, so that plugins it
//! loads resolve those symbols against it (they link nothing themselves).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=herald_*");
    println!("cargo:rerun-if-changed=build.rs");
}
