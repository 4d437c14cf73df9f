//! What the simulator drives: herald's [`Node`] unchanged, or the naive baseline.

use std::hash::Hash;

use herald_core::{
    Config, InvocationId, Key, LaunchId, LocalState, Node, NodeId, Output, ProtocolError,
    RegisterError, Registration, RequestId, TaskRunId, UsageError,
};

/// The sans-IO interface of one node, as the simulator sees it. Herald's
/// [`Node`] implements it by forwarding to its own methods;
/// [`NaiveNode`](crate::NaiveNode) implements the baseline.
pub trait Protocol: Clone + Hash {
    /// A short name for reports.
    const NAME: &'static str;

    /// Whether launched tasks wait for the registrations they require (the
    /// simulator checks invariant 5 only for protocols that promise it).
    const CAUSAL_LAUNCHES: bool;

    /// A fresh node.
    fn start(config: Config) -> Self;

    /// A fresh node joining a running job (see [`Node::joining`]). Protocols
    /// without joins start it as a member.
    fn join(config: Config, admitter: NodeId) -> Self {
        let _ = admitter;
        Self::start(config)
    }

    /// See [`Node::admit`]. Protocols without joins refuse.
    fn admit(&mut self, joiner: NodeId) -> Result<(), UsageError> {
        let _ = joiner;
        Err(UsageError::NotAdmitted)
    }

    /// See [`Node::register`].
    fn register(
        &mut self,
        registration: Registration,
        parent: Option<InvocationId>,
    ) -> Result<RequestId, RegisterError>;

    /// See [`Node::handle_frame`].
    fn handle_frame(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ProtocolError>;

    /// See [`Node::invocation_finished`].
    fn invocation_finished(
        &mut self,
        id: InvocationId,
        outcome: Result<(), String>,
    ) -> Result<(), UsageError>;

    /// See [`Node::peer_down`].
    fn peer_down(&mut self, node: NodeId, reason: &str);

    /// See [`Node::launch`].
    fn launch(
        &mut self,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        parent: Option<InvocationId>,
    ) -> Result<LaunchId, UsageError>;

    /// See [`Node::task_finished`].
    fn task_finished(
        &mut self,
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<(), UsageError>;

    /// See [`Node::poll_output`].
    fn poll_output(&mut self) -> Option<Output>;

    /// See [`Node::local_state`].
    fn local_state(&self, key: &Key) -> Option<LocalState>;

    /// See [`Node::is_quiescent`].
    fn is_quiescent(&self) -> bool;
}

impl Protocol for Node {
    const NAME: &'static str = "herald";
    const CAUSAL_LAUNCHES: bool = true;

    fn start(config: Config) -> Self {
        Node::new(config)
    }

    fn join(config: Config, admitter: NodeId) -> Self {
        Node::joining(config, admitter)
    }

    fn admit(&mut self, joiner: NodeId) -> Result<(), UsageError> {
        Node::admit(self, joiner)
    }

    fn register(
        &mut self,
        registration: Registration,
        parent: Option<InvocationId>,
    ) -> Result<RequestId, RegisterError> {
        Node::register(self, registration, parent)
    }

    fn handle_frame(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        Node::handle_frame(self, from, bytes)
    }

    fn invocation_finished(
        &mut self,
        id: InvocationId,
        outcome: Result<(), String>,
    ) -> Result<(), UsageError> {
        Node::invocation_finished(self, id, outcome)
    }

    fn peer_down(&mut self, node: NodeId, reason: &str) {
        Node::peer_down(self, node, reason)
    }

    fn launch(
        &mut self,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        parent: Option<InvocationId>,
    ) -> Result<LaunchId, UsageError> {
        Node::launch(self, to, task, args, parent)
    }

    fn task_finished(
        &mut self,
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<(), UsageError> {
        Node::task_finished(self, run, outcome)
    }

    fn poll_output(&mut self) -> Option<Output> {
        Node::poll_output(self)
    }

    fn local_state(&self, key: &Key) -> Option<LocalState> {
        Node::local_state(self, key)
    }

    fn is_quiescent(&self) -> bool {
        Node::is_quiescent(self)
    }
}
