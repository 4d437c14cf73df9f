//! A minimal in-memory driver for core tests: FIFO delivery, explicit control of
//! invocations and tasks. The full simulator lives in herald-sim.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use herald_core::{
    Config, Invocation, JoinFailure, Key, LaunchId, Message, Node, NodeId, Output, Registration,
    RegistrationResult, RequestId, TaskOutcome, TaskRequest, View, encode_frames,
};

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Frames sent and not yet delivered, in send order.
    pub in_flight: VecDeque<(NodeId, NodeId, Vec<Message>)>,
    /// Invocations started and not yet finished, per node.
    pub running: Vec<(NodeId, Invocation)>,
    /// Every invocation ever started: (node, key).
    pub invoked: Vec<(NodeId, Key)>,
    pub completed: Vec<(NodeId, RequestId, RegistrationResult)>,
    pub tasks: Vec<(NodeId, TaskRequest)>,
    pub task_results: Vec<(NodeId, LaunchId, TaskOutcome)>,
    pub sent_by_kind: BTreeMap<&'static str, usize>,
    /// Number of Transmit outputs (frames).
    pub frames: usize,
    /// Nodes crashed by the test: frames to and from them are lost.
    pub crashed: Vec<u32>,
    /// (node, peer, declared by) for every PeerDown output.
    pub downs: Vec<(NodeId, NodeId, NodeId)>,
    /// (node, declared by) for every Fenced output.
    pub fenced: Vec<(NodeId, NodeId)>,
    /// Links cut by the test, both directions: frames on them are lost.
    pub cut: Vec<(u32, u32)>,
    /// Every ViewChanged output: (node, view).
    pub views: Vec<(NodeId, View)>,
    /// Joiners that replayed the log, in order.
    pub admitted: Vec<NodeId>,
    /// Joiners that were not admitted, and why.
    pub join_failed: Vec<(NodeId, JoinFailure)>,
    /// Every (node, event) in order: "invoke <key>" or "task <name>", to check
    /// that a joiner replays before it runs a task.
    pub history: Vec<(NodeId, String)>,
}

impl Cluster {
    pub fn new(nodes: u32, fanout: u32) -> Self {
        Self::with_frame_limit(nodes, fanout, herald_core::DEFAULT_MAX_FRAME_BYTES)
    }

    /// A cluster whose every frame must fit in `max_frame_bytes` (checked on send).
    pub fn with_frame_limit(nodes: u32, fanout: u32, max_frame_bytes: usize) -> Self {
        Self {
            nodes: (0..nodes)
                .map(|i| {
                    Node::new(
                        Config::new(NodeId(i), nodes)
                            .and_then(|c| c.with_fanout(fanout))
                            .and_then(|c| c.with_max_frame_bytes(max_frame_bytes))
                            .expect("valid config"),
                    )
                })
                .collect(),
            in_flight: VecDeque::new(),
            running: Vec::new(),
            invoked: Vec::new(),
            completed: Vec::new(),
            tasks: Vec::new(),
            task_results: Vec::new(),
            sent_by_kind: BTreeMap::new(),
            frames: 0,
            crashed: Vec::new(),
            downs: Vec::new(),
            fenced: Vec::new(),
            cut: Vec::new(),
            views: Vec::new(),
            admitted: Vec::new(),
            join_failed: Vec::new(),
            history: Vec::new(),
        }
    }

    /// A fresh process joins with the next id; `admitter` admits it at once (its
    /// transport authenticated it). Returns the joiner's id.
    pub fn join(&mut self, admitter: u32) -> u32 {
        let id = self.nodes.len() as u32;
        let fanout = self.nodes[0].config().fanout();
        let limit = self.nodes[0].config().max_frame_bytes();
        let config = Config::new(NodeId(id), id + 1)
            .and_then(|c| c.with_fanout(fanout))
            .and_then(|c| c.with_max_frame_bytes(limit))
            .expect("valid config");
        self.nodes.push(Node::joining(config, NodeId(admitter)));
        self.nodes[admitter as usize]
            .admit(NodeId(id))
            .expect("admit");
        self.pump();
        id
    }

    pub fn node(&mut self, i: u32) -> &mut Node {
        &mut self.nodes[i as usize]
    }

    /// Frames in flight holding a message of `kind`.
    pub fn in_flight_of_kind(&self, kind: &str) -> Vec<(NodeId, NodeId, Vec<Message>)> {
        self.in_flight
            .iter()
            .filter(|(_, _, messages)| messages.iter().any(|m| m.kind() == kind))
            .cloned()
            .collect()
    }

    pub fn messages(&self) -> usize {
        self.sent_by_kind.values().sum()
    }

    pub fn register(&mut self, i: u32, registration: &Registration) -> RequestId {
        let r = self.nodes[i as usize]
            .register(registration.clone(), None)
            .expect("register");
        self.pump();
        r
    }

    /// Drains every node's outputs into the buffers.
    pub fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            let me = NodeId(i as u32);
            while let Some(output) = self.nodes[i].poll_output() {
                match output {
                    Output::Transmit { to, messages } => {
                        let limit = self.nodes[i].config().max_frame_bytes();
                        let frames = encode_frames(&messages, limit).expect("every message fits");
                        assert!(frames.iter().all(|f| f.len() <= limit));
                        self.frames += 1;
                        for m in &messages {
                            *self.sent_by_kind.entry(m.kind()).or_default() += 1;
                        }
                        self.in_flight.push_back((me, to, messages));
                    }
                    Output::Invoke(inv) => {
                        self.history.push((me, format!("invoke {:?}", inv.key)));
                        self.invoked.push((me, inv.key));
                        self.running.push((me, inv));
                    }
                    Output::Completed { request, result } => {
                        self.completed.push((me, request, result))
                    }
                    Output::RunTask(task) => {
                        self.history.push((me, format!("task {}", task.task)));
                        self.tasks.push((me, task))
                    }
                    Output::TaskCompleted { launch, outcome } => {
                        self.task_results.push((me, launch, outcome))
                    }
                    Output::PeerDown { node, by, .. } => self.downs.push((me, node, by)),
                    Output::Fenced { by, .. } => self.fenced.push((me, by)),
                    Output::ViewChanged(view) => self.views.push((me, view)),
                    Output::Admitted => self.admitted.push(me),
                    Output::JoinFailed(failure) => self.join_failed.push((me, failure)),
                }
            }
        }
    }

    /// Delivers the oldest in-flight frame, all its messages before polling; false
    /// if none.
    pub fn deliver_one(&mut self) -> bool {
        let Some((from, to, messages)) = self.in_flight.pop_front() else {
            return false;
        };
        // A frame to an id no process took (a join that never happened) is lost.
        if to.0 as usize >= self.nodes.len()
            || self.crashed.contains(&from.0)
            || self.crashed.contains(&to.0)
            || self.is_cut(from.0, to.0)
        {
            return true;
        }
        for message in messages {
            self.nodes[to.0 as usize]
                .handle_message(from, message)
                .expect("valid message");
        }
        self.pump();
        true
    }

    /// Delivers messages until none is in flight (invocations stay as they are).
    pub fn deliver_all(&mut self) {
        while self.deliver_one() {}
    }

    /// Finishes the oldest running invocation of `key` on `node`.
    pub fn finish(&mut self, node: u32, key: Key, outcome: Result<(), String>) {
        let at = self
            .running
            .iter()
            .position(|(n, inv)| n.0 == node && inv.key == key)
            .unwrap_or_else(|| panic!("no running invocation of {key:?} on node {node}"));
        let (_, inv) = self.running.remove(at);
        self.nodes[node as usize]
            .invocation_finished(inv.id, outcome)
            .expect("finish");
        self.pump();
    }

    /// Runs to quiescence, finishing every invocation successfully.
    pub fn settle(&mut self) {
        loop {
            if self.deliver_one() {
                continue;
            }
            let Some((node, inv)) = self.running.first().cloned() else {
                break;
            };
            self.finish(node.0, inv.key, Ok(()));
        }
    }

    pub fn invocations_of(&self, key: Key) -> usize {
        self.invoked.iter().filter(|(_, k)| *k == key).count()
    }

    pub fn answer(&self, node: u32, request: RequestId) -> Option<&RegistrationResult> {
        self.completed
            .iter()
            .find(|(n, r, _)| n.0 == node && *r == request)
            .map(|(_, _, result)| result)
    }

    /// Whether `node` had `launch` answered with a result (the task ran and
    /// returned).
    pub fn answered_ok(&self, node: u32, launch: LaunchId) -> bool {
        self.task_results
            .iter()
            .any(|(n, l, outcome)| n.0 == node && *l == launch && outcome.is_ok())
    }

    /// Cuts the link between `a` and `b`: frames on it, in flight or later, are lost.
    pub fn cut_link(&mut self, a: u32, b: u32) {
        self.cut.push((a.min(b), a.max(b)));
    }

    pub fn is_cut(&self, a: u32, b: u32) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Whether `node` has run `key` (an invocation was started there).
    pub fn ran(&self, node: u32, key: Key) -> bool {
        self.invoked.iter().any(|(n, k)| n.0 == node && *k == key)
    }

    /// Crashes `dead` and tells every other node's transport at once.
    pub fn peer_down_everywhere(&mut self, dead: u32) {
        self.crashed.push(dead);
        for i in 0..self.nodes.len() as u32 {
            if i != dead {
                self.nodes[i as usize].peer_down(NodeId(dead), "connection lost");
            }
        }
        self.in_flight
            .retain(|(from, to, _)| from.0 != dead && to.0 != dead);
        self.running.retain(|(n, _)| n.0 != dead);
        self.pump();
    }
}

/// A registration whose key's home is `home` in a job of `nodes` nodes.
pub fn registration_homed_at(home: u32, nodes: u32, label: &str) -> Registration {
    (0u32..)
        .map(|i| Registration::new(format!("{label}-{i}").into_bytes(), vec![]))
        .find(|r| r.key().home(nodes) == NodeId(home))
        .expect("some label hashes to every home")
}
