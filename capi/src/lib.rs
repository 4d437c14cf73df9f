//! `libherald.so`: the herald runtime as a shared library for programs in C, C++,
//! Fortran or any language with a C FFI.
//!
//! Every function of `include/herald.h` is exported from it, `herald_init` and
//! `herald_finalize` included (they start and end a job from a program that every
//! rank runs, SPMD), and every function of `include/herald_core.h`. The functions
//! are herald-host's C ABI ([`herald_host::ffi`]) and herald-core-c's
//! ([`herald_core_c`]): this crate only links them
//! into one library (a `cdylib` exports every `#[no_mangle]` function of the
//! crates it is made of). A program that links `libherald.so` makes them global
//! symbols of its process, so the plugins it loads still link nothing.
//! `build.rs` writes `pkgconfig/herald.pc` next to the library, so programs find
//! it with `pkg-config --cflags --libs herald`.
#![deny(missing_docs)]

// Both are linked in (and so exported) because they are used here.
pub use herald_core_c as core_api;
pub use herald_host::ffi;
