//! A herald plugin in Rust, built as a `cdylib` that links nothing of herald: it
//! declares the `herald_*` C ABI itself, and those symbols resolve against the
//! executable that loads it (`herald node`), like a C plugin's.
//!
//! Its constructor registers `rust_plugin_register` globally; that callback runs
//! once on every node and registers the task `rust.fibonacci` there.
//!
//! ```text
//! cargo build --release -p herald-example-rust-plugin
//! herald run -n 4 -- target/release/herald node \
//!     --load target/release/libherald_example_rust_plugin.so \
//!     --main target/release/libherald_example_rust_plugin.so:rust_plugin_main \
//!     --library-path target/release
//! ```

use std::ffi::{c_char, c_int, c_void};

type Callback = unsafe extern "C" fn(*const c_void, usize) -> c_int;
type TaskFn = unsafe extern "C" fn(*const c_void, usize, *mut c_void) -> c_int;

unsafe extern "C" {
    fn herald_register_on_load(
        callback: Callback,
        args: *const c_void,
        len: usize,
        tag: *const c_char,
    );
    fn herald_register_task(name: *const c_char, function: TaskFn) -> u64;
    fn herald_wait(handle: u64, error: *mut c_char, error_len: usize) -> c_int;
    fn herald_release(handle: u64);
    fn herald_launch(node: u32, task: *const c_char, args: *const c_void, len: usize) -> u64;
    fn herald_task_wait(
        handle: u64,
        result: *mut *mut c_void,
        result_len: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn herald_free(pointer: *mut c_void);
    fn herald_output_write(out: *mut c_void, data: *const c_void, len: usize) -> c_int;
    fn herald_set_error(message: *const c_char);
    fn herald_node_id() -> u32;
    fn herald_node_count() -> u32;
}

/// Runs at load time, like C's `__attribute__((constructor))`.
#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    // SAFETY: the callback is an exported function of this library; the tag is a
    // NUL-terminated static string; no argument bytes.
    unsafe {
        herald_register_on_load(
            rust_plugin_register,
            std::ptr::null(),
            0,
            c"rust-plugin-v1".as_ptr(),
        )
    };
}

/// Registers this plugin's tasks on the node it runs on.
///
/// # Safety
/// Called by herald as a registration callback; it reads no argument bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_plugin_register(_args: *const c_void, _len: usize) -> c_int {
    // SAFETY: a static C string and an exported task function of this library.
    let handle = unsafe { herald_register_task(c"rust.fibonacci".as_ptr(), rust_fibonacci) };
    if handle != 0 {
        // Nothing here waits for it (the enclosing registration does): release it.
        // SAFETY: a handle herald returned, released once.
        unsafe { herald_release(handle) };
        return 0;
    }
    let mut error = [0 as c_char; 256];
    // SAFETY: `error` is valid for its length; herald writes a NUL-terminated
    // reason for the failed call into it, which herald_set_error copies.
    unsafe {
        herald_wait(0, error.as_mut_ptr(), error.len());
        herald_set_error(error.as_ptr());
    }
    1
}

/// Task `rust.fibonacci`: argument is a decimal n (at most 93), result F(n) in decimal.
///
/// # Safety
/// Called by herald with `args` valid for `len` bytes and its output handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rust_fibonacci(
    args: *const c_void,
    len: usize,
    out: *mut c_void,
) -> c_int {
    let bytes = if len == 0 {
        &[][..]
    } else {
        // SAFETY: herald passes argument bytes valid for `len`.
        unsafe { std::slice::from_raw_parts(args.cast::<u8>(), len) }
    };
    let n = match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(n) if n <= 93 => n,
        _ => {
            // SAFETY: a static C string.
            unsafe { herald_set_error(c"rust.fibonacci wants a decimal n <= 93".as_ptr()) };
            return 1;
        }
    };
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    let text = a.to_string();
    // SAFETY: `out` is the handle herald passed; `text` is valid for its length.
    unsafe { herald_output_write(out, text.as_ptr().cast(), text.len()) }
}

/// A top-level function for `herald node --main`: F(50) on every node.
#[unsafe(no_mangle)]
pub extern "C" fn rust_plugin_main() -> c_int {
    // SAFETY: plain calls into the C ABI with valid pointers and lengths.
    unsafe {
        let mut failures = 0;
        for node in 0..herald_node_count() {
            let handle = herald_launch(node, c"rust.fibonacci".as_ptr(), b"50".as_ptr().cast(), 2);
            let mut result: *mut c_void = std::ptr::null_mut();
            let mut result_len = 0usize;
            let mut error = [0 as c_char; 512];
            let rc = herald_task_wait(
                handle,
                &mut result,
                &mut result_len,
                error.as_mut_ptr(),
                error.len(),
            );
            if rc == 0 {
                let bytes = std::slice::from_raw_parts(result.cast::<u8>(), result_len);
                println!(
                    "node {node}: rust.fibonacci(50) = {}",
                    String::from_utf8_lossy(bytes)
                );
                herald_free(result);
            } else {
                let text = std::ffi::CStr::from_ptr(error.as_ptr()).to_string_lossy();
                println!("node {node}: rust.fibonacci FAILED: {text}");
                failures += 1;
            }
        }
        println!(
            "rust plugin main on node {}: {}",
            herald_node_id(),
            if failures == 0 { "ok" } else { "FAILED" }
        );
        if failures == 0 { 0 } else { 1 }
    }
}
