//! What a worker does: run an invocation's code or a task, then report back to
//! the event loop (which then runs on the worker's thread unless another thread
//! is running it).

use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use herald_core::{Invocation, Key, TaskRequest};

use crate::code::{
    CodeRef, LibraryRef, TaskBatch, TaskCode, WireCode, WireTaskCode, describe_tasks,
};
use crate::context::{self, InvocationFrame};
use crate::ffi;
use crate::native::{self, LoadedLibrary};
use crate::shared::{Command, Flush, Shared};
use crate::stats::Counters;
use crate::tasks::{TaskEntry, TaskFn};

/// The C signature of a registration callback: argument bytes in, 0 for success.
/// `C-unwind`, as [`TaskFn`]: a C++ exception that escapes it is named, then
/// the process aborts.
type CallbackFn = unsafe extern "C-unwind" fn(args: *const c_void, args_len: usize) -> c_int;

/// Runs one invocation with this thread marked as executing it, then reports.
pub(crate) fn run_invocation(shared: &Arc<Shared>, invocation: Invocation, keys: Arc<[Key]>) {
    let id = invocation.id;
    if invocation.parent.is_none() {
        // Tasks launched to this node from now on are held until it is done.
        shared.global_invoked(invocation.key);
    }
    // Counted as it starts: what it registers may be used (and the count read)
    // before it returns.
    Counters::add(&shared.counters.invocations, 1);
    let outcome = {
        let _frame = context::enter_invocation(InvocationFrame {
            runtime: shared.id,
            id,
            keys,
        });
        catch_unwind(AssertUnwindSafe(|| {
            execute_code(
                shared,
                &invocation.registration.code,
                &invocation.registration.args,
            )
        }))
        .unwrap_or_else(|panic| Err(format!("the invocation panicked: {}", panic_text(&panic))))
        .and_then(|()| refusals(shared))
    };
    if outcome.is_err() {
        Counters::add(&shared.counters.invocations_failed, 1);
    }
    shared.counters.note_invocation_done();
    // Variants registered inside this invocation go to the core before its end.
    shared.flush_batches(Flush::Context(Some(id)));
    shared.send(Command::InvocationFinished { id, outcome });
}

/// Runs one launched task, then reports its result bytes.
pub(crate) fn run_task(shared: &Arc<Shared>, request: TaskRequest) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _task = context::enter_task();
        execute_task(shared, &request)
    }))
    .unwrap_or_else(|panic| Err(format!("the task panicked: {}", panic_text(&panic))))
    .and_then(|bytes| refusals(shared).map(|()| bytes));
    Counters::add(&shared.counters.tasks_run, 1);
    shared.send(Command::TaskFinished {
        run: request.run,
        outcome,
    });
}

/// Registrations refused at once on this thread while it ran the code (a
/// library's constructor registering a function herald cannot name or may not
/// load): they fail what ran them, on this node.
fn refusals(shared: &Shared) -> Result<(), String> {
    let refused = shared.unawaited.take_refused();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("; "))
    }
}

/// Loads a library for code running on a worker: constructors' registrations
/// are nested in the current invocation (if any) and need no waiting here.
pub(crate) fn load_for_worker(
    shared: &Shared,
    library: &LibraryRef,
) -> Result<LoadedLibrary, String> {
    let loading = context::enter_loading();
    let loaded = native::load_reference(library, &shared.policy);
    for (runtime, handle) in loading.finish() {
        if runtime == shared.id {
            shared.release_registration(handle);
        }
    }
    loaded.map_err(|e| e.to_string())
}

fn execute_code(shared: &Shared, code: &[u8], args: &[u8]) -> Result<(), String> {
    match WireCode::decode(code)? {
        WireCode::Code(CodeRef::Native { library, symbol }) => {
            let loaded = load_for_worker(shared, &library)?;
            let Some(symbol) = symbol else {
                return Ok(());
            };
            let address = native::symbol_address(&loaded, &symbol).map_err(|e| e.to_string())?;
            // SAFETY: the C ABI (herald.h) documents registration callbacks as
            // `int (*)(const void *, size_t)`; the symbol was named as one by the
            // node that registered it, in a library whose digest matches.
            let callback: CallbackFn = unsafe { std::mem::transmute(address) };
            call_callback(callback, args, || {
                format!("callback {symbol} in {}", library.path)
            })
            .map_err(|e| format!("callback {symbol} in {}: {e}", library.path))
        }
        WireCode::Code(CodeRef::Custom { kind, payload }) => {
            executor(shared, &kind)?.invoke(&payload, args)
        }
        WireCode::Tasks(batch) => {
            let refused = refused_libraries(shared, &batch);
            let inserted = shared.tasks.insert(batch.into_variants()?);
            refused.and(inserted)
        }
    }
}

/// Checks, without loading them, that this node would load the libraries of a
/// batch of lazy task variants: a node that will refuse one fails the
/// registration now, naming the library and its tasks, instead of failing
/// their first launch.
fn refused_libraries(shared: &Shared, batch: &TaskBatch) -> Result<(), String> {
    let mut refused = Vec::new();
    for (index, library) in batch.libraries.iter().enumerate() {
        let Err(error) = native::check_reference(library, &shared.policy) else {
            continue;
        };
        let uses = |code: &WireTaskCode| matches!(code, WireTaskCode::Native { library, .. } if *library as usize == index);
        let names = batch.variants.iter().filter(|v| uses(&v.code));
        let count = names.clone().count();
        let tasks = describe_tasks(names.map(|v| v.name.as_str()), count);
        refused.push(format!("{tasks} cannot run on {}: {error}", shared.node));
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("; "))
    }
}

fn execute_task(shared: &Shared, request: &TaskRequest) -> Result<Vec<u8>, String> {
    let Some(entry) = shared.tasks.get(&request.task) else {
        return Err(format!(
            "task '{}' is not registered on {}: register it globally (herald_register_task \
             in C, @herald.task in Python, Runtime::register_task in Rust) or load the library \
             that does before launching it ({})",
            request.task,
            shared.node,
            shared.tasks.describe(10)
        ));
    };
    match &entry.code {
        TaskCode::Native { library, symbol } => {
            let function = resolve(shared, &entry, library, symbol)?;
            call_task(function, &request.args, || {
                format!("task '{}' ({symbol} in {})", request.task, library.path)
            })
            .map_err(|e| format!("task '{}' ({symbol}): {e}", request.task))
        }
        TaskCode::Custom { kind, payload } => {
            executor(shared, kind)?.run_task(payload, &request.args)
        }
    }
}

/// The task's function, loading its library the first time.
fn resolve(
    shared: &Shared,
    entry: &TaskEntry,
    library: &LibraryRef,
    symbol: &str,
) -> Result<TaskFn, String> {
    if let Some(function) = entry.resolved.get() {
        return Ok(*function);
    }
    let loaded = load_for_worker(shared, library)?;
    let address = native::symbol_address(&loaded, symbol).map_err(|e| e.to_string())?;
    // SAFETY: herald.h documents task functions as
    // `int (*)(const void *, size_t, herald_output *)`; the variant names this
    // symbol as one, in a library whose digest matches the registration.
    let function: TaskFn = unsafe { std::mem::transmute(address) };
    Ok(*entry.resolved.get_or_init(|| function))
}

fn call_callback(
    callback: CallbackFn,
    args: &[u8],
    what: impl Fn() -> String,
) -> Result<(), String> {
    ffi::clear_callback_error();
    let escape = Escape(&what);
    // SAFETY: `args` is valid for `args.len()` bytes for the whole call; the
    // callback's contract (herald.h) is to read at most that many.
    let status = unsafe { callback(args.as_ptr().cast(), args.len()) };
    std::mem::forget(escape);
    match status {
        0 => Ok(()),
        status => Err(ffi::take_callback_error()
            .unwrap_or_else(|| format!("returned {status} (call herald_set_error to explain)"))),
    }
}

fn call_task(function: TaskFn, args: &[u8], what: impl Fn() -> String) -> Result<Vec<u8>, String> {
    ffi::clear_callback_error();
    let output = ffi::TaskOutput::open();
    let escape = Escape(&what);
    // SAFETY: `args` is valid for its length during the call; the output pointer
    // is an opaque id the task passes to herald_output_write, never dereferenced.
    let status = unsafe { function(args.as_ptr().cast(), args.len(), output.pointer()) };
    std::mem::forget(escape);
    match status {
        0 => Ok(output.into_bytes()),
        status => Err(ffi::take_callback_error()
            .unwrap_or_else(|| format!("returned {status} (call herald_set_error to explain)"))),
    }
}

/// Dropped only while an exception (a C++ `throw`) unwinds out of the native
/// callback or task it guards (a normal return forgets it): says which one
/// threw. Rust cannot catch foreign exceptions, so the process then aborts
/// (`catch_unwind` in the worker), and the job loses this node.
struct Escape<'a>(&'a dyn Fn() -> String);

impl Drop for Escape<'_> {
    fn drop(&mut self) {
        eprintln!(
            "herald: an exception escaped {}; callbacks and tasks must catch their exceptions \
             and return non-zero (after herald_set_error) instead: this process aborts",
            (self.0)()
        );
    }
}

fn executor(shared: &Shared, kind: &str) -> Result<Arc<dyn crate::Executor>, String> {
    shared
        .executors
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(kind)
        .cloned()
        .ok_or_else(|| {
            format!(
                "no executor for code of kind '{kind}' on {}; the host must call \
                 register_executor(\"{kind}\", ...) on every node before the job registers such code",
                shared.node
            )
        })
}

pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
