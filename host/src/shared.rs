//! State shared by the API, the event loop and the workers of one runtime, and the
//! commands the event loop accepts. API calls never wait for the event loop: they
//! create a pending handle, queue a command, run the loop if no other thread is
//! running it (see [`Driver`](crate::driver::Driver)), and return.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Instant;

use crossbeam_channel::Sender;
use herald_core::{InvocationId, Key, NodeId, Registration, RegistrationResult, TaskRunId, View};

use crate::code::{TaskBatch, TaskVariant, WireCode, describe_registration};
use crate::config::HostConfig;
use crate::context;
use crate::driver::Driver;
use crate::error::HostError;
use crate::executor::Executor;
use crate::finalize::Arrivals;
use crate::handles::{Completion, HandleTable, WaitOutcome};
use crate::membership::{Admission, NodeDownHook, ViewHook};
use crate::native::Policy;
use crate::runtime::JobEnd;
use crate::stats::Counters;
use crate::tasks::TaskRegistry;
use crate::unawaited::Unawaited;
use crate::waits::WaitGraph;

/// What a registration handle resolves to.
pub(crate) type RegistrationOutcome = Result<RegistrationResult, HostError>;
/// What a task handle resolves to.
pub(crate) type TaskResult = Result<Vec<u8>, HostError>;

/// Inputs of the event loop. One channel carries them all, so a nested
/// registration sent by a worker reaches the core before the worker's
/// `InvocationFinished` for its parent.
#[derive(Debug)]
pub(crate) enum Command {
    Register {
        handle: u64,
        registration: Registration,
        parent: Option<InvocationId>,
    },
    Launch {
        handle: u64,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        /// The invocation running on the launching thread, if any.
        parent: Option<InvocationId>,
    },
    InvocationFinished {
        id: InvocationId,
        outcome: Result<(), String>,
    },
    TaskFinished {
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    },
    /// Answer on the channel once every registration requested and every task
    /// launched on this node so far has its answer.
    Quiesce(Sender<()>),
    /// Admit a node the transport has just authenticated with a fresh id.
    Admit(u32),
    /// Start handling frames from other nodes (held until now).
    OpenEvents,
    Shutdown,
}

/// Everything a runtime's threads share.
pub(crate) struct Shared {
    /// Distinguishes runtimes of one process in the per-thread context.
    pub(crate) id: u64,
    pub(crate) node: NodeId,
    /// Node ids in this node's current view (see [`Shared::nodes`]).
    nodes: AtomicU32,
    /// Called on every change of this node's view.
    pub(crate) view_hooks: Mutex<Vec<ViewHook>>,
    /// Called with each node that went down or left (see `Runtime::on_node_down`).
    pub(crate) down_hooks: Mutex<Vec<NodeDownHook>>,
    /// Whether this node is a member, or where its join stands.
    pub(crate) admission: Mutex<Admission>,
    pub(crate) admission_changed: Condvar,
    pub(crate) config: HostConfig,
    /// Where libraries may be loaded from (`config.library_dirs`, canonicalised).
    pub(crate) policy: Policy,
    /// Runs the event loop on the threads that bring it work.
    pub(crate) driver: Driver,
    pub(crate) registrations: HandleTable<RegistrationOutcome>,
    pub(crate) task_results: HandleTable<TaskResult>,
    /// The key of each registration handle that has one, for deadlock checks.
    handle_keys: Mutex<HashMap<u64, Key>>,
    /// Which running registrations wait for which, to refuse waits that could
    /// never end.
    waits: WaitGraph,
    /// What each registration requested here is, by key: errors name it.
    names: Mutex<HashMap<Key, Arc<str>>>,
    /// Registrations made through the C ABI that nobody waits for yet.
    pub(crate) unawaited: Unawaited,
    next_handle: AtomicU64,
    batches: Mutex<BTreeMap<Option<InvocationId>, OpenBatch>>,
    pub(crate) tasks: TaskRegistry,
    pub(crate) executors: RwLock<HashMap<String, Arc<dyn Executor>>>,
    pub(crate) counters: Counters,
    pub(crate) job_end: Mutex<Option<JobEnd>>,
    pub(crate) job_end_changed: Condvar,
    /// On node 0: the ranks that called finalize.
    pub(crate) arrivals: Arrivals,
    pub(crate) stopped: AtomicBool,
}

/// Task variants waiting to go out as one registration.
struct OpenBatch {
    handle: u64,
    batch: TaskBatch,
    bytes: usize,
    first: Instant,
    last: Instant,
}

/// Which open batches to send.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Flush {
    /// All of them (before a launch or a wait, which must see them).
    All,
    /// The one made inside this invocation, or the top-level one.
    Context(Option<InvocationId>),
    /// Those whose delay has run out.
    Due(Instant),
}

impl Shared {
    pub(crate) fn new(node: NodeId, nodes: u32, config: HostConfig, driver: Driver) -> Self {
        static RUNTIMES: AtomicU64 = AtomicU64::new(1);
        Self {
            id: RUNTIMES.fetch_add(1, Ordering::Relaxed),
            node,
            nodes: AtomicU32::new(nodes),
            view_hooks: Mutex::new(Vec::new()),
            down_hooks: Mutex::new(Vec::new()),
            admission: Mutex::new(Admission::Member),
            admission_changed: Condvar::new(),
            policy: Policy::new(&config.library_dirs),
            config,
            driver,
            registrations: HandleTable::new(),
            task_results: HandleTable::new(),
            handle_keys: Mutex::new(HashMap::new()),
            waits: WaitGraph::default(),
            names: Mutex::new(HashMap::new()),
            unawaited: Unawaited::default(),
            next_handle: AtomicU64::new(1),
            batches: Mutex::new(BTreeMap::new()),
            tasks: TaskRegistry::default(),
            executors: RwLock::new(HashMap::new()),
            counters: Counters::new(),
            job_end: Mutex::new(None),
            job_end_changed: Condvar::new(),
            arrivals: Arrivals::default(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Node ids in this node's current view: every member's id is below it.
    pub(crate) fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Acquire)
    }

    /// `node` went down in the job's view, or left after the end of the job:
    /// it no longer takes part (end-of-job arrivals stop waiting for it), and
    /// every hook hears of it.
    pub(crate) fn node_gone(&self, node: u32) {
        self.arrivals.down(node);
        let hooks: Vec<NodeDownHook> = self
            .down_hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for hook in hooks {
            call_hook("node-down", || hook(node));
        }
    }

    /// The core's view changed: record it, then tell every hook.
    pub(crate) fn set_view(&self, view: View) {
        self.nodes.store(view.size, Ordering::Release);
        // Rank 0's finalize waits for every node of the view, joiners included.
        self.arrivals.view_changed();
        let hooks: Vec<ViewHook> = self
            .view_hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for hook in hooks {
            call_hook("view", || hook(view));
        }
    }

    /// Whether this node is still replaying the job's log (it joined late).
    pub(crate) fn is_joining(&self) -> bool {
        *self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            == Admission::Joining
    }

    /// Where this node's join stands now.
    pub(crate) fn set_admission(&self, admission: Admission) {
        *self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = admission;
        self.admission_changed.notify_all();
    }

    /// A fresh handle id (never 0, which the C ABI uses for "no handle").
    pub(crate) fn new_handle_id(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `registration` to the core, nested in this thread's invocation if it
    /// runs one, and returns the pending handle's id.
    pub(crate) fn register(&self, registration: Registration) -> u64 {
        let placement = context::placement(self.id);
        let handle = self.new_handle_id();
        self.registrations.insert_pending(handle);
        self.lock_keys().insert(handle, registration.key());
        self.remember_name(&registration);
        self.record_if_loading(placement.loading, handle);
        Counters::add(&self.counters.registrations_requested, 1);
        let Some(parent) = placement.parent else {
            let command = Command::Register {
                handle,
                registration,
                parent: None,
            };
            self.send_or_fail(handle, command);
            self.driver.run();
            return handle;
        };
        // The graph mirrors the core's nested edges in the order the core gets
        // them: it is updated and the command sent as one step.
        let key = registration.key();
        let command = Command::Register {
            handle,
            registration,
            parent: Some(parent.id),
        };
        let mut sent = false;
        let refused = self.waits.nested_and(handle, parent.keys[0], key, || {
            sent = self.submit(command);
            sent
        });
        self.driver.run();
        if refused > 0 {
            self.registrations.wake_all();
            self.task_results.wake_all();
        }
        if !sent {
            let _ = self.complete_registration(handle, Err(self.stopped_error()));
        }
        handle
    }

    /// Adds a task variant to the open batch of this thread's context and returns
    /// that batch's handle (with one more holder).
    pub(crate) fn add_variant(&self, variant: TaskVariant) -> u64 {
        let placement = context::placement(self.id);
        let parent = placement.parent.map(|frame| frame.id);
        if placement.loading && parent.is_none() && self.tasks.contains_identical(&variant) {
            // A library loaded lazily for a task re-registers what every node has
            // already: answer here instead of starting another global round.
            let handle = self.new_handle_id();
            self.registrations
                .insert_ready(handle, Ok(already_registered()));
            self.record_if_loading(true, handle);
            return handle;
        }
        let now = Instant::now();
        let len = TaskBatch::variant_len(&variant);
        let mut batches = self.lock_batches();
        let mut created = false;
        let open = batches.entry(parent).or_insert_with(|| {
            created = true;
            let handle = self.new_handle_id();
            self.registrations.insert_pending(handle);
            Counters::add(&self.counters.registrations_requested, 1);
            OpenBatch {
                handle,
                batch: TaskBatch::default(),
                bytes: 0,
                first: now,
                last: now,
            }
        });
        let handle = open.handle;
        if !created {
            self.registrations.retain(handle);
        }
        open.batch.push(variant);
        open.bytes += len;
        open.last = now;
        if open.bytes >= self.config.batch_max_bytes {
            if let Some(open) = batches.remove(&parent) {
                self.send_batch(open, parent);
            }
        }
        drop(batches);
        // A batch that filled up is queued; a new one is due later (the event
        // loop thread learns when).
        self.driver.run();
        self.record_if_loading(placement.loading, handle);
        handle
    }

    /// Sends the selected open batches to the core. The batch lock is held while
    /// sending, so a batch taken here is queued before anything its context sends
    /// after its own flush.
    pub(crate) fn flush_batches(&self, which: Flush) {
        let mut batches = self.lock_batches();
        let chosen: Vec<Option<InvocationId>> = batches
            .iter()
            .filter(|(context, open)| match which {
                Flush::All => true,
                Flush::Context(wanted) => **context == wanted,
                Flush::Due(now) => self.batch_deadline(open) <= now,
            })
            .map(|(context, _)| *context)
            .collect();
        for context in &chosen {
            if let Some(open) = batches.remove(context) {
                self.send_batch(open, *context);
            }
        }
        drop(batches);
        if !chosen.is_empty() {
            self.driver.run();
        }
    }

    /// When the earliest open batch is due, if any is open.
    pub(crate) fn next_batch_deadline(&self) -> Option<Instant> {
        let batches = self.lock_batches();
        batches.values().map(|open| self.batch_deadline(open)).min()
    }

    /// Waits for a registration handle, refusing waits that could never end: on
    /// this thread (inside a load, or inside the registration's own invocation),
    /// or across threads (a cycle of invocations waiting for registrations
    /// nested in each other), including a cycle closed while this waits.
    pub(crate) fn wait_registration(
        &self,
        handle: u64,
        deadline: Option<Instant>,
    ) -> Result<RegistrationResult, HostError> {
        let key = self.lock_keys().get(&handle).copied();
        let refused = |reason: String| HostError::WouldDeadlock {
            reason: self.with_name(key, reason),
        };
        if let Some(reason) = context::deadlock_reason(self.id, key) {
            return Err(refused(reason));
        }
        if let Some(outcome) = self.try_registration(handle) {
            return outcome;
        }
        let waiter = context::placement(self.id).parent;
        let ticket = match (waiter, key) {
            (Some(waiter), Some(key)) => Some(
                self.waits
                    .begin_wait(waiter.keys[0], key)
                    .map_err(refused)?,
            ),
            _ => None,
        };
        self.flush_batches(Flush::All);
        let started = Instant::now();
        let refusal = || ticket.as_ref().and_then(|t| t.refusal());
        let outcome = self
            .registrations
            .wait_unless(handle, deadline, || refusal().is_some());
        if let Some(ticket) = &ticket {
            self.waits.end_wait(ticket);
        }
        match outcome {
            WaitOutcome::Ready(outcome) => self.registration_outcome(outcome),
            WaitOutcome::Unknown => Err(HostError::UnknownHandle(handle)),
            WaitOutcome::TimedOut => Err(HostError::TimedOut {
                waited: started.elapsed(),
            }),
            WaitOutcome::Closed => Err(self.stopped_error()),
            WaitOutcome::Interrupted => Err(refused(refusal().unwrap_or_default())),
        }
    }

    /// Why nothing more completes: this node was fenced, or the runtime stopped.
    pub(crate) fn stopped_error(&self) -> HostError {
        let end = self.job_end.lock().unwrap_or_else(PoisonError::into_inner);
        match &*end {
            Some(JobEnd::Fenced { by, reason }) => HostError::Fenced {
                by: *by,
                reason: reason.clone(),
            },
            _ => HostError::Stopped,
        }
    }

    /// Stores the outcome of a registration handle and wakes its waiters.
    pub(crate) fn complete_registration(
        &self,
        handle: u64,
        outcome: RegistrationOutcome,
    ) -> Completion<RegistrationOutcome> {
        self.waits.completed(handle);
        self.registrations.complete(handle, outcome)
    }

    /// Number of invocations blocked in a wait the wait-for graph tracks.
    pub(crate) fn waits_in_invocations(&self) -> usize {
        self.waits.waiting()
    }

    /// What [`wait_registration`](Self::wait_registration) would return now, or
    /// `None` while the registration is in progress. Never blocks.
    pub(crate) fn try_registration(&self, handle: u64) -> Option<RegistrationOutcome> {
        self.registrations.poll(handle).map(|outcome| {
            wait_result(handle, outcome, || self.stopped_error())
                .and_then(|outcome| self.registration_outcome(outcome))
        })
    }

    /// What [`wait_task`](Self::wait_task) would return now, or `None` while the
    /// task is pending. Never blocks.
    pub(crate) fn try_task(&self, handle: u64) -> Option<TaskResult> {
        self.task_results.poll(handle).map(|outcome| {
            wait_result(handle, outcome, || self.stopped_error()).and_then(|result| result)
        })
    }

    /// Drops one holder of a registration handle.
    pub(crate) fn release_registration(&self, handle: u64) {
        self.registrations.release(handle);
        if !self.registrations.contains(handle) {
            self.lock_keys().remove(&handle);
        }
    }

    /// Waits for a task handle, refusing waits that could never end: inside a
    /// load, or inside an invocation for a task launched to this node that the
    /// core holds until something that needs this invocation is done.
    pub(crate) fn wait_task(&self, handle: u64, deadline: Option<Instant>) -> TaskResult {
        if let Some(reason) = context::deadlock_reason(self.id, None) {
            return Err(HostError::WouldDeadlock { reason });
        }
        if let Some(result) = self.try_task(handle) {
            return result;
        }
        let ticket = match context::placement(self.id).parent {
            Some(waiter) => self
                .waits
                .begin_task_wait(waiter.keys[0], handle, self.is_joining())
                .map_err(|reason| HostError::WouldDeadlock { reason })?,
            None => None,
        };
        let started = Instant::now();
        let refusal = || ticket.as_ref().and_then(|t| t.refusal());
        let outcome = self
            .task_results
            .wait_unless(handle, deadline, || refusal().is_some());
        if let Some(ticket) = &ticket {
            self.waits.end_wait(ticket);
        }
        match outcome {
            WaitOutcome::Ready(result) => result,
            WaitOutcome::Unknown => Err(HostError::UnknownHandle(handle)),
            WaitOutcome::TimedOut => Err(HostError::TimedOut {
                waited: started.elapsed(),
            }),
            WaitOutcome::Closed => Err(self.stopped_error()),
            WaitOutcome::Interrupted => Err(HostError::WouldDeadlock {
                reason: refusal().unwrap_or_default(),
            }),
        }
    }

    /// Sends a launch to this node, recording what the core will hold the task
    /// for (in the same order as the core sees nested registrations).
    pub(crate) fn launch_here(&self, handle: u64, command: Command) {
        let launcher = context::placement(self.id)
            .parent
            .map(|frame| frame.keys[0]);
        let mut command = Some(command);
        let mut sent = false;
        self.waits.launched_here(handle, launcher, || {
            sent = command.take().is_some_and(|command| self.submit(command));
            sent
        });
        self.driver.run();
        if !sent {
            let _ = self
                .task_results
                .complete(handle, Err(self.stopped_error()));
        }
    }

    /// Drops the holder of a task handle (task handles have one).
    pub(crate) fn release_task(&self, handle: u64) {
        self.task_results.release(handle);
        self.waits.task_released(handle);
    }

    /// Records that `key` was invoked here as a global registration.
    pub(crate) fn global_invoked(&self, key: Key) {
        self.waits.global_invoked(key);
    }

    /// Queues `command` for the event loop, unless the loop is over (false).
    /// [`Driver::run`] (with no lock of this state held) then handles it.
    pub(crate) fn submit(&self, command: Command) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            return false;
        }
        self.driver.queue(command);
        true
    }

    /// [`submit`](Self::submit), then runs the loop on this thread unless another
    /// thread is running it. Call it holding no lock of this state.
    pub(crate) fn send(&self, command: Command) -> bool {
        let queued = self.submit(command);
        self.driver.run();
        queued
    }

    /// Sends a command whose answer completes `handle`; if the event loop is gone,
    /// completes it with [`HostError::Stopped`] at once.
    pub(crate) fn send_or_fail(&self, handle: u64, command: Command) {
        let is_launch = matches!(command, Command::Launch { .. });
        if !self.submit(command) {
            if is_launch {
                let _ = self
                    .task_results
                    .complete(handle, Err(self.stopped_error()));
            } else {
                let _ = self.complete_registration(handle, Err(self.stopped_error()));
            }
        }
    }

    /// Forgets the key of a handle that completed with nobody holding it.
    pub(crate) fn forget_key(&self, handle: u64) {
        self.lock_keys().remove(&handle);
    }

    /// Records how the job ended and wakes whoever waits for it (first one wins,
    /// except that a fence replaces the loss of node 0: at one end of a broken
    /// link to node 0 this node declares node 0 down itself, while node 0 may
    /// declare this node down, and the job applies whichever news reaches each
    /// node first; when the job's verdict is that this node is down, that is
    /// how its part ended).
    pub(crate) fn set_job_end(&self, end: JobEnd) {
        let mut slot = self.job_end.lock().unwrap_or_else(PoisonError::into_inner);
        let replace = matches!(
            (&*slot, &end),
            (None, _) | (Some(JobEnd::CoordinatorLost { .. }), JobEnd::Fenced { .. })
        );
        if replace {
            *slot = Some(end);
            self.job_end_changed.notify_all();
        }
    }

    /// During a load, records the handle in the load's frame, which holds it
    /// (one more holder) until the load's safe point releases it.
    fn record_if_loading(&self, loading: bool, handle: u64) {
        if loading && context::record_during_load(self.id, handle) {
            self.registrations.retain(handle);
        }
    }

    /// What the registration with `key` is, if it was requested here.
    pub(crate) fn name_of(&self, key: &Key) -> Option<Arc<str>> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// `reason` (a refusal that names the registration `key` by its short key)
    /// with the registration's name (its tag, or what it runs) next to the key.
    fn with_name(&self, key: Option<Key>, reason: String) -> String {
        let Some((key, name)) = key.and_then(|key| Some((key, self.name_of(&key)?))) else {
            return reason;
        };
        let short = format!("registration {}", key.short());
        reason.replacen(&short, &format!("{short} ({name})"), 1)
    }

    fn remember_name(&self, registration: &Registration) {
        let name = describe_registration(&registration.code, registration.tag.as_deref());
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(registration.key(), name.into());
    }

    /// What waiting for a registration handle returns for its stored outcome: a
    /// result naming failed or unreachable nodes is an error naming the registration.
    fn registration_outcome(&self, outcome: RegistrationOutcome) -> RegistrationOutcome {
        match outcome {
            Ok(result) if !result.is_ok() => Err(HostError::Registration {
                what: self
                    .name_of(&result.key)
                    .map_or_else(|| format!("key {}", result.key.short()), |n| n.to_string()),
                result,
            }),
            other => other,
        }
    }

    fn send_batch(&self, open: OpenBatch, parent: Option<InvocationId>) {
        let registration = Registration::new(WireCode::Tasks(open.batch).encode(), Vec::new());
        self.remember_name(&registration);
        self.send_or_fail(
            open.handle,
            Command::Register {
                handle: open.handle,
                registration,
                parent,
            },
        );
    }

    fn batch_deadline(&self, open: &OpenBatch) -> Instant {
        (open.last + self.config.batch_idle).min(open.first + self.config.batch_max_delay)
    }

    fn lock_batches(&self) -> std::sync::MutexGuard<'_, BTreeMap<Option<InvocationId>, OpenBatch>> {
        self.batches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Key>> {
        self.handle_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A polled outcome as the caller sees it. (`poll` never times out; the arm is
/// there for completeness.)
fn wait_result<T>(
    handle: u64,
    outcome: WaitOutcome<T>,
    stopped: impl FnOnce() -> HostError,
) -> Result<T, HostError> {
    match outcome {
        WaitOutcome::Ready(value) => Ok(value),
        WaitOutcome::Unknown => Err(HostError::UnknownHandle(handle)),
        WaitOutcome::TimedOut => Err(HostError::TimedOut {
            waited: std::time::Duration::ZERO,
        }),
        WaitOutcome::Closed => Err(stopped()),
        WaitOutcome::Interrupted => Err(HostError::WouldDeadlock {
            reason: "the wait was interrupted".into(),
        }),
    }
}

/// The answer for a re-registration that needed no round.
fn already_registered() -> RegistrationResult {
    RegistrationResult {
        key: Key::default(),
        scope: herald_core::Scope::Local,
        failures: Vec::new(),
        unreachable: Vec::new(),
    }
}

/// Calls a program's hook from the event loop; a panic in it is logged and goes
/// no further (it would otherwise unwind through the loop, on whichever thread
/// runs it, and leave the loop stuck).
fn call_hook(kind: &str, hook: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)) {
        let text = crate::execute::panic_text(&panic);
        tracing::error!(kind, %text, "herald: a {kind} hook panicked: {text}");
    }
}
