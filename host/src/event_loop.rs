//! The event loop: the one thread that owns the protocol core. It feeds the core
//! commands (from the API and the workers) and frames (from the transport), and
//! carries out the core's outputs: frames to send, invocations and tasks to hand
//! to workers, handles to complete. It never runs user code and never loads a
//! library, so nothing a plugin does can stall the protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use herald_core::{
    InvocationId, Key, LaunchId, Node, NodeId, Output, RequestId, decode_frame, encode_frames,
};
use herald_tcp::MeshEvent;

use crate::HostError;
use crate::execute;
use crate::handles::Completion;
use crate::pool::WorkerPool;
use crate::runtime::JobEnd;
use crate::shared::{Command, Flush, Shared};
use crate::stats::Counters;
use crate::tasks::{END_JOB_TASK, FINALIZE_TASK};
use crate::transport::Transport;

/// How long the loop sleeps when no batch is open: only a bound, never a wait
/// for something to happen.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

pub(crate) struct EventLoop {
    node: Node,
    shared: Arc<Shared>,
    transport: Box<dyn Transport>,
    pool: WorkerPool,
    /// Registration handles by the core's request id.
    requests: HashMap<RequestId, u64>,
    /// Task handles by the core's launch id.
    launches: HashMap<LaunchId, u64>,
    /// Key chains of the invocations running here, to build their children's.
    running: HashMap<InvocationId, Arc<[Key]>>,
    /// Callers of `Runtime::quiesce` waiting for `requests` and `launches` to empty.
    quiescing: Vec<crossbeam_channel::Sender<()>>,
}

impl EventLoop {
    pub(crate) fn new(node: Node, shared: Arc<Shared>, transport: Box<dyn Transport>) -> Self {
        let counted = Arc::clone(&shared);
        let pool = WorkerPool::new(
            shared.config.worker_idle_timeout,
            Box::new(move |n| {
                counted
                    .counters
                    .workers
                    .store(n, std::sync::atomic::Ordering::Relaxed)
            }),
        );
        Self {
            node,
            shared,
            transport,
            pool,
            requests: HashMap::new(),
            launches: HashMap::new(),
            running: HashMap::new(),
            quiescing: Vec::new(),
        }
    }

    /// Runs until a `Shutdown` command (or every command sender is gone), then
    /// closes the transport and wakes every waiter.
    pub(crate) fn run(mut self, commands: Receiver<Command>, mut events: Receiver<MeshEvent>) {
        loop {
            let wake = self.shared.next_batch_deadline().map_or(IDLE_WAKE, |due| {
                due.saturating_duration_since(Instant::now())
            });
            if wake.is_zero() {
                // Due batches go out even while commands and frames keep arriving
                // (then the `default` arm below would never be taken).
                self.shared.flush_batches(Flush::Due(Instant::now()));
            }
            select! {
                recv(commands) -> command => match command {
                    Ok(Command::Shutdown) | Err(_) => break,
                    Ok(command) => self.handle_command(command),
                },
                recv(events) -> event => match event {
                    Ok(event) => self.handle_event(event),
                    Err(_) => {
                        tracing::debug!("herald: transport events closed");
                        events = crossbeam_channel::never();
                    }
                },
                default(wake) => self.shared.flush_batches(Flush::Due(Instant::now())),
            }
            self.drain_outputs();
            // Settled: nothing asked here is unanswered, or nothing ever will be
            // (a fenced node takes no further part).
            let settled = (self.requests.is_empty() && self.launches.is_empty())
                || self.node.fenced_by().is_some();
            if settled && !self.quiescing.is_empty() {
                for done in self.quiescing.drain(..) {
                    let _ = done.send(());
                }
            }
        }
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.registrations.close();
        self.shared.task_results.close();
        self.shared.set_job_end(JobEnd::Stopped);
        self.transport.shutdown();
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Register {
                handle,
                registration,
                parent,
            } => match self.node.register(registration, parent) {
                Ok(request) => {
                    self.requests.insert(request, handle);
                }
                Err(error) => {
                    self.complete_registration(handle, Err(HostError::Protocol(error.to_string())))
                }
            },
            Command::Launch {
                handle,
                to,
                task,
                args,
                parent,
            } => match if task == END_JOB_TASK || task == FINALIZE_TASK {
                // Ending the job (and arriving at its end) waits for what the
                // target must finish, but not for it to have succeeded.
                self.node.launch_control(to, task, args)
            } else {
                self.node.launch(to, task, args, parent)
            } {
                Ok(launch) => {
                    self.launches.insert(launch, handle);
                }
                Err(error) => {
                    let error = HostError::InvalidArgument(error.to_string());
                    let _ = self.shared.task_results.complete(handle, Err(error));
                }
            },
            Command::InvocationFinished { id, outcome } => {
                self.running.remove(&id);
                if let Err(error) = self.node.invocation_finished(id, outcome) {
                    tracing::error!(%error, "herald: bug: finished an unknown invocation");
                }
            }
            Command::TaskFinished { run, outcome } => {
                if let Err(error) = self.node.task_finished(run, outcome) {
                    tracing::error!(%error, "herald: bug: finished an unknown task");
                }
            }
            Command::Quiesce(done) => self.quiescing.push(done),
            Command::BatchOpened | Command::Shutdown => {}
        }
    }

    fn handle_event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::Frame { from, bytes } => {
                let counters = &self.shared.counters;
                Counters::add(&counters.frames_received, 1);
                Counters::add(&counters.bytes_received, bytes.len() as u64);
                let messages = match decode_frame(&bytes, self.shared.config.max_frame_bytes) {
                    Ok(messages) => messages,
                    Err(error) => return self.reject_peer(from, &error),
                };
                Counters::add(&counters.messages_received, messages.len() as u64);
                for message in messages {
                    if let Err(error) = self.node.handle_message(NodeId(from), message) {
                        return self.reject_peer(from, &error);
                    }
                }
            }
            MeshEvent::PeerDown { node, reason } => {
                let ended = self.shared.job_end.lock().is_ok_and(|end| end.is_some());
                if ended {
                    tracing::debug!(node, %reason, "herald: node left after the end of the job");
                } else {
                    tracing::warn!(node, %reason, "herald: node down");
                }
                self.node.peer_down(NodeId(node), reason.clone());
                self.shared.arrivals.down(node);
                if node == 0 && self.shared.node != NodeId(0) {
                    self.shared.set_job_end(JobEnd::CoordinatorLost { reason });
                }
            }
        }
    }

    /// An authenticated peer sent what no correct node sends (a frame that does
    /// not decode, a forged key): skipping the message could leave registrations
    /// waiting for it forever, so the peer is treated as down from now on and
    /// named unreachable wherever it was needed.
    fn reject_peer(&mut self, from: u32, error: &dyn std::fmt::Display) {
        tracing::error!(from, %error, "herald: node sent an invalid frame; treating it as down");
        self.node
            .peer_down(NodeId(from), format!("sent an invalid frame: {error}"));
    }

    fn drain_outputs(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit { to, messages } => self.transmit(to, &messages),
                Output::Invoke(invocation) => {
                    let mut keys = vec![invocation.key];
                    if let Some(parent) = invocation.parent.and_then(|p| self.running.get(&p)) {
                        keys.extend(parent.iter().copied());
                    }
                    let keys: Arc<[Key]> = keys.into();
                    self.running.insert(invocation.id, Arc::clone(&keys));
                    let shared = Arc::clone(&self.shared);
                    self.pool.submit(Box::new(move || {
                        execute::run_invocation(&shared, invocation, keys)
                    }));
                }
                Output::Completed { request, result } => {
                    if let Some(handle) = self.requests.remove(&request) {
                        Counters::add(&self.shared.counters.registrations_completed, 1);
                        self.complete_registration(handle, Ok(result));
                    }
                }
                Output::RunTask(request) if request.task == END_JOB_TASK => {
                    let by = request.run.origin.0;
                    if let Err(error) = self.node.task_finished(request.run, Ok(Vec::new())) {
                        tracing::error!(%error, "herald: bug: cannot answer the end of the job");
                    }
                    self.shared.set_job_end(JobEnd::Ended { by });
                }
                Output::RunTask(request) if request.task == FINALIZE_TASK => {
                    let from = request.run.origin.0;
                    if let Err(error) = self.node.task_finished(request.run, Ok(Vec::new())) {
                        tracing::error!(%error, "herald: bug: cannot answer a finalize");
                    }
                    self.shared.arrivals.arrive(from);
                }
                Output::RunTask(request) => {
                    let shared = Arc::clone(&self.shared);
                    self.pool
                        .submit(Box::new(move || execute::run_task(&shared, request)));
                }
                Output::TaskCompleted { launch, outcome } => {
                    if let Some(handle) = self.launches.remove(&launch) {
                        let result = outcome.map_err(|error| HostError::Task(self.named(error)));
                        let _ = self.shared.task_results.complete(handle, result);
                    }
                }
                Output::PeerDown { node, by, reason } => {
                    // After the end of the job, nodes leaving is expected.
                    if self.shared.job_end.lock().is_ok_and(|end| end.is_some()) {
                        tracing::debug!(%node, %by, %reason, "herald: node left after the end of the job");
                    } else {
                        tracing::warn!(%node, %by, %reason, "herald: node is down in the job's view");
                    }
                    self.shared.arrivals.down(node.0);
                }
                Output::Fenced { by, reason } => {
                    tracing::error!(%by, %reason, "herald: this node was declared down");
                    // Nothing more will be answered here: whoever waits for the
                    // job's end or for this node's work to settle stops waiting.
                    self.shared
                        .arrivals
                        .fence(format!("this node was declared down by {by}: {reason}"));
                    self.shared.set_job_end(JobEnd::Stopped);
                }
            }
        }
    }

    fn transmit(&mut self, to: NodeId, messages: &[herald_core::Message]) {
        match encode_frames(messages, self.shared.config.max_frame_bytes) {
            Ok(frames) => {
                let counters = &self.shared.counters;
                Counters::add(&counters.messages_sent, messages.len() as u64);
                for frame in frames {
                    Counters::add(&counters.frames_sent, 1);
                    Counters::add(&counters.bytes_sent, frame.len() as u64);
                    self.transport.send(to.0, frame);
                }
            }
            Err(error) => tracing::error!(%to, %error, "herald: messages dropped"),
        }
    }

    /// A task error with the registration it required named, when it failed.
    fn named(&self, mut error: herald_core::TaskError) -> herald_core::TaskError {
        if let herald_core::TaskErrorKind::RequirementFailed { key, error: text } = &mut error.kind
        {
            if let Some(name) = self.shared.name_of(key) {
                *text = format!("registration of {name}: {text}");
            }
        }
        error
    }

    fn complete_registration(
        &self,
        handle: u64,
        outcome: Result<herald_core::RegistrationResult, HostError>,
    ) {
        if let Completion::Detached(outcome) = self.shared.complete_registration(handle, outcome) {
            self.shared.forget_key(handle);
            match outcome {
                Ok(result) if result.is_ok() => {}
                Ok(result) => {
                    let what = self.shared.name_of(&result.key);
                    let error = HostError::Registration {
                        what: what.map_or_else(|| result.key.short(), |w| w.to_string()),
                        result,
                    };
                    tracing::warn!(%error, "herald: a registration nobody waits for failed")
                }
                Err(error) => {
                    tracing::warn!(%error, "herald: a registration nobody waits for failed")
                }
            }
        }
    }
}
