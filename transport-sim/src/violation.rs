//! The ways a run can break the design's invariants, and simulation errors.

use herald_core::{Key, NodeId};

/// A broken invariant, found while a run was simulated or explored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Invariant 1: a registration ran more than once on one node.
    #[error("{node} invoked registration {key:?} {count} times")]
    DuplicateInvocation {
        /// The node.
        node: NodeId,
        /// The registration.
        key: Key,
        /// Invocations so far.
        count: u32,
    },
    /// A request was answered more than once, or answered without being made.
    #[error("{node} answered request {request} {problem}")]
    BadAnswer {
        /// The node.
        node: NodeId,
        /// The request id.
        request: u64,
        /// "twice", or "that it never returned".
        problem: &'static str,
    },
    /// Invariant 2: completion reported while a node that is not named had not
    /// finished the registration.
    #[error("{node} reported {key:?} complete while {other} had not finished it ({state})")]
    EarlyCompletion {
        /// Where completion was reported.
        node: NodeId,
        /// The registration.
        key: Key,
        /// The node not done.
        other: NodeId,
        /// What that node's state was.
        state: String,
    },
    /// Invariant 3: a result named a node unreachable that is, at the end of the
    /// run, still up (neither crashed nor fenced) and reachable from the requester.
    #[error(
        "{node} reported {key:?} with {other} unreachable, but {other} is alive, unfenced and reachable"
    )]
    FalselyUnreachable {
        /// Where completion was reported.
        node: NodeId,
        /// The registration.
        key: Key,
        /// The node wrongly named.
        other: NodeId,
    },
    /// Invariant 7: a result names a node unreachable that no node's transport
    /// ever declared down: a live node was skipped.
    #[error(
        "{node} reported {key:?} with {other} unreachable, but no transport declared {other} down"
    )]
    NamedUndeclared {
        /// Where completion was reported.
        node: NodeId,
        /// The registration.
        key: Key,
        /// The node wrongly named.
        other: NodeId,
    },
    /// A result misreports a node's own outcome (a failure missing, invented or
    /// with other text).
    #[error(
        "{node} reported {key:?} with outcome {reported:?} for {other}, which ended {actual:?}"
    )]
    WrongOutcome {
        /// Where completion was reported.
        node: NodeId,
        /// The registration.
        key: Key,
        /// The node misreported.
        other: NodeId,
        /// The error the result gives for it, if any.
        reported: Option<String>,
        /// Its actual local outcome.
        actual: Result<(), String>,
    },
    /// Invariant 2 (liveness): a live node's request was never answered.
    #[error("request {request} for '{name}' ({key:?}) on {node} was never answered")]
    Unanswered {
        /// The requesting node.
        node: NodeId,
        /// The request id.
        request: u64,
        /// The registration.
        key: Key,
        /// Its script's name.
        name: String,
    },
    /// A live node's launch was never answered.
    #[error("launch {launch} of '{task}' from {node} was never answered")]
    LaunchUnanswered {
        /// The launching node.
        node: NodeId,
        /// The launch id.
        launch: u64,
        /// The task.
        task: String,
    },
    /// A live node still has work in progress when nothing more can happen.
    #[error("{node} is not quiescent at the end of the run")]
    NotQuiescent {
        /// The node.
        node: NodeId,
    },
    /// A joiner ran a task before it had run a registration completed in the job
    /// before it joined.
    #[error("joiner {node} ran task '{task}' before replaying registration {key:?}")]
    TaskBeforeReplay {
        /// The joiner.
        node: NodeId,
        /// The task.
        task: String,
        /// A registration completed before the join and not done there.
        key: Key,
    },
    /// A live joiner whose admitter is up was never admitted, or was admitted
    /// without having run what completed before it joined.
    #[error("joiner {node} {problem}")]
    JoinIncomplete {
        /// The joiner.
        node: NodeId,
        /// What went wrong.
        problem: String,
    },
    /// Invariant 4: more messages than the bound allows.
    #[error("{messages} messages exceed the bound of {bound}")]
    TooManyMessages {
        /// Messages sent.
        messages: u64,
        /// The bound.
        bound: u64,
    },
    /// Invariant 5: a task ran before a registration it required was done there.
    #[error("task '{task}' ran on {node} before required registration {key:?} was done there")]
    TaskBeforeRequirement {
        /// The node.
        node: NodeId,
        /// The task.
        task: String,
        /// The registration not yet done.
        key: Key,
    },
    /// Invariant 5 (strict launches): a task ran on a node where a registration it
    /// requires failed.
    #[error(
        "{node} ran task '{task}' although required registration {key:?} failed there: {error}"
    )]
    TaskDespiteFailure {
        /// The node.
        node: NodeId,
        /// The task.
        task: String,
        /// The failed registration.
        key: Key,
        /// Its error there.
        error: String,
    },
    /// A node rejected a frame another (correct) node sent it.
    #[error("{node} rejected a frame from {from}: {error}")]
    Rejected {
        /// The receiver.
        node: NodeId,
        /// The sender.
        from: NodeId,
        /// The core's error.
        error: String,
    },
    /// A node refused an input the simulated host gave it.
    #[error("{node} refused an input: {error}")]
    Refused {
        /// The node.
        node: NodeId,
        /// The core's error.
        error: String,
    },
    /// A node's messages could not be encoded.
    #[error("cannot encode the messages of {node}: {error}")]
    Encode {
        /// The sender.
        node: NodeId,
        /// The encoder's error.
        error: String,
    },
    /// Liveness: work was still going on after faults stopped and the bound passed.
    #[error("still busy at {at_ns} ns, past the liveness deadline of {deadline_ns} ns")]
    Liveness {
        /// When the run was stopped.
        at_ns: u64,
        /// The deadline.
        deadline_ns: u64,
    },
}

/// Why a simulation could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The scenario is inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// A registration's code is not an encoded [`Script`](crate::Script).
    #[error("registration code is not a script: {0}")]
    BadScript(String),
}
