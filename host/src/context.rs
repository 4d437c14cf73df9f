//! What the current thread is doing, as far as herald cares: which invocation it
//! executes (so that registrations it makes are nested) and whether it is inside a
//! library load (so that top-level registrations it makes are awaited later, at a
//! safe point, and so that waiting is refused while the loader lock may be held).
//!
//! The state is a per-thread stack of frames, pushed and popped by guards. A worker
//! pushes an [`Frame::Invocation`] for the whole of an invocation, including the
//! `dlopen` whose constructors run inside it; a load pushes [`Frame::Loading`] for
//! the duration of the `dlopen` call.

use std::cell::RefCell;
use std::sync::Arc;

use herald_core::{InvocationId, Key};

#[cfg(loom)]
loom::thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = RefCell::new(Vec::new());
}
#[cfg(not(loom))]
std::thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}
#[cfg(loom)]
loom::thread_local! {
    static RUNNING_LOOP: std::cell::Cell<bool> = std::cell::Cell::new(false);
}
#[cfg(not(loom))]
std::thread_local! {
    static RUNNING_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(loom)]
loom::thread_local! {
    static RUNNING_TASKS: std::cell::Cell<u32> = std::cell::Cell::new(0);
}
#[cfg(not(loom))]
std::thread_local! {
    static RUNNING_TASKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The invocation a worker thread executes for one runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvocationFrame {
    /// The runtime that dispatched the invocation.
    pub runtime: u64,
    /// The core's id for it: the parent of registrations made on this thread.
    pub id: InvocationId,
    /// Its key, then the keys of the invocations it is nested in, innermost first.
    /// Waiting for any of them from here can never end.
    pub keys: Arc<[Key]>,
}

/// One entry of the per-thread stack.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Frame {
    Invocation(InvocationFrame),
    /// A `dlopen` is in progress on this thread: handles created here are recorded
    /// (runtime, handle id) to be awaited or detached once it returns.
    Loading(Vec<(u64, u64)>),
}

/// Where a registration made on this thread belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The innermost invocation of the runtime on this thread: the nesting parent.
    pub parent: Option<InvocationFrame>,
    /// Whether a load is in progress on this thread.
    pub loading: bool,
}

/// Keeps an invocation frame pushed until dropped.
#[must_use = "the invocation frame is popped when the guard drops"]
pub struct InvocationGuard(());

/// Keeps a loading frame pushed until [`LoadingGuard::finish`] or drop.
#[must_use = "the loading frame is popped when the guard finishes"]
pub struct LoadingGuard {
    finished: bool,
}

/// Marks this thread as executing `frame` until the guard drops.
pub fn enter_invocation(frame: InvocationFrame) -> InvocationGuard {
    FRAMES.with(|frames| frames.borrow_mut().push(Frame::Invocation(frame)));
    InvocationGuard(())
}

/// Keeps this thread marked as running a launched task until dropped.
#[must_use = "the task mark is removed when the guard drops"]
pub struct TaskGuard(());

/// Marks this thread as running a launched task until the guard drops.
pub fn enter_task() -> TaskGuard {
    RUNNING_TASKS.with(|tasks| tasks.set(tasks.get() + 1));
    TaskGuard(())
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        RUNNING_TASKS.with(|tasks| tasks.set(tasks.get().saturating_sub(1)));
    }
}

/// Why this thread may not start or end a job (`herald_init`,
/// `herald_finalize`): it runs herald's event loop (a hook), a herald callback or
/// task, which the job's end waits for, or a library load. `None` on a thread of
/// the program.
pub fn user_code_refusal() -> Option<String> {
    if RUNNING_LOOP.with(|running| running.get()) {
        return Some(
            "this thread runs herald's event loop (a view or node-down hook runs on it), which \
             the end of the job needs; start and end the job from the program's main thread, \
             outside hooks, callbacks and tasks"
                .to_owned(),
        );
    }
    let in_callback = FRAMES.with(|frames| {
        frames
            .borrow()
            .iter()
            .any(|f| matches!(f, Frame::Invocation(_) | Frame::Loading(_)))
    });
    let in_task = RUNNING_TASKS.with(|tasks| tasks.get() > 0);
    let what = match (in_callback, in_task) {
        (true, _) => "a herald callback (or a library load)",
        (false, true) => "a herald task",
        (false, false) => return None,
    };
    Some(format!(
        "this thread runs {what}, which the end of the job waits for; start and end \
         the job from the program's main thread, outside callbacks and tasks"
    ))
}

/// Marks this thread as inside a library load until the guard finishes.
pub fn enter_loading() -> LoadingGuard {
    FRAMES.with(|frames| frames.borrow_mut().push(Frame::Loading(Vec::new())));
    LoadingGuard { finished: false }
}

/// Runs `work` as this thread running herald's event loop, and puts the thread
/// back as it was afterwards, even if `work` panics. The loop runs on whichever
/// thread brings it work, but what it does (completing handles, calling hooks
/// that may register) belongs to no invocation or load of that thread, so the
/// thread's frames are set aside; and a wait from inside it (a hook that waits)
/// would stop the loop that must answer it, so [`deadlock_reason`] refuses it.
pub fn in_event_loop<T>(work: impl FnOnce() -> T) -> T {
    struct Restore {
        frames: Vec<Frame>,
        running: bool,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            let frames = std::mem::take(&mut self.frames);
            FRAMES.with(|saved| *saved.borrow_mut() = frames);
            RUNNING_LOOP.with(|running| running.set(self.running));
        }
    }
    let _restore = Restore {
        frames: FRAMES.with(|frames| std::mem::take(&mut *frames.borrow_mut())),
        running: RUNNING_LOOP.with(|running| running.replace(true)),
    };
    work()
}

/// Where a registration for `runtime` made now on this thread belongs.
pub fn placement(runtime: u64) -> Placement {
    FRAMES.with(|frames| {
        let frames = frames.borrow();
        let parent = frames.iter().rev().find_map(|frame| match frame {
            Frame::Invocation(inv) if inv.runtime == runtime => Some(inv.clone()),
            _ => None,
        });
        let loading = frames.iter().any(|f| matches!(f, Frame::Loading(_)));
        Placement { parent, loading }
    })
}

/// Records a handle created during the innermost load on this thread, if any.
/// Returns whether one was in progress.
pub fn record_during_load(runtime: u64, handle: u64) -> bool {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        match frames
            .iter_mut()
            .rev()
            .find(|f| matches!(f, Frame::Loading(_)))
        {
            Some(Frame::Loading(handles)) => {
                handles.push((runtime, handle));
                true
            }
            _ => false,
        }
    })
}

/// Why waiting on this thread for a registration of `key` (if known) can never
/// end, or `None` when it may wait.
pub fn deadlock_reason(runtime: u64, key: Option<Key>) -> Option<String> {
    if RUNNING_LOOP.with(|running| running.get()) {
        return Some(
            "this thread is running herald's event loop (a view or node-down hook runs on it); \
             the loop answers no one while it waits, so return from the hook instead of waiting"
                .to_owned(),
        );
    }
    FRAMES.with(|frames| {
        let frames = frames.borrow();
        if frames.iter().any(|f| matches!(f, Frame::Loading(_))) {
            return Some(
                "this thread is inside a library load (a constructor may hold the loader lock); \
                 herald waits for registrations made there when the load returns, so do not wait here"
                    .to_owned(),
            );
        }
        let key = key?;
        frames.iter().rev().find_map(|frame| match frame {
            Frame::Invocation(inv) if inv.runtime == runtime && inv.keys.contains(&key) => {
                Some(format!(
                    "registration {} cannot finish before the invocation running on this thread \
                     ({}) returns, because that invocation is part of it; return instead of waiting",
                    key.short(),
                    inv.id
                ))
            }
            _ => None,
        })
    })
}

impl Drop for InvocationGuard {
    fn drop(&mut self) {
        FRAMES.with(|frames| {
            let popped = frames.borrow_mut().pop();
            debug_assert!(matches!(popped, Some(Frame::Invocation(_))));
        });
    }
}

impl LoadingGuard {
    /// Pops the loading frame and returns the handles created during the load.
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.finished = true;
        pop_loading()
    }
}

impl Drop for LoadingGuard {
    fn drop(&mut self) {
        if !self.finished {
            pop_loading();
        }
    }
}

fn pop_loading() -> Vec<(u64, u64)> {
    FRAMES.with(|frames| match frames.borrow_mut().pop() {
        Some(Frame::Loading(handles)) => handles,
        other => {
            debug_assert!(false, "loading frame expected, found {other:?}");
            Vec::new()
        }
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn frame(runtime: u64, id: u64, keys: &[u8]) -> InvocationFrame {
        InvocationFrame {
            runtime,
            id: InvocationId(id),
            keys: keys.iter().map(|k| Key([*k; 32])).collect(),
        }
    }

    #[test]
    fn innermost_invocation_of_the_runtime_is_the_parent() {
        assert_eq!(placement(1).parent, None);
        let _outer = enter_invocation(frame(1, 10, &[1]));
        let _other = enter_invocation(frame(2, 20, &[2]));
        assert_eq!(placement(1).parent.map(|f| f.id), Some(InvocationId(10)));
        assert_eq!(placement(2).parent.map(|f| f.id), Some(InvocationId(20)));
        assert!(deadlock_reason(1, Some(Key([1; 32]))).is_some());
        assert!(deadlock_reason(1, Some(Key([2; 32]))).is_none());
    }

    #[test]
    fn the_event_loop_runs_outside_the_threads_invocation_and_load_and_may_not_wait() {
        let _invocation = enter_invocation(frame(1, 10, &[1]));
        let load = enter_loading();
        let inside = in_event_loop(|| {
            let inner = enter_invocation(frame(1, 11, &[2]));
            let seen = placement(1);
            drop(inner);
            (seen, placement(1), deadlock_reason(1, None))
        });
        assert_eq!(inside.0.parent.map(|f| f.id), Some(InvocationId(11)));
        assert_eq!(
            inside.1,
            Placement {
                parent: None,
                loading: false
            }
        );
        assert!(inside.2.is_some_and(|reason| reason.contains("event loop")));
        // Put back afterwards, and after a panic too.
        let panicked = std::panic::catch_unwind(|| in_event_loop(|| panic!("in a hook")));
        assert!(panicked.is_err());
        assert_eq!(placement(1).parent.map(|f| f.id), Some(InvocationId(10)));
        assert!(placement(1).loading);
        assert!(load.finish().is_empty());
        assert_eq!(deadlock_reason(1, None), None);
    }

    #[test]
    fn loads_record_handles_and_forbid_waiting() {
        assert!(!record_during_load(1, 5));
        let load = enter_loading();
        assert!(placement(1).loading);
        assert!(record_during_load(1, 5));
        assert!(deadlock_reason(1, None).is_some());
        assert_eq!(load.finish(), vec![(1, 5)]);
        assert!(!placement(1).loading);
        assert!(deadlock_reason(1, None).is_none());
    }
}
