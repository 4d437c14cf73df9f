//! The faults a real transport produces, beyond crashes and partitions: single
//! broken links (noticed by one end or both), false suspicion of a live peer,
//! paused processes that resume, frames delivered twice, and processes that end
//! because they were fenced.

use herald_core::NodeId;

use crate::world::{Action, World};
use crate::{ChoiceKind, Chooser, Protocol};

impl<P: Protocol> World<P> {
    /// The link between `a` and `b` breaks for good: frames in flight may be lost,
    /// later frames are. `a`'s transport notices after a delay; so does `b`'s unless
    /// the failure is one-sided, in which case `b` notices only by heartbeat
    /// silence, after everything else (unless it was fenced first).
    pub(crate) fn break_link(
        &mut self,
        a: NodeId,
        b: NodeId,
        one_sided: bool,
        chooser: &mut dyn Chooser,
    ) {
        if one_sided {
            self.one_sided_left = self.one_sided_left.saturating_sub(1);
        } else {
            self.link_failures_left = self.link_failures_left.saturating_sub(1);
        }
        if !self.net.broken.insert((a.min(b), a.max(b))) {
            return;
        }
        let name = if one_sided {
            "link broken (one side notices)"
        } else {
            "link broken"
        };
        self.trace
            .instant(self.now_ns, a, name, serde_json::json!({ "peer": b.0 }));
        self.lose_in_flight(a, &[b], chooser);
        self.lose_in_flight(b, &[a], chooser);
        if !self.net.is_down(a) && !self.net.is_down(b) {
            self.expect_detection(a, b, chooser);
            if one_sided {
                self.expect_late_detection(b, a);
            } else {
                self.expect_detection(b, a, chooser);
            }
        }
    }

    /// `observer`'s transport wrongly declares the live `suspect` down; every link
    /// stays up.
    pub(crate) fn suspect(&mut self, observer: NodeId, suspect: NodeId, chooser: &mut dyn Chooser) {
        self.suspicions_left = self.suspicions_left.saturating_sub(1);
        if self.net.is_down(observer) || self.net.is_down(suspect) {
            return;
        }
        self.declare_down(observer, suspect, "suspected (no heartbeat)", chooser);
    }

    /// `node` stops processing anything until it resumes. Each live peer times out
    /// on it (and declares it down) if the pause outlasts its detection delay: in
    /// a timed run the pause length and the delays are drawn; in an exploration
    /// each time-out is an action enabled until the node resumes.
    pub(crate) fn pause(&mut self, node: NodeId, chooser: &mut dyn Chooser) {
        self.pauses_left = self.pauses_left.saturating_sub(1);
        if self.net.is_down(node) || self.net.is_paused(node) {
            return;
        }
        self.net.paused[node.0 as usize] = true;
        self.trace
            .instant(self.now_ns, node, "pause", serde_json::Value::Null);
        let scenario = self.scenario.clone();
        let network = &scenario.network;
        let pause_ns = if self.timed {
            let longest = scenario.faults.pause_max_ns.max(network.detect_max_ns);
            chooser.choose_between(ChoiceKind::FaultTime, network.detect_min_ns / 2, longest)
        } else {
            0
        };
        let observers: Vec<NodeId> = (0..scenario.slots())
            .map(NodeId)
            .filter(|o| *o != node && !self.net.is_down(*o))
            .collect();
        for observer in observers {
            if !self.timed {
                self.net.pending_timeouts.insert((observer, node));
                continue;
            }
            let delay = chooser.choose_between(
                ChoiceKind::DetectionDelay,
                network.detect_min_ns,
                network.detect_max_ns,
            );
            if delay < pause_ns {
                self.net.pending_timeouts.insert((observer, node));
                self.schedule(
                    self.now_ns + delay,
                    Action::Timeout {
                        observer,
                        paused: node,
                    },
                );
            }
        }
        self.schedule(self.now_ns + pause_ns, Action::Resume(node));
    }

    /// `node` continues: time-outs that have not fired are cancelled (its
    /// heartbeats arrive again), and everything that waited for it happens now, in
    /// order.
    pub(crate) fn resume(&mut self, node: NodeId) {
        if !self.net.is_paused(node) {
            return;
        }
        self.net.paused[node.0 as usize] = false;
        self.net.pending_timeouts.retain(|(_, p)| *p != node);
        self.trace
            .instant(self.now_ns, node, "resume", serde_json::Value::Null);
        let deferred = std::mem::take(&mut self.deferred[node.0 as usize]);
        for action in deferred {
            self.schedule(self.now_ns, action);
        }
    }

    /// `observer` timed out on the paused `paused` and declares it down.
    pub(crate) fn timeout(&mut self, observer: NodeId, paused: NodeId, chooser: &mut dyn Chooser) {
        if !self.net.pending_timeouts.remove(&(observer, paused)) || self.net.is_down(observer) {
            return;
        }
        self.declare_down(observer, paused, "silent for too long", chooser);
    }

    /// Exploration: the first frame in flight on the link is delivered again later,
    /// after the frames behind it.
    pub(crate) fn duplicate(&mut self, from: NodeId, to: NodeId) {
        let Some(first) = self.net.link_mut(from, to).and_then(|l| l.front().cloned()) else {
            return;
        };
        self.duplicates_left = self.duplicates_left.saturating_sub(1);
        let id = self.net.next_frame_id();
        self.net
            .push_copy(from, to, crate::network::Frame { id, ..first }, 0);
    }

    /// Timed: while duplicates remain in the fault window, a delivered frame is
    /// sometimes delivered once more, after a fresh latency.
    pub(crate) fn maybe_duplicate(
        &mut self,
        from: NodeId,
        to: NodeId,
        frame: &crate::network::Frame,
        chooser: &mut dyn Chooser,
    ) {
        if !self.timed
            || self.duplicates_left == 0
            || self.now_ns >= self.scenario.faults.window_ns
            || !chooser.choose_chance(ChoiceKind::Duplicate, 1, 8)
        {
            return;
        }
        self.duplicates_left -= 1;
        let network = &self.scenario.network;
        let latency = chooser.choose_between(
            ChoiceKind::Latency,
            network.latency_min_ns,
            network.latency_max_ns,
        );
        let id = self.net.next_frame_id();
        let copy = crate::network::Frame {
            id,
            ..frame.clone()
        };
        let due_ns = self.net.push_copy(from, to, copy, self.now_ns + latency);
        self.trace.instant(
            self.now_ns,
            from,
            "duplicate",
            serde_json::json!({ "to": to.0 }),
        );
        self.schedule(
            due_ns,
            Action::Deliver {
                from,
                to,
                frame: id,
            },
        );
    }

    /// `node` was fenced: another node declared it down. Its process ends (this is
    /// not a crash and costs no crash budget), and every live peer's transport
    /// notices the lost links.
    pub(crate) fn exit(&mut self, node: NodeId, by: NodeId, chooser: &mut dyn Chooser) {
        if self.net.is_down(node) {
            return;
        }
        self.net.exited[node.0 as usize] = true;
        self.trace.instant(
            self.now_ns,
            node,
            "fenced",
            serde_json::json!({ "by": by.0 }),
        );
        self.process_gone(node, chooser);
    }
}
