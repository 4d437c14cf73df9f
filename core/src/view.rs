//! Membership as a sequence of views: node ids are assigned once and never reused
//! (a restarted process is a new member), a view grows when a node joins and
//! shrinks when one goes down, and every message that depends on the view (a
//! dissemination, a welcome) carries the view it belongs to.
//!
//! A join costs the admitter one [`Message::Welcome`] (the registration log, split
//! only at the frame limit) and nothing anywhere else: other nodes learn the larger
//! view from the messages that carry it, and until a round's root knows the joiner,
//! the admitter grafts the joiner below itself in that round's tree.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::node::Output;
use crate::{Key, Message, Node, NodeId, NodeSet, Registration, UsageError};

/// The largest view a node accepts (ids `0..MAX_NODES`): a message naming a node
/// beyond it is invalid.
pub const MAX_NODES: u32 = 1 << 20;

/// One view of the job's membership, as this node knows it.
///
/// Ids `0..size` have been assigned; `down` of them are down. Views only grow:
/// `epoch` counts the changes that made this one (one per id assigned, one per
/// node down), so two nodes that know the same changes report the same epoch,
/// and a later view of one node always has a larger epoch.
///
/// ```
/// use herald_core::{Config, Node, NodeId};
/// let node = Node::new(Config::new(NodeId(0), 4)?);
/// let view = node.view();
/// assert_eq!((view.epoch, view.size, view.members()), (4, 4, 4));
/// # Ok::<(), herald_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// Changes known: ids assigned plus nodes down.
    pub epoch: u64,
    /// Node ids assigned so far: every member is below it.
    pub size: u32,
    /// How many of them are down.
    pub down: u32,
}

impl View {
    /// Nodes of the view that are not down.
    pub fn members(&self) -> u32 {
        self.size - self.down
    }
}

/// One registration of the log a joiner replays.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Replay {
    /// The registration, exactly as it was requested (its key is recomputed).
    pub registration: Registration,
    /// It failed on the admitter: the joiner runs it too, but its failure there
    /// does not refuse the join (the job already lives without it).
    pub failed_at_admitter: bool,
}

/// A joiner's state until it has replayed the log: it takes no task before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Joining {
    /// Whether the whole welcome (every chunk) has arrived.
    welcomed: bool,
    /// Keys received before the welcome, whose invocation waits for the replay.
    deferred: Vec<Key>,
    /// The welcome's keys in log order, then the deferred ones: run one at a time.
    queue: VecDeque<Key>,
    /// Keys whose failure here refuses the join.
    must_succeed: BTreeSet<Key>,
    /// The key being replayed.
    current: Option<Key>,
}

impl Node {
    /// A node joining a running job as `config.node()`, a fresh id from the
    /// transport, with `config.nodes()` the ids assigned so far (itself included).
    /// It takes part in registrations at once (their invocations wait for the
    /// replay) but holds every task until it has replayed the log that the
    /// admitter's [`Message::Welcome`] carries: [`Output::Admitted`] says it has, and
    /// [`Output::JoinFailed`] that a replayed registration failed here, after which
    /// the node has declared itself down and takes no further part.
    pub fn joining(config: crate::Config) -> Self {
        let mut node = Self::new(config);
        node.joining = Some(Joining::default());
        node
    }

    /// Admits `joiner`, a node the transport has just authenticated with a fresh
    /// id, into a new view, and sends it the log to replay: every registration that
    /// became global here, in order (those still running too: a round that reached
    /// this node before the join does not reach the joiner). Rounds that reach this
    /// node later from a root whose view predates the joiner are passed on to it.
    /// Ids skipped between this node's view and `joiner` were never used: they are
    /// declared down. Only a node that is up to date admits (the host uses node 0).
    pub fn admit(&mut self, joiner: NodeId) -> Result<(), UsageError> {
        if let Some((by, reason)) = &self.fenced {
            return Err(UsageError::Fenced {
                by: *by,
                reason: reason.clone(),
            });
        }
        if self.joining.is_some() {
            return Err(UsageError::NotAdmitted);
        }
        if joiner.0 < self.size {
            return Err(UsageError::AlreadyMember(joiner));
        }
        if joiner.0 >= MAX_NODES {
            return Err(UsageError::NoSuchNode {
                node: joiner,
                nodes: MAX_NODES,
            });
        }
        let skipped = self.size..joiner.0;
        self.learn_size(joiner.0 + 1);
        for gap in skipped {
            self.declare_absent(NodeId(gap));
        }
        self.admitted.insert(joiner);
        self.send_welcome(joiner);
        Ok(())
    }

    /// This node's current view.
    pub fn view(&self) -> View {
        let down = self.dead.len() as u32;
        View {
            epoch: u64::from(self.size) + u64::from(down),
            size: self.size,
            down,
        }
    }

    /// False while this node is joining: it has not replayed the log yet.
    pub fn is_admitted(&self) -> bool {
        self.joining.is_none()
    }

    /// Grows the view to `size` ids, announcing it; nothing if it is not larger.
    pub(crate) fn learn_size(&mut self, size: u32) {
        if size > self.size {
            self.size = size;
            self.announce_view();
        }
    }

    pub(crate) fn announce_view(&mut self) {
        let view = self.view();
        self.emit(Output::ViewChanged(view));
    }

    /// Whether a key received now must wait for the replay before it runs here.
    pub(crate) fn defers_invocations(&self) -> bool {
        self.joining
            .as_ref()
            .is_some_and(|j| !j.welcomed || !j.queue.is_empty() || j.current.is_some())
    }

    /// A key entered the table while invocations are deferred: run it after the log.
    pub(crate) fn defer(&mut self, key: Key) {
        if let Some(joining) = self.joining.as_mut() {
            if joining.welcomed {
                joining.queue.push_back(key);
            } else {
                joining.deferred.push(key);
            }
        }
    }

    /// Removes `key` from the replay queue: it was started out of turn (nested).
    pub(crate) fn undefer(&mut self, key: Key) {
        if let Some(joining) = self.joining.as_mut() {
            joining.queue.retain(|k| *k != key);
            joining.deferred.retain(|k| *k != key);
        }
    }

    /// A chunk of the welcome arrived; on the last one, start the replay.
    pub(crate) fn handle_welcome(
        &mut self,
        from: NodeId,
        view: u32,
        down: NodeSet,
        log: Vec<Replay>,
        more: bool,
    ) {
        if self.joining.as_ref().is_none_or(|j| j.welcomed) {
            return;
        }
        self.learn_size(view);
        for node in down.iter() {
            if self.apply_down(node, from, "down before this node joined") {
                self.after_down(node);
            }
        }
        for replay in log {
            let key = replay.registration.key();
            let new = !self.entries.contains_key(&key);
            self.ensure_invoked_global(key, &replay.registration);
            if let Some(joining) = self.joining.as_mut() {
                if !replay.failed_at_admitter {
                    joining.must_succeed.insert(key);
                }
                // A key deferred before the welcome takes its place in the log.
                if !new {
                    joining.deferred.retain(|k| *k != key);
                }
                if !joining.queue.contains(&key) {
                    joining.queue.push_back(key);
                }
            }
        }
        if more {
            return;
        }
        if let Some(joining) = self.joining.as_mut() {
            joining.welcomed = true;
            let deferred = std::mem::take(&mut joining.deferred);
            joining.queue.extend(deferred);
        }
        self.advance_replay();
    }

    /// Runs the replay queue one registration at a time; once it is empty, the
    /// node is admitted and the tasks it held may run.
    pub(crate) fn advance_replay(&mut self) {
        loop {
            let Some(joining) = self.joining.as_ref() else {
                return;
            };
            if !joining.welcomed {
                return;
            }
            if let Some(key) = joining.current {
                match self.entries.get(&key).and_then(|e| e.outcome()) {
                    None => return,
                    Some(Err(error)) if joining.must_succeed.contains(&key) => {
                        let error = error.clone();
                        self.fail_join(key, error);
                        return;
                    }
                    Some(_) => {}
                }
            }
            let Some(joining) = self.joining.as_mut() else {
                return;
            };
            joining.current = joining.queue.pop_front();
            let Some(key) = joining.current else {
                self.joining = None;
                self.emit(Output::Admitted);
                self.release_admitted();
                return;
            };
            self.start_invocation(key, None);
        }
    }

    /// Declares a skipped id down for everyone (it never joined, so nothing is
    /// sent to it).
    fn declare_absent(&mut self, node: NodeId) {
        let me = self.me();
        let reason = "was given an id but never joined".to_owned();
        if !self.apply_down(node, me, &reason) {
            return;
        }
        self.flood_down(node, me, &reason, false);
        self.after_down(node);
    }

    /// A replayed registration failed here: refuse the join. The node tells every
    /// member it is down (rounds it was part of name it unreachable) and takes no
    /// further part.
    fn fail_join(&mut self, key: Key, error: String) {
        let registration = self.entries.get(&key).map(|e| e.registration.clone());
        self.joining = None;
        let me = self.me();
        let reason = crate::cut_text(
            &format!(
                "could not replay registration {} while joining: {error}",
                key.short()
            ),
            crate::node::MAX_REASON_BYTES,
        );
        self.flood_down(me, me, &reason, false);
        if let Some(registration) = registration {
            self.emit(Output::JoinFailed {
                key,
                registration,
                error,
            });
        }
        self.fenced = Some((me, reason));
    }

    fn send_welcome(&mut self, joiner: NodeId) {
        let mut down = NodeSet::default();
        for node in &self.dead {
            down.insert(*node);
        }
        let max = self.max_payload_bytes();
        let mut chunks: Vec<Vec<Replay>> = vec![Vec::new()];
        let mut bytes = 0;
        for key in &self.global_keys {
            let Some(entry) = self.entries.get(key) else {
                continue;
            };
            let len = entry.registration.payload_len() + 64;
            if bytes + len > max && !chunks.last().is_some_and(Vec::is_empty) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(Replay {
                    registration: entry.registration.clone(),
                    failed_at_admitter: matches!(entry.outcome(), Some(Err(_))),
                });
            }
        }
        let last = chunks.len() - 1;
        let view = self.size;
        for (i, log) in chunks.into_iter().enumerate() {
            let message = Message::Welcome {
                view,
                down: down.clone(),
                log,
                more: i < last,
            };
            self.send(joiner, message);
        }
    }
}
