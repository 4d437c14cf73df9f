//! The entry points of `herald_core.h`: a [`Node`] behind an opaque pointer.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use herald_core::{
    Config, InvocationId, LaunchId, MAX_NODES, Node, NodeId, Output, RegisterError, Registration,
    TaskRunId, UsageError, encode_frames,
};

use crate::live;
use crate::members::outside_the_job;
use crate::output::{HERALD_CORE_NONE, Lent, Staged, herald_core_output};
use crate::text::{Refused, bytes, c_text, copy_out, optional_lossy, optional_utf8};

/// Success.
pub const HERALD_CORE_OK: c_int = 0;
/// A NULL pointer, invalid UTF-8, or a node outside the job.
pub const HERALD_CORE_ERR_INVALID: c_int = 1;
/// An invocation or task the core is not running.
pub const HERALD_CORE_ERR_UNKNOWN: c_int = 2;
/// Does not fit in a frame.
pub const HERALD_CORE_ERR_TOO_LARGE: c_int = 3;
/// An invalid frame: its sender should be treated as down.
pub const HERALD_CORE_ERR_PROTOCOL: c_int = 4;
/// A bug in herald stopped this core.
pub const HERALD_CORE_ERR_BROKEN: c_int = 5;
/// This node was declared down by the job: it takes no further part.
pub const HERALD_CORE_ERR_FENCED: c_int = 6;
/// "No enclosing invocation" for `parent` arguments.
pub const HERALD_CORE_NO_PARENT: u64 = u64::MAX;

/// The state behind a `herald_core *`.
pub struct HeraldCore {
    node: Node,
    /// Outputs taken from the node and not yet handed out (a transmit may be
    /// several frames).
    staged: VecDeque<Staged>,
    /// What the last output points into.
    lent: Lent,
    /// Launches not yet answered, with the node each went to.
    launches: BTreeMap<u64, u32>,
    /// Why the last failing call failed, NUL-terminated.
    error: Vec<u8>,
    /// A panic stopped this core.
    broken: bool,
}

/// A failed call: its return code and why.
type Failure = (c_int, String);

/// Creates node `rank` of `size` (see `herald_core.h`).
///
/// # Safety
/// `error` NULL or valid for `error_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_new(
    rank: u32,
    size: u32,
    fanout: u32,
    max_frame_bytes: usize,
    error: *mut c_char,
    error_len: usize,
) -> *mut HeraldCore {
    let made = catch_unwind(|| {
        // The core refuses frames from ids from MAX_NODES up: a larger job could
        // not work.
        if size > MAX_NODES {
            return Err(format!(
                "a job of {size} nodes is larger than herald's limit of {MAX_NODES}"
            ));
        }
        let mut config = Config::new(NodeId(rank), size).map_err(|e| e.to_string())?;
        if fanout != 0 {
            config = config.with_fanout(fanout).map_err(|e| e.to_string())?;
        }
        if max_frame_bytes != 0 {
            config = config
                .with_max_frame_bytes(max_frame_bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(HeraldCore {
            node: Node::new(config),
            staged: VecDeque::new(),
            lent: Lent::default(),
            launches: BTreeMap::new(),
            error: c_text(""),
            broken: false,
        })
    });
    match made {
        Ok(Ok(core)) => live::add(Box::new(core)),
        Ok(Err(text)) => {
            // SAFETY: the caller guarantees `error`.
            unsafe { copy_out(&text, error, error_len) };
            std::ptr::null_mut()
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe { copy_out("herald bug: creating the core panicked", error, error_len) };
            std::ptr::null_mut()
        }
    }
}

/// Frees a core.
///
/// # Safety
/// None on `core`: a pointer that is not a live core is ignored, not read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_free(core: *mut HeraldCore) {
    // A core freed already, or never made, is left alone.
    drop(live::remove(core));
}

/// Why the last failing call on `core` failed.
///
/// # Safety
/// None on `core`: a pointer that is not a live core is not read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_error(core: *const HeraldCore) -> *const c_char {
    if core.is_null() {
        return c"the core is NULL".as_ptr();
    }
    // SAFETY: a live core (checked); the caller does not call it concurrently.
    match unsafe { live_core(core.cast_mut()) } {
        Some(core) => core.error.as_ptr().cast(),
        None => NOT_LIVE.as_ptr(),
    }
}

/// Requests a registration (see `herald_core.h`).
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `code`/`args` valid for their lengths (or NULL with 0);
/// `tag` NULL or a C string; `request` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_register(
    core: *mut HeraldCore,
    code: *const c_void,
    code_len: usize,
    args: *const c_void,
    args_len: usize,
    tag: *const c_char,
    parent: u64,
    request: *mut u64,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        let max = core.max_frame_bytes();
        // SAFETY: the caller guarantees the pointers (lengths above a frame are
        // refused unread).
        let (code, args, tag) = unsafe {
            (
                bytes(code.cast(), code_len, max, "code").map_err(refused)?,
                bytes(args.cast(), args_len, max, "args").map_err(refused)?,
                optional_utf8(tag, "tag").map_err(invalid)?,
            )
        };
        let mut registration = Registration::new(code.to_vec(), args.to_vec());
        registration.tag = tag;
        let id = core
            .node
            .register(registration, parent_of(parent))
            .map_err(|error| match error {
                RegisterError::UnknownInvocation(_) => (HERALD_CORE_ERR_UNKNOWN, error.to_string()),
                RegisterError::TooLarge { .. } => (HERALD_CORE_ERR_TOO_LARGE, error.to_string()),
                RegisterError::Fenced { .. } => (HERALD_CORE_ERR_FENCED, error.to_string()),
            })?;
        // SAFETY: the caller guarantees `request` NULL or writable.
        unsafe { write(request, id.0) };
        Ok(())
    })
}

/// Feeds in a frame received from `from`.
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `frame` valid for `frame_len` bytes (or NULL with 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_handle_frame(
    core: *mut HeraldCore,
    from: u32,
    frame: *const c_void,
    frame_len: usize,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        let nodes = core.node.config().nodes();
        if from >= nodes {
            // No such node to declare down: the caller's mistake, not a peer's.
            return Err(invalid(format!(
                "frame from node {from}, which is not a node of this job of {nodes}"
            )));
        }
        // SAFETY: the caller guarantees `frame` (no length limit: a frame over
        // max_frame_bytes is its sender's fault, and the decoder refuses it unread).
        let frame =
            unsafe { bytes(frame.cast(), frame_len, usize::MAX, "frame") }.map_err(refused)?;
        core.handle_frame(NodeId(from), frame)
    })
}

/// Reports that an invocation returned (`error` NULL for success).
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `error` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_invocation_finished(
    core: *mut HeraldCore,
    invocation: u64,
    error: *const c_char,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        // SAFETY: the caller guarantees `error`.
        let outcome = match unsafe { optional_lossy(error) } {
            None => Ok(()),
            Some(text) => Err(text),
        };
        core.node
            .invocation_finished(InvocationId(invocation), outcome)
            .map_err(usage)
    })
}

/// Reports that `node` is down for good.
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `reason` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_peer_down(
    core: *mut HeraldCore,
    node: u32,
    reason: *const c_char,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        let config = core.node.config();
        if node >= config.nodes() || NodeId(node) == config.node() {
            return Err(invalid(format!(
                "node {node} is not another node of this job of {} (this is node {})",
                config.nodes(),
                config.node().0
            )));
        }
        // SAFETY: the caller guarantees `reason`.
        let reason = unsafe { optional_lossy(reason) };
        core.node.peer_down(
            NodeId(node),
            reason.unwrap_or_else(|| "its link was lost".to_owned()),
        );
        Ok(())
    })
}

/// Launches a task on `to`.
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `task` a C string; `args` valid for `args_len` (or NULL
/// with 0); `launch` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_launch(
    core: *mut HeraldCore,
    to: u32,
    task: *const c_char,
    args: *const c_void,
    args_len: usize,
    parent: u64,
    launch: *mut u64,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        // SAFETY: the caller guarantees the pointers.
        let (task, args) = unsafe {
            (
                optional_utf8(task, "task")
                    .map_err(invalid)?
                    .ok_or_else(|| invalid("task is NULL".to_owned()))?,
                bytes(args.cast(), args_len, core.max_frame_bytes(), "args").map_err(refused)?,
            )
        };
        let id = core
            .node
            .launch(NodeId(to), task, args.to_vec(), parent_of(parent))
            .map_err(usage)?;
        core.launches.insert(id.0, to);
        // SAFETY: the caller guarantees `launch` NULL or writable.
        unsafe { write(launch, id.0) };
        Ok(())
    })
}

/// Reports that a task finished (`error` NULL with its result bytes).
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `result` valid for `result_len` (or NULL with 0); `error`
/// NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_task_finished(
    core: *mut HeraldCore,
    origin: u32,
    launch: u64,
    result: *const c_void,
    result_len: usize,
    error: *const c_char,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    status(unsafe { live_core(core) }, |core| {
        let max = core.max_frame_bytes();
        // SAFETY: the caller guarantees `error` NULL or a C string.
        let outcome = match unsafe { optional_lossy(error) } {
            Some(text) => Err(text),
            // SAFETY: the caller guarantees `result` valid for `result_len`; a
            // result no frame holds fails the task, as the core would, uncopied.
            None => match unsafe { bytes(result.cast(), result_len, max, "the task's result") } {
                Ok(result) => Ok(result.to_vec()),
                Err(Refused::TooLarge(text)) => Err(text),
                Err(Refused::Invalid(text)) => return Err(invalid(text)),
            },
        };
        let run = TaskRunId {
            origin: NodeId(origin),
            launch: LaunchId(launch),
        };
        core.node.task_finished(run, outcome).map_err(usage)
    })
}

/// Writes the next output and returns its kind, or `HERALD_CORE_NONE`.
///
/// # Safety
/// `core` not used by another thread during the call (any pointer: one that is
/// not a live core is refused unread); `output` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn herald_core_poll(
    core: *mut HeraldCore,
    output: *mut herald_core_output,
) -> c_int {
    // SAFETY: checked live; the caller does not call it concurrently.
    let polled = guarded(unsafe { live_core(core) }, |core| {
        if output.is_null() {
            return Err(invalid("output is NULL".to_owned()));
        }
        let Some(staged) = core.next_staged() else {
            return Ok(HERALD_CORE_NONE);
        };
        let lent = core.lent.lend(staged);
        let kind = lent.kind;
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { output.write(lent) };
        Ok(kind)
    });
    // A failed poll has nothing to hand out; herald_core_error says why.
    polled.unwrap_or(HERALD_CORE_NONE)
}

impl HeraldCore {
    fn max_frame_bytes(&self) -> usize {
        self.node.config().max_frame_bytes()
    }

    /// Feeds a frame from `from`, a node of the job, to the core, refusing it
    /// as invalid if a message names a node outside the job (see `members`).
    fn handle_frame(&mut self, from: NodeId, frame: &[u8]) -> Result<(), Failure> {
        let protocol = |e: &dyn std::fmt::Display| {
            (
                HERALD_CORE_ERR_PROTOCOL,
                format!("frame from node {}: {e}", from.0),
            )
        };
        let nodes = self.node.config().nodes();
        // The core decodes and handles the messages one at a time, and declares
        // the sender down for a bad frame or a message naming a node outside
        // this job's fixed membership.
        self.node
            .handle_frame_inspecting(from, frame, |message| {
                outside_the_job(message, nodes).map_or(Ok(()), Err)
            })
            .map_err(|e| protocol(&e))
    }

    /// The next output, transmits encoded into frames.
    fn next_staged(&mut self) -> Option<Staged> {
        loop {
            if let Some(staged) = self.staged.pop_front() {
                return Some(staged);
            }
            match self.node.poll_output()? {
                Output::Transmit { to, messages } => {
                    match encode_frames(&messages, self.node.config().max_frame_bytes()) {
                        Ok(frames) => self.staged.extend(
                            frames
                                .into_iter()
                                .map(|bytes| Staged::Frame { to: to.0, bytes }),
                        ),
                        // Every message the core makes fits a frame (payloads are
                        // bounded at the inputs); a failure here is a core bug.
                        Err(error) => panic!("herald-core made an unencodable message: {error}"),
                    }
                }
                Output::TaskCompleted { launch, outcome } => {
                    let node = self.launches.remove(&launch.0).unwrap_or(u32::MAX);
                    return Some(Staged::TaskCompleted {
                        launch: launch.0,
                        node,
                        outcome,
                    });
                }
                // The C API has no joins yet: a core made with herald_core_new
                // is a member from the start, and its view changes also come as
                // HERALD_CORE_PEER_DOWN.
                Output::ViewChanged(_) | Output::Admitted | Output::JoinFailed(_) => {}
                output => return Some(Staged::Output(output)),
            }
        }
    }
}

/// Runs `call` on the core with panics caught; returns the status code and
/// records the error text.
fn status(
    core: Option<&mut HeraldCore>,
    call: impl FnOnce(&mut HeraldCore) -> Result<(), Failure>,
) -> c_int {
    match guarded(core, call) {
        Ok(()) => HERALD_CORE_OK,
        Err(code) => code,
    }
}

/// Runs `call` with panics caught, after freeing the previous output's storage
/// (it is valid until this call). A failure's text is recorded for
/// `herald_core_error`; the error is its code.
fn guarded<T>(
    core: Option<&mut HeraldCore>,
    call: impl FnOnce(&mut HeraldCore) -> Result<T, Failure>,
) -> Result<T, c_int> {
    let Some(core) = core else {
        return Err(HERALD_CORE_ERR_INVALID);
    };
    if core.broken {
        return Err(HERALD_CORE_ERR_BROKEN);
    }
    core.lent.clear();
    match catch_unwind(AssertUnwindSafe(|| call(&mut *core))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err((code, text))) => {
            core.error = c_text(&text);
            Err(code)
        }
        Err(_) => {
            core.broken = true;
            core.error = c_text("herald bug: the core panicked; free it and report the bug");
            Err(HERALD_CORE_ERR_BROKEN)
        }
    }
}

/// Why a call on a pointer that is not a live core failed.
const NOT_LIVE: &std::ffi::CStr =
    c"this is not a live herald_core: freed already, or never made by herald_core_new";

/// `core` if it is a live core (made and not freed); None for NULL and any other
/// pointer, which is not read.
///
/// # Safety
/// No other thread uses the core during the call (the header's rule).
unsafe fn live_core<'a>(core: *mut HeraldCore) -> Option<&'a mut HeraldCore> {
    let core = live::get(core)?;
    // SAFETY: a live core, boxed by herald_core_new; not aliased by the caller's
    // guarantee (one thread at a time per core).
    unsafe { core.as_mut() }
}

fn parent_of(parent: u64) -> Option<InvocationId> {
    (parent != HERALD_CORE_NO_PARENT).then_some(InvocationId(parent))
}

fn invalid(text: String) -> Failure {
    (HERALD_CORE_ERR_INVALID, text)
}

fn refused(refused: Refused) -> Failure {
    match refused {
        Refused::Invalid(text) => (HERALD_CORE_ERR_INVALID, text),
        Refused::TooLarge(text) => (HERALD_CORE_ERR_TOO_LARGE, text),
    }
}

fn usage(error: UsageError) -> Failure {
    let code = match error {
        UsageError::UnknownInvocation(_) | UsageError::UnknownTask(_) => HERALD_CORE_ERR_UNKNOWN,
        UsageError::TooLarge { .. } | UsageError::TooManyRequirements { .. } => {
            HERALD_CORE_ERR_TOO_LARGE
        }
        UsageError::Fenced { .. } => HERALD_CORE_ERR_FENCED,
        UsageError::NoSuchNode { .. } | UsageError::NotAdmitted | UsageError::AlreadyMember(_) => {
            HERALD_CORE_ERR_INVALID
        }
    };
    (code, error.to_string())
}

/// # Safety
/// `out` NULL or valid for a write.
unsafe fn write(out: *mut u64, value: u64) {
    if !out.is_null() {
        // SAFETY: guaranteed by the caller.
        unsafe { out.write(value) };
    }
}
