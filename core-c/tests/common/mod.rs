//! A safe Rust view of the C API, for the tests: each call goes through the
//! `extern "C"` functions exactly as a C caller's would, and each output is
//! copied out of the core's borrowed storage before the next call.
#![allow(dead_code)]

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use herald_core_c::*;

/// An output, copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    Transmit {
        to: u32,
        frame: Vec<u8>,
    },
    Invoke {
        invocation: u64,
        parent: Option<u64>,
        key: [u8; 32],
        code: Vec<u8>,
        args: Vec<u8>,
        tag: Option<String>,
    },
    Completed {
        request: u64,
        key: [u8; 32],
        global: bool,
        ok: bool,
        failures: Vec<(u32, String)>,
        unreachable: Vec<u32>,
        summary: String,
    },
    RunTask {
        origin: u32,
        launch: u64,
        task: Vec<u8>,
        args: Vec<u8>,
    },
    TaskCompleted {
        launch: u64,
        node: u32,
        status: i32,
        result: Vec<u8>,
        error: String,
    },
    PeerDown {
        node: u32,
        by: u32,
        reason: String,
    },
    Fenced {
        by: u32,
        reason: String,
    },
}

/// One `herald_core *`.
pub struct Core(pub *mut HeraldCore);

impl Core {
    pub fn new(rank: u32, size: u32) -> Core {
        Core::with(rank, size, 0, 0).expect("valid configuration")
    }

    pub fn with(rank: u32, size: u32, fanout: u32, max_frame: usize) -> Result<Core, String> {
        let mut error = [0 as c_char; 256];
        // SAFETY: `error` is valid for its length.
        let core = unsafe {
            herald_core_new(
                rank,
                size,
                fanout,
                max_frame,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if core.is_null() {
            // SAFETY: herald_core_new NUL-terminated its reason inside `error`.
            Err(unsafe { CStr::from_ptr(error.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        } else {
            Ok(Core(core))
        }
    }

    pub fn error(&self) -> String {
        // SAFETY: a live core; the text is NUL-terminated and copied at once.
        unsafe { CStr::from_ptr(herald_core_error(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn register(
        &mut self,
        code: &[u8],
        args: &[u8],
        tag: Option<&str>,
        parent: Option<u64>,
    ) -> Result<u64, i32> {
        let tag = tag.map(|t| CString::new(t).expect("tag without NUL"));
        let mut request = u64::MAX;
        // SAFETY: every pointer is valid for the call.
        let code = unsafe {
            herald_core_register(
                self.0,
                code.as_ptr().cast(),
                code.len(),
                args.as_ptr().cast(),
                args.len(),
                tag.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
                parent.unwrap_or(HERALD_CORE_NO_PARENT),
                &mut request,
            )
        };
        if code == HERALD_CORE_OK {
            Ok(request)
        } else {
            Err(code)
        }
    }

    pub fn handle_frame(&mut self, from: u32, frame: &[u8]) -> i32 {
        // SAFETY: `frame` is valid for its length.
        unsafe { herald_core_handle_frame(self.0, from, frame.as_ptr().cast(), frame.len()) }
    }

    pub fn invocation_finished(&mut self, invocation: u64, error: Option<&str>) -> i32 {
        let error = error.map(|e| CString::new(e).expect("no NUL"));
        // SAFETY: `error` is NULL or a C string.
        unsafe {
            herald_core_invocation_finished(
                self.0,
                invocation,
                error.as_ref().map_or(ptr::null(), |e| e.as_ptr()),
            )
        }
    }

    pub fn peer_down(&mut self, node: u32) -> i32 {
        // SAFETY: a static C string.
        unsafe { herald_core_peer_down(self.0, node, c"test".as_ptr()) }
    }

    pub fn launch(
        &mut self,
        to: u32,
        task: &str,
        args: &[u8],
        parent: Option<u64>,
    ) -> Result<u64, i32> {
        let task = CString::new(task).expect("no NUL");
        let mut launch = u64::MAX;
        // SAFETY: every pointer is valid for the call.
        let code = unsafe {
            herald_core_launch(
                self.0,
                to,
                task.as_ptr(),
                args.as_ptr().cast(),
                args.len(),
                parent.unwrap_or(HERALD_CORE_NO_PARENT),
                &mut launch,
            )
        };
        if code == HERALD_CORE_OK {
            Ok(launch)
        } else {
            Err(code)
        }
    }

    pub fn task_finished(&mut self, origin: u32, launch: u64, result: Result<&[u8], &str>) -> i32 {
        match result {
            // SAFETY: `bytes` is valid for its length; no error text.
            Ok(bytes) => unsafe {
                herald_core_task_finished(
                    self.0,
                    origin,
                    launch,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    ptr::null(),
                )
            },
            Err(text) => {
                let text = CString::new(text).expect("no NUL");
                // SAFETY: no result bytes; `text` is a C string.
                unsafe {
                    herald_core_task_finished(self.0, origin, launch, ptr::null(), 0, text.as_ptr())
                }
            }
        }
    }

    /// The next output, copied out of the core.
    pub fn poll(&mut self) -> Option<Out> {
        let mut output = std::mem::MaybeUninit::<herald_core_output>::uninit();
        // SAFETY: `output` is valid for a write.
        let kind = unsafe { herald_core_poll(self.0, output.as_mut_ptr()) };
        if kind == HERALD_CORE_NONE {
            return None;
        }
        // SAFETY: poll wrote the output (kind is not NONE).
        let output = unsafe { output.assume_init() };
        assert_eq!(kind, output.kind);
        // SAFETY: `kind` names the member; its pointers are valid until the next call.
        Some(unsafe { copy(&output) })
    }

    pub fn drain(&mut self) -> Vec<Out> {
        std::iter::from_fn(|| self.poll()).collect()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // SAFETY: made by herald_core_new, freed once.
        unsafe { herald_core_free(self.0) }
    }
}

/// # Safety
/// `output` was just written by herald_core_poll.
unsafe fn copy(output: &herald_core_output) -> Out {
    // SAFETY (for the whole function): the member named by `kind` was written;
    // every pointer in it is valid for its length until the next call.
    unsafe {
        let b = &output.body;
        match output.kind {
            HERALD_CORE_TRANSMIT => Out::Transmit {
                to: b.transmit.to,
                frame: slice(b.transmit.frame, b.transmit.frame_len),
            },
            HERALD_CORE_INVOKE => {
                let i = b.invoke;
                Out::Invoke {
                    invocation: i.invocation,
                    parent: (i.parent != HERALD_CORE_NO_PARENT).then_some(i.parent),
                    key: key(i.key),
                    code: slice(i.code, i.code_len),
                    args: slice(i.args, i.args_len),
                    tag: (!i.tag.is_null()).then(|| text(i.tag)),
                }
            }
            HERALD_CORE_COMPLETED => {
                let c = b.completed;
                let failures = (0..c.failures_len)
                    .map(|n| {
                        let f = *c.failures.add(n);
                        (f.node, text(f.error))
                    })
                    .collect();
                let unreachable = if c.unreachable_len == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(c.unreachable, c.unreachable_len).to_vec()
                };
                Out::Completed {
                    request: c.request,
                    key: key(c.key),
                    global: c.global == 1,
                    ok: c.ok == 1,
                    failures,
                    unreachable,
                    summary: text(c.summary),
                }
            }
            HERALD_CORE_RUN_TASK => {
                let r = b.run_task;
                assert_eq!(*r.task.add(r.task_len), 0, "task names are NUL-terminated");
                Out::RunTask {
                    origin: r.origin,
                    launch: r.launch,
                    task: slice(r.task.cast(), r.task_len),
                    args: slice(r.args, r.args_len),
                }
            }
            HERALD_CORE_TASK_COMPLETED => {
                let t = b.task_completed;
                Out::TaskCompleted {
                    launch: t.launch,
                    node: t.node,
                    status: t.status,
                    result: slice(t.result, t.result_len),
                    error: text(t.error),
                }
            }
            HERALD_CORE_PEER_DOWN => Out::PeerDown {
                node: b.peer_down.node,
                by: b.peer_down.by,
                reason: text(b.peer_down.reason),
            },
            HERALD_CORE_FENCED => Out::Fenced {
                by: b.fenced.by,
                reason: text(b.fenced.reason),
            },
            other => panic!("unknown output kind {other}"),
        }
    }
}

/// # Safety
/// `data` valid for `len` bytes (any pointer when `len` is 0).
unsafe fn slice(data: *const u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    assert!(!data.is_null());
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}

/// # Safety
/// `key` valid for 32 bytes.
unsafe fn key(key: *const u8) -> [u8; 32] {
    let mut out = [0; 32];
    // SAFETY: guaranteed by the caller.
    out.copy_from_slice(unsafe { std::slice::from_raw_parts(key, 32) });
    out
}

/// # Safety
/// `text` a NUL-terminated string.
unsafe fn text(text: *const c_char) -> String {
    assert!(!text.is_null());
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// A job of cores wired by an in-order queue of frames (one FIFO for the
/// whole job, so every link is FIFO too).
pub struct Job {
    pub cores: Vec<Core>,
    pub wire: std::collections::VecDeque<(u32, u32, Vec<u8>)>,
    /// Every non-transmit output, with the node that produced it.
    pub seen: Vec<(u32, Out)>,
    /// Every frame sent: (from, to, bytes).
    pub sent: Vec<(u32, u32, Vec<u8>)>,
}

impl Job {
    pub fn new(nodes: u32) -> Job {
        Job {
            cores: (0..nodes).map(|n| Core::new(n, nodes)).collect(),
            wire: Default::default(),
            seen: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Delivers frames and handles outputs until nothing moves: invocations
    /// finish with `on_invoke`'s answer, tasks answer their args reversed.
    pub fn run(&mut self, mut on_invoke: impl FnMut(&mut Core, u32, &Out) -> Option<String>) {
        loop {
            let mut moved = false;
            for node in 0..self.cores.len() as u32 {
                while let Some(out) = self.cores[node as usize].poll() {
                    moved = true;
                    match &out {
                        Out::Transmit { to, frame } => {
                            self.wire.push_back((node, *to, frame.clone()));
                            self.sent.push((node, *to, frame.clone()));
                        }
                        Out::Invoke { invocation, .. } => {
                            let core = &mut self.cores[node as usize];
                            let error = on_invoke(core, node, &out);
                            assert_eq!(
                                core.invocation_finished(*invocation, error.as_deref()),
                                HERALD_CORE_OK,
                                "{}",
                                core.error()
                            );
                        }
                        Out::RunTask {
                            origin,
                            launch,
                            args,
                            ..
                        } => {
                            let reversed: Vec<u8> = args.iter().rev().copied().collect();
                            let core = &mut self.cores[node as usize];
                            assert_eq!(
                                core.task_finished(*origin, *launch, Ok(&reversed)),
                                HERALD_CORE_OK,
                                "{}",
                                core.error()
                            );
                        }
                        _ => {}
                    }
                    if !matches!(out, Out::Transmit { .. }) {
                        self.seen.push((node, out));
                    }
                }
            }
            if let Some((from, to, frame)) = self.wire.pop_front() {
                moved = true;
                let core = &mut self.cores[to as usize];
                assert_eq!(
                    core.handle_frame(from, &frame),
                    HERALD_CORE_OK,
                    "{}",
                    core.error()
                );
            }
            if !moved {
                return;
            }
        }
    }

    pub fn invocations(&self, node: u32) -> usize {
        self.seen
            .iter()
            .filter(|(n, o)| *n == node && matches!(o, Out::Invoke { .. }))
            .count()
    }

    pub fn completions(&self, node: u32) -> Vec<Out> {
        self.seen
            .iter()
            .filter(|(n, o)| *n == node && matches!(o, Out::Completed { .. }))
            .map(|(_, o)| o.clone())
            .collect()
    }
}
