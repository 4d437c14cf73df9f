//! The task registry of one node: task names with their implementations, resolved
//! (`dlopen` + `dlsym`) lazily on first execution.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::code::{TaskCode, TaskVariant};

/// The C signature of a native task: argument bytes in, result bytes written to
/// `out` with `herald_output_write`, 0 for success. `C-unwind`: a C++
/// exception that escapes one unwinds into herald (defined behaviour), which
/// names the task and aborts (see `execute::Escape`).
pub(crate) type TaskFn =
    unsafe extern "C-unwind" fn(args: *const c_void, args_len: usize, out: *mut c_void) -> c_int;

/// Task name of the built-in task that ends the job on the node it runs on.
pub(crate) const END_JOB_TASK: &str = "herald.end_job";

/// The argument of [`END_JOB_TASK`]: the nodes that went down before calling
/// finalize, which every survivor's finalize names.
pub(crate) fn end_job_args(lost: &[u32]) -> Vec<u8> {
    postcard::to_allocvec(lost).unwrap_or_default()
}

/// The nodes an [`END_JOB_TASK`]'s argument names (none if it names none, or
/// is not such an argument: the sender was authenticated, so that would be a
/// bug there, and the end of the job matters more than the list).
pub(crate) fn lost_in_end_job_args(args: &[u8]) -> Vec<u32> {
    postcard::from_bytes(args).unwrap_or_default()
}

/// Task name of the built-in task by which a rank tells node 0 it called finalize.
pub(crate) const FINALIZE_TASK: &str = "herald.finalize";

/// Task names reserved for herald itself.
pub(crate) const RESERVED_PREFIX: &str = "herald.";

/// Registered tasks by name.
#[derive(Default)]
pub(crate) struct TaskRegistry {
    tasks: RwLock<HashMap<String, Arc<TaskEntry>>>,
}

/// One registered task.
pub(crate) struct TaskEntry {
    pub(crate) code: TaskCode,
    /// The native function, once resolved on this node.
    pub(crate) resolved: OnceLock<TaskFn>,
}

impl TaskRegistry {
    /// Records variants. A name already registered with the same code is left as
    /// it is; with different code it is an error (the others are still recorded).
    pub(crate) fn insert(&self, variants: Vec<TaskVariant>) -> Result<(), String> {
        let mut conflicts = Vec::new();
        let mut tasks = self.tasks.write().unwrap_or_else(PoisonError::into_inner);
        tasks.reserve(variants.len());
        for variant in variants {
            match tasks.get(&variant.name) {
                Some(entry) if entry.code == variant.code => {}
                Some(entry) => conflicts.push(format!(
                    "task '{}' is already registered as {}, not {}",
                    variant.name, entry.code, variant.code
                )),
                None => {
                    let entry = TaskEntry {
                        code: variant.code,
                        resolved: OnceLock::new(),
                    };
                    tasks.insert(variant.name, Arc::new(entry));
                }
            }
        }
        match conflicts.len() {
            0 => Ok(()),
            n => Err(format!(
                "{n} task name(s) registered twice with different code; a name has one \
                 implementation: {}",
                conflicts.into_iter().take(3).collect::<Vec<_>>().join("; ")
            )),
        }
    }

    /// Whether exactly this variant is registered here already.
    pub(crate) fn contains_identical(&self, variant: &TaskVariant) -> bool {
        self.tasks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&variant.name)
            .is_some_and(|entry| entry.code == variant.code)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<TaskEntry>> {
        self.tasks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// What is registered, for an error text: up to `limit` names (herald's
    /// own left out), in order, then how many more there are.
    pub(crate) fn describe(&self, limit: usize) -> String {
        let tasks = self.tasks.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&str> = tasks
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with(RESERVED_PREFIX))
            .collect();
        if names.is_empty() {
            return "no task is registered there".to_owned();
        }
        names.sort_unstable();
        let shown: Vec<String> = names.iter().take(limit).map(|n| format!("'{n}'")).collect();
        let more = names.len().saturating_sub(limit);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("registered there: {}{more}", shown.join(", "))
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
