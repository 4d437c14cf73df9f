//! The simulated network: FIFO links carrying encoded frames, crash-stop nodes,
//! partitions, and failure detection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};

use herald_core::{Key, Message, NodeId, encode_frames};

use crate::trace::TraceKind;
use crate::world::{Action, World};
use crate::{ChoiceKind, Chooser, Protocol, Violation};

/// Links, failures and message counters.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    links: BTreeMap<(NodeId, NodeId), Link>,
    nic_free_ns: Vec<u64>,
    crashed: Vec<bool>,
    /// Processes that ended because they were fenced (declared down by others).
    pub(crate) exited: Vec<bool>,
    /// Processes that are stopped for now and will resume.
    pub(crate) paused: Vec<bool>,
    /// Slots of joins that have not happened (yet): no process, no links.
    pub(crate) absent: Vec<bool>,
    /// Single broken links, as (lower id, higher id).
    pub(crate) broken: BTreeSet<(NodeId, NodeId)>,
    /// Peers that will time out on a paused node unless it resumes first, as
    /// (observer, paused node).
    pub(crate) pending_timeouts: BTreeSet<(NodeId, NodeId)>,
    /// Partition labels: two nodes can talk while their labels are equal.
    side: Vec<u64>,
    /// Lamport hop clocks: the longest chain of messages leading to each node's
    /// present state.
    pub(crate) clocks: Vec<u64>,
    pending_detections: BTreeSet<(NodeId, NodeId)>,
    /// Detections by heartbeat silence on a link that only the other end noticed
    /// breaking: they come after everything else could happen.
    pub(crate) late_detections: BTreeSet<(NodeId, NodeId)>,
    next_frame: u64,
    pub(crate) stats: Stats,
}

/// Message counters of a run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) messages: u64,
    pub(crate) by_kind: BTreeMap<&'static str, u64>,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) lost_frames: u64,
}

#[derive(Clone, Debug, Default)]
struct Link {
    frames: VecDeque<Frame>,
    last_due_ns: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) label: String,
    pub(crate) hop: u64,
    /// Keys of the `Request`s (root `None`) and `Disseminate`s it carries: what the
    /// causality oracle learns when the receiver accepts them.
    pub(crate) carried: Vec<(Key, Option<NodeId>)>,
}

impl Net {
    pub(crate) fn new(nodes: u32) -> Self {
        let n = nodes as usize;
        Self {
            links: BTreeMap::new(),
            nic_free_ns: vec![0; n],
            crashed: vec![false; n],
            exited: vec![false; n],
            paused: vec![false; n],
            absent: vec![false; n],
            broken: BTreeSet::new(),
            pending_timeouts: BTreeSet::new(),
            side: vec![0; n],
            clocks: vec![0; n],
            pending_detections: BTreeSet::new(),
            late_detections: BTreeSet::new(),
            next_frame: 0,
            stats: Stats::default(),
        }
    }

    pub(crate) fn is_crashed(&self, node: NodeId) -> bool {
        self.crashed[node.0 as usize]
    }

    /// Whether the process is gone: crashed, or ended after being fenced.
    pub(crate) fn is_down(&self, node: NodeId) -> bool {
        let i = node.0 as usize;
        self.crashed[i] || self.exited[i] || self.absent[i]
    }

    /// A joiner's process comes up, on the same side of every partition as `peer`.
    pub(crate) fn join_beside(&mut self, joiner: NodeId, peer: NodeId) {
        self.absent[joiner.0 as usize] = false;
        self.side[joiner.0 as usize] = self.side[peer.0 as usize];
    }

    pub(crate) fn is_paused(&self, node: NodeId) -> bool {
        self.paused[node.0 as usize]
    }

    /// Whether the link between `a` and `b` works: same side of every partition,
    /// and not broken on its own.
    pub(crate) fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.side[a.0 as usize] == self.side[b.0 as usize]
            && !self.broken.contains(&(a.min(b), a.max(b)))
    }

    /// Whether `to` can be reached from `from` over working links through
    /// processes that are still up.
    pub(crate) fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        let n = self.crashed.len() as u32;
        let mut seen = vec![false; n as usize];
        let mut stack = vec![from];
        seen[from.0 as usize] = true;
        while let Some(a) = stack.pop() {
            if a == to {
                return true;
            }
            for b in (0..n).map(NodeId) {
                if !seen[b.0 as usize] && !self.is_down(b) && self.connected(a, b) {
                    seen[b.0 as usize] = true;
                    stack.push(b);
                }
            }
        }
        false
    }

    pub(crate) fn exited_nodes(&self) -> Vec<NodeId> {
        (0..self.exited.len() as u32)
            .map(NodeId)
            .filter(|n| self.exited[n.0 as usize])
            .collect()
    }

    pub(crate) fn link_mut(&mut self, from: NodeId, to: NodeId) -> Option<&mut VecDeque<Frame>> {
        self.links.get_mut(&(from, to)).map(|l| &mut l.frames)
    }

    pub(crate) fn next_frame_id(&mut self) -> u64 {
        let id = self.next_frame;
        self.next_frame += 1;
        id
    }

    /// Pushes a copy of a frame at the back of its link; returns when it is due.
    pub(crate) fn push_copy(&mut self, from: NodeId, to: NodeId, frame: Frame, due_ns: u64) -> u64 {
        let link = self.links.entry((from, to)).or_default();
        let due_ns = due_ns.max(link.last_due_ns);
        link.last_due_ns = due_ns;
        link.frames.push_back(frame);
        due_ns
    }

    pub(crate) fn crashed_nodes(&self) -> Vec<NodeId> {
        (0..self.crashed.len() as u32)
            .map(NodeId)
            .filter(|n| self.is_crashed(*n))
            .collect()
    }

    /// Whether any partition has cut the job.
    pub(crate) fn partitioned(&self) -> bool {
        self.side.iter().any(|s| *s != self.side[0])
    }

    pub(crate) fn pending_detections(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.pending_detections.iter().copied()
    }

    /// Deliveries of each link's first frame (unless its receiver is paused), and
    /// losses of each failed link's last frame when faults may lose frames in
    /// flight.
    pub(crate) fn enabled_deliveries(&self, lose_in_flight: bool, actions: &mut Vec<Action>) {
        for (&(from, to), link) in &self.links {
            let Some(first) = link.frames.front() else {
                continue;
            };
            if !self.is_paused(to) {
                actions.push(Action::Deliver {
                    from,
                    to,
                    frame: first.id,
                });
            }
            if lose_in_flight && (self.is_down(from) || !self.connected(from, to)) {
                actions.push(Action::Drop { from, to });
            }
        }
    }

    /// Links with a frame in flight, as (from, to).
    pub(crate) fn busy_links(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| !l.frames.is_empty())
            .map(|(k, _)| *k)
    }

    pub(crate) fn in_flight(&self, from: NodeId, to: NodeId) -> usize {
        self.links.get(&(from, to)).map_or(0, |l| l.frames.len())
    }

    pub(crate) fn keep_first(&mut self, from: NodeId, to: NodeId, keep: usize) {
        if let Some(link) = self.links.get_mut(&(from, to)) {
            let lost = link.frames.len().saturating_sub(keep);
            link.frames.truncate(keep);
            self.stats.lost_frames += lost as u64;
        }
    }
}

impl Hash for Net {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (link, queue) in &self.links {
            if !queue.frames.is_empty() {
                link.hash(state);
                for frame in &queue.frames {
                    frame.bytes.hash(state);
                }
            }
        }
        self.crashed.hash(state);
        self.exited.hash(state);
        self.paused.hash(state);
        self.absent.hash(state);
        self.broken.hash(state);
        self.pending_timeouts.hash(state);
        self.side.hash(state);
        self.pending_detections.hash(state);
        self.late_detections.hash(state);
        self.stats.messages.hash(state);
    }
}

impl<P: Protocol> World<P> {
    /// Encodes `messages` from `from` to `to` into frames and puts them on the link.
    pub(crate) fn transmit(
        &mut self,
        from: NodeId,
        to: NodeId,
        messages: Vec<Message>,
        chooser: &mut dyn Chooser,
    ) {
        let stats = &mut self.net.stats;
        stats.messages += messages.len() as u64;
        for message in &messages {
            *stats.by_kind.entry(message.kind()).or_default() += 1;
        }
        let label = frame_label(&messages);
        let carried: Vec<(Key, Option<NodeId>)> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Request { key, .. } => Some((*key, None)),
                Message::Disseminate { key, root, .. } => Some((*key, Some(*root))),
                _ => None,
            })
            // The log a joiner replays makes its keys global there.
            .chain(messages.iter().flat_map(|m| {
                match m {
                    Message::Welcome { log, .. } => log
                        .iter()
                        .map(|replay| (replay.registration.key(), None))
                        .collect(),
                    _ => Vec::new(),
                }
            }))
            .collect();
        let frames = match encode_frames(&messages, self.scenario.max_frame_bytes) {
            Ok(frames) => frames,
            Err(error) => {
                let error = error.to_string();
                return self.violate(Violation::Encode { node: from, error });
            }
        };
        let scenario = self.scenario.clone();
        let network = &scenario.network;
        let depart_ns = self.now_ns.max(self.net.nic_free_ns[from.0 as usize])
            + network.send_gap_ns * messages.len() as u64;
        self.net.nic_free_ns[from.0 as usize] = depart_ns;
        let lost = self.net.is_down(to) || !self.net.connected(from, to);
        for bytes in frames {
            let id = self.net.next_frame;
            self.net.next_frame += 1;
            self.net.stats.frames += 1;
            self.net.stats.bytes += bytes.len() as u64;
            let hop = self.net.clocks[from.0 as usize];
            self.trace.frame(
                TraceKind::Send,
                self.now_ns,
                from,
                to,
                id,
                &label,
                bytes.len(),
            );
            if lost {
                self.net.stats.lost_frames += 1;
                continue;
            }
            let latency = if self.timed {
                chooser.choose_between(
                    ChoiceKind::Latency,
                    network.latency_min_ns,
                    network.latency_max_ns,
                )
            } else {
                0
            };
            let link = self.net.links.entry((from, to)).or_default();
            let due_ns = (depart_ns + latency).max(link.last_due_ns);
            link.last_due_ns = due_ns;
            let label = label.clone();
            link.frames.push_back(Frame {
                id,
                bytes,
                label,
                hop,
                carried: carried.clone(),
            });
            self.schedule(
                due_ns,
                Action::Deliver {
                    from,
                    to,
                    frame: id,
                },
            );
        }
    }

    /// The first frame on the link arrives, unless it was lost meanwhile.
    pub(crate) fn deliver(
        &mut self,
        from: NodeId,
        to: NodeId,
        frame: u64,
        chooser: &mut dyn Chooser,
    ) {
        let Some(link) = self.net.links.get_mut(&(from, to)) else {
            return;
        };
        if link.frames.front().map(|f| f.id) != Some(frame) {
            return;
        }
        let Some(frame) = link.frames.pop_front() else {
            return;
        };
        if self.net.is_down(to) {
            self.net.stats.lost_frames += 1;
            return;
        }
        self.maybe_duplicate(from, to, &frame, chooser);
        let dead_before = self.views.dead_before(to);
        let clock = &mut self.net.clocks[to.0 as usize];
        *clock = (*clock).max(frame.hop + 1);
        self.trace.frame(
            TraceKind::Receive,
            self.now_ns,
            from,
            to,
            frame.id,
            &frame.label,
            frame.bytes.len(),
        );
        if let Err(error) = self.nodes[to.0 as usize].handle_frame(from, &frame.bytes) {
            let error = error.to_string();
            self.violate(Violation::Rejected {
                node: to,
                from,
                error,
            });
        }
        self.learn_carried(to, from, &frame.carried, &dead_before);
        self.drain(to, chooser);
    }

    /// The last frame in flight on a failed link is lost (exploration).
    pub(crate) fn drop_last(&mut self, from: NodeId, to: NodeId) {
        let keep = self.net.in_flight(from, to).saturating_sub(1);
        self.net.keep_first(from, to, keep);
    }

    /// `node` stops for good: its running work vanishes, frames to it are lost,
    /// frames from it may be, and every live node will notice.
    pub(crate) fn crash(&mut self, node: NodeId, chooser: &mut dyn Chooser) {
        if self.net.is_down(node) {
            return;
        }
        self.net.crashed[node.0 as usize] = true;
        self.crashes_left = self.crashes_left.saturating_sub(1);
        self.trace
            .instant(self.now_ns, node, "crash", serde_json::Value::Null);
        self.process_gone(node, chooser);
    }

    /// `node`'s process is gone (crashed or exited): its running work vanishes,
    /// frames to it are lost, frames from it may be, and every live node's
    /// transport will notice the lost links.
    pub(crate) fn process_gone(&mut self, node: NodeId, chooser: &mut dyn Chooser) {
        self.hosts[node.0 as usize].stop();
        self.net.paused[node.0 as usize] = false;
        self.net
            .pending_timeouts
            .retain(|(o, p)| *o != node && *p != node);
        let orphaned: Vec<NodeId> = (self.net.pending_detections.iter())
            .filter(|(o, _)| *o == node)
            .map(|(_, failed)| *failed)
            .collect();
        self.net.pending_detections.retain(|(o, _)| *o != node);
        self.net
            .late_detections
            .retain(|(o, f)| *o != node && *f != node);
        let slots = self.scenario.slots();
        let inbound: Vec<NodeId> = (0..slots).map(NodeId).collect();
        for from in inbound {
            self.net.keep_first(from, node, 0);
        }
        let outbound: Vec<NodeId> = (0..slots).map(NodeId).collect();
        self.lose_in_flight(node, &outbound, chooser);
        let mut observers: Vec<NodeId> = (0..slots)
            .map(NodeId)
            .filter(|o| *o != node && !self.net.is_down(*o))
            .collect();
        if self.scenario.faults.one_detector {
            // One transport notices first (the lowest-numbered live peer); the others
            // notice too, but only once nothing else can happen. If the first was
            // about to notice another failure, the next live peer takes that over.
            for late in observers.split_off(1.min(observers.len())) {
                self.expect_late_detection(late, node);
            }
            for failed in orphaned {
                let next = (0..slots)
                    .map(NodeId)
                    .find(|o| *o != failed && !self.net.is_down(*o));
                if let Some(next) = next.filter(|_| self.net.is_down(failed)) {
                    self.expect_detection(next, failed, chooser);
                }
            }
        }
        for observer in observers {
            self.expect_detection(observer, node, chooser);
        }
    }

    /// Cuts every link between `side` and the rest, for good; both sides notice.
    pub(crate) fn partition(&mut self, side: &[NodeId], chooser: &mut dyn Chooser) {
        let n = self.scenario.slots() as usize;
        let mut inside = vec![false; n];
        for node in side {
            inside[node.0 as usize] = true;
        }
        self.partitions += 1;
        let before = self.net.side.clone();
        for (label, inside) in self.net.side.iter_mut().zip(&inside) {
            *label = *label * 2 + u64::from(*inside);
        }
        self.trace.instant(
            self.now_ns,
            side.first().copied().unwrap_or_default(),
            "partition",
            serde_json::json!({ "side": side.iter().map(|n| n.0).collect::<Vec<_>>() }),
        );
        for a in 0..n {
            let cut: Vec<NodeId> = (0..n)
                .filter(|&b| before[a] == before[b] && inside[a] != inside[b])
                .map(|b| NodeId(b as u32))
                .collect();
            let a = NodeId(a as u32);
            self.lose_in_flight(a, &cut, chooser);
            if self.net.is_down(a) {
                continue;
            }
            for b in cut {
                if !self.net.is_down(b) {
                    self.expect_detection(a, b, chooser);
                }
            }
        }
    }

    /// `observer` is told `failed` is gone, unless it was already or has crashed.
    pub(crate) fn detect(&mut self, observer: NodeId, failed: NodeId, chooser: &mut dyn Chooser) {
        let pending = self.net.pending_detections.remove(&(observer, failed));
        let late = self.net.late_detections.remove(&(observer, failed));
        if !(pending || late) || self.net.is_down(observer) {
            return;
        }
        self.declare_down(observer, failed, "connection lost", chooser);
    }

    /// `observer`'s transport declares `failed` down for `reason`: recorded, so that
    /// a result may name `failed` only if some transport did this.
    pub(crate) fn declare_down(
        &mut self,
        observer: NodeId,
        failed: NodeId,
        reason: &str,
        chooser: &mut dyn Chooser,
    ) {
        self.declared.insert(failed);
        self.trace.instant(
            self.now_ns,
            observer,
            "peer_down",
            serde_json::json!({ "node": failed.0, "reason": reason }),
        );
        self.nodes[observer.0 as usize].peer_down(failed, reason);
        self.drain(observer, chooser);
    }

    /// Frames in flight from `from` to each of `to` on a link that just failed: a
    /// timed run keeps a chosen prefix of each link (when losses are enabled); an
    /// exploration keeps them all and offers their loss as actions.
    pub(crate) fn lose_in_flight(
        &mut self,
        from: NodeId,
        to: &[NodeId],
        chooser: &mut dyn Chooser,
    ) {
        if !self.timed || !self.lose_in_flight {
            return;
        }
        for &to in to {
            let in_flight = self.net.in_flight(from, to);
            if in_flight > 0 {
                let keep = chooser.choose(ChoiceKind::InFlightKept, in_flight as u64 + 1);
                self.net.keep_first(from, to, keep as usize);
            }
        }
    }

    /// `observer` will notice that its link to `failed` is gone only through
    /// heartbeat silence: later than anything else (exploration: once nothing else
    /// can happen; timed: after the fault window and a long time-out).
    pub(crate) fn expect_late_detection(&mut self, observer: NodeId, failed: NodeId) {
        if !self.net.late_detections.insert((observer, failed)) {
            return;
        }
        if self.timed {
            let scenario = self.scenario.clone();
            let at_ns =
                self.now_ns.max(scenario.faults.window_ns) + 10 * scenario.network.detect_max_ns;
            self.schedule(at_ns, Action::Detect { observer, failed });
        }
    }

    pub(crate) fn expect_detection(
        &mut self,
        observer: NodeId,
        failed: NodeId,
        chooser: &mut dyn Chooser,
    ) {
        if !self.net.pending_detections.insert((observer, failed)) {
            return;
        }
        if self.timed {
            let scenario = self.scenario.clone();
            let network = &scenario.network;
            let delay = chooser.choose_between(
                ChoiceKind::DetectionDelay,
                network.detect_min_ns,
                network.detect_max_ns,
            );
            self.schedule(self.now_ns + delay, Action::Detect { observer, failed });
        }
    }
}

/// The kinds of a frame's messages, e.g. `disseminate+complete`.
fn frame_label(messages: &[Message]) -> String {
    let mut label = String::new();
    for message in messages {
        let kind = message.kind();
        if !label.split('+').any(|k| k == kind) {
            if !label.is_empty() {
                label.push('+');
            }
            label.push_str(kind);
        }
    }
    label
}
