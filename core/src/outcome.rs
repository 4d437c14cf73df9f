//! What a registration or a task produced: per-node failures and unreachable nodes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::{Key, NodeId, NodeSet};

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
///
/// Bounded by construction: at most [`Limits::full_failures`] failures carry their
/// error text (each cut to [`Limits::text_bytes`]); the complete sets of failed and
/// unreachable nodes travel as ranges. [`Config`](crate::Config) refuses a job whose
/// worst-case report would not fit in a frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Report {
    /// Error texts of the lowest-numbered failed nodes (at most `full_failures`).
    pub failures: BTreeMap<NodeId, String>,
    /// Every failed node of the subtree, whether or not its text is carried.
    pub failed: NodeSet,
    /// Nodes of the subtree that did not acknowledge because they went down.
    pub unreachable: NodeSet,
}

/// How much of a failure report travels: derived from the frame limit, the same on
/// every node because every node agrees on the frame limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Failures carried with their error text; later ones are named only.
    pub full_failures: usize,
    /// Longest error text carried, in bytes, cut mark included.
    pub text_bytes: usize,
}

impl Limits {
    /// The limits for frames of at most `max_frame_bytes`: failure texts take at most
    /// a quarter of a frame, and no text exceeds 4 KiB.
    pub fn for_frame(max_frame_bytes: usize) -> Self {
        let full_failures = 16;
        let text_bytes = (max_frame_bytes / 4 / full_failures).clamp(32, 4096);
        Self {
            full_failures,
            text_bytes,
        }
    }
}

impl Report {
    /// Records `node`'s failure with `error` (cut to the limit, marked as cut).
    pub fn add_failure(&mut self, node: NodeId, error: &str, limits: Limits) {
        self.failed.insert(node);
        self.failures
            .insert(node, cut_text(error, limits.text_bytes));
        self.enforce(limits);
    }

    /// Adds another subtree's report to this one, within `limits`.
    pub fn merge(&mut self, other: Report, limits: Limits) {
        self.failed.union_with(&other.failed);
        self.unreachable.union_with(&other.unreachable);
        for (node, error) in other.failures {
            self.failed.insert(node);
            self.failures
                .insert(node, cut_text(&error, limits.text_bytes));
        }
        self.enforce(limits);
    }

    /// True when nothing failed and nobody was unreachable.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.unreachable.is_empty() && self.failures.is_empty()
    }

    /// The job-wide result this report amounts to. Every failed node is named; those
    /// beyond the carried texts get a note saying where their error is.
    pub fn to_result(&self, key: Key) -> RegistrationResult {
        let mut failed = self.failed.clone();
        for node in self.failures.keys() {
            failed.insert(*node);
        }
        RegistrationResult {
            key,
            scope: Scope::Global,
            failures: failed
                .iter()
                .map(|node| NodeFailure {
                    node,
                    error: self.failures.get(&node).cloned().unwrap_or_else(|| {
                        format!(
                            "failed (error text not carried: only the first {} failures \
                             carry theirs; see the log of {node})",
                            self.failures.len()
                        )
                    }),
                })
                .collect(),
            unreachable: self.unreachable.iter().collect(),
        }
    }

    fn enforce(&mut self, limits: Limits) {
        while self.failures.len() > limits.full_failures {
            self.failures.pop_last();
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with a mark saying how
/// much was cut; unchanged if it fits.
///
/// ```
/// let cut = herald_core::cut_text(&"x".repeat(1000), 64);
/// assert!(cut.len() <= 64 && cut.ends_with("bytes cut]"), "{cut}");
/// assert_eq!(herald_core::cut_text("short", 64), "short");
/// ```
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mark_room = 32.min(max);
    let mut end = max - mark_room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mark = format!("… [{} bytes cut]", text.len() - end);
    let mut cut = String::with_capacity(max);
    cut.push_str(&text[..end]);
    if cut.len() + mark.len() <= max {
        cut.push_str(&mark);
    }
    cut
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
    #[error("a registration it requires failed there: {error}")]
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
