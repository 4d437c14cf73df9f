//! `herald_core_output`: the core's outputs as C sees them, and the storage their
//! pointers borrow from until the next call on the core.

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use herald_core::{Output, RegistrationResult, Scope, TaskErrorKind, TaskOutcome};

use crate::api::HERALD_CORE_NO_PARENT;
use crate::text::{c_text, with_nul};

/// Nothing to do until the next input.
pub const HERALD_CORE_NONE: c_int = 0;
/// Send a frame to a node.
pub const HERALD_CORE_TRANSMIT: c_int = 1;
/// Run a registration's code, then report with `herald_core_invocation_finished`.
pub const HERALD_CORE_INVOKE: c_int = 2;
/// A registration request is answered.
pub const HERALD_CORE_COMPLETED: c_int = 3;
/// Run a task, then report with `herald_core_task_finished`.
pub const HERALD_CORE_RUN_TASK: c_int = 4;
/// A launch is answered.
pub const HERALD_CORE_TASK_COMPLETED: c_int = 5;
/// The job agreed that a node is down.
pub const HERALD_CORE_PEER_DOWN: c_int = 6;
/// The job declared this node down: it must stop.
pub const HERALD_CORE_FENCED: c_int = 7;

/// The task ran and produced its result.
pub const HERALD_CORE_TASK_OK: c_int = 0;
/// The target's caller reported an error.
pub const HERALD_CORE_TASK_FAILED: c_int = 1;
/// A registration the task required failed on the target.
pub const HERALD_CORE_TASK_REQUIREMENT_FAILED: c_int = 2;
/// The target went down before answering.
pub const HERALD_CORE_TASK_UNREACHABLE: c_int = 3;

/// One node's failed invocation (`herald_core_failure`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct herald_core_failure {
    /// The node.
    pub node: u32,
    /// Its error text, NUL-terminated.
    pub error: *const c_char,
}

/// One output (`herald_core_output`): `kind` names the meaningful member of `body`.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct herald_core_output {
    /// One of the `HERALD_CORE_*` output kinds.
    pub kind: c_int,
    /// The output itself (the header's anonymous union).
    pub body: OutputBody,
}

/// The members of `herald_core_output`'s union, as in `herald_core.h`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union OutputBody {
    pub transmit: Transmit,
    pub invoke: Invoke,
    pub completed: Completed,
    pub run_task: RunTask,
    pub task_completed: TaskCompleted,
    pub peer_down: PeerDown,
    pub fenced: Fenced,
}

/// `HERALD_CORE_TRANSMIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Transmit {
    pub to: u32,
    pub frame: *const u8,
    pub frame_len: usize,
}

/// `HERALD_CORE_INVOKE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Invoke {
    pub invocation: u64,
    pub parent: u64,
    pub key: *const u8,
    pub code: *const u8,
    pub code_len: usize,
    pub args: *const u8,
    pub args_len: usize,
    pub tag: *const c_char,
}

/// `HERALD_CORE_COMPLETED`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Completed {
    pub request: u64,
    pub key: *const u8,
    pub global: c_int,
    pub ok: c_int,
    pub failures: *const herald_core_failure,
    pub failures_len: usize,
    pub unreachable: *const u32,
    pub unreachable_len: usize,
    pub summary: *const c_char,
}

/// `HERALD_CORE_RUN_TASK`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct RunTask {
    pub origin: u32,
    pub launch: u64,
    pub task: *const c_char,
    pub task_len: usize,
    pub args: *const u8,
    pub args_len: usize,
}

/// `HERALD_CORE_TASK_COMPLETED`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct TaskCompleted {
    pub launch: u64,
    pub node: u32,
    pub status: c_int,
    pub result: *const u8,
    pub result_len: usize,
    pub error: *const c_char,
}

/// `HERALD_CORE_PEER_DOWN`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct PeerDown {
    pub node: u32,
    pub by: u32,
    pub reason: *const c_char,
}

/// `HERALD_CORE_FENCED`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Fenced {
    pub by: u32,
    pub reason: *const c_char,
}

/// What `herald_core_poll` hands out next: an encoded frame, a launch's answer
/// with the node it went to, or another core output.
pub(crate) enum Staged {
    Frame {
        to: u32,
        bytes: Vec<u8>,
    },
    TaskCompleted {
        launch: u64,
        node: u32,
        outcome: TaskOutcome,
    },
    Output(Output),
}

/// Owns everything the last output points into. Replaced at every call on the
/// core, which is what "valid until the next call" means.
#[derive(Default)]
pub(crate) struct Lent {
    key: [u8; 32],
    bytes: Vec<u8>,
    code: Option<Arc<[u8]>>,
    args: Option<Arc<[u8]>>,
    name: Vec<u8>,
    text: Vec<u8>,
    failure_texts: Vec<Vec<u8>>,
    failures: Vec<herald_core_failure>,
    unreachable: Vec<u32>,
}

impl Lent {
    /// Frees what the previous output pointed to.
    pub(crate) fn clear(&mut self) {
        *self = Lent::default();
    }

    /// Takes ownership of `staged` and describes it for C.
    pub(crate) fn lend(&mut self, staged: Staged) -> herald_core_output {
        self.clear();
        match staged {
            Staged::Frame { to, bytes } => {
                self.bytes = bytes;
                output(
                    HERALD_CORE_TRANSMIT,
                    OutputBody {
                        transmit: Transmit {
                            to,
                            frame: self.bytes.as_ptr(),
                            frame_len: self.bytes.len(),
                        },
                    },
                )
            }
            Staged::TaskCompleted {
                launch,
                node,
                outcome,
            } => {
                let task_completed = self.lend_task_outcome(launch, node, outcome);
                output(HERALD_CORE_TASK_COMPLETED, OutputBody { task_completed })
            }
            Staged::Output(output) => self.lend_output(output),
        }
    }

    fn lend_output(&mut self, out: Output) -> herald_core_output {
        match out {
            // Encoded into frames, and given their target, before they get here.
            Output::Transmit { .. }
            | Output::TaskCompleted { .. }
            | Output::ViewChanged(_)
            | Output::Admitted
            | Output::JoinFailed(_) => output(HERALD_CORE_NONE, empty()),
            Output::Invoke(invocation) => {
                let registration = invocation.registration;
                self.key = invocation.key.0;
                if let Some(tag) = &registration.tag {
                    self.name = c_text(tag);
                }
                let code = Arc::clone(&registration.code);
                let args = Arc::clone(&registration.args);
                let invoke = Invoke {
                    invocation: invocation.id.0,
                    parent: invocation.parent.map_or(HERALD_CORE_NO_PARENT, |p| p.0),
                    key: self.key.as_ptr(),
                    code: code.as_ptr(),
                    code_len: code.len(),
                    args: args.as_ptr(),
                    args_len: args.len(),
                    tag: if registration.tag.is_some() {
                        self.name.as_ptr().cast()
                    } else {
                        std::ptr::null()
                    },
                };
                self.code = Some(code);
                self.args = Some(args);
                output(HERALD_CORE_INVOKE, OutputBody { invoke })
            }
            Output::Completed { request, result } => {
                let completed = self.lend_result(request.0, &result);
                output(HERALD_CORE_COMPLETED, OutputBody { completed })
            }
            Output::PeerDown { node, by, reason } => {
                self.text = c_text(&reason);
                let peer_down = PeerDown {
                    node: node.0,
                    by: by.0,
                    reason: self.text.as_ptr().cast(),
                };
                output(HERALD_CORE_PEER_DOWN, OutputBody { peer_down })
            }
            Output::Fenced { by, reason } => {
                self.text = c_text(&reason);
                let fenced = Fenced {
                    by: by.0,
                    reason: self.text.as_ptr().cast(),
                };
                output(HERALD_CORE_FENCED, OutputBody { fenced })
            }
            Output::RunTask(request) => {
                self.name = with_nul(request.task.as_bytes());
                self.bytes = request.args;
                let run_task = RunTask {
                    origin: request.run.origin.0,
                    launch: request.run.launch.0,
                    task: self.name.as_ptr().cast(),
                    task_len: request.task.len(),
                    args: self.bytes.as_ptr(),
                    args_len: self.bytes.len(),
                };
                output(HERALD_CORE_RUN_TASK, OutputBody { run_task })
            }
        }
    }

    fn lend_result(&mut self, request: u64, result: &RegistrationResult) -> Completed {
        self.key = result.key.0;
        self.failure_texts = result.failures.iter().map(|f| c_text(&f.error)).collect();
        self.failures = result
            .failures
            .iter()
            .zip(&self.failure_texts)
            .map(|(failure, text)| herald_core_failure {
                node: failure.node.0,
                error: text.as_ptr().cast(),
            })
            .collect();
        self.unreachable = result.unreachable.iter().map(|n| n.0).collect();
        self.text = c_text(&result.to_string());
        Completed {
            request,
            key: self.key.as_ptr(),
            global: c_int::from(result.scope == Scope::Global),
            ok: c_int::from(result.is_ok()),
            failures: self.failures.as_ptr(),
            failures_len: self.failures.len(),
            unreachable: self.unreachable.as_ptr(),
            unreachable_len: self.unreachable.len(),
            summary: self.text.as_ptr().cast(),
        }
    }

    fn lend_task_outcome(&mut self, launch: u64, node: u32, outcome: TaskOutcome) -> TaskCompleted {
        let status = match &outcome {
            Ok(_) => HERALD_CORE_TASK_OK,
            Err(error) => match error.kind {
                TaskErrorKind::Failed(_) => HERALD_CORE_TASK_FAILED,
                TaskErrorKind::RequirementFailed { .. } => HERALD_CORE_TASK_REQUIREMENT_FAILED,
                TaskErrorKind::Unreachable => HERALD_CORE_TASK_UNREACHABLE,
            },
        };
        match outcome {
            Ok(bytes) => {
                self.bytes = bytes;
                self.text = c_text("");
            }
            Err(error) => self.text = c_text(&error.to_string()),
        }
        TaskCompleted {
            launch,
            node,
            status,
            result: self.bytes.as_ptr(),
            result_len: self.bytes.len(),
            error: self.text.as_ptr().cast(),
        }
    }
}

fn output(kind: c_int, body: OutputBody) -> herald_core_output {
    herald_core_output { kind, body }
}

/// A body for outputs with none (all fields zero or NULL).
pub(crate) fn empty() -> OutputBody {
    OutputBody {
        fenced: Fenced {
            by: 0,
            reason: std::ptr::null(),
        },
    }
}
