//! Protocol messages and their framing: a version byte, then postcard-encoded messages.

use serde::{Deserialize, Serialize};

use crate::{Key, LaunchId, NodeId, NodeSet, Registration, Replay, Report, TaskOutcome};

/// Version of the frame format; the first byte of every frame.
pub const WIRE_VERSION: u8 = 5;

/// Default upper bound on an encoded frame, version byte included.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// A protocol message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// Requester to coordinator: make this registration global and tell me when done.
    Request {
        /// The registration's key.
        key: Key,
        /// The registration itself, so the coordinator can disseminate it.
        registration: Registration,
        /// The requester's view size, when in the tree over it the requester is a
        /// child of the coordinator with no children of its own: it will report its
        /// own run with [`Message::Ran`], so the coordinator may leave it out of the
        /// round's dissemination.
        offer: Option<u32>,
    },
    /// Requester to coordinator, after a `Request` with an offer: the registration
    /// has finished here. It stands for this node's `Ack` in the round rooted at
    /// the coordinator when this node is a childless child of the root there.
    Ran {
        /// The registration's key.
        key: Key,
        /// The view size the request offered under.
        view: u32,
        /// The error text if it failed here.
        error: Option<String>,
    },
    /// Parent to child in the tree rooted at `root`: run this and acknowledge.
    Disseminate {
        /// The registration's key.
        key: Key,
        /// The coordinator whose tree this travels down.
        root: NodeId,
        /// The size of the root's view when it started the round: the tree is over
        /// node ids `0..view`.
        view: u32,
        /// The registration to run.
        registration: Registration,
    },
    /// Child to parent: this subtree has finished the registration.
    Ack {
        /// The registration's key.
        key: Key,
        /// The coordinator whose tree this travels up.
        root: NodeId,
        /// Failures and unreachable nodes in the subtree.
        report: Report,
    },
    /// Coordinator to requester: the registration is done everywhere.
    Complete {
        /// The registration's key.
        key: Key,
        /// The view of the round that completed it: the report speaks for the
        /// nodes below it (and joiners it names).
        view: u32,
        /// Failures and unreachable nodes of the whole job.
        report: Report,
    },
    /// Run a task once the listed registrations are done on the receiving node.
    Launch {
        /// The launching node's id for this launch.
        launch: LaunchId,
        /// The task's name.
        task: String,
        /// The task's argument bytes.
        args: Vec<u8>,
        /// Registrations done or running on the launching node that the target is not
        /// known to have done.
        requires: Vec<Key>,
        /// Whether a required registration that failed on the target stops the task
        /// (true for every application task; false only for the host's control tasks).
        strict: bool,
    },
    /// The result of a launched task, back to the node that launched it.
    TaskResult {
        /// The launching node's id for the launch.
        launch: LaunchId,
        /// What the task produced.
        outcome: TaskOutcome,
    },
    /// `node` is down in the job's view: sent by the node that declared it to every
    /// other node, and passed on by each receiver to `node` itself.
    Down {
        /// The node declared down.
        node: NodeId,
        /// The node that declared it.
        by: NodeId,
        /// Why (cut to 256 bytes).
        reason: String,
    },
    /// Admitter to a joining node: the view it joins and (one chunk of) the log of
    /// registrations to replay, in order, before it takes any task.
    Welcome {
        /// The admitter's view size, the joiner included.
        view: u32,
        /// The nodes down in the admitter's view.
        down: NodeSet,
        /// Registrations that became global on the admitter, in order.
        log: Vec<Replay>,
        /// More chunks follow (a log larger than one frame is split).
        more: bool,
    },
    /// Target to launcher: a task held here requires registrations this node has
    /// never heard of (their rounds never reached it); send them.
    Fetch {
        /// The registrations' keys.
        keys: Vec<Key>,
    },
    /// Launcher to target, for a `Fetch`: one registration the target lacks, to
    /// run without taking part in any round.
    Supply {
        /// The registration's key.
        key: Key,
        /// The registration itself.
        registration: Registration,
    },
}

impl Message {
    /// A short name for the message's kind, for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Ran { .. } => "ran",
            Message::Disseminate { .. } => "disseminate",
            Message::Ack { .. } => "ack",
            Message::Complete { .. } => "complete",
            Message::Launch { .. } => "launch",
            Message::TaskResult { .. } => "task_result",
            Message::Down { .. } => "down",
            Message::Welcome { .. } => "welcome",
            Message::Fetch { .. } => "fetch",
            Message::Supply { .. } => "supply",
        }
    }
}

/// Why bytes received from a peer are not a valid frame. Frames come from the
/// network: none of these panics, and the connection that sent them should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame had no bytes at all.
    #[error("empty frame: a frame starts with a version byte")]
    Empty,
    /// The peer speaks another version of the protocol.
    #[error(
        "frame version {found} is not supported (this node speaks {WIRE_VERSION}); run the same herald version on every node"
    )]
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
    },
    /// The frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The maximum accepted.
        max: usize,
    },
    /// The frame's bytes do not decode to messages.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Why messages could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// One message alone exceeds the frame limit; it cannot be sent.
    #[error("a {kind} message of {len} bytes exceeds the frame limit of {max} bytes")]
    MessageTooLarge {
        /// The message's kind.
        kind: &'static str,
        /// Its encoded length.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// The serializer failed.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Encodes messages into as few frames as fit under `max_frame_bytes` each,
/// keeping their order.
///
/// ```
/// use herald_core::{decode_frame, encode_frames, Key, Message, Report, DEFAULT_MAX_FRAME_BYTES};
/// let ack = Message::Complete { key: Key::default(), view: 4, report: Report::default() };
/// let frames = encode_frames(&[ack.clone(), ack.clone()], DEFAULT_MAX_FRAME_BYTES).unwrap();
/// assert_eq!(frames.len(), 1, "both messages share one frame");
/// assert_eq!(decode_frame(&frames[0], DEFAULT_MAX_FRAME_BYTES).unwrap(), vec![ack.clone(), ack]);
/// ```
pub fn encode_frames(
    messages: &[Message],
    max_frame_bytes: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut frames = Vec::new();
    let mut frame = vec![WIRE_VERSION];
    for message in messages {
        let encoded =
            postcard::to_allocvec(message).map_err(|e| EncodeError::Serialize(e.to_string()))?;
        if 1 + encoded.len() > max_frame_bytes {
            return Err(EncodeError::MessageTooLarge {
                kind: message.kind(),
                len: encoded.len(),
                max: max_frame_bytes,
            });
        }
        if frame.len() + encoded.len() > max_frame_bytes {
            frames.push(std::mem::replace(&mut frame, vec![WIRE_VERSION]));
        }
        frame.extend_from_slice(&encoded);
    }
    if frame.len() > 1 {
        frames.push(frame);
    }
    Ok(frames)
}

/// Decodes one frame received from a peer into its messages.
///
/// A message can take fifty times more memory decoded than on the wire (an empty
/// `Fetch` is 2 bytes): to handle a frame, take its messages one at a time from
/// [`frame_messages`] instead, as [`Node::handle_frame`](crate::Node::handle_frame) does.
pub fn decode_frame(bytes: &[u8], max_frame_bytes: usize) -> Result<Vec<Message>, FrameError> {
    frame_messages(bytes, max_frame_bytes)?.collect()
}

/// Checks one frame received from a peer (its size, its version, that it holds a
/// message) and returns its messages, each decoded only when it is taken: handled
/// one at a time, a frame never needs more memory than its largest message,
/// whatever it packs.
///
/// ```
/// use herald_core::{encode_frames, frame_messages, Key, Message, Report};
/// let complete = Message::Complete { key: Key::default(), view: 2, report: Report::default() };
/// let mut frame = encode_frames(&[complete.clone()], 4096).unwrap().remove(0);
/// frame.push(0xff); // junk after the first message
/// let mut messages = frame_messages(&frame, 4096).unwrap();
/// assert_eq!(messages.next(), Some(Ok(complete)));
/// assert!(matches!(messages.next(), Some(Err(_))), "then the junk, as an error");
/// assert_eq!(messages.next(), None, "and nothing after it");
/// ```
pub fn frame_messages(
    bytes: &[u8],
    max_frame_bytes: usize,
) -> Result<FrameMessages<'_>, FrameError> {
    if bytes.len() > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max: max_frame_bytes,
        });
    }
    let (&version, rest) = bytes.split_first().ok_or(FrameError::Empty)?;
    if version != WIRE_VERSION {
        return Err(FrameError::UnsupportedVersion { found: version });
    }
    if rest.is_empty() {
        return Err(FrameError::Malformed("frame holds no message".into()));
    }
    Ok(FrameMessages {
        rest,
        failed: false,
    })
}

/// The messages of one frame, decoded as they are taken (see [`frame_messages`]):
/// each is a message or, once, the error that ends the frame.
#[derive(Clone, Debug)]
pub struct FrameMessages<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl Iterator for FrameMessages<'_> {
    type Item = Result<Message, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<Message>(self.rest) {
            Ok((message, tail)) => {
                self.rest = tail;
                Some(Ok(message))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(FrameError::Malformed(error.to_string())))
            }
        }
    }
}
