//! The event loop: the protocol core and what the host keeps beside it. It feeds
//! the core commands (from the API and the workers) and frames (from the
//! transport), and carries out the core's outputs: frames to send, invocations and
//! tasks to hand to workers, handles to complete. It runs on whichever thread
//! brings it work, one at a time (see [`Driver`](crate::driver::Driver)), and never
//! runs user code or loads a library (only the short view and node-down hooks), so
//! nothing a plugin does can stall the protocol.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use herald_core::{
    InvocationId, Key, LaunchId, Message, Node, NodeId, Output, RegisterError, RequestId,
    UsageError, encode_frames,
};
use herald_tcp::MeshEvent;

use crate::HostError;
use crate::execute;
use crate::handles::Completion;
use crate::membership::Admission;
use crate::pool::WorkerPool;
use crate::runtime::JobEnd;
use crate::shared::{Command, Flush, Shared};
use crate::stats::Counters;
use crate::tasks::{END_JOB_TASK, FINALIZE_TASK, lost_in_end_job_args};
use crate::transport::Transport;
use crate::watchdog::{Label, Waiting, Watchdog, coordinator_of};

pub(crate) struct EventLoop {
    node: Node,
    shared: Arc<Shared>,
    transport: Box<dyn Transport>,
    pool: WorkerPool,
    /// Registration handles (and keys) by the core's request id.
    requests: HashMap<RequestId, (u64, Key)>,
    /// Task handles by the core's launch id.
    launches: HashMap<LaunchId, u64>,
    /// Key chains of the invocations running here, to build their children's.
    running: HashMap<InvocationId, Arc<[Key]>>,
    /// Callers of `Runtime::quiesce` waiting for `requests` and `launches` to empty.
    quiescing: Vec<crossbeam_channel::Sender<()>>,
    /// Nodes the job declared down: their links close once the frames queued for
    /// them (which may tell them so) are handed to the transport.
    to_close: Vec<u32>,
    /// Set when another node declared this one down: the loop stops.
    fenced: Option<(u32, String)>,
    /// Requests and launches that wait long are logged.
    watchdog: Watchdog,
    /// Launches of the end of the job, by target.
    end_launches: HashMap<LaunchId, u32>,
    /// Nodes that acknowledged the end of the job this node announced.
    ended: HashSet<u32>,
    /// Set by `Shutdown`: nothing more is handled.
    stopping: bool,
    /// Whether frames from other nodes are handled (see `HostConfig::hold_events`).
    events_open: bool,
}

impl EventLoop {
    pub(crate) fn new(node: Node, shared: Arc<Shared>, transport: Box<dyn Transport>) -> Self {
        let counted = Arc::clone(&shared);
        let poll_window = shared.config.poll_window;
        let events_open = !shared.config.hold_events;
        let pool = WorkerPool::new(
            shared.config.worker_idle_timeout,
            poll_window,
            Box::new(move |n| {
                counted
                    .counters
                    .workers
                    .store(n, std::sync::atomic::Ordering::Relaxed)
            }),
        );
        let occupancy = pool.poll_gate();
        transport.set_poll_gate(Arc::new(move || !occupancy.long_running()));
        let watchdog = Watchdog::new(shared.config.slow_warning);
        Self {
            node,
            shared,
            transport,
            pool,
            requests: HashMap::new(),
            launches: HashMap::new(),
            running: HashMap::new(),
            quiescing: Vec::new(),
            to_close: Vec::new(),
            fenced: None,
            watchdog,
            end_launches: HashMap::new(),
            ended: HashSet::new(),
            stopping: false,
            events_open,
        }
    }

    /// Handles every queued command, then (once frames are let in) every queued
    /// event, then whatever is due, and carries out the core's outputs. Called by
    /// the [`Driver`](crate::driver::Driver) on whichever thread brought work.
    pub(crate) fn step(&mut self, commands: &Receiver<Command>, events: &Receiver<MeshEvent>) {
        while !self.is_over() {
            let Ok(command) = commands.try_recv() else {
                break;
            };
            self.handle_command(command);
        }
        while self.events_open && !self.is_over() {
            match events.try_recv() {
                Ok(event) => self.handle_event(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    tracing::debug!("herald: transport events closed");
                    self.events_open = false;
                    break;
                }
            }
        }
        if self.next_due().is_some_and(|due| due <= Instant::now()) {
            self.on_timer();
        }
        self.drain_outputs();
        // Settled: nothing asked here is unanswered, or nothing ever will be
        // (a fenced node takes no further part).
        let settled =
            (self.requests.is_empty() && self.launches.is_empty()) || self.fenced.is_some();
        if settled && !self.quiescing.is_empty() {
            for done in self.quiescing.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Whether the loop is over: shut down, or this node was declared down.
    pub(crate) fn is_over(&self) -> bool {
        self.stopping || self.fenced.is_some()
    }

    /// Whether frames from other nodes are handled yet (see `hold_events`).
    pub(crate) fn events_open(&self) -> bool {
        self.events_open
    }

    /// When the loop next has timed work: a batch to send or a warning to log.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        [self.shared.next_batch_deadline(), self.watchdog.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The end of the loop: wakes every waiter (with [`HostError::Fenced`] if
    /// this node was fenced) and closes the transport (which may block while it
    /// sends what is queued).
    pub(crate) fn finish(mut self) {
        if let Some((by, reason)) = self.fenced.take() {
            // Recorded before the handles close, so every waiter learns why.
            self.shared.set_job_end(JobEnd::Fenced { by, reason });
        }
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.registrations.close();
        self.shared.task_results.close();
        self.shared.set_job_end(JobEnd::Stopped);
        // Callers of `quiesce` still waiting learn that the loop is gone.
        self.quiescing.clear();
        self.transport.shutdown();
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Register {
                handle,
                registration,
                parent,
            } => {
                let key = registration.key();
                match self.node.register(registration, parent) {
                    Ok(request) => {
                        self.requests.insert(request, (handle, key));
                        let place = if parent.is_some() {
                            "nested in an invocation here"
                        } else {
                            "requested here"
                        };
                        let label = Label::Text(match self.shared.name_of(&key) {
                            Some(name) => format!("{name}, {place}"),
                            None => place.to_owned(),
                        });
                        self.watchdog.start(
                            Waiting::Registration(request, key),
                            label,
                            Instant::now(),
                        );
                    }
                    Err(RegisterError::Fenced { by, reason }) => self
                        .complete_registration(handle, Err(HostError::Fenced { by: by.0, reason })),
                    Err(error) => self
                        .complete_registration(handle, Err(HostError::Protocol(error.to_string()))),
                }
            }
            Command::Launch {
                handle,
                to,
                task,
                args,
                parent,
            } => {
                let label = Label::Launch(task.clone(), to);
                let task_is_end_job = task == END_JOB_TASK;
                let launched = if task == END_JOB_TASK || task == FINALIZE_TASK {
                    // Ending the job (and arriving at its end) waits for what the
                    // target must finish, but not for it to have succeeded.
                    self.node.launch_control(to, task, args)
                } else {
                    self.node.launch(to, task, args, parent)
                };
                match launched {
                    Ok(launch) => {
                        if task_is_end_job {
                            self.end_launches.insert(launch, to.0);
                        }
                        self.launches.insert(launch, handle);
                        self.watchdog
                            .start(Waiting::Launch(launch), label, Instant::now());
                    }
                    Err(UsageError::Fenced { by, reason }) => {
                        let error = HostError::Fenced { by: by.0, reason };
                        let _ = self.shared.task_results.complete(handle, Err(error));
                    }
                    Err(error) => {
                        let error = HostError::InvalidArgument(error.to_string());
                        let _ = self.shared.task_results.complete(handle, Err(error));
                    }
                }
            }
            Command::InvocationFinished { id, outcome } => {
                self.running.remove(&id);
                self.watchdog.finish_running(Waiting::Invocation(id));
                if let Err(error) = self.node.invocation_finished(id, outcome) {
                    tracing::error!(%error, "herald: bug: finished an unknown invocation");
                }
            }
            Command::TaskFinished { run, outcome } => {
                self.watchdog.finish_running(Waiting::Task(run));
                if let Err(error) = self.node.task_finished(run, outcome) {
                    tracing::error!(%error, "herald: bug: finished an unknown task");
                }
            }
            Command::Quiesce(done) => self.quiescing.push(done),
            Command::Admit(joiner) => {
                if let Err(error) = self.node.admit(NodeId(joiner)) {
                    tracing::error!(joiner, %error, "herald: cannot admit node {joiner}");
                }
            }
            Command::Shutdown => self.stopping = true,
            Command::OpenEvents => self.events_open = true,
        }
    }

    fn handle_event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::Frame { from, bytes } => {
                let counters = &self.shared.counters;
                Counters::add(&counters.frames_received, 1);
                Counters::add(&counters.bytes_received, bytes.len() as u64);
                // The core decodes and handles the messages one at a time (and
                // decides about a bad peer); the loop only watches them go by.
                let watchdog = &mut self.watchdog;
                let handled = self
                    .node
                    .handle_frame_inspecting(NodeId(from), &bytes, |message| {
                        Counters::add(&counters.messages_received, 1);
                        // A requester's `Ran` may stand for its acknowledgement.
                        if let Message::Ack { key, .. } | Message::Ran { key, .. } = message {
                            watchdog.acknowledged(key, NodeId(from));
                        }
                        Ok(())
                    });
                if let Err(error) = handled {
                    reject_peer(from, &error);
                }
            }
            MeshEvent::Joined { node } => {
                // The transport authenticated a newcomer with a fresh rank (only on
                // node 0): admit it into a new view and send it the log.
                tracing::info!(node, "herald: node {node} joined the job; admitting it");
                if let Err(error) = self.node.admit(NodeId(node)) {
                    tracing::error!(node, %error, "herald: cannot admit node {node}");
                    self.transport.close_peer(node);
                }
            }
            MeshEvent::PeerDown { node, reason } => {
                if self.left_after_end(node) {
                    // Expected: telling every node would cost O(N) messages per
                    // leaving node, O(N²) for the end of every job.
                    tracing::debug!(node, %reason, "herald: node left after the end of the job");
                    self.shared.node_gone(node);
                    return;
                }
                tracing::warn!(node, %reason, "herald: link to node {node} lost");
                // Becomes the job's view: every node learns it, and `node` is fenced.
                self.node.peer_down(NodeId(node), reason);
            }
        }
    }

    /// Whether `node` leaving is the normal end of the job: this node was told the
    /// job ended (and acknowledged it), or it ended the job and `node` has
    /// acknowledged that. Otherwise (e.g. `node` died while this node waits for its
    /// acknowledgement of the end) the loss is declared like any other.
    fn left_after_end(&self, node: u32) -> bool {
        let end = self
            .shared
            .job_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*end {
            Some(JobEnd::Ended { by }) if *by == self.shared.node.0 => self.ended.contains(&node),
            Some(_) => true,
            None => false,
        }
    }

    /// Work with a deadline: due batches, and warnings about long waits.
    fn on_timer(&mut self) {
        let now = Instant::now();
        self.shared.flush_batches(Flush::Due(now));
        let node = &self.node;
        let nodes = self.shared.nodes();
        let silence_timeout = self.transport.silence_timeout();
        self.watchdog
            .warn_due(now, |waiting, acks_due| match waiting {
                Waiting::Registration(_, key) => {
                    let coordinator = coordinator_of(key, nodes, node.dead_nodes());
                    let mut text = if coordinator == node.config().node() {
                        "its round here (this node coordinates it) to hear from every node"
                            .to_owned()
                    } else {
                        format!("the job-wide answer from its coordinator, {coordinator}")
                    };
                    if !acks_due.is_empty() {
                        let names: Vec<String> = acks_due.iter().map(ToString::to_string).collect();
                        text.push_str(&format!(
                            "; acknowledgements (each for its subtree) still due here from {}",
                            names.join(", ")
                        ));
                    }
                    text.push_str(&format!(
                        "; {}; a node still running the callback names it in its own log",
                        silence_note(silence_timeout)
                    ));
                    text
                }
                // Said by the watchdog itself.
                Waiting::Launch(_) | Waiting::Invocation(_) | Waiting::Task(_) => String::new(),
            });
    }

    fn drain_outputs(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit { to, messages } => self.transmit(to, messages),
                Output::Invoke(invocation) => {
                    let mut keys = vec![invocation.key];
                    if let Some(parent) = invocation.parent.and_then(|p| self.running.get(&p)) {
                        keys.extend(parent.iter().copied());
                    }
                    let keys: Arc<[Key]> = keys.into();
                    self.running.insert(invocation.id, Arc::clone(&keys));
                    // A callback that never returns holds its registration (and
                    // every wait for it) for ever: it is named here, where it runs.
                    self.watchdog.start(
                        Waiting::Invocation(invocation.id),
                        Label::Registration(invocation.key, invocation.registration.clone()),
                        Instant::now(),
                    );
                    let shared = Arc::clone(&self.shared);
                    self.pool.submit(Box::new(move || {
                        execute::run_invocation(&shared, invocation, keys)
                    }));
                }
                Output::Completed { request, result } => {
                    if let Some((handle, key)) = self.requests.remove(&request) {
                        self.watchdog.finish(Waiting::Registration(request, key));
                        Counters::add(&self.shared.counters.registrations_completed, 1);
                        self.complete_registration(handle, Ok(result));
                    }
                }
                Output::RunTask(request) if request.task == END_JOB_TASK => {
                    let by = request.run.origin.0;
                    let lost = lost_in_end_job_args(&request.args);
                    if !lost.is_empty() {
                        self.shared.arrivals.lost_at_end(lost);
                    }
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
                    self.watchdog.start(
                        Waiting::Task(request.run),
                        Label::Text(request.task.clone()),
                        Instant::now(),
                    );
                    let shared = Arc::clone(&self.shared);
                    self.pool
                        .submit(Box::new(move || execute::run_task(&shared, request)));
                }
                Output::TaskCompleted { launch, outcome } => {
                    if let Some(to) = self.end_launches.remove(&launch) {
                        if outcome.is_ok() {
                            self.ended.insert(to);
                        }
                    }
                    if let Some(handle) = self.launches.remove(&launch) {
                        self.watchdog.finish_launch(launch);
                        let result = outcome.map_err(|error| HostError::Task(self.named(error)));
                        let _ = self.shared.task_results.complete(handle, result);
                    }
                }
                Output::PeerDown { node, by, reason } => {
                    let ended = self.shared.job_end.lock().is_ok_and(|end| end.is_some());
                    if ended {
                        tracing::debug!(%node, %by, %reason, "herald: node down after the end of the job");
                    } else {
                        tracing::warn!(
                            %node, %by, %reason,
                            "herald: {node} is down in the job's view (declared by {by}: {reason})"
                        );
                    }
                    self.to_close.push(node.0);
                    self.watchdog.node_down(node);
                    self.shared.node_gone(node.0);
                    if node == NodeId(0) && self.shared.node != NodeId(0) {
                        self.shared.set_job_end(JobEnd::CoordinatorLost {
                            reason: format!("declared down by {by}: {reason}"),
                        });
                    }
                }
                Output::Fenced { by, reason } => {
                    tracing::error!(
                        %by, %reason,
                        "herald: this node was declared down by {by} ({reason}); it stops"
                    );
                    // Nothing more will be answered here: whoever waits for the
                    // job's end or for this node's work to settle stops waiting.
                    self.shared
                        .arrivals
                        .fence(format!("this node was declared down by {by}: {reason}"));
                    // Recorded now, not when the loop's thread finishes the loop:
                    // a caller that finds the loop over in between (a finalize)
                    // learns that this node was fenced, and by whom, not only
                    // that the runtime stopped.
                    self.shared.set_job_end(JobEnd::Fenced {
                        by: by.0,
                        reason: reason.clone(),
                    });
                    self.fenced = Some((by.0, reason));
                }
                Output::ViewChanged(view) => {
                    tracing::debug!(epoch = view.epoch, size = view.size, "herald: view changed");
                    self.shared.set_view(view);
                }
                Output::Admitted => {
                    tracing::info!("herald: admitted into the job");
                    self.shared.set_admission(Admission::Admitted);
                }
                Output::JoinFailed(failure) => {
                    let reason = crate::membership::describe_refusal(self.shared.node, &failure);
                    tracing::error!("herald: {reason}");
                    self.shared.arrivals.fence(reason.clone());
                    self.shared
                        .set_admission(Admission::Refused(reason.clone()));
                    self.fenced = Some((self.shared.node.0, reason));
                }
            }
        }
        // After the frames above: what was queued for a node declared down (the
        // news itself, among others) leaves before its link closes for good.
        for node in self.to_close.drain(..) {
            self.transport.close_peer(node);
        }
    }

    fn transmit(&mut self, to: NodeId, messages: Vec<Message>) {
        for message in &messages {
            if let Message::Disseminate { key, .. } = message {
                self.watchdog.disseminated(*key, to);
            }
        }
        let max = self.shared.config.max_frame_bytes;
        match encode_frames(&messages, max) {
            Ok(frames) => self.send_frames(to, messages.len(), frames),
            // Only the messages that cannot be encoded are lost; the others go.
            Err(_) => {
                let mut sendable = Vec::with_capacity(messages.len());
                for message in messages {
                    match encode_frames(std::slice::from_ref(&message), max) {
                        Ok(_) => sendable.push(message),
                        Err(error) => self.unsendable(to, message, &error),
                    }
                }
                match encode_frames(&sendable, max) {
                    Ok(frames) => self.send_frames(to, sendable.len(), frames),
                    Err(error) => tracing::error!(%to, %error, "herald: bug: messages dropped"),
                }
            }
        }
    }

    fn send_frames(&mut self, to: NodeId, messages: usize, frames: Vec<Vec<u8>>) {
        let counters = &self.shared.counters;
        Counters::add(&counters.messages_sent, messages as u64);
        for frame in frames {
            Counters::add(&counters.frames_sent, 1);
            Counters::add(&counters.bytes_sent, frame.len() as u64);
            self.transport.send(to.0, frame);
        }
    }

    /// A message that cannot be encoded (it exceeds the frame limit). The requests
    /// or launches it carried fail with the reason; a message the protocol waits
    /// for (an acknowledgement, a dissemination, an answer) would leave `to` or this
    /// node waiting for ever, so `to` is declared down instead, by name and reason.
    fn unsendable(&mut self, to: NodeId, message: Message, error: &herald_core::EncodeError) {
        tracing::error!(%to, %error, kind = message.kind(), "herald: a message cannot be sent");
        match message {
            Message::Launch { launch, task, .. } => {
                if let Some(handle) = self.launches.remove(&launch) {
                    self.watchdog.finish_launch(launch);
                    let error = HostError::Protocol(format!(
                        "the launch of task '{task}' to {to} cannot be sent: {error}"
                    ));
                    let _ = self.shared.task_results.complete(handle, Err(error));
                }
            }
            Message::Request { key, .. } => {
                let failed: Vec<RequestId> = self
                    .requests
                    .iter()
                    .filter(|(_, (_, k))| *k == key)
                    .map(|(request, _)| *request)
                    .collect();
                for request in failed {
                    if let Some((handle, key)) = self.requests.remove(&request) {
                        self.watchdog.finish(Waiting::Registration(request, key));
                        let error = HostError::Protocol(format!(
                            "registration {} cannot be sent to its coordinator {to}: {error}",
                            key.short()
                        ));
                        self.complete_registration(handle, Err(error));
                    }
                }
            }
            other => self.node.peer_down(
                to,
                format!("a {} message for it cannot be sent: {error}", other.kind()),
            ),
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

/// An authenticated peer sent what no correct node sends (a frame that does not
/// decode, a forged key). The core has already declared it down (every node
/// learns it, and the peer is fenced), so nothing waits for a message it skipped;
/// its link closes when the core says so.
fn reject_peer(from: u32, error: &dyn std::fmt::Display) {
    tracing::error!(from, %error, "herald: node {from} sent an invalid frame; it is declared down");
}

/// What a warning about a long wait says of a node that stopped answering: when
/// the transport declares it down (`silence_timeout`), or that it never does.
fn silence_note(silence_timeout: Option<std::time::Duration>) -> String {
    match silence_timeout {
        Some(timeout) => format!(
            "a node that stopped answering is declared down after the peer timeout ({timeout:?})"
        ),
        None => "this transport does not detect a node that stopped answering (MPI, or a peer \
                 timeout of 0): a stopped node holds this until it resumes or the job is ended"
            .to_owned(),
    }
}
