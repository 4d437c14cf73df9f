//! Counters a runtime keeps about itself, read with [`Runtime::stats`](crate::Runtime::stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A snapshot of one node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// This node.
    pub node: u32,
    /// Nodes in the job.
    pub nodes: u32,
    /// Registrations requested through this node's API (global and nested).
    pub registrations_requested: u64,
    /// Of those, answered so far.
    pub registrations_completed: u64,
    /// Invocations this node started (each registration at most once).
    pub invocations: u64,
    /// Of those, failed.
    pub invocations_failed: u64,
    /// Tasks this node ran for itself or others.
    pub tasks_run: u64,
    /// Tasks launched from this node.
    pub launches: u64,
    /// Protocol messages sent.
    pub messages_sent: u64,
    /// Frames sent (each carries one or more messages).
    pub frames_sent: u64,
    /// Frame bytes sent.
    pub bytes_sent: u64,
    /// Protocol messages received.
    pub messages_received: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frame bytes received.
    pub bytes_received: u64,
    /// Worker threads alive.
    pub workers: u64,
    /// Invocations blocked right now waiting for a registration, or for a task
    /// launched to this node (each such wait is in the node's wait-for graph,
    /// which refuses those that could never end).
    pub invocations_waiting: u64,
    /// Time from the runtime's start until its last invocation finished.
    pub last_invocation_done: Option<Duration>,
}

/// The live counters behind [`RuntimeStats`].
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) started: Instant,
    pub(crate) registrations_requested: AtomicU64,
    pub(crate) registrations_completed: AtomicU64,
    pub(crate) invocations: AtomicU64,
    pub(crate) invocations_failed: AtomicU64,
    pub(crate) tasks_run: AtomicU64,
    pub(crate) launches: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) workers: AtomicU64,
    /// Nanoseconds after `started`, plus one; 0 means never.
    pub(crate) last_invocation_done_ns: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            started: Instant::now(),
            registrations_requested: zero(),
            registrations_completed: zero(),
            invocations: zero(),
            invocations_failed: zero(),
            tasks_run: zero(),
            launches: zero(),
            messages_sent: zero(),
            frames_sent: zero(),
            bytes_sent: zero(),
            messages_received: zero(),
            frames_received: zero(),
            bytes_received: zero(),
            workers: zero(),
            last_invocation_done_ns: zero(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn note_invocation_done(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_invocation_done_ns
            .fetch_max(ns + 1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, node: u32, nodes: u32) -> RuntimeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let done = get(&self.last_invocation_done_ns);
        RuntimeStats {
            node,
            nodes,
            registrations_requested: get(&self.registrations_requested),
            registrations_completed: get(&self.registrations_completed),
            invocations: get(&self.invocations),
            invocations_failed: get(&self.invocations_failed),
            tasks_run: get(&self.tasks_run),
            launches: get(&self.launches),
            messages_sent: get(&self.messages_sent),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            messages_received: get(&self.messages_received),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            workers: get(&self.workers),
            invocations_waiting: 0,
            last_invocation_done: (done > 0).then(|| Duration::from_nanos(done - 1)),
        }
    }
}
