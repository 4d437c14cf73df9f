//! herald-core: the sans-IO protocol that makes a registration run exactly once on
//! every node of a job.
//!
//! A [`Node`] holds one process's protocol state. It does no I/O, reads no clock,
//! spawns no thread and draws no random number: its caller feeds it events
//! (a local [`register`](Node::register), a received frame, a finished invocation, a
//! peer going down) and drains [`Output`]s (frames to transmit, code to invoke,
//! requests answered, tasks to run). Every map that reaches an output is ordered, so
//! the same inputs always give the same outputs — the simulator relies on it.
//!
//! The protocol, in short: each registration has a [`Key`] (a digest of its code
//! reference and argument bytes, or an explicit tag). A node runs each key at most
//! once. A top-level request runs locally at once and goes to the key's coordinator
//! (its home node, or the next live one), which disseminates it down a k-ary
//! [`Tree`] of all nodes; acknowledgements are aggregated on the way up and the
//! coordinator answers every requester: `2(N-1)` messages, plus 2 per requester that
//! is not the coordinator. A request made inside a running invocation is nested: it
//! runs locally only, never waits, and holds back the enclosing acknowledgement.
//!
//! ```
//! use herald_core::{Config, Message, Node, NodeId, Output, Registration};
//!
//! // Two nodes; node 1 requests a registration whose coordinator may be either node.
//! let mut nodes: Vec<Node> = (0..2)
//!     .map(|i| Node::new(Config::new(NodeId(i), 2).unwrap()))
//!     .collect();
//! let request = nodes[1].register(Registration::new(b"lib:sym".to_vec(), vec![]), None)?;
//! let mut answer = None;
//! let mut inbox: Vec<(NodeId, NodeId, Message)> = Vec::new();
//! loop {
//!     for i in 0..2 {
//!         while let Some(output) = nodes[i].poll_output() {
//!             match output {
//!                 Output::Transmit { to, messages } => {
//!                     inbox.extend(messages.into_iter().map(|m| (NodeId(i as u32), to, m)))
//!                 }
//!                 Output::Invoke(inv) => nodes[i].invocation_finished(inv.id, Ok(()))?,
//!                 Output::Completed { request: r, result } => answer = Some((r, result)),
//!                 _ => {}
//!             }
//!         }
//!     }
//!     let Some((from, to, message)) = inbox.pop() else { break };
//!     nodes[to.0 as usize].handle_message(from, message)?;
//! }
//! let (r, result) = answer.expect("answered");
//! assert_eq!(r, request);
//! assert!(result.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod dissemination;
mod ids;
mod launch;
mod local;
mod node;
mod node_set;
mod outcome;
mod registration;
mod tree;
mod view;
mod wire;

pub use ids::{InvocationId, LaunchId, NodeId, RequestId, TaskRunId};
pub use node::{
    Config, ConfigError, DEFAULT_FANOUT, Invocation, LocalState, Node, Output, ProtocolError,
    RegisterError, TaskRequest, UsageError,
};
pub use node_set::NodeSet;
pub use outcome::{
    Limits, NodeFailure, RegistrationResult, Report, Scope, TaskError, TaskErrorKind, TaskOutcome,
    cut_text,
};
pub use registration::{Key, Registration};
pub use tree::Tree;
pub use view::{JoinFailure, MAX_NODES, Replay, View};
pub use wire::{
    DEFAULT_MAX_FRAME_BYTES, EncodeError, FrameError, FrameMessages, Message, WIRE_VERSION,
    decode_frame, encode_frames, frame_messages,
};
