//! The C ABI declared in `include/herald.h`, over the process-global runtime.
//!
//! Plugins link nothing: these symbols resolve against the process that loads
//! them: an executable that exports them (`-Wl,--export-dynamic-symbol=herald_*`)
//! and keeps them (call [`keep_c_abi`] from the binary), or `libherald.so` (the
//! `herald-c` crate), where a program starts the runtime with `herald_init`
//! (module `init`). Every function checks its pointers; none unwinds into C.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::code::{TaskCode, TaskVariant};
use crate::error::HostError;
use crate::{RegistrationHandle, Runtime, global};

mod init;
#[cfg(feature = "mpi")]
mod init_mpi;
pub use init::{LOG_ENV, herald_finalize, herald_init, log_level};
#[cfg(feature = "mpi")]
pub use init_mpi::herald_init_comm;

/// Success.
pub const HERALD_OK: c_int = 0;
/// The registration or task failed (on some node), or the call could not be done.
pub const HERALD_ERR_FAILED: c_int = 1;
/// Waiting here could never end: inside a library load, inside the invocation
/// the registration waits for, or closing a cycle of invocations of this node
/// that wait for each other (see `herald_wait` in `herald.h`).
pub const HERALD_ERR_WOULD_DEADLOCK: c_int = 2;
/// A bad argument: null pointer, invalid UTF-8, unknown handle.
pub const HERALD_ERR_INVALID: c_int = 3;
/// No herald runtime is running in this process.
pub const HERALD_ERR_NO_RUNTIME: c_int = 4;
/// The runtime has stopped.
pub const HERALD_ERR_STOPPED: c_int = 5;

/// Result bytes of a native task, written with `herald_output_write`. The task
/// gets an opaque `herald_output *` that is only a number: `herald_output_write`
/// looks it up among the outputs of running tasks, so a pointer kept past the
/// task's return (or made up) is refused instead of writing to freed memory.
pub(crate) struct TaskOutput {
    /// Its `herald_output *`; never reused.
    id: usize,
    /// Shared with writers in flight (a helper thread of the task, say).
    bytes: OutputBytes,
}

type OutputBytes = Arc<Mutex<Vec<u8>>>;

/// The outputs of the tasks running now, by id.
static OUTPUTS: Mutex<BTreeMap<usize, OutputBytes>> = Mutex::new(BTreeMap::new());
/// The next output's id (0 would be NULL).
static NEXT_OUTPUT: AtomicUsize = AtomicUsize::new(1);

impl TaskOutput {
    /// An output open to `herald_output_write` until `into_bytes` (or drop).
    pub(crate) fn open() -> TaskOutput {
        let output = TaskOutput {
            id: NEXT_OUTPUT.fetch_add(1, Ordering::Relaxed),
            bytes: OutputBytes::default(),
        };
        outputs().insert(output.id, Arc::clone(&output.bytes));
        output
    }

    /// The `herald_output *` the task is given.
    pub(crate) fn pointer(&self) -> *mut c_void {
        std::ptr::without_provenance_mut(self.id)
    }

    /// Closes the output (later writes are refused) and takes its bytes, once
    /// any write in flight has finished.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        outputs().remove(&self.id);
        std::mem::take(&mut *self.bytes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for TaskOutput {
    fn drop(&mut self) {
        outputs().remove(&self.id);
    }
}

fn outputs() -> std::sync::MutexGuard<'static, BTreeMap<usize, OutputBytes>> {
    // Each operation on the map is one call: consistent after any panic.
    OUTPUTS.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Text a callback or task gave with `herald_set_error` before failing.
    static CALLBACK_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Why the last call on this thread that returned handle 0 failed.
    static LAST_ERROR: RefCell<Option<(c_int, String)>> = const { RefCell::new(None) };
}

pub(crate) fn clear_callback_error() {
    CALLBACK_ERROR.with(|e| e.borrow_mut().take());
}

pub(crate) fn take_callback_error() -> Option<String> {
    CALLBACK_ERROR.with(|e| e.borrow_mut().take())
}

/// Registers `callback` (an exported function of a shared library) to run once on
/// every node with a copy of `args`; `tag` (may be NULL) is the dedup key.
/// Returns a handle, or 0 (then `herald_wait(0, ...)` tells why).
///
/// # Safety
/// `args` must be valid for `args_len` bytes (or NULL with 0); `tag` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_register_global(
    callback: Option<unsafe extern "C" fn(*const c_void, usize) -> c_int>,
    args: *const c_void,
    args_len: usize,
    tag: *const c_char,
) -> u64 {
    handle_or_zero(|| {
        let runtime = runtime()?;
        let callback = callback.ok_or_else(|| invalid("callback is NULL"))?;
        // SAFETY: the caller guarantees both pointers per the contract above.
        let (args, tag) = unsafe { (bytes(args, args_len)?, optional_str(tag)?) };
        let handle = runtime.register_callback(callback as *const c_void, args, tag)?;
        Ok(handle.into_raw())
    })
}

/// Like `herald_register_global`, for load-time constructors: nothing to wait for
/// or release. During `herald_load_library` (or `herald node --load`) the load
/// waits for it; failures elsewhere are logged.
///
/// # Safety
/// As `herald_register_global`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_register_on_load(
    callback: Option<unsafe extern "C" fn(*const c_void, usize) -> c_int>,
    args: *const c_void,
    args_len: usize,
    tag: *const c_char,
) {
    // SAFETY: same contract as herald_register_global.
    let handle = unsafe { herald_register_global(callback, args, args_len, tag) };
    let refused = (handle == 0).then(|| LAST_ERROR.with(|e| e.borrow().clone()));
    let refused = refused.flatten().map(|(_, text)| text);
    if let Some(error) = &refused {
        tracing::error!(%error, "herald: registration from a constructor failed");
    }
    // Waited for by the load around it, or kept for the next safe point.
    if let Some(runtime) = global() {
        runtime.adopt_on_load(handle, refused);
    }
}

/// Waits for a registration handle. Returns `HERALD_OK`, or an error code with the
/// reason copied (NUL-terminated, truncated) into `error` if it is not NULL;
/// `HERALD_ERR_WOULD_DEADLOCK` where the wait could never end (see `herald_wait`
/// in `include/herald.h`).
///
/// # Safety
/// `error` NULL or valid for `error_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_wait(handle: u64, error: *mut c_char, error_len: usize) -> c_int {
    let outcome = if handle == 0 {
        Err(why_handle_is_zero())
    } else {
        runtime()
            .and_then(|rt| rt.shared().wait_registration(handle, None))
            .map(|_| ())
            .map_err(|e| (code_of(&e), e.to_string()))
    };
    // SAFETY: the caller guarantees `error` per the contract above.
    unsafe { report(outcome, error, error_len) }
}

/// Releases a registration handle (its result is freed once nobody holds it).
#[unsafe(no_mangle)]
pub extern "C" fn herald_release(handle: u64) {
    if let Some(runtime) = global() {
        RegistrationHandle::release_raw(&runtime, handle);
    }
}

/// Registers task `name` as the exported function `function` (named with `dladdr`),
/// lazily, on every node. Returns the handle of its batch, or 0.
///
/// # Safety
/// `name` must be a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_register_task(
    name: *const c_char,
    function: Option<unsafe extern "C" fn(*const c_void, usize, *mut c_void) -> c_int>,
) -> u64 {
    handle_or_zero(|| {
        let runtime = runtime()?;
        // SAFETY: the caller guarantees `name` is a C string.
        let name = unsafe { required_str(name, "name")? };
        let function = function.ok_or_else(|| invalid("task function is NULL"))?;
        let handle = runtime.register_task_function(name, function as *const c_void)?;
        Ok(handle.into_raw())
    })
}

/// Registers task `name` as `symbol` of the library at `library`, lazily: the
/// library is loaded on a node only when the task first runs there.
///
/// # Safety
/// All three must be C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_register_task_symbol(
    name: *const c_char,
    library: *const c_char,
    symbol: *const c_char,
) -> u64 {
    handle_or_zero(|| {
        let runtime = runtime()?;
        // SAFETY: the caller guarantees the three are C strings.
        let (name, library, symbol) = unsafe {
            (
                required_str(name, "name")?,
                required_str(library, "library")?,
                required_str(symbol, "symbol")?,
            )
        };
        let library = runtime.library_ref(library)?;
        let variant = TaskVariant {
            name,
            code: TaskCode::Native {
                library: Arc::clone(&library),
                symbol,
            },
        };
        Ok(runtime.register_task(variant)?.into_raw())
    })
}

/// Registers task `name` as the exported function `function` on this node only:
/// no other node hears of it. Returns `HERALD_OK` or an error code.
///
/// # Safety
/// `name` must be a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_register_task_local(
    name: *const c_char,
    function: Option<unsafe extern "C" fn(*const c_void, usize, *mut c_void) -> c_int>,
) -> c_int {
    let outcome = runtime()
        .and_then(|runtime| {
            // SAFETY: the caller guarantees `name` is a C string.
            let name = unsafe { required_str(name, "name")? };
            let function = function.ok_or_else(|| invalid("task function is NULL"))?;
            runtime.register_task_local(name, function as *const c_void)
        })
        .map_err(|e| (code_of(&e), e.to_string()));
    if let Err(error) = &outcome {
        LAST_ERROR.with(|e| *e.borrow_mut() = Some(error.clone()));
    }
    // SAFETY: no error buffer is passed (NULL, 0).
    unsafe { report(outcome, std::ptr::null_mut(), 0) }
}

/// Launches `task` on `node` with a copy of `args`. Returns a task handle for
/// `herald_task_wait`, or 0.
///
/// # Safety
/// `task` a C string; `args` valid for `args_len` bytes (or NULL with 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_launch(
    node: u32,
    task: *const c_char,
    args: *const c_void,
    args_len: usize,
) -> u64 {
    handle_or_zero(|| {
        let runtime = runtime()?;
        // SAFETY: the caller guarantees both per the contract above.
        let (task, args) = unsafe { (required_str(task, "task")?, bytes(args, args_len)?) };
        Ok(runtime.launch(node, task, args).into_raw())
    })
}

/// Waits for a task and releases its handle. On `HERALD_OK`, `*result` holds a
/// `malloc`ed copy of the result bytes (free it with `herald_free` or `free`;
/// NULL when empty) and `*result_len` their length.
///
/// # Safety
/// `result` and `result_len` NULL or valid; `error` NULL or valid for `error_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_task_wait(
    handle: u64,
    result: *mut *mut c_void,
    result_len: *mut usize,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    let outcome = if handle == 0 {
        Err(why_handle_is_zero())
    } else {
        runtime()
            .and_then(|rt| {
                let shared = rt.shared();
                let outcome = shared.wait_task(handle, None);
                shared.release_task(handle);
                outcome
            })
            .map_err(|e| (code_of(&e), e.to_string()))
    };
    let outcome = outcome.and_then(|bytes| {
        // SAFETY: the caller guarantees the out-pointers per the contract above.
        unsafe { hand_out(&bytes, result, result_len) }
    });
    // SAFETY: the caller guarantees `error` per the contract above.
    unsafe { report(outcome, error, error_len) }
}

/// Releases a task handle without waiting for the task (fire and forget): the
/// task still runs; its result is dropped when it arrives.
#[unsafe(no_mangle)]
pub extern "C" fn herald_task_release(handle: u64) {
    if let Ok(runtime) = runtime() {
        runtime.shared().release_task(handle);
    }
}

/// Frees memory herald handed out (task results).
///
/// # Safety
/// `pointer` must come from herald (or be NULL), and be freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_free(pointer: *mut c_void) {
    // SAFETY: herald allocates what it hands out with malloc.
    unsafe { libc::free(pointer) }
}

/// Appends `len` bytes to a task's result. Returns `HERALD_OK` or
/// `HERALD_ERR_INVALID` (also for an `out` that is not a running task's: kept
/// past its return, or made up).
///
/// # Safety
/// `data` valid for `len` bytes (`out` is only looked up, never read).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_output_write(
    out: *mut c_void,
    data: *const c_void,
    len: usize,
) -> c_int {
    // No buffer is longer than isize::MAX bytes (a negative length converted to size_t).
    if out.is_null() || (data.is_null() && len > 0) || len > isize::MAX as usize {
        return HERALD_ERR_INVALID;
    }
    let Some(bytes) = outputs().get(&out.addr()).cloned() else {
        return HERALD_ERR_INVALID;
    };
    if len > 0 {
        // SAFETY: the caller guarantees `data` is valid for `len` bytes.
        let data = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
    }
    HERALD_OK
}

/// Sets the error text reported when the running callback or task returns non-zero.
///
/// # Safety
/// `message` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_set_error(message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: the caller guarantees a C string.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    CALLBACK_ERROR.with(|e| *e.borrow_mut() = Some(text));
}

/// This node's id, or `UINT32_MAX` with no runtime.
#[unsafe(no_mangle)]
pub extern "C" fn herald_node_id() -> u32 {
    global().map_or(u32::MAX, |rt| rt.node_id())
}

/// Number of node ids in this node's current view, or 0 with no runtime.
#[unsafe(no_mangle)]
pub extern "C" fn herald_node_count() -> u32 {
    global().map_or(0, |rt| rt.num_nodes())
}

/// A view-change callback of the C ABI:
/// `void fn(uint64_t epoch, uint32_t nodes, uint32_t members, void *context)`.
pub type HeraldViewFn = unsafe extern "C" fn(u64, u32, u32, *mut c_void);

/// Calls `function(epoch, nodes, members, context)` on every later change of
/// this node's view. `HERALD_OK`, `HERALD_ERR_INVALID` for a null function, or
/// `HERALD_ERR_NO_RUNTIME`.
#[unsafe(no_mangle)]
pub extern "C" fn herald_on_view_change(
    function: Option<HeraldViewFn>,
    context: *mut c_void,
) -> c_int {
    let Some(function) = function else {
        return HERALD_ERR_INVALID;
    };
    let Some(runtime) = global() else {
        return HERALD_ERR_NO_RUNTIME;
    };
    // The caller owns `context` and keeps it valid while the runtime runs; it
    // travels as an address so the hook is Send.
    let context = context as usize;
    runtime.on_view_change(Arc::new(move |view| {
        // SAFETY: `function` is the caller's C function with this signature, and
        // `context` is what the caller asked to be passed back.
        unsafe {
            function(
                view.epoch,
                view.size,
                view.members(),
                context as *mut c_void,
            )
        }
    }));
    HERALD_OK
}

/// Loads a library on this node (from the allowed directories); its constructors'
/// global registrations are awaited before returning. `HERALD_OK` or an error code
/// with the reason in `error`. From a constructor it loads nothing and returns
/// `HERALD_ERR_WOULD_DEADLOCK` (see [`Runtime::load_library`]).
///
/// # Safety
/// `path` a C string; `error` NULL or valid for `error_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_load_library(
    path: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    let outcome = runtime()
        .and_then(|rt| {
            // SAFETY: the caller guarantees a C string.
            let path = unsafe { required_str(path, "path")? };
            rt.load_library(path).map(|_| ())
        })
        .map_err(|e| (code_of(&e), e.to_string()));
    // SAFETY: the caller guarantees `error` per the contract above.
    unsafe { report(outcome, error, error_len) }
}

/// Keeps every C ABI function in a binary (or `cdylib`) that depends on this
/// crate: call it from `main` (an unreferenced rlib function may be dropped by the
/// linker, and then plugins cannot find it).
pub fn keep_c_abi() -> usize {
    let exports: [*const (); 20] = [
        herald_init as *const (),
        herald_finalize as *const (),
        herald_register_global as *const (),
        herald_register_on_load as *const (),
        herald_wait as *const (),
        herald_release as *const (),
        herald_register_task as *const (),
        herald_register_task_symbol as *const (),
        herald_register_task_local as *const (),
        herald_launch as *const (),
        herald_task_wait as *const (),
        herald_task_release as *const (),
        herald_free as *const (),
        herald_output_write as *const (),
        herald_set_error as *const (),
        herald_node_id as *const (),
        herald_node_count as *const (),
        herald_on_view_change as *const (),
        herald_load_library as *const (),
        keep_c_abi as *const (),
    ];
    std::hint::black_box(&exports).len()
}

/// Why the last call on this thread returned handle 0: what waiting on handle 0
/// reports.
fn why_handle_is_zero() -> (c_int, String) {
    LAST_ERROR
        .with(|e| e.borrow().clone())
        .unwrap_or((HERALD_ERR_INVALID, "handle 0 is not a handle".into()))
}

fn runtime() -> Result<Runtime, HostError> {
    global().ok_or_else(no_runtime)
}

/// Why there is no runtime here: none was started, `herald_finalize` ended it,
/// or this process is a fork of the one that started it.
pub(crate) fn no_runtime() -> HostError {
    match crate::forked_from() {
        Some(node) => HostError::Forked {
            pid: std::process::id(),
            node,
        },
        None if init::finalized() => HostError::Finalized,
        None => HostError::NoRuntime,
    }
}

fn invalid(text: &str) -> HostError {
    HostError::InvalidArgument(text.to_owned())
}

fn code_of(error: &HostError) -> c_int {
    match error {
        HostError::WouldDeadlock { .. } => HERALD_ERR_WOULD_DEADLOCK,
        HostError::NoRuntime | HostError::Finalized | HostError::Forked { .. } => {
            HERALD_ERR_NO_RUNTIME
        }
        HostError::Stopped | HostError::Fenced { .. } => HERALD_ERR_STOPPED,
        HostError::InvalidArgument(_) | HostError::UnknownHandle(_) => HERALD_ERR_INVALID,
        _ => HERALD_ERR_FAILED,
    }
}

fn handle_or_zero(call: impl FnOnce() -> Result<u64, HostError>) -> u64 {
    match call() {
        Ok(handle) => handle,
        Err(error) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = Some((code_of(&error), error.to_string())));
            0
        }
    }
}

/// # Safety
/// `pointer` valid for `len` bytes, or NULL with `len` 0.
unsafe fn bytes(pointer: *const c_void, len: usize) -> Result<Vec<u8>, HostError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if pointer.is_null() {
        return Err(invalid("argument pointer is NULL but its length is not 0"));
    }
    if len > isize::MAX as usize {
        // No buffer is that long: a negative length cast to size_t, say.
        return Err(HostError::InvalidArgument(format!(
            "argument length {len} is longer than any buffer (a negative length converted \
             to size_t?)"
        )));
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { std::slice::from_raw_parts(pointer.cast::<u8>(), len) }.to_vec())
}

/// # Safety
/// `text` NULL or a C string.
unsafe fn optional_str(text: *const c_char) -> Result<Option<String>, HostError> {
    if text.is_null() {
        return Ok(None);
    }
    // SAFETY: guaranteed by the caller.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| invalid("string is not valid UTF-8"))
}

/// # Safety
/// `text` NULL or a C string.
unsafe fn required_str(text: *const c_char, what: &str) -> Result<String, HostError> {
    // SAFETY: guaranteed by the caller.
    unsafe { optional_str(text) }?.ok_or_else(|| invalid(&format!("{what} is NULL")))
}

/// # Safety
/// `result` and `result_len` NULL or valid for writes.
unsafe fn hand_out(
    bytes: &[u8],
    result: *mut *mut c_void,
    result_len: *mut usize,
) -> Result<(), (c_int, String)> {
    let copy = if bytes.is_empty() || result.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: malloc of a non-zero size; checked for NULL below.
        let copy = unsafe { libc::malloc(bytes.len()) };
        if copy.is_null() {
            return Err((
                HERALD_ERR_FAILED,
                "out of memory for the task result".into(),
            ));
        }
        // SAFETY: `copy` holds `bytes.len()` bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy.cast::<u8>(), bytes.len()) };
        copy
    };
    // SAFETY: the caller guarantees these are NULL or valid for writes.
    unsafe {
        if !result.is_null() {
            *result = copy;
        }
        if !result_len.is_null() {
            *result_len = bytes.len();
        }
    }
    Ok(())
}

/// Turns an outcome into a return code, copying the error text out.
///
/// # Safety
/// `error` NULL or valid for `error_len` bytes.
unsafe fn report(
    outcome: Result<(), (c_int, String)>,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    match outcome {
        Ok(()) => HERALD_OK,
        Err((code, text)) => {
            if !error.is_null() && error_len > 0 {
                // Cut at a character boundary, so the copy stays valid UTF-8.
                let mut len = text.len().min(error_len - 1);
                while !text.is_char_boundary(len) {
                    len -= 1;
                }
                // SAFETY: `error` holds `error_len` bytes; `len + 1 <= error_len`.
                unsafe {
                    std::ptr::copy_nonoverlapping(text.as_ptr(), error.cast::<u8>(), len);
                    *error.add(len) = 0;
                }
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_cut_whole_characters_and_terminated() {
        let mut buffer: [c_char; 5] = [1; 5];
        let outcome = Err((HERALD_ERR_FAILED, "ab\u{e9}cd".to_owned()));
        // SAFETY: `buffer` is valid for its length.
        let code = unsafe { report(outcome, buffer.as_mut_ptr(), buffer.len()) };
        assert_eq!(code, HERALD_ERR_FAILED);
        // SAFETY: `report` NUL-terminated the copy inside the buffer.
        let copied = unsafe { CStr::from_ptr(buffer.as_ptr()) };
        // "ab" + the two bytes of 'é' fit in 4; a fifth byte would split nothing.
        assert_eq!(copied.to_str(), Ok("ab\u{e9}"));

        let mut small: [c_char; 4] = [1; 4];
        let outcome = Err((HERALD_ERR_FAILED, "ab\u{e9}cd".to_owned()));
        // SAFETY: as above.
        unsafe { report(outcome, small.as_mut_ptr(), small.len()) };
        // SAFETY: as above.
        let copied = unsafe { CStr::from_ptr(small.as_ptr()) };
        assert_eq!(copied.to_str(), Ok("ab"), "'\u{e9}' is not cut in half");
    }
}
