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

/// Why a joining node was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JoinFailure {
    /// A registration of the log failed here (and had not failed on the admitter).
    #[error("registration {} failed on the joining node: {error}", key.short())]
    Replay {
        /// Its key.
        key: Key,
        /// The registration, for the host to name it.
        registration: Registration,
        /// Its error here.
        error: String,
    },
    /// The admitter went down before its welcome arrived.
    #[error("{admitter} went down before it admitted this node: {reason}")]
    AdmitterDown {
        /// The node that was to admit this one.
        admitter: NodeId,
        /// Why it is down.
        reason: String,
    },
}

/// A joiner's state until it has replayed the log: it takes no task before.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Joining {
    /// The node that admits this one (node 0 for herald's hosts).
    admitter: NodeId,
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
    /// If `admitter` goes down before its welcome arrived, the join fails.
    pub fn joining(config: crate::Config, admitter: NodeId) -> Self {
        let mut node = Self::new(config);
        node.admitter = Some(admitter);
        node.joining = Some(Joining {
            admitter,
            welcomed: false,
            deferred: Vec::new(),
            queue: VecDeque::new(),
            must_succeed: BTreeSet::new(),
            current: None,
        });
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
        let skipped: Vec<NodeId> = (self.size..joiner.0).map(NodeId).collect();
        self.learn_size(joiner.0 + 1);
        self.declare_absent(&skipped);
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
    /// A member learned of late may not have heard of nodes that went down
    /// before (their declarers did not know it): it is told each, so that the
    /// news reaches them through it too. Nothing is sent when nobody is down.
    pub(crate) fn learn_size(&mut self, size: u32) {
        if size <= self.size {
            return;
        }
        let learned = self.size..size;
        self.size = size;
        self.announce_view();
        if self.down_news.is_empty() || self.fenced.is_some() {
            return;
        }
        let news: Vec<(NodeId, NodeId, String)> = (self.down_news.iter())
            .map(|(node, (by, reason))| (*node, *by, reason.clone()))
            .collect();
        for member in learned.map(NodeId) {
            if member == self.me() || self.dead.contains(&member) {
                continue;
            }
            for (node, by, reason) in &news {
                let reason = reason.clone();
                self.send(
                    member,
                    Message::Down {
                        node: *node,
                        by: *by,
                        reason,
                    },
                );
            }
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
        // Like any node that hears of a down, pass the news to the node itself:
        // this node's links may be the only ones left to it.
        let reason = "declared down before this node joined";
        for node in down.iter() {
            if self.apply_down(node, from, reason) {
                let by = from;
                self.send_down_to(node, by, reason);
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
                        let registration = self.entries[&key].registration.clone();
                        self.fail_join(JoinFailure::Replay {
                            key,
                            registration,
                            error,
                        });
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

    /// Declares skipped ids down for everyone (they never joined, so nothing is
    /// sent to them).
    fn declare_absent(&mut self, skipped: &[NodeId]) {
        let me = self.me();
        let reason = "was given an id but never joined";
        let absent: Vec<NodeId> = skipped
            .iter()
            .copied()
            .filter(|node| self.apply_down(*node, me, reason))
            .collect();
        for node in &absent {
            self.flood_down(*node, me, reason, false);
        }
        for node in absent {
            self.after_down(node);
        }
    }

    /// A replayed registration failed here: refuse the join. The node tells every
    /// member it is down (rounds it was part of name it unreachable) and takes no
    /// further part.
    fn fail_join(&mut self, failure: JoinFailure) {
        self.joining = None;
        let me = self.me();
        let reason = crate::cut_text(
            &format!("not admitted: {failure}"),
            crate::node::MAX_REASON_BYTES,
        );
        self.flood_down(me, me, &reason, false);
        self.emit(Output::JoinFailed(failure));
        self.fenced = Some((me, reason));
    }

    /// A joiner whose admitter went down before the welcome will never be
    /// admitted: it gives up.
    pub(crate) fn joining_peer_down(&mut self, node: NodeId, reason: &str) {
        let Some(joining) = &self.joining else {
            return;
        };
        if joining.welcomed || joining.admitter != node {
            return;
        }
        self.fail_join(JoinFailure::AdmitterDown {
            admitter: node,
            reason: reason.to_owned(),
        });
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
