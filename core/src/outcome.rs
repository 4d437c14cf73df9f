//! What a registration or a task produced: per-node failures and unreachable nodes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::{Key, NodeId};

/// The answer to one registration request.
///
/// For a top-level request it covers the whole job: every node not named here ran
/// the registration (and every registration nested inside it) successfully before
/// this result was produced. For a nested request it covers this node only
/// ([`Scope::Local`]); the enclosing registration reports for the job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[must_use]
pub struct RegistrationResult {
    /// The registration this answers.
    pub key: Key,
    /// Whether this covers every node or only the local one.
    pub scope: Scope,
    /// Nodes whose invocation failed, with the error text, ordered by node.
    pub failures: Vec<NodeFailure>,
    /// Nodes that crashed or lost their connection before acknowledging, ordered.
    pub unreachable: Vec<NodeId>,
}

/// Which nodes a [`RegistrationResult`] speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every node of the job.
    Global,
    /// Only the node that made the (nested) request.
    Local,
}

/// One node's failed invocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeFailure {
    /// The node whose invocation failed.
    pub node: NodeId,
    /// The error its host reported (or the nested registration that failed).
    pub error: String,
}

impl RegistrationResult {
    /// True when no node failed and none was unreachable.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.unreachable.is_empty()
    }
}

impl fmt::Display for RegistrationResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(f, "registration {} succeeded", self.key.short());
        }
        write!(f, "registration {} failed", self.key.short())?;
        for failure in &self.failures {
            write!(f, "; {}: {}", failure.node, failure.error)?;
        }
        if !self.unreachable.is_empty() {
            let names: Vec<String> = self.unreachable.iter().map(|n| n.0.to_string()).collect();
            write!(f, "; unreachable nodes: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Failures and unreachable nodes of a subtree, aggregated on the way up the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Report {
    /// Failed nodes of the subtree with their errors.
    pub failures: BTreeMap<NodeId, String>,
    /// Nodes of the subtree that did not acknowledge because they went down.
    pub unreachable: BTreeSet<NodeId>,
}

impl Report {
    /// Adds another subtree's report to this one.
    pub fn merge(&mut self, other: Report) {
        self.failures.extend(other.failures);
        self.unreachable.extend(other.unreachable);
    }

    /// The job-wide result this report amounts to.
    pub fn to_result(&self, key: Key) -> RegistrationResult {
        RegistrationResult {
            key,
            scope: Scope::Global,
            failures: self
                .failures
                .iter()
                .map(|(node, error)| NodeFailure {
                    node: *node,
                    error: error.clone(),
                })
                .collect(),
            unreachable: self.unreachable.iter().copied().collect(),
        }
    }
}

/// How a launched task ended, as seen by the node that launched it.
pub type TaskOutcome = Result<Vec<u8>, TaskError>;

/// Why a launched task produced no result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("task on {node}: {kind}")]
pub struct TaskError {
    /// The node the task was launched to.
    pub node: NodeId,
    /// What went wrong there.
    pub kind: TaskErrorKind,
}

/// The ways a launched task can fail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum TaskErrorKind {
    /// The host ran (or refused to run) the task and reported this error, for
    /// example that no task of that name is registered there.
    #[error("{0}")]
    Failed(String),
    /// A registration the task requires failed on the target node, so the task was
    /// not run there.
    #[error("required registration {key:?} failed there: {error}")]
    RequirementFailed {
        /// The failed registration.
        key: Key,
        /// Its error on the target node.
        error: String,
    },
    /// The target node went down before answering.
    #[error("the node is unreachable (crashed or disconnected)")]
    Unreachable,
}
