//! The naive baseline: every requester messages every node itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use herald_core::{
    Config, Invocation, InvocationId, Key, LaunchId, LocalState, Message, NodeId, Output,
    ProtocolError, RegisterError, Registration, RegistrationResult, Report, RequestId, Scope,
    TaskError, TaskErrorKind, TaskRequest, TaskRunId, UsageError, decode_frame,
};

use crate::Protocol;

/// A deliberately simple protocol to compare herald against, as Legion does it
/// today: a requester sends the registration to every other node itself and each
/// node answers it directly. One requester costs `2(N-1)` messages over a critical
/// path of 2 hops, but S replicated requesters each broadcast: `S·2(N-1)`.
/// Nested registrations run locally; launches run on arrival, without waiting.
///
/// ```
/// use herald_core::{Config, NodeId, Output};
/// use herald_sim::{NaiveNode, Protocol, Script};
/// let mut node = NaiveNode::start(Config::new(NodeId(0), 3).unwrap());
/// node.register(Script::new("lib").registration(), None).unwrap();
/// let mut sends = 0;
/// while let Some(output) = node.poll_output() {
///     if let Output::Transmit { messages, .. } = output {
///         sends += messages.len();
///     }
/// }
/// assert_eq!(sends, 2, "one message to each other node");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NaiveNode {
    config: Config,
    dead: BTreeSet<NodeId>,
    entries: BTreeMap<Key, NaiveEntry>,
    invocations: BTreeMap<InvocationId, Key>,
    broadcasts: BTreeMap<Key, Broadcast>,
    launches: BTreeMap<LaunchId, NodeId>,
    running: BTreeSet<TaskRunId>,
    next_invocation: u64,
    next_request: u64,
    next_launch: u64,
    outbox: BTreeMap<NodeId, Vec<Message>>,
    events: VecDeque<Output>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NaiveEntry {
    done: Option<Result<(), String>>,
    reply_to: BTreeSet<NodeId>,
    nested_requests: Vec<RequestId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Broadcast {
    pending: BTreeSet<NodeId>,
    report: Report,
    requests: Vec<RequestId>,
    finished: bool,
}

impl Protocol for NaiveNode {
    const NAME: &'static str = "naive";
    const CAUSAL_LAUNCHES: bool = false;

    fn start(config: Config) -> Self {
        Self {
            config,
            dead: BTreeSet::new(),
            entries: BTreeMap::new(),
            invocations: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            launches: BTreeMap::new(),
            running: BTreeSet::new(),
            next_invocation: 0,
            next_request: 0,
            next_launch: 0,
            outbox: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    fn register(
        &mut self,
        registration: Registration,
        parent: Option<InvocationId>,
    ) -> Result<RequestId, RegisterError> {
        if let Some(parent) = parent {
            if !self.invocations.contains_key(&parent) {
                return Err(RegisterError::UnknownInvocation(parent));
            }
        }
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let key = registration.key();
        self.ensure_invoked(key, &registration, parent);
        if parent.is_some() {
            let entry = self.entries.get_mut(&key).expect("invoked above");
            match entry.done.clone() {
                Some(outcome) => self.emit_local(request, key, outcome),
                None => entry.nested_requests.push(request),
            }
        } else if let Some(broadcast) = self.broadcasts.get_mut(&key) {
            broadcast.requests.push(request);
            if broadcast.finished {
                let result = broadcast.report.to_result(key);
                self.events.push_back(Output::Completed { request, result });
            }
        } else {
            self.broadcast(key, registration, request);
        }
        Ok(request)
    }

    fn handle_frame(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        if from.0 >= self.config.nodes() || from == self.config.node() {
            return Err(ProtocolError::BadSender {
                from,
                nodes: self.config.nodes(),
            });
        }
        for message in decode_frame(bytes, self.config.max_frame_bytes())? {
            if !self.dead.contains(&from) {
                self.handle_message(from, message);
            }
        }
        Ok(())
    }

    fn invocation_finished(
        &mut self,
        id: InvocationId,
        outcome: Result<(), String>,
    ) -> Result<(), UsageError> {
        let key = self
            .invocations
            .remove(&id)
            .ok_or(UsageError::UnknownInvocation(id))?;
        let entry = self
            .entries
            .get_mut(&key)
            .expect("an invocation has an entry");
        entry.done = Some(outcome.clone());
        let reply_to = std::mem::take(&mut entry.reply_to);
        let nested = std::mem::take(&mut entry.nested_requests);
        for request in nested {
            self.emit_local(request, key, outcome.clone());
        }
        let report = self.own_report(&outcome);
        for to in reply_to {
            let root = to;
            let report = report.clone();
            self.send(to, Message::Ack { key, root, report });
        }
        self.check_broadcast(key);
        Ok(())
    }

    fn peer_down(&mut self, node: NodeId, _reason: &str) {
        if node == self.config.node() || !self.dead.insert(node) {
            return;
        }
        let keys: Vec<Key> = self.broadcasts.keys().copied().collect();
        for key in keys {
            if let Some(broadcast) = self.broadcasts.get_mut(&key) {
                if broadcast.pending.remove(&node) {
                    broadcast.report.unreachable.insert(node);
                }
            }
            self.check_broadcast(key);
        }
        let lost: Vec<LaunchId> = self
            .launches
            .iter()
            .filter(|(_, to)| **to == node)
            .map(|(launch, _)| *launch)
            .collect();
        for launch in lost {
            self.launches.remove(&launch);
            let outcome = Err(TaskError {
                node,
                kind: TaskErrorKind::Unreachable,
            });
            self.events
                .push_back(Output::TaskCompleted { launch, outcome });
        }
    }

    fn launch(
        &mut self,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        _parent: Option<InvocationId>,
    ) -> Result<LaunchId, UsageError> {
        if to.0 >= self.config.nodes() {
            return Err(UsageError::NoSuchNode {
                node: to,
                nodes: self.config.nodes(),
            });
        }
        let launch = LaunchId(self.next_launch);
        self.next_launch += 1;
        if to == self.config.node() {
            let run = TaskRunId { origin: to, launch };
            self.running.insert(run);
            self.events
                .push_back(Output::RunTask(TaskRequest { run, task, args }));
        } else {
            self.launches.insert(launch, to);
            let requires = Vec::new();
            self.send(
                to,
                Message::Launch {
                    launch,
                    task,
                    args,
                    requires,
                    strict: true,
                },
            );
        }
        Ok(launch)
    }

    fn task_finished(
        &mut self,
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<(), UsageError> {
        if !self.running.remove(&run) {
            return Err(UsageError::UnknownTask(run));
        }
        let node = self.config.node();
        let outcome = outcome.map_err(|error| TaskError {
            node,
            kind: TaskErrorKind::Failed(error),
        });
        let launch = run.launch;
        if run.origin == node {
            self.events
                .push_back(Output::TaskCompleted { launch, outcome });
        } else {
            self.send(run.origin, Message::TaskResult { launch, outcome });
        }
        Ok(())
    }

    fn poll_output(&mut self) -> Option<Output> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.outbox
            .pop_first()
            .map(|(to, messages)| Output::Transmit { to, messages })
    }

    fn local_state(&self, key: &Key) -> Option<LocalState> {
        self.entries.get(key).map(|entry| match &entry.done {
            Some(outcome) => LocalState::Done(outcome.clone()),
            None => LocalState::Running,
        })
    }

    fn is_quiescent(&self) -> bool {
        self.invocations.is_empty()
            && self.broadcasts.values().all(|b| b.finished)
            && self.launches.is_empty()
            && self.running.is_empty()
            && self.outbox.is_empty()
            && self.events.is_empty()
    }
}

impl NaiveNode {
    fn handle_message(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Disseminate {
                key, registration, ..
            } => {
                self.ensure_invoked(key, &registration, None);
                let entry = self.entries.get_mut(&key).expect("invoked above");
                match entry.done.clone() {
                    Some(outcome) => {
                        let report = self.own_report(&outcome);
                        self.send(
                            from,
                            Message::Ack {
                                key,
                                root: from,
                                report,
                            },
                        );
                    }
                    None => {
                        entry.reply_to.insert(from);
                    }
                }
            }
            Message::Ack { key, report, .. } => {
                if let Some(broadcast) = self.broadcasts.get_mut(&key) {
                    if broadcast.pending.remove(&from) {
                        broadcast.report.merge(report, self.config.limits());
                    }
                }
                self.check_broadcast(key);
            }
            Message::Launch {
                launch, task, args, ..
            } => {
                let run = TaskRunId {
                    origin: from,
                    launch,
                };
                if self.running.insert(run) {
                    self.events
                        .push_back(Output::RunTask(TaskRequest { run, task, args }));
                }
            }
            Message::TaskResult { launch, outcome } => {
                if self.launches.get(&launch) == Some(&from) {
                    self.launches.remove(&launch);
                    self.events
                        .push_back(Output::TaskCompleted { launch, outcome });
                }
            }
            Message::Request { .. }
            | Message::Ran { .. }
            | Message::Complete { .. }
            | Message::Down { .. }
            | Message::Welcome { .. }
            | Message::Fetch { .. }
            | Message::Supply { .. } => {}
        }
    }

    fn broadcast(&mut self, key: Key, registration: Registration, request: RequestId) {
        let me = self.config.node();
        let targets: BTreeSet<NodeId> = (0..self.config.nodes())
            .map(NodeId)
            .filter(|node| *node != me && !self.dead.contains(node))
            .collect();
        for to in &targets {
            let registration = registration.clone();
            self.send(
                *to,
                Message::Disseminate {
                    key,
                    root: me,
                    view: self.config.nodes(),
                    registration,
                },
            );
        }
        let report = Report {
            unreachable: self.dead.iter().copied().collect(),
            ..Report::default()
        };
        self.broadcasts.insert(
            key,
            Broadcast {
                pending: targets,
                report,
                requests: vec![request],
                finished: false,
            },
        );
        self.check_broadcast(key);
    }

    fn check_broadcast(&mut self, key: Key) {
        let own = self.entries.get(&key).and_then(|e| e.done.clone());
        let me = self.config.node();
        let Some(broadcast) = self.broadcasts.get_mut(&key) else {
            return;
        };
        let Some(own) = own else { return };
        if broadcast.finished || !broadcast.pending.is_empty() {
            return;
        }
        broadcast.finished = true;
        if let Err(error) = own {
            broadcast.report.failures.insert(me, error);
        }
        let result = broadcast.report.to_result(key);
        for request in broadcast.requests.clone() {
            let result = result.clone();
            self.events.push_back(Output::Completed { request, result });
        }
    }

    fn ensure_invoked(
        &mut self,
        key: Key,
        registration: &Registration,
        parent: Option<InvocationId>,
    ) {
        if self.entries.contains_key(&key) {
            return;
        }
        let id = InvocationId(self.next_invocation);
        self.next_invocation += 1;
        self.invocations.insert(id, key);
        self.entries.insert(
            key,
            NaiveEntry {
                done: None,
                reply_to: BTreeSet::new(),
                nested_requests: Vec::new(),
            },
        );
        self.events.push_back(Output::Invoke(Invocation {
            id,
            key,
            registration: registration.clone(),
            parent,
        }));
    }

    /// Answers a nested request: this node's own report, for this node only.
    fn emit_local(&mut self, request: RequestId, key: Key, outcome: Result<(), String>) {
        let result = RegistrationResult {
            scope: Scope::Local,
            ..self.own_report(&outcome).to_result(key)
        };
        self.events.push_back(Output::Completed { request, result });
    }

    fn own_report(&self, outcome: &Result<(), String>) -> Report {
        let mut report = Report::default();
        if let Err(error) = outcome {
            report.failures.insert(self.config.node(), error.clone());
        }
        report
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if !self.dead.contains(&to) {
            self.outbox.entry(to).or_default().push(message);
        }
    }
}
