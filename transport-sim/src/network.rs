//! The simulated network: FIFO links carrying encoded frames, crash-stop nodes,
//! partitions, and failure detection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};

use herald_core::{DEFAULT_MAX_FRAME_BYTES, Message, NodeId, encode_frames};

use crate::trace::TraceKind;
use crate::world::{Action, World};
use crate::{ChoiceKind, Chooser, Protocol, Violation};

/// Links, failures and message counters.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    links: BTreeMap<(NodeId, NodeId), Link>,
    nic_free_ns: Vec<u64>,
    crashed: Vec<bool>,
    /// Partition labels: two nodes can talk while their labels are equal.
    side: Vec<u64>,
    /// Lamport hop clocks: the longest chain of messages leading to each node's
    /// present state.
    pub(crate) clocks: Vec<u64>,
    pending_detections: BTreeSet<(NodeId, NodeId)>,
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
struct Frame {
    id: u64,
    bytes: Vec<u8>,
    label: String,
    hop: u64,
}

impl Net {
    pub(crate) fn new(nodes: u32) -> Self {
        let n = nodes as usize;
        Self {
            links: BTreeMap::new(),
            nic_free_ns: vec![0; n],
            crashed: vec![false; n],
            side: vec![0; n],
            clocks: vec![0; n],
            pending_detections: BTreeSet::new(),
            next_frame: 0,
            stats: Stats::default(),
        }
    }

    pub(crate) fn is_crashed(&self, node: NodeId) -> bool {
        self.crashed[node.0 as usize]
    }

    /// Whether `a` and `b` are on the same side of every partition.
    pub(crate) fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.side[a.0 as usize] == self.side[b.0 as usize]
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

    /// Deliveries of each link's first frame, and losses of each failed link's
    /// last frame when faults may lose frames in flight.
    pub(crate) fn enabled_deliveries(&self, lose_in_flight: bool, actions: &mut Vec<Action>) {
        for (&(from, to), link) in &self.links {
            let Some(first) = link.frames.front() else {
                continue;
            };
            actions.push(Action::Deliver {
                from,
                to,
                frame: first.id,
            });
            if lose_in_flight && (self.is_crashed(from) || !self.connected(from, to)) {
                actions.push(Action::Drop { from, to });
            }
        }
    }

    fn in_flight(&self, from: NodeId, to: NodeId) -> usize {
        self.links.get(&(from, to)).map_or(0, |l| l.frames.len())
    }

    fn keep_first(&mut self, from: NodeId, to: NodeId, keep: usize) {
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
        self.side.hash(state);
        self.pending_detections.hash(state);
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
        let frames = match encode_frames(&messages, DEFAULT_MAX_FRAME_BYTES) {
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
        let lost = self.net.is_crashed(to) || !self.net.connected(from, to);
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
        if self.net.is_crashed(to) {
            self.net.stats.lost_frames += 1;
            return;
        }
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
        if self.net.is_crashed(node) {
            return;
        }
        self.net.crashed[node.0 as usize] = true;
        self.crashes_left = self.crashes_left.saturating_sub(1);
        self.hosts[node.0 as usize].stop();
        self.trace
            .instant(self.now_ns, node, "crash", serde_json::Value::Null);
        let inbound: Vec<NodeId> = (0..self.scenario.nodes).map(NodeId).collect();
        for from in inbound {
            self.net.keep_first(from, node, 0);
        }
        let outbound: Vec<NodeId> = (0..self.scenario.nodes).map(NodeId).collect();
        self.lose_in_flight(node, &outbound, chooser);
        let observers: Vec<NodeId> = (0..self.scenario.nodes)
            .map(NodeId)
            .filter(|o| *o != node && !self.net.is_crashed(*o))
            .collect();
        for observer in observers {
            self.expect_detection(observer, node, chooser);
        }
    }

    /// Cuts every link between `side` and the rest, for good; both sides notice.
    pub(crate) fn partition(&mut self, side: &[NodeId], chooser: &mut dyn Chooser) {
        let n = self.scenario.nodes as usize;
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
            if self.net.is_crashed(a) {
                continue;
            }
            for b in cut {
                if !self.net.is_crashed(b) {
                    self.expect_detection(a, b, chooser);
                }
            }
        }
    }

    /// `observer` is told `failed` is gone, unless it was already or has crashed.
    pub(crate) fn detect(&mut self, observer: NodeId, failed: NodeId, chooser: &mut dyn Chooser) {
        if !self.net.pending_detections.remove(&(observer, failed)) || self.net.is_crashed(observer)
        {
            return;
        }
        self.trace.instant(
            self.now_ns,
            observer,
            "peer_down",
            serde_json::json!({ "node": failed.0 }),
        );
        self.nodes[observer.0 as usize].peer_down(failed, "connection lost");
        self.drain(observer, chooser);
    }

    /// Frames in flight from `from` to each of `to` on a link that just failed: a
    /// timed run keeps a chosen prefix of each link (when losses are enabled); an
    /// exploration keeps them all and offers their loss as actions.
    fn lose_in_flight(&mut self, from: NodeId, to: &[NodeId], chooser: &mut dyn Chooser) {
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

    fn expect_detection(&mut self, observer: NodeId, failed: NodeId, chooser: &mut dyn Chooser) {
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
