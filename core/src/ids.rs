//! Identifiers: nodes of the job, and the handles the core gives its caller.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A process of the job, numbered `0..nodes` (its rank).
///
/// ```
/// use herald_core::NodeId;
/// assert_eq!(NodeId(3).to_string(), "node 3");
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// One local execution of a registration's code on this node, named in
/// [`Output::Invoke`](crate::Output::Invoke) and reported back through
/// [`Node::invocation_finished`](crate::Node::invocation_finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InvocationId(pub u64);

/// A caller's request for a registration, returned by
/// [`Node::register`](crate::Node::register) and answered by exactly one
/// [`Output::Completed`](crate::Output::Completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A task launched from this node, returned by [`Node::launch`](crate::Node::launch)
/// and answered by exactly one [`Output::TaskCompleted`](crate::Output::TaskCompleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LaunchId(pub u64);

/// A task this node has been asked to run: the launching node and its launch id.
/// Named in [`Output::RunTask`](crate::Output::RunTask) and reported back through
/// [`Node::task_finished`](crate::Node::task_finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskRunId {
    /// The node that launched the task and waits for its result.
    pub origin: NodeId,
    /// The launch id on `origin`.
    pub launch: LaunchId,
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invocation {}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

impl fmt::Display for LaunchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "launch {}", self.0)
    }
}
