//! Deliberately broken protocols: herald's node with one thing changed. The suites
//! run them to show that every check can fail.

use std::collections::VecDeque;
use std::hash::Hash;

use herald_core::{
    Config, InvocationId, Key, LaunchId, LocalState, Node, NodeId, Output, ProtocolError,
    RegisterError, Registration, RegistrationResult, RequestId, Scope, TaskRunId, UsageError,
};
use herald_sim::Protocol;

/// One change made to herald's behaviour.
pub trait Tamper: Clone + Hash + Default {
    /// The protocol's name in reports.
    const NAME: &'static str;

    /// The configuration the node really gets.
    fn config(&mut self, config: Config) -> Config {
        config
    }

    /// Something done to the fresh node before it takes part.
    fn start(&mut self, node: &mut Node) {
        let _ = node;
    }

    /// What the caller sees instead of `output` (nothing, it, or more).
    fn output(&mut self, node: &Node, output: Output) -> Vec<Output> {
        let _ = node;
        vec![output]
    }

    /// Extra outputs after a frame from `from` was handled.
    fn received(&mut self, node: &Node, from: NodeId, bytes: &[u8]) -> Vec<Output> {
        let _ = (node, from, bytes);
        Vec::new()
    }

    /// Extra outputs after a top-level request was made.
    fn registered(&mut self, node: &Node, request: RequestId, key: Key) -> Vec<Output> {
        let _ = (node, request, key);
        Vec::new()
    }
}

/// Herald's node with a [`Tamper`] applied to what goes in and out.
#[derive(Clone, Hash)]
pub struct Tampered<T> {
    node: Node,
    tamper: T,
    queue: VecDeque<Output>,
}

impl<T: Tamper> Protocol for Tampered<T> {
    const NAME: &'static str = T::NAME;
    const CAUSAL_LAUNCHES: bool = true;

    fn start(config: Config) -> Self {
        let mut tamper = T::default();
        let mut node = Node::new(tamper.config(config));
        tamper.start(&mut node);
        Self {
            node,
            tamper,
            queue: VecDeque::new(),
        }
    }

    fn join(config: Config, admitter: NodeId) -> Self {
        let mut tamper = T::default();
        let mut node = Node::joining(tamper.config(config), admitter);
        tamper.start(&mut node);
        Self {
            node,
            tamper,
            queue: VecDeque::new(),
        }
    }

    fn admit(&mut self, joiner: NodeId) -> Result<(), UsageError> {
        self.node.admit(joiner)
    }

    fn register(
        &mut self,
        registration: Registration,
        parent: Option<InvocationId>,
    ) -> Result<RequestId, RegisterError> {
        let key = registration.key();
        let request = self.node.register(registration, parent)?;
        if parent.is_none() {
            let extra = self.tamper.registered(&self.node, request, key);
            self.queue.extend(extra);
        }
        Ok(request)
    }

    fn handle_frame(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.node.handle_frame(from, bytes)?;
        let extra = self.tamper.received(&self.node, from, bytes);
        self.queue.extend(extra);
        Ok(())
    }

    fn invocation_finished(
        &mut self,
        id: InvocationId,
        outcome: Result<(), String>,
    ) -> Result<(), UsageError> {
        self.node.invocation_finished(id, outcome)
    }

    fn peer_down(&mut self, node: NodeId, reason: &str) {
        self.node.peer_down(node, reason)
    }

    fn launch(
        &mut self,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        parent: Option<InvocationId>,
    ) -> Result<LaunchId, UsageError> {
        self.node.launch(to, task, args, parent)
    }

    fn task_finished(
        &mut self,
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<(), UsageError> {
        self.node.task_finished(run, outcome)
    }

    fn poll_output(&mut self) -> Option<Output> {
        while self.queue.is_empty() {
            let output = self.node.poll_output()?;
            let changed = self.tamper.output(&self.node, output);
            self.queue.extend(changed);
        }
        self.queue.pop_front()
    }

    fn local_state(&self, key: &Key) -> Option<LocalState> {
        self.node.local_state(key)
    }

    fn is_quiescent(&self) -> bool {
        self.node.is_quiescent() && self.queue.is_empty()
    }
}

/// Answers every top-level request at once with an empty job-wide result, before
/// any other node has run the registration, and drops the real job-wide answer.
/// Both the timed suite (`checks_have_teeth`) and the exhaustive one catch it.
#[derive(Clone, Default, Hash)]
pub struct EarlyAnswer;

impl Tamper for EarlyAnswer {
    const NAME: &'static str = "early-answer";

    fn registered(&mut self, _node: &Node, request: RequestId, key: Key) -> Vec<Output> {
        let result = RegistrationResult {
            key,
            scope: Scope::Global,
            failures: vec![],
            unreachable: vec![],
        };
        vec![Output::Completed { request, result }]
    }

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Completed { result, .. } if result.scope == Scope::Global => vec![],
            other => vec![other],
        }
    }
}
