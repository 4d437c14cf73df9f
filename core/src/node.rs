//! [`Node`]: the protocol state of one process, driven by events in and outputs out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::dissemination::{Round, Waiters};
use crate::launch::{HeldTask, SentLaunch};
use crate::local::Entry;
use crate::view::{JoinFailure, Joining, MAX_NODES};
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, FrameError, frame_messages};
use crate::{
    InvocationId, Key, LaunchId, Limits, Message, NodeId, Registration, RegistrationResult, Report,
    RequestId, TaskOutcome, TaskRunId, Tree, View, cut_text,
};

/// Longest reason carried when a node is declared down.
pub(crate) const MAX_REASON_BYTES: usize = 256;

/// Static parameters of one node: who it is, how many nodes the job has, and the
/// shape of the dissemination tree.
///
/// ```
/// use herald_core::{Config, NodeId};
/// let config = Config::new(NodeId(2), 8)?.with_fanout(4)?;
/// assert_eq!(config.nodes(), 8);
/// assert!(Config::new(NodeId(8), 8).is_err(), "node ids run from 0 to nodes - 1");
/// # Ok::<(), herald_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    node: NodeId,
    nodes: u32,
    fanout: u32,
    max_frame_bytes: usize,
}

/// The default number of children per node in the dissemination tree.
pub const DEFAULT_FANOUT: u32 = 4;

impl Config {
    /// Node `node` of a job of `nodes` nodes, with the default fan-out and frame limit.
    pub fn new(node: NodeId, nodes: u32) -> Result<Self, ConfigError> {
        if nodes == 0 {
            return Err(ConfigError::NoNodes);
        }
        if node.0 >= nodes {
            return Err(ConfigError::NodeOutOfRange { node, nodes });
        }
        Self {
            node,
            nodes,
            fanout: DEFAULT_FANOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
        .checked()
    }

    /// Sets how many children each node has in the dissemination tree (at least 1;
    /// larger means fewer hops but more sends per node).
    pub fn with_fanout(mut self, fanout: u32) -> Result<Self, ConfigError> {
        if fanout == 0 {
            return Err(ConfigError::ZeroFanout);
        }
        self.fanout = fanout;
        Ok(self)
    }

    /// Sets the largest frame this node accepts or produces: at least 4 KiB, and
    /// large enough for a report naming every node of the job as failed or
    /// unreachable ([`Config::min_frame_bytes`]).
    pub fn with_max_frame_bytes(mut self, max: usize) -> Result<Self, ConfigError> {
        self.max_frame_bytes = max;
        self.checked()
    }

    /// The smallest frame limit that carries every message of a job of `nodes`
    /// nodes: a registration of at least 3 KiB, and an acknowledgement whose failed
    /// and unreachable sets, as fragmented as possible (every other node, 10 bytes a
    /// range at worst), take at most half the frame, with failure texts in a quarter.
    pub fn min_frame_bytes(nodes: u32) -> usize {
        let worst_sets = 2 * (nodes as usize / 2 + 1) * 10;
        4096usize.max(2 * (worst_sets + 256))
    }

    /// How much of a failure report travels with this frame limit.
    pub fn limits(&self) -> Limits {
        Limits::for_frame(self.max_frame_bytes)
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Node ids assigned when this node started (the job's size, or for a
    /// joiner its own id plus one); the view grows from there ([`Node::view`]).
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// Children per node in the dissemination tree.
    pub fn fanout(&self) -> u32 {
        self.fanout
    }

    /// Largest frame accepted or produced.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The dissemination tree rooted at `root`.
    pub fn tree(&self, root: NodeId) -> Tree {
        Tree::new(self.nodes, self.fanout, root)
    }

    fn checked(self) -> Result<Self, ConfigError> {
        let min = Self::min_frame_bytes(self.nodes);
        if self.max_frame_bytes < min {
            return Err(ConfigError::FrameLimitTooSmall {
                max: self.max_frame_bytes,
                min,
                nodes: self.nodes,
            });
        }
        Ok(self)
    }
}

/// Invalid [`Config`] parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A job needs at least one node.
    #[error("a job needs at least one node")]
    NoNodes,
    /// The node id is not below the node count.
    #[error("{node} is out of range for a job of {nodes} nodes (ids run from 0 to {})", nodes - 1)]
    NodeOutOfRange {
        /// The rejected id.
        node: NodeId,
        /// The job size.
        nodes: u32,
    },
    /// A tree needs at least one child per node.
    #[error("fan-out must be at least 1")]
    ZeroFanout,
    /// The frame limit is too small to carry every protocol message of this job.
    #[error(
        "a frame limit of {max} bytes is too small for a job of {nodes} nodes; use at least {min}"
    )]
    FrameLimitTooSmall {
        /// The rejected limit.
        max: usize,
        /// The smallest limit that works for this job.
        min: usize,
        /// The job size.
        nodes: u32,
    },
}

/// The protocol state machine of one node.
///
/// It performs no I/O and keeps no clock: the caller feeds it events
/// ([`register`](Self::register), [`handle_frame`](Self::handle_frame),
/// [`invocation_finished`](Self::invocation_finished), [`peer_down`](Self::peer_down),
/// [`launch`](Self::launch), [`task_finished`](Self::task_finished)) and after each one
/// drains [`poll_output`](Self::poll_output) until it returns `None`.
///
/// ```
/// use herald_core::{Config, Node, NodeId, Output, Registration};
/// // A job of one node: the registration runs here and completes.
/// let mut node = Node::new(Config::new(NodeId(0), 1)?);
/// let request = node.register(Registration::new(b"code".to_vec(), vec![]), None)?;
/// let Some(Output::Invoke(invocation)) = node.poll_output() else { panic!() };
/// node.invocation_finished(invocation.id, Ok(()))?;
/// match node.poll_output() {
///     Some(Output::Completed { request: r, result }) => {
///         assert_eq!(r, request);
///         assert!(result.is_ok());
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub(crate) config: Config,
    /// Node ids assigned so far in this node's view: members are below it.
    pub(crate) size: u32,
    pub(crate) dead: BTreeSet<NodeId>,
    /// Who declared each dead node down, and why: told to members learned later.
    pub(crate) down_news: BTreeMap<NodeId, (NodeId, String)>,
    /// While joining: the replay of the admitter's log, before any task runs.
    pub(crate) joining: Option<Joining>,
    /// Joiners this node admitted: grafted below it in rounds whose root's view
    /// predates them.
    pub(crate) admitted: BTreeSet<NodeId>,
    /// The node that admits (or admitted) this one, if it joined a running job: a
    /// late copy of its welcome is ignored.
    pub(crate) admitter: Option<NodeId>,
    /// Local invocation state per key: the at-most-once table.
    pub(crate) entries: BTreeMap<Key, Entry>,
    /// Invocations currently executing, for nesting and completion.
    pub(crate) invocations: BTreeMap<InvocationId, Key>,
    /// Dissemination rounds this node takes part in, by (key, root).
    pub(crate) rounds: BTreeMap<(Key, NodeId), Round>,
    /// As coordinator: remote requesters waiting for each key.
    pub(crate) requesters: BTreeMap<Key, BTreeSet<NodeId>>,
    /// As requester: local requests waiting for each key's job-wide completion.
    pub(crate) waiters: BTreeMap<Key, Waiters>,
    /// Job-wide results known here (as coordinator or requester), with the view
    /// of the round that produced each.
    pub(crate) completed: BTreeMap<Key, (RegistrationResult, u32)>,
    /// Keys in the order they finished locally: what a late joiner would replay.
    pub(crate) log: Vec<Key>,
    /// Launches sent to other nodes and not yet answered.
    pub(crate) launches: BTreeMap<LaunchId, SentLaunch>,
    /// Keys in the order they became global here (requested at top level, or
    /// received from another node), done or running. A key nested only here is not
    /// listed: the global key it is nested in recreates it on every node.
    pub(crate) global_keys: Vec<Key>,
    /// Per target: every key of `global_keys` below this index is known done there,
    /// because a launch that required them was answered by it.
    pub(crate) known_done: BTreeMap<NodeId, usize>,
    /// Per origin: the highest launch id received, so a redelivered launch is ignored.
    pub(crate) highest_launch: BTreeMap<NodeId, LaunchId>,
    /// Set once another node declared this one down: it takes no part any more.
    pub(crate) fenced: Option<(NodeId, String)>,
    /// Tasks received and waiting for their required registrations.
    pub(crate) held: BTreeMap<TaskRunId, HeldTask>,
    /// Registrations asked of a launcher (key, launcher) for a held task that
    /// required them before this node had heard of them (see `Message::Fetch`).
    pub(crate) fetched: BTreeSet<(Key, NodeId)>,
    /// Registrations supplied (key, target) in answer to a `Fetch`: a correct
    /// target asks once, so a repeat is not answered again (each answer carries
    /// the registration, which may be thousands of times the size of the ask).
    pub(crate) supplied: BTreeSet<(Key, NodeId)>,
    /// As coordinator: requests (key, requester) answered from `completed`. A
    /// correct requester asks each coordinator once, so a repeat is not answered
    /// again (each answer carries a report of up to 16 error texts).
    pub(crate) answered: BTreeSet<(Key, NodeId)>,
    /// Tasks handed to the host and not yet finished.
    pub(crate) running: BTreeSet<TaskRunId>,
    next_invocation: u64,
    next_request: u64,
    next_launch: u64,
    outbox: BTreeMap<NodeId, Vec<Message>>,
    events: VecDeque<Output>,
}

/// Something the caller must do, drained with [`Node::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Output {
    /// Send these messages to `to`, in order, as one frame
    /// ([`encode_frames`](crate::encode_frames) splits it if it exceeds the limit).
    Transmit {
        /// The destination.
        to: NodeId,
        /// All messages ready for that link, in order.
        messages: Vec<Message>,
    },
    /// `node` is down in the job's agreed view (declared by `by` for `reason`):
    /// nothing waits for it any more. Send what is queued for it (it may carry the
    /// news to it), then close the link to it for good.
    PeerDown {
        /// The node now treated as down everywhere.
        node: NodeId,
        /// The node that first declared it down.
        by: NodeId,
        /// Why, as that node's transport saw it.
        reason: String,
    },
    /// Another node declared this one down: the job goes on without it. This node
    /// takes no further part; its host ends the process with this message, naming
    /// who declared it down and why.
    Fenced {
        /// The node that declared this one down.
        by: NodeId,
        /// Why.
        reason: String,
    },
    /// Run a registration's code on this node, then call
    /// [`Node::invocation_finished`].
    Invoke(Invocation),
    /// A request made with [`Node::register`] is answered.
    Completed {
        /// The request.
        request: RequestId,
        /// Its result.
        result: RegistrationResult,
    },
    /// Run a launched task whose required registrations are done here, then call
    /// [`Node::task_finished`].
    RunTask(TaskRequest),
    /// A launch made with [`Node::launch`] is answered.
    TaskCompleted {
        /// The launch.
        launch: LaunchId,
        /// Its result bytes, or why there are none.
        outcome: TaskOutcome,
    },
    /// This node's view of the membership changed: a node joined (its id became
    /// known here) or went down.
    ViewChanged(View),
    /// A joining node has replayed the log: it takes tasks from now on.
    Admitted,
    /// A joining node was not admitted: it has told every member it is down and
    /// takes no further part. End the process with this error.
    JoinFailed(JoinFailure),
}

/// A registration to execute locally.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Invocation {
    /// Names this execution in [`Node::invocation_finished`] and as a nesting parent.
    pub id: InvocationId,
    /// The registration's key.
    pub key: Key,
    /// What to run.
    pub registration: Registration,
    /// The invocation this one is nested in, if it was requested from inside one.
    pub parent: Option<InvocationId>,
}

/// A launched task to execute locally.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskRequest {
    /// Names this run in [`Node::task_finished`].
    pub run: TaskRunId,
    /// The task's name.
    pub task: String,
    /// The task's argument bytes.
    pub args: Vec<u8>,
}

/// Errors from [`Node::register`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The parent invocation is not executing on this node: pass the id from the
    /// current [`Output::Invoke`] while it runs, or `None` for a top-level request.
    #[error("{0} is not executing on this node; nest only inside a running invocation")]
    UnknownInvocation(InvocationId),
    /// The registration cannot fit in one frame.
    #[error(
        "registration of {len} bytes exceeds the frame limit of {max} bytes; pass large data by reference"
    )]
    TooLarge {
        /// The registration's payload size.
        len: usize,
        /// The usable frame size.
        max: usize,
    },
    /// This node was declared down and takes no further part in the job.
    #[error("this node was declared down by {by} ({reason}); the job goes on without it")]
    Fenced {
        /// The node that declared this one down.
        by: NodeId,
        /// Why.
        reason: String,
    },
}

/// Errors from inputs that name something this node does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `invocation_finished` for an invocation that is not executing.
    #[error("{0} is not executing on this node (already finished, or never started)")]
    UnknownInvocation(InvocationId),
    /// `task_finished` for a task that is not running.
    #[error("task {launch} from {origin} is not running on this node", launch = .0.launch, origin = .0.origin)]
    UnknownTask(TaskRunId),
    /// `launch` with a task name and arguments too large for one frame.
    #[error(
        "task name and arguments of {len} bytes exceed the frame limit of {max} bytes; pass large data by reference"
    )]
    TooLarge {
        /// Their size.
        len: usize,
        /// The usable frame size.
        max: usize,
    },
    /// `launch` whose required registrations do not fit in one frame with it.
    #[error(
        "the launch must carry {count} registrations it depends on, which with its arguments \
         exceed the frame limit of {max} bytes; wait for registrations to complete before launching"
    )]
    TooManyRequirements {
        /// Registrations the launch would carry.
        count: usize,
        /// The usable frame size.
        max: usize,
    },
    /// An input after this node was declared down.
    #[error("this node was declared down by {by} ({reason}); the job goes on without it")]
    Fenced {
        /// The node that declared this one down.
        by: NodeId,
        /// Why.
        reason: String,
    },
    /// `admit` on a node that is itself still joining.
    #[error("this node is still joining the job; only an admitted node (node 0) admits others")]
    NotAdmitted,
    /// `admit` of an id already in this node's view: ids are never reused, so a
    /// restarted process needs a fresh one from the transport.
    #[error("{0} is already a member of this job; a joining process needs a fresh id")]
    AlreadyMember(NodeId),
    /// `launch` to a node outside the job.
    #[error("{node} is not part of this job of {nodes} nodes")]
    NoSuchNode {
        /// The rejected node.
        node: NodeId,
        /// The job size.
        nodes: u32,
    },
}

/// Errors from [`Node::handle_message`] and [`Node::handle_frame`]: the peer sent
/// something no correct node sends. The message is ignored; close the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame did not decode.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The sender is not a node of this job, or is this node itself.
    #[error("message from {from}, which is not another node of this job of {nodes}")]
    BadSender {
        /// The claimed sender.
        from: NodeId,
        /// The job size.
        nodes: u32,
    },
    /// A message names a node that is not part of the job.
    #[error("{from} sent a message naming {node}, which is not part of this job of {nodes}")]
    NodeOutOfRange {
        /// The sender.
        from: NodeId,
        /// The node it named.
        node: NodeId,
        /// The job size.
        nodes: u32,
    },
    /// A report whose node sets are not sorted, disjoint ranges.
    #[error("{from} sent a report whose node sets are not sorted, disjoint ranges")]
    MalformedReport {
        /// The sender.
        from: NodeId,
    },
    /// A welcome from a node other than this node's admitter.
    #[error("{from} sent a welcome, but it is not this node's admitter")]
    UnexpectedWelcome {
        /// The sender.
        from: NodeId,
    },
    /// A registration whose key does not match its content.
    #[error("{from} sent a registration whose key {key:?} does not match its content")]
    KeyMismatch {
        /// The sender.
        from: NodeId,
        /// The key it claimed.
        key: Key,
    },
    /// A message the caller of [`Node::handle_frame_inspecting`] refused.
    #[error("{from} sent a message this node refuses: {reason}")]
    Refused {
        /// The sender.
        from: NodeId,
        /// Why, as the caller said.
        reason: String,
    },
}

/// What this node knows of one key locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalState {
    /// The invocation (or a registration nested in it) is still executing here.
    Running,
    /// Finished here, successfully or with this error.
    Done(Result<(), String>),
}

impl Node {
    /// A node with nothing registered yet.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            size: config.nodes,
            dead: BTreeSet::new(),
            down_news: BTreeMap::new(),
            joining: None,
            admitted: BTreeSet::new(),
            admitter: None,
            entries: BTreeMap::new(),
            invocations: BTreeMap::new(),
            rounds: BTreeMap::new(),
            requesters: BTreeMap::new(),
            waiters: BTreeMap::new(),
            completed: BTreeMap::new(),
            log: Vec::new(),
            launches: BTreeMap::new(),
            global_keys: Vec::new(),
            known_done: BTreeMap::new(),
            highest_launch: BTreeMap::new(),
            fenced: None,
            held: BTreeMap::new(),
            fetched: BTreeSet::new(),
            supplied: BTreeSet::new(),
            answered: BTreeSet::new(),
            running: BTreeSet::new(),
            next_invocation: 0,
            next_request: 0,
            next_launch: 0,
            outbox: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Requests a registration. Never blocks: the answer comes later as
    /// [`Output::Completed`] with the returned id.
    ///
    /// With `parent: None` the request is top-level: the registration runs here at
    /// once (if it has not already), and the key's coordinator makes it run on every
    /// node; the result covers the job. With `parent: Some(invocation)` — the
    /// request was made while that invocation executes, e.g. by a library constructor
    /// during a load — it is nested: it runs here only (the enclosing registration
    /// reaches every node, where the same code makes the same request), the enclosing
    /// invocation is not finished until it is, and the result covers this node.
    pub fn register(
        &mut self,
        registration: Registration,
        parent: Option<InvocationId>,
    ) -> Result<RequestId, RegisterError> {
        if let Some((by, reason)) = &self.fenced {
            return Err(RegisterError::Fenced {
                by: *by,
                reason: reason.clone(),
            });
        }
        let max = self.max_payload_bytes();
        if registration.payload_len() > max {
            return Err(RegisterError::TooLarge {
                len: registration.payload_len(),
                max,
            });
        }
        let parent_key = match parent {
            Some(id) => Some(
                *self
                    .invocations
                    .get(&id)
                    .ok_or(RegisterError::UnknownInvocation(id))?,
            ),
            None => None,
        };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let key = registration.key();
        match (parent, parent_key) {
            (Some(parent), Some(parent_key)) => {
                self.register_nested(key, registration, parent, parent_key, request)
            }
            _ => self.register_global(key, registration, request),
        }
        Ok(request)
    }

    /// Reports that an invocation from [`Output::Invoke`] has returned, with the
    /// error text if it failed.
    pub fn invocation_finished(
        &mut self,
        id: InvocationId,
        outcome: Result<(), String>,
    ) -> Result<(), UsageError> {
        let key = self
            .invocations
            .remove(&id)
            .ok_or(UsageError::UnknownInvocation(id))?;
        if self.fenced.is_none() {
            self.finish_own_invocation(key, outcome);
        }
        Ok(())
    }

    /// Feeds in one frame received from `from` over an authenticated link.
    ///
    /// Its messages are decoded and handled one at a time, so a frame never takes
    /// more memory than its largest message. A frame no correct node sends (bytes
    /// that do not decode, or an invalid message) makes this node declare `from`
    /// down, exactly as a lost link would, once it has handled the messages before
    /// them: nothing then waits for a message it skipped. The error says why, for
    /// the log.
    pub fn handle_frame(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.handle_frame_inspecting(from, bytes, |_| Ok(()))
    }

    /// [`handle_frame`](Self::handle_frame), showing each message to `inspect`
    /// before it is handled (a host counts them, say). A message `inspect` refuses,
    /// with the reason, is invalid: `from` is declared down and nothing after it
    /// is handled ([`ProtocolError::Refused`]).
    pub fn handle_frame_inspecting(
        &mut self,
        from: NodeId,
        bytes: &[u8],
        mut inspect: impl FnMut(&Message) -> Result<(), String>,
    ) -> Result<(), ProtocolError> {
        self.check_sender(from)?;
        let messages = match frame_messages(bytes, self.config.max_frame_bytes) {
            Ok(messages) => messages,
            Err(error) => return Err(self.invalid_frame(from, error)),
        };
        for message in messages {
            let message = match message {
                Ok(message) => message,
                Err(error) => return Err(self.invalid_frame(from, error)),
            };
            if let Err(reason) = inspect(&message) {
                self.peer_down(from, format!("sent an invalid message: {reason}"));
                return Err(ProtocolError::Refused { from, reason });
            }
            self.handle_message(from, message)?;
        }
        Ok(())
    }

    /// Feeds in one decoded message received from `from`. Messages from a node
    /// already down are ignored; an invalid message makes this node declare `from`
    /// down (see [`handle_frame`](Self::handle_frame)).
    pub fn handle_message(&mut self, from: NodeId, message: Message) -> Result<(), ProtocolError> {
        self.check_sender(from)?;
        // Messages from a node this one holds down are ignored, except the news
        // that this node itself is down: it declared the sender down too (a false
        // suspicion, a pause), but the others may already have applied the
        // sender's declaration, so this node must stop rather than go on alone.
        let about_me = matches!(&message, Message::Down { node, .. } if *node == self.me());
        if (self.dead.contains(&from) && !about_me) || self.fenced.is_some() {
            return Ok(());
        }
        let result = self.check_message(from, &message);
        if let Err(error) = &result {
            self.peer_down(from, format!("sent an invalid message: {error}"));
            return result;
        }
        match message {
            Message::Request {
                key,
                registration,
                offer,
            } => self.handle_request(from, key, registration, offer),
            Message::Ran { key, view, error } => self.handle_ran(from, key, view, error),
            Message::Disseminate {
                key,
                root,
                view,
                registration,
            } => self.handle_disseminate(from, key, root, view, registration),
            Message::Ack { key, root, report } => self.handle_ack(from, key, root, report),
            Message::Complete { key, view, report } => {
                self.handle_complete(from, key, view, report)
            }
            Message::Launch {
                launch,
                task,
                args,
                requires,
                strict,
            } => self.receive_launch(
                TaskRunId {
                    origin: from,
                    launch,
                },
                HeldTask::new(task, args, requires, strict),
            ),
            Message::TaskResult { launch, outcome } => {
                self.handle_task_result(from, launch, outcome)
            }
            Message::Down { node, by, reason } => self.handle_down(from, node, by, reason),
            Message::Welcome {
                view,
                down,
                log,
                more,
            } => self.handle_welcome(from, view, down, log, more),
            Message::Fetch { keys } => self.handle_fetch(from, keys),
            Message::Supply { key, registration } => self.handle_supply(key, registration),
        }
        Ok(())
    }

    /// Reports that this node's transport decided `node` is down: its link was lost,
    /// it went silent, or it sent something invalid. The decision becomes the job's:
    /// this node tells every other node (and `node` itself, which is fenced when it
    /// hears), and each applies it. Nothing waits for `node` again: rounds adopt its
    /// subtree and name it unreachable, requests it coordinated move to the next live
    /// node, launches to it fail.
    pub fn peer_down(&mut self, node: NodeId, reason: impl Into<String>) {
        let me = self.me();
        let reason = cut_text(&reason.into(), MAX_REASON_BYTES);
        // A transport declares only peers it had a link with: one beyond this view
        // joined since (and the ids below it were assigned too).
        if !self.apply_down(node, me, &reason) {
            return;
        }
        self.flood_down(node, me, &reason, true);
        self.after_down(node);
    }

    /// Launches `task` with `args` on node `to`. It carries every registration this
    /// node has requested and not yet seen complete, and runs there only once those
    /// are done there. Answered by [`Output::TaskCompleted`].
    ///
    /// Pass the invocation executing on the calling thread as `parent` when the
    /// launch is made from inside one: the task then does not wait on the target for
    /// that invocation's registration (or those waiting on it), which may be waiting
    /// for the task; it waits for everything else this node has done or is running.
    pub fn launch(
        &mut self,
        to: NodeId,
        task: impl Into<String>,
        args: Vec<u8>,
        parent: Option<InvocationId>,
    ) -> Result<LaunchId, UsageError> {
        self.launch_with(to, task.into(), args, parent, true)
    }

    /// A launch for the host's own control tasks (ending the job): it waits on the
    /// target for the same registrations as [`launch`](Self::launch), but runs even
    /// if one of them failed there.
    pub fn launch_control(
        &mut self,
        to: NodeId,
        task: impl Into<String>,
        args: Vec<u8>,
    ) -> Result<LaunchId, UsageError> {
        self.launch_with(to, task.into(), args, None, false)
    }

    fn launch_with(
        &mut self,
        to: NodeId,
        task: String,
        args: Vec<u8>,
        parent: Option<InvocationId>,
        strict: bool,
    ) -> Result<LaunchId, UsageError> {
        if let Some((by, reason)) = &self.fenced {
            return Err(UsageError::Fenced {
                by: *by,
                reason: reason.clone(),
            });
        }
        if to.0 >= self.size {
            return Err(UsageError::NoSuchNode {
                node: to,
                nodes: self.size,
            });
        }
        let enclosing = match parent {
            Some(id) => Some(
                *self
                    .invocations
                    .get(&id)
                    .ok_or(UsageError::UnknownInvocation(id))?,
            ),
            None => None,
        };
        let (len, max) = (task.len() + args.len(), self.max_payload_bytes());
        if len > max {
            return Err(UsageError::TooLarge { len, max });
        }
        if to == self.me() {
            self.advance_own_watermark();
        }
        let (requires, watermark) = self.requirements_for(to, enclosing);
        // Only a strict launch that required every global key here proves, once it
        // ran, that all of them are done on the target.
        let watermark = if enclosing.is_none() && strict {
            watermark
        } else {
            0
        };
        if len + requires.len() * 40 > max {
            return Err(UsageError::TooManyRequirements {
                count: requires.len(),
                max,
            });
        }
        let launch = LaunchId(self.next_launch);
        self.next_launch += 1;
        let held = HeldTask::new(task, args, requires, strict);
        self.send_launch(to, launch, held, watermark);
        Ok(launch)
    }

    /// Reports that a task from [`Output::RunTask`] has finished, with its result
    /// bytes or error text.
    pub fn task_finished(
        &mut self,
        run: TaskRunId,
        outcome: Result<Vec<u8>, String>,
    ) -> Result<(), UsageError> {
        if !self.running.remove(&run) {
            return Err(UsageError::UnknownTask(run));
        }
        let max = self.max_payload_bytes();
        let outcome = match outcome {
            Ok(bytes) if bytes.len() > max => Err(format!(
                "the task's result of {} bytes exceeds the frame limit of {max} bytes; \
                 return large data by reference",
                bytes.len()
            )),
            Err(error) => Err(cut_text(&error, max)),
            outcome => outcome,
        };
        self.answer_task(run, outcome.map_err(crate::TaskErrorKind::Failed));
        Ok(())
    }

    /// The next thing to do, or `None` when there is nothing until the next input.
    /// Local events come first, then one frame per destination. After
    /// [`Output::Fenced`] nothing more comes out.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.outbox
            .pop_first()
            .map(|(to, messages)| Output::Transmit { to, messages })
    }

    /// This node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this node knows locally of `key`: `None` if it has never run it.
    pub fn local_state(&self, key: &Key) -> Option<LocalState> {
        self.entries.get(key).map(Entry::state)
    }

    /// The job-wide result of `key`, if this node has learned it.
    pub fn global_result(&self, key: &Key) -> Option<&RegistrationResult> {
        self.completed.get(key).map(|(result, _)| result)
    }

    /// Keys in the order they finished on this node, with their registrations: the
    /// log a late-joining node would replay.
    pub fn completed_log(&self) -> impl Iterator<Item = (&Key, &Registration)> {
        self.log
            .iter()
            .filter_map(|key| self.entries.get(key).map(|e| (key, &e.registration)))
    }

    /// Nodes down in this node's view so far (declared here or by others).
    pub fn dead_nodes(&self) -> &BTreeSet<NodeId> {
        &self.dead
    }

    /// Who declared this node down, and why, once another node has.
    pub fn fenced_by(&self) -> Option<(NodeId, &str)> {
        self.fenced
            .as_ref()
            .map(|(by, reason)| (*by, reason.as_str()))
    }

    /// True when nothing is in progress here: no invocation, round, request or task
    /// is outstanding, and no output is waiting to be polled.
    pub fn is_quiescent(&self) -> bool {
        self.invocations.is_empty()
            && self.entries.values().all(Entry::is_done)
            && self.rounds.values().all(Round::is_acknowledged)
            && self.requesters.is_empty()
            && self.waiters.is_empty()
            && self.launches.is_empty()
            && self.held.is_empty()
            && self.running.is_empty()
            && self.events.is_empty()
            && self.outbox.is_empty()
    }

    /// The largest registration or task payload that fits in a frame with room
    /// for the message around it.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.config.max_frame_bytes.saturating_sub(1024)
    }

    pub(crate) fn me(&self) -> NodeId {
        self.config.node
    }

    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        if !self.dead.contains(&to) {
            self.send_even_if_down(to, message);
        }
    }

    /// Sends `Down{node, by, reason}` to every node of this view not seen go down
    /// (and to `node` itself when `tell_node`, so that it learns and stops).
    pub(crate) fn flood_down(&mut self, node: NodeId, by: NodeId, reason: &str, tell_node: bool) {
        let me = self.me();
        let everyone: Vec<NodeId> = (0..self.size)
            .map(NodeId)
            .filter(|n| *n != me && !self.dead.contains(n))
            .chain(tell_node.then_some(node))
            .collect();
        for to in everyone {
            self.send_even_if_down(
                to,
                Message::Down {
                    node,
                    by,
                    reason: reason.to_owned(),
                },
            );
        }
    }

    /// Tells `node` it was declared down (by `by`, for `reason`).
    pub(crate) fn send_down_to(&mut self, node: NodeId, by: NodeId, reason: &str) {
        let reason = reason.to_owned();
        self.send_even_if_down(node, Message::Down { node, by, reason });
    }

    /// Queues a message for `to` even if it is down here: only the news that it is
    /// down goes this way, so that a node declared down learns it and stops.
    fn send_even_if_down(&mut self, to: NodeId, message: Message) {
        debug_assert_ne!(to, self.config.node, "the core never messages itself");
        if self.fenced.is_none() {
            self.outbox.entry(to).or_default().push(message);
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.config.limits()
    }

    pub(crate) fn emit(&mut self, output: Output) {
        self.events.push_back(output);
    }

    pub(crate) fn next_invocation_id(&mut self) -> InvocationId {
        let id = InvocationId(self.next_invocation);
        self.next_invocation += 1;
        id
    }

    /// `Down` from `from`: `node` was declared down by `by`. If it is this node, it
    /// is fenced; otherwise apply it and pass the news to `node` itself, in case the
    /// declarer's link to it is the one that broke.
    fn handle_down(&mut self, from: NodeId, node: NodeId, by: NodeId, reason: String) {
        let reason = cut_text(&reason, MAX_REASON_BYTES);
        if node == self.me() {
            self.fence(by, reason);
            return;
        }
        if !self.apply_down(node, by, &reason) {
            return;
        }
        // Joiners admitted here may be newer than the declarer's view: pass it on.
        let joiners: Vec<NodeId> = self
            .admitted
            .iter()
            .copied()
            .filter(|j| *j != node && *j != from && *j != by && !self.dead.contains(j))
            .collect();
        for joiner in joiners {
            let reason = reason.clone();
            self.send(joiner, Message::Down { node, by, reason });
        }
        if from != node {
            self.send_even_if_down(node, Message::Down { node, by, reason });
        }
        self.after_down(node);
    }

    /// Marks `node` down, announcing it to the host; false if nothing changed.
    pub(crate) fn apply_down(&mut self, node: NodeId, by: NodeId, reason: &str) -> bool {
        if self.fenced.is_some() || node == self.me() || node.0 >= MAX_NODES {
            return false;
        }
        self.learn_size(node.0 + 1);
        if !self.dead.insert(node) {
            return false;
        }
        self.down_news.insert(node, (by, reason.to_owned()));
        self.emit(Output::PeerDown {
            node,
            by,
            reason: reason.to_owned(),
        });
        self.announce_view();
        self.joining_peer_down(node, reason);
        true
    }

    /// What every part of the protocol does once `node` is down.
    pub(crate) fn after_down(&mut self, node: NodeId) {
        self.disseminations_peer_down(node);
        self.launches_peer_down(node);
    }

    /// Stops taking part: nothing queued goes out, nothing new is accepted.
    fn fence(&mut self, by: NodeId, reason: String) {
        if self.fenced.is_some() {
            return;
        }
        self.outbox.clear();
        self.events.clear();
        self.events.push_back(Output::Fenced {
            by,
            reason: reason.clone(),
        });
        self.fenced = Some((by, reason));
    }

    /// `from` sent bytes that are no frame: it is declared down.
    fn invalid_frame(&mut self, from: NodeId, error: FrameError) -> ProtocolError {
        let error = ProtocolError::from(error);
        self.peer_down(from, format!("sent an invalid frame: {error}"));
        error
    }

    /// The sender must be another node with an id the transport could assign; a
    /// sender beyond this node's view joined since: the view grows to include it.
    fn check_sender(&mut self, from: NodeId) -> Result<(), ProtocolError> {
        if from.0 >= MAX_NODES || from == self.config.node {
            return Err(ProtocolError::BadSender {
                from,
                nodes: self.size,
            });
        }
        if self.fenced.is_none() {
            self.learn_size(from.0 + 1);
        }
        Ok(())
    }

    /// Checks that a message names only nodes of this job and that registrations
    /// match their keys.
    /// Nodes a message names must lie inside the view it belongs to: the root's
    /// view for a dissemination, the admitter's for a welcome, the largest view any
    /// node can have otherwise (a node beyond this one's view joined since).
    fn check_message(&self, from: NodeId, message: &Message) -> Result<(), ProtocolError> {
        let (named, bound): (Vec<NodeId>, u32) = match message {
            Message::Disseminate { root, view, .. } => (vec![*root], (*view).min(MAX_NODES)),
            // A report may name joiners grafted below their admitter, beyond the
            // round's view.
            Message::Ack { root, report, .. } => {
                (report_nodes(report).chain([*root]).collect(), MAX_NODES)
            }
            Message::Complete { report, .. } => (report_nodes(report).collect(), MAX_NODES),
            Message::Down { node, by, .. } => (vec![*node, *by], MAX_NODES),
            Message::Welcome { view, down, .. } => {
                if self.admitter != Some(from) {
                    return Err(ProtocolError::UnexpectedWelcome { from });
                }
                if !down.is_canonical() {
                    return Err(ProtocolError::MalformedReport { from });
                }
                let named = down.max().into_iter().chain([self.me()]).collect();
                (named, (*view).min(MAX_NODES))
            }
            _ => (Vec::new(), MAX_NODES),
        };
        if let Some(node) = named.into_iter().find(|n| n.0 >= bound) {
            return Err(ProtocolError::NodeOutOfRange {
                from,
                node,
                nodes: bound,
            });
        }
        if let Message::Ack { report, .. } | Message::Complete { report, .. } = message {
            if !report.failed.is_canonical() || !report.unreachable.is_canonical() {
                return Err(ProtocolError::MalformedReport { from });
            }
        }
        match message {
            Message::Request {
                key, registration, ..
            }
            | Message::Supply { key, registration }
            | Message::Disseminate {
                key, registration, ..
            } => self.check_key(from, *key, registration),
            _ => Ok(()),
        }
    }

    fn check_key(
        &self,
        from: NodeId,
        key: Key,
        registration: &Registration,
    ) -> Result<(), ProtocolError> {
        // Hash only what is new here: a known key was verified when first seen.
        if self.entries.contains_key(&key) || registration.key() == key {
            Ok(())
        } else {
            Err(ProtocolError::KeyMismatch { from, key })
        }
    }
}

/// The largest node of each set in a report, and every node with a carried failure:
/// what must lie inside the job.
fn report_nodes(report: &Report) -> impl Iterator<Item = NodeId> + '_ {
    report
        .failed
        .max()
        .into_iter()
        .chain(report.unreachable.max())
        .chain(report.failures.keys().copied())
}
