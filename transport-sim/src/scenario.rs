//! What to simulate: the job, its network, the requests and launches its hosts make,
//! and the faults that may hit it.

use herald_core::{DEFAULT_FANOUT, DEFAULT_MAX_FRAME_BYTES, Key, NodeId};
use serde::{Deserialize, Serialize};

use crate::{Script, SimError};

/// One simulated job, complete: running the same scenario with the same seed gives
/// the same run, byte for byte.
///
/// ```
/// use herald_sim::{Scenario, Script};
/// use herald_core::NodeId;
/// let scenario = Scenario::new(16)
///     .with_fanout(2)
///     .with_seed(42)
///     .with_request(NodeId(3), 0, Script::new("libtasks.so"));
/// assert!(scenario.validate().is_ok());
/// assert_eq!(scenario.requesters(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scenario {
    /// Number of nodes in the job.
    pub nodes: u32,
    /// Children per node in herald's dissemination tree.
    pub fanout: u32,
    /// The root seed of every random choice of a timed run.
    pub seed: u64,
    /// Latencies and delays of the simulated network.
    pub network: Network,
    /// Top-level registrations the hosts request.
    pub requests: Vec<RequestPlan>,
    /// Tasks the hosts launch.
    pub launches: Vec<LaunchPlan>,
    /// Failures that may happen.
    pub faults: Faults,
    /// The frame limit every node is configured with (and the network enforces).
    pub max_frame_bytes: usize,
    /// Failed loads report error texts at least this long (padded), to test that
    /// reports stay within the frame limit; 0 keeps the natural text.
    pub error_bytes: usize,
    /// Processes that join the running job, in order: join `i` gets node id
    /// `nodes + i` and is admitted by node 0.
    #[serde(default)]
    pub joins: Vec<JoinPlan>,
}

/// A process that joins the running job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JoinPlan {
    /// When its transport has authenticated it and node 0 admits it (virtual ns).
    pub at_ns: u64,
}

/// Timing of the simulated network and hosts, in virtual nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Network {
    /// Smallest one-way latency of a frame.
    pub latency_min_ns: u64,
    /// Largest one-way latency of a frame.
    pub latency_max_ns: u64,
    /// Time a node's network interface spends per message sent: a node that sends
    /// many messages sends them one after another.
    pub send_gap_ns: u64,
    /// Shortest time for a live node to notice a failure.
    pub detect_min_ns: u64,
    /// Longest time for a live node to notice a failure.
    pub detect_max_ns: u64,
    /// How long a launched task runs.
    pub task_ns: u64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_min_ns: 2_000,
            latency_max_ns: 20_000,
            send_gap_ns: 100,
            detect_min_ns: 50_000,
            detect_max_ns: 200_000,
            task_ns: 1_000,
        }
    }
}

/// A top-level registration requested by one host at one time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestPlan {
    /// The requesting node.
    pub node: NodeId,
    /// When it requests (timed runs; exploration tries every order).
    pub at_ns: u64,
    /// The code registered.
    pub script: Script,
}

/// A task launched from one node to another at one time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The launching node.
    pub from: NodeId,
    /// The node that runs the task.
    pub to: NodeId,
    /// When it is launched. Exploration launches only after every request `from`
    /// makes at or before this time.
    pub at_ns: u64,
    /// The task's name, looked up in the target's simulated task registry.
    pub task: String,
    /// The launch waits until this answer has arrived on `from` (timed runs and
    /// exploration alike); a launch whose condition never holds is never made.
    pub after: Option<After>,
    /// The launch is made from inside the invocation of the script with this name
    /// on `from` (as code running during a load would), when that invocation
    /// starts; `at_ns` and `after` are then ignored.
    pub inside: Option<String>,
}

/// An answer a launch waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum After {
    /// The scenario's request with this index was answered.
    Answer(usize),
    /// The scenario's launch with this index was answered.
    Launch(usize),
}

/// The failures a run may suffer. All times are drawn before `window_ns`: after it
/// no new fault happens, and everything must finish within the liveness bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Faults {
    /// Exactly this many distinct nodes crash (timed runs), or at most this many
    /// (exploration).
    pub crashes: u32,
    /// Each node crashes with this probability, in parts per million (timed runs).
    pub crash_ppm: u32,
    /// This many partitions cut the job in two.
    pub partitions: u32,
    /// Frames in flight on a failed link may be lost (a suffix of each link).
    pub lose_in_flight: bool,
    /// Each run enables a random subset of the fault kinds above (swarm testing).
    pub swarm: bool,
    /// Faults happen before this virtual time.
    pub window_ns: u64,
    /// Nodes that may crash (empty: every node).
    pub crash_candidates: Vec<NodeId>,
    /// The side every partition cuts off (empty: a random side per partition in
    /// timed runs; no partition in exploration).
    pub partition_side: Vec<NodeId>,
    /// This many single links break, noticed by both of their ends.
    pub link_failures: u32,
    /// This many single links break, noticed by one end only (the first of the
    /// pair): only its transport calls `peer_down`.
    pub one_sided_failures: u32,
    /// The links that may break, as (noticing end, other end) (empty: random links
    /// in timed runs, every link in exploration).
    pub failed_links: Vec<(NodeId, NodeId)>,
    /// This many times a node's transport wrongly declares a live peer down (its
    /// links stay up).
    pub suspicions: u32,
    /// Who may suspect whom, as (observer, suspect) (empty: random pairs in timed
    /// runs, every pair in exploration).
    pub suspected: Vec<(NodeId, NodeId)>,
    /// This many times a node pauses (processes nothing) and later resumes; peers
    /// may time out on it meanwhile and declare it down.
    pub pauses: u32,
    /// Nodes that may pause (empty: every node).
    pub pause_candidates: Vec<NodeId>,
    /// Longest pause in timed runs (at least the longest detection delay, so that
    /// some peers time out).
    pub pause_max_ns: u64,
    /// Each crashed or exited process is noticed first by one transport (the
    /// lowest-numbered live peer); the other transports notice only once nothing
    /// else can happen (exploration) or after a long time-out (timed runs), so the
    /// rest learn it from the `Down` that peer floods. Keeps explorations with
    /// several crashes small.
    pub one_detector: bool,
    /// This many frames are delivered twice (the copy arrives after the frames
    /// sent after it).
    pub duplicates: u32,
}

impl Faults {
    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        self.crashes > 0
            || self.crash_ppm > 0
            || self.partitions > 0
            || self.link_failures > 0
            || self.one_sided_failures > 0
            || self.suspicions > 0
            || self.pauses > 0
            || self.duplicates > 0
    }

    /// Whether a fault other than duplicates can make a node be declared down.
    pub fn declares_down(&self) -> bool {
        self.crashes > 0
            || self.crash_ppm > 0
            || self.partitions > 0
            || self.link_failures > 0
            || self.one_sided_failures > 0
            || self.suspicions > 0
            || self.pauses > 0
    }
}

impl Scenario {
    /// A fault-free job of `nodes` nodes with the default fan-out and network, seed
    /// 0, and nothing requested yet.
    pub fn new(nodes: u32) -> Self {
        Self {
            nodes,
            fanout: DEFAULT_FANOUT,
            seed: 0,
            network: Network::default(),
            requests: Vec::new(),
            launches: Vec::new(),
            faults: Faults::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            error_bytes: 0,
            joins: Vec::new(),
        }
    }

    /// Adds a process that joins at `at_ns` (node 0 admits it): it gets the next
    /// node id after the job's nodes and the joins before it.
    pub fn with_join(mut self, at_ns: u64) -> Self {
        self.joins.push(JoinPlan { at_ns });
        self
    }

    /// Node ids the run may use: the job's nodes, then one per join.
    pub fn slots(&self) -> u32 {
        self.nodes + self.joins.len() as u32
    }

    /// The same scenario with another frame limit on every node.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        self
    }

    /// The same scenario, with failed loads reporting texts of at least `bytes`.
    pub fn with_error_bytes(mut self, bytes: usize) -> Self {
        self.error_bytes = bytes;
        self
    }

    /// The same scenario, with `from` launching `task` on `to` once `after` holds.
    pub fn with_launch_after(mut self, from: NodeId, to: NodeId, after: After, task: &str) -> Self {
        self = self.with_launch(from, to, 0, task);
        if let Some(plan) = self.launches.last_mut() {
            plan.after = Some(after);
        }
        self
    }

    /// The same scenario, with `from` launching `task` on `to` from inside its
    /// invocation of the script named `inside`.
    pub fn with_launch_inside(
        mut self,
        from: NodeId,
        to: NodeId,
        inside: &str,
        task: &str,
    ) -> Self {
        self = self.with_launch(from, to, 0, task);
        if let Some(plan) = self.launches.last_mut() {
            plan.inside = Some(inside.to_string());
        }
        self
    }

    /// The same scenario with another fan-out.
    pub fn with_fanout(mut self, fanout: u32) -> Self {
        self.fanout = fanout;
        self
    }

    /// The same scenario with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same scenario with another network.
    pub fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The same scenario with these faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The same scenario, with `node` also requesting `script` at `at_ns`.
    pub fn with_request(mut self, node: NodeId, at_ns: u64, script: Script) -> Self {
        self.requests.push(RequestPlan {
            node,
            at_ns,
            script,
        });
        self
    }

    /// The same scenario, with `from` also launching `task` on `to` at `at_ns`.
    pub fn with_launch(mut self, from: NodeId, to: NodeId, at_ns: u64, task: &str) -> Self {
        self.launches.push(LaunchPlan {
            from,
            to,
            at_ns,
            task: task.to_string(),
            after: None,
            inside: None,
        });
        self
    }

    /// `requesters` nodes, spread evenly from node 0, all requesting `script` at
    /// time 0: control replication, every shard making the same call.
    pub fn replicated(nodes: u32, requesters: u32, script: Script) -> Self {
        let requesters = requesters.clamp(1, nodes.max(1));
        (0..requesters).fold(Scenario::new(nodes), |scenario, i| {
            let node = (u64::from(i) * u64::from(nodes) / u64::from(requesters)) as u32;
            scenario.with_request(NodeId(node), 0, script.clone())
        })
    }

    /// Checks that every node named exists and the tree has a fan-out.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::Invalid("a job needs at least one node".into()));
        }
        if self.fanout == 0 {
            return Err(SimError::Invalid("fan-out must be at least 1".into()));
        }
        // Requests and launches start on the job's own nodes; a launch may target
        // a joiner (from node 0, which admits it); faults may hit joiners.
        for launch in &self.launches {
            if launch.to.0 >= self.nodes
                && (launch.from != NodeId(0) || launch.to.0 >= self.slots())
            {
                return Err(SimError::Invalid(format!(
                    "a launch to {} must come from node 0 and name a planned join",
                    launch.to
                )));
            }
        }
        let own = self
            .requests
            .iter()
            .map(|r| r.node)
            .chain(self.launches.iter().map(|l| l.from));
        for node in own {
            if node.0 >= self.nodes {
                return Err(SimError::Invalid(format!(
                    "{node} is outside the job of {} nodes",
                    self.nodes
                )));
            }
        }
        let named = self
            .faults
            .crash_candidates
            .iter()
            .copied()
            .chain(self.faults.partition_side.iter().copied())
            .chain(self.faults.pause_candidates.iter().copied())
            .chain(
                (self.faults.failed_links.iter())
                    .chain(&self.faults.suspected)
                    .flat_map(|(a, b)| [*a, *b]),
            );
        for node in named {
            if node.0 >= self.slots() {
                return Err(SimError::Invalid(format!(
                    "{node} is outside the job of {} nodes and {} joins",
                    self.nodes,
                    self.joins.len()
                )));
            }
        }
        let pairs = self
            .faults
            .failed_links
            .iter()
            .chain(&self.faults.suspected);
        if let Some((a, _)) = pairs.clone().find(|(a, b)| a == b) {
            return Err(SimError::Invalid(format!(
                "{a} cannot fail its link to itself"
            )));
        }
        for (i, plan) in self.launches.iter().enumerate() {
            let bad = match plan.after {
                Some(After::Answer(r)) => r >= self.requests.len(),
                Some(After::Launch(l)) => l >= i,
                None => false,
            };
            if bad {
                return Err(SimError::Invalid(format!(
                    "launch {i} waits for an answer that is not an earlier request or launch"
                )));
            }
        }
        if self.joins.windows(2).any(|w| w[0].at_ns > w[1].at_ns) {
            return Err(SimError::Invalid(
                "joins take node ids in order: list them by time".into(),
            ));
        }
        if self.network.latency_min_ns > self.network.latency_max_ns
            || self.network.detect_min_ns > self.network.detect_max_ns
        {
            return Err(SimError::Invalid("a minimum exceeds its maximum".into()));
        }
        Ok(())
    }

    /// Distinct nodes requesting any top-level registration.
    pub fn requesters(&self) -> usize {
        let mut nodes: Vec<NodeId> = self.requests.iter().map(|r| r.node).collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }

    /// The most messages a fault-free run of herald may send: for each top-level
    /// key `2(N-1)`, plus 2 for every distinct requester of it that is not its home;
    /// plus, per launch to another node, 2 (the launch and its result) and at most
    /// one fetch and one supply per key (when the launch overtakes a round).
    pub fn message_bound(&self) -> u64 {
        let n = u64::from(self.nodes);
        let per_key = self.requesters_per_key();
        let mut keys: Vec<Key> = per_key.iter().map(|(key, _)| *key).collect();
        keys.dedup();
        let disseminations = keys.len() as u64 * 2 * n.saturating_sub(1);
        let requests = per_key
            .iter()
            .filter(|(key, node)| key.home(self.nodes) != *node)
            .count() as u64
            * 2;
        // A remote launch: the launch and its result, and if it reaches its
        // target before some key it requires does, one fetch and one supply per
        // key (the target cannot tell a round in flight from one that never
        // comes).
        let launches = self.remote_launches() * (2 + 1 + keys.len() as u64);
        let fixed = disseminations + requests + launches;
        if self.joins.is_empty() {
            return fixed;
        }
        // With joins: each key's round spans every joiner too (grafted or in the
        // tree), a requester's coordinator may move once per view it learns (a new
        // round), and each join costs one welcome per chunk of the log.
        let joins = self.joins.len() as u64;
        let slots = u64::from(self.slots());
        let rounds = keys.len() as u64 * 2 * slots.saturating_sub(1) * (1 + joins);
        let requests = per_key.len() as u64 * 2 * (1 + joins);
        let welcomes = joins * (1 + keys.len() as u64);
        rounds + requests + welcomes + launches
    }

    /// The most messages the naive baseline may send: every requester of every key
    /// broadcasts to all other nodes and hears back from each.
    pub fn naive_message_bound(&self) -> u64 {
        let n = u64::from(self.nodes);
        self.requesters_per_key().len() as u64 * 2 * n.saturating_sub(1)
            + 2 * self.remote_launches()
    }

    /// Deepest nesting of any requested script (1 when nothing nests).
    pub fn nesting_depth(&self) -> u32 {
        self.requests
            .iter()
            .map(|r| r.script.depth())
            .max()
            .unwrap_or(0)
    }

    /// Every distinct (key, requesting node) pair of the top-level requests, sorted,
    /// so that the pairs of one key are adjacent.
    fn requesters_per_key(&self) -> Vec<(Key, NodeId)> {
        let mut per_key: Vec<(Key, NodeId)> = self
            .requests
            .iter()
            .map(|r| (r.script.registration().key(), r.node))
            .collect();
        per_key.sort();
        per_key.dedup();
        per_key
    }

    fn remote_launches(&self) -> u64 {
        self.launches.iter().filter(|l| l.from != l.to).count() as u64
    }
}
